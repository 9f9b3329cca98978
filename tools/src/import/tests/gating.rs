//! Activations beyond ReLU (HardSigmoid, HardSwish, Tanh, PRelu, SiLU) and products of two
//! activations, end to end: import, f32 parity of the runtime against the f64 interpreter, and
//! the int8 error (with and without 16x8 activations).

use super::*;
use crate::io::Array;
use crate::pipeline::{convert, ConvertOptions, Converted, Int8Options};

/// `n` deterministic samples of `shape` with values in about [-3, 3] (`seed` picks the stream).
fn samples(n: usize, shape: &[usize], seed: u64) -> Array {
    let len: usize = shape.iter().product();
    let mut rng = crate::ir::eval::testkit::Rng::new(seed);
    let mut full = vec![n];
    full.extend_from_slice(shape);
    Array {
        shape: full,
        data: rng.vec(n * len, -3.0, 3.0),
    }
}

/// The f64 interpreter's outputs on every sample of `x`.
fn reference(g: &ImportedGraph, x: &Array) -> Array {
    let mut data = Vec::new();
    for i in 0..x.samples() {
        data.extend(crate::ir::eval::run(g, x.sample(i)).unwrap());
    }
    let mut shape = vec![x.samples()];
    shape.extend_from_slice(&g.values[g.output].shape);
    Array { shape, data }
}

fn run(c: &Converted, x: &Array) -> Array {
    let blob = c.aligned();
    let model = crate::host::load(blob.as_slice()).unwrap();
    crate::host::run_f32(&model, x).unwrap()
}

/// The runtime op names of `c` without the layout changes at the model boundary (ONNX's
/// `[C, H, W]` to the runtime's `[H, W, C]` and back).
fn ops(c: &Converted) -> Vec<&'static str> {
    let names = c.lowered.layers.iter().map(|l| l.op.name());
    names.filter(|n| *n != "transpose").collect()
}

/// The f32 conversion of `g`, checked against the interpreter on held-out inputs (the parity
/// bar of the committed fixtures, relative L2 <= 5e-5), and its runtime op names.
fn f32_parity(g: &ImportedGraph) -> Vec<&'static str> {
    let x = samples(16, &g.values[g.input].shape, 7);
    let c = convert(g.clone(), &ConvertOptions::default()).unwrap();
    let d = crate::host::diff(&run(&c, &x), &reference(g, &x)).unwrap();
    assert!(d.rel_l2 <= 5e-5, "f32 relative L2 {} above 5e-5", d.rel_l2);
    ops(&c)
}

