//! `cascade run`: a scenario drives a real topology on the incident clock,
//! judges its expectations, and leaves a journal and a report, even when
//! interrupted. The exit code is 0 only when every expectation held.

use std::path::Path;
use std::time::Duration;

use cascade_tests::{Home, describe, eventually};
use serde_json::Value;

fn write(home: &Home, name: &str, text: &str) -> String {
    let p = home.dir.join(name);
    std::fs::write(&p, text).expect("write scenario");
    p.to_string_lossy().into_owned()
}

const TIP: &str = r#"
[scenario]
name = "small-tip"
start = "02:30"

[topology]
frontends = 3
thread_limit = 7
time_scale = 3600
services = ["kinesis"]

[[step]]
at = "02:35"
do = "add-capacity"
count = 2

[[expect]]
name = "every shard-map unusable"
by = "+6h"
check = "shard-maps"
all = "unusable"

[[expect]]
name = "kinesis impaired"
by = "+6h"
check = "health"
service = "kinesis"
is = "impaired"
"#;

fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json"))
        .expect("json")
}

#[test]
fn a_scenario_whose_expectations_hold_passes_with_a_journal_and_report() {
    let home = Home::new("runpass");
    let file = write(&home, "tip.toml", TIP);
    let dir = home.dir.join("report");
    let out = home.run(&[
        "run",
        &file,
        "--report",
        dir.to_str().expect("utf-8"),
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let r = report(&dir);
    assert_eq!(r["verdict"], "pass", "{r}");
    assert!(
        r["expectations"]
            .as_array()
            .is_some_and(|x| x.len() == 2 && x.iter().all(|e| e["held"] == true)),
        "{r}"
    );
    assert!(
        r["services"]["kinesis"]["impaired_at_s"].as_f64().is_some(),
        "{r}"
    );
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).expect("journal");
    assert!(
        journal
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "every line is JSON"
    );
    assert!(
        journal
            .lines()
            .last()
            .is_some_and(|l| l.contains("\"verdict\"")),
        "{journal}"
    );
}

#[test]
fn a_false_expectation_fails_the_run_with_a_nonzero_exit() {
    let home = Home::new("runfail");
    let text = TIP.replace(
        "do = \"add-capacity\"\ncount = 2",
        "do = \"add-capacity\"\ncount = 1",
    );
    let file = write(&home, "no-tip.toml", &text);
    let dir = home.dir.join("report");
    let out = home.run(&[
        "run",
        &file,
        "--report",
        dir.to_str().expect("utf-8"),
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let r = report(&dir);
    assert_eq!(r["verdict"], "fail", "{r}");
    assert!(
        r["expectations"]
            .as_array()
            .is_some_and(|x| x.iter().all(|e| e["held"] == false)),
        "{r}"
    );
}

/// A `cascade run` in progress, with what its leak check needs.
struct LongRun {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pids: Vec<u32>,
    run_id: String,
}

/// Starts `cascade run` on scenario `text` and waits for its supervisor;
/// returns the run with the pids of its supervisor and front-ends.
fn start_long_run(home: &Home, text: &str) -> LongRun {
    let file = write(home, "long.toml", text);
    let dir = home.dir.join("report");
    let child = home
        .command(&[
            "run",
            &file,
            "--report",
            dir.to_str().expect("utf-8"),
            "--quiet",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start cascade run");
    let sup_home = Home {
        dir: dir.join("home"),
    };
    let pid = eventually("the run's supervisor", Duration::from_secs(30), || {
        sup_home
            .supervisor_pid()
            .ok_or_else(|| "no supervisor.json yet".to_owned())
    });
    let status: Value = {
        let out = sup_home.run(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).expect("status")
    };
    let pids = status["frontends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["pid"].as_u64().map(|p| p as u32))
        .chain(std::iter::once(pid))
        .collect();
    let run_id = Path::new(status["run_dir"].as_str().unwrap_or_default())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    LongRun {
        child,
        dir,
        pids,
        run_id,
    }
}

#[test]
fn ctrl_c_during_a_run_leaves_a_complete_journal_and_nothing_running() {
    let home = Home::new("runint");
    // A long scenario: its only expectation is hours of incident time away,
    // and a fault (a paused front-end) is in force when Ctrl-C comes.
    let text = TIP.replace("time_scale = 3600", "time_scale = 60").replace(
        "[[step]]",
        "[[step]]\nat = \"02:31\"\ndo = \"inject\"\nfault = { kind = \"pause\", target = \"kinesis-frontend-0\" }\n\n[[step]]",
    );
    let LongRun {
        mut child,
        dir,
        pids,
        run_id,
    } = start_long_run(&home, &text);
    eventually("the pause fault in force", Duration::from_secs(30), || {
        let j = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap_or_default();
        if j.contains("inject pause") {
            Ok(())
        } else {
            Err(j)
        }
    });
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let exit = eventually(
        "cascade run to stop after Ctrl-C",
        Duration::from_secs(60),
        || {
            child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_owned())
        },
    );
    assert_eq!(exit.code(), Some(130), "an interrupted run exits 130");
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).expect("journal");
    assert!(
        journal
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{journal}"
    );
    assert!(
        journal.contains("\"interrupted\"")
            && journal
                .lines()
                .last()
                .is_some_and(|l| l.contains("aborted")),
        "{journal}"
    );
    assert_eq!(report(&dir)["verdict"], "aborted");
    assert!(
        journal.contains("inject pause"),
        "the pause fault was in force when Ctrl-C came: {journal}"
    );
    // The paused front-end (SIGSTOP) is gone with the rest: no process, no
    // cgroup, so no fault of any kind is left applied.
    cascade_tests::assert_gone(&pids, &run_id);
}

/// A `cascade run` that is killed outright (SIGKILL: no handler runs) takes
/// its supervisor and every process down with it.
#[test]
fn a_killed_run_leaves_nothing_running() {
    let home = Home::new("runkill");
    let text = TIP.replace("time_scale = 3600", "time_scale = 60");
    let LongRun {
        mut child,
        pids,
        run_id,
        ..
    } = start_long_run(&home, &text);
    child.kill().expect("SIGKILL cascade run");
    let _ = child.wait();
    cascade_tests::assert_gone(&pids, &run_id);
}

/// Runs `cascade compare` and returns (exit code, compare.json, stdout).
fn compare(home: &Home, scenario: &str, variants: &str) -> (Option<i32>, Value, String) {
    let dir = home.dir.join("compare");
    let out = home.run(&[
        "compare",
        scenario,
        "--variants",
        variants,
        "--report",
        dir.to_str().expect("utf-8"),
    ]);
    let doc = std::fs::read(dir.join("compare.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out.status.code(), doc, describe(&out))
}

/// The shipped postmortem end to end, and the Cognito remediation beside it:
/// the baseline run holds every expectation (Cognito impaired among them),
/// while with `cognito-fix` Cognito is never impaired.
#[test]
fn nov_25_2020_passes_end_to_end_and_cognito_fix_keeps_cognito_unimpaired() {
    let home = Home::new("nov25");
    let (code, doc, out) = compare(&home, "nov-25-2020", "baseline,cognito-fix");
    assert_eq!(code, Some(0), "{out}");
    let base = &doc["variants"]["baseline"];
    let fixed = &doc["variants"]["cognito-fix"];
    assert_eq!(
        base["verdict"], "pass",
        "baseline must pass end to end: {out}\nexpectations: {}",
        base["expectations"]
    );
    assert!(
        base["services"]["cognito"]["impaired_at_s"]
            .as_f64()
            .is_some(),
        "baseline impairs Cognito: {doc}"
    );
    assert!(
        fixed["services"]["cognito"]["impaired_at_s"].is_null(),
        "cognito-fix keeps Cognito unimpaired: {}",
        fixed["services"]["cognito"]
    );
    assert!(
        fixed["services"]["kinesis"]["impaired_at_s"]
            .as_f64()
            .is_some(),
        "Kinesis still fails with cognito-fix (it fixes Cognito only): {doc}"
    );
    assert!(
        out.contains("blast radius") && out.contains("cognito-fix"),
        "the blast-radius table is printed: {out}"
    );
    for v in ["baseline", "cognito-fix"] {
        let html = std::fs::read_to_string(home.dir.join("compare").join(v).join("report.html"))
            .expect("report.html");
        assert!(
            html.contains("<svg") && !html.contains("<script"),
            "{v}: self-contained SVG report"
        );
    }
}

/// The recovery hazard: restarting the whole fleet at once starves request
/// handling and recovery stalls; booting from the metadata store removes it.
#[test]
fn fast_restart_stalls_and_metadata_bootstrap_removes_the_hazard() {
    let home = Home::new("fastrestart");
    let (code, doc, out) = compare(&home, "fast-restart", "baseline,metadata-bootstrap");
    assert_eq!(code, Some(0), "{out}");
    let base = &doc["variants"]["baseline"];
    assert_eq!(
        base["verdict"], "pass",
        "fast-restart's expectations (removals, stalled recovery) hold: {out}\n{doc}"
    );
    let fixed = &doc["variants"]["metadata-bootstrap"];
    assert!(
        fixed["expectations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("recovery stalls"))
                && e["held"] == false),
        "with metadata-store bootstrap the fleet does not stall: {}",
        fixed["expectations"]
    );
    assert!(
        fixed["services"]["kinesis"]["recovered_at_s"]
            .as_f64()
            .is_some(),
        "with metadata-store bootstrap Kinesis recovers after the same restart: {doc}"
    );
    let journal = std::fs::read_to_string(
        home.dir
            .join("compare")
            .join("metadata-bootstrap")
            .join("journal.jsonl"),
    )
    .expect("journal");
    assert!(
        !journal.contains("judged unhealthy: removed"),
        "no front-end is judged unhealthy with metadata-store bootstrap: {journal}"
    );
}

/// Two runs with the same seed agree on which services were impaired, and in
/// what order. Health is judged over 5 s windows of customer calls, so
/// services impaired within one window of each other are ties and may come
/// in either order (as `impaired-in-order` treats them).
#[test]
fn the_same_seed_gives_the_same_impaired_services_in_the_same_order() {
    let home = Home::new("seeds");
    // A fixed-length run (the last expectation is judged throughout, to
    // +4h30m) at the default time scale, so the cascade has time to spread.
    let text = TIP
        .replace(
            "services = [\"kinesis\"]",
            "services = [\"kinesis\", \"cognito\", \"cloudwatch\", \"lambda\"]",
        )
        .replace("time_scale = 3600", "time_scale = 360")
        + "\n[[expect]]\nname = \"Kinesis stays impaired\"\nafter = \"+3h\"\nby = \"+4h30m\"\nthroughout = true\ncheck = \"health\"\nservice = \"kinesis\"\nis = \"impaired\"\n";
    let file = write(&home, "seeded.toml", &text);
    let mut runs = Vec::new();
    for n in 0..2 {
        let dir = home.dir.join(format!("run{n}"));
        let out = home.run(&[
            "run",
            &file,
            "--seed",
            "42",
            "--report",
            dir.to_str().expect("utf-8"),
            "--quiet",
        ]);
        assert!(out.status.code().is_some(), "{}", describe(&out));
        runs.push(report(&dir));
    }
    let impaired = |r: &Value| -> Vec<(String, f64)> {
        r["services"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v["impaired_at_s"].as_f64()?)))
            .collect()
    };
    let (a, b) = (impaired(&runs[0]), impaired(&runs[1]));
    let names = |v: &[(String, f64)]| {
        let mut n: Vec<String> = v.iter().map(|x| x.0.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(runs[0]["seed"], 42);
    assert_eq!(
        names(&a),
        names(&b),
        "same impaired services:\n{a:?}\n{b:?}"
    );
    assert!(
        names(&a).len() >= 2,
        "the run impairs Kinesis and more: {a:?}"
    );
    let at = |v: &[(String, f64)], s: &str| v.iter().find(|x| x.0 == s).map(|x| x.1);
    for (x, tx) in &a {
        for (y, ty) in &a {
            let (Some(bx), Some(by)) = (at(&b, x), at(&b, y)) else {
                continue;
            };
            let tie = 5.0;
            if tx + tie < *ty {
                assert!(
                    bx <= by + tie,
                    "{x} was impaired before {y} in the first run but not in the second:\n{a:?}\n{b:?}"
                );
            }
        }
    }
}
