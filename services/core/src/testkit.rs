//! Waiting in tests (style rule 8): poll a check against a deadline instead
//! of sleeping, and on timeout panic with what was awaited, the deadline and
//! what the check last saw. One polling loop serves the blocking form (for
//! tests that drive processes) and the async form (for tokio tests).

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Ok`, blocking the thread between checks.
/// `check`'s `Err` text is what it saw; past `deadline` the last one is in
/// the panic message, beside `what`.
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let mut poll = Poll::start(what, deadline);
    loop {
        match poll.next(check()) {
            Ok(v) => return v,
            Err(pause) => std::thread::sleep(pause),
        }
    }
}

/// [`eventually`] for async checks: the same loop, waiting with
/// `tokio::time::sleep` so other tasks run between checks.
pub async fn eventually_async<T, Fut>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Fut,
) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let mut poll = Poll::start(what, deadline);
    loop {
        match poll.next(check().await) {
            Ok(v) => return v,
            Err(pause) => tokio::time::sleep(pause).await,
        }
    }
}

/// `Ok(())` when `holds`, else `Err(seen())`: the usual ending of a check
/// whose result is a condition.
pub fn holds(holds: bool, seen: impl FnOnce() -> String) -> Result<(), String> {
    if holds { Ok(()) } else { Err(seen()) }
}

/// The loop both forms share: when to give up, how long to pause, and the
/// message when the deadline passes.
struct Poll<'a> {
    /// What is awaited, in words.
    what: &'a str,
    /// How long the wait may take.
    deadline: Duration,
    /// When it gives up.
    until: Instant,
    /// Pause between checks.
    pause: Duration,
    /// Checks made so far.
    checks: u32,
}

impl<'a> Poll<'a> {
    fn start(what: &'a str, deadline: Duration) -> Self {
        Self {
            what,
            deadline,
            until: Instant::now() + deadline,
            pause: pause_for(deadline),
            checks: 0,
        }
    }

    /// The value once a check succeeds; otherwise the pause before the next
    /// check, or a panic once a check fails at or after the deadline.
    fn next<T>(&mut self, seen: Result<T, String>) -> Result<T, Duration> {
        self.checks += 1;
        match seen {
            Ok(v) => Ok(v),
            Err(seen) if Instant::now() >= self.until => panic!(
                "timed out after {:?} waiting for {} ({} checks); last seen:\n{seen}",
                self.deadline, self.what, self.checks
            ),
            Err(_) => Err(self.pause),
        }
    }
}

/// About a hundred checks over the deadline, between 1 ms and 100 ms apart:
/// quick for in-process waits, gentle on waits that run a command per check.
fn pause_for(deadline: Duration) -> Duration {
    (deadline / 100).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn returns_the_first_ok_value() {
        let calls = Cell::new(0);
        let v = eventually("the third call", Duration::from_secs(5), || {
            calls.set(calls.get() + 1);
            if calls.get() == 3 {
                Ok(calls.get() * 10)
            } else {
                Err(format!("call {}", calls.get()))
            }
        });
        assert_eq!((v, calls.get()), (30, 3));
    }

    #[test]
    fn a_timeout_names_the_wait_the_deadline_and_the_last_thing_seen() {
        let calls = Cell::new(0);
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually::<()>("a miracle", Duration::from_millis(30), || {
                calls.set(calls.get() + 1);
                Err(format!("attempt {}", calls.get()))
            })
        }))
        .expect_err("never Ok");
        let msg = panic
            .downcast_ref::<String>()
            .expect("a formatted message")
            .clone();
        let last = format!("attempt {}", calls.get());
        assert!(
            msg.contains("a miracle") && msg.contains("30ms") && msg.ends_with(&last),
            "{msg}"
        );
        assert!(calls.get() >= 2, "checked again before giving up: {msg}");
    }

    #[test]
    fn the_check_runs_at_least_once_even_with_no_time() {
        assert_eq!(
            eventually("at once", Duration::ZERO, || Ok::<_, String>(7)),
            7
        );
    }

    #[tokio::test]
    async fn the_async_form_lets_other_tasks_run_between_checks() {
        let (tx, rx) = tokio::sync::watch::channel(0);
        tokio::spawn(async move {
            for i in 1..=5 {
                tokio::task::yield_now().await;
                let _ = tx.send(i);
            }
        });
        let got = eventually_async("the fifth value", Duration::from_secs(5), || {
            let v = *rx.borrow();
            async move { holds(v == 5, || format!("value {v}")).map(|()| v) }
        })
        .await;
        assert_eq!(got, 5);
    }

    #[test]
    fn pauses_scale_with_the_deadline_within_bounds() {
        let ms = |n| Duration::from_millis(n);
        assert_eq!(pause_for(Duration::ZERO), ms(1));
        assert_eq!(pause_for(ms(1000)), ms(10));
        assert_eq!(pause_for(ms(3000)), ms(30));
        assert_eq!(pause_for(Duration::from_secs(60)), ms(100));
    }
}
