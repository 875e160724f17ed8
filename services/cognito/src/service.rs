//! Cognito's webserver: the gRPC API behind a bounded worker pool. Every call,
//! success or failure, appends an access record to the `AccessLogBuffer` before
//! it answers, holding its worker while it does: in bug mode a full buffer
//! blocks the workers and new sign-ins queue behind them, as on 2020-11-25.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cascade_core::deps::{self, Upstream};
use cascade_core::serve::{StatusSource, process_status};
use cascade_core::{ServiceError, now_ms};
use cascade_proto::cognito as pb;
use cascade_proto::cognito::cognito_server::Cognito;
use cascade_proto::control::ProcessStatus;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::access_log::{AccessLogBuffer, Appended, Mode};
use crate::pool::{CognitoError, UserPool};

/// Region and pool id written into access records, as Cognito's own logs name them.
const REGION: &str = "us-east-1";
const USER_POOL_ID: &str = "us-east-1_Cascade01";

/// How a Cognito instance is set up (from flags, or directly in tests).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Instance name reported in status and access records.
    pub name: String,
    /// What handlers do when the access log is full.
    pub mode: Mode,
    /// Access-log buffer capacity in bytes.
    pub buffer_capacity: usize,
    /// Wall-clock lifetime of tokens and credentials.
    pub token_ttl: Duration,
    /// Webserver workers: requests served at once; the rest queue.
    pub max_in_flight: usize,
    /// Seed users (name, password).
    pub users: Vec<(String, String)>,
    /// Upstreams whose failure can impair this instance (Kinesis, when the
    /// access log has a Kinesis client).
    pub depends_on: Vec<Upstream>,
}

/// The API names written into access records.
#[derive(Debug, Clone, Copy)]
enum Api {
    SignUp,
    SignIn,
    ValidateToken,
    GetCredentials,
}

impl Api {
    fn as_str(self) -> &'static str {
        match self {
            Self::SignUp => "SignUp",
            Self::SignIn => "InitiateAuth",
            Self::ValidateToken => "GetUser",
            Self::GetCredentials => "GetCredentialsForIdentity",
        }
    }
}

/// One API-access record, as streamed to Kinesis (one JSON object).
#[derive(Debug, serde::Serialize)]
struct AccessRecord<'a> {
    /// When the call was answered, ms since the Unix epoch.
    time_ms: i64,
    /// The Cognito API name.
    api: &'a str,
    /// Who the call was for ("" when unknown).
    username: &'a str,
    /// "OK" or the gRPC code name.
    outcome: &'a str,
    /// Random, UUID-shaped request id (also the partition key).
    request_id: &'a str,
    /// The caller's address, when known.
    source: &'a str,
    /// The instance that served the call.
    instance: &'a str,
    /// The user pool the call was for.
    user_pool_id: &'a str,
    /// The region, as in Cognito's own records.
    region: &'a str,
}

/// A fresh request id: a random UUID.
fn request_id() -> String {
    cascade_core::random_uuid()
}

/// Shared state of one Cognito instance.
#[derive(Debug)]
struct Inner {
    /// Instance settings as started.
    settings: Settings,
    /// Users and sessions.
    pool: UserPool,
    /// The access-log buffer the flusher drains.
    access_log: Arc<AccessLogBuffer>,
    /// The webserver's worker pool: one permit per request being served.
    workers: Semaphore,
    /// Successful sign-ins.
    sign_ins: AtomicU64,
    /// Calls answered (any outcome).
    requests: AtomicU64,
    /// Calls answered with an error.
    errors: AtomicU64,
}

/// The Cognito service: gRPC API, Control status and live settings.
#[derive(Debug, Clone)]
pub struct CognitoService(Arc<Inner>);

impl CognitoService {
    /// An instance with an empty access log; validates the settings.
    pub fn new(settings: Settings) -> Result<Self, ServiceError> {
        crate::access_log::validate_capacity(settings.buffer_capacity)?;
        if settings.max_in_flight == 0 {
            return Err(ServiceError::invalid("max_in_flight: must be at least 1"));
        }
        let pool = UserPool::new(settings.token_ttl, &settings.users)?;
        Ok(Self(Arc::new(Inner {
            access_log: Arc::new(AccessLogBuffer::new(
                settings.buffer_capacity,
                settings.mode,
            )),
            workers: Semaphore::new(settings.max_in_flight),
            pool,
            settings,
            sign_ins: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })))
    }

    /// The buffer the flusher must drain.
    pub fn access_log(&self) -> Arc<AccessLogBuffer> {
        self.0.access_log.clone()
    }

