//! Depthwise 3x3 convolutions (dilation 1, horizontal stride 1 or 2, any vertical stride and
//! padding), two channels at a time: the same results as
//! [`reference::int8::conv`](crate::kernels::reference::int8::conv), byte for byte.
//!
//! The general depthwise loops of [`super::conv`] spend most of their instructions on the border
//! (a padded tap: 20 of the 36 pixels of MobileNet's 6x6 maps, 56 of the 125 of DS-CNN's 25x5)
//! and on per-tap address arithmetic. Here, for one channel pair, every input row a window reads is
//! first copied into a stack row of lane-pair words (`(channel, channel + 1)`); the padded columns
//! hold the pad values (written once per channel pair) and padded rows are whole rows of them.
//! The rows live in a ring of five slots, `py % 3` with slots 0 and 1 repeated as 3 and 4, so the
//! three rows of every window are consecutive slots and one pointer reaches them: with stride 1
//! each input row is copied once per channel pair (twice when it lands in slot 0 or 1).
//!
//! Per output row, [`simd::dw3x3_row`] computes the sums of every pixel pair (nine loads and 36
//! 16-bit multiplies per pair, hand-written assembly on Arm DSP cores), then
//! [`simd::requant_run`] runs each channel's output stage over the row with its constants in
//! registers (factors it does not take go through [`Stage::scale`]), and both channels are stored
//! into the output row.
//!
//! On DSP cores, narrow maps (output rows of at most 12 pixels: DS-CNN's 25x5, MobileNet's
//! 12x12 to 3x3), rows of up to 24 pixels with at least 16 channels (MobileNet's 24x24 maps)
//! and, where the two-pixel pass runs, rows of up to 48 pixels with fewer (MobileNet's 48x48
//! g8) take a second kernel, `by_pixel`: pixel by pixel with the channel pairs innermost
//! ([`simd::dw3x3_pixel`]; with the clamp `[0, 32767]` and an output zero point of at most 0,
//! two adjacent pixels per pass, [`simd::dw3x3_pixel2_relu16`], sharing weights, constants and
//! input columns, every pixel pair of an output row in one call), its constants prepared once
//! per call rather than once per channel pair and band of rows (a layer in place runs in
//! bands, `engine::in_place`). The row kernel's ReLU layers store both channels' results from
//! one fused output stage ([`simd::requant_pairs_relu16`]).
//!
//! At horizontal stride 1 with that clamp, `by_pixel`'s ring is transposed: each word holds one
//! channel's two adjacent columns, so that SMLAD takes two taps of a channel per instruction
//! ([`simd::dw3x3_pairs_transposed`], 8 products per kernel row and four outputs where the
//! lane-pair ring needs 12; an odd row's last pixel by [`simd::dw3x3_pixel_transposed`]). The
//! row copies pay for it (PKHBT/PKHTB, 2.5 instructions a word instead of LDM/STM's 0.5), once
//! per input row; at stride 2 every output reads four times the input and the copies would
//! cost more than the products save, so stride 2 keeps the lane-pair ring.

use super::conv::{coord, stage, Conv, Lanes, LayerKey, Outputs};
use super::requant::{Bounds, Stage};
use super::simd;
use super::Store;
use crate::kernels::ConvGeometry;

/// Widest padded row (words) the kernel copies: `(out_w − 1) · stride + 3`, plus one word of
/// slack that the two-pixel pass may load but never uses; also the distance between the rows of
/// the ring, which the assembly of [`simd::dw3x3_row`] has in its offsets.
pub const MAX_ROW: usize = simd::DW_ROW;

/// Row slots: padded row `py` lives in slot `py % 3`, and slots 0 and 1 are repeated as 3 and 4,
/// so the three rows of every window are three consecutive slots (one pointer for the assembly).
const SLOTS: usize = 5;

/// Words after the last slot: an odd last pixel's partner (computed, never stored) reads up to
/// `S − 1` words past a window's widest row. 1,336 bytes of stack for the ring.
const SLACK: usize = 4;

/// Most pixel pairs in an output row ([`covers`]: `out_w <= MAX_ROW − 3`).
const MAX_PAIRS: usize = (MAX_ROW - 2) / 2;

/// True if [`depthwise3x3`] takes this convolution (the caller has checked that it is
/// depthwise: `groups == in_c == out_c`).
pub(super) fn covers<X>(c: &Conv<'_, X>) -> bool {
    let g = c.geometry;
    let ([_, _, channels], [_, out_w, _]) = c.dims;
    g.kernel == [3, 3]
        && g.dilation == [1, 1]
        && (1..=2).contains(&g.stride[1])
        && g.stride[0] >= 1
        && channels % 2 == 0
        && out_w >= 1
        && (out_w - 1) * g.stride[1] + 3 < MAX_ROW
}

/// Channel `ch` and `ch + 1`'s nine taps as lane-pair words `(w[ch], w[ch + 1])` in row-major
/// order, their biases and their output stages; `None` if the weights or the quantization are
/// shorter (the loader rules that out). Both depthwise paths start a channel pair with this.
#[inline(always)]
fn channel_pair<X>(c: &Conv<'_, X>, ch: usize) -> Option<([u32; 9], [i32; 2], [Stage; 2])> {
    let w0 = c.weights.get(ch * 9..ch * 9 + 9)?;
    let w1 = c.weights.get(ch * 9 + 9..ch * 9 + 18)?;
    let (b0, s0) = stage(c.channels, ch)?;
    let (b1, s1) = stage(c.channels, ch + 1)?;
    let mut taps = [0u32; 9];
    for ((slot, a), b) in taps.iter_mut().zip(w0).zip(w1) {
        *slot = simd::pair(i32::from(*a), i32::from(*b));
    }
    Some((taps, [b0, b1], [s0, s1]))
}

/// Copies input row `iy` of channel pair `cp` as lane-pair words into `dst` (`in_w` words) and,
/// if given, into `again` as well (the repeated slot of the ring).
#[inline(always)]
fn fill_row<X: Lanes>(
    c: &Conv<'_, X>,
    words: Option<&[u32]>,
    iy: usize,
    cp: usize,
    dst: &mut [u32],
    again: Option<&mut [u32]>,
) {
    let ([_, in_w, channels], _) = c.dims;
    // int16 channel pairs are aligned words: one load per pixel (`step_by` and an optional
    // second destination per word cost 17 instructions a word on the M4F).
    if let Some(x) = words {
        let half = channels / 2;
        let src = x.get(iy * in_w * half + cp..).unwrap_or_default();
        simd::copy_strided(src, half, dst, again);
        return;
    }
    // Value by value, input pixels `in_stride` apart (a channel slice read in place is wider
    // than `channels`).
    let put = |d: &mut u32, e: Option<&mut u32>, v: u32| {
        *d = v;
        if let Some(e) = e {
            *e = v;
        }
    };
    let mut again = again.map(|a| a.iter_mut());
    let in_stride = c.geometry.in_stride(channels);
    let src = c
        .input
        .get(iy * in_w * in_stride + 2 * cp..)
        .unwrap_or_default();
    for (d, s) in dst.iter_mut().zip(src.chunks(in_stride.max(1))) {
        if let Some([a, b]) = s.first_chunk::<2>() {
            put(
                d,
                again.as_mut().and_then(|a| a.next()),
                simd::pair(a.widen(), b.widen()),
            );
        }
    }
}

