//! `cascade up`'s flags, typed once: parsed by clap from the command line,
//! built directly from a scenario by the engine, and written back out with
//! [`UpArgs::to_argv`] only where a process must be spawned (the detached
//! supervisor), with a round-trip test.

use anyhow::bail;
use cascade_core::threadlimit;
use clap::ValueEnum as _;

use crate::docker::DockerArgs;
use crate::limits::{EnforcementPref, ThreadLimitArg};
use crate::topology::TopologyArgs;

/// Largest fleet one run may hold.
pub const MAX_FLEET: u32 = 512;

/// Where a booting front-end reads shard ownership from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BootstrapArg {
    /// From neighbouring front-ends (as in 2020).
    Peers,
    /// From the authoritative metadata store (the remediation).
    MetadataStore,
}

impl BootstrapArg {
    /// The flag value, as the front-end's `--bootstrap` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            BootstrapArg::Peers => "peers",
            BootstrapArg::MetadataStore => "metadata-store",
        }
    }
}

/// `cascade up` flags.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct UpArgs {
    /// Front-end servers to start with.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_FLEET)))]
    pub frontends: u32,
    /// Threads (kernel tasks) each front-end may hold, enforced by the kernel;
    /// `none` for no limit (the fleet can then not tip).
    #[arg(long, default_value_t = ThreadLimitArg::Limit(64))]
    pub thread_limit: ThreadLimitArg,
    /// Incident seconds per wall second (360: one incident hour = 10 s).
    #[arg(long, default_value_t = 360.0, value_parser = cascade_core::parse::parse_time_scale)]
    pub time_scale: f64,
    /// Start the fleet in the background and return; other commands talk to it.
    #[arg(long)]
    pub detach: bool,
    /// Seed for every random choice (learning-delay jitter); logged at start.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokio worker threads per front-end (base_threads = workers + 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// How the thread limit is enforced.
    #[arg(long, value_enum, default_value_t = EnforcementPref::Auto)]
    pub enforcement: EnforcementPref,
    /// Where a (re)starting front-end reads shard ownership from.
    #[arg(long, value_enum, default_value_t = BootstrapArg::Peers)]
    pub bootstrap: BootstrapArg,
    /// Fraction of the one-hour learning delay removed at random per front-end.
    #[arg(long, default_value_t = 0.5, value_parser = cascade_core::parse::parse_fraction)]
    pub learning_jitter: f64,
    /// MODEL: wall time each front-end spends serving one routed data-plane
    /// request, holding one of its worker slots; it bounds what a front-end
    /// can carry (0s: no bound).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub request_cost: std::time::Duration,
    /// MODEL: worker slots per front-end: how many requests (and shard-map
    /// snapshot fetches or serves) one front-end works on at once; a
    /// request that finds none free within 500 ms fails (UNAVAILABLE,
    /// ProvisionedThroughputExceeded on the AWS API). The benchmarks raise
    /// it out of the way.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_slots: u32,
    /// Where the balanced AWS Kinesis endpoint listens (boto3, the AWS CLI
    /// and AWS SDKs point AWS_ENDPOINT_URL at it); port 0 picks a free
    /// port. `status --json` shows it as `endpoints.kinesis_aws`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub kinesis_aws_listen: std::net::SocketAddr,
    /// Address of the live dashboard and `/metrics` (HTTP); port 0: any
    /// free port. `cascade status --json` names it (`endpoints.dashboard`).
    #[arg(long, default_value = "127.0.0.1:0", env = "CASCADE_DASHBOARD_LISTEN")]
    pub dashboard_listen: std::net::SocketAddr,
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Internal: the journal of the scenario this run plays (`cascade run`
    /// sets it), read by the live dashboard for the clock, the phase and
    /// the expectations as they are judged.
    #[arg(long, hide = true)]
    pub scenario_journal: Option<std::path::PathBuf>,
    /// Internal: run as the detached supervisor (no live view).
    #[arg(long, hide = true)]
    pub daemon: bool,
    /// Internal: take everything down once this process is gone (the
    /// supervisor of a `cascade run` dies with its run, even a killed one).
    #[arg(long, hide = true)]
    pub exit_with: Option<u32>,
}

/// `cascade up` alone, to parse [`UpArgs`].
#[derive(clap::Parser)]
#[command(name = "up")]
struct UpCmd {
    #[command(flatten)]
    up: UpArgs,
}

impl Default for UpArgs {
    /// `cascade up` with no flags.
    fn default() -> Self {
        Self::try_parse_from(std::iter::empty::<String>())
            .expect("the defaults of `cascade up` parse")
    }
}

