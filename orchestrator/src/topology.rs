//! The whole topology: which services run, in which order they start, and
//! the flags each gets (addresses, remediations, model knobs). Every address
//! is known before anything starts, because the supervisor binds every
//! listening socket itself.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;

/// A downstream service (Kinesis itself always runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Service {
    /// The Kinesis fleet (always on).
    Kinesis,
    /// Sign-in and credentials; streams access logs to Kinesis.
    Cognito,
    /// Metrics and alarms through Kinesis.
    Cloudwatch,
    /// Invocations whose metrics agent ships to CloudWatch.
    Lambda,
    /// The event bus on Kinesis.
    Eventbridge,
    /// Tasks driven by EventBridge events; scaling by CloudWatch alarms.
    Ecs,
}

impl Service {
    /// Every service, in start order.
    pub const ALL: [Service; 6] = [
        Service::Kinesis,
        Service::Cognito,
        Service::Cloudwatch,
        Service::Lambda,
        Service::Eventbridge,
        Service::Ecs,
    ];

    /// The service's name (also its binary's name, but for Kinesis).
    pub fn name(self) -> &'static str {
        match self {
            Service::Kinesis => "kinesis",
            Service::Cognito => "cognito",
            Service::Cloudwatch => "cloudwatch",
            Service::Lambda => "lambda",
            Service::Eventbridge => "eventbridge",
            Service::Ecs => "ecs",
        }
    }

    /// Parses a service name.
    pub fn parse(s: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Services this one cannot start without.
    pub fn needs(self) -> &'static [Service] {
        match self {
            Service::Lambda => &[Service::Cloudwatch],
            Service::Ecs => &[Service::Eventbridge, Service::Cloudwatch],
            _ => &[],
        }
    }
}

/// Parses `--services a,b,c` (Kinesis is added), checking dependencies.
pub fn parse_services(s: &str) -> Result<BTreeSet<Service>, String> {
    let mut set = BTreeSet::from([Service::Kinesis]);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let svc = Service::parse(part).ok_or_else(|| {
            format!(
                "unknown service {part:?}; valid: {}",
                Service::ALL.map(Service::name).join(", ")
            )
        })?;
        set.insert(svc);
    }
    for svc in &set {
        for need in svc.needs() {
            if !set.contains(need) {
                return Err(format!(
                    "{} needs {}; add it to --services",
                    svc.name(),
                    need.name()
                ));
            }
        }
    }
    Ok(set)
}

/// Default `--services`: everything.
pub fn all_services() -> String {
    Service::ALL.map(Service::name).join(",")
}

/// `--service-arg SERVICE:--flag=value`: extra flags for one service's processes.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceArg {
    /// The service the flag is for.
    pub service: Service,
    /// The flag, passed as one argument (e.g. `--memory-budget=4194304`).
    pub arg: String,
}

impl std::str::FromStr for ServiceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (svc, arg) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected SERVICE:--flag=value"))?;
        let service =
            Service::parse(svc).ok_or_else(|| format!("{s:?}: unknown service {svc:?}"))?;
        if service == Service::Kinesis {
            return Err("--service-arg does not apply to kinesis".into());
        }
        if !arg.starts_with("--") {
            return Err(format!("{s:?}: the flag must start with --"));
        }
        Ok(Self {
            service,
            arg: arg.to_owned(),
        })
    }
}

impl std::fmt::Display for ServiceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.service.name(), self.arg)
    }
}

/// Cognito's request-handling mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CognitoMode {
    /// The latent bug: handlers block on a full access-log buffer.
    Bug,
    /// The fix: shed access records and keep serving.
    Fixed,
}

/// Topology flags of `cascade up`: services, remediations, model knobs, traffic.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct TopologyArgs {
    /// Services to run besides Kinesis, comma-separated (kinesis,cognito,cloudwatch,lambda,eventbridge,ecs).
    #[arg(long, default_value_t = all_services(), value_parser = parse_services_arg)]
    pub services: String,
    /// Cognito mode: `bug` (handlers block on a full access-log buffer, as in 2020) or `fixed`.
    #[arg(long, value_enum, default_value_t = CognitoMode::Bug)]
    pub cognito_mode: CognitoMode,
    /// Cognito instances (the incident's failed mitigation was adding capacity).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub cognito_instances: u32,
    /// Remediation: CloudWatch keeps 3 incident hours of metrics in a local store.
    #[arg(long)]
    pub cloudwatch_local_buffer: bool,
    /// Remediation: CloudWatch uses its own, partitioned front-end fleet of N servers (0: off).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub cloudwatch_partitioned_fleet: u32,
    /// Remediation: bound Lambda's metrics-agent buffer to this many bytes (drop oldest).
    #[arg(long)]
    pub lambda_agent_buffer_max: Option<u64>,
    /// Remediation: cellular fleet. The main fleet is split into cells of at
    /// most K front-ends, each cell its own membership domain (0: one fleet).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=512))]
    pub cell_size: u32,
    /// Remediation: fine-grained alarm on thread consumption. When a
    /// front-end's projected threads (base + every member in its membership
    /// listing, learned or not) exceed its limit, the alarm fires and its
    /// runbook removes the newest front-ends until the projection fits,
    /// before the learning delay runs out.
    #[arg(long)]
    pub thread_alarm: bool,
    /// Extra flag for one service's processes, e.g. `lambda:--memory-budget=4194304` (repeatable).
    #[arg(long = "service-arg")]
    pub service_args: Vec<ServiceArg>,
    /// Synthetic customer calls per second to each service (0: no traffic).
    #[arg(long, default_value_t = 25.0, value_parser = parse_rate)]
    pub traffic_rate: f64,
    /// Deadline of every synthetic customer call.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub traffic_deadline: std::time::Duration,
}

