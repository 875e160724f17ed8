//! The health timeline: a row per service (health bands over wall time,
//! the error-rate line, impaired and recovered markers), the front-end
//! fleet's shard maps, the scenario's steps as numbered markers, and an
//! axis that reads in both clocks (wall seconds and the incident clock).

use maud::{Markup, html};

use super::style::{
    BLUE, ERROR_LINE, FLEET_BACKGROUND, FLEET_COLORS, GREY, INK, MUTED, RECOVERED, health_color,
};
use super::view::{SVG_NS, View, clip, or_dash, px};
use crate::clock::{fmt_num, fmt_wall};
use crate::engine::report::{Event, EventKind, FleetSample, HealthSample};
use crate::state::Health;

/// The SVG's width, and the x range of the time axis inside it.
const TW: f64 = 1120.0;
const TX0: f64 = 150.0;
const TX1: f64 = 1100.0;
/// The y of the first row (room above for the step numbers).
const TOP: f64 = 22.0;
const ROW_H: f64 = 28.0;
const ROW_GAP: f64 = 10.0;
/// The front-end row is taller: it stacks three counts.
const FE_H: f64 = 40.0;

/// The timeline section.
pub(super) fn section(v: &View) -> Markup {
    let r = v.report;
    let names: Vec<&str> = v
        .order
        .iter()
        .copied()
        .filter(|n| r.timeline.contains_key(*n) || r.services.contains_key(*n))
        .collect();
    let fleet = by_time(&r.frontends, |f| f.t_s);
    let steps: Vec<&Event> = r
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Step && e.t_s.is_finite())
        .collect();
    let fleet_h = if fleet.is_empty() {
        0.0
    } else {
        FE_H + ROW_GAP
    };
    let fleet_y = TOP + names.len() as f64 * (ROW_H + ROW_GAP);
    let axis_y = fleet_y + fleet_h + 2.0;
    let height = axis_y + 40.0;
    html! {
        section #timeline {
            h2 { "Timeline" }
            @if names.is_empty() && fleet.is_empty() {
                p.empty { "No timeline samples in the report." }
            } @else {
                p.note {
                    "Wall seconds since the incident clock started (top line of each tick) and the \
                     incident clock (bottom line). Bands: health; line: error rate (bottom = 0%, top = 100%)."
                }
                svg xmlns=(SVG_NS) viewBox={ "0 0 " (TW) " " (px(height)) } width=(TW)
                    height=(px(height)) role="img" aria-label="health timeline" class="timeline" {
                    @for (i, name) in names.iter().enumerate() {
                        (service_row(v, name, TOP + i as f64 * (ROW_H + ROW_GAP)))
                    }
                    @if !fleet.is_empty() {
                        (fleet_row(v, &fleet, fleet_y))
                    }
                    (axis(v, axis_y))
                    @for (i, e) in steps.iter().enumerate() {
                        (step_marker(v, i + 1, e, axis_y))
                    }
                }
                (legend(!fleet.is_empty()))
            }
        }
    }
}

fn legend(with_fleet: bool) -> Markup {
    let swatch = |c: &str| html! { i.sw style={ "background:" (c) } {} };
    html! {
        div.legend {
            span { (swatch(health_color(Health::Serving))) "serving" }
            span { (swatch(health_color(Health::Degraded))) "degraded" }
            span { (swatch(health_color(Health::Down))) "down" }
            span { (swatch(GREY)) "no data" }
            span { "── error rate" }
            span style={ "color:" (BLUE) } { "┆ numbered: scenario step (hover for detail)" }
            span { "▼ service first impaired" }
            @if with_fleet {
                span {
                    "front-ends: " (swatch(FLEET_COLORS[0])) "ready "
                    (swatch(FLEET_COLORS[1])) "building " (swatch(FLEET_COLORS[2])) "unusable"
                }
            }
        }
    }
}

