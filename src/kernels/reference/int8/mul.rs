//! int8 product of two activations (gating), TensorFlow Lite's integer Mul.

use super::{OutputQuant, Requant};

/// Quantization of an int8 product: the inputs' zero points, the factor
/// `s_a · s_b / s_out` and the output side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MulQuant {
    /// Zero points of the activation and of the gate.
    pub input_zero_points: [i8; 2],
    /// `s_a · s_b / s_out`.
    pub requant: Requant,
    /// Output zero point and clamp (fused ReLU).
    pub output: OutputQuant,
}

/// `out[i] = clamp(zp_out + requant((a[i] − zp_a) · (gate[i mod n] − zp_g)))` for a gate of `n`
/// values: `n = a.len()` is the element-wise product, `n = C` a per-channel gate over `[H, W, C]`.
///
/// The product is exact in i32: each difference is at most 255 in magnitude, the product at most
/// `255² = 65025`. One rounding, in `requant`. An empty gate leaves the output untouched.
pub fn mul(quant: &MulQuant, a: &[i8], gate: &[i8], output: &mut [i8]) {
    if gate.is_empty() {
        return;
    }
    let [zp_a, zp_g] = quant.input_zero_points.map(i32::from);
    for (out_row, a_row) in output
        .chunks_exact_mut(gate.len())
        .zip(a.chunks_exact(gate.len()))
    {
        for (o, (x, g)) in out_row.iter_mut().zip(a_row.iter().zip(gate)) {
            let product = (i32::from(*x) - zp_a) * (i32::from(*g) - zp_g);
            *o = quant.output.requantize(product, quant.requant);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::super::testing::{requantize_naive, Gen};
    use super::*;
    use crate::quant::Clamp;

    #[test]
    fn matches_the_naive_rule_with_extreme_values_and_zero_points() {
        let mut g = Gen(17);
        for round in 0..200 {
            let channels = 1 + (round % 5);
            let positions = 1 + (round % 3);
            let mut a = g.i8s(channels * positions);
            a[0] = -128;
            let gate_len = if round % 2 == 0 { channels } else { a.len() };
            let mut gate = g.i8s(gate_len);
            gate[0] = 127;
            let quant = MulQuant {
                input_zero_points: [g.i8(), g.i8()],
                requant: g.requant(),
                output: OutputQuant {
                    zero_point: g.i8(),
                    clamp: Clamp {
                        min: -100,
                        max: 120,
                    },
                },
            };
            let mut out = std::vec![0i8; a.len()];
            mul(&quant, &a, &gate, &mut out);
            for (i, &o) in out.iter().enumerate() {
                let x = i64::from(a[i]) - i64::from(quant.input_zero_points[0]);
                let y = i64::from(gate[i % gate_len]) - i64::from(quant.input_zero_points[1]);
                let want =
                    requantize_naive(x * y, quant.requant, quant.output.zero_point, -100, 120);
                assert_eq!(o, want, "round {round}, element {i}");
            }
        }
    }

    #[test]
    fn by_hand() {
        // a = 2 * (q - 1), gate = (q + 2) / 4, out = 0.5 * (q - 3): factor 2 * 0.25 / 0.5 = 1.
        let quant = MulQuant {
            input_zero_points: [1, -2],
            requant: Requant::IDENTITY,
            output: OutputQuant {
                zero_point: 3,
                clamp: Clamp::FULL,
            },
        };
        let mut out = [0i8; 4];
        // Per channel (2 channels) over two positions.
        mul(&quant, &[5, -3, 1, 11], &[2, -2], &mut out);
        // (5-1)(2+2) = 16, (-3-1)(-2+2) = 0, 0, (11-1)*0 = 0; plus the zero point 3.
        assert_eq!(out, [19, 3, 3, 3]);
        // Saturation at the clamp.
        mul(&quant, &[127, -128], &[127, 127], &mut out[..2]);
        assert_eq!(out[..2], [127, -128]);
    }
}
