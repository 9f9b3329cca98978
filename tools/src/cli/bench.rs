//! `icefold bench`: host inference time of a blob.

use std::path::PathBuf;

use anyhow::{Context, Result};

use icefold_tool::host;
use icefold_tool::io;

use super::read_blob;

/// Arguments of `icefold bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The blob.
    blob: PathBuf,
    /// float32 .npy inputs, as for `run`; the samples are cycled.
    #[arg(long)]
    input: PathBuf,
    /// Minimum measuring time in seconds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let (blob_path, input, seconds) = (a.blob.as_path(), a.input.as_path(), a.seconds);
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
