//! Views (zero-copy concatenation, issue #17): convolutions write straight into their slots of a
//! channel concatenation's output, the concatenation copies only the inputs not in place, and the
//! result is bit-identical to the copying plan. Every malformed view is refused at load.

extern crate std;

use std::vec::Vec;

use super::*;
use crate::format::*;
use crate::testutil::*;

const X: TensorDesc = desc(0, 0, [3, 3, 2]);

/// x `[3, 3, 2]` → a = conv 3x3 pad 1 (2 channels), b = conv 1x1 (3 channels), y = a ++ b.
/// `place(a, b, y)` gives the arena plan.
fn concat_of_convs(
    arena: u32,
    place: impl Fn(TensorDesc, TensorDesc, TensorDesc) -> [TensorDesc; 3],
) -> Spec {
    let [a, b, y] = place(
        desc(1, 0, [3, 3, 2]),
        desc(2, 0, [3, 3, 3]),
        desc(3, 0, [3, 3, 5]),
    );
    let mut spec = Spec::new(arena, X, y);
    spec.info.output_rank = 3;
    let wide = Conv2d {
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        pad: [1, 1, 1, 1],
        groups: 1,
        weights: spec.f32s(&values(2 * 3 * 3 * 2, 11)),
        bias: spec.f32s(&[0.1, -0.2]),
        pad_values: Span::default(),
        activation: Activation::Identity,
    };
    let point = Conv2d {
        kernel: [1, 1],
        pad: [0; 4],
        weights: spec.f32s(&values(3 * 2, 12)),
        bias: spec.f32s(&[0.3, 0.0, -0.1]),
        activation: Activation::Relu,
        ..wide
    };
    spec.push(layer(Op::Conv2d(wide), X, a))
        .push(layer(Op::Conv2d(point), X, b))
        .push(layer2(Op::Concat(Concat { axis: 2 }), a, b, y));
    spec
}

/// Every tensor in its own bytes: the copying plan.
fn copied() -> Spec {
    concat_of_convs(432, |a, b, y| {
        [
            TensorDesc { offset: 72, ..a },
            TensorDesc { offset: 144, ..b },
            TensorDesc { offset: 252, ..y },
        ]
    })
}

/// Both convolutions write into y's storage at 72.
fn zero_copy() -> Spec {
    concat_of_convs(252, |a, b, y| {
        [
            view(a, 72, 0, 5),
            view(b, 72, 2, 5),
            TensorDesc { offset: 72, ..y },
        ]
    })
}

/// Only b is written in place; a is copied into channels 0..2.
fn half_copy() -> Spec {
    concat_of_convs(324, |a, b, y| {
        [
            TensorDesc { offset: 72, ..a },
            view(b, 144, 2, 5),
            TensorDesc { offset: 144, ..y },
        ]
    })
}

