//! Profiling on microcontrollers without hardware: the model runs inside real firmware
//! (`examples/firmware`) under QEMU, for one Cortex-M core at a time (`icefold mcu`).
//!
//! Steps: [`prepare_project`] writes a copy of the firmware crate with the model module (from
//! [`crate::rustgen`]) and the input samples into a cache directory keyed by their hash;
//! [`build`] compiles it with cargo for the core's target (dependencies are built once per target
//! and reused); [`run`] starts QEMU with instruction counting, parses the firmware's report and
//! returns a [`Profile`]; [`compare`] checks its outputs against the host runtime's.
//! [`profile`] does all of it.
//!
//! Numbers are executed instructions, exact and identical run to run, not cycles: see
//! docs/MCU.md for what they mean on real silicon.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use std::{fmt, fs};

use anyhow::{anyhow, bail, Context, Result};
use icefold::engine;
use icefold::format::{DType, Layer, Op, PoolKind, Quant};

use crate::host::{self, Diff};
use crate::io::Array;
use crate::rustgen::{self, Provenance};

/// Largest relative L2 error between MCU and host f32 outputs that passes.
///
/// Both run the same kernels in the same order with IEEE single precision, so the outputs are
/// normally identical; the margin allows a compiler to reassociate differently per target.
pub const F32_REL_L2_LIMIT: f64 = 1e-5;

/// RAM the firmware must leave free for the stack. The stack grows down from the top of RAM
/// towards the statics (arena, buffers); without this margin it would overwrite them silently,
/// since nothing on a Cortex-M without an MPU stops it. Inference measured 2.5 to 3.1 KiB on
/// the fixtures, and printing the report afterwards needs about as much. The firmware also
/// checks its peak against the room it had, for models between the two.
pub const MIN_STACK_BYTES: u64 = 4 << 10;

/// A supported core, each profiled on one QEMU board.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Cortex-M4F (FPU, DSP) on MPS2 AN386.
    CortexM4,
    /// Cortex-M3 (no FPU: soft-float f32) on MPS2 AN385.
    CortexM3,
    /// Cortex-M0 (ARMv6-M, soft-float) on the BBC micro:bit (256 KiB flash, 16 KiB RAM).
    CortexM0,
    /// Cortex-M33 (ARMv8-M Mainline, FPU) on MPS2 AN505.
    CortexM33,
}

impl Target {
    /// Every supported target.
    pub const ALL: [Target; 4] = [
        Target::CortexM4,
        Target::CortexM3,
        Target::CortexM0,
        Target::CortexM33,
    ];

    /// The name used on the command line (`cortex-m4`).
    pub fn name(self) -> &'static str {
        match self {
            Target::CortexM4 => "cortex-m4",
            Target::CortexM3 => "cortex-m3",
            Target::CortexM0 => "cortex-m0",
            Target::CortexM33 => "cortex-m33",
        }
    }

    /// The Rust target triple the firmware is compiled for.
    pub fn triple(self) -> &'static str {
        match self {
            Target::CortexM4 => "thumbv7em-none-eabihf",
            Target::CortexM3 => "thumbv7m-none-eabi",
            Target::CortexM0 => "thumbv6m-none-eabi",
            Target::CortexM33 => "thumbv8m.main-none-eabihf",
        }
    }

    /// True if the core has a single-precision FPU (otherwise f32 is soft-float calls).
    pub fn has_fpu(self) -> bool {
        matches!(self, Target::CortexM4 | Target::CortexM33)
    }

    /// QEMU `-machine`.
    pub fn machine(self) -> &'static str {
        match self {
            Target::CortexM4 => "mps2-an386",
            Target::CortexM3 => "mps2-an385",
            Target::CortexM0 => "microbit",
            Target::CortexM33 => "mps2-an505",
        }
    }

    /// RAM of the QEMU board's memory map (`examples/firmware/memory/`).
    pub fn ram_bytes(self) -> u64 {
        match self {
            Target::CortexM4 | Target::CortexM3 => 4 << 20,
            Target::CortexM0 => 16 << 10,
            Target::CortexM33 => 2 << 20,
        }
    }

    /// QEMU `-cpu`.
    pub fn cpu(self) -> &'static str {
        match self {
            Target::CortexM4 => "cortex-m4",
            Target::CortexM3 => "cortex-m3",
            Target::CortexM0 => "cortex-m0",
            Target::CortexM33 => "cortex-m33",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Target> {
        let key = s.to_ascii_lowercase();
        let key = key.trim_end_matches('f'); // cortex-m4f, cortex-m33f
        Target::ALL
            .into_iter()
            .find(|t| t.name() == key || t.triple() == s)
            .ok_or_else(|| {
                anyhow!(
                    "unknown target `{s}`; choose one of {}",
                    Target::ALL.map(Target::name).join(", ")
                )
            })
    }
}

/// Where and how to build and run.
#[derive(Clone, Debug)]
pub struct McuOptions {
    /// The core.
    pub target: Target,
    /// Firmware projects (one per model, inputs and target) and the shared cargo target dir.
    pub cache_dir: PathBuf,
    /// The `icefold` runtime crate the firmware depends on (its directory).
    pub runtime_dir: PathBuf,
    /// Longest a QEMU run may take before it is stopped.
    pub timeout: Duration,
    /// Print cargo's and QEMU's commands and progress to stderr.
    pub verbose: bool,
    /// Build the firmware with defmt logging (feature `defmt`): the report travels as defmt
    /// frames, decoded here with the ELF's table, and the runtime traces every layer of sample 0.
    pub defmt: bool,
}

impl McuOptions {
    /// Defaults: cache in `$ICEFOLD_MCU_CACHE`, else `target/icefold-mcu` of the repository this
    /// tool was built from; the runtime in `$ICEFOLD_RUNTIME_DIR`, else that repository's; a
    /// 10 minute timeout.
    pub fn new(target: Target) -> McuOptions {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let runtime_dir = std::env::var_os("ICEFOLD_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.clone());
        let cache_dir = std::env::var_os("ICEFOLD_MCU_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target").join("icefold-mcu"));
        McuOptions {
            target,
            cache_dir,
            runtime_dir,
            timeout: Duration::from_secs(600),
            verbose: false,
            defmt: false,
        }
    }
}

