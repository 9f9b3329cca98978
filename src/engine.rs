//! Running a validated model: one pass over the layers, each kernel reading its inputs from and
//! writing its output to the caller's arena.

use core::fmt;
use core::ops::Range;

use crate::format::{Layer, Op, TensorDesc, ARENA_ALIGN};
use crate::kernels::reference as kernels;
use crate::model::Model;

#[cfg(target_endian = "big")]
compile_error!("icefold reads little-endian weights in place and supports little-endian targets only");

/// Why a run was refused. Only the caller's buffers can be wrong: the model was validated at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RunError {
    /// The arena does not start at a 4-byte aligned address (it is viewed as f32).
    ArenaMisaligned,
    /// The arena is smaller than the model needs.
    ArenaTooSmall {
        /// Bytes the model needs (`Model::arena_bytes`).
        needed: u32,
        /// Bytes provided (saturated at `u32::MAX`).
        found: u32,
    },
    /// The input slice does not have the model input's element count.
    InputLength {
        /// Elements the model input has.
        expected: u32,
        /// Elements provided.
        found: u32,
    },
    /// The output slice does not have the model output's element count.
    OutputLength {
        /// Elements the model output has.
        expected: u32,
        /// Elements provided.
        found: u32,
    },
    /// A layer's operands could not be located. Cannot happen for a model that passed
    /// `Model::new_checked`; returned instead of panicking. Please report it as a bug.
    Internal {
        /// The layer.
        layer: u16,
    },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RunError::ArenaMisaligned => f.write_str(
                "arena is not 4-byte aligned; use e.g. `Aligned<[u8; ARENA_BYTES]>` for it",
            ),
            RunError::ArenaTooSmall { needed, found } => write!(
                f,
                "arena is {found} bytes, the model needs {needed}"
            ),
            RunError::InputLength { expected, found } => write!(
                f,
                "input has {found} elements, the model input has {expected}"
            ),
            RunError::OutputLength { expected, found } => write!(
                f,
                "output has {found} elements, the model output has {expected}"
            ),
            RunError::Internal { layer } => write!(
                f,
                "layer {layer}: operands not found in the arena (icefold bug, please report)"
            ),
        }
    }
}

impl core::error::Error for RunError {}

/// Hooks called around every layer of a run, for profiling on the MCU (cycle counts per layer)
/// and per-layer comparison on the host. Both default to doing nothing.
pub trait Observer {
    /// Called before layer `index` runs.
    fn layer_start(&mut self, index: u16, layer: &Layer) {
        let _ = (index, layer);
    }
    /// Called after layer `index` ran; `output` is its output tensor's bytes (f32 little-endian).
    fn layer_end(&mut self, index: u16, layer: &Layer, output: &[u8]) {
        let _ = (index, layer, output);
    }
}

/// The observer that observes nothing.
impl Observer for () {}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Element range of a validated tensor in the f32 view of the arena.
fn elements(d: &TensorDesc) -> Range<usize> {
    // Offsets are multiples of ARENA_ALIGN == size_of::<f32>() (validated).
    let start = d.offset as usize / core::mem::size_of::<f32>();
    start..start + d.len()
}

fn dims(d: &TensorDesc) -> [usize; 3] {
    d.dims.map(usize::from)
}

/// Splits the arena into the output region (mutable) and shared views of the input regions,
/// which validation guarantees are disjoint from it.
fn operands<'s>(arena: &'s mut [f32], layer: &Layer) -> Option<([&'s [f32]; 2], &'s mut [f32])> {
    let out = elements(&layer.output);
    let (below, rest) = arena.split_at_mut_checked(out.start)?;
    let (output, above) = rest.split_at_mut_checked(out.len())?;
    let (below, above): (&'s [f32], &'s [f32]) = (below, above);
    let view = |d: &TensorDesc| -> Option<&'s [f32]> {
        let r = elements(d);
        if r.end <= out.start {
            below.get(r)
        } else {
            above.get(r.start.checked_sub(out.end)?..r.end.checked_sub(out.end)?)
        }
    };
    let first = view(layer.inputs.first()?)?;
    // Unused second slots (single-input layers) may hold anything; they are never read.
    let second = if layer.input_count >= 2 { view(layer.inputs.get(1)?)? } else { &[] };
    Some(([first, second], output))
}

