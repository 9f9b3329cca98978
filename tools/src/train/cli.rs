//! The `icefold train` command.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::data::{self, Splits, SyntheticSizes};
use super::export::{self, Statistics};
use super::{evaluate, train, BnMode, TrainConfig};
use crate::io;

/// Arguments of `icefold train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Where to write the trained model (ONNX, BatchNorm in inference form with its running
    /// statistics).
    #[arg(long, default_value = "model.onnx")]
    pub out: PathBuf,
    /// Passes over the training set.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Samples per optimizer step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    /// Seed of the synthetic data, the initial weights and the batch order.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// Train on your own samples instead of the synthetic gestures: float32 .npy, shape
    /// [N, channels, length].
    #[arg(long, requires = "labels")]
    pub data: Option<PathBuf>,
    /// Integer class labels for --data: .npy, shape [N], values 0..C-1.
    #[arg(long, requires = "data")]
    pub labels: Option<PathBuf>,
    /// With --data: the fraction held out for validation (and the final test).
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Write calibration samples (from the training distribution, never trained on for the
    /// synthetic set) as float32 .npy, for `icefold diagnose --calib` and int8 calibration.
    #[arg(long)]
    pub export_calib: Option<PathBuf>,
    /// Write the test samples as float32 .npy.
    #[arg(long)]
    pub export_test: Option<PathBuf>,
    /// Write the test labels as int64 .npy.
    #[arg(long)]
    pub export_test_labels: Option<PathBuf>,
    /// Also write the same weights with never-updated BN statistics (mean 0, variance 1): a
    /// deliberately broken model that reproduces the classic BN deployment bug.
    #[arg(long)]
    pub export_stale: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `icefold train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    let inputs: Vec<&Path> = [args.data.as_deref(), args.labels.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let outputs: Vec<&Path> = [
        Some(args.out.as_path()),
        args.export_calib.as_deref(),
        args.export_test.as_deref(),
        args.export_test_labels.as_deref(),
        args.export_stale.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (i, a) in outputs.iter().enumerate() {
        if outputs[..i].contains(a) {
            bail!("{} is given as two different outputs", a.display());
        }
        // Checked before training so a mistake does not cost the training time.
        io::ensure_not_an_input(a, &inputs)?;
    }
    if !(0.0..1.0).contains(&args.val_fraction) || args.val_fraction == 0.0 {
        bail!(
            "--val-fraction {} must be above 0 and below 1",
            args.val_fraction
        );
    }

    let splits: Splits = match (&args.data, &args.labels) {
        (Some(d), Some(l)) => {
            let ds = data::load_npy(d, l)?;
            eprintln!(
                "data: {} samples of {:?} from {}, {} classes (counts {:?})",
                ds.len(),
                ds.sample_shape(),
                d.display(),
                ds.classes(),
                ds.class_counts()
            );
            data::split_user(&ds, args.val_fraction, args.seed)
        }
        _ => {
            let s = data::synthetic_splits(args.seed, SyntheticSizes::default());
            eprintln!(
                "data: synthetic 3-axis accelerometer gestures {:?} in m/s² at {} Hz (seed {}): \
                 classes {}",
                s.train.sample_shape(),
                data::SAMPLE_RATE_HZ,
                args.seed,
                data::GESTURES.join(", ")
            );
            s
        }
    };
    eprintln!(
        "splits: train {}, validation {}, calibration {}, test {}",
        splits.train.len(),
        splits.val.len(),
        splits.calib.len(),
        splits.test.len()
    );

    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        progress: !args.quiet,
        ..TrainConfig::default()
    };
    let trained = train(&splits.train, &splits.val, &cfg)?;
    eprintln!(
        "trained {} epochs in {:.1} s",
        cfg.epochs,
        trained.elapsed.as_secs_f64()
    );

    eprintln!(
        "test set ({} samples), the same weights with BatchNorm in each mode:",
        splits.test.len()
    );
    for mode in [
        BnMode::Running,
        BnMode::BatchStats { batch_size: 1 },
        BnMode::BatchStats { batch_size: 4 },
        BnMode::NeverUpdated,
    ] {
        let m = evaluate(&trained.net, &splits.test, mode)?;
        eprintln!(
            "  {:<52} loss {:>10.4}  accuracy {:5.1} %",
            mode.to_string(),
            m.loss,
            100.0 * m.accuracy
        );
    }

    let params = trained.net.params()?;
    export::write_onnx(&args.out, &params, Statistics::Running, &inputs)?;
    eprintln!("wrote {}", args.out.display());
    if let Some(p) = &args.export_stale {
        export::write_onnx(p, &params, Statistics::NeverUpdated, &inputs)?;
        eprintln!(
            "wrote {} (never-updated BN statistics, deliberately broken)",
            p.display()
        );
    }
    if let Some(p) = &args.export_calib {
        io::write_npy(p, &splits.calib.x, &inputs)?;
        eprintln!("wrote {} {:?}", p.display(), splits.calib.x.shape);
    }
    if let Some(p) = &args.export_test {
        io::write_npy(p, &splits.test.x, &inputs)?;
        eprintln!("wrote {} {:?}", p.display(), splits.test.x.shape);
    }
    if let Some(p) = &args.export_test_labels {
        data::write_labels(p, &splits.test.labels, &inputs)?;
        eprintln!("wrote {} [{}]", p.display(), splits.test.len());
    }
    Ok(())
}
