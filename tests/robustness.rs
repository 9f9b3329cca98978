//! Corrupted flash: every fixture model, converted in-process, then truncated and bit-flipped.
//!
//! A blob arrives by OTA update or sits in flash for years; a truncated download or a flipped bit
//! must end in a `LoadError`, never a panic and never a model that loads. Three sweeps per blob:
//! 1. every truncation (each prefix length) is refused;
//! 2. single-bit flips are refused: every bit of the header, meta and padding (the structural
//!    part), and a seeded sample of the weights bits (each flip there costs one CRC pass over the
//!    whole blob, and every such flip is caught by the CRC alone, so sampling loses nothing);
//! 3. the same structural flips with the CRC recomputed, as if the corruption happened before
//!    the checksum was written: the structural checks must then refuse the blob, or it must load
//!    and run (on a deterministic input) without a panic.
//!
//! Plus regression tests for what the fuzzer found (see docs/ROBUSTNESS.md).
//!
//! `cargo test --release -p icefold-tests --test robustness -- --nocapture` prints per-blob counts.

use std::panic::{catch_unwind, AssertUnwindSafe};

use icefold::format::header::field;
use icefold::format::{weights_offset, CRC, HEADER_LEN};
use icefold::Model;
use icefold_tests::manifest;
use icefold_tool::pipeline::{self, ConvertOptions};

/// Every flip costs at least one CRC pass over the whole blob; this many blob bytes per sweep
/// and blob bound the time (small blobs get every bit, large ones a seeded sample).
const FLIP_BUDGET_BYTES: usize = 64 << 20;
/// Fewest flips per sweep, whatever the blob size.
const MIN_FLIPS: usize = 256;
/// Mutants that load are run, up to this many per blob (a run of MobileNet costs milliseconds).
const MAX_RUNS: usize = 300;
/// Models whose arena is larger than this are loaded but not run.
const RUN_ARENA_MAX: usize = 1 << 20;

/// A blob in 4-byte aligned storage that can be edited in place.
struct Blob {
    words: Vec<u32>,
    len: usize,
}

impl Blob {
    fn new(bytes: &[u8]) -> Blob {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Blob {
            words,
            len: bytes.len(),
        }
    }
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u32, u8>(&mut self.words)[..self.len]
    }
    fn flip(&mut self, bit: usize) {
        self.bytes_mut()[bit / 8] ^= 1 << (bit % 8);
    }
    fn fix_crc(&mut self) {
        let crc = CRC.checksum(&self.bytes()[HEADER_LEN..]);
        self.bytes_mut()[field::CRC].copy_from_slice(&crc.to_le_bytes());
    }
    /// End of the structural part (header, meta, padding): the start of the weights section.
    fn weights_at(&self) -> usize {
        let meta_len = u32::from_le_bytes(self.bytes()[field::META_LEN].try_into().unwrap());
        weights_offset(meta_len as usize).min(self.len)
    }
}

/// xorshift64*: a fixed, dependency-free sequence so every run tests the same flips.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as usize % n
    }
}

/// Every bit index of `range_bits` if there are at most `max`, else a seeded sample of `max`.
fn bits_to_flip(range_bits: std::ops::Range<usize>, max: usize, seed: u64) -> Vec<usize> {
    if range_bits.len() <= max {
        return range_bits.collect();
    }
    let mut rng = Rng(seed | 1);
    (0..max)
        .map(|_| range_bits.start + rng.below(range_bits.len()))
        .collect()
}

/// What loading (and, if it loads, running) a blob did.
#[derive(Debug, PartialEq)]
enum Outcome {
    Refused,
    Loaded,
}

