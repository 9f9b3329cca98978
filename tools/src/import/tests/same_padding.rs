//! timm's "same" padding (`Conv2dSame`): the pad amounts computed from the input size with Div,
//! Ceil, Clip and Cast, folded at import into a constant Pad before the convolution.

use super::*;

/// `Pad` of "x" by timm's "same" amounts for a 3x3 kernel at stride 2 (`clamp((ceil(x / 2) - 1) *
/// 2 + 3 - x, min=0)` per spatial axis, the odd pixel after), then the convolution "conv" without
/// padding, as PyTorch's exporter writes it; `floor` computes the top share with Floor instead of
/// an integer Div.
fn same_conv(size: i64, floor: bool) -> Builder {
    let mut rng = crate::ir::eval::testkit::Rng::new(2);
    let mut b = Builder::new(17, &[-1, 2, size, size])
        .init(f32t("w", &[3, 2, 3, 3], rng.vec(54, -0.5, 0.5)))
        .init(i64t("two_i", &[], vec![2]))
        .init(f32t("two", &[], vec![2.0]))
        .init(f32t("one", &[], vec![1.0]))
        .init(f32t("three", &[], vec![3.0]))
        .init(f32t("zero", &[], vec![0.0]))
        .init(i64t("idx", &[], vec![2]))
        .init(i64t("ax0", &[1], vec![0]))
        .init(i64t("zeros", &[2], vec![0, 0]))
        .node(node("Shape", "shape", &["x"], &["s"], vec![]))
        .node(node("Gather", "gather", &["s", "idx"], &["h"], vec![]))
        .node(node(
            "Cast",
            "cast_f",
            &["h"],
            &["hf"],
            vec![attr_i("to", 1)],
        ))
        .node(node("Div", "div", &["hf", "two"], &["q"], vec![]))
        .node(node("Ceil", "ceil", &["q"], &["c"], vec![]))
        .node(node("Sub", "sub1", &["c", "one"], &["c1"], vec![]))
        .node(node("Mul", "mul", &["c1", "two"], &["c2"], vec![]))
        .node(node("Add", "add", &["c2", "three"], &["c3"], vec![]))
        .node(node("Sub", "sub2", &["c3", "hf"], &["c4"], vec![]))
        .node(node("Clip", "clamp", &["c4", "zero"], &["p"], vec![]));
    b = if floor {
        b.node(node("Div", "half", &["p", "two"], &["pf"], vec![]))
            .node(node("Floor", "floor", &["pf"], &["tf"], vec![]))
            .node(node(
                "Cast",
                "cast_t",
                &["tf"],
                &["t"],
                vec![attr_i("to", 7)],
            ))
            .node(node(
                "Cast",
                "cast_p",
                &["p"],
                &["pi"],
                vec![attr_i("to", 7)],
            ))
    } else {
        b.node(node(
            "Cast",
            "cast_p",
            &["p"],
            &["pi"],
            vec![attr_i("to", 7)],
        ))
        .node(node("Div", "half", &["pi", "two_i"], &["t"], vec![]))
    };
    b.node(node("Sub", "rest", &["pi", "t"], &["r"], vec![]))
        .node(node("Unsqueeze", "ut", &["t", "ax0"], &["t1"], vec![]))
        .node(node("Unsqueeze", "ur", &["r", "ax0"], &["r1"], vec![]))
        .node(node(
            "Concat",
            "pads",
            &["zeros", "t1", "t1", "zeros", "r1", "r1"],
            &["pads_v"],
            vec![attr_i("axis", 0)],
        ))
        .node(node("Pad", "pad", &["x", "pads_v"], &["xp"], vec![]))
        .node(node(
            "Conv",
            "conv",
            &["xp", "w"],
            &["y"],
            vec![attr_is("strides", &[2, 2])],
        ))
}

#[test]
fn timm_same_padding_arithmetic_folds_at_import() {
    // 8 -> ceil(8 / 2) = 4 outputs need (4 - 1) * 2 + 3 - 8 = 1 pixel: 0 before, 1 after.
    // 7 -> 4 outputs need 2: 1 before, 1 after.
    for (size, floor, pads) in [(8, false, [0, 1]), (8, true, [0, 1]), (7, false, [1, 1])] {
        let g = same_conv(size, floor).ok();
        let pad = g
            .nodes
            .iter()
            .find_map(|n| match &n.op {
                Op::Frozen(FrozenOp::Pad { pads, .. }) => Some(pads.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Pad node: {:?}", g.nodes));
        let [before, after] = pads;
        assert_eq!(pad, vec![0, before, before, 0, after, after], "size {size}");
        assert_eq!(out_shape(&g), vec![3, 4, 4], "size {size}");
        // The zero Pad fuses into the convolution; the runtime matches the interpreter.
        let c = crate::pipeline::convert(g.clone(), &Default::default()).unwrap();
        let convs = c
            .lowered
            .layers
            .iter()
            .filter(|l| l.op.name() == "conv2d")
            .count();
        assert_eq!(convs, 1);
        assert!(c.lowered.layers.iter().all(|l| l.op.name() != "pad"));
        let mut rng = crate::ir::eval::testkit::Rng::new(5);
        let n = (2 * size * size) as usize;
        let x = crate::io::Array {
            shape: vec![1, 2, size as usize, size as usize],
            data: rng.vec(n, -1.0, 1.0),
        };
        let blob = c.aligned();
        let model = crate::host::load(blob.as_slice()).unwrap();
        let got = crate::host::run_f32(&model, &x).unwrap();
        let want = crate::ir::eval::run(&g, &x.data).unwrap();
        for (a, b) in got.data.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

#[test]
fn ceil_floor_clip_on_constants_and_their_refusals() {
    // Clip with an integer tensor and fractional bounds rounds the bounds inward.
    let g = Builder::new(17, &[-1, 2, 6])
        .init(i64t("sh", &[2], vec![-3, 9]))
        .init(f32t("lo", &[], vec![0.5]))
        .init(f32t("hi", &[], vec![6.5]))
        .node(node(
            "Clip",
            "clip_shape",
            &["sh", "lo", "hi"],
            &["cl"],
            vec![],
        ))
        .node(node("Reshape", "r", &["x", "cl"], &["y"], vec![]))
        .err();
    // [1, 6] is not a per-sample reshape of [2, 6]: the point is that Clip evaluated to [1, 6].
    assert_contains(&g, &["[1, 6]"]);
    let err = Builder::new(17, &[-1, 4])
        .init(f32t("a", &[], vec![3.0]))
        .init(f32t("lo", &[], vec![2.0]))
        .init(f32t("hi", &[], vec![1.0]))
        .node(node("Clip", "bad_clip", &["a", "lo", "hi"], &["b"], vec![]))
        .node(node("Add", "add", &["x", "b"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["bad_clip", "Clip", "above max"]);
}