/// Three taps of a kernel row on two channels.
#[inline(always)]
fn row3(w: &[u32; 3], x: [u32; 3], acc: [i32; 2]) -> [i32; 2] {
    let acc = simd::smla_lanes(w[0], x[0], acc);
    let acc = simd::smla_lanes(w[1], x[1], acc);
    simd::smla_lanes(w[2], x[2], acc)
}

/// One output row of one channel pair in plain Rust, each pixel pair stored as it is done (the
/// path of cores without the DSP extension, where a row buffer only adds work): `S` is the
/// horizontal stride; `rows` the three padded
/// input rows (each at least `(out_w − 1) · S + 4` words); `out_row` the output row
/// (`[out_w][channels]`).
#[inline(always)]
fn row_pass<const S: usize, Y: Store>(
    rows: [&[u32]; 3],
    w: &[[u32; 3]; 3],
    outs: &Outputs,
    bounds: &super::requant::Bounds,
    out_row: &mut [Y],
    channels: usize,
) {
    let mut px = out_row.chunks_exact_mut(channels.max(1));
    let mut j = 0;
    // Pixels in pairs; an odd last pixel is done below, on its own.
    while let (Some(a), Some(b)) = (px.next(), px.next()) {
        let [Some(r0), Some(r1), Some(r2)] =
            rows.map(|r| r.get(j..).and_then(|r| r.first_chunk::<5>()))
        else {
            return;
        };
        let mut acc_a = outs.bias;
        let mut acc_b = outs.bias;
        for (r, w) in [r0, r1, r2].into_iter().zip(w) {
            acc_a = row3(w, [r[0], r[1], r[2]], acc_a);
            acc_b = row3(w, [r[S], r[S + 1], r[S + 2]], acc_b);
        }
        outs.store(bounds, a, acc_a);
        outs.store(bounds, b, acc_b);
        j += 2 * S;
    }
    // `chunks_exact_mut` yields whole pixels only; an odd count leaves the last pixel here.
    let last = out_row.len() / channels.max(1);
    if last % 2 == 1 {
        let at = (last - 1) * channels;
        let Some(y) = out_row.get_mut(at..at + channels) else {
            return;
        };
        let [Some(r0), Some(r1), Some(r2)] =
            rows.map(|r| r.get(j..).and_then(|r| r.first_chunk::<3>()))
        else {
            return;
        };
        let mut acc = outs.bias;
        for (r, w) in [r0, r1, r2].into_iter().zip(w) {
            acc = row3(w, *r, acc);
        }
        outs.store(bounds, y, acc);
    }
}

/// The depthwise 3x3 convolution `c` (which [`covers`] accepted) into `output`; `words` is the
/// input as int16 lane-pair words, if it is int16 and aligned. With the DSP extension, each row's
/// sums first ([`simd::dw3x3_row`]), then its output stage ([`simd::requant_run`]); without,
/// [`row_pass`].
#[inline(never)]
pub(super) fn depthwise3x3<X: Lanes, Y: Store + 'static>(
    c: &Conv<'_, X>,
    words: Option<&[u32]>,
    output: &mut [Y],
) {
    if cfg!(icefold_dsp) {
        sums_first(c, words, output);
    } else {
        plain(c, words, output);
    }
}

/// [`depthwise3x3`] with the DSP extension: per output row the sums of every pixel pair, then
/// each channel's output stage (on the host, the assembly's portable twins: tested here).
#[inline(always)]
fn sums_first<X: Lanes, Y: Store + 'static>(
    c: &Conv<'_, X>,
    words: Option<&[u32]>,
    output: &mut [Y],
) {
    let g = c.geometry;
    let ([in_h, in_w, channels], [out_h, out_w, _]) = c.dims;
    let width = (out_w - 1) * g.stride[1] + 4;
    let pad_l = g.pad[1];
    let pad_of = |ch: usize| {
        if c.padding.values.is_empty() {
            c.padding.zero.widen()
        } else {
            c.padding.values.get(ch).map_or(0, |v| v.widen())
        }
    };
    let mut ring = [0u32; SLOTS * MAX_ROW + SLACK];
    // Per output row: the sums of pixel pairs, `[a0, a1, b0, b1]` per pair.
    let mut accs = [0i32; 4 * MAX_PAIRS];
    // Per output row: the two channels' int16 results, `[pixel][2]`.
    let mut narrow = [0i16; 2 * 2 * MAX_PAIRS];
    let pairs = out_w.div_ceil(2);
    let row_len = out_w * channels;
    // ReLU on an int16 output with a zero point of 0 (every DS-CNN and MobileNet depthwise
    // layer): the clamp of [`simd::requant_pairs_relu16`].
    let relu16 = c.bounds.min == 0 && c.bounds.max == i32::from(i16::MAX);
    // ... with an output zero point of at most 0 (the fused stage's rounding, simd/depthwise.rs).
    let fused = relu16 && c.bounds.zero_point <= 0;
    for cp in 0..channels / 2 {
        let ch = 2 * cp;
        let Some((taps, bias, stages)) = channel_pair(c, ch) else {
            return;
        };
        let mut k = simd::DwPair::new(taps, bias);
        let pad = simd::pair(pad_of(ch), pad_of(ch + 1));
        let runs = stages.map(|s| s.single().and_then(|s| s.run(&c.bounds)));
        // Which padded row each ring slot holds (none yet).
        // Every slot's padded columns (and whole padded rows) hold the pad values; a row of the
        // input then only writes its `in_w` columns.
        for slot in ring.chunks_exact_mut(MAX_ROW).take(SLOTS) {
            slot.iter_mut().take(width).for_each(|v| *v = pad);
        }
        // Which padded row each ring slot holds (none yet).
        let mut held = [usize::MAX; 3];
        for (oy, out_row) in output
            .chunks_exact_mut(row_len.max(1))
            .take(out_h)
            .enumerate()
        {
            let top = oy * g.stride[0];
            for py in top..top + 3 {
                let slot = py % 3;
                let Some(h) = held.get_mut(slot) else {
                    return;
                };
                if *h == py {
                    continue;
                }
                *h = py;
                // Slots 0 and 1 are repeated as 3 and 4.
                let (first, repeat) = ring.split_at_mut(3 * MAX_ROW);
                let at = slot * MAX_ROW;
                let again = if slot < 2 {
                    repeat.get_mut(at..at + width)
                } else {
                    None
                };
                let Some(dst) = first.get_mut(at..at + width) else {
                    return;
                };
                match coord(py, 1, 0, 1, g.pad[0], in_h) {
                    Some(iy) => {
                        // Input columns past the last window (stride 2) are not copied.
                        let end = (pad_l + in_w).min(width);
                        let inside = pad_l.min(end)..end;
                        let again = again.and_then(|a| a.get_mut(inside.clone()));
                        if let Some(dst) = dst.get_mut(inside) {
                            fill_row(c, words, iy, cp, dst, again);
                        }
                    }
                    None => {
                        dst.fill(pad);
                        if let Some(again) = again {
                            again.fill(pad);
                        }
                    }
                }
            }
            let rows = ring.get(top % 3 * MAX_ROW..).unwrap_or_default();
            if g.stride[1] == 1 {
                simd::dw3x3_row::<1>(rows, &mut k, &mut accs, pairs);
            } else {
                simd::dw3x3_row::<2>(rows, &mut k, &mut accs, pairs);
            }
            // ReLU on an int16 output: both lanes' output stages and the store in one pass.
            if let (true, [Some(r0), Some(r1)]) = (fused, &runs) {
                if let Some(words) = simd::i16_words(out_row) {
                    let words = words.get_mut(cp..).unwrap_or_default();
                    simd::requant_pairs_relu16(&accs, words, out_w, channels / 2, &[*r0, *r1]);
                    continue;
                }
            }
            // Each channel's output stage into `narrow` (`[pixel][2]`), then both channels
            // into the output row.
            for (lane, (stage, run)) in stages.iter().zip(&runs).enumerate() {
                let (Some(sums), Some(dst)) = (accs.get(lane..), narrow.get_mut(lane..)) else {
                    return;
                };
                match run {
                    Some(run) => simd::requant_run(sums, dst, out_w, run),
                    None => narrow_any(sums, dst, out_w, stage, &c.bounds),
                }
            }
            let pixels = out_row.chunks_exact_mut(channels.max(1));
            for (px, v) in pixels.zip(narrow.chunks_exact(2)) {
                if let (Some([y0, y1]), Some(&[v0, v1])) = (
                    px.get_mut(ch..).and_then(|p| p.first_chunk_mut::<2>()),
                    v.first_chunk::<2>(),
                ) {
                    *y0 = Y::from_wide(v0);
                    *y1 = Y::from_wide(v1);
                }
            }
        }
    }
}

