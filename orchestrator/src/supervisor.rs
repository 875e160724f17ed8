//! The supervisor: it owns every process of a run. It starts the back end and
//! the front-end fleet under their kernel thread limits, adds, removes and
//! restarts front-ends on request, watches every process out of band through
//! `Control.GetStatus`, serves the `Supervisor` control port, and on any way
//! out (Ctrl-C, SIGTERM, `cascade down`, an error) stops everything and
//! removes what the run created.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_core::threadlimit::{self, InstanceCgroup};
use cascade_proto::control::GetStatusRequest;
use cascade_proto::control::control_client::ControlClient;
use cascade_proto::supervisor as sv;
use cascade_proto::supervisor::supervisor_server::{Supervisor as SupervisorApi, SupervisorServer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::home;
use crate::launcher::{self, ChildLimit, ChildSpec, RunningChild};
use crate::limits::{EnforcementPref, LimitPlan, ThreadLimitArg};
use crate::status::{FrontendEntry, ServiceEntry, Status, ThreadLimit};

/// Largest fleet one run may hold.
pub const MAX_FLEET: u32 = 512;

/// Where a booting front-end reads shard ownership from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BootstrapArg {
    /// From neighbouring front-ends (as in 2020).
    Peers,
    /// From the authoritative metadata store (the remediation).
    MetadataStore,
}

/// `cascade up` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Front-end servers to start with.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_FLEET)))]
    pub frontends: u32,
    /// Threads (kernel tasks) each front-end may hold, enforced by the kernel;
    /// `none` for no limit (the fleet can then not tip).
    #[arg(long, default_value_t = ThreadLimitArg::Limit(64))]
    pub thread_limit: ThreadLimitArg,
    /// Incident seconds per wall second (360: one incident hour = 10 s).
    #[arg(long, default_value_t = 360.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// Start the fleet in the background and return; other commands talk to it.
    #[arg(long)]
    pub detach: bool,
    /// Seed for every random choice (learning-delay jitter); logged at start.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokio worker threads per front-end (base_threads = workers + 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// How the thread limit is enforced.
    #[arg(long, value_enum, default_value_t = EnforcementPref::Auto)]
    pub enforcement: EnforcementPref,
    /// Where a (re)starting front-end reads shard ownership from.
    #[arg(long, value_enum, default_value_t = BootstrapArg::Peers)]
    pub bootstrap: BootstrapArg,
    /// Fraction of the one-hour learning delay removed at random per front-end.
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    pub learning_jitter: f64,
    /// Internal: run as the detached supervisor (no live view).
    #[arg(long, hide = true)]
    pub daemon: bool,
}

fn parse_time_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of incident seconds per wall second (e.g. 360)"
        )),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} must be a number from 0 to 1")),
    }
}

/// Refuses a fleet whose threads could add up to more than the host budget.
pub fn check_host_budget(fleet: u32, limit: ThreadLimitArg, workers: u16) -> anyhow::Result<()> {
    let budget = threadlimit::host_task_budget();
    let base = u64::from(workers) + 2;
    let worst = match limit {
        ThreadLimitArg::Limit(l) => u64::from(fleet) * l,
        ThreadLimitArg::None => u64::from(fleet) * (u64::from(fleet) - 1 + base),
    };
    if fleet > MAX_FLEET {
        bail!("a fleet of {fleet} front-ends is above the maximum of {MAX_FLEET}");
    }
    if worst > budget {
        bail!(
            "a fleet of {fleet} front-ends at thread limit {limit} could hold {worst} threads, \
             more than this run may use ({budget}, half of the host's kernel task limit); \
             use fewer front-ends or a lower --thread-limit"
        );
    }
    Ok(())
}

/// One supervised process.
struct Instance {
    name: String,
    id: String,
    addr: String,
    /// Bound here and kept across restarts, so the address never changes.
    listener: TcpListener,
    child: RunningChild,
    limit: ChildLimit,
}