/// The firmware crate's files, compiled into the tool so a copy can be made anywhere.
const FIRMWARE_FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../examples/firmware/Cargo.toml"),
    ),
    (
        "Cargo.lock",
        include_str!("../../examples/firmware/Cargo.lock"),
    ),
    ("build.rs", include_str!("../../examples/firmware/build.rs")),
    (
        ".cargo/config.toml",
        include_str!("../../examples/firmware/.cargo/config.toml"),
    ),
    (
        "src/main.rs",
        include_str!("../../examples/firmware/src/main.rs"),
    ),
    (
        "src/board.rs",
        include_str!("../../examples/firmware/src/board.rs"),
    ),
    (
        "memory/mps2.x",
        include_str!("../../examples/firmware/memory/mps2.x"),
    ),
    (
        "memory/mps2-an505.x",
        include_str!("../../examples/firmware/memory/mps2-an505.x"),
    ),
    (
        "memory/microbit.x",
        include_str!("../../examples/firmware/memory/microbit.x"),
    ),
];

/// Checks that QEMU and the Rust target are installed; the error says how to install them.
pub fn check_prerequisites(target: Target) -> Result<()> {
    let qemu = Command::new("qemu-system-arm")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    if !matches!(qemu, Ok(ref o) if o.status.success()) {
        bail!(
            "qemu-system-arm is not installed (needed to run the firmware); install it with \
             `sudo apt-get install --no-install-recommends qemu-system-arm` (Debian/Ubuntu), \
             `brew install qemu` (macOS) or your system's QEMU package (version 7.2 or newer)"
        );
    }
    let sysroot = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(["--print", "sysroot"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run rustc; is a Rust toolchain installed (https://rustup.rs)?")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let lib = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target.triple());
    if !lib.is_dir() {
        bail!(
            "the Rust target {} (for {target}) is not installed; install it with \
             `rustup target add {}`",
            target.triple(),
            target.triple()
        );
    }
    Ok(())
}

/// 64-bit FNV-1a: a stable hash for naming cache entries (std's hasher may change between
/// Rust versions, and names must not).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&(part.len() as u64).to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Writes `bytes` to `path` unless it already holds exactly them (keeps cargo's fingerprints and
/// the file's time stamp when nothing changed). The rename makes concurrent writers safe.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A firmware crate ready to build: the project directory and the name of its binary.
#[derive(Clone, Debug)]
pub struct Project {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The binary's name (unique per project, so projects can share one cargo target dir).
    pub bin: String,
    /// Samples embedded.
    pub samples: usize,
    /// Size of the embedded model blob.
    pub blob_bytes: usize,
    /// Size of the embedded input samples.
    pub input_bytes: usize,
}

/// How the firmware runs the model, named by the input's element type: `run_f32` on f32 models,
/// `run_i8` on int8 models (whose raw input is int8, or int16 when the first layers run 16×8, and
/// whose raw output is int8, or int16 from a wide last layer).
fn boundary_dtype(model: &icefold::Model<'_>) -> Result<DType> {
    let (input, output) = (model.input().dtype, model.output().dtype);
    match (input, output) {
        (DType::F32, DType::F32) | (DType::I8 | DType::I16, DType::I8 | DType::I16) => Ok(input),
        _ => bail!(
            "the model's input is {input:?} and its output {output:?}; the firmware runs f32 \
             models and int8 models (reconvert the model)"
        ),
    }
}

/// Name of the output element type in the firmware's report.
fn element_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::I8 => "i8",
        DType::I16 => "i16",
    }
}

/// The model's raw output bytes (any number of samples) as floats: f32 as stored, int8 / int16
/// dequantized with the runtime's own boundary functions, as `run_f32` and `icefold run` do.
fn output_values(model: &icefold::Model<'_>, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match model.output().dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::I8 => {
            let q = output_quant(model)?;
            bytes
                .iter()
                .map(|&b| engine::dequantize(b as i8, q))
                .collect()
        }
        DType::I16 => {
            let q = output_quant(model)?;
            bytes
                .chunks_exact(2)
                .map(|b| engine::dequantize_i16(i16::from_le_bytes([b[0], b[1]]), q))
                .collect()
        }
    })
}

/// The input quantization of an int8 model.
fn input_quant(model: &icefold::Model<'_>) -> Result<Quant> {
    model
        .input()
        .quant
        .ok_or_else(|| anyhow!("the model's int8 input has no quantization parameters"))
}

/// The output quantization of an int8 model.
fn output_quant(model: &icefold::Model<'_>) -> Result<Quant> {
    model
        .output()
        .quant
        .ok_or_else(|| anyhow!("the model's int8 output has no quantization parameters"))
}

/// Raw samples of an integer model input, one sample after the other.
enum RawInputs {
    I8(Vec<i8>),
    I16(Vec<i16>),
}

impl RawInputs {
    /// Little-endian bytes, as the firmware embeds them.
    fn to_bytes(&self) -> Vec<u8> {
        match self {
            RawInputs::I8(v) => v.iter().map(|&q| q as u8).collect(),
            RawInputs::I16(v) => v.iter().flat_map(|q| q.to_le_bytes()).collect(),
        }
    }
}

/// The samples of `x` quantized to the model's integer input (int8, or int16 when the first
/// layers run 16×8) with the runtime's own boundary functions (`icefold::engine::quantize` /
/// `quantize_i16`, what `run_f32` does inside).
fn quantized_inputs(model: &icefold::Model<'_>, x: &Array) -> Result<RawInputs> {
    let q = input_quant(model)?;
    Ok(match model.input().dtype {
        DType::I16 => RawInputs::I16(x.data.iter().map(|&v| engine::quantize_i16(v, q)).collect()),
        _ => RawInputs::I8(x.data.iter().map(|&v| engine::quantize(v, q)).collect()),
    })
}

