//! int8 dense (fully connected) layers for x86_64 hosts (AVX2): the results of
//! [`reference::int8::dense`](crate::kernels::reference::int8::dense), byte for byte, int8 and
//! int16 outputs.
//!
//! A dense layer uses each weight once per call, so nothing is packed: the input is widened to
//! int16 once per call into a stack buffer (several positions, a global pooling folded into the
//! layer, summed into it first: `Σ_p Σ_i w_i · x_p,i = Σ_i w_i · Σ_p x_p,i`, exact while the sums
//! fit int16, up to [`MAX_POSITIONS`]), zero past the input's end up to a whole vector. Eight
//! weight rows at a time then stream through: sixteen int8 weights of a row sign-extended to
//! int16 in the load (`vpmovsxbw`) and multiplied with the sixteen shared input values by
//! `vpmaddwd` (exact pair sums, as in [`super`]), one accumulator per row; the eight
//! accumulators are reduced to one vector of eight sums (`vphaddd`, wrapping like the
//! reference's `wrapping_add`, so the order does not matter), which takes the parent's vector
//! output stage ([`Requant8`], one channel's factor per lane) or, for factors outside its form,
//! the scalar stage lane by lane.
//!
//! A row's last, partial vector may read up to 15 weight bytes past the row (the next row's,
//! inside the weights): their products are with the buffer's zeros, so they add nothing. The
//! last rows, where such a read would leave the slice, copy their tail instead.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use super::{finish, Requant8};
use crate::kernels::fast::requant::{Bounds, Stage};
use crate::kernels::reference::int8::{ChannelQuant, FromWide};
use crate::quant::Requant;

/// Most positions summed before the products: `256 · −128 = −2^15` still fits int16.
pub const MAX_POSITIONS: usize = 256;

/// int16 values of the small input buffer (2 KiB of stack, cheap to zero on every call).
const SMALL: usize = 1024;

/// int16 values of the large input buffer (16 KiB of stack, in a frame of its own, [`large`],
/// only for layers that need it): inputs (one position) of up to `MAX_IN − 16` values.
pub const MAX_IN: usize = 8192;

/// Rows per block: one vector of eight sums.
const ROWS: usize = 8;

/// `output[o] = finish(bias'[o] + Σ_p Σ_i weights[o][i] · input_p[i])` as the reference, if the
/// CPU has AVX2 and the operands are ones this kernel takes (`n_in` up to [`MAX_IN`] − 16, 1 to
/// [`MAX_POSITIONS`] positions, every output's channel constants present); `false`, nothing
/// written, otherwise.
pub fn dense<Y: FromWide>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    weights: &[i8],
    input: &[i8],
    output: &mut [Y],
) -> bool {
    dense_layout(channels, bounds, (weights, false), input, output)
}

/// [`dense`], or with `pairs` on weights in row pairs
/// ([`DenseLayout::PairsI8`](crate::format::DenseLayout)): each 32-byte load holds sixteen inputs' weights of both rows of a pair as int16 lanes
/// `256 · w1 + w0`; `vpmaddwd` of the lanes as stored sums `256 ·` the second row's products
/// plus the first's (wrapping), and of their low bytes sign-extended (two shifts) the first
/// row's; the second row's sum is the difference shifted down, exact under the layout's bound
/// (as on the DSP cores). A last odd row as [`dense`]'s.
pub fn dense_layout<Y: FromWide>(
    channels: &ChannelQuant,
    bounds: &Bounds,
    (weights, pairs): (&[i8], bool),
    input: &[i8],
    output: &mut [Y],
) -> bool {
    let n_out = output.len();
    let n_in = weights.len().checked_div(n_out).unwrap_or(0);
    // As the reference: rows of `n_in` weights, the input read as whole positions.
    let positions = input.len().checked_div(n_in).unwrap_or(0);
    let ok = n_in > 0
        && n_in <= MAX_IN - 16
        && (1..=MAX_POSITIONS).contains(&positions)
        && channels.bias.len() >= n_out
        && channels.multiplier.len() >= n_out
        && channels.shift.len() >= n_out
        && super::super::available();
    if !ok {
        return false;
    }
    let layer = Layer {
        channels,
        bounds,
        weights,
        input: &input[..positions * n_in],
        n_in,
        pairs,
    };
    if n_in.next_multiple_of(16) <= SMALL {
        // SAFETY: AVX2 present; the operands checked above.
        unsafe { rows_avx2(&layer, &mut [0; SMALL], output) };
    } else {
        large(&layer, output);
    }
    true
}