/// The int8 conversion of `g` (calibrated on 64 samples, int8 output, the first `int16`
/// convolutions 16x8), its relative L2 error against the interpreter on 32 other samples, and
/// its runtime op names.
fn int8_error(g: &ImportedGraph, int16: usize) -> (f64, Vec<&'static str>) {
    let shape = g.values[g.input].shape.clone();
    let calib = samples(64, &shape, 11);
    let x = samples(32, &shape, 13);
    let opts = Int8Options {
        calib: &calib,
        method: crate::quantize::calibrate::Method::DEFAULT,
        progress: false,
        bias_correction: false,
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
    .unwrap();
    let d = crate::host::diff(&run(&c, &x), &reference(g, &x)).unwrap();
    (d.rel_l2, ops(&c))
}

/// Conv 3x3 (2 -> 4 channels, pad 1) over [2, 6, 6], then the nodes `act` (reading "c",
/// writing "a"), then Conv 1x1 (4 -> 3) to the output.
fn conv_act_conv(act: Vec<ONode<'static>>, inits: Vec<TensorProto<'static>>) -> Builder {
    let mut rng = crate::ir::eval::testkit::Rng::new(3);
    let mut b = Builder::new(17, &[-1, 2, 6, 6])
        .init(f32t("w1", &[4, 2, 3, 3], rng.vec(72, -0.5, 0.5)))
        .init(f32t("b1", &[4], rng.vec(4, -0.3, 0.3)))
        .init(f32t("w2", &[3, 4, 1, 1], rng.vec(12, -1.0, 1.0)))
        .init(f32t("b2", &[3], rng.vec(3, -0.1, 0.1)))
        .node(node(
            "Conv",
            "conv1",
            &["x", "w1", "b1"],
            &["c"],
            vec![attr_is("pads", &[1, 1, 1, 1])],
        ));
    for n in act {
        b = b.node(n);
    }
    b.inits.extend(inits);
    b.node(node("Conv", "conv2", &["a", "w2", "b2"], &["y"], vec![]))
}

#[test]
fn unary_activations_fuse_in_f32_and_become_tables_in_int8() {
    let hard_sigmoid = |alpha: f32, beta: f32| {
        node(
            "HardSigmoid",
            "hs",
            &["c"],
            &["a"],
            vec![attr_f("alpha", alpha), attr_f("beta", beta)],
        )
    };
    let cases: Vec<(
        &str,
        Vec<ONode<'static>>,
        Vec<TensorProto<'static>>,
        Activation,
    )> = vec![
        (
            "HardSigmoid",
            vec![hard_sigmoid(0.25, 0.4)],
            vec![],
            Activation::HardSigmoid {
                alpha: 0.25,
                beta: 0.4,
            },
        ),
        (
            "HardSwish",
            vec![node("HardSwish", "hw", &["c"], &["a"], vec![])],
            vec![],
            Activation::HardSwish,
        ),
        (
            "Tanh",
            vec![node("Tanh", "t", &["c"], &["a"], vec![])],
            vec![],
            Activation::Tanh,
        ),
        (
            "PRelu",
            vec![node("PRelu", "p", &["c", "slope"], &["a"], vec![])],
            vec![f32t("slope", &[1], vec![0.25])],
            Activation::LeakyRelu { alpha: 0.25 },
        ),
        (
            "SiLU",
            vec![
                node("Sigmoid", "sig", &["c"], &["s"], vec![]),
                node("Mul", "mul", &["c", "s"], &["a"], vec![]),
            ],
            vec![],
            Activation::Silu,
        ),
        (
            "HardSwish as Mul",
            vec![
                hard_sigmoid(1.0 / 6.0, 0.5),
                // The gate first: the pattern is recognised in either operand order.
                node("Mul", "mul", &["a0", "c"], &["a"], vec![]),
            ]
            .into_iter()
            .map(|mut n| {
                if n.name == "hs" {
                    n.output = vec!["a0"];
                }
                n
            })
            .collect(),
            vec![],
            Activation::HardSwish,
        ),
    ];
    for (what, act, inits, want) in cases {
        let g = conv_act_conv(act, inits).ok();
        assert_eq!(g.nodes.len(), 3, "{what}: {:?}", g.nodes);
        assert_eq!(frozen(&g, 1), &FrozenOp::Activation(want), "{what}");
        assert_eq!(
            f32_parity(&g),
            vec!["conv2d", "conv2d"],
            "{what}: f32 fuses the activation into the first convolution"
        );
        // A table between two calibrated tensors; the 16x8 input convolution writes the int8
        // tensor the table reads.
        for int16 in [0, usize::MAX] {
            let (err, ops) = int8_error(&g, int16);
            let first = if int16 == 0 {
                "conv2d_i8"
            } else {
                "conv2d_i16"
            };
            assert_eq!(ops, vec![first, "lookup_i8", "conv2d_i8"], "{what}");
            // Three int8 roundings of about 1/256 of each tensor's range, plus the table's.
            assert!(err < 0.03, "{what} (int16 {int16}): int8 relative L2 {err}");
        }
    }
}

#[test]
fn gating_patterns_that_are_not_self_gating_are_not_fused() {
    // The sigmoid's output has a second reader: it must stay a node of its own.
    let g = Builder::new(17, &[-1, 4])
        .node(node("Sigmoid", "sig", &["x"], &["s"], vec![]))
        .node(node("Mul", "mul", &["x", "s"], &["m"], vec![]))
        .node(node("Add", "add", &["m", "s"], &["y"], vec![]))
        .import();
    // (Until products of two activations are supported this is a refusal naming the Mul.)
    if let Ok(g) = g {
        assert!(g
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::Frozen(FrozenOp::Activation(Activation::Sigmoid)))));
    }
    // A hard sigmoid with other constants than 1/6, 1/2 is not a hard swish.
    let g = Builder::new(17, &[-1, 4])
        .node(node(
            "HardSigmoid",
            "hs",
            &["x"],
            &["s"],
            vec![attr_f("alpha", 0.2)],
        ))
        .node(node("Mul", "mul", &["x", "s"], &["y"], vec![]))
        .import();
    if let Ok(g) = g {
        assert!(!g.nodes.iter().any(|n| matches!(
            n.op,
            Op::Frozen(FrozenOp::Activation(Activation::HardSwish))
        )));
    }
}

#[test]
fn prelu_with_a_slope_per_channel_is_refused_with_what_to_do() {
    let err = conv_act_conv(
        vec![node("PRelu", "prelu7", &["c", "slope"], &["a"], vec![])],
        vec![f32t("slope", &[4, 1, 1], vec![0.1, 0.2, 0.3, 0.4])],
    )
    .err();
    assert_contains(
        &err,
        &["prelu7", "PRelu", "per channel", "num_parameters=1"],
    );
}
