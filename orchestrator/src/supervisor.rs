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
use cascade_proto::cognito::{self as cg, cognito_client::CognitoClient};
use cascade_proto::control::GetStatusRequest;
use cascade_proto::control::control_client::ControlClient;
use cascade_proto::supervisor as sv;
use cascade_proto::supervisor::supervisor_server::{Supervisor as SupervisorApi, SupervisorServer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::faults::{FaultKind, FaultSpec};
use crate::home;
use crate::launcher::{self, ChildLimit, ChildSpec, RunningChild};
use crate::limits::{EnforcementPref, LimitPlan, ThreadLimitArg};
use crate::status::{FrontendEntry, InstanceEntry, ServiceEntry, Status, ThreadLimit};
use crate::topology::{self, Service, TopologyArgs};
use crate::traffic::{self, Caller, Recorder};

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
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub docker: crate::docker::DockerArgs,
    /// Internal: run as the detached supervisor (no live view).
    #[arg(long, hide = true)]
    pub daemon: bool,
    /// Internal: take everything down once this process is gone (the
    /// supervisor of a `cascade run` dies with its run, even a killed one).
    #[arg(long, hide = true)]
    pub exit_with: Option<u32>,
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
    /// The service this process is part of (Kinesis for front-ends and back end).
    service: Service,
    /// Membership fleet of a front-end ("" main, "cloudwatch" partitioned).
    fleet: String,
    addr: String,
    /// Bound here and kept across restarts, so the address never changes
    /// (docker mode: none, the container binds its own).
    listener: Option<TcpListener>,
    child: RunningChild,
    /// How it was started (restarts reuse it: same flags, same limit).
    spec: ChildSpec,
}

