//! Records of a convolution fused with the pooling that reads it (format version 8): the pooling
//! is computed as the convolution's output rows are produced, so the full-resolution convolution
//! output never exists in the arena; only a band of its rows does, in a scratch region that is
//! live during the fused layer alone.

use serde::{Deserialize, Serialize};

use super::{Conv2d, Conv2dI16, Conv2dI8, DType, Layer, Op, Pool, PoolI8, Quant, TensorDesc};

/// The scratch rows of a fused convolution and pooling: `rows` rows of the convolution's output
/// (`[rows, OW, C]`, the output's element type) at `offset` in the arena.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Band {
    /// Byte offset in the arena (a multiple of `ARENA_ALIGN`).
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub offset: u32,
    /// Convolution output rows held at once: at least the rows of one pooling window that lie
    /// inside the convolution output (`min(pool kernel_h, OH)`), at most `OH`.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub rows: u16,
    /// Quantization of the convolution output (the pooling's input): `None` for f32, required for
    /// int8.
    pub quant: Option<Quant>,
}

/// f32 convolution (with its activation) then pooling (with its activation), fused.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2dPool {
    /// The convolution, exactly as its own layer would be.
    #[serde(deserialize_with = "crate::format::out_of_line")]
    pub conv: Conv2d,
    /// The pooling over the convolution's output, exactly as its own layer would be.
    pub pool: Pool,
    /// Where the rows of the convolution output are kept.
    pub band: Band,
}

/// int8 convolution then int8 pooling, fused.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2dPoolI8 {
    /// The convolution, exactly as its own layer would be.
    pub conv: Conv2dI8,
    /// The pooling over the convolution's output, exactly as its own layer would be.
    pub pool: PoolI8,
    /// Where the rows of the convolution output are kept (`quant`: the convolution output's).
    pub band: Band,
}

/// A 16×8 convolution with an int16 input and an int8 output, then int8 pooling, fused (the first
/// convolution of a network whose input is int16).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2dPoolI16 {
    /// The convolution, exactly as its own layer would be (int16 in, int8 out).
    pub conv: Conv2dI16,
    /// The pooling over the convolution's output, exactly as its own layer would be.
    pub pool: PoolI8,
    /// Where the rows of the convolution output are kept (int8, `quant`: the convolution
    /// output's).
    pub band: Band,
}

/// Output length of a window along one axis, `None` when the window does not fit.
fn window_out(
    size: u16,
    kernel: u16,
    stride: u16,
    dilation: u16,
    pads: u16,
    pad_b: u16,
) -> Option<u16> {
    let extent = u32::from(dilation)
        .checked_mul(u32::from(kernel).checked_sub(1)?)?
        .checked_add(1)?;
    let padded = u32::from(size) + u32::from(pads) + u32::from(pad_b);
    let n = padded.checked_sub(extent)?.checked_div(u32::from(stride))? + 1;
    u16::try_from(n).ok()
}

impl Layer {
    /// The pieces of a fused convolution and pooling: the convolution record, the pooling record
    /// and the band; `None` for every other operation.
    pub fn fused(&self) -> Option<(&Conv2d, &Pool, &Band)> {
        match &self.op {
            Op::Conv2dPool(f) => Some((&f.conv, &f.pool, &f.band)),
            Op::Conv2dPoolI8(f) => Some((&f.conv.conv, &f.pool.pool, &f.band)),
            Op::Conv2dPoolI16(f) => Some((&f.conv.conv, &f.pool.pool, &f.band)),
            _ => None,
        }
    }

    /// The whole convolution output a fused layer never stores (`[OH, OW, C]` from the
    /// convolution's geometry, `C` the output's channels), at the band's offset; `None` for other
    /// operations or a geometry that does not fit (the loader refuses it).
    pub fn fused_intermediate(&self) -> Option<TensorDesc> {
        let (conv, _, band) = self.fused()?;
        let x = self.inputs.first()?;
        let [pt, pl, pb, pr] = conv.pad;
        let h = window_out(
            x.dims[0],
            conv.kernel[0],
            conv.stride[0],
            conv.dilation[0],
            pt,
            pb,
        )?;
        let w = window_out(
            x.dims[1],
            conv.kernel[1],
            conv.stride[1],
            conv.dilation[1],
            pl,
            pr,
        )?;
        Some(TensorDesc {
            id: u16::MAX,
            offset: band.offset,
            dims: [h, w, self.output.dims[2]],
            dtype: self.output.dtype,
            quant: band.quant,
            view: None,
        })
    }

    /// The band of a fused layer as a tensor (`[rows, OW, C]` at its offset): the arena bytes the
    /// layer uses besides its input and output.
    pub fn scratch(&self) -> Option<TensorDesc> {
        let (_, _, band) = self.fused()?;
        let mut d = self.fused_intermediate()?;
        d.dims[0] = band.rows;
        Some(d)
    }

    /// Whether the layer is a fused convolution and pooling of `dtype` tensors.
    pub fn is_fused(&self, dtype: DType) -> bool {
        self.fused().is_some() && self.output.dtype == dtype
    }
}
