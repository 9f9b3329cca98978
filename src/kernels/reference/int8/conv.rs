//! int8 2-D convolution over `[H, W, C]` activations.

use super::{dot, ChannelQuant, Element, FromWide, OutputQuant, Requant, WideOutputQuant};
use crate::kernels::reference::window_coord;
use crate::kernels::ConvGeometry;

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

/// Quantization of a convolution with an int16 input or output (16×8: int8 weights, int16
/// activations), the input element type `X` being `i8` or `i16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WideConvQuant<'a, X> {
    /// Zero point of the input (0 for the symmetric int16 tensors the host writes).
    pub input_zero_point: X,
    /// Padded value per input channel (`[in_c]`, in the input's quantization), or empty.
    pub pad_values: &'a [X],
    /// Folded bias and factors per output channel.
    pub channels: ChannelQuant<'a>,
    /// Output zero point and clamp, in int16 steps.
    pub output: WideOutputQuant,
}

/// Convolution with groups (depthwise included), stride, dilation and asymmetric padding.
///
/// Geometry comes from `params`; the fused activation is `quant.output.clamp`. Layouts as the f32
/// kernel: `input` `[h, w, in_c]`, `output` `[out_h, out_w, out_c]`, `weights`
/// `[out_c][kernel_h][kernel_w][in_c / groups]`.
///
/// Output channel `o` of group `g` computes
/// `acc = bias'[o] + Σ_(ky, kx, i) w[o][ky][kx][i] · x(ky, kx, g · in_c / groups + i)`
/// where a tap in the padding reads `pad_values[c]`, or `input_zero_point` when `pad_values` is
/// empty (see the [module docs](super) for why that keeps the folded bias exact), then
/// `out = clamp(zp_out + requant_o(acc))`. Integer sums do not depend on order.
pub fn conv2d(
    params: &ConvGeometry,
    quant: &ConvQuant,
    in_dims: [usize; 3],
    input: &[i8],
    out_dims: [usize; 3],
    output: &mut [i8],
    weights: &[i8],
) {
    let taps = Taps {
        zero: quant.input_zero_point,
        pad_values: quant.pad_values,
    };
    let geometry = (params, in_dims, out_dims);
    accumulate(
        geometry,
        &taps,
        &quant.channels,
        input,
        output,
        weights,
        |acc, r| quant.output.requantize(acc, r),
    );
}

/// [`conv2d`] on an int8 or int16 input (`X`) with an int16 output stage: the same accumulator,
/// then `clamp(zp_out + requant_o(acc))` in int16, stored as int16 or, for the last 16×8 layer
/// (`Y = i8`), saturated to int8 (its clamp already lies in the int8 range). The accumulator
/// bound for an int16 input is [`accumulator_fits_i16`](crate::quant::contract::accumulator_fits_i16).
pub fn conv2d_wide<X: Element, Y: FromWide>(
    params: &ConvGeometry,
    quant: &WideConvQuant<X>,
    in_dims: [usize; 3],
    input: &[X],
    out_dims: [usize; 3],
    output: &mut [Y],
    weights: &[i8],
) {
    let taps = Taps {
        zero: quant.input_zero_point,
        pad_values: quant.pad_values,
    };
    let geometry = (params, in_dims, out_dims);
    accumulate(
        geometry,
        &taps,
        &quant.channels,
        input,
        output,
        weights,
        |acc, r| Y::from_wide(quant.output.requantize(acc, r)),
    );
}

/// What a padded tap reads.
struct Taps<'a, X> {
    zero: X,
    pad_values: &'a [X],
}

