//! Invalid app configs reach people: each is announced once per parameter version
//! (`config_error`), so a typo never silently stops an app's deployments.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::{Configs, InvalidApp};
use crate::leased::Leases;
use crate::ledger::{Change, Held, ItemKey, Lease, LeasedState, LedgerError};
use crate::notify::{Announcement, Notification};
use crate::vocabulary::{Outcome, Severity};
use crate::Invocation;

/// The last version of a parameter announced as invalid: `CONFIG` / `{parameter}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigNotice {
    pub parameter: String,
    pub version: i64,
    pub at: DateTime<Utc>,
}

impl LeasedState for ConfigNotice {
    fn in_flight(&self) -> bool {
        false
    }
}

/// Announces an invalid app config unless this parameter version was announced already. Best
/// effort: a failure is logged and the next push or sweep tries again.
pub async fn config_error(configs: &Configs, leases: Leases<'_>, invalid: &InvalidApp, invocation: &Invocation) {
    let parameter = &invalid.error.parameter;
    if !configs.first_mention(parameter, invalid.version) {
        return;
    }
    let lease = Lease::new(ItemKey::config(parameter), "config check", invocation);
    let announced = leases
        .with(lease, async |held: &mut Held<ConfigNotice>| {
            if held.state.as_ref().is_some_and(|notice| notice.version >= invalid.version) {
                return Ok::<_, LedgerError>(false);
            }
            let app = parameter.rsplit('/').next().unwrap_or(parameter);
            let mut notification = Notification::new(app, None, Outcome::ConfigError, Severity::Error);
            notification.reason = Some(format!(
                "{} — this app is not deployed until the parameter is fixed (`conveyor config validate` checks it)",
                invalid.error
            ));
            let mut change =
                Change::new(ConfigNotice { parameter: parameter.clone(), version: invalid.version, at: Utc::now() });
            change.announcements.push(Announcement { notification, slack_webhook_parameter: None });
            held.commit(leases.ledger, change).await?;
            Ok(true)
        })
        .await;
    match announced {
        Ok(true) => warn!(parameter = %parameter, version = invalid.version, key = %invalid.error.key(),
            problem = %invalid.error.problem(), problems = invalid.error.problems.len(), "invalid app config announced"),
        Ok(false) => {}
        Err(error) => {
            info!(parameter = %parameter, error = %error, "config error not announced now");
            configs.forget_mention(parameter, invalid.version);
        }
    }
}
