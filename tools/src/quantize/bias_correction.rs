//! Empirical bias correction of the int8 convolution and dense layers against their f32 twins.

use anyhow::{anyhow, Result};
use icefold::format::{self, Conv2dI16, Conv2dI8, DenseI8, DenseI8Wide, Op};
use icefold::quant::accumulator_fits_for;
use icefold::quant::Requant;
use rayon::prelude::*;
use std::collections::HashMap;

use crate::io::Array;
use crate::lower::blob::{blob, AlignedBytes};
use crate::lower::Lowered;

use super::int16::conv_products;

/// Factor of a fixed-point `Requant` as a real number.
pub(super) fn requant_real(r: Requant) -> f64 {
    r.multiplier as f64 * 2f64.powi(r.shift - 31)
}

pub(super) fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Running sums of (f32 - int8) output error of one layer, per output channel, over positions where
/// the f32 output is not clamped by the fused activation (there the error reflects the bias).
pub(super) struct ErrorSums {
    sum: Vec<f64>,
    count: Vec<u64>,
}

/// Empirical bias correction: the mean per-channel error of every int8 convolution and dense layer
/// against its f32 twin, measured on the calibration data with the whole (already corrected) int8
/// network upstream, is folded into the layer's int32 bias. Rounding weights per channel shifts each
/// channel's mean output a little; through depthwise layers and classifier heads that rescale small
/// feature differences these shifts add up. Layers are corrected in order, one measurement each,
/// on at most `max_samples` calibration samples (a progress bar if `show_progress`).
///
/// One pass over the layers: every sample's int8 arena is kept as the corrected layers before the
/// current one left it, so each layer runs once per sample to measure it and once more, corrected,
/// to move on (not the whole network once per corrected layer, which made the correction
/// quadratic in depth). The results are the same: a layer's output depends only on the layers
/// before it.
pub fn correct_bias(
    q: &mut Lowered,
    f32_twin: &Lowered,
    calib: &Array,
    max_samples: usize,
    show_progress: bool,
) -> Result<()> {
    let subset = calib.first(max_samples.max(1));
    let reference = all_layer_outputs(&blob(f32_twin)?, &subset)?;
    let first = AlignedBytes::new(&blob(q)?);
    let mut arenas = input_arenas(first.as_slice(), &subset)?;
    let pb = crate::quantize::calibrate::progress(
        q.layers.len() as u64,
        "bias correction",
        "layers",
        show_progress,
    );
    // The blob is loaded (and so checked whole) once; only biases change from here on, so each
    // change swaps the weights section (`Model::with_weights`, which checks the layers against
    // it): reloading the blob re-checked the dataflow and arena plan, quadratic in depth, once
    // per corrected layer (4 of MixNet's 5.5 s of conversion).
    let loaded = crate::host::load(first.as_slice())?;
    fn with<'b>(loaded: &icefold::Model<'b>, w: &'b AlignedBytes) -> Result<icefold::Model<'b>> {
        loaded
            .with_weights(w.as_slice())
            .map_err(|e| anyhow!("bias correction: the corrected weights are refused: {e}"))
    }
    let mut weights = AlignedBytes::new(&q.weights);
    for k in 0..q.layers.len() {
        pb.set_position(k as u64);
        if correct_layer(q, k, &with(&loaded, &weights)?, &reference, &arenas)? {
            weights = AlignedBytes::new(&q.weights);
        }
        advance(&with(&loaded, &weights)?, &mut arenas, k)?;
    }
    pb.finish_and_clear();
    Ok(())
}

/// Measures layer `k` of `current` (the model of `q`'s blob) on every sample and folds its mean error per
/// channel into its bias in `q`; `false` if the layer is not a corrected kind (nothing changed).
fn correct_layer(
    q: &mut Lowered,
    k: usize,
    current: &icefold::Model<'_>,
    reference: &[Vec<Vec<f32>>],
    arenas: &[Vec<u32>],
) -> Result<bool> {
    let layer = q.layers[k];
    let (bias, requant, per, out_q, products) = match &layer.op {
        Op::Conv2dI8(Conv2dI8 { conv, requant, .. })
        | Op::Conv2dI16(Conv2dI16 { conv, requant, .. }) => (
            conv.bias,
            *requant,
            layer.output.dims[2] as usize,
            layer.output.quant,
            conv_products(conv, &layer.inputs[0]),
        ),
        Op::DenseI8(DenseI8 { bias, requant, .. })
        | Op::DenseI8Wide(DenseI8Wide { bias, requant, .. }) => (
            *bias,
            *requant,
            layer.output.len(),
            layer.output.quant,
            layer.inputs[0].len(),
        ),
        _ => return Ok(false),
    };
    let Some(out_q) = out_q else { return Ok(false) };
    let sums = measure_errors(reference, current, q, arenas, k)?;
    for c in 0..per {
        let count = sums.count[c];
        if count == 0 {
            continue;
        }
        let mean_err = sums.sum[c] / count as f64;
        let m = Requant {
            multiplier: i32_at(&q.weights, requant.multipliers.offset as usize + 4 * c),
            shift: i32_at(&q.weights, requant.shifts.offset as usize + 4 * c),
        };
        // Accumulator scale s_in * s_w = factor * s_out.
        let acc_scale = requant_real(m) * out_q.scale as f64;
        if acc_scale <= 0.0 {
            continue;
        }
        let at = bias.offset as usize + 4 * c;
        let new = i32_at(&q.weights, at) as f64 + (mean_err / acc_scale).round();
        let input = layer.inputs[0].dtype;
        if (i32::MIN as f64..=i32::MAX as f64).contains(&new)
            && accumulator_fits_for(input, products, new as i32)
        {
            q.weights[at..at + 4].copy_from_slice(&(new as i32).to_le_bytes());
        }
    }
    Ok(true)
}

