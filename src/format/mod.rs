//! The model blob: one definition shared by the writer (the host tool) and the reader (this crate).
//!
//! ```text
//! offset 0   header (24 bytes: [`header`])
//! offset 24  meta: postcard encoding of `ModelInfo`, then `layer_count` × `Layer`
//!            zero padding up to the next multiple of `WEIGHTS_ALIGN` (from the blob start)
//! ...        weights section (`weights_len` bytes): raw little-endian arrays that layers reference
//!            by `Span` (byte offset and length inside this section)
//! ```
//!
//! Why not everything in postcard: postcard varint-encodes integers wider than a byte, so large
//! f32/i32 arrays are stored raw and aligned, and the runtime borrows them without copying.
//! The written spec is `docs/FORMAT.md`; bump `FORMAT_VERSION` on any change to these types.

use serde::{Deserialize, Serialize};

mod axis;
mod emit;
mod fused;
pub mod header;
mod in_place;
pub mod signature;

pub use axis::{Concat, ConcatI8, Gather, Slice};
pub use fused::{Band, Conv2dPool, Conv2dPoolI16, Conv2dPoolI8};
pub use in_place::{InPlaceBounds, RowWindow};

pub use crate::kernels::{Activation, PoolKind};
pub use crate::quant::{Clamp, ClampI16, Requant};
pub use emit::{emit, emitted_len, EmitError};
pub use header::{Header, HEADER_LEN};

/// First four bytes of every blob.
pub const MAGIC: [u8; 4] = *b"ICEF";
/// Version of the layout described here. Readers reject every other version.
pub const FORMAT_VERSION: u16 = 12;
/// Alignment of the weights section, counted from the start of the blob.
pub const WEIGHTS_ALIGN: usize = 16;
/// Alignment of every tensor offset in the arena and of the arena itself.
pub const ARENA_ALIGN: usize = 4;
/// Largest number of input operands of one layer.
pub const MAX_LAYER_INPUTS: usize = 2;

/// The CRC used over the bytes after the header. On 64-bit desktop targets, where a load (and
/// the host tool, which loads its blobs many times while converting) checks megabytes of weights,
/// with sixteen 1 KiB tables, several times faster than the one table microcontrollers keep.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub static CRC: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);
/// The CRC used over the bytes after the header.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// serde's decoder of a field's type, called rather than inlined: the fields of a type many
/// records hold (`#[serde(deserialize_with = "crate::format::out_of_line")]`, e.g. every
/// [`Span`]) then share one copy of its postcard varint loops instead of one per record. The
/// same bytes and errors as the derive's direct call.
#[inline(never)]
pub(crate) fn out_of_line<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer)
}

/// Byte offset of the weights section for a given meta length.
pub const fn weights_offset(meta_len: usize) -> usize {
    (HEADER_LEN + meta_len).div_ceil(WEIGHTS_ALIGN) * WEIGHTS_ALIGN
}

/// Element type of a tensor in the arena.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DType {
    /// IEEE-754 single precision.
    F32,
    /// Signed 8-bit, affine-quantized (`real = scale * (q - zero_point)`).
    I8,
    /// Signed 16-bit little-endian, affine-quantized like `I8`, in two places: a model's output
    /// head (the output of a `DenseI8Wide` layer: logits, regression values, 256 times finer than
    /// int8; read by nothing or by a `SoftmaxI16`, whose int16 probabilities are then the output)
    /// and the activations of a network's first convolutions (`Conv2dI16`, 16×8).
    I16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::I8 => 1,
            DType::I16 => 2,
        }
    }
}

/// Affine quantization of an int8 tensor. Only used at the model boundary (float in, float out);
/// the integer kernels use the precomputed multipliers of each layer instead.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Quant {
    /// Real value of one step.
    pub scale: f32,
    /// Integer that represents real zero.
    pub zero_point: i32,
}

/// An activation tensor: where it lives in the arena and how it is shaped.
///
/// Dimensions are row-major. Convolution and pooling read `[H, W, C]`; dense layers read the
/// whole tensor as one vector. A tensor is described identically in every layer that touches it;
/// the loader checks that.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorDesc {
    /// Identifier, unique per tensor in the model.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub id: u16,
    /// Byte offset in the arena (a multiple of `ARENA_ALIGN`).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub offset: u32,
    /// Row-major dimensions; unused leading dimensions are 1.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub dims: [u16; 3],
    /// Element type.
    pub dtype: DType,
    /// Quantization, for `DType::I8` tensors.
    pub quant: Option<Quant>,
    /// `Some` when the tensor is a view into a wider `[H, W, pixel_stride]` tensor stored at
    /// `offset` (zero-copy concatenation: a producer writes its channels straight into its slot
    /// of the concatenated tensor). `None` for a tensor stored densely.
    pub view: Option<View>,
}

