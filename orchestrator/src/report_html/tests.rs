//! The page's unit tests, over typed `Report` fixtures: escaping, no
//! external resources, the timeline's rows and axis, the cascade graph, the
//! header and tables, and reports with nothing (or nonsense) in them.

use std::collections::BTreeMap;

use super::style::{GREEN, RED};
use super::view::View;
use super::*;
use crate::engine::report::{
    CascadeEdge, Event, EventKind, ExpectationResult, FleetSample, HealthSample, ServiceImpact,
    StockSample, StockSeries,
};
use crate::state::{Health, Verdict};

/// A report with nothing in it.
fn minimal() -> Report {
    Report {
        scenario: String::new(),
        seed: 0,
        time_scale: 0.0,
        verdict: Verdict::Aborted,
        remediations: Vec::new(),
        start_clock: String::new(),
        wall_s: 0.0,
        services: BTreeMap::new(),
        impaired_order: Vec::new(),
        cascade: Vec::new(),
        timeline: BTreeMap::new(),
        frontends: Vec::new(),
        stocks: Vec::new(),
        expectations: Vec::new(),
        events: Vec::new(),
        fidelity: None,
    }
}

fn impact(
    impaired: Option<f64>,
    recovered: Option<f64>,
    symptom: &str,
    err: f64,
    p99: f64,
) -> ServiceImpact {
    ServiceImpact {
        impaired_at_s: impaired,
        recovered_at_s: recovered,
        symptom: symptom.to_string(),
        max_error_rate: err,
        p99_ms: p99,
        ..ServiceImpact::default()
    }
}

fn sample(t_s: f64, health: Health, error_rate: f64) -> HealthSample {
    HealthSample {
        t_s,
        health,
        error_rate,
        p99_ms: 3.0,
    }
}

fn edge(from: &str, to: &str, carried: bool, lag_s: Option<f64>) -> CascadeEdge {
    CascadeEdge {
        from: from.to_string(),
        to: to.to_string(),
        carried,
        lag_s,
        evidence: carried.then(|| format!("{to}-0: {from} failing")),
    }
}

fn fleet(t_s: f64, ready: usize, building: usize, unusable: usize) -> FleetSample {
    FleetSample {
        t_s,
        fleet: 8,
        ready,
        building,
        unusable,
    }
}

fn event(t_s: f64, clock: &str, kind: EventKind, detail: &str) -> Event {
    Event {
        t_s,
        clock: clock.to_string(),
        kind,
        detail: detail.to_string(),
    }
}

fn expectation(name: &str, held: bool, detail: &str) -> ExpectationResult {
    ExpectationResult {
        name: name.to_string(),
        held,
        detail: detail.to_string(),
    }
}

fn stock(service: &str, name: &str, samples: &[(f64, f64, Option<f64>)]) -> StockSeries {
    StockSeries {
        service: service.into(),
        name: name.into(),
        unit: "bytes".into(),
        samples: samples
            .iter()
            .map(|&(t_s, level, capacity)| StockSample {
                t_s,
                level,
                capacity,
            })
            .collect(),
    }
}

/// Kinesis fails, carries it to Cognito; Lambda never notices.
fn sample_report() -> Report {
    use Health::{Degraded, Down, Serving};
    Report {
        scenario: "nov-25-2020".to_string(),
        seed: 1125,
        time_scale: 360.0,
        verdict: Verdict::Fail,
        start_clock: "02:30:00".to_string(),
        wall_s: 40.0,
        services: BTreeMap::from([
            (
                "kinesis".into(),
                impact(Some(5.0), Some(30.0), "shard map <stale>", 1.0, 1000.0),
            ),
            (
                "cognito".into(),
                impact(Some(12.5), None, "auth errors", 0.4, 220.0),
            ),
            ("lambda".into(), impact(None, None, "", 0.0, 12.0)),
        ]),
        timeline: BTreeMap::from([
            (
                "kinesis".into(),
                vec![
                    sample(0.0, Serving, 0.0),
                    sample(5.0, Down, 1.0),
                    sample(30.0, Serving, 0.0),
                ],
            ),
            (
                "cognito".into(),
                vec![sample(0.0, Serving, 0.0), sample(12.5, Degraded, 0.4)],
            ),
            ("lambda".into(), vec![sample(0.0, Serving, 0.0)]),
        ]),
        frontends: vec![fleet(0.0, 8, 0, 0), fleet(10.0, 4, 2, 2)],
        stocks: vec![
            stock(
                "cognito",
                "access-log buffer",
                &[
                    (0.0, 0.0, Some(1000.0)),
                    (8.0, 600.0, Some(1000.0)),
                    (11.0, 1000.0, Some(1000.0)),
                ],
            ),
            stock(
                "ecs",
                "tasks in PROVISIONING",
                &[(0.0, 0.0, None), (20.0, 12.0, None)],
            ),
        ],
        cascade: vec![
            edge("kinesis", "cognito", true, Some(7.5)),
            edge("cognito", "lambda", false, None),
        ],
        expectations: vec![
            expectation("cognito degrades", true, "held at 03:45"),
            expectation("lambda stays up", false, "not observed by 05:00"),
        ],
        events: vec![
            event(
                2.0,
                "02:42",
                EventKind::Step,
                "<script>alert(1)</script> & 'x'",
            ),
            event(5.0, "", EventKind::Health, "kinesis down"),
            event(39.0, "06:24", EventKind::Verdict, "fail"),
        ],
        ..minimal()
    }
}

