//! `icefold verify`: convert in memory and compare the folded runtime with the unfolded model.

use std::path::PathBuf;

use anyhow::{bail, Result};
use rayon::prelude::*;

use icefold_tool::drift;
use icefold_tool::host::{self, Diff};
use icefold_tool::io::{self, Array};
use icefold_tool::ir::eval;
use icefold_tool::lower::blob::AlignedBytes;
use icefold_tool::pipeline::{self, ConvertOptions, Int8Options};
use icefold_tool::quantize::calibrate::Method;

use super::convert::print_conversion;

/// Arguments of `icefold verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The ONNX model.
    model: PathBuf,
    /// float32 .npy inputs, as for `run`.
    #[arg(long)]
    input: PathBuf,
    /// Reference outputs for those inputs (e.g. from onnxruntime).
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Run even if an input element is NaN or infinite (by default the command refuses, naming
    /// the sample and element: the model would answer confidently on bad sensor data).
    #[arg(long)]
    allow_nonfinite: bool,
    /// Calibration samples: also quantize to int8 with them and print, per layer, the fraction of
    /// values clamped on the inputs next to the calibration data's (drift).
    #[arg(long, value_name = "CALIB_NPY")]
    calib: Option<PathBuf>,
    #[command(flatten)]
    budget: super::BudgetArgs,
}

pub fn run(a: &VerifyArgs) -> Result<()> {
    let (model_path, input, expected) =
        (a.model.as_path(), a.input.as_path(), a.expected.as_deref());
    let x = io::read_npy(input)?;
    if !a.allow_nonfinite {
        host::check_finite(&x, input)?;
    }
    let limits = a.budget.limits();
    let c = pipeline::convert(
        model_path,
        &ConvertOptions {
            limits,
            ..Default::default()
        },
    )?;
    print_conversion(&c);
    let blob = AlignedBytes::new(&c.blob);
    let model = host::load(blob.as_slice())?;
    let runtime = if a.allow_nonfinite {
        host::run_f32_allowing_nonfinite(&model, &x)?
    } else {
        host::run_f32(&model, &x)?
    };
    // The reference interpreter on every core; outputs kept in sample order.
    let unfolded: Vec<f32> = (0..x.samples())
        .into_par_iter()
        .map(|i| eval::run(&c.imported, x.sample(i)))
        .collect::<Result<Vec<_>>>()?
        .concat();
    let unfolded = Array {
        shape: runtime.shape.clone(),
        data: unfolded,
    };
    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "comparison", "max-abs", "rel-L2", "top-1"
    );
    let row = |name: &str, d: Diff| {
        println!(
            "{:<44} {:>12.3e} {:>12.3e} {:>5}/{}",
            name, d.max_abs, d.rel_l2, d.top1_agree, d.samples
        );
    };
    row(
        "folded runtime vs unfolded reference",
        host::diff(&runtime, &unfolded)?,
    );
    if let Some(calib_path) = &a.calib {
        let calib = io::read_npy(calib_path)?;
        let q = pipeline::convert(
            model_path,
            &ConvertOptions {
                // `icefold convert --quantize int8`'s defaults.
                int8: Some(Int8Options {
                    calib: &calib,
                    method: Method::DEFAULT,
                    progress: false,
                    bias_correction: true,
                    wide_output: true,
                    int16_activations: pipeline::INT16_ACTIVATIONS_DEFAULT,
                }),
                limits,
                ..Default::default()
            },
        )?;
        let blob = AlignedBytes::new(&q.blob);
        let int8 = host::load(blob.as_slice())?;
        let on_inputs = drift::clamp_counts(&int8, &x, a.allow_nonfinite)?;
        let on_calib = drift::clamp_counts(&int8, &calib, false)?;
        println!();
        print!(
            "{}",
            drift::render(
                &int8,
                (drift::input_clamps(&int8, &x), &on_inputs),
                Some((drift::input_clamps(&int8, &calib), &on_calib)),
            )
            .0
        );
    }
    if let Some(e) = expected {
        let want = io::read_npy(e)?;
        if want.shape != runtime.shape {
            bail!(
                "{} has shape {:?}, the model produces {:?}",
                e.display(),
                want.shape,
                runtime.shape
            );
        }
        row("folded runtime vs expected", host::diff(&runtime, &want)?);
        row(
            "unfolded reference vs expected",
            host::diff(&unfolded, &want)?,
        );
    }
    Ok(())
}
