//! Slices in place (format version 10, issue #17): a `Slice` along channels whose output is a
//! view of its input's storage, or along rows at an offset into it, moves nothing; the
//! convolutions reading it read the input's bytes at its pixel stride, and the result is
//! bit-identical to the copying plan. Every malformed slice view is refused at load.

extern crate std;

use std::vec::Vec;

use super::*;
use crate::engine::{Kernel, KernelSet};
use crate::format::*;
use crate::testutil::*;

/// The model input `[3, 3, 6]`, split into channels 0..2 and 2..6.
const X: TensorDesc = desc(0, 0, [3, 3, 6]);

fn slice(axis: u8, start: u16) -> Op {
    Op::Slice(Slice {
        axis,
        start,
        step: 1,
    })
}

/// x → s1 = x[.., 0..2], s2 = x[.., 2..6] → a = conv 3x3 pad 1 (s1, 3 channels),
/// b = depthwise 3x3 pad 1 (s2) → y = a ++ b. `place(s1, s2)` gives the slices' plan.
fn split_convs(arena: u32, place: impl Fn(TensorDesc, TensorDesc) -> [TensorDesc; 2]) -> Spec {
    let [s1, s2] = place(desc(1, 0, [3, 3, 2]), desc(2, 0, [3, 3, 4]));
    let (a, b) = (desc(3, 432, [3, 3, 3]), desc(4, 540, [3, 3, 4]));
    let y = desc(5, 684, [3, 3, 7]);
    let mut spec = Spec::new(arena, X, y);
    spec.info.output_rank = 3;
    let wide = Conv2d {
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        pad: [1, 1, 1, 1],
        groups: 1,
        weights: spec.f32s(&values(3 * 3 * 3 * 2, 11)),
        bias: spec.f32s(&[0.1, -0.2, 0.05]),
        pad_values: Span::default(),
        activation: Activation::Identity,
    };
    let depthwise = Conv2d {
        groups: 4,
        weights: spec.f32s(&values(4 * 3 * 3, 12)),
        bias: spec.f32s(&[0.3, 0.0, -0.1, 0.2]),
        pad_values: spec.f32s(&[0.5, -0.5, 0.25, 1.0]),
        activation: Activation::Relu,
        ..wide
    };
    spec.push(layer(slice(2, 0), X, s1))
        .push(layer(slice(2, 2), X, s2))
        .push(layer(Op::Conv2d(wide), s1, a))
        .push(layer(Op::Conv2d(depthwise), s2, b))
        .push(layer2(Op::Concat(Concat { axis: 2 }), a, b, y));
    spec
}

/// Every slice copied into its own bytes.
fn copied() -> Spec {
    split_convs(936, |s1, s2| {
        [
            TensorDesc { offset: 216, ..s1 },
            TensorDesc { offset: 288, ..s2 },
        ]
    })
}

/// Both slices are views of x's storage (6 channels per pixel at 0).
fn in_place() -> Spec {
    split_convs(936, |s1, s2| [view(s1, 0, 0, 6), view(s2, 0, 2, 6)])
}

