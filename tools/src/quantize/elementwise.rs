//! int8 forms of the element-wise layers: unary activations as 256-entry tables, products of
//! two activations (gating) as TensorFlow Lite's integer Mul.

use anyhow::{anyhow, Result};
use icefold::format::{Activation as RtActivation, Clamp, MulI8, PReluI8};
use icefold::quant::Requant;

use crate::ir::graph::Activation;
use crate::quantize::calibrate::QParams;

/// The int8 product of an activation `a` and a gate `g` into `y`: the integer product
/// `(q_a − zp_a)(q_g − zp_g)` is in units of `s_a · s_g`, so one factor `s_a · s_g / s_y` takes it
/// to the output grid (docs/QUANTIZATION.md, "Products of two activations").
pub fn mul_i8((a, g, y): (QParams, QParams, QParams), clamp: Clamp, layer: &str) -> Result<MulI8> {
    let real = a.scale as f64 * g.scale as f64 / y.scale as f64;
    let requant = Requant::from_real(real).ok_or_else(|| {
        anyhow!(
            "layer {layer}: the product's scale factor {real:e} (s_a * s_gate / s_out) cannot be \
             represented in fixed point; the calibration ranges of its inputs or output are \
             degenerate (check the calibration data)"
        )
    })?;
    Ok(MulI8 { requant, clamp })
}

/// The int8 PReLU of `slope` (per channel) from `x` to `y`: `s_in / s_out` for the non-negative
/// inputs, `slope[c] · s_in / s_out` (any sign, 0 for a zero slope) for channel `c`'s negative
/// ones; the per-channel factors are written to `w`.
pub(super) fn prelu_i8(
    w: &mut super::Weights,
    slope: &[f32],
    (x, y): (QParams, QParams),
    layer: &str,
) -> Result<PReluI8> {
    let ratio = x.scale as f64 / y.scale as f64;
    let factor = |real: f64| {
        Requant::from_real(real).ok_or_else(|| {
            anyhow!(
                "layer {layer}: the PReLU factor {real:e} cannot be represented in fixed point; \
                 the calibration range of its input or output is degenerate (check the \
                 calibration data)"
            )
        })
    };
    let negative = slope
        .iter()
        .map(|&s| factor(s as f64 * ratio))
        .collect::<Result<Vec<_>>>()?;
    Ok(PReluI8 {
        positive: factor(ratio)?,
        negative: w.requant(&negative),
    })
}

/// The real function of a runtime activation, in f64, for its int8 table
/// (`icefold::quant::lookup_table`): the same definition as the interpreter's
/// ([`Activation::apply_f64`]).
pub fn activation_function(a: RtActivation) -> impl Fn(f64) -> f64 {
    let ir = match a {
        RtActivation::Identity => None,
        RtActivation::Relu => Some(Activation::Relu),
        RtActivation::Clip { lo, hi } => Some(Activation::Clip { lo, hi }),
        RtActivation::LeakyRelu { alpha } => Some(Activation::LeakyRelu { alpha }),
        RtActivation::Sigmoid => Some(Activation::Sigmoid),
        RtActivation::HardSigmoid { alpha, beta } => Some(Activation::HardSigmoid { alpha, beta }),
        RtActivation::HardSwish => Some(Activation::HardSwish),
        RtActivation::Tanh => Some(Activation::Tanh),
        RtActivation::Silu => Some(Activation::Silu),
    };
    move |v| ir.map_or(v, |a| a.apply_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_activations_map_to_their_definitions() {
        let f = activation_function(RtActivation::HardSwish);
        assert_eq!(f(-4.0), 0.0);
        assert!((f(1.5) - 1.5 * 0.75).abs() < 1e-12);
        assert_eq!(f(4.0), 4.0);
        let f = activation_function(RtActivation::Silu);
        assert!((f(2.0) - 2.0 / (1.0 + (-2f64).exp())).abs() < 1e-12);
        assert_eq!(activation_function(RtActivation::Identity)(-3.5), -3.5);
        let f = activation_function(RtActivation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        });
        assert_eq!(f(-10.0), 0.0);
        assert_eq!(f(10.0), 1.0);
        assert!((f(1.0) - 0.7).abs() < 1e-7);
        assert!((activation_function(RtActivation::Tanh)(0.5) - 0.5f64.tanh()).abs() < 1e-15);
    }
}
