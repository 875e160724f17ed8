//! Generated hostile input for every parser a user's text reaches: scenario
//! files (random bytes and mutations of the shipped scenarios), fault specs,
//! clocks, durations and time scales. Nothing may panic or hang, and every
//! refusal must say where: a scenario error starts with `path:line:column`
//! (or the path, for errors about the whole file).
//!
//! Failures proptest finds are kept in `proptest-regressions/` beside this
//! file and replayed first on every run (the regression corpus).

use std::path::Path;
use std::time::Duration;

use cascade::clock::{self, IncidentClock};
use cascade::faults::FaultSpec;
use cascade::scenario;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const SHIPPED: [(&str, &str); 2] = [
    (
        "nov-25-2020.toml",
        include_str!("../../scenarios/nov-25-2020.toml"),
    ),
    (
        "fast-restart.toml",
        include_str!("../../scenarios/fast-restart.toml"),
    ),
];

/// Cases per property: bounded so CI stays fast (override with PROPTEST_CASES).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        // Tests run with the crate as working directory.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/hostile_input.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// One edit of a scenario's text.
#[derive(Debug, Clone)]
enum Mutation {
    /// Remove the bytes [at, at+len).
    Delete { at: usize, len: usize },
    /// Insert a string at a position.
    Insert { at: usize, text: String },
    /// Replace the value of the n-th `key = value` line.
    Value { line: usize, value: String },
    /// Duplicate the n-th line.
    DupLine { line: usize },
    /// Swap two lines.
    Swap { a: usize, b: usize },
}

/// Values a hostile or careless user might write in place of any value.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("18446744073709551615".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("1e308".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("\"+99999999999999999999h\"".to_string()),
        Just("\"+18446744073709551615s\"".to_string()),
        Just("\"99999999999999999999:00\"".to_string()),
        Just("\"47:59:59\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"1ns\"".to_string()),
        Just("\"5000000000000000h\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        Just("\"kinesis-frontend[5..2]\"".to_string()),
        Just("\"kinesis-frontend[0..18446744073709551615]\"".to_string()),
        "\"[ -~]{0,12}\"",
        (any::<i64>()).prop_map(|n| n.to_string()),
        (any::<f64>()).prop_map(|x| format!("{x:?}")),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), "[ -~\n\\[\\]=\"]{0,16}")
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), hostile_value()).prop_map(|(line, value)| Mutation::Value { line, value }),
        any::<usize>().prop_map(|line| Mutation::DupLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap { a, b }),
    ]
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match m {
        Mutation::Delete { at, len } => {
            let a = floor_char_boundary(text, at % (text.len() + 1));
            let b = floor_char_boundary(text, a + len);
            format!("{}{}", &text[..a], &text[b..])
        }
        Mutation::Insert { at, text: ins } => {
            let a = floor_char_boundary(text, at % (text.len() + 1));
            format!("{}{ins}{}", &text[..a], &text[a..])
        }
        Mutation::Value { line, value } => {
            let with_values: Vec<usize> = (0..lines.len())
                .filter(|&i| {
                    let l = lines[i].trim_start();
                    !l.starts_with('#') && l.contains(" = ")
                })
                .collect();
            if let Some(&i) = with_values.get(line % with_values.len().max(1)) {
                let key = lines[i].split(" = ").next().unwrap_or_default().to_owned();
                lines[i] = format!("{key} = {value}");
            }
            lines.join("\n")
        }
        Mutation::DupLine { line } => {
            let i = line % lines.len().max(1);
            if let Some(l) = lines.get(i).cloned() {
                lines.insert(i, l);
            }
            lines.join("\n")
        }
        Mutation::Swap { a, b } => {
            let n = lines.len().max(1);
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
    }
}

/// A refusal names the file, and a line and column when it is about a place.
fn check_refusal(path: &Path, err: &anyhow::Error) -> Result<(), TestCaseError> {
    let msg = format!("{err:#}");
    let p = path.display().to_string();
    prop_assert!(
        msg.starts_with(&p),
        "the error does not start with the file name: {msg}"
    );
    let rest = &msg[p.len()..];
    prop_assert!(rest.starts_with(':'), "no ':' after the file name: {msg}");
    prop_assert!(!msg.trim().is_empty());
    Ok(())
}

