//! Where a running supervisor is found: `$CASCADE_HOME/supervisor.json`
//! (default `./.cascade`), written once the fleet is up and removed on exit.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The file other `cascade` commands read to find the supervisor.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SupervisorFile {
    /// The supervisor's pid.
    pub pid: u32,
    /// Its control port (gRPC `Supervisor` service).
    pub control_addr: String,
    /// This run's directory (logs, state).
    pub run_dir: PathBuf,
    /// The run's token, which mutating control calls need (the file is
    /// readable by its owner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A home set by this process (a scenario run keeps its fleet in its report
/// directory); it wins over `$CASCADE_HOME`.
static HOME_OVERRIDE: parking_lot::Mutex<Option<PathBuf>> = parking_lot::Mutex::new(None);

/// Makes `dir` this process's home (and that of the supervisors it starts).
pub fn set_home(dir: PathBuf) {
    *HOME_OVERRIDE.lock() = Some(dir);
}

/// The directory holding `supervisor.json` and `runs/`.
pub fn home() -> PathBuf {
    if let Some(h) = HOME_OVERRIDE.lock().clone() {
        return h;
    }
    std::env::var_os("CASCADE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cascade"))
}

fn file(home: &Path) -> PathBuf {
    home.join("supervisor.json")
}

/// Whether a process with this pid exists and has not exited (a zombie,
/// e.g. a supervisor whose parent `cascade run` has not reaped it yet,
/// counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Env var pointing the CLI straight at a control port (docker mode: the
/// orchestrator container's published port, e.g. 127.0.0.1:7700).
pub const CONTROL_ENV: &str = "CASCADE_CONTROL";

/// Reads `supervisor.json`; `Ok(None)` when nothing runs (or it is stale).
/// `$CASCADE_CONTROL` takes precedence (the supervisor is then not a local
/// process: its pid reads 0).
pub fn read(home: &Path) -> anyhow::Result<Option<SupervisorFile>> {
    if let Some(addr) = std::env::var(CONTROL_ENV).ok().filter(|a| !a.is_empty()) {
        return Ok(Some(SupervisorFile {
            pid: 0,
            control_addr: addr,
            run_dir: PathBuf::from("(in the orchestrator container)"),
            token: None,
        }));
    }
    let path = file(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let sup: SupervisorFile =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    if pid_alive(sup.pid) {
        Ok(Some(sup))
    } else {
        let _ = std::fs::remove_file(&path);
        Ok(None)
    }
}

/// Writes `supervisor.json` atomically, readable and writable by its owner
/// only (mode 0600: it holds the run's token).
pub fn write(home: &Path, sup: &SupervisorFile) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(home).with_context(|| format!("mkdir {}", home.display()))?;
    let tmp = home.join(format!("supervisor.json.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(sup)?)?;
    drop(f);
    std::fs::rename(&tmp, file(home))?;
    Ok(())
}

/// Removes `supervisor.json` if it is ours.
pub fn remove(home: &Path, pid: u32) {
    if let Ok(Some(sup)) = read(home)
        && sup.pid == pid
    {
        let _ = std::fs::remove_file(file(home));
    }
}

/// The supervisor, or a clear error saying how to start one.
pub fn require() -> anyhow::Result<SupervisorFile> {
    let home = home();
    read(&home)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no running fleet found in {} (start one with `cascade up --detach`, or set CASCADE_HOME)",
            home.display()
        )
    })
}
