//! Channel shuffle as a permutation of channels. ShuffleNet-style networks export
//! `channel_shuffle` as Reshape `[C, ..] → [g, C/g, ..]`, Transpose swapping the first two axes,
//! Reshape back to `[C, ..]`: a rank-4 tensor per sample, which the runtime does not hold. The
//! three nodes are one `Gather` of channels (`out[a·g + b] = in[b·C/g + a]`); then
//! - a gather read only by a convolution with one group and a full permutation is folded into
//!   that convolution's weights (its input channels permuted: no layer at run time);
//! - a gather read only by channel slices (ShuffleNetV2's split after the shuffle) becomes one
//!   gather per slice (each picks its slice of the permutation: one copy instead of two);
//! - otherwise it stays a `Gather` layer.
//!
//! Runs on the frozen graph at the start of lowering. Only existing values are kept or dropped
//! (no new ones), so calibration ranges computed on the unrewritten graph still apply.

use crate::ir::graph::{FrozenGraph, FrozenOp, ValueId};

/// The channel permutation of Reshape → Transpose → Reshape ending at node `last`, and the
/// indices of the two earlier nodes and the shuffled input, if it is one.
fn shuffle_at(g: &FrozenGraph, last: usize) -> Option<(Vec<usize>, [usize; 2], ValueId)> {
    let r2 = &g.nodes[last];
    if !matches!(r2.op, FrozenOp::Reshape) {
        return None;
    }
    let ti = g.producer(r2.inputs[0])?;
    let t = &g.nodes[ti];
    let FrozenOp::Transpose { perm } = &t.op else {
        return None;
    };
    let r1i = g.producer(t.inputs[0])?;
    let r1 = &g.nodes[r1i];
    if !matches!(r1.op, FrozenOp::Reshape) {
        return None;
    }
    let x = r1.inputs[0];
    let (xs, split, out) = (
        &g.values[x].shape,
        &g.values[r1.output].shape,
        &g.values[r2.output].shape,
    );
    // [C, rest..] → [groups, C / groups, rest..], axes 0 and 1 swapped, back to [C, rest..].
    let swap = perm.len() == split.len()
        && perm.len() >= 2
        && perm[0] == 1
        && perm[1] == 0
        && perm.iter().skip(2).enumerate().all(|(k, &p)| p == k + 2);
    if !swap
        || xs.is_empty()
        || out != xs
        || split.len() != xs.len() + 1
        || split[0] * split[1] != xs[0]
        || split[2..] != xs[1..]
    {
        return None;
    }
    // The intermediates must feed nothing else.
    let only = |v: ValueId, reader: usize| v != g.output && g.consumers(v) == [reader];
    if !only(r1.output, ti) || !only(t.output, last) {
        return None;
    }
    let (groups, per_group) = (split[0], split[1]);
    let indices = (0..per_group)
        .flat_map(|a| (0..groups).map(move |b| b * per_group + a))
        .collect();
    Some((indices, [r1i, ti], x))
}

fn is_permutation(indices: &[usize]) -> bool {
    let mut seen = vec![false; indices.len()];
    indices
        .iter()
        .all(|&i| i < seen.len() && !std::mem::replace(&mut seen[i], true))
}

/// Rewrites every channel shuffle of `g` (see the module docs); returns how many it found.
pub fn shuffle_to_gather(g: &mut FrozenGraph) -> usize {
    let mut dead = vec![false; g.nodes.len()];
    let mut found = 0;
    for last in 0..g.nodes.len() {
        let Some((indices, [r1, t], x)) = shuffle_at(g, last) else {
            continue;
        };
        found += 1;
        dead[r1] = true;
        dead[t] = true;
        let out = g.nodes[last].output;
        g.nodes[last].op = FrozenOp::Gather { axis: 0, indices };
        g.nodes[last].inputs = vec![x];
        if out == g.output {
            continue;
        }
        let readers = g.consumers(out);
        if fold_into_conv(g, last, &readers) || split_into_slices(g, last, &readers) {
            dead[last] = true;
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        let keep = !dead[i];
        i += 1;
        keep
    });
    found
}

/// The gather node `gi` read only by one single-group convolution, as a full permutation: the
/// convolution reads the gather's input with its weights' input channels permuted.
fn fold_into_conv(g: &mut FrozenGraph, gi: usize, readers: &[usize]) -> bool {
    let [ci] = readers else { return false };
    let FrozenOp::Gather { indices, .. } = &g.nodes[gi].op else {
        return false;
    };
    if !is_permutation(indices) {
        return false;
    }
    let (indices, x) = (indices.clone(), g.nodes[gi].inputs[0]);
    let FrozenOp::Conv(conv) = &mut g.nodes[*ci].op else {
        return false;
    };
    let [o, ipg, kh, kw] = conv.weight.shape[..] else {
        return false;
    };
    if conv.group != 1 || ipg != indices.len() {
        return false;
    }
    // conv(gather(x)) = Σ_i w[o][i] x[idx[i]]: weight column i moves to idx[i].
    let taps = kh * kw;
    let mut w = vec![0f32; conv.weight.data.len()];
    for oo in 0..o {
        for (i, &src) in indices.iter().enumerate() {
            let from = (oo * ipg + i) * taps;
            let to = (oo * ipg + src) * taps;
            w[to..to + taps].copy_from_slice(&conv.weight.data[from..from + taps]);
        }
    }
    conv.weight.data = w;
    if let Some(pv) = &mut conv.pad_values {
        let mut permuted = vec![0f32; pv.len()];
        for (i, &src) in indices.iter().enumerate() {
            permuted[src] = pv[i];
        }
        *pv = permuted;
    }
    g.nodes[*ci].inputs[0] = x;
    true
}

/// The gather node `gi` (channels) read only by channel slices: each slice gathers its part of
/// the permutation from the gather's input directly.
fn split_into_slices(g: &mut FrozenGraph, gi: usize, readers: &[usize]) -> bool {
    let FrozenOp::Gather { indices, .. } = &g.nodes[gi].op else {
        return false;
    };
    let all_channel_slices = readers
        .iter()
        .all(|&r| matches!(g.nodes[r].op, FrozenOp::Slice { axis: 0, .. }));
    if readers.is_empty() || !all_channel_slices {
        return false;
    }
    let (indices, x) = (indices.clone(), g.nodes[gi].inputs[0]);
    for &r in readers {
        let FrozenOp::Slice { start, step, .. } = g.nodes[r].op else {
            continue;
        };
        let count = g.values[g.nodes[r].output].shape[0];
        let picked = (0..count).map(|i| indices[start + i * step]).collect();
        g.nodes[r].op = FrozenOp::Gather {
            axis: 0,
            indices: picked,
        };
        g.nodes[r].inputs = vec![x];
    }
    true
}
