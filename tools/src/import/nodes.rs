//! Lowering of ONNX nodes to IR nodes, with per-sample shape inference and the checks that
//! constants fit the activations they meet.

use std::collections::HashMap;

use anyhow::{anyhow, bail, ensure, Result};
use onnx_rs::ast::{Node as OnnxNode, OpType};

mod axis;
mod conv_transpose;

use super::activations;
use super::attr::{Attrs, MAX_ATTR_SIZE};
use super::constants;
use super::global_pool;
use super::spatial::Window;
use super::tensor::{self, Const, ExternalFiles};
use crate::ir::graph::{
    Activation, BatchNorm, Conv, Dense, FrozenOp, Node, Op, Origin, Pool, PoolKind, Tensor, Value,
    ValueId,
};

/// Largest activation (elements per sample) accepted.
const MAX_ACTIVATION_ELEMENTS: usize = 1 << 28;

/// What a name stands for while importing.
#[derive(Clone, Debug)]
pub(super) enum Val {
    /// Known at import.
    Const(Const),
    /// An activation of the IR graph.
    Act(ValueId),
}

/// Builds the IR graph node by node, in topological order.
pub(super) struct NodeImporter<'e> {
    pub values: Vec<Value>,
    pub nodes: Vec<Node<Op>>,
    pub env: HashMap<String, Val>,
    ext: &'e mut ExternalFiles,
    opset: i64,
    /// The input's batch size when the file fixes it: exporters fold `x.size(0)` into such
    /// models' Reshape targets, so that number there means "the batch".
    fixed_batch: Option<i64>,
    /// How many needed nodes read each name (the graph output counts as one more reader).
    pub(super) readers: HashMap<String, usize>,
    /// Dense nodes made from a MatMul, by output value, while a following Add may still
    /// become their bias.
    open_matmul: HashMap<ValueId, usize>,
}

/// One imported activation op.
struct ImportedOp {
    op: Op,
    inputs: Vec<ValueId>,
    shape: Vec<usize>,
}

fn frozen_op(op: FrozenOp, x: ValueId, shape: Vec<usize>) -> ImportedOp {
    ImportedOp {
        op: Op::Frozen(op),
        inputs: vec![x],
        shape,
    }
}

/// Rejects NaN and infinity in weights, naming what they are.
fn finite(values: &[f64], what: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => bail!(
            "{what} contains {} at index {i}; the exported weights are broken (diverged training or a bad \
             conversion), re-export a healthy checkpoint",
            values[i]
        ),
    }
}

/// The values of a constant that must be real-valued (weights, biases, BatchNorm statistics):
/// an integer tensor there is a broken or mislabelled export, not something to reinterpret.
fn real_values(c: &Const, what: &str) -> Result<Vec<f64>> {
    ensure!(
        !c.is_int(),
        "{what} is stored as an integer tensor; weights, biases and statistics must be floating point \
         (re-export the model, or convert the initializer to float32)"
    );
    Ok(c.to_f64())
}

/// Rounds f64 weights to f32, refusing values f32 cannot hold.
fn to_f32(values: &[f64], what: &str) -> Result<Vec<f32>> {
    finite(values, what)?;
    let out: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    ensure!(
        out.iter().all(|v| v.is_finite()),
        "{what} holds values too large for f32"
    );
    Ok(out)
}

impl<'e> NodeImporter<'e> {
    /// An importer whose graph starts with the input value (id 0).
    pub fn new(
        input: Value,
        ext: &'e mut ExternalFiles,
        opset: i64,
        fixed_batch: Option<i64>,
        readers: HashMap<String, usize>,
    ) -> Self {
        let mut env = HashMap::new();
        env.insert(input.name.clone(), Val::Act(0));
        NodeImporter {
            values: vec![input],
            nodes: Vec::new(),
            env,
            ext,
            opset,
            fixed_batch,
            readers,
            open_matmul: HashMap::new(),
        }
    }

    fn shape(&self, v: ValueId) -> &[usize] {
        &self.values[v].shape
    }

