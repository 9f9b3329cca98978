//! Fully connected layer.

use super::{dot, elementwise::activate};
use crate::format::Activation;

/// `output[o] = activation(dot(weights[o], input) + bias[o])` with `weights` row-major
/// `[output.len()][input.len()]` and the input read as one flat vector.
pub fn dense(
    activation: &Activation,
    weights: &[f32],
    bias: &[f32],
    input: &[f32],
    output: &mut [f32],
) {
    if input.is_empty() {
        return;
    }
    for ((o, row), b) in output
        .iter_mut()
        .zip(weights.chunks_exact(input.len()))
        .zip(bias)
    {
        *o = dot(row, input) + b;
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
