//! Starting and stopping one service process, the way a careful launcher does:
//! the socket is bound here and inherited (so ports never collide), output goes
//! to one log file per process, the environment is cleared down to an
//! allowlist, the child joins its thread-limit cgroup (or drops to its limited
//! uid) before `exec`, dies with the supervisor (`PR_SET_PDEATHSIG`), and
//! readiness is `grpc.health.v1` polled against a deadline.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::TcpListener;
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_core::threadlimit::{self, InstanceCgroup};
pub use nix::sys::signal::Signal;

/// How long a child gets to answer SERVING after it is started.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long a child gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Environment variables a child may inherit; everything else is cleared.
const ENV_ALLOWLIST: &[&str] = &["PATH", "RUST_LOG", "RUST_BACKTRACE", "LANG", "TZ"];

/// How one child's thread limit is enforced by the kernel.
#[derive(Debug, Clone)]
pub enum ChildLimit {
    /// No limit.
    None,
    /// The child joins this cgroup before exec.
    Cgroup(InstanceCgroup),
    /// The child sets `RLIMIT_NPROC` and drops to this unprivileged uid.
    Rlimit {
        /// The instance's own uid.
        uid: u32,
        /// Tasks allowed to that uid.
        limit: u64,
    },
    /// The child runs in `systemd-run --user --scope -p TasksMax=limit`.
    Systemd {
        /// Tasks allowed in the scope.
        limit: u64,
    },
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Instance name (log file and status name).
    pub name: String,
    /// Binary to run.
    pub program: PathBuf,
    /// Arguments (without `--listen-fd`, which is added).
    pub args: Vec<String>,
    /// Kernel thread limit.
    pub limit: ChildLimit,
    /// The run's token, passed in the environment (never in argv, which
    /// `ps` shows); the child then demands it on mutating `Control` calls.
    pub token: Option<String>,
}

/// A running child process, or (docker mode) a container.
#[derive(Debug)]
pub struct RunningChild {
    proc: Proc,
    /// Its log file (docker mode: none; `docker logs` has it).
    pub log: PathBuf,
}

#[derive(Debug)]
enum Proc {
    Local(Child),
    Container(crate::docker::Container),
}

impl RunningChild {
    /// A container the supervisor watches in docker mode.
    pub fn container(c: crate::docker::Container) -> Self {
        let log = PathBuf::from(format!("(docker logs {})", c.name));
        Self {
            proc: Proc::Container(c),
            log,
        }
    }

    /// The container, in docker mode (to restart it).
    pub fn as_container_mut(&mut self) -> Option<&mut crate::docker::Container> {
        match &mut self.proc {
            Proc::Container(c) => Some(c),
            Proc::Local(_) => None,
        }
    }

    /// Swarm mode: the node its task runs on.
    pub fn node(&self) -> Option<String> {
        match &self.proc {
            Proc::Container(c) if c.service.is_some() => Some(c.node.clone()),
            _ => None,
        }
    }

    /// The child's pid (a container's host pid in docker mode).
    pub fn pid(&self) -> u32 {
        match &self.proc {
            Proc::Local(c) => c.id(),
            Proc::Container(c) => c.pid,
        }
    }

    /// Whether it still runs (reaping it if it exited). A container counts as
    /// running: the readiness deadline catches one that is not.
    pub fn alive(&mut self) -> bool {
        match &mut self.proc {
            Proc::Local(c) => matches!(c.try_wait(), Ok(None)),
            Proc::Container(_) => true,
        }
    }

