//! Keras exports (tf2onnx).

use super::*;

//
// What tf2onnx 1.17 writes for Keras models, one quirk per test; the committed Keras fixtures
// (tests/fixtures/keras, tests/keras.rs) check the same on whole networks.

/// The imported graph and its folded form give the same outputs on `x` (f64-accumulating
/// reference interpreter on both), and the folded graph is returned with the report.
fn fold_and_compare(
    g: &ImportedGraph,
    x: &[f32],
) -> (
    crate::ir::graph::FrozenGraph,
    crate::passes::fold_batchnorm::FoldReport,
) {
    let want = crate::ir::eval::run(g, x).unwrap();
    let (f, report) = crate::passes::fold_batchnorm::fold(g.clone()).unwrap();
    let got = crate::ir::eval::run(&f, x).unwrap();
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "folded {a} vs imported {b}"
        );
    }
    (f, report)
}

fn ramp_input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect()
}

#[test]
fn keras_nhwc_input_transpose_and_asymmetric_same_pads() {
    // Keras 'same' with stride 2 on an even size pads only after: pads [0, 0, 1, 1].
    let g = Builder::new(13, &[-1, 8, 8, 3])
        .node(node(
            "Transpose",
            "model/conv2d/Conv2D__6",
            &["x"],
            &["t"],
            vec![attr_is("perm", &[0, 3, 1, 2])],
        ))
        .init(ramp("w", &[4, 3, 3, 3]))
        .init(ramp("b", &[4]))
        .node(node(
            "Conv",
            "model/conv2d/Conv2D",
            &["t", "w", "b"],
            &["c"],
            vec![
                attr_is("strides", &[2, 2]),
                attr_is("pads", &[0, 0, 1, 1]),
                attr_is("kernel_shape", &[3, 3]),
                attr_is("dilations", &[1, 1]),
            ],
        ))
        .node(node("Relu", "r", &["c"], &["y"], vec![]))
        .ok();
    assert_eq!(g.values[g.input].shape, vec![8, 8, 3], "input stays NHWC");
    assert_eq!(
        frozen(&g, 0),
        &FrozenOp::Transpose {
            perm: vec![2, 0, 1]
        }
    );
    let FrozenOp::Conv(c) = frozen(&g, 1) else {
        panic!()
    };
    assert_eq!(c.pads, [0, 0, 1, 1]);
    assert_eq!(out_shape(&g), vec![4, 4, 4]);
}

#[test]
fn keras_single_channel_input_reshape_and_tf_same_pads() {
    // DS-CNN: a [N, 49, 10, 1] input reaches NCHW by a Reshape (one channel), and the 10x4
    // stride-2 'same' conv pads 4/5 rows and 1/1 columns: pads [4, 1, 5, 1].
    let g = Builder::new(17, &[-1, 49, 10, 1])
        .init(i64t("shape", &[4], vec![-1, 1, 49, 10]))
        .node(node(
            "Reshape",
            "in_reshape",
            &["x", "shape"],
            &["r"],
            vec![],
        ))
        .init(ramp("w", &[2, 1, 10, 4]))
        .node(node(
            "Conv",
            "conv",
            &["r", "w"],
            &["y"],
            vec![attr_is("strides", &[2, 2]), attr_is("pads", &[4, 1, 5, 1])],
        ))
        .ok();
    assert_eq!(frozen(&g, 0), &FrozenOp::Reshape);
    assert_eq!(g.values[g.nodes[0].output].shape, vec![1, 49, 10]);
    let FrozenOp::Conv(c) = frozen(&g, 1) else {
        panic!()
    };
    assert_eq!(c.pads, [4, 1, 5, 1]);
    assert_eq!(out_shape(&g), vec![2, 25, 5]);
}

