//! Lambda: one invocation host. `Invoke` (and EventBridge's `Deliver`) run
//! built-in functions whose memory comes from the same modelled host budget
//! as the local metrics agent's buffer; the agent flushes to CloudWatch, so a
//! CloudWatch outage (Kinesis, 2020-11-25) turns into memory contention and
//! RESOURCE_EXHAUSTED invocations, with no check for "the outage" anywhere.
//! How late EventBridge's deliveries arrive is measured as evidence too.

pub mod agent;
pub mod events;
pub mod functions;
pub mod host;
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cascade_core::deps::Upstream;
use cascade_core::kinesis::TimeArgs;
use cascade_core::retry::{RetryError, RetryPolicy, retry_until};
use cascade_core::{ServiceError, clients, serve};
use cascade_proto::eventbridge::event_target_server::{EventTarget, EventTargetServer};
use cascade_proto::eventbridge::{DeliverResponse, Event};
use cascade_proto::lambda::lambda_server::{Lambda, LambdaServer};
use cascade_proto::lambda::{InvokeRequest, InvokeResponse};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::agent::{CloudWatchSink, MetricsAgent, MetricsSink};
use crate::host::InvocationHost;
use crate::memory::MemoryBudget;

/// How long start-up waits for CloudWatch to answer before giving up.
pub const DEPENDENCY_WAIT: Duration = Duration::from_secs(20);

/// Lambda host settings. Byte sizes are plain integers, in bytes.
#[derive(Debug, Clone, clap::Args)]
pub struct LambdaConfig {
    /// CloudWatch address (host:port) the metrics agent flushes to.
    #[arg(long, env = "CASCADE_CLOUDWATCH")]
    pub cloudwatch: String,
    /// Size of the modelled invocation-host memory, in bytes, shared by
    /// running invocations and the metrics agent's buffer (default 16 MiB).
    #[arg(long, env = "CASCADE_MEMORY_BUDGET", default_value_t = 16 * 1024 * 1024)]
    pub memory_budget: u64,
    /// Bytes each invocation reserves from the budget, and really allocates,
    /// while it runs (default 2 MiB).
    #[arg(long, env = "CASCADE_INVOCATION_MEMORY", default_value_t = 2 * 1024 * 1024)]
    pub invocation_memory: u64,
    /// Bytes of the log/report record each invocation hands the metrics agent.
    #[arg(long, env = "CASCADE_LOG_BYTES_PER_INVOCATION", default_value_t = 4096)]
    pub log_bytes_per_invocation: usize,
    /// Remediation: bound the metrics agent's buffer to this many bytes,
    /// dropping the oldest entries when full; "unbounded" (default) is 2020's
    /// behaviour. Live: Control.Configure key `agent_buffer_max`.
    #[arg(long, env = "CASCADE_AGENT_BUFFER_MAX", default_value = "unbounded", value_parser = host::parse_buffer_max)]
    pub agent_buffer_max: host::AgentBufferMax,
    /// How often the metrics agent flushes its buffer to CloudWatch.
    #[arg(long, env = "CASCADE_AGENT_FLUSH_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub agent_flush_interval: Duration,
    /// The incident clock (accepted for uniformity; Lambda's timings are wall time).
    #[command(flatten)]
    pub time: TimeArgs,
}

impl LambdaConfig {
    /// Rejects settings that make no sense together.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.invocation_memory > self.memory_budget {
            anyhow::bail!(
                "--invocation-memory {} is larger than --memory-budget {}: no invocation could ever run",
                self.invocation_memory,
                self.memory_budget
            );
        }
        if usize::try_from(self.invocation_memory).is_err() {
            anyhow::bail!(
                "--invocation-memory {} does not fit this host's address space",
                self.invocation_memory
            );
        }
        if self.agent_flush_interval.is_zero() {
            anyhow::bail!("--agent-flush-interval must be more than 0");
        }
        Ok(())
    }

    /// The upstreams whose failure can impair this host: CloudWatch, which
    /// the metrics agent's client calls (`--cloudwatch`), and EventBridge,
    /// whose deliveries to the `EventTarget` API this host always serves
    /// drive the event-driven invocations.
    pub fn depends_on(&self) -> Vec<Upstream> {
        let cloudwatch = (!self.cloudwatch.trim().is_empty()).then_some(Upstream::CloudWatch);
        cloudwatch
            .into_iter()
            .chain([Upstream::EventBridge])
            .collect()
    }
}

/// The Lambda API over an invocation host.
#[derive(Debug, Clone)]
pub struct LambdaApi(pub Arc<InvocationHost>);

