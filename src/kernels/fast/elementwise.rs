//! Fast int8 residual addition: the same results as
//! [`reference::int8::elementwise::add`](crate::kernels::reference::int8::elementwise::add),
//! byte for byte, with the three factors prepared once per layer ([`Stage`]) instead of once per
//! element.

use super::requant::{Bounds, Stage};
use super::simd;
use crate::kernels::reference::int8::elementwise::AddQuant;
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

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::reference::int8::elementwise as reference;
    use crate::kernels::reference::int8::testing::Gen;
    use crate::kernels::reference::int8::{Clamp, OutputQuant};
    use crate::quant::add_requant;
    use proptest::prelude::*;

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
}
