//! `MetricsAgent`: the invocation host's local metrics agent. Every invocation
//! hands it its metrics and log/report record; it buffers them as real bytes
//! charged to the host's `MemoryBudget` and flushes them to CloudWatch. While
//! CloudWatch fails (it runs on Kinesis) the buffer grows and crowds
//! invocations out of memory: Lambda's part of the 2020-11-25 cascade.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cascade_core::deps::{RecentFailure, Upstream};
use cascade_core::ticker::Ticker;
use cascade_core::{ServiceError, clients};
use cascade_proto::cloudwatch::cloud_watch_client::CloudWatchClient;
use cascade_proto::cloudwatch::{MetricDatum, PutMetricDataRequest};
use parking_lot::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::memory::MemoryBudget;

/// CloudWatch namespace of every metric the agent publishes.
pub const NAMESPACE: &str = "AWS/Lambda";
/// Metric: invocation duration in milliseconds.
pub const METRIC_DURATION: &str = "Duration";
/// Metric: one per invocation.
pub const METRIC_INVOCATIONS: &str = "Invocations";
/// Deadline of one PutMetricData call. A full batch goes through CloudWatch
/// to Kinesis as two PutRecords; a partly restored Kinesis takes seconds to
/// answer, and an agent that gave up sooner would never drain.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(5);
/// Entries per PutMetricData: two datums each, 500 in all, so that one
/// batch is one Kinesis PutRecords behind CloudWatch and a partly restored
/// Kinesis that takes some of those puts drains the agent batch by batch.
pub const MAX_BATCH_ENTRIES: usize = 250;

/// Where flushed metrics go: CloudWatch in the binary, a switchable fake in tests.
#[tonic::async_trait]
pub trait MetricsSink: Send + Sync + 'static {
    /// Delivers one batch; an error leaves the batch in the agent's buffer.
    async fn put_metric_data(&self, req: PutMetricDataRequest) -> Result<(), ServiceError>;
}

/// The real sink: CloudWatch's PutMetricData over gRPC, with a 1 s deadline.
#[derive(Debug, Clone)]
pub struct CloudWatchSink {
    /// Lazily (re)connecting client, so a dead CloudWatch costs failed flushes only.
    client: CloudWatchClient<Channel>,
}

impl CloudWatchSink {
    /// A sink sending to the CloudWatch at `addr`.
    pub fn new(addr: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: CloudWatchClient::new(clients::lazy_channel(addr, FLUSH_DEADLINE)?),
        })
    }
}

#[tonic::async_trait]
impl MetricsSink for CloudWatchSink {
    async fn put_metric_data(&self, req: PutMetricDataRequest) -> Result<(), ServiceError> {
        let mut request = tonic::Request::new(req);
        request.set_timeout(FLUSH_DEADLINE);
        // The outer timeout also bounds connecting, which the channel allows 2 s.
        match tokio::time::timeout(FLUSH_DEADLINE, self.client.clone().put_metric_data(request))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(Upstream::CloudWatch.error("PutMetricData", status)),
            Err(_) => Err(ServiceError::unavailable(format!(
                "{} PutMetricData did not answer within {FLUSH_DEADLINE:?}",
                Upstream::CloudWatch
            ))),
        }
    }
}

/// One invocation's metrics and its log/report record, as the agent holds it.
#[derive(Debug)]
struct AgentEntry {
    /// Order of arrival; acknowledgements remove entries up to a sequence.
    seq: u64,
    /// When the invocation finished (ms since the epoch).
    timestamp_ms: i64,
    /// The Duration metric, in milliseconds.
    duration_ms: f64,
    /// The log/report record: real bytes, charged to the memory budget.
    record: Vec<u8>,
}

impl AgentEntry {
    fn bytes(&self) -> u64 {
        self.record.len() as u64
    }
}

/// The agent's buffer: entries oldest first, their bytes, and the optional bound.
#[derive(Debug, Default)]
struct AgentBuffer {
    /// Buffered entries, oldest first.
    entries: VecDeque<AgentEntry>,
    /// Sum of the entries' bytes (equals the agent's charge on the budget).
    bytes: u64,
    /// The remediation: at most this many bytes, dropping the oldest. `None` = unbounded (2020).
    max: Option<u64>,
    /// Sequence number of the next entry.
    next_seq: u64,
    /// Bytes dropped by the bound so far.
    dropped_bytes: u64,
    /// Entries dropped by the bound so far.
    dropped_entries: u64,
    /// Entries CloudWatch accepted so far.
    flushed_entries: u64,
}

