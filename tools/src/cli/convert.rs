//! `icefold convert`: ONNX model to blob (and Rust module), with the conversion report.

use std::path::PathBuf;

use anyhow::{bail, Result};

use icefold::format::{DType, Op};
use icefold_tool::bn_check::policy::{BnCheckOptions, BnStatsCheck, StaleBnPolicy};
use icefold_tool::io;
use icefold_tool::ir::graph;
use icefold_tool::pipeline::{self, ConvertOptions, Converted, Int8Conversion, Int8Options};
use icefold_tool::quantize::calibrate;
use icefold_tool::signing;

/// Arguments of `icefold convert`.
#[derive(clap::Args)]
pub struct ConvertArgs {
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
    /// to the extreme one sample in N reaches, default N = 1000), balanced[:N] (per int8 tensor,
    /// each end between the observed and tail's extreme where rounding plus expected clipping error
    /// is least), minmax, mse or percentile[:P].
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
    #[arg(long, value_name = "N|all", default_value = "all", value_parser = pipeline::parse_int16_activations, requires = "quantize")]
    int16_activations: usize,
    /// How int8 dense layers store their weights, every choice computing the same bytes on every
    /// core. `int8` (default): one byte each, in row pairs where a layer allows it (inputs a
    /// multiple of 8, weights within the layout's bound), so that the Cortex-M4/M33 DSP kernel
    /// takes a pair's four weights of a word with one SXTB16 and two SMLADs; otherwise row by
    /// row. `int8-rows`: row by row always. `int16`: the values widened by the tool, in the order
    /// the DSP kernel reads them (no widening on the device), twice the dense weights' flash
    /// (figures for the MLPerf Tiny AD autoencoder in docs/BENCHMARKS.md). Layers whose inputs
    /// are not a multiple of 4 keep int8 rows.
    #[arg(
        long,
        value_name = "int8|int8-rows|int16",
        default_value = "int8",
        requires = "quantize"
    )]
    dense_weights: DenseWeights,
    /// Keep every convolution and the pooling after it as two layers, even over
    /// --max-arena-bytes. By default, while the arena exceeds --max-arena-bytes, a convolution
    /// and the pooling after it become one layer that computes the pooling from a band of the
    /// convolution's output rows (which then never exists whole): less RAM, the same values,
    /// a few per cent more time.
    #[arg(long)]
    no_fuse: bool,
    /// Plan every layer's output apart from its inputs. By default a convolution, pooling or
    /// element-wise layer at the arena's peak writes its output over the input it reads last,
    /// run a band of output rows at a time: less RAM, the same values, more kernel calls (on
    /// Cortex-M4 DS-CNN +2.3 % instructions, its arena -40 %).
    #[arg(long)]
    no_in_place: bool,
    #[command(flatten)]
    budget: super::BudgetArgs,
    /// With --calib: fold BatchNorm statistics even if they do not match the data (warns).
    #[arg(long, conflicts_with = "recalibrate_bn", requires = "calib")]
    allow_stale_bn: bool,
    /// With --calib: re-estimate every BatchNorm's running mean and variance from the
    /// calibration data (population statistics, layer by layer in eval mode), then fold.
    #[arg(long, requires = "calib")]
    recalibrate_bn: bool,
    /// Sign the blob with this Ed25519 private key (from `icefold keygen`) for devices that
    /// load with `Model::new_signed`; with --emit-rust the module also gets `PUBLIC_KEY`.
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
}