/// A scenario that parses is usable: its schedule and times can be computed
/// at every time scale a user may give, without panicking.
fn use_parsed(s: &scenario::Scenario) {
    let _ = s.schedule();
    for step in &s.steps {
        let _ = s.wall(&step.at);
        let _ = step.action.describe();
    }
    for e in &s.expectations {
        let _ = e.hold();
        let _ = e.condition.is_event();
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated_shipped_scenarios_parse_or_say_where(
        which in 0usize..SHIPPED.len(),
        edits in prop::collection::vec(mutation(), 1..4),
    ) {
        let (name, text) = SHIPPED[which];
        let mut t = text.to_owned();
        for m in &edits {
            t = apply(&t, m);
        }
        let path = Path::new("scenarios").join(name);
        match scenario::parse(&path, &t) {
            Ok(s) => use_parsed(&s),
            Err(e) => check_refusal(&path, &e)?,
        }
    }

    #[test]
    fn random_text_is_refused_with_a_place(text in "[ -~\n]{0,200}") {
        let path = Path::new("random.toml");
        match scenario::parse(path, &text) {
            Ok(s) => use_parsed(&s),
            Err(e) => check_refusal(path, &e)?,
        }
    }

    #[test]
    fn random_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let path = Path::new("bytes.toml");
        if let Err(e) = scenario::parse(path, &text) {
            check_refusal(path, &e)?;
        }
    }
}

fn clockish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9:+.a-z ]{0,24}",
        (any::<u64>(), any::<u64>()).prop_map(|(h, m)| format!("{h}:{m}")),
        (any::<u64>(), 0u64..60, any::<f64>()).prop_map(|(h, m, s)| format!("{h}:{m:02}:{s}")),
        any::<u64>().prop_map(|n| format!("+{n}s")),
        any::<u64>().prop_map(|n| format!("+{n}h")),
        any::<u64>().prop_map(|n| format!("{n}ms")),
    ]
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn clocks_and_durations_never_panic(s in clockish(), start in any::<u64>()) {
        if let Ok(t) = clock::parse_when(&s, start % (48 * 3600)) {
            prop_assert!(t < clock::MAX_CLOCK_SECS, "{s:?} -> {t}");
            let _ = clock::clock(t);
        }
        if let Some(t) = clock::parse_clock(&s) {
            prop_assert!(t.is_finite() && t >= 0.0, "{s:?} -> {t}");
            let _ = clock::clock_hm(t);
        }
        if let Err(e) = clock::parse_duration("step.for", &s) {
            prop_assert!(e.starts_with("step.for: "), "{e}");
        }
    }

    #[test]
    fn time_scales_are_positive_and_finite_or_refused(s in prop_oneof![
        "[0-9.e+-]{0,12}",
        any::<f64>().prop_map(|x| format!("{x:e}")),
        Just("1e-300".to_string()),
        Just("1e300".to_string()),
    ]) {
        match cascade_core::parse::parse_time_scale(&s) {
            Ok(v) => {
                prop_assert!(v.is_finite() && v > 0.0);
                // Every incident duration a scenario can hold maps to wall time.
                let c = IncidentClock { start: 9000, scale: v };
                for d in [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(48 * 3600)] {
                    let _ = c.to_wall(d);
                }
                let _ = c.wall_of(48 * 3600);
                let _ = c.at(1e9);
            }
            Err(e) => prop_assert!(
                e.contains("positive number") || e.contains("outside 0.01 to 86400"),
                "{e}"
            ),
        }
    }

    #[test]
    fn fault_specs_validate_or_refuse(json in fault_json()) {
        let Ok(spec) = serde_json::from_str::<FaultSpec>(&json) else {
            return Ok(());
        };
        match spec.validate() {
            // A valid spec survives the trip to the supervisor and back.
            Ok(()) => {
                let again: FaultSpec = serde_json::from_str(
                    &serde_json::to_string(&spec).expect("serialize"),
                )
                .expect("a valid spec deserializes");
                prop_assert_eq!(again, spec);
            }
            // Every refusal names the flag it is about.
            Err(e) => prop_assert!(e.to_string().starts_with("--"), "{e}"),
        }
    }
}

