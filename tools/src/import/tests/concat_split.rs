//! Concat, Slice, Split and channel shuffle of activations: import, f32 parity against the f64
//! interpreter, int8 error, and the refusals. The models are the building blocks of SqueezeNet
//! (fire module), DenseNet (dense block) and ShuffleNetV2 (split, branch, concat, shuffle).

use icefold::format::Op as RtOp;

use super::*;
use crate::ir::eval::testkit::{rel_err, Rng};

/// `b` with a convolution `name` (`cin` → `cout`, `k`×`k`, padding `pad`, `group` groups, random
/// weights and bias) from `x` to `out`.
#[allow(clippy::too_many_arguments)]
fn conv(
    b: Builder,
    rng: &mut Rng,
    name: &'static str,
    (x, out): (&'static str, &'static str),
    (cin, cout, k, pad, group): (i64, i64, i64, i64, i64),
) -> Builder {
    let w = leak(format!("{name}_w"));
    let bias = leak(format!("{name}_b"));
    let n = (cout * (cin / group) * k * k) as usize;
    let bound = 1.5 / ((cin / group * k * k) as f32).sqrt();
    b.init(f32t(
        w,
        &[cout, cin / group, k, k],
        rng.vec(n, -bound, bound),
    ))
    .init(f32t(bias, &[cout], rng.vec(cout as usize, -0.2, 0.2)))
    .node(node(
        "Conv",
        name,
        &[x, w, bias],
        &[out],
        vec![
            attr_is("pads", &[pad, pad, pad, pad]),
            attr_i("group", group),
        ],
    ))
}

fn relu(b: Builder, name: &'static str, x: &'static str, out: &'static str) -> Builder {
    b.node(node("Relu", name, &[x], &[out], vec![]))
}

fn concat(b: Builder, name: &'static str, inputs: &[&'static str], out: &'static str) -> Builder {
    b.node(node(
        "Concat",
        name,
        inputs,
        &[out],
        vec![attr_i("axis", 1)],
    ))
}

/// Random samples of the graph's input, `n` of them.
fn samples(g: &ImportedGraph, n: usize, seed: u64) -> crate::io::Array {
    let shape = &g.values[g.input].shape;
    let per: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let mut full = vec![n];
    full.extend(shape);
    crate::io::Array {
        shape: full,
        data: rng.vec(n * per, -1.0, 1.0),
    }
}

/// The f64 interpreter's outputs of the imported graph for each sample of `x`.
fn reference(g: &ImportedGraph, x: &crate::io::Array) -> Vec<f32> {
    let per = x.data.len() / x.shape[0];
    x.data
        .chunks(per)
        .flat_map(|s| crate::ir::eval::run(g, s).unwrap())
        .collect()
}

/// Runs a converted model on `x`.
fn run(c: &crate::pipeline::Converted, x: &crate::io::Array) -> Vec<f32> {
    let blob = c.aligned();
    let model = crate::host::load(blob.as_slice()).unwrap();
    crate::host::run_f32(&model, x).unwrap().data
}

fn op_names(c: &crate::pipeline::Converted) -> Vec<&'static str> {
    c.lowered.layers.iter().map(|l| l.op.name()).collect()
}

/// f32 conversion matches the interpreter; the int8 conversion (calibrated on other samples)
/// stays within `int8_bound` relative L2 of it. Returns both conversions.
fn check(
    g: ImportedGraph,
    int8_bound: f64,
) -> (crate::pipeline::Converted, crate::pipeline::Converted) {
    let x = samples(&g, 8, 1);
    let want = reference(&g, &x);
    let f32c = crate::pipeline::convert(g.clone(), &Default::default()).unwrap();
    let got = run(&f32c, &x);
    // Sums of at most a few hundred f32 products against f64: float noise only.
    let err = rel_err(&got, &want);
    assert!(err < 1e-5, "f32 relative L2 error {err:e}");
    let calib = samples(&g, 64, 2);
    let int8 = int8::convert_int8(g, &calib, false, false, 0);
    let err = rel_err(&run(&int8, &x), &want);
    eprintln!("int8 relative L2 error {err:.4} (bound {int8_bound})");
    assert!(err < int8_bound, "int8 relative L2 error {err}");
    (f32c, int8)
}