fn parse_services_arg(s: &str) -> Result<String, String> {
    parse_services(s).map(|_| s.to_owned())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=200.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} must be a number of calls per second from 0 to 200"
        )),
    }
}

impl TopologyArgs {
    /// The membership fleet customers of the main fleet list: every cell
    /// (`cell-*`) when the fleet is cellular, else the one main fleet ("").
    pub fn main_fleet_pattern(&self) -> &'static str {
        if self.cell_size > 0 { "cell-*" } else { "" }
    }

    /// The services to run.
    pub fn set(&self) -> BTreeSet<Service> {
        parse_services(&self.services).unwrap_or_default()
    }

    /// The flags to pass through to a detached supervisor.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            format!("--services={}", self.services),
            format!(
                "--cognito-mode={}",
                match self.cognito_mode {
                    CognitoMode::Bug => "bug",
                    CognitoMode::Fixed => "fixed",
                }
            ),
            format!("--cognito-instances={}", self.cognito_instances),
            format!(
                "--cloudwatch-partitioned-fleet={}",
                self.cloudwatch_partitioned_fleet
            ),
            format!("--traffic-rate={}", self.traffic_rate),
            format!(
                "--traffic-deadline={}",
                humantime::format_duration(self.traffic_deadline)
            ),
        ];
        if self.cloudwatch_local_buffer {
            v.push("--cloudwatch-local-buffer".into());
        }
        if self.cell_size > 0 {
            v.push(format!("--cell-size={}", self.cell_size));
        }
        if self.thread_alarm {
            v.push("--thread-alarm".into());
        }
        if let Some(b) = self.lambda_agent_buffer_max {
            v.push(format!("--lambda-agent-buffer-max={b}"));
        }
        for a in &self.service_args {
            v.push(format!("--service-arg={a}"));
        }
        v
    }
}

/// One downstream service process to start.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The service.
    pub service: Service,
    /// Instance name, e.g. `cognito-0`.
    pub name: String,
}

/// The downstream instances, in start order (each stage waits for the last).
pub fn plan(t: &TopologyArgs) -> Vec<Vec<Planned>> {
    let set = t.set();
    let one = |s: Service, n: u32| -> Vec<Planned> {
        if set.contains(&s) {
            (0..n)
                .map(|i| Planned {
                    service: s,
                    name: format!("{}-{i}", s.name()),
                })
                .collect()
        } else {
            Vec::new()
        }
    };
    let stages = vec![
        [
            one(Service::Cognito, t.cognito_instances),
            one(Service::Cloudwatch, 1),
        ]
        .concat(),
        [one(Service::Lambda, 1), one(Service::Eventbridge, 1)].concat(),
        one(Service::Ecs, 1),
    ];
    stages.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Everything a service's flags may refer to.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// The Kinesis back end.
    pub backend: String,
    /// Instance name -> address, for every planned downstream instance.
    pub instances: BTreeMap<String, String>,
    /// The run directory (for durable local stores).
    pub run_dir: std::path::PathBuf,
    /// Incident seconds per wall second.
    pub time_scale: f64,
}

impl Addresses {
    fn first(&self, s: Service) -> Option<&String> {
        self.instances.get(&format!("{}-0", s.name()))
    }
}

