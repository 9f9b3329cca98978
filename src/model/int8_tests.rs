//! An int8 model that uses every int8 operation (shared with the engine tests), and the loader's
//! int8 refusals, each with a test.

extern crate std;

use std::vec::Vec;

use super::*;
use crate::format::*;
use crate::kernels::reference::int8::testing::Gen;
use crate::quant::{add_requant, lookup_table, quantize_affine_channel};
use crate::testutil::*;

/// An int8 tensor description.
pub(crate) const fn q8(
    id: u16,
    offset: u32,
    dims: [u16; 3],
    scale: f32,
    zero_point: i32,
) -> TensorDesc {
    TensorDesc {
        view: None,
        id,
        offset,
        dims,
        dtype: DType::I8,
        quant: Some(Quant { scale, zero_point }),
    }
}

/// Appends i8 values to the weights section, unaligned (i8 arrays need no alignment).
pub(crate) fn push_i8(spec: &mut Spec, values: &[i8]) -> Span {
    let offset = spec.weights.len() as u32;
    spec.weights.extend(values.iter().map(|v| *v as u8));
    Span {
        offset,
        len: values.len() as u32,
    }
}

/// Appends 4-byte little-endian values at the next multiple of 4.
pub(crate) fn push_words(spec: &mut Spec, words: impl IntoIterator<Item = [u8; 4]>) -> Span {
    while spec.weights.len() % 4 != 0 {
        spec.weights.push(0);
    }
    let offset = spec.weights.len() as u32;
    spec.weights.extend(words.into_iter().flatten());
    Span {
        offset,
        len: spec.weights.len() as u32 - offset,
    }
}

pub(crate) fn push_i32(spec: &mut Spec, values: &[i32]) -> Span {
    push_words(spec, values.iter().map(|v| v.to_le_bytes()))
}

/// Per-channel factors of `reals`, as the host computes them.
pub(crate) fn push_requant(spec: &mut Spec, reals: &[f64]) -> ChannelRequant {
    let factors: Vec<Requant> = reals
        .iter()
        .map(|r| Requant::from_real(*r).unwrap())
        .collect();
    ChannelRequant {
        multipliers: push_i32(
            spec,
            &factors.iter().map(|f| f.multiplier).collect::<Vec<_>>(),
        ),
        shifts: push_i32(spec, &factors.iter().map(|f| f.shift).collect::<Vec<_>>()),
    }
}

// Tensors of `int8_model`. Arena plan (bytes):
//   x    [4,4,2]    0..32   model input                       s 0.05  zp -3
//   t1   [4,4,3]   32..80   L0  conv 3x3 pad 1 (pad values)   s 0.1   zp 5, clamp [5, 127] (ReLU)
//   t2   [2,2,3]   80..92   L1  max pool 2x2 s2               as t1; read by L2 and L4
//   t3   [2,2,3]   96..108  L2  affine                        s 0.08  zp -2
//   t4   [2,2,3]  112..124  L3  clamp [-2, 100]               as t3
//   t5   [2,2,3]  128..140  L4  add(t2, t4)                   s 0.12  zp 1
//   t6   [3,2,2]    0..12   L5  transpose [2,0,1]             as t5
//   t7   [4,3,2]   16..40   L6  pad [1,0,0,1] with 7          as t5
//   t8   [4,3,2]   40..64   L7  lookup (tanh)                 s 1/128 zp 0
//   t9   [2,2,2]   64..72   L8  avg pool 2x2 s[2,1] pad top 1, count pad, rescale  s 0.004 zp -10
//   t10  [1,1,5]   72..77   L9  dense 8 -> 5                  s 0.05  zp 3
//   t11  [1,1,5]   80..85   L10 softmax, model output         s 1/256 zp -128
pub(crate) const QX: TensorDesc = q8(0, 0, [4, 4, 2], 0.05, -3);
pub(crate) const Q1: TensorDesc = q8(1, 32, [4, 4, 3], 0.1, 5);
pub(crate) const Q2: TensorDesc = q8(2, 80, [2, 2, 3], 0.1, 5);
pub(crate) const Q3: TensorDesc = q8(3, 96, [2, 2, 3], 0.08, -2);
pub(crate) const Q4: TensorDesc = q8(4, 112, [2, 2, 3], 0.08, -2);
pub(crate) const Q5: TensorDesc = q8(5, 128, [2, 2, 3], 0.12, 1);
pub(crate) const Q6: TensorDesc = q8(6, 0, [3, 2, 2], 0.12, 1);
pub(crate) const Q7: TensorDesc = q8(7, 16, [4, 3, 2], 0.12, 1);
pub(crate) const Q8: TensorDesc = q8(8, 40, [4, 3, 2], 1.0 / 128.0, 0);
pub(crate) const Q9: TensorDesc = q8(9, 64, [2, 2, 2], 0.004, -10);
pub(crate) const Q10: TensorDesc = q8(10, 72, [1, 1, 5], 0.05, 3);
pub(crate) const Q11: TensorDesc = q8(11, 80, [1, 1, 5], 1.0 / 256.0, -128);

fn scale(d: &TensorDesc) -> f64 {
    f64::from(d.quant.unwrap().scale)
}

