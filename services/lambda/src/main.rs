//! `lambda` binary (being built).
fn main() {}
