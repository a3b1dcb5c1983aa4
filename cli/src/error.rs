//! Why a command did not get done, and the exit code that says so.

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
        let mut message = format!("{operation} failed: {error}");
        let mut source = error.source();
        while let Some(inner) = source {
            message.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        CliError::new(AWS_OR_CONFIG, "AwsError", message)
    }

    /// A function error of the promote (or stage-deploy) function, by its `errorType`: a refusal
    /// is `1`; a busy service, an AWS or configuration problem (and anything unexpected) is `4`.
    pub fn function(error_type: &str, message: &str) -> Self {
        let exit_code = match error_type {
            "NotVetted" | "Paused" | "InvalidRequest" | "UnknownApp" => REFUSED,
            _ => AWS_OR_CONFIG,
        };
        CliError::new(exit_code, error_type, message)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "type": self.kind, "message": self.message, "exit_code": self.exit_code } })
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
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
        CliError::function(error.error_type(), &error.to_string())
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
