//! ConvTranspose (U-Net decoders, autoencoders) as two IR nodes the rest of the pipeline already
//! knows: zero insertion (a `Pad` with interior padding, `stride - 1` zeros between neighbouring
//! input pixels) and a stride-1 convolution with the kernel flipped and its channel axes swapped.
//!
//! A transposed convolution scatters each input pixel times the kernel onto the output at
//! `stride` steps; the same sums gather as a convolution over the zero-inserted input padded by
//! `dilation * (kernel - 1) - pad` on each side (plus `output_padding` at the end). BatchNorm
//! after a ConvTranspose then folds into that convolution like into any other, the int8 path
//! quantizes it like any other, and no new kernel is needed. The price: the convolution also
//! multiplies the inserted zeros, `stride^2` times the MACs of a scatter kernel (documented in
//! docs/ARCHITECTURE.md).

use anyhow::{ensure, Result};
use onnx_rs::ast::Node as OnnxNode;

use super::{
    conv_bias, conv_weight_shape, frozen_op, kernel_shape_matches, real_values, to_f32,
    NodeImporter,
};
use crate::import::attr::Attrs;
use crate::import::spatial::{AutoPad, Window};
use crate::import::tensor::Const;
use crate::ir::graph::{Conv, FrozenOp, Origin, Tensor, ValueId};

/// One spatial axis of a transposed convolution and of the convolution that replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Axis {
    /// Zeros inserted between neighbouring input elements (`stride - 1`).
    interior: usize,
    /// The convolution's padding before and after the zero-inserted input.
    before: usize,
    after: usize,
    /// Output size.
    out: usize,
}

/// The geometry of one axis from ONNX's ConvTranspose attributes: input size `n`, kernel `k`,
/// stride `s`, dilation `d`, `output_padding` `op`, explicit pads (`pads`: begin, end), or the
/// total padding implied by `output_shape` / `auto_pad` SAME (split as the ONNX spec says).
fn axis(
    n: usize,
    [k, s, d, op]: [usize; 4],
    pads: (usize, usize),
    auto_pad: AutoPad,
    output_shape: Option<usize>,
) -> Result<Axis> {
    ensure!(n > 0 && k > 0, "an empty axis (size {n}, kernel {k})");
    let extent = d * (k - 1);
    // The output size with no padding at all.
    let full = s * (n - 1) + op + extent + 1;
    let wanted = match (output_shape, auto_pad) {
        (Some(out), _) => Some(out),
        (None, AutoPad::SameUpper | AutoPad::SameLower) => Some(n * s),
        (None, AutoPad::NotSet | AutoPad::Valid) => None,
    };
    let (begin, end) = match (wanted, auto_pad) {
        (None, AutoPad::Valid) => (0, 0),
        (None, _) => pads,
        (Some(out), _) => {
            ensure!(
                out <= full,
                "the output size {out} is larger than the transposed convolution produces \
                 ({full} without padding)"
            );
            let total = full - out;
            if auto_pad == AutoPad::SameUpper {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            }
        }
    };
    ensure!(
        begin + end < full,
        "pads ({begin}, {end}) leave no output (the unpadded output size is {full})"
    );
    ensure!(
        begin <= extent && end <= extent + op,
        "pads ({begin}, {end}) crop more than the dilated kernel extent {extent}: icefold runs a \
         ConvTranspose as zero insertion and a convolution, which cannot crop its input; export \
         with smaller padding and crop with a Slice after the ConvTranspose"
    );
    Ok(Axis {
        interior: s - 1,
        before: extent - begin,
        after: extent + op - end,
        out: full - begin - end,
    })
}

