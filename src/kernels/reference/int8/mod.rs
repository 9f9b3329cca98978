//! Reference int8 kernels: integer-only loops that define every int8 layer's result.
//!
//! # Conventions
//!
//! - Activations are int8, row-major `[H, W, C]` like the f32 kernels, affine-quantized per tensor
//!   (`real = s · (q − zp)`, `zp` in `-128..=127`, hence the `i8` zero points here).
//! - Conv and dense weights are int8, symmetric per output channel (zero point 0), in the f32
//!   layouts (`[out_c][kh][kw][in_c / groups]`, `[out][in]`). Bias is i32 per output channel in
//!   units of `s_in · s_w[c]`.
//! - Every kernel ends with [`OutputQuant::requantize`]: factor ([`Requant`], computed on the host),
//!   output zero point, then the [`Clamp`] that implements fused ReLU / ReLU6 in the quantized
//!   domain. Fused activations other than clamps are separate layers ([`lut`]).
//!
//! # Zero points are folded offline
//!
//! With symmetric weights, `Σ_k w_k (x_k − zp_in) = Σ_k w_k x_k − zp_in · Σ_k w_k`. The host
//! stores `bias' = bias − zp_in · Σ_k w_k` (per output channel, over all of its `kh · kw · in_c /
//! groups` weights), so conv and dense compute only `bias' + Σ_k w_k x_k`. This stays exact at
//! padded borders because the kernel reads a padded tap as `zp_in` (real zero), whose term the
//! folded bias cancels; with per-input-channel pad values (a BatchNorm folded into the next conv
//! pads with the value it maps to zero) the tap reads `pad[c]`, quantized in the input's scale, and
//! contributes `w (pad[c] − zp_in)` as it should.
//!
//! # int16 activations (16×8)
//!
//! The first layers of a network may keep int16 activations with the same int8 weights
//! (`Conv2dI16`, [`conv::conv2d_wide`]): their outputs are rounded to 65536 steps instead of 256,
//! which is where a deep network's error starts and is amplified most. Everything above holds with
//! `i16` values in place of `i8` ones; the products are larger, see below.
//!
//! # The accumulator cannot overflow
//!
//! One product is at most `|−128 · −128| = 2^14` in magnitude ([`MAX_PRODUCT`](crate::quant::contract::MAX_PRODUCT)), padded taps
//! included (they read int8 values too). An output that sums `K` products starting from `bias'`
//! stays within `|bias'| + K · 2^14`, and so does every partial sum. [`accumulator_fits`](crate::quant::contract::accumulator_fits) is that
//! bound against `i32::MAX`; the loader must check it for every output channel of every conv
//! (`K = kh · kw · in_c / groups`) and dense layer (`K = in_features`). For example `K <=`
//! [`MAX_PRODUCTS_PER_OUTPUT`](crate::quant::contract::MAX_PRODUCTS_PER_OUTPUT) `= 2^16` with `|bias'| < 2^30` always fits. An int16 input makes
//! one product at most `|−128 · −32768| = 2^22` ([`MAX_PRODUCT_I16`](crate::quant::contract::MAX_PRODUCT_I16), [`accumulator_fits_i16`](crate::quant::contract::accumulator_fits_i16)),
//! so such a layer may sum about 256 products per output. The kernels add with
//! wrapping arithmetic, so unchecked parameters give a wrong result but never a panic.
//!
//! # Robustness
//!
//! As for the f32 kernels: called with inconsistent sizes, a kernel computes something
//! unspecified but does not panic (every access goes through iterators, `chunks_exact` or `get`,
//! all arithmetic is wrapping, saturating or checked). No floating point appears in these files
//! (a test reads the sources to keep it that way).

pub mod concat;
pub mod conv;
pub mod dense;
pub mod elementwise;
pub mod lut;
pub mod mul;
pub mod pool;
pub mod prelu;

pub use crate::quant::{Clamp, ClampI16, Requant};

/// The output side of a layer: zero point and clamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OutputQuant {
    /// Zero point of the output tensor.
    pub zero_point: i8,
    /// Fused activation as bounds.
    pub clamp: Clamp,
}

impl OutputQuant {
    /// `clamp(zero_point + requant(acc))`: the last step of every conv, dense, add and affine.
    #[inline]
    pub fn requantize(self, acc: i32, requant: Requant) -> i8 {
        self.clamp.apply(
            requant
                .apply(acc)
                .saturating_add(i32::from(self.zero_point)),
        )
    }
}

