//! Rules, per-target delivery queues and delivery latency: the half of
//! EventBridge that reads the bus and hands matched events to targets. In the
//! incident its input (the Kinesis bus) stopped, so deliveries were delayed and
//! the backlog was delivered after recovery; failed deliveries are retried here.

use std::collections::{BTreeMap, VecDeque};

use cascade_proto::eventbridge as pb;
use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

/// Targets a rule may name.
pub const TARGETS: [&str; 2] = ["ecs", "lambda"];

/// How many recent delivery latencies the percentiles are computed over.
const LATENCY_WINDOW: usize = 1_000;

/// One event as it travels on the bus (JSON bytes of these fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusEvent {
    /// Id assigned by PutEvents.
    pub event_id: String,
    /// Who emitted it, e.g. "aws.ecs".
    pub source: String,
    /// What kind of event it is, e.g. "ECS Task Workflow".
    pub detail_type: String,
    /// JSON text, validated at PutEvents.
    pub detail: String,
    /// When PutEvents accepted it (ms since epoch).
    pub put_at_ms: i64,
    /// When the event happened, per its source (ms since epoch).
    #[serde(default)]
    pub time_ms: i64,
}

impl BusEvent {
    /// The wire event delivered to a target on behalf of `rule`.
    fn for_rule(&self, rule: &str) -> pb::Event {
        pb::Event {
            event_id: self.event_id.clone(),
            source: self.source.clone(),
            detail_type: self.detail_type.clone(),
            detail: self.detail.clone(),
            put_at_ms: self.put_at_ms,
            rule: rule.to_owned(),
            time_ms: self.time_ms,
        }
    }
}

/// A rule: exact match on source and detail-type (empty matches anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    /// Rule name (unique).
    pub name: String,
    /// Source to match; empty matches any.
    pub source: String,
    /// Detail-type to match; empty matches any.
    pub detail_type: String,
    /// "ecs" or "lambda".
    pub target: String,
    /// Events delivered to the target on behalf of this rule.
    pub delivered: u64,
}

impl RuleEntry {
    /// Whether `event` matches this rule.
    pub fn matches(&self, event: &BusEvent) -> bool {
        (self.source.is_empty() || self.source == event.source)
            && (self.detail_type.is_empty() || self.detail_type == event.detail_type)
    }
}

/// Hands one event to a target. The real one calls `EventTarget.Deliver` over
/// gRPC; tests use an in-process fake.
#[tonic::async_trait]
pub trait Deliverer: Send + Sync {
    /// Delivers `event` to `target` ("ecs" | "lambda").
    async fn deliver(&self, target: &str, event: pb::Event) -> Result<(), tonic::Status>;
}

/// Whether a failed delivery is worth retrying. Transport trouble and an
/// overloaded target are; a target that rejects the event itself (bad detail,
/// unknown task) would reject it forever and block its queue, so it is dropped.
fn retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable
            | DeadlineExceeded
            | ResourceExhausted
            | Unknown
            | Internal
            | Aborted
            | Cancelled
    )
}

#[derive(Debug, Default)]
struct State {
    /// Rule name -> rule.
    rules: BTreeMap<String, RuleEntry>,
    /// Target -> matched events not yet delivered, oldest first.
    pending: BTreeMap<String, VecDeque<pb::Event>>,
    /// Recent delivery latencies (ms), oldest first.
    latencies: VecDeque<i64>,
    delivered: u64,
    dropped: u64,
    delivery_failures: u64,
    last_latency_ms: i64,
    max_latency_ms: i64,
    last_consumed_put_at_ms: i64,
    consumed: u64,
}

/// Rules and delivery queues, shared by the API and the dispatcher task.
#[derive(Debug, Default)]
pub struct Dispatcher {
    state: Mutex<State>,
}

/// A snapshot of the dispatcher's gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatchStats {
    /// Number of rules.
    pub rules: usize,
    /// Events delivered (all rules).
    pub delivered: u64,
    /// Deliveries waiting (all targets).
    pub pending: usize,
    /// Deliveries dropped because the target rejected them for good.
    pub dropped: u64,
    /// Delivery attempts that failed and will be retried.
    pub delivery_failures: u64,
    /// Events read from the bus.
    pub consumed: u64,
    /// Latency of the most recent delivery (ms).
    pub last_latency_ms: i64,
    /// Median latency over the recent window (ms).
    pub p50_latency_ms: i64,
    /// 99th percentile latency over the recent window (ms).
    pub p99_latency_ms: i64,
    /// Largest latency ever seen (ms).
    pub max_latency_ms: i64,
    /// `put_at_ms` of the newest event read from the bus.
    pub last_consumed_put_at_ms: i64,
}