/// The checked operands of a call.
struct Layer<'a> {
    channels: &'a ChannelQuant<'a>,
    bounds: &'a Bounds,
    weights: &'a [i8],
    /// Whole positions only.
    input: &'a [i8],
    n_in: usize,
    /// The weights in row pairs ([`dense_layout`]).
    pairs: bool,
}

/// [`rows_avx2`] with the large buffer, in a frame of its own.
#[inline(never)]
fn large<Y: FromWide>(layer: &Layer<'_>, output: &mut [Y]) {
    // SAFETY: AVX2 present and the operands checked ([`dense`]).
    unsafe { rows_avx2(layer, &mut [0; MAX_IN], output) };
}

/// # Safety
/// AVX2 present; `layer` checked by [`dense`] against `output`; `x` at least
/// `n_in` rounded up to 16 values long.
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2<Y: FromWide>(layer: &Layer<'_>, x: &mut [i16], output: &mut [Y]) {
    let n_in = layer.n_in;
    let padded = n_in.next_multiple_of(16);
    let Some(x) = x.get_mut(..padded) else {
        return;
    };
    // The input (summed over its positions), then zeros to the end of the last vector.
    let (sums, zeros) = x.split_at_mut(n_in);
    let mut positions = layer.input.chunks_exact(n_in);
    if let Some(first) = positions.next() {
        for (s, v) in sums.iter_mut().zip(first) {
            *s = i16::from(*v);
        }
    }
    for x_p in positions {
        for (s, v) in sums.iter_mut().zip(x_p) {
            // At most MAX_POSITIONS values of −128..=127: no overflow.
            *s += i16::from(*v);
        }
    }
    zeros.fill(0);
    let x: &[i16] = x;

    let n_out = output.len();
    let mut o = 0;
    while o < n_out {
        let width = (n_out - o).min(ROWS);
        // The block's rows (a last, short block repeats its last row; only `width` are stored).
        let rows: [usize; ROWS] = core::array::from_fn(|j| o + j.min(width - 1));
        // SAFETY: AVX2 present; rows < n_out, so every row lies inside the weights (n_out · n_in
        // <= weights.len()); x holds `padded` values.
        let acc = if layer.pairs {
            // SAFETY: AVX2 present; x holds `padded` values, zero from n_in.
            unsafe { block_pairs(layer.weights, n_in, (o, width), x) }
        } else {
            unsafe { block(layer.weights, n_in, rows, x) }
        };
        // SAFETY: AVX2 present; o + width <= n_out <= every channel array's length (checked).
        unsafe { store(layer, o, width, acc, &mut output[o..o + width]) };
        o += width;
    }
}

