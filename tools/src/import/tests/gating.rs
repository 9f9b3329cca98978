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
    let g = g.unwrap();
    assert!(g
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Frozen(FrozenOp::Activation(Activation::Sigmoid)))));
    assert!(g.nodes.iter().any(|n| n.op == Op::Frozen(FrozenOp::Mul)));
    f32_parity(&g);
    // Nor when an Identity gives the sigmoid's value a second name that is read elsewhere.
    let g = Builder::new(17, &[-1, 4])
        .node(node("Sigmoid", "sig", &["x"], &["s"], vec![]))
        .node(node("Identity", "alias", &["s"], &["s2"], vec![]))
        .node(node("Mul", "mul", &["x", "s2"], &["m"], vec![]))
        .node(node("Add", "add", &["m", "s2"], &["y"], vec![]))
        .ok();
    assert!(g
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Frozen(FrozenOp::Activation(Activation::Sigmoid)))));
    f32_parity(&g);
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
fn prelu_with_a_slope_per_channel_runs_in_f32_and_int8() {
    let prelu = || node("PRelu", "prelu7", &["c", "slope"], &["a"], vec![]);
    // Slopes of both signs and zero, [C, 1, 1] and with a leading batch axis.
    for dims in [&[4, 1, 1][..], &[1, 4, 1, 1]] {
        let slope = f32t("slope", dims, vec![0.1, -0.3, 0.0, 0.6]);
        let g = conv_act_conv(vec![prelu()], vec![slope]).ok();
        assert_eq!(
            frozen(&g, 1),
            &FrozenOp::PRelu {
                slope: vec![0.1, -0.3, 0.0, 0.6]
            }
        );
        assert_eq!(f32_parity(&g), vec!["conv2d", "prelu", "conv2d"]);
        for int16 in [0, usize::MAX] {
            let (err, ops) = int8_error(&g, int16);
            assert_eq!(ops[1..], ["prelu_i8", "conv2d_i8"], "{ops:?}");
            assert!(err < 0.03, "int16 {int16}: int8 relative L2 {err}");
        }
    }
    // A slope along another axis than the channels is refused with what is supported.
    let err = conv_act_conv(
        vec![prelu()],
        vec![f32t("slope", &[6], vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6])],
    )
    .err();
    assert_contains(
        &err,
        &[
            "prelu7",
            "PRelu",
            "[6]",
            "one per channel",
            "num_parameters=C",
        ],
    );
}

