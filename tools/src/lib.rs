//! icefold host tool: import ONNX, check and fold BatchNorm, lower to the runtime format, verify.
//!
//! Pipeline: `import` (ONNX file → `ir::graph::ImportedGraph`) → `passes::fold_batchnorm`
//! (→ `ir::graph::FrozenGraph`) → `lower` (→ runtime layers, arena plan) → `quantize` (int8,
//! optional) → `lower::blob` (blob bytes). `ir::eval` is an f64 reference interpreter of both
//! graph kinds, used to check every step; `bn_check` checks BatchNorm statistics against data.
//! `pipeline::convert` runs the whole pipeline. See `docs/ARCHITECTURE.md` for the map.

pub mod bn_check;
pub mod demo;
pub mod describe;
pub mod drift;
pub mod host;
pub mod import;
pub mod io;
pub mod ir;
pub mod lower;
pub mod mcu;
pub mod passes;
pub mod pipeline;
pub mod quantize;
pub mod signing;
pub mod train;
