//! `icefold`: convert ONNX models with BatchNorm into frozen blobs, run and inspect them.
//!
//! Argument parsing and dispatch only; each command lives in `cli/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "icefold",
    version,
    about = "Fold BatchNorm into frozen weights and run models on microcontrollers"
)]
struct Cli {
    /// Threads for the work over many samples (calibration, bias correction); default: every
    /// core. Results do not depend on it.
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import an ONNX model, fold every BatchNorm, and write a runtime blob.
    Convert(cli::convert::ConvertArgs),
    /// Run a blob on the host over N samples.
    Run(cli::run::RunArgs),
    /// Show a blob's layers, shapes, arena plan and sizes.
    Inspect(cli::inspect::InspectArgs),
    /// Time inference on the host (release build): median time per inference over repeated runs.
    Bench(cli::bench::BenchArgs),
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
    Diagnose(cli::diagnose::DiagnoseArgs),
    /// Convert in memory and compare the folded runtime with the unfolded model (and, if given, a
    /// reference output such as onnxruntime's): a parity table.
    Verify(cli::verify::VerifyArgs),
    /// Make an Ed25519 key pair for signing blobs: KEY (private, owner-only) and KEY.pub.
    Keygen(cli::keygen::KeygenArgs),
    /// Sign a blob for devices that load with `Model::new_signed` (over-the-air updates).
    Sign(cli::sign::SignArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            eprintln!("error: --threads {n}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        // `diagnose` has its own exit codes.
        Command::Diagnose(args) => return cli::diagnose::run(&args),
        Command::Convert(args) => cli::convert::run(&args),
        Command::Mcu(args) => cli::mcu::run(&args),
        Command::Run(args) => cli::run::run(&args),
        Command::Inspect(args) => cli::inspect::run(&args),
        Command::Bench(args) => cli::bench::run(&args),
        Command::Verify(args) => cli::verify::run(&args),
        Command::Keygen(args) => cli::keygen::run(&args),
        Command::Sign(args) => cli::sign::run(&args),
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
