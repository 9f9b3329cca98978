//! Fast int8 dense layers: the same results as
//! [`reference::int8::dense`](crate::kernels::reference::int8::dense), byte for byte.
//!
//! On x86_64 hosts with AVX2, [`crate::kernels::x86::int8::dense`] takes the layer first (eight
//! rows per block, `vpmaddwd`); the paths below are the fallback everywhere else.
//!
//! On DSP cores ([`rows_widened`]) the int8 input is widened once per layer call into int16
//! lane pairs on the stack (an input of several positions, a global pooling folded into the
//! layer, is summed over its positions into those pairs first, so only one position's
//! products are computed), then three weight rows at a time run through
//! [`simd::sxtb16_3x1_blocks`] (each activation load shared by three rows, each weight word
//! widened in registers, the block loop in assembly), then the reference's output stage, one
//! pass per 24 rows. Elsewhere, and for shapes that path does not take ([`rows_paired`]),
//! output features in pairs, each run of four inputs loaded and widened once for two weight
//! rows ([`conv::dot`](super::conv)).

use super::conv::{dot, stage};
use super::requant::{Bounds, Stage};
use super::simd;
use super::{Outs, Store};
use crate::kernels::reference::int8::dense as reference;
use crate::kernels::reference::int8::{ChannelQuant, FromWide, OutputQuant, WideOutputQuant};
use crate::quant::Requant;

/// [`reference::int8::dense::dense`](crate::kernels::reference::int8::dense::dense).
pub fn dense(
    channels: &ChannelQuant,
    out_quant: &OutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    if cfg!(icefold_reference_only) {
        return reference::dense(channels, out_quant, weights, input, output);
    }
    let bounds = Bounds::from(*out_quant);
    rows(channels, &bounds, weights, input, output);
}

/// [`reference::int8::dense::dense_wide`](crate::kernels::reference::int8::dense::dense_wide).
pub fn dense_wide(
    channels: &ChannelQuant,
    out_quant: &WideOutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i16],
) {
    if cfg!(icefold_reference_only) {
        return reference::dense_wide(channels, out_quant, weights, input, output);
    }
    let bounds = Bounds::from(*out_quant);
    rows(channels, &bounds, weights, input, output);
}

/// [`reference::int8::dense::dense_quads`](crate::kernels::reference::int8::dense::dense_quads):
/// weights the host tool stored as int16 in blocks of four rows
/// ([`DenseLayout::QuadsI16`](crate::format::DenseLayout)).
pub fn dense_quads(
    channels: &ChannelQuant,
    out_quant: &OutputQuant,
    weights: &[i16],
    input: &[i8],
    output: &mut [i8],
) {
    let bounds = Bounds::from(*out_quant);
    if cfg!(icefold_reference_only) || !quads(channels, &bounds, weights, input, output) {
        crate::kernels::reference::int8::dense::dense_quads(
            channels, out_quant, weights, input, output,
        );
    }
}

/// [`reference::int8::dense::dense_wide_quads`](crate::kernels::reference::int8::dense::dense_wide_quads).
pub fn dense_wide_quads(
    channels: &ChannelQuant,
    out_quant: &WideOutputQuant,
    weights: &[i16],
    input: &[i8],
    output: &mut [i16],
) {
    let bounds = Bounds::from(*out_quant);
    if cfg!(icefold_reference_only) || !quads(channels, &bounds, weights, input, output) {
        crate::kernels::reference::int8::dense::dense_wide_quads(
            channels, out_quant, weights, input, output,
        );
    }
}

/// [`reference::int8::dense::dense_pairs`](crate::kernels::reference::int8::dense::dense_pairs):
/// weights the host tool stored in row pairs ([`DenseLayout::PairsI8`](crate::format::DenseLayout)).
pub fn dense_pairs(
    channels: &ChannelQuant,
    out_quant: &OutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    if cfg!(icefold_reference_only) {
        return reference::dense_pairs(channels, out_quant, weights, input, output);
    }
    pairs(channels, &Bounds::from(*out_quant), weights, input, output);
}

/// [`reference::int8::dense::dense_wide_pairs`](crate::kernels::reference::int8::dense::dense_wide_pairs).
pub fn dense_wide_pairs(
    channels: &ChannelQuant,
    out_quant: &WideOutputQuant,
    weights: &[i8],
    input: &[i8],
    output: &mut [i16],
) {
    if cfg!(icefold_reference_only) {
        return reference::dense_wide_pairs(channels, out_quant, weights, input, output);
    }
    pairs(channels, &Bounds::from(*out_quant), weights, input, output);
}

/// A dense layer on weights in row pairs: the x86_64 AVX2 kernel where it takes the layer, on
/// DSP cores [`rows_pairs`] (the input widened on the stack, [`with_input_buffer`]), else and
/// for shapes those do not take [`rows_pairs_portable`].
#[inline(never)]
fn pairs<Y: Store>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i8],
    input: &[i8],
    output: &mut [Y],
) {
    if x86(channels, bounds, (weights, true), input, output) {
        return;
    }
    let n_in = weights.len().checked_div(output.len()).unwrap_or(0);
    if !(WIDEN
        && with_input_buffer(n_in, |buf| {
            rows_pairs(channels, bounds, weights, input, output, buf)
        }))
    {
        rows_pairs_portable(channels, bounds, weights, input, Y::outs(output));
    }
}

/// Row `o` of a pair (`o` even, `o + 1` the pair's second row) from the pair's sums
/// ([`simd::pair_sums`]): `a = 256 · s1 + s0` wrapping, `b = s0`, so `s1 = (a − b) >> 8`,
/// exact because the loader bounds `|s1| < 2^23` ([`crate::format::PAIR_SUM_LIMIT`]).
#[inline(always)]
fn split_pair(a: i32, b: i32) -> [i32; 2] {
    [b, a.wrapping_sub(b) >> 8]
}