/// Where a view's elements lie: element `(p, c)` (pixel `p = y * W + x`, channel `c <
/// dims[2]`) is element `p * pixel_stride + channel + c` of the storage at `offset`, whose
/// `H * W * pixel_stride` elements are the view's storage. Only the layers the loader lists
/// (`docs/FORMAT.md`, "Views") may read or write a view.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct View {
    /// First channel of the view in the storage.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub channel: u16,
    /// Channels per pixel of the storage (elements between consecutive pixels).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub pixel_stride: u16,
}

impl TensorDesc {
    /// Elements between consecutive pixels (`dims[2]` for a dense tensor).
    pub fn pixel_stride(&self) -> usize {
        self.view
            .map_or(usize::from(self.dims[2]), |v| usize::from(v.pixel_stride))
    }
    /// First channel of the tensor in its storage (0 for a dense tensor).
    pub fn channel(&self) -> usize {
        self.view.map_or(0, |v| usize::from(v.channel))
    }
    /// Bytes of the storage the tensor lies in, from `offset`: `byte_len` for a dense tensor,
    /// `H * W * pixel_stride` elements for a view.
    pub fn storage_len(&self) -> usize {
        match self.view {
            None => self.byte_len(),
            Some(v) => {
                usize::from(self.dims[0])
                    * usize::from(self.dims[1])
                    * usize::from(v.pixel_stride)
                    * self.dtype.size()
            }
        }
    }
    /// The tensor's elements in runs of consecutive bytes, given the bytes of its `view_span`
    /// (what an `Observer` gets as a layer's output): the whole tensor at once, or a view pixel by
    /// pixel, skipping the storage's other channels.
    pub fn element_runs<'a>(&self, bytes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let size = self.dtype.size();
        let (step, run) = match self.view {
            None => (bytes.len(), bytes.len()),
            Some(v) => (
                usize::from(v.pixel_stride) * size,
                usize::from(self.dims[2]) * size,
            ),
        };
        bytes
            .chunks(step.max(1))
            .map(move |px| px.get(..run).unwrap_or(px))
    }
    /// Bytes from the storage start to the view's first element, and from there to just past its
    /// last element (`(H·W − 1)·pixel_stride + C` elements): the range a strided kernel gets.
    pub fn view_span(&self) -> (usize, usize) {
        let size = self.dtype.size();
        let pixels = usize::from(self.dims[0]) * usize::from(self.dims[1]);
        let elements = pixels.saturating_sub(1) * self.pixel_stride() + usize::from(self.dims[2]);
        (self.channel() * size, elements * size)
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims[0] as usize * self.dims[1] as usize * self.dims[2] as usize
    }
    /// True when the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype.size()
    }
}

/// A byte range in the weights section.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Span {
    /// Byte offset from the start of the weights section.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub offset: u32,
    /// Length in bytes.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub len: u32,
}

/// 2-D convolution (1-D convolutions have a kernel height of 1) over `[H, W, C]` tensors.
///
/// Weights are f32 `[out_c][kernel_h][kernel_w][in_c / groups]`; bias f32 `[out_c]`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2d {
    /// Kernel size `[height, width]`.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub kernel: [u16; 2],
    /// Stride `[height, width]`, at least 1.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub stride: [u16; 2],
    /// Dilation `[height, width]`, at least 1.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub dilation: [u16; 2],
    /// Padding `[top, left, bottom, right]`.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub pad: [u16; 4],
    /// Channel groups; `groups == in_c == out_c` is a depthwise convolution.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub groups: u16,
    /// Weights.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub weights: Span,
    /// Bias, one per output channel.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub bias: Span,
    /// Value of the padded border per input channel (f32 `[in_c]`), or empty for zeros.
    ///
    /// A BatchNorm folded into the following convolution maps zero padding of its output to
    /// padding of its input with the value the BatchNorm maps to zero; this keeps the fold exact.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub pad_values: Span,
    /// Fused activation.
    pub activation: Activation,
}