    fn exit_status(&mut self) -> String {
        match &mut self.proc {
            Proc::Local(c) => c
                .try_wait()
                .ok()
                .flatten()
                .map_or("?".into(), |s| s.to_string()),
            Proc::Container(_) => "?".into(),
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]; always reaps, without
    /// blocking the runtime. A container is stopped the same way (and
    /// removed if the supervisor created it).
    pub async fn stop(&mut self) {
        let child = match &mut self.proc {
            Proc::Local(c) => c,
            Proc::Container(c) => return c.stop().await,
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let pid = child.id();
        signal(pid, Signal::SIGTERM);
        if reaped_within(child, STOP_GRACE).await {
            return;
        }
        tracing::warn!(pid, "did not exit after SIGTERM; sending SIGKILL");
        let _ = child.kill();
        if !reaped_within(child, STOP_GRACE).await {
            tracing::error!(pid, "not reaped after SIGKILL (stuck in the kernel?)");
        }
    }

    /// SIGKILL and reap, for a failed start or an in-place restart.
    pub async fn kill(&mut self) {
        match &mut self.proc {
            Proc::Local(c) => {
                let _ = c.kill();
                if !reaped_within(c, STOP_GRACE).await {
                    tracing::error!(pid = c.id(), "not reaped after SIGKILL");
                }
            }
            Proc::Container(c) => c.kill(),
        }
    }
}

/// Polls `child` until it has exited (reaping it), for at most `grace`.
async fn reaped_within(child: &mut Child, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `sig` to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Binds a fresh loopback listener for a child (port chosen by the kernel).
pub fn bind_loopback() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")
}

/// The command that starts `spec`, with a cleared environment and its
/// output going to `<log_dir>/<name>.log`; returns it and the log's path.
fn command(spec: &ChildSpec, log_dir: &Path) -> anyhow::Result<(Command, PathBuf)> {
    std::fs::create_dir_all(log_dir).with_context(|| format!("mkdir {}", log_dir.display()))?;
    let log = log_dir.join(format!("{}.log", spec.name));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone()?;

    let mut cmd = match &spec.limit {
        ChildLimit::Systemd { limit } => {
            let mut c = Command::new("systemd-run");
            c.args(["--user", "--scope", "--quiet", "-p"])
                .arg(format!("TasksMax={limit}"))
                .arg("--")
                .arg(&spec.program);
            c
        }
        _ => Command::new(&spec.program),
    };
    cmd.args(&spec.args)
        .arg("--listen-fd")
        .arg("3")
        .env_clear()
        .envs(
            ENV_ALLOWLIST
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
        )
        // Who this process is, for the callee-side `from` filter of faults.
        .env("CASCADE_INSTANCE", &spec.name)
        .envs(
            spec.token
                .iter()
                .map(|t| (cascade_core::auth::SERVICE_TOKEN_ENV, t)),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    Ok((cmd, log))
}

/// Starts `spec` serving on `listener` (inherited as fd 3), logging to `log_dir`.
pub fn spawn(
    spec: &ChildSpec,
    listener: &TcpListener,
    log_dir: &Path,
) -> anyhow::Result<RunningChild> {
    let (mut cmd, log) = command(spec, log_dir)?;
    let procs: Option<File> = match &spec.limit {
        ChildLimit::Cgroup(cg) => Some(cg.open_procs()?),
        _ => None,
    };
    let procs_fd = procs.as_ref().map(|f| f.as_raw_fd());
    let rlimit = match &spec.limit {
        ChildLimit::Rlimit { uid, limit } => Some((*uid, *limit)),
        _ => None,
    };
    let listen_fd = listener.as_raw_fd();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe syscalls (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            // Own process group: a terminal Ctrl-C reaches the supervisor only,
            // which then stops children in order.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Die with the supervisor, even if it is SIGKILLed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("supervisor exited during spawn"));
            }
            if let Some(fd) = procs_fd {
                threadlimit::join_cgroup_in_child(fd)?;
            }
            let rc = if listen_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(listen_fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((uid, limit)) = rlimit {
                threadlimit::drop_to_limited_uid_in_child(uid, limit)?;
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {} ({})", spec.name, spec.program.display()))?;
    drop(procs);
    Ok(RunningChild {
        proc: Proc::Local(child),
        log,
    })
}

/// Polls `grpc.health.v1` at `addr` until SERVING; on timeout or early exit
/// the child is killed and the error carries the tail of its log.
pub async fn wait_ready(
    name: &str,
    addr: &str,
    child: &mut RunningChild,
    deadline: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    loop {
        if !child.alive() {
            bail!(
                "{name} exited during start-up ({}); last log lines:\n{}",
                child.exit_status(),
                log_tail(&child.log, 15)
            );
        }
        if cascade_core::clients::is_serving(addr).await {
            return Ok(());
        }
        if Instant::now() >= until {
            child.kill().await;
            bail!(
                "{name} was not SERVING at {addr} within {deadline:?}; killed it. Last log lines:\n{}",
                log_tail(&child.log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The directory holding the service binaries: `$CASCADE_BIN_DIR`, else the
/// directory of the running `cascade` binary.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("CASCADE_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("locate the cascade binary")?;
    Ok(exe
        .parent()
        .context("the cascade binary has no parent directory")?
        .to_path_buf())
}

/// The path of service binary `name`, checked to exist.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir()?.join(name);
    if !p.is_file() {
        bail!(
            "service binary {} not found; build the workspace first (`cargo build --release`) or set CASCADE_BIN_DIR",
            p.display()
        );
    }
    Ok(p)
}