/// An eleven-layer int8 model that uses every int8 operation (and the generic transpose).
pub(crate) fn int8_model() -> Spec {
    let mut m = Spec::new(140, QX, Q11);
    let mut g = Gen(7);
    // An odd number of bytes first, so the i8 arrays below sit at unaligned offsets.
    push_i8(&mut m, &[0; 3]);

    let weight_scales = [0.01, 0.02, 0.015];
    let conv_weights = push_i8(&mut m, &g.i8s(3 * 3 * 3 * 2));
    let conv_pad = push_i8(&mut m, &[-3, 4]);
    let conv_bias = push_i32(&mut m, &[120, -340, 15]);
    let reals: Vec<f64> = weight_scales
        .iter()
        .map(|sw| scale(&QX) * sw / scale(&Q1))
        .collect();
    let conv = Conv2dI8 {
        conv: Conv2d {
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [1, 1, 1, 1],
            groups: 1,
            weights: conv_weights,
            bias: conv_bias,
            pad_values: conv_pad,
            activation: Activation::Identity,
        },
        requant: push_requant(&mut m, &reals),
        clamp: Clamp { min: 5, max: 127 },
    };

    let max_pool = PoolI8 {
        pool: Pool {
            kind: PoolKind::Max,
            kernel: [2, 2],
            stride: [2, 2],
            pad: [0; 4],
            activation: Activation::Identity,
        },
        rescale: None,
        clamp: Clamp::FULL,
    };

    let channels: Vec<_> = [(1.5, 0.0), (-1.0, 3.0), (0.5, -2.5)]
        .iter()
        .map(|&(slope, shift)| {
            let ratio = slope * scale(&Q2) / scale(&Q3);
            quantize_affine_channel(ratio, shift / scale(&Q3)).unwrap()
        })
        .collect();
    let affine = AffineI8 {
        scale: push_i32(
            &mut m,
            &channels.iter().map(|c| c.scale).collect::<Vec<_>>(),
        ),
        offset: push_i32(
            &mut m,
            &channels.iter().map(|c| c.offset).collect::<Vec<_>>(),
        ),
        requant: ChannelRequant {
            multipliers: push_i32(
                &mut m,
                &channels
                    .iter()
                    .map(|c| c.requant.multiplier)
                    .collect::<Vec<_>>(),
            ),
            shifts: push_i32(
                &mut m,
                &channels.iter().map(|c| c.requant.shift).collect::<Vec<_>>(),
            ),
        },
        clamp: Clamp::FULL,
    };

    let add_factors = add_requant(scale(&Q2), scale(&Q4), scale(&Q5)).unwrap();
    let add = AddI8 {
        input_requant: add_factors.inputs,
        output_requant: add_factors.output,
        clamp: Clamp::FULL,
    };

    let tanh = lookup_table(
        libm::tanh,
        (scale(&Q7), Q7.quant.unwrap().zero_point),
        (scale(&Q8), Q8.quant.unwrap().zero_point),
    );
    let table = push_i8(&mut m, &tanh);

    let avg_pool = PoolI8 {
        pool: Pool {
            kind: PoolKind::Average {
                count_include_pad: true,
            },
            kernel: [2, 2],
            stride: [2, 1],
            pad: [1, 0, 0, 0],
            activation: Activation::Identity,
        },
        rescale: Some(Requant::from_real(scale(&Q8) / scale(&Q9)).unwrap()),
        clamp: Clamp::FULL,
    };

    let dense_reals: Vec<f64> = (0..5)
        .map(|o| scale(&Q9) * 0.02 * (1.0 + o as f64 / 4.0) / scale(&Q10))
        .collect();
    let dense = DenseI8 {
        weights: push_i8(&mut m, &g.i8s(5 * 8)),
        bias: push_i32(&mut m, &[400, -900, 0, 1500, -20]),
        requant: push_requant(&mut m, &dense_reals),
        clamp: Clamp {
            min: -100,
            max: 120,
        },
        layout: DenseLayout::RowsI8,
    };

    let exp_table = push_words(
        &mut m,
        (0..256).map(|d| {
            let e = libm::exp(-scale(&Q10) * f64::from(d)) * 65536.0;
            (libm::round(e) as u32).to_le_bytes()
        }),
    );

    m.push(layer(Op::Conv2dI8(conv), QX, Q1))
        .push(layer(Op::PoolI8(max_pool), Q1, Q2))
        .push(layer(Op::AffineI8(affine), Q2, Q3))
        .push(layer(Op::ClampI8(Clamp { min: -2, max: 100 }), Q3, Q4))
        .push(layer2(Op::AddI8(add), Q2, Q4, Q5))
        .push(layer(Op::Transpose(Transpose { perm: [2, 0, 1] }), Q5, Q6))
        .push(layer(
            Op::PadI8 {
                pad: [1, 0, 0, 1],
                interior: [0, 0],
                value: 7,
            },
            Q6,
            Q7,
        ))
        .push(layer(Op::LookupI8 { table }, Q7, Q8))
        .push(layer(Op::PoolI8(avg_pool), Q8, Q9))
        .push(layer(Op::DenseI8(dense), Q9, Q10))
        .push(layer(Op::SoftmaxI8 { exp_table }, Q10, Q11));
    m
}

fn load(spec: &Spec) -> Result<(), LoadError> {
    let blob = spec.blob();
    Model::new_checked(blob.bytes()).map(|_| ())
}

/// `int8_model()` with one edit, expected to be refused with `expected`.
fn refused(edit: impl FnOnce(&mut Spec), expected: LoadError) {
    let mut spec = int8_model();
    edit(&mut spec);
    assert_eq!(load(&spec), Err(expected));
}

fn bad(layer: u16, what: LayerFault) -> LoadError {
    LoadError::BadLayer { layer, what }
}

fn param(fault: ParamFault) -> LayerFault {
    LayerFault::Param(fault)
}

fn op<T>(spec: &mut Spec, index: usize, pick: impl FnOnce(&mut Op) -> Option<&mut T>) -> &mut T {
    pick(&mut spec.layers[index].op).expect("layer has the expected op")
}

fn conv(spec: &mut Spec) -> &mut Conv2dI8 {
    op(spec, 0, |o| match o {
        Op::Conv2dI8(c) => Some(c),
        _ => None,
    })
}

fn max_pool(spec: &mut Spec) -> &mut PoolI8 {
    op(spec, 1, |o| match o {
        Op::PoolI8(p) => Some(p),
        _ => None,
    })
}

fn dense(spec: &mut Spec) -> &mut DenseI8 {
    op(spec, 9, |o| match o {
        Op::DenseI8(d) => Some(d),
        _ => None,
    })
}

/// `int8_model()`'s dense layer (5 × 8) with its weights as int16 quads
/// ([`DenseLayout::QuadsI16`]), appended at the next multiple of 4.
pub(crate) fn to_quads(spec: &mut Spec) {
    let d = *dense(spec);
    let rows: Vec<i8> = spec.weights[d.weights.offset as usize..][..d.weights.len as usize]
        .iter()
        .map(|&b| b as i8)
        .collect();
    let (n_out, n_in) = (5, 8);
    let mut quads = std::vec![0i16; rows.len()];
    for o in 0..n_out {
        for i in 0..n_in {
            quads[quad_index(n_out, n_in, o, i)] = rows[o * n_in + i].into();
        }
    }
    let weights = push_words(
        spec,
        quads
            .chunks_exact(2)
            .map(|p| (u32::from(p[0] as u16) | (u32::from(p[1] as u16) << 16)).to_le_bytes()),
    );
    *dense(spec) = DenseI8 {
        weights,
        layout: DenseLayout::QuadsI16,
        ..d
    };
}