/// Fully connected layer: `out = W * in + b` with the input read as one vector.
///
/// Weights are f32 `[out_features][in_features]`; bias f32 `[out_features]`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dense {
    /// Weights.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub weights: Span,
    /// Bias.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub bias: Span,
    /// Fused activation.
    pub activation: Activation,
}

/// 2-D pooling over `[H, W, C]` tensors (global pooling is a window the size of the input).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pool {
    /// Reduction.
    pub kind: PoolKind,
    /// Window `[height, width]`.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub kernel: [u16; 2],
    /// Stride `[height, width]`.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub stride: [u16; 2],
    /// Padding `[top, left, bottom, right]`.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub pad: [u16; 4],
    /// Fused activation.
    pub activation: Activation,
}

/// Frozen per-channel `out = in * scale[c] + shift[c]` over the last dimension.
///
/// This is what a BatchNorm becomes when no neighbouring layer can absorb it (for example after a
/// residual addition). It holds constants only: no statistics, nothing that updates.
/// `scale` and `shift` are f32 `[C]`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Affine {
    /// Per-channel multiplier.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub scale: Span,
    /// Per-channel offset.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub shift: Span,
    /// Fused activation.
    pub activation: Activation,
}

/// Copy with the three dimensions permuted (any element type; quantization unchanged): `out[i[perm[0]], i[perm[1]], i[perm[2]]] = in[i]`
/// style relabelling, i.e. output dimension `k` is input dimension `perm[k]`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transpose {
    /// A permutation of `[0, 1, 2]`.
    pub perm: [u8; 3],
}

/// Constant padding of an `[H, W, C]` tensor on the spatial dimensions: at the edges, and
/// between neighbouring input rows and columns (the zero insertion that turns a transposed
/// convolution into a convolution, XLA's "interior" padding).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pad {
    /// Padding `[top, left, bottom, right]`.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub pad: [u16; 4],
    /// Fill elements inserted between neighbouring input `[rows, columns]` (0: none).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub interior: [u16; 2],
    /// Fill value.
    pub value: f32,
}

/// Per-output-channel requantization factors: raw little-endian i32 arrays `[out_c]` (see
/// `quant::Requant`: factor = multiplier * 2^(shift - 31)).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChannelRequant {
    /// Q31 multipliers.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub multipliers: Span,
    /// Power-of-two exponents.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub shifts: Span,
}

/// int8 convolution. Geometry and spans as `Conv2d`, with the element types changed: weights i8
/// `[out_c][kh][kw][in_c/groups]` (symmetric per output channel), bias i32 `[out_c]` with the input
/// zero-point term folded in (`bias - zp_in * sum(w)`), pad_values i8 `[in_c]` or empty (then the
/// border holds the input zero point). `conv.activation` is `Identity`: the fused activation is
/// `clamp`, in the output's quantized domain.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2dI8 {
    /// Geometry and spans.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub conv: Conv2d,
    /// Accumulator to output scale, per output channel.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub requant: ChannelRequant,
    /// Output bounds (fused ReLU / ReLU6 or the full int8 range).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub clamp: Clamp,
}

/// Convolution with int8 weights and int16 activations (16×8, the first layers of a network): as
/// `Conv2dI8`, but the input is int8 or int16 and the output int16 or int8 (not both int8; the
/// operands' `dtype` says which). `pad_values` holds one value per input channel in the input's
/// element type, or is empty. The accumulator and requantization rule are int8's; the output is
/// clamped to `clamp` in int16 steps (for an int8 output the bounds lie in the int8 range).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2dI16 {
    /// Geometry and spans.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub conv: Conv2d,
    /// Accumulator to output scale, per output channel.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub requant: ChannelRequant,
    /// Output bounds (fused ReLU / ReLU6 or the full range).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub clamp: ClampI16,
}

