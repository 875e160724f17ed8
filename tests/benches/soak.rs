//! The soak: seeded cycles of tip, fault (every fault kind in turn) and
//! recover against one fleet, for a bounded time and count, checking after
//! every cycle that nothing leaked and every fault was reverted. It prints
//! its figures, writes target/bench/soak.json, and exits non-zero on the
//! first broken invariant, saying what broke (the fleet is taken down
//! first, so nothing is left running either way).
//!
//! Invariants after each cycle:
//! - no active fault in the supervisor, and none in any service's fault
//!   layer (`Control.ListFaults` on every instance);
//! - no process stopped (SIGSTOP) and every front-end's kernel limit back
//!   at the run's limit;
//! - the process count and the run's cgroups the same as after start-up;
//! - the supervisor's RSS and open fds bounded (at most 2x their start plus
//!   64 MiB / 64 fds);
//! - CloudWatch's local buffer lost and duplicated nothing: every marker
//!   datapoint put while Kinesis was down reads back exactly once.
//!
//!   cargo build --release --workspace --bins
//!   cargo bench -p cascade-tests --bench soak -- --duration 30m
//!   cargo bench -p cascade-tests --bench soak -- --smoke     (2 cycles)

use std::time::{Duration, Instant};

use cascade::state::MapState;
use cascade::status::Status;
use cascade_proto::cloudwatch::cloud_watch_client::CloudWatchClient;
use cascade_proto::cloudwatch::{GetMetricDataRequest, MetricDatum, PutMetricDataRequest};
use cascade_proto::control::ListFaultsRequest;
use cascade_tests::Fleet;
use cascade_tests::bench::{self, Machine};
use cascade_tests::status::{all_serving, full_mesh, pretty};
use clap::Parser;
use serde::Serialize;

/// Seeded tip / fault / recover cycles with leak and revert checks.
#[derive(Parser, Debug)]
struct Args {
    /// How long to keep cycling (wall time), e.g. 30m.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many cycles even if time is left.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_cycles: u32,
    /// Seed: which fault kind the first cycle uses, and the marker values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Two cycles, 3 front-ends: checks the soak runs and writes its JSON.
    #[arg(long)]
    smoke: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Every fault kind, each as one `cascade inject` (and, for `kill`, the
/// restart that brings the process back).
const FAULTS: &[(&str, &[&str])] = &[
    (
        "latency",
        &["latency", "--target", "cognito", "--latency", "200ms"],
    ),
    (
        "error",
        &["error", "--target", "cloudwatch", "--code", "UNAVAILABLE"],
    ),
    ("hang", &["hang", "--target", "eventbridge"]),
    ("blackhole", &["blackhole", "--target", "lambda"]),
    (
        "partition",
        &["partition", "--between", "lambda", "cloudwatch"],
    ),
    ("kill", &["kill", "--target", "cognito-0"]),
    ("pause", &["pause", "--target", "ecs"]),
    ("restart", &["restart", "--target", "eventbridge"]),
    (
        "thread-limit",
        &[
            "thread-limit",
            "--target",
            "kinesis-frontend-0",
            "--limit",
            "6",
        ],
    ),
    (
        "thread-hog",
        &[
            "thread-hog",
            "--target",
            "kinesis-frontend-1",
            "--threads",
            "2",
        ],
    ),
    (
        "memory-hog",
        &["memory-hog", "--target", "lambda", "--bytes", "1048576"],
    ),
];

#[derive(Debug, Serialize, Clone, Copy, Default)]
struct Resources {
    rss_kib: u64,
    fds: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    smoke: bool,
    machine: Machine,
    command: String,
    seed: u64,
    cycles: u32,
    faults_applied: Vec<String>,
    invariants_checked: u64,
    markers_put: usize,
    supervisor_start: Resources,
    supervisor_end: Resources,
    wall_secs: f64,
    /// The first broken invariant, if any.
    broken: Option<String>,
}

fn resources(pid: u32) -> Resources {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Resources { rss_kib, fds }
}

/// Waits for `check` on the fleet's status, or says what was last seen.
fn wait(
    fleet: &Fleet,
    what: &str,
    deadline: Duration,
    check: impl Fn(&Status) -> bool,
) -> Result<Status, String> {
    match bench::poll_status(fleet, deadline, |s| check(s).then_some(())) {
        (Some(()), Some(s)) => Ok(s),
        (_, last) => Err(format!(
            "{what}: not within {deadline:?}; last seen: {}",
            last.as_ref().map_or("no status".to_owned(), pretty)
        )),
    }
}

fn run_cli(fleet: &Fleet, args: &[&str]) -> Result<String, String> {
    let out = fleet.run(args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "cascade {args:?}: {}",
            cascade_tests::describe(&out)
        ))
    }
}

struct Soak {
    fleet: Fleet,
    rt: tokio::runtime::Handle,
    limit: u64,
    frontends: usize,
    processes: usize,
    cgroups: usize,
    run_id: String,
    start: Resources,
    markers: Vec<f64>,
    checked: std::cell::Cell<u64>,
}

