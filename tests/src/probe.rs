//! `cascade probe <service> --json`, typed: design.md's
//! `{"service","ok","failed","p50_ms","p99_ms","errors":{"<grpc code>":n}}`.
//! The orchestrator prints it without a struct; this is the readers' one.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Whether `name` is a gRPC code as `errors` spells it (the probe's own
/// spelling, from every code tonic knows).
fn is_code_name(name: &str) -> bool {
    (0..=16).any(|i| cascade::traffic::code_name(tonic::Code::from(i)) == name)
}

/// What `cascade probe --json` reports: calls made one after the other.
#[derive(Debug, Clone, Deserialize)]
pub struct ProbeReport {
    /// The service probed.
    pub service: String,
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// gRPC code name -> calls that failed with it (codes seen only).
    pub errors: BTreeMap<String, u64>,
}

impl ProbeReport {
    /// Parses the probe's stdout; panics with the raw text if it does not fit.
    pub fn parse(stdout: &str) -> Self {
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("probe --json does not parse ({e}):\n{stdout}"))
    }

    /// Calls that failed with `code` (e.g. `UNAVAILABLE`). A name that is not
    /// a gRPC code panics, so a misspelt code cannot read as zero failures.
    pub fn failed_with(&self, code: &str) -> u64 {
        assert!(
            is_code_name(code),
            "{code:?} is not a gRPC code name (UNAVAILABLE, DEADLINE_EXCEEDED, ...)"
        );
        self.errors.get(code).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_shape() {
        let p = ProbeReport::parse(
            r#"{"service":"cognito","ok":1,"failed":2,"p50_ms":3.5,"p99_ms":900.0,"errors":{"UNAVAILABLE":2}}"#,
        );
        assert_eq!((p.service.as_str(), p.ok, p.failed), ("cognito", 1, 2));
        assert_eq!((p.p50_ms, p.p99_ms), (3.5, 900.0));
        assert_eq!(p.failed_with("UNAVAILABLE"), 2);
        assert_eq!(p.failed_with("INTERNAL"), 0);
        assert!(is_code_name("DEADLINE_EXCEEDED") && is_code_name("UNAUTHENTICATED"));
    }

    #[test]
    #[should_panic(expected = "does not parse")]
    fn a_missing_field_is_an_error_not_a_zero() {
        ProbeReport::parse(r#"{"service":"cognito","failed":0,"p50_ms":1,"p99_ms":1,"errors":{}}"#);
    }

    #[test]
    #[should_panic(expected = "not a gRPC code name")]
    fn a_misspelt_code_panics() {
        ProbeReport::parse(
            r#"{"service":"x","ok":0,"failed":0,"p50_ms":0,"p99_ms":0,"errors":{}}"#,
        )
        .failed_with("UNAVAILBLE");
    }
}
