//! ECS: tasks whose provisioning and de-provisioning workflows are driven by
//! EventBridge events, and one service with a reactive auto-scaling policy
//! bound to a CloudWatch alarm. In the incident both inputs failed (EventBridge
//! ran on Kinesis, CloudWatch alarms went INSUFFICIENT_DATA): tasks were slow
//! to provision and de-provision, and scaling was delayed. Only the first
//! fails customer calls, so only EventBridge appears in the status's `cause`.

pub mod cluster;
pub mod scaling;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cascade_core::deps::{self, Upstream};
use cascade_core::kinesis::TimeArgs;
use cascade_core::retry::{RetryError, RetryPolicy, retry_until};
use cascade_core::serve::{self, StatusSource};
use cascade_core::ticker::Ticker;
use cascade_core::{ServiceError, clients};
use cascade_proto::cloudwatch as cw;
use cascade_proto::cloudwatch::cloud_watch_client::CloudWatchClient;
use cascade_proto::control::ProcessStatus;
use cascade_proto::ecs as pb;
use cascade_proto::ecs::ecs_server::{Ecs, EcsServer};
use cascade_proto::eventbridge as eb;
use cascade_proto::eventbridge::event_bridge_client::EventBridgeClient;
use cascade_proto::eventbridge::event_target_server::{EventTarget, EventTargetServer};
use cluster::{Cluster, EventPublisher, WORKFLOW_DETAIL_TYPE, WORKFLOW_SOURCE};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Name of the rule ECS registers with EventBridge.
pub const RULE_NAME: &str = "ecs-task-workflow";
/// CloudWatch namespace and metric the scaling policy's alarm watches.
pub const NAMESPACE: &str = "AWS/ECS";
/// See [`NAMESPACE`].
pub const CPU_METRIC: &str = "CPUUtilization";
/// Alarm threshold (percent CPU).
const CPU_THRESHOLD: f64 = 70.0;
/// Deadline of each call to EventBridge or CloudWatch.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How start-up retries each dependency: every 200 ms for 20 s.
const BOOT_RETRY: RetryPolicy =
    RetryPolicy::fixed(Duration::from_millis(200), Duration::from_secs(20));
/// Shortest wall interval between scaling evaluations.
const MIN_SCALING_INTERVAL: Duration = Duration::from_millis(500);
/// Outbox retry backoff bounds.
/// Periods the scaling alarm needs a datapoint in, each, to judge.
const SCALING_EVALUATION_PERIODS: u32 = 3;
const OUTBOX_BACKOFF_MIN: Duration = Duration::from_millis(100);
const OUTBOX_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// ECS settings.
#[derive(Debug, Clone, clap::Args)]
pub struct EcsConfig {
    /// The incident clock: scaling interval and alarm period are in incident seconds.
    #[command(flatten)]
    pub time: TimeArgs,
    /// Address of EventBridge: workflow events are published there and come back as deliveries.
    #[arg(long, env = "CASCADE_EVENTBRIDGE")]
    pub eventbridge: String,
    /// Address of CloudWatch: the scaling policy's alarm and the service's CPU metric live there.
    #[arg(long, env = "CASCADE_CLOUDWATCH")]
    pub cloudwatch: String,
    /// Name of the auto-scaled ECS service.
    #[arg(long, env = "CASCADE_ECS_SERVICE", default_value = "web")]
    pub service: String,
    /// CloudWatch alarm the service's scaling policy is bound to (created at start).
    #[arg(
        long,
        env = "CASCADE_SCALING_ALARM",
        default_value = "ecs-web-cpu-high"
    )]
    pub scaling_alarm: String,
    /// The alarm's evaluation period, in incident seconds.
    #[arg(long, env = "CASCADE_SCALING_PERIOD", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub scaling_period: u32,
    /// How often the scaling policy evaluates, in incident seconds (at least 500 ms of wall time).
    #[arg(long, env = "CASCADE_SCALING_INTERVAL", default_value_t = 60.0, value_parser = positive)]
    pub scaling_interval: f64,
    /// CPUUtilization (percent) the service reports each evaluation; above 70 the alarm should fire.
    #[arg(long, env = "CASCADE_SERVICE_CPU", default_value_t = 85.0, value_parser = percent)]
    pub service_cpu: f64,
    /// Largest desired count of the service (UpdateService and scale-out stop there).
    #[arg(long, env = "CASCADE_MAX_TASKS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_tasks: u32,
    /// Desired count of the service at start (its tasks provision through EventBridge).
    #[arg(long, env = "CASCADE_DESIRED_COUNT", default_value_t = 2)]
    pub desired_count: u32,
}

