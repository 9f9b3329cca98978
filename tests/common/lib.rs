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
    /// "parity" (must convert and match) or "training_mode" (must be refused).
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
    let path = fixtures_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad {}: {e}", path.display()))
}

impl Fixture {
    /// Directory of this fixture.
    pub fn dir(&self) -> PathBuf {
        fixtures_dir().join(&self.name)
    }
    /// The ONNX model.
    pub fn model(&self) -> PathBuf {
        self.dir().join("model.onnx")
    }
    /// Load one of its arrays (`input`, `expected`, `calib`).
    pub fn array(&self, what: &str) -> Result<Array> {
        let p = self.dir().join(format!("{what}.npy"));
        io::read_npy(&p).with_context(|| format!("fixture {}", self.name))
    }
}
