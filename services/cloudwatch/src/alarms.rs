//! Metric alarms: a statistic over the datapoints of an evaluation window,
//! compared with a threshold. A window without datapoints puts the alarm in
//! INSUFFICIENT_DATA: what CloudWatch alarms showed while Kinesis was down.

use cascade_core::ServiceError;
use cascade_proto::cloudwatch as pb;
use pb::{ComparisonOperator, Statistic};

/// Longest alarm name accepted (as AWS).
pub const MAX_NAME_LEN: usize = 255;

/// The state of an alarm, named as AWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmState {
    /// The statistic is within the threshold.
    Ok,
    /// The statistic breaches the threshold.
    Alarm,
    /// No datapoints in the window to judge by.
    InsufficientData,
}

impl AlarmState {
    /// The wire name: "OK", "ALARM" or "INSUFFICIENT_DATA".
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

/// What an alarm watches, validated from PutMetricAlarm.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmDef {
    /// Alarm name (unique key).
    pub name: String,
    /// Namespace of the watched metric.
    pub namespace: String,
    /// Name of the watched metric.
    pub metric: String,
    /// Statistic computed over the window.
    pub statistic: Statistic,
    /// How the statistic is compared with the threshold.
    pub comparison: ComparisonOperator,
    /// The threshold.
    pub threshold: f64,
    /// Evaluation window in incident seconds.
    pub period_s: u32,
    /// Consecutive periods that must each hold a datapoint (at least 1).
    pub evaluation_periods: u32,
}

/// Most evaluation periods an alarm may ask for.
pub const MAX_EVALUATION_PERIODS: u32 = 100;

/// Checks a non-empty name of at most [`MAX_NAME_LEN`] bytes.
pub fn check_name(field: &str, value: &str) -> Result<(), ServiceError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(ServiceError::invalid(format!(
            "{field}: {value:?} must be 1 to {MAX_NAME_LEN} bytes long"
        )));
    }
    Ok(())
}

impl AlarmDef {
    /// Validates a PutMetricAlarm request.
    pub fn from_request(r: pb::PutMetricAlarmRequest) -> Result<Self, ServiceError> {
        check_name("alarm_name", &r.alarm_name)?;
        check_name("namespace", &r.namespace)?;
        check_name("metric_name", &r.metric_name)?;
        let statistic = match Statistic::try_from(r.statistic) {
            Ok(s) if s != Statistic::Unspecified => s,
            _ => {
                return Err(ServiceError::invalid(format!(
                    "statistic: {} is not one of AVERAGE, SUM, MAXIMUM, MINIMUM, SAMPLE_COUNT",
                    r.statistic
                )));
            }
        };
        let comparison = match ComparisonOperator::try_from(r.comparison_operator) {
            Ok(c) if c != ComparisonOperator::Unspecified => c,
            _ => {
                return Err(ServiceError::invalid(format!(
                    "comparison_operator: {} is not one of GREATER_THAN_THRESHOLD, \
                     GREATER_THAN_OR_EQUAL_TO_THRESHOLD, LESS_THAN_THRESHOLD, \
                     LESS_THAN_OR_EQUAL_TO_THRESHOLD",
                    r.comparison_operator
                )));
            }
        };
        if !r.threshold.is_finite() {
            return Err(ServiceError::invalid(format!(
                "threshold: {} must be a finite number",
                r.threshold
            )));
        }
        if r.period_s == 0 {
            return Err(ServiceError::invalid(
                "period_s: 0; the evaluation window must be at least 1 incident second",
            ));
        }
        if r.evaluation_periods > MAX_EVALUATION_PERIODS {
            return Err(ServiceError::invalid(format!(
                "evaluation_periods: {} is above {MAX_EVALUATION_PERIODS}",
                r.evaluation_periods
            )));
        }
        Ok(Self {
            name: r.alarm_name,
            namespace: r.namespace,
            metric: r.metric_name,
            statistic,
            comparison,
            threshold: r.threshold,
            period_s: r.period_s,
            evaluation_periods: r.evaluation_periods.max(1),
        })
    }

