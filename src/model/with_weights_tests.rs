//! [`Model::with_weights`]: the same layers over another weights section, checked as at load.

extern crate std;

use std::vec::Vec;

use super::*;
use crate::format::*;
use crate::testutil::*;

/// `tiny()` with layer 3 a PRelu whose slopes are in the weights section (its check reads them).
fn with_prelu() -> (Spec, Span) {
    let mut spec = tiny();
    let c = usize::from(spec.layers[3].inputs[0].dims[2]);
    let slope = spec.f32s(&std::vec![0.5; c]);
    spec.layers[3].op = Op::PRelu { slope };
    (spec, slope)
}

/// Aligned storage holding `bytes`.
fn aligned(bytes: &[u8]) -> Vec<u32> {
    let mut words = std::vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

fn run(model: &Model<'_>) -> Vec<f32> {
    let mut arena = std::vec![0u32; model.arena_bytes().div_ceil(4)];
    let arena = &mut bytemuck::cast_slice_mut(&mut arena)[..model.arena_bytes()];
    let input: Vec<f32> = (0..model.input().len())
        .map(|i| i as f32 * 0.37 - 3.0)
        .collect();
    let mut output = std::vec![0.0f32; model.output().len()];
    model.run_f32(arena, &input, &mut output).unwrap();
    output
}

fn set_f32s(weights: &mut [u32], span: Span, value: f32) {
    let bytes = bytemuck::cast_slice_mut::<u32, u8>(weights);
    let at = span.offset as usize;
    for b in bytes[at..at + span.len as usize].chunks_exact_mut(4) {
        b.copy_from_slice(&value.to_le_bytes());
    }
}

#[test]
fn other_weights_run_as_a_blob_with_them_would() {
    let (mut spec, slope) = with_prelu();
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let mut weights = aligned(model.weights());
    let len = model.weights().len();
    let same = model
        .with_weights(&bytemuck::cast_slice(&weights)[..len])
        .unwrap();
    assert_eq!(run(&same), run(&model));

    // Negative slopes of -2 instead of 0.5: the result of a blob emitted with them.
    set_f32s(&mut weights, slope, -2.0);
    let changed = model
        .with_weights(&bytemuck::cast_slice(&weights)[..len])
        .unwrap();
    for v in &mut spec.weights[slope.offset as usize..(slope.offset + slope.len) as usize]
        .chunks_exact_mut(4)
    {
        v.copy_from_slice(&(-2.0f32).to_le_bytes());
    }
    let blob2 = spec.blob();
    let reloaded = Model::new_checked(blob2.bytes()).unwrap();
    assert_eq!(run(&changed), run(&reloaded));
    assert_ne!(run(&changed), run(&model), "the slopes are used");
}

#[test]
fn other_weights_are_checked_as_at_load() {
    let (spec, slope) = with_prelu();
    let blob = spec.blob();
    let model = Model::new_checked(blob.bytes()).unwrap();
    let len = model.weights().len();
    let mut weights = aligned(model.weights());
    set_f32s(&mut weights, slope, f32::NAN);
    let fault = LoadError::BadLayer {
        layer: 3,
        what: LayerFault::Param(ParamFault::NotFinite),
    };
    let nan = model.with_weights(&bytemuck::cast_slice(&weights)[..len]);
    assert_eq!(nan.err(), Some(fault));

    let weights = aligned(model.weights());
    let bytes: &[u8] = bytemuck::cast_slice(&weights);
    assert_eq!(
        model.with_weights(&bytes[..len - 4]).err(),
        Some(LoadError::LengthMismatch {
            declared: len as u32,
            actual: len as u32 - 4
        })
    );
    let mut wider = aligned(model.weights());
    wider.push(0);
    let shifted = &bytemuck::cast_slice::<u32, u8>(&wider)[1..len + 1];
    assert_eq!(
        model.with_weights(shifted).err(),
        Some(LoadError::Misaligned)
    );
}
