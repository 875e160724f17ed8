//! The judge on synthetic observation series: `for` and `throughout`,
//! ties and inversions in orders, and a missing gauge.

use super::*;
use crate::scenario::{HealthIs, MapIs, OrderItem};
use crate::state::{Health, MapState};
use crate::status::{FrontendEntry, InstanceEntry, Mode, ServiceEntry, ThreadLimit};

const CLOCK: IncidentClock = IncidentClock {
    start: 9000,
    scale: 360.0,
};

fn status(kinesis: Health, maps: &[MapState]) -> Status {
    Status {
        mode: Mode::Local,
        thread_limit: ThreadLimit {
            limit: Some(16),
            enforcement: "cgroup-v2".into(),
        },
        frontends: maps
            .iter()
            .enumerate()
            .map(|(i, m)| FrontendEntry {
                name: format!("kinesis-frontend-{i}"),
                shard_map: *m,
                ..Default::default()
            })
            .collect(),
        services: vec![ServiceEntry {
            name: "kinesis".into(),
            health: kinesis,
            ..Default::default()
        }],
        run_dir: String::new(),
        time_scale: 360.0,
        traffic_rate: 0.0,
        supervisor_pid: 1,
        alarms: vec![],
        restart_removals: 0,
        endpoints: Default::default(),
    }
}

