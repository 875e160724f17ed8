//! The front-end's `ShardMap`: the cache of fleet membership and shard
//! ownership that every data-plane call routes with. It is built from three
//! sources, as in the incident: the membership service, the metadata store,
//! and a message stream from every peer, each held by one `PeerThread` (a
//! real OS thread). When the kernel refuses a peer thread, construction fails
//! and the map is unusable; nothing re-runs a failed construction except
//! learning of a new member, or a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cascade_proto::kinesis as pb;
use tokio_util::sync::CancellationToken;

/// Where the map stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapState {
    /// Not yet constructed (boot).
    Building,
    /// Every known peer has its thread; requests are routed.
    Ready,
    /// Construction failed; requests cannot be routed. Holds the cause.
    Unusable(String),
}

impl MapState {
    /// The `status --json` name of the state.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Ready => "ready",
            Self::Unusable(_) => "unusable",
        }
    }
}

/// Route to one shard.
#[derive(Debug, Clone)]
pub struct ShardRoute {
    /// AWS-style shard id.
    pub shard_id: String,
    /// Inclusive hash-key range.
    pub start: u128,
    /// Inclusive hash-key range end.
    pub end: u128,
    /// Back end that owns the shard.
    pub owner: String,
}

/// Counters a peer thread updates as it reads its peer's stream.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Messages received from the peer.
    pub messages: AtomicU64,
    /// Whether the stream is currently open.
    pub connected: AtomicBool,
    /// The peer's metadata-store version, from its last message.
    pub metadata_version: AtomicU64,
    /// Whether this map must be populated with the peer's snapshot before
    /// it is ready (a peer known at boot, with `--bootstrap peers`).
    pub needs_snapshot: AtomicBool,
    /// Whether the peer's snapshot has arrived.
    pub populated: AtomicBool,
    /// A handle on the open stream, so stopping the thread wakes its
    /// blocked read at once (it then sleeps in `read(2)` between messages
    /// instead of waking on a timer to check whether it should stop).
    pub conn: parking_lot::Mutex<Option<std::net::TcpStream>>,
}