/// Every piece of `html` that starts with `open`, up to the first `close`.
fn pieces<'a>(html: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    html.match_indices(open)
        .map(|(i, _)| {
            let rest = &html[i..];
            rest.find(close)
                .map_or(rest, |end| &rest[..end + close.len()])
        })
        .collect()
}

#[test]
fn escapes_every_string_from_the_report() {
    let html = render(&sample_report());
    assert!(!html.contains("<script>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; 'x'"));
    assert!(html.contains("shard map &lt;stale&gt;"));

    // Names end up in attributes and SVG text too.
    let mut r = sample_report();
    let evil = "a\"><b onload=x>";
    r.scenario = evil.to_string();
    r.services
        .insert(evil.to_string(), impact(Some(1.0), None, evil, 1.0, 1.0));
    r.timeline
        .insert(evil.to_string(), vec![sample(1.0, Health::Down, 1.0)]);
    r.cascade.push(edge(evil, "lambda", true, Some(1.0)));
    r.expectations.push(expectation(evil, false, evil));
    r.events.push(event(3.0, evil, EventKind::Step, evil));
    let html = render(&r);
    assert!(
        !html.contains("<b onload"),
        "unescaped markup from the report"
    );
    assert!(html.contains("data-service=\"a&quot;&gt;&lt;b onload=x&gt;\""));
}

#[test]
fn no_external_resources() {
    let html = render(&sample_report());
    let stripped = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!stripped.contains("http://"), "found http:// in output");
    assert!(!stripped.contains("https://"), "found https:// in output");
    assert!(!html.contains("<script"));
    assert!(!html.contains("<link"));
    assert!(!html.contains("<img"));
}

#[test]
fn one_timeline_row_per_service() {
    let html = render(&sample_report());
    assert_eq!(html.matches("<g class=\"row\"").count(), 3);
    for s in ["kinesis", "cognito", "lambda"] {
        assert!(html.contains(&format!("<g class=\"row\" data-service=\"{s}\">")));
    }
    // Kinesis goes serving -> down -> serving: three merged bands.
    let kin = pieces(&html, "<g class=\"row\" data-service=\"kinesis\">", "</g>");
    assert_eq!(kin.len(), 1);
    assert_eq!(kin[0].matches("class=\"band\"").count(), 3);
    assert!(kin[0].contains(RED) && kin[0].contains(GREEN));
    assert!(html.contains("class=\"frontends\""));
    assert!(html.contains("class=\"err\""));
    assert_eq!(html.matches("class=\"step-marker\"").count(), 1);
    assert_eq!(html.matches("class=\"impaired-marker\"").count(), 2);
    assert_eq!(html.matches("class=\"recovered-marker\"").count(), 1);
}

#[test]
fn svg_elements_are_closed() {
    // In inline SVG an unclosed <rect> swallows what follows it.
    let html = render(&sample_report());
    for el in ["rect", "line", "path", "polyline"] {
        let open = html.matches(&format!("<{el} ")).count();
        let close = html.matches(&format!("</{el}>")).count();
        assert_eq!(open, close, "<{el}> opened {open} times, closed {close}");
    }
}