    /// Imports one node (all its inputs are already in `env`).
    pub fn import_node(&mut self, node: &OnnxNode<'_>, origin: &Origin) -> Result<()> {
        let inputs: Vec<Option<Val>> = node
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    Ok(None)
                } else {
                    self.env
                        .get(*name)
                        .cloned()
                        .map(Some)
                        .ok_or_else(|| anyhow!("input {name:?} is not defined"))
                }
            })
            .collect::<Result<_>>()?;
        let out = *node
            .output
            .first()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| anyhow!("the node has no output"))?;
        let act = |k: usize| match inputs.get(k) {
            Some(Some(Val::Act(v))) => Some(*v),
            _ => None,
        };

        if node.op_type == OpType::Shape {
            if let Some(v) = act(0) {
                let full = with_batch(self.shape(v));
                self.env.insert(
                    out.to_string(),
                    Val::Const(constants::shape_of(node, &full)?),
                );
                return Ok(());
            }
        }
        if !inputs.iter().any(|v| matches!(v, Some(Val::Act(_)))) {
            let consts: Vec<Option<&Const>> = inputs
                .iter()
                .map(|v| match v {
                    Some(Val::Const(c)) => Some(c),
                    _ => None,
                })
                .collect();
            let c = constants::evaluate(node, &consts, self.ext)?;
            self.env.insert(out.to_string(), Val::Const(c));
            return Ok(());
        }

        let x = act(0);
        let cst = |k: usize, what: &str| -> Result<Option<&Const>> {
            match inputs.get(k) {
                None | Some(None) => Ok(None),
                Some(Some(Val::Const(c))) => Ok(Some(c)),
                Some(Some(Val::Act(_))) => {
                    bail!("{what} (input {k}) must be a constant, not an activation")
                }
            }
        };
        let need = |k: usize, what: &str| -> Result<&Const> {
            cst(k, what)?.ok_or_else(|| anyhow!("{what} (input {k}) is missing"))
        };
        let attrs = Attrs::new(node);
        let need_x = || x.ok_or_else(|| anyhow!("input 0 must be the activation"));

        let imported = match node.op_type {
            OpType::Conv => self.conv(
                &attrs,
                need_x()?,
                need(1, "the weight")?,
                cst(2, "the bias")?,
            )?,
            OpType::BatchNormalization => {
                let p = [
                    need(1, "scale (gamma)")?,
                    need(2, "bias (beta)")?,
                    need(3, "running mean")?,
                    need(4, "running variance")?,
                ];
                self.batch_norm(&attrs, need_x()?, p)?
            }
            OpType::Gemm => self.gemm(
                &attrs,
                need_x()?,
                need(1, "B (the weight)")?,
                cst(2, "C (the bias)")?,
            )?,
            OpType::MatMul => {
                let imported = self.matmul(need_x()?, need(1, "B (the weight)")?)?;
                let id = self.add_node(origin, out, imported)?;
                if self.readers.get(out) == Some(&1) {
                    self.open_matmul.insert(id, self.nodes.len() - 1);
                }
                return Ok(());
            }
            OpType::Relu => self.activation(need_x()?, Activation::Relu),
            OpType::Sigmoid => self.activation(need_x()?, Activation::Sigmoid),
            OpType::HardSigmoid => self.activation(need_x()?, activations::hard_sigmoid(&attrs)?),
            OpType::HardSwish => self.activation(need_x()?, Activation::HardSwish),
            OpType::Tanh => self.activation(need_x()?, Activation::Tanh),
            OpType::PRelu => {
                let x = need_x()?;
                let op = activations::prelu(need(1, "the slope")?, self.shape(x))?;
                frozen_op(op, x, self.shape(x).to_vec())
            }
            OpType::LeakyRelu => {
                let alpha = attrs.float("alpha", 0.01)?;
                ensure!(alpha.is_finite(), "alpha {alpha} is not finite");
                self.activation(need_x()?, Activation::LeakyRelu { alpha })
            }
            OpType::Clip => {
                let bound = |k: usize, name: &str, default: f32| -> Result<f32> {
                    let v = match cst(k, name)? {
                        Some(c) => c.scalar_f64(name)? as f32,
                        None => attrs.float(name, default)?,
                    };
                    ensure!(!v.is_nan(), "Clip {name} is NaN");
                    Ok(v)
                };
                let (lo, hi) = (
                    bound(1, "min", f32::NEG_INFINITY)?,
                    bound(2, "max", f32::INFINITY)?,
                );
                ensure!(lo <= hi, "Clip min {lo} is above max {hi}");
                self.activation(need_x()?, Activation::Clip { lo, hi })
            }
            OpType::MaxPool | OpType::AveragePool => self.pool(node, &attrs, need_x()?)?,
            OpType::GlobalAveragePool => {
                let s = self.shape(need_x()?);
                ensure!(
                    s.len() >= 2,
                    "GlobalAveragePool needs [C, H, W] or [C, L] per sample, got {s:?}"
                );
                let mut shape = vec![1; s.len()];
                shape[0] = s[0];
                frozen_op(FrozenOp::GlobalAveragePool, need_x()?, shape)
            }
            OpType::GlobalMaxPool => {
                let x = need_x()?;
                let (op, shape) = global_pool::global_max_pool(self.shape(x))?;
                frozen_op(op, x, shape)
            }
            OpType::ReduceMean => {
                let axes = constants::axes(&attrs, &[None, cst(1, "axes")?], 1)?;
                self.reduce_mean(&attrs, need_x()?, axes)?
            }
            OpType::Add | OpType::Sub | OpType::Mul | OpType::Div => match (act(0), act(1)) {
                (Some(a), Some(b))
                    if node.op_type == OpType::Mul
                        && self.fuse_self_gating(origin, out, (a, b)) =>
                {
                    return Ok(());
                }
                (Some(a), Some(b)) if node.op_type == OpType::Mul => {
                    let (sa, sb) = (self.shape(a), self.shape(b));
                    let [x, gate] = activations::product_operands((a, sa), (b, sb))?;
                    ImportedOp {
                        op: Op::Frozen(FrozenOp::Mul),
                        inputs: vec![x, gate],
                        shape: self.shape(x).to_vec(),
                    }
                }
                (Some(a), Some(b)) => {
                    ensure!(
                        node.op_type == OpType::Add,
                        "only Add and Mul combine two activations"
                    );
                    let (sa, sb) = (self.shape(a), self.shape(b));
                    ensure!(sa == sb, "Add of activations of different shapes {sa:?} and {sb:?} (broadcasting between activations is not supported)");
                    ImportedOp {
                        op: Op::Frozen(FrozenOp::Add),
                        inputs: vec![a, b],
                        shape: sa.to_vec(),
                    }
                }
                (Some(a), None) => {
                    let c = need(1, "the constant operand")?;
                    if node.op_type == OpType::Add && self.fuse_bias(a, c, out)? {
                        return Ok(());
                    }
                    self.affine(&node.op_type, a, c, true)?
                }
                (None, Some(b)) => {
                    let c = need(0, "the constant operand")?;
                    if node.op_type == OpType::Add && self.fuse_bias(b, c, out)? {
                        return Ok(());
                    }
                    self.affine(&node.op_type, b, c, false)?
                }
                (None, None) => bail!("no activation input"),
            },
            OpType::Flatten => {
                let x = need_x()?;
                let s = self.shape(x);
                let axis = constants::flatten_axis(attrs.int("axis", 1)?, s.len() + 1)?;
                ensure!(axis == 1, "Flatten axis {axis} would merge the batch with other axes; only axis 1 is supported");
                frozen_op(FrozenOp::Reshape, x, vec![s.iter().product()])
            }
            OpType::Reshape => {
                let target = need(1, "the target shape")?.to_i64("the Reshape target shape")?;
                self.reshape(need_x()?, &target, attrs.int("allowzero", 0)? != 0)?
            }
            OpType::Squeeze => {
                let x = need_x()?;
                let s = self.shape(x);
                let shape = match constants::axes(&attrs, &[None, cst(1, "axes")?], 1)? {
                    None => s.iter().copied().filter(|&d| d != 1).collect(),
                    Some(axes) => {
                        let full = with_batch(s);
                        ensure!(
                            axes.iter().all(|&a| tensor::norm_axis(a, full.len()).map_or(true, |a| a != 0)),
                            "Squeeze axes {axes:?} include the batch axis"
                        );
                        constants::squeeze_shape(&full, Some(&axes))?[1..].to_vec()
                    }
                };
                frozen_op(FrozenOp::Reshape, x, shape)
            }
            OpType::Unsqueeze => {
                let x = need_x()?;
                let axes = constants::axes(&attrs, &[None, cst(1, "axes")?], 1)?
                    .ok_or_else(|| anyhow!("Unsqueeze needs axes"))?;
                let full = with_batch(self.shape(x));
                let rank = full.len() + axes.len();
                ensure!(
                    axes.iter()
                        .all(|&a| tensor::norm_axis(a, rank).map_or(true, |a| a != 0)),
                    "Unsqueeze axes {axes:?} insert an axis before the batch"
                );
                frozen_op(
                    FrozenOp::Reshape,
                    x,
                    constants::unsqueeze_shape(&full, &axes)?[1..].to_vec(),
                )
            }
            OpType::Identity => {
                frozen_op(FrozenOp::Reshape, need_x()?, self.shape(need_x()?).to_vec())
            }
            OpType::Dropout => {
                if let Some(mask) = node.output.get(1).filter(|n| !n.is_empty()) {
                    ensure!(
                        self.readers.get(*mask).copied().unwrap_or(0) == 0,
                        "the Dropout mask output {mask:?} is used; only inference-form Dropout (output 0) is supported"
                    );
                }
                if let Some(t) = cst(2, "training_mode")? {
                    ensure!(
                        t.scalar_f64("training_mode")? == 0.0,
                        "Dropout in training mode; export the model in eval mode (`model.eval()`)"
                    );
                }
                frozen_op(FrozenOp::Reshape, need_x()?, self.shape(need_x()?).to_vec())
            }
            OpType::Transpose => {
                let x = need_x()?;
                let s = self.shape(x);
                let perm = constants::permutation(attrs.ints("perm")?, s.len() + 1)?;
                ensure!(perm[0] == 0, "Transpose perm {perm:?} moves the batch axis");
                let perm: Vec<usize> = perm[1..].iter().map(|p| p - 1).collect();
                let shape = perm.iter().map(|&p| s[p]).collect();
                frozen_op(FrozenOp::Transpose { perm }, x, shape)
            }
            OpType::Pad => self.pad(
                &attrs,
                need_x()?,
                cst(1, "pads")?,
                cst(2, "constant_value")?,
                cst(3, "axes")?,
            )?,
            OpType::Softmax => {
                let x = need_x()?;
                let rank = self.shape(x).len() + 1;
                let default = if self.opset >= 13 { -1 } else { 1 };
                let axis = tensor::norm_axis(attrs.int("axis", default)?, rank)?;
                ensure!(
                    axis == rank - 1,
                    "Softmax over axis {axis} of a rank-{rank} tensor; only the last axis is supported"
                );
                frozen_op(FrozenOp::Softmax, x, self.shape(x).to_vec())
            }
            OpType::Concat => self.concat(&attrs, &inputs)?,
            OpType::Slice => {
                let params = [
                    cst(1, "starts")?,
                    cst(2, "ends")?,
                    cst(3, "axes")?,
                    cst(4, "steps")?,
                ];
                self.slice(origin, out, &attrs, need_x()?, params)?
            }
            OpType::Split => {
                return self.split(node, origin, &attrs, need_x()?, cst(1, "split")?);
            }
            OpType::ConvTranspose => {
                let (w, b) = (need(1, "the weight")?, cst(2, "the bias")?);
                return self.conv_transpose(node, origin, out, need_x()?, w, b);
            }
            ref other => bail!("{} is not supported on activations", other.as_str()),
        };
        if let Some(x) = no_op_reshape(&imported, &self.values) {
            // A reshape to the shape it already has (Identity, inference Dropout, or tf2onnx's
            // NHWC<->NCHW Transposes at 1x1 spatial size, which its optimizer rewrites as
            // `Reshape [-1, C, 1, 1]`) is not a node: as one it would sit between a Conv and its
            // BatchNorm and keep the BN from folding into the Conv.
            if self.readers.get(out) != Some(&1) {
                // A MatMul's bias may only come from the one reader of its output.
                self.open_matmul.remove(&x);
            }
            self.env.insert(out.to_string(), Val::Act(x));
            return Ok(());
        }
        self.add_node(origin, out, imported)?;
        Ok(())
    }

    /// Adds the node and its output value; returns the value id.
    fn add_node(&mut self, origin: &Origin, out: &str, l: ImportedOp) -> Result<ValueId> {
        ensure!(
            !l.shape.is_empty(),
            "the result is a scalar per sample; icefold needs at least one per-sample axis"
        );
        ensure!(
            !l.shape.contains(&0),
            "the result has the zero-size shape {:?}",
            l.shape
        );
        tensor::element_count(&l.shape, MAX_ACTIVATION_ELEMENTS)?;
        let id = self.values.len();
        self.values.push(Value {
            name: out.to_string(),
            shape: l.shape,
        });
        self.nodes.push(Node {
            origin: origin.clone(),
            op: l.op,
            inputs: l.inputs,
            output: id,
        });
        self.env.insert(out.to_string(), Val::Act(id));
        Ok(id)
    }

    fn activation(&self, x: ValueId, a: Activation) -> ImportedOp {
        frozen_op(FrozenOp::Activation(a), x, self.shape(x).to_vec())
    }

    fn conv(
        &self,
        attrs: &Attrs<'_, '_>,
        x: ValueId,
        w: &Const,
        b: Option<&Const>,
    ) -> Result<ImportedOp> {
        let s = self.shape(x);
        let (spatial, m, cg, kernel) = conv_weight_shape("Conv", "convolution", s, w)?;
        let group = attrs.int("group", 1)?;
        ensure!(
            (1..=MAX_ATTR_SIZE).contains(&group),
            "group {group} must be at least 1"
        );
        let group = group as usize;
        let c = s[0];
        ensure!(
            c % group == 0 && cg * group == c,
            "the weight has shape {:?} (in_channels/group = {cg}) with group {group}, but the input has {c} \
             channels",
            w.shape
        );
        ensure!(
            m % group == 0,
            "{m} output channels are not divisible by group {group}"
        );
        kernel_shape_matches(attrs, &kernel)?;
        let window = Window::from_attrs(attrs, kernel.clone())?;
        let geo = window.geometry(&s[1..])?;
        let bias = conv_bias(b, m)?;
        let data = to_f32(&real_values(w, "the weight")?, "the weight")?;
        let (weight, strides, pads, dilations, shape) = if spatial == 2 {
            (
                Tensor::new(w.shape.clone(), data),
                [window.strides[0], window.strides[1]],
                [geo[0].before, geo[1].before, geo[0].after, geo[1].after],
                [window.dilations[0], window.dilations[1]],
                vec![m, geo[0].out, geo[1].out],
            )
        } else {
            (
                Tensor::new(vec![m, cg, 1, kernel[0]], data),
                [1, window.strides[0]],
                [0, geo[0].before, 0, geo[0].after],
                [1, window.dilations[0]],
                vec![m, geo[0].out],
            )
        };
        let conv = Conv {
            weight,
            bias,
            strides,
            pads,
            dilations,
            group,
            pad_values: None,
            spatial_rank: spatial,
        };
        Ok(frozen_op(FrozenOp::Conv(conv), x, shape))
    }

    fn batch_norm(&self, attrs: &Attrs<'_, '_>, x: ValueId, p: [&Const; 4]) -> Result<ImportedOp> {
        let s = self.shape(x);
        let c = s[0];
        let names = [
            "scale (gamma)",
            "bias (beta)",
            "running mean",
            "running variance",
        ];
        let mut v = Vec::with_capacity(4);
        for (t, name) in p.iter().zip(names) {
            ensure!(
                t.len() == c,
                "{name} has {} values, but the input {s:?} has {c} channels",
                t.len()
            );
            v.push(to_f32(&real_values(t, name)?, name)?);
        }
        if let Some(i) = v[3].iter().position(|&var| var < 0.0) {
            bail!(
                "running variance is negative ({}) at channel {i}; the statistics are corrupt",
                v[3][i]
            );
        }
        let epsilon = attrs.float("epsilon", 1e-5)?;
        ensure!(
            epsilon.is_finite() && epsilon >= 0.0,
            "epsilon {epsilon} must be a finite, non-negative number"
        );
        let var = v.pop().unwrap_or_default();
        let mean = v.pop().unwrap_or_default();
        let beta = v.pop().unwrap_or_default();
        let gamma = v.pop().unwrap_or_default();
        Ok(ImportedOp {
            op: Op::BatchNorm(BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            }),
            inputs: vec![x],
            shape: s.to_vec(),
        })
    }

    fn gemm(
        &self,
        attrs: &Attrs<'_, '_>,
        x: ValueId,
        b: &Const,
        c: Option<&Const>,
    ) -> Result<ImportedOp> {
        let s = self.shape(x);
        ensure!(
            s.len() == 1,
            "Gemm needs a [batch, features] input, got {s:?} per sample (add a Flatten first)"
        );
        ensure!(
            attrs.int("transA", 0)? == 0,
            "transA=1 is not supported (the input must be [batch, features])"
        );
        let trans_b = attrs.int("transB", 0)? != 0;
        let (alpha, beta) = (
            attrs.float("alpha", 1.0)? as f64,
            attrs.float("beta", 1.0)? as f64,
        );
        ensure!(
            b.shape.len() == 2,
            "B must be a matrix, got shape {:?}",
            b.shape
        );
        let (k, m) = if trans_b {
            (b.shape[1], b.shape[0])
        } else {
            (b.shape[0], b.shape[1])
        };
        ensure!(
            k == s[0],
            "B has shape {:?} (transB={}), which needs {k} input features, but the input has {}",
            b.shape,
            trans_b as u8,
            s[0]
        );
        let bv = real_values(b, "B (the weight)")?;
        let weight: Vec<f64> = (0..m * k)
            .map(|i| {
                let (o, f) = (i / k, i % k);
                alpha
                    * if trans_b {
                        bv[o * k + f]
                    } else {
                        bv[f * m + o]
                    }
            })
            .collect();
        let bias = match c {
            None => vec![0.0; m],
            Some(c) => {
                let ok = c.len() == 1
                    || (c.len() == m && c.shape.last() == Some(&m) && c.shape.len() <= 2);
                ensure!(
                    ok,
                    "C has shape {:?}; expected a scalar, [{m}] or [1, {m}]",
                    c.shape
                );
                let cv = real_values(c, "C (the bias)")?;
                to_f32(
                    &(0..m)
                        .map(|o| beta * cv[if cv.len() == 1 { 0 } else { o }])
                        .collect::<Vec<_>>(),
                    "C (the bias)",
                )?
            }
        };
        let weight = Tensor::new(vec![m, k], to_f32(&weight, "B (the weight)")?);
        Ok(frozen_op(
            FrozenOp::Dense(Dense { weight, bias }),
            x,
            vec![m],
        ))
    }

    fn matmul(&self, x: ValueId, b: &Const) -> Result<ImportedOp> {
        let s = self.shape(x);
        ensure!(
            b.shape.len() == 2,
            "MatMul with a constant of shape {:?} is not supported (expected [in, out])",
            b.shape
        );
        let (k, m) = (b.shape[0], b.shape[1]);
        let (last, lead) = s.split_last().ok_or_else(|| anyhow!("empty input shape"))?;
        ensure!(
            *last == k,
            "B has shape {:?}, which needs {k} input features, but the input {s:?} ends in {last}",
            b.shape
        );
        ensure!(
            lead.iter().all(|&d| d == 1),
            "MatMul over the last axis of {s:?} (several rows per sample) is not supported; only [batch, features] \
             inputs (or leading per-sample axes of size 1)"
        );
        let bv = real_values(b, "B (the weight)")?;
        let weight: Vec<f64> = (0..m * k).map(|i| bv[(i % k) * m + i / k]).collect();
        let weight = Tensor::new(vec![m, k], to_f32(&weight, "B (the weight)")?);
        let mut shape = lead.to_vec();
        shape.push(m);
        Ok(frozen_op(
            FrozenOp::Dense(Dense {
                weight,
                bias: vec![0.0; m],
            }),
            x,
            shape,
        ))
    }

    /// MatMul followed by Add of a bias: the Add becomes the Dense node's bias.
    fn fuse_bias(&mut self, a: ValueId, c: &Const, out: &str) -> Result<bool> {
        let Some(&n) = self.open_matmul.get(&a) else {
            return Ok(false);
        };
        let Op::Frozen(FrozenOp::Dense(dense)) = &mut self.nodes[n].op else {
            return Ok(false);
        };
        let m = dense.bias.len();
        let shape_ok = c.len() == m
            && c.shape.last() == Some(&m)
            && c.shape.len() <= self.values[a].shape.len() + 1;
        if !shape_ok {
            return Ok(false);
        }
        dense.bias = to_f32(&real_values(c, "the bias")?, "the bias")?;
        self.open_matmul.remove(&a);
        self.values[a].name = out.to_string();
        self.env.insert(out.to_string(), Val::Act(a));
        Ok(true)
    }

    /// Activation and constant under Add/Sub/Mul/Div, as a per-channel `Affine`.
    fn affine(&self, op: &OpType<'_>, x: ValueId, c: &Const, x_first: bool) -> Result<ImportedOp> {
        let s = self.shape(x);
        let v = per_channel(c, s)?;
        finite(&v, "the constant operand")?;
        let n = v.len();
        let (scale, shift) = match (op, x_first) {
            (OpType::Add, _) => (vec![1.0; n], v),
            (OpType::Sub, true) => (vec![1.0; n], v.iter().map(|c| -c).collect()),
            (OpType::Sub, false) => (vec![-1.0; n], v),
            (OpType::Mul, _) => (v, vec![0.0; n]),
            (OpType::Div, true) => {
                ensure!(
                    v.iter().all(|&c| c != 0.0),
                    "division by a constant that contains 0"
                );
                (v.iter().map(|c| 1.0 / c).collect(), vec![0.0; n])
            }
            (OpType::Div, false) => {
                bail!("constant / activation is not supported (not an affine map)")
            }
            (other, _) => bail!("{} is not an affine op", other.as_str()),
        };
        Ok(frozen_op(
            FrozenOp::Affine(crate::ir::graph::Affine { scale, shift }),
            x,
            s.to_vec(),
        ))
    }

    fn pool(&self, node: &OnnxNode<'_>, attrs: &Attrs<'_, '_>, x: ValueId) -> Result<ImportedOp> {
        let s = self.shape(x);
        let spatial = s.len().saturating_sub(1);
        ensure!(
            spatial == 1 || spatial == 2,
            "pooling needs a [C, L] or [C, H, W] input per sample, got {s:?}"
        );
        let is_max = node.op_type == OpType::MaxPool;
        if is_max {
            ensure!(
                node.output.iter().filter(|n| !n.is_empty()).count() == 1,
                "MaxPool with an indices output is not supported"
            );
        }
        ensure!(
            attrs.ints("kernel_shape")?.is_some(),
            "kernel_shape is missing"
        );
        let kernel = attrs.sizes("kernel_shape", spatial, 1, 1)?;
        let window = Window::from_attrs(attrs, kernel)?;
        ensure!(
            window.dilations.iter().all(|&d| d == 1),
            "pool dilations {:?} are not supported (only 1)",
            window.dilations
        );
        let geo = window.geometry(&s[1..])?;
        let own_pads = geo.iter().any(|a| a.before > 0 || a.after > a.ceil_extra);
        let kind = if is_max {
            PoolKind::Max
        } else {
            let mut count_include_pad = attrs.int("count_include_pad", 0)? != 0;
            if count_include_pad && geo.iter().any(|a| a.ceil_extra > 0) {
                // ceil_mode windows that hang past the padded input never count the overhang.
                // Without the model's own pads, that is exactly count_include_pad=0.
                ensure!(
                    !own_pads,
                    "AveragePool with ceil_mode=1, count_include_pad=1 and padding is not supported; \
                     export with ceil_mode=False or without padding"
                );
                count_include_pad = false;
            }
            PoolKind::Average { count_include_pad }
        };
        let (kernel, strides, pads, shape) = if spatial == 2 {
            (
                [window.kernel[0], window.kernel[1]],
                [window.strides[0], window.strides[1]],
                [geo[0].before, geo[1].before, geo[0].after, geo[1].after],
                vec![s[0], geo[0].out, geo[1].out],
            )
        } else {
            (
                [1, window.kernel[0]],
                [1, window.strides[0]],
                [0, geo[0].before, 0, geo[0].after],
                vec![s[0], geo[0].out],
            )
        };
        Ok(frozen_op(
            FrozenOp::Pool(Pool {
                kind,
                kernel,
                strides,
                pads,
                spatial_rank: spatial,
            }),
            x,
            shape,
        ))
    }

    fn reduce_mean(
        &self,
        attrs: &Attrs<'_, '_>,
        x: ValueId,
        axes: Option<Vec<i64>>,
    ) -> Result<ImportedOp> {
        let s = self.shape(x);
        let rank = s.len() + 1;
        ensure!(
            rank >= 3,
            "ReduceMean is supported only over the spatial axes of [C, H, W] or [C, L], got {s:?}"
        );
        let axes = axes.ok_or_else(|| {
            anyhow!("ReduceMean over all axes (including the batch) is not supported")
        })?;
        let mut axes = axes
            .iter()
            .map(|&a| tensor::norm_axis(a, rank))
            .collect::<Result<Vec<_>>>()?;
        axes.sort_unstable();
        axes.dedup();
        ensure!(
            axes == (2..rank).collect::<Vec<_>>(),
            "ReduceMean over axes {axes:?}; only the spatial axes {:?} (global average pooling) are supported",
            (2..rank).collect::<Vec<_>>()
        );
        let shape = if attrs.int("keepdims", 1)? != 0 {
            let mut v = vec![1; s.len()];
            v[0] = s[0];
            v
        } else {
            vec![s[0]]
        };
        Ok(frozen_op(FrozenOp::GlobalAveragePool, x, shape))
    }

    fn reshape(&self, x: ValueId, target: &[i64], allow_zero: bool) -> Result<ImportedOp> {
        let full = with_batch(self.shape(x));
        let mut target = target.to_vec();
        let first = target
            .first_mut()
            .ok_or_else(|| anyhow!("Reshape to a scalar is not supported"))?;
        if Some(*first) == self.fixed_batch {
            *first = 0;
        }
        let (first, target) = (*first, target.as_slice());
        ensure!(
            (-1..=1).contains(&first),
            "Reshape target {target:?} changes the batch axis (its first entry must be 0, 1 or -1)"
        );
        let shape = tensor::reshape_target(&full, target, allow_zero)?;
        ensure!(
            shape[0] == 1,
            "Reshape of {:?} per sample to {target:?} moves data across samples (the first axis must stay the batch)",
            self.shape(x)
        );
        Ok(frozen_op(FrozenOp::Reshape, x, shape[1..].to_vec()))
    }

    fn pad(
        &self,
        attrs: &Attrs<'_, '_>,
        x: ValueId,
        pads: Option<&Const>,
        value: Option<&Const>,
        axes: Option<&Const>,
    ) -> Result<ImportedOp> {
        let mode = attrs.string("mode")?.unwrap_or_else(|| "constant".into());
        ensure!(
            mode == "constant",
            "Pad mode {mode:?} is not supported (only constant)"
        );
        let s = self.shape(x);
        let rank = s.len() + 1;
        let given = match pads {
            Some(p) => p.to_i64("pads")?,
            None => attrs
                .ints("pads")?
                .ok_or_else(|| anyhow!("pads are missing"))?,
        };
        let axes: Vec<usize> = match axes {
            Some(a) => a
                .to_i64("axes")?
                .iter()
                .map(|&a| tensor::norm_axis(a, rank))
                .collect::<Result<_>>()?,
            None => (0..rank).collect(),
        };
        let n = axes.len();
        ensure!(
            given.len() == 2 * n,
            "pads {given:?} must have {} entries",
            2 * n
        );
        let mut full = vec![0usize; 2 * rank];
        for (i, &a) in axes.iter().enumerate() {
            for (j, &p) in [given[i], given[n + i]].iter().enumerate() {
                ensure!(
                    p >= 0,
                    "negative pads {given:?} (cropping) are not supported"
                );
                ensure!(p <= MAX_ATTR_SIZE, "pads {given:?} are absurdly large");
                full[j * rank + a] = p as usize;
            }
        }
        ensure!(
            full[0] == 0 && full[rank] == 0,
            "Pad must not pad the batch axis (pads {given:?})"
        );
        let value = match value {
            Some(v) => v.scalar_f64("constant_value")? as f32,
            None => attrs.float("value", 0.0)?,
        };
        ensure!(!value.is_nan(), "the pad value is NaN");
        let pads: Vec<usize> = full[1..rank]
            .iter()
            .chain(&full[rank + 1..])
            .copied()
            .collect();
        let shape = (0..s.len())
            .map(|k| s[k] + pads[k] + pads[s.len() + k])
            .collect();
        let interior = vec![0; s.len()];
        Ok(frozen_op(
            FrozenOp::Pad {
                pads,
                interior,
                value,
            },
            x,
            shape,
        ))
    }
}

