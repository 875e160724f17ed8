//! The incident's phase diagram: for each (fleet size N, thread limit L),
//! start N front-ends under L tasks each with `cascade up` (real processes,
//! real pids cgroups) and record how it ends:
//! - healthy: a full mesh (every map ready with N-1 peer threads);
//! - tipped: the kernel refused a peer thread (a map unusable, or a
//!   refused spawn), which is where the outage starts;
//! - refused: `cascade up` refused the fleet, whose N*L tasks could exceed
//!   the run's budget (half the host's kernel task limit).
//!
//! Over the measured cells the plot draws the analytic boundary
//! base + (N-1) = L (base: a front-end's fixed threads, learned in the same
//! run) and the budget N*L = budget. Cells that disagree with the boundary
//! are counted in the JSON (`off_boundary`).
//!
//! Writes target/bench/incident_phase.json and target/bench/phase_diagram.svg.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench incident_phase -- [--sizes 4,8,...] [--limits 8,16,...]
//!   cargo bench -p cascade-tests --bench incident_phase -- --smoke

use std::time::{Duration, Instant};

use cascade::state::MapState;
use cascade_tests::bench::{self, Machine};
use cascade_tests::plot::{self, Cell};
use cascade_tests::status::full_mesh;
use cascade_tests::{Fleet, Home, describe, kinesis_args, learn_base_threads};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Fleet size against thread limit: healthy, tipped or refused.
#[derive(Parser, Debug)]
struct Args {
    /// Fleet sizes N (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [4u64, 8, 16, 32, 64, 126])]
    sizes: Vec<u64>,
    /// Thread limits L (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [8u64, 16, 32, 64, 130, 256, 512])]
    limits: Vec<u64>,
    /// Small and quick (N in {3, 6} x L in {8, 16}, plus one refused cell).
    #[arg(long)]
    smoke: bool,
    /// Seconds a cell may take to become healthy or tip.
    #[arg(long, default_value_t = 60)]
    deadline_secs: u64,
    /// Redraw the plot from a JSON report this bench wrote, measuring nothing.
    #[arg(long, value_name = "JSON")]
    replot: Option<std::path::PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct CellRow {
    n: u64,
    thread_limit: u64,
    outcome: Cell,
    /// What the analytic boundary predicts (healthy iff base + n-1 <= L,
    /// refused iff n*L > budget).
    predicted: Cell,
    /// Seconds from `cascade up` to the outcome.
    secs: f64,
    /// What decided it (the refused spawn's error, up's message).
    detail: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    bench: String,
    smoke: bool,
    machine: Machine,
    command: String,
    base_threads: u64,
    cells: Vec<CellRow>,
    /// Cells whose outcome differs from the prediction.
    off_boundary: usize,
}

fn predict(n: u64, l: u64, base: u64, budget: u64) -> Cell {
    if n * l > budget {
        Cell::Refused
    } else if base + n - 1 <= l {
        Cell::Healthy
    } else {
        Cell::Tipped
    }
}

fn cell(n: u64, l: u64, deadline: Duration) -> (Cell, f64, String) {
    let mut args = kinesis_args(n as usize, l);
    args.extend(["--bootstrap", "metadata-store", "--traffic-rate", "0"].map(str::to_owned));
    let start = Instant::now();
    let home = Home::new(&format!("phase{n}x{l}"));
    let mut all = vec!["up", "--detach"];
    all.extend(args.iter().map(String::as_str));
    let out = home.run(&all);
    let fleet = Fleet::watching(home);
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let secs = start.elapsed().as_secs_f64();
        // `up` refuses before anything starts; any other failure is a bug.
        if text.contains("more than this run may use") {
            bench::take_down(fleet);
            return (Cell::Refused, secs, text.trim().to_owned());
        }
        panic!("cascade up failed for N={n} L={l}:\n{}", describe(&out));
    }
    let (got, last) = bench::poll_status(&fleet, deadline, |s| {
        if let Some(f) = s
            .frontends
            .iter()
            .find(|f| matches!(f.shard_map, MapState::Unusable) || f.spawn_failures > 0)
        {
            let why = if f.last_spawn_error.is_empty() {
                f.detail.clone()
            } else {
                format!("{}: {}", f.name, f.last_spawn_error)
            };
            return Some((Cell::Tipped, why));
        }
        full_mesh(s, n as usize).then(|| (Cell::Healthy, String::new()))
    });
    let secs = start.elapsed().as_secs_f64();
    let (outcome, detail) = got.unwrap_or_else(|| {
        let ready = last.as_ref().map_or(0, |s| {
            s.frontends
                .iter()
                .filter(|f| f.shard_map == MapState::Ready)
                .count()
        });
        (
            Cell::Undecided,
            format!("neither within {deadline:?}: {ready}/{n} maps ready"),
        )
    });
    bench::take_down(fleet);
    (outcome, secs, detail)
}

