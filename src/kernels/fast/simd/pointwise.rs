//! Pointwise layers with 8 input channels (issue #16, "round 8" in docs/BENCHMARKS.md): one
//! pixel's four activation words stay in registers while every output channel passes by, each
//! channel one record of eight words (its bias, its four widened weight words, its output
//! stage's constants) loaded by one LDM: 12 instructions per output (the LDM, 4 SMLADs, the
//! stage's 6 and the store) where the four-channel tile took about 17 (MobileNetV1's second
//! layer: its multiply loop is 4 SMLADs per output, the rest per-pixel and per-group words).
//!
//! The records hold the sum doubled (bias and weights), which takes the output stage from five
//! instructions to three (round 9): for `s = 2x` (no wrap: `|x| < 2^30`) and `h = 2 · high`,
//! `(h + (s >> 31) + ⌊(s · m + 2^31) / 2^32⌋) >> (shift + 1)`, one ADD, SMMLAR and ASR, is
//! [`RunScale::apply`]'s `(high + ⌊(x · m ± 2^30) / 2^32⌋) >> shift` (the 2^31 SMMLAR adds less
//! `2^31` for `x < 0` is the rounding term `±2^30` at twice the scale; halving first and
//! shifting after compose: `⌊⌊a / 2⌋ / 2^k⌋ = ⌊a / 2^(k+1)⌋`), as long as the doubled high
//! word does not wrap (`|high| <= 2^28`).

use super::{QuadClamp, RunScale};

/// Words per output channel in [`small_pixels`]' records: the bias doubled, the four weight
/// words (lane pairs of input channels `(2j, 2j + 1)`, `j < 4`, each weight doubled), then the
/// stage's high word doubled, its multiplier and its shift plus one ([`RunScale`]).
pub const SMALL_RECORD: usize = 8;

/// Activation words per pixel [`small_pixels`] takes: 8 int16 input channels.
pub const SMALL_WORDS: usize = 4;

/// An output channel's record for [`small_pixels`]: `bias`, `w` (its 8 weights) and `run`'s
/// constants (its clamp is the layer's [`QuadClamp`]), doubled as the module docs say; `None`
/// unless `|bias| <= 2^29` (with 8 products of at most 2^22 the sum stays below 2^30, so its
/// double does not wrap), `|high| <= 2^28` and the shift is at most 30.
pub fn small_record(bias: i32, w: [i8; 8], run: &RunScale) -> Option<[u32; SMALL_RECORD]> {
    let fits = bias.unsigned_abs() <= 1 << 29 && run.high.unsigned_abs() <= 1 << 28;
    if !fits || run.shift > 30 {
        return None;
    }
    let lanes = |j: usize| {
        let at = |i: usize| w.get(i).map_or(0, |&v| 2 * i32::from(v));
        super::pair(at(2 * j), at(2 * j + 1))
    };
    Some([
        (2 * bias) as u32,
        lanes(0),
        lanes(1),
        lanes(2),
        lanes(3),
        (2 * run.high) as u32,
        run.multiplier as u32,
        run.shift + 1,
    ])
}

/// The output stage of a doubled sum `s` with a record's doubled high word, multiplier and
/// shift plus one, before the clamp: the assembly's ADD, SMMLAR and ASR (module docs).
#[cfg(any(not(icefold_dsp), test))]
pub(super) fn doubled_stage(s: i32, high: i32, multiplier: i32, shift: u32) -> i32 {
    let top = i64::from(high.wrapping_add(s >> 31)) << 32;
    let q = top
        .wrapping_add(i64::from(s) * i64::from(multiplier))
        .wrapping_add(1 << 31);
    ((q >> 32) as i32) >> shift
}

/// One output channel of [`small_pixels`] in assembly text: its record (LDM through r7,
/// written back) into r0 (bias, the sum), r1-r4 (weights), r5, r6, lr (high word, multiplier,
/// shift); four SMLADs on the pixel's words r8-r11; the doubled sum's stage (ADD, SMMLAR, ASR:
/// module docs) on r1, r2; the saturation `$sat` and the store `$st` (of r2).
#[cfg(icefold_dsp)]
macro_rules! small_channel {
    ($sat:literal, $st:literal) => {
        concat!(
            "ldm r7!, {{r0-r6, lr}}\n",
            "smlad r0, r1, r8, r0\n",
            "smlad r0, r2, r9, r0\n",
            "smlad r0, r3, r10, r0\n",
            "smlad r0, r4, r11, r0\n",
            "add r1, r5, r0, asr #31\n",
            "smmlar r1, r0, r6, r1\n",
            "asr r2, r1, lr\n",
            $sat,
            "\n",
            $st,
            "\n"
        )
    };
}

