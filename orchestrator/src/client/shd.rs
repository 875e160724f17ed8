//! `cascade shd ...`: the Service Health Dashboard's two tools. The primary
//! one signs the operator in through Cognito first; the backup one has
//! minimal dependencies.

use std::time::Duration;

use anyhow::Context;
use cascade_proto::supervisor as sv;

use super::{fetch_status, rpc_error, say, supervisor};

/// `cascade shd ...`
#[derive(Debug, clap::Subcommand)]
pub enum ShdCmd {
    /// Post a status update: signs in through Cognito (the primary tool), or
    /// uses the backup tool with minimal dependencies.
    Post {
        /// The update to post.
        message: String,
        /// Use the backup tool (no Cognito sign-in).
        #[arg(long)]
        backup: bool,
        /// Operator user for the Cognito sign-in.
        #[arg(long, default_value = "operator")]
        user: String,
        /// Operator password for the Cognito sign-in.
        #[arg(
            long,
            default_value = "operator-password",
            env = "CASCADE_SHD_PASSWORD"
        )]
        password: String,
    },
    /// List the posts.
    List,
}

/// Runs a `cascade shd` command.
pub async fn shd(cmd: ShdCmd) -> anyhow::Result<()> {
    match cmd {
        ShdCmd::Post {
            message,
            backup,
            user,
            password,
        } => {
            let token = if backup {
                String::new()
            } else {
                let st = fetch_status().await?;
                let cognito = st
                    .services
                    .iter()
                    .find(|s| s.name == "cognito")
                    .map(|s| s.addr.clone())
                    .filter(|a| !a.is_empty())
                    .context("Cognito is not running; the primary SHD tool cannot sign in (use --backup)")?;
                let ch = cascade_core::clients::endpoint(&cognito)?
                    .timeout(Duration::from_secs(2))
                    .connect_lazy();
                cascade_proto::cognito::cognito_client::CognitoClient::new(ch)
                    .sign_in(cascade_proto::cognito::SignInRequest {
                        username: user,
                        password,
                    })
                    .await
                    .map_err(|s| {
                        // tonic reports its own deadline as CANCELLED("Timeout expired").
                        let why = if s.code() == tonic::Code::Cancelled && s.message().contains("Timeout expired") {
                            "DeadlineExceeded: no answer within 2 s".to_owned()
                        } else {
                            format!("{:?}: {}", s.code(), s.message())
                        };
                        anyhow::anyhow!(
                            "primary SHD tool: Cognito sign-in failed: {why} (the backup tool, `cascade shd post --backup`, does not need Cognito)"
                        )
                    })?
                    .into_inner()
                    .token
            };
            let post = supervisor()
                .await?
                .shd_post(sv::ShdPostRequest {
                    message,
                    token,
                    backup,
                })
                .await
                .map_err(|s| rpc_error("shd post", s))?
                .into_inner()
                .post
                .context("no post returned")?;
            say!("posted via the {} tool: {}", post.path, post.message);
        }
        ShdCmd::List => {
            let posts = supervisor()
                .await?
                .shd_list(sv::ShdListRequest {})
                .await
                .map_err(|s| rpc_error("shd list", s))?
                .into_inner()
                .posts;
            if posts.is_empty() {
                println!("no posts yet");
            }
            for p in posts {
                println!("{}  [{}] {}: {}", p.at_ms, p.path, p.operator, p.message);
            }
        }
    }
    Ok(())
}
