//! A firmware links only its model's kernels (issue #19): the set `KernelSet::of` computes for
//! each MLPerf Tiny int8 model is the one its architecture implies, a model loaded with exactly
//! that set runs bit for bit as with every kernel, and a set without one of them is refused at
//! load, naming a layer that needs it.
//!
//! The sizes these sets give a firmware are in docs/BENCHMARKS.md ("Flash: a firmware with only
//! its model's kernels").

use icefold::engine::{Kernel, KernelSet, Kernels};
use icefold::{LoadError, Model};
use icefold_tests::{manifest, Fixture};
use icefold_tool::lower::blob::AlignedBytes;
use icefold_tool::pipeline::{self, ConvertOptions, Int8Options, INT16_ACTIVATIONS_DEFAULT};
use icefold_tool::quantize::calibrate::Method;

/// ResNet-8, default conversion: the int16 model input (transposed to `[H, W, C]` as the engine
/// writes it, `ModelInfo::input_transpose`: no transpose kernel), the first
/// residual stage 16×8 (int16 in, int8 out into the addition, int8 in, int16 out), the rest
/// int8 convolutions and additions, the int16 output head; no depthwise convolution. Its fast
/// convolution loops: receptive fields for the first layer (3 int16 channels), the
/// four-channel window loops for the others, the pointwise loops (int8 out) for the strided
/// 1x1 shortcuts.
struct ResNet8;
impl Kernels for ResNet8 {
    const SET: KernelSet = KernelSet::EMPTY
        .with(Kernel::Conv2dI16ToI8)
        .with(Kernel::Conv2dI8ToI16)
        .with(Kernel::Conv2dI8)
        .with(Kernel::AddI8)
        .with(Kernel::DenseI8Wide)
        .with(Kernel::InPlace)
        .with(Kernel::InputTranspose)
        .with(Kernel::ConvColumnsI16)
        .with(Kernel::ConvQuadsI8)
        .with(Kernel::ConvQuadsI16)
        .with(Kernel::ConvPointwiseToI8);
}

/// DS-CNN: 16×8 throughout (int16 in and out), regular and depthwise, the last (pointwise) one
/// int8 out into the output head; layers written over their input (`Kernel::InPlace`, as
/// ResNet-8 and MobileNetV1). Its loops: the first layer's receptive fields with the whole
/// layer's buffers (64 channels of 10x4 taps), the pointwise loops, the depthwise pixel loop.
struct DsCnn;
impl Kernels for DsCnn {
    const SET: KernelSet = KernelSet::EMPTY
        .with(Kernel::Conv2dI16ToI16)
        .with(Kernel::DepthwiseI16ToI16)
        .with(Kernel::Conv2dI16ToI8)
        .with(Kernel::DenseI8Wide)
        .with(Kernel::InPlace)
        .with(Kernel::ConvColumnsWhole)
        .with(Kernel::ConvPointwiseToI8)
        .with(Kernel::ConvPointwiseToI16)
        .with(Kernel::DepthwisePixel);
}

/// MobileNetV1-0.25: as DS-CNN (its int16 `[C, H, W]` input transposed as it is written), its
/// first layer's receptive fields with the small buffers.
struct MobileNet;
impl Kernels for MobileNet {
    const SET: KernelSet = KernelSet::EMPTY
        .with(Kernel::Conv2dI16ToI16)
        .with(Kernel::DepthwiseI16ToI16)
        .with(Kernel::Conv2dI16ToI8)
        .with(Kernel::DenseI8Wide)
        .with(Kernel::InPlace)
        .with(Kernel::InputTranspose)
        .with(Kernel::ConvColumnsI16)
        .with(Kernel::ConvPointwiseToI8)
        .with(Kernel::ConvPointwiseToI16)
        .with(Kernel::DepthwisePixel);
}

/// The autoencoder: dense layers (their weights in row pairs, the default conversion's), the
/// last with the int16 output head.
struct Autoencoder;
impl Kernels for Autoencoder {
    const SET: KernelSet = KernelSet::EMPTY
        .with(Kernel::DenseI8Pairs)
        .with(Kernel::DenseI8WidePairs);
}

/// ResNet-8's set without the output head's kernel.
struct ResNet8WithoutHead;
impl Kernels for ResNet8WithoutHead {
    const SET: KernelSet = KernelSet::EMPTY
        .with(Kernel::Conv2dI16ToI8)
        .with(Kernel::Conv2dI8ToI16)
        .with(Kernel::Conv2dI8)
        .with(Kernel::AddI8)
        .with(Kernel::InPlace)
        .with(Kernel::InputTranspose);
}

fn fixture(name: &str) -> Fixture {
    manifest()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("fixture {name} in tests/fixtures/manifest.json"))
}

