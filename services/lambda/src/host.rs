//! `InvocationHost`: runs one invocation at a time per request on a host whose
//! memory (a modelled `MemoryBudget`) is shared with the metrics agent. An
//! invocation that cannot reserve its memory is refused: the invocation errors
//! Lambda saw while its metrics agent's buffer grew (06:15-10:36 PST). A
//! refusal the agent's unflushable buffer explains names CloudWatch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cascade_core::deps::{self, RecentFailure, Upstream};
use cascade_core::serve::process_status;
use cascade_core::{ServiceError, now_ms};
use cascade_proto::control::ProcessStatus;

use crate::agent::MetricsAgent;
use crate::events::EventLateness;
use crate::functions::Function;
use crate::memory::{Contention, MemoryBudget, human};

/// The invocation host: its memory, its metrics agent, and counters.
#[derive(Debug)]
pub struct InvocationHost {
    /// The host's memory (a model; see [`MemoryBudget`]).
    budget: Arc<MemoryBudget>,
    /// The local metrics agent every invocation reports to.
    agent: Arc<MetricsAgent>,
    /// Bytes each invocation reserves and really allocates while it runs.
    invocation_memory: u64,
    /// Invocations that ran.
    invocations_ok: AtomicU64,
    /// Invocations refused for lack of memory.
    invocations_refused: AtomicU64,
    /// Whether the last invocation was refused, to log only transitions.
    refusing: AtomicBool,
    /// Real bytes held by the `memory_hog` fault (charged to the budget).
    hog: parking_lot::Mutex<Vec<u8>>,
    /// How late EventBridge delivers the events driving invocations.
    events: EventLateness,
    /// The last refusal the agent's failing flushes explain, and when.
    refused_by_agent: RecentFailure,
    /// Upstreams whose failure can impair this host, as declared.
    depends_on: Vec<Upstream>,
}

impl InvocationHost {
    /// A host reserving `invocation_memory` bytes of `budget` per invocation.
    pub fn new(
        budget: Arc<MemoryBudget>,
        agent: Arc<MetricsAgent>,
        invocation_memory: u64,
    ) -> Self {
        Self {
            budget,
            agent,
            invocation_memory,
            invocations_ok: AtomicU64::new(0),
            invocations_refused: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            hog: parking_lot::Mutex::new(Vec::new()),
            events: EventLateness::new(),
            refused_by_agent: RecentFailure::new(),
            depends_on: Vec::new(),
        }
    }

    /// The same host, declaring `upstreams` in its status's `depends_on`.
    pub fn declaring(mut self, upstreams: Vec<Upstream>) -> Self {
        self.depends_on = upstreams;
        self
    }

    /// Lateness of the EventBridge deliveries this host served.
    pub fn events(&self) -> &EventLateness {
        &self.events
    }

    /// Why customer calls fail now, naming the upstream, or "": invocations
    /// refused for memory the agent holds because CloudWatch refuses its
    /// flushes, and EventBridge delivering events late, each while recent.
    /// A refusal the agent does not explain (a memory hog, too many
    /// concurrent invocations) has no upstream cause.
    pub fn cause(&self) -> String {
        deps::join_causes([self.refused_by_agent.recent(), self.events.cause()])
    }

    /// The RESOURCE_EXHAUSTED a refused invocation gets: the contention,
    /// and why the agent holds its memory when its flushes are failing.
    fn refusal(&self, contention: &Contention) -> ServiceError {
        let failing = self
            .agent
            .recent_flush_failure()
            .filter(|_| contention.agent_crowds_out());
        let Some(flush) = failing else {
            return ServiceError::ResourceExhausted(contention.to_string());
        };
        self.refused_by_agent.record(format!(
            "invocations refused: the metrics agent holds {} of the {} host memory budget; its flushes fail: {flush}",
            human(contention.usage.agent),
            human(contention.limit),
        ));
        ServiceError::ResourceExhausted(format!(
            "{contention}; the agent holds that memory because its flushes fail: {flush}"
        ))
    }

    /// The host's metrics agent.
    pub fn agent(&self) -> &Arc<MetricsAgent> {
        &self.agent
    }

    /// The host's memory budget.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Validates and runs one invocation; returns its output and duration.
    pub async fn invoke(
        self: &Arc<Self>,
        function_name: &str,
        payload: Vec<u8>,
        rounds: u32,
    ) -> Result<(Vec<u8>, Duration), ServiceError> {
        let function = Function::parse(function_name, payload.len(), rounds)?;
        if !function.is_cpu_bound() {
            return self.execute(function, payload);
        }
        // CPU-bound work runs on the runtime's single blocking thread, so it
        // never stalls the workers that serve RPCs and flush metrics; the
        // memory is reserved only once it actually runs.
        let host = self.clone();
        tokio::task::spawn_blocking(move || host.execute(function, payload))
            .await
            .map_err(|e| ServiceError::Internal(format!("invocation task failed: {e}")))?
    }

