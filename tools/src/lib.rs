//! icefold host tool: import ONNX, check and fold BatchNorm, lower to the runtime format, verify.
//!
//! Pipeline: `onnx` (file → `graph::ImportedGraph`) → `passes::fold_batchnorm`
//! (→ `graph::FrozenGraph`) → `lower` (→ runtime layers, arena plan) → `emit` (blob bytes).
//! `eval` is an f64 reference interpreter of both graph kinds, used to check every step.

pub mod calibrate;
pub mod convert;
pub mod demo;
pub mod describe;
pub mod diagnose;
pub mod emit;
pub mod eval;
pub mod graph;
pub mod host;
pub mod io;
pub mod limits;
pub mod lower;
pub mod mcu;
pub mod onnx;
pub mod passes;
pub mod plan;
pub mod quantize;
pub mod rustgen;
pub mod train;
