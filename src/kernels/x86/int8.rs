//! int8 and 16×8 convolutions for x86_64 hosts (AVX2): the results of
//! [`reference::int8::conv`](crate::kernels::reference::int8::conv), byte for byte.
//!
//! The fast int8 loops of [`fast::conv`](crate::kernels::fast::conv) are shaped for Cortex-M
//! (two output channels per pass, a short dot product per kernel row); on x86 their time went to
//! loop overhead rather than to multiplications. These kernels have the f32 kernels' shape
//! instead ([`super`]): register tiles of output channels across int32 lanes by several output
//! pixels.
//!
//! - **Regular** (`groups == 1`): each output pixel's window (`kh · kw · in_c` values, taps in
//!   the padding reading the pad values or the zero point, as the reference) is gathered once,
//!   widened to int16, into a row of its own; the weights of a block of 16 (or 8) output
//!   channels are packed once per call as int16 pairs `[pair][channel][2]`. A tile multiplies a
//!   pair of window values (one broadcast 32-bit word) with a vector of eight channels' weight
//!   pairs in one `vpmaddwd`: 16 products per instruction, exact (an int16 · int8 product is at
//!   most 2^22 in magnitude, a pair sum 2^23), and the int32 sums wrap like the reference's
//!   `wrapping_add`, so their order does not matter. Where the CPU has AVX512-VNNI (with VL,
//!   256-bit encodings), `vpdpwssd` does the multiply and the add in one instruction ([`vnni`]).
//! - **Depthwise** (`groups == in_c == out_c > 1`): whole blocks of 16 channels with two taps
//!   per `vpmaddwd` ([`depthwise`]); the channels left over eight per vector, values
//!   sign-extended to int32 lanes and multiplied by weights held in the low half of each lane
//!   (`vpmaddwd` with a zero high half is one exact product per lane).
//! - **Addition** ([`add`], the residual `Add`): eight elements per step.
//! - **Dense** ([`dense`], fully connected layers): eight weight rows per block against the
//!   input widened once per call, the same sums and output stage.
//!
//! The output stage is the reference's arithmetic lane by lane ([`Requant8`], one channel's
//! factor per lane, for every factor below 1; [`Stage`] and [`Bounds`] one output at a time
//! for any other).
//!
//! They run only when the CPU has AVX2 ([`super::available`]) and the operands are consistent
//! (checked once per call, so the pointer loops below stay in bounds); otherwise [`conv`] and
//! [`add`] return `false` and the caller runs its own loops. The runtime stays allocation-free:
//! weights are packed and windows gathered into stack buffers (about 112 KiB) once per call.
//!
//! Tests: the property tests below compare every path (both sums, both output stages, views,
//! int8 and int16 inputs and outputs) with the reference kernels.
#![allow(unsafe_code)]

use core::any::Any;
use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use crate::kernels::fast::conv::{Conv, Lanes};
use crate::kernels::fast::requant::{Bounds, Stage};
use crate::kernels::reference::int8::elementwise::AddQuant;
use crate::kernels::reference::int8::{Element, FromWide};
use crate::kernels::reference::window_coord;
use crate::quant::{Requant, ADD_LEFT_SHIFT};

pub mod dense;
mod depthwise;

/// int16 weights in the packing buffer (64 KiB of stack).
const PACK_CAP: usize = 32 * 1024;

/// Longest window (`kh · kw · in_c`, rounded up to even) the regular convolution takes.
pub const MAX_WINDOW: usize = 2048;

/// Output pixels whose windows are gathered at a time (48 KiB of stack at [`MAX_WINDOW`]).
const TILE: usize = 12;

/// Channel blocks packed at a time (their output stages are prepared together).
const MAX_BLOCKS: usize = 16;

/// Kernel taps of the depthwise convolution: the f32 depthwise kernel's limit (they share
/// [`super::dw_columns`]).
use super::DW_MAX_TAPS;

/// Runs `c` into `output` and returns `true` if this module takes it (AVX2 present, a regular or
/// depthwise convolution with consistent operands); `false`, nothing written, otherwise.
pub fn conv<X: Lanes, Y: FromWide + 'static>(c: &Conv<'_, X>, output: &mut [Y]) -> bool {
    if !super::available() {
        return false;
    }
    let Some(s) = Shape::check(c, output.len()) else {
        return false;
    };
    if s.depthwise {
        // SAFETY: AVX2 present; `Shape::check` checked every length the loops rely on.
        unsafe { depthwise_avx2(&s, c, output) };
    } else {
        // SAFETY: as above.
        unsafe { regular_avx2(&s, c, output) };
    }
    true
}

/// The operand sizes of a convolution this module takes, all checked against the slices.
struct Shape {
    in_h: usize,
    in_w: usize,
    in_c: usize,
    /// Elements from one input pixel to the next (`in_c`, or a channel slice's wider storage:
    /// the slice read in place).
    in_stride: usize,
    out_h: usize,
    out_w: usize,
    out_c: usize,
    /// `out_h · out_w`.
    pixels: usize,
    /// `kh · kw`.
    taps: usize,
    /// Values of one window: `taps · in_c` (regular) or `taps` (depthwise).
    window: usize,
    /// `window` rounded up to even (whole int16 pairs; the last pair's odd value is zero).
    padded: usize,
    /// Elements from one output pixel to the next (`out_c`, or a view's wider stride).
    out_stride: usize,
    depthwise: bool,
    /// A 1x1 kernel, stride 1, no padding, the input's height and width, an even number of
    /// input channels: output pixel `q`'s window is input pixel `q`, whole int16 pairs.
    pointwise: bool,
}

impl Shape {
    fn check<X>(c: &Conv<'_, X>, output_len: usize) -> Option<Shape> {
        let g = c.geometry;
        let ([in_h, in_w, in_c], [out_h, out_w, out_c]) = c.dims;
        let depthwise = g.groups > 1 && g.groups == in_c && g.groups == out_c;
        let no_stride = g.stride.contains(&0) || g.dilation.contains(&0);
        if !(g.groups == 1 || depthwise) || in_c == 0 || out_c == 0 || no_stride {
            return None;
        }
        let taps = g.kernel[0].checked_mul(g.kernel[1])?;
        let window = if depthwise {
            taps
        } else {
            taps.checked_mul(in_c)?
        };
        let padded = window.checked_add(window & 1)?;
        let pixels = out_h.checked_mul(out_w)?;
        let out_stride = g.out_stride(out_c);
        let out_span = pixels
            .checked_sub(1)?
            .checked_mul(out_stride)?
            .checked_add(out_c)?;
        // Input pixels `in_stride` apart (a channel slice read in place), the last `in_c` long.
        let in_stride = g.in_stride(in_c);
        let in_span = (in_h.checked_mul(in_w)?)
            .checked_sub(1)?
            .checked_mul(in_stride)?
            .checked_add(in_c)?;
        let ch = c.channels;
        let ok = taps > 0
            && out_stride >= out_c
            && output_len >= out_span
            && in_stride >= in_c
            && c.input.len() >= in_span
            && c.weights.len() >= out_c.checked_mul(window)?
            && ch.bias.len() >= out_c
            && ch.multiplier.len() >= out_c
            && ch.shift.len() >= out_c
            && (c.padding.values.is_empty() || c.padding.values.len() >= in_c)
            && if depthwise {
                taps <= DW_MAX_TAPS
            } else {
                padded <= MAX_WINDOW
            };
        ok.then_some(Shape {
            in_h,
            in_w,
            in_c,
            in_stride,
            out_h,
            out_w,
            out_c,
            pixels,
            taps,
            window,
            padded,
            out_stride,
            depthwise,
            pointwise: !depthwise
                && g.kernel == [1, 1]
                && g.stride == [1, 1]
                && g.pad == [0; 4]
                && [out_h, out_w] == [in_h, in_w]
                && in_c % 2 == 0
                // Consecutive pixels read as one run: a dense input only.
                && in_stride == in_c,
        })
    }
}

/// Output channel `o`'s folded bias and factor (`o < out_c`, checked).
#[inline]
fn channel<X>(c: &Conv<'_, X>, o: usize) -> (i32, Requant) {
    let ch = c.channels;
    let at = |v: &[i32]| v.get(o).copied().unwrap_or(0);
    let requant = Requant {
        multiplier: at(ch.multiplier),
        shift: at(ch.shift),
    };
    (at(ch.bias), requant)
}

