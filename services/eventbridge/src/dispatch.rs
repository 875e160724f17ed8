//! Rules, per-target delivery queues and delivery latency: the half of
//! EventBridge that reads the bus and hands matched events to targets. In the
//! incident its input (the Kinesis bus) stopped, so deliveries were delayed and
//! the backlog was delivered after recovery; failed deliveries are retried here.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use cascade_proto::eventbridge as pb;
use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use crate::journal::{Entry, Journal, RuleRecord};

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

/// An accepted event not yet delivered to every target its rules name.
#[derive(Debug)]
struct Tracked {
    /// The event as it went on the bus.
    event: BusEvent,
    /// Order accepted (compaction writes the backlog back in this order).
    seq: u64,
    /// Order read from the bus (0: not read yet).
    routed_seq: u64,
    /// (rule, target)s not yet delivered; `None` until read from the bus.
    routes: Option<Vec<(String, String)>>,
    /// Accepted by an earlier run of this process (journal replay).
    from_before: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Rule name -> rule.
    rules: BTreeMap<String, RuleEntry>,
    /// Rules created through PutRule (journaled), by name.
    put_rules: BTreeMap<String, RuleRecord>,
    /// Target -> matched events not yet delivered, oldest first.
    pending: BTreeMap<String, VecDeque<pb::Event>>,
    /// Event id -> accepted event not yet delivered everywhere.
    backlog: BTreeMap<String, Tracked>,
    /// Next `Tracked::seq` / `routed_seq`.
    next_seq: u64,
    /// The durable journal (`None`: state in memory only).
    journal: Option<Journal>,
    /// Lines appended since the last sync.
    dirty: bool,
    /// Recent delivery latencies (ms), oldest first.
    latencies: VecDeque<i64>,
    delivered: u64,
    dropped: u64,
    delivery_failures: u64,
    last_latency_ms: i64,
    max_latency_ms: i64,
    last_consumed_put_at_ms: i64,
    consumed: u64,
    /// Bus records skipped: delivered before (a replay) or withdrawn.
    skipped: u64,
    /// Events read from the bus that matched no rule.
    unmatched: u64,
    /// Events recovered from the journal at start.
    recovered: u64,
    /// Events an earlier run journaled but never put on the bus (its put
    /// was cut short), forgotten once the reader had caught up.
    never_put: u64,
    /// Journal writes that failed (durability was lost for those lines).
    journal_errors: u64,
}

impl State {
    /// Appends `entries` to the journal, if any; a failure is logged and
    /// counted (the state in memory goes on).
    fn journal(&mut self, entries: &[Entry]) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        match j.append(entries) {
            Ok(()) => self.dirty = true,
            Err(e) => {
                self.journal_errors += 1;
                tracing::warn!(dir = %j.dir().display(), error = %e, "event journal: append failed");
            }
        }
    }

    /// Marks `rule`'s route of `event_id` done; the event leaves the
    /// backlog once every route is.
    fn route_done(&mut self, event_id: &str, rule: &str) {
        let done = match self.backlog.get_mut(event_id) {
            Some(Tracked {
                routes: Some(routes),
                ..
            }) => {
                routes.retain(|(r, _)| r != rule);
                routes.is_empty()
            }
            _ => false,
        };
        if done {
            self.backlog.remove(event_id);
        }
        self.journal(&[Entry::Delivered {
            event_id: event_id.to_owned(),
            rule: rule.to_owned(),
        }]);
    }

    /// The journal lines that say exactly what is live now.
    fn live_entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self.put_rules.values().cloned().map(Entry::Rule).collect();
        let mut by_seq: Vec<&Tracked> = self.backlog.values().collect();
        by_seq.sort_by_key(|t| t.seq);
        out.extend(by_seq.iter().map(|t| Entry::Accepted {
            event: t.event.clone(),
        }));
        let mut routed: Vec<&Tracked> = by_seq.into_iter().filter(|t| t.routes.is_some()).collect();
        routed.sort_by_key(|t| t.routed_seq);
        out.extend(routed.into_iter().map(|t| Entry::Routed {
            event_id: t.event.event_id.clone(),
            routes: t.routes.clone().unwrap_or_default(),
        }));
        out
    }
}

/// Rules, the backlog of accepted events and the delivery queues, shared by
/// the API and the dispatcher task; durable when opened on a directory.
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
    /// Events accepted and not yet delivered to every target.
    pub backlog: usize,
    /// Bus records skipped (delivered before, or their put was refused).
    pub skipped: u64,
    /// Events read from the bus that matched no rule.
    pub unmatched: u64,
    /// Events recovered from the journal at start.
    pub recovered: u64,
    /// Journaled events an earlier run never put on the bus, forgotten.
    pub never_put: u64,
    /// Journal writes that failed.
    pub journal_errors: u64,
    /// Lines in the journal file (0 without one).
    pub journal_lines: usize,
}

