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
    #[arg(long)]
    pub quiet: bool,
    /// Play against the fleet already running (found as `cascade status`
    /// finds it) instead of starting one; leave it up at the end.
    #[arg(long)]
    pub attach: bool,
}

/// The report directory a run will use (set before anything starts).
pub fn report_dir(args: &RunArgs, name: &str) -> PathBuf {
    args.report.clone().unwrap_or_else(|| {
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

/// An append-only JSONL journal, flushed per line.
struct Journal {
    file: std::fs::File,
    started: Instant,
    start_clock: u64,
    time_scale: f64,
    events: Vec<serde_json::Value>,
}

impl Journal {
    fn incident_now(&self) -> u64 {
        self.start_clock + (self.started.elapsed().as_secs_f64() * self.time_scale) as u64
    }

    fn log(&mut self, kind: &str, detail: impl Into<String>, quiet: bool) {
        let t_s = self.started.elapsed().as_secs_f64();
        let clock = scenario::clock(self.incident_now());
        let detail = detail.into();
        let line = json!({"t_s": (t_s * 10.0).round() / 10.0, "clock": clock, "kind": kind, "detail": detail});
        if let Err(e) = writeln!(self.file, "{line}").and_then(|()| self.file.flush()) {
            tracing::warn!(error = %e, "journal write failed");
        }
        if !quiet {
            println!("[{clock} | +{t_s:>6.1}s] {kind:<12} {detail}");
        }
        self.events.push(line);
    }
}

/// Whether `c` holds in `st`.
fn holds(c: &Condition, st: &Status) -> bool {
    match c {
        Condition::Health { service, is } => st.services.iter().any(|s| {
            s.name == *service
                && match is.as_str() {
                    "impaired" => s.health != "serving",
                    h => s.health == h,
                }
        }),
        Condition::ShardMaps { all } => {
            let main: Vec<_> = st.frontends.iter().filter(|f| f.fleet.is_empty()).collect();
            !main.is_empty() && main.iter().all(|f| f.shard_map == *all)
        }
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
    let seed = args.seed.unwrap_or(s.scenario.seed);
    let up = up_args(&s, seed)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let start_clock = scenario::parse_when(&s.scenario.start, 0).unwrap_or(0);
    let mut j = Journal {
        file: std::fs::File::create(dir.join("journal.jsonl"))?,
        started: Instant::now(),
        start_clock,
        time_scale: s.topology.time_scale,
        events: Vec::new(),
    };
    j.log(
        "start",
        format!(
            "scenario {} (seed {seed}, time scale {}x), report in {}",
            s.scenario.name,
            s.topology.time_scale,
            dir.display()
        ),
        args.quiet,
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
    let outcome = async {
        detach.await.context("start task")??;
        j.started = Instant::now();
        j.log("up", "topology up", args.quiet);
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
                    args.quiet,
                );
            }
        }
        // Steady state before the first step.
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let st = crate::client::fetch_status().await?;
            if s.steady_state.iter().all(|c| holds(c, &st)) {
                break;
            }
            if Instant::now() > until {
                anyhow::bail!("the steady-state hypothesis did not hold before the first step");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        j.started = Instant::now();
        j.log("steady", "steady-state hypothesis holds; incident clock running", args.quiet);
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
        while !steps.is_empty() || !pending.is_empty() {
            let elapsed = j.started.elapsed();
            while steps.last().is_some_and(|(at, _)| *at <= elapsed) {
                if let Some((_, st)) = steps.pop() {
                    let r = apply(&st.action, s.topology.time_scale).await;
                    match r {
                        Ok(d) => j.log("step", format!("{} -> {d}", st.action.describe()), args.quiet),
                        Err(e) => j.log("step-failed", format!("{}: {e:#}", st.action.describe()), args.quiet),
                    }
                }
            }
            let st = crate::client::fetch_status().await?;
            let t = j.started.elapsed().as_secs_f64();
            for svc in &st.services {
                let prev = last_health.insert(svc.name.clone(), svc.health.clone());
                if prev.as_deref() != Some(svc.health.as_str()) {
                    j.log("health", format!("{} {} ({})", svc.name, svc.health, svc.detail), args.quiet);
                }
                let im = impact.entry(svc.name.clone()).or_default();
                if let Some(tr) = &svc.traffic {
                    let total = tr.ok + tr.failed;
                    if total > 0 {
                        im.max_error_rate = im.max_error_rate.max(tr.failed as f64 / total as f64);
                    }
                    im.p99_ms = im.p99_ms.max(tr.p99_ms);
                }
                if svc.health != "serving" && im.impaired_at_s.is_none() {
                    im.impaired_at_s = Some(t);
                    im.symptom = svc.detail.clone();
                } else if svc.health == "serving" && im.impaired_at_s.is_some() && im.recovered_at_s.is_none() {
                    im.recovered_at_s = Some(t);
                }
            }
            if let Some(c) = s.aborts.iter().find(|c| holds(c, &st)) {
                j.log("abort", format!("abort condition met: {c:?}"), args.quiet);
                verdict = "aborted";
                break;
            }
            let now = j.started.elapsed();
            pending.retain(|(i, after, by)| {
                let x = &s.expectations[*i];
                if now >= *after && holds(&x.condition, &st) {
                    expectations[*i] = (x.name.clone(), Some(true), format!("held at {}", scenario::clock(j.incident_now())));
                    j.log("expect-held", x.name.clone(), args.quiet);
                    false
                } else if now > *by {
                    expectations[*i] = (x.name.clone(), Some(false), format!("not observed by {}", x.by));
                    j.log("expect-failed", format!("{} (not observed by {})", x.name, x.by), args.quiet);
                    false
                } else {
                    true
                }
            });
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.cancelled() => {
                    verdict = "aborted";
                    j.log("interrupted", "Ctrl-C: stopping, reverting faults, taking everything down", args.quiet);
                    break;
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &outcome {
        j.log("error", format!("{e:#}"), args.quiet);
        verdict = "aborted";
    }
    for r in &s.rollbacks {
        match apply(&r.action, s.topology.time_scale).await {
            Ok(d) => j.log(
                "rollback",
                format!("{} -> {d}", r.action.describe()),
                args.quiet,
            ),
            Err(e) => j.log(
                "rollback-failed",
                format!("{}: {e:#}", r.action.describe()),
                args.quiet,
            ),
        }
    }
    if args.attach {
        j.log("attached", "the fleet stays up", args.quiet);
    } else if let Err(e) = crate::client::down().await {
        j.log("error", format!("down: {e:#}"), args.quiet);
    }
    if verdict == "pass" && expectations.iter().any(|(_, held, _)| *held != Some(true)) {
        verdict = "fail";
    }
    j.log("verdict", verdict, args.quiet);
    let report = json!({
        "scenario": s.scenario.name,
        "seed": seed,
        "time_scale": s.topology.time_scale,
        "verdict": verdict,
        "services": impact.iter().map(|(k, v)| (k.clone(), json!({
            "impaired_at_s": v.impaired_at_s, "recovered_at_s": v.recovered_at_s, "symptom": v.symptom,
            "max_error_rate": v.max_error_rate, "p99_ms": v.p99_ms,
        }))).collect::<serde_json::Map<_, _>>(),
        "expectations": expectations.iter().map(|(n, h, d)| json!({"name": n, "held": h.unwrap_or(false), "detail": if d.is_empty() { "not judged (run stopped)" } else { d.as_str() }})).collect::<Vec<_>>(),
        "events": j.events.iter().map(|e| json!({"t_s": e["t_s"], "kind": e["kind"], "detail": e["detail"]})).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    println!(
        "verdict: {verdict} ({} of {} expectations held); report: {}",
        expectations.iter().filter(|x| x.1 == Some(true)).count(),
        expectations.len(),
        dir.join("report.json").display()
    );
    Ok(match verdict {
        "pass" => 0,
        "aborted" => 130,
        _ => 1,
    })
}

/// Performs one step against the running supervisor; returns what happened.
async fn apply(a: &Action, time_scale: f64) -> anyhow::Result<String> {
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
        Action::RestartFrontends { batch, interval } => {
            let incident = interval
                .as_deref()
                .map(humantime::parse_duration)
                .transpose()?
                .unwrap_or_default();
            let wall = Duration::from_secs_f64(incident.as_secs_f64() / time_scale);
            // The restart proceeds in the supervisor; its progress is not awaited here.
            let mut stream = c
                .restart_frontends(sv::RestartRequest {
                    batch: *batch,
                    interval_ms: wall.as_millis() as u64,
                })
                .await?
                .into_inner();
            tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
            format!(
                "restarting {batch} at a time, {} wall between batches",
                humantime::format_duration(wall)
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