/// How the weights of an int8 dense layer (`DenseI8`, `DenseI8Wide`) are stored (version 11).
/// All hold the same int8 values and compute the same bytes; the host tool chooses
/// (`icefold convert --dense-weights`), and every runtime reads all of them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DenseLayout {
    /// i8 `[out][in]`, row-major: `out · in` bytes at any offset.
    #[default]
    RowsI8,
    /// The same values as i16, in the order a DSP core's kernel reads them with SMLAD and no
    /// widening ([`quad_index`]): `2 · out · in` bytes, 4-aligned, `in` a multiple of 4, every
    /// value in `-128..=127`.
    QuadsI16,
    /// The same int8 values, one byte each, rows in pairs (version 12): per pair `(2p, 2p + 1)`
    /// and input `i`, the byte of row `2p`'s weight then row `2p + 1`'s stored as
    /// `w[2p + 1][i] − [w[2p][i] < 0]` ([`pair_index`], [`pair_weight`]), so each 16-bit half
    /// of a word is `256 · w[2p + 1][i] + w[2p][i]` exactly: one SMLAD of the word as stored
    /// sums both rows' products (row `2p + 1`'s times 256) and one more of its SXTB16 row `2p`'s
    /// alone. `out · in` bytes, 4-aligned, `in` a multiple of 4; a last odd row stored as in
    /// `RowsI8`. The loader checks that every decoded value is int8 and that each pair's
    /// second row keeps `128 · P · Σ_i |w[2p + 1][i]| < 2^23` (`P` the input's positions), the
    /// bound under which the ×256 sum cannot wrap.
    PairsI8,
}

/// Where weight `w[o][i]` of a dense layer with `n_out` rows of `n_in` inputs lies in the bytes
/// of [`DenseLayout::PairsI8`]: rows `2p` and `2p + 1` (`2p + 1 < n_out`) at `2p · n_in + 2i`
/// and `2p · n_in + 2i + 1`; a last odd row at `o · n_in + i`. A permutation of `0 .. n_out ·
/// n_in`.
pub const fn pair_index(n_out: usize, n_in: usize, o: usize, i: usize) -> usize {
    if o % 2 == 1 || o + 1 < n_out {
        (o - o % 2) * n_in + 2 * i + o % 2
    } else {
        o * n_in + i
    }
}

/// The bound [`DenseLayout::PairsI8`] keeps for each pair's second row: `128 · P · Σ_i |w[2p +
/// 1][i]|` below `2^23`, so that 256 times that row's sum fits an `i32` (`P` positions of an
/// int8 input, summed before the products when a pooling is folded into the layer).
pub const PAIR_SUM_LIMIT: u64 = (1 << 23) - 1;

/// Why a dense layer's weights cannot be stored, or were not stored, as
/// [`DenseLayout::PairsI8`]: the first pair (by its second row `row`) that breaks a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PairsFault {
    /// `n_in` is not a nonzero multiple of 4, or the slices do not hold `n_out · n_in` values.
    Shape,
    /// Row `row`'s weight at input `input` is −128 where row `row − 1`'s is negative (stored, it
    /// would be −129); or, read back, a decoded weight is 128.
    Range {
        /// The pair's second row.
        row: u32,
        /// The input.
        input: u32,
    },
    /// Row `row`'s `128 · P · Σ |w|` is `bound`, above [`PAIR_SUM_LIMIT`].
    Sum {
        /// The pair's second row.
        row: u32,
        /// `128 · P · Σ |w|`.
        bound: u64,
    },
}

/// Rows `2p + 1`'s products bound ([`PAIR_SUM_LIMIT`]) for `positions` positions.
fn pair_sum_check(row: usize, abs_sum: u64, positions: usize) -> Result<(), PairsFault> {
    let bound = abs_sum.saturating_mul(128).saturating_mul(positions as u64);
    if bound > PAIR_SUM_LIMIT {
        return Err(PairsFault::Sum {
            row: u32::try_from(row).unwrap_or(u32::MAX),
            bound,
        });
    }
    Ok(())
}

/// Stores row-major int8 weights `rows` (`n_out × n_in`) as [`DenseLayout::PairsI8`] into
/// `out`, for an input of `positions` positions; the first rule broken otherwise (`out` then
/// partly written).
pub fn store_pairs(
    rows: &[i8],
    n_out: usize,
    n_in: usize,
    positions: usize,
    out: &mut [i8],
) -> Result<(), PairsFault> {
    let len = n_out.checked_mul(n_in).ok_or(PairsFault::Shape)?;
    if n_in == 0 || n_in % 4 != 0 || rows.len() != len || out.len() != len {
        return Err(PairsFault::Shape);
    }
    for o in 0..n_out {
        let mut abs_sum = 0u64;
        for i in 0..n_in {
            let w = rows[o * n_in + i];
            let stored = if o % 2 == 1 {
                abs_sum += u64::from(w.unsigned_abs());
                let low = rows[(o - 1) * n_in + i];
                let v = i16::from(w) - i16::from(low < 0);
                i8::try_from(v).map_err(|_| PairsFault::Range {
                    row: u32::try_from(o).unwrap_or(u32::MAX),
                    input: u32::try_from(i).unwrap_or(u32::MAX),
                })?
            } else {
                w
            };
            out[pair_index(n_out, n_in, o, i)] = stored;
        }
        if o % 2 == 1 {
            pair_sum_check(o, abs_sum, positions)?;
        }
    }
    Ok(())
}