impl AgentBuffer {
    /// Drops the oldest entries until the bound holds; returns the bytes freed.
    fn enforce_bound(&mut self) -> u64 {
        let Some(max) = self.max else { return 0 };
        let mut freed = 0;
        while self.bytes > max {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.bytes();
            self.dropped_bytes += old.bytes();
            self.dropped_entries += 1;
            freed += old.bytes();
        }
        freed
    }

    /// Removes acknowledged entries (seq <= `last_seq`) still at the front;
    /// entries the bound dropped meanwhile are simply gone already.
    fn ack(&mut self, last_seq: u64) -> (u64, u64) {
        let (mut entries, mut bytes) = (0, 0);
        while self.entries.front().is_some_and(|e| e.seq <= last_seq) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.bytes();
                bytes += e.bytes();
                entries += 1;
            }
        }
        self.flushed_entries += entries;
        (entries, bytes)
    }
}

/// Snapshot of the agent for Control status and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStats {
    /// Bytes buffered right now.
    pub buffer_bytes: u64,
    /// Entries buffered right now.
    pub buffer_entries: u64,
    /// The bound in force (`None` = unbounded).
    pub buffer_max: Option<u64>,
    /// Bytes dropped by the bound so far.
    pub dropped_bytes: u64,
    /// Entries dropped by the bound so far.
    pub dropped_entries: u64,
    /// Entries CloudWatch accepted so far.
    pub flushed_entries: u64,
    /// PutMetricData calls that failed so far.
    pub flush_failures: u64,
    /// Sequence numbers of the buffered entries, oldest first (tests).
    pub seqs: Vec<u64>,
    /// The last flush error, empty if none yet.
    pub last_flush_error: String,
}

/// The invocation host's metrics agent (see the module doc).
#[derive(Debug)]
pub struct MetricsAgent {
    /// The host memory the buffer is charged to.
    budget: Arc<MemoryBudget>,
    /// Size of each invocation's log/report record, in bytes.
    log_bytes: usize,
    /// The buffer itself.
    buffer: Mutex<AgentBuffer>,
    /// PutMetricData calls that failed.
    flush_failures: AtomicU64,
    /// Whether the last flush succeeded, to log only transitions.
    sink_ok: AtomicBool,
    /// The last flush error, for status.
    last_error: Mutex<String>,
    /// The last flush error and when, for the cause of refused invocations.
    recent_failure: RecentFailure,
}

