//! The fidelity table: every timed event of the 2020 postmortem (the table
//! in ../shared/incident.md, kept here as data), when the replay showed it,
//! and by how much it was early or late. A scenario says how each event is
//! observed (`[[fidelity]]`, in the same condition language as its
//! expectations); the replay time of an event is the start of the first
//! observation (or unbroken run, with `for`) where that condition held.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::conditions::{Eval, Seen, evaluate};
use crate::clock::{IncidentClock, clock_hm, parse_when};
use crate::scenario::{Condition, FidelitySpec};
use crate::status::Status;

/// What kind of event a row of the postmortem's table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventClass {
    /// Something operators did that started it (the capacity addition).
    Step,
    /// A service's impairment began.
    Onset,
    /// A mitigation took effect or began.
    Mitigation,
    /// A service recovered (partly or fully).
    Recovery,
}

/// One timed event of the postmortem.
#[derive(Debug, Clone, Copy)]
pub struct IncidentEvent {
    /// Incident clock (PST), "HH:MM".
    pub at: &'static str,
    /// The service it happened to.
    pub service: &'static str,
    /// What kind of event.
    pub class: EventClass,
    /// What happened, in the postmortem's words.
    pub event: &'static str,
}

const fn ev(
    at: &'static str,
    service: &'static str,
    class: EventClass,
    event: &'static str,
) -> IncidentEvent {
    IncidentEvent {
        at,
        service,
        class,
        event,
    }
}

/// Every timed event of the 2020-11-25 postmortem (incident.md), in order.
pub const INCIDENT_EVENTS: [IncidentEvent; 16] = [
    ev(
        "02:44",
        "kinesis",
        EventClass::Step,
        "capacity addition begins (until 03:47)",
    ),
    ev(
        "05:15",
        "kinesis",
        EventClass::Onset,
        "first alarms: errors putting and getting records",
    ),
    ev(
        "05:15",
        "cloudwatch",
        EventClass::Onset,
        "PutMetricData errors; alarms to INSUFFICIENT_DATA",
    ),
    ev(
        "05:15",
        "eventbridge",
        EventClass::Onset,
        "PutEvents errors, delayed delivery",
    ),
    ev(
        "06:15",
        "lambda",
        EventClass::Onset,
        "invocation errors (memory contention)",
    ),
    ev(
        "07:01",
        "cognito",
        EventClass::Onset,
        "error rates up significantly after the capacity mitigation",
    ),
    ev(
        "09:52",
        "shd",
        EventClass::Mitigation,
        "first status post (backup tool)",
    ),
    ev(
        "10:07",
        "kinesis",
        EventClass::Recovery,
        "first front-ends taking traffic again",
    ),
    ev(
        "10:15",
        "cognito",
        EventClass::Mitigation,
        "change reducing the dependency on Kinesis begins deploying",
    ),
    ev(
        "10:36",
        "lambda",
        EventClass::Recovery,
        "invocation errors resolved",
    ),
    ev(
        "12:00",
        "kinesis",
        EventClass::Recovery,
        "errors falling steadily",
    ),
    ev(
        "14:18",
        "cognito",
        EventClass::Recovery,
        "operating normally",
    ),
    ev(
        "16:15",
        "ecs",
        EventClass::Recovery,
        "provisioning mostly resolved",
    ),
    ev(
        "17:47",
        "cloudwatch",
        EventClass::Recovery,
        "early recovery; reactive AutoScaling working again",
    ),
    ev("22:23", "kinesis", EventClass::Recovery, "fully recovered"),
    ev(
        "22:31",
        "cloudwatch",
        EventClass::Recovery,
        "fully recovered, then backfill",
    ),
];

/// The postmortem's event at `at` for `service`, if there is one.
pub fn incident_event(at: &str, service: &str) -> Option<&'static IncidentEvent> {
    INCIDENT_EVENTS
        .iter()
        .find(|e| e.at == at && e.service == service)
}

/// What an event the replay never showed counts as in the median: a day.
const NEVER_SHOWN_MIN: f64 = 24.0 * 60.0;

/// `report.json`'s `fidelity` (design.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Every timed event of the postmortem, in its order.
    pub events: Vec<FidelityEvent>,
    /// Pairs of events the replay showed in the opposite order.
    pub order_inversions: u32,
    /// The median of |deviation| over every event (an event the replay
    /// never showed counts as a whole day off).
    pub median_abs_deviation_min: f64,
}

/// One row of the fidelity table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidelityEvent {
    /// What happened, in the postmortem's words.
    pub event: String,
    /// The service it happened to.
    pub service: String,
    /// onset | mitigation | recovery (or step).
    pub kind: EventClass,
    /// When it happened in 2020 ("HH:MM", PST).
    pub incident_at: String,
    /// When the replay showed it ("HH:MM"), or null.
    pub replay_at: Option<String>,
    /// Replay minus incident, in incident minutes (positive: late).
    pub deviation_min: Option<i64>,
}

/// One event being looked for.
#[derive(Debug, Clone)]
struct Row {
    event: &'static IncidentEvent,
    condition: Option<Condition>,
    after: Duration,
    need: Duration,
    since: Option<Duration>,
    found: Option<Duration>,
}

/// Watches for every postmortem event as the replay runs.
#[derive(Debug, Clone)]
pub struct FidelityTracker {
    rows: Vec<Row>,
    clock: IncidentClock,
}

