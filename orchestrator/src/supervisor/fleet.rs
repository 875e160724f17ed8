//! The fleet's lifecycle: starting the back end, the front-ends (each under
//! its own kernel thread limit) and the downstream services stage by stage,
//! adding and removing front-ends, restarting processes in place, and
//! taking everything down.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cascade_core::threadlimit::InstanceCgroup;
use tokio::task::JoinSet;

use super::Supervisor;
use super::args::check_budget;
use super::readiness::wait_all_ready;
use crate::launcher::{self, ChildLimit, ChildSpec, RunningChild};
use crate::limits::ThreadLimitArg;
use crate::topology::{self, Service};
use crate::traffic::{self, Caller};

/// One supervised process.
pub(super) struct Instance {
    /// Instance name (log file, status, fault targets).
    pub name: String,
    /// Membership id of a front-end (`fe-3`); empty for other processes.
    pub id: String,
    /// The service this process is part of (Kinesis for front-ends and back end).
    pub service: Service,
    /// Membership fleet of a front-end ("" main, "cell-N", "cloudwatch").
    pub fleet: String,
    /// Its gRPC address.
    pub addr: String,
    /// Bound here and kept across restarts, so the address never changes
    /// (docker mode: none, the container binds its own).
    pub listener: Option<TcpListener>,
    /// The running process (or container).
    pub child: RunningChild,
    /// How it was started (restarts reuse it: same flags, same limit).
    pub spec: ChildSpec,
}

impl Instance {
    /// Its thread-limit cgroup, under cgroup enforcement.
    pub fn cgroup(&self) -> Option<&InstanceCgroup> {
        match &self.spec.limit {
            ChildLimit::Cgroup(cg) => Some(cg),
            _ => None,
        }
    }

    /// Stops it and removes its cgroup.
    pub async fn stop_and_remove(mut self) {
        self.child.stop().await;
        if let Some(cg) = self.cgroup()
            && let Err(e) = cg.remove()
        {
            tracing::warn!(instance = %self.name, error = %format!("{e:#}"), "could not remove its cgroup");
        }
    }
}

/// Every process of a run.
#[derive(Default)]
pub(super) struct Fleet {
    /// The Kinesis back end.
    pub backend: Option<Instance>,
    /// The main front-end fleet (capacity changes and restarts act on it).
    pub frontends: Vec<Instance>,
    /// CloudWatch's partitioned front-end fleet (remediation), if any.
    pub cw_frontends: Vec<Instance>,
    /// Downstream services (Cognito, CloudWatch, ...), in start order.
    pub services: Vec<Instance>,
    /// Index of the next main-fleet front-end (names are never reused).
    pub next_index: u32,
}

impl Fleet {
    /// Every front-end, main fleet first.
    pub fn all_frontends(&self) -> impl Iterator<Item = &Instance> {
        self.frontends.iter().chain(&self.cw_frontends)
    }

    /// Every process, mutably.
    pub fn all_mut(&mut self) -> impl Iterator<Item = &mut Instance> {
        self.backend
            .iter_mut()
            .chain(self.frontends.iter_mut())
            .chain(self.cw_frontends.iter_mut())
            .chain(self.services.iter_mut())
    }

    fn backend_addr(&self) -> anyhow::Result<String> {
        Ok(self
            .backend
            .as_ref()
            .context("the back end is not running")?
            .addr
            .clone())
    }
}

impl Supervisor {
    fn frontend_args(&self, id: &str, backend: &str, fleet: &str) -> Vec<String> {
        let a = &self.args;
        vec![
            format!("--id={id}"),
            format!("--backend={backend}"),
            format!("--time-scale={}", a.time_scale),
            format!("--seed={}", a.seed),
            format!("--learning-jitter={}", a.learning_jitter),
            format!("--bootstrap={}", a.bootstrap.as_str()),
            format!("--workers={}", a.workers),
            format!("--fleet={fleet}"),
            format!(
                "--request-cost={}",
                humantime::format_duration(a.request_cost)
            ),
            format!("--worker-slots={}", a.worker_slots),
        ]
    }

    fn logs(&self) -> std::path::PathBuf {
        self.run_dir.join("logs")
    }

    fn thread_limit_arg(&self) -> ThreadLimitArg {
        self.plan
            .limit
            .map_or(ThreadLimitArg::None, ThreadLimitArg::Limit)
    }

    /// Starts (or adopts, in docker mode) the Kinesis back end.
    pub(super) async fn start_backend(&self, fleet: &mut Fleet) -> anyhow::Result<()> {
        let spec = ChildSpec {
            name: "kinesis-backend".into(),
            program: launcher::binary("kinesis-backend")?,
            args: vec![],
            limit: ChildLimit::None,
            token: Some(self.token.clone()),
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
        self.publish_roster(fleet);
        Ok(())
    }

    /// Starts `n` new front-ends of the main fleet and waits until every one is SERVING.
    pub(super) async fn add_frontends(
        &self,
        fleet: &mut Fleet,
        n: u32,
    ) -> anyhow::Result<Vec<String>> {
        let total = fleet.all_frontends().count() as u32 + n;
        let hosts = match &self.docker {
            Some(d) => d.budget_hosts().await,
            None => 1,
        };
        check_budget(total, self.thread_limit_arg(), self.args.workers, hosts)?;
        let backend = fleet.backend_addr()?;
        let existing = fleet.frontends.len();
        let started = self
            .spawn_frontends(n, &backend, "", &mut fleet.next_index, existing)
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
            match self
                .spawn_frontend(index, backend, fleet_name, &membership)
                .await
            {
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
                inst.child.kill().await;
                if let Some(cg) = inst.cgroup() {
                    let _ = cg.remove();
                }
            }
            return Err(e);
        }
        Ok(started)
    }

