//! Published architectures (issue #17): MobileNetV2, MobileNetV3-small, EfficientNet-B0, SqueezeNet,
//! ShuffleNetV2, GhostNet, DenseNet, MixNet and PP-LCNet as their torchvision / timm builders export
//! them (BatchNorm kept, opset 17), at microcontroller sizes and briefly trained on a synthetic task
//! (`tools/fixtures/make_arch_fixtures.py`, committed under `tests/fixtures/arch`).
//!
//! Each must convert and run in f32 within the parity bar of the other fixtures, and in int8 with an
//! error no worse than onnxruntime's static int8 of the same model and calibration set, both in the
//! default conversion and all-int8 (`--int16-activations 0 --int8-output`).
//!
//! `cargo test -p icefold-tests --release --test arch -- --nocapture` prints the table.

use std::path::PathBuf;

use icefold::format::DType;
use icefold_tests::{f32_parity, Fixture};
use icefold_tool::host;
use icefold_tool::lower::blob::AlignedBytes;
use icefold_tool::pipeline::{self, ConvertOptions, Int8Options, INT16_ACTIVATIONS_DEFAULT};
use icefold_tool::quantize::calibrate::Method;

/// The architecture fixtures: `tests/fixtures/arch`, or `ICEFOLD_ARCH_FIXTURES` (a held-out set
/// made with `make_arch_heldout.py --out DIR`, more test samples of the same models and
/// calibration sets, or `make_arch_fixtures.py --seed N --out DIR`, other models).
fn arch_fixtures() -> Vec<Fixture> {
    let dir = match std::env::var_os("ICEFOLD_ARCH_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/arch"),
    };
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .unwrap_or_else(|e| panic!("cannot read {}/manifest.json: {e}", dir.display()));
    let mut fixtures: Vec<Fixture> = serde_json::from_str(&text).expect("bad arch manifest");
    for f in &mut fixtures {
        f.base = Some(dir.clone());
    }
    fixtures
}

/// The known-behind lists hold the errors recorded on the committed 16-sample test sets; a held-out
/// set (`ICEFOLD_ARCH_FIXTURES`) has its own test inputs, so there every architecture is held to
/// the bar.
fn behind_applies() -> bool {
    std::env::var_os("ICEFOLD_ARCH_FIXTURES").is_none()
}

