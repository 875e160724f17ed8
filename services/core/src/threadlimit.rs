//! The thread limit is the kernel's. This module creates and removes the
//! per-instance pids cgroups (v2 or v1), describes the per-instance
//! unprivileged uid with `RLIMIT_NPROC` used when cgroups are unavailable and
//! we are root, wraps commands in systemd `TasksMax` scopes as a last resort,
//! and reads back, from inside a process, the limit it actually runs under.
//!
//! Every run's cgroups live under one parent, `cascade-<run-id>`, whose own
//! `pids.max` caps the whole run, so no limit we set can exhaust the host.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Which kernel mechanism enforces the per-front-end thread limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// A cgroup v2 directory per instance, with `pids.max`.
    CgroupV2,
    /// A cgroup v1 `pids` directory per instance, with `pids.max`.
    CgroupV1,
    /// A per-instance unprivileged uid with `RLIMIT_NPROC` (needs root).
    RlimitNproc,
    /// `systemd-run --user --scope -p TasksMax=N`.
    Systemd,
    /// The container's `pids_limit` (compose mode).
    Docker,
    /// The Swarm service's pids limit, `TaskTemplate.Resources.Limits.Pids`
    /// (swarm mode; the container runtime sets it on each task).
    Swarm,
    /// No limit at all (only with `--thread-limit none`).
    None,
}

impl Enforcement {
    /// The name used by `status --json` and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CgroupV2 => "cgroup-v2",
            Self::CgroupV1 => "cgroup-v1",
            Self::RlimitNproc => "rlimit-nproc",
            Self::Systemd => "systemd",
            Self::Docker => "docker",
            Self::Swarm => "swarm",
            Self::None => "none",
        }
    }
}

const V2_ROOT: &str = "/sys/fs/cgroup";
const V1_PIDS_ROOT: &str = "/sys/fs/cgroup/pids";