/// The spatial rank (1 or 2) of a convolution-like node `op` (`what` in messages) over a
/// per-sample input of shape `s`, and its weight's first two dimensions and kernel, checked:
/// rank `spatial + 2`, nothing empty.
fn conv_weight_shape(
    op: &str,
    what: &str,
    s: &[usize],
    w: &Const,
) -> Result<(usize, usize, usize, Vec<usize>)> {
    let spatial = s.len().saturating_sub(1);
    ensure!(
        spatial == 1 || spatial == 2,
        "{op} needs a [C, L] or [C, H, W] input per sample, got {s:?} (3-D {what} is not supported)"
    );
    ensure!(
        w.shape.len() == spatial + 2,
        "the weight has shape {:?}, expected rank {} for a {spatial}-D {what}",
        w.shape,
        spatial + 2
    );
    let (a, b, kernel) = (w.shape[0], w.shape[1], w.shape[2..].to_vec());
    ensure!(
        a > 0 && b > 0 && kernel.iter().all(|&k| k > 0),
        "the weight has the empty shape {:?}",
        w.shape
    );
    Ok((spatial, a, b, kernel))
}

/// The `kernel_shape` attribute, when given, must be the weight's.
fn kernel_shape_matches(attrs: &Attrs<'_, '_>, kernel: &[usize]) -> Result<()> {
    if let Some(k) = attrs.ints("kernel_shape")? {
        ensure!(
            k.iter()
                .map(|&v| v as i128)
                .eq(kernel.iter().map(|&v| v as i128)),
            "kernel_shape {k:?} does not match the weight's {kernel:?}"
        );
    }
    Ok(())
}

