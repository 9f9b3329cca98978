//! `icefold run`: a blob on the host over N samples.

use std::path::PathBuf;

use anyhow::{Context, Result};

use icefold_tool::drift;
use icefold_tool::host;
use icefold_tool::io;

use super::read_blob;

/// Arguments of `icefold run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The blob written by `convert`.
    blob: PathBuf,
    /// float32 .npy, N samples stacked on axis 0 in the ONNX model's input shape.
    #[arg(long)]
    input: PathBuf,
    /// Where to write the float32 outputs ([N, ...] in the ONNX model's output shape).
    #[arg(long)]
    output: PathBuf,
    /// Run even if an input element is NaN or infinite (by default the command refuses, naming
    /// the sample and element: the model would answer confidently on bad sensor data).
    #[arg(long)]
    allow_nonfinite: bool,
    /// The calibration samples the blob was quantized with (int8 blobs): the per-layer report of
    /// clamped values then compares the inputs with them and flags drift.
    #[arg(long, value_name = "CALIB_NPY")]
    calib: Option<PathBuf>,
}

pub fn run(a: &RunArgs) -> Result<()> {
    let (blob_path, input, output) = (a.blob.as_path(), a.input.as_path(), a.output.as_path());
    io::ensure_not_an_input(output, &[blob_path, input])?;
    let blob = read_blob(blob_path)?;
    let model = host::load(blob.as_slice()).with_context(|| blob_path.display().to_string())?;
    let x = io::read_npy(input)?;
    let y = if a.allow_nonfinite {
        host::run_f32_allowing_nonfinite(&model, &x)?
    } else {
        host::check_finite(&x, input)?;
        host::run_f32(&model, &x)?
    };
    io::write_npy(output, &y, &[blob_path, input])?;
    println!(
        "ran {} samples; wrote {} {:?}",
        x.samples(),
        output.display(),
        y.shape
    );
    if model.input().dtype != icefold::format::DType::F32 {
        let on_inputs = drift::clamp_counts(&model, &x, a.allow_nonfinite)?;
        let on_calib = match &a.calib {
            Some(path) => {
                let calib = io::read_npy(path)?;
                let layers = drift::clamp_counts(&model, &calib, false)?;
                Some((drift::input_clamps(&model, &calib), layers))
            }
            None => None,
        };
        println!();
        let on_inputs = (drift::input_clamps(&model, &x), &on_inputs[..]);
        let on_calib = on_calib.as_ref().map(|(i, l)| (*i, &l[..]));
        print!("{}", drift::render(&model, on_inputs, on_calib).0);
    }
    Ok(())
}
