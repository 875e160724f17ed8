//! CloudWatch: PutMetricData goes through a Kinesis stream, an aggregator reads
//! it back into time series, and GetMetricData and alarms read those. When
//! Kinesis fails, puts fail and alarms go INSUFFICIENT_DATA (the incident); the
//! local-buffer remediation keeps refused datapoints on disk, serves them to
//! readers and alarms, and backfills them exactly once after recovery.

pub mod alarms;
pub mod localstore;
pub mod pipeline;
pub mod series;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use cascade_core::deps::{self, RecentFailure};
use cascade_core::kinesis::{KinesisArgs, KinesisProducer, TimeArgs};
use cascade_core::retry::{RetryError, RetryPolicy, retry_until};
use cascade_core::serve::{self, StatusSource};
use cascade_core::ticker::Ticker;
use cascade_core::{ServiceError, now_ms};
use cascade_proto::cloudwatch as pb;
use cascade_proto::cloudwatch::cloud_watch_server::{
    CloudWatch as CloudWatchApi, CloudWatchServer,
};
use cascade_proto::control::ProcessStatus;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::alarms::{AlarmDef, AlarmEntry, AlarmState, check_name};
use crate::localstore::LocalStore;
use crate::pipeline::{KinesisPipeline, MAX_RECORDS_PER_PUT, MetricsPipeline};
use crate::series::{MetricPoint, MetricSeries, PointKey};

/// Most datapoints one PutMetricData may carry (as AWS).
pub const MAX_DATAPOINTS_PER_PUT: usize = 1_000;
/// Most datapoints one GetMetricData answers with (as AWS's per-call limit).
pub const MAX_DATAPOINTS_PER_GET: usize = 100_800;
/// How often the aggregator reads the metrics stream.
const INGEST_TICK: Duration = Duration::from_millis(200);
/// How often the backfiller tries to move buffered datapoints to Kinesis.
const BACKFILL_TICK: Duration = Duration::from_millis(500);
/// How start-up retries creating the metrics stream: every 500 ms for 20 s.
const STARTUP_RETRY: RetryPolicy =
    RetryPolicy::fixed(Duration::from_millis(500), Duration::from_secs(20));
/// Shards of the metrics stream.
const STREAM_SHARDS: u32 = 2;

/// CloudWatch settings.
#[derive(Debug, Clone, clap::Args)]
pub struct CloudWatchConfig {
    #[command(flatten)]
    /// How to reach Kinesis (and which front-end fleet to use).
    pub kinesis: KinesisArgs,
    #[command(flatten)]
    /// The incident clock.
    pub time: TimeArgs,
    /// Name of this instance; every datapoint id is `<instance-id>-<seq>`.
    #[arg(long, env = "CASCADE_INSTANCE_ID", default_value = "cloudwatch-0")]
    pub instance_id: String,
    /// Kinesis stream the metrics pipeline runs on (created with 2 shards at start).
    #[arg(
        long,
        env = "CASCADE_METRICS_STREAM",
        default_value = "cloudwatch-metrics"
    )]
    pub metrics_stream: String,
    /// Remediation: keep datapoints Kinesis refuses in a durable local store,
    /// serve them to readers and alarms, and backfill them (live: Control key
    /// `local_buffer` = on|off).
    #[arg(long, env = "CASCADE_LOCAL_BUFFER")]
    pub local_buffer: bool,
    /// Directory of the local store (created if missing).
    #[arg(
        long,
        env = "CASCADE_LOCAL_BUFFER_DIR",
        default_value = "./cloudwatch-local-buffer"
    )]
    pub local_buffer_dir: PathBuf,
    /// Incident seconds of datapoints the local store keeps (10800 = 3 hours,
    /// as AWS's remediation); older datapoints are dropped from it.
    #[arg(long, env = "CASCADE_LOCAL_BUFFER_RETENTION", default_value_t = 10_800,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub local_buffer_retention: u64,
    /// How often alarms are evaluated (wall time, e.g. 1s, 500ms).
    #[arg(long, env = "CASCADE_ALARM_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub alarm_interval: Duration,
}

