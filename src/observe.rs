//! Out-of-range inputs on the device: [`ClampCounter`] counts, per layer, the int8 (int16) values
//! that ended at an end of their range, where requantization saturated them.
//!
//! An int8 model is calibrated on data: every requantizing layer's output range is fixed from
//! what that data produced. Inputs unlike the calibration data (a drifting sensor, another
//! gain, a new environment) push values past those ranges, and the int8 arithmetic clamps them
//! silently; the answer is then confidently wrong. The fraction of clamped values per layer,
//! next to the fraction the calibration data gave (`icefold run --calib`), says when and where.
//!
//! Opt-in and free when not used: it is an [`Observer`], and the runs without one
//! ([`Model::run_i8`](crate::Model::run_i8), [`Model::run_f32`](crate::Model::run_f32)) take the
//! no-op observer `()`, whose calls compile to nothing (docs/BENCHMARKS.md shows the firmware's
//! code and instructions unchanged). With it, a run costs one compare per output value of the
//! counted layers.

use crate::engine::Observer;
use crate::format::{DType, Layer, Op};

/// Clamped values of one layer, summed over the runs observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LayerClamps {
    /// Output values seen (0 for a layer that is not counted: see [`counts_clamping`]).
    pub values: u32,
    /// Values at the low end of the range, where that end is below the zero point (a range
    /// starting at real zero, as after a ReLU, is not clamping there: the activation is).
    pub low: u32,
    /// Values at the high end of the range, where that end is above the zero point.
    pub high: u32,
}

impl LayerClamps {
    /// Clamped values at either end.
    pub fn clamped(&self) -> u32 {
        self.low.saturating_add(self.high)
    }
}

/// Whether `op` requantizes a computed value into its output range, so that a value at the end
/// of the range means one that was clamped there: convolutions, dense layers, additions, affine
/// layers, average pooling with a rescale. The others copy values (max pooling, transpose, pad,
/// clamp) or have a range fixed by their function (softmax, lookup tables).
pub fn counts_clamping(op: &Op) -> bool {
    match op {
        Op::PoolI8(p) => p.rescale.is_some(),
        op => matches!(
            op,
            Op::Conv2dI8(_)
                | Op::Conv2dI16(_)
                | Op::DenseI8(_)
                | Op::DenseI8Wide(_)
                | Op::AddI8(_)
                | Op::AffineI8(_)
        ),
    }
}

/// An [`Observer`] that adds each counted layer's clamped values to `counts[layer index]`
/// (layers past the end of `counts` are not counted). No allocation: the caller owns the counts
/// (e.g. `[LayerClamps; model::LAYER_COUNT]` in firmware) and reads or resets them between runs.
#[derive(Debug)]
pub struct ClampCounter<'c> {
    /// Per-layer counts, indexed by layer.
    pub counts: &'c mut [LayerClamps],
}

