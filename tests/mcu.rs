//! Host = MCU: the runtime inside real firmware under QEMU, for every supported core, gives the
//! host runtime's outputs, with instruction counts identical run to run. int8 models must give
//! the host's `run_i8` output bytes exactly.
//!
//! Needs `qemu-system-arm` and the rustup targets (CI installs both, see `.ci/run`). Without
//! QEMU the tests print why and pass; a missing rustup target fails with the install command.
//! The first run builds the firmware's dependencies once per target (~15 s each); later runs
//! reuse them (cache: `target/icefold-mcu`, or `ICEFOLD_MCU_CACHE`).

use std::process::{Command, Stdio};

use icefold::format::DType;
use icefold_tests::manifest;
use icefold_tool::host;
use icefold_tool::io::Array;
use icefold_tool::lower::blob::AlignedBytes;
use icefold_tool::mcu::{self, Counter, McuOptions, Target, F32_REL_L2_LIMIT};
use icefold_tool::pipeline::{self, ConvertOptions, Int8Options};
use icefold_tool::quantize::calibrate::Method;

/// How the fixture is converted.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Precision {
    F32,
    /// Quantized with the fixture's own calibration set (the output head in int16, the default).
    Int8,
    /// As `Int8`, every tensor int8 (`icefold convert --int8-output`).
    Int8Narrow,
}