/// Checks `x` against the model input and returns its samples as the firmware embeds them:
/// little-endian f32 for f32 models, int8 quantized on the host for int8 models.
fn input_bytes(blob: &[u8], x: &Array) -> Result<Vec<u8>> {
    let aligned = crate::emit::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let info = model.info();
    let shape = host::logical_shape(&info.input, info.input_rank);
    if x.shape.len() != shape.len() + 1 || x.shape[1..] != shape[..] || x.samples() == 0 {
        bail!(
            "input has shape {:?}; the model takes [N, {}] with N >= 1 (samples stacked on axis 0, \
             in the ONNX model's own layout)",
            x.shape,
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    match boundary_dtype(&model)? {
        DType::F32 => Ok(x.data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        _ => Ok(quantized_inputs(&model, x)?.to_bytes()),
    }
}

/// Writes the firmware crate with `blob` and the samples of `x` embedded, under
/// `cache_dir/<target>/<hash>/` (unchanged files are left alone, so rebuilding is cheap).
pub fn prepare_project(blob: &[u8], x: &Array, opts: &McuOptions) -> Result<Project> {
    let inputs = input_bytes(blob, x)?;
    let runtime = fs::canonicalize(&opts.runtime_dir).with_context(|| {
        format!(
            "cannot find the icefold runtime crate at {} (set McuOptions::runtime_dir)",
            opts.runtime_dir.display()
        )
    })?;
    let mut firmware_hash_parts: Vec<&[u8]> = Vec::new();
    for (name, text) in FIRMWARE_FILES {
        firmware_hash_parts.push(name.as_bytes());
        firmware_hash_parts.push(text.as_bytes());
    }
    let runtime_str = runtime.to_string_lossy().into_owned();
    firmware_hash_parts.extend([
        blob,
        &inputs[..],
        opts.target.triple().as_bytes(),
        runtime_str.as_bytes(),
        if opts.defmt { b"defmt" } else { b"text" },
    ]);
    let hash = format!("{:016x}", fnv1a(&firmware_hash_parts));
    let dir = opts.cache_dir.join(opts.target.name()).join(&hash);
    let bin = format!("fw-{hash}");

    for (name, text) in FIRMWARE_FILES {
        let text = if *name == "Cargo.toml" {
            manifest_for_copy(text, &runtime, &bin)?
        } else {
            text.to_string()
        };
        write_if_changed(&dir.join(name), text.as_bytes())?;
    }
    let generated = dir.join("src/generated");
    write_if_changed(&generated.join("model.icefold"), blob)?;
    write_if_changed(&generated.join("inputs.bin"), &inputs)?;
    let module = rustgen::model_module(
        blob,
        "model.icefold",
        &Provenance {
            source: "a model blob given to `icefold mcu`".into(),
            generator: "icefold mcu".into(),
        },
    )?;
    write_if_changed(&generated.join("model.rs"), module.as_bytes())?;
    let sample_len = x.sample_len();
    let inputs_rs = format!(
        "//! Input samples for the profiling firmware, written by `icefold mcu`.\n\
         #![allow(dead_code)]\n\n\
         /// Number of samples.\n\
         pub const SAMPLE_COUNT: usize = {};\n\
         /// Elements per sample.\n\
         pub const SAMPLE_LEN: usize = {sample_len};\n\
         /// The samples, one after the other: little-endian f32, or int8 for int8 models.\n\
         pub static INPUTS: icefold::Aligned<[u8; {}]> =\n    icefold::Aligned(*include_bytes!(\"inputs.bin\"));\n",
        x.samples(),
        inputs.len()
    );
    write_if_changed(&generated.join("inputs.rs"), inputs_rs.as_bytes())?;
    Ok(Project {
        dir,
        bin,
        samples: x.samples(),
        blob_bytes: blob.len(),
        input_bytes: inputs.len(),
    })
}

/// The firmware's Cargo.toml pointed at `runtime` and with the binary renamed to `bin`.
fn manifest_for_copy(text: &str, runtime: &Path, bin: &str) -> Result<String> {
    let dep = "icefold = { path = \"../..\" }";
    let bin_line = "[[bin]]\nname = \"icefold-firmware\"";
    if !text.contains(dep) || !text.contains(bin_line) {
        bail!("examples/firmware/Cargo.toml no longer has the lines `{dep}` and `{bin_line}` that `icefold mcu` rewrites; update tools/src/mcu.rs");
    }
    let path = runtime.to_string_lossy().replace('\\', "/");
    Ok(text
        .replace(dep, &format!("icefold = {{ path = {path:?} }}"))
        .replace(bin_line, &format!("[[bin]]\nname = {bin:?}")))
}

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
        .env("CARGO_TARGET_DIR", &target_dir)
        // The host's flags (e.g. -C target-cpu=native) must not reach the firmware build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null());
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

/// What the firmware printed, parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Layers the firmware ran.
    pub layers: usize,
    /// Arena bytes the firmware allocated.
    pub arena_bytes: u64,
    /// Output bytes per sample.
    pub output_bytes: usize,
    /// Element type of the outputs (`f32` or `i8`; empty if the firmware did not say).
    pub elements: String,
    /// Raw output bytes per sample.
    pub outputs: Vec<Vec<u8>>,
    /// Instructions per layer (outer: sample).
    pub layer_instructions: Vec<Vec<u64>>,
    /// Instructions of each whole inference call.
    pub run_instructions: Vec<u64>,
    /// Peak stack in bytes.
    pub stack_peak_bytes: u64,
    /// The per-layer trace of sample 0 (defmt firmware only; empty otherwise).
    pub trace: Vec<TraceRecord>,
}

/// One layer of a per-layer trace (`icefold::trace`): what the layer wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Position in the schedule.
    pub layer: usize,
    /// The runtime's operation name (`icefold::format::Op::name`).
    pub op: String,
    /// Output bytes.
    pub bytes: usize,
    /// `icefold::trace::checksum` of the output bytes.
    pub checksum: u32,
}

/// Parses the firmware's line protocol (see `examples/firmware/src/main.rs`).
pub fn parse_report(text: &str) -> Result<Report> {
    let mut r = Report::default();
    let mut samples = 0usize;
    let (mut header, mut done) = (false, false);
    let mut layer_map: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut runs: BTreeMap<usize, u64> = BTreeMap::new();
    let mut outs: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let err = |what: &str| anyhow!("firmware output line {}: {what}: {line:?}", n + 1);
        let mut f = line.split_ascii_whitespace();
        let num = |s: Option<&str>| -> Result<u64> {
            s.and_then(|s| s.parse().ok())
                .ok_or_else(|| err("expected a number"))
        };
        match f.next() {
            Some("ICEFOLD-FW") => {
                if f.next() != Some("1") {
                    bail!(err("unsupported protocol version"));
                }
                header = true;
            }
            Some("MODEL") => {
                for kv in f {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| err("expected key=value"))?;
                    if k == "elements" {
                        r.elements = v.to_string();
                        continue;
                    }
                    let v: u64 = v.parse().map_err(|_| err("expected a number"))?;
                    match k {
                        "layers" => r.layers = v as usize,
                        "arena" => r.arena_bytes = v,
                        "samples" => samples = v as usize,
                        "output_bytes" => r.output_bytes = v as usize,
                        _ => {}
                    }
                }
            }
            Some("OUT") => {
                // defmt firmware splits a sample's output over several records.
                let s = num(f.next())? as usize;
                let hex = f.next().unwrap_or("");
                let bytes = decode_hex(hex).ok_or_else(|| err("bad hex"))?;
                outs.entry(s).or_default().extend(bytes);
            }
            Some("TRACE") => {
                // TRACE <layer> <op> <dims> <bytes> <checksum hex>
                let layer = num(f.next())? as usize;
                let op = f
                    .next()
                    .ok_or_else(|| err("expected an op name"))?
                    .to_string();
                let _dims = f.next();
                let bytes = num(f.next())? as usize;
                let checksum = f
                    .next()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .ok_or_else(|| err("expected a hex checksum"))?;
                r.trace.push(TraceRecord {
                    layer,
                    op,
                    bytes,
                    checksum,
                });
            }
            Some("LAYER") => {
                let (s, i, v) = (num(f.next())?, num(f.next())?, num(f.next())?);
                layer_map.insert((s as usize, i as usize), v);
            }
            Some("RUN") => {
                let (s, v) = (num(f.next())?, num(f.next())?);
                runs.insert(s as usize, v);
            }
            Some("STACK") => r.stack_peak_bytes = num(f.next())?,
            Some("DONE") => done = true,
            Some("ERR") => bail!(
                "the firmware reported an error: {}",
                line.trim_start_matches("ERR").trim()
            ),
            // QEMU or the panic handler may print other lines; they are shown on failure.
            _ => {}
        }
    }
    if !header || !done {
        bail!(
            "the firmware's report is incomplete (no {} line)",
            if header { "DONE" } else { "ICEFOLD-FW" }
        );
    }
    for s in 0..samples {
        let out = outs
            .remove(&s)
            .ok_or_else(|| anyhow!("the firmware reported no output for sample {s}"))?;
        if out.len() != r.output_bytes {
            bail!(
                "sample {s}: the firmware reported {} output bytes, expected {}",
                out.len(),
                r.output_bytes
            );
        }
        r.outputs.push(out);
        let layers = (0..r.layers)
            .map(|i| {
                layer_map
                    .get(&(s, i))
                    .copied()
                    .ok_or_else(|| anyhow!("sample {s}: no instruction count for layer {i}"))
            })
            .collect::<Result<Vec<_>>>()?;
        r.layer_instructions.push(layers);
        r.run_instructions.push(
            runs.get(&s)
                .copied()
                .ok_or_else(|| anyhow!("sample {s}: no instruction count for the run"))?,
        );
    }
    Ok(r)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Runs `elf` under QEMU with instruction counting and returns what it printed.
