//! Fuse zero padding into convolutions: a `Pad` read only by a convolution becomes that
//! convolution's padding. Runs on the frozen graph, at the start of lowering.

use crate::ir::graph::{FrozenGraph, FrozenOp};

/// Zero-valued Pad nodes whose only reader is a convolution become that convolution's padding
/// (exporters write TF-style 'same' padding as an explicit Pad).
// Indexed on purpose: the loop body mutates other nodes of `g` (the consuming convolution).
#[allow(clippy::needless_range_loop)]
pub fn fuse_pad_into_conv(g: &mut FrozenGraph) {
    let mut dead = vec![false; g.nodes.len()];
    for pi in 0..g.nodes.len() {
        let FrozenOp::Pad {
            pads,
            interior,
            value,
        } = &g.nodes[pi].op
        else {
            continue;
        };
        if interior.iter().any(|&i| i != 0) {
            // Zero insertion is not a convolution's padding.
            continue;
        }
        let (pads, value) = (pads.clone(), *value);
        let pad_out = g.nodes[pi].output;
        let r = pads.len() / 2;
        if value != 0.0
            || !(2..=3).contains(&r)
            || pads[0] != 0
            || pads[r] != 0
            || pad_out == g.output
        {
            continue;
        }
        let consumers = g.consumers(pad_out);
        let [ci] = consumers.as_slice() else { continue };
        let ci = *ci;
        let pad_in = g.nodes[pi].inputs[0];
        let FrozenOp::Conv(conv) = &mut g.nodes[ci].op else {
            continue;
        };
        if conv.pad_values.is_some() {
            continue;
        }
        let (t, l, b, rr) = if r == 3 {
            (pads[1], pads[2], pads[4], pads[5])
        } else {
            (0, pads[1], 0, pads[3])
        };
        conv.pads = [
            conv.pads[0] + t,
            conv.pads[1] + l,
            conv.pads[2] + b,
            conv.pads[3] + rr,
        ];
        g.nodes[ci].inputs[0] = pad_in;
        dead[pi] = true;
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        let keep = !dead[i];
        i += 1;
        keep
    });
}
