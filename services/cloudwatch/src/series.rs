//! The aggregated time series CloudWatch answers reads and alarms from: what
//! the aggregator read back off the metrics stream. When the stream cannot be
//! read (Kinesis down) they stop growing: the incident's metric gaps. Points
//! are deduplicated by id, which makes the local buffer's backfill exactly-once.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Most datapoints one series keeps in memory; the oldest go first. A bound
/// so a long run cannot grow the process without limit.
pub const MAX_POINTS_PER_SERIES: usize = 200_000;

/// One datapoint as it travels through Kinesis and sits in the local store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Metric namespace, e.g. `AWS/Lambda`.
    pub ns: String,
    /// Metric name within the namespace.
    pub metric: String,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// The sampled value (always finite).
    pub value: f64,
    /// Unique id `<instance-id>-<seq>`, assigned once at PutMetricData.
    pub id: String,
}

/// Ordering key of a point within its series. A datapoint is immutable and its
/// id unique, so an id always comes with the same timestamp: the key is the id.
pub type PointKey = (i64, String);

impl MetricPoint {
    /// The record bytes put on the metrics stream.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of strings and numbers always serializes")
    }

    /// Parses record bytes written by [`MetricPoint::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The Kinesis partition key: one series stays on one shard, in order.
    pub fn partition_key(&self) -> String {
        format!("{}/{}", self.ns, self.metric)
    }

    /// This point's key within its series.
    pub fn key(&self) -> PointKey {
        (self.ts, self.id.clone())
    }
}

/// Every series, keyed by (namespace, metric), each ordered by (timestamp, id).
#[derive(Debug, Default)]
pub struct MetricSeries {
    /// (namespace, metric) -> (timestamp, id) -> value.
    series: HashMap<(String, String), BTreeMap<PointKey, f64>>,
}

impl MetricSeries {
    /// Adds `p` unless a point with its id is already there; true if it was new.
    pub fn insert(&mut self, p: &MetricPoint) -> bool {
        let s = self
            .series
            .entry((p.ns.clone(), p.metric.clone()))
            .or_default();
        let key = p.key();
        if s.contains_key(&key) {
            return false;
        }
        s.insert(key.clone(), p.value);
        if s.len() > MAX_POINTS_PER_SERIES {
            s.pop_first();
        }
        s.contains_key(&key)
    }

    /// Whether the point `(ts, id)` of series `ns/metric` is present.
    pub fn contains(&self, ns: &str, metric: &str, key: &PointKey) -> bool {
        self.series
            .get(&(ns.to_owned(), metric.to_owned()))
            .is_some_and(|s| s.contains_key(key))
    }

    /// Points of `ns/metric` with `start_ms <= ts <= end_ms`, oldest first.
    pub fn range(
        &self,
        ns: &str,
        metric: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<(PointKey, f64)> {
        let Some(s) = self.series.get(&(ns.to_owned(), metric.to_owned())) else {
            return Vec::new();
        };
        if start_ms > end_ms {
            return Vec::new();
        }
        s.range((start_ms, String::new())..)
            .take_while(|((ts, _), _)| *ts <= end_ms)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Number of distinct series.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: &str, ts: i64, value: f64) -> MetricPoint {
        MetricPoint {
            ns: "ns".into(),
            metric: "m".into(),
            ts,
            value,
            id: id.into(),
        }
    }

    #[test]
    fn duplicate_ids_are_kept_once_and_range_is_ordered() {
        let mut s = MetricSeries::default();
        assert!(s.insert(&point("a", 20, 1.0)));
        assert!(s.insert(&point("b", 10, 2.0)));
        assert!(
            !s.insert(&point("a", 20, 1.0)),
            "same id must not count twice"
        );
        let r = s.range("ns", "m", 0, 100);
        let ids: Vec<_> = r.iter().map(|((_, id), _)| id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(s.range("ns", "m", 11, 20).len(), 1);
        assert!(s.range("ns", "other", 0, 100).is_empty());
    }

    #[test]
    fn encoding_round_trips() {
        let p = point("x-1", 5, 1.5);
        assert_eq!(MetricPoint::decode(&p.encode()).ok(), Some(p));
    }
}