    /// Why customer calls fail now, naming the upstream, or "" (see
    /// [`deps::CAUSE_KEY`]). Handlers blocked on the buffer are the failure;
    /// the buffer is full only because flushes to Kinesis fail, so the last
    /// flush error, when recent, is the cause. Shed records (fixed mode) fail
    /// no customer call, so they are no cause.
    pub fn cause(&self) -> String {
        let b = self.0.access_log.stats();
        if b.blocked_handlers == 0 {
            return String::new();
        }
        self.0
            .access_log
            .recent_flush_failure()
            .map(|flush| {
                format!(
                    "handlers blocked on the access-log buffer ({} blocked, {} of {} bytes held, {} of {} workers busy); last flush: {flush}",
                    b.blocked_handlers,
                    b.bytes,
                    b.capacity,
                    self.in_flight(),
                    self.0.settings.max_in_flight
                )
            })
            .unwrap_or_default()
    }

    /// Requests holding a worker right now.
    pub fn in_flight(&self) -> usize {
        self.0.settings.max_in_flight - self.0.workers.available_permits()
    }

    /// Serves one call: takes a worker (queueing if all are busy), does the
    /// work, appends the access record (blocking in bug mode while the buffer
    /// is full), then answers. Nothing here times out: the caller's deadline
    /// cancels the call, wherever it is waiting.
    async fn call<T>(
        &self,
        api: Api,
        source: Option<SocketAddr>,
        work: impl FnOnce(&UserPool) -> (String, Result<T, CognitoError>),
    ) -> Result<T, Status> {
        let _worker = self
            .0
            .workers
            .acquire()
            .await
            .expect("the worker pool is never closed");
        let (username, result) = work(&self.0.pool);
        // The record carries what was asked, bounded: an unvalidated
        // username of a megabyte would make a record Kinesis refuses for
        // good, and the flush would keep retrying it (found by
        // tests/tests/hostile_rpc.rs).
        let username: String = username
            .chars()
            .take(crate::pool::MAX_USERNAME_CHARS + 1)
            .collect();
        let outcome = match &result {
            Ok(_) => "OK",
            Err(e) => e.code_name(),
        };
        let id = request_id();
        let source = source.map(|a| a.to_string()).unwrap_or_default();
        let record = AccessRecord {
            time_ms: now_ms(),
            api: api.as_str(),
            username: &username,
            outcome,
            request_id: &id,
            source: &source,
            instance: &self.0.settings.name,
            user_pool_id: USER_POOL_ID,
            region: REGION,
        };
        let data = serde_json::to_vec(&record).expect("an access record always serialises");
        if self.0.access_log.append(id, data).await == Appended::Shed {
            tracing::trace!(api = api.as_str(), "access record shed: buffer full");
        }
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.0.errors.fetch_add(1, Ordering::Relaxed);
        }
        result.map_err(Status::from)
    }
}

#[tonic::async_trait]
impl Cognito for CognitoService {
    async fn sign_up(
        &self,
        req: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::SignUpResponse>, Status> {
        let source = req.remote_addr();
        let r = req.into_inner();
        self.call(Api::SignUp, source, |pool| {
            (r.username.clone(), pool.sign_up(&r.username, &r.password))
        })
        .await?;
        Ok(Response::new(pb::SignUpResponse {}))
    }

    async fn sign_in(
        &self,
        req: Request<pb::SignInRequest>,
    ) -> Result<Response<pb::SignInResponse>, Status> {
        let source = req.remote_addr();
        let r = req.into_inner();
        let issued = self
            .call(Api::SignIn, source, |pool| {
                (r.username.clone(), pool.sign_in(&r.username, &r.password))
            })
            .await?;
        self.0.sign_ins.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(pb::SignInResponse {
            token: issued.token,
            expires_at_ms: issued.expires_at_ms,
        }))
    }

    async fn validate_token(
        &self,
        req: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let source = req.remote_addr();
        let r = req.into_inner();
        let (username, expires_at_ms) = self
            .call(Api::ValidateToken, source, |pool| {
                let result = pool.validate(&r.token);
                let user = result.as_ref().map(|(u, _)| u.clone()).unwrap_or_default();
                (user, result)
            })
            .await?;
        Ok(Response::new(pb::ValidateTokenResponse {
            username,
            expires_at_ms,
        }))
    }

