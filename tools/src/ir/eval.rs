//! Reference interpreter of the host IR (with and without BatchNorm).
//!
//! This is the definition of what a graph computes, used to check import, folding, quantization
//! and the runtime against each other. It follows ONNX semantics in the IR's logical layout
//! (`[C, H, W]`, `[C, L]`, `[F]`, one sample), accumulates in f64 and stores every value as f32.
//! It is written to be obviously correct, not fast; shapes are checked at every node and a
//! mismatch is an error naming the node, never a panic.

use anyhow::{anyhow, bail, ensure, Result};

use crate::ir::graph::{
    Activation, Affine, BatchNorm, Conv, Dense, FrozenOp, Graph, Op, Pool, PoolKind,
};

/// One input of an operator: a sample's data and its logical shape.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// Row-major data, `shape.iter().product()` long.
    pub data: &'a [f32],
    /// Logical per-sample shape.
    pub shape: &'a [usize],
}

/// An operator the reference interpreter can execute.
pub trait EvalOp {
    /// Computes the output (of logical shape `out_shape`) from `inputs`. Errors say what did not
    /// match; `run` prefixes them with the node.
    fn eval(&self, inputs: &[Operand<'_>], out_shape: &[usize]) -> Result<Vec<f32>>;
}

impl EvalOp for FrozenOp {
    fn eval(&self, inputs: &[Operand<'_>], out_shape: &[usize]) -> Result<Vec<f32>> {
        if let FrozenOp::Concat { axis } = self {
            ensure!(inputs.len() >= 2, "Concat needs at least 2 inputs");
            return super::eval_axis::concat(*axis, inputs, out_shape);
        }
        let arity = if matches!(self, FrozenOp::Add | FrozenOp::Mul) {
            2
        } else {
            1
        };
        ensure!(
            inputs.len() == arity,
            "expected {arity} input(s), the node has {}",
            inputs.len()
        );
        let x = inputs[0];
        match self {
            FrozenOp::Conv(c) => conv(c, x, out_shape),
            FrozenOp::Dense(d) => dense(d, x, out_shape),
            FrozenOp::Affine(a) => affine(a, x, out_shape),
            FrozenOp::Activation(act) => activation(*act, x, out_shape),
            FrozenOp::Pool(p) => pool(p, x, out_shape),
            FrozenOp::GlobalAveragePool => global_average_pool(x, out_shape),
            FrozenOp::Add => add(x, inputs[1], out_shape),
            FrozenOp::Mul => mul(x, inputs[1], out_shape),
            FrozenOp::PRelu { slope } => prelu(slope, x, out_shape),
            FrozenOp::Reshape => {
                ensure!(
                    numel(out_shape) == x.data.len(),
                    "cannot reshape {:?} ({} elements) to {out_shape:?}",
                    x.shape,
                    x.data.len()
                );
                Ok(x.data.to_vec())
            }
            FrozenOp::Transpose { perm } => transpose(perm, x, out_shape),
            FrozenOp::Pad {
                pads,
                interior,
                value,
            } => pad(pads, interior, *value, x, out_shape),
            FrozenOp::Softmax => softmax(x, out_shape),
            FrozenOp::Concat { axis } => super::eval_axis::concat(*axis, inputs, out_shape),
            FrozenOp::Slice { axis, start, step } => {
                super::eval_axis::slice((*axis, *start, *step), x, out_shape)
            }
            FrozenOp::Gather { axis, indices } => {
                super::eval_axis::gather(*axis, indices, x, out_shape)
            }
        }
    }
}

impl EvalOp for Op {
    fn eval(&self, inputs: &[Operand<'_>], out_shape: &[usize]) -> Result<Vec<f32>> {
        match self {
            Op::Frozen(op) => op.eval(inputs, out_shape),
            Op::BatchNorm(bn) => {
                ensure!(
                    inputs.len() == 1,
                    "expected 1 input, the node has {}",
                    inputs.len()
                );
                batch_norm(bn, inputs[0], out_shape)
            }
        }
    }
}

/// Runs `g` on one sample (`input` in the logical layout of `g.values[g.input].shape`) and
/// returns the graph output.
pub fn run<O: EvalOp>(g: &Graph<O>, input: &[f32]) -> Result<Vec<f32>> {
    run_traced(g, input, &mut |_, _, _| {})
}

/// Like `run`, and calls `on_node(node index, node input 0, node output)` after every node, in
/// execution order (for statistics at chosen points of the graph).
#[allow(clippy::type_complexity)] // Spelled out on purpose: the callback's meaning is in its doc.
pub fn run_traced<O: EvalOp>(
    g: &Graph<O>,
    input: &[f32],
    on_node: &mut dyn FnMut(usize, &[f32], &[f32]),
) -> Result<Vec<f32>> {
    let value_count = g.values.len();
    ensure!(
        g.input < value_count && g.output < value_count,
        "graph input/output value ids ({}, {}) are out of range ({value_count} values)",
        g.input,
        g.output
    );
    let in_shape = &g.values[g.input].shape;
    ensure!(
        input.len() == numel(in_shape),
        "graph input \"{}\" has shape {in_shape:?} ({} elements), got {} elements",
        g.values[g.input].name,
        numel(in_shape),
        input.len()
    );
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; value_count];
    slots[g.input] = Some(input.to_vec());
    for (index, node) in g.nodes.iter().enumerate() {
        let computed = (|| -> Result<Vec<f32>> {
            ensure!(!node.inputs.is_empty(), "node has no inputs");
            ensure!(
                node.output < value_count,
                "output value id {} is out of range",
                node.output
            );
            let mut operands = Vec::with_capacity(node.inputs.len());
            for &v in &node.inputs {
                let data = slots.get(v).and_then(|s| s.as_deref()).ok_or_else(|| {
                    anyhow!(
                        "reads value {v} before any node computed it (graph not in topological order?)"
                    )
                })?;
                operands.push(Operand {
                    data,
                    shape: &g.values[v].shape,
                });
            }
            let out_shape = &g.values[node.output].shape;
            let y = node.op.eval(&operands, out_shape)?;
            ensure!(
                y.len() == numel(out_shape),
                "produced {} elements for output shape {out_shape:?}",
                y.len()
            );
            Ok(y)
        })()
        .map_err(|e| anyhow!("{} (node #{index}): {e:#}", node.origin))?;
        on_node(
            index,
            slots[node.inputs[0]].as_deref().unwrap_or(&[]),
            &computed,
        );
        slots[node.output] = Some(computed);
    }
    slots[g.output].take().ok_or_else(|| {
        anyhow!(
            "no node computes the graph output \"{}\"",
            g.values[g.output].name
        )
    })
}

/// Number of elements of a shape.
fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Channel count (axis 0) and elements per channel of a per-channel operand.
fn channels(x: Operand<'_>) -> Result<(usize, usize)> {
    let c = *x
        .shape
        .first()
        .ok_or_else(|| anyhow!("input is a scalar, expected [C, ...]"))?;
    ensure!(c > 0, "input has 0 channels");
    Ok((c, x.data.len() / c))
}

fn ensure_same_shape(x: Operand<'_>, out_shape: &[usize]) -> Result<()> {
    ensure!(
        x.shape == out_shape,
        "output shape {out_shape:?} differs from input shape {:?}",
        x.shape
    );
    Ok(())
}

/// Reads a 1-D (`[C, L]`, as height 1) or 2-D (`[C, H, W]`) feature map shape.
fn feature_map(shape: &[usize], spatial_rank: usize) -> Result<(usize, usize, usize)> {
    match (spatial_rank, shape) {
        (1, &[c, l]) => Ok((c, 1, l)),
        (2, &[c, h, w]) => Ok((c, h, w)),
        _ => bail!("expected a [C, L] input for a 1-D or [C, H, W] for a 2-D operator (spatial rank {spatial_rank}), got {shape:?}"),
    }
}

/// The logical output shape for `channels` and output height/width.
fn feature_map_shape(
    channels: usize,
    oh: usize,
    ow: usize,
    spatial_rank: usize,
) -> Result<Vec<usize>> {
    if spatial_rank == 1 {
        ensure!(
            oh == 1,
            "a 1-D operator produced height {oh} (pads on the height axis?)"
        );
        Ok(vec![channels, ow])
    } else {
        Ok(vec![channels, oh, ow])
    }
}

/// Output length along one axis (ONNX floor rounding, no ceil mode).
fn output_len(
    n: usize,
    kernel: usize,
    stride: usize,
    before: usize,
    after: usize,
    dilation: usize,
) -> Result<usize> {
    ensure!(
        kernel >= 1 && stride >= 1 && dilation >= 1,
        "kernel, stride and dilation must be >= 1 (got {kernel}, {stride}, {dilation})"
    );
    let padded = n + before + after;
    let span = dilation * (kernel - 1) + 1;
    ensure!(
        padded >= span,
        "window span {span} is larger than the padded input ({padded})"
    );
    Ok((padded - span) / stride + 1)
}

fn conv(c: &Conv, x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    let (cin, h, w) = feature_map(x.shape, c.spatial_rank)?;
    let &[oc, icg, kh, kw] = c.weight.shape.as_slice() else {
        bail!(
            "weight shape {:?} is not [out_c, in_c/group, kh, kw]",
            c.weight.shape
        );
    };
    ensure!(
        c.weight.data.len() == oc * icg * kh * kw,
        "weight data length {} does not match its shape {:?}",
        c.weight.data.len(),
        c.weight.shape
    );
    let group = c.group;
    ensure!(
        group >= 1 && cin % group == 0 && oc % group == 0 && icg * group == cin,
        "weight {:?} with group {group} does not fit {cin} input channels",
        c.weight.shape
    );
    ensure!(
        c.bias.len() == oc,
        "bias has {} entries for {oc} output channels",
        c.bias.len()
    );
    if let Some(p) = &c.pad_values {
        ensure!(
            p.len() == cin,
            "pad_values has {} entries for {cin} input channels",
            p.len()
        );
    }
    let [sh, sw] = c.strides;
    let [dh, dw] = c.dilations;
    let [pt, pl, pb, pr] = c.pads;
    let oh = output_len(h, kh, sh, pt, pb, dh)?;
    let ow = output_len(w, kw, sw, pl, pr, dw)?;
    let expected = feature_map_shape(oc, oh, ow, c.spatial_rank)?;
    ensure!(
        out_shape == expected,
        "output shape should be {expected:?}, the graph says {out_shape:?}"
    );

    let out_per_group = oc / group;
    // Every term is `weight * value` added to its output's f64 sum in the order (input channel,
    // ky, kx) after the bias, exactly as one accumulator per output would (the interpreter is the
    // definition the runtime is tested against, so its results must not depend on how it is
    // scheduled). What changes is only which sums run side by side: a tile of `LANES` output
    // channels by `TILE_COLS` output columns, so each weight is loaded once per tile and each
    // input value once per column, and the lanes vectorize.
    let input = PaddedInput::new(
        x.data,
        [cin, h, w],
        c.pads,
        c.pad_values.as_deref(),
        // Depthwise tiles read `LANES` neighbouring channels of a pixel at once.
        if icg == 1 && out_per_group == 1 {
            cin.div_ceil(LANES) * LANES
        } else {
            cin
        },
    );
    let geometry = TileGeometry {
        input: &input,
        strides: [sh, sw],
        out_len: [oh, ow],
    };
    let mut y = vec![0f32; oc * oh * ow];
    let taps = |first_in: usize| -> Vec<usize> {
        // Offsets from a window's origin in the padded input, in the order the terms are summed.
        let mut offsets = Vec::with_capacity(icg * kh * kw);
        for i in 0..icg {
            for ky in 0..kh {
                for kx in 0..kw {
                    offsets.push(input.offset(ky * dh, kx * dw) + first_in + i);
                }
            }
        }
        offsets
    };
    if icg == 1 && out_per_group == 1 {
        // Depthwise: lane l of a tile is channel c0 + l, reading its own input channel.
        for c0 in (0..oc).step_by(LANES) {
            let offsets = taps(c0);
            let block = Block::new(c, c0, oc);
            geometry.run(&block, &offsets, Read::Lanes, c0, &mut y);
        }
    } else {
        // Regular and grouped: the lanes are output channels of one group, reading the same
        // input value (the group's last block is partly empty).
        for g in 0..group {
            let offsets = taps(g * icg);
            let end = (g + 1) * out_per_group;
            for o0 in (g * out_per_group..end).step_by(LANES) {
                let block = Block::new(c, o0, end);
                geometry.run(&block, &offsets, Read::Broadcast, o0, &mut y);
            }
        }
    }
    Ok(y)
}

/// Output channels summed side by side in one convolution tile (one f64 lane each).
const LANES: usize = 8;
/// Output columns of one convolution tile.
const TILE_COLS: usize = 4;

/// A convolution's input widened to f64 once (each value is read `kh·kw·out_c/group` times),
/// channels last, with the padding written out: the border of channel `ci` holds
/// `pad_values[ci]` (0 without them; a folded BatchNorm's output was zero-padded, its input is
/// padded with what maps to 0), so a tile reads every term the same way.
struct PaddedInput {
    data: Vec<f64>,
    /// Padded row length.
    width: usize,
    /// Channel stride (the channel count, or more: the extra channels are 0).
    channels: usize,
}

impl PaddedInput {
    fn new(
        x: &[f32],
        [cin, h, w]: [usize; 3],
        [pt, pl, pb, pr]: [usize; 4],
        pad_values: Option<&[f32]>,
        channels: usize,
    ) -> Self {
        let (height, width) = (pt + h + pb, pl + w + pr);
        let mut pixel = vec![0f64; channels];
        if let Some(p) = pad_values {
            pixel[..cin]
                .iter_mut()
                .zip(p)
                .for_each(|(d, &v)| *d = f64::from(v));
        }
        let mut data = pixel.repeat(height * width);
        for ci in 0..cin {
            for (iy, row) in x[ci * h * w..(ci + 1) * h * w].chunks_exact(w).enumerate() {
                let start = ((pt + iy) * width + pl) * channels + ci;
                for (d, &v) in data[start..].iter_mut().step_by(channels).zip(row) {
                    *d = f64::from(v);
                }
            }
        }
        PaddedInput {
            data,
            width,
            channels,
        }
    }

    /// Offset of padded position (`y`, `x`), channel 0.
    fn offset(&self, y: usize, x: usize) -> usize {
        (y * self.width + x) * self.channels
    }
}

/// One tile's output channels: their weights as f64, one `LANES` vector per term, and biases.
struct Block {
    weights: Vec<[f64; LANES]>,
    bias: [f64; LANES],
    /// Channels in the block (the rest of the lanes are 0 and not stored).
    len: usize,
}

impl Block {
    /// Output channels `first..end.min(first + LANES)`.
    fn new(c: &Conv, first: usize, end: usize) -> Self {
        let len = LANES.min(end - first);
        let terms = c.weight.data.len() / c.bias.len();
        let mut weights = vec![[0f64; LANES]; terms];
        let mut bias = [0f64; LANES];
        for l in 0..len {
            let o = first + l;
            bias[l] = f64::from(c.bias[o]);
            for (t, &wt) in c.weight.data[o * terms..(o + 1) * terms].iter().enumerate() {
                weights[t][l] = f64::from(wt);
            }
        }
        Block { weights, bias, len }
    }
}

/// How a tile's lanes read a term's input value.
#[derive(Clone, Copy)]
enum Read {
    /// All lanes read the value at the term's offset (regular convolution).
    Broadcast,
    /// Lane `l` reads the value `l` channels on (depthwise convolution).
    Lanes,
}

/// Where a convolution's output windows start in the padded input.
struct TileGeometry<'a> {
    input: &'a PaddedInput,
    strides: [usize; 2],
    /// Output height and width.
    out_len: [usize; 2],
}

impl TileGeometry<'_> {
    /// Computes output channels `first..first + block.len` into `y` (`[C, H, W]`).
    fn run(&self, block: &Block, offsets: &[usize], read: Read, first: usize, y: &mut [f32]) {
        let [oh, ow] = self.out_len;
        let [sh, sw] = self.strides;
        for oy in 0..oh {
            let mut ox = 0;
            while ox < ow {
                let origin = |p: usize| self.input.offset(oy * sh, (ox + p) * sw);
                let mut store = |p: usize, acc: &[f64; LANES]| {
                    for (l, &a) in acc[..block.len].iter().enumerate() {
                        y[((first + l) * oh + oy) * ow + ox + p] = a as f32;
                    }
                };
                if ox + TILE_COLS <= ow {
                    let acc = tile::<TILE_COLS>(&self.input.data, block, offsets, read, origin);
                    acc.iter().enumerate().for_each(|(p, a)| store(p, a));
                    ox += TILE_COLS;
                } else {
                    let [acc] = tile::<1>(&self.input.data, block, offsets, read, origin);
                    store(0, &acc);
                    ox += 1;
                }
            }
        }
    }
}

/// The sums of `P` output columns (windows at `origin(p)`) for a block of output channels: bias,
/// then each term in `offsets`' order.
#[inline(always)]
fn tile<const P: usize>(
    data: &[f64],
    block: &Block,
    offsets: &[usize],
    read: Read,
    origin: impl Fn(usize) -> usize,
) -> [[f64; LANES]; P] {
    let origins: [usize; P] = core::array::from_fn(origin);
    let mut acc = [block.bias; P];
    for (&off, wt) in offsets.iter().zip(&block.weights) {
        for (a, &o) in acc.iter_mut().zip(&origins) {
            match read {
                Read::Broadcast => {
                    let v = data[o + off];
                    for l in 0..LANES {
                        a[l] += wt[l] * v;
                    }
                }
                Read::Lanes => {
                    let v = &data[o + off..][..LANES];
                    for l in 0..LANES {
                        a[l] += wt[l] * v[l];
                    }
                }
            }
        }
    }
    acc
}

fn dense(d: &Dense, x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    let &[out_f, in_f] = d.weight.shape.as_slice() else {
        bail!(
            "weight shape {:?} is not [out_features, in_features]",
            d.weight.shape
        );
    };
    ensure!(
        d.weight.data.len() == out_f * in_f,
        "weight data length {} does not match its shape {:?}",
        d.weight.data.len(),
        d.weight.shape
    );
    ensure!(
        x.data.len() == in_f,
        "input {:?} has {} elements, the weight expects {in_f}",
        x.shape,
        x.data.len()
    );
    ensure!(
        d.bias.len() == out_f,
        "bias has {} entries for {out_f} outputs",
        d.bias.len()
    );
    ensure!(
        numel(out_shape) == out_f,
        "output shape {out_shape:?} does not hold {out_f} features"
    );
    Ok(d.weight
        .data
        .chunks_exact(in_f.max(1))
        .take(out_f)
        .zip(&d.bias)
        .map(|(row, &b)| {
            let dot: f64 = row
                .iter()
                .zip(x.data)
                .map(|(&w, &v)| w as f64 * v as f64)
                .sum();
            (b as f64 + dot) as f32
        })
        .collect())
}

fn batch_norm(bn: &BatchNorm, x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    ensure_same_shape(x, out_shape)?;
    let (c, inner) = channels(x)?;
    for (name, v) in [
        ("gamma", &bn.gamma),
        ("beta", &bn.beta),
        ("mean", &bn.mean),
        ("var", &bn.var),
    ] {
        ensure!(
            v.len() == c,
            "{name} has {} entries for {c} channels",
            v.len()
        );
    }
    let eps = bn.epsilon as f64;
    let mut y = Vec::with_capacity(x.data.len());
    for (ch, xs) in x.data.chunks_exact(inner.max(1)).take(c).enumerate() {
        let denom = (bn.var[ch] as f64 + eps).sqrt();
        ensure!(
            denom > 0.0,
            "channel {ch}: running variance {} + epsilon {} is not positive",
            bn.var[ch],
            bn.epsilon
        );
        let (gamma, beta, mean) = (bn.gamma[ch] as f64, bn.beta[ch] as f64, bn.mean[ch] as f64);
        y.extend(
            xs.iter()
                .map(|&v| ((v as f64 - mean) / denom * gamma + beta) as f32),
        );
    }
    Ok(y)
}

fn affine(a: &Affine, x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    ensure_same_shape(x, out_shape)?;
    let (c, inner) = channels(x)?;
    for (name, v) in [("scale", &a.scale), ("shift", &a.shift)] {
        ensure!(
            v.len() == 1 || v.len() == c,
            "{name} has {} entries for {c} channels (expected 1 or {c})",
            v.len()
        );
    }
    let pick = |v: &[f64], ch: usize| if v.len() == 1 { v[0] } else { v[ch] };
    let mut y = Vec::with_capacity(x.data.len());
    for (ch, xs) in x.data.chunks_exact(inner.max(1)).take(c).enumerate() {
        let (s, t) = (pick(&a.scale, ch), pick(&a.shift, ch));
        y.extend(xs.iter().map(|&v| (v as f64 * s + t) as f32));
    }
    Ok(y)
}

fn activation(act: Activation, x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    ensure_same_shape(x, out_shape)?;
    // NaN passes through ReLU/Clip as f32 max/min would treat it; the rest follow f64 math.
    let f = |v: f32| -> f32 {
        match act {
            Activation::Relu => v.max(0.0),
            Activation::Clip { lo, hi } => v.max(lo).min(hi),
            other => other.apply_f64(v as f64) as f32,
        }
    };
    Ok(x.data.iter().map(|&v| f(v)).collect())
}

fn pool(p: &Pool, x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    let (c, h, w) = feature_map(x.shape, p.spatial_rank)?;
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.strides;
    let [pt, pl, pb, pr] = p.pads;
    let oh = output_len(h, kh, sh, pt, pb, 1)?;
    let ow = output_len(w, kw, sw, pl, pr, 1)?;
    let expected = feature_map_shape(c, oh, ow, p.spatial_rank)?;
    ensure!(
        out_shape == expected,
        "output shape should be {expected:?}, the graph says {out_shape:?}"
    );
    let mut y = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        let plane = &x.data[ch * h * w..(ch + 1) * h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                // Window rows/columns clipped to the real input; padding only matters through
                // the divisor of an average with count_include_pad.
                let y0 = (oy * sh).saturating_sub(pt);
                let y1 = (oy * sh + kh).saturating_sub(pt).min(h);
                let x0 = (ox * sw).saturating_sub(pl);
                let x1 = (ox * sw + kw).saturating_sub(pl).min(w);
                ensure!(
                    y0 < y1 && x0 < x1,
                    "pooling window at output ({oy}, {ox}) lies entirely in the padding"
                );
                let window =
                    (y0..y1).flat_map(|iy| plane[iy * w + x0..iy * w + x1].iter().copied());
                let v = match p.kind {
                    PoolKind::Max => window.fold(f32::NEG_INFINITY, f32::max),
                    PoolKind::Average { count_include_pad } => {
                        let sum: f64 = window.map(|v| v as f64).sum();
                        let count = if count_include_pad {
                            kh * kw
                        } else {
                            (y1 - y0) * (x1 - x0)
                        };
                        (sum / count as f64) as f32
                    }
                };
                y.push(v);
            }
        }
    }
    Ok(y)
}