    /// Judges the datapoints of each evaluation period, newest first: any
    /// period without one leaves the alarm without data to judge by.
    pub fn evaluate_periods(&self, periods: &[Vec<f64>]) -> (AlarmState, String) {
        if let Some(empty) = periods.iter().position(Vec::is_empty) {
            return (
                AlarmState::InsufficientData,
                format!(
                    "Insufficient Data: no datapoints of {}/{} in evaluation period {} of {} ({} incident s each)",
                    self.namespace,
                    self.metric,
                    empty + 1,
                    periods.len(),
                    self.period_s
                ),
            );
        }
        self.evaluate(&periods.concat())
    }

    /// Judges the window's `values`; the reason reads like AWS's.
    pub fn evaluate(&self, values: &[f64]) -> (AlarmState, String) {
        if values.is_empty() {
            return (
                AlarmState::InsufficientData,
                format!(
                    "Insufficient Data: no datapoints of {}/{} in the last {} incident s",
                    self.namespace, self.metric, self.period_s
                ),
            );
        }
        let stat = statistic(self.statistic, values);
        let breaching = breaches(self.comparison, stat, self.threshold);
        let (state, verb) = if breaching {
            (AlarmState::Alarm, "Threshold Crossed")
        } else {
            (AlarmState::Ok, "Within Threshold")
        };
        (
            state,
            format!(
                "{verb}: {} of {} datapoints = {stat} ({}) vs threshold {}",
                self.statistic.as_str_name(),
                values.len(),
                self.comparison.as_str_name(),
                self.threshold
            ),
        )
    }
}

/// `stat` over non-empty `values`.
pub fn statistic(stat: Statistic, values: &[f64]) -> f64 {
    match stat {
        Statistic::Sum => values.iter().sum(),
        Statistic::Maximum => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Statistic::Minimum => values.iter().copied().fold(f64::INFINITY, f64::min),
        Statistic::SampleCount => values.len() as f64,
        // Unspecified never passes validation; average is the safe reading.
        Statistic::Average | Statistic::Unspecified => {
            values.iter().sum::<f64>() / values.len() as f64
        }
    }
}

/// Whether `value` breaches `threshold` under `cmp`.
pub fn breaches(cmp: ComparisonOperator, value: f64, threshold: f64) -> bool {
    match cmp {
        ComparisonOperator::GreaterThanThreshold => value > threshold,
        ComparisonOperator::GreaterThanOrEqualToThreshold => value >= threshold,
        ComparisonOperator::LessThanThreshold => value < threshold,
        ComparisonOperator::LessThanOrEqualToThreshold => value <= threshold,
        ComparisonOperator::Unspecified => false,
    }
}

/// An alarm with its current state.
#[derive(Debug, Clone)]
pub struct AlarmEntry {
    /// What it watches.
    pub def: AlarmDef,
    /// Current state.
    pub state: AlarmState,
    /// Why it is in that state.
    pub reason: String,
    /// When the state last changed (ms since the epoch).
    pub updated_ms: i64,
}

impl AlarmEntry {
    /// A new alarm, INSUFFICIENT_DATA until first evaluated (as AWS).
    pub fn new(def: AlarmDef, now_ms: i64) -> Self {
        Self {
            def,
            state: AlarmState::InsufficientData,
            reason: "Unchecked: Initial alarm creation".into(),
            updated_ms: now_ms,
        }
    }

