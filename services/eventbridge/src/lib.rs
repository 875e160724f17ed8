//! EventBridge (CloudWatch Events): PutEvents writes events to an event bus
//! that runs on a Kinesis stream, and a dispatcher reads the bus and delivers
//! matched events to targets (ECS, Lambda). In the incident, Kinesis errors made
//! PutEvents fail and stopped delivery until the bus could be read again; the
//! status's `cause` names Kinesis while that is happening.

pub mod dispatch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cascade_core::deps::{self, RecentFailure};
use cascade_core::kinesis::{KinesisArgs, KinesisProducer, StreamReader, TimeArgs};
use cascade_core::retry::{RetryError, RetryPolicy, retry_until};
use cascade_core::serve::{self, StatusSource};
use cascade_core::ticker::Ticker;
use cascade_core::{ServiceError, clients, now_ms};
use cascade_proto::control::ProcessStatus;
use cascade_proto::eventbridge as pb;
use cascade_proto::eventbridge::event_bridge_server::{EventBridge, EventBridgeServer};
use cascade_proto::eventbridge::event_target_client::EventTargetClient;
use dispatch::{BusEvent, Deliverer, Dispatcher, TARGETS};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Most entries one PutEvents may carry (as AWS).
pub const MAX_ENTRIES: usize = 10;
/// Deadline of one `EventTarget.Deliver` call.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(1);
/// Shards of the bus stream.
const BUS_SHARDS: u32 = 2;
/// Records read per shard per dispatcher poll.
const POLL_LIMIT: u32 = 500;
/// How start-up retries Kinesis: every 200 ms for 20 s.
const BOOT_RETRY: RetryPolicy =
    RetryPolicy::fixed(Duration::from_millis(200), Duration::from_secs(20));

/// EventBridge settings.
#[derive(Debug, Clone, clap::Args)]
pub struct EventBridgeConfig {
    /// How to reach Kinesis (the bus runs on it).
    #[command(flatten)]
    pub kinesis: KinesisArgs,
    /// The incident clock (accepted for a uniform command line; delivery runs in wall time).
    #[command(flatten)]
    pub time: TimeArgs,
    /// Kinesis stream the event bus runs on (created with 2 shards at start).
    #[arg(long, env = "CASCADE_BUS_STREAM", default_value = "eventbridge-bus")]
    pub bus_stream: String,
    /// Address of the ECS target's EventTarget service; rules with target "ecs" need it.
    #[arg(long, env = "CASCADE_ECS")]
    pub ecs: Option<String>,
    /// Address of the Lambda target's EventTarget service; rules with target "lambda" need it.
    #[arg(long, env = "CASCADE_LAMBDA")]
    pub lambda: Option<String>,
    /// How often the dispatcher reads the bus and retries pending deliveries (wall time).
    #[arg(long, env = "CASCADE_DISPATCH_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub dispatch_interval: Duration,
    /// A rule installed at start, as NAME:SOURCE:DETAIL_TYPE:TARGET (an empty
    /// SOURCE or DETAIL_TYPE matches any); repeatable, and skipped when its
    /// target has no address. The default sends the customer traffic's
    /// events (source "customer.shop") to Lambda, so customer events reach
    /// Lambda and a delayed bus shows there as late invocations.
    #[arg(long = "rule", value_name = "NAME:SOURCE:DETAIL_TYPE:TARGET", env = "CASCADE_EVENTBRIDGE_RULES",
          value_delimiter = ',', default_value = DEFAULT_RULE, value_parser = parse_rule)]
    pub rules: Vec<RuleArg>,
}

/// The rule installed unless `--rule` says otherwise: customer events to Lambda.
pub const DEFAULT_RULE: &str = "customer-events-to-lambda:customer.shop::lambda";

/// A rule from the command line (see [`EventBridgeConfig::rules`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleArg {
    /// Rule name, 1 to 64 characters.
    pub name: String,
    /// Source to match; empty matches any.
    pub source: String,
    /// Detail-type to match; empty matches any.
    pub detail_type: String,
    /// "ecs" or "lambda".
    pub target: String,
}

/// Parses `NAME:SOURCE:DETAIL_TYPE:TARGET`.
pub fn parse_rule(s: &str) -> Result<RuleArg, String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let [name, source, detail_type, target] = parts[..] else {
        return Err(format!(
            "{s:?} is not NAME:SOURCE:DETAIL_TYPE:TARGET (e.g. {DEFAULT_RULE:?})"
        ));
    };
    check_rule(name, target).map_err(|e| format!("{s:?}: {}", e.message()))?;
    Ok(RuleArg {
        name: name.to_owned(),
        source: source.to_owned(),
        detail_type: detail_type.to_owned(),
        target: target.to_owned(),
    })
}