    async fn get_credentials(
        &self,
        req: Request<pb::GetCredentialsRequest>,
    ) -> Result<Response<pb::GetCredentialsResponse>, Status> {
        let source = req.remote_addr();
        let r = req.into_inner();
        let (_, creds) = self
            .call(Api::GetCredentials, source, |pool| {
                let result = pool.credentials(&r.token);
                let user = result.as_ref().map(|(u, _)| u.clone()).unwrap_or_default();
                (user, result)
            })
            .await?;
        Ok(Response::new(pb::GetCredentialsResponse {
            access_key_id: creds.access_key_id,
            secret_access_key: creds.secret_access_key,
            session_token: creds.session_token,
            expires_at_ms: creds.expires_at_ms,
        }))
    }
}

impl StatusSource for CognitoService {
    fn status(&self) -> ProcessStatus {
        let b = self.0.access_log.stats();
        let mut info = HashMap::new();
        let mut put = |k: &str, v: String| {
            info.insert(k.to_owned(), v);
        };
        put("mode", b.mode.as_str().to_owned());
        put("buffer_bytes", b.bytes.to_string());
        put("buffer_capacity", b.capacity.to_string());
        put("buffered_records", b.records.to_string());
        put("blocked_handlers", b.blocked_handlers.to_string());
        put("shed_records", b.shed_records.to_string());
        put("flushed_records", b.flushed_records.to_string());
        put("flush_failures", b.flush_failures.to_string());
        put("last_flush_error", b.last_flush_error);
        put(
            "sign_ins",
            self.0.sign_ins.load(Ordering::Relaxed).to_string(),
        );
        put("in_flight", self.in_flight().to_string());
        put("max_in_flight", self.0.settings.max_in_flight.to_string());
        put(
            "requests",
            self.0.requests.load(Ordering::Relaxed).to_string(),
        );
        put("errors", self.0.errors.load(Ordering::Relaxed).to_string());
        put("users", self.0.pool.user_count().to_string());
        put("sessions", self.0.pool.session_count().to_string());
        put(
            deps::DEPENDS_ON_KEY,
            deps::depends_on(self.0.settings.depends_on.iter().copied()),
        );
        put(deps::CAUSE_KEY, self.cause());
        process_status(self.0.settings.name.clone(), info)
    }

