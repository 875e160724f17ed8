//! Swarm mode (`docker stack deploy -c deploy/stack.yml NAME`): the
//! orchestrator runs as a service of the stack on a manager node and adopts
//! the stack's services, one per front-end (each with its own Swarm pids
//! limit, `TaskTemplate.Resources.Limits.Pids`), the back end and the
//! downstream services. Capacity it adds is a new Swarm service per
//! front-end, created through the Engine API on the stack's network with the
//! same pids limit; the scheduler places it on any node of the swarm.
//!
//! What this needs from the engine: API 1.41 (the pids limit of a service;
//! the version is negotiated, bollard's default is newer) and no IPVS: every
//! service is `endpoint_mode: dnsrr` (its name resolves to its task's
//! address), and published ports are host-mode, so neither Swarm VIPs nor the
//! routing mesh is used.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, NetworkAttachmentConfig, Service,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListServicesOptions, ListTasksOptions, UpdateServiceOptions,
};

/// The stack label `docker stack deploy` puts on services, containers and
/// networks; services the orchestrator creates carry it too, so `docker
/// stack services`, `ps` and `rm` include them.
pub(super) const LABEL_STACK: &str = "com.docker.stack.namespace";
/// The service label on a task's container.
pub(super) const LABEL_SERVICE_ID: &str = "com.docker.swarm.service.id";
/// The node label on a task's container.
pub(super) const LABEL_NODE_ID: &str = "com.docker.swarm.node.id";

/// How long a service gets to have a running task (scheduling, image
/// present on the node, container start) before adoption or creation fails.
const TASK_DEADLINE: Duration = Duration::from_secs(90);

/// Where the orchestrator runs in a swarm: its stack, network and image.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The stack's name (`docker stack deploy ... NAME`); every service of
    /// it is `NAME_<service>`.
    pub namespace: String,
    /// The stack network new front-end services join (its name).
    pub network: String,
    /// The image reference of the orchestrator's own service (e.g.
    /// `cascade:local`): on each node, the local image of that name.
    pub image: String,
    /// The node the orchestrator runs on (local container operations, such
    /// as pause, only work for tasks there).
    pub node: String,
}

/// Where one service's task runs now.
#[derive(Debug, Clone, Default)]
pub struct TaskInfo {
    /// Its container's id (on `node`).
    pub container: String,
    /// The host pid of the container's init process (on `node`).
    pub pid: u32,
    /// Node id.
    pub node: String,
}

impl Stack {
    /// The Swarm service name of instance `name`.
    pub fn service(&self, name: &str) -> String {
        format!("{}_{name}", self.namespace)
    }
}

/// The service named exactly `name`, if there is one.
pub(super) async fn inspect(api: &Docker, name: &str) -> anyhow::Result<Option<Service>> {
    match api
        .inspect_service(name, None::<InspectServiceOptions>)
        .await
    {
        Ok(s) => Ok(Some(s)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("docker service inspect {name}")),
    }
}

/// The running task of service `service`, if it has one now.
pub(super) async fn running_task(api: &Docker, service: &str) -> anyhow::Result<Option<TaskInfo>> {
    let filters = HashMap::from([
        ("service".to_owned(), vec![service.to_owned()]),
        ("desired-state".to_owned(), vec!["running".to_owned()]),
    ]);
    let tasks = api
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .with_context(|| format!("docker service ps {service}"))?;
    Ok(tasks.into_iter().find_map(|t| {
        let status = t.status?;
        if status.state != Some(TaskState::RUNNING) {
            return None;
        }
        let c = status.container_status?;
        Some(TaskInfo {
            container: c.container_id?,
            pid: c.pid.unwrap_or(0) as u32,
            node: t.node_id.unwrap_or_default(),
        })
    }))
}