/// Syncs a journal's appends to disk on the blocking thread (nothing to do
/// without a journal).
pub async fn sync(file: Option<Arc<File>>) -> std::io::Result<()> {
    let Some(f) = file else { return Ok(()) };
    tokio::task::spawn_blocking(move || f.sync_data())
        .await
        .map_err(std::io::Error::other)?
}

/// Compact the journal once it holds this many lines more than twice its live ones.
const COMPACT_SLACK: usize = 1_024;

impl Dispatcher {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// A dispatcher whose rules and backlog live in `dir`'s journal: what
    /// an earlier run left there is recovered (rules, events read from the
    /// bus and not delivered are queued again; events accepted and not
    /// read yet wait for the bus).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let (journal, r) = Journal::open(dir)?;
        if r.skipped > 0 {
            tracing::warn!(dir = %dir.display(), lines = r.skipped, "event journal: skipped unreadable lines (a write torn by a crash)");
        }
        let mut s = State::default();
        for rule in r.rules {
            s.rules.insert(
                rule.name.clone(),
                RuleEntry {
                    name: rule.name.clone(),
                    source: rule.source.clone(),
                    detail_type: rule.detail_type.clone(),
                    target: rule.target.clone(),
                    delivered: 0,
                },
            );
            s.put_rules.insert(rule.name.clone(), rule);
        }
        for event in r.accepted {
            s.next_seq += 1;
            let seq = s.next_seq;
            s.backlog.insert(
                event.event_id.clone(),
                Tracked {
                    event,
                    seq,
                    routed_seq: 0,
                    routes: None,
                    from_before: true,
                },
            );
        }
        for (event, routes) in r.routed {
            s.next_seq += 1;
            let seq = s.next_seq;
            for (rule, target) in &routes {
                s.pending
                    .entry(target.clone())
                    .or_default()
                    .push_back(event.for_rule(rule));
            }
            s.backlog.insert(
                event.event_id.clone(),
                Tracked {
                    event,
                    seq,
                    routed_seq: seq,
                    routes: Some(routes),
                    from_before: true,
                },
            );
        }
        s.recovered = s.backlog.len() as u64;
        tracing::info!(dir = %dir.display(), rules = s.put_rules.len(), backlog = s.backlog.len(),
            queued = s.pending.values().map(VecDeque::len).sum::<usize>(), "event journal replayed");
        s.journal = Some(journal);
        Ok(Self {
            state: Mutex::new(s),
        })
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

    /// [`put_rule`](Self::put_rule) for PutRule: the rule is journaled too,
    /// so it outlives a restart. Returns what to sync before answering; an
    /// `Err` (the journal cannot be written) changes nothing.
    pub fn put_rule_durably(
        &self,
        name: &str,
        source: &str,
        detail_type: &str,
        target: &str,
    ) -> std::io::Result<Option<Arc<File>>> {
        let record = RuleRecord {
            name: name.to_owned(),
            source: source.to_owned(),
            detail_type: detail_type.to_owned(),
            target: target.to_owned(),
        };
        {
            let mut s = self.lock();
            if let Some(j) = s.journal.as_mut() {
                j.append(&[Entry::Rule(record.clone())])?;
                s.dirty = true;
            }
            s.put_rules.insert(name.to_owned(), record);
        }
        self.put_rule(name, source, detail_type, target);
        Ok(self.lock().journal.as_ref().map(Journal::syncer))
    }

    /// Every rule, by name.
    pub fn rules(&self) -> Vec<RuleEntry> {
        self.lock().rules.values().cloned().collect()
    }

    /// Takes `events` into the backlog as PutEvents accepts them, before
    /// they go on the bus (so the dispatcher, reading them back, knows
    /// them). Returns what to sync before answering; on `Err` (the journal
    /// cannot be written) nothing was taken.
    pub fn accept(&self, events: &[BusEvent]) -> std::io::Result<Option<Arc<File>>> {
        let mut s = self.lock();
        if let Some(j) = s.journal.as_mut() {
            let entries: Vec<Entry> = events
                .iter()
                .map(|e| Entry::Accepted { event: e.clone() })
                .collect();
            j.append(&entries)?;
            s.dirty = true;
        }
        for e in events {
            s.next_seq += 1;
            let seq = s.next_seq;
            s.backlog.insert(
                e.event_id.clone(),
                Tracked {
                    event: e.clone(),
                    seq,
                    routed_seq: 0,
                    routes: None,
                    from_before: false,
                },
            );
        }
        Ok(s.journal.as_ref().map(Journal::syncer))
    }

