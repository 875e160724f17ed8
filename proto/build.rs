//! Compiles every `.proto` under `proto/` with protox (pure Rust, no system
//! `protoc`) and generates tonic clients and servers with tonic-prost-build.

use std::path::PathBuf;

use protox::prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/cascade/kinesis.proto",
        "proto/cascade/frontend.proto",
        "proto/cascade/control.proto",
        "proto/cascade/supervisor.proto",
        "proto/cascade/cognito.proto",
        "proto/cascade/cloudwatch.proto",
        "proto/cascade/lambda.proto",
        "proto/cascade/eventbridge.proto",
        "proto/cascade/ecs.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("cascade_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
