//! The cascade, end to end, with every service as its own process: nothing
//! is injected; only capacity is added to the Kinesis fleet until the kernel
//! refuses a peer thread. Each downstream service must then fail through its
//! own mechanism, the remediations must hold, and recovery must drain the
//! backlogs. A control run shows none of the symptoms.

use std::time::Duration;

use cascade_proto::cloudwatch::cloud_watch_client::CloudWatchClient;
use cascade_proto::cloudwatch::{GetMetricDataRequest, MetricDatum, PutMetricDataRequest};
use cascade_tests::{Fleet, describe};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(60);

/// Front-ends start at 3 and the limit fits 4 peers: adding 2 tips the fleet.
fn up(tag: &str, extra: &[&str]) -> Fleet {
    let probe = Fleet::up(
        &format!("{tag}-base"),
        &[
            "--services",
            "kinesis",
            "--frontends",
            "1",
            "--thread-limit",
            "64",
            "--traffic-rate",
            "0",
        ],
    );
    let s = probe.wait_status("one front-end", SETTLE, |s| {
        Fleet::frontends(s)
            .iter()
            .all(|f| f["shard_map"] == "ready")
    });
    let base = Fleet::frontends(&s)[0]["base_threads"]
        .as_u64()
        .expect("base_threads");
    drop(probe);
    let limit = (base + 3).to_string();
    let mut args = vec![
        "--frontends",
        "3",
        "--thread-limit",
        &limit,
        "--time-scale",
        "3600",
        // The calibration below (buffers filling within seconds) is for
        // 5 customer calls a second to each service.
        "--traffic-rate",
        "5",
        // Lambda's host model is small so its agent buffer crowds invocations out within seconds.
        "--service-arg",
        "lambda:--memory-budget=5242880",
        "--service-arg",
        "lambda:--invocation-memory=2097152",
        "--service-arg",
        "lambda:--log-bytes-per-invocation=131072",
        "--service-arg",
        "cognito:--access-log-buffer-bytes=8192",
    ];
    args.extend_from_slice(extra);
    Fleet::up(tag, &args)
}

