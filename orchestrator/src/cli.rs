//! The `cascade` command line: its flags (every doc comment is its
//! `--help`) and the dispatch to the supervisor, the scenario engine or a
//! client command, with sysexits-style exit codes (64 for bad input).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{client, engine, faults, limits, scenario, supervisor};

/// Exit code for bad input (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

/// A live reproduction of the 2020-11-25 Kinesis outage: a front-end fleet
/// with one OS thread per peer, under a kernel-enforced thread limit.
#[derive(Debug, Parser)]
#[command(name = "cascade", version, about, long_about = None)]
pub struct Cli {
    /// Log format of the supervisor's own logs (stderr).
    #[arg(
        long,
        global = true,
        env = "CASCADE_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: cascade_core::telemetry::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `cascade` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the back end and a front-end fleet (foreground live view unless --detach).
    Up(supervisor::UpArgs),
    /// Show the fleet: threads per front-end against the limit, shard-map states.
    Status {
        /// Print the status document as JSON (stable contract, see design.md).
        #[arg(long)]
        json: bool,
    },
    /// Add N front-ends to the fleet (existing members learn of them after the learning delay).
    AddCapacity {
        /// Front-ends to add.
        #[arg(allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=512))]
        count: u32,
    },
    /// Remove the N newest front-ends.
    RemoveCapacity {
        /// Front-ends to remove.
        #[arg(allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=512))]
        count: u32,
    },
    /// Restart every front-end of the main fleet as a deployment would: K
    /// at a time, each batch health-gated (the next starts only once the
    /// previous one's shard maps are ready), D between batches.
    RestartFrontends(client::RestartArgs),
    /// Poke the data plane like `aws kinesis`.
    #[command(subcommand)]
    Kinesis(client::KinesisCmd),
    /// Make one representative customer call to a service, N times, and report.
    Probe(client::ProbeArgs),
    /// Post to, or list, the Service Health Dashboard.
    #[command(subcommand)]
    Shd(client::ShdCmd),
    /// Inject a fault: gRPC (latency, error, hang, blackhole), network
    /// (partition), process (kill, pause, restart) or resource (thread-limit).
    Inject(faults::FaultSpec),
    /// List the faults in force and the time they have left.
    Faults,
    /// Revert one fault by id, or every fault.
    Clear {
        /// The fault id (from `cascade faults`); omit to clear all.
        id: Option<String>,
    },
    /// Run a scenario (name in scenarios/ or a .toml path): journal, report.json, exit 0 only if every expectation held.
    Run(engine::RunArgs),
    /// Run a scenario once per variant (baseline and remediations) and print
    /// the blast-radius table; writes compare.json and each variant's report.
    Compare(engine::CompareArgs),
    /// Check a scenario file (a name in scenarios/ or a path) and print its
    /// schedule on both clocks; exit 64 with file:line:column on errors.
    CheckScenario {
        /// Scenario name (e.g. nov-25-2020) or path to a .toml file.
        scenario: String,
    },
    /// Change a live setting (remediation toggle, buffer size) of a service or instance.
    Configure {
        /// A service name (every instance) or an instance name, e.g. cognito or cognito-0.
        target: String,
        /// The setting, e.g. mode, local_buffer, agent_buffer_max.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Stop every process of the running fleet and remove what it created.
    Down,
    /// Internal: exit 0 only if grpc.health.v1 at ADDR answers SERVING (the
    /// compose health check; one thread, so it costs a pids-limited front-end one task).
    #[command(name = "__health", hide = true)]
    Health {
        /// host:port to check.
        addr: String,
    },
    /// Internal: wait for the supervisor to exit, then remove its cgroups.
    #[command(name = "__reap", hide = true)]
    Reap {
        /// The run's cgroup directory.
        cgroup: std::path::PathBuf,
    },
}

/// Runs one `cascade` command; the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    if let Command::Health { addr } = &cli.command {
        return health(addr);
    }
    cascade_core::telemetry::init(cli.log_format);
    match cli.command {
        Command::CheckScenario { scenario } => match scenario::load(&scenario) {
            Ok(l) => {
                println!("{} is valid\n{}", l.path.display(), l.scenario.schedule());
                ExitCode::SUCCESS
            }
            Err(e) => usage(e),
        },
        Command::Reap { cgroup } => report(limits::run_reaper(cgroup)),
        Command::Up(args) if args.detach && !args.daemon => client::detach(&args),
        command => {
            // A run keeps its fleet in its own home inside the report
            // directory; that is set before any thread exists.
            let plan = match run_plan(&command) {
                Ok(p) => p,
                Err(code) => return code,
            };
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(dispatch(command, plan)),
                Err(e) => report(Err(e.into())),
            }
        }
    }
}

