//! Shared helpers for the integration tests: fixture discovery and loading.
//!
//! Fixtures are made by `tools/fixtures/make_fixtures.py` (PyTorch + onnxruntime) and committed,
//! so tests need no Python. `ICEFOLD_FIXTURES=/some/dir` points the tests at another set (e.g.
//! held-out models made with another seed).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use icefold_tool::io::{self, Array};
use serde::Deserialize;

/// One entry of `manifest.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Fixture {
    /// Directory name.
    pub name: String,
    /// "parity" (must convert and match), "training_mode" (must be refused) or "bn_stats"
    /// (BatchNorm statistics checks: stale or healthy statistics, see tests/diagnose.rs).
    pub kind: String,
    /// Opset written in the file.
    pub opset: i64,
    /// How it was exported.
    pub exporter: String,
    /// BatchNormalization nodes in the file.
    pub bn_nodes: usize,
    /// Whether argmax of the output is meaningful.
    #[serde(default)]
    pub top1: bool,
    /// onnxruntime's own int8 (static QDQ, per-channel, MinMax) vs the f32 reference: relative L2.
    #[serde(default)]
    pub ort_int8_rel_l2: Option<f64>,
    /// onnxruntime's own int8: samples whose argmax matches the f32 reference.
    #[serde(default)]
    pub ort_int8_top1_agree: Option<usize>,
    /// kind "bn_stats": the BatchNormalization nodes whose running statistics are stale (never
    /// updated); the diagnosis must name exactly these.
    #[serde(default)]
    pub stale_bn_nodes: Vec<String>,
    /// kind "bn_stats": the BatchNormalization nodes with healthy statistics.
    #[serde(default)]
    pub healthy_bn_nodes: Vec<String>,
    /// The directory that holds the fixture's directory (`None`: [`fixtures_dir`]).
    #[serde(skip)]
    pub base: Option<PathBuf>,
}

/// The fixture directory.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("ICEFOLD_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
    }
}

/// Every fixture listed in the manifest.
pub fn manifest() -> Vec<Fixture> {
    read_manifest(&fixtures_dir())
}

/// The Keras (tf2onnx) fixtures made by `tools/fixtures/make_keras_fixtures.py`:
/// `tests/fixtures/keras`, or with `ICEFOLD_FIXTURES=D`, `D/keras` when it has a manifest and
/// otherwise `D` itself (a held-out set made with `make_keras_fixtures.py --seed 3 --out D`).
pub fn keras_fixtures_dir() -> PathBuf {
    let dir = fixtures_dir();
    let nested = dir.join("keras");
    if std::env::var_os("ICEFOLD_FIXTURES").is_none() || nested.join("manifest.json").exists() {
        nested
    } else {
        dir
    }
}

/// Every Keras fixture listed in [`keras_fixtures_dir`]'s manifest.
pub fn keras_manifest() -> Vec<Fixture> {
    let dir = keras_fixtures_dir();
    let mut fixtures = read_manifest(&dir);
    for f in &mut fixtures {
        f.base = Some(dir.clone());
    }
    fixtures
}

/// The Keras fixtures that are not already in [`manifest`] (empty when `ICEFOLD_FIXTURES` points
/// at a Keras set itself), for tests that run over both sets.
pub fn extra_keras_fixtures() -> Vec<Fixture> {
    if keras_fixtures_dir() == fixtures_dir() {
        Vec::new()
    } else {
        keras_manifest()
    }
}

/// The architecture-op fixtures made by `tools/fixtures/make_block_fixtures.py`
/// (`tests/fixtures/blocks`, or `D/blocks` with `ICEFOLD_FIXTURES=D`).
pub fn arch_manifest() -> Vec<Fixture> {
    let dir = fixtures_dir().join("blocks");
    let mut fixtures = read_manifest(&dir);
    for f in &mut fixtures {
        f.base = Some(dir.clone());
    }
    fixtures
}

fn read_manifest(dir: &Path) -> Vec<Fixture> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad {}: {e}", path.display()))
}

impl Fixture {
    /// Directory of this fixture.
    pub fn dir(&self) -> PathBuf {
        self.base
            .clone()
            .unwrap_or_else(fixtures_dir)
            .join(&self.name)
    }
    /// The ONNX model.
    pub fn model(&self) -> PathBuf {
        self.dir().join("model.onnx")
    }
    /// Load one of its arrays (`input`, `expected`, `calib`, `ort_int8`).
    pub fn array(&self, what: &str) -> Result<Array> {
        let p = self.dir().join(format!("{what}.npy"));
        io::read_npy(&p).with_context(|| format!("fixture {}", self.name))
    }
}