    /// Starts one front-end: a child process under its limit, or (docker
    /// mode) a new container under its `pids_limit`.
    async fn spawn_frontend(
        &self,
        index: u32,
        backend: &str,
        fleet_name: &str,
        membership: &str,
    ) -> anyhow::Result<Instance> {
        let (name, id) = if fleet_name.is_empty() {
            (format!("kinesis-frontend-{index}"), format!("fe-{index}"))
        } else {
            (
                format!("kinesis-frontend-{fleet_name}-{index}"),
                format!("{fleet_name}-{index}"),
            )
        };
        let mut spec = ChildSpec {
            name: name.clone(),
            program: launcher::binary("kinesis-frontend")?,
            args: self.frontend_args(&id, backend, membership),
            limit: ChildLimit::None,
            token: Some(self.token.clone()),
        };
        let (addr, listener, child) = match &self.docker {
            Some(d) => {
                let (addr, c) = d.frontend(&name, index, spec.args.clone()).await?;
                (addr, None, RunningChild::container(c))
            }
            None => {
                let listener = launcher::bind_loopback()?;
                let addr = listener.local_addr()?.to_string();
                spec.limit = self.plan.child_limit(&name, index)?;
                let child = launcher::spawn(&spec, &listener, &self.logs())?;
                (addr, Some(listener), child)
            }
        };
        Ok(Instance {
            name,
            id,
            service: Service::Kinesis,
            fleet: membership.to_owned(),
            addr,
            listener,
            child,
            spec,
        })
    }

    /// Starts CloudWatch's partitioned fleet (when asked for), then the
    /// downstream services stage by stage (each stage SERVING before the
    /// next), then the customer traffic against them.
    pub(super) async fn start_services(&self, fleet: &mut Fleet) -> anyhow::Result<()> {
        let t = &self.args.topology;
        let backend = fleet.backend_addr()?;
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
        let mut addrs = topology::Addresses {
            backend: backend.clone(),
            instances: Default::default(),
            run_dir: self.run_dir.clone(),
            time_scale: self.args.time_scale,
        };
        let mut listeners = HashMap::new();
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
            self.start_stage(fleet, stage, &addrs, &mut listeners)
                .await?;
        }
        self.start_traffic(fleet, backend).await
    }

    /// Starts one stage of downstream services and waits until all serve.
    async fn start_stage(
        &self,
        fleet: &mut Fleet,
        stage: &[topology::Planned],
        addrs: &topology::Addresses,
        listeners: &mut HashMap<String, TcpListener>,
    ) -> anyhow::Result<()> {
        let mut started = Vec::new();
        for p in stage {
            let spec = ChildSpec {
                name: p.name.clone(),
                program: launcher::binary(p.service.name())?,
                args: topology::args_for(p, &self.args.topology, addrs),
                limit: ChildLimit::None,
                token: Some(self.token.clone()),
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
        let names: Vec<&str> = stage.iter().map(|p| p.name.as_str()).collect();
        println!("cascade: {} up", names.join(", "));
        Ok(())
    }

    /// Steady customer calls against every service of the topology.
    async fn start_traffic(&self, fleet: &Fleet, backend: String) -> anyhow::Result<()> {
        let t = &self.args.topology;
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
        caller.create_customer_stream(&self.shutdown).await?;
        traffic::spawn(
            caller,
            self.recorder.clone(),
            t.set().into_iter().collect(),
            t.traffic_rate,
            self.shutdown.clone(),
        );
        Ok(())
    }

    /// Stops the `n` newest front-ends of the main fleet.
    pub(super) async fn remove_frontends(
        &self,
        fleet: &mut Fleet,
        n: u32,
    ) -> anyhow::Result<Vec<String>> {
        let size = fleet.frontends.len() as u32;
        if n == 0 || n >= size {
            bail!(
                "count: cannot remove {n} of {size} front-ends; remove 1 to {}",
                size.saturating_sub(1)
            );
        }
        let gone: Vec<Instance> = fleet.frontends.split_off((size - n) as usize);
        self.publish_roster(fleet);
        let mut names = Vec::new();
        for inst in gone {
            names.push(inst.name.clone());
            inst.stop_and_remove().await;
        }
        Ok(names)
    }

    /// Restarts a batch of front-ends together, in place: every process of
    /// the batch is stopped first (SIGKILL: a restart does not leave the
    /// fleet, membership is by host, so peers keep the member), then all are
    /// started at once with the same id, address and limit, and each
    /// populates its shard map at the same time as the others.
    pub(super) async fn restart_batch(
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
            inst.child.kill().await;
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
    pub(super) async fn respawn(&self, inst: &mut Instance) -> anyhow::Result<()> {
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

    /// Stops every process and removes what the run created.
    pub(super) async fn teardown(&self) {
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
                self.publish_roster(&fleet);
            }
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
            set.spawn(async move { inst.child.stop().await });
        }
        while set.join_next().await.is_some() {}
        if let Some(mut b) = fleet.backend.take() {
            b.child.stop().await;
        }
        self.publish_roster(&fleet);
        self.plan.cleanup();
    }
}
