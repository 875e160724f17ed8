//! Flag values more than one binary takes, parsed once with one wording:
//! the incident clock's time scale and fractions such as learning jitter.

/// Parses a positive, finite time scale (incident seconds per wall second).
pub fn parse_time_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of incident seconds per wall second (e.g. 360)"
        )),
    }
}

/// Parses a fraction from 0 to 1, both included.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} must be a number from 0 to 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_scale_is_positive_and_finite() {
        assert_eq!(parse_time_scale("360"), Ok(360.0));
        assert_eq!(parse_time_scale("0.5"), Ok(0.5));
        for bad in ["0", "-1", "inf", "NaN", "", "fast"] {
            assert_eq!(
                parse_time_scale(bad),
                Err(format!(
                    "{bad:?} is not a positive number of incident seconds per wall second (e.g. 360)"
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn fraction_is_from_0_to_1_inclusive() {
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert_eq!(parse_fraction("0.5"), Ok(0.5));
        assert_eq!(parse_fraction("1"), Ok(1.0));
        for bad in ["-0.1", "1.01", "NaN", "inf", "", "half"] {
            assert_eq!(
                parse_fraction(bad),
                Err(format!("{bad:?} must be a number from 0 to 1")),
                "{bad}"
            );
        }
    }
}