/// The output stages of `N` channels (`N / 8` vectors): lane by lane ([`finish`]), and on
/// vectors ([`Requant8`]) when every factor has that form.
#[derive(Clone, Copy)]
struct Stages<const N: usize> {
    /// Each lane's bias and factor, for the lane-by-lane stage (used only without `vector`).
    scalar: [(i32, Requant); N],
    vector: Option<[Requant8; 2]>,
}

impl<const N: usize> Stages<N> {
    /// The stages of channels `o0..o0 + width` (`width <= N <= 16`); lanes past `width` get a
    /// harmless factor (their results are not stored).
    ///
    /// # Safety
    /// AVX2 present.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn new<X>(c: &Conv<'_, X>, o0: usize, width: usize) -> Stages<N> {
        let unused = (
            0,
            Requant {
                multiplier: 1 << 30,
                shift: -1,
            },
        );
        let mut raw = [unused; 16];
        for (j, r) in raw.iter_mut().take(width.min(N)).enumerate() {
            *r = channel(c, o0 + j);
        }
        let half = |k: usize| -> [(i32, Requant); 8] { core::array::from_fn(|j| raw[8 * k + j]) };
        // SAFETY: AVX2 present.
        let vector = unsafe {
            match Requant8::new(&half(0), &c.bounds) {
                // A block of eight channels stores one vector: its second stage is never read.
                Some(a) if N <= 8 => Some([a, a]),
                Some(a) => Requant8::new(&half(1), &c.bounds).map(|b| [a, b]),
                None => None,
            }
        };
        // The lane-by-lane stages are worked out when used (factors of 1 or more, rare): a
        // block is set up once per call (per band of rows for a layer run in place), and they
        // cost as much as a small depthwise block's arithmetic.
        let scalar = core::array::from_fn(|j| raw[j]);
        Stages { scalar, vector }
    }

    /// Stores `V` vectors of accumulators as channels `..width` at `out`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store<const V: usize, Y: FromWide + 'static>(
        &self,
        acc: &[__m256i; V],
        bounds: &Bounds,
        out: &mut [Y],
    ) {
        let mut lanes = [0i32; 16];
        match &self.vector {
            Some(vector) => {
                // Clamped to the output bounds: int16 values, in lanes 0..8·V (the rest 0).
                let mut v = [_mm256_setzero_si256(); 2];
                for ((v, a), r) in v.iter_mut().zip(acc).zip(vector) {
                    *v = r.apply(*a);
                }
                let ys: [Y; 16] = narrow(v);
                if out.len() == 8 * V {
                    // A whole block: one move of a known size, not a loop over the lanes.
                    out.copy_from_slice(&ys[..8 * V]);
                } else {
                    for (y, v) in out.iter_mut().zip(ys) {
                        *y = v;
                    }
                }
            }
            None => {
                for (v, a) in acc.iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().add(8 * v).cast(), *a) };
                }
                for ((y, a), &(bias, r)) in out.iter_mut().zip(lanes).zip(&self.scalar) {
                    *y = finish(a, &(bias, Stage::new(r)), bounds);
                }
            }
        }
    }
}

/// Sixteen int32 lanes holding int16 values (`v[0]`, then `v[1]`) as `Y`, lane by lane
/// [`FromWide::from_wide`]. For int8 and int16 outputs (the types the engine runs) in the vector
/// registers: the lanes are packed to int16 (exact: they are int16 values) and, for int8, packed
/// again with signed saturation, which is `FromWide for i8`'s conversion. Lane by lane this was
/// about a quarter of an int8 MobileNetV1 inference (an extract, two compares and a store per
/// lane). `Y` is found by its type (`Any`), so no memory is reinterpreted.
#[inline]
#[target_feature(enable = "avx2")]
fn narrow<Y: FromWide + 'static>(v: [__m256i; 2]) -> [Y; 16] {
    // `[a0..4, b0..4 | a4..8, b4..8]`, reordered to `[a0..8 | b0..8]`.
    let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(v[0], v[1]));
    let mut ys = [Y::from_wide(0); 16];
    let any: &mut dyn Any = &mut ys;
    if let Some(bytes) = any.downcast_mut::<[i8; 16]>() {
        let packed = _mm_packs_epi16(
            _mm256_castsi256_si128(words),
            _mm256_extracti128_si256::<1>(words),
        );
        // SAFETY: `bytes` holds 16 bytes; an unaligned store.
        unsafe { _mm_storeu_si128(bytes.as_mut_ptr().cast(), packed) };
    } else if let Some(halves) = any.downcast_mut::<[i16; 16]>() {
        // SAFETY: `halves` holds 16 int16 values (32 bytes); an unaligned store.
        unsafe { _mm256_storeu_si256(halves.as_mut_ptr().cast(), words) };
    } else {
        let mut lanes = [0i16; 16];
        // SAFETY: as above.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), words) };
        ys = lanes.map(Y::from_wide);
    }
    ys
}

/// `bias + acc`, requantized, offset, clamped and stored as `Y`: the reference's output stage.
#[inline(always)]
fn finish<Y: FromWide>(acc: i32, (bias, stage): &(i32, Stage), bounds: &Bounds) -> Y {
    Y::from_wide(bounds.apply(stage.scale(bias.wrapping_add(acc))) as i16)
}

/// The reference's output stage ([`finish`]) on eight int32 lanes, each with its own channel's
/// constants: bias, [`Requant::apply`], zero point and clamp, for factors with a positive
/// multiplier and a shift in `-31..=0` (every factor below 1, which is every factor a
/// convolution's or addition's output has in practice); [`Requant8::new`] refuses others and the
/// caller takes [`finish`] lane by lane.
///
/// With `r = −shift`, lane by lane in i64 (`|x · m| < 2^62`, no overflow):
/// - `r >= 1`: [`Scale::apply`](crate::kernels::fast::requant::Scale::apply), proved equal to
///   the reference there: `q = x·m + 2^30 + 2^(r+30) − [x < 0]·2^31`, result
///   `(q >> 32) >> (r − 1)`;
/// - `r == 0`: `floor((x·m + 2^30) / 2^31)` (the reference's rounding doubling high multiply,
///   which cannot saturate for `m > 0`, and no division), taken from bits 31..63 of `q`.
///
/// The zero point is added after clamping to `[min − zp, max − zp]`: the same as clamping
/// `x + zp` saturated, since the bounds are int16 values, without a saturating 32-bit add.
#[derive(Clone, Copy)]
struct Requant8 {
    bias: __m256i,
    multiplier: __m256i,
    /// `2^30 + 2^(r+30)` (or `2^30` where `r == 0`) of lanes 0, 2, 4, 6 and of 1, 3, 5, 7, as i64.
    init_even: __m256i,
    init_odd: __m256i,
    /// All ones in lanes with `r >= 1`: their sums round by sign.
    signed: __m256i,
    /// `r − 1` in lanes with `r >= 1`.
    shift: __m256i,
    /// All ones in lanes with `r == 0`.
    unshifted: __m256i,
    lo: __m256i,
    hi: __m256i,
    zero: __m256i,
}

