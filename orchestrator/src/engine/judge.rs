//! The judge: whether a scenario's conditions hold in an observation, and
//! each expectation's verdict as observations arrive (by its deadline, or
//! throughout its window). Pure: it sees only the status documents and what
//! the run has recorded, so it is tested on synthetic series.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::scenario::{Condition, Expectation, HealthIs, Outcome};
use crate::state::MapState;
use crate::status::Status;

/// What the run has seen so far, besides the latest status.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Each service's first impairment (wall seconds).
    pub impaired: BTreeMap<String, f64>,
    /// Every step so far: its description and whether it succeeded.
    pub steps: Vec<(String, bool)>,
}

/// Whether `c` holds in `st`, given what the run has seen.
pub fn holds(c: &Condition, st: &Status, seen: &Seen) -> bool {
    match c {
        Condition::Step { matching, outcome } => seen
            .steps
            .iter()
            .any(|(d, ok)| d.contains(matching.as_str()) && *ok == (*outcome == Outcome::Ok)),
        Condition::ImpairedInOrder { services } => {
            let times: Option<Vec<f64>> = services
                .iter()
                .map(|s| seen.impaired.get(s).copied())
                .collect();
            // Health is judged over a window of customer calls, so onsets
            // closer than one window are simultaneous at this resolution.
            let resolution = crate::supervisor::HEALTH_WINDOW_SECS as f64;
            times.is_some_and(|t| t.windows(2).all(|w| w[0] <= w[1] + resolution))
        }
        Condition::Health { service, is } => st.service(service).is_some_and(|s| match is {
            HealthIs::Impaired => s.health.is_impaired(),
            HealthIs::Is(h) => s.health == *h,
        }),
        Condition::ShardMaps { all } => {
            let main: Vec<_> = st.main_fleet().collect();
            !main.is_empty() && main.iter().all(|f| f.shard_map == all.0)
        }
        Condition::RestartRemovals { at_least } => st.restart_removals >= *at_least,
        Condition::ReadyFrontends { at_most } => st.count_maps(MapState::Ready) as u32 <= *at_most,
        Condition::ThreadAlarms { at_least } => st.alarms.len() as u64 >= *at_least,
    }
}

/// An expectation's verdict: held or not, and when and why.
pub type Decision = (bool, String);

/// One expectation being judged, with its window in wall time.
#[derive(Debug, Clone)]
struct Pending {
    index: usize,
    after: Duration,
    by: Duration,
}

/// The expectations not yet decided.
#[derive(Debug, Clone)]
pub struct Judge {
    expectations: Vec<Expectation>,
    pending: Vec<Pending>,
}

impl Judge {
    /// Judges `expectations`; `wall` maps an incident clock or offset to
    /// the wall offset at which it falls.
    pub fn new(expectations: &[Expectation], wall: impl Fn(&str) -> Duration) -> Self {
        let pending = expectations
            .iter()
            .enumerate()
            .map(|(index, x)| Pending {
                index,
                after: x.after.as_deref().map_or(Duration::ZERO, &wall),
                by: wall(&x.by),
            })
            .collect();
        Self {
            expectations: expectations.to_vec(),
            pending,
        }
    }

    /// Whether every expectation is decided.
    pub fn done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Judges one observation at wall offset `now` (incident clock
    /// `clock_now`); returns the expectations it decided, by index.
    pub fn observe(
        &mut self,
        st: &Status,
        seen: &Seen,
        now: Duration,
        clock_now: &str,
    ) -> Vec<(usize, Decision)> {
        let mut decided = Vec::new();
        let expectations = &self.expectations;
        self.pending.retain(|p| {
            let x = &expectations[p.index];
            if now < p.after {
                return true;
            }
            let ok = holds(&x.condition, st, seen);
            let verdict = match (x.throughout, ok, now > p.by) {
                (false, true, _) => Some((true, format!("held at {clock_now}"))),
                (false, false, true) => Some((false, format!("not observed by {}", x.by))),
                (true, false, _) => Some((false, format!("stopped holding at {clock_now}"))),
                (true, true, true) => Some((true, format!("held throughout, until {}", x.by))),
                _ => None,
            };
            match verdict {
                Some(v) => {
                    decided.push((p.index, v));
                    false
                }
                None => true,
            }
        });
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::MapIs;
    use crate::state::Health;
    use crate::status::{FrontendEntry, Mode, ServiceEntry, ThreadLimit};

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
            supervisor_pid: 1,
            alarms: vec![],
            restart_removals: 0,
        }
    }

    fn expect(throughout: bool, condition: Condition) -> Expectation {
        Expectation {
            name: "x".into(),
            by: "+1h".into(),
            after: None,
            throughout,
            condition,
        }
    }

    fn wall(s: &str) -> Duration {
        if s == "+1h" {
            Duration::from_secs(10)
        } else {
            Duration::ZERO
        }
    }

    #[test]
    fn conditions_read_the_status() {
        let seen = Seen::default();
        let down = status(Health::Down, &[MapState::Unusable, MapState::Down]);
        let impaired = Condition::Health {
            service: "kinesis".into(),
            is: HealthIs::Impaired,
        };
        assert!(holds(&impaired, &down, &seen));
        assert!(!holds(&impaired, &status(Health::Serving, &[]), &seen));
        let unusable = Condition::ShardMaps {
            all: MapIs(MapState::Unusable),
        };
        assert!(
            !holds(&unusable, &down, &seen),
            "a down front-end is not unusable"
        );
        assert!(
            !holds(&unusable, &status(Health::Down, &[]), &seen),
            "no fleet, no claim"
        );
    }

    #[test]
    fn an_expectation_is_decided_once_by_its_deadline() {
        let c = Condition::Health {
            service: "kinesis".into(),
            is: HealthIs::Is(Health::Serving),
        };
        let mut j = Judge::new(&[expect(false, c.clone()), expect(true, c)], wall);
        let seen = Seen::default();
        let ok = status(Health::Serving, &[]);
        let d = j.observe(&ok, &seen, Duration::from_secs(1), "02:31");
        assert_eq!(d, vec![(0, (true, "held at 02:31".into()))]);
        assert!(
            j.observe(&ok, &seen, Duration::from_secs(5), "02:40")
                .is_empty()
        );
        let d = j.observe(&ok, &seen, Duration::from_secs(11), "03:31");
        assert_eq!(d[0].0, 1);
        assert!(d[0].1.0 && j.done());
    }
}