impl Instance {
    fn cgroup(&self) -> Option<&InstanceCgroup> {
        match &self.limit {
            ChildLimit::Cgroup(cg) => Some(cg),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Fleet {
    backend: Option<Instance>,
    frontends: Vec<Instance>,
    next_index: u32,
}

/// What the watcher needs to reach one process.
#[derive(Clone)]
struct RosterEntry {
    name: String,
    id: String,
    pid: u32,
    addr: String,
    channel: Channel,
    cgroup: Option<InstanceCgroup>,
}

/// A run in progress.
pub struct Supervisor {
    args: UpArgs,
    run_dir: PathBuf,
    plan: LimitPlan,
    fleet: tokio::sync::Mutex<Fleet>,
    roster: Mutex<Vec<RosterEntry>>,
    backend_entry: Mutex<Option<RosterEntry>>,
    snapshot: Mutex<HashMap<String, FrontendEntry>>,
    backend_health: Mutex<(String, String)>,
    shutdown: CancellationToken,
}

impl Supervisor {
    fn frontend_args(&self, id: &str, backend: &str) -> Vec<String> {
        let bootstrap = match self.args.bootstrap {
            BootstrapArg::Peers => "peers",
            BootstrapArg::MetadataStore => "metadata-store",
        };
        [
            "--id",
            id,
            "--backend",
            backend,
            "--time-scale",
            &self.args.time_scale.to_string(),
            "--seed",
            &self.args.seed.to_string(),
            "--learning-jitter",
            &self.args.learning_jitter.to_string(),
            "--bootstrap",
            bootstrap,
            "--workers",
            &self.args.workers.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn logs(&self) -> PathBuf {
        self.run_dir.join("logs")
    }

    async fn start_backend(&self, fleet: &mut Fleet) -> anyhow::Result<()> {
        let listener = launcher::bind_loopback()?;
        let addr = listener.local_addr()?.to_string();
        let spec = ChildSpec {
            name: "kinesis-backend".into(),
            program: launcher::binary("kinesis-backend")?,
            args: vec![],
            limit: ChildLimit::None,
        };
        let mut child = launcher::spawn(&spec, &listener, &self.logs())?;
        launcher::wait_ready(&spec.name, &addr, &mut child, launcher::READY_DEADLINE).await?;
        tracing::info!(%addr, pid = child.pid(), "kinesis-backend ready");
        *self.backend_entry.lock().unwrap_or_else(|p| p.into_inner()) = Some(RosterEntry {
            name: spec.name.clone(),
            id: String::new(),
            pid: child.pid(),
            addr: addr.clone(),
            channel: cascade_core::clients::lazy_channel(&addr, Duration::from_secs(1))?,
            cgroup: None,
        });
        fleet.backend = Some(Instance {
            name: spec.name,
            id: String::new(),
            addr,
            listener,
            child,
            limit: ChildLimit::None,
        });
        Ok(())
    }

    fn backend_addr(fleet: &Fleet) -> anyhow::Result<String> {
        Ok(fleet
            .backend
            .as_ref()
            .context("the back end is not running")?
            .addr
            .clone())
    }

    /// Starts `n` new front-ends and waits until every one is SERVING.
    async fn add_frontends(&self, fleet: &mut Fleet, n: u32) -> anyhow::Result<Vec<String>> {
        let total = fleet.frontends.len() as u32 + n;
        check_host_budget(total, self.thread_limit_arg(), self.args.workers)?;
        let backend = Self::backend_addr(fleet)?;
        let program = launcher::binary("kinesis-frontend")?;
        let mut started = Vec::new();
        let mut failure = None;
        for _ in 0..n {
            let index = fleet.next_index;
            fleet.next_index += 1;
            let name = format!("kinesis-frontend-{index}");
            let id = format!("fe-{index}");
            let res = (|| -> anyhow::Result<Instance> {
                let listener = launcher::bind_loopback()?;
                let addr = listener.local_addr()?.to_string();
                let limit = self.plan.child_limit(&name, index)?;
                let spec = ChildSpec {
                    name: name.clone(),
                    program: program.clone(),
                    args: self.frontend_args(&id, &backend),
                    limit: limit.clone(),
                };
                let child = launcher::spawn(&spec, &listener, &self.logs())?;
                Ok(Instance {
                    name,
                    id,
                    addr,
                    listener,
                    child,
                    limit,
                })
            })();
            match res {
                Ok(inst) => started.push(inst),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            failure = wait_all_ready(&mut started).await.err();
        }
        if let Some(e) = failure {
            for mut inst in started {
                inst.child.kill();
                if let Some(cg) = inst.cgroup() {
                    let _ = cg.remove();
                }
            }
            return Err(e);
        }
        let names = started.iter().map(|i| i.name.clone()).collect();
        fleet.frontends.extend(started);
        self.publish_roster(fleet);
        Ok(names)
    }

    /// Stops the `n` newest front-ends.
    async fn remove_frontends(&self, fleet: &mut Fleet, n: u32) -> anyhow::Result<Vec<String>> {
        let size = fleet.frontends.len() as u32;
        if n == 0 || n >= size {
            bail!(
                "cannot remove {n} of {size} front-ends; remove 1 to {}",
                size.saturating_sub(1)
            );
        }
        let gone: Vec<Instance> = fleet.frontends.split_off((size - n) as usize);
        self.publish_roster(fleet);
        let mut names = Vec::new();
        for mut inst in gone {
            inst.child.stop().await;
            if let Some(cg) = inst.cgroup() {
                cg.remove()?;
            }
            names.push(inst.name);
        }
        Ok(names)
    }

    /// Restarts one front-end in place: same id, address and limit.
    async fn respawn(&self, inst: &mut Instance, backend: &str) -> anyhow::Result<()> {
        inst.child.stop().await;
        let spec = ChildSpec {
            name: inst.name.clone(),
            program: launcher::binary("kinesis-frontend")?,
            args: self.frontend_args(&inst.id, backend),
            limit: inst.limit.clone(),
        };
        inst.child = launcher::spawn(&spec, &inst.listener, &self.logs())?;
        Ok(())
    }

    fn thread_limit_arg(&self) -> ThreadLimitArg {
        self.plan
            .limit
            .map_or(ThreadLimitArg::None, ThreadLimitArg::Limit)
    }

    fn publish_roster(&self, fleet: &Fleet) {
        let roster = fleet
            .frontends
            .iter()
            .filter_map(|i| {
                Some(RosterEntry {
                    name: i.name.clone(),
                    id: i.id.clone(),
                    pid: i.child.pid(),
                    addr: i.addr.clone(),
                    channel: cascade_core::clients::lazy_channel(&i.addr, Duration::from_secs(1))
                        .ok()?,
                    cgroup: i.cgroup().cloned(),
                })
            })
            .collect();
        *self.roster.lock().unwrap_or_else(|p| p.into_inner()) = roster;
    }

    /// Polls every process's Control.GetStatus once.
    async fn watch_once(&self) {
        let roster = self
            .roster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut set = JoinSet::new();
        for r in roster {
            set.spawn(async move {
                let resp = ControlClient::new(r.channel.clone())
                    .get_status(GetStatusRequest {})
                    .await;
                let mut e = FrontendEntry {
                    name: r.name.clone(),
                    pid: r.pid,
                    addr: r.addr.clone(),
                    id: r.id.clone(),
                    cgroup_pids_events_max: r.cgroup.as_ref().map(InstanceCgroup::refused),
                    ..Default::default()
                };
                match resp {
                    Ok(s) => {
                        let s = s.into_inner();
                        e.threads = s.threads;
                        if let Some(f) = s.frontend {
                            e.base_threads = f.base_threads;
                            e.thread_limit = (f.thread_limit > 0).then_some(f.thread_limit);
                            e.peers_known = f.peers_known;
                            e.peers_total = f.peers_total;
                            e.shard_map = f.shard_map;
                            e.spawn_failures = f.spawn_failures;
                            e.last_spawn_error = f.last_spawn_error;
                            e.peer_threads = f.peer_threads;
                            e.detail = f.shard_map_detail;
                        }
                    }
                    Err(err) => {
                        e.shard_map = "down".into();
                        e.detail = format!("unreachable: {}", err.message());
                    }
                }
                e
            });
        }
        let backend = self
            .backend_entry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let backend_health = match backend {
            Some(b) => match ControlClient::new(b.channel)
                .get_status(GetStatusRequest {})
                .await
            {
                Ok(_) => ("serving".to_owned(), String::new()),
                Err(e) => ("down".to_owned(), format!("unreachable: {}", e.message())),
            },
            None => ("down".to_owned(), "not started".to_owned()),
        };
        let mut fresh = HashMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok(e) = r {
                fresh.insert(e.name.clone(), e);
            }
        }
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        *self
            .backend_health
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = backend_health;
    }

    /// The `status --json` document from the latest watch.
    pub fn status(&self) -> Status {
        let roster = self
            .roster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let frontends: Vec<FrontendEntry> = roster
            .iter()
            .map(|r| {
                snap.get(&r.name).cloned().unwrap_or_else(|| FrontendEntry {
                    name: r.name.clone(),
                    pid: r.pid,
                    addr: r.addr.clone(),
                    id: r.id.clone(),
                    shard_map: "building".into(),
                    detail: "not yet observed".into(),
                    ..Default::default()
                })
            })
            .collect();
        let (bh, bd) = self
            .backend_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let backend_pid = self
            .backend_entry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |b| b.pid);
        let ready = frontends.iter().filter(|f| f.shard_map == "ready").count();
        let (health, detail) = if frontends.is_empty() {
            ("down", "no front-ends".to_owned())
        } else if ready == frontends.len() {
            (
                "serving",
                format!("{ready}/{} shard-maps ready", frontends.len()),
            )
        } else if ready == 0 {
            ("down", format!("0/{} shard-maps ready", frontends.len()))
        } else {
            (
                "degraded",
                format!("{ready}/{} shard-maps ready", frontends.len()),
            )
        };
        Status {
            mode: "local".into(),
            thread_limit: ThreadLimit {
                limit: self.plan.limit,
                enforcement: self.plan.enforcement.as_str().into(),
            },
            frontends,
            services: vec![
                ServiceEntry {
                    name: "kinesis-backend".into(),
                    pid: backend_pid,
                    health: bh,
                    detail: bd,
                },
                ServiceEntry {
                    name: "kinesis".into(),
                    pid: 0,
                    health: health.into(),
                    detail,
                },
            ],
            run_dir: self.run_dir.display().to_string(),
            time_scale: self.args.time_scale,
            supervisor_pid: std::process::id(),
        }
    }

    /// Stops every process and removes what the run created.
    async fn teardown(&self) {
        let mut fleet = self.fleet.lock().await;
        let mut set = JoinSet::new();
        for mut inst in fleet.frontends.drain(..) {
            set.spawn(async move {
                inst.child.stop().await;
                inst
            });
        }
        while set.join_next().await.is_some() {}
        if let Some(mut b) = fleet.backend.take() {
            b.child.stop().await;
        }
        self.roster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.plan.cleanup();
    }
}

/// Polls every new instance's health until all are SERVING (or one fails).
async fn wait_all_ready(instances: &mut [Instance]) -> anyhow::Result<()> {
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

struct Api(Arc<Supervisor>);

fn internal(e: anyhow::Error) -> tonic::Status {
    tonic::Status::failed_precondition(format!("{e:#}"))
}

#[tonic::async_trait]
impl SupervisorApi for Api {
    async fn status(
        &self,
        _r: tonic::Request<sv::StatusRequest>,
    ) -> Result<tonic::Response<sv::StatusReply>, tonic::Status> {
        let json = serde_json::to_string(&self.0.status())
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(sv::StatusReply { json }))
    }

    async fn add_capacity(
        &self,
        r: tonic::Request<sv::CapacityRequest>,
    ) -> Result<tonic::Response<sv::CapacityReply>, tonic::Status> {
        let n = r.into_inner().count;
        if n == 0 {
            return Err(tonic::Status::invalid_argument(
                "count: add at least 1 front-end",
            ));
        }
        let mut fleet = self.0.fleet.lock().await;
        let instances = self
            .0
            .add_frontends(&mut fleet, n)
            .await
            .map_err(internal)?;
        tracing::info!(?instances, fleet = fleet.frontends.len(), "capacity added");
        self.0.watch_once().await;
        Ok(tonic::Response::new(sv::CapacityReply {
            instances,
            fleet_size: fleet.frontends.len() as u32,
        }))
    }

    async fn remove_capacity(
        &self,
        r: tonic::Request<sv::CapacityRequest>,
    ) -> Result<tonic::Response<sv::CapacityReply>, tonic::Status> {
        let n = r.into_inner().count;
        let mut fleet = self.0.fleet.lock().await;
        let size = fleet.frontends.len() as u32;
        if n == 0 || n >= size {
            return Err(tonic::Status::invalid_argument(format!(
                "count: cannot remove {n} of {size} front-ends; remove 1 to {}",
                size.saturating_sub(1)
            )));
        }
        let instances = self
            .0
            .remove_frontends(&mut fleet, n)
            .await
            .map_err(internal)?;
        tracing::info!(
            ?instances,
            fleet = fleet.frontends.len(),
            "capacity removed"
        );
        self.0.watch_once().await;
        Ok(tonic::Response::new(sv::CapacityReply {
            instances,
            fleet_size: fleet.frontends.len() as u32,
        }))
    }

    type RestartFrontendsStream =
        tokio_stream::wrappers::ReceiverStream<Result<sv::RestartProgress, tonic::Status>>;

    async fn restart_frontends(
        &self,
        r: tonic::Request<sv::RestartRequest>,
    ) -> Result<tonic::Response<Self::RestartFrontendsStream>, tonic::Status> {
        let r = r.into_inner();
        if r.batch == 0 {
            return Err(tonic::Status::invalid_argument(
                "batch: restart at least 1 front-end at a time",
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let sup = self.0.clone();
        tokio::spawn(async move {
            let mut fleet = sup.fleet.lock().await;
            let total = fleet.frontends.len();
            let backend = match Supervisor::backend_addr(&fleet) {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(internal(e))).await;
                    return;
                }
            };
            let mut done = 0;
            let batch = r.batch as usize;
            let mut start = 0;
            while start < total {
                let end = (start + batch).min(total);
                let mut result = Ok(());
                for inst in &mut fleet.frontends[start..end] {
                    if let Err(e) = sup.respawn(inst, &backend).await {
                        result = Err(e);
                        break;
                    }
                }
                if result.is_ok() {
                    result = wait_all_ready(&mut fleet.frontends[start..end]).await;
                }
                sup.publish_roster(&fleet);
                if let Err(e) = result {
                    let _ = tx.send(Err(internal(e))).await;
                    return;
                }
                done += end - start;
                let restarted = fleet.frontends[start..end]
                    .iter()
                    .map(|i| i.name.clone())
                    .collect();
                tracing::info!(?restarted, done, total, "front-ends restarted");
                if tx
                    .send(Ok(sv::RestartProgress {
                        restarted,
                        done: done as u32,
                        total: total as u32,
                    }))
                    .await
                    .is_err()
                {
                    tracing::warn!("restart client went away; continuing");
                }
                start = end;
                if start < total && r.interval_ms > 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(r.interval_ms)) => {}
                        _ = sup.shutdown.cancelled() => return,
                    }
                }
            }
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }

    async fn shutdown(
        &self,
        _r: tonic::Request<sv::ShutdownRequest>,
    ) -> Result<tonic::Response<sv::ShutdownReply>, tonic::Status> {
        tracing::info!("shutdown requested (cascade down)");
        self.0.shutdown.cancel();
        Ok(tonic::Response::new(sv::ShutdownReply {}))
    }
}

/// Runs a whole fleet until shutdown. `on_ready` is called once everything
/// is up (the detached parent waits for `supervisor.json`).
pub async fn run(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    check_host_budget(args.frontends, args.thread_limit, args.workers)?;
    let home_dir = home::home();
    if let Some(sup) = home::read(&home_dir)? {
        bail!(
            "a fleet is already running (supervisor pid {}, run {}); stop it with `cascade down` first",
            sup.pid,
            sup.run_dir.display()
        );
    }
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
    // Decide the enforcement before creating anything, so a refusal leaves nothing.
    let plan = LimitPlan::establish(args.thread_limit, args.enforcement, &run_id, &frontend_bin)?;
    let run_dir = home_dir.join("runs").join(&run_id);
    std::fs::create_dir_all(run_dir.join("logs"))
        .with_context(|| format!("mkdir {}", run_dir.display()))?;
    let run_dir = run_dir.canonicalize()?;
    let _reaper = match &plan.run_cgroup {
        Some(cg) => Some(crate::limits::spawn_reaper(
            &cg.path,
            &run_dir.join("logs/reaper.log"),
        )?),
        None => None,
    };
    let base = u64::from(args.workers) + 2;
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
    let sup = Arc::new(Supervisor {
        args: args.clone(),
        run_dir: run_dir.clone(),
        plan,
        fleet: tokio::sync::Mutex::default(),
        roster: Mutex::default(),
        backend_entry: Mutex::default(),
        snapshot: Mutex::default(),
        backend_health: Mutex::new(("down".into(), "starting".into())),
        shutdown: shutdown.clone(),
    });
    let result = serve_run(&sup, &home_dir, &args).await;
    sup.teardown().await;
    home::remove(&home_dir, std::process::id());
    println!(
        "cascade: all processes stopped; run directory kept at {}",
        run_dir.display()
    );
    result
}

async fn serve_run(
    sup: &Arc<Supervisor>,
    home_dir: &std::path::Path,
    args: &UpArgs,
) -> anyhow::Result<()> {
    {
        let mut fleet = sup.fleet.lock().await;
        tokio::select! {
            r = sup.start_backend(&mut fleet) => r?,
            _ = sup.shutdown.cancelled() => return Ok(()),
        }
        println!("cascade: starting {} front-ends ...", args.frontends);
        tokio::select! {
            r = sup.add_frontends(&mut fleet, args.frontends) => { r?; }
            _ = sup.shutdown.cancelled() => return Ok(()),
        }
    }
    sup.watch_once().await;
    let control = std::net::TcpListener::bind("127.0.0.1:0").context("bind the control port")?;
    control.set_nonblocking(true)?;
    let control_addr = control.local_addr()?.to_string();
    let listener = tokio::net::TcpListener::from_std(control)?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SupervisorServer::new(Api(sup.clone())))
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
        },
    )?;
    println!(
        "cascade: fleet up; control port {control_addr}; `cascade status` to inspect, `cascade down` to stop"
    );

    let live = !args.daemon;
    let tty = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_render = String::new();
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sup.shutdown.cancelled() => break,
        }
        sup.watch_once().await;
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
    println!("cascade: stopping ...");
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}