impl PeerThread {
    /// Stops the thread: cancels its token and shuts its stream down, which
    /// wakes a read blocked on it.
    pub fn stop(&self) {
        self.stop.cancel();
        if let Some(s) = self.stats.conn.lock().take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One known peer and the OS thread that holds its message stream.
#[derive(Debug)]
pub struct PeerThread {
    /// The peer's address.
    pub addr: String,
    /// Stops the thread (when the peer leaves the fleet or we shut down).
    pub stop: CancellationToken,
    /// What the thread has seen.
    pub stats: Arc<PeerStats>,
    /// The thread, if it could be spawned.
    pub handle: Option<std::thread::JoinHandle<()>>,
}

impl PeerThread {
    /// Whether the peer's thread exists and is still running.
    pub fn alive(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }
}

/// A member seen in membership but not yet learned (the learning delay).
#[derive(Debug, Clone)]
pub struct PendingMember {
    /// The member's address.
    pub addr: String,
    /// When this front-end will have learned of it.
    pub learn_at: Instant,
}

/// The shard-map cache.
#[derive(Debug)]
pub struct ShardMap {
    /// Construction state.
    pub state: MapState,
    /// stream name -> shard routes, from the metadata store.
    pub streams: HashMap<String, Arc<[ShardRoute]>>,
    /// Metadata-store version the routes came from.
    pub metadata_version: u64,
    /// Known peers (learned members other than ourselves).
    pub peers: BTreeMap<String, PeerThread>,
    /// Members in the membership list not yet learned.
    pub pending: BTreeMap<String, PendingMember>,
    /// Members other than ourselves in the last membership listing.
    pub members_total: u32,
    /// Whether the first membership listing has been applied.
    pub bootstrapped: bool,
    /// Construction attempts so far.
    pub rebuilds: u64,
    /// Peer threads the kernel refused.
    pub spawn_failures: u64,
    /// The OS error of the last refused spawn.
    pub last_spawn_error: String,
    /// Whether peers known at boot must each send a snapshot before the
    /// map is ready (`--bootstrap peers`, the 2020 cold start).
    pub populate_from_peers: bool,
}

impl Default for ShardMap {
    fn default() -> Self {
        Self {
            state: MapState::Building,
            streams: HashMap::new(),
            metadata_version: 0,
            peers: BTreeMap::new(),
            pending: BTreeMap::new(),
            members_total: 0,
            bootstrapped: false,
            rebuilds: 0,
            spawn_failures: 0,
            last_spawn_error: String::new(),
            populate_from_peers: false,
        }
    }
}

/// What a peer thread runs; supplied by the caller so this module stays
/// free of networking.
pub type PeerBody = Arc<dyn Fn(String, String, CancellationToken, Arc<PeerStats>) + Send + Sync>;

impl ShardMap {
    /// Replaces the routes with a fresh read of the metadata store.
    pub fn apply_metadata(&mut self, resp: pb::DescribeStreamsResponse) {
        self.streams = resp
            .streams
            .into_iter()
            .map(|s| {
                let routes = s
                    .shards
                    .into_iter()
                    .map(|sh| ShardRoute {
                        start: sh.starting_hash_key.parse().unwrap_or(0),
                        end: sh.ending_hash_key.parse().unwrap_or(0),
                        shard_id: sh.shard_id,
                        owner: sh.owner,
                    })
                    .collect();
                (s.stream_name, routes)
            })
            .collect();
        self.metadata_version = resp.version;
    }

    /// Applies a membership listing. The first listing is learned at once
    /// (a booting front-end reads the whole fleet); later joiners are learned
    /// only after `learning_delay`. Members that left are dropped and their
    /// threads stopped. Returns whether new members were learned now.
    pub fn apply_membership(
        &mut self,
        me: &str,
        members: &[pb::Member],
        now: Instant,
        learning_delay: Duration,
    ) -> bool {
        let current: BTreeMap<&str, &str> = members
            .iter()
            .filter(|m| m.id != me)
            .map(|m| (m.id.as_str(), m.addr.as_str()))
            .collect();
        self.members_total = current.len() as u32;
        self.peers.retain(|id, p| {
            let stay = current.contains_key(id.as_str());
            if !stay {
                p.stop();
                tracing::info!(peer = %id, "peer left the fleet; stopping its thread");
            }
            stay
        });
        self.pending
            .retain(|id, _| current.contains_key(id.as_str()));
        let first = !self.bootstrapped;
        self.bootstrapped = true;
        for (id, addr) in &current {
            if self.peers.contains_key(*id) || self.pending.contains_key(*id) {
                continue;
            }
            let learn_at = if first { now } else { now + learning_delay };
            self.pending.insert(
                (*id).to_owned(),
                PendingMember {
                    addr: (*addr).to_owned(),
                    learn_at,
                },
            );
        }
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.learn_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            if let Some(p) = self.pending.remove(id) {
                tracing::info!(peer = %id, "learned of member");
                let stats = PeerStats::default();
                // Peers known at boot carry the shard map a booting
                // front-end populates from (with `--bootstrap peers`).
                stats
                    .needs_snapshot
                    .store(first && self.populate_from_peers, Ordering::Relaxed);
                self.peers.insert(
                    id.clone(),
                    PeerThread {
                        addr: p.addr,
                        stop: CancellationToken::new(),
                        stats: Arc::new(stats),
                        handle: None,
                    },
                );
            }
        }
        first || !due.is_empty()
    }

    /// Constructs the map: one OS thread per known peer that lacks one. The
    /// first refused spawn fails the construction and leaves the map unusable.
    pub fn construct(&mut self, stack_bytes: usize, body: &PeerBody) {
        self.rebuilds += 1;
        let was_ready = self.state == MapState::Ready;
        if !was_ready {
            self.state = MapState::Building;
        }
        for (id, peer) in self.peers.iter_mut().filter(|(_, p)| p.handle.is_none()) {
            let (pid, addr, stop, stats) = (
                id.clone(),
                peer.addr.clone(),
                peer.stop.clone(),
                peer.stats.clone(),
            );
            let body = body.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("peer-{id}"))
                .stack_size(stack_bytes)
                .spawn(move || body(pid, addr, stop, stats));
            match spawned {
                Ok(h) => peer.handle = Some(h),
                Err(e) => {
                    self.spawn_failures += 1;
                    self.last_spawn_error = e.to_string();
                    let cause = format!("cannot spawn thread peer-{id}: {e}");
                    tracing::error!(%cause, known_peers = self.peers_known(), "shard-map construction failed");
                    self.state = MapState::Unusable(cause);
                    return;
                }
            }
        }
        if was_ready || self.snapshots_missing() == 0 {
            self.state = MapState::Ready;
        }
    }

    /// Peers whose boot snapshot the map still waits for.
    pub fn snapshots_missing(&self) -> u32 {
        self.peers
            .values()
            .filter(|p| {
                p.stats.needs_snapshot.load(Ordering::Relaxed)
                    && !p.stats.populated.load(Ordering::Relaxed)
            })
            .count() as u32
    }

    /// Peers whose boot snapshot the map needs (arrived or not).
    pub fn snapshots_needed(&self) -> u32 {
        self.peers
            .values()
            .filter(|p| p.stats.needs_snapshot.load(Ordering::Relaxed))
            .count() as u32
    }

