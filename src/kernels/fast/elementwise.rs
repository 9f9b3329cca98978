//! Fast int8 residual addition: the same results as
//! [`reference::int8::elementwise::add`](crate::kernels::reference::int8::elementwise::add),
//! byte for byte, with the three factors prepared once per layer ([`Stage`]) instead of once per
//! element.

use super::requant::{Bounds, Stage};
use super::simd;
use crate::kernels::reference::int8::elementwise::{AddQuant, AffineQuant};
use crate::kernels::reference::int8::mul::MulQuant;
use crate::quant::ADD_LEFT_SHIFT;

/// Fewest elements for which [`add`] tabulates the two inputs' rescaling (512 evaluations).
const TABLE_MIN: usize = 1024;

/// [`reference::int8::elementwise::add`](crate::kernels::reference::int8::elementwise::add).
#[inline(never)]
pub fn add(quant: &AddQuant, a: &[i8], b: &[i8], output: &mut [i8]) {
    if cfg!(icefold_reference_only) {
        return crate::kernels::reference::int8::elementwise::add(quant, a, b, output);
    }
    // Eight elements per step with AVX2 (the same arithmetic lane by lane).
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::x86::int8::add(quant, a, b, output) {
        return;
    }
    portable(quant, a, b, output, output.len() >= TABLE_MIN);
}

/// [`add`] on every core but x86_64, with the inputs' rescaling tabulated whatever the number
/// of elements (for checks on short tensors: `add` tabulates from [`TABLE_MIN`] on).
pub fn add_tabulated(quant: &AddQuant, a: &[i8], b: &[i8], output: &mut [i8]) {
    portable(quant, a, b, output, true);
}

/// [`add`] without the x86_64 kernel: every other core's loop (tested on the host too),
/// tabulating the inputs' rescaling if `tables`.
#[inline(always)]
fn portable(quant: &AddQuant, a: &[i8], b: &[i8], output: &mut [i8], tables: bool) {
    let [zp_a, zp_b] = quant.input_zero_points.map(i32::from);
    let [r_a, r_b] = quant.input_requant.map(Stage::new);
    let r_out = Stage::new(quant.output_requant);
    let bounds = Bounds::from(quant.output);
    let widen = |q: i8, zp: i32, r: &Stage| {
        r.scale_inline((i32::from(q) - zp).wrapping_shl(ADD_LEFT_SHIFT as u32))
    };
    if tables {
        // Each input's rescaled value depends on its int8 value alone: two tables of 256
        // (2 KiB of stack), then per element two loads, a saturating add and the output stage.
        let table = |zp: i32, r: &Stage| -> [i32; 256] {
            core::array::from_fn(|i| widen(i as u8 as i8, zp, r))
        };
        let (t_a, t_b) = (table(zp_a, &r_a), table(zp_b, &r_b));
        let sums = a.iter().zip(b).map(|(x, y)| {
            let (x, y) = (t_a[usize::from(*x as u8)], t_b[usize::from(*y as u8)]);
            x.saturating_add(y)
        });
        // The output factor's form chosen once: its constants and the clamp in registers.
        match r_out.single().and_then(|s| s.run(&bounds)) {
            // The int8 range (an output after ReLU has its zero point at -128) on DSP cores
            // (and in the host tests): the clamp as one saturation, 13 instructions per element
            // where the loop below takes 24. Not on the others: the assembly's portable twin
            // cost the Cortex-M3 27 per element where the loop below takes 14.
            Some(run) if cfg!(any(icefold_dsp, test)) && (run.min, run.max) == (-128, 127) => {
                simd::add_tabulated([&t_a, &t_b], a, b, output, &run);
            }
            Some(run) => {
                for (o, sum) in output.iter_mut().zip(sums) {
                    *o = run.apply(sum) as i8;
                }
            }
            None => {
                for (o, sum) in output.iter_mut().zip(sums) {
                    *o = bounds.apply(r_out.scale_inline(sum)) as i8;
                }
            }
        }
        return;
    }
    for (o, (x, y)) in output.iter_mut().zip(a.iter().zip(b)) {
        let sum = widen(*x, zp_a, &r_a).saturating_add(widen(*y, zp_b, &r_b));
        // In the int8 range: the bounds are int8.
        *o = bounds.apply(r_out.scale_inline(sum)) as i8;
    }
}

