//! The supervisor: it owns every process of a run. It starts the back end
//! and the front-end fleet under their kernel thread limits, adds, removes
//! and restarts front-ends on request, watches every process out of band
//! through `Control.GetStatus`, serves the `Supervisor` control port, and
//! on any way out (Ctrl-C, SIGTERM, `cascade down`, an error) stops
//! everything and removes what the run created.
//!
//! One concern a file: `fleet` (lifecycle), `readiness`, `restart` (the
//! rolling restart), `watch` (observation and status), `alarm`, `faults`, `shd`,
//! `settings`, and `api` (the gRPC handlers).

mod alarm;
mod api;
mod args;
mod aws_lb;
mod dashboard;
mod faults;
mod fleet;
mod readiness;
mod restart;
mod settings;
mod shd;
mod watch;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, bail};
use cascade_proto::supervisor as sv;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

pub use args::{BootstrapArg, MAX_FLEET, UpArgs, check_host_budget};
pub use restart::DEFAULT_RESTART_GRACE;
pub use watch::{HEALTH_WINDOW_SECS, MIN_CALLS, judge};

use crate::docker::DockerEnv;
use crate::home;
use crate::launcher;
use crate::limits::LimitPlan;
use crate::traffic::Recorder;
use fleet::Fleet;

/// Why a supervisor request was refused or failed; `api` maps each to one
/// gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The request itself is wrong (names the field and what is valid).
    #[error("{0}")]
    InvalidArgument(String),
    /// The run is not in a state where the request can work.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A dependency of the request does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A process of the run refused the call; its status is passed on.
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
}

impl SupervisorError {
    /// A bad request, from a validation error.
    pub fn invalid(e: anyhow::Error) -> Self {
        Self::InvalidArgument(format!("{e:#}"))
    }
}

impl From<anyhow::Error> for SupervisorError {
    fn from(e: anyhow::Error) -> Self {
        Self::FailedPrecondition(format!("{e:#}"))
    }
}

/// A run in progress.
pub struct Supervisor {
    /// The run's flags.
    args: UpArgs,
    /// The run's token: mutating control calls need it, and the supervisor
    /// sends it with its own calls to the services (see `cascade_core::auth`).
    token: String,
    /// Logs and state of this run.
    run_dir: PathBuf,
    /// How each front-end's thread limit is enforced (and the run's cgroup).
    plan: LimitPlan,
    /// Every process. Lifecycle changes hold it; the watcher never waits for it.
    fleet: tokio::sync::Mutex<Fleet>,
    /// The roster and what the last watch saw of it, behind one lock.
    observed: Mutex<watch::Observed>,
    /// Customer traffic history (ground truth of impact).
    recorder: Arc<Recorder>,
    /// Service Health Dashboard posts.
    shd: Mutex<Vec<sv::ShdPost>>,
    /// Faults in force.
    faults: faults::Faults,
    /// The thread-consumption alarm (remediation `thread-alarm`).
    alarm: alarm::Alarm,
    /// Restarted front-ends removed for not being ready within the grace.
    restart_removals: AtomicU64,
    /// The balanced AWS Kinesis endpoint, `http://ADDR`, once it serves.
    kinesis_aws: Mutex<Option<String>>,
    /// The live dashboard's frames and address.
    dashboard: dashboard::Hub,
    /// Cancelled to take the run down.
    shutdown: CancellationToken,
    /// Docker mode: the engine, the compose project and its containers.
    docker: Option<DockerEnv>,
    /// The reaper's pipe: it removes the run's cgroups once this closes,
    /// even if the supervisor is SIGKILLed (held until the run is gone).
    _reaper: Option<std::os::fd::OwnedFd>,
}

impl Supervisor {
    /// `add-capacity N`: returns the new front-ends and the fleet's size.
    async fn add_capacity(&self, n: u32) -> Result<(Vec<String>, u32), SupervisorError> {
        if n == 0 {
            return Err(SupervisorError::InvalidArgument(
                "count: add at least 1 front-end".into(),
            ));
        }
        let mut fleet = self.fleet.lock().await;
        let instances = self.add_frontends(&mut fleet, n).await?;
        let size = fleet.frontends.len() as u32;
        drop(fleet);
        tracing::info!(?instances, fleet = size, "capacity added");
        self.watch_once().await;
        Ok((instances, size))
    }