fn run(spec: &Spec, n_in: usize, n_out: usize) -> Vec<u32> {
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let x = values(n_in, 5);
    let mut arena = Blob::zeroed(spec.info.arena_bytes as usize);
    // Garbage in the arena must not leak into the result.
    arena
        .bytes_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    let mut y = std::vec![0f32; n_out];
    model.run_f32(arena.bytes_mut(), &x, &mut y).unwrap();
    y.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn slices_in_place_compute_the_copying_plans_bits() {
    let want = run(&copied(), 54, 63);
    assert_eq!(run(&in_place(), 54, 63), want);
    // Both convolutions contribute (the depthwise one reads channels 2..6, not 0..4).
    let mut shifted = in_place();
    shifted.layers[1].output = view(shifted.layers[1].output, 0, 1, 6);
    shifted.layers[3].inputs[0] = shifted.layers[1].output;
    shifted.layers[1].op = slice(2, 1);
    assert_ne!(run(&shifted, 54, 63), want);
}

#[test]
fn a_slice_in_place_runs_no_kernel() {
    let spec = in_place();
    assert!(spec.layers[0].is_view_slice() && spec.layers[1].is_view_slice());
    assert_eq!(Kernel::of(&spec.layers[0]), Some(Kernel::SliceView));
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    assert!(!KernelSet::of(&model).contains(Kernel::Slice));
    // The copying plan links the slice kernel.
    let blob = copied().blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    assert!(KernelSet::of(&model).contains(Kernel::Slice));
}

/// x `[4, 3, 2]` → r = rows 1..3 of x → z = relu(r). `r_offset`: where r lies.
fn row_slice(r_offset: u32, arena: u32) -> Spec {
    let x = desc(0, 0, [4, 3, 2]);
    let r = desc(1, r_offset, [2, 3, 2]);
    let z = desc(2, arena - 48, [2, 3, 2]);
    let mut spec = Spec::new(arena, x, z);
    spec.info.output_rank = 3;
    spec.push(layer(slice(0, 1), x, r))
        .push(layer(Op::Activation(Activation::Relu), r, z));
    spec
}

#[test]
fn a_row_slice_in_place_is_an_offset() {
    // Copied: r at 96. In place: r at 24, one row of 3 pixels of 2 f32 into x.
    let want = run(&row_slice(96, 192), 24, 12);
    let spec = row_slice(24, 144);
    assert!(spec.layers[0].is_view_slice());
    assert_eq!(run(&spec, 24, 12), want);
    // Rows 2..4 are not rows 1..3.
    let mut other = row_slice(48, 144);
    other.layers[0].op = slice(0, 2);
    assert_ne!(run(&other, 24, 12), want);
}

fn refused(spec: Spec, expected: LoadError) {
    let blob = spec.blob();
    assert_eq!(Model::new_checked(blob.bytes()).map(|_| ()), Err(expected));
}

fn bad(layer: u16, what: LayerFault) -> LoadError {
    LoadError::BadLayer { layer, what }
}

#[test]
fn malformed_slice_views_are_refused() {
    // A view at the wrong channel is not the slice: the slice cannot write a view.
    let mut spec = in_place();
    spec.layers[1].output = view(spec.layers[1].output, 0, 1, 6);
    spec.layers[3].inputs[0] = spec.layers[1].output;
    let operand = Operand::Output;
    refused(spec, bad(1, LayerFault::ViewOperand { operand }));

    // A slice with step 2 moves elements: no view.
    let mut spec = in_place();
    spec.layers[0].op = Op::Slice(Slice {
        axis: 2,
        start: 0,
        step: 2,
    });
    let operand = Operand::Output;
    refused(spec, bad(0, LayerFault::ViewOperand { operand }));

    // A view read by an operation that cannot read one (an activation reads s2).
    let mut spec = in_place();
    let s2 = spec.layers[1].output;
    spec.layers[3] = layer(Op::Activation(Activation::Relu), s2, spec.layers[3].output);
    let operand = Operand::Input(0);
    refused(spec, bad(3, LayerFault::ViewOperand { operand }));

    // Writing over x's storage while a view of it is still to be read: a layer after a's
    // convolution writes at 0 before the depthwise convolution reads s2.
    let mut spec = in_place();
    let a = spec.layers[2].output;
    let scratch = desc(6, 0, [3, 3, 3]);
    spec.layers
        .insert(3, layer(Op::Activation(Activation::Relu), a, scratch));
    refused(spec, bad(3, LayerFault::ClobbersLiveTensor { tensor: 2 }));

    // A row slice at the wrong offset overlaps its input without being in place.
    let spec = row_slice(48, 144);
    refused(spec, bad(0, LayerFault::OverlapsOwnInput { input: 0 }));

    // A convolution reading one slot of a storage and writing another of the same storage
    // (channels apart, bytes interleaved): refused, the engine reads and writes apart.
    let mut spec = in_place();
    let s2 = spec.layers[1].output;
    let b = view(desc(4, 0, [3, 3, 2]), 0, 0, 6);
    let point = Conv2d {
        kernel: [1, 1],
        pad: [0; 4],
        groups: 1,
        weights: spec.f32s(&values(2 * 4, 13)),
        bias: spec.f32s(&[0.0, 0.1]),
        pad_values: Span::default(),
        ..match spec.layers[2].op {
            Op::Conv2d(c) => c,
            _ => unreachable!(),
        }
    };
    spec.layers[3] = layer(Op::Conv2d(point), s2, b);
    // y = a 1x1 convolution of b (7 channels): everything else about the model is valid.
    let widen = Conv2d {
        weights: spec.f32s(&values(7 * 2, 14)),
        bias: spec.f32s(&[0.0; 7]),
        ..point
    };
    let y = spec.info.output;
    spec.layers[4] = layer(Op::Conv2d(widen), b, y);
    refused(spec, bad(3, LayerFault::OverlapsOwnInput { input: 0 }));

    // A view outside its storage's pixel.
    let mut spec = in_place();
    spec.layers[1].output = view(spec.layers[1].output, 0, 3, 6);
    spec.layers[1].op = slice(2, 3);
    spec.layers[3].inputs[0] = spec.layers[1].output;
    let fault = TensorFault::ViewOutsideStorage {
        channel: 3,
        channels: 4,
        pixel_stride: 6,
    };
    let operand = Operand::Output;
    refused(spec, bad(1, LayerFault::Tensor { operand, fault }));
}

#[test]
fn a_firmware_with_only_its_models_kernels_loads_a_slice_in_place() {
    // x → rows 1..3 of x in place → relu: the model's kernels are the activation's alone, so
    // the slice's record must decode and validate without any slice kernel linked.
    struct ReluOnly;
    impl crate::engine::Kernels for ReluOnly {
        const SET: KernelSet = KernelSet::EMPTY
            .with(Kernel::Activation)
            .with(Kernel::SliceView);
    }
    struct ReluWithoutViews;
    impl crate::engine::Kernels for ReluWithoutViews {
        const SET: KernelSet = KernelSet::EMPTY.with(Kernel::Activation);
    }
    let spec = row_slice(24, 144);
    assert!(spec.layers[0].is_view_slice());
    let blob = spec.blob();
    let every = Model::new_checked(blob.bytes()).unwrap();
    assert_eq!(KernelSet::of(&every), ReluOnly::SET);
    let only = Model::<ReluOnly>::new_checked_with_kernels(blob.bytes()).unwrap();
    let x = values(24, 5);
    let (mut want, mut got) = (std::vec![0f32; 12], std::vec![0f32; 12]);
    let mut arena = Blob::zeroed(144);
    every.run_f32(arena.bytes_mut(), &x, &mut want).unwrap();
    only.run_f32(arena.bytes_mut(), &x, &mut got).unwrap();
    assert_eq!(got, want);
    // Without it, the slice is refused by name (its checks are not in such a firmware).
    assert_eq!(
        Model::<ReluWithoutViews>::new_checked_with_kernels(blob.bytes()).err(),
        Some(LoadError::OperationNotLinked {
            layer: 0,
            operation: "slice"
        })
    );
}

#[test]
fn a_firmware_without_view_makers_refuses_any_view_by_operand() {
    // Such a firmware (no concatenation, no slice kernel) leaves out the checks of what may read
    // or write a view; a view operand is refused outright, as the full checks refuse this one.
    struct ReluConv;
    impl crate::engine::Kernels for ReluConv {
        const SET: KernelSet = KernelSet::EMPTY
            .with(Kernel::Activation)
            .with(Kernel::Conv2d);
    }
    let relu_on_view = |input_view: bool| {
        let x = desc(0, 0, [3, 3, 6]);
        let y = desc(1, 216, [3, 3, 2]);
        let mut spec = Spec::new(288, x, y);
        spec.info.output_rank = 3;
        let read = if input_view { view(y, 0, 2, 6) } else { y };
        spec.push(layer(Op::Activation(Activation::Relu), read, y));
        spec
    };
    let spec = relu_on_view(true);
    let want = LoadError::BadLayer {
        layer: 0,
        what: LayerFault::ViewOperand {
            operand: Operand::Input(0),
        },
    };
    assert_eq!(Model::new_checked(spec.blob().bytes()).err(), Some(want));
    assert_eq!(
        Model::<ReluConv>::new_checked_with_kernels(spec.blob().bytes()).err(),
        Some(want)
    );
    // A convolution may write a view (its concatenation's slot) only where a concatenation can
    // be linked.
    let mut spec = relu_on_view(false);
    let x = spec.info.input;
    let conv = Conv2d {
        kernel: [1, 1],
        stride: [1, 1],
        dilation: [1, 1],
        pad: [0; 4],
        groups: 1,
        weights: spec.f32s(&values(6 * 2, 3)),
        bias: spec.f32s(&[0.0, 0.0]),
        pad_values: Span::default(),
        activation: Activation::Identity,
    };
    let y = spec.info.output;
    spec.info.arena_bytes = 360;
    spec.layers[0] = layer(Op::Conv2d(conv), x, view(y, 216, 0, 4));
    assert_eq!(
        Model::<ReluConv>::new_checked_with_kernels(spec.blob().bytes()).err(),
        Some(LoadError::BadLayer {
            layer: 0,
            what: LayerFault::ViewOperand {
                operand: Operand::Output,
            },
        })
    );
}
