//! The host IR: what import produces, what folding consumes.
//!
//! Shapes are the ONNX model's own logical shapes for one sample (the batch dimension removed):
//! `[C, H, W]` for 2-D feature maps, `[C, L]` for 1-D ones, `[F]` for vectors. Constants are
//! resolved at import; only activation tensors are values here.
//!
//! The graph is generic over its operator set: `Graph<Op>` may hold BatchNorm, `FrozenGraph`
//! (`Graph<FrozenOp>`) cannot, and only a frozen graph can be lowered and serialized. That is
//! the type-level form of "inference can only ever use frozen values".

use std::fmt;

/// Index of a value (activation tensor) in `Graph::values`.
pub type ValueId = usize;

/// An activation tensor of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// ONNX name.
    pub name: String,
    /// Logical shape of one sample.
    pub shape: Vec<usize>,
}

/// Dense f32 tensor with a row-major shape (weights and other constants).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major data, `shape.iter().product()` long.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from a shape and matching data.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Where a node came from, for messages: `node "conv3" (Conv)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// ONNX node name (may be empty in the file; import then makes one up from the position).
    pub name: String,
    /// ONNX op type.
    pub op_type: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node \"{}\" ({})", self.name, self.op_type)
    }
}

/// Convolution, 1-D or 2-D. 1-D convolutions are stored as 2-D with a kernel height of 1
/// (`spatial_rank == 1`), their values keep the logical `[C, L]` shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    /// `[out_c, in_c / group, kernel_h, kernel_w]`.
    pub weight: Tensor,
    /// `[out_c]` (zeros when the ONNX node has no bias).
    pub bias: Vec<f32>,
    /// `[h, w]`.
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// `[h, w]`.
    pub dilations: [usize; 2],
    /// Channel groups.
    pub group: usize,
    /// Border value per input channel; `None` means zeros. Set when a preceding BatchNorm is
    /// folded into this convolution (see `passes::fold_batchnorm`).
    pub pad_values: Option<Vec<f32>>,
    /// 1 for Conv1d, 2 for Conv2d.
    pub spatial_rank: usize,
}

/// Fully connected `y = W x + b` (Gemm, or MatMul followed by Add). The input is read as one
/// vector in its logical (ONNX, row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// `[out_features, in_features]` (Gemm's `transB` already applied).
    pub weight: Tensor,
    /// `[out_features]`.
    pub bias: Vec<f32>,
}

/// Inference-form BatchNormalization over axis 0 of the per-sample shape (ONNX axis 1).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    /// `[C]` (ones when the layer had `affine=False`).
    pub gamma: Vec<f32>,
    /// `[C]` (zeros when the layer had `affine=False`).
    pub beta: Vec<f32>,
    /// Running mean `[C]`.
    pub mean: Vec<f32>,
    /// Running variance `[C]`.
    pub var: Vec<f32>,
    /// The node's epsilon (PyTorch 1e-5, Keras 1e-3).
    pub epsilon: f32,
}

impl BatchNorm {
    /// Per-channel scale and shift in f64: `y = x * s + t`, `s = gamma / sqrt(var + eps)`,
    /// `t = beta - mean * s`. Folding computes from these and rounds once.
    pub fn scale_shift(&self) -> (Vec<f64>, Vec<f64>) {
        let eps = self.epsilon as f64;
        let s: Vec<f64> = self
            .gamma
            .iter()
            .zip(&self.var)
            .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
            .collect();
        let t = self
            .beta
            .iter()
            .zip(&self.mean)
            .zip(&s)
            .map(|((&b, &m), &s)| b as f64 - m as f64 * s)
            .collect();
        (s, t)
    }
}

/// Frozen per-channel `y = x * scale[c] + shift[c]` over axis 0 of the per-sample shape.
/// Vectors of length 1 broadcast over all channels. Kept in f64 so that folding it rounds once.
#[derive(Clone, Debug, PartialEq)]
pub struct Affine {
    /// Per-channel multiplier.
    pub scale: Vec<f64>,
    /// Per-channel offset.
    pub shift: Vec<f64>,
}

