//! Fast f32 kernels for x86_64 hosts: AVX2 and FMA, chosen at run time.
//!
//! [`conv2d`] and [`dense`] have the signatures of their [reference](super::reference) kernels and
//! compute the same sums with 8-lane fused multiply-adds. They run the AVX2 path when the CPU has
//! AVX2 and FMA (a CPUID and XGETBV check by the `cpufeatures` crate, no_std, cached in an atomic)
//! and the operands are consistent (checked here once per call, so the pointer loops below stay in
//! bounds); otherwise they call the reference kernel. Results differ from the reference only in
//! rounding: a fused multiply-add rounds once per term and the terms are summed in another order
//! (per output lane instead of the reference's 8-lane [`dot`](super::reference::dot)), so each
//! output is within the classical bound of floating-point summation of the reference (the
//! property tests below check exactly that bound).
//!
//! Weight layout: the blob's `[out_c][kh][kw][in_c]` is not the layout a register tile wants
//! (output channels across the vector lanes). The runtime is allocation-free and the blob format
//! stays as it is: each call packs the weights of one block of 8 or 16 output channels, for as
//! many taps as fit, into a 64 KiB buffer on the stack (`[tap][in_c][channel]`), once per layer
//! and block, and then runs every output pixel of the block over it. Packing reads each weight
//! once; the tiles read each packed weight once per 6 output pixels.
//!
//! - Regular and pointwise convolution (`groups == 1`): tiles of 16 output channels (two vectors)
//!   by 6 consecutive output pixels of a row, 12 accumulators; per input channel two weight loads,
//!   6 broadcasts and 12 FMAs. Blocks of 8 channels use one vector by 12 pixels.
//! - Depthwise convolution (`groups == in_c == out_c`): 8 channels per vector, 4 pixels at a time.
//! - Dense: 8 output rows at a time, 8 input values per step, one horizontal sum per row.
//!
//! Everything else (grouped convolutions with more than one channel per group, channel
//! multipliers, more than [`MAX_CHANNELS`] input channels) runs the reference kernel.
//!
//! The int8 and 16x8 convolutions and the int8 addition in the same shape are in [`int8`].
//!
//! This is the runtime's second module with `unsafe` code (after `fast::simd`): the intrinsics
//! and raw-pointer loads and stores of the AVX2 paths. Every `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::reference::{self, elementwise::activate, window_coord};
use super::{Activation, ConvGeometry};

pub mod int8;
pub mod quantize;

cpufeatures::new!(avx2_fma, "avx2", "fma");

/// Whether this CPU runs the AVX2 paths (detected once, then an atomic load).
pub fn available() -> bool {
    avx2_fma::get()
}

/// Floats in the packed-weight buffer (64 KiB of stack per convolution call).
const PACK_CAP: usize = 16 * 1024;

/// Floats one output pixel of a convolution tile gathers when some of its taps in a kernel row read
/// padding (the taps' inputs with zeros or the pad values in between, 2 KiB per pixel).
const GATHER_CAP: usize = 512;

/// Kernel taps of the AVX2 depthwise convolution (8x8).
const DW_MAX_TAPS: usize = 64;

/// Input channels the AVX2 convolution takes (the zero row a padded tap reads has this length).
pub const MAX_CHANNELS: usize = 1024;

/// What a padded tap reads when the layer has no pad values.
static ZEROS: [f32; MAX_CHANNELS] = [0.0; MAX_CHANNELS];

/// Convolution: [`reference::conv::conv2d`]'s contract and results (up to rounding, see the
/// module docs).
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    params: &ConvGeometry,
    activation: &Activation,
    in_dims: [usize; 3],
    input: &[f32],
    out_dims: [usize; 3],
    output: &mut [f32],
    weights: &[f32],
    bias: &[f32],
    pad_values: &[f32],
) {
    let shape = ConvShape::check(
        params, in_dims, input, out_dims, output, weights, bias, pad_values,
    );
    match shape {
        Some(s) if available() => {
            // ReLU and clip run on the registers before the store; other activations after.
            let (clamp, after) = match *activation {
                Activation::Identity => (None, None),
                Activation::Relu => (Some((0.0, f32::INFINITY)), None),
                Activation::Clip { lo, hi } => (Some((lo, hi)), None),
                _ => (None, Some(activation)),
            };
            if s.depthwise {
                // SAFETY: AVX2 and FMA are present (checked above); `ConvShape::check` checked
                // every length the kernel's pointer arithmetic relies on.
                unsafe {
                    depthwise_avx2(&s, params, input, output, weights, bias, pad_values, clamp)
                }
            } else {
                // SAFETY: as above.
                unsafe { conv_avx2(&s, params, input, output, weights, bias, pad_values, clamp) }
            }
            if let Some(activation) = after {
                // Pixel by pixel: a view's stride skips other producers' channels.
                for px in output.chunks_mut(s.out_stride).take(s.out_len / s.out_c) {
                    let n = px.len().min(s.out_c);
                    activate(activation, &mut px[..n]);
                }
            }
        }
        _ => reference::conv::conv2d(
            params, activation, in_dims, input, out_dims, output, weights, bias, pad_values,
        ),
    }
}

/// Dense layer: [`reference::dense::dense`]'s contract and results (up to rounding).
pub fn dense(
    activation: &Activation,
    weights: &[f32],
    bias: &[f32],
    input: &[f32],
    output: &mut [f32],
) {
    let n_out = output.len();
    let n_in = weights.len().checked_div(n_out).unwrap_or(0);
    let consistent = n_in > 0 && weights.len() == n_in * n_out && bias.len() >= n_out;
    if !(consistent && available()) {
        return reference::dense::dense(activation, weights, bias, input, output);
    }
    // Whole positions only, like the reference's `chunks_exact`.
    let positions = input.len() / n_in;
    // SAFETY: AVX2 and FMA are present; `weights` holds `n_out` rows of `n_in`, `bias` at least
    // `n_out` values, `input` at least `positions * n_in`.
    unsafe { dense_avx2(n_in, n_out, positions, weights, bias, input, output) }
    activate(activation, output);
}

