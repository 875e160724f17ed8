//! Performing a scenario step against the running supervisor, as the CLI
//! would: capacity changes, restarts (progress goes to the journal through
//! a channel), faults, live settings and Service Health Dashboard posts.

use cascade_proto::supervisor as sv;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::clock::{parse_duration, to_wall};
use crate::scenario::Action;
use crate::supervisor::DEFAULT_RESTART_GRACE;

/// Performs `a`; returns what happened, in one line.
pub async fn apply(
    a: &Action,
    time_scale: f64,
    progress: &UnboundedSender<String>,
) -> anyhow::Result<String> {
    let mut c = crate::client::supervisor().await?;
    Ok(match a {
        Action::AddCapacity { count } => {
            let r = c
                .add_capacity(sv::CapacityRequest { count: *count })
                .await?
                .into_inner();
            format!("fleet {}", r.fleet_size)
        }
        Action::RemoveCapacity { count } => {
            let r = c
                .remove_capacity(sv::CapacityRequest { count: *count })
                .await?
                .into_inner();
            format!("fleet {}", r.fleet_size)
        }
        Action::RestartFrontends {
            batch,
            interval,
            grace,
        } => {
            let interval = incident_to_wall(interval.as_deref(), "0s", "interval", time_scale)?;
            let grace =
                incident_to_wall(grace.as_deref(), DEFAULT_RESTART_GRACE, "grace", time_scale)?;
            restart(&mut c, *batch, interval, grace, progress).await?
        }
        Action::Inject { fault } => {
            let f = c
                .inject_fault(sv::InjectFaultRequest {
                    spec_json: serde_json::to_string(fault)?,
                })
                .await?
                .into_inner();
            format!("{} {}", f.id, f.summary)
        }
        Action::Clear { id } => {
            let r = c
                .clear_faults(sv::ClearFaultsRequest {
                    id: id.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            format!("reverted {}", r.cleared.join(", "))
        }
        Action::Configure { target, key, value } => {
            let r = c
                .configure(sv::ConfigureRequest {
                    target: target.clone(),
                    key: key.clone(),
                    value: value.clone(),
                })
                .await?
                .into_inner();
            format!("{:?}", r.applied)
        }
        Action::ShdPost { message, backup } => {
            crate::client::shd(crate::client::ShdCmd::Post {
                message: message.clone(),
                backup: *backup,
                user: "operator".into(),
                password: "operator-password".into(),
            })
            .await?;
            "posted".into()
        }
    })
}

/// An incident duration from a step (or its default), in wall time.
fn incident_to_wall(
    d: Option<&str>,
    default: &str,
    key: &str,
    time_scale: f64,
) -> anyhow::Result<Duration> {
    let incident = parse_duration(key, d.unwrap_or(default)).map_err(anyhow::Error::msg)?;
    Ok(to_wall(incident, time_scale))
}

/// Starts a rolling restart in the supervisor; its progress goes to the
/// journal through `progress`.
async fn restart(
    c: &mut crate::client::Client,
    batch: u32,
    interval: Duration,
    grace: Duration,
    progress: &UnboundedSender<String>,
) -> anyhow::Result<String> {
    let mut stream = c
        .restart_frontends(sv::RestartRequest {
            batch,
            interval_ms: interval.as_millis() as u64,
            grace_ms: grace.as_millis() as u64,
        })
        .await?
        .into_inner();
    let progress = progress.clone();
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(p)) => {
                    let _ = progress.send(p.detail);
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = progress.send(format!("restart failed: {}", e.message()));
                    return;
                }
            }
        }
    });
    Ok(format!(
        "restarting {batch} at a time, {} wall between batches, {} wall grace",
        humantime::format_duration(interval),
        humantime::format_duration(grace)
    ))
}
