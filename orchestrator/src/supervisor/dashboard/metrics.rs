//! `/metrics`: the run in Prometheus (OpenMetrics) text exposition, encoded
//! by `prometheus-client`. Gauges are built per scrape from the same typed
//! `Status` that `status --json` prints, so the two agree; the cumulative
//! call counters and the latency histogram are the traffic recorder's own
//! (`traffic::Recorder::metrics`), counted as each customer call ends.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use cascade_proto::supervisor as sv;

use crate::state::{Health, MapState};
use crate::status::Status;
use crate::traffic::Recorder;

type G = Gauge<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Frontend {
    frontend: String,
    fleet: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontendState {
    frontend: String,
    fleet: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Svc {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SvcState {
    service: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SvcCode {
    service: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Enforcement {
    enforcement: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabel {
    id: String,
    summary: String,
}

/// A family of gauges, registered under `name`.
fn gauges<L>(r: &mut Registry, name: &str, help: &str) -> Family<L, G>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, G>::default();
    r.register(name, help, f.clone());
    f
}

/// A family of counters, registered under `name` (exposed as `name_total`).
fn counters<L>(r: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    r.register(name, help, f.clone());
    f
}

const MAPS: [MapState; 4] = [
    MapState::Ready,
    MapState::Building,
    MapState::Unusable,
    MapState::Down,
];
const HEALTHS: [Health; 3] = [Health::Serving, Health::Degraded, Health::Down];

/// The exposition of `st`, the faults in force and the recorder's counters.
pub fn render(
    st: &Status,
    faults: &[sv::ActiveFault],
    recorder: &Recorder,
    scenario: Option<&super::frame::ScenarioView>,
) -> String {
    let mut r = Registry::with_prefix("cascade");

    let limit = gauges::<Enforcement>(
        &mut r,
        "thread_limit",
        "Threads (kernel tasks) each front-end may hold, by enforcement; absent without a limit",
    );
    if let Some(l) = st.thread_limit.limit {
        limit
            .get_or_create(&Enforcement {
                enforcement: st.thread_limit.enforcement.clone(),
            })
            .set(l as f64);
    }
    let maps = gauges::<MapLabel>(
        &mut r,
        "shard_maps",
        "Main-fleet front-ends whose shard map is in this state",
    );
    for m in MAPS {
        maps.get_or_create(&MapLabel {
            state: m.as_str().into(),
        })
        .set(st.count_maps(m) as f64);
    }

    let threads = gauges::<Frontend>(
        &mut r,
        "frontend_threads",
        "Threads of the front-end process now",
    );
    let base = gauges::<Frontend>(&mut r, "frontend_base_threads", "Fixed non-peer threads");
    let fe_limit = gauges::<Frontend>(
        &mut r,
        "frontend_thread_limit",
        "The kernel limit the front-end reads for itself",
    );
    let known = gauges::<Frontend>(
        &mut r,
        "frontend_peers_known",
        "Peers the front-end learned",
    );
    let total = gauges::<Frontend>(&mut r, "frontend_peers_total", "Peers in membership");
    let peer_threads =
        gauges::<Frontend>(&mut r, "frontend_peer_threads", "Peer threads running now");
    let map = gauges::<FrontendState>(
        &mut r,
        "frontend_shard_map",
        "1 for the front-end's shard-map state, 0 for the others",
    );
    let refused = counters::<Frontend>(
        &mut r,
        "frontend_spawn_failures",
        "Peer threads the kernel refused (EAGAIN)",
    );
    let pids_max = counters::<Frontend>(
        &mut r,
        "frontend_cgroup_pids_events_max",
        "The front-end cgroup's pids.events max: forks the kernel refused",
    );
    for f in &st.frontends {
        let l = Frontend {
            frontend: f.name.clone(),
            fleet: f.fleet.clone(),
        };
        threads.get_or_create(&l).set(f64::from(f.threads));
        base.get_or_create(&l).set(f64::from(f.base_threads));
        if let Some(tl) = f.thread_limit {
            fe_limit.get_or_create(&l).set(tl as f64);
        }
        known.get_or_create(&l).set(f64::from(f.peers_known));
        total.get_or_create(&l).set(f64::from(f.peers_total));
        peer_threads
            .get_or_create(&l)
            .set(f64::from(f.peer_threads));
        for m in MAPS {
            map.get_or_create(&FrontendState {
                frontend: f.name.clone(),
                fleet: f.fleet.clone(),
                state: m.as_str().into(),
            })
            .set(if f.shard_map == m { 1.0 } else { 0.0 });
        }
        refused.get_or_create(&l).inc_by(f.spawn_failures);
        if let Some(n) = f.cgroup_pids_events_max {
            pids_max.get_or_create(&l).inc_by(n);
        }
    }

    let health = gauges::<SvcState>(
        &mut r,
        "service_health",
        "1 for the service's health (from customer traffic), 0 for the others",
    );
    let window_ok = gauges::<Svc>(
        &mut r,
        "service_window_calls_ok",
        "Customer calls that succeeded in the health window (status --json traffic.ok)",
    );
    let window_failed = gauges::<SvcCode>(
        &mut r,
        "service_window_calls_failed",
        "Customer calls that failed in the health window, by gRPC code",
    );
    let window_p99 = gauges::<Svc>(
        &mut r,
        "service_window_p99_seconds",
        "p99 latency of customer calls in the health window",
    );
    for s in &st.services {
        for h in HEALTHS {
            health
                .get_or_create(&SvcState {
                    service: s.name.clone(),
                    state: h.as_str().into(),
                })
                .set(if s.health == h { 1.0 } else { 0.0 });
        }
        if let Some(t) = &s.traffic {
            let svc = Svc {
                service: s.name.clone(),
            };
            window_ok.get_or_create(&svc).set(t.ok as f64);
            window_p99.get_or_create(&svc).set(t.p99_ms / 1000.0);
            for (code, n) in &t.errors {
                window_failed
                    .get_or_create(&SvcCode {
                        service: s.name.clone(),
                        code: code.clone(),
                    })
                    .set(*n as f64);
            }
        }
    }
    recorder.register_metrics(&mut r);

    let active = G::default();
    r.register("faults_active", "Faults in force", active.clone());
    active.set(faults.len() as f64);
    let fault = gauges::<FaultLabel>(
        &mut r,
        "fault_expires_seconds",
        "Each fault in force: unix time it ends (0: until cleared)",
    );
    for f in faults {
        fault
            .get_or_create(&FaultLabel {
                id: f.id.clone(),
                summary: f.summary.clone(),
            })
            .set(f.expires_ms as f64 / 1000.0);
    }
    let alarms = G::default();
    r.register(
        "alarms_raised",
        "Thread-consumption alarms raised",
        alarms.clone(),
    );
    alarms.set(st.alarms.len() as f64);

    if let Some(sc) = scenario {
        let steps = G::default();
        r.register(
            "scenario_steps_run",
            "Steps of the playing scenario run so far",
            steps.clone(),
        );
        steps.set(sc.steps as f64);
        let judged = gauges::<Outcome>(
            &mut r,
            "scenario_expectations",
            "Expectations of the playing scenario judged so far, by result",
        );
        for (result, n) in [("held", sc.held), ("failed", sc.failed)] {
            judged
                .get_or_create(&Outcome {
                    result: result.into(),
                })
                .set(n as f64);
        }
        let clock = G::default();
        r.register(
            "scenario_incident_clock_seconds",
            "The playing scenario's incident clock at its journal's last entry",
            clock.clone(),
        );
        clock.set(crate::clock::parse_clock(&sc.clock).unwrap_or(0.0));
    }

    let mut out = String::new();
    if let Err(e) = encode(&mut out, &r) {
        tracing::warn!(error = %e, "could not encode /metrics");
    }
    out
}
