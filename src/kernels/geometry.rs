//! Parameters the kernels take: window geometry, fused activations, pooling reductions.
//!
//! The engine builds these from the blob's records; the kernels do not read the format. The two
//! enums are also fields of the records (the format re-exports them), so they derive serde.

use serde::{Deserialize, Serialize};

/// Window of a convolution: kernel, stride and dilation `[height, width]`, padding `[top, left,
/// bottom, right]`, channel groups. Sizes are in elements of the `[H, W, C]` layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Kernel size.
    pub kernel: [usize; 2],
    /// Stride, at least 1.
    pub stride: [usize; 2],
    /// Dilation, at least 1.
    pub dilation: [usize; 2],
    /// Padding.
    pub pad: [usize; 4],
    /// Channel groups (`groups == in_c == out_c` is a depthwise convolution).
    pub groups: usize,
    /// Elements between consecutive output pixels when the output is a view into a wider tensor
    /// (zero-copy concatenation: output pixel `p`'s channels start at `p · out_pixel_stride`);
    /// 0 for a dense output (`out_c`).
    pub out_pixel_stride: usize,
    /// Elements between consecutive input pixels when the input is a view into a wider tensor
    /// (a channel slice read in place: input pixel `p`'s channels start at
    /// `p · in_pixel_stride`, the slice starting at the first element of `input`); 0 for a
    /// dense input (`in_c`).
    pub in_pixel_stride: usize,
}

impl ConvGeometry {
    /// Elements between consecutive output pixels for an output of `out_c` channels.
    pub fn out_stride(&self, out_c: usize) -> usize {
        if self.out_pixel_stride == 0 {
            out_c
        } else {
            self.out_pixel_stride
        }
    }

    /// Elements between consecutive input pixels for an input of `in_c` channels.
    pub fn in_stride(&self, in_c: usize) -> usize {
        if self.in_pixel_stride == 0 {
            in_c
        } else {
            self.in_pixel_stride
        }
    }

    /// True when the input is a view whose pixels are not `in_c` elements apart: the fast
    /// loops that index the input as dense pixels leave such a layer to the reference kernel.
    pub fn strided_input(&self, in_c: usize) -> bool {
        self.in_stride(in_c) != in_c
    }
}

/// Window and reduction of a pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Reduction.
    pub kind: PoolKind,
    /// Window size.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Padding.
    pub pad: [usize; 4],
}

/// Element-wise function applied to a layer's output (fused) or as its own layer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Activation {
    /// `x`.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, lo), hi)` (ReLU6 is `Clip { lo: 0, hi: 6 }`).
    Clip {
        /// Lower bound.
        lo: f32,
        /// Upper bound.
        hi: f32,
    },
    /// `x` if `x >= 0`, else `alpha * x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `min(max(alpha * x + beta, 0), 1)` (ONNX HardSigmoid; PyTorch's `hardsigmoid` is
    /// `alpha = 1/6, beta = 1/2`).
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * min(max(x / 6 + 1/2, 0), 1)` (ONNX HardSwish, MobileNetV3).
    HardSwish,
    /// `tanh(x)`.
    Tanh,
    /// `x * sigmoid(x)` (SiLU, Swish: EfficientNet).
    Silu,
}

/// Pooling reduction.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PoolKind {
    /// Maximum over the window (padding never wins).
    Max,
    /// Mean over the window; padded positions count only if `count_include_pad`.
    Average {
        /// ONNX `count_include_pad`.
        count_include_pad: bool,
    },
}
