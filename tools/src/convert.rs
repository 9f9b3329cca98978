//! The conversion pipeline: ONNX file → imported graph → [BatchNorm statistics check] → folded
//! graph → lowered layers → blob.
//!
//! With calibration data, [`convert_file_checked`] / [`convert_graph_checked`] first compare every
//! BatchNorm's running statistics with the data (`diagnose`) and refuse stale ones unless told to
//! go on ([`StaleBnPolicy::Allow`]) or to re-estimate them ([`StaleBnPolicy::Recalibrate`]).
//! `convert_graph`, `convert_graph_with` and `convert_graph_int8` do not check: they fold what
//! they are given.

use std::path::Path;

use anyhow::Result;

use crate::bn_check::diagnose::{self, DiagnoseOptions, Diagnosis, Outcome, Thresholds, Verdict};
use crate::host::{self, Diff};
use crate::import;
use crate::io::Array;
use crate::ir::graph::{FrozenGraph, ImportedGraph};
use crate::lower::blob::{self, AlignedBytes};
use crate::lower::limits::Limits;
use crate::lower::{self, LowerOptions, Lowered};
use crate::passes::fold_batchnorm::{self, FoldReport};
use crate::passes::recalibrate_bn::Recalibration;
use crate::quantize;
use crate::quantize::calibrate::{self, Calibration, Method};

/// Every stage of one conversion, kept for reports and verification.
#[derive(Clone, Debug)]
pub struct Converted {
    /// The graph that was folded (may hold BatchNorm): as imported, or with recalibrated
    /// statistics after [`StaleBnPolicy::Recalibrate`].
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
    /// The BatchNorm statistics check, when the conversion ran one.
    pub bn_check: Option<BnStatsCheck>,
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
    /// A dense last layer writes int16 (`DenseI8Wide`); `false` keeps every tensor int8.
    pub wide_output: bool,
    /// The first this many convolutions keep int16 activations (16×8, `Conv2dI16`) where
    /// `quantize::int16_activations` allows; 0 keeps them int8, `usize::MAX` is all of them.
    pub int16_activations: usize,
}

/// How many leading convolutions `convert` keeps in int16 unless told otherwise: all that can
/// (docs/QUANTIZATION.md, "int16 activations": the error of the networks it applies to drops by
/// 20 to 58 % on the held-out exports, for up to twice the arena).
pub const INT16_ACTIVATIONS_DEFAULT: usize = usize::MAX;

/// Parses `--int16-activations`: a count of leading convolutions, or `all`.
pub fn parse_int16_activations(s: &str) -> Result<usize, String> {
    match s {
        "all" => Ok(usize::MAX),
        n => n
            .parse()
            .map_err(|_| format!("expected a number of convolutions or `all`, found `{n}`")),
    }
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
    /// Arena bytes with every activation int8 (equal to the model's when none is int16).
    pub int8_arena_bytes: u32,
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
    let blob = blob::blob(&lowered)?;
    Ok(Converted {
        imported,
        frozen,
        fold,
        lowered,
        blob,
        int8: None,
        bn_check: None,
    })
}

/// Calibration samples the bias correction measures each layer on: the usual calibration set
/// size. A per-channel mean over 16 samples is noisy on small late layers; 64 are better on 4 of
/// the 5 held-out MobileNets (docs/QUANTIZATION.md). Cost: one int8 run of the network per layer
/// and sample.
const BIAS_CORRECTION_SAMPLES: usize = 64;

