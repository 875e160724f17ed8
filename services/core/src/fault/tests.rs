//! Tests of the fault layer against real tonic servers on 127.0.0.1:0: inbound
//! faults through [`FaultLayer`], outbound ones through channels built by
//! [`crate::clients::lazy_channel`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cascade_proto::control::control_client::ControlClient;
use cascade_proto::control::{ClearFaultRequest, GetStatusRequest, GrpcFault, ListFaultsRequest};
use cascade_proto::eventbridge::event_target_client::EventTargetClient;
use cascade_proto::eventbridge::event_target_server::{EventTarget, EventTargetServer};
use cascade_proto::eventbridge::{DeliverResponse, Event};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};

use super::*;
use crate::serve::{BasicStatus, HealthReporter};
use crate::testkit::{eventually_async, holds};

/// A trivial service that counts deliveries, so tests see whether a handler ran.
#[derive(Clone, Default)]
struct Target {
    /// Deliveries handled.
    calls: Arc<AtomicU32>,
}

#[tonic::async_trait]
impl EventTarget for Target {
    async fn deliver(&self, _req: Request<Event>) -> Result<Response<DeliverResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(DeliverResponse {}))
    }
}

/// A server with health, Control and [`Target`], behind a fault layer.
struct Fixture {
    /// Where it listens.
    addr: SocketAddr,
    /// Deliveries its handler ran.
    calls: Arc<AtomicU32>,
    /// Keeps health answering SERVING.
    _reporter: HealthReporter,
}

async fn start(registry: FaultRegistry) -> anyhow::Result<Fixture> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let target = Target::default();
    let calls = target.calls.clone();
    let (routes, reporter) = crate::serve::base_routes(Arc::new(BasicStatus {
        name: "fault-test".into(),
    }))?;
    let routes = routes.add_service(EventTargetServer::new(target));
    tokio::spawn(
        Server::builder()
            .layer(FaultLayer::new(registry))
            .add_routes(routes)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok(Fixture {
        addr,
        calls,
        _reporter: reporter,
    })
}

/// A plain channel (no outbound faults) with a deadline and maybe a caller name.
async fn channel(
    addr: SocketAddr,
    user_agent: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Channel> {
    let mut ep = Endpoint::from_shared(format!("http://{addr}"))?.timeout(timeout);
    if let Some(ua) = user_agent {
        ep = ep.user_agent(ua.to_owned())?;
    }
    Ok(ep.connect().await?)
}

async fn target_client(addr: SocketAddr) -> anyhow::Result<EventTargetClient<Channel>> {
    Ok(EventTargetClient::new(
        channel(addr, None, Duration::from_secs(5)).await?,
    ))
}

async fn deliver(client: &mut EventTargetClient<Channel>) -> Result<(), Status> {
    client.deliver(Event::default()).await.map(|_| ())
}

/// A fault of `kind` that hits every matching call.
fn fault(id: &str, kind: &str) -> GrpcFault {
    GrpcFault {
        id: id.into(),
        kind: kind.into(),
        probability: 1.0,
        ..Default::default()
    }
}

fn error_fault(id: &str, code: &str) -> GrpcFault {
    GrpcFault {
        code: code.into(),
        ..fault(id, "error")
    }
}

/// Waits (2 s) until `fx`'s handler has run exactly `runs` times.
async fn handler_calls(fx: &Fixture, runs: u32, kind: &str) {
    eventually_async(
        &format!("{kind}: the handler to have run {runs} times"),
        Duration::from_secs(2),
        || {
            let calls = fx.calls.load(Ordering::SeqCst);
            std::future::ready(holds(calls == runs, || format!("{calls} calls")))
        },
    )
    .await;
}

/// Waits (3 s) until a delivery through `c` succeeds again.
async fn calls_succeed_after_clear(c: &EventTargetClient<Channel>, kind: &str) {
    eventually_async(
        &format!("{kind}: calls to succeed after clear"),
        Duration::from_secs(3),
        || {
            let mut c = c.clone();
            async move { deliver(&mut c).await.map_err(|e| format!("{e:?}")) }
        },
    )
    .await;
}

#[test]
fn names_and_codes_parse() {
    assert_eq!(service_name("cognito-0"), "cognito");
    assert_eq!(service_name("kinesis-frontend-12"), "kinesis-frontend");
    assert_eq!(service_name("kinesis-backend"), "kinesis-backend");
    assert_eq!(service_name("-3"), "-3");
    assert_eq!(
        caller_instance("cascade/cognito-0 tonic/0.14.9"),
        Some("cognito-0")
    );
    assert_eq!(caller_instance("tonic/0.14.9"), None);
    for (name, code) in CODE_NAMES {
        assert_eq!(parse_code(name), Some(code), "{name}");
        assert_eq!(code_name(code), name);
    }
    assert_eq!(parse_code("unavailable"), Some(Code::Unavailable));
    assert_eq!(parse_code("NOPE"), None);
}

#[test]
fn to_matches_addresses_instances_and_services() {
    let peers = "cloudwatch-0=127.0.0.1:7001, cognito-0=127.0.0.1:7002";
    assert!(to_matches("127.0.0.1:7001", "127.0.0.1:7001", ""));
    assert!(to_matches("cloudwatch-0", "127.0.0.1:7001", peers));
    assert!(to_matches("cloudwatch", "127.0.0.1:7001", peers));
    assert!(!to_matches("cloudwatch", "127.0.0.1:7002", peers));
    assert!(!to_matches("cloudwatch-1", "127.0.0.1:7001", peers));
    assert!(!to_matches("cloudwatch", "127.0.0.1:7001", ""));
}

#[test]
fn invalid_faults_are_rejected_naming_the_field() {
    let reg = FaultRegistry::new();
    let cases: [(GrpcFault, &str); 9] = [
        (fault("", "hang"), "id:"),
        (fault("x", "explode"), "kind:"),
        (
            GrpcFault {
                probability: 0.0,
                ..fault("x", "hang")
            },
            "probability:",
        ),
        (
            GrpcFault {
                probability: 1.5,
                ..fault("x", "hang")
            },
            "probability:",
        ),
        (
            GrpcFault {
                probability: f64::NAN,
                ..fault("x", "hang")
            },
            "probability:",
        ),
        (error_fault("x", "TEAPOT"), "code:"),
        (error_fault("x", "OK"), "code:"),
        (fault("x", "latency"), "latency_ms:"),
        (
            GrpcFault {
                to: "cloudwatch".into(),
                method: "PutMetricData".into(),
                ..fault("x", "hang")
            },
            "method:",
        ),
    ];
    for (f, field) in cases {
        let err = reg.inject(f.clone()).expect_err("invalid fault accepted");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument, "{f:?}");
        assert!(status.message().starts_with(field), "{f:?}: {status:?}");
    }
    assert!(reg.list().is_empty());
}

