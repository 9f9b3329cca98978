//! 2-D convolution over `[H, W, C]` activations.

use super::{dot, elementwise::activate, window_coord};
use crate::kernels::{Activation, ConvGeometry};

/// Convolution with groups (depthwise included), stride, dilation, asymmetric padding and optional
/// per-input-channel border values, followed by the fused activation.
///
/// - `input` is `[h, w, in_c]`, `output` is `[out_h, out_w, out_c]` (`in_dims`, `out_dims`);
/// - `weights` is `[out_c][kernel_h][kernel_w][in_c / groups]`, `bias` is `[out_c]`;
/// - `pad_values` is empty (the border reads 0) or `[in_c]` (the border reads `pad_values[c]`).
///
/// Output channel `o` of group `g = o / (out_c / groups)` sees input channels
/// `g * (in_c / groups) ..`. Each output starts at its bias and adds, for each kernel tap in
/// row-major `(ky, kx)` order, the [`dot`] of the tap's weights with the input channels of the
/// group. Taps in the border add nothing when `pad_values` is empty.
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
    let [in_h, in_w, in_c] = in_dims;
    // Input pixels `in_stride` elements apart: dense, or a channel slice read in place.
    let in_stride = params.in_stride(in_c);
    let [out_h, out_w, out_c] = out_dims;
    let groups = params.groups;
    let [kernel_h, kernel_w] = params.kernel;
    let [stride_h, stride_w] = params.stride;
    let [dil_h, dil_w] = params.dilation;
    let [pad_top, pad_left, _, _] = params.pad;
    let (Some(group_in), Some(group_out)) = (in_c.checked_div(groups), out_c.checked_div(groups))
    else {
        return;
    };
    // Weights of one output channel.
    let per_out = kernel_h * kernel_w * group_in;
    if group_in == 0 || group_out == 0 || out_w == 0 {
        return;
    }
    // Pixel by pixel at the output's pixel stride (a view leaves the other channels alone).
    let pixels = output
        .chunks_mut(params.out_stride(out_c).max(1))
        .filter_map(|px| px.get_mut(..out_c))
        .take(out_h * out_w);
    for (pixel, out_px) in pixels.enumerate() {
        let (oy, ox) = (pixel / out_w, pixel % out_w);
        for (o, b) in out_px.iter_mut().zip(bias) {
            *o = *b;
        }
        for ky in 0..kernel_h {
            let iy = window_coord(oy, stride_h, ky, dil_h, pad_top, in_h);
            for kx in 0..kernel_w {
                let ix = window_coord(ox, stride_w, kx, dil_w, pad_left, in_w);
                let source = match (iy, ix) {
                    (Some(iy), Some(ix)) => {
                        let at = (iy * in_w + ix) * in_stride;
                        input.get(at..at + in_c)
                    }
                    _ if pad_values.is_empty() => None,
                    _ => Some(pad_values),
                };
                let Some(source) = source else { continue };
                let tap = (ky * kernel_w + kx) * group_in;
                let groups = out_px
                    .chunks_exact_mut(group_out)
                    .zip(weights.chunks_exact(group_out * per_out))
                    .zip(source.chunks_exact(group_in));
                for ((out_g, weights_g), x) in groups {
                    for (o, w) in out_g.iter_mut().zip(weights_g.chunks_exact(per_out)) {
                        if let Some(w_tap) = w.get(tap..tap + group_in) {
                            *o += dot(w_tap, x);
                        }
                    }
                }
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
    use std::vec::Vec;

    fn params(
        kernel: [u16; 2],
        stride: [u16; 2],
        dilation: [u16; 2],
        pad: [u16; 4],
        groups: u16,
    ) -> ConvGeometry {
        ConvGeometry {
            out_pixel_stride: 0,
            in_pixel_stride: 0,
            kernel: kernel.map(usize::from),
            stride: stride.map(usize::from),
            dilation: dilation.map(usize::from),
            pad: pad.map(usize::from),
            groups: usize::from(groups),
        }
    }

    /// The textbook definition, indexed directly, accumulated in f64.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        p: &ConvGeometry,
        [h, w, c]: [usize; 3],
        x: &[f32],
        [oh, ow, oc]: [usize; 3],
        wt: &[f32],
        b: &[f32],
        pv: &[f32],
    ) -> Vec<f32> {
        let g = p.groups;
        let (icg, ocg) = (c / g, oc / g);
        let (kh, kw) = (p.kernel[0], p.kernel[1]);
        let mut out = std::vec![0.0f32; oh * ow * oc];
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..oc {
                    let grp = o / ocg;
                    let mut acc = b[o] as f64;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            for i in 0..icg {
                                let ci = grp * icg + i;
                                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                    - p.pad[0] as isize;
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                    - p.pad[1] as isize;
                                let v =
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        x[(iy as usize * w + ix as usize) * c + ci]
                                    } else if pv.is_empty() {
                                        0.0
                                    } else {
                                        pv[ci]
                                    };
                                acc += wt[((o * kh + ky) * kw + kx) * icg + i] as f64 * v as f64;
                            }
                        }
                    }
                    out[(oy * ow + ox) * oc + o] = acc as f32;
                }
            }
        }
        out
    }

    fn out_len(size: usize, k: usize, s: usize, d: usize, pa: usize, pb: usize) -> usize {
        (size + pa + pb - d * (k - 1) - 1) / s + 1
    }

    #[test]
    fn three_by_three_same_padding_by_hand() {
        // 3x3 single-channel input 1..9, all-ones kernel, pad 1: each output sums its neighbourhood.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let p = params([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
        let mut out = [0.0f32; 9];
        conv2d(
            &p,
            &Activation::Identity,
            [3, 3, 1],
            &x,
            [3, 3, 1],
            &mut out,
            &[1.0; 9],
            &[0.0],
            &[],
        );
        assert_eq!(out, [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0]);
        // Border value 10: the corner sees 5 border taps.
        conv2d(
            &p,
            &Activation::Identity,
            [3, 3, 1],
            &x,
            [3, 3, 1],
            &mut out,
            &[1.0; 9],
            &[0.0],
            &[10.0],
        );
        assert_eq!(out[0], 12.0 + 50.0);
        assert_eq!(out[4], 45.0);
    }

    #[test]
    fn depthwise_and_fused_relu_by_hand() {
        // 1x2 input, 2 channels, 1x1 depthwise kernel scales channel 0 by 2 and channel 1 by -1.
        let p = params([1, 1], [1, 1], [1, 1], [0; 4], 2);
        let mut out = [0.0f32; 4];
        conv2d(
            &p,
            &Activation::Relu,
            [1, 2, 2],
            &[1.0, 2.0, 3.0, -4.0],
            [1, 2, 2],
            &mut out,
            &[2.0, -1.0],
            &[0.0, 1.0],
            &[],
        );
        assert_eq!(out, [2.0, 0.0, 6.0, 5.0]);
    }

    prop_compose! {
        fn case()(groups in 1u16..=3, icg in 1usize..=4, ocg in 1usize..=3,
                  kh in 1u16..=3, kw in 1u16..=3, sh in 1u16..=3, sw in 1u16..=2,
                  dh in 1u16..=2, dw in 1u16..=3, pad in proptest::array::uniform4(0u16..=2),
                  h in 1usize..=7, w in 1usize..=7, with_pad_values in any::<bool>(), seed in any::<u64>())
            -> (ConvGeometry, [usize; 3], [usize; 3], bool, u64)
        {
            let p = params([kh, kw], [sh, sw], [dh, dw], pad, groups);
            let g = groups as usize;
            (p, [h, w, icg * g], [0, 0, ocg * g], with_pad_values, seed)
        }
    }

    fn values(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    proptest! {
        #[test]
        fn matches_naive_definition((p, in_dims, out_c, with_pv, mut seed) in case()) {
            let [h, w, c] = in_dims;
            let padded_h = h + p.pad[0] + p.pad[2];
            let padded_w = w + p.pad[1] + p.pad[3];
            // The dilated window fits the padded input.
            prop_assume!(padded_h > p.dilation[0] * (p.kernel[0] - 1));
            prop_assume!(padded_w > p.dilation[1] * (p.kernel[1] - 1));
            let oh = out_len(h, p.kernel[0], p.stride[0], p.dilation[0], p.pad[0], p.pad[2]);
            let ow = out_len(w, p.kernel[1], p.stride[1], p.dilation[1], p.pad[1], p.pad[3]);
            let oc = out_c[2];
            let out_dims = [oh, ow, oc];
            let x = values(h * w * c, &mut seed);
            let wt = values(oc * p.kernel[0] * p.kernel[1] * (c / p.groups), &mut seed);
            let b = values(oc, &mut seed);
            let pv = if with_pv { values(c, &mut seed) } else { Vec::new() };
            let mut out = std::vec![f32::NAN; oh * ow * oc];
            conv2d(&p, &Activation::Identity, in_dims, &x, out_dims, &mut out, &wt, &b, &pv);
            let expected = naive(&p, in_dims, &x, out_dims, &wt, &b, &pv);
            for (got, want) in out.iter().zip(&expected) {
                prop_assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{got} vs {want}");
            }
        }

        #[test]
        fn inconsistent_sizes_do_not_panic(n_in in 0usize..40, n_out in 0usize..40, n_w in 0usize..40,
                                           (p, in_dims, out_c, _, _) in case(), oh in 0usize..5, ow in 0usize..5) {
            let mut out = std::vec![0.0f32; n_out];
            conv2d(&p, &Activation::Identity, in_dims, &std::vec![1.0; n_in], [oh, ow, out_c[2]], &mut out, &std::vec![1.0; n_w], &[1.0; 3], &[1.0]);
        }
    }
}
