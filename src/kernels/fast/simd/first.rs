//! The first layers' receptive fields laid out for the fused four-channel tile
//! (`conv::columns_fused`, [`smlad_4x1_groups`](super::smlad_4x1_groups)): each output pixel's
//! field as one contiguous run of words, so that the tile's LDRD reads it straight and each
//! channel quad's sums meet their output stage in registers ([`fused_fields`]).

use super::{QuadClamp, RunScale};

/// Copies `pixels` windows of `rows` runs of `n` words each from `src` into `dst`, window `q`'s
/// field from word `q · field` on: run `r` of window `q` starts at byte `first + q ·
/// pixel_step + r · row_step` of `src` (any even offset: int16 values), its word `i` goes to
/// `dst[q · field + r · n + i]`; the words after a window's `rows · n` are left as they are.
/// `false` (nothing copied) unless `pixels`, `rows` and `n` are positive, `rows · n <= field`,
/// `src` holds every byte read and `dst` every word written.
///
/// With the DSP extension one loop over the windows (runs of 5 and 2 words unrolled, LDRs and
/// STRDs: 3x3x3 and 10x4x1 windows; other runs a loop of LDR, STR, SUBS, BNE per word), four
/// instructions per run and nine per window beside the copies. The loads may be unaligned, as
/// in [`copy_rows`](super::copy_rows).
#[inline(always)]
pub fn copy_windows(
    src: &[u8],
    (first, pixel_step, row_step): (usize, usize, usize),
    (rows, n, pixels): (usize, usize, usize),
    dst: &mut [u32],
    field: usize,
) -> bool {
    if pixels == 0 || rows == 0 || n == 0 {
        return false;
    }
    let Some(per_pixel) = rows.checked_mul(n) else {
        return false;
    };
    let (Some(last_byte), Some(last_word)) = (
        (pixels - 1)
            .checked_mul(pixel_step)
            .and_then(|b| b.checked_add((rows - 1).checked_mul(row_step)?))
            .and_then(|b| b.checked_add(first))
            .and_then(|b| b.checked_add(n.checked_mul(4)?)),
        (pixels - 1)
            .checked_mul(field)
            .and_then(|w| w.checked_add(per_pixel - 1)),
    ) else {
        return false;
    };
    if per_pixel > field
        || last_byte > src.len()
        || last_word >= dst.len()
        || pixel_step > u32::MAX as usize
        || row_step > u32::MAX as usize
        || field > (u32::MAX / 4) as usize
    {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        // Windows left, the source's byte step between windows, runs per window, words per
        // run, the destination's bytes from a window's last word to the next window's field.
        let mut block = [
            pixels as u32,
            pixel_step as u32,
            rows as u32,
            n as u32,
            (4 * (field - per_pixel)) as u32,
        ];
        // SAFETY: window `q < pixels` reads, for each run `r < rows`, the `4n` bytes from
        // `first + q · pixel_step + r · row_step`, the last ending at `last_byte <=
        // src.len()` (checked above; offsets grow with `q` and `r`, so every run lies inside
        // `src`); the loads may be unaligned, which these cores allow ([`copy_rows`]). It
        // writes the words `q · field + j`, `j < rows · n`, of `dst` in order through `{d}`
        // (post-incremented by the words stored, then by the gap of `field − rows · n` words
        // after each window): the last is `last_word < dst.len()` (checked), word-aligned (a
        // `u32` slice), as STRD needs. It reads and writes the words of `block` (alive past the
        // statement). Only the named registers, the flags, `block` and `dst` change; no stack.
        // LDR, STR, STRD, ADD, MOV, SUBS and BNE exist on every icefold_dsp core.
        macro_rules! windows {
            ($copy_run:expr) => {
                // SAFETY: the comment above.
                unsafe {
                    core::arch::asm!(
                        "1:",
                        "mov {row}, {s}",
                        "ldr {r}, [{blk}, #8]",
                        "2:",
                        $copy_run,
                        "add {row}, {row}, {rs}",
                        "subs {r}, {r}, #1",
                        "bne 2b",
                        "ldr {v}, [{blk}, #4]",
                        "add {s}, {s}, {v}",
                        "ldr {v}, [{blk}, #16]",
                        "add {d}, {d}, {v}",
                        "ldr {v}, [{blk}]",
                        "subs {v}, {v}, #1",
                        "str {v}, [{blk}]",
                        "bne 1b",
                        s = inout(reg) src.as_ptr().wrapping_add(first) => _,
                        d = inout(reg) dst.as_mut_ptr() => _,
                        blk = in(reg) block.as_mut_ptr(),
                        rs = in(reg) row_step,
                        row = out(reg) _,
                        p = out(reg) _,
                        r = out(reg) _,
                        i = out(reg) _,
                        v = out(reg) _,
                        options(nostack),
                    );
                }
            };
        }
        // A run's words from `{row}` to `{d}` on, `{d}` advanced past them.
        match n {
            5 => windows!(concat!(
                "ldr {v}, [{row}]\n",
                "ldr {p}, [{row}, #4]\n",
                "strd {v}, {p}, [{d}], #8\n",
                "ldr {v}, [{row}, #8]\n",
                "ldr {i}, [{row}, #12]\n",
                "strd {v}, {i}, [{d}], #8\n",
                "ldr {v}, [{row}, #16]\n",
                "str {v}, [{d}], #4",
            )),
            2 => windows!(concat!(
                "ldr {i}, [{row}]\n",
                "ldr {p}, [{row}, #4]\n",
                "strd {i}, {p}, [{d}], #8",
            )),
            _ => windows!(concat!(
                "mov {p}, {row}\n",
                "ldr {i}, [{blk}, #12]\n",
                "3:\n",
                "ldr {v}, [{p}], #4\n",
                "str {v}, [{d}], #4\n",
                "subs {i}, {i}, #1\n",
                "bne 3b",
            )),
        }
        let _ = block;
    }
    #[cfg(not(icefold_dsp))]
    {
        for q in 0..pixels {
            for r in 0..rows {
                let at = first + q * pixel_step + r * row_step;
                let to = q * field + r * n;
                for (i, d) in dst.iter_mut().skip(to).take(n).enumerate() {
                    if let Some(&[a, b, c, e]) = src.get(at + 4 * i..at + 4 * i + 4) {
                        *d = u32::from_le_bytes([a, b, c, e]);
                    }
                }
            }
        }
    }
    true
}