    /// Reserves the invocation's memory, allocates and touches it, runs the
    /// function, frees the memory, and hands the metrics to the agent.
    fn execute(
        &self,
        function: Function,
        payload: Vec<u8>,
    ) -> Result<(Vec<u8>, Duration), ServiceError> {
        let start = Instant::now();
        let reservation = match self.budget.try_reserve_invocation(self.invocation_memory) {
            Ok(r) => r,
            Err(contention) => {
                self.invocations_refused.fetch_add(1, Ordering::Relaxed);
                let refusal = self.refusal(&contention);
                if !self.refusing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %refusal, "invocations refused");
                }
                return Err(refusal);
            }
        };
        // The reserved bytes are real: written, so the pages are resident.
        let mut working_set = vec![0u8; usize::try_from(self.invocation_memory).unwrap_or(0)];
        working_set.fill(0xA5);
        let output = function.run(payload);
        std::hint::black_box(&working_set);
        drop(working_set);
        drop(reservation);
        let duration = start.elapsed();
        self.agent.record(function.name(), duration, now_ms());
        self.invocations_ok.fetch_add(1, Ordering::Relaxed);
        if self.refusing.swap(false, Ordering::Relaxed) {
            tracing::info!("invocations admitted again");
        }
        Ok((output, duration))
    }

    /// Invocations that ran and invocations refused so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.invocations_ok.load(Ordering::Relaxed),
            self.invocations_refused.load(Ordering::Relaxed),
        )
    }
}

impl cascade_core::serve::StatusSource for InvocationHost {
    fn status(&self) -> ProcessStatus {
        let usage = self.budget.usage();
        let agent = self.agent.stats();
        let (ok, refused) = self.counts();
        let events = self.events.stats();
        let info = [
            ("memory_budget", self.budget.limit().to_string()),
            (
                "memory_overcommit_bytes",
                self.budget.overcommit().to_string(),
            ),
            ("invocation_memory", self.invocation_memory.to_string()),
            ("invocation_bytes_in_use", usage.invocations.to_string()),
            ("invocations_running", usage.running.to_string()),
            ("agent_buffer_bytes", agent.buffer_bytes.to_string()),
            ("agent_buffer_entries", agent.buffer_entries.to_string()),
            ("agent_buffer_max", format_max(agent.buffer_max)),
            ("dropped_bytes", agent.dropped_bytes.to_string()),
            ("dropped_entries", agent.dropped_entries.to_string()),
            ("agent_flushed_entries", agent.flushed_entries.to_string()),
            ("agent_flush_failures", agent.flush_failures.to_string()),
            ("agent_last_flush_error", agent.last_flush_error),
            ("invocations_ok", ok.to_string()),
            ("invocations_refused", refused.to_string()),
            ("memory_hog_bytes", usage.hog.to_string()),
            ("event_invocations_measured", events.measured.to_string()),
            ("late_event_invocations", events.late.to_string()),
            ("last_event_lateness_ms", events.last_ms.to_string()),
            ("max_event_lateness_ms", events.max_ms.to_string()),
            (
                "event_invocations_held_by_refusals",
                events.held_by_refusals.to_string(),
            ),
            (
                deps::DEPENDS_ON_KEY,
                deps::depends_on(self.depends_on.iter().copied()),
            ),
            (deps::CAUSE_KEY, self.cause()),
        ];
        process_status("lambda", info)
    }

    fn configure(&self, key: &str, value: &str) -> Result<String, ServiceError> {
        match key {
            "agent_buffer_max" => {
                let max = parse_buffer_max(value).map_err(|e| {
                    ServiceError::invalid(format!("value: {e} (for key agent_buffer_max)"))
                })?;
                self.agent.set_max(max);
                Ok(format_max(max))
            }
            "memory_hog" => {
                // A fault: another tenant takes real memory of this host.
                let bytes: u64 = value.trim().parse().map_err(|_| {
                    ServiceError::invalid(format!(
                        "value: {value:?} is not a number of bytes (for key memory_hog)"
                    ))
                })?;
                if bytes > self.budget.limit().saturating_mul(4) {
                    return Err(ServiceError::invalid(format!(
                        "value: {bytes} bytes is more than 4x the {} budget (for key memory_hog)",
                        self.budget.limit()
                    )));
                }
                let mut hog = self.hog.lock();
                *hog = vec![0xA5; bytes as usize];
                self.budget.set_hog(bytes);
                Ok(bytes.to_string())
            }
            other => Err(ServiceError::invalid(format!(
                "key: {other:?} is not a setting of lambda; valid keys: agent_buffer_max, memory_hog"
            ))),
        }
    }
}