impl Model<'_> {
    /// Runs the model on `input` and writes the result to `output`, using `arena` (at least
    /// [`Model::arena_bytes`] bytes, 4-byte aligned) for every intermediate tensor.
    ///
    /// `input` and `output` have the element counts of [`Model::input`] and [`Model::output`]
    /// (row-major `[H, W, C]`).
    pub fn run_f32(&self, arena: &mut [u8], input: &[f32], output: &mut [f32]) -> Result<(), RunError> {
        self.run_f32_observed(arena, input, output, &mut ())
    }

    /// [`Model::run_f32`] with `observer` called around each layer.
    pub fn run_f32_observed(
        &self,
        arena: &mut [u8],
        input: &[f32],
        output: &mut [f32],
        observer: &mut impl Observer,
    ) -> Result<(), RunError> {
        if arena.as_ptr().addr() % ARENA_ALIGN != 0 {
            return Err(RunError::ArenaMisaligned);
        }
        let needed = self.arena_bytes();
        let found = arena.len();
        // Every tensor ends at a multiple of 4 no later than `needed`, so the whole f32 words
        // below `needed` cover them all.
        let arena = arena
            .get_mut(..needed / 4 * 4)
            .filter(|_| found >= needed)
            .ok_or(RunError::ArenaTooSmall { needed: saturate(needed), found: saturate(found) })?;
        let arena: &mut [f32] =
            bytemuck::try_cast_slice_mut(arena).map_err(|_| RunError::ArenaMisaligned)?;
        let (model_in, model_out) = (self.input(), self.output());
        if input.len() != model_in.len() {
            return Err(RunError::InputLength {
                expected: saturate(model_in.len()),
                found: saturate(input.len()),
            });
        }
        if output.len() != model_out.len() {
            return Err(RunError::OutputLength {
                expected: saturate(model_out.len()),
                found: saturate(output.len()),
            });
        }
        let first = arena.get_mut(elements(model_in)).ok_or(RunError::Internal { layer: 0 })?;
        first.iter_mut().zip(input).for_each(|(a, x)| *a = *x);

        for (i, layer) in self.layers().enumerate() {
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            observer.layer_start(index, &layer);
            let out = self.run_layer(arena, &layer).ok_or(RunError::Internal { layer: index })?;
            let bytes: &[u8] = bytemuck::try_cast_slice(out).unwrap_or_default();
            observer.layer_end(index, &layer, bytes);
        }

        let last = arena.get(elements(model_out)).ok_or(RunError::Internal { layer: 0 })?;
        output.iter_mut().zip(last).for_each(|(o, a)| *o = *a);
        Ok(())
    }

    /// Runs one validated layer; returns its output region. `None` only if validation was bypassed.
    fn run_layer<'s>(&self, arena: &'s mut [f32], layer: &Layer) -> Option<&'s [f32]> {
        let ([x, x2], y) = operands(arena, layer)?;
        let x_dims = dims(layer.inputs.first()?);
        let y_dims = dims(&layer.output);
        match &layer.op {
            Op::Conv2d(p) => {
                let weights = self.weights_f32(p.weights)?;
                let bias = self.weights_f32(p.bias)?;
                let pad_values = self.weights_f32(p.pad_values)?;
                kernels::conv::conv2d(p, x_dims, x, y_dims, y, weights, bias, pad_values);
            }
            Op::Dense(p) => {
                let weights = self.weights_f32(p.weights)?;
                let bias = self.weights_f32(p.bias)?;
                kernels::dense::dense(&p.activation, weights, bias, x, y);
            }
            Op::Pool(p) => kernels::pool::pool(p, x_dims, x, y_dims, y),
            Op::Add { activation } => kernels::elementwise::add(activation, x, x2, y),
            Op::Affine(p) => {
                let scale = self.weights_f32(p.scale)?;
                let shift = self.weights_f32(p.shift)?;
                kernels::elementwise::affine(&p.activation, scale, shift, x, y);
            }
            Op::Activation(a) => kernels::elementwise::activation(a, x, y),
            Op::Softmax => kernels::softmax::softmax(x_dims[2], x, y),
            Op::Transpose(p) => kernels::layout::transpose(p, x_dims, x, y),
            Op::Pad(p) => kernels::layout::pad(p, x_dims, x, y_dims, y),
        }
        Some(y)
    }
}
