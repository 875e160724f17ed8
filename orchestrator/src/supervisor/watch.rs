//! Observation, out of band: the roster of every process the run has, what
//! the last watch saw of each (`Control.GetStatus`), both behind one lock,
//! and the `status --json` document built from them and from customer
//! traffic (each service's health is judged from its customers' calls).

use std::collections::HashMap;
use std::time::Duration;

use cascade_core::threadlimit::InstanceCgroup;
use cascade_proto::control::GetStatusRequest;
use cascade_proto::control::control_client::ControlClient;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::Supervisor;
use super::fleet::{Fleet, Instance};
use crate::state::{Health, MapState};
use crate::status::{self, FrontendEntry, InstanceEntry, Mode, ServiceEntry, Status, ThreadLimit};
use crate::topology::Service;
use crate::traffic;

/// Customer-traffic window that decides a service's health.
pub const HEALTH_WINDOW_SECS: i64 = 5;
/// Fewest customer calls in a window that health is judged from.
pub const MIN_CALLS: u64 = 10;
/// Fewest calls a p99 is a real percentile over (below, the nearest rank
/// is the slowest call, so latency is not judged).
pub const P99_MIN_CALLS: u64 = 100;

/// A process's part in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The Kinesis back end.
    Backend,
    /// A Kinesis front-end (main fleet, a cell, or CloudWatch's fleet).
    Frontend,
    /// A downstream service instance.
    Service,
}

/// What the watcher (and fault injection) needs to reach one process.
#[derive(Clone)]
pub(super) struct RosterEntry {
    /// Instance name.
    pub name: String,
    /// Membership id (front-ends only).
    pub id: String,
    /// Its part in the run.
    pub role: Role,
    /// The service it belongs to.
    pub service: Service,
    /// Membership fleet of a front-end.
    pub fleet: String,
    /// OS pid (host pid in docker mode).
    pub pid: u32,
    /// Its gRPC address.
    pub addr: String,
    /// A lazy channel to it.
    pub channel: Channel,
    /// Its thread-limit cgroup, when it has one.
    pub cgroup: Option<InstanceCgroup>,
    /// Swarm mode: the node its task runs on.
    pub node: Option<String>,
}

impl RosterEntry {
    fn of(i: &Instance, role: Role) -> Option<Self> {
        Some(Self {
            name: i.name.clone(),
            id: i.id.clone(),
            role,
            service: i.service,
            fleet: i.fleet.clone(),
            pid: i.child.pid(),
            addr: i.addr.clone(),
            channel: cascade_core::clients::lazy_channel(&i.addr, Duration::from_secs(1)).ok()?,
            cgroup: i.cgroup().cloned(),
            node: i.child.node(),
        })
    }
}

/// A downstream instance as last seen: reachable, and its Control gauges.
#[derive(Debug, Clone, Default)]
struct ServiceSeen {
    reachable: bool,
    info: HashMap<String, String>,
}

/// The roster and what the last watch saw of it, kept together so they
/// can never disagree.
pub(super) struct Observed {
    /// Every process of the run, in start order.
    roster: Vec<RosterEntry>,
    /// Front-end name -> what it last reported.
    frontends: HashMap<String, FrontendEntry>,
    /// Downstream instance name -> what it last reported.
    services: HashMap<String, ServiceSeen>,
    /// The back end's health and why.
    backend: (Health, String),
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            roster: Vec::new(),
            frontends: HashMap::new(),
            services: HashMap::new(),
            backend: (Health::Down, "starting".into()),
        }
    }
}

impl Supervisor {
    /// Makes the roster match the fleet (after any lifecycle change).
    pub(super) fn publish_roster(&self, fleet: &Fleet) {
        let roster = fleet
            .backend
            .iter()
            .filter_map(|i| RosterEntry::of(i, Role::Backend))
            .chain(
                fleet
                    .all_frontends()
                    .filter_map(|i| RosterEntry::of(i, Role::Frontend)),
            )
            .chain(
                fleet
                    .services
                    .iter()
                    .filter_map(|i| RosterEntry::of(i, Role::Service)),
            )
            .collect();
        self.observed.lock().roster = roster;
    }

    /// Every process the run has now.
    pub(super) fn roster(&self) -> Vec<RosterEntry> {
        self.observed.lock().roster.clone()
    }

    /// What the last watch saw of each front-end.
    pub(super) fn observed_frontends(&self) -> Vec<FrontendEntry> {
        self.observed.lock().frontends.values().cloned().collect()
    }

