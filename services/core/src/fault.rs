//! The fault layer: gRPC-level faults (latency, error, hang, blackhole) the
//! orchestrator injects live through `Control.InjectFault`. Inbound faults act
//! on calls this process serves (a tower layer on its server); outbound faults
//! (`to` set) act on the connections it opens to one dependency, below HTTP/2.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use cascade_proto::control::GrpcFault;
use hyper_util::rt::TokioIo;
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Sleep;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::ServiceError;

/// Paths no fault ever touches, so the orchestrator can always see a process's
/// health and list or clear its faults, whatever else is injected.
const EXEMPT_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/cascade.control.v1.Control/",
    "/grpc.reflection.",
];

/// Env var mapping instance names to addresses ("name=host:port,..."), so an
/// outbound fault's `to` can name a dependency instead of its address.
pub const PEERS_ENV: &str = "CASCADE_PEERS";

/// The canonical names of the 17 gRPC status codes, in code order.
const CODE_NAMES: [(&str, tonic::Code); 17] = [
    ("OK", tonic::Code::Ok),
    ("CANCELLED", tonic::Code::Cancelled),
    ("UNKNOWN", tonic::Code::Unknown),
    ("INVALID_ARGUMENT", tonic::Code::InvalidArgument),
    ("DEADLINE_EXCEEDED", tonic::Code::DeadlineExceeded),
    ("NOT_FOUND", tonic::Code::NotFound),
    ("ALREADY_EXISTS", tonic::Code::AlreadyExists),
    ("PERMISSION_DENIED", tonic::Code::PermissionDenied),
    ("RESOURCE_EXHAUSTED", tonic::Code::ResourceExhausted),
    ("FAILED_PRECONDITION", tonic::Code::FailedPrecondition),
    ("ABORTED", tonic::Code::Aborted),
    ("OUT_OF_RANGE", tonic::Code::OutOfRange),
    ("UNIMPLEMENTED", tonic::Code::Unimplemented),
    ("INTERNAL", tonic::Code::Internal),
    ("UNAVAILABLE", tonic::Code::Unavailable),
    ("DATA_LOSS", tonic::Code::DataLoss),
    ("UNAUTHENTICATED", tonic::Code::Unauthenticated),
];

/// Parses a gRPC code name such as `UNAVAILABLE` (case-insensitive).
pub fn parse_code(name: &str) -> Option<tonic::Code> {
    let upper = name.trim().to_ascii_uppercase();
    CODE_NAMES
        .iter()
        .find(|(n, _)| *n == upper)
        .map(|(_, c)| *c)
}

/// The canonical name of a gRPC status code, e.g. `UNAVAILABLE`.
pub fn code_name(code: tonic::Code) -> &'static str {
    CODE_NAMES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or("UNKNOWN", |(n, _)| n)
}

/// The service an instance belongs to: the instance name without a trailing
/// `-<digits>` (`cognito-0` -> `cognito`, `kinesis-frontend-3` -> `kinesis-frontend`).
pub fn service_name(instance: &str) -> &str {
    match instance.rsplit_once('-') {
        Some((service, n))
            if !service.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            service
        }
        _ => instance,
    }
}

/// The calling instance named in a `user-agent` header (`cascade/<instance> tonic/x`).
pub fn caller_instance(user_agent: &str) -> Option<&str> {
    user_agent
        .split_whitespace()
        .find_map(|token| token.strip_prefix("cascade/"))
        .filter(|name| !name.is_empty())
}

/// Whether `name` (an instance or a service name) designates `instance`.
fn names(name: &str, instance: &str) -> bool {
    name == instance || name == service_name(instance)
}

/// Whether an outbound fault's `to` designates the dependency at `target`
/// (`host:port`), directly or through a `CASCADE_PEERS`-style list.
pub fn to_matches(to: &str, target: &str, peers: &str) -> bool {
    to == target
        || peers
            .split(',')
            .filter_map(|entry| entry.split_once('='))
            .any(|(name, addr)| addr.trim() == target && names(to, name.trim()))
}

/// What a fault does once a call (or connection) is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Latency,
    Error(tonic::Code),
    Hang,
    Blackhole,
}