/// `int8_model()`'s dense layer (5 × 8) with its weights in row pairs
/// ([`DenseLayout::PairsI8`]: two pairs and a last odd row), appended at the next multiple of 4.
pub(crate) fn to_pairs(spec: &mut Spec) {
    let d = *dense(spec);
    let rows: Vec<i8> = spec.weights[d.weights.offset as usize..][..d.weights.len as usize]
        .iter()
        .map(|&b| b as i8)
        .collect();
    let mut pairs = std::vec![0i8; rows.len()];
    crate::format::store_pairs(&rows, 5, 8, 1, &mut pairs).unwrap();
    let weights = push_words(
        spec,
        pairs
            .chunks_exact(4)
            .map(|w| [w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]),
    );
    *dense(spec) = DenseI8 {
        weights,
        layout: DenseLayout::PairsI8,
        ..d
    };
}

/// The dense weights in row pairs give the rows' bytes; the loader refuses pairs that decode
/// outside int8, inputs not in fours and a misaligned span, each with a fault that says what to
/// do.
#[test]
fn dense_pairs_run_like_rows_and_malformed_pairs_are_refused() {
    let rows = int8_model();
    let mut pairs = rows.clone();
    to_pairs(&mut pairs);
    let run = |spec: &Spec, input: &[i8]| {
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut arena = Blob::zeroed(model.arena_bytes());
        let mut out = std::vec![0i8; model.output().len()];
        model.run_i8(arena.bytes_mut(), input, &mut out).unwrap();
        out
    };
    let mut g = Gen(11);
    let n = rows.info.input.len();
    for _ in 0..8 {
        let x = g.i8s(n);
        assert_eq!(run(&rows, &x), run(&pairs, &x));
    }
    // Pair 0, input 3: a stored 127 under a negative first-row weight decodes to 128.
    refused(
        |s| {
            to_pairs(s);
            let at = dense(s).weights.offset as usize + 2 * 3;
            s.weights[at] = (-5i8) as u8;
            s.weights[at + 1] = 127;
        },
        bad(
            9,
            param(ParamFault::DensePairs(crate::format::PairsFault::Range {
                row: 1,
                input: 3,
            })),
        ),
    );
    // Inputs not in fours: 5 rows of 2 inputs over 4 positions.
    refused(
        |s| {
            to_pairs(s);
            dense(s).weights.len = 5 * 2;
        },
        bad(
            9,
            param(ParamFault::DensePairs(crate::format::PairsFault::Shape)),
        ),
    );
    // Words read with LDRD: the span must be 4-aligned.
    refused(
        |s| {
            to_pairs(s);
            s.weights.extend([0, 0]);
            dense(s).weights.offset += 2;
        },
        bad(
            9,
            LayerFault::Span {
                role: SpanRole::Weights,
                fault: SpanFault::Misaligned {
                    offset: {
                        let mut s = int8_model();
                        to_pairs(&mut s);
                        dense(&mut s).weights.offset + 2
                    },
                },
            },
        ),
    );
    for fault in [
        crate::format::PairsFault::Shape,
        crate::format::PairsFault::Sum {
            row: 1,
            bound: 9_000_000,
        },
    ] {
        let text = std::format!("{}", ParamFault::DensePairs(fault));
        assert!(text.contains("--dense-weights int8-rows"), "{text}");
    }
}

/// The same model with the dense weights in either layout gives the same bytes, and the loader
/// refuses a quad layout it cannot run with a fault that says what to do.
#[test]
fn dense_quads_run_like_rows_and_malformed_quads_are_refused() {
    let rows = int8_model();
    let mut quads = rows.clone();
    to_quads(&mut quads);
    let run = |spec: &Spec, input: &[i8]| {
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut arena = Blob::zeroed(model.arena_bytes());
        let mut out = std::vec![0i8; model.output().len()];
        model.run_i8(arena.bytes_mut(), input, &mut out).unwrap();
        out
    };
    let mut g = Gen(7);
    let n = rows.info.input.len();
    for _ in 0..8 {
        let x = g.i8s(n);
        assert_eq!(run(&rows, &x), run(&quads, &x));
    }
    // A value outside int8: the accumulator bound would not hold.
    refused(
        |s| {
            to_quads(s);
            let at = dense(s).weights.offset as usize + 2 * 13;
            s.weights[at..at + 2].copy_from_slice(&300i16.to_le_bytes());
        },
        bad(
            9,
            param(ParamFault::WideWeightRange {
                index: 13,
                value: 300,
            }),
        ),
    );
    // int16 words read with LDM: the span must be 4-aligned.
    refused(
        |s| {
            to_quads(s);
            s.weights.extend([0, 0]);
            let d = dense(s);
            d.weights.offset += 2;
        },
        bad(
            9,
            LayerFault::Span {
                role: SpanRole::Weights,
                fault: SpanFault::Misaligned {
                    offset: {
                        let mut s = int8_model();
                        to_quads(&mut s);
                        dense(&mut s).weights.offset + 2
                    },
                },
            },
        ),
    );
    // The int8 rows relabelled as quads: 40 bytes read as 5 rows of 4 int16 inputs over 2
    // positions, whose values (two int8 weights each) leave the int8 range.
    let mut relabelled = int8_model();
    dense(&mut relabelled).layout = DenseLayout::QuadsI16;
    assert!(
        matches!(
            load(&relabelled),
            Err(LoadError::BadLayer {
                layer: 9,
                what: LayerFault::Param(ParamFault::WideWeightRange { .. })
            })
        ),
        "{:?}",
        load(&relabelled)
    );
    let text = std::format!("{}", ParamFault::DenseQuadInputs { inputs: 6 });
    assert!(text.contains("--dense-weights int8"), "{text}");
    let text = std::format!(
        "{}",
        ParamFault::WideWeightRange {
            index: 3,
            value: -200
        }
    );
    assert!(
        text.contains("-128..=127") && text.contains("-200"),
        "{text}"
    );
}

/// A quad layout over inputs that are not a multiple of 4 is refused by name: 5 rows of 2
/// inputs tile the 8-value input as 4 positions, which the int8 rows may do, the quads not.
#[test]
fn dense_quads_need_inputs_in_fours() {
    refused(
        |s| {
            to_quads(s);
            dense(s).weights.len = 2 * 5 * 2;
        },
        bad(9, param(ParamFault::DenseQuadInputs { inputs: 2 })),
    );
}

/// Every use of tensor `id` (boundary and layer operands) edited alike, so the dataflow stays
/// consistent and the edit reaches the per-op checks.
fn edit_tensor(spec: &mut Spec, id: u16, edit: impl Fn(&mut TensorDesc)) {
    let info = &mut spec.info;
    for d in [&mut info.input, &mut info.output] {
        if d.id == id {
            edit(d);
        }
    }
    for l in &mut spec.layers {
        for d in l.inputs.iter_mut().chain([&mut l.output]) {
            if d.id == id {
                edit(d);
            }
        }
    }
}