fn global_average_pool(x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    let (c, inner) = channels(x)?;
    ensure!(inner > 0, "input {:?} has no spatial positions", x.shape);
    ensure!(
        numel(out_shape) == c,
        "output shape {out_shape:?} does not hold {c} channel means"
    );
    Ok(x.data
        .chunks_exact(inner)
        .map(|xs| (xs.iter().map(|&v| v as f64).sum::<f64>() / inner as f64) as f32)
        .collect())
}

fn add(a: Operand<'_>, b: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    ensure!(
        a.shape == b.shape,
        "inputs have different shapes {:?} and {:?} (no broadcasting)",
        a.shape,
        b.shape
    );
    ensure_same_shape(a, out_shape)?;
    Ok(a.data
        .iter()
        .zip(b.data)
        .map(|(&u, &v)| (u as f64 + v as f64) as f32)
        .collect())
}

/// PReLU with a slope per channel (axis 0), the product in f64.
fn prelu(slope: &[f32], x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    ensure_same_shape(x, out_shape)?;
    let (c, inner) = channels(x)?;
    ensure!(slope.len() == c, "{} slopes for {c} channels", slope.len());
    Ok(x.data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0.0 {
                v
            } else {
                (slope[i / inner.max(1)] as f64 * v as f64) as f32
            }
        })
        .collect())
}