/// One injected fault, with its own seeded draws.
struct ActiveFault {
    /// The fault as injected, for `ListFaults`.
    spec: GrpcFault,
    /// Unique per injection, so a connection's cached per-fault decisions
    /// never carry over to a replacement with the same id.
    serial: u64,
    /// The parsed kind.
    kind: Kind,
    /// Source of the probability and jitter draws, seeded from `spec.seed`
    /// so a run can be replayed.
    rng: Mutex<SmallRng>,
}

impl ActiveFault {
    /// Draws whether this occurrence is affected.
    fn hits(&self) -> bool {
        let p = self.spec.probability;
        if p >= 1.0 {
            return true;
        }
        let mut rng = self.rng.lock();
        rng.random::<f64>() < p
    }

    /// The delay of one latency occurrence: fixed part plus uniform jitter.
    fn delay(&self) -> Duration {
        let jitter = if self.spec.jitter_ms > 0 {
            let mut rng = self.rng.lock();
            rng.random_range(0..=self.spec.jitter_ms)
        } else {
            0
        };
        Duration::from_millis(self.spec.latency_ms.saturating_add(jitter))
    }

    /// Whether this fault acts on calls served here (not on outbound connections).
    fn inbound(&self) -> bool {
        self.spec.to.is_empty()
    }

    /// Whether an inbound call to `path` from `caller` is in this fault's scope.
    fn matches_call(&self, path: &str, caller: Option<&str>) -> bool {
        let method = &self.spec.method;
        let method_ok = method.is_empty()
            || method == path
            || Some(method.as_str()) == path.strip_prefix('/')
            || Some(method.as_str()) == path.rsplit('/').next();
        let from = &self.spec.from;
        let from_ok = from.is_empty() || caller.is_some_and(|c| names(from, c));
        method_ok && from_ok
    }
}

/// The active faults of this process. Cheap to clone: clones share state.
#[derive(Clone, Default)]
pub struct FaultRegistry {
    /// Shared state behind every clone.
    inner: Arc<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    /// Active faults in injection order; the first that matches and hits applies.
    faults: RwLock<Vec<Arc<ActiveFault>>>,
    /// Active outbound faults, so connections skip the lock when there are none.
    outbound: AtomicUsize,
    /// Source of [`ActiveFault::serial`].
    next_serial: AtomicU64,
    /// Signalled on every inject and clear, so idle or stalled connections
    /// look again at once (break on a new error fault, resume on a clear).
    changed: Arc<Notify>,
}

/// The process-global registry that `Control` fills and every server layer
/// and client connection built by [`crate::clients`] consults.
pub fn registry() -> &'static FaultRegistry {
    static REGISTRY: OnceLock<FaultRegistry> = OnceLock::new();
    REGISTRY.get_or_init(FaultRegistry::default)
}

/// What an inbound call gets.
enum Inbound {
    Delay(Duration),
    Fail(tonic::Status),
    Hang,
    Blackhole,
}

/// What an outbound connection does with one operation.
#[derive(Debug, PartialEq)]
enum Verdict {
    Pass,
    Delay(Duration),
    Refuse(String),
    Stall,
}

/// The operation an outbound verdict is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Connect,
    Read,
    Write,
}

/// A connection's memory of one outbound fault: whether it names this
/// connection's dependency and, for stalls, whether this connection was drawn.
struct Seen {
    /// [`ActiveFault::serial`] of the fault.
    serial: u64,
    /// Whether its `to` designates this connection's dependency.
    matches: bool,
    /// For faults drawn once per connection (hang, blackhole, and error on an
    /// established connection): the draw, once made.
    drawn: Option<bool>,
}

