//! The report's visual vocabulary: one colour per health, shard-map count,
//! verdict and journal entry kind, and the page's constant CSS. Public so a
//! live dashboard can speak the same colours as the report.

use crate::engine::report::EventKind;
use crate::state::{Health, Verdict};

/// Serving, pass, a ready shard map, a service never impaired.
pub const GREEN: &str = "#2f9e44";
/// Degraded, aborted, a rollback.
pub const AMBER: &str = "#e8a317";
/// Down, fail, an unusable shard map, a service impaired, an edge that
/// carried the failure.
pub const RED: &str = "#d63a3a";
/// No data.
pub const GREY: &str = "#c8ccd2";
/// Scenario steps, the incident clock, a shard map still building.
pub const BLUE: &str = "#4c7fe0";
/// Text, axes, markers.
pub const INK: &str = "#1f2933";
/// Secondary text and journal entries that change nothing.
pub const MUTED: &str = "#6b7280";
/// An edge that did not carry the failure.
pub const IDLE_EDGE: &str = "#9aa0a6";
/// The error-rate line over the health bands.
pub const ERROR_LINE: &str = "#111827";
/// The recovered marker.
pub const RECOVERED: &str = "#0b5d1e";
/// The background of the front-end row.
pub const FLEET_BACKGROUND: &str = "#eceef1";

/// The colour of a service's health.
pub fn health_color(h: Health) -> &'static str {
    match h {
        Health::Serving => GREEN,
        Health::Degraded => AMBER,
        Health::Down => RED,
    }
}

/// The colour of a run's verdict.
pub fn verdict_color(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => GREEN,
        Verdict::Fail => RED,
        Verdict::Aborted => AMBER,
    }
}

/// The colour of a journal entry's kind: failures red, steps blue,
/// rollbacks amber, the rest muted.
pub fn event_color(k: EventKind) -> &'static str {
    match k {
        EventKind::Step => BLUE,
        EventKind::ExpectHeld | EventKind::SteadyAfter => GREEN,
        EventKind::ExpectFailed
        | EventKind::StepFailed
        | EventKind::RollbackFailed
        | EventKind::Error
        | EventKind::Abort => RED,
        EventKind::Rollback | EventKind::Interrupted | EventKind::Stopped => AMBER,
        EventKind::Verdict => INK,
        EventKind::Start
        | EventKind::Up
        | EventKind::Steady
        | EventKind::Restart
        | EventKind::Alarm
        | EventKind::ShardMaps
        | EventKind::Health
        | EventKind::Attached
        | EventKind::Warning => MUTED,
    }
}

/// The colours of the front-end row's stacked counts: ready, building,
/// unusable.
pub const FLEET_COLORS: [&str; 3] = [GREEN, BLUE, RED];

/// The page's stylesheet (system fonts only: nothing is fetched).
pub const CSS: &str = "
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
.stocks{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px 20px}
figure.stock{margin:0}
figure.stock figcaption{font-size:12.5px;color:#374151;margin-bottom:3px}
";
