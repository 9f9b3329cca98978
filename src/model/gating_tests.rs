//! Products of two activations (`Mul`, `MulI8`) and the activations of format version 6: small
//! models that load and run as their kernels compute, and the loader's refusals of malformed
//! records.

extern crate std;

use std::vec::Vec;

use super::int8_tests::q8;
use super::*;
use crate::format::*;
use crate::kernels::reference as k;
use crate::testutil::*;

// f32: x [2, 2, 3] -> hard swish t1 -> global average pool t2 [1, 1, 3] -> Mul(t1, t2) -> t3
// -> Mul(t3, t1) element-wise with a fused SiLU -> t4 (output).
const X: TensorDesc = desc(0, 0, [2, 2, 3]);
const T1: TensorDesc = desc(1, 48, [2, 2, 3]);
const T2: TensorDesc = desc(2, 96, [1, 1, 3]);
const T3: TensorDesc = desc(3, 112, [2, 2, 3]);
const T4: TensorDesc = desc(4, 0, [2, 2, 3]);

fn global_pool() -> Op {
    Op::Pool(Pool {
        kind: PoolKind::Average {
            count_include_pad: false,
        },
        kernel: [2, 2],
        stride: [1, 1],
        pad: [0; 4],
        activation: Activation::Identity,
    })
}

fn gated_f32() -> Spec {
    let mut m = Spec::new(160, X, T4);
    m.info.output_rank = 3;
    m.push(layer(Op::Activation(Activation::HardSwish), X, T1))
        .push(layer(global_pool(), T1, T2))
        .push(layer2(
            Op::Mul {
                activation: Activation::Identity,
            },
            T1,
            T2,
            T3,
        ))
        .push(layer2(
            Op::Mul {
                activation: Activation::Silu,
            },
            T3,
            T1,
            T4,
        ));
    m
}

fn load(spec: &Spec) -> Result<(), LoadError> {
    let blob = spec.blob();
    Model::new_checked(blob.bytes()).map(|_| ())
}

fn refused(spec: fn() -> Spec, edit: impl FnOnce(&mut Spec), expected: LoadError) {
    let mut s = spec();
    edit(&mut s);
    assert_eq!(load(&s), Err(expected));
}

fn bad(layer: u16, what: LayerFault) -> LoadError {
    LoadError::BadLayer { layer, what }
}

#[test]
fn f32_gating_runs_as_its_kernels_compute() {
    let spec = gated_f32();
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let x: Vec<f32> = values(12, 3).iter().map(|v| v * 4.0).collect();
    let mut arena = Blob::zeroed(160);
    let mut y = [0f32; 12];
    model.run_f32(arena.bytes_mut(), &x, &mut y).unwrap();

    let mut t1 = [0f32; 12];
    k::elementwise::activation(&Activation::HardSwish, &x, &mut t1);
    // The global average per channel (4 positions).
    let t2: Vec<f32> = (0..3)
        .map(|c| (t1[c] + t1[3 + c] + t1[6 + c] + t1[9 + c]) / 4.0)
        .collect();
    let mut want = [0f32; 12];
    for i in 0..12 {
        let gated = t1[i] * t2[i % 3];
        let product = gated * t1[i];
        want[i] = product * k::elementwise::sigmoid(product);
    }
    for (a, b) in y.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            "{y:?} vs {want:?}"
        );
    }
}

