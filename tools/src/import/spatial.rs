//! Window geometry shared by Conv and the pools: padding (explicit or `auto_pad`), output sizes,
//! and the extra end padding that `ceil_mode` implies.

use anyhow::{bail, ensure, Result};

use super::attr::{Attrs, MAX_ATTR_SIZE};

/// ONNX `auto_pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AutoPad {
    /// Use the `pads` attribute.
    NotSet,
    /// No padding.
    Valid,
    /// Output size `ceil(in / stride)`, odd padding at the end.
    SameUpper,
    /// Output size `ceil(in / stride)`, odd padding at the start.
    SameLower,
}

/// Geometry of one spatial axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Axis {
    pub before: usize,
    /// End padding, `ceil_extra` included.
    pub after: usize,
    pub out: usize,
    /// End padding added only by `ceil_mode` (not part of the model's own pads).
    pub ceil_extra: usize,
}

/// A sliding window over `n` spatial axes, read from a node's attributes.
#[derive(Clone, Debug)]
pub(super) struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// ONNX order: all begins, then all ends.
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
    /// Pool `ceil_mode`.
    pub ceil: bool,
}

impl Window {
    /// Reads strides, dilations, pads and auto_pad for a window of `kernel`.
    pub fn from_attrs(attrs: &Attrs<'_, '_>, kernel: Vec<usize>) -> Result<Window> {
        let n = kernel.len();
        let auto_pad = match attrs.string("auto_pad")?.as_deref() {
            None | Some("NOTSET") | Some("") => AutoPad::NotSet,
            Some("VALID") => AutoPad::Valid,
            Some("SAME_UPPER") => AutoPad::SameUpper,
            Some("SAME_LOWER") => AutoPad::SameLower,
            Some(other) => bail!("unknown auto_pad {other:?}"),
        };
        let pads = match attrs.ints("pads")? {
            None => vec![0; 2 * n],
            Some(p) => {
                ensure!(
                    p.len() == 2 * n,
                    "attribute pads {p:?} must have {} entries (begins, then ends)",
                    2 * n
                );
                p.iter()
                    .map(|&x| {
                        ensure!(x >= 0, "negative pads {p:?} are not supported");
                        ensure!(x <= MAX_ATTR_SIZE, "pads {p:?} are absurdly large");
                        Ok(x as usize)
                    })
                    .collect::<Result<_>>()?
            }
        };
        Ok(Window {
            strides: attrs.sizes("strides", n, 1, 1)?,
            dilations: attrs.sizes("dilations", n, 1, 1)?,
            ceil: attrs.int("ceil_mode", 0)? != 0,
            kernel,
            pads,
            auto_pad,
        })
    }

    /// Per spatial axis of `input`: padding and output size. With `ceil_mode` the end padding
    /// includes what the last, partial window reaches past the padded input.
    pub fn geometry(&self, input: &[usize]) -> Result<Vec<Axis>> {
        let n = self.kernel.len();
        ensure!(
            input.len() == n,
            "window of {n} axes over {} spatial axes",
            input.len()
        );
        (0..n)
            .map(|k| {
                let (len, s) = (input[k], self.strides[k]);
                let reach = self.dilations[k] * (self.kernel[k] - 1) + 1;
                let (before, after) = match self.auto_pad {
                    AutoPad::NotSet => (self.pads[k], self.pads[n + k]),
                    AutoPad::Valid => (0, 0),
                    AutoPad::SameUpper | AutoPad::SameLower => {
                        let out = len.div_ceil(s);
                        let total = ((out - 1) * s + reach).saturating_sub(len);
                        let small = total / 2;
                        let (before, after) =
                            if self.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
                        return Ok(Axis { before, after, out, ceil_extra: 0 });
                    }
                };
                let padded = len + before + after;
                ensure!(
                    padded >= reach,
                    "the window ({reach} wide with dilation) is larger than the padded input ({padded}) on spatial axis {k}"
                );
                if !self.ceil {
                    return Ok(Axis { before, after, out: (padded - reach) / s + 1, ceil_extra: 0 });
                }
                let mut out = (padded - reach).div_ceil(s) + 1;
                // Like PyTorch and onnxruntime: the last window must start inside the input or
                // the begin padding.
                if (out - 1) * s >= len + before {
                    out -= 1;
                }
                let extra = ((out - 1) * s + reach).saturating_sub(padded);
                Ok(Axis { before, after: after + extra, out, ceil_extra: extra })
            })
            .collect()
    }
}
