//! Fixed-point requantization: the integer arithmetic every int8 kernel ends with.
//!
//! An int8 layer computes an i32 accumulator in some integer unit and must express it in the
//! output tensor's steps: multiply by a real factor `m` (a ratio of scales), round, add the output
//! zero point, clamp. The device never sees `m`: the host turns it into a Q31 `multiplier` and a
//! power-of-two `shift` once ([`quantize_multiplier`]), and the device applies them with integer
//! operations only ([`multiply_by_quantized_multiplier`]). Results are therefore identical on every
//! target, and identical to TensorFlow Lite's reference kernels (gemmlowp "double rounding").
//!
//! # The rule
//!
//! **Host, once per layer ([`quantize_multiplier`]).** For a finite real `m != 0`, write
//! `m = q · 2^e` with `0.5 <= |q| < 1` (C `frexp`). Then `multiplier = round(q · 2^31)` (ties away
//! from zero, C `round`), so `2^30 <= |multiplier| <= 2^31`; if it is exactly `2^31` it becomes
//! `2^30` and `e` grows by 1. `shift = e`. The represented factor is `multiplier · 2^(shift − 31)`,
//! with a relative error of at most `2^-31`.
//! - `m == 0`, or `shift < -31` (`|m| < 2^-32`, roughly): flushed to `(0, 0)`, the factor 0. Any
//!   i32 times such an `m` is below 0.5 in magnitude, so little is lost.
//! - `shift > 30` (`|m| >= 2^30`, roughly), NaN or infinite `m`: `None`. TensorFlow Lite silently
//!   saturates these to `(2^31 − 1, 30)`; a scale ratio that large means broken calibration, and the
//!   host should say so rather than run a different model.
//! - Negative `m` is allowed (a frozen affine layer may flip a channel's sign): `multiplier` is then
//!   negative, `-2^31 <= multiplier <= -2^30`.
//!
//! **Device, per value ([`multiply_by_quantized_multiplier`]).** For an i32 `x`:
//! ```text
//! left  = max(shift, 0)        right = max(-shift, 0)
//! x'    = x · 2^left                         saturated to i32
//! h     = floor((x' · multiplier + 2^30) / 2^31)     (i64 exact; ties toward +∞)
//!                                             saturated: x' = multiplier = -2^31 gives 2^31 − 1
//! y     = h / 2^right  rounded to nearest, ties away from zero
//! ```
//! `h` is gemmlowp's `SaturatingRoundingDoublingHighMul` ([`saturating_rounding_doubling_high_mul`]),
//! `y` its `RoundingDivideByPOT` ([`rounding_divide_by_pot`]); this is exactly TensorFlow Lite's
//! `MultiplyByQuantizedMultiplier` (the default, double-rounding build), so `y ≈ x · m` within one
//! unit. Note the two roundings differ on ties (the first rounds `-0.5` to 0, the second to -1):
//! that asymmetry is part of the definition.
//!
//! Ranges and saturation: every function here is total over all i32 arguments and cannot panic or
//! overflow. Where TensorFlow Lite would overflow (undefined behaviour in C: `x · 2^left` beyond
//! i32, shifts of 32 or more), we saturate: `x'` clamps to `[i32::MIN, i32::MAX]`, a right shift of
//! 32 or more gives the correctly rounded quotient (0, or -1 for `i32::MIN / 2^32`), a negative
//! exponent in [`rounding_divide_by_pot`] divides by 1. For multipliers produced by
//! [`quantize_multiplier`] and accumulators that fit (see `kernels::reference::int8`), no
//! saturation happens and results equal TensorFlow Lite's bit for bit.
//!
//! # Host-side helpers
//!
//! [`quantize_multiplier`], [`Requant::from_real`], [`add_requant`], [`quantize_affine_channel`]
//! and [`lookup_table`] use floating point. They exist only for the host tool preparing a blob (so
//! the rule has one implementation, shared by writer and reader); no kernel calls them, and on the
//! device the linker drops them.

use serde::{Deserialize, Serialize};

pub mod contract;

pub use contract::{
    accumulator_fits_for, MAX_POOL_WINDOW_AREA, MAX_PRODUCTS_PER_OUTPUT, SOFTMAX_OUTPUT_ZERO_POINT,
    WIDE_SOFTMAX_OUTPUT_SHIFT,
};

