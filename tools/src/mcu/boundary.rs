//! The model's boundary as the firmware sees it: which element type it runs on, how inputs are
//! quantized for it and how its raw outputs read back as floats (the runtime's own functions).

use anyhow::{anyhow, bail, Result};
use icefold::engine;
use icefold::format::{DType, Quant};

use crate::io::Array;

/// How the firmware runs the model, named by the input's element type: `run_f32` on f32 models,
/// `run_i8` on int8 models (whose raw input is int8, or int16 when the first layers run 16×8, and
/// whose raw output is int8, or int16 from a wide last layer).
pub(super) fn boundary_dtype(model: &icefold::Model<'_>) -> Result<DType> {
    let (input, output) = (model.input().dtype, model.output().dtype);
    match (input, output) {
        (DType::F32, DType::F32) | (DType::I8 | DType::I16, DType::I8 | DType::I16) => Ok(input),
        _ => bail!(
            "the model's input is {input:?} and its output {output:?}; the firmware runs f32 \
             models and int8 models (reconvert the model)"
        ),
    }
}

/// Name of the output element type in the firmware's report.
pub(super) fn element_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::I8 => "i8",
        DType::I16 => "i16",
    }
}

/// The input quantization of an int8 model.
pub(super) fn input_quant(model: &icefold::Model<'_>) -> Result<Quant> {
    model
        .input()
        .quant
        .ok_or_else(|| anyhow!("the model's int8 input has no quantization parameters"))
}

/// Raw samples of an integer model input, one sample after the other.
pub(super) enum RawInputs {
    I8(Vec<i8>),
    I16(Vec<i16>),
}

impl RawInputs {
    /// Little-endian bytes, as the firmware embeds them.
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        match self {
            RawInputs::I8(v) => v.iter().map(|&q| q as u8).collect(),
            RawInputs::I16(v) => v.iter().flat_map(|q| q.to_le_bytes()).collect(),
        }
    }
}

/// The samples of `x` quantized to the model's integer input (int8, or int16 when the first
/// layers run 16×8) with the runtime's own boundary functions (`icefold::engine::quantize` /
/// `quantize_i16`, what `run_f32` does inside).
pub(super) fn quantized_inputs(model: &icefold::Model<'_>, x: &Array) -> Result<RawInputs> {
    let q = input_quant(model)?;
    Ok(match model.input().dtype {
        DType::I16 => RawInputs::I16(x.data.iter().map(|&v| engine::quantize_i16(v, q)).collect()),
        _ => RawInputs::I8(x.data.iter().map(|&v| engine::quantize(v, q)).collect()),
    })
}
