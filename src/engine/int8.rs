//! Dispatch of int8 layers to the int8 reference kernels.
//!
//! Integer-only: the kernels' quantization structs are built from the layer record, the operand
//! descriptions' zero points and the weight spans (i8 / i32 / u32 arrays borrowed in place); no
//! scale is read here. A test reads this file to check that no floating point appears in it.

use crate::format::{
    ChannelRequant, Clamp, Conv2dI16, Conv2dPoolI16, Conv2dPoolI8, DType, DenseLayout, Layer, Op,
    PoolI8, Span, TensorDesc,
};
use crate::kernels::fast;
use crate::kernels::fused::{self, FusedGeometry};
use crate::kernels::reference::int8::{
    conv::{ConvQuant, WideConvQuant},
    elementwise::{self, AddQuant, AffineQuant},
    lut,
    mul::MulQuant,
    pool::PoolQuant,
    prelu::{self, PreluQuant},
    ChannelQuant, OutputQuant, WideOutputQuant,
};
use crate::kernels::reference::layout;
use crate::model::Model;

use super::kernel_set::ConvLoops;
use super::{conv_geometry_into, linked, pool_geometry, Kernel, Kernels};
use crate::kernels::fast::conv::{Loops, Prepared};
use crate::kernels::ConvGeometry;

/// The fast convolution loops `K` links, per pair of element types (in, out).
type I8ToI8<K> = ConvLoops<K, { Kernel::Conv2dI8 as u8 }, { Kernel::DepthwiseI8 as u8 }>;
type I8ToI16<K> = ConvLoops<K, { Kernel::Conv2dI8ToI16 as u8 }, { Kernel::DepthwiseI8ToI16 as u8 }>;
type I16ToI16<K> =
    ConvLoops<K, { Kernel::Conv2dI16ToI16 as u8 }, { Kernel::DepthwiseI16ToI16 as u8 }>;
type I16ToI8<K> = ConvLoops<K, { Kernel::Conv2dI16ToI8 as u8 }, { Kernel::DepthwiseI16ToI8 as u8 }>;
/// A fused convolution and pooling links every convolution loop (its kernel covers all groupings).
type FusedLoops<K> = ConvLoops<K, { Kernel::Conv2dPoolI8 as u8 }, { Kernel::Conv2dPoolI8 as u8 }>;
type FusedI16Loops<K> =
    ConvLoops<K, { Kernel::Conv2dPoolI16ToI8 as u8 }, { Kernel::Conv2dPoolI16ToI8 as u8 }>;

/// Zero point of a validated int8 tensor (`None` only if validation was bypassed).
fn zero_point(d: &TensorDesc) -> Option<i8> {
    i8::try_from(d.quant?.zero_point).ok()
}

/// The per-output-channel constants of a conv or dense layer, borrowed from the weights.
fn channel_quant<'m, K>(
    model: &Model<'m, K>,
    bias: Span,
    requant: &ChannelRequant,
) -> Option<ChannelQuant<'m>> {
    Some(ChannelQuant {
        bias: model.weights_as(bias)?,
        multiplier: model.weights_as(requant.multipliers)?,
        shift: model.weights_as(requant.shifts)?,
    })
}

/// A fused int8 convolution and pooling on its three regions: the convolution rows by the loops
/// an unfused `Conv2dI8` runs (into the band, in the convolution output's quantization), the pooled
/// rows by the int8 pooling kernel. `None` only if validation was bypassed.
pub(super) fn run_fused<K: Kernels>(
    model: &Model<'_, K>,
    layer: &Layer,
    p: &Conv2dPoolI8,
    geometry: &FusedGeometry,
    x: &[i8],
    band: &mut [i8],
    y: &mut [i8],
) -> Option<()> {
    let zp_mid = i8::try_from(p.band.quant?.zero_point).ok()?;
    let conv_quant = ConvQuant {
        input_zero_point: zero_point(layer.inputs.first()?)?,
        pad_values: model.weights_as(p.conv.conv.pad_values)?,
        channels: channel_quant(model, p.conv.conv.bias, &p.conv.requant)?,
        output: OutputQuant {
            zero_point: zp_mid,
            clamp: p.conv.clamp,
        },
    };
    let weights = model.weights_as(p.conv.conv.weights)?;
    let pool_quant = band_pool_quant(&p.pool, zp_mid, layer)?;
    fused::run(
        geometry,
        x,
        band,
        y,
        |g, xd, x, yd, y| {
            fast::conv::conv2d_loops::<FusedLoops<K>>(g, &conv_quant, xd, x, yd, y, weights, None)
        },
        |g, xd, x, yd, y| fast::pool::pool(g, &pool_quant, xd, x, yd, y),
    )
}

/// The int8 pooling half of a fused layer: it reads the band (zero point `band_zero_point`) and
/// writes the layer's output.
fn band_pool_quant(pool: &PoolI8, band_zero_point: i8, layer: &Layer) -> Option<PoolQuant> {
    Some(PoolQuant {
        input_zero_point: band_zero_point,
        rescale: pool.rescale,
        output: OutputQuant {
            zero_point: zero_point(&layer.output)?,
            clamp: pool.clamp,
        },
    })
}

/// A fused 16×8 convolution (int16 in, int8 out) and int8 pooling, as [`run_fused`]: the
/// convolution rows by the loops an unfused `Conv2dI16` from int16 to int8 runs.
pub(super) fn run_fused_i16<K: Kernels>(
    model: &Model<'_, K>,
    layer: &Layer,
    p: &Conv2dPoolI16,
    geometry: &FusedGeometry,
    x: &[i16],
    band: &mut [i8],
    y: &mut [i8],
) -> Option<()> {
    let conv_quant = WideConvQuant {
        input_zero_point: i16::try_from(layer.inputs.first()?.quant?.zero_point).ok()?,
        pad_values: model.weights_as(p.conv.conv.pad_values)?,
        channels: channel_quant(model, p.conv.conv.bias, &p.conv.requant)?,
        output: WideOutputQuant {
            zero_point: i16::try_from(p.band.quant?.zero_point).ok()?,
            clamp: p.conv.clamp,
        },
    };
    let weights = model.weights_as(p.conv.conv.weights)?;
    let pool_quant = band_pool_quant(&p.pool, i8::try_from(p.band.quant?.zero_point).ok()?, layer)?;
    fused::run(
        geometry,
        x,
        band,
        y,
        |g, xd, x, yd, y| {
            fast::conv::conv2d_wide_loops::<i16, i8, FusedI16Loops<K>>(
                g,
                &conv_quant,
                xd,
                x,
                yd,
                y,
                weights,
                None,
            )
        },
        |g, xd, x, yd, y| fast::pool::pool(g, &pool_quant, xd, x, yd, y),
    )
}