/// The operand sizes of a convolution the AVX2 path takes, all checked against the slices.
struct ConvShape {
    in_h: usize,
    in_w: usize,
    in_c: usize,
    /// Elements from one input pixel to the next (`in_c`, or a channel slice's wider storage:
    /// the slice read in place).
    in_stride: usize,
    out_h: usize,
    out_w: usize,
    out_c: usize,
    /// `kh * kw`.
    taps: usize,
    /// `groups == in_c == out_c` (otherwise `groups == 1`).
    depthwise: bool,
    /// A 1x1 kernel, stride 1, no padding, same height and width: output pixel `q` reads input
    /// pixel `q`.
    pointwise: bool,
    /// `out_h * out_w * out_c`.
    out_len: usize,
    /// Elements from one output pixel to the next (`out_c`, or a view's wider stride).
    out_stride: usize,
}

impl ConvShape {
    #[allow(clippy::too_many_arguments)]
    fn check(
        p: &ConvGeometry,
        [in_h, in_w, in_c]: [usize; 3],
        input: &[f32],
        [out_h, out_w, out_c]: [usize; 3],
        output: &[f32],
        weights: &[f32],
        bias: &[f32],
        pad_values: &[f32],
    ) -> Option<ConvShape> {
        let depthwise = p.groups == in_c && p.groups == out_c && p.groups > 1;
        if !(p.groups == 1 || depthwise) || in_c == 0 || in_c > MAX_CHANNELS || out_c == 0 {
            return None;
        }
        let taps = p.kernel[0].checked_mul(p.kernel[1])?;
        let per_out = if depthwise {
            taps
        } else {
            taps.checked_mul(in_c)?
        };
        let out_len = out_h.checked_mul(out_w)?.checked_mul(out_c)?;
        // A view into a wider tensor (zero-copy concatenation) has its pixels `out_stride`
        // apart; the other channels between belong to other producers and are never written.
        let out_stride = p.out_stride(out_c);
        let out_span = (out_h * out_w)
            .checked_sub(1)?
            .checked_mul(out_stride)?
            .checked_add(out_c)?;
        // Likewise an input that is a channel slice of a wider tensor, read in place: its
        // pixels `in_stride` apart, the last one `in_c` long.
        let in_stride = p.in_stride(in_c);
        let in_span = (in_h.checked_mul(in_w)?)
            .checked_sub(1)?
            .checked_mul(in_stride)?
            .checked_add(in_c)?;
        let sizes_ok = taps > 0
            && out_len > 0
            && in_stride >= in_c
            && input.len() >= in_span
            && out_stride >= out_c
            && output.len() >= out_span
            && weights.len() >= out_c.checked_mul(per_out)?
            && bias.len() >= out_c
            && (pad_values.is_empty() || pad_values.len() >= in_c)
            // One tap of a 16-channel block fits the packing buffer; a depthwise block all taps.
            && if depthwise { taps <= DW_MAX_TAPS } else { in_c * 16 <= PACK_CAP };
        let pointwise = p.kernel == [1, 1]
            && p.stride == [1, 1]
            && p.pad == [0; 4]
            && [out_h, out_w] == [in_h, in_w];
        sizes_ok.then_some(ConvShape {
            pointwise,
            in_h,
            in_w,
            in_c,
            in_stride,
            out_h,
            out_w,
            out_c,
            taps,
            depthwise,
            out_len,
            out_stride,
        })
    }
}

/// The input row (`in_c` values) output position `(oy, ox)` reads at tap `(ky, kx)`: the input
/// pixel, the pad values, or `None` for a border that reads zero. Index arithmetic in one place
/// (the reference's [`window_coord`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tap_source(
    s: &ConvShape,
    p: &ConvGeometry,
    input: *const f32,
    pad_values: &[f32],
    oy: usize,
    ox: usize,
    ky: usize,
    kx: usize,
) -> Option<*const f32> {
    let iy = window_coord(oy, p.stride[0], ky, p.dilation[0], p.pad[0], s.in_h);
    let ix = window_coord(ox, p.stride[1], kx, p.dilation[1], p.pad[1], s.in_w);
    match (iy, ix) {
        // In bounds: iy < in_h, ix < in_w, and input holds (in_h * in_w - 1) * in_stride + in_c
        // values: pixel (iy, ix) has in_c of them.
        (Some(iy), Some(ix)) => Some(input.wrapping_add((iy * s.in_w + ix) * s.in_stride)),
        _ if pad_values.is_empty() => None,
        _ => Some(pad_values.as_ptr()),
    }
}

/// Regular convolution (`groups == 1`) in blocks of 16 (or 8) output channels.
///
/// # Safety
/// AVX2 and FMA present; `s` checked against the slices by [`ConvShape::check`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_avx2(
    s: &ConvShape,
    p: &ConvGeometry,
    input: &[f32],
    output: &mut [f32],
    weights: &[f32],
    bias: &[f32],
    pad_values: &[f32],
    clamp: Option<(f32, f32)>,
) {
    let mut pack = [MaybeUninit::<f32>::uninit(); PACK_CAP];
    let mut o0 = 0;
    while o0 < s.out_c {
        let left = s.out_c - o0;
        // One vector when at most 8 channels are left, so a layer of 8 wastes no lanes.
        let lanes = if left <= 8 { 8 } else { 16 };
        let width = left.min(lanes);
        let taps_per_chunk = (PACK_CAP / (s.in_c * lanes)).min(s.taps);
        let mut t0 = 0;
        while t0 < s.taps {
            let t1 = (t0 + taps_per_chunk).min(s.taps);
            // Pack [tap][in_c][lane] for taps t0..t1, zero in lanes past the last channel. Each
            // channel's weights are read in their blob order (contiguous).
            let per_out = s.taps * s.in_c;
            let chunk = (t1 - t0) * s.in_c;
            for j in 0..lanes {
                let from = (o0 + j) * per_out + t0 * s.in_c;
                let source = if j < width {
                    weights.get(from..from + chunk)
                } else {
                    None
                };
                let column = pack.iter_mut().skip(j).step_by(lanes).take(chunk);
                match source {
                    Some(w) => column.zip(w).for_each(|(d, w)| *d = MaybeUninit::new(*w)),
                    None => column.for_each(|d| *d = MaybeUninit::new(0.0)),
                }
            }
            let block = Block {
                o0,
                width,
                t0,
                t1,
                first: t0 == 0,
                // The activation once the last taps are summed.
                clamp: if t1 == s.taps { clamp } else { None },
                // SAFETY: every element of pack[..(t1 - t0) * in_c * lanes] was written just above.
                pack: pack.as_ptr().cast::<f32>(),
            };
            // Tiles run over the pixels in row-major order across row ends, so only the last
            // tile of the layer is short.
            let pixels = s.out_h * s.out_w;
            let mut q = 0;
            // SAFETY (all calls below): AVX2/FMA present; `block` describes packed weights and
            // in-range channels; `q + P <= out_h * out_w`.
            if lanes == 16 {
                while q + 6 <= pixels {
                    tile::<2, 6>(s, p, &block, input, output, bias, pad_values, q);
                    q += 6;
                }
                while q + 2 <= pixels {
                    tile::<2, 2>(s, p, &block, input, output, bias, pad_values, q);
                    q += 2;
                }
                if q < pixels {
                    tile::<2, 1>(s, p, &block, input, output, bias, pad_values, q);
                }
            } else {
                while q + 12 <= pixels {
                    tile::<1, 12>(s, p, &block, input, output, bias, pad_values, q);
                    q += 12;
                }
                while q + 4 <= pixels {
                    tile::<1, 4>(s, p, &block, input, output, bias, pad_values, q);
                    q += 4;
                }
                while q < pixels {
                    tile::<1, 1>(s, p, &block, input, output, bias, pad_values, q);
                    q += 1;
                }
            }
            t0 = t1;
        }
        o0 += width;
    }
}

