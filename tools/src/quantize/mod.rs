//! int8 quantization of a lowered model: every f32 layer becomes its integer-only counterpart.
//!
//! Runs after BatchNorm folding, so the folded per-channel scales live in the weights and are
//! quantized per output channel (quantizing folded weights per tensor is where peers lose accuracy).
//! - Weights: int8 symmetric per output channel (depthwise: per channel), `scale = max|w| / 127`.
//! - Bias: int32 at scale `s_in * s_w[o]`, with the input zero-point term folded in offline
//!   (`bias - zp_in * sum(w_q)`), so the device computes only `sum(w_q * x_q)`.
//! - Activations: int8 asymmetric per tensor from the calibration ranges (`calibrate`); ReLU and
//!   Clip fuse as clamps in the output's quantized domain; other activations become 256-entry
//!   tables; pooling, layout changes and padding keep their input's quantization.
//! - Output head: a dense last layer (logits, regression values) writes int16 (`DenseI8Wide`,
//!   symmetric, [`WIDE_OUTPUT_HEADROOM`] times the calibrated range), and a softmax after it
//!   reads and writes int16 (`SoftmaxI16`, probabilities in steps of 1/32768), unless int8 output
//!   is asked for: 256 levels are coarse for an output that is read as numbers, not fed to another
//!   layer (two close logits often land on one int8 step, and the argmax then picks the first).
//! - Requantization factors go through `icefold::quant::quantize_multiplier` (one implementation
//!   of the rule, shared with the runtime's documentation).
//!
//! Files: `mod.rs` the per-layer quantization ([`quantize`]) and the tensor parameters;
//! `calibrate` the activation ranges; `int16` which tensors stay int16 (16×8); `output_head` the
//! int16 output head; `bias_correction` the per-channel bias correction.

mod axis;
pub mod bias_correction;
mod budget;
pub mod calibrate;
pub mod elementwise;
pub mod int16;
pub mod output_head;

pub use bias_correction::correct_bias;
pub use budget::{fit_int16_to_arena, Int16Budget};
pub use int16::{int16_activations, INT16_INPUT_MAX_PRODUCTS};
pub use output_head::WIDE_OUTPUT_HEADROOM;

use anyhow::{anyhow, bail, Context, Result};
use icefold::format::{
    self, Activation as RtActivation, AddI8, AffineI8, ChannelRequant, Clamp, ClampI16, Conv2dI16,
    Conv2dI8, DType, DenseI8, DenseI8Wide, DenseLayout, Op, PoolI8, Quant, Span, TensorDesc,
};
use icefold::quant::accumulator_fits_for;
use icefold::quant::{self, Requant};

use crate::lower::Lowered;
use crate::quantize::calibrate::{Calibration, QParams, Range};
use int16::{bias_fits_int16, int16_qparams, transposed_with};
use output_head::{wide_clamp_for, wide_output_head, wide_qparams};

/// Builder of the int8 weights section.
#[derive(Default)]
struct Weights {
    bytes: Vec<u8>,
}

