//! Cascade figures: (1) CPU and memory of the whole topology at rest, as a
//! ratio to a Kinesis-only topology of the same fleet size measured in the
//! same run; (2) after capacity is added, the time from the first ShardMap
//! failure to each service's first impairment (health from customer
//! traffic), in wall seconds and incident minutes.
//!
//! Writes target/bench/cascade_impact.json.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench cascade_impact
//!   cargo bench -p cascade-tests --bench cascade_impact -- --smoke   (4 front-ends, 3600x, 2 s windows)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cascade::state::{Health, MapState};
use cascade::status::Status;
use cascade::topology::Service;
use cascade_tests::Fleet;
use cascade_tests::bench::{self, Machine};
use cascade_tests::status::all_serving;
use clap::Parser;
use serde::Serialize;

/// The whole topology at rest against Kinesis alone, and the time from the
/// first ShardMap failure to each service's impairment.
#[derive(Parser, Debug)]
struct Args {
    /// Small and quick (4 front-ends under 8 tasks, 3 added, 3600x, 2 s
    /// windows, 60 s bound): checks the bench runs and writes its JSON.
    #[arg(long)]
    smoke: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Serialize)]
struct AtRest {
    processes: usize,
    cpu_cores: f64,
    rss_mib: f64,
}

#[derive(Debug, Serialize)]
struct Impairment {
    service: String,
    /// Wall seconds after the first ShardMap failure (None: not impaired
    /// within the bound).
    wall_secs: Option<f64>,
    incident_minutes: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    smoke: bool,
    machine: Machine,
    command: String,
    time_scale: f64,
    baseline_kinesis_only: AtRest,
    whole_topology: AtRest,
    cpu_ratio: f64,
    memory_ratio: f64,
    /// Wall seconds from add-capacity to the first ShardMap failure.
    first_failure_secs: Option<f64>,
    impairments: Vec<Impairment>,
}

/// Every process of the run: front-ends, services and their instances, and
/// the supervisor.
fn pids(s: &Status) -> Vec<u32> {
    let mut v = cascade_tests::status::pids(s);
    v.push(s.supervisor_pid);
    v.sort_unstable();
    v.dedup();
    v
}

/// (cores busy on average, total RSS MiB) over `secs` seconds.
fn at_rest(fleet: &Fleet, secs: u64) -> (f64, f64, usize) {
    let s = fleet.status();
    let p = pids(&s);
    let before: u64 = p.iter().map(|x| bench::cpu_ticks(*x)).sum();
    std::thread::sleep(Duration::from_secs(secs));
    let after: u64 = p.iter().map(|x| bench::cpu_ticks(*x)).sum();
    let hz = bench::ticks_per_sec();
    let cores = (after - before) as f64 / hz / secs as f64;
    let rss: u64 = p.iter().map(|x| cascade_tests::procs::rss_kib(*x)).sum();
    (cores, rss as f64 / 1024.0, p.len())
}

fn main() {
    let a = Args::parse();
    let machine = Machine::probe();
    let (frontends, limit, scale, add, rest, bound) = if a.smoke {
        ("4", "8", 3600.0, "3", 2, 60)
    } else {
        ("8", "16", 360.0, "6", 10, 180)
    };
    let time_scale: f64 = scale;
    let scale_arg = time_scale.to_string();
    let common = [
        "--frontends",
        frontends,
        "--thread-limit",
        limit,
        "--time-scale",
        &scale_arg,
    ];
    let base = Fleet::up(
        "impact-base",
        &[&["--services", "kinesis"][..], &common[..]].concat(),
    );
    base.wait_status("kinesis serving", Duration::from_secs(60), all_serving);
    let (b_cpu, b_rss, b_n) = at_rest(&base, rest);
    bench::take_down(base);

    let fleet = Fleet::up("impact", &common);
    fleet.wait_status(
        "every service serving",
        Duration::from_secs(60),
        all_serving,
    );
    let (cpu, rss, n) = at_rest(&fleet, rest);
    println!(
        "baseline: Kinesis only ({b_n} processes): {b_cpu:.3} cores, {b_rss:.0} MiB RSS at rest"
    );
    println!(
        "at rest:  whole topology ({n} processes): {cpu:.3} cores, {rss:.0} MiB RSS ({:.2}x CPU, {:.2}x memory of Kinesis only)",
        cpu / b_cpu.max(1e-9),
        rss / b_rss.max(1e-9)
    );

    fleet.ok(&["add-capacity", add]);
    let added = Instant::now();
    let mut first_failure: Option<Instant> = None;
    let mut impaired: BTreeMap<String, Instant> = BTreeMap::new();
    let services = Service::ALL.map(Service::name);
    while impaired.len() < services.len() && added.elapsed() < Duration::from_secs(bound) {
        let s = fleet.status();
        let now = Instant::now();
        if first_failure.is_none()
            && s.frontends
                .iter()
                .any(|f| f.shard_map == MapState::Unusable)
        {
            first_failure = Some(now);
        }
        for svc in &s.services {
            if services.contains(&svc.name.as_str()) && svc.health != Health::Serving {
                impaired.entry(svc.name.clone()).or_insert(now);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut report = Report {
        bench: "cascade_impact",
        smoke: a.smoke,
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        time_scale,
        baseline_kinesis_only: AtRest {
            processes: b_n,
            cpu_cores: b_cpu,
            rss_mib: b_rss,
        },
        whole_topology: AtRest {
            processes: n,
            cpu_cores: cpu,
            rss_mib: rss,
        },
        cpu_ratio: cpu / b_cpu.max(1e-9),
        memory_ratio: rss / b_rss.max(1e-9),
        first_failure_secs: first_failure.map(|t| (t - added).as_secs_f64()),
        impairments: Vec::new(),
    };
    let Some(t0) = first_failure else {
        println!("cascade_impact: no ShardMap failed within {bound} s");
        bench::write_json("cascade_impact", &report);
        bench::take_down(fleet);
        return;
    };
    println!(
        "first ShardMap failure {:.1} s after add-capacity ({:.0} incident min)",
        (t0 - added).as_secs_f64(),
        (t0 - added).as_secs_f64() * time_scale / 60.0
    );
    let mut order: Vec<(&String, &Instant)> = impaired.iter().collect();
    order.sort_by_key(|(_, t)| **t);
    for (svc, t) in order {
        let d = t.saturating_duration_since(t0).as_secs_f64();
        println!(
            "cascade_impact: {svc:<12} impaired {d:>5.1} s after the first ShardMap failure ({:>5.0} incident min)",
            d * time_scale / 60.0
        );
        report.impairments.push(Impairment {
            service: svc.clone(),
            wall_secs: Some(d),
            incident_minutes: Some(d * time_scale / 60.0),
        });
    }
    for svc in services {
        if !impaired.contains_key(svc) {
            println!("cascade_impact: {svc:<12} not impaired within {bound} s");
            report.impairments.push(Impairment {
                service: svc.to_owned(),
                wall_secs: None,
                incident_minutes: None,
            });
        }
    }
    bench::write_json("cascade_impact", &report);
    bench::take_down(fleet);
}