fn set_quant(spec: &mut Spec, id: u16, scale: f32, zero_point: i32) {
    edit_tensor(spec, id, |d| d.quant = Some(Quant { scale, zero_point }));
}

#[test]
fn int8_model_loads() {
    let spec = int8_model();
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    assert_eq!(model.input().dtype, DType::I8);
    assert_eq!(model.output().dtype, DType::I8);
    assert_eq!(model.layers().collect::<Vec<_>>(), spec.layers);
    // i8 arrays at odd offsets are fine.
    assert_eq!(conv(&mut spec.clone()).conv.weights.offset % 2, 1);
}

#[test]
fn int8_tensor_quantization_faults() {
    let boundary = |fault| LoadError::BadModelTensor {
        tensor: Boundary::Input,
        fault,
    };
    refused(
        |m| m.info.input.quant = None,
        boundary(TensorFault::QuantMissing),
    );
    for s in [0.0, -0.5, f32::NAN, f32::INFINITY] {
        refused(
            |m| {
                m.info.input.quant = Some(Quant {
                    scale: s,
                    zero_point: 0,
                })
            },
            boundary(TensorFault::QuantScale),
        );
    }
    for zero_point in [128, -129, i32::MIN] {
        refused(
            |m| {
                m.info.input.quant = Some(Quant {
                    scale: 0.1,
                    zero_point,
                })
            },
            boundary(TensorFault::QuantZeroPoint { zero_point }),
        );
    }
    // In a layer operand, attributed to the layer.
    refused(
        |m| m.layers[3].output.quant = None,
        bad(
            3,
            LayerFault::Tensor {
                operand: Operand::Output,
                fault: TensorFault::QuantMissing,
            },
        ),
    );
    // The zero point is part of the tensor description: a mismatch is a dataflow fault.
    refused(
        |m| {
            m.layers[2].inputs[0].quant = Some(Quant {
                scale: 0.1,
                zero_point: 4,
            })
        },
        bad(2, LayerFault::TensorMismatch { tensor: 2 }),
    );
}

#[test]
fn element_type_faults() {
    // An f32 operation on int8 tensors.
    refused(
        |m| m.layers[3].op = Op::Activation(Activation::Relu),
        bad(
            3,
            LayerFault::DType {
                operand: Operand::Input(0),
                expected: DType::F32,
                found: DType::I8,
            },
        ),
    );
    // An int8 operation on f32 tensors (the f32 `tiny` model's standalone ReLU).
    let mut spec = tiny();
    spec.layers[3].op = Op::ClampI8(Clamp::FULL);
    assert_eq!(
        load(&spec),
        Err(bad(
            3,
            LayerFault::DType {
                operand: Operand::Input(0),
                expected: DType::I8,
                found: DType::F32,
            },
        ))
    );
    // A transpose keeps the element type.
    refused(
        |m| {
            m.layers[5].output.dtype = DType::F32;
            m.layers[5].output.quant = None;
        },
        bad(
            5,
            LayerFault::DType {
                operand: Operand::Output,
                expected: DType::I8,
                found: DType::F32,
            },
        ),
    );
    // Both inputs of an int8 addition are int8.
    refused(
        |m| {
            // 12 bytes, like the int8 tensor it replaces.
            m.layers[4].inputs[1] = desc(4, 112, [1, 1, 3]);
        },
        bad(
            4,
            LayerFault::DType {
                operand: Operand::Input(1),
                expected: DType::I8,
                found: DType::F32,
            },
        ),
    );
}

#[test]
fn quantization_must_carry_through_layers_that_cannot_rescale() {
    let mismatch = LayerFault::QuantMismatch {
        operand: Operand::Output,
    };
    // Max pool without rescale (t2 differs from t1).
    refused(|m| set_quant(m, 2, 0.2, 5), bad(1, mismatch));
    // Clamp (t4 differs from t3).
    refused(|m| set_quant(m, 4, 0.08, 0), bad(3, mismatch));
    // Transpose (t6 differs from t5).
    refused(|m| set_quant(m, 6, 0.125, 1), bad(5, mismatch));
    // Pad (t7 differs from t6).
    refused(|m| set_quant(m, 7, 0.12, 2), bad(6, mismatch));
    // With a rescale, the pool output has its own quantization.
    let mut spec = int8_model();
    set_quant(&mut spec, 2, 0.2, 5);
    max_pool(&mut spec).rescale = Some(Requant::from_real(0.5).unwrap());
    assert_eq!(load(&spec), Ok(()));
    // Softmax output: scale 1/256, zero point -128.
    refused(
        |m| set_quant(m, 11, 1.0 / 256.0, 0),
        bad(10, LayerFault::SoftmaxOutputQuant),
    );
    refused(
        |m| set_quant(m, 11, 1.0 / 255.0, -128),
        bad(10, LayerFault::SoftmaxOutputQuant),
    );
}

#[test]
fn int8_parameter_faults() {
    refused(
        |m| conv(m).conv.activation = Activation::Relu,
        bad(0, param(ParamFault::FusedActivation)),
    );
    refused(
        |m| max_pool(m).pool.activation = Activation::Sigmoid,
        bad(1, param(ParamFault::FusedActivation)),
    );
    refused(
        |m| conv(m).clamp = Clamp { min: 10, max: 9 },
        bad(0, param(ParamFault::ClampBounds { min: 10, max: 9 })),
    );
    refused(
        |m| m.layers[3].op = Op::ClampI8(Clamp { min: 1, max: -1 }),
        bad(3, param(ParamFault::ClampBounds { min: 1, max: -1 })),
    );
    // A per-channel multiplier below 2^30 (the second channel).
    refused(
        |m| {
            let at = conv(m).requant.multipliers.offset as usize + 4;
            m.weights[at..at + 4].copy_from_slice(&5i32.to_le_bytes());
        },
        bad(0, param(ParamFault::Requant)),
    );
    // A shift out of range.
    refused(
        |m| {
            let at = dense(m).requant.shifts.offset as usize;
            m.weights[at..at + 4].copy_from_slice(&31i32.to_le_bytes());
        },
        bad(9, param(ParamFault::Requant)),
    );
    refused(
        |m| {
            let Op::AddI8(add) = &mut m.layers[4].op else {
                unreachable!()
            };
            add.output_requant = Requant {
                multiplier: 1,
                shift: 0,
            };
        },
        bad(4, param(ParamFault::Requant)),
    );
    refused(
        |m| {
            max_pool(m).rescale = Some(Requant {
                multiplier: -(1 << 29),
                shift: 0,
            })
        },
        bad(1, param(ParamFault::Requant)),
    );
    // Zero is a normalized factor.
    let mut spec = int8_model();
    max_pool(&mut spec).rescale = Some(Requant::default());
    assert_eq!(load(&spec), Ok(()));
}