impl NodeImporter<'_> {
    /// Imports a ConvTranspose node as zero insertion (only when a stride exceeds 1) and a
    /// convolution; the convolution's output is the node's output.
    pub(super) fn conv_transpose(
        &mut self,
        node: &OnnxNode<'_>,
        origin: &Origin,
        out: &str,
        x: ValueId,
        w: &Const,
        b: Option<&Const>,
    ) -> Result<()> {
        let attrs = Attrs::new(node);
        let s = self.shape(x).to_vec();
        // ONNX: [in_channels, out_channels / group, k...].
        let (spatial, c, m_per_group, kernel) =
            conv_weight_shape("ConvTranspose", "transposed convolution", &s, w)?;
        ensure!(
            c == s[0],
            "the weight has shape {:?} for {c} input channels, but the input has {}",
            w.shape,
            s[0]
        );
        let group = attrs.int("group", 1)?;
        ensure!(
            group >= 1 && c as i64 % group == 0,
            "group {group} must be at least 1 and divide the {c} input channels"
        );
        let group = group as usize;
        let m = m_per_group * group;
        kernel_shape_matches(&attrs, &kernel)?;
        let window = Window::from_attrs(&attrs, kernel.clone())?;
        let output_padding = attrs.sizes("output_padding", spatial, 0, 0)?;
        let output_shape = match attrs.ints("output_shape")? {
            None => None,
            Some(v) => {
                // The spatial sizes, sometimes written with N and C in front.
                let v = &v[v.len().saturating_sub(spatial)..];
                ensure!(
                    v.len() == spatial && v.iter().all(|&d| d > 0),
                    "output_shape {v:?} must give {spatial} positive spatial sizes"
                );
                Some(v.iter().map(|&d| d as usize).collect::<Vec<_>>())
            }
        };
        let axes = (0..spatial)
            .map(|i| {
                axis(
                    s[1 + i],
                    [
                        kernel[i],
                        window.strides[i],
                        window.dilations[i],
                        output_padding[i],
                    ],
                    (window.pads[i], window.pads[spatial + i]),
                    window.auto_pad,
                    output_shape.as_ref().map(|o| o[i]),
                )
                .map_err(|e| e.context(format!("spatial axis {i}")))
            })
            .collect::<Result<Vec<_>>>()?;

        let bias = conv_bias(b, m)?;
        let data = to_f32(&real_values(w, "the weight")?, "the weight")?;
        let weight = flipped_conv_weight(&data, c, m_per_group, group, &kernel);

        // Zero insertion, where some stride exceeds 1.
        let mut input = x;
        if axes.iter().any(|a| a.interior > 0) {
            let mut interior = vec![0];
            interior.extend(axes.iter().map(|a| a.interior));
            let shape: Vec<usize> = s
                .iter()
                .zip(&interior)
                .map(|(&n, &i)| n + (n - 1) * i)
                .collect();
            let pad = FrozenOp::Pad {
                pads: vec![0; 2 * s.len()],
                interior,
                value: 0.0,
            };
            input = self.add_node(
                origin,
                &format!("{out} (zero insertion)"),
                frozen_op(pad, x, shape),
            )?;
        }
        let (weight_shape, pads, dilations, out_shape) = if spatial == 2 {
            (
                [m, c / group, kernel[0], kernel[1]],
                [axes[0].before, axes[1].before, axes[0].after, axes[1].after],
                [window.dilations[0], window.dilations[1]],
                vec![m, axes[0].out, axes[1].out],
            )
        } else {
            (
                [m, c / group, 1, kernel[0]],
                [0, axes[0].before, 0, axes[0].after],
                [1, window.dilations[0]],
                vec![m, axes[0].out],
            )
        };
        let conv = Conv {
            weight: Tensor::new(weight_shape.to_vec(), weight),
            bias,
            strides: [1, 1],
            pads,
            dilations,
            group,
            pad_values: None,
            spatial_rank: spatial,
        };
        self.add_node(
            origin,
            out,
            frozen_op(FrozenOp::Conv(conv), input, out_shape),
        )?;
        Ok(())
    }
}