/// Widest output row [`by_pixel`] takes with any channel count: on narrow maps the row
/// kernel's per-row and per-channel-pair work (row copies, the two output-stage calls, the
/// store loop) outweighs the outputs it serves.
const BY_PIXEL_MAX_W: usize = 12;

/// Widest output row [`by_pixel`] takes with at least [`BY_PIXEL_WIDE_PAIRS`] channel pairs
/// (MobileNet's 24x24 maps): there a pass serves at least 16 outputs per pixel, and the
/// two-pixel pass beats the row kernel (24x24 g32 760,369 → 539,082 instructions on the M4F);
/// with fewer pairs (MobileNet's 48x48 g8) the per-pass work does not pay (692 K → 865 K).
const BY_PIXEL_WIDE_W: usize = 24;

/// Widest output row [`by_pixel`] takes with fewer than [`BY_PIXEL_WIDE_PAIRS`] channel pairs
/// where the two-pixel pass runs (ReLU on int16, horizontal stride 1 or 2): MobileNet's 48x48
/// g8, whose four pairs fill a ring column of 4 words (copied as one run per input row), and
/// whose pixel pairs are a loop of the pass: 525,848 → 486,629 instructions on the M4F (the
/// row kernel's sums, stored and read again by the output stage, cost more).
const BY_PIXEL_FEW_PAIRS_W: usize = 48;

/// ReLU on an int16 output with an output zero point of at most 0: the clamp `[0, 32767]` as
/// one USAT, and the rounding of the pixel passes (simd/depthwise.rs).
fn relu16<X>(c: &Conv<'_, X>) -> bool {
    relu16_bounds(&c.bounds)
}

/// [`relu16`] of a layer's output bounds.
fn relu16_bounds(bounds: &Bounds) -> bool {
    bounds.min == 0 && bounds.max == i32::from(i16::MAX) && bounds.zero_point <= 0
}

/// Fewest channel pairs with which [`by_pixel`] takes rows up to [`BY_PIXEL_WIDE_W`] pixels.
const BY_PIXEL_WIDE_PAIRS: usize = 8;

/// Most channel pairs [`by_pixel`] prepares at once ([`simd::DwPixelParams`], 3 KiB of
/// stack).
const BY_PIXEL_PAIRS: usize = simd::DW_PIXEL_PAIRS;

/// Words of [`by_pixel`]'s three padded input rows (4.9 KiB of stack): a chunk of channel
/// pairs is one ring column of 4, 8, 16 or 32 words, the widest with `3 · width · column <=
/// BY_PIXEL_RING`. 1,248 = 3 · 26 · 16: MobileNet's 24x24 g32 (26 padded columns, 16 pairs) is
/// one chunk, so each input row is one contiguous copy, as are DS-CNN's 64 channels (7 padded
/// columns, 32 pairs) and MobileNet's 24x24 stride-2 g32 (25 columns).
const BY_PIXEL_RING: usize = 1248;

/// The ring of layers whose chunks fit 768 words (3 KiB) as well as [`BY_PIXEL_RING`].
const BY_PIXEL_RING_SMALL: usize = 768;

/// True if [`by_pixel`] takes this convolution (the caller has checked that it is depthwise
/// and that its output is dense): 3x3, dilation 1, any stride, an even channel count, output
/// rows of at most [`BY_PIXEL_MAX_W`] pixels, or [`BY_PIXEL_WIDE_W`] with at least
/// [`BY_PIXEL_WIDE_PAIRS`] channel pairs (so that three padded rows of at least one pair fit
/// its ring).
pub(super) fn covers_by_pixel<X>(c: &Conv<'_, X>) -> bool {
    covers_by_pixel_of(c.geometry, c.dims, &c.bounds)
}

/// [`covers_by_pixel`] from a layer's record: its window, dims and output bounds.
pub(super) fn covers_by_pixel_of(
    g: &ConvGeometry,
    dims: ([usize; 3], [usize; 3]),
    bounds: &Bounds,
) -> bool {
    let ([_, _, channels], [_, out_w, _]) = dims;
    let two = relu16_bounds(bounds) && (1..=2).contains(&g.stride[1]);
    let widest = if channels / 2 >= BY_PIXEL_WIDE_PAIRS {
        BY_PIXEL_WIDE_W
    } else if two {
        BY_PIXEL_FEW_PAIRS_W
    } else {
        BY_PIXEL_MAX_W
    };
    g.kernel == [3, 3]
        && g.dilation == [1, 1]
        && channels % 2 == 0
        && (1..=widest).contains(&out_w)
        && ((out_w - 1) * g.stride[1] + 3) * 3 <= BY_PIXEL_RING
}

/// A depthwise 3x3 convolution on an int16 input read as lane-pair words (`x`), pixel by pixel
/// with the channel pairs innermost ([`simd::dw3x3_pixel`]), in chunks of channel pairs: the
/// input rows a window reads are copied once per chunk into a ring of three padded rows (the
/// chunk's words of each pixel, the pad values' words in the padded columns and rows), and
/// per channel pair the nine taps and the output stage run from constants prepared once per
/// chunk ([`simd::DwPixelParams`]). No per-row calls and no per-row set-up per channel pair:
/// what narrow maps (DS-CNN's 25x5, MobileNet's 6x6 and 3x3) and layers run in bands of rows
/// (in place, `engine::in_place`) need, where the row kernel repeats its per-channel-pair
/// set-up for every band.
///
/// `false`, with nothing written, if a channel's factor has no [`simd::RunScale`] (the caller
/// then takes the row kernel).
#[inline(never)]
pub(super) fn by_pixel<X: Lanes, Y: Store + 'static>(
    c: &Conv<'_, X>,
    x: &[u32],
    output: &mut [Y],
) -> bool {
    // The small ring where it gives the same ring column as the large one (DS-CNN, MobileNet's
    // 12x12 and smaller maps): their peak stack does not pay for the wide maps' ring.
    let width = (c.dims.1[1].max(1) - 1) * c.geometry.stride[1] + 3;
    let width = ring_width(width, c.geometry.stride[1]);
    let col = [32, 16, 8, 4]
        .into_iter()
        .find(|col| 3 * width * col <= BY_PIXEL_RING);
    if col.is_some_and(|col| 3 * width * col <= BY_PIXEL_RING_SMALL) {
        with_ring::<BY_PIXEL_RING_SMALL, X, Y>(c, x, output)
    } else {
        with_ring::<BY_PIXEL_RING, X, Y>(c, x, output)
    }
}

