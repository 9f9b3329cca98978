//! The groups = 1 convolutions' four-channel tile (issue #16, "round 4" in
//! docs/BENCHMARKS.md): four output channels × one pixel on int16 lane pairs, the weights of
//! the four channels interleaved word by word ([`widen_interleaved`]) so that one LDM loads
//! the four words one activation word meets. Used by `pointwise_quads` in
//! src/kernels/fast/conv.rs.
//!
//! [`smlad_2x2`](super::smlad_2x2) loads one word per SMLAD (34 instructions per 32 products):
//! here one LDR of an activation and one LDM of four weights serve four SMLADs (6.5
//! instructions per 8 products with the loop's SUBS/BNE), and the pixel loop runs inside the
//! assembly, so a block of pixels costs one call.

use super::{sxtb16, sxtb16_ror8};

/// Offset (in `i32`) of channels 2 and 3 in the sums [`smlad_4x1_pixels`] writes: pixel `p`'s
/// channels 0 and 1 at `sums[2p]`, `sums[2p + 1]`, its channels 2 and 3 at `QUAD_SPLIT + 2p`
/// and `QUAD_SPLIT + 2p + 1`, so that each half is a channel pair's `[pixel][2]` run for
/// [`requant_run`](super::requant_run). 256 bytes: an immediate offset of STRD.
pub const QUAD_SPLIT: usize = 64;