fn qemu_installed() -> bool {
    Command::new("qemu-system-arm")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Converts `fixture`, runs it twice on `target` and checks parity and repeatability.
fn check(fixture: &str, target: Target) {
    check_precision(fixture, target, Precision::F32);
}

/// [`check`] for `fixture` quantized to int8 with its calibration set.
fn check_int8(fixture: &str, target: Target) {
    check_precision(fixture, target, Precision::Int8);
}

/// Test samples the firmware embeds: the fixtures hold 64 (enough to compare quantizations), but
/// bit-exactness needs only a few, and 8 fit beside the arena in the Cortex-M0 board's 16 KiB RAM.
const FIRMWARE_SAMPLES: usize = 8;

/// `fixture` converted in `precision` (int8: with its calibration set), and its first
/// [`FIRMWARE_SAMPLES`] test inputs.
fn convert_fixture(fixture: &str, precision: Precision) -> (pipeline::Converted, Array) {
    let f = manifest()
        .into_iter()
        .chain(icefold_tests::arch_manifest())
        .find(|f| f.name == fixture)
        .unwrap_or_else(|| panic!("fixture {fixture} is not in the manifest"));
    let converted = match precision {
        Precision::F32 => {
            pipeline::convert(&f.model(), &ConvertOptions::default()).expect("convert")
        }
        Precision::Int8 | Precision::Int8Narrow => {
            let calib = f.array("calib").expect("calib");
            let opts = Int8Options {
                calib: &calib,
                method: Method::DEFAULT,
                progress: false,
                // Bias correction changes biases, not the instructions or the bit-exactness.
                bias_correction: false,
                wide_output: precision == Precision::Int8,
                int16_activations: icefold_tool::pipeline::INT16_ACTIVATIONS_DEFAULT,
            };
            pipeline::convert(
                &f.model(),
                &ConvertOptions {
                    int8: Some(opts),
                    ..Default::default()
                },
            )
            .expect("convert int8")
        }
    };
    let x = f.array("input").expect("input").first(FIRMWARE_SAMPLES);
    (converted, x)
}

fn check_precision(fixture: &str, target: Target, precision: Precision) {
    if !qemu_installed() {
        eprintln!(
            "SKIPPED mcu test {fixture} on {target}: qemu-system-arm is not installed \
             (apt-get install --no-install-recommends qemu-system-arm)"
        );
        return;
    }
    let (converted, x) = convert_fixture(fixture, precision);
    let opts = McuOptions::new(target);
    mcu::check_prerequisites(target).unwrap_or_else(|e| panic!("{e:#}"));

    let project = mcu::prepare_project(&converted.blob, &x, &opts).expect("project");
    let fw = mcu::build(&project, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    let first = mcu::run(&project, &fw, &converted.blob, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    let parity = mcu::compare(&first, &converted.blob, &x).expect("compare");
    eprintln!("{fixture} on {target}:\n{}", mcu::render(&first, &parity));

    assert!(
        parity.pass && parity.rel_l2 <= F32_REL_L2_LIMIT,
        "{fixture} on {target}: MCU vs host rel-L2 {:e}, max-abs {:e}",
        parity.rel_l2,
        parity.max_abs
    );
    assert_eq!(first.outputs.shape[0], x.samples());
    assert_eq!(first.int8, precision != Precision::F32);
    if precision != Precision::F32 {
        // The raw int8 (int16) bytes equal the host's `run_i8`, and the float outputs written are
        // the ones `icefold run` writes (host `run_f32`: quantize, run_i8, dequantize), bit for
        // bit.
        assert!(
            parity.bytes_identical,
            "{fixture} on {target}: raw output bytes differ"
        );
        let (dtype, width) = match precision {
            Precision::Int8 => (DType::I16, 2),
            _ => (DType::I8, 1),
        };
        assert_eq!(converted.lowered.info.output.dtype, dtype);
        if !target.has_fpu() {
            assert_int8_path_has_no_float(&first.elf, target);
        }
        assert_eq!(
            first.output_bytes.concat().len(),
            width * first.outputs.data.len(),
            "{width} bytes per output"
        );
        let aligned = AlignedBytes::new(&converted.blob);
        let model = host::load(aligned.as_slice()).expect("load");
        let run = host::run_f32(&model, &x).expect("host run");
        assert_eq!(run.shape, first.outputs.shape);
        let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&run.data),
            bits(&first.outputs.data),
            "{fixture} on {target}: outputs differ from `icefold run`"
        );
    }

    // Exact counts: a second run of the same image counts the same instructions, layer by layer.
    let second =
        mcu::run(&project, &fw, &converted.blob, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        first.instructions_per_sample,
        second.instructions_per_sample
    );
    assert_eq!(first.layers, second.layers);
    assert_eq!(first.output_bytes, second.output_bytes);
    assert_eq!(first.stack_peak_bytes, second.stack_peak_bytes);

    check_counters(&first, fixture);

    // The numbers hang together.
    let layer_sum: u64 = first.layers.iter().map(|l| l.instructions).sum();
    assert!(layer_sum > 0 && layer_sum <= first.instructions_per_inference);
    let lowered_macs: u64 = converted.lowered.notes.iter().map(|n| n.macs).sum();
    assert_eq!(
        first.macs, lowered_macs,
        "MACs from the blob vs the converter's notes"
    );
    assert_eq!(first.flash_model_bytes, converted.blob.len() as u64);
    assert_eq!(
        first.arena_bytes,
        u64::from(converted.lowered.info.arena_bytes)
    );
    assert!(first.ram_static_bytes >= first.arena_bytes);
    assert!(first.flash_code_bytes > 1000 && first.stack_peak_bytes > 0);
    let json = first.to_json(Some(&parity));
    for key in [
        "instructions_per_inference",
        "macs",
        "flash_code_bytes",
        "flash_model_bytes",
        "ram_static_bytes",
        "arena_bytes",
        "stack_peak_bytes",
        "counter",
        "cycles_per_inference",
        "layers",
        "\"pass\": true",
        "\"bytes_identical\"",
    ] {
        assert!(json.contains(key), "JSON profile lacks {key}:\n{json}");
    }
}

/// How far the cycle plugin's instruction count of a region (an inference or a layer) may be
/// from the firmware timer's under `-icount`: both are exact, and differ only by what each brackets
/// besides the region (the timer reads, the marker calls), a few dozen instructions.
const PLUGIN_TIMER_MARGIN: u64 = 64;

/// With the cycle plugin (a C compiler present), its instruction counts agree with the timer's
/// within [`PLUGIN_TIMER_MARGIN`] per layer and per inference, and on the Cortex-M4 every region's
/// estimated cycles are at least its instructions (no instruction takes less than a cycle).
fn check_counters(p: &mcu::Profile, fixture: &str) {
    let target = p.target;
    if p.counter == Counter::Timer {
        assert!(!mcu::cycles::compiler_available());
        eprintln!("{fixture} on {target}: no C compiler, counted by the timer only");
        return;
    }
    let close = |a: u64, b: u64| a.abs_diff(b) <= PLUGIN_TIMER_MARGIN;
    for (plugin, timer) in p
        .instructions_per_sample
        .iter()
        .zip(&p.timer_instructions_per_sample)
    {
        assert!(
            close(*plugin, *timer),
            "{fixture} on {target}: inference {plugin} (plugin) vs {timer} (timer) instructions"
        );
    }
    for l in &p.layers {
        assert!(
            close(l.instructions, l.timer_instructions),
            "{fixture} on {target}: layer {} {} (plugin) vs {} (timer) instructions",
            l.index,
            l.instructions,
            l.timer_instructions
        );
        assert_eq!(l.cycles.is_some(), target.has_cycle_model());
        if let Some(c) = l.cycles {
            assert!(
                c >= l.instructions,
                "{fixture} on {target}: layer {}",
                l.index
            );
        }
    }
    assert_eq!(p.cycles_per_inference.is_some(), target.has_cycle_model());
    for (c, i) in p.cycles_per_sample.iter().zip(&p.instructions_per_sample) {
        assert!(
            c >= i,
            "{fixture} on {target}: {c} cycles < {i} instructions"
        );
    }
}

/// The plugin counts on the Cortex-M4 (needs a C compiler, as CI has): checked against the timer
/// by [`check_counters`], with estimated cycles per layer and per inference.
#[test]
fn cycle_plugin_agrees_with_the_timer_on_cortex_m4f() {
    if !qemu_installed() || !mcu::cycles::compiler_available() {
        eprintln!("SKIPPED: needs qemu-system-arm and a C compiler (cc) for the cycle plugin");
        return;
    }
    let (converted, x) = convert_fixture("small_cnn", Precision::Int8);
    let opts = McuOptions::new(Target::CortexM4);
    let p = mcu::profile(&converted.blob, &x, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(p.counter, Counter::Plugin);
    check_counters(&p, "small_cnn");
    let cycles = p.cycles_per_inference.expect("cycles on a Cortex-M4");
    assert!(cycles > p.instructions_per_inference);
    let layers: u64 = p.layers.iter().filter_map(|l| l.cycles).sum();
    assert!(
        layers > 0 && layers <= cycles,
        "{layers} layer cycles of {cycles}"
    );
    let json = p.to_json(None);
    assert!(json.contains("\"cycle_model\": \"cortex-m4\""), "{json}");
    // The firmware that ran carries the marker functions outside tools look for.
    let elf = std::fs::read(&p.elf).expect("elf");
    mcu::cycles::Markers::find(&elf).expect("markers");
}

/// On a core without an FPU every float operation is a call to a soft-float routine: no function
/// of the int8 kernels or of the int8 dispatch may reach one, directly or through other calls
/// (the f32 kernels linked beside them are reachable only through f32 layers, which the loader
/// refuses in an int8 model). A firmware that links only its model's kernels (the micro:bit's,
/// `Target::links_model_kernels_only`) has no f32 kernel at all, and its few int8 kernels may be
/// inlined into the int8 dispatch, which is then where the walk starts.
fn assert_int8_path_has_no_float(elf: &std::path::Path, target: Target) {
    let model_kernels_only = target.links_model_kernels_only();
    let is_int8_path = |name: &str| {
        name.contains("7kernels9reference4int8")
            || name.contains("7kernels4fast")
            || name.contains("6engine4int8")
    };
    let reach = icefold_tool::mcu::softfloat::float_reach(elf, is_int8_path).expect("call graph");
    // The kernels are functions of their own in this image (not all inlined away), so the walk
    // starts from real code.
    // (`fast::conv::run_loops`: the convolution dispatch, `run` inlined into its callers.)
    let kernels: &[&str] = if model_kernels_only {
        &["6engine4int8"]
    } else {
        &["4fast4conv9run_loops", "4fast5dense4rows", "4pool4pool"]
    };
    for kernel in kernels {
        assert!(
            reach.roots.iter().any(|r| r.contains(kernel)),
            "int8 kernel {kernel} not found as a function in {}: {:?}",
            elf.display(),
            reach.roots
        );
    }
    // The 16x8 convolution (the default conversion's input and first layers) is on the walk too:
    // its kernel or, where that is inlined, its dispatch.
    assert!(
        model_kernels_only
            || reach
                .roots
                .iter()
                .any(|r| r.contains("11conv2d_wide") || r.contains("12run_conv_i16")),
        "16x8 convolution not found as a function in {}: {:?}",
        elf.display(),
        reach.roots
    );
    assert!(
        reach.float_paths.is_empty(),
        "the int8 path calls soft-float routines: {:#?}",
        reach.float_paths
    );
    assert!(
        reach.indirect_callers.is_empty(),
        "indirect calls the walk cannot follow: {:?}",
        reach.indirect_callers
    );
    // Control: the f32 kernels linked beside them do reach soft-float routines, so the walk sees
    // float calls where there are some.
    let is_f32_kernel = |name: &str| name.contains("7kernels9reference") && !name.contains("4int8");
    let f32_reach =
        icefold_tool::mcu::softfloat::float_reach(elf, is_f32_kernel).expect("call graph");
    if model_kernels_only {
        // Only element-type generic moves (`reference::axis`) may be linked from there.
        assert!(
            f32_reach.float_paths.is_empty(),
            "an int8 model's firmware links f32 kernels: {:#?}",
            f32_reach.float_paths
        );
    } else {
        assert!(
            !f32_reach.roots.is_empty() && !f32_reach.float_paths.is_empty(),
            "the walk found no float call in the f32 kernels either: {f32_reach:?}"
        );
    }
    eprintln!(
        "int8 path: {} functions from {} roots, no soft-float call",
        reach.reachable,
        reach.roots.len()
    );
}

#[test]
fn small_cnn_on_cortex_m4f() {
    check("small_cnn", Target::CortexM4);
}

#[test]
fn small_cnn_on_cortex_m3() {
    check("small_cnn", Target::CortexM3);
}

#[test]
fn small_cnn_on_cortex_m0_soft_float() {
    check("small_cnn", Target::CortexM0);
}

#[test]
fn small_cnn_on_cortex_m33() {
    check("small_cnn", Target::CortexM33);
}

/// Issue 19: the 28x28 two-conv CNN in f32 fits the micro:bit's 16 KiB of RAM because both
/// convolutions are fused with the max pooling after them (the arena holds two rows of each
/// convolution's output instead of all of it) and the firmware links only the model's kernels.
#[test]
fn cnn28_f32_fused_on_cortex_m0() {
    if !qemu_installed() {
        eprintln!("SKIPPED cnn28 on cortex-m0: qemu-system-arm is not installed");
        return;
    }
    let f = manifest()
        .into_iter()
        .find(|f| f.name == "cnn28")
        .expect("the cnn28 fixture");
    let convert = |max_arena_bytes| {
        let opts = ConvertOptions {
            limits: icefold_tool::lower::limits::Limits {
                max_arena_bytes,
                ..Default::default()
            },
            ..Default::default()
        };
        pipeline::convert(&f.model(), &opts)
    };
    // Within the default budget nothing is fused (the layers run in place, in bands of two
    // 28-pixel rows: 26,432 bytes where the layer-by-layer plan needed 31,360); the micro:bit's
    // 16 KiB less the 4 KiB its stack needs as the budget fuses both convolutions.
    let unfused = convert(icefold_tool::lower::limits::Limits::DEFAULT.max_arena_bytes).unwrap();
    assert!(unfused.fusion.fused_convs.is_empty());
    assert_eq!(unfused.lowered.info.arena_bytes, 26_432);
    let converted = convert(12 << 10).unwrap();
    let fused = converted
        .lowered
        .layers
        .iter()
        .filter(|l| l.fused().is_some());
    assert_eq!(fused.count(), 2);
    assert_eq!(converted.fusion.arena_bytes, (26_432, 11_200));
    // The same outputs, bit for bit, on the host.
    let x = f.array("input").expect("input").first(FIRMWARE_SAMPLES);
    let run = |blob: &[u8]| {
        let aligned = AlignedBytes::new(blob);
        let model = host::load(aligned.as_slice()).expect("load");
        let y = host::run_f32(&model, &x).expect("host run");
        y.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(run(&converted.blob), run(&unfused.blob));

    let opts = McuOptions::new(Target::CortexM0);
    mcu::check_prerequisites(Target::CortexM0).unwrap_or_else(|e| panic!("{e:#}"));
    let project = mcu::prepare_project(&converted.blob, &x, &opts).expect("project");
    let fw = mcu::build(&project, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    let p = mcu::run(&project, &fw, &converted.blob, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    let parity = mcu::compare(&p, &converted.blob, &x).expect("compare");
    eprintln!("cnn28 on cortex-m0:\n{}", mcu::render(&p, &parity));
    assert!(
        parity.pass && parity.rel_l2 <= F32_REL_L2_LIMIT,
        "cnn28 on cortex-m0: MCU vs host rel-L2 {:e}",
        parity.rel_l2
    );
    // The unfused plan does not fit the board (its arena alone is 31,360 bytes of 16 KiB).
    let project = mcu::prepare_project(&unfused.blob, &x, &opts).expect("project");
    let Err(err) = mcu::build(&project, &opts) else {
        panic!("the unfused plan does not fit the board, yet it linked");
    };
    assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
}

/// Issue 19: the demo's gesture model (`icefold demo`: trained here, a few epochs) runs on the
/// micro:bit in f32 and in int8, the int8 outputs byte-identical to the host's.
#[test]
fn demo_gesture_model_f32_and_int8_on_cortex_m0() {
    if !qemu_installed() {
        eprintln!("SKIPPED demo model on cortex-m0: qemu-system-arm is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("icefold-m0-demo-{}", std::process::id()));
    let args = icefold_tool::demo::DemoArgs {
        out_dir: dir.clone(),
        seed: 1,
        epochs: Some(2),
        no_mcu: true,
        mcu_samples: FIRMWARE_SAMPLES,
    };
    icefold_tool::demo::run(&args).expect("demo");
    let x = icefold_tool::io::read_npy(&dir.join("test.npy"))
        .expect("test inputs")
        .first(FIRMWARE_SAMPLES);
    let target = Target::CortexM0;
    mcu::check_prerequisites(target).unwrap_or_else(|e| panic!("{e:#}"));
    let opts = McuOptions::new(target);
    for (file, int8) in [("model_f32.icefold", false), ("model.icefold", true)] {
        let blob = std::fs::read(dir.join(file)).expect("blob");
        let project = mcu::prepare_project(&blob, &x, &opts).expect("project");
        let fw = mcu::build(&project, &opts).unwrap_or_else(|e| panic!("{e:#}"));
        let p = mcu::run(&project, &fw, &blob, &opts).unwrap_or_else(|e| panic!("{e:#}"));
        let parity = mcu::compare(&p, &blob, &x).expect("compare");
        eprintln!("demo {file} on {target}:\n{}", mcu::render(&p, &parity));
        assert!(
            parity.pass,
            "demo {file} on {target}: rel-L2 {:e}",
            parity.rel_l2
        );
        assert_eq!(p.int8, int8);
        if int8 {
            assert!(parity.bytes_identical, "demo {file}: int8 bytes differ");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Padding, leaky ReLU, grouped convolution, average pooling with padding: more kernels.
#[test]
fn ops_mix_on_cortex_m4f() {
    check("ops_mix", Target::CortexM4);
}

/// Dense layers only, soft-float.
#[test]
fn matmul_dense_on_cortex_m0_soft_float() {
    check("matmul_dense", Target::CortexM0);
}

/// int8: the integer kernels (per-channel requantization, saturation) on the DSP core.
#[test]
fn small_cnn_int8_on_cortex_m4f() {
    check_int8("small_cnn", Target::CortexM4);
}

/// int8 on ARMv6-M: no DSP, no hardware divide, only 32x32->32 multiplies; every tensor int8
/// (`--int8-output`: the firmware reads an `[i8]` output).
#[test]
fn small_cnn_int8_on_cortex_m0() {
    check_precision("small_cnn", Target::CortexM0, Precision::Int8Narrow);
}

/// int8 on ARMv8-M Mainline; the output head (dense, softmax) in int16.
/// The architecture ops (SiLU and sigmoid tables, the per-channel `MulI8` gate, tanh, `PReluI8`,
/// global max pooling, int16 output head) in firmware: byte-identical to the host.
#[test]
fn efficient_block_int8_on_cortex_m4f() {
    check_int8("efficient_block", Target::CortexM4);
}

/// Zero-copy concatenation (format 7): the fire modules' expand convolutions write straight into
/// their slots of the concatenation, through the fast loops' output pixel stride, and the
/// concatenations move nothing; byte-identical to the host on the DSP core and on ARMv6-M.
#[test]
fn squeeze_dense_int8_with_views_on_cortex_m4f_and_m0() {
    let (converted, _) = convert_fixture("squeeze_dense", Precision::Int8);
    let views = converted
        .lowered
        .layers
        .iter()
        .filter(|l| l.output.view.is_some());
    assert!(views.count() > 0, "squeeze_dense converts without views");
    check_int8("squeeze_dense", Target::CortexM4);
    check_precision("squeeze_dense", Target::CortexM0, Precision::Int8Narrow);
}

#[test]
fn ops_mix_int8_on_cortex_m33() {
    check_int8("ops_mix", Target::CortexM33);
}

/// The runtime's `defmt` feature in firmware: the report and a per-layer trace travel as defmt
/// frames over semihosting and are decoded on the host with the ELF's table. The decoded outputs
/// are the text firmware's, byte for byte, and every layer's checksum equals the host runtime's.
fn check_defmt_int8(fixture: &str, target: Target) {
    if !qemu_installed() {
        eprintln!("SKIPPED defmt test {fixture} on {target}: qemu-system-arm is not installed");
        return;
    }
    let (converted, x) = convert_fixture(fixture, Precision::Int8);
    let blob = &converted.blob;
    mcu::check_prerequisites(target).unwrap_or_else(|e| panic!("{e:#}"));

    let mut text_opts = McuOptions::new(target);
    text_opts.defmt = false;
    let mut defmt_opts = McuOptions::new(target);
    defmt_opts.defmt = true;
    let text = mcu::profile(blob, &x, &text_opts).unwrap_or_else(|e| panic!("{e:#}"));
    let defmt = mcu::profile(blob, &x, &defmt_opts).unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(
        text.elf, defmt.elf,
        "the two transports are separate images"
    );

    let parity = mcu::compare(&defmt, blob, &x).expect("compare");
    if !target.has_fpu() {
        assert_int8_path_has_no_float(&defmt.elf, target);
    }
    assert!(
        parity.bytes_identical,
        "{fixture} on {target}: defmt run's int8 bytes differ"
    );
    assert_eq!(defmt.output_bytes, text.output_bytes);
    assert!(text.trace.is_empty(), "text firmware has no trace");

    let layers = converted.lowered.layers.len();
    let host = mcu::host_trace(blob, &x).expect("host trace");
    assert_eq!(host.len(), layers);
    assert_eq!(defmt.trace.len(), layers, "one TRACE record per layer");
    assert_eq!(mcu::first_divergence(&defmt.trace, &host), None);
    // The last layer's output is the model's output for sample 0, so its checksum must be the
    // checksum of the bytes the report carried.
    let last = defmt.trace.last().expect("trace");
    assert_eq!(
        last.checksum,
        icefold::trace::checksum(&defmt.output_bytes[0]),
        "the trace's last layer is the reported output"
    );

    // A text-report image has no defmt table: decoding it is refused with a reason.
    let err = mcu::decode_defmt(&text.elf, &[1, 2, 3]).unwrap_err();
    assert!(format!("{err:#}").contains("no defmt table"), "{err:#}");
}

#[test]
fn defmt_trace_int8_on_cortex_m4f() {
    check_defmt_int8("small_cnn", Target::CortexM4);
}

/// defmt on ARMv6-M (no atomics beyond load/store: defmt's critical section comes from cortex-m).
#[test]
fn defmt_trace_int8_on_cortex_m0() {
    check_defmt_int8("ops_mix", Target::CortexM0);
}

/// The fast kernels equal the reference kernels on the device itself, where the Arm DSP
/// instructions run (on the host they are portable Rust): `examples/kernel-check` computes random
/// convolutions (every element-type pair, regular, depthwise, pointwise and first-layer shapes,
/// strides, dilations, pads, zero points, pad values), dense layers and residual additions with
/// both kernels on each core and compares them byte for byte. The M33 build enables the DSP path
/// (`dsp` feature, `-C target-cpu=cortex-m33`); the M3 and M0 run the portable fast kernels.
#[test]
fn fast_kernels_equal_reference_on_every_core() {
    if !qemu_installed() {
        eprintln!("SKIPPED on-device kernel check: qemu-system-arm is not installed");
        return;
    }
    let crate_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernel-check");
    let opts = McuOptions::new(Target::CortexM4);
    let target_dir = opts.cache_dir.join("kernel-check");
    for target in Target::ALL {
        mcu::check_prerequisites(target).unwrap_or_else(|e| panic!("{e:#}"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(&crate_dir)
            .args(["build", "--release", "--target", target.triple()])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .stdin(Stdio::null());
        if let Some((features, rustflags)) = target.dsp_build() {
            let triple = target.triple().replace(['.', '-'], "_").to_uppercase();
            build
                .args(["--features", features])
                .env(format!("CARGO_TARGET_{triple}_RUSTFLAGS"), rustflags);
        }
        let built = build.output().expect("cargo");
        assert!(
            built.status.success(),
            "building the kernel check for {target}:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let elf = target_dir
            .join(target.triple())
            .join("release/icefold-kernel-check");
        let run = Command::new("timeout")
            .args([
                "300",
                "qemu-system-arm",
                "-machine",
                target.machine(),
                "-cpu",
                target.cpu(),
            ])
            .args(["-display", "none", "-serial", "none", "-monitor", "none"])
            .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
            .arg(&elf)
            .stdin(Stdio::null())
            .output()
            .expect("qemu");
        let out = String::from_utf8_lossy(&run.stdout);
        eprintln!("{target}: {}", out.trim());
        assert!(
            run.status.success() && out.contains("mismatches=0"),
            "fast kernels differ from the reference on {target}: {out}{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

/// Signed blobs on the device (issue #21): firmware built with the runtime's `signed` feature
/// loads the blob with `Model::new_signed` and the vendor's key, runs it with the host's
/// results, and refuses a copy with one weight byte changed, one cut short and one without
/// signature; a blob signed with another key does not run at all.
#[test]
fn signed_int8_blob_verifies_and_altered_copies_are_refused_on_cortex_m4f() {
    if !qemu_installed() {
        eprintln!("SKIPPED: qemu-system-arm is not installed");
        return;
    }
    let target = Target::CortexM4;
    mcu::check_prerequisites(target).unwrap_or_else(|e| panic!("{e:#}"));
    let (converted, x) = convert_fixture("small_cnn", Precision::Int8);
    let vendor = icefold_tool::signing::generate().expect("key");
    let signed = icefold_tool::signing::sign(&converted.blob, &vendor.sk).expect("sign");
    let mut opts = McuOptions::new(target);
    opts.public_key = Some(signed.public);
    let profile = mcu::profile(&signed.bytes, &x, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    let parity = mcu::compare(&profile, &signed.bytes, &x).expect("compare");
    eprintln!("{}", mcu::render(&profile, &parity));
    assert!(parity.pass && parity.bytes_identical);
    let s = profile
        .signed
        .as_ref()
        .expect("the firmware reports SIGNED");
    assert_eq!(
        (
            s.tampered.as_str(),
            s.truncated.as_str(),
            s.unsigned.as_str()
        ),
        ("SignatureInvalid", "SignatureTruncated", "Unsigned")
    );
    // Verification is real work (a SHA-512 pass and a double scalar multiplication), far more
    // than the loader's checks; the numbers are in docs/BENCHMARKS.md.
    assert!(
        s.verify_instructions > s.checked_instructions + 500_000,
        "{s:?}"
    );

    // Signed with another key: the firmware refuses to load and fails.
    let other = icefold_tool::signing::generate().expect("key");
    let foreign = icefold_tool::signing::sign(&converted.blob, &other.sk).expect("sign");
    let err = mcu::profile(&foreign.bytes, &x, &opts)
        .map(|_| ())
        .expect_err("a blob signed with another key must not load");
    assert!(
        format!("{err:#}").contains("signature does not verify"),
        "{err:#}"
    );
}

/// Drift on the device (issue #21): firmware with feature `drift` counts, per layer, the int8
/// values clamped at the ends of their range, and its counts on inputs scaled x3 away from the
/// calibration data are exactly the host's (`icefold run --calib` report), and non-zero.
#[test]
fn drift_counts_on_cortex_m4f_equal_the_hosts() {
    if !qemu_installed() {
        eprintln!("SKIPPED: qemu-system-arm is not installed");
        return;
    }
    let target = Target::CortexM4;
    mcu::check_prerequisites(target).unwrap_or_else(|e| panic!("{e:#}"));
    let (converted, mut x) = convert_fixture("small_cnn", Precision::Int8);
    x.data.iter_mut().for_each(|v| *v *= 3.0);
    let mut opts = McuOptions::new(target);
    opts.drift = true;
    let profile = mcu::profile(&converted.blob, &x, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    let aligned = AlignedBytes::new(&converted.blob);
    let model = host::load(aligned.as_slice()).expect("load");
    let host_counts = icefold_tool::drift::clamp_counts(&model, &x, false).expect("host");
    let want: Vec<(usize, u64, u64, u64)> = host_counts
        .iter()
        .enumerate()
        .filter(|(_, c)| c.values > 0)
        .map(|(i, c)| (i, c.values.into(), c.low.into(), c.high.into()))
        .collect();
    assert_eq!(profile.drift, want);
    assert!(
        profile.drift.iter().any(|&(_, _, lo, hi)| lo + hi > 0),
        "inputs x3 clamp somewhere: {:?}",
        profile.drift
    );
}

/// Feature `small-code` (issue #19): the firmware built with the runtime's reference kernels
/// only writes the same output bytes as the host and as the firmware with the fast kernels, in
/// less code.
#[test]
fn small_code_int8_on_cortex_m4f_is_byte_identical_in_less_code() {
    if !qemu_installed() {
        eprintln!("SKIPPED: qemu-system-arm is not installed");
        return;
    }
    let target = Target::CortexM4;
    mcu::check_prerequisites(target).unwrap_or_else(|e| panic!("{e:#}"));
    let (converted, x) = convert_fixture("small_cnn", Precision::Int8);
    let fast = mcu::profile(&converted.blob, &x, &McuOptions::new(target))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut opts = McuOptions::new(target);
    opts.small_code = true;
    let small = mcu::profile(&converted.blob, &x, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    let parity = mcu::compare(&small, &converted.blob, &x).expect("compare");
    eprintln!("small-code:\n{}", mcu::render(&small, &parity));
    assert!(
        parity.bytes_identical,
        "small-code output bytes differ from the host's"
    );
    assert_eq!(small.output_bytes, fast.output_bytes);
    assert!(
        small.flash_code_bytes < fast.flash_code_bytes,
        "small-code {} B of code, fast kernels {} B",
        small.flash_code_bytes,
        fast.flash_code_bytes
    );
    // The fast kernels' work is not done: the reference kernels take more instructions.
    assert!(small.instructions_per_inference > fast.instructions_per_inference);
}
