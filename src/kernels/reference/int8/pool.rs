//! int8 max and average pooling over `[H, W, C]` activations.

use super::{OutputQuant, Requant};
use crate::kernels::reference::window_coord;
use crate::kernels::{PoolGeometry, PoolKind};

/// Quantization of one int8 pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolQuant {
    /// Zero point of the input (real zero: what a counted padded position holds).
    pub input_zero_point: i8,
    /// `None`: the output has the input's scale and zero point (TensorFlow Lite's int8 pooling;
    /// `output.zero_point` is not read). `Some(r)`: the output has its own quantization and `r` is
    /// the factor `s_in / s_out` (average pooling's "own rescaling", e.g. after a global pool that
    /// narrows the range).
    pub rescale: Option<Requant>,
    /// Output zero point (read only with `rescale`) and clamp.
    pub output: OutputQuant,
}

/// Pooling with stride and asymmetric padding.
///
/// Geometry and reduction come from `params` (its `activation` is not read: the fused activation
/// is `quant.output.clamp`). Over the window's real elements `q` (row-major order):
/// - max, no rescale: `clamp(max q)`; with rescale: `clamp(zp_out + r(max q − zp_in))`.
/// - average: `n` is the window area if `count_include_pad` (padded positions hold `zp_in`, real
///   zero, as in ONNX) else the number of real elements. No rescale (TensorFlow Lite's rounding):
///   `S = Σ q`, `clamp(S > 0 ? (S + n/2) / n : (S − n/2) / n)` with `/` truncating;
///   with rescale: `clamp(zp_out + div(r(Σ (q − zp_in)), n))` where `div` rounds the same way.
///
/// A window with no real element (refused at load) gives `clamp(-128)` for max and the zero point
/// for average. Sums wrap beyond i32, which needs a window of more than [`MAX_POOL_WINDOW_AREA`](crate::quant::contract::MAX_POOL_WINDOW_AREA)
/// elements (the loader bounds `kernel_h · kernel_w` by it).
pub fn pool(
    params: &PoolGeometry,
    quant: &PoolQuant,
    in_dims: [usize; 3],
    input: &[i8],
    out_dims: [usize; 3],
    output: &mut [i8],
) {
    let [in_h, in_w, channels] = in_dims;
    let [out_h, out_w, _] = out_dims;
    let [kernel_h, kernel_w] = params.kernel;
    let [stride_h, stride_w] = params.stride;
    let [pad_top, pad_left, _, _] = params.pad;
    if channels == 0 || out_w == 0 {
        return;
    }
    for (pixel, out_px) in output
        .chunks_exact_mut(channels)
        .take(out_h * out_w)
        .enumerate()
    {
        let (oy, ox) = (pixel / out_w, pixel % out_w);
        for (c, out) in out_px.iter_mut().enumerate() {
            // Window reduction of channel c: maximum, sum and count of real elements.
            let (mut max, mut sum, mut real) = (i32::from(i8::MIN), 0i32, 0usize);
            for ky in 0..kernel_h {
                let Some(iy) = window_coord(oy, stride_h, ky, 1, pad_top, in_h) else {
                    continue;
                };
                for kx in 0..kernel_w {
                    let Some(ix) = window_coord(ox, stride_w, kx, 1, pad_left, in_w) else {
                        continue;
                    };
                    let Some(&q) = input.get((iy * in_w + ix) * channels + c) else {
                        continue;
                    };
                    let q = i32::from(q);
                    max = max.max(q);
                    sum = sum.wrapping_add(q);
                    real += 1;
                }
            }
            *out = reduced(params, quant, max, sum, real);
        }
    }
}

/// A window's output from its reduction over the real elements: their maximum `max`, wrapping
/// sum `sum` and number `real` (what [`pool`] computes per output and channel; the fast kernel
/// reduces the same values in another order and finishes them here).
#[inline(always)]
pub(crate) fn reduced(
    params: &PoolGeometry,
    quant: &PoolQuant,
    max: i32,
    sum: i32,
    real: usize,
) -> i8 {
    let [kernel_h, kernel_w] = params.kernel;
    let zero_in = i32::from(quant.input_zero_point);
    let value = match (params.kind, quant.rescale) {
        (PoolKind::Max, None) => max,
        (PoolKind::Max, Some(r)) if real > 0 => r
            .apply(max - zero_in)
            .saturating_add(i32::from(quant.output.zero_point)),
        (PoolKind::Max, Some(_)) => max,
        (PoolKind::Average { count_include_pad }, rescale) => {
            let count = if count_include_pad {
                kernel_h.saturating_mul(kernel_w)
            } else {
                real
            };
            let count = i32::try_from(count).unwrap_or(i32::MAX);
            // Padded positions counted in the area hold zp_in.
            let padded = if count_include_pad {
                count.wrapping_sub(i32::try_from(real).unwrap_or(i32::MAX))
            } else {
                0
            };
            match rescale {
                None if count == 0 => zero_in,
                None => rounded_div(sum.wrapping_add(padded.wrapping_mul(zero_in)), count),
                Some(_) if count == 0 => i32::from(quant.output.zero_point),
                Some(r) => {
                    // Σ (q − zp_in) over real elements; counted padding adds 0.
                    let centred = sum.wrapping_sub(
                        zero_in.wrapping_mul(i32::try_from(real).unwrap_or(i32::MAX)),
                    );
                    rounded_div(r.apply(centred), count)
                        .saturating_add(i32::from(quant.output.zero_point))
                }
            }
        }
    };
    quant.output.clamp.apply(value)
}

