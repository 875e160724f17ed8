//! Typed client connections with deadlines. Every call a Cascade process makes
//! to another goes through a channel built here, so connect and request
//! timeouts are uniform, every call names its caller (`user-agent`), and
//! outbound faults apply to every dependency connection.

use std::sync::OnceLock;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::fault::{self, FaultConnector};

/// Default time to establish a TCP + HTTP/2 connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Env var naming this process's instance (e.g. `cognito-0`); the orchestrator
/// sets it for every child.
pub const INSTANCE_ENV: &str = "CASCADE_INSTANCE";

/// This process's instance name from [`INSTANCE_ENV`], read once; `unknown`
/// when unset or not a plain name (it must fit in a header value).
pub fn instance_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var(INSTANCE_ENV)
            .ok()
            .filter(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            })
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

/// Builds an endpoint for `addr` ("host:port" or a full URI). Calls through it
/// carry `user-agent: cascade/<instance>`, which inbound `from` faults match.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Endpoint::from_shared(uri)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .user_agent(format!("cascade/{}", instance_name()))
}

/// A lazily connected channel: it connects on first use and reconnects after
/// failures, so a dead peer costs a failed call, not a crashed caller.
pub fn lazy_channel(addr: &str, request_timeout: Duration) -> anyhow::Result<Channel> {
    Ok(endpoint(addr)?
        .timeout(request_timeout)
        .connect_with_connector_lazy(FaultConnector::new(fault::registry().clone())))
}

/// Connects now, failing after [`CONNECT_TIMEOUT`].
pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(endpoint(addr)?
        .connect_with_connector(FaultConnector::new(fault::registry().clone()))
        .await?)
}

/// Asks `grpc.health.v1` whether the server at `addr` is SERVING.
pub async fn is_serving(addr: &str) -> bool {
    // The TCP handshake can complete in a listener's backlog with nobody
    // accepting (a restarting server): bound the HTTP/2 handshake too.
    let Ok(Ok(channel)) = tokio::time::timeout(Duration::from_secs(2), connect(addr)).await else {
        return false;
    };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let req = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.check(req)).await,
        Ok(Ok(r)) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    )
}
