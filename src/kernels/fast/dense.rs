//! Fast int8 dense layers: the same results as
//! [`reference::int8::dense`](crate::kernels::reference::int8::dense), byte for byte.
//!
//! Output features in pairs, so each run of four inputs is loaded and widened once for two
//! weight rows ([`conv::dot`](super::conv)), summed over every position of the input (a global
//! pooling folded into the layer), then the reference's output stage.

use super::conv::{dot, stage};
use super::requant::{Bounds, Stage};
use crate::kernels::reference::int8::{ChannelQuant, FromWide, OutputQuant, WideOutputQuant};

/// [`reference::int8::dense::dense`](crate::kernels::reference::int8::dense::dense).
pub fn dense(
    channels: &ChannelQuant,
    out_quant: &OutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    let bounds = Bounds::from(*out_quant);
    rows(channels, &bounds, weights, input, output);
}

/// [`reference::int8::dense::dense_wide`](crate::kernels::reference::int8::dense::dense_wide).
pub fn dense_wide(
    channels: &ChannelQuant,
    out_quant: &WideOutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i16],
) {
    let bounds = Bounds::from(*out_quant);
    rows(channels, &bounds, weights, input, output);
}

/// `output[o] = finish(bias'[o] + Σ_p Σ_i weights[o][i] · input_p[i])`, two rows at a time.
#[inline(never)]
fn rows<Y: FromWide>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i8],
    input: &[i8],
    output: &mut [Y],
) {
    let n_in = weights.len().checked_div(output.len()).unwrap_or(0);
    if n_in == 0 {
        return;
    }
    let finish = |stage: &Stage, acc: i32| Y::from_wide(bounds.apply(stage.scale(acc)) as i16);
    for (pair, out) in output.chunks_mut(2).enumerate() {
        let o = 2 * pair;
        // A last, odd feature reads its own row twice and stores once.
        let second = o + out.len().saturating_sub(1);
        let row = |o: usize| weights.get(o * n_in..(o + 1) * n_in);
        let (Some(w0), Some(w1)) = (row(o), row(second)) else {
            return;
        };
        let (Some((b0, s0)), Some((b1, s1))) = (stage(channels, o), stage(channels, second)) else {
            return;
        };
        let acc = input
            .chunks_exact(n_in)
            .fold([b0, b1], |acc, x| dot([w0, w1], x, acc));
        if let Some(y) = out.first_mut() {
            *y = finish(&s0, acc[0]);
        }
        if let Some(y) = out.get_mut(1) {
            *y = finish(&s1, acc[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::reference::int8::dense as reference;
    use crate::kernels::reference::int8::testing::Gen;
    use crate::kernels::reference::int8::{Clamp, ClampI16};
    use proptest::prelude::*;
    use std::vec::Vec;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn equals_reference(n_in in 1usize..=40, n_out in 1usize..=9, positions in 1usize..=4,
                            zp in any::<i8>(), zp16 in any::<i16>(), relu in any::<bool>(),
                            seed in any::<u64>()) {
            let mut gen = Gen(seed);
            let weights = gen.i8s(n_in * n_out);
            let input = gen.i8s(n_in * positions);
            let bias: Vec<i32> = (0..n_out).map(|_| gen.range(-(1 << 20), 1 << 20)).collect();
            // Factors near 1 half of the time, so a one-unit difference shows.
            let requant: Vec<_> = (0..n_out)
                .map(|_| if gen.next() % 2 == 0 {
                    crate::quant::Requant { multiplier: gen.range(1 << 30, i32::MAX), shift: gen.range(-3, 1) }
                } else {
                    gen.requant()
                })
                .collect();
            let multiplier: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
            let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
            let channels = ChannelQuant { bias: &bias, multiplier: &multiplier, shift: &shift };
            let clamp = if relu { Clamp { min: zp, max: 127 } } else { Clamp::FULL };
            let q = OutputQuant { zero_point: zp, clamp };
            let (mut fast, mut want) = (std::vec![0i8; n_out], std::vec![0i8; n_out]);
            dense(&channels, &q, &weights, &input, &mut fast);
            reference::dense(&channels, &q, &weights, &input, &mut want);
            prop_assert_eq!(fast, want);
            let clamp = if relu { ClampI16 { min: zp16, max: i16::MAX } } else { ClampI16 { min: i16::MIN, max: i16::MAX } };
            let q = WideOutputQuant { zero_point: zp16, clamp };
            let (mut fast, mut want) = (std::vec![0i16; n_out], std::vec![0i16; n_out]);
            dense_wide(&channels, &q, &weights, &input, &mut fast);
            reference::dense_wide(&channels, &q, &weights, &input, &mut want);
            prop_assert_eq!(fast, want);
        }
    }
}
