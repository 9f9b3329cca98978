//! Why a blob was refused. Small `Copy` values that name the layer and the fault, so firmware can
//! log them (with defmt) and a person can act on them (most point at the host tool or the build).

#[cfg(feature = "fmt")]
use core::fmt;

use crate::engine::Kernel;
use crate::format::DType;

/// Why [`Model::new_checked`](crate::Model::new_checked) refused a blob.
///
/// Every variant is a property of the bytes (or of where they live), found once at load; nothing
/// here can happen later while running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LoadError {
    /// The blob does not start at a 4-byte aligned address, so its f32 weights cannot be borrowed
    /// in place. Store it in [`Aligned`](crate::Aligned).
    Misaligned,
    /// The blob is shorter than the fixed header.
    TooShort {
        /// Length of the blob in bytes (saturated at `u32::MAX`).
        len: u32,
    },
    /// The first four bytes are not `ICEF`: this is not an icefold model.
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// The blob was written for another format version.
    UnsupportedVersion {
        /// Version in the blob.
        found: u16,
        /// The only version this runtime reads.
        supported: u16,
    },
    /// Header flags this runtime does not know.
    UnknownFlags {
        /// The flags field.
        flags: u16,
    },
    /// The reserved header word is not zero.
    ReservedNotZero,
    /// The lengths in the header do not add up to the length of the blob.
    LengthMismatch {
        /// Total length implied by the header (saturated at `u32::MAX`).
        declared: u32,
        /// Actual length of the blob (saturated at `u32::MAX`).
        actual: u32,
    },
    /// The CRC of the bytes after the header does not match the header: the blob is corrupted.
    ChecksumMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A meta record does not decode (`layer` is `None` for the `ModelInfo` record).
    MetaDecode {
        /// Index of the layer record that failed, `None` for the model info.
        layer: Option<u16>,
    },
    /// Bytes left in the meta section after the last layer record.
    MetaTrailing {
        /// Number of unused bytes.
        unused: u32,
    },
    /// The padding between the meta and the weights section is not zero.
    PaddingNotZero,
    /// The model input or output description is invalid.
    BadModelTensor {
        /// Which one.
        tensor: Boundary,
        /// What is wrong with it.
        fault: TensorFault,
    },
    /// A layer record is invalid.
    BadLayer {
        /// Index of the layer in the schedule.
        layer: u16,
        /// What is wrong with it.
        what: LayerFault,
    },
    /// A layer runs on a kernel the firmware was built without: it loaded with
    /// [`Model::new_checked_with_kernels`](crate::Model::new_checked_with_kernels) and a
    /// [`Kernels`](crate::engine::Kernels) set made for another model (or with the crate feature
    /// `f32` or `int8` off). Rebuild the firmware with the set of this blob
    /// ([`KernelSet::of`](crate::engine::KernelSet::of), printed by `icefold inspect`).
    KernelNotLinked {
        /// Index of the layer in the schedule.
        layer: u16,
        /// The kernel it needs.
        kernel: Kernel,
    },
    /// A layer's operation has no kernel in the firmware's
    /// [`Kernels`](crate::engine::Kernels) set (its record is not even decoded: the firmware
    /// links the decoders of its set's operations only). An operation whose kernel depends on its
    /// operands (`conv2d_i8`: regular or depthwise) is named here; one with a single kernel is
    /// [`LoadError::KernelNotLinked`]. Rebuild the firmware with the set of this blob.
    OperationNotLinked {
        /// Index of the layer in the schedule.
        layer: u16,
        /// The operation ([`Op::name`](crate::format::Op::name)).
        operation: &'static str,
    },
    /// No layer writes the model output tensor.
    OutputNeverWritten {
        /// Tensor id of the model output.
        tensor: u16,
    },
    /// The model output is the model input (a model without computation is refused).
    OutputIsInput,
    /// [`Model::new_signed`](crate::Model::new_signed) was given a blob without a signature
    /// (sign it with `icefold sign BLOB --key KEY -o SIGNED`, or convert with `--sign KEY`).
    Unsigned,
    /// The header says the blob is signed but the signature trailer is missing or incomplete:
    /// the blob was truncated (in transfer or in flash).
    SignatureTruncated,
    /// The signature does not verify with the public key: the blob was changed after signing,
    /// it was signed with another key, or the signature is another blob's. Nothing of it was
    /// parsed.
    SignatureInvalid,
}

