//! Cascade figures: (1) CPU and memory of the whole topology at rest, as a
//! ratio to a Kinesis-only topology of the same fleet size measured in the
//! same run; (2) after capacity is added, the time from the first ShardMap
//! failure to each service's first impairment (health from customer
//! traffic), in wall seconds and incident minutes.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench cascade_impact

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cascade::state::{Health, MapState};
use cascade::status::Status;
use cascade::topology::Service;
use cascade_tests::Fleet;
use cascade_tests::status::all_serving;

const TIME_SCALE: f64 = 360.0;

/// Every process of the run: front-ends, services and their instances, and
/// the supervisor.
fn pids(s: &Status) -> Vec<u32> {
    let mut v = cascade_tests::status::pids(s);
    v.push(s.supervisor_pid);
    v.sort_unstable();
    v.dedup();
    v
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// (cores busy on average, total RSS MiB) over `secs` seconds.
fn at_rest(fleet: &Fleet, secs: u64) -> (f64, f64, usize) {
    let s = fleet.status();
    let p = pids(&s);
    let before: u64 = p.iter().map(|x| cpu_ticks(*x)).sum();
    std::thread::sleep(Duration::from_secs(secs));
    let after: u64 = p.iter().map(|x| cpu_ticks(*x)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cores = (after - before) as f64 / hz / secs as f64;
    let rss: u64 = p.iter().map(|x| cascade_tests::procs::rss_kib(*x)).sum();
    (cores, rss as f64 / 1024.0, p.len())
}

fn main() {
    let common = [
        "--frontends",
        "8",
        "--thread-limit",
        "16",
        "--time-scale",
        "360",
    ];
    let base = Fleet::up(
        "impact-base",
        &[&["--services", "kinesis"][..], &common[..]].concat(),
    );
    base.wait_status("kinesis serving", Duration::from_secs(60), all_serving);
    let (b_cpu, b_rss, b_n) = at_rest(&base, 10);
    drop(base);

    let fleet = Fleet::up("impact", &common);
    fleet.wait_status(
        "every service serving",
        Duration::from_secs(60),
        all_serving,
    );
    let (cpu, rss, n) = at_rest(&fleet, 10);
    println!(
        "baseline: Kinesis only ({b_n} processes): {b_cpu:.3} cores, {b_rss:.0} MiB RSS at rest"
    );
    println!(
        "at rest:  whole topology ({n} processes): {cpu:.3} cores, {rss:.0} MiB RSS ({:.2}x CPU, {:.2}x memory of Kinesis only)",
        cpu / b_cpu.max(1e-9),
        rss / b_rss.max(1e-9)
    );

    fleet.ok(&["add-capacity", "6"]);
    let added = Instant::now();
    let mut first_failure: Option<Instant> = None;
    let mut impaired: BTreeMap<String, Instant> = BTreeMap::new();
    let services = Service::ALL.map(Service::name);
    while impaired.len() < services.len() && added.elapsed() < Duration::from_secs(180) {
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
    let Some(t0) = first_failure else {
        println!("cascade_impact: no ShardMap failed within 180 s");
        return;
    };
    println!(
        "first ShardMap failure {:.1} s after add-capacity ({:.0} incident min)",
        (t0 - added).as_secs_f64(),
        (t0 - added).as_secs_f64() * TIME_SCALE / 60.0
    );
    let mut order: Vec<(&String, &Instant)> = impaired.iter().collect();
    order.sort_by_key(|(_, t)| **t);
    for (svc, t) in order {
        let d = t.saturating_duration_since(t0).as_secs_f64();
        println!(
            "cascade_impact: {svc:<12} impaired {d:>5.1} s after the first ShardMap failure ({:>5.0} incident min)",
            d * TIME_SCALE / 60.0
        );
    }
    for svc in services {
        if !impaired.contains_key(svc) {
            println!("cascade_impact: {svc:<12} not impaired within 180 s");
        }
    }
}
