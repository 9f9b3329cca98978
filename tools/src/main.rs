//! `icefold`: convert ONNX models with BatchNorm into frozen blobs, run and inspect them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use icefold::format::{DType, Op};
use icefold_tool::convert::{self, Converted};
use icefold_tool::host::{self, Diff};
use icefold_tool::io::{self, Array};
use icefold_tool::ir::{eval, graph};
use icefold_tool::lower::blob::AlignedBytes;
use icefold_tool::lower::limits::Limits;
use icefold_tool::quantize::calibrate;

/// The commands that live in their own files.
mod cli {
    pub mod mcu;
}

#[derive(Parser)]
#[command(
    name = "icefold",
    version,
    about = "Fold BatchNorm into frozen weights and run models on microcontrollers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import an ONNX model, fold every BatchNorm, and write a runtime blob.
    Convert(ConvertArgs),
    /// Run a blob on the host over N samples.
    Run {
        /// The blob written by `convert`.
        blob: PathBuf,
        /// float32 .npy, N samples stacked on axis 0 in the ONNX model's input shape.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the float32 outputs ([N, ...] in the ONNX model's output shape).
        #[arg(long)]
        output: PathBuf,
    },
    /// Show a blob's layers, shapes, arena plan and sizes.
    Inspect {
        /// The blob.
        blob: PathBuf,
    },
    /// Time inference on the host (release build): median time per inference over repeated runs.
    Bench {
        /// The blob.
        blob: PathBuf,
        /// float32 .npy inputs, as for `run`; the samples are cycled.
        #[arg(long)]
        input: PathBuf,
        /// Minimum measuring time in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Run a blob inside firmware under QEMU for one Cortex-M core: outputs, instructions per
    /// layer, flash, RAM and stack, and parity with the host runtime (exit code 1 on mismatch).
    Mcu(cli::mcu::McuArgs),
    /// The whole story in one command: train a conv+BatchNorm model, show the seed's bug, diagnose,
    /// fold, quantize, run on the host and (if QEMU is installed) on a Cortex-M4F.
    Demo(icefold_tool::demo::DemoArgs),
    /// Train a small conv+BatchNorm classifier (synthetic accelerometer gestures, or your .npy
    /// data) and export it as ONNX with real BatchNormalization nodes.
    Train(icefold_tool::train::cli::TrainArgs),
    /// Check every BatchNorm's running statistics against calibration data (exit code 3 if any is
    /// stale, 4 if the model has no BatchNorm left to check; see docs/DIAGNOSE.md).
    Diagnose(DiagnoseArgs),
    /// Convert in memory and compare the folded runtime with the unfolded model (and, if given, a
    /// reference output such as onnxruntime's): a parity table.
    Verify {
        /// The ONNX model.
        model: PathBuf,
        /// float32 .npy inputs, as for `run`.
        #[arg(long)]
        input: PathBuf,
        /// Reference outputs for those inputs (e.g. from onnxruntime).
        #[arg(long)]
        expected: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Diagnose(args) => return cmd_diagnose(&args),
        command => Cli { command },
    };
    let result = match cli.command {
        Command::Convert(args) => cmd_convert(&args),
        Command::Mcu(args) => cli::mcu::run(&args),
        Command::Run {
            blob,
            input,
            output,
        } => cmd_run(&blob, &input, &output),
        Command::Inspect { blob } => cmd_inspect(&blob),
        Command::Bench {
            blob,
            input,
            seconds,
        } => cmd_bench(&blob, &input, seconds),
        Command::Verify {
            model,
            input,
            expected,
        } => cmd_verify(&model, &input, expected.as_deref()),
        Command::Diagnose(_) => unreachable!("handled above"),
        Command::Train(args) => icefold_tool::train::cli::run(&args),
        Command::Demo(args) => icefold_tool::demo::run(&args).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Arguments of `icefold convert`.
#[derive(clap::Args)]
struct ConvertArgs {
    /// The ONNX model (PyTorch or tf2onnx export, in eval mode).
    model: PathBuf,
    /// Where to write the blob.
    #[arg(short, long)]
    output: PathBuf,
    /// Also write a Rust module for firmware: the blob included aligned, ARENA_BYTES, shapes.
    #[arg(long, value_name = "MODEL_RS")]
    emit_rust: Option<PathBuf>,
    /// Quantize: `int8` (integer-only inference; needs --calib).
    #[arg(long, value_name = "PRECISION", value_parser = ["int8"])]
    quantize: Option<String>,
    /// Calibration samples (float32 .npy, [N, ...] in the model's input shape; not the test inputs).
    #[arg(long, value_name = "CALIB_NPY")]
    calib: Option<PathBuf>,
    /// How activation ranges are chosen from the calibration data: tail[:N] (observed range widened
    /// to the extreme one sample in N reaches, default N = 1000), minmax, mse or percentile[:P].
    #[arg(long, default_value = "tail")]
    calib_method: calibrate::Method,
    /// Skip the per-channel bias correction of the int8 layers on the calibration data.
    #[arg(long)]
    no_bias_correction: bool,
    /// Keep the model output int8. By default a dense last layer (logits, regression values)
    /// writes int16, 256 times finer; firmware then reads it with `run_i8` into an `[i16]`.
    #[arg(long, requires = "quantize")]
    int8_output: bool,
    /// Keep the activations of the first N convolutions (or `all`) in int16: 16x8, int8 weights
    /// and 65536 activation steps instead of 256 where a deep network's error starts and is
    /// amplified. Only conv-to-conv tensors qualify; they take twice the arena bytes of int8.
    /// 0 keeps every activation int8 (least RAM).
    #[arg(long, value_name = "N|all", default_value = "all", value_parser = convert::parse_int16_activations, requires = "quantize")]
    int16_activations: usize,
    /// Refuse models whose weights exceed this many bytes.
    #[arg(long, default_value_t = Limits::DEFAULT.max_weight_bytes)]
    max_weight_bytes: usize,
    /// Refuse models whose arena exceeds this many bytes.
    #[arg(long, default_value_t = Limits::DEFAULT.max_arena_bytes)]
    max_arena_bytes: usize,
    /// Refuse ONNX files larger than this many bytes (checked before reading).
    #[arg(long, default_value_t = Limits::DEFAULT.max_file_bytes)]
    max_file_bytes: u64,
    /// With --calib: fold BatchNorm statistics even if they do not match the data (warns).
    #[arg(long, conflicts_with = "recalibrate_bn", requires = "calib")]
    allow_stale_bn: bool,
    /// With --calib: re-estimate every BatchNorm's running mean and variance from the
    /// calibration data (population statistics, layer by layer in eval mode), then fold.
    #[arg(long, requires = "calib")]
    recalibrate_bn: bool,
}

fn cmd_convert(a: &ConvertArgs) -> Result<()> {
    let (model, output, emit_rust) = (
        a.model.as_path(),
        a.output.as_path(),
        a.emit_rust.as_deref(),
    );
    io::ensure_not_an_input(output, &[model])?;
    let limits = Limits {
        max_weight_bytes: a.max_weight_bytes,
        max_arena_bytes: a.max_arena_bytes,
        max_file_bytes: a.max_file_bytes,
    };
    let c = match (&a.quantize, &a.calib) {
        (Some(_), None) => bail!("--quantize int8 needs calibration data: --calib CALIB.npy"),
        // With calibration data the BatchNorm statistics are checked first (docs/DIAGNOSE.md).
        (quantize, Some(calib_path)) => {
            let calib = io::read_npy(calib_path)?;
            let check = convert::BnCheckOptions {
                on_stale: if a.recalibrate_bn {
                    convert::StaleBnPolicy::Recalibrate
                } else if a.allow_stale_bn {
                    convert::StaleBnPolicy::Allow
                } else {
                    convert::StaleBnPolicy::Refuse
                },
                progress: true,
                ..convert::BnCheckOptions::new(&calib)
            };
            let int8 = quantize.as_ref().map(|_| convert::Int8Options {
                calib: &calib,
                method: a.calib_method,
                progress: true,
                bias_correction: !a.no_bias_correction,
                wide_output: !a.int8_output,
                int16_activations: a.int16_activations,
            });
            convert::convert_file_checked(model, &limits, &check, int8)?
        }
        (None, None) => convert::convert_file_with(model, &limits)?,
    };
    if let Some(check) = &c.bn_check {
        print_bn_check(check);
    }
    print_conversion(&c);
    if let Some(q) = &c.int8 {
        print_int8_report(&c, q);
    }
    io::write_atomic(output, &c.blob, &[model])?;
    println!("wrote {} ({} bytes)", output.display(), c.blob.len());
    if let Some(module) = emit_rust {
        let include = icefold_tool::lower::rustgen::include_path(module, output)?;
        let text = icefold_tool::lower::rustgen::model_module(
            &c.blob,
            &include,
            &icefold_tool::lower::rustgen::Provenance {
                source: model.display().to_string(),
                generator: "icefold convert --emit-rust".into(),
            },
        )?;
        io::write_atomic(module, text.as_bytes(), &[model, output])?;
        println!("wrote {} (includes {include})", module.display());
    }
    Ok(())
}

fn print_conversion(c: &Converted) {
    let bn_count = c
        .imported
        .nodes
        .iter()
        .filter(|n| matches!(n.op, graph::Op::BatchNorm(_)))
        .count();
    println!(
        "imported {} nodes, {} BatchNorm, opset {}",
        c.imported.nodes.len(),
        bn_count,
        c.imported.opset
    );
    if bn_count == 0 {
        println!("  no BatchNorm left in the file (the exporter already folded it, or the model has none)");
    }
    for f in &c.fold.folds {
        println!("  {f}");
    }
    println!();
    print_layer_table(&c.lowered.notes);
    let params: usize = c.lowered.notes.iter().map(|n| n.params).sum();
    let macs: u64 = c.lowered.notes.iter().map(|n| n.macs).sum();
    println!();
    println!("parameters    {params}");
    println!("MACs          {macs}");
    println!("weight bytes  {}", c.lowered.weights.len());
    println!("arena bytes   {}", c.lowered.info.arena_bytes);
    println!("blob bytes    {}", c.blob.len());
}

/// Sorted layer indices as runs: `[1, 2, 3, 7]` → `["#1-#3", "#7"]`.
fn index_runs(indices: &[usize]) -> Vec<String> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &i in indices {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                format!("#{a}")
            } else {
                format!("#{a}-#{b}")
            }
        })
        .collect()
}