/// The default int8 conversion of a fixture.
fn convert(f: &Fixture) -> AlignedBytes {
    let calib = f.array("calib").unwrap();
    let opts = Int8Options {
        calib: &calib,
        method: Method::DEFAULT,
        progress: false,
        bias_correction: true,
        wide_output: true,
        int16_activations: INT16_ACTIVATIONS_DEFAULT,
    };
    let options = ConvertOptions {
        int8: Some(opts),
        ..Default::default()
    };
    let converted = pipeline::convert(&f.model(), &options).unwrap();
    AlignedBytes::new(&converted.blob)
}

/// Every test sample run by `model`: the outputs, in order.
fn outputs<K: Kernels>(model: &Model<'_, K>, f: &Fixture) -> Vec<f32> {
    let x = f.array("input").unwrap();
    let mut arena = vec![0u32; model.arena_bytes().div_ceil(4)];
    let mut all = Vec::new();
    for i in 0..x.samples() {
        let mut y = vec![0.0f32; model.output().len()];
        model
            .run_f32(bytemuck::cast_slice_mut(&mut arena), x.sample(i), &mut y)
            .unwrap();
        all.extend(y);
    }
    all
}

/// The set of the fixture's blob is `K::SET`, and the model runs on it as on every kernel.
fn check<K: Kernels>(name: &str) -> AlignedBytes {
    let f = fixture(name);
    let blob = convert(&f);
    let every = Model::new_checked(blob.as_slice()).unwrap();
    assert_eq!(
        KernelSet::of(&every),
        K::SET,
        "{name}: {:?}",
        KernelSet::of(&every).iter().collect::<Vec<_>>()
    );
    let only = Model::<K>::new_checked_with_kernels(blob.as_slice()).unwrap();
    let (want, got) = (outputs(&every, &f), outputs(&only, &f));
    assert_eq!(
        bytemuck::cast_slice::<f32, u8>(&got),
        bytemuck::cast_slice::<f32, u8>(&want),
        "{name}: outputs on its own kernels"
    );
    blob
}

#[test]
fn each_mlperf_model_runs_on_exactly_its_kernels() {
    let resnet8 = check::<ResNet8>("resnet8");
    check::<DsCnn>("dscnn");
    check::<MobileNet>("mobilenet_v1_025");
    check::<Autoencoder>("ad_autoencoder");

    // Without the output head's kernel, the last layer is refused by name.
    let refused = Model::<ResNet8WithoutHead>::new_checked_with_kernels(resnet8.as_slice());
    let model = Model::new_checked(resnet8.as_slice()).unwrap();
    let last = model.info().layer_count - 1;
    // Neither of the head's kernels (int8 or widened weights) is linked: its record is not
    // even decoded, and the error names the operation.
    let err = refused.unwrap_err();
    assert_eq!(
        err,
        LoadError::OperationNotLinked {
            layer: last,
            operation: "dense_i8_i16"
        }
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("layer {last}")) && message.contains("dense_i8_i16"),
        "{message}"
    );
}

