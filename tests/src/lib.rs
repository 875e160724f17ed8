//! Harness for Cascade's integration tests: every test starts the real
//! `cascade` binary (which starts the real services under real kernel
//! limits) in its own `CASCADE_HOME`, and a guard that takes everything down
//! even when the test fails. Conditions are polled against deadlines; a
//! failed wait prints what was last seen.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use cascade_core::testkit::{eventually, holds};
use serde_json::Value;

pub mod procs;

/// Directory of the workspace's built binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CASCADE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf();
    for b in ["cascade", "kinesis-frontend", "kinesis-backend"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
            dir.join(b).display()
        );
    }
    dir
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Cgroup directories whose name contains `needle`, anywhere a run may make them.
pub fn cgroups_matching(needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
    ] {
        if let Ok(rd) = std::fs::read_dir(root) {
            for e in rd.filter_map(Result::ok) {
                if e.file_name().to_string_lossy().contains(needle) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Waits until none of `pids` runs and no cgroup of run `run_id` is left;
/// panics with what is still there.
pub fn assert_gone(pids: &[u32], run_id: &str) {
    eventually(
        "every process of the run to be gone",
        Duration::from_secs(15),
        || {
            let alive: Vec<u32> = pids.iter().copied().filter(|p| process_alive(*p)).collect();
            if alive.is_empty() {
                Ok(())
            } else {
                Err(format!("still alive: {alive:?}"))
            }
        },
    );
    eventually(
        "the run's cgroups to be removed",
        Duration::from_secs(15),
        || {
            let left = cgroups_matching(run_id);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("left: {left:?}"))
            }
        },
    );
}

/// A `CASCADE_HOME` of its own, and the `cascade` binary pointed at it.
#[derive(Debug)]
pub struct Home {
    /// The directory.
    pub dir: PathBuf,
}

impl Home {
    /// A fresh, empty home under the system temp dir.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cascade-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test home");
        Self { dir }
    }

    /// A `cascade` command using this home.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("cascade"));
        c.args(args)
            .env("CASCADE_HOME", &self.dir)
            .env("RUST_LOG", "warn");
        c
    }

    /// Runs `cascade args...` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cascade")
    }

    /// The supervisor pid from `supervisor.json`, if one is recorded.
    pub fn supervisor_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("supervisor.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }
}

/// Formats an Output for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running fleet (`cascade up --detach`), taken down on drop.
#[derive(Debug)]
pub struct Fleet {
    /// Its home.
    pub home: Home,
    /// Every pid ever seen in its status (for the leak checks).
    pub seen_pids: std::cell::RefCell<Vec<u32>>,
}

impl Fleet {
    /// Starts a fleet with `cascade up --detach <args>`; panics with the
    /// output if it does not come up.
    pub fn up(tag: &str, args: &[&str]) -> Self {
        let home = Home::new(tag);
        let mut all = vec!["up", "--detach"];
        all.extend_from_slice(args);
        let out = home.run(&all);
        let fleet = Self {
            home,
            seen_pids: Default::default(),
        };
        assert!(
            out.status.success(),
            "cascade up failed:\n{}",
            describe(&out)
        );
        fleet
    }

    /// `cascade status --json`.
    pub fn status(&self) -> Value {
        let out = self.home.run(&["status", "--json"]);
        assert!(out.status.success(), "status failed:\n{}", describe(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
        let mut seen = self.seen_pids.borrow_mut();
        for f in v["frontends"].as_array().into_iter().flatten() {
            if let Some(p) = f["pid"].as_u64() {
                seen.push(p as u32);
            }
        }
        for s in v["services"].as_array().into_iter().flatten() {
            if let Some(p) = s["pid"].as_u64().filter(|p| *p > 0) {
                seen.push(p as u32);
            }
        }
        v
    }

    /// Runs a cascade command against this fleet.
    pub fn run(&self, args: &[&str]) -> Output {
        self.home.run(args)
    }

    /// Runs a cascade command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cascade {args:?} failed:\n{}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `pred` holds for the status, printing the last status if not.
    pub fn wait_status(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(what, deadline, || {
            let s = self.status();
            if pred(&s) {
                Ok(s)
            } else {
                Err(serde_json::to_string_pretty(&s).unwrap_or_default())
            }
        })
    }

    /// Front-end entries of the last status.
    pub fn frontends(status: &Value) -> Vec<Value> {
        status["frontends"].as_array().cloned().unwrap_or_default()
    }

    /// The run's cgroup id (`cascade-<run-id>`), from its run directory name.
    pub fn run_id(&self) -> String {
        let s = self.status();
        let dir = s["run_dir"].as_str().unwrap_or_default();
        Path::new(dir)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Asserts that no process and no cgroup of this run is left.
    pub fn assert_nothing_left(&self, run_id: &str) {
        assert_gone(&self.seen_pids.borrow(), run_id);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.home.run(&["down"]);
        if let Some(pid) = self.home.supervisor_pid()
            && process_alive(pid)
        {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
