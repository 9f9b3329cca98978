//! Convolutions writing a view (zero-copy concatenation): with an output pixel stride, each kernel
//! writes exactly what it writes densely, into its channels of each pixel, and touches nothing
//! else. The fast int8 entry points equal the reference with strides (they hand a strided output
//! to it). Convolutions reading a view (a channel slice read in place, at an input pixel
//! stride) give exactly what they give on the slice copied out.

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use super::reference::int8::conv::{ConvQuant, WideConvQuant};
use super::reference::int8::{ChannelQuant, OutputQuant, WideOutputQuant};
use super::{fast, reference, Activation, ConvGeometry};
use crate::quant::{Clamp, ClampI16};

/// `(out_dims, channel, pixel_stride)` of the wider storage and a dense output of `out_c`.
fn spread<T: Copy + PartialEq + core::fmt::Debug>(
    dense: &[T],
    strided: &[T],
    out_c: usize,
    (channel, stride): (usize, usize),
    fill: T,
) {
    for (p, px) in strided.chunks(stride).enumerate() {
        for (c, v) in px.iter().enumerate() {
            let own = c >= channel && c < channel + out_c;
            if own {
                assert_eq!(*v, dense[p * out_c + c - channel], "pixel {p} channel {c}");
            } else {
                assert_eq!(*v, fill, "pixel {p} channel {c} was touched");
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    g: ConvGeometry,
    in_dims: [usize; 3],
    out_dims: [usize; 3],
    channel: usize,
    extra: usize,
    seed: u64,
}

prop_compose! {
    fn case()(k in 1usize..=3, s in 1usize..=2, pad in 0usize..=1, h in 1usize..=5, w in 1usize..=5,
              in_c in 1usize..=4, out_c in 1usize..=5, depthwise in any::<bool>(),
              channel in 0usize..=3, extra in 0usize..=3, seed in any::<u64>()) -> Option<Case> {
        let (groups, out_c) = if depthwise { (in_c, in_c) } else { (1, out_c) };
        let oh = (h + 2 * pad).checked_sub(k)? / s + 1;
        let ow = (w + 2 * pad).checked_sub(k)? / s + 1;
        let g = ConvGeometry {
            kernel: [k, k], stride: [s, s], dilation: [1, 1], pad: [pad; 4], groups,
            out_pixel_stride: 0,
            in_pixel_stride: 0,
        };
        Some(Case { g, in_dims: [h, w, in_c], out_dims: [oh, ow, out_c], channel, extra, seed })
    }
}

fn values_i8(n: usize, seed: u64) -> Vec<i8> {
    crate::testutil::values(n, seed)
        .iter()
        .map(|v| (v * 127.0) as i8)
        .collect()
}

proptest! {
    #[test]
    fn strided_int8_conv_writes_its_channels_only(c in case()) {
        let Some(c) = c else { return Ok(()) };
        let [_, _, in_c] = c.in_dims;
        let [oh, ow, out_c] = c.out_dims;
        let stride = c.channel + out_c + c.extra;
        let x = values_i8(c.in_dims.iter().product(), c.seed);
        let weights = values_i8(out_c * c.g.kernel[0] * c.g.kernel[1] * (in_c / c.g.groups), c.seed ^ 1);
        let bias: Vec<i32> = (0..out_c as i32).map(|o| 100 * o - 150).collect();
        let multiplier = std::vec![1 << 30; out_c];
        let shift: Vec<i32> = (0..out_c as i32).map(|o| -(o % 3) - 4).collect();
        let quant = ConvQuant {
            input_zero_point: 3,
            pad_values: &[],
            channels: ChannelQuant { bias: &bias, multiplier: &multiplier, shift: &shift },
            output: OutputQuant { zero_point: -5, clamp: Clamp { min: -128, max: 127 } },
        };
        let mut dense = std::vec![0i8; oh * ow * out_c];
        reference::int8::conv::conv2d(&c.g, &quant, c.in_dims, &x, c.out_dims, &mut dense, &weights);
        let g = ConvGeometry { out_pixel_stride: stride, ..c.g };
        let fill = 77i8;
        let mut strided = std::vec![fill; oh * ow * stride];
        reference::int8::conv::conv2d(&g, &quant, c.in_dims, &x, c.out_dims, &mut strided[c.channel..], &weights);
        spread(&dense, &strided, out_c, (c.channel, stride), fill);
        // The fast entry point with the same stride: the same bytes.
        let mut fast_out = std::vec![fill; oh * ow * stride];
        fast::conv::conv2d(&g, &quant, c.in_dims, &x, c.out_dims, &mut fast_out[c.channel..], &weights);
        prop_assert_eq!(fast_out, strided);
    }

    /// 16×8 with an int16 input: the fast paths on int16 words (pointwise, the pixel pairs, the
    /// depthwise channel pairs), into int8 and int16 views.
    #[test]
    fn strided_16x8_conv_writes_its_channels_only(c in case(), even in any::<bool>()) {
        let Some(mut c) = c else { return Ok(()) };
        // Even channel counts reach the word loops.
        if even {
            c.in_dims[2] = 2 * c.in_dims[2].div_ceil(2);
            if c.g.groups > 1 {
                c.g.groups = c.in_dims[2];
                c.out_dims[2] = c.in_dims[2];
            }
        }
        let [_, _, in_c] = c.in_dims;
        let [oh, ow, out_c] = c.out_dims;
        let stride = c.channel + out_c + c.extra;
        let n: usize = c.in_dims.iter().product();
        // A u32 backing keeps the int16 input word-aligned (the word loops need it).
        let mut backing = std::vec![0u32; n.div_ceil(2)];
        let x: &mut [i16] = &mut bytemuck::cast_slice_mut::<u32, i16>(&mut backing)[..n];
        for (v, r) in x.iter_mut().zip(crate::testutil::values(n, c.seed)) {
            *v = (r * 30000.0) as i16;
        }
        let weights = values_i8(out_c * c.g.kernel[0] * c.g.kernel[1] * (in_c / c.g.groups), c.seed ^ 1);
        let bias: Vec<i32> = (0..out_c as i32).map(|o| 1000 * o - 1500).collect();
        let multiplier = std::vec![1 << 30; out_c];
        let shift: Vec<i32> = (0..out_c as i32).map(|o| -(o % 3) - 10).collect();
        let quant = WideConvQuant {
            input_zero_point: 0i16,
            pad_values: &[],
            channels: ChannelQuant { bias: &bias, multiplier: &multiplier, shift: &shift },
            output: WideOutputQuant { zero_point: 0, clamp: ClampI16 { min: -128, max: 127 } },
        };
        let g = ConvGeometry { out_pixel_stride: stride, ..c.g };
        let fill = 77i8;
        let mut reference_out = std::vec![fill; oh * ow * stride];
        reference::int8::conv::conv2d_wide(&g, &quant, c.in_dims, x, c.out_dims, &mut reference_out[c.channel..], &weights);
        let mut dense = std::vec![0i8; oh * ow * out_c];
        reference::int8::conv::conv2d_wide(&c.g, &quant, c.in_dims, x, c.out_dims, &mut dense, &weights);
        spread(&dense, &reference_out, out_c, (c.channel, stride), fill);
        let mut fast_out = std::vec![fill; oh * ow * stride];
        fast::conv::conv2d_wide(&g, &quant, c.in_dims, x, c.out_dims, &mut fast_out[c.channel..], &weights);
        prop_assert_eq!(fast_out, reference_out);
        // int16 out.
        let quant = WideConvQuant { output: WideOutputQuant { zero_point: 0, clamp: ClampI16 { min: -32768, max: 32767 } }, ..quant };
        let mut reference_wide = std::vec![7i16; oh * ow * stride];
        reference::int8::conv::conv2d_wide(&g, &quant, c.in_dims, x, c.out_dims, &mut reference_wide[c.channel..], &weights);
        let mut fast_wide = std::vec![7i16; oh * ow * stride];
        fast::conv::conv2d_wide(&g, &quant, c.in_dims, x, c.out_dims, &mut fast_wide[c.channel..], &weights);
        prop_assert_eq!(fast_wide, reference_wide);
    }

    #[test]
    fn strided_f32_conv_writes_its_channels_only(c in case()) {
        let Some(c) = c else { return Ok(()) };
        let [_, _, in_c] = c.in_dims;
        let [oh, ow, out_c] = c.out_dims;
        let stride = c.channel + out_c + c.extra;
        let x = crate::testutil::values(c.in_dims.iter().product(), c.seed);
        let weights = crate::testutil::values(out_c * c.g.kernel[0] * c.g.kernel[1] * (in_c / c.g.groups), c.seed ^ 1);
        let bias = crate::testutil::values(out_c, c.seed ^ 2);
        let mut dense = std::vec![0f32; oh * ow * out_c];
        let relu = Activation::Relu;
        reference::conv::conv2d(&c.g, &relu, c.in_dims, &x, c.out_dims, &mut dense, &weights, &bias, &[]);
        let g = ConvGeometry { out_pixel_stride: stride, ..c.g };
        let fill = 7.5f32;
        let mut strided = std::vec![fill; oh * ow * stride];
        reference::conv::conv2d(&g, &relu, c.in_dims, &x, c.out_dims, &mut strided[c.channel..], &weights, &bias, &[]);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        spread(&bits(&dense), &bits(&strided), out_c, (c.channel, stride), fill.to_bits());
    }
}

/// A convolution reading a channel slice in place: the input is channels `first .. first +
/// in_c` of a storage of `width` channels per pixel, read at that input pixel stride.
#[derive(Debug, Clone)]
struct SliceCase {
    g: ConvGeometry,
    in_dims: [usize; 3],
    out_dims: [usize; 3],
    first: usize,
    width: usize,
    seed: u64,
}

prop_compose! {
    fn slice_case()(kh in 1usize..=5, kw in 1usize..=5, sh in 1usize..=3, sw in 1usize..=3,
                    dh in 1usize..=2, dw in 1usize..=2, pad in proptest::array::uniform4(0usize..=2),
                    h in 1usize..=7, w in 1usize..=7, groups in 1usize..=3, per_group in 1usize..=3,
                    out_per_group in 1usize..=3, depthwise in any::<bool>(),
                    before in 0usize..=5, after in 0usize..=5, pad_values in any::<bool>(),
                    wide_depthwise in proptest::option::of(16usize..=40),
                    seed in any::<u64>()) -> Option<(SliceCase, bool)> {
        // Depthwise layers of 16 channels and more reach the x86 loop on whole blocks of 16.
        let in_c = match wide_depthwise {
            Some(c) if depthwise => c,
            _ => groups * per_group,
        };
        let (groups, out_c) = if depthwise { (in_c, in_c) } else { (groups, groups * out_per_group) };
        let span = |n: usize, k: usize, d: usize, s: usize, a: usize, b: usize| {
            (n + a + b).checked_sub(d * (k - 1) + 1).map(|r| r / s + 1)
        };
        let oh = span(h, kh, dh, sh, pad[0], pad[2])?;
        let ow = span(w, kw, dw, sw, pad[1], pad[3])?;
        let g = ConvGeometry {
            kernel: [kh, kw], stride: [sh, sw], dilation: [dh, dw], pad, groups,
            out_pixel_stride: 0,
            in_pixel_stride: 0,
        };
        let case = SliceCase {
            g, in_dims: [h, w, in_c], out_dims: [oh, ow, out_c],
            first: before, width: before + in_c + after, seed,
        };
        Some((case, pad_values))
    }
}

impl SliceCase {
    /// The storage (`[h, w, width]`) and the slice copied out of it densely (`[h, w, in_c]`).
    fn storage<T: Copy>(&self, value: impl Fn(usize) -> T) -> (Vec<T>, Vec<T>) {
        let [h, w, in_c] = self.in_dims;
        let storage: Vec<T> = (0..h * w * self.width).map(value).collect();
        let copied = storage
            .chunks(self.width)
            .flat_map(|px| px[self.first..self.first + in_c].iter().copied())
            .collect();
        (storage, copied)
    }

    /// The geometry reading the storage at its pixel stride, and the slice's first element.
    fn strided(&self) -> (ConvGeometry, usize) {
        (
            ConvGeometry {
                in_pixel_stride: self.width,
                ..self.g
            },
            self.first,
        )
    }

    fn weights_len(&self) -> usize {
        self.out_dims[2] * self.g.kernel[0] * self.g.kernel[1] * (self.in_dims[2] / self.g.groups)
    }
}

proptest! {
    // Many geometries reach each fast loop (receptive-field gathers, the depthwise row ring and
    // per-channel loop) only in some cases.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The f32 reference kernel reading a slice at its input pixel stride gives, bit for bit,
    /// what it gives on the slice copied out densely; so does the engine's f32 entry point.
    #[test]
    fn f32_conv_reads_a_channel_slice_in_place(c in slice_case()) {
        let Some((c, with_pad_values)) = c else { return Ok(()) };
        let [oh, ow, out_c] = c.out_dims;
        let (storage, copied) = c.storage(|i| crate::testutil::values(1, c.seed ^ i as u64)[0]);
        let weights = crate::testutil::values(c.weights_len(), c.seed ^ 1);
        let bias = crate::testutil::values(out_c, c.seed ^ 2);
        let pad_values = if with_pad_values { crate::testutil::values(c.in_dims[2], c.seed ^ 3) } else { Vec::new() };
        let act = Activation::Relu;
        let mut dense = std::vec![0f32; oh * ow * out_c];
        reference::conv::conv2d(&c.g, &act, c.in_dims, &copied, c.out_dims, &mut dense, &weights, &bias, &pad_values);
        let (g, first) = c.strided();
        let mut strided = std::vec![0f32; oh * ow * out_c];
        reference::conv::conv2d(&g, &act, c.in_dims, &storage[first..], c.out_dims, &mut strided, &weights, &bias, &pad_values);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&strided), bits(&dense));
        // The x86_64 AVX2 kernel reads the slice in place in the same order as the copy: the
        // same bits as on the copy (what the copying plan computed on the host).
        #[cfg(target_arch = "x86_64")]
        {
            let mut on_copy = std::vec![0f32; oh * ow * out_c];
            super::x86::conv2d(&c.g, &act, c.in_dims, &copied, c.out_dims, &mut on_copy, &weights, &bias, &pad_values);
            let mut host = std::vec![0f32; oh * ow * out_c];
            super::x86::conv2d(&g, &act, c.in_dims, &storage[first..], c.out_dims, &mut host, &weights, &bias, &pad_values);
            prop_assert_eq!(bits(&host), bits(&on_copy));
        }
        // The Cortex-M f32 loops: the depthwise loop and the regular one with one tap per
        // kernel row read the slice in place, in the order they read the copy (the same bits);
        // they hand every other strided input to the reference kernel.
        if g.strided_input(c.in_dims[2]) {
            let mut fast_out = std::vec![0f32; oh * ow * out_c];
            fast::conv_f32::conv2d(&g, &act, c.in_dims, &storage[first..], c.out_dims, &mut fast_out, &weights, &bias, &pad_values);
            let depthwise = c.g.groups == c.in_dims[2] && c.g.groups == out_c
                && c.g.kernel[0] * c.g.kernel[1] <= fast::conv_f32::MAX_DEPTHWISE_TAPS;
            let own_loop = (depthwise && c.g.groups > 1) || (c.g.groups == 1 && c.g.kernel[1] == 1);
            if depthwise && c.g.groups == 1 && c.g.kernel[1] > 1 {
                // One channel: the strided input runs the depthwise loop, its copy the regular
                // one (another summation order): not compared bit for bit here.
                return Ok(());
            }
            let want = if own_loop {
                let mut on_copy = std::vec![0f32; oh * ow * out_c];
                fast::conv_f32::conv2d(&c.g, &act, c.in_dims, &copied, c.out_dims, &mut on_copy, &weights, &bias, &pad_values);
                on_copy
            } else {
                strided.clone()
            };
            prop_assert_eq!(bits(&fast_out), bits(&want));
        }
    }

    /// int8: the reference and the fast entry point reading a slice in place equal the reference
    /// on the copied slice, byte for byte.
    #[test]
    fn int8_conv_reads_a_channel_slice_in_place(c in slice_case(), zero in -5i8..=5) {
        let Some((c, with_pad_values)) = c else { return Ok(()) };
        let [oh, ow, out_c] = c.out_dims;
        let (storage, copied) = c.storage(|i| values_i8(1, c.seed ^ i as u64)[0]);
        let weights = values_i8(c.weights_len(), c.seed ^ 1);
        let pad_values = if with_pad_values { values_i8(c.in_dims[2], c.seed ^ 3) } else { Vec::new() };
        let bias: Vec<i32> = (0..out_c as i32).map(|o| 100 * o - 150).collect();
        let multiplier = std::vec![1 << 30; out_c];
        let shift: Vec<i32> = (0..out_c as i32).map(|o| -(o % 3) - 4).collect();
        let quant = ConvQuant {
            input_zero_point: zero,
            pad_values: &pad_values,
            channels: ChannelQuant { bias: &bias, multiplier: &multiplier, shift: &shift },
            output: OutputQuant { zero_point: -5, clamp: Clamp { min: -128, max: 127 } },
        };
        let mut dense = std::vec![0i8; oh * ow * out_c];
        reference::int8::conv::conv2d(&c.g, &quant, c.in_dims, &copied, c.out_dims, &mut dense, &weights);
        let (g, first) = c.strided();
        let mut strided = std::vec![0i8; oh * ow * out_c];
        reference::int8::conv::conv2d(&g, &quant, c.in_dims, &storage[first..], c.out_dims, &mut strided, &weights);
        prop_assert_eq!(&strided, &dense);
        // The fast entry point: the x86_64 kernels, then the portable loops (on Cortex-M: the
        // receptive-field gathers, the depthwise loops at the input's stride).
        for fast_out in fast::conv::tests::both_paths(|| {
            let mut y = std::vec![0i8; oh * ow * out_c];
            fast::conv::conv2d(&g, &quant, c.in_dims, &storage[first..], c.out_dims, &mut y, &weights);
            y
        }) {
            prop_assert_eq!(&fast_out, &dense);
        }
    }

    /// 16×8 (int16 input, int8 and int16 outputs): as for int8.
    #[test]
    fn wide_conv_reads_a_channel_slice_in_place(c in slice_case()) {
        let Some((c, with_pad_values)) = c else { return Ok(()) };
        let [oh, ow, out_c] = c.out_dims;
        let (storage, copied) = c.storage(|i| (crate::testutil::values(1, c.seed ^ i as u64)[0] * 30000.0) as i16);
        let weights = values_i8(c.weights_len(), c.seed ^ 1);
        let pad_values: Vec<i16> = if with_pad_values { (0..c.in_dims[2] as i16).map(|v| 300 * v - 700).collect() } else { Vec::new() };
        let bias: Vec<i32> = (0..out_c as i32).map(|o| 1000 * o - 1500).collect();
        let multiplier = std::vec![1 << 30; out_c];
        let shift: Vec<i32> = (0..out_c as i32).map(|o| -(o % 3) - 10).collect();
        let quant = WideConvQuant {
            input_zero_point: 0i16,
            pad_values: &pad_values,
            channels: ChannelQuant { bias: &bias, multiplier: &multiplier, shift: &shift },
            output: WideOutputQuant { zero_point: 3, clamp: ClampI16 { min: -128, max: 127 } },
        };
        let (g, first) = c.strided();
        let mut dense = std::vec![0i8; oh * ow * out_c];
        reference::int8::conv::conv2d_wide(&c.g, &quant, c.in_dims, &copied, c.out_dims, &mut dense, &weights);
        let mut strided = std::vec![0i8; oh * ow * out_c];
        reference::int8::conv::conv2d_wide(&g, &quant, c.in_dims, &storage[first..], c.out_dims, &mut strided, &weights);
        prop_assert_eq!(&strided, &dense);
        for fast_out in fast::conv::tests::both_paths(|| {
            let mut y = std::vec![0i8; oh * ow * out_c];
            fast::conv::conv2d_wide(&g, &quant, c.in_dims, &storage[first..], c.out_dims, &mut y, &weights);
            y
        }) {
            prop_assert_eq!(&fast_out, &dense);
        }
        let quant = WideConvQuant { output: WideOutputQuant { zero_point: 0, clamp: ClampI16 { min: -32768, max: 32767 } }, ..quant };
        let mut dense = std::vec![0i16; oh * ow * out_c];
        reference::int8::conv::conv2d_wide(&c.g, &quant, c.in_dims, &copied, c.out_dims, &mut dense, &weights);
        for fast_out in fast::conv::tests::both_paths(|| {
            let mut y = std::vec![0i16; oh * ow * out_c];
            fast::conv::conv2d_wide(&g, &quant, c.in_dims, &storage[first..], c.out_dims, &mut y, &weights);
            y
        }) {
            prop_assert_eq!(&fast_out, &dense);
        }
    }
}