fn print_int8_report(c: &Converted, q: &convert::Int8Conversion) {
    println!();
    println!(
        "int8 quantization: per-channel weights, activations calibrated ({}) on {} samples",
        q.calibration.method, q.calibration.samples
    );
    println!(
        "{:>3}  {:<24} {:<44} {:>10}",
        "#", "layer", "from", "SQNR dB"
    );
    for (i, (n, db)) in c.lowered.notes.iter().zip(&q.layer_sqnr_db).enumerate() {
        println!(
            "{:>3}  {:<24} {:<44} {:>10.1}",
            i,
            n.kind,
            truncate(&n.source, 44),
            db
        );
    }
    let e = q.end_to_end;
    println!(
        "int8 vs f32 on the calibration data: relative L2 {:.3e}, max-abs {:.3e}, top-1 agreement {}/{}",
        e.rel_l2, e.max_abs, e.top1_agree, e.samples
    );
    let int16_layers = |head: bool| -> Vec<String> {
        let indices: Vec<usize> = c
            .lowered
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.output.dtype == DType::I16)
            .filter(|(_, l)| matches!(l.op, Op::DenseI8Wide(_) | Op::SoftmaxI16 { .. }) == head)
            .map(|(i, _)| i)
            .collect();
        index_runs(&indices)
    };
    let plural = |runs: &[String]| runs.len() > 1 || runs.iter().any(|r| r.contains('-'));
    let activations = int16_layers(false);
    let int16_input = c.lowered.info.input.dtype == DType::I16;
    if int16_input || !activations.is_empty() {
        let outputs = if activations.is_empty() {
            String::new()
        } else {
            format!(
                "{}the outputs of layer{} {}",
                if int16_input { " and " } else { "" },
                if plural(&activations) { "s" } else { "" },
                activations.join(", ")
            )
        };
        println!(
            "int16 activations (16x8): {}{outputs}; arena {} bytes, {} with every activation int8 \
             (--int16-activations 0)",
            if int16_input {
                "the model input (firmware: run_i8 with an [i16] input)"
            } else {
                ""
            },
            c.lowered.info.arena_bytes,
            q.int8_arena_bytes
        );
    }
    let wide = int16_layers(true);
    if wide.is_empty() {
        println!("output: int8 (firmware: run_i8 with an [i8] output)");
    } else {
        println!(
            "output head in int16: layer{} {} (firmware: run_i8 with an [i16] output; \
             --int8-output keeps every tensor int8)",
            if plural(&wide) { "s" } else { "" },
            wide.join(", ")
        );
    }
}

