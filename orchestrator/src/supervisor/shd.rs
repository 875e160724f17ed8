//! The Service Health Dashboard: a post through the primary tool needs the
//! operator's Cognito sign-in (so it fails while Cognito does, as in 2020);
//! the backup tool has minimal dependencies and needs none. Posts are kept
//! in memory and appended to the run's `shd-posts.jsonl`.

use std::io::Write as _;
use std::time::Duration;

use cascade_proto::cognito::{self as cg, cognito_client::CognitoClient};
use cascade_proto::supervisor as sv;

use super::watch::Role;
use super::{Supervisor, SupervisorError};
use crate::topology::Service;

/// How long the primary tool waits for Cognito to verify a sign-in.
const SIGN_IN_CHECK: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Posts `message`: through the backup tool, or as the operator whose
    /// Cognito `token` the primary tool verifies.
    pub(super) async fn shd_post(
        &self,
        r: sv::ShdPostRequest,
    ) -> Result<sv::ShdPost, SupervisorError> {
        if r.message.trim().is_empty() {
            return Err(SupervisorError::InvalidArgument(
                "message: must not be empty".into(),
            ));
        }
        let (path, operator) = if r.backup {
            ("backup", "operator (backup tool)".to_owned())
        } else {
            match self.verify_operator(r.token).await {
                Ok(op) => ("primary", op),
                Err(e) => {
                    // Shown on the dashboard's SHD panel as a failed attempt.
                    self.dashboard
                        .shd_failed("primary", &r.message, &e.to_string());
                    return Err(e);
                }
            }
        };
        let post = sv::ShdPost {
            at_ms: cascade_core::now_ms(),
            message: r.message,
            path: path.into(),
            operator,
        };
        self.append_post(&post);
        self.shd.lock().push(post.clone());
        Ok(post)
    }

    /// The posts so far.
    pub(super) fn shd_posts(&self) -> Vec<sv::ShdPost> {
        self.shd.lock().clone()
    }

    /// The username behind `token`, as Cognito answers it.
    async fn verify_operator(&self, token: String) -> Result<String, SupervisorError> {
        let cognito = self
            .roster()
            .into_iter()
            .find(|e| e.role == Role::Service && e.service == Service::Cognito)
            .map(|e| e.channel)
            .ok_or_else(|| {
                SupervisorError::FailedPrecondition(
                    "the primary SHD path signs in through Cognito, which is not running; use --backup".into(),
                )
            })?;
        let resp = tokio::time::timeout(
            SIGN_IN_CHECK,
            CognitoClient::new(cognito).validate_token(cg::ValidateTokenRequest { token }),
        )
        .await;
        match resp {
            Ok(Ok(v)) => Ok(v.into_inner().username),
            Ok(Err(s)) => Err(SupervisorError::Unavailable(format!(
                "cannot verify the operator's Cognito sign-in: {:?}: {}",
                s.code(),
                s.message()
            ))),
            Err(_) => Err(SupervisorError::Unavailable(format!(
                "cannot verify the operator's Cognito sign-in: no answer within {} s",
                SIGN_IN_CHECK.as_secs()
            ))),
        }
    }

    fn append_post(&self, post: &sv::ShdPost) {
        let line = serde_json::json!({"at_ms": post.at_ms, "message": post.message, "path": post.path, "operator": post.operator});
        let log = self.run_dir.join("shd-posts.jsonl");
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| writeln!(f, "{line}"))
        {
            tracing::warn!(error = %e, "could not append to {}", log.display());
        }
    }
}
