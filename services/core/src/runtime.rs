//! The fixed thread budget of a Cascade process. A front-end must be able to
//! say exactly how many non-peer threads it has (`base_threads`), so the tokio
//! runtime has a fixed worker count and a blocking pool capped at one thread
//! that is started up front and never expires: nothing spawns threads on demand.

use std::time::Duration;

use anyhow::Context;

/// Runtime sizing flags shared by every service binary.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Tokio worker threads (fixed for the life of the process).
    #[arg(long, env = "CASCADE_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
}

/// A started runtime and the number of threads the process had once it was up.
#[derive(Debug)]
pub struct FixedRuntime {
    /// The runtime itself.
    pub runtime: tokio::runtime::Runtime,
    /// Threads of this process right after start-up: main + workers + 1 blocking.
    pub base_threads: u32,
}

/// Builds the runtime, pre-starts its single blocking thread, and counts threads.
pub fn fixed_runtime(args: &RuntimeArgs) -> anyhow::Result<FixedRuntime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.workers))
        .max_blocking_threads(1)
        // The blocking thread lives forever, so the count never drifts.
        .thread_keep_alive(Duration::from_secs(60 * 60 * 24 * 365))
        .thread_name("tokio-rt")
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    runtime
        .block_on(runtime.spawn_blocking(|| ()))
        .context("cannot start the blocking thread")?;
    let expected = 1 + u32::from(args.workers) + 1;
    // Workers start asynchronously; wait until they all exist.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut seen = count_threads();
    while seen < expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        seen = count_threads();
    }
    if seen != expected {
        tracing::warn!(seen, expected, "unexpected thread count at start-up");
    }
    Ok(FixedRuntime {
        runtime,
        base_threads: seen,
    })
}

/// Threads of this process right now, from `/proc/self/task`.
pub fn count_threads() -> u32 {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count() as u32)
        .unwrap_or(0)
}