/// The eight sums `Σ_i weights[rows[j]][i] · x[i]` (lane `j`), wrapping.
///
/// # Safety
/// AVX2 present; `(rows[j] + 1) · n_in <= weights.len()`; `x` holds `n_in` rounded up to 16
/// values, zero from `n_in`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block(weights: &[i8], n_in: usize, rows: [usize; ROWS], x: &[i16]) -> __m256i {
    let base = weights.as_ptr();
    let starts = rows.map(|r| r * n_in);
    let mut acc = [_mm256_setzero_si256(); ROWS];
    let whole = n_in - n_in % 16;
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 16 <= whole <= x.len().
        let xv = unsafe { _mm256_loadu_si256(x.as_ptr().add(i).cast()) };
        for (a, s) in acc.iter_mut().zip(&starts) {
            // SAFETY: s + i + 16 <= s + n_in: inside row `s / n_in`.
            let wv = unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(base.add(s + i).cast())) };
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(wv, xv));
        }
        i += 16;
    }
    if whole < n_in {
        // SAFETY: x holds `whole + 16` values (n_in rounded up), zero from n_in.
        let xv = unsafe { _mm256_loadu_si256(x.as_ptr().add(whole).cast()) };
        for (a, s) in acc.iter_mut().zip(&starts) {
            let at = s + whole;
            let wv = if at + 16 <= weights.len() {
                // Bytes past the row (the next row's) meet the zeros of x.
                // SAFETY: at + 16 <= weights.len().
                unsafe { _mm_loadu_si128(base.add(at).cast()) }
            } else {
                let mut tail = [0i8; 16];
                let row_tail = weights.get(at..s + n_in).unwrap_or_default();
                tail[..row_tail.len()].copy_from_slice(row_tail);
                // SAFETY: tail has 16 bytes.
                unsafe { _mm_loadu_si128(tail.as_ptr().cast()) }
            };
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(_mm256_cvtepi8_epi16(wv), xv));
        }
    }
    // SAFETY: AVX2 present.
    unsafe { reduce(acc) }
}

/// The sums of rows `o .. o + width` (lane `j` row `o + j`, lanes from `width` zero) on weights
/// in row pairs ([`dense_layout`]); `o` even.
///
/// # Safety
/// AVX2 present; `x` holds `n_in` rounded up to 16 values, zero from `n_in`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block_pairs(
    weights: &[i8],
    n_in: usize,
    (o, width): (usize, usize),
    x: &[i16],
) -> __m256i {
    let n_out = weights.len() / n_in.max(1);
    let mut acc = [_mm256_setzero_si256(); ROWS];
    // The block's whole pairs (the sums of each sixteen inputs into eight independent
    // accumulators, as `block` does), then a last odd row.
    let pairs = (o + width).min(n_out - n_out % 2).saturating_sub(o) / 2;
    let base = o * n_in;
    let whole = n_in - n_in % 16;
    if pairs == ROWS / 2 && whole > 0 {
        // Four whole pairs: eight accumulators in registers, no bounds in the loop.
        // SAFETY: AVX2 present; `acc` has eight vectors.
        unsafe { four_pairs(weights, base, n_in, whole, x, &mut acc) };
    }
    let start = if pairs == ROWS / 2 { whole } else { 0 };
    for i in (start..n_in).step_by(16) {
        let Some(xs) = x.get(i..i + 16) else {
            break;
        };
        // SAFETY: 16 values in `xs`.
        let xv = unsafe { _mm256_loadu_si256(xs.as_ptr().cast()) };
        for (j, sums) in acc.chunks_exact_mut(2).enumerate().take(pairs) {
            let at = base + 2 * j * n_in + 2 * i;
            let end = base + 2 * (j + 1) * n_in;
            let mut tail = [0i8; 32];
            let lanes = match weights.get(at..at + 32) {
                Some(lanes) if at + 32 <= end => lanes,
                _ => {
                    let part = weights.get(at..end).unwrap_or_default();
                    tail[..part.len()].copy_from_slice(part);
                    &tail[..]
                }
            };
            // SAFETY: 32 bytes in `lanes`.
            let v = unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) };
            let w0 = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(v));
            sums[0] = _mm256_add_epi32(sums[0], _mm256_madd_epi16(w0, xv));
            sums[1] = _mm256_add_epi32(sums[1], _mm256_madd_epi16(v, xv));
        }
    }
    let r = o + 2 * pairs;
    if r < o + width {
        // A last odd row, stored as a row.
        let row = weights.get(r * n_in..(r + 1) * n_in).unwrap_or_default();
        for (i, w16) in row.chunks(16).enumerate() {
            let mut w = [0i8; 16];
            w[..w16.len()].copy_from_slice(w16);
            let Some(xs) = x.get(16 * i..16 * i + 16) else {
                break;
            };
            // SAFETY: 16 bytes in `w`, 16 values in `xs`.
            let (wv, xv) = unsafe {
                (
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(w.as_ptr().cast())),
                    _mm256_loadu_si256(xs.as_ptr().cast()),
                )
            };
            let k = 2 * pairs;
            acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(wv, xv));
        }
    }
    // Lane 2j: the pair's first row; lane 2j + 1: 256 times its second row plus the first
    // (each lane of the words as stored, wrapping), so the second row is the difference
    // shifted down, exact under the layout's bound (`format::PAIR_SUM_LIMIT`). A last odd row
    // sits in an even lane; odd lanes past the block's rows are not stored.
    // SAFETY: AVX2 present.
    let sums = unsafe { reduce(acc) };
    let first = _mm256_shuffle_epi32::<0b10_10_00_00>(sums);
    let second = _mm256_srai_epi32::<8>(_mm256_sub_epi32(sums, first));
    _mm256_blend_epi32::<0b1010_1010>(sums, second)
}

