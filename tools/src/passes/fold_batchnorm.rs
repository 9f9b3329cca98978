//! Folding BatchNorm into neighbouring layers.
//!
//! Every inference-form BatchNorm is a per-channel `y = x * s + t` with `s = gamma / sqrt(var +
//! eps)` and `t = beta - mean * s`. Where that map can be absorbed exactly by a neighbouring
//! linear layer it disappears; otherwise it becomes a frozen `Affine`. Either way the result is a
//! `FrozenGraph`, which has no operator that could read or update statistics.
//!
//! Rules, tried in this order for each BatchNorm (and for each constant `Affine` the importer
//! made from Mul/Add by constants, so `Gemm → Mul → Add` collapses too):
//! 1. **Into the preceding layer**: the input comes from a Conv or Dense that nothing else reads
//!    (and that is not the graph output): `W'[o,..] = W[o,..] * s[o]`, `b' = b * s + t`.
//! 2. **Into the following layers**: the output feeds only Convs and Denses (a Dense possibly
//!    through Reshape/Flatten): `W'[o,i,..] = W[o,i,..] * s[ci]`, `b'[o] = b[o] + Σ W[o,i,..] *
//!    t[ci]`, with `ci` the absolute input channel. A padding conv saw zeros at its border where
//!    it now sees the BatchNorm's input, so its border becomes the value the map sends to the old
//!    border: `pad_values[ci] = (old_border - t) / s` (impossible when `s == 0`: rule 3).
//! 3. **Otherwise** (e.g. after a residual Add): a frozen `Affine { scale: s, shift: t }`.
//!
//! Everything is computed in f64 and rounded to f32 once at the end, however many maps were
//! folded into a layer. Rules are re-tried until nothing changes, so a map that becomes foldable
//! once its neighbour folded (BatchNorm → Mul → Conv) folds as well.

use std::fmt;

use anyhow::{anyhow, bail, ensure, Result};

use crate::ir::graph::{
    consumers_of, producer_of, Affine, BatchNorm, Conv, Dense, FrozenGraph, FrozenOp, Graph,
    ImportedGraph, Node, Op, Origin, Value, ValueId, Wiring,
};

/// What folding did to every BatchNorm, and to every constant Affine that it folded away.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FoldReport {
    /// One record per BatchNorm (per target layer when it folded into several), in graph order.
    pub folds: Vec<FoldRecord>,
}

/// What happened to one BatchNorm (or constant Affine) node.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldRecord {
    /// The BatchNorm node (or the Mul/Add node an Affine came from).
    pub bn: Origin,
    /// Where it went.
    pub how: FoldKind,
}

/// Where a BatchNorm's scale and shift went.
#[derive(Clone, Debug, PartialEq)]
pub enum FoldKind {
    /// Into the weights and bias of the Conv/Dense that produces its input (per output channel).
    IntoPreceding {
        /// The surviving layer.
        layer: Origin,
    },
    /// Into the weights and bias of a Conv/Dense that reads its output (per input channel).
    IntoFollowing {
        /// The surviving layer.
        layer: Origin,
        /// The layer pads its input, and its border (`Conv::pad_values`) was set to the value
        /// that keeps the padded result exact. False when the layer does not pad.
        padded_exactly: bool,
    },
    /// Kept as a frozen per-channel scale and shift (`FrozenOp::Affine`).
    Affine,
}

impl fmt::Display for FoldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FoldKind::IntoPreceding { layer } => {
                write!(f, "folded into {layer} (weights, bias per output channel)")
            }
            FoldKind::IntoFollowing {
                layer,
                padded_exactly,
            } => {
                write!(f, "folded into the following {layer} (weights, bias per input channel")?;
                if *padded_exactly {
                    write!(f, ", border padded with the value that maps to 0")?;
                }
                write!(f, ")")
            }
            FoldKind::Affine => write!(
                f,
                "kept as a frozen per-channel scale and shift (no neighbouring layer absorbs it exactly)"
            ),
        }
    }
}

impl fmt::Display for FoldRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.bn, self.how)
    }
}

impl fmt::Display for FoldReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for record in &self.folds {
            writeln!(f, "{record}")?;
        }
        Ok(())
    }
}

