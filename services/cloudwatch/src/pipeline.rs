//! The Kinesis side of CloudWatch's metrics pipeline ("metrics and logs are
//! processed through Kinesis"): puts go to the metrics stream through the
//! front-end fleet, and the aggregator reads them back. A trait, so unit tests
//! can make Kinesis fail and recover without a network.

use std::sync::Arc;

use cascade_core::ServiceError;
use cascade_core::kinesis::{KinesisProducer, StreamReader};

/// Most records one PutRecords call may carry (as AWS; the front-end enforces it).
pub use cascade_core::keyspace::MAX_RECORDS_PER_PUT;

/// Records read per shard per poll.
const POLL_LIMIT: u32 = 1_000;

/// Where metric records go and come back from.
#[tonic::async_trait]
pub trait MetricsPipeline: Send + Sync + 'static {
    /// Puts at most [`MAX_RECORDS_PER_PUT`] (partition key, bytes) records;
    /// all or nothing.
    async fn put_records(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), ServiceError>;

    /// Reads the records put since the last successful poll.
    async fn poll(&self) -> Result<Vec<Vec<u8>>, ServiceError>;
}

/// The real pipeline: one Kinesis stream through the front-end fleet.
#[derive(Debug)]
pub struct KinesisPipeline {
    /// Client spread over the (possibly partitioned) front-end fleet.
    producer: Arc<KinesisProducer>,
    /// The metrics stream.
    stream: String,
    /// Follows every shard of the stream from TRIM_HORIZON.
    reader: tokio::sync::Mutex<StreamReader>,
}

impl KinesisPipeline {
    /// A pipeline over `stream`.
    pub fn new(producer: Arc<KinesisProducer>, stream: &str) -> Self {
        Self {
            producer,
            stream: stream.to_owned(),
            reader: tokio::sync::Mutex::new(StreamReader::new(stream, true)),
        }
    }
}

#[tonic::async_trait]
impl MetricsPipeline for KinesisPipeline {
    async fn put_records(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), ServiceError> {
        self.producer
            .put_records(&self.stream, records)
            .await
            .map_err(|e| {
                // The producer's message already names Kinesis and the call.
                ServiceError::unavailable(format!("{} (stream {:?})", e.message(), self.stream))
            })
    }

    async fn poll(&self) -> Result<Vec<Vec<u8>>, ServiceError> {
        let records = self
            .reader
            .lock()
            .await
            .poll(&self.producer, POLL_LIMIT)
            .await?;
        Ok(records.into_iter().map(|r| r.data).collect())
    }
}
