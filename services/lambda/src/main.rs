//! `lambda`: one Lambda invocation host whose metrics agent buffers into the
//! host's memory while CloudWatch is down (the incident's Lambda errors).

use clap::Parser;

/// A Lambda invocation host: Invoke, EventBridge delivery, a metrics agent.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: cascade_core::listen::ListenArgs,
    #[command(flatten)]
    runtime: cascade_core::runtime::RuntimeArgs,
    #[command(flatten)]
    config: lambda::LambdaConfig,
    /// Log format.
    #[arg(long, env = "CASCADE_LOG_FORMAT", value_enum, default_value_t)]
    log_format: cascade_core::telemetry::LogFormat,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    cascade_core::telemetry::init(args.log_format);
    if let Err(e) = args.config.validate() {
        eprintln!("lambda: {e:#}");
        return std::process::ExitCode::from(64);
    }
    let rt = match cascade_core::runtime::fixed_runtime(&args.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lambda: {e:#}");
            return std::process::ExitCode::from(70);
        }
    };
    let result = rt.runtime.block_on(async {
        let listener = args.listen.listener()?;
        let shutdown = cascade_core::shutdown::shutdown_signal();
        lambda::run(listener, args.config, shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lambda: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
