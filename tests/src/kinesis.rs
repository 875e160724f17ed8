//! `cascade kinesis put-record | get-records` from the tests: the commands,
//! and their output read in the field names `aws kinesis` prints
//! (PascalCase, on purpose: the CLI mirrors the AWS one).

use std::process::Output;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Fleet, describe};

/// What `put-record` prints.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutRecordOutput {
    /// The shard the partition key hashed to.
    pub shard_id: String,
    /// The record's sequence number in that shard.
    pub sequence_number: String,
}

/// What `get-records` prints.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetRecordsOutput {
    /// The records, oldest first.
    pub records: Vec<Record>,
}

/// One record as `get-records` prints it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Record {
    /// Its sequence number (decimal digits).
    pub sequence_number: String,
    /// Its data, as text.
    pub data: String,
}

/// The stdout of a command that must have succeeded, parsed; panics with
/// the command's output otherwise.
pub fn parse<T: DeserializeOwned>(out: &Output) -> T {
    assert!(
        out.status.success(),
        "cascade kinesis failed:\n{}",
        describe(out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cascade kinesis printed something else ({e}):\n{}",
            describe(out)
        )
    })
}

impl Fleet {
    /// `cascade kinesis put-record`, through front-end `via` if given.
    pub fn put_record(&self, stream: &str, key: &str, data: &str, via: Option<&str>) -> Output {
        let mut args = vec![
            "kinesis",
            "put-record",
            "--stream-name",
            stream,
            "--partition-key",
            key,
            "--data",
            data,
        ];
        args.extend(via.iter().flat_map(|v| ["--endpoint", *v]));
        self.run(&args)
    }

    /// `cascade kinesis get-records` of `shard` from TRIM_HORIZON, through
    /// front-end `via` if given.
    pub fn get_records(&self, stream: &str, shard: &str, via: Option<&str>) -> Output {
        let mut args = vec![
            "kinesis",
            "get-records",
            "--stream-name",
            stream,
            "--shard-id",
            shard,
        ];
        args.extend(via.iter().flat_map(|v| ["--endpoint", *v]));
        self.run(&args)
    }

    /// `cascade kinesis create-stream`, which must succeed.
    pub fn create_stream(&self, stream: &str, shards: u32) {
        self.ok(&[
            "kinesis",
            "create-stream",
            "--stream-name",
            stream,
            "--shard-count",
            &shards.to_string(),
        ]);
    }
}
