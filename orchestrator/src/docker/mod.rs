//! Docker mode (`docker compose up`): the supervisor runs in the orchestrator
//! container and adopts the containers compose started (back end, initial
//! front-end fleet, services). Capacity it adds is real: new front-end
//! containers created through the Docker Engine API on the compose network,
//! under the same `pids_limit`, which is the kernel limit that runs out.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;

mod container;

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
    /// The flags, as `cascade up` takes them.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![format!("--service-port={}", self.service_port)];
        if self.docker {
            v.push("--docker".into());
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
    /// Instance name -> container id, for process faults.
    ids: Mutex<HashMap<String, String>>,
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
        let project = labels
            .get(LABEL_PROJECT)
            .cloned()
            .context("this container has no compose project label; start it with docker compose")?;
        let network = own
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.into_keys().next())
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
        })
    }

    /// The address of instance `name` on the compose network.
    pub fn addr(&self, name: &str) -> String {
        format!("{name}:{}", self.port)
    }

    /// The running container of compose service `service`, if compose started one.
    async fn find(&self, service: &str) -> anyhow::Result<Option<Container>> {
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
        };
        container.refresh_pid().await;
        self.remember(service, &container);
        Ok(Some(container))
    }

    fn remember(&self, instance: &str, c: &Container) {
        self.ids.lock().insert(instance.to_owned(), c.id.clone());
    }

    /// Adopts the container compose started for service `name`.
    pub async fn adopt(&self, name: &str) -> anyhow::Result<(String, Container)> {
        let c = self.find(name).await?.with_context(|| {
            format!(
                "compose service {name} is not running in project {}; is docker-compose.yml in step with `cascade up` flags?",
                self.project
            )
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

    /// Warns when compose's `pids_limit` for `name` is not `--thread-limit`.
    async fn check_compose_limit(&self, name: &str, c: &Container) {
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
        let mut env = vec![format!("CASCADE_INSTANCE={name}")];
        env.extend(
            ["RUST_LOG", "CASCADE_LOG_FORMAT"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}"))),
        );
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

    /// `docker kill --signal SIG` (a process fault).
    pub async fn kill(&self, instance: &str, signal: &str) -> anyhow::Result<()> {
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
        let id = self.id_of(instance)?;
        self.api
            .pause_container(&id)
            .await
            .with_context(|| format!("docker pause {instance}"))
    }

    /// `docker unpause`.
    pub async fn unpause(&self, instance: &str) -> anyhow::Result<()> {
        let id = self.id_of(instance)?;
        self.api
            .unpause_container(&id)
            .await
            .with_context(|| format!("docker unpause {instance}"))
    }

    /// `docker update --pids-limit` (the thread-limit fault); returns the
    /// old limit (0: none) for [`Self::restore_pids_limit`].
    pub async fn set_pids_limit(&self, instance: &str, limit: u64) -> anyhow::Result<i64> {
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
    if !args.docker && args.play.is_some() {
        bail!("--play needs --docker (locally, use `cascade run <scenario>`)");
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