/// One service: grey (no data) under its health bands, the error-rate
/// line over them, and its impaired and recovered markers.
fn service_row(v: &View, name: &str, y: f64) -> Markup {
    let samples = v
        .report
        .timeline
        .get(name)
        .map_or_else(Vec::new, |s| by_time(s, |s| s.t_s));
    let svc = v.service(name);
    let recovered = svc.and_then(|s| s.recovered_at_s).filter(|t| t.is_finite());
    html! {
        g class="row" data-service=(name) {
            text x=(TX0 - 10.0) y=(px(y + ROW_H / 2.0 + 4.5)) text-anchor="end" font-size="13" fill=(INK) {
                title { (name) } (clip(name, 18))
            }
            rect x=(TX0) y=(px(y)) width=(TX1 - TX0) height=(ROW_H) fill=(GREY) {
                title { (name) ": no data" }
            }
            @for b in bands(&samples, v.span) {
                @let xa = v.x(b.from, TX0, TX1);
                rect class="band" x=(px(xa)) y=(px(y)) width=(px((v.x(b.to, TX0, TX1) - xa).max(0.5)))
                    height=(ROW_H) fill=(health_color(b.health)) {
                    title {
                        (name) ": " (b.health.as_str()) " " (fmt_wall(b.from)) " to " (fmt_wall(b.to))
                        " (" (v.clock_at(b.from)) " to " (v.clock_at(b.to)) ")"
                    }
                }
            }
            @for points in error_lines(v, &samples, y) {
                polyline class="err" points=(points) fill="none" stroke=(ERROR_LINE)
                    stroke-width="1.4" stroke-linejoin="round" {}
            }
            @if let Some(t) = v.impaired_at(name) {
                @let x = px(v.x(t, TX0, TX1));
                g class="impaired-marker" {
                    title {
                        (name) " impaired at " (v.both(Some(t))) ": "
                        (or_dash(svc.map_or("", |s| s.symptom.as_str())))
                    }
                    line x1=(x) y1=(px(y - 1.0)) x2=(x) y2=(px(y + ROW_H + 1.0)) stroke=(INK) stroke-width="2" {}
                    path d={ "M" (px(x - 5.0)) "," (px(y - 8.0)) " l10,0 l-5,7 z" } fill=(INK) {}
                }
            }
            @if let Some(t) = recovered {
                @let x = px(v.x(t, TX0, TX1));
                g class="recovered-marker" {
                    title { (name) " recovered at " (v.both(Some(t))) }
                    line x1=(x) y1=(px(y - 1.0)) x2=(x) y2=(px(y + ROW_H + 1.0)) stroke=(RECOVERED)
                        stroke-width="2" stroke-dasharray="2 2" {}
                }
            }
        }
    }
}

/// The main fleet's shard maps: ready, building and unusable stacked, on
/// a scale of the largest fleet seen.
fn fleet_row(v: &View, fleet: &[&FleetSample], y: f64) -> Markup {
    let max = fleet
        .iter()
        .map(|f| f.fleet.max(f.ready + f.building + f.unusable))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    html! {
        g class="frontends" {
            text x=(TX0 - 10.0) y=(px(y + FE_H / 2.0)) text-anchor="end" font-size="13" fill=(INK) { "front-ends" }
            text x=(TX0 - 10.0) y=(px(y + FE_H / 2.0 + 12.0)) text-anchor="end" font-size="10" fill=(MUTED) {
                "max " (max)
            }
            rect x=(TX0) y=(px(y)) width=(TX1 - TX0) height=(FE_H) fill=(FLEET_BACKGROUND) {}
            @for run in fleet_runs(fleet, v.span) {
                @let xa = px(v.x(run.from, TX0, TX1));
                @let w = px((v.x(run.to, TX0, TX1) - xa).max(0.5));
                g {
                    title {
                        "front-ends " (fmt_wall(run.from)) " to " (fmt_wall(run.to))
                        " (" (v.clock_at(run.from)) " to " (v.clock_at(run.to)) "): fleet " (run.counts.fleet)
                        ", ready " (run.counts.ready) ", building " (run.counts.building)
                        ", unusable " (run.counts.unusable)
                    }
                    @for (top, h, color) in stack(&run.counts, max, y) {
                        rect x=(xa) y=(top) width=(w) height=(h) fill=(color) {}
                    }
                }
            }
        }
    }
}