impl<'c> ClampCounter<'c> {
    /// Counts into `counts` (one entry per layer).
    pub fn new(counts: &'c mut [LayerClamps]) -> ClampCounter<'c> {
        ClampCounter { counts }
    }
}

/// Adds the values of `values` equal to `low` / `high` (each end only if it is clamping).
fn tally<T: PartialEq + Copy>(
    slot: &mut LayerClamps,
    values: impl ExactSizeIterator<Item = T>,
    (low, count_low): (T, bool),
    (high, count_high): (T, bool),
) {
    let n = u32::try_from(values.len()).unwrap_or(u32::MAX);
    let (mut lo, mut hi) = (0u32, 0u32);
    for v in values {
        lo += u32::from(count_low && v == low);
        hi += u32::from(count_high && v == high);
    }
    slot.values = slot.values.saturating_add(n);
    slot.low = slot.low.saturating_add(lo);
    slot.high = slot.high.saturating_add(hi);
}

impl Observer for ClampCounter<'_> {
    fn layer_end(&mut self, index: u16, layer: &Layer, output: &[u8]) {
        if !counts_clamping(&layer.op) {
            return;
        }
        let (Some(slot), Some(quant)) =
            (self.counts.get_mut(usize::from(index)), layer.output.quant)
        else {
            return;
        };
        let zp = quant.zero_point;
        // A view's output holds other tensors' channels between its pixels: count its own only.
        for output in layer.output.element_runs(output) {
            match layer.output.dtype {
                DType::I8 => tally(
                    slot,
                    output.iter().map(|&b| b as i8),
                    (i8::MIN, i32::from(i8::MIN) < zp),
                    (i8::MAX, i32::from(i8::MAX) > zp),
                ),
                DType::I16 => tally(
                    slot,
                    output
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]])),
                    (i16::MIN, i32::from(i16::MIN) < zp),
                    (i16::MAX, i32::from(i16::MAX) > zp),
                ),
                DType::F32 => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;
    use crate::engine::quantize;
    use crate::model::int8_tests::int8_model;
    use crate::testutil::*;
    use crate::Model;

    /// What the counter must find, from the layer outputs themselves.
    #[derive(Default)]
    struct Outputs(Vec<(Layer, Vec<u8>)>);
    impl Observer for Outputs {
        fn layer_end(&mut self, _: u16, layer: &Layer, output: &[u8]) {
            self.0.push((*layer, output.to_vec()));
        }
    }

    #[test]
    fn counts_the_values_at_clamping_ends_of_requantizing_layers() {
        let spec = int8_model();
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let qin = model.input().quant.unwrap();
        let mut arena = Blob::zeroed(model.arena_bytes());
        let layers = usize::from(model.info().layer_count);
        let mut counted_any = false;
        for gain in [1.0f32, 8.0, 64.0] {
            let x: Vec<i8> = values(32, 5)
                .iter()
                .map(|v| quantize(v * gain, qin))
                .collect();
            let mut counts = std::vec![LayerClamps::default(); layers];
            let mut seen = Outputs::default();
            let mut out = [0i8; 5];
            model
                .run_i8_observed(arena.bytes_mut(), &x, &mut out, &mut seen)
                .unwrap();
            model
                .run_i8_observed(
                    arena.bytes_mut(),
                    &x,
                    &mut out,
                    &mut ClampCounter::new(&mut counts),
                )
                .unwrap();
            for (i, ((layer, bytes), c)) in seen.0.iter().zip(&counts).enumerate() {
                if !counts_clamping(&layer.op) {
                    assert_eq!(*c, LayerClamps::default(), "layer {i} is not counted");
                    continue;
                }
                counted_any = true;
                let zp = layer.output.quant.unwrap().zero_point;
                let vals: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
                let at = |end: i8| vals.iter().filter(|&&v| v == end).count() as u32;
                assert_eq!(c.values as usize, vals.len(), "layer {i}");
                assert_eq!(c.high, if zp < 127 { at(127) } else { 0 }, "layer {i}");
                assert_eq!(c.low, if zp > -128 { at(-128) } else { 0 }, "layer {i}");
            }
        }
        assert!(counted_any, "the test model has requantizing layers");
        // Larger inputs clamp more: the count grows with the gain (what a drift report shows).
        let mut total = |gain: f32| {
            let x: Vec<i8> = values(32, 5)
                .iter()
                .map(|v| quantize(v * gain, qin))
                .collect();
            let mut counts = std::vec![LayerClamps::default(); layers];
            let mut out = [0i8; 5];
            model
                .run_i8_observed(
                    arena.bytes_mut(),
                    &x,
                    &mut out,
                    &mut ClampCounter::new(&mut counts),
                )
                .unwrap();
            counts.iter().map(LayerClamps::clamped).sum::<u32>()
        };
        let (small, large) = (total(1.0), total(64.0));
        assert!(large > small, "{large} vs {small}");
        // A short count slice: the extra layers are skipped, nothing panics.
        let mut few = [LayerClamps::default(); 1];
        let x = [0i8; 32];
        let mut out = [0i8; 5];
        model
            .run_i8_observed(
                arena.bytes_mut(),
                &x,
                &mut out,
                &mut ClampCounter::new(&mut few),
            )
            .unwrap();
    }
}
