//! A short lease per app and environment, so that two invocations never interleave their steps
//! on one service (Lambda may run two at once, and retries overlap late deliveries).
//!
//! SSM's only atomic check is "create if absent" (`PutParameter` without overwrite), which is all a
//! lease needs. A lease that outlives its holder (a crashed invocation) expires after [`TTL`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{AwsError, Ssm};
use crate::types::{AppName, Environment};

/// Longer than any Conveyor invocation may run (the functions' timeout is 60 s, verification
/// included), so a live holder never loses its lease.
pub const TTL: Duration = Duration::from_secs(120);
/// How long an invocation waits for a busy lease before it gives up (and Lambda retries).
pub const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    owner: String,
    expires_at: DateTime<Utc>,
}

/// A held lease; [`Lease::release`] it when done (an unreleased lease just expires).
#[must_use = "release the lease when done"]
pub struct Lease {
    ssm: Ssm,
    name: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "{parameter} is held by {owner} until {expires_at}: another invocation is deploying this service; retry later"
    )]
    Busy { parameter: String, owner: String, expires_at: DateTime<Utc> },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

impl Lease {
    pub fn parameter(prefix: &str, app: &AppName, env: Environment) -> String {
        format!("{prefix}/releases/{app}/{env}/lease")
    }

    /// Takes the lease, waiting up to [`WAIT`] for a current holder to finish.
    pub async fn acquire(
        ssm: &Ssm,
        prefix: &str,
        app: &AppName,
        env: Environment,
        owner: &str,
    ) -> Result<Lease, LeaseError> {
        let name = Lease::parameter(prefix, app, env);
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut pause = Duration::from_millis(100);
        loop {
            let holder = Holder { owner: owner.to_owned(), expires_at: Utc::now() + TTL };
            let value = serde_json::to_string(&holder).unwrap_or_default();
            if ssm.create(&name, &value, "Conveyor lease: one invocation at a time per service").await? {
                return Ok(Lease { ssm: ssm.clone(), name });
            }
            let current = ssm.get(&name, false).await?;
            let current: Option<Holder> = current.and_then(|p| serde_json::from_str(&p.value).ok());
            match current {
                // Expired or unreadable: its holder is gone. Remove it and try again at once.
                None => ssm.delete(&name).await?,
                Some(held) if held.expires_at <= Utc::now() => {
                    tracing::warn!(lease = %name, owner = %held.owner, "taking over an expired lease");
                    ssm.delete(&name).await?;
                }
                Some(held) => {
                    if tokio::time::Instant::now() + pause > deadline {
                        return Err(LeaseError::Busy {
                            parameter: name,
                            owner: held.owner,
                            expires_at: held.expires_at,
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    pub async fn release(self) {
        if let Err(error) = self.ssm.delete(&self.name).await {
            tracing::warn!(lease = %self.name, error = %error, "could not release the lease; it will expire");
        }
    }
}
