//! On-device check of the fast kernels: random convolutions (regular, depthwise, depthwise 3x3,
//! pointwise, first-layer shapes; int8, 16x8 and f32 element types; any stride, dilation, padding, zero point and
//! pad values), dense layers and residual additions, each computed by the fast kernel and by its
//! reference kernel on the core itself, compared byte for byte (f32 on integer-valued operands,
//! where no summation order rounds).
//!
//! This is where the Arm DSP instructions (`icefold::kernels::fast::simd`) run for real: on the
//! host they are portable Rust. Prints `KERNEL-CHECK cases=<N> mismatches=0` and exits with
//! success, or prints the first mismatch and exits with failure. Run by tests/mcu.rs on every core.
#![no_std]
#![no_main]

use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hprintln};
use icefold::kernels::fast;
use icefold::kernels::reference::int8::{
    conv::{self, ConvQuant, WideConvQuant},
    dense,
    elementwise::{self, AddQuant, AffineQuant},
    mul::{self, MulQuant},
    pool::{self, PoolQuant},
    ChannelQuant, OutputQuant, WideOutputQuant,
};
use icefold::kernels::reference::{conv as conv_f32, dense as dense_f32};
use icefold::kernels::{Activation, ConvGeometry, PoolGeometry, PoolKind};
use icefold::quant::{Clamp, ClampI16, Requant};
use panic_semihosting as _;

/// Random cases per kind.
const CASES: usize = 150;
/// Largest activation tensor (elements).
const MAX_ACT: usize = 400;
/// Largest weight tensor (elements).
const MAX_W: usize = 640;
/// Largest channel count.
const MAX_C: usize = 16;
/// Largest input channel count (pointwise layers: the fused tile's one and two passes).
const MAX_IN_C: usize = 32;

/// A linear congruential generator with the extremes over-represented.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }
    fn below(&mut self, n: u32) -> usize {
        (self.next() % n.max(1)) as usize
    }
    fn i8(&mut self) -> i8 {
        match self.next() % 8 {
            0 => i8::MIN,
            1 => i8::MAX,
            _ => self.next() as i8,
        }
    }
    fn i16(&mut self) -> i16 {
        match self.next() % 8 {
            0 => i16::MIN,
            1 => i16::MAX,
            _ => self.next() as i16,
        }
    }
    /// A normalized factor near 1 half of the time, small otherwise; with `runs`, one whose
    /// output stage the DSP loops take for any int16 zero point (a right shift of 2 to 14:
    /// `simd::RunScale`, so that `fast::depthwise::by_pixel` runs the layer).
    fn requant(&mut self, runs: bool) -> Requant {
        let multiplier = (1 << 30) + (self.next() >> 2) as i32;
        let shift = if runs {
            -(2 + self.below(13) as i32)
        } else if self.next() % 2 == 0 {
            -(self.below(4) as i32)
        } else {
            -(self.below(20) as i32)
        };
        Requant { multiplier, shift }
    }
}

/// Per-channel constants of one case.
struct Channels {
    bias: [i32; MAX_C],
    multiplier: [i32; MAX_C],
    shift: [i32; MAX_C],
}

impl Channels {
    fn new(gen: &mut Gen, runs: bool) -> Channels {
        let mut c = Channels {
            bias: [0; MAX_C],
            multiplier: [0; MAX_C],
            shift: [0; MAX_C],
        };
        for k in 0..MAX_C {
            let r = gen.requant(runs);
            c.bias[k] = (gen.next() as i32) >> 11; // below 2^20
            c.multiplier[k] = r.multiplier;
            c.shift[k] = r.shift;
        }
        c
    }
    fn quant(&self, n: usize) -> ChannelQuant<'_> {
        ChannelQuant {
            bias: &self.bias[..n],
            multiplier: &self.multiplier[..n],
            shift: &self.shift[..n],
        }
    }
}

fn out_len(size: usize, k: usize, s: usize, d: usize, pa: usize, pb: usize) -> Option<usize> {
    (size + pa + pb)
        .checked_sub(d * (k - 1) + 1)
        .map(|n| n / s + 1)
}

/// Cases of each element-type pair given by [`quad_geometry`] before the random ones.
const QUAD_CASES: usize = 16;

/// Cases of each element-type pair given by [`small_geometry`] after the [`QUAD_CASES`].
const SMALL_CASES: usize = 8;

/// Pointwise layers on 8 input channels (`conv::pointwise_small` on DSP cores, with factors
/// of the stage's register form: see `main`), one of [`SMALL_CASES`] fixed geometries: 4 to
/// 16 output channels, one pixel and maps of odd and even pixel counts.
fn small_geometry(i: usize) -> Option<(ConvGeometry, [usize; 3], [usize; 3])> {
    let out_c = 4 * (1 + i % 4);
    let (h, w) = [
        (1, 1),
        (3, 5),
        (2, 3),
        (5, 4),
        (1, 7),
        (4, 6),
        (3, 3),
        (2, 2),
    ][i % 8];
    let g = ConvGeometry {
        kernel: [1, 1],
        stride: [1, 1],
        dilation: [1, 1],
        pad: [0; 4],
        groups: 1,
        out_pixel_stride: 0,
        in_pixel_stride: 0,
    };
    Some((g, [h, w, 8], [h, w, out_c]))
}