/// SqueezeNet's fire module: squeeze 1x1, expand 1x1 and 3x3 side by side, joined on channels,
/// then a 1x1 classifier convolution reading the join.
fn fire_module() -> ImportedGraph {
    let mut rng = Rng::new(11);
    let b = Builder::new(13, &[-1, 6, 5, 5]);
    let b = conv(b, &mut rng, "squeeze", ("x", "s0"), (6, 4, 1, 0, 1));
    let b = relu(b, "squeeze_relu", "s0", "s");
    let b = conv(b, &mut rng, "expand1", ("s", "e10"), (4, 5, 1, 0, 1));
    let b = relu(b, "expand1_relu", "e10", "e1");
    let b = conv(b, &mut rng, "expand3", ("s", "e30"), (4, 3, 3, 1, 1));
    let b = relu(b, "expand3_relu", "e30", "e3");
    let b = concat(b, "fire_cat", &["e1", "e3"], "cat");
    conv(b, &mut rng, "classifier", ("cat", "y"), (8, 3, 1, 0, 1)).ok()
}

#[test]
fn squeezenet_fire_module_concatenates_on_channels_in_f32_and_int8() {
    let g = fire_module();
    assert_eq!(frozen(&g, 6), &FrozenOp::Concat { axis: 0 });
    // int8 through four layers: a few percent (each tensor is rounded to 256 levels).
    let (f32c, int8) = check(g, 0.03);
    // The model boundary is NCHW, the layers channels last: the input is transposed as the
    // engine writes it, the output by a last layer.
    assert!(f32c.lowered.info.input_transpose.is_some());
    assert_eq!(
        op_names(&f32c),
        [
            "conv2d",
            "conv2d",
            "conv2d",
            "concat",
            "conv2d",
            "transpose"
        ]
    );
    // Both expand outputs are read only by the join: they share its grid, the join copies.
    let names = op_names(&int8);
    assert!(names.contains(&"concat"), "{names:?}");
    assert!(!names.contains(&"concat_i8"), "{names:?}");
}

/// A DenseNet block of two layers (BatchNorm, ReLU, 3x3 conv), each reading the join of the
/// block input and every earlier layer's output; the block output joins all three (3 inputs).
fn dense_block() -> ImportedGraph {
    let mut rng = Rng::new(12);
    // A stem convolution first, so the block works channels last as in a real network.
    let b = bn_params(Builder::new(13, &[-1, 4, 5, 5]), 4);
    let b = conv(b, &mut rng, "stem", ("x", "x0"), (4, 4, 1, 0, 1));
    let b = b.node(node(
        "BatchNormalization",
        "bn1",
        &["x0", "g", "be", "m", "v"],
        &["n1"],
        vec![],
    ));
    let b = relu(b, "relu1", "n1", "r1");
    let b = conv(b, &mut rng, "conv1", ("r1", "c1"), (4, 3, 3, 1, 1));
    let b = concat(b, "cat1", &["x0", "c1"], "k1");
    let b = relu(b, "relu2", "k1", "r2");
    let b = conv(b, &mut rng, "conv2", ("r2", "c2"), (7, 3, 3, 1, 1));
    concat(b, "cat2", &["x0", "c1", "c2"], "y").ok()
}

#[test]
fn densenet_block_joins_three_inputs_reusing_the_earlier_join_of_two() {
    let g = dense_block();
    let (f32c, int8) = check(g, 0.03);
    let concats = |c: &crate::pipeline::Converted| {
        c.lowered
            .layers
            .iter()
            .filter(|l| matches!(l.op, RtOp::Concat(_) | RtOp::ConcatI8(_)))
            .count()
    };
    // cat1: one layer; cat2 (three inputs) starts from cat1's result: one more.
    assert_eq!(concats(&f32c), 2);
    assert_eq!(concats(&int8), 2);
    // conv2's output is read only by the last join: it is written on the join's grid (copied,
    // not rescaled). The join's first input (cat1's result, also read by relu2) keeps its own.
    let last = int8
        .lowered
        .layers
        .iter()
        .rfind(|l| matches!(l.op, RtOp::Concat(_) | RtOp::ConcatI8(_)))
        .unwrap();
    assert_eq!(last.inputs[1].quant, last.output.quant);
    if let RtOp::ConcatI8(c) = last.op {
        assert!(c.rescale[1].is_none(), "{c:?}");
        assert_eq!(
            c.rescale[0].is_none(),
            last.inputs[0].quant == last.output.quant
        );
    }
}