    /// Applies an evaluation; returns true if the state changed.
    pub fn apply(&mut self, state: AlarmState, reason: String, now_ms: i64) -> bool {
        let changed = state != self.state;
        if changed {
            self.state = state;
            self.updated_ms = now_ms;
        }
        self.reason = reason;
        changed
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::Alarm {
        pb::Alarm {
            alarm_name: self.def.name.clone(),
            state: self.state.as_str().into(),
            state_reason: self.reason.clone(),
            state_updated_ms: self.updated_ms,
            namespace: self.def.namespace.clone(),
            metric_name: self.def.metric.clone(),
            threshold: self.def.threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_and_comparisons() {
        let v = [1.0, 5.0, 3.0];
        assert_eq!(statistic(Statistic::Average, &v), 3.0);
        assert_eq!(statistic(Statistic::Sum, &v), 9.0);
        assert_eq!(statistic(Statistic::Maximum, &v), 5.0);
        assert_eq!(statistic(Statistic::Minimum, &v), 1.0);
        assert_eq!(statistic(Statistic::SampleCount, &v), 3.0);
        assert!(breaches(
            ComparisonOperator::GreaterThanOrEqualToThreshold,
            3.0,
            3.0
        ));
        assert!(!breaches(
            ComparisonOperator::GreaterThanThreshold,
            3.0,
            3.0
        ));
        assert!(breaches(ComparisonOperator::LessThanThreshold, 2.0, 3.0));
        assert!(breaches(
            ComparisonOperator::LessThanOrEqualToThreshold,
            3.0,
            3.0
        ));
    }

    #[test]
    fn invalid_definitions_name_the_field() {
        let good = pb::PutMetricAlarmRequest {
            alarm_name: "a".into(),
            namespace: "ns".into(),
            metric_name: "m".into(),
            statistic: Statistic::Average as i32,
            comparison_operator: ComparisonOperator::GreaterThanThreshold as i32,
            threshold: 1.0,
            period_s: 60,
            evaluation_periods: 0,
        };
        assert!(AlarmDef::from_request(good.clone()).is_ok());
        assert!(
            AlarmDef::from_request(pb::PutMetricAlarmRequest {
                evaluation_periods: 101,
                ..good.clone()
            })
            .is_err_and(|e| e.to_string().contains("evaluation_periods"))
        );
        let cases = [
            (
                "period_s",
                pb::PutMetricAlarmRequest {
                    period_s: 0,
                    ..good.clone()
                },
            ),
            (
                "statistic",
                pb::PutMetricAlarmRequest {
                    statistic: 0,
                    ..good.clone()
                },
            ),
            (
                "statistic",
                pb::PutMetricAlarmRequest {
                    statistic: 99,
                    ..good.clone()
                },
            ),
            (
                "comparison_operator",
                pb::PutMetricAlarmRequest {
                    comparison_operator: 0,
                    ..good.clone()
                },
            ),
            (
                "alarm_name",
                pb::PutMetricAlarmRequest {
                    alarm_name: String::new(),
                    ..good.clone()
                },
            ),
            (
                "namespace",
                pb::PutMetricAlarmRequest {
                    namespace: String::new(),
                    ..good.clone()
                },
            ),
            (
                "threshold",
                pb::PutMetricAlarmRequest {
                    threshold: f64::NAN,
                    ..good.clone()
                },
            ),
        ];
        for (field, req) in cases {
            match AlarmDef::from_request(req) {
                Err(ServiceError::InvalidArgument(m)) => assert!(m.starts_with(field), "{m}"),
                other => panic!("{field}: expected InvalidArgument, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_evaluation_period_needs_a_datapoint() {
        let def = AlarmDef::from_request(pb::PutMetricAlarmRequest {
            alarm_name: "a".into(),
            namespace: "ns".into(),
            metric_name: "m".into(),
            statistic: Statistic::Average as i32,
            comparison_operator: ComparisonOperator::GreaterThanThreshold as i32,
            threshold: 70.0,
            period_s: 60,
            evaluation_periods: 3,
        })
        .expect("valid");
        let (state, why) = def.evaluate_periods(&[vec![85.0], vec![], vec![90.0]]);
        assert_eq!(state, AlarmState::InsufficientData);
        assert!(why.contains("period 2 of 3"), "{why}");
        let (state, _) = def.evaluate_periods(&[vec![85.0], vec![80.0], vec![90.0]]);
        assert_eq!(state, AlarmState::Alarm);
    }
}
