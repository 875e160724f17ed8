//! Applying and reverting faults: one function per fault kind, each
//! returning the targets it hit and how to undo it. A fault stays in force
//! until it is cleared, its duration passes, or the run ends (teardown
//! reverts every one, first of all: a paused process cannot even exit).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cascade_core::threadlimit::InstanceCgroup;
use cascade_proto::control::{ClearFaultRequest, ConfigureRequest, GrpcFault};
use cascade_proto::supervisor as sv;
use parking_lot::Mutex;
use tonic::transport::Channel;

use super::watch::RosterEntry;
use super::{Supervisor, SupervisorError};
use crate::faults::{FaultKind, FaultSpec, GrpcScope};
use crate::launcher::{Signal, signal};

/// The faults in force.
#[derive(Default)]
pub(super) struct Faults {
    /// Every fault in force, with how to revert it.
    active: Mutex<Vec<ActiveFault>>,
    /// Number of the next fault id (`f-N`).
    next: AtomicU64,
}

impl Faults {
    fn next_id(&self) -> String {
        format!("f-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The faults in force, as the API lists them.
    pub fn list(&self) -> Vec<sv::ActiveFault> {
        self.active
            .lock()
            .iter()
            .map(ActiveFault::to_proto)
            .collect()
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

/// The run's processes, as fault targets.
struct Targets {
    roster: Vec<RosterEntry>,
    names: Vec<String>,
}

impl Targets {
    fn new(roster: Vec<RosterEntry>) -> Self {
        let names = roster.iter().map(|e| e.name.clone()).collect();
        Self { roster, names }
    }

    /// The instances `target` names (service, instance, range, percent).
    fn pick(&self, target: Option<&str>, spec: &FaultSpec) -> Result<Vec<String>, SupervisorError> {
        crate::faults::select(
            target.unwrap_or_default(),
            &self.names,
            spec.percent,
            spec.seed,
        )
        .map_err(SupervisorError::invalid)
    }

    fn entry(&self, name: &str) -> Result<&RosterEntry, SupervisorError> {
        self.roster.iter().find(|e| e.name == name).ok_or_else(|| {
            SupervisorError::FailedPrecondition(format!("{name}: no longer running"))
        })
    }
}

type Applied = (Vec<String>, Revert);

impl Supervisor {
    /// Applies a fault; it stays in force until cleared, until its duration
    /// passes, or until the run ends.
    pub(super) async fn inject_fault(
        self: &Arc<Self>,
        spec: FaultSpec,
    ) -> Result<sv::ActiveFault, SupervisorError> {
        spec.validate().map_err(SupervisorError::invalid)?;
        let t = Targets::new(self.roster());
        let id = self.faults.next_id();
        let target = spec.target.as_deref();
        let (targets, revert) = match &spec.kind {
            FaultKind::Latency { .. }
            | FaultKind::Error { .. }
            | FaultKind::Hang { .. }
            | FaultKind::Blackhole { .. } => apply_grpc(&id, &spec, &t).await?,
            FaultKind::Partition { between, one_way } => {
                apply_partition(&id, &spec, &t, between, *one_way).await?
            }
            FaultKind::Kill { signal } => {
                self.apply_kill(&t, t.pick(target, &spec)?, signal).await?
            }
            FaultKind::Pause => self.apply_pause(&t, t.pick(target, &spec)?).await?,
            FaultKind::Restart => self.apply_restart(t.pick(target, &spec)?).await?,
            FaultKind::ThreadHog { threads } => {
                let targets = t.pick(target, &spec)?;
                apply_configure(&t, targets, "thread_hog", &threads.to_string()).await?
            }
            FaultKind::MemoryHog { bytes } => {
                let targets = t.pick(target, &spec)?;
                if let Some(x) = targets.iter().find(|x| !x.starts_with("lambda-")) {
                    return Err(SupervisorError::InvalidArgument(format!(
                        "--target: memory-hog applies to Lambda hosts; {x} is not one"
                    )));
                }
                apply_configure(&t, targets, "memory_hog", &bytes.to_string()).await?
            }
            FaultKind::ThreadLimit { limit } => {
                self.apply_thread_limit(&t, t.pick(target, &spec)?, *limit)
                    .await?
            }
        };
        Ok(self.record_fault(id, spec, targets, revert))
    }

    /// Keeps a fault that has something to revert, and arms its expiry.
    fn record_fault(
        self: &Arc<Self>,
        id: String,
        spec: FaultSpec,
        targets: Vec<String>,
        revert: Revert,
    ) -> sv::ActiveFault {
        let now = cascade_core::now_ms();
        let active = ActiveFault {
            id: id.clone(),
            spec: spec.clone(),
            targets,
            started_ms: now,
            expires_ms: spec.duration.map_or(0, |d| now + d.as_millis() as i64),
            revert,
        };
        let reply = active.to_proto();
        tracing::info!(%id, summary = %spec.summary(), targets = ?active.targets, seed = spec.seed, "fault injected");
        if matches!(active.revert, Revert::Nothing) {
            return reply;
        }
        self.faults.active.lock().push(active);
        if let Some(d) = spec.duration {
            let sup = self.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {
                        if !sup.clear_faults(&id).await.is_empty() {
                            tracing::info!(%id, "fault expired and was reverted");
                        }
                    }
                    _ = sup.shutdown.cancelled() => {}
                }
            });
        }
        reply
    }

    async fn apply_kill(
        &self,
        t: &Targets,
        targets: Vec<String>,
        name: &str,
    ) -> Result<Applied, SupervisorError> {
        let sig = crate::faults::signal_number(name).map_err(SupervisorError::invalid)?;
        for x in &targets {
            match &self.docker {
                // Docker mode: the container's init process gets the signal.
                Some(d) => d.kill(x, sig.as_str()).await?,
                None => signal(t.entry(x)?.pid, sig),
            }
        }
        Ok((targets, Revert::Nothing))
    }

    async fn apply_pause(
        &self,
        t: &Targets,
        targets: Vec<String>,
    ) -> Result<Applied, SupervisorError> {
        if let Some(d) = &self.docker {
            // Docker mode: `docker pause` (the cgroup freezer).
            for x in &targets {
                d.pause(x).await?;
            }
            return Ok((targets.clone(), Revert::Unpause(targets)));
        }
        let mut pids = Vec::new();
        for x in &targets {
            let pid = t.entry(x)?.pid;
            signal(pid, Signal::SIGSTOP);
            pids.push(pid);
        }
        Ok((targets, Revert::Continue(pids)))
    }

    async fn apply_restart(&self, targets: Vec<String>) -> Result<Applied, SupervisorError> {
        let mut fleet = self.fleet.lock().await;
        for inst in fleet.all_mut().filter(|i| targets.contains(&i.name)) {
            self.respawn(inst).await?;
            super::readiness::wait_all_ready(std::slice::from_mut(inst)).await?;
        }
        self.publish_roster(&fleet);
        Ok((targets, Revert::Nothing))
    }

    async fn apply_thread_limit(
        &self,
        t: &Targets,
        targets: Vec<String>,
        limit: u64,
    ) -> Result<Applied, SupervisorError> {
        if let Some(d) = &self.docker {
            // Docker mode: `docker update --pids-limit`.
            let mut saved = Vec::new();
            for x in &targets {
                saved.push((x.clone(), d.set_pids_limit(x, limit).await?));
            }
            return Ok((targets, Revert::PidsLimit(saved)));
        }
        let mut saved = Vec::new();
        for x in &targets {
            let Some(cg) = t.entry(x)?.cgroup.clone() else {
                return Err(SupervisorError::FailedPrecondition(format!(
                    "{x}: thread-limit needs a front-end under cgroup enforcement (this run uses {})",
                    self.plan.enforcement.as_str()
                )));
            };
            let old = std::fs::read_to_string(cg.path.join("pids.max"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "max".into());
            cg.set_limit(limit)?;
            saved.push((cg, old));
        }
        Ok((targets, Revert::ThreadLimit(saved)))
    }

    /// `cascade clear [ID]`: clears one fault (an unknown id is refused)
    /// or, without an id, every fault; returns the ids cleared.
    pub(super) async fn clear_faults_request(
        &self,
        id: &str,
    ) -> Result<Vec<String>, SupervisorError> {
        let cleared = self.clear_faults(id).await;
        if !id.is_empty() && cleared.is_empty() {
            return Err(SupervisorError::InvalidArgument(format!(
                "id: no active fault {id:?}; `cascade faults` lists them"
            )));
        }
        Ok(cleared)
    }

    /// Reverts fault `id`, or every fault when `id` is empty; returns the ids reverted.
    pub(super) async fn clear_faults(&self, id: &str) -> Vec<String> {
        let gone: Vec<ActiveFault> = {
            let mut f = self.faults.active.lock();
            let (gone, keep) = f.drain(..).partition(|x| id.is_empty() || x.id == id);
            *f = keep;
            gone
        };
        let mut ids = Vec::new();
        for f in gone {
            self.revert(&f.id, f.revert).await;
            tracing::info!(id = %f.id, "fault reverted");
            ids.push(f.id);
        }
        ids
    }

    async fn revert(&self, id: &str, revert: Revert) {
        match revert {
            Revert::Grpc(channels) => revert_grpc(id, &channels).await,
            Revert::PidsLimit(saved) => {
                for (n, old) in saved {
                    if let Some(d) = &self.docker
                        && let Err(e) = d.restore_pids_limit(&n, old).await
                    {
                        tracing::error!(error = %format!("{e:#}"), "could not restore pids_limit");
                    }
                }
            }
            Revert::Unpause(names) => {
                for n in names {
                    if let Some(d) = &self.docker
                        && let Err(e) = d.unpause(&n).await
                    {
                        tracing::warn!(error = %format!("{e:#}"), "could not unpause");
                    }
                }
            }
            Revert::Continue(pids) => pids.into_iter().for_each(|p| signal(p, Signal::SIGCONT)),
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
                    if let Err(s) = configure(ch, key, "0").await {
                        tracing::warn!(error = %s.message(), "could not revert {key}");
                    }
                }
            }
            Revert::Nothing => {}
        }
    }
}