    /// A map still populating becomes ready once every peer known at boot
    /// has sent its snapshot (peers that left no longer count).
    pub fn check_populated(&mut self) {
        if self.state == MapState::Building
            && self.bootstrapped
            && self.peers.values().all(|p| p.handle.is_some())
            && self.snapshots_missing() == 0
        {
            tracing::info!(
                peers = self.peers_known(),
                "shard map populated from peers; ready"
            );
            self.state = MapState::Ready;
        }
    }

    /// Learned peers (whether or not their threads could be spawned).
    pub fn peers_known(&self) -> u32 {
        self.peers.len() as u32
    }

    /// Peer threads running now.
    pub fn peer_threads(&self) -> u32 {
        self.peers.values().filter(|p| p.alive()).count() as u32
    }

    /// Stops every peer thread.
    pub fn stop_all(&mut self) {
        for p in self.peers.values() {
            p.stop();
        }
    }

    /// Routes for a stream, or why there are none.
    pub fn routes(&self, stream: &str) -> Result<Option<Arc<[ShardRoute]>>, String> {
        match &self.state {
            MapState::Ready => Ok(self.streams.get(stream).cloned()),
            MapState::Building => Err(format!(
                "shard map is still being built ({} peers known, {} threads up, {} of {} peer snapshots in); retry shortly",
                self.peers_known(),
                self.peer_threads(),
                self.snapshots_needed() - self.snapshots_missing(),
                self.snapshots_needed()
            )),
            MapState::Unusable(cause) => Err(format!(
                "shard map unusable, cannot route requests to back-end shards: {cause}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> pb::Member {
        pb::Member {
            id: id.into(),
            addr: format!("127.0.0.1:1{}", id.len()),
            ..Default::default()
        }
    }

    #[test]
    fn first_listing_is_learned_at_once_later_joiners_after_the_delay() {
        let mut map = ShardMap::default();
        let t0 = Instant::now();
        let delay = Duration::from_secs(10);
        assert!(map.apply_membership("a", &[member("a"), member("b")], t0, delay));
        assert_eq!(map.peers_known(), 1);
        let all = [member("a"), member("b"), member("c")];
        assert!(!map.apply_membership("a", &all, t0 + Duration::from_secs(1), delay));
        assert_eq!(map.peers_known(), 1, "c is not known before the delay");
        assert!(!map.apply_membership("a", &all, t0 + Duration::from_secs(10), delay));
        assert!(map.apply_membership("a", &all, t0 + Duration::from_secs(12), delay));
        assert_eq!(map.peers_known(), 2);
        assert!(!map.apply_membership("a", &[member("a")], t0 + Duration::from_secs(13), delay));
        assert_eq!(map.peers_known(), 0, "departed members are dropped");
    }

    #[test]
    fn with_peer_bootstrap_the_map_is_ready_only_once_every_boot_peer_sent_its_snapshot() {
        let mut map = ShardMap {
            populate_from_peers: true,
            ..ShardMap::default()
        };
        let body: PeerBody = Arc::new(|_, _, _, _| {});
        let members = [member("a"), member("b"), member("cc")];
        map.apply_membership("a", &members, Instant::now(), Duration::ZERO);
        map.construct(64 * 1024, &body);
        assert_eq!(map.state, MapState::Building, "no snapshot yet");
        assert_eq!((map.snapshots_needed(), map.snapshots_missing()), (2, 2));
        assert!(
            map.routes("s")
                .is_err_and(|e| e.contains("0 of 2 peer snapshots"))
        );
        map.peers["b"]
            .stats
            .populated
            .store(true, Ordering::Relaxed);
        map.check_populated();
        assert_eq!(map.state, MapState::Building, "cc's snapshot is missing");
        map.peers["cc"]
            .stats
            .populated
            .store(true, Ordering::Relaxed);
        map.check_populated();
        assert_eq!(map.state, MapState::Ready);
    }

    #[test]
    fn construction_spawns_one_named_thread_per_peer() {
        let mut map = ShardMap::default();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let body: PeerBody = Arc::new(move |_, _, _, _| {
            let name = std::thread::current().name().map(str::to_owned);
            s.lock().expect("test lock").push(name);
        });
        let members = [member("a"), member("b"), member("cc")];
        map.apply_membership("a", &members, Instant::now(), Duration::ZERO);
        map.construct(64 * 1024, &body);
        assert_eq!(map.state, MapState::Ready);
        for p in map.peers.values_mut() {
            p.handle.take().map(|h| h.join());
        }
        let mut names = seen.lock().expect("test lock").clone();
        names.sort();
        assert_eq!(names, vec![Some("peer-b".into()), Some("peer-cc".into())]);
    }
}
