//! The MCU's outputs and per-layer trace against the host runtime's.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Result};
use icefold::format::{DType, Layer};

use super::boundary::{boundary_dtype, quantized_inputs, RawInputs};
use super::profile::Profile;
use super::report::TraceRecord;
use crate::host::{self, Diff};
use crate::io::Array;

/// Largest relative L2 error between MCU and host f32 outputs that passes.
///
/// Both compute in IEEE single precision, but not always with the same kernels: a hard-float
/// Cortex-M runs the fast f32 kernels (register tiles, each product added to its accumulator in
/// index order) where the host runs the reference ones (eight-lane dot products), and every
/// summation order rounds differently. Over a deep network that reaches 1e-5 (MobileNetV1-0.25 on
/// the M4F: 9.7e-6, docs/BENCHMARKS.md), so the limit is the f32 parity bar the runtime holds
/// against onnxruntime, which sums in yet another order (tests/common `MAX_REL_L2`). Cores without
/// the fast f32 kernels (M0, M3) still match the host bit for bit.
pub const F32_REL_L2_LIMIT: f64 = 5e-5;

/// MCU outputs against the host runtime's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Parity {
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Relative L2 error over all outputs.
    pub rel_l2: f64,
    /// The output bytes are identical (the criterion for int8 models).
    pub bytes_identical: bool,
    /// The verdict: f32 within [`F32_REL_L2_LIMIT`]; int8 byte-identical.
    pub pass: bool,
}

/// Compares the MCU's outputs with the host runtime's for the same blob and inputs.
///
/// f32 models: `run_f32` on the host against the firmware's f32 outputs. int8 models:
/// `run_i8` on the host with the same quantized inputs the firmware got, raw int8 bytes
/// against raw int8 bytes (the distances are then over the dequantized outputs).
pub fn compare(profile: &Profile, blob: &[u8], x: &Array) -> Result<Parity> {
    let aligned = crate::lower::blob::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let dtype = boundary_dtype(&model)?;
    let (want, want_bytes) = match dtype {
        DType::F32 => {
            // The firmware applied the input policy (refusing non-finite samples unless told
            // `--allow-nonfinite`); here only its outputs are compared.
            let want = host::run_f32_allowing_nonfinite(&model, x)?;
            let bytes = want.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (want, bytes)
        }
        _ => {
            let raw = match model.output().dtype {
                DType::I16 => bytemuck::cast_slice(&host_run_i8::<i16>(&model, x)?).to_vec(),
                _ => bytemuck::cast_slice(&host_run_i8::<i8>(&model, x)?).to_vec(),
            };
            let want = Array {
                shape: profile.outputs.shape.clone(),
                data: crate::host::tensor_values(model.output(), &raw),
            };
            (want, raw)
        }
    };
    let Diff {
        max_abs, rel_l2, ..
    } = host::diff(&profile.outputs, &want)?;
    let bytes_identical = want_bytes == profile.output_bytes.concat();
    let pass = match dtype {
        DType::F32 => rel_l2 <= F32_REL_L2_LIMIT,
        _ => bytes_identical,
    };
    Ok(Parity {
        max_abs,
        rel_l2,
        bytes_identical,
        pass,
    })
}

/// The host runtime's raw outputs (`run_i8`, int8 or int16 elements `O`) for the samples of `x`,
/// quantized exactly as the firmware's inputs were.
fn host_run_i8<O: icefold::RawElement>(model: &icefold::Model<'_>, x: &Array) -> Result<Vec<O>> {
    match quantized_inputs(model, x)? {
        RawInputs::I8(inputs) => host_run_raw(model, x, &inputs),
        RawInputs::I16(inputs) => host_run_raw(model, x, &inputs),
    }
}