/// Parses a non-zero wall duration.
fn parse_interval(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero, e.g. 1s".into()),
        Err(e) => Err(format!("{s:?}: {e} (e.g. 1s or 500ms)")),
    }
}

/// Gauges reported through Control.
#[derive(Debug, Default)]
struct Counters {
    /// PutMetricData calls Kinesis refused.
    put_errors: AtomicU64,
    /// Buffered datapoints moved to Kinesis and removed from the local store.
    backfilled: AtomicU64,
    /// Distinct datapoints the aggregator added to the series.
    ingested: AtomicU64,
    /// When the aggregator last read datapoints off the stream (ms).
    last_ingest_ms: AtomicI64,
    /// Buffered datapoints dropped for being older than the retention.
    expired: AtomicU64,
    /// Stream records that were not datapoints.
    undecodable: AtomicU64,
    /// The last PutMetricData refused to a customer, and when: the cause.
    refused_put: RecentFailure,
}

/// The service's state, shared by the gRPC handlers and its background tasks.
struct Inner {
    /// Settings from the command line.
    config: CloudWatchConfig,
    /// Kinesis (or a test double).
    pipeline: Arc<dyn MetricsPipeline>,
    /// Time series as aggregated from the stream.
    series: Mutex<MetricSeries>,
    /// Backfilled datapoints not yet read back by the aggregator: keeps them
    /// visible in the moment between leaving the store and entering the series.
    in_flight: Mutex<BTreeMap<PointKey, MetricPoint>>,
    /// The durable local store, open once the remediation was ever on (or a
    /// previous run left datapoints in it).
    store: Arc<Mutex<Option<LocalStore>>>,
    /// Whether the local-buffer remediation is on (puts fall back, reads merge).
    local_buffer: AtomicBool,
    /// Alarms by name.
    alarms: Mutex<BTreeMap<String, AlarmEntry>>,
    /// Next datapoint sequence number.
    next_seq: AtomicU64,
    /// Gauges.
    counters: Counters,
}

/// The CloudWatch service: cheap to clone, every clone shares one state.
#[derive(Clone)]
pub struct CloudWatch {
    /// Shared state.
    inner: Arc<Inner>,
}

/// Logs a loop's failures once when they start and once when they stop, not every tick.
#[derive(Debug, Default)]
struct FailureLog {
    /// Whether the last attempt failed.
    failing: bool,
}

impl FailureLog {
    fn record<T>(&mut self, what: &str, r: &Result<T, ServiceError>) {
        match r {
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, "{what} failing");
            }
            Err(e) => tracing::debug!(error = %e, "{what} still failing"),
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!("{what} recovered");
            }
            Ok(_) => {}
        }
    }
}

impl CloudWatch {
    /// A service over `pipeline`. Opens the local store when the remediation
    /// is on, or when a previous run left datapoints in it to backfill.
    pub fn new(
        config: CloudWatchConfig,
        pipeline: Arc<dyn MetricsPipeline>,
    ) -> anyhow::Result<Self> {
        let dir = &config.local_buffer_dir;
        let leftover = dir.join(localstore::FILE_NAME).exists();
        let store = if config.local_buffer || leftover {
            let s = LocalStore::open(dir).with_context(|| {
                format!(
                    "--local-buffer-dir {}: cannot open the local store",
                    dir.display()
                )
            })?;
            if !s.is_empty() {
                tracing::info!(buffered = s.len(), dir = %dir.display(), "local store holds datapoints to backfill");
            }
            Some(s)
        } else {
            None
        };
        // Ids must stay unique across restarts (the stream outlives us), so
        // sequence numbers start at the boot time in microseconds.
        let boot_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Ok(Self {
            inner: Arc::new(Inner {
                local_buffer: AtomicBool::new(config.local_buffer),
                config,
                pipeline,
                series: Mutex::default(),
                in_flight: Mutex::default(),
                store: Arc::new(Mutex::new(store)),
                alarms: Mutex::default(),
                next_seq: AtomicU64::new(boot_us),
                counters: Counters::default(),
            }),
        })
    }

