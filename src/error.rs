//! The errors a Conveyor function can end with, and their `errorType` at the Lambda edge.

use lambda_runtime::Diagnostic;

use crate::aws::AwsError;
use crate::config::ConfigError;
use crate::events::InvalidEvent;
use crate::lease::LeaseError;
use crate::releases::ReleaseError;
use crate::types::AppName;

/// Why one app could not be deployed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeployError {
    #[error("task definition {task_definition} has no container `{container}` (it has: {found}); fix `container` in {parameter}")]
    ContainerNotFound { container: String, task_definition: String, found: String, parameter: String },
    #[error("cannot tell which ECR registry to deploy from: the event has no account and container `{container}` runs {image:?}, not an ECR image")]
    NoRegistry { container: String, image: String },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

impl DeployError {
    /// Whether a later attempt may succeed (Lambda's retry is worth it).
    pub fn retryable(&self) -> bool {
        match self {
            DeployError::Aws(aws)
            | DeployError::Release(ReleaseError::Aws(aws))
            | DeployError::Lease(LeaseError::Aws(aws)) => aws.retryable,
            DeployError::Lease(LeaseError::Busy { .. }) => true,
            DeployError::ContainerNotFound { .. }
            | DeployError::NoRegistry { .. }
            | DeployError::Release(ReleaseError::Corrupt { .. }) => false,
        }
    }
}

/// How an invocation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidEvent(#[from] InvalidEvent),
    /// A promote request that is not well-formed.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    UnknownApp(String),
    /// Refused: stage never vetted it, or it failed since.
    #[error("{0}")]
    NotVetted(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Aws(#[from] AwsError),
    /// Some apps failed (the others were handled): the invocation fails so that Lambda retries,
    /// and the retry skips what already succeeded.
    #[error("{}", summarize(.0))]
    Deploy(Vec<(AppName, DeployError)>),
}

fn summarize(failures: &[(AppName, DeployError)]) -> String {
    let parts: Vec<String> = failures.iter().map(|(app, error)| format!("{app}: {error}")).collect();
    format!("{} app(s) failed: {}", failures.len(), parts.join("; "))
}

impl Error {
    /// The Lambda `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidEvent(_) => "InvalidEvent",
            Error::InvalidRequest(_) => "InvalidRequest",
            Error::UnknownApp(_) => "UnknownApp",
            Error::NotVetted(_) => "NotVetted",
            Error::Config(_) => "ConfigError",
            Error::Aws(_) => "AwsError",
            Error::Deploy(_) => "DeployFailed",
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(error: Error) -> Diagnostic {
        Diagnostic { error_type: error.error_type().to_owned(), error_message: error.to_string() }
    }
}