impl Dispatcher {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Creates or replaces a rule (a replaced rule keeps its delivered count).
    pub fn put_rule(&self, name: &str, source: &str, detail_type: &str, target: &str) {
        let mut s = self.lock();
        let delivered = s.rules.get(name).map_or(0, |r| r.delivered);
        s.rules.insert(
            name.to_owned(),
            RuleEntry {
                name: name.to_owned(),
                source: source.to_owned(),
                detail_type: detail_type.to_owned(),
                target: target.to_owned(),
                delivered,
            },
        );
    }

    /// Every rule, by name.
    pub fn rules(&self) -> Vec<RuleEntry> {
        self.lock().rules.values().cloned().collect()
    }

    /// Queues `events` (just read from the bus) for every rule they match.
    pub fn route(&self, events: Vec<BusEvent>) {
        let mut s = self.lock();
        for e in events {
            s.consumed += 1;
            s.last_consumed_put_at_ms = s.last_consumed_put_at_ms.max(e.put_at_ms);
            let matched: Vec<(String, String)> = s
                .rules
                .values()
                .filter(|r| r.matches(&e))
                .map(|r| (r.name.clone(), r.target.clone()))
                .collect();
            for (rule, target) in matched {
                s.pending
                    .entry(target)
                    .or_default()
                    .push_back(e.for_rule(&rule));
            }
        }
    }

    /// Delivers what is pending, per target in order; a target stops at its
    /// first retryable failure so its order is kept and the rest waits for the
    /// next round. Returns how many were delivered.
    pub async fn deliver_pending(&self, deliverer: &dyn Deliverer) -> usize {
        let targets: Vec<String> = self.lock().pending.keys().cloned().collect();
        let mut delivered = 0;
        for target in targets {
            loop {
                // Only this task pops queues, so the front stays put while we await.
                let Some(event) = self
                    .lock()
                    .pending
                    .get(&target)
                    .and_then(|q| q.front().cloned())
                else {
                    break;
                };
                match deliverer.deliver(&target, event.clone()).await {
                    Ok(()) => {
                        self.delivered(&target, &event);
                        delivered += 1;
                    }
                    Err(status) if retryable(status.code()) => {
                        let mut s = self.lock();
                        s.delivery_failures += 1;
                        tracing::debug!(%target, code = ?status.code(), error = %status.message(), "delivery failed; will retry");
                        break;
                    }
                    Err(status) => {
                        tracing::warn!(%target, event_id = %event.event_id, code = ?status.code(),
                            error = %status.message(), "target rejected the event; dropped");
                        let mut s = self.lock();
                        s.dropped += 1;
                        if let Some(q) = s.pending.get_mut(&target) {
                            q.pop_front();
                        }
                    }
                }
            }
        }
        delivered
    }

    fn delivered(&self, target: &str, event: &pb::Event) {
        // Latency from when the event happened: an event its source had to
        // retry through an outage counts the whole wait.
        let happened = if event.time_ms > 0 {
            event.time_ms
        } else {
            event.put_at_ms
        };
        let latency = (cascade_core::now_ms() - happened).max(0);
        let mut s = self.lock();
        if let Some(q) = s.pending.get_mut(target) {
            q.pop_front();
        }
        s.delivered += 1;
        if let Some(r) = s.rules.get_mut(&event.rule) {
            r.delivered += 1;
        }
        s.last_latency_ms = latency;
        s.max_latency_ms = s.max_latency_ms.max(latency);
        if s.latencies.len() == LATENCY_WINDOW {
            s.latencies.pop_front();
        }
        s.latencies.push_back(latency);
    }

    /// Current gauges.
    pub fn stats(&self) -> DispatchStats {
        let s = self.lock();
        let mut sorted: Vec<i64> = s.latencies.iter().copied().collect();
        sorted.sort_unstable();
        DispatchStats {
            rules: s.rules.len(),
            delivered: s.delivered,
            pending: s.pending.values().map(VecDeque::len).sum(),
            dropped: s.dropped,
            delivery_failures: s.delivery_failures,
            consumed: s.consumed,
            last_latency_ms: s.last_latency_ms,
            p50_latency_ms: percentile(&sorted, 50.0),
            p99_latency_ms: percentile(&sorted, 99.0),
            max_latency_ms: s.max_latency_ms,
            last_consumed_put_at_ms: s.last_consumed_put_at_ms,
        }
    }
}