pub fn run_qemu(elf: &Path, opts: &McuOptions) -> Result<String> {
    let t = opts.target;
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args(["-machine", t.machine(), "-cpu", t.cpu()])
        // No display, serial or monitor: with stdin closed (CI) `-nographic` fails.
        .args(["-display", "none", "-serial", "none", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        // Each instruction advances virtual time by exactly 1024 ns: the firmware's timer counts
        // instructions (examples/firmware/src/board.rs).
        .args(["-icount", "shift=10,align=off,sleep=off"])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if opts.verbose {
        eprintln!("running {cmd:?}");
    }
    let mut child = cmd.spawn().context("cannot start qemu-system-arm")?;
    let mut stdout = child.stdout.take().context("no QEMU stdout")?;
    let mut stderr = child.stderr.take().context("no QEMU stderr")?;
    // Bytes, not text: defmt frames are binary.
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break Some(status);
        }
        if start.elapsed() > opts.timeout {
            // Our own child, by handle: a fault without handler or a hang spins forever.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let raw = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let out = if opts.defmt {
        decode_defmt(elf, &raw)?
    } else {
        String::from_utf8_lossy(&raw).into_owned()
    };
    let tail = |s: &str| -> String {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    match status {
        None => bail!(
            "QEMU ({}) did not finish within {:?}; output so far:\n{}",
            t.machine(),
            opts.timeout,
            tail(&out)
        ),
        Some(s) if !s.success() => {
            let reported = out
                .lines()
                .find(|l| l.starts_with("ERR") || l.contains("panicked"))
                .unwrap_or("");
            bail!(
                "the firmware failed on {} ({}): {reported}\nQEMU exit: {s}\nstdout:\n{}\nstderr:\n{}",
                t,
                t.machine(),
                tail(&out),
                tail(&err)
            )
        }
        Some(_) => Ok(out),
    }
}

/// Decodes the defmt frames the firmware wrote (`stream`) with the log-string table in `elf`, one
/// line of text per frame.
pub fn decode_defmt(elf: &Path, stream: &[u8]) -> Result<String> {
    let bytes = fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let table = defmt_decoder::Table::parse(&bytes)
        .with_context(|| format!("cannot read the defmt table of {}", elf.display()))?
        .ok_or_else(|| {
            anyhow!(
                "{} has no defmt table (.defmt section): it was not built with the firmware's \
                 `defmt` feature",
                elf.display()
            )
        })?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(stream);
    let mut text = String::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                let _ = writeln!(text, "{}", frame.display_message());
            }
            // The rest is an incomplete frame (or nothing): the firmware stopped mid-way.
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) if table.encoding().can_recover() => {}
            Err(defmt_decoder::DecodeError::Malformed) => bail!(
                "malformed defmt frame after {} decoded lines; was {} built from this firmware?",
                text.lines().count(),
                elf.display()
            ),
        }
    }
    Ok(text)
}