/// Folds every BatchNorm of `g` (see the module docs for the rules) and every constant Affine
/// that a neighbouring layer absorbs. Fails, naming the node, on statistics that give no finite
/// map (`var + eps <= 0`, non-finite parameters) or when folding overflows f32.
pub fn fold(g: ImportedGraph) -> Result<(FrozenGraph, FoldReport)> {
    let mut folder = Folder::new(g)?;
    let mut records: Vec<(usize, FoldRecord)> = Vec::new();
    loop {
        let mut changed = false;
        for n in 0..folder.nodes.len() {
            if !folder.nodes[n].alive || !matches!(folder.nodes[n].op, Work::Scale { .. }) {
                continue;
            }
            let bn = folder.nodes[n].origin.clone();
            if let Some(layer) = folder.try_into_preceding(n) {
                records.push((
                    n,
                    FoldRecord {
                        bn,
                        how: FoldKind::IntoPreceding { layer },
                    },
                ));
                changed = true;
            } else if let Some(targets) = folder.try_into_following(n) {
                records.extend(targets.into_iter().map(|(layer, padded_exactly)| {
                    let how = FoldKind::IntoFollowing {
                        layer,
                        padded_exactly,
                    };
                    (
                        n,
                        FoldRecord {
                            bn: bn.clone(),
                            how,
                        },
                    )
                }));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for (n, node) in folder.nodes.iter().enumerate() {
        if let (true, Work::Scale { from_bn: true, .. }) = (node.alive, &node.op) {
            let record = FoldRecord {
                bn: node.origin.clone(),
                how: FoldKind::Affine,
            };
            records.push((n, record));
        }
    }
    // Stable: the records of a BatchNorm folded into several layers keep their order.
    records.sort_by_key(|(n, _)| *n);
    let report = FoldReport {
        folds: records.into_iter().map(|(_, r)| r).collect(),
    };
    Ok((folder.finish()?, report))
}

/// A node's operator while folding: linear layers and per-channel maps carry f64 copies of
/// their constants so that every fold composes exactly and rounds once.
enum Work {
    Conv {
        conv: Conv,
        weight: Vec<f64>,
        bias: Vec<f64>,
        pad_values: Option<Vec<f64>>,
    },
    Dense {
        dense: Dense,
        weight: Vec<f64>,
        bias: Vec<f64>,
    },
    /// A BatchNorm (`from_bn`) or a constant Affine: `y = x * scale[c] + shift[c]`, length-1
    /// vectors broadcast.
    Scale {
        scale: Vec<f64>,
        shift: Vec<f64>,
        from_bn: bool,
    },
    Other(FrozenOp),
}

struct WorkNode {
    origin: Origin,
    op: Work,
    inputs: Vec<ValueId>,
    output: ValueId,
    /// False once folded away.
    alive: bool,
}

impl Wiring for WorkNode {
    fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }
    fn output(&self) -> ValueId {
        self.output
    }
    fn is_live(&self) -> bool {
        self.alive
    }
}

/// The graph being folded.
struct Folder {
    values: Vec<Value>,
    nodes: Vec<WorkNode>,
    input: ValueId,
    output: ValueId,
    opset: i64,
}

/// `v[c]`, or `v[0]` for a broadcast length-1 vector.
fn pick(v: &[f64], c: usize) -> f64 {
    if v.len() == 1 {
        v[0]
    } else {
        v[c]
    }
}

/// New constants of a layer after absorbing a map on its input.
enum Absorbed {
    Conv {
        weight: Vec<f64>,
        bias: Vec<f64>,
        pad_values: Option<Vec<f64>>,
    },
    Dense {
        weight: Vec<f64>,
        bias: Vec<f64>,
    },
}

impl Folder {
    fn new(g: ImportedGraph) -> Result<Self> {
        let value_count = g.values.len();
        ensure!(
            g.input < value_count && g.output < value_count,
            "malformed graph: input/output value ids ({}, {}) out of range ({value_count} values)",
            g.input,
            g.output
        );
        let mut nodes = Vec::with_capacity(g.nodes.len());
        for node in g.nodes {
            let origin = node.origin;
            ensure!(
                !node.inputs.is_empty()
                    && node.inputs.iter().all(|&v| v < value_count)
                    && node.output < value_count,
                "{origin}: malformed graph (missing input or value id out of range)"
            );
            let in_shape = &g.values[node.inputs[0]].shape;
            let op = match node.op {
                Op::BatchNorm(bn) => {
                    ensure!(
                        g.values[node.output].shape == *in_shape,
                        "{origin}: output shape {:?} differs from input shape {in_shape:?}",
                        g.values[node.output].shape
                    );
                    let (scale, shift) = batch_norm_map(&bn, in_shape, &origin)?;
                    Work::Scale {
                        scale,
                        shift,
                        from_bn: true,
                    }
                }
                Op::Frozen(FrozenOp::Affine(a)) => {
                    let c = in_shape.first().copied().unwrap_or(0);
                    ensure!(
                        [1, c].contains(&a.scale.len()) && [1, c].contains(&a.shift.len()),
                        "{origin}: per-channel constants have {} and {} entries for {c} channels",
                        a.scale.len(),
                        a.shift.len()
                    );
                    Work::Scale {
                        scale: a.scale,
                        shift: a.shift,
                        from_bn: false,
                    }
                }
                Op::Frozen(FrozenOp::Conv(conv)) => {
                    check_conv(&conv).map_err(|e| anyhow!("{origin}: {e}"))?;
                    Work::Conv {
                        weight: conv.weight.data.iter().map(|&w| w as f64).collect(),
                        bias: conv.bias.iter().map(|&b| b as f64).collect(),
                        pad_values: conv
                            .pad_values
                            .as_ref()
                            .map(|p| p.iter().map(|&v| v as f64).collect()),
                        conv,
                    }
                }
                Op::Frozen(FrozenOp::Dense(dense)) => {
                    let (w, b) = (&dense.weight, &dense.bias);
                    ensure!(
                        w.shape.len() == 2
                            && w.shape[0] == b.len()
                            && w.data.len() == w.shape[0] * w.shape[1],
                        "{origin}: weight shape {:?} with {} values does not match {} biases",
                        w.shape,
                        w.data.len(),
                        b.len()
                    );
                    Work::Dense {
                        weight: w.data.iter().map(|&v| v as f64).collect(),
                        bias: b.iter().map(|&v| v as f64).collect(),
                        dense,
                    }
                }
                Op::Frozen(other) => Work::Other(other),
            };
            nodes.push(WorkNode {
                origin,
                op,
                inputs: node.inputs,
                output: node.output,
                alive: true,
            });
        }
        Ok(Folder {
            values: g.values,
            nodes,
            input: g.input,
            output: g.output,
            opset: g.opset,
        })
    }

    /// Removes a single-input node, handing its readers (and the graph output) its input.
    fn bypass(&mut self, n: usize) {
        self.nodes[n].alive = false;
        let (from, to) = (self.nodes[n].output, self.nodes[n].inputs[0]);
        for node in self.nodes.iter_mut().filter(|node| node.alive) {
            for v in node.inputs.iter_mut().filter(|v| **v == from) {
                *v = to;
            }
        }
        if self.output == from {
            self.output = to;
        }
    }

    /// Rule 1: fold the map of node `n` into the Conv/Dense producing its input.
    fn try_into_preceding(&mut self, n: usize) -> Option<Origin> {
        let Work::Scale { scale, shift, .. } = &self.nodes[n].op else {
            return None;
        };
        let (scale, shift) = (scale.clone(), shift.clone());
        let v = self.nodes[n].inputs[0];
        if v == self.output || consumers_of(&self.nodes, v) != [n] {
            return None;
        }
        let p = producer_of(&self.nodes, v)?;
        let shape = &self.values[v].shape;
        let channels = *shape.first()?;
        let len: usize = shape.iter().product();
        match &mut self.nodes[p].op {
            Work::Conv {
                conv, weight, bias, ..
            } => {
                let out_c = conv.weight.shape[0];
                if out_c != channels {
                    return None;
                }
                let per_out = weight.len() / out_c;
                for o in 0..out_c {
                    let (s, t) = (pick(&scale, o), pick(&shift, o));
                    weight[o * per_out..(o + 1) * per_out]
                        .iter_mut()
                        .for_each(|w| *w *= s);
                    bias[o] = bias[o] * s + t;
                }
            }
            Work::Dense { weight, bias, .. } => {
                let out_f = bias.len();
                if channels == 0 || len != out_f || out_f % channels != 0 {
                    return None;
                }
                // The output vector read as the map's `[C, ...]` value, row-major.
                let per_channel = out_f / channels;
                let in_f = weight.len() / out_f.max(1);
                for o in 0..out_f {
                    let c = o / per_channel;
                    let (s, t) = (pick(&scale, c), pick(&shift, c));
                    weight[o * in_f..(o + 1) * in_f]
                        .iter_mut()
                        .for_each(|w| *w *= s);
                    bias[o] = bias[o] * s + t;
                }
            }
            _ => return None,
        }
        let layer = self.nodes[p].origin.clone();
        self.bypass(n);
        Some(layer)
    }

    /// The Conv/Dense nodes that every path from `value` reaches, if every reader of `value` is
    /// one (Denses may be behind Reshapes, which keep the row-major order they read).
    fn following_layers(
        &self,
        value: ValueId,
        through_reshape: bool,
        out: &mut Vec<usize>,
    ) -> bool {
        if value == self.output {
            return false;
        }
        let consumers = consumers_of(&self.nodes, value);
        !consumers.is_empty()
            && consumers.into_iter().all(|c| match &self.nodes[c].op {
                Work::Conv { .. } if !through_reshape => {
                    out.push(c);
                    true
                }
                Work::Dense { .. } => {
                    out.push(c);
                    true
                }
                Work::Other(FrozenOp::Reshape) => {
                    self.following_layers(self.nodes[c].output, true, out)
                }
                _ => false,
            })
    }

    /// Rule 2: fold the map of node `n` into every layer reading its output. Returns the layers
    /// and whether each one's padding was made exact; `None` (nothing changed) when any reader
    /// cannot absorb it.
    fn try_into_following(&mut self, n: usize) -> Option<Vec<(Origin, bool)>> {
        let Work::Scale { scale, shift, .. } = &self.nodes[n].op else {
            return None;
        };
        let u = self.nodes[n].output;
        let mut targets = Vec::new();
        if !self.following_layers(u, false, &mut targets) {
            return None;
        }
        let shape = &self.values[u].shape;
        let channels = *shape.first()?;
        let len: usize = shape.iter().product();
        let mut updates = Vec::with_capacity(targets.len());
        for &target in &targets {
            let absorbed = match &self.nodes[target].op {
                Work::Conv {
                    conv,
                    weight,
                    bias,
                    pad_values,
                } => conv_absorb_input(conv, weight, bias, pad_values, scale, shift, channels)?,
                Work::Dense { weight, bias, .. } => {
                    dense_absorb_input(weight, bias, scale, shift, channels, len)?
                }
                _ => return None,
            };
            updates.push(absorbed);
        }
        let mut folded = Vec::with_capacity(targets.len());
        for (target, absorbed) in targets.into_iter().zip(updates) {
            let node = &mut self.nodes[target];
            let padded = match (&mut node.op, absorbed) {
                (
                    Work::Conv {
                        conv,
                        weight,
                        bias,
                        pad_values,
                    },
                    Absorbed::Conv {
                        weight: w,
                        bias: b,
                        pad_values: p,
                    },
                ) => {
                    (*weight, *bias, *pad_values) = (w, b, p);
                    conv.pads.iter().any(|&p| p > 0)
                }
                (Work::Dense { weight, bias, .. }, Absorbed::Dense { weight: w, bias: b }) => {
                    (*weight, *bias) = (w, b);
                    false
                }
                _ => unreachable!("updates are computed from the same targets"),
            };
            folded.push((node.origin.clone(), padded));
        }
        self.bypass(n);
        Some(folded)
    }

    /// The frozen graph: f64 constants rounded once, folded nodes and unused values dropped.
    fn finish(self) -> Result<FrozenGraph> {
        let mut used = vec![false; self.values.len()];
        used[self.input] = true;
        used[self.output] = true;
        for node in self.nodes.iter().filter(|n| n.alive) {
            node.inputs.iter().for_each(|&v| used[v] = true);
            used[node.output] = true;
        }
        let mut new_id = vec![usize::MAX; self.values.len()];
        let mut values = Vec::new();
        for (id, value) in self.values.into_iter().enumerate() {
            if used[id] {
                new_id[id] = values.len();
                values.push(value);
            }
        }
        let mut nodes = Vec::new();
        for node in self.nodes.into_iter().filter(|n| n.alive) {
            let origin = node.origin;
            let overflow = || {
                anyhow!(
                    "{origin}: folding BatchNorm into this layer gave a weight or bias outside \
                     the f32 range (a running variance near zero with a large gamma?); check \
                     the exported statistics"
                )
            };
            let op = match node.op {
                Work::Conv {
                    mut conv,
                    weight,
                    bias,
                    pad_values,
                } => {
                    conv.weight.data = round_all(&weight).ok_or_else(overflow)?;
                    conv.bias = round_all(&bias).ok_or_else(overflow)?;
                    conv.pad_values = match pad_values {
                        Some(p) => Some(round_all(&p).ok_or_else(overflow)?),
                        None => None,
                    };
                    FrozenOp::Conv(conv)
                }
                Work::Dense {
                    mut dense,
                    weight,
                    bias,
                } => {
                    dense.weight.data = round_all(&weight).ok_or_else(overflow)?;
                    dense.bias = round_all(&bias).ok_or_else(overflow)?;
                    FrozenOp::Dense(dense)
                }
                Work::Scale { scale, shift, .. } => FrozenOp::Affine(Affine { scale, shift }),
                Work::Other(op) => op,
            };
            nodes.push(Node {
                origin,
                op,
                inputs: node.inputs.iter().map(|&v| new_id[v]).collect(),
                output: new_id[node.output],
            });
        }
        Ok(Graph {
            values,
            nodes,
            input: new_id[self.input],
            output: new_id[self.output],
            opset: self.opset,
        })
    }
}

/// f32 copies, `None` if any is not finite.
fn round_all(v: &[f64]) -> Option<Vec<f32>> {
    let rounded: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    rounded.iter().all(|x| x.is_finite()).then_some(rounded)
}

/// Checks a BatchNorm against its input and returns its per-channel map, or an error naming it.
fn batch_norm_map(
    bn: &BatchNorm,
    in_shape: &[usize],
    origin: &Origin,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let Some(&c) = in_shape.first() else {
        bail!("{origin}: input is a scalar, expected [C, ...]");
    };
    for (name, v) in [
        ("scale (gamma)", &bn.gamma),
        ("B (beta)", &bn.beta),
        ("mean", &bn.mean),
        ("var", &bn.var),
    ] {
        ensure!(
            v.len() == c,
            "{origin}: {name} has {} entries but the input {in_shape:?} has {c} channels",
            v.len()
        );
    }
    for ch in 0..c {
        let denom = bn.var[ch] as f64 + bn.epsilon as f64;
        ensure!(
            denom > 0.0 && denom.is_finite(),
            "{origin}: channel {ch} has running variance {} + epsilon {} = {denom}, not a positive \
             number, so BatchNorm divides by zero or worse; the running statistics are broken \
             (re-export the model after training with tracked running statistics)",
            bn.var[ch],
            bn.epsilon
        );
    }
    let (scale, shift) = bn.scale_shift();
    if let Some(ch) = (0..c).find(|&ch| !scale[ch].is_finite() || !shift[ch].is_finite()) {
        bail!(
            "{origin}: channel {ch} has a non-finite scale or shift (gamma {}, beta {}, mean {}, \
             var {}); the exported parameters are broken",
            bn.gamma[ch],
            bn.beta[ch],
            bn.mean[ch],
            bn.var[ch]
        );
    }
    Ok((scale, shift))
}

/// Checks the constants of a Conv so that folding can index them freely.
fn check_conv(conv: &Conv) -> Result<()> {
    let s = &conv.weight.shape;
    ensure!(
        s.len() == 4 && conv.weight.data.len() == s.iter().product::<usize>(),
        "weight shape {s:?} with {} values is not [out_c, in_c/group, kh, kw]",
        conv.weight.data.len()
    );
    ensure!(
        conv.group >= 1 && s[0] % conv.group == 0 && conv.bias.len() == s[0],
        "weight {s:?}, group {} and {} biases do not fit together",
        conv.group,
        conv.bias.len()
    );
    if let Some(p) = &conv.pad_values {
        ensure!(
            p.len() == s[1] * conv.group,
            "pad_values has {} entries for {} input channels",
            p.len(),
            s[1] * conv.group
        );
    }
    Ok(())
}

/// A Conv reading `x * s + t` instead of `x`: `None` when that cannot be exact.
fn conv_absorb_input(
    conv: &Conv,
    weight: &[f64],
    bias: &[f64],
    pad_values: &Option<Vec<f64>>,
    scale: &[f64],
    shift: &[f64],
    channels: usize,
) -> Option<Absorbed> {
    let [out_c, in_per_group, kh, kw] = conv.weight.shape[..] else {
        return None;
    };
    if in_per_group * conv.group != channels {
        return None;
    }
    let taps = kh * kw;
    let out_per_group = out_c / conv.group;
    let mut weight = weight.to_vec();
    let mut bias = bias.to_vec();
    for o in 0..out_c {
        let first_in = (o / out_per_group) * in_per_group;
        for i in 0..in_per_group {
            let (s, t) = (pick(scale, first_in + i), pick(shift, first_in + i));
            let row = &mut weight[(o * in_per_group + i) * taps..(o * in_per_group + i + 1) * taps];
            bias[o] += row.iter().sum::<f64>() * t;
            row.iter_mut().for_each(|w| *w *= s);
        }
    }
    let pad_values = if conv.pads.iter().any(|&p| p > 0) {
        // The conv used to see `border` (0 by default) around the map's output; it now reads the
        // map's input, whose border must therefore be the `p` with `p * s + t == border`.
        let mut p = Vec::with_capacity(channels);
        for c in 0..channels {
            let border = pad_values.as_ref().map_or(0.0, |q| q[c]);
            let (s, t) = (pick(scale, c), pick(shift, c));
            let value = (border - t) / s;
            if s == 0.0 || !(value as f32).is_finite() {
                return None;
            }
            p.push(value);
        }
        Some(p)
    } else {
        pad_values.clone()
    };
    Some(Absorbed::Conv {
        weight,
        bias,
        pad_values,
    })
}

/// A Dense reading `x * s + t` (over the `[C, ...]` value of `len` elements, flattened) instead
/// of `x`.
fn dense_absorb_input(
    weight: &[f64],
    bias: &[f64],
    scale: &[f64],
    shift: &[f64],
    channels: usize,
    len: usize,
) -> Option<Absorbed> {
    let out_f = bias.len();
    if channels == 0 || len % channels != 0 || weight.len() != out_f * len {
        return None;
    }
    let per_channel = len / channels;
    let mut weight = weight.to_vec();
    let mut bias = bias.to_vec();
    for o in 0..out_f {
        for (j, w) in weight[o * len..(o + 1) * len].iter_mut().enumerate() {
            let c = j / per_channel;
            bias[o] += *w * pick(shift, c);
            *w *= pick(scale, c);
        }
    }
    Some(Absorbed::Dense { weight, bias })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::eval::run;
    use crate::ir::eval::testkit::{batch_norm, conv, out_len, rel_err, Builder, Rng};
    use crate::ir::graph::{Activation, Tensor};

    type B = Builder<Op>;

    fn frozen(op: FrozenOp) -> Op {
        Op::Frozen(op)
    }

    fn bn_op(bn: BatchNorm) -> Op {
        Op::BatchNorm(bn)
    }

    fn origin(name: &str, op_type: &str) -> Origin {
        Origin {
            name: name.into(),
            op_type: op_type.into(),
        }
    }

    fn dense(rng: &mut Rng, out_f: usize, in_f: usize) -> Dense {
        Dense {
            weight: Tensor::new(vec![out_f, in_f], rng.vec(out_f * in_f, -1.0, 1.0)),
            bias: rng.vec(out_f, -0.5, 0.5),
        }
    }

    /// Folds `g`, checks that the folded graph computes what `g` computes on random inputs and
    /// holds no map that the report says was folded, and returns both results.
    fn fold_and_compare(g: &ImportedGraph, tolerance: f64) -> (FrozenGraph, FoldReport) {
        let (f, report) = fold(g.clone()).expect("fold");
        let mut rng = Rng::new(99);
        let n: usize = g.values[g.input].shape.iter().product();
        for _ in 0..3 {
            let x = rng.vec(n, -2.0, 2.0);
            let want = run(g, &x).expect("unfolded run");
            let got = run(&f, &x).expect("folded run");
            let err = rel_err(&got, &want);
            assert!(
                err <= tolerance,
                "relative error {err:e} > {tolerance:e}\nreport:\n{report}"
            );
        }
        let affines = f
            .nodes
            .iter()
            .filter(|n| matches!(n.op, FrozenOp::Affine(_)))
            .count();
        let kept = report
            .folds
            .iter()
            .filter(|r| r.how == FoldKind::Affine)
            .count();
        assert!(
            affines >= kept,
            "report lists {kept} kept Affines, graph has {affines}"
        );
        (f, report)
    }

    fn kinds(report: &FoldReport) -> Vec<(String, FoldKind)> {
        report
            .folds
            .iter()
            .map(|r| (r.bn.name.clone(), r.how.clone()))
            .collect()
    }

    fn op_types(f: &FrozenGraph) -> Vec<&str> {
        f.nodes.iter().map(|n| n.origin.op_type.as_str()).collect()
    }

    fn preceding(layer: &str, op_type: &str) -> FoldKind {
        FoldKind::IntoPreceding {
            layer: origin(layer, op_type),
        }
    }

    /// input [in_c, h, w] → conv → BN → Relu.
    fn conv_bn_graph(
        rng: &mut Rng,
        in_c: usize,
        out_c: usize,
        group: usize,
        hw: usize,
    ) -> ImportedGraph {
        let (mut b, x) = B::new(&[in_c, hw, hw]);
        let c = conv(rng, out_c, in_c, group, [3, 3], [1, 1], [1, 1, 1, 1], 2);
        let y = b.node(
            "conv1",
            "Conv",
            frozen(FrozenOp::Conv(c)),
            &[x],
            &[out_c, hw, hw],
        );
        let y = b.node(
            "bn1",
            "BatchNormalization",
            bn_op(batch_norm(rng, out_c, 1e-5)),
            &[y],
            &[out_c, hw, hw],
        );
        let y = b.node(
            "relu",
            "Relu",
            frozen(FrozenOp::Activation(Activation::Relu)),
            &[y],
            &[out_c, hw, hw],
        );
        b.finish(y)
    }

    #[test]
    fn conv_then_bn_folds_into_the_conv() {
        let g = conv_bn_graph(&mut Rng::new(1), 3, 4, 1, 6);
        let (f, report) = fold_and_compare(&g, 1e-5);
        assert_eq!(
            kinds(&report),
            vec![("bn1".into(), preceding("conv1", "Conv"))]
        );
        assert_eq!(op_types(&f), ["Conv", "Relu"]);
        assert_eq!(f.values.len(), 3, "the BatchNorm's output value is dropped");
        assert_eq!(f.values[f.output].name, "relu_out");
    }

    #[test]
    fn depthwise_conv_then_bn() {
        let g = conv_bn_graph(&mut Rng::new(2), 4, 4, 4, 5);
        let (f, report) = fold_and_compare(&g, 1e-5);
        assert_eq!(
            kinds(&report),
            vec![("bn1".into(), preceding("conv1", "Conv"))]
        );
        assert_eq!(op_types(&f), ["Conv", "Relu"]);
    }

    #[test]
    fn grouped_conv_then_bn() {
        let g = conv_bn_graph(&mut Rng::new(3), 4, 6, 2, 5);
        let (_, report) = fold_and_compare(&g, 1e-5);
        assert_eq!(
            kinds(&report),
            vec![("bn1".into(), preceding("conv1", "Conv"))]
        );
    }

    #[test]
    fn conv1d_then_bn() {
        let mut rng = Rng::new(4);
        let (mut b, x) = B::new(&[3, 16]);
        let c = conv(&mut rng, 5, 3, 1, [1, 3], [1, 2], [0, 1, 0, 1], 1);
        let l = out_len(16, 3, 2, 1, 1, 1);
        let y = b.node("conv1", "Conv", frozen(FrozenOp::Conv(c)), &[x], &[5, l]);
        let y = b.node(
            "bn1",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 5, 1e-5)),
            &[y],
            &[5, l],
        );
        let g = b.finish(y);
        let (f, report) = fold_and_compare(&g, 1e-5);
        assert_eq!(
            kinds(&report),
            vec![("bn1".into(), preceding("conv1", "Conv"))]
        );
        assert_eq!(op_types(&f), ["Conv"]);
        assert_eq!(
            f.values[f.output].name, "conv1_out",
            "the graph output moves to the conv"
        );
    }

    #[test]
    fn dense_then_bn1d_with_keras_epsilon() {
        let mut rng = Rng::new(5);
        let (mut b, x) = B::new(&[10]);
        let y = b.node(
            "fc",
            "Gemm",
            frozen(FrozenOp::Dense(dense(&mut rng, 6, 10))),
            &[x],
            &[6],
        );
        let y = b.node(
            "bn",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 6, 1e-3)),
            &[y],
            &[6],
        );
        let y = b.node("softmax", "Softmax", frozen(FrozenOp::Softmax), &[y], &[6]);
        let g = b.finish(y);
        let (f, report) = fold_and_compare(&g, 1e-5);
        assert_eq!(kinds(&report), vec![("bn".into(), preceding("fc", "Gemm"))]);
        assert_eq!(op_types(&f), ["Gemm", "Softmax"]);
    }

    #[test]
    fn bn_before_padded_strided_conv_sets_the_border() {
        let mut rng = Rng::new(6);
        let (mut b, x) = B::new(&[3, 9, 9]);
        let y = b.node(
            "bn0",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 3, 1e-5)),
            &[x],
            &[3, 9, 9],
        );
        let c = conv(&mut rng, 4, 3, 1, [3, 3], [2, 2], [1, 1, 1, 1], 2);
        let o = out_len(9, 3, 2, 1, 1, 1);
        let y = b.node("conv1", "Conv", frozen(FrozenOp::Conv(c)), &[y], &[4, o, o]);
        let g = b.finish(y);
        let (f, report) = fold_and_compare(&g, 2e-6);
        let how = FoldKind::IntoFollowing {
            layer: origin("conv1", "Conv"),
            padded_exactly: true,
        };
        assert_eq!(kinds(&report), vec![("bn0".into(), how)]);
        let FrozenOp::Conv(c) = &f.nodes[0].op else {
            panic!("expected a conv")
        };
        let Op::BatchNorm(bn) = &g.nodes[0].op else {
            panic!()
        };
        let (s, t) = bn.scale_shift();
        let want: Vec<f32> = (0..3).map(|i| (-t[i] / s[i]) as f32).collect();
        assert_eq!(c.pad_values.as_deref(), Some(&want[..]));
        assert_eq!(f.nodes[0].inputs, [f.input]);
    }

    #[test]
    fn bn_before_grouped_conv_with_asymmetric_pads() {
        let mut rng = Rng::new(7);
        let (mut b, x) = B::new(&[4, 6, 7]);
        let y = b.node(
            "bn0",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 4, 1e-5)),
            &[x],
            &[4, 6, 7],
        );
        let c = conv(&mut rng, 6, 4, 2, [3, 2], [1, 2], [2, 0, 1, 1], 2);
        let (oh, ow) = (out_len(6, 3, 1, 2, 1, 1), out_len(7, 2, 2, 0, 1, 1));
        let y = b.node(
            "conv1",
            "Conv",
            frozen(FrozenOp::Conv(c)),
            &[y],
            &[6, oh, ow],
        );
        let g = b.finish(y);
        fold_and_compare(&g, 2e-6);
    }

    #[test]
    fn bn_before_unpadded_conv_leaves_the_border_alone() {
        let mut rng = Rng::new(8);
        let (mut b, x) = B::new(&[3, 5, 5]);
        let y = b.node(
            "bn0",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 3, 1e-5)),
            &[x],
            &[3, 5, 5],
        );
        let c = conv(&mut rng, 2, 3, 1, [3, 3], [1, 1], [0; 4], 2);
        let y = b.node("conv1", "Conv", frozen(FrozenOp::Conv(c)), &[y], &[2, 3, 3]);
        let g = b.finish(y);
        let (f, report) = fold_and_compare(&g, 2e-6);
        let how = FoldKind::IntoFollowing {
            layer: origin("conv1", "Conv"),
            padded_exactly: false,
        };
        assert_eq!(kinds(&report), vec![("bn0".into(), how)]);
        assert!(matches!(&f.nodes[0].op, FrozenOp::Conv(c) if c.pad_values.is_none()));
    }

    #[test]
    fn bn_before_dense_and_before_flatten_dense() {
        let mut rng = Rng::new(9);
        let (mut b, x) = B::new(&[6]);
        let y = b.node(
            "bn",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 6, 1e-5)),
            &[x],
            &[6],
        );
        let y = b.node(
            "fc",
            "Gemm",
            frozen(FrozenOp::Dense(dense(&mut rng, 3, 6))),
            &[y],
            &[3],
        );
        let (f, report) = fold_and_compare(&b.finish(y), 1e-5);
        let how = FoldKind::IntoFollowing {
            layer: origin("fc", "Gemm"),
            padded_exactly: false,
        };
        assert_eq!(kinds(&report), vec![("bn".into(), how.clone())]);
        assert_eq!(op_types(&f), ["Gemm"]);

        let (mut b, x) = B::new(&[2, 3, 3]);
        let y = b.node(
            "bn",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 2, 1e-5)),
            &[x],
            &[2, 3, 3],
        );
        let y = b.node("flat", "Flatten", frozen(FrozenOp::Reshape), &[y], &[18]);
        let y = b.node(
            "fc",
            "Gemm",
            frozen(FrozenOp::Dense(dense(&mut rng, 5, 18))),
            &[y],
            &[5],
        );
        let (f, report) = fold_and_compare(&b.finish(y), 1e-5);
        assert_eq!(kinds(&report), vec![("bn".into(), how)]);
        assert_eq!(op_types(&f), ["Flatten", "Gemm"]);
    }

    /// x → (conv a, conv b) → Add → BN → Relu.
    fn residual_bn_graph(rng: &mut Rng) -> ImportedGraph {
        let (mut b, x) = B::new(&[3, 5, 5]);
        let ca = conv(rng, 4, 3, 1, [3, 3], [1, 1], [1, 1, 1, 1], 2);
        let cb = conv(rng, 4, 3, 1, [1, 1], [1, 1], [0; 4], 2);
        let a = b.node(
            "conv_a",
            "Conv",
            frozen(FrozenOp::Conv(ca)),
            &[x],
            &[4, 5, 5],
        );
        let c = b.node(
            "conv_b",
            "Conv",
            frozen(FrozenOp::Conv(cb)),
            &[x],
            &[4, 5, 5],
        );
        let s = b.node("add", "Add", frozen(FrozenOp::Add), &[a, c], &[4, 5, 5]);
        let y = b.node(
            "bn",
            "BatchNormalization",
            bn_op(batch_norm(rng, 4, 1e-5)),
            &[s],
            &[4, 5, 5],
        );
        let y = b.node(
            "relu",
            "Relu",
            frozen(FrozenOp::Activation(Activation::Relu)),
            &[y],
            &[4, 5, 5],
        );
        b.finish(y)
    }

    #[test]
    fn bn_after_residual_add_becomes_affine() {
        let g = residual_bn_graph(&mut Rng::new(10));
        let (f, report) = fold_and_compare(&g, 1e-6);
        assert_eq!(kinds(&report), vec![("bn".into(), FoldKind::Affine)]);
        assert_eq!(
            op_types(&f),
            ["Conv", "Conv", "Add", "BatchNormalization", "Relu"]
        );
        let Op::BatchNorm(bn) = &g.nodes[3].op else {
            panic!()
        };
        let (scale, shift) = bn.scale_shift();
        assert_eq!(f.nodes[3].op, FrozenOp::Affine(Affine { scale, shift }));
    }

    #[test]
    fn bn_feeding_two_convs_folds_into_both() {
        let mut rng = Rng::new(11);
        let (mut b, x) = B::new(&[3, 6, 6]);
        let y = b.node(
            "bn",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 3, 1e-5)),
            &[x],
            &[3, 6, 6],
        );
        let c1 = conv(&mut rng, 4, 3, 1, [3, 3], [1, 1], [1, 1, 1, 1], 2);
        let c2 = conv(&mut rng, 4, 3, 1, [1, 1], [1, 1], [0; 4], 2);
        let a = b.node(
            "conv1",
            "Conv",
            frozen(FrozenOp::Conv(c1)),
            &[y],
            &[4, 6, 6],
        );
        let c = b.node(
            "conv2",
            "Conv",
            frozen(FrozenOp::Conv(c2)),
            &[y],
            &[4, 6, 6],
        );
        let s = b.node("add", "Add", frozen(FrozenOp::Add), &[a, c], &[4, 6, 6]);
        let (f, report) = fold_and_compare(&b.finish(s), 2e-6);
        assert_eq!(
            kinds(&report),
            vec![
                (
                    "bn".into(),
                    FoldKind::IntoFollowing {
                        layer: origin("conv1", "Conv"),
                        padded_exactly: true
                    }
                ),
                (
                    "bn".into(),
                    FoldKind::IntoFollowing {
                        layer: origin("conv2", "Conv"),
                        padded_exactly: false
                    }
                ),
            ]
        );
        assert_eq!(op_types(&f), ["Conv", "Conv", "Add"]);
    }

    #[test]
    fn conv_output_read_elsewhere_is_not_folded_into() {
        let mut rng = Rng::new(12);
        let (mut b, x) = B::new(&[3, 5, 5]);
        let c = conv(&mut rng, 3, 3, 1, [3, 3], [1, 1], [1, 1, 1, 1], 2);
        let original = c.clone();
        let y = b.node("conv1", "Conv", frozen(FrozenOp::Conv(c)), &[x], &[3, 5, 5]);
        let n = b.node(
            "bn",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 3, 1e-5)),
            &[y],
            &[3, 5, 5],
        );
        let r = b.node(
            "relu",
            "Relu",
            frozen(FrozenOp::Activation(Activation::Relu)),
            &[n],
            &[3, 5, 5],
        );
        let s = b.node("add", "Add", frozen(FrozenOp::Add), &[r, y], &[3, 5, 5]);
        let (f, report) = fold_and_compare(&b.finish(s), 1e-6);
        assert_eq!(kinds(&report), vec![("bn".into(), FoldKind::Affine)]);
        assert_eq!(f.nodes[0].op, FrozenOp::Conv(original));
    }

    #[test]
    fn constant_affines_after_dense_collapse_into_it() {
        // Keras-style Gemm → Mul → Add → BN, all into the Gemm, rounded once.
        let mut rng = Rng::new(13);
        let (mut b, x) = B::new(&[8]);
        let d = dense(&mut rng, 4, 8);
        let y = b.node("fc", "Gemm", frozen(FrozenOp::Dense(d)), &[x], &[4]);
        let mul = Affine {
            scale: vec![0.5, -2.0, 3.0, 0.25],
            shift: vec![0.0],
        };
        let y = b.node("mul", "Mul", frozen(FrozenOp::Affine(mul)), &[y], &[4]);
        let add = Affine {
            scale: vec![1.0],
            shift: vec![0.75],
        };
        let y = b.node("add", "Add", frozen(FrozenOp::Affine(add)), &[y], &[4]);
        let y = b.node(
            "bn",
            "BatchNormalization",
            bn_op(batch_norm(&mut rng, 4, 1e-3)),
            &[y],
            &[4],
        );
        let (f, report) = fold_and_compare(&b.finish(y), 1e-6);
        let into_fc = preceding("fc", "Gemm");
        assert_eq!(
            kinds(&report),
            vec![
                ("mul".into(), into_fc.clone()),
                ("add".into(), into_fc.clone()),
                ("bn".into(), into_fc)
            ]
        );
        assert_eq!(op_types(&f), ["Gemm"]);
    }

    #[test]
    fn bn_then_constant_affine_then_padded_conv_composes_the_border() {
        // The Mul folds into the conv first (setting a border), then the BatchNorm, now feeding
        // the conv directly, folds too and must compose with that border.
        let mut rng = Rng::new(14);
        let g = {
            let (mut b, x) = B::new(&[3, 5, 5]);
            let ca = conv(&mut rng, 3, 3, 1, [1, 1], [1, 1], [0; 4], 2);
            let a = b.node(
                "conv_a",
                "Conv",
                frozen(FrozenOp::Conv(ca)),
                &[x],
                &[3, 5, 5],
            );
            let s = b.node("add", "Add", frozen(FrozenOp::Add), &[a, x], &[3, 5, 5]);
            let y = b.node(
                "bn",
                "BatchNormalization",
                bn_op(batch_norm(&mut rng, 3, 1e-5)),
                &[s],
                &[3, 5, 5],
            );
            let mul = Affine {
                scale: vec![1.5, -0.5, 2.0],
                shift: vec![0.3, 0.1, -0.2],
            };
            let y = b.node(
                "mul",
                "Mul",
                frozen(FrozenOp::Affine(mul)),
                &[y],
                &[3, 5, 5],
            );
            let c = conv(&mut rng, 2, 3, 1, [3, 3], [1, 1], [1, 1, 1, 1], 2);
            let y = b.node("conv1", "Conv", frozen(FrozenOp::Conv(c)), &[y], &[2, 5, 5]);
            b.finish(y)
        };
        let (f, report) = fold_and_compare(&g, 2e-6);
        let how = FoldKind::IntoFollowing {
            layer: origin("conv1", "Conv"),
            padded_exactly: true,
        };
        assert_eq!(
            kinds(&report),
            vec![("bn".into(), how.clone()), ("mul".into(), how)]
        );
        assert_eq!(op_types(&f), ["Conv", "Add", "Conv"]);
    }

    #[test]
    fn affine_false_bn_folds_like_any_other() {
        let mut rng = Rng::new(15);
        let mut g = conv_bn_graph(&mut rng, 3, 4, 1, 4);
        let Op::BatchNorm(bn) = &mut g.nodes[1].op else {
            panic!()
        };
        bn.gamma = vec![1.0; 4];
        bn.beta = vec![0.0; 4];
        let (_, report) = fold_and_compare(&g, 1e-5);
        assert_eq!(
            kinds(&report),
            vec![("bn1".into(), preceding("conv1", "Conv"))]
        );
    }

    #[test]
    fn zero_scale_before_padded_conv_falls_back_to_affine() {
        let mut rng = Rng::new(16);
        let (mut b, x) = B::new(&[2, 4, 4]);
        let mut bn = batch_norm(&mut rng, 2, 1e-5);
        bn.gamma[1] = 0.0;
        let y = b.node("bn", "BatchNormalization", bn_op(bn), &[x], &[2, 4, 4]);
        let c = conv(&mut rng, 3, 2, 1, [3, 3], [1, 1], [1, 1, 1, 1], 2);
        let y = b.node("conv1", "Conv", frozen(FrozenOp::Conv(c)), &[y], &[3, 4, 4]);
        let (f, report) = fold_and_compare(&b.finish(y), 1e-6);
        assert_eq!(kinds(&report), vec![("bn".into(), FoldKind::Affine)]);
        assert_eq!(op_types(&f), ["BatchNormalization", "Conv"]);
    }

    #[test]
    fn broken_statistics_are_refused_naming_the_node() {
        let mut g = conv_bn_graph(&mut Rng::new(17), 3, 4, 1, 4);
        let Op::BatchNorm(bn) = &mut g.nodes[1].op else {
            panic!()
        };
        bn.var[2] = -1.0;
        let err = fold(g.clone()).unwrap_err().to_string();
        assert!(
            err.contains("node \"bn1\" (BatchNormalization)") && err.contains("channel 2"),
            "{err}"
        );

        let Op::BatchNorm(bn) = &mut g.nodes[1].op else {
            panic!()
        };
        bn.var[2] = 1.0;
        bn.mean[0] = f32::NAN;
        let err = fold(g.clone()).unwrap_err().to_string();
        assert!(err.contains("bn1") && err.contains("non-finite"), "{err}");

        let Op::BatchNorm(bn) = &mut g.nodes[1].op else {
            panic!()
        };
        bn.mean[0] = 0.0;
        bn.var.pop();
        let err = fold(g).unwrap_err().to_string();
        assert!(err.contains("bn1") && err.contains("3 entries"), "{err}");
    }

    #[test]
    fn overflowing_fold_is_refused_naming_the_layer() {
        let mut g = conv_bn_graph(&mut Rng::new(18), 3, 4, 1, 4);
        let Op::BatchNorm(bn) = &mut g.nodes[1].op else {
            panic!()
        };
        bn.gamma[0] = 3.0e38;
        bn.var[0] = 0.0;
        bn.epsilon = 1e-6;
        let err = fold(g).unwrap_err().to_string();
        assert!(
            err.contains("node \"conv1\" (Conv)") && err.contains("f32 range"),
            "{err}"
        );
    }

    #[test]
    fn report_reads_well() {
        let g = conv_bn_graph(&mut Rng::new(19), 3, 4, 1, 4);
        let (_, report) = fold(g).unwrap();
        assert_eq!(
            report.to_string(),
            "node \"bn1\" (BatchNormalization) → folded into node \"conv1\" (Conv) (weights, bias per output channel)\n"
        );
        let following = FoldRecord {
            bn: origin("bn0", "BatchNormalization"),
            how: FoldKind::IntoFollowing {
                layer: origin("conv1", "Conv"),
                padded_exactly: true,
            },
        };
        assert_eq!(
            following.to_string(),
            "node \"bn0\" (BatchNormalization) → folded into the following node \"conv1\" (Conv) \
             (weights, bias per input channel, border padded with the value that maps to 0)"
        );
    }
}