/// Checks a rule's name (1 to 64 characters) and target (one of [`TARGETS`]).
fn check_rule(name: &str, target: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > 64 {
        return Err(ServiceError::invalid(format!(
            "name: {name:?} must be 1 to 64 characters"
        )));
    }
    if !TARGETS.contains(&target) {
        return Err(ServiceError::invalid(format!(
            "target: {target:?} is not a target; valid targets are \"ecs\" and \"lambda\""
        )));
    }
    Ok(())
}

/// Delivers over gRPC to the configured targets.
struct GrpcTargets {
    /// Target name ("ecs" | "lambda") -> client.
    clients: BTreeMap<String, EventTargetClient<Channel>>,
}

impl GrpcTargets {
    fn new(config: &EventBridgeConfig) -> anyhow::Result<Self> {
        let mut clients = BTreeMap::new();
        for (name, addr) in [("ecs", &config.ecs), ("lambda", &config.lambda)] {
            if let Some(addr) = addr {
                let ch = clients::lazy_channel(addr, DELIVER_TIMEOUT)
                    .with_context(|| format!("--{name} {addr:?}"))?;
                clients.insert(name.to_owned(), EventTargetClient::new(ch));
            }
        }
        Ok(Self { clients })
    }
}

#[tonic::async_trait]
impl Deliverer for GrpcTargets {
    async fn deliver(&self, target: &str, event: pb::Event) -> Result<(), Status> {
        let Some(client) = self.clients.get(target) else {
            // Rules only name configured targets, so this is a bug; keep the event.
            return Err(Status::internal(format!(
                "target {target:?} is not configured"
            )));
        };
        client.clone().deliver(event).await.map(|_| ())
    }
}

/// The EventBridge process: API, dispatcher state and counters.
pub struct Bus {
    /// Flags this process started with.
    config: EventBridgeConfig,
    /// Writes to and reads the bus stream through the front-end fleet.
    kinesis: KinesisProducer,
    /// Rules, delivery queues and latencies.
    dispatcher: Dispatcher,
    /// PutEvents calls that failed because Kinesis did.
    put_errors: AtomicU64,
    /// Events accepted by PutEvents.
    events_put: AtomicU64,
    /// Dispatcher polls of the bus that failed.
    poll_errors: AtomicU64,
    /// The last PutEvents refused because Kinesis failed, and when.
    refused_put: RecentFailure,
    /// The last failed read of the bus (delivery delayed), and when.
    failed_poll: RecentFailure,
}

impl Bus {
    /// A bus for `config` with its rules from `--rule` (those whose target
    /// has an address); connects to Kinesis lazily.
    pub fn new(config: EventBridgeConfig) -> anyhow::Result<Self> {
        let kinesis = KinesisProducer::new(config.kinesis.clone())
            .with_context(|| format!("--kinesis-backend {:?}", config.kinesis.kinesis_backend))?;
        let bus = Self {
            config,
            kinesis,
            dispatcher: Dispatcher::default(),
            put_errors: AtomicU64::new(0),
            events_put: AtomicU64::new(0),
            poll_errors: AtomicU64::new(0),
            refused_put: RecentFailure::new(),
            failed_poll: RecentFailure::new(),
        };
        for r in &bus.config.rules {
            if bus.target_configured(&r.target) {
                bus.dispatcher
                    .put_rule(&r.name, &r.source, &r.detail_type, &r.target);
                tracing::info!(rule = %r.name, source = %r.source, detail_type = %r.detail_type, target = %r.target, "rule installed from --rule");
            } else {
                tracing::info!(rule = %r.name, target = %r.target, "--rule skipped: its target has no address");
            }
        }
        Ok(bus)
    }

    fn target_configured(&self, target: &str) -> bool {
        match target {
            "ecs" => self.config.ecs.is_some(),
            "lambda" => self.config.lambda.is_some(),
            _ => false,
        }
    }

    /// Why customer calls fail now, naming the upstream, or "": PutEvents
    /// refused, and delivery delayed because the bus cannot be read, each
    /// while recent (both name Kinesis).
    pub fn cause(&self) -> String {
        deps::join_causes([self.refused_put.recent(), self.failed_poll.recent()])
    }
}

/// The EventBridge gRPC API over the shared [`Bus`].
#[derive(Clone)]
pub struct Api(Arc<Bus>);

impl std::ops::Deref for Api {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.0
    }
}

