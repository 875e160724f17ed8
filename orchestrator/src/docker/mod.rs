//! Docker mode (`docker compose up`): the supervisor runs in the orchestrator
//! container and adopts the containers compose started (back end, initial
//! front-end fleet, services). Capacity it adds is real: new front-end
//! containers created through the Docker Engine API on the compose network,
//! under the same `pids_limit`, which is the kernel limit that runs out.
//!
//! Swarm mode (`docker stack deploy`, see `swarm` and docs/swarm.md) is the
//! same supervisor over Swarm services instead of compose's containers: one
//! service per front-end, each under its Swarm pids limit.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;

mod container;
pub mod swarm;

use anyhow::{Context, bail};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, EndpointSettings, HealthConfig, HostConfig,
    NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
pub use container::Container;

/// Compose's project label; containers the orchestrator creates carry it, so
/// `docker compose down` sees them as part of the project.
const LABEL_PROJECT: &str = "com.docker.compose.project";
/// Compose's service label.
const LABEL_SERVICE: &str = "com.docker.compose.service";
/// Marks the containers this orchestrator created (removed on its way out).
const LABEL_CREATED: &str = "io.cascade.created-by";
/// The compose service (declared with `scale: 0`) that added front-ends belong
/// to, so `docker compose down`, `ps` and `logs` include them.
pub const ADDED_SERVICE: &str = "kinesis-frontend-added";

/// Seconds a container gets between SIGTERM and SIGKILL.
const STOP_SECS: i32 = 5;

/// `cascade up` flags for docker mode.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct DockerArgs {
    /// Run inside docker compose: adopt compose's containers and add
    /// front-ends as new containers (needs /var/run/docker.sock).
    #[arg(long, env = "CASCADE_DOCKER")]
    pub docker: bool,
    /// Run as a service of a Docker Swarm stack (`docker stack deploy -c
    /// deploy/stack.yml NAME`): adopt the stack's services and add
    /// front-ends as new Swarm services, each under its Swarm pids limit
    /// (needs a manager node's /var/run/docker.sock). Implies --docker;
    /// detected anyway when --docker runs in a stack.
    #[arg(long, env = "CASCADE_SWARM")]
    pub swarm: bool,
    /// Address of the control port (default 127.0.0.1, any free port). In
    /// docker mode, 0.0.0.0:7700 so the host can reach the published port.
    #[arg(long, env = "CASCADE_CONTROL_LISTEN")]
    pub control_listen: Option<SocketAddr>,
    /// Port every service listens on inside its container (docker mode).
    #[arg(long, env = "CASCADE_SERVICE_PORT", default_value_t = 7000)]
    pub service_port: u16,
    /// Scenario to play against this fleet once it is up (`cascade run
    /// <scenario> --attach`; `none` for none); the fleet stays up afterwards.
    #[arg(long, env = "CASCADE_PLAY")]
    pub play: Option<String>,
}

impl DockerArgs {
    /// Whether the run lives in containers (compose or swarm).
    pub fn enabled(&self) -> bool {
        self.docker || self.swarm
    }

    /// The flags, as `cascade up` takes them.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![format!("--service-port={}", self.service_port)];
        if self.docker {
            v.push("--docker".into());
        }
        if self.swarm {
            v.push("--swarm".into());
        }
        if let Some(a) = self.control_listen {
            v.push(format!("--control-listen={a}"));
        }
        if let Some(p) = &self.play {
            v.push(format!("--play={p}"));
        }
        v
    }
}

/// The Docker side of a docker-mode run.
#[derive(Debug)]
pub struct DockerEnv {
    api: Docker,
    /// Compose project of the orchestrator container (and of what it creates).
    project: String,
    /// The compose network new front-ends join.
    network: String,
    /// Image id of the orchestrator container (it holds every binary).
    image: String,
    /// Port every service listens on inside its container.
    port: u16,
    /// `pids_limit` of each front-end container (the thread limit).
    pids_limit: Option<u64>,
    /// Instance name -> container id (swarm mode: service name), for
    /// process faults.
    ids: Mutex<HashMap<String, String>>,
    /// Swarm mode: the stack the orchestrator runs in.
    swarm: Option<swarm::Stack>,
}

