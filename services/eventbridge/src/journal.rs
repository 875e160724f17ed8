//! EventBridge's durable state, as a real event bus keeps it: the rules
//! created through PutRule, and the backlog of events accepted and not yet
//! delivered to every target their rules name. One append-only JSONL file
//! (`journal.jsonl` in the instance's `--data-dir`): an event is journaled,
//! and synced, before PutEvents puts it on the bus and answers; being read
//! from the bus and being delivered are journaled as they happen (synced at
//! the end of each dispatch round); delivered events are compacted away by
//! an atomic rewrite (temp file, rename, directory sync). On start the file
//! is replayed, so a restarted EventBridge still has its rules, delivers
//! what it had accepted (nothing twice), and skips the bus records it had
//! already delivered when it reads the bus again from the start.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dispatch::BusEvent;

/// File name of the journal inside the data directory.
pub const FILE_NAME: &str = "journal.jsonl";

/// A rule as PutRule created it (rules from `--rule` are configuration and
/// are not journaled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// Rule name.
    pub name: String,
    /// Source to match; empty matches any.
    pub source: String,
    /// Detail-type to match; empty matches any.
    pub detail_type: String,
    /// "ecs" or "lambda".
    pub target: String,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    /// PutRule created or replaced a rule.
    Rule(RuleRecord),
    /// PutEvents accepted this event (written before it is put on the bus).
    Accepted {
        /// The event as it goes on the bus.
        event: BusEvent,
    },
    /// The bus put of an accepted event failed: the caller was refused.
    Withdrawn {
        /// Its id.
        event_id: String,
    },
    /// The event was read from the bus and matched these (rule, target)s.
    Routed {
        /// Its id.
        event_id: String,
        /// Matching rules and their targets (empty: no rule matched).
        routes: Vec<(String, String)>,
    },
    /// The event was delivered on behalf of `rule` (or its target refused
    /// it for good): that route is done.
    Delivered {
        /// Its id.
        event_id: String,
        /// The rule it was delivered for.
        rule: String,
    },
}

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Rules created through PutRule, by name.
    pub rules: Vec<RuleRecord>,
    /// Events accepted and not read from the bus yet, in order accepted.
    pub accepted: Vec<BusEvent>,
    /// Events read from the bus with routes not yet delivered, in the
    /// order they were read: (event, undelivered (rule, target)s).
    pub routed: Vec<(BusEvent, Vec<(String, String)>)>,
    /// Lines that did not parse (a write torn by a crash), skipped.
    pub skipped: usize,
}

/// (rule, target) pairs of one event.
type Routes = Vec<(String, String)>;

/// Folds journal lines into what is still live.
pub fn replay(entries: impl IntoIterator<Item = Entry>) -> Replayed {
    use std::collections::BTreeMap;
    let mut rules: BTreeMap<String, RuleRecord> = BTreeMap::new();
    // event id -> (order, event, routes left: None = not read from the bus yet)
    type Live = (u64, BusEvent, Option<Routes>);
    let mut live: BTreeMap<String, Live> = BTreeMap::new();
    let mut routed_order: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    for e in entries {
        n += 1;
        match e {
            Entry::Rule(r) => {
                rules.insert(r.name.clone(), r);
            }
            Entry::Accepted { event } => {
                live.entry(event.event_id.clone())
                    .or_insert((n, event, None));
            }
            Entry::Withdrawn { event_id } => {
                if live.get(&event_id).is_some_and(|x| x.2.is_none()) {
                    live.remove(&event_id);
                }
            }
            Entry::Routed { event_id, routes } => {
                if let Some(x) = live.get_mut(&event_id)
                    && x.2.is_none()
                {
                    if routes.is_empty() {
                        live.remove(&event_id);
                    } else {
                        x.2 = Some(routes);
                        routed_order.insert(event_id, n);
                    }
                }
            }
            Entry::Delivered { event_id, rule } => {
                if let Some(x) = live.get_mut(&event_id)
                    && let Some(routes) = x.2.as_mut()
                {
                    routes.retain(|(r, _)| *r != rule);
                    if routes.is_empty() {
                        live.remove(&event_id);
                        routed_order.remove(&event_id);
                    }
                }
            }
        }
    }
    let mut accepted: Vec<(u64, BusEvent)> = Vec::new();
    let mut routed: Vec<(u64, BusEvent, Routes)> = Vec::new();
    for (id, (order, event, routes)) in live {
        match routes {
            None => accepted.push((order, event)),
            Some(r) => routed.push((routed_order.get(&id).copied().unwrap_or(order), event, r)),
        }
    }
    accepted.sort_by_key(|x| x.0);
    routed.sort_by_key(|x| x.0);
    Replayed {
        rules: rules.into_values().collect(),
        accepted: accepted.into_iter().map(|x| x.1).collect(),
        routed: routed.into_iter().map(|x| (x.1, x.2)).collect(),
        skipped: 0,
    }
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    /// Its directory.
    dir: PathBuf,
    /// `dir/journal.jsonl`.
    path: PathBuf,
    /// The file, opened for appending (shared so it can be synced without
    /// holding the dispatcher's lock).
    file: Arc<File>,
    /// Lines in the file (live and dead), to know when to compact.
    lines: usize,
    /// Bytes of the file after the last complete append, to undo a torn write.
    len: u64,
}