impl Weights {
    fn align4(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }
    fn span_since(&self, offset: usize) -> Span {
        Span {
            offset: offset as u32,
            len: (self.bytes.len() - offset) as u32,
        }
    }
    fn i8s(&mut self, data: &[i8]) -> Span {
        let at = self.bytes.len();
        self.bytes.extend(data.iter().map(|&v| v as u8));
        self.span_since(at)
    }
    fn i16s(&mut self, data: &[i16]) -> Span {
        if self.bytes.len() % 2 != 0 {
            self.bytes.push(0);
        }
        let at = self.bytes.len();
        for v in data {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.span_since(at)
    }
    fn i32s(&mut self, data: impl IntoIterator<Item = i32>) -> Span {
        self.align4();
        let at = self.bytes.len();
        for v in data {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.span_since(at)
    }
    fn u32s(&mut self, data: impl IntoIterator<Item = u32>) -> Span {
        self.i32s(data.into_iter().map(|v| v as i32))
    }
    fn requant(&mut self, r: &[Requant]) -> ChannelRequant {
        let multipliers = self.i32s(r.iter().map(|r| r.multiplier));
        let shifts = self.i32s(r.iter().map(|r| r.shift));
        ChannelRequant {
            multipliers,
            shifts,
        }
    }
}

fn f32s(l: &Lowered, s: Span) -> Vec<f32> {
    let b = &l.weights[s.offset as usize..(s.offset + s.len) as usize];
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn clamp_for(act: RtActivation, q: QParams, layer: &str) -> Result<Clamp> {
    Ok(match act {
        RtActivation::Identity => Clamp::FULL,
        RtActivation::Relu => Clamp { min: q.quantize(0.0), max: 127 },
        RtActivation::Clip { lo, hi } => Clamp { min: q.quantize(lo), max: q.quantize(hi) },
        other => bail!("layer {layer}: activation {other:?} cannot be fused in int8 (lowering must keep it separate)"),
    })
}

fn requant(real: f64, layer: &str, what: &str) -> Result<Requant> {
    Requant::from_real(real).ok_or_else(|| {
        anyhow!(
            "layer {layer}: the {what} scale factor {real:e} cannot be represented in fixed point; \
             the calibration range of this layer is degenerate (check the calibration data)"
        )
    })
}

/// One layer's weights and bias in integers (see [`quantize_rows`]).
pub(crate) struct QuantizedRows {
    /// int8 weights, row by row.
    pub weights: Vec<i8>,
    /// int32 bias per row, the input zero-point term folded in.
    pub bias: Vec<i32>,
    /// Weight scale per row.
    pub scales: Vec<f64>,
    /// The rows whose weight scale was widened beyond `max|w| / 127` so that their bias fits.
    pub widened: Vec<usize>,
}

/// Per-output-channel symmetric quantization of `w` (`out` rows) for an input scale `s_in`, with
/// the bias folded: int8 weights, int32 bias and the per-channel weight scales. Each output
/// sums a row's products over `positions` input vectors (1 but for a dense layer with a global
/// pooling folded in).
///
/// A row's weight scale is `max|w| / 127`, unless its bias would then not fit the int32
/// accumulator beside the products (`quant::contract::accumulator_fits_for`): a channel whose
/// folded weights are near zero (BatchNorm scaled it to almost nothing, or it was pruned) has a
/// tiny weight scale, and its bias, in units of `s_in * s_w`, becomes enormous. Such a row's
/// scale is widened until the bias fits (TensorFlow Lite's rule for per-channel bias scales); its
/// weights are then coarser (often all 0), which costs at most `max|w| * sum|x|` per output, small
/// exactly because the weights are. Refused only if no scale fits (more products than the
/// accumulator can hold beside any bias).
fn quantize_rows(
    w: &[f32],
    bias: &[f32],
    out: usize,
    positions: usize,
    (s_in, zp_in): (f64, i32),
    input: DType,
    layer: &str,
) -> Result<QuantizedRows> {
    let per = w.len() / out.max(1);
    let products = per.saturating_mul(positions);
    let mut rows = QuantizedRows {
        weights: Vec::with_capacity(w.len()),
        bias: Vec::with_capacity(out),
        scales: Vec::with_capacity(out),
        widened: Vec::new(),
    };
    // The row at scale `s_w`: weights, and the folded bias if it fits beside the products.
    let at_scale = |row: &[f32], b: f32, s_w: f64| {
        let q: Vec<i8> = row
            .iter()
            .map(|&x| (x as f64 / s_w).round().clamp(-127.0, 127.0) as i8)
            .collect();
        // Every position reads the zero point: its term is folded once per position.
        let sum: i64 = q.iter().map(|&v| v as i64).sum();
        let zp_term = zp_in as i64 * positions as i64 * sum;
        let folded = (b as f64 / (s_in * s_w)).round() - zp_term as f64;
        let fits = (i32::MIN as f64..=i32::MAX as f64).contains(&folded)
            && accumulator_fits_for(input, products, folded as i32);
        (q, fits.then_some(folded as i32))
    };
    for (o, row) in w.chunks_exact(per.max(1)).enumerate().take(out) {
        let max = row.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
        // An all-zero channel still needs a positive scale; its weights stay 0.
        let mut s_w = if max > 0.0 { max / 127.0 } else { 1.0 };
        let (mut q, mut folded) = at_scale(row, bias[o], s_w);
        if folded.is_none() {
            // The bias's share of the accumulator: what the products and the zero-point term
            // (at most |zp_in| * 127 per product) leave, less one step for the rounding.
            let max_product = match input {
                DType::I16 => icefold::quant::contract::MAX_PRODUCT_I16,
                _ => icefold::quant::contract::MAX_PRODUCT,
            } as f64;
            let zp_share = zp_in.unsigned_abs() as f64 * 127.0;
            let budget = i32::MAX as f64 - products as f64 * (max_product + zp_share) - 1.0;
            if budget >= 1.0 {
                s_w = s_w.max(bias[o].abs() as f64 / (s_in * budget));
                (q, folded) = at_scale(row, bias[o], s_w);
                rows.widened.push(o);
            }
        }
        let Some(folded) = folded else {
            bail!(
                "layer {layer}: output channel {o}: the bias {} cannot fit the int32 accumulator \
                 beside {products} products at any weight scale (input scale {s_in:e}); the layer \
                 sums too many products for int8 — split it or keep the model in f32",
                bias[o]
            );
        };
        rows.bias.push(folded);
        rows.scales.push(s_w);
        rows.weights.extend(q);
    }
    Ok(rows)
}

/// The int8 weights, int32 bias and per-channel factors of a convolution or dense layer (`out`
/// output channels over `positions` input vectors, f32 `weights` and `bias` spans of `l`), written
/// to `w`; `input` is the input's element type (it sets the accumulator bound).
#[allow(clippy::too_many_arguments)]
fn weighted(
    w: &mut Weights,
    l: &Lowered,
    spans: (Span, Span),
    shape: (usize, usize),
    qparams: (QParams, QParams),
    input: DType,
    name: &str,
) -> Result<(Span, Span, ChannelRequant)> {
    let (rows, factors) = quantized_rows(l, spans, shape, qparams, input, name)?;
    Ok((w.i8s(&rows.weights), w.i32s(rows.bias), w.requant(&factors)))
}

/// A dense layer's [`weighted`] (int8 input), its weights stored as `layout` says: int8 rows,
/// int8 row pairs ([`format::pair_index`], 4-aligned for LDRD; rows instead where
/// [`format::store_pairs`] refuses the values), or the same values widened to int16 in
/// [`format::quad_index`] order (4-aligned for LDM). Returns the layout written.
fn weighted_as(
    w: &mut Weights,
    l: &Lowered,
    spans: (Span, Span),
    shape: (usize, usize),
    qparams: (QParams, QParams),
    layout: DenseLayout,
    name: &str,
) -> Result<(Span, Span, ChannelRequant, DenseLayout)> {
    let (rows, factors) = quantized_rows(l, spans, shape, qparams, DType::I8, name)?;
    let (out, positions) = shape;
    let n_in = rows.weights.len() / out.max(1);
    let mut pairs = vec![0i8; rows.weights.len()];
    let layout = match layout {
        DenseLayout::PairsI8
            if format::store_pairs(&rows.weights, out, n_in, positions, &mut pairs).is_ok() =>
        {
            DenseLayout::PairsI8
        }
        DenseLayout::PairsI8 => DenseLayout::RowsI8,
        other => other,
    };
    let weights = match layout {
        DenseLayout::RowsI8 => w.i8s(&rows.weights),
        DenseLayout::PairsI8 => {
            w.align4();
            w.i8s(&pairs)
        }
        DenseLayout::QuadsI16 => {
            let out = shape.0;
            let n_in = rows.weights.len() / out.max(1);
            let mut quads = vec![0i16; rows.weights.len()];
            for (o, row) in rows.weights.chunks_exact(n_in.max(1)).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    quads[format::quad_index(out, n_in, o, i)] = v.into();
                }
            }
            w.align4();
            w.i16s(&quads)
        }
    };
    Ok((weights, w.i32s(rows.bias), w.requant(&factors), layout))
}

/// The steps [`weighted`] and [`weighted_as`] share: the layer's rows quantized
/// ([`quantize_rows`]) and each output channel's factor from input, weight and output scales.
fn quantized_rows(
    l: &Lowered,
    (weights, bias): (Span, Span),
    (out, positions): (usize, usize),
    (x, y): (QParams, QParams),
    input: DType,
    name: &str,
) -> Result<(QuantizedRows, Vec<Requant>)> {
    let (s_in, s_out) = (x.scale as f64, y.scale as f64);
    let rows = quantize_rows(
        &f32s(l, weights),
        &f32s(l, bias),
        out,
        positions,
        (s_in, x.zero_point),
        input,
        name,
    )?;
    let factors = rows
        .scales
        .iter()
        .map(|s| requant(s_in * s / s_out, name, "output"))
        .collect::<Result<Vec<_>>>()?;
    Ok((rows, factors))
}

/// Quantization parameters of every tensor of `l` (indexed by tensor id).
pub fn tensor_qparams(l: &Lowered, cal: &Calibration) -> Result<Vec<QParams>> {
    let n = l.tensor_values.len();
    let mut ranges: Vec<Range> = Vec::with_capacity(n);
    for (t, &v) in l.tensor_values.iter().enumerate() {
        let r =
            cal.ranges.get(v).copied().flatten().ok_or_else(|| {
                anyhow!("tensor {t}: no calibration range for its value (id {v})")
            })?;
        ranges.push(r);
    }
    // A border padded with per-channel values (a folded BatchNorm before the convolution) must be
    // representable in the convolution's input quantization.
    for layer in &l.layers {
        if let Op::Conv2d(c) = &layer.op {
            if c.pad_values.len > 0 {
                let r = &mut ranges[layer.inputs[0].id as usize];
                for p in f32s(l, c.pad_values) {
                    r.min = r.min.min(p);
                    r.max = r.max.max(p);
                }
            }
        }
    }
    axis::share_concat_grids(l, &mut ranges);
    let mut q: Vec<Option<QParams>> = vec![None; n];
    q[l.info.input.id as usize] = Some(QParams::from_range(ranges[l.info.input.id as usize]));
    for layer in &l.layers {
        let out = layer.output.id as usize;
        let input = q[layer.inputs[0].id as usize];
        q[out] = Some(match layer.op {
            // Average pooling narrows the range (a global pool outputs means): it gets its own,
            // finer grid and rescales. Max pooling and data movement keep the input's grid.
            Op::Pool(p) if p.kind != format::PoolKind::Max => QParams::from_range(ranges[out]),
            Op::Pool(_) | Op::Transpose(_) | Op::Pad(_) | Op::Slice(_) | Op::Gather(_) => {
                input.ok_or_else(|| anyhow!("tensor {out}: input quantized after its use"))?
            }
            Op::Softmax => QParams {
                scale: 1.0 / 256.0,
                zero_point: quant_softmax_zero_point(),
            },
            _ => QParams::from_range(ranges[out]),
        });
    }
    q.into_iter()
        .enumerate()
        .map(|(t, p)| p.ok_or_else(|| anyhow!("tensor {t} is never written")))
        .collect()
}

fn quant_softmax_zero_point() -> i32 {
    icefold::quant::SOFTMAX_OUTPUT_ZERO_POINT as i32
}

/// What the user chooses about the layers an int8 conversion writes (`icefold convert` flags).
#[derive(Clone, Copy, Debug, Default)]
pub struct Writes {
    /// A dense last layer writes int16 (`DenseI8Wide`).
    pub wide_output: bool,
    /// How dense layers store their weights.
    pub dense_weights: DenseWeights,
}

/// How int8 dense layers store their weights (`icefold convert --dense-weights`); every
/// choice computes the same bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DenseWeights {
    /// One byte per weight, in row pairs ([`DenseLayout::PairsI8`]) where the layer allows it
    /// (inputs a multiple of 8, every pair within the layout's bound for the layer's positions,
    /// checked by [`format::store_pairs`]), else row by row ([`DenseLayout::RowsI8`]).
    #[default]
    Int8,
    /// One byte per weight, row by row ([`DenseLayout::RowsI8`]).
    Int8Rows,
    /// Two bytes per weight, four rows interleaved ([`DenseLayout::QuadsI16`]; inputs a
    /// multiple of 4, else rows): twice the flash for the DSP cores' kernel.
    Int16,
}

