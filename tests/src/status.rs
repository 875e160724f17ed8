//! Typed reads of `cascade status --json` for the tests. Anything a test asks
//! for that the status does not carry (a service, its instance, a gauge) is
//! an error naming what is there instead, never a silent 0 or "". The
//! `try_` forms return that error for use inside waits; the others panic.

use std::path::Path;

use cascade::state::{Health, MapState};
use cascade::status::{InstanceEntry, ServiceEntry, Status};

/// The status as indented JSON, for failure messages.
pub fn pretty(s: &Status) -> String {
    serde_json::to_string_pretty(s).unwrap_or_else(|e| format!("{s:?} (not serializable: {e})"))
}

/// The service `name`, or which services the status does list.
pub fn try_service<'a>(s: &'a Status, name: &str) -> Result<&'a ServiceEntry, String> {
    s.service(name).ok_or_else(|| {
        let names: Vec<&str> = s.services.iter().map(|x| x.name.as_str()).collect();
        format!("no service {name} in the status; it lists {names:?}")
    })
}

/// The service `name`; panics naming the services the status does list.
pub fn service<'a>(s: &'a Status, name: &str) -> &'a ServiceEntry {
    try_service(s, name).unwrap_or_else(|e| panic!("{e}"))
}

/// The first instance of service `name`, which reports its gauges.
fn first_instance<'a>(s: &'a Status, name: &str) -> Result<&'a InstanceEntry, String> {
    let svc = try_service(s, name)?;
    svc.instances.first().ok_or_else(|| {
        format!(
            "service {name} has no instance in the status (health {}: {})",
            svc.health, svc.detail
        )
    })
}

/// Gauge `key` of service `svc`'s first instance, as it reports it; the
/// error names the gauges it does report (or why it reports none).
pub fn try_gauge<'a>(s: &'a Status, svc: &str, key: &str) -> Result<&'a str, String> {
    let inst = first_instance(s, svc)?;
    if let Some(v) = inst.info.get(key) {
        return Ok(v);
    }
    if !inst.reachable {
        let why = inst.info.get("error").map_or("", String::as_str);
        return Err(format!(
            "{} is unreachable ({why}), so it reports no gauge {key}",
            inst.name
        ));
    }
    let keys: Vec<&str> = inst.info.keys().map(String::as_str).collect();
    Err(format!(
        "{} reports no gauge {key}; it reports {keys:?}",
        inst.name
    ))
}

/// [`try_gauge`], or a panic with its error.
pub fn gauge<'a>(s: &'a Status, svc: &str, key: &str) -> &'a str {
    try_gauge(s, svc, key).unwrap_or_else(|e| panic!("{e}"))
}

/// A counter gauge as a number; a missing gauge or a value that is not a
/// whole number is an error.
pub fn try_gauge_u64(s: &Status, svc: &str, key: &str) -> Result<u64, String> {
    let v = try_gauge(s, svc, key)?;
    v.parse()
        .map_err(|_| format!("{svc} gauge {key} is {v:?}, not a whole number"))
}

/// [`try_gauge_u64`], or a panic with its error.
pub fn gauge_u64(s: &Status, svc: &str, key: &str) -> u64 {
    try_gauge_u64(s, svc, key).unwrap_or_else(|e| panic!("{e}"))
}

/// Every listed service is serving (and at least one is listed).
pub fn all_serving(s: &Status) -> bool {
    !s.services.is_empty() && s.services.iter().all(|x| x.health == Health::Serving)
}

/// Exactly `n` front-ends, each with its shard map in `state`.
pub fn all_maps(s: &Status, n: usize, state: MapState) -> bool {
    s.frontends.len() == n && s.frontends.iter().all(|f| f.shard_map == state)
}

/// Exactly `n` front-ends in a full mesh: every map ready, every one knowing
/// and holding a thread for each of the other `n - 1`.
pub fn full_mesh(s: &Status, n: usize) -> bool {
    let peers = n.saturating_sub(1) as u32;
    all_maps(s, n, MapState::Ready)
        && s.frontends
            .iter()
            .all(|f| f.peers_known == peers && f.peer_threads == peers)
}

/// The run's id (`cascade-<run-id>` names its cgroups): its run directory's name.
pub fn run_id(s: &Status) -> String {
    Path::new(&s.run_dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| panic!("run_dir {:?} names no run", s.run_dir))
}

/// Every pid the status names: front-ends, services, their instances.
pub fn pids(s: &Status) -> Vec<u32> {
    let mut v: Vec<u32> = s.frontends.iter().map(|f| f.pid).collect();
    for svc in &s.services {
        v.push(svc.pid);
        v.extend(svc.instances.iter().map(|i| i.pid));
    }
    v.retain(|p| *p > 0);
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status with one front-end and a cognito of one instance reporting `info`.
    fn status(reachable: bool, info: &str) -> Status {
        serde_json::from_str(&format!(
            r#"{{"mode":"local","thread_limit":{{"limit":16,"enforcement":"cgroup-v2"}},
            "frontends":[{{"name":"kinesis-frontend-0","pid":10,"threads":5,"base_threads":4,
              "thread_limit":16,"peers_known":0,"peers_total":0,"shard_map":"ready",
              "spawn_failures":0,"last_spawn_error":"","addr":"a","id":"fe-0","peer_threads":0,
              "detail":"","cgroup_pids_events_max":null}}],
            "services":[{{"name":"cognito","pid":11,"health":"serving","detail":"",
              "instances":[{{"name":"cognito-0","pid":11,"addr":"b","reachable":{reachable},
                "info":{info}}}]}}],
            "run_dir":"/tmp/runs/cascade-abc","time_scale":3600.0,"supervisor_pid":9}}"#
        ))
        .expect("a valid status")
    }

    #[test]
    fn gauges_read_as_reported() {
        let s = status(true, r#"{"blocked_handlers":"3","mode":"bug"}"#);
        assert_eq!(gauge(&s, "cognito", "mode"), "bug");
        assert_eq!(gauge_u64(&s, "cognito", "blocked_handlers"), 3);
        assert!(all_serving(&s) && full_mesh(&s, 1) && !full_mesh(&s, 2));
        assert_eq!(run_id(&s), "cascade-abc");
        assert_eq!(pids(&s), [10, 11]);
    }

    #[test]
    fn what_is_missing_is_named_never_read_as_zero() {
        let s = status(true, r#"{"blocked_handlers":"3","mode":"bug"}"#);
        let e = try_gauge_u64(&s, "cognito", "shed_records").expect_err("not reported");
        assert!(
            e.contains("cognito-0 reports no gauge shed_records") && e.contains("blocked_handlers"),
            "{e}"
        );
        let e = try_gauge_u64(&s, "lambda", "dropped_bytes").expect_err("no lambda");
        assert!(
            e.contains("no service lambda") && e.contains("cognito"),
            "{e}"
        );
        let e = try_gauge_u64(&s, "cognito", "mode").expect_err("not a number");
        assert!(e.contains("\"bug\""), "{e}");
        let down = status(false, r#"{"error":"connection refused"}"#);
        let e = try_gauge(&down, "cognito", "mode").expect_err("unreachable");
        assert!(e.contains("unreachable (connection refused)"), "{e}");
    }

    #[test]
    #[should_panic(expected = "reports no gauge nope")]
    fn the_plain_form_panics() {
        gauge_u64(&status(true, "{}"), "cognito", "nope");
    }
}
