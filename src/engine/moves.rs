//! Dispatch of the operations along one axis (`Concat`, `ConcatI8`, `Slice`, `Gather`) to
//! `kernels::reference::axis` and `kernels::reference::int8::concat`. The element-moving ones run
//! on f32 or int8 alike; `ConcatI8` rescales in integers (no floating-point arithmetic here).

use crate::format::{DType, Layer, Op};
use crate::kernels::reference::axis;
use crate::kernels::reference::int8::concat::{self, PartQuant};
use crate::model::Model;

use super::{linked, Kernel, Kernels};

/// True for the operations this module runs.
pub(super) fn is_axis_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Concat(_) | Op::ConcatI8(_) | Op::Slice(_) | Op::Gather(_)
    )
}

/// One validated layer of an element type `T` on its operands' views (`x2` empty for one input),
/// with whether the firmware links the concat, slice and gather kernels of `T` (constants).
#[inline(always)]
fn run_typed<T: Copy, K>(
    model: &Model<'_, K>,
    layer: &Layer,
    (x, x2, y): (&[T], &[T], &mut [T]),
    [concat, slice, gather]: [bool; 3],
) -> Option<()> {
    let x_dims = layer.inputs.first()?.dims.map(usize::from);
    match &layer.op {
        Op::Concat(c) if concat => {
            let b_dims = layer.inputs.get(1)?.dims.map(usize::from);
            axis::concat(usize::from(c.axis), (x_dims, x), (b_dims, x2), y);
        }
        Op::Slice(s) if slice => {
            let step = (usize::from(s.start), usize::from(s.step));
            let out_dims = layer.output.dims.map(usize::from);
            axis::slice(usize::from(s.axis), step, x_dims, x, out_dims, y);
        }
        Op::Gather(g) if gather => {
            let indices: &[u16] = model.weights_as(g.indices)?;
            axis::gather(usize::from(g.axis), indices, x_dims, x, y);
        }
        _ => return None,
    }
    Some(())
}

/// A channel concatenation with an input already in place or an output that is a view: each
/// other input is written into its slot at the output's pixel stride; `y` starts at the output's
/// first element.
fn place_inputs<K: Kernels>(layer: &Layer, inputs: [&[u8]; 2], y: &mut [u8]) -> Option<()> {
    let stride = layer.output.pixel_stride();
    let mut slot = 0;
    for (k, bytes) in inputs.into_iter().enumerate() {
        let d = layer.inputs.get(k)?;
        let channels = usize::from(d.dims[2]);
        if !layer.in_place(k) {
            match (&layer.op, layer.output.dtype) {
                (Op::ConcatI8(c), DType::I8) if linked::<K>(Kernel::ConcatI8) => {
                    let part = PartQuant {
                        zero_point: i8::try_from(d.quant?.zero_point).ok()?,
                        rescale: *c.rescale.get(k)?,
                    };
                    let zp_out = i8::try_from(layer.output.quant?.zero_point).ok()?;
                    let x = (channels, bytemuck::cast_slice(bytes), part);
                    concat::place(x, (slot, stride), zp_out, bytemuck::cast_slice_mut(y));
                }
                (Op::Concat(_), DType::I8) if linked::<K>(Kernel::ConcatCopyI8) => {
                    axis::place_channels(
                        (channels, bytemuck::cast_slice::<u8, i8>(bytes), |v| v),
                        (slot, stride),
                        bytemuck::cast_slice_mut::<u8, i8>(y),
                    )
                }
                (Op::Concat(_), DType::F32) if linked::<K>(Kernel::Concat) => axis::place_channels(
                    (channels, super::as_f32(bytes)?, |v| v),
                    (slot, stride),
                    super::as_f32_mut(y)?,
                ),
                _ => return None,
            }
        }
        slot += channels;
    }
    Some(())
}

/// Runs an axis operation on its operand bytes (validated: element types, dims, indices).
/// `None` only if validation was bypassed.
pub(super) fn run<K: Kernels>(
    model: &Model<'_, K>,
    layer: &Layer,
    x: &[u8],
    x2: &[u8],
    y: &mut [u8],
) -> Option<()> {
    // A slice whose output is a view of its input (validated): its readers read the input's
    // bytes in place, nothing moves.
    if layer.is_view_slice() {
        return Some(());
    }
    // Zero-copy concatenation (validated: along channels).
    if layer.output.view.is_some() || (0..2).any(|k| layer.in_place(k)) {
        return place_inputs::<K>(layer, [x, x2], y);
    }
    if let Op::ConcatI8(c) = &layer.op {
        if !linked::<K>(Kernel::ConcatI8) {
            return None;
        }
        let part = |k: usize| -> Option<([usize; 3], PartQuant)> {
            let d = layer.inputs.get(k)?;
            let zero_point = i8::try_from(d.quant?.zero_point).ok()?;
            let rescale = *c.rescale.get(k)?;
            Some((
                d.dims.map(usize::from),
                PartQuant {
                    zero_point,
                    rescale,
                },
            ))
        };
        let ((a_dims, qa), (b_dims, qb)) = (part(0)?, part(1)?);
        let zp_out = i8::try_from(layer.output.quant?.zero_point).ok()?;
        let parts = [
            (a_dims, bytemuck::cast_slice(x), qa),
            (b_dims, bytemuck::cast_slice(x2), qb),
        ];
        concat::concat(
            usize::from(c.axis),
            parts,
            zp_out,
            bytemuck::cast_slice_mut(y),
        );
        return Some(());
    }
    match layer.output.dtype {
        DType::F32 => run_typed(
            model,
            layer,
            (super::as_f32(x)?, super::as_f32(x2)?, super::as_f32_mut(y)?),
            const {
                [
                    linked::<K>(Kernel::Concat),
                    linked::<K>(Kernel::Slice),
                    linked::<K>(Kernel::Gather),
                ]
            },
        ),
        DType::I8 => run_typed::<i8, K>(
            model,
            layer,
            (
                bytemuck::cast_slice(x),
                bytemuck::cast_slice(x2),
                bytemuck::cast_slice_mut(y),
            ),
            const {
                [
                    linked::<K>(Kernel::ConcatCopyI8),
                    linked::<K>(Kernel::SliceI8),
                    linked::<K>(Kernel::GatherI8),
                ]
            },
        ),
        // Refused by the loader.
        DType::I16 => None,
    }
}
