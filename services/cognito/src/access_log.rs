//! The `AccessLogBuffer`: Cognito's best-effort stream of API-access records to
//! Kinesis, and the latent bug of 2020-11-25. In `bug` mode a request handler
//! whose record does not fit waits for the flusher to free space, so when Kinesis
//! fails the handlers block and hold webserver workers; `fixed` mode (AWS's
//! remediation 9) sheds the record and keeps serving.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cascade_core::ServiceError;
use cascade_core::deps::RecentFailure;
use cascade_core::kinesis::KinesisProducer;
use cascade_core::ticker::Ticker;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Smallest buffer capacity accepted: several of the largest records a valid
/// request can produce, so a record always fits into an empty buffer.
pub const MIN_CAPACITY: usize = 4096;
/// Largest buffer capacity accepted (1 GiB), so a typo cannot promise the
/// process more memory than the host has.
pub const MAX_CAPACITY: usize = 1 << 30;
/// Most records one PutRecords call may carry (as AWS).
pub const MAX_BATCH_RECORDS: usize = 500;

/// What a handler does when its access record does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The 2020 latent bug: wait for space, holding the request's worker.
    Bug,
    /// The remediation: drop the record, count it, serve the request.
    Fixed,
}

impl Mode {
    /// The name used by flags, `Control.Configure` and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bug => "bug",
            Self::Fixed => "fixed",
        }
    }

    /// Parses a `Control.Configure` value.
    pub fn parse(value: &str) -> Result<Self, ServiceError> {
        match value.trim() {
            "bug" => Ok(Self::Bug),
            "fixed" => Ok(Self::Fixed),
            other => Err(ServiceError::invalid(format!(
                "value: {other:?} is not a mode; valid are \"bug\" or \"fixed\""
            ))),
        }
    }
}

/// Checks a buffer capacity against [`MIN_CAPACITY`]..=[`MAX_CAPACITY`].
pub fn validate_capacity(bytes: usize) -> Result<usize, ServiceError> {
    if (MIN_CAPACITY..=MAX_CAPACITY).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(ServiceError::invalid(format!(
            "access_log_buffer_bytes: {bytes} is out of range; valid is {MIN_CAPACITY}..={MAX_CAPACITY}"
        )))
    }
}

/// One access record waiting to be put.
#[derive(Debug, Clone)]
struct Pending {
    /// Kinesis partition key (the request id, so records spread over shards).
    partition_key: String,
    /// The encoded record.
    data: Vec<u8>,
}

/// The buffer's contents and settings, under one lock.
#[derive(Debug)]
struct State {
    /// Records not yet accepted by Kinesis, oldest first.
    records: VecDeque<Pending>,
    /// Sum of `data.len()` over `records`.
    bytes: usize,
    /// Most bytes `records` may hold.
    capacity: usize,
    /// What happens to a record that does not fit.
    mode: Mode,
    /// The last flush error, cleared by the next successful flush.
    last_flush_error: String,
}

/// Where a record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// It is in the buffer, waiting for the flusher.
    Buffered,
    /// It did not fit and was dropped (fixed mode).
    Shed,
}

/// A snapshot of the buffer for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferStats {
    /// Mode in force.
    pub mode: Mode,
    /// Bytes held now.
    pub bytes: usize,
    /// Capacity in bytes.
    pub capacity: usize,
    /// Records held now.
    pub records: usize,
    /// Handlers waiting for space right now.
    pub blocked_handlers: u64,
    /// Records dropped because they did not fit (fixed mode).
    pub shed_records: u64,
    /// Records Kinesis accepted.
    pub flushed_records: u64,
    /// PutRecords calls that failed.
    pub flush_failures: u64,
    /// The last flush error ("" after a success).
    pub last_flush_error: String,
}

/// A byte-bounded queue of access records between request handlers and the
/// flusher. Only a successful put removes records, so a Kinesis outage fills it.
#[derive(Debug)]
pub struct AccessLogBuffer {
    /// Records and settings.
    state: Mutex<State>,
    /// Woken whenever space may have appeared (flush, capacity or mode change).
    space: Notify,
    /// Serialises flushes: the flusher removes exactly the records it put,
    /// which holds only while one flush runs at a time.
    flush_lock: tokio::sync::Mutex<()>,
    /// Handlers waiting for space right now.
    blocked: AtomicU64,
    /// Records shed in fixed mode.
    shed: AtomicU64,
    /// Records Kinesis accepted.
    flushed: AtomicU64,
    /// Failed PutRecords calls.
    flush_failures: AtomicU64,
    /// The last failed flush and when, for the cause chain of blocked handlers.
    recent_failure: RecentFailure,
}