/// One layer's cost on the MCU.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerProfile {
    /// Position in the schedule.
    pub index: usize,
    /// Short op description (`Conv2d 3x3/1 g1`).
    pub kind: String,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Instructions per inference (mean over the samples, rounded), including the few
    /// instructions of the timer reads around the layer.
    pub instructions: u64,
}

/// Everything `icefold mcu` measures.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// The core.
    pub target: Target,
    /// The model ran on int8 boundaries (`run_i8` on host-quantized inputs).
    pub int8: bool,
    /// Outputs as float32, shaped `[N, ...]` like the ONNX model's output (int8 outputs
    /// dequantized with `icefold::engine::dequantize`, as `icefold run` writes them).
    pub outputs: Array,
    /// The raw output bytes per sample, as the firmware computed them: little-endian f32, or
    /// int8.
    pub output_bytes: Vec<Vec<u8>>,
    /// Per-layer costs.
    pub layers: Vec<LayerProfile>,
    /// Instructions of each whole inference (`run_f32_observed` or `run_i8_observed` call),
    /// per sample.
    pub instructions_per_sample: Vec<u64>,
    /// Mean of `instructions_per_sample`, rounded.
    pub instructions_per_inference: u64,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Flash for everything but the model and the embedded test inputs: runtime, firmware,
    /// vector table, constants.
    pub flash_code_bytes: u64,
    /// Flash for the model blob.
    pub flash_model_bytes: u64,
    /// Flash for the embedded input samples (profiling only; a product reads a sensor).
    pub flash_inputs_bytes: u64,
    /// Static RAM (`.data` + `.bss`) a product needs: the arena and the firmware's statics,
    /// without the profiling harness's result buffers (`ram_harness_bytes`).
    pub ram_static_bytes: u64,
    /// Static RAM of the profiling harness (per-sample outputs and instruction counts).
    pub ram_harness_bytes: u64,
    /// The arena (part of `ram_static_bytes`).
    pub arena_bytes: u64,
    /// Deepest stack use, from reset through every inference.
    pub stack_peak_bytes: u64,
    /// The firmware image that ran.
    pub elf: PathBuf,
    /// The device's per-layer trace of sample 0 (defmt firmware only; empty otherwise).
    pub trace: Vec<TraceRecord>,
}

impl Profile {
    /// MACs per instruction (0 if nothing ran).
    pub fn macs_per_instruction(&self) -> f64 {
        if self.instructions_per_inference == 0 {
            0.0
        } else {
            self.macs as f64 / self.instructions_per_inference as f64
        }
    }

