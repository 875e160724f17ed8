//! `cognito` binary (being built).
fn main() {}
