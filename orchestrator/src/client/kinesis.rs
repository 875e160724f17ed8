//! `cascade kinesis ...`: the data-plane poke. It talks straight to one
//! front-end, as `aws kinesis` would, and prints the answer as JSON.

use anyhow::Context;
use cascade_proto::kinesis as pb;
use cascade_proto::kinesis::kinesis_client::KinesisClient;
use std::time::Duration;
use tonic::transport::Channel;

use super::{UsageError, fetch_status, rpc_error};

/// Which front-end to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// Front-end to call: host:port or an instance name (kinesis-frontend-3).
    /// Default: the first front-end of the running fleet.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Deadline of the call.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `cascade kinesis ...`, flags as `aws kinesis`.
#[derive(Debug, clap::Subcommand)]
pub enum KinesisCmd {
    /// Create a stream with K shards.
    CreateStream {
        /// Stream name.
        #[arg(long)]
        stream_name: String,
        /// Number of shards.
        #[arg(long, default_value_t = 1)]
        shard_count: u32,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Put one record (the data is sent as the given UTF-8 bytes).
    PutRecord {
        /// Stream name.
        #[arg(long)]
        stream_name: String,
        /// Partition key (its MD5 picks the shard).
        #[arg(long)]
        partition_key: String,
        /// Record payload.
        #[arg(long)]
        data: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Read a shard from TRIM_HORIZON.
    GetRecords {
        /// Stream name.
        #[arg(long)]
        stream_name: String,
        /// Shard id, e.g. shardId-000000000000.
        #[arg(long)]
        shard_id: String,
        /// Most records to return.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// List a stream's shards and their owners.
    ListShards {
        /// Stream name.
        #[arg(long)]
        stream_name: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

async fn kinesis_client(e: &EndpointArgs) -> anyhow::Result<KinesisClient<Channel>> {
    let addr = match &e.endpoint {
        Some(a) if a.contains(':') => a.clone(),
        Some(name) => {
            let st = fetch_status().await?;
            st.frontends
                .iter()
                .find(|f| &f.name == name || &f.id == name)
                .map(|f| f.addr.clone())
                .ok_or_else(|| {
                    UsageError(format!(
                        "--endpoint {name}: no such front-end; running: {}",
                        st.frontends
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?
        }
        None => {
            let st = fetch_status().await?;
            st.frontends
                .first()
                .map(|f| f.addr.clone())
                .context("the fleet has no front-ends")?
        }
    };
    let ch = cascade_core::clients::endpoint(&addr)
        .map_err(|err| UsageError(format!("--endpoint {addr}: {err}")))?
        .timeout(e.timeout)
        .connect()
        .await
        .with_context(|| format!("cannot connect to front-end {addr}"))?;
    Ok(KinesisClient::new(ch))
}

/// Runs one `cascade kinesis` command and prints the answer as JSON.
pub async fn kinesis(cmd: KinesisCmd) -> anyhow::Result<()> {
    let out = match cmd {
        KinesisCmd::CreateStream {
            stream_name,
            shard_count,
            endpoint,
        } => {
            let r = kinesis_client(&endpoint)
                .await?
                .create_stream(pb::CreateStreamRequest {
                    stream_name,
                    shard_count,
                })
                .await
                .map_err(|s| rpc_error("create-stream", s))?
                .into_inner();
            serde_json::json!({"StreamName": r.stream_name, "ShardCount": r.shards.len()})
        }
        KinesisCmd::PutRecord {
            stream_name,
            partition_key,
            data,
            endpoint,
        } => {
            let r = kinesis_client(&endpoint)
                .await?
                .put_record(pb::PutRecordRequest {
                    stream_name,
                    partition_key,
                    data: data.into_bytes(),
                    explicit_hash_key: String::new(),
                })
                .await
                .map_err(|s| rpc_error("put-record", s))?
                .into_inner();
            serde_json::json!({"ShardId": r.shard_id, "SequenceNumber": r.sequence_number})
        }
        KinesisCmd::GetRecords {
            stream_name,
            shard_id,
            limit,
            endpoint,
        } => get_records(&endpoint, stream_name, shard_id, limit).await?,
        KinesisCmd::ListShards {
            stream_name,
            endpoint,
        } => {
            let r = kinesis_client(&endpoint)
                .await?
                .list_shards(pb::ListShardsRequest { stream_name })
                .await
                .map_err(|s| rpc_error("list-shards", s))?
                .into_inner();
            let shards: Vec<_> = r
                .shards
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "ShardId": s.shard_id,
                        "HashKeyRange": {"StartingHashKey": s.starting_hash_key, "EndingHashKey": s.ending_hash_key},
                        "Owner": s.owner,
                    })
                })
                .collect();
            serde_json::json!({"Shards": shards})
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Reads a shard from TRIM_HORIZON, as `aws kinesis get-records` after
/// `get-shard-iterator` would.
async fn get_records(
    endpoint: &EndpointArgs,
    stream_name: String,
    shard_id: String,
    limit: u32,
) -> anyhow::Result<serde_json::Value> {
    let mut c = kinesis_client(endpoint).await?;
    let it = c
        .get_shard_iterator(pb::GetShardIteratorRequest {
            stream_name,
            shard_id,
            shard_iterator_type: pb::ShardIteratorType::TrimHorizon as i32,
            starting_sequence_number: String::new(),
            timestamp_ms: 0,
        })
        .await
        .map_err(|s| rpc_error("get-records", s))?
        .into_inner()
        .shard_iterator;
    let r = c
        .get_records(pb::GetRecordsRequest {
            shard_iterator: it,
            limit,
        })
        .await
        .map_err(|s| rpc_error("get-records", s))?
        .into_inner();
    let records: Vec<_> = r
        .records
        .iter()
        .map(|x| {
            serde_json::json!({
                "SequenceNumber": x.sequence_number,
                "PartitionKey": x.partition_key,
                "Data": String::from_utf8_lossy(&x.data),
                "ApproximateArrivalTimestamp": x.approximate_arrival_ms,
            })
        })
        .collect();
    Ok(
        serde_json::json!({"Records": records, "NextShardIterator": r.next_shard_iterator, "MillisBehindLatest": r.millis_behind_latest}),
    )
}
