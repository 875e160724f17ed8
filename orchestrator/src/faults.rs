//! The one fault definition, shared by `cascade inject` and scenario files,
//! and the pieces of its lifecycle that do not need the supervisor's fleet:
//! validation, target selection (names, ranges, seeded percentages) and a
//! one-line summary. Every fault has an id and an optional duration after
//! which the supervisor reverts it; all are reverted when the run ends.

use std::time::Duration;

use anyhow::bail;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use serde::{Deserialize, Serialize};

/// gRPC status codes a fault may answer with.
pub const GRPC_CODES: [&str; 16] = [
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// Delay calls the target serves by a fixed time plus jitter.
    Latency {
        /// Fixed delay, e.g. 200ms.
        #[arg(long, value_parser = humantime::parse_duration)]
        #[serde(with = "humantime_serde_compat")]
        latency: Duration,
        /// Extra uniform random delay in [0, jitter].
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        #[serde(with = "humantime_serde_compat", default)]
        jitter: Duration,
        #[command(flatten)]
        #[serde(flatten)]
        grpc: GrpcScope,
    },
    /// Answer calls the target serves with a gRPC error code.
    Error {
        /// The code, e.g. UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED.
        #[arg(long)]
        code: String,
        #[command(flatten)]
        #[serde(flatten)]
        grpc: GrpcScope,
    },
    /// Take calls and never answer them (the caller's deadline ends them).
    Hang {
        #[command(flatten)]
        #[serde(flatten)]
        grpc: GrpcScope,
    },
    /// Swallow calls before they reach the handler; never answer.
    Blackhole {
        #[command(flatten)]
        #[serde(flatten)]
        grpc: GrpcScope,
    },
    /// Cut calls between two services or instances: they fail as unreachable.
    Partition {
        /// The two sides, e.g. `--between lambda cloudwatch`.
        #[arg(long, num_args = 2, value_names = ["A", "B"])]
        between: Vec<String>,
        /// Cut only A -> B.
        #[arg(long)]
        #[serde(default)]
        one_way: bool,
    },
    /// Send a signal to the target's processes.
    Kill {
        /// Signal name: KILL, TERM, INT, ...
        #[arg(long, default_value = "KILL")]
        #[serde(default = "default_signal")]
        signal: String,
    },
    /// SIGSTOP the target's processes; reverting sends SIGCONT.
    Pause,
    /// Restart the target's processes (same address, same limits).
    Restart,
    /// Change a front-end's kernel thread limit while it runs; reverting restores it.
    ThreadLimit {
        /// The new limit (tasks).
        #[arg(long)]
        limit: u64,
    },
    /// Make the target hold N extra idle threads, inside its own thread budget.
    ThreadHog {
        /// Extra threads to hold.
        #[arg(long)]
        threads: u32,
    },
    /// Take memory of a Lambda invocation host (real bytes, charged to its budget).
    MemoryHog {
        /// Bytes to hold, e.g. 4194304.
        #[arg(long)]
        bytes: u64,
    },
}

fn default_signal() -> String {
    "KILL".into()
}

/// Which calls a gRPC fault applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct GrpcScope {
    /// Fraction of matching calls affected, in (0, 1].
    #[arg(long, alias = "rate", default_value_t = 1.0)]
    #[serde(default = "one")]
    pub probability: f64,
    /// Only this method, e.g. SignIn or /cascade.cognito.v1.Cognito/SignIn.
    #[arg(long)]
    #[serde(default)]
    pub method: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// Serde for `Duration` as humantime text ("200ms"), so scenario files read well.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// A fault and where and for how long it applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct FaultSpec {
    #[command(subcommand)]
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Where: a service (cognito), an instance (kinesis-frontend-3) or a range
    /// (kinesis-frontend[0..3], end exclusive). Not used by `partition`.
    #[arg(long, global = true)]
    #[serde(default)]
    pub target: Option<String>,
    /// Pick this percentage of the target's instances (seeded), 1 to 100.
    #[arg(long, global = true)]
    #[serde(default)]
    pub percent: Option<u32>,
    /// Seed for the percentage pick and the probability draws (logged).
    #[arg(long, global = true, default_value_t = 0)]
    #[serde(default)]
    pub seed: u64,
    /// Revert by itself after this long, e.g. 30s (default: until cleared).
    #[arg(long, global = true, value_parser = parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub duration: Option<Duration>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than 0s".into()),
        Err(e) => Err(format!("{s:?}: {e} (e.g. 30s, 500ms, 2m)")),
    }
}

