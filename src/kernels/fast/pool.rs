//! Fast int8 max and average pooling: the same results as
//! [`reference::int8::pool::pool`](crate::kernels::reference::int8::pool::pool), byte for byte.
//!
//! The reference reduces one channel of one output at a time and finds every tap's input
//! coordinates with checked arithmetic: about 360 instructions per output of SqueezeNet's 3x3
//! max pooling over 64 channels on the Cortex-M4F. Here an output pixel's taps inside the input
//! are found once (they form a rectangle), and each tap adds a run of its pixel's channels
//! (channels-last: adjacent bytes) to the window's reductions: the maximum four channels per
//! word ([`simd::max_i8x4`], SSUB8 and SEL on the DSP cores), the sum channel by channel.
//! Maxima and wrapping sums do not depend on their order, and each output is finished by the
//! reference's own [`reduced`] from the same maximum, sum and count, so the bytes are the same.

use super::simd;
use crate::kernels::reference::int8::pool::{self as reference, reduced, PoolQuant};
use crate::kernels::{PoolGeometry, PoolKind};

/// Channels reduced per pass over a window (the sums take 4 bytes each on the stack).
const CHUNK: usize = 64;

/// Four int8 lanes of -128, the maximum's neutral value.
const MIN_LANES: u32 = 0x8080_8080;

/// The taps of one window axis that fall inside the input: `(first tap, end tap, input
/// coordinate of the first tap)`, the taps `k` with `0 <= o·stride + k − pad < size` (the
/// reference's `window_coord` with dilation 1). `None` where the coordinates overflow (the
/// caller then runs the reference); an empty range where no tap is inside.
fn axis_taps(
    o: usize,
    stride: usize,
    pad: usize,
    kernel: usize,
    size: usize,
) -> Option<(usize, usize, usize)> {
    let start = o.checked_mul(stride)?;
    start.checked_add(kernel)?;
    let first = pad.saturating_sub(start).min(kernel);
    let end = pad.checked_add(size)?.saturating_sub(start).min(kernel);
    Some((first, end.max(first), (start + first).saturating_sub(pad)))
}

/// [`reference::int8::pool::pool`](crate::kernels::reference::int8::pool::pool), the same
/// arguments and results.
#[inline(never)]
pub fn pool(
    params: &PoolGeometry,
    quant: &PoolQuant,
    in_dims: [usize; 3],
    input: &[i8],
    out_dims: [usize; 3],
    output: &mut [i8],
) {
    if cfg!(icefold_reference_only) || !pooled(params, quant, in_dims, input, out_dims, output) {
        reference::pool(params, quant, in_dims, input, out_dims, output);
    }
}

/// The fast loops; `false` where the operands are not the whole tensors the loader guarantees
/// or a coordinate would overflow (found before anything is written), so the reference decides
/// those cases.
fn pooled(
    params: &PoolGeometry,
    quant: &PoolQuant,
    in_dims: [usize; 3],
    input: &[i8],
    out_dims: [usize; 3],
    output: &mut [i8],
) -> bool {
    let [in_h, in_w, channels] = in_dims;
    let [out_h, out_w, _] = out_dims;
    let [kernel_h, kernel_w] = params.kernel;
    let [stride_h, stride_w] = params.stride;
    let [pad_top, pad_left, _, _] = params.pad;
    let whole = |dims: [usize; 2], len: usize| {
        dims[0]
            .checked_mul(dims[1])
            .and_then(|n| n.checked_mul(channels))
            .is_some_and(|n| n <= len)
    };
    if channels == 0
        || out_w == 0
        || !whole([in_h, in_w], input.len())
        || !whole([out_h, out_w], output.len())
    {
        return false;
    }
    // Every window's taps first: a coordinate that overflows leaves the layer to the reference
    // before anything is written.
    let rows = |oy| axis_taps(oy, stride_h, pad_top, kernel_h, in_h);
    let cols = |ox| axis_taps(ox, stride_w, pad_left, kernel_w, in_w);
    if (0..out_h).any(|oy| rows(oy).is_none()) || (0..out_w).any(|ox| cols(ox).is_none()) {
        return false;
    }
    let max = matches!(params.kind, PoolKind::Max);
    let row_len = in_w * channels;
    for (pixel, out_px) in output
        .chunks_exact_mut(channels)
        .take(out_h * out_w)
        .enumerate()
    {
        let (Some((y0, y1, iy)), Some((x0, x1, ix))) = (rows(pixel / out_w), cols(pixel % out_w))
        else {
            return false;
        };
        let (taps_y, taps_x) = (y1 - y0, x1 - x0);
        let real = taps_y * taps_x;
        let top_left = iy * row_len + ix * channels;
        if max {
            let taps = Taps {
                at: top_left,
                rows: taps_y,
                cols: taps_x,
                row_len,
                channels,
            };
            if !max_window(params, quant, input, taps, out_px, real) {
                return false;
            }
            continue;
        }
        // Sums in chunks of channels on the stack, the taps' runs added one after the other.
        let mut c0 = 0;
        for out in out_px.chunks_mut(CHUNK) {
            let n = out.len();
            let runs = (0..taps_y).flat_map(|ty| {
                let at = top_left + ty * row_len + c0;
                (0..taps_x).filter_map(move |tx| input.get(at + tx * channels..)?.get(..n))
            });
            let mut sums = [0i32; CHUNK];
            for run in runs {
                for (s, q) in sums.iter_mut().zip(run) {
                    *s = s.wrapping_add(i32::from(*q));
                }
            }
            for (o, s) in out.iter_mut().zip(sums) {
                *o = reduced(params, quant, i32::from(i8::MIN), s, real);
            }
            c0 += n;
        }
    }
    true
}

