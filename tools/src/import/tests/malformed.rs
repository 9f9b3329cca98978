//! Malformed files, absurd attributes, odd tensor encodings and external data.

use super::*;

#[test]
fn garbage_and_truncated_files_are_errors() {
    assert_contains(
        &format!("{:#}", import(&[], None).unwrap_err()),
        &["no opset"],
    );
    assert!(import_bytes(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", None).is_err());
    assert!(import_bytes(b"PK\x03\x04 this is a zip file", None).is_err());
    let bytes = Builder::new(13, &[-1, 2, 4, 4])
        .init(ramp("w", &[3, 2, 3, 3]))
        .node(node("Conv", "c", &["x", "w"], &["y"], vec![]))
        .bytes();
    for cut in [1, 7, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            import_bytes(&bytes[..cut], None).is_err(),
            "truncated at {cut}"
        );
    }
}

/// Deterministic mutations of a valid model: every result must be `Ok` or `Err`, never a panic.
/// Calls `import` on this thread so that a panic fails the test instead of becoming an error.
#[test]
fn mutated_models_never_panic() {
    let b = bn_params(Builder::new(13, &[-1, 2, 5, 5]), 4)
        .init(ramp("w", &[4, 2, 3, 3]))
        .init(i64t("t", &[2], vec![0, -1]))
        .node(node(
            "Conv",
            "c",
            &["x", "w"],
            &["a"],
            vec![attr_is("pads", &[1, 1, 1, 1]), attr_is("strides", &[2, 2])],
        ))
        .node(node(
            "BatchNormalization",
            "bn",
            &["a", "g", "be", "m", "v"],
            &["b"],
            vec![],
        ))
        .node(node(
            "MaxPool",
            "mp",
            &["b"],
            &["c"],
            vec![attr_is("kernel_shape", &[2, 2]), attr_i("ceil_mode", 1)],
        ))
        .node(node("Reshape", "rs", &["c", "t"], &["y"], vec![]));
    let bytes = b.bytes();
    b.ok();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut m = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % m.len() as u64) as usize;
            m[i] = match next() % 3 {
                0 => next() as u8,
                1 => m[i] ^ (1 << (next() % 8)),
                _ => [0, 1, 0x7f, 0x80, 0xff][(next() % 5) as usize],
            };
        }
        let _ = import(&m, None);
    }
}

#[test]
fn absurd_attribute_values_are_errors() {
    let conv = |attrs| {
        Builder::new(13, &[-1, 1, 4, 4])
            .init(ramp("w", &[1, 1, 2, 2]))
            .node(node("Conv", "c", &["x", "w"], &["y"], attrs))
            .err()
    };
    assert!(conv(vec![attr_is("pads", &[i64::MAX, 0, 0, 0])]).contains("large"));
    assert!(conv(vec![attr_is("strides", &[i64::MIN, 1])]).contains("out of range"));
    assert!(conv(vec![attr_i("group", i64::MAX)]).contains("group"));
    let huge = Builder::new(13, &[-1, 4])
        .init(i64t("s", &[3], vec![1 << 40, 1 << 40, 1 << 40]))
        .node(node("ConstantOfShape", "cos", &["s"], &["z"], vec![]))
        .node(node("Reshape", "rs", &["x", "z"], &["y"], vec![]))
        .err();
    assert!(huge.contains("too large"), "{huge}");
    let slice = Builder::new(13, &[-1, 4])
        .node(node("Shape", "sh", &["x"], &["s"], vec![]))
        .init(i64t("a", &[1], vec![i64::MIN]))
        .init(i64t("b", &[1], vec![i64::MAX]))
        .init(i64t("st", &[1], vec![i64::MIN]))
        .init(i64t("ax", &[1], vec![0]))
        .node(node(
            "Slice",
            "sl",
            &["s", "b", "a", "ax", "st"],
            &["t"],
            vec![],
        ))
        .node(node("Reshape", "rs", &["x", "t"], &["y"], vec![]))
        .err();
    assert!(slice.contains("batch"), "{slice}");
}

