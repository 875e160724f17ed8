//! Customer traffic: the ground truth of impact. Steady synthetic calls
//! against every service, each with a deadline, recorded per service per
//! second. It talks to the services directly and does not depend on
//! CloudWatch, so it sees what customers saw even while the in-testbed
//! monitoring is blind. `cascade probe` makes the same calls on demand.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::time::{Duration, Instant};

use cascade_core::kinesis::{KinesisArgs, KinesisProducer};
use cascade_proto::cloudwatch::{self as cw, cloud_watch_client::CloudWatchClient};
use cascade_proto::cognito::{self as cg, cognito_client::CognitoClient};
use cascade_proto::ecs::{self as ecs, ecs_client::EcsClient};
use cascade_proto::eventbridge::{self as eb, event_bridge_client::EventBridgeClient};
use cascade_proto::kinesis as kpb;
use cascade_proto::lambda::{self as lm, lambda_client::LambdaClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::topology::Service;

/// The stream customer Kinesis traffic writes to.
pub const CUSTOMER_STREAM: &str = "customer-orders";
/// A task launch may take this many call deadlines to reach RUNNING.
pub const LAUNCH_DEADLINES: u32 = 3;

/// The latency one customer call to `svc` may take and still be on time:
/// a call deadline, or a task launch's for ECS.
pub fn latency_budget(svc: Service, deadline: Duration) -> Duration {
    match svc {
        Service::Ecs => deadline * LAUNCH_DEADLINES,
        _ => deadline,
    }
}

/// Seconds of history kept per service.
const HISTORY_SECS: usize = 900;

/// Where each service is, for the calls.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// The Kinesis back end (front-ends are discovered from its membership).
    pub backend: String,
    /// Service -> instance addresses.
    pub services: BTreeMap<Service, Vec<String>>,
    /// The membership fleet (or `cell-*` pattern) Kinesis customers list.
    pub kinesis_fleet: String,
}

/// Clients for one representative call per service.
pub struct Caller {
    kinesis: KinesisProducer,
    channels: HashMap<Service, Vec<Channel>>,
    deadline: Duration,
    next: std::sync::atomic::AtomicUsize,
}

impl Caller {
    /// Clients with `deadline` on every call.
    pub fn new(t: &Targets, deadline: Duration) -> anyhow::Result<Self> {
        let kinesis = KinesisProducer::new(KinesisArgs {
            kinesis_backend: t.backend.clone(),
            kinesis_fleet: t.kinesis_fleet.clone(),
            kinesis_timeout: deadline,
            kinesis_ready_only: true,
        })?;
        let mut channels = HashMap::new();
        for (svc, addrs) in &t.services {
            let chans = addrs
                .iter()
                .map(|a| cascade_core::clients::lazy_channel(a, deadline))
                .collect::<anyhow::Result<Vec<_>>>()?;
            channels.insert(*svc, chans);
        }
        Ok(Self {
            kinesis,
            channels,
            deadline,
            next: Default::default(),
        })
    }