/// The axis: a gridline over the rows and both clocks under each tick.
fn axis(v: &View, axis_y: f64) -> Markup {
    html! {
        g class="axis" {
            line x1=(TX0) y1=(px(axis_y)) x2=(TX1) y2=(px(axis_y)) stroke=(INK) {}
            text x=(TX0 - 10.0) y=(px(axis_y + 16.0)) text-anchor="end" font-size="11" fill=(MUTED) { "wall" }
            text x=(TX0 - 10.0) y=(px(axis_y + 31.0)) text-anchor="end" font-size="11" fill=(MUTED) { "incident" }
            @for t in ticks(v) {
                g class="tick" {
                    line x1=(t.x) y1=(TOP) x2=(t.x) y2=(px(axis_y - 2.0)) stroke="#fff" stroke-opacity="0.55" {}
                    line x1=(t.x) y1=(px(axis_y)) x2=(t.x) y2=(px(axis_y + 4.0)) stroke=(INK) {}
                    text x=(t.x) y=(px(axis_y + 16.0)) text-anchor=(t.anchor) font-size="11" fill=(INK) {
                        "+" (fmt_num(t.t, 2)) "s"
                    }
                    text x=(t.x) y=(px(axis_y + 31.0)) text-anchor=(t.anchor) font-size="11" fill=(BLUE) {
                        (v.clock_at(t.t))
                    }
                }
            }
        }
    }
}

/// A scenario step: a dashed line across every row, numbered on top, its
/// detail on hover.
fn step_marker(v: &View, n: usize, e: &Event, axis_y: f64) -> Markup {
    let x = px(v.x(e.t_s, TX0, TX1));
    html! {
        g class="step-marker" {
            title { "step " (n) " at " (fmt_wall(e.t_s)) " (" (v.clock_at(e.t_s)) "): " (e.detail) }
            line x1=(x) y1=(TOP - 4.0) x2=(x) y2=(px(axis_y)) stroke=(BLUE) stroke-width="1.5" stroke-dasharray="4 3" {}
            line x1=(x) y1="4" x2=(x) y2=(px(axis_y)) stroke="transparent" stroke-width="9" {}
            text x=(x) y="14" text-anchor="middle" font-size="10" font-weight="600" fill=(BLUE) { (n) }
        }
    }
}

// ---------------------------------------------------------------- geometry

/// A tick of the time axis.
struct Tick {
    /// Wall offset.
    t: f64,
    /// Its x coordinate.
    x: f64,
    /// How its labels align: the first starts at it, the last ends at it.
    anchor: &'static str,
}

fn ticks(v: &View) -> Vec<Tick> {
    let step = tick_step(v.span);
    let n = (v.span / step + 1e-9).floor() as usize;
    (0..=n)
        .map(|i| {
            let t = i as f64 * step;
            let x = px(v.x(t, TX0, TX1));
            let anchor = match i {
                0 => "start",
                _ if x > TX1 - 20.0 => "end",
                _ => "middle",
            };
            Tick { t, x, anchor }
        })
        .collect()
}

/// A round wall-second tick step for about ten ticks over `span`.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 20] = [
        0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
        1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 10.0 + 1e-9)
        .unwrap_or_else(|| (span / 10.0).ceil())
}

/// Items with a finite time, in time order.
fn by_time<T>(items: &[T], t: impl Fn(&T) -> f64) -> Vec<&T> {
    let mut s: Vec<&T> = items.iter().filter(|i| t(i).is_finite()).collect();
    s.sort_by(|a, b| t(a).total_cmp(&t(b)));
    s
}

/// For each sample time, the wall interval it stands for: up to the next
/// sample, unless that is much further than the usual spacing (then a gap:
/// no data).
fn intervals(times: &[f64], span: f64) -> Vec<(f64, f64)> {
    let mut gaps: Vec<f64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let typical = gaps.get(gaps.len() / 2).copied().unwrap_or(1.0);
    let max_gap = (typical * 3.0).max(2.0);
    times
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let end = match times.get(i + 1) {
                Some(b) if b - a <= max_gap => *b,
                _ => a + typical,
            };
            (a.clamp(0.0, span), end.clamp(0.0, span))
        })
        .collect()
}

