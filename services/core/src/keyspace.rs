//! The Kinesis key space: MD5 of the partition key as a 128-bit hash key,
//! shards as even, inclusive hash-key ranges, and opaque shard iterators.
//! Both the back end (which stores) and the front-end (which routes) use these.

use base64::Engine as _;
use md5::{Digest, Md5};

use crate::ServiceError;

/// The largest record payload Kinesis accepts (1 MiB).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The longest partition key Kinesis accepts.
pub const MAX_PARTITION_KEY_LEN: usize = 256;
/// The most records one PutRecords call may carry, as AWS.
pub const MAX_RECORDS_PER_PUT: usize = 500;

/// MD5 of the partition key, read as a big-endian 128-bit integer.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The inclusive hash-key range of shard `index` of `count` even shards.
pub fn shard_range(index: u32, count: u32) -> (u128, u128) {
    let width = u128::MAX / u128::from(count);
    let start = width * u128::from(index);
    let end = if index + 1 == count {
        u128::MAX
    } else {
        start + width - 1
    };
    (start, end)
}

/// The AWS-style shard id of shard `index`.
pub fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

/// Parses an AWS-style shard id back to its index.
pub fn shard_index(shard_id: &str) -> Option<u32> {
    shard_id.strip_prefix("shardId-")?.parse().ok()
}

/// Checks the fields every put validates, in the same words on both tiers.
pub fn validate_put(
    stream_name: &str,
    partition_key: &str,
    data: &[u8],
    explicit_hash_key: &str,
) -> Result<u128, ServiceError> {
    validate_stream_name(stream_name)?;
    if partition_key.is_empty() {
        return Err(ServiceError::invalid(
            "partition_key: must not be empty (1 to 256 characters)",
        ));
    }
    if partition_key.chars().count() > MAX_PARTITION_KEY_LEN {
        return Err(ServiceError::invalid(format!(
            "partition_key: {} characters, at most {MAX_PARTITION_KEY_LEN} allowed",
            partition_key.chars().count()
        )));
    }
    if data.len() > MAX_RECORD_BYTES {
        return Err(ServiceError::invalid(format!(
            "data: record is {} bytes, at most {MAX_RECORD_BYTES} (1 MiB) allowed",
            data.len()
        )));
    }
    if explicit_hash_key.is_empty() {
        Ok(hash_key(partition_key))
    } else {
        explicit_hash_key.parse::<u128>().map_err(|_| {
            ServiceError::invalid(format!(
                "explicit_hash_key: {explicit_hash_key:?} is not a decimal integer in 0..=2^128-1"
            ))
        })
    }
}

/// Checks a PutRecords batch's size, in the same words on both tiers.
pub fn validate_batch_len(records: usize) -> Result<(), ServiceError> {
    if records == 0 || records > MAX_RECORDS_PER_PUT {
        return Err(ServiceError::invalid(format!(
            "records: {records} entries; send 1 to {MAX_RECORDS_PER_PUT}"
        )));
    }
    Ok(())
}

/// Stream names: 1 to 128 characters of `[a-zA-Z0-9_.-]`, as AWS.
pub fn validate_stream_name(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > 128 {
        return Err(ServiceError::invalid(
            "stream_name: must be 1 to 128 characters",
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ServiceError::invalid(format!(
            "stream_name: {name:?} has {c:?}; allowed are letters, digits, '_', '.', '-'"
        )));
    }
    Ok(())
}

/// Where a shard iterator points: the next record index to read in a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIterator {
    /// Stream the iterator reads.
    pub stream_name: String,
    /// Shard the iterator reads.
    pub shard_id: String,
    /// Sequence number of the next record to return.
    pub next_seq: u64,
}

const ITERATOR_TAG: &str = "cascade-it-v1";

impl ShardIterator {
    /// Encodes the iterator as an opaque string.
    pub fn encode(&self) -> String {
        let raw = format!(
            "{ITERATOR_TAG}\n{}\n{}\n{}",
            self.stream_name, self.shard_id, self.next_seq
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Decodes an iterator; anything malformed is INVALID_ARGUMENT.
    pub fn decode(s: &str) -> Result<Self, ServiceError> {
        let bad = || {
            ServiceError::invalid(
                "shard_iterator: malformed; get one from GetShardIterator or a previous GetRecords",
            )
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let mut parts = raw.split('\n');
        if parts.next() != Some(ITERATOR_TAG) {
            return Err(bad());
        }
        let (Some(stream_name), Some(shard_id), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Self {
            stream_name: stream_name.to_owned(),
            shard_id: shard_id.to_owned(),
            next_seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_records_batch_holds_1_to_500_records() {
        assert!(validate_batch_len(1).is_ok());
        assert!(validate_batch_len(500).is_ok());
        for n in [0, 501] {
            match validate_batch_len(n) {
                Err(ServiceError::InvalidArgument(m)) => {
                    assert_eq!(m, format!("records: {n} entries; send 1 to 500"));
                }
                other => panic!("{n} records: expected INVALID_ARGUMENT, got {other:?}"),
            }
        }
    }

    #[test]
    fn ranges_cover_the_key_space_without_gaps() {
        for count in [1, 2, 3, 7, 16] {
            let mut next = 0u128;
            for i in 0..count {
                let (s, e) = shard_range(i, count);
                assert_eq!(s, next, "shard {i} of {count} starts where the last ended");
                assert!(e >= s);
                next = e.wrapping_add(1);
            }
            assert_eq!(shard_range(count - 1, count).1, u128::MAX);
        }
    }

    #[test]
    fn hash_key_is_md5() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }

    #[test]
    fn iterator_round_trips_and_rejects_garbage() {
        let it = ShardIterator {
            stream_name: "s".into(),
            shard_id: shard_id(3),
            next_seq: 42,
        };
        assert_eq!(ShardIterator::decode(&it.encode()).ok(), Some(it));
        assert!(ShardIterator::decode("not-an-iterator").is_err());
        assert!(ShardIterator::decode("").is_err());
    }

    #[test]
    fn put_validation_names_the_field() {
        let e = validate_put("s", "", b"x", "").err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("partition_key")));
        let big = vec![0u8; MAX_RECORD_BYTES + 1];
        let e = validate_put("s", "k", &big, "")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("1 MiB")));
        assert!(validate_put("s", "k", &vec![0u8; MAX_RECORD_BYTES], "").is_ok());
    }
}
