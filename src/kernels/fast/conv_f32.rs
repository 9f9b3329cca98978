//! Fast f32 convolutions and dense layers: the [reference](crate::kernels::reference) results
//! up to the rounding of a different summation order, in fewer instructions.
//!
//! The reference sums each output's products through [`dot`](crate::kernels::reference::dot)'s
//! eight lanes, one kernel tap at a time; these kernels keep a register tile of accumulators
//! (four output channels × two output pixels) and add each product straight into its
//! accumulator, so per input value they load two activations and four weights for eight
//! multiply-accumulates (VMLA on a Cortex-M FPU). Different order, different rounding: the tests
//! bound the difference by the sum of the products' magnitudes times a few units of f32
//! rounding, which is what reordering a sum can change.
//!
//! - **Regular** (`groups == 1`, pointwise included): for each output pixel the taps inside the
//!   input form a rectangle; with dilation 1 each of its kernel rows is one contiguous run of
//!   `taps · in_c` values in the channels-last layout, and so are the weights in the blob's
//!   `[out_c][kh][kw][in_c]` layout. Adjacent pixels of a row whose taps clip alike (every
//!   interior pixel) share a tile; padded taps are skipped (they read 0), so the loop has no
//!   bounds check per value. A layer with per-channel pad values runs its border pixels one by
//!   one through [`pixel_with_pad_values`].
//! - **Depthwise** (`groups == in_c == out_c`): four channels at a time, their weights
//!   transposed once to `[tap][4]` on the stack, so each tap reads four consecutive inputs and
//!   four consecutive weights.
//! - Everything else (grouped but not depthwise, more than [`MAX_DEPTHWISE_TAPS`] depthwise
//!   taps) runs the reference kernel.
//!
//! The engine picks these on targets where build.rs sets `icefold_fast_f32` (the hard-float
//! microcontrollers); the tests run them on the host too. Output element `(pixel, channel)` is at `pixel * out_stride + channel`, with
//! `out_stride` set in one place per kernel.

use super::simd;
use crate::kernels::reference::{self, elementwise};
use crate::kernels::{Activation, ConvGeometry};

/// Largest `kernel_h · kernel_w` of the fast depthwise loop (its stack buffer is
/// `4 · MAX_DEPTHWISE_TAPS` f32: 400 bytes).
pub const MAX_DEPTHWISE_TAPS: usize = 25;

/// Convolution with the reference [`conv2d`](reference::conv::conv2d)'s contract (same
/// arguments, same result up to summation order).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
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
    let conv = Conv {
        g: params,
        in_dims,
        out_dims,
        input,
        weights,
        bias,
        pad_values,
    };
    let [_, _, in_c] = in_dims;
    let [_, _, out_c] = out_dims;
    let taps = params.kernel[0].saturating_mul(params.kernel[1]);
    let usable = taps > 0
        && in_c > 0
        && out_c > 0
        && !params.stride.contains(&0)
        && !params.dilation.contains(&0);
    // A channel slice read in place (input pixels wider than `in_c`): the depthwise loop and the
    // regular one with one tap per kernel row read it at its stride; the reference kernel
    // takes the other shapes (a row's taps are not one run).
    let slice_input = params.strided_input(in_c);
    if usable && params.groups == 1 && (!slice_input || params.kernel[1] == 1) {
        regular(&conv, activation, output);
    } else if usable
        && params.groups == in_c
        && params.groups == out_c
        && taps <= MAX_DEPTHWISE_TAPS
    {
        depthwise(&conv, activation, output);
    } else {
        reference::conv::conv2d(
            params, activation, in_dims, input, out_dims, output, weights, bias, pad_values,
        );
    }
}

