//! The classifier: three Conv1d → BatchNorm → ReLU blocks (the first two followed by a max pool
//! of 2), a global average pool and one dense layer, in candle.
//!
//! BatchNorm is candle-nn's, whose training-mode update matches PyTorch (momentum 0.1, unbiased
//! running variance), so the running statistics exported to ONNX are what a PyTorch run would
//! have stored. Parameters are initialised from our own seeded generator (candle's CPU generator
//! cannot be seeded), which makes a run a function of the seed.

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{BatchNorm, Module, ModuleT};

use super::rng::Rng;

/// BatchNorm epsilon (PyTorch's default; exported as the ONNX `epsilon` attribute).
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm momentum in PyTorch's convention (weight of the new batch in the running average).
pub const BN_MOMENTUM: f64 = 0.1;

/// Layer sizes of the classifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetShape {
    /// Input channels (3 for a 3-axis accelerometer).
    pub in_channels: usize,
    /// Input length (samples per window).
    pub length: usize,
    /// Output classes.
    pub classes: usize,
    /// Output channels of the three conv blocks.
    pub widths: [usize; 3],
    /// Kernel sizes of the three conv blocks (odd: "same" padding of `k / 2`).
    pub kernels: [usize; 3],
}

impl NetShape {
    /// The default layer sizes for samples of `[in_channels, length]` and `classes` classes.
    pub fn new(in_channels: usize, length: usize, classes: usize) -> Self {
        NetShape {
            in_channels,
            length,
            classes,
            widths: [16, 32, 32],
            kernels: [5, 5, 3],
        }
    }

    /// Whether block `i` ends with a max pool of 2.
    pub fn pools_after(i: usize) -> bool {
        i < 2
    }
}

/// Which statistics the BatchNorm layers normalize with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Eval mode: the running statistics collected while training (correct inference).
    Running,
    /// Training mode at inference: each batch of `batch_size` samples is normalized with its
    /// own statistics (the seed's bug; a tiny batch gives results that depend on its company).
    /// The model's running statistics are not touched.
    BatchStats {
        /// Samples per inference batch.
        batch_size: usize,
    },
    /// Eval mode with never-updated statistics: running mean 0, running variance 1 (the seed's
    /// other bug: TensorFlow's update ops never ran), trained gamma and beta.
    NeverUpdated,
}

impl std::fmt::Display for BnMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BnMode::Running => write!(f, "running statistics (eval mode)"),
            BnMode::BatchStats { batch_size } => {
                write!(
                    f,
                    "batch statistics, batches of {batch_size} (training mode)"
                )
            }
            BnMode::NeverUpdated => write!(f, "never-updated statistics (mean 0, var 1)"),
        }
    }
}

/// One Conv1d (no bias: BN's beta is the bias) → BatchNorm → ReLU block.
struct Block {
    weight: Var,
    gamma: Var,
    beta: Var,
    bn: BatchNorm,
    padding: usize,
    pool: bool,
}

/// The trainable classifier.
pub struct Net {
    shape: NetShape,
    blocks: Vec<Block>,
    fc_weight: Var,
    fc_bias: Var,
    device: Device,
}

/// Plain copies of every parameter and BN statistic, for export and inspection.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockParams {
    /// Conv weight `[out, in, kernel]`, row-major.
    pub weight: Vec<f32>,
    /// Output channels.
    pub out_channels: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Followed by a max pool of 2.
    pub pool: bool,
    /// BN scale.
    pub gamma: Vec<f32>,
    /// BN shift.
    pub beta: Vec<f32>,
    /// BN running mean.
    pub running_mean: Vec<f32>,
    /// BN running variance (unbiased, as PyTorch stores it).
    pub running_var: Vec<f32>,
    /// BN epsilon.
    pub eps: f64,
}

/// All parameters of a [`Net`].
#[derive(Clone, Debug, PartialEq)]
pub struct NetParams {
    /// Layer sizes.
    pub shape: NetShape,
    /// The conv blocks in order.
    pub blocks: Vec<BlockParams>,
    /// Dense weight `[classes, widths[2]]`.
    pub fc_weight: Vec<f32>,
    /// Dense bias `[classes]`.
    pub fc_bias: Vec<f32>,
}

