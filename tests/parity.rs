//! Parity on the desktop: every PyTorch fixture, converted and run by the real runtime, against
//! onnxruntime's outputs; and the folded graph against the unfolded one on the same reference
//! interpreter, so that a folding bug cannot hide behind an import bug (or the reverse).
//!
//! `cargo test -p icefold-tests --test parity -- --nocapture` prints the table.

use icefold_tests::{f32_parity, manifest, Fixture};
use icefold_tool::pipeline::{self, ConvertOptions};

fn check_parity(f: &Fixture) -> anyhow::Result<String> {
    let p = f32_parity(f)?;
    let (d, fold, import) = (&p.runtime, &p.fold, &p.import);
    let bn_folded = p.converted.fold.folds.len();
    let line = format!(
        "{:<26} op{:<3} BN {:>2}/{:<2} runtime-vs-ORT max-abs {:>9.2e} rel-L2 {:>9.2e} top-1 {}/{} | folded-vs-unfolded rel-L2 {:>9.2e} | unfolded-vs-ORT rel-L2 {:>9.2e}",
        f.name, f.opset, bn_folded, f.bn_nodes, d.max_abs, d.rel_l2, d.top1_agree, d.samples, fold.rel_l2, import.rel_l2
    );
    anyhow::ensure!(
        bn_folded >= f.bn_nodes,
        "{} BatchNorm nodes in the file, {} folded",
        f.bn_nodes,
        bn_folded
    );
    p.check(f, &line)?;
    Ok(line)
}

#[test]
fn every_fixture_matches_onnxruntime_and_its_unfolded_graph() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in manifest().iter().filter(|f| f.kind == "parity") {
        match check_parity(f) {
            Ok(line) => println!("{line}"),
            Err(e) => failures.push(format!("{}: {e:#}", f.name)),
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "expected the full fixture set, found {checked} parity fixtures"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} fixtures failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn training_mode_exports_are_refused_with_a_fix() {
    let refused: Vec<Fixture> = manifest()
        .into_iter()
        .filter(|f| f.kind == "training_mode")
        .collect();
    assert!(
        refused.len() >= 2,
        "expected training-mode fixtures at opsets 13 and 17"
    );
    for f in refused {
        let err = match pipeline::convert(&f.model(), &ConvertOptions::default()) {
            Ok(_) => panic!("{}: a training-mode export was accepted", f.name),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("training"), "{}: {err}", f.name);
        assert!(
            err.contains("eval"),
            "{}: the message must say how to export in eval mode: {err}",
            f.name
        );
        assert!(
            err.contains("node \""),
            "{}: the message must name the node: {err}",
            f.name
        );
        println!(
            "{:<16} refused: {}",
            f.name,
            err.lines().next().unwrap_or("")
        );
    }
}
