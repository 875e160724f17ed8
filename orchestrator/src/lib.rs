//! The `cascade` orchestrator as a library: the supervisor that owns a run's
//! processes, the scenario engine that replays the postmortem and judges it,
//! the CLI's client commands, and the report. The binary (`main.rs`) only
//! parses flags and calls [`cli::run`].

pub mod cli;
pub mod client;
pub mod clock;
pub mod docker;
pub mod engine;
pub mod faults;
pub mod home;
pub mod launcher;
pub mod limits;
pub mod report_html;
pub mod scenario;
pub mod state;
pub mod status;
pub mod stocks;
pub mod supervisor;
pub mod topology;
pub mod traffic;
