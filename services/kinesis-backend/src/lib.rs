//! The Kinesis back end: shard storage (one of the "back-end cell clusters"),
//! the authoritative metadata store (stream and shard -> owner; DynamoDB in the
//! incident) and the membership microservice the front-end fleet registers with.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cascade_core::keyspace::{self, ShardIterator};
use cascade_core::serve::{self, BasicStatus};
use cascade_core::{ServiceError, now_ms};
use cascade_proto::kinesis as pb;
use cascade_proto::kinesis::kinesis_server::{Kinesis, KinesisServer};
use cascade_proto::kinesis::membership_server::{Membership, MembershipServer};
use cascade_proto::kinesis::metadata_server::{Metadata, MetadataServer};
use parking_lot::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Largest shard count one CreateStream may ask for.
pub const MAX_SHARDS_PER_STREAM: u32 = 64;
/// Default and largest `limit` of GetRecords (as AWS).
const DEFAULT_GET_LIMIT: u32 = 1_000;
const MAX_GET_LIMIT: u32 = 10_000;

/// Back-end settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendConfig {
    /// Address front-ends use to reach this back end (shard owner in the
    /// metadata store). Defaults to the bound listen address.
    #[arg(long, env = "CASCADE_ADVERTISE")]
    pub advertise: Option<String>,
    /// A member that has not heartbeated for this long expires (wall time).
    #[arg(long, env = "CASCADE_MEMBER_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub member_ttl: Duration,
    /// Bytes kept per shard; older records are trimmed (TRIM_HORIZON moves).
    #[arg(long, env = "CASCADE_SHARD_RETENTION_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub shard_retention_bytes: usize,
}

/// One stored record.
#[derive(Debug, Clone)]
struct StoredRecord {
    seq: u64,
    partition_key: String,
    data: Vec<u8>,
    arrival_ms: i64,
}

/// One shard: its hash-key range and its records, oldest first.
#[derive(Debug)]
struct ShardData {
    start: u128,
    end: u128,
    records: VecDeque<StoredRecord>,
    next_seq: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Stream {
    shards: Vec<ShardData>,
}

#[derive(Debug, Clone)]
struct MemberEntry {
    addr: String,
    joined_at_ms: i64,
    last_heartbeat_ms: i64,
    incarnation: u64,
    ready: bool,
}

#[derive(Debug, Default)]
struct State {
    streams: BTreeMap<String, Stream>,
    metadata_version: u64,
    /// fleet -> member id -> entry.
    members: HashMap<String, BTreeMap<String, MemberEntry>>,
    next_incarnation: u64,
}

/// The back end's shared state and its three gRPC services.
#[derive(Debug, Clone)]
pub struct Backend {
    state: Arc<Mutex<State>>,
    owner: String,
    config: BackendConfig,
}

impl Backend {
    /// A back end that names itself `owner` in the metadata store.
    pub fn new(owner: String, config: BackendConfig) -> Self {
        Self {
            state: Arc::default(),
            owner,
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    fn describe(&self, name: &str, stream: &Stream) -> pb::StreamDescription {
        pb::StreamDescription {
            stream_name: name.to_owned(),
            shards: stream
                .shards
                .iter()
                .enumerate()
                .map(|(i, s)| pb::Shard {
                    shard_id: keyspace::shard_id(i as u32),
                    starting_hash_key: s.start.to_string(),
                    ending_hash_key: s.end.to_string(),
                    owner: self.owner.clone(),
                })
                .collect(),
        }
    }

    fn put_one(
        &self,
        state: &mut State,
        stream_name: &str,
        partition_key: String,
        data: Vec<u8>,
        explicit_hash_key: &str,
    ) -> Result<pb::PutRecordResponse, ServiceError> {
        let hash = keyspace::validate_put(stream_name, &partition_key, &data, explicit_hash_key)?;
        let stream = state
            .streams
            .get_mut(stream_name)
            .ok_or_else(|| unknown_stream(stream_name))?;
        let (index, shard) = stream
            .shards
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.start <= hash && hash <= s.end)
            .ok_or_else(|| ServiceError::Internal(format!("no shard covers hash key {hash}")))?;
        let seq = shard.next_seq;
        shard.next_seq += 1;
        shard.bytes += data.len() + partition_key.len();
        shard.records.push_back(StoredRecord {
            seq,
            partition_key,
            data,
            arrival_ms: now_ms(),
        });
        while shard.bytes > self.config.shard_retention_bytes && shard.records.len() > 1 {
            if let Some(old) = shard.records.pop_front() {
                shard.bytes -= old.data.len() + old.partition_key.len();
            }
        }
        Ok(pb::PutRecordResponse {
            shard_id: keyspace::shard_id(index as u32),
            sequence_number: seq.to_string(),
        })
    }

    /// Removes members whose last heartbeat is older than the TTL.
    fn expire_members(&self) {
        let cutoff = now_ms() - self.config.member_ttl.as_millis() as i64;
        let mut state = self.lock();
        for (fleet, members) in state.members.iter_mut() {
            members.retain(|id, m| {
                let keep = m.last_heartbeat_ms >= cutoff;
                if !keep {
                    tracing::info!(fleet, id, "member expired (no heartbeat)");
                }
                keep
            });
        }
    }
}

fn unknown_stream(name: &str) -> ServiceError {
    ServiceError::not_found(format!(
        "stream {name:?} not found; create it with CreateStream"
    ))
}

fn shard_mut<'a>(
    state: &'a mut State,
    stream_name: &str,
    shard_id: &str,
) -> Result<&'a mut ShardData, ServiceError> {
    let stream = state
        .streams
        .get_mut(stream_name)
        .ok_or_else(|| unknown_stream(stream_name))?;
    let count = stream.shards.len();
    keyspace::shard_index(shard_id)
        .and_then(|i| stream.shards.get_mut(i as usize))
        .ok_or_else(|| {
            ServiceError::not_found(format!(
                "shard {shard_id:?} not found in stream {stream_name:?} (it has {count} shards, shardId-000000000000 ..)"
            ))
        })
}

