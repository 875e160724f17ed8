//! The scenario engine: `cascade run <scenario>`. It brings the scenario's
//! topology up (a detached supervisor in the report directory), runs the
//! steps on the incident clock mapped to wall time, watches every service out
//! of band, judges each expectation by its deadline, and writes a JSONL
//! journal (flushed line by line, complete even on Ctrl-C), `report.json`
//! and `report.html`. The exit code is 0 only when every expectation held.
//!
//! One concern a file: `variants` (scenario to flags), `steps`, `journal`,
//! `impact` (the tracker), `judge`, `report` (the typed report.json) and
//! `compare`.

pub mod compare;
pub mod impact;
pub mod journal;
pub mod judge;
pub mod report;
pub mod steps;
pub mod variants;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use compare::{CompareArgs, check_variants, compare};
use impact::ImpactTracker;
use journal::{Journal, Output, out};
use judge::{Judge, Seen, holds};
use report::{EventKind, ExpectationResult, Report};

use crate::clock::{IncidentClock, parse_when, tenths};
use crate::scenario::{self, Scenario};
use crate::state::{Remediation, Verdict};
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

/// How often the run observes and judges.
const OBSERVE_EVERY: Duration = Duration::from_millis(250);
/// How long the steady-state hypothesis has to hold before the first step.
const STEADY_DEADLINE: Duration = Duration::from_secs(60);

/// A run in progress: what it has written and recorded so far.
struct Runner {
    s: Scenario,
    journal: Journal,
    tracker: ImpactTracker,
    seen: Seen,
    expectations: Vec<(String, Option<(bool, String)>)>,
    verdict: Verdict,
    progress_tx: mpsc::UnboundedSender<String>,
    progress_rx: mpsc::UnboundedReceiver<String>,
}

