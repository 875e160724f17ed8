//! The scenario engine: `cascade run <scenario>`. It brings the scenario's
//! topology up (a detached supervisor in the report directory), runs the
//! steps on the incident clock mapped to wall time, watches every service out
//! of band, judges each expectation by its deadline, and writes a JSONL
//! journal (flushed line by line, complete even on Ctrl-C) and `report.json`.
//! The exit code is 0 only when every expectation held.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_proto::supervisor as sv;
use clap::Parser as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::scenario::{self, Action, Condition, Scenario};
use crate::status::Status;

/// `println!` through [`out`]: a closed stdout is not an error.
macro_rules! outln {
    ($($t:tt)*) => {
        out(format_args!($($t)*))
    };
}

/// `cascade run` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Scenario name (in scenarios/) or path to a .toml file.
    pub scenario: String,
    /// Directory for the journal, report.json and the run's logs
    /// (default: cascade-reports/<scenario>-<unix time>).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Override the scenario's time scale (incident seconds per wall second).
    #[arg(long, value_parser = cascade_core::kinesis::parse_time_scale)]
    pub time_scale: Option<f64>,
    /// Override the scenario's seed (logged).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print only the verdict.
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,
    /// Play against the fleet already running (found as `cascade status`
    /// finds it) instead of starting one; leave it up at the end.
    #[arg(long)]
    pub attach: bool,
    /// Print each journal entry as one JSON line (for CI), then the verdict line as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How a run talks to its terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Both clocks, the phase and each change, one line each.
    Human,
    /// The verdict only.
    Quiet,
    /// The journal's JSON lines.
    Json,
}

