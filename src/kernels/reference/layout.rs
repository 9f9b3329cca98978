//! Layout kernels: transpose and constant padding. They only move elements, so they serve every
//! element type (f32 and int8; the int8 path calls them with `i8`).

/// `output` is `input` (`in_dims`, row-major) with output dimension `k` taken from input
/// dimension `perm[k]`.
pub fn transpose<T: Copy>(perm: [u8; 3], in_dims: [usize; 3], input: &[T], output: &mut [T]) {
    transpose_map(perm, in_dims, input, output, |x| x);
}

/// [`transpose`] with each element converted by `f` as it moves (the engine writes a
/// channels-first caller input into the arena this way, quantizing as it goes).
pub fn transpose_map<S: Copy, T>(
    perm: [u8; 3],
    in_dims: [usize; 3],
    input: &[S],
    output: &mut [T],
    f: impl Fn(S) -> T,
) {
    let in_strides = [in_dims[1] * in_dims[2], in_dims[2], 1];
    let pick = |k: usize| {
        let axis = usize::from(perm.get(k).copied().unwrap_or(0));
        let dim = in_dims.get(axis).copied().unwrap_or(0);
        let stride = in_strides.get(axis).copied().unwrap_or(0);
        (dim, stride)
    };
    let ((d0, s0), (d1, s1), (d2, s2)) = (pick(0), pick(1), pick(2));
    // The whole output present and every input inside `input`: for each outer index and each
    // innermost index, a run along the middle dimension (the pixels of one channel when a
    // channels-first input is written into the arena: a run of a row of pixels where the
    // element-by-element loop below has runs of 1-3 channels; 13 -> 4 instructions per element
    // on a Cortex-M4, a MobileNet input is 27,648 of them).
    let last = (d0 * d1 * d2 > 0).then(|| (d0 - 1) * s0 + (d1 - 1) * s1 + (d2 - 1) * s2);
    let whole = last.is_some_and(|l| l < input.len()) && output.len() >= d0 * d1 * d2;
    if whole && s1 > 0 {
        for (a, pixels) in output.chunks_exact_mut(d1 * d2).take(d0).enumerate() {
            for c in 0..d2 {
                let ins = input.get(a * s0 + c * s2..).unwrap_or_default();
                if s1 == 1 {
                    for (px, x) in pixels.chunks_exact_mut(d2).zip(ins) {
                        if let Some(o) = px.get_mut(c) {
                            *o = f(*x);
                        }
                    }
                } else {
                    for (px, x) in pixels.chunks_exact_mut(d2).zip(ins.iter().step_by(s1)) {
                        if let Some(o) = px.get_mut(c) {
                            *o = f(*x);
                        }
                    }
                }
            }
        }
        return;
    }
    let mut out = output.iter_mut();
    for a in 0..d0 {
        for b in 0..d1 {
            for c in 0..d2 {
                let (Some(o), Some(x)) = (out.next(), input.get(a * s0 + b * s1 + c * s2)) else {
                    return;
                };
                *o = f(*x);
            }
        }
    }
}

