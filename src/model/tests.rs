extern crate std;

use std::vec::Vec;

use super::*;
use crate::format::*;
use crate::testutil::*;

fn load(spec: &Spec) -> Result<(), LoadError> {
    let blob = spec.blob();
    Model::new_checked(blob.bytes()).map(|_| ())
}

/// `tiny()` with one edit, expected to be refused with `expected`.
fn refused(edit: impl FnOnce(&mut Spec), expected: LoadError) {
    let mut spec = tiny();
    edit(&mut spec);
    assert_eq!(load(&spec), Err(expected));
}

fn bad(layer: u16, what: LayerFault) -> LoadError {
    LoadError::BadLayer { layer, what }
}

fn conv_of(spec: &mut Spec) -> &mut Conv2d {
    match &mut spec.layers[0].op {
        Op::Conv2d(c) => c,
        _ => unreachable!(),
    }
}

#[test]
fn emitted_model_round_trips() {
    let spec = tiny();
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    assert_eq!(model.info().layer_count, 10);
    assert_eq!(model.arena_bytes(), 320);
    assert_eq!(*model.input(), X);
    assert_eq!(*model.output(), T10);
    assert_eq!(model.layers().collect::<Vec<_>>(), spec.layers);
    assert_eq!(model.weights(), &spec.weights[..]);
    let weights_at = model.weights().as_ptr() as usize - blob.bytes().as_ptr() as usize;
    assert_eq!(weights_at % WEIGHTS_ALIGN, 0);
}

#[test]
fn aligned_wrapper_aligns_include_bytes_style_statics() {
    static BLOB: Aligned<[u8; 3]> = Aligned([1, 2, 3]);
    assert_eq!(BLOB.as_ptr() as usize % 16, 0);
    assert_eq!(&BLOB[..], &[1, 2, 3]);
}

#[test]
fn every_truncation_is_refused() {
    let blob = tiny().blob();
    let bytes = blob.bytes();
    for n in 0..bytes.len() {
        let expected_short = n < HEADER_LEN;
        match Model::new_checked(&bytes[..n]) {
            Err(LoadError::TooShort { len }) => assert!(expected_short && len as usize == n),
            Err(LoadError::LengthMismatch { declared, actual }) => {
                assert!(!expected_short);
                assert_eq!((declared as usize, actual as usize), (bytes.len(), n));
            }
            other => panic!("prefix of {n} bytes: {other:?}"),
        }
    }
    let longer = blob.with_extra_byte();
    assert!(matches!(
        Model::new_checked(longer.bytes()),
        Err(LoadError::LengthMismatch { .. })
    ));
}

#[test]
fn every_single_bit_flip_is_refused() {
    let mut blob = tiny().blob();
    let len = blob.bytes().len();
    for i in 0..len {
        for bit in 0..8 {
            blob.bytes_mut()[i] ^= 1 << bit;
            let result = Model::new_checked(blob.bytes());
            assert!(result.is_err(), "flip of bit {bit} of byte {i} accepted");
            blob.bytes_mut()[i] ^= 1 << bit;
        }
    }
    assert!(Model::new_checked(blob.bytes()).is_ok());
}

#[test]
fn header_faults() {
    let blob = tiny().blob();
    let edit = |at: usize, value: u8| {
        let mut b = Blob::zeroed(blob.bytes().len());
        b.bytes_mut().copy_from_slice(blob.bytes());
        b.bytes_mut()[at] = value;
        Model::new_checked(b.bytes()).map(|_| ())
    };
    assert_eq!(edit(0, b'X'), Err(LoadError::BadMagic { found: *b"XCEF" }));
    // The previous version (and any other) is refused with both numbers.
    let other = FORMAT_VERSION as u8 - 1;
    assert_eq!(
        edit(4, other),
        Err(LoadError::UnsupportedVersion {
            found: u16::from(other),
            supported: FORMAT_VERSION
        })
    );
    assert_eq!(edit(6, 2), Err(LoadError::UnknownFlags { flags: 2 }));
    assert_eq!(edit(7, 1), Err(LoadError::UnknownFlags { flags: 256 }));
    // Flag 1 (signed) without the signature trailer after the blob.
    assert_eq!(edit(6, 1), Err(LoadError::SignatureTruncated));
    assert_eq!(edit(23, 1), Err(LoadError::ReservedNotZero));
    let stored = u32::from_le_bytes(
        blob.bytes()[crate::format::header::field::CRC]
            .try_into()
            .unwrap(),
    );
    assert_eq!(
        edit(16, blob.bytes()[16] ^ 0xff),
        Err(LoadError::ChecksumMismatch {
            stored: stored ^ 0xff,
            computed: stored
        })
    );
    let last = blob.bytes().len() - 1;
    assert!(matches!(
        edit(last, blob.bytes()[last] ^ 1),
        Err(LoadError::ChecksumMismatch { .. })
    ));
}

