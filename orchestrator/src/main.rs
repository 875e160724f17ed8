//! `cascade`: brings the Kinesis outage testbed up, pokes it, and takes it
//! down. Thin: parse the flags and hand over to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    cascade::cli::run(cascade::cli::Cli::parse())
}
