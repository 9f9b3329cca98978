//! Concat, ConcatI8, Slice and Gather records: a model that uses them loads and computes what
//! index arithmetic says, and each malformed record is refused with the fault that names it.

extern crate std;

use std::vec::Vec;

use super::*;
use crate::format::*;
use crate::testutil::*;

const X: TensorDesc = TensorDesc {
    view: None,
    id: 0,
    offset: 0,
    dims: [1, 2, 3],
    dtype: DType::F32,
    quant: None,
};

/// x `[2, 3]` → slice of columns 1.. (A), gather of columns [2, 0, 1] (B), A ++ B on the last axis.
fn moves() -> Spec {
    let a = desc(1, 32, [1, 2, 2]);
    let b = desc(2, 48, [1, 2, 3]);
    let y = desc(3, 80, [1, 2, 5]);
    let mut spec = Spec::new(128, X, y);
    spec.info.output_rank = 2;
    let indices = Span { offset: 0, len: 6 };
    spec.weights
        .extend([2u16, 0, 1].iter().flat_map(|i| i.to_le_bytes()));
    let slice = Slice {
        axis: 2,
        start: 1,
        step: 1,
    };
    spec.push(layer(Op::Slice(slice), X, a))
        .push(layer(Op::Gather(Gather { axis: 2, indices }), X, b))
        .push(layer2(Op::Concat(Concat { axis: 2 }), a, b, y));
    spec
}

fn load(spec: &Spec) -> Result<(), LoadError> {
    let blob = spec.blob();
    Model::new_checked(blob.bytes()).map(|_| ())
}

fn refused(edit: impl FnOnce(&mut Spec), expected: LoadError) {
    let mut spec = moves();
    edit(&mut spec);
    assert_eq!(load(&spec), Err(expected));
}

fn bad(layer: u16, what: LayerFault) -> LoadError {
    LoadError::BadLayer { layer, what }
}

fn param(fault: ParamFault) -> LoadError {
    bad(0, LayerFault::Param(fault))
}

#[test]
fn slice_gather_and_concat_compute_their_index_arithmetic() {
    let spec = moves();
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let x: Vec<f32> = (0..6).map(|i| i as f32 + 0.5).collect();
    let mut arena = [0u8; 128];
    let mut y = [0f32; 10];
    model.run_f32(&mut arena, &x, &mut y).unwrap();
    let mut want = Vec::new();
    for row in x.chunks(3) {
        want.extend([row[1], row[2]]); // slice 1..
        want.extend([row[2], row[0], row[1]]); // gather
    }
    assert_eq!(y.to_vec(), want);
}

#[test]
fn malformed_axis_records_are_refused() {
    fn slice(f: impl FnOnce(&mut Slice)) -> impl FnOnce(&mut Spec) {
        move |s| match &mut s.layers[0].op {
            Op::Slice(x) => f(x),
            _ => unreachable!(),
        }
    }
    fn gather(f: impl FnOnce(&mut Gather)) -> impl FnOnce(&mut Spec) {
        move |s| match &mut s.layers[1].op {
            Op::Gather(x) => f(x),
            _ => unreachable!(),
        }
    }
    fn concat(f: impl FnOnce(&mut Concat)) -> impl FnOnce(&mut Spec) {
        move |s| match &mut s.layers[2].op {
            Op::Concat(x) => f(x),
            _ => unreachable!(),
        }
    }
    // Bad slice parameters.
    refused(slice(|s| s.axis = 3), param(ParamFault::Axis { axis: 3 }));
    refused(slice(|s| s.step = 0), param(ParamFault::ZeroStep));
    refused(
        slice(|s| s.start = 2),
        param(ParamFault::IndexOutOfRange { index: 3, len: 3 }),
    );
    refused(
        slice(|s| s.step = 2),
        param(ParamFault::IndexOutOfRange { index: 3, len: 3 }),
    );
    // A slice whose output changes another dim.
    refused(
        |s| s.layers[0].output.dims = [1, 1, 2],
        bad(
            0,
            LayerFault::Shape {
                operand: Operand::Output,
                expected: [1, 2, 2],
                found: [1, 1, 2],
            },
        ),
    );
    // Gather: an index past the axis, a short or misaligned table.
    refused(
        |s| s.weights[0] = 3,
        bad(
            1,
            LayerFault::Param(ParamFault::IndexOutOfRange { index: 3, len: 3 }),
        ),
    );
    refused(
        gather(|g| g.indices.len = 4),
        bad(
            1,
            LayerFault::Span {
                role: SpanRole::Indices,
                fault: SpanFault::Length {
                    expected: 6,
                    found: 4,
                },
            },
        ),
    );
    refused(
        gather(|g| g.indices.offset = 1),
        bad(
            1,
            LayerFault::Span {
                role: SpanRole::Indices,
                fault: SpanFault::Misaligned { offset: 1 },
            },
        ),
    );
    refused(
        gather(|g| g.indices.offset = 2),
        bad(
            1,
            LayerFault::Span {
                role: SpanRole::Indices,
                fault: SpanFault::OutOfBounds {
                    end: 8,
                    weights_len: 6,
                },
            },
        ),
    );
    // Concat: axis, operand count, dims that do not join.
    refused(
        concat(|c| c.axis = 7),
        bad(2, LayerFault::Param(ParamFault::Axis { axis: 7 })),
    );
    refused(
        concat(|c| c.axis = 1),
        bad(
            2,
            LayerFault::Shape {
                operand: Operand::Input(1),
                expected: [1, 2, 2],
                found: [1, 2, 3],
            },
        ),
    );
    refused(
        |s| s.layers[2].input_count = 1,
        bad(
            2,
            LayerFault::InputCount {
                expected: 2,
                found: 1,
            },
        ),
    );
    refused(
        |s| {
            s.layers[2].output.dims = [1, 2, 4];
            s.info.output.dims = [1, 2, 4];
        },
        bad(
            2,
            LayerFault::Shape {
                operand: Operand::Output,
                expected: [1, 2, 5],
                found: [1, 2, 4],
            },
        ),
    );
    // A concat writing over one of its inputs.
    refused(
        |s| {
            s.layers[2].output.offset = 48;
            s.info.output.offset = 48;
        },
        bad(2, LayerFault::OverlapsOwnInput { input: 1 }),
    );
}