fn fault_json() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("latency"),
        Just("error"),
        Just("hang"),
        Just("blackhole"),
        Just("partition"),
        Just("kill"),
        Just("pause"),
        Just("restart"),
        Just("thread-limit"),
        Just("thread-hog"),
        Just("memory-hog"),
        Just("configure"),
        Just("bogus"),
    ];
    let field = prop_oneof![
        Just("latency"),
        Just("jitter"),
        Just("code"),
        Just("between"),
        Just("signal"),
        Just("limit"),
        Just("threads"),
        Just("bytes"),
        Just("target"),
        Just("percent"),
        Just("seed"),
        Just("duration"),
        Just("probability"),
        Just("key"),
        Just("value"),
    ];
    let value = prop_oneof![
        Just("\"\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"18446744073709551615s\"".to_string()),
        Just("\"kinesis-frontend[0..18446744073709551615]\"".to_string()),
        Just("[\"a\",\"a\"]".to_string()),
        Just("null".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| if x.is_finite() {
            format!("{x}")
        } else {
            "1e999".into()
        }),
        "\"[ -~]{0,10}\"",
    ];
    (kind, prop::collection::vec((field, value), 0..5)).prop_map(|(k, fields)| {
        let mut s = format!("{{\"kind\":\"{k}\"");
        for (f, v) in fields {
            s.push_str(&format!(",\"{f}\":{v}"));
        }
        s.push('}');
        s
    })
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z\\-\\[\\]0-9.]{0,24}",
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| format!("kinesis-frontend[{a}..{b}]")),
        Just("kinesis-frontend[0..4294967295]".to_string()),
        Just("kinesis-frontend[0..99999999999999999999]".to_string()),
        Just("kinesis".to_string()),
        Just("cognito".to_string()),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn fault_targets_select_running_instances_or_refuse(
        t in target(),
        percent in prop::option::of(any::<u32>()),
        seed in any::<u64>(),
    ) {
        let names: Vec<String> = (0..8)
            .map(|i| format!("kinesis-frontend-{i}"))
            .chain(["cognito-0".to_string(), "cloudwatch-0".to_string()])
            .collect();
        match cascade::faults::select(&t, &names, percent, seed) {
            Ok(picked) => {
                prop_assert!(!picked.is_empty());
                prop_assert!(picked.iter().all(|p| names.contains(p)), "{picked:?}");
            }
            Err(e) => prop_assert!(e.to_string().starts_with("--target "), "{e}"),
        }
    }
}

/// Every failure the properties above found, replayed by name. Each was a
/// panic or a hang before its fix.
#[test]
fn regression_corpus() {
    // parse_clock: hours * 3600 overflowed u64 (debug panic).
    assert_eq!(clock::parse_clock("18446744073709551615:00"), None);
    // parse_when: start + offset overflowed u64.
    assert!(clock::parse_when("+18446744073709551615s", 1).is_err());
    assert!(
        clock::parse_when("+48h", 0)
            .expect_err("past 48:00")
            .contains("48:00")
    );
    // A time scale of 1e-300 made every wall conversion overflow Duration.
    assert!(cascade_core::parse::parse_time_scale("1e-300").is_err());
    assert_eq!(
        IncidentClock {
            start: 0,
            scale: 0.01
        }
        .wall_of(clock::MAX_CLOCK_SECS),
        Duration::from_secs(48 * 3600 * 100)
    );
    // A range target built one name per index: 4 billion strings.
    let names = vec!["kinesis-frontend-0".to_string()];
    let e = cascade::faults::select("kinesis-frontend[0..4294967295]", &names, None, 0)
        .expect_err("a range larger than the fleet");
    assert!(e.to_string().contains("4294967295 instances"), "{e}");
    // A scenario asking for an out-of-range scale says which key and what is valid.
    let (name, text) = SHIPPED[0];
    let t = text.replace("time_scale = 360", "time_scale = 1e-300");
    assert_ne!(t, text, "the shipped scenario sets time_scale = 360");
    let e = scenario::parse(Path::new(name), &t).expect_err("scale out of range");
    assert!(
        format!("{e:#}").contains("topology.time_scale: 1e-300 is outside 0.01 to 86400"),
        "{e:#}"
    );
}
