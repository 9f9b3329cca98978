//! The int8 model's input quantization on x86_64 hosts (AVX2): [`engine::quantize`] and
//! [`engine::quantize_i16`] eight values per step, the same results value for value.
//!
//! The engine quantized the f32 input one value at a time through a function pointer and a
//! `libm::roundf` call: 13-18 % of an int8 inference of MobileNetV1-0.25 (96x96x3 inputs) and of
//! the AD autoencoder on the host. Here each step divides eight values by the scale (`vdivps`,
//! correctly rounded like the scalar division), rounds them half away from zero, adds the zero
//! point and clamps, all in registers.
//!
//! Exactness, lane by lane, against `clamp(saturate(roundf(x / scale) as i32 + zp), min, max)`:
//! - rounding: `t = trunc(q)`; `q − t` is exact (the fraction of `q`, which needs no more bits
//!   than `q`), and `roundf(q)` is `t` plus one step away from zero exactly when `|q − t| >= 0.5`;
//!   `t ± 1` is exact for `|t| < 2^24`, and above 2^23 every float is an integer (`q − t == 0`);
//! - NaN becomes 0 (what `as i32` makes of it), so the result is the zero point, clamped;
//! - the rounded quotient is clamped to ±2^20 before the integer conversion. Where that changes
//!   it (`|roundf(q)| > 2^20`, infinities included), the scalar sum `steps + zp` is beyond
//!   ±(2^20 − 2^16) with the same sign, and so is the clamped one: both clamp to the same bound
//!   (every bound is an int16 value). This needs `|zp| <= 2^16`; other zero points are left to
//!   the scalar path (the functions return 0).
//!
//! [`engine::quantize`]: crate::engine::quantize
//! [`engine::quantize_i16`]: crate::engine::quantize_i16
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use crate::format::Quant;

/// Largest zero point (in magnitude) the vector path takes (see the module docs).
const MAX_ZERO_POINT: i32 = 1 << 16;

/// Rounded quotients are clamped to ±this before the integer conversion (exact, see the module
/// docs).
const STEP_LIMIT: f32 = (1 << 20) as f32;

/// Quantizes the first whole multiple of eight values of `input` (up to `out.len()`) into `out`
/// as [`crate::engine::quantize`] does, and returns how many: 0 without AVX2 or with a zero
/// point beyond ±2^16 (the caller quantizes the rest).
pub fn to_i8(input: &[f32], quant: Quant, out: &mut [i8]) -> usize {
    let n = input.len().min(out.len()) / 8 * 8;
    if n == 0 || !super::available() || quant.zero_point.abs() > MAX_ZERO_POINT {
        return 0;
    }
    // SAFETY: AVX2 present (checked above).
    unsafe { to_i8_avx2(&input[..n], quant, &mut out[..n]) };
    n
}

/// [`to_i8`] for an int16 input tensor ([`crate::engine::quantize_i16`]).
pub fn to_i16(input: &[f32], quant: Quant, out: &mut [i16]) -> usize {
    let n = input.len().min(out.len()) / 8 * 8;
    if n == 0 || !super::available() || quant.zero_point.abs() > MAX_ZERO_POINT {
        return 0;
    }
    // SAFETY: AVX2 present (checked above).
    unsafe { to_i16_avx2(&input[..n], quant, &mut out[..n]) };
    n
}

/// # Safety
/// AVX2 present; `input.len() == out.len()`, a multiple of 8.
#[target_feature(enable = "avx2")]
unsafe fn to_i8_avx2(input: &[f32], quant: Quant, out: &mut [i8]) {
    let steps = Steps::new(quant, i8::MIN.into(), i8::MAX.into());
    for (x, y) in input.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        let words = steps.apply(x);
        // In -128..=127 already: the saturating packs keep every value.
        let bytes = _mm_packs_epi16(words, words);
        // SAFETY: `y` holds 8 bytes; an unaligned 64-bit store.
        unsafe { _mm_storel_epi64(y.as_mut_ptr().cast(), bytes) };
    }
}

/// # Safety
/// AVX2 present; `input.len() == out.len()`, a multiple of 8.
#[target_feature(enable = "avx2")]
unsafe fn to_i16_avx2(input: &[f32], quant: Quant, out: &mut [i16]) {
    let steps = Steps::new(quant, i16::MIN.into(), i16::MAX.into());
    for (x, y) in input.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        // SAFETY: `y` holds 8 int16 values (16 bytes); an unaligned store.
        unsafe { _mm_storeu_si128(y.as_mut_ptr().cast(), steps.apply(x)) };
    }
}

/// The constants of one tensor's quantization on eight lanes.
#[derive(Clone, Copy)]
struct Steps {
    scale: __m256,
    zero_point: __m256i,
    min: __m256i,
    max: __m256i,
}

impl Steps {
    #[inline]
    #[target_feature(enable = "avx2")]
    fn new(quant: Quant, min: i32, max: i32) -> Steps {
        Steps {
            scale: _mm256_set1_ps(quant.scale),
            zero_point: _mm256_set1_epi32(quant.zero_point),
            min: _mm256_set1_epi32(min),
            max: _mm256_set1_epi32(max),
        }
    }