/// Waits (polling, against [`TASK_DEADLINE`]) until `service` has a running
/// task whose container is not `old` (a restart or update replaced it).
pub(super) async fn wait_task(
    api: &Docker,
    service: &str,
    old: Option<&str>,
) -> anyhow::Result<TaskInfo> {
    let until = tokio::time::Instant::now() + TASK_DEADLINE;
    let mut last;
    loop {
        match running_task(api, service).await {
            Ok(Some(t)) if Some(t.container.as_str()) != old => return Ok(t),
            Ok(Some(t)) => last = format!("still the old task (container {})", t.container),
            Ok(None) => last = task_states(api, service).await,
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() >= until {
            bail!(
                "service {service} has no new running task after {}s; last seen: {last}",
                TASK_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What `docker service ps` would say about `service`'s tasks (for errors).
async fn task_states(api: &Docker, service: &str) -> String {
    let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
    match api
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await
    {
        Ok(tasks) if tasks.is_empty() => "no task yet".into(),
        Ok(tasks) => tasks
            .into_iter()
            .filter_map(|t| t.status)
            .map(|s| {
                format!(
                    "{} {}{}",
                    s.state.map(|s| s.to_string()).unwrap_or_default(),
                    s.message.unwrap_or_default(),
                    s.err.map(|e| format!(": {e}")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("{e}"),
    }
}

/// The host name of node `id` (the id itself if it cannot be read).
pub(super) async fn node_name(api: &Docker, id: &str) -> String {
    api.inspect_node(id)
        .await
        .ok()
        .and_then(|n| n.description)
        .and_then(|d| d.hostname)
        .unwrap_or_else(|| id.to_owned())
}

/// How many nodes of the swarm can run tasks: ready and active (not
/// drained or paused).
pub(super) async fn active_nodes(api: &Docker) -> anyhow::Result<u32> {
    let nodes = api
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .context("docker node ls")?;
    Ok(nodes
        .into_iter()
        .filter(|n| {
            n.status.as_ref().and_then(|s| s.state) == Some(bollard::models::NodeState::READY)
                && n.spec.as_ref().and_then(|s| s.availability)
                    == Some(bollard::models::NodeSpecAvailabilityEnum::ACTIVE)
        })
        .count() as u32)
}

/// Applies `change` to service `name`'s spec (`docker service update`).
pub(super) async fn update(
    api: &Docker,
    name: &str,
    change: impl FnOnce(&mut ServiceSpec),
) -> anyhow::Result<()> {
    let svc = inspect(api, name)
        .await?
        .with_context(|| format!("no service {name}"))?;
    let version = svc
        .version
        .and_then(|v| v.index)
        .with_context(|| format!("service {name} has no version"))?;
    let mut spec = svc
        .spec
        .with_context(|| format!("service {name} has no spec"))?;
    change(&mut spec);
    api.update_service(
        name,
        spec,
        UpdateServiceOptions {
            version: version as i32,
            ..Default::default()
        },
        None,
    )
    .await
    .with_context(|| format!("docker service update {name}"))?;
    Ok(())
}

/// `docker service update --force`: a new task replaces the running one
/// (the Swarm way to restart a service), with the same spec and limit.
pub(super) async fn force_update(api: &Docker, name: &str) -> anyhow::Result<()> {
    update(api, name, |spec| {
        if let Some(t) = spec.task_template.as_mut() {
            t.force_update = Some(t.force_update.unwrap_or(0) + 1);
        }
    })
    .await
}

/// The pids limit of service `name` (0: none).
pub(super) async fn pids_limit(api: &Docker, name: &str) -> anyhow::Result<i64> {
    Ok(inspect(api, name)
        .await?
        .with_context(|| format!("no service {name}"))?
        .spec
        .and_then(|s| s.task_template)
        .and_then(|t| t.resources)
        .and_then(|r| r.limits)
        .and_then(|l| l.pids)
        .unwrap_or(0))
}

/// `docker service update --limit-pids N` (0 or less: none). Swarm applies
/// it by replacing the task: the front-end restarts under the new limit.
pub(super) async fn set_pids_limit(api: &Docker, name: &str, limit: i64) -> anyhow::Result<()> {
    update(api, name, |spec| {
        let t = spec.task_template.get_or_insert_with(Default::default);
        let r = t.resources.get_or_insert_with(Default::default);
        let l = r.limits.get_or_insert_with(Default::default);
        l.pids = Some(limit.max(0));
    })
    .await
}

/// `docker service scale NAME=N`.
pub(super) async fn scale(api: &Docker, name: &str, replicas: i64) -> anyhow::Result<()> {
    update(api, name, |spec| {
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas),
            }),
            ..Default::default()
        });
    })
    .await
}

/// `docker service rm NAME` (an absent service is not an error).
pub(super) async fn remove(api: &Docker, name: &str) -> anyhow::Result<()> {
    match api.delete_service(name).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("docker service rm {name}")),
    }
}

/// The services carrying label `key=value`, by name.
pub(super) async fn services_labelled(
    api: &Docker,
    key: &str,
    value: &str,
) -> anyhow::Result<Vec<String>> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])]);
    let list = api
        .list_services(Some(ListServicesOptions {
            filters: Some(filters),
            status: None,
        }))
        .await
        .context("docker service ls")?;
    Ok(list
        .into_iter()
        .filter_map(|s| s.spec.and_then(|s| s.name))
        .collect())
}

