//! The Arm DSP instructions the fast kernels use, as safe functions, with portable equivalents.
//!
//! This is the runtime's only module with `unsafe` code: one `asm!` statement per instruction.
//! Each is sound for the same reasons: it reads and writes only the registers named as its
//! operands (`nomem`, `nostack`), has no side effect other than possibly setting the Q flag
//! (so no `preserves_flags` where the instruction may set it), and the instruction exists on
//! every core for which `cfg(icefold_dsp)` is set (build.rs: thumbv7em, or thumbv8m.main with
//! the `dsp` feature). On every other target the same functions are plain Rust with identical
//! results, so the fast kernels run, and are tested against the reference kernels, on the host.
//!
//! Lanes: a `u32` holding two signed 16-bit values has the low lane in bits 0..16.
//! SMLAD's sum wraps modulo 2^32 exactly like the portable `wrapping_add`s: the kernels only
//! call it where the quantization contract bounds the accumulator, so no sum wraps.
#![allow(unsafe_code)]

/// The low lane of `x` as i32.
#[cfg(not(icefold_dsp))]
#[inline(always)]
fn lo(x: u32) -> i32 {
    i32::from(x as u16 as i16)
}

/// The high lane of `x` as i32.
#[cfg(not(icefold_dsp))]
#[inline(always)]
fn hi(x: u32) -> i32 {
    i32::from((x >> 16) as u16 as i16)
}

/// SMLAD: `acc + lo(a)·lo(b) + hi(a)·hi(b)`.
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(icefold_dsp)]
    {
        let r: i32;
        // SAFETY: register-only instruction present on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "smlad {r}, {a}, {b}, {acc}",
                r = lateout(reg) r, a = in(reg) a, b = in(reg) b, acc = in(reg) acc,
                options(pure, nomem, nostack),
            );
        }
        r
    }
    #[cfg(not(icefold_dsp))]
    {
        acc.wrapping_add(lo(a).wrapping_mul(lo(b)))
            .wrapping_add(hi(a).wrapping_mul(hi(b)))
    }
}

/// SMLABB and SMLATT: `(acc_lo + lo(a)·lo(b), acc_hi + hi(a)·hi(b))`, two independent
/// accumulators (two channels of a depthwise convolution).
#[inline(always)]
pub fn smla_lanes(a: u32, b: u32, [acc_lo, acc_hi]: [i32; 2]) -> [i32; 2] {
    #[cfg(icefold_dsp)]
    {
        let (r_lo, r_hi): (i32, i32);
        // SAFETY: register-only instructions present on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "smlabb {lo}, {a}, {b}, {acc_lo}",
                "smlatt {hi}, {a}, {b}, {acc_hi}",
                // `lo` is written before the second instruction reads the inputs: `out`, so it
                // never shares a register with them.
                lo = out(reg) r_lo, hi = lateout(reg) r_hi, a = in(reg) a, b = in(reg) b,
                acc_lo = in(reg) acc_lo, acc_hi = in(reg) acc_hi,
                options(pure, nomem, nostack),
            );
        }
        [r_lo, r_hi]
    }
    #[cfg(not(icefold_dsp))]
    {
        [
            acc_lo.wrapping_add(lo(a).wrapping_mul(lo(b))),
            acc_hi.wrapping_add(hi(a).wrapping_mul(hi(b))),
        ]
    }
}

/// SXTB16: bytes 0 and 2 of `x`, sign-extended into the low and high lane.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    #[cfg(icefold_dsp)]
    {
        let r: u32;
        // SAFETY: register-only instruction present on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "sxtb16 {r}, {x}",
                r = lateout(reg) r, x = in(reg) x,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        r
    }
    #[cfg(not(icefold_dsp))]
    {
        pair(i32::from(x as u8 as i8), i32::from((x >> 16) as u8 as i8))
    }
}

/// SXTB16 with ROR #8: bytes 1 and 3 of `x`, sign-extended into the low and high lane.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    #[cfg(icefold_dsp)]
    {
        let r: u32;
        // SAFETY: register-only instruction present on every icefold_dsp core (module docs).
        unsafe {
            core::arch::asm!(
                "sxtb16 {r}, {x}, ror #8",
                r = lateout(reg) r, x = in(reg) x,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        r
    }
    #[cfg(not(icefold_dsp))]
    {
        sxtb16(x.rotate_right(8))
    }
}

/// PKHBT with LSL #16: the low lane of `a` and the low lane of `b`, as (low, high).
#[inline(always)]
pub fn pack_lo(a: u32, b: u32) -> u32 {
    (a & 0xFFFF) | (b << 16)
}

/// PKHTB with ASR #16: the high lane of `a` and the high lane of `b`, as (low, high).
#[inline(always)]
pub fn pack_hi(a: u32, b: u32) -> u32 {
    (a >> 16) | (b & 0xFFFF_0000)
}

/// Two i32 values (each in the i16 range) as one lane pair.
#[inline(always)]
pub fn pair(low: i32, high: i32) -> u32 {
    (low as u32 & 0xFFFF) | ((high as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_by_hand() {
        let x = u32::from_le_bytes([0x80, 0x7F, 0xFF, 0x01]);
        assert_eq!(sxtb16(x), pair(-128, -1));
        assert_eq!(sxtb16_ror8(x), pair(127, 1));
        let a = pair(-32768, 32767);
        let b = pair(-32768, -32768);
        assert_eq!(smlad(a, b, 5), 5 + (1 << 30) - 32767 * 32768);
        assert_eq!(smla_lanes(a, b, [1, 2]), [1 + (1 << 30), 2 - 32767 * 32768]);
        assert_eq!(pack_lo(pair(1, 2), pair(3, 4)), pair(1, 3));
        assert_eq!(pack_hi(pair(1, 2), pair(3, 4)), pair(2, 4));
        // Wraps like the instruction (the Q flag is not modelled).
        let sum = i64::from(i32::MAX) + (1 << 30) + 32767 * 32767;
        assert_eq!(smlad(a, a, i32::MAX), sum as i32);
    }
}
