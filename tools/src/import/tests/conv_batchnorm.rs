//! Conv and BatchNormalization nodes.

use super::*;

#[test]
fn conv2d_with_bias_strides_and_asymmetric_pads() {
    let g = Builder::new(13, &[-1, 2, 7, 6])
        .init(ramp("w", &[4, 2, 3, 3]))
        .init(ramp("b", &[4]))
        .node(node(
            "Conv",
            "conv1",
            &["x", "w", "b"],
            &["y"],
            vec![attr_is("strides", &[2, 1]), attr_is("pads", &[1, 0, 0, 2])],
        ))
        .ok();
    let FrozenOp::Conv(c) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(c.weight.shape, vec![4, 2, 3, 3]);
    assert_eq!(c.bias.len(), 4);
    assert_eq!(
        (c.strides, c.pads, c.dilations, c.group, c.spatial_rank),
        ([2, 1], [1, 0, 0, 2], [1, 1], 1, 2)
    );
    // h: (7 + 1 - 3) / 2 + 1 = 3; w: (6 + 2 - 3) + 1 = 6
    assert_eq!(out_shape(&g), vec![4, 3, 6]);
    assert_eq!(g.nodes[0].origin.name, "conv1");
    assert_eq!(g.opset, 13);
}

#[test]
fn conv_auto_pad_same_upper_lower_and_valid() {
    for (mode, pads, shape) in [
        ("SAME_UPPER", [0, 0, 1, 1], vec![1, 3, 3]),
        ("SAME_LOWER", [1, 1, 0, 0], vec![1, 3, 3]),
        ("VALID", [0, 0, 0, 0], vec![1, 2, 2]),
    ] {
        let g = Builder::new(13, &[1, 1, 5, 5])
            .init(ramp("w", &[1, 1, 2, 2]))
            .node(node(
                "Conv",
                "c",
                &["x", "w"],
                &["y"],
                vec![attr_s("auto_pad", mode), attr_is("strides", &[2, 2])],
            ))
            .ok();
        let FrozenOp::Conv(c) = frozen(&g, 0) else {
            panic!()
        };
        assert_eq!(c.pads, pads, "{mode}");
        assert_eq!(out_shape(&g), shape, "{mode}");
        assert_eq!(c.bias, vec![0.0], "no bias input means zeros");
    }
}

#[test]
fn conv1d_becomes_kernel_height_one() {
    let g = Builder::new(17, &[-1, 3, 20])
        .init(ramp("w", &[8, 3, 5]))
        .node(node(
            "Conv",
            "",
            &["x", "w"],
            &["y"],
            vec![
                attr_is("strides", &[2]),
                attr_is("pads", &[2, 1]),
                attr_is("dilations", &[1]),
            ],
        ))
        .ok();
    let FrozenOp::Conv(c) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(c.weight.shape, vec![8, 3, 1, 5]);
    assert_eq!(
        (c.strides, c.pads, c.spatial_rank),
        ([1, 2], [0, 2, 0, 1], 1)
    );
    assert_eq!(out_shape(&g), vec![8, 10]); // (20 + 3 - 5) / 2 + 1
    assert_eq!(
        g.nodes[0].origin.name, "Conv_0",
        "unnamed nodes get a name from op type and position"
    );
}

#[test]
fn depthwise_conv_and_group_checks() {
    let g = Builder::new(13, &[-1, 4, 5, 5])
        .init(ramp("w", &[4, 1, 3, 3]))
        .node(node(
            "Conv",
            "dw",
            &["x", "w"],
            &["y"],
            vec![attr_i("group", 4), attr_is("kernel_shape", &[3, 3])],
        ))
        .ok();
    let FrozenOp::Conv(c) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(c.group, 4);
    assert_eq!(out_shape(&g), vec![4, 3, 3]);

    let bad = |w: &[i64], attrs: Vec<Attribute<'static>>| {
        Builder::new(13, &[-1, 4, 5, 5])
            .init(ramp("w", w))
            .node(node("Conv", "conv3", &["x", "w"], &["y"], attrs))
            .err()
    };
    assert_contains(
        &bad(&[4, 1, 3, 3], vec![attr_i("group", 3)]),
        &["node \"conv3\" (Conv)", "group 3"],
    );
    assert_contains(&bad(&[4, 3, 3, 3], vec![]), &["conv3", "4 channels"]);
    assert_contains(
        &bad(&[4, 4, 3, 3], vec![attr_is("strides", &[0, 1])]),
        &["conv3", "strides"],
    );
    assert_contains(
        &bad(&[4, 4, 3, 3], vec![attr_is("pads", &[-1, 0, 0, 0])]),
        &["conv3", "negative pads"],
    );
    assert_contains(
        &bad(&[4, 4, 3, 3], vec![attr_is("kernel_shape", &[5, 5])]),
        &["conv3", "kernel_shape"],
    );
    assert_contains(
        &bad(&[4, 4, 9, 9], vec![]),
        &["conv3", "larger than the padded input"],
    );
    assert_contains(
        &bad(&[4, 4, 3, 3], vec![attr_i("group", 0)]),
        &["conv3", "group"],
    );
    assert_contains(
        &bad(&[4, 4, 3, 3], vec![attr_is("dilations", &[1 << 40, 1])]),
        &["conv3", "out of range"],
    );
    assert_contains(&bad(&[4, 4, 0, 3], vec![]), &["conv3", "empty"]);
}

