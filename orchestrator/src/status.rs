//! The `cascade status --json` document (design.md's contract; additive
//! changes only) and its human-readable rendering.

use serde::{Deserialize, Serialize};

use crate::state::{Health, MapState};

/// Where a run's processes live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Child processes on loopback.
    #[default]
    Local,
    /// Containers of a docker compose project.
    Docker,
    /// Services of a Docker Swarm stack (`docker stack deploy`).
    Swarm,
}

impl Mode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Docker => "docker",
            Mode::Swarm => "swarm",
        }
    }
}

/// The whole status document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Where the processes live.
    pub mode: Mode,
    /// The per-front-end thread limit and how it is enforced.
    pub thread_limit: ThreadLimit,
    /// One entry per front-end process.
    pub frontends: Vec<FrontendEntry>,
    /// One entry per service (the back end, and the Kinesis fleet as a whole).
    pub services: Vec<ServiceEntry>,
    /// Where logs and state of this run live.
    pub run_dir: String,
    /// Incident seconds per wall second.
    pub time_scale: f64,
    /// Customer calls per second to each service (0: none, so health is
    /// judged from reachability only).
    #[serde(default)]
    pub traffic_rate: f64,
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// Thread-consumption alarms raised so far (remediation `thread-alarm`).
    #[serde(default)]
    pub alarms: Vec<String>,
    /// Restarted front-ends judged unhealthy (shard map not ready within
    /// the restart's grace) and removed, so far.
    #[serde(default)]
    pub restart_removals: u64,
    /// The addresses the run serves besides the control port; an endpoint
    /// the run does not serve is absent, never a dead address.
    #[serde(default)]
    pub endpoints: Endpoints,
}

/// `status --json`'s `endpoints` (design.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    /// The load-balanced AWS-protocol Kinesis endpoint, `http://127.0.0.1:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinesis_aws: Option<String>,
    /// The live page, `http://127.0.0.1:PORT/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// Prometheus metrics, `http://127.0.0.1:PORT/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// Limit and enforcement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadLimit {
    /// Tasks per front-end; null when there is no limit.
    pub limit: Option<u64>,
    /// cgroup-v2 | cgroup-v1 | rlimit-nproc | systemd | docker | swarm | none
    pub enforcement: String,
}

/// One front-end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FrontendEntry {
    /// Instance name, e.g. `kinesis-frontend-3`.
    pub name: String,
    /// OS pid.
    pub pid: u32,
    /// Threads of the process now.
    pub threads: u32,
    /// Fixed non-peer threads.
    pub base_threads: u32,
    /// The kernel limit the process reads for itself (null if none).
    pub thread_limit: Option<u64>,
    /// Learned peers.
    pub peers_known: u32,
    /// Peers in membership.
    pub peers_total: u32,
    /// ready | building | unusable | down
    pub shard_map: MapState,
    /// Peer threads the kernel refused.
    pub spawn_failures: u64,
    /// The errno text of the last refused spawn.
    pub last_spawn_error: String,
    /// Address clients and peers use.
    pub addr: String,
    /// Membership id (peer threads elsewhere are named `peer-<id>`).
    pub id: String,
    /// Peer threads running now.
    pub peer_threads: u32,
    /// Why the map is unusable, or why the process is unreachable.
    pub detail: String,
    /// The cgroup's `pids.events` max count: forks the kernel refused (cgroups only).
    pub cgroup_pids_events_max: Option<u64>,
    /// Membership fleet: "" for the main fleet, "cloudwatch" for the partitioned one.
    #[serde(default)]
    pub fleet: String,
    /// Swarm mode: the host name of the node its task runs on (absent in
    /// the other modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The gauges it reports besides the above (worker slots, requests
    /// served, snapshot fetches).
    #[serde(default)]
    pub info: std::collections::BTreeMap<String, String>,
}