fn print_layer_table(notes: &[icefold_tool::lower::LayerNote]) {
    println!(
        "{:>3}  {:<24} {:<44} {:>14} {:>10} {:>8}",
        "#", "layer", "from", "output [H,W,C]", "MACs", "params"
    );
    for (i, n) in notes.iter().enumerate() {
        println!(
            "{:>3}  {:<24} {:<44} {:>14} {:>10} {:>8}",
            i,
            n.kind,
            truncate(&n.source, 44),
            format!("{:?}", n.output_dims),
            n.macs,
            n.params
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let head: String = s.chars().take(n - 1).collect();
        format!("{head}…")
    }
}

fn read_blob(path: &Path) -> Result<AlignedBytes> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(AlignedBytes::new(&bytes))
}

fn cmd_run(blob_path: &Path, input: &Path, output: &Path) -> Result<()> {
    io::ensure_not_an_input(output, &[blob_path, input])?;
    let blob = read_blob(blob_path)?;
    let model = host::load(blob.as_slice()).with_context(|| blob_path.display().to_string())?;
    let x = io::read_npy(input)?;
    let y = host::run_f32(&model, &x)?;
    io::write_npy(output, &y, &[blob_path, input])?;
    println!(
        "ran {} samples; wrote {} {:?}",
        x.samples(),
        output.display(),
        y.shape
    );
    Ok(())
}

