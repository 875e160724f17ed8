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

#[test]
fn ctrl_c_during_a_run_leaves_a_complete_journal_and_nothing_running() {
    let home = Home::new("runint");
    // A long scenario: its only expectation is hours of incident time away.
    let text = TIP.replace("time_scale = 3600", "time_scale = 60");
    let file = write(&home, "long.toml", &text);
    let dir = home.dir.join("report");
    let mut child = home
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
    let pids: Vec<u32> = status["frontends"]
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
    cascade_tests::assert_gone(&pids, &run_id);
}
