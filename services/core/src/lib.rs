//! Shared library for every Cascade service: server bootstrap (health,
//! reflection, Control), the fault layer, one error mapping, telemetry,
//! shutdown, start-up retry and loop ticks, the fixed thread budget, kernel
//! thread-limit enforcement, shared flag parsers and ids, the Kinesis
//! key-space helpers both Kinesis tiers agree on, the upstream names and
//! cause chains every service reports as evidence of the cascade, and the
//! tests' one wait.

pub mod auth;
pub mod binary;
pub mod clients;
pub mod deps;
pub mod error;
pub mod fault;
pub mod keyspace;
pub mod kinesis;
pub mod listen;
pub mod parse;
pub mod retry;
pub mod runtime;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod testkit;
pub mod threadlimit;
pub mod ticker;

pub use error::ServiceError;

/// Milliseconds since the Unix epoch, for wire timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A random (version 4) UUID, hyphenated: request and event ids, as AWS's.
pub fn random_uuid() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_uuids_are_hyphenated_v4_and_distinct() {
        let a = super::random_uuid();
        let parsed = uuid::Uuid::parse_str(&a).expect("parses back");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.hyphenated().to_string(), a);
        assert_ne!(a, super::random_uuid());
    }
}
