//! Running a validated model: one pass over the layers, each kernel reading its inputs from and
//! writing its output to the caller's arena.
//!
//! The arena is bytes; each layer views its operands as the element type the loader checked
//! (`F32`, `I8`, or `I16` for a wide last layer) through `bytemuck` casts of disjoint
//! sub-slices. f32 layers run in
//! `Model::run_f32_layer`, int8 layers in the private `engine::int8` module, which contains no
//! floating point at all (a test reads its source to keep it so). The only float operations of an
//! int8 run are the boundary conversions of [`Model::run_f32`] ([`quantize`], [`dequantize`]);
//! [`Model::run_i8`] has none.
//!
//! Every dispatch is guarded by the model's kernel set ([`Kernels`], a type parameter of
//! [`Model`]): a constant, so a firmware loaded with
//! [`Model::new_checked_with_kernels`] links only the kernels of its set (the loader refused any
//! layer outside it), and [`Model::new_checked`] links every kernel of the enabled precisions.

mod finite;
mod fused;
mod in_place;
mod int8;
pub(crate) mod kernel_set;
mod moves;

pub use finite::{first_non_finite, NonFinite};
pub use kernel_set::{DefaultKernels, Kernel, KernelSet, Kernels};

use kernel_set::{linked, links_any};

#[cfg(feature = "fmt")]
use core::fmt;
use core::ops::Range;

use crate::format::{Conv2d, DType, Layer, ModelInfo, Op, Pool, Quant, TensorDesc, ARENA_ALIGN};
use crate::kernels::reference as kernels;
// Convolutions and dense layers in f32: the AVX2 kernels on x86_64 (falling back to the reference
// kernels on CPUs without AVX2/FMA and for the shapes they do not take), the fast kernels where
// build.rs chose them (the hard-float microcontrollers), the reference kernels elsewhere.
use crate::kernels::fast::conv::Prepared;
#[cfg(all(icefold_fast_f32, not(target_arch = "x86_64")))]
use crate::kernels::fast::{conv_f32::conv2d as f32_conv2d, dense_f32::dense as f32_dense};
#[cfg(all(not(icefold_fast_f32), not(target_arch = "x86_64")))]
use crate::kernels::reference::{conv::conv2d as f32_conv2d, dense::dense as f32_dense};
#[cfg(target_arch = "x86_64")]
use crate::kernels::x86::{conv2d as f32_conv2d, dense as f32_dense};
use crate::kernels::{ConvGeometry, PoolGeometry};
use crate::model::Model;

#[cfg(target_endian = "big")]
compile_error!(
    "icefold reads little-endian weights in place and supports little-endian targets only"
);

/// Why a run was refused. Only the caller's buffers can be wrong: the model was validated at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RunError {
    /// The arena does not start at a 4-byte aligned address (f32 tensors are viewed in place).
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
    /// The call takes raw tensors of another element type than the model's
    /// ([`Model::run_i8`] on an f32 model, or with `[i8]` for an int16 input or output).
    /// [`Model::run_f32`] runs every model.
    ElementType {
        /// Element type the call passes.
        expected: DType,
        /// Element type of the model's tensor ([`Model::input`]`().dtype` or
        /// [`Model::output`]`().dtype`).
        found: DType,
    },
    /// An element of the float input of [`Model::run_f32`] is NaN or infinite (bad sensor data:
    /// the model would compute a confident answer from it). The first such element is named;
    /// [`Model::run_f32_allowing_nonfinite_observed`] runs anyway.
    NonFiniteInput {
        /// Index of the element in the input slice (row-major `[H, W, C]`).
        index: u32,
        /// What it is.
        value: NonFinite,
    },
    /// A layer's operands could not be located. Cannot happen for a model that passed
    /// `Model::new_checked`; returned instead of panicking. Please report it as a bug.
    Internal {
        /// The layer.
        layer: u16,
    },
    /// [`Model::run_layers_observed`] was asked for layers the model does not have.
    LayerRange {
        /// End of the requested range (exclusive).
        end: u32,
        /// Layers the model has.
        layers: u32,
    },
}

#[cfg(feature = "fmt")]
impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RunError::ArenaMisaligned => f.write_str(
                "arena is not 4-byte aligned; use e.g. `Aligned<[u8; ARENA_BYTES]>` for it",
            ),
            RunError::ArenaTooSmall { needed, found } => {
                write!(f, "arena is {found} bytes, the model needs {needed}")
            }
            RunError::InputLength { expected, found } => write!(
                f,
                "input has {found} elements, the model input has {expected}"
            ),
            RunError::OutputLength { expected, found } => write!(
                f,
                "output has {found} elements, the model output has {expected}"
            ),
            RunError::ElementType { expected, found } => write!(
                f,
                "the model's tensor is {found:?}, this call passes {expected:?}; run_f32 runs \
                 every model, run_i8 only int8 models, with [i16] input and output buffers \
                 where Model::input().dtype and Model::output().dtype are I16"
            ),
            RunError::NonFiniteInput { index, value } => write!(
                f,
                "input element {index} is {value}: refusing to compute on non-finite input \
                 (check the sensor data; run_f32_allowing_nonfinite_observed runs anyway)"
            ),
            RunError::Internal { layer } => write!(
                f,
                "layer {layer}: operands not found in the arena (icefold bug, please report)"
            ),
            RunError::LayerRange { end, layers } => {
                write!(f, "layers up to {end} requested, the model has {layers}")
            }
        }
    }
}

#[cfg(feature = "fmt")]
impl core::error::Error for RunError {}

/// Hooks called around every layer of a run, for profiling on the MCU (cycle counts per layer)
/// and per-layer comparison on the host. Both default to doing nothing.
pub trait Observer {
    /// Called before layer `index` runs.
    fn layer_start(&mut self, index: u16, layer: &Layer) {
        let _ = (index, layer);
    }
    /// Called after layer `index` ran; `output` is its output tensor's bytes in the arena: f32
    /// little-endian for an `F32` output, one byte per value (two's complement) for `I8`
    /// (`layer.output` has the dtype and quantization). For an output that is a view
    /// (`layer.output.view`, zero-copy concatenation) the bytes run from its first element to its
    /// last at its pixel stride, other tensors' channels between: `TensorDesc::element_runs`
    /// yields its own.
    fn layer_end(&mut self, index: u16, layer: &Layer, output: &[u8]) {
        let _ = (index, layer, output);
    }
}