impl EcsConfig {
    /// The upstreams whose failure can impair ECS, from its clients:
    /// EventBridge (`--eventbridge`: workflow events) and CloudWatch
    /// (`--cloudwatch`: the scaling policy's alarm).
    pub fn depends_on(&self) -> Vec<Upstream> {
        [
            (Upstream::EventBridge, &self.eventbridge),
            (Upstream::CloudWatch, &self.cloudwatch),
        ]
        .into_iter()
        .filter(|(_, addr)| !addr.trim().is_empty())
        .map(|(u, _)| u)
        .collect()
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of incident seconds"
        )),
    }
}

fn percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

/// Publishes workflow events with EventBridge.PutEvents.
struct GrpcPublisher(EventBridgeClient<Channel>);

#[tonic::async_trait]
impl EventPublisher for GrpcPublisher {
    async fn put_events(&self, entries: Vec<eb::EventEntry>) -> Result<(), String> {
        let resp = self
            .0
            .clone()
            .put_events(eb::PutEventsRequest { entries })
            .await
            .map_err(|s| Upstream::EventBridge.describe("PutEvents", &s))?
            .into_inner();
        if resp.failed_entry_count > 0 {
            // Resending the whole batch is safe: deliveries are idempotent.
            return Err(format!(
                "{} PutEvents: {} entries failed",
                Upstream::EventBridge,
                resp.failed_entry_count
            ));
        }
        Ok(())
    }
}

/// What the scaling policy needs from CloudWatch. The real one is gRPC;
/// tests use an in-process fake.
#[tonic::async_trait]
pub trait ScalingMetrics: Send + Sync {
    /// Publishes the service's CPUUtilization.
    async fn put_cpu(&self, value: f64) -> Result<(), String>;
    /// The state of the policy's alarm.
    async fn alarm_state(&self) -> Result<String, String>;
}

/// CloudWatch over gRPC.
struct GrpcCloudWatch {
    /// The client (lazy channel).
    client: CloudWatchClient<Channel>,
    /// The alarm the policy reads.
    alarm: String,
}

#[tonic::async_trait]
impl ScalingMetrics for GrpcCloudWatch {
    async fn put_cpu(&self, value: f64) -> Result<(), String> {
        self.client
            .clone()
            .put_metric_data(cw::PutMetricDataRequest {
                namespace: NAMESPACE.into(),
                metric_data: vec![cw::MetricDatum {
                    metric_name: CPU_METRIC.into(),
                    value,
                    timestamp_ms: 0,
                }],
            })
            .await
            .map(|_| ())
            .map_err(|s| Upstream::CloudWatch.describe("PutMetricData", &s))
    }

    async fn alarm_state(&self) -> Result<String, String> {
        let alarms = self
            .client
            .clone()
            .describe_alarms(cw::DescribeAlarmsRequest {
                alarm_names: vec![self.alarm.clone()],
            })
            .await
            .map_err(|s| Upstream::CloudWatch.describe("DescribeAlarms", &s))?
            .into_inner()
            .alarms;
        alarms
            .into_iter()
            .find(|a| a.alarm_name == self.alarm)
            .map(|a| a.state)
            .ok_or_else(|| format!("CloudWatch: alarm {:?} does not exist", self.alarm))
    }
}

/// The ECS process: cluster state, settings and counters.
pub struct EcsProcess {
    /// Tasks, outbox, the scaled service.
    cluster: Cluster,
    /// CPUUtilization the service reports (f64 bits; live-settable).
    service_cpu: AtomicU64,
    /// CPU publishes CloudWatch did not accept.
    metric_publish_errors: AtomicU64,
    /// Upstreams whose failure can impair ECS, as declared.
    depends_on: Vec<Upstream>,
}