fn with_cognito(mut st: Status, info: &[(&str, &str)]) -> Status {
    st.services.push(ServiceEntry {
        name: "cognito".into(),
        health: Health::Down,
        instances: vec![InstanceEntry {
            name: "cognito-0".into(),
            reachable: true,
            info: info
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    st
}

fn expect(hold: (&str, bool, bool), by: &str, condition: Condition) -> Expectation {
    Expectation {
        name: "x".into(),
        by: by.into(),
        after: None,
        throughout: hold.1,
        hold_for: (!hold.0.is_empty()).then(|| hold.0.to_owned()),
        once: hold.2,
        condition,
    }
}

fn kinesis_is(h: Health) -> Condition {
    Condition::Health {
        service: "kinesis".into(),
        is: HealthIs::Is(h),
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn once_holds_at_one_observation_only_when_written_so() {
    let mut j = Judge::new(
        &[expect(
            ("", false, true),
            "03:30",
            kinesis_is(Health::Serving),
        )],
        CLOCK,
    );
    let d = j.observe(&status(Health::Serving, &[]), &Seen::default(), secs(1.0));
    assert_eq!(d.len(), 1);
    assert!(
        d[0].1.0 && d[0].1.1.starts_with("held at 02:36:00"),
        "{:?}",
        d
    );
    let unwritten = expect(("", false, false), "03:30", kinesis_is(Health::Serving));
    assert!(
        unwritten.hold().is_err_and(|e| e.contains("for = ")),
        "a state check must say how long"
    );
}

#[test]
fn for_needs_an_unbroken_run_of_that_length() {
    // 20 incident minutes = 3.33 s of wall time at 360x.
    let mut j = Judge::new(
        &[expect(
            ("20m", false, false),
            "04:30",
            kinesis_is(Health::Down),
        )],
        CLOCK,
    );
    let seen = Seen::default();
    let down = status(Health::Down, &[]);
    let up = status(Health::Serving, &[]);
    assert!(j.observe(&down, &seen, secs(1.0)).is_empty());
    assert!(j.observe(&down, &seen, secs(3.0)).is_empty());
    assert!(
        j.observe(&up, &seen, secs(3.5)).is_empty(),
        "a break resets the run"
    );
    assert!(j.observe(&down, &seen, secs(4.0)).is_empty());
    assert!(
        j.observe(&down, &seen, secs(6.0)).is_empty(),
        "2 s is not 20m"
    );
    let d = j.observe(&down, &seen, secs(7.5));
    assert_eq!(d.len(), 1);
    assert!(
        d[0].1.0 && d[0].1.1.contains("without a break from 02:54:00"),
        "{:?}",
        d
    );
}

#[test]
fn for_fails_at_the_deadline_with_the_longest_run() {
    let mut j = Judge::new(
        &[expect(
            ("1h", false, false),
            "03:00",
            kinesis_is(Health::Down),
        )],
        CLOCK,
    );
    let seen = Seen::default();
    assert!(
        j.observe(&status(Health::Down, &[]), &seen, secs(1.0))
            .is_empty()
    );
    assert!(
        j.observe(&status(Health::Down, &[]), &seen, secs(3.0))
            .is_empty()
    );
    let d = j.observe(&status(Health::Serving, &[]), &seen, secs(5.1));
    assert!(
        !d[0].1.0
            && d[0]
                .1
                .1
                .contains("held at most 12m without a break, 1h00m needed"),
        "{:?}",
        d
    );
}

#[test]
fn throughout_fails_at_the_first_break_and_holds_at_the_deadline() {
    let maps = Condition::ShardMaps {
        all: MapIs(MapState::Unusable),
    };
    let x = expect(("", true, false), "03:00", maps);
    let mut j = Judge::new(std::slice::from_ref(&x), CLOCK);
    let seen = Seen::default();
    let bad = status(Health::Down, &[MapState::Unusable, MapState::Unusable]);
    assert!(j.observe(&bad, &seen, secs(1.0)).is_empty());
    let d = j.observe(&bad, &seen, secs(5.1));
    assert!(d[0].1.0, "{:?}", d);
    let mut j = Judge::new(&[x], CLOCK);
    let d = j.observe(
        &status(Health::Down, &[MapState::Unusable, MapState::Ready]),
        &seen,
        secs(1.0),
    );
    assert!(
        !d[0].1.0 && d[0].1.1.contains("1 of 2 shard maps unusable"),
        "{:?}",
        d
    );
}

fn order(items: Vec<OrderItem>) -> Expectation {
    expect(
        ("", false, false),
        "08:00",
        Condition::ImpairedInOrder { services: items },
    )
}

fn seen_with(onsets: &[(&str, f64)]) -> Seen {
    Seen {
        impaired: onsets.iter().map(|(s, t)| ((*s).to_owned(), *t)).collect(),
        clock: Some(CLOCK),
        ..Default::default()
    }
}

#[test]
fn ties_are_ties_never_an_order() {
    let one = |s: &str| OrderItem::One(s.into());
    let st = status(Health::Down, &[]);
    let mut j = Judge::new(&[order(vec![one("kinesis"), one("cloudwatch")])], CLOCK);
    let d = j.observe(
        &st,
        &seen_with(&[("kinesis", 10.0), ("cloudwatch", 10.4)]),
        secs(11.0),
    );
    assert!(
        !d[0].1.0 && d[0].1.1.contains("a tie, not an order"),
        "{:?}",
        d
    );

    let mut j = Judge::new(&[order(vec![one("kinesis"), one("cognito")])], CLOCK);
    let d = j.observe(
        &st,
        &seen_with(&[("kinesis", 10.0), ("cognito", 16.0)]),
        secs(17.0),
    );
    assert!(
        d[0].1.0
            && d[0]
                .1
                .1
                .contains("kinesis at 03:30:00, then cognito at 04:06:00"),
        "{:?}",
        d
    );

    let together = OrderItem::Together(vec!["kinesis".into(), "cloudwatch".into()]);
    let mut j = Judge::new(&[order(vec![together.clone(), one("lambda")])], CLOCK);
    let d = j.observe(
        &st,
        &seen_with(&[("kinesis", 10.0), ("cloudwatch", 10.4), ("lambda", 14.0)]),
        secs(15.0),
    );
    assert!(
        d[0].1.0,
        "listed together, a tie is what was asked: {:?}",
        d
    );
    let mut j = Judge::new(&[order(vec![together, one("lambda")])], CLOCK);
    let d = j.observe(
        &st,
        &seen_with(&[("kinesis", 10.0), ("cloudwatch", 12.0)]),
        secs(13.0),
    );
    assert!(
        !d[0].1.0 && d[0].1.1.contains("not impaired together"),
        "{:?}",
        d
    );
}

#[test]
fn an_inversion_fails_as_soon_as_it_is_seen() {
    let one = |s: &str| OrderItem::One(s.into());
    let mut j = Judge::new(
        &[order(vec![one("kinesis"), one("cognito"), one("lambda")])],
        CLOCK,
    );
    let st = status(Health::Down, &[]);
    assert!(
        j.observe(&st, &seen_with(&[("kinesis", 10.0)]), secs(11.0))
            .is_empty()
    );
    let d = j.observe(
        &st,
        &seen_with(&[("kinesis", 10.0), ("lambda", 12.0)]),
        secs(12.5),
    );
    assert!(
        !d[0].1.0 && d[0].1.1.contains("lambda was impaired before cognito"),
        "{:?}",
        d
    );
}

fn blocked(at_least: f64) -> Condition {
    Condition::Gauge {
        service: "cognito".into(),
        gauge: "blocked_handlers".into(),
        at_least: Some(at_least),
        at_most: None,
        equals: None,
        differs: None,
        rising: false,
    }
}

#[test]
fn a_missing_gauge_fails_the_check() {
    let mut j = Judge::new(&[expect(("", false, true), "08:00", blocked(1.0))], CLOCK);
    let st = with_cognito(status(Health::Down, &[]), &[("buffer_bytes", "8192")]);
    let d = j.observe(&st, &Seen::default(), secs(1.0));
    assert!(
        !d[0].1.0
            && d[0]
                .1
                .1
                .contains("gauge blocked_handlers missing from cognito-0"),
        "{:?}",
        d
    );
}

#[test]
fn a_mechanism_check_reads_the_gauge_beside_the_symptom() {
    let both = Condition::All {
        of: vec![
            Condition::Health {
                service: "cognito".into(),
                is: HealthIs::Impaired,
            },
            blocked(1.0),
        ],
    };
    let mut j = Judge::new(&[expect(("", false, true), "08:00", both)], CLOCK);
    let idle = with_cognito(status(Health::Down, &[]), &[("blocked_handlers", "0")]);
    assert!(
        j.observe(&idle, &Seen::default(), secs(1.0)).is_empty(),
        "impaired without the mechanism is not enough"
    );
    let st = with_cognito(status(Health::Down, &[]), &[("blocked_handlers", "12")]);
    let d = j.observe(&st, &Seen::default(), secs(2.0));
    assert!(
        d[0].1.0 && d[0].1.1.contains("cognito blocked_handlers = 12"),
        "{:?}",
        d
    );
}

#[test]
fn a_rising_counter_needs_growth_over_the_window() {
    let refused = Condition::Gauge {
        service: "cognito".into(),
        gauge: "flush_failures".into(),
        at_least: None,
        at_most: None,
        equals: None,
        differs: None,
        rising: true,
    };
    let mut j = Judge::new(&[expect(("", false, true), "08:00", refused)], CLOCK);
    let mut seen = Seen::default();
    let st = |n: &str| with_cognito(status(Health::Down, &[]), &[("flush_failures", n)]);
    seen.remember(1.0, &st("3"));
    assert!(j.observe(&st("3"), &seen, secs(2.0)).is_empty());
    let d = j.observe(&st("9"), &seen, secs(3.0));
    assert!(d[0].1.0 && d[0].1.1.contains("rose from 3 to 9"), "{:?}", d);
}
