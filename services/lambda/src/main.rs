//! `lambda`: one Lambda invocation host whose metrics agent buffers into the
//! host's memory while CloudWatch is down (the incident's Lambda errors).

fn main() -> std::process::ExitCode {
    cascade_core::binary::service_main::<lambda::LambdaConfig, _, _, _>(
        "lambda",
        "A Lambda invocation host: Invoke, EventBridge delivery, a metrics agent.",
        lambda::LambdaConfig::validate,
        |listener, config, started| lambda::run(listener, config, started.shutdown),
    )
}
