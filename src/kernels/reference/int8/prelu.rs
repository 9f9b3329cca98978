//! int8 PReLU with one slope per channel: two factors, one for each sign of the input.

use super::{OutputQuant, Requant};

/// Quantization of an int8 PReLU over `[.., C]`: `positive` is `s_in / s_out`, the channel's
/// negative factor `slope[c] · s_in / s_out` (any sign), as `multiplier[c]`, `shift[c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreluQuant<'a> {
    /// Zero point of the input.
    pub input_zero_point: i8,
    /// Factor of the non-negative inputs.
    pub positive: Requant,
    /// Q31 mantissas of each channel's negative factor.
    pub multiplier: &'a [i32],
    /// Exponents of each channel's negative factor.
    pub shift: &'a [i32],
    /// Output zero point and clamp.
    pub output: OutputQuant,
}

/// `out = clamp(zp_out + r(d))` with `d = q − zp_in` and `r` the positive factor for `d >= 0`,
/// channel `c`'s negative factor otherwise, over the last dimension of length
/// `quant.multiplier.len()`. `|d| <= 255`: one rounding, no overflow.
pub fn prelu(quant: &PreluQuant, input: &[i8], output: &mut [i8]) {
    let channels = quant.multiplier.len();
    if channels == 0 {
        return;
    }
    let zero_in = i32::from(quant.input_zero_point);
    for (out_row, in_row) in output
        .chunks_exact_mut(channels)
        .zip(input.chunks_exact(channels))
    {
        let negative = quant.multiplier.iter().zip(quant.shift);
        for ((o, q), (multiplier, shift)) in out_row.iter_mut().zip(in_row).zip(negative) {
            let d = i32::from(*q) - zero_in;
            let requant = if d >= 0 {
                quant.positive
            } else {
                Requant {
                    multiplier: *multiplier,
                    shift: *shift,
                }
            };
            *o = quant.output.requantize(d, requant);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::super::testing::{requantize_naive, Gen};
    use super::*;
    use crate::quant::Clamp;

    #[test]
    fn matches_the_naive_rule_per_channel_and_sign() {
        let mut g = Gen(29);
        for round in 0..100 {
            let channels = 1 + round % 4;
            let input = g.i8s(channels * 3);
            let negatives: std::vec::Vec<Requant> = (0..channels)
                .map(|c| {
                    let mut r = g.requant();
                    // Negative slopes too (a PReLU slope may have any sign).
                    if c % 2 == 1 {
                        r.multiplier = -r.multiplier;
                    }
                    r
                })
                .collect();
            let multiplier: std::vec::Vec<i32> = negatives.iter().map(|r| r.multiplier).collect();
            let shift: std::vec::Vec<i32> = negatives.iter().map(|r| r.shift).collect();
            let quant = PreluQuant {
                input_zero_point: g.i8(),
                positive: g.requant(),
                multiplier: &multiplier,
                shift: &shift,
                output: OutputQuant {
                    zero_point: g.i8(),
                    clamp: Clamp::FULL,
                },
            };
            let mut out = std::vec![0i8; input.len()];
            prelu(&quant, &input, &mut out);
            for (i, &o) in out.iter().enumerate() {
                let d = i64::from(input[i]) - i64::from(quant.input_zero_point);
                let r = if d >= 0 {
                    quant.positive
                } else {
                    negatives[i % channels]
                };
                let want = requantize_naive(d, r, quant.output.zero_point, -128, 127);
                assert_eq!(o, want, "round {round}, element {i}");
            }
        }
    }
}
