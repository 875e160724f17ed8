//! Scenario files: the postmortem as a replayable, checkable plan. A TOML
//! file names a topology, a steady-state hypothesis, steps keyed by the
//! incident clock ("02:44") or by an offset ("+15m"), and expectations with
//! deadlines. This module holds the types; `parse` reads and validates
//! files (errors carry file:line:column, the offending key and what would
//! be valid). Running them is the scenario engine's job.

mod parse;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use parse::{load, parse, resolve};

use crate::clock::{clock, parse_when};
use crate::faults::FaultSpec;
use crate::state::{Health, MapState, Remediation};
use crate::topology::Service;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, description and the incident clock at the run's start.
    pub scenario: Meta,
    /// What runs.
    #[serde(default)]
    pub topology: Topology,
    /// Conditions that must hold before the first step and after the last.
    #[serde(default)]
    pub steady_state: Vec<Condition>,
    /// What happens, in incident-clock order.
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    /// What must be observed, each by its deadline.
    #[serde(default, rename = "expect")]
    pub expectations: Vec<Expectation>,
    /// Conditions that stop the run at once (verdict `aborted`).
    #[serde(default, rename = "abort")]
    pub aborts: Vec<Condition>,
    /// Steps that always run at the end, whatever happened.
    #[serde(default, rename = "rollback")]
    pub rollbacks: Vec<Step>,
    /// How each timed event of the 2020 postmortem shows in the replay
    /// (the fidelity table).
    #[serde(default, rename = "fidelity")]
    pub fidelity: Vec<FidelitySpec>,
}

/// How one event of the postmortem's table shows in the replay: the first
/// time `condition` holds (for `for`, without a break) after `after`.
#[derive(Debug, Clone, Deserialize)]
pub struct FidelitySpec {
    /// The postmortem's event: its time and its service, "05:15 kinesis"
    /// (the key into its table).
    pub event: String,
    /// Look only after this (incident clock or offset).
    #[serde(default)]
    pub after: Option<String>,
    /// How long the condition must hold without a break (the event's time
    /// is when that run began).
    #[serde(default, rename = "for")]
    pub hold_for: Option<String>,
    /// What shows the event.
    #[serde(flatten)]
    pub condition: Condition,
}

impl FidelitySpec {
    /// The event's time and service.
    pub fn key(&self) -> (&str, &str) {
        self.event
            .split_once(' ')
            .map_or((self.event.as_str(), ""), |(a, s)| (a, s.trim()))
    }

    /// `for`, parsed (checked at parse time).
    pub fn hold_for(&self) -> Option<Duration> {
        self.hold_for
            .as_deref()
            .and_then(|d| humantime::parse_duration(d).ok())
    }
}

/// Scenario metadata.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Short name, e.g. `nov-25-2020`.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Incident clock at the run's start, e.g. "02:30".
    #[serde(default = "default_start")]
    pub start: String,
    /// Seed of every random choice (overridden by `--seed`).
    #[serde(default)]
    pub seed: u64,
    /// Incident clock by which the run ends at the latest (it ends earlier
    /// once every step ran, every expectation is decided, every service
    /// has recovered and the steady state holds again).
    #[serde(default)]
    pub end: Option<String>,
}

fn default_start() -> String {
    "00:00".into()
}

/// The topology a scenario runs on (the `cascade up` flags).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// Front-ends at the start.
    pub frontends: u32,
    /// Tasks each front-end may hold (kernel-enforced).
    pub thread_limit: u64,
    /// Incident seconds per wall second.
    pub time_scale: f64,
    /// Services besides Kinesis.
    pub services: Vec<String>,
    /// Remediation variants in force from the start.
    pub remediations: Vec<Remediation>,
    /// MODEL: wall time a front-end spends on each routed request, holding
    /// a worker slot ("100ms"); bounds what a front-end can carry.
    pub request_cost: Option<String>,
    /// Customer calls per second to each service.
    pub traffic_rate: Option<f64>,
    /// Cognito webserver instances.
    pub cognito_instances: Option<u32>,
    /// Fraction of the one-hour learning delay removed at random per front-end.
    pub learning_jitter: Option<f64>,
    /// Extra flags for one service's processes, "SERVICE:--flag=value"
    /// (model knobs calibrated to 2020's timing).
    pub service_args: Vec<String>,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            frontends: 8,
            thread_limit: 16,
            time_scale: 360.0,
            services: Service::ALL.iter().map(|s| s.name().to_owned()).collect(),
            remediations: Vec::new(),
            request_cost: None,
            traffic_rate: None,
            cognito_instances: None,
            learning_jitter: None,
            service_args: Vec::new(),
        }
    }
}

