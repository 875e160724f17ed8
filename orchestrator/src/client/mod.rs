//! The `cascade` commands that talk to a running supervisor (status,
//! capacity, restarts, down), the detached start, and the `kinesis` data-plane
//! poke, which talks straight to a front-end like `aws kinesis` does.

mod detach;
mod kinesis;
mod probe;
mod shd;

use std::time::{Duration, Instant};

pub use detach::{detach, detach_inner};
pub use kinesis::{EndpointArgs, KinesisCmd, kinesis};
pub use probe::{ProbeArgs, probe};
pub use shd::{ShdCmd, shd};

/// Whether progress lines of reused client code are silenced (a scenario
/// run journals its own lines instead).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Silences (or restores) the progress lines of `down`, `up --detach` and `shd post`.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// `println!` unless [`set_quiet`] was called.
macro_rules! say {
    ($($t:tt)*) => {
        if !$crate::client::is_quiet() {
            println!($($t)*);
        }
    };
}
pub(crate) use say;

/// Whether [`set_quiet`] silenced progress lines.
pub fn is_quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

use anyhow::{Context, bail};
use cascade_proto::supervisor as sv;
use cascade_proto::supervisor::supervisor_client::SupervisorClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::home;
use crate::status::Status;

/// Bad input found after flag parsing (exit code 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A client of the supervisor's control API that sends the run's token.
pub type Client = SupervisorClient<InterceptedService<Channel, cascade_core::auth::Bearer>>;

/// Connects to the running supervisor. The token comes from `$CASCADE_TOKEN`
/// (compose mode) or from the run's `supervisor.json`.
pub async fn supervisor() -> anyhow::Result<Client> {
    let sup = home::require()?;
    let ch = tokio::time::timeout(
        Duration::from_secs(10),
        cascade_core::clients::connect(&sup.control_addr),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 10 s"))
    .and_then(|r| r)
    .with_context(|| format!("cannot reach the supervisor at {}", sup.control_addr))?;
    let token = std::env::var(cascade_core::auth::USER_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .or(sup.token);
    Ok(SupervisorClient::with_interceptor(
        ch,
        cascade_core::auth::Bearer(token),
    ))
}

fn rpc_error(what: &str, s: tonic::Status) -> anyhow::Error {
    if s.code() == tonic::Code::InvalidArgument {
        return UsageError(format!("{what}: {}", s.message())).into();
    }
    anyhow::anyhow!("{what}: {:?}: {}", s.code(), s.message())
}

/// Fetches the status document.
pub async fn fetch_status() -> anyhow::Result<Status> {
    let mut c = supervisor().await?;
    let json = tokio::time::timeout(Duration::from_secs(10), c.status(sv::StatusRequest {}))
        .await
        .map_err(|_| anyhow::anyhow!("status: the supervisor did not answer within 10 s"))?
        .map_err(|s| rpc_error("status", s))?
        .into_inner()
        .json;
    serde_json::from_str(&json).context("parse the supervisor's status")
}

/// `cascade status [--json]`.
pub async fn status(json: bool) -> anyhow::Result<()> {
    let st = fetch_status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", st.render());
    }
    Ok(())
}

/// `cascade add-capacity N`.
pub async fn add_capacity(count: u32) -> anyhow::Result<()> {
    println!("adding {count} front-ends ...");
    let r = supervisor()
        .await?
        .add_capacity(sv::CapacityRequest { count })
        .await
        .map_err(|s| rpc_error("add-capacity", s))?
        .into_inner();
    println!(
        "added {} (fleet is now {} front-ends)",
        r.instances.join(", "),
        r.fleet_size
    );
    Ok(())
}

/// `cascade remove-capacity N`.
pub async fn remove_capacity(count: u32) -> anyhow::Result<()> {
    println!("removing {count} front-ends ...");
    let r = supervisor()
        .await?
        .remove_capacity(sv::CapacityRequest { count })
        .await
        .map_err(|s| rpc_error("remove-capacity", s))?
        .into_inner();
    println!(
        "removed {} (fleet is now {} front-ends)",
        r.instances.join(", "),
        r.fleet_size
    );
    Ok(())
}

/// `cascade restart-frontends`.
/// The floor of the default health gate, in wall time.
const MIN_DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The restart's default health gate: 15 incident minutes, but never less
/// than a process needs to start and populate its map at any time scale.
pub fn default_restart_grace(time_scale: f64) -> Duration {
    crate::clock::to_wall(Duration::from_secs(15 * 60), time_scale).max(MIN_DEFAULT_GRACE)
}

/// `cascade restart-frontends` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RestartArgs {
    /// Front-ends restarted together.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=512), conflicts_with = "all_at_once")]
    pub batch: u32,
    /// Wall time between batches (after the previous batch is ready), e.g. 2s.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Wall time a restarted front-end has to report a ready shard map; one
    /// that has not is judged unhealthy, removed and started again, and the
    /// next batch waits. Default: 15 incident minutes at the fleet's time
    /// scale, and at least 5s. 0s: no health gate (batches follow each other
    /// at once).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,
    /// Restart the whole fleet in one batch. RISK: every front-end then
    /// populates its shard map from peers that are themselves booting, so
    /// population starves request handling, slow front-ends are judged
    /// unhealthy and restarted again, and recovery can stall (the 2020
    /// hazard; see scenarios/fast-restart.toml).
    #[arg(long)]
    pub all_at_once: bool,
}

