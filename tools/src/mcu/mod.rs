//! Profiling on microcontrollers without hardware: the model runs inside real firmware
//! (`examples/firmware`) under QEMU, for one Cortex-M core at a time (`icefold mcu`).
//!
//! Steps: [`prepare_project`] writes a copy of the firmware crate with the model module (from
//! [`crate::lower::rustgen`]) and the input samples into a cache directory keyed by their hash;
//! [`build`] compiles it with cargo for the core's target (dependencies are built once per target
//! and reused); [`run`] starts QEMU with instruction counting, parses the firmware's report and
//! returns a [`Profile`]; [`compare`] checks its outputs against the host runtime's.
//! [`profile`] does all of it.
//!
//! Numbers are executed instructions, exact and identical run to run, counted by the project's
//! QEMU plugin (`cycles`), which also estimates Cortex-M4 cycles; without a C compiler to build
//! it, by the firmware's timer under `-icount`. See docs/MCU.md for what they mean on silicon.
//!
//! Modules, in the order a run uses them: `target` (cores, boards, prerequisites), `project`
//! (the generated firmware crate and its cache), `build` (cargo, ELF sizes), `qemu` (running the
//! image; `cycles`: the counting plugin), `report` (the firmware's line protocol, defmt decoding), `profile` (the measured
//! numbers, JSON, table), `parity` (host comparison, traces); `boundary` holds the model's
//! element types shared by them, `softfloat` the no-float check of an image.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use icefold::format::DType;

use crate::host;
use crate::io::Array;

mod boundary;
mod build;
pub mod cycles;
mod parity;
mod profile;
mod project;
mod qemu;
mod report;
pub mod softfloat;
mod target;

pub use build::{build, ElfSizes, Firmware, MIN_STACK_BYTES};
pub use parity::{compare, first_divergence, host_trace, render_trace, Parity, F32_REL_L2_LIMIT};
pub use profile::{layer_macs, render, Counter, LayerProfile, Profile};
pub use project::{prepare_project, Project};
pub use qemu::run_qemu;
pub use report::{decode_defmt, parse_report, Report, SignedReport, TraceRecord};
pub use target::{check_prerequisites, Target};

use boundary::{boundary_dtype, element_name};

/// Where and how to build and run.
#[derive(Clone, Debug)]
pub struct McuOptions {
    /// The core.
    pub target: Target,
    /// Firmware projects (one per model, inputs and target) and the shared cargo target dir.
    pub cache_dir: PathBuf,
    /// The `icefold` runtime crate the firmware depends on (its directory).
    pub runtime_dir: PathBuf,
    /// Longest a QEMU run may take before it is stopped.
    pub timeout: Duration,
    /// Print cargo's and QEMU's commands and progress to stderr.
    pub verbose: bool,
    /// Build the firmware with defmt logging (feature `defmt`): the report travels as defmt
    /// frames, decoded here with the ELF's table, and the runtime traces every layer of sample 0.
    pub defmt: bool,
    /// Count with the QEMU cycle plugin (exact instructions, and estimated cycles on a
    /// Cortex-M4) when a C compiler can build it; otherwise, or when false, with the firmware's
    /// timer under `-icount` (instructions only).
    pub cycle_plugin: bool,
    /// Let NaN and infinite inputs through: the f32 firmware runs
    /// `run_f32_allowing_nonfinite_observed` instead of `run_f32_observed` (which refuses them),
    /// and the host comparison likewise. int8 inputs are quantized on the host either way.
    pub allow_nonfinite: bool,
    /// Build the firmware with feature `signed`: it loads the blob with `Model::new_signed` and
    /// this public key, measures it, and checks that altered copies are refused (`SIGNED`).
    pub public_key: Option<[u8; icefold::format::signature::PUBLIC_KEY_LEN]>,
    /// Build the firmware with feature `drift`: it counts clamped values per layer during the
    /// timed runs (`icefold::observe::ClampCounter`, included in the instruction counts) and
    /// reports them.
    pub drift: bool,
    /// Build the firmware with the runtime's feature `small-code`: the reference kernels only.
    pub small_code: bool,
}

impl McuOptions {
    /// Defaults: cache in `$ICEFOLD_MCU_CACHE`, else `target/icefold-mcu` of the repository this
    /// tool was built from; the runtime in `$ICEFOLD_RUNTIME_DIR`, else that repository's; a
    /// 10 minute timeout.
    pub fn new(target: Target) -> McuOptions {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let runtime_dir = std::env::var_os("ICEFOLD_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.clone());
        let cache_dir = std::env::var_os("ICEFOLD_MCU_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target").join("icefold-mcu"));
        McuOptions {
            target,
            cache_dir,
            runtime_dir,
            timeout: Duration::from_secs(600),
            verbose: false,
            defmt: false,
            cycle_plugin: true,
            allow_nonfinite: false,
            public_key: None,
            drift: false,
            small_code: false,
        }
    }
}