impl Soak {
    fn check(&self, ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
        self.checked.set(self.checked.get() + 1);
        if ok { Ok(()) } else { Err(what()) }
    }

    fn cloudwatch(
        &self,
        s: &Status,
    ) -> Result<CloudWatchClient<tonic::transport::Channel>, String> {
        let addr = s
            .services
            .iter()
            .find(|x| x.name == "cloudwatch")
            .map(|x| x.addr.clone())
            .ok_or("no cloudwatch in status")?;
        let ch = cascade_core::clients::lazy_channel(&addr, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        Ok(CloudWatchClient::new(ch))
    }

    /// One cycle: tip, put markers, fault, clear, recover, check.
    fn cycle(&mut self, n: u32, kind: usize) -> Result<(), String> {
        let (name, inject) = FAULTS[kind];
        let extra = 2usize;
        run_cli(&self.fleet, &["add-capacity", &extra.to_string()])?;
        let total = self.frontends + extra;
        let tipped = wait(
            &self.fleet,
            "the fleet tipped",
            Duration::from_secs(60),
            |s| {
                s.frontends.len() == total
                    && s.frontends
                        .iter()
                        .all(|f| f.shard_map == MapState::Unusable)
            },
        )?;
        // Markers into CloudWatch while Kinesis is down: the local buffer takes them.
        let mut cw = self.cloudwatch(&tipped)?;
        for k in 0..3 {
            let v = f64::from(n) * 10.0 + f64::from(k);
            let r = self.rt.block_on(cw.put_metric_data(PutMetricDataRequest {
                namespace: "Soak/Markers".into(),
                metric_data: vec![MetricDatum {
                    metric_name: "Marker".into(),
                    value: v,
                    timestamp_ms: 0,
                }],
            }));
            r.map_err(|s| format!("cycle {n}: marker put refused: {s:?}"))?;
            self.markers.push(v);
        }
        let mut args = vec!["inject"];
        args.extend_from_slice(inject);
        run_cli(&self.fleet, &args)?;
        if name == "kill" {
            run_cli(&self.fleet, &["inject", "restart", "--target", "cognito-0"])?;
        }
        run_cli(&self.fleet, &["clear"])?;
        run_cli(&self.fleet, &["remove-capacity", &extra.to_string()])?;
        run_cli(
            &self.fleet,
            &["restart-frontends", "--batch", &self.frontends.to_string()],
        )?;
        let s = wait(
            &self.fleet,
            "recovered: full mesh, every service serving",
            Duration::from_secs(120),
            |s| full_mesh(s, self.frontends) && all_serving(s),
        )?;
        self.invariants(n, name, &s)
    }

    fn invariants(&mut self, n: u32, fault: &str, s: &Status) -> Result<(), String> {
        let at = format!("after cycle {n} ({fault})");
        let listed = run_cli(&self.fleet, &["faults"])?;
        self.check(listed.contains("no active faults"), || {
            format!("{at}: faults still active: {listed}")
        })?;
        let pids = cascade_tests::status::pids(s);
        for inst in s.services.iter().flat_map(|x| &x.instances) {
            let ch = cascade_core::clients::lazy_channel(&inst.addr, Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            let left = self
                .rt
                .block_on(
                    cascade_proto::control::control_client::ControlClient::new(ch)
                        .list_faults(ListFaultsRequest {}),
                )
                .map(|r| r.into_inner().faults)
                .map_err(|e| format!("{at}: {}: ListFaults: {e:?}", inst.name))?;
            self.check(left.is_empty(), || {
                format!("{at}: {} still holds faults {left:?}", inst.name)
            })?;
        }
        for pid in &pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let stopped = stat
                .rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('T'));
            self.check(!stopped, || format!("{at}: pid {pid} is still stopped"))?;
        }
        for f in &s.frontends {
            self.check(f.thread_limit == Some(self.limit), || {
                format!(
                    "{at}: {} has limit {:?}, the run's is {}",
                    f.name, f.thread_limit, self.limit
                )
            })?;
        }
        let procs = pids.len();
        self.check(procs == self.processes, || {
            format!(
                "{at}: {procs} processes, {} after start-up: {}",
                self.processes,
                pretty(s)
            )
        })?;
        let cgroups = cascade_tests::cgroups_matching(&self.run_id).len();
        self.check(cgroups == self.cgroups, || {
            format!("{at}: {cgroups} cgroups, {} after start-up", self.cgroups)
        })?;
        let now = resources(s.supervisor_pid);
        self.check(now.rss_kib <= 2 * self.start.rss_kib + 64 * 1024, || {
            format!(
                "{at}: supervisor RSS {} KiB, {} KiB at start",
                now.rss_kib, self.start.rss_kib
            )
        })?;
        self.check(now.fds <= 2 * self.start.fds + 64, || {
            format!(
                "{at}: supervisor has {} fds, {} at start",
                now.fds, self.start.fds
            )
        })?;
        // Every marker exactly once, once the local buffer is drained.
        let drained = wait(
            &self.fleet,
            "CloudWatch's local buffer drained",
            Duration::from_secs(60),
            |s| {
                cascade_tests::status::try_gauge_u64(s, "cloudwatch", "buffered_datapoints")
                    .is_ok_and(|b| b == 0)
            },
        )?;
        let mut cw = self.cloudwatch(&drained)?;
        let got = self
            .rt
            .block_on(cw.get_metric_data(GetMetricDataRequest {
                namespace: "Soak/Markers".into(),
                metric_name: "Marker".into(),
                start_ms: 0,
                end_ms: 0,
            }))
            .map_err(|e| format!("{at}: GetMetricData: {e:?}"))?
            .into_inner()
            .datapoints;
        let mut values: Vec<f64> = got.iter().map(|d| d.value).collect();
        values.sort_by(f64::total_cmp);
        let mut want = self.markers.clone();
        want.sort_by(f64::total_cmp);
        self.check(values == want, || {
            format!("{at}: markers read back {values:?}, put {want:?}")
        })
    }
}

