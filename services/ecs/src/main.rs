//! `ecs`: tasks provisioned through EventBridge-driven workflows and one
//! service auto-scaled from a CloudWatch alarm.

fn main() -> std::process::ExitCode {
    cascade_core::binary::service_main::<ecs::EcsConfig, _, _, _>(
        "ecs",
        "ECS: event-driven task workflows and reactive service auto-scaling.",
        |_| Ok(()),
        |listener, config, started| ecs::run(listener, config, started.shutdown),
    )
}
