//! The `cascade` commands that talk to a running supervisor (status,
//! capacity, restarts, down), the detached start, and the `kinesis` data-plane
//! poke, which talks straight to a front-end like `aws kinesis` does.

use std::os::unix::process::CommandExt as _;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Whether progress lines of reused client code are silenced (a scenario
/// run journals its own lines instead).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Silences (or restores) the progress lines of `down`, `up --detach` and `shd post`.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// `println!` unless [`set_quiet`] was called.
macro_rules! say {
    ($($t:tt)*) => {
        if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
            println!($($t)*);
        }
    };
}

use anyhow::{Context, bail};
use cascade_proto::kinesis as pb;
use cascade_proto::kinesis::kinesis_client::KinesisClient;
use cascade_proto::supervisor as sv;
use cascade_proto::supervisor::supervisor_client::SupervisorClient;
use clap::ValueEnum as _;
use tonic::transport::Channel;

use crate::home;
use crate::status::Status;
use crate::supervisor::UpArgs;

/// Bad input found after flag parsing (exit code 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn supervisor() -> anyhow::Result<SupervisorClient<Channel>> {
    let sup = home::require()?;
    let ch = tokio::time::timeout(
        Duration::from_secs(10),
        cascade_core::clients::connect(&sup.control_addr),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 10 s"))
    .and_then(|r| r)
    .with_context(|| format!("cannot reach the supervisor at {}", sup.control_addr))?;
    Ok(SupervisorClient::new(ch))
}

fn rpc_error(what: &str, s: tonic::Status) -> anyhow::Error {
    if s.code() == tonic::Code::InvalidArgument {
        return UsageError(format!("{what}: {}", s.message())).into();
    }
    anyhow::anyhow!("{what}: {:?}: {}", s.code(), s.message())
}

/// Fetches the status document.
pub async fn fetch_status() -> anyhow::Result<Status> {
    let mut c = supervisor().await?;
    let json = tokio::time::timeout(Duration::from_secs(10), c.status(sv::StatusRequest {}))
        .await
        .map_err(|_| anyhow::anyhow!("status: the supervisor did not answer within 10 s"))?
        .map_err(|s| rpc_error("status", s))?
        .into_inner()
        .json;
    serde_json::from_str(&json).context("parse the supervisor's status")
}

/// `cascade status [--json]`.
pub async fn status(json: bool) -> anyhow::Result<()> {
    let st = fetch_status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", st.render());
    }
    Ok(())
}

/// `cascade add-capacity N`.
pub async fn add_capacity(count: u32) -> anyhow::Result<()> {
    println!("adding {count} front-ends ...");
    let r = supervisor()
        .await?
        .add_capacity(sv::CapacityRequest { count })
        .await
        .map_err(|s| rpc_error("add-capacity", s))?
        .into_inner();
    println!(
        "added {} (fleet is now {} front-ends)",
        r.instances.join(", "),
        r.fleet_size
    );
    Ok(())
}

/// `cascade remove-capacity N`.
pub async fn remove_capacity(count: u32) -> anyhow::Result<()> {
    println!("removing {count} front-ends ...");
    let r = supervisor()
        .await?
        .remove_capacity(sv::CapacityRequest { count })
        .await
        .map_err(|s| rpc_error("remove-capacity", s))?
        .into_inner();
    println!(
        "removed {} (fleet is now {} front-ends)",
        r.instances.join(", "),
        r.fleet_size
    );
    Ok(())
}

/// `cascade restart-frontends`.
pub async fn restart(batch: u32, interval: Duration, grace: Duration) -> anyhow::Result<()> {
    let mut stream = supervisor()
        .await?
        .restart_frontends(sv::RestartRequest {
            batch,
            interval_ms: interval.as_millis() as u64,
            grace_ms: grace.as_millis() as u64,
        })
        .await
        .map_err(|s| rpc_error("restart-frontends", s))?
        .into_inner();
    while let Some(p) = stream
        .message()
        .await
        .map_err(|s| rpc_error("restart-frontends", s))?
    {
        println!("{}", p.detail);
    }
    Ok(())
}

