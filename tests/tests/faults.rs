//! Fault injection from the CLI: every fault measurably changes `cascade
//! probe` results against its target, and its effect disappears when it is
//! cleared, when it expires, and when the run goes down. Bad input changes
//! nothing.

use std::time::Duration;

use cascade::state::MapState;
use cascade_tests::status::{all_serving, full_mesh, gauge_u64, pretty, try_gauge_u64};
use cascade_tests::{Fleet, ProbeReport, describe, eventually, holds};

const SETTLE: Duration = Duration::from_secs(60);

fn up(tag: &str, services: &str) -> Fleet {
    let fleet = Fleet::up(
        tag,
        &[
            "--services",
            services,
            "--frontends",
            "3",
            "--thread-limit",
            "32",
            "--time-scale",
            "3600",
            "--traffic-rate",
            "2",
        ],
    );
    fleet.wait_status("every service serving and a full mesh", SETTLE, |s| {
        all_serving(s) && full_mesh(s, 3)
    });
    fleet
}

/// Probes `svc` `count` times (2 s deadline each); every call must succeed.
fn assert_serves(fleet: &Fleet, svc: &str, count: u32, why: &str) -> ProbeReport {
    let p = fleet.probe_within(svc, count, "2s");
    assert_eq!(p.ok, u64::from(count), "{svc}: {why}: {p:?}");
    p
}

