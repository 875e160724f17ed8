//! Choosing how the kernel enforces each front-end's thread limit, in
//! design.md's order of preference, and making sure what a run creates is
//! removed when it ends, even if the supervisor is SIGKILLed (the reaper).

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use cascade_core::threadlimit::{self, Enforcement, RunCgroup};

use crate::launcher::ChildLimit;

/// Largest per-front-end thread limit accepted.
pub const MAX_THREAD_LIMIT: u64 = 4096;

/// `--thread-limit`: a number of tasks, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadLimitArg {
    /// Tasks allowed per front-end process.
    Limit(u64),
    /// No limit.
    None,
}

impl std::str::FromStr for ThreadLimitArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        match s.parse::<u64>() {
            Ok(n) if (1..=MAX_THREAD_LIMIT).contains(&n) => Ok(Self::Limit(n)),
            _ => Err(format!(
                "{s:?} is not a valid thread limit; use a number of threads from 1 to {MAX_THREAD_LIMIT}, or `none`"
            )),
        }
    }
}

impl std::fmt::Display for ThreadLimitArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Limit(n) => write!(f, "{n}"),
            Self::None => f.write_str("none"),
        }
    }
}

/// `--enforcement`: which mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EnforcementPref {
    /// The first that works: cgroup v2, cgroup v1, rlimit-nproc (as root), systemd.
    Auto,
    /// A per-instance pids cgroup (v2, else v1).
    Cgroup,
    /// A per-instance unprivileged uid with RLIMIT_NPROC (needs root).
    RlimitNproc,
    /// systemd-run --user --scope -p TasksMax.
    Systemd,
}

/// The enforcement in force for a run.
#[derive(Debug)]
pub struct LimitPlan {
    /// Tasks per front-end, or `None` for no limit.
    pub limit: Option<u64>,
    /// The mechanism.
    pub enforcement: Enforcement,
    /// The run's parent cgroup, when cgroups are used.
    pub run_cgroup: Option<RunCgroup>,
    uid_base: u32,
}

impl LimitPlan {
    /// Picks the mechanism, or explains what would make one work.
    pub fn establish(
        arg: ThreadLimitArg,
        pref: EnforcementPref,
        run_id: &str,
        probe_binary: &Path,
    ) -> anyhow::Result<Self> {
        let uid_base = 1_000_000 + (std::process::id() % 4096) * 1024;
        let ThreadLimitArg::Limit(limit) = arg else {
            return Ok(Self {
                limit: None,
                enforcement: Enforcement::None,
                run_cgroup: None,
                uid_base,
            });
        };
        let plan = |enforcement, run_cgroup| Self {
            limit: Some(limit),
            enforcement,
            run_cgroup,
            uid_base,
        };
        let mut why = Vec::new();
        if matches!(pref, EnforcementPref::Auto | EnforcementPref::Cgroup) {
            match RunCgroup::create(run_id, threadlimit::host_task_budget()) {
                Ok(cg) => return Ok(plan(cg.enforcement, Some(cg))),
                Err(e) => why.push(format!("cgroups: {e:#}")),
            }
        }
        if matches!(pref, EnforcementPref::Auto | EnforcementPref::RlimitNproc) {
            match rlimit_usable(probe_binary) {
                Ok(()) => return Ok(plan(Enforcement::RlimitNproc, None)),
                Err(e) => why.push(format!("rlimit-nproc: {e:#}")),
            }
        }
        if matches!(pref, EnforcementPref::Auto | EnforcementPref::Systemd) {
            if threadlimit::systemd_user_available() {
                return Ok(plan(Enforcement::Systemd, None));
            }
            why.push("systemd: `systemd-run --user --scope` does not work here".into());
        }
        bail!(
            "no kernel thread-limit enforcement is available:\n  - {}\n\
             To fix: run as root on a host with a writable pids cgroup (v2 or v1), or as root so\n\
             each front-end can run under its own uid with RLIMIT_NPROC, or in a systemd user\n\
             session. Or pass `--thread-limit none` to run with no limit (the fleet will not tip).",
            why.join("\n  - ")
        )
    }

    /// Docker mode: the limit is each front-end container's `pids_limit`,
    /// which the container runtime sets; nothing to create here.
    pub fn docker(arg: ThreadLimitArg) -> Self {
        let limit = match arg {
            ThreadLimitArg::Limit(l) => Some(l),
            ThreadLimitArg::None => None,
        };
        Self {
            limit,
            enforcement: if limit.is_some() {
                Enforcement::Docker
            } else {
                Enforcement::None
            },
            run_cgroup: None,
            uid_base: 0,
        }
    }

    /// The limit for front-end number `index` named `name`.
    pub fn child_limit(&self, name: &str, index: u32) -> anyhow::Result<ChildLimit> {
        let Some(limit) = self.limit else {
            return Ok(ChildLimit::None);
        };
        Ok(match self.enforcement {
            Enforcement::CgroupV1 | Enforcement::CgroupV2 => {
                let run = self
                    .run_cgroup
                    .as_ref()
                    .context("cgroup enforcement without a run cgroup")?;
                ChildLimit::Cgroup(run.instance(name, limit)?)
            }
            Enforcement::RlimitNproc => ChildLimit::Rlimit {
                uid: self.uid_base + index % 1024,
                limit,
            },
            Enforcement::Systemd => ChildLimit::Systemd { limit },
            Enforcement::Docker | Enforcement::Swarm | Enforcement::None => ChildLimit::None,
        })
    }

    /// Removes the run's cgroups (killing anything left inside).
    pub fn cleanup(&self) {
        if let Some(cg) = &self.run_cgroup
            && let Err(e) = cg.remove()
        {
            tracing::error!(error = %format!("{e:#}"), "could not remove the run's cgroup");
        }
    }
}

impl Drop for LimitPlan {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// rlimit-nproc needs root (to switch uid) and binaries an unprivileged uid can run.
fn rlimit_usable(binary: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root to give each front-end its own uid");
    }
    let mut p: Option<&Path> = Some(binary);
    while let Some(path) = p {
        let mode = std::fs::metadata(path)
            .with_context(|| format!("stat {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "{} is not executable/searchable by other users (mode {:o}), so an unprivileged uid cannot start the front-end",
                path.display(),
                mode & 0o7777
            );
        }
        p = path.parent().filter(|x| !x.as_os_str().is_empty());
    }
    Ok(())
}

/// Starts the reaper: a small process that waits for the supervisor to go
/// away (EOF on its stdin) and then removes `cgroup`, killing anything left.
/// Returns the pipe's write end, which the supervisor must hold until it exits.
pub fn spawn_reaper(cgroup: &Path, log: &Path) -> anyhow::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let exe = std::env::current_exe()?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = Command::new(exe);
    cmd.arg("__reap")
        .arg(cgroup)
        .stdin(Stdio::from(read))
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("start the cgroup reaper")?;
    Ok(write)
}

/// The reaper's body (`cascade __reap <cgroup>`): ignore terminal signals,
/// block until the supervisor's end of the pipe closes, then clean up.
pub fn run_reaper(cgroup: PathBuf) -> anyhow::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: setting a signal disposition to SIG_IGN.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut buf = [0u8; 64];
    loop {
        match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if cgroup.exists() {
        eprintln!("reaper: supervisor gone; removing {}", cgroup.display());
        threadlimit::remove_tree(&cgroup)?;
    }
    Ok(())
}
