//! The live dashboard: an axum HTTP server inside the supervisor, on a port
//! of its own (`--dashboard-listen`). It serves
//! - `/`: the live page, its first state rendered into the HTML (`page`);
//! - `/events`: server-sent events, one numbered [`Frame`] per watch tick,
//!   replayed from a bounded ring after `Last-Event-ID` (or `?after=N`);
//! - `/metrics`: Prometheus text exposition (`metrics`);
//! - `POST /api/...`: the facilitator's controls (`controls`), through the
//!   same supervisor methods as the control API.
//!
//! Every number comes from the typed `Status` the supervisor builds for
//! `status --json`. The server stops with the supervisor (its shutdown
//! token ends the event streams too, so graceful shutdown never waits on
//! an open page).

mod controls;
pub(super) mod frame;
mod metrics;
mod page;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures::Stream;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::Supervisor;
use frame::{FaultView, Frame, ShdView};

/// Frames kept for replay and for the page's sparklines: at one frame per
/// 500 ms watch tick, the last 4 wall minutes (24 incident hours at 360x).
pub const RING: usize = 480;

/// The dashboard's state inside the supervisor.
pub(super) struct Hub {
    /// Where it listens, once it does (status's `endpoints`).
    addr: OnceLock<SocketAddr>,
    /// When the run started (the incident clock's zero).
    started: Instant,
    /// The last [`RING`] frames, oldest first, ids consecutive.
    ring: Mutex<VecDeque<Arc<Frame>>>,
    /// The id of the newest frame; changes wake the event streams.
    latest: tokio::sync::watch::Sender<u64>,
    /// Failed attempts to post to the Service Health Dashboard.
    shd_failures: Mutex<Vec<ShdView>>,
    /// The scenario's journal, as read so far.
    journal: Mutex<frame::JournalTail>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            addr: OnceLock::new(),
            started: Instant::now(),
            ring: Mutex::default(),
            latest: tokio::sync::watch::Sender::new(0),
            shd_failures: Mutex::default(),
            journal: Mutex::default(),
        }
    }
}

impl Hub {
    /// `endpoints.dashboard` and `endpoints.metrics`, once served.
    pub(super) fn endpoints(&self) -> (Option<String>, Option<String>) {
        match self.addr.get() {
            Some(a) => {
                // Bound to every address (docker mode's 0.0.0.0:7800, which
                // compose publishes on the host's 127.0.0.1 at the same
                // port): name the loopback one.
                let mut a = *a;
                if a.ip().is_unspecified() {
                    a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                (
                    Some(format!("http://{a}/")),
                    Some(format!("http://{a}/metrics")),
                )
            }
            None => (None, None),
        }
    }

    /// Records a failed SHD posting attempt.
    pub(super) fn shd_failed(&self, path: &str, message: &str, error: &str) {
        self.shd_failures.lock().push(ShdView {
            at_ms: cascade_core::now_ms(),
            path: path.into(),
            operator: String::new(),
            message: message.into(),
            error: error.into(),
        });
    }

    /// Frames after `id`, oldest first.
    fn since(&self, id: u64) -> Vec<Arc<Frame>> {
        self.ring
            .lock()
            .iter()
            .filter(|f| f.id > id)
            .cloned()
            .collect()
    }

    /// Every frame in the ring, oldest first.
    fn frames(&self) -> Vec<Arc<Frame>> {
        self.since(0)
    }
}

impl Supervisor {
    /// Takes a frame from the latest watch and wakes every event stream.
    pub(super) fn publish_frame(&self) {
        let hub = &self.dashboard;
        let status = self.status();
        let mut shd: Vec<ShdView> = self
            .shd_posts()
            .into_iter()
            .map(|p| ShdView {
                at_ms: p.at_ms,
                path: p.path,
                operator: p.operator,
                message: p.message,
                error: String::new(),
            })
            .chain(hub.shd_failures.lock().iter().cloned())
            .collect();
        shd.sort_by_key(|p| p.at_ms);
        let faults = self
            .faults
            .list()
            .into_iter()
            .map(|f| FaultView {
                id: f.id,
                summary: f.summary,
                targets: f.targets,
                expires_ms: f.expires_ms,
            })
            .collect();
        let scenario = self
            .args
            .scenario_journal
            .as_deref()
            .and_then(|p| hub.journal.lock().read(p));
        let run_s = hub.started.elapsed().as_secs_f64();
        let mut ring = hub.ring.lock();
        let id = ring.back().map_or(1, |f| f.id + 1);
        let frame = Frame {
            id,
            at_ms: cascade_core::now_ms(),
            run_s,
            incident_s: run_s * status.time_scale,
            edges: frame::edges(&status, &shd),
            stocks: crate::stocks::stocks(&status),
            samples: frame::samples(&status),
            maps: frame::map_counts(&status),
            eagain: status.main_fleet().map(|f| f.spawn_failures).sum(),
            faults,
            shd,
            status,
            scenario,
        };
        ring.push_back(Arc::new(frame));
        while ring.len() > RING {
            ring.pop_front();
        }
        drop(ring);
        hub.latest.send_replace(id);
    }
}

/// Binds `addr` (`--dashboard-listen`), or says why not.
pub(super) async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--dashboard-listen {addr}: cannot listen there"))
}

