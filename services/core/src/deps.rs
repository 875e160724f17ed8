//! Evidence of the cascade, as each service reports it: the upstream services
//! it depends on (named once, here), and the cause chain of its customers'
//! failures. A cascade edge is drawn from a downstream's error naming its
//! upstream, not from one failing after the other.

use std::fmt;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::ServiceError;

/// `Control.GetStatus` info key: comma-separated [`Upstream`] names whose
/// failure can impair this service, declared from its configured clients.
pub const DEPENDS_ON_KEY: &str = "depends_on";
/// `Control.GetStatus` info key: one line naming the upstream whose failure
/// makes customer calls fail now; empty when none does.
pub const CAUSE_KEY: &str = "cause";
/// How recent (wall time) an upstream failure must be to explain failures
/// "now": longer than any retry tick, short enough that a recovered upstream
/// stops being blamed within a few seconds.
pub const CAUSE_WINDOW: Duration = Duration::from_secs(5);

/// A Cascade service another one can depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Upstream {
    /// Kinesis Data Streams (the front-end fleet).
    Kinesis,
    /// Cognito user and identity pools.
    Cognito,
    /// CloudWatch metrics and alarms.
    CloudWatch,
    /// Lambda invocations.
    Lambda,
    /// EventBridge (CloudWatch Events).
    EventBridge,
    /// ECS control plane.
    Ecs,
}

impl Upstream {
    /// Every upstream, in the order of the incident's cascade.
    pub const ALL: [Self; 6] = [
        Self::Kinesis,
        Self::Cognito,
        Self::CloudWatch,
        Self::Lambda,
        Self::EventBridge,
        Self::Ecs,
    ];

    /// The service's name as `depends_on` and the orchestrator write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kinesis => "kinesis",
            Self::Cognito => "cognito",
            Self::CloudWatch => "cloudwatch",
            Self::Lambda => "lambda",
            Self::EventBridge => "eventbridge",
            Self::Ecs => "ecs",
        }
    }

    /// The service's name as AWS writes it, the word error messages use.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Kinesis => "Kinesis",
            Self::Cognito => "Cognito",
            Self::CloudWatch => "CloudWatch",
            Self::Lambda => "Lambda",
            Self::EventBridge => "EventBridge",
            Self::Ecs => "ECS",
        }
    }

    /// Parses a [`Upstream::name`] (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|u| u.name().eq_ignore_ascii_case(name.trim()))
    }

    /// A failed call to this upstream as one cause-chain link:
    /// `Kinesis PutRecords UNAVAILABLE: <the upstream's message>`.
    pub fn describe(self, operation: &str, status: &tonic::Status) -> String {
        format!(
            "{self} {operation} {}: {}",
            crate::fault::code_name(status.code()),
            status.message()
        )
    }

    /// A failed call to this upstream, its code kept and its message made a
    /// cause-chain link (see [`Upstream::describe`]).
    pub fn error(self, operation: &str, status: tonic::Status) -> ServiceError {
        ServiceError::Upstream(tonic::Status::new(
            status.code(),
            self.describe(operation, &status),
        ))
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// The `depends_on` value: the names, in the order given, comma-separated.
pub fn depends_on(upstreams: impl IntoIterator<Item = Upstream>) -> String {
    upstreams
        .into_iter()
        .map(Upstream::name)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a `depends_on` value; unknown names are errors.
pub fn parse_depends_on(value: &str) -> Result<Vec<Upstream>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| Upstream::parse(n).ok_or_else(|| format!("{n:?} is not a Cascade service")))
        .collect()
}

/// Joins the parts of a cause that apply now with "; " ("" when none does).
pub fn join_causes(parts: impl IntoIterator<Item = Option<String>>) -> String {
    parts.into_iter().flatten().collect::<Vec<_>>().join("; ")
}

/// The last failure of one kind (a failed flush, a refused put), with when it
/// happened, so `cause` can tell a failure that explains "now" from an old one.
#[derive(Debug, Default)]
pub struct RecentFailure {
    /// When it last happened and its message.
    last: Mutex<Option<(Instant, String)>>,
}

impl RecentFailure {
    /// No failure yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a failure happening now.
    pub fn record(&self, message: impl Into<String>) {
        *self.last.lock() = Some((Instant::now(), message.into()));
    }

    /// The last failure's message if it happened within `window` of now.
    pub fn within(&self, window: Duration) -> Option<String> {
        self.last
            .lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() <= window)
            .map(|(_, m)| m.clone())
    }

    /// The last failure's message if it happened within [`CAUSE_WINDOW`].
    pub fn recent(&self) -> Option<String> {
        self.within(CAUSE_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_depends_on_joins_them() {
        for u in Upstream::ALL {
            assert_eq!(Upstream::parse(u.name()), Some(u));
            assert_eq!(Upstream::parse(&u.display_name().to_uppercase()), Some(u));
        }
        assert_eq!(Upstream::parse("dynamodb"), None);
        let v = depends_on([Upstream::EventBridge, Upstream::CloudWatch]);
        assert_eq!(v, "eventbridge,cloudwatch");
        assert_eq!(
            parse_depends_on(&v),
            Ok(vec![Upstream::EventBridge, Upstream::CloudWatch])
        );
        assert_eq!(depends_on([]), "");
        assert_eq!(parse_depends_on(""), Ok(vec![]));
        assert!(parse_depends_on("kinesis,s3").is_err());
    }

    #[test]
    fn a_failed_call_names_the_upstream_operation_and_code() {
        let s = tonic::Status::unavailable("shard map unusable");
        assert_eq!(
            Upstream::Kinesis.describe("PutRecords", &s),
            "Kinesis PutRecords UNAVAILABLE: shard map unusable"
        );
        let e = tonic::Status::from(Upstream::Ecs.error("RunTask", s));
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert_eq!(e.message(), "ECS RunTask UNAVAILABLE: shard map unusable");
    }

    #[test]
    fn causes_join_only_what_applies() {
        assert_eq!(join_causes([None, None]), "");
        assert_eq!(
            join_causes([Some("a".into()), None, Some("b".into())]),
            "a; b"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_explains_now_only_within_the_window() {
        let f = RecentFailure::new();
        assert_eq!(f.recent(), None);
        f.record("Kinesis PutRecords UNAVAILABLE");
        assert_eq!(
            f.recent().as_deref(),
            Some("Kinesis PutRecords UNAVAILABLE")
        );
        tokio::time::advance(CAUSE_WINDOW).await;
        assert!(f.recent().is_some(), "the window's edge is still recent");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(f.recent(), None);
    }
}
