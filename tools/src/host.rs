//! Running blobs on the host with the real runtime, and comparing outputs.

use anyhow::{anyhow, bail, Result};
use icefold::format::TensorDesc;
use icefold::Model;

use crate::io::Array;

/// The logical (ONNX, batch removed) shape recorded for a boundary tensor.
pub fn logical_shape(desc: &TensorDesc, rank: u8) -> Vec<usize> {
    let rank = (rank as usize).clamp(1, 3);
    desc.dims[3 - rank..].iter().map(|&d| d as usize).collect()
}

/// Load a blob with the runtime's checks, mapping its error to a readable message.
pub fn load(blob: &[u8]) -> Result<Model<'_>> {
    Model::new_checked(blob).map_err(|e| anyhow!("the model blob is invalid: {e}"))
}

/// Run every sample of `x` (shaped `[N, ...]` like the ONNX input) through the f32 runtime.
pub fn run_f32(model: &Model<'_>, x: &Array) -> Result<Array> {
    let info = model.info();
    let in_shape = logical_shape(&info.input, info.input_rank);
    let out_shape = logical_shape(&info.output, info.output_rank);
    if x.shape.len() != in_shape.len() + 1 || x.shape[1..] != in_shape[..] {
        bail!(
            "input has shape {:?}; the model takes [N, {}] (N samples stacked on axis 0, in the ONNX \
             model's own layout)",
            x.shape,
            in_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let mut arena = vec![0u32; (info.arena_bytes as usize).div_ceil(4)];
    let arena = bytemuck::cast_slice_mut::<u32, u8>(&mut arena);
    let out_len: usize = out_shape.iter().product();
    let mut data = vec![0f32; x.samples() * out_len];
    for (i, out) in data.chunks_exact_mut(out_len.max(1)).enumerate() {
        model
            .run_f32(arena, x.sample(i), out)
            .map_err(|e| anyhow!("sample {i}: runtime error: {e}"))?;
    }
    let mut shape = vec![x.samples()];
    shape.extend(out_shape);
    Ok(Array { shape, data })
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