/// A block of output channels `o0..o0 + width` and its packed weights for taps `t0..t1`.
struct Block {
    o0: usize,
    width: usize,
    t0: usize,
    t1: usize,
    /// Taps from 0: the sums start at the bias, else at the output (the earlier taps' sums).
    first: bool,
    /// Fused ReLU or clip, on the block's last taps.
    clamp: Option<(f32, f32)>,
    pack: *const f32,
}

/// Loads `n <= 8` floats from `ptr` into the low lanes (the others zero) without reading past them.
#[inline(always)]
unsafe fn load_partial(ptr: *const f32, n: usize) -> __m256 {
    if n >= 8 {
        // SAFETY: the caller guarantees `ptr[..8]` is readable when n >= 8.
        unsafe { _mm256_loadu_ps(ptr) }
    } else {
        // SAFETY: maskload reads only the lanes whose mask is set, `ptr[..n]`.
        unsafe { _mm256_maskload_ps(ptr, lane_mask(n)) }
    }
}

/// Stores the low `n <= 8` lanes of `v` at `ptr`.
#[inline(always)]
unsafe fn store_partial(ptr: *mut f32, n: usize, v: __m256) {
    if n >= 8 {
        // SAFETY: the caller guarantees `ptr[..8]` is writable when n >= 8.
        unsafe { _mm256_storeu_ps(ptr, v) }
    } else {
        // SAFETY: maskstore writes only the lanes whose mask is set, `ptr[..n]`.
        unsafe { _mm256_maskstore_ps(ptr, lane_mask(n), v) }
    }
}

/// All-ones in lanes `0..n`.
#[inline(always)]
fn lane_mask(n: usize) -> __m256i {
    const IDX: [i32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
    let n = n.min(8) as i32;
    // SAFETY: AVX is implied by the callers' AVX2 target feature; plain register operations.
    unsafe {
        let idx = _mm256_loadu_si256(IDX.as_ptr().cast());
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx)
    }
}

