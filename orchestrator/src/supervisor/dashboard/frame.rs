//! One frame of the live page: the typed `status --json` document the
//! supervisor builds, with what the page shows beside it (faults, SHD
//! posts, the cascade graph's live edges, the stocks), numbered so a
//! reconnecting client can ask for what it missed.

use serde::Serialize;

use crate::engine::cascade::{SHD, names};
use crate::state::{Health, MapState};
use crate::status::Status;

/// Everything the page shows at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// Event id: consecutive from 1, so a gap is a lost event.
    pub id: u64,
    /// Unix ms when it was taken.
    pub at_ms: i64,
    /// Wall seconds since the dashboard started.
    pub run_s: f64,
    /// The run's incident clock: `run_s` times the time scale (MODEL).
    pub incident_s: f64,
    /// The same document `cascade status --json` prints.
    pub status: Status,
    /// Faults in force.
    pub faults: Vec<FaultView>,
    /// Service Health Dashboard posts and failed posting attempts.
    pub shd: Vec<ShdView>,
    /// Declared dependencies and whether each carries a failure now.
    pub edges: Vec<EdgeView>,
    /// Buffers and backlogs against their capacity.
    pub stocks: Vec<crate::stocks::Stock>,
    /// Per-service error rate and p99 over the health window.
    pub samples: Vec<Sample>,
    /// Counts of the main fleet's shard maps: ready, building, unusable, down.
    pub maps: [usize; 4],
    /// Refused peer-thread spawns over the fleet.
    pub eagain: u64,
    /// The scenario being played, when one is (`cascade run`).
    pub scenario: Option<ScenarioView>,
}

/// A fault in force.
#[derive(Debug, Clone, Serialize)]
pub struct FaultView {
    /// `f-N`.
    pub id: String,
    /// What it does.
    pub summary: String,
    /// The instances it hit.
    pub targets: Vec<String>,
    /// Unix ms it ends (0: until cleared).
    pub expires_ms: i64,
}

/// A post, or a failed attempt to post.
#[derive(Debug, Clone, Serialize)]
pub struct ShdView {
    /// Unix ms.
    pub at_ms: i64,
    /// `primary` or `backup`.
    pub path: String,
    /// Who posted it (or the empty string for a failed attempt).
    pub operator: String,
    /// The message.
    pub message: String,
    /// Why the attempt failed; empty for a post.
    pub error: String,
}

/// An edge of the dependency graph.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EdgeView {
    /// The upstream service.
    pub from: String,
    /// The dependent service.
    pub to: String,
    /// The dependent is impaired and its cause names the upstream.
    pub carrying: bool,
    /// The dependent's cause, when it carries.
    pub cause: String,
}

/// One service's customer traffic over the health window.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Service name.
    pub service: String,
    /// serving | degraded | down.
    pub health: Health,
    /// Failed calls / calls (0 without calls).
    pub error_rate: f64,
    /// p99 latency, ms.
    pub p99_ms: f64,
    /// Calls in the window.
    pub calls: u64,
}

/// The declared dependencies (`depends_on`) and whether each carries a
/// failure now: the dependent is impaired and its `cause` names the
/// upstream (engine/cascade.rs's rule, applied to this moment). The SHD's
/// edge from Cognito carries while the last attempt through the primary
/// tool failed naming Cognito.
pub fn edges(st: &Status, shd: &[ShdView]) -> Vec<EdgeView> {
    let mut out: Vec<EdgeView> = Vec::new();
    for svc in &st.services {
        for inst in &svc.instances {
            let Some(deps) = inst.info.get("depends_on") else {
                continue;
            };
            let cause = inst.info.get("cause").map(String::as_str).unwrap_or("");
            for up in deps.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                let carrying = svc.health.is_impaired() && names(cause, up);
                match out.iter_mut().find(|e| e.from == up && e.to == svc.name) {
                    Some(e) if carrying && !e.carrying => {
                        e.carrying = true;
                        e.cause = format!("{}: {cause}", inst.name);
                    }
                    Some(_) => {}
                    None => out.push(EdgeView {
                        from: up.to_owned(),
                        to: svc.name.clone(),
                        carrying,
                        cause: if carrying {
                            format!("{}: {cause}", inst.name)
                        } else {
                            String::new()
                        },
                    }),
                }
            }
        }
    }
    if st.service("cognito").is_some() {
        let last = shd.iter().rev().find(|p| p.path == "primary");
        let failed = last.filter(|p| !p.error.is_empty() && names(&p.error, "cognito"));
        out.push(EdgeView {
            from: "cognito".into(),
            to: SHD.into(),
            carrying: failed.is_some(),
            cause: failed.map(|p| p.error.clone()).unwrap_or_default(),
        });
    }
    out
}

