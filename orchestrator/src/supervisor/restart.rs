//! The rolling restart of the main front-end fleet, as a deployment runs
//! it: batches of K, D apart, each batch health-gated (a front-end whose
//! shard map is not ready within the grace is judged unhealthy, removed and
//! started again). Restarting too fast is the incident's recovery hazard:
//! population competes with request handling for the same worker slots.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Supervisor;
use super::readiness::{maps_ready_within, wait_all_ready};

/// Incident time a restarted front-end has to get a ready shard map before
/// the deployment judges it unhealthy (scenario steps' default).
pub const DEFAULT_RESTART_GRACE: &str = "15m";

/// Times a restart batch's slow front-ends are removed and started again
/// before the restart gives up ("recovery stalled").
const RESTART_ATTEMPTS: u32 = 10;

/// How to restart the fleet.
#[derive(Debug, Clone, Copy)]
pub struct RestartPlan {
    /// Front-ends restarted together.
    pub batch: usize,
    /// Wall time between batches.
    pub interval: Duration,
    /// Wall time a restarted front-end has to be ready (zero: no gate).
    pub grace: Duration,
}

impl RestartPlan {
    /// The plan `restart-frontends` asks for (times in ms), validated once
    /// for the control API and the dashboard alike.
    pub fn new(
        batch: u32,
        interval_ms: u64,
        grace_ms: u64,
    ) -> Result<Self, super::SupervisorError> {
        if batch == 0 {
            return Err(super::SupervisorError::InvalidArgument(
                "batch: restart at least 1 front-end at a time".into(),
            ));
        }
        Ok(Self {
            batch: batch as usize,
            interval: Duration::from_millis(interval_ms),
            grace: Duration::from_millis(grace_ms),
        })
    }
}

/// One step of a rolling restart, as it is reported.
#[derive(Debug, Clone, Default)]
pub struct RestartProgress {
    /// Front-ends restarted by this step.
    pub restarted: Vec<String>,
    /// Front-ends judged unhealthy and restarted again.
    pub removed: Vec<String>,
    /// Front-ends done so far.
    pub done: usize,
    /// Front-ends to restart in all.
    pub total: usize,
    /// One line for people.
    pub detail: String,
}

impl Supervisor {
    /// Restarts the main fleet batch by batch, reporting each step on
    /// `progress` (a closed receiver does not stop it). Returns when every
    /// batch is ready, when a batch stalls, or at shutdown.
    pub(super) async fn rolling_restart(
        &self,
        plan: RestartPlan,
        progress: mpsc::Sender<RestartProgress>,
    ) -> anyhow::Result<()> {
        let mut fleet = self.fleet.lock().await;
        let total = fleet.frontends.len();
        let mut start = 0;
        while start < total && !self.shutdown.is_cancelled() {
            let end = (start + plan.batch).min(total);
            let removed = self
                .restart_gated(&mut fleet, start..end, plan.grace, total, &progress)
                .await?;
            let restarted: Vec<String> = fleet.frontends[start..end]
                .iter()
                .map(|i| i.name.clone())
                .collect();
            tracing::info!(?restarted, done = end, total, "front-ends restarted");
            let detail = format!(
                "restarted {} ({end}/{total}){}",
                restarted.join(", "),
                if removed.is_empty() {
                    String::new()
                } else {
                    format!("; {} removal(s) for slowness", removed.len())
                }
            );
            let step = RestartProgress {
                restarted,
                removed,
                done: end,
                total,
                detail,
            };
            if progress.send(step).await.is_err() {
                tracing::warn!("restart client went away; continuing");
            }
            start = end;
            if start < total && !plan.interval.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(plan.interval) => {}
                    _ = self.shutdown.cancelled() => return Ok(()),
                }
            }
        }
        Ok(())
    }

    /// Restarts `range` of the main fleet and holds it to the health gate;
    /// returns every front-end judged unhealthy on the way.
    async fn restart_gated(
        &self,
        fleet: &mut super::fleet::Fleet,
        range: std::ops::Range<usize>,
        grace: Duration,
        total: usize,
        progress: &mpsc::Sender<RestartProgress>,
    ) -> anyhow::Result<Vec<String>> {
        let mut only: Option<Vec<String>> = None;
        let mut removed = Vec::new();
        for attempt in 1.. {
            self.restart_batch(&mut fleet.frontends[range.clone()], only.as_deref())
                .await?;
            let ready = wait_all_ready(&mut fleet.frontends[range.clone()]).await;
            self.publish_roster(fleet);
            ready?;
            if grace.is_zero() || self.shutdown.is_cancelled() {
                break;
            }
            let slow = maps_ready_within(&fleet.frontends[range.clone()], grace, false).await;
            if slow.is_empty() {
                break;
            }
            self.restart_removals
                .fetch_add(slow.len() as u64, Ordering::Relaxed);
            let names: Vec<String> = slow.iter().map(|(n, _)| n.clone()).collect();
            let why = &slow[0].1;
            tracing::warn!(?names, attempt, %why, "restarted front-ends not ready within the grace; removing and starting them again");
            let detail = format!(
                "{} not ready within the {} grace ({why}); judged unhealthy: removed and started again (attempt {attempt} of {RESTART_ATTEMPTS})",
                names.join(", "),
                humantime::format_duration(grace)
            );
            removed.extend(names.iter().cloned());
            let _ = progress
                .send(RestartProgress {
                    removed: names.clone(),
                    done: range.start,
                    total,
                    detail,
                    ..Default::default()
                })
                .await;
            if attempt >= RESTART_ATTEMPTS {
                anyhow::bail!(
                    "recovery stalled: {} still not ready after {attempt} restarts ({why})",
                    names.join(", ")
                );
            }
            only = Some(names);
        }
        Ok(removed)
    }
}
