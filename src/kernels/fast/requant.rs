//! The output stage of the fast kernels: [`Requant::apply`], the output zero point and the clamp,
//! with the per-channel work done once per channel instead of once per output.
//!
//! [`Stage::scale`] equals `Requant::apply` for every i32 and every factor (property test below;
//! factors the loader would refuse take the reference function itself). For a factor that
//! [`Requant::is_normalized`] accepts, with a shift of at most 0 (every factor below 1/2), an
//! output costs one 32x32->64 multiply, a rounding shift and a masked compare.

use crate::kernels::reference::int8::{FromWide, OutputQuant, WideOutputQuant};
use crate::quant::Requant;

/// One output channel's constants, prepared once.
#[derive(Clone, Copy, Debug)]
pub struct Stage {
    multiplier: i32,
    /// `max(shift, 0)`: a left shift before the multiply (factors of 1/2 and more).
    left: u32,
    /// `max(-shift, 0)`, at most 31 on the fast path.
    right: u32,
    /// `2^right − 1`.
    mask: i32,
    /// `mask >> 1`.
    half: i32,
    /// A factor outside the normalized range: use the reference function.
    general: Option<Requant>,
    /// The common case (a positive multiplier, a right shift of 1 to 31): [`Scale`].
    single: Option<Scale>,
    /// Neither `general`, nor a left shift, nor the one multiplier (`i32::MIN`) whose product
    /// can saturate (a factor of 1/2 or more, or a negative one): straight-line arithmetic.
    plain: bool,
}

/// `Requant::apply` for a positive multiplier and a shift in `-31..=-1` (every factor below
/// 1/2), as one 64-bit multiply-accumulate and one shift, with no branch and no saturation.
///
/// The reference computes `v = floor((x·m + 2^30) / 2^31)` (no saturation: `m > 0`), then
/// divides by `2^r` rounding ties away from zero: `floor((v + 2^(r−1) − [v < 0]) / 2^r)`
/// (gemmlowp's bit-mask form, case by case on the remainder). Nested floors of divisions by
/// powers of two are one floor, so that is `floor(Q / 2^(31+r))` with
/// `Q = x·m + 2^30 + 2^(r+30) − [v < 0]·2^31`, exact in i64 (`|x·m| < 2^62`). `[v < 0]` can be
/// replaced by `[x < 0]`: they differ only when `−2^30 <= x·m < 0`, where `v = 0` and both
/// forms give 0. With `31 + r >= 32`, the result is the high word of `Q` shifted by `r − 1`.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    multiplier: i32,
    /// `2^30 + 2^(r+30)`.
    init: i64,
    /// `r − 1`.
    shift: u32,
}

impl Scale {
    /// The scale of `r`, if its factor is one this form computes.
    #[inline]
    pub fn new(r: Requant) -> Option<Scale> {
        if r.multiplier > 0 && (-31..=-1).contains(&r.shift) {
            let right = r.shift.unsigned_abs();
            // `2^30 + 2^(r+30)` from its two words (no variable 64-bit shift: cheap per channel).
            let (high, low) = if right == 1 {
                (0u32, 3u32 << 30)
            } else {
                (1u32 << (right - 2), 1u32 << 30)
            };
            Some(Scale {
                multiplier: r.multiplier,
                init: (i64::from(high) << 32) | i64::from(low),
                shift: right - 1,
            })
        } else {
            None
        }
    }

    /// `Requant::apply(x)`.
    #[inline(always)]
    pub fn apply(&self, x: i32) -> i32 {
        let q = (i64::from(x) * i64::from(self.multiplier))
            .wrapping_add(self.init)
            .wrapping_add(i64::from(x >> 31) << 31);
        ((q >> 32) as i32) >> self.shift
    }
}

impl Scale {
    /// This factor with `bounds` as [`simd::requant_run`](super::simd::requant_run)'s
    /// constants, if it has them: a right shift of 2 or more (the rounding constant's low word
    /// 2^30) and an output zero point that folds into the high word exactly
    /// (`|zero_point| · 2^shift <= 2^29`: with `|Q >> 32| < 2^30 + 2^29 + 1` the sum stays in
    /// i32, and `(h + z · 2^s) >> s = (h >> s) + z`; the reference's saturating addition never
    /// saturates here, `|(Q >> 32) >> s| < 2^30`).
    #[inline]
    pub fn run(&self, bounds: &Bounds) -> Option<super::simd::RunScale> {
        let low = self.init as u32;
        let high = (self.init >> 32) as i32;
        // `|zero_point| · 2^shift <= 2^29` as `|zero_point| <= 2^29 >> shift` (exact for
        // shifts up to 30; a 64-bit shift costs a dozen instructions per channel on Cortex-M).
        let zero = bounds.zero_point.unsigned_abs();
        if low != 1 << 30 || self.shift == 0 || self.shift > 30 || zero > (1 << 29) >> self.shift {
            return None;
        }
        Some(super::simd::RunScale {
            high: high.wrapping_add(bounds.zero_point << self.shift),
            multiplier: self.multiplier,
            shift: self.shift,
            min: bounds.min,
            max: bounds.max,
        })
    }
}