#[test]
fn carried_edges_differ_from_idle_ones() {
    let html = render(&sample_report());
    let carried = pieces(&html, "<path class=\"edge carried\"", "</path>");
    let idle = pieces(&html, "<path class=\"edge idle\"", "</path>");
    assert_eq!((carried.len(), idle.len()), (1, 1));
    assert!(carried[0].contains(&format!("stroke=\"{RED}\"")));
    assert!(carried[0].contains("stroke-width=\"3\""));
    assert!(carried[0].contains("url(#arrow-carried)"));
    assert!(!carried[0].contains("stroke-dasharray"));
    assert!(idle[0].contains("stroke-dasharray") && idle[0].contains("url(#arrow-idle)"));
    assert!(html.contains("<marker id=\"arrow-carried\""));
    let lags = pieces(&html, "<text class=\"lag\"", "</text>");
    assert_eq!(lags.len(), 1);
    assert!(lags[0].ends_with(">+7.5s</text>"), "{}", lags[0]);
}

#[test]
fn graph_columns_follow_depth() {
    let r = sample_report();
    let v = View::new(&r);
    assert_eq!(v.depth_of("kinesis"), 0);
    assert_eq!(v.depth_of("cognito"), 1);
    assert_eq!(v.depth_of("lambda"), 2);
    assert_eq!(v.order, ["kinesis", "cognito", "lambda"]);
    // A cycle terminates and stays bounded.
    let cyc = Report {
        cascade: vec![edge("a", "b", true, None), edge("b", "a", false, None)],
        ..minimal()
    };
    let v = View::new(&cyc);
    assert!(v.depth.values().all(|d| *d <= 1));
    // Services only the graph names are grey nodes, with no timeline row.
    let html = render(&cyc);
    assert_eq!(html.matches("<g class=\"node\"").count(), 2);
    assert!(html.contains(">no data</text>"));
    assert!(!html.contains("<g class=\"row\""));
}

#[test]
fn axis_ticks_show_both_clocks() {
    let r = Report {
        start_clock: "02:30:00".to_string(),
        time_scale: 360.0,
        wall_s: 60.0,
        timeline: BTreeMap::from([("kinesis".into(), vec![sample(0.0, Health::Serving, 0.0)])]),
        ..minimal()
    };
    let html = render(&r);
    let ticks = pieces(&html, "<g class=\"tick\">", "</g>");
    assert_eq!(ticks.len(), 7);
    let t10 = ticks
        .iter()
        .find(|t| t.contains(">+10s</text>"))
        .expect("tick at +10s");
    assert!(t10.contains(">03:30</text>"), "{t10}");
    assert!(ticks[0].contains(">+0s</text>") && ticks[0].contains(">02:30</text>"));
    let t60 = ticks
        .iter()
        .find(|t| t.contains(">+60s</text>"))
        .expect("tick at +60s");
    assert!(t60.contains(">08:30</text>"));
}

#[test]
fn clocks_read_in_incident_time() {
    let r = Report {
        start_clock: "23:30:00".to_string(),
        time_scale: 360.0,
        ..minimal()
    };
    let v = View::new(&r);
    assert_eq!(v.clock_at(10.0), "24:30");
    assert_eq!(v.both(Some(17.7)), "+17.7s · 25:16");
    assert_eq!(v.both(None), crate::clock::DASH);
    // Without a usable scale the wall clock stands alone.
    let bare = minimal();
    let v = View::new(&bare);
    assert_eq!(v.clock_at(10.0), crate::clock::DASH);
    assert_eq!(v.both(Some(5.0)), "+5s");
}

#[test]
fn header_shows_verdict_and_scale() {
    let html = render(&sample_report());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert!(html.contains(&format!("style=\"background:{RED}\">fail</span>")));
    assert!(html.contains("360x: one incident hour = 10 s wall"));
    assert!(html.contains("<b>seed</b>1125"));
    assert!(html.contains("02:30 → 06:30"));
    assert!(html.contains("<b>expectations held</b>1 of 2"));
    assert!(html.contains("<b>services impaired</b>2 of 3"));
    assert!(html.contains("✓ held") && html.contains("✗ not held"));
}

#[test]
fn tables_show_both_clocks() {
    let html = render(&sample_report());
    // Event without a clock gets a computed one: 02:30 + 5 s * 360 = 03:00.
    assert!(html.contains("<td class=\"t\">03:00</td>"));
    // Impact: wall and incident clock, durations in both, not recovered.
    assert!(html.contains("+5s · 03:00"));
    assert!(html.contains("25 s (2 h 30 min incident)"));
    assert!(html.contains("not recovered (≥ 27.5 s)"));
    assert!(html.contains("100%") && html.contains("1000 ms"));
    let kinds = pieces(&html, "<span class=\"kind\"", "</span>");
    assert_eq!(kinds.len(), 3);
    assert!(kinds[0].contains(super::style::BLUE) && kinds[0].ends_with(">step</span>"));
}