/// A real factor in fixed point: `multiplier · 2^(shift − 31)` (see the [module docs](self)).
///
/// Serializable so that the blob format can store it as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Requant {
    /// Q31 mantissa; `2^30 <= |multiplier| <= 2^31` unless the factor is 0.
    pub multiplier: i32,
    /// Power-of-two exponent; `-31 <= shift <= 30` when made by [`quantize_multiplier`].
    pub shift: i32,
}

impl Requant {
    /// The factor 1 (`2^30 · 2^(1 − 31)`, what [`quantize_multiplier`] gives for 1.0):
    /// [`Requant::apply`] returns `x` unchanged for `-2^30 <= x < 2^30` (beyond, the doubling
    /// saturates first: TensorFlow Lite's behaviour, far outside int8 accumulator ranges).
    pub const IDENTITY: Requant = Requant {
        multiplier: 1 << 30,
        shift: 1,
    };

    /// True for what [`quantize_multiplier`] can produce: the factor 0 as `(0, 0)`, or
    /// `2^30 <= |multiplier| <= 2^31` with `-31 <= shift <= 30`. Every `Requant` is safe to
    /// apply; the loader can use this to reject blobs that no host tool wrote.
    pub fn is_normalized(self) -> bool {
        let magnitude = self.multiplier.unsigned_abs();
        (self.multiplier == 0 && self.shift == 0)
            || (magnitude >= 1 << 30 && (-31..=30).contains(&self.shift))
    }

    /// `x` times the factor, rounded: [`multiply_by_quantized_multiplier`].
    #[inline]
    pub fn apply(self, x: i32) -> i32 {
        multiply_by_quantized_multiplier(x, self.multiplier, self.shift)
    }
}

/// Bounds of the output in the quantized domain: fused ReLU is `[zp_out, 127]`, ReLU6 is
/// `[zp_out, zp_out + round(6 / s_out)]` (clamped to int8), no activation is `[-128, 127]`.
/// Serializable so that the blob format can store it as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Clamp {
    /// Smallest output value.
    pub min: i8,
    /// Largest output value (wins over `min` if they cross).
    pub max: i8,
}

impl Clamp {
    /// The whole int8 range (no fused activation).
    pub const FULL: Clamp = Clamp {
        min: i8::MIN,
        max: i8::MAX,
    };

    /// `v` limited to `[min, max]` (and so to int8).
    #[inline]
    pub fn apply(self, v: i32) -> i8 {
        let clamped = v.max(i32::from(self.min)).min(i32::from(self.max));
        // In [-128, 127] by construction; the fallback is unreachable.
        i8::try_from(clamped).unwrap_or(self.max)
    }
}

/// Bounds of a 16-bit output in its quantized domain (the wide variant of [`Clamp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClampI16 {
    /// Smallest output value.
    pub min: i16,
    /// Largest output value (wins over `min` if they cross).
    pub max: i16,
}

impl ClampI16 {
    /// The whole int16 range (no fused activation).
    pub const FULL: ClampI16 = ClampI16 {
        min: i16::MIN,
        max: i16::MAX,
    };

    /// `v` limited to `[min, max]` (and so to int16).
    #[inline]
    pub fn apply(self, v: i32) -> i16 {
        let clamped = v.max(i32::from(self.min)).min(i32::from(self.max));
        // In [-32768, 32767] by construction; the fallback is unreachable.
        i16::try_from(clamped).unwrap_or(self.max)
    }
}

