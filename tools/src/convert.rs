//! The conversion pipeline: ONNX file → imported graph → folded graph → lowered layers → blob.

use std::path::Path;

use anyhow::Result;

use crate::emit;
use crate::graph::{FrozenGraph, ImportedGraph};
use crate::limits::Limits;
use crate::lower::{self, Lowered};
use crate::onnx;
use crate::passes::fold_batchnorm::{self, FoldReport};

/// Every stage of one conversion, kept for reports and verification.
#[derive(Clone, Debug)]
pub struct Converted {
    /// The graph as imported (may hold BatchNorm).
    pub imported: ImportedGraph,
    /// The graph with every BatchNorm folded.
    pub frozen: FrozenGraph,
    /// What folding did to each BatchNorm.
    pub fold: FoldReport,
    /// Runtime layers, weights and arena plan.
    pub lowered: Lowered,
    /// The serialized blob.
    pub blob: Vec<u8>,
}

/// Convert an imported graph with the default [`Limits`].
pub fn convert_graph(imported: ImportedGraph) -> Result<Converted> {
    convert_graph_with(imported, &Limits::DEFAULT)
}

/// Convert an imported graph, refusing it if its weights or arena exceed `limits`.
pub fn convert_graph_with(imported: ImportedGraph, limits: &Limits) -> Result<Converted> {
    let (frozen, fold) = fold_batchnorm::fold(imported.clone())?;
    let lowered = lower::lower(&frozen)?;
    limits.check_lowered(&lowered)?;
    let blob = emit::blob(&lowered)?;
    Ok(Converted {
        imported,
        frozen,
        fold,
        lowered,
        blob,
    })
}

/// Import and convert an ONNX file with the default [`Limits`].
pub fn convert_file(path: &Path) -> Result<Converted> {
    convert_file_with(path, &Limits::DEFAULT)
}

/// Import and convert an ONNX file, refusing it (before reading it, for the file size) if it
/// exceeds `limits`.
pub fn convert_file_with(path: &Path, limits: &Limits) -> Result<Converted> {
    limits.check_file(path)?;
    convert_graph_with(onnx::import_file(path)?, limits)
}