/// The loader's check of [`DenseLayout::PairsI8`] bytes `stored`: every decoded weight int8
/// and every pair's second row within [`PAIR_SUM_LIMIT`] for `positions` positions.
pub fn check_pairs(
    stored: &[i8],
    n_out: usize,
    n_in: usize,
    positions: usize,
) -> Result<(), PairsFault> {
    if n_in == 0 || n_in % 4 != 0 || Some(stored.len()) != n_out.checked_mul(n_in) {
        return Err(PairsFault::Shape);
    }
    for (pair, bytes) in stored.chunks_exact(2 * n_in).take(n_out / 2).enumerate() {
        let row = 2 * pair + 1;
        let mut abs_sum = 0u64;
        for (input, lanes) in bytes.chunks_exact(2).enumerate() {
            let decoded = i16::from(lanes[1]) + i16::from(lanes[0] < 0);
            if decoded > 127 {
                return Err(PairsFault::Range {
                    row: u32::try_from(row).unwrap_or(u32::MAX),
                    input: u32::try_from(input).unwrap_or(u32::MAX),
                });
            }
            abs_sum += u64::from(decoded.unsigned_abs());
        }
        pair_sum_check(row, abs_sum, positions)?;
    }
    Ok(())
}

/// Weight `w[o][i]` of [`DenseLayout::PairsI8`] bytes `stored` (`None` outside them): the byte
/// at [`pair_index`], plus 1 for the second row of a pair whose first row's weight is negative.
pub fn pair_weight(stored: &[i8], n_out: usize, n_in: usize, o: usize, i: usize) -> Option<i32> {
    let v = i32::from(*stored.get(pair_index(n_out, n_in, o, i))?);
    if o % 2 == 1 {
        let low = *stored.get(pair_index(n_out, n_in, o - 1, i))?;
        Some(v + i32::from(low < 0))
    } else {
        Some(v)
    }
}

/// Rows per block of [`DenseLayout::QuadsI16`].
pub const QUAD_ROWS: usize = 4;

/// Where weight `w[o][i]` of a dense layer with `n_out` rows of `n_in` inputs (`n_in` a multiple
/// of 4) lies in the i16 array of [`DenseLayout::QuadsI16`]. The rows are taken in blocks of
/// [`QUAD_ROWS`] (the last block holds the `r = n_out − 4b ≤ 4` rows left); inside a block of `r`
/// rows, for each run `j` of four inputs `4j .. 4j + 4`, for `h` in 0, 1, the words of the `r`
/// rows in order, each word `(w[o][4j + h], w[o][4j + h + 2])` (low half first): the lane order
/// SXTB16 gives an input word (`(x0, x2)`, `(x1, x3)`), so one input word times four weight
/// words is four SMLADs. A permutation of `0 .. n_out · n_in`.
pub const fn quad_index(n_out: usize, n_in: usize, o: usize, i: usize) -> usize {
    let block = o / QUAD_ROWS;
    let first = block * QUAD_ROWS;
    let rows = if n_out - first < QUAD_ROWS {
        n_out - first
    } else {
        QUAD_ROWS
    };
    let (k, j, h, e) = (o - first, i / 4, i % 2, (i % 4) / 2);
    first * n_in + j * 4 * rows + h * 2 * rows + 2 * k + e
}

/// int8 fully connected layer: weights i8 `[out][in]` (or as `layout` says), bias i32 `[out]`
/// (zero-point term folded).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DenseI8 {
    /// Weights.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub weights: Span,
    /// Bias.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub bias: Span,
    /// Accumulator to output scale, per output feature.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub requant: ChannelRequant,
    /// Output bounds.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub clamp: Clamp,
    /// How `weights` holds the values (version 11).
    pub layout: DenseLayout,
}