fn q(id: u16, offset: u32, dims: [u16; 3], scale: f32, zero_point: i32) -> TensorDesc {
    TensorDesc {
        view: None,
        id,
        offset,
        dims,
        dtype: DType::I8,
        quant: Some(Quant { scale, zero_point }),
    }
}

/// int8: x, its slice (same grid) joined on a coarser grid by `ConcatI8`.
fn int8_moves(rescale: [Option<Requant>; 2]) -> Spec {
    let x = q(0, 0, [1, 2, 3], 0.1, 0);
    let a = q(1, 8, [1, 2, 2], 0.1, 0);
    let y = q(2, 16, [1, 2, 5], 0.2, 3);
    let mut spec = Spec::new(28, x, y);
    spec.info.output_rank = 2;
    let slice = Slice {
        axis: 2,
        start: 1,
        step: 1,
    };
    spec.push(layer(Op::Slice(slice), x, a)).push(layer2(
        Op::ConcatI8(ConcatI8 { axis: 2, rescale }),
        x,
        a,
        y,
    ));
    spec
}

fn half() -> Option<Requant> {
    Requant::from_real(0.5 / f64::from(1u32 << crate::quant::ADD_LEFT_SHIFT))
}

#[test]
fn concat_i8_rescales_each_input_to_the_output_grid() {
    let spec = int8_moves([half(), half()]);
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let x: [i8; 6] = [-128, -3, 5, 0, 127, 77];
    let mut arena = [0u8; 28];
    let mut y = [0i8; 10];
    model.run_i8(&mut arena, &x, &mut y).unwrap();
    // y = 3 + round(q * 0.1 / 0.2), rounding half away from zero (one rounding).
    let map = |v: i8| (3.0 + (f64::from(v) * 0.5).round()) as i8;
    let mut want = Vec::new();
    for row in x.chunks(3) {
        want.extend(row.iter().map(|&v| map(v)));
        want.extend(row[1..].iter().map(|&v| map(v)));
    }
    assert_eq!(y.to_vec(), want);
}

#[test]
fn int8_concat_quantization_rules_are_checked() {
    let load8 = |spec: Spec| load(&spec);
    let mismatch = |i| {
        bad(
            1,
            LayerFault::QuantMismatch {
                operand: Operand::Input(i),
            },
        )
    };
    // An input copied as is must already have the output's quantization.
    assert_eq!(load8(int8_moves([None, half()])), Err(mismatch(0)));
    // A factor that `quantize_multiplier` would never write.
    let odd = Some(Requant {
        multiplier: 3,
        shift: 0,
    });
    assert_eq!(
        load8(int8_moves([half(), odd])),
        Err(bad(1, LayerFault::Param(ParamFault::Requant)))
    );
    // The moving `Concat` on int8 needs one quantization throughout.
    let mut spec = int8_moves([half(), half()]);
    spec.layers[1].op = Op::Concat(Concat { axis: 2 });
    assert_eq!(load8(spec), Err(mismatch(0)));
    // Moves refuse int16 operands (the tool keeps int16 between convolutions only).
    let mut spec = int8_moves([half(), half()]);
    spec.layers[0].inputs[0].dtype = DType::I16;
    spec.layers[0].output.dtype = DType::I16;
    // Twice the bytes: move the output off the input.
    spec.layers[0].output.offset = 12;
    assert_eq!(
        load8(spec),
        Err(bad(
            0,
            LayerFault::DType {
                operand: Operand::Input(0),
                expected: DType::I8,
                found: DType::I16,
            }
        ))
    );
}