/// [`reference::int8::elementwise::affine`](crate::kernels::reference::int8::elementwise::affine):
/// the channels outermost, each one's output factor prepared once ([`Stage`]) and its pixels
/// read `channels` bytes apart. The reference builds the factor's general form per element
/// (about 70 instructions per element on the Cortex-M4F, MixNet's 16x16x48 affine layer 0.85 M).
#[inline(never)]
pub fn affine(quant: &AffineQuant, input: &[i8], output: &mut [i8]) {
    let channels = quant.scale.len();
    if cfg!(icefold_reference_only) || channels == 0 {
        return crate::kernels::reference::int8::elementwise::affine(quant, input, output);
    }
    // The reference's pixels: whole rows of `channels` in both operands.
    let pixels = (input.len() / channels).min(output.len() / channels);
    let zero_in = i32::from(quant.input_zero_point);
    let bounds = Bounds::from(quant.output);
    let constants = quant
        .scale
        .iter()
        .zip(quant.offset)
        .zip(quant.multiplier.iter().zip(quant.shift));
    for (c, ((&scale, &offset), (&multiplier, &shift))) in constants.enumerate() {
        let stage = Stage::new(crate::quant::Requant { multiplier, shift });
        let xs = input.get(c..).unwrap_or_default().iter().step_by(channels);
        let ys = output
            .get_mut(c..)
            .unwrap_or_default()
            .iter_mut()
            .step_by(channels);
        for (y, x) in ys.zip(xs).take(pixels) {
            let acc = (i32::from(*x) - zero_in)
                .saturating_mul(scale)
                .saturating_add(offset);
            *y = bounds.apply(stage.scale_inline(acc)) as i8;
        }
    }
}

