//! Evaluating one condition against one observation: whether it holds now
//! (with the evidence), does not hold yet (with what was seen instead), or
//! can never hold (a tie or an inversion in an order, a gauge the service
//! does not report). Mechanism checks read the services' own gauges.

use std::collections::{BTreeMap, VecDeque};

use crate::clock::IncidentClock;
use crate::scenario::{Condition, HealthIs, OrderItem, Outcome};
use crate::state::MapState;
use crate::status::Status;
use crate::supervisor::HEALTH_WINDOW_SECS;

/// Onsets closer than this (wall seconds) are a tie: customer calls are
/// counted per wall second, so health can change at most once a second.
/// This is the observation interval orders are decided at.
pub const ONSET_RESOLUTION_S: f64 = 1.0;

/// One condition's state at one observation.
#[derive(Debug, Clone, PartialEq)]
pub enum Eval {
    /// It holds; the evidence.
    Holds(String),
    /// It does not hold now; what was seen instead.
    Not(String),
    /// It can never hold in this run; why.
    Never(String),
}

/// What the run has seen so far, besides the latest status.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Each service's first impairment (wall seconds).
    pub impaired: BTreeMap<String, f64>,
    /// Every step so far: its description, whether it succeeded, and when
    /// it started (wall seconds).
    pub steps: Vec<(String, bool, f64)>,
    /// Recent observations (wall seconds, status), the last health window.
    pub recent: VecDeque<(f64, Status)>,
    /// The incident clock, to name onsets.
    pub clock: Option<IncidentClock>,
}

impl Seen {
    /// Keeps `st`, seen at `t`, among the recent observations.
    pub fn remember(&mut self, t: f64, st: &Status) {
        self.recent.push_back((t, st.clone()));
        while self
            .recent
            .front()
            .is_some_and(|(x, _)| t - x > HEALTH_WINDOW_SECS as f64)
        {
            self.recent.pop_front();
        }
    }

    fn clock_at(&self, t: f64) -> String {
        self.clock
            .map_or_else(|| format!("+{t:.1}s"), |c| c.clock_at(t))
    }
}

/// Evaluates `c` on `st`, given what the run has seen.
pub fn evaluate(c: &Condition, st: &Status, seen: &Seen) -> Eval {
    match c {
        Condition::Step { matching, outcome } => {
            let want = *outcome == Outcome::Ok;
            match seen
                .steps
                .iter()
                .find(|(d, ok, _)| d.contains(matching.as_str()) && *ok == want)
            {
                Some((d, _, _)) => Eval::Holds(format!("step {d}")),
                None => Eval::Not(format!(
                    "no step matching {matching:?} has {}",
                    if want { "succeeded" } else { "failed" }
                )),
            }
        }
        Condition::ImpairedInOrder { services } => in_order(services, seen),
        Condition::Health { service, is } => match st.service(service) {
            None => Eval::Never(format!("{service} is not in this run")),
            Some(s)
                if st.traffic_rate > 0.0
                    && s.traffic
                        .as_ref()
                        .is_some_and(|t| t.ok + t.failed < crate::supervisor::MIN_CALLS) =>
            {
                Eval::Not(format!(
                    "{service}: too few customer calls yet to judge its health"
                ))
            }
            Some(s) => {
                let ok = match is {
                    HealthIs::Impaired => s.health.is_impaired(),
                    HealthIs::Is(h) => s.health == *h,
                };
                let seen = format!("{service} {} ({})", s.health, s.detail);
                if ok {
                    Eval::Holds(seen)
                } else {
                    Eval::Not(seen)
                }
            }
        },
        Condition::ShardMaps { all } => {
            let main: Vec<_> = st.main_fleet().collect();
            let n = main.iter().filter(|f| f.shard_map == all.0).count();
            let seen = format!("{n} of {} shard maps {}", main.len(), all.0);
            if !main.is_empty() && n == main.len() {
                Eval::Holds(seen)
            } else {
                Eval::Not(seen)
            }
        }
        Condition::RestartRemovals { at_least } => {
            let seen = format!("{} restart removals", st.restart_removals);
            if st.restart_removals >= *at_least {
                Eval::Holds(seen)
            } else {
                Eval::Not(seen)
            }
        }
        Condition::ReadyFrontends { at_least, at_most } => {
            let n = st.count_maps(MapState::Ready) as u32;
            let seen = format!("{n} front-ends ready");
            if at_least.is_none_or(|a| n >= a) && at_most.is_none_or(|m| n <= m) {
                Eval::Holds(seen)
            } else {
                Eval::Not(seen)
            }
        }
        Condition::ErrorRate {
            service,
            at_most,
            at_least,
        } => error_rate(st, service, *at_most, *at_least),
        Condition::ThreadAlarms { at_least } => {
            let seen = format!("{} thread alarms", st.alarms.len());
            if st.alarms.len() as u64 >= *at_least {
                Eval::Holds(seen)
            } else {
                Eval::Not(seen)
            }
        }
        Condition::Gauge { .. } => gauge(c, st, seen),
        Condition::All { of } => {
            let evals: Vec<Eval> = of.iter().map(|c| evaluate(c, st, seen)).collect();
            if let Some(Eval::Never(w)) = evals.iter().find(|e| matches!(e, Eval::Never(_))) {
                return Eval::Never(w.clone());
            }
            if let Some(Eval::Not(w)) = evals.iter().find(|e| matches!(e, Eval::Not(_))) {
                return Eval::Not(w.clone());
            }
            let all: Vec<String> = evals
                .into_iter()
                .filter_map(|e| match e {
                    Eval::Holds(x) => Some(x),
                    _ => None,
                })
                .collect();
            Eval::Holds(all.join("; "))
        }
    }
}

