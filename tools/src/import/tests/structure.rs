//! Graph structure: unsupported ops, order, inputs, outputs, opsets.

use super::*;

#[test]
fn unsupported_ops_are_listed_together() {
    let mut b = Builder::new(13, &[-1, 4])
        .node(node("Sin", "t1", &["x"], &["a"], vec![]))
        .node(node("Relu", "", &["a"], &["b"], vec![]))
        .node(node("Erf", "", &["b"], &["c"], vec![]))
        .node(node("Cast", "cast", &["c"], &["d"], vec![attr_i("to", 1)]))
        .node(node("Sub", "gate", &["d", "d"], &["y"], vec![]))
        .node(node("Sin", "dead", &["x"], &["unused"], vec![]));
    b.nodes.push(ONode {
        domain: "ai.onnx.ml",
        ..node("Relu", "custom", &["x"], &["z"], vec![])
    });
    b.nodes
        .push(node("Add", "use_z", &["y", "z"], &["w"], vec![]));
    b.outputs = vec!["w"];
    let err = b.err();
    assert_contains(
        &err,
        &[
            "5 node(s)",
            "node \"t1\" (Sin) at position 0",
            "node \"Erf_2\" (Erf) at position 2",
            "node \"cast\" (Cast) at position 3: supported only on constants",
            "node \"gate\" (Sub) at position 4: Sub of two activations",
            "node \"custom\" (Relu) at position 6: operator domain \"ai.onnx.ml\"",
        ],
    );
    assert!(
        !err.contains("dead"),
        "unused nodes are not reported:\n{err}"
    );
}

#[test]
fn nodes_are_sorted_and_unused_ones_dropped() {
    let mut b = Builder::new(13, &[-1, 4])
        .node(node("Sigmoid", "second", &["a"], &["y"], vec![]))
        .node(node("Relu", "unused", &["x"], &["u"], vec![]))
        .node(node("Relu", "first", &["x"], &["a"], vec![]));
    // An unused activation that only feeds a Shape must go too.
    b.nodes
        .push(node("Relu", "shape_only", &["x"], &["s0"], vec![]));
    b.nodes.push(node("Shape", "sh", &["s0"], &["s1"], vec![]));
    b.nodes
        .push(node("Reshape", "rs", &["a", "s1"], &["a2"], vec![]));
    let g = b.ok();
    let names: Vec<&str> = g.nodes.iter().map(|n| n.origin.name.as_str()).collect();
    assert_eq!(names, vec!["first", "second"]);
    assert_eq!(g.values.len(), 3);
    assert_eq!((g.input, g.output), (0, 2));
}

#[test]
fn structural_errors() {
    let cycle = Builder::new(13, &[-1, 4])
        .node(node("Add", "a1", &["x", "b"], &["a"], vec![]))
        .node(node("Relu", "a2", &["a"], &["b"], vec![]))
        .node(node("Relu", "out", &["b"], &["y"], vec![]))
        .err();
    assert_contains(&cycle, &["cycle", "a1", "a2"]);
    let dangling = Builder::new(13, &[-1, 4])
        .node(node("Add", "add7", &["x", "ghost"], &["y"], vec![]))
        .err();
    assert_contains(&dangling, &["add7", "\"ghost\"", "not produced"]);
    let twice = Builder::new(13, &[-1, 4])
        .node(node("Relu", "r1", &["x"], &["y"], vec![]))
        .node(node("Relu", "r2", &["x"], &["y"], vec![]))
        .err();
    assert_contains(&twice, &["\"y\" is produced twice", "r1", "r2"]);
    let no_output = Builder::new(13, &[-1, 4])
        .node(node("Relu", "r1", &["x"], &["z"], vec![]))
        .err();
    assert_contains(&no_output, &["\"y\"", "not produced"]);
    let dup_init = Builder::new(13, &[-1, 4])
        .init(ramp("w", &[1]))
        .init(ramp("w", &[1]))
        .node(node("Relu", "r", &["x"], &["y"], vec![]))
        .err();
    assert_contains(&dup_init, &["\"w\"", "twice"]);
    let const_out = Builder::new(13, &[-1, 4])
        .node(node(
            "Constant",
            "k",
            &[],
            &["y"],
            vec![attr_f("value_float", 1.0)],
        ))
        .err();
    assert_contains(&const_out, &["constant"]);
}

#[test]
fn inputs_outputs_and_opsets() {
    // Initializers listed as graph inputs are not inputs.
    let mut b = Builder::new(13, &[-1, 3])
        .init(ramp("w", &[2, 3]))
        .node(node(
            "Gemm",
            "fc",
            &["x", "w"],
            &["y"],
            vec![attr_i("transB", 1)],
        ));
    b.extra_inputs
        .push(value_info("w", &[2, 3], DataType::Float));
    assert_eq!(out_shape(&b.ok()), vec![2]);
    // A fixed batch size is fine too.
    assert_eq!(
        out_shape(
            &Builder::new(13, &[8, 3])
                .node(node("Relu", "r", &["x"], &["y"], vec![]))
                .ok()
        ),
        vec![3]
    );

    b.extra_inputs
        .push(value_info("x2", &[-1, 3], DataType::Float));
    assert_contains(&b.err(), &["2 inputs", "x2"]);

    let mut two_out = Builder::new(13, &[-1, 3]).node(node("Relu", "r", &["x"], &["y"], vec![]));
    two_out.outputs = vec!["y", "x"];
    assert_contains(&two_out.err(), &["2 outputs"]);

    let relu = |opset, dims: &[i64]| {
        Builder::new(opset, dims).node(node("Relu", "r", &["x"], &["y"], vec![]))
    };
    assert_contains(&relu(10, &[-1, 3]).err(), &["opset 10"]);
    assert_contains(
        &relu(24, &[-1, 3]).err(),
        &["opset 24", "11..=23", "opset_version=17"],
    );
    relu(11, &[-1, 3]).ok();
    relu(20, &[-1, 3]).ok();
    relu(21, &[-1, 3]).ok();
    relu(23, &[-1, 3]).ok();
    assert_contains(&relu(13, &[-1, -1]).err(), &["axis 1", "fixed"]);
    assert_contains(&relu(13, &[-1]).err(), &["rank 1"]);

    let mut m = relu(13, &[-1, 3]).model();
    m.graph.as_mut().unwrap().input[0] = value_info("x", &[-1, 3], DataType::Int64);
    assert_contains(
        &format!("{:#}", import(&onnx_rs::encode(&m), None).unwrap_err()),
        &["Int64", "float32"],
    );
    m.opset_import = vec![OperatorSetId {
        domain: "ai.onnx.ml",
        version: 3,
    }];
    assert_contains(
        &format!("{:#}", import(&onnx_rs::encode(&m), None).unwrap_err()),
        &["no opset of the default"],
    );
    // Other domains may be imported as long as no node uses them.
    let mut m = relu(13, &[-1, 3]).model();
    m.opset_import.push(OperatorSetId {
        domain: "ai.onnx.ml",
        version: 3,
    });
    import(&onnx_rs::encode(&m), None).unwrap();
}