#[test]
fn misaligned_blob_is_refused() {
    let blob = tiny().blob();
    let mut shifted = Blob::zeroed(blob.bytes().len() + 1);
    shifted.bytes_mut()[1..].copy_from_slice(blob.bytes());
    assert_eq!(
        Model::new_checked(&shifted.bytes()[1..]).map(|_| ()),
        Err(LoadError::Misaligned)
    );
    let message = std::format!("{}", LoadError::Misaligned);
    assert!(message.contains("Aligned"), "{message}");
}

#[test]
fn meta_faults() {
    let spec = tiny();
    let mut info = spec.info;
    info.layer_count = spec.layers.len() as u16;
    let mut meta = postcard_bytes(&info);
    for l in &spec.layers {
        meta.extend(postcard_bytes(l));
    }
    let check = |meta: &[u8]| Model::new_checked(assemble(meta, &spec.weights).bytes()).map(|_| ());
    assert_eq!(check(&meta), Ok(()));

    let mut trailing = meta.clone();
    trailing.extend([0, 0]);
    assert_eq!(check(&trailing), Err(LoadError::MetaTrailing { unused: 2 }));

    let cut = meta.len() - 3;
    assert_eq!(
        check(&meta[..cut]),
        Err(LoadError::MetaDecode { layer: Some(9) })
    );
    assert_eq!(
        check(&[0xff, 0xff, 0xff]),
        Err(LoadError::MetaDecode { layer: None })
    );

    // Non-zero padding (the meta length is chosen so that padding exists).
    let mut blob = assemble(&meta, &spec.weights);
    let pad_at = HEADER_LEN + meta.len();
    assert!(weights_offset(meta.len()) > pad_at);
    blob.bytes_mut()[pad_at] = 1;
    fix_crc(blob.bytes_mut());
    assert_eq!(
        Model::new_checked(blob.bytes()).map(|_| ()),
        Err(LoadError::PaddingNotZero)
    );
}

#[test]
fn boundary_tensor_faults() {
    refused(
        |m| m.info.arena_bytes = 100,
        LoadError::BadModelTensor {
            tensor: Boundary::Input,
            fault: TensorFault::OutsideArena {
                offset: 0,
                bytes: 128,
                arena_bytes: 100,
            },
        },
    );
    refused(
        |m| m.info.input.dtype = DType::I8,
        LoadError::BadModelTensor {
            tensor: Boundary::Input,
            fault: TensorFault::QuantMissing,
        },
    );
    refused(
        |m| {
            m.info.output.quant = Some(Quant {
                scale: 1.0,
                zero_point: 0,
            })
        },
        LoadError::BadModelTensor {
            tensor: Boundary::Output,
            fault: TensorFault::QuantOnFloat,
        },
    );
    refused(
        |m| {
            m.info.output = X;
            m.info.output_rank = 3;
        },
        LoadError::OutputIsInput,
    );
    for (rank, fault) in [(0, true), (1, true), (2, true), (3, false), (4, true)] {
        let expected = LoadError::BadModelTensor {
            tensor: Boundary::Input,
            fault: TensorFault::Rank { rank },
        };
        let mut spec = tiny();
        spec.info.input_rank = rank;
        assert_eq!(
            load(&spec),
            if fault { Err(expected) } else { Ok(()) },
            "input rank {rank}"
        );
    }
    refused(
        |m| m.info.output_rank = 0,
        LoadError::BadModelTensor {
            tensor: Boundary::Output,
            fault: TensorFault::Rank { rank: 0 },
        },
    );
    refused(
        |m| m.info.output.id = 77,
        LoadError::OutputNeverWritten { tensor: 77 },
    );
    refused(
        |m| m.layers.clear(),
        LoadError::OutputNeverWritten { tensor: 10 },
    );
}