    /// Creates the stream customer Kinesis traffic writes to (retrying for
    /// 20 s, or until `shutdown`).
    pub async fn create_customer_stream(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            match self.kinesis.ensure_stream(CUSTOMER_STREAM, 2).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= until => {
                    anyhow::bail!("cannot create the customer stream {CUSTOMER_STREAM}: {e}")
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.cancelled() => anyhow::bail!("shut down while creating the customer stream"),
            }
        }
    }

    fn channel(&self, svc: Service) -> Result<Channel, tonic::Status> {
        let chans = self
            .channels
            .get(&svc)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                tonic::Status::failed_precondition(format!("{} is not running", svc.name()))
            })?;
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(chans[i % chans.len()].clone())
    }

    /// One representative customer call to `svc`.
    pub async fn call(&self, svc: Service, n: u64) -> Result<(), tonic::Status> {
        let call = async {
            match svc {
                Service::Kinesis => self.put_and_get(n).await,
                Service::Cognito => CognitoClient::new(self.channel(svc)?)
                    .sign_in(cg::SignInRequest {
                        username: "customer".into(),
                        password: "customer-password".into(),
                    })
                    .await
                    .map(drop),
                Service::Cloudwatch => CloudWatchClient::new(self.channel(svc)?)
                    .put_metric_data(cw::PutMetricDataRequest {
                        namespace: "Customer/App".into(),
                        metric_data: vec![cw::MetricDatum {
                            metric_name: "Orders".into(),
                            value: (n % 10) as f64,
                            timestamp_ms: 0,
                        }],
                    })
                    .await
                    .map(drop),
                Service::Lambda => LambdaClient::new(self.channel(svc)?)
                    .invoke(lm::InvokeRequest {
                        function_name: "echo".into(),
                        payload: format!("hello {n}").into_bytes(),
                        rounds: 0,
                    })
                    .await
                    .map(drop),
                Service::Eventbridge => EventBridgeClient::new(self.channel(svc)?)
                    .put_events(eb::PutEventsRequest {
                        entries: vec![eb::EventEntry {
                            source: "customer.shop".into(),
                            detail_type: "OrderPlaced".into(),
                            detail: format!("{{\"order\":{n}}}"),
                            time_ms: 0,
                        }],
                    })
                    .await
                    .map(drop),
                Service::Ecs => self.launch_task().await,
            }
        };
        match tokio::time::timeout(self.deadline * 4, call).await {
            // tonic reports its client-side deadline as CANCELLED("Timeout
            // expired"); for a customer that is the deadline passing.
            Ok(Err(s))
                if s.code() == tonic::Code::Cancelled
                    && s.message().contains("Timeout expired") =>
            {
                Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within the {:?} deadline",
                    self.deadline
                )))
            }
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "no answer within the deadline",
            )),
        }
    }

    /// A customer's Kinesis call: put a record; every other call also
    /// reads it back (puts and gets).
    async fn put_and_get(&self, n: u64) -> Result<(), tonic::Status> {
        let mut c = self.kinesis.client().await?;
        let r = c
            .put_record(kpb::PutRecordRequest {
                stream_name: CUSTOMER_STREAM.into(),
                partition_key: format!("customer-{}", n % 64),
                data: format!("order {n}").into_bytes(),
                explicit_hash_key: String::new(),
            })
            .await;
        match r {
            Err(s) if s.code() == tonic::Code::NotFound => {
                self.kinesis.ensure_stream(CUSTOMER_STREAM, 2).await?;
                Err(s)
            }
            Err(s) => Err(s),
            Ok(put) => {
                // Every other call also reads the record back (puts and gets).
                if n.is_multiple_of(2) {
                    let it = c
                        .get_shard_iterator(kpb::GetShardIteratorRequest {
                            stream_name: CUSTOMER_STREAM.into(),
                            shard_id: put.into_inner().shard_id,
                            shard_iterator_type: kpb::ShardIteratorType::Latest as i32,
                            starting_sequence_number: String::new(),
                            timestamp_ms: 0,
                        })
                        .await?
                        .into_inner()
                        .shard_iterator;
                    c.get_records(kpb::GetRecordsRequest {
                        shard_iterator: it,
                        limit: 10,
                    })
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// A task launch counts only when the task reaches RUNNING within the
    /// deadline ([`LAUNCH_DEADLINES`] call deadlines): stuck in
    /// PROVISIONING is a failure.
    async fn launch_task(&self) -> Result<(), tonic::Status> {
        let mut c = EcsClient::new(self.channel(Service::Ecs)?);
        let task = c
            .run_task(ecs::RunTaskRequest {
                task_definition: "customer-batch-job".into(),
                service: String::new(),
            })
            .await?
            .into_inner()
            .task
            .ok_or_else(|| tonic::Status::internal("RunTask returned no task"))?;
        let until = Instant::now() + self.deadline * LAUNCH_DEADLINES;
        loop {
            let tasks = c
                .describe_tasks(ecs::DescribeTasksRequest {
                    task_ids: vec![task.task_id.clone()],
                })
                .await?
                .into_inner()
                .tasks;
            if tasks.iter().any(|t| t.last_status == "RUNNING") {
                let _ = c
                    .stop_task(ecs::StopTaskRequest {
                        task_id: task.task_id.clone(),
                    })
                    .await;
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(tonic::Status::deadline_exceeded(format!(
                    "task {} still PROVISIONING after {:?}",
                    task.task_id,
                    self.deadline * LAUNCH_DEADLINES
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One second of one service's traffic.
#[derive(Debug, Clone, Default)]
pub struct Bucket {
    /// Unix second the calls completed in.
    pub sec: i64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Latencies of every call, ms.
    pub latencies_ms: Vec<f64>,
    /// gRPC code name -> failures.
    pub errors: BTreeMap<String, u64>,
}

/// A window's summary.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// gRPC code name -> failures.
    pub errors: BTreeMap<String, u64>,
}

impl Summary {
    /// Summarises calls.
    pub fn of<'a>(buckets: impl Iterator<Item = &'a Bucket>) -> Self {
        let mut s = Summary::default();
        let mut lat = Vec::new();
        for b in buckets {
            s.ok += b.ok;
            s.failed += b.failed;
            lat.extend_from_slice(&b.latencies_ms);
            for (k, v) in &b.errors {
                *s.errors.entry(k.clone()).or_default() += v;
            }
        }
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize]
            }
        };
        s.p50_ms = pct(0.5);
        s.p99_ms = pct(0.99);
        s
    }
}

/// gRPC code as its canonical name, e.g. `UNAVAILABLE`.
pub fn code_name(c: tonic::Code) -> String {
    let s = format!("{c:?}");
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// Per-service, per-second history of customer calls, and cumulative
/// counters of them for `/metrics`.
#[derive(Debug)]
pub struct Recorder {
    history: Mutex<BTreeMap<Service, VecDeque<Bucket>>>,
    /// Calls ended, by service and gRPC code (`OK` for a success).
    calls: Family<CallLabels, Counter>,
    /// Call latency, seconds, by service.
    latency: Family<ServiceLabel, Histogram, fn() -> Histogram>,
}

/// `/metrics` labels of a customer call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    code: String,
}

/// `/metrics` label of a service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

/// Latency buckets, seconds: 1 ms to 10 s.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            history: Mutex::default(),
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl Recorder {
    /// Registers the cumulative call counters and the latency histogram
    /// (`call_total{service,code}`, `call_latency_seconds{service}`).
    pub fn register_metrics(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "call",
            "Customer calls ended, by service and gRPC code (OK: succeeded)",
            self.calls.clone(),
        );
        r.register(
            "call_latency_seconds",
            "Customer call latency, by service",
            self.latency.clone(),
        );
    }

    fn record(&self, svc: Service, started: i64, r: &Result<(), tonic::Status>, ms: f64) {
        let code = match r {
            Ok(()) => "OK".to_owned(),
            Err(s) => code_name(s.code()),
        };
        self.calls
            .get_or_create(&CallLabels {
                service: svc.name().to_owned(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&ServiceLabel {
                service: svc.name().to_owned(),
            })
            .observe(ms / 1000.0);
        let mut h = self.history.lock();
        let q = h.entry(svc).or_default();
        let pos = q.iter().rposition(|b| b.sec == started);
        let b = match pos {
            Some(i) => &mut q[i],
            None => {
                q.push_back(Bucket {
                    sec: started,
                    ..Default::default()
                });
                q.make_contiguous().sort_by_key(|b| b.sec);
                while q.len() > HISTORY_SECS {
                    q.pop_front();
                }
                let i = q
                    .iter()
                    .rposition(|b| b.sec == started)
                    .unwrap_or(q.len() - 1);
                &mut q[i]
            }
        };
        b.latencies_ms.push(ms);
        match r {
            Ok(()) => b.ok += 1,
            Err(s) => {
                b.failed += 1;
                *b.errors.entry(code_name(s.code())).or_default() += 1;
            }
        }
    }

    /// The last `secs` seconds of `svc` (calls that completed then).
    pub fn window(&self, svc: Service, secs: i64) -> Summary {
        let now = unix_secs();
        let h = self.history.lock();
        Summary::of(
            h.get(&svc)
                .into_iter()
                .flatten()
                .filter(|b| b.sec > now - secs - 1 && b.sec < now),
        )
    }
}

fn unix_secs() -> i64 {
    cascade_core::now_ms() / 1000
}

/// Starts steady traffic at `rate` calls/s against every service in `targets`.
pub fn spawn(
    caller: Arc<Caller>,
    recorder: Arc<Recorder>,
    services: Vec<Service>,
    rate: f64,
    shutdown: CancellationToken,
) {
    if rate <= 0.0 {
        return;
    }
    for svc in services {
        let (caller, recorder, shutdown) = (caller.clone(), recorder.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                n += 1;
                let (caller, recorder) = (caller.clone(), recorder.clone());
                // Each call on its own task: a stalled service must not slow the clock.
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let r = caller.call(svc, n).await;
                    // Counted in the second it completed: a window then
                    // holds every call that ended in it, slow ones included.
                    recorder.record(svc, unix_secs(), &r, t0.elapsed().as_secs_f64() * 1000.0);
                });
            }
        });
    }
}
