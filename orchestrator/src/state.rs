//! The states the testbed reports and judges, each an enum listed once: a
//! service's health, a front-end's shard-map state, a run's verdict, and
//! the remediations AWS announced that a run can switch on. Their wire
//! names (serde and clap) are the contract of `status --json` and
//! `report.json`.

use serde::{Deserialize, Serialize};

/// A service's health, judged from customer traffic.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// At least 95% of calls ok, p99 within the deadline.
    Serving,
    /// At least half of the calls ok.
    Degraded,
    /// Less than half ok, or unreachable.
    #[default]
    Down,
}

impl Health {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Serving => "serving",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }

    /// Degraded or down.
    pub fn is_impaired(self) -> bool {
        self != Health::Serving
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A front-end's shard map, as the front-end reports it (or `down` when the
/// process does not answer).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum MapState {
    /// Built: requests can be routed.
    Ready,
    /// Being populated (boot, or a peer snapshot still missing).
    #[default]
    Building,
    /// Construction failed (a peer thread was refused): nothing routes.
    Unusable,
    /// The front-end does not answer at all.
    Down,
}

impl MapState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MapState::Ready => "ready",
            MapState::Building => "building",
            MapState::Unusable => "unusable",
            MapState::Down => "down",
        }
    }

    /// The state a front-end's `Control.GetStatus` names (an unknown name
    /// reads as still building, never as ready).
    pub fn from_wire(s: &str) -> Self {
        match s {
            "ready" => MapState::Ready,
            "unusable" => MapState::Unusable,
            "down" => MapState::Down,
            _ => MapState::Building,
        }
    }

    /// Unusable, or the process is down: it routes nothing.
    pub fn is_failed(self) -> bool {
        matches!(self, MapState::Unusable | MapState::Down)
    }
}

impl std::fmt::Display for MapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A scenario run's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every expectation held.
    Pass,
    /// At least one expectation did not hold.
    Fail,
    /// The run stopped early (Ctrl-C, an abort condition, an error).
    Aborted,
}

impl Verdict {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Aborted => "aborted",
        }
    }

    /// The process exit code of a run with this verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Aborted => 130,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A remediation AWS announced (incident.md), as a variant a run can switch
/// on. This is the one list: the scenario parser, the CLI, `compare` and
/// the README all take it from here.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Remediation {
    /// Cognito webservers shed access records instead of blocking (9).
    CognitoFix,
    /// CloudWatch keeps 3 incident hours of metrics locally and backfills (8).
    CloudwatchLocalBuffer,
    /// CloudWatch on its own, partitioned front-end fleet (6).
    CloudwatchPartitionedFleet,
    /// Lambda's metrics agent buffer is bounded.
    LambdaBoundedAgent,
    /// Booting front-ends read the metadata store, not their peers (4).
    MetadataBootstrap,
    /// The OS thread limit, tested and raised (3): twice the limit.
    RaisedLimit,
    /// Larger servers (1): half as many front-ends, same capacity.
    BiggerServers,
    /// Fine-grained alarm on thread consumption, with its runbook (2).
    ThreadAlarm,
    /// Cellular front-end fleet (7): cells no larger than the starting fleet.
    Cellular,
}

impl Remediation {
    /// Every remediation, in the order the docs list them.
    pub const ALL: [Remediation; 9] = [
        Remediation::CognitoFix,
        Remediation::CloudwatchLocalBuffer,
        Remediation::CloudwatchPartitionedFleet,
        Remediation::LambdaBoundedAgent,
        Remediation::MetadataBootstrap,
        Remediation::RaisedLimit,
        Remediation::BiggerServers,
        Remediation::ThreadAlarm,
        Remediation::Cellular,
    ];

    /// The name scenarios and `--variants` use, e.g. `cognito-fix`.
    pub fn name(self) -> &'static str {
        match self {
            Remediation::CognitoFix => "cognito-fix",
            Remediation::CloudwatchLocalBuffer => "cloudwatch-local-buffer",
            Remediation::CloudwatchPartitionedFleet => "cloudwatch-partitioned-fleet",
            Remediation::LambdaBoundedAgent => "lambda-bounded-agent",
            Remediation::MetadataBootstrap => "metadata-bootstrap",
            Remediation::RaisedLimit => "raised-limit",
            Remediation::BiggerServers => "bigger-servers",
            Remediation::ThreadAlarm => "thread-alarm",
            Remediation::Cellular => "cellular",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }

    /// Every name, comma-separated (for error messages and help).
    pub fn names() -> String {
        Self::ALL.map(Remediation::name).join(", ")
    }
}

impl std::fmt::Display for Remediation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// One column of `cascade compare`: the scenario as written, or with one
/// remediation switched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The scenario as written.
    Baseline,
    /// The scenario with this remediation in force.
    With(Remediation),
}

impl Variant {
    /// The variant's name: `baseline` or the remediation's.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::With(r) => r.name(),
        }
    }

    /// Every valid name, for help and errors.
    pub fn names() -> String {
        format!("baseline, {}", Remediation::names())
    }
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "baseline" {
            return Ok(Variant::Baseline);
        }
        Remediation::parse(s)
            .map(Variant::With)
            .ok_or_else(|| format!("unknown variant {s:?}; valid: {}", Variant::names()))
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum as _;

    #[test]
    fn wire_names_are_the_contract() {
        assert_eq!(
            serde_json::to_string(&Health::Degraded).ok().as_deref(),
            Some("\"degraded\"")
        );
        assert_eq!(
            serde_json::to_string(&MapState::Unusable).ok().as_deref(),
            Some("\"unusable\"")
        );
        assert_eq!(
            serde_json::to_string(&Verdict::Aborted).ok().as_deref(),
            Some("\"aborted\"")
        );
        for r in Remediation::ALL {
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.name()));
            let clap_name = r.to_possible_value().map(|p| p.get_name().to_owned());
            assert_eq!(clap_name.as_deref(), Some(r.name()));
            assert_eq!(Remediation::parse(r.name()), Some(r));
        }
        assert_eq!(Remediation::value_variants().len(), Remediation::ALL.len());
    }

    #[test]
    fn variants_parse_and_name_the_valid_ones() {
        assert_eq!("baseline".parse::<Variant>(), Ok(Variant::Baseline));
        assert_eq!(
            "cellular".parse::<Variant>(),
            Ok(Variant::With(Remediation::Cellular))
        );
        let e = "nope".parse::<Variant>().expect_err("not a variant");
        assert!(
            e.contains("baseline, cognito-fix") && e.contains("cellular"),
            "{e}"
        );
    }

    #[test]
    fn the_readme_documents_every_remediation() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md at the workspace root");
        for r in Remediation::ALL {
            assert!(
                readme.contains(r.name()),
                "README.md does not mention {}",
                r.name()
            );
        }
    }
}
