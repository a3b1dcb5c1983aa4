//! Thin adapters over the AWS SDK clients. They map SDK shapes into Conveyor's own types once,
//! here, and every SDK error into [`AwsError`], which keeps what a caller must know to act on it:
//! may a retry help, and did the request certainly not take effect.

mod ecs;
mod raw;
mod sns;
mod ssm;

pub use ecs::{
    is_inactive_revision, Deployment, DeploymentStatus, Described, Ecs, RegisterError, ServiceState, Unmodeled,
};
pub use raw::RawCapture;
pub use sns::Sns;
pub use ssm::{Parameter, Ssm};

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};

/// A failed AWS call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed: {code}: {message}")]
pub struct AwsError {
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    /// Throttling, a 5xx, a timeout or a network failure: trying again later may succeed.
    pub retryable: bool,
    /// The service answered with a 4xx (throttling included), so the request certainly changed
    /// nothing. After a 5xx, a timeout or a broken connection it may have taken effect: the
    /// response can be lost after the service applied the call.
    pub rejected: bool,
}

/// Error codes that mean "slow down": the SDK's own list, the one its retry classifier uses.
const THROTTLING: &[&str] = aws_runtime::retries::classifiers::THROTTLING_ERRORS;

impl AwsError {
    /// An error Conveyor raises itself about an answer it cannot use (never retryable).
    pub fn new(operation: &'static str, code: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError { operation, code: code.into(), message: message.into(), retryable: false, rejected: true }
    }

    pub fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        match &error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                let code = inner.code().unwrap_or("Unknown").to_owned();
                let status = service.raw().status_code();
                let throttled = THROTTLING.contains(&code.as_str());
                AwsError {
                    operation,
                    message: inner.message().unwrap_or_default().to_owned(),
                    retryable: throttled || status >= 500,
                    rejected: (400..500).contains(&status),
                    code,
                }
            }
            SdkError::ConstructionFailure(_) => AwsError {
                operation,
                code: "ConstructionFailure".into(),
                message: source_chain(&error),
                retryable: false,
                rejected: true,
            },
            SdkError::TimeoutError(_) => AwsError {
                operation,
                code: "Timeout".into(),
                message: source_chain(&error),
                retryable: true,
                rejected: false,
            },
            _ => AwsError {
                operation,
                code: if matches!(error, SdkError::DispatchFailure(_)) { "DispatchFailure" } else { "ResponseError" }
                    .into(),
                message: source_chain(&error),
                retryable: true,
                rejected: false,
            },
        }
    }

    /// A throttling answer (not applied, worth retrying after a pause).
    pub fn is_throttling(&self) -> bool {
        THROTTLING.contains(&self.code.as_str())
    }
}

/// The HTTP status of a raw response, whatever the SDK's response type.
pub trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// An error and every error under it, `: `-separated (the SDK's own `Display` says only the top).
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Every AWS client Conveyor uses, built once per cold start from the standard SDK settings
/// (region, credentials, `AWS_ENDPOINT_URL`).
#[derive(Clone)]
pub struct Clients {
    pub ecs: Ecs,
    pub ssm: Ssm,
    pub sns: Sns,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub ecr: aws_sdk_ecr::Client,
    /// The SDK settings the clients were built from (cross-account clients start from them).
    pub config: aws_config::SdkConfig,
}

impl Clients {
    /// An ECS client for another region, and (with `role_arn`) another account: every call made
    /// with the role's credentials, assumed in a session named `conveyor-{session}`.
    pub async fn elsewhere(&self, role_arn: Option<&str>, region: Option<&str>, session: &str) -> Ecs {
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
        Ecs::new(aws_sdk_ecs::Client::new(&config.build()))
    }

    /// An ECR client for a region (the registry an image was pushed to).
    pub fn ecr_in(&self, region: &str) -> aws_sdk_ecr::Client {
        if self.config.region().is_some_and(|home| home.as_ref() == region) {
            return self.ecr.clone();
        }
        aws_sdk_ecr::Client::new(&self.config.to_builder().region(aws_config::Region::new(region.to_owned())).build())
    }

    pub async fn from_env() -> Self {
        Clients::from_config(&aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await)
    }

    /// Clients with Conveyor's retry policy: six attempts with exponential backoff from 0.2 s to
    /// at most 5 s (a call throttled throughout gives up after about 6 s, well inside the
    /// functions' timeouts, and the invocation is retried by Lambda; the adaptive mode's client-side
    /// rate limiter was measured to keep one call retrying for 90 s), except for SNS: a
    /// notification that cannot go out stays in the outbox and is sent later, so an outage of SNS
    /// must not slow every deployment down.
    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(6)
            .with_initial_backoff(std::time::Duration::from_millis(200))
            .with_max_backoff(std::time::Duration::from_secs(5));
        let config = config.to_builder().retry_config(retry).build();
        let sns_config = aws_sdk_sns::config::Builder::from(&config)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
            .build();
        Clients {
            ecs: Ecs::new(aws_sdk_ecs::Client::new(&config)),
            ssm: Ssm { client: aws_sdk_ssm::Client::new(&config) },
            sns: Sns { client: aws_sdk_sns::Client::from_conf(sns_config) },
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            ecr: aws_sdk_ecr::Client::new(&config),
            config,
        }
    }
}