impl Requant8 {
    /// The stage of eight lanes (`(bias, factor)` each), or `None` if a factor is outside the
    /// form above.
    ///
    /// # Safety
    /// AVX2 present.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn new(lanes: &[(i32, Requant); 8], bounds: &Bounds) -> Option<Requant8> {
        let v = |a: [i32; 8]| {
            // SAFETY: `a` has eight i32.
            unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
        };
        // SAFETY: AVX2 present.
        unsafe {
            Requant8::from_vectors(
                v(lanes.map(|(b, _)| b)),
                v(lanes.map(|(_, r)| r.multiplier)),
                v(lanes.map(|(_, r)| r.shift)),
                bounds,
            )
        }
    }

    /// [`Requant8::new`] from the lanes' biases, multipliers and shifts as vectors (a dense
    /// layer loads eight channels' constants straight from their arrays): every constant worked
    /// out on the vectors, a few instructions rather than a pass over the lanes.
    ///
    /// # Safety
    /// AVX2 present.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn from_vectors(
        bias: __m256i,
        multiplier: __m256i,
        shift: __m256i,
        bounds: &Bounds,
    ) -> Option<Requant8> {
        let zero = _mm256_setzero_si256();
        // A positive multiplier and a shift in -31..=0 in every lane.
        let ok = _mm256_andnot_si256(
            _mm256_cmpgt_epi32(shift, zero),
            _mm256_and_si256(
                _mm256_cmpgt_epi32(multiplier, zero),
                _mm256_cmpgt_epi32(shift, _mm256_set1_epi32(-32)),
            ),
        );
        if _mm256_movemask_epi8(ok) != -1 {
            return None;
        }
        // r = −shift in 0..=31.
        let right = _mm256_sub_epi32(zero, shift);
        let signed = _mm256_cmpgt_epi32(right, zero);
        // 2^30 + 2^(r+30) where r >= 1, 2^30 where r == 0, as i64 in lanes 0, 2, 4, 6 (and,
        // shifted down, 1, 3, 5, 7).
        // SAFETY (both): AVX2 present.
        let (init_even, init_odd) = unsafe {
            (
                rounding_init(right),
                rounding_init(_mm256_srli_epi64::<32>(right)),
            )
        };
        Some(Requant8 {
            bias,
            multiplier,
            init_even,
            init_odd,
            signed,
            shift: _mm256_max_epi32(_mm256_sub_epi32(right, _mm256_set1_epi32(1)), zero),
            unshifted: _mm256_cmpeq_epi32(right, zero),
            lo: _mm256_set1_epi32(bounds.min.wrapping_sub(bounds.zero_point)),
            hi: _mm256_set1_epi32(bounds.max.wrapping_sub(bounds.zero_point)),
            zero: _mm256_set1_epi32(bounds.zero_point),
        })
    }

    /// `clamp(zp + requant(bias + acc))` in each lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn apply(&self, acc: __m256i) -> __m256i {
        let x = _mm256_add_epi32(acc, self.bias);
        let even = _mm256_mul_epi32(x, self.multiplier);
        let odd = _mm256_mul_epi32(
            _mm256_srli_epi64::<32>(x),
            _mm256_srli_epi64::<32>(self.multiplier),
        );
        // −2^31 (as i64) where x < 0 and r >= 1.
        let negative = _mm256_and_si256(_mm256_srai_epi32::<31>(x), self.signed);
        let corr_even = _mm256_slli_epi64::<31>(_mm256_shuffle_epi32::<0b10_10_00_00>(negative));
        let corr_odd = _mm256_slli_epi64::<31>(_mm256_shuffle_epi32::<0b11_11_01_01>(negative));
        let q_even = _mm256_add_epi64(_mm256_add_epi64(even, self.init_even), corr_even);
        let q_odd = _mm256_add_epi64(_mm256_add_epi64(odd, self.init_odd), corr_odd);
        // r >= 1: the high words, shifted by r − 1.
        let high = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(q_even), q_odd);
        let shifted = _mm256_srav_epi32(high, self.shift);
        // r == 0: bits 31..63.
        let low = _mm256_blend_epi32::<0b1010_1010>(
            _mm256_srli_epi64::<31>(q_even),
            _mm256_slli_epi64::<32>(_mm256_srli_epi64::<31>(q_odd)),
        );
        let y = _mm256_blendv_epi8(shifted, low, self.unshifted);
        let y = _mm256_min_epi32(_mm256_max_epi32(y, self.lo), self.hi);
        _mm256_add_epi32(y, self.zero)
    }
}

/// [`Requant8`]'s rounding constants of four lanes as i64, from `r` in the low half of each
/// 64-bit lane (0..=31): `2^30 + 2^(r+30)` where `r >= 1`, `2^30` where `r == 0`.
///
/// # Safety
/// AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn rounding_init(r: __m256i) -> __m256i {
    let r = _mm256_and_si256(r, _mm256_set1_epi64x(0xffff_ffff));
    let pow = _mm256_sllv_epi64(
        _mm256_set1_epi64x(1),
        _mm256_add_epi64(r, _mm256_set1_epi64x(30)),
    );
    let pow = _mm256_and_si256(pow, _mm256_cmpgt_epi64(r, _mm256_setzero_si256()));
    _mm256_add_epi64(pow, _mm256_set1_epi64x(1 << 30))
}

/// Writes `src` widened to int16 into `dst` (the shorter of the two).
#[inline(always)]
fn widen_into<X: Element>(dst: &mut [MaybeUninit<i16>], src: &[X]) {
    let n = src.len().min(dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        // int8 and int16 values fit int16.
        *d = MaybeUninit::new(s.widen() as i16);
    }
    // Only for operands `Shape::check` would refuse: every value of a window is written.
    for d in dst.iter_mut().skip(n) {
        *d = MaybeUninit::new(0);
    }
}

/// What a tap in the padding reads, into `dst` (`in_c` values): the pad values or the zero point.
#[inline(always)]
fn pad_into<X: Element>(c: &Conv<'_, X>, dst: &mut [MaybeUninit<i16>]) {
    if c.padding.values.is_empty() {
        let zero = c.padding.zero.widen() as i16;
        dst.iter_mut().for_each(|d| *d = MaybeUninit::new(zero));
    } else {
        widen_into(dst, c.padding.values);
    }
}

/// Output pixel `q`'s window, `[ky][kx][in_c]` as the weights, widened into `row[..padded]`.
#[inline(always)]
fn gather<X: Element>(s: &Shape, c: &Conv<'_, X>, q: usize, row: &mut [MaybeUninit<i16>]) {
    let g = c.geometry;
    let (oy, ox) = (q / s.out_w, q % s.out_w);
    let [kh, kw] = g.kernel;
    let run = kw * s.in_c;
    let col = |kx: usize| window_coord(ox, g.stride[1], kx, g.dilation[1], g.pad[1], s.in_w);
    for (ky, dst) in row.chunks_exact_mut(run).take(kh).enumerate() {
        let iy = window_coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], s.in_h);
        let Some(iy) = iy else {
            for tap in dst.chunks_exact_mut(s.in_c) {
                pad_into(c, tap);
            }
            continue;
        };
        // Adjacent columns, all inside: the kernel row's inputs are one contiguous run (of a
        // dense input; a slice read in place has other channels between its pixels).
        if kw == 1 || (g.dilation[1] == 1 && s.in_stride == s.in_c) {
            if let (Some(first), Some(_)) = (col(0), col(kw - 1)) {
                let at = (iy * s.in_w + first) * s.in_stride;
                widen_into(dst, c.input.get(at..).unwrap_or_default());
                continue;
            }
        }
        for (kx, tap) in dst.chunks_exact_mut(s.in_c).enumerate() {
            match col(kx) {
                Some(ix) => {
                    let at = (iy * s.in_w + ix) * s.in_stride;
                    widen_into(tap, c.input.get(at..).unwrap_or_default());
                }
                None => pad_into(c, tap),
            }
        }
    }
    if let Some(last) = row.get_mut(s.window..s.padded) {
        last.iter_mut().for_each(|d| *d = MaybeUninit::new(0));
    }
}

/// A block of output channels `o0..o0 + width` in `V` vectors of eight, with its packed weights
/// at `pack[at..at + padded · 8 · V]`.
#[derive(Clone, Copy)]
struct Block {
    o0: usize,
    width: usize,
    vectors: usize,
    at: usize,
}

