//! `cascade up --detach`: the supervisor in its own session, started with
//! every `up` flag (one `UpArgs::to_argv`), and waited for until it reports
//! the fleet up or fails.

use std::os::unix::process::CommandExt as _;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::say;
use crate::home;
use crate::supervisor::UpArgs;

/// `cascade up --detach`: checks every flag (exit 64 on bad input), then
/// starts the supervisor and waits for it.
pub fn detach(args: &UpArgs) -> ExitCode {
    if let Err(e) = args.validate() {
        eprintln!("cascade up: {e:#}");
        return ExitCode::from(64);
    }
    match detach_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cascade up: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the supervisor in its own session and waits until it reports the
/// fleet up (or failed).
pub fn detach_inner(args: &UpArgs) -> anyhow::Result<()> {
    let home_dir = home::home();
    if let Some(sup) = home::read(&home_dir)? {
        bail!(
            "a fleet is already running (supervisor pid {}); stop it with `cascade down` first",
            sup.pid
        );
    }
    std::fs::create_dir_all(&home_dir)?;
    let log_path = home_dir.join("supervisor.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("create {}", log_path.display()))?;
    let daemon = UpArgs {
        detach: false,
        daemon: true,
        ..args.clone()
    };
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("up")
        .args(daemon.to_argv())
        .env("CASCADE_HOME", &home_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd.spawn().context("start the supervisor")?;
    wait_up(child, &home_dir, &log_path, args.frontends)
}

/// Relays the supervisor's progress lines until it has written
/// `supervisor.json` (up), exited, or run out of time (killed).
fn wait_up(
    mut child: std::process::Child,
    home_dir: &std::path::Path,
    log_path: &std::path::Path,
    frontends: u32,
) -> anyhow::Result<()> {
    let pid = child.id();
    say!(
        "cascade: supervisor pid {pid} starting (log: {})",
        log_path.display()
    );
    let until = Instant::now()
        + Duration::from_secs(60)
        + Duration::from_millis(200 * u64::from(frontends));
    let mut relayed = 0;
    let started = Instant::now();
    loop {
        // Relay the supervisor's progress lines (not its log records) as they appear.
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        for line in text.lines().skip(relayed) {
            if line.starts_with("cascade:") && !line.contains("fleet up;") {
                say!("{line}");
            }
        }
        relayed = text.lines().count();
        if let Some(sup) = home::read(home_dir)?
            && sup.pid == pid
        {
            say!(
                "cascade: fleet up (run {}); `cascade status` to inspect, `cascade down` to stop",
                sup.run_dir.display()
            );
            return Ok(());
        }
        if let Some(code) = child.try_wait()? {
            bail!(
                "the supervisor exited ({code}) before the fleet was up:\n{}",
                crate::launcher::log_tail(log_path, 20)
            );
        }
        if Instant::now() > until {
            let _ = child.kill();
            bail!(
                "the fleet was not up after {:?}; supervisor killed. Last log lines:\n{}",
                started.elapsed(),
                crate::launcher::log_tail(log_path, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