/// `cascade down`: asks the supervisor to stop and waits until it has.
pub async fn down() -> anyhow::Result<()> {
    let Some(sup) = home::read(&home::home())? else {
        say!(
            "nothing is running (no supervisor in {})",
            home::home().display()
        );
        return Ok(());
    };
    if sup.pid == 0 {
        bail!(
            "the fleet at ${}={} is not a local process (docker compose?); stop it with `docker compose down`",
            home::CONTROL_ENV,
            sup.control_addr
        );
    }
    let mut client = supervisor().await?;
    client
        .shutdown(sv::ShutdownRequest {})
        .await
        .map_err(|s| rpc_error("down", s))?;
    let until = Instant::now() + Duration::from_secs(60);
    while home::pid_alive(sup.pid) {
        if Instant::now() > until {
            bail!("the supervisor (pid {}) has not exited after 60 s", sup.pid);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say!("stopped; logs kept in {}", sup.run_dir.display());
    Ok(())
}

/// `cascade up --detach`: starts the supervisor in its own session and waits
/// until it reports the fleet up (or failed).
pub fn detach(args: &UpArgs) -> ExitCode {
    if let Err(e) =
        crate::supervisor::check_host_budget(args.frontends, args.thread_limit, args.workers)
            .and_then(|()| crate::topology::validate(&args.topology))
    {
        eprintln!("cascade up: {e:#}");
        return ExitCode::from(64);
    }
    match detach_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cascade up: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn detach_inner(args: &UpArgs) -> anyhow::Result<()> {
    let home_dir = home::home();
    if let Some(sup) = home::read(&home_dir)? {
        bail!(
            "a fleet is already running (supervisor pid {}); stop it with `cascade down` first",
            sup.pid
        );
    }
    std::fs::create_dir_all(&home_dir)?;
    let log_path = home_dir.join("supervisor.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("create {}", log_path.display()))?;
    let name = |v: Option<clap::builder::PossibleValue>| {
        v.map(|p| p.get_name().to_owned()).unwrap_or_default()
    };
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("up")
        .args(["--frontends", &args.frontends.to_string()])
        .args(["--thread-limit", &args.thread_limit.to_string()])
        .args(["--time-scale", &args.time_scale.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--workers", &args.workers.to_string()])
        .args(["--enforcement", &name(args.enforcement.to_possible_value())])
        .args(["--bootstrap", &name(args.bootstrap.to_possible_value())])
        .args(["--learning-jitter", &args.learning_jitter.to_string()])
        .args(args.topology.to_args())
        .args(
            args.exit_with
                .map(|p| vec!["--exit-with".to_owned(), p.to_string()])
                .unwrap_or_default(),
        )
        .arg("--daemon")
        .env("CASCADE_HOME", &home_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start the supervisor")?;
    let pid = child.id();
    say!(
        "cascade: supervisor pid {pid} starting (log: {})",
        log_path.display()
    );
    let until = Instant::now()
        + Duration::from_secs(60)
        + Duration::from_millis(200 * u64::from(args.frontends));
    let mut relayed = 0;
    let started = Instant::now();
    loop {
        // Relay the supervisor's progress lines (not its log records) as they appear.
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        for line in text.lines().skip(relayed) {
            if line.starts_with("cascade:") && !line.contains("fleet up;") {
                say!("{line}");
            }
        }
        relayed = text.lines().count();
        if let Some(sup) = home::read(&home_dir)?
            && sup.pid == pid
        {
            say!(
                "cascade: fleet up (run {}); `cascade status` to inspect, `cascade down` to stop",
                sup.run_dir.display()
            );
            return Ok(());
        }
        if let Some(code) = child.try_wait()? {
            bail!(
                "the supervisor exited ({code}) before the fleet was up:\n{}",
                crate::launcher::log_tail(&log_path, 20)
            );
        }
        if Instant::now() > until {
            let _ = child.kill();
            bail!(
                "the fleet was not up after {:?}; supervisor killed. Last log lines:\n{}",
                started.elapsed(),
                crate::launcher::log_tail(&log_path, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Which front-end to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// Front-end to call: host:port or an instance name (kinesis-frontend-3).
    /// Default: the first front-end of the running fleet.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Deadline of the call.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `cascade kinesis ...`, flags as `aws kinesis`.
#[derive(Debug, clap::Subcommand)]
pub enum KinesisCmd {
    /// Create a stream with K shards.
    CreateStream {
        /// Stream name.
        #[arg(long)]
        stream_name: String,
        /// Number of shards.
        #[arg(long, default_value_t = 1)]
        shard_count: u32,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Put one record (the data is sent as the given UTF-8 bytes).
    PutRecord {
        /// Stream name.
        #[arg(long)]
        stream_name: String,
        /// Partition key (its MD5 picks the shard).
        #[arg(long)]
        partition_key: String,
        /// Record payload.
        #[arg(long)]
        data: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Read a shard from TRIM_HORIZON.
    GetRecords {
        /// Stream name.
        #[arg(long)]
        stream_name: String,
        /// Shard id, e.g. shardId-000000000000.
        #[arg(long)]
        shard_id: String,
        /// Most records to return.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// List a stream's shards and their owners.
    ListShards {
        /// Stream name.
        #[arg(long)]
        stream_name: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

async fn kinesis_client(e: &EndpointArgs) -> anyhow::Result<KinesisClient<Channel>> {
    let addr = match &e.endpoint {
        Some(a) if a.contains(':') => a.clone(),
        Some(name) => {
            let st = fetch_status().await?;
            st.frontends
                .iter()
                .find(|f| &f.name == name || &f.id == name)
                .map(|f| f.addr.clone())
                .ok_or_else(|| {
                    UsageError(format!(
                        "--endpoint {name}: no such front-end; running: {}",
                        st.frontends
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?
        }
        None => {
            let st = fetch_status().await?;
            st.frontends
                .first()
                .map(|f| f.addr.clone())
                .context("the fleet has no front-ends")?
        }
    };
    let ch = cascade_core::clients::endpoint(&addr)
        .map_err(|err| UsageError(format!("--endpoint {addr}: {err}")))?
        .timeout(e.timeout)
        .connect()
        .await
        .with_context(|| format!("cannot connect to front-end {addr}"))?;
    Ok(KinesisClient::new(ch))
}

/// Runs one `cascade kinesis` command and prints the answer as JSON.
pub async fn kinesis(cmd: KinesisCmd) -> anyhow::Result<()> {
    let out = match cmd {
        KinesisCmd::CreateStream {
            stream_name,
            shard_count,
            endpoint,
        } => {
            let r = kinesis_client(&endpoint)
                .await?
                .create_stream(pb::CreateStreamRequest {
                    stream_name,
                    shard_count,
                })
                .await
                .map_err(|s| rpc_error("create-stream", s))?
                .into_inner();
            serde_json::json!({"StreamName": r.stream_name, "ShardCount": r.shards.len()})
        }
        KinesisCmd::PutRecord {
            stream_name,
            partition_key,
            data,
            endpoint,
        } => {
            let r = kinesis_client(&endpoint)
                .await?
                .put_record(pb::PutRecordRequest {
                    stream_name,
                    partition_key,
                    data: data.into_bytes(),
                    explicit_hash_key: String::new(),
                })
                .await
                .map_err(|s| rpc_error("put-record", s))?
                .into_inner();
            serde_json::json!({"ShardId": r.shard_id, "SequenceNumber": r.sequence_number})
        }
        KinesisCmd::GetRecords {
            stream_name,
            shard_id,
            limit,
            endpoint,
        } => {
            let mut c = kinesis_client(&endpoint).await?;
            let it = c
                .get_shard_iterator(pb::GetShardIteratorRequest {
                    stream_name,
                    shard_id,
                    shard_iterator_type: pb::ShardIteratorType::TrimHorizon as i32,
                    starting_sequence_number: String::new(),
                })
                .await
                .map_err(|s| rpc_error("get-records", s))?
                .into_inner()
                .shard_iterator;
            let r = c
                .get_records(pb::GetRecordsRequest {
                    shard_iterator: it,
                    limit,
                })
                .await
                .map_err(|s| rpc_error("get-records", s))?
                .into_inner();
            let records: Vec<_> = r
                .records
                .iter()
                .map(|x| {
                    serde_json::json!({
                        "SequenceNumber": x.sequence_number,
                        "PartitionKey": x.partition_key,
                        "Data": String::from_utf8_lossy(&x.data),
                        "ApproximateArrivalTimestamp": x.approximate_arrival_ms,
                    })
                })
                .collect();
            serde_json::json!({"Records": records, "NextShardIterator": r.next_shard_iterator, "MillisBehindLatest": r.millis_behind_latest})
        }
        KinesisCmd::ListShards {
            stream_name,
            endpoint,
        } => {
            let r = kinesis_client(&endpoint)
                .await?
                .list_shards(pb::ListShardsRequest { stream_name })
                .await
                .map_err(|s| rpc_error("list-shards", s))?
                .into_inner();
            let shards: Vec<_> = r
                .shards
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "ShardId": s.shard_id,
                        "HashKeyRange": {"StartingHashKey": s.starting_hash_key, "EndingHashKey": s.ending_hash_key},
                        "Owner": s.owner,
                    })
                })
                .collect();
            serde_json::json!({"Shards": shards})
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `cascade probe` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Service to call: kinesis, cognito, cloudwatch, lambda, eventbridge or ecs.
    pub service: String,
    /// Calls to make, one after the other.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// Deadline of each call.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Print `{"service","ok","failed","p50_ms","p99_ms","errors":{..}}`.
    #[arg(long)]
    pub json: bool,
}

/// `cascade probe <service>`: reports; does not judge (exit 0 even when calls fail).
pub async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let svc = crate::topology::Service::parse(&args.service).ok_or_else(|| {
        UsageError(format!(
            "unknown service {:?}; valid: {}",
            args.service,
            crate::topology::Service::ALL.map(|s| s.name()).join(", ")
        ))
    })?;
    let st = fetch_status().await?;
    let backend = st
        .services
        .iter()
        .find(|s| s.name == "kinesis-backend")
        .map(|s| s.addr.clone())
        .unwrap_or_default();
    let cellular = st.frontends.iter().any(|f| f.fleet.starts_with("cell-"));
    let mut targets = crate::traffic::Targets {
        backend,
        services: Default::default(),
        kinesis_fleet: if cellular { "cell-*" } else { "" }.to_owned(),
    };
    if svc != crate::topology::Service::Kinesis {
        let entry = st
            .services
            .iter()
            .find(|s| s.name == svc.name())
            .ok_or_else(|| UsageError(format!("{} is not running in this fleet", svc.name())))?;
        targets.services.insert(
            svc,
            entry.instances.iter().map(|i| i.addr.clone()).collect(),
        );
    }
    let caller = crate::traffic::Caller::new(&targets, args.deadline)?;
    let mut bucket = crate::traffic::Bucket::default();
    for n in 0..u64::from(args.count) {
        let t0 = Instant::now();
        let r = caller.call(svc, n).await;
        bucket
            .latencies_ms
            .push(t0.elapsed().as_secs_f64() * 1000.0);
        match r {
            Ok(()) => bucket.ok += 1,
            Err(s) => {
                bucket.failed += 1;
                *bucket
                    .errors
                    .entry(crate::traffic::code_name(s.code()))
                    .or_default() += 1;
            }
        }
    }
    let sum = crate::traffic::Summary::of(std::iter::once(&bucket));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "service": svc.name(), "ok": sum.ok, "failed": sum.failed,
                "p50_ms": sum.p50_ms, "p99_ms": sum.p99_ms, "errors": sum.errors,
            })
        );
    } else {
        println!(
            "{}: {} ok, {} failed, p50 {:.1} ms, p99 {:.1} ms{}",
            svc.name(),
            sum.ok,
            sum.failed,
            sum.p50_ms,
            sum.p99_ms,
            if sum.errors.is_empty() {
                String::new()
            } else {
                format!(", errors {:?}", sum.errors)
            }
        );
    }
    Ok(())
}

/// `cascade shd ...`
#[derive(Debug, clap::Subcommand)]
pub enum ShdCmd {
    /// Post a status update: signs in through Cognito (the primary tool), or
    /// uses the backup tool with minimal dependencies.
    Post {
        /// The update to post.
        message: String,
        /// Use the backup tool (no Cognito sign-in).
        #[arg(long)]
        backup: bool,
        /// Operator user for the Cognito sign-in.
        #[arg(long, default_value = "operator")]
        user: String,
        /// Operator password for the Cognito sign-in.
        #[arg(
            long,
            default_value = "operator-password",
            env = "CASCADE_SHD_PASSWORD"
        )]
        password: String,
    },
    /// List the posts.
    List,
}

/// Runs a `cascade shd` command.
pub async fn shd(cmd: ShdCmd) -> anyhow::Result<()> {
    match cmd {
        ShdCmd::Post {
            message,
            backup,
            user,
            password,
        } => {
            let token = if backup {
                String::new()
            } else {
                let st = fetch_status().await?;
                let cognito = st
                    .services
                    .iter()
                    .find(|s| s.name == "cognito")
                    .map(|s| s.addr.clone())
                    .filter(|a| !a.is_empty())
                    .context("Cognito is not running; the primary SHD tool cannot sign in (use --backup)")?;
                let ch = cascade_core::clients::endpoint(&cognito)?
                    .timeout(Duration::from_secs(2))
                    .connect_lazy();
                cascade_proto::cognito::cognito_client::CognitoClient::new(ch)
                    .sign_in(cascade_proto::cognito::SignInRequest {
                        username: user,
                        password,
                    })
                    .await
                    .map_err(|s| {
                        // tonic reports its own deadline as CANCELLED("Timeout expired").
                        let why = if s.code() == tonic::Code::Cancelled && s.message().contains("Timeout expired") {
                            "DeadlineExceeded: no answer within 2 s".to_owned()
                        } else {
                            format!("{:?}: {}", s.code(), s.message())
                        };
                        anyhow::anyhow!(
                            "primary SHD tool: Cognito sign-in failed: {why} (the backup tool, `cascade shd post --backup`, does not need Cognito)"
                        )
                    })?
                    .into_inner()
                    .token
            };
            let post = supervisor()
                .await?
                .shd_post(sv::ShdPostRequest {
                    message,
                    token,
                    backup,
                })
                .await
                .map_err(|s| rpc_error("shd post", s))?
                .into_inner()
                .post
                .context("no post returned")?;
            say!("posted via the {} tool: {}", post.path, post.message);
        }
        ShdCmd::List => {
            let posts = supervisor()
                .await?
                .shd_list(sv::ShdListRequest {})
                .await
                .map_err(|s| rpc_error("shd list", s))?
                .into_inner()
                .posts;
            if posts.is_empty() {
                println!("no posts yet");
            }
            for p in posts {
                println!("{}  [{}] {}: {}", p.at_ms, p.path, p.operator, p.message);
            }
        }
    }
    Ok(())
}

/// `cascade configure TARGET KEY VALUE`.
pub async fn configure(target: String, key: String, value: String) -> anyhow::Result<()> {
    let applied = supervisor()
        .await?
        .configure(sv::ConfigureRequest { target, key, value })
        .await
        .map_err(|s| rpc_error("configure", s))?
        .into_inner()
        .applied;
    for (inst, v) in applied {
        println!("{inst}: {v}");
    }
    Ok(())
}

/// `cascade inject ...`: validates locally (nothing is sent on bad input).
pub async fn inject(spec: crate::faults::FaultSpec) -> anyhow::Result<()> {
    spec.validate().map_err(|e| UsageError(format!("{e:#}")))?;
    let f = supervisor()
        .await?
        .inject_fault(sv::InjectFaultRequest {
            spec_json: serde_json::to_string(&spec)?,
        })
        .await
        .map_err(|s| rpc_error("inject", s))?
        .into_inner();
    let until = if f.expires_ms > 0 {
        format!(
            " for {}",
            humantime::format_duration(Duration::from_millis(
                (f.expires_ms - f.started_ms).max(0) as u64
            ))
        )
    } else {
        " until cleared".to_owned()
    };
    println!("{} {} on {}{until}", f.id, f.summary, f.targets.join(", "));
    Ok(())
}

/// `cascade faults`.
pub async fn faults() -> anyhow::Result<()> {
    let faults = supervisor()
        .await?
        .list_faults(sv::ListFaultsRequest {})
        .await
        .map_err(|s| rpc_error("faults", s))?
        .into_inner()
        .faults;
    if faults.is_empty() {
        println!("no active faults");
    }
    let now = cascade_core::now_ms();
    for f in faults {
        let left = if f.expires_ms > 0 {
            format!("{:.1} s left", (f.expires_ms - now).max(0) as f64 / 1000.0)
        } else {
            "until cleared".to_owned()
        };
        println!(
            "{:<6} {:<50} {:<16} targets: {}",
            f.id,
            f.summary,
            left,
            f.targets.join(", ")
        );
    }
    Ok(())
}

/// `cascade clear [ID]`.
pub async fn clear(id: Option<String>) -> anyhow::Result<()> {
    let cleared = supervisor()
        .await?
        .clear_faults(sv::ClearFaultsRequest {
            id: id.unwrap_or_default(),
        })
        .await
        .map_err(|s| rpc_error("clear", s))?
        .into_inner()
        .cleared;
    if cleared.is_empty() {
        println!("no active faults");
    } else {
        println!("reverted {}", cleared.join(", "));
    }
    Ok(())
}