/// The reference [`activate`](elementwise::activate), with ReLU and clip as compares and
/// selects: `f32::max` and `min` are calls to `fmaxf` / `fminf` on a Cortex-M4 (no VMAXNM
/// before Armv8), about 20 instructions per output for ReLU and 40 for clip. Same values
/// (NaN gives the other operand, as `max` / `min` do); a zero may keep its sign where the
/// reference's `max(-0.0, 0.0)` leaves it unspecified.
pub(super) fn activate(activation: &Activation, values: &mut [f32]) {
    match *activation {
        Activation::Relu => values.iter_mut().for_each(|v| *v = max(*v, 0.0)),
        Activation::Clip { lo, hi } => values.iter_mut().for_each(|v| *v = min(max(*v, lo), hi)),
        _ => elementwise::activate(activation, values),
    }
}

/// `f32::max`: the larger, or the number if one is NaN.
#[inline(always)]
fn max(v: f32, lo: f32) -> f32 {
    if v >= lo || lo.is_nan() {
        v
    } else {
        lo
    }
}

/// `f32::min`: the smaller, or the number if one is NaN.
#[inline(always)]
fn min(v: f32, hi: f32) -> f32 {
    if v <= hi || hi.is_nan() {
        v
    } else {
        hi
    }
}

/// The operands of one convolution, except its output.
struct Conv<'a> {
    g: &'a ConvGeometry,
    in_dims: [usize; 3],
    out_dims: [usize; 3],
    input: &'a [f32],
    weights: &'a [f32],
    bias: &'a [f32],
    pad_values: &'a [f32],
}

/// Taps `lo..hi` of a window along one axis that fall inside the input for output `out`:
/// `out · stride + tap · dilation − pad ∈ 0..size` (empty if none; `stride`, `dilation` ≥ 1).
#[inline]
fn valid_taps(
    out: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    kernel: usize,
    size: usize,
) -> (usize, usize) {
    let Some(start) = out.checked_mul(stride) else {
        return (0, 0);
    };
    // Taps before `lo` read above/left of the input.
    let lo = pad.saturating_sub(start).div_ceil(dilation).min(kernel);
    // Tap t is inside iff start + t·d < size + pad.
    let hi = match (size + pad).checked_sub(start) {
        Some(room) if room > 0 => ((room - 1) / dilation + 1).min(kernel),
        _ => 0,
    };
    (lo, hi.max(lo))
}

/// Input coordinate of tap `tap` for output `out` (only called for valid taps).
#[inline(always)]
fn coord(out: usize, stride: usize, tap: usize, dilation: usize, pad: usize) -> usize {
    (out * stride + tap * dilation).wrapping_sub(pad)
}

/// `acc[k][p] += Σ_i w[k][i] · x[p][i]` for four weight rows and two pixels, over the length
/// of the shortest slice.
#[inline(always)]
fn tile4x2(acc: &mut [[f32; 2]; 4], w: [&[f32]; 4], x: [&[f32]; 2]) {
    let n = w.iter().chain(&x).map(|s| s.len()).min().unwrap_or(0);
    simd::mla_4x2(acc, w, x, simd::Rows::one(n));
}

/// [`tile4x2`] for one pixel.
#[inline(always)]
pub(super) fn tile4x1(acc: &mut [f32; 4], w: [&[f32]; 4], x: &[f32]) {
    let n = w.iter().map(|s| s.len()).min().unwrap_or(0).min(x.len());
    simd::mla_4x1(acc, w, x, simd::Rows::one(n));
}

/// One weight row and one pixel (the output channels left over from the tiles of four).
#[inline(always)]
pub(super) fn tile1x1(acc: &mut f32, w: &[f32], x: &[f32]) {
    *acc = w.iter().zip(x).fold(*acc, |a, (w, x)| a + w * x);
}

/// Where one output pixel's taps inside the input lie.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Window {
    /// Valid kernel rows.
    rows: (usize, usize),
    /// Valid kernel columns.
    cols: (usize, usize),
}

#[derive(Clone, Copy)]
/// The contiguous runs of one window's valid taps: for each valid kernel row, one run of
/// `taps · in_c` values with dilation 1, else one run per tap.
struct Runs {
    kw: usize,
    in_w: usize,
    in_c: usize,
    /// Elements between input pixels (`in_c`, or a channel slice's wider storage).
    in_stride: usize,
    dh: usize,
    dw: usize,
}

