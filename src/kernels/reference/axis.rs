//! Kernels along one dimension of a row-major 3-D tensor: concatenation, slicing, gathering. They
//! only move elements, so they serve every element type (the engine calls them with `f32` and
//! `i8`). A tensor is seen as `[outer, along, inner]` around the axis; every index goes through
//! `get`, so inconsistent dims (impossible after validation) stop early instead of panicking.

/// `(outer, along, inner)`: the product of the dims before `axis`, the dim at `axis`, the product
/// of the dims after it (`axis >= 3` reads as the last axis).
pub fn around(dims: [usize; 3], axis: usize) -> (usize, usize, usize) {
    match axis {
        0 => (1, dims[0], dims[1] * dims[2]),
        1 => (dims[0], dims[1], dims[2]),
        _ => (dims[0] * dims[1], dims[2], 1),
    }
}

/// `output` = `a` and `b` joined along `axis` (`a`'s indices first); the other dims are equal.
pub fn concat<T: Copy>(
    axis: usize,
    (a_dims, a): ([usize; 3], &[T]),
    (b_dims, b): ([usize; 3], &[T]),
    output: &mut [T],
) {
    concat_mapped(axis, (a_dims, a, |v| v), (b_dims, b, |v| v), output);
}

/// [`concat`] with each input's elements passed through its own map on the way (the int8
/// concatenation rescales an input to the output's grid there).
pub fn concat_mapped<T: Copy, U>(
    axis: usize,
    (a_dims, a, map_a): ([usize; 3], &[T], impl Fn(T) -> U),
    (b_dims, b, map_b): ([usize; 3], &[T], impl Fn(T) -> U),
    output: &mut [U],
) {
    let (_, a_along, inner) = around(a_dims, axis);
    let (_, b_along, _) = around(b_dims, axis);
    let (a_run, b_run) = (a_along * inner, b_along * inner);
    if a_run + b_run == 0 {
        return;
    }
    let rows = output
        .chunks_exact_mut(a_run + b_run)
        .zip(a.chunks_exact(a_run.max(1)))
        .zip(b.chunks_exact(b_run.max(1)));
    // Each output row is `a_run` values of input 0, then `b_run` of input 1. The input leads each
    // zip, so the output iterator is advanced only for values written.
    for ((out, a), b) in rows {
        let mut out = out.iter_mut();
        a.iter().zip(out.by_ref()).for_each(|(v, o)| *o = map_a(*v));
        b.iter().zip(out).for_each(|(v, o)| *o = map_b(*v));
    }
}

/// One input of a concatenation along channels written into its slot: `input` (`channels` per
/// pixel, dense) goes to channels `slot..slot + channels` of each pixel of `output`, whose pixels
/// are `pixel_stride` elements apart, each element passed through `map`. The concatenation runs
/// this for the inputs its producers did not write in place (zero-copy concatenation); the
/// output's other channels are left alone.
pub fn place_channels<T: Copy, U>(
    (channels, input, map): (usize, &[T], impl Fn(T) -> U),
    (slot, pixel_stride): (usize, usize),
    output: &mut [U],
) {
    if channels == 0 {
        return;
    }
    let pixels = output
        .get_mut(slot..)
        .unwrap_or_default()
        .chunks_mut(pixel_stride.max(1))
        .filter_map(|px| px.get_mut(..channels));
    for (out, x) in pixels.zip(input.chunks_exact(channels.max(1))) {
        out.iter_mut().zip(x).for_each(|(o, v)| *o = map(*v));
    }
}

/// Output index `i` along `axis` reads input index `pick(i)`; `out_along` output indices.
fn pick_along<T: Copy>(
    axis: usize,
    in_dims: [usize; 3],
    input: &[T],
    out_along: usize,
    output: &mut [T],
    pick: impl Fn(usize) -> usize,
) {
    let (outer, in_along, inner) = around(in_dims, axis);
    if inner == 0 || out_along == 0 {
        return;
    }
    let mut out = output.chunks_exact_mut(inner);
    for o in 0..outer {
        for i in 0..out_along {
            let start = (o * in_along + pick(i)) * inner;
            let (Some(dst), Some(src)) = (out.next(), input.get(start..start + inner)) else {
                return;
            };
            dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
        }
    }
}

