//! The scenario engine: `cascade run <scenario>`. It brings the scenario's
//! topology up (a detached supervisor in the report directory), runs the
//! steps on the incident clock mapped to wall time, watches every service out
//! of band, judges each expectation by its deadline, and writes a JSONL
//! journal (flushed line by line, complete even on Ctrl-C), `report.json`
//! and `report.html`. The exit code is 0 only when every expectation held.
//!
//! One concern a file: `variants` (scenario to flags), `play` (the run),
//! `stepper` and `steps`, `journal`, `impact` (the tracker), `conditions`
//! and `judge`, `report` (the typed report.json) and `compare`.

pub mod cascade;
pub mod compare;
pub mod conditions;
pub mod fidelity;
pub mod impact;
pub mod journal;
pub mod judge;
mod play;
pub mod report;
mod stepper;
pub mod steps;
pub mod variants;

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use compare::{CompareArgs, check_variants, compare};
use journal::{Journal, Output, out};
use play::Runner;
use report::{EventKind, Report};

use crate::clock::{IncidentClock, parse_when};
use crate::scenario;
use crate::state::{Remediation, Verdict};

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
    #[arg(long, value_parser = cascade_core::parse::parse_time_scale)]
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
    /// Switch on a remediation for this run, as `compare` does for a
    /// variant (repeatable).
    #[arg(long = "remediation", value_enum)]
    pub remediations: Vec<Remediation>,
    /// Stop the run at this incident clock (e.g. 08:30); expectations not
    /// decided by then do not hold.
    #[arg(long, value_parser = parse_until)]
    pub until: Option<String>,
}

/// `--until`: an incident clock, HH:MM or HH:MM:SS.
pub fn parse_until(s: &str) -> Result<String, String> {
    parse_when(s, 0).map(|_| s.to_owned())
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
    for r in &args.remediations {
        if !s.topology.remediations.contains(r) {
            s.topology.remediations.push(*r);
        }
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
    // The supervisor's live dashboard follows the scenario through its journal.
    up.scenario_journal = Some(
        dir.join("journal.jsonl")
            .canonicalize()
            .unwrap_or_else(|_| dir.join("journal.jsonl")),
    );
    let until = args
        .until
        .as_deref()
        .map(|u| clock.wall_of(parse_when(u, clock.start).unwrap_or(clock.start)));
    let mut r = Runner::new(s, journal, until);
    log_start(&mut r, seed, &dir);
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
    if let (Some(f), Output::Human) = (&report.fidelity, output) {
        out(format_args!("{}", f.render()));
    }
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

fn log_start(r: &mut Runner, seed: u64, dir: &std::path::Path) {
    let t = &r.s.topology;
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
        r.s.scenario.name,
        t.time_scale,
        3600.0 / t.time_scale,
        dir.display()
    );
    r.journal.log(EventKind::Start, line);
}
