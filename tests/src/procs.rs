//! Starting service binaries directly (without the supervisor), for the
//! benchmarks that need a setup the CLI does not offer (isolated fleets, an
//! echo baseline). Every process is killed when its guard drops.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cascade_core::testkit::{eventually_async, holds};

/// A started process, SIGKILLed on drop.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its listen address.
    pub addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, then released; benchmarks only).
pub fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .expect("bind 127.0.0.1:0")
}

/// Starts `bin` from the workspace's target dir with `--listen <addr>` and `args`.
pub fn start(bin: &str, args: &[String]) -> Proc {
    let addr = free_addr();
    let child = Command::new(crate::bin_dir().join(bin))
        .arg("--listen")
        .arg(&addr)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"));
    Proc { child, addr }
}

/// Starts any command that takes its listen address in `CASCADE_LISTEN`.
pub fn start_command(mut cmd: Command) -> Proc {
    let addr = free_addr();
    let child = cmd
        .env("CASCADE_LISTEN", &addr)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start command");
    Proc { child, addr }
}

/// Waits until `grpc.health.v1` at `addr` says SERVING.
pub async fn wait_serving(addr: &str, deadline: Duration) {
    eventually_async(&format!("{addr} to be SERVING"), deadline, || async {
        holds(cascade_core::clients::is_serving(addr).await, || {
            "not SERVING".to_owned()
        })
    })
    .await;
}

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Kernel memory that grows with threads and sockets, in KiB, system-wide:
/// KernelStack + Slab + PageTables from /proc/meminfo.
pub fn kernel_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    get("KernelStack:") + get("Slab:") + get("PageTables:")
}

/// Kernel memory that grows with threads and sockets, from /proc/meminfo,
/// in KiB: the whole of it is system-wide, so on a shared host a delta holds
/// other processes' churn too. `Slab`'s reclaimable part is mostly the
/// dentry and inode caches that file activity elsewhere moves; the
/// benchmarks therefore count `SUnreclaim` (task structs, sockets, ...) and
/// report `Slab` beside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelMem {
    /// KernelStack.
    pub kernel_stack_kib: i64,
    /// Slab (reclaimable and not).
    pub slab_kib: i64,
    /// SUnreclaim (the unreclaimable part of Slab).
    pub sunreclaim_kib: i64,
    /// PageTables.
    pub page_tables_kib: i64,
}

impl KernelMem {
    /// The values now.
    pub fn now() -> Self {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let get = |k: &str| -> i64 {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Self {
            kernel_stack_kib: get("KernelStack:"),
            slab_kib: get("Slab:"),
            sunreclaim_kib: get("SUnreclaim:"),
            page_tables_kib: get("PageTables:"),
        }
    }

    /// The growth from `before` to `self`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            kernel_stack_kib: self.kernel_stack_kib - before.kernel_stack_kib,
            slab_kib: self.slab_kib - before.slab_kib,
            sunreclaim_kib: self.sunreclaim_kib - before.sunreclaim_kib,
            page_tables_kib: self.page_tables_kib - before.page_tables_kib,
        }
    }

    /// KernelStack + SUnreclaim + PageTables: what the benchmarks count.
    pub fn counted_kib(&self) -> i64 {
        self.kernel_stack_kib + self.sunreclaim_kib + self.page_tables_kib
    }
}