/// [`block_pairs`]' sums over inputs `0..whole` (a multiple of 16) for four whole pairs of
/// rows starting at byte `base`, added to `acc` (pair `j`'s rows in `acc[2j]`, `acc[2j + 1]`).
///
/// # Safety
/// AVX2 present; `base + 8 · n_in <= weights.len()`, `whole <= n_in`, `whole <= x.len()`
/// (the caller's block of four pairs inside the weights, whole vectors of the input).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn four_pairs(
    weights: &[i8],
    base: usize,
    n_in: usize,
    whole: usize,
    x: &[i16],
    acc: &mut [__m256i; ROWS],
) {
    if base + 8 * n_in > weights.len() || whole > n_in || whole > x.len() {
        return;
    }
    let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5, mut a6, mut a7] = *acc;
    let w = weights.as_ptr();
    let split = |v: __m256i| (_mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(v)), v);
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 16 <= whole <= x.len(); pair j's bytes 2i .. 2i + 32 lie inside its
        // 2 · n_in bytes from base + 2j · n_in (i + 16 <= n_in), inside the weights (checked).
        unsafe {
            let xv = _mm256_loadu_si256(x.as_ptr().add(i).cast());
            let load = |j: usize| _mm256_loadu_si256(w.add(base + 2 * j * n_in + 2 * i).cast());
            let (l0, h0) = split(load(0));
            let (l1, h1) = split(load(1));
            let (l2, h2) = split(load(2));
            let (l3, h3) = split(load(3));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(l0, xv));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(h0, xv));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(l1, xv));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(h1, xv));
            a4 = _mm256_add_epi32(a4, _mm256_madd_epi16(l2, xv));
            a5 = _mm256_add_epi32(a5, _mm256_madd_epi16(h2, xv));
            a6 = _mm256_add_epi32(a6, _mm256_madd_epi16(l3, xv));
            a7 = _mm256_add_epi32(a7, _mm256_madd_epi16(h3, xv));
        }
        i += 16;
    }
    *acc = [a0, a1, a2, a3, a4, a5, a6, a7];
}

/// Lane `j`: every lane of `acc[j]` summed (wrapping).
///
/// # Safety
/// AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn reduce(acc: [__m256i; ROWS]) -> __m256i {
    // Lane j of the result: every lane of acc[j] summed. Each hadd adds neighbouring lanes of
    // two vectors; the last step adds the two 128-bit halves.
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    let h01 = _mm256_hadd_epi32(a0, a1);
    let h23 = _mm256_hadd_epi32(a2, a3);
    let h45 = _mm256_hadd_epi32(a4, a5);
    let h67 = _mm256_hadd_epi32(a6, a7);
    // Lanes [r0 r1 r2 r3 | r0 r1 r2 r3], each half its half's sums.
    let h0123 = _mm256_hadd_epi32(h01, h23);
    let h4567 = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(h0123, h4567),
        _mm256_permute2x128_si256::<0x31>(h0123, h4567),
    )
}