/// One step: when, and what.
#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    /// Incident clock ("02:44") or offset from the start ("+15m").
    pub at: String,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// `cascade add-capacity N`.
    AddCapacity {
        /// Front-ends to add.
        count: u32,
    },
    /// `cascade remove-capacity N`.
    RemoveCapacity {
        /// Front-ends to remove.
        count: u32,
    },
    /// `cascade restart-frontends --batch K --interval D` (D in incident time).
    RestartFrontends {
        /// Front-ends per batch.
        batch: u32,
        /// Incident time between batches, e.g. "10m".
        #[serde(default)]
        interval: Option<String>,
        /// Incident time a restarted front-end has to get a ready shard map;
        /// one that has not is judged unhealthy, removed and started again
        /// (default 15m).
        #[serde(default)]
        grace: Option<String>,
    },
    /// `cascade inject ...` (the same fault definition as the CLI).
    Inject {
        /// The fault.
        fault: FaultSpec,
    },
    /// `cascade clear [ID]`.
    Clear {
        /// Fault id; none clears all.
        #[serde(default)]
        id: Option<String>,
    },
    /// `cascade configure TARGET KEY VALUE` (toggle a remediation live).
    Configure {
        /// Service or instance.
        target: String,
        /// Setting.
        key: String,
        /// New value.
        value: String,
    },
    /// `cascade shd post` (primary or backup tool).
    ShdPost {
        /// The message.
        message: String,
        /// Use the backup tool.
        #[serde(default)]
        backup: bool,
    },
}

/// A condition observed out of band (status and customer traffic).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "check", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Condition {
    /// A service's health from customer traffic.
    Health {
        /// The service.
        service: String,
        /// serving | degraded | down | impaired (= degraded or down).
        is: HealthIs,
    },
    /// Shard-map states across the main fleet.
    ShardMaps {
        /// ready | building | unusable.
        all: MapIs,
    },
    /// How many main-fleet front-ends have a ready shard map.
    ReadyFrontends {
        /// At least this many (e.g. "the first front-ends take traffic").
        #[serde(default)]
        at_least: Option<u32>,
        /// At most this many (e.g. "recovery stalls": at most half).
        #[serde(default)]
        at_most: Option<u32>,
    },
    /// The share of a service's customer calls that failed in the health
    /// window (judged over at least the minimum number of calls).
    ErrorRate {
        /// The service.
        service: String,
        /// At most this share (0 to 1).
        #[serde(default)]
        at_most: Option<f64>,
        /// At least this share (0 to 1).
        #[serde(default)]
        at_least: Option<f64>,
    },
    /// Restarted front-ends judged unhealthy (not ready within the grace)
    /// and removed, counted over the run.
    RestartRemovals {
        /// At least this many.
        at_least: u64,
    },
    /// Thread-consumption alarms raised (remediation `thread-alarm`).
    ThreadAlarms {
        /// At least this many.
        at_least: u64,
    },
    /// A step has run with the given outcome: its description (as the
    /// journal shows it, e.g. `shd post --backup`) contains `matching`.
    Step {
        /// Text the step's description contains.
        matching: String,
        /// ok | failed.
        outcome: Outcome,
    },
    /// The order of degradation: every listed service has been impaired,
    /// each at least one observation interval after the one before it
    /// (onsets closer than that are a tie, never "in order"). A list in
    /// the list names services that must be impaired together (a tie).
    ImpairedInOrder {
        /// Services (or lists of services impaired together), earliest first.
        services: Vec<OrderItem>,
    },
    /// A mechanism at work, read from a service's own gauge (summed over its
    /// instances). A gauge the service does not report fails the check.
    Gauge {
        /// The service whose instances report the gauge.
        service: String,
        /// The gauge's name in the service's Control status.
        gauge: String,
        /// Holds when the value is at least this.
        #[serde(default)]
        at_least: Option<f64>,
        /// Holds when the value is at most this.
        #[serde(default)]
        at_most: Option<f64>,
        /// Holds when the (text) value is exactly this.
        #[serde(default)]
        equals: Option<String>,
        /// Holds when the (text) value is anything but this.
        #[serde(default)]
        differs: Option<String>,
        /// Holds when a counter grew over the last health window.
        #[serde(default)]
        rising: bool,
    },
    /// Every listed condition at once (a symptom and its mechanism).
    All {
        /// The conditions.
        of: Vec<Condition>,
    },
}

/// One place in an `impaired-in-order` chain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OrderItem {
    /// One service.
    One(String),
    /// Services impaired together (within one observation interval).
    Together(Vec<String>),
}

impl OrderItem {
    /// The services at this place.
    pub fn services(&self) -> &[String] {
        match self {
            OrderItem::One(s) => std::slice::from_ref(s),
            OrderItem::Together(v) => v,
        }
    }
}

