//! `EventLateness`: how late EventBridge delivers the events that drive
//! invocations. In the incident EventBridge's bus ran on Kinesis, so event
//! delivery was delayed; Lambda sees that as invocations arriving long after
//! their event was put, which is its evidence that EventBridge carried the
//! failure; deliveries Lambda's own refusals may have held up do not count.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use cascade_core::deps::{RecentFailure, Upstream};

/// An event-driven invocation arriving this long (wall time) after its event
/// was put counts as late: far beyond EventBridge's normal dispatch tick.
pub const LATE_EVENT_THRESHOLD: Duration = Duration::from_secs(5);

/// Lateness of event-driven invocations, for status and the cause chain.
#[derive(Debug, Default)]
pub struct EventLateness {
    /// Deliveries measured (with a put time, not held up by this host).
    measured: AtomicU64,
    /// Of those, deliveries later than [`LATE_EVENT_THRESHOLD`].
    late: AtomicU64,
    /// Lateness of the most recent measured delivery (ms).
    last_ms: AtomicI64,
    /// Largest lateness seen (ms).
    max_ms: AtomicI64,
    /// When this host last refused a delivery (ms since the epoch; 0 = never).
    last_refused_ms: AtomicI64,
    /// Deliveries whose wait overlapped a refusal here: EventBridge retries
    /// a refused event and holds the rest of Lambda's queue behind it, so
    /// their delay is partly this host's own doing and not held against
    /// EventBridge.
    held_by_refusals: AtomicU64,
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
    /// Deliveries not measured because this host refused deliveries meanwhile.
    pub held_by_refusals: u64,
}

impl EventLateness {
    /// Nothing measured yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Measures one delivery of an event put at `put_at_ms`, arriving at
    /// `now_ms`. A put time of 0 (unknown) is not measured, nor is a
    /// delivery this host may have held up by refusing since the put.
    pub fn arrived(&self, put_at_ms: i64, now_ms: i64) {
        if put_at_ms <= 0 {
            return;
        }
        if self.last_refused_ms.load(Ordering::Relaxed) >= put_at_ms {
            self.held_by_refusals.fetch_add(1, Ordering::Relaxed);
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

    /// Remembers that this host refused a delivery at `now_ms`.
    pub fn refused(&self, now_ms: i64) {
        self.last_refused_ms.fetch_max(now_ms, Ordering::Relaxed);
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
            held_by_refusals: self.held_by_refusals.load(Ordering::Relaxed),
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
        l.arrived(10_000, 10_150);
        assert_eq!(l.cause(), None, "a normal dispatch delay");
        l.arrived(10_000, 22_500);
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
        l.arrived(30_000, 30_100);
        assert_eq!(l.cause(), None);
        assert_eq!(l.stats().last_ms, 100);
    }

    #[test]
    fn deliveries_this_host_held_up_and_unknown_put_times_are_not_measured() {
        let l = EventLateness::new();
        l.refused(20_000);
        l.arrived(15_000, 40_000);
        l.arrived(20_000, 40_000);
        l.arrived(0, 40_000);
        let s = l.stats();
        assert_eq!((s.measured, s.late, s.held_by_refusals), (0, 0, 2));
        assert_eq!(l.cause(), None);
        l.arrived(20_001, 40_000);
        assert_eq!(
            l.stats().late,
            1,
            "put after the last refusal: EventBridge's delay"
        );
    }
}