impl DockerEnv {
    /// Connects to the engine over the mounted socket and finds out, from the
    /// orchestrator's own container, the compose project, network and image.
    pub async fn connect(args: &DockerArgs, pids_limit: Option<u64>) -> anyhow::Result<Self> {
        let api = Docker::connect_with_unix_defaults()
            .context("connect to the Docker engine (is /var/run/docker.sock mounted?)")?
            .negotiate_version()
            .await
            .context("talk to the Docker engine (is /var/run/docker.sock mounted?)")?;
        let me = own_container_id()?;
        let own = api
            .inspect_container(&me, None::<InspectContainerOptions>)
            .await
            .with_context(|| format!("inspect this container ({me})"))?;
        let labels = own
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let networks: Vec<String> = own
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        if let Some(namespace) = labels.get(swarm::LABEL_STACK).cloned() {
            return Self::connect_swarm(api, args, pids_limit, namespace, &labels, networks).await;
        }
        if args.swarm {
            bail!(
                "--swarm: this container is not a task of a Swarm stack (no {} label); \
                 deploy it with `docker stack deploy -c deploy/stack.yml NAME`",
                swarm::LABEL_STACK
            );
        }
        let project = labels
            .get(LABEL_PROJECT)
            .cloned()
            .context("this container has no compose project label; start it with docker compose")?;
        let network = networks
            .into_iter()
            .next()
            .context("this container is on no network")?;
        let image = own.image.context("this container has no image id")?;
        tracing::info!(%project, %network, %image, "docker mode");
        Ok(Self {
            api,
            project,
            network,
            image,
            port: args.service_port,
            pids_limit,
            ids: Mutex::default(),
            swarm: None,
        })
    }

    /// Swarm mode: the stack, its network and the image of the
    /// orchestrator's own service (what new front-end services run).
    async fn connect_swarm(
        api: Docker,
        args: &DockerArgs,
        pids_limit: Option<u64>,
        namespace: String,
        labels: &HashMap<String, String>,
        networks: Vec<String>,
    ) -> anyhow::Result<Self> {
        let own_service = labels
            .get(swarm::LABEL_SERVICE_ID)
            .context("this container is not a Swarm task (no service id label)")?;
        let spec = swarm::inspect(&api, own_service)
            .await?
            .and_then(|s| s.spec)
            .with_context(|| format!("inspect this service ({own_service})"))?;
        let image = spec
            .task_template
            .and_then(|t| t.container_spec)
            .and_then(|c| c.image)
            .context("this service has no image")?;
        // The stack's network (`NAME_default`, or any `NAME_*` network).
        let prefix = format!("{namespace}_");
        let network = networks
            .iter()
            .find(|n| **n == format!("{namespace}_default"))
            .or_else(|| networks.iter().find(|n| n.starts_with(&prefix)))
            .cloned()
            .with_context(|| {
                format!("this container is on no network of stack {namespace} ({networks:?})")
            })?;
        let node = labels
            .get(swarm::LABEL_NODE_ID)
            .cloned()
            .unwrap_or_default();
        tracing::info!(stack = %namespace, %network, %image, %node, "swarm mode");
        Ok(Self {
            api,
            project: namespace.clone(),
            network: network.clone(),
            image: image.clone(),
            port: args.service_port,
            pids_limit,
            ids: Mutex::default(),
            swarm: Some(swarm::Stack {
                namespace,
                network,
                image,
                node,
            }),
        })
    }

    /// How many hosts the fleet's task budget spans: swarm mode, the
    /// swarm's ready and active nodes; compose, this one.
    pub async fn budget_hosts(&self) -> u32 {
        if self.swarm.is_none() {
            return 1;
        }
        swarm::active_nodes(&self.api).await.unwrap_or(1).max(1)
    }

    /// Whether this run is a Swarm stack's (else compose's).
    pub fn is_swarm(&self) -> bool {
        self.swarm.is_some()
    }

    /// The address of instance `name` on the compose network.
    pub fn addr(&self, name: &str) -> String {
        format!("{name}:{}", self.port)
    }

