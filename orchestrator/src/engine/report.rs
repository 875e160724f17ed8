//! `report.json`, typed: the contract of ../shared/design.md (fields are
//! only ever added). The engine writes it; the HTML renderer, `compare`
//! and the tests read it through these same structs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::{Health, Remediation, Verdict};

/// A scenario run's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The seed every random choice used.
    pub seed: u64,
    /// Incident seconds per wall second.
    pub time_scale: f64,
    /// pass | fail | aborted.
    pub verdict: Verdict,
    /// The remediations in force.
    #[serde(default)]
    pub remediations: Vec<Remediation>,
    /// The incident clock at wall offset 0 ("HH:MM:SS").
    #[serde(default)]
    pub start_clock: String,
    /// Wall seconds from the first step to the end.
    #[serde(default)]
    pub wall_s: f64,
    /// Per service: its impact, judged from customer traffic.
    pub services: BTreeMap<String, ServiceImpact>,
    /// Services in the order they were first impaired.
    #[serde(default)]
    pub impaired_order: Vec<String>,
    /// The dependency edges and whether each carried the failure.
    #[serde(default)]
    pub cascade: Vec<CascadeEdge>,
    /// Per service, its health sampled over the run.
    #[serde(default)]
    pub timeline: BTreeMap<String, Vec<HealthSample>>,
    /// The main fleet's shard maps sampled over the run.
    #[serde(default)]
    pub frontends: Vec<FleetSample>,
    /// Every buffer and backlog the cascade fills, and the fleet's peer
    /// threads, sampled over the run against their capacity (a sample is
    /// kept when the level or capacity changed: read them as steps).
    #[serde(default)]
    pub stocks: Vec<StockSeries>,
    /// Every expectation and how it was judged.
    pub expectations: Vec<ExpectationResult>,
    /// The journal's entries.
    pub events: Vec<Event>,
    /// The replay against the postmortem's timed events (scenarios that
    /// say how each event shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<super::fidelity::Fidelity>,
}

/// One service's impact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceImpact {
    /// Wall offset of its first impairment.
    pub impaired_at_s: Option<f64>,
    /// Wall offset of its last return to serving (none if it never did).
    pub recovered_at_s: Option<f64>,
    /// What customers saw at the first impairment.
    #[serde(default)]
    pub symptom: String,
    /// Highest share of failed customer calls in a health window.
    #[serde(default)]
    pub max_error_rate: f64,
    /// Highest p99 latency in a health window.
    #[serde(default)]
    pub p99_ms: f64,
    /// Wall seconds impaired in all (it may be impaired more than once).
    #[serde(default)]
    pub impaired_s: f64,
    /// Incident clock of the first impairment.
    #[serde(default)]
    pub impaired_clock: Option<String>,
}

/// A dependency edge of the cascade graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeEdge {
    /// The upstream service.
    pub from: String,
    /// The downstream service, which calls `from`.
    pub to: String,
    /// Whether the failure travelled along this edge.
    pub carried: bool,
    /// Wall seconds from the upstream's impairment to the downstream's.
    pub lag_s: Option<f64>,
    /// The downstream's cause that names the upstream (why `carried`).
    #[serde(default)]
    pub evidence: Option<String>,
}

/// One sample of a service's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSample {
    /// Wall offset.
    pub t_s: f64,
    /// Health then.
    pub health: Health,
    /// Share of failed customer calls in the health window.
    pub error_rate: f64,
    /// p99 latency in the health window.
    pub p99_ms: f64,
}

/// One sample of the main fleet's shard maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSample {
    /// Wall offset.
    pub t_s: f64,
    /// Front-ends in the main fleet.
    pub fleet: usize,
    /// With a ready map.
    pub ready: usize,
    /// Still building.
    pub building: usize,
    /// Unusable or down.
    pub unusable: usize,
}

/// One stock (`crate::stocks`) over the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockSeries {
    /// The service holding it (`kinesis` for the peer threads).
    pub service: String,
    /// What it is: `access-log buffer`, `peer threads`, ...
    pub name: String,
    /// `bytes`, `events`, `tasks`, `threads`, `datapoints`.
    pub unit: String,
    /// Its levels, in wall order; each holds until the next.
    pub samples: Vec<StockSample>,
}

/// A stock's level from wall offset `t_s` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockSample {
    /// Wall offset.
    pub t_s: f64,
    /// The level (summed over instances).
    pub level: f64,
    /// The capacity then, when the service reports one.
    pub capacity: Option<f64>,
}

/// How an expectation was judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// Its name in the scenario.
    pub name: String,
    /// Whether it held.
    pub held: bool,
    /// When and why.
    pub detail: String,
}

/// One journal entry, as the report keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall offset.
    pub t_s: f64,
    /// Incident clock.
    #[serde(default)]
    pub clock: String,
    /// What kind of entry.
    pub kind: EventKind,
    /// What happened.
    pub detail: String,
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The run started.
    Start,
    /// The topology is up.
    Up,
    /// The steady-state hypothesis held; the incident clock runs.
    Steady,
    /// The steady-state hypothesis was checked again after the last step.
    SteadyAfter,
    /// A step ran.
    Step,
    /// A step failed.
    StepFailed,
    /// Progress of a rolling restart.
    Restart,
    /// A thread-consumption alarm.
    Alarm,
    /// The shard maps changed.
    ShardMaps,
    /// A service's health changed.
    Health,
    /// An abort condition held.
    Abort,
    /// An expectation held.
    ExpectHeld,
    /// An expectation failed.
    ExpectFailed,
    /// Ctrl-C.
    Interrupted,
    /// The run stopped at `--until`.
    Stopped,
    /// An error stopped the run.
    Error,
    /// A rollback step ran.
    Rollback,
    /// A rollback step failed.
    RollbackFailed,
    /// The fleet was attached to and stays up.
    Attached,
    /// Something worth knowing that changes nothing.
    Warning,
    /// The verdict.
    Verdict,
}

impl EventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Up => "up",
            EventKind::Steady => "steady",
            EventKind::SteadyAfter => "steady-after",
            EventKind::Step => "step",
            EventKind::StepFailed => "step-failed",
            EventKind::Restart => "restart",
            EventKind::Alarm => "alarm",
            EventKind::ShardMaps => "shard-maps",
            EventKind::Health => "health",
            EventKind::Abort => "abort",
            EventKind::ExpectHeld => "expect-held",
            EventKind::ExpectFailed => "expect-failed",
            EventKind::Interrupted => "interrupted",
            EventKind::Stopped => "stopped",
            EventKind::Error => "error",
            EventKind::Rollback => "rollback",
            EventKind::RollbackFailed => "rollback-failed",
            EventKind::Attached => "attached",
            EventKind::Warning => "warning",
            EventKind::Verdict => "verdict",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Report {
    /// Expectations that held.
    pub fn held(&self) -> usize {
        self.expectations.iter().filter(|x| x.held).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_keep_their_wire_names() {
        for k in [
            EventKind::StepFailed,
            EventKind::ExpectHeld,
            EventKind::ShardMaps,
        ] {
            let json = serde_json::to_string(&k).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
    }
}