fn cmd_inspect(blob_path: &Path) -> Result<()> {
    let blob = read_blob(blob_path)?;
    let model = host::load(blob.as_slice()).with_context(|| blob_path.display().to_string())?;
    let info = model.info();
    println!(
        "{}: {} bytes, format version {}",
        blob_path.display(),
        blob.as_slice().len(),
        icefold::format::FORMAT_VERSION
    );
    println!(
        "input  {:?} (logical {:?}), arena offset {}",
        info.input.dims,
        host::logical_shape(&info.input, info.input_rank),
        info.input.offset
    );
    println!(
        "output {:?} (logical {:?}), arena offset {}",
        info.output.dims,
        host::logical_shape(&info.output, info.output_rank),
        info.output.offset
    );
    let quant = |q: Option<icefold::format::Quant>| {
        q.map(|q| format!(" (scale {:e} zero point {})", q.scale, q.zero_point))
            .unwrap_or_default()
    };
    if info.input.dtype == info.output.dtype {
        println!(
            "element type {:?}{}",
            info.input.dtype,
            match (info.input.quant, info.output.quant) {
                (Some(a), Some(b)) => format!(
                    " (input scale {:e} zero point {}, output scale {:e} zero point {})",
                    a.scale, a.zero_point, b.scale, b.zero_point
                ),
                _ => String::new(),
            }
        );
    } else {
        let raw = |d: DType| if d == DType::I16 { "i16" } else { "i8" };
        println!(
            "element types: input {:?}{}, output {:?}{} (firmware: run_i8 from an [{}] input \
             into an [{}] output)",
            info.input.dtype,
            quant(info.input.quant),
            info.output.dtype,
            quant(info.output.quant),
            raw(info.input.dtype),
            raw(info.output.dtype)
        );
    }
    println!();
    println!(
        "{:>3}  {:<28} {:>16} {:>16} {:>22} {:>9}",
        "#", "op", "input", "output", "arena [start, end)", "weights"
    );
    let mut weight_bytes = 0usize;
    for (i, l) in model.layers().enumerate() {
        let (name, w) = icefold_tool::describe::describe(&l.op);
        weight_bytes += w;
        let o = l.output;
        println!(
            "{:>3}  {:<28} {:>16} {:>16} {:>22} {:>9}",
            i,
            name,
            format!("{:?}", l.inputs[0].dims),
            format!("{:?}", o.dims),
            format!("[{}, {})", o.offset, o.offset as usize + o.byte_len()),
            w
        );
    }
    println!();
    println!(
        "weight bytes {weight_bytes}, arena bytes {}",
        info.arena_bytes
    );
    Ok(())
}