/// [`by_pixel_with`] with a ring of `RING` words on this frame (one copy of the kernel for both
/// rings: a copy per ring cost 9.4 KB of profiling firmware code).
#[inline(never)]
fn with_ring<const RING: usize, X: Lanes, Y: Store + 'static>(
    c: &Conv<'_, X>,
    x: &[u32],
    output: &mut [Y],
) -> bool {
    let mut ring = [0u32; RING];
    by_pixel_with(c, x, output, &mut PixelSetUp::new(&mut ring))
}

/// Words of the ring a [`PixelSetUp`] for any layer [`by_pixel`] takes needs (the band driver's).
pub const PIXEL_RING: usize = BY_PIXEL_RING;

/// [`by_pixel`]'s constants and ring, kept across the calls of one layer run in bands of rows
/// (in place, `engine::in_place`): the channel pairs' taps, biases and output stages
/// ([`simd::DwPixelParams`]) and pad words are prepared by the first band's call and read by
/// the others, and so are the padded rows in the ring: a band's first rows are the previous
/// band's last (its halo), already in the ring (copying them again cost DS-CNN about 15,000
/// instructions per layer). Only a layer whose channel pairs fit one chunk keeps them (DS-CNN's
/// 64 channels do); a wider one prepares each chunk per call as before.
pub struct PixelSetUp<'r> {
    params: simd::DwPixelParams,
    pads: [u32; BY_PIXEL_PAIRS],
    /// The form of the constants in `params` (`prepare`).
    form: Form,
    /// The padded input rows (three rows of ring columns).
    ring: &'r mut [u32],
    /// The layer whose constants `params` and `pads` and ring rows `held` hold (see
    /// [`LayerKey`]), if any.
    layer: Option<LayerKey>,
    /// Which padded row of the whole layer (not of a band) each ring slot holds, if any: row
    /// `r` in slot `r % 3`.
    held: [usize; 3],
    /// The padded row of the whole layer that is the next call's padded row 0, if the band
    /// driver said ([`Self::at_row`], taken by the call): a call without it copies every row.
    origin: Option<usize>,
}