/// The command-line flags of one downstream instance.
pub fn args_for(p: &Planned, t: &TopologyArgs, a: &Addresses) -> Vec<String> {
    let mut v = vec![format!("--time-scale={}", a.time_scale)];
    let kinesis = |v: &mut Vec<String>, fleet: &str| {
        v.push(format!("--kinesis-backend={}", a.backend));
        v.push(format!("--kinesis-fleet={fleet}"));
    };
    match p.service {
        Service::Kinesis => {}
        Service::Cognito => {
            kinesis(&mut v, t.main_fleet_pattern());
            v.push(format!(
                "--mode={}",
                if t.cognito_mode == CognitoMode::Fixed {
                    "fixed"
                } else {
                    "bug"
                }
            ));
            v.push(format!("--instance-id={}", p.name));
            // A buffer that fills in seconds at the default traffic rate, so
            // the latent bug bites within the first incident hour.
            default_flag(&mut v, t, p.service, "--access-log-buffer-bytes", "8192");
            v.push("--user=operator:operator-password".into());
            v.push("--user=customer:customer-password".into());
        }
        Service::Cloudwatch => {
            let fleet = if t.cloudwatch_partitioned_fleet > 0 {
                "cloudwatch"
            } else {
                t.main_fleet_pattern()
            };
            kinesis(&mut v, fleet);
            // CloudWatch, the fleet's largest internal user, addresses the
            // front-ends from the membership listing, not through a
            // health-checked balancer: its puts and reads spread over every
            // front-end, so it is impaired until the whole fleet is back
            // (AWS's remediation: a separate, partitioned fleet for it).
            v.push("--kinesis-ready-only=false".into());
            v.push(format!("--instance-id={}", p.name));
            v.push(format!(
                "--local-buffer-dir={}",
                a.run_dir.join("cloudwatch-local-buffer").display()
            ));
            if t.cloudwatch_local_buffer {
                v.push("--local-buffer".into());
            }
        }
        Service::Lambda => {
            if let Some(cw) = a.first(Service::Cloudwatch) {
                v.push(format!("--cloudwatch={cw}"));
            }
            // Model knobs sized so the agent buffer crowds invocations out
            // about one incident hour after CloudWatch fails at the default
            // time scale and traffic rate (25 calls/s * 24 KiB ~ 6 MiB in 10 s).
            default_flag(&mut v, t, p.service, "--memory-budget", "8388608");
            default_flag(&mut v, t, p.service, "--log-bytes-per-invocation", "24576");
            if let Some(b) = t.lambda_agent_buffer_max {
                v.push(format!("--agent-buffer-max={b}"));
            }
        }
        Service::Eventbridge => {
            kinesis(&mut v, t.main_fleet_pattern());
            if let Some(ecs) = a.first(Service::Ecs) {
                v.push(format!("--ecs={ecs}"));
            }
            if let Some(l) = a.first(Service::Lambda) {
                v.push(format!("--lambda={l}"));
            }
        }
        Service::Ecs => {
            if let Some(eb) = a.first(Service::Eventbridge) {
                v.push(format!("--eventbridge={eb}"));
            }
            if let Some(cw) = a.first(Service::Cloudwatch) {
                v.push(format!("--cloudwatch={cw}"));
            }
        }
    }
    v.extend(
        t.service_args
            .iter()
            .filter(|x| x.service == p.service)
            .map(|x| x.arg.clone()),
    );
    v
}

/// Adds `flag=value` unless the user set that flag with `--service-arg`.
fn default_flag(v: &mut Vec<String>, t: &TopologyArgs, svc: Service, flag: &str, value: &str) {
    let overridden = t
        .service_args
        .iter()
        .any(|x| x.service == svc && x.arg.split('=').next() == Some(flag));
    if !overridden {
        v.push(format!("{flag}={value}"));
    }
}

/// Checks the topology flags together (what clap cannot see alone).
pub fn validate(t: &TopologyArgs) -> anyhow::Result<()> {
    let set = t.set();
    if t.cloudwatch_partitioned_fleet > 0 && !set.contains(&Service::Cloudwatch) {
        bail!("--cloudwatch-partitioned-fleet needs cloudwatch in --services");
    }
    for a in &t.service_args {
        if !set.contains(&a.service) {
            bail!(
                "--service-arg {a}: {} is not in --services",
                a.service.name()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_parse_with_dependencies() {
        assert!(parse_services("cognito").is_ok());
        assert!(parse_services("lambda").is_err_and(|e| e.contains("cloudwatch")));
        assert!(parse_services("ecs,eventbridge").is_err_and(|e| e.contains("cloudwatch")));
        assert!(parse_services("bogus").is_err_and(|e| e.contains("valid")));
        assert_eq!(parse_services("").map(|s| s.len()), Ok(1));
    }

    #[test]
    fn service_args_are_checked() {
        assert!("lambda:--memory-budget=1".parse::<ServiceArg>().is_ok());
        assert!("lambda:memory".parse::<ServiceArg>().is_err());
        assert!("nope:--x".parse::<ServiceArg>().is_err());
    }
}
