//! The AWS Kinesis API on a front-end: `POST /` with
//! `X-Amz-Target: Kinesis_20131202.<Operation>` and a body in
//! `application/x-amz-json-1.1` (or `application/x-amz-cbor-1.1`, which the
//! Java SDK and the KCL use), served over HTTP/1.1 on the front-end's own
//! listener (the accept loop tells it apart by its first bytes).
//!
//! Each call takes one of the front-end's worker slots and then runs the
//! same routed work as the gRPC API (`FrontendApi::*_held`): the same
//! `ShardMap`, request cost and back ends, so an AWS client fails exactly
//! when and how a gRPC customer does. Only the wire format and the error
//! names differ; the mapping is [`from_status`] (and the README table).
//!
//! Authentication is as in the emulators: an `Authorization` header of the
//! SigV4 shape is required, its signature is not verified.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use cascade_proto::kinesis as pb;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::api::FrontendApi;

/// The JSON content type of the AWS API.
pub const JSON: &str = "application/x-amz-json-1.1";
/// The CBOR content type of the AWS API.
pub const CBOR: &str = "application/x-amz-cbor-1.1";
/// The prefix of every Kinesis `X-Amz-Target`.
pub const TARGET_PREFIX: &str = "Kinesis_20131202.";
/// Largest request body accepted (PutRecords carries at most 5 MiB of
/// data, base64 makes that 6.7 MiB).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// A shard iterator expires this long after it was handed out, as in AWS.
pub const ITERATOR_TTL: Duration = Duration::from_secs(300);
/// The account id in the ARNs we hand out (there are no accounts here).
pub const ACCOUNT: &str = "000000000000";
/// Largest ShardCount one CreateStream may ask for (the back end's limit).
const MAX_SHARDS: i64 = 64;

/// The body encoding of one request (and its reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-amz-json-1.1`: blobs are base64, timestamps epoch seconds.
    Json,
    /// `application/x-amz-cbor-1.1`: blobs are byte strings, timestamps
    /// epoch milliseconds (as the AWS SDKs' CBOR codec writes them).
    Cbor,
}

impl Format {
    /// The format of a request with this `Content-Type` (JSON unless CBOR).
    pub fn of(content_type: Option<&str>) -> Self {
        match content_type {
            Some(ct) if ct.trim().starts_with(CBOR) => Self::Cbor,
            _ => Self::Json,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Json => JSON,
            Self::Cbor => CBOR,
        }
    }
}

/// An AWS error: its `__type`, message and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// The `__type` (and `x-amzn-ErrorType`), e.g. `ResourceNotFoundException`.
    pub kind: &'static str,
    /// The `message`.
    pub message: String,
    /// The HTTP status AWS answers this error with.
    pub status: StatusCode,
}

impl AwsError {
    fn new(kind: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            status,
        }
    }

    /// A request field breaks a documented constraint.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", StatusCode::BAD_REQUEST, message)
    }

    /// A request is well-formed but its arguments are not acceptable.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new("InvalidArgumentException", StatusCode::BAD_REQUEST, message)
    }

    /// The body could not be read as the operation's input.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new("SerializationException", StatusCode::BAD_REQUEST, message)
    }
}

/// Whether an operation is on the data plane (records, iterators) or the
/// control plane (streams, shards): throttling is named differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// PutRecord(s), GetShardIterator, GetRecords.
    Data,
    /// Stream and shard management.
    Control,
}

/// The operations served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateStream,
    DeleteStream,
    DescribeStream,
    DescribeStreamSummary,
    ListStreams,
    ListShards,
    PutRecord,
    PutRecords,
    GetShardIterator,
    GetRecords,
}

impl Op {
    /// The operation named by an `X-Amz-Target` header.
    pub fn from_target(target: Option<&str>) -> Result<Self, AwsError> {
        let unknown = |what: &str| {
            AwsError::new(
                "UnknownOperationException",
                StatusCode::BAD_REQUEST,
                format!("{what}; send X-Amz-Target: {TARGET_PREFIX}<Operation>"),
            )
        };
        let Some(target) = target else {
            return Err(unknown("no X-Amz-Target header"));
        };
        let Some(name) = target.strip_prefix(TARGET_PREFIX) else {
            return Err(unknown(&format!("unknown target {target:?}")));
        };
        Ok(match name {
            "CreateStream" => Self::CreateStream,
            "DeleteStream" => Self::DeleteStream,
            "DescribeStream" => Self::DescribeStream,
            "DescribeStreamSummary" => Self::DescribeStreamSummary,
            "ListStreams" => Self::ListStreams,
            "ListShards" => Self::ListShards,
            "PutRecord" => Self::PutRecord,
            "PutRecords" => Self::PutRecords,
            "GetShardIterator" => Self::GetShardIterator,
            "GetRecords" => Self::GetRecords,
            _ => return Err(unknown(&format!("operation {name:?} is not served here"))),
        })
    }

    /// Which plane the operation is on.
    pub fn plane(self) -> Plane {
        match self {
            Self::PutRecord | Self::PutRecords | Self::GetShardIterator | Self::GetRecords => {
                Plane::Data
            }
            _ => Plane::Control,
        }
    }
}