/// Packs pairs `..pairs` (a multiple of 8) of eight channels' windows (`window` values each, from
/// `weights`) as int16 pairs, pair `p` of channel `j` at `dst[p · 2 · lanes + 2j..][..2]`: the
/// layout of the scalar packing in [`regular_avx2`], eight pairs of eight channels per step
/// (widened to int16, then an 8x8 transpose of 32-bit pairs). Packed one value at a time this was
/// a fifth of an int8 MobileNetV1 inference.
///
/// # Safety
/// AVX2 present; `weights` holds `8 · window` values, `pairs · 2 <= window`; `dst` is writable at
/// `p · 2 · lanes + ..16` for every `p < pairs`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn pack_pairs(weights: &[i8], window: usize, pairs: usize, lanes: usize, dst: *mut i16) {
    debug_assert!(weights.len() >= 8 * window && 2 * pairs <= window && pairs % 8 == 0);
    let src = weights.as_ptr();
    for p0 in (0..pairs).step_by(8) {
        // Row j: channel j's pairs p0..p0 + 8 as int16 values (one 32-bit word per pair).
        // SAFETY: channel j's values 2·p0..2·p0 + 16 are inside its window (2·pairs <= window).
        let r: [__m256i; 8] = core::array::from_fn(|j| unsafe {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(src.add(j * window + 2 * p0).cast()))
        });
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        // u[k]: channels 0..4 (or 4..8) of pairs k and k + 4.
        let u = [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ];
        let v = [
            _mm256_unpacklo_epi64(t4, t6),
            _mm256_unpackhi_epi64(t4, t6),
            _mm256_unpacklo_epi64(t5, t7),
            _mm256_unpackhi_epi64(t5, t7),
        ];
        for k in 0..4 {
            let low = _mm256_permute2x128_si256::<0x20>(u[k], v[k]);
            let high = _mm256_permute2x128_si256::<0x31>(u[k], v[k]);
            // SAFETY: pairs p0 + k and p0 + k + 4 < pairs: writable (the caller's guarantee).
            unsafe {
                _mm256_storeu_si256(dst.add((p0 + k) * 2 * lanes).cast(), low);
                _mm256_storeu_si256(dst.add((p0 + k + 4) * 2 * lanes).cast(), high);
            }
        }
    }
}

/// Regular convolution (`groups == 1`).
///
/// # Safety
/// AVX2 present; `s` checked by [`Shape::check`] against `c` and `output`, `!s.depthwise`.
#[target_feature(enable = "avx2")]
unsafe fn regular_avx2<X: Lanes, Y: FromWide + 'static>(
    s: &Shape,
    c: &Conv<'_, X>,
    output: &mut [Y],
) {
    let mut pack = [MaybeUninit::<i16>::uninit(); PACK_CAP];
    let mut rows = [[MaybeUninit::<i16>::uninit(); MAX_WINDOW]; TILE];
    let mut o0 = 0;
    while o0 < s.out_c {
        // Pack as many blocks as fit, with their output stages.
        let mut blocks = [Block {
            o0: 0,
            width: 0,
            vectors: 0,
            at: 0,
        }; MAX_BLOCKS];
        // SAFETY: AVX2 present.
        let mut stages: [Option<Stages<16>>; MAX_BLOCKS] = [None; MAX_BLOCKS];
        let mut n_blocks = 0;
        let mut used = 0;
        while o0 < s.out_c && n_blocks < MAX_BLOCKS {
            let left = s.out_c - o0;
            let vectors = if left <= 8 { 1 } else { 2 };
            let lanes = 8 * vectors;
            let size = s.padded * lanes;
            if used + size > PACK_CAP {
                break;
            }
            let width = left.min(lanes);
            // [pair][lane][2]: window value t of channel j at (t / 2) · 2 · lanes + 2j + t % 2,
            // zero past the window and in lanes past the block's channels.
            let dst = pack[used..used + size].as_mut_ptr().cast::<i16>();
            for group in 0..vectors {
                let first = 8 * group;
                // Whole groups of eight channels: 16 window values (8 pairs) at a time on
                // vectors, the rest of each window value by value.
                let whole = first + 8 <= width
                    && c.weights.len() >= (o0 + first + 8).saturating_mul(s.window);
                let vector_pairs = if whole { s.window / 16 * 8 } else { 0 };
                if vector_pairs > 0 {
                    // SAFETY: AVX2 present; channels o0 + first..+8 have whole windows in
                    // `c.weights` (checked); pairs ..vector_pairs < padded / 2 and lanes
                    // first..first + 8 <= lanes lie inside pack[used..][..size].
                    unsafe {
                        pack_pairs(
                            &c.weights[(o0 + first) * s.window..],
                            s.window,
                            vector_pairs,
                            lanes,
                            dst.add(2 * first),
                        )
                    };
                }
                for j in first..first + 8 {
                    let from = (o0 + j) * s.window;
                    let w = match c.weights.get(from..from + s.window) {
                        Some(w) if j < width => w,
                        _ => &[],
                    };
                    let mut t = 2 * vector_pairs;
                    let mut pairs = w.get(t..).unwrap_or_default().chunks_exact(2);
                    for pair in pairs.by_ref() {
                        // SAFETY: pair t / 2 < padded / 2, lane j < lanes: inside
                        // pack[used..][..size].
                        unsafe {
                            dst.add(t * lanes + 2 * j).write(i16::from(pair[0]));
                            dst.add(t * lanes + 2 * j + 1).write(i16::from(pair[1]));
                        }
                        t += 2;
                    }
                    let last = pairs.remainder().first().map_or(0, |&w| i16::from(w));
                    let mut odd = w.len() % 2 == 1;
                    while t < s.padded {
                        // SAFETY: as above.
                        unsafe {
                            dst.add(t * lanes + 2 * j).write(if odd { last } else { 0 });
                            dst.add(t * lanes + 2 * j + 1).write(0);
                        }
                        odd = false;
                        t += 2;
                    }
                }
            }
            // SAFETY: AVX2 present.
            stages[n_blocks] = Some(unsafe { Stages::new(c, o0, width) });
            blocks[n_blocks] = Block {
                o0,
                width,
                vectors,
                at: used,
            };
            n_blocks += 1;
            used += size;
            o0 += width;
        }
        if n_blocks == 0 {
            // Unreachable: one block of 16 channels of a window of MAX_WINDOW fits PACK_CAP.
            return;
        }
        let blocks = &blocks[..n_blocks];
        let mut q = 0;
        while q < s.pixels {
            let n = (s.pixels - q).min(TILE);
            // The windows of pixels q..q + n, `stride` values apart.
            let (rows_ptr, stride) = if s.pointwise && X::WIDE {
                // Pixel q's window is input pixel q: read in place.
                (X::as_i16(c.input).as_ptr().wrapping_add(q * s.in_c), s.in_c)
            } else if s.pointwise {
                // n contiguous input pixels, widened in one pass.
                let flat = rows.as_flattened_mut();
                let from = c.input.get(q * s.in_c..).unwrap_or_default();
                // n · in_c <= TILE · MAX_WINDOW (in_c <= MAX_WINDOW, checked): the whole range.
                let len = (n * s.in_c).min(flat.len());
                widen_into(&mut flat[..len], from);
                (rows.as_ptr().cast::<i16>(), s.in_c)
            } else {
                for (px, row) in rows.iter_mut().take(n).enumerate() {
                    gather(s, c, q + px, &mut row[..s.padded]);
                }
                (rows.as_ptr().cast::<i16>(), MAX_WINDOW)
            };
            // rows_ptr + px · stride holds pixel q + px's `padded` window values for px < n:
            // widened or gathered above, or (int16 pointwise) input pixel q + px itself.
            for (b, st) in blocks.iter().zip(stages.iter().flatten()) {
                // SAFETY: pack[b.at..] holds b's packed weights (written above).
                let w = pack.as_ptr().cast::<i16>().wrapping_add(b.at);
                let mut px = 0;
                while px < n {
                    let left = n - px;
                    let rows_at = rows_ptr.wrapping_add(px * stride);
                    // SAFETY (each call): AVX2 present; P rows from rows_at are gathered
                    // (px + P <= n); w holds padded / 2 pairs of 8 · V lanes.
                    let step = unsafe {
                        match (b.vectors, left) {
                            (2, 6..) => tile::<2, 6, X, Y>(
                                s,
                                c,
                                b,
                                st,
                                (rows_at, stride),
                                w,
                                q + px,
                                output,
                            ),
                            (2, 2..) => tile::<2, 2, X, Y>(
                                s,
                                c,
                                b,
                                st,
                                (rows_at, stride),
                                w,
                                q + px,
                                output,
                            ),
                            (2, _) => tile::<2, 1, X, Y>(
                                s,
                                c,
                                b,
                                st,
                                (rows_at, stride),
                                w,
                                q + px,
                                output,
                            ),
                            (_, 12..) => tile::<1, 12, X, Y>(
                                s,
                                c,
                                b,
                                st,
                                (rows_at, stride),
                                w,
                                q + px,
                                output,
                            ),
                            (_, 4..) => tile::<1, 4, X, Y>(
                                s,
                                c,
                                b,
                                st,
                                (rows_at, stride),
                                w,
                                q + px,
                                output,
                            ),
                            _ => tile::<1, 1, X, Y>(
                                s,
                                c,
                                b,
                                st,
                                (rows_at, stride),
                                w,
                                q + px,
                                output,
                            ),
                        }
                    };
                    px += step;
                }
            }
            q += n;
        }
    }
}

