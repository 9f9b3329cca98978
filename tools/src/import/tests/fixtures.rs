//! The committed PyTorch fixtures.

use super::*;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// `"kind"` of each fixture in `manifest.json` (a tiny scan; the manifest is our own file).
fn fixture_kinds() -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(fixtures_dir().join("manifest.json")) else {
        return vec![];
    };
    let field = |chunk: &str, key: &str| -> Option<String> {
        let at = chunk.find(&format!("\"{key}\""))?;
        let rest = &chunk[at + key.len() + 2..];
        let start = rest.find('"')? + 1;
        let end = start + rest[start..].find('"')?;
        Some(rest[start..end].to_string())
    };
    text.split("\"name\"")
        .skip(1)
        .filter_map(|chunk| {
            let chunk = format!("\"name\"{chunk}");
            Some((field(&chunk, "name")?, field(&chunk, "kind")?))
        })
        .collect()
}

#[test]
fn committed_fixtures_import_or_are_refused() {
    let kinds = fixture_kinds();
    if kinds.is_empty() {
        eprintln!("no fixtures in {}; skipping", fixtures_dir().display());
        return;
    }
    for (name, kind) in kinds {
        let path = fixtures_dir().join(&name).join("model.onnx");
        let result = import_file(&path);
        match kind.as_str() {
            "training_mode" => {
                let err = format!("{:#}", result.expect_err(&name));
                assert_contains(
                    &err,
                    &[
                        "training",
                        "BatchNormalization",
                        "model.eval()",
                        "TrainingMode.EVAL",
                    ],
                );
                eprintln!("{name}: refused as expected");
            }
            _ => {
                let g = result.unwrap_or_else(|e| panic!("fixture {name} ({kind}): {e:#}"));
                let bn = g
                    .nodes
                    .iter()
                    .filter(|n| matches!(n.op, Op::BatchNorm(_)))
                    .count();
                let error = reference_error(&g, &fixtures_dir().join(&name));
                eprintln!(
                    "{name}: opset {}, {} nodes ({bn} BatchNorm), input {:?} -> output {:?}, max |ref - ort| / max |ort| = {error:.2e}",
                    g.opset,
                    g.nodes.len(),
                    g.values[g.input].shape,
                    g.values[g.output].shape
                );
                assert!(error < 1e-4, "{name}: the imported graph computes something else than onnxruntime ({error:e})");
            }
        }
    }
}

/// Largest difference between the reference interpreter on the imported graph and the committed
/// onnxruntime outputs, relative to the largest output magnitude: the import means what ONNX means.
fn reference_error(g: &ImportedGraph, dir: &Path) -> f64 {
    let input = crate::io::read_npy(&dir.join("input.npy")).unwrap();
    let expected = crate::io::read_npy(&dir.join("expected.npy")).unwrap();
    assert_eq!(input.samples(), expected.samples());
    let (mut worst, mut scale) = (0f64, 0f64);
    for i in 0..input.samples() {
        let got = crate::ir::eval::run(g, input.sample(i)).unwrap();
        let want = expected.sample(i);
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want) {
            worst = worst.max((*a as f64 - *b as f64).abs());
            scale = scale.max((*b as f64).abs());
        }
    }
    worst / scale.max(1e-12)
}

/// Nested messages (here: a sequence of sequences of ... as the input type) make `onnx-rs`
/// recurse; the import thread's stack must hold a file's worth of nesting without overflowing.
#[test]
fn deeply_nested_messages_do_not_overflow_the_stack() {
    fn varint(mut v: usize, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn varint_len(v: usize) -> usize {
        let mut n = 1;
        let mut v = v >> 7;
        while v > 0 {
            n += 1;
            v >>= 7;
        }
        n
    }
    let depth: usize = std::env::var("ICEFOLD_NEST_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(100_000);
    // Hand-built protobuf: TypeProto { sequence_type (4): SequenceTypeProto { elem_type (1): TypeProto ... } }.
    // Sizes bottom-up, then the headers outermost first (linear time).
    let mut sizes = vec![0usize]; // TypeProto sizes, innermost (empty) first
    let mut seq_sizes = vec![];
    for k in 0..depth {
        let seq = 1 + varint_len(sizes[k]) + sizes[k];
        seq_sizes.push(seq);
        sizes.push(1 + varint_len(seq) + seq);
    }
    let mut ty = Vec::with_capacity(sizes[depth]);
    for k in (0..depth).rev() {
        ty.push(4 << 3 | 2);
        varint(seq_sizes[k], &mut ty);
        ty.push(1 << 3 | 2);
        varint(sizes[k], &mut ty);
    }
    let wrap = |field: u8, inner: &[u8]| {
        let mut v = vec![(field << 3) | 2];
        varint(inner.len(), &mut v);
        v.extend_from_slice(inner);
        v
    };
    let value_info = [wrap(1, b"x"), wrap(2, &ty)].concat();
    let model = [vec![0x08, 0x08], wrap(7, &wrap(11, &value_info))].concat(); // ir_version; graph.input
    eprintln!("nested model: {} bytes, depth {depth}", model.len());
    assert!(import_bytes(&model, None).is_err());
}
