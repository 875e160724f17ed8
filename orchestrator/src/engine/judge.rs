//! The judge: each expectation's verdict as observations arrive. A
//! condition must hold as the scenario says: once (written so, or an event),
//! for a duration without a break, or throughout its window. Pure: it sees
//! only status documents and what the run has recorded, so it is tested on
//! synthetic series.

use std::time::Duration;

pub use super::conditions::{Eval, Seen, evaluate};
use crate::clock::IncidentClock;
use crate::scenario::{Condition, Expectation, Hold};
use crate::status::Status;

/// Whether `c` holds in `st` now (steady state and abort conditions).
pub fn holds(c: &Condition, st: &Status, seen: &Seen) -> bool {
    matches!(evaluate(c, st, seen), Eval::Holds(_))
}

/// An expectation's verdict: held or not, and when and why.
pub type Decision = (bool, String);

/// One expectation being judged.
#[derive(Debug, Clone)]
struct Pending {
    index: usize,
    /// Window, in wall time from the incident clock's start.
    after: Duration,
    by: Duration,
    /// How long it must hold, in wall time.
    hold: WallHold,
    /// Since when it has held without a break (wall), and the evidence then.
    since: Option<(Duration, String)>,
    /// The longest unbroken run so far.
    longest: Duration,
    /// What the last observation showed.
    last: String,
}

#[derive(Debug, Clone, Copy)]
enum WallHold {
    Once,
    For(Duration),
    Throughout,
}

/// The expectations not yet decided.
#[derive(Debug, Clone)]
pub struct Judge {
    expectations: Vec<Expectation>,
    pending: Vec<Pending>,
    clock: IncidentClock,
}

impl Judge {
    /// Judges `expectations` (already validated) on `clock`.
    pub fn new(expectations: &[Expectation], clock: IncidentClock) -> Self {
        let wall = |w: &str| {
            crate::clock::parse_when(w, clock.start).map_or(Duration::ZERO, |s| clock.wall_of(s))
        };
        let pending = expectations
            .iter()
            .enumerate()
            .map(|(index, x)| Pending {
                index,
                after: x.after.as_deref().map_or(Duration::ZERO, wall),
                by: wall(&x.by),
                hold: match x.hold() {
                    Ok(Hold::For(d)) => WallHold::For(clock.to_wall(d)),
                    Ok(Hold::Throughout) => WallHold::Throughout,
                    Ok(Hold::Once) | Err(_) => WallHold::Once,
                },
                since: None,
                longest: Duration::ZERO,
                last: "not observed".into(),
            })
            .collect();
        Self {
            expectations: expectations.to_vec(),
            pending,
            clock,
        }
    }

    /// Whether every expectation is decided.
    pub fn done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Judges one observation at wall offset `now`; returns the
    /// expectations it decided, by index.
    pub fn observe(&mut self, st: &Status, seen: &Seen, now: Duration) -> Vec<(usize, Decision)> {
        let mut decided = Vec::new();
        let expectations = &self.expectations;
        let clock = self.clock;
        let at = |d: Duration| clock.clock_at(d.as_secs_f64());
        self.pending.retain_mut(|p| {
            if now < p.after {
                return true;
            }
            let x = &expectations[p.index];
            let eval = evaluate(&x.condition, st, seen);
            let verdict = step(p, eval, now, &at, &x.by, clock.scale);
            match verdict {
                Some(v) => {
                    decided.push((p.index, v));
                    false
                }
                None => true,
            }
        });
        decided
    }

    /// Decides what is still pending when the run stops early.
    pub fn unjudged(&self) -> Vec<(usize, String)> {
        self.pending
            .iter()
            .map(|p| {
                (
                    p.index,
                    format!("not judged (run stopped); last seen: {}", p.last),
                )
            })
            .collect()
    }
}

/// One observation for one pending expectation; a decision, or `None`.
fn step(
    p: &mut Pending,
    eval: Eval,
    now: Duration,
    at: &impl Fn(Duration) -> String,
    by: &str,
    scale: f64,
) -> Option<Decision> {
    let past = now > p.by;
    let mins = |d: Duration| crate::clock::short_duration(d.as_secs_f64() * scale);
    match eval {
        Eval::Never(why) => Some((false, format!("cannot hold ({why}), at {}", at(now)))),
        Eval::Holds(evidence) => {
            p.last = evidence.clone();
            match p.hold {
                WallHold::Once => Some((true, format!("held at {}: {evidence}", at(now)))),
                WallHold::For(need) => {
                    let (from, first) = p
                        .since
                        .get_or_insert_with(|| (now, evidence.clone()))
                        .clone();
                    p.longest = p.longest.max(now - from);
                    if now - from >= need {
                        Some((
                            true,
                            format!(
                                "held without a break from {} to {}: {first}",
                                at(from),
                                at(now)
                            ),
                        ))
                    } else if past {
                        Some((
                            false,
                            format!(
                                "held only {} without a break by {by}, {} needed",
                                mins(p.longest),
                                mins(need)
                            ),
                        ))
                    } else {
                        None
                    }
                }
                WallHold::Throughout if past => {
                    Some((true, format!("held throughout, until {by}: {evidence}")))
                }
                WallHold::Throughout => None,
            }
        }
        Eval::Not(seen) => {
            p.since = None;
            p.last = seen.clone();
            match p.hold {
                WallHold::Throughout => {
                    Some((false, format!("stopped holding at {}: {seen}", at(now))))
                }
                WallHold::For(need) if past => Some((
                    false,
                    format!(
                        "held at most {} without a break, {} needed, by {by}; last seen: {seen}",
                        mins(p.longest),
                        mins(need)
                    ),
                )),
                WallHold::Once if past => {
                    Some((false, format!("not observed by {by}; last seen: {seen}")))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests;