/// `P` output pixels from `q` (their windows at `rows`, `MAX_WINDOW` apart) by the `V` vectors
/// of block `b`; returns `P`.
///
/// # Safety
/// AVX2 present; `s` checked; `rows` holds `P` gathered windows; `w` holds `b`'s packed weights;
/// `q + P <= s.pixels`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tile<const V: usize, const P: usize, X: Lanes, Y: FromWide + 'static>(
    s: &Shape,
    c: &Conv<'_, X>,
    b: &Block,
    stages: &Stages<16>,
    (rows, stride): (*const i16, usize),
    w: *const i16,
    q: usize,
    output: &mut [Y],
) -> usize {
    // SAFETY: the caller's guarantees are `accumulate`'s; `vnni()` checked the CPU.
    let acc = unsafe {
        #[cfg(icefold_vnni)]
        if vnni() {
            accumulate_vnni::<V, P>(rows, stride, w, s.padded / 2)
        } else {
            accumulate::<V, P>(rows, stride, w, s.padded / 2)
        }
        #[cfg(not(icefold_vnni))]
        accumulate::<V, P>(rows, stride, w, s.padded / 2)
    };
    for (px, acc) in acc.iter().enumerate() {
        let at = (q + px) * s.out_stride + b.o0;
        if let Some(out) = output.get_mut(at..at + b.width) {
            // SAFETY: AVX2 present.
            unsafe { stages.store(acc, &c.bounds, out) };
        }
    }
    P
}

/// `acc[px][v] = Σ_i madd(w[i][v], rows[px][2i..2i + 2])` over `pairs` pairs: lane `j` of vector
/// `v` sums the products of channel `8v + j`'s weights and pixel `px`'s window.
///
/// # Safety
/// AVX2 present; `rows + px · stride` holds `2 · pairs` values for `px < P`; `w` holds
/// `pairs · 16 · V` values.
// Not inlined: its loop then has the sixteen vector registers to itself (12 accumulators of the
// 16x6 tile, 2 weights, a broadcast), as the f32 kernel's.
#[inline(never)]
#[target_feature(enable = "avx2")]
unsafe fn accumulate<const V: usize, const P: usize>(
    rows: *const i16,
    stride: usize,
    w: *const i16,
    pairs: usize,
) -> [[__m256i; V]; P] {
    let mut acc = [[_mm256_setzero_si256(); V]; P];
    for i in 0..pairs {
        let mut wv = [_mm256_setzero_si256(); V];
        for (v, wv) in wv.iter_mut().enumerate() {
            // SAFETY: pair i < pairs of 16 · V packed weights.
            *wv = unsafe { _mm256_loadu_si256(w.add((i * V + v) * 16).cast()) };
        }
        for (px, acc_px) in acc.iter_mut().enumerate() {
            // SAFETY: values 2i, 2i + 1 of window px (2i + 2 <= 2 · pairs).
            let pair = unsafe { rows.add(px * stride + 2 * i).cast::<i32>().read_unaligned() };
            let x = _mm256_set1_epi32(pair);
            for (a, wv) in acc_px.iter_mut().zip(&wv) {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(*wv, x));
            }
        }
    }
    acc
}

/// [`accumulate`] with AVX-512 VNNI on 256-bit vectors: `vpdpwssd` is `vpmaddwd` and the
/// add in one instruction (the same wrapping int32 sums), half the instructions of the tile.
///
/// # Safety
/// As [`accumulate`], and AVX512-VNNI and AVX512-VL present ([`vnni`]).
#[cfg(icefold_vnni)]
#[allow(clippy::incompatible_msrv)]
#[inline(never)]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
unsafe fn accumulate_vnni<const V: usize, const P: usize>(
    rows: *const i16,
    stride: usize,
    w: *const i16,
    pairs: usize,
) -> [[__m256i; V]; P] {
    let mut acc = [[_mm256_setzero_si256(); V]; P];
    for i in 0..pairs {
        let mut wv = [_mm256_setzero_si256(); V];
        for (v, wv) in wv.iter_mut().enumerate() {
            // SAFETY: pair i < pairs of 16 · V packed weights.
            *wv = unsafe { _mm256_loadu_si256(w.add((i * V + v) * 16).cast()) };
        }
        for (px, acc_px) in acc.iter_mut().enumerate() {
            // SAFETY: values 2i, 2i + 1 of window px (2i + 2 <= 2 · pairs).
            let pair = unsafe { rows.add(px * stride + 2 * i).cast::<i32>().read_unaligned() };
            let x = _mm256_set1_epi32(pair);
            for (a, wv) in acc_px.iter_mut().zip(&wv) {
                *a = _mm256_dpwssd_epi32(*a, *wv, x);
            }
        }
    }
    acc
}

/// Whether the CPU has AVX512-VNNI with 256-bit (VL) encodings and the OS saves the AVX-512
/// state: CPUID leaf 7 ECX bit 11, and `cpufeatures`' AVX512-VL check (CPUID and XGETBV).
/// Detected once, then an atomic load. Built only where the compiler has the AVX-512 target
/// features (Rust 1.89 and later: `build.rs` sets `icefold_vnni`); older compilers take the AVX2
/// sums.
#[cfg_attr(not(icefold_vnni), allow(dead_code))]
fn vnni() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    static VNNI: AtomicU8 = AtomicU8::new(0);
    #[cfg(test)]
    if tests::NO_VNNI.with(|n| n.get()) {
        return false;
    }
    match VNNI.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            cpufeatures::new!(avx512vl, "avx512f", "avx512vl");
            // Leaf 7 only where the CPU has it.
            // SAFETY: CPUID exists on every x86_64 CPU (an `unsafe fn` before Rust 1.89).
            #[allow(unused_unsafe)]
            let has = avx512vl::get()
                && unsafe { __cpuid(0).eax >= 7 && __cpuid_count(7, 0).ecx & (1 << 11) != 0 };
            VNNI.store(if has { 2 } else { 1 }, Ordering::Relaxed);
            has
        }
    }
}

/// Depthwise convolution (see the module docs): eight channels per vector, up to eight pixels of
/// a row at a time.
///
/// Which pixels of a row chunk read an input column (rather than the padding) at tap column `kx`
/// depends only on the chunk's first column and `kx`, not on the row: it is worked out once per
/// chunk and tap column ([`columns`]), as in the f32 kernel.
///
/// # Safety
/// AVX2 present; `s` checked by [`Shape::check`] against `c` and `output`, `s.depthwise`.
#[target_feature(enable = "avx2")]
unsafe fn depthwise_avx2<X: Lanes, Y: FromWide + 'static>(
    s: &Shape,
    c: &Conv<'_, X>,
    output: &mut [Y],
) {
    // Whole blocks of 16 channels with the taps in pairs; the rest 8 channels at a time.
    // SAFETY: as this function's.
    let mut c0 = unsafe { depthwise::whole_blocks(s, c, output) };
    let mut weights = [_mm256_setzero_si256(); DW_MAX_TAPS];
    while c0 < s.in_c {
        let width = (s.in_c - c0).min(8);
        // [tap] vectors of the block's channels, each weight in the low half of its lane (zero
        // past the last channel).
        for (t, wv) in weights.iter_mut().take(s.taps).enumerate() {
            let mut lane = [0i32; 8];
            for (j, l) in lane.iter_mut().take(width).enumerate() {
                let w = c.weights.get((c0 + j) * s.taps + t).copied().unwrap_or(0);
                *l = i32::from(i16::from(w) as u16);
            }
            // SAFETY: `lane` has 8 values.
            *wv = unsafe { _mm256_loadu_si256(lane.as_ptr().cast()) };
        }
        // SAFETY: AVX2 present.
        let stages = unsafe { Stages::<8>::new(c, c0, width) };
        let pad = if c.padding.values.is_empty() {
            _mm256_set1_epi32(c.padding.zero.widen())
        } else {
            // SAFETY: AVX2 present.
            unsafe { load8(c.padding.values, c0) }
        };
        let block = DwBlock {
            c0,
            width,
            pad,
            weights: &weights,
            stages: &stages,
        };
        let mut ox = 0;
        while ox < s.out_w {
            let n = (s.out_w - ox).min(8);
            // SAFETY (each call): AVX2 present, `s` checked, ox + P <= out_w.
            unsafe {
                match n {
                    8 => dw_chunk::<8, X, Y>(s, c, &block, output, ox),
                    7 => dw_chunk::<7, X, Y>(s, c, &block, output, ox),
                    6 => dw_chunk::<6, X, Y>(s, c, &block, output, ox),
                    5 => dw_chunk::<5, X, Y>(s, c, &block, output, ox),
                    4 => dw_chunk::<4, X, Y>(s, c, &block, output, ox),
                    3 => dw_chunk::<3, X, Y>(s, c, &block, output, ox),
                    2 => dw_chunk::<2, X, Y>(s, c, &block, output, ox),
                    _ => dw_chunk::<1, X, Y>(s, c, &block, output, ox),
                }
            }
            ox += n;
        }
        c0 += width;
    }
}