/// `run_i8` over the raw input samples `inputs` (of `x`'s shape) one after the other.
fn host_run_raw<I: icefold::RawElement, O: icefold::RawElement>(
    model: &icefold::Model<'_>,
    x: &Array,
    inputs: &[I],
) -> Result<Vec<O>> {
    let info = model.info();
    let (in_len, out_len) = (info.input.len(), info.output.len());
    if in_len == 0 || out_len == 0 || inputs.len() != x.samples() * in_len {
        bail!(
            "input has shape {:?}, which the model does not take",
            x.shape
        );
    }
    let mut arena = vec![0u32; (info.arena_bytes as usize).div_ceil(4)];
    let mut out = vec![O::zeroed(); x.samples() * out_len];
    for (i, (xi, yi)) in inputs
        .chunks_exact(in_len)
        .zip(out.chunks_exact_mut(out_len))
        .enumerate()
    {
        model
            .run_i8(bytemuck::cast_slice_mut(&mut arena), xi, yi)
            .map_err(|e| anyhow!("sample {i}: runtime error: {e}"))?;
    }
    Ok(out)
}

/// The host runtime's per-layer trace of sample 0 of `x`: the same records the defmt firmware
/// logs (`icefold::trace`), computed with `run_f32_observed` / `run_i8_observed` on the same
/// (for int8, identically quantized) input.
pub fn host_trace(blob: &[u8], x: &Array) -> Result<Vec<TraceRecord>> {
    struct Recorder(Vec<TraceRecord>);
    impl icefold::Observer for Recorder {
        fn layer_end(&mut self, index: u16, layer: &Layer, output: &[u8]) {
            self.0.push(TraceRecord {
                layer: usize::from(index),
                op: layer.op.name().to_string(),
                bytes: output.len(),
                checksum: icefold::trace::checksum(output),
            });
        }
    }
    let aligned = crate::lower::blob::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let info = *model.info();
    let (in_len, out_len) = (info.input.len(), info.output.len());
    if x.samples() == 0 || x.sample_len() != in_len {
        bail!(
            "input has shape {:?}, which the model does not take",
            x.shape
        );
    }
    let mut arena = vec![0u32; (info.arena_bytes as usize).div_ceil(4)];
    let arena: &mut [u8] = bytemuck::cast_slice_mut(&mut arena);
    let mut recorder = Recorder(Vec::new());
    let result = match boundary_dtype(&model)? {
        DType::F32 => {
            let mut out = vec![0f32; out_len];
            model.run_f32_observed(arena, &x.data[..in_len], &mut out, &mut recorder)
        }
        _ => match quantized_inputs(&model, x)? {
            RawInputs::I8(v) => run_raw_observed(&model, arena, &v[..in_len], &mut recorder),
            RawInputs::I16(v) => run_raw_observed(&model, arena, &v[..in_len], &mut recorder),
        },
    };
    result.map_err(|e| anyhow!("sample 0: runtime error: {e}"))?;
    Ok(recorder.0)
}

/// `run_i8_observed` on one raw input sample, into an output buffer of the model's element type.
fn run_raw_observed<I: icefold::RawElement>(
    model: &icefold::Model<'_>,
    arena: &mut [u8],
    input: &[I],
    observer: &mut impl icefold::Observer,
) -> Result<(), icefold::RunError> {
    let out_len = model.output().len();
    if model.output().dtype == DType::I16 {
        model.run_i8_observed(arena, input, &mut vec![0i16; out_len], observer)
    } else {
        model.run_i8_observed(arena, input, &mut vec![0i8; out_len], observer)
    }
}

/// The first layer where the device's trace and the host's differ (`None`: identical traces).
pub fn first_divergence(device: &[TraceRecord], host: &[TraceRecord]) -> Option<usize> {
    let common = device.len().min(host.len());
    (0..common)
        .find(|&i| device[i] != host[i])
        .or((device.len() != host.len()).then_some(common))
}

/// The device's trace next to the host's, one row per layer.
pub fn render_trace(device: &[TraceRecord], host: &[TraceRecord]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>3}  {:<12} {:>9}  {:>10}  {:>10}",
        "#", "op", "bytes", "device", "host"
    );
    for (i, d) in device.iter().enumerate() {
        let h = host.get(i);
        let mark = if h == Some(d) { "" } else { "  <- differs" };
        let _ = writeln!(
            s,
            "{:>3}  {:<12} {:>9}  {:>10}  {:>10}{mark}",
            d.layer,
            d.op,
            d.bytes,
            format!("{:08x}", d.checksum),
            h.map(|h| format!("{:08x}", h.checksum)).unwrap_or_default()
        );
    }
    s
}
