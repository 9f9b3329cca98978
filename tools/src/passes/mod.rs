//! Graph passes.

pub mod fold_batchnorm;