impl FaultSpec {
    /// Checks the spec on its own (targets are checked against the fleet later).
    pub fn validate(&self) -> anyhow::Result<()> {
        let grpc = match &self.kind {
            FaultKind::Latency {
                latency,
                jitter,
                grpc,
            } => {
                if latency.is_zero() && jitter.is_zero() {
                    bail!("--latency: give a delay above 0 (e.g. 200ms)");
                }
                Some(grpc)
            }
            FaultKind::Error { code, grpc } => {
                if !GRPC_CODES.contains(&code.as_str()) {
                    bail!(
                        "--code {code:?}: not a gRPC code; use one of {}",
                        GRPC_CODES.join(", ")
                    );
                }
                Some(grpc)
            }
            FaultKind::Hang { grpc } | FaultKind::Blackhole { grpc } => Some(grpc),
            FaultKind::Partition { between, .. } => {
                if between.len() != 2 || between[0] == between[1] {
                    bail!("--between: give two different services or instances");
                }
                if self.target.is_some() {
                    bail!("--target: a partition takes --between A B instead");
                }
                None
            }
            FaultKind::Kill { signal } => {
                signal_number(signal)?;
                None
            }
            FaultKind::ThreadLimit { limit } => {
                if *limit == 0 || *limit > crate::limits::MAX_THREAD_LIMIT {
                    bail!(
                        "--limit {limit}: use 1 to {}",
                        crate::limits::MAX_THREAD_LIMIT
                    );
                }
                None
            }
            FaultKind::ThreadHog { threads } => {
                if *threads == 0 || *threads > 4096 {
                    bail!("--threads {threads}: use 1 to 4096");
                }
                None
            }
            FaultKind::MemoryHog { bytes } => {
                if *bytes == 0 {
                    bail!("--bytes: give a size above 0 (e.g. 4194304)");
                }
                None
            }
            FaultKind::Pause | FaultKind::Restart => None,
        };
        if let Some(g) = grpc
            && !(g.probability > 0.0 && g.probability <= 1.0)
        {
            bail!(
                "--probability {}: must be above 0 and at most 1 (a fraction of calls)",
                g.probability
            );
        }
        if !matches!(self.kind, FaultKind::Partition { .. }) && self.target.is_none() {
            bail!("--target: say which service or instance (e.g. --target cognito)");
        }
        if let Some(p) = self.percent
            && !(1..=100).contains(&p)
        {
            bail!("--percent {p}: use 1 to 100");
        }
        Ok(())
    }

    /// One line for `cascade faults`.
    pub fn summary(&self) -> String {
        let what = match &self.kind {
            FaultKind::Latency {
                latency,
                jitter,
                grpc,
            } => format!(
                "latency {}+{}{}",
                humantime::format_duration(*latency),
                humantime::format_duration(*jitter),
                scope(grpc)
            ),
            FaultKind::Error { code, grpc } => format!("error {code}{}", scope(grpc)),
            FaultKind::Hang { grpc } => format!("hang{}", scope(grpc)),
            FaultKind::Blackhole { grpc } => format!("blackhole{}", scope(grpc)),
            FaultKind::Partition { between, one_way } => format!(
                "partition {} {} {}",
                between.first().map_or("", String::as_str),
                if *one_way { "->" } else { "<->" },
                between.get(1).map_or("", String::as_str)
            ),
            FaultKind::Kill { signal } => format!("kill -{signal}"),
            FaultKind::Pause => "pause (SIGSTOP)".into(),
            FaultKind::Restart => "restart".into(),
            FaultKind::ThreadLimit { limit } => format!("thread-limit {limit}"),
            FaultKind::ThreadHog { threads } => format!("thread-hog {threads} threads"),
            FaultKind::MemoryHog { bytes } => format!("memory-hog {bytes} bytes"),
        };
        match (&self.target, self.percent) {
            (Some(t), Some(p)) => format!("{what} on {p}% of {t}"),
            (Some(t), None) => format!("{what} on {t}"),
            _ => what,
        }
    }
}

fn scope(g: &GrpcScope) -> String {
    let mut s = String::new();
    if g.probability < 1.0 {
        s.push_str(&format!(" p={}", g.probability));
    }
    if let Some(m) = &g.method {
        s.push_str(&format!(" method={m}"));
    }
    s
}

/// The signal a name like KILL or SIGTERM stands for.
pub fn signal_number(name: &str) -> anyhow::Result<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    let n = name.trim_start_matches("SIG").to_ascii_uppercase();
    Ok(match n.as_str() {
        "KILL" => Signal::SIGKILL,
        "TERM" => Signal::SIGTERM,
        "INT" => Signal::SIGINT,
        "HUP" => Signal::SIGHUP,
        "QUIT" => Signal::SIGQUIT,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        "ABRT" => Signal::SIGABRT,
        _ => bail!("--signal {name:?}: use KILL, TERM, INT, HUP, QUIT, USR1, USR2 or ABRT"),
    })
}