/// Checks the `Authorization` header has the SigV4 shape (the signature is
/// not verified) and returns the region of its credential scope.
pub fn check_auth(authorization: Option<&str>) -> Result<String, AwsError> {
    let Some(auth) = authorization else {
        return Err(AwsError::new(
            "MissingAuthenticationTokenException",
            StatusCode::FORBIDDEN,
            "Missing Authentication Token: sign the request with SigV4 (any credentials do; the signature is not verified)",
        ));
    };
    let incomplete = |what: &str| {
        AwsError::new(
            "IncompleteSignatureException",
            StatusCode::FORBIDDEN,
            format!(
                "Authorization header is not SigV4: {what} (expected 'AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/kinesis/aws4_request, SignedHeaders=..., Signature=...')"
            ),
        )
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(incomplete("it does not start with AWS4-HMAC-SHA256"));
    };
    let mut credential = None;
    let (mut signed, mut signature) = (false, false);
    for part in rest.split(',').map(str::trim) {
        if let Some(c) = part.strip_prefix("Credential=") {
            credential = Some(c);
        } else if part.starts_with("SignedHeaders=") {
            signed = true;
        } else if part.starts_with("Signature=") {
            signature = true;
        }
    }
    let Some(credential) = credential else {
        return Err(incomplete("no Credential="));
    };
    if !signed || !signature {
        return Err(incomplete("no SignedHeaders= or Signature="));
    }
    match credential.split('/').collect::<Vec<_>>()[..] {
        [key, _date, region, _service, "aws4_request"] if !key.is_empty() && !region.is_empty() => {
            Ok(region.to_owned())
        }
        _ => Err(incomplete(
            "Credential is not <key>/<date>/<region>/<service>/aws4_request",
        )),
    }
}

/// Reads a request body as `T`; anything unreadable is SerializationException.
pub fn decode<T: DeserializeOwned>(format: Format, body: &[u8]) -> Result<T, AwsError> {
    // An empty body is an empty input, in either format.
    if body.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| AwsError::serialization(format!("body is not valid input: {e}")));
    }
    match format {
        Format::Json => serde_json::from_slice(body)
            .map_err(|e| AwsError::serialization(format!("body is not valid input: {e}"))),
        Format::Cbor => ciborium::from_reader(body)
            .map_err(|e| AwsError::serialization(format!("body is not valid CBOR input: {e}"))),
    }
}

/// Writes a reply body.
pub fn encode<T: Serialize>(format: Format, value: &T) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(value).unwrap_or_default(),
        Format::Cbor => {
            let mut out = Vec::new();
            // Writing to a Vec cannot fail for these plain types.
            let _ = ciborium::into_writer(value, &mut out);
            out
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    kind: &'a str,
    message: &'a str,
}

/// An AWS error as an HTTP reply: `__type` and `message` in the body,
/// `x-amzn-ErrorType` in the headers.
pub fn error_reply(format: Format, e: &AwsError) -> http::Response<Full<Bytes>> {
    let body = encode(
        format,
        &ErrorBody {
            kind: e.kind,
            message: &e.message,
        },
    );
    let mut resp = reply(format, e.status, body);
    if let Ok(v) = http::HeaderValue::from_str(e.kind) {
        resp.headers_mut().insert("x-amzn-ErrorType", v);
    }
    resp
}

fn reply(format: Format, status: StatusCode, body: Vec<u8>) -> http::Response<Full<Bytes>> {
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    let id = format!("{:032x}", rand::random::<u128>());
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        h.insert("x-amzn-RequestId", v);
    }
    resp
}

/// The AWS error a client gets for a failed routed call. An unusable or
/// still-building shard map, and a back end or metadata store out of
/// reach, are all UNAVAILABLE on the gRPC API; here they are
/// `ServiceUnavailable` (503), which the SDKs retry.
pub fn from_status(s: &Status, plane: Plane) -> AwsError {
    let msg = s.message().to_owned();
    match s.code() {
        Code::InvalidArgument => AwsError::invalid_argument(msg),
        Code::NotFound => AwsError::new("ResourceNotFoundException", StatusCode::BAD_REQUEST, msg),
        Code::AlreadyExists => {
            AwsError::new("ResourceInUseException", StatusCode::BAD_REQUEST, msg)
        }
        Code::ResourceExhausted => throttled(plane, msg),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            AwsError::new("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE, msg)
        }
        _ => AwsError::new("InternalFailure", StatusCode::INTERNAL_SERVER_ERROR, msg),
    }
}

/// Throttling, named as AWS names it on each plane: a data-plane call the
/// front-end has no worker slot for is ProvisionedThroughputExceeded, a
/// control-plane one LimitExceeded (both 400, both retried by the SDKs).
pub fn throttled(plane: Plane, message: String) -> AwsError {
    match plane {
        Plane::Data => AwsError::new(
            "ProvisionedThroughputExceededException",
            StatusCode::BAD_REQUEST,
            message,
        ),
        Plane::Control => AwsError::new("LimitExceededException", StatusCode::BAD_REQUEST, message),
    }
}

// ---- wire types -------------------------------------------------------

/// A blob: base64 in JSON, a byte string in CBOR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string or a byte string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Blob, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(Blob)
                    .map_err(|e| E::custom(format!("blob is not valid base64: {e}")))
            }
            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Blob, E> {
                Ok(Blob(b.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, b: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(b))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

/// A timestamp in milliseconds since the epoch: epoch seconds (possibly
/// fractional) in JSON, epoch milliseconds in CBOR. On input a number
/// above 10^11 is read as milliseconds whatever the format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timestamp(pub i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("epoch seconds")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                if !v.is_finite() {
                    return Err(E::custom("timestamp is not a finite number"));
                }
                Ok(Timestamp(if v.abs() > 1e11 {
                    v as i64
                } else {
                    (v * 1000.0) as i64
                }))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_f64(self.0 as f64 / 1000.0)
        } else {
            s.serialize_i64(self.0)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StreamRef {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
}

impl StreamRef {
    /// The stream named by `StreamName` or `StreamARN`.
    fn name(&self) -> Result<String, AwsError> {
        let name = match (&self.stream_name, &self.stream_arn) {
            (Some(n), _) => n.clone(),
            (None, Some(arn)) => arn
                .rsplit_once(":stream/")
                .filter(|(head, _)| head.starts_with("arn:aws:kinesis:"))
                .map(|(_, n)| n.to_owned())
                .ok_or_else(|| {
                    AwsError::validation(format!(
                        "Value '{arn}' at 'streamARN' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\\d{{12}}:stream/\\S+"
                    ))
                })?,
            (None, None) => {
                return Err(AwsError::validation(
                    "Either StreamName or StreamARN should be provided.",
                ));
            }
        };
        validate_stream_name(&name)?;
        Ok(name)
    }
}

fn validate_stream_name(name: &str) -> Result<(), AwsError> {
    if name.is_empty() || name.len() > 128 {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value '{name}' at 'streamName' failed to satisfy constraint: Member must have length between 1 and 128"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value '{name}' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
        )));
    }
    Ok(())
}