impl Runs {
    /// Calls `f(weight offset, input offsets, length)` for each run of `win`, for pixels whose
    /// tap (0, 0) is at input offset `origin[p]` (wrapping when it lies in the padding: only
    /// valid taps are read, and their offsets are in range).
    #[inline(always)]
    fn each(&self, win: Window, origin: [usize; 2], mut f: impl FnMut(usize, [usize; 2], usize)) {
        let Runs {
            kw,
            in_w,
            in_c,
            in_stride,
            dh,
            dw,
        } = *self;
        let (ky0, ky1) = win.rows;
        let (kx0, kx1) = win.cols;
        for ky in ky0..ky1 {
            let mut kx = kx0;
            while kx < kx1 {
                let taps = if dw == 1 { kx1 - kx } else { 1 };
                let w_at = (ky * kw + kx) * in_c;
                let tap_at = (ky * dh * in_w + kx * dw) * in_stride;
                f(w_at, origin.map(|at| at.wrapping_add(tap_at)), taps * in_c);
                kx += taps;
            }
        }
    }
}

/// `groups == 1`.
fn regular(c: &Conv<'_>, activation: &Activation, output: &mut [f32]) {
    let [in_h, in_w, in_c] = c.in_dims;
    let g = c.g;
    let [out_h, out_w, out_c] = c.out_dims;
    // The one place the output's pixel stride is set (a view into a concatenation: wider).
    let out_stride = g.out_stride(out_c);
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [dh, dw] = g.dilation;
    let [pt, pl, _, _] = g.pad;
    let per_out = kh * kw * in_c;
    // Input pixels `in_stride` apart (a channel slice read in place, only with `kw == 1`: a
    // kernel row is then one tap, one run).
    let in_stride = g.in_stride(in_c);
    let window = |oy: usize, ox: usize| Window {
        rows: valid_taps(oy, sh, dh, pt, kh, in_h),
        cols: valid_taps(ox, sw, dw, pl, kw, in_w),
    };
    let runs = Runs {
        kw,
        in_w,
        in_c,
        in_stride,
        dh,
        dw,
    };
    let Some(weights) = c.weights.get(..out_c * per_out) else {
        return;
    };
    for oy in 0..out_h {
        let mut ox = 0;
        while ox < out_w {
            let win = window(oy, ox);
            let full = win.rows == (0, kh) && win.cols == (0, kw);
            if !full && !c.pad_values.is_empty() {
                let at = (oy * out_w + ox) * out_stride;
                if let Some(out_px) = output.get_mut(at..at + out_c) {
                    pixel_with_pad_values(c, oy, ox, out_px);
                    activate(activation, out_px);
                }
                ox += 1;
                continue;
            }
            let pixels = if ox + 1 < out_w && window(oy, ox + 1) == win {
                2
            } else {
                1
            };
            // Input offset of tap (0, 0) of each pixel (wrapping when it lies in the padding).
            let origin = [ox, ox + pixels - 1].map(|ox| {
                let iy = coord(oy, sh, 0, dh, pt);
                let ix = coord(ox, sw, 0, dw, pl);
                iy.wrapping_mul(in_w)
                    .wrapping_add(ix)
                    .wrapping_mul(in_stride)
            });
            let out_at = [ox, ox + pixels - 1].map(|ox| (oy * out_w + ox) * out_stride);
            // With dilation 1, the whole window in one call:
            // weight and input offsets of its first valid tap, and its rows.
            let whole = {
                let ((ky0, ky1), (kx0, kx1)) = (win.rows, win.cols);
                let run = (kx1 - kx0) * in_c;
                (dw == 1 && ky1 > ky0 && run > 0).then(|| {
                    let tap_at = (ky0 * dh * in_w + kx0) * in_stride;
                    let shape = simd::Rows {
                        rows: ky1 - ky0,
                        len: run,
                        x_step: dh * in_w * in_stride,
                        w_step: kw * in_c,
                    };
                    let x_at = origin.map(|at| at.wrapping_add(tap_at));
                    ((ky0 * kw + kx0) * in_c, x_at, shape)
                })
            };
            let mut o = 0;
            while o + 4 <= out_c {
                let rows: [&[f32]; 4] = core::array::from_fn(|k| {
                    let at = (o + k) * per_out;
                    weights.get(at..at + per_out).unwrap_or_default()
                });
                let b: [f32; 4] =
                    core::array::from_fn(|k| c.bias.get(o + k).copied().unwrap_or_default());
                let read =
                    |at: usize, n: usize| c.input.get(at..at.wrapping_add(n)).unwrap_or_default();
                let wrow =
                    |k: usize, at: usize, n: usize| rows[k].get(at..at + n).unwrap_or_default();
                if pixels == 2 {
                    let mut acc = b.map(|b| [b; 2]);
                    if let Some((w_at, x_at, shape)) = whole {
                        let w = rows.map(|r| r.get(w_at..).unwrap_or_default());
                        let x = x_at.map(|at| c.input.get(at..).unwrap_or_default());
                        simd::mla_4x2(&mut acc, w, x, shape);
                    } else {
                        runs.each(win, origin, |w_at, x_at, n| {
                            let w = core::array::from_fn(|k| wrow(k, w_at, n));
                            tile4x2(&mut acc, w, x_at.map(|at| read(at, n)));
                        });
                    }
                    for (p, at) in out_at.iter().enumerate() {
                        for (k, a) in acc.iter().enumerate() {
                            if let Some(y) = output.get_mut(at + o + k) {
                                *y = a[p];
                            }
                        }
                    }
                } else {
                    let mut acc = b;
                    if let Some((w_at, x_at, shape)) = whole {
                        let w = rows.map(|r| r.get(w_at..).unwrap_or_default());
                        let x = c.input.get(x_at[0]..).unwrap_or_default();
                        simd::mla_4x1(&mut acc, w, x, shape);
                    } else {
                        runs.each(win, origin, |w_at, x_at, n| {
                            let w = core::array::from_fn(|k| wrow(k, w_at, n));
                            tile4x1(&mut acc, w, read(x_at[0], n));
                        });
                    }
                    for (k, a) in acc.iter().enumerate() {
                        if let Some(y) = output.get_mut(out_at[0] + o + k) {
                            *y = *a;
                        }
                    }
                }
                o += 4;
            }
            for o in o..out_c {
                let row = weights
                    .get(o * per_out..(o + 1) * per_out)
                    .unwrap_or_default();
                for p in 0..pixels {
                    let mut acc = c.bias.get(o).copied().unwrap_or_default();
                    runs.each(win, origin, |w_at, x_at, n| {
                        let w = row.get(w_at..w_at + n).unwrap_or_default();
                        let x = c
                            .input
                            .get(x_at[p]..x_at[p].wrapping_add(n))
                            .unwrap_or_default();
                        tile1x1(&mut acc, w, x);
                    });
                    if let Some(y) = output.get_mut(out_at[p] + o) {
                        *y = acc;
                    }
                }
            }
            for at in out_at.iter().take(pixels) {
                if let Some(out_px) = output.get_mut(*at..at + out_c) {
                    activate(activation, out_px);
                }
            }
            ox += pixels;
        }
    }
}

