//! `eventbridge`: PutEvents onto a Kinesis-backed event bus, rules, and
//! delivery of matched events to targets (ECS, Lambda).

fn main() -> std::process::ExitCode {
    cascade_core::binary::service_main::<eventbridge::EventBridgeConfig, _, _, _>(
        "eventbridge",
        "EventBridge: an event bus on Kinesis, rules, and targets.",
        |_| Ok(()),
        |listener, config, started| eventbridge::run(listener, config, started.shutdown),
    )
}