/// `s / n` rounded to nearest, ties away from zero, TensorFlow Lite's form
/// `(s ± n/2) / n` (saturating instead of overflowing near the i32 limits); `n > 0`.
#[inline]
fn rounded_div(s: i32, n: i32) -> i32 {
    let half = n / 2;
    let nudged = if s > 0 {
        s.saturating_add(half)
    } else {
        s.saturating_sub(half)
    };
    nudged.checked_div(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::testing::{requant_naive, requantize_naive, Gen};
    use super::super::Clamp;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn params(kind: PoolKind, kernel: [u16; 2], stride: [u16; 2], pad: [u16; 4]) -> PoolGeometry {
        PoolGeometry {
            kind,
            kernel: kernel.map(usize::from),
            stride: stride.map(usize::from),
            pad: pad.map(usize::from),
        }
    }

    const AVG_EXCL: PoolKind = PoolKind::Average {
        count_include_pad: false,
    };
    const AVG_INCL: PoolKind = PoolKind::Average {
        count_include_pad: true,
    };

    fn plain(zp: i8) -> PoolQuant {
        PoolQuant {
            input_zero_point: zp,
            rescale: None,
            output: OutputQuant {
                zero_point: zp,
                clamp: Clamp::FULL,
            },
        }
    }

    #[test]
    fn tflite_rounding_by_hand() {
        // 2x2 input, one channel; window 2x2 with padding bottom/right.
        let x = [1i8, 2, 4, -8];
        let mut out = [0i8; 4];
        let max = params(PoolKind::Max, [2, 2], [1, 1], [0, 0, 1, 1]);
        pool(&max, &plain(0), [2, 2, 1], &x, [2, 2, 1], &mut out);
        assert_eq!(out, [4, 2, 4, -8]);
        // Sums -1, -6, -4, -8 over counts 4, 2, 2, 1: -0.25 -> 0, -3, -2, -8.
        let excl = params(AVG_EXCL, [2, 2], [1, 1], [0, 0, 1, 1]);
        pool(&excl, &plain(0), [2, 2, 1], &x, [2, 2, 1], &mut out);
        assert_eq!(out, [0, -3, -2, -8]);
        // Ties away from zero: [1, 2] -> 1.5 -> 2, [-1, -2] -> -1.5 -> -2.
        let row = params(AVG_EXCL, [1, 2], [1, 2], [0; 4]);
        let mut two = [0i8; 2];
        pool(
            &row,
            &plain(0),
            [1, 4, 1],
            &[1, 2, -1, -2],
            [1, 2, 1],
            &mut two,
        );
        assert_eq!(two, [2, -2]);
        // count_include_pad with zp 10: padded positions hold 10 (real zero).
        let incl = params(AVG_INCL, [2, 2], [1, 1], [0, 0, 1, 1]);
        pool(
            &incl,
            &plain(10),
            [2, 2, 1],
            &[30, 50, 10, 10],
            [2, 2, 1],
            &mut out,
        );
        // (30+50+10+10)/4 = 25; (50+10+10+10)/4 = 20; (10·4)/4; (10·4)/4.
        assert_eq!(out, [25, 20, 10, 10]);
    }

    /// The definition in i64, written from the docs.
    fn naive(
        p: &PoolGeometry,
        q: &PoolQuant,
        [h, w, c]: [usize; 3],
        x: &[i8],
        [oh, ow, _]: [usize; 3],
    ) -> Vec<i8> {
        let mut y = Vec::new();
        let round_div = |s: i64, n: i64| {
            if s > 0 {
                (s + n / 2) / n
            } else {
                (s - n / 2) / n
            }
        };
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut vals = Vec::new();
                    for ky in 0..p.kernel[0] as isize {
                        for kx in 0..p.kernel[1] as isize {
                            let iy = oy as isize * p.stride[0] as isize + ky - p.pad[0] as isize;
                            let ix = ox as isize * p.stride[1] as isize + kx - p.pad[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                vals.push(i64::from(x[(iy as usize * w + ix as usize) * c + ch]));
                            }
                        }
                    }
                    let zp = i64::from(q.input_zero_point);
                    let area = (p.kernel[0] * p.kernel[1]) as i64;
                    let (min, max) = (q.output.clamp.min, q.output.clamp.max);
                    let v = match (p.kind, q.rescale) {
                        (PoolKind::Max, None) => {
                            (*vals.iter().max().unwrap()).clamp(min.into(), max.into()) as i8
                        }
                        (PoolKind::Max, Some(r)) => requantize_naive(
                            vals.iter().max().unwrap() - zp,
                            r,
                            q.output.zero_point,
                            min,
                            max,
                        ),
                        (PoolKind::Average { count_include_pad }, r) => {
                            let n = if count_include_pad {
                                area
                            } else {
                                vals.len() as i64
                            };
                            let centred: i64 = vals.iter().map(|v| v - zp).sum();
                            match r {
                                None => {
                                    round_div(centred + n * zp, n).clamp(min.into(), max.into())
                                        as i8
                                }
                                Some(r) => (round_div(requant_naive(centred, r), n)
                                    + i64::from(q.output.zero_point))
                                .clamp(min.into(), max.into())
                                    as i8,
                            }
                        }
                    };
                    y.push(v);
                }
            }
        }
        y
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_naive_definition(kind in prop_oneof![Just(PoolKind::Max), Just(AVG_EXCL), Just(AVG_INCL)],
                                    kh in 1u16..=4, kw in 1u16..=4, sh in 1u16..=3, sw in 1u16..=3,
                                    pad_raw in proptest::array::uniform4(0u16..=3),
                                    h in 1usize..=7, w in 1usize..=7, c in 1usize..=3,
                                    zp_in in prop_oneof![Just(-128i8), Just(127i8), any::<i8>()],
                                    zp_out in prop_oneof![Just(-128i8), Just(127i8), any::<i8>()],
                                    rescale in any::<bool>(), relu in any::<bool>(), seed in any::<u64>()) {
            // Every window holds a real element (the loader's rule): pads smaller than the kernel.
            let pad: [u16; 4] = core::array::from_fn(|i| pad_raw[i] % [kh, kw, kh, kw][i]);
            let p = params(kind, [kh, kw], [sh, sw], pad);
            let padded_h = h + pad[0] as usize + pad[2] as usize;
            let padded_w = w + pad[1] as usize + pad[3] as usize;
            prop_assume!(padded_h >= kh as usize && padded_w >= kw as usize);
            let oh = (padded_h - kh as usize) / sh as usize + 1;
            let ow = (padded_w - kw as usize) / sw as usize + 1;
            let mut gen = Gen(seed);
            let x = gen.i8s(h * w * c);
            let out_zp = if rescale { zp_out } else { zp_in };
            let q = PoolQuant {
                input_zero_point: zp_in,
                rescale: rescale.then(|| gen.requant()),
                output: OutputQuant {
                    zero_point: out_zp,
                    clamp: if relu { Clamp { min: out_zp, max: 127 } } else { Clamp::FULL },
                },
            };
            let mut out = std::vec![0i8; oh * ow * c];
            pool(&p, &q, [h, w, c], &x, [oh, ow, c], &mut out);
            prop_assert_eq!(out, naive(&p, &q, [h, w, c], &x, [oh, ow, c]));
        }

        #[test]
        fn inconsistent_sizes_do_not_panic(n_in in 0usize..40, n_out in 0usize..40,
                                           kind in prop_oneof![Just(PoolKind::Max), Just(AVG_EXCL), Just(AVG_INCL)],
                                           k in proptest::array::uniform2(0u16..5), s in proptest::array::uniform2(0u16..3),
                                           pad in proptest::array::uniform4(0u16..6),
                                           dims in proptest::array::uniform3(0usize..5),
                                           out_dims in proptest::array::uniform3(0usize..5),
                                           rescale in any::<bool>(), seed in any::<u64>()) {
            let mut gen = Gen(seed);
            let q = PoolQuant {
                input_zero_point: gen.i8(),
                rescale: rescale.then(|| Requant { multiplier: gen.next() as i32, shift: gen.next() as i32 }),
                output: OutputQuant { zero_point: gen.i8(), clamp: Clamp::FULL },
            };
            let mut out = std::vec![0i8; n_out];
            pool(&params(kind, k, s, pad), &q, dims, &gen.i8s(n_in), out_dims, &mut out);
        }
    }
}