/// The f32 acceptance bar against onnxruntime, for PyTorch and Keras fixtures alike (issues #2 and
/// #7): PyTorch and onnxruntime themselves differ by up to 1.3e-5 relative L2 on MobileNetV1.
pub const MAX_REL_L2: f64 = 5e-5;
/// Largest absolute difference allowed against onnxruntime.
pub const MAX_ABS: f64 = 2e-4;
/// Folded vs unfolded on the same f64-accumulating interpreter: only the single f32 rounding of the
/// folded weights differs, which stays far below the onnxruntime bar.
pub const FOLD_MAX_REL_L2: f64 = 1e-5;

/// A fixture converted to f32 and measured three ways.
pub struct F32Parity {
    /// The conversion.
    pub converted: icefold_tool::pipeline::Converted,
    /// The test inputs (the ONNX model's own input shape).
    pub input: Array,
    /// The runtime on the blob against onnxruntime's outputs.
    pub runtime: icefold_tool::host::Diff,
    /// The folded graph against the unfolded one, both on the reference interpreter.
    pub fold: icefold_tool::host::Diff,
    /// The unfolded graph on the reference interpreter against onnxruntime (import alone).
    pub import: icefold_tool::host::Diff,
}

/// Converts `f`, runs the blob on the runtime and both graphs on the reference interpreter, and
/// compares them with onnxruntime's outputs.
pub fn f32_parity(f: &Fixture) -> Result<F32Parity> {
    use icefold_tool::pipeline::{self, ConvertOptions};
    use icefold_tool::{host, ir::eval, lower::blob::AlignedBytes};
    let converted = pipeline::convert(&f.model(), &ConvertOptions::default())?;
    let input = f.array("input")?;
    let want = f.array("expected")?;
    let blob = AlignedBytes::new(&converted.blob);
    let model = host::load(blob.as_slice())?;
    // The input is the ONNX model's own: run_f32 refuses any other shape.
    let got = host::run_f32(&model, &input)?;
    anyhow::ensure!(
        got.shape == want.shape,
        "output shape {:?}, expected {:?}",
        got.shape,
        want.shape
    );
    let runtime = host::diff(&got, &want)?;
    let (mut unfolded, mut folded) = (Vec::new(), Vec::new());
    for i in 0..input.samples() {
        unfolded.extend(eval::run(&converted.imported, input.sample(i))?);
        folded.extend(eval::run(&converted.frozen, input.sample(i))?);
    }
    let as_array = |data| Array {
        shape: got.shape.clone(),
        data,
    };
    let (unfolded, folded) = (as_array(unfolded), as_array(folded));
    Ok(F32Parity {
        fold: host::diff(&folded, &unfolded)?,
        import: host::diff(&unfolded, &want)?,
        converted,
        input,
        runtime,
    })
}

impl F32Parity {
    /// The bar: runtime within [`MAX_REL_L2`] and [`MAX_ABS`] of onnxruntime, the same top-1 where
    /// the fixture has a class output, folding within [`FOLD_MAX_REL_L2`]. `line` (the caller's
    /// report of this fixture) goes into the error.
    pub fn check(&self, f: &Fixture, line: &str) -> Result<()> {
        let d = &self.runtime;
        anyhow::ensure!(
            d.rel_l2 <= MAX_REL_L2 && d.max_abs <= MAX_ABS,
            "runtime vs onnxruntime too far: {line}"
        );
        if f.top1 {
            anyhow::ensure!(
                d.top1_agree == d.samples,
                "top-1 differs from onnxruntime: {line}"
            );
        }
        anyhow::ensure!(
            self.fold.rel_l2 <= FOLD_MAX_REL_L2,
            "folding changed the function: {line}"
        );
        Ok(())
    }
}

/// The `icefold` binary of the same build as the running test, if it has been built
/// (`cargo build --release -p icefold-tool`, or the first half of the README's test command;
/// `cargo test` alone does not build another package's binary). Tests that need it skip with a
/// note without it, unless `ICEFOLD_REQUIRE_CLI` is set (CI sets it): then a missing binary fails
/// them instead of letting them pass unchecked.
pub fn cli_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/icefold
    let bin = exe
        .parent()?
        .parent()?
        .join(format!("icefold{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() && std::env::var_os("ICEFOLD_REQUIRE_CLI").is_some() {
        panic!(
            "ICEFOLD_REQUIRE_CLI is set but {} is not built: cargo build --release -p icefold-tool",
            bin.display()
        );
    }
    bin.is_file().then_some(bin)
}
