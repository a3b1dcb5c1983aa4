//! The ECS services Conveyor deploys to, reached per target: Conveyor's own account and region,
//! or another (account, region, role) that an app's environment names.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::aws::{Alarms, AwsError, Described, Ecs};
use crate::config::{AppConfig, Home, ServiceTarget};
use crate::Invocation;

/// Task-definition revisions never change: what was described (or registered) once is kept, so
/// a warm instance rolling a service forward reads nothing it already knows.
#[derive(Default)]
pub struct RevisionCache {
    entries: Mutex<VecDeque<Arc<Described>>>,
}

impl RevisionCache {
    const CAPACITY: usize = 32;

    pub fn get(&self, arn: &str) -> Option<Arc<Described>> {
        let entries = self.entries.lock().ok()?;
        entries.iter().find(|d| d.arn() == arn).cloned()
    }

    pub fn keep(&self, described: Described) -> Arc<Described> {
        let described = Arc::new(described);
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|d| d.arn() != described.arn());
            entries.push_front(described.clone());
            entries.truncate(Self::CAPACITY);
        }
        described
    }
}

/// Which role and region an ECS client works with, and for which app.
type RemoteKey = (Option<String>, Option<String>, String);

/// The clients of one account and region: ECS, and CloudWatch for the alarms gate.
#[derive(Clone)]
struct Reach {
    ecs: Ecs,
    alarms: Alarms,
}

impl Reach {
    fn new(config: &aws_config::SdkConfig) -> Self {
        Reach { ecs: Ecs::new(aws_sdk_ecs::Client::new(config)), alarms: Alarms::new(config) }
    }
}

/// ECS (and CloudWatch) wherever the apps run, built once per process and reused while warm.
pub struct Fleet {
    /// The SDK settings (with Conveyor's retries) other targets' clients start from.
    config: aws_config::SdkConfig,
    home: Reach,
    /// Clients of other accounts and regions, by (role, region, app).
    remote: Mutex<HashMap<RemoteKey, Reach>>,
    revisions: RevisionCache,
    /// What this process does (the function's name, or `conveyor` for the CLI): names
    /// assumed-role sessions.
    operation: String,
    /// People read other accounts' targets through the read-only role beside the target's
    /// ([`read_role`]), never through the roles that deploy ([`Fleet::reading`]).
    read_only: bool,
}

/// The read-only role beside a target's role: `conveyor-{stack}-stage` and `conveyor-{stack}-prod`
/// → `conveyor-{stack}-read` (`infra/target-account.yaml`'s names); a role named otherwise is
/// kept as it is.
pub fn read_role(role_arn: &str) -> String {
    match role_arn.rsplit_once('-') {
        Some((stem, "stage" | "prod")) if stem.contains(":role/conveyor-") => format!("{stem}-read"),
        _ => role_arn.to_owned(),
    }
}

impl Fleet {
    pub fn new(config: &aws_config::SdkConfig, operation: impl Into<String>) -> Self {
        Fleet {
            home: Reach::new(config),
            config: config.clone(),
            remote: Mutex::default(),
            revisions: RevisionCache::default(),
            operation: operation.into(),
            read_only: false,
        }
    }