/// What `run` and `compare` play, loaded and checked before anything starts.
fn run_plan(command: &Command) -> Result<Option<(scenario::Loaded, PathBuf)>, ExitCode> {
    let (name, report, suffix, scale) = match command {
        Command::Run(a) => (&a.scenario, a.report.as_ref(), "", a.time_scale),
        Command::Compare(a) => {
            if let Err(e) = engine::check_variants(&a.variants) {
                eprintln!("cascade compare: {e}");
                return Err(ExitCode::from(EX_USAGE));
            }
            (&a.scenario, a.report.as_ref(), "-compare", a.time_scale)
        }
        _ => return Ok(None),
    };
    let loaded = scenario::load(name).map_err(usage)?;
    let scale = scale.unwrap_or(loaded.scenario.topology.time_scale);
    if let Err(e) = loaded.scenario.check_time_scale(scale) {
        eprintln!("cascade: {name}: {e}");
        return Err(ExitCode::from(EX_USAGE));
    }
    let dir = engine::report_dir(
        report,
        &format!("{}{suffix}", loaded.scenario.scenario.name),
    );
    Ok(Some((loaded, dir)))
}

async fn dispatch(command: Command, plan: Option<(scenario::Loaded, PathBuf)>) -> ExitCode {
    let shutdown = cascade_core::shutdown::shutdown_signal;
    match (command, plan) {
        (Command::Up(args), _) => up(args).await,
        (Command::Status { json }, _) => report(client::status(json).await),
        (Command::AddCapacity { count }, _) => report(client::add_capacity(count).await),
        (Command::RemoveCapacity { count }, _) => report(client::remove_capacity(count).await),
        (Command::RestartFrontends(args), _) => report(client::restart(args).await),
        (Command::Kinesis(cmd), _) => report(client::kinesis(cmd).await),
        (Command::Probe(args), _) => report(client::probe(args).await),
        (Command::Inject(spec), _) => report(client::inject(spec).await),
        (Command::Faults, _) => report(client::faults().await),
        (Command::Clear { id }, _) => report(client::clear(id).await),
        (Command::Shd(cmd), _) => report(client::shd(cmd).await),
        (Command::Configure { target, key, value }, _) => {
            report(client::configure(target, key, value).await)
        }
        (Command::Down, _) => report(client::down().await),
        (Command::Run(args), Some((loaded, dir))) => {
            match engine::run(args, loaded, dir, shutdown()).await {
                Ok(r) => ExitCode::from(r.verdict.exit_code()),
                Err(e) => report(Err(e)),
            }
        }
        (Command::Compare(args), Some((loaded, dir))) => {
            match engine::compare(args, loaded, dir, shutdown()).await {
                Ok(code) => ExitCode::from(code),
                Err(e) => report(Err(e)),
            }
        }
        _ => ExitCode::FAILURE,
    }
}

/// `cascade up` in the foreground (or as the detached supervisor).
async fn up(args: supervisor::UpArgs) -> ExitCode {
    if let Err(e) = args.validate() {
        eprintln!("cascade up: {e:#}");
        return ExitCode::from(EX_USAGE);
    }
    let at = args
        .docker
        .control_listen
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let control = match std::net::TcpListener::bind(at) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cascade up: bind the control port {at}: {e}");
            return ExitCode::FAILURE;
        }
    };
    report(supervisor::run(args, control, cascade_core::shutdown::shutdown_signal()).await)
}

fn usage(e: anyhow::Error) -> ExitCode {
    eprintln!("cascade: {e:#}");
    ExitCode::from(EX_USAGE)
}

/// `cascade __health ADDR`: a current-thread runtime, so the check adds a
/// single task to the container it runs in.
fn health(addr: &str) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    if rt.block_on(cascade_core::clients::is_serving(addr)) {
        ExitCode::SUCCESS
    } else {
        eprintln!("cascade __health: {addr} is not SERVING");
        ExitCode::FAILURE
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(client::UsageError(msg)) = e.downcast_ref::<client::UsageError>() {
                eprintln!("cascade: {msg}");
                return ExitCode::from(EX_USAGE);
            }
            eprintln!("cascade: {e:#}");
            ExitCode::FAILURE
        }
    }
}
