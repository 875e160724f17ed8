//! A Kinesis front-end server: the client-facing Kinesis API, routed through
//! its `ShardMap`. Each front-end registers with membership, reads the
//! metadata store, and holds one OS thread per peer front-end reading that
//! peer's message stream: the mechanism that exhausted the kernel's thread
//! limit on 2020-11-25 once existing servers learned of new capacity.

pub mod api;
pub mod aws;
pub mod peerwire;
pub mod shardmap;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_core::clients;
use cascade_core::parse::{parse_fraction, parse_time_scale};
use cascade_core::retry::{RetryError, RetryPolicy, retry_until};
use cascade_core::serve::{self, StatusSource};
use cascade_core::ticker::Ticker;
use cascade_proto::control::{FrontendStatus, ProcessStatus};
use cascade_proto::frontend::{PeerMessage, ShardOwnership};
use cascade_proto::kinesis as pb;
use cascade_proto::kinesis::kinesis_client::KinesisClient;
use cascade_proto::kinesis::kinesis_server::KinesisServer;
use cascade_proto::kinesis::membership_client::MembershipClient;
use cascade_proto::kinesis::metadata_client::MetadataClient;
use parking_lot::{Mutex, MutexGuard};
use rand::{Rng as _, SeedableRng as _};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::shardmap::{PeerBody, PeerStats, ShardMap};

/// Where a booting front-end gets shard ownership from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bootstrap {
    /// From its neighbours' message streams (the 2020 behaviour).
    Peers,
    /// From the authoritative metadata store (AWS's remediation).
    MetadataStore,
}

/// Front-end settings.
#[derive(Debug, Clone, clap::Args)]
pub struct FrontendConfig {
    /// Member id in the fleet; the peer threads of other front-ends are named `peer-<id>`.
    #[arg(long, env = "CASCADE_ID")]
    pub id: String,
    /// Address of the back end (membership, metadata store, shards).
    #[arg(long, env = "CASCADE_BACKEND")]
    pub backend: String,
    /// Address peers and clients use to reach this front-end. Defaults to the bound address.
    #[arg(long, env = "CASCADE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Membership domain ("" is the main fleet; cells and partitioned fleets use their own).
    #[arg(long, env = "CASCADE_FLEET", default_value = "")]
    pub fleet: String,
    /// Incident seconds per wall second. The learning delay is one incident hour.
    #[arg(long, env = "CASCADE_TIME_SCALE", default_value_t = 360.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// Fraction of the learning delay removed at random per front-end: each
    /// front-end learns new members after (1 - jitter * u) incident hours, u in [0, 1).
    #[arg(long, env = "CASCADE_LEARNING_JITTER", default_value_t = 0.5, value_parser = parse_fraction)]
    pub learning_jitter: f64,
    /// Seed for this front-end's jitter (mixed with its id); logged at start.
    #[arg(long, env = "CASCADE_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Where a booting front-end reads shard ownership from.
    #[arg(long, env = "CASCADE_BOOTSTRAP", value_enum, default_value_t = Bootstrap::Peers)]
    pub bootstrap: Bootstrap,
    /// How often this front-end sends a message to each subscribed peer (wall time).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub gossip_interval: Duration,
    /// Most messages a second this front-end sends over all its subscribed
    /// peers: past `budget * interval` subscribers, each one's interval
    /// grows in proportion, so a front-end's gossip costs the same at any
    /// fleet size while it still holds one thread per peer (0: no budget,
    /// every subscriber gets a message each `--gossip-interval`). Below 50
    /// peers the default changes nothing.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub gossip_budget: u32,
    /// How often membership is polled (wall time).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub membership_poll: Duration,
    /// How often this front-end heartbeats to membership (wall time).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Stack reserved per peer thread, in KiB (virtual; only touched pages cost memory).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(64..=8192))]
    pub peer_stack_kib: u32,
    /// Deadline of each call to the back end.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub backend_timeout: Duration,
    /// Worker slots: how many requests (and shard-map snapshot fetches or
    /// serves) this front-end works on at once. Request handling and
    /// shard-map population share them, as in 2020.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_slots: u32,
    /// How long a request waits for a free worker slot before it fails
    /// UNAVAILABLE (wall time).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub slot_wait: Duration,
    /// MODEL: incident time a peer spends, holding one of its worker slots,
    /// producing and shipping a full shard-map snapshot to a booting
    /// front-end (the real fleet's map covers many thousands of shards; ours
    /// is small, so its cost is modelled as time, scaled like every clock).
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub snapshot_cost: Duration,
    /// MODEL: wall time a front-end spends serving each routed data-plane
    /// request, holding one of its worker slots. With it, what one
    /// front-end can carry is bounded (`worker_slots / request_cost`
    /// requests a second), so a partly restored fleet rejects the share of
    /// the load it cannot carry. 0 (the default) models no cost.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub request_cost: Duration,
    /// How long (incident time) a booting front-end waits for one peer's
    /// snapshot, holding a worker slot, before it gives the slot back and
    /// retries: four times the snapshot cost by default.
    #[arg(long, default_value = "12m", value_parser = humantime::parse_duration)]
    pub snapshot_timeout: Duration,
}

