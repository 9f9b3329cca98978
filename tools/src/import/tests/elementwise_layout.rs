//! Elementwise ops and layout ops (Flatten, Reshape, Transpose, Pad, Softmax).

use super::*;

#[test]
fn add_of_activations_and_affine_constants() {
    let g = Builder::new(13, &[-1, 2, 3, 3])
        .node(node("Relu", "r", &["x"], &["a"], vec![]))
        .node(node("Add", "sum", &["a", "x"], &["y"], vec![]))
        .ok();
    assert_eq!(frozen(&g, 1), &FrozenOp::Add);
    assert_eq!(g.nodes[1].inputs, vec![1, 0]);

    let affine = |op: &'static str, c: TensorProto<'static>, const_first: bool| {
        let ins: [&'static str; 2] = if const_first { ["c", "x"] } else { ["x", "c"] };
        let g = Builder::new(13, &[-1, 2, 3, 3])
            .init(c)
            .node(node(op, "aff", &ins, &["y"], vec![]))
            .ok();
        let FrozenOp::Affine(a) = frozen(&g, 0).clone() else {
            panic!()
        };
        (a.scale, a.shift)
    };
    let per_c = || f32t("c", &[2, 1, 1], vec![2., 4.]);
    assert_eq!(
        affine("Sub", per_c(), false),
        (vec![1., 1.], vec![-2., -4.])
    );
    assert_eq!(affine("Sub", per_c(), true), (vec![-1., -1.], vec![2., 4.]));
    assert_eq!(
        affine("Div", per_c(), false),
        (vec![0.5, 0.25], vec![0., 0.])
    );
    assert_eq!(
        affine("Mul", f32t("c", &[], vec![3.]), true),
        (vec![3.], vec![0.])
    );
    assert_eq!(
        affine("Add", f32t("c", &[1, 2, 1, 1], vec![1., 2.]), false),
        (vec![1., 1.], vec![1., 2.])
    );

    let err = |c: TensorProto<'static>, op: &'static str, ins: &[&'static str]| {
        Builder::new(13, &[-1, 2, 3, 3])
            .init(c)
            .node(node(op, "bc", ins, &["y"], vec![]))
            .err()
    };
    assert_contains(
        &err(f32t("c", &[3], vec![1., 2., 3.]), "Add", &["x", "c"]),
        &["bc", "channel axis"],
    );
    assert_contains(
        &err(f32t("c", &[2, 1, 1], vec![1., 0.]), "Div", &["x", "c"]),
        &["bc", "contains 0"],
    );
    assert_contains(
        &err(f32t("c", &[], vec![1.]), "Div", &["c", "x"]),
        &["bc", "not an affine"],
    );
    assert_contains(
        &err(f32t("c", &[], vec![1.]), "Sub", &["x", "x"]),
        &["bc", "two activations"],
    );
    let err = Builder::new(13, &[-1, 2, 3, 3])
        .node(node(
            "MaxPool",
            "p",
            &["x"],
            &["a"],
            vec![attr_is("kernel_shape", &[2, 2])],
        ))
        .node(node("Add", "mismatch", &["a", "x"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["mismatch", "different shapes"]);
}

#[test]
fn vector_per_channel_constant() {
    let g = Builder::new(13, &[-1, 3])
        .init(f32t("c", &[3], vec![1., 2., 3.]))
        .node(node("Mul", "m", &["x", "c"], &["y"], vec![]))
        .ok();
    let FrozenOp::Affine(a) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(a.scale, vec![1., 2., 3.]);
}

// ---- layout ops ----

#[test]
fn flatten_reshape_squeeze_unsqueeze_identity_dropout() {
    let g = Builder::new(13, &[-1, 2, 3, 4])
        .node(node("Flatten", "f", &["x"], &["a"], vec![]))
        .node(node("Dropout", "d", &["a"], &["b"], vec![]))
        .node(node("Identity", "i", &["b"], &["c"], vec![]))
        .init(i64t("ax", &[2], vec![1, -1]))
        .node(node("Unsqueeze", "u", &["c", "ax"], &["e"], vec![]))
        .node(node("Squeeze", "s", &["e"], &["y"], vec![]))
        .ok();
    let shapes: Vec<Vec<usize>> = g
        .nodes
        .iter()
        .map(|n| g.values[n.output].shape.clone())
        .collect();
    // Dropout and Identity keep the shape: they are aliases, not nodes.
    assert_eq!(shapes, vec![vec![24], vec![1, 24, 1], vec![24]]);
    assert!(g
        .nodes
        .iter()
        .all(|n| n.op == Op::Frozen(FrozenOp::Reshape)));

    let err = Builder::new(13, &[-1, 2, 3])
        .node(node(
            "Flatten",
            "f0",
            &["x"],
            &["y"],
            vec![attr_i("axis", 0)],
        ))
        .err();
    assert_contains(&err, &["f0", "batch"]);
    let err = Builder::new(11, &[-1, 1, 3])
        .node(node(
            "Squeeze",
            "sq",
            &["x"],
            &["y"],
            vec![attr_is("axes", &[0])],
        ))
        .err();
    assert_contains(&err, &["sq", "batch"]);
    let err = Builder::new(11, &[-1, 3])
        .node(node(
            "Unsqueeze",
            "us",
            &["x"],
            &["y"],
            vec![attr_is("axes", &[0])],
        ))
        .err();
    assert_contains(&err, &["us", "batch"]);
}

#[test]
fn reshape_with_folded_shape_arithmetic() {
    // x.view(x.size(0), -1) as the legacy exporter writes it.
    let g = Builder::new(13, &[-1, 4, 2, 2])
        .node(node("Shape", "sh", &["x"], &["s"], vec![]))
        .node(node(
            "Constant",
            "k0",
            &[],
            &["zero"],
            vec![attr_t("value", i64t("", &[], vec![0]))],
        ))
        .node(node(
            "Gather",
            "ga",
            &["s", "zero"],
            &["n"],
            vec![attr_i("axis", 0)],
        ))
        .init(i64t("axes0", &[1], vec![0]))
        .node(node("Unsqueeze", "un", &["n", "axes0"], &["n1"], vec![]))
        .node(node(
            "Constant",
            "k1",
            &[],
            &["m1"],
            vec![attr_is("value_ints", &[-1])],
        ))
        .node(node(
            "Concat",
            "cat",
            &["n1", "m1"],
            &["target"],
            vec![attr_i("axis", 0)],
        ))
        .node(node("Reshape", "rs", &["x", "target"], &["y"], vec![]))
        .ok();
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(out_shape(&g), vec![16]);
    assert_eq!(g.nodes[0].origin.name, "rs");

    // Arithmetic, Slice, Cast, ConstantOfShape, Sqrt, Neg on shapes.
    let g = Builder::new(13, &[-1, 4, 2, 2])
        .node(node("Shape", "sh", &["x"], &["s"], vec![]))
        .init(i64t("st", &[1], vec![1]))
        .init(i64t("en", &[1], vec![i64::MAX]))
        .node(node("Slice", "sl", &["s", "st", "en"], &["chw"], vec![])) // [4, 2, 2]
        .node(node(
            "Cast",
            "cf",
            &["chw"],
            &["chw_f"],
            vec![attr_i("to", 1)],
        ))
        .node(node("Mul", "sq", &["chw_f", "chw_f"], &["sq_f"], vec![])) // [16, 4, 4]
        .node(node("Sqrt", "rt", &["sq_f"], &["rt_f"], vec![])) // [4, 2, 2]
        .node(node("Neg", "ng", &["rt_f"], &["ng_f"], vec![]))
        .node(node("Neg", "ng2", &["ng_f"], &["pos_f"], vec![]))
        .node(node(
            "Cast",
            "ci",
            &["pos_f"],
            &["dims"],
            vec![attr_i("to", 7)],
        ))
        .init(i64t("one", &[1], vec![1]))
        .node(node(
            "ConstantOfShape",
            "cos",
            &["one"],
            &["batch"],
            vec![attr_t("value", i64t("", &[1], vec![1]))],
        ))
        .node(node(
            "Concat",
            "cat",
            &["batch", "dims"],
            &["t0"],
            vec![attr_i("axis", 0)],
        ))
        .node(node("Div", "half", &["t0", "one"], &["t1"], vec![]))
        .node(node(
            "Transpose",
            "tr",
            &["x"],
            &["xt"],
            vec![attr_is("perm", &[0, 2, 3, 1])],
        ))
        .node(node("Reshape", "rs", &["xt", "t1"], &["y"], vec![]))
        .ok();
    assert_eq!(out_shape(&g), vec![4, 2, 2]);
    assert_eq!(
        frozen(&g, 0),
        &FrozenOp::Transpose {
            perm: vec![1, 2, 0]
        }
    );

    let err = Builder::new(13, &[-1, 4, 4])
        .init(i64t("t", &[2], vec![-1, 4]))
        .node(node("Reshape", "rs_bad", &["x", "t"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["rs_bad", "across samples"]);
    // A file with a fixed batch of 8 has `x.size(0)` folded to 8 in its Reshape targets.
    let g = Builder::new(13, &[8, 4, 4])
        .init(i64t("t", &[2], vec![8, -1]))
        .node(node("Reshape", "rs", &["x", "t"], &["y"], vec![]))
        .ok();
    assert_eq!(out_shape(&g), vec![16]);
    let err = Builder::new(13, &[-1, 4, 4])
        .init(i64t("t", &[2], vec![2, 8]))
        .node(node("Reshape", "rs_bad", &["x", "t"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["rs_bad", "batch"]);
}

#[test]
fn transpose_and_pad() {
    let err = Builder::new(13, &[-1, 2, 3])
        .node(node(
            "Transpose",
            "tb",
            &["x"],
            &["y"],
            vec![attr_is("perm", &[1, 0, 2])],
        ))
        .err();
    assert_contains(&err, &["tb", "batch"]);

    let g = Builder::new(13, &[-1, 2, 3, 3])
        .init(i64t("p", &[8], vec![0, 0, 1, 2, 0, 0, 3, 4]))
        .init(f32t("v", &[], vec![-1.5]))
        .node(node("Pad", "pad", &["x", "p", "v"], &["y"], vec![]))
        .ok();
    assert_eq!(
        frozen(&g, 0),
        &FrozenOp::Pad {
            pads: vec![0, 1, 2, 0, 3, 4],
            interior: vec![0; 3],
            value: -1.5
        }
    );
    assert_eq!(out_shape(&g), vec![2, 7, 9]);

    let g = Builder::new(18, &[-1, 2, 3, 3])
        .init(i64t("p", &[2], vec![1, 1]))
        .init(i64t("ax", &[1], vec![-1]))
        .node(node("Pad", "pad", &["x", "p", "", "ax"], &["y"], vec![]))
        .ok();
    assert_eq!(
        frozen(&g, 0),
        &FrozenOp::Pad {
            pads: vec![0, 0, 1, 0, 0, 1],
            interior: vec![0; 3],
            value: 0.0
        }
    );

    let pad_err = |p: Vec<i64>, attrs| {
        Builder::new(13, &[-1, 2, 3])
            .init(i64t("p", &[6], p))
            .node(node("Pad", "pad9", &["x", "p"], &["y"], attrs))
            .err()
    };
    assert_contains(&pad_err(vec![1, 0, 0, 0, 0, 0], vec![]), &["pad9", "batch"]);
    assert_contains(
        &pad_err(vec![0, 0, -1, 0, 0, 0], vec![]),
        &["pad9", "negative"],
    );
    assert_contains(
        &pad_err(vec![0, 0, 1, 0, 0, 0], vec![attr_s("mode", "reflect")]),
        &["pad9", "reflect"],
    );
}

#[test]
fn softmax_axis_rules() {
    let g = Builder::new(13, &[-1, 10])
        .node(node("Softmax", "sm", &["x"], &["y"], vec![]))
        .ok();
    assert_eq!(frozen(&g, 0), &FrozenOp::Softmax);
    let g = Builder::new(11, &[-1, 10])
        .node(node("Softmax", "sm", &["x"], &["y"], vec![]))
        .ok();
    assert_eq!(frozen(&g, 0), &FrozenOp::Softmax);
    let err = Builder::new(11, &[-1, 3, 4])
        .node(node("Softmax", "sm", &["x"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["sm", "last axis"]);
    let err = Builder::new(13, &[-1, 3, 4])
        .node(node(
            "Softmax",
            "sm",
            &["x"],
            &["y"],
            vec![attr_i("axis", 1)],
        ))
        .err();
    assert_contains(&err, &["sm", "last axis"]);
}
