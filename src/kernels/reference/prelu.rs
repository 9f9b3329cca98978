//! PReLU with one slope per channel (PyTorch `nn.PReLU(num_parameters=C)`, GhostNet-style
//! networks); one slope for all channels is a leaky ReLU activation instead.

/// `output[.., c] = x` if `x >= 0`, else `slope[c] * x`, over the last dimension of length
/// `slope.len()`. An empty `slope` leaves the output untouched (the loader never passes one).
pub fn prelu(slope: &[f32], input: &[f32], output: &mut [f32]) {
    if slope.is_empty() {
        return;
    }
    for (out_row, in_row) in output
        .chunks_exact_mut(slope.len())
        .zip(input.chunks_exact(slope.len()))
    {
        for (o, (x, s)) in out_row.iter_mut().zip(in_row.iter().zip(slope)) {
            *o = if *x >= 0.0 { *x } else { s * x };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_per_channel_by_hand() {
        // [2, 3]: two positions, three channels.
        let mut out = [0.0f32; 6];
        prelu(
            &[0.5, -1.0, 0.0],
            &[-2.0, -2.0, -2.0, 3.0, 0.0, -0.0],
            &mut out,
        );
        assert_eq!(out, [-1.0, 2.0, -0.0, 3.0, 0.0, -0.0]);
    }
}
