//! The conversion pipeline: ONNX file → imported graph → [BatchNorm statistics check] → folded
//! graph → lowered layers → [int8 quantization] → blob. [`convert`] is the one entry point; the
//! [`ConvertOptions`] say which optional stages run.
//!
//! With [`ConvertOptions::bn_check`], every BatchNorm's running statistics are first compared
//! with calibration data (`bn_check`) and stale ones are refused unless told to go on
//! ([`StaleBnPolicy::Allow`]) or to re-estimate them ([`StaleBnPolicy::Recalibrate`]). Without
//! it, the statistics are folded as they are.

use crate::lower::plan::Fusion;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::bn_check::policy::{check_bn_statistics, BnCheckOptions, BnStatsCheck};
use crate::host::{self, Diff};
use crate::import;
use crate::io::Array;
use crate::ir::graph::{FrozenGraph, ImportedGraph};
use crate::lower::blob::{self, AlignedBytes};
use crate::lower::limits::Limits;
use crate::lower::{self, LowerOptions, Lowered};
use crate::passes::fold_batchnorm::{self, FoldReport};
use crate::quantize;
use crate::quantize::calibrate::{self, Calibration, Method};

#[cfg(doc)]
use crate::bn_check::policy::StaleBnPolicy;

/// Where a conversion starts.
#[derive(Clone, Debug)]
pub enum Source<'a> {
    /// An ONNX file: refused before it is read if larger than [`Limits::max_file_bytes`], then
    /// imported.
    File(&'a Path),
    /// An imported graph (possibly edited or recalibrated).
    Graph(ImportedGraph),
}

impl<'a> From<&'a Path> for Source<'a> {
    fn from(path: &'a Path) -> Self {
        Source::File(path)
    }
}

impl<'a> From<&'a PathBuf> for Source<'a> {
    fn from(path: &'a PathBuf) -> Self {
        Source::File(path)
    }
}

impl From<ImportedGraph> for Source<'_> {
    fn from(graph: ImportedGraph) -> Self {
        Source::Graph(graph)
    }
}

/// What one conversion does beyond import, BatchNorm folding, lowering and writing the blob.
/// `ConvertOptions::default()` is an f32 conversion within [`Limits::DEFAULT`], unchecked.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvertOptions<'a> {
    /// Budgets: file size, weights, arena.
    pub limits: Limits,
    /// Check the BatchNorm statistics against calibration data before folding.
    pub bn_check: Option<BnCheckOptions<'a>>,
    /// Quantize to int8 (normally with the same calibration data as the check).
    pub int8: Option<Int8Options<'a>>,
    /// Never fuse convolutions with the pooling after them (`lower::plan::fuse_conv_pool` fuses
    /// while the arena exceeds `limits.max_arena_bytes`); the values computed are the same.
    pub no_fusion: bool,
    /// Plan every layer's output apart from its inputs (`lower::plan`: by default a
    /// convolution, pooling or element-wise layer at the arena's peak writes over the input it
    /// reads last, run in bands of rows); the values computed are the same.
    pub no_in_place: bool,
    /// How int8 dense layers store their weights (`icefold convert --dense-weights`; f32
    /// conversions ignore it).
    pub dense_weights: quantize::DenseWeights,
}

/// Converts `source`: import (for a file), the BatchNorm statistics check (if asked), BatchNorm
/// folding, lowering, int8 quantization (if asked), limits, blob.
pub fn convert<'s>(source: impl Into<Source<'s>>, opts: &ConvertOptions<'_>) -> Result<Converted> {
    let imported = match source.into() {
        Source::File(path) => {
            opts.limits.check_file(path)?;
            import::import_file(path)?
        }
        Source::Graph(graph) => graph,
    };
    let (graph, bn_check) = match &opts.bn_check {
        Some(check) => {
            let (graph, found) = check_bn_statistics(imported, check)?;
            (graph, Some(found))
        }
        None => (imported, None),
    };
    let (frozen, fold) = fold_batchnorm::fold(graph.clone())?;
    let (lowered, blob, int8, fusion) = match opts.int8 {
        Some(int8) => {
            let (lowered, blob, conversion, fusion) = quantize_int8(&frozen, opts, int8)?;
            (lowered, blob, Some(conversion), fusion)
        }
        None => {
            let mut lowered = lower::lower(&frozen)?;
            let fusion = if opts.no_fusion {
                Fusion::default()
            } else {
                lowered.fuse_conv_pool(opts.limits.max_arena_bytes)?
            };
            let over_inputs = !opts.no_in_place;
            lower::plan::share_concat_storage(&mut lowered.info, &mut lowered.layers, over_inputs)?;
            opts.limits.check_lowered(&lowered)?;
            let blob = blob::blob(&lowered)?;
            (lowered, blob, None, fusion)
        }
    };
    Ok(Converted {
        imported: graph,
        frozen,
        fold,
        lowered,
        blob,
        int8,
        bn_check,
        fusion,
    })
}

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
    /// Convolutions fused with the pooling that follows them, and the arena before and after.
    pub fusion: Fusion,
}