/// One ShuffleNetV2 unit on `x` (`c` channels): split in halves, the second through
/// 1x1 / depthwise 3x3 / 1x1, joined with the first, channels shuffled in 2 groups.
fn shuffle_unit(b: Builder, rng: &mut Rng, k: usize, x: &'static str, c: i64) -> Builder {
    let n = |s: &str| leak(format!("u{k}_{s}"));
    let h = c / 2;
    let (a, bb) = (n("a"), n("b"));
    let b = b.init(i64t(n("sizes"), &[2], vec![h, h])).node(node(
        "Split",
        n("split"),
        &[x, n("sizes")],
        &[a, bb],
        vec![attr_i("axis", 1)],
    ));
    let b = conv(b, rng, n("pw1"), (bb, n("p1")), (h, h, 1, 0, 1));
    let b = relu(b, n("pw1_relu"), n("p1"), n("r1"));
    let b = conv(b, rng, n("dw"), (n("r1"), n("d")), (h, h, 3, 1, h));
    let b = conv(b, rng, n("pw2"), (n("d"), n("p2")), (h, h, 1, 0, 1));
    let b = relu(b, n("pw2_relu"), n("p2"), n("r2"));
    let b = concat(b, n("cat"), &[a, n("r2")], n("cat_out"));
    // channel_shuffle: [N, C, H, W] → [N, 2, C/2, H, W] → swap 1, 2 → [N, C, H, W].
    b.init(i64t(n("to5"), &[5], vec![-1, 2, h, 4, 4]))
        .init(i64t(n("to4"), &[4], vec![-1, c, 4, 4]))
        .node(node(
            "Reshape",
            n("r5"),
            &[n("cat_out"), n("to5")],
            &[n("v5")],
            vec![],
        ))
        .node(node(
            "Transpose",
            n("t"),
            &[n("v5")],
            &[n("tv")],
            vec![attr_is("perm", &[0, 2, 1, 3, 4])],
        ))
        .node(node(
            "Reshape",
            n("r4"),
            &[n("tv"), n("to4")],
            &[n("out")],
            vec![],
        ))
}

fn shufflenet_units() -> ImportedGraph {
    let mut rng = Rng::new(13);
    let b = Builder::new(13, &[-1, 8, 4, 4]);
    let b = shuffle_unit(b, &mut rng, 1, "x", 8);
    let b = shuffle_unit(b, &mut rng, 2, "u1_out", 8);
    conv(b, &mut rng, "head", ("u2_out", "y"), (8, 5, 1, 0, 1)).ok()
}

#[test]
fn shufflenet_v2_units_run_split_shuffle_and_concat_without_rank_4_tensors() {
    let g = shufflenet_units();
    let (f32c, int8) = check(g, 0.03);
    let names = op_names(&f32c);
    // Unit 1's shuffle feeds unit 2's split: one gather per half, no shuffle copy of its own.
    // Unit 2's shuffle is folded into the head's weights. No transpose anywhere.
    assert_eq!(
        names.iter().filter(|&&n| n == "gather").count(),
        2,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|&&n| n == "slice").count(),
        2,
        "{names:?}"
    );
    // Unit 1 slices the NCHW model input (no copy to channels last first); its second half goes
    // channels last for the convolutions, and the first half joins it there. The output leaves in
    // NCHW. No other layout change: the shuffles are gathers or folded.
    let expected = [
        "slice",
        "slice",
        "transpose",
        "conv2d",
        "conv2d",
        "conv2d",
        "transpose",
        "concat",
        "gather",
        "gather",
        "conv2d",
        "conv2d",
        "conv2d",
        "concat",
        "conv2d",
        "transpose",
    ];
    assert_eq!(names, expected);
    let int8_names: Vec<&str> = op_names(&int8)
        .iter()
        .map(|n| n.trim_end_matches("_i8"))
        .collect();
    assert_eq!(int8_names, names);
}