impl Instance {
    fn cgroup(&self) -> Option<&InstanceCgroup> {
        match &self.spec.limit {
            ChildLimit::Cgroup(cg) => Some(cg),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Fleet {
    backend: Option<Instance>,
    /// The main front-end fleet (capacity changes and restarts act on it).
    frontends: Vec<Instance>,
    /// CloudWatch's partitioned front-end fleet (remediation), if any.
    cw_frontends: Vec<Instance>,
    /// Downstream services (Cognito, CloudWatch, ...), in start order.
    services: Vec<Instance>,
    next_index: u32,
}

/// What the watcher needs to reach one process.
#[derive(Clone)]
struct RosterEntry {
    name: String,
    id: String,
    service: Service,
    fleet: String,
    pid: u32,
    addr: String,
    channel: Channel,
    cgroup: Option<InstanceCgroup>,
}

/// What the last watch saw of one service instance: reachable, and its Control info.
type ServiceObservation = (bool, HashMap<String, String>);

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
    /// Downstream service processes being watched.
    service_roster: Mutex<Vec<RosterEntry>>,
    /// Instance name -> (reachable, Control info) from the last watch.
    service_snapshot: Mutex<HashMap<String, ServiceObservation>>,
    /// Customer traffic history (ground truth of impact).
    recorder: Arc<Recorder>,
    /// Clients for customer calls and probes, once services are up.
    caller: Mutex<Option<Arc<Caller>>>,
    /// Service Health Dashboard posts.
    shd: Mutex<Vec<sv::ShdPost>>,
    /// Faults in force, with how to revert each.
    faults: Mutex<Vec<ActiveFault>>,
    /// Next fault id number.
    next_fault: std::sync::atomic::AtomicU64,
    /// Thread-consumption alarms raised so far (remediation `--thread-alarm`).
    alarms: Mutex<Vec<String>>,
    /// Whether the alarm's runbook is running now.
    alarm_busy: std::sync::atomic::AtomicBool,
    /// Restarted front-ends removed for not being ready within the grace.
    restart_removals: std::sync::atomic::AtomicU64,
    shutdown: CancellationToken,
    /// Docker mode: the engine, the compose project and its containers.
    docker: Option<crate::docker::DockerEnv>,
}

impl Supervisor {
    fn frontend_args(&self, id: &str, backend: &str, fleet: &str) -> Vec<String> {
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
            "--fleet",
            fleet,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn logs(&self) -> PathBuf {
        self.run_dir.join("logs")
    }

    async fn start_backend(&self, fleet: &mut Fleet) -> anyhow::Result<()> {
        let spec = ChildSpec {
            name: "kinesis-backend".into(),
            program: launcher::binary("kinesis-backend")?,
            args: vec![],
            limit: ChildLimit::None,
        };
        let (addr, listener, mut child) = match &self.docker {
            Some(d) => {
                let (addr, c) = d.adopt(&spec.name).await?;
                (addr, None, RunningChild::container(c))
            }
            None => {
                let listener = launcher::bind_loopback()?;
                let addr = listener.local_addr()?.to_string();
                let child = launcher::spawn(&spec, &listener, &self.logs())?;
                (addr, Some(listener), child)
            }
        };
        launcher::wait_ready(&spec.name, &addr, &mut child, launcher::READY_DEADLINE).await?;
        tracing::info!(%addr, pid = child.pid(), "kinesis-backend ready");
        *self.backend_entry.lock().unwrap_or_else(|p| p.into_inner()) = Some(RosterEntry {
            name: spec.name.clone(),
            id: String::new(),
            service: Service::Kinesis,
            fleet: String::new(),
            pid: child.pid(),
            addr: addr.clone(),
            channel: cascade_core::clients::lazy_channel(&addr, Duration::from_secs(1))?,
            cgroup: None,
        });
        fleet.backend = Some(Instance {
            name: spec.name.clone(),
            id: String::new(),
            service: Service::Kinesis,
            fleet: String::new(),
            addr,
            listener,
            child,
            spec,
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

    /// Starts `n` new front-ends of the main fleet and waits until every one is SERVING.
    async fn add_frontends(&self, fleet: &mut Fleet, n: u32) -> anyhow::Result<Vec<String>> {
        let total = (fleet.frontends.len() + fleet.cw_frontends.len()) as u32 + n;
        check_host_budget(total, self.thread_limit_arg(), self.args.workers)?;
        let backend = Self::backend_addr(fleet)?;
        let started = self
            .spawn_frontends(
                n,
                &backend,
                "",
                &mut fleet.next_index,
                fleet.frontends.len(),
            )
            .await?;
        let names = started.iter().map(|i| i.name.clone()).collect();
        fleet.frontends.extend(started);
        self.publish_roster(fleet);
        Ok(names)
    }

    /// Starts `n` front-ends in membership fleet `fleet_name`, each under its
    /// own kernel thread limit; all SERVING, or none left running. In a
    /// cellular main fleet, `existing` front-ends are already placed and each
    /// new one joins cell `cell-<position / cell size>`.
    async fn spawn_frontends(
        &self,
        n: u32,
        backend: &str,
        fleet_name: &str,
        next_index: &mut u32,
        existing: usize,
    ) -> anyhow::Result<Vec<Instance>> {
        let program = launcher::binary("kinesis-frontend")?;
        let mut started = Vec::new();
        let mut failure = None;
        let cell_size = self.args.topology.cell_size as usize;
        for position in existing..existing + n as usize {
            let membership = if fleet_name.is_empty() && cell_size > 0 {
                format!("cell-{}", position / cell_size)
            } else {
                fleet_name.to_owned()
            };
            let index = *next_index;
            *next_index += 1;
            let (name, id) = if fleet_name.is_empty() {
                (format!("kinesis-frontend-{index}"), format!("fe-{index}"))
            } else {
                (
                    format!("kinesis-frontend-{fleet_name}-{index}"),
                    format!("{fleet_name}-{index}"),
                )
            };
            if let Some(d) = &self.docker {
                let spec = ChildSpec {
                    name: name.clone(),
                    program: program.clone(),
                    args: self.frontend_args(&id, backend, &membership),
                    limit: ChildLimit::None,
                };
                match d.frontend(&name, index, spec.args.clone()).await {
                    Ok((addr, c)) => started.push(Instance {
                        name,
                        id,
                        service: Service::Kinesis,
                        fleet: membership.clone(),
                        addr,
                        listener: None,
                        child: RunningChild::container(c),
                        spec,
                    }),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                continue;
            }
            let res = (|| -> anyhow::Result<Instance> {
                let listener = launcher::bind_loopback()?;
                let addr = listener.local_addr()?.to_string();
                let limit = self.plan.child_limit(&name, index)?;
                let spec = ChildSpec {
                    name: name.clone(),
                    program: program.clone(),
                    args: self.frontend_args(&id, backend, &membership),
                    limit,
                };
                let child = launcher::spawn(&spec, &listener, &self.logs())?;
                Ok(Instance {
                    name,
                    id,
                    service: Service::Kinesis,
                    fleet: membership.clone(),
                    addr,
                    listener: Some(listener),
                    child,
                    spec,
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
        Ok(started)
    }

    /// Starts the downstream services stage by stage (each stage SERVING
    /// before the next), then the customer traffic against them.
    async fn start_services(&self, fleet: &mut Fleet) -> anyhow::Result<()> {
        let t = &self.args.topology;
        let backend = Self::backend_addr(fleet)?;
        if t.cloudwatch_partitioned_fleet > 0 {
            let mut idx = 0;
            let cw = self
                .spawn_frontends(
                    t.cloudwatch_partitioned_fleet,
                    &backend,
                    "cloudwatch",
                    &mut idx,
                    0,
                )
                .await?;
            fleet.cw_frontends.extend(cw);
            self.publish_roster(fleet);
        }
        let stages = topology::plan(t);
        let mut listeners = HashMap::new();
        let mut addrs = topology::Addresses {
            backend: backend.clone(),
            instances: Default::default(),
            run_dir: self.run_dir.clone(),
            time_scale: self.args.time_scale,
        };
        for p in stages.iter().flatten() {
            if let Some(d) = &self.docker {
                addrs.instances.insert(p.name.clone(), d.addr(&p.name));
                continue;
            }
            let l = launcher::bind_loopback()?;
            addrs
                .instances
                .insert(p.name.clone(), l.local_addr()?.to_string());
            listeners.insert(p.name.clone(), l);
        }
        for stage in &stages {
            let mut started = Vec::new();
            for p in stage {
                let spec = ChildSpec {
                    name: p.name.clone(),
                    program: launcher::binary(p.service.name())?,
                    args: topology::args_for(p, t, &addrs),
                    limit: ChildLimit::None,
                };
                let (listener, child) = match &self.docker {
                    Some(d) => (None, RunningChild::container(d.adopt(&p.name).await?.1)),
                    None => {
                        let listener = listeners.remove(&p.name).context("listener bound above")?;
                        let child = launcher::spawn(&spec, &listener, &self.logs())?;
                        (Some(listener), child)
                    }
                };
                started.push(Instance {
                    name: p.name.clone(),
                    id: String::new(),
                    service: p.service,
                    fleet: String::new(),
                    addr: addrs.instances[&p.name].clone(),
                    listener,
                    child,
                    spec,
                });
            }
            let ready = wait_all_ready(&mut started).await;
            fleet.services.extend(started);
            self.publish_roster(fleet);
            ready?;
            println!(
                "cascade: {} up",
                stage
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut targets = traffic::Targets {
            backend,
            services: Default::default(),
            kinesis_fleet: t.main_fleet_pattern().to_owned(),
        };
        for inst in &fleet.services {
            targets
                .services
                .entry(inst.service)
                .or_default()
                .push(inst.addr.clone());
        }
        let caller = Arc::new(Caller::new(&targets, t.traffic_deadline)?);
        caller.create_customer_stream().await?;
        *self.caller.lock().unwrap_or_else(|p| p.into_inner()) = Some(caller.clone());
        traffic::spawn(
            caller,
            self.recorder.clone(),
            t.set().into_iter().collect(),
            t.traffic_rate,
            self.shutdown.clone(),
        );
        Ok(())
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

    /// Restarts a batch of front-ends together, in place: every process of
    /// the batch is stopped first (SIGKILL: a restart does not leave the
    /// fleet, membership is by host, so peers keep the member), then all are
    /// started at once with the same id, address and limit, and each
    /// populates its shard map at the same time as the others.
    async fn restart_batch(
        &self,
        batch: &mut [Instance],
        only: Option<&[String]>,
    ) -> anyhow::Result<()> {
        let chosen = |i: &Instance| only.is_none_or(|o| o.contains(&i.name));
        if self.docker.is_some() {
            // Docker mode: each container of the batch is SIGKILLed and
            // started again (`docker restart -t 0`), one right after the other.
            for inst in batch.iter_mut().filter(|i| chosen(i)) {
                if let Some(c) = inst.child.as_container_mut() {
                    c.restart_now().await?;
                }
            }
            return Ok(());
        }
        for inst in batch.iter_mut().filter(|i| chosen(i)) {
            inst.child.kill();
        }
        for inst in batch.iter_mut().filter(|i| chosen(i)) {
            let listener = inst
                .listener
                .as_ref()
                .context("no listener to restart on")?;
            inst.child = launcher::spawn(&inst.spec, listener, &self.logs())?;
        }
        Ok(())
    }

    /// Restarts one process in place: same flags, address and limit.
    async fn respawn(&self, inst: &mut Instance) -> anyhow::Result<()> {
        let Some(listener) = &inst.listener else {
            // Docker mode: the same container, restarted.
            return match inst.child.as_container_mut() {
                Some(c) => c.restart().await,
                None => bail!("{}: nothing to restart", inst.name),
            };
        };
        inst.child.stop().await;
        inst.child = launcher::spawn(&inst.spec, listener, &self.logs())?;
        Ok(())
    }

    fn thread_limit_arg(&self) -> ThreadLimitArg {
        self.plan
            .limit
            .map_or(ThreadLimitArg::None, ThreadLimitArg::Limit)
    }

    fn publish_roster(&self, fleet: &Fleet) {
        let entry = |i: &Instance| {
            Some(RosterEntry {
                name: i.name.clone(),
                id: i.id.clone(),
                service: i.service,
                fleet: i.fleet.clone(),
                pid: i.child.pid(),
                addr: i.addr.clone(),
                channel: cascade_core::clients::lazy_channel(&i.addr, Duration::from_secs(1))
                    .ok()?,
                cgroup: i.cgroup().cloned(),
            })
        };
        let roster = fleet
            .frontends
            .iter()
            .chain(&fleet.cw_frontends)
            .filter_map(entry)
            .collect();
        *self.roster.lock().unwrap_or_else(|p| p.into_inner()) = roster;
        let services = fleet.services.iter().filter_map(entry).collect();
        *self
            .service_roster
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = services;
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
                    fleet: r.fleet.clone(),
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
        let services = self
            .service_roster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut svc_set = JoinSet::new();
        for r in services {
            svc_set.spawn(async move {
                let resp = ControlClient::new(r.channel)
                    .get_status(GetStatusRequest {})
                    .await;
                match resp {
                    Ok(s) => (r.name, (true, s.into_inner().info)),
                    Err(e) => (
                        r.name,
                        (
                            false,
                            HashMap::from([("error".to_owned(), e.message().to_owned())]),
                        ),
                    ),
                }
            });
        }
        let mut fresh = HashMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok(e) = r {
                fresh.insert(e.name.clone(), e);
            }
        }
        let mut svc_fresh = HashMap::new();
        while let Some(r) = svc_set.join_next().await {
            if let Ok((name, v)) = r {
                svc_fresh.insert(name, v);
            }
        }
        *self
            .service_snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = svc_fresh;
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
        let (backend_pid, backend_addr) = self
            .backend_entry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or((0, String::new()), |b| (b.pid, b.addr.clone()));
        let main_fleet: Vec<&FrontendEntry> = frontends
            .iter()
            .filter(|f| crate::status::is_main_fleet(&f.fleet))
            .collect();
        let ready = main_fleet.iter().filter(|f| f.shard_map == "ready").count();
        let maps = format!("{ready}/{} shard-maps ready", main_fleet.len());
        let failed = main_fleet
            .iter()
            .filter(|f| f.shard_map == "unusable" || f.shard_map == "down")
            .count();
        let window = |svc: Service| self.recorder.window(svc, HEALTH_WINDOW_SECS);
        let deadline_ms = self.args.topology.traffic_deadline.as_secs_f64() * 1000.0;
        let mut services = vec![ServiceEntry {
            name: "kinesis-backend".into(),
            pid: backend_pid,
            addr: backend_addr,
            health: bh,
            detail: bd,
            ..Default::default()
        }];
        let kinesis_traffic = window(Service::Kinesis);
        let (health, detail) = match judge(&kinesis_traffic, deadline_ms) {
            Some((h, d)) => (h, format!("{d}; {maps}")),
            // Without customer calls to judge by, only failed maps count: a
            // front-end still building its first map is not an impairment.
            None if main_fleet.is_empty() => ("down", "no front-ends".to_owned()),
            None if failed == 0 => ("serving", maps),
            None if failed == main_fleet.len() => ("down", maps),
            None => ("degraded", maps),
        };
        services.push(ServiceEntry {
            name: "kinesis".into(),
            health: health.into(),
            detail,
            traffic: Some(kinesis_traffic),
            ..Default::default()
        });
        let roster = self
            .service_roster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let snap = self
            .service_snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for svc in self.args.topology.set() {
            if svc == Service::Kinesis {
                continue;
            }
            let instances: Vec<InstanceEntry> = roster
                .iter()
                .filter(|r| r.service == svc)
                .map(|r| {
                    let (reachable, info) = snap.get(&r.name).cloned().unwrap_or_default();
                    InstanceEntry {
                        name: r.name.clone(),
                        pid: r.pid,
                        addr: r.addr.clone(),
                        reachable,
                        info: info.into_iter().collect(),
                    }
                })
                .collect();
            let up = instances.iter().filter(|i| i.reachable).count();
            let t = window(svc);
            let (health, detail) = match judge(&t, deadline_ms) {
                Some((h, d)) => (h, d),
                None if instances.is_empty() => ("down", "not started".to_owned()),
                None if up == instances.len() => ("serving", "no customer traffic yet".to_owned()),
                None => (
                    "down",
                    format!("{up}/{} instances reachable", instances.len()),
                ),
            };
            services.push(ServiceEntry {
                name: svc.name().into(),
                pid: instances.first().map_or(0, |i| i.pid),
                addr: instances
                    .first()
                    .map(|i| i.addr.clone())
                    .unwrap_or_default(),
                health: health.into(),
                detail,
                instances,
                traffic: Some(t),
            });
        }
        Status {
            mode: if self.docker.is_some() {
                "docker"
            } else {
                "local"
            }
            .into(),
            thread_limit: ThreadLimit {
                limit: self.plan.limit,
                enforcement: self.plan.enforcement.as_str().into(),
            },
            frontends,
            services,
            run_dir: self.run_dir.display().to_string(),
            time_scale: self.args.time_scale,
            supervisor_pid: std::process::id(),
            alarms: self
                .alarms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            restart_removals: self
                .restart_removals
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The thread-consumption alarm (remediation `--thread-alarm`): checks
    /// each main-fleet front-end's projected threads, `base_threads` plus
    /// every member its membership listing shows (learned or still inside
    /// the learning delay), against its kernel limit. When one would not
    /// fit, the alarm fires and its runbook removes the newest front-ends
    /// of that membership domain until the projection fits. Nothing here
    /// stops a thread: the limit stays the kernel's; the alarm only acts
    /// on capacity, as an operator paged by it would.
    fn thread_alarm(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let Some(limit) = self.plan.limit else {
            return;
        };
        let over: Vec<FrontendEntry> = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|f| crate::status::is_main_fleet(&f.fleet) && f.base_threads > 0)
            .filter(|f| u64::from(f.base_threads + f.peers_total) > limit)
            .cloned()
            .collect();
        let Some(worst) = over.iter().max_by_key(|f| f.peers_total) else {
            return;
        };
        if self.alarm_busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let fits = (limit - u64::from(worst.base_threads) + 1) as usize;
        let domain = worst.fleet.clone();
        // A projection seen before the runbook's removals reached membership
        // is not a new alarm.
        let members = self
            .roster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.fleet == domain)
            .count();
        if members <= fits {
            self.alarm_busy.store(false, Ordering::SeqCst);
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
                "the fleet".to_owned()
            } else {
                domain.clone()
            },
        );
        tracing::warn!("{msg}");
        self.alarms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
        let sup = self.clone();
        tokio::spawn(async move {
            let mut fleet = sup.fleet.lock().await;
            let members = fleet.frontends.iter().filter(|i| i.fleet == domain).count();
            if members > fits {
                let extra = members - fits;
                // The newest members of the domain are the last ones in the fleet.
                let mut gone = Vec::new();
                let mut keep = Vec::new();
                for inst in fleet.frontends.drain(..).rev() {
                    if inst.fleet == domain && gone.len() < extra {
                        gone.push(inst);
                    } else {
                        keep.push(inst);
                    }
                }
                keep.reverse();
                fleet.frontends = keep;
                sup.publish_roster(&fleet);
                for mut inst in gone {
                    tracing::warn!(instance = %inst.name, "thread-alarm runbook: removing");
                    inst.child.stop().await;
                    if let Some(cg) = inst.cgroup() {
                        let _ = cg.remove();
                    }
                }
            }
            drop(fleet);
            sup.watch_once().await;
            sup.alarm_busy.store(false, Ordering::SeqCst);
        });
    }

    /// Every process the run has, for fault targets.
    fn all_entries(&self) -> Vec<RosterEntry> {
        let mut all: Vec<RosterEntry> = self
            .backend_entry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        all.extend(
            self.roster
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        all.extend(
            self.service_roster
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        all
    }

    /// Applies a fault; it stays in force until cleared, until its duration
    /// passes, or until the run ends.
    async fn inject_fault(
        self: &Arc<Self>,
        spec: FaultSpec,
    ) -> Result<sv::ActiveFault, tonic::Status> {
        spec.validate()
            .map_err(|e| tonic::Status::invalid_argument(format!("{e:#}")))?;
        let all = self.all_entries();
        let names: Vec<String> = all.iter().map(|e| e.name.clone()).collect();
        let pick = |t: &str| {
            crate::faults::select(t, &names, spec.percent, spec.seed)
                .map_err(|e| tonic::Status::invalid_argument(format!("{e:#}")))
        };
        let entry = |n: &str| all.iter().find(|e| e.name == n).cloned();
        let id = format!(
            "f-{}",
            self.next_fault
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (targets, revert) = match &spec.kind {
            FaultKind::Latency { .. }
            | FaultKind::Error { .. }
            | FaultKind::Hang { .. }
            | FaultKind::Blackhole { .. } => {
                let targets = pick(spec.target.as_deref().unwrap_or_default())?;
                let fault = grpc_fault(&id, &spec, None);
                let mut applied = Vec::new();
                for t in &targets {
                    let e = entry(t).ok_or_else(|| tonic::Status::internal("target vanished"))?;
                    let r = ControlClient::new(e.channel.clone())
                        .inject_fault(fault.clone())
                        .await;
                    if let Err(s) = r {
                        revert_grpc(&id, &applied).await;
                        return Err(tonic::Status::failed_precondition(format!(
                            "{t}: {}",
                            s.message()
                        )));
                    }
                    applied.push(e.channel);
                }
                (targets, Revert::Grpc(applied))
            }
            FaultKind::Partition { between, one_way } => {
                let a = pick(&between[0])?;
                let b = pick(&between[1])?;
                let mut applied = Vec::new();
                let mut pairs: Vec<(String, String)> = Vec::new();
                for x in &a {
                    for y in &b {
                        pairs.push((x.clone(), y.clone()));
                        if !one_way {
                            pairs.push((y.clone(), x.clone()));
                        }
                    }
                }
                for (from, to) in &pairs {
                    let (Some(f), Some(t)) = (entry(from), entry(to)) else {
                        continue;
                    };
                    let fault = grpc_fault(&id, &spec, Some(&t.addr));
                    if let Err(s) = ControlClient::new(f.channel.clone())
                        .inject_fault(fault)
                        .await
                    {
                        revert_grpc(&id, &applied).await;
                        return Err(tonic::Status::failed_precondition(format!(
                            "{from}: {}",
                            s.message()
                        )));
                    }
                    applied.push(f.channel);
                }
                ([a, b].concat(), Revert::Grpc(applied))
            }
            FaultKind::Kill { signal } => {
                let targets = pick(spec.target.as_deref().unwrap_or_default())?;
                let sig = crate::faults::signal_number(signal)
                    .map_err(|e| tonic::Status::invalid_argument(format!("{e:#}")))?;
                for t in &targets {
                    if let Some(d) = &self.docker {
                        // Docker mode: the container's init process gets the signal.
                        let name = format!(
                            "SIG{}",
                            signal.trim_start_matches("SIG").to_ascii_uppercase()
                        );
                        d.kill(t, &name).await.map_err(internal)?;
                    } else if let Some(e) = entry(t) {
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        unsafe { libc::kill(e.pid as i32, sig) };
                    }
                }
                (targets, Revert::Nothing)
            }
            FaultKind::Pause => {
                let targets = pick(spec.target.as_deref().unwrap_or_default())?;
                if let Some(d) = &self.docker {
                    // Docker mode: `docker pause` (the cgroup freezer).
                    for t in &targets {
                        d.pause(t).await.map_err(internal)?;
                    }
                    (targets.clone(), Revert::Unpause(targets))
                } else {
                    let pids: Vec<u32> = targets
                        .iter()
                        .filter_map(|t| entry(t))
                        .map(|e| e.pid)
                        .collect();
                    for p in &pids {
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        unsafe { libc::kill(*p as i32, libc::SIGSTOP) };
                    }
                    (targets, Revert::Continue(pids))
                }
            }
            FaultKind::Restart => {
                let targets = pick(spec.target.as_deref().unwrap_or_default())?;
                let mut fleet = self.fleet.lock().await;
                let Fleet {
                    backend,
                    frontends,
                    cw_frontends,
                    services,
                    ..
                } = &mut *fleet;
                for inst in backend
                    .iter_mut()
                    .chain(frontends.iter_mut())
                    .chain(cw_frontends.iter_mut())
                    .chain(services.iter_mut())
                {
                    if targets.contains(&inst.name) {
                        self.respawn(inst).await.map_err(internal)?;
                        wait_all_ready(std::slice::from_mut(inst))
                            .await
                            .map_err(internal)?;
                    }
                }
                self.publish_roster(&fleet);
                if let Some(b) = &fleet.backend {
                    let mut be = self.backend_entry.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(e) = be.as_mut() {
                        e.pid = b.child.pid();
                    }
                }
                (targets, Revert::Nothing)
            }
            FaultKind::ThreadHog { threads } => {
                let targets = pick(spec.target.as_deref().unwrap_or_default())?;
                let applied =
                    configure_all(&targets, &entry, "thread_hog", &threads.to_string()).await?;
                (targets, Revert::Configure(applied, "thread_hog"))
            }
            FaultKind::MemoryHog { bytes } => {
                let targets = pick(spec.target.as_deref().unwrap_or_default())?;
                if let Some(t) = targets.iter().find(|t| !t.starts_with("lambda-")) {
                    return Err(tonic::Status::invalid_argument(format!(
                        "--target: memory-hog applies to Lambda hosts; {t} is not one"
                    )));
                }
                let applied =
                    configure_all(&targets, &entry, "memory_hog", &bytes.to_string()).await?;
                (targets, Revert::Configure(applied, "memory_hog"))
            }
            FaultKind::ThreadLimit { limit } => {
                let targets = pick(spec.target.as_deref().unwrap_or_default())?;
                let mut saved = Vec::new();
                let mut docker_saved = Vec::new();
                for t in &targets {
                    if let Some(d) = &self.docker {
                        // Docker mode: `docker update --pids-limit`.
                        let old = d.set_pids_limit(t, *limit).await.map_err(internal)?;
                        docker_saved.push((t.clone(), old));
                        continue;
                    }
                    let e = entry(t).ok_or_else(|| tonic::Status::internal("target vanished"))?;
                    let Some(cg) = e.cgroup.clone() else {
                        return Err(tonic::Status::failed_precondition(format!(
                            "{t}: thread-limit needs a front-end under cgroup enforcement (this run uses {})",
                            self.plan.enforcement.as_str()
                        )));
                    };
                    let old = std::fs::read_to_string(cg.path.join("pids.max"))
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_else(|_| "max".into());
                    cg.set_limit(*limit).map_err(internal)?;
                    saved.push((cg, old));
                }
                let revert = match self.docker {
                    Some(_) => Revert::PidsLimit(docker_saved),
                    None => Revert::ThreadLimit(saved),
                };
                (targets, revert)
            }
        };
        let now = cascade_core::now_ms();
        let expires_ms = spec.duration.map_or(0, |d| now + d.as_millis() as i64);
        let one_shot = matches!(revert, Revert::Nothing);
        let active = ActiveFault {
            id: id.clone(),
            spec: spec.clone(),
            targets: targets.clone(),
            started_ms: now,
            expires_ms,
            revert,
        };
        let reply = active.to_proto();
        tracing::info!(%id, summary = %spec.summary(), ?targets, seed = spec.seed, "fault injected");
        if !one_shot {
            self.faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(active);
            if let Some(d) = spec.duration {
                let sup = self.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {
                            let cleared = sup.clear_faults(&id).await;
                            if !cleared.is_empty() {
                                tracing::info!(%id, "fault expired and was reverted");
                            }
                        }
                        _ = sup.shutdown.cancelled() => {}
                    }
                });
            }
        }
        Ok(reply)
    }

    /// Reverts fault `id`, or every fault when `id` is empty.
    async fn clear_faults(&self, id: &str) -> Vec<String> {
        let gone: Vec<ActiveFault> = {
            let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
            let (gone, keep) = f.drain(..).partition(|x| id.is_empty() || x.id == id);
            *f = keep;
            gone
        };
        let mut ids = Vec::new();
        for f in gone {
            match f.revert {
                Revert::Grpc(channels) => revert_grpc(&f.id, &channels).await,
                Revert::PidsLimit(saved) => {
                    if let Some(d) = &self.docker {
                        for (n, old) in saved {
                            if let Err(e) = d.restore_pids_limit(&n, old).await {
                                tracing::error!(error = %format!("{e:#}"), "could not restore pids_limit");
                            }
                        }
                    }
                }
                Revert::Unpause(names) => {
                    if let Some(d) = &self.docker {
                        for n in names {
                            if let Err(e) = d.unpause(&n).await {
                                tracing::warn!(error = %format!("{e:#}"), "could not unpause");
                            }
                        }
                    }
                }
                Revert::Continue(pids) => {
                    for p in pids {
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        unsafe { libc::kill(p as i32, libc::SIGCONT) };
                    }
                }
                Revert::ThreadLimit(saved) => {
                    for (cg, old) in saved {
                        let value = old
                            .parse::<u64>()
                            .unwrap_or(crate::limits::MAX_THREAD_LIMIT);
                        if let Err(e) = cg.set_limit(value) {
                            tracing::error!(error = %format!("{e:#}"), "could not restore pids.max");
                        }
                    }
                }
                Revert::Configure(channels, key) => {
                    for ch in channels {
                        if let Err(s) = ControlClient::new(ch)
                            .configure(cascade_proto::control::ConfigureRequest {
                                key: key.to_owned(),
                                value: "0".into(),
                            })
                            .await
                        {
                            tracing::warn!(error = %s.message(), "could not revert {key}");
                        }
                    }
                }
                Revert::Nothing => {}
            }
            tracing::info!(id = %f.id, "fault reverted");
            ids.push(f.id);
        }
        ids
    }

    /// Stops every process and removes what the run created.
    async fn teardown(&self) {
        // Revert every fault first: a paused process cannot even exit.
        let cleared = self.clear_faults("").await;
        if !cleared.is_empty() {
            tracing::info!(?cleared, "faults reverted at shutdown");
        }
        if let Some(d) = &self.docker {
            // Docker mode: compose owns (and stops) what it started; the
            // front-ends added here are removed here. A restart in progress
            // holds the fleet until its current step is done (it stops at
            // the next one): wait for it, boundedly, so no `docker restart`
            // is left in flight to bring a container back behind compose.
            let fleet = tokio::time::timeout(Duration::from_secs(15), self.fleet.lock()).await;
            d.remove_created().await;
            if let Ok(mut fleet) = fleet {
                *fleet = Fleet::default();
            }
            self.roster
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            return;
        }
        let mut fleet = self.fleet.lock().await;
        while let Some(mut inst) = fleet.services.pop() {
            inst.child.stop().await;
        }
        let mut set = JoinSet::new();
        let mut frontends: Vec<Instance> = fleet.frontends.drain(..).collect();
        frontends.append(&mut fleet.cw_frontends);
        for mut inst in frontends {
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

/// How to undo a fault.
enum Revert {
    /// Clear the gRPC fault (by id) on these processes' fault layers.
    Grpc(Vec<Channel>),
    /// SIGCONT these pids.
    Continue(Vec<u32>),
    /// `docker unpause` these instances (docker mode).
    Unpause(Vec<String>),
    /// Restore these instances' container `pids_limit` (docker mode).
    PidsLimit(Vec<(String, i64)>),
    /// Restore these cgroups' `pids.max`.
    ThreadLimit(Vec<(InstanceCgroup, String)>),
    /// Set this Control key back to 0 on these processes.
    Configure(Vec<Channel>, &'static str),
    /// One-shot (kill, restart): nothing to undo.
    Nothing,
}

/// Applies a Control setting on every target; undoes it on all if one fails.
async fn configure_all(
    targets: &[String],
    entry: &impl Fn(&str) -> Option<RosterEntry>,
    key: &'static str,
    value: &str,
) -> Result<Vec<Channel>, tonic::Status> {
    let mut applied: Vec<Channel> = Vec::new();
    for t in targets {
        let e = entry(t).ok_or_else(|| tonic::Status::internal("target vanished"))?;
        let r = ControlClient::new(e.channel.clone())
            .configure(cascade_proto::control::ConfigureRequest {
                key: key.to_owned(),
                value: value.to_owned(),
            })
            .await;
        if let Err(s) = r {
            for ch in &applied {
                let _ = ControlClient::new(ch.clone())
                    .configure(cascade_proto::control::ConfigureRequest {
                        key: key.to_owned(),
                        value: "0".into(),
                    })
                    .await;
            }
            return Err(tonic::Status::failed_precondition(format!(
                "{t}: {}",
                s.message()
            )));
        }
        applied.push(e.channel);
    }
    Ok(applied)
}

/// A fault in force.
struct ActiveFault {
    id: String,
    spec: FaultSpec,
    targets: Vec<String>,
    started_ms: i64,
    expires_ms: i64,
    revert: Revert,
}

impl ActiveFault {
    fn to_proto(&self) -> sv::ActiveFault {
        sv::ActiveFault {
            id: self.id.clone(),
            spec_json: serde_json::to_string(&self.spec).unwrap_or_default(),
            summary: self.spec.summary(),
            targets: self.targets.clone(),
            started_ms: self.started_ms,
            expires_ms: self.expires_ms,
        }
    }
}

/// The Control-level fault for a gRPC-kind spec (`to`: outbound to that address).
fn grpc_fault(id: &str, spec: &FaultSpec, to: Option<&str>) -> cascade_proto::control::GrpcFault {
    let mut f = cascade_proto::control::GrpcFault {
        id: id.to_owned(),
        probability: 1.0,
        seed: spec.seed,
        to: to.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let scope = |f: &mut cascade_proto::control::GrpcFault, g: &crate::faults::GrpcScope| {
        f.probability = g.probability;
        f.method = g.method.clone().unwrap_or_default();
    };
    match &spec.kind {
        FaultKind::Latency {
            latency,
            jitter,
            grpc,
        } => {
            f.kind = "latency".into();
            f.latency_ms = latency.as_millis() as u64;
            f.jitter_ms = jitter.as_millis() as u64;
            scope(&mut f, grpc);
        }
        FaultKind::Error { code, grpc } => {
            f.kind = "error".into();
            f.code = code.clone();
            scope(&mut f, grpc);
        }
        FaultKind::Hang { grpc } => {
            f.kind = "hang".into();
            scope(&mut f, grpc);
        }
        FaultKind::Blackhole { grpc } => {
            f.kind = "blackhole".into();
            scope(&mut f, grpc);
        }
        FaultKind::Partition { .. } => {
            f.kind = "error".into();
            f.code = "UNAVAILABLE".into();
            f.message = format!("unreachable: network partition ({id})");
        }
        _ => {}
    }
    f
}

async fn revert_grpc(id: &str, channels: &[Channel]) {
    for ch in channels {
        if let Err(s) = ControlClient::new(ch.clone())
            .clear_fault(cascade_proto::control::ClearFaultRequest { id: id.to_owned() })
            .await
        {
            tracing::warn!(%id, error = %s.message(), "could not clear a fault (process gone?)");
        }
    }
}

/// Customer-traffic window that decides a service's health.
pub const HEALTH_WINDOW_SECS: i64 = 5;

/// Health from customer traffic: serving when at least 95% of calls
/// succeeded within the deadline, degraded from 50%, down below. `None`
/// when there were no calls in the window.
fn judge(t: &traffic::Summary, deadline_ms: f64) -> Option<(&'static str, String)> {
    let total = t.ok + t.failed;
    if total == 0 {
        return None;
    }
    let ratio = t.ok as f64 / total as f64;
    let health = if ratio >= 0.95 && t.p99_ms <= deadline_ms {
        "serving"
    } else if ratio >= 0.5 {
        "degraded"
    } else {
        "down"
    };
    let mut detail = format!(
        "{:.0}% of {total} customer calls ok, p99 {:.0} ms (last {HEALTH_WINDOW_SECS} s)",
        ratio * 100.0,
        t.p99_ms
    );
    if !t.errors.is_empty() {
        let errs: Vec<String> = t.errors.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        detail.push_str(&format!("; {}", errs.join(", ")));
    }
    Some((health, detail))
}

/// Polls every new instance's health until all are SERVING (or one fails).
/// Incident time a restarted front-end has to get a ready shard map before
/// the deployment judges it unhealthy (scenario steps' default).
pub const DEFAULT_RESTART_GRACE: &str = "15m";

/// Times a restart batch's slow front-ends are removed and started again
/// before the restart gives up ("recovery stalled").
const RESTART_ATTEMPTS: u32 = 10;

/// Waits up to `grace` for every instance's shard map to be ready (or, with
/// `settled`, at least no longer building); returns the ones that are not,
/// with what each last reported.
async fn maps_ready_within(
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
            let state = match cascade_core::clients::lazy_channel(&addr, Duration::from_millis(500))
            {
                Ok(ch) => match ControlClient::new(ch).get_status(GetStatusRequest {}).await {
                    Ok(s) => s.into_inner().frontend.map_or_else(
                        || "no front-end status".to_owned(),
                        |f| {
                            if f.shard_map == "ready" || (settled && f.shard_map == "unusable") {
                                String::new()
                            } else if f.shard_map_detail.is_empty() {
                                format!("shard map {}", f.shard_map)
                            } else {
                                format!("shard map {}: {}", f.shard_map, f.shard_map_detail)
                            }
                        },
                    ),
                    Err(e) => format!("unreachable: {}", e.message()),
                },
                Err(e) => e.to_string(),
            };
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
            let mut done = 0;
            let batch = r.batch as usize;
            let mut start = 0;
            let grace = Duration::from_millis(r.grace_ms);
            while start < total && !sup.shutdown.is_cancelled() {
                let end = (start + batch).min(total);
                let mut result = sup
                    .restart_batch(&mut fleet.frontends[start..end], None)
                    .await;
                if result.is_ok() {
                    result = wait_all_ready(&mut fleet.frontends[start..end]).await;
                }
                sup.publish_roster(&fleet);
                // The deployment's health gate: a restarted front-end whose
                // shard map is not ready within the grace is judged
                // unhealthy, removed and started again.
                let mut removed = Vec::new();
                let mut attempt = 1;
                while result.is_ok() && !grace.is_zero() && !sup.shutdown.is_cancelled() {
                    let slow = maps_ready_within(&fleet.frontends[start..end], grace, false).await;
                    if slow.is_empty() {
                        break;
                    }
                    sup.restart_removals
                        .fetch_add(slow.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let names: Vec<String> = slow.iter().map(|(n, _)| n.clone()).collect();
                    let why = &slow[0].1;
                    tracing::warn!(?names, attempt, %why, "restarted front-ends not ready within the grace; removing and starting them again");
                    let detail = format!(
                        "{} not ready within the {} grace ({why}); judged unhealthy: removed and started again (attempt {attempt} of {RESTART_ATTEMPTS})",
                        names.join(", "),
                        humantime::format_duration(grace)
                    );
                    removed.extend(names.iter().cloned());
                    let _ = tx
                        .send(Ok(sv::RestartProgress {
                            removed: names.clone(),
                            done: done as u32,
                            total: total as u32,
                            detail,
                            ..Default::default()
                        }))
                        .await;
                    if attempt >= RESTART_ATTEMPTS {
                        result = Err(anyhow::anyhow!(
                            "recovery stalled: {} still not ready after {attempt} restarts ({why})",
                            names.join(", ")
                        ));
                        break;
                    }
                    attempt += 1;
                    result = sup
                        .restart_batch(&mut fleet.frontends[start..end], Some(&names))
                        .await;
                    if result.is_ok() {
                        result = wait_all_ready(&mut fleet.frontends[start..end]).await;
                    }
                    sup.publish_roster(&fleet);
                }
                if let Err(e) = result {
                    let _ = tx.send(Err(internal(e))).await;
                    return;
                }
                done += end - start;
                let restarted: Vec<String> = fleet.frontends[start..end]
                    .iter()
                    .map(|i| i.name.clone())
                    .collect();
                tracing::info!(?restarted, done, total, "front-ends restarted");
                let detail = format!(
                    "restarted {} ({done}/{total}){}",
                    restarted.join(", "),
                    if removed.is_empty() {
                        String::new()
                    } else {
                        format!("; {} removal(s) for slowness", removed.len())
                    }
                );
                if tx
                    .send(Ok(sv::RestartProgress {
                        restarted,
                        done: done as u32,
                        total: total as u32,
                        removed,
                        detail,
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

    async fn shd_post(
        &self,
        r: tonic::Request<sv::ShdPostRequest>,
    ) -> Result<tonic::Response<sv::ShdPostReply>, tonic::Status> {
        let r = r.into_inner();
        if r.message.trim().is_empty() {
            return Err(tonic::Status::invalid_argument(
                "message: must not be empty",
            ));
        }
        let (path, operator) = if r.backup {
            // The backup tool: minimal dependencies, no sign-in.
            ("backup", "operator (backup tool)".to_owned())
        } else {
            let cognito = self
                .0
                .service_roster
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|e| e.service == Service::Cognito)
                .map(|e| e.channel.clone())
                .ok_or_else(|| {
                    tonic::Status::failed_precondition(
                        "the primary SHD path signs in through Cognito, which is not running; use --backup",
                    )
                })?;
            let resp = tokio::time::timeout(
                Duration::from_secs(2),
                CognitoClient::new(cognito)
                    .validate_token(cg::ValidateTokenRequest { token: r.token }),
            )
            .await;
            let user = match resp {
                Ok(Ok(v)) => v.into_inner().username,
                Ok(Err(s)) => {
                    return Err(tonic::Status::unavailable(format!(
                        "cannot verify the operator's Cognito sign-in: {:?}: {}",
                        s.code(),
                        s.message()
                    )));
                }
                Err(_) => {
                    return Err(tonic::Status::unavailable(
                        "cannot verify the operator's Cognito sign-in: no answer within 2 s",
                    ));
                }
            };
            ("primary", user)
        };
        let post = sv::ShdPost {
            at_ms: cascade_core::now_ms(),
            message: r.message,
            path: path.into(),
            operator,
        };
        let line = serde_json::json!({"at_ms": post.at_ms, "message": post.message, "path": post.path, "operator": post.operator});
        let log = self.0.run_dir.join("shd-posts.jsonl");
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()))
        {
            tracing::warn!(error = %e, "could not append to {}", log.display());
        }
        self.0
            .shd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(post.clone());
        Ok(tonic::Response::new(sv::ShdPostReply { post: Some(post) }))
    }

    async fn shd_list(
        &self,
        _r: tonic::Request<sv::ShdListRequest>,
    ) -> Result<tonic::Response<sv::ShdListReply>, tonic::Status> {
        let posts = self.0.shd.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(tonic::Response::new(sv::ShdListReply { posts }))
    }

    async fn configure(
        &self,
        r: tonic::Request<sv::ConfigureRequest>,
    ) -> Result<tonic::Response<sv::ConfigureReply>, tonic::Status> {
        let r = r.into_inner();
        let mut all = self
            .0
            .service_roster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        all.extend(
            self.0
                .roster
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        let targets: Vec<RosterEntry> = all
            .iter()
            .filter(|e| e.name == r.target || e.service.name() == r.target)
            .cloned()
            .collect();
        if targets.is_empty() {
            let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
            return Err(tonic::Status::invalid_argument(format!(
                "target: no service or instance named {:?}; running: {}",
                r.target,
                names.join(", ")
            )));
        }
        let mut applied = HashMap::new();
        for t in targets {
            let resp = ControlClient::new(t.channel)
                .configure(cascade_proto::control::ConfigureRequest {
                    key: r.key.clone(),
                    value: r.value.clone(),
                })
                .await?;
            applied.insert(t.name, resp.into_inner().applied);
        }
        Ok(tonic::Response::new(sv::ConfigureReply { applied }))
    }

    async fn inject_fault(
        &self,
        r: tonic::Request<sv::InjectFaultRequest>,
    ) -> Result<tonic::Response<sv::ActiveFault>, tonic::Status> {
        let spec: FaultSpec = serde_json::from_str(&r.into_inner().spec_json)
            .map_err(|e| tonic::Status::invalid_argument(format!("fault spec: {e}")))?;
        Ok(tonic::Response::new(self.0.inject_fault(spec).await?))
    }

    async fn list_faults(
        &self,
        _r: tonic::Request<sv::ListFaultsRequest>,
    ) -> Result<tonic::Response<sv::ListFaultsReply>, tonic::Status> {
        let faults = self
            .0
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(ActiveFault::to_proto)
            .collect();
        Ok(tonic::Response::new(sv::ListFaultsReply { faults }))
    }

    async fn clear_faults(
        &self,
        r: tonic::Request<sv::ClearFaultsRequest>,
    ) -> Result<tonic::Response<sv::ClearFaultsReply>, tonic::Status> {
        let id = r.into_inner().id;
        let cleared = self.0.clear_faults(&id).await;
        if !id.is_empty() && cleared.is_empty() {
            return Err(tonic::Status::invalid_argument(format!(
                "id: no active fault {id:?}; `cascade faults` lists them"
            )));
        }
        Ok(tonic::Response::new(sv::ClearFaultsReply { cleared }))
    }
}

/// Runs a whole topology until shutdown; `supervisor.json` appears once
/// everything is up (the detached parent waits for it).
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
    let (plan, docker) = if args.docker.docker {
        // Docker mode: each front-end container's pids_limit is the limit.
        let plan = LimitPlan::docker(args.thread_limit);
        let env = crate::docker::DockerEnv::connect(&args.docker, plan.limit).await?;
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
        service_roster: Mutex::default(),
        service_snapshot: Mutex::default(),
        recorder: Arc::default(),
        caller: Mutex::default(),
        shd: Mutex::default(),
        faults: Mutex::default(),
        next_fault: std::sync::atomic::AtomicU64::new(1),
        alarms: Mutex::default(),
        alarm_busy: std::sync::atomic::AtomicBool::new(false),
        restart_removals: std::sync::atomic::AtomicU64::new(0),
        shutdown: shutdown.clone(),
        docker,
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
        // Customers come only once the fleet can route: every front-end's
        // shard map populated (a healthy fleet start is not an impairment).
        tokio::select! {
            slow = maps_ready_within(&fleet.frontends, launcher::READY_DEADLINE, true) => {
                if let Some((name, why)) = slow.first() {
                    bail!("{name} (and {} more) still building its shard map after {:?}: {why}", slow.len() - 1, launcher::READY_DEADLINE);
                }
            }
            _ = sup.shutdown.cancelled() => return Ok(()),
        }
        tokio::select! {
            r = sup.start_services(&mut fleet) => r?,
            _ = sup.shutdown.cancelled() => return Ok(()),
        }
    }
    sup.watch_once().await;
    let control_at = args
        .docker
        .control_listen
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let control = std::net::TcpListener::bind(control_at)
        .with_context(|| format!("bind the control port {control_at}"))?;
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
            .add_service(health_service)
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
    if let Some(scenario) = &args.docker.play {
        crate::docker::play(scenario, sup.shutdown.clone())?;
    }

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
        if let Some(parent) = args.exit_with
            && !home::pid_alive(parent)
        {
            tracing::warn!(
                parent,
                "the run that started this supervisor is gone; taking everything down"
            );
            sup.shutdown.cancel();
            break;
        }
        sup.watch_once().await;
        if args.topology.thread_alarm {
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
    println!("cascade: stopping ...");
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}