/// The model boundary tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Boundary {
    /// `ModelInfo::input`.
    Input,
    /// `ModelInfo::output`.
    Output,
}

/// What is wrong with one `TensorDesc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TensorFault {
    /// A dimension is zero.
    ZeroDim,
    /// The byte size does not fit in 32 bits.
    TooLarge,
    /// The arena offset is not a multiple of `ARENA_ALIGN`.
    MisalignedOffset {
        /// The offset.
        offset: u32,
    },
    /// The tensor does not fit in the arena the model declares.
    OutsideArena {
        /// Arena offset of the tensor.
        offset: u32,
        /// Its size in bytes.
        bytes: u32,
        /// `ModelInfo::arena_bytes`.
        arena_bytes: u32,
    },
    /// An f32 tensor carries quantization parameters.
    QuantOnFloat,
    /// An int8 tensor has no quantization parameters.
    QuantMissing,
    /// An int8 tensor's scale is not a finite number above zero.
    QuantScale,
    /// An int8 tensor's zero point is outside `-128..=127` (int16: `-32768..=32767`).
    QuantZeroPoint {
        /// The zero point found.
        zero_point: i32,
    },
    /// A model boundary's logical rank is not 1 to 3, or a dimension outside it is not 1.
    Rank {
        /// `ModelInfo::input_rank` or `output_rank`.
        rank: u8,
    },
    /// A view's channels do not lie inside its storage's pixel (`channel + C > pixel_stride`).
    ViewOutsideStorage {
        /// First channel of the view.
        channel: u16,
        /// Channels of the view.
        channels: u16,
        /// Channels per pixel of the storage.
        pixel_stride: u16,
    },
    /// The model input or output is a view; both are stored densely.
    ViewAtBoundary,
    /// The model input's `ModelInfo::input_transpose` is not a permutation of `[0, 1, 2]`.
    NotAPermutation {
        /// The permutation in the record.
        perm: [u8; 3],
    },
}

/// Which operand of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Operand {
    /// Input number `n` (0-based).
    Input(u8),
    /// The output.
    Output,
    /// The band of a fused convolution and pooling (its scratch rows of convolution output).
    Band,
}

/// Which constant array of a layer a `Span` points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SpanRole {
    /// Conv / dense weights.
    Weights,
    /// Conv / dense bias.
    Bias,
    /// Conv border values.
    PadValues,
    /// Affine scale.
    Scale,
    /// Affine shift (f32).
    Shift,
    /// int8 affine offset (i32).
    Offset,
    /// Per-channel requantization multipliers (i32).
    Multipliers,
    /// Per-channel requantization shifts (i32).
    Shifts,
    /// Lookup table (i8 for `LookupI8`, u32 exponentials for `SoftmaxI8`).
    Table,
    /// Gather indices (u16).
    Indices,
}

/// What is wrong with one `Span`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SpanFault {
    /// The length does not match the layer's shapes.
    Length {
        /// Bytes the shapes require.
        expected: u64,
        /// Bytes the span holds.
        found: u32,
    },
    /// The offset is not a multiple of 4 (f32 arrays are borrowed in place).
    Misaligned {
        /// The offset.
        offset: u32,
    },
    /// The span ends past the weights section.
    OutOfBounds {
        /// End of the span in bytes.
        end: u64,
        /// Length of the weights section.
        weights_len: u32,
    },
}

