//! Memory per peer thread: N front-ends in one fleet (N*(N-1) peer threads,
//! each holding a real stream) against the same N front-ends each in a fleet
//! of its own (no peers), measured in the same run. The difference in
//! front-end RSS plus kernel memory (KernelStack + Slab + PageTables, from
//! /proc/meminfo), divided by the peer threads, is the cost of one peer.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench peer_memory -- [N]     (default: 40)

use std::time::Duration;

use cascade::state::MapState;
use cascade_core::testkit::{eventually_async, holds};
use cascade_proto::control::GetStatusRequest;
use cascade_proto::control::control_client::ControlClient;
use cascade_tests::procs::{self, Proc};

struct Sample {
    rss_kib: u64,
    kernel_kib: u64,
    peer_threads: u64,
}

async fn measure(n: usize, mesh: bool) -> Sample {
    let kernel_before = procs::kernel_kib();
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
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_kib = fes.iter().map(|p| procs::rss_kib(p.child.id())).sum();
    let kernel_kib = procs::kernel_kib().saturating_sub(kernel_before);
    drop(fes);
    drop(backend);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Sample {
        rss_kib,
        kernel_kib,
        peer_threads,
    }
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(40);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let solo = measure(n, false).await;
        let mesh = measure(n, true).await;
        let threads = mesh.peer_threads.saturating_sub(solo.peer_threads).max(1);
        let rss = mesh.rss_kib.saturating_sub(solo.rss_kib) as f64 / threads as f64;
        let kern = mesh.kernel_kib.saturating_sub(solo.kernel_kib) as f64 / threads as f64;
        println!(
            "baseline: {n} isolated front-ends: RSS {} KiB, kernel +{} KiB",
            solo.rss_kib, solo.kernel_kib
        );
        println!(
            "mesh:     {n} front-ends, {} peer threads: RSS {} KiB, kernel +{} KiB",
            mesh.peer_threads, mesh.rss_kib, mesh.kernel_kib
        );
        println!(
            "peer_memory: {:.1} KiB per peer thread ({rss:.1} KiB RSS + {kern:.1} KiB kernel); mesh/isolated memory ratio {:.2}x",
            rss + kern,
            (mesh.rss_kib + mesh.kernel_kib) as f64 / (solo.rss_kib + solo.kernel_kib).max(1) as f64
        );
    });
}