/// One int8 layer on i8 views of its operands (`x2` is empty for single-input layers);
/// `prepared`: a convolution's set-up kept across the bands of a layer run in place. `None`
/// only if validation was bypassed.
pub(super) fn run_layer<K: Kernels>(
    model: &Model<'_, K>,
    layer: &Layer,
    x: &[i8],
    x2: &[i8],
    y: &mut [i8],
    prepared: Option<&mut Prepared>,
) -> Option<()> {
    let x_desc = layer.inputs.first()?;
    let x_dims = x_desc.dims.map(usize::from);
    let y_dims = layer.output.dims.map(usize::from);
    let zp_in = zero_point(x_desc)?;
    let zp_out = zero_point(&layer.output)?;
    let output = |clamp| OutputQuant {
        zero_point: zp_out,
        clamp,
    };
    match &layer.op {
        Op::Conv2dI8(p) if I8ToI8::<K>::REGULAR || I8ToI8::<K>::DEPTHWISE => {
            let quant = ConvQuant {
                input_zero_point: zp_in,
                pad_values: model.weights_as(p.conv.pad_values)?,
                channels: channel_quant(model, p.conv.bias, &p.requant)?,
                output: output(p.clamp),
            };
            let weights = model.weights_as(p.conv.weights)?;
            fast::conv::conv2d_loops::<I8ToI8<K>>(
                &conv_geometry_into(&p.conv, layer.inputs.first()?, &layer.output),
                &quant,
                x_dims,
                x,
                y_dims,
                y,
                weights,
                prepared,
            );
        }
        Op::DenseI8(p)
            if linked::<K>(Kernel::DenseI8)
                || linked::<K>(Kernel::DenseI8Quads)
                || linked::<K>(Kernel::DenseI8Pairs) =>
        {
            let channels = channel_quant(model, p.bias, &p.requant)?;
            // Each layout's loops only where the firmware links its kernel (the loader refused
            // a layer whose kernel it does not link).
            match p.layout {
                DenseLayout::RowsI8 if linked::<K>(Kernel::DenseI8) => {
                    let weights = model.weights_as(p.weights)?;
                    fast::dense::dense(&channels, &output(p.clamp), weights, x, y);
                }
                DenseLayout::QuadsI16 if linked::<K>(Kernel::DenseI8Quads) => {
                    let weights = model.weights_as(p.weights)?;
                    fast::dense::dense_quads(&channels, &output(p.clamp), weights, x, y);
                }
                DenseLayout::PairsI8 if linked::<K>(Kernel::DenseI8Pairs) => {
                    let weights = model.weights_as(p.weights)?;
                    fast::dense::dense_pairs(&channels, &output(p.clamp), weights, x, y);
                }
                _ => return None,
            }
        }
        Op::PoolI8(p) if linked::<K>(Kernel::PoolI8) => {
            let quant = PoolQuant {
                input_zero_point: zp_in,
                rescale: p.rescale,
                output: output(p.clamp),
            };
            fast::pool::pool(&pool_geometry(&p.pool), &quant, x_dims, x, y_dims, y);
        }
        Op::AddI8(p) if linked::<K>(Kernel::AddI8) => {
            let second = layer.inputs.get(1)?;
            let quant = AddQuant {
                input_zero_points: [zp_in, zero_point(second)?],
                input_requant: p.input_requant,
                output_requant: p.output_requant,
                output: output(p.clamp),
            };
            fast::elementwise::add(&quant, x, x2, y);
        }
        Op::AffineI8(p) if linked::<K>(Kernel::AffineI8) => {
            let quant = AffineQuant {
                input_zero_point: zp_in,
                scale: model.weights_as(p.scale)?,
                offset: model.weights_as(p.offset)?,
                multiplier: model.weights_as(p.requant.multipliers)?,
                shift: model.weights_as(p.requant.shifts)?,
                output: output(p.clamp),
            };
            fast::elementwise::affine(&quant, x, y);
        }
        Op::ClampI8(bounds) if linked::<K>(Kernel::ClampI8) => elementwise::clamp(*bounds, x, y),
        Op::PReluI8(p) if linked::<K>(Kernel::PReluI8) => {
            let quant = PreluQuant {
                input_zero_point: zp_in,
                positive: p.positive,
                multiplier: model.weights_as(p.negative.multipliers)?,
                shift: model.weights_as(p.negative.shifts)?,
                output: output(Clamp::FULL),
            };
            prelu::prelu(&quant, x, y);
        }
        Op::MulI8(p) if linked::<K>(Kernel::MulI8) => {
            let quant = MulQuant {
                input_zero_points: [zp_in, zero_point(layer.inputs.get(1)?)?],
                requant: p.requant,
                output: output(p.clamp),
            };
            fast::elementwise::mul(&quant, x, x2, y);
        }
        Op::LookupI8 { table } if linked::<K>(Kernel::LookupI8) => {
            let table: &[i8; 256] = model.weights_as(*table)?.try_into().ok()?;
            lut::lookup(table, x, y);
        }
        Op::SoftmaxI8 { exp_table } if linked::<K>(Kernel::SoftmaxI8) => {
            let table: &[u32; 256] = model.weights_as(*exp_table)?.try_into().ok()?;
            lut::softmax(table, x_dims[2], x, y);
        }
        Op::PadI8 {
            pad,
            interior,
            value,
        } if linked::<K>(Kernel::PadI8) => {
            layout::pad_with(*pad, *interior, *value, x_dims, x, y_dims, y)
        }
        Op::Transpose(p) if linked::<K>(Kernel::TransposeI8) => {
            layout::transpose(p.perm, x_dims, x, y)
        }
        // f32 operations never have int8 operands, the wide dense never an int8 output
        // (validated), axis operations are run by `moves`, and a kernel outside `K` was refused
        // at load.
        _ => return None,
    }
    Some(())
}