/// An operator parameter that makes no sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ParamFault {
    /// A kernel/window dimension is zero.
    ZeroKernel,
    /// A stride is zero.
    ZeroStride,
    /// A dilation is zero.
    ZeroDilation,
    /// `groups` is zero.
    ZeroGroups,
    /// `groups` does not divide the input or output channel count.
    GroupsDontDivide {
        /// Groups.
        groups: u16,
        /// Input channels.
        in_c: u16,
        /// Output channels.
        out_c: u16,
    },
    /// The (dilated) window is larger than the padded input: there is no output position.
    WindowLargerThanInput,
    /// A pooling pad is not smaller than the window, so a window could hold only padding.
    PoolPadTooLarge,
    /// A fused convolution's top or bottom padding is not smaller than its (dilated) window
    /// height, so an output row could read padding only (the band driver needs an input row).
    FusedConvPad,
    /// A fused layer's band holds fewer convolution rows than one pooling window reads, or more
    /// than the convolution has.
    BandRows {
        /// Rows of the band.
        rows: u16,
        /// Rows one pooling window reads (`min(pool kernel_h, convolution output rows)`).
        needed: u16,
        /// Convolution output rows.
        conv_rows: u16,
    },
    /// A transpose `perm` is not a permutation of `[0, 1, 2]`.
    NotAPermutation {
        /// The perm found.
        perm: [u8; 3],
    },
    /// A clip has `lo > hi` or a NaN bound.
    ClipBounds,
    /// A parameter that must be finite is NaN or infinite (leaky-ReLU alpha, pad value).
    NotFinite,
    /// The `Conv2d` or `Pool` record inside an int8 layer has a fused activation other than
    /// `Identity` (int8 layers express ReLU / ReLU6 as their `clamp`, other functions as a
    /// `LookupI8` layer).
    FusedActivation,
    /// A requantization factor (`multiplier`, `shift`) is not what `quant::quantize_multiplier`
    /// produces (`Requant::is_normalized` is false).
    Requant,
    /// An int8 or int16 clamp has `min > max`.
    ClampBounds {
        /// Lower bound.
        min: i16,
        /// Upper bound.
        max: i16,
    },
    /// An int8 pooling window has more elements than the kernel's sums allow.
    PoolWindowTooLarge {
        /// `kernel_h · kernel_w`.
        area: u32,
        /// The largest area allowed
        /// ([`MAX_POOL_WINDOW_AREA`](crate::quant::contract::MAX_POOL_WINDOW_AREA)).
        max: u32,
    },
    /// A concat / slice / gather axis is not 0, 1 or 2.
    Axis {
        /// The axis found.
        axis: u8,
    },
    /// A slice has step 0.
    ZeroStep,
    /// A slice or gather reads index `index` along an axis of `len` indices.
    IndexOutOfRange {
        /// The largest index read.
        index: u32,
        /// The input's dim along the axis.
        len: u16,
    },
    /// A dense layer with int16 weights in blocks of four rows (`DenseLayout::QuadsI16`) whose
    /// input features are not a multiple of 4.
    DenseQuadInputs {
        /// Input features (per position).
        inputs: u32,
    },
    /// A dense layer's int16 weight (`DenseLayout::QuadsI16`) outside the int8 range the
    /// accumulator bound assumes.
    WideWeightRange {
        /// Index of the value in the weights array.
        index: u32,
        /// The value.
        value: i16,
    },
    /// A dense layer's int8 weights in row pairs (`DenseLayout::PairsI8`) that break the
    /// layout's rules.
    DensePairs(crate::format::PairsFault),
}

