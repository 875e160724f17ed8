//! `MemoryBudget`: a MODEL of the invocation host's memory. In the incident the
//! metrics agent's growing buffer and the invocations competed for one host's
//! RAM ("memory contention on invocation hosts"); here both draw on one budget
//! of bytes, while the bytes themselves are real allocations made by the caller.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

/// Bytes in one MiB, for messages.
const MIB: f64 = 1024.0 * 1024.0;

/// A model of the invocation host's memory: a fixed number of bytes that the
/// metrics agent's buffer and running invocations both reserve from.
///
/// The budget is a model (we do not cap the process's real RSS, which would
/// kill it rather than refuse one call), but every reserved byte is backed by a
/// real allocation held by whoever reserved it.
///
/// The two holders are treated differently on purpose, as on the real host:
/// - invocations *try* to reserve and are refused when the bytes are not free;
/// - the metrics agent's reservation always succeeds. Up to the whole budget it
///   simply crowds invocations out; above the budget it still keeps its data
///   (the latent bug: nothing bounds the agent) and the budget reports the
///   excess as over-commit instead of refusing it, the way a real host would
///   swap or page rather than say no to an already-running daemon.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Size of the modelled host memory, in bytes.
    limit: u64,
    /// Bytes reserved right now, by holder.
    usage: Mutex<Usage>,
}

/// Bytes reserved, by holder.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Held by the metrics agent's buffer.
    pub agent: u64,
    /// Held by running invocations together.
    pub invocations: u64,
    /// Invocations holding a reservation right now.
    pub running: u64,
    /// Held by a memory hog (a fault: another tenant of the host).
    pub hog: u64,
}

impl Usage {
    /// All reserved bytes.
    pub fn total(&self) -> u64 {
        self.agent + self.invocations + self.hog
    }
}

/// Why an invocation could not reserve its memory: the numbers at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contention {
    /// The budget's size in bytes.
    pub limit: u64,
    /// What the invocation asked for, in bytes.
    pub wanted: u64,
    /// Who held the budget when it was refused.
    pub usage: Usage,
}

impl Contention {
    /// Whether the metrics agent's bytes are what crowd the invocation out:
    /// without them it would have fit.
    pub fn agent_crowds_out(&self) -> bool {
        (self.usage.total() - self.usage.agent).saturating_add(self.wanted) <= self.limit
    }
}

impl std::fmt::Display for Contention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory contention on the invocation host: the metrics agent buffer holds {} of the {} budget \
             ({} running invocation(s) hold {}{}); cannot reserve {} for this invocation",
            human(self.usage.agent),
            human(self.limit),
            self.usage.running,
            human(self.usage.invocations),
            if self.usage.hog > 0 {
                format!(", a memory hog holds {}", human(self.usage.hog))
            } else {
                String::new()
            },
            human(self.wanted),
        )
    }
}

/// Bytes for people: "14.1 MiB", "52.0 KiB", "512 B".
pub fn human(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} B")
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes, nothing reserved.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            usage: Mutex::new(Usage::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        self.usage.lock()
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Who holds what right now.
    pub fn usage(&self) -> Usage {
        *self.lock()
    }

    /// Reserved bytes beyond the budget (only the agent can push it there).
    pub fn overcommit(&self) -> u64 {
        self.lock().total().saturating_sub(self.limit)
    }

    /// Reserves `bytes` for one invocation, or says who holds the memory.
    /// The reservation is returned when the guard drops.
    pub fn try_reserve_invocation(
        self: &Arc<Self>,
        bytes: u64,
    ) -> Result<InvocationReservation, Contention> {
        let mut usage = self.lock();
        if usage.total().saturating_add(bytes) > self.limit {
            return Err(Contention {
                limit: self.limit,
                wanted: bytes,
                usage: *usage,
            });
        }
        usage.invocations += bytes;
        usage.running += 1;
        Ok(InvocationReservation {
            budget: self.clone(),
            bytes,
        })
    }

    /// Charges `bytes` to the metrics agent. Never refused (see the type's doc).
    pub fn charge_agent(&self, bytes: u64) {
        let mut usage = self.lock();
        usage.agent = usage.agent.saturating_add(bytes);
    }

    /// Sets the bytes a memory hog holds (0 releases them).
    pub fn set_hog(&self, bytes: u64) {
        self.lock().hog = bytes;
    }

    /// Returns `bytes` the metrics agent freed (flushed or dropped entries).
    pub fn release_agent(&self, bytes: u64) {
        let mut usage = self.lock();
        usage.agent = usage.agent.saturating_sub(bytes);
    }
}

/// One invocation's share of the budget, returned on drop.
#[derive(Debug)]
pub struct InvocationReservation {
    /// The budget it came from.
    budget: Arc<MemoryBudget>,
    /// Bytes reserved.
    bytes: u64,
}

impl Drop for InvocationReservation {
    fn drop(&mut self) {
        let mut usage = self.budget.lock();
        usage.invocations = usage.invocations.saturating_sub(self.bytes);
        usage.running = usage.running.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_refused_when_agent_holds_the_budget_and_admitted_after_release() {
        let budget = MemoryBudget::new(10 * 1024 * 1024);
        budget.charge_agent(9 * 1024 * 1024);
        let err = budget
            .try_reserve_invocation(2 * 1024 * 1024)
            .expect_err("9 MiB held + 2 MiB wanted exceeds 10 MiB");
        let msg = err.to_string();
        assert!(msg.contains("memory contention"), "{msg}");
        assert!(msg.contains("holds 9.0 MiB"), "{msg}");
        assert!(msg.contains("of the 10.0 MiB budget"), "{msg}");
        assert!(msg.contains("cannot reserve 2.0 MiB"), "{msg}");
        budget.release_agent(2 * 1024 * 1024);
        let r = budget
            .try_reserve_invocation(2 * 1024 * 1024)
            .expect("7 + 2 fits in 10");
        assert_eq!(budget.usage().invocations, 2 * 1024 * 1024);
        drop(r);
        assert_eq!(budget.usage().invocations, 0);
        assert_eq!(budget.usage().running, 0);
    }

    #[test]
    fn the_agent_crowds_an_invocation_out_only_if_it_would_fit_without_the_agent() {
        let budget = MemoryBudget::new(100);
        budget.charge_agent(50);
        let _running = budget.try_reserve_invocation(30).expect("30 of 50 free");
        let e = budget.try_reserve_invocation(40).expect_err("20 free");
        assert!(e.agent_crowds_out(), "30 + 40 fits without the agent");
        let e = budget.try_reserve_invocation(80).expect_err("20 free");
        assert!(!e.agent_crowds_out(), "30 + 80 never fits");
    }

    #[test]
    fn agent_charge_over_the_budget_is_kept_and_reported_as_overcommit() {
        let budget = MemoryBudget::new(1000);
        budget.charge_agent(1500);
        assert_eq!(budget.usage().agent, 1500);
        assert_eq!(budget.overcommit(), 500);
        assert!(budget.try_reserve_invocation(1).is_err());
    }

    #[test]
    fn concurrent_invocations_share_the_budget() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_reserve_invocation(60).expect("60 of 100");
        assert!(budget.try_reserve_invocation(60).is_err());
        drop(a);
        assert!(budget.try_reserve_invocation(60).is_ok());
    }
}
