//! int8 fully connected layer.

use super::{dot, ChannelQuant, OutputQuant, WideOutputQuant};

/// `output[o] = clamp(zp_out + requant_o(bias'[o] + Σ_p Σ_i weights[o][i] · input_p[i]))` with
/// `weights` row-major `[output.len()][n_in]`, `n_in = weights.len() / output.len()`, the input read
/// as `P = input.len() / n_in` consecutive vectors `input_p` (`P > 1`: a global average pooling
/// folded in, its `1/P` in the factor) and the input zero point folded into `bias'` (see the
/// [module docs](super)).
pub fn dense(
    channels: &ChannelQuant,
    out_quant: &OutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    accumulate(channels, weights, input, output, |acc, requant| {
        out_quant.requantize(acc, requant)
    });
}

/// [`dense`] with an int16 output: the same accumulator and factor, then the int16 zero point and
/// bounds (`DenseI8Wide`, a model's last layer).
pub fn dense_wide(
    channels: &ChannelQuant,
    out_quant: &WideOutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i16],
) {
    accumulate(channels, weights, input, output, |acc, requant| {
        out_quant.requantize(acc, requant)
    });
}

/// [`dense`] with the weights as [`DenseLayout::QuadsI16`](crate::format::DenseLayout) stores
/// them: the same int8 values as int16, `weights[quad_index(n_out, n_in, o, i)]` holding
/// `w[o][i]` ([`crate::format::quad_index`]). The same bytes as [`dense`] on the same values.
pub fn dense_quads(
    channels: &ChannelQuant,
    out_quant: &OutputQuant,
    weights: &[i16],
    input: &[i8],
    output: &mut [i8],
) {
    accumulate_quads(channels, weights, input, output, |acc, requant| {
        out_quant.requantize(acc, requant)
    });
}

/// [`dense_wide`] with the weights as [`dense_quads`] reads them.
pub fn dense_wide_quads(
    channels: &ChannelQuant,
    out_quant: &WideOutputQuant,
    weights: &[i16],
    input: &[i8],
    output: &mut [i16],
) {
    accumulate_quads(channels, weights, input, output, |acc, requant| {
        out_quant.requantize(acc, requant)
    });
}

/// [`accumulate`] reading `w[o][i]` at [`quad_index`](crate::format::quad_index).
fn accumulate_quads<T>(
    channels: &ChannelQuant,
    weights: &[i16],
    input: &[i8],
    output: &mut [T],
    finish: impl Fn(i32, super::Requant) -> T,
) {
    let n_out = output.len();
    let n_in = weights.len().checked_div(n_out).unwrap_or(0);
    if n_in == 0 || n_in % 4 != 0 {
        return;
    }
    for (o, out) in output.iter_mut().enumerate() {
        let Some((bias, requant)) = channels.channel(o) else {
            continue;
        };
        let w = |i: usize| {
            let at = crate::format::quad_index(n_out, n_in, o, i);
            i32::from(weights.get(at).copied().unwrap_or(0))
        };
        let acc = input.chunks_exact(n_in).fold(bias, |acc, x| {
            x.iter().enumerate().fold(acc, |acc, (i, &x)| {
                acc.wrapping_add(w(i).wrapping_mul(i32::from(x)))
            })
        });
        *out = finish(acc, requant);
    }
}

/// [`dense`] with the weights as [`DenseLayout::PairsI8`](crate::format::DenseLayout) stores
/// them: rows in pairs, `w[o][i]` decoded by [`pair_weight`](crate::format::pair_weight). The
/// same bytes as [`dense`] on the decoded values.
pub fn dense_pairs(
    channels: &ChannelQuant,
    out_quant: &OutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    accumulate_pairs(channels, weights, input, output, |acc, requant| {
        out_quant.requantize(acc, requant)
    });
}

/// [`dense_wide`] with the weights as [`dense_pairs`] reads them.
pub fn dense_wide_pairs(
    channels: &ChannelQuant,
    out_quant: &WideOutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i16],
) {
    accumulate_pairs(channels, weights, input, output, |acc, requant| {
        out_quant.requantize(acc, requant)
    });
}

/// [`accumulate`] reading `w[o][i]` through [`pair_weight`](crate::format::pair_weight).
fn accumulate_pairs<T>(
    channels: &ChannelQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [T],
    finish: impl Fn(i32, super::Requant) -> T,
) {
    let n_out = output.len();
    let n_in = weights.len().checked_div(n_out).unwrap_or(0);
    if n_in == 0 {
        return;
    }
    for (o, out) in output.iter_mut().enumerate() {
        let Some((bias, requant)) = channels.channel(o) else {
            continue;
        };
        let w = |i: usize| crate::format::pair_weight(weights, n_out, n_in, o, i).unwrap_or(0);
        let acc = input.chunks_exact(n_in).fold(bias, |acc, x| {
            x.iter().enumerate().fold(acc, |acc, (i, &x)| {
                acc.wrapping_add(w(i).wrapping_mul(i32::from(x)))
            })
        });
        *out = finish(acc, requant);
    }
}