/// The four-channel tile's 3x3 windows (`regular_quads`), one of [`QUAD_CASES`] fixed
/// geometries: int8-sized (16 input channels) and int16-sized (8) inputs, strides 1 and 2 along
/// each axis, pads 1 on every side or only on two, maps with at least two rows inside at
/// vertical stride 2, so that the rows inside, the border columns run down the rows (their
/// step between rows), the clipped rows and the corners all occur.
fn quad_geometry(i: usize) -> Option<(ConvGeometry, [usize; 3], [usize; 3])> {
    let (in_c, out_c, h, w) = if i % 2 == 0 {
        (16, 4, 6, 4)
    } else {
        (8, 5, 7, 5)
    };
    let stride = [1 + (i / 2) % 2, 1 + (i / 4) % 2];
    let pad = if i / 8 == 0 { [1; 4] } else { [0, 1, 1, 0] };
    let g = ConvGeometry {
        kernel: [3, 3],
        stride,
        dilation: [1, 1],
        pad,
        groups: 1,
        out_pixel_stride: 0,
        in_pixel_stride: 0,
    };
    let oh = out_len(h, 3, stride[0], 1, pad[0], pad[2])?;
    let ow = out_len(w, 3, stride[1], 1, pad[1], pad[3])?;
    Some((g, [h, w, in_c], [oh, ow, out_c]))
}

/// A random convolution geometry with its input and output dims, within the buffers.
fn geometry(gen: &mut Gen) -> Option<(ConvGeometry, [usize; 3], [usize; 3])> {
    let kind = gen.below(5);
    let (kernel, in_c, out_c, groups) = match kind {
        // Regular, few input channels (first layers): up to 16 output channels and kernels
        // up to DS-CNN's 10x4, so that `columns` runs with either weight buffer (the smaller
        // one in chunks on cores without the DSP tiles).
        // Output channels a multiple of 4 half of the time: the fused four-channel tile
        // (`conv::columns_fused`) on DSP cores.
        0 => (
            [1 + gen.below(10), 1 + gen.below(4)],
            1 + gen.below(3),
            if gen.next() % 2 == 0 {
                4 * (1 + gen.below(4))
            } else {
                1 + gen.below(MAX_C as u32)
            },
            1,
        ),
        // Regular, channels a multiple of 4 (of 8 with four output channels or more: the
        // four-channel tile of int16 inputs on DSP cores, a tail of one to three included).
        1 if gen.next() % 2 == 0 => (
            [1 + gen.below(3), 1 + gen.below(3)],
            4 * (1 + gen.below(4)),
            1 + gen.below(8),
            1,
        ),
        // Regular 3x3 windows of the four-channel tile (`regular_quads`: input channels in
        // multiples of 16 for int8 inputs, 8 for int16), maps of 2 to 5 pixels a side (below),
        // so that the rows inside, the border columns run down the rows and the corners all
        // occur.
        1 => {
            let in_c = 8 * (1 + gen.below(2));
            let out_c = if in_c == 16 { 4 } else { 4 + gen.below(5) };
            ([3, 3], in_c, out_c, 1)
        }
        // Depthwise.
        2 => {
            let c = 1 + gen.below(8);
            ([1 + gen.below(3), 1 + gen.below(3)], c, c, c)
        }
        // Pointwise (input channels a multiple of 8 half of the time: the four-channel tile,
        // its fused loop with a half pass first or not, one pass or two).
        3 => {
            let in_c = if gen.next() % 2 == 0 {
                8 * (1 + gen.below(4))
            } else {
                2 * (1 + gen.below(8))
            };
            ([1, 1], in_c, 1 + gen.below(8), 1)
        }
        // Depthwise 3x3 (the dedicated kernel `fast::depthwise`: even channel counts, dilation
        // 1, horizontal stride 1 or 2; odd counts take the general loop).
        _ => {
            let c = 1 + gen.below(MAX_C as u32);
            ([3, 3], c, c, c)
        }
    };
    let (stride, dilation, pad) = if kind == 3 && gen.next() % 2 == 0 {
        ([1, 1], [1, 1], [0; 4])
    } else if kind == 3 && gen.next() % 2 == 0 {
        // Strided and unpadded (`conv::pointwise_strided` on DSP cores: ResNet-8's 1x1/2).
        ([1 + gen.below(2), 2], [1, 1], [0; 4])
    } else if kind == 4 {
        (
            [1 + gen.below(3), 1 + gen.below(2)],
            [1, 1],
            [gen.below(3), gen.below(3), gen.below(3), gen.below(3)],
        )
    } else if kind == 1 && kernel == [3, 3] && in_c % 8 == 0 && out_c >= 4 {
        // The four-channel tile's windows: dilation 1 along rows, pads of 0 or 1 (border
        // columns run down the rows), strides 1 and 2.
        (
            [1 + gen.below(2), 1 + gen.below(2)],
            [1 + gen.below(2), 1],
            [gen.below(2), gen.below(2), gen.below(2), gen.below(2)],
        )
    } else if kind == 0 && gen.next() % 4 != 0 {
        // First layers mostly undilated: runs of windows inside the input (copied per output
        // row by `simd::copy_fields`) beside the padded ones.
        (
            [1 + gen.below(2), 1 + gen.below(2)],
            [1, 1],
            [gen.below(3), gen.below(3), gen.below(3), gen.below(3)],
        )
    } else {
        (
            [1 + gen.below(2), 1 + gen.below(2)],
            [1 + gen.below(2), 1 + gen.below(2)],
            [gen.below(3), gen.below(3), gen.below(3), gen.below(3)],
        )
    };
    let (h, w) = if kind == 4 {
        // Wide rows: several two-pixel passes and an odd last pixel.
        (1 + gen.below(6), 1 + gen.below(24))
    } else if kind == 0 {
        // Rows wide enough for several windows inside the input, up to `MAX_ACT`.
        (1 + gen.below(12), 1 + gen.below(16))
    } else if kind == 1 && kernel == [3, 3] {
        // Up to 7 rows: two rows inside at vertical stride 2.
        (2 + gen.below(6), 2 + gen.below(4))
    } else {
        (1 + gen.below(7), 1 + gen.below(7))
    };
    let g = ConvGeometry {
        kernel,
        stride,
        dilation,
        pad,
        groups,
        out_pixel_stride: 0,
        in_pixel_stride: 0,
    };
    let oh = out_len(h, kernel[0], stride[0], dilation[0], pad[0], pad[2])?;
    let ow = out_len(w, kernel[1], stride[1], dilation[1], pad[1], pad[3])?;
    let fits = h * w * in_c <= MAX_ACT
        && oh * ow * out_c <= MAX_ACT
        && out_c * kernel[0] * kernel[1] * (in_c / groups) <= MAX_W;
    fits.then_some((g, [h, w, in_c], [oh, ow, out_c]))
}