impl Stage {
    /// The stage of one channel's factor.
    #[inline]
    pub fn new(r: Requant) -> Stage {
        if let Some(single) = Scale::new(r) {
            // The other fields are only read when `single` is `None`.
            return Stage {
                multiplier: r.multiplier,
                left: 0,
                right: 0,
                mask: 0,
                half: 0,
                general: None,
                single: Some(single),
                plain: false,
            };
        }
        let left = r.shift.max(0).unsigned_abs();
        let right = r.shift.min(0).unsigned_abs();
        let fast = left <= 30 && right <= 31;
        let mask = if fast {
            (1i32 << right).wrapping_sub(1)
        } else {
            0
        };
        Stage {
            multiplier: r.multiplier,
            left,
            right: right.min(31),
            mask,
            half: mask >> 1,
            general: (!fast).then_some(r),
            single: None,
            plain: fast && left == 0 && r.multiplier != i32::MIN,
        }
    }

    /// The channel's [`Scale`], if its factor has one.
    #[inline(always)]
    pub fn single(&self) -> Option<Scale> {
        self.single
    }

    /// `Requant::apply(x)` for this channel's factor: [`Scale`] inline, every other factor out
    /// of line (a kernel loop keeps fewer constants live).
    #[inline(always)]
    pub fn scale(&self, x: i32) -> i32 {
        if let Some(s) = &self.single {
            return s.apply(x);
        }
        self.scale_any(x)
    }

    /// [`Stage::scale`] with factors of 1/2 and more inline too, for loops with few other
    /// live values (the residual addition, whose factors often are).
    #[inline(always)]
    pub fn scale_inline(&self, x: i32) -> i32 {
        if let Some(s) = &self.single {
            return s.apply(x);
        }
        if self.plain {
            // |x · m| < 2^62 and m > i32::MIN: the quotient fits without saturation.
            let high = ((i64::from(x) * i64::from(self.multiplier) + (1 << 30)) >> 31) as i32;
            let threshold = self.half + i32::from(high < 0);
            return (high >> self.right) + i32::from((high & self.mask) > threshold);
        }
        self.scale_any(x)
    }

    /// [`Stage::scale`] for every factor.
    #[inline(never)]
    fn scale_any(&self, x: i32) -> i32 {
        if let Some(r) = self.general {
            return r.apply(x);
        }
        let x = if self.left == 0 {
            x
        } else {
            // |x| · 2^30 < 2^62: exact, then saturated like the reference.
            (i64::from(x) << self.left)
                .max(i64::from(i32::MIN))
                .min(i64::from(i32::MAX)) as i32
        };
        // floor((x·m + 2^30) / 2^31); only x = m = i32::MIN reaches 2^31, which saturates.
        let high = ((i64::from(x) * i64::from(self.multiplier) + (1 << 30)) >> 31)
            .min(i64::from(i32::MAX)) as i32;
        // Rounding division by 2^right, ties away from zero (gemmlowp's bit-mask form).
        let threshold = self.half + i32::from(high < 0);
        (high >> self.right) + i32::from((high & self.mask) > threshold)
    }
}

/// Output zero point and bounds, as i32 (from an int8 or an int16 output record).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Output zero point.
    pub zero_point: i32,
    /// Lower clamp.
    pub min: i32,
    /// Upper clamp (wins if the two cross).
    pub max: i32,
}

impl From<OutputQuant> for Bounds {
    fn from(q: OutputQuant) -> Bounds {
        Bounds {
            zero_point: i32::from(q.zero_point),
            min: i32::from(q.clamp.min),
            max: i32::from(q.clamp.max),
        }
    }
}

impl From<WideOutputQuant> for Bounds {
    fn from(q: WideOutputQuant) -> Bounds {
        Bounds {
            zero_point: i32::from(q.zero_point),
            min: i32::from(q.clamp.min),
            max: i32::from(q.clamp.max),
        }
    }
}

impl Bounds {
    /// `clamp(zero_point + v)` as the reference output stages compute it.
    #[inline(always)]
    pub fn apply(&self, v: i32) -> i32 {
        v.saturating_add(self.zero_point)
            .max(self.min)
            .min(self.max)
    }
}