/// Convert an imported graph to an int8 blob calibrated on `opts.calib`. The BatchNorm statistics
/// are folded unchecked; [`convert_graph_checked`] checks them first.
pub fn convert_graph_int8(
    imported: ImportedGraph,
    limits: &Limits,
    opts: Int8Options<'_>,
) -> Result<Converted> {
    let (frozen, fold) = fold_batchnorm::fold(imported.clone())?;
    let calibration = calibrate::calibrate(&frozen, opts.calib, opts.method, opts.progress)?;
    let f32_lowered = lower::lower_with(&frozen, LowerOptions::INT8)?;
    let mut lowered = quantize::quantize(
        &f32_lowered,
        &calibration,
        opts.wide_output,
        opts.int16_activations,
    )?;
    if opts.bias_correction {
        quantize::correct_bias(
            &mut lowered,
            &f32_lowered,
            opts.calib,
            BIAS_CORRECTION_SAMPLES,
            opts.progress,
        )?;
    }
    limits.check_lowered(&lowered)?;
    let int8_arena_bytes = quantize::int8_activation_arena(&lowered)?;
    let blob = blob::blob(&lowered)?;
    let f32_blob = blob::blob(&f32_lowered)?;
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
            int8_arena_bytes,
        }),
        bn_check: None,
    })
}

/// Import an ONNX file and convert it to int8.
pub fn convert_file_int8(path: &Path, limits: &Limits, opts: Int8Options<'_>) -> Result<Converted> {
    limits.check_file(path)?;
    convert_graph_int8(import::import_file(path)?, limits, opts)
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
    convert_graph_with(import::import_file(path)?, limits)
}

/// What a checked conversion does when BatchNorm statistics are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleBnPolicy {
    /// Refuse with an error naming every stale node (the default).
    Refuse,
    /// Warn and fold the statistics as they are (`--allow-stale-bn`).
    Allow,
    /// Re-estimate every BatchNorm's statistics from the calibration data, then fold
    /// (`--recalibrate-bn`). Applies whatever the verdict.
    Recalibrate,
}

/// The BatchNorm statistics check before folding.
#[derive(Clone, Copy, Debug)]
pub struct BnCheckOptions<'a> {
    /// Calibration samples `[N, ...]` in the model's input shape (N >= 2).
    pub calib: &'a Array,
    /// What to do with stale statistics.
    pub on_stale: StaleBnPolicy,
    /// Verdict thresholds.
    pub thresholds: Thresholds,
    /// Show progress bars.
    pub progress: bool,
}

impl<'a> BnCheckOptions<'a> {
    /// Default thresholds, refuse stale statistics, no progress bars.
    pub fn new(calib: &'a Array) -> Self {
        BnCheckOptions {
            calib,
            on_stale: StaleBnPolicy::Refuse,
            thresholds: Thresholds::DEFAULT,
            progress: false,
        }
    }
}

/// What the BatchNorm check found and did.
#[derive(Clone, Debug)]
pub struct BnStatsCheck {
    /// The diagnosis of the graph as imported.
    pub diagnosis: Diagnosis,
    /// The policy applied.
    pub policy: StaleBnPolicy,
    /// Set when the statistics were re-estimated before folding: what changed.
    pub recalibration: Option<Recalibration>,
}

impl BnStatsCheck {
    /// True when stale statistics were folded as they are (`Allow`).
    pub fn folded_stale(&self) -> bool {
        self.recalibration.is_none() && self.diagnosis.outcome() == Outcome::Stale
    }
}

/// Diagnoses `imported`'s BatchNorm statistics on `opts.calib` and applies `opts.on_stale`:
/// returns the graph to fold (recalibrated under `Recalibrate`) and what was found. Under
/// `Refuse`, stale statistics are an error that names every stale node and says what to do.
pub fn check_bn_statistics(
    imported: ImportedGraph,
    opts: &BnCheckOptions<'_>,
) -> Result<(ImportedGraph, BnStatsCheck)> {
    let diagnosis = diagnose::diagnose(
        &imported,
        opts.calib,
        &DiagnoseOptions {
            thresholds: opts.thresholds,
            // The "as run" numbers only explain; a conversion does not need them.
            as_run: false,
            progress: opts.progress,
        },
    )?;
    match opts.on_stale {
        StaleBnPolicy::Recalibrate if diagnosis.outcome() != Outcome::NoBatchNorm => {
            let recalibration = diagnosis.recalibration.clone();
            let graph = recalibration.graph.clone();
            Ok((
                graph,
                BnStatsCheck {
                    diagnosis,
                    policy: opts.on_stale,
                    recalibration: Some(recalibration),
                },
            ))
        }
        StaleBnPolicy::Refuse if diagnosis.outcome() == Outcome::Stale => {
            Err(anyhow::anyhow!(stale_error(&diagnosis)))
        }
        _ => Ok((
            imported,
            BnStatsCheck {
                diagnosis,
                policy: opts.on_stale,
                recalibration: None,
            },
        )),
    }
}

