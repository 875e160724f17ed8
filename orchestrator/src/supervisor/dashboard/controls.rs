//! The facilitator's controls, as `POST /api/...` with form fields. Each
//! calls the same supervisor method as the control API (so the same
//! validation, and a refusal carries the message the CLI prints after its
//! `command:` prefix) and answers `{"ok": bool, "message": "..."}`: 200 when
//! done (202 for a restart, which runs on), 400 for a bad request, 409 when
//! the run cannot do it now, 502/503 when a process refused or is gone.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::Serialize;

use super::Ctx;
use crate::supervisor::SupervisorError;
use crate::supervisor::restart::RestartPlan;

/// A control's answer.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// Whether it was done (or started).
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
}

type Reply = (StatusCode, Json<Answer>);

fn done(code: StatusCode, message: String) -> Reply {
    (code, Json(Answer { ok: true, message }))
}

fn refused(e: SupervisorError) -> Reply {
    let code = match &e {
        SupervisorError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        SupervisorError::FailedPrecondition(_) => StatusCode::CONFLICT,
        SupervisorError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        SupervisorError::Rpc(s) if s.code() == tonic::Code::InvalidArgument => {
            StatusCode::BAD_REQUEST
        }
        SupervisorError::Rpc(_) => StatusCode::BAD_GATEWAY,
    };
    (
        code,
        Json(Answer {
            ok: false,
            message: e.to_string(),
        }),
    )
}

/// Routes of the controls; every one needs the run's token
/// (`Authorization: Bearer <token>`), else 401 and nothing changes.
pub(super) fn routes(ctx: Ctx) -> Router<Ctx> {
    Router::new()
        .route("/api/add-capacity", post(add_capacity))
        .route("/api/remove-capacity", post(remove_capacity))
        .route("/api/restart-frontends", post(restart))
        .route("/api/configure", post(configure))
        .route("/api/clear-faults", post(clear_faults))
        .route_layer(axum::middleware::from_fn_with_state(ctx, authorize))
}

/// Refuses a control without the run's token, before its form is read.
async fn authorize(
    State(c): State<Ctx>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let call = req.uri().path().to_owned();
    match cascade_core::auth::check_header(header, Some(&c.sup.token), &call) {
        Ok(()) => next.run(req).await,
        Err(message) => (
            StatusCode::UNAUTHORIZED,
            Json(Answer { ok: false, message }),
        )
            .into_response(),
    }
}

type Fields = HashMap<String, String>;

/// A whole-number field; `what` names it as the CLI does.
fn number<T: std::str::FromStr>(
    f: &Fields,
    key: &str,
    what: &str,
) -> Result<Option<T>, SupervisorError> {
    match f.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| SupervisorError::InvalidArgument(format!("{key}: {v:?} is not {what}"))),
    }
}

/// A duration field (`30s`, `1m`).
fn duration(f: &Fields, key: &str) -> Result<Option<Duration>, SupervisorError> {
    match f.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => humantime::parse_duration(v).map(Some).map_err(|e| {
            SupervisorError::InvalidArgument(format!(
                "{key}: {v:?} is not a duration ({e}), e.g. 2s or 1m"
            ))
        }),
    }
}

fn count(f: &Fields) -> Result<u32, SupervisorError> {
    number::<u32>(f, "count", "a whole number of front-ends")?.ok_or_else(|| {
        SupervisorError::InvalidArgument("count: how many front-ends is required".into())
    })
}

async fn add_capacity(State(c): State<Ctx>, Form(f): Form<Fields>) -> Reply {
    let n = match count(&f) {
        Ok(n) => n,
        Err(e) => return refused(e),
    };
    match c.sup.add_capacity(n).await {
        Ok((added, size)) => done(
            StatusCode::OK,
            format!("added {}; fleet size {size}", added.join(", ")),
        ),
        Err(e) => refused(e),
    }
}

async fn remove_capacity(State(c): State<Ctx>, Form(f): Form<Fields>) -> Reply {
    let n = match count(&f) {
        Ok(n) => n,
        Err(e) => return refused(e),
    };
    match c.sup.remove_capacity(n).await {
        Ok((removed, size)) => done(
            StatusCode::OK,
            format!("removed {}; fleet size {size}", removed.join(", ")),
        ),
        Err(e) => refused(e),
    }
}

/// `batch` (default 1), `interval` (default 0s), `grace` (default: as
/// `cascade restart-frontends`'s). The restart runs on after the answer.
async fn restart(State(c): State<Ctx>, Form(f): Form<Fields>) -> Reply {
    let plan = (|| {
        let batch = number::<u32>(&f, "batch", "a whole number of front-ends")?.unwrap_or(1);
        let interval = duration(&f, "interval")?.unwrap_or_default();
        let grace = duration(&f, "grace")?
            .unwrap_or_else(|| crate::client::default_restart_grace(c.sup.args.time_scale));
        RestartPlan::new(batch, interval.as_millis() as u64, grace.as_millis() as u64)
    })();
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    let sup = c.sup.clone();
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        if let Err(e) = sup.rolling_restart(plan, tx).await {
            tracing::warn!(error = %format!("{e:#}"), "rolling restart from the dashboard failed");
        }
        let _ = drain.await;
    });
    done(
        StatusCode::ACCEPTED,
        format!(
            "restarting {} at a time, {} between batches, health gate {}",
            plan.batch,
            humantime::format_duration(plan.interval),
            humantime::format_duration(plan.grace)
        ),
    )
}

async fn configure(State(c): State<Ctx>, Form(f): Form<Fields>) -> Reply {
    let get = |k: &str| f.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let (target, key, value) = (get("target"), get("key"), get("value"));
    match c.sup.configure(&target, &key, &value).await {
        Ok(applied) => {
            let mut lines: Vec<String> = applied
                .into_iter()
                .map(|(i, v)| format!("{i}: {v}"))
                .collect();
            lines.sort();
            done(StatusCode::OK, lines.join("; "))
        }
        Err(e) => refused(e),
    }
}

/// `id` (optional): one fault; without it, every fault.
async fn clear_faults(State(c): State<Ctx>, Form(f): Form<Fields>) -> Reply {
    let id = f.get("id").map(|v| v.trim().to_owned()).unwrap_or_default();
    let cleared = match c.sup.clear_faults_request(&id).await {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    if cleared.is_empty() {
        done(StatusCode::OK, "no active faults".into())
    } else {
        done(StatusCode::OK, format!("reverted {}", cleared.join(", ")))
    }
}
