//! Conveyor: a serverless deployer for Amazon ECS.
//!
//! An ECR push deploys to stage ([`stage`]); deployment events are verified or rolled back;
//! vetted images are promoted to prod. Every decision lives in this library; the Lambda binaries
//! under `functions/` only build a [`Conveyor`] once and hand it each event.

pub mod aws;
pub mod config;
pub mod error;
pub mod events;
pub mod image;
pub mod lease;
pub mod notify;
pub mod releases;
pub mod rollout;
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
}

impl Conveyor {
    pub fn new(clients: Clients, prefix: &str, topic_arn: Option<String>) -> Self {
        let prefix = prefix.trim_end_matches('/').to_owned();
        Conveyor {
            config: ConfigCache::new(&prefix, config::CACHE_TTL),
            releases: ReleaseStore::new(clients.ssm.clone(), &prefix),
            notifier: Notifier::new(clients.sns.clone(), topic_arn),
            clients,
            prefix,
        }
    }

    /// From the contract's environment variables (`CONVEYOR_SSM_PREFIX`, `CONVEYOR_TOPIC_ARN`)
    /// and the standard AWS SDK settings.
    pub async fn from_env() -> Self {
        let prefix = std::env::var("CONVEYOR_SSM_PREFIX").ok().filter(|p| !p.is_empty());
        let topic = std::env::var("CONVEYOR_TOPIC_ARN").ok().filter(|t| !t.is_empty());
        Conveyor::new(Clients::from_env().await, prefix.as_deref().unwrap_or(DEFAULT_PREFIX), topic)
    }
}
