//! Compiling a firmware project with cargo, and the flash and RAM its image takes.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::project::Project;
use super::target::check_prerequisites;
use super::McuOptions;

/// RAM the firmware must leave free for the stack. The stack grows down from the top of RAM
/// towards the statics (arena, buffers); without this margin it would overwrite them silently,
/// since nothing on a Cortex-M without an MPU stops it. Inference measured 2.5 to 3.1 KiB on
/// the fixtures, and printing the report afterwards needs about as much. The firmware also
/// checks its peak against the room it had, for models between the two.
pub const MIN_STACK_BYTES: u64 = 4 << 10;

/// A built firmware image.
#[derive(Clone, Debug)]
pub struct Firmware {
    /// The ELF file QEMU loads.
    pub elf: PathBuf,
    /// Section sizes.
    pub sizes: ElfSizes,
}

/// Builds `project` for the target in release mode (cargo reuses everything that did not change).
pub fn build(project: &Project, opts: &McuOptions) -> Result<Firmware> {
    check_prerequisites(opts.target)?;
    let target_dir = opts.cache_dir.join("build");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&project.dir)
        .args(["build", "--release", "--target", opts.target.triple()])
        .args(if opts.defmt {
            &["--no-default-features", "--features", "defmt"][..]
        } else {
            &[][..]
        })
        .args(if opts.public_key.is_some() {
            &["--features", "signed"][..]
        } else {
            &[][..]
        })
        .args(if opts.drift {
            &["--features", "drift"][..]
        } else {
            &[][..]
        })
        .args(if opts.small_code {
            &["--features", "small-code"][..]
        } else {
            &[][..]
        })
        // The micro:bit's 256 KiB of flash hold the soft-float runtime with every kernel (about
        // 236 KB) and little else: there the firmware links only its model's kernels.
        .args(if opts.target.links_model_kernels_only() {
            &["--features", "model-kernels"][..]
        } else {
            &[][..]
        })
        .env("CARGO_TARGET_DIR", &target_dir)
        // The host's flags (e.g. -C target-cpu=native) must not reach the firmware build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null());
    if let Some((features, rustflags)) = opts.target.dsp_build() {
        // Joined with the firmware's own `[target.cfg(...)] rustflags` (the linker script).
        let triple = opts.target.triple().replace(['.', '-'], "_").to_uppercase();
        cmd.args(["--features", features])
            .env(format!("CARGO_TARGET_{triple}_RUSTFLAGS"), rustflags);
    }
    if opts.verbose {
        eprintln!(
            "building firmware for {} in {} ({})",
            opts.target,
            project.dir.display(),
            opts.target.triple()
        );
    }
    let out = cmd.output().context("cannot run cargo")?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let hint = if log.contains("will not fit in region") || log.contains("overflowed by") {
            format!(
                "\nthe model does not fit the {} board's memory (see examples/firmware/memory/); \
                 choose a larger target",
                opts.target
            )
        } else {
            String::new()
        };
        bail!(
            "building the firmware for {} failed (project {}):\n{}{hint}",
            opts.target,
            project.dir.display(),
            tail.join("\n")
        );
    }
    let elf = target_dir
        .join(opts.target.triple())
        .join("release")
        .join(&project.bin);
    let bytes = fs::read(&elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let sizes = ElfSizes::parse(&bytes).with_context(|| elf.display().to_string())?;
    let ram = opts.target.ram_bytes();
    if sizes.ram + MIN_STACK_BYTES > ram {
        bail!(
            "the model does not fit the {} board's RAM: the arena, the embedded test results and \
             the firmware's statics take {} of its {ram} bytes, leaving {} for the stack (at least \
             {MIN_STACK_BYTES} needed); choose a larger target or a model with a smaller arena",
            opts.target,
            sizes.ram,
            ram.saturating_sub(sizes.ram)
        );
    }
    Ok(Firmware { elf, sizes })
}

/// Flash and RAM taken by an ELF image's allocated sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ElfSizes {
    /// Bytes stored in flash: every allocated section with contents (code, constants, the
    /// vector table, and the initial values of `.data`).
    pub flash: u64,
    /// Bytes of RAM reserved statically: every allocated writable section (`.data`, `.bss`,
    /// `.uninit`).
    pub ram: u64,
}

impl ElfSizes {
    /// Reads the section headers of a 32-bit little-endian ELF file.
    pub fn parse(elf: &[u8]) -> Result<ElfSizes> {
        const SHF_WRITE: u32 = 1;
        const SHF_ALLOC: u32 = 2;
        const SHT_NOBITS: u32 = 8;
        let u16_at = |o: usize| -> Option<u16> {
            Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?))
        };
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?))
        };
        if elf.get(..6) != Some(b"\x7fELF\x01\x01".as_slice()) {
            bail!("not a 32-bit little-endian ELF file");
        }
        let bad = || anyhow!("truncated ELF section headers");
        let shoff = u32_at(0x20).ok_or_else(bad)? as usize;
        let shentsize = u16_at(0x2e).ok_or_else(bad)? as usize;
        let shnum = u16_at(0x30).ok_or_else(bad)? as usize;
        let mut sizes = ElfSizes::default();
        for i in 0..shnum {
            let h = shoff + i * shentsize;
            let (kind, flags, size) = (
                u32_at(h + 4).ok_or_else(bad)?,
                u32_at(h + 8).ok_or_else(bad)?,
                u64::from(u32_at(h + 20).ok_or_else(bad)?),
            );
            if flags & SHF_ALLOC == 0 {
                continue;
            }
            if kind != SHT_NOBITS {
                sizes.flash += size;
            }
            if flags & SHF_WRITE != 0 {
                sizes.ram += size;
            }
        }
        Ok(sizes)
    }
}