/// `cascade restart-frontends`: a health-gated rolling restart by default.
pub async fn restart(args: RestartArgs) -> anyhow::Result<()> {
    let st = fetch_status().await?;
    let batch = if args.all_at_once {
        st.main_fleet().count().max(1) as u32
    } else {
        args.batch
    };
    // The default gate: 15 incident minutes, but never less than a process
    // needs to start and populate its map at any time scale.
    let grace = args
        .grace
        .unwrap_or_else(|| default_restart_grace(st.time_scale));
    say!(
        "restarting {batch} at a time, {} between batches, health gate {}",
        humantime::format_duration(args.interval),
        if grace.is_zero() {
            "off".to_owned()
        } else {
            format!(
                "{} for each batch to be ready",
                humantime::format_duration(grace)
            )
        }
    );
    let mut stream = supervisor()
        .await?
        .restart_frontends(sv::RestartRequest {
            batch,
            interval_ms: args.interval.as_millis() as u64,
            grace_ms: grace.as_millis() as u64,
        })
        .await
        .map_err(|s| rpc_error("restart-frontends", s))?
        .into_inner();
    while let Some(p) = stream
        .message()
        .await
        .map_err(|s| rpc_error("restart-frontends", s))?
    {
        println!("{}", p.detail);
    }
    Ok(())
}

/// `cascade down`: asks the supervisor to stop and waits until it has.
pub async fn down() -> anyhow::Result<()> {
    let Some(sup) = home::read(&home::home())? else {
        say!(
            "nothing is running (no supervisor in {})",
            home::home().display()
        );
        return Ok(());
    };
    if sup.pid == 0 {
        bail!(
            "the fleet at ${}={} is not a local process (docker compose or a swarm stack?); stop it with `docker compose down` or `docker stack rm NAME`",
            home::CONTROL_ENV,
            sup.control_addr
        );
    }
    let mut client = supervisor().await?;
    client
        .shutdown(sv::ShutdownRequest {})
        .await
        .map_err(|s| rpc_error("down", s))?;
    let until = Instant::now() + Duration::from_secs(60);
    while home::pid_alive(sup.pid) {
        if Instant::now() > until {
            bail!("the supervisor (pid {}) has not exited after 60 s", sup.pid);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say!("stopped; logs kept in {}", sup.run_dir.display());
    Ok(())
}

/// `cascade configure TARGET KEY VALUE`.
pub async fn configure(target: String, key: String, value: String) -> anyhow::Result<()> {
    let applied = supervisor()
        .await?
        .configure(sv::ConfigureRequest { target, key, value })
        .await
        .map_err(|s| rpc_error("configure", s))?
        .into_inner()
        .applied;
    for (inst, v) in applied {
        println!("{inst}: {v}");
    }
    Ok(())
}

/// `cascade inject ...`: validates locally (nothing is sent on bad input).
pub async fn inject(spec: crate::faults::FaultSpec) -> anyhow::Result<()> {
    spec.validate().map_err(|e| UsageError(format!("{e:#}")))?;
    let f = supervisor()
        .await?
        .inject_fault(sv::InjectFaultRequest {
            spec_json: serde_json::to_string(&spec)?,
        })
        .await
        .map_err(|s| rpc_error("inject", s))?
        .into_inner();
    let until = if f.expires_ms > 0 {
        format!(
            " for {}",
            humantime::format_duration(Duration::from_millis(
                (f.expires_ms - f.started_ms).max(0) as u64
            ))
        )
    } else {
        " until cleared".to_owned()
    };
    println!("{} {} on {}{until}", f.id, f.summary, f.targets.join(", "));
    Ok(())
}

/// `cascade faults`.
pub async fn faults() -> anyhow::Result<()> {
    let faults = supervisor()
        .await?
        .list_faults(sv::ListFaultsRequest {})
        .await
        .map_err(|s| rpc_error("faults", s))?
        .into_inner()
        .faults;
    if faults.is_empty() {
        println!("no active faults");
    }
    let now = cascade_core::now_ms();
    for f in faults {
        let left = if f.expires_ms > 0 {
            format!("{:.1} s left", (f.expires_ms - now).max(0) as f64 / 1000.0)
        } else {
            "until cleared".to_owned()
        };
        println!(
            "{:<6} {:<50} {:<16} targets: {}",
            f.id,
            f.summary,
            left,
            f.targets.join(", ")
        );
    }
    Ok(())
}

/// `cascade clear [ID]`.
pub async fn clear(id: Option<String>) -> anyhow::Result<()> {
    let cleared = supervisor()
        .await?
        .clear_faults(sv::ClearFaultsRequest {
            id: id.unwrap_or_default(),
        })
        .await
        .map_err(|s| rpc_error("clear", s))?
        .into_inner()
        .cleared;
    if cleared.is_empty() {
        println!("no active faults");
    } else {
        println!("reverted {}", cleared.join(", "));
    }
    Ok(())
}
