//! Product of two activations (gating): squeeze-excitation `x * sigmoid(fc(pool(x)))`, where the
//! gate holds one value per channel, and element-wise products of tensors of the same shape.

use crate::kernels::Activation;

use super::elementwise::activate;

/// `output[i] = activation(a[i] * gate[i mod gate.len()])`: the gate repeats along `a`, so a gate
/// of `a.len()` values is the element-wise product and a gate of `C` values (the last dimension
/// of an `[H, W, C]` tensor) scales every channel of every position.
///
/// An empty gate leaves the output untouched (the loader never passes one).
pub fn mul(activation: &Activation, a: &[f32], gate: &[f32], output: &mut [f32]) {
    if gate.is_empty() {
        return;
    }
    for (out_row, a_row) in output
        .chunks_exact_mut(gate.len())
        .zip(a.chunks_exact(gate.len()))
    {
        for (o, (x, g)) in out_row.iter_mut().zip(a_row.iter().zip(gate)) {
            *o = x * g;
        }
    }
    activate(activation, output);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_wise_and_per_channel_products_by_hand() {
        let a = [1.0f32, -2.0, 3.0, 4.0, -5.0, 6.0];
        let mut out = [0.0f32; 6];
        mul(
            &Activation::Identity,
            &a,
            &[2.0, 0.5, -1.0, 0.0, 1.0, 0.25],
            &mut out,
        );
        assert_eq!(out, [2.0, -1.0, -3.0, 0.0, -5.0, 1.5]);
        // [2, 1, 3] tensor gated per channel (3 channels).
        mul(&Activation::Relu, &a, &[2.0, 0.5, -1.0], &mut out);
        assert_eq!(out, [2.0, 0.0, 0.0, 8.0, 0.0, 0.0]);
        // Nothing to do without a gate; the output keeps what it held.
        mul(&Activation::Identity, &a, &[], &mut out);
        assert_eq!(out, [2.0, 0.0, 0.0, 8.0, 0.0, 0.0]);
    }
}
