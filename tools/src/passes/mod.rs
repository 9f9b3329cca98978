//! Graph passes: rewrites that keep a model's function.
//!
//! On the imported graph: `fold_batchnorm` (→ frozen graph), `recalibrate_bn`. On the frozen
//! graph: `fuse_pad`, `channel_shuffle`. On the lowered model: `global_pool_into_dense`.

pub mod channel_shuffle;
pub mod fold_batchnorm;
pub mod fuse_pad;
pub mod global_pool_into_dense;
pub mod recalibrate_bn;
