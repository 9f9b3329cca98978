//! Reference f32 kernels: plain, safe loops that define what every layer computes.
//!
//! Accumulation order is part of the definition (it fixes the rounding): see [`dot`].

pub mod axis;
pub mod conv;
pub mod dense;
pub mod elementwise;
pub mod int8;
pub mod layout;
pub mod mul;
pub mod pool;
pub mod prelu;
pub mod softmax;

/// Lanes of the partial sums in [`dot`].
const LANES: usize = 8;

/// Dot product of the common prefix of `a` and `b`.
///
/// Defined order: lane `l` sums `a[i] * b[i]` for `i ≡ l (mod 8)` over whole chunks of 8, in
/// increasing `i`; the lanes are added pairwise `((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))`; then the
/// tail elements are added one by one. The independent lanes let the compiler use SIMD (strict
/// IEEE semantics forbid reordering a single running sum).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let (tail_a, tail_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for (acc, (x, y)) in lanes.iter_mut().zip(ca.iter().zip(cb)) {
            *acc += x * y;
        }
    }
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lanes;
    let mut sum = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7));
    for (x, y) in tail_a.iter().zip(tail_b) {
        sum += x * y;
    }
    sum
}

/// Input coordinate of output position `out` at kernel tap `tap` along one axis, or `None` when it
/// falls in the padding: `out * stride + tap * dilation - pad`, if in `0..size`.
///
/// Checked arithmetic, so absurd parameters read as padding instead of overflowing.
#[inline]
pub(crate) fn window_coord(
    out: usize,
    stride: usize,
    tap: usize,
    dilation: usize,
    pad: usize,
    size: usize,
) -> Option<usize> {
    out.checked_mul(stride)?
        .checked_add(tap.checked_mul(dilation)?)?
        .checked_sub(pad)
        .filter(|&i| i < size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_plain_sum_on_exact_values() {
        let a: [f32; 19] = core::array::from_fn(|i| i as f32);
        let b = [2.0f32; 19];
        // Integers: every order gives the exact result 2 * (0 + ... + 18) = 342.
        assert_eq!(dot(&a, &b), 342.0);
        assert_eq!(dot(&[], &[]), 0.0);
        assert_eq!(dot(&a[..3], &b), 6.0, "uses the common prefix");
    }

    #[test]
    fn window_coord_handles_padding_and_overflow() {
        assert_eq!(window_coord(0, 1, 0, 1, 1, 4), None);
        assert_eq!(window_coord(0, 1, 1, 1, 1, 4), Some(0));
        assert_eq!(window_coord(3, 1, 2, 1, 1, 4), None);
        assert_eq!(window_coord(usize::MAX, 2, 0, 1, 0, 4), None);
    }
}