/// MODEL FLOOR: the least wall time a booting front-end gives one peer's
/// snapshot beyond its modelled cost. A fetch is real work too (a TCP
/// connect, the peer's scheduler, the transfer), which takes up to hundreds
/// of milliseconds on a loaded 2-core host. Without this floor a high time
/// scale turns the modelled timeout (12 incident minutes: 200 ms at 3600x)
/// into a race with the host, and a recovering fleet stalls because no
/// snapshot ever arrives in time, which is the host's doing, not the model's.
pub const SNAPSHOT_WALL_SLACK: Duration = Duration::from_secs(1);

impl FrontendConfig {
    /// The wall time a booting front-end waits for one peer's snapshot: the
    /// modelled `--snapshot-timeout` scaled to wall time, but never less than
    /// the scaled snapshot cost plus [`SNAPSHOT_WALL_SLACK`].
    pub fn snapshot_timeout_wall(&self) -> Duration {
        let modelled = self.snapshot_timeout.div_f64(self.time_scale);
        modelled.max(self.snapshot_cost.div_f64(self.time_scale) + SNAPSHOT_WALL_SLACK)
    }

    /// The interval between two messages to one subscriber when `subscribers`
    /// peers subscribe: `--gossip-interval`, stretched so the front-end sends
    /// at most `--gossip-budget` messages a second in all.
    pub fn gossip_every(&self, subscribers: u32) -> Duration {
        if self.gossip_budget == 0 {
            return self.gossip_interval;
        }
        let budgeted =
            Duration::from_secs_f64(f64::from(subscribers) / f64::from(self.gossip_budget));
        self.gossip_interval.max(budgeted)
    }

    /// This front-end's learning delay: one incident hour, minus its jitter.
    pub fn learning_delay(&self) -> Duration {
        let mut h = DefaultHasher::new();
        (self.seed, &self.id).hash(&mut h);
        let u: f64 = rand::rngs::SmallRng::seed_from_u64(h.finish()).random();
        Duration::from_secs_f64(3600.0 / self.time_scale * (1.0 - self.learning_jitter * u))
    }
}

/// A running front-end's shared state.
pub struct Frontend {
    config: FrontendConfig,
    addr: String,
    base_threads: u32,
    learning_delay: Duration,
    incarnation: AtomicU64,
    map: Mutex<ShardMap>,
    backend: Channel,
    owners: Mutex<HashMap<String, KinesisClient<Channel>>>,
    peer_body: PeerBody,
    /// Worker slots shared by request handling and shard-map population.
    slots: Arc<tokio::sync::Semaphore>,
    /// Snapshot fetches holding a slot now (this front-end booting).
    fetching: Arc<std::sync::atomic::AtomicU32>,
    /// Snapshot fetches that timed out.
    fetch_timeouts: Arc<AtomicU64>,
    /// Snapshots being produced for booting peers now.
    serving: std::sync::atomic::AtomicU32,
    /// Peers subscribed to this front-end's messages now.
    subscribers: Arc<std::sync::atomic::AtomicU32>,
    /// Requests that found no free slot in time.
    slot_timeouts: AtomicU64,
    /// Data-plane requests routed and served.
    requests_served: AtomicU64,
}

