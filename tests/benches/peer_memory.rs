//! Memory per peer thread: N front-ends in one fleet (N*(N-1) peer threads,
//! each holding a real stream) against the same N front-ends each in a fleet
//! of its own (no peers), measured in the same run. The difference in
//! front-end RSS plus kernel memory (KernelStack + SUnreclaim + PageTables,
//! from /proc/meminfo; Slab is reported beside), divided by the peer
//! threads, is the cost of one peer.
//!
//! Baseline, same run, same method: the physical floor (`cascade-floor`):
//! N bare processes with N-1 idle threads each (same 256 KiB stack
//! reservation, each blocked in read(2) on a socket of its own) against N
//! with none. Ratio: fleet per-thread cost / floor per-thread cost (target
//! <= 1.3x).
//!
//! The front-ends start as the supervisor starts them for the remediation,
//! `--bootstrap metadata-store`: with `--bootstrap peers` at 3600x, forty
//! front-ends booting at once each wait for a snapshot from every peer (the
//! fast-restart hazard the incident is about) and need not settle.
//!
//! Writes target/bench/peer_memory.json.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench peer_memory -- [N]     (default: 40)
//!   cargo bench -p cascade-tests --bench peer_memory -- --smoke (N = 4)

use std::time::Duration;

use cascade::state::MapState;
use cascade_core::testkit::{eventually_async, holds};
use cascade_proto::control::GetStatusRequest;
use cascade_proto::control::control_client::ControlClient;
use cascade_tests::bench::{self, Machine};
use cascade_tests::floor;
use cascade_tests::procs::{self, KernelMem, Proc};
use clap::Parser;
use serde::Serialize;

