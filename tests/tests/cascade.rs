//! The cascade, end to end, with every service as its own process: nothing
//! is injected; only capacity is added to the Kinesis fleet until the kernel
//! refuses a peer thread. Each downstream service must then fail through its
//! own mechanism, the remediations must hold, and recovery must drain the
//! backlogs. A control run shows none of the symptoms.

use std::time::Duration;

use cascade::state::{Health, MapState};
use cascade::topology::Service;
use cascade_proto::cloudwatch::cloud_watch_client::CloudWatchClient;
use cascade_proto::cloudwatch::{GetMetricDataRequest, MetricDatum, PutMetricDataRequest};
use cascade_tests::status::{
    all_maps, all_serving, gauge_u64, pretty, service, try_gauge_u64, try_service,
};
use cascade_tests::{Fleet, describe, learn_base_threads};

const SETTLE: Duration = Duration::from_secs(60);

/// Front-ends start at 3 and the limit fits 4 peers: adding 2 tips the fleet.
fn up(tag: &str, extra: &[&str]) -> Fleet {
    let base = learn_base_threads(&format!("{tag}-base"), SETTLE);
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

fn tip(fleet: &Fleet) {
    fleet.ok(&["add-capacity", "2"]);
    fleet.wait_status("every shard-map unusable", SETTLE, |s| {
        s.main_fleet().count() == 5 && s.count_maps(MapState::Unusable) == 5
    });
}

fn recover(fleet: &Fleet) {
    fleet.ok(&["remove-capacity", "2"]);
    fleet.ok(&["restart-frontends", "--batch", "3"]);
    fleet.wait_status("every shard-map ready again", SETTLE, |s| {
        all_maps(s, 3, MapState::Ready)
    });
}

#[test]
fn thread_exhaustion_cascades_through_every_service_in_bug_mode_and_recovery_drains_the_backlogs() {
    let fleet = up("bug", &[]);
    fleet.wait_status("every service serving before the tip", SETTLE, all_serving);
    let posted = fleet.ok(&["shd", "post", "All services operating normally"]);
    assert!(posted.contains("primary"), "{posted}");
    let no_decisions_before = gauge_u64(&fleet.status(), "ecs", "no_decisions");

    tip(&fleet);

    // Kinesis itself.
    let k = fleet.probe("kinesis", 4);
    assert_eq!(k.ok, 0, "Kinesis fails: {k:?}");
    // Cognito: handlers block on the full access-log buffer -> stalls and errors.
    fleet.wait_until(
        "Cognito impaired (handlers blocked on its buffer)",
        SETTLE,
        |s| {
            Ok(try_service(s, "cognito")?.health != Health::Serving
                && try_gauge_u64(s, "cognito", "blocked_handlers")? > 0)
        },
    );
    let c = fleet.probe("cognito", 3);
    assert!(c.failed >= 2, "sign-ins fail: {c:?}");
    assert!(
        c.failed_with("DEADLINE_EXCEEDED") > 0 || c.failed_with("UNAVAILABLE") > 0,
        "stalls end at the deadline: {c:?}"
    );
    assert!(
        c.p99_ms >= 900.0,
        "sign-ins stall up to the deadline: {c:?}"
    );
    // CloudWatch: puts fail and alarms go to INSUFFICIENT_DATA.
    let cw = fleet.probe("cloudwatch", 3);
    assert_eq!(cw.ok, 0, "PutMetricData fails: {cw:?}");
    fleet.wait_until("the ECS scaling alarm at INSUFFICIENT_DATA", SETTLE, |s| {
        Ok(try_gauge_u64(s, "cloudwatch", "alarms_insufficient")? > 0)
    });
    // Lambda: the metrics agent's buffer crowds invocations out.
    fleet.wait_until(
        "Lambda refusing invocations (memory contention)",
        SETTLE,
        |s| Ok(try_gauge_u64(s, "lambda", "invocations_refused")? > 0),
    );
    let l = fleet.probe("lambda", 3);
    assert!(
        l.failed_with("RESOURCE_EXHAUSTED") >= 1,
        "invocations fail for memory: {l:?}"
    );
    // EventBridge: PutEvents errors; delivery stops.
    let e = fleet.probe("eventbridge", 3);
    assert_eq!(e.ok, 0, "PutEvents fails: {e:?}");
    // ECS: tasks stuck in PROVISIONING; scaling decisions not taken.
    let ecs = fleet.probe("ecs", 1);
    assert_eq!(ecs.ok, 0, "a launched task does not reach RUNNING: {ecs:?}");
    fleet.wait_until("ECS scaling without decisions", SETTLE, |s| {
        Ok(
            try_gauge_u64(s, "ecs", "no_decisions")? > no_decisions_before
                && try_gauge_u64(s, "ecs", "tasks_provisioning")? > 0,
        )
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

    recover(&fleet);
    let s = fleet.wait_until(
        "EventBridge backlog delivered and ECS tasks progressing",
        SETTLE,
        |s| {
            Ok(try_gauge_u64(s, "eventbridge", "pending_deliveries")? == 0
                && try_gauge_u64(s, "ecs", "tasks_provisioning")? == 0
                && try_gauge_u64(s, "ecs", "outbox_pending")? == 0)
        },
    );
    assert!(
        gauge_u64(&s, "eventbridge", "max_delivery_latency_ms") > 1000,
        "delivery was delayed: {:?}",
        service(&s, "eventbridge")
    );
    fleet.wait_status("every service serving after recovery", SETTLE, all_serving);
    assert_eq!(fleet.probe("ecs", 2).ok, 2);
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
    fleet.wait_status("every service serving", SETTLE, all_serving);
    tip(&fleet);
    let s = fleet.wait_until(
        "Cognito shedding and Lambda's agent dropping while CloudWatch fails",
        SETTLE,
        |s| {
            Ok(try_gauge_u64(s, "cognito", "shed_records")? > 0
                && try_gauge_u64(s, "lambda", "dropped_bytes")? > 0)
        },
    );
    assert_eq!(
        fleet.probe("cloudwatch", 2).ok,
        0,
        "CloudWatch itself is down here: {:?}",
        service(&s, "cloudwatch")
    );
    for svc in ["cognito", "lambda"] {
        let p = fleet.probe(svc, 5);
        assert_eq!(p.ok, 5, "{svc} keeps serving with its fix: {p:?}");
    }
    let s = fleet.status();
    assert_eq!(
        gauge_u64(&s, "lambda", "invocations_refused"),
        0,
        "no memory contention: {:?}",
        service(&s, "lambda")
    );
    assert_eq!(
        gauge_u64(&s, "cognito", "blocked_handlers"),
        0,
        "{:?}",
        service(&s, "cognito")
    );
    for svc in ["cognito", "lambda"] {
        assert_eq!(
            service(&s, svc).health,
            Health::Serving,
            "customer traffic sees {svc} healthy: {:?}",
            service(&s, svc)
        );
    }
}

#[test]
fn cloudwatch_local_buffer_keeps_alarms_evaluating_and_backfills_exactly_once() {
    // At 3600x the store's default retention (3 incident hours) is 3 wall
    // seconds, shorter than this test's outage: keep 10 incident days so that
    // nothing buffered expires and every datapoint must come back.
    let fleet = up(
        "localbuf",
        &[
            "--cloudwatch-local-buffer",
            "--service-arg",
            "cloudwatch:--local-buffer-retention=864000",
        ],
    );
    fleet.wait_status("every service serving", SETTLE, all_serving);
    tip(&fleet);
    let s = fleet.wait_until(
        "CloudWatch buffering locally while Kinesis is down",
        SETTLE,
        |s| Ok(try_gauge_u64(s, "cloudwatch", "buffered_datapoints")? > 0),
    );
    let p = fleet.probe("cloudwatch", 5);
    assert_eq!(p.ok, 5, "PutMetricData keeps working: {p:?}");
    assert_eq!(
        fleet.probe("kinesis", 2).ok,
        0,
        "Kinesis is down all the same"
    );
    // Alarms keep evaluating from the local store (the ECS scaling alarm has data).
    let s2 = fleet.wait_until("alarms evaluating from the local buffer", SETTLE, |s| {
        Ok(try_gauge_u64(s, "cloudwatch", "alarms_insufficient")? == 0
            && try_gauge_u64(s, "cloudwatch", "buffered_datapoints")? > 0)
    });
    let buffered = gauge_u64(&s2, "cloudwatch", "buffered_datapoints");
    assert!(buffered > 0, "{:?}", service(&s2, "cloudwatch"));

    // Datapoints of our own, put while Kinesis is down, must all come back exactly once.
    let addr = service(&s, "cloudwatch").addr.clone();
    assert!(!addr.is_empty(), "{:?}", service(&s, "cloudwatch"));
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
    let s = fleet.wait_until("the local buffer backfilled", SETTLE, |s| {
        Ok(try_gauge_u64(s, "cloudwatch", "buffered_datapoints")? == 0)
    });
    assert_eq!(
        gauge_u64(&s, "cloudwatch", "expired_datapoints"),
        0,
        "nothing expired within the retention: {:?}",
        service(&s, "cloudwatch")
    );
    assert!(
        gauge_u64(&s, "cloudwatch", "backfilled_datapoints") >= buffered + 20,
        "{:?}",
        service(&s, "cloudwatch")
    );
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
    fleet.wait_status("every service serving", SETTLE, all_serving);
    let s = fleet.wait_until("alarms evaluated with data", SETTLE, |s| {
        Ok(try_gauge_u64(s, "cloudwatch", "datapoints_ingested")? > 0
            && try_gauge_u64(s, "cloudwatch", "alarms_insufficient")? == 0)
    });
    for svc in Service::ALL.map(Service::name) {
        let p = fleet.probe(svc, 3);
        assert_eq!(p.ok, 3, "{svc} works in a healthy fleet: {p:?}");
    }
    assert_eq!(gauge_u64(&s, "cognito", "blocked_handlers"), 0);
    assert_eq!(gauge_u64(&s, "lambda", "invocations_refused"), 0);
    assert!(fleet.ok(&["shd", "post", "All good"]).contains("primary"));
    let s = fleet.status();
    assert!(all_serving(&s), "still healthy: {}", pretty(&s));
}