/// One block of up to eight depthwise channels.
struct DwBlock<'a> {
    c0: usize,
    width: usize,
    /// What a padded tap reads: the block's pad values or the zero point, as int32 lanes.
    pad: __m256i,
    /// `[tap]` vectors of the block's weights.
    weights: &'a [__m256i; DW_MAX_TAPS],
    /// Bias and output stage of each channel.
    stages: &'a Stages<8>,
}

/// The eight values of `x` from `at`, sign-extended to int32 lanes (zero past the end of `x`).
///
/// # Safety
/// AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load8<X: Lanes>(x: &[X], at: usize) -> __m256i {
    let mut copy = [0i16; 8];
    let eight: &[X] = match x.get(at..at.saturating_add(8)) {
        Some(eight) => eight,
        None => {
            // The last pixel's last block: fewer than eight values are left.
            let tail = x.get(at..).unwrap_or_default();
            for (d, v) in copy.iter_mut().zip(tail) {
                *d = v.widen() as i16;
            }
            // SAFETY: AVX2 present; `copy` has eight int16 values.
            return unsafe { _mm256_cvtepi16_epi32(_mm_loadu_si128(copy.as_ptr().cast())) };
        }
    };
    // SAFETY: `eight` has eight values of X, 8 bytes (int8) or 16 (int16).
    unsafe {
        if X::WIDE {
            _mm256_cvtepi16_epi32(_mm_loadu_si128(eight.as_ptr().cast()))
        } else {
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(eight.as_ptr().cast()))
        }
    }
}

/// The eight values at `x`, sign-extended to int32 lanes.
///
/// # Safety
/// AVX2 present; `x[..8]` readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load8_unchecked<X: Lanes>(x: *const X) -> __m256i {
    // SAFETY: eight values of X at x, 8 bytes (int8) or 16 (int16).
    unsafe {
        if X::WIDE {
            _mm256_cvtepi16_epi32(_mm_loadu_si128(x.cast()))
        } else {
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(x.cast()))
        }
    }
}

/// Depthwise outputs of every row at columns `ox..ox + P`, channels of `b`.
///
/// # Safety
/// AVX2 present; `s` checked with `s.depthwise`; `ox + P <= out_w`.
#[target_feature(enable = "avx2")]
unsafe fn dw_chunk<const P: usize, X: Lanes, Y: FromWide + 'static>(
    s: &Shape,
    c: &Conv<'_, X>,
    b: &DwBlock<'_>,
    output: &mut [Y],
    ox: usize,
) {
    let g = c.geometry;
    let [kh, kw] = g.kernel;
    let cols = super::dw_columns::<P>(s.in_w, g, ox);
    let sw = g.stride[1];
    for oy in 0..s.out_h {
        let mut acc = [_mm256_setzero_si256(); P];
        for ky in 0..kh {
            let taps = &b.weights[ky * kw..][..kw];
            let Some(iy) = window_coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], s.in_h)
            else {
                // A padding row: every tap reads the pad values.
                for w in taps {
                    for a in acc.iter_mut() {
                        *a = _mm256_add_epi32(*a, _mm256_madd_epi16(b.pad, *w));
                    }
                }
                continue;
            };
            let row = iy * s.in_w;
            for (w, &(lo, hi, col)) in taps.iter().zip(&cols) {
                for (k, a) in acc.iter_mut().enumerate() {
                    let x = if (lo..hi).contains(&k) {
                        // Pixel k reads input column col + k·sw in 0..in_w.
                        let ix = (col + (k * sw) as isize) as usize;
                        let at = (row + ix) * s.in_stride + b.c0;
                        if b.width == 8 {
                            // SAFETY: AVX2 present; channels c0..c0 + 8 <= in_c of input pixel
                            // (iy, ix), pixels in_stride apart, inside the input
                            // (`Shape::check`: the last pixel's in_c values).
                            unsafe { load8_unchecked(c.input.as_ptr().add(at)) }
                        } else {
                            // SAFETY: AVX2 present.
                            unsafe { load8(c.input, at) }
                        }
                    } else {
                        b.pad
                    };
                    // One exact product per lane: the weight's high half is zero.
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, *w));
                }
            }
        }
        for (k, a) in acc.iter().enumerate() {
            let at = (oy * s.out_w + ox + k) * s.out_stride + b.c0;
            if let Some(out) = output.get_mut(at..at + b.width) {
                // SAFETY: AVX2 present.
                unsafe { b.stages.store(&[*a], &c.bounds, out) };
            }
        }
    }
}

/// [`reference::int8::elementwise::add`](crate::kernels::reference::int8::elementwise::add)
/// on eight elements per step, if the CPU has AVX2 and the three factors have [`Requant8`]'s
/// form (an input's factor is at most 1/2 by construction, the output's far below 1); `false`,
/// nothing written, otherwise.
///
/// Per element as the reference: each input's `(q − zp) · 2^20` through its factor (no bias,
/// no clamp), the sum (which cannot saturate: both terms are below `255 · 2^20` in magnitude),
/// then the output stage.
pub fn add(quant: &AddQuant, a: &[i8], b: &[i8], output: &mut [i8]) -> bool {
    if !super::available() {
        return false;
    }
    // SAFETY: AVX2 present.
    let Some(stages) = (unsafe { AddStages::new(quant) }) else {
        return false;
    };
    // SAFETY: AVX2 present.
    unsafe { add_avx2(&stages, a, b, output) };
    true
}

/// The three stages of an addition and the input zero points, as vectors.
struct AddStages {
    zero_points: [__m256i; 2],
    inputs: [Requant8; 2],
    output: Requant8,
}

impl AddStages {
    /// # Safety
    /// AVX2 present.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn new(quant: &AddQuant) -> Option<AddStages> {
        let unbounded = Bounds {
            zero_point: 0,
            min: i32::MIN,
            max: i32::MAX,
        };
        let lanes = |r: Requant| [(0, r); 8];
        // SAFETY: AVX2 present.
        unsafe {
            Some(AddStages {
                zero_points: quant
                    .input_zero_points
                    .map(|z| _mm256_set1_epi32(i32::from(z))),
                inputs: [
                    Requant8::new(&lanes(quant.input_requant[0]), &unbounded)?,
                    Requant8::new(&lanes(quant.input_requant[1]), &unbounded)?,
                ],
                output: Requant8::new(&lanes(quant.output_requant), &Bounds::from(quant.output))?,
            })
        }
    }

    /// Eight sums, as int32 lanes in the int8 range.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn apply(&self, a: __m256i, b: __m256i) -> __m256i {
        let [zp_a, zp_b] = self.zero_points;
        let a = _mm256_slli_epi32::<ADD_LEFT_SHIFT>(_mm256_sub_epi32(a, zp_a));
        let b = _mm256_slli_epi32::<ADD_LEFT_SHIFT>(_mm256_sub_epi32(b, zp_b));
        let [r_a, r_b] = &self.inputs;
        self.output
            .apply(_mm256_add_epi32(r_a.apply(a), r_b.apply(b)))
    }
}

