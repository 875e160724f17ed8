//! Scale: the largest full mesh of peer threads this machine reaches, and how
//! long it takes. Brings up N front-ends with `cascade up` (real processes, real
//! cgroup limits) and times launch -> every ShardMap ready with N-1 peers.
//! Baseline, same run: the same measurement for a single front-end.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench fleet_scale -- [N ...]     (default: 100)

use std::time::{Duration, Instant};

use cascade_tests::Fleet;
use cascade_tests::status::full_mesh;

fn time_full_mesh(n: u64) -> (Duration, Duration, u64) {
    let limit = (n + 16).max(32);
    let start = Instant::now();
    let fleet = Fleet::kinesis(&format!("scale{n}"), n as usize, limit);
    let up = start.elapsed();
    let s = fleet.wait_status(
        &format!("{n} ready front-ends in a full mesh"),
        Duration::from_secs(120),
        |s| full_mesh(s, n as usize),
    );
    let mesh = start.elapsed();
    let threads: u64 = s.frontends.iter().map(|f| u64::from(f.peer_threads)).sum();
    (up, mesh, threads)
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![100] } else { sizes };
    let (_, base, _) = time_full_mesh(1);
    println!("baseline: 1 front-end ready in {:.2} s", base.as_secs_f64());
    for n in sizes {
        let (up, mesh, threads) = time_full_mesh(n);
        println!(
            "fleet_scale: {n} front-ends, {threads} peer threads: all SERVING after {:.2} s, full mesh after {:.2} s ({:.1}x the 1-front-end baseline)",
            up.as_secs_f64(),
            mesh.as_secs_f64(),
            mesh.as_secs_f64() / base.as_secs_f64()
        );
    }
}