/// What an added front-end service needs besides its name.
pub(super) struct FrontendService<'a> {
    /// Instance name (the DNS alias on the stack network, and the hostname).
    pub name: &'a str,
    /// The front-end's flags.
    pub args: Vec<String>,
    /// Environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Swarm pids limit (the thread limit); `None` for none.
    pub pids_limit: Option<u64>,
    /// Service labels (the stack's, and the orchestrator's mark).
    pub labels: HashMap<String, String>,
    /// Seconds between SIGTERM and SIGKILL when a task stops.
    pub stop_secs: i64,
}

/// The spec of an added front-end: one replica, `dnsrr` on the stack
/// network under its instance name, the same image and pids limit as the
/// stack's front-ends, restarted by Swarm if it dies. No health check, as
/// in the stack: a tipped front-end has no task left to run the check's
/// process, and Swarm would replace it as unhealthy, again and again.
pub(super) fn frontend_spec(stack: &Stack, f: FrontendService<'_>) -> ServiceSpec {
    ServiceSpec {
        name: Some(stack.service(f.name)),
        labels: Some(f.labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(stack.image.clone()),
                labels: Some(HashMap::from([(
                    LABEL_STACK.to_owned(),
                    stack.namespace.clone(),
                )])),
                command: Some(vec!["/bin/kinesis-frontend".to_owned()]),
                args: Some(f.args),
                hostname: Some(f.name.to_owned()),
                env: Some(f.env),
                stop_grace_period: Some(f.stop_secs * 1_000_000_000),
                health_check: Some(HealthConfig {
                    test: Some(vec!["NONE".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    pids: f.pids_limit.map(|l| l as i64),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(1_000_000_000),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(stack.network.clone()),
                aliases: Some(vec![f.name.to_owned()]),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Stack {
        Stack {
            namespace: "cascade".into(),
            network: "cascade_default".into(),
            image: "cascade:local".into(),
            node: "n1".into(),
        }
    }

    #[test]
    fn added_frontend_spec_has_the_pids_limit_dnsrr_and_its_alias() {
        let spec = frontend_spec(
            &stack(),
            FrontendService {
                name: "kinesis-frontend-8",
                args: vec!["--id=fe-8".into()],
                env: vec![],
                pids_limit: Some(16),
                labels: HashMap::from([(LABEL_STACK.to_owned(), "cascade".to_owned())]),
                stop_secs: 5,
            },
        );
        assert_eq!(spec.name.as_deref(), Some("cascade_kinesis-frontend-8"));
        let t = spec.task_template.as_ref().expect("a task template");
        assert_eq!(
            t.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.pids),
            Some(16)
        );
        let n = &t.networks.as_ref().expect("a network attachment")[0];
        assert_eq!(n.target.as_deref(), Some("cascade_default"));
        assert_eq!(
            n.aliases.as_deref(),
            Some(&["kinesis-frontend-8".to_owned()][..])
        );
        assert_eq!(
            spec.endpoint_spec.as_ref().and_then(|e| e.mode),
            Some(EndpointSpecModeEnum::DNSRR)
        );
        // The Engine API's field names (API 1.41): what the daemon reads.
        let json = serde_json::to_value(&spec).expect("the spec serializes");
        assert_eq!(json["TaskTemplate"]["Resources"]["Limits"]["Pids"], 16);
        assert_eq!(json["EndpointSpec"]["Mode"], "dnsrr");
        assert_eq!(json["Mode"]["Replicated"]["Replicas"], 1);
    }
}