/// Widens the int8 weights of four output channels, `2 · n` values per channel with `n` even
/// (whole runs of four), into `out` interleaved: word `4j + k` is channel `k`'s values
/// `(2j, 2j + 1)` as a lane pair (the order of an int16 input's words). Writes the first
/// `4 · n` words of `out` (whole runs of eight words only), nothing if a channel has fewer than
/// `2 · n` values.
#[inline(always)]
pub fn widen_interleaved(w: [&[i8]; 4], n: usize, out: &mut [u32]) {
    let runs = n / 2;
    let [Some(w0), Some(w1), Some(w2), Some(w3)] = w.map(|w| w.get(..4 * runs)) else {
        return;
    };
    #[cfg(icefold_dsp)]
    {
        let steps = runs.min(out.len() / 8);
        if steps == 0 {
            return;
        }
        // The output pointer runs 8 bytes ahead of each step's first word (STRD's negative
        // offset reaches it; the last STRD advances it by 32 bytes).
        let dst = out.as_mut_ptr().wrapping_add(2);
        let end = dst.wrapping_add(8 * steps);
        // Per step: each channel's word (LDR, post-incremented; an int8 row need not be
        // word-aligned: LDR takes an unaligned address on every Armv7E-M / Armv8-M Mainline
        // core, UNALIGN_TRP being clear), SXTB16 and SXTB16 ROR 8, PKHBT and PKHTB, two
        // channels' words out per STRD: 26 instructions per eight words where the compiled
        // loop took 35 (0.43 M of MobileNetV1's instructions).
        //
        // SAFETY: the loop runs `steps >= 1` times (the output pointer, advanced by 32 bytes a
        // step from `out` + 8 bytes, stops at `out + 8 · steps` words + 8 bytes). Step `j`
        // reads bytes `4j .. 4j + 4` of each row (`j < steps <= runs`, each row holds
        // `4 · runs` bytes, checked above) and writes words `8j .. 8j + 8` of `out`
        // (`steps <= out.len() / 8`), a `u32` slice: word-aligned, as STRD needs. Only the
        // named registers and the flags (CMP) change; SXTB16, PKHBT and PKHTB exist on every
        // icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {t}, [{p0}], #4",
                "sxtb16 {o}, {t}, ror #8",
                "sxtb16 {t}, {t}",
                "pkhbt {l0}, {t}, {o}, lsl #16",
                "pkhtb {h0}, {o}, {t}, asr #16",
                "ldr {t}, [{p1}], #4",
                "sxtb16 {o}, {t}, ror #8",
                "sxtb16 {t}, {t}",
                "pkhbt {l1}, {t}, {o}, lsl #16",
                "pkhtb {h1}, {o}, {t}, asr #16",
                "strd {l0}, {l1}, [{dst}, #-8]",
                "strd {h0}, {h1}, [{dst}, #8]",
                "ldr {t}, [{p2}], #4",
                "sxtb16 {o}, {t}, ror #8",
                "sxtb16 {t}, {t}",
                "pkhbt {l0}, {t}, {o}, lsl #16",
                "pkhtb {h0}, {o}, {t}, asr #16",
                "ldr {t}, [{p3}], #4",
                "sxtb16 {o}, {t}, ror #8",
                "sxtb16 {t}, {t}",
                "pkhbt {l1}, {t}, {o}, lsl #16",
                "pkhtb {h1}, {o}, {t}, asr #16",
                "strd {h0}, {h1}, [{dst}, #16]",
                "strd {l0}, {l1}, [{dst}], #32",
                "cmp {dst}, {end}",
                "bne 2b",
                p0 = inout(reg) w0.as_ptr() => _,
                p1 = inout(reg) w1.as_ptr() => _,
                p2 = inout(reg) w2.as_ptr() => _,
                p3 = inout(reg) w3.as_ptr() => _,
                dst = inout(reg) dst => _,
                end = in(reg) end,
                t = out(reg) _,
                o = out(reg) _,
                l0 = out(reg) _,
                l1 = out(reg) _,
                h0 = out(reg) _,
                h1 = out(reg) _,
                options(nostack),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let quads = w0
            .chunks_exact(4)
            .zip(w1.chunks_exact(4))
            .zip(w2.chunks_exact(4).zip(w3.chunks_exact(4)));
        // Per run of four weights of a channel: bytes 0 and 2, 1 and 3 sign-extended (SXTB16),
        // then the pairs (0, 1) and (2, 3) packed (PKHBT, PKHTB); the four channels' runs per
        // step, so the eight words go out without a bounds check each: about 4 instructions per
        // word where a loop per channel with its checks took 9.
        for (slot, ((q0, q1), (q2, q3))) in out.chunks_exact_mut(8).zip(quads) {
            let (Ok(slot), Ok(q0), Ok(q1), Ok(q2), Ok(q3)) = (
                <&mut [u32; 8]>::try_from(slot),
                <[i8; 4]>::try_from(q0),
                <[i8; 4]>::try_from(q1),
                <[i8; 4]>::try_from(q2),
                <[i8; 4]>::try_from(q3),
            ) else {
                continue;
            };
            let halves = [q0, q1, q2, q3].map(|q| {
                let word = u32::from_le_bytes(q.map(|b| b as u8));
                let (even, odd) = (sxtb16(word), sxtb16_ror8(word));
                (
                    (even & 0xFFFF) | (odd << 16),
                    (even >> 16) | (odd & 0xFFFF_0000),
                )
            });
            let [(l0, h0), (l1, h1), (l2, h2), (l3, h3)] = halves;
            *slot = [l0, l1, l2, l3, h0, h1, h2, h3];
        }
    }
}