    /// The running container of compose service `service`, if compose started one.
    async fn find(&self, service: &str) -> anyhow::Result<Option<Container>> {
        if let Some(stack) = &self.swarm {
            return self.find_service(stack, service).await;
        }
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_PROJECT}={}", self.project),
                format!("{LABEL_SERVICE}={service}"),
            ],
        )]);
        let list = self
            .api
            .list_containers(Some(ListContainersOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .with_context(|| format!("list the containers of compose service {service}"))?;
        let Some(c) = list.into_iter().next() else {
            return Ok(None);
        };
        let id = c.id.context("container without id")?;
        let name = c
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_else(|| id.clone())
            .trim_start_matches('/')
            .to_owned();
        let mut container = Container {
            api: self.api.clone(),
            id,
            name,
            pid: 0,
            owned: false,
            service: None,
            node: String::new(),
        };
        container.refresh_pid().await;
        self.remember(service, &container);
        Ok(Some(container))
    }

    /// Swarm mode: the stack's service for instance `name` if it has one,
    /// once its task runs (the stack starts everything at once, so the
    /// orchestrator may get there first).
    async fn find_service(
        &self,
        stack: &swarm::Stack,
        name: &str,
    ) -> anyhow::Result<Option<Container>> {
        let service = stack.service(name);
        if swarm::inspect(&self.api, &service).await?.is_none() {
            return Ok(None);
        }
        let task = swarm::wait_task(&self.api, &service, None).await?;
        let c = Container {
            api: self.api.clone(),
            id: task.container,
            name: service.clone(),
            pid: task.pid,
            owned: false,
            node: swarm::node_name(&self.api, &task.node).await,
            service: Some(service.clone()),
        };
        self.ids.lock().insert(name.to_owned(), service);
        Ok(Some(c))
    }

    fn remember(&self, instance: &str, c: &Container) {
        self.ids.lock().insert(instance.to_owned(), c.id.clone());
    }

    /// Adopts the container compose started for service `name`.
    pub async fn adopt(&self, name: &str) -> anyhow::Result<(String, Container)> {
        let c = self.find(name).await?.with_context(|| match &self.swarm {
            Some(s) => format!(
                "stack {} has no service {}; is deploy/stack.yml in step with `cascade up` flags?",
                s.namespace,
                s.service(name)
            ),
            None => format!(
                "compose service {name} is not running in project {}; is docker-compose.yml in step with `cascade up` flags?",
                self.project
            ),
        })?;
        tracing::info!(instance = name, container = %c.name, "adopted");
        Ok((self.addr(name), c))
    }

    /// Front-end `name`: compose's container if the compose file declares it
    /// (the initial fleet), else a new container created here with the same
    /// image, network and `pids_limit` (added capacity).
    pub async fn frontend(
        &self,
        name: &str,
        index: u32,
        args: Vec<String>,
    ) -> anyhow::Result<(String, Container)> {
        if let Some(c) = self.find(name).await? {
            self.check_compose_limit(name, &c).await;
            tracing::info!(instance = name, container = %c.name, "adopted");
            return Ok((self.addr(name), c));
        }
        if let Some(stack) = &self.swarm {
            let c = self.create_service(stack, name, args).await?;
            return Ok((self.addr(name), c));
        }
        let addr = self.addr(name);
        let cname = format!("{}_{name}", self.project);
        let body = self.frontend_body(name, index, args, &addr);
        let created = self
            .api
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(cname.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await
            .with_context(|| format!("docker create {cname}"))?;
        let mut c = Container {
            api: self.api.clone(),
            id: created.id,
            name: cname.clone(),
            pid: 0,
            owned: true,
            service: None,
            node: String::new(),
        };
        if let Err(e) = self.api.start_container(&c.id, None).await {
            c.remove().await;
            return Err(e).with_context(|| format!("docker start {cname}"));
        }
        c.refresh_pid().await;
        self.remember(name, &c);
        tracing::info!(instance = name, container = %cname, pids_limit = ?self.pids_limit, "front-end container started");
        Ok((addr, c))
    }

    /// Swarm mode: a new front-end service on the stack's network under
    /// the Swarm pids limit (`docker service create --limit-pids`), once its
    /// task runs; removed again if it never does.
    async fn create_service(
        &self,
        stack: &swarm::Stack,
        name: &str,
        mut args: Vec<String>,
    ) -> anyhow::Result<Container> {
        args.extend([
            "--listen".to_owned(),
            format!("0.0.0.0:{}", self.port),
            "--advertise".to_owned(),
            self.addr(name),
        ]);
        let service = stack.service(name);
        let spec = swarm::frontend_spec(
            stack,
            swarm::FrontendService {
                name,
                args,
                env: self.child_env(name),
                pids_limit: self.pids_limit,
                labels: HashMap::from([
                    (swarm::LABEL_STACK.to_owned(), stack.namespace.clone()),
                    (LABEL_CREATED.to_owned(), stack.namespace.clone()),
                ]),
                stop_secs: STOP_SECS as i64,
            },
        );
        self.api
            .create_service(spec, None)
            .await
            .with_context(|| format!("docker service create {service}"))?;
        let task = match swarm::wait_task(&self.api, &service, None).await {
            Ok(t) => t,
            Err(e) => {
                let _ = swarm::remove(&self.api, &service).await;
                return Err(e);
            }
        };
        let c = Container {
            api: self.api.clone(),
            id: task.container,
            name: service.clone(),
            pid: task.pid,
            owned: true,
            node: swarm::node_name(&self.api, &task.node).await,
            service: Some(service.clone()),
        };
        self.ids.lock().insert(name.to_owned(), service);
        tracing::info!(instance = name, service = %c.name, node = %c.node, pids_limit = ?self.pids_limit, "front-end service created");
        Ok(c)
    }

    /// The environment of a front-end the orchestrator starts.
    fn child_env(&self, name: &str) -> Vec<String> {
        let mut env = vec![format!("CASCADE_INSTANCE={name}")];
        env.extend(
            ["RUST_LOG", "CASCADE_LOG_FORMAT"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}"))),
        );
        env
    }

    /// Warns when compose's `pids_limit` for `name` is not `--thread-limit`.
    async fn check_compose_limit(&self, name: &str, c: &Container) {
        if let Some(service) = &c.service {
            let limit = swarm::pids_limit(&self.api, service)
                .await
                .ok()
                .filter(|l| *l > 0)
                .map(|l| l as u64);
            if limit != self.pids_limit {
                tracing::warn!(
                    instance = name,
                    stack = ?limit,
                    flag = ?self.pids_limit,
                    "the stack's pids limit differs from --thread-limit"
                );
            }
            return;
        }
        let limit = self
            .api
            .inspect_container(&c.id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|i| i.host_config)
            .and_then(|h| h.pids_limit)
            .filter(|l| *l > 0)
            .map(|l| l as u64);
        if limit != self.pids_limit {
            tracing::warn!(
                instance = name,
                compose = ?limit,
                flag = ?self.pids_limit,
                "the compose pids_limit differs from --thread-limit"
            );
        }
    }

    /// The create request of an added front-end: the same image, network and
    /// `pids_limit` as compose's, with compose's labels so `docker compose
    /// down` removes it.
    fn frontend_body(
        &self,
        name: &str,
        index: u32,
        args: Vec<String>,
        addr: &str,
    ) -> ContainerCreateBody {
        let mut cmd = vec!["/bin/kinesis-frontend".to_owned()];
        cmd.extend(args);
        cmd.extend([
            "--listen".to_owned(),
            format!("0.0.0.0:{}", self.port),
            "--advertise".to_owned(),
            addr.to_owned(),
        ]);
        let labels = HashMap::from([
            (LABEL_PROJECT.to_owned(), self.project.clone()),
            (LABEL_SERVICE.to_owned(), ADDED_SERVICE.to_owned()),
            ("com.docker.compose.oneoff".to_owned(), "False".to_owned()),
            (
                "com.docker.compose.container-number".to_owned(),
                index.to_string(),
            ),
            (LABEL_CREATED.to_owned(), self.project.clone()),
        ]);
        let env = self.child_env(name);
        ContainerCreateBody {
            hostname: Some(name.to_owned()),
            image: Some(self.image.clone()),
            cmd: Some(cmd),
            env: Some(env),
            labels: Some(labels),
            healthcheck: Some(HealthConfig {
                test: Some(vec![
                    "CMD".into(),
                    "/bin/cascade".into(),
                    "__health".into(),
                    format!("127.0.0.1:{}", self.port),
                ]),
                interval: Some(2_000_000_000),
                timeout: Some(3_000_000_000),
                retries: Some(3),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                pids_limit: self.pids_limit.map(|l| l as i64),
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![name.to_owned()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }

    fn id_of(&self, instance: &str) -> anyhow::Result<String> {
        self.ids
            .lock()
            .get(instance)
            .cloned()
            .with_context(|| format!("{instance}: no container known"))
    }

    /// Swarm mode: the container of `instance`'s running task, which must
    /// be on this node (container operations go to this node's engine).
    async fn local_task(
        &self,
        stack: &swarm::Stack,
        instance: &str,
    ) -> anyhow::Result<swarm::TaskInfo> {
        let service = self.id_of(instance)?;
        let task = swarm::running_task(&self.api, &service)
            .await?
            .with_context(|| format!("{instance}: service {service} has no running task"))?;
        if task.node != stack.node {
            bail!(
                "{instance} runs on node {}, not on the orchestrator's node: pause works only for tasks on this node",
                swarm::node_name(&self.api, &task.node).await
            );
        }
        Ok(task)
    }

    /// `docker kill --signal SIG` (a process fault). Swarm mode: the task's
    /// container gets the signal when it runs on this node (Swarm then
    /// starts a new task if it exits); a task on another node is replaced
    /// (`docker service update --force`: SIGTERM, grace, SIGKILL, new task),
    /// since a manager cannot signal another node's containers.
    pub async fn kill(&self, instance: &str, signal: &str) -> anyhow::Result<()> {
        if let Some(stack) = &self.swarm {
            let service = self.id_of(instance)?;
            let task = swarm::running_task(&self.api, &service).await?;
            return match task {
                Some(t) if t.node == stack.node => self
                    .api
                    .kill_container(
                        &t.container,
                        Some(KillContainerOptions {
                            signal: signal.to_owned(),
                        }),
                    )
                    .await
                    .with_context(|| format!("docker kill {instance}")),
                _ => {
                    tracing::info!(instance, %service, "task on another node: replaced (service update --force) instead of signalled");
                    swarm::force_update(&self.api, &service).await
                }
            };
        }
        let id = self.id_of(instance)?;
        self.api
            .kill_container(
                &id,
                Some(KillContainerOptions {
                    signal: signal.to_owned(),
                }),
            )
            .await
            .with_context(|| format!("docker kill {instance}"))
    }

    /// `docker pause` (a process fault; reverted by [`Self::unpause`]).
    pub async fn pause(&self, instance: &str) -> anyhow::Result<()> {
        let id = match &self.swarm {
            Some(stack) => self.local_task(stack, instance).await?.container,
            None => self.id_of(instance)?,
        };
        self.api
            .pause_container(&id)
            .await
            .with_context(|| format!("docker pause {instance}"))
    }

    /// `docker unpause`.
    pub async fn unpause(&self, instance: &str) -> anyhow::Result<()> {
        let id = match &self.swarm {
            Some(stack) => self.local_task(stack, instance).await?.container,
            None => self.id_of(instance)?,
        };
        self.api
            .unpause_container(&id)
            .await
            .with_context(|| format!("docker unpause {instance}"))
    }

    /// `docker update --pids-limit` (the thread-limit fault); returns the
    /// old limit (0: none) for [`Self::restore_pids_limit`]. Swarm mode:
    /// `docker service update --limit-pids`, which Swarm applies by
    /// replacing the task (the front-end restarts under the new limit).
    pub async fn set_pids_limit(&self, instance: &str, limit: u64) -> anyhow::Result<i64> {
        if self.swarm.is_some() {
            let service = self.id_of(instance)?;
            let old = swarm::pids_limit(&self.api, &service).await?;
            self.restore_pids_limit(instance, limit as i64).await?;
            return Ok(old);
        }
        let id = self.id_of(instance)?;
        let old = self
            .api
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .with_context(|| format!("docker inspect {instance}"))?
            .host_config
            .and_then(|h| h.pids_limit)
            .unwrap_or(0);
        self.restore_pids_limit(instance, limit as i64).await?;
        Ok(old)
    }

    /// Sets a container's `pids_limit` (0 or less: none).
    pub async fn restore_pids_limit(&self, instance: &str, limit: i64) -> anyhow::Result<()> {
        if self.swarm.is_some() {
            let service = self.id_of(instance)?;
            return swarm::set_pids_limit(&self.api, &service, limit).await;
        }
        let id = self.id_of(instance)?;
        let body = ContainerUpdateBody {
            pids_limit: Some(if limit > 0 { limit } else { -1 }),
            ..Default::default()
        };
        self.api
            .update_container(&id, body)
            .await
            .with_context(|| format!("docker update --pids-limit {limit} {instance}"))
    }

    /// Removes every container this orchestrator created (on its way out),
    /// found by label so none is missed.
    pub async fn remove_created(&self) {
        if self.swarm.is_some() {
            return self.remove_created_services().await;
        }
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_CREATED}={}", self.project)],
        )]);
        let list = match self
            .api
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "could not list the containers this run created");
                return;
            }
        };
        let mut set = tokio::task::JoinSet::new();
        for c in list {
            let Some(id) = c.id else { continue };
            let api = self.api.clone();
            set.spawn(async move {
                let _ = api
                    .stop_container(
                        &id,
                        Some(StopContainerOptions {
                            t: Some(STOP_SECS),
                            signal: None,
                        }),
                    )
                    .await;
                let r = api
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            link: false,
                        }),
                    )
                    .await;
                (id, r)
            });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok((id, Ok(()))) => tracing::info!(container = %id, "removed"),
                Ok((id, Err(e))) => {
                    tracing::error!(container = %id, error = %e, "docker rm failed")
                }
                Err(_) => {}
            }
        }
    }
}