fn validate_range(field: &str, v: Option<i64>, lo: i64, hi: i64) -> Result<(), AwsError> {
    match v {
        Some(n) if n < lo || n > hi => Err(AwsError::validation(format!(
            "1 validation error detected: Value '{n}' at '{field}' failed to satisfy constraint: Member must have value between {lo} and {hi}"
        ))),
        _ => Ok(()),
    }
}

fn validate_partition_key(field: &str, key: Option<&str>) -> Result<String, AwsError> {
    match key {
        None => Err(AwsError::validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))),
        Some(k) if k.is_empty() || k.chars().count() > 256 => Err(AwsError::validation(format!(
            "1 validation error detected: Value '{k}' at '{field}' failed to satisfy constraint: Member must have length between 1 and 256"
        ))),
        Some(k) => Ok(k.to_owned()),
    }
}

fn validate_data(field: &str, data: Option<Blob>) -> Result<Vec<u8>, AwsError> {
    match data {
        None => Err(AwsError::validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))),
        Some(Blob(d)) if d.len() > cascade_core::keyspace::MAX_RECORD_BYTES => {
            Err(AwsError::validation(format!(
                "1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must have length less than or equal to {} (it is {} bytes)",
                cascade_core::keyspace::MAX_RECORD_BYTES,
                d.len()
            )))
        }
        Some(Blob(d)) => Ok(d),
    }
}

fn validate_hash_key(field: &str, key: Option<String>) -> Result<String, AwsError> {
    match key {
        None => Ok(String::new()),
        Some(k) if k.parse::<u128>().is_ok() && (k == "0" || !k.starts_with('0')) => Ok(k),
        Some(k) => Err(AwsError::validation(format!(
            "1 validation error detected: Value '{k}' at '{field}' failed to satisfy constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{{0,38}}) (at most 2^128-1)"
        ))),
    }
}

fn validate_sequence_number(s: &str) -> Result<(), AwsError> {
    let ok = s == "0"
        || (!s.is_empty()
            && s.len() <= 129
            && !s.starts_with('0')
            && s.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(AwsError::validation(format!(
            "1 validation error detected: Value '{s}' at 'startingSequenceNumber' failed to satisfy constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{{0,128}})"
        )))
    }
}

/// A shard iterator as handed to AWS clients: the front-end's own iterator
/// and the wall time it was handed out, so it can expire as AWS's do.
pub fn wrap_iterator(inner: &str, issued_ms: i64) -> String {
    format!("{inner}.{issued_ms}")
}

/// The front-end iterator inside an AWS iterator, or the AWS error for a
/// malformed (InvalidArgument) or expired (ExpiredIterator) one.
pub fn unwrap_iterator(it: &str, now_ms: i64) -> Result<String, AwsError> {
    if it.is_empty() || it.len() > 512 {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value at 'shardIterator' failed to satisfy constraint: Member must have length between 1 and 512 (it has {})",
            it.len()
        )));
    }
    let malformed = || {
        AwsError::invalid_argument(
            "Invalid ShardIterator: malformed; get one from GetShardIterator or a previous GetRecords",
        )
    };
    let (inner, issued) = it.rsplit_once('.').ok_or_else(malformed)?;
    let issued: i64 = issued.parse().map_err(|_| malformed())?;
    cascade_core::keyspace::ShardIterator::decode(inner).map_err(|_| malformed())?;
    let ttl = ITERATOR_TTL.as_millis() as i64;
    if now_ms - issued > ttl {
        return Err(AwsError::new(
            "ExpiredIteratorException",
            StatusCode::BAD_REQUEST,
            format!(
                "Iterator expired. The iterator was created at time {issued} while right now it is {now_ms} which is further in the future than the tolerated delay of {ttl} milliseconds."
            ),
        ));
    }
    Ok(inner.to_owned())
}