/// The largest total number of tasks one run may hold: half of what the
/// kernel allows system-wide (the smaller of `threads-max` and `pid_max`),
/// so the rest of the host always keeps the other half.
pub fn host_task_budget() -> u64 {
    let read = |p: &str| {
        fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let threads_max = read("/proc/sys/kernel/threads-max").unwrap_or(32_768);
    let pid_max = read("/proc/sys/kernel/pid_max").unwrap_or(32_768);
    threads_max.min(pid_max) / 2
}

/// The parent cgroup of one run; instances are its children.
#[derive(Debug)]
pub struct RunCgroup {
    /// Directory of the run's cgroup, e.g. `/sys/fs/cgroup/pids/cascade-<run>`.
    pub path: PathBuf,
    /// Cgroup version in use.
    pub enforcement: Enforcement,
}

impl RunCgroup {
    /// Creates `cascade-<run_id>` with `pids.max = total_cap`, trying cgroup v2
    /// then v1. The error says why neither works.
    pub fn create(run_id: &str, total_cap: u64) -> anyhow::Result<Self> {
        let name = format!("cascade-{run_id}");
        let v2 = Self::create_v2(&name, total_cap);
        let v2_err = match v2 {
            Ok(cg) => return Ok(cg),
            Err(e) => e,
        };
        match Self::create_v1(&name, total_cap) {
            Ok(cg) => Ok(cg),
            Err(v1_err) => bail!("cgroup v2: {v2_err:#}; cgroup v1: {v1_err:#}"),
        }
    }

    fn create_v2(name: &str, total_cap: u64) -> anyhow::Result<Self> {
        let root = Path::new(V2_ROOT);
        let controllers = fs::read_to_string(root.join("cgroup.controllers"))
            .context("no unified hierarchy at /sys/fs/cgroup")?;
        if !controllers.split_whitespace().any(|c| c == "pids") {
            bail!("the pids controller is not available in the unified hierarchy");
        }
        write_file(&root.join("cgroup.subtree_control"), "+pids")?;
        let path = root.join(name);
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let cg = Self {
            path,
            enforcement: Enforcement::CgroupV2,
        };
        write_file(&cg.path.join("cgroup.subtree_control"), "+pids")?;
        write_file(&cg.path.join("pids.max"), &total_cap.to_string())?;
        Ok(cg)
    }

    fn create_v1(name: &str, total_cap: u64) -> anyhow::Result<Self> {
        let root = Path::new(V1_PIDS_ROOT);
        if !root.join("cgroup.procs").exists() {
            bail!("no pids hierarchy mounted at {V1_PIDS_ROOT}");
        }
        let path = root.join(name);
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let cg = Self {
            path,
            enforcement: Enforcement::CgroupV1,
        };
        write_file(&cg.path.join("pids.max"), &total_cap.to_string())?;
        Ok(cg)
    }

    /// Creates (or re-creates) the cgroup of one instance with `pids.max = limit`.
    pub fn instance(&self, name: &str, limit: u64) -> anyhow::Result<InstanceCgroup> {
        let path = self.path.join(name);
        if !path.exists() {
            fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        }
        let cg = InstanceCgroup { path };
        cg.set_limit(limit)?;
        Ok(cg)
    }

    /// Kills whatever is still inside, waits for it to leave, and removes every
    /// directory of the run. Safe to call more than once.
    pub fn remove(&self) -> anyhow::Result<()> {
        remove_tree(&self.path)
    }
}

/// Removes a run's cgroup directory tree, killing any task left in it.
pub fn remove_tree(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let children: Vec<PathBuf> = fs::read_dir(path)
        .with_context(|| format!("read {}", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    for child in &children {
        remove_tree(child)?;
    }
    kill_all_in(path);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("rmdir {}", path.display()));
            }
            Err(_) => {
                kill_all_in(path);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn kill_all_in(path: &Path) {
    if let Ok(procs) = fs::read_to_string(path.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // Gone already is fine: the cgroup is being emptied.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The cgroup of one instance.
#[derive(Debug, Clone)]
pub struct InstanceCgroup {
    /// Directory of the instance's cgroup.
    pub path: PathBuf,
}

impl InstanceCgroup {
    /// Sets `pids.max` (the thread limit) while the instance runs.
    pub fn set_limit(&self, limit: u64) -> anyhow::Result<()> {
        write_file(&self.path.join("pids.max"), &limit.to_string())
    }

    /// Opens `cgroup.procs` for writing; a child writes "0" to it between
    /// fork and exec to join (see [`join_cgroup_in_child`]).
    pub fn open_procs(&self) -> anyhow::Result<fs::File> {
        let p = self.path.join("cgroup.procs");
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .with_context(|| format!("open {}", p.display()))
    }

    /// How many forks/clones the kernel refused because of `pids.max`
    /// (the `max` line of `pids.events`).
    pub fn refused(&self) -> u64 {
        fs::read_to_string(self.path.join("pids.events"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("max ").and_then(|n| n.trim().parse().ok()))
            })
            .unwrap_or(0)
    }

    /// Tasks in the cgroup now (`pids.current`).
    pub fn current(&self) -> u64 {
        fs::read_to_string(self.path.join("pids.current"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Removes the instance's cgroup (killing anything left inside).
    pub fn remove(&self) -> anyhow::Result<()> {
        remove_tree(&self.path)
    }
}

/// Between fork and exec: moves the calling process into the cgroup whose
/// `cgroup.procs` is open at `procs_fd` ("0" means "the writer", v1 and v2).
/// Async-signal-safe.
pub fn join_cgroup_in_child(procs_fd: libc::c_int) -> std::io::Result<()> {
    // SAFETY: write(2) on an fd we own, from a static buffer.
    let n = unsafe { libc::write(procs_fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Between fork and exec: caps the calling process's uid at `limit` tasks
/// with `RLIMIT_NPROC`, then drops to `uid` (which must be unprivileged: the
/// kernel does not apply `RLIMIT_NPROC` to root). Async-signal-safe.
pub fn drop_to_limited_uid_in_child(uid: u32, limit: u64) -> std::io::Result<()> {
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: plain syscalls with valid pointers to stack values.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NPROC, &rl) != 0
            || libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(uid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether `systemd-run --user --scope` can start transient scopes here.
pub fn systemd_user_available() -> bool {
    std::process::Command::new("systemd-run")
        .args(["--user", "--scope", "--quiet", "--", "true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The thread limit the calling process runs under, as the kernel sees it:
/// the smallest `pids.max` on its cgroup path (v2 or v1), or its
/// `RLIMIT_NPROC` when it is not root. `None` when nothing limits it.
pub fn own_limit() -> Option<u64> {
    let mut best: Option<u64> = None;
    let mut consider = |v: u64| best = Some(best.map_or(v, |b| b.min(v)));
    if let Ok(cgroups) = fs::read_to_string("/proc/self/cgroup") {
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(rel)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let base = if controllers.is_empty() {
                PathBuf::from(V2_ROOT)
            } else if controllers.split(',').any(|c| c == "pids") {
                PathBuf::from(V1_PIDS_ROOT)
            } else {
                continue;
            };
            let mut dir = base.join(rel.trim_start_matches('/'));
            while dir.starts_with(&base) && dir != base {
                if let Some(v) = fs::read_to_string(dir.join("pids.max"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    consider(v);
                }
                if !dir.pop() {
                    break;
                }
            }
            // In a container the hierarchy is mounted at its own cgroup, so
            // the mount root is where the container's `pids.max` lives (a
            // host's root cgroup has none).
            if let Some(v) = fs::read_to_string(base.join("pids.max"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                consider(v);
            }
        }
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into a valid stack value.
        if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut rl) } == 0
            && rl.rlim_cur != libc::RLIM_INFINITY
        {
            consider(rl.rlim_cur);
        }
    }
    best
}

fn write_file(path: &Path, value: &str) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(value.as_bytes())
        .with_context(|| format!("write {value:?} to {}", path.display()))
}