fn main() {
    let args = Args::parse();
    let (duration, max_cycles, frontends) = if args.smoke {
        (Duration::from_secs(120), 2, 3usize)
    } else {
        (args.duration, args.max_cycles, 3usize)
    };
    let started = Instant::now();
    let base = cascade_tests::learn_base_threads("soak-base", Duration::from_secs(60));
    let limit = u64::from(base) + frontends as u64;
    let limit_s = limit.to_string();
    let fe_s = frontends.to_string();
    let fleet = Fleet::up(
        "soak",
        &[
            "--frontends",
            &fe_s,
            "--thread-limit",
            &limit_s,
            "--time-scale",
            "3600",
            "--traffic-rate",
            "5",
            "--cloudwatch-local-buffer",
            "--service-arg",
            "cloudwatch:--local-buffer-retention=8640000",
        ],
    );
    let mut report = Report {
        bench: "soak",
        smoke: args.smoke,
        machine: Machine::probe(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seed: args.seed,
        cycles: 0,
        faults_applied: Vec::new(),
        invariants_checked: 0,
        markers_put: 0,
        supervisor_start: Resources::default(),
        supervisor_end: Resources::default(),
        wall_secs: 0.0,
        broken: None,
    };
    let result = (|| -> Result<(), String> {
        let s = wait(
            &fleet,
            "the fleet up: full mesh, every service serving",
            Duration::from_secs(120),
            |s| full_mesh(s, frontends) && all_serving(s),
        )?;
        let run_id = cascade_tests::status::run_id(&s);
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let _guard = rt.enter();
        let mut soak = Soak {
            rt: rt.handle().clone(),
            limit,
            frontends,
            processes: cascade_tests::status::pids(&s).len(),
            cgroups: cascade_tests::cgroups_matching(&run_id).len(),
            run_id,
            start: resources(s.supervisor_pid),
            markers: Vec::new(),
            checked: std::cell::Cell::new(0),
            fleet,
        };
        report.supervisor_start = soak.start;
        let mut n = 0u32;
        let outcome = loop {
            if n >= max_cycles || started.elapsed() >= duration {
                break Ok(());
            }
            let kind = ((args.seed + u64::from(n)) % FAULTS.len() as u64) as usize;
            eprintln!(
                "soak: cycle {} ({}), {:.0} s in",
                n + 1,
                FAULTS[kind].0,
                started.elapsed().as_secs_f64()
            );
            if let Err(e) = soak.cycle(n, kind) {
                break Err(e);
            }
            report.faults_applied.push(FAULTS[kind].0.to_owned());
            n += 1;
        };
        report.cycles = n;
        report.invariants_checked = soak.checked.get();
        report.markers_put = soak.markers.len();
        if let Ok(s) = soak.fleet.try_status() {
            report.supervisor_end = resources(s.supervisor_pid);
        }
        let Soak { fleet, .. } = soak;
        bench::take_down(fleet);
        outcome
    })();
    report.wall_secs = started.elapsed().as_secs_f64();
    if let Err(e) = &result {
        report.broken = Some(e.clone());
    }
    bench::write_json("soak", &report);
    println!(
        "soak: {} cycles in {:.0} s, {} faults applied ({}), {} invariants checked, {} markers exactly once",
        report.cycles,
        report.wall_secs,
        report.faults_applied.len(),
        report.faults_applied.join(", "),
        report.invariants_checked,
        report.markers_put
    );
    println!(
        "supervisor: RSS {} KiB -> {} KiB, fds {} -> {}",
        report.supervisor_start.rss_kib,
        report.supervisor_end.rss_kib,
        report.supervisor_start.fds,
        report.supervisor_end.fds
    );
    if let Err(e) = result {
        eprintln!("soak: invariant broken: {e}");
        std::process::exit(1);
    }
}
