//! `ecs` binary (being built).
fn main() {}