/// Four output channels × `pixels` pixels of a pointwise convolution on int16 lane pairs:
/// for pixel `p` and channel `k`, `bias[k] + Σ_j smlad(w[4j + k], x[p · n + j])` over `j < n`,
/// written to `sums` as [`QUAD_SPLIT`] describes. `w`: [`widen_interleaved`]'s words; `x`: the
/// pixels' words one after the other (`n` per pixel). Nothing is written unless `n` is a
/// positive multiple of 4, `1 <= pixels`, `2 · pixels <= QUAD_SPLIT`, and the slices hold
/// `4 · n`, `pixels · n` and `QUAD_SPLIT + 2 · pixels` values.
///
/// With the DSP extension (`icefold_dsp`): per activation word an LDR, one LDM of the four
/// channels' weights and four SMLADs; four words per loop pass (26 instructions per 32
/// products); per pixel 11 more (the biases by LDM, the sums stored by two STRDs). Twelve
/// registers: four accumulators, four weights, the activation, two pointers and the count; the
/// block's constants are read from a parameter block whose address the loop keeps on the stack.
#[inline(always)]
pub fn smlad_4x1_pixels(
    w: &[u32],
    x: &[u32],
    n: usize,
    bias: [i32; 4],
    sums: &mut [i32],
    pixels: usize,
) {
    if n == 0
        || n % 4 != 0
        || pixels == 0
        || 2 * pixels > QUAD_SPLIT
        || w.len() / 4 < n
        || x.len() / n < pixels
        || sums.len() < QUAD_SPLIT + 2 * pixels
    {
        return;
    }
    #[cfg(icefold_dsp)]
    {
        let start = sums.as_mut_ptr();
        // The parameter block: the biases (LDM into the accumulators), the weights' start and
        // the passes per pixel (LDRD), the next pixel's sums and the end of the block's
        // (LDRD; the first is advanced by the loop).
        let mut params: [u32; 8] = [
            bias[0] as u32,
            bias[1] as u32,
            bias[2] as u32,
            bias[3] as u32,
            w.as_ptr() as usize as u32,
            (n / 4) as u32,
            start as usize as u32,
            start.wrapping_add(2 * pixels) as usize as u32,
        ];
        // SAFETY: the checks above. Per pixel the loop reads `n` words of `x` through r12
        // (post-incremented, so pixel `p` reads words `p · n .. (p + 1) · n`, `p < pixels`,
        // inside `x`) and the `4 · n` words of `w` from its start through r5 (LDM with
        // writeback, `n / 4` passes of four LDMs of four words: inside `w`). It writes the
        // sums of pixel `p` at `start + 2p` and `start + QUAD_SPLIT + 2p` (STRD, 8 bytes each,
        // the second at the immediate offset 256 = 4 · QUAD_SPLIT bytes), `p < pixels`,
        // stopping when the pointer reaches `start + 2 · pixels`: inside `sums`, whose length
        // is at least `QUAD_SPLIT + 2 · pixels`. It reads and writes the eight words of
        // `params` (alive past the statement) and pushes one word it pops before the end.
        // All loads and stores are of `u32`/`i32` slices: word-aligned (LDRD/STRD need only
        // that). Only the named registers and the flags (with Q) change; r6 and r7 (LLVM's
        // base and frame pointers) are not touched. LDM, LDRD, STRD, SMLAD, PUSH, POP exist on
        // every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "push {{r0}}",
                "1:",
                "ldr lr, [sp]",
                "ldm lr, {{r8-r11}}",
                "ldrd r5, lr, [lr, #16]",
                "2:",
                smlad_4x1_passes!(),
                "subs lr, lr, #1",
                "bne 2b",
                "ldr lr, [sp]",
                "ldrd r4, r5, [lr, #24]",
                "strd r10, r11, [r4, #256]",
                "strd r8, r9, [r4], #8",
                "str r4, [lr, #24]",
                "cmp r4, r5",
                "bne 1b",
                "pop {{r0}}",
                inout("r0") params.as_mut_ptr() => _,
                out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                inout("r12") x.as_ptr() => _,
                out("lr") _,
                options(),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let (pair01, pair23) = sums.split_at_mut(QUAD_SPLIT);
        for (p, xp) in x.chunks_exact(n).take(pixels).enumerate() {
            let mut acc = bias;
            for (xw, ws) in xp.iter().zip(w.chunks_exact(4)) {
                for (a, wk) in acc.iter_mut().zip(ws) {
                    *a = super::smlad(*wk, *xw, *a);
                }
            }
            if let (Some(lo), Some(hi)) = (
                pair01.get_mut(2 * p..2 * p + 2),
                pair23.get_mut(2 * p..2 * p + 2),
            ) {
                lo.copy_from_slice(&acc[..2]);
                hi.copy_from_slice(&acc[2..]);
            }
        }
    }
}