/// `round(a · b / 2^31)` with ties toward +∞, i.e. `floor((a · b + 2^30) / 2^31)`, except that
/// `a == b == i32::MIN` (the one case whose result, 2^31, does not fit) saturates to `i32::MAX`.
///
/// gemmlowp's `SaturatingRoundingDoublingHighMul`: the high 32 bits of the doubled product.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    // gemmlowp's nudge; with a division that truncates toward zero it rounds ties toward +∞.
    let nudge = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // |ab| < 2^62, so the sum cannot overflow and the quotient fits in i32 (proved in the tests
    // by comparison with the floor formula over extreme arguments).
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero (gemmlowp's `RoundingDivideByPOT`).
///
/// Total: `exponent <= 0` returns `x`; `exponent >= 32` returns the correctly rounded quotient
/// (0, except `i32::MIN` at exponent 32, which is exactly -0.5 and gives -1).
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    if exponent <= 0 {
        return x;
    }
    if exponent > 31 {
        return if exponent == 32 && x == i32::MIN {
            -1
        } else {
            0
        };
    }
    // 1 <= exponent <= 31: the bit-mask form of gemmlowp.
    let mask = i32::MAX >> (31 - exponent);
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// `x · multiplier · 2^(shift − 31)`, rounded as the [module docs](self) define (TensorFlow Lite's
/// `MultiplyByQuantizedMultiplier`). Total over all arguments; see the docs for saturation.
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.max(0);
    let right = shift.checked_neg().unwrap_or(i32::MAX).max(0);
    let high = saturating_rounding_doubling_high_mul(saturating_shl(x, left), multiplier);
    rounding_divide_by_pot(high, right)
}

/// `x · 2^n` clamped to the i32 range, for `n >= 0`.
#[inline]
fn saturating_shl(x: i32, n: i32) -> i32 {
    if x == 0 || n <= 0 {
        return x;
    }
    if n >= 31 {
        return if x > 0 { i32::MAX } else { i32::MIN };
    }
    // |x| · 2^30 < 2^62: exact in i64.
    let wide = i64::from(x) << n;
    wide.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

// ---- Host-side helpers (floating point; never called by a kernel) ----------------------------
// The float-free check in `kernels::reference::int8` reads this file only up to the line above.

/// Host-side: the `(multiplier, shift)` that represents the real factor `real` (TensorFlow Lite's
/// `QuantizeMultiplier`, with the range rule of the [module docs](self)).
///
/// Uses floating point: only the host tool calls it, when it prepares a blob.
pub fn quantize_multiplier(real: f64) -> Option<(i32, i32)> {
    if !real.is_finite() {
        return None;
    }
    if real == 0.0 {
        return Some((0, 0));
    }
    let (q, mut shift) = libm::frexp(real);
    // 0.5 <= |q| < 1, so |q_fixed| is in [2^30, 2^31]: exact in i64.
    let mut q_fixed = libm::round(q * (1u64 << 31) as f64) as i64;
    if q_fixed == 1 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return Some((0, 0));
    }
    if shift > 30 {
        return None;
    }
    Some((q_fixed as i32, shift))
}

impl Requant {
    /// Host-side: [`quantize_multiplier`] as a `Requant`.
    pub fn from_real(real: f64) -> Option<Requant> {
        quantize_multiplier(real).map(|(multiplier, shift)| Requant { multiplier, shift })
    }
}

/// Left shift applied to both inputs of an int8 addition before rescaling (TensorFlow Lite's
/// value): 20 fractional bits keep the two rescaled inputs exact enough that the sum rounds once.
pub const ADD_LEFT_SHIFT: i32 = 20;

/// The three factors of an int8 addition (see `kernels::reference::int8::elementwise::add`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AddRequant {
    /// Per input: its scale over twice the larger input scale (at most 1/2).
    pub inputs: [Requant; 2],
    /// Twice the larger input scale over `2^ADD_LEFT_SHIFT` times the output scale.
    pub output: Requant,
}

/// Host-side: TensorFlow Lite's factors for `out = a + b` with input scales `scale_a`, `scale_b`
/// and output scale `scale_out` (all positive). `None` if a scale is not positive and finite or a
/// factor is out of range.
pub fn add_requant(scale_a: f64, scale_b: f64, scale_out: f64) -> Option<AddRequant> {
    let positive = |s: f64| s.is_finite() && s > 0.0;
    if !(positive(scale_a) && positive(scale_b) && positive(scale_out)) {
        return None;
    }
    let twice_max = 2.0 * scale_a.max(scale_b);
    Some(AddRequant {
        inputs: [
            Requant::from_real(scale_a / twice_max)?,
            Requant::from_real(scale_b / twice_max)?,
        ],
        output: Requant::from_real(twice_max / ((1u64 << ADD_LEFT_SHIFT) as f64 * scale_out))?,
    })
}