fn inject(fleet: &Fleet, args: &[&str]) -> String {
    let mut all = vec!["inject"];
    all.extend_from_slice(args);
    let out = fleet.ok(&all);
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn grpc_faults_change_probes_and_revert_on_clear_and_expiry() {
    let fleet = up("grpc", "cognito");
    let base_p50 = assert_serves(&fleet, "cognito", 5, "healthy").p50_ms;

    // Latency: the configured delay shows in the probe, and goes away.
    let id = inject(
        &fleet,
        &[
            "latency",
            "--target",
            "cognito",
            "--latency",
            "300ms",
            "--jitter",
            "50ms",
        ],
    );
    let p = assert_serves(&fleet, "cognito", 5, "slow but served");
    assert!(
        p.p50_ms >= 300.0 && p.p50_ms < 300.0 + 50.0 + 250.0,
        "latency 300ms+[0,50]ms: {p:?}"
    );
    fleet.ok(&["clear", &id]);
    let p = fleet.probe_within("cognito", 5, "2s");
    assert!(
        p.p50_ms < base_p50 + 150.0,
        "latency gone after clear: {p:?}"
    );

    // Error code, every call.
    let id = inject(
        &fleet,
        &[
            "error",
            "--target",
            "cognito",
            "--code",
            "RESOURCE_EXHAUSTED",
        ],
    );
    let p = fleet.probe_within("cognito", 6, "2s");
    assert_eq!(p.failed_with("RESOURCE_EXHAUSTED"), 6, "{p:?}");
    fleet.ok(&["clear", &id]);
    // Error rate: about half, reproducible with the seed.
    let id = inject(
        &fleet,
        &[
            "error",
            "--target",
            "cognito",
            "--code",
            "UNAVAILABLE",
            "--probability",
            "0.5",
            "--seed",
            "7",
        ],
    );
    let p = fleet.probe_within("cognito", 60, "2s");
    let failed = p.failed_with("UNAVAILABLE");
    assert!(
        (15..=45).contains(&failed),
        "about half of 60 calls fail: {p:?}"
    );
    fleet.ok(&["clear", &id]);

    // Hang: calls end at the caller's deadline.
    let id = inject(&fleet, &["hang", "--target", "cognito"]);
    let p = fleet.probe_within("cognito", 3, "500ms");
    assert_eq!(p.failed_with("DEADLINE_EXCEEDED"), 3, "{p:?}");
    assert!(
        p.p50_ms >= 450.0 && p.p50_ms < 1500.0,
        "ends at the 500 ms deadline: {p:?}"
    );
    fleet.ok(&["clear", &id]);
    assert_serves(&fleet, "cognito", 3, "hang cleared");

    // Blackhole: swallowed before the handler, never answered.
    let id = inject(
        &fleet,
        &["blackhole", "--target", "cognito", "--method", "SignIn"],
    );
    let p = fleet.probe_within("cognito", 2, "500ms");
    assert_eq!(p.failed_with("DEADLINE_EXCEEDED"), 2, "{p:?}");
    fleet.ok(&["clear", &id]);
    assert_serves(&fleet, "cognito", 2, "blackhole cleared");

    // Expiry: a fault with a duration reverts itself.
    inject(
        &fleet,
        &[
            "error",
            "--target",
            "cognito",
            "--code",
            "INTERNAL",
            "--duration",
            "2s",
        ],
    );
    assert_eq!(fleet.probe_within("cognito", 2, "2s").ok, 0);
    let listed = fleet.ok(&["faults"]);
    assert!(
        listed.contains("s left"),
        "faults shows the time left: {listed}"
    );
    eventually("the fault to expire", Duration::from_secs(10), || {
        let l = fleet.ok(&["faults"]);
        if l.contains("no active faults") {
            Ok(())
        } else {
            Err(l)
        }
    });
    assert_serves(&fleet, "cognito", 3, "no effect after expiry");
}

#[test]
fn a_partition_cuts_only_the_flow_between_its_two_sides() {
    let fleet = up("partition", "cognito,cloudwatch,lambda");
    let before = gauge_u64(&fleet.status(), "lambda", "agent_flush_failures");
    let id = inject(
        &fleet,
        &[
            "partition",
            "--between",
            "lambda",
            "cloudwatch",
            "--one-way",
        ],
    );
    fleet.wait_until(
        "Lambda's metrics agent failing to reach CloudWatch",
        SETTLE,
        |s| Ok(try_gauge_u64(s, "lambda", "agent_flush_failures")? > before + 2),
    );
    // Only that flow: customers still reach CloudWatch, Lambda and Cognito.
    for svc in ["cloudwatch", "lambda", "cognito"] {
        assert_serves(&fleet, svc, 3, "reachable for customers");
    }
    let before_clear = gauge_u64(&fleet.status(), "lambda", "agent_flushed_entries");
    fleet.ok(&["clear", &id]);
    fleet.wait_until("the agent flushing to CloudWatch again", SETTLE, |s| {
        Ok(try_gauge_u64(s, "lambda", "agent_flushed_entries")? > before_clear)
    });
}

#[test]
fn process_faults_pause_kill_and_restart() {
    let fleet = up("process", "cognito");
    let id = inject(&fleet, &["pause", "--target", "cognito"]);
    let p = fleet.probe_within("cognito", 2, "500ms");
    assert_eq!(p.ok, 0, "a paused process answers nothing: {p:?}");
    fleet.ok(&["clear", &id]);
    assert_serves(&fleet, "cognito", 2, "SIGCONT resumes it");

    let out = fleet.ok(&["inject", "kill", "--target", "cognito-0"]);
    assert!(out.contains("kill"), "{out}");
    fleet.wait_status("cognito unreachable after the kill", SETTLE, |s| {
        s.service("cognito")
            .and_then(|c| c.instances.first())
            .is_some_and(|i| !i.reachable)
    });
    assert_eq!(fleet.probe_within("cognito", 2, "500ms").ok, 0);
    fleet.ok(&["inject", "restart", "--target", "cognito"]);
    assert_serves(&fleet, "cognito", 2, "restarted on the same address");
}

#[test]
fn lowering_a_frontends_thread_limit_fails_its_next_rebuild() {
    let fleet = up("tlimit", "kinesis");
    let s = fleet.status();
    let base = u64::from(s.frontends[0].base_threads);
    // fe-0 holds base + 2 peers; allow exactly that, so the next peer is refused.
    inject(
        &fleet,
        &[
            "thread-limit",
            "--target",
            "kinesis-frontend-0",
            "--limit",
            &(base + 2).to_string(),
        ],
    );
    fleet.ok(&["add-capacity", "1"]);
    let s = fleet.wait_status(
        "kinesis-frontend-0 unusable, the others ready",
        SETTLE,
        |s| {
            let f = &s.frontends;
            f.len() == 4
                && f[0].shard_map == MapState::Unusable
                && f[1..]
                    .iter()
                    .all(|x| x.shard_map == MapState::Ready && x.peers_known == 3)
        },
    );
    assert_eq!(
        s.frontends[0].thread_limit,
        Some(base + 2),
        "{}",
        pretty(&s)
    );
    fleet.ok(&["clear"]);
    fleet.wait_status("the original limit restored", SETTLE, |s| {
        s.frontends
            .first()
            .is_some_and(|f| f.thread_limit == Some(32))
    });
}

#[test]
fn no_fault_survives_down() {
    let fleet = up("down", "cognito");
    inject(&fleet, &["pause", "--target", "cognito"]);
    inject(
        &fleet,
        &["latency", "--target", "kinesis-backend", "--latency", "1s"],
    );
    // Reading the run id records every pid of the run for the leak check.
    let run_id = fleet.run_id();
    let out = fleet.run(&["down"]);
    assert!(out.status.success(), "{}", describe(&out));
    fleet.assert_nothing_left(&run_id);
}

#[test]
fn bad_fault_input_is_refused_and_changes_nothing() {
    let fleet = up("badfault", "cognito");
    let cases: [(&[&str], &str); 7] = [
        (&["inject", "explode", "--target", "cognito"], "explode"),
        (
            &["inject", "latency", "--target", "nobody", "--latency", "1s"],
            "nobody",
        ),
        (
            &[
                "inject",
                "latency",
                "--target",
                "cognito",
                "--latency",
                "1s",
                "--duration",
                "soon",
            ],
            "--duration",
        ),
        (
            &[
                "inject",
                "error",
                "--target",
                "cognito",
                "--code",
                "UNAVAILABLE",
                "--rate",
                "1.5",
            ],
            "probability",
        ),
        (
            &["inject", "error", "--target", "cognito", "--code", "NOPE"],
            "--code",
        ),
        (
            &[
                "inject",
                "latency",
                "--target",
                "cognito",
                "--latency",
                "1s",
                "--percent",
                "0",
            ],
            "--percent",
        ),
        (&["clear", "f-999"], "f-999"),
    ];
    for (args, needle) in cases {
        let out = fleet.run(args);
        assert!(
            matches!(out.status.code(), Some(2) | Some(64)),
            "{args:?}:\n{}",
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?} names {needle}:\n{}",
            describe(&out)
        );
    }
    let listed = fleet.ok(&["faults"]);
    assert!(listed.contains("no active faults"), "{listed}");
    assert_serves(&fleet, "cognito", 3, "bad input changed nothing");
}

