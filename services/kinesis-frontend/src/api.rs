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

/// The work of each call once it holds its worker slot: the gRPC API and
/// the AWS API ([`crate::aws`]) both run these, so both route with the same
/// `ShardMap`, pay the same modelled request cost and reach the same back
/// ends. The caller takes the slot ([`FrontendApi::slot`]).
impl FrontendApi {
    /// A worker slot for one request, or UNAVAILABLE naming who holds them.
    pub(crate) async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ServiceError> {
        self.0.slot().await
    }

    pub(crate) async fn create_stream_held(
        &self,
        req: pb::CreateStreamRequest,
    ) -> Result<pb::CreateStreamResponse, Status> {
        keyspace::validate_stream_name(&req.stream_name)?;
        // Stream creation is a control-plane call: it goes to the metadata
        // store's owner directly and needs no shard map.
        let resp = KinesisClient::new(self.0.backend.clone())
            .create_stream(req)
            .await?
            .into_inner();
        let _ = self.0.refresh_metadata().await;
        Ok(resp)
    }

    pub(crate) async fn delete_stream_held(
        &self,
        req: pb::DeleteStreamRequest,
    ) -> Result<pb::DeleteStreamResponse, Status> {
        keyspace::validate_stream_name(&req.stream_name)?;
        // Control plane, like CreateStream: straight to the metadata store.
        let resp = KinesisClient::new(self.0.backend.clone())
            .delete_stream(req)
            .await?
            .into_inner();
        let _ = self.0.refresh_metadata().await;
        Ok(resp)
    }

    /// The names of every stream, read from the metadata store (so a
    /// stream another front-end just created is listed), sorted.
    pub(crate) async fn stream_names_held(&self) -> Result<Vec<String>, Status> {
        self.0.refresh_metadata().await.map_err(|e| {
            Status::from(ServiceError::unavailable(format!(
                "metadata store unreachable: {}",
                e.message()
            )))
        })?;
        let mut names: Vec<String> = self.0.map().streams.keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    pub(crate) async fn put_record_held(
        &self,
        r: pb::PutRecordRequest,
    ) -> Result<pb::PutRecordResponse, Status> {
        let hash = keyspace::validate_put(
            &r.stream_name,
            &r.partition_key,
            &r.data,
            &r.explicit_hash_key,
        )?;
        let routes = self.routes(&r.stream_name).await?;
        let route = Self::owner_of(&routes, hash)?;
        self.0.serve().await;
        Ok(self.client(route)?.put_record(r).await?.into_inner())
    }

    pub(crate) async fn put_records_held(
        &self,
        r: pb::PutRecordsRequest,
    ) -> Result<pb::PutRecordsResponse, Status> {
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
        Ok(pb::PutRecordsResponse {
            failed_record_count: failed,
            records: results,
        })
    }

    pub(crate) async fn get_shard_iterator_held(
        &self,
        r: pb::GetShardIteratorRequest,
    ) -> Result<pb::GetShardIteratorResponse, Status> {
        let routes = self.routes(&r.stream_name).await?;
        let route = Self::shard(&routes, &r.stream_name, &r.shard_id)?;
        self.0.serve().await;
        Ok(self
            .client(route)?
            .get_shard_iterator(r)
            .await?
            .into_inner())
    }

    pub(crate) async fn get_records_held(
        &self,
        r: pb::GetRecordsRequest,
    ) -> Result<pb::GetRecordsResponse, Status> {
        let it = ShardIterator::decode(&r.shard_iterator)?;
        let routes = self.routes(&it.stream_name).await?;
        let route = Self::shard(&routes, &it.stream_name, &it.shard_id)?;
        self.0.serve().await;
        Ok(self.client(route)?.get_records(r).await?.into_inner())
    }

    pub(crate) async fn list_shards_held(
        &self,
        r: pb::ListShardsRequest,
    ) -> Result<pb::ListShardsResponse, Status> {
        let routes = self.routes(&r.stream_name).await?;
        self.0.serve().await;
        Ok(pb::ListShardsResponse {
            shards: routes
                .iter()
                .map(|r| pb::Shard {
                    shard_id: r.shard_id.clone(),
                    starting_hash_key: r.start.to_string(),
                    ending_hash_key: r.end.to_string(),
                    owner: r.owner.clone(),
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl Kinesis for FrontendApi {
    async fn create_stream(
        &self,
        req: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::CreateStreamResponse>, Status> {
        let _slot = self.slot().await?;
        Ok(Response::new(
            self.create_stream_held(req.into_inner()).await?,
        ))
    }

    async fn delete_stream(
        &self,
        req: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<pb::DeleteStreamResponse>, Status> {
        let _slot = self.slot().await?;
        Ok(Response::new(
            self.delete_stream_held(req.into_inner()).await?,
        ))
    }

    async fn put_record(
        &self,
        req: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        let _slot = self.slot().await?;
        Ok(Response::new(self.put_record_held(req.into_inner()).await?))
    }

    async fn put_records(
        &self,
        req: Request<pb::PutRecordsRequest>,
    ) -> Result<Response<pb::PutRecordsResponse>, Status> {
        let _slot = self.slot().await?;
        Ok(Response::new(
            self.put_records_held(req.into_inner()).await?,
        ))
    }

    async fn get_shard_iterator(
        &self,
        req: Request<pb::GetShardIteratorRequest>,
    ) -> Result<Response<pb::GetShardIteratorResponse>, Status> {
        let _slot = self.slot().await?;
        Ok(Response::new(
            self.get_shard_iterator_held(req.into_inner()).await?,
        ))
    }

    async fn get_records(
        &self,
        req: Request<pb::GetRecordsRequest>,
    ) -> Result<Response<pb::GetRecordsResponse>, Status> {
        let _slot = self.slot().await?;
        Ok(Response::new(
            self.get_records_held(req.into_inner()).await?,
        ))
    }

    async fn list_shards(
        &self,
        req: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        let _slot = self.slot().await?;
        Ok(Response::new(
            self.list_shards_held(req.into_inner()).await?,
        ))
    }
}
