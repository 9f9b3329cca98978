//! `icefold mcu`: run a blob inside firmware under QEMU and print its profile.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use icefold_tool::io;
use icefold_tool::mcu;

/// Arguments of `icefold mcu`.
#[derive(clap::Args)]
pub struct McuArgs {
    /// The blob written by `convert`.
    blob: PathBuf,
    /// float32 .npy inputs, as for `run` (embedded in the firmware's flash).
    #[arg(long)]
    input: PathBuf,
    /// Embed only the first N samples of the input (a test set larger than the board's flash).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    samples: Option<u64>,
    /// The core: cortex-m4 (M4F), cortex-m3, cortex-m0 or cortex-m33.
    #[arg(long)]
    target: mcu::Target,
    /// Where to write the MCU's float32 outputs (same form as `run`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Where to write the profile as JSON.
    #[arg(long, value_name = "PROFILE_JSON")]
    json: Option<PathBuf>,
    /// Longest the emulated run may take, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Build the firmware with defmt logging: the report travels as defmt frames over
    /// semihosting (decoded here with the ELF's table), and the runtime traces every layer
    /// of the first sample, compared with the host's trace layer by layer.
    #[arg(long)]
    defmt: bool,
    /// Also write the firmware ELF that ran (flash it, or give it to other tools: the markers
    /// `icefold_inference_start` / `icefold_inference_end` bracket each inference).
    #[arg(long, value_name = "FW_ELF")]
    save_elf: Option<PathBuf>,
    /// Run even if an input element is NaN or infinite (by default the command refuses, naming
    /// the sample and element: the model would answer confidently on bad sensor data).
    #[arg(long)]
    allow_nonfinite: bool,
    /// The blob is signed: build the firmware with `Model::new_signed` and this public key
    /// (KEY.pub from `icefold keygen`), report what verification costs, and check on the device
    /// that tampered, truncated and unsigned copies are refused.
    #[arg(long, value_name = "KEY_PUB")]
    public_key: Option<PathBuf>,
    /// Count on the device, per layer, the int8 values clamped at the ends of their range (the
    /// firmware's feature `drift`, how a device reports input drift); the counting is included in
    /// the instruction counts.
    #[arg(long)]
    drift: bool,
    /// Build the firmware with the runtime's reference kernels only (feature `small-code`): the
    /// same outputs, byte for byte, in a fraction of the code and several times the
    /// instructions (DS-CNN on Cortex-M4F: 20.0 KB of runtime code instead of 102 KB in the
    /// minimal firmware with the model's kernels; docs/BENCHMARKS.md, "round 10 together").
    #[arg(long)]
    small_code: bool,
}

/// Runs `icefold mcu`.
pub fn run(a: &McuArgs) -> Result<()> {
    let (blob_path, input, target) = (a.blob.as_path(), a.input.as_path(), a.target);
    let (output, json) = (a.output.as_deref(), a.json.as_deref());
    let save_elf = a.save_elf.as_deref();
    for out in output.iter().chain(json.iter()).chain(save_elf.iter()) {
        io::ensure_not_an_input(out, &[blob_path, input])?;
    }
    let blob =
        std::fs::read(blob_path).with_context(|| format!("cannot read {}", blob_path.display()))?;
    let mut x = io::read_npy(input)?;
    if let Some(n) = a.samples {
        x = x.first(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if !a.allow_nonfinite {
        icefold_tool::host::check_finite(&x, input)?;
    }
    let mut opts = mcu::McuOptions::new(target);
    opts.allow_nonfinite = a.allow_nonfinite;
    opts.drift = a.drift;
    opts.small_code = a.small_code;
    if let Some(key) = &a.public_key {
        opts.public_key = Some(*icefold_tool::signing::read_public(key)?);
    }
    opts.timeout = std::time::Duration::from_secs(a.timeout);
    opts.defmt = a.defmt;
    println!(
        "{}: {} samples on {target} ({} under QEMU, {})",
        blob_path.display(),
        x.samples(),
        target.machine(),
        target.triple()
    );
    let profile = mcu::profile(&blob, &x, &opts)?;
    let parity = mcu::compare(&profile, &blob, &x)?;
    print!("{}", mcu::render(&profile, &parity));
    let mut trace_ok = true;
    if a.defmt {
        let host = mcu::host_trace(&blob, &x)?;
        println!("\nper-layer trace of sample 0 (defmt frames decoded on the host; FNV-1a of each layer's output):");
        print!("{}", mcu::render_trace(&profile.trace, &host));
        match mcu::first_divergence(&profile.trace, &host) {
            None => println!("trace: all {} layers identical on device and host", host.len()),
            Some(i) if profile.int8 => {
                trace_ok = false;
                println!("trace: FAIL, the int8 outputs first differ at layer {i}");
            }
            Some(i) => println!(
                "trace: f32 outputs first differ at layer {i} (f32 is compared by tolerance above, not bit for bit)"
            ),
        }
    }
    if let Some(path) = output {
        io::write_npy(path, &profile.outputs, &[blob_path, input])?;
        println!("wrote {} {:?}", path.display(), profile.outputs.shape);
    }
    if let Some(path) = save_elf {
        let elf = std::fs::read(&profile.elf)
            .with_context(|| format!("cannot read {}", profile.elf.display()))?;
        io::write_atomic(path, &elf, &[blob_path, input])?;
        println!("wrote {} (the firmware that ran)", path.display());
    }
    if let Some(path) = json {
        io::write_atomic(
            path,
            profile.to_json(Some(&parity)).as_bytes(),
            &[blob_path, input],
        )?;
        println!("wrote {}", path.display());
    }
    if !parity.pass {
        bail!("the MCU's outputs differ from the host runtime's (FAIL above)");
    }
    if !trace_ok {
        bail!("the MCU's int8 layers differ from the host runtime's (trace FAIL above)");
    }
    Ok(())
}