#[test]
fn a_shuffle_that_is_the_output_or_read_twice_stays_a_gather_layer() {
    let mut rng = Rng::new(14);
    let b = Builder::new(13, &[-1, 8, 4, 4]);
    let b = shuffle_unit(b, &mut rng, 1, "x", 8);
    let g = b
        .node(node("Relu", "last", &["u1_out"], &["y"], vec![]))
        .ok();
    let (f32c, _) = check(g, 0.03);
    assert!(op_names(&f32c).contains(&"gather"));
}

#[test]
fn slice_with_steps_and_negative_bounds_on_channels_and_space() {
    // x[:, 1::2, -3:, :] then a 1x1 conv: two slice layers, parity with the interpreter.
    let mut rng = Rng::new(15);
    let b = Builder::new(13, &[-1, 7, 5, 4])
        .init(i64t("starts", &[2], vec![1, -3]))
        .init(i64t("ends", &[2], vec![i64::MAX, 100]))
        .init(i64t("axes", &[2], vec![1, 2]))
        .init(i64t("steps", &[2], vec![2, 1]))
        .node(node(
            "Slice",
            "sl",
            &["x", "starts", "ends", "axes", "steps"],
            &["s"],
            vec![],
        ));
    let g = conv(b, &mut rng, "c", ("s", "y"), (3, 2, 1, 0, 1)).ok();
    assert_eq!(g.values[g.nodes[1].output].shape, vec![3, 3, 4]);
    let (f32c, _) = check(g, 0.03);
    // Sliced in the model's NCHW layout, then one copy to channels last and one back.
    assert_eq!(
        op_names(&f32c),
        ["slice", "slice", "transpose", "conv2d", "transpose"]
    );
}

#[test]
fn split_sizes_from_input_attribute_or_equal_parts() {
    let split = |opset: i64, sizes: Option<Vec<i64>>, attrs: Vec<Attribute<'static>>| {
        let mut b = Builder::new(opset, &[-1, 6, 2, 2]);
        let mut inputs = vec!["x"];
        if let Some(s) = sizes {
            b = b.init(i64t("sizes", &[s.len() as i64], s));
            inputs.push("sizes");
        }
        let inputs: &'static [&'static str] = Box::leak(inputs.into_boxed_slice());
        let g = b
            .node(node("Split", "sp", inputs, &["a", "unused", "c"], attrs))
            .node(node("Add", "sum", &["a", "c"], &["y"], vec![]))
            .ok();
        let shapes: Vec<Vec<usize>> = g
            .nodes
            .iter()
            .map(|n| g.values[n.output].shape.clone())
            .collect();
        (g, shapes)
    };
    let axis = || attr_i("axis", 1);
    // Opset 13: sizes as input 1; the unused middle output makes no node.
    let (g, shapes) = split(13, Some(vec![2, 2, 2]), vec![axis()]);
    assert_eq!(shapes, [vec![2, 2, 2], vec![2, 2, 2], vec![2, 2, 2]]);
    assert_eq!(
        frozen(&g, 1),
        &FrozenOp::Slice {
            axis: 0,
            start: 4,
            step: 1
        }
    );
    check(g, 0.03);
    // Opset 11: the `split` attribute; opset 18: `num_outputs`; opset 13 without sizes: equal.
    let (_, shapes) = split(11, None, vec![axis(), attr_is("split", &[2, 2, 2])]);
    assert_eq!(shapes.len(), 3);
    let (g, _) = split(18, None, vec![axis(), attr_i("num_outputs", 3)]);
    assert_eq!(
        frozen(&g, 1),
        &FrozenOp::Slice {
            axis: 0,
            start: 4,
            step: 1
        }
    );
    let (g, _) = split(13, None, vec![axis()]);
    assert_eq!(
        frozen(&g, 0),
        &FrozenOp::Slice {
            axis: 0,
            start: 0,
            step: 1
        }
    );
    // Sizes that do not add up are refused, naming the node.
    let err = Builder::new(13, &[-1, 6, 2, 2])
        .init(i64t("sizes", &[2], vec![2, 3]))
        .node(node(
            "Split",
            "bad_split",
            &["x", "sizes"],
            &["y", "z"],
            vec![axis()],
        ))
        .err();
    assert_contains(&err, &["bad_split", "Split sizes [2, 3]", "6"]);
}