/// What is wrong with one layer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LayerFault {
    /// `input_count` does not match the operation.
    InputCount {
        /// What the operation takes.
        expected: u8,
        /// What the record says.
        found: u8,
    },
    /// A tensor description is invalid.
    Tensor {
        /// Which operand.
        operand: Operand,
        /// What is wrong.
        fault: TensorFault,
    },
    /// An operand's shape does not follow from the other operands and the parameters.
    Shape {
        /// Which operand.
        operand: Operand,
        /// Dimensions the parameters imply.
        expected: [u32; 3],
        /// Dimensions in the record.
        found: [u16; 3],
    },
    /// An operator parameter is invalid.
    Param(ParamFault),
    /// A constant array reference is invalid.
    Span {
        /// Which array.
        role: SpanRole,
        /// What is wrong.
        fault: SpanFault,
    },
    /// The layer writes the model input tensor.
    WritesModelInput,
    /// The layer writes a tensor id an earlier layer already wrote.
    DuplicateWrite {
        /// Tensor id.
        tensor: u16,
    },
    /// The layer reads a tensor that is neither the model input nor written by an earlier layer.
    UninitializedRead {
        /// Tensor id.
        tensor: u16,
    },
    /// The layer describes a tensor differently from where it is defined (the model input or
    /// output, or the layer that writes it).
    TensorMismatch {
        /// Tensor id.
        tensor: u16,
    },
    /// An operand has the wrong element type: int8 operations take and produce `I8` tensors, f32
    /// operations `F32` tensors, a transpose keeps its input's type.
    DType {
        /// Which operand.
        operand: Operand,
        /// The type the operation requires.
        expected: DType,
        /// The type in the record.
        found: DType,
    },
    /// An operand's quantization differs from input 0's, and the operation cannot rescale
    /// (transpose, int8 pad, int8 clamp, int8 pooling without `rescale`).
    QuantMismatch {
        /// Which operand.
        operand: Operand,
    },
    /// A softmax output is not quantized with scale 1/256 and zero point -128 (int8) or scale
    /// 1/32768 and zero point 0 (int16).
    SoftmaxOutputQuant,
    /// An int8 conv or dense output channel's bias plus its products could leave the i32
    /// accumulator (`quant::contract::accumulator_fits` is false).
    AccumulatorOverflow {
        /// The output channel (feature for dense).
        channel: u32,
        /// Products summed per output.
        products: u32,
    },
    /// The output region (or a fused layer's band) overlaps the region of one of the layer's
    /// inputs, and the operation cannot run over that input (only convolutions, poolings and
    /// element-wise operations can, `Layer::row_window`).
    OverlapsOwnInput {
        /// Input index.
        input: u8,
    },
    /// A layer writing over its own input would overwrite input rows that this output row or a
    /// later one still reads (`Layer::band_is_safe`; format version 9).
    InPlaceRow {
        /// Input index.
        input: u8,
        /// The first unsafe output row.
        row: u16,
    },
    /// A layer writes over two inputs, one above and one below its output: its rows cannot be
    /// run in one order safe for both.
    InPlaceDirections,
    /// A fused layer's band overlaps its output.
    BandOverlapsOutput,
    /// The output region overlaps a tensor that a later layer still reads (or the model output):
    /// the arena plan is wrong.
    ClobbersLiveTensor {
        /// Id of the tensor that would be destroyed.
        tensor: u16,
    },
    /// An operand is a view (`TensorDesc::view`) where this operation does not take one:
    /// convolutions, concatenations along channels and slices in place write views; a
    /// convolution reads one as its input (at its pixel stride), a concatenation along channels
    /// as the input that already lies in its slot of the output (no rescaling), a slice in place
    /// as its input (format 10).
    ViewOperand {
        /// The operand.
        operand: Operand,
    },
}

#[cfg(feature = "fmt")]
fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::I8 => "int8",
        DType::I16 => "int16",
    }
}

/// Advice appended to faults that only a broken or mismatched tool can produce.
#[cfg(feature = "fmt")]
const FROM_TOOL: &str = "the blob was not written by a matching icefold tool; re-export the model";