/// The report directory a run will use (set before anything starts).
pub fn report_dir(report: Option<&PathBuf>, name: &str) -> PathBuf {
    report.cloned().unwrap_or_else(|| {
        PathBuf::from("cascade-reports").join(format!(
            "{name}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ))
    })
}

#[derive(clap::Parser)]
struct UpCmd {
    #[command(flatten)]
    up: crate::supervisor::UpArgs,
}

/// The `cascade up` flags of a scenario's topology (remediations included).
fn up_args(s: &Scenario, seed: u64) -> anyhow::Result<crate::supervisor::UpArgs> {
    let t = &s.topology;
    let mut frontends = t.frontends;
    let mut limit = t.thread_limit;
    let mut v: Vec<String> = vec!["up".into()];
    let mut services = t.services.join(",");
    for r in &t.remediations {
        match r.as_str() {
            "cognito-fix" => v.push("--cognito-mode=fixed".into()),
            "cloudwatch-local-buffer" => v.push("--cloudwatch-local-buffer".into()),
            "cloudwatch-partitioned-fleet" => v.push("--cloudwatch-partitioned-fleet=2".into()),
            "lambda-bounded-agent" => v.push("--lambda-agent-buffer-max=262144".into()),
            "metadata-bootstrap" => v.push("--bootstrap=metadata-store".into()),
            "raised-limit" => limit *= 2,
            "bigger-servers" => frontends = frontends.div_ceil(2),
            "thread-alarm" => v.push("--thread-alarm".into()),
            // Cells no larger than the scenario's starting fleet: the size
            // range the fleet is known (tested) to work at.
            "cellular" => v.push(format!("--cell-size={}", t.frontends)),
            other => anyhow::bail!("remediation {other:?} is not supported by `cascade run` yet"),
        }
    }
    if services.is_empty() {
        services = "kinesis".into();
    }
    v.extend([
        format!("--frontends={frontends}"),
        format!("--thread-limit={limit}"),
        format!("--time-scale={}", t.time_scale),
        format!("--seed={seed}"),
        format!("--services={services}"),
    ]);
    Ok(UpCmd::try_parse_from(&v)
        .map_err(|e| anyhow::anyhow!("scenario topology: {e}"))?
        .up)
}

/// Writes one line to stdout; a closed stdout (`| head`) does not stop the
/// run, which still has its journal and report to finish.
fn out(line: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_fmt(line).and_then(|()| o.write_all(b"\n"));
}

/// `bigger-servers`: every server has twice the capacity, so the fleet has
/// half as many (set in the topology) and every capacity change or restart
/// batch moves half as many servers for the same capacity.
fn bigger_servers(steps: &mut [scenario::Step]) {
    for st in steps {
        match &mut st.action {
            Action::AddCapacity { count } | Action::RemoveCapacity { count } => {
                *count = count.div_ceil(2);
            }
            Action::RestartFrontends { batch, .. } => *batch = batch.div_ceil(2),
            _ => {}
        }
    }
}

/// An append-only JSONL journal, flushed per line.
struct Journal {
    file: std::fs::File,
    started: Instant,
    start_clock: u64,
    time_scale: f64,
    events: Vec<serde_json::Value>,
    output: Output,
    /// The phase of the incident (the last step's kind), for the live view.
    phase: String,
}

impl Journal {
    fn incident_now(&self) -> u64 {
        self.start_clock + (self.started.elapsed().as_secs_f64() * self.time_scale) as u64
    }

    fn log(&mut self, kind: &str, detail: impl Into<String>) {
        let t_s = self.started.elapsed().as_secs_f64();
        let clock = scenario::clock(self.incident_now());
        let detail = detail.into();
        let line = json!({"t_s": (t_s * 10.0).round() / 10.0, "clock": clock, "kind": kind, "phase": self.phase, "detail": detail});
        if let Err(e) = writeln!(self.file, "{line}").and_then(|()| self.file.flush()) {
            tracing::warn!(error = %e, "journal write failed");
        }
        match self.output {
            Output::Human => out(format_args!(
                "[{clock} | +{t_s:>6.1}s] {:<18} {kind:<13} {detail}",
                self.phase
            )),
            Output::Json => out(format_args!("{line}")),
            Output::Quiet => {}
        }
        self.events.push(line);
    }
}

/// What the run has seen so far, besides the latest status.
#[derive(Default)]
struct Seen {
    /// Each service's first impairment (wall seconds).
    impaired: BTreeMap<String, f64>,
    /// Every step so far: its description and whether it succeeded.
    steps: Vec<(String, bool)>,
}

/// Whether `c` holds in `st`, given what the run has seen.
fn holds(c: &Condition, st: &Status, seen: &Seen) -> bool {
    let impaired = &seen.impaired;
    match c {
        Condition::Step { matching, outcome } => seen
            .steps
            .iter()
            .any(|(d, ok)| d.contains(matching.as_str()) && *ok == (outcome == "ok")),
        Condition::ImpairedInOrder { services } => {
            let times: Option<Vec<f64>> =
                services.iter().map(|s| impaired.get(s).copied()).collect();
            // Health is judged over a window of customer calls, so onsets
            // closer than one window are simultaneous at this resolution.
            let resolution = crate::supervisor::HEALTH_WINDOW_SECS as f64;
            times.is_some_and(|t| t.windows(2).all(|w| w[0] <= w[1] + resolution))
        }
        Condition::Health { service, is } => st.services.iter().any(|s| {
            s.name == *service
                && match is.as_str() {
                    "impaired" => s.health != "serving",
                    h => s.health == h,
                }
        }),
        Condition::ShardMaps { all } => {
            let main: Vec<_> = st
                .frontends
                .iter()
                .filter(|f| crate::status::is_main_fleet(&f.fleet))
                .collect();
            !main.is_empty() && main.iter().all(|f| f.shard_map == *all)
        }
        Condition::RestartRemovals { at_least } => st.restart_removals >= *at_least,
        Condition::ReadyFrontends { at_most } => {
            st.frontends
                .iter()
                .filter(|f| crate::status::is_main_fleet(&f.fleet) && f.shard_map == "ready")
                .count() as u32
                <= *at_most
        }
        Condition::ThreadAlarms { at_least } => st.alarms.len() as u64 >= *at_least,
    }
}

/// Per-service impact as the report records it.
#[derive(Default)]
struct Impact {
    impaired_at_s: Option<f64>,
    recovered_at_s: Option<f64>,
    symptom: String,
    max_error_rate: f64,
    p99_ms: f64,
    /// Wall seconds impaired in all (a service may be impaired more than once).
    impaired_s: f64,
}

/// The dependencies along which a failure can travel (incident.md's
/// cascade table): `(upstream, downstream)`.
const EDGES: [(&str, &str); 6] = [
    ("kinesis", "cognito"),
    ("kinesis", "cloudwatch"),
    ("kinesis", "eventbridge"),
    ("cloudwatch", "lambda"),
    ("cloudwatch", "ecs"),
    ("eventbridge", "ecs"),
];

/// The cascade graph: every dependency edge of the services in the run,
/// and whether the failure travelled along it (the upstream service was
/// impaired first, the downstream one after it).
fn cascade_edges(impact: &BTreeMap<String, Impact>) -> Vec<serde_json::Value> {
    EDGES
        .iter()
        .filter(|(a, b)| impact.contains_key(*a) && impact.contains_key(*b))
        .map(|(a, b)| {
            let lag = match (impact[*a].impaired_at_s, impact[*b].impaired_at_s) {
                (Some(x), Some(y)) if y + 0.5 >= x => {
                    Some(((y - x).max(0.0) * 10.0).round() / 10.0)
                }
                _ => None,
            };
            json!({"from": a, "to": b, "carried": lag.is_some(), "lag_s": lag})
        })
        .collect()
}

/// Runs a scenario; returns the process exit code (0 only if all held).
pub async fn run(
    args: RunArgs,
    loaded: scenario::Loaded,
    dir: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<u8> {
    let mut s = loaded.scenario;
    if let Some(ts) = args.time_scale {
        s.topology.time_scale = ts;
    }
    if s.topology
        .remediations
        .iter()
        .any(|r| r == "bigger-servers")
    {
        bigger_servers(&mut s.steps);
    }
    let seed = args.seed.unwrap_or(s.scenario.seed);
    let mut up = up_args(&s, seed)?;
    // The run's supervisor dies with this process, however it ends.
    up.exit_with = Some(std::process::id());
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    if !args.attach {
        crate::home::set_home(dir.join("home"));
    }
    crate::client::set_quiet(true);
    let output = if args.json {
        Output::Json
    } else if args.quiet {
        Output::Quiet
    } else {
        Output::Human
    };
    let start_clock = scenario::parse_when(&s.scenario.start, 0).unwrap_or(0);
    let mut j = Journal {
        file: std::fs::File::create(dir.join("journal.jsonl"))?,
        started: Instant::now(),
        start_clock,
        time_scale: s.topology.time_scale,
        events: Vec::new(),
        output,
        phase: "starting".into(),
    };
    let remediations = if s.topology.remediations.is_empty() {
        "none".to_owned()
    } else {
        s.topology.remediations.join(",")
    };
    j.log(
        "start",
        format!(
            "scenario {} (seed {seed}, time scale {}x: one incident hour = {:.1} s wall; remediations: {remediations}), report in {}",
            s.scenario.name,
            s.topology.time_scale,
            3600.0 / s.topology.time_scale,
            dir.display()
        ),
    );
    let attach = args.attach;
    let detach = tokio::task::spawn_blocking(move || {
        if attach {
            Ok(())
        } else {
            crate::client::detach_inner(&up)
        }
    });
    let mut verdict = "pass";
    let mut expectations: Vec<(String, Option<bool>, String)> = Vec::new();
    let mut impact: BTreeMap<String, Impact> = BTreeMap::new();
    let mut timeline: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut fleet_timeline: Vec<serde_json::Value> = Vec::new();
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let outcome = async {
        tokio::select! {
            r = detach => r.context("start task")??,
            _ = shutdown.cancelled() => anyhow::bail!("interrupted while the topology was starting"),
        }
        j.started = Instant::now();
        j.phase = "up".into();
        j.log("up", "topology up");
        if attach {
            // The running fleet was not started from this scenario: say so
            // when it differs from the scenario's topology.
            let st = crate::client::fetch_status().await?;
            let t = &s.topology;
            if st.frontends.len() != t.frontends as usize
                || st.thread_limit.limit != Some(t.thread_limit)
                || st.time_scale != t.time_scale
            {
                j.log(
                    "warning",
                    format!(
                        "attached fleet ({} front-ends, thread limit {:?}, time scale {}) differs from the scenario's topology ({}, {}, {})",
                        st.frontends.len(),
                        st.thread_limit.limit,
                        st.time_scale,
                        t.frontends,
                        t.thread_limit,
                        t.time_scale
                    ),
                );
            }
        }
        // Steady state before the first step.
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let st = crate::client::fetch_status().await?;
            if s.steady_state.iter().all(|c| holds(c, &st, &Seen::default())) {
                break;
            }
            if Instant::now() > until {
                anyhow::bail!("the steady-state hypothesis did not hold before the first step");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.cancelled() => anyhow::bail!("interrupted before the first step"),
            }
        }
        j.started = Instant::now();
        j.phase = "steady state".into();
        j.log("steady", "steady-state hypothesis holds; incident clock running");
        let mut steps: Vec<(Duration, scenario::Step)> = s.steps.iter().map(|st| (s.wall(&st.at), st.clone())).collect();
        steps.reverse();
        let mut pending: Vec<(usize, Duration, Duration)> = s
            .expectations
            .iter()
            .enumerate()
            .map(|(i, x)| (i, x.after.as_deref().map_or(Duration::ZERO, |a| s.wall(a)), s.wall(&x.by)))
            .collect();
        expectations = s.expectations.iter().map(|x| (x.name.clone(), None, String::new())).collect();
        let mut last_health: BTreeMap<String, String> = BTreeMap::new();
        let mut seen = Seen::default();
        let mut last_maps = String::new();
        let mut alarms_seen = 0;
        let mut last_sample = f64::NEG_INFINITY;
        let mut last_t = 0.0;
        let mut last_view = 0.0;
        while !steps.is_empty() || !pending.is_empty() {
            let elapsed = j.started.elapsed();
            while steps.last().is_some_and(|(at, _)| *at <= elapsed) {
                if let Some((_, st)) = steps.pop() {
                    j.phase = st.action.kind().to_owned();
                    let r = apply(&st.action, s.topology.time_scale, &progress_tx).await;
                    seen.steps.push((st.action.describe(), r.is_ok()));
                    match r {
                        Ok(d) => j.log("step", format!("{} -> {d}", st.action.describe())),
                        Err(e) => j.log("step-failed", format!("{}: {e:#}", st.action.describe())),
                    }
                }
            }
            while let Ok(p) = progress_rx.try_recv() {
                j.log("restart", p);
            }
            let st = crate::client::fetch_status().await?;
            let t = j.started.elapsed().as_secs_f64();
            let sample = t - last_sample >= 0.5;
            if sample {
                last_sample = t;
            }
            for a in st.alarms.iter().skip(alarms_seen) {
                j.log("alarm", a.clone());
            }
            alarms_seen = st.alarms.len();
            let main: Vec<_> = st.frontends.iter().filter(|f| crate::status::is_main_fleet(&f.fleet)).collect();
            let count = |state: &str| main.iter().filter(|f| f.shard_map == state).count();
            let maps = format!(
                "{} front-ends: {} ready, {} building, {} unusable",
                main.len(),
                count("ready"),
                count("building"),
                count("unusable") + count("down")
            );
            if maps != last_maps {
                j.log("shard-maps", maps.clone());
                last_maps = maps;
            }
            if sample {
                fleet_timeline.push(json!({
                    "t_s": (t * 10.0).round() / 10.0, "fleet": main.len(), "ready": count("ready"),
                    "building": count("building"), "unusable": count("unusable") + count("down"),
                }));
            }
            for svc in &st.services {
                let prev = last_health.insert(svc.name.clone(), svc.health.clone());
                if prev.as_deref() != Some(svc.health.as_str()) {
                    j.log("health", format!("{} {} ({})", svc.name, svc.health, svc.detail));
                }
                let Some(tr) = &svc.traffic else { continue };
                let im = impact.entry(svc.name.clone()).or_default();
                let total = tr.ok + tr.failed;
                let rate = if total > 0 { tr.failed as f64 / total as f64 } else { 0.0 };
                im.max_error_rate = im.max_error_rate.max(rate);
                im.p99_ms = im.p99_ms.max(tr.p99_ms);
                if svc.health != "serving" {
                    im.impaired_s += t - last_t;
                }
                if svc.health != "serving" && im.impaired_at_s.is_none() {
                    im.impaired_at_s = Some(t);
                    im.symptom = svc.detail.clone();
                } else if svc.health == "serving" && im.impaired_at_s.is_some() {
                    im.recovered_at_s.get_or_insert(t);
                } else if svc.health != "serving" {
                    // Impaired again: recovery is the last return to serving.
                    im.recovered_at_s = None;
                }
                if sample {
                    timeline.entry(svc.name.clone()).or_default().push(json!({
                        "t_s": (t * 10.0).round() / 10.0, "health": svc.health,
                        "error_rate": (rate * 1000.0).round() / 1000.0, "p99_ms": tr.p99_ms,
                    }));
                }
            }
            last_t = t;
            // The live view: every 5 s of wall time, one line with every
            // service's state (terminal only; the journal keeps the changes).
            if j.output == Output::Human && t - last_view >= 5.0 {
                last_view = t;
                let states: Vec<String> = st
                    .services
                    .iter()
                    .filter(|x| x.name != "kinesis-backend")
                    .map(|x| format!("{}={}", x.name, x.health))
                    .collect();
                out(format_args!(
                    "[{} | +{t:>6.1}s] {:<18} {:<13} {}; maps {}/{} ready",
                    scenario::clock(j.incident_now()),
                    j.phase,
                    "state",
                    states.join(" "),
                    count("ready"),
                    main.len()
                ));
            }
            seen.impaired = impact
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.impaired_at_s?)))
                .collect();
            if let Some(c) = s.aborts.iter().find(|c| holds(c, &st, &seen)) {
                j.log("abort", format!("abort condition met: {c:?}"));
                verdict = "aborted";
                break;
            }
            let now = j.started.elapsed();
            let clock_now = scenario::clock(j.incident_now());
            let mut decided = Vec::new();
            pending.retain(|(i, after, by)| {
                let x = &s.expectations[*i];
                if now < *after {
                    return true;
                }
                let ok = holds(&x.condition, &st, &seen);
                let verdict = match (x.throughout, ok, now > *by) {
                    (false, true, _) => Some((true, format!("held at {clock_now}"))),
                    (false, false, true) => Some((false, format!("not observed by {}", x.by))),
                    (true, false, _) => Some((false, format!("stopped holding at {clock_now}"))),
                    (true, true, true) => Some((true, format!("held throughout, until {}", x.by))),
                    _ => None,
                };
                match verdict {
                    Some(v) => {
                        decided.push((*i, v));
                        false
                    }
                    None => true,
                }
            });
            for (i, (held, detail)) in decided {
                let name = s.expectations[i].name.clone();
                j.log(if held { "expect-held" } else { "expect-failed" }, format!("{name} ({detail})"));
                expectations[i] = (name, Some(held), detail);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.cancelled() => {
                    verdict = "aborted";
                    j.log("interrupted", "Ctrl-C: stopping, reverting faults, taking everything down");
                    break;
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &outcome {
        j.log("error", format!("{e:#}"));
        verdict = "aborted";
    }
    j.phase = "rollback".into();
    let wall_s = j.started.elapsed().as_secs_f64();
    for r in &s.rollbacks {
        match apply(&r.action, s.topology.time_scale, &progress_tx).await {
            Ok(d) => j.log("rollback", format!("{} -> {d}", r.action.describe())),
            Err(e) => j.log("rollback-failed", format!("{}: {e:#}", r.action.describe())),
        }
    }
    if args.attach {
        j.log("attached", "the fleet stays up");
    } else if let Err(e) = crate::client::down().await {
        j.log("error", format!("down: {e:#}"));
    }
    if verdict == "pass" && expectations.iter().any(|(_, held, _)| *held != Some(true)) {
        verdict = "fail";
    }
    j.phase = "done".into();
    j.log("verdict", verdict);
    let order: Vec<&String> = {
        let mut v: Vec<(&String, f64)> = impact
            .iter()
            .filter_map(|(k, v)| Some((k, v.impaired_at_s?)))
            .collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
        v.into_iter().map(|(k, _)| k).collect()
    };
    let report = json!({
        "scenario": s.scenario.name,
        "seed": seed,
        "time_scale": s.topology.time_scale,
        "verdict": verdict,
        "remediations": s.topology.remediations,
        "start_clock": scenario::clock(start_clock),
        "wall_s": (wall_s * 10.0).round() / 10.0,
        "services": impact.iter().map(|(k, v)| (k.clone(), json!({
            "impaired_at_s": v.impaired_at_s, "recovered_at_s": v.recovered_at_s, "symptom": v.symptom,
            "max_error_rate": v.max_error_rate, "p99_ms": v.p99_ms,
            "impaired_s": (v.impaired_s * 10.0).round() / 10.0,
            "impaired_clock": v.impaired_at_s.map(|t| scenario::clock(start_clock + (t * s.topology.time_scale) as u64)),
        }))).collect::<serde_json::Map<_, _>>(),
        "impaired_order": order,
        "cascade": cascade_edges(&impact),
        "timeline": timeline,
        "frontends": fleet_timeline,
        "expectations": expectations.iter().map(|(n, h, d)| json!({"name": n, "held": h.unwrap_or(false), "detail": if d.is_empty() { "not judged (run stopped)" } else { d.as_str() }})).collect::<Vec<_>>(),
        "events": j.events.iter().map(|e| json!({"t_s": e["t_s"], "clock": e["clock"], "kind": e["kind"], "detail": e["detail"]})).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(dir.join("report.html"), crate::report_html::render(&report))?;
    let held = expectations.iter().filter(|x| x.1 == Some(true)).count();
    if output == Output::Json {
        outln!(
            "{}",
            json!({"verdict": verdict, "held": held, "expectations": expectations.len(), "report": dir.join("report.json")})
        );
    } else {
        outln!(
            "verdict: {verdict} ({held} of {} expectations held); report: {} (and report.html)",
            expectations.len(),
            dir.join("report.json").display()
        );
    }
    Ok(match verdict {
        "pass" => 0,
        "aborted" => 130,
        _ => 1,
    })
}

/// `cascade compare` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Scenario name (in scenarios/) or path to a .toml file.
    pub scenario: String,
    /// Comma-separated variants: `baseline` (the scenario as written) and any
    /// remediation (cognito-fix, cloudwatch-local-buffer, cloudwatch-partitioned-fleet,
    /// lambda-bounded-agent, metadata-bootstrap, raised-limit, bigger-servers,
    /// thread-alarm, cellular).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub variants: Vec<String>,
    /// Directory for compare.json and each variant's report (default:
    /// cascade-reports/<scenario>-compare-<unix time>).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Override the scenario's time scale (incident seconds per wall second).
    #[arg(long, value_parser = cascade_core::kinesis::parse_time_scale)]
    pub time_scale: Option<f64>,
    /// Override the scenario's seed (the same for every variant).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Checks the variant names: `baseline` or a known remediation, no repeats.
pub fn check_variants(v: &[String]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for name in v {
        if name != "baseline" && !scenario::REMEDIATIONS.contains(&name.as_str()) {
            return Err(format!(
                "--variants: unknown variant {name:?}; valid: baseline, {}",
                scenario::REMEDIATIONS.join(", ")
            ));
        }
        if !seen.insert(name) {
            return Err(format!("--variants: {name:?} is listed twice"));
        }
    }
    Ok(())
}

/// Runs the scenario once per variant (one after the other, each with its
/// own report directory and fleet), then prints the blast-radius table and
/// writes `compare.json`. Exit code 0 when every variant ran to its end
/// (a variant's failed expectations are its result, not an error), 130 on
/// Ctrl-C.
pub async fn compare(
    args: CompareArgs,
    loaded: scenario::Loaded,
    dir: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<u8> {
    let mut results: Vec<(String, serde_json::Value)> = Vec::new();
    let total = args.variants.len();
    for (n, variant) in args.variants.iter().enumerate() {
        let mut l = loaded.clone();
        if variant != "baseline" && !l.scenario.topology.remediations.contains(variant) {
            l.scenario.topology.remediations.push(variant.clone());
        }
        let vdir = dir.join(variant);
        outln!(
            "[{}/{total}] {variant}: running {} (report in {})",
            n + 1,
            l.scenario.scenario.name,
            vdir.display()
        );
        let run_args = RunArgs {
            scenario: args.scenario.clone(),
            report: Some(vdir.clone()),
            time_scale: args.time_scale,
            seed: args.seed,
            quiet: true,
            json: false,
            attach: false,
        };
        let started = Instant::now();
        let code = run(run_args, l, vdir.clone(), shutdown.clone()).await?;
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(vdir.join("report.json")).context("read the variant's report.json")?,
        )?;
        outln!(
            "[{}/{total}] {variant}: verdict {} in {:.0} s",
            n + 1,
            report["verdict"].as_str().unwrap_or("?"),
            started.elapsed().as_secs_f64()
        );
        results.push((variant.clone(), report));
        if code == 130 || shutdown.is_cancelled() {
            outln!(
                "interrupted; the variants that ran are in {}",
                dir.display()
            );
            return Ok(130);
        }
    }
    let table = blast_radius(&results);
    outln!("\n{table}");
    let doc = json!({
        "scenario": loaded.scenario.scenario.name,
        "variants": results.iter().map(|(v, r)| (v.clone(), json!({
            "verdict": r["verdict"], "report": dir.join(v).join("report.json"),
            "services": r["services"], "impaired_order": r["impaired_order"],
            "expectations": r["expectations"],
        }))).collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(dir.join("compare.json"), serde_json::to_vec_pretty(&doc)?)?;
    std::fs::write(dir.join("compare.txt"), &table)?;
    outln!(
        "compare.json, compare.txt and each variant's report: {}",
        dir.display()
    );
    Ok(0)
}

/// The blast-radius table: per service and variant, whether it was
/// impaired, for how long (incident time) and its peak error rate.
fn blast_radius(results: &[(String, serde_json::Value)]) -> String {
    use std::fmt::Write as _;
    let mut services: Vec<String> = Vec::new();
    for (_, r) in results {
        if let Some(m) = r["services"].as_object() {
            for k in m.keys() {
                if !services.contains(k) {
                    services.push(k.clone());
                }
            }
        }
    }
    let cell = |r: &serde_json::Value, svc: &str| -> String {
        let v = &r["services"][svc];
        if v.is_null() {
            return "-".into();
        }
        let scale = r["time_scale"].as_f64().unwrap_or(360.0);
        let peak = v["max_error_rate"].as_f64().unwrap_or(0.0) * 100.0;
        match v["impaired_at_s"].as_f64() {
            None => format!("no ({peak:.0}%)"),
            Some(_) => {
                let secs = v["impaired_s"].as_f64().unwrap_or(0.0) * scale;
                let open = if v["recovered_at_s"].is_null() {
                    "+"
                } else {
                    ""
                };
                format!("YES {}{open} {peak:.0}%", short_duration(secs))
            }
        }
    };
    let mut out = String::new();
    let w = 22;
    let _ = write!(out, "{:<14}", "blast radius");
    for (v, _) in results {
        let _ = write!(out, "{v:<w$}");
    }
    out.push('\n');
    for svc in &services {
        let _ = write!(out, "{svc:<14}");
        for (_, r) in results {
            let _ = write!(out, "{:<w$}", cell(r, svc));
        }
        out.push('\n');
    }
    let _ = write!(out, "{:<14}", "verdict");
    for (_, r) in results {
        let _ = write!(out, "{:<w$}", r["verdict"].as_str().unwrap_or("?"));
    }
    out.push_str(
        "\n(YES <incident time impaired> <peak error rate>; + = still impaired at the end; no = never impaired)\n",
    );
    out
}

/// `3h10m` style, from seconds.
fn short_duration(secs: f64) -> String {
    let m = (secs / 60.0).round() as u64;
    if m >= 60 {
        format!("{}h{:02}m", m / 60, m % 60)
    } else {
        format!("{m}m")
    }
}

/// Performs one step against the running supervisor; returns what happened.
async fn apply(
    a: &Action,
    time_scale: f64,
    progress: &tokio::sync::mpsc::UnboundedSender<String>,
) -> anyhow::Result<String> {
    let mut c = crate::client::supervisor().await?;
    Ok(match a {
        Action::AddCapacity { count } => {
            let r = c
                .add_capacity(sv::CapacityRequest { count: *count })
                .await?
                .into_inner();
            format!("fleet {}", r.fleet_size)
        }
        Action::RemoveCapacity { count } => {
            let r = c
                .remove_capacity(sv::CapacityRequest { count: *count })
                .await?
                .into_inner();
            format!("fleet {}", r.fleet_size)
        }
        Action::RestartFrontends {
            batch,
            interval,
            grace,
        } => {
            let wall = |d: Option<&str>, default: &str| -> anyhow::Result<Duration> {
                let incident = humantime::parse_duration(d.unwrap_or(default))?;
                let wall = Duration::from_secs_f64(incident.as_secs_f64() / time_scale);
                Ok(Duration::from_millis(wall.as_millis() as u64))
            };
            let interval = wall(interval.as_deref(), "0s")?;
            let grace = wall(grace.as_deref(), crate::supervisor::DEFAULT_RESTART_GRACE)?;
            // The restart proceeds in the supervisor; its progress goes to the journal.
            let mut stream = c
                .restart_frontends(sv::RestartRequest {
                    batch: *batch,
                    interval_ms: interval.as_millis() as u64,
                    grace_ms: grace.as_millis() as u64,
                })
                .await?
                .into_inner();
            let progress = progress.clone();
            tokio::spawn(async move {
                loop {
                    match stream.message().await {
                        Ok(Some(p)) => {
                            let _ = progress.send(p.detail);
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = progress.send(format!("restart failed: {}", e.message()));
                            return;
                        }
                    }
                }
            });
            format!(
                "restarting {batch} at a time, {} wall between batches, {} wall grace",
                humantime::format_duration(interval),
                humantime::format_duration(grace)
            )
        }
        Action::Inject { fault } => {
            let f = c
                .inject_fault(sv::InjectFaultRequest {
                    spec_json: serde_json::to_string(fault)?,
                })
                .await?
                .into_inner();
            format!("{} {}", f.id, f.summary)
        }
        Action::Clear { id } => {
            let r = c
                .clear_faults(sv::ClearFaultsRequest {
                    id: id.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            format!("reverted {}", r.cleared.join(", "))
        }
        Action::Configure { target, key, value } => {
            let r = c
                .configure(sv::ConfigureRequest {
                    target: target.clone(),
                    key: key.clone(),
                    value: value.clone(),
                })
                .await?
                .into_inner();
            format!("{:?}", r.applied)
        }
        Action::ShdPost { message, backup } => {
            crate::client::shd(crate::client::ShdCmd::Post {
                message: message.clone(),
                backup: *backup,
                user: "operator".into(),
                password: "operator-password".into(),
            })
            .await?;
            "posted".into()
        }
    })
}
