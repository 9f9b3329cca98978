//! icefold runtime: `no_std`, allocation-free inference of BatchNorm-folded models.
//!
//! The host tool folds every BatchNorm into constants and writes a model blob (format:
//! `docs/FORMAT.md`, types in [`format`]). This crate checks the blob once and then runs it in
//! one caller-provided arena, with plain f32 kernels or, for quantized models, integer-only int8
//! kernels. Nothing on the device reads or updates normalization statistics: the format has no
//! operator that could.
//!
//! # Guarantees
//!
//! [`Model::new_checked`] validates the whole blob before returning a [`Model`]:
//! - the blob is 4-byte aligned (use [`Aligned`]), the header is version [`format::FORMAT_VERSION`]
//!   with no unknown flags, its lengths account for every byte, the CRC-32 matches, the meta
//!   records decode and fill their section exactly, the padding is zero;
//! - every tensor description: f32 without quantization or int8 with a finite scale above zero and
//!   a zero point in `-128..=127`, non-zero dimensions, size below 4 GiB, offset a multiple of 4,
//!   inside `ModelInfo::arena_bytes`; the model input and output have a logical rank of 1 to 3;
//! - every layer: operand count, element types (f32 operations on f32 tensors, int8 operations on
//!   int8 tensors, a transpose keeps type and quantization), output shape implied by the
//!   operation's parameters (convolution and pooling window arithmetic, groups, transpose
//!   permutation, padding), weight spans inside the weights section, aligned for their element
//!   type and exactly as long as the shapes require, finite parameters;
//! - int8 layers additionally: every requantization factor normalized, every clamp `min <= max`,
//!   no fused activation in the embedded conv/pool record, quantization unchanged where the
//!   operation cannot rescale, softmax output quantized 1/256 with zero point -128, int8 pooling
//!   windows bounded, and for every conv/dense output channel the bias plus its products provably
//!   inside the i32 accumulator ([`quant::contract::accumulator_fits`]);
//! - the dataflow: one description per tensor id, every read sees the model input or a tensor an
//!   earlier layer wrote, every id written once, the model input never written, the model output
//!   written;
//! - the arena plan: no layer's output overlaps its inputs or any tensor still read later (or the
//!   model output), so a wrong plan is a load error and never a wrong result.
//!
//! After that, the accessors and the runs cannot panic or index out of bounds; a run can only fail
//! on the caller's buffers, or on a NaN or infinite float input, which [`Model::run_f32`] refuses
//! by position before computing ([`RunError`]). Loading costs O(1) RAM (layers are decoded again
//! when needed) and O(L²) record decodes for L layers.
//!
//! Feature `signed`: `Model::new_signed` loads only blobs signed with the vendor's Ed25519 key,
//! verified before anything is parsed ([`format::signature`]). [`observe::ClampCounter`] counts,
//! per layer, the int8 values clamped at the ends of their range: inputs drifting from the
//! calibration data.
//!
//! # f32 and int8 models
//!
//! A model is f32 or int8 throughout: [`Model::input`]`().dtype` says which. [`Model::run_f32`]
//! runs both; for an int8 model it quantizes the float input with the input tensor's scale and
//! zero point ([`engine::quantize`]), runs the int8 layers and dequantizes the output
//! ([`engine::dequantize`]). [`Model::run_i8`] takes raw int8 input and returns the raw output
//! (int8, or int16 when the model's output head is wide: [`Model::output`]`().dtype`) and runs no
//! floating point at all (for MCUs without an FPU). The int8 layers are integer-only and give
//! identical bytes on every target.
//!
//! # The arena contract
//!
//! Every intermediate tensor lives in one `&mut [u8]` arena of at least [`Model::arena_bytes`]
//! bytes, 4-byte aligned, at the offsets the tool planned. Its previous contents do not matter,
//! the model does not keep state in it between runs, and one arena can serve several models in
//! turn. Weights stay in the blob (flash) and are borrowed, never copied.
//!
//! # Example
//!
//! ```
//! use icefold::format::*;
//! use icefold::{format::emit, Model};
//!
//! // A one-layer model, y = relu(x) on 4 values (normally written by the host tool).
//! let x = TensorDesc { id: 0, offset: 0, dims: [1, 1, 4], dtype: DType::F32, quant: None, view: None };
//! let y = TensorDesc { id: 1, offset: 16, ..x };
//! let info = ModelInfo { layer_count: 1, arena_bytes: 32, input: x, output: y, input_rank: 1, output_rank: 1, input_transpose: None };
//! let relu = Layer { op: Op::Activation(Activation::Relu), inputs: [x, x], input_count: 1, output: y };
//! let mut words = [0u32; 32]; // u32 storage keeps the blob 4-byte aligned
//! let len = emit(&info, &[relu], &[], bytemuck::cast_slice_mut(&mut words))?;
//! let blob = &bytemuck::cast_slice::<u32, u8>(&words)[..len];
//!
//! // On the device: `static BLOB: Aligned<[u8; N]> = Aligned(*include_bytes!("model.icefold"));`
//! let model = Model::new_checked(blob)?;
//! let mut arena = [0u32; 8];
//! let mut output = [0.0f32; 4];
//! model.run_f32(bytemuck::cast_slice_mut(&mut arena), &[-1.0, 0.0, 0.5, 2.0], &mut output)?;
//! assert_eq!(output, [0.0, 0.0, 0.5, 2.0]);
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
//!
//! # Modules
//! - [`format`]: the blob's types and constants, shared with the host tool, its [`format::header`],
//!   and [`format::emit`], which writes a blob (host tool, tests).
//! - [`model`]: the checked view ([`Model`], [`LoadError`], [`Aligned`]).
//! - [`engine`]: running a model ([`Model::run_f32`], [`Model::run_i8`], [`Observer`],
//!   [`RunError`]).
//! - [`quant`]: the fixed-point requantization every int8 layer ends with.
//! - [`kernels`]: the reference f32 and int8 kernels that define every layer's result.
//!
//! Little-endian targets only (weights are borrowed in place); a big-endian build fails to compile.
#![no_std]
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod engine;
pub mod format;
pub mod kernels;
pub mod model;
pub mod observe;
pub mod quant;
pub mod trace;

pub use engine::{Observer, RawElement, RunError};
pub use model::{Aligned, LoadError, Model};

#[cfg(test)]
mod testutil;