#[cfg(feature = "fmt")]
impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LoadError::Misaligned => f.write_str(
                "model blob is not 4-byte aligned; store it in `icefold::Aligned` \
                 (static BLOB: Aligned<[u8; N]> = Aligned(*include_bytes!(..)))",
            ),
            LoadError::TooShort { len } => write!(
                f,
                "model blob is {len} bytes, shorter than the {} byte header; the file is truncated",
                crate::format::HEADER_LEN
            ),
            LoadError::BadMagic { found } => write!(
                f,
                "model blob starts with {found:02x?}, not \"ICEF\"; this is not an icefold model"
            ),
            LoadError::UnsupportedVersion { found, supported } => write!(
                f,
                "model blob has format version {found}, this runtime reads version {supported}; \
                 export the model with the icefold tool that matches this runtime"
            ),
            LoadError::UnknownFlags { flags } => write!(
                f,
                "model blob header has unknown flags {flags:#06x}; {FROM_TOOL}"
            ),
            LoadError::ReservedNotZero => {
                write!(
                    f,
                    "model blob header reserved word is not zero; {FROM_TOOL}"
                )
            }
            LoadError::LengthMismatch { declared, actual } => write!(
                f,
                "model blob is {actual} bytes but its header describes {declared} bytes; \
                 the file is truncated or has extra bytes"
            ),
            LoadError::ChecksumMismatch { stored, computed } => write!(
                f,
                "model blob is corrupted: CRC-32 {computed:#010x}, header says {stored:#010x}"
            ),
            LoadError::MetaDecode { layer: None } => {
                write!(f, "model info record does not decode; {FROM_TOOL}")
            }
            LoadError::MetaDecode { layer: Some(i) } => {
                write!(f, "layer {i}: record does not decode; {FROM_TOOL}")
            }
            LoadError::MetaTrailing { unused } => write!(
                f,
                "{unused} unused bytes after the last layer record; {FROM_TOOL}"
            ),
            LoadError::PaddingNotZero => {
                write!(
                    f,
                    "padding before the weights section is not zero; {FROM_TOOL}"
                )
            }
            LoadError::BadModelTensor { tensor, fault } => {
                let which = match tensor {
                    Boundary::Input => "model input",
                    Boundary::Output => "model output",
                };
                write!(f, "{which}: {fault}")
            }
            LoadError::BadLayer { layer, what } => write!(f, "layer {layer}: {what}"),
            LoadError::KernelNotLinked { layer, kernel } => write!(
                f,
                "layer {layer} runs on kernel {name}, which this firmware was built without \
                 (its Kernels set is another model's, or a crate feature f32 / int8 is off); \
                 rebuild it with this blob's set (`icefold inspect BLOB` prints it, \
                 `icefold::engine::KernelSet::of` computes it) or with Kernel::{name} added",
                name = kernel.name()
            ),
            LoadError::OperationNotLinked { layer, operation } => write!(
                f,
                "layer {layer} is a {operation} layer, and this firmware was built without any \
                 of its kernels (its Kernels set is another model's, or a crate feature f32 / \
                 int8 is off); rebuild it with this blob's set (`icefold inspect BLOB` prints \
                 it, `icefold::engine::KernelSet::of` computes it)"
            ),
            LoadError::OutputNeverWritten { tensor } => write!(
                f,
                "no layer writes the model output (tensor {tensor}); {FROM_TOOL}"
            ),
            LoadError::OutputIsInput => {
                f.write_str("the model output is the model input; a model must compute something")
            }
            LoadError::Unsigned => f.write_str(
                "the blob is not signed and this device loads only signed models; sign it with \
                 `icefold sign BLOB --key KEY -o SIGNED` (or `icefold convert ... --sign KEY`)",
            ),
            LoadError::SignatureTruncated => f.write_str(
                "the blob says it is signed but its signature trailer is missing or cut short: \
                 the blob was truncated; transfer it again",
            ),
            LoadError::SignatureInvalid => f.write_str(
                "the signature does not verify with this device's public key: the blob was \
                 changed after signing or signed with another key; refusing it unparsed",
            ),
        }
    }
}

#[cfg(feature = "fmt")]
impl core::error::Error for LoadError {}

#[cfg(feature = "fmt")]
impl fmt::Display for TensorFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TensorFault::ZeroDim => f.write_str("tensor has a zero dimension"),
            TensorFault::ViewOutsideStorage { channel, channels, pixel_stride } => write!(
                f,
                "view of channels {channel}..{} lies outside its storage's {pixel_stride} \
                 channels per pixel",
                u32::from(channel) + u32::from(channels)
            ),
            TensorFault::ViewAtBoundary => {
                f.write_str("the model input and output must be stored densely, not as views")
            }
            TensorFault::NotAPermutation { perm } => write!(
                f,
                "the input transpose {perm:?} is not a permutation of [0, 1, 2]"
            ),
            TensorFault::TooLarge => f.write_str("tensor size does not fit in 32 bits"),
            TensorFault::MisalignedOffset { offset } => write!(
                f,
                "tensor arena offset {offset} is not a multiple of {}",
                crate::format::ARENA_ALIGN
            ),
            TensorFault::OutsideArena { offset, bytes, arena_bytes } => write!(
                f,
                "tensor at arena offset {offset} ({bytes} bytes) ends past the {arena_bytes} byte arena"
            ),
            TensorFault::QuantOnFloat => f.write_str("f32 tensor carries quantization parameters"),
            TensorFault::QuantMissing => f.write_str("int8 tensor has no quantization parameters"),
            TensorFault::QuantScale => {
                f.write_str("int8 tensor scale is not a finite number above zero")
            }
            TensorFault::QuantZeroPoint { zero_point } => {
                write!(f, "quantized tensor zero point {zero_point} is outside its element type")
            }
            TensorFault::Rank { rank } => write!(
                f,
                "logical rank {rank} is not 1 to 3, or a leading dimension outside it is not 1"
            ),
        }
    }
}

