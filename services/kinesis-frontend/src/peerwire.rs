//! The peer message stream on the wire. A subscriber connects to a peer's
//! service port, sends [`MAGIC`] and a length-delimited `SubscribeRequest`,
//! then reads length-delimited `PeerMessage`s for as long as both live. The
//! accept side tells these connections from HTTP/2 (gRPC) by the first byte.
//!
//! The reading side is deliberately blocking: each `peer-<id>` OS thread sits
//! in `read(2)` on its own socket, as a thread-per-peer server does.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cascade_proto::frontend::{PeerMessage, SubscribeRequest};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::shardmap::PeerStats;

/// What a booting front-end needs to populate its shard map from a peer:
/// the worker slots it shares with request handling, and how long to wait
/// for a snapshot before giving the slot back and trying again.
pub struct Population {
    /// The front-end's worker slots (request handling takes them too).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The front-end's runtime (peer threads are not runtime threads).
    pub runtime: tokio::runtime::Handle,
    /// How long one snapshot fetch may hold a slot.
    pub timeout: Duration,
    /// Snapshot fetches holding a slot now.
    pub fetching: Arc<std::sync::atomic::AtomicU32>,
    /// Snapshot fetches that timed out.
    pub timeouts: Arc<AtomicU64>,
    /// Seed of the retry jitter (mixed with both ids).
    pub seed: u64,
}

impl Population {
    /// Takes a worker slot for a snapshot fetch, waiting as long as it
    /// takes; `None` when told to stop first.
    fn slot(&self, stop: &CancellationToken) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slots = self.slots.clone();
        let permit = self.runtime.block_on(async {
            tokio::select! {
                p = slots.acquire_owned() => p.ok(),
                _ = stop.cancelled() => None,
            }
        })?;
        self.fetching.fetch_add(1, Ordering::Relaxed);
        Some(permit)
    }

    fn release(&self, permit: tokio::sync::OwnedSemaphorePermit) {
        drop(permit);
        self.fetching.fetch_sub(1, Ordering::Relaxed);
    }
}

/// First bytes of a peer subscription (HTTP/2 connections start with "PRI").
pub const MAGIC: &[u8] = b"CASCADE-PEER/1\n";
/// Largest frame either side accepts.
const MAX_FRAME: usize = 1024 * 1024;
/// How often a reader waiting for a boot snapshot wakes to check its deadline.
const READ_TICK: Duration = Duration::from_millis(500);
/// How often an established reader wakes on its own: only a safety net, as
/// stopping the thread shuts its stream down (`PeerThread::stop`), which
/// wakes the read at once. Between messages the thread sleeps in `read(2)`,
/// so an idle mesh of N*(N-1) threads costs no timer wake-ups.
const IDLE_TICK: Duration = Duration::from_secs(5);

/// Whether a connection whose first byte is `b` is a peer subscription.
pub fn is_peer_connection(first: u8) -> bool {
    first == MAGIC[0]
}