/// Serves the dashboard on `listener` until `stop`; returns the server's task.
pub(super) fn serve(
    sup: Arc<Supervisor>,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let _ = sup.dashboard.addr.set(addr);
    let ctx = Ctx {
        sup,
        stop: stop.clone(),
    };
    let app = Router::new()
        .route("/", get(index))
        .route("/events", get(events))
        .route("/metrics", get(metrics_text))
        .merge(controls::routes(ctx.clone()))
        .with_state(ctx);
    Ok(tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "dashboard server failed");
        }
    }))
}

/// What every handler gets.
#[derive(Clone)]
struct Ctx {
    sup: Arc<Supervisor>,
    stop: CancellationToken,
}

async fn index(State(c): State<Ctx>) -> Html<String> {
    let frames = c.sup.dashboard.frames();
    Html(page::render(&frames))
}

async fn metrics_text(State(c): State<Ctx>) -> impl IntoResponse {
    let scenario = c
        .sup
        .dashboard
        .frames()
        .last()
        .and_then(|f| f.scenario.clone());
    let body = metrics::render(
        &c.sup.status(),
        &c.sup.faults.list(),
        &c.sup.recorder,
        scenario.as_ref(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// `/events?after=N`: the frames after `N` (the page passes the id it was
/// rendered with), then each new one.
/// `view=html`: each frame as the page's rendered live region (event
/// `view`) instead of its JSON (event `frame`); the ids are the same.
#[derive(Debug, serde::Deserialize)]
struct After {
    after: Option<u64>,
    view: Option<String>,
}

async fn events(
    State(c): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<After>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // A reconnecting EventSource names the last event it saw; it wins.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.after);
    let hub = &c.sup.dashboard;
    // Subscribe before reading the ring: nothing published in between is missed.
    let rx = hub.latest.subscribe();
    let last = resume.unwrap_or_else(|| hub.latest.borrow().saturating_sub(1));
    let state = StreamState {
        sup: c.sup.clone(),
        rx,
        last,
        pending: VecDeque::new(),
        stop: c.stop.clone(),
        html: q.view.as_deref() == Some("html"),
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(f) = st.pending.pop_front() {
                st.last = f.id;
                let ev = if st.html {
                    let frames: Vec<Arc<Frame>> = st
                        .sup
                        .dashboard
                        .frames()
                        .into_iter()
                        .filter(|x| x.id <= f.id)
                        .collect();
                    // SSE cannot carry a carriage return; HTML does not need one.
                    let html = page::live(&frames).into_string().replace('\r', "");
                    Event::default().event("view").data(html)
                } else {
                    Event::default()
                        .event("frame")
                        .json_data(&*f)
                        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
                };
                return Some((Ok(ev.id(f.id.to_string())), st));
            }
            st.pending = st.sup.dashboard.since(st.last).into();
            if !st.pending.is_empty() {
                continue;
            }
            tokio::select! {
                r = st.rx.changed() => if r.is_err() { return None },
                _ = st.stop.cancelled() => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

struct StreamState {
    sup: Arc<Supervisor>,
    rx: tokio::sync::watch::Receiver<u64>,
    last: u64,
    pending: VecDeque<Arc<Frame>>,
    stop: CancellationToken,
    html: bool,
}
