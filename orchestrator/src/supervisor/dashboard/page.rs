//! The live page, rendered by maud in report.html's visual vocabulary
//! (`report_html::style`: the same colours for health and shard-map
//! states, the same stylesheet). The whole live region is one function of
//! the frames in the ring, [`live`]: the page is served with it already
//! rendered (correct without JavaScript, so a screenshot is deterministic),
//! and `/events?view=html` sends it again, numbered like the frames, for
//! the page's small script to swap in. Nothing is fetched from elsewhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::frame::{EdgeView, Frame};
use crate::clock::clock_hm;
use crate::report_html::style::{
    self, AMBER, BLUE, ERROR_LINE, FLEET_BACKGROUND, GREEN, GREY, IDLE_EDGE, INK, MUTED, RED,
    health_color,
};
use crate::state::MapState;

const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// The page's own styles, on top of report.html's.
const CSS: &str = "
main{max-width:1260px;padding:10px 12px 24px}
header.top{display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 22px;margin-bottom:4px}
header.top h1{font-size:20px;margin:0}
#conn{font-size:12px;color:#6b7280}
.grid{display:grid;grid-template-columns:minmax(0,1.35fr) minmax(0,1fr);gap:10px}
section{margin-top:10px;padding:10px 12px}
section>h2{font-size:15px;margin:0 0 6px}
.fleet{display:grid;grid-template-columns:repeat(auto-fill,minmax(96px,1fr));gap:3px}
.fe{border-radius:3px;padding:2px 4px;font-size:10.5px;line-height:1.25;background:#eceef1;border-left:4px solid #c8ccd2;white-space:nowrap;overflow:hidden}
.fe b{font-weight:600}
.fe .bar{height:4px;background:#fff;border-radius:2px;overflow:hidden;margin:1px 0}
.fe .bar i{display:block;height:100%}
.fe .st{font-weight:700;text-transform:uppercase;font-size:9.5px;float:right}
.fe .eagain{color:#d63a3a;font-weight:700}
.fe.unusable{background:#fbe4e4}
.counts{display:flex;gap:14px;flex-wrap:wrap;font-size:13px}
.counts span b{font-variant-numeric:tabular-nums}
.spark td{padding:1px 6px;white-space:nowrap}
.spark{font-size:12px}
.spark svg{display:inline-block;vertical-align:middle;width:96px;height:18px;margin-right:4px}
.stocks{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:6px}
.stock{font-size:11.5px}
.stock svg{width:100%;height:26px}
.controls form{display:inline-flex;gap:4px;align-items:center;margin:2px 10px 2px 0;font-size:12px}
.controls input{width:64px;font-size:12px;padding:1px 3px}
.controls input.wide{width:92px}
.controls button{font-size:12px}
#control-msg{font-size:12.5px;margin-top:4px;min-height:1.2em}
";

/// The page's script: swap in each rendered live region as it arrives
/// (EventSource reconnects with `Last-Event-ID` by itself), and send the
/// controls' forms without leaving the page.
const JS: &str = r#"
(function(){
  var live=document.getElementById('live');
  var conn=document.getElementById('conn');
  var es=new EventSource('/events?view=html&after='+live.dataset.frame);
  es.addEventListener('view',function(e){live.innerHTML=e.data;live.dataset.frame=e.lastEventId;conn.textContent='live, frame '+e.lastEventId;});
  es.onerror=function(){conn.textContent='reconnecting (frame '+live.dataset.frame+')';};
  try{var t=sessionStorage.getItem('cascade-token');if(t){document.getElementById('token').value=t;}}catch(e){}
  document.querySelectorAll('form[data-api]').forEach(function(f){
    f.addEventListener('submit',function(ev){
      ev.preventDefault();
      var msg=document.getElementById('control-msg');
      msg.textContent='…';msg.className='';
      var tok=document.getElementById('token');
      try{sessionStorage.setItem('cascade-token',tok.value);}catch(e){}
      fetch(f.action,{method:'POST',headers:{'Authorization':'Bearer '+tok.value},body:new URLSearchParams(new FormData(f))})
        .then(function(r){return r.json();})
        .then(function(a){msg.textContent=a.message;msg.className=a.ok?'ok':'bad';})
        .catch(function(e){msg.textContent=String(e);msg.className='bad';});
    });
  });
})();
"#;

/// The whole page, with the live region rendered from `frames`.
pub fn render(frames: &[Arc<Frame>]) -> String {
    let id = frames.last().map_or(0, |f| f.id);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "cascade: live" }
                style { (PreEscaped(style::CSS)) (PreEscaped(CSS)) }
            }
            body {
                main {
                    header.top {
                        h1 { "cascade: live" }
                        span #conn { "rendered at frame " (id) }
                    }
                    div #live data-frame=(id) { (live(frames)) }
                    (controls())
                }
                script { (PreEscaped(JS)) }
            }
        }
    }
    .into_string()
}

