//! Depthwise convolution on whole blocks of 16 channels, taps in pairs: the results of
//! [`reference::int8::conv`](crate::kernels::reference::int8::conv), byte for byte.
//!
//! [`super::depthwise_avx2`]'s 8-channel loop spends a `vpmaddwd` on one product per lane (the
//! weight in a lane's low half): three instructions per 8 multiplications. Here a block of 16
//! channels is read as 16 int16 lanes per tap, and two taps' vectors are interleaved
//! (`vpunpcklwd` / `vpunpckhwd`) into `(x_a, x_b)` pairs, so one `vpmaddwd` against the
//! interleaved weights `(w_a, w_b)` adds both taps' products: four instructions per 16
//! multiplications. The products are exact (an int16 · int8 product is below 2^22 in magnitude,
//! a pair's sum below 2^23) and the int32 sums wrap as the reference's `wrapping_add`, so the
//! order of the taps does not matter. An odd last tap pairs with a zero weight.
//!
//! The interleaving works within each 128-bit half: the low unpack holds channels 0..4 and
//! 8..12 of the block, the high one 4..8 and 12..16; the weights are laid out in the same order
//! and the two accumulators are put back in channel order (`vperm2i128`) before the output stage.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use super::{Conv, Lanes, Shape, Stages, DW_MAX_TAPS};
use crate::kernels::reference::int8::FromWide;
use crate::kernels::reference::window_coord;

/// Channels per block.
const BLOCK: usize = 16;

/// Tap pairs of the largest kernel.
const MAX_PAIRS: usize = DW_MAX_TAPS.div_ceil(2);

/// Kernel rows and columns this loop takes (larger kernels go to the 8-channel loop).
const MAX_SIDE: usize = 8;

/// A kernel row or column in the padding.
const OUTSIDE: usize = usize::MAX;

/// Output pixels of a row per pass (two accumulators each: 8 of the 16 vector registers).
const PIXELS: usize = 4;

/// One block of 16 channels.
struct Block<'a, X> {
    c0: usize,
    /// What a padded tap reads: the block's pad values or the zero point.
    pad: [X; BLOCK],
    /// `[pair]` weights of channels 0..4, 8..12 (`lo`) and 4..8, 12..16 (`hi`), `(w_a, w_b)` int16
    /// pairs per int32 lane.
    lo: &'a [__m256i; MAX_PAIRS],
    hi: &'a [__m256i; MAX_PAIRS],
    stages: &'a Stages<16>,
    taps: &'a Taps,
}

/// Each tap's kernel row and column, and its offset in the input from the window's first tap.
/// An odd last tap's partner (its weights are zero) reads the first tap again.
struct Taps {
    row: [usize; 2 * MAX_PAIRS],
    col: [usize; 2 * MAX_PAIRS],
    offset: [usize; 2 * MAX_PAIRS],
}