/// Outputs `o..o + width` (`out`) from their sums (`acc`, lanes `..width`): bias and the output
/// stage on the vector where every factor has [`Requant8`]'s form, lane by lane otherwise.
///
/// # Safety
/// AVX2 present; `out.len() == width <= 8`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store<Y: FromWide>(
    layer: &Layer<'_>,
    o: usize,
    width: usize,
    acc: __m256i,
    out: &mut [Y],
) {
    let ch = layer.channels;
    // SAFETY: AVX2 present. Lanes past `width` get a harmless factor (not stored).
    let stage = unsafe {
        Requant8::from_vectors(
            lanes(ch.bias, o, width, 0),
            lanes(ch.multiplier, o, width, 1 << 30),
            lanes(ch.shift, o, width, -1),
            layer.bounds,
        )
    };
    let mut sums = [0i32; 8];
    match stage {
        Some(stage) => {
            // SAFETY: AVX2 present; `sums` has eight i32.
            unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), stage.apply(acc)) };
            // Clamped to the output bounds: int16 values.
            for (y, s) in out.iter_mut().zip(sums) {
                *y = Y::from_wide(s as i16);
            }
        }
        None => {
            // SAFETY: as above.
            unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), acc) };
            for (j, (y, s)) in out.iter_mut().zip(sums).enumerate() {
                let at = |v: &[i32]| v.get(o + j).copied().unwrap_or(0);
                let requant = Requant {
                    multiplier: at(ch.multiplier),
                    shift: at(ch.shift),
                };
                *y = finish(s, &(at(ch.bias), Stage::new(requant)), layer.bounds);
            }
        }
    }
}