/// Four output channels × a run of `pixels` output pixels of a regular convolution on int16
/// lane pairs, each pixel's window whole or clipped to the input: for pixel `p` and channel
/// `k`, `bias[k] + Σ_r Σ_j smlad(w[4 · (r · w_step + j) + k], x[p · pixel_step + r · x_step +
/// j])` over `r < rows`, `j < len` (`shape` and `pixel_step` in words; `w`:
/// [`widen_interleaved`]'s words, a weight row `w_step` words of each channel after the
/// previous one), written to `sums` as [`QUAD_SPLIT`] describes. `false` (nothing written)
/// unless `len` is a positive multiple of 4, `rows >= 1`, both steps are at least `len`,
/// `1 <= pixels`, `2 · pixels <= QUAD_SPLIT`, and the slices hold the pixels' rows and sums.
///
/// With the DSP extension (`icefold_dsp`): the loop of [`smlad_4x1_pixels`] per row (6.5
/// instructions per 8 products), 6 more per row and 11 per pixel: the passes and rows left
/// in r6 and r7 (saved by the loop), the parameter block's address in lr ([`run_params`]).
/// Before (round 7) the counts lived in memory: 14 per row, 16 per pixel.
#[inline(always)]
pub fn smlad_4x1_run(
    w: &[u32],
    x: &[u32],
    (shape, pixel_step): (super::Rows, usize),
    bias: [i32; 4],
    sums: &mut [i32],
    pixels: usize,
) -> bool {
    let super::Rows {
        len,
        x_step,
        w_step,
        ..
    } = shape;
    let (Some(x_len), Some(w_len)) = (shape.extent(x_step), shape.extent(w_step)) else {
        return false;
    };
    let x_len = pixels
        .checked_sub(1)
        .and_then(|p| p.checked_mul(pixel_step))
        .and_then(|at| at.checked_add(x_len));
    let (Some(x_len), Some(w_len)) = (x_len, w_len.checked_mul(4)) else {
        return false;
    };
    if len == 0
        || len % 4 != 0
        || 2 * pixels > QUAD_SPLIT
        || x.len() < x_len
        || w.len() < w_len
        || sums.len() < QUAD_SPLIT + 2 * pixels
    {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        let start = sums.as_mut_ptr();
        let mut params = run_params(
            bias,
            w,
            shape,
            (16 * (w_step - len)) as u32,
            pixel_step,
            (start, pixels),
        );
        // SAFETY: the checks above (`extent`: `rows >= 1`, both steps at least `len`, and the
        // extents fit a usize). Pixel `p < pixels` starts at word `p · pixel_step` of `x`
        // (r12: after its last row moved on by `rows · x_step` words, then by
        // `pixel_step − rows · x_step`, modulo 2^32: the next pixel's start); its row `r`
        // reads the words `p · pixel_step + r · x_step + (0..len)` through r12
        // (post-incremented, then moved on by `x_step − len` words), inside `x`, which holds
        // `(pixels − 1) · pixel_step + (rows − 1) · x_step + len`; the weights from `w`'s start
        // each pixel (row `r`: words `4 · (r · w_step) .. 4 · (r · w_step + len)` through r5,
        // LDM with writeback, then moved on by `4 · (w_step − len)`), inside `w`. Pointers
        // moved past the last row are not read through. It writes pixel `p`'s sums at
        // `start + 2p` and `start + QUAD_SPLIT + 2p` (STRD, the second at the immediate offset
        // 256 bytes), stopping when the pointer reaches `start + 2 · pixels`: inside `sums`. It
        // reads and writes the words of `params` (alive past the statement, its address in lr
        // throughout). r6 and r7 (LLVM's base and frame pointers, not operands: the passes
        // left in a row and the rows left in a pixel) are pushed first and popped last: 8
        // bytes of stack below `sp`, nothing else. Word-aligned loads and stores (`u32`/`i32`
        // slices). Only the named registers and the flags (with Q) change. LDM, LDRD, STRD,
        // SMLAD, PUSH, POP exist on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "push {{r6, r7}}",
                "1:",
                "ldm lr, {{r8-r11}}",
                "ldrd r5, r7, [lr, #16]",
                "2:",
                "ldr r6, [lr, #24]",
                "3:",
                smlad_4x1_passes!(),
                "subs r6, r6, #1",
                "bne 3b",
                "ldrd r0, r1, [lr, #28]",
                "add r12, r12, r0",
                "add r5, r5, r1",
                "subs r7, r7, #1",
                "bne 2b",
                "ldr r0, [lr, #36]",
                "add r12, r12, r0",
                "ldrd r4, r5, [lr, #40]",
                "strd r10, r11, [r4, #256]",
                "strd r8, r9, [r4], #8",
                "str r4, [lr, #40]",
                "cmp r4, r5",
                "bne 1b",
                "pop {{r6, r7}}",
                inout("lr") params.as_mut_ptr() => _,
                inout("r12") x.as_ptr() => _,
                out("r0") _, out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let (pair01, pair23) = sums.split_at_mut(QUAD_SPLIT);
        for p in 0..pixels {
            let mut acc = bias;
            for r in 0..shape.rows {
                let at = p * pixel_step + r * x_step;
                let (Some(xs), Some(ws)) = (
                    x.get(at..at + len),
                    w.get(4 * r * w_step..4 * (r * w_step + len)),
                ) else {
                    return false;
                };
                for (xw, ws) in xs.iter().zip(ws.chunks_exact(4)) {
                    for (a, wk) in acc.iter_mut().zip(ws) {
                        *a = super::smlad(*wk, *xw, *a);
                    }
                }
            }
            let [a0, a1, a2, a3] = acc;
            if let (Some(lo), Some(hi)) = (
                pair01
                    .get_mut(2 * p..)
                    .and_then(|s| s.first_chunk_mut::<2>()),
                pair23
                    .get_mut(2 * p..)
                    .and_then(|s| s.first_chunk_mut::<2>()),
            ) {
                (*lo, *hi) = ([a0, a1], [a2, a3]);
            }
        }
    }
    true
}