/// `P` consecutive output pixels `q..q + P` (row-major) by `V` vectors of output channels of `b`.
///
/// # Safety
/// AVX2/FMA present; `s` checked; `q + P <= out_h * out_w`; `b.pack` holds `(t1 - t0) * in_c * 8 * V`
/// packed weights; `b.o0 + b.width <= out_c`, `b.width <= 8 * V`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const V: usize, const P: usize>(
    s: &ConvShape,
    p: &ConvGeometry,
    b: &Block,
    input: &[f32],
    output: &mut [f32],
    bias: &[f32],
    pad_values: &[f32],
    q: usize,
) {
    let lanes = 8 * V;
    let mut acc = [[_mm256_setzero_ps(); V]; P];
    // Where each pixel's sums start, and where they go.
    let out_at = |px: usize| (q + px) * s.out_stride + b.o0;
    for (px, acc_px) in acc.iter_mut().enumerate() {
        for (v, a) in acc_px.iter_mut().enumerate() {
            let n = b.width.saturating_sub(8 * v);
            // SAFETY: bias[o0..o0 + width] and output[out_at(px)..][..width] are in bounds
            // (checked shape, width <= out_c - o0, pixel < out_h * out_w); n counts only those.
            *a = unsafe {
                if b.first {
                    load_partial(bias.as_ptr().add(b.o0 + 8 * v), n)
                } else {
                    load_partial(output.as_ptr().add(out_at(px) + 8 * v), n)
                }
            };
        }
    }
    let kw = p.kernel[1];
    let at: [(usize, usize); P] =
        core::array::from_fn(|px| ((q + px) / s.out_w, (q + px) % s.out_w));
    // The taps of one kernel row at a time: where a pixel reads adjacent input columns at all of
    // them, the row's `run · in_c` inputs are contiguous and in the packed weights' order, so one
    // source per pixel serves them all (a 10x4 kernel over one input channel: 4 products per
    // source instead of 1). A pixel whose taps read padding gathers them into a row of its own,
    // so a tile that touches the border still takes the whole run in one pass.
    let mut t = b.t0;
    let mut gathered = [[MaybeUninit::<f32>::uninit(); GATHER_CAP]; P];
    while t < b.t1 {
        let (ky, kx) = (t / kw, t % kw);
        // The taps of row ky from kx on in this chunk, as many as one gathered row holds.
        let run = (kw - kx).min(b.t1 - t).min((GATHER_CAP / s.in_c).max(1));
        let len = run * s.in_c;
        let w_tap = b.pack.wrapping_add((t - b.t0) * s.in_c * lanes);
        let mut src = [ZEROS.as_ptr(); P];
        let mut any = false;
        for (px, (sp, &(oy, ox))) in src.iter_mut().zip(&at).enumerate() {
            if s.pointwise {
                // Output pixel q reads input pixel q.
                *sp = input.as_ptr().wrapping_add((q + px) * s.in_stride);
                any = true;
                continue;
            }
            let iy = window_coord(oy, p.stride[0], ky, p.dilation[0], p.pad[0], s.in_h);
            let col =
                |k: usize| window_coord(ox, p.stride[1], kx + k, p.dilation[1], p.pad[1], s.in_w);
            // Adjacent columns are contiguous only in a dense input (a slice read in place
            // has other channels between its pixels: those runs are gathered below, in the
            // same order, so the sums are the same).
            let contiguous = run == 1 || (p.dilation[1] == 1 && s.in_stride == s.in_c);
            if let (Some(iy), Some(first), Some(_), true) = (iy, col(0), col(run - 1), contiguous) {
                // Adjacent columns first..first + run of row iy, all inside: read in place.
                *sp = input
                    .as_ptr()
                    .wrapping_add((iy * s.in_w + first) * s.in_stride);
                any = true;
            } else if run == 1 {
                if let Some(ptr) = tap_source(s, p, input.as_ptr(), pad_values, oy, ox, ky, kx) {
                    *sp = ptr;
                    any = true;
                }
            } else {
                // Some of the taps read padding (or the columns are dilated): gather the
                // pixel's inputs for the run, zero (or the pad values) where it reads padding.
                let row = &mut gathered[px];
                for k in 0..run {
                    let from =
                        match tap_source(s, p, input.as_ptr(), pad_values, oy, ox, ky, kx + k) {
                            Some(ptr) => {
                                any = true;
                                ptr
                            }
                            None => ZEROS.as_ptr(),
                        };
                    for (i, d) in row[k * s.in_c..][..s.in_c].iter_mut().enumerate() {
                        // SAFETY: every source row has in_c readable values (an input pixel,
                        // the pad values of at least in_c, or ZEROS of MAX_CHANNELS >= in_c).
                        *d = MaybeUninit::new(unsafe { *from.add(i) });
                    }
                }
                *sp = row.as_ptr().cast::<f32>();
            }
        }
        if any {
            // SAFETY: each source has `len` readable values (adjacent input columns inside the
            // row, a gathered row written above, or one tap's row when run == 1); the packed
            // weights hold them for taps t..t + run.
            unsafe { accumulate(&mut acc, &src, w_tap, len, lanes) };
        }
        t += run;
    }
    for (px, acc_px) in acc.iter().enumerate() {
        for (v, a) in acc_px.iter().enumerate() {
            let n = b.width.saturating_sub(8 * v);
            if n > 0 {
                // SAFETY: output[out_at(px) + 8v..][..n] is inside this pixel's block channels.
                let a = clamp_lanes(*a, b.clamp);
                unsafe { store_partial(output.as_mut_ptr().add(out_at(px) + 8 * v), n, a) };
            }
        }
    }
}

/// `acc[px][v] += Σ_i w[i][8v..8v + 8] · src[px][i]` over `i < len`.
///
/// # Safety
/// AVX2/FMA present; every `src[px]` has `len` readable values; `w` holds `len` rows of `lanes`
/// (`8 · V`) packed weights.
// Not inlined: its loop then has all sixteen vector registers to itself (12 accumulators of the
// 16x6 tile, 2 weights, a broadcast); inlined into the tile, LLVM spilled two accumulators.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate<const V: usize, const P: usize>(
    acc: &mut [[__m256; V]; P],
    src: &[*const f32; P],
    w: *const f32,
    len: usize,
    lanes: usize,
) {
    for i in 0..len {
        let mut wv = [_mm256_setzero_ps(); V];
        for (v, wv) in wv.iter_mut().enumerate() {
            // SAFETY: row i < len of `lanes` packed weights.
            *wv = unsafe { _mm256_loadu_ps(w.add(i * lanes + 8 * v)) };
        }
        for (acc_px, sp) in acc.iter_mut().zip(src) {
            // SAFETY: src[px][i] is readable (i < len).
            let x = unsafe { _mm256_broadcast_ss(&*sp.add(i)) };
            for (a, wv) in acc_px.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(*wv, x, *a);
            }
        }
    }
}

/// Depthwise convolution, 8 channels per vector, up to 8 pixels of a row at a time.
///
/// Which pixels of a row chunk read an input column (rather than the padding) at tap column `kx`
/// depends only on the chunk's first column and `kx`, not on the row: it is worked out once per
/// chunk and tap column ([`dw_columns`]), so the rows' inner loops only add. Narrow maps (DS-CNN's
/// 5 columns) are one chunk per row.
///
/// # Safety
/// AVX2 and FMA present; `s` checked by [`ConvShape::check`] with `s.depthwise`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_avx2(
    s: &ConvShape,
    p: &ConvGeometry,
    input: &[f32],
    output: &mut [f32],
    weights: &[f32],
    bias: &[f32],
    pad_values: &[f32],
    clamp: Option<(f32, f32)>,
) {
    let mut pack = [_mm256_setzero_ps(); DW_MAX_TAPS];
    let c = s.in_c;
    let mut c0 = 0;
    while c0 < c {
        let width = (c - c0).min(8);
        // [tap] vectors of the block's 8 channels (zero past the last channel).
        for (t, wv) in pack.iter_mut().take(s.taps).enumerate() {
            let mut lane = [0.0f32; 8];
            for (j, l) in lane.iter_mut().take(width).enumerate() {
                *l = weights[(c0 + j) * s.taps + t];
            }
            // SAFETY: `lane` has 8 floats.
            *wv = unsafe { _mm256_loadu_ps(lane.as_ptr()) };
        }
        let block = DwBlock {
            c0,
            width,
            // SAFETY: bias[c0..c0 + width] is in bounds (bias.len() >= c).
            bias: unsafe { load_partial(bias.as_ptr().add(c0), width) },
            // SAFETY: pad_values, when present, holds at least c values.
            pad: (!pad_values.is_empty())
                .then(|| unsafe { load_partial(pad_values.as_ptr().add(c0), width) }),
            weights: &pack,
            clamp,
        };
        let mut ox = 0;
        while ox < s.out_w {
            let n = (s.out_w - ox).min(8);
            // SAFETY (each call): AVX2/FMA present, `s` checked, ox + P <= out_w.
            unsafe {
                match n {
                    8 => dw_chunk::<8>(s, p, &block, input, output, ox),
                    7 => dw_chunk::<7>(s, p, &block, input, output, ox),
                    6 => dw_chunk::<6>(s, p, &block, input, output, ox),
                    5 => dw_chunk::<5>(s, p, &block, input, output, ox),
                    4 => dw_chunk::<4>(s, p, &block, input, output, ox),
                    3 => dw_chunk::<3>(s, p, &block, input, output, ox),
                    2 => dw_chunk::<2>(s, p, &block, input, output, ox),
                    _ => dw_chunk::<1>(s, p, &block, input, output, ox),
                }
            }
            ox += n;
        }
        c0 += width;
    }
}