/// The observer that observes nothing.
impl Observer for () {}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Byte range of a validated tensor's storage in the arena (a view's whole storage).
fn bytes_of(d: &TensorDesc) -> Range<usize> {
    let start = d.offset as usize;
    start..start + d.storage_len()
}

/// Element-wise copy over the common length (the callers checked that the lengths are equal; a
/// zip cannot panic where `copy_from_slice` would).
fn copy<T: Copy>(from: &[T], to: &mut [T]) {
    to.iter_mut().zip(from).for_each(|(t, f)| *t = *f);
}

/// The window of a convolution record reading `input` and writing `output` (either may be a
/// view: its pixel stride), as the kernels take it.
fn conv_geometry_into(p: &Conv2d, input: &TensorDesc, output: &TensorDesc) -> ConvGeometry {
    ConvGeometry {
        out_pixel_stride: output.pixel_stride(),
        in_pixel_stride: input.pixel_stride(),
        ..conv_geometry(p)
    }
}

/// The window of a convolution record with a dense output, as the kernels take it.
fn conv_geometry(p: &Conv2d) -> ConvGeometry {
    ConvGeometry {
        out_pixel_stride: 0,
        in_pixel_stride: 0,
        kernel: p.kernel.map(usize::from),
        stride: p.stride.map(usize::from),
        dilation: p.dilation.map(usize::from),
        pad: p.pad.map(usize::from),
        groups: usize::from(p.groups),
    }
}

/// The window and reduction of a pooling record, as the kernels take them.
fn pool_geometry(p: &Pool) -> PoolGeometry {
    PoolGeometry {
        kind: p.kind,
        kernel: p.kernel.map(usize::from),
        stride: p.stride.map(usize::from),
        pad: p.pad.map(usize::from),
    }
}

fn dims(d: &TensorDesc) -> [usize; 3] {
    d.dims.map(usize::from)
}

/// Splits the arena into the output region (mutable) and shared views of the input regions,
/// which validation guarantees are disjoint from it.
fn operands<'s>(arena: &'s mut [u8], layer: &Layer) -> Option<([&'s [u8]; 2], &'s mut [u8])> {
    let out = bytes_of(&layer.output);
    let (below, rest) = arena.split_at_mut_checked(out.start)?;
    let (output, above) = rest.split_at_mut_checked(out.len())?;
    let (below, above): (&'s [u8], &'s [u8]) = (below, above);
    let view = |d: &TensorDesc| -> Option<&'s [u8]> {
        let r = bytes_of(d);
        if r.end <= out.start {
            below.get(r)
        } else {
            above.get(r.start.checked_sub(out.end)?..r.end.checked_sub(out.end)?)
        }
    };
    // Unused second slots (single-input layers) may hold anything; they are never read. An input
    // already in its slot of a concatenation's output is not read either.
    let input = |k: usize| -> Option<&'s [u8]> {
        if k >= usize::from(layer.input_count) || layer.in_place(k) {
            Some(&[])
        } else {
            // A view (a channel slice read in place) from its first element to its last.
            let d = layer.inputs.get(k)?;
            let (start, len) = d.view_span();
            view(d)?.get(start..start.checked_add(len)?)
        }
    };
    let (first, second) = (input(0)?, input(1)?);
    Some(([first, second], output))
}

/// f32 view of a tensor's bytes (offsets and the arena are 4-aligned, so this cannot fail for
/// validated tensors). The empty slice of an unused operand slot need not be aligned.
fn as_f32(bytes: &[u8]) -> Option<&[f32]> {
    if bytes.is_empty() {
        return Some(&[]);
    }
    bytemuck::try_cast_slice(bytes).ok()
}

fn as_f32_mut(bytes: &mut [u8]) -> Option<&mut [f32]> {
    bytemuck::try_cast_slice_mut(bytes).ok()
}

// ---- Boundary (de)quantization: the only float operations of an int8 run ----------------------

/// `q = saturate_i8(round(x / scale) + zero_point)`, `round` to nearest with ties away from
/// zero, computed in f32 (TensorFlow Lite's input quantization). NaN becomes the zero point (real
/// zero); infinities and out-of-range values saturate to -128 / 127.
pub fn quantize(x: f32, quant: Quant) -> i8 {
    i8::try_from(quantized_steps(x, quant, i8::MIN.into(), i8::MAX.into())).unwrap_or(0)
}

/// `clamp(round(x / scale) + zero_point, min, max)`, rounding half away from zero.
fn quantized_steps(x: f32, quant: Quant, min: i32, max: i32) -> i32 {
    // `as i32` saturates (and maps NaN to 0); the sum then saturates before the clamp.
    let steps = libm::roundf(x / quant.scale) as i32;
    steps.saturating_add(quant.zero_point).clamp(min, max)
}

/// `x = scale · (q − zero_point)` in f32: the difference is exact, so this rounds once.
pub fn dequantize(q: i8, quant: Quant) -> f32 {
    dequantize_i16(i16::from(q), quant)
}

/// [`dequantize`] for an int16 output value (the difference is below 2^24, still exact).
pub fn dequantize_i16(q: i16, quant: Quant) -> f32 {
    (i32::from(q) - quant.zero_point) as f32 * quant.scale
}

/// Element types of the raw input and output of [`Model::run_i8`]: `i8`, or `i16` where the
/// model's tensor is int16 (`Model::input().dtype` / `Model::output().dtype == DType::I16`: an
/// int16 input read by 16×8 convolutions, an int16 output head).
pub trait RawElement: bytemuck::Pod + sealed::Sealed {
    /// The tensor element type this Rust type holds.
    const DTYPE: DType;
}

impl RawElement for i8 {
    const DTYPE: DType = DType::I8;
}

impl RawElement for i16 {
    const DTYPE: DType = DType::I16;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i8 {}
    impl Sealed for i16 {}
}