/// int8 fully connected layer with an int16 output (a model's last layer): as `DenseI8`, but the
/// accumulator is requantized to int16 steps (`quant::ClampI16` bounds), so the model's output is
/// not limited to 256 levels. The accumulator and the requantization rule are the same as int8's.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DenseI8Wide {
    /// Weights, i8 `[out][in]` (or as `layout` says).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub weights: Span,
    /// Bias, i32 `[out]` (zero-point term folded).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub bias: Span,
    /// Accumulator to output scale, per output feature.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub requant: ChannelRequant,
    /// Output bounds.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub clamp: ClampI16,
    /// How `weights` holds the values (version 11).
    pub layout: DenseLayout,
}

/// int8 pooling. `pool.activation` is `Identity`. Without `rescale`, output quantization equals
/// the input's.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PoolI8 {
    /// Geometry.
    pub pool: Pool,
    /// Input to output scale for average pooling, if they differ.
    pub rescale: Option<Requant>,
    /// Output bounds.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub clamp: Clamp,
}

/// int8 residual addition (TFLite's scheme: inputs shifted left by `quant::ADD_LEFT_SHIFT`, scaled
/// to a common scale, summed, scaled to the output).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AddI8 {
    /// Per-input factors.
    pub input_requant: [Requant; 2],
    /// Sum to output factor.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub output_requant: Requant,
    /// Output bounds.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub clamp: Clamp,
}

/// int8 frozen per-channel affine layer: `zp_out + r_c((q - zp_in) * scale_c + offset_c)`;
/// `scale` and `offset` are i32 `[C]`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AffineI8 {
    /// Integer per-channel multiplier.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub scale: Span,
    /// Integer per-channel offset.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub offset: Span,
    /// Per-channel factor to the output scale.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub requant: ChannelRequant,
    /// Output bounds.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub clamp: Clamp,
}

/// int8 product of two activations (gating): `clamp(zp_out + requant((a − zp_a)(g − zp_g)))`,
/// the gate repeated along the first input (TensorFlow Lite's integer Mul).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MulI8 {
    /// `s_a · s_g / s_out`.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub requant: Requant,
    /// Output bounds (fused ReLU / ReLU6 or the full int8 range).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub clamp: Clamp,
}

/// int8 PReLU with one slope per channel: `clamp(zp_out + r(q − zp_in))` with `r` = `positive`
/// for `q >= zp_in`, else channel `c`'s factor of `negative`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PReluI8 {
    /// `s_in / s_out`.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub positive: Requant,
    /// `slope[c] · s_in / s_out` per channel (`[C]`, any sign).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub negative: ChannelRequant,
}

