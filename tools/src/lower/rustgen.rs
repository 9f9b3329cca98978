//! Rust source for firmware: a `model.rs` module that embeds a blob and states, as constants, what
//! the firmware needs to allocate for it (`icefold convert --emit-rust`).
//!
//! With the constants a firmware declares its buffers statically and exactly:
//! ```text
//! mod model; // generated
//! static mut ARENA: icefold::Aligned<[u8; model::ARENA_BYTES]> = icefold::Aligned([0; model::ARENA_BYTES]);
//! let model = icefold::Model::new_checked(&model::BLOB.0)?;
//! ```
//! and, to link only the kernels this model runs (a blob that needs another is refused at load):
//! ```text
//! let model = icefold::Model::<model::ModelKernels>::new_checked_with_kernels(&model::BLOB.0)?;
//! ```

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use icefold::engine::KernelSet;
use icefold::format::{DType, TensorDesc, FORMAT_VERSION};

use crate::host;

/// Where a generated module came from, for its doc comment.
#[derive(Clone, Debug)]
pub struct Provenance {
    /// What the blob was made from (the ONNX file, or the blob file itself).
    pub source: String,
    /// The command or API that generated the module.
    pub generator: String,
}

/// The text of a `model.rs` module for `blob`, which the module includes with
/// `include_bytes!(blob_include)` (a path relative to the module file, or absolute).
///
/// The blob is checked with the runtime's own loader first, so the constants describe a blob the
/// firmware will accept.
pub fn model_module(blob: &[u8], blob_include: &str, provenance: &Provenance) -> Result<String> {
    let aligned = crate::lower::blob::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let info = model.info();
    let crc = blob
        .get(16..20)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);

    let mut s = String::new();
    let w = &mut s;
    // `writeln!` into a String cannot fail.
    let _ = writeln!(
        w,
        "//! icefold model generated from `{}` by {} (icefold-tool {}).",
        provenance.source.replace('`', "'"),
        provenance.generator,
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(w, "//!");
    let _ = writeln!(
        w,
        "//! Blob: `{}`, {} bytes, format version {FORMAT_VERSION}, payload CRC-32 {crc:#010x}.",
        blob_include.replace('`', "'"),
        blob.len()
    );
    let _ = writeln!(
        w,
        "//! Generated code: regenerate it with `icefold convert MODEL.onnx -o BLOB --emit-rust model.rs`"
    );
    let _ = writeln!(
        w,
        "//! rather than editing it, so the constants always match the blob."
    );
    let _ = writeln!(w, "#![allow(dead_code)]");
    let _ = writeln!(w);
    let _ = writeln!(w, "/// Size of the blob in bytes.");
    let _ = writeln!(w, "pub const BLOB_BYTES: usize = {};", blob.len());
    let _ = writeln!(
        w,
        "/// The model blob, 16-byte aligned as `icefold::Model::new_checked` requires."
    );
    let _ = writeln!(
        w,
        "pub static BLOB: icefold::Aligned<[u8; BLOB_BYTES]> =\n    icefold::Aligned(*include_bytes!({:?}));",
        blob_include
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "/// Bytes of arena one run needs: declare the arena as `icefold::Aligned<[u8; ARENA_BYTES]>`."
    );
    let _ = writeln!(w, "pub const ARENA_BYTES: usize = {};", info.arena_bytes);
    let _ = writeln!(w, "/// Number of layers (one `Observer` call pair each).");
    let _ = writeln!(w, "pub const LAYER_COUNT: usize = {};", info.layer_count);
    let _ = writeln!(w);
    boundary(
        w,
        "INPUT",
        "input",
        &info.input,
        info.caller_input_dims(),
        info.input_rank,
    );
    let _ = writeln!(w);
    boundary(
        w,
        "OUTPUT",
        "output",
        &info.output,
        info.output.dims,
        info.output_rank,
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "/// The kernels this model runs: load with \
         `icefold::Model::<ModelKernels>::new_checked_with_kernels` and the firmware links no other."
    );
    let _ = writeln!(w, "pub struct ModelKernels;");
    let _ = writeln!(w, "impl icefold::engine::Kernels for ModelKernels {{");
    let _ = writeln!(
        w,
        "    const SET: icefold::engine::KernelSet = {};",
        kernel_set_expr(KernelSet::of(&model))
    );
    let _ = writeln!(w, "}}");
    Ok(s)
}