#[test]
fn accumulator_bound_is_checked_per_output_channel() {
    // Conv: 3·3·2 = 18 products per output; channel 2's bias leaves no room for them.
    refused(
        |m| {
            let at = conv(m).conv.bias.offset as usize + 8;
            m.weights[at..at + 4].copy_from_slice(&(i32::MAX - 18 * (1 << 14) + 1).to_le_bytes());
        },
        bad(
            0,
            LayerFault::AccumulatorOverflow {
                channel: 2,
                products: 18,
            },
        ),
    );
    // Exactly at the bound is fine.
    let mut spec = int8_model();
    let at = conv(&mut spec).conv.bias.offset as usize + 8;
    spec.weights[at..at + 4].copy_from_slice(&(i32::MAX - 18 * (1 << 14)).to_le_bytes());
    assert_eq!(load(&spec), Ok(()));
    // Dense: 8 products per output.
    refused(
        |m| {
            let at = dense(m).bias.offset as usize;
            m.weights[at..at + 4].copy_from_slice(&i32::MIN.to_le_bytes());
        },
        bad(
            9,
            LayerFault::AccumulatorOverflow {
                channel: 0,
                products: 8,
            },
        ),
    );
}

#[test]
fn int8_pool_window_is_bounded() {
    // A 4096 x 4096 window over a 16 MiB input: the declared sizes are all the loader reads.
    let pool = |kernel| {
        let x = q8(0, 0, [4096, 4096, 1], 0.1, 0);
        let y = q8(1, 1 << 24, [1, 1, 1], 0.1, 0);
        let mut spec = Spec::new((1 << 24) + 4, x, y);
        let p = PoolI8 {
            pool: Pool {
                kind: PoolKind::Average {
                    count_include_pad: false,
                },
                kernel,
                stride: [4096, 4096],
                pad: [0; 4],
                activation: Activation::Identity,
            },
            rescale: None,
            clamp: Clamp::FULL,
        };
        spec.push(layer(Op::PoolI8(p), x, y));
        load(&spec)
    };
    assert_eq!(
        pool([4096, 4096]),
        Err(bad(
            0,
            param(ParamFault::PoolWindowTooLarge {
                area: 1 << 24,
                max: 1 << 23,
            })
        ))
    );
    assert_eq!(pool([2048, 4096]), Ok(()));
}

#[test]
fn int8_span_faults() {
    let span = |role, fault| LayerFault::Span { role, fault };
    refused(
        |m| {
            let Op::LookupI8 { table } = &mut m.layers[7].op else {
                unreachable!()
            };
            table.len = 255;
        },
        bad(
            7,
            span(
                SpanRole::Table,
                SpanFault::Length {
                    expected: 256,
                    found: 255,
                },
            ),
        ),
    );
    let mut original = int8_model();
    let Op::SoftmaxI8 { exp_table } = original.layers[10].op else {
        unreachable!()
    };
    refused(
        |m| {
            m.layers[10].op = Op::SoftmaxI8 {
                exp_table: Span {
                    offset: exp_table.offset + 1,
                    ..exp_table
                },
            }
        },
        bad(
            10,
            span(
                SpanRole::Table,
                SpanFault::Misaligned {
                    offset: exp_table.offset + 1,
                },
            ),
        ),
    );
    let bias = conv(&mut original).conv.bias;
    refused(
        |m| conv(m).conv.weights.len -= 1,
        bad(
            0,
            span(
                SpanRole::Weights,
                SpanFault::Length {
                    expected: 54,
                    found: 53,
                },
            ),
        ),
    );
    refused(
        |m| conv(m).conv.pad_values.len = 1,
        bad(
            0,
            span(
                SpanRole::PadValues,
                SpanFault::Length {
                    expected: 2,
                    found: 1,
                },
            ),
        ),
    );
    refused(
        |m| conv(m).conv.bias.offset += 2,
        bad(
            0,
            span(
                SpanRole::Bias,
                SpanFault::Misaligned {
                    offset: bias.offset + 2,
                },
            ),
        ),
    );
    refused(
        |m| dense(m).requant.multipliers.len = 16,
        bad(
            9,
            span(
                SpanRole::Multipliers,
                SpanFault::Length {
                    expected: 20,
                    found: 16,
                },
            ),
        ),
    );
    refused(
        |m| dense(m).requant.shifts.offset = 1 << 20,
        bad(
            9,
            span(
                SpanRole::Shifts,
                SpanFault::OutOfBounds {
                    end: (1 << 20) + 20,
                    weights_len: int8_model().weights.len() as u32,
                },
            ),
        ),
    );
    refused(
        |m| {
            let Op::AffineI8(a) = &mut m.layers[2].op else {
                unreachable!()
            };
            a.offset.len = 8;
        },
        bad(
            2,
            span(
                SpanRole::Offset,
                SpanFault::Length {
                    expected: 12,
                    found: 8,
                },
            ),
        ),
    );
    // Empty pad values (the border reads the input zero point) are fine.
    let mut spec = int8_model();
    conv(&mut spec).conv.pad_values = Span::default();
    assert_eq!(load(&spec), Ok(()));
}

#[test]
fn int8_wire_format_is_pinned() {
    // Variant 14, then min and max as one two's-complement byte each (docs/FORMAT.md).
    assert_eq!(
        postcard_bytes(&Op::ClampI8(Clamp { min: -2, max: 100 })),
        [14, 0xFE, 100]
    );
    // Requant: zigzag varints; 2^30 zigzags to 2^31, shift 1 to 2.
    assert_eq!(
        postcard_bytes(&Requant::IDENTITY),
        [0x80, 0x80, 0x80, 0x80, 0x08, 2]
    );
    // Variant 17: pad [u16; 4] and interior [u16; 2] as varints, then the i8 fill.
    assert_eq!(
        postcard_bytes(&Op::PadI8 {
            pad: [1, 0, 200, 0],
            interior: [3, 0],
            value: -1
        }),
        [17, 1, 0, 0xC8, 0x01, 0, 3, 0, 0xFF]
    );
    // Variant 18: four spans (varint offset, len), then the int16 clamp as zigzag varints.
    let wide = DenseI8Wide {
        weights: Span { offset: 0, len: 6 },
        bias: Span { offset: 8, len: 8 },
        requant: ChannelRequant {
            multipliers: Span { offset: 16, len: 8 },
            shifts: Span { offset: 24, len: 8 },
        },
        clamp: ClampI16 { min: -1, max: 300 },
        layout: DenseLayout::RowsI8,
    };
    assert_eq!(
        postcard_bytes(&Op::DenseI8Wide(wide)),
        [18, 0, 6, 8, 8, 16, 8, 24, 8, 0x01, 0xD8, 0x04, 0]
    );
    // Version 11: the layout last, variant 1 for int16 quads.
    let quads = DenseI8Wide {
        layout: DenseLayout::QuadsI16,
        ..wide
    };
    assert_eq!(
        postcard_bytes(&Op::DenseI8Wide(quads)),
        [18, 0, 6, 8, 8, 16, 8, 24, 8, 0x01, 0xD8, 0x04, 1]
    );
    // DType::I16 is variant 2.
    assert_eq!(postcard_bytes(&DType::I16), [2]);
}