#[test]
fn same_id_replaces_and_clear_counts() {
    let reg = FaultRegistry::new();
    reg.inject(GrpcFault {
        latency_ms: 10,
        ..fault("a", "latency")
    })
    .expect("valid");
    reg.inject(error_fault("a", "UNAVAILABLE")).expect("valid");
    reg.inject(fault("b", "hang")).expect("valid");
    let kinds: Vec<_> = reg.list().into_iter().map(|f| (f.id, f.kind)).collect();
    assert_eq!(
        kinds,
        [("a".into(), "error".into()), ("b".into(), "hang".into())]
    );
    assert_eq!(reg.clear("nope"), 0);
    assert_eq!(reg.clear("a"), 1);
    reg.inject(fault("c", "blackhole")).expect("valid");
    assert_eq!(reg.clear(""), 2);
    assert!(reg.list().is_empty());
}

#[tokio::test]
async fn latency_delays_at_least_the_configured_time() -> anyhow::Result<()> {
    let reg = FaultRegistry::new();
    let fx = start(reg.clone()).await?;
    let mut c = target_client(fx.addr).await?;
    reg.inject(GrpcFault {
        latency_ms: 200,
        jitter_ms: 50,
        ..fault("slow", "latency")
    })?;
    let t = Instant::now();
    deliver(&mut c).await?;
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(200), "took {took:?}");
    assert_eq!(fx.calls.load(Ordering::SeqCst), 1, "the call still ran");
    Ok(())
}

#[tokio::test]
async fn error_answers_the_chosen_code_and_clearing_restores() -> anyhow::Result<()> {
    let reg = FaultRegistry::new();
    let fx = start(reg.clone()).await?;
    let mut c = target_client(fx.addr).await?;
    reg.inject(error_fault("boom", "RESOURCE_EXHAUSTED"))?;
    let err = deliver(&mut c).await.expect_err("fault must fail the call");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.message(), "injected fault boom");
    reg.inject(GrpcFault {
        message: "throttled".into(),
        ..error_fault("boom", "UNAVAILABLE")
    })?;
    let err = deliver(&mut c).await.expect_err("fault must fail the call");
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "throttled")
    );
    assert_eq!(fx.calls.load(Ordering::SeqCst), 0, "the handler never ran");
    assert_eq!(reg.clear("boom"), 1);
    deliver(&mut c).await?;
    Ok(())
}

