//! Scale: how long a full mesh of N front-ends takes to form, against the
//! physical floor measured in the same run, for N up to the host cap.
//!
//! For each N (each at thread limit base + (N-1) + headroom):
//! - floor: `cascade-floor` starts N bare processes, each spawning N-1 idle
//!   threads blocked in read(2), under the same per-process pids cgroups;
//!   time until every thread of every process is up;
//! - mesh: `cascade up --bootstrap metadata-store` with N front-ends (real
//!   processes, real cgroup limits); time from launch to every ShardMap
//!   ready with N-1 peer threads. Ratio mesh / floor (target <= 3x at the
//!   host cap);
//! - cold start: the same with `--bootstrap peers`, the modelled hazard
//!   (each booting front-end waits for a snapshot from every peer): its own
//!   figure, as a ratio to the metadata-store mesh;
//! - the supervisor (`cascade`) at rest: CPU and RSS over a window in which
//!   nothing polls it, against the front-ends' own CPU and RSS;
//! - front-end memory (RSS + kernel) for the cost-growth plot.
//!
//! Writes target/bench/fleet_scale.json and target/bench/cost_growth.svg.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench fleet_scale -- [N ...]   (default: 8 25 50 100 <host cap>)
//!   cargo bench -p cascade-tests --bench fleet_scale -- --smoke   (N = 3, a few seconds)

use std::time::{Duration, Instant};