/// One window's taps inside the input: `rows` x `cols` runs of a pixel's channels, the first
/// at byte `at`, rows `row_len` and columns `channels` bytes apart.
#[derive(Clone, Copy)]
struct Taps {
    at: usize,
    rows: usize,
    cols: usize,
    row_len: usize,
    channels: usize,
}

/// A window's maxima over the `out.len()` channels of its pixels, finished into `out`: four
/// channels per word with the taps innermost (each word's maximum in a register), then the
/// channels a last partial word leaves one by one. Without rescaling the finish is the clamp,
/// also four lanes at a time; with it, [`reduced`] per channel. `false` if the window's bytes
/// are not all inside `input` (the caller's checks rule that out; the reference would then
/// recompute every output).
fn max_window(
    params: &PoolGeometry,
    quant: &PoolQuant,
    input: &[i8],
    taps: Taps,
    out: &mut [i8],
    real: usize,
) -> bool {
    let n = out.len();
    let Taps {
        at,
        rows,
        cols,
        row_len,
        channels,
    } = taps;
    let last = rows
        .checked_sub(1)
        .zip(cols.checked_sub(1))
        .map(|(r, c)| r * row_len + c * channels + n);
    // The window's bytes as one slice, checked once (no tap inside: every maximum is -128).
    let window = match last {
        Some(end) => match input.get(at..).and_then(|x| x.get(..end)) {
            Some(window) => window,
            None => return false,
        },
        None => &[],
    };
    let clamp = quant.output.clamp;
    let plain = quant.rescale.is_none();
    let lo = u32::from_ne_bytes([clamp.min as u8; 4]);
    let hi = u32::from_ne_bytes([clamp.max as u8; 4]);
    let mut quads = out.chunks_exact_mut(4);
    for (w, quad) in (&mut quads).enumerate() {
        let Some(m) = window
            .get(4 * w..)
            .and_then(|x| simd::max_taps(x, rows, cols, row_len, channels, MIN_LANES))
        else {
            return false;
        };
        if plain {
            // `Clamp::apply`: the minimum first, then the maximum (which wins if they cross).
            let m = simd::min_i8x4(simd::max_i8x4(m, lo), hi).to_le_bytes();
            for (o, m) in quad.iter_mut().zip(m) {
                *o = m as i8;
            }
        } else {
            for (o, m) in quad.iter_mut().zip(m.to_le_bytes()) {
                *o = reduced(params, quant, i32::from(m as i8), 0, real);
            }
        }
    }
    let done = n - quads.into_remainder().len();
    for (c, o) in out.iter_mut().enumerate().skip(done) {
        let mut m = i32::from(i8::MIN);
        for ty in 0..rows {
            for tx in 0..cols {
                if let Some(&q) = window.get(ty * row_len + tx * channels + c) {
                    m = m.max(i32::from(q));
                }
            }
        }
        *o = reduced(params, quant, m, 0, real);
    }
    true
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::kernels::reference::int8::{Clamp, OutputQuant, Requant};
    use proptest::prelude::*;
    use std::vec::Vec;

    fn geometry(kind: PoolKind, k: [usize; 2], s: [usize; 2], pad: [usize; 4]) -> PoolGeometry {
        PoolGeometry {
            kind,
            kernel: k,
            stride: s,
            pad,
        }
    }

    fn out_len(size: usize, k: usize, s: usize, pa: usize, pb: usize) -> Option<usize> {
        (size + pa + pb).checked_sub(k).map(|v| v / s + 1)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Random shapes (channels across the chunk and word boundaries), windows, strides,
        /// pads up to the window (windows wholly in the padding too), both reductions, both
        /// average counts, with and without the output's own rescaling, zero points and clamps.
        #[test]
        fn pooling_equals_reference(
            h in 1usize..9, w in 1usize..9, c in prop_oneof![1usize..9, 60usize..70, Just(128usize), 129usize..133],
            k in (1usize..5, 1usize..5), s in (1usize..4, 1usize..4),
            pad in (0usize..4, 0usize..4, 0usize..4, 0usize..4),
            kind in prop_oneof![Just(PoolKind::Max), any::<bool>().prop_map(|count_include_pad| PoolKind::Average { count_include_pad })],
            rescale in prop::option::of((1i32 << 29..i32::MAX, -8i32..4)),
            zp_in in any::<i8>(), zp_out in any::<i8>(),
            clamp in prop_oneof![Just((i8::MIN, i8::MAX)), (i8::MIN..0, 0i8..=i8::MAX)],
            seed in any::<u64>(),
        ) {
            let (pa, pb) = ((pad.0).min(k.0 - 1), (pad.2).min(k.0 - 1));
            let (pl, pr) = ((pad.1).min(k.1 - 1), (pad.3).min(k.1 - 1));
            let (Some(oh), Some(ow)) = (out_len(h, k.0, s.0, pa, pb), out_len(w, k.1, s.1, pl, pr)) else {
                return Ok(());
            };
            let g = geometry(kind, [k.0, k.1], [s.0, s.1], [pa, pl, pb, pr]);
            let quant = PoolQuant {
                input_zero_point: zp_in,
                rescale: rescale.map(|(multiplier, shift)| Requant { multiplier, shift }),
                output: OutputQuant { zero_point: zp_out, clamp: Clamp { min: clamp.0, max: clamp.1 } },
            };
            let mut state = seed | 1;
            let input: Vec<i8> = (0..h * w * c)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as i8
                })
                .collect();
            let mut want = std::vec![0i8; oh * ow * c];
            let mut got = std::vec![1i8; oh * ow * c];
            reference::pool(&g, &quant, [h, w, c], &input, [oh, ow, c], &mut want);
            prop_assert!(pooled(&g, &quant, [h, w, c], &input, [oh, ow, c], &mut got));
            prop_assert_eq!(got, want);
        }
    }

    /// Windows larger than the input with padding on every side (the taps clipped on both
    /// ends), and a global pool, by the same comparison on fixed cases.
    #[test]
    fn clipped_and_global_windows_equal_reference() {
        let input: Vec<i8> = (0..5 * 4 * 12)
            .map(|i| (i * 37 % 251) as u8 as i8)
            .collect();
        let quant = PoolQuant {
            input_zero_point: -3,
            rescale: None,
            output: OutputQuant {
                zero_point: 0,
                clamp: Clamp::FULL,
            },
        };
        for (kind, k, s, pad, out) in [
            (PoolKind::Max, [7, 6], [1, 1], [3, 3, 3, 3], [5, 4]),
            (
                PoolKind::Average {
                    count_include_pad: true,
                },
                [7, 6],
                [2, 1],
                [3, 3, 3, 3],
                [3, 4],
            ),
            (
                PoolKind::Average {
                    count_include_pad: false,
                },
                [5, 4],
                [1, 1],
                [0, 0, 0, 0],
                [1, 1],
            ),
            (PoolKind::Max, [5, 4], [1, 1], [0, 0, 0, 0], [1, 1]),
        ] {
            let g = geometry(kind, k, s, pad);
            let mut want = std::vec![0i8; out[0] * out[1] * 12];
            let mut got = want.clone();
            reference::pool(
                &g,
                &quant,
                [5, 4, 12],
                &input,
                [out[0], out[1], 12],
                &mut want,
            );
            assert!(pooled(
                &g,
                &quant,
                [5, 4, 12],
                &input,
                [out[0], out[1], 12],
                &mut got
            ));
            assert_eq!(got, want, "{kind:?} {k:?} {s:?} {pad:?}");
        }
    }

    /// Operands shorter than their shapes are left to the reference (nothing written here).
    #[test]
    fn short_operands_are_left_to_the_reference() {
        let g = geometry(PoolKind::Max, [2, 2], [2, 2], [0; 4]);
        let quant = PoolQuant {
            input_zero_point: 0,
            rescale: None,
            output: OutputQuant {
                zero_point: 0,
                clamp: Clamp::FULL,
            },
        };
        let mut out = [5i8; 4];
        assert!(!pooled(
            &g,
            &quant,
            [4, 4, 4],
            &[0; 63],
            [2, 2, 1],
            &mut out
        ));
        assert_eq!(out, [5; 4]);
        assert!(!pooled(
            &g,
            &quant,
            [4, 4, 1],
            &[0; 16],
            [2, 2, 1],
            &mut out[..3]
        ));
    }
}