/// Channels `0..in_c / 16 · 16` of the depthwise convolution `c` (the caller runs the rest),
/// kernels up to 8x8; returns the first channel it did not compute.
///
/// # Safety
/// AVX2 present; `s` checked by [`Shape::check`] against `c` and `output`, `s.depthwise`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn whole_blocks<X: Lanes, Y: FromWide + 'static>(
    s: &Shape,
    c: &Conv<'_, X>,
    output: &mut [Y],
) -> usize {
    let g = c.geometry;
    if g.kernel.iter().any(|&k| k > MAX_SIDE) {
        return 0;
    }
    let pairs = s.taps.div_ceil(2);
    let mut lo = [_mm256_setzero_si256(); MAX_PAIRS];
    let mut hi = [_mm256_setzero_si256(); MAX_PAIRS];
    let mut taps = Taps {
        row: [0; 2 * MAX_PAIRS],
        col: [0; 2 * MAX_PAIRS],
        offset: [0; 2 * MAX_PAIRS],
    };
    for t in 0..s.taps {
        let (ky, kx) = (t / g.kernel[1], t % g.kernel[1]);
        taps.row[t] = ky;
        taps.col[t] = kx;
        taps.offset[t] = (ky * g.dilation[0] * s.in_w + kx * g.dilation[1]) * s.in_stride;
    }
    let mut c0 = 0;
    while c0 + BLOCK <= s.in_c {
        let weight = |j: usize, t: usize| -> i16 {
            if t < s.taps {
                c.weights
                    .get((c0 + j) * s.taps + t)
                    .map_or(0, |&w| i16::from(w))
            } else {
                0
            }
        };
        for p in 0..pairs {
            // Lane order of an unpack: channels [0..4, 8..12] (low) and [4..8, 12..16] (high).
            let mut words = [[0i16; 16]; 2];
            for (half, w) in words.iter_mut().enumerate() {
                for (i, pair) in w.chunks_exact_mut(2).enumerate() {
                    let j = (i / 4) * 8 + half * 4 + i % 4;
                    pair[0] = weight(j, 2 * p);
                    pair[1] = weight(j, 2 * p + 1);
                }
            }
            // SAFETY: each `words[h]` holds 16 int16 values (32 bytes); unaligned loads.
            unsafe {
                lo[p] = _mm256_loadu_si256(words[0].as_ptr().cast());
                hi[p] = _mm256_loadu_si256(words[1].as_ptr().cast());
            }
        }
        // SAFETY: AVX2 present.
        let stages = unsafe { Stages::<16>::new(c, c0, BLOCK) };
        let mut pad = [c.padding.zero; BLOCK];
        if let Some(values) = c.padding.values.get(c0..c0 + BLOCK) {
            pad.copy_from_slice(values);
        }
        let block = Block {
            c0,
            pad,
            lo: &lo,
            hi: &hi,
            stages: &stages,
            taps: &taps,
        };
        let mut ox = 0;
        while ox < s.out_w {
            let n = (s.out_w - ox).min(PIXELS);
            // SAFETY (each call): AVX2 present, `s` checked, ox + P <= out_w.
            unsafe {
                match n {
                    4 => chunk::<4, X, Y>(s, c, &block, output, ox),
                    3 => chunk::<3, X, Y>(s, c, &block, output, ox),
                    2 => chunk::<2, X, Y>(s, c, &block, output, ox),
                    _ => chunk::<1, X, Y>(s, c, &block, output, ox),
                }
            }
            ox += n;
        }
        c0 += BLOCK;
    }
    c0
}