    /// Polls every process's `Control.GetStatus` once, all at the same time.
    pub(super) async fn watch_once(&self) {
        let roster = self.roster();
        let mut frontends = JoinSet::new();
        let mut services = JoinSet::new();
        let mut backend = None;
        for r in roster {
            match r.role {
                Role::Frontend => {
                    frontends.spawn(observe_frontend(r));
                }
                Role::Service => {
                    services.spawn(observe_service(r));
                }
                Role::Backend => backend = Some(r),
            }
        }
        let backend = match backend {
            Some(b) => match ControlClient::new(b.channel)
                .get_status(GetStatusRequest {})
                .await
            {
                Ok(_) => (Health::Serving, String::new()),
                Err(e) => (Health::Down, format!("unreachable: {}", e.message())),
            },
            None => (Health::Down, "not started".to_owned()),
        };
        let mut fe = HashMap::new();
        while let Some(r) = frontends.join_next().await {
            if let Ok(e) = r {
                fe.insert(e.name.clone(), e);
            }
        }
        let mut svc = HashMap::new();
        while let Some(r) = services.join_next().await {
            if let Ok((name, seen)) = r {
                svc.insert(name, seen);
            }
        }
        let mut o = self.observed.lock();
        o.frontends = fe;
        o.services = svc;
        o.backend = backend;
    }