/// The parameter block of [`smlad_4x1_run`] and [`sxtb16_4x1_run`] (words): the biases (LDM
/// into the accumulators), the weights' start and the rows per pixel (LDRD), the passes of
/// four activation words per row, the bytes from a row's end to the next row's start
/// (activations, then weights: `w_skip`), the bytes from the activation pointer after a
/// pixel's last row to the next pixel's start (modulo 2^32), the next pixel's sums and the
/// end of the run's (LDRD). `shape` has been checked (`len` a positive multiple of 4, both
/// steps at least `len`).
#[cfg(icefold_dsp)]
#[inline(always)]
fn run_params(
    bias: [i32; 4],
    w: &[u32],
    shape: super::Rows,
    w_skip: u32,
    pixel_step: usize,
    (start, pixels): (*mut i32, usize),
) -> [u32; 12] {
    let super::Rows {
        rows, len, x_step, ..
    } = shape;
    // The activation pointer after the last row: `rows · x_step` words past the pixel's start.
    let back = (pixel_step as u32)
        .wrapping_mul(4)
        .wrapping_sub((rows as u32).wrapping_mul(x_step as u32).wrapping_mul(4));
    [
        bias[0] as u32,
        bias[1] as u32,
        bias[2] as u32,
        bias[3] as u32,
        w.as_ptr() as usize as u32,
        rows as u32,
        (len / 4) as u32,
        (4 * (x_step - len)) as u32,
        w_skip,
        back,
        start as usize as u32,
        start.wrapping_add(2 * pixels) as usize as u32,
    ]
}

