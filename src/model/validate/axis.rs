//! Load-time checks of the operations along one axis (`Concat`, `ConcatI8`, `Slice`, `Gather`):
//! the axis, the operand dims against each other, the indices read, the quantization rule. After
//! them the kernels in `kernels::reference::axis` never index outside their operands.

use super::{expect_dims, same_quant, LayerFault, Operand, ParamFault, SpanRole, Weights};
use crate::format::{Concat, ConcatI8, DType, Gather, Requant, Slice, TensorDesc};

fn axis_index(axis: u8) -> Result<usize, LayerFault> {
    match axis {
        0..=2 => Ok(usize::from(axis)),
        _ => Err(LayerFault::Param(ParamFault::Axis { axis })),
    }
}

/// The move operations take f32 or int8 (the tool keeps int16 tensors between convolutions only).
fn not_int16(operand: Operand, d: &TensorDesc) -> Result<(), LayerFault> {
    if d.dtype == DType::I16 {
        return Err(LayerFault::DType {
            operand,
            expected: DType::I8,
            found: DType::I16,
        });
    }
    Ok(())
}

/// Two inputs equal but along `axis`, the output their join.
fn concat_dims(axis: u8, inputs: &[TensorDesc], y: &TensorDesc) -> Result<(), LayerFault> {
    let axis = axis_index(axis)?;
    let (Some(a), Some(b)) = (inputs.first(), inputs.get(1)) else {
        return Err(LayerFault::InputCount {
            expected: 2,
            found: u8::try_from(inputs.len()).unwrap_or(u8::MAX),
        });
    };
    let mut expected_b = a.dims.map(u64::from);
    expected_b[axis] = u64::from(b.dims[axis]);
    expect_dims(Operand::Input(1), expected_b, b.dims)?;
    let mut expected_y = a.dims.map(u64::from);
    expected_y[axis] += u64::from(b.dims[axis]);
    expect_dims(Operand::Output, expected_y, y.dims)
}

pub(super) fn check_concat(
    c: &Concat,
    inputs: &[TensorDesc],
    y: &TensorDesc,
) -> Result<(), LayerFault> {
    not_int16(Operand::Output, y)?;
    concat_dims(c.axis, inputs, y)?;
    for (i, x) in (0u8..).zip(inputs) {
        if x.quant != y.quant {
            return Err(LayerFault::QuantMismatch {
                operand: Operand::Input(i),
            });
        }
    }
    Ok(())
}

pub(super) fn check_concat_i8(
    c: &ConcatI8,
    inputs: &[TensorDesc],
    y: &TensorDesc,
) -> Result<(), LayerFault> {
    concat_dims(c.axis, inputs, y)?;
    for ((i, x), rescale) in (0u8..).zip(inputs).zip(c.rescale) {
        match rescale {
            Some(r) if !Requant::is_normalized(r) => {
                return Err(LayerFault::Param(ParamFault::Requant))
            }
            Some(_) => {}
            None if x.quant != y.quant => {
                return Err(LayerFault::QuantMismatch {
                    operand: Operand::Input(i),
                })
            }
            None => {}
        }
    }
    Ok(())
}

/// Same dims as `x` but along `axis`; returns `x`'s and `y`'s dims along it.
fn along(axis: usize, x: &TensorDesc, y: &TensorDesc) -> Result<(u16, u16), LayerFault> {
    let mut expected = x.dims.map(u64::from);
    expected[axis] = u64::from(y.dims[axis]);
    expect_dims(Operand::Output, expected, y.dims)?;
    Ok((x.dims[axis], y.dims[axis]))
}

fn index_in(index: u64, len: u16) -> Result<(), LayerFault> {
    if index < u64::from(len) {
        Ok(())
    } else {
        Err(LayerFault::Param(ParamFault::IndexOutOfRange {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            len,
        }))
    }
}

pub(super) fn check_slice(s: &Slice, x: &TensorDesc, y: &TensorDesc) -> Result<(), LayerFault> {
    not_int16(Operand::Input(0), x)?;
    let axis = axis_index(s.axis)?;
    if s.step == 0 {
        return Err(LayerFault::Param(ParamFault::ZeroStep));
    }
    let (len, out) = along(axis, x, y)?;
    // Output dims are non-zero (checked with the descriptions): the last index read is this.
    let last = u64::from(s.start) + (u64::from(out) - 1) * u64::from(s.step);
    index_in(last, len)?;
    same_quant(x, y)
}

pub(super) fn check_gather(
    g: &Gather,
    x: &TensorDesc,
    y: &TensorDesc,
    weights: Weights<'_>,
) -> Result<(), LayerFault> {
    not_int16(Operand::Input(0), x)?;
    let axis = axis_index(g.axis)?;
    let (len, out) = along(axis, x, y)?;
    let bytes = weights.span(g.indices, SpanRole::Indices, u64::from(out) * 2, 2)?;
    for pair in bytes.chunks_exact(2) {
        let index = u16::from_le_bytes([
            pair.first().copied().unwrap_or(0),
            pair.get(1).copied().unwrap_or(0),
        ]);
        index_in(u64::from(index), len)?;
    }
    same_quant(x, y)
}
