//! The front-end fleet under a real kernel thread limit: healthy below it,
//! tipped by added capacity above it (exactly at `base_threads + peers >
//! limit`), recovered by removing capacity and restarting.

use std::time::Duration;

use cascade_tests::{Fleet, describe};
use serde_json::Value;

const LEARN: Duration = Duration::from_secs(30);

fn all_ready(s: &Value, n: usize) -> bool {
    let f = Fleet::frontends(s);
    f.len() == n
        && f.iter()
            .all(|x| x["shard_map"] == "ready" && x["peers_known"].as_u64() == Some(n as u64 - 1))
}

fn base_threads(s: &Value) -> u64 {
    Fleet::frontends(s)[0]["base_threads"]
        .as_u64()
        .expect("base_threads")
}

#[test]
fn healthy_fleet_routes_records_through_any_frontend() {
    let fleet = Fleet::up(
        "healthy",
        &[
            "--services",
            "kinesis",
            "--frontends",
            "4",
            "--thread-limit",
            "32",
            "--time-scale",
            "3600",
        ],
    );
    let s = fleet.wait_status("4 ready shard-maps", LEARN, |s| all_ready(s, 4));
    for f in Fleet::frontends(&s) {
        let base = f["base_threads"].as_u64().expect("base");
        assert_eq!(
            f["threads"].as_u64(),
            Some(base + 3),
            "threads == base + peers: {f}"
        );
        assert_eq!(
            f["thread_limit"].as_u64(),
            Some(32),
            "the front-end reads its own kernel limit: {f}"
        );
    }
    fleet.ok(&[
        "kinesis",
        "create-stream",
        "--stream-name",
        "orders",
        "--shard-count",
        "3",
    ]);
    let names: Vec<String> = Fleet::frontends(&s)
        .iter()
        .map(|f| f["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut sent = Vec::new();
    for i in 0..12 {
        let via = &names[i % names.len()];
        let data = format!("record-{i}");
        let out = fleet.ok(&[
            "kinesis",
            "put-record",
            "--stream-name",
            "orders",
            "--partition-key",
            &format!("key-{i}"),
            "--data",
            &data,
            "--endpoint",
            via,
        ]);
        let v: Value = serde_json::from_str(&out).expect("json");
        sent.push((v["ShardId"].as_str().unwrap_or_default().to_owned(), data));
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
        let via = &names[(n + 1) % names.len()];
        let out = fleet.ok(&[
            "kinesis",
            "get-records",
            "--stream-name",
            "orders",
            "--shard-id",
            shard,
            "--endpoint",
            via,
        ]);
        let v: Value = serde_json::from_str(&out).expect("json");
        let mut last_seq = -1i64;
        for r in v["Records"].as_array().into_iter().flatten() {
            let seq: i64 = r["SequenceNumber"]
                .as_str()
                .unwrap_or("x")
                .parse()
                .expect("numeric seq");
            assert!(seq > last_seq, "sequence numbers increase within {shard}");
            last_seq = seq;
            got.push((
                (*shard).to_owned(),
                r["Data"].as_str().unwrap_or_default().to_owned(),
            ));
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
    let probe = Fleet::up(
        "probe",
        &[
            "--services",
            "kinesis",
            "--frontends",
            "1",
            "--thread-limit",
            "64",
            "--time-scale",
            "3600",
        ],
    );
    let base = base_threads(&probe.wait_status("one ready front-end", LEARN, |s| all_ready(s, 1)));
    drop(probe);

    let limit = base + 4; // 5 front-ends (4 peers) fit exactly; 6 do not.
    let fleet = Fleet::up(
        "tip",
        &[
            "--services",
            "kinesis",
            "--frontends",
            "3",
            "--thread-limit",
            &limit.to_string(),
            "--time-scale",
            "3600",
        ],
    );
    fleet.wait_status("3 ready", LEARN, |s| all_ready(s, 3));
    fleet.ok(&[
        "kinesis",
        "create-stream",
        "--stream-name",
        "s",
        "--shard-count",
        "2",
    ]);
    fleet.ok(&[
        "kinesis",
        "put-record",
        "--stream-name",
        "s",
        "--partition-key",
        "a",
        "--data",
        "before",
    ]);

    fleet.ok(&["add-capacity", "2"]);
    let s = fleet.wait_status(
        "5 front-ends at base + 4 peers == limit, all ready",
        LEARN,
        |s| {
            all_ready(s, 5)
                && Fleet::frontends(s)
                    .iter()
                    .all(|f| f["threads"].as_u64() == Some(limit))
        },
    );
    for f in Fleet::frontends(&s) {
        assert_eq!(
            f["spawn_failures"].as_u64(),
            Some(0),
            "at the limit nothing fails: {f}"
        );
    }

    fleet.ok(&["add-capacity", "1"]);
    let s = fleet.wait_status("every shard-map unusable", LEARN, |s| {
        let f = Fleet::frontends(s);
        f.len() == 6 && f.iter().all(|x| x["shard_map"] == "unusable")
    });
    let cgroups = s["thread_limit"]["enforcement"]
        .as_str()
        .is_some_and(|e| e.starts_with("cgroup"));
    for f in Fleet::frontends(&s).iter().take(5) {
        assert!(
            f["spawn_failures"].as_u64() >= Some(1),
            "old front-end refused a peer thread: {f}"
        );
        let err = f["last_spawn_error"].as_str().unwrap_or_default();
        assert!(
            err.contains("os error 11") || err.contains("temporarily unavailable"),
            "EAGAIN recorded: {f}"
        );
        assert_eq!(
            f["threads"].as_u64(),
            Some(limit),
            "the kernel held it at the limit: {f}"
        );
        if cgroups {
            assert!(
                f["cgroup_pids_events_max"].as_u64() >= Some(1),
                "pids.events counts the refusal: {f}"
            );
        }
    }
    let put = fleet.run(&[
        "kinesis",
        "put-record",
        "--stream-name",
        "s",
        "--partition-key",
        "a",
        "--data",
        "after",
    ]);
    assert!(
        !put.status.success() && String::from_utf8_lossy(&put.stderr).contains("Unavailable"),
        "PutRecord is UNAVAILABLE:\n{}",
        describe(&put)
    );
    assert!(
        String::from_utf8_lossy(&put.stderr).contains("peer thread")
            || String::from_utf8_lossy(&put.stderr).contains("spawn thread"),
        "the error names the cause:\n{}",
        describe(&put)
    );
    let get = fleet.run(&[
        "kinesis",
        "get-records",
        "--stream-name",
        "s",
        "--shard-id",
        "shardId-000000000000",
    ]);
    assert!(
        !get.status.success() && String::from_utf8_lossy(&get.stderr).contains("Unavailable"),
        "GetRecords is UNAVAILABLE:\n{}",
        describe(&get)
    );
}

#[test]
fn removing_capacity_then_restarting_restores_service() {
    let fleet = Fleet::up(
        "recover",
        &[
            "--services",
            "kinesis",
            "--frontends",
            "3",
            "--thread-limit",
            "7",
            "--time-scale",
            "3600",
        ],
    );
    let s = fleet.wait_status("3 ready", LEARN, |s| all_ready(s, 3));
    let base = base_threads(&s);
    assert!(
        base + 2 <= 7,
        "the test assumes base_threads ({base}) leaves room for 2 peers"
    );
    fleet.ok(&[
        "kinesis",
        "create-stream",
        "--stream-name",
        "s",
        "--shard-count",
        "1",
    ]);
    let extra = 7 - base; // enough to push peers past the limit
    fleet.ok(&["add-capacity", &extra.to_string()]);
    fleet.wait_status("every shard-map unusable", LEARN, |s| {
        Fleet::frontends(s)
            .iter()
            .all(|x| x["shard_map"] == "unusable")
    });
    fleet.ok(&["remove-capacity", &extra.to_string()]);
    let s = fleet.status();
    assert!(
        Fleet::frontends(&s)
            .iter()
            .all(|x| x["shard_map"] == "unusable"),
        "removal alone does not repair a failed map: {s}"
    );
    fleet.ok(&["restart-frontends", "--batch", "3"]);
    fleet.wait_status("3 ready after restart", LEARN, |s| all_ready(s, 3));
    let out = fleet.ok(&[
        "kinesis",
        "put-record",
        "--stream-name",
        "s",
        "--partition-key",
        "k",
        "--data",
        "back",
    ]);
    assert!(out.contains("SequenceNumber"), "{out}");
    let out = fleet.ok(&[
        "kinesis",
        "get-records",
        "--stream-name",
        "s",
        "--shard-id",
        "shardId-000000000000",
        "--endpoint",
        "kinesis-frontend-2",
    ]);
    assert!(out.contains("back"), "{out}");
}