impl Converted {
    /// The blob in aligned memory, ready for `Model::new_checked`.
    pub fn aligned(&self) -> AlignedBytes {
        AlignedBytes::new(&self.blob)
    }
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
    /// What the arena budget (`Limits::max_arena_bytes`) moved from int16 back to int8; `None`
    /// when it did not bind.
    pub int16_budget: Option<quantize::Int16Budget>,
}

/// Calibration samples the bias correction measures each layer on: the usual calibration set
/// size. A per-channel mean over 16 samples is noisy on small late layers; 64 are better on 4 of
/// the 5 held-out MobileNets (docs/QUANTIZATION.md). Cost: one int8 run of the network per layer
/// and sample.
const BIAS_CORRECTION_SAMPLES: usize = 64;

/// The int8 layers of `frozen` calibrated on `opts.calib`, refused beyond `limits`; their blob;
/// and the int8 report (the f32 twin, the per-layer error).
fn quantize_int8(
    frozen: &FrozenGraph,
    convert: &ConvertOptions<'_>,
    opts: Int8Options<'_>,
) -> Result<(Lowered, Vec<u8>, Int8Conversion, Fusion)> {
    let (limits, fuse) = (&convert.limits, !convert.no_fusion);
    let calibration = calibrate::calibrate(frozen, opts.calib, opts.method, opts.progress)?;
    let f32_lowered = lower::lower_with(frozen, LowerOptions::INT8)?;
    let candidates = quantize::int16_activations(&f32_lowered, opts.int16_activations);
    let over_inputs = !convert.no_in_place;
    let fit_int16 = |budget| {
        quantize::fit_int16_to_arena(
            &f32_lowered,
            &calibration,
            quantize::Writes {
                wide_output: opts.wide_output,
                dense_weights: convert.dense_weights,
            },
            candidates.clone(),
            budget,
            over_inputs,
            opts.calib,
            opts.progress,
        )
    };
    // Every int16 tensor kept, then fused to the budget if that is enough: fusion costs time, not
    // accuracy, so it goes before giving up int16 tensors (which the budget would drop first).
    // The arena compared is the device's (layers in place unless --no-in-place).
    let (every_int16, unbounded) = fit_int16(usize::MAX)?;
    let fits = |l: &Lowered| -> Result<bool> {
        Ok(quantize::device_arena(l, over_inputs)? as usize <= limits.max_arena_bytes)
    };
    let keep_every_int16 = fits(&every_int16)? || {
        let mut trial = every_int16.clone();
        fuse && {
            trial.fuse_conv_pool(limits.max_arena_bytes)?;
            fits(&trial)?
        }
    };
    let (mut lowered, int16_budget) = if keep_every_int16 {
        (every_int16, unbounded)
    } else {
        fit_int16(limits.max_arena_bytes)?
    };
    if opts.bias_correction {
        quantize::correct_bias(
            &mut lowered,
            &f32_lowered,
            opts.calib,
            BIAS_CORRECTION_SAMPLES,
            opts.progress,
        )?;
    }
    let int8_arena_bytes = quantize::int8_activation_arena(&lowered, over_inputs)?;
    // Layer by layer against the f32 lowering, whose layers these still are one for one (the
    // fused layers below compute the same bytes).
    let f32_blob = blob::blob(&f32_lowered)?;
    let (mut layer_sqnr_db, end_to_end) =
        host::compare_layers(&f32_blob, &blob::blob(&lowered)?, opts.calib, opts.progress)?;
    // After the bias correction, which steps through the layers with dense outputs.
    let fusion = if fuse {
        lowered.fuse_conv_pool(limits.max_arena_bytes)?
    } else {
        Fusion::default()
    };
    for &conv in fusion.fused_convs.iter().rev() {
        // A fused layer's output is its pooling's.
        layer_sqnr_db.remove(conv);
    }
    lower::plan::share_concat_storage(&mut lowered.info, &mut lowered.layers, over_inputs)?;
    limits.check_lowered(&lowered)?;
    let blob = blob::blob(&lowered)?;
    let conversion = Int8Conversion {
        calibration,
        f32_lowered,
        f32_blob,
        layer_sqnr_db,
        end_to_end,
        int8_arena_bytes,
        int16_budget,
    };
    Ok((lowered, blob, conversion, fusion))
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

    /// Calibration and bias correction run the samples on every core; the blob must not depend
    /// on how many (their sums are merged in sample order).
    #[test]
    fn int8_conversion_is_the_same_on_one_thread_and_on_many() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/resnet8");
        let calib = crate::io::read_npy(&dir.join("calib.npy")).unwrap();
        let convert_on = |threads: usize, method: Method| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let opts = ConvertOptions {
                    int8: Some(Int8Options {
                        calib: &calib,
                        method,
                        progress: false,
                        bias_correction: true,
                        wide_output: true,
                        int16_activations: INT16_ACTIVATIONS_DEFAULT,
                    }),
                    ..Default::default()
                };
                convert(&dir.join("model.onnx"), &opts).unwrap().blob
            })
        };
        for method in [Method::DEFAULT, Method::Mse] {
            let one = convert_on(1, method);
            assert_eq!(one, convert_on(3, method), "{method:?}");
        }
    }

    /// `--max-arena-bytes` with `--quantize int8`: int16 activations go back to int8 until the
    /// arena fits, the error lands between the default's and the all-int8 conversion's, and a
    /// budget below the all-int8 arena still refuses the model, naming the flag.
    #[test]
    fn int16_activations_fit_the_arena_budget() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dscnn");
        let calib = crate::io::read_npy(&dir.join("calib.npy")).unwrap();
        let convert_within = |max_arena_bytes: usize, int16_activations: usize| {
            let opts = ConvertOptions {
                limits: Limits {
                    max_arena_bytes,
                    ..Limits::DEFAULT
                },
                int8: Some(Int8Options {
                    calib: &calib,
                    method: Method::DEFAULT,
                    progress: false,
                    bias_correction: true,
                    wide_output: true,
                    int16_activations,
                }),
                ..Default::default()
            };
            convert(&dir.join("model.onnx"), &opts)
        };
        let error = |c: &Converted| c.int8.as_ref().unwrap().end_to_end.rel_l2;
        let unbounded =
            convert_within(Limits::DEFAULT.max_arena_bytes, INT16_ACTIVATIONS_DEFAULT).unwrap();
        let all_int8 = convert_within(Limits::DEFAULT.max_arena_bytes, 0).unwrap();
        let (full, narrow) = (
            unbounded.lowered.info.arena_bytes,
            all_int8.lowered.info.arena_bytes,
        );
        assert!(narrow < full, "DS-CNN's int16 activations cost arena");
        assert!(unbounded.int8.as_ref().unwrap().int16_budget.is_none());
        // The budget is held against the arena the device will have (layers written over their
        // inputs), not the layer-by-layer plan the in-place bands shrink: a budget of the
        // default conversion's arena keeps every int16 tensor.
        let at_full = convert_within(full as usize, INT16_ACTIVATIONS_DEFAULT).unwrap();
        assert!(at_full.int8.as_ref().unwrap().int16_budget.is_none());
        assert_eq!(at_full.blob, unbounded.blob);

        let budget = (narrow + full) as usize / 2;
        let within = convert_within(budget, INT16_ACTIVATIONS_DEFAULT).unwrap();
        let report = within.int8.as_ref().unwrap().int16_budget.clone().unwrap();
        assert!(within.lowered.info.arena_bytes as usize <= budget);
        assert!(report.int16_after > 0 && report.int16_after < report.int16_before);
        assert_eq!(report.arena_unbounded, full);
        // Some int16 kept: better than all-int8 (the default is better still).
        assert!(
            error(&within) < error(&all_int8) && error(&unbounded) < error(&within),
            "{} {} {}",
            error(&unbounded),
            error(&within),
            error(&all_int8)
        );

        let refused = convert_within(narrow as usize - 1, INT16_ACTIVATIONS_DEFAULT).unwrap_err();
        assert!(
            format!("{refused:#}").contains("--max-arena-bytes"),
            "{refused:#}"
        );
    }
}
