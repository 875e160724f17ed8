//! Scenario files: the postmortem as a replayable, checkable plan. A TOML
//! file names a topology, a steady-state hypothesis, steps keyed by the
//! incident clock ("02:44") or by an offset ("+15m"), and expectations with
//! deadlines. This module parses and validates them (errors carry
//! file:line:column, the offending key and what would be valid) and maps
//! incident time to wall time; running them is the scenario engine's job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::faults::FaultSpec;
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
    pub remediations: Vec<String>,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            frontends: 8,
            thread_limit: 16,
            time_scale: 360.0,
            services: Service::ALL.iter().map(|s| s.name().to_owned()).collect(),
            remediations: Vec::new(),
        }
    }
}

/// Every remediation variant a scenario may name.
pub const REMEDIATIONS: [&str; 9] = [
    "cognito-fix",
    "cloudwatch-local-buffer",
    "cloudwatch-partitioned-fleet",
    "lambda-bounded-agent",
    "metadata-bootstrap",
    "raised-limit",
    "bigger-servers",
    "thread-alarm",
    "cellular",
];

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
        is: String,
    },
    /// Shard-map states across the main fleet.
    ShardMaps {
        /// ready | building | unusable.
        all: String,
    },
    /// How many main-fleet front-ends have a ready shard map.
    ReadyFrontends {
        /// At most this many (e.g. "recovery stalls": at most half).
        at_most: u32,
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
        outcome: String,
    },
    /// The order of degradation: every listed service has been impaired,
    /// each no earlier than the one before it. Health is judged over a
    /// window of customer calls (5 s of wall time), so onsets closer than
    /// one window count as simultaneous.
    ImpairedInOrder {
        /// Services, earliest first.
        services: Vec<String>,
    },
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
    /// to `by` (e.g. "recovery stalls"), rather than at some point before `by`.
    #[serde(default)]
    pub throughout: bool,
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

/// Incident seconds since the start of the clock for "HH:MM", "HH:MM:SS" or "+<duration>".
pub fn parse_when(s: &str, start_secs: u64) -> Result<u64, String> {
    if let Some(off) = s.strip_prefix('+') {
        return humantime::parse_duration(off)
            .map(|d| start_secs + d.as_secs())
            .map_err(|e| format!("{s:?}: {e} (an offset is like +15m or +1h30m)"));
    }
    let parts: Vec<&str> = s.split(':').collect();
    let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
    match (parts.len(), nums) {
        (2 | 3, Some(n)) if n[0] < 48 && n[1] < 60 && n.get(2).is_none_or(|x| *x < 60) => {
            Ok(n[0] * 3600 + n[1] * 60 + n.get(2).copied().unwrap_or(0))
        }
        _ => Err(format!(
            "{s:?} is not a clock time; use HH:MM or HH:MM:SS (e.g. \"02:44\") or an offset like \"+15m\""
        )),
    }
}