impl Frontend {
    fn map(&self) -> MutexGuard<'_, ShardMap> {
        self.map.lock()
    }

    /// A worker slot for one request, or UNAVAILABLE naming who holds them.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, cascade_core::ServiceError> {
        match tokio::time::timeout(self.config.slot_wait, self.slots.clone().acquire_owned()).await
        {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.slot_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(cascade_core::ServiceError::unavailable(format!(
                    "front-end busy: no free worker slot within {:?} ({} slots: {} fetching shard-map snapshots, {} serving snapshots to booting peers)",
                    self.config.slot_wait,
                    self.config.worker_slots,
                    self.fetching.load(Ordering::Relaxed),
                    self.serving.load(Ordering::Relaxed),
                )))
            }
        }
    }

    /// The modelled cost of serving one routed request (the caller holds
    /// its worker slot meanwhile).
    async fn serve(&self) {
        self.requests_served.fetch_add(1, Ordering::Relaxed);
        if !self.config.request_cost.is_zero() {
            tokio::time::sleep(self.config.request_cost).await;
        }
    }

    /// A client for the back end that owns a shard.
    fn owner_client(
        &self,
        owner: &str,
    ) -> Result<KinesisClient<Channel>, cascade_core::ServiceError> {
        let mut owners = self.owners.lock();
        if let Some(c) = owners.get(owner) {
            return Ok(c.clone());
        }
        let ch = clients::lazy_channel(owner, self.config.backend_timeout).map_err(|e| {
            cascade_core::ServiceError::Internal(format!("bad owner address {owner:?}: {e}"))
        })?;
        let c = KinesisClient::new(ch);
        owners.insert(owner.to_owned(), c.clone());
        Ok(c)
    }

    /// Re-reads the metadata store into the map.
    async fn refresh_metadata(&self) -> Result<(), tonic::Status> {
        let resp = MetadataClient::new(self.backend.clone())
            .describe_streams(pb::DescribeStreamsRequest {})
            .await?
            .into_inner();
        let mut map = self.map();
        if resp.version != map.metadata_version || map.streams.is_empty() {
            map.apply_metadata(resp);
        }
        Ok(())
    }

    async fn register(&self) -> Result<(), tonic::Status> {
        let resp = MembershipClient::new(self.backend.clone())
            .register(pb::RegisterRequest {
                id: self.config.id.clone(),
                addr: self.addr.clone(),
                fleet: self.config.fleet.clone(),
            })
            .await?
            .into_inner();
        self.incarnation.store(resp.incarnation, Ordering::Relaxed);
        Ok(())
    }

    /// Heartbeats to membership, registering again if it forgot us.
    async fn heartbeat(&self) -> Result<(), tonic::Status> {
        let ready = self.map().state == shardmap::MapState::Ready;
        let known = MembershipClient::new(self.backend.clone())
            .heartbeat(pb::HeartbeatRequest {
                id: self.config.id.clone(),
                incarnation: self.incarnation.load(Ordering::Relaxed),
                ready,
            })
            .await?
            .into_inner()
            .known;
        if !known {
            tracing::warn!("membership forgot us; registering again");
            self.register().await?;
        }
        Ok(())
    }

    /// Polls membership and (re)constructs the map when members are learned.
    async fn poll_membership(&self) -> Result<(), tonic::Status> {
        let members = MembershipClient::new(self.backend.clone())
            .list_members(pb::ListMembersRequest {
                fleet: self.config.fleet.clone(),
            })
            .await?
            .into_inner()
            .members;
        let mut map = self.map();
        let learned = map.apply_membership(
            &self.config.id,
            &members,
            Instant::now(),
            self.learning_delay,
        );
        if learned {
            map.construct(self.config.peer_stack_kib as usize * 1024, &self.peer_body);
        }
        map.check_populated();
        Ok(())
    }

    fn peer_message(&self, seq: u64) -> PeerMessage {
        let map = self.map();
        PeerMessage {
            from: self.config.id.clone(),
            incarnation: self.incarnation.load(Ordering::Relaxed),
            seq,
            metadata_version: map.metadata_version,
            ownership: map
                .streams
                .iter()
                .flat_map(|(stream, routes)| {
                    routes.iter().map(move |r| ShardOwnership {
                        stream_name: stream.clone(),
                        shard_id: r.shard_id.clone(),
                        owner: r.owner.clone(),
                    })
                })
                .collect(),
            sent_at_ms: cascade_core::now_ms(),
        }
    }
}

