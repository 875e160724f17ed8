//! The durable local metric store: AWS's remediation 8 ("keep 3 hours of
//! metrics in local storage"). Datapoints Kinesis refused are appended to a
//! JSONL file and synced before PutMetricData answers, so nothing acknowledged
//! is lost; readers and alarms see them, and the backfiller later moves them
//! to Kinesis and removes them here (atomic rewrite: temp file + rename).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::series::{MetricPoint, PointKey};

/// File name of the store inside its directory.
pub const FILE_NAME: &str = "metrics.jsonl";

/// Buffered datapoints, in memory and on disk (the file is the truth).
#[derive(Debug)]
pub struct LocalStore {
    /// Directory holding the store file.
    dir: PathBuf,
    /// `dir/metrics.jsonl`.
    path: PathBuf,
    /// The store file, opened for appending.
    file: File,
    /// Length of the file after the last complete append, to undo a torn write.
    file_len: u64,
    /// Every buffered point by (timestamp, id): oldest first, one per id.
    entries: BTreeMap<PointKey, MetricPoint>,
}

impl LocalStore {
    /// Opens (creating `dir` if needed) the store and loads what a previous
    /// run left in it. Lines that do not parse (a write torn by a crash, never
    /// acknowledged) are skipped with a warning.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut entries = BTreeMap::new();
        let mut skipped = 0usize;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<MetricPoint>(&line) {
                    Ok(p) => {
                        entries.insert(p.key(), p);
                    }
                    Err(_) => skipped += 1,
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(path = %path.display(), skipped, "local store: skipped unreadable lines");
        }
        let mut store = Self {
            dir: dir.to_owned(),
            file: OpenOptions::new().create(true).append(true).open(&path)?,
            path,
            file_len: 0,
            entries,
        };
        // Rewrite once so a torn tail from a crash never sits in front of new appends.
        store.rewrite()?;
        Ok(store)
    }

    /// Durably appends `points` (write + sync_data) before returning; points
    /// whose id is already stored are skipped. On error nothing is kept.
    pub fn append(&mut self, points: &[MetricPoint]) -> std::io::Result<()> {
        let fresh: Vec<&MetricPoint> = points
            .iter()
            .filter(|p| !self.entries.contains_key(&p.key()))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for p in &fresh {
            buf.extend_from_slice(&p.encode());
            buf.push(b'\n');
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut a partial line off so the next append starts on a clean line.
            let _ = self.file.set_len(self.file_len);
            return Err(e);
        }
        self.file_len += buf.len() as u64;
        for p in fresh {
            self.entries.insert(p.key(), p.clone());
        }
        Ok(())
    }

    /// Keeps only the points for which `keep` is true; rewrites the file
    /// atomically if anything went (and keeps everything if that fails).
    /// Returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&MetricPoint) -> bool) -> std::io::Result<usize> {
        let doomed: Vec<PointKey> = self
            .entries
            .iter()
            .filter(|(_, p)| !keep(p))
            .map(|(k, _)| k.clone())
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let removed: Vec<MetricPoint> = doomed
            .iter()
            .filter_map(|k| self.entries.remove(k))
            .collect();
        if let Err(e) = self.rewrite() {
            for p in removed {
                self.entries.insert(p.key(), p);
            }
            return Err(e);
        }
        Ok(removed.len())
    }

    /// Writes every entry to a temp file, syncs it, renames it over the store
    /// file and syncs the directory: a crash leaves either the old or the new file.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut buf = Vec::new();
        for p in self.entries.values() {
            buf.extend_from_slice(&p.encode());
            buf.push(b'\n');
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.file_len = buf.len() as u64;
        Ok(())
    }

    /// Up to `max` points after `after` (exclusive; `None` = from the oldest).
    pub fn batch_after(&self, after: Option<&PointKey>, max: usize) -> Vec<MetricPoint> {
        let iter: Box<dyn Iterator<Item = &MetricPoint>> = match after {
            Some(k) => Box::new(
                self.entries
                    .range((
                        std::ops::Bound::Excluded(k.clone()),
                        std::ops::Bound::Unbounded,
                    ))
                    .map(|(_, p)| p),
            ),
            None => Box::new(self.entries.values()),
        };
        iter.take(max).cloned().collect()
    }

    /// Points of `ns/metric` with `start_ms <= ts <= end_ms`, oldest first.
    pub fn range(&self, ns: &str, metric: &str, start_ms: i64, end_ms: i64) -> Vec<&MetricPoint> {
        if start_ms > end_ms {
            return Vec::new();
        }
        self.entries
            .range((start_ms, String::new())..)
            .take_while(|((ts, _), _)| *ts <= end_ms)
            .map(|(_, p)| p)
            .filter(|p| p.ns == ns && p.metric == metric)
            .collect()
    }

    /// Number of buffered points.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The directory of test `name` (not created, not emptied).
    pub(crate) fn dir_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("cloudwatch-test-{}-{name}", std::process::id()))
    }

    /// A fresh, empty directory for test `name`.
    pub(crate) fn test_dir(name: &str) -> PathBuf {
        let d = dir_path(name);
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn point(id: &str, ts: i64) -> MetricPoint {
        MetricPoint {
            ns: "ns".into(),
            metric: "m".into(),
            ts,
            value: 1.0,
            id: id.into(),
        }
    }

    #[test]
    fn survives_reopen_and_removal_is_durable() -> std::io::Result<()> {
        let dir = test_dir("reopen");
        {
            let mut s = LocalStore::open(&dir)?;
            s.append(&[point("a", 1), point("b", 2)])?;
            s.append(&[point("c", 3), point("a", 1)])?;
            assert_eq!(s.len(), 3, "a duplicate id is stored once");
        }
        let mut s = LocalStore::open(&dir)?;
        assert_eq!(s.len(), 3, "what was acknowledged survives a restart");
        assert_eq!(s.retain(|p| p.id != "b")?, 1);
        s.append(&[point("d", 4)])?;
        drop(s);
        let s = LocalStore::open(&dir)?;
        let ids: Vec<_> = s.batch_after(None, 10).into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["a", "c", "d"]);
        let rest: Vec<_> = s
            .batch_after(Some(&(1, "a".into())), 1)
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(rest, ["c"]);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn a_torn_last_line_is_skipped() -> std::io::Result<()> {
        let dir = test_dir("torn");
        {
            let mut s = LocalStore::open(&dir)?;
            s.append(&[point("a", 1)])?;
        }
        let mut f = OpenOptions::new().append(true).open(dir.join(FILE_NAME))?;
        f.write_all(b"{\"ns\":\"ns\",\"met")?;
        drop(f);
        let mut s = LocalStore::open(&dir)?;
        assert_eq!(s.len(), 1);
        s.append(&[point("b", 2)])?;
        drop(s);
        assert_eq!(LocalStore::open(&dir)?.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