impl<'r> PixelSetUp<'r> {
    /// Nothing prepared yet, the padded rows in `ring`.
    pub fn new(ring: &'r mut [u32]) -> PixelSetUp<'r> {
        PixelSetUp {
            params: simd::DwPixelParams::EMPTY,
            pads: [0; BY_PIXEL_PAIRS],
            form: Form::General,
            ring,
            layer: None,
            held: [usize::MAX; 3],
            origin: None,
        }
    }

    /// The next call is the band of the layer's output rows from row `first` (at vertical
    /// stride `stride`): its padded rows are the layer's from `first · stride` (a band keeps
    /// the layer's geometry but for the rows it reads and their padding, `format::in_place`).
    /// The rows the ring holds from an earlier band are read from it, not copied again: the
    /// band driver runs bands only where the input rows still to be read are intact. For the
    /// next call only; a call not preceded by this one copies every row it reads.
    pub fn at_row(&mut self, first: usize, stride: usize) {
        self.origin = Some(first.saturating_mul(stride));
    }
}

/// [`by_pixel`] with its constants and ring in `setup`: prepared here unless `setup` holds
/// those of `c`'s layer already (a later band of a layer run in place).
#[inline(never)]
pub(super) fn by_pixel_with<X: Lanes, Y: Store + 'static>(
    c: &Conv<'_, X>,
    x: &[u32],
    output: &mut [Y],
    setup: &mut PixelSetUp<'_>,
) -> bool {
    let g = c.geometry;
    let ([in_h, in_w, channels], [out_h, out_w, _]) = c.dims;
    let half = channels / 2;
    // Padded columns the windows read.
    let width = (out_w - 1) * g.stride[1] + 3;
    // Columns of a ring row: at stride 1 whole column pairs (the transposed ring's; an odd
    // row's last window ends in the first column of a pair).
    let ring_w = ring_width(width, g.stride[1]);
    // Words per ring column: a constant of the two-pixel pass (4, 8, 16 or 32 pairs, the widest
    // whose three rows fit the ring), or where none fits (strides above 2 on wide rows) the
    // pairs that fit, for the one-pixel pass only.
    let col_fit = [32, 16, 8, 4]
        .into_iter()
        .find(|col| 3 * ring_w * col <= setup.ring.len());
    let chunk = col_fit
        .unwrap_or(setup.ring.len() / (3 * ring_w))
        .min(BY_PIXEL_PAIRS);
    // With several chunks, every factor is checked before anything is written (one chunk
    // checks its own as it prepares them).
    if chunk == 0 || (half > chunk && !every_channel_runs(c)) {
        return false;
    }
    // ReLU on an int16 output with a zero point of 0: the pixel loop's clamp as one USAT, and
    // two pixels per pass where the column is a constant of the pass (their rounding needs an
    // output zero point of at most 0 as well: simd/depthwise.rs).
    let relu16 = relu16(c);
    // The relu16 passes take constants in the doubled form (simd/depthwise.rs), where every
    // channel pair of the chunk meets its bounds (`prepare`).
    let pixel = |form: Form, rows: [&[u32]; 3], col, k: &simd::DwPixelParams, out: &mut _| {
        if form == Form::Doubled {
            simd::dw3x3_pixel_relu16(rows, col, k, out);
        } else {
            simd::dw3x3_pixel(rows, col, k, out);
        }
    };
    let two = relu16 && col_fit.is_some() && (1..=2).contains(&g.stride[1]);
    // Stride 1 on an int16 output that starts on a word: the transposed ring, whose passes
    // take two taps per SMLAD.
    let want = if two && g.stride[1] == 1 && simd::i16_words(output).is_some() {
        Form::Transposed
    } else if relu16 {
        Form::Doubled
    } else {
        Form::General
    };
    let key = LayerKey::of(c);
    let PixelSetUp {
        params,
        pads,
        form,
        ring,
        layer,
        held: kept_rows,
        origin,
    } = setup;
    // Where this band lies in the layer, if the driver said: else no row of the ring is kept.
    let origin = origin.take();
    if origin.is_none() {
        *kept_rows = [usize::MAX; 3];
    }
    let origin = origin.unwrap_or(0);
    // One pixel's results as lane pairs.
    let mut narrow = [0u32; BY_PIXEL_PAIRS];
    let mut first = 0;
    while first < half {
        let n = (half - first).min(chunk);
        // The narrowest constant column that holds the chunk.
        let col = match col_fit {
            Some(fit) => [4, 8, 16, 32]
                .into_iter()
                .find(|c| n <= *c)
                .unwrap_or(fit)
                .min(fit),
            None => n,
        };
        let slot_len = ring_w * col;
        // The layer's constants and ring rows from an earlier band when one chunk holds every
        // pair.
        let whole = n == half;
        if !(whole && *layer == Some(key)) {
            *layer = None;
            *kept_rows = [usize::MAX; 3];
            match prepare(c, first, n, params, pads, want) {
                Some(got) => *form = got,
                // Only the first chunk can get here with nothing written yet.
                None => return first > 0,
            }
            if whole {
                *layer = Some(key);
            }
        }
        let k = &*params;
        let form = *form;
        let pads = pads.get(..n).unwrap_or_default();
        // Which padded row each slot holds: of the whole layer, those of earlier bands, where
        // one chunk holds every pair (else none yet, and rows of this call).
        let mut chunk_rows = [usize::MAX; 3];
        let (held, origin) = if whole {
            (&mut *kept_rows, origin)
        } else {
            (&mut chunk_rows, 0)
        };
        for oy in 0..out_h {
            let top = oy * g.stride[0];
            for py in top..top + 3 {
                let row = origin.wrapping_add(py);
                let slot = row % 3;
                let (Some(h), Some(dst)) = (
                    held.get_mut(slot),
                    ring.get_mut(slot * slot_len..(slot + 1) * slot_len),
                ) else {
                    return true;
                };
                if *h == row {
                    continue;
                }
                *h = row;
                let iy = coord(py, 1, 0, 1, g.pad[0], in_h);
                // The input row's columns the windows read, `l..end` in padded columns.
                let (l, end) = (g.pad[1].min(width), (g.pad[1] + in_w).min(width));
                if form == Form::Transposed {
                    let from = iy.map(|iy| iy * in_w * half + first);
                    fill_transposed(dst, x, from, [l, end], half, n, col, pads);
                    continue;
                }
                let Some(iy) = iy else {
                    for px in dst.chunks_exact_mut(col) {
                        if let Some(px) = px.get_mut(..n) {
                            simd::copy_words(px, pads);
                        }
                    }
                    continue;
                };
                let from = iy * in_w * half;
                // Every pair of the pixels, one word per column: one run of words.
                if n == half && col == n {
                    let (Some(src), Some(inside)) = (
                        x.get(from..from + (end - l) * half),
                        dst.get_mut(l * n..end * n),
                    ) else {
                        return true;
                    };
                    simd::copy_words(inside, src);
                } else {
                    // The chunk's words of each pixel.
                    let src = x.get(from + first..).unwrap_or_default();
                    let pixels = src.chunks(half).take(end - l);
                    for (px, s) in dst.chunks_exact_mut(col).skip(l).zip(pixels) {
                        if let (Some(px), Some(s)) = (px.get_mut(..n), s.get(..n)) {
                            simd::copy_words(px, s);
                        }
                    }
                }
                // The padded columns only (a filter over every column cost about 30
                // instructions a column).
                let (left, inside_on) = dst.split_at_mut((l * col).min(dst.len()));
                let right = inside_on.get_mut((end - l) * col..).unwrap_or_default();
                for px in left
                    .chunks_exact_mut(col)
                    .chain(right.chunks_exact_mut(col))
                {
                    if let Some(px) = px.get_mut(..n) {
                        simd::copy_words(px, pads);
                    }
                }
            }
            let slots = [top, top + 1, top + 2].map(|py| origin.wrapping_add(py) % 3 * slot_len);
            let mut ox = 0;
            // Every pixel pair of the row in one call (the clamp [0, 32767] is an int16
            // output's): a call per pair cost about 140 instructions of set-up. An output not
            // on a word boundary (never from the engine's arena) takes the one-pixel pass.
            let pairs = out_w / 2;
            if form == Form::Transposed && pairs > 0 {
                let at = oy * out_w * channels + 2 * first;
                let y = output.get_mut(at..at + (2 * pairs - 1) * channels + 2 * n);
                if let Some(words) = y.and_then(|y| simd::i16_words(y)) {
                    let rows = slots.map(|s| ring.get(s..s + slot_len).unwrap_or_default());
                    pairs_transposed(col, rows, k, words, half, pairs);
                }
            }
            if form == Form::Transposed {
                // An odd row's last pixel: its window starts at column pair `pairs`.
                if out_w % 2 == 1 {
                    let at = (oy * out_w + 2 * pairs) * channels + 2 * first;
                    let y = output.get_mut(at..at + 2 * n);
                    if let Some(words) = y.and_then(|y| simd::i16_words(y)) {
                        let left = pairs * 2 * col;
                        let row = |s: usize| ring.get(s + left..s + slot_len).unwrap_or_default();
                        pixel_transposed(col, slots.map(row), k, words);
                    }
                }
                // `want`: every output word-aligned.
                continue;
            }
            if two && form == Form::Doubled && pairs > 0 {
                let at = oy * out_w * channels + 2 * first;
                let y = output.get_mut(at..at + (2 * pairs - 1) * channels + 2 * n);
                if let Some(words) = y.and_then(|y| simd::i16_words(y)) {
                    let rows = slots.map(|s| ring.get(s..s + slot_len).unwrap_or_default());
                    pixel_pairs(g.stride[1], col, rows, k, words, half, pairs);
                    ox = 2 * pairs;
                }
            }
            while ox < out_w {
                let at = (oy * out_w + ox) * channels + 2 * first;
                let left = ox * g.stride[1] * col;
                let row = |s: usize| ring.get(s + left..s + slot_len).unwrap_or_default();
                let Some(y) = output.get_mut(at..at + 2 * n) else {
                    return true;
                };
                // An int16 output takes the lane pairs as they are.
                if let Some(words) = simd::i16_words(y) {
                    pixel(form, slots.map(row), col, k, words);
                } else {
                    pixel(form, slots.map(row), col, k, &mut narrow);
                    for (y, v) in y.chunks_exact_mut(2).zip(&narrow) {
                        if let [y0, y1] = y {
                            *y0 = Y::from_wide(*v as i16);
                            *y1 = Y::from_wide((*v >> 16) as i16);
                        }
                    }
                }
                ox += 1;
            }
        }
        first += n;
    }
    true
}

/// [`simd::dw3x3_pixel2_relu16`] for `pairs` pixel pairs along a row, horizontal stride `stride`
/// (1, else 2) and ring column `col` (4, 8, 16, else 32 words): pair `p`'s windows start `2p · stride`
/// columns into `rows`, its results at word `2p · half` of `out` (pixel A) and `half` words
/// later (B). One call per output row and chunk (the pass loops over the pairs), one copy of
/// the six passes for every element type and ring.
#[inline(never)]
fn pixel_pairs(
    stride: usize,
    col: usize,
    rows: [&[u32]; 3],
    k: &simd::DwPixelParams,
    out: &mut [u32],
    half: usize,
    pairs: usize,
) {
    type Pass = fn([&[u32]; 3], &simd::DwPixelParams, &mut [u32], usize, usize);
    let pass: Pass = match (stride, col) {
        (1, 4) => simd::dw3x3_pixel2_relu16::<1, 4>,
        (1, 8) => simd::dw3x3_pixel2_relu16::<1, 8>,
        (1, 16) => simd::dw3x3_pixel2_relu16::<1, 16>,
        (1, _) => simd::dw3x3_pixel2_relu16::<1, 32>,
        (_, 4) => simd::dw3x3_pixel2_relu16::<2, 4>,
        (_, 8) => simd::dw3x3_pixel2_relu16::<2, 8>,
        (_, 16) => simd::dw3x3_pixel2_relu16::<2, 16>,
        _ => simd::dw3x3_pixel2_relu16::<2, 32>,
    };
    pass(rows, k, out, half, pairs);
}

/// [`simd::dw3x3_pairs_transposed`] for ring column `col` (4, 8, 16, else 32 words): as
/// [`pixel_pairs`] at stride 1 on the transposed ring.
#[inline(never)]
fn pairs_transposed(
    col: usize,
    rows: [&[u32]; 3],
    k: &simd::DwPixelParams,
    out: &mut [u32],
    half: usize,
    pairs: usize,
) {
    type Pass = fn([&[u32]; 3], &simd::DwPixelParams, &mut [u32], usize, usize);
    let pass: Pass = match col {
        4 => simd::dw3x3_pairs_transposed::<4>,
        8 => simd::dw3x3_pairs_transposed::<8>,
        16 => simd::dw3x3_pairs_transposed::<16>,
        _ => simd::dw3x3_pairs_transposed::<32>,
    };
    pass(rows, k, out, half, pairs);
}