/// Stride-1 convolution with `padding` zeros on each side, as im2col and one matrix product.
///
/// Written with elementary ops on purpose: on the CPU, candle 0.11.1's own `conv1d` backward
/// gives kernel gradients that disagree with finite differences (off by up to 20x in this
/// network; see the gradient test in `train::tests`), while the gradients of
/// pad/narrow/stack/matmul are right.
fn conv1d_same(x: &Tensor, w: &Tensor, padding: usize) -> Result<Tensor> {
    let (n, cin, len) = x.dims3()?;
    let (cout, wcin, k) = w.dims3()?;
    ensure!(
        cin == wcin,
        "conv input has {cin} channels, the kernel expects {wcin}"
    );
    let out_len = len + 2 * padding + 1 - k;
    let xp = x.pad_with_zeros(2, padding, padding)?;
    let taps = (0..k)
        .map(|j| xp.narrow(2, j, out_len))
        .collect::<candle_core::Result<Vec<_>>>()?;
    // [n, cin, k, out_len] → [n, cin * k, out_len], matching the weight's [cout, cin * k] order.
    let cols = Tensor::stack(&taps, 2)?.reshape((n, cin * k, out_len))?;
    Ok(w.reshape((cout, cin * k))?.broadcast_matmul(&cols)?)
}