#[test]
fn tensor_faults() {
    let tensor = |operand, fault| LayerFault::Tensor { operand, fault };
    refused(
        |m| m.layers[1].output.dims[0] = 0,
        bad(1, tensor(Operand::Output, TensorFault::ZeroDim)),
    );
    refused(
        |m| m.layers[1].output.offset = 2,
        bad(
            1,
            tensor(Operand::Output, TensorFault::MisalignedOffset { offset: 2 }),
        ),
    );
    refused(
        |m| m.layers[1].output.offset = 300,
        bad(
            1,
            tensor(
                Operand::Output,
                TensorFault::OutsideArena {
                    offset: 300,
                    bytes: 48,
                    arena_bytes: 320,
                },
            ),
        ),
    );
    refused(
        |m| m.layers[2].output.dims = [u16::MAX; 3],
        bad(2, tensor(Operand::Output, TensorFault::TooLarge)),
    );
    refused(
        |m| {
            m.layers[4].inputs[1].quant = Some(Quant {
                scale: 1.0,
                zero_point: 0,
            })
        },
        bad(4, tensor(Operand::Input(1), TensorFault::QuantOnFloat)),
    );
    refused(
        |m| m.layers[3].inputs[0].dtype = DType::I8,
        bad(3, tensor(Operand::Input(0), TensorFault::QuantMissing)),
    );
}

#[test]
fn operand_count_and_shape_faults() {
    refused(
        |m| m.layers[0].input_count = 2,
        bad(
            0,
            LayerFault::InputCount {
                expected: 1,
                found: 2,
            },
        ),
    );
    refused(
        |m| m.layers[4].input_count = 1,
        bad(
            4,
            LayerFault::InputCount {
                expected: 2,
                found: 1,
            },
        ),
    );
    let shape = |operand, expected, found| LayerFault::Shape {
        operand,
        expected,
        found,
    };
    refused(
        |m| {
            m.layers[0].output.dims = [4, 2, 3];
            m.layers[1].inputs[0].dims = [4, 2, 3];
        },
        bad(0, shape(Operand::Output, [4, 4, 3], [4, 2, 3])),
    );
    refused(
        |m| m.layers[4].inputs[1].dims = [2, 2, 2],
        bad(4, shape(Operand::Input(1), [2, 2, 3], [2, 2, 2])),
    );
    refused(
        |m| m.layers[5].output.dims = [2, 3, 2],
        bad(5, shape(Operand::Output, [3, 2, 2], [2, 3, 2])),
    );
    refused(
        |m| m.layers[6].output.dims = [4, 2, 2],
        bad(6, shape(Operand::Output, [4, 3, 2], [4, 2, 2])),
    );
    refused(
        |m| m.layers[9].output.dims = [1, 5, 1],
        bad(9, shape(Operand::Output, [1, 1, 5], [1, 5, 1])),
    );
    refused(
        |m| {
            m.layers[1].output.dims = [3, 3, 3];
            m.layers[2].inputs[0].dims = [3, 3, 3];
        },
        bad(1, shape(Operand::Output, [2, 2, 3], [3, 3, 3])),
    );
}

