//! The finiteness check of float inputs ([`Model::run_f32`](crate::Model::run_f32)).
//!
//! A NaN or an infinity in an input is bad sensor data, not a value the model was trained on, and
//! nothing downstream would say so: a ReLU or max-pool drops a NaN, the float-to-int8 conversion
//! maps it to the zero point, and the model returns a confident, finite answer. So runs refuse
//! such inputs up front, naming the first one.

/// A float value that is not a finite number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NonFinite {
    /// Not a number.
    NaN,
    /// Positive infinity.
    Infinity,
    /// Negative infinity.
    NegInfinity,
}

impl NonFinite {
    /// What `x` is, if it is not finite.
    pub fn of(x: f32) -> Option<NonFinite> {
        if x.is_nan() {
            Some(NonFinite::NaN)
        } else if x == f32::INFINITY {
            Some(NonFinite::Infinity)
        } else if x == f32::NEG_INFINITY {
            Some(NonFinite::NegInfinity)
        } else {
            None
        }
    }
}

#[cfg(feature = "fmt")]
impl core::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            NonFinite::NaN => "NaN",
            NonFinite::Infinity => "inf",
            NonFinite::NegInfinity => "-inf",
        })
    }
}

/// The index and kind of the first element of `input` that is NaN or infinite.
///
/// One pass with an early exit; the common case (every element finite) tests each element's
/// exponent bits once, a few instructions per element (see docs/BENCHMARKS.md for the cost on a
/// Cortex-M4F next to an inference).
pub fn first_non_finite(input: &[f32]) -> Option<(usize, NonFinite)> {
    // A run of values is checked whole without an early exit (a `fold`, which the compiler
    // vectorises on hosts; a search value by value was 2 % of a host int8 inference), and only
    // the run that holds one is searched.
    const RUN: usize = 64;
    for (r, run) in input.chunks(RUN).enumerate() {
        if !run.iter().fold(true, |finite, x| finite & x.is_finite()) {
            let i = run.iter().position(|x| !x.is_finite())?;
            return Some((r * RUN + i, NonFinite::of(*run.get(i)?)?));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn finds_the_first_nan_or_infinity() {
        assert_eq!(
            first_non_finite(&[0.0, -1.5, f32::MAX, f32::MIN_POSITIVE]),
            None
        );
        assert_eq!(first_non_finite(&[]), None);
        assert_eq!(
            first_non_finite(&[1.0, f32::NAN, f32::INFINITY]),
            Some((1, NonFinite::NaN))
        );
        assert_eq!(
            first_non_finite(&[1.0, 2.0, f32::NEG_INFINITY, f32::NAN]),
            Some((2, NonFinite::NegInfinity))
        );
        // Any NaN payload and sign.
        let odd_nan = f32::from_bits(0xffc0_0001);
        assert_eq!(first_non_finite(&[odd_nan]), Some((0, NonFinite::NaN)));
        assert_eq!(
            first_non_finite(&[f32::INFINITY]),
            Some((0, NonFinite::Infinity))
        );
    }

    #[test]
    fn finds_the_first_one_in_any_run() {
        // Lengths around the run of 64 values the search checks at once, a bad value at every
        // place (and a second one after it, which must not be the one named).
        for len in [1usize, 63, 64, 65, 127, 128, 129, 300] {
            assert_eq!(first_non_finite(&std::vec![0.5f32; len]), None);
            for at in 0..len {
                let mut x = std::vec![0.5f32; len];
                x[at] = f32::NEG_INFINITY;
                if at + 1 < len {
                    x[at + 1] = f32::NAN;
                }
                assert_eq!(first_non_finite(&x), Some((at, NonFinite::NegInfinity)));
            }
        }
    }
}
