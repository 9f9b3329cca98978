//! The firmware project for one model, input set and core: a copy of `examples/firmware` with the
//! model module and the samples generated into it, cached by hash.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use icefold::format::DType;

use super::boundary::{boundary_dtype, quantized_inputs};
use super::McuOptions;
use crate::host;
use crate::io::Array;
use crate::lower::rustgen::{self, Provenance};

/// The firmware crate's files, compiled into the tool so a copy can be made anywhere.
const FIRMWARE_FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../examples/firmware/Cargo.toml"),
    ),
    (
        "Cargo.lock",
        include_str!("../../../examples/firmware/Cargo.lock"),
    ),
    (
        "build.rs",
        include_str!("../../../examples/firmware/build.rs"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../../../examples/firmware/.cargo/config.toml"),
    ),
    (
        "src/main.rs",
        include_str!("../../../examples/firmware/src/main.rs"),
    ),
    (
        "src/markers.rs",
        include_str!("../../../examples/firmware/src/markers.rs"),
    ),
    (
        "src/board.rs",
        include_str!("../../../examples/firmware/src/board.rs"),
    ),
    (
        "memory/mps2.x",
        include_str!("../../../examples/firmware/memory/mps2.x"),
    ),
    (
        "memory/mps2-an505.x",
        include_str!("../../../examples/firmware/memory/mps2-an505.x"),
    ),
    (
        "memory/microbit.x",
        include_str!("../../../examples/firmware/memory/microbit.x"),
    ),
];

/// 64-bit FNV-1a: a stable hash for naming cache entries (std's hasher may change between
/// Rust versions, and names must not).
pub(super) fn fnv1a(parts: &[&[u8]]) -> u64 {
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
pub(super) fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
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

/// Checks `x` against the model input and returns its samples as the firmware embeds them:
/// little-endian f32 for f32 models, int8 quantized on the host for int8 models.
fn input_bytes(blob: &[u8], x: &Array) -> Result<Vec<u8>> {
    let aligned = crate::lower::blob::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let info = model.info();
    let shape = host::logical_shape(info.caller_input_dims(), info.input_rank);
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
        if opts.allow_nonfinite {
            b"allow-nonfinite"
        } else {
            b"finite"
        },
        opts.public_key.as_ref().map_or(b"unsigned", |k| &k[..]),
        if opts.drift { b"drift" } else { b"no-drift" },
        if opts.small_code {
            b"small-code"
        } else {
            b"fast-kernels"
        },
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
    if let Some(key) = &opts.public_key {
        let text = format!(
            "//! The key the firmware trusts, written by `icefold mcu --public-key`.\n\n{}",
            crate::signing::public_key_rust(key)
        );
        write_if_changed(&generated.join("key.rs"), text.as_bytes())?;
    }
    let sample_len = x.sample_len();
    let inputs_rs = format!(
        "//! Input samples for the profiling firmware, written by `icefold mcu`.\n\
         #![allow(dead_code)]\n\n\
         /// Number of samples.\n\
         pub const SAMPLE_COUNT: usize = {};\n\
         /// Elements per sample.\n\
         pub const SAMPLE_LEN: usize = {sample_len};\n\
         /// The samples, one after the other: little-endian f32, or int8 for int8 models.\n\
         pub static INPUTS: icefold::Aligned<[u8; {}]> =\n    icefold::Aligned(*include_bytes!(\"inputs.bin\"));\n\n\
         /// f32 models: run NaN and infinite inputs instead of refusing them (`--allow-nonfinite`).\n\
         pub const ALLOW_NONFINITE: bool = {};\n",
        x.samples(),
        inputs.len(),
        opts.allow_nonfinite
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
        bail!("examples/firmware/Cargo.toml no longer has the lines `{dep}` and `{bin_line}` that `icefold mcu` rewrites; update tools/src/mcu/project.rs");
    }
    let path = runtime.to_string_lossy().replace('\\', "/");
    Ok(text
        .replace(dep, &format!("icefold = {{ path = {path:?} }}"))
        .replace(bin_line, &format!("[[bin]]\nname = {bin:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_copy_points_at_the_runtime() {
        let text = FIRMWARE_FILES[0].1;
        let m = manifest_for_copy(text, Path::new("/rt"), "fw-1").unwrap();
        assert!(m.contains("icefold = { path = \"/rt\" }"), "{m}");
        assert!(m.contains("name = \"fw-1\""), "{m}");
    }
}