/// Checks one PutEvents batch: 1..=10 entries, each with a source, a
/// detail-type and a detail that is JSON.
pub fn validate_entries(entries: &[pb::EventEntry]) -> Result<(), ServiceError> {
    if entries.is_empty() || entries.len() > MAX_ENTRIES {
        return Err(ServiceError::invalid(format!(
            "entries: {} given; a PutEvents call carries 1 to {MAX_ENTRIES} entries",
            entries.len()
        )));
    }
    for (i, e) in entries.iter().enumerate() {
        if e.source.is_empty() {
            return Err(ServiceError::invalid(format!(
                "entries[{i}].source: must not be empty (e.g. \"aws.ecs\")"
            )));
        }
        if e.detail_type.is_empty() {
            return Err(ServiceError::invalid(format!(
                "entries[{i}].detail_type: must not be empty (e.g. \"ECS Task Workflow\")"
            )));
        }
        if let Err(err) = serde_json::from_str::<serde_json::Value>(&e.detail) {
            return Err(ServiceError::invalid(format!(
                "entries[{i}].detail: must be valid JSON text ({err})"
            )));
        }
    }
    Ok(())
}

/// A fresh event id: a random UUID.
fn event_id() -> String {
    cascade_core::random_uuid()
}

#[tonic::async_trait]
impl EventBridge for Api {
    async fn put_events(
        &self,
        req: Request<pb::PutEventsRequest>,
    ) -> Result<Response<pb::PutEventsResponse>, Status> {
        let entries = req.into_inner().entries;
        validate_entries(&entries)?;
        let put_at_ms = now_ms();
        let events: Vec<BusEvent> = entries
            .into_iter()
            .map(|e| BusEvent {
                event_id: event_id(),
                source: e.source,
                detail_type: e.detail_type,
                detail: e.detail,
                put_at_ms,
                time_ms: if e.time_ms > 0 { e.time_ms } else { put_at_ms },
            })
            .collect();
        let mut records = Vec::with_capacity(events.len());
        for e in &events {
            let bytes = serde_json::to_vec(e)
                .map_err(|err| ServiceError::Internal(format!("encode event: {err}")))?;
            // Partition by source: one source's events share a shard, so they
            // are read (and delivered) in the order they were put.
            records.push((e.source.clone(), bytes));
        }
        if let Err(e) = self
            .kinesis
            .put_records(&self.config.bus_stream, records)
            .await
        {
            self.put_errors.fetch_add(1, Ordering::Relaxed);
            // The producer's message names Kinesis and the call that failed.
            let message = format!("event bus {:?}: {}", self.config.bus_stream, e.message());
            self.refused_put.record(format!("PutEvents: {message}"));
            return Err(ServiceError::unavailable(message).into());
        }
        self.events_put
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(Response::new(pb::PutEventsResponse {
            failed_entry_count: 0,
            entries: events
                .into_iter()
                .map(|e| pb::PutEventsResultEntry {
                    event_id: e.event_id,
                    ..Default::default()
                })
                .collect(),
        }))
    }

    async fn put_rule(
        &self,
        req: Request<pb::PutRuleRequest>,
    ) -> Result<Response<pb::PutRuleResponse>, Status> {
        let r = req.into_inner();
        check_rule(&r.name, &r.target)?;
        if !self.target_configured(&r.target) {
            return Err(ServiceError::invalid(format!(
                "target: {:?} has no address; start eventbridge with --{} ADDR to deliver to it",
                r.target, r.target
            ))
            .into());
        }
        self.dispatcher
            .put_rule(&r.name, &r.source, &r.detail_type, &r.target);
        tracing::info!(rule = %r.name, source = %r.source, detail_type = %r.detail_type, target = %r.target, "rule put");
        Ok(Response::new(pb::PutRuleResponse {}))
    }

    async fn list_rules(
        &self,
        _req: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let rules = self
            .dispatcher
            .rules()
            .into_iter()
            .map(|r| pb::Rule {
                name: r.name,
                source: r.source,
                detail_type: r.detail_type,
                target: r.target,
                delivered: r.delivered,
            })
            .collect();
        Ok(Response::new(pb::ListRulesResponse { rules }))
    }
}

