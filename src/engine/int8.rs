//! Dispatch of int8 layers to the int8 reference kernels.
//!
//! Integer-only: the kernels' quantization structs are built from the layer record, the operand
//! descriptions' zero points and the weight spans (i8 / i32 / u32 arrays borrowed in place); no
//! scale is read here. A test reads this file to check that no floating point appears in it.

use crate::format::{Layer, Op, TensorDesc};
use crate::kernels::reference::int8::{
    conv::{self, ConvQuant},
    dense,
    elementwise::{self, AddQuant, AffineQuant},
    lut,
    pool::{self, PoolQuant},
    ChannelQuant, OutputQuant,
};
use crate::kernels::reference::layout;
use crate::model::Model;

/// Zero point of a validated int8 tensor (`None` only if validation was bypassed).
fn zero_point(d: &TensorDesc) -> Option<i8> {
    i8::try_from(d.quant?.zero_point).ok()
}

/// One int8 layer on i8 views of its operands (`x2` is empty for single-input layers). `None`
/// only if validation was bypassed.
pub(super) fn run_layer(
    model: &Model<'_>,
    layer: &Layer,
    x: &[i8],
    x2: &[i8],
    y: &mut [i8],
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
        Op::Conv2dI8(p) => {
            let quant = ConvQuant {
                input_zero_point: zp_in,
                pad_values: model.weights_as(p.conv.pad_values)?,
                channels: ChannelQuant {
                    bias: model.weights_as(p.conv.bias)?,
                    multiplier: model.weights_as(p.requant.multipliers)?,
                    shift: model.weights_as(p.requant.shifts)?,
                },
                output: output(p.clamp),
            };
            let weights = model.weights_as(p.conv.weights)?;
            conv::conv2d(&p.conv, &quant, x_dims, x, y_dims, y, weights);
        }
        Op::DenseI8(p) => {
            let channels = ChannelQuant {
                bias: model.weights_as(p.bias)?,
                multiplier: model.weights_as(p.requant.multipliers)?,
                shift: model.weights_as(p.requant.shifts)?,
            };
            let weights = model.weights_as(p.weights)?;
            dense::dense(&channels, &output(p.clamp), weights, x, y);
        }
        Op::PoolI8(p) => {
            let quant = PoolQuant {
                input_zero_point: zp_in,
                rescale: p.rescale,
                output: output(p.clamp),
            };
            pool::pool(&p.pool, &quant, x_dims, x, y_dims, y);
        }
        Op::AddI8(p) => {
            let second = layer.inputs.get(1)?;
            let quant = AddQuant {
                input_zero_points: [zp_in, zero_point(second)?],
                input_requant: p.input_requant,
                output_requant: p.output_requant,
                output: output(p.clamp),
            };
            elementwise::add(&quant, x, x2, y);
        }
        Op::AffineI8(p) => {
            let quant = AffineQuant {
                input_zero_point: zp_in,
                scale: model.weights_as(p.scale)?,
                offset: model.weights_as(p.offset)?,
                multiplier: model.weights_as(p.requant.multipliers)?,
                shift: model.weights_as(p.requant.shifts)?,
                output: output(p.clamp),
            };
            elementwise::affine(&quant, x, y);
        }
        Op::ClampI8(bounds) => elementwise::clamp(*bounds, x, y),
        Op::LookupI8 { table } => {
            let table: &[i8; 256] = model.weights_as(*table)?.try_into().ok()?;
            lut::lookup(table, x, y);
        }
        Op::SoftmaxI8 { exp_table } => {
            let table: &[u32; 256] = model.weights_as(*exp_table)?.try_into().ok()?;
            lut::softmax(table, x_dims[2], x, y);
        }
        Op::PadI8 { pad, value } => layout::pad_with(*pad, *value, x_dims, x, y_dims, y),
        Op::Transpose(p) => layout::transpose(p, x_dims, x, y),
        // f32 operations never have int8 operands (validated).
        Op::Conv2d(_)
        | Op::Dense(_)
        | Op::Pool(_)
        | Op::Add { .. }
        | Op::Affine(_)
        | Op::Activation(_)
        | Op::Softmax
        | Op::Pad(_) => return None,
    }
    Some(())
}