    fn configure(&self, key: &str, value: &str) -> Result<String, ServiceError> {
        match key {
            "mode" => {
                let mode = Mode::parse(value)?;
                self.0.access_log.set_mode(mode);
                tracing::info!(mode = mode.as_str(), "access-log mode changed");
                Ok(mode.as_str().to_owned())
            }
            "access_log_buffer_bytes" => {
                let bytes: usize = value.trim().parse().map_err(|_| {
                    ServiceError::invalid(format!(
                        "value: {value:?} is not a byte count; access_log_buffer_bytes takes a whole number"
                    ))
                })?;
                let applied = self.0.access_log.set_capacity(bytes)?;
                tracing::info!(capacity = applied, "access-log buffer capacity changed");
                Ok(applied.to_string())
            }
            other => Err(ServiceError::invalid(format!(
                "key: {other:?} is not a setting of cognito; valid are \"mode\" and \"access_log_buffer_bytes\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use cascade_core::testkit::{eventually_async, holds};

    use super::*;
    use crate::access_log::{AccessLogSink, MIN_CAPACITY};

    fn settings(mode: Mode, max_in_flight: usize) -> Settings {
        Settings {
            name: "cognito-test".into(),
            mode,
            buffer_capacity: MIN_CAPACITY,
            token_ttl: Duration::from_secs(60),
            max_in_flight,
            users: vec![("operator".into(), "operator-password".into())],
            depends_on: vec![Upstream::Kinesis],
        }
    }

    fn sign_in_req(u: &str, p: &str) -> Request<pb::SignInRequest> {
        Request::new(pb::SignInRequest {
            username: u.into(),
            password: p.into(),
        })
    }

    fn info(svc: &CognitoService, key: &str) -> String {
        svc.status().info.get(key).cloned().unwrap_or_default()
    }

    /// A sink that accepts everything.
    struct OkSink;

    impl AccessLogSink for OkSink {
        async fn put_records(&self, _: Vec<(String, Vec<u8>)>) -> Result<(), ServiceError> {
            Ok(())
        }
    }

    /// Kinesis failing as the front-ends do when their shard-maps are unusable.
    struct DownSink;

    impl AccessLogSink for DownSink {
        async fn put_records(&self, _: Vec<(String, Vec<u8>)>) -> Result<(), ServiceError> {
            Err(Upstream::Kinesis.error(
                "PutRecords",
                Status::unavailable("shard map unusable (test double)"),
            ))
        }
    }

    /// Signs in until the next sign-in's record would not fit in the buffer.
    async fn fill(svc: &CognitoService) {
        let sign_in = || svc.sign_in(sign_in_req("operator", "operator-password"));
        assert!(sign_in().await.is_ok());
        // Sign-in records of one user in one process all have the same length.
        let len = svc.access_log().stats().bytes;
        while svc.access_log().stats().bytes + len <= MIN_CAPACITY {
            assert!(sign_in().await.is_ok());
        }
    }

    #[tokio::test]
    async fn a_huge_username_is_refused_and_logs_a_bounded_record() {
        let svc = CognitoService::new(settings(Mode::Bug, 4)).expect("valid settings");
        let huge = "x".repeat(2 << 20);
        let e = svc
            .sign_up(Request::new(pb::SignUpRequest {
                username: huge.clone(),
                password: "p".into(),
            }))
            .await
            .err();
        assert_eq!(e.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
        // Before the fix, the first record (2 MiB) filled the buffer for
        // good and this call blocked forever.
        let e = tokio::time::timeout(Duration::from_secs(5), svc.sign_in(sign_in_req(&huge, "p")))
            .await
            .expect("a second call is not blocked by the first one's record")
            .err();
        assert_eq!(e.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
        let held = svc.0.access_log.stats().bytes;
        assert!(
            held < 2 * 1024,
            "two access records of a 2 MiB username hold {held} bytes"
        );
    }

    #[tokio::test]
    async fn happy_path_and_bad_input() {
        let svc = CognitoService::new(settings(Mode::Bug, 4)).expect("valid settings");
        let issued = svc
            .sign_in(sign_in_req("operator", "operator-password"))
            .await
            .expect("sign in")
            .into_inner();
        let v = svc
            .validate_token(Request::new(pb::ValidateTokenRequest {
                token: issued.token.clone(),
            }))
            .await
            .expect("validate")
            .into_inner();
        assert_eq!(v.username, "operator");
        let c = svc
            .get_credentials(Request::new(pb::GetCredentialsRequest {
                token: issued.token,
            }))
            .await
            .expect("credentials")
            .into_inner();
        assert!(c.access_key_id.starts_with("ASIA"));

        let e = svc.sign_in(sign_in_req("", "x")).await.err();
        assert_eq!(e.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
        let e = svc.sign_in(sign_in_req("operator", "nope")).await.err();
        assert_eq!(e.map(|s| s.code()), Some(tonic::Code::Unauthenticated));
        let e = svc
            .validate_token(Request::new(pb::ValidateTokenRequest {
                token: "feedface".into(),
            }))
            .await
            .err();
        assert_eq!(e.map(|s| s.code()), Some(tonic::Code::Unauthenticated));
        let e = svc
            .sign_up(Request::new(pb::SignUpRequest {
                username: "x".into(),
                password: String::new(),
            }))
            .await
            .err();
        assert_eq!(e.map(|s| s.code()), Some(tonic::Code::InvalidArgument));

        // Every call, failed or not, left one JSON access record.
        let s = svc.access_log().stats();
        assert_eq!(s.records, 7);
        assert!(
            (150..=300).contains(&(s.bytes / s.records)),
            "record size {}",
            s.bytes / s.records
        );
        assert_eq!(info(&svc, "sign_ins"), "1");
        assert_eq!(info(&svc, "buffered_records"), "7");
    }

    #[tokio::test]
    async fn full_buffer_blocks_workers_until_drained() {
        let svc = CognitoService::new(settings(Mode::Bug, 1)).expect("valid settings");
        fill(&svc).await;
        let s = svc.clone();
        let blocked = tokio::spawn(async move {
            s.sign_in(sign_in_req("operator", "operator-password"))
                .await
                .map(|_| ())
        });
        eventually_async("a blocked handler", Duration::from_secs(1), || {
            let blocked = info(&svc, "blocked_handlers");
            std::future::ready(holds(blocked == "1", || {
                format!("blocked_handlers {blocked:?}")
            }))
        })
        .await;
        assert_eq!(svc.in_flight(), 1);

        // The only worker is held: the next sign-in queues and the client's deadline ends it.
        let queued = tokio::time::timeout(
            Duration::from_millis(30),
            svc.sign_in(sign_in_req("operator", "operator-password")),
        )
        .await;
        assert!(queued.is_err(), "a queued call must not be answered");

        // The flusher frees space: the blocked handler answers.
        let flushed = svc.access_log().flush_once(&OkSink, 500).await;
        assert!(flushed.is_ok_and(|n| n > 0));
        let done = tokio::time::timeout(Duration::from_secs(1), blocked).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
        assert_eq!(info(&svc, "blocked_handlers"), "0");
    }

    #[tokio::test]
    async fn fixed_mode_sheds_and_serves() {
        let svc = CognitoService::new(settings(Mode::Bug, 2)).expect("valid settings");
        assert_eq!(
            svc.configure("mode", "fixed").ok().as_deref(),
            Some("fixed")
        );
        fill(&svc).await;
        for _ in 0..5 {
            let r = tokio::time::timeout(
                Duration::from_secs(1),
                svc.sign_in(sign_in_req("operator", "operator-password")),
            )
            .await;
            assert!(matches!(r, Ok(Ok(_))), "{r:?}");
        }
        assert!(
            info(&svc, "shed_records")
                .parse::<u64>()
                .is_ok_and(|n| n >= 4)
        );
        assert_eq!(info(&svc, "mode"), "fixed");
    }

    #[test]
    fn configure_validates() {
        let svc = CognitoService::new(settings(Mode::Bug, 2)).expect("valid settings");
        assert!(svc.configure("mode", "maybe").is_err());
        assert!(svc.configure("access_log_buffer_bytes", "lots").is_err());
        assert!(svc.configure("access_log_buffer_bytes", "1").is_err());
        assert!(svc.configure("nonsense", "1").is_err());
        assert_eq!(
            svc.configure("access_log_buffer_bytes", "1048576")
                .ok()
                .as_deref(),
            Some("1048576")
        );
        assert_eq!(info(&svc, "buffer_capacity"), "1048576");
    }

    #[tokio::test(start_paused = true)]
    async fn cause_names_kinesis_while_handlers_block_on_failing_flushes() {
        let svc = CognitoService::new(settings(Mode::Bug, 2)).expect("valid settings");
        assert_eq!(info(&svc, "depends_on"), "kinesis");
        fill(&svc).await;
        assert!(svc.access_log().flush_once(&DownSink, 500).await.is_err());
        assert_eq!(
            info(&svc, "cause"),
            "",
            "a failed flush alone fails no call"
        );

        let s = svc.clone();
        let blocked = tokio::spawn(async move {
            s.sign_in(sign_in_req("operator", "operator-password"))
                .await
                .map(|_| ())
        });
        eventually_async("a blocked handler", Duration::from_secs(1), || {
            let n = info(&svc, "blocked_handlers");
            async move { holds(n == "1", || format!("blocked_handlers {n}")) }
        })
        .await;
        let cause = info(&svc, "cause");
        assert!(
            cause.starts_with("handlers blocked on the access-log buffer (1 blocked"),
            "{cause}"
        );
        assert!(
            cause.contains("last flush: Kinesis PutRecords UNAVAILABLE: shard map unusable"),
            "{cause}"
        );

        // Still blocked, but the last failed flush is older than the window:
        // Kinesis no longer explains it (nothing retried since).
        tokio::time::advance(deps::CAUSE_WINDOW + Duration::from_millis(1)).await;
        assert_eq!(info(&svc, "cause"), "");
        assert!(svc.access_log().flush_once(&DownSink, 500).await.is_err());
        assert!(info(&svc, "cause").contains("Kinesis"));

        // Kinesis recovers: the flush frees the handler and the cause clears.
        assert!(svc.access_log().flush_once(&OkSink, 500).await.is_ok());
        let done = tokio::time::timeout(Duration::from_secs(1), blocked).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
        assert_eq!(info(&svc, "cause"), "");
    }

    #[tokio::test]
    async fn shed_records_in_fixed_mode_are_no_cause() {
        let svc = CognitoService::new(settings(Mode::Fixed, 2)).expect("valid settings");
        fill(&svc).await;
        assert!(svc.access_log().flush_once(&DownSink, 500).await.is_err());
        for _ in 0..3 {
            assert!(
                svc.sign_in(sign_in_req("operator", "operator-password"))
                    .await
                    .is_ok()
            );
        }
        assert_ne!(info(&svc, "shed_records"), "0");
        assert_eq!(info(&svc, "cause"), "");
        let mut no_client = settings(Mode::Fixed, 2);
        no_client.depends_on.clear();
        let svc = CognitoService::new(no_client).expect("valid settings");
        assert_eq!(info(&svc, "depends_on"), "");
    }
}