impl Condition {
    /// Whether the condition records something that happened (a step, an
    /// order of onsets, a count reached): once true it stays true, so it
    /// holds once, without a duration.
    pub fn is_event(&self) -> bool {
        matches!(
            self,
            Condition::Step { .. }
                | Condition::ImpairedInOrder { .. }
                | Condition::RestartRemovals { .. }
                | Condition::ThreadAlarms { .. }
        )
    }
}

/// How long an expectation's condition must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// At one observation (written `once = true`, or an event condition).
    Once,
    /// Without a break for this long (incident time), written `for = "20m"`.
    For(Duration),
    /// At every observation from `after` to `by`.
    Throughout,
}

/// The least wall time a `for` window may last: four observations (the
/// engine looks every 250 ms, and one status fetch on a loaded 2-core host
/// can take a few hundred ms). A shorter window is judged on one or two
/// observations, so whether it holds depends on the host's scheduling
/// rather than on the model.
pub const MIN_HOLD_WALL_S: f64 = 1.0;

impl Scenario {
    /// Whether this scenario can be judged at `scale` incident seconds per
    /// wall second: every `for` window (expectations and fidelity events)
    /// must last at least [`MIN_HOLD_WALL_S`] of wall time. The error names
    /// the shortest window and the highest scale that would work.
    pub fn check_time_scale(&self, scale: f64) -> Result<(), String> {
        let windows =
            self.expectations
                .iter()
                .filter_map(|x| match x.hold() {
                    Ok(Hold::For(d)) => Some((format!("expectation {:?}", x.name), d)),
                    _ => None,
                })
                .chain(self.fidelity.iter().filter_map(|f| {
                    Some((format!("fidelity event {:?}", f.event), f.hold_for()?))
                }));
        let Some((what, d)) = windows.min_by_key(|(_, d)| *d) else {
            return Ok(());
        };
        let wall = d.as_secs_f64() / scale;
        if wall >= MIN_HOLD_WALL_S {
            return Ok(());
        }
        let max = (d.as_secs_f64() / MIN_HOLD_WALL_S).floor();
        Err(format!(
            "time scale {scale}x is too fast to judge this scenario: {what} must hold for {}, \
             which is {wall:.2} s of wall time at {scale}x, under the {MIN_HOLD_WALL_S} s \
             (four observations 250 ms apart) a window needs to be judged on this host \
             rather than on its scheduling; use --time-scale {max} or less",
            humantime::format_duration(d),
        ))
    }
}

impl Expectation {
    /// How long the condition must hold (checked at parse time).
    pub fn hold(&self) -> Result<Hold, String> {
        let hold_for = match &self.hold_for {
            Some(d) => Some(crate::clock::parse_duration("for", d)?),
            None => None,
        };
        match (hold_for, self.throughout, self.once) {
            (Some(_), true, _) | (Some(_), _, true) | (_, true, true) => {
                Err("for, throughout and once exclude each other; give one".into())
            }
            _ if self.condition.is_event() && (hold_for.is_some() || self.throughout) => Err(
                "this check records something that happened and holds once it has; drop for/throughout".into(),
            ),
            (Some(d), _, _) if d.is_zero() => Err("for: give a duration above 0 (e.g. \"20m\")".into()),
            (Some(d), _, _) => Ok(Hold::For(d)),
            (None, true, _) => Ok(Hold::Throughout),
            (None, false, true) => Ok(Hold::Once),
            (None, false, false) if self.condition.is_event() => Ok(Hold::Once),
            (None, false, false) => Err(
                "say how long it must hold: for = \"20m\" (without a break), throughout = true (from after to by) or once = true (one observation)".into(),
            ),
        }
    }
}

/// The health a `health` condition asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HealthIs {
    /// Exactly this health.
    Is(Health),
    /// Degraded or down.
    Impaired,
}

impl TryFrom<String> for HealthIs {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "serving" => Ok(Self::Is(Health::Serving)),
            "degraded" => Ok(Self::Is(Health::Degraded)),
            "down" => Ok(Self::Is(Health::Down)),
            "impaired" => Ok(Self::Impaired),
            _ => Err(format!(
                "is: {s:?}; use serving, degraded, down or impaired"
            )),
        }
    }
}

/// The shard-map state a `shard-maps` condition asks every front-end for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MapIs(pub MapState);

impl TryFrom<String> for MapIs {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "ready" => Ok(Self(MapState::Ready)),
            "building" => Ok(Self(MapState::Building)),
            "unusable" => Ok(Self(MapState::Unusable)),
            _ => Err(format!("all: {s:?}; use ready, building or unusable")),
        }
    }
}

/// A step's outcome, as a `step` condition asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed.
    Failed,
}