impl EcsProcess {
    /// A process for `config`'s service.
    pub fn new(config: &EcsConfig) -> Self {
        Self {
            cluster: Cluster::new(&config.service, &config.scaling_alarm, config.max_tasks),
            service_cpu: AtomicU64::new(config.service_cpu.to_bits()),
            metric_publish_errors: AtomicU64::new(0),
            depends_on: config.depends_on(),
        }
    }

    /// The cluster state.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// One scaling evaluation: publish the service's CPU (a failure is only
    /// counted), read the alarm, decide and apply.
    pub async fn scaling_round(&self, metrics: &dyn ScalingMetrics) -> pb::ScalingDecision {
        let cpu = f64::from_bits(self.service_cpu.load(Ordering::Relaxed));
        if let Err(e) = metrics.put_cpu(cpu).await {
            self.metric_publish_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "CPU metric not published");
        }
        let alarm = metrics.alarm_state().await;
        let d = self.cluster.evaluate_scaling(alarm);
        tracing::debug!(action = %d.action, alarm = %d.alarm_state, desired = d.desired_count, "scaling evaluated");
        d
    }
}

impl StatusSource for EcsProcess {
    fn status(&self) -> ProcessStatus {
        let s = self.cluster.stats();
        let (action, at) = s
            .last_decision
            .map(|d| (d.action, d.at_ms))
            .unwrap_or_default();
        let info = [
            ("tasks_provisioning", s.provisioning.to_string()),
            ("tasks_running", s.running.to_string()),
            ("tasks_deprovisioning", s.deprovisioning.to_string()),
            ("tasks_stopped", s.stopped.to_string()),
            ("outbox_pending", s.outbox_pending.to_string()),
            ("outbox_errors", s.outbox_errors.to_string()),
            ("events_published", s.events_published.to_string()),
            ("transitions_applied", s.transitions_applied.to_string()),
            ("unchanged_deliveries", s.unchanged_deliveries.to_string()),
            ("last_provision_ms", s.last_provision_ms.to_string()),
            ("desired_count", s.desired.to_string()),
            ("last_scaling_action", action),
            ("last_scaling_at_ms", at.to_string()),
            ("last_alarm_state", s.last_alarm_state),
            ("no_decisions", s.no_decisions.to_string()),
            ("scale_outs", s.scale_outs.to_string()),
            (
                "metric_publish_errors",
                self.metric_publish_errors
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "service_cpu",
                f64::from_bits(self.service_cpu.load(Ordering::Relaxed)).to_string(),
            ),
            (
                deps::DEPENDS_ON_KEY,
                deps::depends_on(self.depends_on.iter().copied()),
            ),
            // The scaling policy's blind alarm delays scaling but fails no
            // customer call: it shows in `last_scaling_action`, not here.
            (deps::CAUSE_KEY, self.cluster.cause()),
        ];
        serve::process_status("ecs", info)
    }

    fn configure(&self, key: &str, value: &str) -> Result<String, ServiceError> {
        match key {
            "service_cpu" => {
                let v = percent(value).map_err(|e| ServiceError::invalid(format!("value: {e}")))?;
                self.service_cpu.store(v.to_bits(), Ordering::Relaxed);
                Ok(v.to_string())
            }
            _ => Err(ServiceError::invalid(format!(
                "key: {key:?} is not a setting of ecs; settable: \"service_cpu\""
            ))),
        }
    }
}

/// The Ecs and EventTarget gRPC APIs over the shared process.
#[derive(Clone)]
pub struct Api(Arc<EcsProcess>);

