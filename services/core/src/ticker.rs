//! The one periodic-loop tick: every background loop (flushers, pollers,
//! evaluators) waits for its next tick or for shutdown, whichever comes
//! first, and a step that overran its period is not followed by catch-ups.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Ticks every `period` until shutdown; the first tick is immediate.
#[derive(Debug)]
pub struct Ticker {
    /// The underlying interval, set to delay (not burst) after a missed tick.
    interval: Interval,
}

impl Ticker {
    /// A ticker with `period` between ticks.
    pub fn new(period: Duration) -> Self {
        let mut interval = tokio::time::interval(period);
        // A step that outlasts the period must not be followed by a burst of catch-up steps.
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval }
    }

    /// Waits for the next tick: `true`, or `false` once `shutdown` is cancelled.
    pub async fn tick(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = self.interval.tick() => true,
            _ = shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_tick_is_immediate_and_shutdown_ends_the_wait_for_the_next() {
        let shutdown = CancellationToken::new();
        let mut ticker = Ticker::new(Duration::from_secs(600));
        let first = tokio::time::timeout(Duration::from_secs(5), ticker.tick(&shutdown)).await;
        assert_eq!(
            first.ok(),
            Some(true),
            "the first tick must not wait a period"
        );
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        });
        let next = tokio::time::timeout(Duration::from_secs(5), ticker.tick(&shutdown)).await;
        assert_eq!(next.ok(), Some(false), "shutdown must end the wait at once");
    }

    #[tokio::test]
    async fn the_second_tick_comes_a_period_after_the_start() {
        let shutdown = CancellationToken::new();
        let started = std::time::Instant::now();
        let mut ticker = Ticker::new(Duration::from_millis(20));
        assert!(ticker.tick(&shutdown).await);
        assert!(ticker.tick(&shutdown).await);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(19),
            "ticked after {elapsed:?}"
        );
    }
}