/// Largest dense weight count [`check_quads`] takes (its buffer lives only during the call:
/// the M0's stack has no room for another full weight array beside `main`'s).
const QUAD_W: usize = MAX_W / 2;

/// One dense case with the weights `wt` (`n_out` rows of `n_in`) stored as int16 quads
/// (`DenseLayout::QuadsI16`): the fast kernel on them, int8 and int16 outputs, against the
/// reference on the int8 rows.
#[inline(never)]
fn check_quads(
    ch: &ChannelQuant,
    q8: &OutputQuant,
    q16: &WideOutputQuant,
    (wt, x): (&[i8], &[i8]),
    (n_in, n_out): (usize, usize),
    case: usize,
) {
    /// Word-aligned int16 weights (the quad layout is read with LDM).
    #[repr(align(4))]
    struct Quads([i16; QUAD_W]);
    let mut wq = Quads([0; QUAD_W]);
    let quads = &mut wq.0[..n_in * n_out];
    for o in 0..n_out {
        for i in 0..n_in {
            quads[icefold::format::quad_index(n_out, n_in, o, i)] = wt[o * n_in + i].into();
        }
    }
    let (mut y8a, mut y8b) = ([0i8; MAX_C], [0i8; MAX_C]);
    let (mut y16a, mut y16b) = ([0i16; MAX_C], [0i16; MAX_C]);
    fast::dense::dense_quads(ch, q8, quads, x, &mut y8a[..n_out]);
    dense::dense(ch, q8, wt, x, &mut y8b[..n_out]);
    fast::dense::dense_wide_quads(ch, q16, quads, x, &mut y16a[..n_out]);
    dense::dense_wide(ch, q16, wt, x, &mut y16b[..n_out]);
    if y8a[..n_out] != y8b[..n_out] || y16a[..n_out] != y16b[..n_out] {
        hprintln!(
            "dense int16 quads n_in {} n_out {}: int8 {:?} want {:?}, int16 {:?} want {:?}",
            n_in,
            n_out,
            &y8a[..n_out],
            &y8b[..n_out],
            &y16a[..n_out],
            &y16b[..n_out]
        );
        fail("dense int16 quads", case);
    }
}

/// One dense case with the weights `wt` (`n_out` rows of `n_in`, at most [`QUAD_W`] values)
/// stored in row pairs (`DenseLayout::PairsI8`, what the tool writes by default where a layer
/// allows it): the fast kernel on them (on DSP cores two pairs per block of the assembly when
/// `n_in` is a multiple of 8), int8 and int16 outputs, against the reference on the int8 rows.
/// A second-row −128 under a negative first-row weight, the one value the layout cannot
/// store, becomes −127 in both.
#[inline(never)]
fn check_pairs(
    ch: &ChannelQuant,
    q8: &OutputQuant,
    q16: &WideOutputQuant,
    (wt, x): (&[i8], &[i8]),
    (n_in, n_out): (usize, usize),
    case: usize,
) {
    /// Word-aligned bytes (the pairs are read with LDRD).
    #[repr(align(4))]
    struct Bytes([i8; QUAD_W]);
    let (mut rows, mut stored) = (Bytes([0; QUAD_W]), Bytes([0; QUAD_W]));
    let len = n_in * n_out;
    let rows = &mut rows.0[..len];
    rows.copy_from_slice(wt);
    for o in (1..n_out).step_by(2) {
        for i in 0..n_in {
            if rows[o * n_in + i] == -128 && rows[(o - 1) * n_in + i] < 0 {
                rows[o * n_in + i] = -127;
            }
        }
    }
    let stored = &mut stored.0[..len];
    let positions = x.len() / n_in;
    if icefold::format::store_pairs(rows, n_out, n_in, positions, stored).is_err() {
        fail("dense row pairs (refused by store_pairs)", case);
    }
    let (mut y8a, mut y8b) = ([0i8; MAX_C], [0i8; MAX_C]);
    let (mut y16a, mut y16b) = ([0i16; MAX_C], [0i16; MAX_C]);
    fast::dense::dense_pairs(ch, q8, stored, x, &mut y8a[..n_out]);
    dense::dense(ch, q8, rows, x, &mut y8b[..n_out]);
    fast::dense::dense_wide_pairs(ch, q16, stored, x, &mut y16a[..n_out]);
    dense::dense_wide(ch, q16, rows, x, &mut y16b[..n_out]);
    if y8a[..n_out] != y8b[..n_out] || y16a[..n_out] != y16b[..n_out] {
        hprintln!(
            "dense row pairs n_in {} n_out {}: int8 {:?} want {:?}, int16 {:?} want {:?}",
            n_in,
            n_out,
            &y8a[..n_out],
            &y8b[..n_out],
            &y16a[..n_out],
            &y16b[..n_out]
        );
        fail("dense row pairs", case);
    }
}

