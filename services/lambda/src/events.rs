//! `EventLateness`: how late EventBridge delivers the events that drive
//! invocations. In the incident EventBridge's bus ran on Kinesis, so event
//! delivery was delayed; Lambda sees that as invocations arriving long after
//! their event was put, which is its evidence that EventBridge carried the
//! failure (not that Lambda itself was slow).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use cascade_core::deps::{RecentFailure, Upstream};
use parking_lot::Mutex;

/// An event-driven invocation arriving this long (wall time) after its event
/// was put counts as late: far beyond EventBridge's normal dispatch tick.
pub const LATE_EVENT_THRESHOLD: Duration = Duration::from_secs(5);
/// Refused event ids remembered, so their redeliveries are recognised.
const REFUSED_KEPT: usize = 4096;

/// Event ids this host refused, oldest first, bounded.
#[derive(Debug, Default)]
struct Refused {
    /// Ids in arrival order, to forget the oldest.
    order: VecDeque<String>,
    /// The same ids, for lookup.
    ids: HashSet<String>,
}

/// Lateness of event-driven invocations, for status and the cause chain.
#[derive(Debug, Default)]
pub struct EventLateness {
    /// Deliveries measured (first attempts with a put time).
    measured: AtomicU64,
    /// Of those, deliveries later than [`LATE_EVENT_THRESHOLD`].
    late: AtomicU64,
    /// Lateness of the most recent measured delivery (ms).
    last_ms: AtomicI64,
    /// Largest lateness seen (ms).
    max_ms: AtomicI64,
    /// Redeliveries of events this host refused: their delay is partly
    /// this host's own doing, so they are not held against EventBridge.
    redelivered: AtomicU64,
    /// Events refused here, so a redelivery is not mistaken for lateness.
    refused: Mutex<Refused>,
    /// The last late delivery and when, for the cause.
    recent_late: RecentFailure,
}

/// A snapshot for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatenessStats {
    /// Deliveries measured.
    pub measured: u64,
    /// Deliveries later than the threshold.
    pub late: u64,
    /// Lateness of the most recent measured delivery (ms).
    pub last_ms: i64,
    /// Largest lateness seen (ms).
    pub max_ms: i64,
    /// Redeliveries of events refused here (not measured).
    pub redelivered: u64,
}

impl EventLateness {
    /// Nothing measured yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Measures one delivery of `event_id`, put at `put_at_ms`, arriving at
    /// `now_ms`. A put time of 0 (unknown) and redeliveries are not measured.
    pub fn arrived(&self, event_id: &str, put_at_ms: i64, now_ms: i64) {
        if !event_id.is_empty() && self.refused.lock().ids.contains(event_id) {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if put_at_ms <= 0 {
            return;
        }
        let lateness = (now_ms - put_at_ms).max(0);
        self.measured.fetch_add(1, Ordering::Relaxed);
        self.last_ms.store(lateness, Ordering::Relaxed);
        self.max_ms.fetch_max(lateness, Ordering::Relaxed);
        if u128::try_from(lateness).unwrap_or(0) > LATE_EVENT_THRESHOLD.as_millis() {
            self.late.fetch_add(1, Ordering::Relaxed);
            self.recent_late.record(format!(
                "{} delivered events {:.1} s late (threshold {} s)",
                Upstream::EventBridge,
                lateness as f64 / 1000.0,
                LATE_EVENT_THRESHOLD.as_secs()
            ));
        }
    }

    /// Remembers that this host refused `event_id`; EventBridge will retry it.
    pub fn refused(&self, event_id: &str) {
        if event_id.is_empty() {
            return;
        }
        let mut r = self.refused.lock();
        if r.ids.insert(event_id.to_owned()) {
            r.order.push_back(event_id.to_owned());
            if r.order.len() > REFUSED_KEPT
                && let Some(old) = r.order.pop_front()
            {
                r.ids.remove(&old);
            }
        }
    }

    /// "EventBridge delivered events N s late" while a late delivery is recent.
    pub fn cause(&self) -> Option<String> {
        self.recent_late.recent()
    }

    /// A snapshot for status.
    pub fn stats(&self) -> LatenessStats {
        LatenessStats {
            measured: self.measured.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            last_ms: self.last_ms.load(Ordering::Relaxed),
            max_ms: self.max_ms.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use cascade_core::deps::CAUSE_WINDOW;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn late_deliveries_name_eventbridge_while_recent() {
        let l = EventLateness::new();
        l.arrived("a", 10_000, 10_150);
        assert_eq!(l.cause(), None, "a normal dispatch delay");
        l.arrived("b", 10_000, 22_500);
        let cause = l.cause().unwrap_or_default();
        assert!(
            cause.starts_with("EventBridge delivered events 12.5 s late"),
            "{cause}"
        );
        let s = l.stats();
        assert_eq!(
            (s.measured, s.late, s.last_ms, s.max_ms),
            (2, 1, 12_500, 12_500)
        );

        // Timely deliveries since, and the window has passed: no cause.
        tokio::time::advance(CAUSE_WINDOW + Duration::from_millis(1)).await;
        l.arrived("c", 30_000, 30_100);
        assert_eq!(l.cause(), None);
        assert_eq!(l.stats().last_ms, 100);
    }

    #[test]
    fn redeliveries_of_refused_events_and_unknown_put_times_are_not_measured() {
        let l = EventLateness::new();
        l.refused("a");
        l.arrived("a", 1, 60_000);
        l.arrived("b", 0, 60_000);
        let s = l.stats();
        assert_eq!((s.measured, s.late, s.redelivered), (0, 0, 1));
        assert_eq!(l.cause(), None);
        for i in 0..=REFUSED_KEPT {
            l.refused(&i.to_string());
        }
        l.arrived("0", 1, 60_000);
        assert_eq!(l.stats().late, 1, "the oldest refusal is forgotten");
    }
}