/// Widens the int8 weights of four output channels, `4 · runs` values per channel, for an
/// int8 input ([`sxtb16_4x1_run`]): per run of four values `(v0, v1, v2, v3)` of channel `k`
/// the word `8q + k` is `(v0, v2)` and `8q + 4 + k` is `(v1, v3)`, the lanes SXTB16 and
/// SXTB16 ROR 8 give a word of four int8 activations. Writes the first `8 · runs` words of
/// `out` (whole runs only), nothing if a channel has fewer than `4 · runs` values.
#[inline(always)]
pub fn widen_interleaved_quads(w: [&[i8]; 4], runs: usize, out: &mut [u32]) {
    let [Some(w0), Some(w1), Some(w2), Some(w3)] = w.map(|w| w.get(..4 * runs)) else {
        return;
    };
    let quads = w0
        .chunks_exact(4)
        .zip(w1.chunks_exact(4))
        .zip(w2.chunks_exact(4).zip(w3.chunks_exact(4)));
    for (slot, ((q0, q1), (q2, q3))) in out.chunks_exact_mut(8).zip(quads) {
        let (Ok(slot), Ok(q0), Ok(q1), Ok(q2), Ok(q3)) = (
            <&mut [u32; 8]>::try_from(slot),
            <[i8; 4]>::try_from(q0),
            <[i8; 4]>::try_from(q1),
            <[i8; 4]>::try_from(q2),
            <[i8; 4]>::try_from(q3),
        ) else {
            continue;
        };
        let words = [q0, q1, q2, q3].map(|q| u32::from_le_bytes(q.map(|b| b as u8)));
        let [(e0, o0), (e1, o1), (e2, o2), (e3, o3)] = words.map(|w| (sxtb16(w), sxtb16_ror8(w)));
        *slot = [e0, e1, e2, e3, o0, o1, o2, o3];
    }
}

