//! Generated hostile requests against every RPC of every service of a real
//! fleet: random protobuf fields (any field number, any wire type, empty and
//! huge strings, extreme varints, NaN and infinite doubles, unknown enum
//! values) sent as raw bytes on each method's path. Every answer must be a
//! success or a deliberate refusal; a handler that panics shows as
//! `UNKNOWN`/`INTERNAL` (other than a body that does not decode), and a
//! service that crashes or hangs fails the health and liveness checks after
//! the barrage.
//!
//! A call that times out is allowed (a slow answer is not a wrong one), but
//! more than a few mean a service stopped answering, and fail the test.
//!
//! Left out: the back end's `Membership` (any caller may register a member,
//! and a bogus member is a legitimate way to change the fleet, not a bug),
//! the names of the streams the services themselves write to (deleting
//! Cognito's access-log stream is the incident's own way to block sign-ins,
//! not a bug), and the supervisor's API (its mutations need the run's
//! token; see auth.rs).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use cascade_tests::Fleet;
use cascade_tests::status::{all_serving, pretty};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// Sends and receives message bodies as raw bytes.
#[derive(Debug, Clone, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// (service in `status`, gRPC path) of every method under test.
const METHODS: &[(&str, &str)] = &[
    ("kinesis", "/cascade.kinesis.v1.Kinesis/CreateStream"),
    ("kinesis", "/cascade.kinesis.v1.Kinesis/PutRecord"),
    ("kinesis", "/cascade.kinesis.v1.Kinesis/PutRecords"),
    ("kinesis", "/cascade.kinesis.v1.Kinesis/GetShardIterator"),
    ("kinesis", "/cascade.kinesis.v1.Kinesis/GetRecords"),
    ("kinesis", "/cascade.kinesis.v1.Kinesis/ListShards"),
    ("kinesis", "/cascade.kinesis.v1.Kinesis/DeleteStream"),
    (
        "kinesis-backend",
        "/cascade.kinesis.v1.Metadata/DescribeStreams",
    ),
    ("cognito", "/cascade.cognito.v1.Cognito/SignUp"),
    ("cognito", "/cascade.cognito.v1.Cognito/SignIn"),
    ("cognito", "/cascade.cognito.v1.Cognito/ValidateToken"),
    ("cognito", "/cascade.cognito.v1.Cognito/GetCredentials"),
    (
        "cloudwatch",
        "/cascade.cloudwatch.v1.CloudWatch/PutMetricData",
    ),
    (
        "cloudwatch",
        "/cascade.cloudwatch.v1.CloudWatch/GetMetricData",
    ),
    (
        "cloudwatch",
        "/cascade.cloudwatch.v1.CloudWatch/PutMetricAlarm",
    ),
    (
        "cloudwatch",
        "/cascade.cloudwatch.v1.CloudWatch/DescribeAlarms",
    ),
    (
        "eventbridge",
        "/cascade.eventbridge.v1.EventBridge/PutEvents",
    ),
    ("eventbridge", "/cascade.eventbridge.v1.EventBridge/PutRule"),
    (
        "eventbridge",
        "/cascade.eventbridge.v1.EventBridge/ListRules",
    ),
    ("lambda", "/cascade.lambda.v1.Lambda/Invoke"),
    ("ecs", "/cascade.ecs.v1.Ecs/RunTask"),
    ("ecs", "/cascade.ecs.v1.Ecs/StopTask"),
    ("ecs", "/cascade.ecs.v1.Ecs/UpdateService"),
    ("ecs", "/cascade.ecs.v1.Ecs/DescribeTasks"),
    ("ecs", "/cascade.ecs.v1.Ecs/DescribeServices"),
    ("ecs", "/cascade.eventbridge.v1.EventTarget/Deliver"),
    ("cognito", "/cascade.control.v1.Control/Configure"),
    ("cognito", "/cascade.control.v1.Control/InjectFault"),
    ("cognito", "/cascade.control.v1.Control/GetStatus"),
];

/// One protobuf field with a hostile value.
#[derive(Debug, Clone)]
enum Field {
    Varint(u32, u64),
    Bytes(u32, Vec<u8>),
    Fixed64(u32, u64),
    Fixed32(u32, u32),
}

fn key(field: u32, wire: u32) -> Vec<u8> {
    let mut v = Vec::new();
    varint(u64::from(field << 3 | wire), &mut v);
    v
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn encode(fields: &[Field]) -> Bytes {
    let mut out = Vec::new();
    for f in fields {
        match f {
            Field::Varint(n, v) => {
                out.extend(key(*n, 0));
                varint(*v, &mut out);
            }
            Field::Bytes(n, b) => {
                out.extend(key(*n, 2));
                varint(b.len() as u64, &mut out);
                out.extend(b);
            }
            Field::Fixed64(n, v) => {
                out.extend(key(*n, 1));
                out.extend(v.to_le_bytes());
            }
            Field::Fixed32(n, v) => {
                out.extend(key(*n, 5));
                out.extend(v.to_le_bytes());
            }
        }
    }
    Bytes::from(out)
}

fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        Just(b"kinesis-frontend[0..4294967295]".to_vec()),
        Just(b"shardId-999999999999".to_vec()),
        Just(b"TRIM_HORIZON".to_vec()),
        Just(b"operator".to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
        // Over a megabyte: a record past Kinesis's 1 MiB limit.
        Just(vec![b'x'; 1_100_000]),
    ]
}

