//! Fault injection from the CLI: every fault measurably changes `cascade
//! probe` results against its target, and its effect disappears when it is
//! cleared, when it expires, and when the run goes down. Bad input changes
//! nothing.

use std::time::Duration;

use cascade_tests::{Fleet, describe, eventually};
use serde_json::Value;

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
        s["services"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|x| x["health"] == "serving")
            && Fleet::frontends(s).iter().all(|f| {
                f["shard_map"] == "ready" && f["peers_known"] == 2 && f["peer_threads"] == 2
            })
    });
    fleet
}

fn probe(fleet: &Fleet, svc: &str, count: u32, deadline: &str) -> Value {
    let out = fleet.ok(&[
        "probe",
        svc,
        "--count",
        &count.to_string(),
        "--deadline",
        deadline,
        "--json",
    ]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("probe JSON: {e}: {out}"))
}

fn inject(fleet: &Fleet, args: &[&str]) -> String {
    let mut all = vec!["inject"];
    all.extend_from_slice(args);
    let out = fleet.ok(&all);
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

fn f64_of(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(-1.0)
}

#[test]
fn grpc_faults_change_probes_and_revert_on_clear_and_expiry() {
    let fleet = up("grpc", "cognito");
    let healthy = probe(&fleet, "cognito", 5, "2s");
    assert_eq!(healthy["ok"], 5, "{healthy}");
    let base_p50 = f64_of(&healthy, "p50_ms");

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
    let p = probe(&fleet, "cognito", 5, "2s");
    assert_eq!(p["ok"], 5, "{p}");
    assert!(
        f64_of(&p, "p50_ms") >= 300.0 && f64_of(&p, "p50_ms") < 300.0 + 50.0 + 250.0,
        "latency 300ms+[0,50]ms: {p}"
    );
    fleet.ok(&["clear", &id]);
    let p = probe(&fleet, "cognito", 5, "2s");
    assert!(
        f64_of(&p, "p50_ms") < base_p50 + 150.0,
        "latency gone after clear: {p}"
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
    let p = probe(&fleet, "cognito", 6, "2s");
    assert_eq!(p["errors"]["RESOURCE_EXHAUSTED"], 6, "{p}");
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
    let p = probe(&fleet, "cognito", 60, "2s");
    let failed = p["errors"]["UNAVAILABLE"].as_u64().unwrap_or(0);
    assert!(
        (15..=45).contains(&failed),
        "about half of 60 calls fail: {p}"
    );
    fleet.ok(&["clear", &id]);

    // Hang: calls end at the caller's deadline.
    let id = inject(&fleet, &["hang", "--target", "cognito"]);
    let p = probe(&fleet, "cognito", 3, "500ms");
    assert_eq!(p["errors"]["DEADLINE_EXCEEDED"], 3, "{p}");
    assert!(
        f64_of(&p, "p50_ms") >= 450.0 && f64_of(&p, "p50_ms") < 1500.0,
        "ends at the 500 ms deadline: {p}"
    );
    fleet.ok(&["clear", &id]);
    assert_eq!(probe(&fleet, "cognito", 3, "2s")["ok"], 3);

    // Blackhole: swallowed before the handler, never answered.
    let id = inject(
        &fleet,
        &["blackhole", "--target", "cognito", "--method", "SignIn"],
    );
    let p = probe(&fleet, "cognito", 2, "500ms");
    assert_eq!(p["errors"]["DEADLINE_EXCEEDED"], 2, "{p}");
    fleet.ok(&["clear", &id]);
    assert_eq!(probe(&fleet, "cognito", 2, "2s")["ok"], 2);

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
    assert_eq!(probe(&fleet, "cognito", 2, "2s")["ok"], 0);
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
    assert_eq!(
        probe(&fleet, "cognito", 3, "2s")["ok"],
        3,
        "no effect after expiry"
    );
}

#[test]
fn a_partition_cuts_only_the_flow_between_its_two_sides() {
    let fleet = up("partition", "cognito,cloudwatch,lambda");
    let flushes = |f: &Fleet| -> u64 {
        let s = f.status();
        let lambda = s["services"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == "lambda"))
            .cloned()
            .unwrap_or_default();
        lambda["instances"][0]["info"]["agent_flush_failures"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0)
    };
    let before = flushes(&fleet);
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
    eventually(
        "Lambda's metrics agent failing to reach CloudWatch",
        SETTLE,
        || {
            let n = flushes(&fleet);
            if n > before + 2 {
                Ok(())
            } else {
                Err(format!("agent_flush_failures {n}"))
            }
        },
    );
    // Only that flow: customers still reach CloudWatch, Lambda and Cognito.
    for svc in ["cloudwatch", "lambda", "cognito"] {
        let p = probe(&fleet, svc, 3, "2s");
        assert_eq!(p["ok"], 3, "{svc} is reachable for customers: {p}");
    }
    let flushed = |f: &Fleet| -> u64 { lambda_info(f, "agent_flushed_entries") };
    let before_clear = flushed(&fleet);
    fleet.ok(&["clear", &id]);
    eventually("the agent flushing to CloudWatch again", SETTLE, || {
        let n = flushed(&fleet);
        if n > before_clear {
            Ok(())
        } else {
            Err(format!("agent_flushed_entries {n}"))
        }
    });
}

fn lambda_info(f: &Fleet, key: &str) -> u64 {
    let s = f.status();
    let lambda = s["services"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["name"] == "lambda"))
        .cloned()
        .unwrap_or_default();
    lambda["instances"][0]["info"][key]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0)
}

