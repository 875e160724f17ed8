//! The cascade graph, from evidence rather than timing. Its edges are the
//! dependencies the services declare from their real clients (`depends_on`
//! in their Control status); an edge "carried the failure" only when the
//! downstream service, while impaired, gave a cause that names the upstream
//! (its `cause` gauge, e.g. "handlers blocked on the access-log buffer;
//! last flush: Kinesis PutRecords UNAVAILABLE"). The Service Health
//! Dashboard is the supervisor's own: its primary tool signs in through
//! Cognito, and a failed post names Cognito.

use std::collections::BTreeMap;

use super::report::CascadeEdge;
use crate::clock::tenths;
use crate::status::Status;

/// The dashboard's node in the graph.
pub const SHD: &str = "shd";

/// Edges seen so far and the first evidence that each carried the failure.
#[derive(Debug, Default, Clone)]
pub struct CascadeTracker {
    /// (upstream, downstream) -> the first evidence: wall time and cause.
    edges: BTreeMap<(String, String), Option<(f64, String)>>,
}

/// Whether `text` names `service` as a word (case-insensitive).
pub fn names(text: &str, service: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(service))
}

impl CascadeTracker {
    /// The graph with the SHD's own dependency declared (when Cognito runs).
    pub fn new(cognito: bool) -> Self {
        let mut t = Self::default();
        if cognito {
            t.edges.insert(("cognito".into(), SHD.into()), None);
        }
        t
    }

    /// Takes in the dependencies each service declares, and the causes of
    /// the impaired ones, at wall offset `t`.
    pub fn observe(&mut self, st: &Status, t: f64) {
        for svc in &st.services {
            for inst in &svc.instances {
                let Some(deps) = inst.info.get("depends_on") else {
                    continue;
                };
                let cause = inst
                    .info
                    .get("cause")
                    .map(String::as_str)
                    .unwrap_or_default();
                for up in deps.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                    let evidence = self
                        .edges
                        .entry((up.to_owned(), svc.name.clone()))
                        .or_default();
                    if evidence.is_none() && svc.health.is_impaired() && names(cause, up) {
                        *evidence = Some((t, format!("{}: {cause}", inst.name)));
                    }
                }
            }
        }
    }

    /// A failed step's error, at wall offset `t` (the SHD's primary tool).
    pub fn step_failed(&mut self, description: &str, error: &str, t: f64) {
        if !description.starts_with("shd post") {
            return;
        }
        if let Some(evidence) = self.edges.get_mut(&("cognito".to_owned(), SHD.to_owned()))
            && evidence.is_none()
            && names(error, "cognito")
        {
            *evidence = Some((t, error.to_owned()));
        }
    }

    /// Every edge, with the lag from the upstream's first impairment to the
    /// downstream's (or to the evidence, for the SHD, which has no health).
    pub fn edges(&self, onsets: &BTreeMap<String, f64>) -> Vec<CascadeEdge> {
        self.edges
            .iter()
            .map(|((from, to), evidence)| {
                let lag = evidence.as_ref().and_then(|(at, _)| {
                    let start = *onsets.get(from)?;
                    let end = onsets.get(to).copied().unwrap_or(*at);
                    Some(tenths((end - start).max(0.0)))
                });
                CascadeEdge {
                    from: from.clone(),
                    to: to.clone(),
                    carried: evidence.is_some(),
                    lag_s: lag,
                    evidence: evidence.as_ref().map(|(_, e)| e.clone()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Health;
    use crate::status::{InstanceEntry, ServiceEntry, ThreadLimit};

    fn status(svc: &str, health: Health, deps: &str, cause: &str) -> Status {
        Status {
            mode: Default::default(),
            thread_limit: ThreadLimit {
                limit: None,
                enforcement: "none".into(),
            },
            frontends: vec![],
            services: vec![ServiceEntry {
                name: svc.into(),
                health,
                instances: vec![InstanceEntry {
                    name: format!("{svc}-0"),
                    reachable: true,
                    info: [("depends_on", deps), ("cause", cause)]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    ..Default::default()
                }],
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

    #[test]
    fn an_edge_carries_the_failure_only_when_the_cause_names_the_upstream() {
        let mut t = CascadeTracker::new(false);
        // Impaired, but the cause names EventBridge, not CloudWatch.
        t.observe(
            &status(
                "ecs",
                Health::Down,
                "eventbridge,cloudwatch",
                "tasks stuck in PROVISIONING: EventBridge PutEvents UNAVAILABLE",
            ),
            5.0,
        );
        let onsets = BTreeMap::from([
            ("eventbridge".to_owned(), 3.0),
            ("cloudwatch".to_owned(), 2.0),
            ("ecs".to_owned(), 5.0),
        ]);
        let edges = t.edges(&onsets);
        let get = |from: &str| {
            edges
                .iter()
                .find(|e| e.from == from)
                .expect("declared edge")
        };
        assert!(get("eventbridge").carried && get("eventbridge").lag_s == Some(2.0));
        assert!(!get("cloudwatch").carried, "timing alone is not evidence");
    }

    #[test]
    fn a_cause_while_serving_is_not_evidence_and_words_must_match_whole() {
        let mut t = CascadeTracker::new(false);
        t.observe(
            &status(
                "cognito",
                Health::Serving,
                "kinesis",
                "last flush: Kinesis PutRecords UNAVAILABLE",
            ),
            1.0,
        );
        t.observe(
            &status("cognito", Health::Down, "kinesis", "kinesisx blocked"),
            2.0,
        );
        assert!(!t.edges(&BTreeMap::new())[0].carried);
        assert!(names("flush: Kinesis PutRecords", "kinesis") && !names("Kinesisy", "kinesis"));
    }

    #[test]
    fn the_shd_edge_is_carried_by_a_failed_primary_post_naming_cognito() {
        let mut t = CascadeTracker::new(true);
        t.step_failed("shd post --backup \"x\"", "timeout", 1.0);
        assert!(!t.edges(&BTreeMap::new())[0].carried);
        t.step_failed(
            "shd post \"x\"",
            "primary SHD tool: Cognito sign-in failed: DeadlineExceeded",
            9.0,
        );
        let e = &t.edges(&BTreeMap::from([("cognito".to_owned(), 4.0)]))[0];
        assert!(e.carried && e.to == SHD && e.lag_s == Some(5.0), "{e:?}");
    }
}
