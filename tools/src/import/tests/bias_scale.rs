//! Channels whose folded weights are zero or near zero (a BatchNorm that scaled them to almost
//! nothing, pruned channels, RepVGG branches): the int8 conversion widens their weight scale until
//! the bias fits the int32 accumulator, and the whole model still converts and stays accurate.

use super::*;
use crate::io::Array;
use crate::pipeline::{convert, ConvertOptions, Int8Options};

/// Conv 3x3 (3 -> 4, pad 1) + BatchNorm + ReLU over [3, 6, 6], then conv 1x1 (4 -> 2). The
/// BatchNorm's gamma is `gammas` per channel; its beta gives every channel a bias of about 0.1
/// (the RepVGG report: "the bias -0.076 is too large for the int32 accumulator"). Channel 3's
/// convolution weights are all zero.
fn folded_near_zero(gammas: [f32; 4]) -> ImportedGraph {
    let mut rng = crate::ir::eval::testkit::Rng::new(21);
    let mut w = rng.vec(4 * 27, -0.5, 0.5);
    w[3 * 27..].fill(0.0);
    Builder::new(17, &[-1, 3, 6, 6])
        .init(f32t("w1", &[4, 3, 3, 3], w))
        .init(f32t("g", &[4], gammas.to_vec()))
        .init(f32t("be", &[4], vec![0.3, -0.076, 0.12, 0.5]))
        .init(f32t("m", &[4], vec![0.1, -0.2, 0.05, 0.0]))
        .init(f32t("v", &[4], vec![1.0, 0.5, 2.0, 1.0]))
        .init(f32t("w2", &[2, 4, 1, 1], rng.vec(8, -1.0, 1.0)))
        .node(node(
            "Conv",
            "conv1",
            &["x", "w1"],
            &["c"],
            vec![attr_is("pads", &[1, 1, 1, 1])],
        ))
        .node(node(
            "BatchNormalization",
            "bn1",
            &["c", "g", "be", "m", "v"],
            &["n"],
            vec![],
        ))
        .node(node("Relu", "relu1", &["n"], &["r"], vec![]))
        .node(node("Conv", "conv2", &["r", "w2"], &["y"], vec![]))
        .ok()
}

fn samples(n: usize, seed: u64) -> Array {
    let mut rng = crate::ir::eval::testkit::Rng::new(seed);
    Array {
        shape: vec![n, 3, 6, 6],
        data: rng.vec(n * 108, -1.0, 1.0),
    }
}

/// Relative L2 of the int8 conversion of `g` against the f64 interpreter on held-out samples.
fn int8_error(g: &ImportedGraph, int16: usize) -> f64 {
    let calib = samples(64, 1);
    let x = samples(32, 2);
    let opts = Int8Options {
        calib: &calib,
        method: crate::quantize::calibrate::Method::DEFAULT,
        progress: false,
        bias_correction: true,
        wide_output: false,
        int16_activations: int16,
    };
    let c = convert(
        g.clone(),
        &ConvertOptions {
            int8: Some(opts),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("int8 conversion failed: {e:#}"));
    let blob = c.aligned();
    let model = crate::host::load(blob.as_slice()).unwrap();
    let got = crate::host::run_f32(&model, &x).unwrap();
    let mut want = Vec::new();
    for i in 0..x.samples() {
        want.extend(crate::ir::eval::run(g, x.sample(i)).unwrap());
    }
    let want = Array {
        shape: got.shape.clone(),
        data: want,
    };
    crate::host::diff(&got, &want).unwrap().rel_l2
}

#[test]
fn zero_and_near_zero_weight_channels_convert_and_stay_accurate() {
    // Channel 1's weights scaled by 1e-9 (its weight scale would be ~1e-12: the bias in units of
    // s_in * s_w is ~1e11, far over 2^31), channel 3 all zero; the others ordinary.
    for gammas in [[1.0, 1e-9, 0.8, 1.0], [1.0, 1e-20, 0.8, 0.0]] {
        let g = folded_near_zero(gammas);
        for int16 in [0, usize::MAX] {
            let err = int8_error(&g, int16);
            // As the ordinary conv-ReLU-conv models (tests of gating.rs): the widened channels
            // output their bias, which is what the f32 model computes there too.
            assert!(
                err < 0.03,
                "gammas {gammas:?}, int16 {int16}: relative L2 {err}"
            );
        }
    }
}

#[test]
fn a_dense_row_of_near_zero_weights_converts() {
    // A 4 -> 3 dense layer whose second row is 1e-12 times the first, with a bias of 0.2.
    let row = [0.5f32, -0.25, 0.75, 0.1];
    let mut w = Vec::new();
    for k in [1.0, 1e-12, -0.5] {
        w.extend(row.iter().map(|v| v * k));
    }
    // Gemm with transB: weights [out, in].
    let g = Builder::new(13, &[-1, 4])
        .init(f32t("w", &[3, 4], w))
        .init(f32t("b", &[3], vec![0.1, 0.2, -0.3]))
        .node(node(
            "Gemm",
            "fc",
            &["x", "w", "b"],
            &["y"],
            vec![attr_i("transB", 1)],
        ))
        .ok();
    let mut rng = crate::ir::eval::testkit::Rng::new(4);
    let calib = Array {
        shape: vec![64, 4],
        data: rng.vec(256, -0.01, 0.01),
    };
    let opts = Int8Options {
        calib: &calib,
        method: crate::quantize::calibrate::Method::DEFAULT,
        progress: false,
        bias_correction: false,
        wide_output: true,
        int16_activations: 0,
    };
    let c = convert(
        g,
        &ConvertOptions {
            int8: Some(opts),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("int8 conversion failed: {e:#}"));
    let blob = c.aligned();
    let model = crate::host::load(blob.as_slice()).unwrap();
    let y = crate::host::run_f32(
        &model,
        &Array {
            shape: vec![1, 4],
            data: vec![0.005, -0.002, 0.008, 0.0],
        },
    )
    .unwrap();
    // The near-zero row outputs its bias (0.2 + 1e-14); the int16 head's step is ~1e-5 here.
    assert!((y.data[1] - 0.2).abs() < 1e-3, "{:?}", y.data);
}