/// The live region: everything that changes.
pub fn live(frames: &[Arc<Frame>]) -> Markup {
    let Some(f) = frames.last() else {
        return html! { p.empty { "The fleet is starting; the first frame comes with the first watch." } };
    };
    html! {
        (summary(f))
        @if let Some(sc) = &f.scenario { (scenario(sc)) }
        div.grid {
            div {
                (fleet(f))
                (stocks(frames))
            }
            div {
                (graph(f))
                (services(frames))
                (faults(f))
                (shd(f))
            }
        }
    }
}

/// The scenario's incident clock, phase and expectations as judged.
fn scenario(sc: &super::frame::ScenarioView) -> Markup {
    html! {
        section #scenario {
            div.counts {
                span { "incident clock " b #incident-clock style={ "color:" (BLUE) } { (sc.clock) } }
                span { "phase " b #phase { (sc.phase) } }
                span { "steps run " b { (sc.steps) } }
                span.ok { "expectations held " b #expect-held { (sc.held) } }
                span.bad { "failed " b #expect-failed { (sc.failed) } }
                @if !sc.verdict.is_empty() { span { "verdict " b { (sc.verdict) } } }
            }
            @if !sc.expectations.is_empty() {
                table {
                    @for (held, clock, what) in sc.expectations.iter().rev().take(4) {
                        tr { td.t { (clock) } td class=(if *held { "ok" } else { "bad" }) { (if *held { "held" } else { "failed" }) } td { (what) } }
                    }
                }
            }
            p.note { "last: " (sc.last) }
        }
    }
}

/// The run clock and the fleet's counts.
fn summary(f: &Frame) -> Markup {
    let st = &f.status;
    let limit = st
        .thread_limit
        .limit
        .map_or("none".to_owned(), |l| l.to_string());
    let [ready, building, unusable, down] = f.maps;
    html! {
        section #summary {
            div.counts {
                span { "run clock " b #clock { (clock_hm(f.incident_s)) } " (incident time since up, "
                    (st.time_scale) "x)" }
                span { "front-ends " b #frontends { (st.main_fleet().count()) } }
                span { "thread limit " b { (limit) } " (" (st.thread_limit.enforcement) ")" }
                span style={ "color:" (GREEN) } { "ready " b #maps-ready { (ready) } }
                span style={ "color:" (BLUE) } { "building " b #maps-building { (building) } }
                span style={ "color:" (RED) } { "unusable " b #maps-unusable { (unusable) } }
                span style={ "color:" (MUTED) } { "down " b #maps-down { (down) } }
                span.bad { "EAGAIN (refused peer threads) " b #eagain { (f.eagain) } }
                @if !st.alarms.is_empty() {
                    span.bad { "alarms " b { (st.alarms.len()) } }
                }
            }
        }
    }
}

fn map_color(m: MapState) -> &'static str {
    match m {
        MapState::Ready => GREEN,
        MapState::Building => BLUE,
        MapState::Unusable => RED,
        MapState::Down => GREY,
    }
}

/// One cell per front-end: threads against the limit, peers, map, EAGAIN.
fn fleet(f: &Frame) -> Markup {
    html! {
        section #fleet {
            h2 { "Fleet: " (f.status.frontends.len()) " front-ends" }
            div.fleet {
                @for fe in &f.status.frontends {
                    @let c = map_color(fe.shard_map);
                    @let lim = fe.thread_limit.or(f.status.thread_limit.limit);
                    @let pct = lim.filter(|l| *l > 0).map_or(0.0, |l| (f64::from(fe.threads) / l as f64 * 100.0).min(100.0));
                    @let bar = if pct >= 100.0 { RED } else if pct >= 85.0 { AMBER } else { INK };
                    div class={ "fe " (fe.shard_map.as_str()) } data-frontend=(fe.name) data-map=(fe.shard_map.as_str()) data-eagain=(fe.spawn_failures)
                        style={ "border-left-color:" (c) }
                        title={ (fe.name) ": " (fe.detail) } {
                        b { (fe.name.trim_start_matches("kinesis-frontend-")) }
                        @if !fe.fleet.is_empty() { " " span.note { (fe.fleet) } }
                        span.st style={ "color:" (c) } { (fe.shard_map.as_str()) }
                        div.bar { i style={ "width:" (format!("{pct:.0}")) "%;background:" (bar) } {} }
                        div { (fe.threads) "/" (lim.map_or("∞".to_owned(), |l| l.to_string())) " "
                              (fe.peers_known) "/" (fe.peers_total)
                              @if fe.spawn_failures > 0 { " " span.eagain { "✕" (fe.spawn_failures) } } }
                    }
                }
            }
            p.note { "Each cell: front-end number, shard map, threads against the kernel limit \
                      (bar), threads/limit, peers known/total, ✕ refused peer threads (EAGAIN)." }
        }
    }
}

/// Columns by dependency depth; an edge red and thick while it carries a
/// failure (its dependent impaired, its cause naming the upstream).
fn graph(f: &Frame) -> Markup {
    let edges: Vec<&EdgeView> = f.edges.iter().filter(|e| e.from != e.to).collect();
    let mut nodes: Vec<String> = f.status.services.iter().map(|s| s.name.clone()).collect();
    for e in &edges {
        for n in [&e.from, &e.to] {
            if !nodes.contains(n) {
                nodes.push(n.clone());
            }
        }
    }
    // Depth: 0 without an upstream, else one more than the deepest upstream.
    let mut depth: BTreeMap<&str, usize> = nodes.iter().map(|n| (n.as_str(), 0)).collect();
    for _ in 0..nodes.len() {
        for e in &edges {
            let d = depth.get(e.from.as_str()).copied().unwrap_or(0) + 1;
            let to = depth.entry(e.to.as_str()).or_default();
            if *to < d && d < nodes.len() {
                *to = d;
            }
        }
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut at: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let (nw, nh, cw, rh) = (112.0, 24.0, 136.0, 32.0);
    for n in &nodes {
        let d = depth[n.as_str()];
        let r = rows.entry(d).or_default();
        at.insert(n, (8.0 + d as f64 * cw, 8.0 + *r as f64 * rh));
        *r += 1;
    }
    let w = 16.0 + (rows.keys().max().copied().unwrap_or(0) as f64) * cw + nw;
    let h = 16.0 + (rows.values().max().copied().unwrap_or(1) as f64 - 1.0) * rh + nh;
    html! {
        section #graph {
            h2 { "Dependencies: red edges carry a failure now" }
            svg xmlns=(SVG_NS) viewBox={ "0 0 " (w) " " (h) } style={ "max-width:" (w) "px;margin:0 auto" } role="img" aria-label="dependency graph" {
                defs {
                    marker id="a-red" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto" {
                        path d="M0,0 L10,5 L0,10 z" fill=(RED) {}
                    }
                    marker id="a-idle" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto" {
                        path d="M0,0 L10,5 L0,10 z" fill=(IDLE_EDGE) {}
                    }
                }
                @for e in &edges {
                    @let (x1, y1) = at[e.from.as_str()];
                    @let (x2, y2) = at[e.to.as_str()];
                    @let d = format!("M{:.1},{:.1} L{:.1},{:.1}", x1 + nw, y1 + nh / 2.0, x2, y2 + nh / 2.0);
                    @if e.carrying {
                        path.edge.carrying data-from=(e.from) data-to=(e.to) d=(d) stroke=(RED) stroke-width="3" fill="none" marker-end="url(#a-red)" {
                            title { (e.from) " → " (e.to) ": " (e.cause) }
                        }
                    } @else {
                        path.edge.idle data-from=(e.from) data-to=(e.to) d=(d) stroke=(IDLE_EDGE) stroke-width="1.2" stroke-dasharray="5 3" fill="none" marker-end="url(#a-idle)" {
                            title { (e.from) " → " (e.to) }
                        }
                    }
                }
                @for n in &nodes {
                    @let (x, y) = at[n.as_str()];
                    @let svc = f.status.service(n);
                    @let fill = svc.map_or(GREY, |s| health_color(s.health));
                    g.node data-service=(n) data-health=(svc.map_or("none", |s| s.health.as_str())) {
                        rect x=(x) y=(y) width=(nw) height=(nh) rx="5" fill=(fill) {
                            title { (n) ": " (svc.map_or("", |s| s.detail.as_str())) }
                        }
                        text x=(x + nw / 2.0) y=(y + 16.0) text-anchor="middle" font-size="11.5" font-weight="600"
                            fill=(if fill == GREY { INK } else { "#fff" }) { (n) }
                    }
                }
            }
        }
    }
}

/// A polyline over `points` (x in [0,1]) in a `w`x`h` box scaled to `max`.
fn polyline(points: &[(f64, f64)], max: f64, w: f64, h: f64) -> String {
    let mut s = String::new();
    for (x, y) in points {
        let y = if max > 0.0 {
            (y / max).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let _ = write!(s, "{:.1},{:.1} ", x * w, h - 1.0 - y * (h - 2.0));
    }
    s
}

/// x positions in [0,1] over the frames' incident times.
fn xs(frames: &[Arc<Frame>]) -> Vec<f64> {
    let (t0, t1) = match (frames.first(), frames.last()) {
        (Some(a), Some(b)) if b.incident_s > a.incident_s => (a.incident_s, b.incident_s),
        _ => return frames.iter().map(|_| 1.0).collect(),
    };
    frames
        .iter()
        .map(|f| (f.incident_s - t0) / (t1 - t0))
        .collect()
}

/// Each service's health, error rate and p99 over the ring's span.
fn services(frames: &[Arc<Frame>]) -> Markup {
    let Some(last) = frames.last() else {
        return html! {};
    };
    let x = xs(frames);
    let span = frames
        .first()
        .map_or(0.0, |f| last.incident_s - f.incident_s);
    let (w, h) = (96.0, 18.0);
    html! {
        section #services {
            h2 { "Services: error rate and p99, last " (clock_hm(span)) " (incident h:m)" }
            table.spark {
                tr { th { "service" } th { "health" } th { "errors" } th { "p99" } }
                @for s in &last.samples {
                    @let err: Vec<(f64, f64)> = frames.iter().zip(&x).filter_map(|(f, x)| f.samples.iter().find(|t| t.service == s.service).map(|t| (*x, t.error_rate))).collect();
                    @let p99: Vec<(f64, f64)> = frames.iter().zip(&x).filter_map(|(f, x)| f.samples.iter().find(|t| t.service == s.service).map(|t| (*x, t.p99_ms))).collect();
                    @let pmax = p99.iter().map(|p| p.1).fold(0.0, f64::max);
                    @let detail = last.status.service(&s.service).map_or("", |x| x.detail.as_str());
                    tr data-service=(s.service) data-health=(s.health.as_str()) {
                        td { b { (s.service) } }
                        td title=(detail) { span.kind style={ "background:" (health_color(s.health)) } { (s.health.as_str()) } }
                        td {
                            svg xmlns=(SVG_NS) viewBox={ "0 0 " (w) " " (h) } width=(w) height=(h) {
                                rect width=(w) height=(h) fill=(FLEET_BACKGROUND) {}
                                polyline points=(polyline(&err, 1.0, w, h)) fill="none" stroke=(ERROR_LINE) stroke-width="1.3" {}
                            }
                            span.note { (format!("{:.0}%", s.error_rate * 100.0)) }
                        }
                        td {
                            svg xmlns=(SVG_NS) viewBox={ "0 0 " (w) " " (h) } width=(w) height=(h) {
                                rect width=(w) height=(h) fill=(FLEET_BACKGROUND) {}
                                polyline points=(polyline(&p99, pmax, w, h)) fill="none" stroke=(BLUE) stroke-width="1.3" {}
                            }
                            span.note { (format!("{:.0} ms", s.p99_ms)) }
                        }
                    }
                }
            }
        }
    }
}

/// Every stock as a level over time against its capacity (dashed).
fn stocks(frames: &[Arc<Frame>]) -> Markup {
    let Some(last) = frames.last() else {
        return html! {};
    };
    let x = xs(frames);
    let (w, h) = (190.0, 26.0);
    html! {
        section #stocks {
            h2 { "Stocks: buffers and backlogs against their capacity" }
            div.stocks {
                @for s in &last.stocks {
                    @let pts: Vec<(f64, f64)> = frames.iter().zip(&x).filter_map(|(f, x)| f.stocks.iter().find(|t| t.service == s.service && t.name == s.name).map(|t| (*x, t.level))).collect();
                    @let peak = pts.iter().map(|p| p.1).fold(0.0, f64::max);
                    @let max = s.capacity.unwrap_or(0.0).max(peak).max(1.0) * 1.05;
                    @let full = crate::stocks::is_full(s.level, s.capacity);
                    div.stock data-stock={ (s.service) "/" (s.name) } {
                        div { b { (s.service) } " " (s.name) ": "
                              span class=(if full { "bad" } else { "" }) { (crate::stocks::fmt_level(s.level)) }
                              @if let Some(c) = s.capacity { " / " (crate::stocks::fmt_level(c)) } " " (s.unit) }
                        svg xmlns=(SVG_NS) viewBox={ "0 0 " (w) " " (h) } preserveAspectRatio="none" {
                            rect width=(w) height=(h) fill=(FLEET_BACKGROUND) {}
                            @if let Some(c) = s.capacity {
                                @let y = h - 1.0 - (c / max) * (h - 2.0);
                                line x1="0" x2=(w) y1=(y) y2=(y) stroke=(RED) stroke-dasharray="4 3" stroke-width="1" {}
                            }
                            polyline points=(polyline(&pts, max, w, h)) fill="none" stroke=(if full { RED } else { INK }) stroke-width="1.4" {}
                        }
                    }
                }
            }
        }
    }
}

fn faults(f: &Frame) -> Markup {
    html! {
        section #faults {
            h2 { "Faults in force" }
            @if f.faults.is_empty() {
                p.empty { "none" }
            } @else {
                table {
                    @for x in &f.faults {
                        tr data-fault=(x.id) {
                            td { (x.id) } td { (x.summary) } td { (x.targets.join(", ")) }
                            td.t { @if x.expires_ms > 0 { (format!("{:.0} s left", ((x.expires_ms - f.at_ms) as f64 / 1000.0).max(0.0))) } @else { "until cleared" } }
                        }
                    }
                }
            }
        }
    }
}

fn shd(f: &Frame) -> Markup {
    let wall = |ms: i64| format!("{:.1} s ago", ((f.at_ms - ms) as f64 / 1000.0).max(0.0));
    html! {
        section #shd {
            h2 { "Service Health Dashboard" }
            @if f.shd.is_empty() {
                p.empty { "no posts yet" }
            } @else {
                table {
                    @for p in f.shd.iter().rev().take(8) {
                        tr {
                            td.t { (wall(p.at_ms)) }
                            td { (p.path) " tool" }
                            @if p.error.is_empty() {
                                td { (p.message) " " span.note { "(" (p.operator) ")" } }
                            } @else {
                                td { span.bad { "failed: " } (p.error) " " span.note { "(" (p.message) ")" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The facilitator's controls (outside the live region, so typing is not
/// interrupted by updates).
fn controls() -> Markup {
    html! {
        section.controls #controls {
            h2 { "Controls" }
            label.token {
                "run token (from the run's supervisor.json, or $CASCADE_TOKEN) "
                input #token type="password" autocomplete="off" placeholder="token";
            }
            form data-api method="post" action="/api/add-capacity" {
                "add" input name="count" type="number" min="1" value="1"; button { "add capacity" }
            }
            form data-api method="post" action="/api/remove-capacity" {
                "remove" input name="count" type="number" min="1" value="1"; button { "remove capacity" }
            }
            form data-api method="post" action="/api/restart-frontends" {
                "batch" input name="batch" type="number" min="1" value="1";
                "every" input name="interval" value="0s";
                button { "rolling restart" }
            }
            form data-api method="post" action="/api/configure" {
                input.wide name="target" placeholder="target" value="cognito";
                input.wide name="key" placeholder="key" value="mode";
                input.wide name="value" placeholder="value" value="fixed";
                button { "configure" }
            }
            form data-api method="post" action="/api/clear-faults" {
                button { "clear all faults" }
            }
            div #control-msg {}
        }
    }
}