/// The instances `target` names among `names`: a service name (every
/// instance `<service>-N`, or for `kinesis`/`kinesis-frontend` every
/// front-end), an instance name, or `name[a..b]` (instances `name-a` to
/// `name-(b-1)`); then, with `percent`, a seeded pick of that share (at least one).
pub fn select(
    target: &str,
    names: &[String],
    percent: Option<u32>,
    seed: u64,
) -> anyhow::Result<Vec<String>> {
    let mut picked: Vec<String> =
        if let Some((base, range)) = target.strip_suffix(']').and_then(|t| t.split_once('[')) {
            let (a, b) = range
                .split_once("..")
                .ok_or_else(|| anyhow::anyhow!("--target {target}: a range is name[a..b]"))?;
            let (a, b): (u32, u32) = match (a.parse(), b.parse()) {
                (Ok(a), Ok(b)) if a < b => (a, b),
                _ => bail!("--target {target}: a range is name[a..b] with a < b"),
            };
            // Checked before the names are built: a huge range is refused,
            // not allocated.
            if (b - a) as usize > names.len() {
                bail!(
                    "--target {target}: the range names {} instances; {} are running: {}",
                    b - a,
                    names.len(),
                    names.join(", ")
                );
            }
            let want: Vec<String> = (a..b).map(|i| format!("{base}-{i}")).collect();
            let missing: Vec<&String> = want.iter().filter(|w| !names.contains(w)).collect();
            if !missing.is_empty() {
                bail!(
                    "--target {target}: no instance {}; running: {}",
                    missing[0],
                    names.join(", ")
                );
            }
            want
        } else {
            let service = |n: &String| {
                n.rsplit_once('-')
                    .filter(|(_, i)| i.chars().all(|c| c.is_ascii_digit()))
                    .map_or(n.as_str(), |(s, _)| s)
                    .to_owned()
            };
            names
                .iter()
                .filter(|n| {
                    *n == target
                        || service(n) == target
                        || (target == "kinesis" && n.starts_with("kinesis-frontend-"))
                })
                .cloned()
                .collect()
        };
    if picked.is_empty() {
        bail!(
            "--target {target}: no such service or instance; running: {}",
            names.join(", ")
        );
    }
    if let Some(p) = percent {
        let k = ((picked.len() as f64 * f64::from(p) / 100.0).round() as usize).max(1);
        picked.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(seed));
        picked.truncate(k);
        picked.sort();
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        [
            "kinesis-backend",
            "kinesis-frontend-0",
            "kinesis-frontend-1",
            "kinesis-frontend-2",
            "kinesis-frontend-3",
            "cognito-0",
            "lambda-0",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn targets_resolve_by_service_instance_range_and_percent() {
        assert_eq!(
            select("cognito", &names(), None, 0).ok(),
            Some(vec!["cognito-0".to_owned()])
        );
        assert_eq!(
            select("kinesis-frontend[1..3]", &names(), None, 0)
                .map(|v| v.len())
                .ok(),
            Some(2)
        );
        assert_eq!(
            select("kinesis-frontend", &names(), Some(50), 7)
                .map(|v| v.len())
                .ok(),
            Some(2)
        );
        assert_eq!(
            select("kinesis-frontend", &names(), Some(50), 7).ok(),
            select("kinesis-frontend", &names(), Some(50), 7).ok(),
            "the pick is seeded"
        );
        assert!(select("nope", &names(), None, 0).is_err());
        assert!(select("kinesis-frontend[3..9]", &names(), None, 0).is_err());
    }

    #[test]
    fn specs_validate_and_round_trip_as_json() {
        let spec = FaultSpec {
            kind: FaultKind::Error {
                code: "UNAVAILABLE".into(),
                grpc: GrpcScope {
                    probability: 0.5,
                    method: None,
                },
            },
            target: Some("cognito".into()),
            percent: None,
            seed: 1,
            duration: Some(Duration::from_secs(5)),
        };
        assert!(spec.validate().is_ok());
        let json = serde_json::to_string(&spec).expect("json");
        assert_eq!(
            serde_json::from_str::<FaultSpec>(&json).ok(),
            Some(spec.clone())
        );
        let mut bad = spec.clone();
        bad.kind = FaultKind::Error {
            code: "UNAVAILABLE".into(),
            grpc: GrpcScope {
                probability: 1.5,
                method: None,
            },
        };
        assert!(bad.validate().is_err());
        let mut bad = spec;
        bad.percent = Some(0);
        assert!(bad.validate().is_err());
    }
}