/// `output[o] = finish(bias'[o] + Σ_p Σ_i w[o][i] · input_p[i])` on weights in row pairs
/// ([`crate::format::pair_index`]): the input widened once into `buf` in natural lane order
/// (or summed over its positions first), the pairs' sums by [`simd::pair_sums`] (each weight
/// word read as stored by one SMLAD and widened by one SXTB16 for another: three instructions
/// per four products where int8 rows take four), split into the rows ([`split_pair`]), a last
/// odd row in Rust, then the rows' output stage, [`STAGE_ROWS`] rows at a time.
///
/// `false` (nothing written) unless `n_in` is a nonzero multiple of 8, the weights are
/// word-aligned, at most [`MAX_POOLED`] positions and `buf` holds `n_in / 2` words.
#[inline(never)]
fn rows_pairs<Y: Store>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i8],
    input: &[i8],
    output: &mut [Y],
    buf: &mut [u32],
) -> bool {
    let n_out = output.len();
    let n_in = weights.len().checked_div(n_out).unwrap_or(0);
    let Ok(words) = bytemuck::try_cast_slice::<i8, u32>(weights) else {
        return false;
    };
    let positions = input.len().checked_div(n_in).unwrap_or(0);
    let x_len = n_in / 2;
    if n_in == 0
        || n_in % 8 != 0
        || positions == 0
        || positions > MAX_POOLED
        || buf.len() < x_len
        || channels.bias.len() < n_out
    {
        return false;
    }
    let x = &mut buf[..x_len];
    widen_input(input, n_in, 0, x);
    // SXTB16 order (x0, x2), (x1, x3) to natural order (x0, x1), (x2, x3).
    for pair in x.chunks_exact_mut(2) {
        if let Some([even, odd]) = pair.first_chunk_mut::<2>() {
            (*even, *odd) = (simd::pack_lo(*even, *odd), simd::pack_hi(*even, *odd));
        }
    }
    let x: &[u32] = x;
    let mut sums = [0i32; STAGE_ROWS];
    let rows_stage = RowsStage::new(bounds);
    for (chunk, out) in output.chunks_mut(STAGE_ROWS).enumerate() {
        let first = chunk * STAGE_ROWS;
        let range = first..first + out.len();
        let (Some(bias), Some(multiplier), Some(shift)) = (
            channels.bias.get(range.clone()),
            channels.multiplier.get(range.clone()),
            channels.shift.get(range),
        ) else {
            return true;
        };
        let sums = &mut sums[..out.len()];
        // STAGE_ROWS is even: a chunk's pairs are whole pairs of the layer.
        let w = words.get(first / 2 * x_len..).unwrap_or_default();
        let paired = 2 * simd::pair_sums(w, x, sums);
        for (s, b) in sums[..paired].chunks_exact_mut(2).zip(bias.chunks_exact(2)) {
            let [s0, s1] = split_pair(s[0], s[1]);
            s[0] = b[0].wrapping_add(s0);
            s[1] = b[1].wrapping_add(s1);
        }
        // A last odd row (stored as in `RowsI8`).
        for (k, s) in sums.iter_mut().enumerate().skip(paired) {
            let o = first + k;
            let row = weights.get(o * n_in..(o + 1) * n_in).unwrap_or_default();
            *s = input.chunks_exact(n_in).fold(bias[k], |acc, x_p| {
                row.iter().zip(x_p).fold(acc, |acc, (&w, &x)| {
                    acc.wrapping_add(i32::from(w) * i32::from(x))
                })
            });
        }
        rows_stage.store(sums, multiplier, shift, out);
    }
    true
}

/// [`rows_pairs`] without SIMD (M0, M3, hosts without AVX2, shapes it does not take): per pair
/// and position [`simd::pair_dot`] (each word's lanes `256 · w1 + w0` and their low bytes `w0`
/// times the inputs), then [`split_pair`]; a last odd row as `RowsI8`.
#[inline(never)]
fn rows_pairs_portable(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i8],
    input: &[i8],
    mut output: Outs,
) {
    let n_out = output.len();
    let n_in = weights.len().checked_div(n_out).unwrap_or(0);
    if n_in == 0 {
        return;
    }
    let finish = |stage: &Stage, acc: i32| bounds.apply(stage.scale(acc)) as i16;
    for o in (0..n_out).step_by(2) {
        let Some((b0, s0)) = stage(channels, o) else {
            return;
        };
        if o + 1 < n_out {
            let (Some(bytes), Some((b1, s1))) = (
                weights.get(o * n_in..(o + 2) * n_in),
                stage(channels, o + 1),
            ) else {
                return;
            };
            let (a, b) = input
                .chunks_exact(n_in)
                .fold((0i32, 0i32), |acc, x_p| simd::pair_dot(bytes, x_p, acc));
            let [r0, r1] = split_pair(a, b);
            output.set(o, finish(&s0, b0.wrapping_add(r0)));
            output.set(o + 1, finish(&s1, b1.wrapping_add(r1)));
        } else {
            let row = weights.get(o * n_in..(o + 1) * n_in).unwrap_or_default();
            let acc = input.chunks_exact(n_in).fold(b0, |acc, x_p| {
                row.iter().zip(x_p).fold(acc, |acc, (&w, &x)| {
                    acc.wrapping_add(i32::from(w) * i32::from(x))
                })
            });
            output.set(o, finish(&s0, acc));
        }
    }
}

/// [`rows_quads`] with a stack buffer sized for the input ([`with_input_buffer`]): `false`
/// (nothing written) for shapes it does not take (more than 1024 inputs or [`MAX_POOLED`]
/// positions, weights not word-aligned), which the reference computes.
#[inline(never)]
fn quads<Y: Store>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i16],
    input: &[i8],
    output: &mut [Y],
) -> bool {
    let n_in = weights.len().checked_div(output.len()).unwrap_or(0);
    with_input_buffer(n_in, |buf| {
        rows_quads(channels, bounds, weights, input, output, buf)
    })
}

/// Runs `kernel` with a zeroed stack buffer for one position of `n_in` widened input values
/// (two per word): the small one for at most 256 values, so a small layer's call costs only
/// that, the large one in a frame of its own ([`large_input_buffer`]); `false` (`kernel` not
/// run) for more than 1024 values.
#[inline(always)]
fn with_input_buffer(n_in: usize, kernel: impl FnOnce(&mut [u32]) -> bool) -> bool {
    if n_in <= 2 * SMALL_WORDS {
        kernel(&mut [0; SMALL_WORDS])
    } else if n_in <= 2 * LARGE_WORDS {
        large_input_buffer(kernel)
    } else {
        false
    }
}