#[tonic::async_trait]
impl Ecs for Api {
    async fn run_task(
        &self,
        req: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::RunTaskResponse>, Status> {
        let r = req.into_inner();
        let task = self.0.cluster.run_task(&r.task_definition, &r.service)?;
        Ok(Response::new(pb::RunTaskResponse { task: Some(task) }))
    }

    async fn stop_task(
        &self,
        req: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        let task = self.0.cluster.stop_task(&req.into_inner().task_id)?;
        Ok(Response::new(pb::StopTaskResponse { task: Some(task) }))
    }

    async fn update_service(
        &self,
        req: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::UpdateServiceResponse>, Status> {
        let r = req.into_inner();
        self.0.cluster.update_service(&r.service, r.desired_count)?;
        tracing::info!(service = %r.service, desired = r.desired_count, "service updated");
        Ok(Response::new(pb::UpdateServiceResponse {}))
    }

    async fn describe_tasks(
        &self,
        req: Request<pb::DescribeTasksRequest>,
    ) -> Result<Response<pb::DescribeTasksResponse>, Status> {
        let tasks = self.0.cluster.describe_tasks(&req.into_inner().task_ids)?;
        Ok(Response::new(pb::DescribeTasksResponse { tasks }))
    }

    async fn describe_services(
        &self,
        _req: Request<pb::DescribeServicesRequest>,
    ) -> Result<Response<pb::DescribeServicesResponse>, Status> {
        Ok(Response::new(pb::DescribeServicesResponse {
            services: vec![self.0.cluster.describe_service()],
        }))
    }
}

#[tonic::async_trait]
impl EventTarget for Api {
    async fn deliver(
        &self,
        req: Request<eb::Event>,
    ) -> Result<Response<eb::DeliverResponse>, Status> {
        self.0.cluster.apply(req.get_ref())?;
        Ok(Response::new(eb::DeliverResponse {}))
    }
}

/// Publishes the outbox whenever it holds events, retrying with backoff
/// until EventBridge accepts them (events queued in an outage go out after).
async fn outbox_loop(process: Arc<EcsProcess>, publisher: GrpcPublisher, token: CancellationToken) {
    let cluster = &process.cluster;
    let mut backoff = OUTBOX_BACKOFF_MIN;
    let mut failing_since: Option<Instant> = None;
    loop {
        if cluster.outbox_len() == 0 {
            tokio::select! {
                _ = cluster.outbox_queued() => {}
                _ = token.cancelled() => return,
            }
            continue;
        }
        match cluster.flush_outbox(&publisher).await {
            Ok(_) => {
                backoff = OUTBOX_BACKOFF_MIN;
                if let Some(since) = failing_since.take() {
                    tracing::info!(failing_for = ?since.elapsed(), "EventBridge accepts workflow events again");
                }
            }
            Err(e) => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(error = %e, pending = cluster.outbox_len(), "workflow events held in the outbox; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = token.cancelled() => return,
                }
                backoff = (backoff * 2).min(OUTBOX_BACKOFF_MAX);
            }
        }
    }
}

/// Evaluates the scaling policy every `interval` until cancelled.
async fn scaling_loop(
    process: Arc<EcsProcess>,
    metrics: GrpcCloudWatch,
    interval: Duration,
    token: CancellationToken,
) {
    let mut ticker = Ticker::new(interval);
    let mut last_action = String::new();
    while ticker.tick(&token).await {
        let d = process.scaling_round(&metrics).await;
        if d.action != last_action {
            tracing::info!(action = %d.action, alarm = %d.alarm_state, desired = d.desired_count, "scaling decision changed");
            last_action = d.action;
        }
    }
}

/// Retries `f` under [`BOOT_RETRY`] until it succeeds, the deadline passes, or shutdown.
async fn boot_retry<F, Fut>(what: &str, token: &CancellationToken, f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    let on_retry = |s: &Status| {
        tracing::warn!(code = ?s.code(), error = %s.message(), "{what} failed; retrying");
    };
    retry_until(BOOT_RETRY, token, f, on_retry)
        .await
        .map_err(|e| match e {
            RetryError::DeadlinePassed { deadline, last, .. } => anyhow::anyhow!(
                "{what}: gave up after {deadline:?}: {:?}: {}",
                last.code(),
                last.message()
            ),
            RetryError::Cancelled { .. } => anyhow::anyhow!("{what}: shut down while waiting"),
        })
}

/// Runs ECS on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: EcsConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.desired_count > config.max_tasks {
        anyhow::bail!(
            "--desired-count {} is above --max-tasks {}",
            config.desired_count,
            config.max_tasks
        );
    }
    let eventbridge = EventBridgeClient::new(
        clients::lazy_channel(&config.eventbridge, CALL_TIMEOUT)
            .with_context(|| format!("--eventbridge {:?}", config.eventbridge))?,
    );
    let cloudwatch = CloudWatchClient::new(
        clients::lazy_channel(&config.cloudwatch, CALL_TIMEOUT)
            .with_context(|| format!("--cloudwatch {:?}", config.cloudwatch))?,
    );
    let interval = config
        .time
        .wall(config.scaling_interval)
        .max(MIN_SCALING_INTERVAL);
    tracing::info!(service = %config.service, alarm = %config.scaling_alarm, ?interval,
        eventbridge = %config.eventbridge, cloudwatch = %config.cloudwatch, "ecs starting");
    let process = Arc::new(EcsProcess::new(&config));
    let (routes, health) = serve::base_routes(process.clone())?;
    let api = Api(process.clone());
    let routes = routes
        .add_service(EcsServer::new(api.clone()))
        .add_service(EventTargetServer::new(api));
    let server = tokio::spawn(serve::serve(listener, routes, shutdown.clone()));

    let boot = async {
        boot_retry("EventBridge PutRule", &shutdown, || {
            let mut c = eventbridge.clone();
            async move {
                c.put_rule(eb::PutRuleRequest {
                    name: RULE_NAME.into(),
                    source: WORKFLOW_SOURCE.into(),
                    detail_type: WORKFLOW_DETAIL_TYPE.into(),
                    target: "ecs".into(),
                })
                .await
                .map(|_| ())
            }
        })
        .await?;
        boot_retry("CloudWatch PutMetricAlarm", &shutdown, || {
            let mut c = cloudwatch.clone();
            let req = cw::PutMetricAlarmRequest {
                alarm_name: config.scaling_alarm.clone(),
                namespace: NAMESPACE.into(),
                metric_name: CPU_METRIC.into(),
                statistic: cw::Statistic::Average as i32,
                comparison_operator: cw::ComparisonOperator::GreaterThanThreshold as i32,
                threshold: CPU_THRESHOLD,
                period_s: config.scaling_period,
                // As target tracking's scale-out alarm: a datapoint in each
                // of 3 consecutive periods before it judges.
                evaluation_periods: SCALING_EVALUATION_PERIODS,
            };
            async move { c.put_metric_alarm(req).await.map(|_| ()) }
        })
        .await
    };
    if let Err(e) = boot.await {
        shutdown.cancel();
        let _ = server.await;
        return Err(e);
    }
    process
        .cluster
        .update_service(&config.service, config.desired_count)?;
    serve::set_serving(&health, true).await;

    let loops = [
        tokio::spawn(outbox_loop(
            process.clone(),
            GrpcPublisher(eventbridge),
            shutdown.clone(),
        )),
        tokio::spawn(scaling_loop(
            process.clone(),
            GrpcCloudWatch {
                client: cloudwatch,
                alarm: config.scaling_alarm.clone(),
            },
            interval,
            shutdown.clone(),
        )),
    ];
    let result = server.await.context("server task")?;
    for l in loops {
        l.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// CloudWatch whose alarm state and availability the test sets.
    struct FakeCloudWatch {
        state: Mutex<Result<String, String>>,
        cpu: Mutex<Vec<f64>>,
    }

    #[tonic::async_trait]
    impl ScalingMetrics for FakeCloudWatch {
        async fn put_cpu(&self, value: f64) -> Result<(), String> {
            let state = self.state.lock().expect("test lock").clone();
            state.map(|_| self.cpu.lock().expect("test lock").push(value))
        }
        async fn alarm_state(&self) -> Result<String, String> {
            self.state.lock().expect("test lock").clone()
        }
    }

    fn config() -> EcsConfig {
        EcsConfig {
            time: TimeArgs { time_scale: 360.0 },
            eventbridge: "127.0.0.1:1".into(),
            cloudwatch: "127.0.0.1:1".into(),
            service: "web".into(),
            scaling_alarm: "ecs-web-cpu-high".into(),
            scaling_period: 300,
            scaling_interval: 60.0,
            service_cpu: 85.0,
            max_tasks: 8,
            desired_count: 2,
        }
    }

    #[tokio::test]
    async fn scaling_rounds_wait_while_cloudwatch_is_blind_then_scale_out() {
        let p = EcsProcess::new(&config());
        p.cluster.update_service("web", 2).expect("update");
        let cw = FakeCloudWatch {
            state: Mutex::new(Err("CloudWatch: UNAVAILABLE".into())),
            cpu: Mutex::default(),
        };
        assert_eq!(p.scaling_round(&cw).await.action, "no-decision");
        assert_eq!(p.metric_publish_errors.load(Ordering::Relaxed), 1);
        *cw.state.lock().expect("test lock") = Ok("INSUFFICIENT_DATA".into());
        assert_eq!(p.scaling_round(&cw).await.action, "no-decision");
        *cw.state.lock().expect("test lock") = Ok("ALARM".into());
        let d = p.scaling_round(&cw).await;
        assert_eq!((d.action.as_str(), d.desired_count), ("scale-out", 3));
        assert_eq!(*cw.cpu.lock().expect("test lock"), vec![85.0, 85.0]);
        let info = p.status().info;
        assert_eq!(info["no_decisions"], "2");
        assert_eq!(info["scale_outs"], "1");
        assert_eq!(info["last_scaling_action"], "scale-out");
        assert_eq!(info["tasks_provisioning"], "3");
    }

    #[tokio::test]
    async fn a_blind_scaling_alarm_is_no_cause_of_failed_customer_calls() {
        let p = EcsProcess::new(&config());
        assert_eq!(p.status().info["depends_on"], "eventbridge,cloudwatch");
        p.cluster.update_service("web", 2).expect("update");
        let cw = FakeCloudWatch {
            state: Mutex::new(Ok("INSUFFICIENT_DATA".into())),
            cpu: Mutex::default(),
        };
        assert_eq!(p.scaling_round(&cw).await.action, "no-decision");
        *cw.state.lock().expect("test lock") = Err(Upstream::CloudWatch.describe(
            "DescribeAlarms",
            &Status::unavailable("metrics pipeline unavailable"),
        ));
        assert_eq!(p.scaling_round(&cw).await.action, "no-decision");
        let info = p.status().info;
        assert_eq!(info["last_scaling_action"], "no-decision");
        assert!(info["last_alarm_state"].contains("CloudWatch"), "{info:?}");
        assert_eq!(
            info["cause"], "",
            "scaling waits, but no customer call fails"
        );

        // EventBridge refusing the workflow events does fail customers (their
        // tasks stay PROVISIONING): the cause names it, and not CloudWatch.
        let refusing = RefusingBridge;
        assert!(p.cluster.flush_outbox(&refusing).await.is_err());
        let cause = p.status().info["cause"].clone();
        assert!(
            cause.starts_with("tasks stuck in PROVISIONING (2): workflow events not published: EventBridge PutEvents UNAVAILABLE"),
            "{cause}"
        );
        assert!(!cause.contains("CloudWatch"), "{cause}");
    }

    /// EventBridge failing its PutEvents as it did when Kinesis failed.
    struct RefusingBridge;

    #[tonic::async_trait]
    impl EventPublisher for RefusingBridge {
        async fn put_events(&self, _: Vec<eb::EventEntry>) -> Result<(), String> {
            Err(Upstream::EventBridge.describe(
                "PutEvents",
                &Status::unavailable("event bus: Kinesis PutRecords UNAVAILABLE"),
            ))
        }
    }

    #[test]
    fn service_cpu_is_a_live_setting() {
        let p = EcsProcess::new(&config());
        assert_eq!(p.configure("service_cpu", "40").expect("valid"), "40");
        assert_eq!(p.status().info["service_cpu"], "40");
        assert!(p.configure("service_cpu", "140").is_err());
        assert!(p.configure("nope", "1").is_err());
    }
}