/// Memory per peer thread against the physical floor.
#[derive(Parser, Debug)]
struct Args {
    /// Front-ends in the mesh.
    #[arg(value_parser = clap::value_parser!(u64).range(2..=200))]
    n: Option<u64>,
    /// Small and quick (N = 4): checks the bench runs and writes its JSON.
    #[arg(long)]
    smoke: bool,
    /// Seconds to let every stream exchange messages before measuring.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Serialize)]
struct Sample {
    rss_kib: u64,
    kernel: KernelMem,
    threads: u64,
}

impl Sample {
    fn total(&self) -> i64 {
        self.rss_kib as i64 + self.kernel.counted_kib()
    }
}

#[derive(Debug, Serialize)]
struct PerThread {
    rss_kib: f64,
    kernel_kib: f64,
    /// rss + kernel (KernelStack + SUnreclaim + PageTables).
    total_kib: f64,
    /// Slab (reclaimable too) per thread, for reference.
    slab_kib: f64,
}

fn per_thread(mesh: &Sample, solo: &Sample) -> PerThread {
    let t = mesh.threads.saturating_sub(solo.threads).max(1) as f64;
    let rss = (mesh.rss_kib as f64 - solo.rss_kib as f64) / t;
    let kern = (mesh.kernel.counted_kib() - solo.kernel.counted_kib()) as f64 / t;
    PerThread {
        rss_kib: rss,
        kernel_kib: kern,
        total_kib: rss + kern,
        slab_kib: (mesh.kernel.slab_kib - solo.kernel.slab_kib) as f64 / t,
    }
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    smoke: bool,
    machine: Machine,
    command: String,
    n: u64,
    fleet_isolated: Sample,
    fleet_mesh: Sample,
    fleet_per_peer_thread: PerThread,
    floor_no_threads: Sample,
    floor_threads: Sample,
    floor_per_thread: PerThread,
    /// fleet_per_peer_thread.total / floor_per_thread.total.
    ratio: f64,
    target_ratio: f64,
}

async fn measure(n: usize, mesh: bool, settle: Duration) -> Sample {
    let kernel_before = KernelMem::now();
    let backend = procs::start("kinesis-backend", &[]);
    procs::wait_serving(&backend.addr, Duration::from_secs(20)).await;
    let fes: Vec<Proc> = (0..n)
        .map(|i| {
            let fleet = if mesh {
                "mesh".to_owned()
            } else {
                format!("solo-{i}")
            };
            procs::start(
                "kinesis-frontend",
                &[
                    "--id",
                    &format!("fe-{i}"),
                    "--backend",
                    &backend.addr,
                    "--fleet",
                    &fleet,
                    "--time-scale",
                    "3600",
                    "--bootstrap",
                    "metadata-store",
                ]
                .map(str::to_owned),
            )
        })
        .collect();
    let want = if mesh { n as u32 - 1 } else { 0 };
    let started = &fes;
    let peer_threads = eventually_async(
        &format!("{n} front-ends ready with {want} peer threads each"),
        Duration::from_secs(120),
        || async move {
            let mut peer_threads = 0u64;
            let mut ready = 0;
            for fe in started {
                let Ok(ch) = cascade_core::clients::connect(&fe.addr).await else {
                    continue;
                };
                if let Ok(s) = ControlClient::new(ch).get_status(GetStatusRequest {}).await
                    && let Some(f) = s.into_inner().frontend
                {
                    peer_threads += u64::from(f.peer_threads);
                    if MapState::from_wire(&f.shard_map) == MapState::Ready
                        && f.peer_threads == want
                    {
                        ready += 1;
                    }
                }
            }
            holds(ready == n, || format!("{ready}/{n} ready")).map(|()| peer_threads)
        },
    )
    .await;
    // Let every stream exchange a few messages so buffers are in steady state.
    tokio::time::sleep(settle).await;
    let rss_kib = fes.iter().map(|p| procs::rss_kib(p.child.id())).sum();
    let kernel = KernelMem::now().since(&kernel_before);
    drop(fes);
    drop(backend);
    Sample {
        rss_kib,
        kernel,
        threads: peer_threads,
    }
}

fn floor_sample(n: usize, threads: usize) -> Sample {
    let f = floor::start(n, threads, None, 256, Duration::from_secs(120));
    let s = Sample {
        rss_kib: f.sample.rss_kib,
        kernel: f.sample.kernel,
        threads: f.sample.threads,
    };
    drop(f);
    s
}

fn main() {
    let a = Args::parse();
    let machine = Machine::probe();
    let n = if a.smoke { 4 } else { a.n.unwrap_or(40) } as usize;
    let settle = Duration::from_secs(if a.smoke { 1 } else { a.settle_secs });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (solo, mesh) = rt.block_on(async {
        let solo = measure(n, false, settle).await;
        let mesh = measure(n, true, settle).await;
        (solo, mesh)
    });
    drop(rt);
    let floor0 = floor_sample(n, 0);
    let floor1 = floor_sample(n, n - 1);
    let fleet = per_thread(&mesh, &solo);
    let fl = per_thread(&floor1, &floor0);
    let ratio = fleet.total_kib / fl.total_kib.max(1e-9);
    println!(
        "baseline (fleet): {n} isolated front-ends: RSS {} KiB, kernel +{} KiB",
        solo.rss_kib,
        solo.kernel.counted_kib()
    );
    println!(
        "mesh:             {n} front-ends, {} peer threads: RSS {} KiB, kernel +{} KiB (mesh/isolated memory {:.2}x)",
        mesh.threads,
        mesh.rss_kib,
        mesh.kernel.counted_kib(),
        mesh.total() as f64 / solo.total().max(1) as f64
    );
    println!(
        "floor:            {n} bare processes: {} KiB with no threads, {} KiB with {} idle threads",
        floor0.total(),
        floor1.total(),
        floor1.threads
    );
    println!(
        "peer_memory: {:.1} KiB per peer thread ({:.1} RSS + {:.1} kernel; Slab {:.1}) vs floor {:.1} KiB per idle thread ({:.1} RSS + {:.1} kernel): {ratio:.2}x the floor (target <= 1.3x)",
        fleet.total_kib,
        fleet.rss_kib,
        fleet.kernel_kib,
        fleet.slab_kib,
        fl.total_kib,
        fl.rss_kib,
        fl.kernel_kib
    );
    let report = Report {
        bench: "peer_memory",
        smoke: a.smoke,
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        n: n as u64,
        fleet_isolated: solo,
        fleet_mesh: mesh,
        fleet_per_peer_thread: fleet,
        floor_no_threads: floor0,
        floor_threads: floor1,
        floor_per_thread: fl,
        ratio,
        target_ratio: 1.3,
    };
    bench::write_json("peer_memory", &report);
}