/// [`simd::dw3x3_pixel_transposed`] for ring column `col` (4, 8, 16, else 32 words).
#[inline(never)]
fn pixel_transposed(col: usize, rows: [&[u32]; 3], k: &simd::DwPixelParams, out: &mut [u32]) {
    match col {
        4 => simd::dw3x3_pixel_transposed::<4>(rows, k, out),
        8 => simd::dw3x3_pixel_transposed::<8>(rows, k, out),
        16 => simd::dw3x3_pixel_transposed::<16>(rows, k, out),
        _ => simd::dw3x3_pixel_transposed::<32>(rows, k, out),
    }
}

/// Columns of a ring row of [`by_pixel`] for `width` padded columns: rounded up to whole
/// column pairs at horizontal stride 1 (the transposed ring's).
fn ring_width(width: usize, stride: usize) -> usize {
    if stride == 1 {
        width.next_multiple_of(2)
    } else {
        width
    }
}

/// One padded row of the transposed ring (`dst`, column pairs of `2 · col` words): input row
/// words from `from` in `x` (`None`: a padded row) for padded columns `l..end` (input pixels
/// `half` words apart, `n` channel pairs of each), the pad words `pads` elsewhere
/// ([`simd::copy_transposed`] per column pair).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn fill_transposed(
    dst: &mut [u32],
    x: &[u32],
    from: Option<usize>,
    [l, end]: [usize; 2],
    half: usize,
    n: usize,
    col: usize,
    pads: &[u32],
) {
    // A padded row: the first column pair of pad words made once, then copied to the others
    // (0.5 instructions a word instead of 2.5).
    if from.is_none() {
        let (first, rest) = dst.split_at_mut((2 * col).min(dst.len()));
        simd::copy_transposed(first, pads, pads);
        let first = first.get(..2 * pads.len()).unwrap_or(first);
        for d in rest.chunks_exact_mut((2 * col).max(1)) {
            simd::copy_words(d, first);
        }
        return;
    }
    let column = |c: usize| -> &[u32] {
        match from {
            Some(from) if (l..end).contains(&c) => {
                let at = from + (c - l) * half;
                x.get(at..at + n).unwrap_or_default()
            }
            _ => pads,
        }
    };
    // The column pairs with both columns inside, `inner`, in one call (an even chunk: every
    // layer this ring serves); the others (the padded edges) one by one.
    let inner = match from {
        Some(from) if n % 2 == 0 && l < end => {
            let inner = l.div_ceil(2)..end / 2;
            let src = x.get(from + (2 * inner.start - l) * half..);
            let dst = dst.get_mut(inner.start * 2 * col..);
            if let (Some(src), Some(dst), false) = (src, dst, inner.is_empty()) {
                simd::copy_transposed_columns(dst, src, n, half, col, inner.len());
            }
            inner
        }
        _ => 0..0,
    };
    // Only the column pairs around `inner` (a test of every column pair cost 15 instructions a
    // column pair: 18,000 on MobileNet's 48x48 layer).
    let width = (2 * col).max(1);
    let inner = if inner.is_empty() { 0..0 } else { inner };
    let (left, right) = dst.split_at_mut((width * inner.start).min(dst.len()));
    let right = right.get_mut(width * inner.len()..).unwrap_or_default();
    let left = left.chunks_exact_mut(width).enumerate();
    let right = right.chunks_exact_mut(width).zip(inner.end..);
    for (k, d) in left.chain(right.map(|(d, k)| (k, d))) {
        simd::copy_transposed(d, column(2 * k), column(2 * k + 1));
    }
}

/// A channel's output stage straight from its factor (no `Stage`: only `Scale`s are taken).
#[inline(always)]
pub(super) fn channel_run<X>(c: &Conv<'_, X>, ch: usize) -> Option<simd::RunScale> {
    let requant = crate::quant::Requant {
        multiplier: *c.channels.multiplier.get(ch)?,
        shift: *c.channels.shift.get(ch)?,
    };
    super::requant::Scale::new(requant)?.run(&c.bounds)
}

/// True if every channel's factor has a [`simd::RunScale`] ([`channel_run`] for each), walking
/// the factors' two arrays in step (a lookup per channel cost 25 instructions a channel on the
/// M4F: 27,000 on MobileNetV1).
fn every_channel_runs<X>(c: &Conv<'_, X>) -> bool {
    let channels = c.dims.0[2];
    let q = c.channels;
    let (Some(multiplier), Some(shift)) = (q.multiplier.get(..channels), q.shift.get(..channels))
    else {
        return false;
    };
    multiplier.iter().zip(shift).all(|(&multiplier, &shift)| {
        let requant = crate::quant::Requant { multiplier, shift };
        super::requant::Scale::new(requant).is_some_and(|s| s.run(&c.bounds).is_some())
    })
}

/// Channel `ch`'s pad value, widened.
#[inline(always)]
fn channel_pad<X: Lanes>(c: &Conv<'_, X>, ch: usize) -> i32 {
    if c.padding.values.is_empty() {
        c.padding.zero.widen()
    } else {
        c.padding.values.get(ch).map_or(0, |v| v.widen())
    }
}

/// The form of [`by_pixel`]'s constants (simd/depthwise.rs) and, with it, of its ring and
/// passes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// [`simd::dw3x3_pixel`]'s: any clamp.
    General,
    /// The relu16 passes' ([`simd::DwPixelParams::set_taps_doubled`]).
    Doubled,
    /// The transposed ring's ([`simd::DwPixelParams::set_taps_transposed`]).
    Transposed,
}

/// [`by_pixel`]'s constants of channel pairs `first..first + n` into `params`, their pad words
/// into `pads`: in the form `want` if every pair meets its bounds (the relu16 forms'), else in
/// the general form; the form written, or `None` if an operand is missing (validation
/// bypassed) or a factor has no [`simd::RunScale`].
fn prepare<X: Lanes>(
    c: &Conv<'_, X>,
    first: usize,
    n: usize,
    params: &mut simd::DwPixelParams,
    pads: &mut [u32; BY_PIXEL_PAIRS],
    want: Form,
) -> Option<Form> {
    if want != Form::General && prepare_form(c, first, n, params, pads, want) {
        return Some(want);
    }
    prepare_form(c, first, n, params, pads, Form::General).then_some(Form::General)
}

