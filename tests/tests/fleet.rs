//! The front-end fleet under a real kernel thread limit: healthy below it,
//! tipped by added capacity above it (exactly at `base_threads + peers >
//! limit`), recovered by removing capacity and restarting. Also the raw
//! shape of `status --json`, whose field names are a documented contract.

use std::process::Output;
use std::time::Duration;

use cascade::state::MapState;
use cascade_tests::kinesis::{GetRecordsOutput, PutRecordOutput, parse};
use cascade_tests::status::{all_maps, full_mesh, pretty};
use cascade_tests::{Fleet, describe, learn_base_threads};
use serde_json::Value;

const LEARN: Duration = Duration::from_secs(30);

/// A data-plane call that must fail UNAVAILABLE.
fn assert_unavailable(out: &Output, what: &str) {
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Unavailable"),
        "{what} is UNAVAILABLE:\n{}",
        describe(out)
    );
}

#[test]
fn healthy_fleet_routes_records_through_any_frontend() {
    let fleet = Fleet::kinesis("healthy", 4, 32);
    let s = fleet.wait_status("4 ready shard-maps", LEARN, |s| full_mesh(s, 4));
    for f in &s.frontends {
        assert_eq!(
            f.threads,
            f.base_threads + 3,
            "threads == base + peers: {f:?}"
        );
        assert_eq!(
            f.thread_limit,
            Some(32),
            "the front-end reads its own kernel limit: {f:?}"
        );
    }
    fleet.create_stream("orders", 3);
    let names: Vec<&str> = s.frontends.iter().map(|f| f.name.as_str()).collect();
    let mut sent = Vec::new();
    for i in 0..12 {
        let via = names[i % names.len()];
        let data = format!("record-{i}");
        let put: PutRecordOutput =
            parse(&fleet.put_record("orders", &format!("key-{i}"), &data, Some(via)));
        sent.push((put.shard_id, data));
    }
    let mut got = Vec::new();
    for (n, shard) in [
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    ]
    .iter()
    .enumerate()
    {
        let via = names[(n + 1) % names.len()];
        let read: GetRecordsOutput = parse(&fleet.get_records("orders", shard, Some(via)));
        let mut last_seq = -1i64;
        for r in read.records {
            let seq: i64 = r.sequence_number.parse().expect("numeric seq");
            assert!(seq > last_seq, "sequence numbers increase within {shard}");
            last_seq = seq;
            got.push(((*shard).to_owned(), r.data));
        }
    }
    sent.sort();
    got.sort();
    assert_eq!(
        got, sent,
        "every record put through one front-end is read back through another"
    );
}

#[test]
fn capacity_past_the_limit_tips_every_frontend_and_the_boundary_is_exact() {
    // Learn base_threads first, then pick a limit the fleet fits exactly.
    let base = learn_base_threads("probe", LEARN);
    let limit = base + 4; // 5 front-ends (4 peers) fit exactly; 6 do not.
    let fleet = Fleet::kinesis("tip", 3, u64::from(limit));
    fleet.wait_status("3 ready", LEARN, |s| full_mesh(s, 3));
    fleet.create_stream("s", 2);
    parse::<PutRecordOutput>(&fleet.put_record("s", "a", "before", None));

    fleet.ok(&["add-capacity", "2"]);
    let s = fleet.wait_status(
        "5 front-ends at base + 4 peers == limit, all ready",
        LEARN,
        |s| full_mesh(s, 5) && s.frontends.iter().all(|f| f.threads == limit),
    );
    for f in &s.frontends {
        assert_eq!(f.spawn_failures, 0, "at the limit nothing fails: {f:?}");
    }

    fleet.ok(&["add-capacity", "1"]);
    let s = fleet.wait_status("every shard-map unusable", LEARN, |s| {
        all_maps(s, 6, MapState::Unusable)
    });
    let cgroups = s.thread_limit.enforcement.starts_with("cgroup");
    for f in s.frontends.iter().take(5) {
        assert!(
            f.spawn_failures >= 1,
            "old front-end refused a peer thread: {f:?}"
        );
        let err = &f.last_spawn_error;
        assert!(
            err.contains("os error 11") || err.contains("temporarily unavailable"),
            "EAGAIN recorded: {f:?}"
        );
        assert_eq!(f.threads, limit, "the kernel held it at the limit: {f:?}");
        if cgroups {
            assert!(
                f.cgroup_pids_events_max >= Some(1),
                "pids.events counts the refusal: {f:?}"
            );
        }
    }
    let put = fleet.put_record("s", "a", "after", None);
    assert_unavailable(&put, "PutRecord");
    assert!(
        String::from_utf8_lossy(&put.stderr).contains("peer thread")
            || String::from_utf8_lossy(&put.stderr).contains("spawn thread"),
        "the error names the cause:\n{}",
        describe(&put)
    );
    let get = fleet.get_records("s", "shardId-000000000000", None);
    assert_unavailable(&get, "GetRecords");
}

