//! Harness for Cascade's integration tests: every test starts the real
//! `cascade` binary (which starts the real services under real kernel
//! limits) in its own `CASCADE_HOME`, and a guard that takes everything down
//! even when the test fails. Conditions are polled against deadlines; a
//! failed wait prints what was last seen. Status, probes and reports are
//! read through typed contracts (`status`, `probe`, `outputs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cascade::home::SupervisorFile;
use cascade::status::Status;
pub use cascade_core::testkit::{eventually, holds};

pub use crate::probe::ProbeReport;

pub mod bench;
pub mod floor;
pub mod http;
pub mod kinesis;
pub mod outputs;
pub mod plot;
pub mod probe;
pub mod procs;
pub mod status;

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
    assert!(!run_id.is_empty(), "an empty run id matches every cgroup");
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

    /// The run's token from `supervisor.json`, if one is recorded.
    pub fn token(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join("supervisor.json")).ok()?;
        let sup: SupervisorFile = serde_json::from_str(&text).ok()?;
        sup.token
    }

    /// The supervisor pid from `supervisor.json`, if one is recorded.
    pub fn supervisor_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("supervisor.json")).ok()?;
        let sup: SupervisorFile = serde_json::from_str(&text).ok()?;
        Some(sup.pid)
    }

    /// `cascade status --json` against this home; panics with the output
    /// (or the raw text) if it fails.
    pub fn status(&self) -> Status {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `cascade status --json` against this home, or why it could not be
    /// had: the command's output, or the raw text that is not a `Status`.
    pub fn try_status(&self) -> Result<Status, String> {
        let out = self.run(&["status", "--json"]);
        if !out.status.success() {
            return Err(format!("cascade status failed:\n{}", describe(&out)));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "status --json is not a Status ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
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

/// `up` flags for a Kinesis-only fleet: `frontends` front-ends under
/// `thread_limit` threads each, at 3600x (a learning delay of one incident
/// hour passes in a wall second).
pub fn kinesis_args(frontends: usize, thread_limit: u64) -> Vec<String> {
    [
        "--services",
        "kinesis",
        "--frontends",
        &frontends.to_string(),
        "--thread-limit",
        &thread_limit.to_string(),
        "--time-scale",
        "3600",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A front-end's fixed non-peer threads on this machine, learned from a
/// fleet of one (thread limit 64, no customer traffic) that is ready
/// within `deadline`.
pub fn learn_base_threads(tag: &str, deadline: Duration) -> u32 {
    let mut args = kinesis_args(1, 64);
    args.extend(["--traffic-rate".to_owned(), "0".to_owned()]);
    let fleet = Fleet::up(tag, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let s = fleet.wait_status("one ready front-end", deadline, |s| status::full_mesh(s, 1));
    s.frontends[0].base_threads
}

/// Waits until `child` exits; returns how it exited.
pub fn wait_exit(child: &mut Child, what: &str, deadline: Duration) -> ExitStatus {
    eventually(what, deadline, || {
        child
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_owned())
    })
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
        // The supervisor takes everything down once this test process is
        // gone, so a test killed by its timeout (or SIGKILLed) leaks nothing.
        let exit_with = format!("--exit-with={}", std::process::id());
        let mut all = vec!["up", "--detach", &exit_with];
        all.extend_from_slice(args);
        let out = home.run(&all);
        let fleet = Self::watching(home);
        assert!(
            out.status.success(),
            "cascade up failed:\n{}",
            describe(&out)
        );
        fleet
    }

    /// A Kinesis-only fleet (see [`kinesis_args`]).
    pub fn kinesis(tag: &str, frontends: usize, thread_limit: u64) -> Self {
        let args = kinesis_args(frontends, thread_limit);
        Self::up(tag, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The fleet of a supervisor started some other way in `home`; it is
    /// taken down on drop all the same.
    pub fn watching(home: Home) -> Self {
        Self {
            home,
            seen_pids: Default::default(),
        }
    }

    /// `cascade status --json`, or why it could not be had; remembers
    /// every pid it names.
    pub fn try_status(&self) -> Result<Status, String> {
        let s = self.home.try_status()?;
        self.seen_pids.borrow_mut().extend(status::pids(&s));
        Ok(s)
    }

    /// `cascade status --json`, remembering its pids; panics with the
    /// output (or the raw text) if it fails.
    pub fn status(&self) -> Status {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
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
        pred: impl Fn(&Status) -> bool,
    ) -> Status {
        self.wait_until(what, deadline, |s| Ok(pred(s)))
    }

    /// Waits until `check` returns `Ok(true)` for the status. Its `Err` (a
    /// gauge that is not there) is printed with the last status on timeout.
    pub fn wait_until(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn(&Status) -> Result<bool, String>,
    ) -> Status {
        eventually(what, deadline, || {
            let s = self.try_status()?;
            match check(&s) {
                Ok(true) => Ok(s),
                Ok(false) => Err(status::pretty(&s)),
                Err(e) => Err(format!("{e}\n{}", status::pretty(&s))),
            }
        })
    }

    /// `cascade probe <svc> --count <count> --json` (each call's deadline 1 s).
    pub fn probe(&self, svc: &str, count: u32) -> ProbeReport {
        self.probe_args(svc, count, &[])
    }

    /// [`Fleet::probe`] with each call's deadline `deadline` (e.g. `500ms`).
    pub fn probe_within(&self, svc: &str, count: u32, deadline: &str) -> ProbeReport {
        self.probe_args(svc, count, &["--deadline", deadline])
    }

    fn probe_args(&self, svc: &str, count: u32, extra: &[&str]) -> ProbeReport {
        let count = count.to_string();
        let mut args = vec!["probe", svc, "--count", &count, "--json"];
        args.extend_from_slice(extra);
        let p = ProbeReport::parse(&self.ok(&args));
        assert_eq!(p.service, svc, "the probe reports the service asked: {p:?}");
        p
    }

    /// The run's cgroup id (`cascade-<run-id>`), from its run directory name.
    pub fn run_id(&self) -> String {
        status::run_id(&self.status())
    }

    /// Asserts that no process and no cgroup of this run is left.
    pub fn assert_nothing_left(&self, run_id: &str) {
        assert_gone(&self.seen_pids.borrow(), run_id);
    }
}

pub use nix::sys::signal::Signal;

/// Sends `sig` to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.home.run(&["down"]);
        if let Some(pid) = self.home.supervisor_pid()
            && process_alive(pid)
        {
            signal(pid, Signal::SIGKILL);
        }
    }
}