/// The convolution loop shared by every element type: `finish(acc, factor)` stores an output.
#[inline]
fn accumulate<X: Element, Y>(
    (params, in_dims, out_dims): (&ConvGeometry, [usize; 3], [usize; 3]),
    taps: &Taps<'_, X>,
    channels: &ChannelQuant,
    input: &[X],
    output: &mut [Y],
    weights: &[i8],
    finish: impl Fn(i32, Requant) -> Y,
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
    // Weights of one output channel (checked: `chunks_exact(0)` would panic).
    let per_out = kernel_h
        .checked_mul(kernel_w)
        .and_then(|k| k.checked_mul(group_in))
        .unwrap_or(0);
    if per_out == 0 || group_out == 0 || out_w == 0 {
        return;
    }
    let zero = taps.zero.widen();
    // Pixel by pixel at the output's pixel stride (a view leaves the other channels alone).
    let pixels = output
        .chunks_mut(params.out_stride(out_c).max(1))
        .filter_map(|px| px.get_mut(..out_c))
        .take(out_h * out_w);
    for (pixel, out_px) in pixels.enumerate() {
        let (oy, ox) = (pixel / out_w, pixel % out_w);
        for (o, (out, w)) in out_px
            .iter_mut()
            .zip(weights.chunks_exact(per_out))
            .enumerate()
        {
            let Some((bias, requant)) = channels.channel(o) else {
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
                            let at = (iy * in_w + ix) * in_stride + first;
                            input.get(at..at + group_in).map(|x| dot(w_tap, x))
                        }
                        _ if taps.pad_values.is_empty() => Some(
                            w_tap
                                .iter()
                                .fold(0i32, |s, w| s.wrapping_add(i32::from(*w) * zero)),
                        ),
                        _ => taps
                            .pad_values
                            .get(first..first + group_in)
                            .map(|x| dot(w_tap, x)),
                    };
                    acc = acc.wrapping_add(term.unwrap_or(0));
                }
            }
            *out = finish(acc, requant);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::testing::{requant_naive, requantize_naive, Gen};
    use super::super::{Clamp, ClampI16, Requant};
    use super::*;
    use crate::quant::contract::accumulator_fits_i16;
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

    /// The real-valued definition in i64: `bias + Σ w (x − zp_in)` with padded taps reading the
    /// pad value (or `zp_in`), one accumulator per output. It takes the *unfolded* bias, so it
    /// also checks that folding `zp_in` into the bias is exact, borders included. Inputs of any
    /// element type as i64.
    #[allow(clippy::too_many_arguments)]
    fn naive_acc(
        p: &ConvGeometry,
        zp_in: i64,
        pv: &[i64],
        [h, w, c]: [usize; 3],
        x: &[i64],
        [oh, ow, oc]: [usize; 3],
        wt: &[i8],
        raw_bias: &[i64],
    ) -> Vec<i64> {
        let g = p.groups;
        let (icg, ocg) = (c / g, oc / g);
        let (kh, kw) = (p.kernel[0], p.kernel[1]);
        let mut y = std::vec![0i64; oh * ow * oc];
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..oc {
                    let mut acc = raw_bias[o];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            for i in 0..icg {
                                let ci = (o / ocg) * icg + i;
                                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                    - p.pad[0] as isize;
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
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
                                acc += i64::from(wv) * (v - zp_in);
                            }
                        }
                    }
                    y[(oy * ow + ox) * oc + o] = acc;
                }
            }
        }
        y
    }

    /// [`naive_acc`] on int8 operands, then the documented int8 requantization.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        p: &ConvGeometry,
        zp_in: i8,
        pv: &[i8],
        in_dims: [usize; 3],
        x: &[i8],
        out_dims: [usize; 3],
        wt: &[i8],
        raw_bias: &[i64],
        requant: &[Requant],
        out: OutputQuant,
    ) -> Vec<i8> {
        let wide = |v: &[i8]| v.iter().map(|&v| i64::from(v)).collect::<Vec<_>>();
        let (pv, x) = (wide(pv), wide(x));
        let acc = naive_acc(p, zp_in.into(), &pv, in_dims, &x, out_dims, wt, raw_bias);
        let oc = out_dims[2];
        acc.iter()
            .enumerate()
            .map(|(i, &a)| {
                requantize_naive(
                    a,
                    requant[i % oc],
                    out.zero_point,
                    out.clamp.min,
                    out.clamp.max,
                )
            })
            .collect()
    }

    fn out_len(size: usize, k: usize, s: usize, d: usize, pa: usize, pb: usize) -> usize {
        (size + pa + pb - d * (k - 1) - 1) / s + 1
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
            -> (ConvGeometry, [usize; 3], usize, bool, i8, OutputQuant, u64)
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
            let padded_h = h + p.pad[0] + p.pad[2];
            let padded_w = w + p.pad[1] + p.pad[3];
            prop_assume!(padded_h > p.dilation[0] * (p.kernel[0] - 1));
            prop_assume!(padded_w > p.dilation[1] * (p.kernel[1] - 1));
            let oh = out_len(h, p.kernel[0], p.stride[0], p.dilation[0], p.pad[0], p.pad[2]);
            let ow = out_len(w, p.kernel[1], p.stride[1], p.dilation[1], p.pad[1], p.pad[3]);
            let out_dims = [oh, ow, oc];
            let mut gen = Gen(seed);
            let per_out = p.kernel[0] * p.kernel[1] * (c / p.groups);
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

        /// The 16×8 kernel against the same definition, for each pair of element types it runs
        /// (int8 → int16, int16 → int16, int16 → int8): int16 values with their extremes, any
        /// int16 zero point, biases up to the bound the loader allows for an int16 input.
        #[test]
        fn wide_matches_naive_definition((p, in_dims, oc, with_pv, _, _, seed) in case(),
                                         kinds in 0u8..3, zp16 in prop_oneof![Just(0i16), Just(i16::MIN), Just(i16::MAX), any::<i16>()],
                                         zp_out in prop_oneof![Just(0i16), Just(i16::MIN), any::<i16>()],
                                         relu in any::<bool>()) {
            let [h, w, c] = in_dims;
            let padded_h = h + p.pad[0] + p.pad[2];
            let padded_w = w + p.pad[1] + p.pad[3];
            prop_assume!(padded_h > p.dilation[0] * (p.kernel[0] - 1));
            prop_assume!(padded_w > p.dilation[1] * (p.kernel[1] - 1));
            let oh = out_len(h, p.kernel[0], p.stride[0], p.dilation[0], p.pad[0], p.pad[2]);
            let ow = out_len(w, p.kernel[1], p.stride[1], p.dilation[1], p.pad[1], p.pad[3]);
            let out_dims = [oh, ow, oc];
            let mut gen = Gen(seed);
            let per_out = p.kernel[0] * p.kernel[1] * (c / p.groups);
            let wt = gen.i8s(oc * per_out);
            let (wide_in, wide_out) = [(false, true), (true, true), (true, false)][kinds as usize];
            // Input values and zero point of the input's element type, as i64.
            let (x, pv, zp_in): (Vec<i64>, Vec<i64>, i64) = if wide_in {
                let x = gen.i16s(h * w * c).into_iter().map(i64::from).collect();
                let pv = if with_pv { gen.i16s(c).into_iter().map(i64::from).collect() } else { Vec::new() };
                (x, pv, zp16.into())
            } else {
                let x = gen.i8s(h * w * c).into_iter().map(i64::from).collect();
                let pv = if with_pv { gen.i8s(c).into_iter().map(i64::from).collect() } else { Vec::new() };
                (x, pv, (zp16 >> 8).into())
            };
            // The host's folding, kept within the loader's bound for the input type.
            let max_product = if wide_in { 1i64 << 22 } else { 1 << 14 };
            let room = (i64::from(i32::MAX) - per_out as i64 * max_product).max(0);
            let raw_bias: Vec<i64> = (0..oc).map(|_| i64::from(gen.range(-(1 << 20), 1 << 20))).collect();
            let folded: Vec<i32> = (0..oc).map(|o| {
                let sum: i64 = wt[o * per_out..(o + 1) * per_out].iter().map(|&v| i64::from(v)).sum();
                (raw_bias[o] - zp_in * sum).clamp(-room, room) as i32
            }).collect();
            prop_assume!(!wide_in || folded.iter().all(|&b| accumulator_fits_i16(per_out, b)));
            // The bias the naive definition starts from, given the folded one actually stored.
            let unfolded: Vec<i64> = (0..oc).map(|o| {
                let sum: i64 = wt[o * per_out..(o + 1) * per_out].iter().map(|&v| i64::from(v)).sum();
                i64::from(folded[o]) + zp_in * sum
            }).collect();
            let requant: Vec<Requant> = (0..oc).map(|_| gen.requant()).collect();
            let mult: Vec<i32> = requant.iter().map(|r| r.multiplier).collect();
            let shift: Vec<i32> = requant.iter().map(|r| r.shift).collect();
            let channels = ChannelQuant { bias: &folded, multiplier: &mult, shift: &shift };
            // An int8 output has int8 bounds (what the host writes); int16 any.
            let clamp = match (wide_out, relu) {
                (true, true) => ClampI16 { min: zp_out, max: i16::MAX },
                (true, false) => ClampI16::FULL,
                (false, true) => ClampI16 { min: (zp_out >> 8).max(-128), max: 127 },
                (false, false) => ClampI16 { min: -128, max: 127 },
            };
            let zp_y = if wide_out { zp_out } else { zp_out >> 8 };
            let output = WideOutputQuant { zero_point: zp_y, clamp };
            let acc = naive_acc(&p, zp_in, &pv, in_dims, &x, out_dims, &wt, &unfolded);
            let want: Vec<i64> = acc.iter().enumerate().map(|(i, &a)| {
                (requant_naive(a, requant[i % oc]) + i64::from(zp_y))
                    .clamp(clamp.min.into(), clamp.max.into())
            }).collect();
            let n = oh * ow * oc;
            let got: Vec<i64> = match (wide_in, wide_out) {
                (false, _) => {
                    let x: Vec<i8> = x.iter().map(|&v| v as i8).collect();
                    let pv: Vec<i8> = pv.iter().map(|&v| v as i8).collect();
                    let quant = WideConvQuant { input_zero_point: zp_in as i8, pad_values: &pv, channels, output };
                    let mut out = std::vec![0i16; n];
                    conv2d_wide(&p, &quant, in_dims, &x, out_dims, &mut out, &wt);
                    out.into_iter().map(i64::from).collect()
                }
                (true, wide_out) => {
                    let x: Vec<i16> = x.iter().map(|&v| v as i16).collect();
                    let pv: Vec<i16> = pv.iter().map(|&v| v as i16).collect();
                    let quant = WideConvQuant { input_zero_point: zp_in as i16, pad_values: &pv, channels, output };
                    if wide_out {
                        let mut out = std::vec![0i16; n];
                        conv2d_wide(&p, &quant, in_dims, &x, out_dims, &mut out, &wt);
                        out.into_iter().map(i64::from).collect()
                    } else {
                        let mut out = std::vec![0i8; n];
                        conv2d_wide(&p, &quant, in_dims, &x, out_dims, &mut out, &wt);
                        out.into_iter().map(i64::from).collect()
                    }
                }
            };
            prop_assert_eq!(got, want);
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