/// A convolution's bias for `m` output channels (zeros when the node has none).
fn conv_bias(b: Option<&Const>, m: usize) -> Result<Vec<f32>> {
    match b {
        None => Ok(vec![0.0; m]),
        Some(b) => {
            ensure!(
                b.len() == m,
                "the bias has {} values for {m} output channels",
                b.len()
            );
            to_f32(&real_values(b, "the bias")?, "the bias")
        }
    }
}

/// The input of a reshape that keeps its input's per-sample shape (a no-op), or `None`. The graph
/// input itself is never aliased, so that a graph always has at least one node after it.
fn no_op_reshape(l: &ImportedOp, values: &[Value]) -> Option<ValueId> {
    match (&l.op, l.inputs.as_slice()) {
        (Op::Frozen(FrozenOp::Reshape), &[x]) if x != 0 && values[x].shape == l.shape => Some(x),
        _ => None,
    }
}

/// The full ONNX shape of a per-sample shape, with the batch evaluated as 1.
fn with_batch(s: &[usize]) -> Vec<usize> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.push(1);
    v.extend_from_slice(s);
    v
}

/// The values of a constant that broadcasts against an activation of per-sample shape `s` as a
/// scalar (one value) or per channel (axis 0, `C` values).
fn per_channel(c: &Const, s: &[usize]) -> Result<Vec<f64>> {
    let unsupported = || {
        anyhow!(
            "a constant of shape {:?} broadcasts over more than the channel axis of the activation {s:?} \
             (per sample); only scalars and per-channel constants ([C, 1, 1] for [C, H, W], [C] for a vector) \
             are supported",
            c.shape
        )
    };
    let rank = s.len() + 1;
    ensure!(
        c.shape.len() <= rank,
        "a constant of shape {:?} would add axes to the activation {s:?}",
        c.shape
    );
    let mut padded = vec![1; rank - c.shape.len()];
    padded.extend_from_slice(&c.shape);
    ensure!(
        padded[0] == 1,
        "a constant of shape {:?} would broadcast over the batch",
        c.shape
    );
    let p = &padded[1..];
    if p.iter().all(|&d| d == 1) {
        return Ok(vec![c.to_f64().first().copied().ok_or_else(unsupported)?]);
    }
    if p[0] == s[0] && p[1..].iter().all(|&d| d == 1) {
        return Ok(c.to_f64());
    }
    Err(unsupported())
}
