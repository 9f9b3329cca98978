//! Dispatch of a fused convolution and pooling (`Op::Conv2dPool`, `Op::Conv2dPoolI8`): the
//! layer's three arena regions (input, band, output; disjoint, validated at load) and the two
//! kernels the unfused layers would run, handed to the band driver `kernels::fused::run`.

use core::ops::Range;

use super::{
    as_f32, as_f32_mut, bytes_of, conv_geometry, dims, f32_conv2d, int8, kernels, linked,
    pool_geometry, Kernel, Kernels,
};
use crate::format::{Layer, Op};
use crate::kernels::fused::{self, FusedGeometry};
use crate::model::Model;

/// Disjoint mutable pieces of `arena` at `ranges` (in the order given); `None` if two overlap or
/// one lies outside.
fn carve(arena: &mut [u8], ranges: [Range<usize>; 3]) -> Option<[&mut [u8]; 3]> {
    let mut order = [0usize, 1, 2];
    order.sort_unstable_by_key(|&i| ranges.get(i).map_or(0, |r| r.start));
    let mut rest = arena;
    let mut consumed = 0;
    let mut pieces: [Option<&mut [u8]>; 3] = [None, None, None];
    for i in order {
        let r = ranges.get(i)?;
        let skip = r.start.checked_sub(consumed)?;
        let (_, tail) = core::mem::take(&mut rest).split_at_mut_checked(skip)?;
        let (piece, tail) = tail.split_at_mut_checked(r.end.checked_sub(r.start)?)?;
        *pieces.get_mut(i)? = Some(piece);
        rest = tail;
        consumed = r.end;
    }
    let [a, b, c] = pieces;
    Some([a?, b?, c?])
}

/// Runs a validated fused layer; returns its output bytes. `None` only if validation was
/// bypassed.
pub(super) fn run<'s, K: Kernels>(
    model: &Model<'_, K>,
    arena: &'s mut [u8],
    layer: &Layer,
) -> Option<&'s [u8]> {
    let (conv, pool, band) = layer.fused()?;
    let x_desc = layer.inputs.first()?;
    let scratch = layer.scratch()?;
    let mid = layer.fused_intermediate()?;
    let [x, b, y] = carve(
        arena,
        [
            bytes_of(x_desc),
            bytes_of(&scratch),
            bytes_of(&layer.output),
        ],
    )?;
    let x: &[u8] = x;
    let geometry = FusedGeometry {
        conv: conv_geometry(conv),
        pool: pool_geometry(pool),
        in_dims: dims(x_desc),
        mid_dims: dims(&mid),
        band_rows: usize::from(band.rows),
        out_dims: dims(&layer.output),
    };
    match &layer.op {
        Op::Conv2dPool(p) if linked::<K>(Kernel::Conv2dPool) => {
            let weights = model.weights_as(p.conv.weights)?;
            let bias = model.weights_as(p.conv.bias)?;
            let pad_values = model.weights_as(p.conv.pad_values)?;
            // The kernel an unfused `Conv2d` runs, so the rows are the bytes it would write.
            let conv2d = if model.reference_f32_kernels() {
                kernels::conv::conv2d
            } else {
                f32_conv2d
            };
            fused::run(
                &geometry,
                as_f32(x)?,
                as_f32_mut(b)?,
                as_f32_mut(&mut *y)?,
                |g, xd, x, yd, y| {
                    conv2d(
                        g,
                        &p.conv.activation,
                        xd,
                        x,
                        yd,
                        y,
                        weights,
                        bias,
                        pad_values,
                    )
                },
                |g, xd, x, yd, y| kernels::pool::pool(g, &p.pool.activation, xd, x, yd, y),
            )?;
        }
        Op::Conv2dPoolI16(p) if linked::<K>(Kernel::Conv2dPoolI16ToI8) => int8::run_fused_i16(
            model,
            layer,
            p,
            &geometry,
            bytemuck::try_cast_slice(x).ok()?,
            bytemuck::cast_slice_mut(b),
            bytemuck::cast_slice_mut(&mut *y),
        )?,
        Op::Conv2dPoolI8(p) if linked::<K>(Kernel::Conv2dPoolI8) => int8::run_fused(
            model,
            layer,
            p,
            &geometry,
            bytemuck::cast_slice(x),
            bytemuck::cast_slice_mut(b),
            bytemuck::cast_slice_mut(&mut *y),
        )?,
        _ => return None,
    }
    Some(y)
}