    /// Takes back events whose bus put failed (the caller was refused and
    /// will retry); one already read from the bus stays.
    pub fn withdraw(&self, event_ids: &[String]) {
        let mut s = self.lock();
        let mut entries = Vec::new();
        for id in event_ids {
            if s.backlog.get(id).is_some_and(|t| t.routes.is_none()) {
                s.backlog.remove(id);
                entries.push(Entry::Withdrawn {
                    event_id: id.clone(),
                });
            }
        }
        s.journal(&entries);
    }

    /// Queues `events` (just read from the bus) for every rule they match.
    /// Only events in the backlog waiting for the bus are routed: a record
    /// of an event delivered before (read again after a restart) or whose
    /// put was refused is skipped, so nothing is delivered twice.
    pub fn route(&self, events: Vec<BusEvent>) {
        let mut s = self.lock();
        let mut entries = Vec::new();
        for e in events {
            s.consumed += 1;
            s.last_consumed_put_at_ms = s.last_consumed_put_at_ms.max(e.put_at_ms);
            let waiting = s
                .backlog
                .get(&e.event_id)
                .is_some_and(|t| t.routes.is_none());
            if !waiting {
                s.skipped += 1;
                continue;
            }
            let matched: Vec<(String, String)> = s
                .rules
                .values()
                .filter(|r| r.matches(&e))
                .map(|r| (r.name.clone(), r.target.clone()))
                .collect();
            for (rule, target) in &matched {
                s.pending
                    .entry(target.clone())
                    .or_default()
                    .push_back(e.for_rule(rule));
            }
            entries.push(Entry::Routed {
                event_id: e.event_id.clone(),
                routes: matched.clone(),
            });
            if matched.is_empty() {
                s.unmatched += 1;
                s.backlog.remove(&e.event_id);
            } else {
                s.next_seq += 1;
                let seq = s.next_seq;
                if let Some(t) = s.backlog.get_mut(&e.event_id) {
                    t.routes = Some(matched);
                    t.routed_seq = seq;
                }
            }
        }
        s.journal(&entries);
    }

    /// Forgets events an earlier run journaled as accepted and never put on
    /// the bus (its put was cut short, so its caller got no answer and
    /// retried): called once the reader has read the whole bus, where they
    /// would otherwise have been found. Returns how many.
    pub fn forget_never_put(&self) -> usize {
        let mut s = self.lock();
        let gone: Vec<String> = s
            .backlog
            .iter()
            .filter(|(_, t)| t.from_before && t.routes.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            s.backlog.remove(id);
        }
        let entries: Vec<Entry> = gone
            .iter()
            .map(|id| Entry::Withdrawn {
                event_id: id.clone(),
            })
            .collect();
        s.journal(&entries);
        s.never_put += gone.len() as u64;
        if !gone.is_empty() {
            tracing::warn!(
                events = gone.len(),
                "journaled events an earlier run never put on the bus forgotten"
            );
        }
        gone.len()
    }

    /// Ends a dispatch round: compacts the journal when it holds far more
    /// lines than are live, and returns what to sync (if anything changed).
    pub fn end_round(&self) -> Option<Arc<File>> {
        let mut s = self.lock();
        let lines = s.journal.as_ref()?.lines();
        let live = s.put_rules.len() + 2 * s.backlog.len();
        if lines > 2 * live + COMPACT_SLACK {
            let entries = s.live_entries();
            let result = s.journal.as_mut().map(|j| j.rewrite(&entries));
            match result {
                Some(Ok(())) => {
                    s.dirty = false;
                    tracing::debug!(from = lines, to = entries.len(), "event journal compacted");
                }
                Some(Err(e)) => {
                    s.journal_errors += 1;
                    tracing::warn!(error = %e, "event journal: compaction failed; appending on");
                }
                None => {}
            }
        }
        if !std::mem::take(&mut s.dirty) {
            return None;
        }
        s.journal.as_ref().map(Journal::syncer)
    }

    /// Delivers what is pending, per target in order; a target stops at its
    /// first retryable failure so its order is kept and the rest waits for the
    /// next round. Returns how many were delivered.
    pub async fn deliver_pending(&self, deliverer: &dyn Deliverer) -> usize {
        self.deliver_pending_until(deliverer, || false).await
    }

