//! Running blobs on the host with the real runtime, and comparing outputs.

use anyhow::{anyhow, bail, Result};
use icefold::Model;
use rayon::prelude::*;

use crate::io::Array;

/// The logical (ONNX, batch removed) shape of a boundary tensor of `dims` (for the input, in the
/// caller's layout: `ModelInfo::caller_input_dims`).
pub fn logical_shape(dims: [u16; 3], rank: u8) -> Vec<usize> {
    let rank = (rank as usize).clamp(1, 3);
    dims[3 - rank..].iter().map(|&d| d as usize).collect()
}

/// Load a blob with the runtime's checks, mapping its error to a readable message.
pub fn load(blob: &[u8]) -> Result<Model<'_>> {
    Model::new_checked(blob).map_err(|e| anyhow!("the model blob is invalid: {e}"))
}

/// Run every sample of `x` (shaped `[N, ...]` like the ONNX input) through the f32 runtime.
pub fn run_f32(model: &Model<'_>, x: &Array) -> Result<Array> {
    run_samples(model, x, false)
}

fn run_samples(model: &Model<'_>, x: &Array, allow_nonfinite: bool) -> Result<Array> {
    let info = model.info();
    let in_shape = logical_shape(info.caller_input_dims(), info.input_rank);
    let out_shape = logical_shape(info.output.dims, info.output_rank);
    if x.shape.len() != in_shape.len() + 1 || x.shape[1..] != in_shape[..] {
        bail!(
            "input has shape {:?}; the model takes [N, {}] (N samples stacked on axis 0, in the ONNX \
             model's own layout)",
            x.shape,
            in_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let words = (info.arena_bytes as usize).div_ceil(4);
    let out_len: usize = out_shape.iter().product();
    let mut data = vec![0f32; x.samples() * out_len];
    // Samples run on every core (`--threads`), one arena per thread; each output lands in its own
    // slot, so the result does not depend on the thread count, and the first failing sample is
    // the one reported.
    let results: Vec<Result<(), icefold::RunError>> = data
        .par_chunks_mut(out_len.max(1))
        .enumerate()
        .map_init(
            || vec![0u32; words],
            |arena, (i, out)| {
                let arena = bytemuck::cast_slice_mut::<u32, u8>(arena);
                if allow_nonfinite {
                    model.run_f32_allowing_nonfinite_observed(arena, x.sample(i), out, &mut ())
                } else {
                    model.run_f32(arena, x.sample(i), out)
                }
            },
        )
        .collect();
    if let Some((i, Err(e))) = results.iter().enumerate().find(|(_, r)| r.is_err()) {
        bail!("sample {i}: runtime error: {e}");
    }
    let mut shape = vec![x.samples()];
    shape.extend(out_shape);
    Ok(Array { shape, data })
}

/// Refuses an input set with a NaN or infinite element, naming the first one: its sample, its
/// position in the sample (in the array's own layout) and its value. What the runtime's
/// `run_f32` refuses too ([`icefold::RunError::NonFiniteInput`]), checked up front so a command
/// fails before any work with the place in the file (`--allow-nonfinite` skips the check).
pub fn check_finite(x: &Array, source: &std::path::Path) -> Result<()> {
    let n = x.sample_len().max(1);
    let Some((flat, value)) = icefold::engine::first_non_finite(&x.data) else {
        return Ok(());
    };
    let (sample, mut within) = (flat / n, flat % n);
    let dims = x.shape.get(1..).unwrap_or_default();
    let mut position = vec![0; dims.len()];
    for (p, &d) in position.iter_mut().zip(dims).rev() {
        *p = within % d.max(1);
        within /= d.max(1);
    }
    bail!(
        "{}: sample {sample}, element {position:?} (index {} of the sample) is {value}: the          model would answer confidently on it (NaN vanishes in a ReLU or in the int8 input          conversion). Fix the data, or pass --allow-nonfinite to run anyway",
        source.display(),
        flat % n
    )
}

/// [`run_f32`] that lets NaN and infinite inputs through to the model
/// ([`icefold::Model::run_f32_allowing_nonfinite_observed`]): `--allow-nonfinite`.
pub fn run_f32_allowing_nonfinite(model: &Model<'_>, x: &Array) -> Result<Array> {
    run_samples(model, x, true)
}

/// How far `got` is from `want`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diff {
    /// Largest absolute difference.
    pub max_abs: f64,
    /// `||got - want|| / ||want||` over all elements.
    pub rel_l2: f64,
    /// Samples whose argmax agrees, out of `samples`.
    pub top1_agree: usize,
    /// Number of samples compared.
    pub samples: usize,
}

/// Compare two arrays of the same shape sample by sample.
pub fn diff(got: &Array, want: &Array) -> Result<Diff> {
    if got.shape != want.shape {
        bail!("shapes differ: {:?} vs {:?}", got.shape, want.shape);
    }
    let (mut max_abs, mut num, mut den) = (0f64, 0f64, 0f64);
    for (&g, &w) in got.data.iter().zip(&want.data) {
        let d = (g as f64 - w as f64).abs();
        max_abs = max_abs.max(if d.is_nan() { f64::INFINITY } else { d });
        num += d * d;
        den += (w as f64) * (w as f64);
    }
    let rel_l2 = if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    };
    let samples = got.samples();
    let top1_agree = (0..samples)
        .filter(|&i| argmax(got.sample(i)) == argmax(want.sample(i)))
        .count();
    Ok(Diff {
        max_abs,
        rel_l2,
        top1_agree,
        samples,
    })
}

