//! Reading and validating scenario files: TOML with file:line:column on
//! every error, the offending key, and what would be valid.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{Action, Condition, Loaded, Scenario};
use crate::clock::{clock, parse_when};
use crate::topology::Service;

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
    if let Some(end) = &scenario.scenario.end {
        let at = parse_when(end, start)
            .map_err(|e| anyhow::anyhow!("{}: scenario.end: {e}", path.display()))?;
        if at <= start {
            bail!(
                "{}: scenario.end: {end} is not after the start {}",
                path.display(),
                clock(start)
            );
        }
    }
    let fail = |table: &str, n: usize, key: &str, msg: String| {
        let place = table_offset(text, table, n).map_or_else(|| path.display().to_string(), at);
        anyhow::anyhow!("{place}: {table}[{n}].{key}: {msg}")
    };
    let t = &scenario.topology;
    validate_topology(path, t)?;
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
        x.hold().map_err(|e| fail("expect", n, "for", e))?;
    }
    validate_fidelity(&scenario, start, &services)
        .map_err(|(n, key, e)| fail("fidelity", n, key, e))?;
    for (n, c) in scenario.aborts.iter().enumerate() {
        validate_condition(c, &services).map_err(|e| fail("abort", n, "check", e))?;
    }
    for c in &scenario.steady_state {
        validate_condition(c, &services)
            .map_err(|e| anyhow::anyhow!("{}: steady_state: {e}", path.display()))?;
    }
    Ok(scenario)
}