#[test]
fn refusals_name_the_node_and_say_what_to_do() {
    // Concat with a constant.
    let err = Builder::new(13, &[-1, 2, 2, 2])
        .init(ramp("k", &[1, 2, 2, 2]))
        .node(node(
            "Concat",
            "cat_const",
            &["x", "k"],
            &["y"],
            vec![attr_i("axis", 1)],
        ))
        .err();
    assert_contains(&err, &["cat_const", "input 1 is a constant", "Conv"]);
    // Concat along the batch.
    let err = Builder::new(13, &[-1, 2, 2, 2])
        .node(node(
            "Concat",
            "cat_batch",
            &["x", "x"],
            &["y"],
            vec![attr_i("axis", 0)],
        ))
        .err();
    assert_contains(&err, &["cat_batch", "batch axis", "axis 1"]);
    // Slicing the batch, a negative step.
    let slice = |starts: i64, ends: i64, axis: i64, step: i64| {
        Builder::new(13, &[-1, 4, 2, 2])
            .init(i64t("st", &[1], vec![starts]))
            .init(i64t("en", &[1], vec![ends]))
            .init(i64t("ax", &[1], vec![axis]))
            .init(i64t("sp", &[1], vec![step]))
            .node(node(
                "Slice",
                "sl",
                &["x", "st", "en", "ax", "sp"],
                &["y"],
                vec![],
            ))
            .err()
    };
    assert_contains(
        &slice(0, 1, 0, 1),
        &["sl", "batch axis", "slice only the axes after"],
    );
    assert_contains(
        &slice(3, 0, 1, -1),
        &["sl", "negative step", "positive step"],
    );
    assert_contains(&slice(5, 9, 1, 1), &["sl", "selects nothing"]);
}

#[test]
fn a_rank_4_transpose_outside_the_shuffle_pattern_is_refused_at_the_transpose() {
    // Reshape to [2, 2, 3, 3] and a transpose that is not the group swap.
    let mut rng = Rng::new(16);
    let b = Builder::new(13, &[-1, 4, 3, 3])
        .init(i64t("to5", &[5], vec![-1, 2, 2, 3, 3]))
        .init(i64t("to4", &[4], vec![-1, 4, 3, 3]))
        .node(node("Reshape", "r5", &["x", "to5"], &["v5"], vec![]))
        .node(node(
            "Transpose",
            "odd_transpose",
            &["v5"],
            &["tv"],
            vec![attr_is("perm", &[0, 1, 2, 4, 3])],
        ))
        .node(node("Reshape", "r4", &["tv", "to4"], &["v4"], vec![]));
    let g = conv(b, &mut rng, "after", ("v4", "y"), (4, 2, 1, 0, 1)).ok();
    let err = format!(
        "{:#}",
        crate::pipeline::convert(g, &Default::default()).unwrap_err()
    );
    assert_contains(
        &err,
        &[
            "odd_transpose",
            "Transpose",
            "channel shuffle",
            "[0, 2, 1, 3, 4]",
        ],
    );
    assert!(!err.contains("after"), "names the convolution: {err}");
}

#[test]
fn a_rank_4_reshape_read_as_is_is_refused_at_the_reshape() {
    let mut rng = Rng::new(17);
    let b = Builder::new(13, &[-1, 4, 3, 3])
        .init(i64t("to5", &[5], vec![-1, 2, 2, 3, 3]))
        .node(node(
            "Reshape",
            "grouped_view",
            &["x", "to5"],
            &["v5"],
            vec![],
        ))
        .node(node("Relu", "relu5", &["v5"], &["r5"], vec![]))
        .init(i64t("to4", &[4], vec![-1, 4, 3, 3]))
        .node(node("Reshape", "back", &["r5", "to4"], &["v4"], vec![]));
    let g = conv(b, &mut rng, "after", ("v4", "y"), (4, 2, 1, 0, 1)).ok();
    let err = format!(
        "{:#}",
        crate::pipeline::convert(g, &Default::default()).unwrap_err()
    );
    assert_contains(
        &err,
        &["grouped_view", "Reshape", "rank-4", "at most 4 axes"],
    );
}
