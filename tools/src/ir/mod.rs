//! The host IR: `graph` (the imported and the frozen graph) and `eval` (its f64 reference
//! interpreter, used to check every step).

pub mod eval;
mod eval_axis;
pub mod graph;
