//! End to end over real sockets: a fake CloudWatch that fails or succeeds on
//! demand, the lambda server from `lambda::run`, and gRPC clients. Checks that
//! a CloudWatch outage becomes RESOURCE_EXHAUSTED invocations through the
//! metrics agent's buffer, that recovery drains it, and that the bound helps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cascade_core::testkit::eventually_async;
use cascade_proto::cloudwatch as cw;
use cascade_proto::cloudwatch::cloud_watch_server::{CloudWatch, CloudWatchServer};
use cascade_proto::control::control_client::ControlClient;
use cascade_proto::control::{ConfigureRequest, GetStatusRequest};
use cascade_proto::eventbridge::Event;
use cascade_proto::eventbridge::event_target_client::EventTargetClient;
use cascade_proto::lambda::InvokeRequest;
use cascade_proto::lambda::lambda_client::LambdaClient;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

/// A CloudWatch that fails PutMetricData while `failing` is set.
#[derive(Debug, Clone, Default)]
struct FakeCloudWatch {
    /// Whether PutMetricData fails (as it did while Kinesis was down).
    failing: Arc<AtomicBool>,
    /// Datums accepted in namespace AWS/Lambda.
    lambda_datums: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl CloudWatch for FakeCloudWatch {
    async fn put_metric_data(
        &self,
        req: Request<cw::PutMetricDataRequest>,
    ) -> Result<Response<cw::PutMetricDataResponse>, Status> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(Status::unavailable("kinesis: shard map unusable"));
        }
        let r = req.into_inner();
        if r.namespace == "AWS/Lambda" {
            self.lambda_datums
                .fetch_add(r.metric_data.len() as u64, Ordering::Relaxed);
        }
        Ok(Response::new(cw::PutMetricDataResponse {
            accepted_via: "kinesis".into(),
        }))
    }
    async fn get_metric_data(
        &self,
        _: Request<cw::GetMetricDataRequest>,
    ) -> Result<Response<cw::GetMetricDataResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    async fn put_metric_alarm(
        &self,
        _: Request<cw::PutMetricAlarmRequest>,
    ) -> Result<Response<cw::PutMetricAlarmResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    async fn describe_alarms(
        &self,
        _: Request<cw::DescribeAlarmsRequest>,
    ) -> Result<Response<cw::DescribeAlarmsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
}

async fn start_cloudwatch(fake: FakeCloudWatch, token: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake cloudwatch");
    let addr = listener.local_addr().expect("local addr").to_string();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(CloudWatchServer::new(fake))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                token.cancelled_owned(),
            ),
    );
    addr
}

