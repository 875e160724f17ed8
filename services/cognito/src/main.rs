//! `cognito`: user pools, identity pools and the access-log buffer to Kinesis.

use clap::Parser;

/// Cognito: sign-in, tokens and temporary credentials, with access records
/// streamed to Kinesis through a bounded buffer.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: cascade_core::listen::ListenArgs,
    #[command(flatten)]
    runtime: cascade_core::runtime::RuntimeArgs,
    #[command(flatten)]
    config: cognito::CognitoConfig,
    /// Log format.
    #[arg(long, env = "CASCADE_LOG_FORMAT", value_enum, default_value_t)]
    log_format: cascade_core::telemetry::LogFormat,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    cascade_core::telemetry::init(args.log_format);
    let rt = match cascade_core::runtime::fixed_runtime(&args.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cognito: {e:#}");
            return std::process::ExitCode::from(70);
        }
    };
    let result = rt.runtime.block_on(async {
        let listener = args.listen.listener()?;
        let shutdown = cascade_core::shutdown::shutdown_signal();
        cognito::run(listener, args.config, shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cognito: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