fn run(spec: &Spec) -> Vec<u32> {
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let x = values(18, 5);
    let mut arena = Blob::zeroed(432);
    // Garbage in the arena must not leak into the result.
    arena
        .bytes_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    let mut y = [0f32; 45];
    model.run_f32(arena.bytes_mut(), &x, &mut y).unwrap();
    y.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn views_compute_the_copying_plans_bits() {
    let want = run(&copied());
    assert_eq!(run(&zero_copy()), want);
    assert_eq!(run(&half_copy()), want);
    // And the copy is what index arithmetic says: the first two channels are conv a's.
    assert_ne!(want[..2], want[2..4]);
}

#[test]
fn observers_see_a_views_own_elements() {
    struct Outputs(Vec<Vec<u8>>);
    impl crate::engine::Observer for Outputs {
        fn layer_end(&mut self, _: u16, layer: &Layer, output: &[u8]) {
            self.0.push(
                layer
                    .output
                    .element_runs(output)
                    .flatten()
                    .copied()
                    .collect(),
            );
        }
    }
    let outputs = |spec: &Spec| {
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut arena = Blob::zeroed(432);
        let mut seen = Outputs(Vec::new());
        let mut y = [0f32; 45];
        model
            .run_f32_observed(arena.bytes_mut(), &values(18, 5), &mut y, &mut seen)
            .unwrap();
        seen.0
    };
    assert_eq!(outputs(&zero_copy()), outputs(&copied()));
}

fn refused(spec: Spec, expected: LoadError) {
    let blob = spec.blob();
    assert_eq!(Model::new_checked(blob.bytes()).map(|_| ()), Err(expected));
}

fn bad(layer: u16, what: LayerFault) -> LoadError {
    LoadError::BadLayer { layer, what }
}

#[test]
fn malformed_views_are_refused() {
    // Channels past the storage's pixel.
    let mut spec = zero_copy();
    spec.layers[1].output = view(spec.layers[1].output, 72, 3, 5);
    spec.layers[2].inputs[1] = spec.layers[1].output;
    let fault = TensorFault::ViewOutsideStorage {
        channel: 3,
        channels: 3,
        pixel_stride: 5,
    };
    refused(
        spec,
        bad(
            1,
            LayerFault::Tensor {
                operand: Operand::Output,
                fault,
            },
        ),
    );

    // Two views overlapping in channels while both are live: c over a's channel 1 before the
    // concatenation reads a.
    let mut spec = zero_copy();
    let c = view(desc(4, 0, [3, 3, 2]), 72, 1, 5);
    let op = spec.layers[0].op;
    spec.layers.insert(1, layer(op, X, c));
    refused(spec, bad(1, LayerFault::ClobbersLiveTensor { tensor: 1 }));
    // The same write after the concatenation read a is fine (a is dead, y's storage is free
    // to reuse only if y is dead too: here y is the model output, so it is refused as y's).
    let mut spec = zero_copy();
    spec.push(layer(op, X, c));
    refused(spec, bad(3, LayerFault::ClobbersLiveTensor { tensor: 3 }));

    // A view read by an operation that cannot read one (here an activation reads a).
    let mut spec = zero_copy();
    let a = spec.layers[0].output;
    let z = desc(4, 252, [3, 3, 2]);
    spec.layers
        .insert(1, layer(Op::Activation(Activation::Relu), a, z));
    spec.info.arena_bytes = 324;
    refused(
        spec,
        bad(
            1,
            LayerFault::ViewOperand {
                operand: Operand::Input(0),
            },
        ),
    );

    // A view written by an operation that cannot write one.
    let mut spec = zero_copy();
    spec.layers[0].op = Op::Activation(Activation::Relu);
    spec.layers[0].output.dims = [3, 3, 2];
    refused(
        spec,
        bad(
            0,
            LayerFault::ViewOperand {
                operand: Operand::Output,
            },
        ),
    );

    // A concatenation along another axis writes no view and reads none.
    let mut spec = zero_copy();
    spec.layers[2].op = Op::Concat(Concat { axis: 1 });
    refused(
        spec,
        bad(
            2,
            LayerFault::ViewOperand {
                operand: Operand::Input(0),
            },
        ),
    );

    // The model output is stored densely.
    let mut spec = zero_copy();
    spec.layers[2].output = view(spec.layers[2].output, 72, 0, 5);
    spec.info.output = spec.layers[2].output;
    refused(
        spec,
        LoadError::BadModelTensor {
            tensor: Boundary::Output,
            fault: TensorFault::ViewAtBoundary,
        },
    );

    // A view in the wrong slot is not in place: the concatenation refuses to read it.
    let mut spec = zero_copy();
    spec.layers[0].output = view(spec.layers[0].output, 72, 3, 5);
    spec.layers[1].output = view(spec.layers[1].output, 72, 0, 5);
    spec.layers[2].inputs = [spec.layers[0].output, spec.layers[1].output];
    refused(
        spec,
        bad(
            2,
            LayerFault::ViewOperand {
                operand: Operand::Input(0),
            },
        ),
    );
}