#[test]
fn thread_and_memory_hogs_take_real_resources_until_cleared() {
    let fleet = up("hogs", "cloudwatch,lambda");
    // Threads of kinesis-frontend-0, the first front-end listed.
    let threads = |f: &Fleet| -> Result<u32, String> {
        let s = f.try_status()?;
        s.frontends
            .first()
            .map(|x| x.threads)
            .ok_or_else(|| format!("no front-end listed:\n{}", pretty(&s)))
    };
    let before = threads(&fleet).unwrap_or_else(|e| panic!("{e}"));
    let id = inject(
        &fleet,
        &[
            "thread-hog",
            "--target",
            "kinesis-frontend-0",
            "--threads",
            "5",
        ],
    );
    eventually("five more threads in kinesis-frontend-0", SETTLE, || {
        let n = threads(&fleet)?;
        holds(n == before + 5, || format!("{n} threads, was {before}"))
    });
    fleet.ok(&["clear", &id]);
    eventually("the hog's threads gone", SETTLE, || {
        let n = threads(&fleet)?;
        holds(n == before, || format!("{n} threads, was {before}"))
    });

    // Lambda's default host model: 8 MiB, 2 MiB per invocation.
    let id = inject(
        &fleet,
        &["memory-hog", "--target", "lambda", "--bytes", "7340032"],
    );
    let p = fleet.probe_within("lambda", 3, "2s");
    assert_eq!(
        p.failed_with("RESOURCE_EXHAUSTED"),
        3,
        "invocations crowded out by the hog: {p:?}"
    );
    fleet.ok(&["clear", &id]);
    assert_serves(&fleet, "lambda", 3, "memory back after clear");
    let refused = fleet.run(&[
        "inject",
        "memory-hog",
        "--target",
        "cloudwatch",
        "--bytes",
        "1024",
    ]);
    assert_eq!(
        refused.status.code(),
        Some(64),
        "memory-hog is for Lambda hosts:\n{}",
        describe(&refused)
    );
}