/// One int8 arena per sample with the sample written as the model's raw input (quantized, and
/// transposed where the model says so, as `Model::run_f32` writes it), ready for layer 0.
fn input_arenas(blob: &[u8], x: &Array) -> Result<Vec<Vec<u32>>> {
    let b = AlignedBytes::new(blob);
    let m = crate::host::load(b.as_slice())?;
    if m.info().input.dtype == format::DType::F32 {
        return Err(anyhow!("bias correction: the model input is f32, not int8"));
    }
    let words = (m.info().arena_bytes as usize).div_ceil(4);
    (0..x.samples())
        .map(|i| {
            let mut arena = vec![0u32; words];
            m.write_input_f32(bytemuck::cast_slice_mut(&mut arena), x.sample(i))
                .map_err(|e| anyhow!("bias correction: sample {i}: {e}"))?;
            Ok(arena)
        })
        .collect()
}

/// Runs layer `k` of `m` on every sample's arena in place.
fn advance(m: &icefold::Model<'_>, arenas: &mut [Vec<u32>], k: usize) -> Result<()> {
    arenas.par_iter_mut().try_for_each(|arena| {
        m.run_layers_observed(bytemuck::cast_slice_mut(arena), k..k + 1, &mut ())
            .map_err(|e| anyhow!("bias correction, int8 model: {e}"))
    })
}

/// Keeps one layer's output, as f32 (int8 dequantized with its tensor's quantization).
pub(super) struct Capture {
    layer: usize,
    out: Vec<f32>,
}

impl icefold::Observer for Capture {
    fn layer_end(&mut self, i: u16, layer: &format::Layer, out: &[u8]) {
        if i as usize != self.layer {
            return;
        }
        self.out = crate::host::tensor_values(&layer.output, out);
    }
}

/// Every layer's output of a model for every sample (the f32 reference of the bias correction).
pub(super) fn all_layer_outputs(blob: &[u8], x: &Array) -> Result<Vec<Vec<Vec<f32>>>> {
    struct All(Vec<Vec<f32>>);
    impl icefold::Observer for All {
        fn layer_end(&mut self, _i: u16, layer: &format::Layer, out: &[u8]) {
            self.0.push(crate::host::tensor_values(&layer.output, out));
        }
    }
    let b = AlignedBytes::new(blob);
    // The reference f32 kernels: the corrections, and so the blob, must not depend on whether
    // this machine has the fast f32 kernels (they round differently).
    let m = crate::host::load(b.as_slice())?.with_reference_f32_kernels();
    let (words, outputs) = (
        (m.info().arena_bytes as usize).div_ceil(4),
        m.info().output.len(),
    );
    (0..x.samples())
        .into_par_iter()
        .map(|i| {
            let mut arena = vec![0u32; words];
            let mut out = vec![0f32; outputs];
            let mut all = All(Vec::new());
            m.run_f32_observed(
                bytemuck::cast_slice_mut(&mut arena),
                x.sample(i),
                &mut out,
                &mut all,
            )
            .map_err(|e| anyhow!("bias correction, f32 model: {e}"))?;
            Ok(all.0)
        })
        .collect()
}