/// Index of the largest element (first on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// A tensor's bytes as real values: f32 as stored, int8 and int16 dequantized with the tensor's
/// quantization (what `run_f32` returns for a model output; a layer's output as an `Observer`
/// sees it).
pub fn tensor_values(tensor: &icefold::format::TensorDesc, bytes: &[u8]) -> Vec<f32> {
    use icefold::engine::{dequantize, dequantize_i16};
    use icefold::format::DType;
    let mut values = Vec::with_capacity(tensor.len());
    // A view's bytes hold other tensors' channels between its pixels (zero-copy concatenation):
    // its values are its element runs, converted run by run (not byte by byte through a copy,
    // which was a sixth of an int8 conversion's time: bias correction and the per-layer report
    // take every layer's output of every calibration sample through here).
    for run in tensor.element_runs(bytes) {
        match (tensor.dtype, tensor.quant) {
            (DType::I8, Some(q)) => values.extend(run.iter().map(|&b| dequantize(b as i8, q))),
            (DType::I16, Some(q)) => values.extend(
                run.chunks_exact(2)
                    .map(|c| dequantize_i16(i16::from_le_bytes([c[0], c[1]]), q)),
            ),
            _ => values.extend(
                run.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
    }
    values
}

/// Collects each layer's output as real values.
struct LayerCapture {
    outputs: Vec<Vec<f32>>,
}

impl icefold::Observer for LayerCapture {
    fn layer_end(&mut self, _index: u16, layer: &icefold::format::Layer, output: &[u8]) {
        self.outputs.push(tensor_values(&layer.output, output));
    }
}

/// Run `reference` (f32) and `candidate` (e.g. its int8 twin, with the same layer list) over every
/// sample of `x`; return per-layer SQNR in dB and the end-to-end difference of the outputs.
pub fn compare_layers(
    reference: &[u8],
    candidate: &[u8],
    x: &Array,
    progress: bool,
) -> Result<(Vec<f64>, Diff)> {
    let (rb, cb) = (
        crate::lower::blob::AlignedBytes::new(reference),
        crate::lower::blob::AlignedBytes::new(candidate),
    );
    let (rm, cm) = (load(rb.as_slice())?, load(cb.as_slice())?);
    let n_layers = rm.info().layer_count as usize;
    if cm.info().layer_count as usize != n_layers {
        bail!("the two models have different layer lists");
    }
    let mut signal = vec![0f64; n_layers];
    let mut noise = vec![0f64; n_layers];
    let mut arena_r = vec![0u32; (rm.info().arena_bytes as usize).div_ceil(4)];
    let mut arena_c = vec![0u32; (cm.info().arena_bytes as usize).div_ceil(4)];
    let out_len = rm.info().output.len();
    let (mut out_r, mut out_c) = (
        vec![0f32; x.samples() * out_len],
        vec![0f32; x.samples() * out_len],
    );
    let pb = if progress {
        let pb = indicatif::ProgressBar::new(x.samples() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:>24} [{bar:30}] {pos}/{len} samples ({eta})",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message("int8 vs f32 per layer");
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    for i in 0..x.samples() {
        let mut cr = LayerCapture {
            outputs: Vec::with_capacity(n_layers),
        };
        let mut cc = LayerCapture {
            outputs: Vec::with_capacity(n_layers),
        };
        let o = i * out_len..(i + 1) * out_len;
        rm.run_f32_observed(
            bytemuck::cast_slice_mut(&mut arena_r),
            x.sample(i),
            &mut out_r[o.clone()],
            &mut cr,
        )
        .map_err(|e| anyhow!("reference model, sample {i}: {e}"))?;
        cm.run_f32_observed(
            bytemuck::cast_slice_mut(&mut arena_c),
            x.sample(i),
            &mut out_c[o],
            &mut cc,
        )
        .map_err(|e| anyhow!("quantized model, sample {i}: {e}"))?;
        for (k, (a, b)) in cr.outputs.iter().zip(&cc.outputs).enumerate() {
            for (&r, &c) in a.iter().zip(b) {
                signal[k] += (r as f64) * (r as f64);
                noise[k] += (r as f64 - c as f64).powi(2);
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let sqnr = signal
        .iter()
        .zip(&noise)
        .map(|(&s, &n)| {
            if n == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (s / n).log10()
            }
        })
        .collect();
    let mut shape = vec![x.samples()];
    shape.extend(logical_shape(rm.info().output.dims, rm.info().output_rank));
    let d = diff(
        &Array {
            shape: shape.clone(),
            data: out_c,
        },
        &Array { shape, data: out_r },
    )?;
    Ok((sqnr, d))
}