    /// `remove-capacity N`: returns the removed front-ends and the fleet's size.
    async fn remove_capacity(&self, n: u32) -> Result<(Vec<String>, u32), SupervisorError> {
        let mut fleet = self.fleet.lock().await;
        let size = fleet.frontends.len() as u32;
        if n == 0 || n >= size {
            return Err(SupervisorError::InvalidArgument(format!(
                "count: cannot remove {n} of {size} front-ends; remove 1 to {}",
                size.saturating_sub(1)
            )));
        }
        let instances = self.remove_frontends(&mut fleet, n).await?;
        let size = fleet.frontends.len() as u32;
        drop(fleet);
        tracing::info!(?instances, fleet = size, "capacity removed");
        self.watch_once().await;
        Ok((instances, size))
    }

    /// Starts the back end, the fleet (maps populated) and the services.
    async fn start(&self) -> anyhow::Result<()> {
        let mut fleet = self.fleet.lock().await;
        self.start_backend(&mut fleet).await?;
        println!("cascade: starting {} front-ends ...", self.args.frontends);
        self.add_frontends(&mut fleet, self.args.frontends).await?;
        // Customers come only once the fleet can route: every front-end's
        // shard map populated (a healthy fleet start is not an impairment).
        let slow =
            readiness::maps_ready_within(&fleet.frontends, launcher::READY_DEADLINE, true).await;
        if let Some((name, why)) = slow.first() {
            bail!(
                "{name} (and {} more) still building its shard map after {:?}: {why}",
                slow.len() - 1,
                launcher::READY_DEADLINE
            );
        }
        self.start_services(&mut fleet).await
    }
}

/// Runs a whole topology until `shutdown`, serving the control API on
/// `control` (the caller binds it, so a test can pass `127.0.0.1:0`).
/// `supervisor.json` appears once everything is up (the detached parent
/// waits for it); everything the run created is gone when this returns.
pub async fn run(
    args: UpArgs,
    control: std::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    args.validate()?;
    let home_dir = home::home();
    if let Some(sup) = home::read(&home_dir)? {
        bail!(
            "a fleet is already running (supervisor pid {}, run {}); stop it with `cascade down` first",
            sup.pid,
            sup.run_dir.display()
        );
    }
    let sup = Arc::new(prepare(args, &home_dir, shutdown).await?);
    let result = serve(&sup, &home_dir, control).await;
    sup.teardown().await;
    home::remove(&home_dir, std::process::id());
    println!(
        "cascade: all processes stopped; run directory kept at {}",
        sup.run_dir.display()
    );
    result
}