/// `agent_buffer_max` as shown in status: bytes, or "unbounded".
fn format_max(max: Option<u64>) -> String {
    max.map_or_else(|| "unbounded".to_owned(), |m| m.to_string())
}

/// The agent buffer's bound in bytes; `None` = unbounded. An alias, not a
/// bare `Option`, so clap treats the flag as a value with a default rather
/// than as an optional flag.
pub type AgentBufferMax = Option<u64>;

/// Parses an agent buffer bound: a plain number of bytes, or "unbounded".
pub fn parse_buffer_max(s: &str) -> Result<AgentBufferMax, String> {
    if s.trim().eq_ignore_ascii_case("unbounded") {
        return Ok(None);
    }
    s.trim()
        .parse::<u64>()
        .map(Some)
        .map_err(|_| format!("{s:?} is neither a number of bytes (e.g. 1048576) nor \"unbounded\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tests::SwitchSink;
    use cascade_core::serve::StatusSource;

    const KIB: u64 = 1024;

    /// A small host: 64 KiB budget, 16 KiB per invocation, 4 KiB per record.
    fn small_host() -> Arc<InvocationHost> {
        let budget = MemoryBudget::new(64 * KIB);
        let agent = Arc::new(MetricsAgent::new(budget.clone(), 4096, None));
        Arc::new(InvocationHost::new(budget, agent, 16 * KIB))
    }

    /// Invokes echo until refused (flushing after each call), or panics after `limit`.
    async fn invoke_until_refused(
        host: &Arc<InvocationHost>,
        sink: &SwitchSink,
        limit: usize,
    ) -> String {
        for _ in 0..limit {
            match host.invoke("echo", b"x".to_vec(), 0).await {
                Ok(_) => {}
                Err(ServiceError::ResourceExhausted(msg)) => return msg,
                Err(e) => panic!("unexpected error {e}"),
            }
            let _ = host.agent().flush_once(sink).await;
        }
        panic!(
            "no refusal after {limit} invocations: {:?}",
            host.status().info
        );
    }

    #[tokio::test]
    async fn cloudwatch_down_grows_the_agent_until_invocations_are_refused_then_recovery_drains_it()
    {
        let host = small_host();
        let sink = SwitchSink::default();
        sink.failing.store(true, Ordering::Relaxed);

        let msg = invoke_until_refused(&host, &sink, 100).await;
        assert!(
            msg.contains("memory contention on the invocation host"),
            "{msg}"
        );
        assert!(
            msg.contains("the metrics agent buffer holds 52.0 KiB of the 64.0 KiB budget"),
            "{msg}"
        );
        assert!(
            msg.contains("cannot reserve 16.0 KiB for this invocation"),
            "{msg}"
        );
        // 12 records (48 KiB) leave exactly 16 KiB; the 13th crowds the next invocation out.
        assert_eq!(host.counts(), (13, 1));
        assert_eq!(host.agent().stats().buffer_bytes, 13 * 4096);
        assert!(host.agent().stats().flush_failures >= 13);
        assert_eq!(
            host.budget().usage().invocations,
            0,
            "refusal holds nothing"
        );
        let info = host.status().info;
        assert_eq!(info["invocations_refused"], "1");
        assert_eq!(info["agent_buffer_bytes"], (13 * 4096).to_string());

        // CloudWatch recovers: the next flush drains the buffer and invocations run.
        sink.failing.store(false, Ordering::Relaxed);
        let flushed = host
            .agent()
            .flush_once(&sink)
            .await
            .expect("sink recovered");
        assert_eq!(flushed, 13);
        assert_eq!(host.budget().usage().agent, 0);
        let (out, _) = host
            .invoke("echo", b"back".to_vec(), 0)
            .await
            .expect("memory free again");
        assert_eq!(out, b"back");
    }

    #[tokio::test(start_paused = true)]
    async fn cause_names_cloudwatch_while_its_failing_flushes_crowd_invocations_out() {
        let host = small_host();
        assert_eq!(host.cause(), "");
        let sink = SwitchSink::default();
        sink.failing.store(true, Ordering::Relaxed);
        let msg = invoke_until_refused(&host, &sink, 100).await;
        assert!(
            msg.contains(
                "the agent holds that memory because its flushes fail: CloudWatch PutMetricData UNAVAILABLE"
            ),
            "{msg}"
        );
        let cause = host.status().info["cause"].clone();
        assert!(
            cause.starts_with(
                "invocations refused: the metrics agent holds 52.0 KiB of the 64.0 KiB host memory budget; \
                 its flushes fail: CloudWatch PutMetricData UNAVAILABLE: metrics pipeline unavailable"
            ),
            "{cause}"
        );

        // CloudWatch recovers: invocations run; after the window, no cause.
        sink.failing.store(false, Ordering::Relaxed);
        assert!(host.agent().flush_once(&sink).await.is_ok());
        assert!(host.invoke("echo", b"ok".to_vec(), 0).await.is_ok());
        assert!(!host.cause().is_empty(), "the refusal is still recent");
        tokio::time::advance(deps::CAUSE_WINDOW + Duration::from_millis(1)).await;
        assert!(host.invoke("echo", b"ok".to_vec(), 0).await.is_ok());
        assert_eq!(host.cause(), "");
    }

    #[tokio::test]
    async fn a_refusal_the_agent_does_not_explain_names_no_upstream() {
        let host = small_host();
        let sink = SwitchSink::default();
        sink.failing.store(true, Ordering::Relaxed);
        assert!(host.invoke("echo", b"x".to_vec(), 0).await.is_ok());
        assert!(host.agent().flush_once(&sink).await.is_err());
        // Another tenant takes the host's memory: 4 KiB of agent buffer is not why.
        assert!(
            host.configure("memory_hog", &(60 * KIB).to_string())
                .is_ok()
        );
        match host.invoke("echo", b"x".to_vec(), 0).await {
            Err(ServiceError::ResourceExhausted(m)) => {
                assert!(m.contains("a memory hog holds"), "{m}");
                assert!(!m.contains("CloudWatch"), "{m}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(host.cause(), "");
        assert_eq!(host.status().info["depends_on"], "");
        let declared = InvocationHost::new(MemoryBudget::new(KIB), host.agent().clone(), 1)
            .declaring(vec![Upstream::CloudWatch, Upstream::EventBridge]);
        assert_eq!(
            declared.status().info["depends_on"],
            "cloudwatch,eventbridge"
        );
    }

    #[tokio::test]
    async fn bounded_agent_buffer_drops_the_oldest_and_invocations_keep_running() {
        let host = small_host();
        let sink = SwitchSink::default();
        sink.failing.store(true, Ordering::Relaxed);
        assert_eq!(
            host.configure("agent_buffer_max", "16384").ok(),
            Some("16384".into())
        );
        for i in 0..200 {
            host.invoke("echo", vec![1], 0)
                .await
                .unwrap_or_else(|e| panic!("invocation {i} refused: {e}"));
            let _ = host.agent().flush_once(&sink).await;
        }
        let stats = host.agent().stats();
        assert_eq!(stats.buffer_bytes, 16 * KIB);
        assert_eq!(stats.seqs, vec![196, 197, 198, 199], "the newest survive");
        assert_eq!(stats.dropped_entries, 196);
        assert_eq!(stats.dropped_bytes, 196 * 4096);
        assert_eq!(host.counts(), (200, 0));

        // Back to the 2020 behaviour: the buffer grows again until refusal.
        assert_eq!(
            host.configure("agent_buffer_max", "unbounded").ok(),
            Some("unbounded".into())
        );
        let msg = invoke_until_refused(&host, &sink, 100).await;
        assert!(msg.contains("memory contention"), "{msg}");
    }

    #[tokio::test]
    async fn hash_runs_off_the_workers_and_bad_input_is_rejected_before_reserving() {
        let host = small_host();
        let (out, _) = host.invoke("hash", b"abc".to_vec(), 1).await.expect("hash");
        assert_eq!(out.len(), 16);
        let (out, _) = host.invoke("echo", b"abc".to_vec(), 0).await.expect("echo");
        assert_eq!(out, b"abc");
        assert!(matches!(
            host.invoke("nope", vec![], 0).await,
            Err(ServiceError::NotFound(_))
        ));
        assert!(matches!(
            host.invoke("hash", vec![], 0).await,
            Err(ServiceError::InvalidArgument(_))
        ));
        assert!(matches!(
            host.invoke("echo", vec![0; 256 * 1024 + 1], 0).await,
            Err(ServiceError::InvalidArgument(_))
        ));
        assert_eq!(host.counts(), (2, 0));
        assert_eq!(host.agent().stats().buffer_entries, 2);
    }

    #[test]
    fn configure_rejects_bad_values_and_keys() {
        let host = small_host();
        assert!(matches!(
            host.configure("agent_buffer_max", "lots"),
            Err(ServiceError::InvalidArgument(_))
        ));
        assert!(matches!(
            host.configure("threads", "1"),
            Err(ServiceError::InvalidArgument(_))
        ));
        assert_eq!(parse_buffer_max(" 42 "), Ok(Some(42)));
        assert_eq!(parse_buffer_max("Unbounded"), Ok(None));
    }
}