fn parse_seq(field: &str, s: &str) -> Result<u64, ServiceError> {
    s.parse().map_err(|_| {
        ServiceError::invalid(format!(
            "{field}: {s:?} is not a sequence number (a decimal integer)"
        ))
    })
}

#[tonic::async_trait]
impl Kinesis for Backend {
    async fn create_stream(
        &self,
        req: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::CreateStreamResponse>, Status> {
        let req = req.into_inner();
        keyspace::validate_stream_name(&req.stream_name)?;
        if req.shard_count == 0 || req.shard_count > MAX_SHARDS_PER_STREAM {
            return Err(ServiceError::invalid(format!(
                "shard_count: {} is out of range; use 1 to {MAX_SHARDS_PER_STREAM}",
                req.shard_count
            ))
            .into());
        }
        let mut state = self.lock();
        if state.streams.contains_key(&req.stream_name) {
            return Err(ServiceError::AlreadyExists(format!(
                "stream {:?} already exists",
                req.stream_name
            ))
            .into());
        }
        let stream = Stream {
            shards: (0..req.shard_count)
                .map(|i| {
                    let (start, end) = keyspace::shard_range(i, req.shard_count);
                    ShardData {
                        start,
                        end,
                        records: VecDeque::new(),
                        next_seq: 0,
                        bytes: 0,
                    }
                })
                .collect(),
        };
        let desc = self.describe(&req.stream_name, &stream);
        state.streams.insert(req.stream_name.clone(), stream);
        state.metadata_version += 1;
        tracing::info!(stream = %req.stream_name, shards = req.shard_count, "stream created");
        Ok(Response::new(pb::CreateStreamResponse {
            stream_name: desc.stream_name,
            shards: desc.shards,
        }))
    }

    async fn put_record(
        &self,
        req: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        let r = req.into_inner();
        let mut state = self.lock();
        let resp = self.put_one(
            &mut state,
            &r.stream_name,
            r.partition_key,
            r.data,
            &r.explicit_hash_key,
        )?;
        Ok(Response::new(resp))
    }

    async fn put_records(
        &self,
        req: Request<pb::PutRecordsRequest>,
    ) -> Result<Response<pb::PutRecordsResponse>, Status> {
        let r = req.into_inner();
        keyspace::validate_batch_len(r.records.len())?;
        let mut state = self.lock();
        if !state.streams.contains_key(&r.stream_name) {
            return Err(unknown_stream(&r.stream_name).into());
        }
        let mut failed = 0;
        let records = r
            .records
            .into_iter()
            .map(|e| {
                match self.put_one(
                    &mut state,
                    &r.stream_name,
                    e.partition_key,
                    e.data,
                    &e.explicit_hash_key,
                ) {
                    Ok(ok) => pb::PutRecordsResult {
                        shard_id: ok.shard_id,
                        sequence_number: ok.sequence_number,
                        ..Default::default()
                    },
                    Err(err) => {
                        failed += 1;
                        let status = Status::from(err);
                        pb::PutRecordsResult {
                            error_code: format!("{:?}", status.code()),
                            error_message: status.message().to_owned(),
                            ..Default::default()
                        }
                    }
                }
            })
            .collect();
        Ok(Response::new(pb::PutRecordsResponse {
            failed_record_count: failed,
            records,
        }))
    }

    async fn get_shard_iterator(
        &self,
        req: Request<pb::GetShardIteratorRequest>,
    ) -> Result<Response<pb::GetShardIteratorResponse>, Status> {
        let r = req.into_inner();
        let mut state = self.lock();
        let shard = shard_mut(&mut state, &r.stream_name, &r.shard_id)?;
        let first = shard.records.front().map_or(shard.next_seq, |x| x.seq);
        let next_seq = match pb::ShardIteratorType::try_from(r.shard_iterator_type) {
            Ok(pb::ShardIteratorType::TrimHorizon) => first,
            Ok(pb::ShardIteratorType::Latest) => shard.next_seq,
            Ok(pb::ShardIteratorType::AtSequenceNumber) => {
                parse_seq("starting_sequence_number", &r.starting_sequence_number)?
            }
            Ok(pb::ShardIteratorType::AfterSequenceNumber) => {
                parse_seq("starting_sequence_number", &r.starting_sequence_number)? + 1
            }
            Ok(pb::ShardIteratorType::AtTimestamp) => shard
                .records
                .iter()
                .find(|x| x.arrival_ms >= r.timestamp_ms)
                .map_or(shard.next_seq, |x| x.seq),
            _ => {
                return Err(ServiceError::invalid(
                    "shard_iterator_type: use TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER or AT_TIMESTAMP",
                )
                .into());
            }
        };
        let it = ShardIterator {
            stream_name: r.stream_name,
            shard_id: r.shard_id,
            next_seq,
        };
        Ok(Response::new(pb::GetShardIteratorResponse {
            shard_iterator: it.encode(),
        }))
    }

    async fn get_records(
        &self,
        req: Request<pb::GetRecordsRequest>,
    ) -> Result<Response<pb::GetRecordsResponse>, Status> {
        let r = req.into_inner();
        let it = ShardIterator::decode(&r.shard_iterator)?;
        let limit = match r.limit {
            0 => DEFAULT_GET_LIMIT,
            n if n > MAX_GET_LIMIT => {
                return Err(ServiceError::invalid(format!(
                    "limit: {n} is above the maximum {MAX_GET_LIMIT}"
                ))
                .into());
            }
            n => n,
        };
        let mut state = self.lock();
        let shard = shard_mut(&mut state, &it.stream_name, &it.shard_id)?;
        let first = shard.records.front().map_or(shard.next_seq, |x| x.seq);
        let start = it.next_seq.max(first);
        let skip = (start - first) as usize;
        let records: Vec<pb::Record> = shard
            .records
            .iter()
            .skip(skip)
            .take(limit as usize)
            .map(|x| pb::Record {
                sequence_number: x.seq.to_string(),
                partition_key: x.partition_key.clone(),
                data: x.data.clone(),
                approximate_arrival_ms: x.arrival_ms,
            })
            .collect();
        // With nothing returned, the iterator stays where it was (past any trimmed data).
        let next_seq = records
            .last()
            .and_then(|x| x.sequence_number.parse::<u64>().ok())
            .map_or(start, |s| s + 1);
        // A shard's sequence numbers are contiguous (trimming drops only the
        // oldest), so the first record at or after `next_seq` is at a known
        // index: no scan of the shard (a consumer at the tip of a full
        // shard would otherwise walk all of it on every call).
        let behind = shard
            .records
            .get(next_seq.saturating_sub(first) as usize)
            .map_or(0, |x| (now_ms() - x.arrival_ms).max(0));
        let next = ShardIterator { next_seq, ..it };
        Ok(Response::new(pb::GetRecordsResponse {
            records,
            next_shard_iterator: next.encode(),
            millis_behind_latest: behind,
        }))
    }

    async fn delete_stream(
        &self,
        req: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<pb::DeleteStreamResponse>, Status> {
        let r = req.into_inner();
        keyspace::validate_stream_name(&r.stream_name)?;
        let mut state = self.lock();
        if state.streams.remove(&r.stream_name).is_none() {
            return Err(unknown_stream(&r.stream_name).into());
        }
        state.metadata_version += 1;
        tracing::info!(stream = %r.stream_name, "stream deleted");
        Ok(Response::new(pb::DeleteStreamResponse {}))
    }

    async fn list_shards(
        &self,
        req: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        let r = req.into_inner();
        keyspace::validate_stream_name(&r.stream_name)?;
        let state = self.lock();
        let stream = state
            .streams
            .get(&r.stream_name)
            .ok_or_else(|| unknown_stream(&r.stream_name))?;
        Ok(Response::new(pb::ListShardsResponse {
            shards: self.describe(&r.stream_name, stream).shards,
        }))
    }
}

#[tonic::async_trait]
impl Metadata for Backend {
    async fn describe_streams(
        &self,
        _req: Request<pb::DescribeStreamsRequest>,
    ) -> Result<Response<pb::DescribeStreamsResponse>, Status> {
        let state = self.lock();
        Ok(Response::new(pb::DescribeStreamsResponse {
            streams: state
                .streams
                .iter()
                .map(|(n, s)| self.describe(n, s))
                .collect(),
            version: state.metadata_version,
        }))
    }
}

fn validate_member_id(id: &str) -> Result<(), ServiceError> {
    if id.is_empty() || id.len() > 64 {
        return Err(ServiceError::invalid("id: must be 1 to 64 characters"));
    }
    Ok(())
}

#[tonic::async_trait]
impl Membership for Backend {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        validate_member_id(&r.id)?;
        if r.addr.parse::<std::net::SocketAddr>().is_err() && !r.addr.contains(':') {
            return Err(
                ServiceError::invalid(format!("addr: {:?} is not host:port", r.addr)).into(),
            );
        }
        let mut state = self.lock();
        state.next_incarnation += 1;
        let incarnation = state.next_incarnation;
        let now = now_ms();
        let fleet = state.members.entry(r.fleet.clone()).or_default();
        let entry = fleet.entry(r.id.clone()).or_insert(MemberEntry {
            addr: r.addr.clone(),
            joined_at_ms: now,
            last_heartbeat_ms: now,
            incarnation,
            ready: false,
        });
        // A re-registration (restart) keeps its original join time.
        entry.addr = r.addr;
        entry.last_heartbeat_ms = now;
        entry.incarnation = incarnation;
        entry.ready = false;
        tracing::info!(fleet = %r.fleet, id = %r.id, incarnation, "member registered");
        Ok(Response::new(pb::RegisterResponse {
            joined_at_ms: entry.joined_at_ms,
            incarnation,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        validate_member_id(&r.id)?;
        let mut state = self.lock();
        let known = state
            .members
            .values_mut()
            .filter_map(|f| f.get_mut(&r.id))
            .find(|m| m.incarnation == r.incarnation)
            .map(|m| {
                m.last_heartbeat_ms = now_ms();
                m.ready = r.ready;
            })
            .is_some();
        Ok(Response::new(pb::HeartbeatResponse { known }))
    }

    async fn deregister(
        &self,
        req: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let r = req.into_inner();
        let mut state = self.lock();
        for fleet in state.members.values_mut() {
            if fleet
                .get(&r.id)
                .is_some_and(|m| m.incarnation == r.incarnation)
            {
                fleet.remove(&r.id);
                tracing::info!(id = %r.id, "member deregistered");
            }
        }
        Ok(Response::new(pb::DeregisterResponse {}))
    }

    async fn list_members(
        &self,
        req: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let r = req.into_inner();
        let state = self.lock();
        // A fleet name ending in `*` lists every fleet with that prefix
        // (customers of a cellular fleet see all its cells).
        let matches = |fleet: &str| match r.fleet.strip_suffix('*') {
            Some(prefix) => fleet.starts_with(prefix),
            None => fleet == r.fleet,
        };
        let members = state
            .members
            .iter()
            .filter(|(fleet, _)| matches(fleet))
            .flat_map(|(_, f)| {
                f.iter().map(|(id, m)| pb::Member {
                    id: id.clone(),
                    addr: m.addr.clone(),
                    joined_at_ms: m.joined_at_ms,
                    last_heartbeat_ms: m.last_heartbeat_ms,
                    incarnation: m.incarnation,
                    ready: m.ready,
                })
            })
            .collect();
        Ok(Response::new(pb::ListMembersResponse { members }))
    }
}

/// Serves the back end on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: BackendConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let owner = match &config.advertise {
        Some(a) => a.clone(),
        None => listener.local_addr()?.to_string(),
    };
    let backend = Backend::new(owner, config.clone());
    let (routes, health) = serve::base_routes(Arc::new(BasicStatus {
        name: "kinesis-backend".into(),
    }))?;
    let routes = routes
        .add_service(KinesisServer::new(backend.clone()))
        .add_service(MetadataServer::new(backend.clone()))
        .add_service(MembershipServer::new(backend.clone()));
    let expiry = {
        let backend = backend.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.member_ttl / 4);
            loop {
                tokio::select! {
                    _ = tick.tick() => backend.expire_members(),
                    _ = token.cancelled() => return,
                }
            }
        })
    };
    serve::set_serving(&health, true).await;
    let result = serve::serve(listener, routes, shutdown).await;
    expiry.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackendConfig {
        BackendConfig {
            advertise: None,
            member_ttl: Duration::from_secs(5),
            shard_retention_bytes: 64 * 1024 * 1024,
        }
    }

    /// A shard whose oldest records were trimmed: it holds sequence numbers
    /// 5 to 9, record `s` arrived (10 - s) seconds ago.
    fn trimmed_shard(b: &Backend) {
        let now = now_ms();
        let records = (5..10)
            .map(|seq| StoredRecord {
                seq,
                partition_key: format!("k{seq}"),
                data: vec![b'x'],
                arrival_ms: now - 1000 * (10 - seq as i64),
            })
            .collect();
        let (start, end) = keyspace::shard_range(0, 1);
        b.lock().streams.insert(
            "s".into(),
            Stream {
                shards: vec![ShardData {
                    start,
                    end,
                    records,
                    next_seq: 10,
                    bytes: 5,
                }],
            },
        );
    }

    async fn read(b: &Backend, next_seq: u64, limit: u32) -> pb::GetRecordsResponse {
        let it = ShardIterator {
            stream_name: "s".into(),
            shard_id: keyspace::shard_id(0),
            next_seq,
        };
        b.get_records(Request::new(pb::GetRecordsRequest {
            shard_iterator: it.encode(),
            limit,
        }))
        .await
        .expect("get_records")
        .into_inner()
    }

    #[tokio::test]
    async fn millis_behind_latest_is_the_age_of_the_next_record_unread() {
        let b = Backend::new("owner".into(), config());
        trimmed_shard(&b);
        // After reading 7, the next unread is 8, which arrived 2 s ago.
        let r = read(&b, 7, 1).await;
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.records[0].sequence_number, "7");
        assert!(
            (1_900..2_500).contains(&r.millis_behind_latest),
            "{}",
            r.millis_behind_latest
        );
        // An iterator behind the trim horizon reads from the oldest kept (5);
        // the next unread is then 6, 4 s old.
        let r = read(&b, 2, 1).await;
        assert_eq!(r.records[0].sequence_number, "5");
        assert!(
            (3_900..4_500).contains(&r.millis_behind_latest),
            "{}",
            r.millis_behind_latest
        );
        // At the tip nothing is unread.
        let r = read(&b, 9, 5).await;
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.millis_behind_latest, 0);
        assert_eq!(read(&b, 10, 5).await.millis_behind_latest, 0);
    }
}