fn echo(payload: &[u8]) -> InvokeRequest {
    InvokeRequest {
        function_name: "echo".into(),
        payload: payload.to_vec(),
        rounds: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_outage_becomes_memory_contention_and_recovers() {
    let token = CancellationToken::new();
    let fake = FakeCloudWatch::default();
    fake.failing.store(true, Ordering::Relaxed);
    let cw_addr = start_cloudwatch(fake.clone(), token.clone()).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind lambda");
    let addr = listener.local_addr().expect("local addr").to_string();
    let config = lambda::LambdaConfig {
        cloudwatch: cw_addr,
        memory_budget: 64 * 1024,
        invocation_memory: 16 * 1024,
        log_bytes_per_invocation: 4096,
        agent_buffer_max: None,
        agent_flush_interval: Duration::from_millis(20),
        time: cascade_core::kinesis::TimeArgs { time_scale: 360.0 },
    };
    let server = tokio::spawn(lambda::run(listener, config, token.clone()));

    eventually_async("lambda SERVING", Duration::from_secs(5), || async {
        if cascade_core::clients::is_serving(&addr).await {
            Ok(())
        } else {
            Err("not serving".to_owned())
        }
    })
    .await;
    let channel = cascade_core::clients::connect(&addr)
        .await
        .expect("connect lambda");
    let mut lambda = LambdaClient::new(channel.clone());
    let mut events = EventTargetClient::new(channel.clone());
    let mut control = ControlClient::new(channel);

    // An event EventBridge put 12 s ago arrives now: late, and it says so.
    events
        .deliver(Event {
            event_id: "late-1".into(),
            detail: "{}".into(),
            put_at_ms: cascade_core::now_ms() - 12_000,
            ..Default::default()
        })
        .await
        .expect("a late event still runs");

    // CloudWatch down: every invocation adds a record the agent cannot flush.
    let refusal = eventually_async("an invocation refused", Duration::from_secs(3), || {
        let mut lambda = lambda.clone();
        async move {
            match lambda.invoke(echo(b"x")).await {
                Ok(_) => Err("invocation succeeded".to_owned()),
                Err(s) if s.code() == Code::ResourceExhausted => Ok(s.message().to_owned()),
                Err(s) => panic!("unexpected status {s:?}"),
            }
        }
    })
    .await;
    assert!(
        refusal.contains("memory contention on the invocation host"),
        "{refusal}"
    );
    assert!(
        refusal.contains("because its flushes fail: CloudWatch PutMetricData UNAVAILABLE"),
        "{refusal}"
    );
    let delivered = events
        .deliver(Event {
            detail: "{}".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        delivered.map(|_| ()).map_err(|s| s.code()),
        Err(Code::ResourceExhausted)
    );
    let info = control
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .info;
    assert!(
        info["agent_flush_failures"].parse::<u64>().unwrap_or(0) > 0,
        "{info:?}"
    );
    assert_eq!(
        info["agent_buffer_bytes"],
        (13 * 4096).to_string(),
        "{info:?}"
    );
    assert!(
        info["invocations_refused"].parse::<u64>().unwrap_or(0) >= 1,
        "{info:?}"
    );
    assert_eq!(info["depends_on"], "cloudwatch,eventbridge");
    assert!(
        info["cause"].starts_with("invocations refused: the metrics agent holds")
            && info["cause"].contains("CloudWatch PutMetricData"),
        "{info:?}"
    );
    assert!(
        info["cause"].contains("; EventBridge delivered events 12."),
        "{info:?}"
    );
    assert_eq!(info["late_event_invocations"], "1", "{info:?}");
    assert!(
        info["last_event_lateness_ms"].parse::<i64>().unwrap_or(0) >= 12_000,
        "{info:?}"
    );

    // CloudWatch back: the flusher drains the buffer and invocations run again.
    fake.failing.store(false, Ordering::Relaxed);
    eventually_async("invocations admitted again", Duration::from_secs(3), || {
        let mut lambda = lambda.clone();
        async move {
            lambda
                .invoke(echo(b"y"))
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
        }
    })
    .await;
    assert!(fake.lambda_datums.load(Ordering::Relaxed) >= 2 * 13);

    // Another event put 12 s ago, now after this host refused deliveries:
    // Lambda may have held it up itself, so it is not held against EventBridge.
    events
        .deliver(Event {
            event_id: "late-2".into(),
            detail: "{}".into(),
            put_at_ms: cascade_core::now_ms() - 12_000,
            ..Default::default()
        })
        .await
        .expect("runs once memory is free");
    let info = control
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .info;
    assert_eq!(info["late_event_invocations"], "1", "{info:?}");
    assert_eq!(info["event_invocations_held_by_refusals"], "1", "{info:?}");

    // The remediation: a bounded agent buffer keeps invocations running.
    let applied = control
        .configure(ConfigureRequest {
            key: "agent_buffer_max".into(),
            value: "8192".into(),
        })
        .await
        .expect("configure")
        .into_inner()
        .applied;
    assert_eq!(applied, "8192");
    fake.failing.store(true, Ordering::Relaxed);
    for i in 0..50 {
        if let Err(s) = lambda.invoke(echo(b"z")).await {
            panic!("bounded buffer: invocation {i} failed: {s:?}");
        }
    }
    let hashed = lambda
        .invoke(InvokeRequest {
            function_name: "hash".into(),
            payload: b"abc".to_vec(),
            rounds: 1000,
        })
        .await
        .expect("hash")
        .into_inner();
    assert_eq!(hashed.payload.len(), 16);
    let info = control
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .info;
    assert!(
        info["dropped_bytes"].parse::<u64>().unwrap_or(0) > 0,
        "{info:?}"
    );
    assert!(
        info["agent_buffer_bytes"]
            .parse::<u64>()
            .unwrap_or(u64::MAX)
            <= 8192,
        "{info:?}"
    );

    drop((lambda, events, control));
    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("lambda stops within 5 s")
        .expect("lambda task");
    assert!(result.is_ok(), "{result:?}");
}