/// A squeeze-excitation block over [2, 6, 6]: conv 3x3 (2 -> 4) + ReLU writes "c"; global average
/// pooling, conv 1x1 (4 -> 2) + ReLU, conv 1x1 (2 -> 4) and the `gate` node (reading "z",
/// writing "s") make one value per channel; `Mul` of "c" and "s" (gate first when
/// `gate_first`), then the nodes `after` (reading "m", writing "a") and conv 1x1 (4 -> 3).
fn squeeze_excitation(
    gate: ONode<'static>,
    gate_first: bool,
    after: Vec<ONode<'static>>,
) -> Builder {
    let mut rng = crate::ir::eval::testkit::Rng::new(5);
    let mul_inputs: &[&'static str] = if gate_first { &["s", "c"] } else { &["c", "s"] };
    let mut b = Builder::new(17, &[-1, 2, 6, 6])
        .init(f32t("w1", &[4, 2, 3, 3], rng.vec(72, -0.5, 0.5)))
        .init(f32t("b1", &[4], rng.vec(4, -0.3, 0.3)))
        .init(f32t("wr", &[2, 4, 1, 1], rng.vec(8, -1.0, 1.0)))
        .init(f32t("br", &[2], rng.vec(2, -0.2, 0.2)))
        .init(f32t("we", &[4, 2, 1, 1], rng.vec(8, -1.5, 1.5)))
        .init(f32t("be", &[4], rng.vec(4, -0.5, 0.5)))
        .init(f32t("w2", &[3, 4, 1, 1], rng.vec(12, -1.0, 1.0)))
        .init(f32t("b2", &[3], rng.vec(3, -0.1, 0.1)))
        .node(node(
            "Conv",
            "conv1",
            &["x", "w1", "b1"],
            &["c0"],
            vec![attr_is("pads", &[1, 1, 1, 1])],
        ))
        .node(node("Relu", "relu1", &["c0"], &["c"], vec![]))
        .node(node("GlobalAveragePool", "se_pool", &["c"], &["p"], vec![]))
        .node(node(
            "Conv",
            "se_reduce",
            &["p", "wr", "br"],
            &["r0"],
            vec![],
        ))
        .node(node("Relu", "se_relu", &["r0"], &["r"], vec![]))
        .node(node(
            "Conv",
            "se_expand",
            &["r", "we", "be"],
            &["z"],
            vec![],
        ))
        .node(gate)
        .node(node("Mul", "se_mul", mul_inputs, &["m"], vec![]));
    for n in after {
        b = b.node(n);
    }
    let last = if b.nodes.last().is_some_and(|n| n.name == "se_mul") {
        "m"
    } else {
        "a"
    };
    b.node(node("Conv", "conv2", &[last, "w2", "b2"], &["y"], vec![]))
}

#[test]
fn squeeze_excitation_gating_runs_in_f32_and_int8() {
    let sigmoid = || node("Sigmoid", "se_gate", &["z"], &["s"], vec![]);
    let hard_sigmoid = || {
        node(
            "HardSigmoid",
            "se_gate",
            &["z"],
            &["s"],
            vec![attr_f("alpha", 1.0 / 6.0), attr_f("beta", 0.5)],
        )
    };
    for (what, gate, gate_first) in [
        ("sigmoid gate", sigmoid(), false),
        ("sigmoid gate first", sigmoid(), true),
        ("hard sigmoid gate (MobileNetV3)", hard_sigmoid(), false),
    ] {
        let g = squeeze_excitation(gate, gate_first, vec![]).ok();
        let mul = g
            .nodes
            .iter()
            .find(|n| n.op == Op::Frozen(FrozenOp::Mul))
            .unwrap_or_else(|| panic!("{what}: no Mul node in {:?}", g.nodes));
        // The feature map first, the per-channel gate second, whatever the ONNX order.
        assert_eq!(g.values[mul.inputs[0]].shape, vec![4, 6, 6], "{what}");
        assert_eq!(g.values[mul.inputs[1]].shape, vec![4, 1, 1], "{what}");
        let f32_ops = f32_parity(&g);
        assert!(f32_ops.contains(&"mul"), "{what}: {f32_ops:?}");
        for int16 in [0, usize::MAX] {
            let (err, ops) = int8_error(&g, int16);
            assert!(ops.contains(&"mul_i8"), "{what}: {ops:?}");
            // Four more roundings than the unary case (pool, two 1x1 convs, gate table, product),
            // each about 1/256 of its tensor's range.
            assert!(err < 0.03, "{what} (int16 {int16}): int8 relative L2 {err}");
        }
    }
}

#[test]
fn element_wise_product_of_two_branches_with_a_fused_relu() {
    // Two 1x1 convolutions of the input multiplied element by element, then ReLU.
    let mut rng = crate::ir::eval::testkit::Rng::new(9);
    let g = Builder::new(17, &[-1, 3, 5, 5])
        .init(f32t("wa", &[4, 3, 1, 1], rng.vec(12, -1.0, 1.0)))
        .init(f32t("wb", &[4, 3, 1, 1], rng.vec(12, -1.0, 1.0)))
        .init(f32t("wc", &[2, 4, 1, 1], rng.vec(8, -1.0, 1.0)))
        .node(node("Conv", "branch_a", &["x", "wa"], &["a"], vec![]))
        .node(node("Conv", "branch_b", &["x", "wb"], &["b"], vec![]))
        .node(node("Mul", "product", &["a", "b"], &["m"], vec![]))
        .node(node("Relu", "relu", &["m"], &["r"], vec![]))
        .node(node("Conv", "head", &["r", "wc"], &["y"], vec![]))
        .ok();
    assert_eq!(
        f32_parity(&g),
        vec!["conv2d", "conv2d", "mul", "conv2d"],
        "the ReLU fuses into the product"
    );
    for int16 in [0, usize::MAX] {
        let (err, ops) = int8_error(&g, int16);
        assert!(ops.contains(&"mul_i8"), "{ops:?}");
        assert!(err < 0.03, "int16 {int16}: int8 relative L2 {err}");
    }
}

#[test]
fn products_that_broadcast_other_than_per_channel_are_refused_by_name() {
    let mut rng = crate::ir::eval::testkit::Rng::new(1);
    let err = Builder::new(17, &[-1, 2, 4, 4])
        .init(f32t("w", &[1, 2, 1, 1], rng.vec(2, -1.0, 1.0)))
        .node(node("Conv", "spatial_gate", &["x", "w"], &["s"], vec![]))
        .node(node("Mul", "attend", &["x", "s"], &["y"], vec![]))
        .err();
    assert_contains(
        &err,
        &[
            "attend",
            "Mul",
            "[2, 4, 4]",
            "[1, 4, 4]",
            "one value per channel",
        ],
    );
    // Sub and Div of two activations stay refused, with what to do.
    let err = Builder::new(17, &[-1, 4])
        .node(node("Relu", "r", &["x"], &["a"], vec![]))
        .node(node("Div", "ratio", &["x", "a"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["ratio", "Div", "only Add and Mul"]);
}

#[test]
fn global_max_pool_runs_in_f32_and_int8() {
    // Conv 3x3 + ReLU over [2, 6, 6], global max pooling to [4, 1, 1], flatten, dense 4 -> 3.
    let mut rng = crate::ir::eval::testkit::Rng::new(8);
    let g = Builder::new(17, &[-1, 2, 6, 6])
        .init(f32t("w1", &[4, 2, 3, 3], rng.vec(72, -0.5, 0.5)))
        .init(f32t("b1", &[4], rng.vec(4, -0.3, 0.3)))
        .init(f32t("fc", &[3, 4], rng.vec(12, -1.0, 1.0)))
        .node(node(
            "Conv",
            "conv1",
            &["x", "w1", "b1"],
            &["c"],
            vec![attr_is("pads", &[1, 1, 1, 1])],
        ))
        .node(node("Relu", "relu1", &["c"], &["r"], vec![]))
        .node(node("GlobalMaxPool", "gmp", &["r"], &["p"], vec![]))
        .node(node("Flatten", "flat", &["p"], &["f"], vec![]))
        .node(node(
            "Gemm",
            "head",
            &["f", "fc"],
            &["y"],
            vec![attr_i("transB", 1)],
        ))
        .ok();
    assert_eq!(g.values[g.nodes[2].output].shape, vec![4, 1, 1]);
    assert_eq!(f32_parity(&g), vec!["conv2d", "pool", "dense"]);
    for int16 in [0, usize::MAX] {
        let (err, ops) = int8_error(&g, int16);
        assert!(ops.contains(&"pool_i8"), "{ops:?}");
        // The maximum moves values and adds no rounding: conv, dense and input roundings only.
        assert!(err < 0.03, "int16 {int16}: int8 relative L2 {err}");
    }
}
