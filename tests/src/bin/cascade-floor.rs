//! `cascade-floor`: the physical floor of the peer-thread mechanism (see
//! `cascade_tests::floor`). `cascade-floor --processes N --threads K
//! [--thread-limit L]` starts N processes of K idle threads each under the
//! same pids cgroups as the front-ends and prints what it measured as JSON;
//! `--child` is one of those processes.

use std::time::Duration;

use clap::Parser;

/// The physical floor of a thread-per-peer mesh: N processes, each with K
/// idle threads blocked in read(2), under per-process pids cgroups.
#[derive(Parser, Debug)]
#[command(name = "cascade-floor")]
struct Args {
    /// Processes to start.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=1024))]
    processes: u32,
    /// Idle threads each process spawns (a full mesh of N: N-1).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(0..=8192))]
    threads: u32,
    /// pids.max of each process's cgroup (tasks), or `none` for no cgroup.
    #[arg(long, default_value = "none")]
    thread_limit: String,
    /// Stack reserved per thread, KiB (the front-ends' peer threads use 256).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=8192))]
    stack_kib: u32,
    /// How long the processes may take to report, seconds.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
    /// Internal: be one floor process.
    #[arg(long, hide = true)]
    child: bool,
}

fn main() {
    let a = Args::parse();
    if a.child {
        cascade_tests::floor::child_main(a.threads as usize, a.stack_kib);
        return;
    }
    let limit = if a.thread_limit.eq_ignore_ascii_case("none") {
        None
    } else {
        match a.thread_limit.parse::<u64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                eprintln!(
                    "error: --thread-limit {:?} is not valid; use a number of tasks (1 or more) or `none`",
                    a.thread_limit
                );
                std::process::exit(64);
            }
        }
    };
    let floor = cascade_tests::floor::start(
        a.processes as usize,
        a.threads as usize,
        limit,
        a.stack_kib,
        Duration::from_secs(a.deadline_secs),
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&floor.sample).expect("serialize")
    );
}