/// The topology's ranges and services (file-level errors: no line to point at).
fn validate_topology(path: &Path, t: &super::Topology) -> anyhow::Result<()> {
    let bad = |key: &str, e: String| anyhow::anyhow!("{}: topology.{key}: {e}", path.display());
    if let Some(c) = &t.request_cost {
        crate::clock::parse_duration("request_cost", c).map_err(|e| bad("request_cost", e))?;
    }
    if let Some(r) = t.traffic_rate
        && !(r.is_finite() && (0.0..=200.0).contains(&r))
    {
        return Err(bad(
            "traffic_rate",
            format!("{r} must be from 0 to 200 calls per second"),
        ));
    }
    if let Some(n) = t.cognito_instances
        && !(1..=16).contains(&n)
    {
        return Err(bad("cognito_instances", format!("{n}; use 1 to 16")));
    }
    for a in &t.service_args {
        a.parse::<crate::topology::ServiceArg>()
            .map_err(|e| bad("service_args", e))?;
    }
    if let Some(j) = t.learning_jitter
        && !(0.0..=1.0).contains(&j)
    {
        return Err(bad(
            "learning_jitter",
            format!("{j}; use a fraction from 0 to 1"),
        ));
    }
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
    if let Err(e) = cascade_core::parse::check_time_scale(t.time_scale) {
        bail!("{}: topology.time_scale: {e}", path.display());
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
    Ok(())
}

/// Each `[[fidelity]]` row names one event of the postmortem's table, once.
fn validate_fidelity(
    s: &Scenario,
    start: u64,
    services: &[&str],
) -> Result<(), (usize, &'static str, String)> {
    use crate::engine::fidelity::{INCIDENT_EVENTS, incident_event};
    let mut seen = std::collections::BTreeSet::new();
    for (n, f) in s.fidelity.iter().enumerate() {
        let (at, service) = f.key();
        if incident_event(at, service).is_none() {
            let valid: Vec<String> = INCIDENT_EVENTS
                .iter()
                .map(|e| format!("{} {}", e.at, e.service))
                .collect();
            return Err((
                n,
                "event",
                format!(
                    "{:?} is not an event of the postmortem; events: {}",
                    f.event,
                    valid.join(", ")
                ),
            ));
        }
        if !seen.insert(f.key()) {
            return Err((n, "event", format!("{:?} is listed twice", f.event)));
        }
        if let Some(a) = &f.after {
            parse_when(a, start).map_err(|e| (n, "after", e))?;
        }
        if let Some(d) = &f.hold_for {
            crate::clock::parse_duration("for", d).map_err(|e| (n, "for", e))?;
        }
        validate_condition(&f.condition, services).map_err(|e| (n, "check", e))?;
    }
    Ok(())
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
                crate::clock::parse_duration("interval", i)?;
            }
            if let Some(g) = grace {
                crate::clock::parse_duration("grace", g)?;
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
        Condition::Health { service, .. } => {
            if !services.contains(&service.as_str()) {
                return Err(format!(
                    "service: unknown service {service:?}; this topology runs: {}",
                    services.join(", ")
                ));
            }
            Ok(())
        }
        Condition::ShardMaps { .. }
        | Condition::Step { .. }
        | Condition::RestartRemovals { .. }
        | Condition::ThreadAlarms { .. } => Ok(()),
        Condition::ReadyFrontends { at_least, at_most } => match (at_least, at_most) {
            (None, None) => Err("give at_least or at_most".into()),
            (Some(a), Some(b)) if a > b => Err(format!("at_least {a} is above at_most {b}")),
            _ => Ok(()),
        },
        Condition::ErrorRate {
            service,
            at_most,
            at_least,
        } => {
            if !services.contains(&service.as_str()) {
                return Err(format!(
                    "service: unknown service {service:?}; this topology runs: {}",
                    services.join(", ")
                ));
            }
            let share = |x: &Option<f64>| x.is_none_or(|v| (0.0..=1.0).contains(&v));
            if at_most.is_none() == at_least.is_none() || !share(at_most) || !share(at_least) {
                return Err("give one of at_most or at_least, a share from 0 to 1".into());
            }
            Ok(())
        }
        Condition::ImpairedInOrder { services: list } => {
            if list.len() < 2 {
                return Err("services: list at least two places, earliest first".into());
            }
            let all: Vec<&String> = list.iter().flat_map(|i| i.services()).collect();
            if let Some(i) = list
                .iter()
                .find(|i| i.services().len() < 2 && matches!(i, super::OrderItem::Together(_)))
            {
                return Err(format!(
                    "services: {i:?}: a list of services impaired together names at least two"
                ));
            }
            match all.iter().find(|x| !services.contains(&x.as_str())) {
                Some(x) => Err(format!(
                    "services: unknown service {x:?}; this topology runs: {}",
                    services.join(", ")
                )),
                None => Ok(()),
            }
        }
        Condition::Gauge {
            service,
            gauge,
            at_least,
            at_most,
            equals,
            differs,
            rising,
        } => {
            if !services.contains(&service.as_str()) || service == "kinesis" {
                return Err(format!(
                    "service: {service:?} reports no gauges here; gauges come from: {}",
                    services
                        .iter()
                        .filter(|s| **s != "kinesis")
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if gauge.is_empty() {
                return Err("gauge: name the gauge, e.g. blocked_handlers".into());
            }
            let tests = [
                at_least.is_some(),
                at_most.is_some(),
                equals.is_some(),
                differs.is_some(),
                *rising,
            ];
            if tests.iter().filter(|t| **t).count() != 1 {
                return Err(
                    "give exactly one of at_least, at_most, equals, differs or rising = true"
                        .into(),
                );
            }
            Ok(())
        }
        Condition::All { of } => {
            if of.len() < 2 {
                return Err("of: list at least two conditions".into());
            }
            of.iter().try_for_each(|c| validate_condition(c, services))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
for = "30m"
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
            "check = \"health\"\nservice = \"kinesis\"\nis = \"impaired\"\nfor = \"30m\"",
            "check = \"impaired-in-order\"\nservices = [\"kinesis\", \"cognito\"]",
        );
        let s = parse(Path::new("s.toml"), &order).expect("impaired-in-order parses");
        assert_eq!(s.expectations[0].hold(), Ok(crate::scenario::Hold::Once));
        let e = err(&order.replace(
            "check = \"impaired-in-order\"",
            "check = \"impaired-in-order\"\nthroughout = true",
        ));
        assert!(
            e.contains("expect[0].for") && e.contains("holds once it has"),
            "{e}"
        );
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

    #[test]
    fn a_state_check_says_how_long_it_must_hold() {
        let e = err(&GOOD.replace("for = \"30m\"\n", ""));
        assert!(
            e.contains("expect[0].for") && e.contains("once = true"),
            "{e}"
        );
        let e = err(&GOOD.replace("for = \"30m\"", "for = \"30m\"\nthroughout = true"));
        assert!(e.contains("exclude each other"), "{e}");
        let s = parse(
            Path::new("s.toml"),
            &GOOD.replace("for = \"30m\"", "once = true"),
        )
        .expect("once parses");
        assert_eq!(s.expectations[0].hold(), Ok(crate::scenario::Hold::Once));
    }

    #[test]
    fn gauges_and_groups_parse_and_bad_ones_name_what_is_valid() {
        let mechanism = GOOD.replace(
            "check = \"health\"\nservice = \"kinesis\"\nis = \"impaired\"",
            "check = \"all\"\nof = [\n  { check = \"health\", service = \"cognito\", is = \"impaired\" },\n  { check = \"gauge\", service = \"cognito\", gauge = \"blocked_handlers\", at_least = 1 },\n]",
        );
        parse(Path::new("s.toml"), &mechanism).expect("a symptom with its mechanism parses");
        let e = err(&mechanism.replace("at_least = 1", "at_least = 1, at_most = 3"));
        assert!(e.contains("exactly one of at_least"), "{e}");
        let e = err(&mechanism.replace(
            "service = \"cognito\", gauge",
            "service = \"kinesis\", gauge",
        ));
        assert!(e.contains("reports no gauges"), "{e}");
        let group = GOOD.replace(
            "check = \"health\"\nservice = \"kinesis\"\nis = \"impaired\"\nfor = \"30m\"",
            "check = \"impaired-in-order\"\nservices = [[\"kinesis\", \"cognito\"], \"kinesis\"]",
        );
        parse(Path::new("s.toml"), &group).expect("a list of services impaired together parses");
        let e = err(&group.replace("[[\"kinesis\", \"cognito\"]", "[[\"kinesis\"]"));
        assert!(e.contains("at least two"), "{e}");
        let e = err(&GOOD.replace("start = \"02:30\"", "start = \"02:30\"\nend = \"02:00\""));
        assert!(
            e.contains("scenario.end") && e.contains("not after the start"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod scale_tests {
    use super::*;

    fn nov_25() -> Scenario {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/nov-25-2020.toml");
        let text = std::fs::read_to_string(&path).expect("the shipped scenario");
        parse(&path, &text).expect("it parses")
    }

    #[test]
    fn a_time_scale_too_fast_for_the_shortest_window_is_refused_naming_the_highest_that_works() {
        let s = nov_25();
        // Its shortest window is 10 incident minutes: 1 s of wall time at 600x.
        assert_eq!(s.check_time_scale(360.0), Ok(()));
        assert_eq!(s.check_time_scale(600.0), Ok(()));
        let e = s
            .check_time_scale(1440.0)
            .expect_err("1440x judges 10m on 0.42 s");
        assert!(e.contains("10m") && e.contains("0.42 s"), "{e}");
        assert!(e.contains("--time-scale 600 or less"), "{e}");
    }
}