#[test]
fn parameter_faults() {
    let param = |p| LayerFault::Param(p);
    refused(
        |m| conv_of(m).stride = [1, 0],
        bad(0, param(ParamFault::ZeroStride)),
    );
    refused(
        |m| conv_of(m).dilation = [0, 1],
        bad(0, param(ParamFault::ZeroDilation)),
    );
    refused(
        |m| conv_of(m).kernel = [0, 3],
        bad(0, param(ParamFault::ZeroKernel)),
    );
    refused(
        |m| conv_of(m).groups = 0,
        bad(0, param(ParamFault::ZeroGroups)),
    );
    refused(
        |m| conv_of(m).groups = 2,
        bad(
            0,
            param(ParamFault::GroupsDontDivide {
                groups: 2,
                in_c: 2,
                out_c: 3,
            }),
        ),
    );
    refused(
        |m| {
            let c = conv_of(m);
            c.kernel = [3, 3];
            c.dilation = [3, 1];
        },
        bad(0, param(ParamFault::WindowLargerThanInput)),
    );
    refused(
        |m| conv_of(m).activation = Activation::Clip { lo: 1.0, hi: 0.0 },
        bad(0, param(ParamFault::ClipBounds)),
    );
    refused(
        |m| {
            conv_of(m).activation = Activation::Clip {
                lo: f32::NAN,
                hi: 0.0,
            }
        },
        bad(0, param(ParamFault::ClipBounds)),
    );
    refused(
        |m| m.layers[3].op = Op::Activation(Activation::LeakyRelu { alpha: f32::NAN }),
        bad(3, param(ParamFault::NotFinite)),
    );
    refused(
        |m| m.layers[5].op = Op::Transpose(Transpose { perm: [2, 2, 0] }),
        bad(5, param(ParamFault::NotAPermutation { perm: [2, 2, 0] })),
    );
    refused(
        |m| m.layers[5].op = Op::Transpose(Transpose { perm: [0, 1, 3] }),
        bad(5, param(ParamFault::NotAPermutation { perm: [0, 1, 3] })),
    );
    refused(
        |m| {
            m.layers[6].op = Op::Pad(Pad {
                pad: [1, 0, 0, 1],
                interior: [0, 0],
                value: f32::INFINITY,
            })
        },
        bad(6, param(ParamFault::NotFinite)),
    );
    // Interior padding changes the output dims: one fill row between each of the 3 input rows
    // gives 1 + 5 rows, not the 1 + 3 the output tensor has.
    refused(
        |m| {
            m.layers[6].op = Op::Pad(Pad {
                pad: [1, 0, 0, 1],
                interior: [1, 0],
                value: 0.5,
            })
        },
        bad(
            6,
            LayerFault::Shape {
                operand: Operand::Output,
                expected: [6, 3, 2],
                found: [4, 3, 2],
            },
        ),
    );
    let pool_with = |pad: [u16; 4], kernel: [u16; 2]| {
        Op::Pool(Pool {
            kind: PoolKind::Average {
                count_include_pad: true,
            },
            kernel,
            stride: [2, 2],
            pad,
            activation: Activation::Identity,
        })
    };
    refused(
        |m| m.layers[1].op = pool_with([2, 0, 0, 0], [2, 2]),
        bad(1, param(ParamFault::PoolPadTooLarge)),
    );
    refused(
        |m| m.layers[1].op = pool_with([0; 4], [5, 2]),
        bad(1, param(ParamFault::WindowLargerThanInput)),
    );
    refused(
        |m| m.layers[1].op = pool_with([0; 4], [2, 0]),
        bad(1, param(ParamFault::ZeroKernel)),
    );
}

#[test]
fn span_faults() {
    let span = |role, fault| LayerFault::Span { role, fault };
    refused(
        |m| conv_of(m).weights.len -= 4,
        bad(
            0,
            span(
                SpanRole::Weights,
                SpanFault::Length {
                    expected: 216,
                    found: 212,
                },
            ),
        ),
    );
    refused(
        |m| conv_of(m).bias.offset += 2,
        bad(
            0,
            span(SpanRole::Bias, SpanFault::Misaligned { offset: 218 }),
        ),
    );
    let weights_len = tiny().weights.len() as u32;
    refused(
        |m| conv_of(m).pad_values.offset = weights_len - 4,
        bad(
            0,
            span(
                SpanRole::PadValues,
                SpanFault::OutOfBounds {
                    end: u64::from(weights_len) + 4,
                    weights_len,
                },
            ),
        ),
    );
    refused(
        |m| conv_of(m).pad_values.len = 12,
        bad(
            0,
            span(
                SpanRole::PadValues,
                SpanFault::Length {
                    expected: 8,
                    found: 12,
                },
            ),
        ),
    );
    refused(
        |m| match &mut m.layers[2].op {
            Op::Affine(a) => a.shift.len = 8,
            _ => unreachable!(),
        },
        bad(
            2,
            span(
                SpanRole::Shift,
                SpanFault::Length {
                    expected: 12,
                    found: 8,
                },
            ),
        ),
    );
    refused(
        |m| match &mut m.layers[8].op {
            Op::Dense(d) => d.bias.len = 24,
            _ => unreachable!(),
        },
        bad(
            8,
            span(
                SpanRole::Bias,
                SpanFault::Length {
                    expected: 20,
                    found: 24,
                },
            ),
        ),
    );
    // Empty pad values are fine.
    let mut spec = tiny();
    conv_of(&mut spec).pad_values = Span::default();
    assert_eq!(load(&spec), Ok(()));
}