#[test]
fn f32_gating_faults() {
    // A gate of another channel count, or not one value per channel.
    refused(
        gated_f32,
        |s| s.layers[2].inputs[1].dims = [1, 1, 2],
        bad(
            2,
            LayerFault::Shape {
                operand: Operand::Input(1),
                expected: [2, 2, 3],
                found: [1, 1, 2],
            },
        ),
    );
    refused(
        gated_f32,
        |s| s.layers[2].inputs[1].dims = [1, 3, 1],
        bad(
            2,
            LayerFault::Shape {
                operand: Operand::Input(1),
                expected: [2, 2, 3],
                found: [1, 3, 1],
            },
        ),
    );
    // One operand only.
    refused(
        gated_f32,
        |s| s.layers[2].input_count = 1,
        bad(
            2,
            LayerFault::InputCount {
                expected: 2,
                found: 1,
            },
        ),
    );
    // An output that is not the first input's shape.
    refused(
        gated_f32,
        |s| {
            s.layers[3].output.dims = [1, 1, 12];
            s.info.output.dims = [1, 1, 12];
        },
        bad(
            3,
            LayerFault::Shape {
                operand: Operand::Output,
                expected: [2, 2, 3],
                found: [1, 1, 12],
            },
        ),
    );
    // The new activations' parameters.
    for (alpha, beta) in [(f32::NAN, 0.5), (0.2, f32::INFINITY)] {
        refused(
            gated_f32,
            |s| s.layers[0].op = Op::Activation(Activation::HardSigmoid { alpha, beta }),
            bad(0, LayerFault::Param(ParamFault::NotFinite)),
        );
    }
    // An int8 record between f32 tensors.
    refused(
        gated_f32,
        |s| {
            s.layers[2].op = Op::MulI8(MulI8 {
                requant: Requant::IDENTITY,
                clamp: Clamp::FULL,
            })
        },
        bad(
            2,
            LayerFault::DType {
                operand: Operand::Input(0),
                expected: DType::I8,
                found: DType::F32,
            },
        ),
    );
}

// int8: x [2, 2, 3] -> MulI8(x, x) element-wise with a fused ReLU -> t1 -> global average
// t2 [1, 1, 3] -> MulI8(t1, t2) per channel -> t3 (output).
const QX: TensorDesc = q8(0, 0, [2, 2, 3], 0.05, -3);
const Q1: TensorDesc = q8(1, 12, [2, 2, 3], 0.01, -100);
const Q2: TensorDesc = q8(2, 24, [1, 1, 3], 0.01, -100);
const Q3: TensorDesc = q8(3, 28, [2, 2, 3], 0.002, 4);

fn int8_pool() -> Op {
    let Op::Pool(pool) = global_pool() else {
        unreachable!()
    };
    Op::PoolI8(PoolI8 {
        pool,
        rescale: None,
        clamp: Clamp::FULL,
    })
}

fn mul_i8(real: f64, clamp: Clamp) -> Op {
    Op::MulI8(MulI8 {
        requant: Requant::from_real(real).unwrap(),
        clamp,
    })
}

fn gated_i8() -> Spec {
    let mut m = Spec::new(40, QX, Q3);
    m.info.output_rank = 3;
    m.push(layer2(
        mul_i8(
            0.05 * 0.05 / 0.01,
            Clamp {
                min: -100,
                max: 127,
            },
        ),
        QX,
        QX,
        Q1,
    ))
    .push(layer(int8_pool(), Q1, Q2))
    .push(layer2(mul_i8(0.01 * 0.01 / 0.002, Clamp::FULL), Q1, Q2, Q3));
    m
}

#[test]
fn int8_gating_runs_as_its_kernels_compute() {
    use k::int8::mul::{mul, MulQuant};
    use k::int8::OutputQuant;
    let spec = gated_i8();
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let x: Vec<i8> = (0..12).map(|i| (i * 23 % 256) as u8 as i8).collect();
    let mut arena = Blob::zeroed(40);
    let mut y = [0i8; 12];
    model.run_i8(arena.bytes_mut(), &x, &mut y).unwrap();

    let quant = |l: usize, zp: [i8; 2], out: &TensorDesc| {
        let Op::MulI8(p) = spec.layers[l].op else {
            unreachable!()
        };
        MulQuant {
            input_zero_points: zp,
            requant: p.requant,
            output: OutputQuant {
                zero_point: out.quant.unwrap().zero_point as i8,
                clamp: p.clamp,
            },
        }
    };
    let mut t1 = [0i8; 12];
    mul(&quant(0, [-3, -3], &Q1), &x, &x, &mut t1);
    assert!(
        t1.iter().all(|&v| v >= -100),
        "the fused ReLU clamps at the zero point"
    );
    let mut t2 = [0i8; 3];
    k::int8::pool::pool(
        &crate::kernels::PoolGeometry {
            kind: PoolKind::Average {
                count_include_pad: false,
            },
            kernel: [2, 2],
            stride: [1, 1],
            pad: [0; 4],
        },
        &k::int8::pool::PoolQuant {
            input_zero_point: -100,
            rescale: None,
            output: OutputQuant {
                zero_point: -100,
                clamp: Clamp::FULL,
            },
        },
        [2, 2, 3],
        &t1,
        [1, 1, 3],
        &mut t2,
    );
    let mut want = [0i8; 12];
    mul(&quant(2, [-100, -100], &Q3), &t1, &t2, &mut want);
    assert_eq!(y, want);
}