/// [`with_input_buffer`] for more than 256 input values.
#[inline(never)]
fn large_input_buffer(kernel: impl FnOnce(&mut [u32]) -> bool) -> bool {
    kernel(&mut [0; LARGE_WORDS])
}

/// `output[o] = finish(bias'[o] + Σ_p Σ_i w[o][i] · input_p[i])` on int16 weights in blocks of
/// four rows ([`crate::format::quad_index`]): the input widened once into `buf` (or summed over
/// its positions, as [`rows_widened`] does), then per block of four rows
/// [`simd::smlad_4x1_quads`] (each weight word read as stored, each activation word shared by
/// four rows) and the block's output stage; a last block of one to three rows in Rust.
///
/// `false` (nothing written) unless `n_in` is a nonzero multiple of 4, the weights are
/// word-aligned, at most [`MAX_POOLED`] positions and `buf` holds `n_in / 2` words.
#[inline(never)]
fn rows_quads<Y: Store>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i16],
    input: &[i8],
    output: &mut [Y],
    buf: &mut [u32],
) -> bool {
    let n_out = output.len();
    let n_in = weights.len().checked_div(n_out).unwrap_or(0);
    let Ok(words) = bytemuck::try_cast_slice::<i16, u32>(weights) else {
        return false;
    };
    let positions = input.len().checked_div(n_in).unwrap_or(0);
    let x_len = n_in / 2;
    if n_in == 0
        || n_in % 4 != 0
        || positions == 0
        || positions > MAX_POOLED
        || buf.len() < x_len
        || words.len() != n_out * x_len
    {
        return false;
    }
    let x = &mut buf[..x_len];
    widen_input(input, n_in, 0, x);
    let x: &[u32] = x;
    let rows = crate::format::QUAD_ROWS;
    // The sums of up to `STAGE_ROWS` rows (whole blocks), then their output stage in one short
    // loop with few live values (the block loop's assembly takes eleven registers).
    let mut sums = [0i32; STAGE_ROWS];
    let rows_stage = RowsStage::new(bounds);
    for (chunk, out) in output.chunks_mut(STAGE_ROWS).enumerate() {
        let first = chunk * STAGE_ROWS;
        let range = first..first + out.len();
        let (Some(bias), Some(multiplier), Some(shift), Some(w)) = (
            channels.bias.get(range.clone()),
            channels.multiplier.get(range.clone()),
            channels.shift.get(range),
            words.get(first * x_len..),
        ) else {
            return true;
        };
        let sums = &mut sums[..out.len()];
        // Whole blocks in one call where the input's words come in fours, then any block
        // left (a last one of fewer rows, or every block otherwise) one at a time.
        let done = simd::smlad_4x1_quad_blocks(w, x, bias, sums);
        let (left, bias_left, w_left) = (
            sums.get_mut(done..).unwrap_or_default(),
            bias.get(done..).unwrap_or_default(),
            w.get(done * x_len..).unwrap_or_default(),
        );
        for ((sums, bias), w) in left
            .chunks_mut(rows)
            .zip(bias_left.chunks(rows))
            .zip(w_left.chunks((rows * x_len).max(1)))
        {
            if let (Some(s4), Some(&[b0, b1, b2, b3])) =
                (sums.first_chunk_mut::<4>(), bias.first_chunk::<4>())
            {
                *s4 = simd::smlad_4x1_quads(w, x, [b0, b1, b2, b3]);
            } else {
                // The last block's `r < 4` rows: per activation word `r` weight words.
                sums.copy_from_slice(bias);
                for (ws, &xw) in w.chunks_exact(sums.len().max(1)).zip(x) {
                    for (s, &wk) in sums.iter_mut().zip(ws) {
                        *s = simd::smlad(wk, xw, *s);
                    }
                }
            }
        }
        rows_stage.store(sums, multiplier, shift, out);
    }
    true
}

/// The input of a dense layer call (whole positions of `n_in` values, `n_in > 0`) from value
/// `head` of each position, widened into `x` in SXTB16 lane order ([`simd::widen_pairs`]), or,
/// for several positions (a global pooling folded into the layer), summed over them first
/// ([`simd::pool_pairs`]: `Σ_p Σ_i w_i · x_p,i = Σ_i w_i · Σ_p x_p,i`, exact while the sums fit
/// int16), so that one position's products are computed.
#[inline(always)]
fn widen_input(input: &[i8], n_in: usize, head: usize, x: &mut [u32]) {
    if input.len() == n_in {
        simd::widen_pairs(input.get(head..).unwrap_or_default(), x);
    } else {
        x.fill(0);
        for x_p in input.chunks_exact(n_in.max(1)) {
            simd::pool_pairs(x_p.get(head..).unwrap_or_default(), x);
        }
    }
}

/// The output stage of a dense layer's rows, each with its own factor: `Y::from_wide` of
/// `bounds.apply(requant.apply(sum))`, with the per-layer part prepared once.
///
/// A row whose factor has a positive multiplier and a right shift `r` of 2 to 31 with
/// `|zero_point| · 2^(r−1) <= 2^29`, in a layer whose upper clamp is the output type's maximum,
/// takes [`simd::stage_rows_i8`] / [`simd::stage_rows_i16`]: [`RunScale`](simd::RunScale)'s
/// arithmetic (the form [`Scale::run`](super::requant::Scale::run) proves equal to the factor and the bounds), its
/// constants built from the row's multiplier and shift in three instructions. Any other row
/// takes `Requant::apply` and the bounds (rare: no row of the MLPerf Tiny autoencoder does,
/// and the reference function keeps the firmware small).
#[derive(Clone, Copy)]
struct RowsStage {
    bounds: Bounds,
    constants: simd::RowsConstants,
}