#[test]
fn nan_weights_are_refused_with_the_node_name() {
    let err = Builder::new(13, &[-1, 1, 3, 3])
        .init(f32t("w", &[1, 1, 1, 1], vec![f32::NAN]))
        .node(node("Conv", "conv_nan", &["x", "w"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["conv_nan", "NaN"]);
}

// ---- BatchNormalization ----

#[test]
fn batchnorm_inference_form() {
    let g = bn_params(Builder::new(13, &[-1, 3, 4, 4]), 3)
        .node(node(
            "BatchNormalization",
            "bn1",
            &["x", "g", "be", "m", "v"],
            &["y"],
            vec![attr_f("momentum", 0.9)],
        ))
        .ok();
    let Op::BatchNorm(bn) = &g.nodes[0].op else {
        panic!()
    };
    assert_eq!(bn.epsilon, 1e-5);
    assert_eq!(bn.gamma, vec![0.1, 0.2, 0.3]);
    assert_eq!(out_shape(&g), vec![3, 4, 4]);

    let g = bn_params(Builder::new(9 + 6, &[-1, 3]), 3)
        .node(node(
            "BatchNormalization",
            "bn2",
            &["x", "g", "be", "m", "v"],
            &["y"],
            vec![attr_f("epsilon", 1e-3)],
        ))
        .ok();
    let Op::BatchNorm(bn) = &g.nodes[0].op else {
        panic!()
    };
    assert_eq!(bn.epsilon, 1e-3, "BN after a dense layer, Keras epsilon");
}

#[test]
fn batchnorm_bad_statistics() {
    let with_var = |var: Vec<f32>| {
        Builder::new(13, &[-1, 2, 4, 4])
            .init(ramp("g", &[2]))
            .init(ramp("be", &[2]))
            .init(ramp("m", &[2]))
            .init(f32t("v", &[var.len() as i64], var))
            .node(node(
                "BatchNormalization",
                "bn_bad",
                &["x", "g", "be", "m", "v"],
                &["y"],
                vec![],
            ))
            .err()
    };
    assert_contains(&with_var(vec![1.0, -0.5]), &["bn_bad", "negative"]);
    assert_contains(&with_var(vec![1.0, f32::INFINITY]), &["bn_bad", "inf"]);
    assert_contains(
        &with_var(vec![1.0, 1.0, 1.0]),
        &["bn_bad", "running variance has 3 values", "2 channels"],
    );
}

fn training_model(opset: i64) -> Builder {
    let mut b = bn_params(Builder::new(opset, &[-1, 2, 4, 4]), 2);
    let bn = |name: &'static str, x: &'static str, y: &'static str| {
        if opset >= 14 {
            node(
                "BatchNormalization",
                name,
                &[x, "g", "be", "m", "v"],
                &[y, leak(format!("{y}_rm")), leak(format!("{y}_rv"))],
                vec![attr_i("training_mode", 1)],
            )
        } else {
            let outs = [
                y,
                leak(format!("{y}_rm")),
                leak(format!("{y}_rv")),
                leak(format!("{y}_sm")),
                leak(format!("{y}_sv")),
            ];
            node(
                "BatchNormalization",
                name,
                &[x, "g", "be", "m", "v"],
                &outs,
                vec![],
            )
        }
    };
    b = b
        .node(bn("bn_a", "x", "t"))
        .node(node("Relu", "r", &["t"], &["u"], vec![]))
        .node(bn("bn_b", "u", "y"));
    b
}

#[test]
fn training_mode_batchnorm_is_refused_at_opset_13_and_17() {
    for opset in [13, 17] {
        let err = training_model(opset).err();
        assert_contains(
            &err,
            &[
                "node \"bn_a\" (BatchNormalization) at position 0",
                "node \"bn_b\" (BatchNormalization) at position 2",
                "training",
                "model.eval()",
                "TrainingMode.EVAL",
                "PRESERVE",
                "training=False",
            ],
        );
        assert_contains(
            &err,
            &[if opset == 13 {
                "5 outputs"
            } else {
                "training_mode=1"
            }],
        );
    }
}

#[test]
fn training_mode_and_unsupported_ops_are_reported_together() {
    let b = training_model(17).node(node("Sin", "act", &["y"], &["z"], vec![]));
    let b = Builder {
        outputs: vec!["z"],
        ..b
    };
    assert_contains(
        &b.err(),
        &[
            "bn_a",
            "bn_b",
            "node \"act\" (Sin) at position 3",
            "training",
        ],
    );
}