/// Depthwise outputs of every row at columns `ox..ox + P`, channels of `b`.
///
/// Rows whose every tap of every pixel reads the input (the interior of the map) take a loop
/// without a branch: tap `t` of pixel `k` is its first tap plus a fixed offset. The others pick
/// each tap's input or pad values one by one.
///
/// # Safety
/// AVX2 present; `s` checked with `s.depthwise`; `ox + P <= out_w`; `b.c0 + 16 <= in_c`.
#[target_feature(enable = "avx2")]
unsafe fn chunk<const P: usize, X: Lanes, Y: FromWide + 'static>(
    s: &Shape,
    c: &Conv<'_, X>,
    b: &Block<'_, X>,
    output: &mut [Y],
    ox: usize,
) {
    let g = c.geometry;
    let [kh, kw] = g.kernel;
    let cols = super::super::dw_columns::<P>(s.in_w, g, ox);
    let sw = g.stride[1];
    let pairs = s.taps.div_ceil(2);
    let Taps {
        row: tap_row,
        col: tap_col,
        offset: tap_off,
    } = b.taps;
    let columns_inside = cols.iter().take(kw).all(|&(lo, hi, _)| lo == 0 && hi == P);
    // The input column of tap column kx for pixel k, `OUTSIDE` in the padding.
    let mut columns = [[OUTSIDE; P]; MAX_SIDE];
    for (kx, col) in columns.iter_mut().take(kw).enumerate() {
        let (lo, hi, first) = cols[kx];
        for (k, ix) in col.iter_mut().enumerate().take(hi).skip(lo) {
            *ix = (first + (k * sw) as isize) as usize;
        }
    }
    for oy in 0..s.out_h {
        // The first element of kernel row ky's input row, `OUTSIDE` in the padding.
        let mut rows = [OUTSIDE; MAX_SIDE];
        for (ky, r) in rows.iter_mut().take(kh).enumerate() {
            if let Some(iy) = window_coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], s.in_h) {
                *r = iy * s.in_w;
            }
        }
        let mut lo = [_mm256_setzero_si256(); P];
        let mut hi = [_mm256_setzero_si256(); P];
        // Pixel k's first tap, when every tap of the row's pixels is inside the input.
        let first = match rows[0] {
            row0 if row0 != OUTSIDE && columns_inside && rows[kh - 1] != OUTSIDE => {
                let at = (row0 as isize + cols[0].2) as usize * s.in_stride + b.c0;
                let last = at + (P - 1) * sw * s.in_stride + tap_off[s.taps - 1] + BLOCK;
                (last <= c.input.len()).then_some(at)
            }
            _ => None,
        };
        let input = c.input.as_ptr();
        if let Some(at) = first {
            // Every read ends at or before `last` <= input.len() (checked above): taps of pixels
            // 0..P of rows inside the input.
            let x = input.wrapping_add(at);
            let src = |t: usize, k: usize| x.wrapping_add(k * sw * s.in_stride + tap_off[t]);
            // SAFETY: AVX2 present; `src` points at 16 values of the input (above).
            unsafe { accumulate(pairs, b, &mut lo, &mut hi, src) };
        } else {
            // Tap t of pixel k reads 16 channels of its input pixel or the pad values: a pointer
            // chosen without a branch, then the same loop.
            let src = |t: usize, k: usize| -> *const X {
                let (row, ix) = (rows[tap_row[t]], columns[tap_col[t]][k]);
                if row == OUTSIDE || ix == OUTSIDE {
                    b.pad.as_ptr()
                } else {
                    input.wrapping_add((row + ix) * s.in_stride + b.c0)
                }
            };
            // SAFETY: AVX2 present; `src` points at 16 values: the block's channels
            // c0..c0 + 16 <= in_c of an input pixel inside the input (pixels `in_stride` apart,
            // the last one whole: `Shape::check`), or the 16 pad values.
            unsafe { accumulate(pairs, b, &mut lo, &mut hi, src) };
        }
        for k in 0..P {
            // Channels 0..8 and 8..16 in order.
            let acc = [
                _mm256_permute2x128_si256::<0x20>(lo[k], hi[k]),
                _mm256_permute2x128_si256::<0x31>(lo[k], hi[k]),
            ];
            let at = (oy * s.out_w + ox + k) * s.out_stride + b.c0;
            if let Some(out) = output.get_mut(at..at + BLOCK) {
                // SAFETY: AVX2 present.
                unsafe { b.stages.store(&acc, &c.bounds, out) };
            }
        }
    }
}

/// Adds the products of tap pairs `..pairs` of pixels `0..P` to their accumulators: channels
/// 0..4 and 8..12 in `lo`, 4..8 and 12..16 in `hi` (the lane order of the unpacks), tap `t` of
/// pixel `k` read as 16 values at `src(t, k)`.
///
/// # Safety
/// AVX2 present; `src(t, k)` points at 16 readable values for every `t < 2 · pairs`, `k < P`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn accumulate<const P: usize, X: Lanes>(
    pairs: usize,
    b: &Block<'_, X>,
    lo: &mut [__m256i; P],
    hi: &mut [__m256i; P],
    src: impl Fn(usize, usize) -> *const X,
) {
    let read = |t: usize, k: usize| -> __m256i {
        // SAFETY: 16 values of X at `src(t, k)` (the caller's guarantee): 16 bytes (int8) or
        // 32 (int16), unaligned loads.
        unsafe {
            let p = src(t, k);
            if X::WIDE {
                _mm256_loadu_si256(p.cast())
            } else {
                _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()))
            }
        }
    };
    for p in 0..pairs {
        for k in 0..P {
            let (xa, xb) = (read(2 * p, k), read(2 * p + 1, k));
            lo[k] = _mm256_add_epi32(
                lo[k],
                _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), b.lo[p]),
            );
            hi[k] = _mm256_add_epi32(
                hi[k],
                _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), b.hi[p]),
            );
        }
    }
}
