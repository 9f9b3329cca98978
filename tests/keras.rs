//! Keras models through tf2onnx (issue #7): every fixture of `tests/fixtures/keras` (made by
//! `tools/fixtures/make_keras_fixtures.py`: tf2onnx's default export, which fuses Conv+BN, and
//! `tools/export_keras.py --keep-bn`, which keeps the BN nodes; opsets 13 and 17) converted and run
//! by the real runtime on NHWC inputs, against onnxruntime.
//!
//! `ICEFOLD_FIXTURES=/tmp/keras3` runs the same checks on a held-out set
//! (`make_keras_fixtures.py --seed 3 --out /tmp/keras3`).
//! `cargo test -p icefold-tests --release --test keras -- --nocapture` prints the table.

use icefold_tests::{f32_parity, keras_manifest, Fixture};
use icefold_tool::bn_check::diagnose::{self, DiagnoseOptions, Outcome};
use icefold_tool::import;
use icefold_tool::ir::graph::Op;
use icefold_tool::pipeline::{self, ConvertOptions};

fn parity_fixtures() -> Vec<Fixture> {
    let all = keras_manifest();
    assert!(
        all.len() >= 10,
        "expected the full Keras fixture set, found {}",
        all.len()
    );
    all.into_iter().filter(|f| f.kind == "parity").collect()
}

fn check_f32(f: &Fixture) -> anyhow::Result<String> {
    let p = f32_parity(f)?;
    let (d, fold) = (&p.runtime, &p.fold);
    let line = format!(
        "{:<36} op{:<3} {:<16} in {:?} BN {:>2} folded {:>2} | rel-L2 {:>8.2e} max-abs {:>8.2e} top-1 {}/{} | folded-vs-unfolded {:>8.2e}",
        f.name,
        f.opset,
        f.exporter,
        &p.input.shape[1..],
        f.bn_nodes,
        p.converted.fold.folds.len(),
        d.rel_l2,
        d.max_abs,
        d.top1_agree,
        d.samples,
        fold.rel_l2
    );
    p.check(f, &line)?;
    Ok(line)
}

#[test]
fn every_keras_export_matches_onnxruntime_on_nhwc_inputs() {
    let mut failures = Vec::new();
    let fixtures = parity_fixtures();
    for f in &fixtures {
        match check_f32(f) {
            Ok(line) => println!("{line}"),
            Err(e) => failures.push(format!("{}: {e:#}", f.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} Keras fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

/// Both export forms are present, the kept-BN exports have their BatchNorm nodes after import
/// (with Keras' epsilon), and folding leaves none: every BN node is accounted for in the report.
#[test]
fn kept_bn_exports_keep_their_batchnorm_and_it_folds() {
    let fixtures = parity_fixtures();
    let kept: Vec<&Fixture> = fixtures
        .iter()
        .filter(|f| f.exporter == "tf2onnx-keep-bn")
        .collect();
    let fused = fixtures
        .iter()
        .filter(|f| f.exporter == "tf2onnx-default")
        .count();
    assert!(
        kept.len() >= 4 && fused >= 4,
        "expected both tf2onnx export forms ({} kept-BN, {fused} default)",
        kept.len()
    );
    for &opset in &[13, 17] {
        for exporter in ["tf2onnx-keep-bn", "tf2onnx-default"] {
            assert!(
                fixtures
                    .iter()
                    .any(|f| f.opset == opset && f.exporter == exporter),
                "no {exporter} fixture at opset {opset}"
            );
        }
    }
    for f in &fixtures {
        let g = import::import_file(&f.model()).unwrap_or_else(|e| panic!("{}: {e:#}", f.name));
        let bns: Vec<f32> = g
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::BatchNorm(bn) => Some(bn.epsilon),
                _ => None,
            })
            .collect();
        assert_eq!(
            bns.len(),
            f.bn_nodes,
            "{}: BatchNorm nodes after import",
            f.name
        );
        assert!(
            bns.iter().all(|&eps| (eps - 1e-3).abs() < 1e-9),
            "{}: Keras BN epsilon is 1e-3, got {bns:?}",
            f.name
        );
        if f.exporter == "tf2onnx-keep-bn" {
            assert!(f.bn_nodes > 0, "{}: a kept-BN export without BN", f.name);
        }
        let c = pipeline::convert(g, &ConvertOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e:#}", f.name));
        let folded_bns = c
            .fold
            .folds
            .iter()
            .filter(|r| r.bn.op_type == "BatchNormalization")
            .map(|r| r.bn.name.clone())
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(
            folded_bns.len(),
            f.bn_nodes,
            "{}: every BatchNorm node is folded (or kept as a frozen affine): {}",
            f.name,
            c.fold
        );
    }
}

/// `icefold diagnose` on Keras exports: a kept-BN export of a healthy model (converged moving
/// statistics) is healthy, BN by BN; tf2onnx's default export of a conv net has no BN left to
/// check, and the diagnosis says so rather than passing it; the BNs tf2onnx leaves in the default
/// export (MobileNet's at 1x1) are not called stale.
#[test]
fn diagnose_passes_kept_bn_exports_and_reports_fused_ones() {
    let opts = DiagnoseOptions {
        as_run: false,
        ..DiagnoseOptions::default()
    };
    let (mut healthy, mut nothing, mut partly_fused) = (0, 0, 0);
    for f in parity_fixtures() {
        let g = import::import_file(&f.model()).unwrap_or_else(|e| panic!("{}: {e:#}", f.name));
        let calib = f.array("calib").unwrap();
        let d =
            diagnose::diagnose(&g, &calib, &opts).unwrap_or_else(|e| panic!("{}: {e:#}", f.name));
        let outcome = d.outcome();
        println!(
            "{:<36} {:<16} BN {:>2}: {outcome:?}",
            f.name, f.exporter, f.bn_nodes
        );
        if f.bn_nodes == 0 {
            assert_eq!(outcome, Outcome::NoBatchNorm, "{}", f.name);
            nothing += 1;
        } else if f.exporter == "tf2onnx-keep-bn" {
            assert_eq!(d.bns.len(), f.bn_nodes, "{}", f.name);
            assert_eq!(outcome, Outcome::Healthy, "{}:\n{}", f.name, d.table());
            healthy += 1;
        } else {
            // The BNs tf2onnx left unfused (ops_mix's on the input and after a SeparableConv2D;
            // MobileNet's at 1x1 spatial size, where its transpose optimizer puts a Reshape
            // between Conv and BN) are judged with the fused layers upstream running on their
            // stored statistics, baked into the weights, instead of population statistics. With converged moving statistics (as after a finished
            // training run) that is still a healthy model, and `convert --calib` must not refuse
            // it: not stale. Measured healthy on seeds 0, 3, 7 (docs/KERAS.md), but only "not
            // stale" is the issue's requirement, so suspicious is tolerated.
            assert_eq!(d.bns.len(), f.bn_nodes, "{}", f.name);
            assert_ne!(
                outcome,
                Outcome::Stale,
                "{}: a healthy model's default export is called stale:\n{}",
                f.name,
                d.table()
            );
            partly_fused += 1;
        }
    }
    assert!(
        healthy >= 4 && nothing >= 2 && partly_fused >= 1,
        "{healthy} kept-BN healthy, {nothing} fused, {partly_fused} partly fused"
    );
}
