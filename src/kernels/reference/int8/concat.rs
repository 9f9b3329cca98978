//! int8 concatenation with per-input rescaling: the inputs whose quantization is the output's are
//! copied, the others are mapped to the output's grid in integers:
//! `clamp_i8(zp_out + round((q - zp_in) * s_in / s_out))`. The difference is shifted left by
//! [`ADD_LEFT_SHIFT`] bits first and the factor is `s_in / s_out / 2^ADD_LEFT_SHIFT` (as in the
//! int8 addition), so the result is rounded once (to within half a step of the real value)
//! instead of twice by `multiply_by_quantized_multiplier`'s two roundings.

use super::Requant;
use crate::kernels::reference::axis::{concat_mapped, place_channels};
pub use crate::quant::ADD_LEFT_SHIFT;

/// How one input reaches the output's quantization.
#[derive(Clone, Copy, Debug)]
pub struct PartQuant {
    /// The input's zero point.
    pub zero_point: i8,
    /// `s_in / s_out / 2^ADD_LEFT_SHIFT`, or `None` when the input already has the output's
    /// quantization.
    pub rescale: Option<Requant>,
}

fn requantize(q: i8, part: PartQuant, out_zero_point: i8) -> i8 {
    match part.rescale {
        None => q,
        Some(r) => {
            // |q - zp| <= 255, so the shifted difference stays below 2^28.
            let shifted = (i32::from(q) - i32::from(part.zero_point)) << ADD_LEFT_SHIFT;
            let v = i32::from(out_zero_point) + r.apply(shifted);
            // Saturate to int8: the input's range may reach beyond the output's. (`max`/`min`,
            // not `clamp`: no assertion, so no panic path on the device.)
            v.max(i32::from(i8::MIN)).min(i32::from(i8::MAX)) as i8
        }
    }
}

/// `output` = the two inputs joined along `axis`, each mapped to the output's grid.
pub fn concat(
    axis: usize,
    parts: [([usize; 3], &[i8], PartQuant); 2],
    out_zero_point: i8,
    output: &mut [i8],
) {
    let [(a_dims, a, qa), (b_dims, b, qb)] = parts;
    concat_mapped(
        axis,
        (a_dims, a, |v| requantize(v, qa, out_zero_point)),
        (b_dims, b, |v| requantize(v, qb, out_zero_point)),
        output,
    );
}

/// One input written into its slot of a channel concatenation's output, mapped to the output's
/// grid (`axis::place_channels`: the other input is already in place).
pub fn place(
    (channels, input, part): (usize, &[i8], PartQuant),
    slot_and_stride: (usize, usize),
    out_zero_point: i8,
    output: &mut [i8],
) {
    let map = |v| requantize(v, part, out_zero_point);
    place_channels((channels, input, map), slot_and_stride, output);
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::kernels::reference::int8::testing::Gen;

    #[test]
    fn rescaled_input_lands_on_the_output_grid_within_half_a_step() {
        let mut g = Gen(7);
        let (s_a, zp_a) = (0.05f64, -3i8);
        let (s_b, zp_b) = (0.11f64, 10i8);
        // Input b already has the output's quantization: it is copied.
        let (s_out, zp_out) = (s_b, zp_b);
        let a = g.i8s(24);
        let b = g.i8s(12);
        let qa = PartQuant {
            zero_point: zp_a,
            rescale: Requant::from_real(s_a / s_out / f64::from(1 << ADD_LEFT_SHIFT)),
        };
        let qb = PartQuant {
            zero_point: zp_b,
            rescale: None,
        };
        let mut y = std::vec![0i8; 36];
        concat(
            2,
            [([1, 4, 6], &a, qa), ([1, 4, 3], &b, qb)],
            zp_out,
            &mut y,
        );
        for p in 0..4 {
            for c in 0..9 {
                let got = y[p * 9 + c];
                if c < 6 {
                    let real = s_a * (f64::from(a[p * 6 + c]) - f64::from(zp_a));
                    let want = (real / s_out + f64::from(zp_out)).clamp(-128.0, 127.0);
                    assert!(
                        (f64::from(got) - want).abs() <= 0.5 + 1e-6,
                        "{got} vs {want}"
                    );
                } else {
                    assert_eq!(got, b[p * 3 + c - 6], "copied input is unchanged");
                }
            }
        }
    }

    #[test]
    fn rescale_saturates_instead_of_wrapping() {
        let wide = PartQuant {
            zero_point: 0,
            rescale: Requant::from_real(4.0 / f64::from(1 << ADD_LEFT_SHIFT)),
        };
        let copy = PartQuant {
            zero_point: 0,
            rescale: None,
        };
        let mut y = [0i8; 4];
        concat(
            0,
            [([1, 1, 2], &[100, -100], wide), ([1, 1, 2], &[1, 2], copy)],
            0,
            &mut y,
        );
        assert_eq!(y, [127, -128, 1, 2]);
    }
}
