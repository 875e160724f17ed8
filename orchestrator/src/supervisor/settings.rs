//! Live settings (`cascade configure`): a remediation toggle or a model
//! knob applied through `Control.Configure` on every instance of a service,
//! or on one instance.

use std::collections::HashMap;

use cascade_proto::control::ConfigureRequest;

use super::watch::Role;
use super::{Supervisor, SupervisorError};

impl Supervisor {
    /// Sets `key` to `value` on `target` (a service or an instance name);
    /// returns what each instance applied.
    pub(super) async fn configure(
        &self,
        target: &str,
        key: &str,
        value: &str,
    ) -> Result<HashMap<String, String>, SupervisorError> {
        let all: Vec<_> = self
            .roster()
            .into_iter()
            .filter(|e| e.role != Role::Backend)
            .collect();
        let targets: Vec<_> = all
            .iter()
            .filter(|e| e.name == target || e.service.name() == target)
            .collect();
        if targets.is_empty() {
            let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
            return Err(SupervisorError::InvalidArgument(format!(
                "target: no service or instance named {target:?}; running: {}",
                names.join(", ")
            )));
        }
        let mut applied = HashMap::new();
        for t in targets {
            let resp = cascade_core::auth::control(t.channel.clone())
                .configure(ConfigureRequest {
                    key: key.to_owned(),
                    value: value.to_owned(),
                })
                .await?;
            applied.insert(t.name.clone(), resp.into_inner().applied);
        }
        Ok(applied)
    }
}
