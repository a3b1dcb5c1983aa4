//! Conveyor: a serverless deployer for Amazon ECS.
//!
//! An ECR push deploys to stage ([`stage`]); deployment events are verified or rolled back
//! ([`monitor`]); vetted images are promoted to prod ([`promote`]). Every decision lives in this
//! library; the Lambda binaries under `functions/` only build a [`Conveyor`] once and hand it each
//! event. What Conveyor knows is kept in one DynamoDB table ([`ledger`]).

pub mod announce;
pub mod aws;
pub mod config;
pub mod error;
pub mod events;
pub mod health;
pub mod image;
pub mod ledger;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod ops;
pub mod pause;
pub mod promote;
pub mod record;
pub mod rollout;
pub mod slack;
pub mod stage;
pub mod start;
pub mod taskdef;
pub mod types;
pub mod vocabulary;

pub use error::{DeployError, Error};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use aws::{AwsError, Clients, Described, Ecs};
use config::{ConfigCache, ServiceTarget};
use ledger::{Held, Lease, LeasedState, Ledger, LedgerError};
use notify::Notifier;

/// Default root of Conveyor's SSM parameters.
pub const DEFAULT_PREFIX: &str = "/conveyor";
/// How long a lease outlives its holder's deadline: a live holder never loses it, a dead one
/// frees it soon after Lambda gave up on it.
pub const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// What the Lambda runtime tells an invocation about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// When Lambda stops the invocation.
    pub deadline: DateTime<Utc>,
    /// The caller's identity, when Lambda provides one (Cognito).
    pub identity: Option<String>,
    /// The account the function runs in (from its ARN).
    pub account: Option<String>,
}

impl Invocation {
    pub fn from_context(context: &lambda_runtime::Context) -> Self {
        Invocation {
            deadline: DateTime::from_timestamp_millis(context.deadline as i64).unwrap_or_else(Utc::now),
            identity: context.identity.as_ref().map(|identity| identity.identity_id.clone()),
            account: context.invoked_function_arn.split(':').nth(4).filter(|a| !a.is_empty()).map(str::to_owned),
        }
    }

    /// An invocation that may run for `budget` from now (tests, the CLI).
    pub fn lasting(budget: Duration) -> Self {
        Invocation { deadline: Utc::now() + budget, identity: None, account: None }
    }

    /// When a lease taken by this invocation expires.
    pub fn lease_until(&self) -> DateTime<Utc> {
        self.deadline + LEASE_MARGIN
    }

    /// Time left before the deadline, keeping `reserve` for the work after.
    pub fn remaining(&self, reserve: Duration) -> Duration {
        (self.deadline - Utc::now()).to_std().unwrap_or_default().saturating_sub(reserve)
    }
}

/// Where a Conveyor installation keeps things (the contract's environment variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub prefix: String,
    pub topic_arn: Option<String>,
    pub table: String,
}

/// A missing or invalid setting: the function cannot start.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// From `CONVEYOR_SSM_PREFIX`, `CONVEYOR_TOPIC_ARN` and `CONVEYOR_TABLE` (required).
    pub fn from_env() -> Result<Self, SettingsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let table = var("CONVEYOR_TABLE").ok_or_else(|| {
            SettingsError("CONVEYOR_TABLE is not set: it names the DynamoDB table holding Conveyor's state".into())
        })?;
        Ok(Settings {
            prefix: var("CONVEYOR_SSM_PREFIX").unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
            topic_arn: var("CONVEYOR_TOPIC_ARN"),
            table,
        })
    }
}

/// The test and demo knob `CONVEYOR_HEALTH_TIMEOUT_SECONDS` (a shorter health-check budget than
/// the contract's 30 s): unset or empty means the default; anything but whole seconds stops the
/// function at start rather than being silently ignored.
fn health_budget(value: Option<&str>) -> Result<Option<Duration>, SettingsError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    value.parse().map(|seconds| Some(Duration::from_secs(seconds))).map_err(|_| {
        SettingsError(format!("CONVEYOR_HEALTH_TIMEOUT_SECONDS is {value:?}: it must be a whole number of seconds"))
    })
}

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

/// Everything an invocation needs, built once per cold start and reused while warm.
pub struct Conveyor {
    pub clients: Clients,
    pub prefix: String,
    pub config: ConfigCache,
    pub ledger: Ledger,
    pub notifier: Notifier,
    /// For health checks and Slack (rustls, connection pool kept warm).
    pub http: reqwest::Client,
    /// How long a `health_url` check may keep trying.
    pub health_budget: Duration,
    pub revisions: RevisionCache,
    /// Invalid config versions this instance has already seen announced (saves a write per push).
    mentioned: Mutex<std::collections::HashSet<(String, i64)>>,
    /// ECS clients of other accounts and regions, by (role, region).
    remote: Mutex<std::collections::HashMap<RemoteKey, Ecs>>,
    /// What this process does (the function's name, or `conveyor` for the CLI): names
    /// assumed-role sessions.
    pub operation: String,
}

