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
use std::sync::atomic::Ordering;
use std::time::Duration;

use cascade_proto::frontend::{PeerMessage, SubscribeRequest};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::shardmap::PeerStats;

/// First bytes of a peer subscription (HTTP/2 connections start with "PRI").
pub const MAGIC: &[u8] = b"CASCADE-PEER/1\n";
/// Largest frame either side accepts.
const MAX_FRAME: usize = 1024 * 1024;
/// How often a blocked reader wakes to check whether it should stop.
const READ_TICK: Duration = Duration::from_millis(500);

/// Whether a connection whose first byte is `b` is a peer subscription.
pub fn is_peer_connection(first: u8) -> bool {
    first == MAGIC[0]
}

/// The body of a `peer-<id>` thread: connect, subscribe, and read the
/// peer's messages until `stop`; reconnect after a broken stream.
pub fn read_peer(
    me: &str,
    peer: &str,
    addr: &str,
    stop: &CancellationToken,
    stats: &Arc<PeerStats>,
) {
    let mut buf = Vec::with_capacity(256);
    while !stop.is_cancelled() {
        match session(me, addr, stop, stats, &mut buf) {
            Ok(()) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "peer stream ended"),
        }
        stats.connected.store(false, Ordering::Relaxed);
        // Back off before reconnecting, waking early if told to stop.
        for _ in 0..5 {
            if stop.is_cancelled() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn session(
    me: &str,
    addr: &str,
    stop: &CancellationToken,
    stats: &PeerStats,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let sock: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr}: no address")))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    let hello = SubscribeRequest {
        from: me.to_owned(),
    };
    let mut out = MAGIC.to_vec();
    hello
        .encode_length_delimited(&mut out)
        .map_err(std::io::Error::other)?;
    stream.write_all(&out)?;
    stream.set_read_timeout(Some(READ_TICK))?;
    stats.connected.store(true, Ordering::Relaxed);
    let mut reader = BufReader::with_capacity(512, stream);
    loop {
        let Some(len) = read_len(&mut reader, stop)? else {
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
    }
}

/// Reads a varint frame length; `None` when told to stop while idle.
fn read_len(r: &mut impl Read, stop: &CancellationToken) -> std::io::Result<Option<usize>> {
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

/// Serves one subscriber: reads its hello, then sends `next()` every
/// `interval` until the subscriber goes away or `shutdown`.
pub async fn serve_subscriber(
    mut stream: tokio::net::TcpStream,
    interval: Duration,
    shutdown: CancellationToken,
    mut next: impl FnMut(u64) -> PeerMessage,
) -> std::io::Result<()> {
    let hello = tokio::time::timeout(Duration::from_secs(5), read_hello(&mut stream))
        .await
        .map_err(|_| std::io::Error::other("no subscription within 5 s"))??;
    tracing::debug!(from = %hello.from, "peer subscribed");
    let mut tick = tokio::time::interval(interval);
    let mut out = Vec::with_capacity(256);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        seq += 1;
        out.clear();
        next(seq)
            .encode_length_delimited(&mut out)
            .map_err(std::io::Error::other)?;
        stream.write_all(&out).await?;
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