/// Layer `k`'s error per output channel against the f32 reference, over every sample, at the
/// positions the fused activation does not clamp.
///
/// Measured after the output's rounding (the layer runs on a copy of each sample's arena), except
/// in the *tied* channels of a convolution that reads a zero-inserted input (a transposed
/// convolution, [`reads_zero_inserted`]), measured before it (the accumulator in real units,
/// [`accumulators`]): a channel where more than half of those positions share one accumulator
/// value (the outputs whose window holds only inserted zeros). There the outputs sit on one side of a rounding boundary together, so the
/// error after rounding is that boundary's offset, not a bias: correcting it by a quarter step
/// moves all of them a whole step (the grouped decoder: relative L2 0.045 without correction,
/// 0.068 with the correction measured after rounding, 0.046 with tied channels measured before).
/// Elsewhere the rounding errors of the positions are independent, and measuring after rounding
/// also corrects the mean the rounding itself adds; measuring every channel before rounding was
/// worse on the architecture fixtures (docs/QUANTIZATION.md).
fn measure_errors(
    reference: &[Vec<Vec<f32>>],
    candidate: &icefold::Model<'_>,
    q: &Lowered,
    arenas: &[Vec<u32>],
    k: usize,
) -> Result<ErrorSums> {
    let layer = &q.layers[k];
    let ch = (layer.output.dims[2] as usize).max(1);
    let empty = ErrorSums {
        sum: vec![0.0; ch],
        count: vec![0; ch],
    };
    let (min, max) = match &layer.op {
        Op::Conv2dI8(c) => (c.clamp.min.into(), c.clamp.max.into()),
        Op::DenseI8(d) => (d.clamp.min.into(), d.clamp.max.into()),
        Op::DenseI8Wide(d) => (d.clamp.min, d.clamp.max),
        Op::Conv2dI16(c) => (c.clamp.min, c.clamp.max),
        _ => return Ok(empty),
    };
    let Some(oq) = layer.output.quant else {
        return Ok(empty);
    };
    let lo = oq.scale * (i32::from(min) - oq.zero_point) as f32;
    let hi = oq.scale * (i32::from(max) - oq.zero_point) as f32;
    let mut sums = rounded_errors(reference, candidate, arenas, k, (lo, hi), ch)?;
    let (conv, requant) = match &layer.op {
        Op::Conv2dI8(c) => (c.conv, c.requant),
        Op::Conv2dI16(c) => (c.conv, c.requant),
        _ => return Ok(sums),
    };
    if !reads_zero_inserted(q, k) {
        return Ok(sums);
    }
    let acc = accumulators(q, layer, &conv, requant, oq, arenas)?;
    let mut before = ErrorSums {
        sum: vec![0.0; ch],
        count: vec![0; ch],
    };
    // How often each accumulator value occurs per channel (the f32 bits: outputs that read the
    // same inputs, e.g. only zeros, get bit-identical sums).
    let mut values: Vec<HashMap<u32, u64>> = vec![HashMap::new(); ch];
    for (per_layer, acc) in reference.iter().zip(&acc) {
        for (idx, (&fr, &fa)) in per_layer[k].iter().zip(acc).enumerate() {
            if fr > lo && fr < hi {
                before.sum[idx % ch] += (fr - fa) as f64;
                before.count[idx % ch] += 1;
                *values[idx % ch].entry(fa.to_bits()).or_default() += 1;
            }
        }
    }
    for (c, counts) in values.iter().enumerate() {
        let most = counts.values().copied().max().unwrap_or(0);
        if most >= 2 && 2 * most > before.count[c] {
            sums.sum[c] = before.sum[c];
            sums.count[c] = before.count[c];
        }
    }
    Ok(sums)
}

/// Whether layer `k` reads a zero-inserted tensor: the output of a padding with interior
/// padding, which is how a transposed convolution is lowered. Its channels tie by construction
/// (every output whose window holds only inserted zeros has the same accumulator). Ties found in
/// other layers (a ReLU's zeros read by a depthwise layer) are data, not structure: measuring
/// those before rounding moved the MLPerf and architecture fixtures both ways (better on
/// MobileNetV1-0.25's default conversion, worse on DS-CNN's and MobileNetV1's all-int8 ones and
/// on ShuffleNetV2) for one host convolution per layer and sample of conversion time
/// (docs/QUANTIZATION.md), so only structural ties take the accumulator measurement.
fn reads_zero_inserted(q: &Lowered, k: usize) -> bool {
    let input = q.layers[k].inputs[0].id;
    q.layers[..k].iter().rev().any(|l| {
        l.output.id == input
            && match l.op {
                Op::PadI8 { interior, .. } => interior != [0, 0],
                Op::Pad(p) => p.interior != [0, 0],
                _ => false,
            }
    })
}