#[test]
fn architectures_match_onnxruntime_in_f32() {
    let mut failures = Vec::new();
    let fixtures = arch_fixtures();
    assert!(fixtures.len() >= 6, "expected the architecture set");
    for f in &fixtures {
        let result = f32_parity(f).and_then(|p| {
            let d = &p.runtime;
            let line = format!(
                "{:<20} f32 runtime-vs-ORT max-abs {:>9.2e} rel-L2 {:>9.2e} top-1 {}/{} | arena {} bytes, blob {} bytes",
                f.name,
                d.max_abs,
                d.rel_l2,
                d.top1_agree,
                d.samples,
                p.converted.lowered.info.arena_bytes,
                p.converted.blob.len()
            );
            p.check(f, &line).map(|()| line)
        });
        match result {
            Ok(line) => println!("{line}"),
            Err(e) => failures.push(format!("{}: {e:#}", f.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} architectures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

/// int8 conversion of `f` with calibration `method`: relative L2 against onnxruntime's f32 output,
/// and the table line.
fn int8_error(f: &Fixture, all_int8: bool, method: Method) -> anyhow::Result<(f64, String)> {
    let calib = f.array("calib")?;
    let x = f.array("input")?;
    let want = f.array("expected")?;
    let c = pipeline::convert(
        &f.model(),
        &ConvertOptions {
            int8: Some(Int8Options {
                calib: &calib,
                method,
                progress: false,
                bias_correction: true,
                wide_output: !all_int8,
                int16_activations: if all_int8 {
                    0
                } else {
                    INT16_ACTIVATIONS_DEFAULT
                },
            }),
            ..Default::default()
        },
    )?;
    let blob = AlignedBytes::new(&c.blob);
    let model = host::load(blob.as_slice())?;
    anyhow::ensure!(
        model.info().input.dtype != DType::F32,
        "the blob is not int8"
    );
    let got = host::run_f32(&model, &x)?;
    let d = host::diff(&got, &want)?;
    let line = format!(
        "{:<20} {:<8} {:<14} int8-vs-ORT-f32 rel-L2 {:>8.4} top-1 {}/{} | ORT int8 rel-L2 {:>8} | arena {} bytes, blob {} bytes",
        f.name,
        if all_int8 { "all-int8" } else { "default" },
        method.to_string(),
        d.rel_l2,
        d.top1_agree,
        d.samples,
        f.ort_int8_rel_l2
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "-".into()),
        model.info().arena_bytes,
        c.blob.len()
    );
    Ok((d.rel_l2, line))
}

/// A conversion known to be behind onnxruntime's int8 on its architecture fixture. Issue #17 stays
/// open for these; until it is fixed the conversion must not get worse than `ceiling` (its error
/// when recorded, plus 10 %: the conversion is deterministic, so this catches any regression).
struct Behind {
    name: &'static str,
    all_int8: bool,
    ceiling: f64,
    why: &'static str,
}

const BEHIND_ONNXRUNTIME: &[Behind] = &[
    Behind {
        name: "lcnet",
        all_int8: false,
        ceiling: 0.35,
        why: "0.317 vs onnxruntime 0.211 on these 16 test samples: HardSwish between every pair \
              of convolutions keeps ~60 tensors int8, and tail widens each by 1.1-1.7x; on the \
              held-out seeds 1-3 (128 test samples) tail is at onnxruntime's error (0.34/0.44/0.40 \
              vs 0.36/0.48/0.39, docs/QUANTIZATION.md); on 256 held-out samples of this model \
              (make_arch_heldout.py) 0.407 vs 0.427",
    },
    Behind {
        name: "lcnet",
        all_int8: true,
        ceiling: 0.325,
        why: "0.293 vs onnxruntime 0.211 on these 16 test samples; held-out seeds 1-3: 0.35/0.46/0.39 \
              vs 0.36/0.48/0.39; the spread over calibration subsets of 32 samples is 0.21-0.33; \
              on 256 held-out samples of this model 0.401 vs 0.427",
    },
    Behind {
        name: "shufflenet_v2",
        all_int8: true,
        ceiling: 0.056,
        why: "0.050 vs onnxruntime 0.039: tail calibration's widening (MinMax gives 0.037); on 256 \
              held-out samples of this model 0.051 vs 0.052, and 8 of 16 disjoint 16-sample subsets \
              of them are behind (docs/QUANTIZATION.md)",
    },
];

/// `balanced` calibration (opt-in, `--calib-method balanced`) against the same bar: it closes the
/// ShuffleNetV2 all-int8 gap (0.047 vs the bar 0.048); LCNet stays behind on this test set.
const BEHIND_ONNXRUNTIME_BALANCED: &[Behind] = &[
    Behind {
        name: "lcnet",
        all_int8: false,
        ceiling: 0.315,
        why: "0.285 vs onnxruntime 0.211 on these 16 test samples (held-out seeds 1-3: \
              0.35/0.41/0.37 vs 0.36/0.48/0.39)",
    },
    Behind {
        name: "lcnet",
        all_int8: true,
        ceiling: 0.33,
        why: "0.300 vs onnxruntime 0.211 on these 16 test samples (held-out seeds 1-3: \
              0.34/0.41/0.38 vs 0.36/0.48/0.39)",
    },
];

#[test]
fn architectures_int8_no_worse_than_onnxruntime_int8() {
    int8_no_worse_than_onnxruntime(Method::DEFAULT, BEHIND_ONNXRUNTIME);
}

#[test]
fn architectures_int8_balanced_calibration_no_worse_than_onnxruntime_int8() {
    int8_no_worse_than_onnxruntime(
        Method::Balanced(icefold_tool::quantize::calibrate::TAIL_SAMPLES),
        BEHIND_ONNXRUNTIME_BALANCED,
    );
}

fn int8_no_worse_than_onnxruntime(method: Method, behind: &[Behind]) {
    let mut failures = Vec::new();
    let fixtures = arch_fixtures();
    for f in &fixtures {
        for all_int8 in [false, true] {
            match int8_error(f, all_int8, method) {
                Ok((rel_l2, line)) => {
                    println!("{line}");
                    // The bar of the issue: no worse than onnxruntime's int8 (the same allowance as
                    // tests/int8.rs for 16-sample noise: 10 % relative plus 0.005 absolute).
                    let known = behind
                        .iter()
                        .filter(|_| behind_applies())
                        .find(|b| b.name == f.name && b.all_int8 == all_int8);
                    match (known, f.ort_int8_rel_l2) {
                        (Some(b), _) if rel_l2 > b.ceiling => failures.push(format!(
                            "worse than its recorded error {} ({}): {line}",
                            b.ceiling, b.why
                        )),
                        (Some(_), _) => {
                            println!("  ^ behind onnxruntime's int8 (known, issue #17)")
                        }
                        (None, Some(ort)) if rel_l2 > 1.1 * ort + 0.005 => {
                            failures.push(format!("worse than onnxruntime's int8: {line}"))
                        }
                        _ => {}
                    }
                }
                Err(e) => failures.push(format!(
                    "{} ({}): {e:#}",
                    f.name,
                    if all_int8 { "all-int8" } else { "default" }
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} conversions failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The copying plan of `lowered`: every slice in place (`Layer::is_view_slice`) copies its
/// elements again, into bytes of its own past the arena (the readers read that dense copy).
fn with_slices_copied(lowered: &icefold_tool::lower::Lowered) -> icefold_tool::lower::Lowered {
    let mut l = lowered.clone();
    let mut copies = Vec::new();
    for layer in &mut l.layers {
        if layer.is_view_slice() {
            let mut copy = layer.output;
            copy.view = None;
            copy.offset = l.info.arena_bytes;
            l.info.arena_bytes += copy.byte_len().next_multiple_of(4) as u32;
            layer.output = copy;
            copies.push(copy);
        }
    }
    for layer in &mut l.layers {
        for x in layer.inputs.iter_mut() {
            if let Some(copy) = copies.iter().find(|c| c.id == x.id) {
                *x = *copy;
            }
        }
    }
    l
}

/// Slices as views (format 10): MixNet's channel splits are views of their input, read in place
/// by the convolutions after them, and every fixture's outputs are the copying plan's, bit for
/// bit (f32) and byte for byte (int8 default and all-int8, compared through their dequantized
/// values), on the fixture's test inputs.
#[test]
fn slices_in_place_compute_what_the_copies_compute() {
    let mut views_seen = 0;
    for f in &arch_fixtures() {
        let calib = f.array("calib").unwrap();
        let x = f.array("input").unwrap();
        let int8 = |all_int8: bool| Int8Options {
            calib: &calib,
            method: Method::DEFAULT,
            progress: false,
            bias_correction: false,
            wide_output: !all_int8,
            int16_activations: if all_int8 {
                0
            } else {
                INT16_ACTIVATIONS_DEFAULT
            },
        };
        for (kind, int8) in [
            ("f32", None),
            ("int8", Some(int8(false))),
            ("all-int8", Some(int8(true))),
        ] {
            let opts = ConvertOptions {
                int8,
                ..Default::default()
            };
            let c = pipeline::convert(&f.model(), &opts).unwrap();
            let views = c
                .lowered
                .layers
                .iter()
                .filter(|l| l.is_view_slice())
                .count();
            if f.name == "mixnet" {
                assert!(views > 0, "mixnet {kind}: no slice in place");
            }
            if views == 0 {
                continue;
            }
            views_seen += views;
            let run = |bytes: &[u8]| {
                let blob = AlignedBytes::new(bytes);
                let model = host::load(blob.as_slice()).unwrap();
                let y = host::run_f32(&model, &x).unwrap();
                y.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let copied = icefold_tool::lower::blob::blob(&with_slices_copied(&c.lowered)).unwrap();
            assert_eq!(
                run(&c.blob),
                run(&copied),
                "{} {kind}: slices in place change the output",
                f.name
            );
            println!(
                "{:<20} {kind:<8} {views} slices in place, outputs identical",
                f.name
            );
        }
    }
    assert!(views_seen > 0, "no fixture has a slice in place");
}