/// [`reference::int8::mul::mul`](crate::kernels::reference::int8::mul::mul): the layer's factor
/// prepared once ([`Stage`]) where the reference builds its general form per element (about 47
/// instructions per element on the Cortex-M4F).
#[inline(never)]
pub fn mul(quant: &MulQuant, a: &[i8], gate: &[i8], output: &mut [i8]) {
    if cfg!(icefold_reference_only) || gate.is_empty() {
        return crate::kernels::reference::int8::mul::mul(quant, a, gate, output);
    }
    let [zp_a, zp_g] = quant.input_zero_points.map(i32::from);
    let stage = Stage::new(quant.requant);
    let bounds = Bounds::from(quant.output);
    for (out_row, a_row) in output
        .chunks_exact_mut(gate.len())
        .zip(a.chunks_exact(gate.len()))
    {
        for (o, (x, g)) in out_row.iter_mut().zip(a_row.iter().zip(gate)) {
            let product = (i32::from(*x) - zp_a) * (i32::from(*g) - zp_g);
            *o = bounds.apply(stage.scale_inline(product)) as i8;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::reference::int8::elementwise as reference;
    use crate::kernels::reference::int8::testing::Gen;
    use crate::kernels::reference::int8::{Clamp, OutputQuant};
    use crate::quant::add_requant;
    use proptest::prelude::*;
    use std::vec::Vec;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn add_equals_reference(n in prop_oneof![1usize..=64, TABLE_MIN..=TABLE_MIN + 300], zps in any::<[i8; 3]>(), relu in any::<bool>(),
                                scales in proptest::array::uniform3(1e-3f64..1.0), seed in any::<u64>()) {
            let mut gen = Gen(seed);
            let (a, b) = (gen.i8s(n), gen.i8s(n));
            let Some(r) = add_requant(scales[0], scales[1], scales[2]) else { return Ok(()) };
            let clamp = if relu { Clamp { min: zps[2], max: 127 } } else { Clamp::FULL };
            let quant = AddQuant {
                input_zero_points: [zps[0], zps[1]],
                input_requant: r.inputs,
                output_requant: r.output,
                output: OutputQuant { zero_point: zps[2], clamp },
            };
            let (mut fast, mut want) = (std::vec![0i8; n], std::vec![0i8; n]);
            add(&quant, &a, &b, &mut fast);
            reference::add(&quant, &a, &b, &mut want);
            prop_assert_eq!(&fast, &want);
            // The loop of the cores without the x86_64 kernel (tables from `TABLE_MIN`).
            let mut portable_out = std::vec![0i8; n];
            portable(&quant, &a, &b, &mut portable_out, n >= TABLE_MIN);
            prop_assert_eq!(&portable_out, &want);
            // The tabulated loop on any length (the int8-range clamp through the DSP cores'
            // loop: `relu` false or a zero point of -128).
            let mut tabulated = std::vec![0i8; n];
            add_tabulated(&quant, &a, &b, &mut tabulated);
            prop_assert_eq!(&tabulated, &want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Per-channel affine layers: random channels and pixels (operands of unequal lengths
        /// and constant arrays shorter than the channels too), factors of every magnitude the
        /// host makes, offsets and scales up to saturation, zero points, clamps.
        #[test]
        fn affine_equals_reference(channels in 1usize..20, pixels in 0usize..12, extra in 0usize..5,
                                   short in 0usize..3, zps in any::<[i8; 2]>(), relu in any::<bool>(),
                                   seed in any::<u64>()) {
            let mut gen = Gen(seed);
            let input = gen.i8s(channels * pixels + extra);
            let constants = channels.saturating_sub(short).max(1);
            let requant: Vec<_> = (0..constants).map(|_| gen.requant()).collect();
            let scale: Vec<i32> = (0..constants).map(|i| gen.i8s(1)[0] as i32 * if i % 3 == 0 { 1 << 24 } else { 1000 }).collect();
            let offset: Vec<i32> = (0..constants).map(|i| gen.i8s(1)[0] as i32 * if i % 2 == 0 { 1 << 24 } else { 300 }).collect();
            let (multiplier, shift): (Vec<i32>, Vec<i32>) = requant.iter().map(|r| (r.multiplier, r.shift)).unzip();
            let clamp = if relu { Clamp { min: zps[1], max: 127 } } else { Clamp::FULL };
            let quant = AffineQuant {
                input_zero_point: zps[0],
                scale: &scale[..],
                offset: &offset[..],
                multiplier: &multiplier,
                shift: &shift,
                output: OutputQuant { zero_point: zps[1], clamp },
            };
            let n = channels * pixels;
            let (mut fast, mut want) = (std::vec![7i8; n], std::vec![7i8; n]);
            affine(&quant, &input, &mut fast);
            crate::kernels::reference::int8::elementwise::affine(&quant, &input, &mut want);
            prop_assert_eq!(&fast, &want);
        }

        /// Gating products: a gate per channel or per element, zero points, every factor.
        #[test]
        fn mul_equals_reference(gate_len in 1usize..20, rows in 0usize..6, per_element in any::<bool>(),
                                zps in any::<[i8; 3]>(), relu in any::<bool>(), seed in any::<u64>()) {
            let mut gen = Gen(seed);
            let a = gen.i8s(gate_len * rows);
            let gate = gen.i8s(if per_element { a.len().max(1) } else { gate_len });
            let clamp = if relu { Clamp { min: zps[2], max: 127 } } else { Clamp::FULL };
            let quant = MulQuant {
                input_zero_points: [zps[0], zps[1]],
                requant: gen.requant(),
                output: OutputQuant { zero_point: zps[2], clamp },
            };
            let (mut fast, mut want) = (std::vec![7i8; a.len()], std::vec![7i8; a.len()]);
            mul(&quant, &a, &gate, &mut fast);
            crate::kernels::reference::int8::mul::mul(&quant, &a, &gate, &mut want);
            prop_assert_eq!(&fast, &want);
        }
    }
}