/// One block of up to 8 depthwise channels: its packed weights, bias and pad values.
struct DwBlock<'a> {
    c0: usize,
    width: usize,
    bias: __m256,
    /// The pad values of the block's channels, or `None`: padded taps read nothing.
    pad: Option<__m256>,
    /// `[tap]` vectors of the block's channels.
    weights: &'a [__m256; DW_MAX_TAPS],
    clamp: Option<(f32, f32)>,
}

/// For each tap column `kx < kw`, the pixels `lo..hi` of the `P`-pixel chunk starting at output
/// column `ox` that read an input column (the others read padding), and the input column of
/// pixel 0 relative to the row start (may be negative: only pixels `lo..hi` are read), for an
/// input `in_w` columns wide. The int8 depthwise kernel (`int8.rs`) shares it.
#[inline(always)]
fn dw_columns<const P: usize>(
    in_w: usize,
    p: &ConvGeometry,
    ox: usize,
) -> [(usize, usize, isize); DW_MAX_TAPS] {
    let mut cols = [(0, 0, 0); DW_MAX_TAPS];
    let (sw, pad) = (p.stride[1], p.pad[1]);
    for (kx, col) in cols.iter_mut().take(p.kernel[1]).enumerate() {
        // Pixel k reads input column base + k·sw - pad; it is inside when
        // pad <= base + k·sw < in_w + pad.
        let base = ox * sw + kx * p.dilation[1];
        let first = |limit: usize| limit.saturating_sub(base).div_ceil(sw).min(P);
        let hi = first(in_w + pad);
        let lo = first(pad).min(hi);
        *col = (lo, hi, base as isize - pad as isize);
    }
    cols
}

/// Depthwise outputs of every row at columns `ox..ox + P`, channels of `b`.
///
/// # Safety
/// AVX2/FMA present; `s` checked with `s.depthwise`; `ox + P <= out_w`; `b.c0 + b.width <= in_c`.
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_chunk<const P: usize>(
    s: &ConvShape,
    p: &ConvGeometry,
    b: &DwBlock<'_>,
    input: &[f32],
    output: &mut [f32],
    ox: usize,
) {
    // Input pixels `in_stride` apart (a channel slice read in place: wider than `in_c`).
    let c = s.in_stride;
    let [kh, kw] = p.kernel;
    let cols = dw_columns::<P>(s.in_w, p, ox);
    let pixel_step = p.stride[1] * c;
    for oy in 0..s.out_h {
        let mut acc = [b.bias; P];
        for ky in 0..kh {
            let taps = &b.weights[ky * kw..][..kw];
            let Some(iy) = window_coord(oy, p.stride[0], ky, p.dilation[0], p.pad[0], s.in_h)
            else {
                // A padding row: every tap reads the pad values (or nothing).
                if let Some(pv) = b.pad {
                    for w in taps {
                        for a in acc.iter_mut() {
                            *a = _mm256_fmadd_ps(pv, *w, *a);
                        }
                    }
                }
                continue;
            };
            let row = input.as_ptr().wrapping_add(iy * s.in_w * c + b.c0);
            for (w, &(lo, hi, col)) in taps.iter().zip(&cols) {
                let tap = row.wrapping_offset(col * c as isize);
                for (k, a) in acc.iter_mut().enumerate() {
                    if (lo..hi).contains(&k) {
                        // SAFETY: pixel k reads input column col + k·sw in 0..in_w (lo..hi),
                        // row iy < in_h, channels c0..c0 + width <= in_c of that pixel (pixels
                        // in_stride apart, the input checked to hold the last one's in_c).
                        let x = unsafe { load_partial(tap.wrapping_add(k * pixel_step), b.width) };
                        *a = _mm256_fmadd_ps(x, *w, *a);
                    } else if let Some(pv) = b.pad {
                        *a = _mm256_fmadd_ps(pv, *w, *a);
                    }
                }
            }
        }
        for (k, a) in acc.iter().enumerate() {
            let at = (oy * s.out_w + ox + k) * s.out_stride + b.c0;
            // SAFETY: pixel (oy, ox + k) < out_h * out_w, channels c0..c0 + width <= c (the
            // output spans (out_h * out_w - 1) * out_stride + c, checked).
            unsafe {
                store_partial(
                    output.as_mut_ptr().add(at),
                    b.width,
                    clamp_lanes(*a, b.clamp),
                )
            };
        }
    }
}

/// The reference's `v.max(lo).min(hi)` on 8 lanes: `maxps` returns its second operand when the
/// first is NaN, as `f32::max` returns the number, so NaN becomes `lo` in both.
#[inline(always)]
fn clamp_lanes(v: __m256, clamp: Option<(f32, f32)>) -> __m256 {
    match clamp {
        // SAFETY: register-only AVX operations, present with the callers' AVX2 target feature.
        Some((lo, hi)) => unsafe {
            _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(lo)), _mm256_set1_ps(hi))
        },
        None => v,
    }
}

