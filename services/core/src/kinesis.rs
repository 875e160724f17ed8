//! Using Kinesis the way AWS's internal services do: through the front-end
//! fleet. `KinesisProducer` discovers the fleet's front-ends from membership
//! (like a load balancer's target list) and spreads calls over them;
//! `StreamReader` follows every shard of a stream. When the fleet's
//! shard-maps are unusable these calls fail with the front-ends' own
//! UNAVAILABLE, named as a Kinesis failure (`Kinesis PutRecords UNAVAILABLE:
//! ...`), and the caller's mechanism (buffer, retry, error) takes over.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cascade_proto::kinesis as pb;
use cascade_proto::kinesis::kinesis_client::KinesisClient;
use cascade_proto::kinesis::membership_client::MembershipClient;
use parking_lot::Mutex;
use tonic::transport::Channel;

use crate::deps::Upstream::Kinesis;
use crate::{ServiceError, clients};

/// How often the front-end list is re-read from membership.
const REFRESH: Duration = Duration::from_secs(2);

/// Flags of every service that writes to or reads from Kinesis.
#[derive(Debug, Clone, clap::Args)]
pub struct KinesisArgs {
    /// Address of the Kinesis back end (its membership service lists the front-ends).
    #[arg(long, env = "CASCADE_KINESIS_BACKEND")]
    pub kinesis_backend: String,
    /// Which front-end fleet to use: "" is the main fleet; a partitioned fleet has its own name.
    #[arg(long, env = "CASCADE_KINESIS_FLEET", default_value = "")]
    pub kinesis_fleet: String,
    /// Deadline of each Kinesis call.
    #[arg(long, env = "CASCADE_KINESIS_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub kinesis_timeout: Duration,
    /// Route only to front-ends whose shard map is ready, as a client behind
    /// a health-checked load balancer does (`false`: spread over every
    /// member of the fleet, as a client that addresses the fleet from its
    /// membership list does).
    #[arg(long, env = "CASCADE_KINESIS_READY_ONLY", default_value_t = true, action = clap::ArgAction::Set)]
    pub kinesis_ready_only: bool,
}

impl KinesisArgs {
    /// Kinesis, as the upstream these flags configure a client for
    /// (`None` when no back end is given).
    pub fn upstream(&self) -> Option<crate::deps::Upstream> {
        (!self.kinesis_backend.trim().is_empty()).then_some(Kinesis)
    }
}

/// A Kinesis client spread over the front-end fleet.
#[derive(Debug)]
pub struct KinesisProducer {
    args: KinesisArgs,
    membership: MembershipClient<Channel>,
    /// Front-end address -> client; refreshed from membership.
    frontends: Mutex<(Instant, BTreeMap<String, KinesisClient<Channel>>)>,
    next: AtomicUsize,
}

impl KinesisProducer {
    /// A producer for `args`; connects lazily.
    pub fn new(args: KinesisArgs) -> anyhow::Result<Self> {
        let ch = clients::lazy_channel(&args.kinesis_backend, args.kinesis_timeout)?;
        Ok(Self {
            args,
            membership: MembershipClient::new(ch),
            frontends: Mutex::new((Instant::now() - REFRESH * 2, BTreeMap::new())),
            next: AtomicUsize::new(0),
        })
    }