    /// [`deliver_pending`](Self::deliver_pending), stopping between two
    /// deliveries once `stop` says so (shutdown: nothing is left half done).
    pub async fn deliver_pending_until(
        &self,
        deliverer: &dyn Deliverer,
        stop: impl Fn() -> bool,
    ) -> usize {
        let targets: Vec<String> = self.lock().pending.keys().cloned().collect();
        let mut delivered = 0;
        for target in targets {
            loop {
                if stop() {
                    return delivered;
                }
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
                        s.route_done(&event.event_id, &event.rule);
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
        s.route_done(&event.event_id, &event.rule);
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
            backlog: s.backlog.len(),
            skipped: s.skipped,
            unmatched: s.unmatched,
            recovered: s.recovered,
            never_put: s.never_put,
            journal_errors: s.journal_errors,
            journal_lines: s.journal.as_ref().map_or(0, Journal::lines),
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

    /// As PutEvents then the dispatcher's bus read: accepted, then routed.
    fn accept_route(d: &Dispatcher, events: Vec<BusEvent>) {
        d.accept(&events).expect("no journal, no I/O");
        d.route(events);
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
        accept_route(
            &d,
            vec![
                event("a", "aws.ecs", "ECS Task Workflow"),
                event("b", "other", "x"),
            ],
        );
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
        accept_route(
            &d,
            vec![
                event("1", "aws.ecs", "x"),
                event("2", "aws.ecs", "x"),
                event("3", "aws.ecs", "x"),
            ],
        );
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
        accept_route(&d, vec![event("bad", "s", "d"), event("good", "s", "d")]);
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
        accept_route(&d, vec![old.clone()]);
        d.deliver_pending(&Flaky::new(0, tonic::Code::Unavailable))
            .await;
        let s = d.stats();
        assert!(s.last_latency_ms >= 5_000, "{s:?}");
        assert_eq!(s.p50_latency_ms, s.last_latency_ms);
        assert_eq!(s.last_consumed_put_at_ms, old.put_at_ms);
    }

    #[tokio::test]
    async fn a_reopened_dispatcher_keeps_its_rules_and_delivers_its_backlog_once() {
        let dir = std::env::temp_dir().join(format!("eventbridge-dispatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let all = |ids: &[&str]| {
            ids.iter()
                .map(|i| event(i, "aws.ecs", "w"))
                .collect::<Vec<_>>()
        };
        {
            let d = Dispatcher::open(&dir).expect("opens");
            let f = d
                .put_rule_durably("ecs-flow", "aws.ecs", "", "ecs")
                .expect("journals");
            sync(f).await.expect("syncs");
            // 1 is delivered; 2 and 3 are read from the bus while the target
            // is down; 4 is accepted and not read yet; 5's put was refused.
            sync(
                d.accept(&all(&["1", "2", "3", "4", "5"]))
                    .expect("journals"),
            )
            .await
            .expect("syncs");
            d.withdraw(&["5".to_owned()]);
            d.route(all(&["1"]));
            let up = Flaky::new(0, tonic::Code::Unavailable);
            assert_eq!(d.deliver_pending(&up).await, 1);
            d.route(all(&["2", "3"]));
            let down = Flaky::new(1, tonic::Code::Unavailable);
            assert_eq!(d.deliver_pending(&down).await, 0);
            assert_eq!(d.stats().backlog, 3);
            sync(d.end_round()).await.expect("syncs");
        } // the process is gone
        let d = Dispatcher::open(&dir).expect("reopens");
        assert_eq!(d.rules().len(), 1, "the PutRule rule outlives the restart");
        let s = d.stats();
        assert_eq!((s.recovered, s.pending, s.backlog), (3, 2, 3), "{s:?}");
        // A reader starting again from TRIM_HORIZON reads every record.
        d.route(all(&["1", "2", "3", "4", "5"]));
        let t = Flaky::new(0, tonic::Code::Unavailable);
        assert_eq!(d.deliver_pending(&t).await, 3);
        let ids: Vec<String> = t.got().into_iter().map(|(_, id)| id).collect();
        assert_eq!(
            ids,
            vec!["2", "3", "4"],
            "each undelivered event once, in order"
        );
        let s = d.stats();
        // 1 delivered before, 2 and 3 queued already, 5 refused.
        assert_eq!((s.skipped, s.backlog, s.pending), (4, 0, 0), "{s:?}");
        // Reopened, the journal is compacted to its one live line: the rule.
        sync(d.end_round()).await.expect("syncs");
        drop(d);
        let d = Dispatcher::open(&dir).expect("reopens");
        assert_eq!((d.stats().backlog, d.stats().journal_lines), (0, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn events_an_earlier_run_never_put_are_forgotten_once_the_bus_is_read() {
        let dir =
            std::env::temp_dir().join(format!("eventbridge-never-put-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let d = Dispatcher::open(&dir).expect("opens");
            d.put_rule("r", "", "", "ecs");
            sync(d.accept(&[event("cut", "s", "d")]).expect("journals"))
                .await
                .expect("syncs");
        } // killed between the journal and the bus put
        let d = Dispatcher::open(&dir).expect("reopens");
        let fresh = event("new", "s", "d");
        sync(d.accept(std::slice::from_ref(&fresh)).expect("journals"))
            .await
            .expect("syncs");
        assert_eq!(d.forget_never_put(), 1, "only the earlier run's");
        assert_eq!(d.stats().backlog, 1);
        let _ = std::fs::remove_dir_all(&dir);
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