/// Element-wise activation functions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, lo), hi)`.
    Clip {
        /// Lower bound (`-inf` when absent).
        lo: f32,
        /// Upper bound (`+inf` when absent).
        hi: f32,
    },
    /// Leaky ReLU.
    LeakyRelu {
        /// Negative slope.
        alpha: f32,
    },
    /// Logistic sigmoid.
    Sigmoid,
    /// `min(max(alpha * x + beta, 0), 1)`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * min(max(x / 6 + 1/2, 0), 1)`.
    HardSwish,
    /// Hyperbolic tangent.
    Tanh,
    /// `x * sigmoid(x)` (SiLU / Swish; imported from `Mul(x, Sigmoid(x))`).
    Silu,
}

impl Activation {
    /// The function in f64: the definition the interpreter, the int8 tables and the tests use.
    pub fn apply_f64(self, v: f64) -> f64 {
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let hard_sigmoid = |v: f64, alpha: f64, beta: f64| (alpha * v + beta).clamp(0.0, 1.0);
        match self {
            Activation::Relu => v.max(0.0),
            Activation::Clip { lo, hi } => v.max(lo as f64).min(hi as f64),
            Activation::LeakyRelu { alpha } => {
                if v >= 0.0 {
                    v
                } else {
                    alpha as f64 * v
                }
            }
            Activation::Sigmoid => sigmoid(v),
            Activation::HardSigmoid { alpha, beta } => hard_sigmoid(v, alpha as f64, beta as f64),
            Activation::HardSwish => v * hard_sigmoid(v, 1.0 / 6.0, 0.5),
            Activation::Tanh => v.tanh(),
            Activation::Silu => v * sigmoid(v),
        }
    }
}

/// Pooling kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Max pooling.
    Max,
    /// Average pooling.
    Average {
        /// ONNX `count_include_pad`.
        count_include_pad: bool,
    },
}

/// MaxPool / AveragePool (1-D pools have a kernel height of 1, like `Conv`).
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Reduction.
    pub kind: PoolKind,
    /// `[h, w]`.
    pub kernel: [usize; 2],
    /// `[h, w]`.
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// 1 or 2.
    pub spatial_rank: usize,
}

/// Operators of a frozen graph: constants only, nothing reads or updates statistics.
#[derive(Clone, Debug, PartialEq)]
pub enum FrozenOp {
    /// Convolution (input 0).
    Conv(Conv),
    /// Fully connected (input 0).
    Dense(Dense),
    /// Frozen per-channel scale and shift (input 0).
    Affine(Affine),
    /// Activation (input 0).
    Activation(Activation),
    /// Max / average pooling (input 0).
    Pool(Pool),
    /// Mean over all spatial positions: GlobalAveragePool, or ReduceMean over the spatial axes
    /// (the output shape records whether the reduced axes were kept).
    GlobalAveragePool,
    /// Element-wise sum of inputs 0 and 1 (same shape).
    Add,
    /// PReLU with one slope per channel (axis 0): `x` if `x >= 0`, else `slope[c] * x`.
    PRelu {
        /// `[C]` slopes.
        slope: Vec<f32>,
    },
    /// Product of inputs 0 and 1 (gating): input 1 has input 0's shape, or one value per channel
    /// (`[C, 1, 1]` for `[C, H, W]`, `[C, 1]` for `[C, L]`), repeated over the other axes.
    Mul,
    /// Row-major reinterpretation to the output value's shape (Flatten, Reshape, Squeeze,
    /// Unsqueeze, Identity).
    Reshape,
    /// Axis permutation of the per-sample dimensions (ONNX perm without the batch axis).
    Transpose {
        /// `output dim k = input dim perm[k]`.
        perm: Vec<usize>,
    },
    /// Constant padding of the per-sample dimensions: `pads[k]` before and `pads[rank + k]` after
    /// dimension `k` (ONNX order without the batch axis), and `interior[k]` fill elements between
    /// neighbouring elements of dimension `k` (zero insertion: a ConvTranspose's stride; ONNX Pad
    /// has none).
    Pad {
        /// Before/after amounts.
        pads: Vec<usize>,
        /// Fill elements between neighbours, per dimension (all zero for ONNX Pad).
        interior: Vec<usize>,
        /// Fill value.
        value: f32,
    },
    /// Softmax over the last per-sample axis.
    Softmax,
    /// The inputs (two or more, equal shapes but along `axis`) joined along per-sample axis
    /// `axis`, in input order (ONNX Concat of activations).
    Concat {
        /// Per-sample axis (ONNX axis - 1).
        axis: usize,
    },
    /// Indices `start, start + step, ..` of per-sample axis `axis`, as many as the output's dim
    /// there (ONNX Slice with a positive step, one output of Split).
    Slice {
        /// Per-sample axis.
        axis: usize,
        /// First index taken.
        start: usize,
        /// Distance between taken indices (>= 1).
        step: usize,
    },
    /// Output index `i` along per-sample axis `axis` is input index `indices[i]`: a channel
    /// shuffle (`passes::channel_shuffle` makes it from Reshape, Transpose, Reshape).
    Gather {
        /// Per-sample axis.
        axis: usize,
        /// One input index per output index.
        indices: Vec<usize>,
    },
}