impl RowsStage {
    fn new(bounds: &Bounds) -> RowsStage {
        let zero = bounds.zero_point.unsigned_abs();
        let max_shift = (1..=30u32)
            .take_while(|&s| zero <= (1 << 29) >> s)
            .last()
            .unwrap_or(0);
        RowsStage {
            bounds: *bounds,
            constants: simd::RowsConstants {
                rounding: bounds.zero_point.wrapping_mul(2).wrapping_add(1),
                max_shift,
                min: bounds.min,
            },
        }
    }

    /// `out[o] = Y::from_wide(bounds.apply(requant_o.apply(sums[o])) as i16)` over the rows
    /// all four slices have.
    #[inline(always)]
    fn store<Y: Store>(&self, sums: &[i32], multiplier: &[i32], shift: &[i32], out: &mut [Y]) {
        let b = &self.bounds;
        let n = sums
            .len()
            .min(multiplier.len())
            .min(shift.len())
            .min(out.len());
        let mut done = 0;
        while done < n {
            let rows = (&sums[done..n], &multiplier[done..n], &shift[done..n]);
            done += match Y::outs(&mut out[done..n]) {
                Outs::I8(y) if b.min >= -128 && b.max == 127 => {
                    simd::stage_rows_i8(rows.0, rows.1, rows.2, y, &self.constants)
                }
                Outs::I16(y) if b.min >= -32768 && b.max == 32767 => {
                    simd::stage_rows_i16(rows.0, rows.1, rows.2, y, &self.constants)
                }
                _ => 0,
            };
            // A row of another form, or every row when the clamp is not the type's.
            if let (Some(&x), Some(&m), Some(&s), Some(y)) = (
                sums.get(done),
                multiplier.get(done),
                shift.get(done),
                out.get_mut(done),
            ) {
                let requant = Requant {
                    multiplier: m,
                    shift: s,
                };
                *y = Y::from_wide(b.apply(requant.apply(x)) as i16);
                done += 1;
            }
        }
    }
}

/// Whether [`rows`] takes [`rows_widened`]: on DSP cores, where SXTB16 and SMLAD make the shared
/// widened input pay (measured in docs/BENCHMARKS.md, "Dense layers on DSP cores").
const WIDEN: bool = cfg!(icefold_dsp);

/// Stack words for the widened input of a layer call with at most 256 input values (512 bytes).
const SMALL_WORDS: usize = 128;
/// Rows whose sums [`rows_widened`] keeps before their output stage (a multiple of 3).
const STAGE_ROWS: usize = 48;

/// Most positions [`rows_widened`] sums before the products (the sums stay in int16).
const MAX_POOLED: usize = 256;

/// The same for at most 1024 input values (2 KiB); larger inputs take [`rows_paired`].
const LARGE_WORDS: usize = 512;

/// `output[o] = finish(bias'[o] + Σ_p Σ_i weights[o][i] · input_p[i])`.
#[inline(never)]
fn rows<Y: Store>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i8],
    input: &[i8],
    output: &mut [Y],
) {
    if x86(channels, bounds, (weights, false), input, output) {
        return;
    }
    if !(WIDEN && widened(channels, bounds, weights, input, output)) {
        rows_paired(channels, bounds, weights, input, Y::outs(output));
    }
}

/// The x86_64 AVX2 dense layer ([`crate::kernels::x86::int8::dense`], or with `pairs` the
/// weights in row pairs, [`crate::kernels::x86::int8::dense::dense_layout`]), if it takes the
/// layer (AVX2 present, an input and a number of positions it covers); `false` elsewhere and,
/// in this module's tests, while they run the portable rows.
#[inline(always)]
fn x86<Y: FromWide>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    (weights, pairs): (&[i8], bool),
    input: &[i8],
    output: &mut [Y],
) -> bool {
    #[cfg(test)]
    if tests::PORTABLE.with(|p| p.get()) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    return crate::kernels::x86::int8::dense::dense_layout(
        channels,
        bounds,
        (weights, pairs),
        input,
        output,
    );
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (channels, bounds, weights, pairs, input, output);
        false
    }
}

/// [`rows_widened`] with a stack buffer sized for the input ([`with_input_buffer`]): `false`
/// (nothing written) for shapes it does not take.
fn widened<Y: Store>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i8],
    input: &[i8],
    output: &mut [Y],
) -> bool {
    // The buffer holds one position (several are summed into it).
    let n_in = weights.len().checked_div(output.len()).unwrap_or(0);
    with_input_buffer(n_in, |buf| {
        rows_widened(channels, bounds, weights, input, output, buf)
    })
}