fn probe(fleet: &Fleet, svc: &str, count: u32) -> Value {
    let out = fleet.ok(&["probe", svc, "--count", &count.to_string(), "--json"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("probe {svc} JSON: {e}: {out}"))
}

fn service<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["services"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in status: {s}"))
}

fn info(s: &Value, svc: &str, key: &str) -> String {
    service(s, svc)["instances"][0]["info"][key]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn info_u64(s: &Value, svc: &str, key: &str) -> u64 {
    info(s, svc, key).parse().unwrap_or(0)
}

fn all_healthy(s: &Value) -> bool {
    s["services"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|x| x["health"] == "serving")
}

fn tip(fleet: &Fleet) {
    fleet.ok(&["add-capacity", "2"]);
    fleet.wait_status("every shard-map unusable", SETTLE, |s| {
        let f: Vec<Value> = Fleet::frontends(s)
            .into_iter()
            .filter(|f| f["fleet"] == "")
            .collect();
        f.len() == 5 && f.iter().all(|x| x["shard_map"] == "unusable")
    });
}

fn recover(fleet: &Fleet) {
    fleet.ok(&["remove-capacity", "2"]);
    fleet.ok(&["restart-frontends", "--batch", "3"]);
    fleet.wait_status("every shard-map ready again", SETTLE, |s| {
        Fleet::frontends(s)
            .iter()
            .all(|f| f["shard_map"] == "ready")
    });
}

#[test]
fn thread_exhaustion_cascades_through_every_service_in_bug_mode_and_recovery_drains_the_backlogs() {
    let fleet = up("bug", &[]);
    fleet.wait_status("every service serving before the tip", SETTLE, all_healthy);
    let posted = fleet.ok(&["shd", "post", "All services operating normally"]);
    assert!(posted.contains("primary"), "{posted}");
    let no_decisions_before = info_u64(&fleet.status(), "ecs", "no_decisions");

    tip(&fleet);

    // Kinesis itself.
    let k = probe(&fleet, "kinesis", 4);
    assert_eq!(k["ok"], 0, "Kinesis fails: {k}");
    // Cognito: handlers block on the full access-log buffer -> stalls and errors.
    let s = fleet.wait_status(
        "Cognito impaired (handlers blocked on its buffer)",
        SETTLE,
        |s| {
            service(s, "cognito")["health"] != "serving"
                && info_u64(s, "cognito", "blocked_handlers") > 0
        },
    );
    let c = probe(&fleet, "cognito", 3);
    assert!(c["failed"].as_u64() >= Some(2), "sign-ins fail: {c}");
    assert!(
        c["errors"]["DEADLINE_EXCEEDED"].as_u64().is_some()
            || c["errors"]["UNAVAILABLE"].as_u64().is_some(),
        "stalls end at the deadline: {c}"
    );
    assert!(
        c["p99_ms"].as_f64() >= Some(900.0),
        "sign-ins stall up to the deadline: {c}"
    );
    // CloudWatch: puts fail and alarms go to INSUFFICIENT_DATA.
    let cw = probe(&fleet, "cloudwatch", 3);
    assert_eq!(cw["ok"], 0, "PutMetricData fails: {cw}");
    fleet.wait_status("the ECS scaling alarm at INSUFFICIENT_DATA", SETTLE, |s| {
        info_u64(s, "cloudwatch", "alarms_insufficient") > 0
    });
    // Lambda: the metrics agent's buffer crowds invocations out.
    fleet.wait_status(
        "Lambda refusing invocations (memory contention)",
        SETTLE,
        |s| info_u64(s, "lambda", "invocations_refused") > 0,
    );
    let l = probe(&fleet, "lambda", 3);
    assert!(
        l["errors"]["RESOURCE_EXHAUSTED"].as_u64() >= Some(1),
        "invocations fail for memory: {l}"
    );
    // EventBridge: PutEvents errors; delivery stops.
    let e = probe(&fleet, "eventbridge", 3);
    assert_eq!(e["ok"], 0, "PutEvents fails: {e}");
    // ECS: tasks stuck in PROVISIONING; scaling decisions not taken.
    let ecs = probe(&fleet, "ecs", 1);
    assert_eq!(
        ecs["ok"], 0,
        "a launched task does not reach RUNNING: {ecs}"
    );
    let s2 = fleet.wait_status("ECS scaling without decisions", SETTLE, |s| {
        info_u64(s, "ecs", "no_decisions") > no_decisions_before
            && info_u64(s, "ecs", "tasks_provisioning") > 0
    });
    // The Service Health Dashboard: the primary tool fails, the backup works.
    let primary = fleet.run(&["shd", "post", "We are investigating increased error rates"]);
    assert!(
        !primary.status.success(),
        "the primary SHD tool needs Cognito:\n{}",
        describe(&primary)
    );
    let backup = fleet.ok(&[
        "shd",
        "post",
        "--backup",
        "We are investigating increased error rates",
    ]);
    assert!(backup.contains("backup"), "{backup}");
    let list = fleet.ok(&["shd", "list"]);
    assert!(
        list.contains("[backup]") && list.contains("investigating"),
        "{list}"
    );
    drop((s, s2));

    recover(&fleet);
    let s = fleet.wait_status(
        "EventBridge backlog delivered and ECS tasks progressing",
        SETTLE,
        |s| {
            info_u64(s, "eventbridge", "pending_deliveries") == 0
                && info_u64(s, "ecs", "tasks_provisioning") == 0
                && info_u64(s, "ecs", "outbox_pending") == 0
        },
    );
    assert!(
        info_u64(&s, "eventbridge", "max_delivery_latency_ms") > 1000,
        "delivery was delayed: {}",
        service(&s, "eventbridge")
    );
    fleet.wait_status("every service serving after recovery", SETTLE, all_healthy);
    assert_eq!(probe(&fleet, "ecs", 2)["ok"], 2);
    assert!(fleet.ok(&["shd", "post", "Recovered"]).contains("primary"));
}

#[test]
fn fixed_cognito_and_a_bounded_lambda_agent_keep_serving_through_the_exhaustion() {
    let fleet = up(
        "fixed",
        &[
            "--cognito-mode",
            "fixed",
            "--lambda-agent-buffer-max",
            "262144",
        ],
    );
    fleet.wait_status("every service serving", SETTLE, all_healthy);
    tip(&fleet);
    let s = fleet.wait_status(
        "Cognito shedding and Lambda's agent dropping while CloudWatch fails",
        SETTLE,
        |s| {
            info_u64(s, "cognito", "shed_records") > 0 && info_u64(s, "lambda", "dropped_bytes") > 0
        },
    );
    assert_eq!(
        probe(&fleet, "cloudwatch", 2)["ok"],
        0,
        "CloudWatch itself is down here: {}",
        service(&s, "cloudwatch")
    );
    for svc in ["cognito", "lambda"] {
        let p = probe(&fleet, svc, 5);
        assert_eq!(p["ok"], 5, "{svc} keeps serving with its fix: {p}");
    }
    let s = fleet.status();
    assert_eq!(
        info_u64(&s, "lambda", "invocations_refused"),
        0,
        "no memory contention: {}",
        service(&s, "lambda")
    );
    assert_eq!(
        info_u64(&s, "cognito", "blocked_handlers"),
        0,
        "{}",
        service(&s, "cognito")
    );
    for svc in ["cognito", "lambda"] {
        assert_eq!(
            service(&s, svc)["health"],
            "serving",
            "customer traffic sees {svc} healthy: {}",
            service(&s, svc)
        );
    }
}

#[test]
fn cloudwatch_local_buffer_keeps_alarms_evaluating_and_backfills_exactly_once() {
    let fleet = up("localbuf", &["--cloudwatch-local-buffer"]);
    fleet.wait_status("every service serving", SETTLE, all_healthy);
    tip(&fleet);
    let s = fleet.wait_status(
        "CloudWatch buffering locally while Kinesis is down",
        SETTLE,
        |s| info_u64(s, "cloudwatch", "buffered_datapoints") > 0,
    );
    let p = probe(&fleet, "cloudwatch", 5);
    assert_eq!(p["ok"], 5, "PutMetricData keeps working: {p}");
    assert_eq!(
        probe(&fleet, "kinesis", 2)["ok"],
        0,
        "Kinesis is down all the same"
    );
    // Alarms keep evaluating from the local store (the ECS scaling alarm has data).
    let s2 = fleet.wait_status("alarms evaluating from the local buffer", SETTLE, |s| {
        info_u64(s, "cloudwatch", "alarms_insufficient") == 0
            && info_u64(s, "cloudwatch", "buffered_datapoints") > 0
    });
    let buffered = info_u64(&s2, "cloudwatch", "buffered_datapoints");
    assert!(buffered > 0, "{}", service(&s, "cloudwatch"));

    // Datapoints of our own, put while Kinesis is down, must all come back exactly once.
    let addr = service(&s, "cloudwatch")["addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut cw = rt
        .block_on(async { CloudWatchClient::connect(format!("http://{addr}")).await })
        .expect("connect");
    for v in 0..20 {
        let via = rt
            .block_on(cw.put_metric_data(PutMetricDataRequest {
                namespace: "Test/Backfill".into(),
                metric_data: vec![MetricDatum {
                    metric_name: "Marker".into(),
                    value: f64::from(v),
                    timestamp_ms: 0,
                }],
            }))
            .expect("put during the outage")
            .into_inner()
            .accepted_via;
        assert_eq!(
            via, "local-buffer",
            "accepted into the local store while Kinesis is down"
        );
    }

    recover(&fleet);
    let s = fleet.wait_status("the local buffer backfilled", SETTLE, |s| {
        info_u64(s, "cloudwatch", "buffered_datapoints") == 0
    });
    assert!(info_u64(&s, "cloudwatch", "backfilled_datapoints") >= buffered + 20);
    let dps = rt
        .block_on(cw.get_metric_data(GetMetricDataRequest {
            namespace: "Test/Backfill".into(),
            metric_name: "Marker".into(),
            start_ms: 0,
            end_ms: 0,
        }))
        .expect("get")
        .into_inner()
        .datapoints;
    let mut values: Vec<f64> = dps.iter().map(|d| d.value).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(
        values,
        (0..20).map(f64::from).collect::<Vec<_>>(),
        "every datapoint exactly once: {dps:?}"
    );
    let mut ids: Vec<&str> = dps.iter().map(|d| d.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "distinct ids");
}

#[test]
fn control_run_a_healthy_fleet_shows_no_symptom() {
    let fleet = up("control", &[]);
    fleet.wait_status("every service serving", SETTLE, all_healthy);
    let s = fleet.wait_status("alarms evaluated with data", SETTLE, |s| {
        info_u64(s, "cloudwatch", "datapoints_ingested") > 0
            && info_u64(s, "cloudwatch", "alarms_insufficient") == 0
    });
    for svc in [
        "kinesis",
        "cognito",
        "cloudwatch",
        "lambda",
        "eventbridge",
        "ecs",
    ] {
        let p = probe(&fleet, svc, 3);
        assert_eq!(p["ok"], 3, "{svc} works in a healthy fleet: {p}");
    }
    assert_eq!(info_u64(&s, "cognito", "blocked_handlers"), 0);
    assert_eq!(info_u64(&s, "lambda", "invocations_refused"), 0);
    assert!(fleet.ok(&["shd", "post", "All good"]).contains("primary"));
    let s = fleet.status();
    assert!(all_healthy(&s), "still healthy: {s}");
}
