//! int8 2-D convolution over `[H, W, C]` activations.

use super::{dot, ChannelQuant, OutputQuant};
use crate::format::Conv2d;
use crate::kernels::reference::window_coord;

/// Quantization of one int8 convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvQuant<'a> {
    /// Zero point of the input: the value of a padded tap when `pad_values` is empty.
    pub input_zero_point: i8,
    /// Padded value per input channel (`[in_c]`, in the input's quantization), or empty.
    pub pad_values: &'a [i8],
    /// Folded bias and factors per output channel.
    pub channels: ChannelQuant<'a>,
    /// Output zero point and clamp.
    pub output: OutputQuant,
}

/// Convolution with groups (depthwise included), stride, dilation and asymmetric padding.
///
/// Geometry comes from `params` (`kernel`, `stride`, `dilation`, `pad`, `groups`; its spans and
/// `activation` are not read: the fused activation is `quant.output.clamp`). Layouts as the f32
/// kernel: `input` `[h, w, in_c]`, `output` `[out_h, out_w, out_c]`, `weights`
/// `[out_c][kernel_h][kernel_w][in_c / groups]`.
///
/// Output channel `o` of group `g` computes
/// `acc = bias'[o] + Σ_(ky, kx, i) w[o][ky][kx][i] · x(ky, kx, g · in_c / groups + i)`
/// where a tap in the padding reads `pad_values[c]`, or `input_zero_point` when `pad_values` is
/// empty (see the [module docs](super) for why that keeps the folded bias exact), then
/// `out = clamp(zp_out + requant_o(acc))`. Integer sums do not depend on order.
pub fn conv2d(
    params: &Conv2d,
    quant: &ConvQuant,
    in_dims: [usize; 3],
    input: &[i8],
    out_dims: [usize; 3],
    output: &mut [i8],
    weights: &[i8],
) {
    let [in_h, in_w, in_c] = in_dims;
    let [out_h, out_w, out_c] = out_dims;
    let groups = usize::from(params.groups);
    let [kernel_h, kernel_w] = params.kernel.map(usize::from);
    let [stride_h, stride_w] = params.stride.map(usize::from);
    let [dil_h, dil_w] = params.dilation.map(usize::from);
    let [pad_top, pad_left, _, _] = params.pad.map(usize::from);
    let (Some(group_in), Some(group_out)) = (in_c.checked_div(groups), out_c.checked_div(groups))
    else {
        return;
    };
    // Weights of one output channel (checked: `chunks_exact(0)` would panic).
    let per_out = kernel_h
        .checked_mul(kernel_w)
        .and_then(|k| k.checked_mul(group_in))
        .unwrap_or(0);
    if per_out == 0 || group_out == 0 || out_w == 0 {
        return;
    }
    let zero = i32::from(quant.input_zero_point);
    let pixels = output.chunks_exact_mut(out_c).take(out_h * out_w);
    for (pixel, out_px) in pixels.enumerate() {
        let (oy, ox) = (pixel / out_w, pixel % out_w);
        for (o, (out, w)) in out_px
            .iter_mut()
            .zip(weights.chunks_exact(per_out))
            .enumerate()
        {
            let Some((bias, requant)) = quant.channels.channel(o) else {
                continue;
            };
            // First input channel of this output channel's group.
            let first = (o / group_out) * group_in;
            let mut acc = bias;
            for ky in 0..kernel_h {
                let iy = window_coord(oy, stride_h, ky, dil_h, pad_top, in_h);
                for kx in 0..kernel_w {
                    let ix = window_coord(ox, stride_w, kx, dil_w, pad_left, in_w);
                    let tap = (ky * kernel_w + kx) * group_in;
                    let Some(w_tap) = w.get(tap..tap + group_in) else {
                        continue;
                    };
                    let term = match (iy, ix) {
                        (Some(iy), Some(ix)) => {
                            let at = (iy * in_w + ix) * in_c + first;
                            input.get(at..at + group_in).map(|x| dot(w_tap, x))
                        }
                        _ if quant.pad_values.is_empty() => Some(
                            w_tap
                                .iter()
                                .fold(0i32, |s, w| s.wrapping_add(i32::from(*w) * zero)),
                        ),
                        _ => quant
                            .pad_values
                            .get(first..first + group_in)
                            .map(|x| dot(w_tap, x)),
                    };
                    acc = acc.wrapping_add(term.unwrap_or(0));
                }
            }
            *out = quant.output.requantize(acc, requant);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::testing::{requantize_naive, Gen};
    use super::super::{Clamp, Requant};
    use super::*;
    use crate::format::{Activation, Span};
    use proptest::prelude::*;
    use std::vec::Vec;

    fn params(
        kernel: [u16; 2],
        stride: [u16; 2],
        dilation: [u16; 2],
        pad: [u16; 4],
        groups: u16,
    ) -> Conv2d {
        Conv2d {
            kernel,
            stride,
            dilation,
            pad,
            groups,
            weights: Span::default(),
            bias: Span::default(),
            pad_values: Span::default(),
            activation: Activation::Identity,
        }
    }

    /// The real-valued definition in i64: `bias + Σ w (x − zp_in)` with padded taps reading the
    /// pad value (or `zp_in`), then the documented requantization. It takes the *unfolded* bias,
    /// so it also checks that folding `zp_in` into the bias is exact, borders included.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        p: &Conv2d,
        zp_in: i8,
        pv: &[i8],
        [h, w, c]: [usize; 3],
        x: &[i8],
        [oh, ow, oc]: [usize; 3],
        wt: &[i8],
        raw_bias: &[i64],
        requant: &[Requant],
        out: OutputQuant,
    ) -> Vec<i8> {
        let g = p.groups as usize;
        let (icg, ocg) = (c / g, oc / g);
        let (kh, kw) = (p.kernel[0] as usize, p.kernel[1] as usize);
        let mut y = std::vec![0i8; oh * ow * oc];
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..oc {
                    let mut acc = raw_bias[o];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            for i in 0..icg {
                                let ci = (o / ocg) * icg + i;
                                let iy = (oy * p.stride[0] as usize + ky * p.dilation[0] as usize)
                                    as isize
                                    - p.pad[0] as isize;
                                let ix = (ox * p.stride[1] as usize + kx * p.dilation[1] as usize)
                                    as isize
                                    - p.pad[1] as isize;
                                let inside =
                                    iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                                let v = if inside {
                                    x[(iy as usize * w + ix as usize) * c + ci]
                                } else if pv.is_empty() {
                                    zp_in
                                } else {
                                    pv[ci]
                                };
                                let wv = wt[((o * kh + ky) * kw + kx) * icg + i];
                                acc += i64::from(wv) * (i64::from(v) - i64::from(zp_in));
                            }
                        }
                    }
                    y[(oy * ow + ox) * oc + o] = requantize_naive(
                        acc,
                        requant[o],
                        out.zero_point,
                        out.clamp.min,
                        out.clamp.max,
                    );
                }
            }
        }
        y
    }

    fn out_len(size: usize, k: u16, s: u16, d: u16, pa: u16, pb: u16) -> usize {
        (size + pa as usize + pb as usize - d as usize * (k as usize - 1) - 1) / s as usize + 1
    }

    #[test]
    fn padding_reads_the_zero_point_by_hand() {
        // 2x2 single channel, zp_in = -3, 3x3 all-ones kernel, pad 1, bias folded for zp:
        // real values x - zp = [4, 5, 6, 7]; each output of the 2x2 sees all four: sum 22.
        let p = params([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
        let x = [1i8, 2, 3, 4];
        let w = [1i8; 9];
        let bias = [0 - (-3) * 9];
        let quant = ConvQuant {
            input_zero_point: -3,
            pad_values: &[],
            channels: ChannelQuant {
                bias: &bias,
                multiplier: &[Requant::IDENTITY.multiplier],
                shift: &[Requant::IDENTITY.shift],
            },
            output: OutputQuant {
                zero_point: 10,
                clamp: Clamp::FULL,
            },
        };
        let mut out = [0i8; 4];
        conv2d(&p, &quant, [2, 2, 1], &x, [2, 2, 1], &mut out, &w);
        assert_eq!(out, [32; 4]);
        // Pad value 0 (real 3 above zero): each output has 5 padded taps, +15.
        let quant = ConvQuant {
            pad_values: &[0],
            ..quant
        };
        conv2d(&p, &quant, [2, 2, 1], &x, [2, 2, 1], &mut out, &w);
        assert_eq!(out, [47; 4]);
    }

    prop_compose! {
        fn case()(groups in 1u16..=3, icg in 1usize..=4, ocg in 1usize..=3,
                  kh in 1u16..=3, kw in 1u16..=3, sh in 1u16..=3, sw in 1u16..=2,
                  dh in 1u16..=2, dw in 1u16..=3, pad in proptest::array::uniform4(0u16..=2),
                  h in 1usize..=7, w in 1usize..=7, with_pad_values in any::<bool>(),
                  zp_in in prop_oneof![Just(-128i8), Just(127i8), any::<i8>()],
                  zp_out in prop_oneof![Just(-128i8), Just(127i8), any::<i8>()],
                  relu in any::<bool>(), seed in any::<u64>())
            -> (Conv2d, [usize; 3], usize, bool, i8, OutputQuant, u64)
        {
            let p = params([kh, kw], [sh, sw], [dh, dw], pad, groups);
            let g = groups as usize;
            let clamp = if relu { Clamp { min: zp_out, max: 127 } } else { Clamp::FULL };
            (p, [h, w, icg * g], ocg * g, with_pad_values, zp_in,
             OutputQuant { zero_point: zp_out, clamp }, seed)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_naive_definition((p, in_dims, oc, with_pv, zp_in, out_q, seed) in case()) {
            let [h, w, c] = in_dims;
            let padded_h = h + p.pad[0] as usize + p.pad[2] as usize;
            let padded_w = w + p.pad[1] as usize + p.pad[3] as usize;
            prop_assume!(padded_h > p.dilation[0] as usize * (p.kernel[0] as usize - 1));
            prop_assume!(padded_w > p.dilation[1] as usize * (p.kernel[1] as usize - 1));
            let oh = out_len(h, p.kernel[0], p.stride[0], p.dilation[0], p.pad[0], p.pad[2]);
            let ow = out_len(w, p.kernel[1], p.stride[1], p.dilation[1], p.pad[1], p.pad[3]);
            let out_dims = [oh, ow, oc];
            let mut gen = Gen(seed);
            let per_out = p.kernel[0] as usize * p.kernel[1] as usize * (c / p.groups as usize);
            let x = gen.i8s(h * w * c);
            let wt = gen.i8s(oc * per_out);
            let pv = if with_pv { gen.i8s(c) } else { Vec::new() };
            let raw_bias: Vec<i64> = (0..oc).map(|_| i64::from(gen.range(-(1 << 20), 1 << 20))).collect();
            let requant: Vec<Requant> = (0..oc).map(|_| gen.requant()).collect();
            // The host's folding: bias' = bias - zp_in · Σ w over the channel's weights.
            let folded: Vec<i32> = (0..oc).map(|o| {
                let sum: i64 = wt[o * per_out..(o + 1) * per_out].iter().map(|&v| i64::from(v)).sum();
                (raw_bias[o] - i64::from(zp_in) * sum) as i32
            }).collect();
            let mult: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
            let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
            let quant = ConvQuant {
                input_zero_point: zp_in,
                pad_values: &pv,
                channels: ChannelQuant { bias: &folded, multiplier: &mult, shift: &shift },
                output: out_q,
            };
            let mut out = std::vec![0i8; oh * ow * oc];
            conv2d(&p, &quant, in_dims, &x, out_dims, &mut out, &wt);
            let want = naive(&p, zp_in, &pv, in_dims, &x, out_dims, &wt, &raw_bias, &requant, out_q);
            prop_assert_eq!(out, want);
        }

        #[test]
        fn inconsistent_sizes_do_not_panic(n_in in 0usize..40, n_out in 0usize..40, n_w in 0usize..40,
                                           n_q in 0usize..4, n_pv in 0usize..3,
                                           (p, in_dims, oc, _, zp_in, out_q, seed) in case(),
                                           oh in 0usize..5, ow in 0usize..5) {
            let mut gen = Gen(seed);
            let q: Vec<i32> = (0..n_q).map(|_| gen.next() as i32).collect();
            let pv = gen.i8s(n_pv);
            let quant = ConvQuant {
                input_zero_point: zp_in,
                pad_values: &pv,
                channels: ChannelQuant { bias: &q, multiplier: &q, shift: &q },
                output: out_q,
            };
            let mut out = std::vec![0i8; n_out];
            conv2d(&p, &quant, in_dims, &gen.i8s(n_in), [oh, ow, oc], &mut out, &gen.i8s(n_w));
            // Degenerate geometry: zero kernel, stride, dilation or groups.
            for zeroed in 0..4 {
                let mut d = p;
                match zeroed {
                    0 => d.kernel[gen.next() as usize % 2] = 0,
                    1 => d.stride = [0, 0],
                    2 => d.dilation = [0, 0],
                    _ => d.groups = 0,
                }
                conv2d(&d, &quant, in_dims, &gen.i8s(n_in), [oh, ow, oc], &mut out, &gen.i8s(n_w));
            }
        }
    }
}
