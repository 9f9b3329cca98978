//! Activations and pooling.

use super::*;

#[test]
fn activations_and_clip_forms() {
    let one = |n: ONode<'static>, inits: Vec<TensorProto<'static>>| {
        let mut b = Builder::new(13, &[-1, 4]).node(n);
        b.inits = inits;
        let g = b.ok();
        let FrozenOp::Activation(a) = frozen(&g, 0).clone() else {
            panic!()
        };
        a
    };
    assert_eq!(
        one(node("Relu", "r", &["x"], &["y"], vec![]), vec![]),
        Activation::Relu
    );
    assert_eq!(
        one(node("Sigmoid", "s", &["x"], &["y"], vec![]), vec![]),
        Activation::Sigmoid
    );
    assert_eq!(
        one(node("LeakyRelu", "l", &["x"], &["y"], vec![]), vec![]),
        Activation::LeakyRelu { alpha: 0.01 }
    );
    assert_eq!(
        one(
            node("Clip", "c", &["x", "lo", "hi"], &["y"], vec![]),
            vec![f32t("lo", &[], vec![0.]), f32t("hi", &[], vec![6.])]
        ),
        Activation::Clip { lo: 0., hi: 6. }
    );
    assert_eq!(
        one(
            node("Clip", "c", &["x", "", "hi"], &["y"], vec![]),
            vec![f32t("hi", &[], vec![6.])]
        ),
        Activation::Clip {
            lo: f32::NEG_INFINITY,
            hi: 6.
        }
    );
    // Bounds from Constant nodes shared by two Clips.
    let g = Builder::new(13, &[-1, 4])
        .node(node(
            "Constant",
            "k0",
            &[],
            &["lo"],
            vec![attr_t("value", f32t("", &[], vec![0.]))],
        ))
        .node(node(
            "Constant",
            "k1",
            &[],
            &["hi"],
            vec![attr_f("value_float", 6.)],
        ))
        .node(node("Clip", "c1", &["x", "lo", "hi"], &["t"], vec![]))
        .node(node("Clip", "c2", &["t", "lo", "hi"], &["y"], vec![]))
        .ok();
    assert_eq!(g.nodes.len(), 2);
    assert_eq!(
        frozen(&g, 1),
        &FrozenOp::Activation(Activation::Clip { lo: 0., hi: 6. })
    );
    let err = Builder::new(13, &[-1, 4])
        .init(f32t("lo", &[], vec![6.]))
        .init(f32t("hi", &[], vec![0.]))
        .node(node("Clip", "clip_bad", &["x", "lo", "hi"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["clip_bad", "above max"]);
}

// ---- pooling ----

#[test]
fn pools() {
    let g = Builder::new(13, &[-1, 2, 5, 5])
        .node(node(
            "MaxPool",
            "mp",
            &["x"],
            &["y"],
            vec![
                attr_is("kernel_shape", &[2, 2]),
                attr_is("strides", &[2, 2]),
                attr_i("ceil_mode", 1),
            ],
        ))
        .ok();
    let FrozenOp::Pool(p) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(
        (p.kind, p.kernel, p.strides, p.pads),
        (PoolKind::Max, [2, 2], [2, 2], [0, 0, 1, 1])
    );
    assert_eq!(out_shape(&g), vec![2, 3, 3]);

    let g = Builder::new(13, &[-1, 2, 6])
        .node(node(
            "AveragePool",
            "ap",
            &["x"],
            &["y"],
            vec![
                attr_is("kernel_shape", &[3]),
                attr_is("pads", &[1, 1]),
                attr_i("count_include_pad", 1),
            ],
        ))
        .ok();
    let FrozenOp::Pool(p) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(
        p.kind,
        PoolKind::Average {
            count_include_pad: true
        }
    );
    assert_eq!(
        (p.kernel, p.pads, p.spatial_rank),
        ([1, 3], [0, 1, 0, 1], 1)
    );
    assert_eq!(out_shape(&g), vec![2, 6]);

    // ceil_mode overhang without own padding: equivalent to count_include_pad = 0.
    let g = Builder::new(13, &[-1, 1, 5, 5])
        .node(node(
            "AveragePool",
            "ap",
            &["x"],
            &["y"],
            vec![
                attr_is("kernel_shape", &[2, 2]),
                attr_is("strides", &[2, 2]),
                attr_i("ceil_mode", 1),
                attr_i("count_include_pad", 1),
            ],
        ))
        .ok();
    let FrozenOp::Pool(p) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(
        p.kind,
        PoolKind::Average {
            count_include_pad: false
        }
    );

    let pool_err = |op: &'static str, outs: &[&'static str], attrs| {
        Builder::new(13, &[-1, 1, 6, 6])
            .node(node(op, "pool7", &["x"], outs, attrs))
            .err()
    };
    assert_contains(
        &pool_err(
            "MaxPool",
            &["y", "idx"],
            vec![attr_is("kernel_shape", &[2, 2])],
        ),
        &["pool7", "indices"],
    );
    assert_contains(
        &pool_err(
            "MaxPool",
            &["y"],
            vec![
                attr_is("kernel_shape", &[2, 2]),
                attr_is("dilations", &[2, 2]),
            ],
        ),
        &["pool7", "dilations"],
    );
    assert_contains(
        &pool_err("AveragePool", &["y"], vec![]),
        &["pool7", "kernel_shape"],
    );
    assert_contains(
        &pool_err(
            "AveragePool",
            &["y"],
            vec![
                attr_is("kernel_shape", &[3, 3]),
                attr_is("strides", &[2, 2]),
                attr_is("pads", &[1, 1, 1, 1]),
                attr_i("ceil_mode", 1),
                attr_i("count_include_pad", 1),
            ],
        ),
        &["pool7", "ceil_mode"],
    );
}

#[test]
fn global_average_pool_and_reduce_mean() {
    let g = Builder::new(13, &[-1, 3, 4, 4])
        .node(node("GlobalAveragePool", "gap", &["x"], &["y"], vec![]))
        .ok();
    assert_eq!(
        (frozen(&g, 0), out_shape(&g)),
        (&FrozenOp::GlobalAveragePool, vec![3, 1, 1])
    );

    let g = Builder::new(13, &[-1, 3, 4, 4])
        .node(node(
            "ReduceMean",
            "rm",
            &["x"],
            &["y"],
            vec![attr_is("axes", &[-1, 2]), attr_i("keepdims", 0)],
        ))
        .ok();
    assert_eq!(
        (frozen(&g, 0), out_shape(&g)),
        (&FrozenOp::GlobalAveragePool, vec![3])
    );

    let g = Builder::new(18, &[-1, 3, 8])
        .init(i64t("axes", &[1], vec![2]))
        .node(node("ReduceMean", "rm", &["x", "axes"], &["y"], vec![]))
        .ok();
    assert_eq!(out_shape(&g), vec![3, 1]);

    let err = Builder::new(13, &[-1, 3, 4, 4])
        .node(node(
            "ReduceMean",
            "rm5",
            &["x"],
            &["y"],
            vec![attr_is("axes", &[1])],
        ))
        .err();
    assert_contains(&err, &["rm5", "spatial axes"]);
}
