//! Reactive auto-scaling's decision: the policy reads one CloudWatch alarm.
//! In the incident CloudWatch alarms went to INSUFFICIENT_DATA, so the policy
//! could not decide and scaling was delayed until CloudWatch recovered.

/// The alarm fired: one more task.
pub const SCALE_OUT: &str = "scale-out";
/// The alarm fired but the service is already at its maximum.
pub const AT_MAX: &str = "at-max";
/// The alarm is OK: nothing to do.
pub const WITHIN_TARGET: &str = "within-target";
/// No usable alarm state (INSUFFICIENT_DATA, or CloudWatch did not answer).
pub const NO_DECISION: &str = "no-decision";

/// The action and new desired count for what DescribeAlarms answered.
pub fn decide(alarm: &Result<String, String>, desired: u32, max: u32) -> (&'static str, u32) {
    match alarm.as_deref() {
        Ok("ALARM") if desired < max => (SCALE_OUT, desired + 1),
        Ok("ALARM") => (AT_MAX, desired),
        Ok("OK") => (WITHIN_TARGET, desired),
        // INSUFFICIENT_DATA, an unknown state, or an error: acting on no data
        // could scale the wrong way, so the policy waits.
        _ => (NO_DECISION, desired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_the_alarm_state() {
        let ok = |s: &str| Ok(s.to_owned());
        assert_eq!(decide(&ok("ALARM"), 2, 8), (SCALE_OUT, 3));
        assert_eq!(decide(&ok("ALARM"), 8, 8), (AT_MAX, 8));
        assert_eq!(decide(&ok("OK"), 2, 8), (WITHIN_TARGET, 2));
        assert_eq!(decide(&ok("INSUFFICIENT_DATA"), 2, 8), (NO_DECISION, 2));
        assert_eq!(decide(&Err("unavailable".into()), 2, 8), (NO_DECISION, 2));
    }
}