/// Integer constants of one channel of an int8 frozen affine layer (see
/// `kernels::reference::int8::elementwise::affine`):
/// `q_out = zp_out + requant((q_in − zp_in) · scale + offset)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AffineChannel {
    /// Integer slope, `round(ratio · 2^F)`.
    pub scale: i32,
    /// Integer offset, `round(offset · 2^F)`.
    pub offset: i32,
    /// The factor `2^-F`.
    pub requant: Requant,
}

/// Host-side: integer constants for `q_out = zp_out + ratio · (q_in − zp_in) + offset`, where
/// `ratio = scale_c · s_in / s_out` (output steps per input step) and `offset = shift_c / s_out`
/// (output steps) of a frozen `y = x · scale_c + shift_c` channel.
///
/// The accumulator carries `F` fractional bits, `F` the largest in `0..=30` with
/// `(255 · |ratio| + |offset| + 2) · 2^F <= 2^30`, so `(q_in − zp_in) · scale + offset` fits in i32
/// for every int8 input and zero point and the result is off by at most `0.5 + 128 · 2^-F` output
/// steps. `None` when even `F = 0` does not fit or an argument is not finite.
pub fn quantize_affine_channel(ratio: f64, offset: f64) -> Option<AffineChannel> {
    if !(ratio.is_finite() && offset.is_finite()) {
        return None;
    }
    let magnitude = 255.0 * ratio.abs() + offset.abs() + 2.0;
    let limit = (1u64 << 30) as f64;
    let fraction_bits = (0..=30)
        .rev()
        .find(|&f| magnitude * (1u64 << f) as f64 <= limit)?;
    let unit = (1u64 << fraction_bits) as f64;
    Some(AffineChannel {
        scale: libm::round(ratio * unit) as i32,
        offset: libm::round(offset * unit) as i32,
        requant: Requant::from_real(1.0 / unit)?,
    })
}

