//! Renders a run's `Report` as one self-contained HTML page (`report.html`):
//! the header with the verdict, the health timeline, the cascade graph, the
//! stocks (buffers and backlogs against their capacity), and the impact,
//! expectations and events tables. maud escapes every string from the
//! report; inline CSS only: no script, font or image, nothing fetched.
//! Missing values render as "—".

mod graph;
mod stocks;
pub mod style;
mod tables;
mod timeline;
mod view;

#[cfg(test)]
mod tests;

use maud::{DOCTYPE, Markup, PreEscaped, html};

pub use style::{event_color, health_color, verdict_color};

use crate::clock::{DASH, clock_hm, fmt_num, long_duration, parse_clock};
use crate::engine::report::Report;
use view::{View, or_dash};

/// The report as one self-contained HTML page.
pub fn render(report: &Report) -> String {
    let v = View::new(report);
    let title = if report.scenario.trim().is_empty() {
        "scenario"
    } else {
        &report.scenario
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "cascade report: " (title) }
                // Constant CSS, never report data.
                style { (PreEscaped(style::CSS)) }
            }
            body {
                main {
                    (header(&v))
                    (timeline::section(&v))
                    (graph::section(&v))
                    (stocks::section(&v))
                    (tables::fidelity(&v))
                    (tables::impact(&v))
                    (tables::expectations(&v))
                    (tables::events(&v))
                }
            }
        }
    }
    .into_string()
}

/// The scenario, its verdict, and what a reader needs to read the rest:
/// seed, time scale, durations in both clocks, the counts.
fn header(v: &View) -> Markup {
    let r = v.report;
    let impaired = r
        .services
        .keys()
        .filter(|n| v.impaired_at(n).is_some())
        .count();
    html! {
        header {
            h1 {
                span { (or_dash(&r.scenario)) }
                span.badge.verdict style={ "background:" (verdict_color(r.verdict)) } {
                    (r.verdict.as_str())
                }
            }
            ul.meta {
                li { b { "seed" } (r.seed) }
                li { b { "time scale" } (time_scale(v)) }
                li { b { "wall duration" } (wall_duration(v)) }
                li { b { "incident clock" } (clock_span(v)) }
                li { b { "expectations held" } (r.held()) " of " (r.expectations.len()) }
                li { b { "services impaired" } (impaired) " of " (r.services.len()) }
            }
        }
    }
}

/// `360x: one incident hour = 10 s wall`.
fn time_scale(v: &View) -> String {
    match v.scale() {
        Some(k) => format!(
            "{}x: one incident hour = {} wall",
            fmt_num(k, 2),
            long_duration(3600.0 / k)
        ),
        None => DASH.to_string(),
    }
}

/// `40 s (4 h of incident time)`.
fn wall_duration(v: &View) -> String {
    match (v.wall(), v.scale()) {
        (Some(w), Some(k)) => format!(
            "{} s ({} of incident time)",
            fmt_num(w, 1),
            long_duration(w * k)
        ),
        (Some(w), None) => format!("{} s", fmt_num(w, 1)),
        (None, _) => DASH.to_string(),
    }
}

/// `02:30 → 06:30`: the incident clock at the start and at the end.
fn clock_span(v: &View) -> String {
    match (parse_clock(&v.report.start_clock), v.wall()) {
        (Some(s), Some(w)) => format!("{} → {}", clock_hm(s), v.clock_at(w)),
        (Some(s), None) => clock_hm(s),
        (None, _) => DASH.to_string(),
    }
}
