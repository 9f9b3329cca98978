//! int8 of the operations along one axis. Slice and Gather move elements: their output keeps the
//! input's grid (`tensor_qparams`). Concat: the inputs share one quantization, the output's
//! (calibrated on the joined values, so it covers every input): an input that only concatenations
//! of this value read, and whose producer can write any grid, is given the output's grid before
//! the layers are quantized ([`share_concat_grids`]), and the join is then a copy (`Concat`);
//! an input that cannot (read elsewhere too, or a moved tensor such as the model input or a
//! slice) keeps its own grid and is rescaled in integers (`ConcatI8`, one rounding: see
//! `kernels::reference::int8::concat`).

use anyhow::{anyhow, Result};
use icefold::format::{self, ConcatI8, Op, Span};
use icefold::quant::{Requant, ADD_LEFT_SHIFT};

use super::{QParams, Weights};
use crate::lower::Lowered;
use crate::quantize::calibrate::Range;

/// Whether the layer that writes a tensor chooses its output grid freely (from the tensor's own
/// range): not the moves (their output is their input's grid) nor the softmax (a fixed grid).
fn writes_free_grid(op: &Op) -> bool {
    match op {
        Op::Pool(p) => p.kind != format::PoolKind::Max,
        Op::Transpose(_) | Op::Pad(_) | Op::Slice(_) | Op::Gather(_) | Op::Softmax => false,
        _ => true,
    }
}

/// Widens the range of every concatenation input that can share the output's grid to the
/// output's range (`ranges` by tensor id), so both get the same quantization.
pub(super) fn share_concat_grids(l: &Lowered, ranges: &mut [Range]) {
    for layer in &l.layers {
        let Op::Concat(_) = layer.op else { continue };
        let out = layer.output.id;
        let value = l.tensor_values[out as usize];
        for x in &layer.inputs[..usize::from(layer.input_count)] {
            let t = x.id;
            let Some(producer) = l.layers.iter().find(|p| p.output.id == t) else {
                continue; // the model input
            };
            // Every reader is a concatenation of the same value (one chain).
            let readers_share = l.readers(t).all(|(_, r)| {
                matches!(r.op, Op::Concat(_)) && l.tensor_values[r.output.id as usize] == value
            });
            if t != l.info.output.id && writes_free_grid(&producer.op) && readers_share {
                ranges[t as usize] = ranges[out as usize];
            }
        }
    }
}

/// The int8 record of a concatenation with input grids `a`, `b` and output grid `y`.
pub(super) fn concat(
    c: &format::Concat,
    [a, b]: [QParams; 2],
    y: QParams,
    name: &str,
) -> Result<Op> {
    if a == y && b == y {
        return Ok(Op::Concat(*c));
    }
    let rescale = |x: QParams| -> Result<Option<Requant>> {
        if x == y {
            return Ok(None);
        }
        let real = x.scale as f64 / y.scale as f64 / f64::from(1u32 << ADD_LEFT_SHIFT);
        Requant::from_real(real).map(Some).ok_or_else(|| {
            anyhow!(
                "layer {name}: the concatenation's input to output scale {:e} cannot be \
                 represented in fixed point (check the calibration data)",
                x.scale as f64 / y.scale as f64
            )
        })
    };
    Ok(Op::ConcatI8(ConcatI8 {
        axis: c.axis,
        rescale: [rescale(a)?, rescale(b)?],
    }))
}

/// The gather's u16 index table copied into the int8 weights section.
pub(super) fn gather(g: &format::Gather, l: &Lowered, w: &mut Weights) -> Op {
    let start = g.indices.offset as usize;
    let bytes = &l.weights[start..start + g.indices.len as usize];
    let indices: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let span: Span = w.i16s(&indices);
    Op::Gather(format::Gather {
        axis: g.axis,
        indices: span,
    })
}
