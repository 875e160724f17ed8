//! What `cascade run` and `cascade compare` leave behind, read through the
//! orchestrator's own types: `report.json`, `compare.json` and the lines of
//! `journal.jsonl`. A file that is missing or does not fit its type is a
//! failure naming the file, never an empty value.

use std::path::Path;

use cascade::engine::compare::CompareDoc;
use cascade::engine::journal::JournalEntry;
use cascade::engine::report::Report;
use serde::de::DeserializeOwned;

/// Reads and parses one JSON document.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} does not parse ({e}):\n{}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// `<dir>/report.json`; panics if it is missing or malformed.
pub fn report(dir: &Path) -> Report {
    read_json(&dir.join("report.json")).unwrap_or_else(|e| panic!("{e}"))
}

/// `<dir>/compare.json`, or why it could not be read.
pub fn try_compare(dir: &Path) -> Result<CompareDoc, String> {
    read_json(&dir.join("compare.json"))
}

/// `<dir>/journal.jsonl`, one entry a line; the error names the first line
/// that is not a journal entry (a line still being written reads as one).
pub fn try_journal(dir: &Path) -> Result<Vec<JournalEntry>, String> {
    let path = dir.join("journal.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}: {l}", path.display(), n + 1))
        })
        .collect()
}

/// [`try_journal`], or a panic with its error.
pub fn journal(dir: &Path) -> Vec<JournalEntry> {
    try_journal(dir).unwrap_or_else(|e| panic!("{e}"))
}
