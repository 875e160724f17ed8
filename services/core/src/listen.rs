//! Where a service listens. The orchestrator binds each socket itself and hands
//! it over as an inherited fd (`--listen-fd`), so ports never collide and are
//! known before the child starts; `--listen ADDR` is for compose and by-hand use.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

use anyhow::Context;

/// Listening flags shared by every service binary.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Address to bind, e.g. 127.0.0.1:50051 (port 0 picks a free port).
    #[arg(long, env = "CASCADE_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Serve on an already-bound, inherited listening socket with this fd
    /// number instead of binding `--listen` (used by the orchestrator).
    #[arg(long)]
    pub listen_fd: Option<RawFd>,
}

impl ListenArgs {
    /// Binds or adopts the listener. Must run inside a tokio runtime.
    pub fn listener(&self) -> anyhow::Result<tokio::net::TcpListener> {
        let std_listener = match self.listen_fd {
            Some(fd) => {
                if fd < 3 {
                    anyhow::bail!("--listen-fd {fd}: must be an inherited socket fd (3 or more)");
                }
                // SAFETY: the orchestrator passes a listening TCP socket at this fd and
                // nothing else in this process owns it.
                unsafe { std::net::TcpListener::from_raw_fd(fd) }
            }
            None => std::net::TcpListener::bind(self.listen)
                .with_context(|| format!("--listen {}: cannot bind", self.listen))?,
        };
        std_listener
            .set_nonblocking(true)
            .context("listener: set_nonblocking")?;
        tokio::net::TcpListener::from_std(std_listener).context("listener: register with tokio")
    }
}