#[test]
fn int8_gating_faults() {
    // A factor that is not normalized.
    refused(
        gated_i8,
        |s| {
            s.layers[2].op = Op::MulI8(MulI8 {
                requant: Requant {
                    multiplier: 1,
                    shift: 0,
                },
                clamp: Clamp::FULL,
            })
        },
        bad(2, LayerFault::Param(ParamFault::Requant)),
    );
    // Crossed clamp bounds.
    refused(
        gated_i8,
        |s| {
            s.layers[2].op = mul_i8(0.05, Clamp { min: 5, max: -5 });
        },
        bad(
            2,
            LayerFault::Param(ParamFault::ClampBounds { min: 5, max: -5 }),
        ),
    );
    // The gate's dims must be the input's or [1, 1, C].
    refused(
        gated_i8,
        |s| {
            s.layers[1].output.dims = [1, 3, 1];
            s.layers[2].inputs[1].dims = [1, 3, 1];
        },
        bad(
            1,
            LayerFault::Shape {
                operand: Operand::Output,
                expected: [1, 1, 3],
                found: [1, 3, 1],
            },
        ),
    );
    refused(
        gated_i8,
        |s| s.layers[2].inputs[1].dims = [3, 1, 1],
        bad(
            2,
            LayerFault::Shape {
                operand: Operand::Input(1),
                expected: [2, 2, 3],
                found: [3, 1, 1],
            },
        ),
    );
    // An f32 record between int8 tensors.
    refused(
        gated_i8,
        |s| {
            s.layers[2].op = Op::Mul {
                activation: Activation::Identity,
            }
        },
        bad(
            2,
            LayerFault::DType {
                operand: Operand::Input(0),
                expected: DType::F32,
                found: DType::I8,
            },
        ),
    );
}

#[test]
fn gating_wire_format_is_pinned() {
    // Variant indices: Mul is 25, MulI8 26; HardSigmoid is activation 5, Silu 8.
    let mul = Op::Mul {
        activation: Activation::HardSigmoid {
            alpha: 0.5,
            beta: 1.0,
        },
    };
    let mut want = std::vec![25, 5];
    want.extend(0.5f32.to_le_bytes());
    want.extend(1.0f32.to_le_bytes());
    assert_eq!(postcard_bytes(&mul), want);
    let q = Op::MulI8(MulI8 {
        requant: Requant {
            multiplier: 1,
            shift: -1,
        },
        clamp: Clamp { min: -128, max: 5 },
    });
    // Zigzag varints for the factor, one byte per clamp bound.
    assert_eq!(postcard_bytes(&q), std::vec![26, 2, 1, 0x80, 5]);
    assert_eq!(
        postcard_bytes(&Op::Activation(Activation::Silu)),
        std::vec![5, 8]
    );
}

/// x [2, 2, 3] -> PRelu (slopes 0.5, -1, 0) -> y, f32.
fn prelu_f32() -> Spec {
    let mut m = Spec::new(96, X, T1);
    m.info.output_rank = 3;
    let slope = m.f32s(&[0.5, -1.0, 0.0]);
    m.push(layer(Op::PRelu { slope }, X, T1));
    m
}