impl StatusSource for Bus {
    fn status(&self) -> ProcessStatus {
        let s = self.dispatcher.stats();
        let info = [
            ("rules", s.rules.to_string()),
            ("delivered", s.delivered.to_string()),
            ("pending_deliveries", s.pending.to_string()),
            ("dropped_deliveries", s.dropped.to_string()),
            ("delivery_failures", s.delivery_failures.to_string()),
            (
                "events_put",
                self.events_put.load(Ordering::Relaxed).to_string(),
            ),
            ("events_consumed", s.consumed.to_string()),
            (
                "put_errors",
                self.put_errors.load(Ordering::Relaxed).to_string(),
            ),
            (
                "poll_errors",
                self.poll_errors.load(Ordering::Relaxed).to_string(),
            ),
            ("last_delivery_latency_ms", s.last_latency_ms.to_string()),
            ("p50_delivery_latency_ms", s.p50_latency_ms.to_string()),
            ("p99_delivery_latency_ms", s.p99_latency_ms.to_string()),
            ("max_delivery_latency_ms", s.max_latency_ms.to_string()),
            (
                "last_consumed_put_at_ms",
                s.last_consumed_put_at_ms.to_string(),
            ),
            ("bus_stream", self.config.bus_stream.clone()),
            (
                deps::DEPENDS_ON_KEY,
                deps::depends_on(self.config.kinesis.upstream()),
            ),
            (deps::CAUSE_KEY, self.cause()),
        ];
        serve::process_status("eventbridge", info)
    }
}

/// Reads the bus and delivers, every `--dispatch-interval`, until cancelled.
/// While the bus cannot be read nothing new is routed (delivery is delayed);
/// what was already routed keeps being retried.
async fn dispatch_loop(bus: Arc<Bus>, targets: GrpcTargets, token: CancellationToken) {
    let mut reader = StreamReader::new(&bus.config.bus_stream, true);
    let mut ticker = Ticker::new(bus.config.dispatch_interval);
    let mut failing_since: Option<Instant> = None;
    while ticker.tick(&token).await {
        match reader.poll(&bus.kinesis, POLL_LIMIT).await {
            Ok(records) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(down_for = ?since.elapsed(), "event bus readable again");
                }
                let events = records
                    .into_iter()
                    .filter_map(|r| match serde_json::from_slice::<BusEvent>(&r.data) {
                        Ok(e) => Some(e),
                        Err(err) => {
                            tracing::warn!(seq = %r.sequence_number, error = %err, "undecodable bus record skipped");
                            None
                        }
                    })
                    .collect();
                bus.dispatcher.route(events);
            }
            Err(e) => {
                bus.poll_errors.fetch_add(1, Ordering::Relaxed);
                bus.failed_poll.record(format!(
                    "delivery delayed: the bus cannot be read: {}",
                    e.message()
                ));
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(error = %Status::from(e).message(), "cannot read the event bus from Kinesis; delivery delayed");
                }
            }
        }
        bus.dispatcher.deliver_pending(&targets).await;
    }
}

