//! Compute kernels.
//!
//! [`reference`](mod@reference) holds the plain f32 kernels that define the results. Optimized kernels (Cortex-M
//! DSP, host SIMD) will live next to it in their own modules with the same signatures, be chosen at
//! compile time, fall back to the reference for parameters they do not cover, and be tested against
//! it with the same tests.
//!
//! Kernel contract: activations are row-major `[H, W, C]` f32 slices; dimensions are passed as
//! `[usize; 3]`; window parameters are [`geometry`] structs that the engine builds from the
//! records (kernels do not read the format). The engine calls kernels only with operands
//! that `Model::new_checked` validated (sizes consistent, output disjoint from inputs). Called with
//! inconsistent sizes (but dimensions whose products fit in `usize`) a kernel computes something
//! unspecified but does not panic or index out of bounds: every data access goes through
//! iterators, `chunks_exact` or `get`.

pub mod fast;
pub mod fused;
pub mod geometry;
pub mod reference;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use geometry::{Activation, ConvGeometry, PoolGeometry, PoolKind};

#[cfg(test)]
mod view_tests;
