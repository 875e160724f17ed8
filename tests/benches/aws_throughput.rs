//! AWS API throughput: PutRecord and GetRecords over the AWS JSON protocol
//! (`POST /`, `X-Amz-Target: Kinesis_20131202.<Operation>`,
//! `application/x-amz-json-1.1`, a SigV4-shaped `Authorization`), through
//! the fleet's public endpoint (`endpoints.kinesis_aws`: the balancer in the
//! supervisor, then a front-end, then the back end; three processes, three
//! hops) against **ferrokinesis** (a single-process Rust Kinesis emulator
//! from crates.io; one process, one hop), on the same machine, in the same
//! run, driven by the same client at the same concurrency for the same time.
//!
//! The client: one keep-alive HTTP/1.1 connection per caller (hyper), each
//! caller sending its next call when the last is answered (closed loop),
//! for a fixed time; calls that complete in the first 500 ms are warm-up and
//! not counted. Every reply is parsed as its typed output, and any call
//! that is not a 200 with that output fails the bench, naming the target
//! and what it answered. The signature is SigV4-shaped but not computed:
//! neither target verifies it, and a real SDK's signing cost would be the
//! same for both.
//!
//! - PutRecord: 100-byte records, a new partition key per call.
//! - GetRecords: each caller reads one shard (caller i reads shard
//!   i mod 4) from a TRIM_HORIZON iterator, `Limit` 10, following
//!   `NextShardIterator`; at the end of what is stored it starts again from
//!   its first iterator (iterators may be reused until they expire, in
//!   both). Every shard is loaded with at least 10 records first, so every
//!   call returns 10 records except at the end of a shard.
//!
//! Modelled limits, set out of the way so that the figure is the cost of
//! the path and not a model: the fleet runs with `--worker-slots 1024` (a
//! request never waits for a worker slot, so no call is throttled),
//! `--request-cost 0` (no modelled work per request), `--traffic-rate 0`
//! (no synthetic customers), `--bootstrap metadata-store` and
//! `--time-scale 3600` (the mesh forms in about a second; the time scale
//! changes nothing on the data path). ferrokinesis runs with
//! `--enforce-limits false` (no per-shard throughput throttling, its
//! default), `--create-stream-ms 0` and `--log-level error`.
//!
//! ferrokinesis is `cargo install`ed (version [`FERROKINESIS`], `--locked`)
//! into `target/bench-tools` the first time and reused after; `--ferrokinesis
//! PATH` uses a binary of your own instead.
//!
//! Writes target/bench/aws_throughput.json.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench aws_throughput -- [seconds] [concurrency]
//!   cargo bench -p cascade-tests --bench aws_throughput -- --smoke   (1 round of 2 s, 8 in flight)

use std::net::ToSocketAddrs as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use cascade_core::testkit::eventually_async;
use cascade_tests::bench::{self, Machine};
use cascade_tests::status::{full_mesh, pretty};
use cascade_tests::{Fleet, procs};
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The ferrokinesis release the baseline is measured against.
const FERROKINESIS: &str = "0.7.0";
/// Shards of the bench stream, in both targets.
const SHARDS: usize = 4;
/// Bytes of every record put.
const RECORD_BYTES: usize = 100;
/// `Limit` of every GetRecords call.
const GET_LIMIT: usize = 10;
/// Worker slots per front-end: out of the way (the front-end's limit).
const WORKER_SLOTS: u32 = 1024;
/// Calls completing this soon after the start of a round are not counted.
const WARM_UP: Duration = Duration::from_millis(500);
/// The stream both targets serve.
const STREAM: &str = "bench";
/// The shape of a SigV4 `Authorization` header (not verified by either target).
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKIDCASCADEBENCH/20201125/us-east-1/kinesis/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0000000000000000000000000000000000000000000000000000000000000000";
/// The target of the ratio.
const TARGET_RATIO: f64 = 0.5;