impl FaultRegistry {
    /// An empty registry (tests; processes use [`registry`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates and activates `fault`, replacing an active fault with the same id.
    pub fn inject(&self, fault: GrpcFault) -> Result<(), ServiceError> {
        let kind = validate(&fault)?;
        tracing::info!(
            id = %fault.id,
            kind = %fault.kind,
            seed = fault.seed,
            probability = fault.probability,
            method = %fault.method,
            from = %fault.from,
            to = %fault.to,
            "fault injected"
        );
        let active = Arc::new(ActiveFault {
            serial: self.inner.next_serial.fetch_add(1, Ordering::Relaxed),
            kind,
            rng: Mutex::new(SmallRng::seed_from_u64(fault.seed)),
            spec: fault,
        });
        let mut faults = self.write();
        match faults.iter_mut().find(|f| f.spec.id == active.spec.id) {
            Some(slot) => *slot = active,
            None => faults.push(active),
        }
        self.recount(&faults);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// Removes the fault `id`, or every fault when `id` is empty; returns how many.
    pub fn clear(&self, id: &str) -> u32 {
        let mut faults = self.write();
        let before = faults.len();
        faults.retain(|f| !id.is_empty() && f.spec.id != id);
        let cleared = (before - faults.len()) as u32;
        self.recount(&faults);
        self.inner.changed.notify_waiters();
        if cleared > 0 {
            tracing::info!(id, cleared, "faults cleared");
        }
        cleared
    }

    /// The active faults, in injection order.
    pub fn list(&self) -> Vec<GrpcFault> {
        self.read().iter().map(|f| f.spec.clone()).collect()
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Arc<ActiveFault>>> {
        self.inner.faults.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<Arc<ActiveFault>>> {
        self.inner.faults.write()
    }

    /// A future that completes at the next inject or clear.
    fn changed(&self) -> Pin<Box<OwnedNotified>> {
        Box::pin(self.inner.changed.clone().notified_owned())
    }

    fn recount(&self, faults: &[Arc<ActiveFault>]) {
        let outbound = faults.iter().filter(|f| !f.inbound()).count();
        self.inner.outbound.store(outbound, Ordering::Relaxed);
    }

    /// The fault action for an inbound call, if any.
    fn inbound(&self, path: &str, caller: Option<&str>) -> Option<(String, Inbound)> {
        if EXEMPT_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return None;
        }
        let faults = self.read();
        let fault = faults
            .iter()
            .filter(|f| f.inbound() && f.matches_call(path, caller))
            .find(|f| f.hits())?;
        let action = match fault.kind {
            Kind::Latency => Inbound::Delay(fault.delay()),
            Kind::Error(code) => {
                let message = if fault.spec.message.is_empty() {
                    format!("injected fault {}", fault.spec.id)
                } else {
                    fault.spec.message.clone()
                };
                Inbound::Fail(tonic::Status::new(code, message))
            }
            Kind::Hang => Inbound::Hang,
            Kind::Blackhole => Inbound::Blackhole,
        };
        Some((fault.spec.id.clone(), action))
    }

    /// The verdict for one operation on a connection to `target`.
    fn outbound(&self, target: &str, op: Op, seen: &mut Vec<Seen>) -> Verdict {
        if self.inner.outbound.load(Ordering::Relaxed) == 0 {
            seen.clear();
            return Verdict::Pass;
        }
        let faults = self.read();
        // Forget faults that were cleared, so the cache stays small.
        seen.retain(|s| faults.iter().any(|f| f.serial == s.serial));
        let mut peers = None;
        for fault in faults.iter().filter(|f| !f.inbound()) {
            let idx = match seen.iter().position(|s| s.serial == fault.serial) {
                Some(i) => i,
                None => {
                    // Read at use time: the orchestrator sets it before the process
                    // starts, and reading it here keeps tests free of global setup.
                    let peers =
                        peers.get_or_insert_with(|| std::env::var(PEERS_ENV).unwrap_or_default());
                    seen.push(Seen {
                        serial: fault.serial,
                        matches: to_matches(&fault.spec.to, target, peers),
                        drawn: None,
                    });
                    seen.len() - 1
                }
            };
            if !seen[idx].matches {
                continue;
            }
            // An HTTP/2 connection carries every call to the dependency, so what
            // happens to an established connection is drawn once for it.
            let mut per_connection = || *seen[idx].drawn.get_or_insert_with(|| fault.hits());
            let refused = || {
                Verdict::Refuse(format!(
                    "injected fault {}: connection to {target} refused",
                    fault.spec.id
                ))
            };
            let verdict = match (fault.kind, op) {
                (Kind::Error(_), Op::Connect) if fault.hits() => refused(),
                (Kind::Error(_), Op::Read | Op::Write) if per_connection() => refused(),
                (Kind::Latency, Op::Write) if fault.hits() => Verdict::Delay(fault.delay()),
                (Kind::Hang, Op::Read) | (Kind::Blackhole, Op::Read | Op::Write)
                    if per_connection() =>
                {
                    Verdict::Stall
                }
                _ => Verdict::Pass,
            };
            if verdict != Verdict::Pass {
                return verdict;
            }
        }
        Verdict::Pass
    }
}

/// Checks a fault before it goes live; errors name the offending field.
fn validate(f: &GrpcFault) -> Result<Kind, ServiceError> {
    if f.id.trim().is_empty() {
        return Err(ServiceError::invalid("id: must not be empty"));
    }
    if !(f.probability > 0.0 && f.probability <= 1.0) {
        return Err(ServiceError::invalid(format!(
            "probability: {} is outside (0, 1]",
            f.probability
        )));
    }
    let kind = match f.kind.as_str() {
        "latency" => {
            if f.latency_ms == 0 && f.jitter_ms == 0 {
                return Err(ServiceError::invalid(
                    "latency_ms: a latency fault needs latency_ms or jitter_ms > 0",
                ));
            }
            Kind::Latency
        }
        "error" => match parse_code(&f.code) {
            Some(tonic::Code::Ok) => {
                return Err(ServiceError::invalid("code: OK is not an error"));
            }
            Some(code) => Kind::Error(code),
            None => {
                return Err(ServiceError::invalid(format!(
                    "code: {:?} is not a gRPC code name (e.g. UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)",
                    f.code
                )));
            }
        },
        "hang" => Kind::Hang,
        "blackhole" => Kind::Blackhole,
        other => {
            return Err(ServiceError::invalid(format!(
                "kind: {other:?} is not one of latency, error, hang, blackhole"
            )));
        }
    };
    if !f.to.is_empty() && !f.method.is_empty() {
        return Err(ServiceError::invalid(
            "method: outbound faults (to set) act on connections and cannot select a method",
        ));
    }
    if !f.to.is_empty() && !f.from.is_empty() {
        return Err(ServiceError::invalid(
            "from: inbound only; it cannot be combined with to",
        ));
    }
    Ok(kind)
}

/// Tower layer applying a registry's inbound faults to every call a server handles.
#[derive(Clone)]
pub struct FaultLayer {
    /// Where the active faults live.
    registry: FaultRegistry,
}

impl FaultLayer {
    /// A layer consulting `registry` on every call.
    pub fn new(registry: FaultRegistry) -> Self {
        Self { registry }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            registry: self.registry.clone(),
        }
    }
}

/// The service [`FaultLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct FaultService<S> {
    /// The wrapped service: a server's routes.
    inner: S,
    /// Where the active faults live.
    registry: FaultRegistry,
}

