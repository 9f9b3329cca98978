//! Softmax over the last dimension.

/// `output[r, c] = exp(x[r, c] - max_r) / sum_c exp(x[r, c] - max_r)` for each row `r` of
/// `channels` elements; subtracting the row maximum keeps `expf` from overflowing.
pub fn softmax(channels: usize, input: &[f32], output: &mut [f32]) {
    if channels == 0 {
        return;
    }
    for (out_row, in_row) in output
        .chunks_exact_mut(channels)
        .zip(input.chunks_exact(channels))
    {
        let max = in_row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (o, x) in out_row.iter_mut().zip(in_row) {
            *o = libm::expf(x - max);
            sum += *o;
        }
        // sum >= 1: the maximum contributes exp(0).
        for o in out_row.iter_mut() {
            *o /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_large_logits_do_not_overflow() {
        let input = [1.0f32, 2.0, 3.0, 1000.0, 1000.0, -1000.0];
        let mut out = [0.0f32; 6];
        softmax(3, &input, &mut out);
        let e = [(-2.0f32).exp(), (-1.0f32).exp(), 1.0];
        let s: f32 = e.iter().sum();
        for (o, x) in out[..3].iter().zip(e) {
            assert!((o - x / s).abs() < 1e-6);
        }
        assert_eq!(&out[3..], &[0.5, 0.5, 0.0]);
    }
}