/// `output[o] = finish(bias'[o] + Σ_p Σ_i weights[o][i] · input_p[i], factor_o)`.
#[inline]
fn accumulate<T>(
    channels: &ChannelQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [T],
    finish: impl Fn(i32, super::Requant) -> T,
) {
    let n_in = weights.len().checked_div(output.len()).unwrap_or(0);
    if n_in == 0 {
        return;
    }
    for (o, (out, row)) in output
        .iter_mut()
        .zip(weights.chunks_exact(n_in))
        .enumerate()
    {
        let Some((bias, requant)) = channels.channel(o) else {
            continue;
        };
        let acc = input
            .chunks_exact(n_in)
            .fold(bias, |acc, x| acc.wrapping_add(dot(row, x)));
        *out = finish(acc, requant);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::testing::{requant_naive, requantize_naive, Gen};
    use super::super::{Clamp, ClampI16, Requant};
    use super::*;
    use crate::quant::contract::{accumulator_fits, MAX_PRODUCTS_PER_OUTPUT};
    use proptest::prelude::*;
    use std::vec::Vec;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_naive_definition(n_in in 1usize..70, n_out in 1usize..6, positions in prop_oneof![Just(1usize), 2usize..6],
                                    zp_in in prop_oneof![Just(-128i8), Just(127i8), any::<i8>()],
                                    zp_out in prop_oneof![Just(-128i8), Just(127i8), any::<i8>()],
                                    lo in any::<i8>(), seed in any::<u64>()) {
            let mut gen = Gen(seed);
            let (w, x) = (gen.i8s(n_in * n_out), gen.i8s(positions * n_in));
            let raw_bias: Vec<i64> = (0..n_out).map(|_| i64::from(gen.range(-(1 << 24), 1 << 24))).collect();
            let requant: Vec<Requant> = (0..n_out).map(|_| gen.requant()).collect();
            let folded: Vec<i32> = (0..n_out).map(|o| {
                let sum: i64 = w[o * n_in..(o + 1) * n_in].iter().map(|&v| i64::from(v)).sum();
                (raw_bias[o] - i64::from(zp_in) * positions as i64 * sum) as i32
            }).collect();
            let mult: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
            let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
            let out_q = OutputQuant { zero_point: zp_out, clamp: Clamp { min: lo, max: 127 } };
            let mut out = std::vec![0i8; n_out];
            dense(&ChannelQuant { bias: &folded, multiplier: &mult, shift: &shift }, &out_q, &w, &x, &mut out);
            for o in 0..n_out {
                // Every position's products: a global pooling folded into the layer.
                let acc = raw_bias[o] + (0..positions * n_in)
                    .map(|k| i64::from(w[o * n_in + k % n_in]) * (i64::from(x[k]) - i64::from(zp_in)))
                    .sum::<i64>();
                prop_assert_eq!(out[o], requantize_naive(acc, requant[o], zp_out, lo, 127));
            }
        }

        #[test]
        fn wide_matches_naive_definition(n_in in 1usize..70, n_out in 1usize..6, positions in prop_oneof![Just(1usize), 2usize..6],
                                         zp_in in prop_oneof![Just(-128i8), Just(127i8), any::<i8>()],
                                         zp_out in prop_oneof![Just(i16::MIN), Just(i16::MAX), Just(0i16), any::<i16>()],
                                         lo in any::<i16>(), seed in any::<u64>()) {
            let mut gen = Gen(seed);
            let (w, x) = (gen.i8s(n_in * n_out), gen.i8s(positions * n_in));
            let raw_bias: Vec<i64> = (0..n_out).map(|_| i64::from(gen.range(-(1 << 24), 1 << 24))).collect();
            // Factors up to 2^12: int16 outputs use the whole range and saturate.
            let requant: Vec<Requant> = (0..n_out).map(|_| {
                let mut r = gen.requant();
                r.shift = r.shift.min(12) + 8;
                r
            }).collect();
            let folded: Vec<i32> = (0..n_out).map(|o| {
                let sum: i64 = w[o * n_in..(o + 1) * n_in].iter().map(|&v| i64::from(v)).sum();
                (raw_bias[o] - i64::from(zp_in) * positions as i64 * sum) as i32
            }).collect();
            let mult: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
            let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
            let out_q = WideOutputQuant { zero_point: zp_out, clamp: ClampI16 { min: lo, max: i16::MAX } };
            let mut out = std::vec![0i16; n_out];
            dense_wide(&ChannelQuant { bias: &folded, multiplier: &mult, shift: &shift }, &out_q, &w, &x, &mut out);
            for o in 0..n_out {
                // Every position's products: a global pooling folded into the layer.
                let acc = raw_bias[o] + (0..positions * n_in)
                    .map(|k| i64::from(w[o * n_in + k % n_in]) * (i64::from(x[k]) - i64::from(zp_in)))
                    .sum::<i64>();
                let want = (requant_naive(acc, requant[o]) + i64::from(zp_out))
                    .clamp(i64::from(lo).min(i64::from(i16::MAX)), i64::from(i16::MAX));
                prop_assert_eq!(i64::from(out[o]), want);
            }
        }
    }

    /// Every weight `w[o][i]` of the rows, widened and stored at its [`quad_index`].
    pub(crate) fn quads_of(rows: &[i8], n_out: usize) -> Vec<i16> {
        let n_in = rows.len() / n_out;
        let mut quads = std::vec![i16::MAX; rows.len()];
        for o in 0..n_out {
            for i in 0..n_in {
                quads[crate::format::quad_index(n_out, n_in, o, i)] = rows[o * n_in + i].into();
            }
        }
        quads
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The two layouts of the same values give the same bytes; `quad_index` is a
        /// permutation (a position it missed would keep `i16::MAX`, far outside int8).
        #[test]
        fn quads_equal_rows(runs in 1usize..12, n_out in 1usize..11, positions in 1usize..4,
                            zp_out in any::<i8>(), zp16 in any::<i16>(), seed in any::<u64>()) {
            let n_in = 4 * runs;
            let mut gen = Gen(seed);
            let (w, x) = (gen.i8s(n_in * n_out), gen.i8s(positions * n_in));
            let quads = quads_of(&w, n_out);
            prop_assert!(quads.iter().all(|v| (-128..=127).contains(v)));
            let bias: Vec<i32> = (0..n_out).map(|_| gen.range(-(1 << 20), 1 << 20)).collect();
            let requant: Vec<Requant> = (0..n_out).map(|_| gen.requant()).collect();
            let mult: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
            let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
            let c = ChannelQuant { bias: &bias, multiplier: &mult, shift: &shift };
            let q = OutputQuant { zero_point: zp_out, clamp: Clamp::FULL };
            let (mut a, mut b) = (std::vec![0i8; n_out], std::vec![0i8; n_out]);
            dense(&c, &q, &w, &x, &mut a);
            dense_quads(&c, &q, &quads, &x, &mut b);
            prop_assert_eq!(a, b);
            let q = WideOutputQuant { zero_point: zp16, clamp: ClampI16 { min: i16::MIN, max: i16::MAX } };
            let (mut a, mut b) = (std::vec![0i16; n_out], std::vec![0i16; n_out]);
            dense_wide(&c, &q, &w, &x, &mut a);
            dense_wide_quads(&c, &q, &quads, &x, &mut b);
            prop_assert_eq!(a, b);
        }
    }

    /// The worst case the loader admits: 2^16 products of -128 · -128 plus the largest bias.
    #[test]
    fn largest_admitted_accumulator_is_exact() {
        let n = MAX_PRODUCTS_PER_OUTPUT;
        let bias = (1 << 30) - 1;
        assert!(accumulator_fits(n, bias));
        let (w, x) = (std::vec![-128i8; n], std::vec![-128i8; n]);
        // Factor 2^-31 maps the exact sum 2^30 - 1 + 2^30 = 2^31 - 1 to 1 (0.99999...).
        let tiny = Requant {
            multiplier: 1 << 30,
            shift: -30,
        };
        let out_q = OutputQuant {
            zero_point: 0,
            clamp: Clamp::FULL,
        };
        let mut out = [0i8];
        let channels = ChannelQuant {
            bias: &[bias],
            multiplier: &[tiny.multiplier],
            shift: &[tiny.shift],
        };
        dense(&channels, &out_q, &w, &x, &mut out);
        assert_eq!(out, [1]);
        assert_eq!(tiny.apply(i32::MAX), 1);
    }

    #[test]
    fn inconsistent_sizes_do_not_panic() {
        let q = [1i32, 2];
        let channels = ChannelQuant {
            bias: &q,
            multiplier: &q,
            shift: &q[..1],
        };
        let out_q = OutputQuant {
            zero_point: 0,
            clamp: Clamp::FULL,
        };
        for (n_w, n_in, n_out) in [(0, 0, 3), (5, 3, 3), (9, 3, 1), (9, 3, 4), (1, 9, 2)] {
            let mut out = std::vec![7i8; n_out];
            dense(
                &channels,
                &out_q,
                &std::vec![1; n_w],
                &std::vec![1; n_in],
                &mut out,
            );
        }
    }
}
