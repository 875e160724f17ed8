//! Typed client connections with deadlines. Every call a Cascade process makes
//! to another goes through a channel built here, so connect and request
//! timeouts are uniform.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Default time to establish a TCP + HTTP/2 connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds an endpoint for `addr` ("host:port" or a full URI).
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}

/// A lazily connected channel: it connects on first use and reconnects after
/// failures, so a dead peer costs a failed call, not a crashed caller.
pub fn lazy_channel(addr: &str, request_timeout: Duration) -> anyhow::Result<Channel> {
    Ok(endpoint(addr)?.timeout(request_timeout).connect_lazy())
}

/// Connects now, failing after [`CONNECT_TIMEOUT`].
pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(endpoint(addr)?.connect().await?)
}

/// Asks `grpc.health.v1` whether the server at `addr` is SERVING.
pub async fn is_serving(addr: &str) -> bool {
    let Ok(channel) = connect(addr).await else {
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