/// [`rows`] with the input widened once into `buf` ([`simd::widen_pairs`]) and three weight
/// rows per pass ([`simd::sxtb16_3x1`]; a last block of one or two rows repeats its last row
/// and stores once). The words of each row start where the weights are 4-aligned (`head`
/// values in, the same for every row since `n_in` is a multiple of 4); the first `head` and
/// last `n_in − head − 4 · runs` products of each row are summed in Rust.
///
/// `false` (nothing written) unless `n_in` is a nonzero multiple of 4 and `buf` holds the
/// widened input (two words per run of four values per position).
#[inline(never)]
fn rows_widened<Y: Store>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i8],
    input: &[i8],
    output: &mut [Y],
    buf: &mut [u32],
) -> bool {
    let n_out = output.len();
    let n_in = weights.len().checked_div(n_out).unwrap_or(0);
    if n_in == 0 || n_in % 4 != 0 {
        return false;
    }
    let positions = input.len() / n_in;
    let (head_bytes, words, _) = bytemuck::pod_align_to::<i8, u32>(weights);
    let head = head_bytes.len().min(n_in);
    let runs = (n_in - head) / 4;
    // Row `o`'s runs: `words[o · n_in / 4 ..][.. runs]` (row starts `head` bytes before a word).
    let row_words = |o: usize| words.get(o * (n_in / 4)..o * (n_in / 4) + runs);
    let x_len = 2 * runs;
    if positions == 0
        || positions > MAX_POOLED
        || row_words(n_out - 1).is_none()
        || buf.len() < x_len
    {
        return false;
    }
    let x = &mut buf[..x_len];
    widen_input(input, n_in, head, x);
    let x: &[u32] = x;
    let edges = head != 0 || head + 4 * runs != n_in;
    // The sums of up to `STAGE_ROWS` rows, then their output stage as one pass over the
    // channels' slices (a short loop with few live values, apart from the sums' loop).
    let mut sums = [0i32; STAGE_ROWS];
    let rows_stage = RowsStage::new(bounds);
    for (chunk, out) in output.chunks_mut(STAGE_ROWS).enumerate() {
        let first = chunk * STAGE_ROWS;
        let sums = &mut sums[..out.len()];
        // The chunk's whole blocks in one call (the block loop in assembly),
        // their edges after.
        let mut done = 0;
        {
            let nw = n_in / 4;
            let blocks = sums.len() / 3;
            let (w, bias) = (
                words.get(first * nw..).unwrap_or_default(),
                channels.bias.get(first..).unwrap_or_default(),
            );
            if blocks > 0 && simd::sxtb16_3x1_blocks(w, nw, runs, x, bias, sums, blocks) {
                done = 3 * blocks;
                if edges {
                    for (block, sums) in sums[..done].chunks_exact_mut(3).enumerate() {
                        let o = first + 3 * block;
                        let mut acc = [0; 3];
                        edge_sums(
                            &mut acc,
                            [o, o + 1, o + 2],
                            weights,
                            input,
                            n_in,
                            head..head + 4 * runs,
                        );
                        for (s, a) in sums.iter_mut().zip(acc) {
                            *s = s.wrapping_add(a);
                        }
                    }
                }
            }
        }
        for (block, sums) in sums[done..].chunks_mut(3).enumerate() {
            let o = first + done + 3 * block;
            let last = o + sums.len() - 1;
            let rows = [o, (o + 1).min(last), last];
            let w = rows.map(|o| row_words(o).unwrap_or_default());
            let bias = rows.map(|o| channels.bias.get(o).copied().unwrap_or(0));
            let mut acc = simd::sxtb16_3x1(w, x, bias);
            if edges {
                edge_sums(&mut acc, rows, weights, input, n_in, head..head + 4 * runs);
            }
            for (s, a) in sums.iter_mut().zip(acc) {
                *s = a;
            }
        }
        let range = first..first + out.len();
        let (Some(multiplier), Some(shift)) = (
            channels.multiplier.get(range.clone()),
            channels.shift.get(range),
        ) else {
            return true;
        };
        rows_stage.store(sums, multiplier, shift, out);
    }
    true
}

/// Adds to `acc[k]` the products of row `rows[k]` outside `words` (the values its words
/// cover), over every position: the few values before a row's first whole word and after
/// its last.
#[inline(never)]
fn edge_sums(
    acc: &mut [i32; 3],
    rows: [usize; 3],
    weights: &[i8],
    input: &[i8],
    n_in: usize,
    words: core::ops::Range<usize>,
) {
    for (a, o) in acc.iter_mut().zip(rows) {
        let row = weights.get(o * n_in..(o + 1) * n_in).unwrap_or_default();
        let (head, tail) = (
            row.get(..words.start).unwrap_or_default(),
            row.get(words.end..).unwrap_or_default(),
        );
        for x in input.chunks_exact(n_in) {
            let x_tail = x.get(words.end..).unwrap_or_default();
            for (w, x) in head.iter().zip(x).chain(tail.iter().zip(x_tail)) {
                *a = a.wrapping_add(i32::from(*w) * i32::from(*x));
            }
        }
    }
}