/// [`smlad_4x1_run`] on an int8 input: `x` holds words of four int8 values (little-endian),
/// `w` [`widen_interleaved_quads`]' words (eight per activation word), `shape` and
/// `pixel_step` in activation words. For pixel `p` and channel `k`: `bias[k] + Σ_r Σ_j Σ_i
/// w_k[4 · (r · w_step + j) + i] · x_i[p · pixel_step + r · x_step + j]`, written to `sums` as
/// [`QUAD_SPLIT`] describes. `false` (nothing written) unless `len` is a positive multiple of
/// 4, `rows >= 1`, both steps are at least `len`, `1 <= pixels`, `2 · pixels <= QUAD_SPLIT`,
/// and the slices hold the pixels' rows and sums.
///
/// With the DSP extension (`icefold_dsp`): per activation word an LDR, SXTB16 and SXTB16 ROR
/// 8, two LDMs of four weights and eight SMLADs (13 instructions per 16 products, as the
/// int16 tile's), four words per pass, the pass count in r6 and the row count in r7 (saved
/// by the loop: 2 instructions per pass where the count in memory took 4), 7 more per row
/// and 12 per pixel (the parameter block's address on the stack: lr holds activations).
#[inline(always)]
pub fn sxtb16_4x1_run(
    w: &[u32],
    x: &[u32],
    (shape, pixel_step): (super::Rows, usize),
    bias: [i32; 4],
    sums: &mut [i32],
    pixels: usize,
) -> bool {
    let super::Rows {
        len,
        x_step,
        w_step,
        ..
    } = shape;
    let (Some(x_len), Some(w_len)) = (shape.extent(x_step), shape.extent(w_step)) else {
        return false;
    };
    let x_len = pixels
        .checked_sub(1)
        .and_then(|p| p.checked_mul(pixel_step))
        .and_then(|at| at.checked_add(x_len));
    let (Some(x_len), Some(w_len)) = (x_len, w_len.checked_mul(8)) else {
        return false;
    };
    if len == 0
        || len % 4 != 0
        || 2 * pixels > QUAD_SPLIT
        || x.len() < x_len
        || w.len() < w_len
        || sums.len() < QUAD_SPLIT + 2 * pixels
    {
        return false;
    }
    #[cfg(icefold_dsp)]
    {
        let start = sums.as_mut_ptr();
        // As `smlad_4x1_run`'s, the weights' row skip for eight words per activation word.
        let mut params = run_params(
            bias,
            w,
            shape,
            (32 * (w_step - len)) as u32,
            pixel_step,
            (start, pixels),
        );
        // SAFETY: as `smlad_4x1_run`'s, with eight weight words per activation word: row `r`
        // of every pixel reads the words `8 · (r · w_step) .. 8 · (r · w_step + len)` of `w`
        // (two LDMs of four with writeback per activation word, then moved on by
        // `8 · (w_step − len)` words), inside `w`, which holds `8 · ((rows − 1) · w_step +
        // len)`. lr holds the even lanes of the activation word in the passes, so the
        // parameter block's address lives on the stack: the loop pushes it with the passes
        // per row and r6, r7 (LLVM's base and frame pointers, not operands: the passes left
        // and the rows left), 16 bytes below `sp`, and pops them before the end. SXTB16
        // exists on every icefold_dsp core.
        unsafe {
            core::arch::asm!(
                "ldr r1, [r0, #24]",
                "push {{r0, r1, r6, r7}}",
                "1:",
                "ldr lr, [sp]",
                "ldm lr, {{r8-r11}}",
                "ldrd r5, r7, [lr, #16]",
                "2:",
                "ldr r6, [sp, #4]",
                "3:",
                "ldr r4, [r12], #4",
                "sxtb16 lr, r4",
                "sxtb16 r4, r4, ror #8",
                "ldm r5!, {{r0-r3}}",
                "smlad r8, r0, lr, r8",
                "smlad r9, r1, lr, r9",
                "smlad r10, r2, lr, r10",
                "smlad r11, r3, lr, r11",
                "ldm r5!, {{r0-r3}}",
                "smlad r8, r0, r4, r8",
                "smlad r9, r1, r4, r9",
                "smlad r10, r2, r4, r10",
                "smlad r11, r3, r4, r11",
                "ldr r4, [r12], #4",
                "sxtb16 lr, r4",
                "sxtb16 r4, r4, ror #8",
                "ldm r5!, {{r0-r3}}",
                "smlad r8, r0, lr, r8",
                "smlad r9, r1, lr, r9",
                "smlad r10, r2, lr, r10",
                "smlad r11, r3, lr, r11",
                "ldm r5!, {{r0-r3}}",
                "smlad r8, r0, r4, r8",
                "smlad r9, r1, r4, r9",
                "smlad r10, r2, r4, r10",
                "smlad r11, r3, r4, r11",
                "ldr r4, [r12], #4",
                "sxtb16 lr, r4",
                "sxtb16 r4, r4, ror #8",
                "ldm r5!, {{r0-r3}}",
                "smlad r8, r0, lr, r8",
                "smlad r9, r1, lr, r9",
                "smlad r10, r2, lr, r10",
                "smlad r11, r3, lr, r11",
                "ldm r5!, {{r0-r3}}",
                "smlad r8, r0, r4, r8",
                "smlad r9, r1, r4, r9",
                "smlad r10, r2, r4, r10",
                "smlad r11, r3, r4, r11",
                "ldr r4, [r12], #4",
                "sxtb16 lr, r4",
                "sxtb16 r4, r4, ror #8",
                "ldm r5!, {{r0-r3}}",
                "smlad r8, r0, lr, r8",
                "smlad r9, r1, lr, r9",
                "smlad r10, r2, lr, r10",
                "smlad r11, r3, lr, r11",
                "ldm r5!, {{r0-r3}}",
                "smlad r8, r0, r4, r8",
                "smlad r9, r1, r4, r9",
                "smlad r10, r2, r4, r10",
                "smlad r11, r3, r4, r11",
                "subs r6, r6, #1",
                "bne 3b",
                "ldr lr, [sp]",
                "ldrd r0, r1, [lr, #28]",
                "add r12, r12, r0",
                "add r5, r5, r1",
                "subs r7, r7, #1",
                "bne 2b",
                "ldr r0, [lr, #36]",
                "add r12, r12, r0",
                "ldrd r4, r5, [lr, #40]",
                "strd r10, r11, [r4, #256]",
                "strd r8, r9, [r4], #8",
                "str r4, [lr, #40]",
                "cmp r4, r5",
                "bne 1b",
                "pop {{r0, r1, r6, r7}}",
                inout("r0") params.as_mut_ptr() => _,
                inout("r12") x.as_ptr() => _,
                out("r1") _, out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                out("lr") _,
                options(),
            );
        }
    }
    #[cfg(not(icefold_dsp))]
    {
        let (pair01, pair23) = sums.split_at_mut(QUAD_SPLIT);
        for p in 0..pixels {
            let mut acc = bias;
            for r in 0..shape.rows {
                let at = p * pixel_step + r * x_step;
                let (Some(xs), Some(ws)) = (
                    x.get(at..at + len),
                    w.get(8 * r * w_step..8 * (r * w_step + len)),
                ) else {
                    return false;
                };
                for (xw, ws) in xs.iter().zip(ws.chunks_exact(8)) {
                    let (even, odd) = (sxtb16(*xw), sxtb16_ror8(*xw));
                    for (k, a) in acc.iter_mut().enumerate() {
                        let (we, wo) = (ws.get(k).copied(), ws.get(4 + k).copied());
                        *a = super::smlad(
                            wo.unwrap_or(0),
                            odd,
                            super::smlad(we.unwrap_or(0), even, *a),
                        );
                    }
                }
            }
            let [a0, a1, a2, a3] = acc;
            if let (Some(lo), Some(hi)) = (
                pair01
                    .get_mut(2 * p..)
                    .and_then(|s| s.first_chunk_mut::<2>()),
                pair23
                    .get_mut(2 * p..)
                    .and_then(|s| s.first_chunk_mut::<2>()),
            ) {
                (*lo, *hi) = ([a0, a1], [a2, a3]);
            }
        }
    }
    true
}