#[test]
fn dataflow_faults() {
    refused(
        |m| m.layers[3].output.id = 0,
        bad(3, LayerFault::WritesModelInput),
    );
    refused(
        |m| {
            m.layers[3].output.id = 1;
            m.layers[4].inputs[1].id = 1;
        },
        bad(3, LayerFault::DuplicateWrite { tensor: 1 }),
    );
    refused(
        |m| m.layers[2].inputs[0].id = 99,
        bad(2, LayerFault::UninitializedRead { tensor: 99 }),
    );
    // An element-wise layer may write over its input only trailing it by a row (here: a
    // one-row tensor at the output's own offset).
    refused(
        |m| m.layers[4].inputs[1] = T5,
        bad(4, LayerFault::InPlaceRow { input: 1, row: 0 }),
    );
    // Reading the output of a later layer (t4, written by L3) is reading uninitialized memory.
    refused(
        |m| m.layers[2].inputs[0] = TensorDesc { id: 4, ..T2 },
        bad(2, LayerFault::UninitializedRead { tensor: 4 }),
    );
    refused(
        |m| m.layers[2].inputs[0].offset = 240,
        bad(2, LayerFault::TensorMismatch { tensor: 2 }),
    );
    refused(
        |m| m.layers[0].inputs[0].offset = 128 + 192,
        bad(
            0,
            LayerFault::Tensor {
                operand: Operand::Input(0),
                fault: TensorFault::OutsideArena {
                    offset: 320,
                    bytes: 128,
                    arena_bytes: 320,
                },
            },
        ),
    );
    // The convolution's output above its input, trailing it by enough rows, is a legal in-place
    // layer (version 9); what is wrong is the input description, no longer the model input's.
    refused(
        |m| m.layers[0].inputs[0].offset = 4,
        bad(0, LayerFault::TensorMismatch { tensor: 0 }),
    );
    refused(
        |m| {
            m.info.arena_bytes = 512;
            m.layers[0].inputs[0].offset = 320;
        },
        bad(0, LayerFault::TensorMismatch { tensor: 0 }),
    );
    refused(
        |m| m.layers[9].output.offset = 36,
        bad(9, LayerFault::TensorMismatch { tensor: 10 }),
    );
}

#[test]
fn plan_faults() {
    // L3 (relu) writes over t2 while L4 still reads it.
    refused(
        |m| {
            m.layers[3].output.offset = 0;
            m.layers[4].inputs[1].offset = 0;
        },
        bad(3, LayerFault::ClobbersLiveTensor { tensor: 2 }),
    );
    // A partial overlap counts (a one-row tensor cannot be written over in place).
    refused(
        |m| {
            m.layers[3].output.offset = 40;
            m.layers[4].inputs[1].offset = 40;
        },
        bad(3, LayerFault::InPlaceRow { input: 0, row: 0 }),
    );

    // The model input is overwritten while a later layer reads it.
    let relu = Op::Activation(Activation::Relu);
    let x = desc(0, 0, [1, 1, 4]);
    let t1 = desc(1, 32, [1, 1, 4]);
    let t2 = desc(2, 8, [1, 1, 4]);
    let t3 = desc(3, 48, [1, 1, 4]);
    let mut spec = Spec::new(64, x, t3);
    spec.push(layer(relu, x, t1))
        .push(layer(relu, t1, t2))
        .push(layer2(
            Op::Add {
                activation: Activation::Identity,
            },
            x,
            t2,
            t3,
        ));
    assert_eq!(
        load(&spec),
        Err(bad(1, LayerFault::ClobbersLiveTensor { tensor: 0 }))
    );

    // The model output is overwritten after it was produced.
    let mut spec = Spec::new(64, x, t1);
    spec.push(layer(relu, x, t1))
        .push(layer(relu, x, desc(2, 40, [1, 1, 4])));
    assert_eq!(
        load(&spec),
        Err(bad(1, LayerFault::ClobbersLiveTensor { tensor: 1 }))
    );

    // Reusing a region after its last read is the whole point of the plan.
    let mut spec = Spec::new(48, x, desc(3, 0, [1, 1, 4]));
    spec.push(layer(relu, x, t1))
        .push(layer(relu, t1, desc(2, 16, [1, 1, 4])))
        .push(layer(relu, desc(2, 16, [1, 1, 4]), desc(3, 0, [1, 1, 4])));
    assert_eq!(load(&spec), Ok(()));
}

