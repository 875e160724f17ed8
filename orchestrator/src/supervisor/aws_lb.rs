//! The public AWS Kinesis endpoint: one HTTP/1.1 listener that balances
//! calls over the front-ends, as the load balancer in front of Kinesis did
//! for customers. Built on tower's power-of-two-choices balancer
//! (`tower::balance::p2c`, least pending requests) fed by a discovery
//! stream that a health loop drives.
//!
//! Health check: every 500 ms the health loop reads the supervisor's
//! latest out-of-band observation of each front-end (`Control.GetStatus`,
//! the same one `status` shows) and keeps in rotation the main-fleet
//! front-ends whose shard map is ready. When none is healthy it fails open
//! to every front-end that still answers, as AWS's load balancers do, so a
//! client then gets the front-ends' own answer (ServiceUnavailable naming
//! the unusable shard map) rather than the balancer's.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
use tower::util::{BoxCloneService, BoxService};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Req = http::Request<Full<Bytes>>;
type Resp = http::Response<Full<Bytes>>;

/// Largest request body the endpoint forwards (the front-end's limit).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How often the health loop looks at the fleet.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// How long a call waits for any front-end to be in rotation, and for its
/// answer, before the endpoint answers 503 itself.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One front-end as the health check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Instance name plus address (a restarted instance is a new target).
    pub key: String,
    /// `host:port` of its listener (which also serves the AWS API).
    pub addr: String,
    /// Its shard map is ready.
    pub healthy: bool,
    /// Its process answers at all (fail-open candidates).
    pub up: bool,
}

/// The front-ends in rotation: the healthy ones, or (failing open) every
/// one that is up when none is healthy.
pub fn in_rotation(targets: &[Target]) -> Vec<&Target> {
    let healthy: Vec<&Target> = targets.iter().filter(|t| t.healthy).collect();
    if healthy.is_empty() {
        targets.iter().filter(|t| t.up).collect()
    } else {
        healthy
    }
}

/// A service forwarding calls to one front-end.
fn target_service(
    client: Client<HttpConnector, Full<Bytes>>,
    addr: String,
) -> BoxService<Req, Resp, BoxError> {
    BoxService::new(tower::service_fn(move |mut req: Req| {
        let client = client.clone();
        let addr = addr.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *req.uri_mut() = format!("http://{addr}{path}").parse()?;
            let resp = client.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(http::Response::from_parts(parts, Full::new(body)))
        }
    }))
}

/// The running endpoint.
#[derive(Debug)]
pub struct AwsEndpoint {
    /// The bound address.
    pub addr: SocketAddr,
}

/// Binds `listen` and serves the balanced endpoint until `shutdown`;
/// `targets` is called every [`HEALTH_INTERVAL`] for the fleet's health.
pub async fn start<F>(
    listen: SocketAddr,
    targets: F,
    shutdown: CancellationToken,
) -> anyhow::Result<AwsEndpoint>
where
    F: Fn() -> Vec<Target> + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("--kinesis-aws-listen {listen}: cannot bind: {e}"))?;
    let addr = listener.local_addr()?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<Change<String, BoxService<Req, Resp, BoxError>>, Infallible>,
    >(64);
    let discover = PendingRequestsDiscover::new(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        CompleteOnResponse::default(),
    );
    let balance = Balance::new(discover);
    let svc: BoxCloneService<Req, Resp, BoxError> =
        BoxCloneService::new(tower::buffer::Buffer::new(balance, 1024));

    // The health loop: the discovery stream's only writer.
    let health_token = shutdown.clone();
    tokio::spawn(async move {
        let mut current: BTreeMap<String, String> = BTreeMap::new();
        let mut tick = tokio::time::interval(HEALTH_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = health_token.cancelled() => return,
            }
            let all = targets();
            let want: BTreeMap<String, String> = in_rotation(&all)
                .into_iter()
                .map(|t| (t.key.clone(), t.addr.clone()))
                .collect();
            for key in current.keys().filter(|k| !want.contains_key(*k)) {
                tracing::info!(target = %key, "AWS endpoint: out of rotation");
                if tx.send(Ok(Change::Remove(key.clone()))).await.is_err() {
                    return;
                }
            }
            for (key, addr) in want.iter().filter(|(k, _)| !current.contains_key(*k)) {
                tracing::info!(target = %key, "AWS endpoint: in rotation");
                let s = target_service(client.clone(), addr.clone());
                if tx.send(Ok(Change::Insert(key.clone(), s))).await.is_err() {
                    return;
                }
            }
            current = want;
        }
    });

    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "AWS endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let svc = svc.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(move |req| {
                    let svc = svc.clone();
                    async move { Ok::<_, Infallible>(forward(svc, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handler);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(error = %e, "AWS endpoint connection ended");
                    },
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    });
    tracing::info!(%addr, "AWS Kinesis endpoint listening");
    Ok(AwsEndpoint { addr })
}

/// One call through the balancer; the balancer's own failures are
/// answered in the AWS error shape.
async fn forward(
    svc: BoxCloneService<Req, Resp, BoxError>,
    req: http::Request<hyper::body::Incoming>,
) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                http::StatusCode::BAD_REQUEST,
                "SerializationException",
                &format!("could not read the request body (at most {MAX_BODY} bytes): {e}"),
            );
        }
    };
    let req = http::Request::from_parts(parts, Full::new(body));
    match tokio::time::timeout(CALL_TIMEOUT, svc.oneshot(req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => error(
            http::StatusCode::BAD_GATEWAY,
            "BadGateway",
            &format!("load balancer: the front-end chosen did not answer: {e}"),
        ),
        Err(_) => error(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &format!("load balancer: no front-end answered within {CALL_TIMEOUT:?}"),
        ),
    }
}

fn error(status: http::StatusCode, kind: &'static str, message: &str) -> Resp {
    let body = serde_json::json!({ "__type": kind, "message": message }).to_string();
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    h.insert("x-amzn-ErrorType", http::HeaderValue::from_static(kind));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(key: &str, healthy: bool, up: bool) -> Target {
        Target {
            key: key.into(),
            addr: format!("127.0.0.1:1{}", key.len()),
            healthy,
            up,
        }
    }

    #[test]
    fn healthy_front_ends_are_in_rotation_and_it_fails_open_without_any() {
        let keys = |v: Vec<&Target>| v.into_iter().map(|t| t.key.clone()).collect::<Vec<_>>();
        let fleet = [
            t("a", true, true),
            t("b", false, true),
            t("c", false, false),
        ];
        assert_eq!(keys(in_rotation(&fleet)), ["a"]);
        let sick = [
            t("a", false, true),
            t("b", false, true),
            t("c", false, false),
        ];
        assert_eq!(keys(in_rotation(&sick)), ["a", "b"]);
        assert!(in_rotation(&[t("c", false, false)]).is_empty());
    }
}