impl TryFrom<String> for Outcome {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "ok" => Ok(Self::Ok),
            "failed" => Ok(Self::Failed),
            _ => Err(format!("outcome: {s:?}; use ok or failed")),
        }
    }
}

/// An expectation: a condition that must hold by a deadline. (Unknown keys
/// are caught by the flattened condition, which denies them.)
#[derive(Debug, Clone, Deserialize)]
pub struct Expectation {
    /// Name in the report.
    pub name: String,
    /// Deadline: incident clock or offset.
    pub by: String,
    /// Not before this (incident clock or offset); default: the start.
    #[serde(default)]
    pub after: Option<String>,
    /// Whether the condition must hold at every observation from `after`
    /// to `by` (e.g. "recovery stalls").
    #[serde(default)]
    pub throughout: bool,
    /// How long (incident time) the condition must hold without a break,
    /// somewhere between `after` and `by`, e.g. "20m".
    #[serde(default, rename = "for")]
    pub hold_for: Option<String>,
    /// Whether a single observation is enough (it must be written so).
    #[serde(default)]
    pub once: bool,
    /// What must hold.
    #[serde(flatten)]
    pub condition: Condition,
}

/// A parsed, validated scenario with its source.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file it came from.
    pub path: PathBuf,
    /// Its contents.
    pub scenario: Scenario,
}

impl Action {
    /// The step kind, as written in a scenario (`do = "..."`).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::AddCapacity { .. } => "add-capacity",
            Action::RemoveCapacity { .. } => "remove-capacity",
            Action::RestartFrontends { .. } => "restart-frontends",
            Action::Inject { .. } => "inject",
            Action::Clear { .. } => "clear",
            Action::Configure { .. } => "configure",
            Action::ShdPost { .. } => "shd-post",
        }
    }

    /// One line, in the CLI's words.
    pub fn describe(&self) -> String {
        match self {
            Action::AddCapacity { count } => format!("add-capacity {count}"),
            Action::RemoveCapacity { count } => format!("remove-capacity {count}"),
            Action::RestartFrontends {
                batch,
                interval,
                grace,
            } => format!(
                "restart-frontends --batch {batch}{}{}",
                interval
                    .as_ref()
                    .map_or(String::new(), |i| format!(" --interval {i} (incident)")),
                grace
                    .as_ref()
                    .map_or(String::new(), |g| format!(" --grace {g} (incident)"))
            ),
            Action::Inject { fault } => format!("inject {}", fault.summary()),
            Action::Clear { id } => format!("clear {}", id.as_deref().unwrap_or("(all)")),
            Action::Configure { target, key, value } => format!("configure {target} {key} {value}"),
            Action::ShdPost { message, backup } => format!(
                "shd post{} {message:?}",
                if *backup { " --backup" } else { "" }
            ),
        }
    }
}

impl Scenario {
    /// Wall time from the run's start to incident clock `when`.
    pub fn wall(&self, when: &str) -> Duration {
        let start = parse_when(&self.scenario.start, 0).unwrap_or(0);
        let at = parse_when(when, start).unwrap_or(start);
        Duration::from_secs_f64((at.saturating_sub(start)) as f64 / self.topology.time_scale)
    }

    /// The schedule with both clocks, for `cascade run --dry-run`.
    pub fn schedule(&self) -> String {
        use std::fmt::Write as _;
        let start = parse_when(&self.scenario.start, 0).unwrap_or(0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} (seed {}): {}",
            self.scenario.name, self.scenario.seed, self.scenario.description
        );
        let _ = writeln!(
            s,
            "topology: {} front-ends, thread limit {}, time scale {}x, services {}{}",
            self.topology.frontends,
            self.topology.thread_limit,
            self.topology.time_scale,
            self.topology.services.join(","),
            if self.topology.remediations.is_empty() {
                String::new()
            } else {
                format!(
                    ", remediations {}",
                    self.topology
                        .remediations
                        .iter()
                        .map(|r| r.name())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        );
        let mut rows: Vec<(u64, Duration, String)> = Vec::new();
        for st in &self.steps {
            let at = parse_when(&st.at, start).unwrap_or(start);
            rows.push((
                at,
                self.wall(&st.at),
                format!("step    {}", st.action.describe()),
            ));
        }
        for x in &self.expectations {
            let at = parse_when(&x.by, start).unwrap_or(start);
            rows.push((at, self.wall(&x.by), format!("expect  {} (by)", x.name)));
        }
        rows.sort_by_key(|r| r.0);
        for (at, wall, what) in rows {
            let _ = writeln!(
                s,
                "{}  +{:>7.1}s wall  {what}",
                clock(at),
                wall.as_secs_f64()
            );
        }
        s
    }
}