fn cmd_verify(model_path: &Path, input: &Path, expected: Option<&Path>) -> Result<()> {
    let c = convert::convert_file(model_path)?;
    print_conversion(&c);
    let x = io::read_npy(input)?;
    let blob = AlignedBytes::new(&c.blob);
    let model = host::load(blob.as_slice())?;
    let runtime = host::run_f32(&model, &x)?;
    let mut unfolded = Vec::with_capacity(runtime.data.len());
    for i in 0..x.samples() {
        unfolded.extend(eval::run(&c.imported, x.sample(i))?);
    }
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

fn cmd_bench(blob_path: &Path, input: &Path, seconds: f64) -> Result<()> {
    let blob = read_blob(blob_path)?;
    let model = host::load(blob.as_slice()).with_context(|| blob_path.display().to_string())?;
    let x = io::read_npy(input)?;
    // One pass first: checks shapes and warms caches.
    host::run_f32(&model, &x)?;
    let info = model.info();
    let mut arena = vec![0u32; (info.arena_bytes as usize).div_ceil(4)];
    let arena = bytemuck::cast_slice_mut::<u32, u8>(&mut arena);
    let mut out = vec![0f32; info.output.len()];
    // Batches of runs, each timed; the median batch is reported (robust to scheduler noise).
    let probe = std::time::Instant::now();
    model
        .run_f32(arena, x.sample(0), &mut out)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let once = probe.elapsed().as_secs_f64().max(1e-7);
    let per_batch = ((0.05 / once).ceil() as usize).max(1);
    let mut batches = Vec::new();
    let start = std::time::Instant::now();
    let mut k = 0usize;
    while start.elapsed().as_secs_f64() < seconds || batches.len() < 5 {
        let t = std::time::Instant::now();
        for _ in 0..per_batch {
            model
                .run_f32(arena, x.sample(k % x.samples()), &mut out)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            k += 1;
        }
        batches.push(t.elapsed().as_secs_f64() / per_batch as f64);
    }
    batches.sort_by(f64::total_cmp);
    let median = batches[batches.len() / 2];
    println!(
        "{}: {:.1} us per inference (median of {} batches of {}, {} inferences, arena {} bytes)",
        blob_path.display(),
        median * 1e6,
        batches.len(),
        per_batch,
        k,
        info.arena_bytes
    );
    Ok(())
}

/// Arguments of `icefold diagnose`.
#[derive(clap::Args)]
struct DiagnoseArgs {
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
fn cmd_diagnose(a: &DiagnoseArgs) -> ExitCode {
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

/// What the BatchNorm check of `convert --calib` found and did; loud when it matters.
fn print_bn_check(check: &convert::BnStatsCheck) {
    use icefold_tool::bn_check::diagnose::Outcome;
    let d = &check.diagnosis;
    if d.outcome() == Outcome::NoBatchNorm {
        println!("BatchNorm statistics check: nothing to check.");
        print!("{}", icefold_tool::bn_check::diagnose::NO_BATCHNORM);
        if check.policy == convert::StaleBnPolicy::Recalibrate {
            eprintln!("warning: --recalibrate-bn had no BatchNorm to recalibrate");
        }
        println!();
        return;
    }
    print!("{}", d.table());
    println!();
    if let Some(r) = &check.recalibration {
        eprintln!("========================================================================");
        eprintln!("RECALIBRATED (--recalibrate-bn): the stored BatchNorm statistics were");
        eprintln!("replaced by ones estimated from the calibration data before folding.");
        eprint!("{r}");
        eprintln!("========================================================================");
    } else if check.folded_stale() {
        eprintln!("========================================================================");
        eprintln!("WARNING (--allow-stale-bn): folding STALE BatchNorm statistics into the");
        eprintln!("weights. The blob will compute what the model computes with these wrong");
        eprintln!("statistics, not what was trained. Stale node(s):");
        for b in d.stale() {
            eprintln!("  {}", b.origin);
        }
        eprintln!("========================================================================");
    }
}