/// Nearest-rank percentile of sorted values; 0 when empty.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn event(id: &str, source: &str, detail_type: &str) -> BusEvent {
        BusEvent {
            event_id: id.into(),
            source: source.into(),
            detail_type: detail_type.into(),
            detail: "{}".into(),
            put_at_ms: cascade_core::now_ms(),
            time_ms: 0,
        }
    }

    /// Fails the first `fail` calls with `code`, then records deliveries.
    struct Flaky {
        fail: AtomicUsize,
        code: tonic::Code,
        got: Mutex<Vec<(String, String)>>,
    }

    impl Flaky {
        fn new(fail: usize, code: tonic::Code) -> Self {
            Self {
                fail: AtomicUsize::new(fail),
                code,
                got: Mutex::default(),
            }
        }
        fn got(&self) -> Vec<(String, String)> {
            self.got.lock().clone()
        }
    }

    #[tonic::async_trait]
    impl Deliverer for Flaky {
        async fn deliver(&self, target: &str, event: pb::Event) -> Result<(), tonic::Status> {
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(tonic::Status::new(self.code, "target down"));
            }
            self.got.lock().push((target.to_owned(), event.event_id));
            Ok(())
        }
    }

    #[test]
    fn rules_match_exactly_and_empty_matches_anything() {
        let rule = |source: &str, dt: &str| RuleEntry {
            name: "r".into(),
            source: source.into(),
            detail_type: dt.into(),
            target: "ecs".into(),
            delivered: 0,
        };
        let e = event("1", "aws.ecs", "ECS Task Workflow");
        assert!(rule("aws.ecs", "ECS Task Workflow").matches(&e));
        assert!(rule("aws.ecs", "").matches(&e));
        assert!(rule("", "").matches(&e));
        assert!(!rule("aws.ec2", "").matches(&e));
        assert!(!rule("aws.ecs", "ECS Task State Change").matches(&e));
        assert!(
            !rule("aws.ECS", "ECS Task Workflow").matches(&e),
            "matching is exact"
        );
    }

    #[tokio::test]
    async fn only_matching_events_are_queued_per_rule() {
        let d = Dispatcher::default();
        d.put_rule("ecs-flow", "aws.ecs", "ECS Task Workflow", "ecs");
        d.put_rule("all-to-lambda", "", "", "lambda");
        d.route(vec![
            event("a", "aws.ecs", "ECS Task Workflow"),
            event("b", "other", "x"),
        ]);
        assert_eq!(d.stats().pending, 3);
        let t = Flaky::new(0, tonic::Code::Unavailable);
        assert_eq!(d.deliver_pending(&t).await, 3);
        let mut got = t.got();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("ecs".into(), "a".into()),
                ("lambda".into(), "a".into()),
                ("lambda".into(), "b".into())
            ]
        );
        let rules = d.rules();
        assert_eq!(
            rules.iter().map(|r| r.delivered).collect::<Vec<_>>(),
            vec![2, 1]
        );
    }

    #[tokio::test]
    async fn failed_deliveries_stay_pending_in_order_until_the_target_succeeds() {
        let d = Dispatcher::default();
        d.put_rule("ecs-flow", "aws.ecs", "", "ecs");
        d.route(vec![
            event("1", "aws.ecs", "x"),
            event("2", "aws.ecs", "x"),
            event("3", "aws.ecs", "x"),
        ]);
        let t = Flaky::new(3, tonic::Code::Unavailable);
        for round in 0..3 {
            assert_eq!(
                d.deliver_pending(&t).await,
                0,
                "round {round}: target is down"
            );
            assert_eq!(
                d.stats().pending,
                3,
                "round {round}: nothing lost while down"
            );
        }
        assert_eq!(d.deliver_pending(&t).await, 3);
        let ids: Vec<String> = t.got().into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids, vec!["1", "2", "3"], "per-target order kept");
        let s = d.stats();
        assert_eq!(
            (s.pending, s.delivered, s.delivery_failures, s.dropped),
            (0, 3, 3, 0)
        );
    }

    #[tokio::test]
    async fn a_permanently_rejected_event_is_dropped_not_retried_forever() {
        let d = Dispatcher::default();
        d.put_rule("r", "", "", "ecs");
        d.route(vec![event("bad", "s", "d"), event("good", "s", "d")]);
        let t = Flaky::new(1, tonic::Code::NotFound);
        assert_eq!(d.deliver_pending(&t).await, 1);
        assert_eq!(t.got(), vec![("ecs".to_owned(), "good".to_owned())]);
        assert_eq!((d.stats().dropped, d.stats().pending), (1, 0));
    }

    #[tokio::test]
    async fn latency_is_measured_from_put_time() {
        let d = Dispatcher::default();
        d.put_rule("r", "", "", "ecs");
        let mut old = event("old", "s", "d");
        old.put_at_ms -= 5_000;
        d.route(vec![old.clone()]);
        d.deliver_pending(&Flaky::new(0, tonic::Code::Unavailable))
            .await;
        let s = d.stats();
        assert!(s.last_latency_ms >= 5_000, "{s:?}");
        assert_eq!(s.p50_latency_ms, s.last_latency_ms);
        assert_eq!(s.last_consumed_put_at_ms, old.put_at_ms);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[], 99.0), 0);
        assert_eq!(percentile(&[7], 1.0), 7);
    }
}