/// One layer with an int16 output (`DenseI8Wide` on int8, `SoftmaxI16` and `Transpose` on
/// int16, validated) on its input bytes. `None` only if validation was bypassed.
pub(super) fn run_wide_layer<K: Kernels>(
    model: &Model<'_, K>,
    layer: &Layer,
    x: &[u8],
    y: &mut [i16],
) -> Option<()> {
    let p = match &layer.op {
        Op::DenseI8Wide(p)
            if linked::<K>(Kernel::DenseI8Wide)
                || linked::<K>(Kernel::DenseI8WideQuads)
                || linked::<K>(Kernel::DenseI8WidePairs) =>
        {
            p
        }
        Op::Transpose(t) if linked::<K>(Kernel::TransposeI16) => {
            let dims = layer.inputs.first()?.dims.map(usize::from);
            layout::transpose(t.perm, dims, bytemuck::try_cast_slice(x).ok()?, y);
            return Some(());
        }
        Op::SoftmaxI16 { exp_hi, exp_lo } if linked::<K>(Kernel::SoftmaxI16) => {
            let hi: &[u32; 256] = model.weights_as(*exp_hi)?.try_into().ok()?;
            let lo: &[u32; 256] = model.weights_as(*exp_lo)?.try_into().ok()?;
            let channels = usize::from(layer.inputs.first()?.dims[2]);
            lut::softmax_wide(hi, lo, channels, bytemuck::try_cast_slice(x).ok()?, y);
            return Some(());
        }
        _ => return None,
    };
    let x: &[i8] = bytemuck::cast_slice(x);
    let zero_point = i16::try_from(layer.output.quant?.zero_point).ok()?;
    let channels = channel_quant(model, p.bias, &p.requant)?;
    let output = WideOutputQuant {
        zero_point,
        clamp: p.clamp,
    };
    match p.layout {
        DenseLayout::RowsI8 if linked::<K>(Kernel::DenseI8Wide) => {
            fast::dense::dense_wide(&channels, &output, model.weights_as(p.weights)?, x, y)
        }
        DenseLayout::QuadsI16 if linked::<K>(Kernel::DenseI8WideQuads) => {
            fast::dense::dense_wide_quads(&channels, &output, model.weights_as(p.weights)?, x, y)
        }
        DenseLayout::PairsI8 if linked::<K>(Kernel::DenseI8WidePairs) => {
            fast::dense::dense_wide_pairs(&channels, &output, model.weights_as(p.weights)?, x, y)
        }
        _ => return None,
    }
    Some(())
}

