//! Graph passes.

pub mod fold_batchnorm;
pub mod recalibrate_bn;
