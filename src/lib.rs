//! Conveyor: a serverless deployer for Amazon ECS.
//!
//! An ECR push deploys to stage ([`stage`]); deployment events are verified or rolled back
//! ([`monitor`]); vetted images are promoted to prod ([`promote`]); native ECS deployments
//! (blue/green, linear, canary) ask the lifecycle hook ([`hook`]) before production traffic moves. Every decision lives in this
//! library; the Lambda binaries under `functions/` only build the ports once ([`Conveyor`]) and
//! hand each event to its flow, which takes only the ports it uses: the app configs
//! ([`config::Configs`]), ECS per target ([`fleet::Fleet`]), the state table ([`ledger::Ledger`],
//! one DynamoDB table), the notifier ([`notify::Notifier`]) and the health prober
//! ([`health::Prober`]).

pub mod announce;
pub mod approval;
pub mod auto;
pub mod aws;
pub mod cleanup;
pub mod config;
pub mod decide;
pub mod error;
pub mod events;
pub mod fleet;
pub mod health;
pub mod hook;
pub mod identity;
pub mod image;
pub mod inflight;
pub mod leased;
pub mod ledger;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod operate;
pub mod ops;
pub mod pause;
pub mod promote;
pub mod pull;
pub mod record;
pub mod rollout;
pub mod slack;
pub mod stage;
pub mod start;
pub mod taskdef;
pub mod types;
pub mod vocabulary;
pub mod wave;
pub mod web;

#[cfg(test)]
mod fixtures;

pub use error::{DeployError, Error};

use std::time::Duration;

use chrono::{DateTime, Utc};

use aws::{Sns, Ssm};
use config::Configs;
use fleet::Fleet;
use health::Prober;
use leased::Leases;
use ledger::Ledger;
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
    /// The caller's identity as AWS verified it, when Lambda provides one (a Cognito identity):
    /// what Conveyor records as who asked ([`types::Requester`]).
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
    /// Which endpoints health checks and Slack webhooks may reach (`CONVEYOR_ALLOW_LOCAL_ENDPOINTS`).
    pub endpoints: web::Endpoints,
}

/// A missing or invalid setting: the function cannot start.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// From `CONVEYOR_SSM_PREFIX`, `CONVEYOR_TOPIC_ARN`, `CONVEYOR_TABLE` (required) and
    /// `CONVEYOR_ALLOW_LOCAL_ENDPOINTS` (tests and the local playground only).
    pub fn from_env() -> Result<Self, SettingsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let table = var("CONVEYOR_TABLE").ok_or_else(|| {
            SettingsError("CONVEYOR_TABLE is not set: it names the DynamoDB table holding Conveyor's state".into())
        })?;
        Ok(Settings {
            prefix: var("CONVEYOR_SSM_PREFIX").unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
            topic_arn: var("CONVEYOR_TOPIC_ARN"),
            table,
            endpoints: web::Endpoints::from_variable(var(web::LOCAL_ENDPOINTS_VARIABLE).as_deref())
                .map_err(SettingsError)?,
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

/// What a Lambda function (or the CLI) works with, each part built once per cold start and
/// reused while warm. A flow takes only the parts it uses: this is where they are built, not
/// something a flow receives.
pub struct Conveyor {
    pub configs: Configs,
    pub fleet: Fleet,
    pub ledger: Ledger,
    pub notifier: Notifier,
    pub prober: Prober,
    /// Checks identity proofs with STS ([`identity`]).
    pub callers: aws::Callers,
}

impl Conveyor {
    /// Every part from one SDK configuration (its HTTP client shared by every AWS client).
    pub fn new(config: &aws_config::SdkConfig, settings: Settings) -> Self {
        Conveyor::with_health_budget(config, settings, health::DEFAULT_BUDGET)
    }

    fn with_health_budget(config: &aws_config::SdkConfig, settings: Settings, health_budget: Duration) -> Self {
        let config = aws::with_retries(config);
        let ssm = Ssm::new(&config);
        let web = web::Web::new(settings.endpoints);
        Conveyor {
            configs: Configs::new(ssm.clone(), &settings.prefix, settings.endpoints),
            fleet: Fleet::new(&config, operation()),
            ledger: Ledger::from_config(&config, settings.table),
            notifier: Notifier::new(Sns::new(&config), ssm, web.clone(), settings.topic_arn),
            prober: Prober::new(web, health_budget),
            callers: aws::Callers::new(identity::sts_endpoint(
                config.region().map_or("us-east-1", |r| r.as_ref()),
                |name| std::env::var(name).ok(),
            )),
        }
    }

    /// From the contract's environment variables and the standard AWS SDK settings.
    pub async fn from_env() -> Result<Self, SettingsError> {
        let settings = Settings::from_env()?;
        let budget = health_budget(std::env::var("CONVEYOR_HEALTH_TIMEOUT_SECONDS").ok().as_deref())?;
        let budget = budget.unwrap_or(health::DEFAULT_BUDGET);
        Ok(Conveyor::with_health_budget(&aws::load_config().await, settings, budget))
    }

    /// Working under leases: the ledger and the notifier.
    pub fn leases(&self) -> Leases<'_> {
        Leases { ledger: &self.ledger, notifier: &self.notifier }
    }

    /// stage-deploy's handler ([`stage::handle`]).
    pub async fn stage(
        &self,
        payload: serde_json::Value,
        invocation: &Invocation,
    ) -> Result<stage::StageReport, Error> {
        stage::handle(&self.configs, &self.fleet, self.leases(), payload, invocation).await
    }

    /// deploy-monitor's handler ([`monitor::handle`]).
    pub async fn monitor(
        &self,
        payload: serde_json::Value,
        invocation: &Invocation,
    ) -> Result<monitor::MonitorReport, Error> {
        monitor::handle(&self.configs, &self.fleet, self.leases(), &self.prober, payload, invocation).await
    }

    /// The promote function's handler: a promotion, or a pause or resume of prod
    /// ([`operate::promote_function`]).
    pub async fn promote_function(
        &self,
        payload: serde_json::Value,
        invocation: &Invocation,
    ) -> Result<operate::Answer, Error> {
        operate::promote_function(&self.configs, &self.fleet, self.leases(), &self.callers, payload, invocation).await
    }

    /// stage-deploy's handler: an EventBridge event, or a pause or resume of stage
    /// ([`operate::stage_function`]).
    pub async fn stage_function(
        &self,
        payload: serde_json::Value,
        invocation: &Invocation,
    ) -> Result<operate::Answer, Error> {
        operate::stage_function(&self.configs, &self.fleet, self.leases(), &self.callers, payload, invocation).await
    }

    /// deploy-hook's handler: ECS's lifecycle hook ([`hook::handle`]); never an error.
    pub async fn hook(&self, payload: serde_json::Value, invocation: &Invocation) -> hook::HookResponse {
        hook::handle(&self.configs, &self.fleet, &self.ledger, &self.prober, payload, invocation).await
    }

    /// promote's handler ([`promote::handle`]).
    pub async fn promote(
        &self,
        payload: serde_json::Value,
        invocation: &Invocation,
    ) -> Result<promote::Response, Error> {
        promote::handle(&self.configs, &self.fleet, self.leases(), payload, invocation).await
    }
}

/// What this process does (the function's name, or `conveyor` for the CLI): names assumed-role
/// sessions.
fn operation() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "conveyor".into())
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