#[cfg(test)]
mod tests {
    //! A fused layer against the two layers it replaces, through the loader and the engine:
    //! random convolution and pooling geometries (strides, dilations, pads, groupings, max and
    //! both averages, overlapping windows, activations between), f32 and int8, equal bytes.
    extern crate std;

    use std::vec::Vec;

    use proptest::prelude::*;

    use crate::format::*;
    use crate::kernels::reference::int8::testing::Gen;
    use crate::model::int8_tests::{push_i32, push_i8, push_requant};
    use crate::model::{LayerFault, LoadError, Operand, ParamFault};
    use crate::testutil::*;
    use crate::Model;

    /// The element types of a case: f32; int8; int16 in, int8 out (16×8).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Precision {
        F32,
        I8,
        I16,
    }

    #[derive(Clone, Copy, Debug)]
    struct Case {
        in_dims: [u16; 3],
        depthwise: bool,
        out_c: u16,
        kernel: [u16; 2],
        stride: [u16; 2],
        dilation: [u16; 2],
        pad: [u16; 4],
        pool_kind: u8,
        pool_kernel: [u16; 2],
        pool_stride: [u16; 2],
        pool_pad: [u16; 4],
        relu: bool,
        pool_relu: bool,
        rescale: bool,
        /// Band rows beyond one pooling window's (up to the convolution's rows).
        extra_rows: u16,
        seed: u64,
    }

    fn window(size: u16, k: u16, s: u16, d: u16, a: u16, b: u16) -> Option<u16> {
        let extent = d * (k - 1) + 1;
        (size + a + b).checked_sub(extent).map(|n| n / s + 1)
    }

    impl Case {
        fn mid(&self) -> Option<[u16; 3]> {
            let [h, w, c] = self.in_dims;
            let [pt, pl, pb, pr] = self.pad;
            let oh = window(h, self.kernel[0], self.stride[0], self.dilation[0], pt, pb)?;
            let ow = window(w, self.kernel[1], self.stride[1], self.dilation[1], pl, pr)?;
            Some([oh, ow, if self.depthwise { c } else { self.out_c }])
        }
        fn out(&self) -> Option<[u16; 3]> {
            let [h, w, c] = self.mid()?;
            let [pt, pl, pb, pr] = self.pool_pad;
            let oh = window(h, self.pool_kernel[0], self.pool_stride[0], 1, pt, pb)?;
            let ow = window(w, self.pool_kernel[1], self.pool_stride[1], 1, pl, pr)?;
            Some([oh, ow, c])
        }
        fn conv(&self, weights: Span, bias: Span) -> Conv2d {
            Conv2d {
                kernel: self.kernel,
                stride: self.stride,
                dilation: self.dilation,
                pad: self.pad,
                groups: if self.depthwise { self.in_dims[2] } else { 1 },
                weights,
                bias,
                pad_values: Span::default(),
                activation: if self.relu {
                    Activation::Relu
                } else {
                    Activation::Identity
                },
            }
        }
        fn pool(&self, int8: bool) -> Pool {
            Pool {
                kind: match self.pool_kind {
                    0 => PoolKind::Max,
                    k => PoolKind::Average {
                        count_include_pad: k == 2,
                    },
                },
                kernel: self.pool_kernel,
                stride: self.pool_stride,
                pad: self.pool_pad,
                activation: if self.pool_relu && !int8 {
                    Activation::Relu
                } else {
                    Activation::Identity
                },
            }
        }
        fn weights_per_out(&self) -> usize {
            let c = if self.depthwise { 1 } else { self.in_dims[2] };
            usize::from(self.kernel[0]) * usize::from(self.kernel[1]) * usize::from(c)
        }
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            (1u16..10, 1u16..10, 1u16..4, any::<bool>(), 1u16..5),
            (
                [1u16..4, 1u16..4],
                [1u16..3, 1u16..3],
                [1u16..3, 1u16..3],
                [0u16..3, 0u16..3, 0u16..3, 0u16..3],
            ),
            (
                0u8..3,
                [1u16..4, 1u16..4],
                [1u16..4, 1u16..4],
                [0u16..3, 0u16..3, 0u16..3, 0u16..3],
            ),
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<u64>(),
                0u16..5,
            ),
        )
            .prop_map(
                |((h, w, c, depthwise, out_c), (kernel, stride, dilation, pad), pool, flags)| {
                    Case {
                        in_dims: [h, w, c],
                        depthwise,
                        out_c,
                        kernel,
                        stride,
                        dilation,
                        pad,
                        pool_kind: pool.0,
                        pool_kernel: pool.1,
                        pool_stride: pool.2,
                        pool_pad: pool.3,
                        relu: flags.0,
                        pool_relu: flags.1,
                        rescale: flags.2,
                        seed: flags.3,
                        extra_rows: flags.4,
                    }
                },
            )
            .prop_filter("a fusable geometry", |c| {
                let extent = |i: usize| c.dilation[i] * (c.kernel[i] - 1) + 1;
                c.pad[0] < extent(0)
                    && c.pad[2] < extent(0)
                    && c.pool_pad[0] < c.pool_kernel[0]
                    && c.pool_pad[2] < c.pool_kernel[0]
                    && c.pool_pad[1] < c.pool_kernel[1]
                    && c.pool_pad[3] < c.pool_kernel[1]
                    && c.out().is_some()
            })
    }

    fn aligned(n: usize) -> u32 {
        n.div_ceil(4) as u32 * 4
    }

    /// The unfused and the fused model of `case`, each with its arena size.
    fn models(case: &Case, precision: Precision) -> (Spec, Spec) {
        let (mid_dims, out_dims) = (case.mid().unwrap(), case.out().unwrap());
        let int8 = precision != Precision::F32;
        let dtype = if int8 { DType::I8 } else { DType::F32 };
        let q = |scale: f32, zero_point: i32| int8.then_some(Quant { scale, zero_point });
        let tensor = |id, offset, dims, quant| TensorDesc {
            id,
            offset,
            dims,
            dtype,
            quant,
            view: None,
        };
        let (qx, qmid) = match precision {
            Precision::I16 => (q(0.0004, 0), q(0.1, 5)),
            _ => (q(0.05, -3), q(0.1, 5)),
        };
        let qy = if case.rescale { q(0.07, -9) } else { qmid };
        let x = TensorDesc {
            dtype: if precision == Precision::I16 {
                DType::I16
            } else {
                dtype
            },
            ..tensor(0, 0, case.in_dims, qx)
        };
        let bytes = |d: &TensorDesc| d.byte_len();
        let mid = tensor(1, aligned(bytes(&x)), mid_dims, qmid);
        let y = tensor(2, mid.offset + aligned(bytes(&mid)), out_dims, qy);
        let mut unfused = Spec::new(y.offset + aligned(bytes(&y)), x, y);
        unfused.info.output_rank = 3;
        let mut g = Gen(case.seed);
        let n_out = usize::from(mid_dims[2]);
        let n_weights = n_out * case.weights_per_out();
        let pool = case.pool(int8);
        let band = Band {
            offset: mid.offset,
            rows: (case.pool_kernel[0] + case.extra_rows).min(mid_dims[0]),
            quant: qmid,
        };
        let (conv_op, pool_op, fused_op) = if int8 {
            let weights = push_i8(&mut unfused, &g.i8s(n_weights));
            let bias: Vec<i32> = (0..n_out).map(|_| i32::from(g.i8()) * 8).collect();
            let bias = push_i32(&mut unfused, &bias);
            let s_x = f64::from(qx.unwrap().scale);
            let reals: Vec<f64> = (0..n_out)
                .map(|i| s_x * 0.01 * (1.0 + i as f64 / 4.0) / 0.1)
                .collect();
            let requant = push_requant(&mut unfused, &reals);
            let clamp = if case.relu {
                Clamp { min: 5, max: 127 }
            } else {
                Clamp::FULL
            };
            let conv = Conv2dI8 {
                conv: Conv2d {
                    activation: Activation::Identity,
                    ..case.conv(weights, bias)
                },
                requant,
                clamp,
            };
            let pool = PoolI8 {
                pool,
                rescale: case
                    .rescale
                    .then(|| Requant::from_real(0.1 / 0.07).unwrap()),
                clamp: if case.pool_relu {
                    Clamp { min: -9, max: 120 }
                } else {
                    Clamp::FULL
                },
            };
            if precision == Precision::I16 {
                let conv = Conv2dI16 {
                    conv: conv.conv,
                    requant,
                    clamp: ClampI16 {
                        min: i16::from(clamp.min),
                        max: i16::from(clamp.max),
                    },
                };
                (
                    Op::Conv2dI16(conv),
                    Op::PoolI8(pool),
                    Op::Conv2dPoolI16(Conv2dPoolI16 { conv, pool, band }),
                )
            } else {
                (
                    Op::Conv2dI8(conv),
                    Op::PoolI8(pool),
                    Op::Conv2dPoolI8(Conv2dPoolI8 { conv, pool, band }),
                )
            }
        } else {
            let weights = unfused.f32s(&values(n_weights, case.seed));
            let bias = unfused.f32s(&values(n_out, case.seed ^ 1));
            let conv = case.conv(weights, bias);
            (
                Op::Conv2d(conv),
                Op::Pool(pool),
                Op::Conv2dPool(Conv2dPool { conv, pool, band }),
            )
        };
        let mut fused = unfused.clone();
        unfused
            .push(layer(conv_op, x, mid))
            .push(layer(pool_op, mid, y));
        // The band where the whole convolution output was, the output right after it.
        let band_bytes = usize::from(band.rows)
            * usize::from(mid_dims[1])
            * usize::from(mid_dims[2])
            * dtype.size();
        let y_fused = TensorDesc {
            offset: band.offset + aligned(band_bytes),
            ..y
        };
        fused.info.output = y_fused;
        fused.info.arena_bytes = y_fused.offset + aligned(bytes(&y));
        fused.push(layer(fused_op, x, y_fused));
        (unfused, fused)
    }

    fn output_bytes(spec: &Spec, input: &[u8], precision: Precision) -> Vec<u8> {
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut arena = Blob::zeroed(spec.info.arena_bytes as usize);
        let out = &spec.info.output;
        if precision == Precision::I16 {
            let x: Vec<i16> = input
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            let mut y = std::vec![0i8; out.len()];
            model.run_i8(arena.bytes_mut(), &x, &mut y).unwrap();
            y.iter().map(|&v| v as u8).collect()
        } else if precision == Precision::I8 {
            let x: Vec<i8> = input.iter().map(|&b| b as i8).collect();
            let mut y = std::vec![0i8; out.len()];
            model.run_i8(arena.bytes_mut(), &x, &mut y).unwrap();
            y.iter().map(|&v| v as u8).collect()
        } else {
            let x: Vec<f32> = input
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let mut y = std::vec![0f32; out.len()];
            model.run_f32(arena.bytes_mut(), &x, &mut y).unwrap();
            y.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
    }

    fn input_bytes(case: &Case, precision: Precision) -> Vec<u8> {
        let n = case.in_dims.iter().map(|&d| usize::from(d)).product();
        if precision == Precision::I16 {
            let x = Gen(case.seed ^ 7).i16s(n);
            x.iter().flat_map(|v| v.to_le_bytes()).collect()
        } else if precision == Precision::I8 {
            Gen(case.seed ^ 7).i8s(n).iter().map(|&v| v as u8).collect()
        } else {
            values(n, case.seed ^ 7)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
    }

    fn same_bytes(case: &Case, precision: Precision) -> Result<(), TestCaseError> {
        let (unfused, fused) = models(case, precision);
        let x = input_bytes(case, precision);
        let (a, b) = (
            output_bytes(&fused, &x, precision),
            output_bytes(&unfused, &x, precision),
        );
        prop_assert_eq!(a, b);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn fused_f32_equals_conv_then_pool(case in case()) {
            same_bytes(&case, Precision::F32)?;
        }

        #[test]
        fn fused_int8_equals_conv_then_pool(case in case()) {
            same_bytes(&case, Precision::I8)?;
        }

        #[test]
        fn fused_16x8_equals_conv_then_pool(case in case()) {
            same_bytes(&case, Precision::I16)?;
        }
    }

    /// A 2x2/2 max pooling after a 3x3 convolution with ReLU, int8 and f32.
    fn example(int8: bool) -> Spec {
        let case = Case {
            in_dims: [6, 6, 2],
            depthwise: false,
            out_c: 3,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [1, 1, 1, 1],
            pool_kind: 0,
            pool_kernel: [2, 2],
            pool_stride: [2, 2],
            pool_pad: [0; 4],
            relu: true,
            pool_relu: false,
            rescale: false,
            extra_rows: 0,
            seed: 3,
        };
        let precision = if int8 { Precision::I8 } else { Precision::F32 };
        let mut fused = models(&case, precision).1;
        // Room past the output, for the tests that move the band there.
        fused.info.arena_bytes += 512;
        fused
    }

    fn with_band(spec: &Spec, change: impl Fn(&mut Band)) -> Spec {
        let mut s = spec.clone();
        match &mut s.layers[0].op {
            Op::Conv2dPool(f) => change(&mut f.band),
            Op::Conv2dPoolI8(f) => change(&mut f.band),
            _ => unreachable!(),
        }
        s
    }

    fn load_error(spec: &Spec) -> LoadError {
        Model::new_checked(spec.blob().bytes()).err().unwrap()
    }

    #[test]
    fn the_loader_refuses_bad_bands() {
        for int8 in [false, true] {
            let spec = example(int8);
            assert!(Model::new_checked(spec.blob().bytes()).is_ok());
            let bad = |what| LoadError::BadLayer { layer: 0, what };
            // Fewer rows than a window reads, more than the convolution has.
            assert_eq!(
                load_error(&with_band(&spec, |b| b.rows = 1)),
                bad(LayerFault::Param(ParamFault::BandRows {
                    rows: 1,
                    needed: 2,
                    conv_rows: 6
                }))
            );
            assert_eq!(
                load_error(&with_band(&spec, |b| b.rows = 7)),
                bad(LayerFault::Param(ParamFault::BandRows {
                    rows: 7,
                    needed: 2,
                    conv_rows: 6
                }))
            );
            // On the input, on the output, outside the arena, misaligned.
            assert_eq!(
                load_error(&with_band(&spec, |b| b.offset = 0)),
                bad(LayerFault::OverlapsOwnInput { input: 0 })
            );
            let y = spec.info.output.offset;
            assert_eq!(
                load_error(&with_band(&spec, |b| b.offset = y)),
                bad(LayerFault::BandOverlapsOutput)
            );
            let arena = spec.info.arena_bytes;
            assert!(matches!(
                load_error(&with_band(&spec, |b| b.offset = arena)),
                LoadError::BadLayer {
                    what: LayerFault::Tensor {
                        operand: Operand::Band,
                        ..
                    },
                    ..
                }
            ));
            assert!(matches!(
                load_error(&with_band(&spec, |b| b.offset += 2)),
                LoadError::BadLayer {
                    what: LayerFault::Tensor {
                        operand: Operand::Band,
                        ..
                    },
                    ..
                }
            ));
            // The band's quantization must be the element type's.
            let quant = if int8 {
                None
            } else {
                Some(Quant {
                    scale: 0.1,
                    zero_point: 0,
                })
            };
            assert!(matches!(
                load_error(&with_band(&spec, |b| b.quant = quant)),
                LoadError::BadLayer {
                    what: LayerFault::Tensor {
                        operand: Operand::Band,
                        ..
                    },
                    ..
                }
            ));
        }
    }

    #[test]
    fn the_loader_refuses_a_convolution_row_of_padding_only() {
        let mut spec = example(false);
        let Op::Conv2dPool(f) = &mut spec.layers[0].op else {
            unreachable!()
        };
        // Kernel 3, top padding 3: the first output row reads padding only. The shapes still
        // agree (the output gains two rows, the pooling one).
        f.conv.pad = [3, 1, 1, 1];
        spec.layers[0].output.dims[0] = 4;
        spec.info.output.dims[0] = 4;
        assert_eq!(
            load_error(&spec),
            LoadError::BadLayer {
                layer: 0,
                what: LayerFault::Param(ParamFault::FusedConvPad)
            }
        );
    }

    #[test]
    fn the_band_is_a_write_for_the_lifetime_check() {
        // L0: x -> y fused; L1: y -> z fused; L2: x -> w (a 1x1 max pooling, the model output),
        // so x stays live across L1.
        let spec = example(false);
        let (x, y) = (spec.info.input, spec.info.output);
        let Op::Conv2dPool(f) = spec.layers[0].op else {
            unreachable!()
        };
        let mut three = spec.clone();
        let one_by_one = Pool {
            kind: PoolKind::Max,
            kernel: [1, 1],
            stride: [1, 1],
            pad: [0; 4],
            activation: Activation::Identity,
        };
        let w = three.f32s(&values(9, 5));
        let b = three.f32s(&values(3, 6));
        let second = Conv2dPool {
            conv: Conv2d {
                kernel: [1, 1],
                pad: [0; 4],
                weights: w,
                bias: b,
                pad_values: Span::default(),
                ..f.conv
            },
            pool: one_by_one,
            band: Band {
                offset: f.band.offset,
                rows: 1,
                quant: None,
            },
        };
        let z = TensorDesc {
            id: 3,
            offset: y.offset + aligned(y.byte_len()),
            ..y
        };
        let out = TensorDesc {
            id: 4,
            offset: z.offset + aligned(z.byte_len()),
            ..x
        };
        three.info.arena_bytes = out.offset + out.byte_len() as u32;
        three.info.output = out;
        three
            .push(layer(Op::Conv2dPool(second), y, z))
            .push(layer(Op::Pool(one_by_one), x, out));
        assert!(Model::new_checked(three.blob().bytes()).is_ok());
        // L1's band on x, which L2 still reads.
        let Op::Conv2dPool(s) = &mut three.layers[1].op else {
            unreachable!()
        };
        s.band.offset = 0;
        assert_eq!(
            load_error(&three),
            LoadError::BadLayer {
                layer: 1,
                what: LayerFault::ClobbersLiveTensor { tensor: 0 }
            }
        );
    }

    #[test]
    fn a_firmware_without_the_fused_kernels_refuses_a_fused_layer_first() {
        use crate::engine::{Kernel, KernelSet, Kernels};
        /// Every kernel but the fused ones: the loader's fused checks and the engine's fused
        /// driver are left out of such a firmware, so the layer must be refused before them.
        struct Unfused;
        impl Kernels for Unfused {
            const SET: KernelSet = KernelSet::ALL.difference(KernelSet::FUSED);
        }
        for (int8, kernel) in [(false, Kernel::Conv2dPool), (true, Kernel::Conv2dPoolI8)] {
            let spec = example(int8);
            assert!(Model::new_checked(spec.blob().bytes()).is_ok());
            assert_eq!(
                Model::<Unfused>::new_checked_with_kernels(spec.blob().bytes()).err(),
                Some(LoadError::KernelNotLinked { layer: 0, kernel })
            );
            // Refused first even when the band is also wrong (the fused checks never run).
            let bad = with_band(&spec, |b| b.rows = 0);
            assert!(matches!(
                load_error(&bad),
                LoadError::BadLayer { layer: 0, .. }
            ));
            assert_eq!(
                Model::<Unfused>::new_checked_with_kernels(bad.blob().bytes()).err(),
                Some(LoadError::KernelNotLinked { layer: 0, kernel })
            );
        }
    }
}