/// x [2, 2, 3] int8 -> PReluI8 -> y.
fn prelu_i8() -> Spec {
    let mut m = Spec::new(24, QX, q8(1, 12, [2, 2, 3], 0.04, 10));
    m.info.output_rank = 3;
    let negative = super::int8_tests::push_requant(&mut m, &[0.5 * 1.25, -1.25, 0.0]);
    let op = Op::PReluI8(PReluI8 {
        positive: Requant::from_real(0.05 / 0.04).unwrap(),
        negative,
    });
    m.push(layer(op, QX, q8(1, 12, [2, 2, 3], 0.04, 10)));
    m
}

#[test]
fn prelu_per_channel_runs_as_its_kernels_compute() {
    let spec = prelu_f32();
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let x = [
        -2.0f32, -2.0, -2.0, 1.0, 2.0, 3.0, -4.0, 0.5, -0.5, 0.0, -1.0, 7.0,
    ];
    let mut arena = Blob::zeroed(96);
    let mut y = [0f32; 12];
    model.run_f32(arena.bytes_mut(), &x, &mut y).unwrap();
    assert_eq!(
        y,
        [-1.0, 2.0, -0.0, 1.0, 2.0, 3.0, -2.0, 0.5, -0.0, 0.0, 1.0, 7.0]
    );

    let spec = prelu_i8();
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let x: Vec<i8> = (0..12).map(|i| (i * 41 % 256) as u8 as i8).collect();
    let mut arena = Blob::zeroed(24);
    let mut y = [0i8; 12];
    model.run_i8(arena.bytes_mut(), &x, &mut y).unwrap();
    let Op::PReluI8(p) = spec.layers[0].op else {
        unreachable!()
    };
    let words = |s: Span| -> Vec<i32> {
        spec.weights[s.offset as usize..(s.offset + s.len) as usize]
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let (multiplier, shift) = (words(p.negative.multipliers), words(p.negative.shifts));
    let quant = k::int8::prelu::PreluQuant {
        input_zero_point: -3,
        positive: p.positive,
        multiplier: &multiplier,
        shift: &shift,
        output: k::int8::OutputQuant {
            zero_point: 10,
            clamp: Clamp::FULL,
        },
    };
    let mut want = [0i8; 12];
    k::int8::prelu::prelu(&quant, &x, &mut want);
    assert_eq!(y, want);
}

#[test]
fn prelu_faults() {
    // Slopes for another channel count.
    refused(
        prelu_f32,
        |s| {
            let slope = s.f32s(&[0.5, 0.5]);
            s.layers[0].op = Op::PRelu { slope };
        },
        bad(
            0,
            LayerFault::Span {
                role: SpanRole::Scale,
                fault: SpanFault::Length {
                    expected: 12,
                    found: 8,
                },
            },
        ),
    );
    // A slope that is not a number.
    refused(
        prelu_f32,
        |s| {
            let slope = s.f32s(&[0.5, f32::NAN, 0.0]);
            s.layers[0].op = Op::PRelu { slope };
        },
        bad(0, LayerFault::Param(ParamFault::NotFinite)),
    );
    // int8: a positive factor that is not normalized, per-channel factors of the wrong length.
    refused(
        prelu_i8,
        |s| {
            let Op::PReluI8(p) = &mut s.layers[0].op else {
                unreachable!()
            };
            p.positive = Requant {
                multiplier: 5,
                shift: 0,
            };
        },
        bad(0, LayerFault::Param(ParamFault::Requant)),
    );
    refused(
        prelu_i8,
        |s| {
            let Op::PReluI8(p) = &mut s.layers[0].op else {
                unreachable!()
            };
            p.negative.shifts.len = 8;
        },
        bad(
            0,
            LayerFault::Span {
                role: SpanRole::Shifts,
                fault: SpanFault::Length {
                    expected: 12,
                    found: 8,
                },
            },
        ),
    );
}
