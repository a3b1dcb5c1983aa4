//! Why a command did not get done, and the exit code that says so.

use std::str::FromStr;

use conveyor::aws::source_chain;
use conveyor::error::ErrorType;
use conveyor::ledger::LedgerError;

/// `0` done (with `--wait`: verified).
pub const DONE: u8 = 0;
/// `1` refused, or invalid input.
pub const REFUSED: u8 = 1;
/// `2` rolled back or failed.
pub const ROLLED_BACK: u8 = 2;
/// `3` timed out waiting.
pub const TIMED_OUT: u8 = 3;
/// `4` AWS or configuration error.
pub const AWS_OR_CONFIG: u8 = 4;

/// A command that ended without doing its job: what kind of failure, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CliError {
    pub exit_code: u8,
    /// `InvalidInput`, `NotVetted`, `Paused`, `UnknownApp`, `AwsError`, `ConfigError`, ...
    pub kind: String,
    pub message: String,
}

impl CliError {
    pub fn new(exit_code: u8, kind: impl Into<String>, message: impl Into<String>) -> Self {
        CliError { exit_code, kind: kind.into(), message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        CliError::new(REFUSED, "InvalidInput", message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        CliError::new(AWS_OR_CONFIG, "ConfigError", message)
    }

    /// A failed AWS call (the SDK's whole error chain in the message).
    pub fn aws(operation: &str, error: impl std::error::Error) -> Self {
        CliError::new(AWS_OR_CONFIG, "AwsError", format!("{operation} failed: {}", source_chain(&error)))
    }

    /// A function error of the promote (or stage-deploy) function, by its `errorType`: a refusal
    /// is `1`; a busy service, an AWS or configuration problem (and anything unexpected) is `4`.
    pub fn function(error_type: &str, message: &str) -> Self {
        let refused = ErrorType::from_str(error_type).is_ok_and(ErrorType::is_refusal);
        CliError::new(if refused { REFUSED } else { AWS_OR_CONFIG }, error_type, message)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "type": self.kind, "message": self.message, "exit_code": self.exit_code } })
    }
}

impl From<LedgerError> for CliError {
    fn from(error: LedgerError) -> Self {
        let kind = if matches!(error, LedgerError::Busy { .. }) { "Busy" } else { "AwsError" };
        CliError::new(AWS_OR_CONFIG, kind, format!("state table: {error}"))
    }
}

impl From<conveyor::aws::AwsError> for CliError {
    fn from(error: conveyor::aws::AwsError) -> Self {
        CliError::new(AWS_OR_CONFIG, "AwsError", error.to_string())
    }
}

impl From<conveyor::Error> for CliError {
    fn from(error: conveyor::Error) -> Self {
        CliError::function(error.error_type().as_str(), &error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_errors_map_to_the_contracts_exit_codes() {
        for refused in ["NotVetted", "Paused", "InvalidRequest", "UnknownApp"] {
            assert_eq!(CliError::function(refused, "m").exit_code, REFUSED, "{refused}");
        }
        for broken in ["Busy", "AwsError", "ConfigError", "DeployFailed", "Runtime.ExitError"] {
            assert_eq!(CliError::function(broken, "m").exit_code, AWS_OR_CONFIG, "{broken}");
        }
        let json = CliError::function("NotVetted", "never vetted").json();
        assert_eq!(json["error"]["type"], "NotVetted");
        assert_eq!(json["error"]["exit_code"], 1);
    }
}