/// [`prepare`] in one form: `false` where an operand is missing, a factor has no
/// [`simd::RunScale`] or (the relu16 forms) a pair does not meet their bounds.
///
/// The chunk's weights, biases, factors and pad values are sliced once and walked in step (a
/// lookup per channel with its bounds checks, and each factor's output stage spilled around
/// them, cost about 255 instructions per channel pair on the M4F: 0.16 M of MobileNetV1).
#[inline(always)]
fn prepare_form<X: Lanes>(
    c: &Conv<'_, X>,
    first: usize,
    n: usize,
    params: &mut simd::DwPixelParams,
    pads: &mut [u32; BY_PIXEL_PAIRS],
    form: Form,
) -> bool {
    params.reset_pairs(n);
    let chs = 2 * first..2 * (first + n);
    let q = c.channels;
    let (Some(weights), Some(bias), Some(multiplier), Some(shift), Some(pads)) = (
        c.weights.get(9 * chs.start..9 * chs.end),
        q.bias.get(chs.clone()),
        q.multiplier.get(chs.clone()),
        q.shift.get(chs.clone()),
        pads.get_mut(..n),
    ) else {
        return false;
    };
    let run = |multiplier: i32, shift: i32| {
        super::requant::Scale::new(crate::quant::Requant { multiplier, shift })?.run(&c.bounds)
    };
    let pairs = weights
        .chunks_exact(18)
        .zip(bias.chunks_exact(2))
        .zip(multiplier.chunks_exact(2).zip(shift.chunks_exact(2)));
    for (j, ((w, b), (m, s))) in pairs.enumerate() {
        let (Some((w0, w1)), Some(&[b0, b1]), Some(&[m0, m1]), Some(&[s0, s1])) = (
            w.split_first_chunk::<9>()
                .and_then(|(w0, w1)| Some((w0, w1.first_chunk::<9>()?))),
            b.first_chunk::<2>(),
            m.first_chunk::<2>(),
            s.first_chunk::<2>(),
        ) else {
            return false;
        };
        let (Some(r0), Some(r1)) = (run(m0, s0), run(m1, s1)) else {
            return false;
        };
        let set = match form {
            Form::General => {
                params.set_taps(j, [w0, w1], [b0, b1], [r0, r1]);
                true
            }
            Form::Doubled => params.set_taps_doubled(j, [w0, w1], [b0, b1], [r0, r1]),
            Form::Transposed => params.set_taps_transposed(j, [w0, w1], [b0, b1], [r0, r1]),
        };
        if !set {
            return false;
        }
    }
    // Every channel's pad value is the input zero point unless the layer has its own.
    if c.padding.values.is_empty() {
        let zero = c.padding.zero.widen();
        pads.fill(simd::pair(zero, zero));
    } else {
        for (j, p) in pads.iter_mut().enumerate() {
            let ch = chs.start + 2 * j;
            *p = simd::pair(channel_pad(c, ch), channel_pad(c, ch + 1));
        }
    }
    true
}

/// [`simd::requant_run`] for a factor it does not take: every second value of `sums` through
/// `stage` and `bounds` into every second value of `dst`, `n` of them (out of line: the row loop
/// keeps its registers).
#[inline(never)]
pub(super) fn narrow_any(sums: &[i32], dst: &mut [i16], n: usize, stage: &Stage, bounds: &Bounds) {
    let sums = sums.iter().step_by(2).take(n);
    for (y, acc) in dst.iter_mut().step_by(2).zip(sums) {
        *y = bounds.apply(stage.scale(*acc)) as i16;
    }
}

/// Copies input row `iy` of channel pair `cp` into `dst` as lane-pair words, the columns
/// outside the input (`pad_l` on the left, the rest on the right) set to `pad`.
#[inline(always)]
fn fill_row_plain<X: Lanes>(
    c: &Conv<'_, X>,
    words: Option<&[u32]>,
    iy: Option<usize>,
    cp: usize,
    pad: u32,
    dst: &mut [u32],
) {
    let ([_, in_w, channels], _) = c.dims;
    let Some(iy) = iy else {
        dst.fill(pad);
        return;
    };
    let pad_l = c.geometry.pad[1];
    dst.iter_mut().take(pad_l).for_each(|d| *d = pad);
    dst.iter_mut().skip(pad_l + in_w).for_each(|d| *d = pad);
    let inside = dst.iter_mut().skip(pad_l).take(in_w);
    match words {
        // int16 channel pairs are aligned words: one load per pixel.
        Some(x) => {
            let half = channels / 2;
            let src = x.get(iy * in_w * half + cp..).unwrap_or_default();
            for (d, s) in inside.zip(src.iter().step_by(half.max(1))) {
                *d = *s;
            }
        }
        // Value by value, input pixels `in_stride` apart (as in `fill_row`).
        None => {
            let in_stride = c.geometry.in_stride(channels);
            let src = c
                .input
                .get(iy * in_w * in_stride + 2 * cp..)
                .unwrap_or_default();
            for (d, s) in inside.zip(src.chunks(in_stride.max(1))) {
                if let Some([a, b]) = s.first_chunk::<2>() {
                    *d = simd::pair(a.widen(), b.widen());
                }
            }
        }
    }
}

