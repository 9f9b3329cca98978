//! `icefold demo`: the whole story in one command, on data the tool generates itself.
//!
//! 1. Train a small conv+BatchNorm classifier on synthetic accelerometer gestures (candle).
//! 2. Show the seed's failure on the test set: the same weights evaluated with BatchNorm's frozen
//!    running statistics, with the batch statistics of tiny batches (BN left in training mode at
//!    inference) and with never-updated statistics (mean 0, variance 1).
//! 3. Export both ONNX files (healthy and never-updated) and diagnose them on calibration data.
//! 4. Convert: the stale file is refused; `--recalibrate-bn` repairs it; the healthy file is
//!    folded to f32 and quantized to int8, written with its `model.rs`.
//! 5. Run every variant on the host runtime and compare accuracies.
//! 6. If QEMU and the rustup target are there, run the int8 model in Cortex-M4 firmware.
//! 7. A summary table.
//!
//! Everything it writes goes to one output directory (default `icefold-demo/`), atomically.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::bn_check::diagnose::{self, DiagnoseOptions, Outcome};
use crate::bn_check::policy::{check_bn_statistics, BnCheckOptions, StaleBnPolicy};
use crate::host;
use crate::import;
use crate::io::{self, Array};
use crate::lower::limits::Limits;
use crate::lower::rustgen::{self, Provenance};
use crate::mcu::{self, McuOptions, Target};
use crate::pipeline::{self, ConvertOptions, Int8Options, INT16_ACTIVATIONS_DEFAULT};
use crate::quantize::calibrate::Method;
use crate::train::data::{self, SyntheticSizes};
use crate::train::export::{self, Statistics};
use crate::train::{self, BnMode, Dataset, Metrics, TrainConfig};

/// `icefold demo` options.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Directory for everything the demo writes (created if missing; files in it are replaced).
    #[arg(long, default_value = "icefold-demo")]
    pub out_dir: PathBuf,
    /// Seed of the data, the initial weights and the batch order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Training epochs (default: the trainer's).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Skip the Cortex-M4 firmware step even if QEMU is installed.
    #[arg(long)]
    pub no_mcu: bool,
    /// Test samples embedded in the firmware.
    #[arg(long, default_value_t = 8)]
    pub mcu_samples: usize,
}

/// One row of the closing summary.
#[derive(Clone, Debug)]
pub struct Row {
    /// What ran, on which statistics.
    pub what: String,
    /// Its loss and accuracy on the test set.
    pub metrics: Metrics,
}

/// What the demo measured (also printed).
#[derive(Clone, Debug)]
pub struct Summary {
    /// Accuracy of every variant on the test set, in the printed order.
    pub rows: Vec<Row>,
    /// Diagnosis of the healthy export.
    pub healthy: Outcome,
    /// Diagnosis of the never-updated export.
    pub stale: Outcome,
    /// The BatchNorm nodes the diagnosis named stale in the never-updated export.
    pub stale_nodes: Vec<String>,
    /// The BatchNorm nodes of the model.
    pub bn_nodes: usize,
    /// Whether the check refused the never-updated export by default.
    pub stale_refused: bool,
    /// Cortex-M4F instructions per inference and whether the int8 outputs were byte-identical
    /// to the host's (`None` when the step was skipped).
    pub mcu: Option<(u64, bool)>,
}

impl Summary {
    /// The accuracy of the row whose description starts with `what`.
    pub fn accuracy(&self, what: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.what.starts_with(what))
            .map(|r| r.metrics.accuracy)
    }
}

fn section(n: usize, title: &str) {
    println!("\n== {n}/7 {title} ==");
}

/// Host-runtime accuracy of `blob` on `ds` (int8 blobs quantize at the boundary, like `run`).
fn blob_metrics(blob: &[u8], ds: &Dataset) -> Result<Metrics> {
    let aligned = crate::lower::blob::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let logits = host::run_f32(&model, &ds.x)?;
    train::score(&logits, &ds.labels)
}