impl StatusSource for Frontend {
    fn status(&self) -> ProcessStatus {
        let mut map = self.map();
        map.check_populated();
        let detail = match &map.state {
            shardmap::MapState::Unusable(cause) => cause.clone(),
            shardmap::MapState::Building if map.snapshots_needed() > 0 => format!(
                "populating from peers: {} of {} snapshots in",
                map.snapshots_needed() - map.snapshots_missing(),
                map.snapshots_needed()
            ),
            _ => String::new(),
        };
        let info = [
            ("worker_slots", u64::from(self.config.worker_slots)),
            ("slots_free", self.slots.available_permits() as u64),
            (
                "snapshot_fetches",
                u64::from(self.fetching.load(Ordering::Relaxed)),
            ),
            (
                "snapshot_fetch_timeouts",
                self.fetch_timeouts.load(Ordering::Relaxed),
            ),
            (
                "snapshots_serving",
                u64::from(self.serving.load(Ordering::Relaxed)),
            ),
            ("slot_timeouts", self.slot_timeouts.load(Ordering::Relaxed)),
            (
                "requests_served",
                self.requests_served.load(Ordering::Relaxed),
            ),
            (
                "request_cost_ms",
                self.config.request_cost.as_millis() as u64,
            ),
        ]
        .map(|(k, v)| (k, v.to_string()));
        ProcessStatus {
            frontend: Some(FrontendStatus {
                base_threads: self.base_threads,
                thread_limit: cascade_core::threadlimit::own_limit().unwrap_or(0),
                peers_known: map.peers_known(),
                peers_total: map.members_total,
                shard_map: map.state.as_str().to_owned(),
                spawn_failures: map.spawn_failures,
                last_spawn_error: map.last_spawn_error.clone(),
                peer_threads: map.peer_threads(),
                shard_map_detail: detail,
                rebuilds: map.rebuilds,
                bootstrap: match self.config.bootstrap {
                    Bootstrap::Peers => "peers",
                    Bootstrap::MetadataStore => "metadata-store",
                }
                .to_owned(),
            }),
            ..serve::process_status(self.config.id.clone(), info)
        }
    }
}

/// What every `peer-<id>` thread runs: a blocking read of that peer's stream.
fn peer_body(me: String, population: peerwire::Population) -> PeerBody {
    let population = Arc::new(population);
    Arc::new(
        move |peer: String, addr: String, stop: CancellationToken, stats: Arc<PeerStats>| {
            peerwire::read_peer(&me, &peer, &addr, &stop, &stats, &population);
        },
    )
}

/// A snapshot being produced for a booting peer: holds one worker slot
/// until the snapshot is sent (or the subscriber is gone).
/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

struct SnapshotServe {
    fe: Arc<Frontend>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl SnapshotServe {
    fn new(fe: Arc<Frontend>, permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        fe.serving.fetch_add(1, Ordering::Relaxed);
        Self {
            fe,
            _permit: permit,
        }
    }
}

impl Drop for SnapshotServe {
    fn drop(&mut self) {
        self.fe.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first three bytes a client sent (enough to tell a peer stream, an
/// HTTP/2 preface "PRI" and an HTTP/1.1 method apart), or `None` if the
/// client sent fewer within 5 s or went away.
async fn peek_start(stream: &tokio::net::TcpStream) -> Option<[u8; 3]> {
    let mut buf = [0u8; 3];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if n >= buf.len() || peerwire::is_peer_connection(buf[0]) {
            return Some(buf);
        }
        // Fewer bytes than asked arrived in the first segment: peek
        // returns at once while any are buffered, so wait a little for more.
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Accepts connections on the service port: peer subscriptions are served
/// here, HTTP/1.1 is the AWS API ([`aws`]), everything else (HTTP/2, i.e.
/// gRPC) is handed to tonic.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    grpc: tokio::sync::mpsc::Sender<std::io::Result<tokio::net::TcpStream>>,
    fe: Arc<Frontend>,
    shutdown: CancellationToken,
) {
    let api = Arc::new(api::FrontendApi(fe.clone()));
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let (grpc, fe, shutdown, api) = (grpc.clone(), fe.clone(), shutdown.clone(), api.clone());
        tokio::spawn(async move {
            let Some(first) = peek_start(&stream).await else {
                return;
            };
            if !peerwire::is_peer_connection(first[0]) && aws::is_http1(&first) {
                // HTTP/1.1: the AWS Kinesis API (gRPC is HTTP/2, starting "PRI").
                aws::serve_connection(stream, api, shutdown).await;
                return;
            }
            if peerwire::is_peer_connection(first[0]) {
                let mut stream = stream;
                let hello = match peerwire::accept_subscription(&mut stream).await {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::debug!(error = %e, "bad peer subscription");
                        return;
                    }
                };
                // A booting peer's snapshot is produced with one of our
                // worker slots: the work competes with our requests.
                let mut serving = None;
                if hello.snapshot {
                    let permit = tokio::select! {
                        p = fe.slots.clone().acquire_owned() => p.ok(),
                        _ = shutdown.cancelled() => return,
                    };
                    serving = Some(SnapshotServe::new(fe.clone(), permit));
                    let cost = fe.config.snapshot_cost.div_f64(fe.config.time_scale);
                    tokio::time::sleep(cost).await;
                }
                let subscribers = fe.subscribers.clone();
                subscribers.fetch_add(1, Ordering::Relaxed);
                let _subscribed = scopeguard(move || {
                    subscribers.fetch_sub(1, Ordering::Relaxed);
                });
                let gossip = fe.clone();
                let r = peerwire::serve_subscriber(
                    stream,
                    move || {
                        gossip
                            .config
                            .gossip_every(gossip.subscribers.load(Ordering::Relaxed))
                    },
                    shutdown,
                    |seq| fe.peer_message(seq),
                    move || drop(serving),
                )
                .await;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "peer subscriber gone");
                }
            } else {
                let _ = grpc.send(Ok(stream)).await;
            }
        });
    }
}