/// Counts one blocked handler for as long as it lives, so a handler the
/// client's deadline cancels mid-wait stops being counted.
struct BlockedGuard<'a>(&'a AtomicU64);

impl<'a> BlockedGuard<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AccessLogBuffer {
    /// An empty buffer of `capacity` bytes (validate it with [`validate_capacity`]).
    pub fn new(capacity: usize, mode: Mode) -> Self {
        Self {
            state: Mutex::new(State {
                records: VecDeque::new(),
                bytes: 0,
                capacity,
                mode,
                last_flush_error: String::new(),
            }),
            space: Notify::new(),
            flush_lock: tokio::sync::Mutex::new(()),
            blocked: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
            recent_failure: RecentFailure::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Appends one record. In bug mode this waits, with no timeout of its own,
    /// until the record fits: only the flusher (or a live setting) frees the
    /// caller, and the caller's deadline is what ends the wait otherwise.
    pub async fn append(&self, partition_key: String, data: Vec<u8>) -> Appended {
        let mut record = Some(Pending {
            partition_key,
            data,
        });
        let mut _blocked: Option<BlockedGuard<'_>> = None;
        loop {
            // Register for the wake-up before looking, so a flush that lands
            // between the look and the wait is not missed.
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                let len = record.as_ref().map_or(0, |r| r.data.len());
                // An empty buffer takes any record, so no record waits on an idle flusher.
                if s.bytes + len <= s.capacity || s.records.is_empty() {
                    let r = record.take().expect("the record is appended only once");
                    s.bytes += r.data.len();
                    s.records.push_back(r);
                    return Appended::Buffered;
                }
                if s.mode == Mode::Fixed {
                    self.shed.fetch_add(1, Ordering::Relaxed);
                    return Appended::Shed;
                }
            }
            if _blocked.is_none() {
                _blocked = Some(BlockedGuard::new(&self.blocked));
            }
            notified.await;
        }
    }

    /// Changes the capacity live; a larger one releases waiting handlers.
    pub fn set_capacity(&self, capacity: usize) -> Result<usize, ServiceError> {
        let capacity = validate_capacity(capacity)?;
        self.lock().capacity = capacity;
        self.space.notify_waiters();
        Ok(capacity)
    }

    /// Changes the mode live; switching to fixed releases waiting handlers
    /// (their records are shed).
    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
        self.space.notify_waiters();
    }

    /// A snapshot for status.
    pub fn stats(&self) -> BufferStats {
        let s = self.lock();
        BufferStats {
            mode: s.mode,
            bytes: s.bytes,
            capacity: s.capacity,
            records: s.records.len(),
            blocked_handlers: self.blocked.load(Ordering::Relaxed),
            shed_records: self.shed.load(Ordering::Relaxed),
            flushed_records: self.flushed.load(Ordering::Relaxed),
            flush_failures: self.flush_failures.load(Ordering::Relaxed),
            last_flush_error: s.last_flush_error.clone(),
        }
    }

    /// The last flush error if it happened within the cause window: why
    /// the buffer is not draining now.
    pub fn recent_flush_failure(&self) -> Option<String> {
        self.recent_failure.recent()
    }

    /// Puts up to `max_records` of the oldest records with one call to `sink`.
    /// They leave the buffer only if the put succeeded; on failure they stay
    /// for the next attempt. Returns how many records were flushed.
    pub async fn flush_once<S: AccessLogSink>(
        &self,
        sink: &S,
        max_records: usize,
    ) -> Result<usize, ServiceError> {
        let _only_flush = self.flush_lock.lock().await;
        let batch: Vec<(String, Vec<u8>)> = {
            let s = self.lock();
            s.records
                .iter()
                .take(max_records)
                .map(|r| (r.partition_key.clone(), r.data.clone()))
                .collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        match sink.put_records(batch).await {
            Ok(()) => {
                {
                    let mut s = self.lock();
                    // Appends only push at the back and only this (serialised)
                    // flush pops, so the front `n` are the records just put.
                    let removed: usize = s.records.drain(..n).map(|r| r.data.len()).sum();
                    s.bytes -= removed;
                    s.last_flush_error.clear();
                }
                self.flushed.fetch_add(n as u64, Ordering::Relaxed);
                self.space.notify_waiters();
                Ok(n)
            }
            Err(e) => {
                self.flush_failures.fetch_add(1, Ordering::Relaxed);
                self.lock().last_flush_error = e.to_string();
                self.recent_failure.record(e.to_string());
                Err(e)
            }
        }
    }
}

