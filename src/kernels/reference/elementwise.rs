//! Element-wise kernels: activations (standalone and fused), residual addition, frozen affine.

use crate::kernels::Activation;

/// Applies `activation` to every element of `values` in place (fused activations run this on a
/// layer's output).
///
/// Definitions: ReLU is `max(x, 0)` (NaN becomes 0), clip is `min(max(x, lo), hi)`, leaky ReLU is
/// `x` for `x >= 0` else `alpha * x`, sigmoid is `1 / (1 + exp(-x))` with `libm::expf`, hard
/// sigmoid is `min(max(alpha * x + beta, 0), 1)` (multiply, then add; NaN becomes 0), hard swish
/// is `x * hard_sigmoid(x)` with `alpha = 1/6` (as f32), `beta = 0.5`, tanh is `libm::tanhf`,
/// SiLU is `x * sigmoid(x)`.
pub fn activate(activation: &Activation, values: &mut [f32]) {
    match *activation {
        Activation::Identity => {}
        Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Clip { lo, hi } => values.iter_mut().for_each(|v| *v = v.max(lo).min(hi)),
        Activation::LeakyRelu { alpha } => values
            .iter_mut()
            .for_each(|v| *v = if *v >= 0.0 { *v } else { alpha * *v }),
        Activation::Sigmoid => values.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Activation::HardSigmoid { alpha, beta } => values
            .iter_mut()
            .for_each(|v| *v = hard_sigmoid(*v, alpha, beta)),
        Activation::HardSwish => values
            .iter_mut()
            .for_each(|v| *v *= hard_sigmoid(*v, HARD_SWISH_ALPHA, 0.5)),
        Activation::Tanh => values.iter_mut().for_each(|v| *v = libm::tanhf(*v)),
        Activation::Silu => values.iter_mut().for_each(|v| *v *= sigmoid(*v)),
    }
}

/// The slope of hard swish's gate, `1/6` rounded to f32 (ONNX HardSwish fixes `alpha = 1/6`).
pub const HARD_SWISH_ALPHA: f32 = 1.0 / 6.0;

/// `min(max(alpha * x + beta, 0), 1)`; NaN becomes 0 (`f32::max` returns the number).
#[inline]
#[allow(clippy::manual_clamp)] // `clamp` would keep NaN; max/min gives the documented 0.
pub fn hard_sigmoid(x: f32, alpha: f32, beta: f32) -> f32 {
    (alpha * x + beta).max(0.0).min(1.0)
}

/// `1 / (1 + exp(-x))`; saturates to exactly 0 or 1 for large `|x|`, never NaN for finite `x`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

/// Standalone activation layer: `output = activation(input)`.
pub fn activation(activation: &Activation, input: &[f32], output: &mut [f32]) {
    for (o, x) in output.iter_mut().zip(input) {
        *o = *x;
    }
    activate(activation, output);
}

/// Residual addition: `output = activation(a + b)`, element by element.
pub fn add(activation: &Activation, a: &[f32], b: &[f32], output: &mut [f32]) {
    for (o, (x, y)) in output.iter_mut().zip(a.iter().zip(b)) {
        *o = x + y;
    }
    activate(activation, output);
}

/// Frozen per-channel affine over the last dimension of length `scale.len()`:
/// `output[.., c] = activation(input[.., c] * scale[c] + shift[c])` (multiply, then add; no FMA).
pub fn affine(
    activation: &Activation,
    scale: &[f32],
    shift: &[f32],
    input: &[f32],
    output: &mut [f32],
) {
    let channels = scale.len();
    if channels == 0 {
        return;
    }
    for (out_row, in_row) in output
        .chunks_exact_mut(channels)
        .zip(input.chunks_exact(channels))
    {
        for (o, ((x, s), b)) in out_row.iter_mut().zip(in_row.iter().zip(scale).zip(shift)) {
            *o = x * s + b;
        }
    }
    activate(activation, output);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_by_hand() {
        let input = [-2.0f32, -0.5, 0.0, 0.5, 7.0];
        let mut out = [0.0f32; 5];
        activation(&Activation::Relu, &input, &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 0.5, 7.0]);
        activation(&Activation::Clip { lo: 0.0, hi: 6.0 }, &input, &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 0.5, 6.0]);
        activation(&Activation::LeakyRelu { alpha: 0.1 }, &input, &mut out);
        assert_eq!(out, [-0.2, -0.05, 0.0, 0.5, 7.0]);
        activation(&Activation::Identity, &input, &mut out);
        assert_eq!(out, input);
        activation(&Activation::Sigmoid, &[0.0, 100.0, -100.0], &mut out[..3]);
        assert_eq!(&out[..3], &[0.5, 1.0, 0.0]);
        assert!((sigmoid(1.0) - 0.731_058_6).abs() < 1e-6);
    }

    #[test]
    fn hard_and_smooth_activations_by_hand() {
        let input = [-4.0f32, -3.0, 0.0, 1.5, 3.0, 5.0];
        let mut out = [0.0f32; 6];
        let hs = Activation::HardSigmoid {
            alpha: 0.25,
            beta: 0.5,
        };
        activation(&hs, &input, &mut out);
        // 0.25 x + 0.5 is exact in f32 for these inputs.
        assert_eq!(out, [0.0, 0.0, 0.5, 0.875, 1.0, 1.0]);
        activation(&Activation::HardSwish, &input, &mut out);
        // Below -3 the gate is 0, above 3 it is 1; in between x * (x / 6 + 0.5).
        assert_eq!(out[..3], [-0.0, 0.0, 0.0]);
        assert!((out[3] - 1.5 * 0.75).abs() < 1e-6);
        assert_eq!(out[4..], [3.0, 5.0]);
        activation(&Activation::Tanh, &[0.0, 20.0, -20.0, 0.5], &mut out[..4]);
        assert_eq!(out[..3], [0.0, 1.0, -1.0]);
        assert!((out[3] - 0.462_117_16).abs() < 1e-6);
        activation(&Activation::Silu, &[0.0, 1.0, -100.0, 100.0], &mut out[..4]);
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 0.731_058_6).abs() < 1e-6);
        assert_eq!(out[2..4], [-0.0, 100.0]);
        // NaN does not escape the clamps of the hard sigmoid.
        assert_eq!(hard_sigmoid(f32::NAN, 1.0, 0.0), 0.0);
    }

    #[test]
    fn add_and_affine_by_hand() {
        let mut out = [0.0f32; 4];
        add(
            &Activation::Relu,
            &[1.0, -2.0, 3.0, 4.0],
            &[1.0, 1.0, -4.0, 0.5],
            &mut out,
        );
        assert_eq!(out, [2.0, 0.0, 0.0, 4.5]);
        // [2, 2] tensor, 2 channels.
        affine(
            &Activation::Identity,
            &[2.0, -1.0],
            &[0.5, 1.0],
            &[1.0, 2.0, 3.0, 4.0],
            &mut out,
        );
        assert_eq!(out, [2.5, -1.0, 6.5, -3.0]);
    }
}