/// `a * g` with `g` of `a`'s shape, or one value per channel (axis 0) of `a`, in f64.
fn mul(a: Operand<'_>, g: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    ensure_same_shape(a, out_shape)?;
    let (c, inner) = channels(a)?;
    let per_channel = g.shape.len() == a.shape.len()
        && g.shape.first() == Some(&c)
        && g.shape[1..].iter().all(|&d| d == 1);
    ensure!(
        g.shape == a.shape || per_channel,
        "the gate has shape {:?}; expected {:?} or one value per channel of it",
        g.shape,
        a.shape
    );
    let inner = if g.shape == a.shape { 1 } else { inner.max(1) };
    Ok(a.data
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * g.data[i / inner] as f64) as f32)
        .collect())
}

/// Row-major strides of a shape.
fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

/// Advances a row-major multi-index; false after the last one.
fn next_index(index: &mut [usize], shape: &[usize]) -> bool {
    for k in (0..shape.len()).rev() {
        index[k] += 1;
        if index[k] < shape[k] {
            return true;
        }
        index[k] = 0;
    }
    false
}

fn transpose(perm: &[usize], x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    let rank = x.shape.len();
    let mut seen = vec![false; rank];
    ensure!(
        perm.len() == rank
            && perm
                .iter()
                .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true)),
        "perm {perm:?} is not a permutation of the {rank} per-sample axes"
    );
    let expected: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    ensure!(
        out_shape == expected,
        "output shape should be {expected:?}, the graph says {out_shape:?}"
    );
    if x.data.is_empty() {
        return Ok(Vec::new());
    }
    let in_strides = strides_of(x.shape);
    let mut y = Vec::with_capacity(x.data.len());
    let mut index = vec![0; rank];
    loop {
        let offset: usize = index
            .iter()
            .zip(perm)
            .map(|(&i, &p)| i * in_strides[p])
            .sum();
        y.push(x.data[offset]);
        if !next_index(&mut index, &expected) {
            break;
        }
    }
    Ok(y)
}