/// Where flushed records go: Kinesis in the service, a fake in tests.
pub trait AccessLogSink: Send + Sync + 'static {
    /// Puts a batch of (partition key, data); any error keeps the whole batch.
    fn put_records(
        &self,
        records: Vec<(String, Vec<u8>)>,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

/// The real sink: one Kinesis stream, through the front-end fleet.
#[derive(Debug, Clone)]
pub struct KinesisSink {
    /// Producer spread over the front-end fleet.
    pub producer: Arc<KinesisProducer>,
    /// The access-log stream.
    pub stream: String,
}

impl AccessLogSink for KinesisSink {
    async fn put_records(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), ServiceError> {
        self.producer.put_records(&self.stream, records).await
    }
}

/// Flushes `buffer` to `sink` every `interval` until `shutdown`, then makes
/// one last attempt bounded by `interval` + 1 s.
pub async fn run_flusher<S: AccessLogSink>(
    buffer: Arc<AccessLogBuffer>,
    sink: S,
    interval: Duration,
    batch: usize,
    shutdown: CancellationToken,
) {
    let mut ticker = Ticker::new(interval);
    let mut failing = false;
    while ticker.tick(&shutdown).await {
        let result = tokio::select! {
            r = buffer.flush_once(&sink, batch) => r,
            _ = shutdown.cancelled() => break,
        };
        match result {
            Ok(n) if failing => {
                failing = false;
                let backlog = buffer.stats();
                tracing::info!(
                    flushed = n,
                    backlog_records = backlog.records,
                    backlog_bytes = backlog.bytes,
                    "access-log flush succeeded again; draining the backlog"
                );
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "access-log flush failed; records stay buffered");
            }
            Err(e) => tracing::debug!(error = %e, "access-log flush failed again"),
        }
    }
    let last = tokio::time::timeout(
        interval + Duration::from_secs(1),
        buffer.flush_once(&sink, batch),
    )
    .await;
    let left = buffer.stats().records;
    if !matches!(last, Ok(Ok(_))) || left > 0 {
        tracing::info!(
            records_left = left,
            "access-log flusher stopped with records unflushed"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use cascade_core::testkit::{eventually_async, holds};

    use super::*;

    /// A sink that fails while `down` is set and remembers what it accepted.
    #[derive(Debug, Default)]
    pub(crate) struct FakeSink {
        pub down: AtomicBool,
        pub accepted: Mutex<Vec<Vec<u8>>>,
    }

    impl AccessLogSink for Arc<FakeSink> {
        async fn put_records(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), ServiceError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(ServiceError::unavailable("fake Kinesis is down"));
            }
            let mut a = self.accepted.lock();
            a.extend(records.into_iter().map(|(_, d)| d));
            Ok(())
        }
    }

    fn record(i: usize) -> (String, Vec<u8>) {
        (format!("k{i}"), vec![b'x'; 1000])
    }

    /// Waits up to a second until the buffer's stats satisfy `pred`; a
    /// timeout prints the last stats.
    async fn until_stats(
        what: &str,
        buffer: &AccessLogBuffer,
        pred: impl Fn(&BufferStats) -> bool,
    ) {
        eventually_async(what, Duration::from_secs(1), || {
            let s = buffer.stats();
            std::future::ready(holds(pred(&s), || format!("{s:?}")))
        })
        .await;
    }

    /// Fills a 4096-byte buffer with four 1000-byte records.
    async fn full_buffer(mode: Mode) -> Arc<AccessLogBuffer> {
        let buffer = Arc::new(AccessLogBuffer::new(MIN_CAPACITY, mode));
        for i in 0..4 {
            let (k, d) = record(i);
            assert_eq!(buffer.append(k, d).await, Appended::Buffered);
        }
        assert_eq!(buffer.stats().bytes, 4000);
        buffer
    }

    #[tokio::test]
    async fn bug_mode_blocks_until_a_flush_frees_space() {
        let buffer = full_buffer(Mode::Bug).await;
        let sink = Arc::new(FakeSink::default());
        sink.down.store(true, Ordering::Relaxed);

        let b = buffer.clone();
        let handler = tokio::spawn(async move {
            let (k, d) = record(99);
            b.append(k, d).await
        });
        until_stats("one blocked handler", &buffer, |s| s.blocked_handlers == 1).await;

        // Kinesis is down: the flush fails, the records stay, the handler stays blocked.
        assert!(buffer.flush_once(&sink, 2).await.is_err());
        let s = buffer.stats();
        assert_eq!((s.records, s.flush_failures, s.blocked_handlers), (4, 1, 1));
        assert!(s.last_flush_error.contains("down"), "{s:?}");
        assert!(!handler.is_finished());

        // Kinesis recovers: two records leave, the handler's record fits.
        sink.down.store(false, Ordering::Relaxed);
        assert_eq!(buffer.flush_once(&sink, 2).await.ok(), Some(2));
        let appended = tokio::time::timeout(Duration::from_secs(1), handler)
            .await
            .expect("the handler is released by the flush")
            .expect("the handler task does not panic");
        assert_eq!(appended, Appended::Buffered);
        let s = buffer.stats();
        assert_eq!((s.records, s.bytes, s.blocked_handlers), (3, 3000, 0));
        assert_eq!(s.flushed_records, 2);
        assert!(s.last_flush_error.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_wait_stops_counting_as_blocked() {
        let buffer = full_buffer(Mode::Bug).await;
        let (k, d) = record(5);
        let r = tokio::time::timeout(Duration::from_millis(20), buffer.append(k, d)).await;
        assert!(
            r.is_err(),
            "the append must still be waiting at the deadline"
        );
        assert_eq!(buffer.stats().blocked_handlers, 0);
        assert_eq!(buffer.stats().records, 4);
    }

    #[tokio::test]
    async fn fixed_mode_sheds_and_counts() {
        let buffer = full_buffer(Mode::Fixed).await;
        for i in 0..3 {
            let (k, d) = record(10 + i);
            assert_eq!(buffer.append(k, d).await, Appended::Shed);
        }
        let s = buffer.stats();
        assert_eq!((s.records, s.shed_records, s.blocked_handlers), (4, 3, 0));
    }

    #[tokio::test]
    async fn switching_to_fixed_releases_blocked_handlers() {
        let buffer = full_buffer(Mode::Bug).await;
        let b = buffer.clone();
        let handler = tokio::spawn(async move {
            let (k, d) = record(7);
            b.append(k, d).await
        });
        until_stats("one blocked handler", &buffer, |s| s.blocked_handlers == 1).await;
        buffer.set_mode(Mode::Fixed);
        let r = tokio::time::timeout(Duration::from_secs(1), handler).await;
        assert!(matches!(r, Ok(Ok(Appended::Shed))), "{r:?}");
    }

    #[tokio::test]
    async fn capacity_change_takes_effect() {
        let buffer = full_buffer(Mode::Bug).await;
        let b = buffer.clone();
        let handler = tokio::spawn(async move {
            let (k, d) = record(8);
            b.append(k, d).await
        });
        until_stats("one blocked handler", &buffer, |s| s.blocked_handlers == 1).await;
        assert_eq!(buffer.set_capacity(8192).ok(), Some(8192));
        let r = tokio::time::timeout(Duration::from_secs(1), handler).await;
        assert!(matches!(r, Ok(Ok(Appended::Buffered))), "{r:?}");
        assert_eq!(buffer.stats().capacity, 8192);
        assert_eq!(buffer.stats().records, 5);
        // Shrinking below what is held keeps the records; new ones must wait (here: shed).
        assert!(buffer.set_capacity(MIN_CAPACITY).is_ok());
        buffer.set_mode(Mode::Fixed);
        let (k, d) = record(9);
        assert_eq!(buffer.append(k, d).await, Appended::Shed);
        assert!(buffer.set_capacity(10).is_err());
        assert!(buffer.set_capacity(MAX_CAPACITY + 1).is_err());
    }

    #[tokio::test]
    async fn flusher_drains_the_backlog_after_recovery() {
        let buffer = full_buffer(Mode::Bug).await;
        let sink = Arc::new(FakeSink::default());
        sink.down.store(true, Ordering::Relaxed);
        let shutdown = CancellationToken::new();
        let flusher = tokio::spawn(run_flusher(
            buffer.clone(),
            sink.clone(),
            Duration::from_millis(5),
            3,
            shutdown.clone(),
        ));
        until_stats("a failed flush", &buffer, |s| s.flush_failures > 0).await;
        assert_eq!(buffer.stats().records, 4);
        sink.down.store(false, Ordering::Relaxed);
        until_stats("an empty buffer", &buffer, |s| s.records == 0).await;
        let accepted = sink.accepted.lock().len();
        assert_eq!(accepted, 4);
        shutdown.cancel();
        assert!(
            tokio::time::timeout(Duration::from_secs(2), flusher)
                .await
                .is_ok()
        );
    }
}
