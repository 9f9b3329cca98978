//! int8 element-wise kernels: residual addition, frozen per-channel affine, standalone clamp.

use super::{Clamp, OutputQuant, Requant};
use crate::quant::ADD_LEFT_SHIFT;

/// Quantization of an int8 addition (TensorFlow Lite's scheme; factors from
/// [`crate::quant::add_requant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddQuant {
    /// Zero points of the two inputs.
    pub input_zero_points: [i8; 2],
    /// Per input: `s_input / (2 · max(s_a, s_b))`.
    pub input_requant: [Requant; 2],
    /// `2 · max(s_a, s_b) / (2^ADD_LEFT_SHIFT · s_out)`.
    pub output_requant: Requant,
    /// Output zero point and clamp (fused ReLU).
    pub output: OutputQuant,
}

/// Residual addition, element by element over the common length:
/// `out = clamp(zp_out + r_out(r_a((a − zp_a) · 2^20) + r_b((b − zp_b) · 2^20)))`.
///
/// Both inputs are brought to a common unit (`2 · max(s_a, s_b) / 2^20`) with 20 fractional bits,
/// added exactly, and rounded once more to the output scale. `|a − zp_a| <= 255`, so every
/// intermediate stays below 2^29 in magnitude; arithmetic saturates anyway.
pub fn add(quant: &AddQuant, a: &[i8], b: &[i8], output: &mut [i8]) {
    let [zp_a, zp_b] = quant.input_zero_points.map(i32::from);
    let [r_a, r_b] = quant.input_requant;
    let widen = |q: i8, zp: i32, r: Requant| {
        r.apply((i32::from(q) - zp).wrapping_shl(ADD_LEFT_SHIFT as u32))
    };
    for (o, (x, y)) in output.iter_mut().zip(a.iter().zip(b)) {
        let sum = widen(*x, zp_a, r_a).saturating_add(widen(*y, zp_b, r_b));
        *o = quant.output.requantize(sum, quant.output_requant);
    }
}

/// Quantization of an int8 frozen per-channel affine layer, constants `[C]` per channel from
/// [`crate::quant::quantize_affine_channel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffineQuant<'a> {
    /// Zero point of the input.
    pub input_zero_point: i8,
    /// Integer slope per channel.
    pub scale: &'a [i32],
    /// Integer offset per channel (same unit as `scale · (q − zp_in)`).
    pub offset: &'a [i32],
    /// Q31 mantissas of each channel's factor.
    pub multiplier: &'a [i32],
    /// Exponents of each channel's factor.
    pub shift: &'a [i32],
    /// Output zero point and clamp.
    pub output: OutputQuant,
}

/// Frozen `y = x · scale_c + shift_c` (an unfoldable BatchNorm) over the last dimension of length
/// `quant.scale.len()`: `out = clamp(zp_out + r_c((q − zp_in) · scale[c] + offset[c]))`.
///
/// The host picks, per channel, a unit of `2^-F` output steps with `F` as large as the i32
/// accumulator allows, so `scale[c] = round(ratio_c · 2^F)`, `offset[c] = round(shift_c / s_out ·
/// 2^F)` and `r_c = 2^-F` ([`crate::quant::quantize_affine_channel`]); the result is within
/// `0.5 + 128 · 2^-F` output steps of the real value. Products and sums saturate (they cannot for
/// constants made by that helper). Signs of `scale` are free: BatchNorm's gamma may be negative.
pub fn affine(quant: &AffineQuant, input: &[i8], output: &mut [i8]) {
    let channels = quant.scale.len();
    if channels == 0 {
        return;
    }
    let zero_in = i32::from(quant.input_zero_point);
    for (out_row, in_row) in output
        .chunks_exact_mut(channels)
        .zip(input.chunks_exact(channels))
    {
        let constants = quant
            .scale
            .iter()
            .zip(quant.offset)
            .zip(quant.multiplier.iter().zip(quant.shift));
        for ((o, q), ((scale, offset), (multiplier, shift))) in
            out_row.iter_mut().zip(in_row).zip(constants)
        {
            let acc = (i32::from(*q) - zero_in)
                .saturating_mul(*scale)
                .saturating_add(*offset);
            let requant = Requant {
                multiplier: *multiplier,
                shift: *shift,
            };
            *o = quant.output.requantize(acc, requant);
        }
    }
}