    /// A fleet for people (the CLI): other accounts' targets are read through their read-only
    /// role (`conveyor-{stack}-read`, which the target-account stack creates for the operators it
    /// names), since the roles that deploy trust only Conveyor's functions.
    pub fn reading(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The role this fleet works with for a target's `role_arn`.
    pub fn role_for(&self, role_arn: &str) -> String {
        if self.read_only {
            read_role(role_arn)
        } else {
            role_arn.to_owned()
        }
    }

    /// The account and region Conveyor runs in, as far as this invocation knows.
    pub fn home(&self, invocation: &Invocation) -> Home {
        Home { account: invocation.account.clone(), region: self.config.region().map(|r| r.as_ref().to_owned()) }
    }

    /// ECS where `app` runs in `env`: Conveyor's own client, or one working in the target's
    /// account and region with the target's role, assumed in a session named after the app and
    /// this process (CloudTrail in that account says who did what), with credentials cached and
    /// refreshed before they expire. Builds a client, calls nothing.
    pub async fn target<'a>(&'a self, app: &AppConfig, target: &'a ServiceTarget) -> Target<'a> {
        if target.role_arn.is_none() && target.region.is_none() {
            let Reach { ecs, alarms } = self.home.clone();
            return Target { ecs, alarms, revisions: &self.revisions, service: target };
        }
        let role = target.role_arn.as_deref().map(|arn| self.role_for(arn));
        let key = (role, target.region.clone(), app.name.to_string());
        let known = self.remote.lock().ok().and_then(|clients| clients.get(&key).cloned());
        let Reach { ecs, alarms } = match known {
            Some(reach) => reach,
            None => {
                let session = format!("{}-{}", app.name, self.operation);
                let reach = self.elsewhere(key.0.as_deref(), target.region.as_deref(), &session).await;
                if let Ok(mut clients) = self.remote.lock() {
                    clients.insert(key, reach.clone());
                }
                reach
            }
        };
        Target { ecs, alarms, revisions: &self.revisions, service: target }
    }

    /// Clients for another region, and (with `role_arn`) another account: every call made with
    /// the role's credentials, assumed in a session named `conveyor-{session}`.
    async fn elsewhere(&self, role_arn: Option<&str>, region: Option<&str>, session: &str) -> Reach {
        Reach::new(&self.config_for(role_arn, region, session).await)
    }

    /// The SDK settings for another region, and (with `role_arn`) another account, as
    /// [`Fleet::target`]'s clients have them: for a client of another service there (`conveyor
    /// doctor`'s look at a target account's forwarding rules).
    pub async fn config_for(
        &self,
        role_arn: Option<&str>,
        region: Option<&str>,
        session: &str,
    ) -> aws_config::SdkConfig {
        let mut config = self.config.to_builder();
        if let Some(region) = region {
            config = config.region(aws_config::Region::new(region.to_owned()));
        }
        if let Some(role) = role_arn {
            let session: String = format!("conveyor-{session}")
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || "=,.@-".contains(c) { c } else { '-' })
                .take(64)
                .collect();
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name(session)
                .configure(&self.config)
                .build()
                .await;
            config = config.credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(provider));
        }
        config.build()
    }

    /// An ECR client for a region (the registry an image was pushed to).
    pub fn ecr_in(&self, region: &str) -> aws_sdk_ecr::Client {
        let mut config = self.config.to_builder();
        if self.config.region().is_none_or(|home| home.as_ref() != region) {
            config = config.region(aws_config::Region::new(region.to_owned()));
        }
        aws_sdk_ecr::Client::new(&config.build())
    }
}

/// ECS where one environment of one app runs, with the revisions this process already knows.
#[derive(Clone)]
pub struct Target<'a> {
    pub ecs: Ecs,
    /// CloudWatch there: the environment's alarms live in the target's account and region.
    pub alarms: Alarms,
    revisions: &'a RevisionCache,
    /// The service there, as the app's config names it.
    pub service: &'a ServiceTarget,
}

impl Target<'_> {
    /// A task-definition revision, from the cache when this process has seen it.
    pub async fn revision(&self, arn: &str) -> Result<Arc<Described>, AwsError> {
        if let Some(known) = self.revisions.get(arn) {
            return Ok(known);
        }
        Ok(self.revisions.keep(self.ecs.task_definition(arn).await?))
    }

    /// Remembers a revision just registered.
    pub fn keep(&self, described: Described) -> Arc<Described> {
        self.revisions.keep(described)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_read_through_the_read_role_beside_the_deploying_ones() {
        let prod = "arn:aws:iam::210987654321:role/conveyor-conveyor-prod";
        assert_eq!(read_role(prod), "arn:aws:iam::210987654321:role/conveyor-conveyor-read");
        assert_eq!(
            read_role("arn:aws:iam::2:role/conveyor-my-stack-stage"),
            "arn:aws:iam::2:role/conveyor-my-stack-read"
        );
        assert_eq!(read_role("arn:aws:iam::2:role/deployers"), "arn:aws:iam::2:role/deployers", "not Conveyor's: kept");
    }
}