#[test]
fn keras_depthwise_clip_sharing_constants_squeeze_and_softmax() {
    // DepthwiseConv2D arrives as Conv with group = C; ReLU6 as Clip nodes that all read one
    // pair of min/max initializers; GlobalAveragePooling2D as GlobalAveragePool + Squeeze
    // (axes as an input since opset 13); Dense as MatMul + Add; the activation as Softmax.
    let g = Builder::new(13, &[-1, 4, 5, 5])
        .init(ramp("dw", &[4, 1, 3, 3]))
        .init(f32t("lo", &[], vec![0.0]))
        .init(f32t("hi", &[], vec![6.0]))
        .node(node(
            "Conv",
            "depthwise",
            &["x", "dw"],
            &["a"],
            vec![attr_i("group", 4), attr_is("pads", &[1, 1, 1, 1])],
        ))
        .node(node("Clip", "relu6_1", &["a", "lo", "hi"], &["b"], vec![]))
        .init(ramp("pw", &[4, 4, 1, 1]))
        .node(node("Conv", "pointwise", &["b", "pw"], &["c"], vec![]))
        .node(node("Clip", "relu6_2", &["c", "lo", "hi"], &["d"], vec![]))
        .node(node("GlobalAveragePool", "gap", &["d"], &["e"], vec![]))
        .init(i64t("axes", &[2], vec![2, 3]))
        .node(node("Squeeze", "squeeze", &["e", "axes"], &["f"], vec![]))
        .init(ramp("wd", &[4, 3]))
        .init(ramp("bd", &[3]))
        .node(node("MatMul", "dense", &["f", "wd"], &["g"], vec![]))
        .node(node("Add", "dense_bias", &["g", "bd"], &["h"], vec![]))
        .node(node("Softmax", "softmax", &["h"], &["y"], vec![]))
        .ok();
    let FrozenOp::Conv(dw) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(dw.group, 4);
    let relu6 = FrozenOp::Activation(Activation::Clip { lo: 0.0, hi: 6.0 });
    assert_eq!(frozen(&g, 1), &relu6);
    assert_eq!(frozen(&g, 3), &relu6);
    assert_eq!(g.values[g.nodes[5].output].shape, vec![4], "squeezed");
    let FrozenOp::Dense(d) = frozen(&g, 6) else {
        panic!("{:?}", g.nodes[6])
    };
    assert_eq!(d.bias.len(), 3, "the Add became the bias");
    assert_eq!(frozen(&g, 7), &FrozenOp::Softmax);
    assert_eq!(g.nodes.len(), 8);
    let y = crate::ir::eval::run(&g, &ramp_input(100)).unwrap();
    assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn keras_opset_list_naming_ai_onnx_ml() {
    let mut m = Builder::new(17, &[-1, 3])
        .node(node("Relu", "r", &["x"], &["y"], vec![]))
        .model();
    m.opset_import = vec![
        OperatorSetId {
            domain: "",
            version: 17,
        },
        OperatorSetId {
            domain: "ai.onnx.ml",
            version: 2,
        },
    ];
    let g = import(&onnx_rs::encode(&m), None).unwrap();
    assert_eq!(g.opset, 17);
}

/// Conv -> (tf2onnx's NHWC<->NCHW Reshape at 1x1) -> BatchNormalization(eps 1e-3) -> Clip.
fn conv_reshape_bn(c: i64) -> Builder {
    bn_params(Builder::new(13, &[-1, c, 1, 1]), c)
        .init(ramp("w", &[c, c, 1, 1]))
        .init(i64t("s", &[4], vec![-1, c, 1, 1]))
        .init(f32t("lo", &[], vec![0.0]))
        .init(f32t("hi", &[], vec![6.0]))
        .node(node("Conv", "conv2d/Conv2D", &["x", "w"], &["a"], vec![]))
        .node(node(
            "Reshape",
            "bn/FusedBatchNormV3__861",
            &["a", "s"],
            &["b"],
            vec![],
        ))
        .node(node(
            "BatchNormalization",
            "bn/FusedBatchNormV3",
            &["b", "g", "be", "m", "v"],
            &["c"],
            vec![attr_f("epsilon", 1e-3)],
        ))
        .node(node("Clip", "relu6", &["c", "lo", "hi"], &["y"], vec![]))
}

#[test]
fn keras_no_op_reshape_between_conv_and_bn_is_no_node_and_bn_folds() {
    // At 1x1 spatial size tf2onnx's transpose optimizer writes its NHWC<->NCHW Transposes as
    // Reshape [-1, C, 1, 1]: the same shape, so no node, and the BN folds into the Conv.
    let g = conv_reshape_bn(3).ok();
    let kinds: Vec<&str> = g.nodes.iter().map(|n| n.origin.op_type.as_str()).collect();
    assert_eq!(kinds, vec!["Conv", "BatchNormalization", "Clip"]);
    let Op::BatchNorm(bn) = &g.nodes[1].op else {
        panic!()
    };
    assert_eq!(bn.epsilon, 1e-3, "Keras epsilon");
    let (f, report) = fold_and_compare(&g, &[0.5, -1.0, 2.0]);
    assert_eq!(report.folds.len(), 1);
    assert!(
        matches!(
            &report.folds[0].how,
            crate::passes::fold_batchnorm::FoldKind::IntoPreceding { layer } if layer.name == "conv2d/Conv2D"
        ),
        "{report}"
    );
    assert_eq!(f.nodes.len(), 2, "Conv and Clip");
    // Epsilon 1e-3 is used, not PyTorch's 1e-5: channel 0 has var 0.1, gamma 0.1.
    let FrozenOp::Conv(c) = &f.nodes[0].op else {
        panic!()
    };
    let s = 0.1f64 / (0.1f64 + 1e-3).sqrt();
    assert!((c.weight.data[0] as f64 - 0.1 * s).abs() < 1e-7);
}

#[test]
fn no_op_reshape_of_a_matmul_read_twice_keeps_the_bias_out_of_the_dense() {
    // MatMul -> Identity, whose output feeds an Add of a constant and the residual Add: the
    // constant may not become the Dense bias, since the residual reads the value without it.
    let g = Builder::new(13, &[-1, 3])
        .init(ramp("w", &[3, 3]))
        .init(ramp("b", &[3]))
        .node(node("MatMul", "mm", &["x", "w"], &["a"], vec![]))
        .node(node("Identity", "id", &["a"], &["i"], vec![]))
        .node(node("Add", "bias", &["i", "b"], &["c"], vec![]))
        .node(node("Add", "res", &["c", "i"], &["y"], vec![]))
        .ok();
    let FrozenOp::Dense(d) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(d.bias, vec![0.0; 3]);
    let x = [1.0f32, -2.0, 0.5];
    let y = crate::ir::eval::run(&g, &x).unwrap();
    // y = 2 * (W x) + b, with W x computed from the [in, out] layout.
    let w: Vec<f32> = (0..9).map(|i| 0.1 * (i + 1) as f32).collect();
    for o in 0..3 {
        let wx: f32 = (0..3).map(|k| x[k] * w[k * 3 + o]).sum();
        assert!((y[o] - (2.0 * wx + 0.1 * (o + 1) as f32)).abs() < 1e-5);
    }
}

#[test]
fn keras_dense_bn_as_gemm_mul_add_folds_into_the_gemm() {
    // Keras BatchNormalization after Dense is no BN node: TensorFlow's constant folding leaves
    // `x * scale + offset`, so tf2onnx writes Gemm -> Mul -> Add with per-channel constants.
    // They fold into the Gemm exactly like a BN would; nothing looks at node names.
    let g = Builder::new(13, &[-1, 4])
        .init(ramp("w", &[4, 3]))
        .init(ramp("b", &[3]))
        .init(f32t("scale", &[3], vec![0.5, -1.5, 2.0]))
        .init(f32t("offset", &[3], vec![0.25, 0.0, -1.0]))
        .node(node(
            "Gemm",
            "dense/MatMul",
            &["x", "w", "b"],
            &["a"],
            vec![],
        ))
        .node(node(
            "Mul",
            "bn/batchnorm/mul_1",
            &["a", "scale"],
            &["m"],
            vec![],
        ))
        .node(node(
            "Add",
            "bn/batchnorm/add_1",
            &["m", "offset"],
            &["n"],
            vec![],
        ))
        .node(node("Relu", "relu", &["n"], &["y"], vec![]))
        .ok();
    let kinds: Vec<&str> = g.nodes.iter().map(|n| n.origin.op_type.as_str()).collect();
    assert_eq!(kinds, vec!["Gemm", "Mul", "Add", "Relu"]);
    let (f, report) = fold_and_compare(&g, &[1.0, -0.5, 2.0, 0.25]);
    assert_eq!(report.folds.len(), 2, "{report}");
    assert_eq!(f.nodes.len(), 2, "Dense and Relu: {:?}", f.nodes);
    assert!(matches!(f.nodes[0].op, FrozenOp::Dense(_)));
}