/// Constant padding of the spatial dimensions of an `[H, W, C]` tensor: `pad` is `[top, left,
/// bottom, right]` elements at the edges and `interior` `[rows, columns]` elements between
/// neighbouring input rows and columns, so `output` is `[top + bottom + (H - 1) * (interior[0] + 1)
/// + 1, .., C]`; every element that is not an input element is `value`.
pub fn pad_with<T: Copy>(
    pad: [u16; 4],
    interior: [u16; 2],
    value: T,
    in_dims: [usize; 3],
    input: &[T],
    out_dims: [usize; 3],
    output: &mut [T],
) {
    let [in_h, in_w, channels] = in_dims;
    let [_, out_w, _] = out_dims;
    let [pad_top, pad_left, _, _] = pad.map(usize::from);
    let [step_y, step_x] = interior.map(|i| usize::from(i) + 1);
    // Output coordinate `at` along an axis holds input index `(at - before) / step` when that
    // division is exact and in range; anything else is fill.
    let source = |at: usize, before: usize, step: usize, len: usize| {
        at.checked_sub(before)
            .filter(|d| d % step == 0)
            .map(|d| d / step)
            .filter(|&i| i < len)
    };
    if channels == 0 || out_w == 0 {
        return;
    }
    for (y, out_row) in output.chunks_exact_mut(out_w * channels).enumerate() {
        let in_row = source(y, pad_top, step_y, in_h)
            .and_then(|iy| input.get(iy * in_w * channels..(iy + 1) * in_w * channels));
        for (x, out_px) in out_row.chunks_exact_mut(channels).enumerate() {
            let in_px = source(x, pad_left, step_x, in_w)
                .and_then(|ix| in_row?.get(ix * channels..(ix + 1) * channels));
            match in_px {
                Some(in_px) => out_px.iter_mut().zip(in_px).for_each(|(o, v)| *o = *v),
                None => out_px.fill(value),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    const PERMS: [[u8; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];

    proptest! {
        #[test]
        fn transpose_then_inverse_is_identity(dims in proptest::array::uniform3(1usize..5), which in 0usize..6) {
            let perm = PERMS[which];
            let mut inverse = [0u8; 3];
            for (k, &p) in perm.iter().enumerate() {
                inverse[p as usize] = k as u8;
            }
            let n = dims.iter().product::<usize>();
            let x: std::vec::Vec<f32> = (0..n).map(|i| i as f32).collect();
            let (mut y, mut z) = (std::vec![0.0; n], std::vec![0.0; n]);
            transpose(perm, dims, &x, &mut y);
            let y_dims = perm.map(|p| dims[p as usize]);
            transpose(inverse, y_dims, &y, &mut z);
            prop_assert_eq!(z, x);
        }

        /// Every output element is the input element its coordinates name (the definition,
        /// index by index), on sizes up to 96 per dimension and every permutation; with the
        /// input or output one element short (the element-by-element loop, stopping there).
        #[test]
        fn transpose_picks_each_element_by_index(dims in proptest::array::uniform3(1usize..97), which in 0usize..6, short in 0usize..3) {
            let perm = PERMS[which];
            let n = dims.iter().product::<usize>();
            let x: std::vec::Vec<u32> = (0..n as u32).collect();
            let (x_len, y_len) = match short {
                1 => (n - 1, n),
                2 => (n, n - 1),
                _ => (n, n),
            };
            let mut y = std::vec![u32::MAX; y_len];
            transpose(perm, dims, &x[..x_len], &mut y);
            let strides = [dims[1] * dims[2], dims[2], 1];
            let out_dims = perm.map(|p| dims[p as usize]);
            let mut i = 0;
            let mut missing = false;
            for a in 0..out_dims[0] {
                for b in 0..out_dims[1] {
                    for c in 0..out_dims[2] {
                        let at = [a, b, c].iter().zip(perm).map(|(v, p)| v * strides[p as usize]).sum::<usize>();
                        missing |= at >= x_len || i >= y_len;
                        if i < y_len {
                            // Up to the first element that is not there, then nothing.
                            let want = if missing { u32::MAX } else { x[at] };
                            prop_assert_eq!(y[i], want, "output {}", i);
                        }
                        i += 1;
                    }
                }
            }
        }
    }

    #[test]
    fn transpose_hwc_to_chw_by_hand() {
        // [1, 2, 3] -> perm [2, 0, 1] -> [3, 1, 2].
        let x = [0.0f32, 1.0, 2.0, 10.0, 11.0, 12.0];
        let mut out = [0.0f32; 6];
        transpose([2, 0, 1], [1, 2, 3], &x, &mut out);
        assert_eq!(out, [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]);
        transpose([0, 1, 2], [1, 2, 3], &x, &mut out);
        assert_eq!(out, x);
    }

    #[test]
    fn pad_by_hand() {
        // [1, 2, 1] -> pad top 1, left 0, bottom 0, right 1 -> [2, 3, 1].
        let mut out = [0.0f32; 6];
        pad_with(
            [1, 0, 0, 1],
            [0, 0],
            9.0,
            [1, 2, 1],
            &[1.0, 2.0],
            [2, 3, 1],
            &mut out,
        );
        assert_eq!(out, [9.0, 9.0, 9.0, 1.0, 2.0, 9.0]);
    }

    #[test]
    fn interior_padding_by_hand() {
        // [2, 2, 2] with one fill row and two fill columns between neighbours, one column of
        // edge padding at the right -> [3, 5 + 1, 2].
        let input = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut out = [-1; 36];
        pad_with(
            [0, 0, 0, 1],
            [1, 2],
            0,
            [2, 2, 2],
            &input,
            [3, 6, 2],
            &mut out,
        );
        #[rustfmt::skip]
        let want = [
            1, 2, 0, 0, 0, 0, 3, 4, 0, 0,   0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0,   0, 0,
            5, 6, 0, 0, 0, 0, 7, 8, 0, 0,   0, 0,
        ];
        assert_eq!(out, want);
    }
}
