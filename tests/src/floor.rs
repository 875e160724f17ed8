//! The physical floor of the peer-thread mechanism, for the benchmarks: N
//! bare processes, each spawning K idle OS threads that block in `read(2)`
//! on a socket of their own (one end of a Unix socket pair; the process holds
//! the other end), under the same kind of per-process pids cgroup as the
//! front-ends (a run cgroup capped at the host task budget, one child per
//! process with `pids.max` = the thread limit). No gRPC, no tokio, no
//! membership: only what a thread per peer costs the kernel and the process.
//!
//! The processes are the `cascade-floor` binary of this crate in `--child`
//! mode. Each reports `ready <spawned> <refused>` on stdout once all its
//! threads sit in `read(2)` (or the kernel refused one), then waits for EOF
//! on stdin and exits. Dropping a [`Floor`] closes their stdin, waits for
//! them and removes the cgroups (killing anything left); a reaper
//! (`cascade __reap`) removes the cgroups even if the benchmark is killed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use cascade_core::threadlimit::{self, RunCgroup};

use crate::procs::{self, KernelMem};

/// What the children of one floor run reported.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FloorSample {
    /// Processes started.
    pub processes: usize,
    /// Threads each was asked to spawn.
    pub threads_each: usize,
    /// The per-process pids.max (None: no cgroup).
    pub thread_limit: Option<u64>,
    /// Wall seconds from the first spawn until every process reported all
    /// its threads blocked in read(2) (or a refusal).
    pub ready_secs: f64,
    /// Threads actually running, summed over the processes.
    pub threads: u64,
    /// Thread spawns the kernel refused, summed.
    pub refused: u64,
    /// Sum of the processes' VmRSS, KiB.
    pub rss_kib: u64,
    /// Kernel memory grown since before the first spawn, KiB (system-wide).
    pub kernel: KernelMem,
}

/// A running floor: its children and cgroups, all taken down on drop.
#[derive(Debug)]
pub struct Floor {
    children: Vec<(Child, Option<ChildStdin>)>,
    cgroup: Option<RunCgroup>,
    reaper: Option<(OwnedFd, Child)>,
    /// What was measured.
    pub sample: FloorSample,
}

/// Starts `processes` floor processes of `threads_each` threads (stack
/// reservation `stack_kib`) under `thread_limit` tasks each (None: no
/// cgroup), waits until each reports, and measures. Panics (after cleaning
/// up) if a child does not report within `deadline`.
pub fn start(
    processes: usize,
    threads_each: usize,
    thread_limit: Option<u64>,
    stack_kib: u32,
    deadline: Duration,
) -> Floor {
    let exe = floor_exe();
    assert!(
        exe.is_file(),
        "{} is missing: build it first (`cargo build -p cascade-tests --bins`)",
        exe.display()
    );
    let kernel_before = KernelMem::now();
    let (cgroup, reaper) = match thread_limit {
        Some(_) => {
            let name = format!("floor-{}-{}", std::process::id(), unique());
            let cg = RunCgroup::create(&name, threadlimit::host_task_budget())
                .unwrap_or_else(|e| panic!("create the floor's pids cgroup: {e:#}"));
            let log = std::env::temp_dir().join(format!("cascade-{name}-reaper.log"));
            let reaper = spawn_reaper(&cg.path, &log);
            (Some(cg), Some(reaper))
        }
        None => (None, None),
    };
    let mut floor = Floor {
        children: Vec::with_capacity(processes),
        cgroup,
        reaper,
        sample: FloorSample {
            processes,
            threads_each,
            thread_limit,
            ready_secs: 0.0,
            threads: 0,
            refused: 0,
            rss_kib: 0,
            kernel: KernelMem::default(),
        },
    };
    let t0 = Instant::now();
    let mut outs = Vec::with_capacity(processes);
    for i in 0..processes {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--child",
            "--threads",
            &threads_each.to_string(),
            "--stack-kib",
            &stack_kib.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if let (Some(cg), Some(limit)) = (&floor.cgroup, thread_limit) {
            let inst = cg
                .instance(&format!("p{i}"), limit)
                .unwrap_or_else(|e| panic!("create the floor's instance cgroup: {e:#}"));
            let procs_file = inst
                .open_procs()
                .unwrap_or_else(|e| panic!("open cgroup.procs: {e:#}"));
            let fd = procs_file.as_raw_fd();
            // SAFETY: only an async-signal-safe write(2) between fork and exec;
            // the file outlives the spawn.
            unsafe {
                cmd.pre_exec(move || threadlimit::join_cgroup_in_child(fd));
            }
            let child = cmd.spawn().expect("start a floor process");
            drop(procs_file);
            floor.push(child, &mut outs);
        } else {
            let child = cmd.spawn().expect("start a floor process");
            floor.push(child, &mut outs);
        }
    }
    // Each child writes exactly one line; read them on threads so a slow one
    // cannot hold up the deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    for out in outs {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send((line, Instant::now()));
        });
    }
    drop(tx);
    let end = t0 + deadline;
    let mut last = t0;
    for got in 0..processes {
        let wait = end.saturating_duration_since(Instant::now());
        let Ok((line, at)) = rx.recv_timeout(wait) else {
            panic!("floor: only {got}/{processes} processes reported within {deadline:?}");
        };
        let mut f = line.split_whitespace();
        let (Some("ready"), Some(spawned), Some(refused)) = (f.next(), f.next(), f.next()) else {
            panic!("floor: a process reported {line:?}, not `ready <spawned> <refused>`");
        };
        floor.sample.threads += spawned.parse::<u64>().unwrap_or(0);
        floor.sample.refused += refused.parse::<u64>().unwrap_or(0);
        last = last.max(at);
    }
    floor.sample.ready_secs = (last - t0).as_secs_f64();
    floor.sample.rss_kib = floor
        .children
        .iter()
        .map(|(c, _)| procs::rss_kib(c.id()))
        .sum();
    floor.sample.kernel = KernelMem::now().since(&kernel_before);
    floor
}

