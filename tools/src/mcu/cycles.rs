//! Exact instruction counts and estimated Cortex-M4 cycles from the project's QEMU plugin
//! (`tools/qemu-plugin/icefold_cycles.c`, its cycle model in its header and in docs/MCU.md).
//!
//! The firmware calls marker functions around each inference and each layer
//! ([`INFERENCE_START`], [`INFERENCE_END`], [`LAYER_START`], [`LAYER_END`]); their addresses come
//! from the ELF's symbol table. The plugin is C, compiled here with the system's C compiler
//! (`$CC`, else `cc`) into the cache on first use; without a compiler the profile falls back to
//! the firmware's timer under `-icount` (instructions only).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use object::{Object, ObjectSymbol};

use super::project::{fnv1a, write_if_changed};

/// The plugin's source, compiled into the tool so it can be built anywhere.
pub const PLUGIN_SOURCE: &str = include_str!("../../qemu-plugin/icefold_cycles.c");

/// The firmware's marker called right before each inference.
pub const INFERENCE_START: &str = "icefold_inference_start";
/// The firmware's marker called right after each inference.
pub const INFERENCE_END: &str = "icefold_inference_end";
/// The firmware's marker called at the start of each layer (from its `Observer`).
pub const LAYER_START: &str = "icefold_layer_start";
/// The firmware's marker called at the end of each layer (from its `Observer`).
pub const LAYER_END: &str = "icefold_layer_end";

/// The C compiler the plugin is built with: `$CC`, else `cc`.
fn compiler() -> OsString {
    std::env::var_os("CC").unwrap_or_else(|| "cc".into())
}

/// True if the C compiler runs.
pub fn compiler_available() -> bool {
    Command::new(compiler())
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Builds the plugin into `cache_dir/plugin/` unless it is there already (named by the source's
/// hash, so a changed plugin is rebuilt) and returns the shared library's path.
pub fn build_plugin(cache_dir: &Path) -> Result<PathBuf> {
    let hash = format!("{:016x}", fnv1a(&[PLUGIN_SOURCE.as_bytes()]));
    let dir = cache_dir.join("plugin");
    let lib = dir.join(format!("libicefold_cycles-{hash}.so"));
    if lib.is_file() {
        return Ok(lib);
    }
    let source = dir.join(format!("icefold_cycles-{hash}.c"));
    write_if_changed(&source, PLUGIN_SOURCE.as_bytes())?;
    // Compiled to a private name, then renamed: a concurrent run never loads half a library.
    let tmp = dir.join(format!(".tmp-{}-{hash}.so", std::process::id()));
    let out = Command::new(compiler())
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&tmp)
        .arg(&source)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "cannot run the C compiler `{}` to build the QEMU cycle plugin; install gcc \
                 (`sudo apt-get install gcc`) or set CC",
                compiler().to_string_lossy()
            )
        })?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        bail!(
            "building the QEMU cycle plugin {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::rename(&tmp, &lib).with_context(|| format!("cannot write {}", lib.display()))?;
    Ok(lib)
}

/// Addresses of the firmware's marker functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Markers {
    /// [`INFERENCE_START`].
    pub inference_start: u64,
    /// [`INFERENCE_END`].
    pub inference_end: u64,
    /// [`LAYER_START`].
    pub layer_start: u64,
    /// [`LAYER_END`].
    pub layer_end: u64,
}

impl Markers {
    /// Reads the markers' addresses from the ELF's symbol table (Thumb bit cleared).
    pub fn find(elf: &[u8]) -> Result<Markers> {
        let file = object::File::parse(elf).context("cannot parse the firmware ELF")?;
        let address = |name: &str| -> Result<u64> {
            file.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address() & !1)
                .ok_or_else(|| {
                    anyhow!("the firmware has no marker function `{name}` (an older firmware?)")
                })
        };
        let markers = Markers {
            inference_start: address(INFERENCE_START)?,
            inference_end: address(INFERENCE_END)?,
            layer_start: address(LAYER_START)?,
            layer_end: address(LAYER_END)?,
        };
        let all = [
            markers.inference_start,
            markers.inference_end,
            markers.layer_start,
            markers.layer_end,
        ];
        if (1..all.len()).any(|i| all[..i].contains(&all[i])) {
            bail!("the firmware's marker functions share an address (the linker merged them)");
        }
        Ok(markers)
    }

    /// QEMU's `-plugin` argument: the library, the markers and the file the counts go to.
    pub fn plugin_arg(&self, lib: &Path, out: &Path) -> OsString {
        let mut arg = lib.as_os_str().to_os_string();
        arg.push(format!(
            ",start={:#x},end={:#x},layer_start={:#x},layer_end={:#x},out=",
            self.inference_start, self.inference_end, self.layer_start, self.layer_end
        ));
        arg.push(out);
        arg
    }
}