fn pad(
    pads: &[usize],
    interior: &[usize],
    value: f32,
    x: Operand<'_>,
    out_shape: &[usize],
) -> Result<Vec<f32>> {
    let rank = x.shape.len();
    ensure!(
        pads.len() == 2 * rank && interior.len() == rank,
        "pads has {} entries and interior {} for {rank} per-sample axes (expected {} and {rank})",
        pads.len(),
        interior.len(),
        2 * rank
    );
    // Input index i of axis k lands at pads[k] + i * (interior[k] + 1).
    let expected: Vec<usize> = (0..rank)
        .map(|k| {
            let n = x.shape[k];
            pads[k] + n + n.saturating_sub(1) * interior[k] + pads[rank + k]
        })
        .collect();
    ensure!(
        out_shape == expected,
        "output shape should be {expected:?}, the graph says {out_shape:?}"
    );
    let mut y = vec![value; numel(&expected)];
    if x.data.is_empty() {
        return Ok(y);
    }
    let out_strides = strides_of(&expected);
    let mut index = vec![0; rank];
    for &v in x.data {
        let offset: usize = (0..rank)
            .map(|k| (index[k] * (interior[k] + 1) + pads[k]) * out_strides[k])
            .sum();
        y[offset] = v;
        next_index(&mut index, x.shape);
    }
    Ok(y)
}