/// PutRecord and GetRecords over the AWS JSON API: the fleet's balanced
/// endpoint against ferrokinesis.
#[derive(Parser, Debug)]
struct Args {
    /// Seconds of load per operation, target and round (at least 2).
    #[arg(default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=600))]
    seconds: u64,
    /// Calls in flight (one connection each).
    #[arg(default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Rounds of each (the median is reported); the order of the two
    /// targets alternates from round to round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// Front-ends behind the balanced endpoint.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    frontends: u32,
    /// A ferrokinesis binary to use instead of installing one into
    /// target/bench-tools.
    #[arg(long)]
    ferrokinesis: Option<PathBuf>,
    /// Small and quick (1 round of 2 s, 8 in flight): checks the bench runs and writes its JSON.
    #[arg(long)]
    smoke: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

// ---- the report --------------------------------------------------------

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    smoke: bool,
    machine: Machine,
    command: String,
    seconds: u64,
    concurrency: u64,
    rounds: u64,
    frontends: u32,
    worker_slots: u32,
    shards: usize,
    record_bytes: usize,
    get_records_limit: usize,
    ferrokinesis: Ferro,
    /// One entry per operation.
    operations: Vec<OpReport>,
    target_ratio: f64,
    /// Whether this bench (the load generator) was an optimized build.
    optimized: bool,
}

/// How the baseline was had.
#[derive(Debug, Serialize)]
struct Ferro {
    version: &'static str,
    binary: String,
    /// Seconds `cargo install` took in this run; `None` when it was reused.
    install_seconds: Option<f64>,
    args: Vec<String>,
}