/// The body of a `peer-<id>` thread: connect, subscribe, and read the
/// peer's messages until `stop`; reconnect after a broken stream.
///
/// While the map waits for this peer's boot snapshot, each attempt holds one
/// of the front-end's worker slots until the snapshot arrives or
/// `population.timeout` passes; a timed-out attempt gives its slot back and
/// retries after a seeded random back-off.
pub fn read_peer(
    me: &str,
    peer: &str,
    addr: &str,
    stop: &CancellationToken,
    stats: &Arc<PeerStats>,
    population: &Population,
) {
    use rand::{Rng as _, SeedableRng as _};
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::hash::DefaultHasher::new();
    (population.seed, me, peer).hash(&mut h);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(h.finish());
    let mut buf = Vec::with_capacity(256);
    while !stop.is_cancelled() {
        let want = stats.needs_snapshot.load(Ordering::Relaxed)
            && !stats.populated.load(Ordering::Relaxed);
        let mut permit = None;
        if want {
            match population.slot(stop) {
                Some(p) => permit = Some(p),
                None => return,
            }
        }
        let deadline = want.then(|| std::time::Instant::now() + population.timeout);
        let mut on_first = || {
            if let Some(p) = permit.take() {
                stats.populated.store(true, Ordering::Relaxed);
                population.release(p);
            }
        };
        match session(me, addr, stop, stats, &mut buf, deadline, &mut on_first) {
            Ok(()) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "peer stream ended"),
        }
        let timed_out = permit.is_some();
        if let Some(p) = permit.take() {
            population.release(p);
            population.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "no boot snapshot within {:?}; slot released, retrying", population.timeout);
        }
        stats.connected.store(false, Ordering::Relaxed);
        stats.conn.lock().take();
        // Back off before reconnecting, waking early if told to stop.
        let pause = if timed_out {
            Duration::from_millis(rng.random_range(200..1000))
        } else {
            Duration::from_millis(500)
        };
        let until = std::time::Instant::now() + pause;
        while std::time::Instant::now() < until {
            if stop.is_cancelled() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn session(
    me: &str,
    addr: &str,
    stop: &CancellationToken,
    stats: &PeerStats,
    buf: &mut Vec<u8>,
    snapshot_deadline: Option<std::time::Instant>,
    on_first: &mut dyn FnMut(),
) -> std::io::Result<()> {
    let sock: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr}: no address")))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    let hello = SubscribeRequest {
        from: me.to_owned(),
        snapshot: snapshot_deadline.is_some(),
    };
    let mut out = MAGIC.to_vec();
    hello
        .encode_length_delimited(&mut out)
        .map_err(std::io::Error::other)?;
    stream.write_all(&out)?;
    let tick = |waiting: bool| if waiting { READ_TICK } else { IDLE_TICK };
    stream.set_read_timeout(Some(tick(snapshot_deadline.is_some())))?;
    *stats.conn.lock() = stream.try_clone().ok();
    if stop.is_cancelled() {
        // Stopped between connecting and registering the stream.
        return Ok(());
    }
    stats.connected.store(true, Ordering::Relaxed);
    let mut reader = BufReader::with_capacity(512, stream);
    let mut deadline = snapshot_deadline;
    loop {
        let Some(len) = read_len(&mut reader, stop, deadline)? else {
            return Ok(());
        };
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!(
                "frame of {len} bytes is too large"
            )));
        }
        buf.resize(len, 0);
        reader.read_exact(buf)?;
        let msg = PeerMessage::decode(buf.as_slice()).map_err(std::io::Error::other)?;
        stats.messages.fetch_add(1, Ordering::Relaxed);
        stats
            .metadata_version
            .store(msg.metadata_version, Ordering::Relaxed);
        if deadline.take().is_some() {
            on_first();
            reader.get_ref().set_read_timeout(Some(IDLE_TICK))?;
        }
    }
}

/// Reads a varint frame length; `None` when told to stop while idle, an
/// error when `deadline` passes while idle.
fn read_len(
    r: &mut impl Read,
    stop: &CancellationToken,
    deadline: Option<std::time::Instant>,
) -> std::io::Result<Option<usize>> {
    let mut len = 0usize;
    for i in 0..10 {
        let mut b = [0u8; 1];
        loop {
            match r.read(&mut b) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => break,
                Err(e)
                    if i == 0
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                {
                    if stop.is_cancelled() {
                        return Ok(None);
                    }
                    if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        return Err(std::io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(len));
        }
    }
    Err(std::io::Error::other("malformed frame length"))
}

/// Reads a subscriber's hello (within 5 s).
pub async fn accept_subscription(
    stream: &mut tokio::net::TcpStream,
) -> std::io::Result<SubscribeRequest> {
    let hello = tokio::time::timeout(Duration::from_secs(5), read_hello(stream))
        .await
        .map_err(|_| std::io::Error::other("no subscription within 5 s"))??;
    tracing::debug!(from = %hello.from, snapshot = hello.snapshot, "peer subscribed");
    Ok(hello)
}

/// Serves one subscriber whose hello was read: sends `next()` at once and
/// then after each `interval()` (asked afresh before every wait, so it can
/// follow the number of subscribers) until the subscriber goes away or `shutdown`;
/// `sent_first` runs once the first message is written.
pub async fn serve_subscriber(
    mut stream: tokio::net::TcpStream,
    interval: impl Fn() -> Duration,
    shutdown: CancellationToken,
    mut next: impl FnMut(u64) -> PeerMessage,
    sent_first: impl FnOnce(),
) -> std::io::Result<()> {
    let mut sent_first = Some(sent_first);
    let mut out = Vec::with_capacity(256);
    let mut seq = 0;
    loop {
        if seq > 0 {
            tokio::select! {
                _ = tokio::time::sleep(interval()) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        } else if shutdown.is_cancelled() {
            return Ok(());
        }
        seq += 1;
        out.clear();
        next(seq)
            .encode_length_delimited(&mut out)
            .map_err(std::io::Error::other)?;
        stream.write_all(&out).await?;
        if let Some(f) = sent_first.take() {
            f();
        }
    }
}

async fn read_hello(stream: &mut tokio::net::TcpStream) -> std::io::Result<SubscribeRequest> {
    let mut magic = [0u8; MAGIC.len()];
    stream.read_exact(&mut magic).await?;
    if magic != MAGIC {
        return Err(std::io::Error::other("not a peer subscription"));
    }
    let mut len = 0usize;
    for i in 0..5 {
        let b = stream.read_u8().await?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    if len > 4096 {
        return Err(std::io::Error::other("subscription too large"));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    SubscribeRequest::decode(buf.as_slice()).map_err(std::io::Error::other)
}