/// # Safety
/// AVX2 present.
#[target_feature(enable = "avx2")]
unsafe fn add_avx2(stages: &AddStages, a: &[i8], b: &[i8], output: &mut [i8]) {
    let n = output.len().min(a.len()).min(b.len());
    let (a, b, output) = (&a[..n], &b[..n], &mut output[..n]);
    let mut chunks = output.chunks_exact_mut(8);
    for ((out, a), b) in chunks
        .by_ref()
        .zip(a.chunks_exact(8))
        .zip(b.chunks_exact(8))
    {
        // SAFETY: each chunk has eight values.
        let (a, b) = unsafe {
            (
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(a.as_ptr().cast())),
                _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().cast())),
            )
        };
        // SAFETY: AVX2 present.
        out.copy_from_slice(&unsafe { narrow8(stages.apply(a, b)) });
    }
    let out = chunks.into_remainder();
    let done = n - out.len();
    let (mut ta, mut tb) = ([0i8; 8], [0i8; 8]);
    ta[..out.len()].copy_from_slice(&a[done..]);
    tb[..out.len()].copy_from_slice(&b[done..]);
    // SAFETY: eight values each.
    let (va, vb) = unsafe {
        (
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(ta.as_ptr().cast())),
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(tb.as_ptr().cast())),
        )
    };
    // SAFETY: AVX2 present.
    let y = unsafe { narrow8(stages.apply(va, vb)) };
    out.copy_from_slice(&y[..out.len()]);
}