/// `values[o..o + width]` as a vector's first lanes, `unused` in the others.
///
/// # Safety
/// AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn lanes(values: &[i32], o: usize, width: usize, unused: i32) -> __m256i {
    if width == 8 {
        if let Some(eight) = values.get(o..o + 8) {
            // SAFETY: eight i32.
            return unsafe { _mm256_loadu_si256(eight.as_ptr().cast()) };
        }
    }
    let mut lanes = [unused; 8];
    for (l, v) in lanes
        .iter_mut()
        .zip(values.get(o..).unwrap_or_default())
        .take(width)
    {
        *l = *v;
    }
    // SAFETY: eight i32.
    unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::reference::int8::dense as reference;
    use crate::kernels::reference::int8::testing::Gen;
    use crate::kernels::reference::int8::{Clamp, ClampI16, OutputQuant, WideOutputQuant};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use std::vec::Vec;

    /// A random layer's operands.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        n_in: usize,
        n_out: usize,
        positions: usize,
        /// Bytes before the weights in their buffer: rows start at every alignment.
        offset: usize,
        zp: i16,
        relu: bool,
        /// Every input value this one (the extreme sums of pooled positions).
        constant: Option<i8>,
        seed: u64,
    }

    /// Runs `c` through [`dense`] and the reference with int8 and int16 outputs and compares
    /// every output (and that [`dense`] takes it exactly when it should).
    fn check(c: Case) -> Result<(), TestCaseError> {
        let mut gen = Gen(c.seed);
        let stored = gen.i8s(c.offset + c.n_in * c.n_out);
        let weights = &stored[c.offset..];
        let mut input = gen.i8s(c.n_in * c.positions);
        if let Some(v) = c.constant {
            input.fill(v);
        }
        let bias: Vec<i32> = (0..c.n_out)
            .map(|_| gen.range(-(1 << 20), 1 << 20))
            .collect();
        // Factors near 1 (a one-unit difference shows), far below 1, above 1 (the scalar
        // stage) and anything the generator makes.
        let requant: Vec<Requant> = (0..c.n_out)
            .map(|_| match gen.next() % 4 {
                0 => Requant {
                    multiplier: gen.range(1 << 30, i32::MAX),
                    shift: gen.range(-3, 1),
                },
                1 => Requant {
                    multiplier: gen.range(1 << 30, i32::MAX),
                    shift: gen.range(-24, -8),
                },
                2 if gen.next() % 4 == 0 => Requant {
                    multiplier: gen.range(1 << 30, i32::MAX),
                    shift: gen.range(1, 4),
                },
                _ => gen.requant(),
            })
            .collect();
        let multiplier: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
        let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
        let channels = ChannelQuant {
            bias: &bias,
            multiplier: &multiplier,
            shift: &shift,
        };
        let takes = c.positions <= MAX_POSITIONS;

        let zp8 = c.zp.clamp(-128, 127) as i8;
        let q = OutputQuant {
            zero_point: zp8,
            clamp: if c.relu {
                Clamp { min: zp8, max: 127 }
            } else {
                Clamp::FULL
            },
        };
        let (mut got, mut want) = (std::vec![7i8; c.n_out], std::vec![7i8; c.n_out]);
        let taken = dense(&channels, &Bounds::from(q), weights, &input, &mut got);
        prop_assert_eq!(taken, takes, "{:?}", c);
        reference::dense(&channels, &q, weights, &input, &mut want);
        if taken {
            prop_assert_eq!(&got, &want, "{:?}", c);
        }

        let q = WideOutputQuant {
            zero_point: c.zp,
            clamp: if c.relu {
                ClampI16 {
                    min: c.zp,
                    max: i16::MAX,
                }
            } else {
                ClampI16 {
                    min: i16::MIN,
                    max: i16::MAX,
                }
            },
        };
        let (mut got, mut want) = (std::vec![7i16; c.n_out], std::vec![7i16; c.n_out]);
        let taken = dense(&channels, &Bounds::from(q), weights, &input, &mut got);
        prop_assert_eq!(taken, takes, "{:?}", c);
        reference::dense_wide(&channels, &q, weights, &input, &mut want);
        if taken {
            prop_assert_eq!(&got, &want, "{:?}", c);
        }
        Ok(())
    }

    prop_compose! {
        fn case(max_in: usize)(n_in in 1usize..=max_in, n_out in 1usize..=40,
                               positions in prop_oneof![4 => 1usize..=4, 1 => 250usize..=260],
                               offset in 0usize..16, zp in any::<i16>(), relu in any::<bool>(),
                               constant in prop_oneof![4 => Just(None), 1 => Just(Some(i8::MIN)), 1 => Just(Some(i8::MAX))],
                               seed in any::<u64>()) -> Case {
            Case { n_in, n_out, positions, offset, zp, relu, constant, seed }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every tail length (`n_in` not a multiple of 16), short last blocks of rows, weights
        /// at every alignment, pooled positions (up to the extreme sums, and past
        /// [`MAX_POSITIONS`]: refused), both output types, both output stages: byte-identical
        /// to the reference.
        #[test]
        fn equals_the_reference(c in case(300)) {
            check(c)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// Inputs beyond the small buffer (the large one), up to [`MAX_IN`].
        #[test]
        fn long_inputs_equal_the_reference(mut c in case(MAX_IN - 16), long in (SMALL - 40)..=(MAX_IN - 16)) {
            c.n_in = long;
            c.n_out = c.n_out.min(12);
            c.positions = c.positions.min(2);
            check(c)?;
        }

        /// Operands it does not take are refused, never a panic: longer inputs, no whole
        /// position, missing channel constants.
        #[test]
        fn refuses_what_it_cannot_take(n_in in 1usize..=20, n_out in 1usize..=12, cut in 0usize..=3, which in 0u8..4) {
            let n_in_long = if which == 0 { MAX_IN } else { n_in };
            let weights = std::vec![1i8; n_in_long * n_out];
            let input = std::vec![1i8; if which == 1 { n_in_long - 1 } else { n_in_long }];
            let len = |k: u8| if which == k { n_out.saturating_sub(cut.max(1)) } else { n_out };
            let (bias, m, s) = (std::vec![0; len(2)], std::vec![1 << 30; len(3)], std::vec![-1; n_out]);
            let c = ChannelQuant { bias: &bias, multiplier: &m, shift: &s };
            let bounds = Bounds { zero_point: 0, min: -128, max: 127 };
            let mut y = std::vec![5i8; n_out];
            prop_assert!(!dense(&c, &bounds, &weights, &input, &mut y));
            prop_assert!(y.iter().all(|&v| v == 5));
        }
    }

    #[test]
    fn this_host_runs_the_avx2_path() {
        assert!(
            crate::kernels::x86::available(),
            "the test host has no AVX2: the kernel above was not tested"
        );
    }
}
