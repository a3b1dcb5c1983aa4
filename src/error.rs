//! The errors a Conveyor function can end with, and their `errorType` at the Lambda edge.

use lambda_runtime::Diagnostic;

use crate::aws::AwsError;
use crate::config::ConfigError;
use crate::events::InvalidEvent;
use crate::ledger::LedgerError;
use crate::types::AppName;

/// Why one app could not be deployed (or settled).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeployError {
    #[error("task definition {task_definition} has no container `{container}` (it has: {found}); fix `container` in {parameter}")]
    ContainerNotFound { container: String, task_definition: String, found: String, parameter: String },
    #[error("cannot tell which ECR registry to deploy from: the event has no account and container `{container}` runs {image:?}, not an ECR image")]
    NoRegistry { container: String, image: String },
    /// The service's task definition has members this build cannot copy.
    #[error("task definition {arn} has members this Conveyor build does not know ({}): registering a copy would silently drop them; upgrade Conveyor before deploying this service", .members.join(", "))]
    Unmodeled { arn: String, members: Vec<String> },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl DeployError {
    /// Whether a later attempt may succeed (Lambda's retry is worth it).
    pub fn retryable(&self) -> bool {
        match self {
            DeployError::Aws(aws) => aws.retryable,
            DeployError::Ledger(ledger) => ledger.retryable(),
            DeployError::ContainerNotFound { .. } | DeployError::NoRegistry { .. } | DeployError::Unmodeled { .. } => {
                false
            }
        }
    }

    /// A problem with the app's configuration or its task definition, which people must fix.
    pub fn needs_people(&self) -> bool {
        matches!(
            self,
            DeployError::ContainerNotFound { .. } | DeployError::NoRegistry { .. } | DeployError::Unmodeled { .. }
        )
    }
}

impl From<crate::aws::RegisterError> for DeployError {
    fn from(error: crate::aws::RegisterError) -> Self {
        match error {
            crate::aws::RegisterError::Aws(aws) => DeployError::Aws(aws),
            crate::aws::RegisterError::Unmodeled { arn, members } => DeployError::Unmodeled { arn, members },
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
    /// Refused: stage never vetted it, or it failed somewhere.
    #[error("{0}")]
    NotVetted(String),
    /// Refused: the environment is paused.
    #[error("{0}")]
    Paused(String),
    /// Another operation holds the service; retry.
    #[error("{0}")]
    Busy(String),
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
            Error::Paused(_) => "Paused",
            Error::Busy(_) => "Busy",
            Error::Config(_) => "ConfigError",
            Error::Aws(_) => "AwsError",
            Error::Deploy(_) => "DeployFailed",
        }
    }
}

impl From<LedgerError> for Error {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Aws(aws) => Error::Aws(aws),
            LedgerError::Busy { .. } => Error::Busy(error.to_string()),
            other => Error::Aws(AwsError {
                operation: "StateTable",
                code: "StateConflict".into(),
                message: other.to_string(),
                retryable: other.retryable(),
                rejected: false,
            }),
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(error: Error) -> Diagnostic {
        Diagnostic { error_type: error.error_type().to_owned(), error_message: error.to_string() }
    }
}
