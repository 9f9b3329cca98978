//! icefold runtime.
#![no_std]
#![deny(unsafe_code)]

pub mod format;
pub mod emit;
pub mod engine;
pub mod kernels;
pub mod model;

pub use engine::{Observer, RunError};
pub use model::{Aligned, LoadError, Model};

#[cfg(test)]
mod testutil;
