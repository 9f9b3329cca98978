//! Records of the operations along one dimension of a tensor: concatenation, slicing and
//! gathering (channel shuffle). They move elements (`ConcatI8` also rescales), so a network's
//! branches can be joined and split without a rank-4 tensor at run time.

use serde::{Deserialize, Serialize};

use super::Span;
use crate::quant::Requant;

/// The two inputs joined along dimension `axis` (0, 1 or 2 of the three row-major dims): the
/// output has the inputs' dims but `a[axis] + b[axis]` along `axis`, first input first. It moves
/// elements of any element type but int16; both inputs and the output have one quantization.
/// N inputs are a chain of N - 1 concatenations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Concat {
    /// The dimension the inputs are joined along.
    pub axis: u8,
}

/// int8 concatenation of inputs whose quantization differs from the output's: as [`Concat`], with
/// input `k` copied as is when `rescale[k]` is `None` (its quantization is the output's) and else
/// mapped to `clamp_i8(zp_out + rescale[k].apply((q - zp_in) << 20))` with
/// `rescale[k]` = `s_in / s_out / 2^20` (`quant::ADD_LEFT_SHIFT`: one rounding, as the addition).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConcatI8 {
    /// The dimension the inputs are joined along.
    pub axis: u8,
    /// Per input: the factor to the output's scale, or `None` for the output's quantization.
    pub rescale: [Option<Requant>; 2],
}

/// Every `step`-th index from `start` along `axis`: output index `i` along `axis` reads input
/// index `start + i * step`; the output's dim along `axis` says how many (ONNX `Slice` with a
/// positive step, one output of `Split`). Any element type but int16; quantization unchanged.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Slice {
    /// The dimension sliced.
    pub axis: u8,
    /// First input index taken.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub start: u16,
    /// Distance between taken indices, at least 1.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub step: u16,
}

/// Output index `i` along `axis` reads input index `indices[i]` (u16 `[out dim]`, each below the
/// input's dim): a channel shuffle (a permutation) or any selection. Any element type but int16;
/// quantization unchanged.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Gather {
    /// The dimension gathered along.
    pub axis: u8,
    /// u16 indices, one per output index along `axis` (2-aligned span).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub indices: Span,
}
