//! End to end, in one process: a Kinesis back end, one front-end and Cognito
//! on loopback sockets. Sign-ins flush to the real access-log stream; when the
//! only front-end goes away, the buffer fills and (bug mode) sign-ins hit the
//! client's deadline, while fixed mode keeps serving.

use std::time::Duration;

use cascade_core::testkit::{eventually_async, holds};
use cascade_proto::cognito as pb;
use cascade_proto::cognito::cognito_client::CognitoClient;
use cascade_proto::control::control_client::ControlClient;
use cascade_proto::control::{ConfigureRequest, GetStatusRequest};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct FrontendArgs {
    #[command(flatten)]
    config: kinesis_frontend::FrontendConfig,
}

#[derive(Debug, Parser)]
struct BackendArgs {
    #[command(flatten)]
    config: kinesis_backend::BackendConfig,
}

#[derive(Debug, Parser)]
struct CognitoArgs {
    #[command(flatten)]
    config: cognito::CognitoConfig,
}

async fn bind() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let a = l.local_addr().expect("local addr").to_string();
    (l, a)
}

async fn channel(addr: &str) -> Channel {
    cascade_core::clients::lazy_channel(addr, Duration::from_secs(5)).expect("channel")
}

async fn info(control: &mut ControlClient<Channel>, key: &str) -> String {
    control
        .get_status(GetStatusRequest {})
        .await
        .map(|r| r.into_inner().info.get(key).cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn sign_in_req() -> tonic::Request<pb::SignInRequest> {
    let mut r = tonic::Request::new(pb::SignInRequest {
        username: "operator".into(),
        password: "operator-password".into(),
    });
    r.set_timeout(Duration::from_millis(300));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kinesis_outage_blocks_sign_ins_in_bug_mode_only() {
    let (bl, backend) = bind().await;
    let backend_stop = CancellationToken::new();
    let b = BackendArgs::parse_from(["backend"]).config;
    tokio::spawn(kinesis_backend::run(bl, b, backend_stop.clone()));

    let (fl, _) = bind().await;
    let frontend_stop = CancellationToken::new();
    let f =
        FrontendArgs::parse_from(["frontend", "--id=fe-0", &format!("--backend={backend}")]).config;
    let frontend = tokio::spawn(kinesis_frontend::run(fl, f, 0, frontend_stop.clone()));

    let (cl, cognito_addr) = bind().await;
    let cognito_stop = CancellationToken::new();
    let c = CognitoArgs::parse_from([
        "cognito",
        &format!("--kinesis-backend={backend}"),
        "--access-log-buffer-bytes=4096",
        "--flush-interval=20ms",
        "--max-in-flight=2",
    ])
    .config;
    tokio::spawn(cognito::run(cl, c, cognito_stop.clone()));

    let client = CognitoClient::new(channel(&cognito_addr).await);
    let mut control = ControlClient::new(channel(&cognito_addr).await);

    // Healthy: sign-ins succeed and their records reach Kinesis.
    eventually_async("a flushed sign-in", Duration::from_secs(10), || {
        let (mut client, mut control) = (client.clone(), control.clone());
        async move {
            let ok = client.sign_in(sign_in_req()).await.is_ok();
            let flushed = info(&mut control, "flushed_records").await;
            holds(ok && flushed.parse::<u64>().is_ok_and(|n| n > 0), || {
                format!("ok={ok} flushed_records={flushed:?}")
            })
        }
    })
    .await;

    // The only front-end goes away: flushes fail, the buffer fills, sign-ins block.
    frontend_stop.cancel();
    let _ = frontend.await;
    let last = eventually_async("a blocked sign-in", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            match client.sign_in(sign_in_req()).await {
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    ) =>
                {
                    Ok(s.code())
                }
                r => Err(format!("{r:?}")),
            }
        }
    })
    .await;
    assert!(
        info(&mut control, "flush_failures")
            .await
            .parse::<u64>()
            .is_ok_and(|n| n > 0)
    );
    assert_ne!(info(&mut control, "last_flush_error").await, "", "{last:?}");
    // The evidence of the edge: while a handler is blocked, the cause names Kinesis.
    assert_eq!(info(&mut control, "depends_on").await, "kinesis");
    let mut waiting = client.clone();
    let held = tokio::spawn(async move {
        let mut r = sign_in_req();
        r.set_timeout(Duration::from_secs(5));
        waiting.sign_in(r).await
    });
    eventually_async(
        "a cause naming Kinesis while a handler is blocked",
        Duration::from_secs(4),
        || {
            let mut control = control.clone();
            async move {
                let cause = info(&mut control, "cause").await;
                holds(
                    cause.starts_with("handlers blocked on the access-log buffer")
                        // The flush fails either at the front-end (PutRecords)
                        // or, once the stopped front-end has left membership,
                        // at finding one ("Kinesis: no front-ends"): both name Kinesis.
                        && cause.contains("last flush: Kinesis"),
                    || format!("cause {cause:?}"),
                )
            }
        },
    )
    .await;
    held.abort();

    // The remediation, live: fixed mode sheds and serves.
    control
        .configure(ConfigureRequest {
            key: "mode".into(),
            value: "fixed".into(),
        })
        .await
        .expect("configure mode");
    eventually_async(
        "fixed mode to serve a sign-in",
        Duration::from_secs(5),
        || {
            let mut client = client.clone();
            async move {
                client
                    .sign_in(sign_in_req())
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("{s:?}"))
            }
        },
    )
    .await;
    assert!(
        info(&mut control, "shed_records")
            .await
            .parse::<u64>()
            .is_ok_and(|n| n > 0)
    );

    cognito_stop.cancel();
    backend_stop.cancel();
}
