//! Gemm and MatMul (+ Add) nodes.

use super::*;

#[test]
fn gemm_trans_b_alpha_beta() {
    let g = Builder::new(13, &[-1, 3])
        .init(f32t("w", &[2, 3], vec![1., 2., 3., 4., 5., 6.]))
        .init(f32t("c", &[2], vec![1., -1.]))
        .node(node(
            "Gemm",
            "fc",
            &["x", "w", "c"],
            &["y"],
            vec![
                attr_i("transB", 1),
                attr_f("alpha", 2.0),
                attr_f("beta", 0.5),
            ],
        ))
        .ok();
    let FrozenOp::Dense(d) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(d.weight.shape, vec![2, 3]);
    assert_eq!(d.weight.data, vec![2., 4., 6., 8., 10., 12.]);
    assert_eq!(d.bias, vec![0.5, -0.5]);
    assert_eq!(out_shape(&g), vec![2]);

    // transB = 0: B is [in, out]; C as [1, out].
    let g = Builder::new(13, &[-1, 3])
        .init(f32t("w", &[3, 2], vec![1., 2., 3., 4., 5., 6.]))
        .init(f32t("c", &[1, 2], vec![7., 8.]))
        .node(node("Gemm", "fc", &["x", "w", "c"], &["y"], vec![]))
        .ok();
    let FrozenOp::Dense(d) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(d.weight.data, vec![1., 3., 5., 2., 4., 6.]);
    assert_eq!(d.bias, vec![7., 8.]);
}

#[test]
fn gemm_errors() {
    let gemm = |w: &[i64], input: &[i64], attrs| {
        Builder::new(13, input)
            .init(ramp("w", w))
            .node(node("Gemm", "fc9", &["x", "w"], &["y"], attrs))
            .err()
    };
    assert_contains(
        &gemm(&[3, 2], &[-1, 3], vec![attr_i("transA", 1)]),
        &["fc9", "transA"],
    );
    assert_contains(&gemm(&[4, 2], &[-1, 3], vec![]), &["fc9", "3"]);
    assert_contains(&gemm(&[3, 2], &[-1, 3, 1], vec![]), &["fc9", "Flatten"]);
}

#[test]
fn matmul_then_add_becomes_one_dense() {
    let g = Builder::new(13, &[-1, 3])
        .init(f32t("w", &[3, 2], vec![1., 2., 3., 4., 5., 6.]))
        .init(f32t("b", &[2], vec![0.5, 0.25]))
        .node(node("MatMul", "mm", &["x", "w"], &["t"], vec![]))
        .node(node("Add", "add", &["b", "t"], &["y"], vec![]))
        .ok();
    assert_eq!(g.nodes.len(), 1);
    let FrozenOp::Dense(d) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(d.weight.data, vec![1., 3., 5., 2., 4., 6.]);
    assert_eq!(d.bias, vec![0.5, 0.25]);
    assert_eq!(g.nodes[0].origin.name, "mm");
    assert_eq!(g.values[g.output].name, "y");

    // Without an Add the bias is zero; leading per-sample axes of size 1 are fine.
    let g = Builder::new(13, &[-1, 1, 3])
        .init(ramp("w", &[3, 2]))
        .node(node("MatMul", "mm", &["x", "w"], &["y"], vec![]))
        .ok();
    let FrozenOp::Dense(d) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(d.bias, vec![0.0, 0.0]);
    assert_eq!(out_shape(&g), vec![1, 2]);

    let err = Builder::new(13, &[-1, 2, 3])
        .init(ramp("w", &[3, 2]))
        .node(node("MatMul", "mm", &["x", "w"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["mm", "several rows per sample"]);
}

#[test]
fn matmul_output_used_twice_is_not_fused() {
    let g = Builder::new(13, &[-1, 3])
        .init(ramp("w", &[3, 3]))
        .init(ramp("b", &[3]))
        .node(node("MatMul", "mm", &["x", "w"], &["t"], vec![]))
        .node(node("Add", "add", &["t", "b"], &["u"], vec![]))
        .node(node("Add", "res", &["t", "u"], &["y"], vec![]))
        .ok();
    assert_eq!(g.nodes.len(), 3);
    assert!(matches!(frozen(&g, 1), FrozenOp::Affine(_)));
    assert!(matches!(frozen(&g, 2), FrozenOp::Add));
}