#[tonic::async_trait]
impl Lambda for LambdaApi {
    async fn invoke(
        &self,
        req: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let r = req.into_inner();
        let (payload, duration) = self.0.invoke(&r.function_name, r.payload, r.rounds).await?;
        Ok(Response::new(InvokeResponse {
            payload,
            duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
        }))
    }
}

#[tonic::async_trait]
impl EventTarget for LambdaApi {
    /// EventBridge targets Lambda: the event's detail runs through `echo`,
    /// under the same memory rules as Invoke. How late it arrives after its
    /// put is measured first; a refusal is remembered, so deliveries it may
    /// have held up are not counted as EventBridge's lateness.
    async fn deliver(&self, req: Request<Event>) -> Result<Response<DeliverResponse>, Status> {
        let event = req.into_inner();
        let events = self.0.events();
        events.arrived(event.put_at_ms, cascade_core::now_ms());
        self.0
            .invoke("echo", event.detail.into_bytes(), 0)
            .await
            .inspect_err(|_| events.refused(cascade_core::now_ms()))
            .map_err(|e| match e {
                // Name the field as EventBridge sent it.
                ServiceError::InvalidArgument(m) => {
                    ServiceError::invalid(format!("detail: {}", m.trim_start_matches("payload: ")))
                }
                other => other,
            })?;
        Ok(Response::new(DeliverResponse {}))
    }
}

/// Waits until CloudWatch answers a health check (any status: it is
/// reachable), checking every 250 ms; `Ok` too if shutdown comes first.
async fn wait_for_cloudwatch(
    addr: &str,
    within: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = clients::lazy_channel(addr, Duration::from_secs(1))
        .with_context(|| format!("--cloudwatch {addr:?}"))?;
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = || {
        let mut health = health.clone();
        async move {
            let check = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            match tokio::time::timeout(Duration::from_secs(1), health.check(check)).await {
                Ok(Ok(r)) => Ok(r.get_ref().status),
                Ok(Err(s)) => Err(s.to_string()),
                Err(_) => Err("health check timed out".to_owned()),
            }
        }
    };
    let policy = RetryPolicy::fixed(Duration::from_millis(250), within);
    match retry_until(policy, shutdown, check, |_| {}).await {
        Ok(status) => {
            tracing::info!(addr, status, "CloudWatch answered");
            Ok(())
        }
        Err(RetryError::Cancelled { .. }) => Ok(()),
        Err(RetryError::DeadlinePassed { last, .. }) => anyhow::bail!(
            "dependency CloudWatch (--cloudwatch {addr}) did not answer a health check within {within:?}: {last}"
        ),
    }
}

/// Serves Lambda on `listener` until `shutdown`, with the metrics agent
/// flushing to the CloudWatch at `config.cloudwatch`.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: LambdaConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sink = CloudWatchSink::new(&config.cloudwatch)
        .with_context(|| format!("--cloudwatch {:?}", config.cloudwatch))?;
    run_with_sink(listener, config, Arc::new(sink), shutdown).await
}

/// [`run`] with the metrics agent's destination given (tests pass a fake).
pub async fn run_with_sink(
    listener: tokio::net::TcpListener,
    config: LambdaConfig,
    sink: Arc<dyn MetricsSink>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    tracing::info!(
        memory_budget = config.memory_budget,
        invocation_memory = config.invocation_memory,
        log_bytes_per_invocation = config.log_bytes_per_invocation,
        agent_buffer_max = ?config.agent_buffer_max,
        flush_interval = ?config.agent_flush_interval,
        cloudwatch = %config.cloudwatch,
        "lambda host starting"
    );
    let budget = MemoryBudget::new(config.memory_budget);
    let agent = Arc::new(MetricsAgent::new(
        budget.clone(),
        config.log_bytes_per_invocation,
        config.agent_buffer_max,
    ));
    let host = Arc::new(
        InvocationHost::new(budget, agent.clone(), config.invocation_memory)
            .declaring(config.depends_on()),
    );
    let (routes, health) = serve::base_routes(host.clone())?;
    let api = LambdaApi(host);
    let routes = routes
        .add_service(LambdaServer::new(api.clone()))
        .add_service(EventTargetServer::new(api));
    let server = tokio::spawn(serve::serve(listener, routes, shutdown.clone()));
    let flusher = tokio::spawn(agent::run_flusher(
        agent,
        sink,
        config.agent_flush_interval,
        shutdown.clone(),
    ));

    if let Err(e) = wait_for_cloudwatch(&config.cloudwatch, DEPENDENCY_WAIT, &shutdown).await {
        shutdown.cancel();
        flusher.abort();
        let _ = server.await;
        return Err(e);
    }
    serve::set_serving(&health, true).await;

    let result = server.await.context("server task")?;
    flusher.abort();
    result
}