    fn local_buffer_on(&self) -> bool {
        self.inner.local_buffer.load(Ordering::Relaxed)
    }

    /// Turns the local-buffer remediation on (opening the store) or off.
    /// Turning it off keeps the store, so what it holds is still backfilled.
    pub fn set_local_buffer(&self, on: bool) -> Result<(), ServiceError> {
        if on {
            let mut g = self.inner.store.lock();
            if g.is_none() {
                let dir = &self.inner.config.local_buffer_dir;
                *g = Some(LocalStore::open(dir).map_err(|e| {
                    ServiceError::Internal(format!(
                        "local store {}: cannot open: {e}",
                        dir.display()
                    ))
                })?);
            }
        }
        self.inner.local_buffer.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Validates a PutMetricData request and gives each datapoint its id.
    fn validate_put(&self, r: pb::PutMetricDataRequest) -> Result<Vec<MetricPoint>, ServiceError> {
        check_name("namespace", &r.namespace)?;
        let n = r.metric_data.len();
        if n == 0 || n > MAX_DATAPOINTS_PER_PUT {
            return Err(ServiceError::invalid(format!(
                "metric_data: {n} datapoints; send 1 to {MAX_DATAPOINTS_PER_PUT}"
            )));
        }
        let now = now_ms();
        let mut points = Vec::with_capacity(n);
        for (i, d) in r.metric_data.into_iter().enumerate() {
            check_name(&format!("metric_data[{i}].metric_name"), &d.metric_name)?;
            if !d.value.is_finite() {
                return Err(ServiceError::invalid(format!(
                    "metric_data[{i}].value: {} must be a finite number",
                    d.value
                )));
            }
            if d.timestamp_ms < 0 {
                return Err(ServiceError::invalid(format!(
                    "metric_data[{i}].timestamp_ms: {} must be ms since the epoch, or 0 for now",
                    d.timestamp_ms
                )));
            }
            points.push(MetricPoint {
                ns: r.namespace.clone(),
                metric: d.metric_name,
                ts: if d.timestamp_ms == 0 {
                    now
                } else {
                    d.timestamp_ms
                },
                value: d.value,
                id: String::new(),
            });
        }
        for p in &mut points {
            let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
            p.id = format!("{}-{seq}", self.inner.config.instance_id);
        }
        Ok(points)
    }

    /// PutMetricData: to Kinesis; when Kinesis refuses, to the local store if
    /// the remediation is on, else UNAVAILABLE.
    pub async fn put_metric_data(
        &self,
        r: pb::PutMetricDataRequest,
    ) -> Result<pb::PutMetricDataResponse, ServiceError> {
        let points = self.validate_put(r)?;
        let mut accepted = 0;
        let mut failure = None;
        for chunk in points.chunks(MAX_RECORDS_PER_PUT) {
            let records = chunk
                .iter()
                .map(|p| (p.partition_key(), p.encode()))
                .collect();
            match self.inner.pipeline.put_records(records).await {
                Ok(()) => accepted += chunk.len(),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let Some(err) = failure else {
            return Ok(pb::PutMetricDataResponse {
                accepted_via: "kinesis".into(),
            });
        };
        self.inner
            .counters
            .put_errors
            .fetch_add(1, Ordering::Relaxed);
        let partial = if accepted > 0 {
            format!(
                " ({accepted} of {} datapoints went in before the failure)",
                points.len()
            )
        } else {
            String::new()
        };
        if !self.local_buffer_on() {
            return Err(self.refuse_put(format!("metrics pipeline unavailable: {err}{partial}")));
        }
        let rest = points[accepted..].to_vec();
        if let Err(e) = self.buffer_locally(rest).await {
            return Err(self.refuse_put(format!(
                "metrics pipeline unavailable: {err}{partial}; and the local buffer failed: {e}"
            )));
        }
        Ok(pb::PutMetricDataResponse {
            accepted_via: "local-buffer".into(),
        })
    }

    /// The UNAVAILABLE a customer's PutMetricData gets, remembered as the
    /// service's cause for [`deps::CAUSE_WINDOW`].
    fn refuse_put(&self, message: String) -> ServiceError {
        self.inner
            .counters
            .refused_put
            .record(format!("PutMetricData: {message}"));
        ServiceError::unavailable(message)
    }

    /// Why customer calls fail now, naming the upstream, or "": a
    /// PutMetricData refused within the cause window (its message names
    /// Kinesis). With the local buffer on and working puts succeed, so there
    /// is none, whatever the pipeline's state.
    pub fn cause(&self) -> String {
        self.inner.counters.refused_put.recent().unwrap_or_default()
    }

    /// Appends `points` durably to the local store (on the blocking thread:
    /// it syncs to disk before the caller is answered).
    async fn buffer_locally(&self, points: Vec<MetricPoint>) -> Result<(), String> {
        let store = self.inner.store.clone();
        let dir = self.inner.config.local_buffer_dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = store.lock();
            let s = match g.as_mut() {
                Some(s) => s,
                None => {
                    g.insert(LocalStore::open(&dir).map_err(|e| format!("{}: {e}", dir.display()))?)
                }
            };
            s.append(&points)
                .map_err(|e| format!("{}: {e}", dir.display()))
        })
        .await
        .map_err(|e| format!("local store task: {e}"))?
    }

    /// Datapoints of `ns/metric` in `[start_ms, end_ms]`: the series, plus
    /// (remediation on) the local store and in-flight backfill; one per id.
    fn collect(
        &self,
        ns: &str,
        metric: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> BTreeMap<PointKey, f64> {
        // Lock order everywhere: series, in_flight, store.
        let series = self.inner.series.lock();
        let mut out: BTreeMap<PointKey, f64> = series
            .range(ns, metric, start_ms, end_ms)
            .into_iter()
            .collect();
        if self.local_buffer_on() {
            let in_flight = self.inner.in_flight.lock();
            for p in in_flight.values() {
                if p.ns == ns && p.metric == metric && (start_ms..=end_ms).contains(&p.ts) {
                    out.entry(p.key()).or_insert(p.value);
                }
            }
            let store = self.inner.store.lock();
            if let Some(s) = store.as_ref() {
                for p in s.range(ns, metric, start_ms, end_ms) {
                    out.entry(p.key()).or_insert(p.value);
                }
            }
        }
        out
    }

    /// GetMetricData: datapoints in range, oldest first; an unknown series is empty.
    pub fn get_metric_data(
        &self,
        r: pb::GetMetricDataRequest,
    ) -> Result<pb::GetMetricDataResponse, ServiceError> {
        check_name("namespace", &r.namespace)?;
        check_name("metric_name", &r.metric_name)?;
        if r.start_ms < 0 || r.end_ms < 0 {
            return Err(ServiceError::invalid(format!(
                "start_ms {} / end_ms {}: must be ms since the epoch (end_ms 0 = now)",
                r.start_ms, r.end_ms
            )));
        }
        let end = if r.end_ms == 0 { now_ms() } else { r.end_ms };
        if r.start_ms > end {
            return Err(ServiceError::invalid(format!(
                "start_ms: {} is after end_ms {end}; start_ms must be <= end_ms",
                r.start_ms
            )));
        }
        let points = self.collect(&r.namespace, &r.metric_name, r.start_ms, end);
        if points.len() > MAX_DATAPOINTS_PER_GET {
            return Err(ServiceError::invalid(format!(
                "start_ms..end_ms: the range holds {} datapoints, more than {MAX_DATAPOINTS_PER_GET}; narrow it",
                points.len()
            )));
        }
        Ok(pb::GetMetricDataResponse {
            datapoints: points
                .into_iter()
                .map(|((timestamp_ms, id), value)| pb::Datapoint {
                    timestamp_ms,
                    value,
                    id,
                })
                .collect(),
        })
    }

    /// PutMetricAlarm: creates or updates an alarm and evaluates it at once.
    pub fn put_metric_alarm(&self, r: pb::PutMetricAlarmRequest) -> Result<(), ServiceError> {
        let def = AlarmDef::from_request(r)?;
        let now = now_ms();
        {
            let mut alarms = self.inner.alarms.lock();
            match alarms.get_mut(&def.name) {
                Some(e) => e.def = def,
                None => {
                    alarms.insert(def.name.clone(), AlarmEntry::new(def, now));
                }
            }
        }
        self.evaluate_alarms(now);
        Ok(())
    }

    /// DescribeAlarms: the named alarms (NOT_FOUND for an unknown name), or all.
    pub fn describe_alarms(
        &self,
        r: pb::DescribeAlarmsRequest,
    ) -> Result<pb::DescribeAlarmsResponse, ServiceError> {
        let alarms = self.inner.alarms.lock();
        let out = if r.alarm_names.is_empty() {
            alarms.values().map(AlarmEntry::to_proto).collect()
        } else {
            r.alarm_names
                .iter()
                .map(|n| {
                    alarms.get(n).map(AlarmEntry::to_proto).ok_or_else(|| {
                        ServiceError::not_found(format!("alarm_names: no alarm named {n:?}"))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(pb::DescribeAlarmsResponse { alarms: out })
    }

    /// Wall-clock evaluation window of an alarm: its period on the incident
    /// clock, but at least two evaluations long so it always spans one.
    fn window_ms(&self, period_s: u32) -> i64 {
        let c = &self.inner.config;
        let w = c.time.wall(f64::from(period_s)).max(c.alarm_interval * 2);
        w.as_millis() as i64
    }

    /// Evaluates every alarm over the window ending at `now`.
    pub fn evaluate_alarms(&self, now: i64) {
        let defs: Vec<AlarmDef> = self
            .inner
            .alarms
            .lock()
            .values()
            .map(|e| e.def.clone())
            .collect();
        let results: Vec<(String, (AlarmState, String))> = defs
            .iter()
            .map(|d| {
                let w = self.window_ms(d.period_s);
                let periods: Vec<Vec<f64>> = (0..i64::from(d.evaluation_periods))
                    .map(|i| {
                        self.collect(&d.namespace, &d.metric, now - (i + 1) * w, now - i * w)
                            .into_values()
                            .collect()
                    })
                    .collect();
                (d.name.clone(), d.evaluate_periods(&periods))
            })
            .collect();
        let mut alarms = self.inner.alarms.lock();
        for (name, (state, reason)) in results {
            let Some(e) = alarms.get_mut(&name) else {
                continue;
            };
            let from = e.state;
            if e.apply(state, reason, now) {
                tracing::info!(alarm = %name, from = from.as_str(), to = state.as_str(), reason = %e.reason, "alarm state changed");
            }
        }
    }

    /// One aggregator step: reads new records off the stream into the series.
    /// Returns how many distinct datapoints were new.
    pub async fn ingest_once(&self) -> Result<usize, ServiceError> {
        let records = self.inner.pipeline.poll().await?;
        let mut points = Vec::with_capacity(records.len());
        for r in records {
            match MetricPoint::decode(&r) {
                Ok(p) => points.push(p),
                Err(e) => {
                    self.inner
                        .counters
                        .undecodable
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "metrics stream: skipped a record that is not a datapoint");
                }
            }
        }
        let mut fresh = 0;
        {
            let mut series = self.inner.series.lock();
            let mut in_flight = self.inner.in_flight.lock();
            for p in &points {
                // Dedup by id: a datapoint put twice (backfill retried) counts once.
                if series.insert(p) {
                    fresh += 1;
                }
                in_flight.remove(&p.key());
            }
        }
        let c = &self.inner.counters;
        c.ingested.fetch_add(fresh as u64, Ordering::Relaxed);
        if !points.is_empty() {
            c.last_ingest_ms.store(now_ms(), Ordering::Relaxed);
        }
        Ok(fresh)
    }

    /// One backfiller step: puts buffered datapoints to Kinesis in batches
    /// (same ids), then removes what Kinesis accepted, and what is older than
    /// the retention, from the store. Returns how many were backfilled; an
    /// error means Kinesis refused a batch (what went before it still counts).
    pub async fn backfill_once(&self) -> Result<usize, ServiceError> {
        let retention = self
            .inner
            .config
            .time
            .wall(self.inner.config.local_buffer_retention as f64);
        let cutoff = now_ms() - retention.as_millis() as i64;
        let mut sent: BTreeSet<PointKey> = BTreeSet::new();
        let mut cursor: Option<PointKey> = None;
        let mut failure = None;
        let mut any_expired = false;
        loop {
            let batch = match self.inner.store.lock().as_ref() {
                Some(s) => s.batch_after(cursor.as_ref(), MAX_RECORDS_PER_PUT),
                None => return Ok(0),
            };
            let Some(last) = batch.last() else { break };
            cursor = Some(last.key());
            let (live, old): (Vec<MetricPoint>, Vec<MetricPoint>) =
                batch.into_iter().partition(|p| p.ts >= cutoff);
            any_expired |= !old.is_empty();
            if live.is_empty() {
                continue;
            }
            let records = live
                .iter()
                .map(|p| (p.partition_key(), p.encode()))
                .collect();
            match self.inner.pipeline.put_records(records).await {
                Ok(()) => {
                    let mut in_flight = self.inner.in_flight.lock();
                    for p in live {
                        sent.insert(p.key());
                        in_flight.insert(p.key(), p);
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Expired points are also found past the failure point, so look once more.
        any_expired |= self
            .inner
            .store
            .lock()
            .as_ref()
            .and_then(|s| s.batch_after(None, 1).first().map(|p| p.ts < cutoff))
            .unwrap_or(false);
        if !sent.is_empty() || any_expired {
            let store = self.inner.store.clone();
            let (backfilled, expired) = tokio::task::spawn_blocking(move || {
                let mut g = store.lock();
                let Some(s) = g.as_mut() else {
                    return Ok((0, 0));
                };
                let (mut backfilled, mut expired) = (0usize, 0usize);
                s.retain(|p| {
                    if sent.contains(&p.key()) {
                        backfilled += 1;
                        false
                    } else if p.ts < cutoff {
                        expired += 1;
                        false
                    } else {
                        true
                    }
                })
                .map(|_| (backfilled, expired))
                .map_err(|e| {
                    ServiceError::Internal(format!(
                        "local store {}: cannot rewrite: {e}",
                        s.dir().display()
                    ))
                })
            })
            .await
            .map_err(|e| ServiceError::Internal(format!("local store task: {e}")))??;
            let c = &self.inner.counters;
            c.backfilled.fetch_add(backfilled as u64, Ordering::Relaxed);
            if expired > 0 {
                c.expired.fetch_add(expired as u64, Ordering::Relaxed);
                tracing::warn!(
                    expired,
                    "local store: dropped datapoints older than the retention"
                );
            }
            if backfilled > 0 {
                tracing::info!(backfilled, "local store: backfilled datapoints to Kinesis");
            }
            // In-flight points older than the retention would never be read back.
            self.inner
                .in_flight
                .lock()
                .retain(|(ts, _), _| *ts >= cutoff);
            return match failure {
                Some(e) => Err(e),
                None => Ok(backfilled),
            };
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }

    /// Runs `step` every `period` until `shutdown`, logging failure transitions.
    async fn every<F, Fut, T>(
        &self,
        what: &str,
        period: Duration,
        shutdown: CancellationToken,
        step: F,
    ) where
        F: Fn(CloudWatch) -> Fut,
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        let mut ticker = Ticker::new(period);
        let mut log = FailureLog::default();
        while ticker.tick(&shutdown).await {
            let r = tokio::select! {
                r = step(self.clone()) => r,
                _ = shutdown.cancelled() => return,
            };
            log.record(what, &r);
        }
    }

    /// Starts the aggregator, the backfiller and the alarm evaluator.
    fn spawn_tasks(&self, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let (a, b, c) = (self.clone(), self.clone(), self.clone());
        let (ta, tb, tc) = (shutdown.clone(), shutdown.clone(), shutdown.clone());
        let interval = self.inner.config.alarm_interval;
        vec![
            tokio::spawn(async move {
                a.every(
                    "aggregator (reading the metrics stream)",
                    INGEST_TICK,
                    ta,
                    |cw| async move { cw.ingest_once().await },
                )
                .await
            }),
            tokio::spawn(async move {
                b.every(
                    "backfiller (local store to Kinesis)",
                    BACKFILL_TICK,
                    tb,
                    |cw| async move { cw.backfill_once().await },
                )
                .await
            }),
            tokio::spawn(async move {
                c.every("alarm evaluator", interval, tc, |cw| async move {
                    cw.evaluate_alarms(now_ms());
                    Ok::<_, ServiceError>(())
                })
                .await
            }),
        ]
    }
}

impl StatusSource for CloudWatch {
    fn status(&self) -> ProcessStatus {
        let i = &self.inner;
        let c = &i.counters;
        let (in_alarm, insufficient) = {
            let alarms = i.alarms.lock();
            (
                alarms
                    .values()
                    .filter(|a| a.state == AlarmState::Alarm)
                    .count(),
                alarms
                    .values()
                    .filter(|a| a.state == AlarmState::InsufficientData)
                    .count(),
            )
        };
        let buffered = i.store.lock().as_ref().map_or(0, LocalStore::len);
        let series = i.series.lock().series_count();
        let on_off = if self.local_buffer_on() { "on" } else { "off" };
        let info = [
            ("local_buffer", on_off.to_owned()),
            ("buffered_datapoints", buffered.to_string()),
            (
                "backfilled_datapoints",
                c.backfilled.load(Ordering::Relaxed).to_string(),
            ),
            (
                "expired_datapoints",
                c.expired.load(Ordering::Relaxed).to_string(),
            ),
            (
                "put_errors",
                c.put_errors.load(Ordering::Relaxed).to_string(),
            ),
            (
                "datapoints_ingested",
                c.ingested.load(Ordering::Relaxed).to_string(),
            ),
            (
                "undecodable_records",
                c.undecodable.load(Ordering::Relaxed).to_string(),
            ),
            ("series", series.to_string()),
            ("alarms_in_alarm", in_alarm.to_string()),
            ("alarms_insufficient", insufficient.to_string()),
            (
                "last_ingest_ms",
                c.last_ingest_ms.load(Ordering::Relaxed).to_string(),
            ),
            ("kinesis_fleet", i.config.kinesis.kinesis_fleet.clone()),
            ("metrics_stream", i.config.metrics_stream.clone()),
            (
                deps::DEPENDS_ON_KEY,
                deps::depends_on(i.config.kinesis.upstream()),
            ),
            (deps::CAUSE_KEY, self.cause()),
        ];
        serve::process_status(i.config.instance_id.clone(), info)
    }

    fn configure(&self, key: &str, value: &str) -> Result<String, ServiceError> {
        match key {
            "local_buffer" => {
                let on = match value {
                    "on" => true,
                    "off" => false,
                    _ => {
                        return Err(ServiceError::invalid(format!(
                            "value: {value:?} for local_buffer; use \"on\" or \"off\""
                        )));
                    }
                };
                self.set_local_buffer(on)?;
                Ok(value.to_owned())
            }
            _ => Err(ServiceError::invalid(format!(
                "key: {key:?} is not a setting of cloudwatch (settings: local_buffer)"
            ))),
        }
    }
}

#[tonic::async_trait]
impl CloudWatchApi for CloudWatch {
    async fn put_metric_data(
        &self,
        req: Request<pb::PutMetricDataRequest>,
    ) -> Result<Response<pb::PutMetricDataResponse>, Status> {
        Ok(Response::new(
            CloudWatch::put_metric_data(self, req.into_inner()).await?,
        ))
    }

    async fn get_metric_data(
        &self,
        req: Request<pb::GetMetricDataRequest>,
    ) -> Result<Response<pb::GetMetricDataResponse>, Status> {
        Ok(Response::new(CloudWatch::get_metric_data(
            self,
            req.into_inner(),
        )?))
    }

    async fn put_metric_alarm(
        &self,
        req: Request<pb::PutMetricAlarmRequest>,
    ) -> Result<Response<pb::PutMetricAlarmResponse>, Status> {
        CloudWatch::put_metric_alarm(self, req.into_inner())?;
        Ok(Response::new(pb::PutMetricAlarmResponse {}))
    }

    async fn describe_alarms(
        &self,
        req: Request<pb::DescribeAlarmsRequest>,
    ) -> Result<Response<pb::DescribeAlarmsResponse>, Status> {
        Ok(Response::new(CloudWatch::describe_alarms(
            self,
            req.into_inner(),
        )?))
    }
}

/// Serves CloudWatch on `listener` until `shutdown`. Health turns SERVING once
/// the metrics stream exists; if Kinesis does not answer within 20 s, exits
/// with an error naming it.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: CloudWatchConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.metrics_stream.is_empty() {
        anyhow::bail!("--metrics-stream: must not be empty");
    }
    let producer =
        Arc::new(KinesisProducer::new(config.kinesis.clone()).context("--kinesis-backend")?);
    let stream = config.metrics_stream.clone();
    let fleet = config.kinesis.kinesis_fleet.clone();
    let pipeline = Arc::new(KinesisPipeline::new(producer.clone(), &stream));
    let cw = CloudWatch::new(config, pipeline)?;
    let (routes, health) = serve::base_routes(Arc::new(cw.clone()))?;
    let routes = routes.add_service(CloudWatchServer::new(cw.clone()));
    let mut server = tokio::spawn(serve::serve(listener, routes, shutdown.clone()));
    let mut tasks = Vec::new();

    let ready = match retry_until(
        STARTUP_RETRY,
        &shutdown,
        || producer.ensure_stream(&stream, STREAM_SHARDS),
        |e| tracing::debug!(error = %e, "metrics stream not ready yet"),
    )
    .await
    {
        Ok(()) => {
            tracing::info!(%stream, fleet = %fleet, "metrics stream ready");
            // The pipeline's tasks start once the stream they read exists.
            tasks = cw.spawn_tasks(&shutdown);
            serve::set_serving(&health, true).await;
            Ok(())
        }
        Err(RetryError::Cancelled { .. }) => Ok(()),
        Err(RetryError::DeadlinePassed { deadline, last, .. }) => Err(anyhow::anyhow!(
            "Kinesis: cannot create stream {stream:?} through fleet {fleet:?} within {deadline:?}: {last}"
        )),
    };
    let result = match ready {
        Ok(()) => tokio::select! {
            r = &mut server => r.context("server task").and_then(|r| r),
            _ = shutdown.cancelled() => Ok(()),
        },
        Err(e) => Err(e),
    };
    shutdown.cancel();
    for t in tasks {
        t.abort();
    }
    if !server.is_finished() {
        // Bounded by the server's own drain grace.
        let _ = (&mut server).await;
    }
    result
}

#[cfg(test)]
mod tests;
