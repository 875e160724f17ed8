//! The client-facing Kinesis API of a front-end. Every data-plane call is
//! validated, then routed with the `ShardMap` to the back end that owns the
//! shard; with an unusable map the call answers UNAVAILABLE naming the cause.

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_core::ServiceError;
use cascade_core::keyspace::{self, ShardIterator};
use cascade_proto::kinesis as pb;
use cascade_proto::kinesis::kinesis_client::KinesisClient;
use cascade_proto::kinesis::kinesis_server::Kinesis;
use tonic::{Request, Response, Status};

use crate::Frontend;
use crate::shardmap::ShardRoute;

/// The Kinesis service of a front-end.
pub struct FrontendApi(pub Arc<Frontend>);

impl FrontendApi {
    /// The routes of `stream`, re-reading the metadata store once on a miss.
    async fn routes(&self, stream: &str) -> Result<Arc<[ShardRoute]>, ServiceError> {
        keyspace::validate_stream_name(stream)?;
        let lookup = |fe: &Frontend| -> Result<Option<Arc<[ShardRoute]>>, ServiceError> {
            let mut map = fe.map();
            map.check_populated();
            map.routes(stream).map_err(ServiceError::Unavailable)
        };
        if let Some(r) = lookup(&self.0)? {
            return Ok(r);
        }
        self.0.refresh_metadata().await.map_err(|e| {
            ServiceError::unavailable(format!("metadata store unreachable: {}", e.message()))
        })?;
        lookup(&self.0)?.ok_or_else(|| {
            ServiceError::not_found(format!(
                "stream {stream:?} not found; create it with CreateStream"
            ))
        })
    }

    fn owner_of(routes: &[ShardRoute], hash: u128) -> Result<&ShardRoute, ServiceError> {
        routes
            .iter()
            .find(|r| r.start <= hash && hash <= r.end)
            .ok_or_else(|| ServiceError::Internal(format!("no shard covers hash key {hash}")))
    }

    fn shard<'a>(
        routes: &'a [ShardRoute],
        stream: &str,
        shard_id: &str,
    ) -> Result<&'a ShardRoute, ServiceError> {
        routes
            .iter()
            .find(|r| r.shard_id == shard_id)
            .ok_or_else(|| {
                ServiceError::not_found(format!(
                    "shard {shard_id:?} not found in stream {stream:?} (it has {} shards)",
                    routes.len()
                ))
            })
    }

    fn client(
        &self,
        route: &ShardRoute,
    ) -> Result<KinesisClient<tonic::transport::Channel>, ServiceError> {
        self.0.owner_client(&route.owner)
    }
}

#[tonic::async_trait]
impl Kinesis for FrontendApi {
    async fn create_stream(
        &self,
        req: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::CreateStreamResponse>, Status> {
        let _slot = self.0.slot().await?;
        keyspace::validate_stream_name(&req.get_ref().stream_name)?;
        // Stream creation is a control-plane call: it goes to the metadata
        // store's owner directly and needs no shard map.
        let resp = KinesisClient::new(self.0.backend.clone())
            .create_stream(req.into_inner())
            .await?;
        let _ = self.0.refresh_metadata().await;
        Ok(resp)
    }

    async fn put_record(
        &self,
        req: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        let _slot = self.0.slot().await?;
        let r = req.get_ref();
        let hash = keyspace::validate_put(
            &r.stream_name,
            &r.partition_key,
            &r.data,
            &r.explicit_hash_key,
        )?;
        let routes = self.routes(&r.stream_name).await?;
        let route = Self::owner_of(&routes, hash)?;
        self.0.serve().await;
        Ok(self.client(route)?.put_record(req.into_inner()).await?)
    }

    async fn put_records(
        &self,
        req: Request<pb::PutRecordsRequest>,
    ) -> Result<Response<pb::PutRecordsResponse>, Status> {
        let _slot = self.0.slot().await?;
        let r = req.into_inner();
        keyspace::validate_batch_len(r.records.len())?;
        let routes = self.routes(&r.stream_name).await?;
        self.0.serve().await;
        // Group entries by owning back end, keeping each entry's position.
        let mut results = vec![pb::PutRecordsResult::default(); r.records.len()];
        let mut failed = 0;
        let mut by_owner: BTreeMap<String, Vec<(usize, pb::PutRecordsEntry)>> = BTreeMap::new();
        for (i, e) in r.records.into_iter().enumerate() {
            match keyspace::validate_put(
                &r.stream_name,
                &e.partition_key,
                &e.data,
                &e.explicit_hash_key,
            )
            .and_then(|h| Self::owner_of(&routes, h).map(|x| x.owner.clone()))
            {
                Ok(owner) => by_owner.entry(owner).or_default().push((i, e)),
                Err(err) => {
                    failed += 1;
                    let s = Status::from(err);
                    results[i].error_code = format!("{:?}", s.code());
                    results[i].error_message = s.message().to_owned();
                }
            }
        }
        for (owner, entries) in by_owner {
            let (idx, records): (Vec<usize>, Vec<pb::PutRecordsEntry>) =
                entries.into_iter().unzip();
            let resp = self
                .0
                .owner_client(&owner)?
                .put_records(pb::PutRecordsRequest {
                    stream_name: r.stream_name.clone(),
                    records,
                })
                .await?
                .into_inner();
            failed += resp.failed_record_count;
            for (i, res) in idx.into_iter().zip(resp.records) {
                results[i] = res;
            }
        }
        Ok(Response::new(pb::PutRecordsResponse {
            failed_record_count: failed,
            records: results,
        }))
    }

    async fn get_shard_iterator(
        &self,
        req: Request<pb::GetShardIteratorRequest>,
    ) -> Result<Response<pb::GetShardIteratorResponse>, Status> {
        let _slot = self.0.slot().await?;
        let r = req.get_ref();
        let routes = self.routes(&r.stream_name).await?;
        let route = Self::shard(&routes, &r.stream_name, &r.shard_id)?;
        self.0.serve().await;
        Ok(self
            .client(route)?
            .get_shard_iterator(req.into_inner())
            .await?)
    }

    async fn get_records(
        &self,
        req: Request<pb::GetRecordsRequest>,
    ) -> Result<Response<pb::GetRecordsResponse>, Status> {
        let _slot = self.0.slot().await?;
        let it = ShardIterator::decode(&req.get_ref().shard_iterator)?;
        let routes = self.routes(&it.stream_name).await?;
        let route = Self::shard(&routes, &it.stream_name, &it.shard_id)?;
        self.0.serve().await;
        Ok(self.client(route)?.get_records(req.into_inner()).await?)
    }

    async fn list_shards(
        &self,
        req: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        let _slot = self.0.slot().await?;
        let stream = &req.get_ref().stream_name;
        let routes = self.routes(stream).await?;
        self.0.serve().await;
        Ok(Response::new(pb::ListShardsResponse {
            shards: routes
                .iter()
                .map(|r| pb::Shard {
                    shard_id: r.shard_id.clone(),
                    starting_hash_key: r.start.to_string(),
                    ending_hash_key: r.end.to_string(),
                    owner: r.owner.clone(),
                })
                .collect(),
        }))
    }
}