/// A gRPC-level fault (latency, error, hang, blackhole) on each target's fault layer.
async fn apply_grpc(id: &str, spec: &FaultSpec, t: &Targets) -> Result<Applied, SupervisorError> {
    let targets = t.pick(spec.target.as_deref(), spec)?;
    let fault = grpc_fault(id, spec, None);
    let mut applied = Vec::new();
    for x in &targets {
        let e = t.entry(x)?;
        if let Err(s) = cascade_core::auth::control(e.channel.clone())
            .inject_fault(fault.clone())
            .await
        {
            revert_grpc(id, &applied).await;
            return Err(SupervisorError::FailedPrecondition(format!(
                "{x}: {}",
                s.message()
            )));
        }
        applied.push(e.channel.clone());
    }
    Ok((targets, Revert::Grpc(applied)))
}

/// A partition: every process on one side fails its calls to the other
/// side as unreachable (both ways unless `one_way`).
async fn apply_partition(
    id: &str,
    spec: &FaultSpec,
    t: &Targets,
    between: &[String],
    one_way: bool,
) -> Result<Applied, SupervisorError> {
    let a = t.pick(Some(&between[0]), spec)?;
    let b = t.pick(Some(&between[1]), spec)?;
    let mut pairs: Vec<(&String, &String)> = Vec::new();
    for x in &a {
        for y in &b {
            pairs.push((x, y));
            if !one_way {
                pairs.push((y, x));
            }
        }
    }
    let mut applied = Vec::new();
    for (from, to) in pairs {
        let (f, to_addr) = (t.entry(from)?, &t.entry(to)?.addr);
        let fault = grpc_fault(id, spec, Some(to_addr));
        if let Err(s) = cascade_core::auth::control(f.channel.clone())
            .inject_fault(fault)
            .await
        {
            revert_grpc(id, &applied).await;
            return Err(SupervisorError::FailedPrecondition(format!(
                "{from}: {}",
                s.message()
            )));
        }
        applied.push(f.channel.clone());
    }
    Ok(([a, b].concat(), Revert::Grpc(applied)))
}

