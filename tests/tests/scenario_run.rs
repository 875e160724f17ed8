//! `cascade run`: a scenario drives a real topology on the incident clock,
//! judges its expectations, and leaves a journal and a report, even when
//! interrupted. The exit code is 0 only when every expectation held.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cascade::engine::compare::{CompareDoc, VariantResult};
use cascade::engine::conditions::ONSET_RESOLUTION_S;
use cascade::engine::journal::JournalEntry;
use cascade::engine::report::{EventKind, Report, ServiceImpact};
use cascade::state::Verdict;
use cascade_tests::outputs::{journal, report, try_compare, try_journal};
use cascade_tests::status::run_id;
use cascade_tests::{Home, describe, eventually, wait_exit};

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
time_scale = 1800
services = ["kinesis"]

[[step]]
at = "02:35"
do = "add-capacity"
count = 2

[[expect]]
name = "every shard-map unusable"
by = "+6h"
for = "30m"
check = "shard-maps"
all = "unusable"

[[expect]]
name = "kinesis impaired"
by = "+6h"
for = "30m"
check = "health"
service = "kinesis"
is = "impaired"
"#;

/// Runs `cascade run <file> --report <dir> --quiet [extra]` in `home`.
fn run(home: &Home, file: &str, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run",
        file,
        "--report",
        dir.to_str().expect("utf-8"),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    home.run(&args)
}

/// Whether the last journal entry is the verdict `verdict`.
fn ends_with_verdict(dir: &Path, verdict: Verdict) -> bool {
    journal(dir)
        .last()
        .is_some_and(|e| e.kind == EventKind::Verdict && e.detail.contains(verdict.as_str()))
}

#[test]
fn a_scenario_whose_expectations_hold_passes_with_a_journal_and_report() {
    let home = Home::new("runpass");
    let file = write(&home, "tip.toml", TIP);
    let dir = home.dir.join("report");
    let out = run(&home, &file, &dir, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert!(
        r.expectations.len() == 2 && r.expectations.iter().all(|e| e.held),
        "{:?}",
        r.expectations
    );
    assert!(impaired_at(&r, "kinesis").is_some(), "{:?}", r.services);
    // Every line is a journal entry, and the last is the verdict.
    assert!(
        ends_with_verdict(&dir, Verdict::Pass),
        "{:?}",
        journal(&dir)
    );
}

/// When service `svc` was first impaired in a report, if it was.
fn impaired_at(r: &Report, svc: &str) -> Option<f64> {
    r.services.get(svc).and_then(|x| x.impaired_at_s)
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
    let out = run(&home, &file, &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let r = report(&dir);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    assert!(
        !r.expectations.is_empty() && r.expectations.iter().all(|e| !e.held),
        "{:?}",
        r.expectations
    );
}

/// A `cascade run` in progress, with what its leak check needs.
struct LongRun {
    child: std::process::Child,
    dir: PathBuf,
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
    let status = sup_home.status();
    let pids = status
        .frontends
        .iter()
        .map(|f| f.pid)
        .chain(std::iter::once(pid))
        .collect();
    let run_id = run_id(&status);
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
    let text = TIP.replace("time_scale = 1800", "time_scale = 60").replace(
        "[[step]]",
        "[[step]]\nat = \"02:31\"\ndo = \"inject\"\nfault = { kind = \"pause\", target = \"kinesis-frontend-0\" }\n\n[[step]]",
    );
    let LongRun {
        mut child,
        dir,
        pids,
        run_id,
    } = start_long_run(&home, &text);
    let paused =
        |entries: &[JournalEntry]| entries.iter().any(|e| e.detail.contains("inject pause"));
    eventually("the pause fault in force", Duration::from_secs(30), || {
        let entries = try_journal(&dir)?;
        if paused(&entries) {
            Ok(())
        } else {
            Err(format!("{entries:#?}"))
        }
    });
    cascade_tests::signal(child.id(), cascade_tests::Signal::SIGINT);
    let exit = wait_exit(
        &mut child,
        "cascade run to stop after Ctrl-C",
        Duration::from_secs(60),
    );
    assert_eq!(exit.code(), Some(130), "an interrupted run exits 130");
    let entries = journal(&dir);
    assert!(
        entries.iter().any(|e| e.kind == EventKind::Interrupted)
            && ends_with_verdict(&dir, Verdict::Aborted),
        "{entries:#?}"
    );
    assert_eq!(report(&dir).verdict, Verdict::Aborted);
    assert!(
        paused(&entries),
        "the pause fault was in force when Ctrl-C came: {entries:#?}"
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
    let text = TIP.replace("time_scale = 1800", "time_scale = 60");
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

/// Runs `cascade compare`, which must exit 0; returns compare.json and the
/// command's output.
fn compare(home: &Home, scenario: &str, variants: &str) -> (CompareDoc, String) {
    let dir = home.dir.join("compare");
    let out = home.run(&[
        "compare",
        scenario,
        "--variants",
        variants,
        "--report",
        dir.to_str().expect("utf-8"),
    ]);
    let described = describe(&out);
    assert_eq!(out.status.code(), Some(0), "{described}");
    let doc = try_compare(&dir).unwrap_or_else(|e| panic!("{e}\n{described}"));
    (doc, described)
}

/// Variant `name`'s result in a compare.json; panics naming the variants there.
fn variant<'a>(doc: &'a CompareDoc, name: &str) -> &'a VariantResult {
    doc.variants.get(name).unwrap_or_else(|| {
        panic!(
            "no variant {name} in compare.json; it has {:?}",
            doc.variants.keys().collect::<Vec<_>>()
        )
    })
}

/// Service `svc`'s impact in a variant; panics naming the services there.
fn impact<'a>(v: &'a VariantResult, svc: &str) -> &'a ServiceImpact {
    v.services.get(svc).unwrap_or_else(|| {
        panic!(
            "the variant reports no service {svc}; it has {:?}",
            v.services.keys().collect::<Vec<_>>()
        )
    })
}