/// Convert the f32 model `l` (lowered with `fuse_table_activations: false`) to int8; with
/// `writes.wide_output`, a dense last layer writes int16, and the first `int16_convs`
/// convolutions keep int16 activations where [`int16_activations`] allows (see the module docs).
pub fn quantize(
    l: &Lowered,
    cal: &Calibration,
    writes: Writes,
    int16_convs: usize,
) -> Result<Lowered> {
    quantize_with_int16(l, cal, writes, int16_activations(l, int16_convs))
}

/// [`quantize`] with the candidate int16 tensors given (a subset of what [`int16_activations`]
/// returns; each with the tensors transposes move it from and to): the int16 budget
/// (`budget.rs`) drops candidates from it.
pub fn quantize_with_int16(
    l: &Lowered,
    cal: &Calibration,
    writes: Writes,
    mut int16: Vec<u16>,
) -> Result<Lowered> {
    let mut qp = tensor_qparams(l, cal)?;
    let int8_qp = qp.clone();
    for &t in &int16 {
        let range = cal
            .wide_ranges
            .get(l.tensor_values[t as usize])
            .copied()
            .flatten()
            .ok_or_else(|| anyhow!("tensor {t}: no calibration range for its value"))?;
        qp[t as usize] = int16_qparams(range);
    }
    // A transpose moves values: its output keeps its input's grid.
    for layer in &l.layers {
        if matches!(layer.op, Op::Transpose(_)) && int16.contains(&layer.output.id) {
            qp[layer.output.id as usize] = qp[layer.inputs[0].id as usize];
        }
    }
    // A convolution whose bias does not fit beside 2^22-sized products at its int16 input's
    // scale (a narrow input range against a large bias) reads int8 instead: its input, and what
    // a transpose moved it from or to, go back to their int8 grids rather than failing.
    while let Some(t) = l.layers.iter().find_map(|layer| match &layer.op {
        Op::Conv2d(c)
            if int16.contains(&layer.inputs[0].id)
                && !bias_fits_int16(l, c, layer, qp[layer.inputs[0].id as usize]) =>
        {
            Some(layer.inputs[0].id)
        }
        _ => None,
    }) {
        for g in transposed_with(l, t) {
            int16.retain(|&x| x != g);
            qp[g as usize] = int8_qp[g as usize];
        }
    }
    let head = writes.wide_output.then(|| wide_output_head(l)).flatten();
    let (wide, wide_softmax) = (head.map(|h| h.0), head.and_then(|h| h.1));
    if let Some(k) = wide {
        let t = l.layers[k].output.id as usize;
        let range = cal
            .wide_ranges
            .get(l.tensor_values[t])
            .copied()
            .flatten()
            .ok_or_else(|| anyhow!("tensor {t}: no calibration range for its value"))?;
        qp[t] = wide_qparams(range);
    }
    if let Some(k) = wide_softmax {
        qp[l.layers[k].output.id as usize] = QParams {
            scale: 1.0 / (1u32 << icefold::quant::WIDE_SOFTMAX_OUTPUT_SHIFT) as f32,
            zero_point: 0,
        };
    }
    let mut w = Weights::default();
    let mut layers = Vec::with_capacity(l.layers.len());
    for (i, layer) in l.layers.iter().enumerate() {
        let name = format!(
            "#{i} ({})",
            l.notes.get(i).map(|n| n.source.as_str()).unwrap_or("")
        );
        let x = qp[layer.inputs[0].id as usize];
        let y = qp[layer.output.id as usize];
        let (s_in, s_out) = (x.scale as f64, y.scale as f64);
        let op = match &layer.op {
            Op::Conv2d(c) => {
                let out_c = layer.output.dims[2] as usize;
                let wide_in = int16.contains(&layer.inputs[0].id);
                let wide_out = int16.contains(&layer.output.id);
                let input = if wide_in { DType::I16 } else { DType::I8 };
                let (weights, bias, requant) = weighted(
                    &mut w,
                    l,
                    (c.weights, c.bias),
                    (out_c, 1),
                    (x, y),
                    input,
                    &name,
                )?;
                let pad_values = f32s(l, c.pad_values);
                let mut conv = *c;
                conv.weights = weights;
                conv.bias = bias;
                conv.pad_values = if wide_in {
                    let q: Vec<i16> = pad_values.iter().map(|&p| x.quantize_i16(p)).collect();
                    w.i16s(&q)
                } else {
                    let q: Vec<i8> = pad_values.iter().map(|&p| x.quantize(p)).collect();
                    w.i8s(&q)
                };
                conv.activation = RtActivation::Identity;
                if wide_out {
                    let clamp = wide_clamp_for(c.activation, y, &name)?;
                    Op::Conv2dI16(Conv2dI16 {
                        conv,
                        requant,
                        clamp,
                    })
                } else if wide_in {
                    let Clamp { min, max } = clamp_for(c.activation, y, &name)?;
                    let clamp = ClampI16 {
                        min: min.into(),
                        max: max.into(),
                    };
                    Op::Conv2dI16(Conv2dI16 {
                        conv,
                        requant,
                        clamp,
                    })
                } else {
                    Op::Conv2dI8(Conv2dI8 {
                        conv,
                        requant,
                        clamp: clamp_for(c.activation, y, &name)?,
                    })
                }
            }
            Op::Dense(d) => {
                let out = layer.output.len();
                // A global pooling folded in: the input holds several vectors of a row's length.
                let row = (d.weights.len as usize / 4) / out.max(1);
                let positions = layer.inputs[0].len() / row.max(1);
                let layout = match writes.dense_weights {
                    DenseWeights::Int16 if row % 4 == 0 => DenseLayout::QuadsI16,
                    DenseWeights::Int8 if row % 8 == 0 => DenseLayout::PairsI8,
                    _ => DenseLayout::RowsI8,
                };
                let (weights, bias, requant, layout) = weighted_as(
                    &mut w,
                    l,
                    (d.weights, d.bias),
                    (out, positions),
                    (x, y),
                    layout,
                    &name,
                )?;
                if wide == Some(i) {
                    Op::DenseI8Wide(DenseI8Wide {
                        weights,
                        bias,
                        requant,
                        clamp: wide_clamp_for(d.activation, y, &name)?,
                        layout,
                    })
                } else {
                    Op::DenseI8(DenseI8 {
                        weights,
                        bias,
                        requant,
                        clamp: clamp_for(d.activation, y, &name)?,
                        layout,
                    })
                }
            }
            Op::Pool(p) => {
                let mut pool = *p;
                pool.activation = RtActivation::Identity;
                let rescale = if x == y {
                    None
                } else {
                    Some(requant(s_in / s_out, &name, "pooling")?)
                };
                Op::PoolI8(PoolI8 {
                    pool,
                    rescale,
                    clamp: clamp_for(p.activation, y, &name)?,
                })
            }
            Op::Add { activation } => {
                let b = qp[layer.inputs[1].id as usize];
                let r = quant::add_requant(s_in, b.scale as f64, s_out).ok_or_else(|| {
                    anyhow!("layer {name}: the addition's scales cannot be represented")
                })?;
                Op::AddI8(AddI8 {
                    input_requant: r.inputs,
                    output_requant: r.output,
                    clamp: clamp_for(*activation, y, &name)?,
                })
            }
            Op::PRelu { slope } => Op::PReluI8(elementwise::prelu_i8(
                &mut w,
                &f32s(l, *slope),
                (x, y),
                &name,
            )?),
            Op::Mul { activation } => {
                let gate = qp[layer.inputs[1].id as usize];
                let clamp = clamp_for(*activation, y, &name)?;
                Op::MulI8(elementwise::mul_i8((x, gate, y), clamp, &name)?)
            }
            Op::Affine(a) => {
                let (scale, shift) = (f32s(l, a.scale), f32s(l, a.shift));
                let mut si = Vec::with_capacity(scale.len());
                let mut oi = Vec::with_capacity(scale.len());
                let mut rq = Vec::with_capacity(scale.len());
                for (c, (&m, &b)) in scale.iter().zip(&shift).enumerate() {
                    let ch = quant::quantize_affine_channel(m as f64 * s_in / s_out, b as f64 / s_out)
                        .ok_or_else(|| anyhow!("layer {name}: channel {c}: scale {m} / shift {b} cannot be represented in int8"))?;
                    si.push(ch.scale);
                    oi.push(ch.offset);
                    rq.push(ch.requant);
                }
                let scale = w.i32s(si);
                let offset = w.i32s(oi);
                let requant = w.requant(&rq);
                Op::AffineI8(AffineI8 {
                    scale,
                    offset,
                    requant,
                    clamp: clamp_for(a.activation, y, &name)?,
                })
            }
            Op::Activation(a) => {
                let f = elementwise::activation_function(*a);
                let table = quant::lookup_table(f, (s_in, x.zero_point), (s_out, y.zero_point));
                let table: Vec<i8> = table.to_vec();
                Op::LookupI8 {
                    table: w.i8s(&table),
                }
            }
            Op::Softmax if wide_softmax == Some(i) => {
                // exp(-s_in * d) for d = max - q = 256 h + l, as two Q31 tables.
                let mut table =
                    |step: f64| {
                        w.u32s((0..256u32).map(|j| {
                            ((-s_in * step * j as f64).exp() * 2f64.powi(31)).round() as u32
                        }))
                    };
                let exp_hi = table(256.0);
                let exp_lo = table(1.0);
                Op::SoftmaxI16 { exp_hi, exp_lo }
            }
            Op::Softmax => {
                // exp(-s_in * d) in units of 2^-16 for d = max - q.
                let table =
                    (0..256u32).map(|d| ((-s_in * d as f64).exp() * 65536.0).round() as u32);
                Op::SoftmaxI8 {
                    exp_table: w.u32s(table),
                }
            }
            Op::Transpose(t) => Op::Transpose(*t),
            Op::Concat(c) => axis::concat(c, [x, qp[layer.inputs[1].id as usize]], y, &name)?,
            Op::Slice(s) => Op::Slice(*s),
            Op::Gather(g) => axis::gather(g, l, &mut w),
            Op::Pad(p) => Op::PadI8 {
                pad: p.pad,
                interior: p.interior,
                value: x.quantize(p.value),
            },
            other => bail!("layer {name}: {other:?} is already quantized"),
        };
        layers.push(format::Layer { op, ..*layer });
    }
    // Re-describe every tensor as int8 (the wide output as int16) and re-plan the arena for the
    // smaller tensors.
    let wide_tensors: Vec<u16> = [wide, wide_softmax]
        .into_iter()
        .flatten()
        .map(|k| l.layers[k].output.id)
        .chain(int16.iter().copied())
        .collect();
    let describe = |d: &TensorDesc| TensorDesc {
        dtype: if wide_tensors.contains(&d.id) {
            DType::I16
        } else {
            DType::I8
        },
        quant: Some(Quant {
            scale: qp[d.id as usize].scale,
            zero_point: qp[d.id as usize].zero_point,
        }),
        ..*d
    };
    for layer in &mut layers {
        layer.inputs = layer.inputs.map(|d| describe(&d));
        layer.output = describe(&layer.output);
    }
    let mut info = l.info;
    info.input = describe(&info.input);
    info.output = describe(&info.output);
    crate::lower::plan::replan(&mut info, &mut layers).context("planning the int8 arena")?;
    Ok(Lowered {
        info,
        layers,
        weights: w.bytes,
        notes: l.notes.clone(),
        tensor_values: l.tensor_values.clone(),
    })
}