fn arn(region: &str, stream: &str) -> String {
    format!("arn:aws:kinesis:{region}:{ACCOUNT}:stream/{stream}")
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HashKeyRange {
    starting_hash_key: String,
    ending_hash_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SequenceNumberRange {
    starting_sequence_number: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ShardOut {
    shard_id: String,
    hash_key_range: HashKeyRange,
    sequence_number_range: SequenceNumberRange,
}

fn shard_out(s: pb::Shard) -> ShardOut {
    ShardOut {
        shard_id: s.shard_id,
        hash_key_range: HashKeyRange {
            starting_hash_key: s.starting_hash_key,
            ending_hash_key: s.ending_hash_key,
        },
        sequence_number_range: SequenceNumberRange {
            starting_sequence_number: "0".to_owned(),
        },
    }
}

fn stream_mode() -> serde_json::Value {
    serde_json::json!({ "StreamMode": "PROVISIONED" })
}

// ---- serving ------------------------------------------------------------

/// Serves one HTTP/1.1 connection of AWS API calls until the client closes
/// it or `shutdown` is cancelled.
pub async fn serve_connection(
    stream: tokio::net::TcpStream,
    api: Arc<FrontendApi>,
    shutdown: CancellationToken,
) {
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let api = api.clone();
        async move { Ok::<_, std::convert::Infallible>(handle_http(&api, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(error = %e, "AWS API connection ended");
        },
        _ = shutdown.cancelled() => {}
    }
}

async fn handle_http(
    api: &FrontendApi,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let format = Format::of(header(&parts.headers, http::header::CONTENT_TYPE.as_str()));
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_reply(
                format,
                &AwsError::serialization(format!(
                    "could not read the request body (at most {MAX_BODY} bytes): {e}"
                )),
            );
        }
    };
    if parts.method != http::Method::POST {
        return error_reply(
            format,
            &AwsError::new(
                "UnknownOperationException",
                StatusCode::BAD_REQUEST,
                format!(
                    "{} is not served; send POST / with X-Amz-Target: {TARGET_PREFIX}<Operation>",
                    parts.method
                ),
            ),
        );
    }
    match handle(api, &parts.headers, format, &body).await {
        Ok(out) => reply(format, StatusCode::OK, out),
        Err(e) => {
            tracing::debug!(kind = e.kind, message = %e.message, "AWS API error");
            error_reply(format, &e)
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// One AWS API call: checks, decodes, takes a worker slot, runs the routed
/// work and encodes the reply body.
async fn handle(
    api: &FrontendApi,
    headers: &HeaderMap,
    format: Format,
    body: &[u8],
) -> Result<Vec<u8>, AwsError> {
    let region = check_auth(header(headers, "authorization"))?;
    let op = Op::from_target(header(headers, "x-amz-target"))?;
    let call = Call {
        api,
        format,
        region,
        plane: op.plane(),
    };
    match op {
        Op::CreateStream => call.create_stream(decode(format, body)?).await,
        Op::DeleteStream => call.delete_stream(decode(format, body)?).await,
        Op::DescribeStream => call.describe_stream(decode(format, body)?).await,
        Op::DescribeStreamSummary => call.describe_summary(decode(format, body)?).await,
        Op::ListStreams => call.list_streams(decode(format, body)?).await,
        Op::ListShards => call.list_shards(decode(format, body)?).await,
        Op::PutRecord => call.put_record(decode(format, body)?).await,
        Op::PutRecords => call.put_records(decode(format, body)?).await,
        Op::GetShardIterator => call.get_shard_iterator(decode(format, body)?).await,
        Op::GetRecords => call.get_records(decode(format, body)?).await,
    }
}

struct Call<'a> {
    api: &'a FrontendApi,
    format: Format,
    region: String,
    plane: Plane,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateStreamIn {
    stream_name: Option<String>,
    shard_count: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeStreamIn {
    #[serde(flatten)]
    stream: StreamRef,
    limit: Option<i64>,
    exclusive_start_shard_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListStreamsIn {
    limit: Option<i64>,
    exclusive_start_stream_name: Option<String>,
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListShardsIn {
    #[serde(flatten)]
    stream: StreamRef,
    next_token: Option<String>,
    exclusive_start_shard_id: Option<String>,
    max_results: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordIn {
    #[serde(flatten)]
    stream: StreamRef,
    data: Option<Blob>,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordsEntryIn {
    data: Option<Blob>,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordsIn {
    #[serde(flatten)]
    stream: StreamRef,
    records: Option<Vec<PutRecordsEntryIn>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetShardIteratorIn {
    #[serde(flatten)]
    stream: StreamRef,
    shard_id: Option<String>,
    shard_iterator_type: Option<String>,
    starting_sequence_number: Option<String>,
    timestamp: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetRecordsIn {
    shard_iterator: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RecordOut {
    sequence_number: String,
    approximate_arrival_timestamp: Timestamp,
    data: Blob,
    partition_key: String,
}

/// Pagination of a sorted list: the items after `after`, at most `limit`,
/// and whether more follow.
fn page<T: Clone>(
    items: &[T],
    key: impl Fn(&T) -> &str,
    after: Option<&str>,
    limit: usize,
) -> (Vec<T>, bool) {
    let start = after.map_or(0, |a| items.iter().take_while(|x| key(x) <= a).count());
    let rest = &items[start.min(items.len())..];
    let taken: Vec<T> = rest.iter().take(limit).cloned().collect();
    let more = rest.len() > taken.len();
    (taken, more)
}

fn required<T>(field: &str, v: Option<T>) -> Result<T, AwsError> {
    v.ok_or_else(|| {
        AwsError::validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

impl Call<'_> {
    /// A worker slot, or the throttling error of this call's plane.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AwsError> {
        self.api
            .slot()
            .await
            .map_err(|e| throttled(self.plane, e.to_string()))
    }

    fn status(&self, s: Status) -> AwsError {
        from_status(&s, self.plane)
    }

    fn out<T: Serialize>(&self, v: &T) -> Result<Vec<u8>, AwsError> {
        Ok(encode(self.format, v))
    }

    async fn shards(&self, stream: &str) -> Result<Vec<pb::Shard>, AwsError> {
        let mut shards = self
            .api
            .list_shards_held(pb::ListShardsRequest {
                stream_name: stream.to_owned(),
            })
            .await
            .map_err(|s| self.status(s))?
            .shards;
        shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(shards)
    }

    async fn create_stream(&self, r: CreateStreamIn) -> Result<Vec<u8>, AwsError> {
        let name = required("streamName", r.stream_name)?;
        validate_stream_name(&name)?;
        // Without ShardCount (on-demand mode) AWS starts a stream with 4 shards.
        let count = r.shard_count.unwrap_or(4);
        validate_range("shardCount", Some(count), 1, i64::from(u32::MAX))?;
        if count > MAX_SHARDS {
            return Err(AwsError::new(
                "LimitExceededException",
                StatusCode::BAD_REQUEST,
                format!(
                    "ShardCount {count} is above this fleet's limit of {MAX_SHARDS} shards per stream"
                ),
            ));
        }
        let _slot = self.slot().await?;
        self.api
            .create_stream_held(pb::CreateStreamRequest {
                stream_name: name,
                shard_count: count as u32,
            })
            .await
            .map_err(|s| self.status(s))?;
        self.out(&serde_json::json!({}))
    }

    async fn delete_stream(&self, r: StreamRef) -> Result<Vec<u8>, AwsError> {
        let name = r.name()?;
        let _slot = self.slot().await?;
        self.api
            .delete_stream_held(pb::DeleteStreamRequest { stream_name: name })
            .await
            .map_err(|s| self.status(s))?;
        self.out(&serde_json::json!({}))
    }

    async fn describe_stream(&self, r: DescribeStreamIn) -> Result<Vec<u8>, AwsError> {
        let name = r.stream.name()?;
        validate_range("limit", r.limit, 1, 10_000)?;
        let _slot = self.slot().await?;
        let shards = self.shards(&name).await?;
        let limit = r.limit.unwrap_or(100) as usize;
        let (shards, more) = page(
            &shards,
            |s| s.shard_id.as_str(),
            r.exclusive_start_shard_id.as_deref(),
            limit,
        );
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Desc {
            stream_name: String,
            #[serde(rename = "StreamARN")]
            stream_arn: String,
            stream_status: &'static str,
            stream_mode_details: serde_json::Value,
            shards: Vec<ShardOut>,
            has_more_shards: bool,
            retention_period_hours: u32,
            enhanced_monitoring: serde_json::Value,
            encryption_type: &'static str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Out {
            stream_description: Desc,
        }
        self.out(&Out {
            stream_description: Desc {
                stream_arn: arn(&self.region, &name),
                stream_name: name,
                stream_status: "ACTIVE",
                stream_mode_details: stream_mode(),
                shards: shards.into_iter().map(shard_out).collect(),
                has_more_shards: more,
                retention_period_hours: 24,
                enhanced_monitoring: serde_json::json!([{ "ShardLevelMetrics": [] }]),
                encryption_type: "NONE",
            },
        })
    }

    async fn describe_summary(&self, r: StreamRef) -> Result<Vec<u8>, AwsError> {
        let name = r.name()?;
        let _slot = self.slot().await?;
        let shards = self.shards(&name).await?;
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Summary {
            stream_name: String,
            #[serde(rename = "StreamARN")]
            stream_arn: String,
            stream_status: &'static str,
            stream_mode_details: serde_json::Value,
            retention_period_hours: u32,
            enhanced_monitoring: serde_json::Value,
            encryption_type: &'static str,
            open_shard_count: usize,
            consumer_count: u32,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Out {
            stream_description_summary: Summary,
        }
        self.out(&Out {
            stream_description_summary: Summary {
                stream_arn: arn(&self.region, &name),
                stream_name: name,
                stream_status: "ACTIVE",
                stream_mode_details: stream_mode(),
                retention_period_hours: 24,
                enhanced_monitoring: serde_json::json!([{ "ShardLevelMetrics": [] }]),
                encryption_type: "NONE",
                open_shard_count: shards.len(),
                consumer_count: 0,
            },
        })
    }

    async fn list_streams(&self, r: ListStreamsIn) -> Result<Vec<u8>, AwsError> {
        validate_range("limit", r.limit, 1, 10_000)?;
        let after = match (&r.next_token, &r.exclusive_start_stream_name) {
            (Some(t), _) => Some(decode_token(t)?),
            (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        };
        let _slot = self.slot().await?;
        let names = self
            .api
            .stream_names_held()
            .await
            .map_err(|s| self.status(s))?;
        let (names, more) = page(
            &names,
            String::as_str,
            after.as_deref(),
            r.limit.unwrap_or(100) as usize,
        );
        let summaries: Vec<serde_json::Value> = names
            .iter()
            .map(|n| {
                serde_json::json!({
                    "StreamName": n,
                    "StreamARN": arn(&self.region, n),
                    "StreamStatus": "ACTIVE",
                    "StreamModeDetails": stream_mode(),
                })
            })
            .collect();
        let mut out = serde_json::json!({
            "StreamNames": names,
            "HasMoreStreams": more,
            "StreamSummaries": summaries,
        });
        if let (true, Some(last)) = (more, names.last()) {
            out["NextToken"] = serde_json::Value::String(encode_token(last));
        }
        self.out(&out)
    }

    async fn list_shards(&self, r: ListShardsIn) -> Result<Vec<u8>, AwsError> {
        validate_range("maxResults", r.max_results, 1, 10_000)?;
        let (name, after) = match &r.next_token {
            Some(t) => {
                if r.stream.stream_name.is_some() || r.stream.stream_arn.is_some() {
                    return Err(AwsError::invalid_argument(
                        "NextToken and StreamName cannot be provided together.",
                    ));
                }
                let token = decode_token(t)?;
                let (name, after) = token.split_once('\n').ok_or_else(|| {
                    AwsError::invalid_argument(
                        "NextToken: malformed; use the one ListShards returned",
                    )
                })?;
                (name.to_owned(), Some(after.to_owned()))
            }
            None => (r.stream.name()?, r.exclusive_start_shard_id.clone()),
        };
        let _slot = self.slot().await?;
        let shards = self.shards(&name).await?;
        let (shards, more) = page(
            &shards,
            |s| s.shard_id.as_str(),
            after.as_deref(),
            r.max_results.unwrap_or(1000) as usize,
        );
        let token = match (more, shards.last()) {
            (true, Some(last)) => Some(encode_token(&format!("{name}\n{}", last.shard_id))),
            _ => None,
        };
        let mut out = serde_json::json!({
            "Shards": shards.into_iter().map(shard_out).collect::<Vec<_>>(),
        });
        if let Some(t) = token {
            out["NextToken"] = serde_json::Value::String(t);
        }
        self.out(&out)
    }

    async fn put_record(&self, r: PutRecordIn) -> Result<Vec<u8>, AwsError> {
        let name = r.stream.name()?;
        let partition_key = validate_partition_key("partitionKey", r.partition_key.as_deref())?;
        let data = validate_data("data", r.data)?;
        let explicit_hash_key = validate_hash_key("explicitHashKey", r.explicit_hash_key)?;
        let _slot = self.slot().await?;
        let resp = self
            .api
            .put_record_held(pb::PutRecordRequest {
                stream_name: name,
                partition_key,
                data,
                explicit_hash_key,
            })
            .await
            .map_err(|s| self.status(s))?;
        self.out(&serde_json::json!({
            "ShardId": resp.shard_id,
            "SequenceNumber": resp.sequence_number,
            "EncryptionType": "NONE",
        }))
    }

    async fn put_records(&self, r: PutRecordsIn) -> Result<Vec<u8>, AwsError> {
        let name = r.stream.name()?;
        let entries = required("records", r.records)?;
        if entries.is_empty() || entries.len() > cascade_core::keyspace::MAX_RECORDS_PER_PUT {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value at 'records' failed to satisfy constraint: Member must have length between 1 and {} (it has {})",
                cascade_core::keyspace::MAX_RECORDS_PER_PUT,
                entries.len()
            )));
        }
        // Every entry is checked before any is written: a bad one fails the
        // whole call and changes nothing, as AWS does.
        let mut records = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            records.push(pb::PutRecordsEntry {
                partition_key: validate_partition_key(
                    &format!("records.{}.member.partitionKey", i + 1),
                    e.partition_key.as_deref(),
                )?,
                data: validate_data(&format!("records.{}.member.data", i + 1), e.data)?,
                explicit_hash_key: validate_hash_key(
                    &format!("records.{}.member.explicitHashKey", i + 1),
                    e.explicit_hash_key,
                )?,
            });
        }
        let _slot = self.slot().await?;
        let resp = self
            .api
            .put_records_held(pb::PutRecordsRequest {
                stream_name: name,
                records,
            })
            .await
            .map_err(|s| self.status(s))?;
        let records: Vec<serde_json::Value> = resp
            .records
            .into_iter()
            .map(|x| {
                if x.error_code.is_empty() {
                    serde_json::json!({ "SequenceNumber": x.sequence_number, "ShardId": x.shard_id })
                } else {
                    serde_json::json!({
                        "ErrorCode": record_error_code(&x.error_code),
                        "ErrorMessage": x.error_message,
                    })
                }
            })
            .collect();
        self.out(&serde_json::json!({
            "FailedRecordCount": resp.failed_record_count,
            "Records": records,
            "EncryptionType": "NONE",
        }))
    }

    async fn get_shard_iterator(&self, r: GetShardIteratorIn) -> Result<Vec<u8>, AwsError> {
        let name = r.stream.name()?;
        let shard_id = required("shardId", r.shard_id)?;
        let kind = required("shardIteratorType", r.shard_iterator_type)?;
        let kind = match kind.as_str() {
            "TRIM_HORIZON" => pb::ShardIteratorType::TrimHorizon,
            "LATEST" => pb::ShardIteratorType::Latest,
            "AT_SEQUENCE_NUMBER" => pb::ShardIteratorType::AtSequenceNumber,
            "AFTER_SEQUENCE_NUMBER" => pb::ShardIteratorType::AfterSequenceNumber,
            "AT_TIMESTAMP" => pb::ShardIteratorType::AtTimestamp,
            other => {
                return Err(AwsError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, AT_SEQUENCE_NUMBER, AT_TIMESTAMP, TRIM_HORIZON, LATEST]"
                )));
            }
        };
        let mut seq = String::new();
        let mut timestamp_ms = 0;
        match kind {
            pb::ShardIteratorType::AtSequenceNumber
            | pb::ShardIteratorType::AfterSequenceNumber => {
                let s = r.starting_sequence_number.ok_or_else(|| {
                    AwsError::invalid_argument(format!(
                        "StartingSequenceNumber is required for ShardIteratorType {}",
                        kind.as_str_name()
                    ))
                })?;
                validate_sequence_number(&s)?;
                seq = s;
            }
            pb::ShardIteratorType::AtTimestamp => {
                timestamp_ms = r
                    .timestamp
                    .ok_or_else(|| {
                        AwsError::invalid_argument(
                            "Timestamp is required for ShardIteratorType AT_TIMESTAMP",
                        )
                    })?
                    .0;
            }
            _ => {}
        }
        let _slot = self.slot().await?;
        let resp = self
            .api
            .get_shard_iterator_held(pb::GetShardIteratorRequest {
                stream_name: name,
                shard_id,
                shard_iterator_type: kind as i32,
                starting_sequence_number: seq,
                timestamp_ms,
            })
            .await
            .map_err(|s| self.status(s))?;
        self.out(&serde_json::json!({
            "ShardIterator": wrap_iterator(&resp.shard_iterator, cascade_core::now_ms()),
        }))
    }

    async fn get_records(&self, r: GetRecordsIn) -> Result<Vec<u8>, AwsError> {
        let it = required("shardIterator", r.shard_iterator)?;
        let inner = unwrap_iterator(&it, cascade_core::now_ms())?;
        validate_range("limit", r.limit, 1, 10_000)?;
        let _slot = self.slot().await?;
        let resp = self
            .api
            .get_records_held(pb::GetRecordsRequest {
                shard_iterator: inner,
                limit: r.limit.unwrap_or(0) as u32,
            })
            .await
            .map_err(|s| self.status(s))?;
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Out {
            records: Vec<RecordOut>,
            next_shard_iterator: String,
            millis_behind_latest: i64,
        }
        self.out(&Out {
            records: resp
                .records
                .into_iter()
                .map(|x| RecordOut {
                    sequence_number: x.sequence_number,
                    approximate_arrival_timestamp: Timestamp(x.approximate_arrival_ms),
                    data: Blob(x.data),
                    partition_key: x.partition_key,
                })
                .collect(),
            next_shard_iterator: wrap_iterator(&resp.next_shard_iterator, cascade_core::now_ms()),
            millis_behind_latest: resp.millis_behind_latest,
        })
    }
}

/// The per-record `ErrorCode` of a PutRecords entry the back end refused:
/// AWS knows only these two.
pub fn record_error_code(grpc_code: &str) -> &'static str {
    match grpc_code {
        "ResourceExhausted" | "Unavailable" => "ProvisionedThroughputExceededException",
        _ => "InternalFailure",
    }
}

fn encode_token(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn decode_token(t: &str) -> Result<String, AwsError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| AwsError::invalid_argument("NextToken: malformed; use the one returned"))
}

/// Whether a connection starting with these bytes is HTTP/1 (the AWS API)
/// rather than HTTP/2 (gRPC, whose preface starts `PRI `).
pub fn is_http1(first: &[u8]) -> bool {
    !first.starts_with(b"PRI") && first.first().is_some_and(u8::is_ascii_uppercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKID/20201125/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";

    #[test]
    fn auth_needs_the_sigv4_shape_and_yields_the_region() {
        assert_eq!(
            check_auth(Some(AUTH)).expect("must be accepted"),
            "us-east-1"
        );
        assert_eq!(
            check_auth(None).expect_err("must be refused").kind,
            "MissingAuthenticationTokenException"
        );
        assert_eq!(
            check_auth(None).expect_err("must be refused").status,
            StatusCode::FORBIDDEN
        );
        for bad in [
            "Basic dXNlcjpwYXNz",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=abc",
            "AWS4-HMAC-SHA256 Credential=AKID/20201125/us-east-1/kinesis/aws4_request",
            "AWS4-HMAC-SHA256 Credential=AKID, SignedHeaders=host, Signature=abc",
        ] {
            assert_eq!(
                check_auth(Some(bad)).expect_err("must be refused").kind,
                "IncompleteSignatureException",
                "{bad}"
            );
        }
    }

    #[test]
    fn targets_name_operations_and_nothing_else() {
        assert_eq!(
            Op::from_target(Some("Kinesis_20131202.PutRecords")).expect("must be accepted"),
            Op::PutRecords
        );
        assert_eq!(Op::PutRecords.plane(), Plane::Data);
        assert_eq!(Op::ListStreams.plane(), Plane::Control);
        for bad in [
            None,
            Some("Kinesis_20131202.MergeShards"),
            Some("DynamoDB_20120810.PutItem"),
            Some("PutRecord"),
        ] {
            let e = Op::from_target(bad).expect_err("must be refused");
            assert_eq!(e.kind, "UnknownOperationException", "{bad:?}");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn json_blobs_are_base64_and_bad_bodies_are_serialization_errors() {
        let r: PutRecordIn = decode(
            Format::Json,
            br#"{"StreamName":"s","Data":"aGVsbG8=","PartitionKey":"k"}"#,
        )
        .expect("must be accepted");
        assert_eq!(r.data, Some(Blob(b"hello".to_vec())));
        assert_eq!(r.stream.name().expect("must be accepted"), "s");
        for bad in [
            &b"{not json"[..],
            br#"{"Data":"!!!"}"#,
            br#"{"StreamName":5}"#,
        ] {
            let e = decode::<PutRecordIn>(Format::Json, bad).expect_err("must be refused");
            assert_eq!(e.kind, "SerializationException");
        }
        for format in [Format::Json, Format::Cbor] {
            let empty: ListStreamsIn =
                decode(format, b"").expect("an empty body is an empty input");
            assert_eq!(empty.limit, None);
        }
        assert_eq!(
            decode::<PutRecordIn>(Format::Cbor, b"\xff\x00")
                .expect_err("must be refused")
                .kind,
            "SerializationException"
        );
    }

    #[test]
    fn cbor_blobs_are_bytes_and_timestamps_milliseconds() {
        let mut body = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(vec![
                ("StreamName".into(), "s".into()),
                ("Data".into(), ciborium::Value::Bytes(vec![0, 1, 255])),
                ("PartitionKey".into(), "k".into()),
            ]),
            &mut body,
        )
        .expect("must be accepted");
        let r: PutRecordIn = decode(Format::Cbor, &body).expect("must be accepted");
        assert_eq!(r.data, Some(Blob(vec![0, 1, 255])));
        let out = encode(
            Format::Cbor,
            &RecordOut {
                sequence_number: "7".into(),
                approximate_arrival_timestamp: Timestamp(1_606_300_000_123),
                data: Blob(vec![9]),
                partition_key: "k".into(),
            },
        );
        let v: ciborium::Value = ciborium::from_reader(&out[..]).expect("must be accepted");
        let map = v.as_map().expect("must be accepted");
        let get = |k: &str| {
            map.iter()
                .find(|(a, _)| a.as_text() == Some(k))
                .map(|(_, b)| b.clone())
        };
        assert_eq!(get("Data"), Some(ciborium::Value::Bytes(vec![9])));
        assert_eq!(
            get("ApproximateArrivalTimestamp"),
            Some(ciborium::Value::Integer(1_606_300_000_123_i64.into()))
        );
        let json: serde_json::Value = serde_json::from_slice(&encode(
            Format::Json,
            &RecordOut {
                sequence_number: "7".into(),
                approximate_arrival_timestamp: Timestamp(1_606_300_000_500),
                data: Blob(b"hi".to_vec()),
                partition_key: "k".into(),
            },
        ))
        .expect("must be accepted");
        assert_eq!(json["Data"], "aGk=");
        assert_eq!(json["ApproximateArrivalTimestamp"], 1_606_300_000.5);
    }

    #[test]
    fn timestamps_read_as_seconds_or_milliseconds() {
        #[derive(Deserialize)]
        struct T {
            t: Timestamp,
        }
        let s: T = serde_json::from_str(r#"{"t":1606300000.25}"#).expect("must be accepted");
        assert_eq!(s.t, Timestamp(1_606_300_000_250));
        let ms: T = serde_json::from_str(r#"{"t":1606300000250}"#).expect("must be accepted");
        assert_eq!(ms.t, Timestamp(1_606_300_000_250));
    }

    #[test]
    fn errors_have_the_aws_shape() {
        let e = AwsError::validation("too big");
        let resp = error_reply(Format::Json, &e);
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()["x-amzn-ErrorType"], "ValidationException");
        assert_eq!(resp.headers()["content-type"], JSON);
        assert!(resp.headers().contains_key("x-amzn-RequestId"));
        let body = encode(
            Format::Json,
            &ErrorBody {
                kind: e.kind,
                message: &e.message,
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("must be accepted");
        assert_eq!(v["__type"], "ValidationException");
        assert_eq!(v["message"], "too big");
    }

    #[test]
    fn routed_failures_map_to_what_aws_clients_get() {
        let cases = [
            (Code::Unavailable, Plane::Data, "ServiceUnavailable", 503),
            (Code::Unavailable, Plane::Control, "ServiceUnavailable", 503),
            (
                Code::NotFound,
                Plane::Data,
                "ResourceNotFoundException",
                400,
            ),
            (
                Code::AlreadyExists,
                Plane::Control,
                "ResourceInUseException",
                400,
            ),
            (
                Code::InvalidArgument,
                Plane::Data,
                "InvalidArgumentException",
                400,
            ),
            (
                Code::ResourceExhausted,
                Plane::Data,
                "ProvisionedThroughputExceededException",
                400,
            ),
            (
                Code::ResourceExhausted,
                Plane::Control,
                "LimitExceededException",
                400,
            ),
            (Code::Internal, Plane::Data, "InternalFailure", 500),
        ];
        for (code, plane, kind, status) in cases {
            let e = from_status(&Status::new(code, "why"), plane);
            assert_eq!((e.kind, e.status.as_u16()), (kind, status), "{code:?}");
            assert_eq!(e.message, "why");
        }
        assert_eq!(
            throttled(Plane::Data, "busy".into()).kind,
            "ProvisionedThroughputExceededException"
        );
        assert_eq!(
            record_error_code("ResourceExhausted"),
            "ProvisionedThroughputExceededException"
        );
        assert_eq!(record_error_code("Internal"), "InternalFailure");
    }

    #[test]
    fn records_are_validated_as_aws_does() {
        assert!(validate_partition_key("partitionKey", Some("k")).is_ok());
        for bad in [None, Some(""), Some(&*"x".repeat(257))] {
            assert_eq!(
                validate_partition_key("partitionKey", bad)
                    .expect_err("must be refused")
                    .kind,
                "ValidationException"
            );
        }
        let big = Blob(vec![0; cascade_core::keyspace::MAX_RECORD_BYTES + 1]);
        assert_eq!(
            validate_data("data", Some(big))
                .expect_err("must be refused")
                .kind,
            "ValidationException"
        );
        assert!(validate_data("data", Some(Blob(vec![0; 1024 * 1024]))).is_ok());
        assert!(
            validate_hash_key("h", Some("340282366920938463463374607431768211455".into())).is_ok()
        );
        for bad in ["340282366920938463463374607431768211456", "01", "-1", "x"] {
            assert!(validate_hash_key("h", Some(bad.into())).is_err(), "{bad}");
        }
        assert!(validate_sequence_number("0").is_ok());
        assert!(
            validate_sequence_number("49590338271490256608559692538361571095921575989136588898")
                .is_ok()
        );
        for bad in ["", "01", "abc", "-3"] {
            assert!(validate_sequence_number(bad).is_err(), "{bad}");
        }
        assert_eq!(
            StreamRef::default()
                .name()
                .expect_err("must be refused")
                .kind,
            "ValidationException"
        );
        let by_arn = StreamRef {
            stream_name: None,
            stream_arn: Some("arn:aws:kinesis:eu-west-1:000000000000:stream/orders".into()),
        };
        assert_eq!(by_arn.name().expect("must be accepted"), "orders");
        let bad_name = StreamRef {
            stream_name: Some("no spaces".into()),
            stream_arn: None,
        };
        assert_eq!(
            bad_name.name().expect_err("must be refused").kind,
            "ValidationException"
        );
    }

    #[test]
    fn iterators_expire_after_five_minutes_and_garbage_is_invalid() {
        let inner = cascade_core::keyspace::ShardIterator {
            stream_name: "s".into(),
            shard_id: "shardId-000000000000".into(),
            next_seq: 3,
        }
        .encode();
        let it = wrap_iterator(&inner, 1_000_000);
        assert_eq!(
            unwrap_iterator(&it, 1_000_000 + 299_000).expect("must be accepted"),
            inner
        );
        assert_eq!(
            unwrap_iterator(&it, 1_000_000 + 301_000)
                .expect_err("must be refused")
                .kind,
            "ExpiredIteratorException"
        );
        for bad in ["garbage", "abc.123", &format!("{inner}.x")] {
            assert_eq!(
                unwrap_iterator(bad, 1_000_000)
                    .expect_err("must be refused")
                    .kind,
                "InvalidArgumentException",
                "{bad}"
            );
        }
        assert_eq!(
            unwrap_iterator("", 0).expect_err("must be refused").kind,
            "ValidationException"
        );
        assert_eq!(
            unwrap_iterator(&"a".repeat(513), 0)
                .expect_err("must be refused")
                .kind,
            "ValidationException"
        );
    }

    #[test]
    fn pages_resume_after_the_last_key() {
        let items: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(
            page(&items, String::as_str, None, 2),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            page(&items, String::as_str, Some("b"), 2),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(page(&items, String::as_str, Some("z"), 2), (vec![], false));
    }

    #[test]
    fn http1_is_told_from_http2_and_peer_streams() {
        assert!(is_http1(b"POST / HTTP/1.1"));
        assert!(is_http1(b"GET"));
        assert!(!is_http1(b"PRI * HTTP/2.0"));
        assert!(!is_http1(b"\x00\x01"));
    }
}