/// `output[o] = finish(bias'[o] + Σ_p Σ_i weights[o][i] · input_p[i])`, two rows at a time.
#[inline(never)]
fn rows_paired(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i8],
    input: &[i8],
    mut output: Outs,
) {
    let n_out = output.len();
    let n_in = weights.len().checked_div(n_out).unwrap_or(0);
    if n_in == 0 {
        return;
    }
    let finish = |stage: &Stage, acc: i32| bounds.apply(stage.scale(acc)) as i16;
    for o in (0..n_out).step_by(2) {
        // A last, odd feature reads its own row twice and stores once.
        let second = (o + 1).min(n_out - 1);
        let row = |o: usize| weights.get(o * n_in..(o + 1) * n_in);
        let (Some(w0), Some(w1)) = (row(o), row(second)) else {
            return;
        };
        let (Some((b0, s0)), Some((b1, s1))) = (stage(channels, o), stage(channels, second)) else {
            return;
        };
        let acc = input
            .chunks_exact(n_in)
            .fold([b0, b1], |acc, x| dot([w0, w1], x, acc));
        output.set(o, finish(&s0, acc[0]));
        if second != o {
            output.set(second, finish(&s1, acc[1]));
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::reference::int8::dense as reference;
    use crate::kernels::reference::int8::testing::Gen;
    use crate::kernels::reference::int8::{Clamp, ClampI16};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use std::vec::Vec;

    std::thread_local! {
        /// Set: [`rows`] skips the x86 kernel (the portable rows are tested on the host too).
        pub(super) static PORTABLE: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    /// The int8 rows `w` (`n_out` of them) in [`crate::format::quad_index`] order, as int16,
    /// starting `shift` halves into a word-aligned buffer: halves `shift .. shift + w.len()`.
    fn quads_of(w: &[i8], n_out: usize, shift: usize) -> Vec<u32> {
        let n_in = w.len() / n_out;
        let mut words = std::vec![0u32; w.len() / 2 + 1];
        let q: &mut [i16] = bytemuck::cast_slice_mut(&mut words);
        for o in 0..n_out {
            for i in 0..n_in {
                q[shift + crate::format::quad_index(n_out, n_in, o, i)] = w[o * n_in + i].into();
            }
        }
        words
    }

    /// [`quads_of`]'s halves.
    fn halves(words: &[u32], shift: usize, len: usize) -> &[i16] {
        &bytemuck::cast_slice(words)[shift..shift + len]
    }

    /// One random layer through `fast` (int8 and int16 outputs) against the reference; the
    /// weights start `offset` bytes into their buffer, so rows start at every alignment.
    #[allow(clippy::too_many_arguments)]
    fn case(
        n_in: usize,
        n_out: usize,
        positions: usize,
        offset: usize,
        (zp, zp16, relu): (i8, i16, bool),
        constant_input: Option<i8>,
        seed: u64,
        fast: impl Fn(&ChannelQuant, &Bounds, &[i8], &[i8], &mut [i8]) -> bool,
        fast_wide: impl Fn(&ChannelQuant, &Bounds, &[i8], &[i8], &mut [i16]) -> bool,
    ) -> Result<(), TestCaseError> {
        let mut gen = Gen(seed);
        let stored = gen.i8s(offset + n_in * n_out);
        let weights = &stored[offset..];
        let mut input = gen.i8s(n_in * positions);
        if let Some(v) = constant_input {
            input.fill(v);
        }
        let bias: Vec<i32> = (0..n_out).map(|_| gen.range(-(1 << 20), 1 << 20)).collect();
        // Factors near 1 half of the time, so a one-unit difference shows.
        let requant: Vec<_> = (0..n_out)
            .map(|_| {
                if gen.next() % 2 == 0 {
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
        let channels = ChannelQuant {
            bias: &bias,
            multiplier: &multiplier,
            shift: &shift,
        };
        let clamp = if relu {
            Clamp { min: zp, max: 127 }
        } else {
            Clamp::FULL
        };
        let q = OutputQuant {
            zero_point: zp,
            clamp,
        };
        let (mut got, mut want) = (std::vec![0i8; n_out], std::vec![0i8; n_out]);
        prop_assert!(fast(&channels, &Bounds::from(q), weights, &input, &mut got));
        reference::dense(&channels, &q, weights, &input, &mut want);
        prop_assert_eq!(got, want);
        let clamp = if relu {
            ClampI16 {
                min: zp16,
                max: i16::MAX,
            }
        } else {
            ClampI16 {
                min: i16::MIN,
                max: i16::MAX,
            }
        };
        let q = WideOutputQuant {
            zero_point: zp16,
            clamp,
        };
        let (mut got, mut want) = (std::vec![0i16; n_out], std::vec![0i16; n_out]);
        prop_assert!(fast_wide(
            &channels,
            &Bounds::from(q),
            weights,
            &input,
            &mut got
        ));
        reference::dense_wide(&channels, &q, weights, &input, &mut want);
        prop_assert_eq!(got, want);
        Ok(())
    }

    /// A random layer stored in row pairs ([`crate::format::store_pairs`], word-aligned)
    /// through [`dense_pairs`] / [`dense_wide_pairs`] (with `portable`: [`rows_pairs`] with its
    /// Rust sums, then [`rows_pairs_portable`]; else the x86 kernel where AVX2 is present)
    /// against the reference on the rows. `extreme`: every weight ±127 and the input −128, the
    /// second rows' sums at the layout's bound. `None` where the layout refuses the weights.
    fn pairs_case(
        (n_in, n_out, positions): (usize, usize, usize),
        (zp, zp16): (i8, i16),
        extreme: bool,
        portable: bool,
        seed: u64,
    ) -> Result<Option<()>, TestCaseError> {
        let mut gen = Gen(seed);
        let mut rows = gen.i8s(n_in * n_out);
        let mut input = gen.i8s(n_in * positions);
        if extreme {
            for w in &mut rows {
                *w = if *w < 0 { -127 } else { 127 };
            }
            input.fill(-128);
        }
        // A −128 in a second row under a negative first-row weight is the one value the layout
        // cannot store (the tool keeps such a layer in rows; `store_pairs_refuses_...`).
        for o in (1..n_out).step_by(2) {
            for i in 0..n_in {
                if rows[o * n_in + i] == -128 && rows[(o - 1) * n_in + i] < 0 {
                    rows[o * n_in + i] = -127;
                }
            }
        }
        let mut words = std::vec![0u32; rows.len().div_ceil(4)];
        let stored = &mut bytemuck::cast_slice_mut::<u32, i8>(&mut words)[..rows.len()];
        if crate::format::store_pairs(&rows, n_out, n_in, positions, stored).is_err() {
            return Ok(None);
        }
        let stored: &[i8] = stored;
        let bias: Vec<i32> = (0..n_out).map(|_| gen.range(-(1 << 20), 1 << 20)).collect();
        let requant: Vec<_> = (0..n_out).map(|_| gen.requant()).collect();
        let multiplier: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
        let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
        let channels = ChannelQuant {
            bias: &bias,
            multiplier: &multiplier,
            shift: &shift,
        };
        PORTABLE.with(|p| p.set(portable));
        let q = OutputQuant {
            zero_point: zp,
            clamp: Clamp::FULL,
        };
        let (mut want, mut got) = (std::vec![0i8; n_out], std::vec![0i8; n_out]);
        reference::dense(&channels, &q, &rows, &input, &mut want);
        let mut from_pairs = std::vec![0i8; n_out];
        reference::dense_pairs(&channels, &q, stored, &input, &mut from_pairs);
        prop_assert_eq!(&from_pairs, &want);
        dense_pairs(&channels, &q, stored, &input, &mut got);
        prop_assert_eq!(&got, &want);
        if portable {
            let bounds = Bounds::from(q);
            got.fill(0);
            rows_pairs_portable(&channels, &bounds, stored, &input, Outs::I8(&mut got));
            prop_assert_eq!(&got, &want);
            got.fill(0);
            let mut buf = std::vec![0u32; LARGE_WORDS];
            if rows_pairs(&channels, &bounds, stored, &input, &mut got[..], &mut buf) {
                prop_assert_eq!(&got, &want);
            }
        }
        let q = WideOutputQuant {
            zero_point: zp16,
            clamp: ClampI16 {
                min: i16::MIN,
                max: i16::MAX,
            },
        };
        let (mut want, mut got) = (std::vec![0i16; n_out], std::vec![0i16; n_out]);
        reference::dense_wide(&channels, &q, &rows, &input, &mut want);
        dense_wide_pairs(&channels, &q, stored, &input, &mut got);
        prop_assert_eq!(got, want);
        Ok(Some(()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Row pairs: inputs in fours and eights (the DSP path's), one to three passes of the
        /// stage, odd and even rows, pooled positions, both output types.
        #[test]
        fn pairs_equal_reference(quads in 1usize..=40, n_out in 1usize..=110, positions in 1usize..=3,
                                 zp in any::<i8>(), zp16 in any::<i16>(), portable in any::<bool>(),
                                 seed in any::<u64>()) {
            let done = pairs_case((4 * quads, n_out, positions), (zp, zp16), false, portable, seed)?;
            prop_assert!(done.is_some(), "the layout refused weights within its bound");
        }

        /// At the layout's bound: 512 inputs of ±127 and an input of −128, so each second row's
        /// sum is up to 128 · 512 · 127 = 8,323,072 (2^23 is 8,388,608): 256 times it wraps an
        /// `i32`, the split must still be exact.
        #[test]
        fn pairs_at_the_bound_equal_reference(n_out in 2usize..=9, portable in any::<bool>(),
                                              seed in any::<u64>()) {
            let done = pairs_case((512, n_out, 1), (0, 0), true, portable, seed)?;
            prop_assert!(done.is_some());
        }
    }

    /// The layout's refusals: a −128 under a negative first-row weight, a sum above the bound.
    #[test]
    fn store_pairs_refuses_what_the_kernels_cannot_split() {
        use crate::format::{check_pairs, store_pairs, PairsFault};
        let mut out = [0i8; 16];
        let mut rows = [1i8; 16];
        rows[0] = -3;
        rows[4] = -128;
        assert_eq!(
            store_pairs(&rows, 4, 4, 1, &mut out),
            Err(PairsFault::Range { row: 1, input: 0 })
        );
        assert_eq!(store_pairs(&rows, 2, 8, 1, &mut out), Ok(()));
        assert_eq!(check_pairs(&out, 2, 8, 1), Ok(()));
        assert_eq!(
            store_pairs(&rows, 4, 3, 1, &mut out[..12]),
            Err(PairsFault::Shape)
        );
        let heavy = [127i8; 2 * 520];
        let mut out = [0i8; 2 * 520];
        assert!(matches!(
            store_pairs(&heavy, 2, 520, 1, &mut out),
            Err(PairsFault::Sum { row: 1, .. })
        ));
        assert_eq!(
            store_pairs(&heavy[..2 * 512], 2, 512, 1, &mut out[..1024]),
            Ok(())
        );
        assert!(matches!(
            check_pairs(&out[..1024], 2, 512, 2),
            Err(PairsFault::Sum { row: 1, .. })
        ));
        // A stored 127 under a negative first-row weight decodes to 128.
        let mut bad = [0i8; 8];
        bad[0] = -1;
        bad[1] = 127;
        assert_eq!(
            check_pairs(&bad, 2, 4, 1),
            Err(PairsFault::Range { row: 1, input: 0 })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The public functions (on an x86_64 host with AVX2 the x86 kernel, and with
        /// `portable` the paired rows), any `n_in`.
        #[test]
        fn equals_reference(n_in in 1usize..=40, n_out in 1usize..=9, positions in 1usize..=4,
                            offset in 0usize..4, zp in any::<i8>(), zp16 in any::<i16>(),
                            relu in any::<bool>(), portable in any::<bool>(), seed in any::<u64>()) {
            PORTABLE.with(|p| p.set(portable));
            case(n_in, n_out, positions, offset, (zp, zp16, relu), None, seed,
                 |c, b, w, x, y| { dense(c, &OutputQuant { zero_point: b.zero_point as i8, clamp: Clamp { min: b.min as i8, max: b.max as i8 } }, w, x, y); true },
                 |c, b, w, x, y| { dense_wide(c, &WideOutputQuant { zero_point: b.zero_point as i16, clamp: ClampI16 { min: b.min as i16, max: b.max as i16 } }, w, x, y); true })?;
        }

        /// The DSP cores' path (widened input, three rows per pass) with its portable twin:
        /// every alignment of the rows, one to three rows in the last block, odd and even runs,
        /// several passes of the output stage (`STAGE_ROWS`).
        #[test]
        fn widened_rows_equal_reference(runs in 1usize..=40, n_out in 1usize..=60,
                                        positions in 1usize..=4, offset in 0usize..4,
                                        zp in any::<i8>(), zp16 in any::<i16>(),
                                        relu in any::<bool>(), seed in any::<u64>()) {
            let n_in = 4 * runs;
            let mut buf = std::vec![0u32; 2 * runs * positions];
            let buf = core::cell::RefCell::new(&mut buf);
            case(n_in, n_out, positions, offset, (zp, zp16, relu), None, seed,
                 |c, b, w, x, y| rows_widened(c, b, w, x, y, &mut buf.borrow_mut()),
                 |c, b, w, x, y| rows_widened(c, b, w, x, y, &mut buf.borrow_mut()))?;
        }

        /// Up to [`MAX_POOLED`] positions summed before the products: the extreme sums
        /// (every input −128 or 127) still exact; more positions take the paired rows.
        #[test]
        fn pooled_positions_equal_reference(runs in 1usize..=8, n_out in 1usize..=7,
                                            positions in prop_oneof![2usize..=4, 250usize..=260],
                                            constant in prop_oneof![Just(None), Just(Some(i8::MIN)), Just(Some(i8::MAX))],
                                            offset in 0usize..4, seed in any::<u64>()) {
            let n_in = 4 * runs;
            let buf = core::cell::RefCell::new(std::vec![u32::MAX; 2 * runs]);
            let taken = core::cell::Cell::new(true);
            let run = |c: &ChannelQuant, b: &Bounds, w: &[i8], x: &[i8], y: &mut [i8]| {
                taken.set(rows_widened(c, b, w, x, y, &mut buf.borrow_mut()));
                if !taken.get() {
                    rows_paired(c, b, w, x, Outs::I8(y));
                }
                true
            };
            let run_wide = |c: &ChannelQuant, b: &Bounds, w: &[i8], x: &[i8], y: &mut [i16]| {
                rows_widened(c, b, w, x, y, &mut buf.borrow_mut()) || { rows_paired(c, b, w, x, Outs::I16(y)); true }
            };
            case(n_in, n_out, positions, offset, (0, 0, false), constant, seed, run, run_wide)?;
            prop_assert_eq!(taken.get(), positions <= MAX_POOLED);
        }

        /// The int16 quad layout ([`rows_quads`], the DSP cores' assembly there and the
        /// portable SMLAD elsewhere) against the reference on the int8 rows of the same values:
        /// full and partial last blocks, one position and pooled positions, the two stack
        /// buffers.
        #[test]
        fn quads_equal_reference(runs in prop_oneof![1usize..=12, 60usize..=70], n_out in 1usize..=14,
                                 positions in prop_oneof![Just(1usize), 2usize..=4],
                                 zp in any::<i8>(), zp16 in any::<i16>(),
                                 relu in any::<bool>(), seed in any::<u64>()) {
            let n_in = 4 * runs;
            let taken = core::cell::Cell::new(true);
            let run = |c: &ChannelQuant, b: &Bounds, w: &[i8], x: &[i8], y: &mut [i8]| {
                let q = quads_of(w, y.len(), 0);
                taken.set(taken.get() && quads(c, b, halves(&q, 0, w.len()), x, y));
                true
            };
            let run_wide = |c: &ChannelQuant, b: &Bounds, w: &[i8], x: &[i8], y: &mut [i16]| {
                let q = quads_of(w, y.len(), 0);
                taken.set(taken.get() && quads(c, b, halves(&q, 0, w.len()), x, y));
                true
            };
            case(n_in, n_out, positions, 0, (zp, zp16, relu), None, seed, run, run_wide)?;
            prop_assert!(taken.get());
        }

        /// The public functions on the quad layout, shapes [`quads`] does not take included
        /// (more than 1024 inputs, weights not word-aligned: the reference computes them).
        #[test]
        fn public_quads_equal_reference(runs in prop_oneof![1usize..=4, 257usize..=260], n_out in 1usize..=6,
                                        misaligned in any::<bool>(), seed in any::<u64>()) {
            let n_in = 4 * runs;
            let run = |c: &ChannelQuant, b: &Bounds, w: &[i8], x: &[i8], y: &mut [i8]| {
                let shift = usize::from(misaligned);
                let q = quads_of(w, y.len(), shift);
                let q = halves(&q, shift, w.len());
                let quant = OutputQuant { zero_point: b.zero_point as i8, clamp: Clamp { min: b.min as i8, max: b.max as i8 } };
                dense_quads(c, &quant, q, x, y);
                true
            };
            let run_wide = |c: &ChannelQuant, b: &Bounds, w: &[i8], x: &[i8], y: &mut [i16]| {
                let shift = usize::from(misaligned);
                let q = quads_of(w, y.len(), shift);
                let q = halves(&q, shift, w.len());
                let quant = WideOutputQuant { zero_point: b.zero_point as i16, clamp: ClampI16 { min: b.min as i16, max: b.max as i16 } };
                dense_wide_quads(c, &quant, q, x, y);
                true
            };
            case(n_in, n_out, 1, 0, (0, 0, false), None, seed, run, run_wide)?;
        }

        /// The rows' output stage against the reference arithmetic (`Requant::apply`, the zero
        /// point, the clamp, the output type) for every factor form, zero point and clamp: the
        /// RunScale form where it applies, the fallback row by row elsewhere, both output types.
        #[test]
        fn rows_stage_equals_reference(
            rows in proptest::collection::vec(
                (prop_oneof![any::<i32>(), -70000i32..70000, Just(i32::MIN), Just(i32::MAX)],
                 prop_oneof![(1i32 << 30)..=i32::MAX, any::<i32>(), Just(0)],
                 prop_oneof![-32i32..=-1, -33i32..=32]),
                0..40),
            zero_point in prop_oneof![-128i32..=127, any::<i16>().prop_map(i32::from), Just(1 << 20)],
            min in prop_oneof![Just(i32::from(i16::MIN)), Just(-128), -200i32..200],
            max in prop_oneof![Just(127), Just(32767), -100i32..200],
        ) {
            let (sums, (multiplier, shift)): (Vec<i32>, (Vec<i32>, Vec<i32>)) =
                rows.iter().map(|&(x, m, s)| (x, (m, s))).unzip();
            let bounds = Bounds { zero_point, min, max };
            let stage = RowsStage::new(&bounds);
            let want = |o: usize| {
                let r = Requant { multiplier: multiplier[o], shift: shift[o] };
                bounds.apply(r.apply(sums[o])) as i16
            };
            let mut y8 = std::vec![0i8; rows.len()];
            stage.store(&sums, &multiplier, &shift, &mut y8);
            let mut y16 = std::vec![0i16; rows.len()];
            stage.store(&sums, &multiplier, &shift, &mut y16);
            for o in 0..rows.len() {
                prop_assert_eq!(y8[o], i8::from_wide(want(o)), "int8 row {}", o);
                prop_assert_eq!(y16[o], want(o), "int16 row {}", o);
            }
        }

        /// [`rows`] refuses nothing: shapes the widened path does not take (`n_in` not a
        /// multiple of 4, inputs beyond the stack buffer) fall back to the paired rows.
        #[test]
        fn widened_refuses_what_it_cannot_take(n_in in 1usize..=12, n_out in 1usize..=4) {
            let weights = std::vec![1i8; n_in * n_out];
            let input = std::vec![1i8; n_in];
            let mut y = std::vec![0i8; n_out];
            let bounds = Bounds { zero_point: 0, min: -128, max: 127 };
            let (bias, m, s) = (std::vec![0; n_out], std::vec![1 << 30; n_out], std::vec![0; n_out]);
            let c = ChannelQuant { bias: &bias, multiplier: &m, shift: &s };
            let taken = rows_widened(&c, &bounds, &weights, &input, &mut y, &mut [0; 64]);
            prop_assert_eq!(taken, n_in % 4 == 0);
            if n_in % 4 == 0 && n_in >= 8 {
                prop_assert!(!rows_widened(&c, &bounds, &weights, &input, &mut y, &mut []));
            }
        }
    }
}