/// Accuracy of the unfolded graph in icefold's reference interpreter (BatchNorm as a node, eval
/// mode): what the ONNX file itself computes.
fn graph_metrics(g: &crate::ir::graph::ImportedGraph, ds: &Dataset) -> Result<Metrics> {
    let mut data = Vec::with_capacity(ds.len() * ds.classes());
    for i in 0..ds.len() {
        data.extend(crate::ir::eval::run(g, ds.x.sample(i))?);
    }
    let logits = Array {
        shape: vec![ds.len(), ds.classes()],
        data,
    };
    train::score(&logits, &ds.labels)
}

/// Writes `bytes` to `path` (atomically) and says so.
fn write_and_say(path: &Path, bytes: &[u8]) -> Result<()> {
    io::write_atomic(path, bytes, &[])?;
    println!("  wrote {}", path.display());
    Ok(())
}

/// Runs the demo, printing every step, and returns what it measured.
pub fn run(args: &DemoArgs) -> Result<Summary> {
    let started = Instant::now();
    let dir = &args.out_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    section(
        1,
        "train a conv+BatchNorm classifier (candle, BN in training mode)",
    );
    let splits = data::synthetic_splits(args.seed, SyntheticSizes::default());
    println!(
        "  data: synthetic 3-axis accelerometer gestures {:?} in raw m/s^2 (gravity {} on one \
         axis), classes {}; train {}, validation {}, calibration {}, test {}",
        splits.train.sample_shape(),
        data::GRAVITY,
        data::GESTURES.join(", "),
        splits.train.len(),
        splits.val.len(),
        splits.calib.len(),
        splits.test.len()
    );
    let mut cfg = TrainConfig {
        seed: args.seed,
        ..TrainConfig::default()
    };
    if let Some(e) = args.epochs {
        cfg.epochs = e;
    }
    let trained = train::train(&splits.train, &splits.val, &cfg)?;
    if let Some(last) = trained.history.last() {
        println!(
            "  {} epochs in {:.1} s: train {} | validation {}",
            cfg.epochs,
            trained.elapsed.as_secs_f64(),
            last.train,
            last.val
        );
    }

    section(
        2,
        "the seed's bug: the same weights, three ways to run BatchNorm",
    );
    let test = &splits.test;
    let modes = [
        BnMode::Running,
        BnMode::BatchStats { batch_size: 1 },
        BnMode::BatchStats { batch_size: 4 },
        BnMode::NeverUpdated,
    ];
    println!(
        "  {:<56} {:>12} {:>10}",
        "test set, BatchNorm uses", "loss", "accuracy"
    );
    let mut by_mode = Vec::new();
    for mode in modes {
        let m = train::evaluate(&trained.net, test, mode)?;
        println!(
            "  {:<56} {:>12.4} {:>9.1} %",
            mode.to_string(),
            m.loss,
            100.0 * m.accuracy
        );
        by_mode.push((mode, m));
    }
    println!(
        "  Only the running statistics give the accuracy the model was trained to; a device that \
         runs BN in training mode, or with statistics that were never updated, is confidently wrong."
    );

    section(
        3,
        "export ONNX and diagnose the BatchNorm statistics on calibration data",
    );
    let params = trained.net.params()?;
    let healthy_path = dir.join("model.onnx");
    let stale_path = dir.join("model_stale.onnx");
    write_and_say(
        &healthy_path,
        &export::onnx_bytes(&params, Statistics::Running),
    )?;
    write_and_say(
        &stale_path,
        &export::onnx_bytes(&params, Statistics::NeverUpdated),
    )?;
    write_and_say(&dir.join("calib.npy"), &io::npy_bytes(&splits.calib.x)?)?;
    write_and_say(&dir.join("test.npy"), &io::npy_bytes(&test.x)?)?;
    write_and_say(
        &dir.join("test_labels.npy"),
        &data::labels_npy_bytes(&test.labels)?,
    )?;
    let calib = &splits.calib.x;
    let healthy = import::import_file(&healthy_path)?;
    let stale = import::import_file(&stale_path)?;
    let diag_opts = DiagnoseOptions {
        progress: true,
        ..DiagnoseOptions::default()
    };
    let healthy_diag = diagnose::diagnose(&healthy, calib, &diag_opts)?;
    println!("\n  icefold diagnose {}", healthy_path.display());
    print_indented(&healthy_diag.table());
    let stale_diag = diagnose::diagnose(&stale, calib, &diag_opts)?;
    println!("\n  icefold diagnose {}", stale_path.display());
    print_indented(&stale_diag.table());
    let stale_names: Vec<String> = stale_diag.stale().map(|b| b.origin.to_string()).collect();

    section(
        4,
        "convert: refuse stale statistics, repair them, fold, quantize",
    );
    let f32_opts = ConvertOptions {
        limits: Limits::DEFAULT,
        ..ConvertOptions::default()
    };
    let refuse = BnCheckOptions::new(calib);
    let refused = check_bn_statistics(stale.clone(), &refuse);
    let stale_refused = refused.is_err();
    match refused {
        Err(e) => {
            println!(
                "  icefold convert {} --calib calib.npy",
                stale_path.display()
            );
            let msg = format!("{e:#}");
            for line in msg.lines().take(4) {
                println!("    {line}");
            }
            println!("    ...");
        }
        Ok(_) => println!("  WARNING: the stale model was not refused"),
    }
    let (repaired, repair) = check_bn_statistics(
        stale.clone(),
        &BnCheckOptions {
            on_stale: StaleBnPolicy::Recalibrate,
            ..BnCheckOptions::new(calib)
        },
    )?;
    println!(
        "  icefold convert {} --calib calib.npy --recalibrate-bn:\n{}",
        stale_path.display(),
        repair
            .recalibration
            .as_ref()
            .map(|r| indent(&r.to_string()))
            .unwrap_or_default()
    );
    let repaired_f32 = pipeline::convert(repaired, &f32_opts)?;
    let stale_f32 = pipeline::convert(stale, &f32_opts)?;

    let f32c = pipeline::convert(healthy.clone(), &f32_opts)?;
    println!(
        "  {}: {} BatchNorm node(s) folded, f32 blob {} bytes",
        healthy_path.display(),
        f32c.fold.folds.len(),
        f32c.blob.len()
    );
    let int8c = pipeline::convert(
        healthy.clone(),
        &ConvertOptions {
            int8: Some(Int8Options {
                calib,
                method: Method::DEFAULT,
                progress: true,
                bias_correction: true,
                wide_output: true,
                int16_activations: INT16_ACTIVATIONS_DEFAULT,
            }),
            ..f32_opts
        },
    )?;
    if let Some(q) = &int8c.int8 {
        println!(
            "  int8: blob {} bytes; int8 vs f32 on the calibration data: relative L2 {:.2e}, \
             top-1 agreement {}/{}",
            int8c.blob.len(),
            q.end_to_end.rel_l2,
            q.end_to_end.top1_agree,
            q.end_to_end.samples
        );
    }
    let blob_path = dir.join("model.icefold");
    write_and_say(&blob_path, &int8c.blob)?;
    write_and_say(&dir.join("model_f32.icefold"), &f32c.blob)?;
    let module = rustgen::model_module(
        &int8c.blob,
        "model.icefold",
        &Provenance {
            source: healthy_path.display().to_string(),
            generator: "icefold demo".into(),
        },
    )?;
    write_and_say(&dir.join("model.rs"), module.as_bytes())?;

    section(5, "accuracy on the test set, host runtime");
    let rows = vec![
        Row {
            what: "candle, BN running statistics (eval mode)".into(),
            metrics: by_mode[0].1,
        },
        Row {
            what: "candle, BN batch statistics, batches of 1 (training mode)".into(),
            metrics: by_mode[1].1,
        },
        Row {
            what: "candle, BN never updated (mean 0, var 1)".into(),
            metrics: by_mode[3].1,
        },
        Row {
            what: "ONNX unfolded, icefold reference interpreter".into(),
            metrics: graph_metrics(&healthy, test)?,
        },
        Row {
            what: "icefold runtime, folded f32".into(),
            metrics: blob_metrics(&f32c.blob, test)?,
        },
        Row {
            what: "icefold runtime, folded int8".into(),
            metrics: blob_metrics(&int8c.blob, test)?,
        },
        Row {
            what: "icefold runtime, stale model folded as is (--allow-stale-bn)".into(),
            metrics: blob_metrics(&stale_f32.blob, test)?,
        },
        Row {
            what: "icefold runtime, stale model after --recalibrate-bn".into(),
            metrics: blob_metrics(&repaired_f32.blob, test)?,
        },
    ];
    for r in &rows[3..] {
        println!(
            "  {:<64} {:>10.4} {:>8.1} %",
            r.what,
            r.metrics.loss,
            100.0 * r.metrics.accuracy
        );
    }

    section(6, "int8 on a Cortex-M4F under QEMU");
    let mut mcu_summary = None;
    if args.no_mcu {
        println!("  skipped (--no-mcu)");
    } else if let Err(e) = mcu::check_prerequisites(Target::CortexM4) {
        println!("  skipped: {e:#}");
    } else {
        let x = test.x.first(args.mcu_samples.max(1));
        let n = x.samples();
        let opts = McuOptions::new(Target::CortexM4);
        println!(
            "  building the firmware with {} and {n} test samples (first build ~1 min)...",
            blob_path.display()
        );
        let profile = mcu::profile(&int8c.blob, &x, &opts)?;
        let parity = mcu::compare(&profile, &int8c.blob, &x)?;
        print_indented(&mcu::render(&profile, &parity));
        mcu_summary = Some((profile, parity));
    }

    section(7, "summary");
    println!("  {:<64} {:>10} {:>9}", "model", "loss", "accuracy");
    for r in &rows {
        println!(
            "  {:<64} {:>10.4} {:>8.1} %",
            r.what,
            r.metrics.loss,
            100.0 * r.metrics.accuracy
        );
    }
    println!(
        "  diagnosis: healthy model -> {:?} (exit {}); never-updated model -> {:?} (exit {}), \
         stale nodes: {}",
        healthy_diag.outcome(),
        healthy_diag.outcome().exit_code(),
        stale_diag.outcome(),
        stale_diag.outcome().exit_code(),
        if stale_names.is_empty() {
            "none".to_string()
        } else {
            stale_names.join(", ")
        }
    );
    if let Some((p, parity)) = &mcu_summary {
        println!(
            "  Cortex-M4F: {} instructions per inference, {:.3} MAC/instruction, flash {} B code + \
             {} B model, RAM {} B static + {} B stack, int8 outputs {} the host's",
            p.instructions_per_inference,
            p.macs_per_instruction(),
            p.flash_code_bytes,
            p.flash_model_bytes,
            p.ram_static_bytes,
            p.stack_peak_bytes,
            if parity.bytes_identical {
                "byte-identical to"
            } else {
                "DIFFERENT from"
            }
        );
    }
    println!(
        "  files in {}: model.onnx, model_stale.onnx, model.icefold (int8), model_f32.icefold, \
         model.rs, calib.npy, test.npy, test_labels.npy",
        dir.display()
    );
    println!(
        "  demo finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if healthy_diag.outcome() == Outcome::Stale {
        anyhow::bail!("the healthy model was diagnosed stale; see the table above");
    }
    if let Some((_, parity)) = &mcu_summary {
        if !parity.pass {
            anyhow::bail!("the MCU's outputs differ from the host runtime's");
        }
    }
    Ok(Summary {
        rows,
        healthy: healthy_diag.outcome(),
        stale: stale_diag.outcome(),
        stale_nodes: stale_names,
        bn_nodes: healthy_diag.bns.len(),
        stale_refused,
        mcu: mcu_summary
            .as_ref()
            .map(|(p, parity)| (p.instructions_per_inference, parity.bytes_identical)),
    })
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_indented(s: &str) {
    println!("{}", indent(s));
}