/// The convolution weight `[m, c / group, k...]` equivalent to ConvTranspose weight `w`
/// (`[c, m / group, k...]`, row-major): per group, input and output channel axes swapped and
/// the kernel flipped on every spatial axis.
fn flipped_conv_weight(
    w: &[f32],
    c: usize,
    m_per_group: usize,
    group: usize,
    kernel: &[usize],
) -> Vec<f32> {
    let taps: usize = kernel.iter().product();
    let c_per_group = c / group;
    let mut out = vec![0.0; w.len()];
    for g in 0..group {
        for ci in 0..c_per_group {
            for mo in 0..m_per_group {
                let src = ((g * c_per_group + ci) * m_per_group + mo) * taps;
                let dst = ((g * m_per_group + mo) * c_per_group + ci) * taps;
                // Reversing the row-major taps flips every spatial axis at once.
                for t in 0..taps {
                    out[dst + t] = w[src + taps - 1 - t];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(n: usize, k: usize, s: usize, pads: (usize, usize), op: usize) -> Axis {
        axis(n, [k, s, 1, op], pads, AutoPad::NotSet, None).unwrap()
    }

    #[test]
    fn geometry_matches_the_onnx_output_size_formula() {
        // PyTorch ConvTranspose2d(k=3, s=2, p=1, output_padding=1): 8 -> 16.
        let a = geometry(8, 3, 2, (1, 1), 1);
        assert_eq!(
            a,
            Axis {
                interior: 1,
                before: 1,
                after: 2,
                out: 16
            }
        );
        // DCGAN's k=4, s=2, p=1: 8 -> 16.
        assert_eq!(geometry(8, 4, 2, (1, 1), 0).out, 16);
        // The zero-inserted input (15) padded and convolved gives the same size.
        for (n, k, s, p, op) in [
            (8, 3, 2, 1, 1),
            (5, 4, 3, 0, 2),
            (7, 2, 2, 0, 0),
            (3, 5, 1, 2, 0),
        ] {
            let a = geometry(n, k, s, (p, p), op);
            let inserted = n + (n - 1) * (s - 1);
            assert_eq!(inserted + a.before + a.after - (k - 1), a.out);
            assert_eq!(a.out, s * (n - 1) + op + k - 2 * p);
        }
    }

    #[test]
    fn output_shape_and_same_padding_split_as_onnx_says() {
        // total padding 3 (full 19, wanted 16): SAME_UPPER puts the odd one at the end, NOTSET
        // and SAME_LOWER at the beginning.
        let upper = axis(8, [4, 2, 1, 1], (0, 0), AutoPad::SameUpper, Some(16)).unwrap();
        let lower = axis(8, [4, 2, 1, 1], (0, 0), AutoPad::NotSet, Some(16)).unwrap();
        assert_eq!((upper.before, upper.after, upper.out), (2, 2, 16));
        assert_eq!((lower.before, lower.after, lower.out), (1, 3, 16));
        // SAME without output_shape: n * stride.
        assert_eq!(
            axis(5, [3, 2, 1, 0], (0, 0), AutoPad::SameLower, None)
                .unwrap()
                .out,
            10
        );
    }

    #[test]
    fn cropping_beyond_the_kernel_is_refused_with_what_to_do() {
        let e = axis(8, [2, 2, 1, 0], (2, 0), AutoPad::NotSet, None).unwrap_err();
        assert!(e.to_string().contains("crop with a Slice"), "{e}");
        let e = axis(4, [3, 1, 1, 0], (0, 0), AutoPad::NotSet, Some(9)).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn flipped_weight_swaps_channels_per_group_and_reverses_taps() {
        // c = 2, group 2, m / group = 1, kernel [1, 2]: w[ci][0][0][t] = 10 ci + t.
        let w = [0.0, 1.0, 10.0, 11.0];
        assert_eq!(
            flipped_conv_weight(&w, 2, 1, 2, &[1, 2]),
            [1.0, 0.0, 11.0, 10.0]
        );
        // c = 2, group 1, m = 2, kernel [1, 1]: a transpose of the channel matrix.
        let w = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(
            flipped_conv_weight(&w, 2, 2, 1, &[1, 1]),
            [1.0, 3.0, 2.0, 4.0]
        );
    }
}
