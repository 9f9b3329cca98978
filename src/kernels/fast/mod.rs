//! Fast kernels: the same results as the [reference](super::reference) kernels, in fewer
//! instructions.
//!
//! The engine calls these for the layers they cover; each falls back to its reference kernel for
//! parameters it does not take, so every model runs. The results are byte-identical: integer
//! sums do not depend on their order, and the output stage computes the reference's
//! requantization ([`requant`]). Property tests run each fast kernel against its reference over
//! random shapes, strides, dilations, pads, groups, zero points and element types, on the host
//! (where [`simd`] is portable Rust) and on the Cortex-M cores under QEMU (whole models,
//! byte-identical to the host).
//!
//! On Armv7E-M (Cortex-M4, M7) and, with the `dsp` feature, Armv8-M Mainline, [`simd`] is the
//! DSP extension: two 16-bit products per instruction (SMLAD) and two sign extensions per
//! instruction (SXTB16). It and the x86_64 f32 kernels (`kernels::x86`) are this crate's only
//! `unsafe` code.

pub mod conv;
pub mod conv_f32;
pub mod dense;
pub mod dense_f32;
pub mod depthwise;
pub mod elementwise;
pub mod requant;
pub mod simd;