fn field() -> impl Strategy<Value = Field> {
    let n = 1u32..12;
    prop_oneof![
        (
            n.clone(),
            prop_oneof![
                Just(0u64),
                Just(u64::MAX),
                Just(u64::from(u32::MAX)),
                Just(i64::MIN as u64),
                any::<u64>(),
                0u64..10
            ]
        )
            .prop_map(|(n, v)| Field::Varint(n, v)),
        (n.clone(), value_bytes()).prop_map(|(n, b)| Field::Bytes(n, b)),
        (
            n.clone(),
            prop_oneof![
                Just(f64::NAN.to_bits()),
                Just(f64::INFINITY.to_bits()),
                Just(f64::NEG_INFINITY.to_bits()),
                Just((-1.0f64).to_bits()),
                Just(1e308f64.to_bits()),
                any::<u64>()
            ]
        )
            .prop_map(|(n, v)| Field::Fixed64(n, v)),
        (n, any::<u32>()).prop_map(|(n, v)| Field::Fixed32(n, v)),
    ]
}

fn call() -> impl Strategy<Value = (usize, Vec<Field>)> {
    (0..METHODS.len(), prop::collection::vec(field(), 0..6))
}

/// Calls that may time out (under CI load) before the test says a service
/// stopped answering.
const MAX_TIMEOUTS: u32 = 10;

fn acceptable(s: &tonic::Status) -> bool {
    use tonic::Code::*;
    match s.code() {
        Unknown => false,
        // A body that is not this method's message is refused by the codec.
        Internal => s.message().contains("decode"),
        _ => true,
    }
}

#[test]
fn generated_requests_to_every_service_are_answered_or_refused_and_nothing_breaks() {
    let fleet = Fleet::up(
        "hostile-rpc",
        &[
            "--frontends",
            "3",
            "--time-scale",
            "360",
            "--traffic-rate",
            "2",
        ],
    );
    let before = fleet.wait_status(
        "every service serving",
        Duration::from_secs(60),
        all_serving,
    );
    let addr = |svc: &str| -> String {
        before
            .services
            .iter()
            .find(|s| s.name == svc)
            .map(|s| s.addr.clone())
            .or_else(|| {
                (svc == "kinesis-backend").then(|| {
                    before
                        .services
                        .iter()
                        .find(|s| s.name == "kinesis")
                        .map(|s| s.addr.clone())
                })?
            })
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| panic!("no address for {svc}: {}", pretty(&before)))
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let channels: Vec<tonic::transport::Channel> = METHODS
        .iter()
        .map(|(svc, _)| {
            let a = if *svc == "kinesis" {
                before.frontends[0].addr.clone()
            } else {
                addr(svc)
            };
            cascade_core::clients::lazy_channel(&a, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{svc} {a}: {e}"))
        })
        .collect();
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let timeouts = std::cell::Cell::new(0u32);
    let answered = std::cell::RefCell::new(std::collections::BTreeMap::<String, usize>::new());
    let result = runner.run(&call(), |(m, fields)| {
        let (_, path) = METHODS[m];
        let body = encode(&fields);
        let mut grpc = tonic::client::Grpc::new(channels[m].clone());
        let r = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let mut req = tonic::Request::new(body);
                req.set_timeout(Duration::from_secs(3));
                grpc.unary(req, PathAndQuery::from_static(path), Raw).await
            })
            .await
        });
        let r = r.map_err(|_| TestCaseError::fail(format!("{path}: no answer within 10 s")))?;
        let outcome = match &r {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        if matches!(&r, Err(s) if matches!(s.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)) {
            let n = timeouts.get() + 1;
            timeouts.set(n);
            let shown: String = format!("{fields:?}").chars().take(300).collect();
            prop_assert!(
                n <= MAX_TIMEOUTS,
                "{n} calls timed out, the last {path} {shown}: a service stopped answering"
            );
        }
        *answered
            .borrow_mut()
            .entry(format!("{path} {outcome}"))
            .or_default() += 1;
        if let Err(s) = &r {
            prop_assert!(
                acceptable(s),
                "{path} {fields:?}: {:?} {}",
                s.code(),
                s.message()
            );
        }
        Ok(())
    });
    let summary: Vec<String> = answered
        .borrow()
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if let Err(e) = result {
        panic!("{e}\nanswers so far:\n{}", summary.join("\n"));
    }
    eprintln!("{} generated calls:\n{}", cases, summary.join("\n"));
    // Still alive, every process the same, every service serving again.
    let after = fleet.wait_status(
        "every service serving after the barrage",
        Duration::from_secs(60),
        all_serving,
    );
    for (b, a) in before.services.iter().zip(&after.services) {
        assert_eq!(
            b.pid,
            a.pid,
            "{} was restarted or replaced: {}",
            b.name,
            pretty(&after)
        );
    }
    for (b, a) in before.frontends.iter().zip(&after.frontends) {
        assert_eq!(b.pid, a.pid, "{} was restarted: {}", b.name, pretty(&after));
    }
}