/// Layer `k`'s error per output channel after its output rounding, at the positions where the
/// reference lies strictly inside `(lo, hi)`: the layer runs on a copy of each sample's arena
/// (which holds its inputs).
fn rounded_errors(
    reference: &[Vec<Vec<f32>>],
    cm: &icefold::Model<'_>,
    arenas: &[Vec<u32>],
    k: usize,
    (lo, hi): (f32, f32),
    ch: usize,
) -> Result<ErrorSums> {
    let mut sums = ErrorSums {
        sum: vec![0.0; ch],
        count: vec![0; ch],
    };
    // The samples run on every core; the errors are summed in sample order afterwards, so the
    // f64 sums (and the corrections) do not depend on the thread count.
    let outputs = arenas
        .par_iter()
        .map(|arena| {
            let mut c = Capture {
                layer: k,
                out: Vec::new(),
            };
            let mut scratch = arena.clone();
            cm.run_layers_observed(bytemuck::cast_slice_mut(&mut scratch), k..k + 1, &mut c)
                .map_err(|e| anyhow!("bias correction, int8 model: {e}"))?;
            Ok(c.out)
        })
        .collect::<Result<Vec<_>>>()?;
    for (per_layer, out) in reference.iter().zip(&outputs) {
        for (idx, (&fr, &fc)) in per_layer[k].iter().zip(out).enumerate() {
            if fr > lo && fr < hi {
                sums.sum[idx % ch] += (fr - fc) as f64;
                sums.count[idx % ch] += 1;
            }
        }
    }
    Ok(sums)
}

/// The accumulators of convolution `layer` in real units (before the output's rounding and clamp)
/// on every sample's arena: the reference f32 convolution of the dequantized int8/int16 input with
/// the dequantized int8 weights and the int32 bias as it stands.
fn accumulators(
    q: &Lowered,
    layer: &format::Layer,
    conv: &format::Conv2d,
    requant: format::ChannelRequant,
    oq: format::Quant,
    arenas: &[Vec<u32>],
) -> Result<Vec<Vec<f32>>> {
    let input = layer.inputs[0];
    let iq = input
        .quant
        .ok_or_else(|| anyhow!("bias correction: int8 convolution input without quantization"))?;
    let out_c = layer.output.dims[2] as usize;
    let in_c = input.dims[2] as usize;
    let per_out =
        conv.kernel[0] as usize * conv.kernel[1] as usize * (in_c / conv.groups.max(1) as usize);
    let wq =
        &q.weights[conv.weights.offset as usize..(conv.weights.offset + conv.weights.len) as usize];
    let mut weights = vec![0f32; out_c * per_out];
    let mut bias = vec![0f32; out_c];
    for o in 0..out_c {
        let m = Requant {
            multiplier: i32_at(&q.weights, requant.multipliers.offset as usize + 4 * o),
            shift: i32_at(&q.weights, requant.shifts.offset as usize + 4 * o),
        };
        // s_in * s_w[o] = factor * s_out.
        let acc_scale = requant_real(m) * oq.scale as f64;
        let s_w = acc_scale / iq.scale as f64;
        let mut sum_w = 0i64;
        for j in 0..per_out {
            let w = wq[o * per_out + j] as i8;
            sum_w += i64::from(w);
            weights[o * per_out + j] = (f64::from(w) * s_w) as f32;
        }
        let b = i64::from(i32_at(&q.weights, conv.bias.offset as usize + 4 * o));
        // The stored bias has the input zero point's term folded in; the real input carries it.
        bias[o] = ((b + i64::from(iq.zero_point) * sum_w) as f64 * acc_scale) as f32;
    }
    let pad_values: Vec<f32> = if conv.pad_values.len == 0 {
        Vec::new()
    } else {
        let pv = &q.weights[conv.pad_values.offset as usize
            ..(conv.pad_values.offset + conv.pad_values.len) as usize];
        match input.dtype {
            format::DType::I16 => pv
                .chunks_exact(2)
                .map(|c| icefold::engine::dequantize_i16(i16::from_le_bytes([c[0], c[1]]), iq))
                .collect(),
            _ => pv
                .iter()
                .map(|&b| icefold::engine::dequantize(b as i8, iq))
                .collect(),
        }
    };
    let geometry = icefold::kernels::ConvGeometry {
        kernel: [conv.kernel[0] as usize, conv.kernel[1] as usize],
        stride: [conv.stride[0] as usize, conv.stride[1] as usize],
        dilation: [conv.dilation[0] as usize, conv.dilation[1] as usize],
        pad: conv.pad.map(usize::from),
        groups: conv.groups as usize,
        out_pixel_stride: 0,
        in_pixel_stride: 0,
    };
    let in_dims = input.dims.map(usize::from);
    let out_dims = layer.output.dims.map(usize::from);
    arenas
        .par_iter()
        .map(|arena| {
            let bytes: &[u8] = bytemuck::cast_slice(arena);
            let start = input.offset as usize;
            let (skip, len) = input.view_span();
            let x = crate::host::tensor_values(&input, &bytes[start + skip..start + skip + len]);
            let mut out = vec![0f32; out_dims.iter().product()];
            icefold::kernels::reference::conv::conv2d(
                &geometry,
                &icefold::kernels::Activation::Identity,
                in_dims,
                &x,
                out_dims,
                &mut out,
                &weights,
                &bias,
                &pad_values,
            );
            Ok(out)
        })
        .collect()
}