/// Host-side: the 256-entry table of an element-wise function `f` for
/// `kernels::reference::int8::lut::lookup`: entry `q + 128` is the int8 output for input `q`,
/// `round(f(s_in · (q − zp_in)) / s_out) + zp_out` clamped to int8 (ties away from zero).
pub fn lookup_table(
    f: impl Fn(f64) -> f64,
    (scale_in, zero_in): (f64, i32),
    (scale_out, zero_out): (f64, i32),
) -> [i8; 256] {
    core::array::from_fn(|i| {
        let q = i as i32 - 128;
        let real = f(scale_in * f64::from(q - zero_in));
        let steps = libm::round(real / scale_out) + f64::from(zero_out);
        // `as` saturates (NaN gives 0, the zero point's neighbourhood is not meaningful then).
        steps.clamp(-128.0, 127.0) as i8
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `round(a·b / 2^31)`, ties toward +∞, in plain i128 floor arithmetic.
    fn srdhm_naive(a: i32, b: i32) -> i64 {
        let p = i128::from(a) * i128::from(b) + (1 << 30);
        p.div_euclid(1 << 31) as i64
    }

    /// `x / 2^e` rounded half away from zero, from the magnitude.
    fn rdbp_naive(x: i64, e: u32) -> i64 {
        if e == 0 {
            return x;
        }
        let m = (x.unsigned_abs() as u128 + (1u128 << (e - 1))) >> e;
        if x < 0 {
            -(m as i64)
        } else {
            m as i64
        }
    }

    /// The documented rule in i64/i128 arithmetic with explicit saturation.
    fn mbqm_naive(x: i32, m: i32, shift: i32) -> i32 {
        let left = shift.clamp(0, 40) as u32;
        let right = (-(i64::from(shift))).clamp(0, 40) as u32;
        let shifted = (i128::from(x) << left).clamp(i32::MIN.into(), i32::MAX.into()) as i32;
        let high = srdhm_naive(shifted, m).min(i32::MAX.into());
        rdbp_naive(high, right) as i32
    }

    #[test]
    fn quantize_multiplier_matches_tflite_values() {
        // Values from TensorFlow Lite's quantization_util_test (QuantizeMultiplier*).
        let q = quantize_multiplier;
        assert_eq!(q(-4.0), Some((-1073741824, 3)));
        assert_eq!(q(-2.0), Some((-1073741824, 2)));
        assert_eq!(q(-1.0), Some((-1073741824, 1)));
        assert_eq!(q(-0.5), Some((-1073741824, 0)));
        assert_eq!(q(-0.25), Some((-1073741824, -1)));
        assert_eq!(q(-0.125), Some((-1073741824, -2)));
        assert_eq!(q(0.0), Some((0, 0)));
        assert_eq!(q(0.125), Some((1073741824, -2)));
        assert_eq!(q(0.25), Some((1073741824, -1)));
        assert_eq!(q(0.5), Some((1073741824, 0)));
        assert_eq!(q(1.0), Some((1073741824, 1)));
        assert_eq!(q(2.0), Some((1073741824, 2)));
        assert_eq!(q(4.0), Some((1073741824, 3)));
        assert_eq!(q(0.75), Some((1610612736, 0)));
        // Underflow: 2^-31 and 2^-32 are representable, 2^-33 flushes to zero.
        assert_eq!(q(libm::ldexp(1.0, -31)), Some((1073741824, -30)));
        assert_eq!(q(libm::ldexp(1.0, -32)), Some((1073741824, -31)));
        assert_eq!(q(libm::ldexp(1.0, -33)), Some((0, 0)));
        assert_eq!(q(f64::MIN_POSITIVE), Some((0, 0)));
        // The mantissa rounds up to 2^31: halved, shift + 1.
        assert_eq!(q(0.99999999999), Some((1073741824, 1)));
        assert_eq!(q(1.0 - libm::ldexp(1.0, -33)), Some((1073741824, 1)));
        // Largest accepted factor, then out of range.
        assert_eq!(q(libm::ldexp(1.0, 29)), Some((1073741824, 30)));
        assert_eq!(q(libm::ldexp(1.0, 30)), None);
        assert_eq!(q(f64::NAN), None);
        assert_eq!(q(f64::INFINITY), None);
        assert_eq!(q(f64::NEG_INFINITY), None);
        // A typical conv factor (s_in · s_w / s_out): 0.0123 = 0.7872 · 2^-6.
        assert_eq!(q(0.0123), Some((1690499128, -6)));
    }

    #[test]
    fn multiply_by_quantized_multiplier_known_values() {
        let m = multiply_by_quantized_multiplier;
        // Factor 1/2: ties round toward +∞ in the high multiply (-1.5 -> -1, 1.5 -> 2).
        assert_eq!(m(100, 1 << 30, 0), 50);
        assert_eq!(m(3, 1 << 30, 0), 2);
        assert_eq!(m(-3, 1 << 30, 0), -1);
        assert_eq!(m(-1, 1 << 30, 0), 0);
        // Factor 1/4 through the right shift: ties away from zero (-2.5 -> -3).
        assert_eq!(m(10, 1 << 30, -1), 3);
        assert_eq!(m(-10, 1 << 30, -1), -3);
        // Identity and powers of two above one.
        for x in [-(1 << 30), -7, 0, 5, (1 << 30) - 1] {
            assert_eq!(Requant::IDENTITY.apply(x), x);
        }
        assert_eq!(
            Requant::IDENTITY.apply(i32::MIN),
            -(1 << 30),
            "doubling saturates"
        );
        assert_eq!(m(1000, 1 << 30, 3), 4000);
        // 0.0123 · 1000 = 12.3 and 0.0123 · -1000 = -12.3.
        assert_eq!(m(1000, 1690499128, -6), 12);
        assert_eq!(m(-1000, 1690499128, -6), -12);
        // Saturation: the doubled high product of MIN · MIN and an overflowing left shift.
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        // x · 2^30 saturates to the i32 limits, then the factor 1/2 applies.
        assert_eq!(m(i32::MAX, 1 << 30, 30), 1 << 30);
        assert_eq!(m(i32::MIN, 1 << 30, 30), -(1 << 30));
        assert_eq!(m(1, i32::MAX, i32::MAX), i32::MAX - 1);
        assert_eq!(m(-1, i32::MIN, i32::MAX), i32::MAX);
        assert_eq!(m(-1, i32::MAX, i32::MIN), 0);
        // Rounding division at the extremes of the exponent.
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(rounding_divide_by_pot(1 << 30, 31), 1);
        assert_eq!(rounding_divide_by_pot((1 << 30) - 1, 31), 0);
        assert_eq!(rounding_divide_by_pot(-(1 << 30), 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 32), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 32), 0);
        assert_eq!(rounding_divide_by_pot(-5, -3), -5);
    }

    #[test]
    fn requant_helpers() {
        assert_eq!(Requant::from_real(1.0), Some(Requant::IDENTITY));
        assert!(Requant::IDENTITY.is_normalized() && Requant::default().is_normalized());
        assert!(Requant {
            multiplier: i32::MIN,
            shift: -31
        }
        .is_normalized());
        assert!(!Requant {
            multiplier: (1 << 30) - 1,
            shift: 0
        }
        .is_normalized());
        assert!(!Requant {
            multiplier: 1 << 30,
            shift: 31
        }
        .is_normalized());
        assert!(!Requant {
            multiplier: 0,
            shift: 3
        }
        .is_normalized());
        let add = add_requant(0.5, 0.25, 1.0).unwrap();
        assert_eq!(add.inputs[0], Requant::from_real(0.5).unwrap());
        assert_eq!(add.inputs[1], Requant::from_real(0.25).unwrap());
        assert_eq!(
            add.output,
            Requant::from_real(1.0 / (1u64 << 20) as f64).unwrap()
        );
        assert_eq!(add_requant(0.0, 1.0, 1.0), None);
        let affine = quantize_affine_channel(-0.5, 3.0).unwrap();
        // (255 · 0.5 + 3 + 2) · 2^F <= 2^30 gives F = 22.
        assert_eq!(affine.scale, -(1 << 21));
        assert_eq!(affine.offset, 3 << 22);
        assert_eq!(
            affine.requant,
            Requant::from_real(libm::ldexp(1.0, -22)).unwrap()
        );
        assert_eq!(quantize_affine_channel(1e10, 0.0), None);
        assert_eq!(quantize_affine_channel(f64::NAN, 0.0), None);
        let table = lookup_table(|x| x.max(0.0), (0.5, -10), (0.25, -128));
        assert_eq!(table[0], -128); // q = -128: negative, ReLU gives 0 -> zero point
        assert_eq!(table[(-8 + 128) as usize], -128 + 4); // real 1.0 -> 4 steps
        assert_eq!(table[255], 127); // saturates
    }

    /// i32 values with the extremes and small numbers over-represented.
    fn edge_i32() -> impl Strategy<Value = i32> {
        prop_oneof![
            any::<i32>(),
            -300i32..300,
            Just(i32::MIN),
            Just(i32::MIN + 1),
            Just(i32::MAX),
            Just(1 << 30),
            Just(-(1 << 30)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn high_mul_matches_floor_formula(a in edge_i32(), b in edge_i32()) {
            let want = srdhm_naive(a, b).min(i32::MAX.into());
            prop_assert_eq!(i64::from(saturating_rounding_doubling_high_mul(a, b)), want);
        }

        #[test]
        fn divide_by_pot_matches_round_half_away(x in edge_i32(), e in -3i32..40) {
            let want = rdbp_naive(x.into(), e.max(0) as u32);
            prop_assert_eq!(i64::from(rounding_divide_by_pot(x, e)), want);
        }

        #[test]
        fn multiply_matches_documented_rule(x in edge_i32(), m in edge_i32(),
                                             shift in prop_oneof![-40i32..40, any::<i32>()]) {
            prop_assert_eq!(multiply_by_quantized_multiplier(x, m, shift), mbqm_naive(x, m, shift));
        }

        #[test]
        fn quantized_multiplier_is_within_one_unit(x in -(1i32 << 20)..(1 << 20),
                                                   mantissa in 0.5f64..1.0, exp in -40i32..10,
                                                   negative in any::<bool>()) {
            let real = libm::ldexp(if negative { -mantissa } else { mantissa }, exp);
            let (m, shift) = quantize_multiplier(real).unwrap();
            if m != 0 {
                prop_assert!((-31..=30).contains(&shift));
                prop_assert!((1i64 << 30..=1 << 31).contains(&i64::from(m).abs()));
                let represented = libm::ldexp(f64::from(m), shift - 31);
                prop_assert!((represented - real).abs() <= real.abs() * libm::ldexp(1.0, -31));
            }
            // Two roundings: within one unit of the exact product.
            let got = f64::from(multiply_by_quantized_multiplier(x, m, shift));
            prop_assert!((got - f64::from(x) * real).abs() <= 1.0, "{got} vs {}", f64::from(x) * real);
        }
    }
}
