//! In-process tests of CloudWatch's mechanism against a Kinesis double that
//! can be taken down and brought back: failed puts, alarms starved of data,
//! and the local buffer's durable, exactly-once backfill.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cascade_core::ServiceError;
use cascade_core::kinesis::{KinesisArgs, TimeArgs};
use cascade_core::serve::StatusSource;
use cascade_proto::cloudwatch as pb;
use parking_lot::Mutex;

use super::{CloudWatch, CloudWatchConfig};
use crate::localstore::LocalStore;
use crate::localstore::tests::{dir_path, test_dir};
use crate::pipeline::MetricsPipeline;

/// Kinesis as the pipeline sees it: an append-only log that can go down.
#[derive(Debug, Default)]
struct FakeKinesis {
    /// When true every call fails, as when the front-ends cannot route.
    down: AtomicBool,
    /// Every record put, in order.
    log: Mutex<Vec<Vec<u8>>>,
    /// How far the reader has read.
    read: Mutex<usize>,
}

impl FakeKinesis {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl MetricsPipeline for FakeKinesis {
    async fn put_records(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), ServiceError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(ServiceError::unavailable(
                "Kinesis: shard-map unusable (test double)",
            ));
        }
        self.log.lock().extend(records.into_iter().map(|(_, d)| d));
        Ok(())
    }

    async fn poll(&self) -> Result<Vec<Vec<u8>>, ServiceError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(ServiceError::unavailable(
                "Kinesis: shard-map unusable (test double)",
            ));
        }
        let log = self.log.lock();
        let mut read = self.read.lock();
        let out = log[*read..].to_vec();
        *read = log.len();
        Ok(out)
    }
}

fn config(dir: &str, local_buffer: bool) -> CloudWatchConfig {
    CloudWatchConfig {
        kinesis: KinesisArgs {
            kinesis_backend: "127.0.0.1:1".into(),
            kinesis_fleet: String::new(),
            kinesis_timeout: Duration::from_secs(1),
            kinesis_ready_only: true,
        },
        time: TimeArgs { time_scale: 360.0 },
        instance_id: "cw-test".into(),
        metrics_stream: "cloudwatch-metrics".into(),
        local_buffer,
        local_buffer_dir: test_dir(dir),
        local_buffer_retention: 10_800,
        alarm_interval: Duration::from_secs(1),
    }
}

fn service(dir: &str, local_buffer: bool) -> (CloudWatch, Arc<FakeKinesis>) {
    let kinesis = Arc::new(FakeKinesis::default());
    let cw = CloudWatch::new(config(dir, local_buffer), kinesis.clone()).expect("test store opens");
    (cw, kinesis)
}

fn put_req(metric: &str, values: &[(i64, f64)]) -> pb::PutMetricDataRequest {
    pb::PutMetricDataRequest {
        namespace: "AWS/Lambda".into(),
        metric_data: values
            .iter()
            .map(|&(timestamp_ms, value)| pb::MetricDatum {
                metric_name: metric.into(),
                value,
                timestamp_ms,
            })
            .collect(),
    }
}

fn get(cw: &CloudWatch, metric: &str) -> Vec<pb::Datapoint> {
    cw.get_metric_data(pb::GetMetricDataRequest {
        namespace: "AWS/Lambda".into(),
        metric_name: metric.into(),
        start_ms: 0,
        end_ms: 0,
    })
    .expect("valid range")
    .datapoints
}

fn info(cw: &CloudWatch, key: &str) -> String {
    cw.status().info.get(key).cloned().unwrap_or_default()
}

fn alarm_state(cw: &CloudWatch, name: &str) -> pb::Alarm {
    cw.describe_alarms(pb::DescribeAlarmsRequest {
        alarm_names: vec![name.into()],
    })
    .expect("alarm exists")
    .alarms
    .remove(0)
}

fn errors_alarm() -> pb::PutMetricAlarmRequest {
    pb::PutMetricAlarmRequest {
        alarm_name: "errors-high".into(),
        namespace: "AWS/Lambda".into(),
        metric_name: "Errors".into(),
        statistic: pb::Statistic::Average as i32,
        comparison_operator: pb::ComparisonOperator::GreaterThanThreshold as i32,
        threshold: 5.0,
        period_s: 60,
        evaluation_periods: 1,
    }
}