pub fn run(a: &ConvertArgs) -> Result<()> {
    let (model, output, emit_rust) = (
        a.model.as_path(),
        a.output.as_path(),
        a.emit_rust.as_deref(),
    );
    io::ensure_not_an_input(output, &[model])?;
    let limits = a.budget.limits();
    if a.quantize.is_some() && a.calib.is_none() {
        bail!("--quantize int8 needs calibration data: --calib CALIB.npy");
    }
    let calib = a.calib.as_deref().map(io::read_npy).transpose()?;
    // With calibration data the BatchNorm statistics are checked first (docs/DIAGNOSE.md).
    let bn_check = calib.as_ref().map(|calib| BnCheckOptions {
        on_stale: if a.recalibrate_bn {
            StaleBnPolicy::Recalibrate
        } else if a.allow_stale_bn {
            StaleBnPolicy::Allow
        } else {
            StaleBnPolicy::Refuse
        },
        progress: true,
        ..BnCheckOptions::new(calib)
    });
    let int8 = match (&a.quantize, &calib) {
        (Some(_), Some(calib)) => Some(Int8Options {
            calib,
            method: a.calib_method,
            progress: true,
            bias_correction: !a.no_bias_correction,
            wide_output: !a.int8_output,
            int16_activations: a.int16_activations,
        }),
        _ => None,
    };
    let c = pipeline::convert(
        model,
        &ConvertOptions {
            limits,
            bn_check,
            int8,
            no_fusion: a.no_fuse,
            no_in_place: a.no_in_place,
            dense_weights: a.dense_weights.layout(),
        },
    )?;
    if let Some(check) = &c.bn_check {
        print_bn_check(check);
    }
    print_conversion(&c);
    if let Some(q) = &c.int8 {
        print_int8_report(&c, q);
    }
    // The key is read before anything is written: a wrong path fails the whole conversion.
    let signed = match &a.sign {
        Some(key) => Some(signing::sign(&c.blob, &signing::read_private(key)?)?),
        None => None,
    };
    let blob = signed.as_ref().map_or(&c.blob, |s| &s.bytes);
    io::write_atomic(output, blob, &[model])?;
    println!(
        "wrote {} ({} bytes{})",
        output.display(),
        blob.len(),
        if signed.is_some() { ", signed" } else { "" }
    );
    if let Some(module) = emit_rust {
        let include = icefold_tool::lower::rustgen::include_path(module, output)?;
        let mut text = icefold_tool::lower::rustgen::model_module(
            blob,
            &include,
            &icefold_tool::lower::rustgen::Provenance {
                source: model.display().to_string(),
                generator: "icefold convert --emit-rust".into(),
            },
        )?;
        if let Some(s) = &signed {
            text.push('\n');
            text.push_str(&signing::public_key_rust(&s.public));
        }
        io::write_atomic(module, text.as_bytes(), &[model, output])?;
        println!("wrote {} (includes {include})", module.display());
    }
    Ok(())
}

pub(crate) fn print_conversion(c: &Converted) {
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
    if !c.fusion.fused_convs.is_empty() {
        let (before, after) = c.fusion.arena_bytes;
        println!(
            "  {} convolution(s) fused with the pooling after them to fit --max-arena-bytes (the \
             pooling computed from a band of rows): arena {before} -> {after} bytes",
            c.fusion.fused_convs.len()
        );
    }
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

fn print_int8_report(c: &Converted, q: &Int8Conversion) {
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
    if let Some(b) = &q.int16_budget {
        println!(
            "int16 within --max-arena-bytes {}: kept {} of {} int16 tensors (the rest int8, least \
             error per arena byte first); arena {} -> {} bytes; int8 vs f32 relative L2 before \
             bias correction ({} calibration samples) {:.4} -> {:.4}",
            b.budget,
            b.int16_after,
            b.int16_before,
            b.arena_unbounded,
            c.lowered.info.arena_bytes,
            b.samples,
            b.error_unbounded,
            b.error_chosen
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

/// What the BatchNorm check of `convert --calib` found and did; loud when it matters.
fn print_bn_check(check: &BnStatsCheck) {
    use icefold_tool::bn_check::diagnose::Outcome;
    let d = &check.diagnosis;
    if d.outcome() == Outcome::NoBatchNorm {
        println!("BatchNorm statistics check: nothing to check.");
        print!("{}", icefold_tool::bn_check::diagnose::NO_BATCHNORM);
        if check.policy == StaleBnPolicy::Recalibrate {
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

/// `--dense-weights`: the dense layers' weight layout by the name users know it by.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
enum DenseWeights {
    /// One byte per weight, in row pairs where the layer allows (`DenseLayout::PairsI8`),
    /// else row by row.
    #[default]
    Int8,
    /// One byte per weight, row by row (`DenseLayout::RowsI8`).
    Int8Rows,
    /// Two bytes per weight, four rows interleaved (`DenseLayout::QuadsI16`).
    Int16,
}

impl DenseWeights {
    fn layout(self) -> icefold_tool::quantize::DenseWeights {
        match self {
            DenseWeights::Int8 => icefold_tool::quantize::DenseWeights::Int8,
            DenseWeights::Int8Rows => icefold_tool::quantize::DenseWeights::Int8Rows,
            DenseWeights::Int16 => icefold_tool::quantize::DenseWeights::Int16,
        }
    }
}