/// One border pixel of a layer with per-input-channel pad values, as the reference computes it
/// (then activated).
fn pixel_with_pad_values(c: &Conv<'_>, oy: usize, ox: usize, out_px: &mut [f32]) {
    let [in_h, in_w, in_c] = c.in_dims;
    let g = c.g;
    let [kh, kw] = g.kernel;
    let per_out = kh * kw * in_c;
    let in_stride = g.in_stride(in_c);
    for (o, y) in out_px.iter_mut().enumerate() {
        let row = c
            .weights
            .get(o * per_out..(o + 1) * per_out)
            .unwrap_or_default();
        let mut acc = c.bias.get(o).copied().unwrap_or_default();
        for ky in 0..kh {
            let iy = reference::window_coord(oy, g.stride[0], ky, g.dilation[0], g.pad[0], in_h);
            for kx in 0..kw {
                let ix =
                    reference::window_coord(ox, g.stride[1], kx, g.dilation[1], g.pad[1], in_w);
                let x = match (iy, ix) {
                    (Some(iy), Some(ix)) => {
                        let at = (iy * in_w + ix) * in_stride;
                        c.input.get(at..at + in_c).unwrap_or_default()
                    }
                    _ => c.pad_values,
                };
                let w_at = (ky * kw + kx) * in_c;
                tile1x1(&mut acc, row.get(w_at..w_at + in_c).unwrap_or_default(), x);
            }
        }
        *y = acc;
    }
}

