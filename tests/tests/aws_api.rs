//! Real AWS clients against the fleet's balanced AWS Kinesis endpoint:
//! boto3, the AWS CLI and a raw CBOR request (tests/aws/client.py), on a
//! healthy fleet, with bad requests, through an outage caused by capacity
//! added past the thread limit, after recovery (no acknowledged record
//! lost), and with one front-end killed behind the balancer.
//!
//! Needs python3 with boto3, cbor2 and the AWS CLI (`.ci/run` installs
//! them); without them the test fails saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cascade::state::MapState;
use cascade_tests::status::{all_maps, full_mesh, pretty};
use cascade_tests::{Fleet, Signal, describe, signal};

const LEARN: Duration = Duration::from_secs(30);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("aws/client.py")
}

/// Fails, naming the fix, unless python3 has boto3 and cbor2 and the AWS
/// CLI is on PATH.
fn require_clients() {
    let py = Command::new("python3")
        .args(["-c", "import boto3, cbor2"])
        .output();
    let aws = Command::new("aws").arg("--version").output();
    let ok =
        |o: &std::io::Result<std::process::Output>| o.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        ok(&py) && ok(&aws),
        "this test drives real AWS clients: it needs python3 with boto3 and cbor2, and the AWS CLI \
         (run .ci/run, or `python3 -m pip install boto3 awscli cbor2`); python3: {:?}, aws: {:?}",
        py.map(|o| describe(&o)),
        aws.map(|o| describe(&o)),
    );
}

/// Runs one phase of the client script; panics with its output on failure.
fn phase(name: &str, endpoint: &str, state: &Path) {
    let out = Command::new("python3")
        .arg(script())
        .args([name, endpoint])
        .arg(state)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "AWS client phase {name:?} failed:\n{}",
        describe(&out)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn real_aws_clients_through_health_outage_recovery_and_a_lost_frontend() {
    require_clients();
    let fleet = Fleet::kinesis("aws-api", 3, 7);
    let s = fleet.wait_status("3 ready", LEARN, |s| full_mesh(s, 3));
    let endpoint = s
        .endpoints
        .kinesis_aws
        .clone()
        .unwrap_or_else(|| panic!("no endpoints.kinesis_aws in status: {}", pretty(&s)));
    let state = fleet.home.dir.join("aws-acked.json");

    phase("healthy", &endpoint, &state);
    phase("bad", &endpoint, &state);

    // Tip the fleet: capacity past the thread limit makes every map unusable.
    let base = u64::from(s.frontends[0].base_threads);
    assert!(
        base + 2 <= 7,
        "base_threads ({base}) must leave room for 2 peers"
    );
    let extra = 7 - base;
    fleet.ok(&["add-capacity", &extra.to_string()]);
    fleet.wait_status("every shard-map unusable", LEARN, |s| {
        all_maps(s, 3 + extra as usize, MapState::Unusable)
    });
    phase("outage", &endpoint, &state);

    fleet.ok(&["remove-capacity", &extra.to_string()]);
    fleet.ok(&["restart-frontends", "--batch", "3"]);
    fleet.wait_status("3 ready after restart", LEARN, |s| full_mesh(s, 3));
    phase("recovered", &endpoint, &state);

    // One front-end killed: the balancer's health check takes it out.
    let victim = fleet.status().frontends[0].clone();
    signal(victim.pid, Signal::SIGKILL);
    fleet.wait_status("the killed front-end seen down", LEARN, |s| {
        s.frontends
            .iter()
            .any(|f| f.name == victim.name && f.shard_map == MapState::Down)
    });
    phase("one-down", &endpoint, &state);
}

/// Throttling reaches AWS clients as AWS names it: with each data-plane
/// call holding a worker slot for the modelled request cost, calls that
/// find no free slot within the slot wait are
/// ProvisionedThroughputExceededException, and only acknowledged records
/// are stored.
#[test]
fn calls_without_a_worker_slot_are_provisioned_throughput_exceeded() {
    require_clients();
    let fleet = Fleet::up(
        "aws-busy",
        &[
            "--services",
            "kinesis",
            "--frontends",
            "1",
            "--thread-limit",
            "64",
            "--time-scale",
            "3600",
            "--request-cost",
            "2s",
            "--traffic-rate",
            "0",
        ],
    );
    let s = fleet.wait_status("1 ready", LEARN, |s| full_mesh(s, 1));
    let endpoint = s
        .endpoints
        .kinesis_aws
        .clone()
        .unwrap_or_else(|| panic!("no endpoints.kinesis_aws in status: {}", pretty(&s)));
    phase("throttled", &endpoint, &fleet.home.dir.join("unused.json"));
}
