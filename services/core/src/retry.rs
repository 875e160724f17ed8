//! The one start-up retry: a service's boot steps (connect to a dependency,
//! register, create its stream) are tried again with a fixed or doubling
//! delay until they succeed, a deadline passes, or shutdown is cancelled.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// When to try again and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub delay: Duration,
    /// Longest wait: each wait doubles up to this (equal to `delay` for a fixed delay).
    pub max_delay: Duration,
    /// A failure this long after the first attempt started is the last one.
    pub deadline: Duration,
}

impl RetryPolicy {
    /// The same `delay` after every failure, giving up after `deadline`.
    pub const fn fixed(delay: Duration, deadline: Duration) -> Self {
        Self {
            delay,
            max_delay: delay,
            deadline,
        }
    }

    /// Waits of `first`, doubling up to `max`, giving up after `deadline`.
    pub const fn backoff(first: Duration, max: Duration, deadline: Duration) -> Self {
        Self {
            delay: first,
            max_delay: max,
            deadline,
        }
    }

    /// The wait after `delay`.
    fn next_delay(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max_delay)
    }
}

/// Why [`retry_until`] stopped without a success.
#[derive(Debug)]
pub enum RetryError<E> {
    /// An attempt failed after the deadline had passed.
    DeadlinePassed {
        /// The policy's deadline.
        deadline: Duration,
        /// Attempts made, all failed.
        attempts: u32,
        /// The last attempt's error.
        last: E,
    },
    /// Shutdown was cancelled first (an attempt under way was dropped).
    Cancelled {
        /// Attempts that finished, all failed.
        attempts: u32,
        /// The last finished attempt's error, if any finished.
        last: Option<E>,
    },
}

impl<E> RetryError<E> {
    /// The last finished attempt's error, if any finished.
    pub fn last(&self) -> Option<&E> {
        match self {
            Self::DeadlinePassed { last, .. } => Some(last),
            Self::Cancelled { last, .. } => last.as_ref(),
        }
    }

    /// Whether shutdown ended the retries.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled { .. })
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeadlinePassed { deadline, last, .. } => {
                write!(f, "gave up after {deadline:?}: {last}")
            }
            Self::Cancelled { .. } => f.write_str("shut down before it succeeded"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for RetryError<E> {}

/// Runs `attempt` until it succeeds, a failure comes after `policy.deadline`,
/// or `shutdown` is cancelled (at once, even mid-attempt). `on_retry` sees
/// each failure that will be tried again, to log it. An attempt is not cut
/// short by the deadline: it is bounded by its own call timeout.
pub async fn retry_until<T, E, F, Fut>(
    policy: RetryPolicy,
    shutdown: &CancellationToken,
    mut attempt: F,
    mut on_retry: impl FnMut(&E),
) -> Result<T, RetryError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let until = Instant::now() + policy.deadline;
    let mut delay = policy.delay;
    let mut attempts = 0;
    let mut last = None;
    loop {
        if shutdown.is_cancelled() {
            return Err(RetryError::Cancelled { attempts, last });
        }
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(RetryError::Cancelled { attempts, last }),
            r = attempt() => r,
        };
        attempts += 1;
        match result {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= until => {
                return Err(RetryError::DeadlinePassed {
                    deadline: policy.deadline,
                    attempts,
                    last: e,
                });
            }
            Err(e) => {
                on_retry(&e);
                last = Some(e);
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(RetryError::Cancelled { attempts, last }),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = policy.next_delay(delay);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// An attempt that fails its first `failures` calls, naming the call.
    fn failing(failures: u32, calls: &AtomicU32) -> impl Future<Output = Result<u32, String>> {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n <= failures {
                Err(format!("failure {n}"))
            } else {
                Ok(n)
            }
        }
    }

    #[tokio::test]
    async fn succeeds_after_failures_and_reports_each_retry() {
        let calls = AtomicU32::new(0);
        let mut seen = Vec::new();
        let r = retry_until(
            RetryPolicy::fixed(MS, Duration::from_secs(10)),
            &CancellationToken::new(),
            || failing(3, &calls),
            |e: &String| seen.push(e.clone()),
        )
        .await;
        assert_eq!(r.expect("fourth attempt succeeds"), 4);
        assert_eq!(seen, ["failure 1", "failure 2", "failure 3"]);
    }

    #[tokio::test]
    async fn gives_up_after_the_deadline_with_the_last_error() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let r = retry_until(
            RetryPolicy::fixed(5 * MS, 50 * MS),
            &CancellationToken::new(),
            || failing(u32::MAX, &calls),
            |_| {},
        )
        .await;
        let elapsed = started.elapsed();
        let Err(RetryError::DeadlinePassed {
            deadline,
            attempts,
            last,
        }) = r
        else {
            panic!("expected DeadlinePassed, got {r:?}");
        };
        assert_eq!(deadline, 50 * MS);
        assert!(attempts >= 2, "only {attempts} attempts");
        assert_eq!(last, format!("failure {attempts}"));
        assert!(elapsed >= 50 * MS, "gave up early, after {elapsed:?}");
        assert!(
            elapsed < Duration::from_secs(5),
            "gave up late, after {elapsed:?}"
        );
        let e = RetryError::DeadlinePassed {
            deadline,
            attempts,
            last: "boom",
        };
        assert_eq!(e.to_string(), "gave up after 50ms: boom");
    }

    #[tokio::test]
    async fn cancellation_ends_the_wait_between_attempts() {
        let calls = AtomicU32::new(0);
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(20 * MS).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let r = retry_until(
            RetryPolicy::fixed(Duration::from_secs(60), Duration::from_secs(600)),
            &shutdown,
            || failing(u32::MAX, &calls),
            |_| {},
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "kept waiting {:?} after shutdown",
            started.elapsed()
        );
        let Err(RetryError::Cancelled { attempts, last }) = r else {
            panic!("expected Cancelled, got {r:?}");
        };
        assert_eq!((attempts, last.as_deref()), (1, Some("failure 1")));
    }

    #[tokio::test]
    async fn cancellation_drops_an_attempt_under_way() {
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(20 * MS).await;
            cancel.cancel();
        });
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            retry_until(
                RetryPolicy::fixed(MS, Duration::from_secs(600)),
                &shutdown,
                std::future::pending::<Result<(), String>>,
                |_| {},
            ),
        )
        .await
        .expect("the hanging attempt is dropped on shutdown");
        let e = r.expect_err("never succeeds");
        assert!(e.is_cancelled() && e.last().is_none(), "{e:?}");
        assert_eq!(e.to_string(), "shut down before it succeeded");
    }

    #[tokio::test]
    async fn an_already_cancelled_token_makes_no_attempt() {
        let calls = AtomicU32::new(0);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let r = retry_until(
            RetryPolicy::fixed(MS, Duration::from_secs(10)),
            &shutdown,
            || failing(0, &calls),
            |_| {},
        )
        .await;
        assert!(matches!(r, Err(RetryError::Cancelled { attempts: 0, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_fixed_stays() {
        let p = RetryPolicy::backoff(100 * MS, 700 * MS, Duration::from_secs(1));
        let mut d = p.delay;
        let waits: Vec<_> = (0..5)
            .map(|_| {
                let now = d;
                d = p.next_delay(d);
                now.as_millis()
            })
            .collect();
        assert_eq!(waits, [100, 200, 400, 700, 700]);
        let f = RetryPolicy::fixed(200 * MS, Duration::from_secs(1));
        assert_eq!(f.next_delay(f.delay), 200 * MS);
    }
}
