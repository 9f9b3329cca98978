//! Fully connected layer.

use super::{dot, elementwise::activate};
use crate::format::Activation;

/// `output[o] = activation(dot(weights[o], input) + bias[o])` with `weights` row-major
/// `[output.len()][input.len()]` and the input read as one flat vector.
pub fn dense(activation: &Activation, weights: &[f32], bias: &[f32], input: &[f32], output: &mut [f32]) {
    if input.is_empty() {
        return;
    }
    for ((o, row), b) in output.iter_mut().zip(weights.chunks_exact(input.len())).zip(bias) {
        *o = dot(row, input) + b;
    }
    activate(activation, output);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_by_hand() {
        let w = [1.0f32, 2.0, 3.0, -1.0, 0.0, 1.0];
        let mut out = [0.0f32; 2];
        dense(&Activation::Identity, &w, &[0.5, -10.0], &[1.0, 1.0, 2.0], &mut out);
        assert_eq!(out, [9.5, -9.0]);
        dense(&Activation::Relu, &w, &[0.5, -10.0], &[1.0, 1.0, 2.0], &mut out);
        assert_eq!(out, [9.5, 0.0]);
    }
}