impl<S, B, RB> Service<http::Request<B>> for FaultService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let caller = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(caller_instance);
        let path = req.uri().path();
        let Some((id, action)) = self.registry.inbound(path, caller) else {
            return Box::pin(self.inner.call(req));
        };
        tracing::debug!(fault = %id, %path, "fault applied");
        // The clone that was polled ready serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        match action {
            Inbound::Delay(d) => Box::pin(async move {
                tokio::time::sleep(d).await;
                inner.call(req).await
            }),
            Inbound::Fail(status) => Box::pin(async move { Ok(status.into_http()) }),
            // The handler runs (its side effects happen) but the answer is lost;
            // the caller's deadline ends the call and drops this future.
            Inbound::Hang => Box::pin(async move {
                let _lost = inner.call(req).await;
                std::future::pending().await
            }),
            Inbound::Blackhole => Box::pin(std::future::pending()),
        }
    }
}

/// Tonic connector that opens plain TCP connections to a dependency and
/// subjects them to the registry's outbound faults for that dependency.
#[derive(Clone)]
pub struct FaultConnector {
    /// Where the active faults live.
    registry: FaultRegistry,
}

impl FaultConnector {
    /// A connector consulting `registry` on every connection.
    pub fn new(registry: FaultRegistry) -> Self {
        Self { registry }
    }
}

impl Service<http::Uri> for FaultConnector {
    type Response = TokioIo<FaultyIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let registry = self.registry.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host"))
            })?;
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            let target = format!("{host}:{port}");
            let mut seen = Vec::new();
            if let Verdict::Refuse(why) = registry.outbound(&target, Op::Connect, &mut seen) {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, why));
            }
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let stream = TcpStream::connect((bare, port)).await?;
            // Small request/response exchanges: never let Nagle hold a call back.
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(FaultyIo {
                inner: stream,
                read_changed: registry.changed(),
                write_changed: registry.changed(),
                registry,
                target,
                seen,
                write_delay: None,
                write_due: false,
            }))
        })
    }
}