/// Max pool of 2 with stride 2 over the last axis (a trailing odd element is dropped, as ONNX
/// MaxPool does with `ceil_mode = 0`). Not candle's `max_pool2d`: in 0.11.1 its backward pass
/// scales the gradient by 1/2 per pool (measured by the gradient test), which starved the
/// early layers and left the model at ~55 % accuracy; `max` over a reshaped axis is correct.
fn max_pool_2(x: &Tensor) -> Result<Tensor> {
    let (n, c, len) = x.dims3()?;
    let half = len / 2;
    Ok(x.narrow(2, 0, 2 * half)?.reshape((n, c, half, 2))?.max(3)?)
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

impl Net {
    /// A freshly initialised network: He-normal conv weights (ReLU follows every conv), BN
    /// gamma 1, beta 0, running mean 0, running variance 1 (what PyTorch starts from), and a
    /// dense layer uniform in `±1/sqrt(fan_in)` (PyTorch's default range).
    pub fn new(shape: NetShape, rng: &mut Rng) -> Result<Net> {
        ensure!(
            shape.in_channels >= 1 && shape.classes >= 2 && shape.length >= 4,
            "cannot build a classifier for {shape:?}: needs >= 1 channel, >= 2 classes, length >= 4"
        );
        let device = Device::Cpu;
        let mut blocks = Vec::new();
        let mut cin = shape.in_channels;
        for (i, (&cout, &k)) in shape.widths.iter().zip(&shape.kernels).enumerate() {
            let fan_in = (cin * k) as f64;
            let std = (2.0 / fan_in).sqrt();
            let w: Vec<f32> = (0..cout * cin * k)
                .map(|_| (rng.normal() * std) as f32)
                .collect();
            let weight = Var::from_tensor(&Tensor::from_vec(w, (cout, cin, k), &device)?)?;
            let gamma = Var::from_tensor(&Tensor::ones(cout, DType::F32, &device)?)?;
            let beta = Var::from_tensor(&Tensor::zeros(cout, DType::F32, &device)?)?;
            let bn = BatchNorm::new_with_momentum(
                cout,
                Tensor::zeros(cout, DType::F32, &device)?,
                Tensor::ones(cout, DType::F32, &device)?,
                gamma.as_tensor().clone(),
                beta.as_tensor().clone(),
                BN_EPS,
                BN_MOMENTUM,
            )?;
            blocks.push(Block {
                weight,
                gamma,
                beta,
                bn,
                padding: k / 2,
                pool: NetShape::pools_after(i),
            });
            cin = cout;
        }
        let bound = 1.0 / (cin as f64).sqrt();
        let fc_w: Vec<f32> = (0..shape.classes * cin)
            .map(|_| rng.range(-bound, bound) as f32)
            .collect();
        let fc_b: Vec<f32> = (0..shape.classes)
            .map(|_| rng.range(-bound, bound) as f32)
            .collect();
        let fc_weight = Var::from_tensor(&Tensor::from_vec(fc_w, (shape.classes, cin), &device)?)?;
        let fc_bias = Var::from_tensor(&Tensor::from_vec(fc_b, shape.classes, &device)?)?;
        Ok(Net {
            shape,
            blocks,
            fc_weight,
            fc_bias,
            device,
        })
    }

    /// Layer sizes.
    pub fn shape(&self) -> &NetShape {
        &self.shape
    }

    /// The variables the optimizer updates (running statistics are not among them).
    pub fn trainable(&self) -> Vec<Var> {
        let mut v = Vec::new();
        for b in &self.blocks {
            v.extend([b.weight.clone(), b.gamma.clone(), b.beta.clone()]);
        }
        v.extend([self.fc_weight.clone(), self.fc_bias.clone()]);
        v
    }

    /// A batch `[n, channels, length]` as a tensor.
    pub fn input(&self, data: &[f32], n: usize) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            data,
            (n, self.shape.in_channels, self.shape.length),
            &self.device,
        )?)
    }

    /// A BN layer with the trained gamma and beta and the given statistics (fresh variables, so
    /// running it in training mode updates only this copy).
    fn bn_copy(b: &Block, mean: Tensor, var: Tensor) -> Result<BatchNorm> {
        let c = b.gamma.dim(0)?;
        Ok(BatchNorm::new_with_momentum(
            c,
            mean,
            var,
            b.gamma.as_tensor().clone(),
            b.beta.as_tensor().clone(),
            BN_EPS,
            BN_MOMENTUM,
        )?)
    }

    /// Logits `[n, classes]` for `x` with BN as in training (`train`: batch statistics, running
    /// statistics updated) or in eval mode with the running statistics.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let bns: Vec<&BatchNorm> = self.blocks.iter().map(|b| &b.bn).collect();
        self.forward_with(x, &bns, train)
    }

    /// Logits for `x` (a batch) with BN in `mode`. For [`BnMode::BatchStats`] the whole of `x`
    /// is one batch: the caller chooses the batch size by what it passes.
    pub fn forward_mode(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        match mode {
            BnMode::Running => self.forward(x, false),
            BnMode::BatchStats { .. } => {
                let copies = self
                    .blocks
                    .iter()
                    .map(|b| {
                        Self::bn_copy(b, b.bn.running_mean().copy()?, b.bn.running_var().copy()?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.forward_with(x, &copies.iter().collect::<Vec<_>>(), true)
            }
            BnMode::NeverUpdated => {
                let copies = self
                    .blocks
                    .iter()
                    .map(|b| {
                        let c = b.gamma.dim(0)?;
                        Self::bn_copy(
                            b,
                            Tensor::zeros(c, DType::F32, &self.device)?,
                            Tensor::ones(c, DType::F32, &self.device)?,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.forward_with(x, &copies.iter().collect::<Vec<_>>(), false)
            }
        }
    }

    fn forward_with(&self, x: &Tensor, bns: &[&BatchNorm], train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for (b, bn) in self.blocks.iter().zip(bns) {
            h = conv1d_same(&h, b.weight.as_tensor(), b.padding)?;
            h = bn.forward_t(&h, train)?.relu()?;
            if b.pool {
                h = max_pool_2(&h)?;
            }
        }
        let pooled = h.mean(2)?;
        let fc = candle_nn::Linear::new(
            self.fc_weight.as_tensor().clone(),
            Some(self.fc_bias.as_tensor().clone()),
        );
        Ok(fc.forward(&pooled)?)
    }

    /// Plain copies of every parameter and statistic.
    pub fn params(&self) -> Result<NetParams> {
        let mut blocks = Vec::new();
        let mut cin = self.shape.in_channels;
        for (b, &k) in self.blocks.iter().zip(&self.shape.kernels) {
            let cout = b.gamma.dim(0)?;
            blocks.push(BlockParams {
                weight: to_vec(b.weight.as_tensor())?,
                out_channels: cout,
                in_channels: cin,
                kernel: k,
                padding: b.padding,
                pool: b.pool,
                gamma: to_vec(b.gamma.as_tensor())?,
                beta: to_vec(b.beta.as_tensor())?,
                running_mean: to_vec(b.bn.running_mean())?,
                running_var: to_vec(b.bn.running_var())?,
                eps: b.bn.eps(),
            });
            cin = cout;
        }
        Ok(NetParams {
            shape: self.shape.clone(),
            blocks,
            fc_weight: to_vec(self.fc_weight.as_tensor())?,
            fc_bias: to_vec(self.fc_bias.as_tensor()).context("reading the dense layer's bias")?,
        })
    }
}