/// `(low, high)` of [`widen_interleaved`]'s word, for the tests' expectations.
#[cfg(test)]
fn expected_word(w: &[i8], j: usize) -> u32 {
    super::pair(i32::from(w[2 * j]), i32::from(w[2 * j + 1]))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::pair;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn interleaved_words_pair_each_channels_values() {
        let n = 8;
        let w: Vec<Vec<i8>> = (0..4)
            .map(|k| (0..2 * n).map(|i| (i * 17 + k * 31) as u8 as i8).collect())
            .collect();
        let mut out = std::vec![0u32; 4 * n];
        widen_interleaved([&w[0], &w[1], &w[2], &w[3]], n, &mut out);
        for j in 0..n {
            for k in 0..4 {
                assert_eq!(
                    out[4 * j + k],
                    expected_word(&w[k], j),
                    "word {j} channel {k}"
                );
            }
        }
    }

    #[test]
    fn four_channel_tile_matches_plain_sums() {
        let (n, pixels) = (8, 5);
        let w: Vec<u32> = (0..4 * n as u32)
            .map(|i| pair(i as i32 * 331 % 255 - 127, 100 - i as i32 * 7))
            .collect();
        let x: Vec<u32> = (0..(pixels * n) as u32)
            .map(|i| pair(i as i32 * 977 % 65535 - 32767, -(i as i32) * 401 % 30000))
            .collect();
        let bias = [5, -7, 1 << 20, -(1 << 20)];
        let mut sums = std::vec![0i32; QUAD_SPLIT + 2 * pixels];
        smlad_4x1_pixels(&w, &x, n, bias, &mut sums, pixels);
        let lane = |v: u32, hi: bool| i64::from(if hi { (v >> 16) as i16 } else { v as i16 });
        for p in 0..pixels {
            for k in 0..4 {
                let want: i64 = i64::from(bias[k])
                    + (0..n)
                        .map(|j| {
                            let (wv, xv) = (w[4 * j + k], x[p * n + j]);
                            lane(wv, false) * lane(xv, false) + lane(wv, true) * lane(xv, true)
                        })
                        .sum::<i64>();
                let at = if k < 2 {
                    2 * p + k
                } else {
                    QUAD_SPLIT + 2 * p + k - 2
                };
                assert_eq!(i64::from(sums[at]), want, "pixel {p} channel {k}");
            }
        }
    }
}