impl DockerEnv {
    /// Swarm mode: removes every service this orchestrator created (found
    /// by label); Swarm then stops and removes their tasks' containers.
    async fn remove_created_services(&self) {
        let names = match swarm::services_labelled(&self.api, LABEL_CREATED, &self.project).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not list the services this run created");
                return;
            }
        };
        for name in names {
            match swarm::remove(&self.api, &name).await {
                Ok(()) => tracing::info!(service = %name, "removed"),
                Err(e) => {
                    tracing::error!(service = %name, error = %format!("{e:#}"), "docker service rm failed")
                }
            }
        }
    }
}

/// This container's id: from the cgroup paths (cgroup v1, or v2 without a
/// cgroup namespace), else from the mounts (`/docker/containers/<id>/...`),
/// else the hostname (docker's default hostname is the short id).
fn own_container_id() -> anyhow::Result<String> {
    for file in ["/proc/self/cgroup", "/proc/self/mountinfo"] {
        if let Some(id) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| container_id_in(&t))
        {
            return Ok(id);
        }
    }
    Ok(std::fs::read_to_string("/etc/hostname")
        .context("find this container's id (docker mode runs inside a container)")?
        .trim()
        .to_owned())
}

/// The first 64-hex-digit word on a line that mentions docker.
fn container_id_in(text: &str) -> Option<String> {
    text.lines().filter(|l| l.contains("docker")).find_map(|l| {
        l.split(|c: char| !c.is_ascii_hexdigit())
            .find(|w| w.len() == 64)
            .map(str::to_owned)
    })
}

