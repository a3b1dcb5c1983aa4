//! Thin adapters over the AWS SDK clients. They map SDK shapes into Conveyor's own types once,
//! here, and every SDK error into [`AwsError`], which keeps what a caller must know to act on it:
//! may a retry help, and did the request certainly not take effect.

mod cloudwatch;
mod ecs;
pub mod http;
mod raw;
mod service_deployments;
mod sns;
mod ssm;
mod sts;

pub use cloudwatch::{AlarmReading, Alarms};
pub use ecs::{
    is_inactive_revision, Deployment, DeploymentStatus, Described, Ecs, RegisterError, ServiceSetup, ServiceState,
    Unmodeled,
};
pub use raw::RawCapture;
pub use service_deployments::{AwaitingHook, InFlight, NativeDeployment, ECS_ROLLED_BACK};
pub use sns::Sns;
pub use ssm::{Parameter, Ssm};
pub use sts::Callers;

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

/// The standard SDK settings (region, credentials, `AWS_ENDPOINT_URL`), every client of the
/// process on one HTTP client ([`http::shared_client`]).
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http::shared_client()).load().await
}

/// `config` with Conveyor's retry policy: six attempts with exponential backoff from 0.2 s to at
/// most 5 s (a call throttled throughout gives up after about 6 s, well inside the functions'
/// timeouts, and the invocation is retried by Lambda; the adaptive mode's client-side rate
/// limiter was measured to keep one call retrying for 90 s). SNS has its own ([`Sns::new`]).
pub fn with_retries(config: &aws_config::SdkConfig) -> aws_config::SdkConfig {
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(6)
        .with_initial_backoff(std::time::Duration::from_millis(200))
        .with_max_backoff(std::time::Duration::from_secs(5));
    config.to_builder().retry_config(retry).build()
}