/// The share of `service`'s customer calls that failed in the health window.
fn error_rate(st: &Status, service: &str, at_most: Option<f64>, at_least: Option<f64>) -> Eval {
    let Some(t) = st.service(service).and_then(|s| s.traffic.as_ref()) else {
        return Eval::Never(format!("{service} has no customer traffic in this run"));
    };
    let total = t.ok + t.failed;
    if total < crate::supervisor::MIN_CALLS {
        return Eval::Not(format!(
            "{service}: {total} calls in the window, too few to judge"
        ));
    }
    let rate = t.failed as f64 / total as f64;
    let seen = format!("{service} error rate {:.0}% of {total} calls", rate * 100.0);
    if at_most.is_none_or(|m| rate <= m) && at_least.is_none_or(|m| rate >= m) {
        Eval::Holds(seen)
    } else {
        Eval::Not(seen)
    }
}

/// An order of onsets: each place at least one observation interval after
/// the one before it; a list impaired together within one interval.
fn in_order(items: &[OrderItem], seen: &Seen) -> Eval {
    let onset = |s: &String| seen.impaired.get(s).copied();
    let mut spans: Vec<Option<(f64, f64)>> = Vec::new();
    for item in items {
        let times: Vec<Option<f64>> = item.services().iter().map(onset).collect();
        let known: Vec<f64> = times.iter().flatten().copied().collect();
        if known.len() == times.len() {
            let (lo, hi) = known
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), t| (a.min(*t), b.max(*t)));
            if hi - lo >= ONSET_RESOLUTION_S {
                return Eval::Never(format!(
                    "{} were not impaired together: {:.1} s apart (more than one observation interval)",
                    item.services().join(" and "),
                    hi - lo
                ));
            }
            spans.push(Some((lo, hi)));
        } else {
            spans.push(None);
        }
    }
    let names = |i: usize| items[i].services().join("+");
    for i in 1..items.len() {
        match (spans[i - 1], spans[i]) {
            (None, Some(_)) => {
                return Eval::Never(format!("{} was impaired before {}", names(i), names(i - 1)));
            }
            (Some((_, prev)), Some((next, _))) if next - prev < ONSET_RESOLUTION_S => {
                return Eval::Never(if next < prev - ONSET_RESOLUTION_S {
                    format!("{} was impaired before {}", names(i), names(i - 1))
                } else {
                    format!(
                        "{} and {} were impaired within one observation interval ({}): a tie, not an order",
                        names(i - 1),
                        names(i),
                        seen.clock_at(next)
                    )
                });
            }
            _ => {}
        }
    }
    if let Some(i) = spans.iter().position(Option::is_none) {
        return Eval::Not(format!("{} not impaired yet", names(i)));
    }
    let chain: Vec<String> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} at {}", names(i), seen.clock_at(s.map_or(0.0, |x| x.0))))
        .collect();
    Eval::Holds(chain.join(", then "))
}