#[cfg(feature = "fmt")]
impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Operand::Input(i) => write!(f, "input {i}"),
            Operand::Output => f.write_str("output"),
            Operand::Band => f.write_str("band (fused convolution rows)"),
        }
    }
}

#[cfg(feature = "fmt")]
impl fmt::Display for SpanRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpanRole::Weights => "weights",
            SpanRole::Bias => "bias",
            SpanRole::PadValues => "pad values",
            SpanRole::Scale => "scale",
            SpanRole::Shift => "shift",
            SpanRole::Offset => "offset",
            SpanRole::Multipliers => "requantization multipliers",
            SpanRole::Shifts => "requantization shifts",
            SpanRole::Table => "table",
            SpanRole::Indices => "indices",
        })
    }
}

#[cfg(feature = "fmt")]
impl fmt::Display for SpanFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SpanFault::Length { expected, found } => {
                write!(f, "holds {found} bytes, the shapes need {expected}")
            }
            SpanFault::Misaligned { offset } => {
                write!(f, "offset {offset} is not a multiple of 4")
            }
            SpanFault::OutOfBounds { end, weights_len } => write!(
                f,
                "ends at byte {end}, past the {weights_len} byte weights section"
            ),
        }
    }
}

#[cfg(feature = "fmt")]
impl fmt::Display for ParamFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParamFault::ZeroKernel => f.write_str("kernel size is zero"),
            ParamFault::ZeroStride => f.write_str("stride is zero"),
            ParamFault::ZeroDilation => f.write_str("dilation is zero"),
            ParamFault::ZeroGroups => f.write_str("groups is zero"),
            ParamFault::GroupsDontDivide {
                groups,
                in_c,
                out_c,
            } => write!(
                f,
                "groups {groups} does not divide input channels {in_c} and output channels {out_c}"
            ),
            ParamFault::WindowLargerThanInput => {
                f.write_str("window is larger than the padded input")
            }
            ParamFault::PoolPadTooLarge => {
                f.write_str("pooling padding is not smaller than the window")
            }
            ParamFault::FusedConvPad => f.write_str(
                "fused convolution padding (top or bottom) is not smaller than its window                  height; re-convert the model (the tool fuses only convolutions without such                  padding)",
            ),
            ParamFault::BandRows {
                rows,
                needed,
                conv_rows,
            } => write!(
                f,
                "fused band holds {rows} convolution rows; it needs {needed} to {conv_rows}                  (a pooling window's rows up to the whole convolution output)"
            ),
            ParamFault::NotAPermutation { perm } => {
                write!(
                    f,
                    "transpose perm {perm:?} is not a permutation of [0, 1, 2]"
                )
            }
            ParamFault::ClipBounds => f.write_str("clip bounds are NaN or lo > hi"),
            ParamFault::NotFinite => f.write_str("parameter is NaN or infinite"),
            ParamFault::FusedActivation => f.write_str(
                "int8 layer embeds a fused activation other than Identity \
                 (int8 layers fuse ReLU / ReLU6 as their clamp)",
            ),
            ParamFault::Requant => f.write_str(
                "requantization multiplier/shift outside the range the host tool produces",
            ),
            ParamFault::ClampBounds { min, max } => {
                write!(f, "output clamp has min {min} > max {max}")
            }
            ParamFault::PoolWindowTooLarge { area, max } => write!(
                f,
                "int8 pooling window has {area} elements, more than the {max} its sums allow"
            ),
            ParamFault::Axis { axis } => write!(f, "axis {axis} is not 0, 1 or 2"),
            ParamFault::ZeroStep => f.write_str("slice step is zero"),
            ParamFault::IndexOutOfRange { index, len } => write!(
                f,
                "reads index {index} along an axis of {len} (the input ends before it)"
            ),
            ParamFault::DenseQuadInputs { inputs } => write!(
                f,
                "int16 dense weights (layout QuadsI16) need a multiple of 4 input features, the \
                 layer has {inputs}; re-convert with `icefold convert --dense-weights int8`"
            ),
            ParamFault::DensePairs(fault) => match fault {
                crate::format::PairsFault::Shape => f.write_str(
                    "dense weights in row pairs (layout PairsI8) need a multiple of 4 input \
                     features and one byte per weight; re-convert with `icefold convert \
                     --dense-weights int8-rows`",
                ),
                crate::format::PairsFault::Range { row, input } => write!(
                    f,
                    "dense weight row {row} input {input} (layout PairsI8) decodes outside the \
                     int8 range; the blob is damaged or not written by the icefold tool \
                     (re-convert the model)"
                ),
                crate::format::PairsFault::Sum { row, bound } => write!(
                    f,
                    "dense weight row {row} (layout PairsI8) has 128 x positions x sum |w| = \
                     {bound}, above the layout's 8388607; re-convert with `icefold convert \
                     --dense-weights int8-rows`"
                ),
            },
            ParamFault::WideWeightRange { index, value } => write!(
                f,
                "int16 dense weight {index} is {value}, outside the int8 range -128..=127 the \
                 accumulator bound assumes; the blob is damaged or not written by the icefold \
                 tool (re-convert the model)"
            ),
        }
    }
}