    /// The `status --json` document from the latest watch.
    pub fn status(&self) -> Status {
        let o = self.observed.lock();
        let frontends: Vec<FrontendEntry> = o
            .roster
            .iter()
            .filter(|r| r.role == Role::Frontend)
            .map(|r| {
                o.frontends
                    .get(&r.name)
                    .cloned()
                    .unwrap_or_else(|| FrontendEntry {
                        name: r.name.clone(),
                        pid: r.pid,
                        addr: r.addr.clone(),
                        id: r.id.clone(),
                        fleet: r.fleet.clone(),
                        node: r.node.clone(),
                        shard_map: MapState::Building,
                        detail: "not yet observed".into(),
                        ..Default::default()
                    })
            })
            .collect();
        let (backend_pid, backend_addr) = o
            .roster
            .iter()
            .find(|r| r.role == Role::Backend)
            .map_or((0, String::new()), |b| (b.pid, b.addr.clone()));
        let mut services = vec![ServiceEntry {
            name: "kinesis-backend".into(),
            pid: backend_pid,
            addr: backend_addr,
            health: o.backend.0,
            detail: o.backend.1.clone(),
            ..Default::default()
        }];
        services.push(self.kinesis_entry(&frontends));
        for svc in self.args.topology.set() {
            if svc != Service::Kinesis {
                services.push(self.service_entry(&o, svc));
            }
        }
        drop(o);
        Status {
            mode: match &self.docker {
                Some(d) if d.is_swarm() => Mode::Swarm,
                Some(_) => Mode::Docker,
                None => Mode::Local,
            },
            thread_limit: ThreadLimit {
                limit: self.plan.limit,
                enforcement: self.plan.enforcement.as_str().into(),
            },
            frontends,
            services,
            run_dir: self.run_dir.display().to_string(),
            time_scale: self.args.time_scale,
            traffic_rate: self.args.topology.traffic_rate,
            supervisor_pid: std::process::id(),
            alarms: self.alarm.raised(),
            endpoints: {
                let (dashboard, metrics) = self.dashboard.endpoints();
                crate::status::Endpoints {
                    kinesis_aws: self.kinesis_aws.lock().clone(),
                    dashboard,
                    metrics,
                }
            },
            restart_removals: self
                .restart_removals
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The latency budget of one customer call to `svc`, in ms.
    fn budget_ms(&self, svc: Service) -> f64 {
        traffic::latency_budget(svc, self.args.topology.traffic_deadline).as_secs_f64() * 1000.0
    }

    /// Kinesis as customers see it; without calls to judge by, only failed
    /// maps count (a front-end still building its first map is not an
    /// impairment).
    fn kinesis_entry(&self, frontends: &[FrontendEntry]) -> ServiceEntry {
        let main: Vec<&FrontendEntry> = frontends
            .iter()
            .filter(|f| status::is_main_fleet(&f.fleet))
            .collect();
        let ready = main
            .iter()
            .filter(|f| f.shard_map == MapState::Ready)
            .count();
        let maps = format!("{ready}/{} shard-maps ready", main.len());
        let failed = main.iter().filter(|f| f.shard_map.is_failed()).count();
        let traffic = self.recorder.window(Service::Kinesis, HEALTH_WINDOW_SECS);
        let (health, detail) = match judge(&traffic, self.budget_ms(Service::Kinesis)) {
            Some((h, d)) => (h, format!("{d}; {maps}")),
            None if main.is_empty() => (Health::Down, "no front-ends".to_owned()),
            None if failed == 0 => (Health::Serving, maps),
            None if failed == main.len() => (Health::Down, maps),
            None => (Health::Degraded, maps),
        };
        ServiceEntry {
            name: "kinesis".into(),
            health,
            detail,
            traffic: Some(traffic),
            ..Default::default()
        }
    }

    fn service_entry(&self, o: &Observed, svc: Service) -> ServiceEntry {
        let instances: Vec<InstanceEntry> = o
            .roster
            .iter()
            .filter(|r| r.role == Role::Service && r.service == svc)
            .map(|r| {
                let seen = o.services.get(&r.name).cloned().unwrap_or_default();
                InstanceEntry {
                    name: r.name.clone(),
                    pid: r.pid,
                    addr: r.addr.clone(),
                    reachable: seen.reachable,
                    info: seen.info.into_iter().collect(),
                }
            })
            .collect();
        let up = instances.iter().filter(|i| i.reachable).count();
        let traffic = self.recorder.window(svc, HEALTH_WINDOW_SECS);
        let (health, detail) = match judge(&traffic, self.budget_ms(svc)) {
            Some(hd) => hd,
            None if instances.is_empty() => (Health::Down, "not started".to_owned()),
            None if up == instances.len() => {
                (Health::Serving, "no customer traffic yet".to_owned())
            }
            None => (
                Health::Down,
                format!("{up}/{} instances reachable", instances.len()),
            ),
        };
        ServiceEntry {
            name: svc.name().into(),
            pid: instances.first().map_or(0, |i| i.pid),
            addr: instances
                .first()
                .map(|i| i.addr.clone())
                .unwrap_or_default(),
            health,
            detail,
            instances,
            traffic: Some(traffic),
        }
    }
}

/// One front-end's `Control.GetStatus`, as its status entry.
async fn observe_frontend(r: RosterEntry) -> FrontendEntry {
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
        node: r.node.clone(),
        ..Default::default()
    };
    match resp {
        Ok(s) => {
            let s = s.into_inner();
            e.threads = s.threads;
            e.info = s.info.into_iter().collect();
            if let Some(f) = s.frontend {
                e.base_threads = f.base_threads;
                e.thread_limit = (f.thread_limit > 0).then_some(f.thread_limit);
                e.peers_known = f.peers_known;
                e.peers_total = f.peers_total;
                e.shard_map = MapState::from_wire(&f.shard_map);
                e.spawn_failures = f.spawn_failures;
                e.last_spawn_error = f.last_spawn_error;
                e.peer_threads = f.peer_threads;
                e.detail = f.shard_map_detail;
            }
        }
        Err(err) => {
            e.shard_map = MapState::Down;
            e.detail = format!("unreachable: {}", err.message());
        }
    }
    e
}

/// One downstream instance's `Control.GetStatus`.
async fn observe_service(r: RosterEntry) -> (String, ServiceSeen) {
    let resp = ControlClient::new(r.channel)
        .get_status(GetStatusRequest {})
        .await;
    let seen = match resp {
        Ok(s) => ServiceSeen {
            reachable: true,
            info: s.into_inner().info,
        },
        Err(e) => ServiceSeen {
            reachable: false,
            info: HashMap::from([("error".to_owned(), e.message().to_owned())]),
        },
    };
    (r.name, seen)
}

/// Health from customer traffic: serving when at least 95% of calls
/// succeeded and (over enough calls for a real p99) p99 is within the
/// deadline; degraded from 50%; down below. `None` with fewer than
/// [`MIN_CALLS`] calls in the window: too few to judge.
pub fn judge(t: &traffic::Summary, deadline_ms: f64) -> Option<(Health, String)> {
    let total = t.ok + t.failed;
    if total < MIN_CALLS {
        return None;
    }
    let ratio = t.ok as f64 / total as f64;
    let slow = total >= P99_MIN_CALLS && t.p99_ms > deadline_ms;
    let health = if ratio >= 0.95 && !slow {
        Health::Serving
    } else if ratio >= 0.5 {
        Health::Degraded
    } else {
        Health::Down
    };
    let p99 = if total >= P99_MIN_CALLS {
        format!("p99 {:.0} ms", t.p99_ms)
    } else {
        format!("p99 not judged (fewer than {P99_MIN_CALLS} calls)")
    };
    let mut detail = format!(
        "{:.0}% of {total} customer calls ok, {p99} (last {HEALTH_WINDOW_SECS} s)",
        ratio * 100.0
    );
    if !t.errors.is_empty() {
        let errs: Vec<String> = t.errors.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        detail.push_str(&format!("; {}", errs.join(", ")));
    }
    Some((health, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(ok: u64, failed: u64, p99_ms: f64) -> traffic::Summary {
        traffic::Summary {
            ok,
            failed,
            p99_ms,
            ..Default::default()
        }
    }

    #[test]
    fn health_follows_the_share_of_calls_that_succeeded() {
        let h = |ok, failed| judge(&summary(ok, failed, 30.0), 1000.0).map(|x| x.0);
        assert_eq!(h(120, 0), Some(Health::Serving));
        assert_eq!(h(72, 48), Some(Health::Degraded));
        assert_eq!(h(12, 108), Some(Health::Down));
    }

    #[test]
    fn too_few_calls_are_not_judged() {
        assert_eq!(judge(&summary(0, 0, 0.0), 1000.0), None);
        assert_eq!(judge(&summary(3, 6, 30.0), 1000.0), None, "9 calls");
        assert!(judge(&summary(3, 7, 30.0), 1000.0).is_some(), "10 calls");
    }

    #[test]
    fn p99_is_judged_only_over_enough_calls() {
        let few = judge(&summary(25, 0, 1500.0), 1000.0).expect("judged");
        assert_eq!(
            few.0,
            Health::Serving,
            "25 calls: p99 would be the slowest call"
        );
        assert!(few.1.contains("p99 not judged"), "{}", few.1);
        let many = judge(&summary(120, 0, 1500.0), 1000.0).expect("judged");
        assert_eq!(many.0, Health::Degraded, "{}", many.1);
    }
}
