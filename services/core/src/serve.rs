//! Server bootstrap shared by every service: `grpc.health.v1`, gRPC
//! reflection and the `Control` service are always served next to the
//! service's own APIs, every call passes the fault layer, and shutdown drains
//! under a bounded grace period.

use std::sync::Arc;
use std::time::Duration;

use cascade_proto::control::control_server::{Control, ControlServer};
use cascade_proto::control::{
    ClearFaultRequest, ClearFaultResponse, ConfigureRequest, ConfigureResponse, GetStatusRequest,
    GrpcFault, InjectFaultResponse, ListFaultsRequest, ListFaultsResponse, ProcessStatus,
};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
pub use tonic_health::server::HealthReporter;

/// How long in-flight calls get to finish after shutdown starts.
pub const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// What a process reports through `Control.GetStatus`, and the live settings
/// it accepts through `Control.Configure`.
pub trait StatusSource: Send + Sync + 'static {
    /// A snapshot of this process's status.
    fn status(&self) -> ProcessStatus;

    /// Applies a live setting; returns the setting as now in force.
    fn configure(&self, key: &str, _value: &str) -> Result<String, crate::ServiceError> {
        Err(crate::ServiceError::invalid(format!(
            "key: {key:?} is not a setting of this service"
        )))
    }
}

/// The plain status of a process with nothing particular to report.
#[derive(Debug)]
pub struct BasicStatus {
    /// Instance name, e.g. `kinesis-backend`.
    pub name: String,
}

impl StatusSource for BasicStatus {
    fn status(&self) -> ProcessStatus {
        process_status::<&str>(self.name.clone(), [])
    }
}

/// The status of this process as `name`: its pid and live thread count,
/// with the service's own gauges in `info` (a front-end adds its
/// `FrontendStatus` to this).
pub fn process_status<K: Into<String>>(
    name: impl Into<String>,
    info: impl IntoIterator<Item = (K, String)>,
) -> ProcessStatus {
    ProcessStatus {
        name: name.into(),
        pid: std::process::id(),
        threads: crate::runtime::count_threads(),
        frontend: None,
        info: info.into_iter().map(|(k, v)| (k.into(), v)).collect(),
    }
}

struct ControlService {
    status: Arc<dyn StatusSource>,
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn get_status(
        &self,
        _req: Request<GetStatusRequest>,
    ) -> Result<Response<ProcessStatus>, Status> {
        Ok(Response::new(self.status.status()))
    }

    async fn configure(
        &self,
        req: Request<ConfigureRequest>,
    ) -> Result<Response<ConfigureResponse>, Status> {
        crate::auth::check(&req, crate::auth::service_token(), "Configure")?;
        let r = req.into_inner();
        let applied = if r.key == "thread_hog" {
            crate::fault::set_thread_hog(&r.value)?
        } else {
            self.status.configure(&r.key, &r.value)?
        };
        tracing::info!(key = %r.key, %applied, "setting changed");
        Ok(Response::new(ConfigureResponse { applied }))
    }

    async fn inject_fault(
        &self,
        req: Request<GrpcFault>,
    ) -> Result<Response<InjectFaultResponse>, Status> {
        crate::auth::check(&req, crate::auth::service_token(), "InjectFault")?;
        crate::fault::registry().inject(req.into_inner())?;
        Ok(Response::new(InjectFaultResponse {}))
    }

    async fn clear_fault(
        &self,
        req: Request<ClearFaultRequest>,
    ) -> Result<Response<ClearFaultResponse>, Status> {
        crate::auth::check(&req, crate::auth::service_token(), "ClearFault")?;
        let cleared = crate::fault::registry().clear(&req.into_inner().id);
        Ok(Response::new(ClearFaultResponse { cleared }))
    }

    async fn list_faults(
        &self,
        _req: Request<ListFaultsRequest>,
    ) -> Result<Response<ListFaultsResponse>, Status> {
        let faults = crate::fault::registry().list();
        Ok(Response::new(ListFaultsResponse { faults }))
    }
}

/// Routes every service serves (health, reflection, Control), plus the
/// reporter the service uses to flip its health to SERVING once its
/// dependencies answered.
pub fn base_routes(status: Arc<dyn StatusSource>) -> anyhow::Result<(Routes, HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cascade_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let routes = Routes::new(health)
        .add_service(reflection)
        .add_service(ControlServer::new(ControlService { status }));
    Ok((routes, reporter))
}

/// Marks the whole server (service name "") SERVING or NOT_SERVING.
pub async fn set_serving(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then drains
/// for at most [`DRAIN_GRACE`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Routes,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving gRPC");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    serve_incoming(incoming, routes, shutdown).await
}

/// Serves `routes` on connections from `incoming` (for a service that
/// accepts connections itself) until `shutdown`, with the same bounded drain.
pub async fn serve_incoming<S>(
    incoming: S,
    routes: Routes,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static,
{
    use tokio_stream::StreamExt as _;
    // Small request/response exchanges: never let Nagle hold a reply back.
    let incoming = incoming.map(|c| {
        c.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    let token = shutdown.clone();
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .trace_fn(|req| tracing::debug_span!("grpc", path = %req.uri().path()))
            .layer(crate::fault::FaultLayer::new(
                crate::fault::registry().clone(),
            ))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned()),
    );
    tokio::select! {
        r = &mut server => { r??; }
        _ = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN_GRACE).await } => {
            tracing::warn!(grace = ?DRAIN_GRACE, "drain grace expired; closing open calls");
            server.abort();
        }
    }
    Ok(())
}
