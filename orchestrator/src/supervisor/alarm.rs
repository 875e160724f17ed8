//! The thread-consumption alarm (remediation `thread-alarm`, AWS's second):
//! it watches each main-fleet front-end's *projected* threads, base threads
//! plus every member its membership listing shows (learned or still inside
//! the learning delay), against its kernel limit. When one would not fit,
//! it fires, and its runbook removes the newest front-ends of that
//! membership domain until the projection fits, before the learning delay
//! runs out. Nothing here stops a thread: the limit stays the kernel's; the
//! alarm only acts on capacity, as an operator paged by it would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::Supervisor;
use super::fleet::Instance;
use super::watch::Role;
use crate::status::{FrontendEntry, is_main_fleet};

/// The alarm's state.
#[derive(Default)]
pub(super) struct Alarm {
    /// Every alarm raised so far, as its message.
    raised: Mutex<Vec<String>>,
    /// Whether the runbook is running now (one at a time).
    busy: AtomicBool,
}

impl Alarm {
    /// The alarms raised so far.
    pub fn raised(&self) -> Vec<String> {
        self.raised.lock().clone()
    }
}

impl Supervisor {
    /// Checks the latest observation; fires the alarm and starts its runbook
    /// when a front-end's projection does not fit its limit.
    pub(super) fn thread_alarm(self: &Arc<Self>) {
        let Some(limit) = self.plan.limit else {
            return;
        };
        let Some(worst) = self.worst_projection(limit) else {
            return;
        };
        if self.alarm.busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let fits = (limit - u64::from(worst.base_threads) + 1) as usize;
        let domain = worst.fleet.clone();
        // A projection seen before the runbook's removals reached membership
        // is not a new alarm.
        let members = self
            .roster()
            .iter()
            .filter(|r| r.role == Role::Frontend && r.fleet == domain)
            .count();
        if members <= fits {
            self.alarm.busy.store(false, Ordering::SeqCst);
            return;
        }
        let msg = format!(
            "thread-consumption alarm: {} projects {} threads ({} base + {} members) against its limit of {limit}; \
             runbook: shrink {} to {fits} front-ends",
            worst.name,
            worst.base_threads + worst.peers_total,
            worst.base_threads,
            worst.peers_total,
            if domain.is_empty() {
                "the fleet"
            } else {
                domain.as_str()
            },
        );
        tracing::warn!("{msg}");
        self.alarm.raised.lock().push(msg);
        let sup = self.clone();
        tokio::spawn(async move {
            sup.alarm_runbook(&domain, fits).await;
            sup.watch_once().await;
            sup.alarm.busy.store(false, Ordering::SeqCst);
        });
    }

    /// The main-fleet front-end whose projection exceeds `limit` the most.
    fn worst_projection(&self, limit: u64) -> Option<FrontendEntry> {
        self.observed_frontends()
            .into_iter()
            .filter(|f| is_main_fleet(&f.fleet) && f.base_threads > 0)
            .filter(|f| u64::from(f.base_threads + f.peers_total) > limit)
            .max_by_key(|f| f.peers_total)
    }

    /// The runbook: shrink membership domain `domain` to `fits` front-ends,
    /// removing the newest first.
    async fn alarm_runbook(&self, domain: &str, fits: usize) {
        let mut fleet = self.fleet.lock().await;
        let members = fleet.frontends.iter().filter(|i| i.fleet == domain).count();
        if members <= fits {
            return;
        }
        let mut extra = members - fits;
        // The newest members of the domain are the last ones in the fleet.
        let mut gone: Vec<Instance> = Vec::new();
        let mut keep = Vec::new();
        for inst in fleet.frontends.drain(..).rev() {
            if inst.fleet == domain && extra > 0 {
                extra -= 1;
                gone.push(inst);
            } else {
                keep.push(inst);
            }
        }
        keep.reverse();
        fleet.frontends = keep;
        self.publish_roster(&fleet);
        drop(fleet);
        for inst in gone {
            tracing::warn!(instance = %inst.name, "thread-alarm runbook: removing");
            inst.stop_and_remove().await;
        }
    }
}
