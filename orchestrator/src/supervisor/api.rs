//! The `Supervisor` gRPC service on the control port: thin handlers over
//! the supervisor's methods, one mapping from [`SupervisorError`] to a gRPC
//! status, and a span per call.

use std::sync::Arc;

use cascade_proto::supervisor as sv;
use cascade_proto::supervisor::supervisor_server::{Supervisor as SupervisorApi, SupervisorServer};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::restart::RestartPlan;
use super::{Supervisor, SupervisorError};
use crate::faults::FaultSpec;

impl From<SupervisorError> for Status {
    fn from(e: SupervisorError) -> Self {
        match e {
            SupervisorError::InvalidArgument(m) => Status::invalid_argument(m),
            SupervisorError::FailedPrecondition(m) => Status::failed_precondition(m),
            SupervisorError::Unavailable(m) => Status::unavailable(m),
            SupervisorError::Rpc(s) => s,
        }
    }
}

/// The gRPC service, as the server adds it.
pub(super) fn service(sup: Arc<Supervisor>) -> SupervisorServer<Api> {
    SupervisorServer::new(Api(sup))
}

/// A span per control call, named by its method.
pub(super) fn trace(req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    tracing::info_span!("control", method = %req.uri().path())
}

pub(super) struct Api(Arc<Supervisor>);

type Reply<T> = Result<Response<T>, Status>;

impl Api {
    /// Mutating calls need the run's token; status and listings stay open.
    fn authorize<T>(&self, r: &Request<T>, call: &str) -> Result<(), Status> {
        cascade_core::auth::check(r, Some(&self.0.token), call)
    }
}

#[tonic::async_trait]
impl SupervisorApi for Api {
    async fn status(&self, _r: Request<sv::StatusRequest>) -> Reply<sv::StatusReply> {
        let json =
            serde_json::to_string(&self.0.status()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(sv::StatusReply { json }))
    }

    async fn add_capacity(&self, r: Request<sv::CapacityRequest>) -> Reply<sv::CapacityReply> {
        self.authorize(&r, "AddCapacity")?;
        let (instances, fleet_size) = self.0.add_capacity(r.into_inner().count).await?;
        Ok(Response::new(sv::CapacityReply {
            instances,
            fleet_size,
        }))
    }

    async fn remove_capacity(&self, r: Request<sv::CapacityRequest>) -> Reply<sv::CapacityReply> {
        self.authorize(&r, "RemoveCapacity")?;
        let (instances, fleet_size) = self.0.remove_capacity(r.into_inner().count).await?;
        Ok(Response::new(sv::CapacityReply {
            instances,
            fleet_size,
        }))
    }

    type RestartFrontendsStream = ReceiverStream<Result<sv::RestartProgress, Status>>;

    async fn restart_frontends(
        &self,
        r: Request<sv::RestartRequest>,
    ) -> Reply<Self::RestartFrontendsStream> {
        self.authorize(&r, "RestartFrontends")?;
        let r = r.into_inner();
        let plan = RestartPlan::new(r.batch, r.interval_ms, r.grace_ms)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (steps, mut progress) = tokio::sync::mpsc::channel(16);
        let sup = self.0.clone();
        tokio::spawn(async move {
            let relay = tx.clone();
            let forward = tokio::spawn(async move {
                while let Some(p) = progress.recv().await {
                    let _ = relay.send(Ok(to_proto(p))).await;
                }
            });
            let result = sup.rolling_restart(plan, steps).await;
            let _ = forward.await;
            if let Err(e) = result {
                let _ = tx.send(Err(SupervisorError::from(e).into())).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn shutdown(&self, r: Request<sv::ShutdownRequest>) -> Reply<sv::ShutdownReply> {
        self.authorize(&r, "Shutdown")?;
        tracing::info!("shutdown requested (cascade down)");
        self.0.shutdown.cancel();
        Ok(Response::new(sv::ShutdownReply {}))
    }

    async fn shd_post(&self, r: Request<sv::ShdPostRequest>) -> Reply<sv::ShdPostReply> {
        self.authorize(&r, "ShdPost")?;
        let post = self.0.shd_post(r.into_inner()).await?;
        Ok(Response::new(sv::ShdPostReply { post: Some(post) }))
    }

    async fn shd_list(&self, _r: Request<sv::ShdListRequest>) -> Reply<sv::ShdListReply> {
        Ok(Response::new(sv::ShdListReply {
            posts: self.0.shd_posts(),
        }))
    }

    async fn configure(&self, r: Request<sv::ConfigureRequest>) -> Reply<sv::ConfigureReply> {
        self.authorize(&r, "Configure")?;
        let r = r.into_inner();
        let applied = self.0.configure(&r.target, &r.key, &r.value).await?;
        Ok(Response::new(sv::ConfigureReply { applied }))
    }

    async fn inject_fault(&self, r: Request<sv::InjectFaultRequest>) -> Reply<sv::ActiveFault> {
        self.authorize(&r, "InjectFault")?;
        let spec: FaultSpec = serde_json::from_str(&r.into_inner().spec_json)
            .map_err(|e| Status::invalid_argument(format!("fault spec: {e}")))?;
        Ok(Response::new(self.0.inject_fault(spec).await?))
    }

    async fn list_faults(&self, _r: Request<sv::ListFaultsRequest>) -> Reply<sv::ListFaultsReply> {
        Ok(Response::new(sv::ListFaultsReply {
            faults: self.0.faults.list(),
        }))
    }

    async fn clear_faults(
        &self,
        r: Request<sv::ClearFaultsRequest>,
    ) -> Reply<sv::ClearFaultsReply> {
        self.authorize(&r, "ClearFaults")?;
        let id = r.into_inner().id;
        let cleared = self.0.clear_faults_request(&id).await?;
        Ok(Response::new(sv::ClearFaultsReply { cleared }))
    }
}

fn to_proto(p: super::restart::RestartProgress) -> sv::RestartProgress {
    sv::RestartProgress {
        restarted: p.restarted,
        removed: p.removed,
        done: p.done as u32,
        total: p.total as u32,
        detail: p.detail,
    }
}
