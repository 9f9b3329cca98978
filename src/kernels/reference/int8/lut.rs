//! Table-driven int8 functions: any element-wise activation (sigmoid, leaky ReLU, tanh, ...) as a
//! 256-entry lookup, and softmax from a table of exponentials. The host computes the tables in
//! floating point once; the device only indexes and does integer arithmetic.

use crate::quant::contract::WIDE_SOFTMAX_OUTPUT_SHIFT;

/// Element-wise function by table: `output[i] = table[input[i] + 128]`.
///
/// The host builds `table` with [`crate::quant::lookup_table`] from the function and the input and
/// output quantization, so the result is the correctly rounded int8 value of the real function.
pub fn lookup(table: &[i8; 256], input: &[i8], output: &mut [i8]) {
    for (o, x) in output.iter_mut().zip(input) {
        *o = table[usize::from((*x as u8) ^ 0x80)];
    }
}

/// Softmax over rows of `channels` elements, output quantized with scale `1 / 256` and zero point
/// [`SOFTMAX_OUTPUT_ZERO_POINT`](crate::quant::contract::SOFTMAX_OUTPUT_ZERO_POINT).
///
/// `exp_table[d]` is `exp(−s_in · d)` in a fixed-point unit of the host's choice (e.g.
/// `round(exp(−s_in · d) · 2^16)`, so `exp_table[0] = 2^16`), for `d = max_row − q` in `0..=255`.
/// Each output is `min(127, floor((e · 256 + S / 2) / S) − 128)` with `e = exp_table[max − q]` and
/// `S` the row's sum of `e` (u64, cannot overflow for rows below 2^32 elements); a row whose sum
/// is 0 (an all-zero table) gives `-128`.
pub fn softmax(exp_table: &[u32; 256], channels: usize, input: &[i8], output: &mut [i8]) {
    if channels == 0 {
        return;
    }
    for (out_row, in_row) in output
        .chunks_exact_mut(channels)
        .zip(input.chunks_exact(channels))
    {
        let max = in_row.iter().copied().max().unwrap_or(i8::MIN);
        // max − q is in 0..=255 for every q of the row.
        let exp = |q: i8| u64::from(exp_table[usize::from(max.abs_diff(q))]);
        let sum: u64 = in_row.iter().fold(0u64, |s, q| s.saturating_add(exp(*q)));
        for (o, q) in out_row.iter_mut().zip(in_row) {
            let steps = exp(*q)
                .saturating_mul(256)
                .saturating_add(sum / 2)
                .checked_div(sum)
                .unwrap_or(0);
            // steps <= 256 (e <= S); shift to the zero point and clamp to 127.
            *o = i8::try_from(steps.min(255) as i32 - 128).unwrap_or(i8::MAX);
        }
    }
}

