//! Data-plane throughput: PutRecord through one front-end to the back end
//! (two real processes, two gRPC hops), as a ratio to a plain tonic server
//! answering the same PutRecord at once (one process, one hop), both driven
//! by the same closed-loop load generator in the same run.
//!
//! The front-end runs with `--worker-slots 1024` (the model's bound on
//! requests one front-end works on at once, 4 by default, set out of the
//! way; `--worker-slots N` to measure the model) and no modelled request
//! cost. The baseline is
//! this bench binary serving, so the ratio is valid only when the bench
//! itself is a release build (plain `cargo bench`); the report records the
//! profile it was built with.
//!
//! Writes target/bench/dataplane_throughput.json.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench dataplane_throughput -- [seconds] [concurrency]
//!   cargo bench -p cascade-tests --bench dataplane_throughput -- --smoke   (1 round of 2 s)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cascade_proto::kinesis as pb;
use cascade_proto::kinesis::kinesis_client::KinesisClient;
use cascade_proto::kinesis::kinesis_server::{Kinesis, KinesisServer};
use cascade_tests::bench::{self, Machine};
use cascade_tests::procs;
use clap::Parser;
use serde::Serialize;
use tonic::{Request, Response, Status};

/// PutRecord through a front-end against a plain tonic server.
#[derive(Parser, Debug)]
struct Args {
    /// Seconds of load per round (at least 2).
    #[arg(default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=600))]
    seconds: u64,
    /// Calls in flight.
    #[arg(default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Rounds of each (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// The front-end's worker slots (the model's bound on requests it works
    /// on at once; the front-end's default is 4): out of the way by default.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1024))]
    worker_slots: u32,
    /// Small and quick (1 round of 2 s, 8 in flight): checks the bench runs and writes its JSON.
    #[arg(long)]
    smoke: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    smoke: bool,
    machine: Machine,
    command: String,
    seconds: u64,
    concurrency: u64,
    worker_slots: u32,
    plain_calls_per_sec: Vec<f64>,
    frontend_calls_per_sec: Vec<f64>,
    /// Median of the plain server's rounds (the baseline).
    baseline: f64,
    /// Median of the front-end's rounds.
    figure: f64,
    ratio: f64,
    target_ratio: f64,
    /// Whether this bench (the baseline server and the load generator) was
    /// an optimized build; the ratio is valid only when it was.
    optimized: bool,
}

/// The baseline: answers PutRecord immediately, nothing else.
struct Echo;

#[tonic::async_trait]
impl Kinesis for Echo {
    async fn create_stream(
        &self,
        _: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::CreateStreamResponse>, Status> {
        Ok(Response::new(pb::CreateStreamResponse::default()))
    }
    async fn put_record(
        &self,
        r: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        Ok(Response::new(pb::PutRecordResponse {
            shard_id: r.into_inner().partition_key,
            sequence_number: "0".into(),
        }))
    }
    async fn put_records(
        &self,
        _: Request<pb::PutRecordsRequest>,
    ) -> Result<Response<pb::PutRecordsResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn get_shard_iterator(
        &self,
        _: Request<pb::GetShardIteratorRequest>,
    ) -> Result<Response<pb::GetShardIteratorResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn get_records(
        &self,
        _: Request<pb::GetRecordsRequest>,
    ) -> Result<Response<pb::GetRecordsResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn list_shards(
        &self,
        _: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn delete_stream(
        &self,
        _: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<pb::DeleteStreamResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

fn serve_echo(addr: String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (_reporter, health) = tonic_health::server::health_reporter();
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(KinesisServer::new(Echo))
            .serve(addr.parse().expect("addr"))
            .await
            .expect("echo server");
    });
}

async fn load(addr: &str, secs: u64, concurrency: usize) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..8 {
        let ch = cascade_core::clients::connect(addr).await.expect("connect");
        clients.push(KinesisClient::new(ch));
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let warm = Instant::now() + Duration::from_millis(500);
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut c = clients[i % clients.len()].clone();
        let (done, errors) = (done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                let req = pb::PutRecordRequest {
                    stream_name: "bench".into(),
                    partition_key: format!("key-{i}-{n}"),
                    data: vec![b'x'; 100],
                    explicit_hash_key: String::new(),
                };
                n += 1;
                match c.put_record(req).await {
                    Ok(_) if Instant::now() > warm => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let e = errors.load(Ordering::Relaxed);
    assert_eq!(e, 0, "{e} PutRecord calls failed against {addr}");
    done.load(Ordering::Relaxed) as f64 / (secs as f64 - 0.5)
}

fn main() {
    if let Ok(addr) = std::env::var("CASCADE_LISTEN") {
        serve_echo(addr);
        return;
    }
    let a = Args::parse();
    let machine = Machine::probe();
    let (secs, concurrency, rounds) = if a.smoke {
        (2, 8, 1)
    } else {
        (a.seconds, a.concurrency as usize, a.rounds as usize)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let echo = procs::start_command(std::process::Command::new(std::env::current_exe().expect("exe")));
        procs::wait_serving(&echo.addr, Duration::from_secs(20)).await;
        let backend = procs::start("kinesis-backend", &[]);
        procs::wait_serving(&backend.addr, Duration::from_secs(20)).await;
        let fe = procs::start(
            "kinesis-frontend",
            &["--id", "fe-0", "--backend", &backend.addr, "--worker-slots", &a.worker_slots.to_string()].map(str::to_owned),
        );
        procs::wait_serving(&fe.addr, Duration::from_secs(20)).await;
        let mut c = KinesisClient::new(cascade_core::clients::connect(&fe.addr).await.expect("connect"));
        c.create_stream(pb::CreateStreamRequest { stream_name: "bench".into(), shard_count: 4 }).await.expect("create");
        // Interleave rounds of each and take medians, so a noisy moment on
        // a 2-core machine does not decide the ratio.
        let (mut bases, mut throughs) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            bases.push(load(&echo.addr, secs, concurrency).await);
            throughs.push(load(&fe.addr, secs, concurrency).await);
            println!("round {round}: plain {:.0}/s, front-end {:.0}/s", bases[round - 1], throughs[round - 1]);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (plain, front) = (bases.clone(), throughs.clone());
        let (base, through) = (median(&mut bases), median(&mut throughs));
        println!("baseline: plain tonic PutRecord server: {base:.0} calls/s (median of {rounds}; {concurrency} in flight, {secs} s each)");
        println!("front-end -> back end PutRecord: {through:.0} calls/s (median of {rounds})");
        println!("dataplane_throughput: {:.2}x the plain tonic server (target >= 0.5x)", through / base);
        bench::write_json(
            "dataplane_throughput",
            &Report {
                bench: "dataplane_throughput",
                smoke: a.smoke,
                machine,
                command: std::env::args().collect::<Vec<_>>().join(" "),
                seconds: secs,
                concurrency: concurrency as u64,
                worker_slots: a.worker_slots,
                plain_calls_per_sec: plain,
                frontend_calls_per_sec: front,
                baseline: base,
                figure: through,
                ratio: through / base,
                target_ratio: 0.5,
                optimized: !cfg!(debug_assertions),
            },
        );
    });
}