/// The three dense weight layouts on the autoencoder, default and all-int8 conversions: int8
/// rows (`--dense-weights int8-rows`), int8 row pairs (`int8`, the default: every layer of the
/// autoencoder takes it, the same bytes of weights) and int16 quads (`int16`: exactly twice the
/// bytes). The outputs of every test sample are those of the int8 rows, byte for byte (the same
/// int8 values, so the same accumulators); each layout is a kernel of its own.
#[test]
fn ad_autoencoder_dense_weight_layouts_compute_the_int8_rows_bytes() {
    use icefold::format::{DenseLayout, Op};
    use icefold_tool::quantize::DenseWeights;
    let f = fixture("ad_autoencoder");
    let calib = f.array("calib").unwrap();
    for all_int8 in [false, true] {
        let blob = |dense_weights| {
            let opts = Int8Options {
                calib: &calib,
                method: Method::DEFAULT,
                progress: false,
                bias_correction: true,
                wide_output: !all_int8,
                int16_activations: if all_int8 {
                    0
                } else {
                    INT16_ACTIVATIONS_DEFAULT
                },
            };
            let options = ConvertOptions {
                int8: Some(opts),
                dense_weights,
                ..Default::default()
            };
            AlignedBytes::new(&pipeline::convert(&f.model(), &options).unwrap().blob)
        };
        let (rows, pairs, quads) = (
            blob(DenseWeights::Int8Rows),
            blob(DenseWeights::default()),
            blob(DenseWeights::Int16),
        );
        let (rows, pairs, quads) = (
            Model::new_checked(rows.as_slice()).unwrap(),
            Model::new_checked(pairs.as_slice()).unwrap(),
            Model::new_checked(quads.as_slice()).unwrap(),
        );
        let weights = |m: &Model<'_>, want: DenseLayout| {
            m.layers()
                .map(|l| match l.op {
                    Op::DenseI8(d) => (d.layout, d.weights.len),
                    Op::DenseI8Wide(d) => (d.layout, d.weights.len),
                    other => panic!("not a dense layer: {other:?}"),
                })
                .inspect(|(layout, _)| assert_eq!(*layout, want))
                .map(|(_, len)| len)
                .collect::<Vec<_>>()
        };
        let (w8, w8_pairs, w16) = (
            weights(&rows, DenseLayout::RowsI8),
            weights(&pairs, DenseLayout::PairsI8),
            weights(&quads, DenseLayout::QuadsI16),
        );
        assert_eq!(w8.len(), 10);
        assert_eq!(w8_pairs, w8);
        assert_eq!(w16, w8.iter().map(|n| 2 * n).collect::<Vec<_>>());
        // Each layout is a kernel of its own: a firmware for the row pairs (`Autoencoder`) does
        // not link the other layouts' loops, and refuses such a blob by the kernel it lacks.
        for (m, layout_kernels) in [
            (&quads, [Kernel::DenseI8Quads, Kernel::DenseI8WideQuads]),
            (&pairs, [Kernel::DenseI8Pairs, Kernel::DenseI8WidePairs]),
        ] {
            let set = KernelSet::of(m);
            assert!(layout_kernels.iter().any(|k| set.contains(*k)));
            assert!(!set.contains(Kernel::DenseI8) && !set.contains(Kernel::DenseI8Wide));
        }
        for (dense_weights, lacking) in [
            (
                DenseWeights::Int16,
                [Kernel::DenseI8Quads, Kernel::DenseI8WideQuads],
            ),
            (
                DenseWeights::Int8Rows,
                [Kernel::DenseI8, Kernel::DenseI8Wide],
            ),
        ] {
            let bytes = blob(dense_weights);
            let err = Model::<Autoencoder>::new_checked_with_kernels(bytes.as_slice())
                .map(|_| ())
                .unwrap_err();
            assert!(
                matches!(err, LoadError::KernelNotLinked { kernel, .. } if lacking.contains(&kernel)),
                "{err:?}"
            );
        }
        let want = outputs(&rows, &f);
        for (name, m) in [("pairs", &pairs), ("quads", &quads)] {
            let got = outputs(m, &f);
            assert_eq!(
                bytemuck::cast_slice::<f32, u8>(&got),
                bytemuck::cast_slice::<f32, u8>(&want),
                "{name}, all int8: {all_int8}"
            );
        }
    }
}

/// The command line round-trips the layout: `convert --dense-weights int16` writes it,
/// `inspect` names it per layer, `int8` (the default) writes none; without `--quantize` the
/// flag is refused.
#[test]
fn convert_dense_weights_flag_round_trips_through_inspect() {
    let Some(bin) = icefold_tests::cli_binary() else {
        eprintln!("note: the icefold binary is not built next to this test; skipped");
        return;
    };
    let f = fixture("matmul_dense");
    let dir = std::env::temp_dir().join(format!("icefold-dense16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let mut sizes = Vec::new();
    for layout in ["int8-rows", "int16", "int8"] {
        let blob = dir.join(format!("{layout}.icefold"));
        let (model, calib) = (f.model(), f.dir().join("calib.npy"));
        let (ok, _, err) = run(&[
            "convert".as_ref(),
            model.as_os_str(),
            "-o".as_ref(),
            blob.as_os_str(),
            "--quantize".as_ref(),
            "int8".as_ref(),
            "--calib".as_ref(),
            calib.as_os_str(),
            "--dense-weights".as_ref(),
            layout.as_ref(),
        ]);
        assert!(ok, "{err}");
        let (ok, text, err) = run(&["inspect".as_ref(), blob.as_os_str()]);
        assert!(ok, "{err}");
        assert!(text.contains("format version 12"), "{text}");
        assert_eq!(
            text.contains(", int16 weights"),
            layout == "int16",
            "{text}"
        );
        assert_eq!(
            text.contains(", weights in row pairs"),
            layout == "int8",
            "{text}"
        );
        sizes.push(std::fs::metadata(&blob).unwrap().len());
    }
    assert!(sizes[1] > sizes[0], "{sizes:?}");
    assert!(sizes[2] <= sizes[0] + 64, "{sizes:?}");
    let model = f.model();
    let out = dir.join("f32.icefold");
    let (ok, _, err) = run(&[
        "convert".as_ref(),
        model.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--dense-weights".as_ref(),
        "int16".as_ref(),
    ]);
    assert!(!ok && err.contains("--quantize"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
