//! `cognito`: user pools, identity pools and the access-log buffer to Kinesis.

fn main() -> std::process::ExitCode {
    cascade_core::binary::service_main::<cognito::CognitoConfig, _, _, _>(
        "cognito",
        "Cognito: sign-in, tokens and temporary credentials, with access records streamed to Kinesis through a bounded buffer.",
        |_| Ok(()),
        |listener, config, started| cognito::run(listener, config, started.shutdown),
    )
}
