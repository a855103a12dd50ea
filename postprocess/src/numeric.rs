//! Arithmetic helpers the hot loops share.

/// Rounds to the nearest integer (ties to even) for `|x| < 2^51`, without a libm call: adding
/// and removing 1.5·2^52 leaves no fractional bits. `f64::round` is a function call on the
/// baseline x86-64 target, and this runs once per detection and once per hashed bit.
#[inline]
pub(crate) fn round_nearest(x: f64) -> f64 {
    nearest_with_parity(x).0
}

/// [`round_nearest`] and whether that integer is odd: after the shift the integer sits in the
/// low mantissa bits, so its parity is the lowest bit, with no conversion to an integer.
#[inline]
pub(crate) fn nearest_with_parity(x: f64) -> (f64, bool) {
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let shifted = x + SHIFT;
    (shifted - SHIFT, shifted.to_bits() & 1 == 1)
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // rounding results are exact integers
mod tests {
    use super::*;

    #[test]
    fn round_nearest_agrees_with_round_away_from_ties() {
        for x in [-1000.3, -2.7, -0.2, 0.0, 0.49, 1.51, 999.999, 1e12 + 0.3] {
            assert_eq!(round_nearest(x), x.round(), "{x}");
        }
        assert_eq!(round_nearest(2.5), 2.0, "ties go to even");
    }

    #[test]
    fn the_parity_is_that_of_the_nearest_integer() {
        for x in [0.0, 0.4, 0.6, 1.2, 2.9, 1e7 + 0.3, 1e7 + 1.1, -0.1, -0.7] {
            let (nearest, odd) = nearest_with_parity(x);
            assert_eq!(nearest, x.round(), "{x}");
            assert_eq!(odd, (x.round() as i64) % 2 != 0, "{x}");
        }
    }
}