/// A stretch of wall time during which a service's health did not change.
struct Band {
    from: f64,
    to: f64,
    health: Health,
}

/// Health bands, merging runs of equal health.
fn bands(samples: &[&HealthSample], span: f64) -> Vec<Band> {
    let times: Vec<f64> = samples.iter().map(|s| s.t_s).collect();
    let mut bands: Vec<Band> = Vec::new();
    for (s, (from, to)) in samples.iter().zip(intervals(&times, span)) {
        if to <= from {
            continue;
        }
        match bands.last_mut() {
            Some(last) if last.health == s.health && (last.to - from).abs() < 1e-9 => last.to = to,
            _ => bands.push(Band {
                from,
                to,
                health: s.health,
            }),
        }
    }
    bands
}

/// The error-rate line as polyline `points`, broken at gaps in the samples
/// and at values that are not numbers.
fn error_lines(v: &View, samples: &[&HealthSample], y: f64) -> Vec<String> {
    let times: Vec<f64> = samples.iter().map(|s| s.t_s).collect();
    let iv = intervals(&times, v.span);
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        if !s.error_rate.is_finite() {
            lines.push(std::mem::take(&mut cur));
            continue;
        }
        let ey = y + ROW_H - 2.0 - s.error_rate.clamp(0.0, 1.0) * (ROW_H - 4.0);
        cur.push(format!("{},{}", px(v.x(s.t_s, TX0, TX1)), px(ey)));
        let next = times.get(i + 1);
        if next.is_some_and(|nt| (iv[i].1 - nt).abs() > 1e-9) {
            lines.push(std::mem::take(&mut cur));
        }
    }
    lines.push(cur);
    lines
        .into_iter()
        .filter(|l| l.len() > 1)
        .map(|l| l.join(" "))
        .collect()
}

/// The fleet's counts at one time.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Counts {
    fleet: usize,
    ready: usize,
    building: usize,
    unusable: usize,
}

/// A stretch of wall time during which the fleet's counts did not change.
struct FleetRun {
    from: f64,
    to: f64,
    counts: Counts,
}

fn fleet_runs(fleet: &[&FleetSample], span: f64) -> Vec<FleetRun> {
    let times: Vec<f64> = fleet.iter().map(|f| f.t_s).collect();
    let mut runs: Vec<FleetRun> = Vec::new();
    for (f, (from, to)) in fleet.iter().zip(intervals(&times, span)) {
        if to <= from {
            continue;
        }
        let counts = Counts {
            fleet: f.fleet,
            ready: f.ready,
            building: f.building,
            unusable: f.unusable,
        };
        match runs.last_mut() {
            Some(last) if last.counts == counts && (last.to - from).abs() < 1e-9 => last.to = to,
            _ => runs.push(FleetRun { from, to, counts }),
        }
    }
    runs
}

/// The stacked bars of one fleet run, bottom up: (y, height, colour).
fn stack(c: &Counts, max: f64, y: f64) -> Vec<(f64, f64, &'static str)> {
    let mut base = y + FE_H;
    [c.ready, c.building, c.unusable]
        .into_iter()
        .zip(FLEET_COLORS)
        .filter(|(n, _)| *n > 0)
        .map(|(n, color)| {
            let h = n as f64 / max * FE_H;
            base -= h;
            (px(base), px(h), color)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_html::style::{GREEN, RED};

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(60.0), 10.0);
        assert_eq!(tick_step(1.0), 0.1);
        assert_eq!(tick_step(1e6), 1e5);
    }

    #[test]
    fn a_long_silence_is_a_gap_not_a_band() {
        let iv = intervals(&[0.0, 1.0, 2.0, 30.0], 40.0);
        assert_eq!(iv, [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (30.0, 31.0)]);
    }

    #[test]
    fn fleet_stack_is_proportional() {
        let c = Counts {
            fleet: 8,
            ready: 4,
            building: 2,
            unusable: 2,
        };
        let s = stack(&c, 8.0, 0.0);
        assert_eq!(
            s,
            [(20.0, 20.0, GREEN), (10.0, 10.0, BLUE), (0.0, 10.0, RED)]
        );
    }
}