impl Journal {
    /// Opens (creating `dir` if needed) the journal and replays it. Lines
    /// that do not parse (a write torn by a crash, never acknowledged) are
    /// skipped and counted.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Replayed)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut entries = Vec::new();
        let mut skipped = 0usize;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Entry>(&line) {
                    Ok(e) => entries.push(e),
                    Err(_) => skipped += 1,
                }
            }
        }
        let mut replayed = replay(entries);
        replayed.skipped = skipped;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut journal = Self {
            dir: dir.to_owned(),
            path,
            file: Arc::new(file),
            lines: 0,
            len: 0,
        };
        // Rewrite once: only live lines, and no torn tail in front of new appends.
        journal.rewrite(&live_entries(&replayed))?;
        Ok((journal, replayed))
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lines in the file now.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Appends `entries` (not yet synced: see [`Journal::syncer`]). On error
    /// the file is cut back to its last complete line.
    pub fn append(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        if let Err(e) = (&*self.file).write_all(&buf) {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.lines += entries.len();
        Ok(())
    }

    /// A handle that syncs what was appended so far, without the journal.
    pub fn syncer(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Replaces the file by exactly `entries`: a temp file, synced, renamed
    /// over the journal, the directory synced. A crash leaves either file.
    pub fn rewrite(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()?;
        self.file = Arc::new(OpenOptions::new().append(true).open(&self.path)?);
        self.lines = entries.len();
        self.len = buf.len() as u64;
        Ok(())
    }
}

/// The lines that say exactly what `r` holds.
fn live_entries(r: &Replayed) -> Vec<Entry> {
    let mut out: Vec<Entry> = r.rules.iter().cloned().map(Entry::Rule).collect();
    for e in &r.accepted {
        out.push(Entry::Accepted { event: e.clone() });
    }
    for (e, _) in &r.routed {
        out.push(Entry::Accepted { event: e.clone() });
    }
    for (e, routes) in &r.routed {
        out.push(Entry::Routed {
            event_id: e.event_id.clone(),
            routes: routes.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> BusEvent {
        BusEvent {
            event_id: id.into(),
            source: "aws.ecs".into(),
            detail_type: "ECS Task Workflow".into(),
            detail: "{}".into(),
            put_at_ms: 1,
            time_ms: 1,
        }
    }

    fn route(rule: &str, target: &str) -> (String, String) {
        (rule.into(), target.into())
    }

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("eventbridge-journal-{}-{name}", std::process::id()))
    }

    #[test]
    fn replay_keeps_exactly_what_is_not_delivered() {
        let r = replay([
            Entry::Rule(RuleRecord {
                name: "r".into(),
                source: "aws.ecs".into(),
                detail_type: String::new(),
                target: "ecs".into(),
            }),
            Entry::Accepted { event: ev("a") },
            Entry::Accepted { event: ev("b") },
            Entry::Accepted { event: ev("c") },
            Entry::Accepted { event: ev("d") },
            Entry::Accepted { event: ev("w") },
            Entry::Withdrawn {
                event_id: "w".into(),
            },
            // b read before a: queue order is read order.
            Entry::Routed {
                event_id: "b".into(),
                routes: vec![route("r", "ecs"), route("all", "lambda")],
            },
            Entry::Routed {
                event_id: "a".into(),
                routes: vec![route("r", "ecs")],
            },
            Entry::Routed {
                event_id: "c".into(),
                routes: vec![],
            },
            Entry::Delivered {
                event_id: "b".into(),
                rule: "r".into(),
            },
            // A replayed bus record of a delivered event changes nothing.
            Entry::Routed {
                event_id: "c".into(),
                routes: vec![route("r", "ecs")],
            },
        ]);
        assert_eq!(r.rules.len(), 1);
        let accepted: Vec<&str> = r.accepted.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(accepted, vec!["d"], "accepted, not read from the bus yet");
        let routed: Vec<(&str, usize)> = r
            .routed
            .iter()
            .map(|(e, routes)| (e.event_id.as_str(), routes.len()))
            .collect();
        assert_eq!(
            routed,
            vec![("b", 1), ("a", 1)],
            "read order, undelivered routes"
        );
        assert_eq!(r.routed[0].1, vec![route("all", "lambda")]);
    }

    #[test]
    fn the_file_survives_reopening_and_a_torn_tail_is_skipped() {
        let d = dir("reopen");
        let _ = std::fs::remove_dir_all(&d);
        {
            let (mut j, r) = Journal::open(&d).expect("opens");
            assert!(r.accepted.is_empty() && r.rules.is_empty());
            j.append(&[
                Entry::Accepted { event: ev("a") },
                Entry::Accepted { event: ev("b") },
                Entry::Routed {
                    event_id: "a".into(),
                    routes: vec![route("r", "ecs")],
                },
            ])
            .expect("appends");
            j.syncer().sync_data().expect("syncs");
        }
        // A crash mid-write leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.join(FILE_NAME))
            .and_then(|mut f| f.write_all(b"{\"op\":\"accep"))
            .expect("tear");
        let (j, r) = Journal::open(&d).expect("reopens");
        assert_eq!(r.skipped, 1);
        assert_eq!(r.accepted.len(), 1);
        assert_eq!(r.routed.len(), 1);
        assert_eq!(j.lines(), 3, "rewritten to its live lines");
        let (_, again) = Journal::open(&d).expect("reopens cleanly");
        assert_eq!(again.skipped, 0);
        let _ = std::fs::remove_dir_all(&d);
    }
}