/// Softmax over rows of `channels` int16 values (the output of a wide dense layer), int16 output
/// with scale `1 / 2^15` and zero point 0.
///
/// With `d = max_row − q` in `0..=65535`, `exp(−s_in · d)` is the product of two tables:
/// `e = floor((exp_hi[d >> 8] · exp_lo[d & 255] + 2^30) / 2^31)`, where the host stores
/// `exp_hi[h] = round(exp(−s_in · 256 · h) · 2^31)` and `exp_lo[l] = round(exp(−s_in · l) · 2^31)`
/// (u64 products, so `e <= 2^31`). Each output is
/// `min(32767, floor((e · 2^15 + S / 2) / S))` with `S` the row's sum of `e` (u64, saturating); a
/// row whose sum is 0 gives 0.
pub fn softmax_wide(
    exp_hi: &[u32; 256],
    exp_lo: &[u32; 256],
    channels: usize,
    input: &[i16],
    output: &mut [i16],
) {
    if channels == 0 {
        return;
    }
    for (out_row, in_row) in output
        .chunks_exact_mut(channels)
        .zip(input.chunks_exact(channels))
    {
        let max = in_row.iter().copied().max().unwrap_or(i16::MIN);
        let exp = |q: i16| {
            // max − q is in 0..=65535 for every q of the row.
            let d = usize::from(max.abs_diff(q));
            let product = u64::from(exp_hi[(d >> 8) & 0xff]) * u64::from(exp_lo[d & 0xff]);
            (product + (1 << 30)) >> 31
        };
        let sum: u64 = in_row.iter().fold(0u64, |s, q| s.saturating_add(exp(*q)));
        for (o, q) in out_row.iter_mut().zip(in_row) {
            let steps = (exp(*q) << WIDE_SOFTMAX_OUTPUT_SHIFT)
                .saturating_add(sum / 2)
                .checked_div(sum)
                .unwrap_or(0);
            *o = i16::try_from(steps.min(i16::MAX as u64)).unwrap_or(i16::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::testing::Gen;
    use super::*;
    use crate::quant::lookup_table;
    use proptest::prelude::*;

    fn exp_table(scale: f64) -> [u32; 256] {
        core::array::from_fn(|d| libm::round(libm::exp(-scale * d as f64) * 65536.0) as u32)
    }

    #[test]
    fn lookup_applies_the_table() {
        let sigmoid = lookup_table(
            |x| 1.0 / (1.0 + libm::exp(-x)),
            (0.1, 0),
            (1.0 / 256.0, -128),
        );
        let mut out = [0i8; 3];
        lookup(&sigmoid, &[0, -128, 127], &mut out);
        // sigmoid(0) = 0.5 -> 128 steps -> 0; sigmoid(-12.8) ~ 0 -> -128; sigmoid(12.7) ~ 1 -> 127.
        assert_eq!(out, [0, -128, 127]);
        let identity: [i8; 256] = core::array::from_fn(|i| (i as i32 - 128) as i8);
        let all: std::vec::Vec<i8> = (-128..=127).collect();
        let mut out = [0i8; 256];
        lookup(&identity, &all, &mut out);
        assert_eq!(&out[..], &all[..]);
    }

    #[test]
    fn softmax_by_hand() {
        let table = exp_table(0.5);
        let mut out = [0i8; 6];
        // Two equal logits: 1/2 each -> 128 steps -> 0. One dominant row: 127 and -128s.
        softmax(&table, 2, &[5, 5, 100, -100], &mut out[..4]);
        assert_eq!(&out[..4], &[0, 0, 127, -128]);
        // Single element per row: probability 1 saturates at 127.
        softmax(&table, 1, &[7, -128], &mut out[..2]);
        assert_eq!(&out[..2], &[127, 127]);
        softmax(&[0; 256], 3, &[1, 2, 3], &mut out[..3]);
        assert_eq!(&out[..3], &[-128; 3]);
    }

    proptest! {
        #[test]
        fn softmax_is_within_one_step_of_real(channels in 1usize..12, rows in 1usize..4,
                                               scale_milli in 1u32..400, seed in any::<u64>()) {
            let scale = f64::from(scale_milli) / 1000.0;
            let table = exp_table(scale);
            let x = Gen(seed).i8s(channels * rows);
            let mut out = std::vec![0i8; channels * rows];
            softmax(&table, channels, &x, &mut out);
            for (row, out_row) in x.chunks(channels).zip(out.chunks(channels)) {
                let max = *row.iter().max().unwrap() as f64;
                let e: std::vec::Vec<f64> = row.iter().map(|&q| libm::exp(scale * (q as f64 - max))).collect();
                let s: f64 = e.iter().sum();
                for (o, e) in out_row.iter().zip(&e) {
                    let want = (e / s * 256.0 - 128.0).min(127.0);
                    prop_assert!((f64::from(*o) - want).abs() <= 1.0, "{o} vs {want}");
                }
            }
        }

        #[test]
        fn softmax_never_panics(table in proptest::array::uniform32(any::<u32>()),
                                channels in 0usize..5, n in 0usize..20, seed in any::<u64>()) {
            let mut full = [0u32; 256];
            for (i, t) in full.iter_mut().enumerate() { *t = table[i % 32]; }
            let mut out = std::vec![0i8; n];
            softmax(&full, channels, &Gen(seed).i8s(n + 1), &mut out);
        }
    }

    fn wide_tables(scale: f64) -> ([u32; 256], [u32; 256]) {
        let t = |step: f64| -> [u32; 256] {
            core::array::from_fn(|i| {
                libm::round(libm::exp(-scale * step * i as f64) * 2147483648.0) as u32
            })
        };
        (t(256.0), t(1.0))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The documented integer rule, in i128, and within 2 steps of the real softmax.
        #[test]
        fn softmax_wide_matches_its_definition(n in 1usize..12, rows in 1usize..4,
                                               scale_exp in -14i32..-2, seed in any::<u64>()) {
            let mut gen = Gen(seed);
            let scale = libm::pow(2.0, f64::from(scale_exp)) * 1.37;
            let (hi, lo) = wide_tables(scale);
            let x: std::vec::Vec<i16> = (0..n * rows).map(|_| match gen.next() % 6 {
                0 => i16::MIN,
                1 => i16::MAX,
                _ => gen.next() as u16 as i16,
            }).collect();
            let mut y = std::vec![0i16; n * rows];
            softmax_wide(&hi, &lo, n, &x, &mut y);
            for (xr, yr) in x.chunks(n).zip(y.chunks(n)) {
                let max = i128::from(*xr.iter().max().unwrap());
                let e: std::vec::Vec<i128> = xr.iter().map(|&q| {
                    let d = (max - i128::from(q)) as usize;
                    (i128::from(hi[d >> 8]) * i128::from(lo[d & 255]) + (1 << 30)) >> 31
                }).collect();
                let s: i128 = e.iter().sum();
                let real_max = xr.iter().map(|&q| f64::from(q) * scale).fold(f64::MIN, f64::max);
                let real_sum: f64 = xr.iter().map(|&q| libm::exp(f64::from(q) * scale - real_max)).sum();
                for ((&ei, &yi), &q) in e.iter().zip(yr).zip(xr) {
                    let want = if s == 0 { 0 } else { ((ei << 15) + s / 2) / s };
                    prop_assert_eq!(i128::from(yi), want.min(32767));
                    let p = libm::exp(f64::from(q) * scale - real_max) / real_sum;
                    prop_assert!((f64::from(yi) - p * 32768.0).abs() <= 2.0,
                                 "{} vs {}", yi, p * 32768.0);
                }
            }
        }
    }

    #[test]
    fn softmax_wide_separates_logits_one_int8_step_apart_cannot() {
        // Two logits 0.01 apart: on an int8 grid of step 0.05 they are one value; int16 keeps
        // them apart and the larger one wins the argmax.
        let scale = 0.05 / 256.0;
        let (hi, lo) = wide_tables(scale);
        let x = [
            (1.00 / scale) as i16,
            (1.01 / scale) as i16,
            (-2.0 / scale) as i16,
        ];
        let mut y = [0i16; 3];
        softmax_wide(&hi, &lo, 3, &x, &mut y);
        assert!(y[1] > y[0], "{y:?}");
        let total: i32 = y.iter().map(|&v| i32::from(v)).sum();
        assert!((total - 32768).abs() <= 2, "{y:?}");
    }

    #[test]
    fn softmax_wide_odd_sizes_do_not_panic() {
        let (hi, lo) = wide_tables(0.001);
        let mut y = [5i16; 7];
        softmax_wide(&hi, &lo, 3, &[1, 2, 3, 4, 5], &mut y);
        softmax_wide(&hi, &lo, 0, &[1, 2], &mut y);
        softmax_wide(&[0; 256], &[0; 256], 2, &[1, 2], &mut y);
        assert_eq!(&y[..2], &[0, 0], "an all-zero table gives 0");
    }
}
