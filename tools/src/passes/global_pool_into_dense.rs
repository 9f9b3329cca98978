//! Fold a global average pooling into the dense layer that reads it. Runs on the lowered model
//! (runtime layers and f32 weights), at the end of lowering when `LowerOptions::fold_global_pool`
//! asks for it.

use anyhow::Result;
use icefold::format::{self, Activation as RtActivation, Op as RtOp, TensorDesc};

use crate::lower::Lowered;

/// Most products a folded dense layer may sum per output: half of what the int8 accumulator
/// bound admits (`MAX_PRODUCTS_PER_OUTPUT`), leaving the other half of the i32 range to the bias.
const FOLDED_DENSE_MAX_PRODUCTS: usize = icefold::quant::MAX_PRODUCTS_PER_OUTPUT / 2;

/// Folds every global average pooling whose only reader is a dense layer into that layer: the
/// dense layer reads the pooling's input, `P` positions of `C` features, and sums its products
/// over the positions, with its weights divided by `P` (the runtime's dense semantics,
/// docs/FORMAT.md). In int8 this spares the model a rounding of the pooled features to 8 bits
/// right before the classifier (docs/QUANTIZATION.md: 10 to 30 % of the error of pooled
/// classifiers in onnxruntime's own graph). Layers after the pooling keep their order; tensor ids
/// above the pooling's output move down by one and the arena is re-planned. Returns the count.
pub fn fold_global_pool_into_dense(l: &mut Lowered) -> Result<usize> {
    let mut folded = 0;
    while let Some((pool, dense, d)) = foldable_global_pool(l) {
        let positions = {
            let [h, w, _] = l.layers[pool].inputs[0].dims;
            usize::from(h) * usize::from(w)
        };
        // Scale the dense layer's own weights in place: the span is read by no other layer.
        let (start, end) = (
            d.weights.offset as usize,
            (d.weights.offset + d.weights.len) as usize,
        );
        for w in l.weights[start..end].chunks_exact_mut(4) {
            let v = f32::from_le_bytes([w[0], w[1], w[2], w[3]]) / positions as f32;
            w.copy_from_slice(&v.to_le_bytes());
        }
        let removed = l.layers[pool].output.id;
        l.layers[dense].inputs[0] = l.layers[pool].inputs[0];
        let pool_note = l.notes[pool].clone();
        let note = &mut l.notes[dense];
        note.source = format!("{} + {}", pool_note.source, note.source);
        note.macs *= positions as u64;
        note.kind = format!("Pool+{}", note.kind);
        l.layers.remove(pool);
        l.notes.remove(pool);
        l.tensor_values.remove(usize::from(removed));
        let renumber = |t: &mut TensorDesc| {
            if t.id > removed {
                t.id -= 1;
            }
        };
        for layer in &mut l.layers {
            let n = usize::from(layer.input_count);
            layer.inputs[..n].iter_mut().for_each(renumber);
            renumber(&mut layer.output);
        }
        renumber(&mut l.info.input);
        renumber(&mut l.info.output);
        folded += 1;
    }
    if folded > 0 {
        l.info.layer_count = u16::try_from(l.layers.len())?;
        crate::lower::plan::replan(&mut l.info, &mut l.layers)?;
    }
    Ok(folded)
}

/// A global average pooling (window = the whole unpadded input, no activation) whose output is
/// not the model's and is read by exactly one layer, a dense layer, as its only input; with the
/// folded layer's products per output within [`FOLDED_DENSE_MAX_PRODUCTS`]. Returns both layers'
/// indices and the dense layer's record.
fn foldable_global_pool(l: &Lowered) -> Option<(usize, usize, format::Dense)> {
    l.layers.iter().enumerate().find_map(|(i, layer)| {
        let RtOp::Pool(p) = layer.op else { return None };
        let [h, w, c] = layer.inputs[0].dims;
        let global = matches!(p.kind, format::PoolKind::Average { .. })
            && p.kernel == [h, w]
            && p.pad == [0; 4]
            && matches!(p.activation, RtActivation::Identity)
            && layer.output.dims == [1, 1, c];
        let t = layer.output.id;
        if !global || t == l.info.output.id {
            return None;
        }
        let mut readers = l.readers(t);
        let (j, reader) = readers.next()?;
        let products = usize::from(h) * usize::from(w) * usize::from(c);
        let RtOp::Dense(d) = reader.op else {
            return None;
        };
        (readers.next().is_none()
            && reader.input_count == 1
            && products <= FOLDED_DENSE_MAX_PRODUCTS)
            .then_some((i, j, d))
    })
}