    /// The profile as JSON, with the parity verdict.
    pub fn to_json(&self, parity: Option<&Parity>) -> String {
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"target\": {},", json_str(self.target.name()));
        let _ = writeln!(s, "  \"triple\": {},", json_str(self.target.triple()));
        let _ = writeln!(
            s,
            "  \"qemu_machine\": {},",
            json_str(self.target.machine())
        );
        let _ = writeln!(
            s,
            "  \"elements\": {},",
            json_str(if self.int8 { "i8" } else { "f32" })
        );
        let _ = writeln!(s, "  \"samples\": {},", self.instructions_per_sample.len());
        let _ = writeln!(
            s,
            "  \"instructions_per_inference\": {},",
            self.instructions_per_inference
        );
        let per_sample: Vec<String> = self
            .instructions_per_sample
            .iter()
            .map(u64::to_string)
            .collect();
        let _ = writeln!(
            s,
            "  \"instructions_per_sample\": [{}],",
            per_sample.join(", ")
        );
        let _ = writeln!(s, "  \"macs\": {},", self.macs);
        let _ = writeln!(
            s,
            "  \"macs_per_instruction\": {:.6},",
            self.macs_per_instruction()
        );
        let _ = writeln!(s, "  \"flash_code_bytes\": {},", self.flash_code_bytes);
        let _ = writeln!(s, "  \"flash_model_bytes\": {},", self.flash_model_bytes);
        let _ = writeln!(s, "  \"flash_inputs_bytes\": {},", self.flash_inputs_bytes);
        let _ = writeln!(s, "  \"ram_static_bytes\": {},", self.ram_static_bytes);
        let _ = writeln!(s, "  \"ram_harness_bytes\": {},", self.ram_harness_bytes);
        let _ = writeln!(s, "  \"arena_bytes\": {},", self.arena_bytes);
        let _ = writeln!(s, "  \"stack_peak_bytes\": {},", self.stack_peak_bytes);
        if let Some(p) = parity {
            let _ = writeln!(s, "  \"max_abs\": {},", json_f64(p.max_abs));
            let _ = writeln!(s, "  \"rel_l2\": {},", json_f64(p.rel_l2));
            let _ = writeln!(s, "  \"bytes_identical\": {},", p.bytes_identical);
            let _ = writeln!(s, "  \"pass\": {},", p.pass);
        }
        s.push_str("  \"layers\": [\n");
        for (i, l) in self.layers.iter().enumerate() {
            let _ = write!(
                s,
                "    {{\"index\": {}, \"kind\": {}, \"macs\": {}, \"instructions\": {}}}",
                l.index,
                json_str(&l.kind),
                l.macs,
                l.instructions
            );
            s.push_str(if i + 1 < self.layers.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        s.push_str("  ]\n}\n");
        s
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_f64(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        "null".into()
    }
}

/// Short description of a runtime layer.
pub fn layer_kind(op: &Op) -> String {
    match op {
        Op::Conv2d(c) => format!(
            "Conv2d {}x{}/{} g{}",
            c.kernel[0],
            c.kernel[1],
            c.stride[0].max(c.stride[1]),
            c.groups
        ),
        Op::Dense(_) => "Dense".into(),
        Op::Pool(p) => format!(
            "{}Pool {}x{}",
            if p.kind == PoolKind::Max {
                "Max"
            } else {
                "Avg"
            },
            p.kernel[0],
            p.kernel[1]
        ),
        Op::Add { .. } => "Add".into(),
        Op::Affine(_) => "Affine".into(),
        Op::Activation(a) => format!("{a:?}"),
        Op::Softmax => "Softmax".into(),
        Op::Transpose(t) => format!("Transpose {:?}", t.perm),
        Op::Pad(_) => "Pad".into(),
        Op::Conv2dI8(c) => format!("{} i8", layer_kind(&Op::Conv2d(c.conv))),
        Op::Conv2dI16(c) => format!("{} 16x8", layer_kind(&Op::Conv2d(c.conv))),
        Op::DenseI8(_) => "Dense i8".into(),
        Op::DenseI8Wide(_) => "Dense i8→i16".into(),
        Op::SoftmaxI16 { .. } => "Softmax i16".into(),
        Op::PoolI8(_) => "Pool i8".into(),
        Op::AddI8(_) => "Add i8".into(),
        Op::AffineI8(_) => "Affine i8".into(),
        Op::ClampI8(_) => "Clamp i8".into(),
        Op::LookupI8 { .. } => "Lookup i8".into(),
        Op::SoftmaxI8 { .. } => "Softmax i8".into(),
        Op::PadI8 { .. } => "Pad i8".into(),
        #[allow(unreachable_patterns)]
        _ => "other".into(),
    }
}

/// Multiply-accumulates of one runtime layer (convolution and dense; 0 for the rest).
pub fn layer_macs(layer: &Layer) -> u64 {
    let out = layer.output.len() as u64;
    let input = &layer.inputs[0];
    let conv = |c: &icefold::format::Conv2d| {
        let in_per_group = u64::from(input.dims[2]) / u64::from(c.groups.max(1));
        out * u64::from(c.kernel[0]) * u64::from(c.kernel[1]) * in_per_group
    };
    match &layer.op {
        Op::Conv2d(c) => conv(c),
        Op::Conv2dI8(c) => conv(&c.conv),
        Op::Conv2dI16(c) => conv(&c.conv),
        Op::Dense(_) | Op::DenseI8(_) | Op::DenseI8Wide(_) => out * input.len() as u64,
        _ => 0,
    }
}

/// Runs a built firmware and assembles the profile.
pub fn run(project: &Project, fw: &Firmware, blob: &[u8], opts: &McuOptions) -> Result<Profile> {
    let text = run_qemu(&fw.elf, opts)?;
    let report = parse_report(&text)?;
    let aligned = crate::emit::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let info = *model.info();
    let dtype = boundary_dtype(&model)?;
    if report.layers != usize::from(info.layer_count)
        || report.arena_bytes != u64::from(info.arena_bytes)
        || report.outputs.len() != project.samples
        || report.output_bytes != info.output.byte_len()
        || report.elements != element_name(info.output.dtype)
    {
        bail!(
            "the firmware ran a different model or input set than requested ({} layers, arena {}, \
             {} samples); delete {} and retry",
            report.layers,
            report.arena_bytes,
            report.outputs.len(),
            project.dir.display()
        );
    }
    let samples = report.outputs.len() as u64;
    let mean = |xs: &mut dyn Iterator<Item = u64>| (xs.sum::<u64>() + samples / 2) / samples;
    let layers: Vec<LayerProfile> = model
        .layers()
        .enumerate()
        .map(|(i, l)| LayerProfile {
            index: i,
            kind: layer_kind(&l.op),
            macs: layer_macs(&l),
            instructions: mean(&mut report.layer_instructions.iter().map(|v| v[i])),
        })
        .collect();
    let out_shape = host::logical_shape(&info.output, info.output_rank);
    // f32 models report what `run_f32` wrote; int8 models the raw output of `run_i8`,
    // dequantized here with the runtime's own boundary function, as `icefold run` does.
    let data = output_values(&model, &report.outputs.concat())?;
    let mut shape = vec![project.samples];
    shape.extend(out_shape);
    // Per sample: the output buffer (16-aligned in the firmware) and the u64 tick counters.
    let harness = samples
        * (report.output_bytes.next_multiple_of(16) as u64 + 8 * (info.layer_count as u64 + 1));
    let fixed_flash = (project.blob_bytes + project.input_bytes) as u64;
    Ok(Profile {
        target: opts.target,
        int8: dtype != DType::F32,
        outputs: Array { shape, data },
        output_bytes: report.outputs.clone(),
        macs: layers.iter().map(|l| l.macs).sum(),
        layers,
        instructions_per_inference: mean(&mut report.run_instructions.iter().copied()),
        instructions_per_sample: report.run_instructions.clone(),
        flash_code_bytes: fw.sizes.flash.saturating_sub(fixed_flash),
        flash_model_bytes: project.blob_bytes as u64,
        flash_inputs_bytes: project.input_bytes as u64,
        ram_static_bytes: fw.sizes.ram.saturating_sub(harness),
        ram_harness_bytes: harness,
        arena_bytes: report.arena_bytes,
        stack_peak_bytes: report.stack_peak_bytes,
        elf: fw.elf.clone(),
        trace: report.trace.clone(),
    })
}

/// Builds the firmware for `blob` and the samples of `x`, runs it under QEMU and returns the
/// profile.
pub fn profile(blob: &[u8], x: &Array, opts: &McuOptions) -> Result<Profile> {
    check_prerequisites(opts.target)?;
    let project = prepare_project(blob, x, opts)?;
    let fw = build(&project, opts)?;
    run(&project, &fw, blob, opts)
}

/// MCU outputs against the host runtime's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Parity {
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Relative L2 error over all outputs.
    pub rel_l2: f64,
    /// The output bytes are identical (the criterion for int8 models).
    pub bytes_identical: bool,
    /// The verdict: f32 within [`F32_REL_L2_LIMIT`]; int8 byte-identical.
    pub pass: bool,
}

/// Compares the MCU's outputs with the host runtime's for the same blob and inputs.
///
/// f32 models: `run_f32` on the host against the firmware's f32 outputs. int8 models:
/// `run_i8` on the host with the same quantized inputs the firmware got, raw int8 bytes
/// against raw int8 bytes (the distances are then over the dequantized outputs).
pub fn compare(profile: &Profile, blob: &[u8], x: &Array) -> Result<Parity> {
    let aligned = crate::emit::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let dtype = boundary_dtype(&model)?;
    let (want, want_bytes) = match dtype {
        DType::F32 => {
            let want = host::run_f32(&model, x)?;
            let bytes = want.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (want, bytes)
        }
        _ => {
            let raw = match model.output().dtype {
                DType::I16 => bytemuck::cast_slice(&host_run_i8::<i16>(&model, x)?).to_vec(),
                _ => bytemuck::cast_slice(&host_run_i8::<i8>(&model, x)?).to_vec(),
            };
            let want = Array {
                shape: profile.outputs.shape.clone(),
                data: output_values(&model, &raw)?,
            };
            (want, raw)
        }
    };
    let Diff {
        max_abs, rel_l2, ..
    } = host::diff(&profile.outputs, &want)?;
    let bytes_identical = want_bytes == profile.output_bytes.concat();
    let pass = match dtype {
        DType::F32 => rel_l2 <= F32_REL_L2_LIMIT,
        _ => bytes_identical,
    };
    Ok(Parity {
        max_abs,
        rel_l2,
        bytes_identical,
        pass,
    })
}

/// The host runtime's raw outputs (`run_i8`, int8 or int16 elements `O`) for the samples of `x`,
/// quantized exactly as the firmware's inputs were.
fn host_run_i8<O: icefold::RawElement>(model: &icefold::Model<'_>, x: &Array) -> Result<Vec<O>> {
    match quantized_inputs(model, x)? {
        RawInputs::I8(inputs) => host_run_raw(model, x, &inputs),
        RawInputs::I16(inputs) => host_run_raw(model, x, &inputs),
    }
}

/// `run_i8` over the raw input samples `inputs` (of `x`'s shape) one after the other.
fn host_run_raw<I: icefold::RawElement, O: icefold::RawElement>(
    model: &icefold::Model<'_>,
    x: &Array,
    inputs: &[I],
) -> Result<Vec<O>> {
    let info = model.info();
    let (in_len, out_len) = (info.input.len(), info.output.len());
    if in_len == 0 || out_len == 0 || inputs.len() != x.samples() * in_len {
        bail!(
            "input has shape {:?}, which the model does not take",
            x.shape
        );
    }
    let mut arena = vec![0u32; (info.arena_bytes as usize).div_ceil(4)];
    let mut out = vec![O::zeroed(); x.samples() * out_len];
    for (i, (xi, yi)) in inputs
        .chunks_exact(in_len)
        .zip(out.chunks_exact_mut(out_len))
        .enumerate()
    {
        model
            .run_i8(bytemuck::cast_slice_mut(&mut arena), xi, yi)
            .map_err(|e| anyhow!("sample {i}: runtime error: {e}"))?;
    }
    Ok(out)
}

/// The host runtime's per-layer trace of sample 0 of `x`: the same records the defmt firmware
/// logs (`icefold::trace`), computed with `run_f32_observed` / `run_i8_observed` on the same
/// (for int8, identically quantized) input.
pub fn host_trace(blob: &[u8], x: &Array) -> Result<Vec<TraceRecord>> {
    struct Recorder(Vec<TraceRecord>);
    impl icefold::Observer for Recorder {
        fn layer_end(&mut self, index: u16, layer: &Layer, output: &[u8]) {
            self.0.push(TraceRecord {
                layer: usize::from(index),
                op: layer.op.name().to_string(),
                bytes: output.len(),
                checksum: icefold::trace::checksum(output),
            });
        }
    }
    let aligned = crate::emit::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let info = *model.info();
    let (in_len, out_len) = (info.input.len(), info.output.len());
    if x.samples() == 0 || x.sample_len() != in_len {
        bail!(
            "input has shape {:?}, which the model does not take",
            x.shape
        );
    }
    let mut arena = vec![0u32; (info.arena_bytes as usize).div_ceil(4)];
    let arena: &mut [u8] = bytemuck::cast_slice_mut(&mut arena);
    let mut recorder = Recorder(Vec::new());
    let result = match boundary_dtype(&model)? {
        DType::F32 => {
            let mut out = vec![0f32; out_len];
            model.run_f32_observed(arena, &x.data[..in_len], &mut out, &mut recorder)
        }
        _ => match quantized_inputs(&model, x)? {
            RawInputs::I8(v) => run_raw_observed(&model, arena, &v[..in_len], &mut recorder),
            RawInputs::I16(v) => run_raw_observed(&model, arena, &v[..in_len], &mut recorder),
        },
    };
    result.map_err(|e| anyhow!("sample 0: runtime error: {e}"))?;
    Ok(recorder.0)
}

/// `run_i8_observed` on one raw input sample, into an output buffer of the model's element type.
fn run_raw_observed<I: icefold::RawElement>(
    model: &icefold::Model<'_>,
    arena: &mut [u8],
    input: &[I],
    observer: &mut impl icefold::Observer,
) -> Result<(), icefold::RunError> {
    let out_len = model.output().len();
    if model.output().dtype == DType::I16 {
        model.run_i8_observed(arena, input, &mut vec![0i16; out_len], observer)
    } else {
        model.run_i8_observed(arena, input, &mut vec![0i8; out_len], observer)
    }
}

/// The first layer where the device's trace and the host's differ (`None`: identical traces).
pub fn first_divergence(device: &[TraceRecord], host: &[TraceRecord]) -> Option<usize> {
    let common = device.len().min(host.len());
    (0..common)
        .find(|&i| device[i] != host[i])
        .or((device.len() != host.len()).then_some(common))
}

/// The device's trace next to the host's, one row per layer.
pub fn render_trace(device: &[TraceRecord], host: &[TraceRecord]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>3}  {:<12} {:>9}  {:>10}  {:>10}",
        "#", "op", "bytes", "device", "host"
    );
    for (i, d) in device.iter().enumerate() {
        let h = host.get(i);
        let mark = if h == Some(d) { "" } else { "  <- differs" };
        let _ = writeln!(
            s,
            "{:>3}  {:<12} {:>9}  {:>10}  {:>10}{mark}",
            d.layer,
            d.op,
            d.bytes,
            format!("{:08x}", d.checksum),
            h.map(|h| format!("{:08x}", h.checksum)).unwrap_or_default()
        );
    }
    s
}