#[test]
fn raw_data_of_the_wrong_length_is_an_error() {
    let raw: &'static [u8] = &[0u8; 7];
    let err = Builder::new(13, &[-1, 2])
        .init(TensorProto::from_raw("w", vec![2, 1], DataType::Float, raw))
        .node(node("Gemm", "fc", &["x", "w"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["initializer \"w\"", "7 bytes"]);
    let err = Builder::new(13, &[-1, 2])
        .init(f32t("w", &[2, 2], vec![1.0, 2.0, 3.0]))
        .node(node("Gemm", "fc", &["x", "w"], &["y"], vec![]))
        .err();
    assert_contains(&err, &["initializer \"w\"", "holds 3 values"]);
}

#[test]
fn float16_and_double_constants() {
    // f16 1.0 = 0x3c00, -2.0 = 0xc000
    let raw: &'static [u8] = &[0x00, 0x3c, 0x00, 0xc0];
    let g = Builder::new(13, &[-1, 2])
        .init(TensorProto::from_raw("c", vec![2], DataType::Float16, raw))
        .init(TensorProto::from_f64("d", vec![], vec![0.5]))
        .node(node("Mul", "m", &["x", "c"], &["a"], vec![]))
        .node(node("Add", "s", &["a", "d"], &["y"], vec![]))
        .ok();
    let FrozenOp::Affine(a) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(a.scale, vec![1.0, -2.0]);
    let FrozenOp::Affine(a) = frozen(&g, 1) else {
        panic!()
    };
    assert_eq!(a.shift, vec![0.5]);
}

// ---- external data ----

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("icefold-onnx-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn external_data_is_read_next_to_the_model() {
    let dir = temp_dir("ext");
    let weights: Vec<u8> = [9.0f32, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    std::fs::write(dir.join("model.onnx.data"), &weights).unwrap();
    let external = |location: &'static str, offset: &'static str| {
        TensorProto::from_raw("w", vec![2, 3], DataType::Float, &[])
            .with_data_location(DataLocation::External)
            .with_external_data(vec![
                StringStringEntry {
                    key: "location",
                    value: location,
                },
                StringStringEntry {
                    key: "offset",
                    value: offset,
                },
                StringStringEntry {
                    key: "length",
                    value: "24",
                },
            ])
    };
    let model = |location, offset| {
        Builder::new(18, &[-1, 3])
            .init(external(location, offset))
            .node(node(
                "Gemm",
                "fc",
                &["x", "w"],
                &["y"],
                vec![attr_i("transB", 1)],
            ))
            .bytes()
    };
    std::fs::write(dir.join("model.onnx"), model("model.onnx.data", "4")).unwrap();
    let g = import_file(&dir.join("model.onnx")).unwrap();
    let FrozenOp::Dense(d) = frozen(&g, 0) else {
        panic!()
    };
    assert_eq!(d.weight.data, vec![1., 2., 3., 4., 5., 6.]);

    let err = format!(
        "{:#}",
        import_bytes(&model("model.onnx.data", "0"), None).unwrap_err()
    );
    assert_contains(&err, &["external file", "import_file"]);
    let err = format!(
        "{:#}",
        import_bytes(&model("model.onnx.data", "8"), Some(&dir)).unwrap_err()
    );
    assert_contains(&err, &["past the end"]);
    let err = format!(
        "{:#}",
        import_bytes(&model("missing.data", "0"), Some(&dir)).unwrap_err()
    );
    assert_contains(&err, &["missing.data", "next to the .onnx file"]);
    let err = format!(
        "{:#}",
        import_bytes(&model("../etc/passwd", "0"), Some(&dir)).unwrap_err()
    );
    assert_contains(&err, &["inside the model's directory"]);
    let err = format!("{:#}", import_file(&dir.join("nope.onnx")).unwrap_err());
    assert_contains(&err, &["nope.onnx"]);
    let _ = std::fs::remove_dir_all(&dir);
}
