//! Generated gRPC types for every Cascade service. The `.proto` sources live in
//! `proto/cascade/`; `build.rs` compiles them without a system `protoc`.

#![allow(clippy::all, missing_docs)]

/// The Kinesis data plane, the metadata store and the membership service.
pub mod kinesis {
    tonic::include_proto!("cascade.kinesis.v1");
}

/// Front-end to front-end peer messages (the shard-map's third source).
pub mod frontend {
    tonic::include_proto!("cascade.frontend.v1");
}

/// The Control service every process serves.
pub mod control {
    tonic::include_proto!("cascade.control.v1");
}

/// The orchestrator's control port.
pub mod supervisor {
    tonic::include_proto!("cascade.supervisor.v1");
}

/// Cognito user and identity pools.
pub mod cognito {
    tonic::include_proto!("cascade.cognito.v1");
}

/// CloudWatch metrics and alarms.
pub mod cloudwatch {
    tonic::include_proto!("cascade.cloudwatch.v1");
}

/// Lambda invocations.
pub mod lambda {
    tonic::include_proto!("cascade.lambda.v1");
}

/// EventBridge bus, rules and targets.
pub mod eventbridge {
    tonic::include_proto!("cascade.eventbridge.v1");
}

/// ECS tasks and services.
pub mod ecs {
    tonic::include_proto!("cascade.ecs.v1");
}

/// Encoded `FileDescriptorSet` of every service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cascade_descriptor.bin"));