/// Parameter words of [`fused_fields`]' loop: the biases, the next pixel's output, the weights'
/// start, the word pairs per field, the end of the output, the pixel stride in bytes, then per
/// channel its stage's high word, multiplier and shift (the layout of the pointwise tile's
/// block in `quad_store`, whose output stage this loop shares).
#[cfg(icefold_dsp)]
const PARAMS: usize = 21;

/// Four output channels' biases and output stages for [`fused_fields`], built once per call of
/// the first layer's loop.
#[derive(Clone, Copy, Debug)]
pub struct FieldStage {
    #[cfg(icefold_dsp)]
    params: [u32; PARAMS],
    #[cfg(not(icefold_dsp))]
    bias: [i32; 4],
    #[cfg(not(icefold_dsp))]
    runs: [RunScale; 4],
    clamp: QuadClamp,
}

impl FieldStage {
    /// No channels' constants (a placeholder: never run).
    pub const EMPTY: FieldStage = FieldStage {
        #[cfg(icefold_dsp)]
        params: [0; PARAMS],
        #[cfg(not(icefold_dsp))]
        bias: [0; 4],
        #[cfg(not(icefold_dsp))]
        runs: [RunScale {
            high: 0,
            multiplier: 0,
            shift: 1,
            min: 0,
            max: 0,
        }; 4],
        clamp: QuadClamp::I16,
    };

    /// Four channels' biases and stages `runs`, whose common clamp is `clamp`
    /// ([`QuadClamp::of`]).
    pub fn new(bias: [i32; 4], runs: &[RunScale; 4], clamp: QuadClamp) -> FieldStage {
        #[cfg(icefold_dsp)]
        {
            let mut params = [0u32; PARAMS];
            for (p, b) in params.iter_mut().zip(bias) {
                *p = b as u32;
            }
            for (k, r) in runs.iter().enumerate() {
                if let Some(c) = params.get_mut(9 + 3 * k..12 + 3 * k) {
                    c.copy_from_slice(&[r.high as u32, r.multiplier as u32, r.shift]);
                }
            }
            FieldStage { params, clamp }
        }
        #[cfg(not(icefold_dsp))]
        FieldStage {
            bias,
            runs: *runs,
            clamp,
        }
    }
}