#[test]
fn minimal_reports_render() {
    let html = render(&minimal());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("</html>"));
    assert!(html.contains(crate::clock::DASH));
    assert!(html.contains("No timeline samples in the report."));
    assert!(html.contains("No events in the report."));

    // Nonsense numbers, self-loops, names the graph alone knows.
    let odd = Report {
        time_scale: f64::NAN,
        wall_s: -3.0,
        start_clock: "not a clock".to_string(),
        services: BTreeMap::from([(
            "a".into(),
            impact(
                Some(f64::NAN),
                Some(f64::INFINITY),
                "",
                f64::NAN,
                f64::INFINITY,
            ),
        )]),
        timeline: BTreeMap::from([
            ("a".into(), Vec::new()),
            (
                "k".into(),
                vec![
                    sample(1e300, Health::Down, f64::NAN),
                    sample(-5.0, Health::Serving, 7.0),
                    sample(f64::NAN, Health::Degraded, 0.5),
                ],
            ),
        ]),
        frontends: vec![fleet(f64::NAN, 0, 0, 0), fleet(0.0, 0, 0, 0)],
        cascade: vec![
            edge("a", "a", true, Some(f64::NAN)),
            edge("a", "zz", true, None),
        ],
        events: vec![event(f64::NAN, "", EventKind::Step, "")],
        ..minimal()
    };
    let html = render(&odd);
    assert!(html.contains("</html>"));
    assert!(
        !html.contains("NaN") && !html.contains("inf"),
        "a non-number leaked into the page"
    );
}

#[test]
fn each_stock_is_a_step_chart_against_its_capacity() {
    let html = render(&sample_report());
    let charts = pieces(&html, "<figure class=\"stock\"", "</figure>");
    assert_eq!(charts.len(), 2, "{charts:?}");
    let cognito = charts
        .iter()
        .find(|c| c.contains("data-stock=\"cognito/access-log buffer\""))
        .expect("the Cognito buffer's chart");
    // Full at +11s (level reached the capacity): said, and drawn red.
    assert!(cognito.contains("data-full=\"true\""), "{cognito}");
    assert!(cognito.contains("data-peak=\"1000\""), "{cognito}");
    assert!(cognito.contains("full</span> at +11s"), "{cognito}");
    assert_eq!(cognito.matches("class=\"capacity\"").count(), 1);
    let level = pieces(cognito, "<polyline class=\"level\"", "</polyline>");
    assert_eq!(level.len(), 1);
    assert!(level[0].contains(&format!("stroke=\"{RED}\"")));
    // Three samples held until the next one (the last until the run's end):
    // six points.
    let points = level[0]
        .split("points=\"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .unwrap_or_default();
    assert_eq!(points.split(' ').count(), 6, "{points}");
    // Cognito was first impaired at 12.5 s: its marker is on the chart.
    assert_eq!(cognito.matches("class=\"stock-impaired\"").count(), 1);
    // ECS reports no capacity and never filled: no dashed line, not red.
    let ecs = charts
        .iter()
        .find(|c| c.contains("data-stock=\"ecs/tasks in PROVISIONING\""))
        .expect("the ECS backlog's chart");
    assert!(ecs.contains("data-full=\"false\""));
    assert!(!ecs.contains("class=\"capacity\""));
    assert!(!ecs.contains("class=\"stock-impaired\""));
}

#[test]
fn a_report_without_stocks_has_no_stock_section_and_odd_samples_do_not_break_it() {
    let html = render(&minimal());
    assert!(!html.contains("id=\"stocks\""));
    let odd = Report {
        stocks: vec![
            stock(
                "cognito",
                "access-log buffer",
                &[(f64::NAN, 5.0, None), (3.0, f64::INFINITY, Some(f64::NAN))],
            ),
            stock(
                "lambda",
                "agent buffer",
                &[(2.0, 7.0, Some(10.0)), (1.0, 9.0, Some(10.0))],
            ),
        ],
        ..sample_report()
    };
    let html = render(&odd);
    // The Cognito series has no finite level: no chart. Lambda's second
    // sample goes back in time and is skipped.
    let charts = pieces(&html, "<figure class=\"stock\"", "</figure>");
    assert_eq!(charts.len(), 1, "{charts:?}");
    assert!(
        !charts[0].contains("NaN") && !charts[0].contains("inf"),
        "{}",
        charts[0]
    );
}