/// A 16×8 convolution on its operands' bytes, dispatched on their element types (int8 or int16
/// in, int16 or int8 out; validated); `prepared` as [`run_layer`]'s. `None` only if validation
/// was bypassed.
pub(super) fn run_conv_i16<K: Kernels>(
    model: &Model<'_, K>,
    layer: &Layer,
    p: &Conv2dI16,
    (x, y): (&[u8], &mut [u8]),
    prepared: Option<&mut Prepared>,
) -> Option<()> {
    let x_desc = layer.inputs.first()?;
    let x_dims = x_desc.dims.map(usize::from);
    let y_dims = layer.output.dims.map(usize::from);
    let channels = channel_quant(model, p.conv.bias, &p.requant)?;
    let output = WideOutputQuant {
        zero_point: i16::try_from(layer.output.quant?.zero_point).ok()?,
        clamp: p.clamp,
    };
    let weights: &[i8] = model.weights_as(p.conv.weights)?;
    let g = conv_geometry_into(&p.conv, layer.inputs.first()?, &layer.output);
    /// The kernel for one pair of element types.
    fn run<X: fast::conv::Lanes + bytemuck::Pod, Y: fast::Store + bytemuck::Pod, L: Loops>(
        g: &ConvGeometry,
        quant: &WideConvQuant<X>,
        dims: ([usize; 3], [usize; 3]),
        (x, y): (&[u8], &mut [u8]),
        (weights, prepared): (&[i8], Option<&mut Prepared>),
    ) -> Option<()> {
        let x: &[X] = bytemuck::try_cast_slice(x).ok()?;
        let y: &mut [Y] = bytemuck::try_cast_slice_mut(y).ok()?;
        let (in_dims, out_dims) = dims;
        fast::conv::conv2d_wide_loops::<X, Y, L>(
            g, quant, in_dims, x, out_dims, y, weights, prepared,
        );
        Some(())
    }
    let dims = (x_dims, y_dims);
    match x_desc.dtype {
        DType::I8 => {
            let quant = WideConvQuant {
                input_zero_point: zero_point(x_desc)?,
                pad_values: model.weights_as(p.conv.pad_values)?,
                channels,
                output,
            };
            match layer.output.dtype {
                DType::I16 if I8ToI16::<K>::REGULAR || I8ToI16::<K>::DEPTHWISE => {
                    run::<i8, i16, I8ToI16<K>>(&g, &quant, dims, (x, y), (weights, prepared))
                }
                _ => None,
            }
        }
        DType::I16 => {
            let quant = WideConvQuant {
                input_zero_point: i16::try_from(x_desc.quant?.zero_point).ok()?,
                pad_values: model.weights_as(p.conv.pad_values)?,
                channels,
                output,
            };
            match layer.output.dtype {
                DType::I16 if I16ToI16::<K>::REGULAR || I16ToI16::<K>::DEPTHWISE => {
                    run::<i16, i16, I16ToI16<K>>(&g, &quant, dims, (x, y), (weights, prepared))
                }
                DType::I8 if I16ToI8::<K>::REGULAR || I16ToI8::<K>::DEPTHWISE => {
                    run::<i16, i8, I16ToI8<K>>(&g, &quant, dims, (x, y), (weights, prepared))
                }
                _ => None,
            }
        }
        DType::F32 => None,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::HashMap;
    use std::vec::Vec;

    use super::*;
    use crate::engine::{conv_geometry, dequantize, quantize, Observer, RunError};
    use crate::format::*;
    use crate::kernels::reference::int8::conv;
    use crate::kernels::reference::int8::testing::Gen;
    use crate::model::int8_tests::{int8_model, push_i32, push_i8, push_requant, q8};
    use crate::testutil::*;

    fn bytes(spec: &Spec, span: Span) -> &[u8] {
        &spec.weights[span.offset as usize..(span.offset + span.len) as usize]
    }
    fn i8s(spec: &Spec, span: Span) -> Vec<i8> {
        bytes(spec, span).iter().map(|b| *b as i8).collect()
    }
    fn i32s(spec: &Spec, span: Span) -> Vec<i32> {
        bytes(spec, span)
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn zp(d: &TensorDesc) -> i8 {
        d.quant.unwrap().zero_point as i8
    }

    /// One int8 layer computed by calling its kernel directly, with the constants decoded from
    /// the spec's weight bytes.
    fn by_hand(spec: &Spec, layer: &Layer, x: &[i8], x2: &[i8]) -> Vec<i8> {
        use crate::kernels::reference::int8 as k;
        let (xd, yd) = (layer.inputs[0], layer.output);
        let dims = |d: &TensorDesc| d.dims.map(usize::from);
        let mut y = std::vec![0i8; yd.len()];
        let out = |clamp| k::OutputQuant {
            zero_point: zp(&yd),
            clamp,
        };
        match layer.op {
            Op::Conv2dI8(p) => {
                let (bias, mult, shift) = (
                    i32s(spec, p.conv.bias),
                    i32s(spec, p.requant.multipliers),
                    i32s(spec, p.requant.shifts),
                );
                let pad_values = i8s(spec, p.conv.pad_values);
                let quant = k::conv::ConvQuant {
                    input_zero_point: zp(&xd),
                    pad_values: &pad_values,
                    channels: k::ChannelQuant {
                        bias: &bias,
                        multiplier: &mult,
                        shift: &shift,
                    },
                    output: out(p.clamp),
                };
                let weights = i8s(spec, p.conv.weights);
                k::conv::conv2d(
                    &conv_geometry(&p.conv),
                    &quant,
                    dims(&xd),
                    x,
                    dims(&yd),
                    &mut y,
                    &weights,
                );
            }
            Op::DenseI8(p) => {
                let (bias, mult, shift) = (
                    i32s(spec, p.bias),
                    i32s(spec, p.requant.multipliers),
                    i32s(spec, p.requant.shifts),
                );
                let channels = k::ChannelQuant {
                    bias: &bias,
                    multiplier: &mult,
                    shift: &shift,
                };
                k::dense::dense(&channels, &out(p.clamp), &i8s(spec, p.weights), x, &mut y);
            }
            Op::PoolI8(p) => {
                let quant = k::pool::PoolQuant {
                    input_zero_point: zp(&xd),
                    rescale: p.rescale,
                    output: out(p.clamp),
                };
                k::pool::pool(
                    &pool_geometry(&p.pool),
                    &quant,
                    dims(&xd),
                    x,
                    dims(&yd),
                    &mut y,
                );
            }
            Op::AddI8(p) => {
                let quant = k::elementwise::AddQuant {
                    input_zero_points: [zp(&xd), zp(&layer.inputs[1])],
                    input_requant: p.input_requant,
                    output_requant: p.output_requant,
                    output: out(p.clamp),
                };
                k::elementwise::add(&quant, x, x2, &mut y);
            }
            Op::AffineI8(p) => {
                let (scale, offset, mult, shift) = (
                    i32s(spec, p.scale),
                    i32s(spec, p.offset),
                    i32s(spec, p.requant.multipliers),
                    i32s(spec, p.requant.shifts),
                );
                let quant = k::elementwise::AffineQuant {
                    input_zero_point: zp(&xd),
                    scale: &scale,
                    offset: &offset,
                    multiplier: &mult,
                    shift: &shift,
                    output: out(p.clamp),
                };
                k::elementwise::affine(&quant, x, &mut y);
            }
            Op::ClampI8(c) => k::elementwise::clamp(c, x, &mut y),
            Op::LookupI8 { table } => {
                let table: [i8; 256] = i8s(spec, table).try_into().unwrap();
                k::lut::lookup(&table, x, &mut y);
            }
            Op::SoftmaxI8 { exp_table } => {
                let table: Vec<u32> = i32s(spec, exp_table).iter().map(|v| *v as u32).collect();
                let table: [u32; 256] = table.try_into().unwrap();
                k::lut::softmax(&table, xd.dims[2] as usize, x, &mut y);
            }
            Op::PadI8 {
                pad,
                interior,
                value,
            } => layout::pad_with(pad, interior, value, dims(&xd), x, dims(&yd), &mut y),
            Op::Transpose(t) => layout::transpose(t.perm, dims(&xd), x, &mut y),
            other => panic!("not an int8 op: {other:?}"),
        }
        y
    }

    /// Every layer's output, computed layer by layer with [`by_hand`] from the model input.
    fn model_by_hand(spec: &Spec, input: &[i8]) -> Vec<Vec<i8>> {
        let mut tensors: HashMap<u16, Vec<i8>> = HashMap::new();
        tensors.insert(spec.info.input.id, input.to_vec());
        let mut outputs = Vec::new();
        for layer in &spec.layers {
            let x = tensors[&layer.inputs[0].id].clone();
            let x2 = match layer.input_count {
                2 => tensors[&layer.inputs[1].id].clone(),
                _ => Vec::new(),
            };
            let y = by_hand(spec, layer, &x, &x2);
            tensors.insert(layer.output.id, y.clone());
            outputs.push(y);
        }
        outputs
    }

    /// Records every layer's output bytes.
    #[derive(Default)]
    struct Outputs(Vec<Vec<i8>>);

    impl Observer for Outputs {
        fn layer_end(&mut self, index: u16, layer: &Layer, output: &[u8]) {
            assert_eq!(usize::from(index), self.0.len());
            assert_eq!(output.len(), layer.output.byte_len());
            self.0.push(output.iter().map(|b| *b as i8).collect());
        }
    }

    fn input_i8(n: usize, seed: u64) -> Vec<i8> {
        Gen(seed).i8s(n)
    }

    #[test]
    fn every_int8_layer_matches_its_kernel() {
        let spec = int8_model();
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut arena = Blob::zeroed(model.arena_bytes());
        for seed in 0..20 {
            let x = input_i8(model.input().len(), seed);
            let expected = model_by_hand(&spec, &x);
            // A dirty arena must not matter.
            arena.bytes_mut().fill(seed as u8 ^ 0x5A);
            let mut seen = Outputs::default();
            let mut out = [0i8; 5];
            model
                .run_i8_observed(arena.bytes_mut(), &x, &mut out, &mut seen)
                .unwrap();
            assert_eq!(seen.0, expected, "seed {seed}");
            assert_eq!(out.to_vec(), expected[10]);
            // The plain entry point gives the same result.
            let mut again = [0i8; 5];
            model.run_i8(arena.bytes_mut(), &x, &mut again).unwrap();
            assert_eq!(again, out);
        }
        // The test model exercises its layers: outputs are not constant.
        let x = input_i8(32, 3);
        for (i, y) in model_by_hand(&spec, &x).iter().enumerate() {
            let distinct = y.iter().collect::<std::collections::BTreeSet<_>>().len();
            assert!(distinct > 1, "layer {i} output is constant: {y:?}");
        }
    }

    #[test]
    fn grouped_dilated_conv_without_pad_values_through_the_engine() {
        // [5,5,4] -> grouped conv (2 groups, dilation 2, stride 2, asymmetric pads, empty pad
        // values: the border reads the input zero point) -> [3,2,6] -> depthwise 3x3 -> [3,2,6].
        let x = q8(0, 0, [5, 5, 4], 0.03, 7);
        let t1 = q8(1, 100, [3, 2, 6], 0.05, -4);
        let t2 = q8(2, 0, [3, 2, 6], 0.07, 0);
        let mut spec = Spec::new(136, x, t2);
        spec.info.output_rank = 3;
        let mut g = Gen(11);
        let grouped = Conv2dI8 {
            conv: Conv2d {
                kernel: [2, 3],
                stride: [2, 2],
                dilation: [2, 1],
                pad: [1, 0, 1, 0],
                groups: 2,
                weights: push_i8(&mut spec, &g.i8s(6 * 2 * 3 * 2)),
                bias: push_i32(&mut spec, &[0, 100, -100, 2000, -2000, 5]),
                pad_values: Span::default(),
                activation: Activation::Identity,
            },
            requant: push_requant(&mut spec, &[0.004, 0.003, 0.002, 0.005, 0.001, 0.004]),
            clamp: Clamp::FULL,
        };
        let depthwise = Conv2dI8 {
            conv: Conv2d {
                kernel: [3, 3],
                stride: [1, 1],
                dilation: [1, 1],
                pad: [1, 1, 1, 1],
                groups: 6,
                weights: push_i8(&mut spec, &g.i8s(6 * 9)),
                bias: push_i32(&mut spec, &[10; 6]),
                pad_values: push_i8(&mut spec, &[-4, 0, 3, -4, 100, -128]),
                activation: Activation::Identity,
            },
            requant: push_requant(&mut spec, &[0.006; 6]),
            clamp: Clamp { min: 0, max: 90 },
        };
        spec.push(layer(Op::Conv2dI8(grouped), x, t1))
            .push(layer(Op::Conv2dI8(depthwise), t1, t2));
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let input = input_i8(100, 5);
        let mut out = [0i8; 36];
        model
            .run_i8(Blob::zeroed(136).bytes_mut(), &input, &mut out)
            .unwrap();
        let expected = model_by_hand(&spec, &input);
        assert_eq!(out.to_vec(), expected[1]);
    }

    #[test]
    fn quantize_rounds_half_away_from_zero_and_saturates() {
        let unit = Quant {
            scale: 1.0,
            zero_point: 0,
        };
        let cases = [
            (2.5, 3),
            (-2.5, -3),
            (2.4999, 2),
            (0.5, 1),
            (-0.5, -1),
            (127.4, 127),
            (127.5, 127),
            (1e30, 127),
            (-1e30, -128),
            (f32::INFINITY, 127),
            (f32::NEG_INFINITY, -128),
            (f32::NAN, 0),
        ];
        for (x, q) in cases {
            assert_eq!(quantize(x, unit), q, "{x}");
        }
        let shifted = Quant {
            scale: 0.5,
            zero_point: -100,
        };
        assert_eq!(quantize(0.0, shifted), -100);
        assert_eq!(quantize(f32::NAN, shifted), -100, "NaN is real zero");
        assert_eq!(quantize(1.25, shifted), -97, "2.5 steps round to 3");
        assert_eq!(
            quantize(-20.0, shifted),
            -128,
            "saturates after the zero point"
        );
        assert_eq!(quantize(200.0, shifted), 127);
        assert_eq!(dequantize(-97, shifted), 1.5);
        assert_eq!(dequantize(-128, shifted), -14.0);
        // The int16 input: the same rule with int16 saturation.
        let quantize_i16 = crate::engine::quantize_i16;
        for (x, q) in [
            (2.5, 3),
            (-2.5, -3),
            (32766.6, 32767),
            (32767.5, 32767),
            (-32768.4, -32768),
            (1e30, 32767),
            (f32::NEG_INFINITY, -32768),
            (f32::NAN, 0),
        ] {
            assert_eq!(quantize_i16(x, unit), q, "{x}");
        }
        assert_eq!(quantize_i16(1.25, shifted), -97);
        assert_eq!(quantize_i16(-20000.0, shifted), -32768);
        assert_eq!(quantize_i16(f32::NAN, shifted), -100, "NaN is real zero");
    }

    #[test]
    fn run_f32_on_an_int8_model_quantizes_and_dequantizes_at_the_boundary() {
        let spec = int8_model();
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let (qin, qout) = (model.input().quant.unwrap(), model.output().quant.unwrap());
        let mut arena = Blob::zeroed(model.arena_bytes());
        // Covers ties, saturation, NaN and infinity.
        let mut x = values(32, 9).iter().map(|v| v * 8.0).collect::<Vec<f32>>();
        x[0] = 0.025; // exactly half a step above 0 steps: rounds away from zero
        x[1] = 100.0;
        x[2] = f32::NAN;
        x[5] = f32::NEG_INFINITY;
        let q: Vec<i8> = x.iter().map(|v| quantize(*v, qin)).collect();
        assert_eq!(&q[..3], &[-2, 127, -3]);
        assert_eq!(q[5], -128);
        let mut raw = [0i8; 5];
        model.run_i8(arena.bytes_mut(), &q, &mut raw).unwrap();

        // The checked run refuses the first non-finite element before quantizing anything and
        // leaves the output alone.
        let mut out = [7.0f32; 5];
        assert_eq!(
            model.run_f32(arena.bytes_mut(), &x, &mut out),
            Err(RunError::NonFiniteInput {
                index: 2,
                value: crate::engine::NonFinite::NaN
            })
        );
        assert_eq!(out, [7.0; 5]);

        let mut seen = Outputs::default();
        model
            .run_f32_allowing_nonfinite_observed(arena.bytes_mut(), &x, &mut out, &mut seen)
            .unwrap();
        assert_eq!(out, raw.map(|r| dequantize(r, qout)));
        assert_eq!(seen.0.len(), 11);
        assert_eq!(seen.0[10], raw.to_vec(), "the observer sees int8 bytes");
        // Softmax probabilities: scale 1/256, so they sum to about 1.
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 0.03, "{out:?}");
    }

    #[test]
    fn run_i8_refuses_f32_models_and_wrong_buffers() {
        let blob = tiny().blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut arena = Blob::zeroed(model.arena_bytes());
        let expected = RunError::ElementType {
            expected: DType::I8,
            found: DType::F32,
        };
        assert_eq!(
            model.run_i8(arena.bytes_mut(), &[0i8; 32], &mut [0i8; 5]),
            Err(expected)
        );
        let text = std::format!("{expected}");
        assert!(text.contains("run_f32"), "{text}");

        let blob = int8_model().blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut arena = Blob::zeroed(model.arena_bytes() + 4);
        assert_eq!(
            model.run_i8(&mut arena.bytes_mut()[1..], &[0i8; 32], &mut [0i8; 5]),
            Err(RunError::ArenaMisaligned)
        );
        assert_eq!(
            model.run_i8(&mut arena.bytes_mut()[..139], &[0i8; 32], &mut [0i8; 5]),
            Err(RunError::ArenaTooSmall {
                needed: 140,
                found: 139
            })
        );
        assert_eq!(
            model.run_i8(arena.bytes_mut(), &[0i8; 31], &mut [0i8; 5]),
            Err(RunError::InputLength {
                expected: 32,
                found: 31
            })
        );
        assert_eq!(
            model.run_i8(arena.bytes_mut(), &[0i8; 32], &mut [0i8; 6]),
            Err(RunError::OutputLength {
                expected: 5,
                found: 6
            })
        );
        assert_eq!(
            model.run_f32(arena.bytes_mut(), &[0.0; 31], &mut [0.0; 5]),
            Err(RunError::InputLength {
                expected: 32,
                found: 31
            })
        );
    }

    #[test]
    fn wide_output_matches_its_kernel_through_every_entry_point() {
        use crate::engine::dequantize_i16;
        use crate::kernels::reference::int8 as k;
        use crate::model::int8_tests::wide_model;
        let spec = wide_model();
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        assert_eq!(model.output().dtype, DType::I16);
        let mut arena = Blob::zeroed(model.arena_bytes());
        let Op::DenseI8Wide(p) = spec.layers[9].op else {
            unreachable!()
        };
        let (bias, mult, shift) = (
            i32s(&spec, p.bias),
            i32s(&spec, p.requant.multipliers),
            i32s(&spec, p.requant.shifts),
        );
        let mut distinct = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let x = input_i8(model.input().len(), seed);
            // Layers 0..9 are int8_model's; the dense input is their output.
            let dense_in = &model_by_hand(&spec_prefix(&spec, 9), &x)[8];
            let mut want = [0i16; 5];
            k::dense::dense_wide(
                &k::ChannelQuant {
                    bias: &bias,
                    multiplier: &mult,
                    shift: &shift,
                },
                &k::WideOutputQuant {
                    zero_point: 0,
                    clamp: p.clamp,
                },
                &i8s(&spec, p.weights),
                dense_in,
                &mut want,
            );
            arena.bytes_mut().fill(seed as u8 ^ 0xA5);
            let mut got = [0i16; 5];
            model.run_i8(arena.bytes_mut(), &x, &mut got).unwrap();
            assert_eq!(got, want, "seed {seed}");
            distinct.extend(got);
            // The observer sees the int16 bytes, little-endian.
            let mut seen = Outputs::default();
            model
                .run_i8_observed(arena.bytes_mut(), &x, &mut got, &mut seen)
                .unwrap();
            let bytes: Vec<i8> = want
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .map(|b| b as i8)
                .collect();
            assert_eq!(seen.0[9], bytes);
        }
        // Values beyond int8's 256 levels: the output really is wide.
        assert!(
            distinct.iter().any(|v| !(-128..=127).contains(v)),
            "{distinct:?}"
        );

        // run_f32 dequantizes the int16 output.
        let qin = model.input().quant.unwrap();
        let qout = model.output().quant.unwrap();
        let xf: Vec<f32> = values(32, 4).iter().map(|v| v * 4.0).collect();
        let xq: Vec<i8> = xf.iter().map(|v| quantize(*v, qin)).collect();
        let mut raw = [0i16; 5];
        model.run_i8(arena.bytes_mut(), &xq, &mut raw).unwrap();
        let mut out = [0.0f32; 5];
        model.run_f32(arena.bytes_mut(), &xf, &mut out).unwrap();
        assert_eq!(out, raw.map(|r| dequantize_i16(r, qout)));

        // An int8 output buffer is the wrong type for this model, and the reverse.
        assert_eq!(
            model.run_i8(arena.bytes_mut(), &xq, &mut [0i8; 5]),
            Err(RunError::ElementType {
                expected: DType::I8,
                found: DType::I16
            })
        );
        let narrow = int8_model().blob();
        let narrow = Model::new_checked(narrow.bytes()).unwrap();
        assert_eq!(
            narrow.run_i8(arena.bytes_mut(), &xq, &mut [0i16; 5]),
            Err(RunError::ElementType {
                expected: DType::I16,
                found: DType::I8
            })
        );
    }

    #[test]
    fn wide_softmax_runs_its_kernel_on_the_wide_dense_output() {
        use crate::kernels::reference::int8 as k;
        use crate::model::int8_tests::{wide_model, wide_softmax_model};
        let (dense, spec) = (wide_model(), wide_softmax_model());
        let (dense_blob, blob) = (dense.blob(), spec.blob());
        let dense = Model::new_checked(dense_blob.bytes()).unwrap();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let Op::SoftmaxI16 { exp_hi, exp_lo } = spec.layers[10].op else {
            unreachable!()
        };
        let table = |s: Span| -> [u32; 256] {
            let v: Vec<u32> = i32s(&spec, s).iter().map(|v| *v as u32).collect();
            v.try_into().unwrap()
        };
        let mut arena = Blob::zeroed(model.arena_bytes());
        for seed in 0..20 {
            let x = input_i8(32, seed);
            let mut logits = [0i16; 5];
            dense.run_i8(arena.bytes_mut(), &x, &mut logits).unwrap();
            let mut want = [0i16; 5];
            k::lut::softmax_wide(&table(exp_hi), &table(exp_lo), 5, &logits, &mut want);
            let mut got = [0i16; 5];
            model.run_i8(arena.bytes_mut(), &x, &mut got).unwrap();
            assert_eq!(got, want, "seed {seed}");
            let total: i32 = got.iter().map(|&v| i32::from(v)).sum();
            assert!(
                (total - 32768).abs() <= 3,
                "probabilities sum to 1: {got:?}"
            );
        }
    }

    /// The first `n` layers of `spec` (for computing a layer's input by hand).
    fn spec_prefix(spec: &Spec, n: usize) -> Spec {
        let mut s = Spec::new(
            spec.info.arena_bytes,
            spec.info.input,
            spec.layers[n - 1].output,
        );
        s.weights = spec.weights.clone();
        for l in &spec.layers[..n] {
            s.push(*l);
        }
        s
    }

    /// "No float on the int8 path", at the source level: this file (above its tests) names no
    /// float type, literal or float function. The boundary conversions of `run_f32` live in
    /// `engine.rs`, outside this file, and `run_i8` does not call them.
    /// The 16×8 model through the engine: each layer's bytes equal a direct kernel call on the
    /// previous layer's, for every pair of element types, on a dirty arena; `run_f32` quantizes
    /// the int8 input and dequantizes the int8 output around the same layers.
    #[test]
    fn int16_activations_match_their_kernels() {
        use crate::model::int8_tests::int16_model;
        let spec = int16_model();
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut arena = Blob::zeroed(model.arena_bytes());
        let convs: Vec<&Conv2dI16> = spec
            .layers
            .iter()
            .map(|l| match &l.op {
                Op::Conv2dI16(c) => c,
                other => panic!("{other:?}"),
            })
            .collect();
        let i16s = |span: Span| -> Vec<i16> {
            bytes(&spec, span)
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect()
        };
        let channels = |c: &Conv2dI16| {
            (
                i32s(&spec, c.conv.bias),
                i32s(&spec, c.requant.multipliers),
                i32s(&spec, c.requant.shifts),
            )
        };
        let out = |l: usize, c: &Conv2dI16| WideOutputQuant {
            zero_point: spec.layers[l].output.quant.unwrap().zero_point as i16,
            clamp: c.clamp,
        };
        let dims = |d: &TensorDesc| d.dims.map(usize::from);
        for seed in 0..10 {
            let x = input_i8(model.input().len(), seed);
            // By hand: L0 int8 → int16, L1 int16 → int16, L2 int16 → int8.
            let (b0, m0, s0) = channels(convs[0]);
            let q0 = WideConvQuant {
                input_zero_point: zero_point(&spec.layers[0].inputs[0]).unwrap(),
                pad_values: &i8s(&spec, convs[0].conv.pad_values),
                channels: ChannelQuant {
                    bias: &b0,
                    multiplier: &m0,
                    shift: &s0,
                },
                output: out(0, convs[0]),
            };
            let (l0, l1, l2) = (&spec.layers[0], &spec.layers[1], &spec.layers[2]);
            let mut a = std::vec![0i16; l0.output.len()];
            conv::conv2d_wide(
                &conv_geometry(&convs[0].conv),
                &q0,
                dims(&l0.inputs[0]),
                &x,
                dims(&l0.output),
                &mut a,
                &i8s(&spec, convs[0].conv.weights),
            );
            let (b1, m1, s1) = channels(convs[1]);
            let q1 = WideConvQuant {
                input_zero_point: 0i16,
                pad_values: &i16s(convs[1].conv.pad_values),
                channels: ChannelQuant {
                    bias: &b1,
                    multiplier: &m1,
                    shift: &s1,
                },
                output: out(1, convs[1]),
            };
            let mut b = std::vec![0i16; l1.output.len()];
            conv::conv2d_wide(
                &conv_geometry(&convs[1].conv),
                &q1,
                dims(&l1.inputs[0]),
                &a,
                dims(&l1.output),
                &mut b,
                &i8s(&spec, convs[1].conv.weights),
            );
            let (b2, m2, s2) = channels(convs[2]);
            let q2 = WideConvQuant {
                input_zero_point: 0i16,
                pad_values: &[],
                channels: ChannelQuant {
                    bias: &b2,
                    multiplier: &m2,
                    shift: &s2,
                },
                output: out(2, convs[2]),
            };
            let mut y = std::vec![0i8; l2.output.len()];
            conv::conv2d_wide(
                &conv_geometry(&convs[2].conv),
                &q2,
                dims(&l2.inputs[0]),
                &b,
                dims(&l2.output),
                &mut y,
                &i8s(&spec, convs[2].conv.weights),
            );
            let le = |v: &[i16]| {
                v.iter()
                    .flat_map(|x| x.to_le_bytes())
                    .map(|b| b as i8)
                    .collect::<Vec<_>>()
            };
            let expected = std::vec![le(&a), le(&b), y.clone()];

            arena.bytes_mut().fill(seed as u8 ^ 0xA5);
            let mut seen = Outputs::default();
            let mut got = std::vec![0i8; y.len()];
            model
                .run_i8_observed(arena.bytes_mut(), &x, &mut got, &mut seen)
                .unwrap();
            assert_eq!(seen.0, expected, "seed {seed}");
            assert_eq!(got, y);
            // The layers do work: the 64 int16 values of b are not a handful of levels.
            let levels = b.iter().collect::<std::collections::BTreeSet<_>>().len();
            assert!(levels > 16, "seed {seed}: {levels} levels");

            let xf: Vec<f32> = x
                .iter()
                .map(|&q| dequantize(q, model.input().quant.unwrap()))
                .collect();
            let mut yf = std::vec![0f32; y.len()];
            model.run_f32(arena.bytes_mut(), &xf, &mut yf).unwrap();
            let want: Vec<f32> = y
                .iter()
                .map(|&q| dequantize(q, model.output().quant.unwrap()))
                .collect();
            assert_eq!(yf, want);
        }
    }

    /// An int16 model input: `run_i8` takes `[i16]` (and refuses `[i8]`), the first 16×8 layer
    /// reads it with its int16 pad values, and `run_f32` quantizes the float input to int16.
    #[test]
    fn int16_input_through_every_entry_point() {
        use crate::model::int8_tests::{int16_model, push_i16};
        let mut spec = int16_model();
        let x_desc = TensorDesc {
            dtype: DType::I16,
            ..spec.info.input
        };
        spec.info.input = x_desc;
        spec.layers[0].inputs[0] = x_desc;
        let pad = push_i16(&mut spec, &[-300, 1200]);
        let Op::Conv2dI16(c0) = &mut spec.layers[0].op else {
            panic!("layer 0 is a 16x8 convolution")
        };
        c0.conv.pad_values = pad;
        let c0 = *c0;
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        assert_eq!(model.input().dtype, DType::I16);
        let mut arena = Blob::zeroed(model.arena_bytes());
        let quant = model.input().quant.unwrap();
        let mut gen = Gen(5);
        let x: Vec<i16> = gen.i16s(model.input().len());
        // Layer 0 by hand on the int16 input.
        let l0 = &spec.layers[0];
        let (b, m, sh) = (
            i32s(&spec, c0.conv.bias),
            i32s(&spec, c0.requant.multipliers),
            i32s(&spec, c0.requant.shifts),
        );
        let q = WideConvQuant {
            input_zero_point: quant.zero_point as i16,
            pad_values: &[-300i16, 1200],
            channels: ChannelQuant {
                bias: &b,
                multiplier: &m,
                shift: &sh,
            },
            output: WideOutputQuant {
                zero_point: 0,
                clamp: c0.clamp,
            },
        };
        let mut a = std::vec![0i16; l0.output.len()];
        let dims = |d: &TensorDesc| d.dims.map(usize::from);
        conv::conv2d_wide(
            &conv_geometry(&c0.conv),
            &q,
            dims(&l0.inputs[0]),
            &x,
            dims(&l0.output),
            &mut a,
            &i8s(&spec, c0.conv.weights),
        );
        let mut seen = Outputs::default();
        let mut y = std::vec![0i8; model.output().len()];
        model
            .run_i8_observed(arena.bytes_mut(), &x, &mut y, &mut seen)
            .unwrap();
        let le: Vec<i8> = a
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .map(|b| b as i8)
            .collect();
        assert_eq!(seen.0[0], le);
        // run_f32: the float input quantized to int16 gives the same raw run.
        let xf: Vec<f32> = x
            .iter()
            .map(|&q16| (i32::from(q16) - quant.zero_point) as f32 * quant.scale)
            .collect();
        assert!(xf
            .iter()
            .zip(&x)
            .all(|(v, q16)| crate::engine::quantize_i16(*v, quant) == *q16));
        let mut yf = std::vec![0f32; y.len()];
        model.run_f32(arena.bytes_mut(), &xf, &mut yf).unwrap();
        let want: Vec<f32> = y
            .iter()
            .map(|&q8| dequantize(q8, model.output().quant.unwrap()))
            .collect();
        assert_eq!(yf, want);
        // An [i8] input is the wrong element type.
        let x8 = std::vec![0i8; x.len()];
        assert_eq!(
            model.run_i8(arena.bytes_mut(), &x8, &mut y),
            Err(RunError::ElementType {
                expected: DType::I8,
                found: DType::I16
            })
        );
    }

    #[test]
    fn int8_dispatch_has_no_floating_point() {
        let text = include_str!("int8.rs");
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            let code_part = line.split("//").next().unwrap_or("");
            // The tensors' float scales are only reachable through `.quant`: read only the zero
            // point from it.
            assert!(
                !code_part.contains(".quant") || code_part.contains(".zero_point"),
                "int8.rs:{}: reads a tensor's quantization beyond its zero point: {line}",
                n + 1
            );
            for banned in ["f32", "f64", "libm", "quantize", "roundf"] {
                assert!(
                    !code_part.contains(banned),
                    "int8.rs:{}: `{banned}`: {line}",
                    n + 1
                );
            }
            let float_literal = code_part
                .as_bytes()
                .windows(3)
                .any(|w| w[0].is_ascii_digit() && w[1] == b'.' && w[2].is_ascii_digit());
            assert!(!float_literal, "int8.rs:{}: float literal: {line}", n + 1);
        }
    }
}
