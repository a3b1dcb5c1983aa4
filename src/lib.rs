//! Conveyor: a serverless deployer for Amazon ECS.
//!
//! An ECR push deploys to stage ([`stage`]); deployment events are verified or rolled back;
//! vetted images are promoted to prod. Every decision lives in this library; the Lambda binaries
//! under `functions/` only build a [`Conveyor`] once and hand it each event.

pub mod aws;
pub mod config;
pub mod error;
pub mod events;
pub mod health;
pub mod image;
pub mod lease;
pub mod monitor;
pub mod notify;
pub mod promote;
pub mod releases;
pub mod rollout;
pub mod slack;
pub mod stage;
pub mod taskdef;
pub mod types;

pub use error::{DeployError, Error};

use aws::Clients;
use config::ConfigCache;
use notify::Notifier;
use releases::ReleaseStore;

/// Default root of Conveyor's SSM parameters.
pub const DEFAULT_PREFIX: &str = "/conveyor";

/// Everything an invocation needs, built once per cold start and reused while warm.
pub struct Conveyor {
    pub clients: Clients,
    pub prefix: String,
    pub config: ConfigCache,
    pub releases: ReleaseStore,
    pub notifier: Notifier,
    /// For health checks and Slack (rustls, connection pool kept warm).
    pub http: reqwest::Client,
    /// How long a `health_url` check may keep trying.
    pub health_budget: std::time::Duration,
}

impl Conveyor {
    pub fn new(clients: Clients, prefix: &str, topic_arn: Option<String>) -> Self {
        let prefix = prefix.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .user_agent(concat!("conveyor/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Conveyor {
            config: ConfigCache::new(&prefix, config::CACHE_TTL),
            releases: ReleaseStore::new(clients.ssm.clone(), &prefix),
            notifier: Notifier::new(clients.sns.clone(), clients.ssm.clone(), http.clone(), topic_arn),
            health_budget: health::DEFAULT_BUDGET,
            http,
            clients,
            prefix,
        }
    }

    /// Runs `work` holding the lease of `app` in `env` (one invocation per service at a time);
    /// the lease is released whatever `work` returns.
    pub async fn leased<T>(
        &self,
        app: &types::AppName,
        env: types::Environment,
        owner: &str,
        work: impl AsyncFnOnce() -> Result<T, DeployError>,
    ) -> Result<T, DeployError> {
        let lease = lease::Lease::acquire(&self.clients.ssm, &self.prefix, app, env, owner).await?;
        let result = work().await;
        lease.release().await;
        result
    }

    /// From the contract's environment variables (`CONVEYOR_SSM_PREFIX`, `CONVEYOR_TOPIC_ARN`)
    /// and the standard AWS SDK settings.
    pub async fn from_env() -> Self {
        let prefix = std::env::var("CONVEYOR_SSM_PREFIX").ok().filter(|p| !p.is_empty());
        let topic = std::env::var("CONVEYOR_TOPIC_ARN").ok().filter(|t| !t.is_empty());
        let mut conveyor = Conveyor::new(Clients::from_env().await, prefix.as_deref().unwrap_or(DEFAULT_PREFIX), topic);
        // Test and demo knob: a shorter health-check budget than the contract's 30 s.
        if let Some(seconds) = std::env::var("CONVEYOR_HEALTH_TIMEOUT_SECONDS").ok().and_then(|s| s.parse().ok()) {
            conveyor.health_budget = std::time::Duration::from_secs(seconds);
        }
        conveyor
    }
}