/// `set` as a constant Rust expression (`icefold::engine::KernelSet::EMPTY.with(..)..`).
pub fn kernel_set_expr(set: KernelSet) -> String {
    let mut code = String::from("icefold::engine::KernelSet::EMPTY");
    for kernel in set.iter() {
        let _ = write!(
            code,
            "\n        .with(icefold::engine::Kernel::{})",
            kernel.name()
        );
    }
    code
}

/// Constants describing the model input or output.
/// `dims`: the tensor's, or for an input the model transposes while writing it, the caller's.
fn boundary(w: &mut String, name: &str, what: &str, d: &TensorDesc, dims: [u16; 3], rank: u8) {
    let shape = host::logical_shape(dims, rank);
    let _ = writeln!(
        w,
        "/// Shape of one {what} sample as in the ONNX model (batch removed); same element order as `{name}_DIMS`."
    );
    let _ = writeln!(
        w,
        "pub const {name}_SHAPE: [usize; {}] = {:?};",
        shape.len(),
        shape
    );
    let _ = writeln!(
        w,
        "/// The runtime's dimensions of the {what} (leading 1s fill unused dimensions)."
    );
    let _ = writeln!(w, "pub const {name}_DIMS: [usize; 3] = {:?};", dims);
    let _ = writeln!(w, "/// Elements of one {what} sample.");
    let _ = writeln!(w, "pub const {name}_LEN: usize = {};", d.len());
    let _ = writeln!(w, "/// Element type of the {what}.");
    let dtype = match d.dtype {
        DType::F32 => "F32",
        DType::I8 => "I8",
        DType::I16 => "I16",
    };
    let _ = writeln!(
        w,
        "pub const {name}_DTYPE: icefold::format::DType = icefold::format::DType::{dtype};"
    );
    let _ = writeln!(
        w,
        "/// Quantization of the {what} (`real = scale * (q - zero_point)`), for int8 models."
    );
    let quant = match d.quant {
        Some(q) => format!(
            "Some(icefold::format::Quant {{ scale: f32::from_bits({:#010x}), zero_point: {} }})",
            q.scale.to_bits(),
            q.zero_point
        ),
        None => "None".into(),
    };
    let _ = writeln!(
        w,
        "pub const {name}_QUANT: Option<icefold::format::Quant> = {quant};"
    );
}

/// The path to write into `include_bytes!` in a module at `module` for a blob at `blob`: relative
/// when both are under a common directory (the pair can move together), otherwise absolute.
pub fn include_path(module: &Path, blob: &Path) -> Result<String> {
    let abs = |p: &Path| -> Result<PathBuf> {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(p)
        };
        Ok(normalize(&p))
    };
    let module_dir = abs(module)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let blob = abs(blob)?;
    let (m, b): (Vec<_>, Vec<_>) = (
        module_dir.components().collect(),
        blob.components().collect(),
    );
    let common = m.iter().zip(&b).take_while(|(x, y)| x == y).count();
    // Only the root in common: an absolute path is clearer than a chain of `..`.
    if common <= 1 {
        return Ok(blob.display().to_string());
    }
    let mut rel = PathBuf::new();
    for _ in common..m.len() {
        rel.push("..");
    }
    for c in &b[common..] {
        rel.push(c.as_os_str());
    }
    Ok(rel.to_string_lossy().replace('\\', "/"))
}

/// `a/./b/../c` → `a/c`, without touching the file system (the files may not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_path_is_relative_inside_a_tree() {
        let p = include_path(
            Path::new("/a/b/src/model.rs"),
            Path::new("/a/b/out/m.icefold"),
        );
        assert_eq!(p.unwrap(), "../out/m.icefold");
        let p = include_path(Path::new("/a/b/model.rs"), Path::new("/a/b/./m.icefold"));
        assert_eq!(p.unwrap(), "m.icefold");
        let p = include_path(Path::new("/x/model.rs"), Path::new("/y/m.icefold"));
        assert_eq!(p.unwrap(), "/y/m.icefold");
    }
}
