//! Max and average pooling over `[H, W, C]` activations.

use super::{elementwise::activate, window_coord};
use crate::kernels::{Activation, PoolGeometry, PoolKind};

/// Pooling with stride and asymmetric padding, followed by the fused activation.
///
/// Max ignores the padding (`f32::max`, so NaN inputs are skipped). Average sums the real
/// elements of the window in row-major `(ky, kx)` order and divides by the window area when
/// `count_include_pad` (ONNX semantics: padded positions count as zeros) or else by the number of
/// real elements. A window with no real element (refused at load) yields `-inf` for max and 0 for
/// average.
pub fn pool(
    params: &PoolGeometry,
    activation: &Activation,
    in_dims: [usize; 3],
    input: &[f32],
    out_dims: [usize; 3],
    output: &mut [f32],
) {
    let [in_h, in_w, channels] = in_dims;
    let [out_h, out_w, _] = out_dims;
    let [kernel_h, kernel_w] = params.kernel;
    let [stride_h, stride_w] = params.stride;
    let [pad_top, pad_left, _, _] = params.pad;
    if channels == 0 || out_w == 0 {
        return;
    }
    let start = match params.kind {
        PoolKind::Max => f32::NEG_INFINITY,
        PoolKind::Average { .. } => 0.0,
    };
    for (pixel, out_px) in output
        .chunks_exact_mut(channels)
        .take(out_h * out_w)
        .enumerate()
    {
        let (oy, ox) = (pixel / out_w, pixel % out_w);
        out_px.fill(start);
        let mut real = 0usize;
        for ky in 0..kernel_h {
            let Some(iy) = window_coord(oy, stride_h, ky, 1, pad_top, in_h) else {
                continue;
            };
            for kx in 0..kernel_w {
                let Some(ix) = window_coord(ox, stride_w, kx, 1, pad_left, in_w) else {
                    continue;
                };
                let at = (iy * in_w + ix) * channels;
                let Some(in_px) = input.get(at..at + channels) else {
                    continue;
                };
                real += 1;
                match params.kind {
                    PoolKind::Max => out_px
                        .iter_mut()
                        .zip(in_px)
                        .for_each(|(o, x)| *o = o.max(*x)),
                    PoolKind::Average { .. } => {
                        out_px.iter_mut().zip(in_px).for_each(|(o, x)| *o += x)
                    }
                }
            }
        }
        if let PoolKind::Average { count_include_pad } = params.kind {
            let count = if count_include_pad {
                kernel_h * kernel_w
            } else {
                real
            };
            if count > 0 {
                let count = count as f32;
                out_px.iter_mut().for_each(|o| *o /= count);
            }
        }
        activate(activation, out_px);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    fn params(kind: PoolKind, kernel: [u16; 2], stride: [u16; 2], pad: [u16; 4]) -> PoolGeometry {
        PoolGeometry {
            kind,
            kernel: kernel.map(usize::from),
            stride: stride.map(usize::from),
            pad: pad.map(usize::from),
        }
    }

    #[test]
    fn max_and_average_by_hand() {
        // 2x2 input, one channel: [[1, 2], [3, 4]].
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut out = [0.0f32; 4];
        let max = params(PoolKind::Max, [2, 2], [1, 1], [0, 0, 1, 1]);
        pool(
            &max,
            &Activation::Identity,
            [2, 2, 1],
            &x,
            [2, 2, 1],
            &mut out,
        );
        assert_eq!(out, [4.0, 4.0, 4.0, 4.0]);
        let avg_excl = params(
            PoolKind::Average {
                count_include_pad: false,
            },
            [2, 2],
            [1, 1],
            [0, 0, 1, 1],
        );
        pool(
            &avg_excl,
            &Activation::Identity,
            [2, 2, 1],
            &x,
            [2, 2, 1],
            &mut out,
        );
        assert_eq!(out, [2.5, 3.0, 3.5, 4.0]);
        let avg_incl = params(
            PoolKind::Average {
                count_include_pad: true,
            },
            [2, 2],
            [1, 1],
            [0, 0, 1, 1],
        );
        pool(
            &avg_incl,
            &Activation::Identity,
            [2, 2, 1],
            &x,
            [2, 2, 1],
            &mut out,
        );
        assert_eq!(out, [2.5, 1.5, 1.75, 1.0]);
        // Global average.
        let global = params(
            PoolKind::Average {
                count_include_pad: false,
            },
            [2, 2],
            [1, 1],
            [0; 4],
        );
        pool(
            &global,
            &Activation::Identity,
            [2, 2, 1],
            &x,
            [1, 1, 1],
            &mut out[..1],
        );
        assert_eq!(out[0], 2.5);
    }

    #[test]
    fn max_ignores_negative_inputs_vs_padding() {
        let x = [-5.0f32, -6.0];
        let mut out = [0.0f32; 2];
        let p = params(PoolKind::Max, [1, 2], [1, 2], [0, 1, 0, 0]);
        pool(
            &p,
            &Activation::Identity,
            [1, 2, 1],
            &x,
            [1, 1, 1],
            &mut out[..1],
        );
        assert_eq!(out[0], -5.0, "padding never wins");
    }

    proptest! {
        #[test]
        fn max_pool_matches_naive(h in 1usize..6, w in 1usize..6, c in 1usize..4, k in 1u16..4, s in 1u16..3,
                                  pad in proptest::array::uniform4(0u16..3), data in proptest::collection::vec(-10.0f32..10.0, 150)) {
            prop_assume!(pad.iter().all(|&p| p < k));
            prop_assume!(h + (pad[0] + pad[2]) as usize >= k as usize && w + (pad[1] + pad[3]) as usize >= k as usize);
            let oh = (h + (pad[0] + pad[2]) as usize - k as usize) / s as usize + 1;
            let ow = (w + (pad[1] + pad[3]) as usize - k as usize) / s as usize + 1;
            let x = &data[..h * w * c];
            let mut out = std::vec![0.0f32; oh * ow * c];
            pool(&params(PoolKind::Max, [k, k], [s, s], pad), &Activation::Identity, [h, w, c], x, [oh, ow, c], &mut out);
            for oy in 0..oh { for ox in 0..ow { for ch in 0..c {
                let mut m = f32::NEG_INFINITY;
                for ky in 0..k as isize { for kx in 0..k as isize {
                    let iy = (oy * s as usize) as isize + ky - pad[0] as isize;
                    let ix = (ox * s as usize) as isize + kx - pad[1] as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        m = m.max(x[(iy as usize * w + ix as usize) * c + ch]);
                    }
                }}
                prop_assert_eq!(out[(oy * ow + ox) * c + ch], m);
            }}}
        }
    }
}
