//! What the benchmarks share: where their JSON and SVG go
//! (`target/bench/<name>.json`), the machine they ran on, the host cap of a
//! full mesh, and taking a fleet down and checking nothing of it is left.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cascade::status::Status;
use serde::Serialize;

use crate::Fleet;

/// The machine a figure was taken on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    /// Online CPUs.
    pub cores: u64,
    /// MemTotal, KiB.
    pub mem_total_kib: u64,
    /// `uname -r`.
    pub kernel: String,
    /// "v2" when /sys/fs/cgroup is cgroup2, else "v1".
    pub cgroup: String,
    /// /proc/sys/kernel/pid_max.
    pub pid_max: u64,
    /// /proc/sys/kernel/threads-max.
    pub threads_max: u64,
    /// /proc/sys/vm/max_map_count.
    pub max_map_count: u64,
    /// Tasks one run may hold: min(pid_max, threads-max) / 2.
    pub run_task_budget: u64,
    /// 1-minute load average when the bench started (other work on the host).
    pub loadavg_1m: f64,
    /// When the bench started (UTC, RFC 3339).
    pub date: String,
}

fn read_u64(p: &str) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Machine {
    /// This machine, now.
    pub fn probe() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "v2"
        } else {
            "v1"
        };
        let loadavg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get() as u64),
            mem_total_kib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cgroup: cgroup.to_owned(),
            pid_max: read_u64("/proc/sys/kernel/pid_max"),
            threads_max: read_u64("/proc/sys/kernel/threads-max"),
            max_map_count: read_u64("/proc/sys/vm/max_map_count"),
            run_task_budget: cascade_core::threadlimit::host_task_budget(),
            loadavg_1m,
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }
}

/// `target/bench`, made if missing: beside the profile directory the bench
/// binary runs from (`target/<profile>/deps/<bench>`).
pub fn out_dir() -> PathBuf {
    let dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("bench"),
        None => crate::bin_dir()
            .parent()
            .map(|t| t.join("bench"))
            .expect("target/<profile> has a parent"),
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// Reads back a report `write_json` wrote (`--replot`); the error names
/// the file and what it is not.
pub fn read_report<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    name: &str,
) -> Result<T, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--replot {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("--replot {}: not a {name} report: {e}", path.display()))
}

/// Writes `report` as pretty JSON to `target/bench/<name>.json`; returns the path.
pub fn write_json<T: Serialize>(name: &str, report: &T) -> PathBuf {
    let path = out_dir().join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(report).expect("a bench report serializes");
    std::fs::write(&path, text + "\n").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    println!("wrote {}", path.display());
    path
}

/// The thread limit that lets a front-end of a full mesh of `n` hold its
/// `base` threads, its `n - 1` peers and `headroom` more.
pub fn mesh_limit(base: u64, n: u64, headroom: u64) -> u64 {
    base + n.saturating_sub(1) + headroom
}

/// The largest full mesh one run may hold: the largest `n` with
/// `n * mesh_limit(base, n, headroom) <= budget` (and `n <= MAX_FLEET`).
pub fn host_cap(base: u64, headroom: u64, budget: u64) -> u64 {
    (1..=u64::from(cascade::supervisor::MAX_FLEET))
        .take_while(|n| n * mesh_limit(base, *n, headroom) <= budget)
        .last()
        .unwrap_or(0)
}

/// CPU time (user + system) of a process so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Clock ticks per second.
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Polls the fleet's status until `check` says `Some` or `deadline`
/// passes; `None` then (the caller reports what it saw, no panic).
pub fn poll_status<T>(
    fleet: &Fleet,
    deadline: Duration,
    mut check: impl FnMut(&Status) -> Option<T>,
) -> (Option<T>, Option<Status>) {
    let end = Instant::now() + deadline;
    let mut last = None;
    loop {
        if let Ok(s) = fleet.try_status() {
            if let Some(v) = check(&s) {
                return (Some(v), Some(s));
            }
            last = Some(s);
        }
        if Instant::now() >= end {
            return (None, last);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Takes the fleet down (`cascade down`) and waits until none of its
/// processes and none of its cgroups is left (panics naming what is), then
/// removes its home directory.
pub fn take_down(fleet: Fleet) {
    let run_id = fleet.try_status().ok().map(|s| crate::status::run_id(&s));
    let mut pids = fleet.seen_pids.borrow().clone();
    pids.extend(fleet.home.supervisor_pid());
    let home = fleet.home.dir.clone();
    drop(fleet);
    match run_id {
        Some(id) => crate::assert_gone(&pids, &id),
        None => crate::assert_gone(&pids, "cascade-no-such-run"),
    }
    let _ = std::fs::remove_dir_all(home);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_cap_is_the_largest_mesh_the_budget_holds() {
        // This machine: budget min(32768, 192726) / 2, base 4, headroom 1.
        assert_eq!(mesh_limit(4, 126, 1), 130);
        assert_eq!(host_cap(4, 1, 16_384), 126);
        assert!(126 * mesh_limit(4, 126, 1) <= 16_384);
        assert!(127 * mesh_limit(4, 127, 1) > 16_384);
        // The old choice of limit (n + 16) could not reach it.
        assert!(host_cap(4, 16 - 3, 16_384) < 126);
        assert_eq!(host_cap(4, 1, 0), 0);
    }

    #[test]
    fn kernel_growth_is_a_difference() {
        let a = crate::procs::KernelMem {
            kernel_stack_kib: 10,
            slab_kib: 20,
            sunreclaim_kib: 5,
            page_tables_kib: 1,
        };
        let b = crate::procs::KernelMem {
            kernel_stack_kib: 26,
            slab_kib: 18,
            sunreclaim_kib: 9,
            page_tables_kib: 3,
        };
        let d = b.since(&a);
        assert_eq!(d.slab_kib, -2);
        assert_eq!(d.counted_kib(), 16 + 4 + 2);
    }
}