#[test]
fn removing_capacity_then_restarting_restores_service() {
    let fleet = Fleet::kinesis("recover", 3, 7);
    let s = fleet.wait_status("3 ready", LEARN, |s| full_mesh(s, 3));
    let base = u64::from(s.frontends[0].base_threads);
    assert!(
        base + 2 <= 7,
        "the test assumes base_threads ({base}) leaves room for 2 peers"
    );
    fleet.create_stream("s", 1);
    let extra = 7 - base; // enough to push peers past the limit
    let total = 3 + extra as usize;
    fleet.ok(&["add-capacity", &extra.to_string()]);
    fleet.wait_status("every shard-map unusable", LEARN, |s| {
        all_maps(s, total, MapState::Unusable)
    });
    fleet.ok(&["remove-capacity", &extra.to_string()]);
    let s = fleet.status();
    assert!(
        s.frontends
            .iter()
            .all(|f| f.shard_map == MapState::Unusable),
        "removal alone does not repair a failed map: {}",
        pretty(&s)
    );
    fleet.ok(&["restart-frontends", "--batch", "3"]);
    fleet.wait_status("3 ready after restart", LEARN, |s| full_mesh(s, 3));
    parse::<PutRecordOutput>(&fleet.put_record("s", "k", "back", None));
    let read: GetRecordsOutput =
        parse(&fleet.get_records("s", "shardId-000000000000", Some("kinesis-frontend-2")));
    assert!(read.records.iter().any(|r| r.data == "back"), "{read:?}");
}

/// The field names design.md documents for `status --json`, read raw on
/// purpose: a renamed field would still round-trip through `Status`.
#[test]
fn status_json_keeps_its_documented_field_names() {
    let fleet = Fleet::kinesis("wire", 2, 16);
    fleet.wait_status("2 ready", LEARN, |s| full_mesh(s, 2));
    let raw = fleet.ok(&["status", "--json"]);
    let v: Value = serde_json::from_str(&raw).expect("status --json is JSON");
    let has = |obj: &Value, keys: &[&str], what: &str| {
        for k in keys {
            assert!(obj.get(k).is_some(), "{what} has no field {k:?}:\n{raw}");
        }
    };
    has(
        &v,
        &["mode", "thread_limit", "frontends", "services"],
        "status",
    );
    assert!(
        ["local", "docker", "swarm"].contains(&v["mode"].as_str().unwrap_or_default()),
        "mode: {raw}"
    );
    has(
        &v["thread_limit"],
        &["limit", "enforcement"],
        "thread_limit",
    );
    let frontends = v["frontends"].as_array().expect("frontends is a list");
    assert_eq!(frontends.len(), 2, "{raw}");
    for f in frontends {
        has(
            f,
            &[
                "name",
                "pid",
                "threads",
                "base_threads",
                "thread_limit",
                "peers_known",
                "peers_total",
                "shard_map",
                "spawn_failures",
                "last_spawn_error",
            ],
            "a front-end",
        );
        assert_eq!(f["shard_map"], "ready", "{raw}");
    }
    let services = v["services"].as_array().expect("services is a list");
    assert!(!services.is_empty(), "{raw}");
    for svc in services {
        has(svc, &["name", "pid", "health", "detail"], "a service");
        assert!(
            ["serving", "degraded", "down"].contains(&svc["health"].as_str().unwrap_or_default()),
            "health is one of serving|degraded|down: {raw}"
        );
    }
}
