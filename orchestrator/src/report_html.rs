//! Renders the `report.json` of a `cascade run` as one self-contained HTML page:
//! a header with the verdict, a health timeline per service (SVG, both clocks
//! on the axis), the cascade graph (SVG) and the impact, expectations and
//! events tables. Inline CSS only: no scripts, no fonts, no images, nothing
//! fetched. Every string taken from the report is HTML-escaped, and missing or
//! null fields render as "—".

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

const DASH: &str = "—";
const GREEN: &str = "#2f9e44";
const AMBER: &str = "#e8a317";
const RED: &str = "#d63a3a";
const GREY: &str = "#c8ccd2";
const BLUE: &str = "#4c7fe0";
const INK: &str = "#1f2933";
const MUTED: &str = "#6b7280";
const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// Renders `report` (the report.json value) as one self-contained HTML page.
pub fn render(report: &Value) -> String {
    let ctx = Ctx::new(report);
    let mut out = String::with_capacity(64 * 1024);
    let title = raw(&report["scenario"]).unwrap_or_else(|| "scenario".to_string());
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>cascade report: {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    header(&mut out, &ctx);
    timeline(&mut out, &ctx);
    cascade(&mut out, &ctx);
    impact_table(&mut out, &ctx);
    expectations_table(&mut out, &ctx);
    events_table(&mut out, &ctx);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

const CSS: &str = "
:root{color-scheme:light}
body{margin:0;background:#f4f5f7;color:#1f2933;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:24px;margin:0 0 6px;display:flex;align-items:center;gap:12px;flex-wrap:wrap}
h2{font-size:17px;margin:28px 0 8px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:14px 16px;margin-top:16px}
section>h2{margin-top:0}
.badge{display:inline-block;padding:2px 12px;border-radius:999px;color:#fff;font-size:14px;font-weight:600;text-transform:uppercase;letter-spacing:.04em}
.meta{display:flex;flex-wrap:wrap;gap:6px 28px;margin:8px 0 0;padding:0;list-style:none;color:#374151}
.meta b{color:#6b7280;font-weight:500;margin-right:6px}
.note{color:#6b7280;font-size:12.5px;margin:4px 0 8px}
svg{display:block;width:100%;height:auto}
svg text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:12.5px;color:#374151;margin-top:6px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-2px;margin-right:5px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceef1;vertical-align:top}
th{background:#f8f9fb;color:#4b5563;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.t{white-space:nowrap;font-variant-numeric:tabular-nums}
.ok{color:#2f9e44;font-weight:700}
.bad{color:#d63a3a;font-weight:700}
.kind{display:inline-block;padding:0 7px;border-radius:4px;font-size:12px;color:#fff;white-space:nowrap}
.empty{color:#6b7280;font-style:italic}
";

// ---------------------------------------------------------------- helpers

/// HTML-escapes `& < > " '` and replaces control characters that HTML forbids.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if c.is_control() => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

/// Unescaped display text of a value; `None` for null, missing or blank.
fn raw(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// Escaped display text of a value, "—" when absent.
fn txt(v: &Value) -> String {
    raw(v).map_or_else(|| DASH.to_string(), |s| esc(&s))
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// A name-like value (string or number) as a string.
fn name_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `x` with at most `dec` decimals, trailing zeros trimmed ("20", "17.7").
fn fmt_num(x: f64, dec: usize) -> String {
    if !x.is_finite() {
        return DASH.to_string();
    }
    let mut s = format!("{x:.dec$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".to_string();
    }
    s
}

/// Wall offset as `+17.7s`.
fn fmt_wall(t: f64) -> String {
    if t.is_finite() {
        format!("+{}s", fmt_num(t, 1))
    } else {
        DASH.to_string()
    }
}

/// A duration in seconds for people: `10 s`, `6 min 14 s`, `3 h 12 min`.
fn fmt_dur(secs: f64) -> String {
    if !secs.is_finite() {
        return DASH.to_string();
    }
    let neg = if secs < 0.0 { "-" } else { "" };
    let s = secs.abs();
    if s < 60.0 {
        return format!("{neg}{} s", fmt_num(s, 1));
    }
    let total = s.round() as u64;
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m, sec) {
        (0, m, 0) => format!("{neg}{m} min"),
        (0, m, s) => format!("{neg}{m} min {s} s"),
        (h, 0, _) => format!("{neg}{h} h"),
        (h, m, _) => format!("{neg}{h} h {m} min"),
    }
}

/// Parses an incident clock `HH:MM` or `HH:MM:SS` (hours may exceed 23)
/// into seconds.
fn parse_clock(s: &str) -> Option<f64> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let h: u64 = parts[0].trim().parse().ok()?;
    let m: u64 = parts[1].trim().parse().ok()?;
    if m >= 60 {
        return None;
    }
    let sec: f64 = match parts.get(2) {
        Some(p) => p
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| (0.0..60.0).contains(x))?,
        None => 0.0,
    };
    Some((h * 3600 + m * 60) as f64 + sec)
}

/// Formats incident seconds as `HH:MM` (hours may exceed 23: `26:10`).
fn fmt_clock(secs: f64) -> String {
    if !secs.is_finite() {
        return DASH.to_string();
    }
    let sign = if secs < 0.0 { "-" } else { "" };
    // A small epsilon so 03:29:59.9999 from float error still reads 03:30.
    let minutes = ((secs.abs() + 1e-6) / 60.0).floor() as u64;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Health colour of a timeline sample.
fn health_color(h: &str) -> &'static str {
    match h {
        "serving" => GREEN,
        "degraded" => AMBER,
        "down" => RED,
        _ => GREY,
    }
}

fn verdict_color(v: &str) -> &'static str {
    match v {
        "pass" => GREEN,
        "fail" => RED,
        "aborted" => AMBER,
        _ => MUTED,
    }
}

fn kind_color(k: &str) -> &'static str {
    match k {
        "step" => BLUE,
        "expect-held" => GREEN,
        "expect-failed" | "step-failed" | "rollback-failed" | "error" | "abort" => RED,
        "rollback" | "interrupted" => AMBER,
        "verdict" => INK,
        _ => MUTED,
    }
}

/// Truncates to `n` characters (not bytes), with an ellipsis.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut o: String = s.chars().take(n.saturating_sub(1)).collect();
        o.push('…');
        o
    }
}

// ---------------------------------------------------------------- model

/// What every section needs: the clocks and the service order.
struct Ctx<'a> {
    r: &'a Value,
    /// Incident clock (seconds) at t_s = 0.
    start: Option<f64>,
    /// Incident seconds per wall second.
    scale: Option<f64>,
    /// The x-domain of the timeline: [0, span] wall seconds (> 0).
    span: f64,
    /// Every service name, ordered by cascade depth then name.
    order: Vec<String>,
    depth: BTreeMap<String, usize>,
    edges: Vec<Edge>,
}

struct Edge {
    from: String,
    to: String,
    carried: bool,
    lag: Option<f64>,
}

impl<'a> Ctx<'a> {
    fn new(r: &'a Value) -> Self {
        let scale = num(&r["time_scale"]).filter(|k| *k > 0.0);
        let start = match &r["start_clock"] {
            Value::String(s) => parse_clock(s),
            v => num(v),
        };
        let edges: Vec<Edge> = r["cascade"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        Some(Edge {
                            from: name_of(&e["from"])?,
                            to: name_of(&e["to"])?,
                            carried: e["carried"].as_bool().unwrap_or(false),
                            lag: num(&e["lag_s"]),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut names: BTreeSet<String> = BTreeSet::new();
        for key in ["services", "timeline"] {
            if let Some(o) = r[key].as_object() {
                names.extend(o.keys().cloned());
            }
        }
        for e in &edges {
            names.insert(e.from.clone());
            names.insert(e.to.clone());
        }
        let depth = depths(&names, &edges);
        let mut order: Vec<String> = names.into_iter().collect();
        order.sort_by(|a, b| depth[a].cmp(&depth[b]).then_with(|| a.cmp(b)));
        let span = num(&r["wall_s"])
            .filter(|w| *w > 0.0)
            .unwrap_or_else(|| latest_t(r))
            .max(0.0);
        let span = if span > 0.0 { span } else { 1.0 };
        Ctx {
            r,
            start,
            scale,
            span,
            order,
            depth,
            edges,
        }
    }

    /// Incident clock at wall offset `t`, "—" when unknown.
    fn clock(&self, t: f64) -> String {
        match (self.start, self.scale) {
            (Some(s), Some(k)) if t.is_finite() => fmt_clock(s + t * k),
            _ => DASH.to_string(),
        }
    }

    /// `+17.7s · 04:16`, or "—".
    fn both(&self, t: Option<f64>) -> String {
        match t {
            Some(t) => {
                let c = self.clock(t);
                if c == DASH {
                    fmt_wall(t)
                } else {
                    format!("{} · {c}", fmt_wall(t))
                }
            }
            None => DASH.to_string(),
        }
    }

    fn service(&self, name: &str) -> &Value {
        &self.r["services"][name]
    }

    fn impaired_at(&self, name: &str) -> Option<f64> {
        num(&self.service(name)["impaired_at_s"])
    }

    fn x(&self, t: f64, x0: f64, x1: f64) -> f64 {
        x0 + t.clamp(0.0, self.span) / self.span * (x1 - x0)
    }
}

/// The latest wall offset anything in the report mentions.
fn latest_t(r: &Value) -> f64 {
    let mut m = 0.0f64;
    let mut see = |v: &Value| {
        if let Some(t) = num(v) {
            m = m.max(t);
        }
    };
    if let Some(o) = r["timeline"].as_object() {
        for s in o.values().filter_map(Value::as_array).flatten() {
            see(&s["t_s"]);
        }
    }
    for key in ["events", "frontends"] {
        for e in r[key].as_array().into_iter().flatten() {
            see(&e["t_s"]);
        }
    }
    if let Some(o) = r["services"].as_object() {
        for s in o.values() {
            see(&s["impaired_at_s"]);
            see(&s["recovered_at_s"]);
        }
    }
    m
}

/// Longest-path depth from the roots along the edges; cycles are capped.
fn depths(names: &BTreeSet<String>, edges: &[Edge]) -> BTreeMap<String, usize> {
    let mut d: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
    let cap = names.len().saturating_sub(1);
    for _ in 0..names.len() {
        let mut changed = false;
        for e in edges.iter().filter(|e| e.from != e.to) {
            let nd = d[&e.from] + 1;
            if nd <= cap && nd > d[&e.to] {
                d.insert(e.to.clone(), nd);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    d
}

struct Sample<'v> {
    t: f64,
    v: &'v Value,
}

/// Samples with a finite `t_s`, sorted by it.
fn samples(v: &Value) -> Vec<Sample<'_>> {
    let mut s: Vec<Sample> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some(Sample {
                t: num(&v["t_s"])?,
                v,
            })
        })
        .collect();
    s.sort_by(|a, b| a.t.total_cmp(&b.t));
    s
}

/// For each sample, the wall interval it stands for: up to the next sample,
/// unless that is much further than the usual spacing (then a gap, no data).
fn intervals(s: &[Sample], span: f64) -> Vec<(f64, f64)> {
    let mut gaps: Vec<f64> = s
        .windows(2)
        .map(|w| w[1].t - w[0].t)
        .filter(|g| *g > 0.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let typical = gaps.get(gaps.len() / 2).copied().unwrap_or(1.0);
    let max_gap = (typical * 3.0).max(2.0);
    s.iter()
        .enumerate()
        .map(|(i, a)| {
            let end = match s.get(i + 1) {
                Some(b) if b.t - a.t <= max_gap => b.t,
                _ => a.t + typical,
            };
            (a.t.clamp(0.0, span), end.clamp(0.0, span))
        })
        .collect()
}

// ---------------------------------------------------------------- header

fn header(out: &mut String, c: &Ctx) {
    let r = c.r;
    let verdict = raw(&r["verdict"]);
    let vcol = verdict_color(verdict.as_deref().unwrap_or(""));
    let _ = write!(
        out,
        "<header>\n<h1><span>{}</span><span class=\"badge verdict\" style=\"background:{vcol}\">{}</span></h1>\n<ul class=\"meta\">",
        txt(&r["scenario"]),
        verdict.as_deref().map_or_else(|| DASH.to_string(), esc)
    );
    let _ = write!(out, "<li><b>seed</b>{}</li>", txt(&r["seed"]));
    let scale = match c.scale {
        Some(k) => format!(
            "{}x: one incident hour = {} wall",
            fmt_num(k, 2),
            fmt_dur(3600.0 / k)
        ),
        None => DASH.to_string(),
    };
    let _ = write!(out, "<li><b>time scale</b>{}</li>", esc(&scale));
    let wall = num(&r["wall_s"]);
    let wall_txt = match (wall, c.scale) {
        (Some(w), Some(k)) => format!("{} s ({} of incident time)", fmt_num(w, 1), fmt_dur(w * k)),
        (Some(w), None) => format!("{} s", fmt_num(w, 1)),
        _ => DASH.to_string(),
    };
    let _ = write!(out, "<li><b>wall duration</b>{}</li>", esc(&wall_txt));
    let clocks = match (c.start, wall) {
        (Some(s), Some(w)) => format!("{} → {}", fmt_clock(s), c.clock(w)),
        (Some(s), None) => fmt_clock(s),
        _ => DASH.to_string(),
    };
    let _ = write!(out, "<li><b>incident clock</b>{}</li>", esc(&clocks));
    if let Some(x) = r["expectations"].as_array() {
        let held = x.iter().filter(|e| e["held"] == Value::Bool(true)).count();
        let _ = write!(
            out,
            "<li><b>expectations held</b>{held} of {}</li>",
            x.len()
        );
    }
    if let Some(s) = r["services"].as_object() {
        let imp = s
            .values()
            .filter(|v| num(&v["impaired_at_s"]).is_some())
            .count();
        let _ = write!(out, "<li><b>services impaired</b>{imp} of {}</li>", s.len());
    }
    out.push_str("</ul>\n</header>\n");
}

// ---------------------------------------------------------------- timeline

const TW: f64 = 1120.0;
const TX0: f64 = 150.0;
const TX1: f64 = 1100.0;
const ROW_H: f64 = 28.0;
const ROW_GAP: f64 = 10.0;
const FE_H: f64 = 40.0;

/// Nice wall-second tick step for about ten ticks over `span`.
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

fn timeline(out: &mut String, c: &Ctx) {
    out.push_str("<section id=\"timeline\">\n<h2>Timeline</h2>\n");
    let tl = &c.r["timeline"];
    let svc_names: Vec<&String> = c
        .order
        .iter()
        .filter(|n| tl.get(n.as_str()).is_some() || c.r["services"].get(n.as_str()).is_some())
        .collect();
    let fe = samples(&c.r["frontends"]);
    let steps: Vec<(f64, String)> = c.r["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"].as_str() == Some("step"))
        .filter_map(|e| Some((num(&e["t_s"])?, raw(&e["detail"]).unwrap_or_default())))
        .collect();
    if svc_names.is_empty() && fe.is_empty() {
        out.push_str("<p class=\"empty\">No timeline samples in the report.</p>\n</section>\n");
        return;
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">Wall seconds since the incident clock started (top line of each tick) and the incident clock (bottom line). Bands: health; line: error rate (bottom = 0%, top = 100%).</p>"
    );
    let top = 22.0;
    let rows_h = svc_names.len() as f64 * (ROW_H + ROW_GAP)
        + if fe.is_empty() { 0.0 } else { FE_H + ROW_GAP };
    let axis_y = top + rows_h + 2.0;
    let height = axis_y + 40.0;
    let _ = writeln!(
        out,
        "<svg xmlns=\"{SVG_NS}\" viewBox=\"0 0 {TW} {height}\" width=\"{TW}\" height=\"{height}\" role=\"img\" aria-label=\"health timeline\" class=\"timeline\">"
    );
    let mut y = top;
    for name in &svc_names {
        service_row(out, c, name, y);
        y += ROW_H + ROW_GAP;
    }
    if !fe.is_empty() {
        frontend_row(out, c, &fe, y);
    }
    // Gridlines over the bands, then the axis with both clocks.
    let step = tick_step(c.span);
    let ticks = (c.span / step + 1e-9).floor() as usize;
    out.push_str("<g class=\"axis\">\n");
    let _ = writeln!(
        out,
        "<line x1=\"{TX0}\" y1=\"{axis_y}\" x2=\"{TX1}\" y2=\"{axis_y}\" stroke=\"{INK}\"/>"
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"{MUTED}\">wall</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"{MUTED}\">incident</text>",
        TX0 - 10.0,
        axis_y + 16.0,
        TX0 - 10.0,
        axis_y + 31.0
    );
    for i in 0..=ticks {
        let t = i as f64 * step;
        let x = c.x(t, TX0, TX1);
        let anchor = if i == 0 {
            "start"
        } else if x > TX1 - 20.0 {
            "end"
        } else {
            "middle"
        };
        let _ = writeln!(
            out,
            "<g class=\"tick\"><line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#fff\" stroke-opacity=\"0.55\"/><line x1=\"{x:.1}\" y1=\"{axis_y}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{INK}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" font-size=\"11\" fill=\"{INK}\">{}</text><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" font-size=\"11\" fill=\"{BLUE}\">{}</text></g>",
            axis_y - 2.0,
            axis_y + 4.0,
            axis_y + 16.0,
            esc(&format!("+{}s", fmt_num(t, 2))),
            axis_y + 31.0,
            esc(&c.clock(t)),
        );
    }
    out.push_str("</g>\n");
    // Step markers across all rows.
    for (i, (t, detail)) in steps.iter().enumerate() {
        let x = c.x(*t, TX0, TX1);
        let _ = writeln!(
            out,
            "<g class=\"step-marker\"><title>step {} at {} ({}): {}</title><line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{axis_y}\" stroke=\"{BLUE}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/><line x1=\"{x:.1}\" y1=\"4\" x2=\"{x:.1}\" y2=\"{axis_y}\" stroke=\"transparent\" stroke-width=\"9\"/><text x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\" font-size=\"10\" font-weight=\"600\" fill=\"{BLUE}\">{}</text></g>",
            i + 1,
            fmt_wall(*t),
            esc(&c.clock(*t)),
            esc(detail),
            top - 4.0,
            i + 1
        );
    }
    out.push_str("</svg>\n");
    let _ = writeln!(
        out,
        "<div class=\"legend\"><span><i class=\"sw\" style=\"background:{GREEN}\"></i>serving</span><span><i class=\"sw\" style=\"background:{AMBER}\"></i>degraded</span><span><i class=\"sw\" style=\"background:{RED}\"></i>down</span><span><i class=\"sw\" style=\"background:{GREY}\"></i>no data</span><span>── error rate</span><span style=\"color:{BLUE}\">┆ numbered: scenario step (hover for detail)</span><span>▼ service first impaired</span>{}</div>",
        if fe.is_empty() {
            String::new()
        } else {
            format!(
                "<span>front-ends: <i class=\"sw\" style=\"background:{GREEN}\"></i>ready <i class=\"sw\" style=\"background:{BLUE}\"></i>building <i class=\"sw\" style=\"background:{RED}\"></i>unusable</span>"
            )
        }
    );
    out.push_str("</section>\n");
}

fn service_row(out: &mut String, c: &Ctx, name: &str, y: f64) {
    let s = samples(&c.r["timeline"][name]);
    let _ = writeln!(out, "<g class=\"row\" data-service=\"{}\">", esc(name));
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"13\" fill=\"{INK}\"><title>{}</title>{}</text>",
        TX0 - 10.0,
        y + ROW_H / 2.0 + 4.5,
        esc(name),
        esc(&clip(name, 18))
    );
    let _ = writeln!(
        out,
        "<rect x=\"{TX0}\" y=\"{y}\" width=\"{}\" height=\"{ROW_H}\" fill=\"{GREY}\"><title>{}: no data</title></rect>",
        TX1 - TX0,
        esc(name)
    );
    // Health bands, merging runs of equal health.
    let iv = intervals(&s, c.span);
    let mut bands: Vec<(f64, f64, String)> = Vec::new();
    for (smp, (a, b)) in s.iter().zip(iv) {
        if b <= a {
            continue;
        }
        let h = raw(&smp.v["health"]).unwrap_or_else(|| "unknown".to_string());
        match bands.last_mut() {
            Some(last) if last.2 == h && (last.1 - a).abs() < 1e-9 => last.1 = b,
            _ => bands.push((a, b, h)),
        }
    }
    for (a, b, h) in &bands {
        let xa = c.x(*a, TX0, TX1);
        let xb = c.x(*b, TX0, TX1);
        let _ = writeln!(
            out,
            "<rect class=\"band\" x=\"{xa:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{ROW_H}\" fill=\"{}\"><title>{}: {} {} to {} ({} to {})</title></rect>",
            (xb - xa).max(0.5),
            health_color(h),
            esc(name),
            esc(h),
            fmt_wall(*a),
            fmt_wall(*b),
            esc(&c.clock(*a)),
            esc(&c.clock(*b)),
        );
    }
    // Error rate polyline(s), broken at gaps and missing values.
    let iv = intervals(&s, c.span);
    let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for (i, smp) in s.iter().enumerate() {
        match num(&smp.v["error_rate"]) {
            Some(e) => {
                let ey = y + ROW_H - 2.0 - e.clamp(0.0, 1.0) * (ROW_H - 4.0);
                cur.push((c.x(smp.t, TX0, TX1), ey));
                let next_t = s.get(i + 1).map(|n| n.t);
                if next_t.is_some_and(|nt| (iv[i].1 - nt).abs() > 1e-9) {
                    lines.push(std::mem::take(&mut cur));
                }
            }
            None => lines.push(std::mem::take(&mut cur)),
        }
    }
    lines.push(cur);
    for l in lines.iter().filter(|l| l.len() > 1) {
        let pts: Vec<String> = l.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            out,
            "<polyline class=\"err\" points=\"{}\" fill=\"none\" stroke=\"#111827\" stroke-width=\"1.4\" stroke-linejoin=\"round\"/>",
            pts.join(" ")
        );
    }
    // Impaired / recovered markers.
    let svc = c.service(name);
    if let Some(t) = num(&svc["impaired_at_s"]) {
        let x = c.x(t, TX0, TX1);
        let _ = writeln!(
            out,
            "<g class=\"impaired-marker\"><title>{} impaired at {}: {}</title><line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{INK}\" stroke-width=\"2\"/><path d=\"M{:.1},{:.1} l10,0 l-5,7 z\" fill=\"{INK}\"/></g>",
            esc(name),
            esc(&c.both(Some(t))),
            txt(&svc["symptom"]),
            y - 1.0,
            y + ROW_H + 1.0,
            x - 5.0,
            y - 8.0,
        );
    }
    if let Some(t) = num(&svc["recovered_at_s"]) {
        let x = c.x(t, TX0, TX1);
        let _ = writeln!(
            out,
            "<g class=\"recovered-marker\"><title>{} recovered at {}</title><line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#0b5d1e\" stroke-width=\"2\" stroke-dasharray=\"2 2\"/></g>",
            esc(name),
            esc(&c.both(Some(t))),
            y - 1.0,
            y + ROW_H + 1.0,
        );
    }
    out.push_str("</g>\n");
}

fn frontend_row(out: &mut String, c: &Ctx, fe: &[Sample], y: f64) {
    let count = |s: &Sample, k: &str| num(&s.v[k]).unwrap_or(0.0).max(0.0);
    let max = fe
        .iter()
        .map(|s| {
            count(s, "fleet").max(count(s, "ready") + count(s, "building") + count(s, "unusable"))
        })
        .fold(0.0f64, f64::max)
        .max(1.0);
    out.push_str("<g class=\"frontends\">\n");
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"13\" fill=\"{INK}\">front-ends</text><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\" fill=\"{MUTED}\">max {}</text>",
        TX0 - 10.0,
        y + FE_H / 2.0,
        TX0 - 10.0,
        y + FE_H / 2.0 + 12.0,
        fmt_num(max, 0)
    );
    let _ = writeln!(
        out,
        "<rect x=\"{TX0}\" y=\"{y}\" width=\"{}\" height=\"{FE_H}\" fill=\"#eceef1\"/>",
        TX1 - TX0
    );
    // Merge runs of identical counts.
    type Counts = [f64; 4];
    let mut runs: Vec<(f64, f64, Counts)> = Vec::new();
    for (s, (a, b)) in fe.iter().zip(intervals(fe, c.span)) {
        if b <= a {
            continue;
        }
        let k = [
            count(s, "fleet"),
            count(s, "ready"),
            count(s, "building"),
            count(s, "unusable"),
        ];
        match runs.last_mut() {
            Some(last) if last.2 == k && (last.1 - a).abs() < 1e-9 => last.1 = b,
            _ => runs.push((a, b, k)),
        }
    }
    for (a, b, k) in &runs {
        let xa = c.x(*a, TX0, TX1);
        let w = (c.x(*b, TX0, TX1) - xa).max(0.5);
        let _ = write!(
            out,
            "<g><title>front-ends {} to {} ({} to {}): fleet {}, ready {}, building {}, unusable {}</title>",
            fmt_wall(*a),
            fmt_wall(*b),
            esc(&c.clock(*a)),
            esc(&c.clock(*b)),
            fmt_num(k[0], 0),
            fmt_num(k[1], 0),
            fmt_num(k[2], 0),
            fmt_num(k[3], 0),
        );
        let mut base = y + FE_H;
        for (n, col) in [(k[1], GREEN), (k[2], BLUE), (k[3], RED)] {
            if n <= 0.0 {
                continue;
            }
            let h = n / max * FE_H;
            base -= h;
            let _ = write!(
                out,
                "<rect x=\"{xa:.1}\" y=\"{base:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{col}\"/>"
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</g>\n");
}

// ---------------------------------------------------------------- cascade

const NODE_W: f64 = 150.0;
const NODE_H: f64 = 42.0;
const COL_W: f64 = 250.0;
const ROW_SPACING: f64 = 64.0;

fn cascade(out: &mut String, c: &Ctx) {
    out.push_str("<section id=\"cascade\">\n<h2>Cascade</h2>\n");
    if c.order.is_empty() {
        out.push_str(
            "<p class=\"empty\">No services or dependency edges in the report.</p>\n</section>\n",
        );
        return;
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">Columns by dependency depth. Thick red arrows carried the failure (label: lag after the upstream was impaired); grey dashed arrows did not.</p>"
    );
    // Columns by depth (compressed), ordered within by the parents' mean row.
    let mut levels: Vec<usize> = c.depth.values().copied().collect();
    levels.sort_unstable();
    levels.dedup();
    let mut cols: Vec<Vec<String>> = vec![Vec::new(); levels.len()];
    let mut pos: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (ci, lv) in levels.iter().enumerate() {
        let mut members: Vec<(f64, String)> = c
            .order
            .iter()
            .filter(|n| c.depth[*n] == *lv)
            .map(|n| {
                let parents: Vec<f64> = c
                    .edges
                    .iter()
                    .filter(|e| &e.to == n)
                    .filter_map(|e| pos.get(&e.from))
                    .map(|p| p.1 as f64)
                    .collect();
                let bary = if parents.is_empty() {
                    f64::MAX
                } else {
                    parents.iter().sum::<f64>() / parents.len() as f64
                };
                (bary, n.clone())
            })
            .collect();
        members.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        for (ri, (_, n)) in members.into_iter().enumerate() {
            pos.insert(n.clone(), (ci, ri));
            cols[ci].push(n);
        }
    }
    let max_rows = cols.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let pad = 30.0;
    let width = (pad * 2.0 + (cols.len() as f64 - 1.0) * COL_W + NODE_W).max(600.0);
    let height = pad * 2.0 + (max_rows as f64 - 1.0) * ROW_SPACING + NODE_H;
    let left = (width - ((cols.len() as f64 - 1.0) * COL_W + NODE_W)) / 2.0;
    let node_xy = |n: &str| -> (f64, f64) {
        let (ci, ri) = pos.get(n).copied().unwrap_or((0, 0));
        let rows = cols.get(ci).map_or(1, Vec::len) as f64;
        let offset = (max_rows as f64 - rows) * ROW_SPACING / 2.0;
        (
            left + ci as f64 * COL_W,
            pad + offset + ri as f64 * ROW_SPACING,
        )
    };
    let _ = writeln!(
        out,
        "<svg xmlns=\"{SVG_NS}\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" style=\"max-width:{width}px;margin:0 auto\" role=\"img\" aria-label=\"cascade graph\" class=\"cascade\">"
    );
    let _ = writeln!(
        out,
        "<defs><marker id=\"arrow-carried\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerUnits=\"userSpaceOnUse\" markerWidth=\"12\" markerHeight=\"12\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{RED}\"/></marker><marker id=\"arrow-idle\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerUnits=\"userSpaceOnUse\" markerWidth=\"9\" markerHeight=\"9\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#9aa0a6\"/></marker></defs>"
    );
    // Edges first (idle under carried), then labels, then nodes.
    let mut labels = String::new();
    let mut edges: Vec<&Edge> = c.edges.iter().filter(|e| e.from != e.to).collect();
    edges.sort_by_key(|e| e.carried);
    for e in edges {
        let (fx, fy) = node_xy(&e.from);
        let (tx, ty) = node_xy(&e.to);
        let (x1, y1) = (fx + NODE_W, fy + NODE_H / 2.0);
        let (x2, y2) = (tx - 2.0, ty + NODE_H / 2.0);
        let bend = ((x2 - x1).abs() / 2.0).max(60.0);
        let (c1x, c2x) = (x1 + bend, x2 - bend);
        let d = format!("M{x1:.1},{y1:.1} C{c1x:.1},{y1:.1} {c2x:.1},{y2:.1} {x2:.1},{y2:.1}");
        let (class, style, marker) = if e.carried {
            (
                "edge carried",
                format!("stroke=\"{RED}\" stroke-width=\"3\""),
                "arrow-carried",
            )
        } else {
            (
                "edge idle",
                "stroke=\"#9aa0a6\" stroke-width=\"1.3\" stroke-dasharray=\"6 4\"".to_string(),
                "arrow-idle",
            )
        };
        let tip = if e.carried {
            match e.lag {
                Some(l) => format!(
                    "carried the failure, {} after {} was impaired",
                    fmt_wall(l),
                    e.from
                ),
                None => "carried the failure".to_string(),
            }
        } else {
            "did not carry the failure".to_string()
        };
        let _ = writeln!(
            out,
            "<path class=\"{class}\" d=\"{d}\" fill=\"none\" {style} marker-end=\"url(#{marker})\"><title>{} → {}: {}</title></path>",
            esc(&e.from),
            esc(&e.to),
            esc(&tip)
        );
        if e.carried {
            let mx = (x1 + 3.0 * c1x + 3.0 * c2x + x2) / 8.0;
            let my = (y1 + 3.0 * y1 + 3.0 * y2 + y2) / 8.0;
            let label = e.lag.map_or_else(|| "carried".to_string(), fmt_wall);
            let _ = writeln!(
                labels,
                "<text class=\"lag\" x=\"{mx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" font-weight=\"700\" fill=\"{RED}\" stroke=\"#fff\" stroke-width=\"4\" paint-order=\"stroke\">{}</text>",
                my - 5.0,
                esc(&label)
            );
        }
    }
    out.push_str(&labels);
    for n in &c.order {
        let (x, y) = node_xy(n);
        let svc = c.service(n);
        let (fill, sub) = match (svc.is_object(), num(&svc["impaired_at_s"])) {
            (_, Some(t)) => (RED, format!("impaired {}", c.both(Some(t)))),
            (true, None) => (GREEN, "not impaired".to_string()),
            (false, None) => (GREY, "no data".to_string()),
        };
        let text = if fill == GREY { INK } else { "#fff" };
        let _ = writeln!(
            out,
            "<g class=\"node\" data-service=\"{}\"><title>{}: {}{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"7\" fill=\"{fill}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"600\" fill=\"{text}\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10.5\" fill=\"{text}\">{}</text></g>",
            esc(n),
            esc(n),
            esc(&sub),
            raw(&svc["symptom"]).map_or_else(String::new, |s| format!(" ({})", esc(&s))),
            x + NODE_W / 2.0,
            y + 17.0,
            esc(&clip(n, 20)),
            x + NODE_W / 2.0,
            y + 33.0,
            esc(&sub),
        );
    }
    out.push_str("</svg>\n");
    let _ = writeln!(
        out,
        "<div class=\"legend\"><span><i class=\"sw\" style=\"background:{RED}\"></i>impaired</span><span><i class=\"sw\" style=\"background:{GREEN}\"></i>not impaired</span><span><i class=\"sw\" style=\"background:{GREY}\"></i>no data</span><span style=\"color:{RED}\"><b>━━▶</b> carried the failure (+lag)</span><span style=\"color:#9aa0a6\">╌╌▶ did not carry it</span></div>"
    );
    out.push_str("</section>\n");
}

// ---------------------------------------------------------------- tables

fn impact_table(out: &mut String, c: &Ctx) {
    out.push_str("<section id=\"impact\">\n<h2>Impact per service</h2>\n");
    let Some(services) = c.r["services"].as_object().filter(|o| !o.is_empty()) else {
        out.push_str("<p class=\"empty\">No per-service impact in the report.</p>\n</section>\n");
        return;
    };
    let mut names: Vec<&String> = services.keys().collect();
    names.sort_by(|a, b| {
        let ka = c.impaired_at(a).unwrap_or(f64::INFINITY);
        let kb = c.impaired_at(b).unwrap_or(f64::INFINITY);
        ka.total_cmp(&kb).then_with(|| a.cmp(b))
    });
    out.push_str("<table>\n<thead><tr><th>service</th><th>impaired at</th><th>recovered at</th><th>duration</th><th class=\"num\">peak error rate</th><th class=\"num\">p99</th><th>symptom</th></tr></thead>\n<tbody>\n");
    for n in names {
        let s = &services[n.as_str()];
        let imp = num(&s["impaired_at_s"]);
        let rec = num(&s["recovered_at_s"]);
        let dur = match (imp, rec) {
            (Some(a), Some(b)) => match c.scale {
                Some(k) => format!("{} ({} incident)", fmt_dur(b - a), fmt_dur((b - a) * k)),
                None => fmt_dur(b - a),
            },
            (Some(a), None) => match num(&c.r["wall_s"]) {
                Some(w) if w >= a => format!("not recovered (≥ {})", fmt_dur(w - a)),
                _ => "not recovered".to_string(),
            },
            _ => DASH.to_string(),
        };
        let err = num(&s["max_error_rate"]).map_or_else(
            || DASH.to_string(),
            |e| format!("{}%", fmt_num(e * 100.0, 1)),
        );
        let p99 =
            num(&s["p99_ms"]).map_or_else(|| DASH.to_string(), |p| format!("{} ms", fmt_num(p, 1)));
        let col = if imp.is_some() { RED } else { GREEN };
        let _ = writeln!(
            out,
            "<tr><td><i class=\"sw\" style=\"background:{col}\"></i>{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(n),
            esc(&c.both(imp)),
            esc(&c.both(rec)),
            esc(&dur),
            esc(&err),
            esc(&p99),
            txt(&s["symptom"]),
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn expectations_table(out: &mut String, c: &Ctx) {
    out.push_str("<section id=\"expectations\">\n<h2>Expectations</h2>\n");
    let Some(xs) = c.r["expectations"].as_array().filter(|a| !a.is_empty()) else {
        out.push_str("<p class=\"empty\">No expectations in the report.</p>\n</section>\n");
        return;
    };
    out.push_str("<table>\n<thead><tr><th>expectation</th><th>held</th><th>detail</th></tr></thead>\n<tbody>\n");
    for x in xs {
        let held = match x["held"].as_bool() {
            Some(true) => "<span class=\"ok\">✓ held</span>",
            Some(false) => "<span class=\"bad\">✗ not held</span>",
            None => DASH,
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"t\">{held}</td><td>{}</td></tr>",
            txt(&x["name"]),
            txt(&x["detail"]),
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn events_table(out: &mut String, c: &Ctx) {
    out.push_str("<section id=\"events\">\n<h2>Events</h2>\n");
    let Some(evs) = c.r["events"].as_array().filter(|a| !a.is_empty()) else {
        out.push_str("<p class=\"empty\">No events in the report.</p>\n</section>\n");
        return;
    };
    out.push_str("<table>\n<thead><tr><th class=\"num\">wall</th><th>incident clock</th><th>kind</th><th>detail</th></tr></thead>\n<tbody>\n");
    for e in evs {
        let t = num(&e["t_s"]);
        let clock = match raw(&e["clock"]) {
            Some(s) => s,
            None => t.map_or_else(|| DASH.to_string(), |t| c.clock(t)),
        };
        let kind = raw(&e["kind"]);
        let kind_html = match &kind {
            Some(k) => format!(
                "<span class=\"kind\" style=\"background:{}\">{}</span>",
                kind_color(k),
                esc(k)
            ),
            None => DASH.to_string(),
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"num t\">{}</td><td class=\"t\">{}</td><td>{kind_html}</td><td>{}</td></tr>",
            t.map_or_else(|| DASH.to_string(), fmt_wall),
            esc(&clock),
            txt(&e["detail"]),
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

// ---------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "scenario": "nov-25-2020", "seed": 1125, "time_scale": 360.0, "verdict": "fail",
            "start_clock": "02:30", "wall_s": 40.0,
            "services": {
                "kinesis": {"impaired_at_s": 5.0, "recovered_at_s": 30.0, "symptom": "shard map <stale>", "max_error_rate": 1.0, "p99_ms": 1000.0},
                "cognito": {"impaired_at_s": 12.5, "recovered_at_s": null, "symptom": "auth errors", "max_error_rate": 0.4, "p99_ms": 220.0},
                "lambda": {"impaired_at_s": null, "recovered_at_s": null, "symptom": "", "max_error_rate": 0.0, "p99_ms": 12.0}
            },
            "timeline": {
                "kinesis": [
                    {"t_s": 0.0, "health": "serving", "error_rate": 0.0, "p99_ms": 3.0},
                    {"t_s": 5.0, "health": "down", "error_rate": 1.0, "p99_ms": 1000.0},
                    {"t_s": 30.0, "health": "serving", "error_rate": 0.0, "p99_ms": 3.0}
                ],
                "cognito": [
                    {"t_s": 0.0, "health": "serving", "error_rate": 0.0},
                    {"t_s": 12.5, "health": "degraded", "error_rate": 0.4}
                ],
                "lambda": [{"t_s": 0.0, "health": "serving", "error_rate": 0.0}]
            },
            "frontends": [
                {"t_s": 0.0, "fleet": 8, "ready": 8, "building": 0, "unusable": 0},
                {"t_s": 10.0, "fleet": 8, "ready": 4, "building": 2, "unusable": 2}
            ],
            "cascade": [
                {"from": "kinesis", "to": "cognito", "carried": true, "lag_s": 7.5},
                {"from": "cognito", "to": "lambda", "carried": false, "lag_s": null}
            ],
            "expectations": [
                {"name": "cognito degrades", "held": true, "detail": "held at 03:45"},
                {"name": "lambda stays up", "held": false, "detail": "not observed by 05:00"}
            ],
            "events": [
                {"t_s": 2.0, "clock": "02:42", "kind": "step", "detail": "<script>alert(1)</script> & 'x'"},
                {"t_s": 5.0, "kind": "health", "detail": "kinesis down"},
                {"t_s": 39.0, "clock": "06:24", "kind": "verdict", "detail": "fail"}
            ]
        })
    }

    #[test]
    fn escapes_script_in_detail() {
        let html = render(&sample());
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#39;x&#39;"));
        assert!(html.contains("shard map &lt;stale&gt;"));
        assert_eq!(esc("&<>\"'"), "&amp;&lt;&gt;&quot;&#39;");
    }

    #[test]
    fn no_external_resources() {
        let html = render(&sample());
        let stripped = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!stripped.contains("http://"), "found http:// in output");
        assert!(!stripped.contains("https://"), "found https:// in output");
        assert!(!html.contains("<script"));
        assert!(!html.contains("<link"));
        assert!(!html.contains("<img"));
    }

    #[test]
    fn one_timeline_row_per_service() {
        let html = render(&sample());
        assert_eq!(html.matches("<g class=\"row\"").count(), 3);
        for s in ["kinesis", "cognito", "lambda"] {
            assert!(html.contains(&format!("<g class=\"row\" data-service=\"{s}\">")));
        }
        // Kinesis goes serving -> down -> serving: three merged bands.
        let kin = html
            .split("data-service=\"kinesis\">")
            .nth(1)
            .expect("kinesis row");
        let kin = kin.split("</g>").next().expect("row end");
        assert_eq!(kin.matches("class=\"band\"").count(), 3);
        assert!(kin.contains(RED) && kin.contains(GREEN));
        assert!(html.contains("class=\"frontends\""));
        assert!(html.contains("class=\"err\""));
        assert_eq!(html.matches("class=\"step-marker\"").count(), 1);
        assert_eq!(html.matches("class=\"impaired-marker\"").count(), 2);
    }

    #[test]
    fn carried_edges_differ_from_idle_ones() {
        let html = render(&sample());
        let carried: Vec<&str> = html
            .lines()
            .filter(|l| l.contains("class=\"edge carried\""))
            .collect();
        let idle: Vec<&str> = html
            .lines()
            .filter(|l| l.contains("class=\"edge idle\""))
            .collect();
        assert_eq!((carried.len(), idle.len()), (1, 1));
        assert!(
            carried[0].contains(&format!("stroke=\"{RED}\""))
                && carried[0].contains("stroke-width=\"3\"")
        );
        assert!(carried[0].contains("url(#arrow-carried)"));
        assert!(idle[0].contains("stroke-dasharray") && idle[0].contains("url(#arrow-idle)"));
        assert!(!carried[0].contains("stroke-dasharray"));
        assert!(html.contains("<marker id=\"arrow-carried\""));
        assert!(html.contains("class=\"lag\""));
        assert!(html.contains(">+7.5s</text>"));
    }

    #[test]
    fn graph_columns_follow_depth() {
        let r = sample();
        let c = Ctx::new(&r);
        assert_eq!(c.depth["kinesis"], 0);
        assert_eq!(c.depth["cognito"], 1);
        assert_eq!(c.depth["lambda"], 2);
        assert_eq!(c.order, ["kinesis", "cognito", "lambda"]);
        // A cycle terminates and stays bounded.
        let cyc = json!({"cascade": [
            {"from": "a", "to": "b", "carried": true},
            {"from": "b", "to": "a", "carried": false}
        ]});
        let c = Ctx::new(&cyc);
        assert!(c.depth.values().all(|d| *d <= 1));
        render(&cyc);
    }

    #[test]
    fn axis_ticks_show_both_clocks() {
        let r = json!({"start_clock": "02:30", "time_scale": 360.0, "wall_s": 60.0,
            "timeline": {"kinesis": [{"t_s": 0.0, "health": "serving", "error_rate": 0.0}]}});
        let html = render(&r);
        let ticks: Vec<&str> = html
            .lines()
            .filter(|l| l.starts_with("<g class=\"tick\">"))
            .collect();
        assert_eq!(ticks.len(), 7);
        let t10 = ticks
            .iter()
            .find(|l| l.contains(">+10s</text>"))
            .expect("tick at +10s");
        assert!(t10.contains(">03:30</text>"), "{t10}");
        assert!(ticks[0].contains(">+0s</text>") && ticks[0].contains(">02:30</text>"));
        let t60 = ticks
            .iter()
            .find(|l| l.contains(">+60s</text>"))
            .expect("tick at +60s");
        assert!(t60.contains(">08:30</text>"));
    }

    #[test]
    fn clock_helpers() {
        assert_eq!(parse_clock("02:30"), Some(9000.0));
        assert_eq!(parse_clock("26:10"), Some(94200.0));
        assert_eq!(parse_clock("01:02:03"), Some(3723.0));
        assert_eq!(parse_clock("2:61"), None);
        assert_eq!(parse_clock("nope"), None);
        assert_eq!(fmt_clock(9000.0 + 3600.0), "03:30");
        assert_eq!(fmt_clock(94200.0), "26:10");
        assert_eq!(fmt_clock(9000.0 + 17.7 * 360.0), "04:16");
        assert_eq!(fmt_clock(f64::NAN), DASH);
        let r = json!({"start_clock": "23:30", "time_scale": 360.0});
        let c = Ctx::new(&r);
        assert_eq!(c.clock(10.0), "24:30");
        assert_eq!(fmt_num(20.0, 1), "20");
        assert_eq!(fmt_num(17.74, 1), "17.7");
        assert_eq!(fmt_dur(10.0), "10 s");
        assert_eq!(fmt_dur(3600.0 * 6.0 + 14.0 * 60.0), "6 h 14 min");
    }

    #[test]
    fn header_shows_verdict_and_scale() {
        let html = render(&sample());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert!(html.contains(&format!("style=\"background:{RED}\">fail</span>")));
        assert!(html.contains("360x: one incident hour = 10 s wall"));
        assert!(html.contains("✓ held") && html.contains("✗ not held"));
        // Event without a clock gets a computed one: 02:30 + 5 s * 360 = 03:00.
        assert!(html.contains("<td class=\"t\">03:00</td>"));
        // Impact table: wall and incident clock, not-recovered duration.
        assert!(html.contains("+5s · 03:00"));
        assert!(html.contains("not recovered"));
        assert!(html.contains("100%"));
    }

    #[test]
    fn minimal_and_malformed_reports_do_not_panic() {
        for r in [
            json!({}),
            json!(null),
            json!([1, 2]),
            json!("x"),
            json!({"scenario": null, "verdict": null, "time_scale": 0, "wall_s": -3,
                   "services": {"a": null, "b": {"impaired_at_s": "x"}},
                   "timeline": {"a": null, "b": [null, {"t_s": "x"}, {"t_s": 1.0, "health": 3, "error_rate": 7}]},
                   "frontends": [{"t_s": 0.0}], "cascade": [{"from": "a"}, {"from": "a", "to": "a"}, null],
                   "expectations": [null, {"held": "yes"}], "events": [null, {"kind": "step"}]}),
            json!({"timeline": {"k": [{"t_s": 1e300, "health": "down"}, {"t_s": -5.0, "health": "serving"}]}, "wall_s": 10}),
        ] {
            let html = render(&r);
            assert!(html.starts_with("<!DOCTYPE html>"));
            assert!(html.contains("</html>"));
        }
        let html = render(&json!({}));
        assert!(html.contains(DASH));
    }
}
