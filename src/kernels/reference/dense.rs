//! Fully connected layer.

use super::{dot, elementwise::activate};
use crate::kernels::Activation;

/// `output[o] = activation(bias[o] + Σ_p dot(weights[o], input_p))` with `weights` row-major
/// `[output.len()][n_in]`, `n_in = weights.len() / output.len()`, and the input read as
/// `P = input.len() / n_in` consecutive vectors `input_p` of `n_in` values. `P = 1` is an ordinary
/// dense layer; `P > 1` is a global average pooling folded into it (the `1/P` is in the weights),
/// which spares the int8 model a rounding of the pooled features (docs/QUANTIZATION.md).
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
    for ((o, row), b) in output.iter_mut().zip(weights.chunks_exact(n_in)).zip(bias) {
        let mut positions = input.chunks_exact(n_in);
        // The first position starts the sum, so `P = 1` adds exactly `dot + bias`.
        let first = positions.next().map_or(0.0, |x| dot(row, x));
        *o = positions.fold(first, |acc, x| acc + dot(row, x)) + b;
    }
    activate(activation, output);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_definition(n_in in 1usize..70, n_out in 1usize..6, seed in any::<u64>()) {
            let v = crate::testutil::values(n_in * n_out + n_in + n_out, seed);
            let (w, rest) = v.split_at(n_in * n_out);
            let (x, b) = rest.split_at(n_in);
            let mut out = std::vec![0.0f32; n_out];
            dense(&Activation::Identity, w, b, x, &mut out);
            for o in 0..n_out {
                let want: f64 = b[o] as f64 + (0..n_in).map(|i| w[o * n_in + i] as f64 * x[i] as f64).sum::<f64>();
                prop_assert!((out[o] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()));
            }
        }
    }

    proptest! {
        /// Several positions: the sum of the dense layer over them (a folded global pooling).
        #[test]
        fn sums_positions(n_in in 1usize..20, n_out in 1usize..5, p in 1usize..7, seed in any::<u64>()) {
            let v = crate::testutil::values(n_in * n_out + p * n_in + n_out, seed);
            let (w, rest) = v.split_at(n_in * n_out);
            let (x, b) = rest.split_at(p * n_in);
            let mut out = std::vec![0.0f32; n_out];
            dense(&Activation::Identity, w, b, x, &mut out);
            for o in 0..n_out {
                let want: f64 = b[o] as f64 + (0..p * n_in).map(|k| w[o * n_in + k % n_in] as f64 * x[k] as f64).sum::<f64>();
                prop_assert!((out[o] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()));
            }
        }
    }

    #[test]
    fn dense_by_hand() {
        let w = [1.0f32, 2.0, 3.0, -1.0, 0.0, 1.0];
        let mut out = [0.0f32; 2];
        dense(
            &Activation::Identity,
            &w,
            &[0.5, -10.0],
            &[1.0, 1.0, 2.0],
            &mut out,
        );
        assert_eq!(out, [9.5, -9.0]);
        dense(
            &Activation::Relu,
            &w,
            &[0.5, -10.0],
            &[1.0, 1.0, 2.0],
            &mut out,
        );
        assert_eq!(out, [9.5, 0.0]);
    }
}