impl Conveyor {
    pub fn new(clients: Clients, settings: Settings) -> Self {
        let prefix = settings.prefix.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .user_agent(concat!("conveyor/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Conveyor {
            config: ConfigCache::new(&prefix, config::CACHE_TTL),
            ledger: Ledger::new(clients.dynamodb.clone(), settings.table),
            notifier: Notifier::new(clients.sns.clone(), clients.ssm.clone(), http.clone(), settings.topic_arn),
            health_budget: health::DEFAULT_BUDGET,
            revisions: RevisionCache::default(),
            mentioned: Mutex::default(),
            remote: Mutex::default(),
            operation: std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "conveyor".into()),
            http,
            clients,
            prefix,
        }
    }

    /// From the contract's environment variables and the standard AWS SDK settings.
    pub async fn from_env() -> Result<Self, SettingsError> {
        let settings = Settings::from_env()?;
        let mut conveyor = Conveyor::new(Clients::from_env().await, settings);
        if let Some(budget) = health_budget(std::env::var("CONVEYOR_HEALTH_TIMEOUT_SECONDS").ok().as_deref())? {
            conveyor.health_budget = budget;
        }
        Ok(conveyor)
    }

    /// The account and region Conveyor runs in, as far as this invocation knows.
    pub fn home(&self, invocation: &Invocation) -> config::Home {
        config::Home {
            account: invocation.account.clone(),
            region: self.clients.config.region().map(|r| r.as_ref().to_owned()),
        }
    }

    /// The ECS client for an app's service in `env`: Conveyor's own, or one working in the
    /// target's account and region with the target's role, assumed in a session named after the
    /// app and this function (CloudTrail in that account says who did what), with credentials
    /// cached and refreshed before they expire.
    pub async fn ecs(&self, app: &config::AppConfig, env: types::Environment) -> Result<Ecs, AwsError> {
        let target: &ServiceTarget = app.target(env);
        if target.role_arn.is_none() && target.region.is_none() {
            return Ok(self.clients.ecs.clone());
        }
        let key = (target.role_arn.clone(), target.region.clone(), app.name.to_string());
        if let Some(ecs) = self.remote.lock().ok().and_then(|clients| clients.get(&key).cloned()) {
            return Ok(ecs);
        }
        let session = format!("{}-{}", app.name, self.operation);
        let ecs = self.clients.elsewhere(target.role_arn.as_deref(), target.region.as_deref(), &session).await;
        if let Ok(mut clients) = self.remote.lock() {
            clients.insert(key, ecs.clone());
        }
        Ok(ecs)
    }

    /// A task-definition revision, from the cache when this instance has seen it.
    pub async fn revision(&self, ecs: &Ecs, arn: &str) -> Result<Arc<Described>, AwsError> {
        if let Some(known) = self.revisions.get(arn) {
            return Ok(known);
        }
        Ok(self.revisions.keep(ecs.task_definition(arn).await?))
    }

    /// `true` the first time this instance meets an invalid config's version.
    pub fn first_mention(&self, parameter: &str, version: i64) -> bool {
        self.mentioned.lock().map(|mut seen| seen.insert((parameter.to_owned(), version))).unwrap_or(true)
    }

    /// Forgets a mention whose announcement did not happen (the next one tries again).
    pub fn forget_mention(&self, parameter: &str, version: i64) {
        if let Ok(mut seen) = self.mentioned.lock() {
            seen.remove(&(parameter.to_owned(), version));
        }
    }

    /// Takes `lease`, runs `work` under it, then, whatever `work` returned: emits the metric of
    /// each transition it committed, delivers the outbox and releases the lease. The one way a
    /// flow works under a lease, so that none forgets to announce or to release.
    pub async fn with_lease<S, T, E>(
        &self,
        lease: Lease<'_>,
        work: impl AsyncFnOnce(&mut Held<S>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        S: LeasedState,
        E: From<LedgerError>,
    {
        let mut held = self.ledger.acquire(lease).await?;
        let result = work(&mut held).await;
        for transition in held.committed() {
            metrics::transition(transition);
        }
        let deliveries = self.notifier.deliver(&held.outbox).await;
        held.release(&self.ledger, &deliveries).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_budget_that_does_not_parse_stops_the_start() {
        assert_eq!(health_budget(None).unwrap(), None);
        assert_eq!(health_budget(Some(" ")).unwrap(), None);
        assert_eq!(health_budget(Some("5")).unwrap(), Some(Duration::from_secs(5)));
        for bad in ["5s", "-1", "1.5", "five"] {
            let error = health_budget(Some(bad)).unwrap_err();
            assert!(error.0.contains("CONVEYOR_HEALTH_TIMEOUT_SECONDS"), "{error}");
        }
    }
}
