//! The stocks: one small chart per buffer or backlog the cascade filled
//! (the same stocks, names and colours as the live page), its level over
//! the run drawn as steps against its capacity (dashed) where the service
//! reports one, and a marker where its service was first impaired. They
//! show why each service failed when it did: a buffer reaching its
//! capacity, then the service behind it blocking.

use maud::{Markup, html};

use super::style::{FLEET_BACKGROUND, INK, MUTED, RED};
use super::view::{SVG_NS, View, px};
use crate::engine::report::{StockSample, StockSeries};
use crate::stocks::{fmt_level, is_full};

/// A chart's size, and the x range of its time axis.
const W: f64 = 540.0;
const H: f64 = 96.0;
const X0: f64 = 6.0;
const X1: f64 = 534.0;
/// The plot's vertical extent (the axis labels sit below it).
const Y0: f64 = 6.0;
const Y1: f64 = 70.0;

/// The stocks section (nothing when the report has no stock).
pub(super) fn section(v: &View) -> Markup {
    let stocks: Vec<&StockSeries> = v
        .report
        .stocks
        .iter()
        .filter(|s| s.samples.iter().any(usable))
        .collect();
    if stocks.is_empty() {
        return html! {};
    }
    html! {
        section #stocks {
            h2 { "Stocks: buffers and backlogs against their capacity" }
            p.note {
                "Each chart is one buffer or backlog over the run: its level (black, red once it \
                 came within 5% of its capacity, where the next record no longer fits) holds until the next sample; the dashed red line is its \
                 capacity, where the service reports one; the red tick marks when its service \
                 was first impaired."
            }
            div.stocks {
                @for s in stocks {
                    (chart(v, s))
                }
            }
        }
    }
}

/// A sample with a finite time and level.
fn usable(x: &StockSample) -> bool {
    x.t_s.is_finite() && x.level.is_finite()
}

/// The highest level, its sample, and whether any sample reached its capacity.
fn peak(s: &StockSeries) -> (Option<&StockSample>, Option<&StockSample>) {
    let finite = s.samples.iter().filter(|x| usable(x));
    let top = finite.clone().max_by(|a, b| a.level.total_cmp(&b.level));
    let full = finite.clone().find(|x| is_full(x.level, x.capacity));
    (top, full)
}

fn chart(v: &View, s: &StockSeries) -> Markup {
    let (top, full) = peak(s);
    let cap_max = s
        .samples
        .iter()
        .filter_map(|x| x.capacity)
        .filter(|c| c.is_finite())
        .fold(0.0, f64::max);
    let max = top.map_or(0.0, |t| t.level).max(cap_max).max(1.0) * 1.05;
    let y = |level: f64| px(Y1 - (level.clamp(0.0, max) / max) * (Y1 - Y0));
    let x = |t: f64| px(v.x(t, X0, X1));
    let level = steps(&s.samples, v.span, |p| Some(p.level), &x, &y);
    let capacity = steps(&s.samples, v.span, |p| p.capacity, &x, &y);
    let impaired = v.impaired_at(&s.service);
    let line = if full.is_some() { RED } else { INK };
    html! {
        figure.stock data-stock={ (s.service) "/" (s.name) } data-peak=(top.map_or(0.0, |t| t.level))
            data-full=(full.is_some()) {
            figcaption {
                b { (s.service) } " " (s.name) ": peak "
                @if let Some(t) = top {
                    span class=(if full.is_some() { "bad" } else { "" }) { (fmt_level(t.level)) }
                    @if let Some(c) = t.capacity { " of " (fmt_level(c)) }
                    " " (s.unit) " at " (v.both(Some(t.t_s)))
                } @else { "—" }
                @if let Some(f) = full {
                    br;
                    span.bad { "full" } " at " (v.both(Some(f.t_s)))
                }
            }
            svg xmlns=(SVG_NS) viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) role="img"
                aria-label={ (s.service) " " (s.name) " over the run" } {
                rect x=(X0) y=(Y0) width=(px(X1 - X0)) height=(px(Y1 - Y0)) fill=(FLEET_BACKGROUND) {}
                @for c in &capacity {
                    polyline.capacity points=(c) fill="none" stroke=(RED) stroke-dasharray="5 3" stroke-width="1.2" {}
                }
                @for l in &level {
                    polyline.level points=(l) fill="none" stroke=(line) stroke-width="1.6" {}
                }
                @if let Some(t) = impaired {
                    line.stock-impaired x1=(x(t)) x2=(x(t)) y1=(px(Y0 - 3.0)) y2=(px(Y1 + 3.0)) stroke=(RED) stroke-width="2" {}
                }
                text x=(X0) y=(px(Y1 + 14.0)) font-size="10.5" fill=(MUTED) { (v.both(Some(0.0))) }
                text x=(X1) y=(px(Y1 + 14.0)) font-size="10.5" fill=(MUTED) text-anchor="end" { (v.both(Some(v.span))) }
                text x=(X0) y=(px(Y1 + 26.0)) font-size="10.5" fill=(MUTED) { "0 – " (fmt_level(max / 1.05)) " " (s.unit) }
            }
        }
    }
}

/// The SVG points of a step line through `samples` (each value holds until
/// the next sample, the last until `span`), one run per stretch where
/// `value` is known and finite; samples out of wall order are skipped.
fn steps(
    samples: &[StockSample],
    span: f64,
    value: impl Fn(&StockSample) -> Option<f64>,
    x: &impl Fn(f64) -> f64,
    y: &impl Fn(f64) -> f64,
) -> Vec<String> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut open = false;
    let mut last_t = f64::NEG_INFINITY;
    for (i, p) in samples.iter().enumerate() {
        if !p.t_s.is_finite() || p.t_s < last_t {
            continue;
        }
        last_t = p.t_s;
        let Some(val) = value(p).filter(|v| v.is_finite()) else {
            open = false;
            continue;
        };
        let until = samples[i + 1..]
            .iter()
            .map(|n| n.t_s)
            .find(|t| t.is_finite() && *t >= p.t_s)
            .unwrap_or(span.max(p.t_s));
        if !open {
            runs.push(Vec::new());
            open = true;
        }
        let run = runs.last_mut().expect("pushed above");
        let from = (x(p.t_s), y(val));
        if run.last() != Some(&from) {
            run.push(from);
        }
        run.push((x(until), y(val)));
    }
    runs.into_iter()
        .map(|r| {
            r.iter()
                .map(|(a, b)| format!("{a},{b}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}