impl UpArgs {
    /// Parses `cascade up` flags (`argv` without the program name).
    pub fn try_parse_from<I, S>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser as _;
        let argv =
            std::iter::once(std::ffi::OsString::from("up")).chain(argv.into_iter().map(Into::into));
        UpCmd::try_parse_from(argv).map(|c| c.up)
    }

    /// Every flag, as `cascade up` takes it: `UpArgs::try_parse_from(x.to_argv()) == x`.
    pub fn to_argv(&self) -> Vec<String> {
        let name = |v: Option<clap::builder::PossibleValue>| {
            v.map(|p| p.get_name().to_owned()).unwrap_or_default()
        };
        let mut v = vec![
            format!("--frontends={}", self.frontends),
            format!("--thread-limit={}", self.thread_limit),
            format!("--time-scale={}", self.time_scale),
            format!("--seed={}", self.seed),
            format!("--workers={}", self.workers),
            format!(
                "--enforcement={}",
                name(self.enforcement.to_possible_value())
            ),
            format!("--bootstrap={}", self.bootstrap.as_str()),
            format!("--learning-jitter={}", self.learning_jitter),
            format!(
                "--request-cost={}",
                humantime::format_duration(self.request_cost)
            ),
            format!("--worker-slots={}", self.worker_slots),
            format!("--dashboard-listen={}", self.dashboard_listen),
        ];
        v.push(format!("--kinesis-aws-listen={}", self.kinesis_aws_listen));
        if self.detach {
            v.push("--detach".into());
        }
        v.extend(self.topology.to_args());
        v.extend(self.docker.to_args());
        if let Some(j) = &self.scenario_journal {
            v.push(format!("--scenario-journal={}", j.display()));
        }
        if self.daemon {
            v.push("--daemon".into());
        }
        if let Some(p) = self.exit_with {
            v.push(format!("--exit-with={p}"));
        }
        v
    }

    /// Base threads of every front-end: main, the workers, one blocking thread.
    pub fn base_threads(&self) -> u64 {
        u64::from(self.workers) + 2
    }

    /// Everything clap cannot check alone; nothing has started yet.
    pub fn validate(&self) -> anyhow::Result<()> {
        check_host_budget(self.frontends, self.thread_limit, self.workers)?;
        crate::topology::validate(&self.topology)?;
        crate::docker::validate(&self.docker)
    }
}

/// Refuses a fleet whose threads could add up to more than the host budget.
pub fn check_host_budget(fleet: u32, limit: ThreadLimitArg, workers: u16) -> anyhow::Result<()> {
    check_budget(fleet, limit, workers, 1)
}

