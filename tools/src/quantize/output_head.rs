//! The wide output head: a dense last layer (and the softmax after it) writing int16.

use anyhow::{bail, Result};
use icefold::format::{Activation as RtActivation, ClampI16, Op};

use crate::lower::Lowered;
use crate::quantize::calibrate::{QParams, Range};

use super::int16::symmetric_i16;

/// How far past its calibrated range an int16 model output reaches: 16 bits leave room to spend
/// one on headroom (inputs beyond the calibration set's extremes are not clipped) and still be 128
/// times finer than int8 over the calibrated range.
pub const WIDE_OUTPUT_HEADROOM: f64 = 2.0;

/// Symmetric int16 quantization (zero point 0) covering `r` with [`WIDE_OUTPUT_HEADROOM`].
pub(super) fn wide_qparams(r: Range) -> QParams {
    symmetric_i16(r, WIDE_OUTPUT_HEADROOM)
}

/// The fused activation of an int16 output as bounds in its steps (zero point 0).
pub(super) fn wide_clamp_for(act: RtActivation, q: QParams, layer: &str) -> Result<ClampI16> {
    let step = |x: f32| q.quantize_i16(x);
    Ok(match act {
        RtActivation::Identity => ClampI16::FULL,
        RtActivation::Relu => ClampI16 { min: 0, max: i16::MAX },
        RtActivation::Clip { lo, hi } => ClampI16 { min: step(lo), max: step(hi) },
        other => bail!("layer {layer}: activation {other:?} cannot be fused in int8 (lowering must keep it separate)"),
    })
}

/// The output head that runs in int16: the index of a dense layer writing the model output, or
/// of a dense layer and of the softmax after it that writes the model output (its only reader).
pub(super) fn wide_output_head(l: &Lowered) -> Option<(usize, Option<usize>)> {
    let readers = |t: u16| l.readers(t).count();
    let writer = |t: u16| l.layers.iter().rposition(|layer| layer.output.id == t);
    let out = l.info.output.id;
    let last = writer(out)?;
    if readers(out) != 0 {
        return None;
    }
    match l.layers[last].op {
        Op::Dense(_) => Some((last, None)),
        Op::Softmax => {
            let logits = l.layers[last].inputs[0].id;
            let dense = writer(logits)?;
            (matches!(l.layers[dense].op, Op::Dense(_)) && readers(logits) == 1)
                .then_some((dense, Some(last)))
        }
        _ => None,
    }
}
