//! Readiness, polled against deadlines: a process is up when it answers
//! `grpc.health.v1` SERVING; a front-end is ready when its shard map is.
//! A failed wait says which process and what it last reported (or the tail
//! of its log).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_proto::control::GetStatusRequest;
use cascade_proto::control::control_client::ControlClient;
use tokio::task::JoinSet;

use super::fleet::Instance;
use crate::launcher;
use crate::state::MapState;

/// Waits up to `grace` for every instance's shard map to be ready (or, with
/// `settled`, at least no longer building); returns the ones that are not,
/// with what each last reported.
pub(super) async fn maps_ready_within(
    instances: &[Instance],
    grace: Duration,
    settled: bool,
) -> Vec<(String, String)> {
    let until = Instant::now() + grace;
    let mut pending: Vec<(String, String, String)> = instances
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                i.addr.clone(),
                "not yet observed".to_owned(),
            )
        })
        .collect();
    loop {
        let mut still = Vec::new();
        for (name, addr, _) in pending {
            let state = map_wait_state(&addr, settled).await;
            if !state.is_empty() {
                still.push((name, addr, state));
            }
        }
        if still.is_empty() || Instant::now() >= until {
            return still.into_iter().map(|(n, _, s)| (n, s)).collect();
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Why the front-end at `addr` is still to be waited for ("" when it is not).
async fn map_wait_state(addr: &str, settled: bool) -> String {
    let ch = match cascade_core::clients::lazy_channel(addr, Duration::from_millis(500)) {
        Ok(ch) => ch,
        Err(e) => return e.to_string(),
    };
    match ControlClient::new(ch).get_status(GetStatusRequest {}).await {
        Ok(s) => s.into_inner().frontend.map_or_else(
            || "no front-end status".to_owned(),
            |f| {
                let state = MapState::from_wire(&f.shard_map);
                if state == MapState::Ready || (settled && state == MapState::Unusable) {
                    String::new()
                } else if f.shard_map_detail.is_empty() {
                    format!("shard map {state}")
                } else {
                    format!("shard map {state}: {}", f.shard_map_detail)
                }
            },
        ),
        Err(e) => format!("unreachable: {}", e.message()),
    }
}

/// Polls every new instance's health until all are SERVING (or one fails).
pub(super) async fn wait_all_ready(instances: &mut [Instance]) -> anyhow::Result<()> {
    let until = Instant::now() + launcher::READY_DEADLINE;
    let mut pending: Vec<usize> = (0..instances.len()).collect();
    while !pending.is_empty() {
        let mut set = JoinSet::new();
        for &i in &pending {
            let addr = instances[i].addr.clone();
            set.spawn(async move { (i, cascade_core::clients::is_serving(&addr).await) });
        }
        let mut still = Vec::new();
        while let Some(r) = set.join_next().await {
            let (i, ok) = r.context("readiness probe task")?;
            if !ok {
                still.push(i);
            }
        }
        for &i in &still {
            let inst = &mut instances[i];
            if !inst.child.alive() {
                bail!(
                    "{} exited during start-up; last log lines:\n{}",
                    inst.name,
                    launcher::log_tail(&inst.child.log, 15)
                );
            }
        }
        if !still.is_empty() && Instant::now() >= until {
            let inst = &instances[still[0]];
            bail!(
                "{} (and {} more) not SERVING within {:?}; last log lines of {}:\n{}",
                inst.name,
                still.len() - 1,
                launcher::READY_DEADLINE,
                inst.name,
                launcher::log_tail(&inst.child.log, 15)
            );
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