#[test]
fn new_faults_display_actionable_messages() {
    let texts = [
        (
            std::format!("{}", TensorFault::QuantMissing),
            "no quantization",
        ),
        (std::format!("{}", TensorFault::QuantScale), "scale"),
        (
            std::format!("{}", TensorFault::QuantZeroPoint { zero_point: 200 }),
            "200",
        ),
        (std::format!("{}", ParamFault::FusedActivation), "Identity"),
        (std::format!("{}", ParamFault::Requant), "multiplier"),
        (
            std::format!("{}", ParamFault::ClampBounds { min: 3, max: 2 }),
            "min 3 > max 2",
        ),
        (
            std::format!("{}", ParamFault::PoolWindowTooLarge { area: 9, max: 8 }),
            "9 elements",
        ),
        (
            std::format!(
                "{}",
                LayerFault::QuantMismatch {
                    operand: Operand::Output
                }
            ),
            "output quantization",
        ),
        (std::format!("{}", LayerFault::SoftmaxOutputQuant), "1/256"),
        (
            std::format!(
                "{}",
                LayerFault::AccumulatorOverflow {
                    channel: 4,
                    products: 18
                }
            ),
            "output channel 4",
        ),
        (std::format!("{}", SpanRole::Multipliers), "multipliers"),
        (std::format!("{}", SpanRole::Table), "table"),
    ];
    for (text, needle) in texts {
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random edits of an int8 model's payload (int8 output, or the int16 dense + softmax
        /// head): whatever loads runs, raw and through floats.
        #[test]
        fn mutated_int8_payload_never_panics(edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6),
                                             wide in any::<bool>(), quads in any::<bool>()) {
            let mut spec = if wide { wide_softmax_model() } else { int8_model() };
            if quads && !wide {
                to_quads(&mut spec);
            }
            let mut blob = spec.blob();
            let len = blob.bytes().len();
            for (at, value) in edits {
                let at = HEADER_LEN + usize::from(at) % (len - HEADER_LEN);
                blob.bytes_mut()[at] = value;
            }
            fix_crc(blob.bytes_mut());
            if let Ok(model) = Model::new_checked(blob.bytes()) {
                if model.arena_bytes() <= 1 << 16 {
                    let mut arena = Blob::zeroed(model.arena_bytes());
                    let input = std::vec![0.5f32; model.input().len()];
                    let mut output = std::vec![0.0f32; model.output().len()];
                    prop_assert_eq!(model.run_f32(arena.bytes_mut(), &input, &mut output), Ok(()));
                    let input = std::vec![-7i8; model.input().len()];
                    match (model.input().dtype, model.output().dtype) {
                        (DType::I8, DType::I8) => {
                            let mut output = std::vec![0i8; model.output().len()];
                            prop_assert_eq!(model.run_i8(arena.bytes_mut(), &input, &mut output), Ok(()));
                        }
                        (DType::I8, DType::I16) => {
                            let mut output = std::vec![0i16; model.output().len()];
                            prop_assert_eq!(model.run_i8(arena.bytes_mut(), &input, &mut output), Ok(()));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The int16 output of `int8_model`'s dense layer, in place of `t10` (no softmax after it).
pub(crate) const Q10W: TensorDesc = TensorDesc {
    view: None,
    id: 10,
    offset: 72,
    dims: [1, 1, 5],
    dtype: DType::I16,
    quant: Some(Quant {
        scale: 0.05 / 256.0,
        zero_point: 0,
    }),
};

/// `int8_model` ending in a dense layer with an int16 output (`t10` becomes int16, 72..82, and
/// is the model output; the softmax is dropped).
pub(crate) fn wide_model() -> Spec {
    let mut spec = int8_model();
    spec.layers.pop();
    let last = spec.layers.pop().unwrap();
    let Op::DenseI8(d) = last.op else {
        unreachable!()
    };
    let reals: Vec<f64> = (0..5)
        .map(|o| scale(&Q9) * 0.02 * (1.0 + o as f64 / 4.0) / scale(&Q10W))
        .collect();
    let wide = DenseI8Wide {
        weights: d.weights,
        bias: d.bias,
        requant: push_requant(&mut spec, &reals),
        clamp: ClampI16 {
            min: -20000,
            max: 30000,
        },
        layout: DenseLayout::RowsI8,
    };
    spec.push(layer(Op::DenseI8Wide(wide), Q9, Q10W));
    spec.info.output = Q10W;
    spec
}

/// `wide_model` with an int16 softmax after the wide dense (`t11`, 84..94, the model output).
pub(crate) fn wide_softmax_model() -> Spec {
    let mut spec = wide_model();
    let s_in = scale(&Q10W);
    let table = |spec: &mut Spec, step: f64| {
        push_words(
            spec,
            (0..256).map(|i| {
                let e = libm::exp(-s_in * step * f64::from(i)) * 2147483648.0;
                (libm::round(e) as u32).to_le_bytes()
            }),
        )
    };
    let exp_hi = table(&mut spec, 256.0);
    let exp_lo = table(&mut spec, 1.0);
    let out = TensorDesc {
        view: None,
        id: 11,
        offset: 84,
        dims: [1, 1, 5],
        dtype: DType::I16,
        quant: Some(Quant {
            scale: 1.0 / 32768.0,
            zero_point: 0,
        }),
    };
    spec.push(layer(Op::SoftmaxI16 { exp_hi, exp_lo }, Q10W, out));
    spec.info.output = out;
    spec
}

#[test]
fn wide_output_models_load() {
    assert_eq!(load(&wide_model()), Ok(()));
    assert_eq!(load(&wide_softmax_model()), Ok(()));
    // The int16 softmax's output grid is fixed.
    let mut spec = wide_softmax_model();
    let mut q = spec.info.output;
    q.quant = Some(Quant {
        scale: 1.0 / 256.0,
        zero_point: 0,
    });
    spec.layers[10].output = q;
    spec.info.output = q;
    assert_eq!(load(&spec), Err(bad(10, LayerFault::SoftmaxOutputQuant)));
}

#[test]
fn int16_tensors_only_leave_a_wide_dense() {
    let load_wide = |edit: &dyn Fn(&mut Spec)| {
        let mut spec = wide_model();
        edit(&mut spec);
        load(&spec)
    };
    // A dense with an int8 record cannot write int16.
    let narrow = |s: &mut Spec| {
        let Op::DenseI8Wide(w) = s.layers[9].op else {
            unreachable!()
        };
        s.layers[9].op = Op::DenseI8(DenseI8 {
            weights: w.weights,
            bias: w.bias,
            requant: w.requant,
            clamp: Clamp::FULL,
            layout: DenseLayout::RowsI8,
        });
    };
    assert_eq!(
        load_wide(&narrow),
        Err(bad(
            9,
            LayerFault::DType {
                operand: Operand::Output,
                expected: DType::I8,
                found: DType::I16
            }
        ))
    );
    // An int8 layer does not read int16 (a clamp here)...
    let clamp_after = |s: &mut Spec| {
        let t = TensorDesc {
            id: 11,
            offset: 84,
            ..Q10W
        };
        s.push(layer(Op::ClampI8(Clamp::FULL), Q10W, t));
        s.info.output = t;
    };
    assert_eq!(
        load_wide(&clamp_after),
        Err(bad(
            10,
            LayerFault::DType {
                operand: Operand::Input(0),
                expected: DType::I8,
                found: DType::I16
            }
        ))
    );
    // ...but the element-generic transpose moves int16 (an int16 model input on its way to a
    // 16×8 convolution), keeping the quantization.
    let transpose_after = |s: &mut Spec| {
        let t = TensorDesc {
            id: 11,
            offset: 84,
            ..Q10W
        };
        s.push(layer(Op::Transpose(Transpose { perm: [0, 1, 2] }), Q10W, t));
        s.info.output = t;
    };
    assert_eq!(load_wide(&transpose_after), Ok(()));
    // Bounds and zero point are checked in the int16 domain.
    let crossed = |s: &mut Spec| {
        let Op::DenseI8Wide(w) = &mut s.layers[9].op else {
            unreachable!()
        };
        w.clamp = ClampI16 { min: 300, max: -5 };
    };
    assert_eq!(
        load_wide(&crossed),
        Err(bad(9, param(ParamFault::ClampBounds { min: 300, max: -5 })))
    );
    let zero_point = |s: &mut Spec| {
        let mut q = Q10W;
        q.quant = Some(Quant {
            scale: 0.01,
            zero_point: 40000,
        });
        s.layers[9].output = q;
        s.info.output = q;
    };
    assert_eq!(
        load_wide(&zero_point),
        Err(LoadError::BadModelTensor {
            tensor: Boundary::Output,
            fault: TensorFault::QuantZeroPoint { zero_point: 40000 }
        })
    );
    // An int16 model input is refused by an int8 reader (a 16×8 convolution may read it).
    let mut spec = int8_model();
    edit_tensor(&mut spec, QX.id, |d| {
        d.dtype = DType::I16;
        d.offset = 144;
    });
    spec.info.arena_bytes = 208;
    assert_eq!(
        load(&spec),
        Err(bad(
            0,
            LayerFault::DType {
                operand: Operand::Input(0),
                expected: DType::I8,
                found: DType::I16
            }
        ))
    );
}

/// A dense layer whose weights hold fewer columns than its input has values reads the input as
/// positions of that many features and sums them (a global average pooling folded in): the
/// weights must tile the input exactly, and the accumulator bound counts every position's products.
#[test]
fn dense_over_positions_must_tile_its_input() {
    // t9 is [2, 2, 2]: 4 positions of 2 features for 5 outputs.
    let mut spec = int8_model();
    dense(&mut spec).weights.len = 5 * 2;
    assert_eq!(load(&spec), Ok(()));
    let at = dense(&mut spec).bias.offset as usize;
    spec.weights[at..at + 4].copy_from_slice(&i32::MIN.to_le_bytes());
    assert_eq!(
        load(&spec),
        Err(bad(
            9,
            LayerFault::AccumulatorOverflow {
                channel: 0,
                products: 8,
            },
        ))
    );
    // 3 features do not tile 8 values: the length check reports the one-position layout.
    refused(
        |m| dense(m).weights.len = 5 * 3,
        bad(
            9,
            LayerFault::Span {
                role: SpanRole::Weights,
                fault: SpanFault::Length {
                    expected: 40,
                    found: 15,
                },
            },
        ),
    );
}

// Tensors of `int16_model` (16×8: int8 weights, int16 activations between convolutions):
//   x  [4,4,2] i8    0..32   model input (room for int16: 0..64)       s 0.05   zp -3
//   a  [4,4,4] i16  64..192  L0 conv 3x3 pad 1 (i8 pad values), ReLU   s 0.001  zp 0
//   b  [4,4,4] i16 192..320  L1 depthwise 3x3 pad 1 (i16 pad values)  s 0.002  zp 0
//   y  [4,4,3] i8  320..368  L2 conv 1x1, clamp [-100, 127], output    s 0.1    zp 4
pub(crate) const Q16X: TensorDesc = q8(0, 0, [4, 4, 2], 0.05, -3);
pub(crate) const Q16A: TensorDesc = q16(1, 64, [4, 4, 4], 0.001);
pub(crate) const Q16B: TensorDesc = q16(2, 192, [4, 4, 4], 0.002);
pub(crate) const Q16Y: TensorDesc = q8(3, 320, [4, 4, 3], 0.1, 4);

/// A symmetric int16 activation description (zero point 0, as the host writes them).
pub(crate) const fn q16(id: u16, offset: u32, dims: [u16; 3], scale: f32) -> TensorDesc {
    TensorDesc {
        dtype: DType::I16,
        ..q8(id, offset, dims, scale, 0)
    }
}

/// Appends i16 values at the next even offset.
pub(crate) fn push_i16(spec: &mut Spec, values: &[i16]) -> Span {
    if spec.weights.len() % 2 != 0 {
        spec.weights.push(0);
    }
    let offset = spec.weights.len() as u32;
    spec.weights
        .extend(values.iter().flat_map(|v| v.to_le_bytes()));
    Span {
        offset,
        len: values.len() as u32 * 2,
    }
}

fn conv_geometry(kernel: u16, groups: u16, spans: [Span; 3]) -> Conv2d {
    let pad = kernel / 2;
    Conv2d {
        kernel: [kernel; 2],
        stride: [1, 1],
        dilation: [1, 1],
        pad: [pad; 4],
        groups,
        weights: spans[0],
        bias: spans[1],
        pad_values: spans[2],
        activation: Activation::Identity,
    }
}

/// Three 16×8 convolutions: int8 → int16, int16 → int16 (depthwise), int16 → int8.
pub(crate) fn int16_model() -> Spec {
    let mut m = Spec::new(368, Q16X, Q16Y);
    m.info.output_rank = 3;
    let mut g = Gen(11);
    push_i8(&mut m, &[0; 1]);
    let layer_of =
        |m: &mut Spec, g: &mut Gen, (x, y): (TensorDesc, TensorDesc), k: u16, groups: u16| {
            let out_c = y.dims[2] as usize;
            let per_out = (k * k) as usize * (x.dims[2] / groups) as usize;
            let weights = push_i8(m, &g.i8s(out_c * per_out));
            let pad_values = match (k, x.dtype) {
                (1, _) => Span::default(),
                (_, DType::I16) => push_i16(m, &g.i16s(x.dims[2] as usize)),
                _ => push_i8(m, &g.i8s(x.dims[2] as usize)),
            };
            let bias: Vec<i32> = (0..out_c).map(|_| g.range(-(1 << 18), 1 << 18)).collect();
            let bias = push_i32(m, &bias);
            let reals: Vec<f64> = (0..out_c)
                .map(|o| scale(&x) * 0.01 * (1.0 + o as f64 / 8.0) / scale(&y))
                .collect();
            (
                conv_geometry(k, groups, [weights, bias, pad_values]),
                push_requant(m, &reals),
            )
        };
    let (c0, r0) = layer_of(&mut m, &mut g, (Q16X, Q16A), 3, 1);
    let (c1, r1) = layer_of(&mut m, &mut g, (Q16A, Q16B), 3, 4);
    let (c2, r2) = layer_of(&mut m, &mut g, (Q16B, Q16Y), 1, 1);
    let relu = ClampI16 {
        min: 0,
        max: i16::MAX,
    };
    m.push(layer(
        Op::Conv2dI16(Conv2dI16 {
            conv: c0,
            requant: r0,
            clamp: relu,
        }),
        Q16X,
        Q16A,
    ))
    .push(layer(
        Op::Conv2dI16(Conv2dI16 {
            conv: c1,
            requant: r1,
            clamp: ClampI16::FULL,
        }),
        Q16A,
        Q16B,
    ))
    .push(layer(
        Op::Conv2dI16(Conv2dI16 {
            conv: c2,
            requant: r2,
            clamp: ClampI16 {
                min: -100,
                max: 127,
            },
        }),
        Q16B,
        Q16Y,
    ));
    m
}

fn conv16(spec: &mut Spec, index: usize) -> &mut Conv2dI16 {
    op(spec, index, |o| match o {
        Op::Conv2dI16(c) => Some(c),
        _ => None,
    })
}

#[test]
fn int16_activations_load_between_convolutions() {
    let spec = int16_model();
    assert_eq!(load(&spec), Ok(()));
    // The int16 pad values sit at even offsets (the builder aligned them).
    assert_eq!(conv16(&mut spec.clone(), 1).conv.pad_values.len, 8);
}

/// Each side of a 16×8 convolution is int8 or int16, not both int8, and never f32.
#[test]
fn int16_convolution_element_types() {
    let dtype = |operand, expected, found| LayerFault::DType {
        operand,
        expected,
        found,
    };
    // a as int8: L0 would be int8 → int8.
    let mut spec = int16_model();
    edit_tensor(&mut spec, 1, |d| d.dtype = DType::I8);
    assert_eq!(
        load(&spec),
        Err(bad(0, dtype(Operand::Output, DType::I16, DType::I8)))
    );
    // An int16 model input is fine: the first layer reads int16 (pad values then i16).
    let mut spec = int16_model();
    edit_tensor(&mut spec, 0, |d| d.dtype = DType::I16);
    let pad = push_i16(&mut spec, &[-300, 1200]);
    conv16(&mut spec, 0).conv.pad_values = pad;
    assert_eq!(load(&spec), Ok(()));
    // y as int16 is fine (int16 → int16; the output head may be int16).
    let mut spec = int16_model();
    edit_tensor(&mut spec, 3, |d| d.dtype = DType::I16);
    spec.info.arena_bytes = 416;
    assert_eq!(load(&spec), Ok(()));
    // An f32 operand.
    let mut spec = int16_model();
    edit_tensor(&mut spec, 2, |d| {
        d.dtype = DType::F32;
        d.quant = None;
    });
    spec.info.arena_bytes = 576;
    assert_eq!(
        load(&spec),
        Err(bad(1, dtype(Operand::Output, DType::I16, DType::F32)))
    );
}

/// Pad values come in the input's element type, and an int16 input makes every product up to
/// 2^22: the accumulator bound is checked with that.
#[test]
fn int16_convolution_pad_values_and_accumulator() {
    let mut spec = int16_model();
    let c = conv16(&mut spec, 1);
    c.conv.pad_values.len = 4;
    assert_eq!(
        load(&spec),
        Err(bad(
            1,
            LayerFault::Span {
                role: SpanRole::PadValues,
                fault: SpanFault::Length {
                    expected: 8,
                    found: 4
                },
            }
        ))
    );
    let mut spec = int16_model();
    let c = conv16(&mut spec, 1);
    c.conv.pad_values.offset += 1;
    assert!(matches!(
        load(&spec),
        Err(LoadError::BadLayer {
            layer: 1,
            what: LayerFault::Span {
                role: SpanRole::PadValues,
                fault: SpanFault::Misaligned { .. }
            }
        })
    ));
    // 9 products of int8 inputs would fit next to this bias, 9 of int16 inputs do not.
    let big = i32::MAX - (1 << 20);
    assert!(crate::quant::contract::accumulator_fits(9, big));
    let mut spec = int16_model();
    let at = conv16(&mut spec, 1).conv.bias.offset as usize + 4 * 2;
    spec.weights[at..at + 4].copy_from_slice(&big.to_le_bytes());
    assert_eq!(
        load(&spec),
        Err(bad(
            1,
            LayerFault::AccumulatorOverflow {
                channel: 2,
                products: 9
            }
        ))
    );
    // The same bias on the int8-input layer L0 (18 products of 2^14) loads.
    let mut spec = int16_model();
    let at = conv16(&mut spec, 0).conv.bias.offset as usize;
    spec.weights[at..at + 4].copy_from_slice(&big.to_le_bytes());
    assert_eq!(load(&spec), Ok(()));
}
