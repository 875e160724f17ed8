//! The steps, played beside the observation loop: one task takes each step
//! at its wall time, in order, and reports its start and its result on a
//! channel. A long step (capacity changes, a Cognito sign-in that hangs)
//! never stops the run from observing.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::scenario::Step;

/// What the stepper reports.
#[derive(Debug)]
pub enum StepEvent {
    /// A step is starting (the incident's phase changes).
    Started {
        /// Its kind, e.g. `add-capacity`.
        kind: &'static str,
    },
    /// A step is done.
    Done {
        /// Its description, in the CLI's words.
        description: String,
        /// What happened, or why it failed.
        result: Result<String, String>,
    },
    /// A line of progress of a long step (a rolling restart).
    Progress(String),
    /// Every step has run.
    Finished,
}

/// Plays `steps` (each with its wall offset from `origin`) against the
/// running supervisor, one at a time; stops early at `stop`.
pub fn spawn(
    steps: Vec<(Duration, Step)>,
    origin: Instant,
    time_scale: f64,
    stop: CancellationToken,
) -> mpsc::UnboundedReceiver<StepEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<String>();
        let relay = tx.clone();
        tokio::spawn(async move {
            while let Some(p) = progress_rx.recv().await {
                let _ = relay.send(StepEvent::Progress(p));
            }
        });
        for (at, step) in steps {
            tokio::select! {
                _ = tokio::time::sleep_until((origin + at).into()) => {}
                _ = stop.cancelled() => return,
            }
            let _ = tx.send(StepEvent::Started {
                kind: step.action.kind(),
            });
            let result = tokio::select! {
                r = super::steps::apply(&step.action, time_scale, &progress_tx) => r.map_err(|e| format!("{e:#}")),
                _ = stop.cancelled() => return,
            };
            let _ = tx.send(StepEvent::Done {
                description: step.action.describe(),
                result,
            });
        }
        let _ = tx.send(StepEvent::Finished);
    });
    rx
}