/// Horizontal sum of the 8 lanes.
#[inline(always)]
fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only AVX/SSE operations, present with the callers' AVX2 target feature.
    unsafe {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// Dense layer, 8 output rows at a time.
///
/// # Safety
/// AVX2 and FMA present; `weights.len() == n_in * n_out`, `bias.len() >= n_out`,
/// `input.len() >= positions * n_in`, `output.len() == n_out`.
#[target_feature(enable = "avx2,fma")]
unsafe fn dense_avx2(
    n_in: usize,
    n_out: usize,
    positions: usize,
    weights: &[f32],
    bias: &[f32],
    input: &[f32],
    output: &mut [f32],
) {
    let mut o = 0;
    while o < n_out {
        if o + 8 <= n_out {
            // SAFETY: rows o..o + 8 exist.
            unsafe { dense_rows::<8>(n_in, positions, o, weights, bias, input, output) };
            o += 8;
        } else {
            // SAFETY: row o exists.
            unsafe { dense_rows::<1>(n_in, positions, o, weights, bias, input, output) };
            o += 1;
        }
    }
}

/// Rows `o..o + R` of a dense layer.
///
/// # Safety
/// As [`dense_avx2`], and `o + R <= n_out`.
#[target_feature(enable = "avx2,fma")]
unsafe fn dense_rows<const R: usize>(
    n_in: usize,
    positions: usize,
    o: usize,
    weights: &[f32],
    bias: &[f32],
    input: &[f32],
    output: &mut [f32],
) {
    let mut acc = [_mm256_setzero_ps(); R];
    let w = weights.as_ptr().wrapping_add(o * n_in);
    for pos in 0..positions {
        let x = input.as_ptr().wrapping_add(pos * n_in);
        let mut i = 0;
        while i < n_in {
            let n = (n_in - i).min(8);
            // SAFETY: input[pos * n_in + i..][..n] is inside position pos.
            let xv = unsafe { load_partial(x.add(i), n) };
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: weights[(o + r) * n_in + i..][..n] is inside row o + r.
                let wv = unsafe { load_partial(w.add(r * n_in + i), n) };
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
            i += n;
        }
    }
    for (r, a) in acc.iter().enumerate() {
        output[o + r] = hsum(*a) + bias[o + r];
    }
}

/// int8 or int16 activations of the int8 kernels' dot products (`kernels::fast::conv`).
#[derive(Clone, Copy)]
pub enum Activations<'a> {
    /// int8 values.
    I8(&'a [i8]),
    /// int16 values (16x8 layers).
    I16(&'a [i16]),
}

impl Activations<'_> {
    fn len(&self) -> usize {
        match self {
            Activations::I8(x) => x.len(),
            Activations::I16(x) => x.len(),
        }
    }
}

/// `acc[P·2 + k] + Σ_i w[k][i] · x[p][i]` for two int8 weight rows and `P` pixels (each weight
/// row at least as long as every `x[p]`, all `x[p]` of one length), or `None` without AVX2 or
/// for other lengths. Exact: int8·int8 and int16·int8 products and their pair sums (`vpmaddwd`)
/// fit an int32 lane, and the int32 sums wrap like the portable kernels' `wrapping_add`s, so the
/// order does not matter and the result is the portable one bit for bit.
#[inline]
pub fn int8_dot<const P: usize>(
    w: [&[i8]; 2],
    x: [Activations<'_>; P],
    acc: [[i32; 2]; P],
) -> Option<[[i32; 2]; P]> {
    let n = x.first()?.len();
    let fits = x.iter().all(|x| x.len() == n) && w.iter().all(|w| w.len() >= n);
    if !(fits && available()) {
        return None;
    }
    // SAFETY: AVX2 present; every x[p] has n values and every weight row at least n.
    Some(unsafe { int8_dot_avx2(w, x, n, acc) })
}

/// `acc[p][k] + Σ_i smlad(w[k][i], x[p][i])` over words of two int16 lanes (each weight row at
/// least as long as every `x[p]`, all `x[p]` of one length), or `None` without AVX2 or for other
/// lengths. `vpmaddwd` is SMLAD on eight words at once: both add the two lane products into one
/// int32, wrapping, so the result is the portable one bit for bit.
#[inline]
pub fn word_dot<const P: usize>(
    w: [&[u32]; 2],
    x: [&[u32]; P],
    acc: [[i32; 2]; P],
) -> Option<[[i32; 2]; P]> {
    let n = x.first()?.len();
    let fits = x.iter().all(|x| x.len() == n) && w.iter().all(|w| w.len() >= n);
    if !(fits && available()) {
        return None;
    }
    // SAFETY: AVX2 present; every x[p] has n words and every weight row at least n.
    Some(unsafe { word_dot_avx2(w, x, n, acc) })
}

/// # Safety
/// AVX2 present; every `x[p]` has `n` words, every weight row at least `n`.
#[target_feature(enable = "avx2")]
unsafe fn word_dot_avx2<const P: usize>(
    w: [&[u32]; 2],
    x: [&[u32]; P],
    n: usize,
    acc: [[i32; 2]; P],
) -> [[i32; 2]; P] {
    let mut sums = [[_mm256_setzero_si256(); 2]; P];
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= each weight row's and each x[p]'s length.
        let wv = w.map(|w| unsafe { _mm256_loadu_si256(w.as_ptr().add(i).cast()) });
        for (s, x) in sums.iter_mut().zip(&x) {
            // SAFETY: as above.
            let xv = unsafe { _mm256_loadu_si256(x.as_ptr().add(i).cast()) };
            for (s, wv) in s.iter_mut().zip(&wv) {
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(*wv, xv));
            }
        }
        i += 8;
    }
    let lane = |v: u32, hi: bool| i32::from((if hi { v >> 16 } else { v }) as u16 as i16);
    let mut out = acc;
    for ((o, s), x) in out.iter_mut().zip(&sums).zip(&x) {
        for ((o, s), w) in o.iter_mut().zip(s).zip(&w) {
            let tail = x.iter().zip(w.iter()).skip(i).fold(0i32, |t, (x, w)| {
                t.wrapping_add(lane(*w, false) * lane(*x, false))
                    .wrapping_add(lane(*w, true) * lane(*x, true))
            });
            *o = o.wrapping_add(hsum_i32(*s)).wrapping_add(tail);
        }
    }
    out
}