/// A service's gauge, summed over its instances (text gauges: every
/// instance's value must match).
fn gauge(c: &Condition, st: &Status, seen: &Seen) -> Eval {
    let Condition::Gauge {
        service,
        gauge,
        at_least,
        at_most,
        equals,
        differs,
        rising,
    } = c
    else {
        return Eval::Never("not a gauge condition".into());
    };
    let now = match read_gauge(st, service, gauge) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let shown = |v: &GaugeValue| format!("{service} {gauge} = {}", v.text.join(","));
    if let Some(other) = differs {
        let ok = !now.text.is_empty() && now.text.iter().all(|t| t != other);
        return if ok {
            Eval::Holds(shown(&now))
        } else {
            Eval::Not(shown(&now))
        };
    }
    if let Some(want) = equals {
        let ok = !now.text.is_empty() && now.text.iter().all(|t| t == want);
        return if ok {
            Eval::Holds(shown(&now))
        } else {
            Eval::Not(shown(&now))
        };
    }
    let Some(value) = now.sum else {
        return Eval::Never(format!("{service} {gauge} is not a number: {:?}", now.text));
    };
    let ok = if *rising {
        let before = seen
            .recent
            .front()
            .and_then(|(_, old)| read_gauge(old, service, gauge).ok())
            .and_then(|g| g.sum);
        match before {
            Some(b) if value > b => {
                return Eval::Holds(format!(
                    "{service} {gauge} rose from {b} to {value} over the last {HEALTH_WINDOW_SECS} s"
                ));
            }
            Some(b) => return Eval::Not(format!("{service} {gauge} stayed at {b} -> {value}")),
            None => false,
        }
    } else {
        at_least.is_none_or(|m| value >= m) && at_most.is_none_or(|m| value <= m)
    };
    if ok {
        Eval::Holds(shown(&now))
    } else {
        Eval::Not(shown(&now))
    }
}

/// One gauge across a service's instances.
#[derive(Debug)]
struct GaugeValue {
    /// Every instance's value, as reported.
    text: Vec<String>,
    /// Their sum, when every one is a number.
    sum: Option<f64>,
}

fn read_gauge(st: &Status, service: &str, gauge: &str) -> Result<GaugeValue, Eval> {
    let svc = st
        .service(service)
        .ok_or_else(|| Eval::Never(format!("{service} is not in this run")))?;
    if svc.instances.is_empty() {
        return Err(Eval::Not(format!("{service} has no instances")));
    }
    let mut text = Vec::new();
    for i in &svc.instances {
        if !i.reachable {
            return Err(Eval::Not(format!("{} unreachable: no gauges", i.name)));
        }
        match i.info.get(gauge) {
            Some(v) => text.push(v.clone()),
            None => {
                let have: Vec<&str> = i.info.keys().map(String::as_str).collect();
                return Err(Eval::Never(format!(
                    "gauge {gauge} missing from {} (it reports: {})",
                    i.name,
                    have.join(", ")
                )));
            }
        }
    }
    let sum = text
        .iter()
        .map(|t| t.parse::<f64>().ok())
        .sum::<Option<f64>>();
    Ok(GaugeValue { text, sum })
}