fn softmax(x: Operand<'_>, out_shape: &[usize]) -> Result<Vec<f32>> {
    ensure_same_shape(x, out_shape)?;
    let n = *x
        .shape
        .last()
        .ok_or_else(|| anyhow!("softmax of a scalar"))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut y = Vec::with_capacity(x.data.len());
    for row in x.data.chunks_exact(n) {
        // Subtracting the maximum keeps exp() finite; it cancels in the ratio.
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        y.extend(exps.iter().map(|&e| (e / sum) as f32));
    }
    Ok(y)
}

/// Helpers for tests that build graphs by hand (shared with the passes' tests).
#[cfg(test)]
pub(crate) mod testkit {
    use crate::ir::graph::{BatchNorm, Conv, Graph, Node, Origin, Tensor, Value, ValueId};

    /// Deterministic SplitMix64 numbers (tests need reproducible data, not a rand dependency).
    /// The tool's seeded generator ([`crate::train::rng::Rng`], SplitMix64) with the f32 draws
    /// the test graphs need.
    pub(crate) struct Rng(crate::train::rng::Rng);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(crate::train::rng::Rng::new(seed))
        }
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0.next_u64()
        }
        /// Uniform in `[lo, hi)`.
        pub(crate) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
            (lo as f64 + self.0.uniform() * (hi - lo) as f64) as f32
        }
        pub(crate) fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
            (0..n).map(|_| self.uniform(lo, hi)).collect()
        }
    }

    /// Appends nodes to a graph in execution order.
    pub(crate) struct Builder<O> {
        pub(crate) g: Graph<O>,
    }

    impl<O> Builder<O> {
        /// A graph whose input has the given per-sample shape.
        pub(crate) fn new(input_shape: &[usize]) -> (Self, ValueId) {
            let g = Graph {
                values: vec![Value {
                    name: "input".into(),
                    shape: input_shape.to_vec(),
                }],
                nodes: Vec::new(),
                input: 0,
                output: 0,
                opset: 17,
            };
            (Builder { g }, 0)
        }

        /// Adds a node named `name` and returns its output value (named after the node).
        pub(crate) fn node(
            &mut self,
            name: &str,
            op_type: &str,
            op: O,
            inputs: &[ValueId],
            out_shape: &[usize],
        ) -> ValueId {
            let output = self.g.values.len();
            self.g.values.push(Value {
                name: format!("{name}_out"),
                shape: out_shape.to_vec(),
            });
            self.g.nodes.push(Node {
                origin: Origin {
                    name: name.into(),
                    op_type: op_type.into(),
                },
                op,
                inputs: inputs.to_vec(),
                output,
            });
            output
        }

        pub(crate) fn finish(mut self, output: ValueId) -> Graph<O> {
            self.g.output = output;
            self.g
        }
    }

    /// Output length of a convolution axis.
    pub(crate) fn out_len(
        n: usize,
        k: usize,
        stride: usize,
        before: usize,
        after: usize,
        dilation: usize,
    ) -> usize {
        (n + before + after - dilation * (k - 1) - 1) / stride + 1
    }

    /// A 2-D (or, with `kernel[0] == 1` and `spatial_rank == 1`, 1-D) convolution with random
    /// weights and bias.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv(
        rng: &mut Rng,
        out_c: usize,
        in_c: usize,
        group: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        spatial_rank: usize,
    ) -> Conv {
        let shape = vec![out_c, in_c / group, kernel[0], kernel[1]];
        let n = shape.iter().product();
        Conv {
            weight: Tensor::new(shape, rng.vec(n, -1.0, 1.0)),
            bias: rng.vec(out_c, -0.5, 0.5),
            strides,
            pads,
            dilations: [1, 1],
            group,
            pad_values: None,
            spatial_rank,
        }
    }

    /// A BatchNorm with plausible random statistics; means are large so that a wrong border or
    /// shift is visible.
    pub(crate) fn batch_norm(rng: &mut Rng, c: usize, epsilon: f32) -> BatchNorm {
        BatchNorm {
            gamma: (0..c)
                .map(|_| rng.uniform(0.5, 1.5) * if rng.next_u64() % 4 == 0 { -1.0 } else { 1.0 })
                .collect(),
            beta: rng.vec(c, -1.0, 1.0),
            mean: rng.vec(c, -3.0, 3.0),
            var: rng.vec(c, 0.05, 4.0),
            epsilon,
        }
    }

    /// Largest absolute difference relative to the largest reference magnitude.
    pub(crate) fn rel_err(got: &[f32], reference: &[f32]) -> f64 {
        assert_eq!(got.len(), reference.len(), "output lengths differ");
        let scale = reference
            .iter()
            .fold(0f64, |m, &v| m.max((v as f64).abs()))
            .max(1e-30);
        let diff = got
            .iter()
            .zip(reference)
            .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
        diff / scale
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::Builder;
    use super::*;
    use crate::ir::graph::{FrozenGraph, Tensor};

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "element {i}: got {a}, want {b} (all: {got:?})"
            );
        }
    }

    /// One-node frozen graph.
    fn single(op: FrozenOp, op_type: &str, in_shape: &[usize], out_shape: &[usize]) -> FrozenGraph {
        let (mut b, x) = Builder::new(in_shape);
        let y = b.node("n", op_type, op, &[x], out_shape);
        b.finish(y)
    }

    fn grouped_conv(pad_values: Option<Vec<f32>>) -> FrozenOp {
        // Group 0 (output 0) sums its 2x2 window; group 1 (output 1) takes the top-left tap + 1.
        FrozenOp::Conv(Conv {
            weight: Tensor::new(vec![2, 1, 2, 2], vec![1., 1., 1., 1., 1., 0., 0., 0.]),
            bias: vec![0., 1.],
            strides: [1, 1],
            pads: [1, 1, 1, 1],
            dilations: [1, 1],
            group: 2,
            pad_values,
            spatial_rank: 2,
        })
    }

    /// The convolution as one accumulator per output, terms in the order (input channel, ky,
    /// kx): what `conv` computes row by row.
    fn conv_one_output_at_a_time(c: &Conv, x: &[f32], [cin, h, w]: [usize; 3]) -> Vec<f32> {
        let [oc, icg, kh, kw] = [0, 1, 2, 3].map(|i| c.weight.shape[i]);
        let ([sh, sw], [dh, dw], [pt, pl, pb, pr]) = (c.strides, c.dilations, c.pads);
        let oh = (h + pt + pb - dh * (kh - 1) - 1) / sh + 1;
        let ow = (w + pl + pr - dw * (kw - 1) - 1) / sw + 1;
        let mut y = Vec::new();
        for o in 0..oc {
            let first_in = (o / (oc / c.group)) * icg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = c.bias[o] as f64;
                    for i in 0..icg {
                        let ci = first_in + i;
                        assert!(ci < cin);
                        let border = c.pad_values.as_ref().map_or(0.0, |p| p[ci] as f64);
                        for ky in 0..kh {
                            let iy = (oy * sh + ky * dh) as isize - pt as isize;
                            for kx in 0..kw {
                                let ix = (ox * sw + kx * dw) as isize - pl as isize;
                                let inside =
                                    (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                                let v = if inside {
                                    x[(ci * h + iy as usize) * w + ix as usize] as f64
                                } else {
                                    border
                                };
                                acc +=
                                    c.weight.data[((o * icg + i) * kh + ky) * kw + kx] as f64 * v;
                            }
                        }
                    }
                    y.push(acc as f32);
                }
            }
        }
        y
    }

    #[test]
    fn conv_rows_equal_one_output_at_a_time_bit_for_bit() {
        let mut rng = testkit::Rng::new(17);
        for case in 0..600 {
            let mut pick = |n: u64| (rng.next_u64() % n) as usize;
            // Regular and grouped (channel counts on both sides of a tile's 8 lanes), depthwise
            // (up to three tiles of channels) and depthwise with a channel multiplier.
            let (group, cin, oc) = match pick(6) {
                4 => {
                    let c = 1 + pick(20);
                    (c, c, c)
                }
                5 => {
                    let c = 1 + pick(6);
                    (c, c, c * (2 + pick(2)))
                }
                k => {
                    let group = [1, 1, 2, 3][k];
                    (group, group * (1 + pick(12)), group * (1 + pick(12)))
                }
            };
            let (kh, kw) = (1 + pick(4), 1 + pick(4));
            let strides = [1 + pick(3), 1 + pick(3)];
            let dilations = [1 + pick(2), 1 + pick(2)];
            let pads = [pick(3), pick(3), pick(3), pick(3)];
            let (h, w) = (
                dilations[0] * (kh - 1) + 1 + pick(6),
                dilations[1] * (kw - 1) + 1 + pick(14),
            );
            let with_pad_values = pick(2) == 1;
            let mut rng = testkit::Rng::new(case);
            let mut c = testkit::conv(&mut rng, oc, cin, group, [kh, kw], strides, pads, 2);
            c.dilations = dilations;
            c.pad_values = with_pad_values.then(|| rng.vec(cin, -2.0, 2.0));
            let x = rng.vec(cin * h * w, -3.0, 3.0);
            let want = conv_one_output_at_a_time(&c, &x, [cin, h, w]);
            let oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) / strides[0] + 1;
            let ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) / strides[1] + 1;
            let got = conv(
                &c,
                Operand {
                    data: &x,
                    shape: &[cin, h, w],
                },
                &[oc, oh, ow],
            )
            .unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "case {case}: {c:?}");
        }
    }

    #[test]
    fn conv_with_pads_and_groups() {
        let g = single(grouped_conv(None), "Conv", &[2, 2, 2], &[2, 3, 3]);
        let y = run(&g, &[1., 2., 3., 4., 5., 6., 7., 8.]).unwrap();
        assert_close(
            &y,
            &[
                1., 3., 2., 4., 10., 6., 3., 7., 4., /* group 1 */ 1., 1., 1., 1., 6., 7., 1.,
                8., 9.,
            ],
        );
    }

    #[test]
    fn conv_pad_values_fill_the_border_per_input_channel() {
        let g = single(
            grouped_conv(Some(vec![10., 20.])),
            "Conv",
            &[2, 2, 2],
            &[2, 3, 3],
        );
        let y = run(&g, &[1., 2., 3., 4., 5., 6., 7., 8.]).unwrap();
        assert_close(
            &y,
            &[
                31., 23., 32., 24., 10., 26., 33., 27., 34., 21., 21., 21., 21., 6., 7., 21., 8.,
                9.,
            ],
        );
    }

    #[test]
    fn conv1d_with_stride_dilation_and_asymmetric_pads() {
        let op = FrozenOp::Conv(Conv {
            weight: Tensor::new(vec![1, 1, 1, 2], vec![1., 10.]),
            bias: vec![0.],
            strides: [1, 2],
            pads: [0, 1, 0, 0],
            dilations: [1, 2],
            group: 1,
            pad_values: None,
            spatial_rank: 1,
        });
        let g = single(op, "Conv", &[1, 5], &[1, 2]);
        // Padded input 0 1 2 3 4 5; taps at (0, 2) and (2, 4).
        assert_close(&run(&g, &[1., 2., 3., 4., 5.]).unwrap(), &[20., 42.]);
    }

    fn pool_graph(kind: PoolKind) -> FrozenGraph {
        let op = FrozenOp::Pool(Pool {
            kind,
            kernel: [2, 2],
            strides: [1, 1],
            pads: [1, 1, 1, 1],
            spatial_rank: 2,
        });
        single(op, "Pool", &[1, 2, 2], &[1, 3, 3])
    }

    #[test]
    fn average_pool_count_include_pad_both_ways() {
        let x = [1., 2., 3., 4.];
        let incl = run(
            &pool_graph(PoolKind::Average {
                count_include_pad: true,
            }),
            &x,
        )
        .unwrap();
        assert_close(&incl, &[0.25, 0.75, 0.5, 1., 2.5, 1.5, 0.75, 1.75, 1.]);
        let excl = run(
            &pool_graph(PoolKind::Average {
                count_include_pad: false,
            }),
            &x,
        )
        .unwrap();
        assert_close(&excl, &[1., 1.5, 2., 2., 2.5, 3., 3., 3.5, 4.]);
    }

    #[test]
    fn max_pool_ignores_padding() {
        let y = run(&pool_graph(PoolKind::Max), &[-1., -2., -3., -4.]).unwrap();
        assert_close(&y, &[-1., -1., -2., -1., -1., -2., -3., -3., -4.]);
    }

    #[test]
    fn softmax_over_last_axis() {
        let g = single(FrozenOp::Softmax, "Softmax", &[2, 3], &[2, 3]);
        let y = run(&g, &[1., 2., 3., 1000., 1000., 1000.]).unwrap();
        let third = 1.0 / 3.0;
        assert_close(
            &y,
            &[
                0.090_030_57,
                0.244_728_47,
                0.665_240_96,
                third,
                third,
                third,
            ],
        );
    }

    #[test]
    fn batch_norm_inference_form() {
        let bn = BatchNorm {
            gamma: vec![2., 1.],
            beta: vec![1., 0.],
            mean: vec![1., -1.],
            var: vec![3., 0.],
            epsilon: 1.0,
        };
        let (mut b, x) = Builder::new(&[2, 2]);
        let y = b.node("bn", "BatchNormalization", Op::BatchNorm(bn), &[x], &[2, 2]);
        let g = b.finish(y);
        // ch0: (x - 1) / 2 * 2 + 1; ch1: (x + 1) / 1.
        assert_close(&run(&g, &[1., 3., 0., 2.]).unwrap(), &[1., 3., 1., 3.]);
    }

    #[test]
    fn dense_gap_affine_transpose_pad_chain() {
        let (mut b, x) = Builder::<FrozenOp>::new(&[2, 3]);
        let t = b.node(
            "t",
            "Transpose",
            FrozenOp::Transpose { perm: vec![1, 0] },
            &[x],
            &[3, 2],
        );
        let p = b.node(
            "p",
            "Pad",
            FrozenOp::Pad {
                pads: vec![0, 1, 0, 0],
                interior: vec![0, 0],
                value: 9.,
            },
            &[t],
            &[3, 3],
        );
        let a = b.node(
            "a",
            "Mul",
            FrozenOp::Affine(Affine {
                scale: vec![1., 2., 3.],
                shift: vec![0.5],
            }),
            &[p],
            &[3, 3],
        );
        let m = b.node(
            "m",
            "GlobalAveragePool",
            FrozenOp::GlobalAveragePool,
            &[a],
            &[3],
        );
        let d = Dense {
            weight: Tensor::new(vec![1, 3], vec![1., 1., -1.]),
            bias: vec![0.25],
        };
        let y = b.node("fc", "Gemm", FrozenOp::Dense(d), &[m], &[1]);
        let g = b.finish(y);
        // x = [[1,2,3],[4,5,6]] → T = [[1,4],[2,5],[3,6]] → pad left with 9 →
        // rows [9,1,4],[9,2,5],[9,3,6] → affine: [9.5,1.5,4.5],[18.5,4.5,10.5],[27.5,9.5,18.5]
        // → means 31/6, 33.5/3, 55.5/3 → 31/6 + 67/6 - 111/6 + 0.25.
        let y = run(&g, &[1., 2., 3., 4., 5., 6.]).unwrap();
        assert_close(&y, &[(31.0 + 67.0 - 111.0) / 6.0 + 0.25]);
    }

    #[test]
    fn add_and_activations() {
        let (mut b, x) = Builder::<FrozenOp>::new(&[4]);
        let r = b.node(
            "r",
            "Relu",
            FrozenOp::Activation(Activation::Relu),
            &[x],
            &[4],
        );
        let l = b.node(
            "l",
            "LeakyRelu",
            FrozenOp::Activation(Activation::LeakyRelu { alpha: 0.5 }),
            &[x],
            &[4],
        );
        let s = b.node("s", "Add", FrozenOp::Add, &[r, l], &[4]);
        let c = b.node(
            "c",
            "Clip",
            FrozenOp::Activation(Activation::Clip { lo: -1., hi: 3. }),
            &[s],
            &[4],
        );
        let y = b.node(
            "sig",
            "Sigmoid",
            FrozenOp::Activation(Activation::Sigmoid),
            &[c],
            &[4],
        );
        let g = b.finish(y);
        let sig = |v: f64| (1.0 / (1.0 + (-v).exp())) as f32;
        let y = run(&g, &[-4., -1., 0.5, 2.]).unwrap();
        assert_close(&y, &[sig(-1.), sig(-0.5), sig(1.), sig(3.)]);
    }

    #[test]
    fn shape_errors_name_the_node() {
        let g = single(grouped_conv(None), "Conv", &[2, 2, 2], &[2, 2, 2]);
        let err = run(&g, &[0.; 8]).unwrap_err().to_string();
        assert!(
            err.contains("node \"n\" (Conv)") && err.contains("[2, 3, 3]"),
            "{err}"
        );
        let err = run(&g, &[0.; 7]).unwrap_err().to_string();
        assert!(err.contains("8 elements"), "{err}");
    }

    #[test]
    fn traced_run_reports_every_node_in_order() {
        let (mut b, x) = Builder::<FrozenOp>::new(&[2]);
        let a = b.node(
            "a",
            "Relu",
            FrozenOp::Activation(Activation::Relu),
            &[x],
            &[2],
        );
        let y = b.node("b", "Add", FrozenOp::Add, &[a, x], &[2]);
        let g = b.finish(y);
        let mut seen = Vec::new();
        let y = run_traced(&g, &[-1., 2.], &mut |i, input, output| {
            seen.push((i, input.to_vec(), output.to_vec()))
        })
        .unwrap();
        assert_eq!(y, vec![-1., 4.]);
        assert_eq!(
            seen,
            vec![
                (0, vec![-1., 2.], vec![0., 2.]),
                (1, vec![0., 2.], vec![-1., 4.])
            ]
        );
    }
}
