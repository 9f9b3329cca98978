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
//!
//! With feature `small-code` on any target but x86_64 (`cfg(icefold_reference_only)`, set by
//! build.rs) every entry point here hands its layer to the reference kernel before anything
//! else, a constant branch, so none of the fast code is linked.

pub mod conv;
pub mod conv_f32;
pub mod dense;
pub mod dense_f32;
pub mod depthwise;
pub mod elementwise;
pub mod pool;
pub mod requant;
pub mod simd;

use crate::kernels::reference::int8::FromWide;
use requant::Bounds;

/// An int8 or int16 output: loops whose work does not depend on the output's element type take
/// this and match on it only where they store, so a firmware whose model writes both types links
/// one copy of them (a copy of the four-channel convolution is about 9 KB on a Cortex-M4F).
pub enum Outs<'a> {
    /// int8 outputs.
    I8(&'a mut [i8]),
    /// int16 outputs.
    I16(&'a mut [i16]),
}

/// The output element types of the fast integer kernels (int8 and int16).
pub trait Store: FromWide {
    /// The slice as an [`Outs`].
    fn outs(y: &mut [Self]) -> Outs<'_>;

    /// The clamp an output stage needs before its int16 results are stored as this type
    /// ([`FromWide`]): `bounds` itself, but for int8 outputs the int8 range widens to the int16
    /// range, since the store saturates to int8 anyway and [`simd::requant_run`] clamps to the
    /// int16 range in one instruction (to other ranges in six).
    #[inline(always)]
    fn stage_bounds(bounds: &Bounds) -> Bounds {
        *bounds
    }
}

impl Store for i8 {
    fn outs(y: &mut [i8]) -> Outs<'_> {
        Outs::I8(y)
    }

    #[inline(always)]
    fn stage_bounds(bounds: &Bounds) -> Bounds {
        if (bounds.min, bounds.max) == (-128, 127) {
            Bounds {
                min: -32768,
                max: 32767,
                ..*bounds
            }
        } else {
            *bounds
        }
    }
}

impl Store for i16 {
    fn outs(y: &mut [i16]) -> Outs<'_> {
        Outs::I16(y)
    }
}

impl Outs<'_> {
    /// [`Store::stage_bounds`] of the output's element type.
    #[inline(always)]
    pub fn stage_bounds(&self, bounds: &Bounds) -> Bounds {
        match self {
            Outs::I8(_) => i8::stage_bounds(bounds),
            Outs::I16(_) => i16::stage_bounds(bounds),
        }
    }

    /// Elements in the output.
    pub fn len(&self) -> usize {
        match self {
            Outs::I8(y) => y.len(),
            Outs::I16(y) => y.len(),
        }
    }

    /// Whether the output is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `o` (ignored past the end) from its clamped int16 result.
    #[inline(always)]
    pub fn set(&mut self, o: usize, v: i16) {
        match self {
            Outs::I8(y) => {
                if let Some(y) = y.get_mut(o) {
                    *y = i8::from_wide(v);
                }
            }
            Outs::I16(y) => {
                if let Some(y) = y.get_mut(o) {
                    *y = v;
                }
            }
        }
    }
}