/// The refusal message: every stale node with its worst channel, then the ways out.
fn stale_error(d: &Diagnosis) -> String {
    let mut s = format!(
        "refusing to fold stale BatchNorm statistics: {} of {} BatchNorm node(s) do not match the \
         calibration data ({} samples):",
        d.stale().count(),
        d.bns.len(),
        d.samples
    );
    for b in d.stale() {
        let w = b.worst_channels(1, &d.thresholds);
        let detail = w.first().map_or(String::new(), |c| {
            format!(
                "; worst channel {}: running mean {:.4} vs data {:.4}, running variance {:.4} vs \
                 data {:.4} (mean shift {:.2} std, variance ratio {:.3})",
                c.channel,
                c.running_mean,
                c.data_mean,
                c.running_var,
                c.data_var,
                c.shift,
                c.var_ratio
            )
        });
        s.push_str(&format!(
            "\n  {}: {}{}",
            b.origin,
            if b.never_updated {
                "never updated (running mean 0, variance 1 in every channel)".to_string()
            } else {
                format!(
                    "{} of {} channels stale",
                    b.count_at_least(Verdict::Stale),
                    b.channel_count()
                )
            },
            detail
        ));
    }
    s.push_str(
        "\nFolding them would freeze a model that does not compute what was trained. Either \
         update the running statistics in training and export again, or re-estimate them from \
         the calibration data (icefold convert --recalibrate-bn; library: \
         StaleBnPolicy::Recalibrate), or fold them anyway (--allow-stale-bn; \
         StaleBnPolicy::Allow). `icefold diagnose MODEL --calib CALIB` shows every channel.",
    );
    s
}

/// Checks the BatchNorm statistics (see [`check_bn_statistics`]), then converts to f32, or to
/// int8 when `int8` is given (normally with the same calibration data).
pub fn convert_graph_checked(
    imported: ImportedGraph,
    limits: &Limits,
    check: &BnCheckOptions<'_>,
    int8: Option<Int8Options<'_>>,
) -> Result<Converted> {
    let (graph, bn_check) = check_bn_statistics(imported, check)?;
    let mut c = match int8 {
        Some(opts) => convert_graph_int8(graph, limits, opts)?,
        None => convert_graph_with(graph, limits)?,
    };
    c.bn_check = Some(bn_check);
    Ok(c)
}

/// Imports an ONNX file, checks its BatchNorm statistics, and converts it (see
/// [`convert_graph_checked`]).
pub fn convert_file_checked(
    path: &Path,
    limits: &Limits,
    check: &BnCheckOptions<'_>,
    int8: Option<Int8Options<'_>>,
) -> Result<Converted> {
    limits.check_file(path)?;
    convert_graph_checked(import::import_file(path)?, limits, check, int8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int16_activations_count_parses_numbers_and_all() {
        assert_eq!(parse_int16_activations("all"), Ok(usize::MAX));
        assert_eq!(parse_int16_activations("0"), Ok(0));
        assert_eq!(parse_int16_activations("12"), Ok(12));
        let err = parse_int16_activations("first").unwrap_err();
        assert!(err.contains("`all`") && err.contains("`first`"), "{err}");
        assert!(parse_int16_activations("-1").is_err());
    }
}