/// Decides the enforcement (before anything is created, so a refusal
/// leaves nothing), makes the run directory and the reaper.
async fn prepare(
    args: UpArgs,
    home_dir: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<Supervisor> {
    let run_id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        std::process::id()
    );
    let frontend_bin = launcher::binary("kinesis-frontend")?;
    launcher::binary("kinesis-backend")?;
    let (plan, docker) = if args.docker.enabled() {
        // Docker mode: each front-end container's pids_limit is the limit
        // (swarm mode: each front-end service's Swarm pids limit).
        let mut plan = LimitPlan::docker(args.thread_limit);
        let env = DockerEnv::connect(&args.docker, plan.limit).await?;
        if env.is_swarm() && plan.limit.is_some() {
            plan.enforcement = cascade_core::threadlimit::Enforcement::Swarm;
        }
        (plan, Some(env))
    } else {
        let plan =
            LimitPlan::establish(args.thread_limit, args.enforcement, &run_id, &frontend_bin)?;
        (plan, None)
    };
    let run_dir = home_dir.join("runs").join(&run_id);
    std::fs::create_dir_all(run_dir.join("logs"))
        .with_context(|| format!("mkdir {}", run_dir.display()))?;
    let run_dir = run_dir.canonicalize()?;
    let base = args.base_threads();
    let tip_at = plan.limit.map(|l| l.saturating_sub(base) + 2);
    println!(
        "cascade: run {} | thread limit {} per front-end, enforced by {} | base threads {} | fleet tips at {} front-ends",
        run_dir.display(),
        args.thread_limit,
        plan.enforcement.as_str(),
        base,
        tip_at.map_or("never (no limit)".to_owned(), |n| n.to_string()),
    );
    tracing::info!(
        seed = args.seed,
        time_scale = args.time_scale,
        "starting run"
    );
    let reaper = match &plan.run_cgroup {
        Some(cg) => Some(crate::limits::spawn_reaper(
            &cg.path,
            &run_dir.join("logs/reaper.log"),
        )?),
        None => None,
    };
    let token = std::env::var(cascade_core::auth::USER_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(cascade_core::auth::generate);
    cascade_core::auth::set_outgoing(&token);
    Ok(Supervisor {
        _reaper: reaper,
        args,
        token,
        run_dir,
        plan,
        fleet: tokio::sync::Mutex::default(),
        observed: Mutex::default(),
        recorder: Arc::default(),
        shd: Mutex::default(),
        faults: faults::Faults::default(),
        alarm: alarm::Alarm::default(),
        restart_removals: AtomicU64::new(0),
        kinesis_aws: Mutex::default(),
        dashboard: dashboard::Hub::default(),
        shutdown,
        docker,
    })
}

/// Starts everything, serves the control port, and watches until shutdown.
async fn serve(
    sup: &Arc<Supervisor>,
    home_dir: &Path,
    control: std::net::TcpListener,
) -> anyhow::Result<()> {
    // The dashboard serves from the start (the fleet filling up is worth
    // watching) and stops with the run, whichever way `serve` returns.
    let dash_stop = sup.shutdown.child_token();
    let _dash_guard = dash_stop.clone().drop_guard();
    let dash = dashboard::serve(
        sup.clone(),
        dashboard::bind(sup.args.dashboard_listen).await?,
        dash_stop.clone(),
    )?;
    if let (Some(url), _) = sup.dashboard.endpoints() {
        println!("cascade: live dashboard at {url} (Prometheus metrics at {url}metrics)");
    }
    tokio::select! {
        r = sup.start() => r?,
        _ = sup.shutdown.cancelled() => return Ok(()),
    }
    sup.watch_once().await;
    start_aws_endpoint(sup).await?;
    sup.publish_frame();
    control.set_nonblocking(true)?;
    let control_addr = control.local_addr()?.to_string();
    let listener = tokio::net::TcpListener::from_std(control)?;
    // grpc.health.v1 on the control port too (the compose health check).
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .trace_fn(api::trace)
            .add_service(health_service)
            .add_service(api::service(sup.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                sup.shutdown.clone().cancelled_owned(),
            ),
    );
    home::write(
        home_dir,
        &home::SupervisorFile {
            pid: std::process::id(),
            control_addr: control_addr.clone(),
            run_dir: sup.run_dir.clone(),
            token: Some(sup.token.clone()),
        },
    )?;
    println!(
        "cascade: fleet up; control port {control_addr}; `cascade status` to inspect, `cascade down` to stop"
    );
    if let Some(scenario) = &sup.args.docker.play {
        crate::docker::play(scenario, sup.shutdown.clone())?;
    }
    watch_until_shutdown(sup).await;
    println!("cascade: stopping ...");
    dash_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), dash).await;
    Ok(())
}

/// Starts the balanced AWS Kinesis endpoint over the main fleet's
/// front-ends (health from the supervisor's watch) and records its address.
async fn start_aws_endpoint(sup: &Arc<Supervisor>) -> anyhow::Result<()> {
    let watched = sup.clone();
    let targets = move || {
        watched
            .status()
            .frontends
            .into_iter()
            .filter(|f| f.fleet.is_empty() && !f.addr.is_empty())
            .map(|f| aws_lb::Target {
                key: format!("{}@{}", f.name, f.addr),
                healthy: f.shard_map == crate::state::MapState::Ready,
                up: f.shard_map != crate::state::MapState::Down,
                addr: f.addr,
            })
            .collect()
    };
    let ep = aws_lb::start(sup.args.kinesis_aws_listen, targets, sup.shutdown.clone()).await?;
    // Bound to every interface (compose): clients on this host and the
    // default published port both reach it at loopback.
    let shown = if ep.addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], ep.addr.port()))
    } else {
        ep.addr
    };
    let url = format!("http://{shown}");
    println!("cascade: AWS Kinesis endpoint {url} (balanced over the front-ends)");
    *sup.kinesis_aws.lock() = Some(url);
    Ok(())
}

/// Watches every 500 ms (and runs the thread alarm) until shutdown; in the
/// foreground, renders the live view every second.
async fn watch_until_shutdown(sup: &Arc<Supervisor>) {
    let live = !sup.args.daemon;
    let tty = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_render = String::new();
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sup.shutdown.cancelled() => return,
        }
        if let Some(parent) = sup.args.exit_with
            && !home::pid_alive(parent)
        {
            tracing::warn!(
                parent,
                "the run that started this supervisor is gone; taking everything down"
            );
            sup.shutdown.cancel();
            return;
        }
        sup.watch_once().await;
        sup.publish_frame();
        if sup.args.topology.thread_alarm {
            sup.thread_alarm();
        }
        ticks += 1;
        if live && ticks.is_multiple_of(2) {
            let view = sup.status().render();
            if tty {
                print!("\x1b[2J\x1b[H{view}\n(Ctrl-C stops everything)\n");
            } else if view != last_render {
                println!("{view}");
            }
            last_render = view;
        }
    }
}