/// A connection to one dependency whose bytes obey the outbound faults for it.
pub struct FaultyIo {
    /// The real socket.
    inner: TcpStream,
    /// Where the active faults live.
    registry: FaultRegistry,
    /// The dependency, as `host:port` from its URI.
    target: String,
    /// Per-fault decisions made for this connection.
    seen: Vec<Seen>,
    /// An injected delay the pending write is waiting out.
    write_delay: Option<Pin<Box<Sleep>>>,
    /// The pending write already waited its delay: do not draw again for it.
    write_due: bool,
    /// Wakes a parked read when faults change: an idle connection must break
    /// on a new error fault, and a stalled one resume on a clear.
    read_changed: Pin<Box<OwnedNotified>>,
    /// Wakes a stalled write likewise (kept apart: each holds one waker).
    write_changed: Pin<Box<OwnedNotified>>,
}

/// Parks an operation until its socket or a fault change wakes it. A change
/// that already happened re-arms the watch and wakes at once, so the caller
/// looks at the faults again rather than missing it.
fn park<T>(
    changed: &mut Pin<Box<OwnedNotified>>,
    registry: &FaultRegistry,
    cx: &mut Context<'_>,
) -> Poll<T> {
    if changed.as_mut().poll(cx).is_ready() {
        *changed = registry.changed();
        cx.waker().wake_by_ref();
    }
    Poll::Pending
}

impl AsyncRead for FaultyIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this
            .registry
            .outbound(&this.target, Op::Read, &mut this.seen)
        {
            Verdict::Stall => park(&mut this.read_changed, &this.registry, cx),
            Verdict::Refuse(why) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, why)))
            }
            Verdict::Pass | Verdict::Delay(_) => match Pin::new(&mut this.inner).poll_read(cx, buf)
            {
                // An idle connection waits here; a new fault must reach it now.
                Poll::Pending => park(&mut this.read_changed, &this.registry, cx),
                ready => ready,
            },
        }
    }
}

impl AsyncWrite for FaultyIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_delay.is_none() && !this.write_due {
            match this
                .registry
                .outbound(&this.target, Op::Write, &mut this.seen)
            {
                Verdict::Pass => {}
                Verdict::Stall => return park(&mut this.write_changed, &this.registry, cx),
                Verdict::Refuse(why) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, why)));
                }
                Verdict::Delay(d) => this.write_delay = Some(Box::pin(tokio::time::sleep(d))),
            }
        }
        if let Some(delay) = this.write_delay.as_mut() {
            ready!(delay.as_mut().poll(cx));
            this.write_delay = None;
            this.write_due = true;
        }
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        this.write_due = false;
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;

/// Idle threads held by the `thread_hog` fault, and the flag that releases them.
static THREAD_HOG: Mutex<Vec<(Arc<std::sync::atomic::AtomicBool>, std::thread::Thread)>> =
    Mutex::new(Vec::new());

/// The `thread_hog` fault (Control key `thread_hog`): this process holds N
/// extra idle OS threads, inside its own kernel thread budget; 0 releases
/// them. Returns how many it holds; the kernel's refusal is an error naming it.
pub fn set_thread_hog(value: &str) -> Result<String, ServiceError> {
    let want: usize = value.trim().parse().map_err(|_| {
        ServiceError::invalid(format!(
            "value: {value:?} is not a number of threads (for key thread_hog)"
        ))
    })?;
    if want > 4096 {
        return Err(ServiceError::invalid(
            "value: at most 4096 threads (for key thread_hog)",
        ));
    }
    let mut hog = THREAD_HOG.lock();
    while hog.len() > want {
        if let Some((stop, t)) = hog.pop() {
            stop.store(true, std::sync::atomic::Ordering::Release);
            t.unpark();
        }
    }
    while hog.len() < want {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("thread-hog".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::park();
                }
            });
        match spawned {
            Ok(h) => hog.push((stop, h.thread().clone())),
            Err(e) => {
                return Err(ServiceError::ResourceExhausted(format!(
                    "thread_hog: the kernel refused thread {} of {want}: {e}",
                    hog.len() + 1
                )));
            }
        }
    }
    Ok(hog.len().to_string())
}