impl MetricsAgent {
    /// An empty agent charging `budget`, writing `log_bytes` per record,
    /// bounded to `max` bytes (`None`: unbounded, as in 2020).
    pub fn new(budget: Arc<MemoryBudget>, log_bytes: usize, max: Option<u64>) -> Self {
        Self {
            budget,
            log_bytes,
            buffer: Mutex::new(AgentBuffer {
                max,
                ..AgentBuffer::default()
            }),
            flush_failures: AtomicU64::new(0),
            sink_ok: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            recent_failure: RecentFailure::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AgentBuffer> {
        self.buffer.lock()
    }

    /// Buffers one invocation's metrics and report record. Always accepted:
    /// without a bound the agent grows without limit (the latent bug).
    pub fn record(&self, function: &str, duration: Duration, timestamp_ms: i64) {
        let duration_ms = duration.as_secs_f64() * 1000.0;
        let mut buffer = self.lock();
        let seq = buffer.next_seq;
        buffer.next_seq += 1;
        let record = report_record(self.log_bytes, seq, function, duration_ms, timestamp_ms);
        let entry = AgentEntry {
            seq,
            timestamp_ms,
            duration_ms,
            record,
        };
        let bytes = entry.bytes();
        buffer.entries.push_back(entry);
        buffer.bytes += bytes;
        // Budget charges change under the buffer lock so the two never disagree.
        self.budget.charge_agent(bytes);
        let freed = buffer.enforce_bound();
        self.budget.release_agent(freed);
    }

    /// Sets the bound (`None` = unbounded) and applies it at once.
    pub fn set_max(&self, max: Option<u64>) {
        let mut buffer = self.lock();
        buffer.max = max;
        let freed = buffer.enforce_bound();
        self.budget.release_agent(freed);
    }

    /// The bound in force.
    pub fn max(&self) -> Option<u64> {
        self.lock().max
    }

    /// Builds the next PutMetricData from the oldest entries with seq < `end_seq`.
    fn next_batch(&self, end_seq: u64) -> Option<(u64, PutMetricDataRequest)> {
        let buffer = self.lock();
        let batch: Vec<&AgentEntry> = buffer
            .entries
            .iter()
            .take_while(|e| e.seq < end_seq)
            .take(MAX_BATCH_ENTRIES)
            .collect();
        let last_seq = batch.last()?.seq;
        let metric_data = batch
            .iter()
            .flat_map(|e| {
                [
                    MetricDatum {
                        metric_name: METRIC_DURATION.into(),
                        value: e.duration_ms,
                        timestamp_ms: e.timestamp_ms,
                    },
                    MetricDatum {
                        metric_name: METRIC_INVOCATIONS.into(),
                        value: 1.0,
                        timestamp_ms: e.timestamp_ms,
                    },
                ]
            })
            .collect();
        Some((
            last_seq,
            PutMetricDataRequest {
                namespace: NAMESPACE.into(),
                metric_data,
            },
        ))
    }

    /// Sends everything buffered when called, in batches; on success the
    /// entries' bytes are freed, on the first failure the rest stay buffered.
    /// Returns the entries CloudWatch accepted.
    pub async fn flush_once(&self, sink: &dyn MetricsSink) -> Result<u64, ServiceError> {
        // Entries arriving during the flush wait for the next tick, so one
        // flush cannot run forever under load.
        let end_seq = self.lock().next_seq;
        let mut flushed = 0;
        while let Some((last_seq, req)) = self.next_batch(end_seq) {
            if let Err(e) = sink.put_metric_data(req).await {
                self.flush_failures.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock() = e.to_string();
                self.recent_failure.record(e.to_string());
                if self.sink_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "metrics agent: CloudWatch flush failed; buffering");
                }
                return Err(e);
            }
            let mut buffer = self.lock();
            let (entries, bytes) = buffer.ack(last_seq);
            self.budget.release_agent(bytes);
            flushed += entries;
        }
        if !self.sink_ok.swap(true, Ordering::Relaxed) {
            tracing::info!(flushed, "metrics agent: CloudWatch accepts metrics again");
        }
        Ok(flushed)
    }

    /// The last flush error if it happened within the cause window: why the
    /// buffer is growing now.
    pub fn recent_flush_failure(&self) -> Option<String> {
        self.recent_failure.recent()
    }

    /// A snapshot for status and tests.
    pub fn stats(&self) -> AgentStats {
        let buffer = self.lock();
        AgentStats {
            buffer_bytes: buffer.bytes,
            buffer_entries: buffer.entries.len() as u64,
            buffer_max: buffer.max,
            dropped_bytes: buffer.dropped_bytes,
            dropped_entries: buffer.dropped_entries,
            flushed_entries: buffer.flushed_entries,
            flush_failures: self.flush_failures.load(Ordering::Relaxed),
            seqs: buffer.entries.iter().map(|e| e.seq).collect(),
            last_flush_error: self.last_error.lock().clone(),
        }
    }
}

/// The log/report record of one invocation: a Lambda-style REPORT line padded
/// to exactly `len` real bytes (pages written, so they are resident).
fn report_record(
    len: usize,
    seq: u64,
    function: &str,
    duration_ms: f64,
    timestamp_ms: i64,
) -> Vec<u8> {
    let line = format!(
        "REPORT RequestId: {seq:016x} Function: {function} Duration: {duration_ms:.3} ms \
         Invocations: 1 Timestamp: {timestamp_ms}\n"
    );
    let mut record = Vec::with_capacity(len);
    record.extend(line.bytes().take(len));
    record.resize(len, b' ');
    record
}