fn main() {
    let a = Args::parse();
    if let Some(path) = &a.replot {
        let report: Report = bench::read_report(path, NAME).unwrap_or_else(|e| fail(&e));
        draw(&report);
        return;
    }
    let machine = Machine::probe();
    let budget = machine.run_task_budget;
    let (sizes, limits) = if a.smoke {
        (vec![3, 6], vec![8, 16])
    } else {
        (a.sizes.clone(), a.limits.clone())
    };
    if let Some(bad) = sizes
        .iter()
        .find(|n| **n < 1 || **n > u64::from(cascade::supervisor::MAX_FLEET))
    {
        eprintln!(
            "error: --sizes {bad} is out of range (1 to {})",
            cascade::supervisor::MAX_FLEET
        );
        std::process::exit(64);
    }
    if let Some(bad) = limits
        .iter()
        .find(|l| **l < 1 || **l > cascade::limits::MAX_THREAD_LIMIT)
    {
        eprintln!(
            "error: --limits {bad} is out of range (1 to {})",
            cascade::limits::MAX_THREAD_LIMIT
        );
        std::process::exit(64);
    }
    println!("learning the front-end's base threads (a fleet of one)...");
    let base = u64::from(learn_base_threads("phase-base", Duration::from_secs(60)));
    println!("base threads {base}, run task budget {budget}");
    let mut grid: Vec<(u64, u64)> = sizes
        .iter()
        .flat_map(|n| limits.iter().map(move |l| (*n, *l)))
        .collect();
    if a.smoke {
        // One cell past the budget, so the smoke sees all three outcomes.
        grid.push((64, budget / 64 + 1));
    }
    let deadline = Duration::from_secs(a.deadline_secs);
    let mut cells = Vec::new();
    for (n, l) in grid {
        let predicted = predict(n, l, base, budget);
        let (outcome, secs, detail) = cell(n, l, deadline);
        println!(
            "incident_phase: N={n:>3} L={l:>4}: {outcome:?} after {secs:.1} s (predicted {predicted:?}){}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(" — {}", detail.lines().next().unwrap_or(""))
            }
        );
        cells.push(CellRow {
            n,
            thread_limit: l,
            outcome,
            predicted,
            secs,
            detail,
        });
    }
    let off_boundary = cells.iter().filter(|c| c.outcome != c.predicted).count();
    println!(
        "incident_phase: {} cells, {off_boundary} off the analytic boundary base + (N-1) = L",
        cells.len()
    );
    let report = Report {
        bench: "incident_phase".into(),
        smoke: a.smoke,
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        base_threads: base,
        off_boundary,
        cells,
    };
    bench::write_json("incident_phase", &report);
    draw(&report);
}

const NAME: &str = "incident_phase";

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(64);
}

/// The phase diagram, from the report.
fn draw(report: &Report) {
    let pts: Vec<(u64, u64, Cell)> = report
        .cells
        .iter()
        .map(|c| (c.n, c.thread_limit, c.outcome))
        .collect();
    let svg = bench::out_dir().join("phase_diagram.svg");
    if let Err(e) = plot::phase_diagram(
        &svg,
        &pts,
        report.base_threads,
        report.machine.run_task_budget,
    ) {
        eprintln!("incident_phase: could not draw {}: {e}", svg.display());
        std::process::exit(1);
    }
    println!("wrote {}", svg.display());
}
