//! Nothing leaks: no process and no cgroup survive `cascade down`, Ctrl-C of
//! a foreground `cascade up`, SIGKILL of the supervisor, or a failing test.

use std::time::Duration;

use cascade::state::MapState;
use cascade_tests::status::{all_maps, run_id};
use cascade_tests::{Fleet, Home, Signal, eventually, kinesis_args, signal, wait_exit};

fn started(tag: &str) -> (Fleet, String) {
    let fleet = Fleet::kinesis(tag, 3, 16);
    fleet.wait_status("3 front-ends observed", Duration::from_secs(20), |s| {
        all_maps(s, 3, MapState::Ready)
    });
    let run_id = fleet.run_id();
    assert!(!fleet.seen_pids.borrow().is_empty());
    (fleet, run_id)
}

#[test]
fn down_stops_everything() {
    let (fleet, run_id) = started("down");
    let out = fleet.ok(&["down"]);
    assert!(out.contains("stopped"), "{out}");
    fleet.assert_nothing_left(&run_id);
    let again = fleet.ok(&["down"]);
    assert!(again.contains("nothing is running"), "{again}");
}

#[test]
fn sigkill_of_the_supervisor_takes_the_children_and_cgroups_with_it() {
    let (fleet, run_id) = started("sigkill");
    let pid = fleet.home.supervisor_pid().expect("supervisor pid");
    signal(pid, Signal::SIGKILL);
    fleet.assert_nothing_left(&run_id);
}

#[test]
fn ctrl_c_of_a_foreground_up_stops_everything() {
    let home = Home::new("ctrlc");
    let mut args = vec!["up".to_owned()];
    args.extend(kinesis_args(2, 16));
    let mut child = home
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start cascade up");
    let fleet = Fleet::watching(home);
    let s = eventually(
        "the foreground fleet to be up",
        Duration::from_secs(30),
        || {
            if fleet.home.supervisor_pid().is_none() {
                return Err("no supervisor.json yet".into());
            }
            let s = fleet.try_status()?;
            if s.frontends.len() == 2 {
                Ok(s)
            } else {
                Err(cascade_tests::status::pretty(&s))
            }
        },
    );
    let run_id = run_id(&s);
    signal(child.id(), Signal::SIGINT);
    let status = wait_exit(
        &mut child,
        "cascade up to exit after SIGINT",
        Duration::from_secs(20),
    );
    assert!(
        status.success(),
        "a Ctrl-C shutdown is a clean exit: {status}"
    );
    fleet.assert_nothing_left(&run_id);
}

#[test]
fn a_failing_test_leaves_nothing_behind() {
    let mut leftovers = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (fleet, run_id) = started("panic");
        leftovers = Some((fleet.seen_pids.borrow().clone(), run_id));
        panic!("deliberate failure with a fleet up");
    }));
    assert!(result.is_err());
    let (pids, run_id) = leftovers.expect("the fleet was up before the panic");
    cascade_tests::assert_gone(&pids, &run_id);
}

/// Crash safety: the supervisor SIGKILLed while a `pause` (a SIGSTOPped
/// front-end), a `thread-limit` (a rewritten `pids.max`) and a `partition`
/// are in force leaves no process frozen or running and no cgroup, and a new
/// `up` in the same home starts cleanly.
#[test]
fn sigkill_of_the_supervisor_with_faults_active_leaves_nothing_and_up_starts_again() {
    let fleet = Fleet::up(
        "crash",
        &[
            "--services",
            "cognito",
            "--frontends",
            "3",
            "--thread-limit",
            "16",
            "--time-scale",
            "3600",
            "--traffic-rate",
            "2",
        ],
    );
    fleet.wait_status("3 ready shard maps", Duration::from_secs(30), |s| {
        all_maps(s, 3, MapState::Ready)
    });
    let run_id = fleet.run_id();
    // The partition first: a paused front-end cannot take a gRPC fault.
    fleet.ok(&["inject", "partition", "--between", "cognito", "kinesis"]);
    fleet.ok(&[
        "inject",
        "thread-limit",
        "--target",
        "kinesis-frontend-1",
        "--limit",
        "6",
    ]);
    fleet.ok(&["inject", "pause", "--target", "kinesis-frontend-0"]);
    let faults = fleet.ok(&["faults"]);
    for kind in ["pause", "thread-limit", "partition"] {
        assert!(faults.contains(kind), "{kind} in force: {faults}");
    }
    let status = fleet.status();
    let paused = status.frontends[0].pid;
    let stat = std::fs::read_to_string(format!("/proc/{paused}/stat")).expect("stat");
    assert!(
        stat.rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('T')),
        "kinesis-frontend-0 is stopped: {stat}"
    );

    let pid = fleet.home.supervisor_pid().expect("supervisor pid");
    signal(pid, Signal::SIGKILL);
    fleet.assert_nothing_left(&run_id);

    // The same home: the stale supervisor.json is no obstacle.
    let again = fleet.home.run(&[
        "up",
        "--detach",
        "--services",
        "cognito",
        "--frontends",
        "2",
        "--thread-limit",
        "16",
        "--time-scale",
        "3600",
    ]);
    assert!(
        again.status.success(),
        "{}",
        cascade_tests::describe(&again)
    );
    let s = fleet.wait_status("the new fleet ready", Duration::from_secs(30), |s| {
        all_maps(s, 2, MapState::Ready)
    });
    assert_ne!(run_id, cascade_tests::status::run_id(&s), "a new run");
    let faults = fleet.ok(&["faults"]);
    assert!(!faults.contains("pause"), "no fault carried over: {faults}");
    fleet.ok(&["down"]);
}