/// Operators of an imported graph: the frozen ones plus BatchNormalization.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Anything a frozen graph can hold.
    Frozen(FrozenOp),
    /// Inference-form BatchNormalization (input 0); folding removes it.
    BatchNorm(BatchNorm),
}

/// One operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Node<O> {
    /// ONNX node name and op type, for messages.
    pub origin: Origin,
    /// The operator and its constants.
    pub op: O,
    /// Activation inputs (1, or 2 for `Add`, 2 or more for `Concat`).
    pub inputs: Vec<ValueId>,
    /// The one activation output.
    pub output: ValueId,
}

/// A single-input, single-output graph in topological order.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph<O> {
    /// Every activation tensor.
    pub values: Vec<Value>,
    /// Nodes in execution order: every input is produced by an earlier node or is `input`.
    pub nodes: Vec<Node<O>>,
    /// The graph input.
    pub input: ValueId,
    /// The graph output.
    pub output: ValueId,
    /// ONNX opset of the default domain (for messages).
    pub opset: i64,
}

/// A graph that can still hold BatchNorm.
pub type ImportedGraph = Graph<Op>;
/// A graph with every BatchNorm folded away.
pub type FrozenGraph = Graph<FrozenOp>;

impl<O> Graph<O> {
    /// Indices of the nodes that read `value`.
    pub fn consumers(&self, value: ValueId) -> Vec<usize> {
        consumers_of(&self.nodes, value)
    }

    /// Index of the node that writes `value`, `None` for the graph input.
    pub fn producer(&self, value: ValueId) -> Option<usize> {
        producer_of(&self.nodes, value)
    }
}

/// What a node reads and writes: implemented by [`Node`] and by the working nodes of a pass
/// (which may mark nodes removed before dropping them), so that finding the readers and the
/// writer of a value is written once ([`consumers_of`], [`producer_of`]).
pub trait Wiring {
    /// The activation inputs.
    fn inputs(&self) -> &[ValueId];
    /// The activation output.
    fn output(&self) -> ValueId;
    /// False for a node a pass has removed but not yet dropped; such nodes are skipped.
    fn is_live(&self) -> bool {
        true
    }
}

impl<O> Wiring for Node<O> {
    fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }
    fn output(&self) -> ValueId {
        self.output
    }
}

/// Indices of the live nodes of `nodes` that read `value`.
pub fn consumers_of<N: Wiring>(nodes: &[N], value: ValueId) -> Vec<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.is_live() && n.inputs().contains(&value))
        .map(|(i, _)| i)
        .collect()
}

/// Index of the live node of `nodes` that writes `value`, `None` if none does (the graph input).
pub fn producer_of<N: Wiring>(nodes: &[N], value: ValueId) -> Option<usize> {
    nodes
        .iter()
        .position(|n| n.is_live() && n.output() == value)
}