#[derive(Debug, Serialize)]
struct OpReport {
    op: &'static str,
    ferrokinesis: TargetReport,
    cascade: TargetReport,
    /// cascade ops/s over ferrokinesis ops/s (medians of the rounds).
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct TargetReport {
    /// Median of the rounds' calls per second.
    ops_per_sec: f64,
    /// Latency percentiles over every counted call of every round.
    p50_ms: f64,
    p99_ms: f64,
    rounds: Vec<Round>,
}

#[derive(Debug, Clone, Serialize)]
struct Round {
    ops_per_sec: f64,
    calls: u64,
    /// Records the calls carried (GetRecords: records read).
    records: u64,
    p50_ms: f64,
    p99_ms: f64,
    #[serde(skip)]
    latencies_us: Vec<u32>,
}

// ---- the wire ----------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateStreamIn<'a> {
    stream_name: &'a str,
    shard_count: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StreamIn<'a> {
    stream_name: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SummaryOut {
    stream_description_summary: Summary,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Summary {
    stream_status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListShardsOut {
    shards: Vec<ShardOut>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ShardOut {
    shard_id: String,
    hash_key_range: HashKeyRange,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HashKeyRange {
    starting_hash_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordIn<'a> {
    stream_name: &'a str,
    partition_key: String,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    explicit_hash_key: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordOut {
    shard_id: String,
    sequence_number: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetShardIteratorIn<'a> {
    stream_name: &'a str,
    shard_id: &'a str,
    shard_iterator_type: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetShardIteratorOut {
    shard_iterator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetRecordsIn<'a> {
    shard_iterator: &'a str,
    limit: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetRecordsOut {
    records: Vec<RecordOut>,
    next_shard_iterator: Option<String>,
    #[allow(dead_code)] // read to check the reply has it
    millis_behind_latest: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordOut {
    data: String,
    #[allow(dead_code)] // read to check the reply has it
    partition_key: String,
    #[allow(dead_code)]
    sequence_number: String,
}

/// One keep-alive HTTP/1.1 connection speaking the AWS JSON protocol.
struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    amz_date: Arc<str>,
}

impl Conn {
    async fn open(host: &str, amz_date: Arc<str>) -> Result<Self, String> {
        let stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay {host}: {e}"))?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP/1.1 handshake with {host}: {e}"))?;
        // Ends when `send` is dropped (or the server closes).
        tokio::spawn(conn);
        Ok(Self {
            send,
            host: host.to_owned(),
            amz_date,
        })
    }

    /// One call: `op` with `body`; the body of a 200, or what came back
    /// instead.
    async fn call_raw(&mut self, op: &str, body: Vec<u8>) -> Result<Bytes, String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("{op} to {}: connection lost: {e}", self.host))?;
        let req = http::Request::post("/")
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")
            .header("x-amz-target", format!("Kinesis_20131202.{op}"))
            .header("x-amz-date", &*self.amz_date)
            .header(http::header::AUTHORIZATION, AUTHORIZATION)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{op}: request: {e}"))?;
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| format!("{op} to {}: {e}", self.host))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{op} to {}: reading the reply: {e}", self.host))?
            .to_bytes();
        if status != http::StatusCode::OK {
            return Err(format!(
                "{op} to {}: HTTP {status}: {}",
                self.host,
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(body)
    }

    /// One call: `op` with `body`; the typed output of a 200, or what came
    /// back instead.
    async fn call<T: DeserializeOwned>(&mut self, op: &str, body: Vec<u8>) -> Result<T, String> {
        let body = self.call_raw(op, body).await?;
        serde_json::from_slice(&body).map_err(|e| {
            format!(
                "{op} to {}: the reply is not a {op} output ({e}): {}",
                self.host,
                String::from_utf8_lossy(&body)
            )
        })
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("a request serializes")
}

/// `X-Amz-Date` for now (`YYYYMMDDTHHMMSSZ`).
fn amz_date() -> Arc<str> {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    t.chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect::<String>()
        .into()
}

/// `http://host:port` (or `host:port`) as `host:port`.
fn host_of(endpoint: &str) -> String {
    endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

// ---- one target --------------------------------------------------------

/// A target under test: where it listens and its shards (id, first hash key).
struct Target {
    name: &'static str,
    host: String,
    shards: Vec<(String, String)>,
}

/// Creates the bench stream on `host`, waits for it to be ACTIVE (polling
/// DescribeStreamSummary, as the SDK's waiter does), lists its shards and
/// loads every shard with `GET_LIMIT` records.
async fn prepare(name: &'static str, host: String, amz: Arc<str>) -> Target {
    let mut c = Conn::open(&host, amz)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // An empty 200 (ferrokinesis) or `{}` (the fleet): nothing to read.
    c.call_raw(
        "CreateStream",
        json(&CreateStreamIn {
            stream_name: STREAM,
            shard_count: SHARDS,
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let c = tokio::sync::Mutex::new(c);
    eventually_async(
        &format!("{name}: stream {STREAM} to be ACTIVE"),
        Duration::from_secs(20),
        || async {
            let out: SummaryOut = c
                .lock()
                .await
                .call(
                    "DescribeStreamSummary",
                    json(&StreamIn {
                        stream_name: STREAM,
                    }),
                )
                .await?;
            let status = out.stream_description_summary.stream_status;
            if status == "ACTIVE" {
                Ok(())
            } else {
                Err(format!("StreamStatus {status}"))
            }
        },
    )
    .await;
    let mut c = c.into_inner();
    let listed: ListShardsOut = c
        .call(
            "ListShards",
            json(&StreamIn {
                stream_name: STREAM,
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let shards: Vec<(String, String)> = listed
        .shards
        .into_iter()
        .map(|s| (s.shard_id, s.hash_key_range.starting_hash_key))
        .collect();
    assert_eq!(
        shards.len(),
        SHARDS,
        "{name}: ListShards gave {} shards",
        shards.len()
    );
    let data = base64::engine::general_purpose::STANDARD.encode([b'x'; RECORD_BYTES]);
    for (shard, start) in &shards {
        for n in 0..GET_LIMIT {
            let out: PutRecordOut = c
                .call(
                    "PutRecord",
                    json(&PutRecordIn {
                        stream_name: STREAM,
                        partition_key: format!("load-{n}"),
                        data: &data,
                        explicit_hash_key: Some(start),
                    }),
                )
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                &out.shard_id, shard,
                "{name}: ExplicitHashKey {start} went to another shard"
            );
        }
    }
    Target { name, host, shards }
}

/// What one caller does in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    PutRecord,
    GetRecords,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::PutRecord => "PutRecord",
            Op::GetRecords => "GetRecords",
        }
    }
}

/// `concurrency` callers, each on its own connection, calling `op` on `t`
/// for `secs` seconds; panics on the first failed call.
async fn load(t: &Target, op: Op, secs: u64, concurrency: usize, amz: &Arc<str>) -> Round {
    let data: Arc<str> = base64::engine::general_purpose::STANDARD
        .encode([b'x'; RECORD_BYTES])
        .into();
    // Connect (and, for GetRecords, take each caller's first iterator)
    // before the clock starts.
    let mut callers = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut c = Conn::open(&t.host, amz.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        let first = match op {
            Op::PutRecord => String::new(),
            Op::GetRecords => {
                let shard = &t.shards[i % t.shards.len()].0;
                let out: GetShardIteratorOut = c
                    .call(
                        "GetShardIterator",
                        json(&GetShardIteratorIn {
                            stream_name: STREAM,
                            shard_id: shard,
                            shard_iterator_type: "TRIM_HORIZON",
                        }),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", t.name));
                out.shard_iterator
            }
        };
        callers.push((c, first));
    }
    let start = Instant::now();
    let (warm, stop) = (start + WARM_UP, start + Duration::from_secs(secs));
    let mut tasks = Vec::new();
    for (i, (mut c, first)) in callers.into_iter().enumerate() {
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            let (mut calls, mut records, mut lat) = (0u64, 0u64, Vec::<u32>::new());
            let mut it = first.clone();
            let mut n = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= stop {
                    break;
                }
                let got = match op {
                    Op::PutRecord => {
                        n += 1;
                        c.call::<PutRecordOut>(
                            "PutRecord",
                            json(&PutRecordIn {
                                stream_name: STREAM,
                                partition_key: format!("key-{i}-{n}"),
                                data: &data,
                                explicit_hash_key: None,
                            }),
                        )
                        .await
                        .and_then(|out| {
                            if out.sequence_number.is_empty() || out.shard_id.is_empty() {
                                return Err("PutRecord: no SequenceNumber or ShardId".to_owned());
                            }
                            Ok(1)
                        })
                    }
                    Op::GetRecords => c
                        .call::<GetRecordsOut>(
                            "GetRecords",
                            json(&GetRecordsIn {
                                shard_iterator: &it,
                                limit: GET_LIMIT,
                            }),
                        )
                        .await
                        .and_then(|out| {
                            if let Some(r) = out.records.iter().find(|r| r.data.len() != data.len())
                            {
                                return Err(format!(
                                    "GetRecords: a record of {} base64 chars, not {}",
                                    r.data.len(),
                                    data.len()
                                ));
                            }
                            let got = out.records.len() as u64;
                            it = match out.next_shard_iterator {
                                Some(next) if out.records.len() == GET_LIMIT => next,
                                // The end of what is stored: start again.
                                _ => first.clone(),
                            };
                            Ok(got)
                        }),
                };
                let done = Instant::now();
                match got {
                    Ok(r) if done > warm => {
                        calls += 1;
                        records += r;
                        lat.push((done - t0).as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((calls, records, lat))
        }));
    }
    let (mut calls, mut records, mut lat) = (0, 0, Vec::new());
    for task in tasks {
        match task.await.expect("a caller panicked") {
            Ok((c, r, l)) => {
                calls += c;
                records += r;
                lat.extend(l);
            }
            Err(e) => panic!("{}: {} failed: {e}", t.name, op.name()),
        }
    }
    let counted = Duration::from_secs(secs) - WARM_UP;
    lat.sort_unstable();
    Round {
        ops_per_sec: calls as f64 / counted.as_secs_f64(),
        calls,
        records,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        latencies_us: lat,
    }
}

/// The `q` quantile of sorted microseconds, in milliseconds (0 when empty).
fn percentile(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[i]) / 1000.0
}

fn summarize(rounds: Vec<Round>) -> TargetReport {
    let mut rates: Vec<f64> = rounds.iter().map(|r| r.ops_per_sec).collect();
    rates.sort_by(f64::total_cmp);
    let mut all: Vec<u32> = rounds
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    all.sort_unstable();
    TargetReport {
        ops_per_sec: rates[rates.len() / 2],
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        rounds,
    }
}

// ---- ferrokinesis ------------------------------------------------------

/// `cargo install`'s record of what it installed under a root.
#[derive(Deserialize)]
struct Crates2 {
    installs: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Whether `root` holds ferrokinesis [`FERROKINESIS`], installed by cargo.
fn installed(root: &Path) -> bool {
    let bin = root.join("bin/ferrokinesis");
    let Ok(text) = std::fs::read_to_string(root.join(".crates2.json")) else {
        return false;
    };
    let Ok(c) = serde_json::from_str::<Crates2>(&text) else {
        return false;
    };
    bin.is_file()
        && c.installs
            .keys()
            .any(|k| k.starts_with(&format!("ferrokinesis {FERROKINESIS} ")))
}

/// The ferrokinesis binary, installed first if need be; and how long the
/// install took (`None`: reused or given).
fn ferrokinesis_binary(given: Option<PathBuf>) -> (PathBuf, Option<f64>) {
    if let Some(p) = given {
        assert!(p.is_file(), "--ferrokinesis {}: no such file", p.display());
        return (p, None);
    }
    let target = bench::out_dir()
        .parent()
        .expect("target/bench has a parent")
        .to_path_buf();
    let root = target.join("bench-tools");
    let bin = root.join("bin/ferrokinesis");
    if installed(&root) {
        println!("ferrokinesis {FERROKINESIS}: reusing {}", bin.display());
        return (bin, None);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!(
        "ferrokinesis {FERROKINESIS}: installing into {} (cargo install, a release build: minutes)",
        root.display()
    );
    let t0 = Instant::now();
    let status = Command::new(&cargo)
        .args([
            "install",
            "ferrokinesis",
            "--version",
            FERROKINESIS,
            "--locked",
            "--root",
        ])
        .arg(&root)
        // Its own build directory, not the workspace's (whose profile and
        // target dir this bench runs under).
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {cargo:?} install ferrokinesis: {e}"));
    assert!(
        status.success() && installed(&root),
        "cargo install ferrokinesis {FERROKINESIS} --root {} failed ({status}); \
         pass --ferrokinesis PATH to use a binary of your own",
        root.display()
    );
    let secs = t0.elapsed().as_secs_f64();
    println!("ferrokinesis {FERROKINESIS}: installed in {secs:.0} s");
    (bin, Some(secs))
}

/// GET `path` on `host`; the status code.
async fn http_get(host: &str, path: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

// ---- main --------------------------------------------------------------

fn main() {
    let a = Args::parse();
    let machine = Machine::probe();
    let (secs, concurrency, rounds) = if a.smoke {
        (2, 8, 1)
    } else {
        (a.seconds, a.concurrency as usize, a.rounds)
    };
    let (ferro_bin, install_seconds) = ferrokinesis_binary(a.ferrokinesis.clone());

    // The fleet, with every modelled limit out of the way (see the top).
    let fleet_args: Vec<String> = [
        "--services",
        "kinesis",
        "--frontends",
        &a.frontends.to_string(),
        "--thread-limit",
        "64",
        "--time-scale",
        "3600",
        "--bootstrap",
        "metadata-store",
        "--traffic-rate",
        "0",
        "--request-cost",
        "0s",
        "--worker-slots",
        &WORKER_SLOTS.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let fleet = Fleet::up(
        "aws-bench",
        &fleet_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let n = a.frontends as usize;
    let s = fleet.wait_status("the fleet in a full mesh", Duration::from_secs(60), |s| {
        full_mesh(s, n)
    });
    let endpoint = s
        .endpoints
        .kinesis_aws
        .clone()
        .unwrap_or_else(|| panic!("no endpoints.kinesis_aws in status: {}", pretty(&s)));

    let ferro_host = procs::free_addr();
    let port = ferro_host.rsplit_once(':').expect("host:port").1.to_owned();
    let ferro_args: Vec<String> = [
        "--port",
        &port,
        "--enforce-limits",
        "false",
        "--create-stream-ms",
        "0",
        "--log-level",
        "error",
    ]
    .map(str::to_owned)
    .to_vec();
    let ferro = procs::Proc {
        child: Command::new(&ferro_bin)
            .args(&ferro_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", ferro_bin.display())),
        addr: ferro_host.clone(),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let operations = rt.block_on(async {
        eventually_async(
            &format!("ferrokinesis at {ferro_host} to be ready"),
            Duration::from_secs(20),
            || async {
                match http_get(&ferro_host, "/_health/ready").await? {
                    200 => Ok(()),
                    code => Err(format!("/_health/ready: HTTP {code}")),
                }
            },
        )
        .await;
        let amz = amz_date();
        let cascade_host = host_of(&endpoint);
        assert!(
            cascade_host.to_socket_addrs().is_ok(),
            "endpoints.kinesis_aws {endpoint:?} is not an address"
        );
        let targets = [
            prepare("ferrokinesis", ferro_host.clone(), amz.clone()).await,
            prepare("cascade", cascade_host, amz.clone()).await,
        ];
        let mut operations = Vec::new();
        for op in [Op::PutRecord, Op::GetRecords] {
            let mut measured: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
            for round in 0..rounds as usize {
                // Alternate which target goes first.
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in order {
                    let r = load(&targets[i], op, secs, concurrency, &amz).await;
                    println!(
                        "{} round {}: {}: {:.0} calls/s (p50 {:.2} ms, p99 {:.2} ms, {} records)",
                        op.name(),
                        round + 1,
                        targets[i].name,
                        r.ops_per_sec,
                        r.p50_ms,
                        r.p99_ms,
                        r.records
                    );
                    measured[i].push(r);
                }
            }
            let [f, c] = measured;
            let (f, c) = (summarize(f), summarize(c));
            let ratio = c.ops_per_sec / f.ops_per_sec;
            println!(
                "{}: ferrokinesis {:.0}/s (p50 {:.2} ms, p99 {:.2} ms); cascade {:.0}/s (p50 {:.2} ms, p99 {:.2} ms): {ratio:.2}x (target >= {TARGET_RATIO}x)",
                op.name(),
                f.ops_per_sec,
                f.p50_ms,
                f.p99_ms,
                c.ops_per_sec,
                c.p50_ms,
                c.p99_ms
            );
            operations.push(OpReport {
                op: op.name(),
                ferrokinesis: f,
                cascade: c,
                ratio,
            });
        }
        operations
    });
    drop(rt);
    drop(ferro);
    bench::take_down(fleet);
    bench::write_json(
        "aws_throughput",
        &Report {
            bench: "aws_throughput",
            smoke: a.smoke,
            machine,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            seconds: secs,
            concurrency: concurrency as u64,
            rounds,
            frontends: a.frontends,
            worker_slots: WORKER_SLOTS,
            shards: SHARDS,
            record_bytes: RECORD_BYTES,
            get_records_limit: GET_LIMIT,
            ferrokinesis: Ferro {
                version: FERROKINESIS,
                binary: ferro_bin.display().to_string(),
                install_seconds,
                args: ferro_args,
            },
            operations,
            target_ratio: TARGET_RATIO,
            optimized: !cfg!(debug_assertions),
        },
    );
}
