//! The run's journal: one JSON line per entry, appended and flushed as it
//! goes (so it is complete even after Ctrl-C), echoed to the terminal in the
//! chosen form. A closed stdout (`| head`) does not stop the run.

use std::io::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::report::{Event, EventKind};
use crate::clock::{IncidentClock, tenths};

/// How a run talks to its terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Both clocks, the phase and each change, one line each.
    Human,
    /// The verdict only.
    Quiet,
    /// The journal's JSON lines.
    Json,
}

/// One line of `journal.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Wall seconds since the incident clock started.
    pub t_s: f64,
    /// Incident clock.
    pub clock: String,
    /// What kind of entry.
    pub kind: EventKind,
    /// The incident's phase (the last step's kind).
    pub phase: String,
    /// What happened.
    pub detail: String,
}

/// Writes one line to stdout; a closed stdout does not stop the run, which
/// still has its journal and report to finish.
pub fn out(line: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_fmt(line).and_then(|()| o.write_all(b"\n"));
}

/// An append-only JSONL journal, flushed per line.
pub struct Journal {
    file: std::fs::File,
    /// Wall time of offset 0 (reset when the incident clock starts).
    pub started: Instant,
    /// The incident clock of this run.
    pub clock: IncidentClock,
    /// Every entry so far.
    pub events: Vec<Event>,
    /// How entries are echoed.
    pub output: Output,
    /// The phase of the incident (the last step's kind), for the live view.
    pub phase: String,
}

impl Journal {
    /// A journal written to `path`.
    pub fn create(
        path: &std::path::Path,
        clock: IncidentClock,
        output: Output,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            file: std::fs::File::create(path)?,
            started: Instant::now(),
            clock,
            events: Vec::new(),
            output,
            phase: "starting".into(),
        })
    }

    /// Wall seconds since offset 0.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The incident clock now ("HH:MM:SS").
    pub fn clock_now(&self) -> String {
        self.clock.clock_at(self.elapsed_s())
    }

    /// Appends an entry, flushes it, and echoes it.
    pub fn log(&mut self, kind: EventKind, detail: impl Into<String>) {
        let t_s = self.elapsed_s();
        let entry = JournalEntry {
            t_s: tenths(t_s),
            clock: self.clock.clock_at(t_s),
            kind,
            phase: self.phase.clone(),
            detail: detail.into(),
        };
        let line = serde_json::to_string(&entry).unwrap_or_default();
        if let Err(e) = writeln!(self.file, "{line}").and_then(|()| self.file.flush()) {
            tracing::warn!(error = %e, "journal write failed");
        }
        match self.output {
            Output::Human => out(format_args!(
                "[{} | +{t_s:>6.1}s] {:<18} {kind:<13} {}",
                entry.clock, self.phase, entry.detail
            )),
            Output::Json => out(format_args!("{line}")),
            Output::Quiet => {}
        }
        self.events.push(Event {
            t_s: entry.t_s,
            clock: entry.clock,
            kind,
            detail: entry.detail,
        });
    }
}