/// A Control setting on every target; undone on all if one fails.
async fn apply_configure(
    t: &Targets,
    targets: Vec<String>,
    key: &'static str,
    value: &str,
) -> Result<Applied, SupervisorError> {
    let mut applied: Vec<Channel> = Vec::new();
    for x in &targets {
        let ch = t.entry(x)?.channel.clone();
        if let Err(s) = configure(ch.clone(), key, value).await {
            for ch in applied {
                let _ = configure(ch, key, "0").await;
            }
            return Err(SupervisorError::FailedPrecondition(format!(
                "{x}: {}",
                s.message()
            )));
        }
        applied.push(ch);
    }
    Ok((targets, Revert::Configure(applied, key)))
}

async fn configure(ch: Channel, key: &str, value: &str) -> Result<(), tonic::Status> {
    cascade_core::auth::control(ch)
        .configure(ConfigureRequest {
            key: key.to_owned(),
            value: value.to_owned(),
        })
        .await
        .map(drop)
}

/// The Control-level fault for a gRPC-kind spec (`to`: outbound to that address).
fn grpc_fault(id: &str, spec: &FaultSpec, to: Option<&str>) -> GrpcFault {
    let mut f = GrpcFault {
        id: id.to_owned(),
        probability: 1.0,
        seed: spec.seed,
        to: to.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let scope = |f: &mut GrpcFault, g: &GrpcScope| {
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
        if let Err(s) = cascade_core::auth::control(ch.clone())
            .clear_fault(ClearFaultRequest { id: id.to_owned() })
            .await
        {
            tracing::warn!(%id, error = %s.message(), "could not clear a fault (process gone?)");
        }
    }
}