/// The human-readable report: per-layer table, totals, sizes and the parity verdict.
pub fn render(p: &Profile, parity: &Parity) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>3}  {:<24} {:>12} {:>14} {:>9}",
        "#", "layer", "MACs", "instructions", "MAC/insn"
    );
    for l in &p.layers {
        let ratio = if l.macs > 0 && l.instructions > 0 {
            format!("{:.3}", l.macs as f64 / l.instructions as f64)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "{:>3}  {:<24} {:>12} {:>14} {:>9}",
            l.index, l.kind, l.macs, l.instructions, ratio
        );
    }
    let _ = writeln!(s);
    let (min, max) = (
        p.instructions_per_sample.iter().min().copied().unwrap_or(0),
        p.instructions_per_sample.iter().max().copied().unwrap_or(0),
    );
    let spread = if min == max {
        String::new()
    } else {
        format!(" (samples range {min} to {max})")
    };
    let _ = writeln!(
        s,
        "instructions per inference  {}{spread}",
        p.instructions_per_inference
    );
    let _ = writeln!(s, "MACs per inference          {}", p.macs);
    let _ = writeln!(
        s,
        "MACs per instruction        {:.3}",
        p.macs_per_instruction()
    );
    let _ = writeln!(
        s,
        "flash                       {} code + {} model (+ {} embedded test inputs)",
        p.flash_code_bytes, p.flash_model_bytes, p.flash_inputs_bytes
    );
    let _ = writeln!(
        s,
        "RAM                         {} static (arena {}) + {} peak stack (+ {} profiling buffers)",
        p.ram_static_bytes, p.arena_bytes, p.stack_peak_bytes, p.ram_harness_bytes
    );
    let verdict = if parity.pass { "PASS" } else { "FAIL" };
    if p.int8 {
        let _ = writeln!(
            s,
            "MCU vs host runtime         int8 outputs {} (dequantized max-abs {:.3e}) -> {verdict} \
             (int8 must be byte-identical)",
            if parity.bytes_identical {
                "byte-identical"
            } else {
                "DIFFER"
            },
            parity.max_abs
        );
        return s;
    }
    let _ = writeln!(
        s,
        "MCU vs host runtime         max-abs {:.3e}, rel-L2 {:.3e}{} -> {verdict} (f32 limit rel-L2 {:.0e})",
        parity.max_abs,
        parity.rel_l2,
        if parity.bytes_identical {
            ", bit-identical"
        } else {
            ""
        },
        F32_REL_L2_LIMIT
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_name_and_triple() {
        assert_eq!("cortex-m4".parse::<Target>().unwrap(), Target::CortexM4);
        assert_eq!("Cortex-M4F".parse::<Target>().unwrap(), Target::CortexM4);
        assert_eq!(
            "thumbv6m-none-eabi".parse::<Target>().unwrap(),
            Target::CortexM0
        );
        let e = "cortex-m7".parse::<Target>().unwrap_err().to_string();
        assert!(e.contains("cortex-m33"), "{e}");
    }

    #[test]
    fn report_parses_and_checks_completeness() {
        let text = "ICEFOLD-FW 1\nMODEL layers=2 arena=64 samples=1 output_bytes=4 elements=f32\n\
                    OUT 0 0000803f\nLAYER 0 0 10\nLAYER 0 1 20\nRUN 0 40\nSTACK 512\nDONE\n";
        let r = parse_report(text).unwrap();
        assert_eq!(r.outputs, vec![1.0f32.to_le_bytes().to_vec()]);
        assert_eq!(r.layer_instructions, vec![vec![10, 20]]);
        assert_eq!(r.elements, "f32");
        assert_eq!(r.run_instructions, vec![40]);
        assert_eq!(r.stack_peak_bytes, 512);
        let e = parse_report(&text.replace("DONE\n", "")).unwrap_err();
        assert!(e.to_string().contains("DONE"), "{e}");
        let e = parse_report(&text.replace("LAYER 0 1 20\n", "")).unwrap_err();
        assert!(e.to_string().contains("layer 1"), "{e}");
        let e = parse_report("ICEFOLD-FW 1\nERR load: bad magic\n").unwrap_err();
        assert!(e.to_string().contains("bad magic"), "{e}");
    }

    #[test]
    fn manifest_copy_points_at_the_runtime() {
        let text = FIRMWARE_FILES[0].1;
        let m = manifest_for_copy(text, Path::new("/rt"), "fw-1").unwrap();
        assert!(m.contains("icefold = { path = \"/rt\" }"), "{m}");
        assert!(m.contains("name = \"fw-1\""), "{m}");
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
