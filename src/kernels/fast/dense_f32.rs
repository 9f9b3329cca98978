//! Fast f32 dense layer: the reference [`dense`](crate::kernels::reference::dense::dense)'s
//! contract, four output rows at a time so each input value is loaded once per four
//! multiply-accumulates (the summation order differs from the reference's, see
//! [`conv_f32`](super::conv_f32)).

use super::conv_f32::{activate, tile1x1, tile4x1};
use crate::kernels::Activation;

/// `output[o] = activation(bias[o] + Σ_p Σ_i weights[o][i] · input_p[i])`, as the reference
/// [`dense`](crate::kernels::reference::dense::dense).
#[inline(never)]
pub fn dense(
    activation: &Activation,
    weights: &[f32],
    bias: &[f32],
    input: &[f32],
    output: &mut [f32],
) {
    let n_in = weights.len().checked_div(output.len()).unwrap_or(0);
    if n_in == 0 {
        return;
    }
    let mut rows = weights.chunks_exact(n_in);
    let mut outs = output.chunks_exact_mut(4);
    let mut biases = bias.chunks_exact(4);
    for (y, b) in (&mut outs).zip(&mut biases) {
        let (Some(r0), Some(r1), Some(r2), Some(r3)) =
            (rows.next(), rows.next(), rows.next(), rows.next())
        else {
            return;
        };
        let mut acc = [0.0f32; 4];
        for x in input.chunks_exact(n_in) {
            tile4x1(&mut acc, [r0, r1, r2, r3], x);
        }
        for ((y, a), b) in y.iter_mut().zip(acc).zip(b) {
            *y = a + b;
        }
    }
    for (y, b) in outs.into_remainder().iter_mut().zip(biases.remainder()) {
        let Some(row) = rows.next() else {
            return;
        };
        let mut acc = 0.0;
        for x in input.chunks_exact(n_in) {
            tile1x1(&mut acc, row, x);
        }
        *y = acc + b;
    }
    activate(activation, output);
}