/// Output index `i` along `axis` is input index `start + i * step` (`out_dims[axis]` of them).
pub fn slice<T: Copy>(
    axis: usize,
    (start, step): (usize, usize),
    in_dims: [usize; 3],
    input: &[T],
    out_dims: [usize; 3],
    output: &mut [T],
) {
    let (_, out_along, _) = around(out_dims, axis);
    pick_along(axis, in_dims, input, out_along, output, |i| {
        start + i * step
    });
}

/// Output index `i` along `axis` is input index `indices[i]`.
pub fn gather<T: Copy>(
    axis: usize,
    indices: &[u16],
    in_dims: [usize; 3],
    input: &[T],
    output: &mut [T],
) {
    let (_, in_along, _) = around(in_dims, axis);
    // An index past the input (impossible after validation) reads past its row: clamp it in.
    let pick = |i: usize| {
        let at = indices.get(i).map_or(0, |&k| usize::from(k));
        at.min(in_along.saturating_sub(1))
    };
    pick_along(axis, in_dims, input, indices.len(), output, pick);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// `[2, 3, 2]` with element `(i, j, k)` = `100 i + 10 j + k`.
    fn labelled(dims: [usize; 3], base: i32) -> Vec<i32> {
        let mut v = Vec::new();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    v.push(base + 100 * i as i32 + 10 * j as i32 + k as i32);
                }
            }
        }
        v
    }

    #[test]
    fn concat_along_each_axis_matches_index_arithmetic() {
        for axis in 0..3 {
            let a_dims = [2, 3, 2];
            let mut b_dims = a_dims;
            b_dims[axis] = 1;
            let (a, b) = (labelled(a_dims, 0), labelled(b_dims, 1000));
            let mut out_dims = a_dims;
            out_dims[axis] += 1;
            let mut out = std::vec![0; out_dims.iter().product()];
            concat(axis, (a_dims, &a), (b_dims, &b), &mut out);
            // Definition: out[idx] = a[idx] if idx[axis] < a_dims[axis], else b[idx - a_dims].
            let mut n = 0;
            for i in 0..out_dims[0] {
                for j in 0..out_dims[1] {
                    for k in 0..out_dims[2] {
                        let mut idx = [i, j, k];
                        let want = if idx[axis] < a_dims[axis] {
                            a[(idx[0] * a_dims[1] + idx[1]) * a_dims[2] + idx[2]]
                        } else {
                            idx[axis] -= a_dims[axis];
                            b[(idx[0] * b_dims[1] + idx[1]) * b_dims[2] + idx[2]]
                        };
                        assert_eq!(out[n], want, "axis {axis} at {:?}", [i, j, k]);
                        n += 1;
                    }
                }
            }
        }
    }

    #[test]
    fn slice_takes_every_step_th_channel() {
        let dims = [2, 1, 5];
        let x = labelled(dims, 0);
        let mut y = std::vec![0; 4];
        slice(2, (1, 3), dims, &x, [2, 1, 2], &mut y);
        assert_eq!(y, [1, 4, 101, 104]);
        let mut rows = std::vec![0; 5];
        slice(0, (1, 1), dims, &x, [1, 1, 5], &mut rows);
        assert_eq!(rows, [100, 101, 102, 103, 104]);
    }

    #[test]
    fn gather_permutes_channels_and_never_reads_out_of_bounds() {
        let dims = [1, 2, 4];
        let x = labelled(dims, 0);
        let mut y = std::vec![0; 8];
        gather(2, &[0, 2, 1, 3], dims, &x, &mut y);
        assert_eq!(y, [0, 2, 1, 3, 10, 12, 11, 13]);
        // A bad index (refused by the loader) is clamped, never a panic.
        gather(2, &[9, 0, 0, 0], dims, &x, &mut y);
        assert_eq!(&y[..2], &[3, 0]);
        // A short output stops early.
        let mut short = std::vec![0; 3];
        gather(1, &[1, 0], dims, &x, &mut short);
    }
}
