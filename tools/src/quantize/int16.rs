//! The int16 choice (16×8): which activation tensors of the first convolutions can be int16, and
//! their symmetric quantization.

use icefold::format::{self, DType, Op, TensorDesc};

use crate::lower::Lowered;
use crate::quantize::calibrate::{QParams, Range};

use super::{f32s, quantize_rows};

/// Most products per output of a layer that reads an int16 activation: `256 · 2^22 = 2^30`
/// leaves half of the int32 accumulator to the bias (`accumulator_fits_i16`).
pub const INT16_INPUT_MAX_PRODUCTS: usize = 256;

/// Weights per output channel of a convolution record (the products each output sums).
pub(super) fn conv_products(c: &format::Conv2d, input: &TensorDesc) -> usize {
    c.kernel[0] as usize * c.kernel[1] as usize * (input.dims[2] / c.groups.max(1)) as usize
}

/// The activation tensors kept in int16 (16×8) when the first `n` convolutions of the schedule
/// write int16: each of those outputs that is not the model output and is read only by
/// convolutions summing at most [`INT16_INPUT_MAX_PRODUCTS`] products (the readers outside the
/// first `n` then write int8 again), and, for `n >= 1`, the model input under the same rule (a
/// layout transpose on the way to the convolutions is int16 too). Anything else (pooling,
/// addition, a model output) keeps int8.
pub fn int16_activations(l: &Lowered, n: usize) -> Vec<u16> {
    let mut wide = Vec::new();
    let input = l.info.input.id;
    let mut moved = Vec::new();
    if n >= 1 && read_by_convs_only(l, input, &mut moved) && !moved.contains(&l.info.output.id) {
        wide.push(input);
        wide.extend(moved);
    }
    let convs = l
        .layers
        .iter()
        .filter(|layer| matches!(layer.op, Op::Conv2d(_)))
        .take(n);
    for layer in convs {
        let t = layer.output.id;
        let mut moved = Vec::new();
        if t != l.info.output.id && read_by_convs_only(l, t, &mut moved) && moved.is_empty() {
            wide.push(t);
        }
    }
    wide
}

/// Whether every output channel's bias of the convolution `layer` fits the int32 accumulator
/// beside its products when its input has the int16 quantization `x`: `quantize_rows` accepts it
/// without widening any channel's weight scale (a wider scale would trade the weights' precision
/// for the input's; reading int8 keeps both).
pub(super) fn bias_fits_int16(
    l: &Lowered,
    c: &format::Conv2d,
    layer: &format::Layer,
    x: QParams,
) -> bool {
    let (w, bias) = (f32s(l, c.weights), f32s(l, c.bias));
    let out = layer.output.dims[2] as usize;
    let input = (x.scale as f64, x.zero_point);
    quantize_rows(&w, &bias, out, 1, input, DType::I16, "").is_ok_and(|r| r.widened.is_empty())
}

/// Tensor `t` and the tensors transposes move it from and to (one element type among them).
pub(super) fn transposed_with(l: &Lowered, t: u16) -> Vec<u16> {
    let mut group = vec![t];
    let mut i = 0;
    while let Some(&u) = group.get(i) {
        for layer in l.layers.iter().filter(|x| matches!(x.op, Op::Transpose(_))) {
            let (from, to) = (layer.inputs[0].id, layer.output.id);
            for (a, b) in [(from, to), (to, from)] {
                if a == u && !group.contains(&b) {
                    group.push(b);
                }
            }
        }
        i += 1;
    }
    group
}

/// Whether tensor `t` can be int16: it is read, and only by convolutions of at most
/// [`INT16_INPUT_MAX_PRODUCTS`] products or by transposes whose outputs can be int16 (their
/// outputs are collected into `moved`).
pub(super) fn read_by_convs_only(l: &Lowered, t: u16, moved: &mut Vec<u16>) -> bool {
    let mut read = false;
    for (_, r) in l.readers(t) {
        read = true;
        let ok = match &r.op {
            Op::Conv2d(c) => conv_products(c, &r.inputs[0]) <= INT16_INPUT_MAX_PRODUCTS,
            Op::Transpose(_) => {
                moved.push(r.output.id);
                read_by_convs_only(l, r.output.id, moved)
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    read
}

/// Symmetric int16 quantization (zero point 0) of an activation over its calibrated range: the
/// range int8 would use, in 65536 steps instead of 256.
pub(super) fn int16_qparams(r: Range) -> QParams {
    symmetric_i16(r, 1.0)
}

/// Symmetric int16 quantization (zero point 0) whose largest step reaches `headroom` times the
/// larger magnitude of `r`.
pub(super) fn symmetric_i16(r: Range, headroom: f64) -> QParams {
    let reach = (r.min as f64).abs().max((r.max as f64).abs()) * headroom;
    let scale = if reach > f64::from(f32::MIN_POSITIVE) {
        reach / i16::MAX as f64
    } else {
        1.0
    };
    QParams {
        scale: scale as f32,
        zero_point: 0,
    }
}