/// The output side of a layer with an int16 output (`DenseI8Wide`): zero point and clamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WideOutputQuant {
    /// Zero point of the output tensor.
    pub zero_point: i16,
    /// Fused activation as bounds.
    pub clamp: ClampI16,
}

impl WideOutputQuant {
    /// `clamp(zero_point + requant(acc))` in int16.
    #[inline]
    pub fn requantize(self, acc: i32, requant: Requant) -> i16 {
        self.clamp.apply(
            requant
                .apply(acc)
                .saturating_add(i32::from(self.zero_point)),
        )
    }
}

/// An activation value a convolution or dense layer reads: int8, or int16 in the first layers of
/// a 16×8 network.
pub trait Element: Copy {
    /// The value as an accumulator term.
    fn widen(self) -> i32;
}

impl Element for i8 {
    #[inline]
    fn widen(self) -> i32 {
        i32::from(self)
    }
}

impl Element for i16 {
    #[inline]
    fn widen(self) -> i32 {
        i32::from(self)
    }
}

/// An element a layer with an int16 output stage writes: the int16 value itself, or (the last
/// 16×8 layer, whose output is int8 again) that value saturated to int8.
pub trait FromWide: Copy {
    /// The stored element for a clamped int16 result.
    fn from_wide(v: i16) -> Self;
}

impl FromWide for i16 {
    #[inline]
    fn from_wide(v: i16) -> Self {
        v
    }
}

impl FromWide for i8 {
    #[inline]
    fn from_wide(v: i16) -> Self {
        // Saturating: the host writes int8 bounds for an int8 output, so this only matters for
        // records that did not.
        i8::try_from(v).unwrap_or(if v < 0 { i8::MIN } else { i8::MAX })
    }
}

/// Per-output-channel constants of a conv or dense layer, each `[out_c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelQuant<'a> {
    /// Folded bias `bias − zp_in · Σ w` in units of `s_in · s_w[c]`.
    pub bias: &'a [i32],
    /// Q31 mantissas of `s_in · s_w[c] / s_out`.
    pub multiplier: &'a [i32],
    /// Exponents of the same factors.
    pub shift: &'a [i32],
}

impl ChannelQuant<'_> {
    /// The constants of output channel `c`, if all three arrays have it.
    #[inline]
    fn channel(&self, c: usize) -> Option<(i32, Requant)> {
        Some((
            *self.bias.get(c)?,
            Requant {
                multiplier: *self.multiplier.get(c)?,
                shift: *self.shift.get(c)?,
            },
        ))
    }
}

/// `Σ w_i x_i` over the common prefix, in order, with wrapping adds (exact whenever
/// [`accumulator_fits`](crate::quant::contract::accumulator_fits) holds).
#[inline]
fn dot<X: Element>(w: &[i8], x: &[X]) -> i32 {
    w.iter().zip(x).fold(0i32, |acc, (w, x)| {
        acc.wrapping_add(i32::from(*w) * x.widen())
    })
}

/// Test helpers shared by the int8 kernel tests.
#[cfg(test)]
pub(crate) mod testing {
    extern crate std;
    use std::vec::Vec;

    /// A deterministic generator with the int8 extremes over-represented.
    pub struct Gen(pub u64);