/// Arena bytes the quantized model `q` would need with every activation int8 (its int16 input
/// and activations narrowed, the output head unchanged): what `--int16-activations 0` costs,
/// planned as the conversion plans it (layers over their inputs if `over_inputs`).
pub fn int8_activation_arena(q: &Lowered, over_inputs: bool) -> Result<u32> {
    arena_with_int8(q, &budget::int16_tensors(q), over_inputs)
}

/// The arena `q` would need with the tensors `ids` int8 instead of int16 (re-planned; nothing
/// else changes), as the device will have it: concatenation inputs and slices in shared
/// storage, and layers written over their inputs if `over_inputs` (`--no-in-place` is false).
pub(crate) fn arena_with_int8(q: &Lowered, ids: &[u16], over_inputs: bool) -> Result<u32> {
    let narrow = |d: &TensorDesc| TensorDesc {
        dtype: if ids.contains(&d.id) && d.dtype == DType::I16 {
            DType::I8
        } else {
            d.dtype
        },
        ..*d
    };
    let mut info = q.info;
    info.input = narrow(&info.input);
    info.output = narrow(&info.output);
    let mut layers = q.layers.clone();
    for layer in &mut layers {
        layer.inputs = layer.inputs.map(|d| narrow(&d));
        layer.output = narrow(&layer.output);
    }
    crate::lower::plan::replan(&mut info, &mut layers)?;
    crate::lower::plan::share_concat_storage(&mut info, &mut layers, over_inputs)?;
    Ok(info.arena_bytes)
}