    /// The next front-end to call, round-robin.
    pub async fn client(&self) -> Result<KinesisClient<Channel>, ServiceError> {
        let stale = {
            let g = self.frontends.lock();
            g.0.elapsed() > REFRESH || g.1.is_empty()
        };
        if stale {
            self.refresh().await?;
        }
        let g = self.frontends.lock();
        if g.1.is_empty() {
            return Err(ServiceError::unavailable(format!(
                "Kinesis: no front-ends in fleet {:?}",
                self.args.kinesis_fleet
            )));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % g.1.len();
        Ok(g.1.values().nth(i).cloned().expect("index is in range"))
    }

    async fn refresh(&self) -> Result<(), ServiceError> {
        let members = self
            .membership
            .clone()
            .list_members(pb::ListMembersRequest {
                fleet: self.args.kinesis_fleet.clone(),
            })
            .await
            .map_err(|s| ServiceError::unavailable(format!("Kinesis membership: {}", s.message())))?
            .into_inner()
            .members;
        // Like a load balancer's health check: route to members whose shard
        // map is ready; with none ready, fail open to every member. Without
        // the health check, every member.
        let any_ready = self.args.kinesis_ready_only && members.iter().any(|m| m.ready);
        let mut g = self.frontends.lock();
        let mut fresh = BTreeMap::new();
        for m in members.into_iter().filter(|m| m.ready || !any_ready) {
            let c = match g.1.get(&m.addr) {
                Some(c) => c.clone(),
                None => match clients::lazy_channel(&m.addr, self.args.kinesis_timeout) {
                    Ok(ch) => KinesisClient::new(ch),
                    Err(_) => continue,
                },
            };
            fresh.insert(m.addr, c);
        }
        *g = (Instant::now(), fresh);
        Ok(())
    }

    /// Creates `stream` with `shards` shards unless it already exists.
    pub async fn ensure_stream(&self, stream: &str, shards: u32) -> Result<(), ServiceError> {
        let r = self
            .client()
            .await?
            .create_stream(pb::CreateStreamRequest {
                stream_name: stream.to_owned(),
                shard_count: shards,
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(Kinesis.error("CreateStream", s)),
        }
    }

    /// Puts records (partition key, data) with one PutRecords call. Any
    /// failed entry fails the whole call, so the caller keeps the batch.
    pub async fn put_records(
        &self,
        stream: &str,
        records: Vec<(String, Vec<u8>)>,
    ) -> Result<(), ServiceError> {
        if records.is_empty() {
            return Ok(());
        }
        let resp = self
            .client()
            .await?
            .put_records(pb::PutRecordsRequest {
                stream_name: stream.to_owned(),
                records: records
                    .into_iter()
                    .map(|(partition_key, data)| pb::PutRecordsEntry {
                        partition_key,
                        data,
                        explicit_hash_key: String::new(),
                    })
                    .collect(),
            })
            .await
            .map_err(|s| Kinesis.error("PutRecords", s))?
            .into_inner();
        if resp.failed_record_count > 0 {
            let first = resp
                .records
                .iter()
                .find(|r| !r.error_code.is_empty())
                .map(|r| format!("{}: {}", r.error_code, r.error_message))
                .unwrap_or_default();
            return Err(ServiceError::unavailable(format!(
                "Kinesis PutRecords: {} of the records failed ({first})",
                resp.failed_record_count
            )));
        }
        Ok(())
    }
}

/// Follows every shard of one stream from where it was when first polled.
/// An iterator moves on only once its records are handed back, so a call
/// that fails part-way (a partly healthy fleet) loses nothing.
#[derive(Debug)]
pub struct StreamReader {
    stream: String,
    from_start: bool,
    /// The stream's shards, once listed.
    shards: Vec<String>,
    /// shard id -> next iterator.
    iterators: BTreeMap<String, String>,
}

impl StreamReader {
    /// A reader of `stream`; `from_start` reads from TRIM_HORIZON, else from LATEST.
    pub fn new(stream: &str, from_start: bool) -> Self {
        Self {
            stream: stream.to_owned(),
            from_start,
            shards: Vec::new(),
            iterators: BTreeMap::new(),
        }
    }

    /// Reads whatever is new on every shard (at most `limit` per shard).
    /// Fails only when nothing could be read; records read before a later
    /// shard failed are returned, and that shard is retried next time.
    pub async fn poll(
        &mut self,
        kinesis: &KinesisProducer,
        limit: u32,
    ) -> Result<Vec<pb::Record>, ServiceError> {
        if self.shards.is_empty() {
            self.shards = kinesis
                .client()
                .await?
                .list_shards(pb::ListShardsRequest {
                    stream_name: self.stream.clone(),
                })
                .await
                .map_err(|s| Kinesis.error("ListShards", s))?
                .into_inner()
                .shards
                .into_iter()
                .map(|s| s.shard_id)
                .collect();
        }
        let kind = if self.from_start {
            pb::ShardIteratorType::TrimHorizon
        } else {
            pb::ShardIteratorType::Latest
        };
        let mut out = Vec::new();
        let mut first_error = None;
        for shard in &self.shards {
            let step = async {
                let it = match self.iterators.get(shard) {
                    Some(it) => it.clone(),
                    None => {
                        kinesis
                            .client()
                            .await?
                            .get_shard_iterator(pb::GetShardIteratorRequest {
                                stream_name: self.stream.clone(),
                                shard_id: shard.clone(),
                                shard_iterator_type: kind as i32,
                                starting_sequence_number: String::new(),
                                timestamp_ms: 0,
                            })
                            .await
                            .map_err(|s| Kinesis.error("GetShardIterator", s))?
                            .into_inner()
                            .shard_iterator
                    }
                };
                let resp = kinesis
                    .client()
                    .await?
                    .get_records(pb::GetRecordsRequest {
                        shard_iterator: it,
                        limit,
                    })
                    .await
                    .map_err(|s| Kinesis.error("GetRecords", s))?
                    .into_inner();
                Ok::<_, ServiceError>(resp)
            };
            match step.await {
                Ok(resp) => {
                    self.iterators
                        .insert(shard.clone(), resp.next_shard_iterator);
                    out.extend(resp.records);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}

use crate::parse::parse_time_scale;

/// The incident clock: `--time-scale` incident seconds per wall second.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct TimeArgs {
    /// Incident seconds per wall second (360: one incident hour lasts 10 s).
    #[arg(long, env = "CASCADE_TIME_SCALE", default_value_t = 360.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
}

impl TimeArgs {
    /// Wall time of `incident_secs` incident seconds.
    pub fn wall(&self, incident_secs: f64) -> Duration {
        Duration::from_secs_f64(incident_secs / self.time_scale)
    }
}
