//! Flag values more than one binary takes, parsed once with one wording:
//! the incident clock's time scale and fractions such as learning jitter.

/// The time scales a run accepts (incident seconds per wall second). Below
/// 0.01 a scenario's incident day lasts over three months of wall time; above
/// 86,400 a whole incident day passes in one wall second and every modelled
/// timeout is shorter than the host's scheduling. Both ends keep every
/// modelled duration convertible to wall time.
pub const TIME_SCALE_RANGE: std::ops::RangeInclusive<f64> = 0.01..=86_400.0;

/// Checks a time scale against [`TIME_SCALE_RANGE`]; the error says what is valid.
pub fn check_time_scale(v: f64) -> Result<f64, String> {
    if TIME_SCALE_RANGE.contains(&v) {
        Ok(v)
    } else {
        let shown = if (1e-3..1e9).contains(&v.abs()) {
            v.to_string()
        } else {
            format!("{v:e}")
        };
        Err(format!(
            "{shown} is outside {} to {} incident seconds per wall second (e.g. 360)",
            TIME_SCALE_RANGE.start(),
            TIME_SCALE_RANGE.end()
        ))
    }
}

/// Parses a positive, finite time scale (incident seconds per wall second)
/// within [`TIME_SCALE_RANGE`].
pub fn parse_time_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => check_time_scale(v),
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
        assert_eq!(parse_time_scale("86400"), Ok(86_400.0));
        for out in ["1e-300", "0.001", "86401", "1e300"] {
            assert!(
                parse_time_scale(out)
                    .expect_err(out)
                    .contains("outside 0.01 to 86400"),
                "{out}"
            );
        }
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