/// Runs EventBridge on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: EventBridgeConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.dispatch_interval.is_zero() {
        anyhow::bail!("--dispatch-interval: must be more than 0 (e.g. 100ms)");
    }
    let targets = GrpcTargets::new(&config)?;
    tracing::info!(bus = %config.bus_stream, ecs = ?config.ecs, lambda = ?config.lambda,
        dispatch_interval = ?config.dispatch_interval, "eventbridge starting");
    let bus = Arc::new(Bus::new(config)?);
    let (routes, health) = serve::base_routes(bus.clone())?;
    let routes = routes.add_service(EventBridgeServer::new(Api(bus.clone())));
    let server = tokio::spawn(serve::serve(listener, routes, shutdown.clone()));

    let booted = retry_until(
        BOOT_RETRY,
        &shutdown,
        || {
            bus.kinesis
                .ensure_stream(&bus.config.bus_stream, BUS_SHARDS)
        },
        |e| tracing::warn!(error = %e.message(), "Kinesis not ready for the event bus; retrying"),
    )
    .await;
    // Cancelled: the server is draining already and is awaited below.
    if let Err(RetryError::DeadlinePassed { deadline, last, .. }) = booted {
        shutdown.cancel();
        let _ = server.await;
        anyhow::bail!(
            "Kinesis: cannot create the event bus stream {:?} after {deadline:?}: {}",
            bus.config.bus_stream,
            last.message()
        );
    }
    serve::set_serving(&health, true).await;
    let dispatcher = tokio::spawn(dispatch_loop(bus.clone(), targets, shutdown.clone()));
    let result = server.await.context("server task")?;
    dispatcher.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(source: &str, detail_type: &str, detail: &str) -> pb::EventEntry {
        pb::EventEntry {
            source: source.into(),
            detail_type: detail_type.into(),
            detail: detail.into(),
            time_ms: 0,
        }
    }

    fn message(r: Result<(), ServiceError>) -> String {
        match r {
            Err(ServiceError::InvalidArgument(m)) => m,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn put_events_validation_names_the_entry_and_field() {
        let ok = entry("aws.ecs", "ECS Task Workflow", r#"{"task_id":"t"}"#);
        assert!(validate_entries(std::slice::from_ref(&ok)).is_ok());
        assert!(message(validate_entries(&[])).starts_with("entries: 0 given"));
        assert!(message(validate_entries(&vec![ok.clone(); 11])).starts_with("entries: 11"));
        let m = message(validate_entries(&[ok.clone(), entry("", "d", "{}")]));
        assert!(m.starts_with("entries[1].source"), "{m}");
        let m = message(validate_entries(&[entry("s", "", "{}")]));
        assert!(m.starts_with("entries[0].detail_type"), "{m}");
        let m = message(validate_entries(&[ok, entry("s", "d", "{not json")]));
        assert!(m.starts_with("entries[1].detail"), "{m}");
        assert!(message(validate_entries(&[entry("s", "d", "")])).contains("JSON"));
    }

    #[test]
    fn event_ids_are_uuid_shaped_and_distinct() {
        let a = event_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, event_id());
    }

    #[test]
    fn bus_events_round_trip_as_json() {
        let e = BusEvent {
            event_id: event_id(),
            source: "aws.ecs".into(),
            detail_type: "ECS Task Workflow".into(),
            detail: r#"{"task_id":"t-1","transition":"provision"}"#.into(),
            put_at_ms: 42,
            time_ms: 40,
        };
        let bytes = serde_json::to_vec(&e).expect("encodes");
        assert_eq!(
            serde_json::from_slice::<BusEvent>(&bytes).expect("decodes"),
            e
        );
    }

    /// Flags as the command line gives them.
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: EventBridgeConfig,
    }

    fn bus(args: &[&str]) -> Bus {
        use clap::Parser as _;
        let argv = ["eventbridge", "--kinesis-backend=127.0.0.1:1"]
            .into_iter()
            .chain(args.iter().copied());
        Bus::new(Cli::parse_from(argv).config).expect("a lazy client always builds")
    }

    #[tokio::test]
    async fn the_default_rule_sends_customer_events_to_lambda_when_lambda_has_an_address() {
        let rules = bus(&["--lambda=127.0.0.1:2"]).dispatcher.rules();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            (rules[0].source.as_str(), rules[0].target.as_str()),
            ("customer.shop", "lambda")
        );
        assert!(bus(&[]).dispatcher.rules().is_empty(), "no Lambda, no rule");
        let custom = bus(&["--ecs=127.0.0.1:3", "--rule=a:s:d:ecs", "--rule=b:::lambda"]);
        let names: Vec<String> = custom
            .dispatcher
            .rules()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, vec!["a"], "b has no Lambda to go to");

        assert!(parse_rule("a:s:d").is_err_and(|e| e.contains("NAME:SOURCE")));
        assert!(parse_rule("a:s:d:sqs").is_err_and(|e| e.contains("target")));
        assert!(parse_rule(":s:d:ecs").is_err_and(|e| e.contains("name")));
    }

    #[tokio::test]
    async fn a_put_refused_by_kinesis_names_it_in_the_error_and_the_cause_for_a_while() {
        let api = Api(Arc::new(bus(&[])));
        let info = |key: &str| api.0.status().info.get(key).cloned().unwrap_or_default();
        assert_eq!(info("depends_on"), "kinesis");
        let put = |detail: &str| {
            Request::new(pb::PutEventsRequest {
                entries: vec![entry("customer.shop", "OrderPlaced", detail)],
            })
        };
        // A bad request is the caller's own failure: no cause.
        assert!(api.put_events(put("{not json")).await.is_err());
        assert_eq!(info("cause"), "");

        // Nothing listens at Kinesis's address: the put fails naming Kinesis.
        let e = api
            .put_events(put("{}"))
            .await
            .expect_err("Kinesis is unreachable");
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(
            e.message()
                .starts_with("event bus \"eventbridge-bus\": Kinesis"),
            "{e:?}"
        );
        let cause = info("cause");
        assert!(cause.starts_with("PutEvents: event bus"), "{cause}");
        assert!(cause.contains("Kinesis"), "{cause}");
        assert_eq!(info("put_errors"), "1");

        tokio::time::pause();
        tokio::time::advance(deps::CAUSE_WINDOW + Duration::from_millis(1)).await;
        assert_eq!(info("cause"), "", "an old refusal explains nothing now");
    }
}