/// Sixteen activations widened to int16 lanes.
///
/// # Safety
/// AVX2 present; `x[at..at + 16]` in bounds.
#[inline(always)]
unsafe fn widen16(x: &Activations<'_>, at: usize) -> __m256i {
    // SAFETY: the caller guarantees 16 readable values at `at`.
    unsafe {
        match x {
            Activations::I8(x) => _mm256_cvtepi8_epi16(_mm_loadu_si128(x.as_ptr().add(at).cast())),
            Activations::I16(x) => _mm256_loadu_si256(x.as_ptr().add(at).cast()),
        }
    }
}

/// The value at `i` as i32 (`i < len`).
fn widen_at(x: &Activations<'_>, i: usize) -> i32 {
    match x {
        Activations::I8(x) => x.get(i).map_or(0, |v| i32::from(*v)),
        Activations::I16(x) => x.get(i).map_or(0, |v| i32::from(*v)),
    }
}

/// Sum of the 8 int32 lanes, wrapping.
#[inline(always)]
fn hsum_i32(v: __m256i) -> i32 {
    // In registers (the lanes' int32 additions wrap like `wrapping_add`, so the order does not
    // matter): halves, then pairs of lanes, then the last two.
    // SAFETY: register-only SSE2/AVX2 operations, present with the callers' AVX2 target feature.
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }
}

