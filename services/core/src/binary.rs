//! The whole `main` of a service binary, once: parse flags (listen, runtime,
//! log format and the service's own config), set up telemetry, build the
//! fixed-size runtime, take the listener, run until SIGINT/SIGTERM, and map
//! failures to exit codes (64 bad config, 70 no runtime, 1 runtime error).

use std::future::Future;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use tokio_util::sync::CancellationToken;

use crate::listen::ListenArgs;
use crate::runtime::RuntimeArgs;
use crate::telemetry::LogFormat;

/// Flags every service binary has, around its own config `C`.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct ServiceArgs<C: clap::Args> {
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    config: C,
    /// Log format.
    #[arg(long, env = "CASCADE_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
}

/// What a service's `run` gets besides its listener and config.
#[derive(Debug, Clone)]
pub struct Started {
    /// Cancelled on SIGINT or SIGTERM.
    pub shutdown: CancellationToken,
    /// Threads of the process once the runtime was up (main + workers + 1 blocking).
    pub base_threads: u32,
}

/// Runs a service binary named `name` (described by `about` in `--help`).
/// `validate` checks the config before anything starts (exit 64 on error).
pub fn service_main<C, V, F, Fut>(
    name: &'static str,
    about: &'static str,
    validate: V,
    run: F,
) -> ExitCode
where
    C: clap::Args + clap::FromArgMatches,
    V: FnOnce(&C) -> anyhow::Result<()>,
    F: FnOnce(tokio::net::TcpListener, C, Started) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let matches = ServiceArgs::<C>::command()
        .name(name)
        .about(about)
        .get_matches();
    let args = match ServiceArgs::<C>::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    crate::telemetry::init(args.log_format);
    if let Err(e) = validate(&args.config) {
        eprintln!("{name}: {e:#}");
        return ExitCode::from(64);
    }
    let rt = match crate::runtime::fixed_runtime(&args.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(70);
        }
    };
    let base_threads = rt.base_threads;
    let result = rt.runtime.block_on(async {
        let listener = args.listen.listener()?;
        let started = Started {
            shutdown: crate::shutdown::shutdown_signal(),
            base_threads,
        };
        run(listener, args.config, started).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::from(1)
        }
    }
}