impl Floor {
    fn push(&mut self, mut child: Child, outs: &mut Vec<std::process::ChildStdout>) {
        outs.push(child.stdout.take().expect("piped stdout"));
        let stdin = child.stdin.take();
        self.children.push((child, stdin));
    }

    /// Pids of the floor processes.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(c, _)| c.id()).collect()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        for (_, stdin) in &mut self.children {
            drop(stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (c, _) in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(cg) = &self.cgroup
            && let Err(e) = cg.remove()
        {
            eprintln!("floor: could not remove {}: {e:#}", cg.path.display());
        }
        // EOF tells the reaper we are done; the cgroup is gone, so it exits.
        if let Some((pipe, mut reaper)) = self.reaper.take() {
            drop(pipe);
            let _ = reaper.wait();
        }
    }
}

/// `cascade __reap <cgroup>` (the supervisor's reaper): removes the cgroup
/// once the returned pipe end closes, i.e. when this process is gone.
fn spawn_reaper(cgroup: &std::path::Path, log: &std::path::Path) -> (OwnedFd, Child) {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the reaper's log");
    let cascade = floor_exe().with_file_name("cascade");
    assert!(
        cascade.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
        cascade.display()
    );
    let mut cmd = Command::new(cascade);
    cmd.arg("__reap")
        .arg(cgroup)
        .stdin(Stdio::from(read))
        .stdout(Stdio::from(out.try_clone().expect("dup log")))
        .stderr(Stdio::from(out));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start the floor's cgroup reaper");
    (write, child)
}

/// The `cascade-floor` binary: this process when it is one, else the one
/// built with the running bench (`target/<profile>/cascade-floor`), else the
/// one in `CASCADE_BIN_DIR`. The floor is built with the benches, so a bench
/// driving release service binaries from `CASCADE_BIN_DIR` still finds it.
fn floor_exe() -> std::path::PathBuf {
    let me = std::env::current_exe().expect("own path");
    if me.file_name().is_some_and(|n| n == "cascade-floor") {
        return me;
    }
    let beside = me
        .parent()
        .and_then(std::path::Path::parent)
        .map(|d| d.join("cascade-floor"));
    match (beside, std::env::var_os("CASCADE_BIN_DIR")) {
        (Some(b), _) if b.is_file() => b,
        (_, Some(d)) => std::path::PathBuf::from(d).join("cascade-floor"),
        (b, None) => b.unwrap_or_else(|| "cascade-floor".into()),
    }
}

fn unique() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The body of `cascade-floor --child`: spawn `threads` threads, each blocked
/// in read(2) on its own socket; report; wait for EOF on stdin.
pub fn child_main(threads: usize, stack_kib: u32) {
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let blocked = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::with_capacity(threads);
    let mut spawned = 0usize;
    let mut refused = 0usize;
    for i in 0..threads {
        let (mine, theirs) = UnixStream::pair().expect("socketpair");
        let blocked = blocked.clone();
        let r = std::thread::Builder::new()
            .name(format!("floor-{i}"))
            .stack_size(stack_kib as usize * 1024)
            .spawn(move || {
                let mut s = theirs;
                let mut buf = [0u8; 64];
                blocked.fetch_add(1, Ordering::Release);
                // Blocks until the process exits (nobody writes).
                let _ = std::io::Read::read(&mut s, &mut buf);
            });
        match r {
            Ok(_) => {
                spawned += 1;
                held.push(mine);
            }
            Err(_) => {
                refused += 1;
                break;
            }
        }
    }
    while blocked.load(Ordering::Acquire) < spawned {
        std::thread::yield_now();
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {spawned} {refused}");
    let _ = out.flush();
    drop(out);
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    drop(held);
    std::process::exit(0);
}