/// The shipped postmortem end to end, and the Cognito remediation beside it:
/// the baseline run holds every expectation (Cognito impaired among them),
/// shows every timed event of the postmortem, and recovers Kinesis
/// gradually; with `cognito-fix` Cognito is never impaired.
#[test]
fn nov_25_2020_passes_end_to_end_and_cognito_fix_keeps_cognito_unimpaired() {
    let home = Home::new("nov25");
    let (doc, out) = compare(&home, "nov-25-2020", "baseline,cognito-fix");
    let base = variant(&doc, "baseline");
    let fixed = variant(&doc, "cognito-fix");
    assert_eq!(
        base.verdict,
        Verdict::Pass,
        "baseline must pass end to end: {out}\nexpectations: {:#?}",
        base.expectations
    );
    assert!(
        impact(base, "cognito").impaired_at_s.is_some(),
        "baseline impairs Cognito: {doc:#?}"
    );
    assert!(
        impact(fixed, "cognito").impaired_at_s.is_none(),
        "cognito-fix keeps Cognito unimpaired: {:?}",
        impact(fixed, "cognito")
    );
    assert!(
        impact(fixed, "kinesis").impaired_at_s.is_some(),
        "Kinesis still fails with cognito-fix (it fixes Cognito only): {doc:#?}"
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
    let r = report(&home.dir.join("compare").join("baseline"));
    every_postmortem_event_is_shown(&r);
    kinesis_recovers_gradually(&r);
    the_cascade_graph_is_drawn_from_evidence(&r);
    let html = std::fs::read_to_string(home.dir.join("compare/baseline/report.html"))
        .expect("report.html");
    the_stocks_fill_and_are_charted(&r, &html);
}

/// The report keeps the stocks over the run: the fleet's peer threads
/// reach the room its limits leave, Cognito's access-log buffer reaches its
/// capacity (what blocks sign-ins), and report.html charts every series.
fn the_stocks_fill_and_are_charted(r: &Report, html: &str) {
    let full = |service: &str, name: &str| -> Option<f64> {
        let s = r
            .stocks
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {service} {name} stock in {:#?}", r.stocks));
        s.samples
            .iter()
            .find(|x| cascade::stocks::is_full(x.level, x.capacity))
            .map(|x| x.t_s)
    };
    let threads = full("kinesis", "peer threads");
    assert!(
        threads.is_some(),
        "the peer threads never reached the limits' room: {:#?}",
        r.stocks
    );
    let buffer = full("cognito", "access-log buffer");
    assert!(
        buffer.is_some(),
        "Cognito's access-log buffer never filled: {:#?}",
        r.stocks
    );
    for s in &r.stocks {
        let tag = format!("data-stock=\"{}/{}\"", s.service, s.name);
        assert!(html.contains(&tag), "report.html has no chart {tag}");
    }
}

/// The fidelity table lists all 16 timed events of the postmortem, each
/// shown by the replay.
fn every_postmortem_event_is_shown(r: &Report) {
    let f = r
        .fidelity
        .as_ref()
        .expect("nov-25-2020 reports its fidelity");
    assert_eq!(f.events.len(), 16, "{f:#?}");
    let missing: Vec<&str> = f
        .events
        .iter()
        .filter(|e| e.replay_at.is_none())
        .map(|e| e.event.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "events the replay never showed: {missing:?}\n{f:#?}"
    );
}

/// Between the first restarted front-end and full recovery, the Kinesis
/// error rate passes through at least three distinct intermediate levels
/// (tenths of the calls failing), from real overload of the servers up.
fn kinesis_recovers_gradually(r: &Report) {
    let first = r
        .events
        .iter()
        .find(|e| e.kind == EventKind::Restart && e.detail.starts_with("restarted"))
        .map(|e| e.t_s)
        .expect("a restarted batch in the journal");
    let full = r.services["kinesis"]
        .recovered_at_s
        .expect("Kinesis recovered by the end");
    let levels: std::collections::BTreeSet<i64> = r.timeline["kinesis"]
        .iter()
        .filter(|s| s.t_s >= first && s.t_s <= full)
        .filter(|s| s.error_rate > 0.05 && s.error_rate < 0.95)
        .map(|s| (s.error_rate * 10.0).round() as i64)
        .collect();
    assert!(
        levels.len() >= 3,
        "Kinesis's error rate from the first restarted batch ({first} s) to full recovery ({full} s) took only the levels {levels:?} (tenths): {:?}",
        r.timeline["kinesis"]
    );
}

/// Edges carry the failure only on evidence: the graph includes
/// EventBridge -> Lambda and Cognito -> SHD, and every carried edge has
/// the downstream's cause naming the upstream.
fn the_cascade_graph_is_drawn_from_evidence(r: &Report) {
    let has = |from: &str, to: &str| r.cascade.iter().any(|e| e.from == from && e.to == to);
    assert!(
        has("eventbridge", "lambda") && has("cognito", "shd"),
        "{:#?}",
        r.cascade
    );
    for e in r.cascade.iter().filter(|e| e.carried) {
        let evidence = e.evidence.as_deref().unwrap_or_default().to_lowercase();
        assert!(evidence.contains(&e.from), "{e:?}");
    }
    let carried = |from: &str, to: &str| {
        r.cascade
            .iter()
            .any(|e| e.from == from && e.to == to && e.carried)
    };
    assert!(
        carried("kinesis", "cognito") && carried("cognito", "shd"),
        "{:#?}",
        r.cascade
    );
    assert!(
        !carried("cloudwatch", "ecs"),
        "ECS's customer failures never name CloudWatch: {:#?}",
        r.cascade
    );
}

/// Every mechanism expectation fails when its mechanism is switched off,
/// with the scenario's expectations as they are (each variant stops at
/// 08:30, after the mechanisms' deadlines).
#[test]
fn each_mechanism_check_fails_when_its_mechanism_is_switched_off() {
    let home = Home::new("mutants");
    let dir = home.dir.join("compare");
    let out = home.run(&[
        "compare",
        "nov-25-2020",
        "--variants",
        "cognito-fix,lambda-bounded-agent,cloudwatch-local-buffer",
        "--until",
        "08:30",
        "--report",
        dir.to_str().expect("utf-8"),
    ]);
    let described = describe(&out);
    assert_eq!(out.status.code(), Some(0), "{described}");
    let doc = try_compare(&dir).unwrap_or_else(|e| panic!("{e}\n{described}"));
    for (v, expectation) in [
        (
            "cognito-fix",
            "Cognito impaired (handlers blocked on the access-log buffer)",
        ),
        (
            "lambda-bounded-agent",
            "Lambda impaired (invocations refused for memory)",
        ),
        (
            "cloudwatch-local-buffer",
            "CloudWatch impaired (alarms in INSUFFICIENT_DATA)",
        ),
    ] {
        let result = variant(&doc, v);
        assert_eq!(result.verdict, Verdict::Fail, "{v}: the run exits 1");
        let x = result
            .expectations
            .iter()
            .find(|x| x.name == expectation)
            .unwrap_or_else(|| {
                panic!(
                    "{v}: no expectation {expectation:?}: {:#?}",
                    result.expectations
                )
            });
        assert!(
            !x.held,
            "{v}: {expectation} must fail without its mechanism: {x:?}"
        );
        assert!(
            !x.detail.contains("not judged"),
            "{v}: judged by its deadline, not cut off: {x:?}"
        );
    }
}

/// The recovery hazard: restarting the whole fleet at once starves request
/// handling and recovery stalls; booting from the metadata store removes it.
#[test]
fn fast_restart_stalls_and_metadata_bootstrap_removes_the_hazard() {
    let home = Home::new("fastrestart");
    let (doc, out) = compare(&home, "fast-restart", "baseline,metadata-bootstrap");
    let base = variant(&doc, "baseline");
    assert_eq!(
        base.verdict,
        Verdict::Pass,
        "fast-restart's expectations (removals, stalled recovery) hold: {out}\n{doc:#?}"
    );
    let fixed = variant(&doc, "metadata-bootstrap");
    assert!(
        fixed
            .expectations
            .iter()
            .any(|e| e.name.starts_with("recovery stalls") && !e.held),
        "with metadata-store bootstrap the fleet does not stall: {:#?}",
        fixed.expectations
    );
    assert!(
        impact(fixed, "kinesis").recovered_at_s.is_some(),
        "with metadata-store bootstrap Kinesis recovers after the same restart: {doc:#?}"
    );
    let entries = journal(&home.dir.join("compare").join("metadata-bootstrap"));
    assert!(
        !entries
            .iter()
            .any(|e| e.detail.contains("judged unhealthy: removed")),
        "no front-end is judged unhealthy with metadata-store bootstrap: {entries:#?}"
    );
}

/// Two whole replays with the same seed impair the same services in the
/// same order (onsets less than one observation interval apart are ties)
/// and agree on the fidelity figures within one observation interval.
#[test]
fn the_same_seed_gives_the_same_impaired_order_and_fidelity() {
    let home = Home::new("seeds");
    let mut runs = Vec::new();
    for n in 0..2 {
        let dir = home.dir.join(format!("run{n}"));
        let out = home.run(&[
            "run",
            "nov-25-2020",
            "--report",
            dir.to_str().expect("utf-8"),
            "--quiet",
            "--seed",
            "42",
        ]);
        assert!(out.status.code().is_some(), "{}", describe(&out));
        runs.push(report(&dir));
    }
    assert_eq!(runs[0].seed, 42);
    let onsets = |r: &Report| -> Vec<(String, f64)> {
        r.services
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.impaired_at_s?)))
            .collect()
    };
    let (a, b) = (onsets(&runs[0]), onsets(&runs[1]));
    let names = |v: &[(String, f64)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&b),
        "same impaired services:\n{a:?}\n{b:?}"
    );
    let tie = ONSET_RESOLUTION_S;
    let at = |v: &[(String, f64)], s: &str| v.iter().find(|x| x.0 == s).map(|x| x.1);
    for (x, tx) in &a {
        for (y, ty) in &a {
            if let (Some(bx), Some(by)) = (at(&b, x), at(&b, y))
                && tx + tie <= *ty
            {
                assert!(
                    bx < by + tie,
                    "{x} was impaired before {y} in the first run but after it in the second:\n{a:?}\n{b:?}"
                );
            }
        }
    }
    // One observation interval, in incident minutes.
    let interval_min = ONSET_RESOLUTION_S * runs[0].time_scale / 60.0;
    let (fa, fb) = (
        runs[0].fidelity.as_ref().expect("fidelity"),
        runs[1].fidelity.as_ref().expect("fidelity"),
    );
    assert!(
        (fa.median_abs_deviation_min - fb.median_abs_deviation_min).abs() <= interval_min,
        "median deviation {} vs {} (one observation interval is {interval_min} min)",
        fa.median_abs_deviation_min,
        fb.median_abs_deviation_min
    );
    assert!(
        fa.order_inversions.abs_diff(fb.order_inversions) <= 1,
        "order inversions {} vs {}",
        fa.order_inversions,
        fb.order_inversions
    );
}