/// One channel's output stage in assembly text (as the pointwise tile's, `quad_store`): its
/// three constants loaded from `lr` (advanced past them with `$next` = "!"), then the rounding
/// doubling high multiply and rounding shift of [`requant_run`](super::requant_run) on the sum
/// in `$acc`, the saturation `$sat` and the store `$st` (of r4). Uses r0-r4.
#[cfg(icefold_dsp)]
macro_rules! field_stage {
    ($acc:literal, $next:literal, $sat:literal, $st:literal) => {
        concat!(
            "ldm lr",
            $next,
            ", {{r0-r2}}\n",
            "and r3, ",
            $acc,
            ", #0x80000000\n",
            "orr r3, r3, #0x40000000\n",
            "add r4, r0, ",
            $acc,
            ", asr #31\n",
            "smlal r3, r4, ",
            $acc,
            ", r1\n",
            "asr r4, r4, r2\n",
            $sat,
            "\n",
            $st
        )
    };
}

/// The saturation and the four stores of each [`QuadClamp`], for [`field_stage`].
#[cfg(icefold_dsp)]
macro_rules! field_clamp {
    ($clamp:expr, $body:ident, $mul:expr) => {
        match $clamp {
            QuadClamp::I16 => $body!(
                $mul,
                "ssat r4, #16, r4",
                "strh r4, [r5]",
                "strh r4, [r5, #2]",
                "strh r4, [r5, #4]",
                "strh r4, [r5, #6]"
            ),
            QuadClamp::I16Relu => $body!(
                $mul,
                "usat r4, #15, r4",
                "strh r4, [r5]",
                "strh r4, [r5, #2]",
                "strh r4, [r5, #4]",
                "strh r4, [r5, #6]"
            ),
            QuadClamp::I8 => $body!(
                $mul,
                "ssat r4, #8, r4",
                "strb r4, [r5]",
                "strb r4, [r5, #1]",
                "strb r4, [r5, #2]",
                "strb r4, [r5, #3]"
            ),
        }
    };
}

/// The last word of an odd field: one activation word against four channels' weights.
#[cfg(icefold_dsp)]
macro_rules! field_single {
    () => {
        concat!(
            "ldr r4, [r12], #4\n",
            "ldm r5!, {{r0-r3}}\n",
            "smlad r8, r0, r4, r8\n",
            "smlad r9, r1, r4, r9\n",
            "smlad r10, r2, r4, r10\n",
            "smlad r11, r3, r4, r11\n",
        )
    };
}

/// Whether [`fused_fields`] takes fields of `n` words: at least 2 (a word pair).
pub fn fused_takes(n: usize) -> bool {
    n >= 2
}

