//! A scenario's topology as `cascade up`'s typed flags, with each
//! remediation in force mapped onto them (one exhaustive match: a new
//! remediation does not compile until it says what it changes).

use crate::limits::{MAX_THREAD_LIMIT, ThreadLimitArg};
use crate::scenario::{Action, Scenario, Step};
use crate::state::Remediation;
use crate::supervisor::{BootstrapArg, UpArgs};
use crate::topology::CognitoMode;

/// Bytes Lambda's metrics agent may buffer under `lambda-bounded-agent`.
const BOUNDED_AGENT_BYTES: u64 = 256 * 1024;
/// Front-ends of CloudWatch's own fleet under `cloudwatch-partitioned-fleet`.
const CLOUDWATCH_FLEET: u32 = 2;

/// The `cascade up` flags of scenario `s` (remediations included).
pub fn up_args(s: &Scenario, seed: u64) -> anyhow::Result<UpArgs> {
    let t = &s.topology;
    let mut up = UpArgs {
        frontends: t.frontends,
        thread_limit: ThreadLimitArg::Limit(t.thread_limit),
        time_scale: t.time_scale,
        seed,
        ..UpArgs::default()
    };
    up.topology.services = if t.services.is_empty() {
        "kinesis".into()
    } else {
        t.services.join(",")
    };
    if let Some(c) = &t.request_cost {
        up.request_cost =
            crate::clock::parse_duration("request_cost", c).map_err(anyhow::Error::msg)?;
    }
    if let Some(r) = t.traffic_rate {
        up.topology.traffic_rate = r;
    }
    if let Some(n) = t.cognito_instances {
        up.topology.cognito_instances = n;
    }
    if let Some(j) = t.learning_jitter {
        up.learning_jitter = j;
    }
    for a in &t.service_args {
        up.topology.service_args.push(
            a.parse()
                .map_err(|e: String| anyhow::anyhow!("scenario topology.service_args: {e}"))?,
        );
    }
    for r in &t.remediations {
        apply(*r, &mut up, t.frontends);
    }
    if let ThreadLimitArg::Limit(l) = up.thread_limit
        && l > MAX_THREAD_LIMIT
    {
        anyhow::bail!(
            "scenario topology: thread limit {l} is above the maximum of {MAX_THREAD_LIMIT}"
        );
    }
    Ok(up)
}

/// What remediation `r` changes in a run of a fleet of `start_fleet`.
fn apply(r: Remediation, up: &mut UpArgs, start_fleet: u32) {
    let t = &mut up.topology;
    match r {
        Remediation::CognitoFix => t.cognito_mode = CognitoMode::Fixed,
        Remediation::CloudwatchLocalBuffer => t.cloudwatch_local_buffer = true,
        Remediation::CloudwatchPartitionedFleet => {
            t.cloudwatch_partitioned_fleet = CLOUDWATCH_FLEET
        }
        Remediation::LambdaBoundedAgent => t.lambda_agent_buffer_max = Some(BOUNDED_AGENT_BYTES),
        Remediation::MetadataBootstrap => up.bootstrap = BootstrapArg::MetadataStore,
        Remediation::RaisedLimit => {
            if let ThreadLimitArg::Limit(l) = &mut up.thread_limit {
                *l *= 2;
            }
        }
        Remediation::BiggerServers => up.frontends = up.frontends.div_ceil(2),
        Remediation::ThreadAlarm => t.thread_alarm = true,
        // Cells no larger than the scenario's starting fleet: the size
        // range the fleet is known (tested) to work at.
        Remediation::Cellular => t.cell_size = start_fleet,
    }
}

/// `bigger-servers`: every server has twice the capacity, so the fleet has
/// half as many (set in the topology) and every capacity change or restart
/// batch moves half as many servers for the same capacity.
pub fn bigger_servers(steps: &mut [Step]) {
    for st in steps {
        match &mut st.action {
            Action::AddCapacity { count } | Action::RemoveCapacity { count } => {
                *count = count.div_ceil(2);
            }
            Action::RestartFrontends { batch, .. } => *batch = batch.div_ceil(2),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(remediations: &str) -> Scenario {
        let text = format!(
            "[scenario]\nname = \"t\"\n[topology]\nfrontends = 8\nthread_limit = 16\ntime_scale = 720\nservices = [\"kinesis\", \"cognito\", \"cloudwatch\", \"lambda\"]\nremediations = [{remediations}]\n"
        );
        crate::scenario::parse(std::path::Path::new("t.toml"), &text).expect("scenario parses")
    }

    #[test]
    fn the_topology_maps_onto_up_flags() {
        let up = up_args(&scenario(""), 42).expect("maps");
        assert_eq!(
            (up.frontends, up.thread_limit, up.time_scale, up.seed),
            (8, ThreadLimitArg::Limit(16), 720.0, 42)
        );
        assert_eq!(up.topology.services, "kinesis,cognito,cloudwatch,lambda");
        assert_eq!(up.topology.cognito_mode, CognitoMode::Bug);
        assert_eq!(up.bootstrap, BootstrapArg::Peers);
    }

    #[test]
    fn each_remediation_changes_what_it_names() {
        let up = up_args(
            &scenario("\"cognito-fix\", \"raised-limit\", \"bigger-servers\", \"cellular\""),
            1,
        )
        .expect("maps");
        assert_eq!(up.topology.cognito_mode, CognitoMode::Fixed);
        assert_eq!(up.thread_limit, ThreadLimitArg::Limit(32));
        assert_eq!(up.frontends, 4);
        assert_eq!(
            up.topology.cell_size, 8,
            "cells of the starting fleet's size"
        );
        let up = up_args(
            &scenario("\"metadata-bootstrap\", \"thread-alarm\", \"lambda-bounded-agent\", \"cloudwatch-local-buffer\", \"cloudwatch-partitioned-fleet\""),
            1,
        )
        .expect("maps");
        assert_eq!(up.bootstrap, BootstrapArg::MetadataStore);
        assert!(up.topology.thread_alarm && up.topology.cloudwatch_local_buffer);
        assert_eq!(
            up.topology.lambda_agent_buffer_max,
            Some(BOUNDED_AGENT_BYTES)
        );
        assert_eq!(up.topology.cloudwatch_partitioned_fleet, CLOUDWATCH_FLEET);
    }

    #[test]
    fn bigger_servers_halves_every_capacity_step() {
        let mut steps = vec![Step {
            at: "02:44".into(),
            action: Action::AddCapacity { count: 3 },
        }];
        bigger_servers(&mut steps);
        assert!(matches!(steps[0].action, Action::AddCapacity { count: 2 }));
    }
}