/// Load `bytes` and, if it loads and its arena is small enough, run it once. A panic becomes an
/// `Err` with the panic message, so the sweep can say which corruption caused it.
fn load_and_maybe_run(bytes: &[u8], run: bool) -> Result<Outcome, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let Ok(model) = Model::new_checked(bytes) else {
            return Outcome::Refused;
        };
        if run && model.arena_bytes() <= RUN_ARENA_MAX {
            let mut arena = vec![0u32; model.arena_bytes().div_ceil(4)];
            let input: Vec<f32> = (0..model.input().len())
                .map(|i| (i % 7) as f32 * 0.25 - 0.75)
                .collect();
            let mut output = vec![0f32; model.output().len()];
            // A model that loads must run: the only run errors are the caller's buffers.
            let arena = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut arena)[..model.arena_bytes()];
            model
                .run_f32(arena, &input, &mut output)
                .expect("a model that loaded refused to run");
        }
        Outcome::Loaded
    }))
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(non-string panic)".into())
    })
}

/// One fixture blob through all three sweeps; returns a report line or the failures.
fn sweep(name: &str, bytes: &[u8]) -> Result<String, Vec<String>> {
    let mut failures = Vec::new();
    let mut fail = |what: String| {
        if failures.len() < 20 {
            failures.push(format!("{name}: {what}"));
        }
    };
    let mut blob = Blob::new(bytes);
    match load_and_maybe_run(blob.bytes(), true) {
        Ok(Outcome::Loaded) => {}
        other => {
            return Err(vec![format!(
                "{name}: the intact blob does not load: {other:?}"
            )])
        }
    }
    let len = blob.len;

    // 1. Truncations.
    for n in 0..len {
        match load_and_maybe_run(&blob.bytes()[..n], false) {
            Ok(Outcome::Refused) => {}
            Ok(Outcome::Loaded) => fail(format!("prefix of {n} bytes loaded")),
            Err(p) => fail(format!("prefix of {n} bytes panicked: {p}")),
        }
    }

    // 2. Plain bit flips, three quarters of the budget on the structural bits (where a flip could
    // get past a weak check), the rest on the weights (where only the CRC can catch it).
    let budget = (FLIP_BUDGET_BYTES / len).max(MIN_FLIPS);
    let structural = 0..blob.weights_at() * 8;
    let mut flips = bits_to_flip(structural.clone(), budget * 3 / 4, 0x5eed);
    let structural_flips = flips.len();
    flips.extend(bits_to_flip(
        structural.end..len * 8,
        budget - structural_flips,
        0x1ce_f01d,
    ));
    for &bit in &flips {
        blob.flip(bit);
        match load_and_maybe_run(blob.bytes(), false) {
            Ok(Outcome::Refused) => {}
            Ok(Outcome::Loaded) => fail(format!(
                "flip of bit {} of byte {} loaded",
                bit % 8,
                bit / 8
            )),
            Err(p) => fail(format!(
                "flip of bit {} of byte {} panicked: {p}",
                bit % 8,
                bit / 8
            )),
        }
        blob.flip(bit);
    }

    // 3. Structural flips behind a valid CRC (header CRC field excluded: it is rewritten).
    let recrc: Vec<usize> = bits_to_flip(structural.clone(), budget / 2, 0xc0ffee)
        .into_iter()
        .filter(|b| !(16 * 8..20 * 8).contains(b))
        .collect();
    let (mut loaded, mut refused) = (0usize, 0usize);
    for &bit in &recrc {
        blob.flip(bit);
        blob.fix_crc();
        match load_and_maybe_run(blob.bytes(), loaded < MAX_RUNS) {
            Ok(Outcome::Refused) => refused += 1,
            Ok(Outcome::Loaded) => loaded += 1,
            Err(p) => fail(format!(
                "flip of bit {} of byte {} with the CRC recomputed panicked: {p}",
                bit % 8,
                bit / 8
            )),
        }
        blob.flip(bit);
    }
    blob.fix_crc();
    assert_eq!(blob.bytes(), bytes, "the sweep must restore the blob");

    if !failures.is_empty() {
        return Err(failures);
    }
    Ok(format!(
        "{name:<24} {len:>8} B  truncations {len:>8}  flips {:>6} ({} structural of {})  \
         CRC-fixed flips {:>6}: {refused} refused, {loaded} loaded (first {MAX_RUNS} run)",
        flips.len(),
        structural_flips,
        structural.len(),
        recrc.len(),
    ))
}