/// One service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Service name.
    pub name: String,
    /// OS pid of its first instance (0 for a fleet).
    pub pid: u32,
    /// serving | degraded | down, from customer traffic (ground truth).
    pub health: Health,
    /// Why.
    pub detail: String,
    /// Address of its first instance.
    #[serde(default)]
    pub addr: String,
    /// Every instance, with the gauges it reports through Control.
    #[serde(default)]
    pub instances: Vec<InstanceEntry>,
    /// Customer traffic over the health window.
    #[serde(default)]
    pub traffic: Option<crate::traffic::Summary>,
}

/// One process of a downstream service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstanceEntry {
    /// Instance name, e.g. `cognito-0`.
    pub name: String,
    /// OS pid.
    pub pid: u32,
    /// Address.
    pub addr: String,
    /// Whether Control.GetStatus answered.
    pub reachable: bool,
    /// The gauges it reports (buffer bytes, mode, counters).
    pub info: std::collections::BTreeMap<String, String>,
}

impl Status {
    /// The main fleet's front-ends (not CloudWatch's partitioned fleet).
    pub fn main_fleet(&self) -> impl Iterator<Item = &FrontendEntry> {
        self.frontends.iter().filter(|f| is_main_fleet(&f.fleet))
    }

    /// Main-fleet front-ends whose shard map is in `state`.
    pub fn count_maps(&self, state: MapState) -> usize {
        self.main_fleet().filter(|f| f.shard_map == state).count()
    }

    /// The service named `name` (`kinesis`, `cognito`, ...).
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.services.iter().find(|s| s.name == name)
    }

    /// A terminal table.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let limit = self
            .thread_limit
            .limit
            .map_or("none".to_owned(), |l| l.to_string());
        let _ = writeln!(
            s,
            "fleet: {} front-ends   thread limit: {limit} per front-end (enforced by {})   time scale: {}x   run: {}",
            self.frontends.len(),
            self.thread_limit.enforcement,
            self.time_scale,
            self.run_dir
        );
        let _ = writeln!(
            s,
            "{:<22} {:>7} {:>13} {:>11} {:<9} {:>6}  DETAIL",
            "FRONT-END", "PID", "THREADS/LIMIT", "PEERS", "SHARD-MAP", "REFUSED"
        );
        for f in &self.frontends {
            let lim = f.thread_limit.map_or("-".to_owned(), |l| l.to_string());
            let _ = writeln!(
                s,
                "{:<22} {:>7} {:>13} {:>11} {:<9} {:>6}  {}",
                f.name,
                f.pid,
                format!("{}/{}", f.threads, lim),
                format!("{}/{}", f.peers_known, f.peers_total),
                f.shard_map,
                f.spawn_failures,
                f.detail
            );
        }
        for svc in &self.services {
            let _ = writeln!(
                s,
                "service {:<18} {:<9} {}",
                svc.name, svc.health, svc.detail
            );
        }
        if self.restart_removals > 0 {
            let _ = writeln!(
                s,
                "restarts: {} front-end(s) judged unhealthy (shard map not ready within the grace) and removed",
                self.restart_removals
            );
        }
        for a in &self.alarms {
            let _ = writeln!(s, "alarm: {a}");
        }
        s
    }
}

/// Whether a front-end's membership fleet is part of the main Kinesis fleet
/// ("" or one of its cells), as opposed to CloudWatch's partitioned fleet.
pub fn is_main_fleet(fleet: &str) -> bool {
    fleet.is_empty() || fleet.starts_with("cell-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_mode_and_node_are_additive() {
        assert_eq!(
            serde_json::to_value(Mode::Swarm).expect("serializes"),
            "swarm"
        );
        let local = serde_json::to_value(FrontendEntry::default()).expect("serializes");
        assert!(local.get("node").is_none(), "no node outside swarm mode");
        let swarm = FrontendEntry {
            node: Some("vm".into()),
            ..Default::default()
        };
        let v = serde_json::to_value(&swarm).expect("serializes");
        assert_eq!(v["node"], "vm");
        // An older document (no node) still reads.
        let back: FrontendEntry =
            serde_json::from_value(local).expect("an entry without node reads");
        assert_eq!(back.node, None);
    }
}
