//! The activation ops beyond ReLU, Clip, LeakyRelu and Sigmoid (HardSigmoid, HardSwish, Tanh,
//! PRelu), and the products of two activations: `x * sigmoid(x)` (SiLU) and `x * hard_sigmoid(x)`
//! (hard swish) become one activation node.

use anyhow::{bail, ensure, Result};

use super::attr::Attrs;
use super::nodes::{NodeImporter, Val};
use super::tensor::Const;
use crate::ir::graph::{Activation, FrozenOp, Op, Origin, ValueId};

/// ONNX HardSigmoid's defaults (`alpha = 0.2`, `beta = 0.5`); PyTorch writes `alpha = 1/6`.
pub(super) fn hard_sigmoid(attrs: &Attrs<'_, '_>) -> Result<Activation> {
    let alpha = attrs.float("alpha", 0.2)?;
    let beta = attrs.float("beta", 0.5)?;
    ensure!(
        alpha.is_finite() && beta.is_finite(),
        "HardSigmoid alpha {alpha} and beta {beta} must be finite"
    );
    Ok(Activation::HardSigmoid { alpha, beta })
}

/// PRelu with a constant slope: one slope for every element is a leaky ReLU activation (fused
/// like one); a slope per channel (`[C, 1, 1]` for `[C, H, W]`, PyTorch's
/// `nn.PReLU(num_parameters=C)`) is a `PRelu` node. Slopes that vary along other axes are refused.
pub(super) fn prelu(slope: &Const, shape: &[usize]) -> Result<FrozenOp> {
    ensure!(
        !slope.is_int(),
        "the slope is an integer tensor; PRelu's slope must be floating point"
    );
    let v = slope.to_f64();
    if let Some(i) = v.iter().position(|s| !s.is_finite()) {
        bail!("the PRelu slope {} at index {i} is not finite", v[i]);
    }
    if !v.is_empty() && v.iter().all(|&s| s == v[0]) && v.len() <= shape.iter().product() {
        return Ok(FrozenOp::Activation(Activation::LeakyRelu {
            alpha: v[0] as f32,
        }));
    }
    // Unidirectional broadcasting against [N, C, ...]: the slope's shape right-aligned (a leading
    // batch axis of 1 dropped) is per channel if every axis but the channel axis is 1.
    let c = shape.first().copied().unwrap_or(0);
    let mut dims = slope.shape.as_slice();
    while dims.len() > shape.len() && dims.first() == Some(&1) {
        dims = &dims[1..];
    }
    let per_channel =
        dims.len() == shape.len() && dims.first() == Some(&c) && dims[1..].iter().all(|&d| d == 1);
    ensure!(
        per_channel,
        "a slope of shape {:?} for the activation {shape:?} (per sample) is not supported; only one \
         slope for all channels or one per channel ([C, 1, 1] for [C, H, W], PyTorch \
         `nn.PReLU(num_parameters=C)`)",
        slope.shape
    );
    Ok(FrozenOp::PRelu {
        slope: v.iter().map(|&s| s as f32).collect(),
    })
}

/// The operands of a product of two activations of per-sample shapes `sa` and `sb`, as (input,
/// gate) in that order: equal shapes, or a gate with one value per channel of the input
/// (squeeze-excitation: `[C, 1, 1]` for `[C, H, W]`), on either side of the Mul.
pub(super) fn product_operands(
    (a, sa): (ValueId, &[usize]),
    (b, sb): (ValueId, &[usize]),
) -> Result<[ValueId; 2]> {
    let per_channel_of = |s: &[usize], g: &[usize]| {
        g.len() == s.len() && g.first() == s.first() && g[1..].iter().all(|&d| d == 1)
    };
    if sa == sb || per_channel_of(sa, sb) {
        return Ok([a, b]);
    }
    ensure!(
        per_channel_of(sb, sa),
        "Mul of activations of shapes {sa:?} and {sb:?} (per sample): only equal shapes or a gate \
         with one value per channel ([C, 1, 1] for [C, H, W], as squeeze-excitation) are supported; \
         reshape the gate to [N, C, 1, 1] in the model"
    );
    Ok([b, a])
}

/// The activation that `x * gate(x)` is, for the gate functions that have one.
fn gated(gate: Activation) -> Option<Activation> {
    match gate {
        Activation::Sigmoid => Some(Activation::Silu),
        Activation::HardSigmoid { alpha, beta }
            if (f64::from(alpha) - 1.0 / 6.0).abs() < 1e-6 && beta == 0.5 =>
        {
            Some(Activation::HardSwish)
        }
        _ => None,
    }
}

impl NodeImporter<'_> {
    /// `Mul(x, f(x))` where `f(x)` is a sigmoid (hard sigmoid) node read only by this Mul: that
    /// node becomes SiLU (hard swish) and its output the Mul's. Returns false for any other
    /// product of two activations.
    pub(super) fn fuse_self_gating(
        &mut self,
        mul: &Origin,
        out: &str,
        (a, b): (ValueId, ValueId),
    ) -> bool {
        for (x, gate) in [(a, b), (b, a)] {
            let Some(k) = self.nodes.iter().position(|n| n.output == gate) else {
                continue;
            };
            let node = &self.nodes[k];
            let fused = match &node.op {
                Op::Frozen(FrozenOp::Activation(act)) if node.inputs == [x] => gated(*act),
                _ => None,
            };
            // Read by this Mul only, under no other name either (a no-op Identity or Dropout
            // after the gate aliases its value to a second name with readers of its own).
            let aliases = self
                .env
                .values()
                .filter(|v| matches!(v, Val::Act(id) if *id == gate))
                .count();
            let only_reader = aliases == 1 && self.readers.get(&self.values[gate].name) == Some(&1);
            let (Some(fused), true) = (fused, only_reader) else {
                continue;
            };
            let name = format!("{} + {}", node.origin.name, mul.name);
            let node = &mut self.nodes[k];
            node.op = Op::Frozen(FrozenOp::Activation(fused));
            node.origin = Origin {
                name,
                op_type: match fused {
                    Activation::Silu => "SiLU (Mul of Sigmoid)".into(),
                    _ => "HardSwish (Mul of HardSigmoid)".into(),
                },
            };
            self.values[gate].name = out.to_string();
            self.env.insert(out.to_string(), Val::Act(gate));
            return true;
        }
        false
    }
}