/// Each service's customer traffic over the health window, from `st`.
pub fn samples(st: &Status) -> Vec<Sample> {
    st.services
        .iter()
        .map(|s| {
            let t = s.traffic.clone().unwrap_or_default();
            let calls = t.ok + t.failed;
            Sample {
                service: s.name.clone(),
                health: s.health,
                error_rate: if calls == 0 {
                    0.0
                } else {
                    t.failed as f64 / calls as f64
                },
                p99_ms: t.p99_ms,
                calls,
            }
        })
        .collect()
}

/// The main fleet's shard maps: ready, building, unusable, down.
pub fn map_counts(st: &Status) -> [usize; 4] {
    [
        MapState::Ready,
        MapState::Building,
        MapState::Unusable,
        MapState::Down,
    ]
    .map(|m| st.count_maps(m))
}

/// The scenario being played, as its journal tells it so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioView {
    /// The incident clock at the journal's last entry.
    pub clock: String,
    /// The incident's phase (the last step's kind).
    pub phase: String,
    /// Steps run.
    pub steps: u64,
    /// Expectations judged so far: held, failed.
    pub held: u64,
    /// Expectations that failed so far.
    pub failed: u64,
    /// Each expectation judged: (held, incident clock, what).
    pub expectations: Vec<(bool, String, String)>,
    /// The journal's last entry.
    pub last: String,
    /// The run's verdict, once given.
    pub verdict: String,
}

/// Follows a scenario's `journal.jsonl` (the `cascade run` that plays it
/// writes it, flushed line by line), reading only what was appended.
#[derive(Debug, Default)]
pub struct JournalTail {
    offset: u64,
    partial: String,
    view: ScenarioView,
    seen: bool,
}

impl JournalTail {
    /// Reads what was appended to `path` since the last call; the view so far.
    pub fn read(&mut self, path: &std::path::Path) -> Option<ScenarioView> {
        use crate::engine::journal::JournalEntry;
        use crate::engine::report::EventKind;
        use std::io::{Read as _, Seek as _};
        if let Ok(mut f) = std::fs::File::open(path)
            && f.seek(std::io::SeekFrom::Start(self.offset)).is_ok()
        {
            let mut buf = String::new();
            if let Ok(n) = f.read_to_string(&mut buf) {
                self.offset += n as u64;
                self.partial.push_str(&buf);
            }
        }
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let Ok(e) = serde_json::from_str::<JournalEntry>(line.trim()) else {
                continue;
            };
            self.seen = true;
            let v = &mut self.view;
            v.clock = e.clock.clone();
            v.phase = e.phase.clone();
            v.last = e.detail.clone();
            match e.kind {
                EventKind::Step => v.steps += 1,
                EventKind::ExpectHeld | EventKind::ExpectFailed => {
                    let held = e.kind == EventKind::ExpectHeld;
                    if held {
                        v.held += 1;
                    } else {
                        v.failed += 1;
                    }
                    v.expectations
                        .push((held, e.clock.clone(), e.detail.clone()));
                }
                EventKind::Verdict => v.verdict = e.detail.clone(),
                _ => {}
            }
        }
        self.seen.then(|| self.view.clone())
    }
}