/// What a layer computes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op {
    /// Convolution.
    Conv2d(Conv2d),
    /// Fully connected.
    Dense(Dense),
    /// Max or average pooling.
    Pool(Pool),
    /// Element-wise sum of two tensors of the same shape (residual connection).
    Add {
        /// Fused activation.
        activation: Activation,
    },
    /// Frozen per-channel scale and shift.
    Affine(Affine),
    /// A standalone activation.
    Activation(Activation),
    /// Softmax over the last dimension.
    Softmax,
    /// Layout change.
    Transpose(Transpose),
    /// Constant padding.
    Pad(Pad),
    /// int8 convolution.
    Conv2dI8(Conv2dI8),
    /// int8 fully connected.
    DenseI8(DenseI8),
    /// int8 pooling.
    PoolI8(PoolI8),
    /// int8 residual addition.
    AddI8(AddI8),
    /// int8 frozen per-channel affine.
    AffineI8(AffineI8),
    /// int8 clamp (a standalone ReLU / ReLU6), same quantization in and out.
    ClampI8(Clamp),
    /// int8 element-wise function by table: `out = table[q + 128]`, table i8 `[256]` (sigmoid,
    /// leaky ReLU, any unary activation).
    LookupI8 {
        /// The table.
        table: Span,
    },
    /// int8 softmax over the last dimension; table u32 `[256]` of `exp(-scale_in * d) * 2^16` for
    /// `d = max - q`; output quantization scale 1/256, zero point -128.
    SoftmaxI8 {
        /// The exponential table.
        exp_table: Span,
    },
    /// int8 constant padding (the fill is already quantized).
    PadI8 {
        /// Padding `[top, left, bottom, right]`.
        pad: [u16; 4],
        /// Fill elements inserted between neighbouring input `[rows, columns]` (see `Pad`).
        interior: [u16; 2],
        /// Fill value.
        value: i8,
    },
    /// int8 fully connected with an int16 output (a model's last layer).
    DenseI8Wide(DenseI8Wide),
    /// Softmax of an int16 tensor (a wide dense layer's output) over the last dimension, int16
    /// output with scale 1/32768 and zero point 0; tables u32 `[256]` each:
    /// `exp_hi[h] = exp(-scale_in * 256 * h) * 2^31`, `exp_lo[l] = exp(-scale_in * l) * 2^31`
    /// (`kernels::reference::int8::lut::softmax_wide`).
    SoftmaxI16 {
        /// Exponentials of the high byte of `max - q`.
        exp_hi: Span,
        /// Exponentials of the low byte of `max - q`.
        exp_lo: Span,
    },
    /// Convolution with int8 weights and int16 activations (16×8).
    Conv2dI16(Conv2dI16),
    /// Concatenation of two inputs along one dimension (moves elements, one quantization).
    Concat(Concat),
    /// int8 concatenation that rescales the inputs whose quantization is not the output's.
    ConcatI8(ConcatI8),
    /// Every `step`-th index from `start` along one dimension (moves elements).
    Slice(Slice),
    /// Indices picked along one dimension by a table (channel shuffle; moves elements).
    Gather(Gather),
    /// Product of two activations (gating): the second input has the first's dimensions
    /// (element-wise) or `[1, 1, C]` (one value per channel of an `[H, W, C]` first input,
    /// squeeze-excitation).
    Mul {
        /// Fused activation.
        activation: Activation,
    },
    /// int8 product of two activations, operands as `Mul`.
    MulI8(MulI8),
    /// PReLU with one slope per channel over the last dimension: `x` if `x >= 0`, else
    /// `slope[c] · x`; slope f32 `[C]`.
    PRelu {
        /// Per-channel slopes.
        slope: Span,
    },
    /// int8 PReLU with one slope per channel.
    PReluI8(PReluI8),
    /// Convolution then pooling, the pooling computed as the convolution's rows are produced
    /// (version 8).
    Conv2dPool(Conv2dPool),
    /// int8 convolution then int8 pooling, fused likewise (version 8).
    Conv2dPoolI8(Conv2dPoolI8),
    /// 16×8 convolution (int16 in, int8 out) then int8 pooling, fused likewise (version 8).
    Conv2dPoolI16(Conv2dPoolI16),
}

impl Op {
    /// A short lower-case name of the operation, for logs and traces (`"conv2d_i8"`).
    pub const fn name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv2d",
            Op::Dense(_) => "dense",
            Op::Pool(_) => "pool",
            Op::Add { .. } => "add",
            Op::Affine(_) => "affine",
            Op::Activation(_) => "activation",
            Op::Softmax => "softmax",
            Op::Transpose(_) => "transpose",
            Op::Pad(_) => "pad",
            Op::Conv2dI8(_) => "conv2d_i8",
            Op::DenseI8(_) => "dense_i8",
            Op::DenseI8Wide(_) => "dense_i8_i16",
            Op::SoftmaxI16 { .. } => "softmax_i16",
            Op::Conv2dI16(_) => "conv2d_i16",
            Op::PoolI8(_) => "pool_i8",
            Op::AddI8(_) => "add_i8",
            Op::AffineI8(_) => "affine_i8",
            Op::ClampI8(_) => "clamp_i8",
            Op::LookupI8 { .. } => "lookup_i8",
            Op::SoftmaxI8 { .. } => "softmax_i8",
            Op::PadI8 { .. } => "pad_i8",
            Op::Concat(_) => "concat",
            Op::ConcatI8(_) => "concat_i8",
            Op::Slice(_) => "slice",
            Op::Gather(_) => "gather",
            Op::Mul { .. } => "mul",
            Op::MulI8(_) => "mul_i8",
            Op::PRelu { .. } => "prelu",
            Op::PReluI8(_) => "prelu_i8",
            Op::Conv2dPool(_) => "conv2d_pool",
            Op::Conv2dPoolI8(_) => "conv2d_pool_i8",
            Op::Conv2dPoolI16(_) => "conv2d_pool_i16",
        }
    }
}