/// How a booting front-end retries each step: every 200 ms for 20 s.
const BOOT_RETRY: RetryPolicy =
    RetryPolicy::fixed(Duration::from_millis(200), Duration::from_secs(20));

/// One start-up step, retried under [`BOOT_RETRY`]: `true` once it
/// succeeded, `false` when shutdown came first.
async fn boot_step<F, Fut>(what: &str, shutdown: &CancellationToken, f: F) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let on_retry = |e: &tonic::Status| tracing::warn!(error = %e, "{what} failed; retrying");
    match retry_until(BOOT_RETRY, shutdown, f, on_retry).await {
        Ok(()) => Ok(true),
        Err(RetryError::Cancelled { .. }) => Ok(false),
        Err(RetryError::DeadlinePassed { deadline, last, .. }) => {
            Err(anyhow::anyhow!("{what}: {last}")).context(format!("gave up after {deadline:?}"))
        }
    }
}

/// Registers, reads the metadata store and lists members, each retried;
/// `false` when shutdown came first.
async fn boot(fe: &Frontend, shutdown: &CancellationToken) -> anyhow::Result<bool> {
    Ok(
        boot_step("register with membership", shutdown, || fe.register()).await?
            && boot_step("read the metadata store", shutdown, || {
                fe.refresh_metadata()
            })
            .await?
            && boot_step("list members", shutdown, || fe.poll_membership()).await?,
    )
}

/// Runs a front-end on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: FrontendConfig,
    base_threads: u32,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = match &config.advertise {
        Some(a) => a.clone(),
        None => listener.local_addr()?.to_string(),
    };
    let learning_delay = config.learning_delay();
    tracing::info!(
        id = %config.id, %addr, seed = config.seed, ?learning_delay, base_threads,
        limit = ?cascade_core::threadlimit::own_limit(), "front-end starting"
    );
    let modelled = config.snapshot_timeout.div_f64(config.time_scale);
    if config.snapshot_timeout_wall() > modelled {
        tracing::info!(
            ?modelled, floored = ?config.snapshot_timeout_wall(),
            "snapshot timeout floored: at {}x the modelled {:?} would race the host's own latency",
            config.time_scale, config.snapshot_timeout
        );
    }
    let backend = clients::lazy_channel(&config.backend, config.backend_timeout)
        .with_context(|| format!("--backend {:?}", config.backend))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(config.worker_slots as usize));
    let fetching = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let fetch_timeouts = Arc::new(AtomicU64::new(0));
    let population = peerwire::Population {
        slots: slots.clone(),
        runtime: tokio::runtime::Handle::current(),
        timeout: config.snapshot_timeout_wall(),
        fetching: fetching.clone(),
        timeouts: fetch_timeouts.clone(),
        seed: config.seed,
    };
    let map = ShardMap {
        populate_from_peers: config.bootstrap == Bootstrap::Peers,
        ..ShardMap::default()
    };
    let frontend = Arc::new(Frontend {
        peer_body: peer_body(config.id.clone(), population),
        config,
        addr,
        base_threads,
        learning_delay,
        incarnation: AtomicU64::new(0),
        map: Mutex::new(map),
        backend,
        owners: Mutex::default(),
        slots,
        fetching,
        fetch_timeouts,
        serving: std::sync::atomic::AtomicU32::new(0),
        subscribers: Arc::default(),
        slot_timeouts: AtomicU64::new(0),
        requests_served: AtomicU64::new(0),
    });
    let (routes, health) = serve::base_routes(frontend.clone())?;
    let routes = routes.add_service(KinesisServer::new(api::FrontendApi(frontend.clone())));
    tracing::info!(addr = %listener.local_addr()?, "serving gRPC and peer streams");
    let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel(64);
    let accept = tokio::spawn(accept_loop(
        listener,
        grpc_tx,
        frontend.clone(),
        shutdown.clone(),
    ));
    let server = tokio::spawn(serve::serve_incoming(
        tokio_stream::wrappers::ReceiverStream::new(grpc_rx),
        routes,
        shutdown.clone(),
    ));

    let loops = if boot(&frontend, &shutdown).await? {
        serve::set_serving(&health, true).await;
        spawn_loops(frontend.clone(), shutdown.clone())
    } else {
        tracing::info!("shut down during start-up");
        Vec::new()
    };
    let result = server.await.context("server task")?;
    accept.abort();
    for l in loops {
        l.abort();
    }
    frontend.map().stop_all();
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        MembershipClient::new(frontend.backend.clone()).deregister(pb::DeregisterRequest {
            id: frontend.config.id.clone(),
            incarnation: frontend.incarnation.load(Ordering::Relaxed),
        }),
    )
    .await;
    result
}

