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
