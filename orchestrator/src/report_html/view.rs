//! What every section of the page needs, derived once from the `Report`:
//! the mapping from wall offsets to the incident clock, the timeline's wall
//! span, and the services ordered by their depth in the cascade graph.

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::{DASH, IncidentClock, fmt_wall, parse_clock};
use crate::engine::report::{CascadeEdge, Report, ServiceImpact};

/// The report plus what the sections derive from it.
pub(super) struct View<'a> {
    /// The report being rendered.
    pub report: &'a Report,
    /// Wall offset to incident clock; `None` when the report's start clock
    /// or time scale is unusable (clocks then read "—").
    pub clock: Option<IncidentClock>,
    /// The timeline's x-domain: [0, span] wall seconds, always > 0.
    pub span: f64,
    /// Every service the report names, by cascade depth then name.
    pub order: Vec<&'a str>,
    /// Each service's longest-path depth from a root of the cascade graph.
    pub depth: BTreeMap<&'a str, usize>,
}

impl<'a> View<'a> {
    pub fn new(report: &'a Report) -> Self {
        let clock = parse_clock(&report.start_clock)
            .zip(scale(report))
            .map(|(start, scale)| IncidentClock {
                start: start as u64,
                scale,
            });
        let mut names: BTreeSet<&str> = report
            .services
            .keys()
            .chain(report.timeline.keys())
            .map(String::as_str)
            .collect();
        for e in &report.cascade {
            names.insert(&e.from);
            names.insert(&e.to);
        }
        let depth = depths(&names, &report.cascade);
        let mut order: Vec<&str> = names.into_iter().collect();
        order.sort_by_key(|n| (depth.get(n).copied().unwrap_or(0), *n));
        let span = known_wall(report).unwrap_or_else(|| latest_t(report));
        View {
            report,
            clock,
            span: if span > 0.0 { span } else { 1.0 },
            order,
            depth,
        }
    }

    /// Incident seconds per wall second, when usable.
    pub fn scale(&self) -> Option<f64> {
        scale(self.report)
    }

    /// The run's wall duration, when the report knows it.
    pub fn wall(&self) -> Option<f64> {
        known_wall(self.report)
    }

    /// The incident clock ("HH:MM") at wall offset `t`, or "—".
    pub fn clock_at(&self, t: f64) -> String {
        self.clock
            .map_or_else(|| DASH.to_string(), |c| c.clock_hm_at(t))
    }

    /// `+17.7s · 04:16`: both clocks at `t`, or "—".
    pub fn both(&self, t: Option<f64>) -> String {
        match t.filter(|t| t.is_finite()) {
            Some(t) if self.clock.is_some() => format!("{} · {}", fmt_wall(t), self.clock_at(t)),
            Some(t) => fmt_wall(t),
            None => DASH.to_string(),
        }
    }

    /// The x coordinate of wall offset `t` on an axis from `x0` to `x1`.
    pub fn x(&self, t: f64, x0: f64, x1: f64) -> f64 {
        x0 + t.clamp(0.0, self.span) / self.span * (x1 - x0)
    }

    /// A service's impact, when the report judged it.
    pub fn service(&self, name: &str) -> Option<&'a ServiceImpact> {
        self.report.services.get(name)
    }

    /// When a service was first impaired, if it was.
    pub fn impaired_at(&self, name: &str) -> Option<f64> {
        self.service(name)
            .and_then(|s| s.impaired_at_s)
            .filter(|t| t.is_finite())
    }

    /// A service's column in the cascade graph.
    pub fn depth_of(&self, name: &str) -> usize {
        self.depth.get(name).copied().unwrap_or(0)
    }
}

/// The SVG namespace (an identifier, never fetched).
pub(super) const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// SVG coordinates, to a tenth of a pixel.
pub(super) fn px(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `s`, or "—" when it is blank.
pub(super) fn or_dash(s: &str) -> &str {
    if s.trim().is_empty() { DASH } else { s }
}

/// Truncates to `n` characters (not bytes), with an ellipsis.
pub(super) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut o: String = s.chars().take(n.saturating_sub(1)).collect();
        o.push('…');
        o
    }
}

fn scale(report: &Report) -> Option<f64> {
    Some(report.time_scale).filter(|k| k.is_finite() && *k > 0.0)
}

fn known_wall(report: &Report) -> Option<f64> {
    Some(report.wall_s).filter(|w| w.is_finite() && *w > 0.0)
}

/// The latest wall offset anything in the report mentions.
fn latest_t(r: &Report) -> f64 {
    let samples = r.timeline.values().flatten().map(|s| s.t_s);
    let events = r.events.iter().map(|e| e.t_s);
    let fleet = r.frontends.iter().map(|f| f.t_s);
    let services = r
        .services
        .values()
        .flat_map(|s| [s.impaired_at_s, s.recovered_at_s])
        .flatten();
    samples
        .chain(events)
        .chain(fleet)
        .chain(services)
        .filter(|t| t.is_finite())
        .fold(0.0, f64::max)
}

/// Longest-path depth from the roots along the edges; cycles are capped at
/// the number of services, so the loop ends.
fn depths<'a>(names: &BTreeSet<&'a str>, edges: &'a [CascadeEdge]) -> BTreeMap<&'a str, usize> {
    let mut d: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
    let cap = names.len().saturating_sub(1);
    for _ in 0..names.len() {
        let mut changed = false;
        for e in edges.iter().filter(|e| e.from != e.to) {
            let nd = d.get(e.from.as_str()).copied().unwrap_or(0) + 1;
            if nd <= cap && nd > d.get(e.to.as_str()).copied().unwrap_or(0) {
                d.insert(&e.to, nd);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    d
}