/// The arena the quantized model `q` needs once planned as the conversion plans it (see
/// [`arena_with_int8`]): what an arena budget is held against.
pub fn device_arena(q: &Lowered, over_inputs: bool) -> Result<u32> {
    arena_with_int8(q, &[], over_inputs)
}

#[cfg(test)]
mod bias_scale_tests {
    use super::*;

    #[test]
    fn only_rows_whose_bias_would_overflow_are_widened() {
        // Row 0 ordinary, row 1 near zero with a bias, row 2 all zero with a bias; s_in 0.01.
        let w = [0.5, -0.25, 1e-12, 2e-12, 0.0, 0.0];
        let bias = [0.3, -0.076, 0.5];
        let rows = quantize_rows(&w, &bias, 3, 1, (0.01, -5), DType::I8, "t").unwrap();
        assert_eq!(rows.widened, vec![1]);
        assert_eq!(rows.scales[0], 0.5 / 127.0);
        assert_eq!(rows.scales[2], 1.0, "an all-zero row keeps the unit scale");
        // The widened row's bias fits beside its products and still means -0.076.
        let b = rows.bias[1];
        assert!(icefold::quant::contract::accumulator_fits(2, b));
        let real = b as f64 * 0.01 * rows.scales[1];
        assert!((real + 0.076).abs() < 1e-6 * 0.076 + 1e-9, "{real}");
        assert_eq!(&rows.weights[2..4], &[0, 0]);
        // Ordinary row: weights at full resolution, bias folded with the zero point.
        assert_eq!(&rows.weights[..2], &[127, -64]);
        assert_eq!(
            rows.bias[0],
            (0.3f64 / (0.01 * 0.5 / 127.0)).round() as i32 + 5 * 63
        );
    }

    #[test]
    fn a_row_with_more_products_than_the_accumulator_holds_is_refused_by_name() {
        // 2^17 products of 2^14 each exceed the int32 range before any bias.
        let n = 1 << 17;
        let err = quantize_rows(&vec![0.1; n], &[1.0], 1, 1, (0.01, 0), DType::I8, "#3 (fc)")
            .err()
            .unwrap()
            .to_string();
        for part in [
            "#3 (fc)",
            "output channel 0",
            "131072 products",
            "keep the model in f32",
        ] {
            assert!(err.contains(part), "{err}");
        }
    }
}