#[tokio::test]
async fn probability_is_seeded_and_roughly_right() -> anyhow::Result<()> {
    let reg = FaultRegistry::new();
    let fx = start(reg.clone()).await?;
    let mut c = target_client(fx.addr).await?;
    let half = |seed| GrpcFault {
        probability: 0.5,
        seed,
        ..error_fault("coin", "UNAVAILABLE")
    };
    let mut patterns = Vec::new();
    for seed in [7, 7, 8] {
        reg.inject(half(seed))?;
        let mut pattern = Vec::new();
        for _ in 0..200 {
            pattern.push(deliver(&mut c).await.is_err());
        }
        patterns.push(pattern);
    }
    let failed = patterns[0].iter().filter(|f| **f).count();
    assert!((60..=140).contains(&failed), "{failed} of 200 failed");
    assert_eq!(patterns[0], patterns[1], "same seed, same draws");
    assert_ne!(patterns[0], patterns[2], "another seed, other draws");
    Ok(())
}

#[tokio::test]
async fn method_filter_selects_calls() -> anyhow::Result<()> {
    let reg = FaultRegistry::new();
    let fx = start(reg.clone()).await?;
    let mut c = target_client(fx.addr).await?;
    for (method, hit) in [
        ("Deliver", true),
        ("/cascade.eventbridge.v1.EventTarget/Deliver", true),
        ("cascade.eventbridge.v1.EventTarget/Deliver", true),
        ("PutEvents", false),
        ("/cascade.eventbridge.v1.EventBridge/Deliver", false),
    ] {
        reg.inject(GrpcFault {
            method: method.into(),
            ..error_fault("m", "UNAVAILABLE")
        })?;
        assert_eq!(deliver(&mut c).await.is_err(), hit, "method {method:?}");
    }
    Ok(())
}

#[tokio::test]
async fn from_filter_matches_instance_or_service() -> anyhow::Result<()> {
    let reg = FaultRegistry::new();
    let fx = start(reg.clone()).await?;
    let t = Duration::from_secs(5);
    let mut cognito = EventTargetClient::new(channel(fx.addr, Some("cascade/cognito-0"), t).await?);
    let mut frontend =
        EventTargetClient::new(channel(fx.addr, Some("cascade/kinesis-frontend-2"), t).await?);
    let mut anonymous = target_client(fx.addr).await?;
    for (from, cognito_hit, frontend_hit) in [
        ("cognito", true, false),
        ("cognito-0", true, false),
        ("cognito-1", false, false),
        ("kinesis-frontend", false, true),
    ] {
        reg.inject(GrpcFault {
            from: from.into(),
            ..error_fault("f", "UNAVAILABLE")
        })?;
        assert_eq!(deliver(&mut cognito).await.is_err(), cognito_hit, "{from}");
        assert_eq!(
            deliver(&mut frontend).await.is_err(),
            frontend_hit,
            "{from}"
        );
        assert!(
            deliver(&mut anonymous).await.is_ok(),
            "{from}: no caller name"
        );
    }
    Ok(())
}

/// Hang and blackhole both end at the caller's deadline; only hang runs the handler.
#[tokio::test]
async fn hang_and_blackhole_end_at_the_deadline() -> anyhow::Result<()> {
    let reg = FaultRegistry::new();
    let fx = start(reg.clone()).await?;
    let deadline = Duration::from_millis(300);
    let mut c = EventTargetClient::new(channel(fx.addr, None, deadline).await?);
    for (kind, handler_runs) in [("blackhole", 0), ("hang", 1)] {
        reg.inject(fault("stuck", kind))?;
        let t = Instant::now();
        let err = deliver(&mut c).await.expect_err("a stuck call must fail");
        let took = t.elapsed();
        assert_eq!(err.code(), Code::Cancelled, "{kind}: {err:?}");
        assert!(
            took >= deadline && took < Duration::from_secs(3),
            "{kind}: took {took:?}"
        );
        handler_calls(&fx, handler_runs, kind).await;
    }
    reg.clear("");
    deliver(&mut c).await?;
    Ok(())
}

#[tokio::test]
async fn health_control_and_reflection_are_never_faulted() -> anyhow::Result<()> {
    let reg = FaultRegistry::new();
    let fx = start(reg.clone()).await?;
    reg.inject(error_fault("all", "UNAVAILABLE"))?;
    let ch = channel(fx.addr, None, Duration::from_secs(2)).await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?;
    ControlClient::new(ch.clone())
        .get_status(GetStatusRequest {})
        .await?;
    let mut c = EventTargetClient::new(ch);
    assert!(
        deliver(&mut c).await.is_err(),
        "the service itself is faulted"
    );
    Ok(())
}

