//! icefold vs tract on the host, one thread, same process: time per extra inference on the four
//! MLPerf Tiny fixtures, f32 and int8 (docs/BENCHMARKS.md, "Host f32 and int8 vs tract").
//!
//! ```sh
//! cargo build --release -p icefold-tool     # the converter that writes the blobs
//! cargo run --release --manifest-path examples/host-bench/Cargo.toml [-- MODEL...]
//! ```
//!
//! The blobs are written by `target/release/icefold convert` (f32; int8 with the fixture's
//! calibration set and the default conversion) into the system's temporary directory. Each engine
//! runs the fixture's `input.npy` repeatedly: after a warm-up, batches of runs are timed and the
//! median batch mean of the thread's CPU time is reported (the machine is shared: wall time
//! would count other processes), i.e. the marginal time of one more inference (setup, loading and
//! first-run costs excluded). tract runs its optimized plan (`into_optimized`) on one thread.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use tract_onnx::prelude::*;

const MODELS: [&str; 4] = ["resnet8", "dscnn", "mobilenet_v1_025", "ad_autoencoder"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let npy = npyz::NpyFile::new(&bytes[..])?;
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    Ok((shape, npy.into_vec::<f32>()?))
}

/// `icefold convert`, with `extra` arguments, into `out`.
fn convert(model: &str, out: &Path, extra: &[&str]) -> Result<Vec<u8>> {
    let fixture = repo().join("tests/fixtures").join(model);
    let bin = std::env::var_os("ICEFOLD")
        .map_or_else(|| repo().join("target/release/icefold"), PathBuf::from);
    let status = Command::new(&bin)
        .args(["--threads", "1", "convert"])
        .arg(fixture.join("model.onnx"))
        .arg("-o")
        .arg(out)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| {
            format!(
                "{}: build it with `cargo build --release -p icefold-tool`",
                bin.display()
            )
        })?;
    ensure!(status.success(), "icefold convert {model} {extra:?} failed");
    Ok(std::fs::read(out)?)
}

/// CPU time of the calling thread, in seconds: the machine is shared, so wall time would count
/// other processes' slices; a thread's CPU time does not (both engines run on this thread).
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Median over batches of the mean thread CPU time of one call of `run`, in microseconds.
fn time_per_run(mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..10 {
        run()?;
    }
    let probe = thread_cpu_seconds();
    run()?;
    let once = (thread_cpu_seconds() - probe).max(1e-7);
    // About 0.1 s per batch, at least 20 runs, 9 batches (a few hundred runs at the least).
    let per_batch = ((0.1 / once).ceil() as usize).max(20);
    let mut batches = Vec::new();
    for _ in 0..9 {
        let t = thread_cpu_seconds();
        for _ in 0..per_batch {
            run()?;
        }
        batches.push((thread_cpu_seconds() - t) / per_batch as f64);
    }
    batches.sort_by(f64::total_cmp);
    Ok(batches[batches.len() / 2] * 1e6)
}

/// Per-inference time of the blob on the runtime, and its output.
fn icefold_time(blob: &[u8], x: &[f32]) -> Result<(f64, Vec<f32>)> {
    // The runtime wants a 4-aligned blob: copy it into u32 words.
    let mut words = vec![0u32; blob.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..blob.len()].copy_from_slice(blob);
    let bytes = &bytemuck::cast_slice::<u32, u8>(&words)[..blob.len()];
    let model = icefold::Model::new_checked(bytes).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut arena = vec![0u32; model.arena_bytes().div_ceil(4)];
    let mut out = vec![0f32; model.output().len()];
    let arena = bytemuck::cast_slice_mut::<u32, u8>(&mut arena);
    let us = time_per_run(|| {
        model
            .run_f32(arena, x, &mut out)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    })?;
    Ok((us, out))
}

fn tract_time(onnx: &Path, shape: &[usize], x: &[f32]) -> Result<(f64, Vec<f32>)> {
    let plan = tract_onnx::onnx()
        .model_for_path(onnx)?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let input: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape, x.to_vec())?.into();
    let input = input.into_tvalue();
    let mut out = Vec::new();
    let us = time_per_run(|| {
        let result = plan.run(tvec!(input.clone()))?;
        out = result[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        Ok(())
    })?;
    Ok((us, out))
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let models: Vec<&str> = if args.is_empty() {
        MODELS.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    let dir = std::env::temp_dir().join("icefold-host-bench");
    std::fs::create_dir_all(&dir)?;
    println!("| model | icefold f32 µs | tract f32 µs | tract / icefold | icefold int8 µs | int8 / f32 time | rel. L2 icefold vs tract |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for m in models {
        if !MODELS.contains(&m) {
            bail!("unknown model {m}: one of {MODELS:?}");
        }
        let fixture = repo().join("tests/fixtures").join(m);
        // The first sample (input.npy stacks several on axis 0).
        let (mut shape, mut x) = read_npy(&fixture.join("input.npy"))?;
        let per_sample = x.len() / shape[0].max(1);
        x.truncate(per_sample);
        shape[0] = 1;
        let f32_blob = convert(m, &dir.join(format!("{m}.icefold")), &[])?;
        let calib = fixture.join("calib.npy");
        let int8_blob = convert(
            m,
            &dir.join(format!("{m}-int8.icefold")),
            &[
                "--quantize",
                "int8",
                "--calib",
                calib.to_str().context("path")?,
            ],
        )?;
        let (f32_us, f32_out) = icefold_time(&f32_blob, &x)?;
        let (int8_us, _) = icefold_time(&int8_blob, &x)?;
        let (tract_us, tract_out) = tract_time(&fixture.join("model.onnx"), &shape, &x)?;
        println!(
            "| {m} | {f32_us:.0} | {tract_us:.0} | {:.2}x | {int8_us:.0} | {:.2} | {:.1e} |",
            tract_us / f32_us,
            int8_us / f32_us,
            rel_l2(&f32_out, &tract_out)
        );
    }
    Ok(())
}