    impl Gen {
        pub fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 32
        }
        pub fn i8(&mut self) -> i8 {
            match self.next() % 8 {
                0 => -128,
                1 => 127,
                _ => self.next() as u8 as i8,
            }
        }
        pub fn i8s(&mut self, n: usize) -> Vec<i8> {
            (0..n).map(|_| self.i8()).collect()
        }
        /// An int16 value, extremes over-represented.
        pub fn i16(&mut self) -> i16 {
            match self.next() % 8 {
                0 => i16::MIN,
                1 => i16::MAX,
                _ => self.next() as u16 as i16,
            }
        }
        pub fn i16s(&mut self, n: usize) -> Vec<i16> {
            (0..n).map(|_| self.i16()).collect()
        }
        /// In `lo..=hi`.
        pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
            lo + (self.next() % (hi - lo + 1) as u64) as i32
        }
        /// A factor as the host would make it, from about 2^-20 to 2^4, sometimes exactly 1.
        pub fn requant(&mut self) -> crate::quant::Requant {
            if self.next() % 8 == 0 {
                return crate::quant::Requant::IDENTITY;
            }
            crate::quant::Requant {
                multiplier: self.range(1 << 30, i32::MAX),
                shift: self.range(-20, 4),
            }
        }
    }

    /// The documented factor rule in i128 (independent of `quant`'s bit tricks).
    pub fn requant_naive(acc: i64, m: crate::quant::Requant) -> i64 {
        let left = m.shift.clamp(0, 40) as u32;
        let right = (-i64::from(m.shift)).clamp(0, 40) as u32;
        let x = (i128::from(acc) << left).clamp(i32::MIN.into(), i32::MAX.into());
        let high = (x * i128::from(m.multiplier) + (1 << 30))
            .div_euclid(1 << 31)
            .min(i32::MAX.into());
        let y = if right == 0 {
            high
        } else {
            let mag = (high.unsigned_abs() + (1u128 << (right - 1))) >> right;
            if high < 0 {
                -(mag as i128)
            } else {
                mag as i128
            }
        };
        y as i64
    }

    /// [`requant_naive`], then the output zero point and clamp.
    pub fn requantize_naive(acc: i64, m: crate::quant::Requant, zp: i8, min: i8, max: i8) -> i8 {
        let y = requant_naive(acc, m);
        (y + i64::from(zp)).clamp(min.into(), max.into()) as i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Source-level guard of "no float on the int8 path": no float type, literal or float
    /// function in the int8 kernels or in the integer part of `quant` (the host-side helpers below
    /// its marker line are excluded; they are never called by a kernel). The object-level check
    /// (no soft-float calls in the thumbv6m build) is described in the crate's int8 report.
    #[test]
    fn int8_sources_have_no_floating_point() {
        let quant = include_str!("../../../quant/mod.rs");
        let marker = "// ---- Host-side helpers";
        let integer_quant = &quant[..quant.find(marker).expect("marker line in quant/mod.rs")];
        let sources = [
            ("mod.rs", include_str!("mod.rs")),
            ("conv.rs", include_str!("conv.rs")),
            ("dense.rs", include_str!("dense.rs")),
            ("pool.rs", include_str!("pool.rs")),
            ("elementwise.rs", include_str!("elementwise.rs")),
            ("lut.rs", include_str!("lut.rs")),
            ("concat.rs", include_str!("concat.rs")),
            ("../axis.rs", include_str!("../axis.rs")),
            ("mul.rs", include_str!("mul.rs")),
            ("prelu.rs", include_str!("prelu.rs")),
            ("quant/mod.rs (integer part)", integer_quant),
            (
                "quant/contract.rs",
                include_str!("../../../quant/contract.rs"),
            ),
        ];
        for (name, text) in sources {
            // Test modules may use floats (tolerances, host helpers): check the code above them.
            let code = text.split("#[cfg(test)]").next().unwrap_or(text);
            for (n, line) in code.lines().enumerate() {
                let code_part = line.split("//").next().unwrap_or("");
                for banned in [
                    "f32",
                    "f64",
                    "libm",
                    "micromath",
                    "from_real",
                    "quantize_multiplier",
                ] {
                    assert!(
                        !code_part.contains(banned),
                        "{name}:{}: `{banned}` on the int8 path: {line}",
                        n + 1
                    );
                }
                // A float literal: digit '.' digit (ranges `0..n` have two dots).
                let bytes = code_part.as_bytes();
                for w in bytes.windows(3) {
                    let float_literal =
                        w[0].is_ascii_digit() && w[1] == b'.' && w[2].is_ascii_digit();
                    assert!(!float_literal, "{name}:{}: float literal: {line}", n + 1);
                }
            }
        }
    }

    #[test]
    fn clamp_and_requantize() {
        let relu = Clamp { min: -5, max: 127 };
        assert_eq!(relu.apply(-100), -5);
        assert_eq!(relu.apply(i32::MAX), 127);
        assert_eq!(Clamp::FULL.apply(i32::MIN), -128);
        assert_eq!(
            Clamp { min: 10, max: 0 }.apply(5),
            0,
            "crossed bounds: max wins"
        );
        let out = OutputQuant {
            zero_point: 100,
            clamp: Clamp::FULL,
        };
        assert_eq!(out.requantize(i32::MAX, Requant::IDENTITY), 127);
        assert_eq!(out.requantize(-300, Requant::IDENTITY), -128);
        assert_eq!(out.requantize(20, Requant::IDENTITY), 120);
    }
}