#[test]
fn process_faults_pause_kill_and_restart() {
    let fleet = up("process", "cognito");
    let id = inject(&fleet, &["pause", "--target", "cognito"]);
    let p = probe(&fleet, "cognito", 2, "500ms");
    assert_eq!(p["ok"], 0, "a paused process answers nothing: {p}");
    fleet.ok(&["clear", &id]);
    assert_eq!(
        probe(&fleet, "cognito", 2, "2s")["ok"],
        2,
        "SIGCONT resumes it"
    );

    let out = fleet.ok(&["inject", "kill", "--target", "cognito-0"]);
    assert!(out.contains("kill"), "{out}");
    fleet.wait_status("cognito unreachable after the kill", SETTLE, |s| {
        s["services"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == "cognito"))
            .is_some_and(|c| c["instances"][0]["reachable"] == false)
    });
    assert_eq!(probe(&fleet, "cognito", 2, "500ms")["ok"], 0);
    fleet.ok(&["inject", "restart", "--target", "cognito"]);
    assert_eq!(
        probe(&fleet, "cognito", 2, "2s")["ok"],
        2,
        "restarted on the same address"
    );
}

#[test]
fn lowering_a_frontends_thread_limit_fails_its_next_rebuild() {
    let fleet = up("tlimit", "kinesis");
    let s = fleet.status();
    let base = Fleet::frontends(&s)[0]["base_threads"]
        .as_u64()
        .expect("base");
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
            let f = Fleet::frontends(s);
            f.len() == 4
                && f[0]["shard_map"] == "unusable"
                && f[1..]
                    .iter()
                    .all(|x| x["shard_map"] == "ready" && x["peers_known"] == 3)
        },
    );
    assert_eq!(
        Fleet::frontends(&s)[0]["thread_limit"].as_u64(),
        Some(base + 2),
        "{s}"
    );
    fleet.ok(&["clear"]);
    let s = fleet.wait_status("the original limit restored", SETTLE, |s| {
        Fleet::frontends(s)[0]["thread_limit"].as_u64() == Some(32)
    });
    drop(s);
}

#[test]
fn no_fault_survives_down() {
    let fleet = up("down", "cognito");
    inject(&fleet, &["pause", "--target", "cognito"]);
    inject(
        &fleet,
        &["latency", "--target", "kinesis-backend", "--latency", "1s"],
    );
    let run_id = fleet.run_id();
    let s = fleet.status();
    drop(s);
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
    assert_eq!(probe(&fleet, "cognito", 3, "2s")["ok"], 3);
}

#[test]
fn thread_and_memory_hogs_take_real_resources_until_cleared() {
    let fleet = up("hogs", "cloudwatch,lambda");
    let threads = |f: &Fleet| {
        Fleet::frontends(&f.status())[0]["threads"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = threads(&fleet);
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
        let n = threads(&fleet);
        if n == before + 5 {
            Ok(())
        } else {
            Err(format!("{n} threads, was {before}"))
        }
    });
    fleet.ok(&["clear", &id]);
    eventually("the hog's threads gone", SETTLE, || {
        let n = threads(&fleet);
        if n == before {
            Ok(())
        } else {
            Err(format!("{n} threads, was {before}"))
        }
    });

    // Lambda's default host model: 8 MiB, 2 MiB per invocation.
    let id = inject(
        &fleet,
        &["memory-hog", "--target", "lambda", "--bytes", "7340032"],
    );
    let p = probe(&fleet, "lambda", 3, "2s");
    assert_eq!(
        p["errors"]["RESOURCE_EXHAUSTED"], 3,
        "invocations crowded out by the hog: {p}"
    );
    fleet.ok(&["clear", &id]);
    assert_eq!(
        probe(&fleet, "lambda", 3, "2s")["ok"],
        3,
        "memory back after clear"
    );
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