/// Flushes `agent` to `sink` every `interval` until `shutdown`.
pub async fn run_flusher(
    agent: Arc<MetricsAgent>,
    sink: Arc<dyn MetricsSink>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = Ticker::new(interval);
    while ticker.tick(&shutdown).await {
        // Failures are counted and logged inside; the entries stay for the next tick.
        let _ = agent.flush_once(sink.as_ref()).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CloudWatch stand-in that fails or succeeds on demand and keeps what it got.
    #[derive(Debug, Default)]
    pub(crate) struct SwitchSink {
        /// Whether PutMetricData fails.
        pub failing: AtomicBool,
        /// Requests accepted.
        pub accepted: Mutex<Vec<PutMetricDataRequest>>,
    }

    #[tonic::async_trait]
    impl MetricsSink for SwitchSink {
        async fn put_metric_data(&self, req: PutMetricDataRequest) -> Result<(), ServiceError> {
            if self.failing.load(Ordering::Relaxed) {
                return Err(Upstream::CloudWatch.error(
                    "PutMetricData",
                    tonic::Status::unavailable(
                        "metrics pipeline unavailable: Kinesis PutRecords UNAVAILABLE (test double)",
                    ),
                ));
            }
            self.accepted.lock().push(req);
            Ok(())
        }
    }

    #[test]
    fn records_are_real_bytes_of_the_configured_size_and_charged_to_the_budget() {
        let budget = MemoryBudget::new(1 << 20);
        let agent = MetricsAgent::new(budget.clone(), 4096, None);
        for _ in 0..3 {
            agent.record("echo", Duration::from_micros(1500), 1);
        }
        let stats = agent.stats();
        assert_eq!(stats.buffer_bytes, 3 * 4096);
        assert_eq!(budget.usage().agent, 3 * 4096);
        let buffer = agent.lock();
        let front = buffer.entries.front().expect("three entries");
        assert_eq!(front.record.len(), 4096);
        assert!(front.record.starts_with(b"REPORT RequestId: "));
    }

    #[test]
    fn bound_drops_the_oldest_and_releases_their_budget() {
        let budget = MemoryBudget::new(1 << 20);
        let agent = MetricsAgent::new(budget.clone(), 1000, Some(3500));
        for _ in 0..10 {
            agent.record("echo", Duration::from_millis(1), 1);
        }
        let stats = agent.stats();
        assert_eq!(stats.seqs, vec![7, 8, 9], "the newest three survive");
        assert_eq!(stats.dropped_entries, 7);
        assert_eq!(stats.dropped_bytes, 7000);
        assert_eq!(budget.usage().agent, 3000);
        agent.set_max(Some(1000));
        assert_eq!(agent.stats().seqs, vec![9]);
        assert_eq!(budget.usage().agent, 1000);
    }

    #[tokio::test]
    async fn failed_flush_keeps_entries_and_a_later_success_frees_them() {
        let budget = MemoryBudget::new(1 << 20);
        let agent = MetricsAgent::new(budget.clone(), 100, None);
        let sink = SwitchSink::default();
        sink.failing.store(true, Ordering::Relaxed);
        for _ in 0..(MAX_BATCH_ENTRIES + 10) {
            agent.record("hash", Duration::from_millis(2), 42);
        }
        assert!(agent.flush_once(&sink).await.is_err());
        assert_eq!(agent.stats().buffer_entries, MAX_BATCH_ENTRIES as u64 + 10);
        assert_eq!(agent.stats().flush_failures, 1);

        sink.failing.store(false, Ordering::Relaxed);
        let flushed = agent.flush_once(&sink).await.expect("sink recovered");
        assert_eq!(flushed, MAX_BATCH_ENTRIES as u64 + 10);
        assert_eq!(agent.stats().buffer_bytes, 0);
        assert_eq!(budget.usage().agent, 0);
        let accepted = sink.accepted.lock();
        assert_eq!(accepted.len(), 2, "two batches");
        assert!(accepted.iter().all(|r| r.namespace == NAMESPACE));
        let datums: Vec<&MetricDatum> = accepted.iter().flat_map(|r| &r.metric_data).collect();
        assert_eq!(datums.len(), 2 * (MAX_BATCH_ENTRIES + 10));
        let durations = datums.iter().filter(|d| d.metric_name == METRIC_DURATION);
        assert!(durations.clone().all(|d| (d.value - 2.0).abs() < 1e-9));
        assert_eq!(durations.count(), MAX_BATCH_ENTRIES + 10);
    }

    #[test]
    fn ack_after_the_bound_dropped_part_of_the_batch_frees_only_what_is_left() {
        let budget = MemoryBudget::new(1 << 20);
        let agent = MetricsAgent::new(budget.clone(), 10, None);
        for _ in 0..5 {
            agent.record("echo", Duration::ZERO, 0);
        }
        let (last, _) = agent.next_batch(u64::MAX).expect("five entries");
        assert_eq!(last, 4);
        // While the batch is in flight the bound shrinks and new entries arrive.
        agent.set_max(Some(30));
        agent.record("echo", Duration::ZERO, 0);
        assert_eq!(agent.stats().seqs, vec![3, 4, 5]);
        let (entries, bytes) = agent.lock().ack(last);
        budget.release_agent(bytes);
        assert_eq!((entries, bytes), (2, 20));
        assert_eq!(agent.stats().seqs, vec![5]);
        assert_eq!(budget.usage().agent, 10);
    }
}