/// Runs a scenario and returns its report (written to `dir` as
/// `report.json` and `report.html`, beside `journal.jsonl`).
pub async fn run(
    args: RunArgs,
    loaded: scenario::Loaded,
    dir: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<Report> {
    let mut s = loaded.scenario;
    if let Some(ts) = args.time_scale {
        s.topology.time_scale = ts;
    }
    if s.topology
        .remediations
        .contains(&Remediation::BiggerServers)
    {
        variants::bigger_servers(&mut s.steps);
    }
    let seed = args.seed.unwrap_or(s.scenario.seed);
    let mut up = variants::up_args(&s, seed)?;
    // The run's supervisor dies with this process, however it ends.
    up.exit_with = Some(std::process::id());
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    if !args.attach {
        crate::home::set_home(dir.join("home"));
    }
    crate::client::set_quiet(true);
    let output = match (args.json, args.quiet) {
        (true, _) => Output::Json,
        (_, true) => Output::Quiet,
        _ => Output::Human,
    };
    let clock = IncidentClock {
        start: parse_when(&s.scenario.start, 0).unwrap_or(0),
        scale: s.topology.time_scale,
    };
    let journal = Journal::create(&dir.join("journal.jsonl"), clock, output)?;
    let (progress_tx, progress_rx) = mpsc::unbounded_channel();
    let mut r = Runner {
        s,
        journal,
        tracker: ImpactTracker::default(),
        seen: Seen::default(),
        expectations: Vec::new(),
        verdict: Verdict::Pass,
        progress_tx,
        progress_rx,
    };
    r.log_start(seed, &dir);
    let attach = args.attach;
    let start = tokio::task::spawn_blocking(move || {
        if attach {
            Ok(())
        } else {
            crate::client::detach_inner(&up)
        }
    });
    let outcome = r.play(start, attach, &shutdown).await;
    if let Err(e) = &outcome {
        r.journal.log(EventKind::Error, format!("{e:#}"));
        r.verdict = Verdict::Aborted;
    }
    let wall_s = r.journal.elapsed_s();
    r.finish(attach).await;
    let report = r.report(seed, wall_s);
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(dir.join("report.html"), crate::report_html::render(&report))?;
    print_verdict(&report, output, &dir);
    Ok(report)
}

fn print_verdict(report: &Report, output: Output, dir: &std::path::Path) {
    let path = dir.join("report.json");
    if output == Output::Json {
        let line = serde_json::json!({"verdict": report.verdict, "held": report.held(), "expectations": report.expectations.len(), "report": path});
        out(format_args!("{line}"));
    } else {
        out(format_args!(
            "verdict: {} ({} of {} expectations held); report: {} (and report.html)",
            report.verdict,
            report.held(),
            report.expectations.len(),
            path.display()
        ));
    }
}

impl Runner {
    fn log_start(&mut self, seed: u64, dir: &std::path::Path) {
        let t = &self.s.topology;
        let remediations = if t.remediations.is_empty() {
            "none".to_owned()
        } else {
            t.remediations
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(",")
        };
        let line = format!(
            "scenario {} (seed {seed}, time scale {}x: one incident hour = {:.1} s wall; remediations: {remediations}), report in {}",
            self.s.scenario.name,
            t.time_scale,
            3600.0 / t.time_scale,
            dir.display()
        );
        self.journal.log(EventKind::Start, line);
    }

    /// Brings the topology up, waits for the steady state, then plays the
    /// steps and judges until every step ran and every expectation is decided.
    async fn play(
        &mut self,
        start: tokio::task::JoinHandle<anyhow::Result<()>>,
        attach: bool,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        tokio::select! {
            r = start => r.context("start task")??,
            _ = shutdown.cancelled() => anyhow::bail!("interrupted while the topology was starting"),
        }
        self.journal.started = Instant::now();
        self.journal.phase = "up".into();
        self.journal.log(EventKind::Up, "topology up");
        if attach {
            self.warn_if_attached_differs().await?;
        }
        self.wait_steady(shutdown).await?;
        self.journal.started = Instant::now();
        self.journal.phase = "steady state".into();
        self.journal.log(
            EventKind::Steady,
            "steady-state hypothesis holds; incident clock running",
        );
        self.main_loop(shutdown).await
    }

    /// The running fleet was not started from this scenario: say so when
    /// it differs from the scenario's topology.
    async fn warn_if_attached_differs(&mut self) -> anyhow::Result<()> {
        let st = crate::client::fetch_status().await?;
        let t = &self.s.topology;
        if st.frontends.len() != t.frontends as usize
            || st.thread_limit.limit != Some(t.thread_limit)
            || st.time_scale != t.time_scale
        {
            let line = format!(
                "attached fleet ({} front-ends, thread limit {:?}, time scale {}) differs from the scenario's topology ({}, {}, {})",
                st.frontends.len(),
                st.thread_limit.limit,
                st.time_scale,
                t.frontends,
                t.thread_limit,
                t.time_scale
            );
            self.journal.log(EventKind::Warning, line);
        }
        Ok(())
    }

    /// Waits for the steady-state hypothesis before the first step.
    async fn wait_steady(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let until = Instant::now() + STEADY_DEADLINE;
        loop {
            let st = crate::client::fetch_status().await?;
            if self
                .s
                .steady_state
                .iter()
                .all(|c| holds(c, &st, &Seen::default()))
            {
                return Ok(());
            }
            if Instant::now() > until {
                anyhow::bail!("the steady-state hypothesis did not hold before the first step");
            }
            tokio::select! {
                _ = tokio::time::sleep(OBSERVE_EVERY) => {}
                _ = shutdown.cancelled() => anyhow::bail!("interrupted before the first step"),
            }
        }
    }

    async fn main_loop(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut steps: Vec<(Duration, scenario::Step)> = self
            .s
            .steps
            .iter()
            .map(|st| (self.s.wall(&st.at), st.clone()))
            .collect();
        steps.reverse();
        let mut judge = Judge::new(&self.s.expectations, |w| self.s.wall(w));
        self.expectations = self
            .s
            .expectations
            .iter()
            .map(|x| (x.name.clone(), None))
            .collect();
        let mut alarms_seen = 0;
        let mut last_view = 0.0;
        while !steps.is_empty() || !judge.done() {
            self.run_due_steps(&mut steps).await;
            while let Ok(p) = self.progress_rx.try_recv() {
                self.journal.log(EventKind::Restart, p);
            }
            let st = crate::client::fetch_status().await?;
            let t = self.journal.elapsed_s();
            for a in st.alarms.iter().skip(alarms_seen) {
                self.journal.log(EventKind::Alarm, a.clone());
            }
            alarms_seen = st.alarms.len();
            for (kind, line) in self.tracker.observe(&st, t) {
                self.journal.log(kind, line);
            }
            if self.journal.output == Output::Human && t - last_view >= 5.0 {
                last_view = t;
                self.live_view(&st, t);
            }
            self.seen.impaired = self.tracker.first_impaired();
            if let Some(c) = self.s.aborts.iter().find(|c| holds(c, &st, &self.seen)) {
                self.journal
                    .log(EventKind::Abort, format!("abort condition met: {c:?}"));
                self.verdict = Verdict::Aborted;
                break;
            }
            let clock_now = self.journal.clock_now();
            for (i, (held, detail)) in
                judge.observe(&st, &self.seen, self.journal.started.elapsed(), &clock_now)
            {
                let name = self.s.expectations[i].name.clone();
                let kind = if held {
                    EventKind::ExpectHeld
                } else {
                    EventKind::ExpectFailed
                };
                self.journal.log(kind, format!("{name} ({detail})"));
                self.expectations[i] = (name, Some((held, detail)));
            }
            tokio::select! {
                _ = tokio::time::sleep(OBSERVE_EVERY) => {}
                _ = shutdown.cancelled() => {
                    self.verdict = Verdict::Aborted;
                    self.journal.log(EventKind::Interrupted, "Ctrl-C: stopping, reverting faults, taking everything down");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Runs every step whose time has come.
    async fn run_due_steps(&mut self, steps: &mut Vec<(Duration, scenario::Step)>) {
        while steps
            .last()
            .is_some_and(|(at, _)| *at <= self.journal.started.elapsed())
        {
            let Some((_, st)) = steps.pop() else { break };
            self.journal.phase = st.action.kind().to_owned();
            let r = steps::apply(&st.action, self.s.topology.time_scale, &self.progress_tx).await;
            self.seen.steps.push((st.action.describe(), r.is_ok()));
            match r {
                Ok(d) => self
                    .journal
                    .log(EventKind::Step, format!("{} -> {d}", st.action.describe())),
                Err(e) => self.journal.log(
                    EventKind::StepFailed,
                    format!("{}: {e:#}", st.action.describe()),
                ),
            }
        }
    }

    /// One line with every service's state (terminal only; the journal
    /// keeps the changes).
    fn live_view(&self, st: &Status, t: f64) {
        let states: Vec<String> = st
            .services
            .iter()
            .filter(|x| x.name != "kinesis-backend")
            .map(|x| format!("{}={}", x.name, x.health))
            .collect();
        out(format_args!(
            "[{} | +{t:>6.1}s] {:<18} {:<13} {}; maps {}/{} ready",
            self.journal.clock_now(),
            self.journal.phase,
            "state",
            states.join(" "),
            st.count_maps(crate::state::MapState::Ready),
            st.main_fleet().count()
        ));
    }

    /// Rollback steps, then the fleet down (unless attached), then the verdict.
    async fn finish(&mut self, attach: bool) {
        self.journal.phase = "rollback".into();
        for r in self.s.rollbacks.clone() {
            match steps::apply(&r.action, self.s.topology.time_scale, &self.progress_tx).await {
                Ok(d) => self.journal.log(
                    EventKind::Rollback,
                    format!("{} -> {d}", r.action.describe()),
                ),
                Err(e) => self.journal.log(
                    EventKind::RollbackFailed,
                    format!("{}: {e:#}", r.action.describe()),
                ),
            }
        }
        if attach {
            self.journal.log(EventKind::Attached, "the fleet stays up");
        } else if let Err(e) = crate::client::down().await {
            self.journal.log(EventKind::Error, format!("down: {e:#}"));
        }
        if self.verdict == Verdict::Pass
            && self
                .expectations
                .iter()
                .any(|(_, d)| !matches!(d, Some((true, _))))
        {
            self.verdict = Verdict::Fail;
        }
        self.journal.phase = "done".into();
        self.journal.log(EventKind::Verdict, self.verdict.as_str());
    }

    fn report(&self, seed: u64, wall_s: f64) -> Report {
        let clock = self.journal.clock;
        let mut services = self.tracker.impact.clone();
        for v in services.values_mut() {
            v.impaired_s = tenths(v.impaired_s);
            v.impaired_clock = v.impaired_at_s.map(|t| clock.clock_at(t));
        }
        Report {
            scenario: self.s.scenario.name.clone(),
            seed,
            time_scale: self.s.topology.time_scale,
            verdict: self.verdict,
            remediations: self.s.topology.remediations.clone(),
            start_clock: crate::clock::clock(clock.start),
            wall_s: tenths(wall_s),
            services,
            impaired_order: self.tracker.impaired_order(),
            cascade: self.tracker.cascade_edges(),
            timeline: self.tracker.timeline.clone(),
            frontends: self.tracker.fleet.clone(),
            expectations: self
                .expectations
                .iter()
                .map(|(name, d)| ExpectationResult {
                    name: name.clone(),
                    held: matches!(d, Some((true, _))),
                    detail: d
                        .as_ref()
                        .map_or("not judged (run stopped)".into(), |(_, x)| x.clone()),
                })
                .collect(),
            events: self.journal.events.clone(),
        }
    }
}