/// # Safety
/// AVX2 present; every `x[p]` has `n` values, every weight row at least `n`.
#[target_feature(enable = "avx2")]
unsafe fn int8_dot_avx2<const P: usize>(
    w: [&[i8]; 2],
    x: [Activations<'_>; P],
    n: usize,
    acc: [[i32; 2]; P],
) -> [[i32; 2]; P] {
    let mut sums = [[_mm256_setzero_si256(); 2]; P];
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n <= each weight row's length.
        let wv =
            w.map(|w| unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(w.as_ptr().add(i).cast())) });
        for (s, x) in sums.iter_mut().zip(&x) {
            // SAFETY: i + 16 <= n = x's length.
            let xv = unsafe { widen16(x, i) };
            for (s, wv) in s.iter_mut().zip(&wv) {
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(*wv, xv));
            }
        }
        i += 16;
    }
    let mut out = acc;
    for ((o, s), x) in out.iter_mut().zip(&sums).zip(&x) {
        for ((o, s), w) in o.iter_mut().zip(s).zip(&w) {
            let tail = (i..n).fold(0i32, |t, k| {
                t.wrapping_add(i32::from(w.get(k).copied().unwrap_or(0)) * widen_at(x, k))
            });
            *o = o.wrapping_add(hsum_i32(*s)).wrapping_add(tail);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::testutil::values(n, seed)
    }

    fn out_len(size: usize, k: usize, s: usize, d: usize, pa: usize, pb: usize) -> Option<usize> {
        let span = d * (k - 1) + 1;
        (size + pa + pb).checked_sub(span).map(|n| n / s + 1)
    }

    /// The error bound of summing `terms` f32 values twice in different orders (one with fused
    /// multiply-adds): each result is within `n·u/(1 - n·u)` times `Σ|terms|` of the exact sum
    /// (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §4.2 and §3.1), so the
    /// two are within twice that of each other.
    fn bound(terms: usize, abs_sum: f32) -> f32 {
        let nu = (terms as f32 + 1.0) * f32::EPSILON / 2.0;
        2.0 * nu / (1.0 - nu) * abs_sum + f32::MIN_POSITIVE
    }

    prop_compose! {
        /// Regular, depthwise (`kind` 1) or pointwise (`kind` 2: 1x1, stride 1, no padding)
        /// convolutions of up to `max_c` channels.
        fn conv_case(max_c: usize)(kind in 0u8..3, in_c in 1usize..=max_c, out_c in 1usize..=40,
                       kh in 1usize..=3, kw in 1usize..=4, sh in 1usize..=3, sw in 1usize..=2,
                       dh in 1usize..=2, dw in 1usize..=3,
                       pad in proptest::array::uniform4(0usize..=2),
                       h in 1usize..=9, w in 1usize..=20, with_pad_values in any::<bool>(),
                       seed in any::<u64>())
            -> (ConvGeometry, [usize; 3], usize, bool, u64)
        {
            let groups = if kind == 1 && in_c > 1 { in_c } else { 1 };
            let out_c = if groups > 1 { in_c } else { out_c };
            let g = if kind == 2 {
                ConvGeometry { kernel: [1, 1], stride: [1, 1], dilation: [dh, dw], pad: [0; 4], groups, out_pixel_stride: 0, in_pixel_stride: 0 }
            } else {
                ConvGeometry { kernel: [kh, kw], stride: [sh, sw], dilation: [dh, dw], pad, groups, out_pixel_stride: 0, in_pixel_stride: 0 }
            };
            (g, [h, w, in_c], out_c, with_pad_values, seed)
        }
    }

    fn activation(k: u8) -> Activation {
        match k {
            0 => Activation::Identity,
            1 => Activation::Relu,
            2 => Activation::Clip { lo: -0.25, hi: 0.5 },
            // Not fused: applied by the reference's `activate` after the sums.
            _ => Activation::LeakyRelu { alpha: 0.1 },
        }
    }

    /// The fast convolution against the reference, output by output, within the summation bound.
    fn check_conv(
        p: ConvGeometry,
        in_dims: [usize; 3],
        out_c: usize,
        with_pv: bool,
        seed: u64,
        act: Activation,
    ) -> Result<(), TestCaseError> {
        let [h, w, c] = in_dims;
        let oh = out_len(
            h,
            p.kernel[0],
            p.stride[0],
            p.dilation[0],
            p.pad[0],
            p.pad[2],
        );
        let ow = out_len(
            w,
            p.kernel[1],
            p.stride[1],
            p.dilation[1],
            p.pad[1],
            p.pad[3],
        );
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Ok(());
        };
        let group_in = c / p.groups;
        let taps = p.kernel[0] * p.kernel[1];
        let x = values(h * w * c, seed);
        let wt = values(out_c * taps * group_in, seed ^ 1);
        let b = values(out_c, seed ^ 2);
        let pv = if with_pv {
            values(c, seed ^ 3)
        } else {
            Vec::new()
        };
        let out_dims = [oh, ow, out_c];
        let mut want = std::vec![f32::NAN; oh * ow * out_c];
        let mut got = std::vec![f32::NAN; oh * ow * out_c];
        reference::conv::conv2d(&p, &act, in_dims, &x, out_dims, &mut want, &wt, &b, &pv);
        conv2d(&p, &act, in_dims, &x, out_dims, &mut got, &wt, &b, &pv);
        // The same sums with absolute values bound the rounding of each output (the activations
        // tested are 1-Lipschitz or flatter, so they do not widen the difference).
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
        let mut abs_sum = std::vec![0.0; oh * ow * out_c];
        let id = Activation::Identity;
        reference::conv::conv2d(
            &p,
            &id,
            in_dims,
            &abs(&x),
            out_dims,
            &mut abs_sum,
            &abs(&wt),
            &abs(&b),
            &abs(&pv),
        );
        for (k, ((g, r), a)) in got.iter().zip(&want).zip(&abs_sum).enumerate() {
            prop_assert!((g - r).abs() <= bound(taps * group_in + 1, *a),
                "output {k}: {g} vs reference {r} ({p:?}, in {in_dims:?}, out {out_dims:?}, {act:?})");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        /// Wide layers: more than 1024 packed weights per channel, so a block's taps are packed
        /// and summed in several chunks (the output holds the partial sums in between).
        #[test]
        fn wide_conv_matches_reference((p, in_dims, out_c, with_pv, seed) in conv_case(300), act in 0u8..4) {
            prop_assume!(available());
            check_conv(p, in_dims, out_c, with_pv, seed, activation(act))?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Regular, pointwise and depthwise convolutions on random shapes, strides, dilations,
        /// pads, pad values and fused activations: within the summation bound of the reference.
        #[test]
        fn conv_matches_reference((p, in_dims, out_c, with_pv, seed) in conv_case(40), act in 0u8..4) {
            prop_assume!(available());
            check_conv(p, in_dims, out_c, with_pv, seed, activation(act))?;
        }

        /// Dense layers, one or several positions (a folded global pooling).
        #[test]
        fn dense_matches_reference(n_in in 1usize..90, n_out in 1usize..30, positions in 1usize..5,
                                   seed in any::<u64>()) {
            prop_assume!(available());
            let w = values(n_in * n_out, seed);
            let x = values(n_in * positions, seed ^ 1);
            let b = values(n_out, seed ^ 2);
            let mut want = std::vec![0.0; n_out];
            let mut got = std::vec![0.0; n_out];
            reference::dense::dense(&Activation::Relu, &w, &b, &x, &mut want);
            dense(&Activation::Relu, &w, &b, &x, &mut got);
            let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
            let mut abs_sum = std::vec![0.0; n_out];
            reference::dense::dense(&Activation::Identity, &abs(&w), &abs(&b), &abs(&x), &mut abs_sum);
            for (o, ((g, r), a)) in got.iter().zip(&want).zip(&abs_sum).enumerate() {
                prop_assert!((g - r).abs() <= bound(n_in * positions + 1, *a), "row {o}: {g} vs {r}");
            }
        }

        /// Inconsistent sizes fall back to the reference (which does not panic either).
        #[test]
        fn inconsistent_sizes_do_not_panic(n_in in 0usize..60, n_out in 0usize..60, n_w in 0usize..60,
                                           (p, in_dims, out_c, _, _) in conv_case(40),
                                           oh in 0usize..5, ow in 0usize..5) {
            let mut out = std::vec![0.0f32; n_out];
            conv2d(&p, &Activation::Identity, in_dims, &std::vec![1.0; n_in], [oh, ow, out_c],
                   &mut out, &std::vec![1.0; n_w], &[1.0; 3], &[1.0]);
            dense(&Activation::Identity, &std::vec![1.0; n_w], &[1.0; 3], &std::vec![1.0; n_in], &mut out);
        }
    }

    /// A view output (zero-copy concatenation: pixels `out_pixel_stride` apart) holds bit for bit
    /// what the dense output holds, pixel by pixel, and the channels between stay untouched.
    #[test]
    fn a_strided_output_is_the_dense_one_spread_out() {
        for (groups, act) in [
            (1, Activation::Relu),
            (8, Activation::Relu),
            (1, Activation::Sigmoid),
        ] {
            let (in_dims, out_c, stride) = ([6, 5, 8], 8, 13);
            let g = ConvGeometry {
                kernel: [3, 3],
                stride: [1, 1],
                dilation: [1, 1],
                pad: [1; 4],
                groups,
                out_pixel_stride: stride,
                in_pixel_stride: 0,
            };
            let input = values(6 * 5 * 8, 1);
            let weights = values(out_c * 9 * (8 / groups), 2);
            let bias = values(out_c, 3);
            let span = (6 * 5 - 1) * stride + out_c;
            let out_dims = [6, 5, out_c];
            let mut got = std::vec![7.0f32; span];
            conv2d(
                &g,
                &act,
                in_dims,
                &input,
                out_dims,
                &mut got,
                &weights,
                &bias,
                &[],
            );
            let dense_g = ConvGeometry {
                out_pixel_stride: 0,
                in_pixel_stride: 0,
                ..g
            };
            let mut dense = std::vec![0.0f32; 6 * 5 * out_c];
            conv2d(
                &dense_g,
                &act,
                in_dims,
                &input,
                out_dims,
                &mut dense,
                &weights,
                &bias,
                &[],
            );
            for (px, want) in dense.chunks(out_c).enumerate() {
                let at = px * stride;
                assert_eq!(&got[at..at + out_c], want, "groups {groups}, pixel {px}");
                if let Some(gap) = got.get(at + out_c..(at + stride).min(span)) {
                    assert!(
                        gap.iter().all(|&v| v == 7.0),
                        "another producer's channels written"
                    );
                }
            }
        }
    }

    #[test]
    fn this_host_runs_the_avx2_path() {
        // CI and the project's machines are x86_64 with AVX2 and FMA: the property tests above
        // would otherwise pass vacuously. Set ICEFOLD_NO_AVX2_HOST=1 on an older CPU.
        if std::env::var_os("ICEFOLD_NO_AVX2_HOST").is_none() {
            assert!(available(), "this x86_64 CPU lacks AVX2 or FMA");
        }
    }
}