/// One step of the schedule: an operation, its operands and where its result goes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Layer {
    /// The operation.
    pub op: Op,
    /// Operands; only the first `input_count` are meaningful.
    pub inputs: [TensorDesc; MAX_LAYER_INPUTS],
    /// Number of operands (2 for `Add`, `AddI8`, `Concat`, `ConcatI8`; else 1).
    pub input_count: u8,
    /// The result.
    pub output: TensorDesc,
}

impl Layer {
    /// True when input `k` is not moved by the layer because the output already holds it where
    /// the operation puts it (the loader checks the descriptions that say so):
    /// - input `k` of a concatenation along channels already lies in its slot of the output (its
    ///   producer wrote it there through a view): the concatenation does not move it;
    /// - the output of a `Slice` with step 1 along channels (axis 2) or rows (axis 0) is a view
    ///   of its input's storage (version 10): along channels the same pixels from channel
    ///   `start` on, at the input's pixel stride; along rows the input's description from row
    ///   `start` on (a dense input: a plain offset). The slice moves nothing; its readers read
    ///   the input's bytes in place.
    pub fn in_place(&self, k: usize) -> bool {
        if k >= usize::from(self.input_count) {
            return false;
        }
        let Some(x) = self.inputs.get(k) else {
            return false;
        };
        let y = &self.output;
        match self.op {
            Op::Concat(Concat { axis: 2 }) | Op::ConcatI8(ConcatI8 { axis: 2, .. }) => {
                let slot = match k {
                    0 => 0,
                    _ => self.inputs.first().map_or(0, |a| usize::from(a.dims[2])),
                };
                x.view.is_some()
                    && x.offset == y.offset
                    && x.dtype == y.dtype
                    && x.pixel_stride() == y.pixel_stride()
                    && x.dims[..2] == y.dims[..2]
                    && x.channel() == y.channel() + slot
            }
            Op::Slice(s) if s.step == 1 && x.dtype == y.dtype => match s.axis {
                2 => {
                    y.view.is_some()
                        && y.offset == x.offset
                        && y.pixel_stride() == x.pixel_stride()
                        && y.dims[..2] == x.dims[..2]
                        && y.channel() == x.channel() + usize::from(s.start)
                }
                0 => {
                    let row =
                        u64::from(x.dims[1]) * x.pixel_stride() as u64 * x.dtype.size() as u64;
                    y.view == x.view
                        && y.dims[1..] == x.dims[1..]
                        && u64::from(y.offset) == u64::from(x.offset) + u64::from(s.start) * row
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// True for a `Slice` whose output is a view of its input in place ([`Layer::in_place`]):
    /// the layer moves nothing at run time.
    pub fn is_view_slice(&self) -> bool {
        matches!(self.op, Op::Slice(_)) && self.in_place(0)
    }
}

/// Model-wide facts, first in the meta section.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ModelInfo {
    /// Number of `Layer` records that follow.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub layer_count: u16,
    /// Arena bytes a run needs (the tool's plan).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub arena_bytes: u32,
    /// The model input, written by the caller before the first layer.
    pub input: TensorDesc,
    /// The model output, read after the last layer.
    pub output: TensorDesc,
    /// Rank of the ONNX input per sample (1 to 3): the input's logical shape is the last
    /// `input_rank` entries of `input.dims` (the others are 1). The input is laid out exactly as the
    /// ONNX model's input (row-major, batch removed).
    pub input_rank: u8,
    /// Rank of the ONNX output per sample, like `input_rank`.
    pub output_rank: u8,
    /// How the caller's input becomes `input` (version 9): `None`, laid out as `input`; or
    /// transposed as a `Transpose` with this record would (the caller's tensor, of
    /// [`ModelInfo::caller_input_dims`], is its input and `input` its output). The engine
    /// transposes while it writes the input into the arena, so a model whose ONNX input is
    /// channels-first needs no transposed copy of it in the arena.
    pub input_transpose: Option<Transpose>,
}

impl ModelInfo {
    /// Dims of the input as the caller lays it out: `input.dims`, or with `input_transpose`
    /// the dims whose transpose they are (a dim the permutation does not name stays 1).
    pub fn caller_input_dims(&self) -> [u16; 3] {
        let Some(t) = self.input_transpose else {
            return self.input.dims;
        };
        let mut dims = [1; 3];
        for (k, &axis) in t.perm.iter().enumerate() {
            if let (Some(d), Some(&n)) = (dims.get_mut(usize::from(axis)), self.input.dims.get(k)) {
                *d = n;
            }
        }
        dims
    }
}
