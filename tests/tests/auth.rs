//! The control plane needs the run's token: every mutating call to the
//! supervisor, and a service's `Control` mutations, are refused
//! `UNAUTHENTICATED` without it or with a wrong one, and change nothing.
//! The CLI (every other test) sends it from `supervisor.json`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cascade::home::SupervisorFile;
use cascade_proto::control::{ConfigureRequest, GrpcFault};
use cascade_proto::supervisor as sv;
use cascade_proto::supervisor::supervisor_client::SupervisorClient;
use cascade_tests::Fleet;
use cascade_tests::status::{all_serving, pretty};
use tonic::transport::Channel;

const SETTLE: Duration = Duration::from_secs(60);

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    cascade_core::auth::attach(tonic::Request::new(msg), token)
}

fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>) {
    match r {
        Err(s) if s.code() == tonic::Code::Unauthenticated => {}
        other => panic!("{what}: expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[test]
fn mutations_without_the_runs_token_are_refused_and_change_nothing() {
    let fleet = Fleet::up(
        "auth",
        &[
            "--services",
            "cognito",
            "--frontends",
            "2",
            "--time-scale",
            "3600",
            "--traffic-rate",
            "2",
        ],
    );
    let before = fleet.wait_status("every service serving", SETTLE, all_serving);

    // The token lives in supervisor.json, readable by its owner only.
    let path = fleet.home.dir.join("supervisor.json");
    let mode = std::fs::metadata(&path)
        .expect("supervisor.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    let sup: SupervisorFile =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("parse");
    let token = sup
        .token
        .clone()
        .expect("supervisor.json holds the run's token");
    assert_eq!(token.len(), 64, "{token:?}");
    // ... and never on a command line, where `ps` shows it.
    for pid in std::iter::once(before.supervisor_pid)
        .chain(before.frontends.iter().map(|f| f.pid))
        .chain(before.services.iter().map(|s| s.pid))
        .filter(|p| *p != 0)
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&token),
            "pid {pid}'s argv holds the token"
        );
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let connect = |addr: String| -> Channel {
        rt.block_on(cascade_core::clients::connect(&addr))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    };
    let mut c = SupervisorClient::new(connect(sup.control_addr.clone()));
    let spec = r#"{"kind":"error","code":"UNAVAILABLE","target":"cognito"}"#;
    for bad in [None, Some("0".repeat(64).as_str()), Some(&token[..63])] {
        let what = |call: &str| format!("{call} with {bad:?}");
        let count = sv::CapacityRequest { count: 1 };
        refused(
            &what("AddCapacity"),
            rt.block_on(c.add_capacity(with_token(count, bad))),
        );
        refused(
            &what("RemoveCapacity"),
            rt.block_on(c.remove_capacity(with_token(count, bad))),
        );
        let restart = sv::RestartRequest {
            batch: 1,
            ..Default::default()
        };
        refused(
            &what("RestartFrontends"),
            rt.block_on(c.restart_frontends(with_token(restart, bad))),
        );
        let post = sv::ShdPostRequest {
            message: "forged".into(),
            ..Default::default()
        };
        refused(
            &what("ShdPost"),
            rt.block_on(c.shd_post(with_token(post, bad))),
        );
        let configure = sv::ConfigureRequest {
            target: "cognito".into(),
            key: "mode".into(),
            value: "fixed".into(),
        };
        refused(
            &what("Configure"),
            rt.block_on(c.configure(with_token(configure, bad))),
        );
        let inject = sv::InjectFaultRequest {
            spec_json: spec.into(),
        };
        refused(
            &what("InjectFault"),
            rt.block_on(c.inject_fault(with_token(inject, bad))),
        );
        let clear = sv::ClearFaultsRequest::default();
        refused(
            &what("ClearFaults"),
            rt.block_on(c.clear_faults(with_token(clear, bad))),
        );
        refused(
            &what("Shutdown"),
            rt.block_on(c.shutdown(with_token(sv::ShutdownRequest {}, bad))),
        );
    }
    // Read-only calls stay open.
    rt.block_on(c.status(sv::StatusRequest {}))
        .expect("status is open");
    rt.block_on(c.list_faults(sv::ListFaultsRequest {}))
        .expect("listing faults is open");

    // A service's Control: mutations need the token, status does not.
    let cognito = before
        .services
        .iter()
        .find(|s| s.name == "cognito")
        .expect("cognito");
    let mut control =
        cascade_proto::control::control_client::ControlClient::new(connect(cognito.addr.clone()));
    let fault = GrpcFault {
        id: "forged".into(),
        kind: "error".into(),
        code: "UNAVAILABLE".into(),
        ..Default::default()
    };
    for bad in [None, Some("nope")] {
        refused(
            "service InjectFault",
            rt.block_on(control.inject_fault(with_token(fault.clone(), bad))),
        );
        let configure = ConfigureRequest {
            key: "mode".into(),
            value: "fixed".into(),
        };
        refused(
            "service Configure",
            rt.block_on(control.configure(with_token(configure, bad))),
        );
    }
    let listed = rt
        .block_on(control.list_faults(cascade_proto::control::ListFaultsRequest {}))
        .expect("listing is open")
        .into_inner()
        .faults;
    assert!(listed.is_empty(), "no fault got in: {listed:?}");

    // Nothing changed: same fleet, no faults, no posts, same settings, still up.
    let after = fleet.status();
    assert_eq!(
        after.frontends.len(),
        before.frontends.len(),
        "{}",
        pretty(&after)
    );
    assert!(all_serving(&after), "{}", pretty(&after));
    let faults = fleet.ok(&["faults"]);
    assert!(!faults.contains("UNAVAILABLE"), "{faults}");
    assert!(!fleet.ok(&["shd", "list"]).contains("forged"));
    let cognito_after = after
        .services
        .iter()
        .find(|s| s.name == "cognito")
        .expect("cognito");
    assert_eq!(
        cognito_after.instances[0].info.get("mode"),
        cognito.instances[0].info.get("mode"),
        "cognito's mode is unchanged"
    );

    // With the token, the same calls work (the CLI sends it).
    fleet.ok(&["add-capacity", "1"]);
    assert_eq!(fleet.status().frontends.len(), before.frontends.len() + 1);
    let mut with = SupervisorClient::with_interceptor(
        connect(sup.control_addr),
        cascade_core::auth::Bearer(Some(token)),
    );
    rt.block_on(with.remove_capacity(sv::CapacityRequest { count: 1 }))
        .expect("with the token, RemoveCapacity works");
}