/// Refuses a fleet whose threads could add up to more than `hosts` times
/// this host's budget (swarm mode: the swarm's active nodes, taken to be
/// alike, over which Swarm's scheduler spreads the front-end services).
pub fn check_budget(
    fleet: u32,
    limit: ThreadLimitArg,
    workers: u16,
    hosts: u32,
) -> anyhow::Result<()> {
    let budget = threadlimit::host_task_budget() * u64::from(hosts.max(1));
    let base = u64::from(workers) + 2;
    let worst = match limit {
        ThreadLimitArg::Limit(l) => u64::from(fleet) * l,
        ThreadLimitArg::None => u64::from(fleet) * (u64::from(fleet) - 1 + base),
    };
    if fleet > MAX_FLEET {
        bail!("a fleet of {fleet} front-ends is above the maximum of {MAX_FLEET}");
    }
    if worst > budget {
        bail!(
            "a fleet of {fleet} front-ends at thread limit {limit} could hold {worst} threads, \
             more than this run may use ({budget}, half of the kernel task limit of {hosts} host(s)); \
             use fewer front-ends or a lower --thread-limit"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_THREAD_LIMIT;
    use crate::topology::{CognitoMode, ServiceArg};
    use proptest::prelude::*;
    use std::time::Duration;

    fn services() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "kinesis",
            "kinesis,cognito",
            "cognito,cloudwatch,lambda",
            "kinesis,cognito,cloudwatch,lambda,eventbridge,ecs",
            "cloudwatch,eventbridge,ecs",
        ])
        .prop_map(str::to_owned)
    }

    fn service_arg() -> impl Strategy<Value = ServiceArg> {
        (
            prop::sample::select(vec!["cognito", "lambda", "cloudwatch"]),
            "--[a-z][a-z-]{0,12}(=[a-zA-Z0-9:/._-]{0,12})?",
        )
            .prop_map(|(s, a)| format!("{s}:{a}").parse().expect("generated service arg"))
    }

    fn topology() -> impl Strategy<Value = TopologyArgs> {
        (
            (
                services(),
                any::<bool>(),
                1u32..=16,
                any::<bool>(),
                0u32..=64,
            ),
            (
                prop::option::of(any::<u64>()),
                0u32..=512,
                any::<bool>(),
                prop::collection::vec(service_arg(), 0..3),
                0.0f64..=200.0,
                (0u64..100_000, 0u32..1_000_000_000),
            ),
        )
            .prop_map(
                |((services, fixed, ci, lb, pf), (lam, cell, alarm, sa, rate, (s, n)))| {
                    TopologyArgs {
                        services,
                        cognito_mode: if fixed {
                            CognitoMode::Fixed
                        } else {
                            CognitoMode::Bug
                        },
                        cognito_instances: ci,
                        cloudwatch_local_buffer: lb,
                        cloudwatch_partitioned_fleet: pf,
                        lambda_agent_buffer_max: lam,
                        cell_size: cell,
                        thread_alarm: alarm,
                        service_args: sa,
                        traffic_rate: rate,
                        traffic_deadline: Duration::new(s, n),
                    }
                },
            )
    }

    fn docker() -> impl Strategy<Value = DockerArgs> {
        (
            (any::<bool>(), any::<bool>()),
            prop::option::of((any::<[u8; 4]>(), any::<u16>())),
            any::<u16>(),
            prop::option::of("[a-z0-9./-]{1,20}"),
        )
            .prop_map(|((docker, swarm), listen, service_port, play)| DockerArgs {
                docker,
                swarm,
                control_listen: listen.map(|(ip, port)| std::net::SocketAddr::from((ip, port))),
                service_port,
                play,
            })
    }

    fn up_args() -> impl Strategy<Value = UpArgs> {
        (
            (
                1u32..=MAX_FLEET,
                prop::option::of(1u64..=MAX_THREAD_LIMIT),
                0.01f64..=86_400.0,
                any::<bool>(),
                any::<u64>(),
                1u16..=64,
            ),
            (
                prop::sample::select(EnforcementPref::value_variants().to_vec()),
                prop::sample::select(BootstrapArg::value_variants().to_vec()),
                (0.0f64..=1.0, 0u64..5_000_000, 1u32..=1024),
                topology(),
                docker(),
                any::<bool>(),
                prop::option::of(any::<u32>()),
                (
                    (any::<[u8; 4]>(), any::<u16>()),
                    (any::<[u8; 4]>(), any::<u16>()),
                ),
                prop::option::of("/[a-z0-9./_-]{1,30}"),
            ),
        )
            .prop_map(
                |(
                    (frontends, limit, time_scale, detach, seed, workers),
                    (
                        enforcement,
                        bootstrap,
                        (learning_jitter, cost_us, worker_slots),
                        topology,
                        docker,
                        daemon,
                        exit_with,
                        ((aws_ip, aws_port), (dash_ip, dash_port)),
                        scenario_journal,
                    ),
                )| UpArgs {
                    frontends,
                    thread_limit: limit.map_or(ThreadLimitArg::None, ThreadLimitArg::Limit),
                    time_scale,
                    detach,
                    seed,
                    workers,
                    enforcement,
                    bootstrap,
                    learning_jitter,
                    request_cost: Duration::from_micros(cost_us),
                    worker_slots,
                    kinesis_aws_listen: std::net::SocketAddr::from((aws_ip, aws_port)),
                    dashboard_listen: std::net::SocketAddr::from((dash_ip, dash_port)),
                    scenario_journal: scenario_journal.map(std::path::PathBuf::from),
                    topology,
                    docker,
                    daemon,
                    exit_with,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn every_flag_survives_to_argv_and_back(x in up_args()) {
            let back = UpArgs::try_parse_from(x.to_argv()).map_err(|e| e.to_string());
            prop_assert_eq!(back.as_ref().ok(), Some(&x), "argv {:?}: {:?}", x.to_argv(), back.as_ref().err());
        }
    }

    #[test]
    fn the_defaults_are_cascade_up_with_no_flags() {
        let d = UpArgs::default();
        assert_eq!(d.frontends, 8);
        assert_eq!(d.thread_limit, ThreadLimitArg::Limit(64));
        assert_eq!(UpArgs::try_parse_from(d.to_argv()).ok(), Some(d));
    }
}