/// [`depthwise3x3`] on cores without the DSP extension: a ring of three rows and [`row_pass`]
/// (the row buffers of the assembly's structure only add work where every multiply is plain
/// Rust).
#[inline(always)]
fn plain<X: Lanes, Y: Store>(c: &Conv<'_, X>, words: Option<&[u32]>, output: &mut [Y]) {
    let g = c.geometry;
    let ([in_h, _, channels], [out_h, out_w, _]) = c.dims;
    let width = (out_w - 1) * g.stride[1] + 4;
    let pad_of = |ch: usize| {
        if c.padding.values.is_empty() {
            c.padding.zero.widen()
        } else {
            c.padding.values.get(ch).map_or(0, |v| v.widen())
        }
    };
    let mut ring = [[0u32; MAX_ROW]; 3];
    let row_len = out_w * channels;
    for cp in 0..channels / 2 {
        let ch = 2 * cp;
        let Some((taps, bias, stages)) = channel_pair(c, ch) else {
            return;
        };
        // The taps by kernel row.
        let w: [[u32; 3]; 3] = bytemuck::cast(taps);
        let pad = simd::pair(pad_of(ch), pad_of(ch + 1));
        let outs = Outputs {
            bias,
            stage: stages,
            o: ch,
            pair: true,
        };
        // Which padded row each ring slot holds (none yet).
        let mut held = [usize::MAX; 3];
        for (oy, out_row) in output
            .chunks_exact_mut(row_len.max(1))
            .take(out_h)
            .enumerate()
        {
            let top = oy * g.stride[0];
            for py in top..top + 3 {
                let slot = py % 3;
                if held.get(slot) != Some(&py) {
                    let iy = coord(py, 1, 0, 1, g.pad[0], in_h);
                    if let (Some(dst), Some(h)) = (ring.get_mut(slot), held.get_mut(slot)) {
                        fill_row_plain(
                            c,
                            words,
                            iy,
                            cp,
                            pad,
                            dst.get_mut(..width).unwrap_or_default(),
                        );
                        *h = py;
                    }
                }
            }
            let rows = [top, top + 1, top + 2].map(|py| {
                ring.get(py % 3)
                    .map_or(&[][..], |r| r.get(..width).unwrap_or_default())
            });
            if g.stride[1] == 1 {
                row_pass::<1, Y>(rows, &w, &outs, &c.bounds, out_row, channels);
            } else {
                row_pass::<2, Y>(rows, &w, &outs, &c.bounds, out_row, channels);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::fast::conv::Padding;
    use crate::kernels::fast::requant::Bounds;
    use crate::kernels::reference::int8::conv::{self as reference, WideConvQuant};
    use crate::kernels::reference::int8::testing::Gen;
    use crate::kernels::reference::int8::{ChannelQuant, ClampI16, WideOutputQuant};
    use crate::kernels::ConvGeometry;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// A depthwise 3x3 case: horizontal stride 1 or 2, vertical 1 to 3, pads 0 to 2, widths up
    /// to the row buffer, even channel counts (the kernel's pairs) and odd ones (the fallback).
    #[derive(Debug, Clone)]
    struct Case {
        g: ConvGeometry,
        in_dims: [usize; 3],
        out_dims: [usize; 3],
        with_pad_values: bool,
        relu: bool,
        big_bias: bool,
        /// Every factor one [`simd::requant_run`] takes (else random, often some that it does
        /// not).
        runs: bool,
        /// Where the int16 input starts in its buffer (1: not word-aligned).
        offset: usize,
        /// Output zero point 0: with `relu`, the clamp `[0, 32767]` of the two-pixel pass.
        zero_out: bool,
        seed: u64,
    }

    prop_compose! {
        fn case()(channels in prop_oneof![1usize..=11, 12usize..=80], sh in 1usize..=3, sw in 1usize..=2,
                  pad in proptest::array::uniform4(0usize..=2), h in 1usize..=7, w in 1usize..=40,
                  with_pad_values in any::<bool>(), relu in any::<bool>(),
                  big_bias in any::<bool>(), runs in any::<bool>(), offset in 0usize..=1,
                  zero_out in any::<bool>(), seed in any::<u64>())
            -> Option<Case>
        {
            let g = ConvGeometry { out_pixel_stride: 0, kernel: [3, 3], stride: [sh, sw], dilation: [1, 1], pad, groups: channels, in_pixel_stride: 0 };
            let oh = (h + pad[0] + pad[2]).checked_sub(3)? / sh + 1;
            let ow = (w + pad[1] + pad[3]).checked_sub(3)? / sw + 1;
            Some(Case { g, in_dims: [h, w, channels], out_dims: [oh, ow, channels],
                        with_pad_values, relu, big_bias, runs, offset, zero_out, seed })
        }
    }

    /// Runs the fast and the reference kernel on `c` with input element `X` and output `Y`.
    fn check<X, Y>(c: &Case, value: fn(&mut Gen) -> X) -> Result<(), TestCaseError>
    where
        X: Lanes + core::fmt::Debug + PartialEq,
        Y: Store + Default + core::fmt::Debug + PartialEq + 'static,
    {
        let mut gen = Gen(c.seed);
        let [h, w, ch] = c.in_dims;
        let n_out = c.out_dims.iter().product();
        let buffer: Vec<X> = (0..h * w * ch + c.offset)
            .map(|_| value(&mut gen))
            .collect();
        let x = &buffer[c.offset..];
        let weights = gen.i8s(9 * ch);
        let pad_values: Vec<X> = if c.with_pad_values {
            (0..ch).map(|_| value(&mut gen)).collect()
        } else {
            Vec::new()
        };
        // Biases up to the accumulator contract's limit for nine int16 products half of the time.
        let bits = if c.big_bias { 30 } else { 20 };
        let bias: Vec<i32> = (0..ch)
            .map(|_| gen.range(-(1 << bits) + (1 << 26), (1 << bits) - (1 << 26)))
            .collect();
        let requant: Vec<_> = (0..ch)
            .map(|_| {
                if c.runs {
                    // Every channel's factor has a `RunScale` (`by_pixel` takes the layer).
                    crate::quant::Requant {
                        multiplier: gen.range(1 << 30, i32::MAX),
                        shift: gen.range(-15, -2),
                    }
                } else if gen.next() % 2 == 0 {
                    crate::quant::Requant {
                        multiplier: gen.range(1 << 30, i32::MAX),
                        shift: gen.range(-3, 1),
                    }
                } else {
                    gen.requant()
                }
            })
            .collect();
        let multiplier: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
        let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
        let zp_out = if c.zero_out { 0 } else { gen.i16() };
        let clamp = if c.relu {
            ClampI16 {
                min: zp_out,
                max: i16::MAX,
            }
        } else {
            ClampI16::FULL
        };
        let zp_in = value(&mut gen);
        let quant = WideConvQuant {
            input_zero_point: zp_in,
            pad_values: &pad_values,
            channels: ChannelQuant {
                bias: &bias,
                multiplier: &multiplier,
                shift: &shift,
            },
            output: WideOutputQuant {
                zero_point: zp_out,
                clamp,
            },
        };
        let conv = Conv {
            geometry: &c.g,
            dims: (c.in_dims, c.out_dims),
            padding: Padding {
                zero: zp_in,
                values: &pad_values,
            },
            channels: &quant.channels,
            bounds: Bounds::from(quant.output),
            input: x,
            weights: &weights,
        };
        let mut want = std::vec![Y::default(); n_out];
        reference::conv2d_wide(&c.g, &quant, c.in_dims, x, c.out_dims, &mut want, &weights);
        // The kernel itself where it applies (the dispatch below may pick it or a fallback).
        let fits = (c.out_dims[1] - 1) * c.g.stride[1] + 4 <= MAX_ROW;
        prop_assert_eq!(covers(&conv), ch % 2 == 0 && fits);
        if covers(&conv) {
            // Both row passes: sums first (the assembly's portable twins) and plain Rust.
            let mut fast = std::vec![Y::default(); n_out];
            sums_first(&conv, X::words(x), &mut fast);
            prop_assert_eq!(&fast, &want, "sums first");
            let mut fast = std::vec![Y::default(); n_out];
            plain(&conv, X::words(x), &mut fast);
            prop_assert_eq!(&fast, &want, "plain");
        }
        // Pixel by pixel (narrow maps on DSP cores), for any width it is given.
        if let (true, Some(words)) = (ch % 2 == 0, X::words(x)) {
            let mut fast = std::vec![Y::default(); n_out];
            let taken = by_pixel(&conv, words, &mut fast);
            prop_assert!(taken || !c.runs, "by pixel refused runnable factors");
            if taken {
                prop_assert_eq!(&fast, &want, "by pixel");
            }
        }
        let mut fast = std::vec![Y::default(); n_out];
        crate::kernels::fast::conv::conv2d_wide(
            &c.g, &quant, c.in_dims, x, c.out_dims, &mut fast, &weights,
        );
        prop_assert_eq!(fast, want);
        Ok(())
    }

    /// The network shapes of the transposed ring (stride 1, ReLU on int16, output zero point 0,
    /// factors `by_pixel` takes) by name: MobileNet's even rows (6x6 g128: two chunks; 12x12
    /// g8; 48x48-like g8 rows), DS-CNN's odd ones (25x5 g64) and a 3x3 g256 map, every seed
    /// a new draw of the values.
    #[test]
    fn transposed_ring_on_network_shapes() {
        for (seed, [h, w, ch]) in [
            [6, 6, 128],
            [12, 12, 8],
            [4, 48, 8],
            [25, 5, 64],
            [3, 3, 256],
        ]
        .into_iter()
        .enumerate()
        {
            let g = ConvGeometry {
                out_pixel_stride: 0,
                kernel: [3, 3],
                stride: [1, 1],
                dilation: [1, 1],
                pad: [1; 4],
                groups: ch,
                in_pixel_stride: 0,
            };
            let c = Case {
                g,
                in_dims: [h, w, ch],
                out_dims: [h, w, ch],
                with_pad_values: seed % 2 == 0,
                relu: true,
                big_bias: seed % 2 == 1,
                runs: true,
                offset: 0,
                zero_out: true,
                seed: seed as u64 * 7919 + 1,
            };
            check::<i16, i16>(&c, Gen::i16).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        #[test]
        fn equals_reference(c in case(), kinds in 0u8..3) {
            let Some(c) = c else { return Ok(()) };
            match kinds {
                0 => check::<i8, i16>(&c, Gen::i8)?,
                1 => check::<i16, i16>(&c, Gen::i16)?,
                _ => check::<i16, i8>(&c, Gen::i16)?,
            }
        }
    }
}