/// Eight int32 lanes in the int8 range, as int8 values in order.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn narrow8(v: __m256i) -> [i8; 8] {
    let (lo, hi) = {
        // Saturating packs within each 128-bit half: bytes 0..4 of each half are its lanes.
        let p16 = _mm256_packs_epi32(v, v);
        let p8 = _mm256_packs_epi16(p16, p16);
        (
            _mm_cvtsi128_si32(_mm256_castsi256_si128(p8)),
            _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(p8)),
        )
    };
    let mut out = [0i8; 8];
    for (o, v) in out
        .iter_mut()
        .zip(lo.to_le_bytes().into_iter().chain(hi.to_le_bytes()))
    {
        *o = v as i8;
    }
    out
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::fast::conv::Padding;
    use crate::kernels::reference::int8::conv::{self as reference, WideConvQuant};
    use crate::kernels::reference::int8::testing::Gen;
    use crate::kernels::reference::int8::{ChannelQuant, ClampI16, WideOutputQuant};
    use crate::kernels::ConvGeometry;
    use proptest::prelude::*;
    use std::vec::Vec;

    std::thread_local! {
        /// Set: the convolution takes the AVX2 sums on a host with VNNI too.
        pub(super) static NO_VNNI: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    /// A random convolution and its data.
    #[derive(Debug, Clone)]
    struct Case {
        g: ConvGeometry,
        in_dims: [usize; 3],
        out_dims: [usize; 3],
        with_pad_values: bool,
        relu: bool,
        seed: u64,
    }

    fn out_len(size: usize, k: usize, s: usize, d: usize, pa: usize, pb: usize) -> Option<usize> {
        (size + pa + pb)
            .checked_sub(d * (k - 1) + 1)
            .map(|n| n / s + 1)
    }

    prop_compose! {
        /// Regular (twice as likely) or depthwise; `max_c` input channels at most.
        fn case(max_c: usize)(kind in 0u8..3, in_c in 1usize..=max_c, out_c in 1usize..=40,
                  kh in 1usize..=4, kw in 1usize..=4, sh in 1usize..=3, sw in 1usize..=3,
                  dh in 1usize..=2, dw in 1usize..=2, pad in proptest::array::uniform4(0usize..=2),
                  h in 1usize..=9, w in 1usize..=12, with_pad_values in any::<bool>(),
                  view in prop_oneof![Just(0usize), 1usize..=5], relu in any::<bool>(),
                  seed in any::<u64>())
            -> Option<Case>
        {
            let (groups, out_c) = if kind == 2 { (in_c.max(2), in_c.max(2)) } else { (1, out_c) };
            let in_c = if kind == 2 { out_c } else { in_c };
            let (kh, kw) = if kind != 2 && in_c * kh * kw > MAX_WINDOW { (1, 1) } else { (kh, kw) };
            let pixel_stride = if view == 0 { 0 } else { out_c + view };
            let g = ConvGeometry { out_pixel_stride: pixel_stride, kernel: [kh, kw], stride: [sh, sw], dilation: [dh, dw], pad, groups, in_pixel_stride: 0 };
            let oh = out_len(h, kh, sh, dh, pad[0], pad[2])?;
            let ow = out_len(w, kw, sw, dw, pad[1], pad[3])?;
            Some(Case { g, in_dims: [h, w, in_c], out_dims: [oh, ow, out_c], with_pad_values, relu, seed })
        }
    }

    prop_compose! {
        /// Pointwise convolutions (1x1, stride 1, unpadded): the windows are the input pixels.
        fn pointwise_case()(half in 1usize..=40, out_c in 1usize..=40, h in 1usize..=9,
                            w in 1usize..=9, view in prop_oneof![Just(0usize), 1usize..=5],
                            relu in any::<bool>(), seed in any::<u64>())
            -> Option<Case>
        {
            let pixel_stride = if view == 0 { 0 } else { out_c + view };
            let g = ConvGeometry { out_pixel_stride: pixel_stride, kernel: [1, 1], stride: [1, 1], dilation: [1, 1], pad: [0; 4], groups: 1, in_pixel_stride: 0 };
            Some(Case { g, in_dims: [h, w, 2 * half], out_dims: [h, w, out_c], with_pad_values: false, relu, seed })
        }
    }

    /// Runs `c` with int8 or int16 inputs (`X`) and outputs (`Y`) through [`conv`] and the
    /// reference, and compares every output element, the channels of other producers between
    /// a view's pixels included (they must keep their sentinel value).
    fn check<X, Y>(
        c: &Case,
        value: impl Fn(&mut Gen) -> X,
        zp: X,
        zp_out: i16,
    ) -> Result<(), TestCaseError>
    where
        X: Lanes + core::fmt::Debug,
        Y: FromWide + core::fmt::Debug + PartialEq + Default + TryFrom<i16> + 'static,
    {
        let mut gen = Gen(c.seed);
        let [h, w, in_c] = c.in_dims;
        let [oh, ow, out_c] = c.out_dims;
        let per_out = c.g.kernel[0] * c.g.kernel[1] * (in_c / c.g.groups);
        let x: Vec<X> = (0..h * w * in_c).map(|_| value(&mut gen)).collect();
        let weights = gen.i8s(out_c * per_out);
        let pad_values: Vec<X> = if c.with_pad_values {
            (0..in_c).map(|_| value(&mut gen)).collect()
        } else {
            Vec::new()
        };
        // A wide int16 input makes products up to 2^22: keep the bias in range of the sums.
        let bias: Vec<i32> = (0..out_c).map(|_| gen.range(-(1 << 24), 1 << 24)).collect();
        let requant: Vec<Requant> = (0..out_c)
            .map(|_| {
                if gen.next() % 2 == 0 {
                    Requant {
                        multiplier: gen.range(1 << 30, i32::MAX),
                        shift: gen.range(-3, 1),
                    }
                } else if gen.next() % 2 == 0 {
                    Requant {
                        multiplier: gen.range(1 << 30, i32::MAX),
                        shift: gen.range(-24, -10),
                    }
                } else {
                    gen.requant()
                }
            })
            .collect();
        let multiplier: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
        let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
        // An int8 output's bounds lie in the int8 range, as the host writes them.
        let (lo, hi) = if Y::try_from(i16::MIN).is_ok() {
            (i16::MIN, i16::MAX)
        } else {
            (-128, 127)
        };
        let zp_out = zp_out.clamp(lo, hi);
        let clamp = if c.relu {
            ClampI16 {
                min: zp_out,
                max: hi,
            }
        } else {
            ClampI16 { min: lo, max: hi }
        };
        let quant = WideConvQuant {
            input_zero_point: zp,
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
        let stride = c.g.out_stride(out_c);
        let len = (oh * ow - 1) * stride + out_c;
        let sentinel = Y::try_from(7).ok().unwrap_or_default();
        let mut want = std::vec![sentinel; len];
        reference::conv2d_wide(&c.g, &quant, c.in_dims, &x, c.out_dims, &mut want, &weights);
        let conv = Conv {
            geometry: &c.g,
            dims: (c.in_dims, c.out_dims),
            padding: Padding {
                zero: zp,
                values: &pad_values,
            },
            channels: &quant.channels,
            bounds: Bounds::from(quant.output),
            input: &x,
            weights: &weights,
        };
        // With VNNI where the host has it, then with the AVX2 sums.
        for no_vnni in [false, true] {
            NO_VNNI.with(|n| n.set(no_vnni));
            let mut got = std::vec![sentinel; len];
            let taken = super::conv(&conv, &mut got);
            NO_VNNI.with(|n| n.set(false));
            prop_assert!(taken, "not taken: {:?}", c);
            prop_assert_eq!(&got, &want);
        }
        Ok(())
    }

    fn run_case(c: &Case, kinds: u8, zp_in: i16, zp_out: i16) -> Result<(), TestCaseError> {
        match kinds {
            0 => check::<i8, i8>(c, Gen::i8, zp_in as i8, zp_out),
            1 => check::<i8, i16>(c, Gen::i8, zp_in as i8, zp_out),
            2 => check::<i16, i16>(c, Gen::i16, zp_in, zp_out),
            _ => check::<i16, i8>(c, Gen::i16, zp_in, zp_out),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Regular and depthwise convolutions, all four element-type pairs, views, pad values,
        /// zero points, fused clamps: byte-identical to the reference.
        #[test]
        fn equals_the_reference(c in prop_oneof![3 => case(40), 1 => pointwise_case()], kinds in 0u8..4, zp_in in any::<i16>(),
                                zp_out in any::<i16>()) {
            let Some(c) = c else { return Ok(()) };
            run_case(&c, kinds, zp_in, zp_out)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Wide windows (up to 300 input channels): several packing chunks of channel blocks.
        #[test]
        fn wide_windows_equal_the_reference(c in case(300), kinds in 0u8..4, zp_in in any::<i16>(),
                                            zp_out in any::<i16>()) {
            let Some(c) = c else { return Ok(()) };
            run_case(&c, kinds, zp_in, zp_out)?;
        }

        /// Inconsistent operand sizes: refused or computed, never a panic or an out-of-bounds
        /// access.
        #[test]
        fn inconsistent_sizes_do_not_panic(c in case(20), cut in proptest::array::uniform6(0usize..=3)) {
            let Some(c) = c else { return Ok(()) };
            let [h, w, in_c] = c.in_dims;
            let [oh, ow, out_c] = c.out_dims;
            let per_out = c.g.kernel[0] * c.g.kernel[1] * (in_c / c.g.groups);
            let x = std::vec![1i8; (h * w * in_c).saturating_sub(cut[0])];
            let weights = std::vec![1i8; (out_c * per_out).saturating_sub(cut[1])];
            let bias = std::vec![0i32; out_c.saturating_sub(cut[2])];
            let multiplier = std::vec![1 << 30; out_c.saturating_sub(cut[3])];
            let shift = std::vec![-1; out_c];
            let pad_values = std::vec![0i8; in_c.saturating_sub(cut[4])];
            let channels = ChannelQuant { bias: &bias, multiplier: &multiplier, shift: &shift };
            let conv = Conv {
                geometry: &c.g,
                dims: (c.in_dims, c.out_dims),
                padding: Padding { zero: 0, values: &pad_values },
                channels: &channels,
                bounds: Bounds { zero_point: 0, min: -128, max: 127 },
                input: &x,
                weights: &weights,
            };
            let mut out = std::vec![0i8; (oh * ow * c.g.out_stride(out_c)).saturating_sub(cut[5])];
            let taken = super::conv(&conv, &mut out);
            if cut == [0; 6] {
                prop_assert!(taken);
            }
        }
    }

    /// [`Requant8`] against the reference's output stage on the accumulator and factor edges,
    /// every shift it takes, and bounds with crossed, int8 and int16 limits.
    #[test]
    fn the_vector_output_stage_equals_the_reference() {
        use crate::quant::multiply_by_quantized_multiplier;
        assert!(super::super::available());
        let xs = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30) - 1,
            -(1 << 30),
            -12345,
            -3,
            -2,
            -1,
            0,
            1,
            2,
            3,
            12345,
            (1 << 30) - 1,
            1 << 30,
            i32::MAX - 1,
            i32::MAX,
        ];
        let ms = [
            1,
            2,
            3,
            (1 << 30) - 1,
            1 << 30,
            (1 << 30) + 1,
            3 << 29,
            i32::MAX - 1,
            i32::MAX,
        ];
        let bounds = [
            Bounds {
                zero_point: 0,
                min: -128,
                max: 127,
            },
            Bounds {
                zero_point: -128,
                min: -128,
                max: 127,
            },
            Bounds {
                zero_point: 127,
                min: 0,
                max: 127,
            },
            Bounds {
                zero_point: -32768,
                min: -32768,
                max: 32767,
            },
            Bounds {
                zero_point: 32767,
                min: -32768,
                max: 32767,
            },
            Bounds {
                zero_point: 5,
                min: 10,
                max: 0,
            },
        ];
        let mut gen = Gen(7);
        for b in &bounds {
            for shift in -31..=0 {
                for &m in &ms {
                    for chunk in xs.chunks(8).chain([[0; 8].as_slice()]) {
                        let lanes: [(i32, Requant); 8] = core::array::from_fn(|j| {
                            // Bias and accumulator: a lane's x is their wrapping sum.
                            let bias = gen.range(-1000, 1000);
                            (
                                bias,
                                Requant {
                                    multiplier: if j % 3 == 0 { m } else { ms[j] },
                                    shift: if j % 2 == 0 { shift } else { -(j as i32 * 4) },
                                },
                            )
                        });
                        let acc: [i32; 8] = core::array::from_fn(|j| {
                            chunk
                                .get(j)
                                .copied()
                                .unwrap_or(j as i32)
                                .wrapping_sub(lanes[j].0)
                        });
                        // SAFETY: AVX2 present (asserted).
                        let got = unsafe {
                            let r = Requant8::new(&lanes, b).expect("a factor of the form");
                            let mut out = [0i32; 8];
                            _mm256_storeu_si256(
                                out.as_mut_ptr().cast(),
                                r.apply(_mm256_loadu_si256(acc.as_ptr().cast())),
                            );
                            out
                        };
                        for j in 0..8 {
                            let x = acc[j].wrapping_add(lanes[j].0);
                            let r = lanes[j].1;
                            let want =
                                b.apply(multiply_by_quantized_multiplier(x, r.multiplier, r.shift));
                            assert_eq!(got[j], want, "x {x} factor {r:?} bounds {b:?}");
                        }
                    }
                }
            }
        }
        // Factors outside the form are refused (the caller takes the scalar stage).
        let mut lanes = [(
            0,
            Requant {
                multiplier: 1 << 30,
                shift: -1,
            },
        ); 8];
        lanes[3].1.shift = 1;
        // SAFETY: AVX2 present.
        assert!(unsafe { Requant8::new(&lanes, &bounds[0]) }.is_none());
        lanes[3].1 = Requant {
            multiplier: -5,
            shift: -1,
        };
        assert!(unsafe { Requant8::new(&lanes, &bounds[0]) }.is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The vector addition takes the factors the host makes and equals the reference, on
        /// whole steps of eight and the remainder.
        #[test]
        fn add_equals_the_reference(n in 0usize..=70, zps in any::<[i8; 3]>(), relu in any::<bool>(),
                                    scales in proptest::array::uniform3(1e-4f64..10.0), seed in any::<u64>()) {
            use crate::kernels::reference::int8::elementwise as reference;
            use crate::kernels::reference::int8::{Clamp, OutputQuant};
            let mut gen = Gen(seed);
            let (a, b) = (gen.i8s(n), gen.i8s(n));
            let Some(r) = crate::quant::add_requant(scales[0], scales[1], scales[2]) else { return Ok(()) };
            let clamp = if relu { Clamp { min: zps[2], max: 127 } } else { Clamp::FULL };
            let quant = AddQuant {
                input_zero_points: [zps[0], zps[1]],
                input_requant: r.inputs,
                output_requant: r.output,
                output: OutputQuant { zero_point: zps[2], clamp },
            };
            let (mut got, mut want) = (std::vec![0i8; n], std::vec![0i8; n]);
            prop_assert!(add(&quant, &a, &b, &mut got));
            reference::add(&quant, &a, &b, &mut want);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn this_host_runs_the_avx2_path() {
        assert!(
            super::super::available(),
            "the test host has no AVX2: the kernels above were not tested"
        );
    }
}
