//! `cloudwatch` binary (being built).
fn main() {}
