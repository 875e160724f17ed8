//! The impact tracker: from the stream of status documents, each service's
//! first impairment, last recovery, time impaired, peak error rate and p99;
//! the health and shard-map timelines the report draws; and the changes the
//! journal records. Pure: fed observations, it is tested in-process.

use std::collections::BTreeMap;

use super::report::{
    EventKind, FleetSample, HealthSample, ServiceImpact, StockSample, StockSeries,
};
use crate::clock::tenths;
use crate::state::{Health, MapState};
use crate::status::Status;

/// Wall seconds between timeline samples.
const SAMPLE_EVERY_S: f64 = 0.5;

/// What the run has recorded of every service.
#[derive(Debug, Default)]
pub struct ImpactTracker {
    /// Per service, its impact so far.
    pub impact: BTreeMap<String, ServiceImpact>,
    /// Per service, its health samples.
    pub timeline: BTreeMap<String, Vec<HealthSample>>,
    /// The main fleet's shard-map samples.
    pub fleet: Vec<FleetSample>,
    /// Every stock's levels, a sample where one changed.
    pub stocks: Vec<StockSeries>,
    last_health: BTreeMap<String, Health>,
    last_maps: String,
    last_sample: Option<f64>,
    last_t: f64,
}

impl ImpactTracker {
    /// Takes in the status seen at wall offset `t`; returns what changed,
    /// for the journal.
    pub fn observe(&mut self, st: &Status, t: f64) -> Vec<(EventKind, String)> {
        let mut changes = Vec::new();
        let sample = self.last_sample.is_none_or(|s| t - s >= SAMPLE_EVERY_S);
        if sample {
            self.last_sample = Some(t);
        }
        let count = |m: MapState| st.count_maps(m);
        let main = st.main_fleet().count();
        let unusable = count(MapState::Unusable) + count(MapState::Down);
        let maps = format!(
            "{main} front-ends: {} ready, {} building, {unusable} unusable",
            count(MapState::Ready),
            count(MapState::Building),
        );
        if maps != self.last_maps {
            changes.push((EventKind::ShardMaps, maps.clone()));
            self.last_maps = maps;
        }
        if sample {
            self.fleet.push(FleetSample {
                t_s: tenths(t),
                fleet: main,
                ready: count(MapState::Ready),
                building: count(MapState::Building),
                unusable,
            });
            self.sample_stocks(st, t);
        }
        for svc in &st.services {
            if self.last_health.insert(svc.name.clone(), svc.health) != Some(svc.health) {
                changes.push((
                    EventKind::Health,
                    format!("{} {} ({})", svc.name, svc.health, svc.detail),
                ));
            }
            let Some(tr) = &svc.traffic else { continue };
            let total = tr.ok + tr.failed;
            let rate = if total > 0 {
                tr.failed as f64 / total as f64
            } else {
                0.0
            };
            let im = self.impact.entry(svc.name.clone()).or_default();
            im.max_error_rate = im.max_error_rate.max(rate);
            im.p99_ms = im.p99_ms.max(tr.p99_ms);
            let impaired = svc.health.is_impaired();
            if impaired {
                im.impaired_s += t - self.last_t;
            }
            if impaired && im.impaired_at_s.is_none() {
                im.impaired_at_s = Some(t);
                im.symptom = svc.detail.clone();
            } else if !impaired && im.impaired_at_s.is_some() {
                im.recovered_at_s.get_or_insert(t);
            } else if impaired {
                // Impaired again: recovery is the last return to serving.
                im.recovered_at_s = None;
            }
            if sample {
                self.timeline
                    .entry(svc.name.clone())
                    .or_default()
                    .push(HealthSample {
                        t_s: tenths(t),
                        health: svc.health,
                        error_rate: (rate * 1000.0).round() / 1000.0,
                        p99_ms: tr.p99_ms,
                    });
            }
        }
        self.last_t = t;
        changes
    }

    /// Adds a sample to each stock whose level or capacity moved (the first
    /// sample of every stock is always kept).
    fn sample_stocks(&mut self, st: &Status, t: f64) {
        for s in crate::stocks::stocks(st) {
            let i = match self
                .stocks
                .iter()
                .position(|x| x.service == s.service && x.name == s.name)
            {
                Some(i) => i,
                None => {
                    self.stocks.push(StockSeries {
                        service: s.service.clone(),
                        name: s.name.clone(),
                        unit: s.unit.clone(),
                        samples: vec![],
                    });
                    self.stocks.len() - 1
                }
            };
            let series = &mut self.stocks[i].samples;
            if series
                .last()
                .is_some_and(|l| l.level == s.level && l.capacity == s.capacity)
            {
                continue;
            }
            series.push(StockSample {
                t_s: tenths(t),
                level: s.level,
                capacity: s.capacity,
            });
        }
    }

    /// Each service's first impairment (wall seconds).
    pub fn first_impaired(&self) -> BTreeMap<String, f64> {
        self.impact
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.impaired_at_s?)))
            .collect()
    }

    /// Services in the order they were first impaired (ties by name).
    pub fn impaired_order(&self) -> Vec<String> {
        let mut v: Vec<(String, f64)> = self.first_impaired().into_iter().collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ServiceEntry, ThreadLimit};
    use crate::traffic::Summary;

    fn status(health: Health, ok: u64, failed: u64) -> Status {
        Status {
            mode: Default::default(),
            thread_limit: ThreadLimit {
                limit: None,
                enforcement: "none".into(),
            },
            frontends: vec![],
            services: vec![ServiceEntry {
                name: "cognito".into(),
                health,
                traffic: Some(Summary {
                    ok,
                    failed,
                    ..Default::default()
                }),
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
    fn impairment_recovery_and_time_impaired_are_tracked() {
        let mut t = ImpactTracker::default();
        t.observe(&status(Health::Serving, 25, 0), 0.0);
        let changes = t.observe(&status(Health::Down, 5, 20), 1.0);
        assert!(
            changes
                .iter()
                .any(|(k, d)| *k == EventKind::Health && d.starts_with("cognito down"))
        );
        t.observe(&status(Health::Down, 0, 25), 2.0);
        t.observe(&status(Health::Serving, 25, 0), 3.0);
        let im = &t.impact["cognito"];
        assert_eq!(im.impaired_at_s, Some(1.0));
        assert_eq!(im.recovered_at_s, Some(3.0));
        assert!((im.impaired_s - 2.0).abs() < 1e-9, "{}", im.impaired_s);
        assert_eq!(im.max_error_rate, 1.0);
        t.observe(&status(Health::Degraded, 15, 10), 4.0);
        assert_eq!(t.impact["cognito"].recovered_at_s, None, "impaired again");
        assert_eq!(t.impaired_order(), vec!["cognito".to_owned()]);
        assert_eq!(t.timeline["cognito"].len(), 5);
    }
}
