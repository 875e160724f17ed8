//! `kinesis-frontend`: one server of the Kinesis front-end fleet.

fn main() -> std::process::ExitCode {
    cascade_core::binary::service_main::<kinesis_frontend::FrontendConfig, _, _, _>(
        "kinesis-frontend",
        "A Kinesis front-end server: routes client calls with its shard-map and holds one OS thread per peer front-end.",
        |_| Ok(()),
        |listener, config, started| {
            kinesis_frontend::run(listener, config, started.base_threads, started.shutdown)
        },
    )
}