/// Runs `f` every `period` until `token` is cancelled, logging failures.
fn periodic<F, Fut>(
    period: Duration,
    token: CancellationToken,
    what: &'static str,
    f: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    tokio::spawn(async move {
        let mut ticker = Ticker::new(period);
        while ticker.tick(&token).await {
            if let Err(e) = f().await {
                tracing::warn!(error = %e, "{what} failed");
            }
        }
    })
}

fn spawn_loops(fe: Arc<Frontend>, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let membership = {
        let fe = fe.clone();
        periodic(
            fe.config.membership_poll,
            shutdown.clone(),
            "membership poll",
            move || {
                let fe = fe.clone();
                async move { fe.poll_membership().await }
            },
        )
    };
    let heartbeat = {
        let fe = fe.clone();
        periodic(
            fe.config.heartbeat_interval,
            shutdown.clone(),
            "heartbeat",
            move || {
                let fe = fe.clone();
                async move { fe.heartbeat().await }
            },
        )
    };
    let metadata = periodic(
        Duration::from_secs(2),
        shutdown,
        "metadata refresh",
        move || {
            let fe = fe.clone();
            async move { fe.refresh_metadata().await }
        },
    );
    vec![membership, heartbeat, metadata]
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_gossip_budget_stretches_the_interval_only_past_its_peer_count() {
        let c = config("360");
        assert_eq!(c.gossip_every(0), Duration::from_secs(1));
        assert_eq!(c.gossip_every(50), Duration::from_secs(1));
        assert_eq!(c.gossip_every(125), Duration::from_millis(2500));
        let unbudgeted = FrontendConfig {
            gossip_budget: 0,
            ..c
        };
        assert_eq!(unbudgeted.gossip_every(125), Duration::from_secs(1));
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: FrontendConfig,
    }

    fn config(scale: &str) -> FrontendConfig {
        Cli::parse_from([
            "fe",
            "--id",
            "fe-0",
            "--backend",
            "x",
            "--time-scale",
            scale,
        ])
        .config
    }

    #[test]
    fn the_snapshot_timeout_is_modelled_at_low_scales_and_floored_at_high_ones() {
        // 12 incident minutes at 360x: 2 s, above 3 min / 360 + 1 s = 1.5 s.
        assert_eq!(
            config("360").snapshot_timeout_wall(),
            Duration::from_secs(2)
        );
        // At 1440x the model says 500 ms; the floor is 125 ms + 1 s.
        assert_eq!(
            config("1440").snapshot_timeout_wall(),
            Duration::from_millis(1125)
        );
        // At 3600x, 200 ms: floored at 50 ms + 1 s (checked below too).
        assert_eq!(
            config("3600").snapshot_timeout_wall(),
            Duration::from_millis(1050)
        );
    }
}