/// [`quantize`] to int16: `clamp(round(x / scale) + zero_point, -32768, 32767)`.
pub fn quantize_i16(x: f32, quant: Quant) -> i16 {
    i16::try_from(quantized_steps(x, quant, i16::MIN.into(), i16::MAX.into())).unwrap_or(0)
}

/// Writes the caller's input into the arena's input tensor, each element converted by `f`, and
/// transposed on the way when the model says so (`ModelInfo::input_transpose`).
fn write_input<K: Kernels, S: Copy, T>(
    info: &ModelInfo,
    input: &[S],
    tensor: &mut [T],
    f: impl Fn(S) -> T,
) {
    match info.input_transpose {
        // Not linked: refused at load.
        Some(t) if linked::<K>(Kernel::InputTranspose) => {
            let dims = info.caller_input_dims().map(usize::from);
            kernels::layout::transpose_map(t.perm, dims, input, tensor, f);
        }
        _ => tensor.iter_mut().zip(input).for_each(|(q, x)| *q = f(*x)),
    }
}

/// The quantization of a transposed input ([`write_input`]) a run of the caller's last axis at
/// a time: each run quantized by `quantize_run` (the vectorised [`quantize_input`]) into a stack
/// buffer, then scattered to its places in `tensor`.
fn quantize_transposed<T: Copy + Default>(
    info: &ModelInfo,
    input: &[f32],
    tensor: &mut [T],
    quantize_run: impl Fn(&[f32], &mut [T]),
) {
    const RUN: usize = 32;
    let Some(t) = info.input_transpose else {
        return;
    };
    let dims = info.caller_input_dims().map(usize::from);
    let pick = |a: &[usize; 3], k: u8| a.get(usize::from(k)).copied().unwrap_or(0);
    let out_dims = t.perm.map(|a| pick(&dims, a));
    let out_strides = [out_dims[1] * out_dims[2], out_dims[2], 1];
    // The output stride of each of the caller's axes.
    let mut stride = [0usize; 3];
    for (&axis, &s) in t.perm.iter().zip(&out_strides) {
        if let Some(slot) = stride.get_mut(usize::from(axis)) {
            *slot = s;
        }
    }
    let mut buf = [T::default(); RUN];
    for (r, row) in input.chunks(dims[2].max(1)).enumerate() {
        let base = (r / dims[1].max(1)) * stride[0] + (r % dims[1].max(1)) * stride[1];
        for (c, chunk) in row.chunks(RUN).enumerate() {
            let Some(run) = buf.get_mut(..chunk.len()) else {
                return;
            };
            quantize_run(chunk, run);
            // One bounds check per run, then a strided walk (an index per element cost 2.7 ns).
            if let Some(dst) = tensor.get_mut(base + c * RUN * stride[2]..) {
                for (q, v) in dst.iter_mut().step_by(stride[2].max(1)).zip(run.iter()) {
                    *q = *v;
                }
            }
        }
    }
}

/// Writes the float model input into the integer input tensor of the arena with `quantize`
/// ([`quantize`] or [`quantize_i16`]).
fn quantize_input<T: RawElement>(
    input: &[f32],
    quant: Quant,
    tensor: &mut [T],
    quantize: fn(f32, Quant) -> T,
) {
    // AVX2 hosts take eight values per step (the same results); the rest one by one.
    let done = quantize_input_x86(input, quant, tensor);
    for (q, x) in tensor.iter_mut().zip(input).skip(done) {
        *q = quantize(*x, quant);
    }
}