/// Runs a built firmware and assembles the profile.
pub fn run(project: &Project, fw: &Firmware, blob: &[u8], opts: &McuOptions) -> Result<Profile> {
    let plugin = if opts.cycle_plugin && cycles::compiler_available() {
        Some(cycles::PluginRun::new(&fw.elf, &opts.cache_dir)?)
    } else {
        None
    };
    let text = run_qemu(&fw.elf, opts, plugin.as_ref().map(|p| p.arg.as_os_str()));
    let counts = plugin.map(cycles::PluginRun::counts);
    // A failed run's own error comes first.
    let text = text?;
    let counts = counts.transpose()?;
    let report = parse_report(&text)?;
    let aligned = crate::lower::blob::AlignedBytes::new(blob);
    let model = host::load(aligned.as_slice())?;
    let info = *model.info();
    let dtype = boundary_dtype(&model)?;
    if report.layers != usize::from(info.layer_count)
        || report.arena_bytes != u64::from(info.arena_bytes)
        || report.outputs.len() != project.samples
        || report.output_bytes != info.output.byte_len()
        || report.elements != element_name(info.output.dtype)
    {
        bail!(
            "the firmware ran a different model or input set than requested ({} layers, arena {}, \
             {} samples); delete {} and retry",
            report.layers,
            report.arena_bytes,
            report.outputs.len(),
            project.dir.display()
        );
    }
    if let Some(c) = &counts {
        if c.inferences.len() != project.samples
            || c.layers.iter().any(|l| l.len() != report.layers)
        {
            bail!(
                "the cycle plugin counted {} inferences with {:?} layers; the firmware ran {} \
                 with {} layers",
                c.inferences.len(),
                c.layers.iter().map(Vec::len).collect::<Vec<_>>(),
                project.samples,
                report.layers
            );
        }
    }
    let samples = report.outputs.len() as u64;
    let mean = |xs: &mut dyn Iterator<Item = u64>| (xs.sum::<u64>() + samples / 2) / samples;
    let model_cycles = opts.target.has_cycle_model();
    let layers: Vec<LayerProfile> = model
        .layers()
        .enumerate()
        .map(|(i, l)| {
            let timer = mean(&mut report.layer_instructions.iter().map(|v| v[i]));
            LayerProfile {
                index: i,
                // What shares memory: a layer written over its input says so.
                kind: if l.writes_over_input() {
                    format!("{} (in place)", crate::describe::op_name(&l.op))
                } else {
                    crate::describe::op_name(&l.op)
                },
                macs: layer_macs(&l),
                instructions: counts.as_ref().map_or(timer, |c| {
                    mean(&mut c.layers.iter().map(|v| v[i].instructions))
                }),
                timer_instructions: timer,
                cycles: counts
                    .as_ref()
                    .filter(|_| model_cycles)
                    .map(|c| mean(&mut c.layers.iter().map(|v| v[i].cycles))),
            }
        })
        .collect();
    let (counter, instructions_per_sample, cycles_per_sample) = match &counts {
        Some(c) => (
            Counter::Plugin,
            c.inferences.iter().map(|n| n.instructions).collect(),
            if model_cycles {
                c.inferences.iter().map(|n| n.cycles).collect()
            } else {
                Vec::new()
            },
        ),
        None => (Counter::Timer, report.run_instructions.clone(), Vec::new()),
    };
    let out_shape = host::logical_shape(info.output.dims, info.output_rank);
    // f32 models report what `run_f32` wrote; int8 models the raw output of `run_i8`,
    // dequantized here with the runtime's own boundary function, as `icefold run` does.
    let data = crate::host::tensor_values(model.output(), &report.outputs.concat());
    let mut shape = vec![project.samples];
    shape.extend(out_shape);
    // Per sample: the output buffer (16-aligned in the firmware) and the u64 tick counters.
    let harness = samples
        * (report.output_bytes.next_multiple_of(16) as u64 + 8 * (info.layer_count as u64 + 1));
    let fixed_flash = (project.blob_bytes + project.input_bytes) as u64;
    Ok(Profile {
        target: opts.target,
        int8: dtype != DType::F32,
        outputs: Array { shape, data },
        output_bytes: report.outputs.clone(),
        macs: layers.iter().map(|l| l.macs).sum(),
        layers,
        instructions_per_inference: mean(&mut instructions_per_sample.iter().copied()),
        instructions_per_sample,
        timer_instructions_per_sample: report.run_instructions.clone(),
        cycles_per_inference: (!cycles_per_sample.is_empty())
            .then(|| mean(&mut cycles_per_sample.iter().copied())),
        cycles_per_sample,
        counter,
        flash_code_bytes: fw.sizes.flash.saturating_sub(fixed_flash),
        flash_model_bytes: project.blob_bytes as u64,
        flash_inputs_bytes: project.input_bytes as u64,
        ram_static_bytes: fw.sizes.ram.saturating_sub(harness),
        ram_harness_bytes: harness,
        arena_bytes: report.arena_bytes,
        stack_peak_bytes: report.stack_peak_bytes,
        elf: fw.elf.clone(),
        trace: report.trace.clone(),
        signed: report.signed.clone(),
        drift: report.drift.clone(),
    })
}

/// Builds the firmware for `blob` and the samples of `x`, runs it under QEMU and returns the
/// profile.
pub fn profile(blob: &[u8], x: &Array, opts: &McuOptions) -> Result<Profile> {
    check_prerequisites(opts.target)?;
    let project = prepare_project(blob, x, opts)?;
    let fw = build(&project, opts)?;
    run(&project, &fw, blob, opts)
}
