//! `icefold diagnose`: check every BatchNorm's running statistics against calibration data.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use icefold_tool::io;

/// Arguments of `icefold diagnose`.
#[derive(clap::Args)]
pub struct DiagnoseArgs {
    /// The ONNX model, exported with its BatchNormalization nodes (see docs/DIAGNOSE.md).
    model: PathBuf,
    /// Calibration samples (float32 .npy, [N, ...] in the model's input shape, N >= 2), from the
    /// distribution the model was trained on.
    #[arg(long, value_name = "CALIB_NPY")]
    calib: PathBuf,
    /// Also draw, per BatchNorm, running vs data mean and variance per channel (.svg or .html).
    #[arg(long, value_name = "REPORT")]
    report: Option<PathBuf>,
}

/// `icefold diagnose`: 0 healthy (or only suspicious), 3 stale, 4 nothing to check, 1 error.
pub fn run(a: &DiagnoseArgs) -> ExitCode {
    use icefold_tool::bn_check::diagnose::{self, DiagnoseOptions, Outcome};
    let run = || -> Result<Outcome> {
        if let Some(r) = &a.report {
            io::ensure_not_an_input(r, &[&a.model, &a.calib])?;
        }
        let g = icefold_tool::import::import_file(&a.model)?;
        let calib = io::read_npy(&a.calib)?;
        let d = diagnose::diagnose(
            &g,
            &calib,
            &DiagnoseOptions {
                progress: true,
                ..DiagnoseOptions::default()
            },
        )?;
        println!("{}: {} BatchNorm node(s)", a.model.display(), d.bns.len());
        print!("{}", d.table());
        if let Some(r) = &a.report {
            if d.bns.is_empty() {
                println!("no report written: there is nothing to draw");
            } else {
                let title = format!("icefold diagnose {}", a.model.display());
                icefold_tool::bn_check::report::write(&d, r, &title, &[&a.model, &a.calib])?;
                println!("wrote {}", r.display());
            }
        }
        Ok(d.outcome())
    };
    match run() {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