use cascade::state::MapState;
use cascade_tests::bench::{self, Machine};
use cascade_tests::plot::{self, Series};
use cascade_tests::procs::{self, KernelMem};
use cascade_tests::status::full_mesh;
use cascade_tests::{Fleet, Home, floor, kinesis_args, learn_base_threads};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Full-mesh time of N front-ends against the physical floor.
#[derive(Parser, Debug)]
struct Args {
    /// Fleet sizes (default: 8 25 50 100 and the host cap).
    sizes: Vec<u64>,
    /// Small and quick (N = 3): checks the bench runs and writes its JSON.
    #[arg(long)]
    smoke: bool,
    /// Threads each front-end may hold beyond base + (N-1).
    #[arg(long, default_value_t = 1)]
    headroom: u64,
    /// Skip the peer-bootstrap cold start.
    #[arg(long)]
    no_cold_start: bool,
    /// Seconds of the supervisor's at-rest window.
    #[arg(long, default_value_t = 5)]
    rest_secs: u64,
    /// Redraw the plot from a JSON report this bench wrote, measuring nothing.
    #[arg(long, value_name = "JSON")]
    replot: Option<std::path::PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    n: u64,
    thread_limit: u64,
    /// Tasks the fleet may hold: n * thread_limit (the run budget bounds it).
    tasks: u64,
    floor: floor::FloorSample,
    /// Seconds from `cascade up` to every front-end SERVING (up returns).
    up_secs: f64,
    /// Seconds from `cascade up` to a full mesh (metadata-store bootstrap).
    mesh_secs: Option<f64>,
    /// mesh_secs / floor ready_secs.
    mesh_vs_floor: Option<f64>,
    peer_threads: u64,
    /// Sum of the front-ends' VmRSS at rest, KiB.
    frontend_rss_kib: u64,
    /// Kernel memory grown since before `up` (system-wide), at rest.
    kernel: KernelMem,
    supervisor: Option<Supervisor>,
    /// Seconds to a full mesh with `--bootstrap peers` (None: not measured
    /// or not settled within the deadline).
    cold_start_secs: Option<f64>,
    /// cold_start_secs / mesh_secs.
    cold_vs_mesh: Option<f64>,
    /// What the cold start did instead of settling, if it did not.
    cold_start_note: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Supervisor {
    window_secs: f64,
    /// Cores the supervisor used on average over the window.
    cpu_cores: f64,
    rss_kib: u64,
    /// Cores the front-ends used together over the same window.
    frontends_cpu_cores: f64,
    /// Supervisor CPU / front-ends' CPU.
    cpu_share: f64,
    /// Supervisor RSS / front-ends' RSS.
    rss_share: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    bench: String,
    smoke: bool,
    machine: Machine,
    command: String,
    base_threads: u64,
    headroom: u64,
    host_cap: u64,
    rows: Vec<Row>,
    target_mesh_vs_floor_at_cap: f64,
}

const DEADLINE: Duration = Duration::from_secs(150);

/// `cascade up --detach` of N front-ends; `Err` (after taking down what
/// started) with the supervisor's last words when it refuses to come up,
/// as it does when front-ends stay unready (the peer-bootstrap hazard).
fn up(tag: &str, n: u64, limit: u64, bootstrap: &str) -> Result<(Fleet, Instant), String> {
    let mut args = kinesis_args(n as usize, limit);
    args.extend(["--bootstrap", bootstrap, "--traffic-rate", "0"].map(str::to_owned));
    let home = Home::new(tag);
    let mut all = vec!["up", "--detach"];
    all.extend(args.iter().map(String::as_str));
    let start = Instant::now();
    let out = home.run(&all);
    let fleet = Fleet::watching(home);
    if out.status.success() {
        return Ok((fleet, start));
    }
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    bench::take_down(fleet);
    Err(format!(
        "`cascade up` gave up after {secs:.1} s: {}",
        last.trim()
    ))
}

fn at_rest(fleet: &Fleet, secs: u64) -> Supervisor {
    let s = fleet.status();
    let sup = s.supervisor_pid;
    let fes: Vec<u32> = s.frontends.iter().map(|f| f.pid).collect();
    let fe_ticks = || fes.iter().map(|p| bench::cpu_ticks(*p)).sum::<u64>();
    let (s0, f0, t0) = (bench::cpu_ticks(sup), fe_ticks(), Instant::now());
    // The window: nothing polls the supervisor.
    std::thread::sleep(Duration::from_secs(secs));
    let (s1, f1, dt) = (
        bench::cpu_ticks(sup),
        fe_ticks(),
        t0.elapsed().as_secs_f64(),
    );
    let hz = bench::ticks_per_sec();
    let cpu = (s1 - s0) as f64 / hz / dt;
    let fcpu = (f1 - f0) as f64 / hz / dt;
    let rss = procs::rss_kib(sup);
    let frss: u64 = fes.iter().map(|p| procs::rss_kib(*p)).sum();
    Supervisor {
        window_secs: dt,
        cpu_cores: cpu,
        rss_kib: rss,
        frontends_cpu_cores: fcpu,
        cpu_share: cpu / fcpu.max(1e-9),
        rss_share: rss as f64 / frss.max(1) as f64,
    }
}

fn measure(n: u64, base: u64, a: &Args) -> Row {
    let limit = bench::mesh_limit(base, n, a.headroom);
    let fl = floor::start(n as usize, n as usize - 1, Some(limit), 256, DEADLINE);
    let floor_sample = fl.sample.clone();
    drop(fl);
    println!(
        "  floor: {n} processes x {} idle threads up in {:.2} s ({} refused)",
        n - 1,
        floor_sample.ready_secs,
        floor_sample.refused
    );

    let kernel_before = KernelMem::now();
    let (fleet, start) = up(&format!("scale{n}"), n, limit, "metadata-store")
        .unwrap_or_else(|e| panic!("{n} front-ends, metadata-store bootstrap: {e}"));
    let up_secs = start.elapsed().as_secs_f64();
    let (mesh, last) = bench::poll_status(&fleet, DEADLINE, |s| {
        full_mesh(s, n as usize).then(|| start.elapsed().as_secs_f64())
    });
    let mut row = Row {
        n,
        thread_limit: limit,
        tasks: n * limit,
        mesh_vs_floor: mesh.map(|m| m / floor_sample.ready_secs.max(1e-9)),
        floor: floor_sample,
        up_secs,
        mesh_secs: mesh,
        peer_threads: 0,
        frontend_rss_kib: 0,
        kernel: KernelMem::default(),
        supervisor: None,
        cold_start_secs: None,
        cold_vs_mesh: None,
        cold_start_note: String::new(),
    };
    if mesh.is_some() {
        let sup = at_rest(&fleet, a.rest_secs);
        let s = fleet.status();
        row.peer_threads = s.frontends.iter().map(|f| u64::from(f.peer_threads)).sum();
        row.frontend_rss_kib = s.frontends.iter().map(|f| procs::rss_kib(f.pid)).sum();
        row.kernel = KernelMem::now().since(&kernel_before);
        row.supervisor = Some(sup);
    } else if let Some(s) = last {
        eprintln!(
            "fleet_scale: {n} front-ends did not reach a full mesh in {DEADLINE:?}; last status:\n{}",
            cascade_tests::status::pretty(&s)
        );
    }
    bench::take_down(fleet);

    if !a.no_cold_start {
        match up(&format!("cold{n}"), n, limit, "peers") {
            Ok((fleet, start)) => {
                let (cold, last) = bench::poll_status(&fleet, DEADLINE, |s| {
                    full_mesh(s, n as usize).then(|| start.elapsed().as_secs_f64())
                });
                row.cold_start_secs = cold;
                row.cold_vs_mesh = cold.zip(row.mesh_secs).map(|(c, m)| c / m);
                if cold.is_none() {
                    row.cold_start_note = last.map_or("no status".into(), |s| {
                        let ready = s
                            .frontends
                            .iter()
                            .filter(|f| f.shard_map == MapState::Ready)
                            .count();
                        format!("not settled within {DEADLINE:?}: {ready}/{n} maps ready")
                    });
                }
                bench::take_down(fleet);
            }
            Err(e) => row.cold_start_note = e,
        }
    }
    row
}

fn main() {
    let a = Args::parse();
    if let Some(path) = &a.replot {
        let report: Report = bench::read_report(path, NAME).unwrap_or_else(|e| fail(&e));
        draw(&report);
        return;
    }
    let machine = Machine::probe();
    let headroom = a.headroom;
    println!("learning the front-end's base threads (a fleet of one)...");
    let base = u64::from(learn_base_threads("scale-base", Duration::from_secs(60)));
    let cap = bench::host_cap(base, headroom, machine.run_task_budget);
    let sizes = if a.smoke {
        vec![3]
    } else if a.sizes.is_empty() {
        vec![8, 25, 50, 100, cap]
    } else {
        a.sizes.clone()
    };
    if let Some(bad) = sizes.iter().find(|n| **n < 2 || **n > cap) {
        eprintln!(
            "error: fleet size {bad} is out of range: a full mesh needs 2 to {cap} front-ends here \
             (host cap: n * (base {base} + n-1 + headroom {headroom}) <= run budget {})",
            machine.run_task_budget
        );
        std::process::exit(64);
    }
    println!(
        "base threads {base}, headroom {headroom}, run task budget {}, host cap {cap} front-ends",
        machine.run_task_budget
    );
    let mut report = Report {
        bench: "fleet_scale".into(),
        smoke: a.smoke,
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        base_threads: base,
        headroom,
        host_cap: cap,
        target_mesh_vs_floor_at_cap: 3.0,
        rows: Vec::new(),
    };
    for n in &sizes {
        println!("N = {n}:");
        let r = measure(*n, base, &a);
        println!(
            "fleet_scale: {n} front-ends (limit {}), {} peer threads: up {:.2} s, full mesh {} vs floor {:.2} s = {}",
            r.thread_limit,
            r.peer_threads,
            r.up_secs,
            r.mesh_secs
                .map_or("NOT REACHED".into(), |m| format!("{m:.2} s")),
            r.floor.ready_secs,
            r.mesh_vs_floor
                .map_or("-".into(), |x| format!("{x:.2}x the floor")),
        );
        if !a.no_cold_start {
            println!(
                "fleet_scale: {n} front-ends, peer-bootstrap cold start: {} ({})",
                r.cold_start_secs
                    .map_or(r.cold_start_note.clone(), |c| format!("{c:.2} s")),
                r.cold_vs_mesh
                    .map_or("-".into(), |x| format!("{x:.2}x the metadata-store mesh")),
            );
        }
        if let Some(s) = &r.supervisor {
            println!(
                "fleet_scale: {n} front-ends, supervisor at rest: {:.3} cores ({:.1}% of the front-ends' {:.3}), RSS {} KiB ({:.1}% of theirs)",
                s.cpu_cores,
                s.cpu_share * 100.0,
                s.frontends_cpu_cores,
                s.rss_kib,
                s.rss_share * 100.0
            );
        }
        report.rows.push(r);
        // After every size, so a bench stopped part-way keeps what it measured.
        bench::write_json("fleet_scale", &report);
    }
    draw(&report);
    if let Some(r) = report.rows.iter().find(|r| r.mesh_secs.is_none()) {
        eprintln!(
            "fleet_scale: FAILED: {} front-ends never reached a full mesh",
            r.n
        );
        std::process::exit(1);
    }
}

const NAME: &str = "fleet_scale";

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(64);
}

/// The cost-growth plot, from the report.
fn draw(report: &Report) {
    let pts = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .rows
            .iter()
            .filter_map(|r| Some((r.n as f64, f(r)?)))
            .collect()
    };
    let series = [
        Series {
            label: "peer threads (measured)".into(),
            points: pts(&|r| r.mesh_secs.map(|_| r.peer_threads as f64)),
        },
        Series {
            label: "front-end memory: RSS + kernel (measured)".into(),
            points: pts(&|r| {
                r.mesh_secs
                    .map(|_| (r.frontend_rss_kib as i64 + r.kernel.counted_kib()) as f64)
            }),
        },
        Series {
            label: "full-mesh time, metadata-store (measured)".into(),
            points: pts(&|r| r.mesh_secs),
        },
        Series {
            label: "floor: N x (N-1) idle threads up (measured)".into(),
            points: pts(&|r| Some(r.floor.ready_secs)),
        },
    ];
    let svg = bench::out_dir().join("cost_growth.svg");
    match plot::cost_growth(&svg, &series) {
        Ok(()) => println!("wrote {}", svg.display()),
        Err(e) => {
            eprintln!("fleet_scale: could not draw {}: {e}", svg.display());
            std::process::exit(1);
        }
    }
}