/// A pointwise layer on 8 int16 input channels (`x`: [`SMALL_WORDS`] words per pixel, lane
/// pairs): for pixel `p` and output channel `c`, `bias_c + Σ_j smlad(w_c[j], x[4p + j])`
/// through channel `c`'s stage ([`RunScale::apply`] with `clamp`'s range, on the doubled sum of
/// its [`small_record`] as the module docs say) into `out` at element
/// `p · stride + c` (int8 elements for [`QuadClamp::I8`], else int16, little-endian; `out` as
/// bytes). `records`: [`small_record`]s of `out_c` channels one after the other. `false`
/// (nothing written) unless `out_c` is a positive multiple of 4, `records` holds `out_c`
/// records, `pixels >= 1`, `x` holds `4 · pixels` words, `out_c <= stride <= 2^20`, and `out`
/// holds the last pixel's channels.
///
/// With the DSP extension: per pixel an LDM of its four words, then per channel an LDM of its
/// record, four SMLADs, the stage (ADD, SMMLAR, ASR, SSAT or USAT) and the store, 10
/// instructions per output; three per four channels and nine per pixel for the loops. Out of
/// line: one copy for int8 and int16 outputs.
#[inline(never)]
pub fn small_pixels(
    records: &[u32],
    x: &[u32],
    clamp: QuadClamp,
    out: &mut [u8],
    (pixels, stride, out_c): (usize, usize, usize),
) -> bool {
    let size = if clamp == QuadClamp::I8 { 1 } else { 2 };
    let span = pixels
        .checked_sub(1)
        .and_then(|p| p.checked_mul(stride)?.checked_add(out_c)?.checked_mul(size));
    let fits = span.is_some_and(|s| s <= out.len())
        && out_c > 0
        && out_c % 4 == 0
        && (out_c..=1 << 20).contains(&stride);
    if !fits || records.len() / SMALL_RECORD < out_c || x.len() / SMALL_WORDS < pixels {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        let start = out.as_mut_ptr();
        let params: [u32; 6] = [
            x.as_ptr() as usize as u32,
            records.as_ptr() as usize as u32,
            records.as_ptr().wrapping_add(SMALL_RECORD * out_c) as usize as u32,
            ((stride - out_c) * size) as u32,
            start.wrapping_add(pixels * stride * size) as usize as u32,
            0,
        ];
        // SAFETY: the checks above. The six words of `params` are copied onto the stack (PUSH,
        // with r6 and r7, LLVM's base and frame pointers, not operands: all popped before the
        // end). Per pixel the loop reads its four words of `x` (LDM through the stacked
        // pointer, advanced by 16 bytes: pixel `p` reads words `4p .. 4p + 4`, `p < pixels`),
        // then every record (LDM of eight words through r7 from `records` to its `out_c`-th
        // record's end, four records per step: `out_c` a multiple of 4) and writes channel
        // `c`'s element at `start + (p · stride + c) · size` (r12, post-incremented by `size`,
        // then by the gap `(stride − out_c) · size` per pixel), stopping when r12 reaches
        // `start + pixels · stride · size`: the last element written is below
        // `((pixels − 1) · stride + out_c) · size <= out.len()`. `x` and `records` are `u32`
        // slices: word-aligned, as LDM needs. Only the named registers and the flags (with Q)
        // change. LDM, SMLAD, SMMLAR, SSAT, USAT, PUSH, POP exist on every icefold_dsp core.
        macro_rules! small {
            ($sat:literal, $st:literal) => {
                unsafe {
                    core::arch::asm!(
                        "push {{r6, r7}}",
                        "ldm r0, {{r0-r5}}",
                        "push {{r0-r5}}",
                        // The pixel loop (200 bytes) from a 256-byte boundary: inside one of
                        // QEMU's 1 KiB pages, where a translation block ends and the cycle
                        // model restarts its pipelining (crossing one cost MobileNetV1's
                        // second pointwise layer 28 K cycles).
                        "b 1f",
                        ".balign 256",
                        "1:",
                        "ldr r0, [sp]",
                        "ldm r0!, {{r8-r11}}",
                        "str r0, [sp]",
                        "ldr r7, [sp, #4]",
                        "2:",
                        small_channel!($sat, $st),
                        small_channel!($sat, $st),
                        small_channel!($sat, $st),
                        small_channel!($sat, $st),
                        "ldr r0, [sp, #8]",
                        "cmp r7, r0",
                        "bne 2b",
                        "ldrd r0, r1, [sp, #12]",
                        "add r12, r12, r0",
                        "cmp r12, r1",
                        "bne 1b",
                        "add sp, sp, #24",
                        "pop {{r6, r7}}",
                        inout("r0") params.as_ptr() => _,
                        out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                        out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                        inout("r12") start => _,
                        out("lr") _,
                        options(),
                    );
                }
            };
        }
        match clamp {
            QuadClamp::I16 => small!("ssat r2, #16, r2", "strh r2, [r12], #2"),
            QuadClamp::I16Relu => small!("usat r2, #15, r2", "strh r2, [r12], #2"),
            QuadClamp::I8 => small!("ssat r2, #8, r2", "strb r2, [r12], #1"),
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let (min, max) = match clamp {
            QuadClamp::I16 => (-32768, 32767),
            QuadClamp::I16Relu => (0, 32767),
            QuadClamp::I8 => (-128, 127),
        };
        let pixels_x = x.chunks_exact(SMALL_WORDS).take(pixels);
        for (p, xs) in pixels_x.enumerate() {
            let recs = records.chunks_exact(SMALL_RECORD).take(out_c);
            for (ch, r) in recs.enumerate() {
                let Some(&[bias, w0, w1, w2, w3, high, multiplier, shift]) =
                    r.first_chunk::<SMALL_RECORD>()
                else {
                    return false;
                };
                let acc = [w0, w1, w2, w3]
                    .iter()
                    .zip(xs)
                    .fold(bias as i32, |a, (w, x)| super::smlad(*w, *x, a));
                let v = doubled_stage(acc, high as i32, multiplier as i32, shift).clamp(min, max);
                let at = (p * stride + ch) * size;
                if let Some(y) = out.get_mut(at..at + size) {
                    if size == 1 {
                        y.copy_from_slice(&[v as i8 as u8]);
                    } else {
                        y.copy_from_slice(&(v as i16).to_le_bytes());
                    }
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    fn next(seed: &mut u64) -> u32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed as u32
    }

    /// The doubled sum's stage is [`RunScale::apply`]'s for every sum whose double does not
    /// wrap and every high word whose double, with the sum, does not: the ends of both ranges, every shift,
    /// the smallest and largest multipliers, sums near the rounding boundaries.
    #[test]
    fn doubled_stage_equals_run_scale() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let ends = [
            -(1 << 30),
            -(1 << 30) + 1,
            -3,
            -2,
            -1,
            0,
            1,
            2,
            3,
            (1 << 30) - 1,
        ];
        // Past 2^28 (the fused tile's bound, src/kernels/fast/simd/quad_store.rs): sums with
        // `2 · |high| + |x| < 2^31 − 2` only.
        let highs = [-(1 << 29) - 12345, -(1 << 28), -1, 0, 1, 1 << 28, 3 << 28];
        let multipliers = [1 << 30, (1 << 30) + 1, 0x5555_5555, i32::MAX];
        for shift in 1..=30 {
            for &high in &highs {
                for &multiplier in &multipliers {
                    let run = RunScale {
                        high,
                        multiplier,
                        shift,
                        min: i32::MIN,
                        max: i32::MAX,
                    };
                    let random = (0..64).map(|_| (next(&mut seed) as i32) >> 2);
                    let inside =
                        |x: &i32| 2 * high.unsigned_abs() + x.unsigned_abs() < (1 << 31) - 2;
                    for x in ends.into_iter().chain(random).filter(inside) {
                        let got = doubled_stage(2 * x, 2 * high, multiplier, shift + 1);
                        assert_eq!(
                            got,
                            run.apply(x),
                            "x {x} high {high} m {multiplier} >> {shift}"
                        );
                    }
                }
            }
        }
        // Products at the rounding boundary: `x · m + 2^30 ≡ 0 (mod 2^32)` (x = -3, m = 2^30).
        let run = RunScale {
            high: 5,
            multiplier: 1 << 30,
            shift: 1,
            min: i32::MIN,
            max: i32::MAX,
        };
        for x in -64..64 {
            assert_eq!(doubled_stage(2 * x, 10, 1 << 30, 2), run.apply(x), "x {x}");
        }
    }

    /// A record refuses a bias, high word or shift whose doubled stage could wrap.
    #[test]
    fn small_record_refuses_wide_constants() {
        let run = RunScale {
            high: 1 << 28,
            multiplier: 1 << 30,
            shift: 30,
            min: 0,
            max: 0,
        };
        assert!(small_record(1 << 29, [-128; 8], &run).is_some());
        assert!(small_record((1 << 29) + 1, [0; 8], &run).is_none());
        assert!(small_record(-(1 << 29) - 1, [0; 8], &run).is_none());
        assert!(small_record(
            0,
            [0; 8],
            &RunScale {
                high: (1 << 28) + 1,
                ..run
            }
        )
        .is_none());
        assert!(small_record(0, [0; 8], &RunScale { shift: 31, ..run }).is_none());
    }

    /// Every output is the plain sum through [`RunScale::apply`] and the clamp, at its place;
    /// elements between pixels (a stride wider than the channels) stay as they were; shapes
    /// that do not fit are refused with nothing written.
    #[test]
    fn small_pixels_equal_plain_sums() {
        let mut seed = 0x2545_f491_4f6c_dd1d;
        for clamp in [QuadClamp::I16, QuadClamp::I16Relu, QuadClamp::I8] {
            for (pixels, out_c, stride) in [(1, 4, 4), (5, 8, 8), (7, 16, 20), (2, 12, 13)] {
                let size = if clamp == QuadClamp::I8 { 1 } else { 2 };
                let x: Vec<u32> = (0..4 * pixels).map(|_| next(&mut seed)).collect();
                // The largest sums: every product `-128 · -32768` in the first pixel.
                let mut x = x;
                x[..4].fill(0x8000_8000);
                let runs: Vec<RunScale> = (0..out_c)
                    .map(|_| RunScale {
                        high: (next(&mut seed) % (1 << 20)) as i32 - (1 << 19),
                        multiplier: 0x4000_0000 + (next(&mut seed) % 0x4000_0000) as i32,
                        shift: 1 + next(&mut seed) % 30,
                        min: 0,
                        max: 0,
                    })
                    .collect();
                let mut records = Vec::new();
                let mut weights = Vec::new();
                for run in &runs {
                    let int8 = [0; 8].map(|_| next(&mut seed) as i8);
                    let w = [0, 1, 2, 3].map(|j| {
                        crate::kernels::fast::simd::pair(int8[2 * j].into(), int8[2 * j + 1].into())
                    });
                    let bias = (next(&mut seed) % (1 << 24)) as i32 - (1 << 23);
                    records.extend_from_slice(&small_record(bias, int8, run).unwrap());
                    weights.push((bias, w));
                }
                let len = ((pixels - 1) * stride + out_c) * size;
                let mut out = std::vec![0xA5u8; len + 3];
                assert!(small_pixels(
                    &records,
                    &x,
                    clamp,
                    &mut out,
                    (pixels, stride, out_c)
                ));
                let (min, max) = match clamp {
                    QuadClamp::I16 => (-32768, 32767),
                    QuadClamp::I16Relu => (0, 32767),
                    QuadClamp::I8 => (-128, 127),
                };
                let lane =
                    |v: u32, hi: bool| i32::from(if hi { (v >> 16) as i16 } else { v as i16 });
                for p in 0..pixels {
                    for (ch, ((bias, w), run)) in weights.iter().zip(&runs).enumerate() {
                        let acc = (0..4).fold(*bias, |a, j| {
                            let xv = x[4 * p + j];
                            a + lane(w[j], false) * lane(xv, false)
                                + lane(w[j], true) * lane(xv, true)
                        });
                        let want = RunScale { min, max, ..*run }.apply(acc);
                        let at = (p * stride + ch) * size;
                        let got = if size == 1 {
                            i32::from(out[at] as i8)
                        } else {
                            i32::from(i16::from_le_bytes([out[at], out[at + 1]]))
                        };
                        assert_eq!(got, want, "{clamp:?} pixel {p} channel {ch}");
                    }
                    if p + 1 < pixels {
                        let gap = &out[(p * stride + out_c) * size..((p + 1) * stride) * size];
                        assert!(gap.iter().all(|&b| b == 0xA5), "{clamp:?} gap after {p}");
                    }
                }
                assert!(out[len..].iter().all(|&b| b == 0xA5));
                // One element short, a channel count not a multiple of 4, records short.
                let mut short = std::vec![0u8; len - 1];
                let shape = (pixels, stride, out_c);
                assert!(!small_pixels(&records, &x, clamp, &mut short, shape));
                assert!(short.iter().all(|&b| b == 0));
                let mut any = std::vec![0u8; len + 16];
                assert!(!small_pixels(
                    &records,
                    &x,
                    clamp,
                    &mut any,
                    (pixels, stride, 6)
                ));
                let cut = &records[..records.len() - 1];
                assert!(!small_pixels(cut, &x, clamp, &mut any, shape));
                assert!(!small_pixels(
                    &records,
                    &x[..x.len() - 1],
                    clamp,
                    &mut any,
                    shape
                ));
                assert!(any.iter().all(|&b| b == 0));
            }
        }
    }
}
