//! The output stage of the fast kernels: [`Requant::apply`], the output zero point and the clamp,
//! with the per-channel work done once per channel instead of once per output.
//!
//! [`Stage::scale`] equals `Requant::apply` for every i32 and every factor (property test below;
//! factors the loader would refuse take the reference function itself). For a factor that
//! [`Requant::is_normalized`] accepts, with a shift of at most 0 (every factor below 1/2), an
//! output costs one 32x32->64 multiply, a rounding shift and a masked compare.

use crate::kernels::reference::int8::{OutputQuant, WideOutputQuant};
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
    /// Neither `general`, nor a left shift, nor the one multiplier (`i32::MIN`) whose product
    /// can saturate: the common case, one branch then straight-line arithmetic.
    plain: bool,
}

impl Stage {
    /// The stage of one channel's factor.
    #[inline]
    pub fn new(r: Requant) -> Stage {
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
            plain: fast && left == 0 && r.multiplier != i32::MIN,
        }
    }

    /// `Requant::apply(x)` for this channel's factor.
    #[inline(always)]
    pub fn scale(&self, x: i32) -> i32 {
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
        assert_eq!(
            Stage::new(r).scale(x),
            multiply_by_quantized_multiplier(x, multiplier, shift),
            "x {x} multiplier {multiplier} shift {shift}"
        );
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
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