fn fail(what: &str, case: usize) -> ! {
    hprintln!("KERNEL-CHECK mismatch in {} case {}", what, case);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

#[entry]
fn main() -> ! {
    let mut gen = Gen(0x1CEF_01D5);
    let mut cases = 0usize;
    let mut w = [0i8; MAX_W];
    let (mut x8, mut y8a, mut y8b) = ([0i8; MAX_ACT], [0i8; MAX_ACT], [0i8; MAX_ACT]);
    let (mut x16, mut y16a, mut y16b) = ([0i16; MAX_ACT], [0i16; MAX_ACT], [0i16; MAX_ACT]);

    // Convolutions, every element-type pair.
    let mut case = 0;
    while case < 4 * CASES {
        let small = (4 * QUAD_CASES..4 * (QUAD_CASES + SMALL_CASES)).contains(&case);
        let forced = if case < 4 * QUAD_CASES {
            Some(quad_geometry(case / 4))
        } else {
            small.then(|| small_geometry(case / 4 - QUAD_CASES))
        };
        let Some((g, in_dims, out_dims)) = forced.unwrap_or_else(|| geometry(&mut gen)) else {
            continue;
        };
        let [h, wd, in_c] = in_dims;
        let n_in = h * wd * in_c;
        let n_out = out_dims[0] * out_dims[1] * out_dims[2];
        let n_w = out_dims[2] * g.kernel[0] * g.kernel[1] * (in_c / g.groups);
        w[..n_w].iter_mut().for_each(|v| *v = gen.i8());
        x8[..n_in].iter_mut().for_each(|v| *v = gen.i8());
        x16[..n_in].iter_mut().for_each(|v| *v = gen.i16());
        // Every second depthwise 3x3 case with factors the pixel-by-pixel kernel takes, and
        // every second first layer (few input channels) with factors the fused four-channel
        // tile takes.
        let runs = case / 4 % 2 == 1
            && ((g.kernel == [3, 3] && g.groups == in_c && in_c > 1)
                || (g.groups == 1 && in_c % 4 != 0));
        // And every small pointwise case (its stage's register form).
        let runs = runs || small;
        let ch = Channels::new(&mut gen, runs);
        let channels = ch.quant(out_dims[2]);
        let mut pad8 = [0i8; MAX_IN_C];
        let mut pad16 = [0i16; MAX_IN_C];
        let with_pad = gen.next() % 2 == 0;
        pad8.iter_mut().for_each(|v| *v = gen.i8());
        pad16.iter_mut().for_each(|v| *v = gen.i16());
        let pad_len = if with_pad { in_c } else { 0 };
        let relu = gen.next() % 2 == 0;
        match case % 4 {
            0 => {
                let zp = gen.i8();
                let clamp = if relu {
                    Clamp { min: zp, max: 127 }
                } else {
                    Clamp::FULL
                };
                let q = ConvQuant {
                    input_zero_point: gen.i8(),
                    pad_values: &pad8[..pad_len],
                    channels,
                    output: OutputQuant {
                        zero_point: zp,
                        clamp,
                    },
                };
                fast::conv::conv2d(
                    &g,
                    &q,
                    in_dims,
                    &x8[..n_in],
                    out_dims,
                    &mut y8a[..n_out],
                    &w[..n_w],
                );
                conv::conv2d(
                    &g,
                    &q,
                    in_dims,
                    &x8[..n_in],
                    out_dims,
                    &mut y8b[..n_out],
                    &w[..n_w],
                );
                if y8a[..n_out] != y8b[..n_out] {
                    fail("conv i8->i8", case);
                }
            }
            k => {
                // Zero in a quarter of the cases (chosen by the case number, so the random
                // stream of the later cases is unchanged): with ReLU, the `[0, 32767]` clamp
                // that the depthwise output assembly (`simd::requant_run`) does with USAT.
                let zp = gen.i16();
                let zp = if case / 4 % 4 == 0 || small { 0 } else { zp };
                let clamp = if relu {
                    ClampI16 {
                        min: zp,
                        max: i16::MAX,
                    }
                } else {
                    ClampI16 {
                        min: i16::MIN,
                        max: i16::MAX,
                    }
                };
                let output = WideOutputQuant {
                    zero_point: zp,
                    clamp,
                };
                if k == 1 {
                    let q = WideConvQuant {
                        input_zero_point: gen.i8(),
                        pad_values: &pad8[..pad_len],
                        channels,
                        output,
                    };
                    fast::conv::conv2d_wide(
                        &g,
                        &q,
                        in_dims,
                        &x8[..n_in],
                        out_dims,
                        &mut y16a[..n_out],
                        &w[..n_w],
                    );
                    conv::conv2d_wide(
                        &g,
                        &q,
                        in_dims,
                        &x8[..n_in],
                        out_dims,
                        &mut y16b[..n_out],
                        &w[..n_w],
                    );
                } else {
                    let q = WideConvQuant {
                        input_zero_point: gen.i16(),
                        pad_values: &pad16[..pad_len],
                        channels,
                        output,
                    };
                    if k == 2 {
                        fast::conv::conv2d_wide(
                            &g,
                            &q,
                            in_dims,
                            &x16[..n_in],
                            out_dims,
                            &mut y16a[..n_out],
                            &w[..n_w],
                        );
                        conv::conv2d_wide(
                            &g,
                            &q,
                            in_dims,
                            &x16[..n_in],
                            out_dims,
                            &mut y16b[..n_out],
                            &w[..n_w],
                        );
                    } else {
                        fast::conv::conv2d_wide(
                            &g,
                            &q,
                            in_dims,
                            &x16[..n_in],
                            out_dims,
                            &mut y8a[..n_out],
                            &w[..n_w],
                        );
                        conv::conv2d_wide(
                            &g,
                            &q,
                            in_dims,
                            &x16[..n_in],
                            out_dims,
                            &mut y8b[..n_out],
                            &w[..n_w],
                        );
                        if y8a[..n_out] != y8b[..n_out] {
                            fail("conv i16->i8", case);
                        }
                    }
                }
                if k != 3 && y16a[..n_out] != y16b[..n_out] {
                    fail("conv 16x8", case);
                }
            }
        }
        case += 1;
        cases += 1;
    }

    // f32 convolutions and dense layers: integer-valued operands (|x|, |w| <= 8, at most
    // MAX_W products per output: every partial sum is exact in f32), so the fast kernels'
    // different summation order rounds nothing and they must equal the reference bit for bit.
    // On the Cortex-M4F and M33 this runs their VLDM/VMLA loops.
    // Half-size buffers: the Cortex-M0 board's stack holds the integer buffers and these.
    const F32_ACT: usize = MAX_ACT / 2;
    const F32_W: usize = MAX_W / 2;
    let (mut xf, mut yfa, mut yfb) = ([0f32; F32_ACT], [0f32; F32_ACT], [0f32; F32_ACT]);
    let mut wf = [0f32; F32_W];
    let small = |gen: &mut Gen| f32::from(gen.i8() >> 4);
    let mut case = 0;
    while case < CASES {
        let Some((g, in_dims, out_dims)) = geometry(&mut gen) else {
            continue;
        };
        let [h, wd, in_c] = in_dims;
        let n_in = h * wd * in_c;
        let n_out = out_dims[0] * out_dims[1] * out_dims[2];
        let n_w = out_dims[2] * g.kernel[0] * g.kernel[1] * (in_c / g.groups);
        if n_in > F32_ACT || n_out > F32_ACT || n_w > F32_W {
            continue;
        }
        wf[..n_w].iter_mut().for_each(|v| *v = small(&mut gen));
        xf[..n_in].iter_mut().for_each(|v| *v = small(&mut gen));
        let bias: [f32; MAX_C] = core::array::from_fn(|_| small(&mut gen));
        let pads: [f32; MAX_IN_C] = core::array::from_fn(|_| small(&mut gen));
        let pad_len = if gen.next() % 2 == 0 { in_c } else { 0 };
        let activation = match gen.below(3) {
            0 => Activation::Identity,
            1 => Activation::Relu,
            _ => Activation::Clip {
                lo: -20.0,
                hi: 30.0,
            },
        };
        let operands = (
            &xf[..n_in],
            &wf[..n_w],
            &bias[..out_dims[2]],
            &pads[..pad_len],
        );
        let (x, wt, b, pv) = operands;
        fast::conv_f32::conv2d(
            &g,
            &activation,
            in_dims,
            x,
            out_dims,
            &mut yfa[..n_out],
            wt,
            b,
            pv,
        );
        conv_f32::conv2d(
            &g,
            &activation,
            in_dims,
            x,
            out_dims,
            &mut yfb[..n_out],
            wt,
            b,
            pv,
        );
        if yfa[..n_out]
            .iter()
            .zip(&yfb[..n_out])
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            fail("conv f32", case);
        }
        // Dense: at most 20 · 16 weights (F32_W) and 60 inputs.
        let n_in = 1 + gen.below(20);
        let n_out = 1 + gen.below(MAX_C as u32);
        let positions = 1 + gen.below(3);
        let (x, wt) = (&xf[..n_in * positions], &wf[..n_in * n_out]);
        fast::dense_f32::dense(&activation, wt, &bias[..n_out], x, &mut yfa[..n_out]);
        dense_f32::dense(&activation, wt, &bias[..n_out], x, &mut yfb[..n_out]);
        if yfa[..n_out]
            .iter()
            .zip(&yfb[..n_out])
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            fail("dense f32", case);
        }
        case += 1;
        cases += 2;
    }

    // Dense layers (int8 and int16 outputs, one to three positions) and residual additions.
    // Half of the cases with `n_in` a multiple of 4 (the DSP cores' widened path, odd and
    // even runs), the weights starting at every alignment, every count of rows in a last block.
    for case in 0..CASES {
        let n_in = if case % 2 == 0 {
            4 * (1 + gen.below(10))
        } else {
            1 + gen.below(40)
        };
        let n_out = 1 + gen.below(MAX_C.min((MAX_W - 3) / n_in) as u32);
        let positions = 1 + gen.below(3);
        let offset = gen.below(4);
        w[..offset + n_in * n_out]
            .iter_mut()
            .for_each(|v| *v = gen.i8());
        x8[..n_in * positions]
            .iter_mut()
            .for_each(|v| *v = gen.i8());
        let ch = Channels::new(&mut gen, false);
        let zp = gen.i8();
        // The full range, a ReLU's (from the zero point up) and a narrower one: the rows'
        // output stage takes the first two in its assembly, the third row by row.
        let clamp = match case % 3 {
            0 => Clamp::FULL,
            1 => Clamp {
                min: zp,
                max: i8::MAX,
            },
            _ => Clamp {
                min: zp.min(0),
                max: 100,
            },
        };
        let q8 = OutputQuant {
            zero_point: zp,
            clamp,
        };
        let (x, wt) = (&x8[..n_in * positions], &w[offset..offset + n_in * n_out]);
        fast::dense::dense(&ch.quant(n_out), &q8, wt, x, &mut y8a[..n_out]);
        dense::dense(&ch.quant(n_out), &q8, wt, x, &mut y8b[..n_out]);
        let zp16 = gen.i16();
        let q = WideOutputQuant {
            zero_point: zp16,
            clamp: match case % 3 {
                0 => ClampI16 {
                    min: i16::MIN,
                    max: i16::MAX,
                },
                1 => ClampI16 {
                    min: zp16,
                    max: i16::MAX,
                },
                _ => ClampI16 {
                    min: zp16.min(0),
                    max: 20_000,
                },
            },
        };
        fast::dense::dense_wide(&ch.quant(n_out), &q, wt, x, &mut y16a[..n_out]);
        dense::dense_wide(&ch.quant(n_out), &q, wt, x, &mut y16b[..n_out]);
        if y8a[..n_out] != y8b[..n_out] || y16a[..n_out] != y16b[..n_out] {
            hprintln!(
                "dense n_in {} n_out {} positions {} weight offset {}: int8 {:?} want {:?}, int16 {:?} want {:?}",
                n_in, n_out, positions, offset, &y8a[..n_out], &y8b[..n_out], &y16a[..n_out], &y16b[..n_out]
            );
            fail("dense", case);
        }
        // The same values stored by the host as int16 quads (`DenseLayout::QuadsI16`, `n_in` a
        // multiple of 4): the fast kernel on them against the reference on the int8 rows.
        if n_in % 4 == 0 && n_in * n_out <= QUAD_W {
            check_quads(&ch.quant(n_out), &q8, &q, (wt, x), (n_in, n_out), case);
            check_pairs(&ch.quant(n_out), &q8, &q, (wt, x), (n_in, n_out), case);
        }
        let n = 1 + gen.below(MAX_ACT as u32);
        x8[..n].iter_mut().for_each(|v| *v = gen.i8());
        y16a[..n].iter_mut().for_each(|v| *v = i16::from(gen.i8()));
        let b: [i8; MAX_ACT] = core::array::from_fn(|i| y16a[i] as i8);
        let zp_out = gen.i8();
        let q = AddQuant {
            input_zero_points: [gen.i8(), gen.i8()],
            input_requant: [gen.requant(false), gen.requant(false)],
            output_requant: gen.requant(false),
            output: OutputQuant {
                zero_point: zp_out,
                // ReLU, or (every fourth case) the whole int8 range: the DSP cores' tabulated
                // loop saturates to it in one instruction.
                clamp: if case % 4 == 0 {
                    Clamp::FULL
                } else {
                    Clamp {
                        min: zp_out,
                        max: 127,
                    }
                },
            },
        };
        fast::elementwise::add(&q, &x8[..n], &b[..n], &mut y8a[..n]);
        elementwise::add(&q, &x8[..n], &b[..n], &mut y8b[..n]);
        if y8a[..n] != y8b[..n] {
            fail("add", case);
        }
        // The tabulated loop (`add` tabulates from 1024 elements, more than these buffers).
        fast::elementwise::add_tabulated(&q, &x8[..n], &b[..n], &mut y8a[..n]);
        if y8a[..n] != y8b[..n] {
            fail("add (tabulated)", case);
        }
        cases += 2;
    }
    // int8 max and average pooling (`fast::pool`: SSUB8/SEL words over the taps on the DSP
    // cores): windows 1x1 to 4x4, strides 1 to 3, pads below the window, channels across the
    // four-lane words (1 to 24), with and without the output's own rescaling.
    for case in 0..CASES {
        let c = 1 + gen.below(24);
        let k = [1 + gen.below(4), 1 + gen.below(4)];
        let s = [1 + gen.below(3), 1 + gen.below(3)];
        let pad = [k[0], k[1], k[0], k[1]].map(|k| gen.below(k as u32));
        let h = 1 + gen.below((MAX_ACT / c).min(12) as u32);
        let w = 1 + gen.below((MAX_ACT / (c * h)).min(12) as u32);
        let (Some(oh), Some(ow)) = (
            out_len(h, k[0], s[0], 1, pad[0], pad[2]),
            out_len(w, k[1], s[1], 1, pad[1], pad[3]),
        ) else {
            continue;
        };
        if oh * ow * c > MAX_ACT {
            continue;
        }
        let kind = match case % 3 {
            0 => PoolKind::Max,
            1 => PoolKind::Average { count_include_pad: true },
            _ => PoolKind::Average { count_include_pad: false },
        };
        let g = PoolGeometry { kind, kernel: k, stride: s, pad };
        let zp_out = gen.i8();
        let q = PoolQuant {
            input_zero_point: gen.i8(),
            rescale: (case % 4 == 0).then(|| gen.requant(false)),
            output: OutputQuant {
                zero_point: zp_out,
                clamp: if case % 2 == 0 { Clamp::FULL } else { Clamp { min: zp_out, max: 127 } },
            },
        };
        let (n_in, n_out) = (h * w * c, oh * ow * c);
        x8[..n_in].iter_mut().for_each(|v| *v = gen.i8());
        fast::pool::pool(&g, &q, [h, w, c], &x8[..n_in], [oh, ow, c], &mut y8a[..n_out]);
        pool::pool(&g, &q, [h, w, c], &x8[..n_in], [oh, ow, c], &mut y8b[..n_out]);
        if y8a[..n_out] != y8b[..n_out] {
            fail("pool", case);
        }
        cases += 1;
    }
    // Per-channel affine and gating product (`fast::elementwise::affine` and `mul`: factors
    // prepared once per channel or layer): channels 1 to 24, pixels up to the buffers.
    for case in 0..CASES {
        let c = 1 + gen.below(24);
        let n = c * gen.below((MAX_ACT / c) as u32 + 1);
        x8[..n].iter_mut().for_each(|v| *v = gen.i8());
        let zp_out = gen.i8();
        let output = OutputQuant {
            zero_point: zp_out,
            clamp: if case % 2 == 0 { Clamp::FULL } else { Clamp { min: zp_out, max: 127 } },
        };
        let factors: [Requant; 24] = core::array::from_fn(|_| gen.requant(false));
        let scale: [i32; 24] = core::array::from_fn(|_| i32::from(gen.i8()) << gen.below(25));
        let offset: [i32; 24] = core::array::from_fn(|_| i32::from(gen.i16()) << gen.below(16));
        let (multiplier, shift) = (factors.map(|r| r.multiplier), factors.map(|r| r.shift));
        let q = AffineQuant {
            input_zero_point: gen.i8(),
            scale: &scale[..c],
            offset: &offset[..c],
            multiplier: &multiplier[..c],
            shift: &shift[..c],
            output,
        };
        fast::elementwise::affine(&q, &x8[..n], &mut y8a[..n]);
        elementwise::affine(&q, &x8[..n], &mut y8b[..n]);
        if y8a[..n] != y8b[..n] {
            fail("affine", case);
        }
        let gate: [i8; 24] = core::array::from_fn(|_| gen.i8());
        let q = MulQuant {
            input_zero_points: [gen.i8(), gen.i8()],
            requant: gen.requant(false),
            output,
        };
        fast::elementwise::mul(&q, &x8[..n], &gate[..c], &mut y8a[..n]);
        mul::mul(&q, &x8[..n], &gate[..c], &mut y8b[..n]);
        if y8a[..n] != y8b[..n] {
            fail("mul", case);
        }
        cases += 2;
    }
    // Depthwise 3x3 with 16 to 64 channels, int16 in and out, ReLU with output zero point 0
    // (the clamp [0, 32767]) and factors `by_pixel` takes: its two-pixel passes with ring
    // columns of 8, 16 and 32 pairs (up to 32 pairs in one chunk, or several chunks), strides
    // 1 and 2, rows up to 24 pixels, odd last pixels. Buffers and generator as above.
    const DW_C: usize = 64;
    for case in 0..CASES {
        let c = 2 * (8 + gen.below(DW_C as u32 / 2 - 7));
        let stride = [1 + gen.below(2), 1 + gen.below(2)];
        let pad = [gen.below(2), gen.below(2), gen.below(2), gen.below(2)];
        let w_in = 1 + gen.below((MAX_ACT / c).min(24 * stride[1]) as u32);
        let h = 1 + gen.below((MAX_ACT / (c * w_in)).min(6) as u32);
        let g = ConvGeometry {
            kernel: [3, 3],
            stride,
            dilation: [1, 1],
            pad,
            groups: c,
            out_pixel_stride: 0,
            in_pixel_stride: 0,
        };
        let (Some(oh), Some(ow)) = (
            out_len(h, 3, stride[0], 1, pad[0], pad[2]),
            out_len(w_in, 3, stride[1], 1, pad[1], pad[3]),
        ) else {
            continue;
        };
        let (n_in, n_out, n_w) = (h * w_in * c, oh * ow * c, 9 * c);
        w[..n_w].iter_mut().for_each(|v| *v = gen.i8());
        x16[..n_in].iter_mut().for_each(|v| *v = gen.i16());
        let mut bias = [0i32; DW_C];
        let mut multiplier = [0i32; DW_C];
        let mut shift = [0i32; DW_C];
        for k in 0..c {
            let r = gen.requant(true);
            bias[k] = (gen.next() as i32) >> 11;
            multiplier[k] = r.multiplier;
            shift[k] = r.shift;
        }
        let mut pad16 = [0i16; DW_C];
        pad16.iter_mut().for_each(|v| *v = gen.i16());
        let pad_len = if gen.next() & 1 == 0 { c } else { 0 };
        let q = WideConvQuant {
            input_zero_point: gen.i16(),
            pad_values: &pad16[..pad_len],
            channels: ChannelQuant {
                bias: &bias[..c],
                multiplier: &multiplier[..c],
                shift: &shift[..c],
            },
            output: WideOutputQuant {
                zero_point: 0,
                clamp: ClampI16 {
                    min: 0,
                    max: i16::MAX,
                },
            },
        };
        let in_dims = [h, w_in, c];
        let out_dims = [oh, ow, c];
        fast::conv::conv2d_wide(
            &g,
            &q,
            in_dims,
            &x16[..n_in],
            out_dims,
            &mut y16a[..n_out],
            &w[..n_w],
        );
        conv::conv2d_wide(
            &g,
            &q,
            in_dims,
            &x16[..n_in],
            out_dims,
            &mut y16b[..n_out],
            &w[..n_w],
        );
        if y16a[..n_out] != y16b[..n_out] {
            fail("depthwise 3x3 relu16 wide channels", case);
        }
        cases += 1;
    }
    // Depthwise 3x3 on wide rows, int16 in and out, ReLU with output zero point 0. Even cases:
    // 2 to 14 channels on rows of 12 to 50 pixels (`fast::depthwise::by_pixel` with ring
    // columns of 4 and 8 words, its pixel pairs a loop of the pass). Odd cases: 16 channels on
    // a padded row of 25 pixels (one output row of 25 or 12): the row kernel
    // (`fast::depthwise::depthwise3x3`) with both lanes' output stages fused into the store
    // (`simd::requant_pairs_relu16`) and its ring rows copied into the repeated slots (stride
    // 1), or `by_pixel` (stride 2). Buffers and generator as above.
    for case in 0..CASES {
        let few = case % 2 == 0;
        let c = if few { 2 * (1 + gen.below(7)) } else { 16 };
        let stride = [1 + gen.below(2), 1 + gen.below(2)];
        let pad = if few {
            [gen.below(2), gen.below(2), gen.below(2), gen.below(2)]
        } else {
            [1; 4]
        };
        let widest = (MAX_ACT / c).min(50);
        let w_in = if few {
            widest - gen.below(widest as u32 / 2)
        } else {
            25
        };
        let h = 1 + gen.below((MAX_ACT / (c * w_in)).min(6) as u32);
        let g = ConvGeometry {
            kernel: [3, 3],
            stride,
            dilation: [1, 1],
            pad,
            groups: c,
            out_pixel_stride: 0,
            in_pixel_stride: 0,
        };
        let (Some(oh), Some(ow)) = (
            out_len(h, 3, stride[0], 1, pad[0], pad[2]),
            out_len(w_in, 3, stride[1], 1, pad[1], pad[3]),
        ) else {
            continue;
        };
        let (n_in, n_out, n_w) = (h * w_in * c, oh * ow * c, 9 * c);
        w[..n_w].iter_mut().for_each(|v| *v = gen.i8());
        x16[..n_in].iter_mut().for_each(|v| *v = gen.i16());
        let mut bias = [0i32; DW_C];
        let mut multiplier = [0i32; DW_C];
        let mut shift = [0i32; DW_C];
        for k in 0..c {
            let r = gen.requant(true);
            bias[k] = (gen.next() as i32) >> 11;
            multiplier[k] = r.multiplier;
            shift[k] = r.shift;
        }
        let mut pad16 = [0i16; DW_C];
        pad16.iter_mut().for_each(|v| *v = gen.i16());
        let pad_len = if gen.next() & 1 == 0 { c } else { 0 };
        let q = WideConvQuant {
            input_zero_point: gen.i16(),
            pad_values: &pad16[..pad_len],
            channels: ChannelQuant {
                bias: &bias[..c],
                multiplier: &multiplier[..c],
                shift: &shift[..c],
            },
            output: WideOutputQuant {
                zero_point: 0,
                clamp: ClampI16 {
                    min: 0,
                    max: i16::MAX,
                },
            },
        };
        let in_dims = [h, w_in, c];
        let out_dims = [oh, ow, c];
        fast::conv::conv2d_wide(
            &g,
            &q,
            in_dims,
            &x16[..n_in],
            out_dims,
            &mut y16a[..n_out],
            &w[..n_w],
        );
        conv::conv2d_wide(
            &g,
            &q,
            in_dims,
            &x16[..n_in],
            out_dims,
            &mut y16b[..n_out],
            &w[..n_w],
        );
        if y16a[..n_out] != y16b[..n_out] {
            fail("depthwise 3x3 relu16 wide rows", case);
        }
        cases += 1;
    }
    // Depthwise 3x3 with 66 to 70 channels (two chunks of channel pairs in
    // `fast::depthwise::by_pixel`: 32 pairs, then 1 to 3, odd counts included), stride 1, an
    // output row of 2 pixels, int16 in and out, ReLU with output zero point 0: the transposed
    // ring and its SMLAD pass (`simd::dw3x3_pairs_transposed`) chunk by chunk, its inner
    // columns copied in one call (`simd::copy_transposed_columns`, even chunks) or pair by
    // pair (odd ones). Buffers and generator as above.
    const DW_WIDE: usize = 70;
    for case in 0..CASES / 3 {
        let c = 2 * (33 + gen.below(3));
        let pad = [gen.below(2), 1, gen.below(2), 1];
        let h = 1 + gen.below((MAX_ACT / (2 * c)) as u32);
        let g = ConvGeometry {
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pad,
            groups: c,
            out_pixel_stride: 0,
            in_pixel_stride: 0,
        };
        let (Some(oh), Some(ow)) = (
            out_len(h, 3, 1, 1, pad[0], pad[2]),
            out_len(2, 3, 1, 1, pad[1], pad[3]),
        ) else {
            continue;
        };
        let (n_in, n_out, n_w) = (h * 2 * c, oh * ow * c, 9 * c);
        w[..n_w].iter_mut().for_each(|v| *v = gen.i8());
        x16[..n_in].iter_mut().for_each(|v| *v = gen.i16());
        let mut bias = [0i32; DW_WIDE];
        let mut multiplier = [0i32; DW_WIDE];
        let mut shift = [0i32; DW_WIDE];
        for k in 0..c {
            let r = gen.requant(true);
            bias[k] = (gen.next() as i32) >> 11;
            multiplier[k] = r.multiplier;
            shift[k] = r.shift;
        }
        let mut pad16 = [0i16; DW_WIDE];
        pad16.iter_mut().for_each(|v| *v = gen.i16());
        let pad_len = if gen.next() & 1 == 0 { c } else { 0 };
        let q = WideConvQuant {
            input_zero_point: gen.i16(),
            pad_values: &pad16[..pad_len],
            channels: ChannelQuant {
                bias: &bias[..c],
                multiplier: &multiplier[..c],
                shift: &shift[..c],
            },
            output: WideOutputQuant {
                zero_point: 0,
                clamp: ClampI16 {
                    min: 0,
                    max: i16::MAX,
                },
            },
        };
        let in_dims = [h, 2, c];
        let out_dims = [oh, ow, c];
        fast::conv::conv2d_wide(
            &g,
            &q,
            in_dims,
            &x16[..n_in],
            out_dims,
            &mut y16a[..n_out],
            &w[..n_w],
        );
        conv::conv2d_wide(
            &g,
            &q,
            in_dims,
            &x16[..n_in],
            out_dims,
            &mut y16b[..n_out],
            &w[..n_w],
        );
        if y16a[..n_out] != y16b[..n_out] {
            fail("depthwise 3x3 relu16 two chunks", case);
        }
        cases += 1;
    }
    hprintln!("KERNEL-CHECK cases={} mismatches=0", cases);
    debug::exit(debug::EXIT_SUCCESS);
    loop {}
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    hprintln!("KERNEL-CHECK hard fault at pc {:#x}", ef.pc());
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