impl FidelityTracker {
    /// Looks for each event as `specs` say (validated by the parser);
    /// events without a spec are never shown.
    pub fn new(specs: &[FidelitySpec], clock: IncidentClock) -> Self {
        let wall =
            |w: &str| parse_when(w, clock.start).map_or(Duration::ZERO, |s| clock.wall_of(s));
        let rows = INCIDENT_EVENTS
            .iter()
            .map(|event| {
                let spec = specs.iter().find(|s| s.key() == (event.at, event.service));
                Row {
                    event,
                    condition: spec.map(|s| s.condition.clone()),
                    after: spec
                        .and_then(|s| s.after.as_deref())
                        .map_or(Duration::ZERO, wall),
                    need: spec
                        .and_then(|s| s.hold_for())
                        .map_or(Duration::ZERO, |d| clock.to_wall(d)),
                    since: None,
                    found: None,
                }
            })
            .collect();
        Self { rows, clock }
    }

    /// Takes in one observation at wall offset `now`.
    pub fn observe(&mut self, st: &Status, seen: &Seen, now: Duration) {
        for r in self
            .rows
            .iter_mut()
            .filter(|r| r.found.is_none() && now >= r.after)
        {
            let Some(c) = &r.condition else { continue };
            match evaluate(c, st, seen) {
                Eval::Holds(_) => {
                    // A step is shown when it started, not when it was seen done.
                    let start = step_started(c, seen).unwrap_or(now);
                    let since = *r.since.get_or_insert(start);
                    if now - since >= r.need {
                        r.found = Some(since);
                    }
                }
                Eval::Not(_) | Eval::Never(_) => r.since = None,
            }
        }
    }

    /// The table, with the replay ending at wall offset `end`.
    pub fn table(&self) -> Fidelity {
        let mut events = Vec::new();
        let mut deviations = Vec::new();
        let mut replayed: Vec<(f64, f64)> = Vec::new();
        for r in &self.rows {
            let incident_min = parse_when(r.event.at, 0).unwrap_or(0) as f64 / 60.0;
            let replay_min = r
                .found
                .map(|d| self.clock.at(d.as_secs_f64()) as f64 / 60.0);
            let deviation = replay_min.map(|m| (m - incident_min).round() as i64);
            deviations.push(match deviation {
                Some(d) => d.abs() as f64,
                None => NEVER_SHOWN_MIN,
            });
            if let Some(m) = replay_min {
                replayed.push((incident_min, m));
            }
            events.push(FidelityEvent {
                event: r.event.event.to_owned(),
                service: r.event.service.to_owned(),
                kind: r.event.class,
                incident_at: r.event.at.to_owned(),
                replay_at: replay_min.map(|m| clock_hm(m * 60.0)),
                deviation_min: deviation,
            });
        }
        Fidelity {
            events,
            order_inversions: inversions(&replayed),
            median_abs_deviation_min: median(&mut deviations),
        }
    }
}

/// When the step a `step` condition matches started (wall seconds).
fn step_started(c: &Condition, seen: &Seen) -> Option<Duration> {
    let Condition::Step { matching, .. } = c else {
        return None;
    };
    seen.steps
        .iter()
        .find(|(d, ok, _)| d.contains(matching.as_str()) && *ok)
        .map(|(_, _, at)| Duration::from_secs_f64(*at))
}

/// Pairs in the postmortem's order (strictly earlier there) that the
/// replay showed the other way round.
fn inversions(events: &[(f64, f64)]) -> u32 {
    let mut n = 0;
    for (i, a) in events.iter().enumerate() {
        for b in &events[i + 1..] {
            let (first, second) = if a.0 < b.0 { (a, b) } else { (b, a) };
            if first.0 < second.0 && first.1 > second.1 {
                n += 1;
            }
        }
    }
    n
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

impl Fidelity {
    /// The table for people (stdout at the end of a run).
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::from("fidelity against the 2020 postmortem (incident clock, PST):\n");
        let _ = writeln!(
            s,
            "  {:<6} {:<7} {:<11} {:<11} {:>9}  event",
            "2020", "replay", "service", "kind", "deviation"
        );
        for e in &self.events {
            let dev = e
                .deviation_min
                .map_or("never".to_owned(), |d| format!("{d:+} min"));
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<6} {:<7} {:<11} {:<11} {dev:>9}  {}",
                e.incident_at,
                e.replay_at.as_deref().unwrap_or("—"),
                e.service,
                kind,
                e.event
            );
        }
        let _ = write!(
            s,
            "  order inversions: {}; median |deviation|: {:.0} min",
            self.order_inversions, self.median_abs_deviation_min
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inversions_count_pairs_shown_the_other_way_round() {
        assert_eq!(inversions(&[(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)]), 1);
        assert_eq!(
            inversions(&[(1.0, 5.0), (1.0, 2.0)]),
            0,
            "a tie in 2020 has no order"
        );
        assert_eq!(inversions(&[(1.0, 1.0), (2.0, 2.0)]), 0);
    }

    #[test]
    fn the_median_counts_every_event() {
        assert_eq!(median(&mut [5.0, 1.0, 30.0]), 5.0);
        assert_eq!(median(&mut [5.0, 1.0, 30.0, 40.0]), 17.5);
    }

    #[test]
    fn every_event_is_listed_once_in_order() {
        let mut last = 0;
        for (i, e) in INCIDENT_EVENTS.iter().enumerate() {
            let at = parse_when(e.at, 0).expect("a clock");
            assert!(at >= last, "row {i} out of order");
            last = at;
            assert_eq!(
                incident_event(e.at, e.service).map(|x| x.event),
                Some(e.event)
            );
        }
    }
}
