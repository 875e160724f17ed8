//! `kinesis-backend`: shard storage, the metadata store and membership.

fn main() -> std::process::ExitCode {
    cascade_core::binary::service_main::<kinesis_backend::BackendConfig, _, _, _>(
        "kinesis-backend",
        "The Kinesis back end: shards, the authoritative metadata store, membership.",
        |_| Ok(()),
        |listener, config, started| kinesis_backend::run(listener, config, started.shutdown),
    )
}