/// Standalone ReLU / ReLU6 / clip in the quantized domain (same scale and zero point in and out):
/// `output = clamp(input)` element by element.
pub fn clamp(bounds: Clamp, input: &[i8], output: &mut [i8]) {
    for (o, x) in output.iter_mut().zip(input) {
        *o = bounds.apply(i32::from(*x));
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::testing::{requant_naive, requantize_naive, Gen};
    use super::*;
    use crate::quant::{add_requant, quantize_affine_channel};
    use proptest::prelude::*;
    use std::vec::Vec;

    fn zp() -> impl Strategy<Value = i8> {
        prop_oneof![Just(-128i8), Just(127i8), Just(0i8), any::<i8>()]
    }

    #[test]
    fn add_by_hand() {
        // a: scale 0.5 zp 0; b: scale 0.25 zp -10; out: scale 1 zp 5.
        // a = 4 (real 2), b = 2 (real 3): real 5 -> 10. a = -128 (real -64), b = -128 (-29.5)
        // -> -93.5 + 5 -> -89 (ties away from zero). a = 1, b = -10: 0.5 + 5 -> 6.
        let r = add_requant(0.5, 0.25, 1.0).unwrap();
        let q = AddQuant {
            input_zero_points: [0, -10],
            input_requant: r.inputs,
            output_requant: r.output,
            output: OutputQuant {
                zero_point: 5,
                clamp: Clamp::FULL,
            },
        };
        let mut out = [0i8; 3];
        add(&q, &[4, -128, 1], &[2, -128, -10], &mut out);
        assert_eq!(out, [10, -89, 6]);
    }

    #[test]
    fn affine_by_hand() {
        // Channel 0: y = -2x + 1 with s_in = 0.5, s_out = 0.25: ratio -4, offset 4 steps.
        // Channel 1: y = x with s_in = s_out: ratio 1, offset 0.
        let c0 = quantize_affine_channel(-4.0, 4.0).unwrap();
        let c1 = quantize_affine_channel(1.0, 0.0).unwrap();
        let q = AffineQuant {
            input_zero_point: 3,
            scale: &[c0.scale, c1.scale],
            offset: &[c0.offset, c1.offset],
            multiplier: &[c0.requant.multiplier, c1.requant.multiplier],
            shift: &[c0.requant.shift, c1.requant.shift],
            output: OutputQuant {
                zero_point: -1,
                clamp: Clamp::FULL,
            },
        };
        let mut out = [0i8; 4];
        // q0 = 5 (real 1): y = -1 -> -4 steps -> -5. q1 = -128: unchanged up to zp: -128 - 3 - 1.
        // q0 = -128 (real -65.5): y = 132 -> 528 steps: 127. q1 = 127 -> 127 - 3 - 1 = 123.
        affine(&q, &[5, -128, -128, 127], &mut out);
        assert_eq!(out, [-5, -128, 127, 123]);
    }

    #[test]
    fn clamp_by_hand() {
        let mut out = [0i8; 4];
        clamp(Clamp { min: -3, max: 20 }, &[-128, -3, 19, 127], &mut out);
        assert_eq!(out, [-3, -3, 19, 20]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn add_matches_naive(zp_a in zp(), zp_b in zp(), zp_out in zp(), lo in any::<i8>(),
                             ea in -12i32..6, eb in -12i32..6, eo in -12i32..6,
                             n in 0usize..40, seed in any::<u64>()) {
            let scale = |e: i32| libm::ldexp(1.0 + (seed % 97) as f64 / 97.0, e);
            let r = add_requant(scale(ea), scale(eb), scale(eo)).unwrap();
            let mut gen = Gen(seed);
            let (a, b) = (gen.i8s(n), gen.i8s(n));
            let q = AddQuant {
                input_zero_points: [zp_a, zp_b],
                input_requant: r.inputs,
                output_requant: r.output,
                output: OutputQuant { zero_point: zp_out, clamp: Clamp { min: lo, max: 127 } },
            };
            let mut out = std::vec![0i8; n];
            add(&q, &a, &b, &mut out);
            for i in 0..n {
                let wa = requant_naive((i64::from(a[i]) - i64::from(zp_a)) << 20, r.inputs[0]);
                let wb = requant_naive((i64::from(b[i]) - i64::from(zp_b)) << 20, r.inputs[1]);
                prop_assert_eq!(out[i], requantize_naive(wa + wb, r.output, zp_out, lo, 127));
                // And it is the rounded real sum, within one step (before clamping).
                let real = scale(ea) * f64::from(i32::from(a[i]) - i32::from(zp_a))
                    + scale(eb) * f64::from(i32::from(b[i]) - i32::from(zp_b));
                let want = (real / scale(eo) + f64::from(zp_out)).clamp(f64::from(lo), 127.0);
                prop_assert!((f64::from(out[i]) - want).abs() <= 1.0, "{} vs {want}", out[i]);
            }
        }

        #[test]
        fn affine_matches_naive_and_real(zp_in in zp(), zp_out in zp(), channels in 1usize..5,
                                         rows in 0usize..5, seed in any::<u64>()) {
            let mut gen = Gen(seed);
            // Ratios from 2^-12 to 2^6 of either sign, offsets up to ±2^12 output steps.
            let real: Vec<(f64, f64)> = (0..channels).map(|_| {
                let ratio = libm::ldexp(1.0 + gen.range(0, 999) as f64 / 1000.0, gen.range(-12, 5))
                    * if gen.next() % 2 == 0 { -1.0 } else { 1.0 };
                (ratio, gen.range(-4096, 4096) as f64 + gen.range(0, 99) as f64 / 100.0)
            }).collect();
            let ch: Vec<_> = real.iter().map(|&(r, t)| quantize_affine_channel(r, t).unwrap()).collect();
            let scale: Vec<i32> = ch.iter().map(|c| c.scale).collect();
            let offset: Vec<i32> = ch.iter().map(|c| c.offset).collect();
            let mult: Vec<i32> = ch.iter().map(|c| c.requant.multiplier).collect();
            let shift: Vec<i32> = ch.iter().map(|c| c.requant.shift).collect();
            let q = AffineQuant {
                input_zero_point: zp_in, scale: &scale, offset: &offset, multiplier: &mult,
                shift: &shift, output: OutputQuant { zero_point: zp_out, clamp: Clamp::FULL },
            };
            let x = gen.i8s(rows * channels);
            let mut out = std::vec![0i8; rows * channels];
            affine(&q, &x, &mut out);
            for (i, (&o, &xi)) in out.iter().zip(&x).enumerate() {
                let c = i % channels;
                let centred = i64::from(xi) - i64::from(zp_in);
                let acc = centred * i64::from(scale[c]) + i64::from(offset[c]);
                prop_assert_eq!(o, requantize_naive(acc, ch[c].requant, zp_out, -128, 127));
                let (ratio, t) = real[c];
                let want = (ratio * centred as f64 + t + f64::from(zp_out)).clamp(-128.0, 127.0);
                prop_assert!((f64::from(o) - want).abs() <= 0.51, "{o} vs {want}");
            }
        }

        #[test]
        fn affine_and_add_never_panic(seed in any::<u64>(), n in 0usize..20, c in 0usize..4) {
            let mut gen = Gen(seed);
            let k: Vec<i32> = (0..c).map(|_| gen.next() as i32).collect();
            let q = AffineQuant {
                input_zero_point: gen.i8(), scale: &k, offset: &k, multiplier: &k, shift: &k[..c / 2],
                output: OutputQuant { zero_point: gen.i8(), clamp: Clamp::FULL },
            };
            let mut out = std::vec![0i8; n];
            affine(&q, &gen.i8s(n + 1), &mut out);
            let r = Requant { multiplier: gen.next() as i32, shift: gen.next() as i32 };
            let q = AddQuant {
                input_zero_points: [gen.i8(), gen.i8()], input_requant: [r, r], output_requant: r,
                output: OutputQuant { zero_point: gen.i8(), clamp: Clamp::FULL },
            };
            add(&q, &gen.i8s(n), &gen.i8s(n / 2), &mut out);
        }
    }
}