/// How many leading values of `input` the x86_64 vector quantization
/// ([`crate::kernels::x86::quantize`]) wrote into `tensor`.
#[cfg(target_arch = "x86_64")]
fn quantize_input_x86<T: RawElement>(input: &[f32], quant: Quant, tensor: &mut [T]) -> usize {
    use crate::kernels::x86::quantize::{to_i16, to_i8};
    match T::DTYPE {
        DType::I8 => bytemuck::try_cast_slice_mut(tensor).map_or(0, |t| to_i8(input, quant, t)),
        DType::I16 => bytemuck::try_cast_slice_mut(tensor).map_or(0, |t| to_i16(input, quant, t)),
        DType::F32 => 0,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn quantize_input_x86<T>(_: &[f32], _: Quant, _: &mut [T]) -> usize {
    0
}

/// Reads the int8 output tensor of the arena into the float model output with [`dequantize`].
fn dequantize_output(tensor: &[i8], quant: Quant, output: &mut [f32]) {
    for (y, q) in output.iter_mut().zip(tensor) {
        *y = dequantize(*q, quant);
    }
}

/// [`dequantize_output`] for an int16 output tensor.
fn dequantize_output_i16(tensor: &[i16], quant: Quant, output: &mut [f32]) {
    for (y, q) in output.iter_mut().zip(tensor) {
        *y = dequantize_i16(*q, quant);
    }
}

// -----------------------------------------------------------------------------------------------

impl<K: Kernels> Model<'_, K> {
    /// Runs the model on `input` and writes the result to `output`, using `arena` (at least
    /// [`Model::arena_bytes`] bytes, 4-byte aligned) for every intermediate tensor.
    ///
    /// `input` and `output` have the element counts of [`Model::input`] and [`Model::output`]
    /// (row-major `[H, W, C]`).
    ///
    /// Runs f32 and int8 models alike. For an int8 model (`Model::input().dtype == DType::I8`)
    /// the input is quantized with the input tensor's scale and zero point ([`quantize`]: round
    /// half away from zero, saturate), the layers run integer-only, and the int8 output is
    /// dequantized ([`dequantize`]); these two conversions are the only float operations of the
    /// run. [`Model::run_i8`] skips them.
    ///
    /// An input element that is NaN or infinite is refused ([`RunError::NonFiniteInput`], the
    /// first one named) before anything is computed.
    pub fn run_f32(
        &self,
        arena: &mut [u8],
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), RunError> {
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
        // The caller's buffers first, in the order of the unchecked run.
        self.checked_arena(arena)?;
        self.check_lengths(input.len(), output.len())?;
        if let Some((index, value)) = first_non_finite(input) {
            return Err(RunError::NonFiniteInput {
                index: saturate(index),
                value,
            });
        }
        self.run_f32_allowing_nonfinite_observed(arena, input, output, observer)
    }

    /// [`Model::run_f32_observed`] without the check that every input element is finite: an f32
    /// model computes with NaN and infinities as IEEE 754 says, an int8 model quantizes NaN to
    /// the zero point and infinities to -128 / 127 ([`quantize`]). For callers that checked
    /// already, or want the model's answer on bad data anyway (`icefold run --allow-nonfinite`).
    pub fn run_f32_allowing_nonfinite_observed(
        &self,
        arena: &mut [u8],
        input: &[f32],
        output: &mut [f32],
        observer: &mut impl Observer,
    ) -> Result<(), RunError> {
        let arena = self.checked_arena(arena)?;
        self.check_lengths(input.len(), output.len())?;
        self.write_input_f32(arena, input)?;
        self.run_layers(arena, observer)?;
        let (model_out, internal) = (self.output(), RunError::Internal { layer: 0 });

        let last = arena.get(bytes_of(model_out)).ok_or(internal)?;
        match (model_out.dtype, model_out.quant) {
            (DType::I8, Some(quant)) => {
                dequantize_output(bytemuck::cast_slice(last), quant, output);
            }
            (DType::I16, Some(quant)) => {
                let last = bytemuck::try_cast_slice(last).map_err(|_| internal)?;
                dequantize_output_i16(last, quant, output);
            }
            _ => copy(as_f32(last).ok_or(internal)?, output),
        }
        Ok(())
    }

    /// Writes the float model `input` (in the caller's layout, [`ModelInfo::caller_input_dims`])
    /// into `arena` as [`Model::run_f32`] does before the first layer: quantized for an int8
    /// model, transposed if the model says so. For host tools that then step through the layers
    /// with [`Model::run_layers_observed`]. Arena and length errors as [`Model::run_f32`] (the
    /// output length is not checked).
    pub fn write_input_f32(&self, arena: &mut [u8], input: &[f32]) -> Result<(), RunError> {
        let arena = self.checked_arena(arena)?;
        let model_in = self.input();
        if input.len() != model_in.len() {
            return Err(RunError::InputLength {
                expected: saturate(model_in.len()),
                found: saturate(input.len()),
            });
        }
        let internal = RunError::Internal { layer: 0 };
        let first = arena.get_mut(bytes_of(model_in)).ok_or(internal)?;
        let info = self.info();
        match (model_in.dtype, model_in.quant) {
            // Channels-last already: the vectorised quantization where the host has it.
            (DType::I8, Some(quant)) if info.input_transpose.is_none() => {
                quantize_input(input, quant, bytemuck::cast_slice_mut(first), quantize);
            }
            (DType::I16, Some(quant)) if info.input_transpose.is_none() => {
                let first = bytemuck::try_cast_slice_mut(first).map_err(|_| internal)?;
                quantize_input(input, quant, first, quantize_i16);
            }
            // Transposed (refused at load unless linked): runs of the caller's last axis.
            (DType::I8, Some(quant)) if linked::<K>(Kernel::InputTranspose) => {
                let first: &mut [i8] = bytemuck::cast_slice_mut(first);
                quantize_transposed(info, input, first, |x, q| {
                    quantize_input(x, quant, q, quantize)
                });
            }
            (DType::I16, Some(quant)) if linked::<K>(Kernel::InputTranspose) => {
                let first: &mut [i16] =
                    bytemuck::try_cast_slice_mut(first).map_err(|_| internal)?;
                quantize_transposed(info, input, first, |x, q| {
                    quantize_input(x, quant, q, quantize_i16)
                });
            }
            (DType::I8 | DType::I16, Some(_)) => return Err(internal),
            _ => write_input::<K, _, _>(info, input, as_f32_mut(first).ok_or(internal)?, |x| x),
        }
        Ok(())
    }

    /// Runs an int8 model on raw integer `input` (quantized with [`Model::input`]'s `quant`) and
    /// writes its raw `output` (quantized with [`Model::output`]'s `quant`): no floating point at
    /// all, for firmware. Each side is `[i8]`, or `[i16]` where the model's tensor is int16: the
    /// input when the first layers run 16×8 (`Model::input().dtype == DType::I16`, what
    /// `icefold convert` writes when the input is read only by convolutions, unless told
    /// `--int16-activations 0`), the output when the last layer has an int16 output head (unless
    /// told `--int8-output`). Arena, lengths and errors as [`Model::run_f32`]; an f32 model or
    /// another element type gives [`RunError::ElementType`].
    pub fn run_i8<I: RawElement, O: RawElement>(
        &self,
        arena: &mut [u8],
        input: &[I],
        output: &mut [O],
    ) -> Result<(), RunError> {
        self.run_i8_observed(arena, input, output, &mut ())
    }

    /// [`Model::run_i8`] with `observer` called around each layer.
    pub fn run_i8_observed<I: RawElement, O: RawElement>(
        &self,
        arena: &mut [u8],
        input: &[I],
        output: &mut [O],
        observer: &mut impl Observer,
    ) -> Result<(), RunError> {
        let (model_in, model_out) = (self.input(), self.output());
        for (dtype, expected) in [(model_in.dtype, I::DTYPE), (model_out.dtype, O::DTYPE)] {
            if dtype != expected {
                return Err(RunError::ElementType {
                    expected,
                    found: dtype,
                });
            }
        }
        let arena = self.checked_arena(arena)?;
        self.check_lengths(input.len(), output.len())?;
        let internal = RunError::Internal { layer: 0 };
        let first = arena.get_mut(bytes_of(model_in)).ok_or(internal)?;
        let first: &mut [I] = bytemuck::try_cast_slice_mut(first).map_err(|_| internal)?;
        write_input::<K, _, _>(self.info(), input, first, |x| x);

        self.run_layers(arena, observer)?;

        let last = arena.get(bytes_of(model_out)).ok_or(internal)?;
        copy(
            bytemuck::try_cast_slice(last).map_err(|_| internal)?,
            output,
        );
        Ok(())
    }

    /// The first `arena_bytes` bytes of `arena`, which must be 4-aligned and long enough.
    fn checked_arena<'s>(&self, arena: &'s mut [u8]) -> Result<&'s mut [u8], RunError> {
        if arena.as_ptr().addr() % ARENA_ALIGN != 0 {
            return Err(RunError::ArenaMisaligned);
        }
        let needed = self.arena_bytes();
        let found = arena.len();
        arena.get_mut(..needed).ok_or(RunError::ArenaTooSmall {
            needed: saturate(needed),
            found: saturate(found),
        })
    }

    fn check_lengths(&self, input: usize, output: usize) -> Result<(), RunError> {
        let (model_in, model_out) = (self.input(), self.output());
        if input != model_in.len() {
            return Err(RunError::InputLength {
                expected: saturate(model_in.len()),
                found: saturate(input),
            });
        }
        if output != model_out.len() {
            return Err(RunError::OutputLength {
                expected: saturate(model_out.len()),
                found: saturate(output),
            });
        }
        Ok(())
    }

    /// Every layer in order, with the observer hooks; the input is in the arena already.
    fn run_layers(&self, arena: &mut [u8], observer: &mut impl Observer) -> Result<(), RunError> {
        self.run_range(arena, 0..usize::from(self.info().layer_count), observer)
    }

    /// The layers `layers` in order, with the observer hooks (the range is within the model).
    fn run_range(
        &self,
        arena: &mut [u8],
        layers: Range<usize>,
        observer: &mut impl Observer,
    ) -> Result<(), RunError> {
        for (i, layer) in self
            .layers()
            .enumerate()
            .take(layers.end)
            .skip(layers.start)
        {
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            observer.layer_start(index, &layer);
            let out = self
                .run_layer(arena, &layer)
                .ok_or(RunError::Internal { layer: index })?;
            observer.layer_end(index, &layer, out);
        }
        Ok(())
    }

    /// Runs only the layers `layers` (indices into [`Model::layers`], in order) on an arena that
    /// already holds their inputs: the arena as the layers before `layers.start` left it, or, from
    /// layer 0, with the raw model input written at [`Model::input`]'s offset. For host tools that
    /// step through a model a layer at a time (the bias correction of `icefold convert` runs each
    /// layer once per sample instead of the whole model once per corrected layer). Any arena bytes
    /// are valid operands: the kernels cannot fail on them. Arena errors as [`Model::run_f32`]; a
    /// range past the last layer gives [`RunError::LayerRange`].
    pub fn run_layers_observed(
        &self,
        arena: &mut [u8],
        layers: Range<usize>,
        observer: &mut impl Observer,
    ) -> Result<(), RunError> {
        let arena = self.checked_arena(arena)?;
        let count = usize::from(self.info().layer_count);
        if layers.end > count {
            return Err(RunError::LayerRange {
                end: saturate(layers.end),
                layers: saturate(count),
            });
        }
        self.run_range(arena, layers, observer)
    }

    /// Runs one validated layer; returns its output bytes. `None` only if validation was bypassed.
    fn run_layer<'s>(&self, arena: &'s mut [u8], layer: &Layer) -> Option<&'s [u8]> {
        // A fused convolution and pooling also writes its band: three arena regions. (A firmware
        // without the fused kernels leaves the driver out: such layers are refused at load.)
        if links_any::<K>(KernelSet::FUSED) && layer.fused().is_some() {
            return fused::run(self, arena, layer);
        }
        // A layer writing over its own input: a band of rows at a time, each on disjoint slices.
        if linked::<K>(Kernel::InPlace) && layer.writes_over_input() {
            return in_place::run(self, arena, layer);
        }
        self.run_disjoint(arena, layer, None)
    }

    /// Runs one validated layer whose output shares no byte with the inputs it reads;
    /// `prepared`: a convolution's set-up kept across the bands of a layer run in place.
    fn run_disjoint<'s>(
        &self,
        arena: &'s mut [u8],
        layer: &Layer,
        prepared: Option<&mut Prepared>,
    ) -> Option<&'s [u8]> {
        let ([x, x2], y) = operands(arena, layer)?;
        // From the output's first element to its last: the whole tensor, or a view's elements at
        // its pixel stride with the other channels of its storage between them.
        let (start, len) = layer.output.view_span();
        let y = y.get_mut(start..start.checked_add(len)?)?;
        // 16×8 convolutions read and write int8 or int16 (their operands say which).
        if let Op::Conv2dI16(p) = &layer.op {
            int8::run_conv_i16(self, layer, p, (x, &mut *y), prepared)?;
            return Some(y);
        }
        // Concatenation, slicing, gathering: f32 or int8 moves, int8 rescaling concatenation. A
        // slice in place moves nothing (and needs no kernel); a firmware without any axis kernel
        // leaves their dispatch out (such layers are refused at load).
        if moves::is_axis_op(&layer.op) {
            if layer.is_view_slice() {
                return Some(y);
            }
            if !links_any::<K>(KernelSet::AXIS) {
                return None;
            }
            moves::run(self, layer, x, x2, &mut *y)?;
            return Some(y);
        }
        // Every other operand of a validated layer has the output's element type, except the
        // wide dense of an output head (int8 in, int16 out). A precision the firmware does not
        // link (a constant `K::SET`) leaves its whole dispatch out.
        match layer.output.dtype {
            DType::F32 if !K::SET.intersection(KernelSet::F32).is_empty() => {
                self.run_f32_layer(layer, as_f32(x)?, as_f32(x2)?, as_f32_mut(&mut *y)?)?
            }
            DType::I8 if !K::SET.intersection(KernelSet::INT8).is_empty() => int8::run_layer(
                self,
                layer,
                bytemuck::cast_slice(x),
                bytemuck::cast_slice(x2),
                bytemuck::cast_slice_mut(&mut *y),
                prepared,
            )?,
            // The output head (a wide dense reads int8, a wide softmax int16) and transposes of
            // an int16 model input.
            DType::I16 if !K::SET.intersection(KernelSet::INT8).is_empty() => {
                int8::run_wide_layer(self, layer, x, bytemuck::try_cast_slice_mut(&mut *y).ok()?)?
            }
            // Refused at load (`LoadError::KernelNotLinked`).
            _ => return None,
        }
        Some(y)
    }

    /// One f32 layer on f32 views of its operands.
    fn run_f32_layer(&self, layer: &Layer, x: &[f32], x2: &[f32], y: &mut [f32]) -> Option<()> {
        let x_dims = dims(layer.inputs.first()?);
        let y_dims = dims(&layer.output);
        match &layer.op {
            Op::Conv2d(p) if linked::<K>(Kernel::Conv2d) => {
                let weights = self.weights_as(p.weights)?;
                let bias = self.weights_as(p.bias)?;
                let pad_values = self.weights_as(p.pad_values)?;
                let g = conv_geometry_into(p, layer.inputs.first()?, &layer.output);
                let conv2d = if self.reference_f32_kernels() {
                    kernels::conv::conv2d
                } else {
                    f32_conv2d
                };
                conv2d(
                    &g,
                    &p.activation,
                    x_dims,
                    x,
                    y_dims,
                    y,
                    weights,
                    bias,
                    pad_values,
                );
            }
            Op::Dense(p) if linked::<K>(Kernel::Dense) => {
                let weights = self.weights_as(p.weights)?;
                let bias = self.weights_as(p.bias)?;
                let dense = if self.reference_f32_kernels() {
                    kernels::dense::dense
                } else {
                    f32_dense
                };
                dense(&p.activation, weights, bias, x, y);
            }
            Op::Pool(p) if linked::<K>(Kernel::Pool) => {
                kernels::pool::pool(&pool_geometry(p), &p.activation, x_dims, x, y_dims, y)
            }
            Op::Add { activation } if linked::<K>(Kernel::Add) => {
                kernels::elementwise::add(activation, x, x2, y)
            }
            Op::Mul { activation } if linked::<K>(Kernel::Mul) => {
                kernels::mul::mul(activation, x, x2, y)
            }
            Op::PRelu { slope } if linked::<K>(Kernel::PRelu) => {
                kernels::prelu::prelu(self.weights_as(*slope)?, x, y)
            }
            Op::Affine(p) if linked::<K>(Kernel::Affine) => {
                let scale = self.weights_as(p.scale)?;
                let shift = self.weights_as(p.shift)?;
                kernels::elementwise::affine(&p.activation, scale, shift, x, y);
            }
            Op::Activation(a) if linked::<K>(Kernel::Activation) => {
                kernels::elementwise::activation(a, x, y)
            }
            Op::Softmax if linked::<K>(Kernel::Softmax) => {
                kernels::softmax::softmax(x_dims[2], x, y)
            }
            Op::Transpose(p) if linked::<K>(Kernel::Transpose) => {
                kernels::layout::transpose(p.perm, x_dims, x, y)
            }
            Op::Pad(p) if linked::<K>(Kernel::Pad) => {
                kernels::layout::pad_with(p.pad, p.interior, p.value, x_dims, x, y_dims, y)
            }
            // int8 operations never have f32 operands (validated), axis operations are run by
            // `moves` before the element-type dispatch, and a kernel outside `K` was refused at
            // load.
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;
    use crate::format::{Activation, Conv2d, Dense, Pool, PoolKind, Span};
    use crate::testutil::*;

    /// A 4-aligned arena of `bytes` bytes.
    fn arena(bytes: usize) -> Blob {
        Blob::zeroed(bytes)
    }

    /// The quantization of a transposed input a run at a time (vectorised on x86) writes what
    /// the element-by-element transposition writes: every permutation, runs longer and shorter
    /// than the stack buffer, values at the rounding ties and beyond the range.
    #[test]
    fn transposed_input_quantized_by_runs_equals_element_by_element() {
        let quant = Quant {
            scale: 0.05,
            zero_point: -3,
        };
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for (n, caller) in [[3u16, 5, 70], [2, 33, 4], [1, 1, 9], [4, 3, 32]]
            .iter()
            .enumerate()
        {
            for perm in perms {
                let len = caller.iter().map(|&d| usize::from(d)).product();
                let x: Vec<f32> = values(len, n as u64)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match i % 7 {
                        0 => 0.025 * (i as f32 % 9.0 - 4.0),
                        1 => v * 40.0,
                        _ => *v,
                    })
                    .collect();
                let mut info = tiny().info;
                info.input = TensorDesc {
                    dims: perm.map(|a| caller[usize::from(a)]),
                    ..info.input
                };
                info.input_transpose = Some(crate::format::Transpose { perm });
                assert_eq!(info.caller_input_dims(), *caller);
                let mut by_runs = std::vec![0i8; len];
                quantize_transposed(&info, &x, &mut by_runs, |x, q| {
                    quantize_input(x, quant, q, quantize)
                });
                let mut one_by_one = std::vec![0i8; len];
                write_input::<DefaultKernels, _, _>(&info, &x, &mut one_by_one, |v| {
                    quantize(v, quant)
                });
                assert_eq!(by_runs, one_by_one, "{caller:?} {perm:?}");
            }
        }
    }

    /// The tiny model computed by calling the kernels directly, layer by layer: the ones the
    /// engine dispatches to (`f32_conv2d`, `f32_dense`: AVX2 on x86_64), so a run must equal it
    /// bit for bit; the kernels themselves are tested against the reference.
    fn tiny_by_hand(spec: &Spec, x: &[f32]) -> Vec<f32> {
        let op = |i: usize| spec.layers[i].op;
        let dims = |d: &TensorDesc| d.dims.map(usize::from);
        let mut t1 = std::vec![0.0; T1.len()];
        let Op::Conv2d(c) = op(0) else { unreachable!() };
        f32_conv2d(
            &conv_geometry(&c),
            &c.activation,
            dims(&X),
            x,
            dims(&T1),
            &mut t1,
            &spec.span_f32(c.weights),
            &spec.span_f32(c.bias),
            &spec.span_f32(c.pad_values),
        );
        let mut t2 = std::vec![0.0; T2.len()];
        let Op::Pool(p) = op(1) else { unreachable!() };
        kernels::pool::pool(
            &pool_geometry(&p),
            &p.activation,
            dims(&T1),
            &t1,
            dims(&T2),
            &mut t2,
        );
        let mut t3 = std::vec![0.0; T3.len()];
        let Op::Affine(a) = op(2) else { unreachable!() };
        kernels::elementwise::affine(
            &a.activation,
            &spec.span_f32(a.scale),
            &spec.span_f32(a.shift),
            &t2,
            &mut t3,
        );
        let mut t4 = std::vec![0.0; T4.len()];
        kernels::elementwise::activation(&Activation::Relu, &t3, &mut t4);
        let mut t5 = std::vec![0.0; T5.len()];
        kernels::elementwise::add(&Activation::Clip { lo: -1.0, hi: 1.0 }, &t2, &t4, &mut t5);
        let mut t6 = std::vec![0.0; T6.len()];
        let Op::Transpose(t) = op(5) else {
            unreachable!()
        };
        kernels::layout::transpose(t.perm, dims(&T5), &t5, &mut t6);
        let mut t7 = std::vec![0.0; T7.len()];
        let Op::Pad(p) = op(6) else { unreachable!() };
        kernels::layout::pad_with(
            p.pad,
            p.interior,
            p.value,
            dims(&T6),
            &t6,
            dims(&T7),
            &mut t7,
        );
        let mut t8 = std::vec![0.0; T8.len()];
        kernels::elementwise::activation(&Activation::Sigmoid, &t7, &mut t8);
        let mut t9 = std::vec![0.0; T9.len()];
        let Op::Dense(d) = op(8) else { unreachable!() };
        f32_dense(
            &d.activation,
            &spec.span_f32(d.weights),
            &spec.span_f32(d.bias),
            &t8,
            &mut t9,
        );
        let mut t10 = std::vec![0.0; T10.len()];
        kernels::softmax::softmax(5, &t9, &mut t10);
        t10
    }

    #[test]
    fn runs_every_layer_on_the_planned_arena() {
        let spec = tiny();
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let x = values(X.len(), 42);
        let mut out = [0.0f32; 5];
        // A dirty arena must not matter: every read sees data written in this run.
        let mut a = arena(model.arena_bytes());
        a.bytes_mut().fill(0xAB);
        model.run_f32(a.bytes_mut(), &x, &mut out).unwrap();
        assert_eq!(out.to_vec(), tiny_by_hand(&spec, &x));
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // Same input, same output: runs are independent.
        let mut again = [0.0f32; 5];
        model.run_f32(a.bytes_mut(), &x, &mut again).unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn stepping_one_layer_at_a_time_gives_the_whole_run() {
        let spec = tiny();
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let x = values(X.len(), 7);
        let mut whole = [0.0f32; 5];
        let mut a = arena(model.arena_bytes());
        model.run_f32(a.bytes_mut(), &x, &mut whole).unwrap();

        let mut b = arena(model.arena_bytes());
        let input = bytes_of(model.input());
        b.bytes_mut()[input].copy_from_slice(bytemuck::cast_slice(&x));
        let layers = usize::from(model.info().layer_count);
        for k in 0..layers {
            model
                .run_layers_observed(b.bytes_mut(), k..k + 1, &mut ())
                .unwrap();
        }
        let output = bytes_of(model.output());
        assert_eq!(
            &b.bytes_mut()[output],
            bytemuck::cast_slice::<f32, u8>(&whole)
        );
        assert_eq!(
            model.run_layers_observed(b.bytes_mut(), 0..layers + 1, &mut ()),
            Err(RunError::LayerRange {
                end: saturate(layers + 1),
                layers: saturate(layers)
            })
        );
    }

    #[test]
    fn observer_sees_every_layer_in_order() {
        #[derive(Default)]
        struct Record {
            started: Vec<u16>,
            ended: Vec<(u16, usize)>,
            last_output: Vec<u8>,
        }
        impl Observer for Record {
            fn layer_start(&mut self, index: u16, _: &Layer) {
                self.started.push(index);
            }
            fn layer_end(&mut self, index: u16, layer: &Layer, output: &[u8]) {
                assert_eq!(output.len(), layer.output.byte_len());
                self.ended.push((index, output.len()));
                self.last_output = output.to_vec();
            }
        }
        let spec = tiny();
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut a = arena(model.arena_bytes());
        let mut out = [0.0f32; 5];
        let mut record = Record::default();
        model
            .run_f32_observed(a.bytes_mut(), &values(32, 1), &mut out, &mut record)
            .unwrap();
        assert_eq!(record.started, (0..10).collect::<Vec<u16>>());
        let lens: Vec<usize> = spec.layers.iter().map(|l| l.output.byte_len()).collect();
        assert_eq!(record.ended, (0..10).zip(lens).collect::<Vec<_>>());
        assert_eq!(record.last_output, bytemuck::cast_slice::<f32, u8>(&out));
    }

    #[test]
    fn non_finite_inputs_are_refused_by_name_unless_allowed() {
        let spec = tiny();
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut a = arena(model.arena_bytes());
        let finite: Vec<f32> = (0..32).map(|i| i as f32 * 0.1 - 1.0).collect();
        for (at, bad, kind) in [
            (0, f32::NAN, NonFinite::NaN),
            (17, f32::INFINITY, NonFinite::Infinity),
            (31, f32::NEG_INFINITY, NonFinite::NegInfinity),
        ] {
            let mut x = finite.clone();
            x[at] = bad;
            // A later one is not the one named.
            if at < 31 {
                x[31] = f32::NAN;
            }
            let mut out = [3.0f32; 5];
            assert_eq!(
                model.run_f32(a.bytes_mut(), &x, &mut out),
                Err(RunError::NonFiniteInput {
                    index: at as u32,
                    value: kind
                })
            );
            assert_eq!(out, [3.0; 5], "nothing computed");
            let message = std::format!(
                "{}",
                RunError::NonFiniteInput {
                    index: at as u32,
                    value: kind
                }
            );
            assert!(
                message.contains(&std::format!("element {at} is {kind}")),
                "{message}"
            );
            // Allowed, the f32 kernels compute with it (a NaN reaches the output or is dropped
            // by the ReLU, but the run completes).
            model
                .run_f32_allowing_nonfinite_observed(a.bytes_mut(), &x, &mut out, &mut ())
                .unwrap();
        }
        let mut out = [0.0f32; 5];
        model.run_f32(a.bytes_mut(), &finite, &mut out).unwrap();
        assert_eq!(out.to_vec(), tiny_by_hand(&spec, &finite));
    }

    #[test]
    fn caller_buffer_errors() {
        let blob = tiny().blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let x = [0.0f32; 32];
        let mut out = [0.0f32; 5];
        let mut a = arena(model.arena_bytes() + 4);
        assert_eq!(
            model.run_f32(&mut a.bytes_mut()[1..], &x, &mut out),
            Err(RunError::ArenaMisaligned)
        );
        assert_eq!(
            model.run_f32(&mut a.bytes_mut()[..319], &x, &mut out),
            Err(RunError::ArenaTooSmall {
                needed: 320,
                found: 319
            })
        );
        assert_eq!(
            model.run_f32(a.bytes_mut(), &x[..31], &mut out),
            Err(RunError::InputLength {
                expected: 32,
                found: 31
            })
        );
        assert_eq!(
            model.run_f32(a.bytes_mut(), &x, &mut out[..4]),
            Err(RunError::OutputLength {
                expected: 5,
                found: 4
            })
        );
        // A larger arena is fine.
        assert_eq!(model.run_f32(a.bytes_mut(), &x, &mut out), Ok(()));
        assert!(std::format!(
            "{}",
            RunError::ArenaTooSmall {
                needed: 320,
                found: 319
            }
        )
        .contains("320"));
    }

    #[test]
    fn arena_size_not_a_multiple_of_four() {
        // A plan may declare an odd arena size; the tensors still end on word boundaries.
        let x = desc(0, 0, [1, 1, 3]);
        let y = desc(1, 12, [1, 1, 3]);
        let mut spec = Spec::new(26, x, y);
        spec.info.output_rank = 1;
        spec.push(layer(Op::Activation(Activation::Relu), x, y));
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let mut a = arena(26);
        let mut out = [0.0f32; 3];
        model
            .run_f32(a.bytes_mut(), &[-1.0, 0.5, 2.0], &mut out)
            .unwrap();
        assert_eq!(out, [0.0, 0.5, 2.0]);
    }

    #[test]
    fn depthwise_grouped_and_dilated_conv_through_the_engine() {
        // input [5,5,4] -> grouped conv (2 groups, dilation 2, asymmetric pads, stride 2) -> [3,2,6]
        //   -> depthwise 3x3 conv with pad values -> [3,2,6] -> global average pool -> dense -> [1,1,2]
        let x = desc(0, 0, [5, 5, 4]);
        let t1 = desc(1, 400, [3, 2, 6]);
        let t2 = desc(2, 0, [3, 2, 6]);
        let t3 = desc(3, 144, [1, 1, 6]);
        let t4 = desc(4, 176, [1, 1, 2]);
        let mut spec = Spec::new(544, x, t4);
        let grouped = Conv2d {
            kernel: [2, 3],
            stride: [2, 2],
            dilation: [2, 1],
            pad: [1, 0, 1, 0],
            groups: 2,
            weights: spec.f32s(&values(6 * 2 * 3 * 2, 7)),
            bias: spec.f32s(&values(6, 8)),
            pad_values: Span::default(),
            activation: Activation::Identity,
        };
        let depthwise = Conv2d {
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [1, 1, 1, 1],
            groups: 6,
            weights: spec.f32s(&values(6 * 9, 9)),
            bias: spec.f32s(&[0.0; 6]),
            pad_values: spec.f32s(&values(6, 10)),
            activation: Activation::Clip { lo: 0.0, hi: 6.0 },
        };
        let gap = Pool {
            kind: PoolKind::Average {
                count_include_pad: false,
            },
            kernel: [3, 2],
            stride: [1, 1],
            pad: [0; 4],
            activation: Activation::Identity,
        };
        let dense = Dense {
            weights: spec.f32s(&values(12, 11)),
            bias: spec.f32s(&[0.5, -0.5]),
            activation: Activation::Identity,
        };
        spec.push(layer(Op::Conv2d(grouped), x, t1))
            .push(layer(Op::Conv2d(depthwise), t1, t2))
            .push(layer(Op::Pool(gap), t2, t3))
            .push(layer(Op::Dense(dense), t3, t4));
        spec.info.output_rank = 1;
        let blob = spec.blob();
        let model = Model::new_checked(blob.bytes()).unwrap();
        let input = values(100, 12);
        let mut out = [0.0f32; 2];
        model
            .run_f32(arena(544).bytes_mut(), &input, &mut out)
            .unwrap();

        let d = |t: &TensorDesc| t.dims.map(usize::from);
        let (mut y1, mut y2, mut y3, mut y4) = (
            std::vec![0.0; 36],
            std::vec![0.0; 36],
            std::vec![0.0; 6],
            std::vec![0.0; 2],
        );
        let w = |s| spec.span_f32(s);
        f32_conv2d(
            &conv_geometry(&grouped),
            &grouped.activation,
            d(&x),
            &input,
            d(&t1),
            &mut y1,
            &w(grouped.weights),
            &w(grouped.bias),
            &[],
        );
        f32_conv2d(
            &conv_geometry(&depthwise),
            &depthwise.activation,
            d(&t1),
            &y1,
            d(&t2),
            &mut y2,
            &w(depthwise.weights),
            &w(depthwise.bias),
            &w(depthwise.pad_values),
        );
        kernels::pool::pool(
            &pool_geometry(&gap),
            &gap.activation,
            d(&t2),
            &y2,
            d(&t3),
            &mut y3,
        );
        f32_dense(
            &Activation::Identity,
            &w(dense.weights),
            &w(dense.bias),
            &y3,
            &mut y4,
        );
        assert_eq!(out.to_vec(), y4);
    }
}
