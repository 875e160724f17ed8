//! One container the supervisor watches, adopted from compose or created
//! by it: stopping, killing, restarting (same address and `pids_limit`).
//! In swarm mode it is a Swarm service (one replica) and the container of
//! its running task: the service is what is restarted or removed.

use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, RemoveContainerOptions, RestartContainerOptions, StopContainerOptions,
};

use super::{STOP_SECS, swarm};

/// One container the supervisor watches: adopted from compose, or created.
#[derive(Debug)]
pub struct Container {
    pub(super) api: Docker,
    /// Container id.
    pub id: String,
    /// Container name (for `docker logs`).
    pub name: String,
    /// Host pid of its init process (informational: not in our pid namespace).
    pub pid: u32,
    /// Created by this orchestrator (removed when stopped), rather than by compose.
    pub owned: bool,
    /// Swarm mode: the service (`STACK_instance`); `id` and `pid` are its
    /// running task's container, which Swarm replaces on restarts.
    pub service: Option<String>,
    /// Swarm mode: the host name of the node its task runs on.
    pub node: String,
}

impl Container {
    pub(super) async fn refresh_pid(&mut self) {
        if let Some(service) = &self.service {
            if let Ok(Some(t)) = swarm::running_task(&self.api, service).await {
                self.id = t.container;
                self.pid = t.pid;
                self.node = swarm::node_name(&self.api, &t.node).await;
            }
            return;
        }
        if let Ok(i) = self
            .api
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
        {
            self.pid = i.state.and_then(|s| s.pid).unwrap_or(0) as u32;
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after a grace); a created one is removed.
    pub async fn stop(&mut self) {
        if let Some(service) = &self.service {
            // A service of the stack is scaled to 0 (`docker stack rm`
            // removes it); one created here is removed.
            let r = if self.owned {
                swarm::remove(&self.api, service).await
            } else {
                swarm::scale(&self.api, service, 0).await
            };
            if let Err(e) = r {
                tracing::warn!(service = %service, error = %format!("{e:#}"), "could not stop the service");
            }
            return;
        }
        let opts = StopContainerOptions {
            t: Some(STOP_SECS),
            signal: None,
        };
        if let Err(e) = self.api.stop_container(&self.id, Some(opts)).await {
            tracing::warn!(container = %self.name, error = %e, "docker stop failed");
        }
        if self.owned {
            self.remove().await;
        }
    }

    pub(super) async fn remove(&self) {
        if let Some(service) = &self.service {
            if let Err(e) = swarm::remove(&self.api, service).await {
                tracing::warn!(service = %service, error = %format!("{e:#}"), "docker service rm failed");
            }
            return;
        }
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        if let Err(e) = self.api.remove_container(&self.id, Some(opts)).await {
            tracing::warn!(container = %self.name, error = %e, "docker rm failed");
        }
    }

    /// Removes a created container at once (failed start); leaves compose's alone.
    pub fn kill(&mut self) {
        if let (true, Some(service)) = (self.owned, self.service.clone()) {
            let api = self.api.clone();
            tokio::spawn(async move {
                let _ = swarm::remove(&api, &service).await;
            });
            return;
        }
        if self.owned {
            let api = self.api.clone();
            let id = self.id.clone();
            tokio::spawn(async move {
                let opts = RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                };
                let _ = api.remove_container(&id, Some(opts)).await;
            });
        }
    }

    /// `docker restart`: the same container, address and `pids_limit`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_after(STOP_SECS).await
    }

    /// `docker restart -t 0`: SIGKILL, then start again at once.
    pub async fn restart_now(&mut self) -> anyhow::Result<()> {
        self.restart_after(0).await
    }

    async fn restart_after(&mut self, grace_secs: i32) -> anyhow::Result<()> {
        if let Some(service) = self.service.clone() {
            // `docker service update --force`: Swarm stops the task (its
            // stop grace) and starts a new one with the same spec, address
            // and pids limit; done once the new task runs.
            swarm::force_update(&self.api, &service).await?;
            let t = swarm::wait_task(&self.api, &service, Some(&self.id)).await?;
            self.id = t.container;
            self.pid = t.pid;
            self.node = swarm::node_name(&self.api, &t.node).await;
            return Ok(());
        }
        let opts = RestartContainerOptions {
            t: Some(grace_secs),
            signal: None,
        };
        self.api
            .restart_container(&self.id, Some(opts))
            .await
            .with_context(|| format!("docker restart {}", self.name))?;
        self.refresh_pid().await;
        Ok(())
    }
}