#[tokio::test]
async fn control_rpcs_drive_the_process_registry() -> anyhow::Result<()> {
    let fx = start(FaultRegistry::new()).await?;
    let mut control = ControlClient::new(channel(fx.addr, None, Duration::from_secs(2)).await?);
    // The process-global registry is shared by every test here: a method no
    // test calls keeps this fault from touching anything else.
    let f = GrpcFault {
        method: "NeverCalledByTests".into(),
        seed: 99,
        ..error_fault("control-rpc", "UNAVAILABLE")
    };
    control.inject_fault(f.clone()).await?;
    let listed = control
        .list_faults(ListFaultsRequest {})
        .await?
        .into_inner();
    assert!(listed.faults.contains(&f), "{listed:?}");
    let bad = control
        .inject_fault(fault("control-rpc-bad", "explode"))
        .await
        .expect_err("invalid kind");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let clear = |id: &str| ClearFaultRequest { id: id.into() };
    let cleared = control
        .clear_fault(clear("control-rpc"))
        .await?
        .into_inner();
    assert_eq!(cleared.cleared, 1);
    let cleared = control
        .clear_fault(clear("control-rpc"))
        .await?
        .into_inner();
    assert_eq!(cleared.cleared, 0);
    Ok(())
}

/// A dependency server (never faulted itself) and a channel to it built the way
/// services build theirs, subject to the global registry's outbound faults.
async fn dependency(timeout: Duration) -> anyhow::Result<(Fixture, EventTargetClient<Channel>)> {
    let fx = start(FaultRegistry::new()).await?;
    let ch = crate::clients::lazy_channel(&fx.addr.to_string(), timeout)?;
    let mut c = EventTargetClient::new(ch);
    deliver(&mut c)
        .await
        .context("dependency answers before any fault")?;
    Ok((fx, c))
}

#[tokio::test]
async fn outbound_latency_delays_calls_to_that_dependency() -> anyhow::Result<()> {
    let (fx, mut c) = dependency(Duration::from_secs(5)).await?;
    let (_other, mut other) = dependency(Duration::from_secs(5)).await?;
    let id = format!("out-latency-{}", fx.addr.port());
    registry().inject(GrpcFault {
        to: fx.addr.to_string(),
        latency_ms: 300,
        ..fault(&id, "latency")
    })?;
    let t = Instant::now();
    deliver(&mut c).await?;
    let took = t.elapsed();
    let t = Instant::now();
    deliver(&mut other).await?;
    let other_took = t.elapsed();
    registry().clear(&id);
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    assert!(
        other_took < Duration::from_millis(300),
        "another dependency took {other_took:?}"
    );
    let t = Instant::now();
    deliver(&mut c).await?;
    let took = t.elapsed();
    assert!(took < Duration::from_millis(300), "after clear: {took:?}");
    Ok(())
}

#[tokio::test]
async fn outbound_error_fails_calls_unavailable_until_cleared() -> anyhow::Result<()> {
    let (fx, mut c) = dependency(Duration::from_secs(2)).await?;
    let id = format!("out-error-{}", fx.addr.port());
    registry().inject(GrpcFault {
        to: fx.addr.to_string(),
        ..error_fault(&id, "UNAVAILABLE")
    })?;
    // The live connection breaks as soon as the fault lands; a call racing
    // that teardown may see CANCELLED, after which every call is refused at
    // connect time.
    eventually_async("a call to fail UNAVAILABLE", Duration::from_secs(2), || {
        let mut c = c.clone();
        async move {
            match deliver(&mut c).await {
                Err(e) if e.code() == Code::Unavailable => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    for _ in 0..3 {
        let err = deliver(&mut c).await.expect_err("dependency is refused");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    let before = fx.calls.load(Ordering::SeqCst);
    registry().clear(&id);
    assert_eq!(before, 1, "no refused call reached the dependency");
    calls_succeed_after_clear(&c, "error").await;
    Ok(())
}

#[tokio::test]
async fn outbound_blackhole_and_hang_stall_until_the_deadline() -> anyhow::Result<()> {
    let deadline = Duration::from_millis(300);
    for (kind, handler_runs) in [("blackhole", 1), ("hang", 2)] {
        let (fx, mut c) = dependency(deadline).await?;
        let id = format!("out-{kind}-{}", fx.addr.port());
        registry().inject(GrpcFault {
            to: fx.addr.to_string(),
            ..fault(&id, kind)
        })?;
        let t = Instant::now();
        let err = deliver(&mut c).await.expect_err("a stalled call must fail");
        let took = t.elapsed();
        assert_eq!(err.code(), Code::Cancelled, "{kind}: {err:?}");
        assert!(took >= deadline, "{kind}: took {took:?}");
        // Hang lets the request through and loses the answer; blackhole loses both.
        handler_calls(&fx, handler_runs, kind).await;
        registry().clear(&id);
        calls_succeed_after_clear(&c, kind).await;
    }
    Ok(())
}
