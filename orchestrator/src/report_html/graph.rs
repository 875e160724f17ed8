//! The cascade graph: services in columns by dependency depth, one arrow
//! per dependency. An arrow is thick and red, labelled with the lag, where
//! the report says it carried the failure; grey and dashed where it did
//! not. Nodes are red when the service was impaired, grey without data.

use std::collections::BTreeMap;

use maud::{Markup, html};

use super::style::{GREEN, GREY, IDLE_EDGE, INK, RED};
use super::view::{SVG_NS, View, clip, px};
use crate::clock::fmt_wall;
use crate::engine::report::CascadeEdge;

const NODE_W: f64 = 150.0;
const NODE_H: f64 = 42.0;
/// From one column's left edge to the next one's.
const COL_W: f64 = 250.0;
/// From one node's top to the next one's in a column.
const ROW_SPACING: f64 = 64.0;
const PAD: f64 = 30.0;

/// The cascade section.
pub(super) fn section(v: &View) -> Markup {
    html! {
        section #cascade {
            h2 { "Cascade" }
            @if v.order.is_empty() {
                p.empty { "No services or dependency edges in the report." }
            } @else {
                p.note {
                    "Columns by dependency depth. Thick red arrows carried the failure (label: lag \
                     after the upstream was impaired); grey dashed arrows did not."
                }
                (graph(v))
                (legend())
            }
        }
    }
}

fn graph(v: &View) -> Markup {
    let layout = Layout::new(v);
    // Idle edges under carried ones, labels over every edge, nodes on top.
    let mut edges: Vec<&CascadeEdge> = v.report.cascade.iter().filter(|e| e.from != e.to).collect();
    edges.sort_by_key(|e| e.carried);
    let shapes: Vec<EdgeShape> = edges.iter().map(|e| layout.edge(e)).collect();
    let (w, h) = (px(layout.width), px(layout.height));
    html! {
        svg xmlns=(SVG_NS) viewBox={ "0 0 " (w) " " (h) } width=(w) height=(h)
            style={ "max-width:" (w) "px;margin:0 auto" } role="img" aria-label="cascade graph" class="cascade" {
            (arrow_heads())
            @for (e, shape) in edges.iter().zip(&shapes) {
                (edge(e, shape))
            }
            @for (e, shape) in edges.iter().zip(&shapes) {
                @if e.carried {
                    @let (x, y) = shape.label_at;
                    text class="lag" x=(x) y=(y) text-anchor="middle" font-size="12" font-weight="700"
                        fill=(RED) stroke="#fff" stroke-width="4" paint-order="stroke" {
                        (e.lag_s.filter(|l| l.is_finite()).map_or_else(|| "carried".to_string(), fmt_wall))
                    }
                }
            }
            @for name in &v.order {
                (node(v, &layout, name))
            }
        }
    }
}

fn arrow_heads() -> Markup {
    html! {
        defs {
            marker id="arrow-carried" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse"
                markerWidth="12" markerHeight="12" orient="auto" {
                path d="M0,0 L10,5 L0,10 z" fill=(RED) {}
            }
            marker id="arrow-idle" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse"
                markerWidth="9" markerHeight="9" orient="auto" {
                path d="M0,0 L10,5 L0,10 z" fill=(IDLE_EDGE) {}
            }
        }
    }
}

fn edge(e: &CascadeEdge, shape: &EdgeShape) -> Markup {
    let tip = match (e.carried, e.lag_s.filter(|l| l.is_finite())) {
        (true, Some(l)) => format!(
            "carried the failure, {} after {} was impaired",
            fmt_wall(l),
            e.from
        ),
        (true, None) => "carried the failure".to_string(),
        (false, _) => "did not carry the failure".to_string(),
    };
    html! {
        @if e.carried {
            path class="edge carried" d=(shape.d) fill="none" stroke=(RED) stroke-width="3"
                marker-end="url(#arrow-carried)" {
                title { (e.from) " → " (e.to) ": " (tip) }
            }
        } @else {
            path class="edge idle" d=(shape.d) fill="none" stroke=(IDLE_EDGE) stroke-width="1.3"
                stroke-dasharray="6 4" marker-end="url(#arrow-idle)" {
                title { (e.from) " → " (e.to) ": " (tip) }
            }
        }
    }
}

fn node(v: &View, layout: &Layout, name: &str) -> Markup {
    let (x, y) = layout.node_xy(name);
    let svc = v.service(name);
    let (fill, sub) = match (svc, v.impaired_at(name)) {
        (_, Some(t)) => (RED, format!("impaired {}", v.both(Some(t)))),
        (Some(_), None) => (GREEN, "not impaired".to_string()),
        (None, None) => (GREY, "no data".to_string()),
    };
    let ink = if fill == GREY { INK } else { "#fff" };
    let symptom = svc.map_or("", |s| s.symptom.trim());
    html! {
        g class="node" data-service=(name) {
            title {
                (name) ": " (sub)
                @if !symptom.is_empty() { " (" (symptom) ")" }
            }
            rect x=(px(x)) y=(px(y)) width=(NODE_W) height=(NODE_H) rx="7" fill=(fill) {}
            text x=(px(x + NODE_W / 2.0)) y=(px(y + 17.0)) text-anchor="middle" font-size="13"
                font-weight="600" fill=(ink) { (clip(name, 20)) }
            text x=(px(x + NODE_W / 2.0)) y=(px(y + 33.0)) text-anchor="middle" font-size="10.5"
                fill=(ink) { (sub) }
        }
    }
}