/// One QEMU run with the plugin: its `-plugin` argument and the file it writes the counts to.
#[derive(Clone, Debug)]
pub struct PluginRun {
    /// QEMU's `-plugin` argument.
    pub arg: OsString,
    /// Where the plugin writes its records.
    pub out: PathBuf,
}

impl PluginRun {
    /// Builds the plugin if needed and prepares a run of the firmware `elf` (its markers) with
    /// the counts written to a file of its own under `cache_dir/runs/`.
    pub fn new(elf: &Path, cache_dir: &Path) -> Result<PluginRun> {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let lib = build_plugin(cache_dir)?;
        let bytes = fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
        let markers = Markers::find(&bytes)?;
        let dir = cache_dir.join("runs");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let out = dir.join(format!(
            "counts-{}-{}.txt",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        // QEMU splits the `-plugin` argument at commas.
        if out.to_string_lossy().contains(',') || lib.to_string_lossy().contains(',') {
            bail!(
                "the cache directory {} has a comma in its path, which QEMU's -plugin option \
                 cannot take; set ICEFOLD_MCU_CACHE to another directory",
                cache_dir.display()
            );
        }
        Ok(PluginRun {
            arg: markers.plugin_arg(&lib, &out),
            out,
        })
    }

    /// The counts the plugin wrote (the file is removed).
    pub fn counts(self) -> Result<Counts> {
        let text = fs::read_to_string(&self.out);
        let _ = fs::remove_file(&self.out);
        let text = text.with_context(|| {
            format!("the cycle plugin wrote no counts ({})", self.out.display())
        })?;
        parse_counts(&text)
    }
}

/// Instructions and estimated Cortex-M4 cycles of one region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    /// Executed instructions (exact).
    pub instructions: u64,
    /// Estimated Cortex-M4 cycles (the plugin's model).
    pub cycles: u64,
}

/// What the plugin counted in one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Each inference, in order.
    pub inferences: Vec<Count>,
    /// Each inference's layers, in order.
    pub layers: Vec<Vec<Count>>,
}

/// Parses the plugin's records (`INFERENCE <n> <insns> <cycles>`, `LAYER <n> <layer> <insns>
/// <cycles>`, `TOTAL <insns> <cycles>`), checking that inferences and layers come in order.
pub fn parse_counts(text: &str) -> Result<Counts> {
    let mut c = Counts::default();
    for (n, line) in text.lines().enumerate() {
        let err = || anyhow!("cycle plugin output line {}: {line:?}", n + 1);
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let nums = fields
            .iter()
            .skip(1)
            .map(|f| f.parse::<u64>().map_err(|_| err()))
            .collect::<Result<Vec<u64>>>()?;
        match (fields.first().copied(), nums.as_slice()) {
            (Some("LAYER"), &[inference, layer, instructions, cycles]) => {
                if inference as usize != c.inferences.len() {
                    bail!(err());
                }
                if c.layers.len() <= inference as usize {
                    c.layers.push(Vec::new());
                }
                let layers = &mut c.layers[inference as usize];
                if layer as usize != layers.len() {
                    bail!(err());
                }
                layers.push(Count {
                    instructions,
                    cycles,
                });
            }
            (Some("INFERENCE"), &[inference, instructions, cycles]) => {
                if inference as usize != c.inferences.len() {
                    bail!(err());
                }
                c.inferences.push(Count {
                    instructions,
                    cycles,
                });
                c.layers.resize(c.inferences.len(), Vec::new());
            }
            (Some("TOTAL"), &[_, _]) | (None, _) => {}
            _ => bail!(err()),
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_in_order() {
        let text = "LAYER 0 0 10 12\nLAYER 0 1 20 31\nINFERENCE 0 40 50\n\
                    LAYER 1 0 11 13\nLAYER 1 1 21 30\nINFERENCE 1 41 52\nTOTAL 900 1200\n";
        let c = parse_counts(text).unwrap();
        assert_eq!(c.inferences.len(), 2);
        assert_eq!(
            c.inferences[1],
            Count {
                instructions: 41,
                cycles: 52
            }
        );
        assert_eq!(c.layers[0][1].cycles, 31);
        assert_eq!(c.layers[1].len(), 2);
        // A model without layers' markers still gets one (empty) layer list per inference.
        let c = parse_counts("INFERENCE 0 5 6\n").unwrap();
        assert_eq!(c.layers, vec![Vec::new()]);
        for bad in [
            "LAYER 0 1 10 12\n",
            "INFERENCE 1 5 6\n",
            "LAYER 0 0 x 1\n",
            "WHAT 1\n",
        ] {
            assert!(parse_counts(bad).is_err(), "{bad}");
        }
    }
}