/// Checks the docker-mode flags together.
pub fn validate(args: &DockerArgs) -> anyhow::Result<()> {
    if !args.enabled() && args.play.is_some() {
        bail!("--play needs --docker or --swarm (locally, use `cascade run <scenario>`)");
    }
    Ok(())
}

/// Plays `scenario` against this supervisor in a child `cascade run
/// <scenario> --attach` (its journal goes to stdout, so to `docker compose
/// logs`); the fleet stays up when it ends. The child is killed on shutdown.
pub fn play(scenario: &str, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    if scenario.is_empty() || scenario == "none" {
        return Ok(());
    }
    let report = std::env::temp_dir().join("cascade-reports").join(scenario);
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("run")
        .arg(scenario)
        .arg("--attach")
        .arg("--report")
        .arg(&report)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start `cascade run {scenario} --attach`"))?;
    println!(
        "cascade: playing scenario {scenario} (report in {} inside this container)",
        report.display()
    );
    tokio::spawn(async move {
        tokio::select! {
            r = child.wait() => match r {
                Ok(s) => println!("cascade: scenario finished ({s}); the fleet stays up for exploration"),
                Err(e) => tracing::error!(error = %e, "scenario run lost"),
            },
            _ = shutdown.cancelled() => {
                let _ = child.kill().await;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "7c57f98ac4e2a23cca32b0728ed8f95e8d7cb4063a9a451e962970c91d5f9d25";

    #[test]
    fn container_id_from_cgroup_v1() {
        let text = format!("9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n");
        assert_eq!(container_id_in(&text).as_deref(), Some(ID));
    }

    #[test]
    fn container_id_from_mountinfo_with_cgroupns() {
        let text = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(container_id_in(&text).as_deref(), Some(ID));
    }

    #[test]
    fn no_container_id_on_a_host() {
        assert_eq!(container_id_in("0::/user.slice/user-0.slice\n"), None);
    }
}
