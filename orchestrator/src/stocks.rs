//! The stocks of the cascade: every buffer and backlog a service fills
//! while its dependency fails (Cognito's access-log buffer, the Lambda
//! agent's bytes, EventBridge's undelivered events, ECS tasks waiting in
//! PROVISIONING, CloudWatch's local store and backfill) and the fleet's peer
//! threads against its kernel limit, read from one `status --json`
//! document. The live page charts them as they move and the report keeps
//! them sampled over the run, so both read the same levels.

use serde::{Deserialize, Serialize};

use crate::status::Status;

/// One buffer or backlog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stock {
    /// The service holding it.
    pub service: String,
    /// What it is.
    pub name: String,
    /// Its level now (summed over instances).
    pub level: f64,
    /// Its capacity, when the service reports one.
    pub capacity: Option<f64>,
    /// `bytes`, `events`, `tasks`, `threads`, `datapoints`.
    pub unit: String,
}

/// The stocks the page charts: (service, name, level gauge, capacity gauge, unit).
/// The level is the first of the `|`-separated gauges an instance reports.
const STOCKS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "cognito",
        "access-log buffer",
        "access_log_buffer_bytes|buffer_bytes",
        "buffer_capacity",
        "bytes",
    ),
    (
        "lambda",
        "agent buffer",
        "agent_buffer_bytes",
        // Unbounded in 2020 (`agent_buffer_max` reads "unbounded"): the
        // buffer's real ceiling is the host's memory budget.
        "agent_buffer_max|memory_budget",
        "bytes",
    ),
    (
        "lambda",
        "invocation memory",
        "invocation_bytes_in_use",
        "memory_budget",
        "bytes",
    ),
    (
        "eventbridge",
        "undelivered events",
        "pending_deliveries",
        "",
        "events",
    ),
    (
        "ecs",
        "tasks in PROVISIONING",
        "tasks_provisioning",
        "",
        "tasks",
    ),
    (
        "cloudwatch",
        "local store",
        "buffered_datapoints",
        "",
        "datapoints",
    ),
    (
        "cloudwatch",
        "backfilled (cumulative)",
        "backfilled_datapoints",
        "",
        "datapoints",
    ),
];

/// A gauge as a number (absent or not numeric: none).
fn num(info: &std::collections::BTreeMap<String, String>, key: &str) -> Option<f64> {
    key.split('|')
        .find_map(|k| info.get(k).and_then(|v| v.trim().parse::<f64>().ok()))
}

/// The stocks in `st`: the fleet's peer threads against its limit, then
/// each service buffer its instances report.
pub fn stocks(st: &Status) -> Vec<Stock> {
    let mut out = Vec::new();
    let main: Vec<_> = st.main_fleet().collect();
    if !main.is_empty() {
        let peer: u64 = main.iter().map(|f| u64::from(f.peer_threads)).sum();
        let room: Option<u64> = main
            .iter()
            .map(|f| {
                f.thread_limit
                    .map(|l| l.saturating_sub(u64::from(f.base_threads)))
            })
            .sum();
        out.push(Stock {
            service: "kinesis".into(),
            name: "peer threads".into(),
            level: peer as f64,
            capacity: room.map(|r| r as f64),
            unit: "threads".into(),
        });
    }
    for (svc, name, level, cap, unit) in STOCKS {
        let Some(s) = st.service(svc) else { continue };
        let levels: Vec<f64> = s
            .instances
            .iter()
            .filter_map(|i| num(&i.info, level))
            .collect();
        if levels.is_empty() {
            continue;
        }
        let caps: Vec<f64> = if cap.is_empty() {
            vec![]
        } else {
            s.instances
                .iter()
                .filter_map(|i| num(&i.info, cap))
                .collect()
        };
        out.push(Stock {
            service: (*svc).into(),
            name: (*name).into(),
            level: levels.iter().sum(),
            capacity: (!caps.is_empty() && caps.iter().any(|c| *c > 0.0))
                .then(|| caps.iter().sum()),
            unit: (*unit).into(),
        });
    }
    out
}

/// The share of its capacity at which a stock counts as full: a buffer
/// refuses the next record before its last byte is used (Cognito's 32 KiB
/// access-log buffer stops at about 32,100 bytes: the next record does not
/// fit), so "full" means within 5 % of the capacity.
pub const FULL_FRACTION: f64 = 0.95;

/// Whether `level` has reached `capacity` (see [`FULL_FRACTION`]).
pub fn is_full(level: f64, capacity: Option<f64>) -> bool {
    capacity.is_some_and(|c| c > 0.0 && level >= c * FULL_FRACTION)
}

/// A level for a label: `3.2M`, `41k`, `870`.
pub fn fmt_level(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
