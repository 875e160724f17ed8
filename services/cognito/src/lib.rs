//! Cognito: sign-up, sign-in, token validation and temporary credentials, with
//! every call's access record streamed to Kinesis through a bounded buffer.
//! Its latent bug (handlers block on a backlogged buffer when Kinesis fails) is
//! how the Kinesis outage took Cognito, and the status dashboard, down.

pub mod access_log;
pub mod pool;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cascade_core::kinesis::{KinesisArgs, KinesisProducer, TimeArgs};
use cascade_core::retry::{RetryPolicy, retry_until};
use cascade_core::serve;
use cascade_proto::cognito::cognito_server::CognitoServer;
use tokio_util::sync::CancellationToken;

pub use access_log::{AccessLogBuffer, AccessLogSink, KinesisSink, Mode};
pub use service::{CognitoService, Settings};

/// How start-up retries Kinesis: every 250 ms, giving up after 20 s.
const BOOT_RETRY: RetryPolicy =
    RetryPolicy::fixed(Duration::from_millis(250), Duration::from_secs(20));
/// Shards of the access-log stream when this instance creates it.
const ACCESS_LOG_SHARDS: u32 = 2;

/// A seed user given as `NAME:PASSWORD`.
#[derive(Debug, Clone)]
pub struct SeedUser {
    /// Username.
    pub name: String,
    /// Password.
    pub password: String,
}

fn parse_user(s: &str) -> Result<SeedUser, String> {
    let (name, password) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME:PASSWORD"))?;
    pool::validate_username(name).map_err(|e| e.to_string())?;
    pool::validate_password(password).map_err(|e| e.to_string())?;
    Ok(SeedUser {
        name: name.to_owned(),
        password: password.to_owned(),
    })
}

fn parse_capacity(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of bytes"))?;
    access_log::validate_capacity(n).map_err(|e| e.to_string())
}

fn parse_incident_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of incident seconds (e.g. 3600)"
        )),
    }
}

/// Cognito's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CognitoConfig {
    #[command(flatten)]
    pub kinesis: KinesisArgs,
    #[command(flatten)]
    pub time: TimeArgs,
    /// Instance name, reported in status and written into access records.
    #[arg(long, env = "CASCADE_INSTANCE_ID", default_value = "cognito")]
    pub instance_id: String,
    /// What a handler does when its access record does not fit: "bug" waits
    /// for space (the 2020 latent bug), "fixed" sheds the record and serves.
    #[arg(long, env = "CASCADE_COGNITO_MODE", value_enum, default_value_t = Mode::Bug)]
    pub mode: Mode,
    /// Capacity of the access-log buffer in bytes (4096..=1073741824).
    #[arg(long, env = "CASCADE_COGNITO_ACCESS_LOG_BUFFER_BYTES", default_value_t = 65536, value_parser = parse_capacity)]
    pub access_log_buffer_bytes: usize,
    /// How often the flusher puts buffered records to Kinesis (wall time).
    #[arg(long, env = "CASCADE_COGNITO_FLUSH_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,
    /// Most records per PutRecords call (1..=500).
    #[arg(long, env = "CASCADE_COGNITO_FLUSH_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub flush_batch: u16,
    /// Kinesis stream the access records go to (created at start, 2 shards).
    #[arg(
        long,
        env = "CASCADE_COGNITO_ACCESS_LOG_STREAM",
        default_value = "cognito-access-log"
    )]
    pub access_log_stream: String,
    /// Token and credential lifetime in incident seconds (scaled by --time-scale).
    #[arg(long, env = "CASCADE_COGNITO_TOKEN_TTL", default_value_t = 3600.0, value_parser = parse_incident_secs)]
    pub token_ttl: f64,
    /// A seed user as NAME:PASSWORD; repeatable (the environment variable takes a comma-separated list).
    #[arg(long = "user", value_name = "NAME:PASSWORD", env = "CASCADE_COGNITO_USERS", value_delimiter = ',', default_value = "operator:operator-password", value_parser = parse_user)]
    pub users: Vec<SeedUser>,
    /// Webserver workers: requests served at once; more queue for a worker.
    #[arg(long, env = "CASCADE_COGNITO_MAX_IN_FLIGHT", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,
}

impl CognitoConfig {
    /// The service settings these flags describe.
    pub fn settings(&self) -> Settings {
        Settings {
            name: self.instance_id.clone(),
            mode: self.mode,
            buffer_capacity: self.access_log_buffer_bytes,
            token_ttl: self.time.wall(self.token_ttl),
            max_in_flight: self.max_in_flight as usize,
            users: self
                .users
                .iter()
                .map(|u| (u.name.clone(), u.password.clone()))
                .collect(),
            depends_on: self.kinesis.upstream().into_iter().collect(),
        }
    }
}

/// Runs a Cognito instance on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: CognitoConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = config.settings();
    tracing::info!(
        instance = %settings.name,
        mode = settings.mode.as_str(),
        buffer_bytes = settings.buffer_capacity,
        max_in_flight = settings.max_in_flight,
        token_ttl = ?settings.token_ttl,
        users = settings.users.len(),
        "cognito starting"
    );
    let service = CognitoService::new(settings).context("cognito settings")?;
    let producer = Arc::new(
        KinesisProducer::new(config.kinesis.clone())
            .with_context(|| format!("--kinesis-backend {:?}", config.kinesis.kinesis_backend))?,
    );
    let (routes, health) = serve::base_routes(Arc::new(service.clone()))?;
    let routes = routes.add_service(CognitoServer::new(service.clone()));
    let mut server = tokio::spawn(serve::serve(listener, routes, shutdown.clone()));

    let stream = config.access_log_stream.clone();
    let what = format!(
        "Kinesis: create access-log stream {stream:?} via {}",
        config.kinesis.kinesis_backend
    );
    let ensured = tokio::select! {
        r = retry_until(
            BOOT_RETRY,
            &shutdown,
            || producer.ensure_stream(&stream, ACCESS_LOG_SHARDS),
            |e| tracing::warn!(error = %e, "{what} failed; retrying"),
        ) => r.map_err(|e| anyhow::anyhow!("{what}: {e}")),
        r = &mut server => {
            return r.context("server task")?.and_then(|()| anyhow::bail!("server stopped during start-up"));
        }
    };
    if let Err(e) = ensured {
        shutdown.cancel();
        let _ = server.await;
        return Err(e);
    }
    serve::set_serving(&health, true).await;
    tracing::info!(stream = %stream, "access-log stream ready; serving");

    let flusher = tokio::spawn(access_log::run_flusher(
        service.access_log(),
        KinesisSink { producer, stream },
        config.flush_interval,
        usize::from(config.flush_batch),
        shutdown.clone(),
    ));
    let result = server.await.context("server task")?;
    // The server is down, so shutdown was cancelled; the flusher makes one bounded last attempt.
    shutdown.cancel();
    if tokio::time::timeout(config.flush_interval + Duration::from_secs(2), flusher)
        .await
        .is_err()
    {
        tracing::warn!("access-log flusher did not stop in time");
    }
    result
}