    /// Eight values (`x.len() == 8`) quantized, as int16 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn apply(&self, x: &[f32]) -> __m128i {
        debug_assert_eq!(x.len(), 8);
        // SAFETY: `x` holds 8 floats (the callers' `chunks_exact(8)`); an unaligned load.
        let x = unsafe { _mm256_loadu_ps(x.as_ptr()) };
        let q = _mm256_div_ps(x, self.scale);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(q);
        let sign = _mm256_set1_ps(-0.0);
        let fraction = _mm256_andnot_ps(sign, _mm256_sub_ps(q, t));
        // Ordered compare: false for NaN (and for infinities, whose fraction is NaN).
        let away = _mm256_cmp_ps::<_CMP_GE_OQ>(fraction, _mm256_set1_ps(0.5));
        let step = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(q, sign));
        let rounded = _mm256_add_ps(t, _mm256_and_ps(away, step));
        // NaN lanes to 0, then the others within ±2^20.
        let rounded = _mm256_and_ps(rounded, _mm256_cmp_ps::<_CMP_ORD_Q>(rounded, rounded));
        let rounded = _mm256_min_ps(
            _mm256_max_ps(rounded, _mm256_set1_ps(-STEP_LIMIT)),
            _mm256_set1_ps(STEP_LIMIT),
        );
        let steps = _mm256_add_epi32(_mm256_cvttps_epi32(rounded), self.zero_point);
        let v = _mm256_min_epi32(_mm256_max_epi32(steps, self.min), self.max);
        // Int16 values already: the saturating pack keeps them.
        _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::engine::{quantize, quantize_i16};
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Values where rounding and saturation decide: halves and their neighbours, zeros,
    /// infinities, NaN, the limits of both element types and of the clamp to ±2^20, and values
    /// too large for an i32.
    fn edges(scale: f32) -> Vec<f32> {
        let mut v = Vec::new();
        for k in -40i32..=40 {
            let half = (k as f32 + 0.5) * scale;
            v.extend([
                half,
                f32::from_bits(half.to_bits() + 1),
                f32::from_bits(half.to_bits().wrapping_sub(1)),
                k as f32 * scale,
            ]);
        }
        for m in [
            127.0, 128.0, 32767.0, 32768.0, 1048575.0, 1048576.0, 1048577.0, 1.1e6, 8388607.5,
            16777216.0, 2.2e9, 3e38,
        ] {
            v.extend([m * scale, -m * scale, (m + 0.5) * scale, -(m + 0.5) * scale]);
        }
        v.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -1e-45,
            0.49999997,
            -0.49999997,
        ]);
        v
    }

    fn check(input: &[f32], quant: Quant) {
        let mut fast8 = std::vec![0x55i8; input.len()];
        let mut fast16 = std::vec![0x5555i16; input.len()];
        let n8 = to_i8(input, quant, &mut fast8);
        let n16 = to_i16(input, quant, &mut fast16);
        if crate::kernels::x86::available() && quant.zero_point.abs() <= MAX_ZERO_POINT {
            assert_eq!(n8, input.len() / 8 * 8);
            assert_eq!(n16, n8);
        }
        for (i, &x) in input.iter().enumerate() {
            if i < n8 {
                assert_eq!(fast8[i], quantize(x, quant), "{x} with {quant:?}");
            } else {
                assert_eq!(fast8[i], 0x55, "wrote past the whole steps");
            }
            if i < n16 {
                assert_eq!(fast16[i], quantize_i16(x, quant), "{x} with {quant:?}");
            }
        }
    }

    #[test]
    fn edges_quantize_as_the_scalar_path() {
        for scale in [
            1.0,
            0.5,
            0.003_921_569, // 1 / 255 as f32
            0.1,
            3.0,
            1e-30,
            0.0,
            -0.25,
            f32::NAN,
        ] {
            for zero_point in [0, -128, 127, -5, 100, -32768, 32767, 1 << 16, -(1 << 16)] {
                check(&edges(scale), Quant { scale, zero_point });
            }
        }
    }

    #[test]
    fn zero_points_beyond_the_limit_are_left_to_the_scalar_path() {
        let mut out = [0i8; 16];
        let quant = Quant {
            scale: 1.0,
            zero_point: (1 << 16) + 1,
        };
        assert_eq!(to_i8(&[1.0; 16], quant, &mut out), 0);
    }

    proptest! {
        #[test]
        fn random_values_quantize_as_the_scalar_path(
            values in proptest::collection::vec(any::<f32>(), 0..70),
            small in proptest::collection::vec(-300.0f32..300.0, 0..70),
            scale_exp in -12i32..8, mantissa in 1.0f32..2.0,
            zero_point in -70000i32..70000,
        ) {
            let quant = Quant { scale: mantissa * 2f32.powi(scale_exp), zero_point };
            check(&values, quant);
            let scaled: Vec<f32> = small.iter().map(|v| v * quant.scale).collect();
            check(&scaled, quant);
            check(&small, quant);
        }
    }
}