/// "HH:MM:SS" for incident seconds.
pub fn clock(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Line and column (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// The byte offset of the `n`-th `[[table]]` header in `text`.
fn table_offset(text: &str, table: &str, n: usize) -> Option<usize> {
    let header = format!("[[{table}]]");
    text.match_indices(&header).nth(n).map(|(i, _)| i)
}

/// Reads and validates a scenario: a name from `scenarios/` or a path.
pub fn load(name_or_path: &str) -> anyhow::Result<Loaded> {
    let path = resolve(name_or_path)?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let scenario = parse(&path, &text)?;
    Ok(Loaded { path, scenario })
}

/// Where a scenario name points: a path as given, or `scenarios/<name>.toml`.
pub fn resolve(name_or_path: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(name_or_path);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    for dir in scenario_dirs() {
        let candidate = dir.join(format!("{name_or_path}.toml"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no scenario {name_or_path:?}: not a file, and not in {}",
        scenario_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

/// Where scenario names are looked up: `$CASCADE_SCENARIOS`, `./scenarios`,
/// then the `scenarios/` of the checkout the binary was built in
/// (`target/<profile>/cascade` -> `scenarios/`), so a name works from any
/// directory.
fn scenario_dirs() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("scenarios")];
    if let Some(d) = std::env::var_os("CASCADE_SCENARIOS") {
        v.insert(0, PathBuf::from(d));
    }
    if let Some(root) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent()?.parent().map(Path::to_path_buf))
    {
        let d = root.join("scenarios");
        if d.is_dir() && !v.contains(&d) {
            v.push(d);
        }
    }
    v
}

/// Parses and validates scenario `text` read from `path`.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<Scenario> {
    let at = |offset: usize| {
        let (l, c) = line_col(text, offset);
        format!("{}:{l}:{c}", path.display())
    };
    let scenario: Scenario = toml::from_str(text).map_err(|e| {
        let place = e
            .span()
            .map_or_else(|| path.display().to_string(), |s| at(s.start));
        anyhow::anyhow!("{place}: {}", e.message().trim())
    })?;
    let start = parse_when(&scenario.scenario.start, 0)
        .map_err(|e| anyhow::anyhow!("{}: scenario.start: {e}", path.display()))?;
    let fail = |table: &str, n: usize, key: &str, msg: String| {
        let place = table_offset(text, table, n).map_or_else(|| path.display().to_string(), at);
        anyhow::anyhow!("{place}: {table}[{n}].{key}: {msg}")
    };
    let t = &scenario.topology;
    if t.frontends == 0 || t.frontends > crate::supervisor::MAX_FLEET {
        bail!(
            "{}: topology.frontends: {} is out of range; use 1 to {}",
            path.display(),
            t.frontends,
            crate::supervisor::MAX_FLEET
        );
    }
    if t.thread_limit == 0 || t.thread_limit > crate::limits::MAX_THREAD_LIMIT {
        bail!(
            "{}: topology.thread_limit: {} is out of range; use 1 to {}",
            path.display(),
            t.thread_limit,
            crate::limits::MAX_THREAD_LIMIT
        );
    }
    if !(t.time_scale.is_finite() && t.time_scale > 0.0) {
        bail!(
            "{}: topology.time_scale: must be a positive number (e.g. 360)",
            path.display()
        );
    }
    for s in &t.services {
        if Service::parse(s).is_none() {
            bail!(
                "{}: topology.services: unknown service {s:?}; valid: {}",
                path.display(),
                Service::ALL.map(Service::name).join(", ")
            );
        }
    }
    crate::topology::parse_services(&t.services.join(","))
        .map_err(|e| anyhow::anyhow!("{}: topology.services: {e}", path.display()))?;
    for r in &t.remediations {
        if !REMEDIATIONS.contains(&r.as_str()) {
            bail!(
                "{}: topology.remediations: unknown remediation {r:?}; valid: {}",
                path.display(),
                REMEDIATIONS.join(", ")
            );
        }
    }
    let services: Vec<&str> = t.services.iter().map(String::as_str).collect();
    let mut last = start;
    for (n, step) in scenario.steps.iter().enumerate() {
        let when = parse_when(&step.at, start).map_err(|e| fail("step", n, "at", e))?;
        if when < start {
            return Err(fail(
                "step",
                n,
                "at",
                format!("{} is before the scenario start {}", step.at, clock(start)),
            ));
        }
        if when < last {
            return Err(fail(
                "step",
                n,
                "at",
                format!(
                    "{} is earlier than the step before it ({}); steps run in clock order",
                    step.at,
                    clock(last)
                ),
            ));
        }
        last = when;
        validate_action(&step.action, &services).map_err(|e| fail("step", n, "do", e))?;
    }
    for (n, step) in scenario.rollbacks.iter().enumerate() {
        validate_action(&step.action, &services).map_err(|e| fail("rollback", n, "do", e))?;
    }
    for (n, x) in scenario.expectations.iter().enumerate() {
        parse_when(&x.by, start).map_err(|e| fail("expect", n, "by", e))?;
        if let Some(a) = &x.after {
            parse_when(a, start).map_err(|e| fail("expect", n, "after", e))?;
        }
        validate_condition(&x.condition, &services).map_err(|e| fail("expect", n, "check", e))?;
    }
    for (n, c) in scenario.aborts.iter().enumerate() {
        validate_condition(c, &services).map_err(|e| fail("abort", n, "check", e))?;
    }
    for c in &scenario.steady_state {
        validate_condition(c, &services)
            .map_err(|e| anyhow::anyhow!("{}: steady_state: {e}", path.display()))?;
    }
    Ok(scenario)
}

fn validate_action(a: &Action, services: &[&str]) -> Result<(), String> {
    match a {
        Action::AddCapacity { count } | Action::RemoveCapacity { count } if *count == 0 => {
            Err("count: must be at least 1".into())
        }
        Action::RestartFrontends {
            batch,
            interval,
            grace,
        } => {
            if *batch == 0 {
                return Err("batch: must be at least 1".into());
            }
            if let Some(i) = interval {
                humantime::parse_duration(i).map_err(|e| format!("interval: {i:?}: {e}"))?;
            }
            if let Some(g) = grace {
                humantime::parse_duration(g).map_err(|e| format!("grace: {g:?}: {e}"))?;
            }
            Ok(())
        }
        Action::Inject { fault } => fault.validate().map_err(|e| format!("fault: {e:#}")),
        Action::Configure { target, .. }
        | Action::ShdPost {
            message: target,
            backup: false,
        } if target.is_empty() => Err("must not be empty".into()),
        Action::Configure { target, .. } => {
            let svc = target
                .rsplit_once('-')
                .filter(|(_, i)| i.chars().all(|c| c.is_ascii_digit()))
                .map_or(target.as_str(), |(s, _)| s);
            if services.contains(&svc) || svc.starts_with("kinesis") {
                Ok(())
            } else {
                Err(format!(
                    "target: {target:?} is not a service of this topology; services: {}",
                    services.join(", ")
                ))
            }
        }
        _ => Ok(()),
    }
}

fn validate_condition(c: &Condition, services: &[&str]) -> Result<(), String> {
    match c {
        Condition::Health { service, is } => {
            if !services.contains(&service.as_str()) {
                return Err(format!(
                    "service: unknown service {service:?}; this topology runs: {}",
                    services.join(", ")
                ));
            }
            if !["serving", "degraded", "down", "impaired"].contains(&is.as_str()) {
                return Err(format!(
                    "is: {is:?}; use serving, degraded, down or impaired"
                ));
            }
            Ok(())
        }
        Condition::ShardMaps { all } => {
            if ["ready", "building", "unusable"].contains(&all.as_str()) {
                Ok(())
            } else {
                Err(format!("all: {all:?}; use ready, building or unusable"))
            }
        }
        Condition::RestartRemovals { .. }
        | Condition::ThreadAlarms { .. }
        | Condition::ReadyFrontends { .. } => Ok(()),
        Condition::Step { outcome, .. } => {
            if outcome == "ok" || outcome == "failed" {
                Ok(())
            } else {
                Err(format!("outcome: {outcome:?}; use ok or failed"))
            }
        }
        Condition::ImpairedInOrder { services: list } => {
            if list.len() < 2 {
                return Err("services: list at least two services, earliest first".into());
            }
            match list.iter().find(|x| !services.contains(&x.as_str())) {
                Some(x) => Err(format!(
                    "services: unknown service {x:?}; this topology runs: {}",
                    services.join(", ")
                )),
                None => Ok(()),
            }
        }
    }
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
                format!(", remediations {}", self.topology.remediations.join(","))
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[scenario]
name = "t"
start = "02:30"

[topology]
frontends = 4
thread_limit = 12
time_scale = 360
services = ["kinesis", "cognito"]

[[step]]
at = "02:44"
do = "add-capacity"
count = 2

[[expect]]
name = "kinesis impaired"
by = "+2h"
check = "health"
service = "kinesis"
is = "impaired"
"#;

    fn err(text: &str) -> String {
        parse(Path::new("s.toml"), text)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    }

    #[test]
    fn a_good_scenario_parses_with_both_clocks() {
        let s = parse(Path::new("s.toml"), GOOD).expect("parses");
        assert_eq!(s.steps.len(), 1);
        assert_eq!(
            s.wall("02:44"),
            Duration::from_secs_f64(14.0 * 60.0 / 360.0)
        );
        assert!(s.schedule().contains("02:44:00"));
    }

    #[test]
    fn an_unknown_step_kind_names_the_place_and_the_valid_kinds() {
        let e = err(&GOOD.replace("do = \"add-capacity\"", "do = \"explode\""));
        assert!(e.starts_with("s.toml:"), "{e}");
        assert!(e.contains("explode") && e.contains("add-capacity"), "{e}");
    }

    #[test]
    fn a_bad_clock_names_file_line_column_and_the_key() {
        let e = err(&GOOD.replace("at = \"02:44\"", "at = \"25:99\""));
        assert!(
            e.contains("s.toml:12:1") && e.contains("step[0].at") && e.contains("HH:MM"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_service_is_refused_with_the_valid_ones() {
        let e = err(&GOOD.replace("service = \"kinesis\"", "service = \"dynamo\""));
        assert!(
            e.contains("expect[0]") && e.contains("dynamo") && e.contains("cognito"),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "services = [\"kinesis\", \"cognito\"]",
            "services = [\"kinesis\", \"sqs\"]",
        ));
        assert!(e.contains("topology.services") && e.contains("sqs"), "{e}");
    }

    #[test]
    fn unknown_keys_and_steps_out_of_order_are_refused() {
        let e = err(&GOOD.replace("count = 2", "count = 2\ncolour = \"red\""));
        assert!(e.contains("colour"), "{e}");
        let two =
            format!("{GOOD}\n[[step]]\nat = \"02:40\"\ndo = \"remove-capacity\"\ncount = 1\n");
        assert!(
            err(&two).contains("earlier than the step before"),
            "{}",
            err(&two)
        );
    }

    #[test]
    fn new_conditions_parse_and_bad_ones_name_what_is_valid() {
        let order = GOOD.replace(
            "check = \"health\"\nservice = \"kinesis\"\nis = \"impaired\"",
            "check = \"impaired-in-order\"\nservices = [\"kinesis\", \"cognito\"]\nthroughout = true",
        );
        let s = parse(Path::new("s.toml"), &order).expect("impaired-in-order parses");
        assert!(s.expectations[0].throughout);
        let e = err(&order.replace("\"cognito\"]", "\"dynamo\"]"));
        assert!(
            e.contains("dynamo") && e.contains("kinesis, cognito"),
            "{e}"
        );
        let step = GOOD.replace(
            "check = \"health\"\nservice = \"kinesis\"\nis = \"impaired\"",
            "check = \"step\"\nmatching = \"shd post\"\noutcome = \"maybe\"",
        );
        assert!(err(&step).contains("use ok or failed"), "{}", err(&step));
        let restart = GOOD.replace(
            "do = \"add-capacity\"\ncount = 2",
            "do = \"restart-frontends\"\nbatch = 2\ngrace = \"soon\"",
        );
        assert!(err(&restart).contains("grace"), "{}", err(&restart));
    }
}
