//! EventBridge loses and repeats nothing across a restart (issue 14, found
//! by the soak): workflow events ECS published and EventBridge accepted
//! while delivery was blocked, some read from the bus and queued, some not
//! read yet, are each delivered exactly once after `inject restart` (the
//! supervisor's restart path), with ECS's rule (created by PutRule at ECS's
//! start) still in force. Before the journal, the restarted EventBridge had
//! lost that rule and every task stayed in PROVISIONING; reading the bus
//! again from the start also delivered old events a second time.

use std::time::Duration;

use cascade::status::Status;
use cascade_proto::ecs::RunTaskRequest;
use cascade_proto::ecs::ecs_client::EcsClient;
use cascade_tests::Fleet;
use cascade_tests::status::{all_serving, full_mesh, pretty, try_gauge, try_gauge_u64};

const SETTLE: Duration = Duration::from_secs(60);
/// Tasks run while delivery is blocked, in each of the two phases.
const TASKS: u64 = 15;

fn gauge(s: &Status, svc: &str, key: &str) -> Result<u64, String> {
    try_gauge_u64(s, svc, key)
}

#[test]
fn a_restarted_eventbridge_delivers_what_it_had_accepted_exactly_once() {
    let fleet = Fleet::up(
        "eb-restart",
        &[
            "--services",
            "cloudwatch,eventbridge,ecs",
            "--frontends",
            "3",
            "--thread-limit",
            "32",
            "--time-scale",
            "3600",
            "--traffic-rate",
            "0",
        ],
    );
    let s = fleet.wait_status("every service serving and a full mesh", SETTLE, |s| {
        all_serving(s) && full_mesh(s, 3)
    });
    let ecs_addr = s
        .service("ecs")
        .and_then(|x| x.instances.first())
        .map(|i| i.addr.clone())
        .expect("ecs in status");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _in_rt = rt.enter();
    let ch =
        cascade_core::clients::lazy_channel(&ecs_addr, Duration::from_secs(5)).expect("channel");
    let mut ecs = EcsClient::new(ch);
    let mut run_tasks = |n: u64| {
        for _ in 0..n {
            rt.block_on(ecs.run_task(RunTaskRequest {
                task_definition: "batch:1".into(),
                service: String::new(),
            }))
            .expect("RunTask");
        }
    };
    // ECS's rule is in place (PutRule at ECS's start), and ECS settles.
    fleet.wait_until("ECS's rule installed, nothing pending", SETTLE, |s| {
        Ok(gauge(s, "eventbridge", "rules")? >= 1
            && gauge(s, "ecs", "tasks_provisioning")? == 0
            && gauge(s, "ecs", "outbox_pending")? == 0)
    });

    // Phase 1: ECS refuses deliveries, so accepted events are read from the
    // bus and queue up in EventBridge.
    fleet.ok(&[
        "inject",
        "error",
        "--target",
        "ecs",
        "--method",
        "Deliver",
        "--code",
        "UNAVAILABLE",
    ]);
    let before = fleet.status();
    let queued0 = gauge(&before, "eventbridge", "pending_deliveries").unwrap_or(0);
    run_tasks(TASKS);
    fleet.wait_until("phase 1's events queued in EventBridge", SETTLE, |s| {
        Ok(gauge(s, "eventbridge", "pending_deliveries")? >= queued0 + TASKS)
    });

    // Phase 2: the bus cannot be read either, so accepted events stay on it.
    fleet.ok(&[
        "inject",
        "error",
        "--target",
        "kinesis-frontend",
        "--method",
        "GetRecords",
        "--code",
        "UNAVAILABLE",
    ]);
    let put_before = gauge(&fleet.status(), "eventbridge", "events_put").expect("events_put");
    run_tasks(TASKS);
    let accepted = fleet.wait_until("phase 2's events accepted, unread", SETTLE, |s| {
        Ok(gauge(s, "eventbridge", "events_put")? >= put_before + TASKS
            && gauge(s, "ecs", "outbox_pending")? == 0)
    });
    let backlog = gauge(&accepted, "eventbridge", "backlog_events").expect("backlog_events");
    assert!(
        backlog >= 2 * TASKS,
        "every accepted, undelivered event is in the backlog: {}",
        pretty(&accepted)
    );
    let old_pid = accepted
        .service("eventbridge")
        .and_then(|x| x.instances.first())
        .map(|i| i.pid)
        .expect("eventbridge pid");

    fleet.ok(&["inject", "restart", "--target", "eventbridge"]);
    // The new process (its own pid, counters from zero) recovered the
    // backlog from its journal, and ECS's rule with it.
    fleet.wait_until(
        "the restarted EventBridge recovered its backlog and ECS's rule",
        SETTLE,
        |s| {
            let inst = s
                .service("eventbridge")
                .and_then(|x| x.instances.first())
                .ok_or("no eventbridge instance")?;
            Ok(inst.pid != old_pid
                && gauge(s, "eventbridge", "events_put")? == 0
                && gauge(s, "eventbridge", "events_recovered")? >= backlog
                && gauge(s, "eventbridge", "rules")? >= 1)
        },
    );

    // Unblock: every accepted event reaches ECS, none twice.
    fleet.ok(&["clear"]);
    let done = fleet.wait_until(
        "every workflow event delivered: no task waiting, backlog empty",
        SETTLE,
        |s| {
            Ok(gauge(s, "ecs", "tasks_provisioning")? == 0
                && gauge(s, "ecs", "tasks_deprovisioning")? == 0
                && gauge(s, "ecs", "outbox_pending")? == 0
                && gauge(s, "eventbridge", "backlog_events")? == 0
                && gauge(s, "ecs", "transitions_applied")? == gauge(s, "ecs", "events_published")?
                && try_gauge(s, "ecs", "cause")?.is_empty())
        },
    );
    let running = gauge(&done, "ecs", "tasks_running").expect("running");
    assert!(running >= 2 * TASKS, "{}", pretty(&done));
    // Nothing delivered twice, now or over the next seconds (a bus read
    // again from the start would deliver old events again).
    let window = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = fleet.status();
        let dup = gauge(&s, "ecs", "unchanged_deliveries").expect("unchanged_deliveries");
        let published = gauge(&s, "ecs", "events_published").expect("events_published");
        let applied = gauge(&s, "ecs", "transitions_applied").expect("transitions_applied");
        // ECS's own scaling may publish more meanwhile: applied trails.
        assert!(
            dup == 0 && applied <= published,
            "exactly once broken: {dup} duplicate deliveries, {applied} transitions for {published} events published: {}",
            pretty(&s)
        );
        if std::time::Instant::now() >= window {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
