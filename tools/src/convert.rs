//! The conversion pipeline: ONNX file → imported graph → folded graph → lowered layers → blob.

use std::path::Path;

use anyhow::Result;

use crate::calibrate::{self, Calibration, Method};
use crate::emit::{self, AlignedBytes};
use crate::graph::{FrozenGraph, ImportedGraph};
use crate::host::{self, Diff};
use crate::io::Array;
use crate::limits::Limits;
use crate::lower::{self, LowerOptions, Lowered};
use crate::onnx;
use crate::passes::fold_batchnorm::{self, FoldReport};
use crate::quantize;

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
    /// For an int8 conversion: calibration, the f32 twin and the quantization error.
    pub int8: Option<Int8Conversion>,
}

/// How to quantize.
#[derive(Clone, Copy, Debug)]
pub struct Int8Options<'a> {
    /// Calibration samples `[N, ...]` in the model's input shape (never the test inputs).
    pub calib: &'a Array,
    /// How activation ranges are chosen.
    pub method: Method,
    /// Show progress bars.
    pub progress: bool,
    /// Correct each conv/dense layer's per-channel mean error on the calibration data.
    pub bias_correction: bool,
}

/// What quantization did and cost.
#[derive(Clone, Debug)]
pub struct Int8Conversion {
    /// Activation ranges.
    pub calibration: Calibration,
    /// The f32 model with the same layers (the reference the int8 layers are measured against).
    pub f32_lowered: Lowered,
    /// Its blob.
    pub f32_blob: Vec<u8>,
    /// Per layer: signal-to-quantization-noise ratio of its output in dB (int8 model vs the f32
    /// twin, both run end to end on the calibration data, so errors accumulate as on the device).
    pub layer_sqnr_db: Vec<f64>,
    /// End-to-end int8 vs f32 outputs on the calibration data.
    pub end_to_end: Diff,
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
        int8: None,
    })
}

/// Convert an imported graph to an int8 blob calibrated on `opts.calib`.
pub fn convert_graph_int8(
    imported: ImportedGraph,
    limits: &Limits,
    opts: Int8Options<'_>,
) -> Result<Converted> {
    let (frozen, fold) = fold_batchnorm::fold(imported.clone())?;
    let calibration = calibrate::calibrate(&frozen, opts.calib, opts.method, opts.progress)?;
    let f32_lowered = lower::lower_with(
        &frozen,
        LowerOptions {
            fuse_table_activations: false,
        },
    )?;
    let mut lowered = quantize::quantize(&f32_lowered, &calibration)?;
    if opts.bias_correction {
        quantize::correct_bias(&mut lowered, &f32_lowered, opts.calib, 16)?;
    }
    limits.check_lowered(&lowered)?;
    let blob = emit::blob(&lowered)?;
    let f32_blob = emit::blob(&f32_lowered)?;
    let (layer_sqnr_db, end_to_end) =
        host::compare_layers(&f32_blob, &blob, opts.calib, opts.progress)?;
    Ok(Converted {
        imported,
        frozen,
        fold,
        lowered,
        blob,
        int8: Some(Int8Conversion {
            calibration,
            f32_lowered,
            f32_blob,
            layer_sqnr_db,
            end_to_end,
        }),
    })
}

/// Import an ONNX file and convert it to int8.
pub fn convert_file_int8(path: &Path, limits: &Limits, opts: Int8Options<'_>) -> Result<Converted> {
    limits.check_file(path)?;
    convert_graph_int8(onnx::import_file(path)?, limits, opts)
}

/// The blob of a conversion in aligned memory, ready for `Model::new_checked`.
pub fn aligned(c: &Converted) -> AlignedBytes {
    AlignedBytes::new(&c.blob)
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
