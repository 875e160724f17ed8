//! The report's tables: each service's impact (when it was impaired and
//! recovered, in both clocks, and how badly), each expectation and whether
//! it held, and the journal's events.

use maud::{Markup, html};

use super::style::{GREEN, RED, event_color};
use super::view::{View, or_dash};
use crate::clock::{DASH, fmt_num, fmt_wall, long_duration};
use crate::engine::report::{Event, ServiceImpact};

/// The replay against the postmortem: every timed event, 2020 and replay.
pub(super) fn fidelity(v: &View) -> Markup {
    let Some(f) = &v.report.fidelity else {
        return html! {};
    };
    html! {
        section #fidelity {
            h2 { "Fidelity to the 2020 postmortem" }
            p.note {
                "Order inversions: " (f.order_inversions) "; median |deviation|: "
                (fmt_num(f.median_abs_deviation_min, 0)) " incident minutes (an event the replay never showed counts as a whole day off)."
            }
            table {
                thead { tr {
                    th { "2020 (PST)" } th { "replay" } th.num { "deviation" } th { "service" } th { "kind" } th { "event" }
                } }
                tbody {
                    @for e in &f.events {
                        tr {
                            td.t { (e.incident_at) }
                            td.t { (e.replay_at.as_deref().unwrap_or(DASH)) }
                            td.num { (e.deviation_min.map_or_else(|| "never".to_owned(), |d| format!("{d:+} min"))) }
                            td { (e.service) }
                            td { (format!("{:?}", e.kind).to_lowercase()) }
                            td { (e.event) }
                        }
                    }
                }
            }
        }
    }
}

/// Impact per service, the first impaired first.
pub(super) fn impact(v: &View) -> Markup {
    let mut rows: Vec<(&str, &ServiceImpact)> = v
        .report
        .services
        .iter()
        .map(|(n, s)| (n.as_str(), s))
        .collect();
    rows.sort_by(|a, b| {
        let key = |n: &str| v.impaired_at(n).unwrap_or(f64::INFINITY);
        key(a.0).total_cmp(&key(b.0)).then_with(|| a.0.cmp(b.0))
    });
    html! {
        section #impact {
            h2 { "Impact per service" }
            @if rows.is_empty() {
                p.empty { "No per-service impact in the report." }
            } @else {
                table {
                    thead { tr {
                        th { "service" } th { "impaired at" } th { "recovered at" } th { "duration" }
                        th.num { "peak error rate" } th.num { "p99" } th { "symptom" }
                    } }
                    tbody {
                        @for (name, s) in rows { (impact_row(v, name, s)) }
                    }
                }
            }
        }
    }
}

fn impact_row(v: &View, name: &str, s: &ServiceImpact) -> Markup {
    let impaired = v.impaired_at(name);
    let recovered = s.recovered_at_s.filter(|t| t.is_finite());
    let color = if impaired.is_some() { RED } else { GREEN };
    html! {
        tr {
            td { i.sw style={ "background:" (color) } {} (name) }
            td.t { (v.both(impaired)) }
            td.t { (v.both(recovered)) }
            td.t { (impaired_for(v, impaired, recovered)) }
            td.num { (unit(s.max_error_rate * 100.0, "%")) }
            td.num { (unit(s.p99_ms, " ms")) }
            td { (or_dash(&s.symptom)) }
        }
    }
}

/// From first impairment to recovery, in wall and incident time.
fn impaired_for(v: &View, impaired: Option<f64>, recovered: Option<f64>) -> String {
    match (impaired, recovered) {
        (Some(a), Some(b)) => match v.scale() {
            Some(k) => format!(
                "{} ({} incident)",
                long_duration(b - a),
                long_duration((b - a) * k)
            ),
            None => long_duration(b - a),
        },
        (Some(a), None) => match v.wall() {
            Some(w) if w >= a => format!("not recovered (≥ {})", long_duration(w - a)),
            _ => "not recovered".to_string(),
        },
        (None, _) => DASH.to_string(),
    }
}

/// `x` to one decimal with its unit, or "—".
fn unit(x: f64, unit: &str) -> String {
    if x.is_finite() {
        format!("{}{unit}", fmt_num(x, 1))
    } else {
        DASH.to_string()
    }
}

/// Every expectation and whether it held.
pub(super) fn expectations(v: &View) -> Markup {
    let xs = &v.report.expectations;
    html! {
        section #expectations {
            h2 { "Expectations" }
            @if xs.is_empty() {
                p.empty { "No expectations in the report." }
            } @else {
                table {
                    thead { tr { th { "expectation" } th { "held" } th { "detail" } } }
                    tbody {
                        @for x in xs {
                            tr {
                                td { (or_dash(&x.name)) }
                                td.t {
                                    @if x.held { span.ok { "✓ held" } } @else { span.bad { "✗ not held" } }
                                }
                                td { (or_dash(&x.detail)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The journal, in both clocks.
pub(super) fn events(v: &View) -> Markup {
    let evs = &v.report.events;
    html! {
        section #events {
            h2 { "Events" }
            @if evs.is_empty() {
                p.empty { "No events in the report." }
            } @else {
                table {
                    thead { tr {
                        th.num { "wall" } th { "incident clock" } th { "kind" } th { "detail" }
                    } }
                    tbody {
                        @for e in evs { (event_row(v, e)) }
                    }
                }
            }
        }
    }
}

fn event_row(v: &View, e: &Event) -> Markup {
    // The journal's own clock when it has one; else computed from the wall.
    let clock = if e.clock.trim().is_empty() {
        v.clock_at(e.t_s)
    } else {
        e.clock.clone()
    };
    html! {
        tr {
            td.num.t { (fmt_wall(e.t_s)) }
            td.t { (clock) }
            td { span.kind style={ "background:" (event_color(e.kind)) } { (e.kind.as_str()) } }
            td { (or_dash(&e.detail)) }
        }
    }
}