/// Stores `accs` through one channel's stage into `outputs` (one element each): the output
/// stage of a run of pixels of one channel, as a loop of its own so that the channel's
/// constants stay in registers, with the channel's form of the factor chosen once.
#[inline(always)]
pub fn store_channel<'y, Y: FromWide + 'y>(
    accs: impl Iterator<Item = i32>,
    outputs: impl Iterator<Item = &'y mut Y>,
    stage: &Stage,
    bounds: &Bounds,
) {
    let bounds = *bounds;
    match stage.single() {
        Some(scale) => {
            for (acc, y) in accs.zip(outputs) {
                *y = Y::from_wide(bounds.apply(scale.apply(acc)) as i16);
            }
        }
        None => {
            for (acc, y) in accs.zip(outputs) {
                *y = Y::from_wide(bounds.apply(stage.scale(acc)) as i16);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::quant::multiply_by_quantized_multiplier;
    use proptest::prelude::*;

    const EDGES: [i32; 9] = [
        i32::MIN,
        i32::MIN + 1,
        -(1 << 30),
        -1,
        0,
        1,
        1 << 30,
        i32::MAX - 1,
        i32::MAX,
    ];

    fn check(x: i32, multiplier: i32, shift: i32) {
        let r = Requant { multiplier, shift };
        let want = multiply_by_quantized_multiplier(x, multiplier, shift);
        assert_eq!(
            Stage::new(r).scale(x),
            want,
            "x {x} multiplier {multiplier} shift {shift}"
        );
        if let Some(s) = Scale::new(r) {
            assert_eq!(
                s.apply(x),
                want,
                "Scale: x {x} multiplier {multiplier} shift {shift}"
            );
        }
    }

    #[test]
    fn equals_the_reference_on_the_edges() {
        for x in EDGES {
            for m in EDGES {
                for shift in -40..=40 {
                    check(x, m, shift);
                }
            }
        }
        for shift in [i32::MIN, i32::MIN + 1, -33, -32, 31, 32, i32::MAX] {
            check(-12345, 1 << 30, shift);
        }
    }

    /// Small accumulators against factors whose products land on ties of both roundings.
    #[test]
    fn equals_the_reference_on_ties() {
        for m in [1, 3, 1 << 29, 1 << 30, (1 << 30) + 1, 3 << 29, i32::MAX] {
            for shift in -12..=0 {
                for x in -5000..=5000 {
                    check(x, m, shift);
                }
            }
        }
    }

    /// `Scale::run` with `simd::requant_run` (zero point folded into the high word) against
    /// the reference output stage, where `run` takes the factor.
    fn check_run(x: i32, multiplier: i32, shift: i32, bounds: Bounds) -> bool {
        let r = Requant { multiplier, shift };
        let Some(run) = Scale::new(r).and_then(|s| s.run(&bounds)) else {
            return false;
        };
        let want = bounds.apply(multiply_by_quantized_multiplier(x, multiplier, shift)) as i16;
        let mut out = [0i16; 3];
        crate::kernels::fast::simd::requant_run(&[x, 7, x], &mut out, 2, &run);
        assert_eq!(
            out,
            [want, 0, want],
            "x {x} m {multiplier} shift {shift} {bounds:?}"
        );
        assert_eq!(
            run.apply(x) as i16,
            want,
            "apply: x {x} m {multiplier} shift {shift} {bounds:?}"
        );
        true
    }

    #[test]
    fn the_output_run_equals_the_reference_on_the_edges() {
        let mut taken = 0;
        for x in EDGES {
            for m in [1, 1 << 30, i32::MAX] {
                for shift in -32..=0 {
                    for zero_point in [-32768, -1, 0, 1, 32767] {
                        for (min, max) in [
                            (-32768, 32767),
                            (0, 32767),
                            (zero_point, 32767),
                            (-128, 127),
                            (5, -5),
                        ] {
                            let bounds = Bounds {
                                zero_point,
                                min,
                                max,
                            };
                            taken += usize::from(check_run(x, m, shift, bounds));
                        }
                    }
                }
            }
        }
        // Shifts of -2 to -31 with every zero point that folds.
        assert!(taken > 9 * 3 * 20 * 5, "{taken}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn the_output_run_equals_the_reference(x in any::<i32>(), m in 1i32.., shift in -31i32..=-2,
                                               zero_point in any::<i16>(), min in any::<i16>(),
                                               max in any::<i16>()) {
            let zero_point = i32::from(zero_point);
            let (min, max) = (i32::from(min), i32::from(max));
            check_run(x, m | (1 << 30), shift, Bounds { zero_point, min, max });
            check_run(x >> (x as u32 % 31), m | (1 << 30), shift, Bounds { zero_point, min: zero_point, max: 32767 });
        }
        #[test]
        fn equals_the_reference(x in any::<i32>(), m in any::<i32>(), shift in -34i32..=33) {
            check(x, m, shift);
            // Normalized factors, as the host writes them.
            let normalized = if m < 0 { (m | (1 << 30)).min(-(1 << 30)) } else { m | (1 << 30) };
            check(x, normalized, shift);
            check(x >> (x as u32 % 31), normalized, shift);
        }
    }
}