fn legend() -> Markup {
    let swatch = |c: &str| html! { i.sw style={ "background:" (c) } {} };
    html! {
        div.legend {
            span { (swatch(RED)) "impaired" }
            span { (swatch(GREEN)) "not impaired" }
            span { (swatch(GREY)) "no data" }
            span style={ "color:" (RED) } { b { "━━▶" } " carried the failure (+lag)" }
            span style={ "color:" (IDLE_EDGE) } { "╌╌▶ did not carry it" }
        }
    }
}

// ---------------------------------------------------------------- geometry

/// Where every node sits: columns by depth (empty depths compressed),
/// each column ordered by its nodes' parents and centred vertically.
struct Layout<'a> {
    /// Each service's (column, row).
    pos: BTreeMap<&'a str, (usize, usize)>,
    /// How many nodes each column holds.
    col_len: Vec<usize>,
    max_rows: usize,
    width: f64,
    height: f64,
    /// The x of the first column (the graph is centred).
    left: f64,
}

/// An edge's path and where its lag label goes.
struct EdgeShape {
    /// The SVG path: a horizontal S-curve between the two nodes.
    d: String,
    /// The curve's midpoint, a little above.
    label_at: (f64, f64),
}

impl<'a> Layout<'a> {
    fn new(v: &View<'a>) -> Self {
        let mut levels: Vec<usize> = v.depth.values().copied().collect();
        levels.sort_unstable();
        levels.dedup();
        let mut pos: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut col_len = Vec::with_capacity(levels.len());
        for (ci, lv) in levels.iter().enumerate() {
            // A node sits level with the mean row of its parents; roots last.
            let mut members: Vec<(f64, &str)> = v
                .order
                .iter()
                .filter(|n| v.depth_of(n) == *lv)
                .map(|n| (mean_parent_row(v, &pos, n), *n))
                .collect();
            members.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            col_len.push(members.len());
            for (ri, (_, n)) in members.into_iter().enumerate() {
                pos.insert(n, (ci, ri));
            }
        }
        let cols = col_len.len().max(1) as f64;
        let max_rows = col_len.iter().copied().max().unwrap_or(1).max(1);
        let inner = (cols - 1.0) * COL_W + NODE_W;
        let width = (PAD * 2.0 + inner).max(600.0);
        Layout {
            pos,
            col_len,
            max_rows,
            width,
            height: PAD * 2.0 + (max_rows as f64 - 1.0) * ROW_SPACING + NODE_H,
            left: (width - inner) / 2.0,
        }
    }

    /// The top-left corner of a service's node.
    fn node_xy(&self, name: &str) -> (f64, f64) {
        let (ci, ri) = self.pos.get(name).copied().unwrap_or((0, 0));
        let rows = self.col_len.get(ci).copied().unwrap_or(1) as f64;
        let offset = (self.max_rows as f64 - rows) * ROW_SPACING / 2.0;
        (
            self.left + ci as f64 * COL_W,
            PAD + offset + ri as f64 * ROW_SPACING,
        )
    }

    /// From the upstream's right side to the downstream's left side.
    fn edge(&self, e: &CascadeEdge) -> EdgeShape {
        let (fx, fy) = self.node_xy(&e.from);
        let (tx, ty) = self.node_xy(&e.to);
        let (x1, y1) = (px(fx + NODE_W), px(fy + NODE_H / 2.0));
        let (x2, y2) = (px(tx - 2.0), px(ty + NODE_H / 2.0));
        let bend = ((x2 - x1).abs() / 2.0).max(60.0);
        let (c1x, c2x) = (px(x1 + bend), px(x2 - bend));
        // The cubic Bézier at t = 1/2.
        let mx = (x1 + 3.0 * c1x + 3.0 * c2x + x2) / 8.0;
        let my = (y1 + y2) / 2.0;
        EdgeShape {
            d: format!("M{x1},{y1} C{c1x},{y1} {c2x},{y2} {x2},{y2}"),
            label_at: (px(mx), px(my - 5.0)),
        }
    }
}

/// The mean row of a service's parents already placed; roots sort last.
fn mean_parent_row(v: &View, pos: &BTreeMap<&str, (usize, usize)>, name: &str) -> f64 {
    let rows: Vec<f64> = v
        .report
        .cascade
        .iter()
        .filter(|e| e.to == name)
        .filter_map(|e| pos.get(e.from.as_str()))
        .map(|p| p.1 as f64)
        .collect();
    if rows.is_empty() {
        f64::MAX
    } else {
        rows.iter().sum::<f64>() / rows.len() as f64
    }
}