#[tokio::test]
async fn put_without_local_buffer_fails_unavailable_naming_kinesis() {
    let (cw, kinesis) = service("no-buffer", false);
    kinesis.set_down(true);
    match cw.put_metric_data(put_req("Errors", &[(0, 1.0)])).await {
        Err(ServiceError::Unavailable(m)) => assert!(m.contains("Kinesis"), "{m}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    assert_eq!(info(&cw, "put_errors"), "1");
    assert!(
        cw.ingest_once().await.is_err(),
        "the aggregator cannot read either"
    );
    assert!(
        get(&cw, "Errors").is_empty(),
        "a refused datapoint is nowhere"
    );

    kinesis.set_down(false);
    let r = cw.put_metric_data(put_req("Errors", &[(0, 1.0)])).await;
    assert_eq!(r.map(|r| r.accepted_via).ok().as_deref(), Some("kinesis"));
    assert_eq!(cw.ingest_once().await.ok(), Some(1));
    let got = get(&cw, "Errors");
    assert_eq!(got.len(), 1);
    assert!(got[0].id.starts_with("cw-test-"), "{}", got[0].id);
}

#[tokio::test(start_paused = true)]
async fn cause_names_kinesis_while_puts_are_refused_and_clears_after_the_window() {
    let (cw, kinesis) = service("cause", false);
    assert_eq!(info(&cw, "depends_on"), "kinesis");
    assert_eq!(info(&cw, "cause"), "");
    kinesis.set_down(true);
    assert!(
        cw.put_metric_data(put_req("Errors", &[(0, 1.0)]))
            .await
            .is_err()
    );
    let cause = info(&cw, "cause");
    assert!(
        cause.starts_with("PutMetricData: metrics pipeline unavailable: Kinesis"),
        "{cause}"
    );

    // Kinesis is back: puts succeed, and once the window has passed the
    // old refusal no longer explains anything.
    kinesis.set_down(false);
    assert!(
        cw.put_metric_data(put_req("Errors", &[(0, 1.0)]))
            .await
            .is_ok()
    );
    assert!(info(&cw, "cause").contains("Kinesis"), "still recent");
    tokio::time::advance(cascade_core::deps::CAUSE_WINDOW + Duration::from_millis(1)).await;
    assert!(
        cw.put_metric_data(put_req("Errors", &[(0, 1.0)]))
            .await
            .is_ok()
    );
    assert_eq!(info(&cw, "cause"), "");
}

#[tokio::test]
async fn with_the_local_buffer_puts_succeed_so_there_is_no_cause() {
    let (cw, kinesis) = service("cause-buffer", true);
    kinesis.set_down(true);
    let r = cw.put_metric_data(put_req("Errors", &[(0, 1.0)])).await;
    assert_eq!(
        r.map(|r| r.accepted_via).ok().as_deref(),
        Some("local-buffer")
    );
    assert!(
        cw.ingest_once().await.is_err(),
        "the pipeline itself is down"
    );
    assert_eq!(info(&cw, "put_errors"), "1");
    assert_eq!(info(&cw, "cause"), "");
    let _ = std::fs::remove_dir_all(test_dir("cause-buffer"));
}

#[tokio::test]
async fn alarm_goes_insufficient_data_without_datapoints_and_alarm_or_ok_by_threshold() {
    let (cw, kinesis) = service("alarm", false);
    cw.put_metric_alarm(errors_alarm()).expect("valid alarm");
    let a = alarm_state(&cw, "errors-high");
    assert_eq!(a.state, "INSUFFICIENT_DATA");
    assert!(
        a.state_reason.contains("Insufficient Data"),
        "{}",
        a.state_reason
    );

    let t0 = cascade_core::now_ms();
    cw.put_metric_data(put_req("Errors", &[(t0, 10.0)]))
        .await
        .expect("Kinesis is up");
    cw.ingest_once().await.expect("Kinesis is up");
    cw.evaluate_alarms(t0 + 100);
    let a = alarm_state(&cw, "errors-high");
    assert_eq!(
        (a.state.as_str(), a.state_updated_ms),
        ("ALARM", t0 + 100),
        "{}",
        a.state_reason
    );

    // The window (floored at two evaluations: 2 s) has moved past the datapoint.
    cw.evaluate_alarms(t0 + 5_000);
    assert_eq!(alarm_state(&cw, "errors-high").state, "INSUFFICIENT_DATA");

    cw.put_metric_data(put_req("Errors", &[(t0 + 5_000, 1.0)]))
        .await
        .expect("Kinesis is up");
    cw.ingest_once().await.expect("Kinesis is up");
    cw.evaluate_alarms(t0 + 5_100);
    let a = alarm_state(&cw, "errors-high");
    assert_eq!(
        (a.state.as_str(), a.state_updated_ms),
        ("OK", t0 + 5_100),
        "{}",
        a.state_reason
    );
    cw.evaluate_alarms(t0 + 5_200);
    assert_eq!(
        alarm_state(&cw, "errors-high").state_updated_ms,
        t0 + 5_100,
        "no change, no update"
    );

    // Kinesis down: new datapoints never reach the series and the alarm starves.
    kinesis.set_down(true);
    assert!(
        cw.put_metric_data(put_req("Errors", &[(t0 + 9_000, 9.0)]))
            .await
            .is_err()
    );
    cw.evaluate_alarms(t0 + 9_100);
    assert_eq!(alarm_state(&cw, "errors-high").state, "INSUFFICIENT_DATA");
    assert_eq!(info(&cw, "alarms_insufficient"), "1");
}

#[tokio::test]
async fn local_buffer_keeps_alarms_fed_while_kinesis_is_down() {
    let (cw, kinesis) = service("alarm-buffer", true);
    cw.put_metric_alarm(errors_alarm()).expect("valid alarm");
    kinesis.set_down(true);
    let t0 = cascade_core::now_ms();
    let r = cw.put_metric_data(put_req("Errors", &[(t0, 10.0)])).await;
    assert_eq!(
        r.map(|r| r.accepted_via).ok().as_deref(),
        Some("local-buffer")
    );
    cw.evaluate_alarms(t0 + 100);
    assert_eq!(alarm_state(&cw, "errors-high").state, "ALARM");
    assert_eq!(info(&cw, "alarms_in_alarm"), "1");
    let _ = std::fs::remove_dir_all(test_dir("alarm-buffer"));
}

#[tokio::test]
async fn outage_with_local_buffer_backfills_every_datapoint_exactly_once() {
    let (cw, kinesis) = service("backfill", true);
    kinesis.set_down(true);
    let now = cascade_core::now_ms();
    // 700 datapoints: more than one PutRecords batch on the way back.
    let values: Vec<(i64, f64)> = (0..700).map(|i| (now - 700 + i, i as f64)).collect();
    let r = cw.put_metric_data(put_req("Duration", &values)).await;
    assert_eq!(
        r.map(|r| r.accepted_via).ok().as_deref(),
        Some("local-buffer")
    );
    assert_eq!(info(&cw, "buffered_datapoints"), "700");
    assert_eq!(
        get(&cw, "Duration").len(),
        700,
        "readers see buffered datapoints"
    );

    assert!(cw.backfill_once().await.is_err(), "Kinesis still down");
    assert_eq!(
        info(&cw, "buffered_datapoints"),
        "700",
        "nothing leaves the store on failure"
    );

    kinesis.set_down(false);
    assert_eq!(cw.backfill_once().await.ok(), Some(700));
    assert_eq!(info(&cw, "buffered_datapoints"), "0");
    assert_eq!(info(&cw, "backfilled_datapoints"), "700");
    assert_eq!(
        get(&cw, "Duration").len(),
        700,
        "visible between store and series"
    );
    assert_eq!(
        LocalStore::open(&test_dir("backfill"))
            .map(|s| s.len())
            .ok(),
        Some(0),
        "removal is durable"
    );

    // The same batch sent twice (a backfill retried after a crash) counts once.
    {
        let mut log = kinesis.log.lock();
        let again: Vec<Vec<u8>> = log[..500].to_vec();
        log.extend(again);
    }
    assert_eq!(cw.ingest_once().await.ok(), Some(700));
    let got = get(&cw, "Duration");
    let ids: BTreeSet<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        (got.len(), ids.len()),
        (700, 700),
        "each datapoint exactly once"
    );
    let sum: f64 = got.iter().map(|d| d.value).sum();
    assert_eq!(sum, (0..700).sum::<i32>() as f64, "and with its own value");
    assert_eq!(info(&cw, "datapoints_ingested"), "700");
    let _ = std::fs::remove_dir_all(test_dir("backfill"));
}

#[tokio::test]
async fn buffered_datapoints_survive_a_restart_and_are_backfilled_after_it() {
    let dir = "restart";
    let first_ids: BTreeSet<String> = {
        let (cw, kinesis) = service(dir, true);
        kinesis.set_down(true);
        cw.put_metric_data(put_req("Invocations", &[(0, 1.0), (0, 2.0), (0, 3.0)]))
            .await
            .expect("buffered");
        get(&cw, "Invocations").into_iter().map(|d| d.id).collect()
    };
    // A new process over the same directory, and the remediation now off:
    // the store is still opened and backfilled, because it holds data.
    let kinesis = Arc::new(FakeKinesis::default());
    let mut c = config("restart-unused", false);
    c.local_buffer_dir = dir_path(dir);
    let cw = CloudWatch::new(c, kinesis.clone()).expect("store reopens");
    assert_eq!(info(&cw, "buffered_datapoints"), "3");
    assert_eq!(cw.backfill_once().await.ok(), Some(3));
    assert_eq!(cw.ingest_once().await.ok(), Some(3));
    let ids: BTreeSet<String> = get(&cw, "Invocations").into_iter().map(|d| d.id).collect();
    assert_eq!(ids, first_ids, "the same ids, nothing lost");
    let _ = std::fs::remove_dir_all(test_dir(dir));
    let _ = std::fs::remove_dir_all(test_dir("restart-unused"));
}

#[tokio::test]
async fn buffered_datapoints_older_than_the_retention_are_dropped() {
    let (cw, kinesis) = service("retention", true);
    kinesis.set_down(true);
    let now = cascade_core::now_ms();
    // Retention: 10800 incident s at 360x = 30 s of wall time.
    cw.put_metric_data(put_req("Errors", &[(now - 60_000, 1.0), (now, 2.0)]))
        .await
        .expect("buffered");
    assert!(cw.backfill_once().await.is_err());
    assert_eq!(info(&cw, "buffered_datapoints"), "1");
    assert_eq!(info(&cw, "expired_datapoints"), "1");
    let _ = std::fs::remove_dir_all(test_dir("retention"));
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let (cw, _kinesis) = service("invalid", false);
    let too_many: Vec<(i64, f64)> = (0..1001).map(|_| (0, 1.0)).collect();
    let cases = [
        (
            "namespace",
            pb::PutMetricDataRequest {
                namespace: String::new(),
                ..put_req("m", &[(0, 1.0)])
            },
        ),
        ("metric_data", put_req("m", &[])),
        ("metric_data", put_req("m", &too_many)),
        ("metric_data[0].metric_name", put_req("", &[(0, 1.0)])),
        (
            "metric_data[1].value",
            put_req("m", &[(0, 1.0), (0, f64::NAN)]),
        ),
        ("metric_data[0].value", put_req("m", &[(0, f64::INFINITY)])),
        ("metric_data[0].timestamp_ms", put_req("m", &[(-5, 1.0)])),
    ];
    for (field, req) in cases {
        match cw.put_metric_data(req).await {
            Err(ServiceError::InvalidArgument(m)) => assert!(m.starts_with(field), "{field}: {m}"),
            other => panic!("{field}: expected InvalidArgument, got {other:?}"),
        }
    }
    let range = |start_ms, end_ms| pb::GetMetricDataRequest {
        namespace: "AWS/Lambda".into(),
        metric_name: "Errors".into(),
        start_ms,
        end_ms,
    };
    assert!(matches!(
        cw.get_metric_data(range(10, 5)),
        Err(ServiceError::InvalidArgument(_))
    ));
    assert!(matches!(
        cw.get_metric_data(range(-1, 5)),
        Err(ServiceError::InvalidArgument(_))
    ));
    assert_eq!(
        cw.get_metric_data(range(0, 5))
            .map(|r| r.datapoints.len())
            .ok(),
        Some(0),
        "unknown series is empty"
    );
    assert!(matches!(
        cw.describe_alarms(pb::DescribeAlarmsRequest {
            alarm_names: vec!["nope".into()]
        }),
        Err(ServiceError::NotFound(_))
    ));
    assert!(matches!(
        cw.configure("local_buffer", "maybe"),
        Err(ServiceError::InvalidArgument(_))
    ));
    assert!(matches!(
        cw.configure("colour", "on"),
        Err(ServiceError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn local_buffer_can_be_turned_on_live() {
    let (cw, kinesis) = service("live-toggle", false);
    kinesis.set_down(true);
    assert!(
        cw.put_metric_data(put_req("Errors", &[(0, 1.0)]))
            .await
            .is_err()
    );
    assert_eq!(
        cw.configure("local_buffer", "on").ok().as_deref(),
        Some("on")
    );
    assert_eq!(info(&cw, "local_buffer"), "on");
    let r = cw.put_metric_data(put_req("Errors", &[(0, 1.0)])).await;
    assert_eq!(
        r.map(|r| r.accepted_via).ok().as_deref(),
        Some("local-buffer")
    );
    let _ = std::fs::remove_dir_all(test_dir("live-toggle"));
}