/// Four output channels of a first layer over `pixels` receptive fields of `n` words each
/// (`x`: pixel `p`'s field at words `p · n ..`, int16 lane pairs), weights `w` interleaved by
/// channel (word `4i + k`: channel `k`'s word `i`, `4 · n` words), each pixel's four sums from
/// `stage`'s biases through the channels' stages ([`RunScale::apply`]) into `out`: pixel `p`'s
/// channel `k` at element `p · stride + k` (int16 elements for [`QuadClamp::I16`] and
/// [`QuadClamp::I16Relu`], int8 for [`QuadClamp::I8`], `out` as bytes, little-endian). Groups
/// of four channels one after another: group `g`'s weights words `4 · n · g ..` of `w`, its
/// stage `stages[g]`, its outputs from element `4 · g` of each pixel. `false` (nothing
/// written) unless [`fused_takes`] `n`, `pixels >= 1`, `4 · groups <= stride <= 2^20`, every
/// stage has the first's clamp, `w` holds every group's `4 · n` words, `x` `pixels · n` and
/// `out` the last pixel's last group.
///
/// With the DSP extension, per pixel and group: the field's words in pairs (one LDRD, two LDMs
/// of four weights, eight SMLADs: 11 instructions per 16 products, every pair unrolled for
/// fields of 15 and 20 words: 3x3x3 and 10x4x1 windows; a loop of them otherwise), the
/// odd last word alone, then per channel the output stage (eight instructions per output) and
/// ten per pixel: where the pointwise tile's passes of eight words take a 3x3x3 field as 16
/// words and two loop branches.
#[inline(never)]
pub fn fused_fields(
    w: &[u32],
    x: &[u32],
    n: usize,
    stages: &mut [FieldStage],
    out: &mut [u8],
    (pixels, stride): (usize, usize),
) -> bool {
    let Some(clamp) = stages.first().map(|s| s.clamp) else {
        return false;
    };
    let groups = stages.len();
    let size = if clamp == QuadClamp::I8 { 1 } else { 2 };
    // The last group's last element: `(pixels − 1) · stride + 4 · groups − 1`.
    let span = pixels.checked_sub(1).and_then(|p| {
        p.checked_mul(stride)?
            .checked_add(4 * groups)?
            .checked_mul(size)
    });
    let fits = span.is_some_and(|span| span <= out.len())
        && (4 * groups..=1 << 20).contains(&stride)
        && fused_takes(n)
        && w.len() / (4 * n) >= groups
        && x.len() / n >= pixels
        && stages.iter().all(|s| s.clamp == clamp);
    if !fits {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        let step = stride * size;
        for (g, (stage, w)) in stages.iter_mut().zip(w.chunks_exact(4 * n)).enumerate() {
            let start = out.as_mut_ptr().wrapping_add(4 * g * size);
            let p = &mut stage.params;
            p[4] = start as usize as u32;
            p[5] = w.as_ptr() as usize as u32;
            p[6] = (n / 2) as u32;
            p[7] = start.wrapping_add(pixels * step) as usize as u32;
            p[8] = step as u32;
            // SAFETY: per pixel the loop reads the `n` words of its field through r12 (LDRD
            // and LDR, post-incremented: pixel `p < pixels` reads words `p · n .. (p + 1) · n`
            // of `x`, which holds `pixels · n`) and the `4 · n` words of the group's weights
            // from their start through r5 (LDM of four, written back: an exact chunk of
            // `w`), then writes its four elements at `start + p · step + k · size`, `k < 4` (r5,
            // advanced by `step`, stopping when it reaches `start + pixels · step`): the last
            // lies below `(pixels − 1) · stride + 4 · groups` elements (checked above). The
            // loop counts `n / 2 >= 1` word pairs where it is not unrolled. It reads and writes
            // the words of `p` (alive past the statement; r0 and its stacked copy point at word
            // 4, every offset from it or from the constants' pointer stays within words 0-20),
            // pushes two words it pops before the end: r6 (LLVM's base pointer, not an
            // operand) leaves as it came. `x` and `w` are `u32` slices: word-aligned, as LDRD
            // and LDM need. Only the named registers and the flags (with Q) change; r7 is not
            // touched. LDM, LDMDB, LDRD, LDR, SMLAD, SMLAL, SSAT, USAT, PUSH, POP exist on every
            // icefold_dsp core.
            macro_rules! fused {
                ($mul:expr, $sat:literal, $s0:literal, $s1:literal, $s2:literal, $s3:literal) => {
                    unsafe {
                        core::arch::asm!(
                            "push {{r0, r6}}",
                            "1:",
                            "ldr lr, [sp]",
                            "ldmdb lr, {{r8-r11}}",
                            "ldr r5, [lr, #4]",
                            $mul,
                            "ldr lr, [sp]",
                            "ldr r5, [lr], #20",
                            field_stage!("r8", "!", $sat, $s0),
                            field_stage!("r9", "!", $sat, $s1),
                            field_stage!("r10", "!", $sat, $s2),
                            field_stage!("r11", "", $sat, $s3),
                            // The next pixel's output, until the end (lr at word 18).
                            "ldrd r0, r1, [lr, #-44]",
                            "add r5, r5, r1",
                            "str r5, [lr, #-56]",
                            "cmp r5, r0",
                            "bne 1b",
                            "pop {{r0, r6}}",
                            inout("r0") p.as_mut_ptr().wrapping_add(4) => _,
                            out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                            inout("r12") x.as_ptr() => _,
                            out("lr") _,
                            options(),
                        );
                    }
                };
            }
            match n {
                15 => field_clamp!(
                    clamp,
                    fused,
                    concat!(
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        field_single!(),
                    )
                ),
                20 => field_clamp!(
                    clamp,
                    fused,
                    concat!(
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                        smlad_4x1_pair!(),
                    )
                ),
                _ if n % 2 == 0 => field_clamp!(
                    clamp,
                    fused,
                    concat!(
                        "ldr lr, [lr, #8]\n",
                        "2:\n",
                        smlad_4x1_pair!(),
                        "subs lr, lr, #1\n",
                        "bne 2b\n"
                    )
                ),
                _ => field_clamp!(
                    clamp,
                    fused,
                    concat!(
                        "ldr lr, [lr, #8]\n",
                        "2:\n",
                        smlad_4x1_pair!(),
                        "subs lr, lr, #1\n",
                        "bne 2b\n",
                        field_single!(),
                    )
                ),
            }
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        for (g, (stage, w)) in stages.iter().zip(w.chunks_exact(4 * n)).enumerate() {
            for (p, field) in x.chunks_exact(n).take(pixels).enumerate() {
                let mut acc = stage.bias;
                for (xw, ws) in field.iter().zip(w.chunks_exact(4)) {
                    for (a, wk) in acc.iter_mut().zip(ws) {
                        *a = super::smlad(*wk, *xw, *a);
                    }
                }
                for (k, (a, r)) in acc.iter().zip(&stage.runs).enumerate() {
                    let v = r.apply(*a);
                    let at = (p * stride + 4 * g + k) * size;
                    if let Some(y) = out.get_mut(at..at + size) {
                        match clamp {
                            // The int8 saturation (the stage may clamp to the int16 range it
                            // stands for).
                            QuadClamp::I8 => y.copy_from_slice(&[v.clamp(-128, 127) as i8 as u8]),
                            _ => y.copy_from_slice(&(v as i16).to_le_bytes()),
                        }
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

    /// Every shape the first layers take (runs of 5 and 2 words unrolled, others looped):
    /// each word lands at its place, the gaps after the windows stay as they were.
    #[test]
    fn windows_land_contiguously() {
        let src: Vec<u8> = (0..=255u8).collect();
        let word = |at: usize| u32::from_le_bytes([0, 1, 2, 3].map(|k| src[at + k]));
        for (rows, n, field) in [(3usize, 5usize, 16usize), (10, 2, 20), (2, 3, 7), (1, 1, 1)] {
            for pixels in [1usize, 2, 3] {
                // Windows 6 bytes apart, runs 22 bytes apart, from byte 2 (not word-aligned).
                let mut dst = std::vec![7u32; pixels * field + 1];
                assert!(copy_windows(
                    &src,
                    (2, 6, 22),
                    (rows, n, pixels),
                    &mut dst,
                    field
                ));
                let mut want = std::vec![7u32; dst.len()];
                for q in 0..pixels {
                    for r in 0..rows {
                        for i in 0..n {
                            want[q * field + r * n + i] = word(2 + 6 * q + 22 * r + 4 * i);
                        }
                    }
                }
                assert_eq!(dst, want, "{rows}x{n} in {field}, {pixels} pixels");
            }
        }
        // The last window's last byte at the end of `src`: taken; one byte past it: refused.
        let end = 256 - (6 + 22 + 8);
        let mut dst = [0u32; 12];
        assert!(copy_windows(&src, (end, 6, 22), (2, 2, 2), &mut dst, 6));
        assert!(!copy_windows(
            &src,
            (end + 2, 6, 22),
            (2, 2, 2),
            &mut dst,
            6
        ));
        // `dst` one word short of the last window's last word, or a window wider than its
        // field: refused, nothing written.
        let mut short = [0u32; 9];
        assert!(!copy_windows(&src, (0, 6, 22), (2, 2, 2), &mut short, 6));
        assert!(short.iter().all(|&w| w == 0));
        assert!(copy_windows(&src, (0, 6, 22), (2, 2, 2), &mut [0; 10], 6));
        assert!(!copy_windows(&src, (0, 6, 22), (2, 3, 1), &mut [0; 12], 5));
    }
}