#[test]
fn errors_display_actionable_messages() {
    let e = LoadError::UnsupportedVersion {
        found: 7,
        supported: 1,
    };
    assert!(std::format!("{e}").contains("version 7"));
    let e = bad(3, LayerFault::ClobbersLiveTensor { tensor: 2 });
    let text = std::format!("{e}");
    assert!(
        text.starts_with("layer 3:") && text.contains("tensor 2"),
        "{text}"
    );
    let e = bad(
        1,
        LayerFault::DType {
            operand: Operand::Input(0),
            expected: DType::F32,
            found: DType::I8,
        },
    );
    let text = std::format!("{e}");
    assert!(
        text.contains("input 0 is int8") && text.contains("f32"),
        "{text}"
    );
    fn is_error<E: core::error::Error + Copy>(_: E) {}
    is_error(e);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn run_if_loaded(bytes: &[u8]) {
        if let Ok(model) = Model::new_checked(bytes) {
            // A model that loads must run without error on any input.
            if model.arena_bytes() <= 1 << 16 {
                let mut arena = std::vec![0u32; model.arena_bytes().div_ceil(4)];
                let input = std::vec![0.5f32; model.input().len()];
                let mut output = std::vec![0.0f32; model.output().len()];
                let arena = &mut bytemuck::cast_slice_mut(&mut arena)[..model.arena_bytes()];
                assert_eq!(model.run_f32(arena, &input, &mut output), Ok(()));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random edits of the meta and weights, CRC fixed so they reach the deep checks.
        #[test]
        fn mutated_payload_never_panics(edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6)) {
            let mut blob = tiny().blob();
            let len = blob.bytes().len();
            for (at, value) in edits {
                let at = HEADER_LEN + usize::from(at) % (len - HEADER_LEN);
                blob.bytes_mut()[at] = value;
            }
            fix_crc(blob.bytes_mut());
            run_if_loaded(blob.bytes());
        }

        /// Random meta bytes behind a valid header.
        #[test]
        fn random_meta_never_panics(meta in proptest::collection::vec(any::<u8>(), 0..400),
                                    weights in proptest::collection::vec(any::<u8>(), 0..64)) {
            run_if_loaded(assemble(&meta, &weights).bytes());
        }

        /// Random header words in front of a valid payload.
        #[test]
        fn random_header_never_panics(header in proptest::array::uniform24(any::<u8>())) {
            let mut blob = tiny().blob();
            blob.bytes_mut()[..HEADER_LEN].copy_from_slice(&header);
            run_if_loaded(blob.bytes());
        }
    }
}

/// The postcard encoding of the records is part of the format (docs/FORMAT.md): pin it.
#[test]
fn wire_format_is_pinned() {
    // id 1, offset 128 (varint 80 01), dims 4 4 3, F32 (0), no quant (0), no view (0).
    assert_eq!(
        postcard_bytes(&T1),
        [0x01, 0x80, 0x01, 0x04, 0x04, 0x03, 0x00, 0x00, 0x00]
    );
    // A view (Some, 1): channel 2, pixel stride 300 (varint ac 02).
    let view = TensorDesc {
        view: Some(View {
            channel: 2,
            pixel_stride: 300,
        }),
        ..T1
    };
    assert_eq!(
        postcard_bytes(&view),
        [0x01, 0x80, 0x01, 0x04, 0x04, 0x03, 0x00, 0x00, 0x01, 0x02, 0xac, 0x02]
    );
    let q = TensorDesc {
        dtype: DType::I8,
        quant: Some(Quant {
            scale: 0.5,
            zero_point: -3,
        }),
        ..X
    };
    // I8 (1), Some (1), scale 0.5 as f32 LE, zero point -3 zigzag = 5, no view.
    assert_eq!(
        postcard_bytes(&q),
        [0, 0, 4, 4, 2, 1, 1, 0x00, 0x00, 0x00, 0x3f, 0x05, 0x00]
    );
    let relu = layer(
        Op::Activation(Activation::Relu),
        desc(2, 0, [1, 1, 1]),
        desc(3, 4, [1, 1, 1]),
    );
    let d2 = [0x02, 0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00];
    let mut expected = std::vec![0x05, 0x01]; // Op::Activation (5), Activation::Relu (1)
    expected.extend(d2);
    expected.extend(d2);
    expected.push(0x01); // input_count
    expected.extend([0x03, 0x04, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00]);
    assert_eq!(postcard_bytes(&relu), expected);
    let pad = Op::Pad(Pad {
        pad: [1, 2, 3, 300],
        interior: [1, 130],
        value: 1.0,
    });
    assert_eq!(
        postcard_bytes(&pad),
        [0x08, 1, 2, 3, 0xac, 0x02, 1, 0x82, 0x01, 0x00, 0x00, 0x80, 0x3f]
    );
}