/// `groups == in_c == out_c`, at most [`MAX_DEPTHWISE_TAPS`] taps: four channels at a time
/// over every output pixel, their weights transposed to `[tap][4]` once, so a tap reads four
/// consecutive inputs and four consecutive weights. Leftover channels one at a time.
fn depthwise(c: &Conv<'_>, activation: &Activation, output: &mut [f32]) {
    let [in_h, in_w, channels] = c.in_dims;
    let g = c.g;
    let [out_h, out_w, out_c] = c.out_dims;
    // The one place the output's pixel stride is set (a view into a concatenation: wider).
    let out_stride = g.out_stride(out_c);
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [dh, dw] = g.dilation;
    let [pt, pl, _, _] = g.pad;
    let taps = kh * kw;
    // Input pixels `in_stride` apart (a channel slice read in place: wider than `channels`).
    let in_stride = g.in_stride(channels);
    let mut quad_weights = [[0.0f32; 4]; MAX_DEPTHWISE_TAPS];
    let mut c0 = 0;
    while c0 < channels {
        let lanes = (channels - c0).min(4);
        for (t, w) in quad_weights.iter_mut().take(taps).enumerate() {
            for (k, w) in w.iter_mut().enumerate() {
                // Lanes past the last channel weigh 0 and are not stored.
                *w = if k < lanes {
                    c.weights
                        .get((c0 + k) * taps + t)
                        .copied()
                        .unwrap_or_default()
                } else {
                    0.0
                };
            }
        }
        let bias: [f32; 4] =
            core::array::from_fn(|k| c.bias.get(c0 + k).copied().unwrap_or_default());
        // Four lanes of `values` from channel `c0`, zeros past its end.
        let quad = |values: &[f32], at: usize| -> [f32; 4] {
            match values.get(at..at + 4) {
                Some(&[a, b, c, d]) => [a, b, c, d],
                _ => core::array::from_fn(|k| values.get(at + k).copied().unwrap_or_default()),
            }
        };
        let pads = quad(c.pad_values, c0);
        for oy in 0..out_h {
            let rows = valid_taps(oy, sh, dh, pt, kh, in_h);
            for ox in 0..out_w {
                let cols = valid_taps(ox, sw, dw, pl, kw, in_w);
                let mut acc = bias;
                if !c.pad_values.is_empty() && (rows != (0, kh) || cols != (0, kw)) {
                    // Border with pad values: every tap, padded ones reading the pad values.
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let inside =
                                (rows.0..rows.1).contains(&ky) && (cols.0..cols.1).contains(&kx);
                            let x = if inside {
                                let iy = coord(oy, sh, ky, dh, pt);
                                let ix = coord(ox, sw, kx, dw, pl);
                                quad(c.input, (iy * in_w + ix) * in_stride + c0)
                            } else {
                                pads
                            };
                            let w = quad_weights.get(ky * kw + kx).copied().unwrap_or_default();
                            for k in 0..4 {
                                acc[k] += w[k] * x[k];
                            }
                        }
                    }
                } else if rows.0 >= rows.1 || cols.0 >= cols.1 {
                    // Every tap in the zero padding (a pad wider than the dilated kernel's
                    // reach): the bias alone, and no input coordinate to compute (it would
                    // wrap below zero).
                } else if lanes == 4 {
                    // Four whole channels: the window's taps in one call.
                    let (ky0, kx0) = (rows.0, cols.0);
                    let taps = simd::Taps {
                        rows: rows.1 - ky0,
                        cols: cols.1 - kx0,
                        x_col: dw * in_stride,
                        x_row: dh * in_w * in_stride,
                        w_row: 4 * kw,
                    };
                    let x_at = (coord(oy, sh, ky0, dh, pt) * in_w + coord(ox, sw, kx0, dw, pl))
                        * in_stride
                        + c0;
                    let x = c.input.get(x_at..).unwrap_or_default();
                    let w = quad_weights.as_flattened().get(4 * (ky0 * kw + kx0)..);
                    simd::mla_taps(&mut acc, x, w.unwrap_or_default(), taps);
                } else {
                    for ky in rows.0..rows.1 {
                        let iy = coord(oy, sh, ky, dh, pt);
                        let w_row = quad_weights.get(ky * kw..).unwrap_or_default();
                        for kx in cols.0..cols.1 {
                            let ix = coord(ox, sw, kx, dw, pl);
                            let x = quad(c.input, (iy * in_w + ix) * in_stride + c0);
                            let w = w_row.get(kx).copied().unwrap_or_default();
                            for k in 0..4 {
                                acc[k] += w[k] * x[k];
                            }
                        }
                    }
                }
                let at = (oy * out_w + ox) * out_stride + c0;
                if let Some(y) = output.get_mut(at..at + lanes) {
                    y.copy_from_slice(&acc[..lanes]);
                }
            }
        }
        c0 += 4;
    }
    for p in 0..out_h * out_w {
        let at = p * out_stride;
        if let Some(out_px) = output.get_mut(at..at + out_c) {
            activate(activation, out_px);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Unit roundoff of f32.
    const U: f32 = f32::EPSILON / 2.0;

    /// Random values in `[-1, 1)`, or small integers in `-4..=4` (`integers`: every product and
    /// partial sum of the test shapes is then exact in f32, in any order).
    fn values(n: usize, seed: &mut u64, integers: bool) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = (*seed >> 40) as f32 / (1u64 << 24) as f32;
                if integers {
                    (unit * 9.0).floor() - 4.0
                } else {
                    unit * 2.0 - 1.0
                }
            })
            .collect()
    }

    /// Checks `got` against the reference `want`. Both sum the same `terms` products and the
    /// bias in different orders; each order's rounding error is at most `γ_terms · Σ|terms|`
    /// (Higham, recursive summation with rounded products, `γ_n = n·u / (1 − n·u)`), so they
    /// differ by at most twice that: `magnitude` is `Σ|terms| + |bias|` (the same layer on the
    /// operands' absolute values). The activations used are 1-Lipschitz, which keeps the
    /// bound. With integer operands every sum is exact: equal bit for bit.
    fn check(got: &[f32], want: &[f32], magnitude: &[f32], terms: usize, integers: bool) {
        assert_eq!(got.len(), want.len());
        let n = (terms + 2) as f32;
        let gamma = n * U / (1.0 - n * U);
        for (i, ((g, w), m)) in got.iter().zip(want).zip(magnitude).enumerate() {
            if integers {
                assert_eq!(g.to_bits(), w.to_bits(), "element {i}: {g} vs {w}");
            } else {
                assert!(
                    (g - w).abs() <= 2.0 * gamma * m,
                    "element {i}: {g} vs {w} (bound {})",
                    2.0 * gamma * m
                );
            }
        }
    }

    fn abs(v: &[f32]) -> Vec<f32> {
        v.iter().map(|v| v.abs()).collect()
    }

    fn out_len(size: usize, k: usize, s: usize, d: usize, pa: usize, pb: usize) -> Option<usize> {
        (size + pa + pb)
            .checked_sub(d * (k - 1) + 1)
            .map(|n| n / s + 1)
    }

    fn activation(pick: u8) -> Activation {
        match pick % 3 {
            0 => Activation::Identity,
            1 => Activation::Relu,
            _ => Activation::Clip { lo: -0.5, hi: 0.75 },
        }
    }

    prop_compose! {
        /// Regular, pointwise, depthwise (`groups == c`) and grouped convolutions.
        fn case()(kind in 0u8..4, c in 1usize..=9, ocg in 1usize..=9, kh in 1usize..=4, kw in 1usize..=4,
                  sh in 1usize..=3, sw in 1usize..=3, dh in 1usize..=2, dw in 1usize..=3,
                  pad in proptest::array::uniform4(0usize..=2), h in 1usize..=9, w in 1usize..=11)
            -> (ConvGeometry, [usize; 3], usize)
        {
            let (groups, c, out_c, kernel) = match kind {
                0 => (1, c, ocg, [kh, kw]),
                1 => (1, c, ocg, [1, 1]),
                2 => (c, c, c, [kh, kw]),
                // Grouped, not depthwise: the reference loop.
                _ => (2, 2 * c, 2 * ocg, [kh, kw]),
            };
            let g = ConvGeometry { kernel, stride: [sh, sw], dilation: [dh, dw], pad, groups, out_pixel_stride: 0, in_pixel_stride: 0 };
            (g, [h, w, c], out_c)
        }
    }

    proptest! {
        #[test]
        fn conv_matches_reference((g, in_dims, out_c) in case(), with_pad_values in any::<bool>(),
                                  integers in any::<bool>(), act in any::<u8>(), mut seed in any::<u64>()) {
            let [h, w, c] = in_dims;
            let oh = out_len(h, g.kernel[0], g.stride[0], g.dilation[0], g.pad[0], g.pad[2]);
            let ow = out_len(w, g.kernel[1], g.stride[1], g.dilation[1], g.pad[1], g.pad[3]);
            let (Some(oh), Some(ow)) = (oh, ow) else { return Ok(()) };
            let out_dims = [oh, ow, out_c];
            let x = values(h * w * c, &mut seed, integers);
            let terms = g.kernel[0] * g.kernel[1] * (c / g.groups);
            let wt = values(out_c * terms, &mut seed, integers);
            let b = values(out_c, &mut seed, integers);
            let pv = if with_pad_values { values(c, &mut seed, integers) } else { Vec::new() };
            let act = activation(act);
            let n = oh * ow * out_c;
            let (mut got, mut want, mut magnitude) =
                (std::vec![f32::NAN; n], std::vec![f32::NAN; n], std::vec![f32::NAN; n]);
            conv2d(&g, &act, in_dims, &x, out_dims, &mut got, &wt, &b, &pv);
            reference::conv::conv2d(&g, &act, in_dims, &x, out_dims, &mut want, &wt, &b, &pv);
            reference::conv::conv2d(&g, &Activation::Identity, in_dims, &abs(&x), out_dims,
                &mut magnitude, &abs(&wt), &abs(&b), &abs(&pv));
            check(&got, &want, &magnitude, terms, integers);
        }

        #[test]
        fn dense_matches_reference(n_in in 1usize..70, n_out in 1usize..11, positions in 1usize..4,
                                   integers in any::<bool>(), act in any::<u8>(), mut seed in any::<u64>()) {
            let wt = values(n_in * n_out, &mut seed, integers);
            let x = values(n_in * positions, &mut seed, integers);
            let b = values(n_out, &mut seed, integers);
            let act = activation(act);
            let (mut got, mut want, mut magnitude) =
                (std::vec![f32::NAN; n_out], std::vec![f32::NAN; n_out], std::vec![f32::NAN; n_out]);
            super::super::dense_f32::dense(&act, &wt, &b, &x, &mut got);
            reference::dense::dense(&act, &wt, &b, &x, &mut want);
            reference::dense::dense(&Activation::Identity, &abs(&wt), &abs(&b), &abs(&x), &mut magnitude);
            check(&got, &want, &magnitude, n_in * positions, integers);
        }

        #[test]
        fn inconsistent_sizes_do_not_panic(n_in in 0usize..60, n_out in 0usize..60, n_w in 0usize..60,
                                           n_b in 0usize..6, n_pv in 0usize..4,
                                           (g, in_dims, out_c) in case(), oh in 0usize..5, ow in 0usize..5) {
            let mut out = std::vec![0.0f32; n_out];
            conv2d(&g, &Activation::Relu, in_dims, &std::vec![1.0; n_in], [oh, ow, out_c], &mut out,
                &std::vec![1.0; n_w], &std::vec![1.0; n_b], &std::vec![1.0; n_pv]);
            super::super::dense_f32::dense(&Activation::Relu, &std::vec![1.0; n_w], &std::vec![1.0; n_b],
                &std::vec![1.0; n_in], &mut out);
        }
    }

    proptest! {
        #[test]
        fn activations_match_reference(values in proptest::collection::vec(prop_oneof![
            any::<f32>(), Just(0.0f32), Just(-0.0), Just(f32::NAN), Just(f32::INFINITY),
            Just(f32::NEG_INFINITY), -8.0f32..8.0], 0..20),
            lo in prop_oneof![Just(0.0f32), -2.0f32..2.0, Just(f32::NAN)], width in 0.0f32..4.0) {
            for act in [Activation::Relu, Activation::Clip { lo, hi: lo + width }] {
                let mut got = values.clone();
                let mut want = values.clone();
                activate(&act, &mut got);
                elementwise::activate(&act, &mut want);
                for (g, w) in got.iter().zip(&want) {
                    // Equal values (a zero's sign may differ: `f32::max` leaves it open).
                    prop_assert!(g == w || (g.is_nan() && w.is_nan()), "{act:?}: {g} vs {w}");
                }
            }
        }
    }

    /// A view output (zero-copy concatenation: pixels `out_pixel_stride` apart) lands where the
    /// reference puts it, bit for bit on integer values, and the channels between stay untouched.
    #[test]
    fn a_strided_output_goes_where_the_reference_puts_it() {
        for groups in [1, 8] {
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
            let seed = &mut 5;
            let input = values(6 * 5 * 8, seed, true);
            let weights = values(out_c * 9 * (8 / groups), seed, true);
            let bias = values(out_c, seed, true);
            let span = (6 * 5 - 1) * stride + out_c;
            let (mut got, mut want) = (std::vec![7.0f32; span], std::vec![7.0f32; span]);
            let out_dims = [6, 5, out_c];
            conv2d(
                &g,
                &Activation::Relu,
                in_dims,
                &input,
                out_dims,
                &mut got,
                &weights,
                &bias,
                &[],
            );
            reference::conv::conv2d(
                &g,
                &Activation::Relu,
                in_dims,
                &input,
                out_dims,
                &mut want,
                &weights,
                &bias,
                &[],
            );
            assert_eq!(got, want, "groups {groups}");
            assert_eq!(
                got[out_c], 7.0,
                "a channel of another producer was overwritten"
            );
        }
    }

    #[test]
    fn valid_taps_clip_the_window() {
        // 3 taps, pad 1, input 4: output 0 loses tap 0, output 3 (stride 1) loses tap 2.
        assert_eq!(valid_taps(0, 1, 1, 1, 3, 4), (1, 3));
        assert_eq!(valid_taps(1, 1, 1, 1, 3, 4), (0, 3));
        assert_eq!(valid_taps(3, 1, 1, 1, 3, 4), (0, 2));
        // Dilation 2, pad 2: taps at -2, 0, 2 → taps 1 and 2.
        assert_eq!(valid_taps(0, 1, 2, 2, 3, 4), (1, 3));
        // A window entirely in the padding.
        assert_eq!(valid_taps(9, 1, 1, 0, 3, 4), (0, 0));
    }
}