/// Fixtures whose int8 blobs are swept as well (small ones: the sweep is per byte and per bit).
const INT8_SWEPT: &[&str] = &[
    "small_cnn",
    "bn_after_add",
    "bn_affine_false",
    "ops_mix",
    "matmul_dense",
    "conv1d_accel",
];

/// Every fixture blob through every sweep, fixtures split over two threads.
#[test]
fn corrupted_blobs_are_refused_and_never_panic() {
    let fixtures: Vec<_> = manifest()
        .into_iter()
        .filter(|f| f.kind == "parity")
        .collect();
    assert!(!fixtures.is_empty(), "no parity fixtures found");
    // Convert on two threads, then sweep each distinct blob once (several fixtures differ only in
    // their export path and give the same blob).
    let work = std::sync::Mutex::new(fixtures.iter());
    let blobs = std::sync::Mutex::new(Vec::new());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some(f) = work.lock().unwrap().next() else {
                    break;
                };
                match pipeline::convert(&f.model(), &ConvertOptions::default()) {
                    Ok(c) => blobs.lock().unwrap().push((f.name.clone(), c.blob)),
                    Err(e) => results
                        .lock()
                        .unwrap()
                        .push(Err(vec![format!("{}: does not convert: {e:#}", f.name)])),
                }
                // int8 blobs of the smaller models too (every int8 record kind occurs among them:
                // convolutions, dense, pools, add, affine, tables, softmax, padding).
                if INT8_SWEPT.contains(&f.name.as_str()) {
                    let int8 = f.array("calib").and_then(|calib| {
                        let opts = pipeline::Int8Options {
                            calib: &calib,
                            method: icefold_tool::quantize::calibrate::Method::DEFAULT,
                            progress: false,
                            bias_correction: false,
                            wide_output: true,
                            int16_activations: pipeline::INT16_ACTIVATIONS_DEFAULT,
                        };
                        pipeline::convert(
                            &f.model(),
                            &ConvertOptions {
                                int8: Some(opts),
                                ..Default::default()
                            },
                        )
                    });
                    match int8 {
                        Ok(c) => blobs
                            .lock()
                            .unwrap()
                            .push((format!("{}-int8", f.name), c.blob)),
                        Err(e) => results.lock().unwrap().push(Err(vec![format!(
                            "{}: does not convert to int8: {e:#}",
                            f.name
                        )])),
                    }
                }
            });
        }
    });
    let mut blobs = blobs.into_inner().unwrap();
    blobs.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    blobs.dedup_by(|later, first| later.1 == first.1);
    // Largest first, so the two threads finish together.
    blobs.sort_by_key(|b| std::cmp::Reverse(b.1.len()));
    let work = std::sync::Mutex::new(blobs.iter());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some((name, blob)) = work.lock().unwrap().next() else {
                    break;
                };
                let result = sweep(name, blob);
                results.lock().unwrap().push(result);
            });
        }
    });
    let mut failures = Vec::new();
    for r in results.into_inner().unwrap() {
        match r {
            Ok(line) => println!("{line}"),
            Err(f) => failures.extend(f),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A blob whose header claims more meta than there is bytes, and the largest lengths: refused
/// without arithmetic overflow on any target.
#[test]
fn header_lengths_at_the_extremes_are_refused() {
    let c = pipeline::convert(&manifest()[0].model(), &ConvertOptions::default()).unwrap();
    for (meta_len, weights_len) in [
        (u32::MAX, u32::MAX),
        (u32::MAX, 0),
        (0, u32::MAX),
        (u32::MAX - 8, 16),
    ] {
        let mut blob = Blob::new(&c.blob);
        blob.bytes_mut()[field::META_LEN].copy_from_slice(&meta_len.to_le_bytes());
        blob.bytes_mut()[12..16].copy_from_slice(&weights_len.to_le_bytes());
        blob.fix_crc();
        assert_eq!(
            load_and_maybe_run(blob.bytes(), true),
            Ok(Outcome::Refused),
            "meta_len {meta_len}, weights_len {weights_len}"
        );
    }
}

/// The blobs of the architecture-op fixtures (`tests/fixtures/blocks`: hard swish, SiLU, the
/// per-channel `Mul`/`MulI8` gate, `PRelu`/`PReluI8`, tanh and sigmoid tables, global max pooling),
/// f32 and int8, through the same three sweeps.
#[test]
fn corrupted_arch_op_blobs_are_refused_and_never_panic() {
    let mut failures = Vec::new();
    for f in icefold_tests::arch_manifest() {
        let calib = f.array("calib").unwrap();
        let int8 = pipeline::Int8Options {
            calib: &calib,
            method: icefold_tool::quantize::calibrate::Method::DEFAULT,
            progress: false,
            bias_correction: false,
            wide_output: true,
            int16_activations: pipeline::INT16_ACTIVATIONS_DEFAULT,
        };
        for (suffix, int8) in [("", None), ("-int8", Some(int8))] {
            let opts = ConvertOptions {
                int8,
                ..Default::default()
            };
            let blob = pipeline::convert(&f.model(), &opts).unwrap().blob;
            match sweep(&format!("{}{suffix}", f.name), &blob) {
                Ok(line) => println!("{line}"),
                Err(e) => failures.extend(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The int8 conversions the sweeps below cover: the default one (16x8, int16 output head) or
/// all-int8; no bias correction (it changes values, not the records the flips land in).
fn int8_options(calib: &icefold_tool::io::Array, all_int8: bool) -> pipeline::Int8Options<'_> {
    pipeline::Int8Options {
        calib,
        method: icefold_tool::quantize::calibrate::Method::DEFAULT,
        progress: false,
        bias_correction: false,
        wide_output: !all_int8,
        int16_activations: if all_int8 {
            0
        } else {
            pipeline::INT16_ACTIVATIONS_DEFAULT
        },
    }
}

/// Blobs with views (zero-copy concatenation, format version 7) through the same three sweeps:
/// the SqueezeNet-style fixture's fire modules write their expand convolutions straight into the
/// concatenation, f32 and int8 (default and all-int8), so flips land in `TensorDesc::view` too.
#[test]
fn corrupted_blobs_with_views_are_refused_and_never_panic() {
    let f = manifest()
        .into_iter()
        .find(|f| f.name == "squeeze_dense")
        .expect("the squeeze_dense fixture");
    let calib = f.array("calib").unwrap();
    let int8 = |all_int8: bool| int8_options(&calib, all_int8);
    let mut failures = Vec::new();
    for (suffix, int8) in [
        ("", None),
        ("-int8", Some(int8(false))),
        ("-all-int8", Some(int8(true))),
    ] {
        let opts = ConvertOptions {
            int8,
            ..Default::default()
        };
        let converted = pipeline::convert(&f.model(), &opts).unwrap();
        let views = converted
            .lowered
            .layers
            .iter()
            .filter(|l| l.output.view.is_some())
            .count();
        assert!(views > 0, "squeeze_dense{suffix}: no view to sweep");
        match sweep(&format!("squeeze_dense-views{suffix}"), &converted.blob) {
            Ok(line) => println!("{line}"),
            Err(e) => failures.extend(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Blobs with dense weights in the host's other layouts through the same three sweeps: widened
/// (format version 11, `--dense-weights int16`: `DenseLayout::QuadsI16`, int16 values in blocks
/// of four rows) and in row pairs (version 12, `int8`, the default: `DenseLayout::PairsI8`), the
/// dense fixtures in int8 (default and all-int8), so flips land in the layout byte, in the int16
/// values the loader range-checks and in the pairs whose decoded values and sums it bounds.
#[test]
fn corrupted_blobs_with_int16_dense_weights_are_refused_and_never_panic() {
    use icefold::format::DenseLayout;
    use icefold_tool::quantize::DenseWeights;
    let mut failures = Vec::new();
    for (dense_weights, layout, tag, names) in [
        (
            DenseWeights::Int16,
            DenseLayout::QuadsI16,
            "dense16",
            ["matmul_dense", "ops_mix"],
        ),
        // ops_mix's dense layer has inputs not a multiple of 8 (rows): squeeze_dense instead.
        (
            DenseWeights::Int8,
            DenseLayout::PairsI8,
            "pairs",
            ["matmul_dense", "squeeze_dense"],
        ),
    ] {
        for name in names {
            let f = manifest()
                .into_iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("the {name} fixture"));
            let calib = f.array("calib").unwrap();
            for (suffix, all_int8) in [("-int8", false), ("-all-int8", true)] {
                let opts = ConvertOptions {
                    int8: Some(int8_options(&calib, all_int8)),
                    dense_weights,
                    ..Default::default()
                };
                let converted = pipeline::convert(&f.model(), &opts).unwrap();
                let taken = converted
                    .lowered
                    .layers
                    .iter()
                    .filter(|l| match l.op {
                        icefold::format::Op::DenseI8(d) => d.layout == layout,
                        icefold::format::Op::DenseI8Wide(d) => d.layout == layout,
                        _ => false,
                    })
                    .count();
                assert!(
                    taken > 0,
                    "{name}{suffix}: no {layout:?} dense weights to sweep"
                );
                match sweep(&format!("{name}-{tag}{suffix}"), &converted.blob) {
                    Ok(line) => println!("{line}"),
                    Err(e) => failures.extend(e),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Blobs with slices in place (format version 10: a `Slice` whose output is a view of its input,
/// read at its pixel stride by convolutions, or along rows at an offset) through the same three
/// sweeps: `split_tiny` (a channel Split feeding 3x3 and 5x5 depthwise convolutions, a Slice of
/// rows read by a 1x1 convolution) and MixNet (82 channel splits), f32 and int8 (default and
/// all-int8), so flips land in the slices' records and their readers' views.
#[test]
fn corrupted_blobs_with_slices_in_place_are_refused_and_never_panic() {
    let tiny = icefold_tests::fixtures_dir().join("split_tiny");
    let arch = icefold_tests::fixtures_dir().join("arch");
    let text = std::fs::read_to_string(arch.join("manifest.json")).expect("the arch manifest");
    let mut mixnet: icefold_tests::Fixture =
        serde_json::from_str::<Vec<icefold_tests::Fixture>>(&text)
            .expect("bad arch manifest")
            .into_iter()
            .find(|f| f.name == "mixnet")
            .expect("the mixnet fixture");
    mixnet.base = Some(arch);
    let mut failures = Vec::new();
    for (name, model, calib) in [
        (
            "split_tiny",
            tiny.join("model.onnx"),
            tiny.join("calib.npy"),
        ),
        ("mixnet", mixnet.model(), mixnet.dir().join("calib.npy")),
    ] {
        let calib = icefold_tool::io::read_npy(&calib).unwrap();
        let int8 = |all_int8: bool| int8_options(&calib, all_int8);
        for (suffix, int8) in [
            ("", None),
            ("-int8", Some(int8(false))),
            ("-all-int8", Some(int8(true))),
        ] {
            let opts = ConvertOptions {
                int8,
                ..Default::default()
            };
            let converted = pipeline::convert(&model, &opts).unwrap();
            let views = converted
                .lowered
                .layers
                .iter()
                .filter(|l| l.is_view_slice())
                .count();
            assert!(views > 0, "{name}{suffix}: no slice in place to sweep");
            match sweep(&format!("{name}-slices{suffix}"), &converted.blob) {
                Ok(line) => println!("{line}"),
                Err(e) => failures.extend(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Blobs with fused convolution and pooling layers (format version 8) through the same three
/// sweeps: the 28x28 two-conv CNN in f32 (`Conv2dPool`), int8 with its 16x8 first convolution
/// (`Conv2dPoolI16`, `Conv2dPoolI8`) and all-int8 (`Conv2dPoolI8` twice), so flips land in the
/// band records too.
#[test]
fn corrupted_fused_blobs_are_refused_and_never_panic() {
    let f = manifest()
        .into_iter()
        .find(|f| f.name == "cnn28")
        .expect("the cnn28 fixture");
    let calib = f.array("calib").unwrap();
    let int8 = |all_int8: bool| int8_options(&calib, all_int8);
    let mut failures = Vec::new();
    for (suffix, int8) in [
        ("", None),
        ("-int8", Some(int8(false))),
        ("-all-int8", Some(int8(true))),
    ] {
        // A budget below the arena with one pair fused (f32 16,128 bytes; int8 above 3,072;
        // layers written over their inputs) fuses both pairs.
        let opts = ConvertOptions {
            int8,
            limits: icefold_tool::lower::limits::Limits {
                max_arena_bytes: 3072,
                ..Default::default()
            },
            ..Default::default()
        };
        let opts = if opts.int8.is_none() {
            ConvertOptions {
                limits: icefold_tool::lower::limits::Limits {
                    max_arena_bytes: 12 << 10,
                    ..Default::default()
                },
                ..opts
            }
        } else {
            opts
        };
        let converted = pipeline::convert(&f.model(), &opts).unwrap();
        let fused = converted
            .lowered
            .layers
            .iter()
            .filter(|l| l.fused().is_some())
            .count();
        assert_eq!(fused, 2, "cnn28{suffix}: both convolutions fused");
        match sweep(&format!("cnn28-fused{suffix}"), &converted.blob) {
            Ok(line) => println!("{line}"),
            Err(e) => failures.extend(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Layers written over their own input (format version 9): DS-CNN's default plans (f32, int8,
/// all-int8) run layers in place at the arena's peak. They compute the bytes of the same
/// conversion planned apart (`no_in_place`), and corrupted copies go through the three sweeps,
/// so flips land on in-place offsets too.
#[test]
fn in_place_plans_compute_the_same_bytes_and_corrupted_ones_are_refused() {
    let f = manifest()
        .into_iter()
        .find(|f| f.name == "dscnn")
        .expect("the dscnn fixture");
    let calib = f.array("calib").unwrap();
    let x = f.array("input").unwrap();
    let mut failures = Vec::new();
    for (suffix, int8) in [
        ("", None),
        ("-int8", Some(int8_options(&calib, false))),
        ("-all-int8", Some(int8_options(&calib, true))),
    ] {
        let convert = |no_in_place| {
            let opts = ConvertOptions {
                int8,
                no_in_place,
                ..Default::default()
            };
            pipeline::convert(&f.model(), &opts).unwrap()
        };
        let (over, apart) = (convert(false), convert(true));
        let overlaps = |l: &icefold::format::Layer| l.writes_over_input();
        assert!(over.lowered.layers.iter().any(overlaps), "dscnn{suffix}");
        assert!(!apart.lowered.layers.iter().any(overlaps), "dscnn{suffix}");
        assert!(
            over.lowered.info.arena_bytes < apart.lowered.info.arena_bytes,
            "dscnn{suffix}"
        );
        let run = |blob: &[u8]| {
            let aligned = icefold_tool::lower::blob::AlignedBytes::new(blob);
            let model = icefold_tool::host::load(aligned.as_slice()).unwrap();
            let y = icefold_tool::host::run_f32(&model, &x).unwrap();
            y.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(run(&over.blob), run(&apart.blob), "dscnn{suffix}");
        match sweep(&format!("dscnn-in-place{suffix}"), &over.blob) {
            Ok(line) => println!("{line}"),
            Err(e) => failures.extend(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