#[cfg(feature = "fmt")]
impl fmt::Display for LayerFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayerFault::InputCount { expected, found } => {
                write!(f, "has {found} inputs, the operation takes {expected}")
            }
            LayerFault::Tensor { operand, fault } => write!(f, "{operand}: {fault}"),
            LayerFault::Shape { operand, expected, found } => write!(
                f,
                "{operand} has dims {found:?}, the operation implies {expected:?}"
            ),
            LayerFault::Param(p) => write!(f, "{p}"),
            LayerFault::Span { role, fault } => write!(f, "{role} {fault}"),
            LayerFault::WritesModelInput => f.write_str("writes the model input tensor"),
            LayerFault::DuplicateWrite { tensor } => {
                write!(f, "writes tensor {tensor}, which an earlier layer already wrote")
            }
            LayerFault::UninitializedRead { tensor } => write!(
                f,
                "reads tensor {tensor}, which is neither the model input nor written by an earlier layer"
            ),
            LayerFault::TensorMismatch { tensor } => write!(
                f,
                "describes tensor {tensor} differently from where it is defined"
            ),
            LayerFault::DType { operand, expected, found } => write!(
                f,
                "{operand} is {}, the operation takes {}",
                dtype_name(found),
                dtype_name(expected)
            ),
            LayerFault::QuantMismatch { operand } => write!(
                f,
                "{operand} quantization differs from input 0's, which this operation keeps"
            ),
            LayerFault::SoftmaxOutputQuant => f.write_str(
                "softmax output must have scale 1/256 and zero point -128 (int8) or scale \
                 1/32768 and zero point 0 (int16)",
            ),
            LayerFault::AccumulatorOverflow { channel, products } => write!(
                f,
                "output channel {channel}: bias plus {products} int8 products can overflow the \
                 i32 accumulator; re-quantize with a smaller bias (or split the layer)"
            ),
            LayerFault::OverlapsOwnInput { input } => {
                write!(f, "output overlaps input {input} in the arena")
            }
            LayerFault::InPlaceRow { input, row } => write!(
                f,
                "output row {row} overwrites rows of input {input} that are still to be read \
                 (an in-place layer's output must trail its input)"
            ),
            LayerFault::InPlaceDirections => f.write_str(
                "output overlaps one input from below and another from above; no row order is \
                 safe for both",
            ),
            LayerFault::BandOverlapsOutput => {
                f.write_str("fused band overlaps the layer's output in the arena")
            }
            LayerFault::ClobbersLiveTensor { tensor } => write!(
                f,
                "output overwrites tensor {tensor} while it is still needed; the arena plan is wrong"
            ),
            LayerFault::ViewOperand { operand } => write!(
                f,
                "{operand} is a view into a wider tensor, which this operation cannot read or \
                 write (convolutions, channel concatenations and slices in place write views; \
                 convolutions read one as their input, a channel concatenation in its own slot, \
                 unrescaled, and a slice in place as its input); re-convert the model with the \
                 icefold tool"
            ),
        }?;
        if matches!(
            self,
            LayerFault::OverlapsOwnInput { .. }
                | LayerFault::InPlaceRow { .. }
                | LayerFault::InPlaceDirections
                | LayerFault::BandOverlapsOutput
                | LayerFault::ClobbersLiveTensor { .. }
        ) {
            f.write_str(" (re-run the icefold tool's planner)")?;
        }
        Ok(())
    }
}
