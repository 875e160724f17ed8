//! `eventbridge` binary (being built).
fn main() {}
