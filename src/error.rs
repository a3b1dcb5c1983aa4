//! The errors a Conveyor function can end with, and their `errorType` at the Lambda edge.

use std::fmt;

use lambda_runtime::Diagnostic;

use crate::aws::{AwsError, Unmodeled};
use crate::config::ConfigError;
use crate::events::InvalidEvent;
use crate::ledger::{Failure, LedgerError, TagItem};
use crate::record::Pause;
use crate::types::{AppName, Environment, ImageDigest, ImageTag, InvalidValue};

/// Why one app could not be deployed (or settled).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeployError {
    #[error("task definition {task_definition} has no container `{container}` (it has: {found}); fix `container` in {parameter}")]
    ContainerNotFound { container: String, task_definition: String, found: String, parameter: String },
    /// Only outside Lambda (which tells a function its account): never taken from the event.
    #[error("cannot tell which ECR registry app {app}'s images come from: Conveyor's account is unknown here; name it in `registry` of {parameter}")]
    NoRegistry { app: AppName, parameter: String },
    /// The service's task definition has members this build cannot copy.
    #[error(transparent)]
    Unmodeled(#[from] Unmodeled),
    /// A record or request names an environment the app's config no longer (or never) had.
    #[error(transparent)]
    NoEnvironment(#[from] crate::config::NoSuchEnvironment),
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
            DeployError::ContainerNotFound { .. }
            | DeployError::NoRegistry { .. }
            | DeployError::Unmodeled(_)
            | DeployError::NoEnvironment(_) => false,
        }
    }

    /// A problem with the app's configuration or its task definition, which people must fix.
    pub fn needs_people(&self) -> bool {
        matches!(self, DeployError::ContainerNotFound { .. } | DeployError::Unmodeled(_))
    }
}

impl From<crate::aws::RegisterError> for DeployError {
    fn from(error: crate::aws::RegisterError) -> Self {
        match error {
            crate::aws::RegisterError::Aws(aws) => DeployError::Aws(aws),
            crate::aws::RegisterError::Unmodeled(unmodeled) => DeployError::Unmodeled(unmodeled),
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
    InvalidRequest(#[from] InvalidRequest),
    #[error("no app {app} (no parameter {parameter}); configured apps: {}", list_or_none(.known))]
    UnknownApp { app: AppName, parameter: String, known: Vec<AppName> },
    /// Refused: stage never vetted it, or it failed somewhere.
    #[error("{0}")]
    NotVetted(Box<NotVetted>),
    /// Refused: the environment is paused.
    #[error("{app} {environment} is paused since {} by {}: {}. Resume it first (`conveyor resume {app} --env {environment}`).", .pause.at.format("%Y-%m-%d %H:%M UTC"), .pause.requester(), .pause.reason)]
    Paused { app: AppName, environment: Environment, pause: Box<Pause> },
    /// The state table refused or failed: another operation holds the service ([`Error::error_type`]
    /// `Busy`, retry), or an AWS error.
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// An auto promotion found its target moved on since (see `promote::Request::unless_moved_since`).
    #[error("{app} {environment} had a rollout since the image was vetted: nothing to promote automatically")]
    Moved { app: AppName, environment: Environment },
    #[error("{0}")]
    Aws(#[from] AwsError),
    /// Refused for who is asking: an approval by its requester or by someone `approvers` does not
    /// name, or without an identity AWS verified.
    #[error("{0}")]
    NotAllowed(String),
    /// The request's identity proof could not be checked ([`crate::identity`]).
    #[error("{0}")]
    Identity(#[from] crate::identity::ProofError),
    /// Refused: the target's account may not pull the image from the registry it was pushed to;
    /// the repository policy (or replication) is what to change, not the app's config.
    #[error("{0}")]
    PullNotAllowed(Box<PullNotAllowed>),
    /// Some apps failed (the others were handled): the invocation fails so that Lambda retries,
    /// and the retry skips what already succeeded.
    #[error("{}", summarize(.0))]
    Deploy(Vec<(AppName, DeployError)>),
}

/// An environment's account that cannot pull the image from the repository it was pushed to:
/// neither the repository policy lets it, nor does ECR replicate the repository there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the repository policy of {repository} in account {registry_account} ({registry_region}) does not let account {account} pull its images, and ECR does not replicate it to {account} in {region}, where {environment} runs: add this statement to that repository policy — {statement} — or replicate the repository there; nothing was changed"
)]
pub struct PullNotAllowed {
    pub environment: Environment,
    pub repository: String,
    pub registry_account: String,
    pub registry_region: String,
    /// The environment's account and region.
    pub account: String,
    pub region: String,
    /// The policy statement that would let it pull.
    pub statement: serde_json::Value,
}

impl From<crate::config::NoSuchEnvironment> for Error {
    fn from(error: crate::config::NoSuchEnvironment) -> Self {
        Error::InvalidRequest(error.into())
    }
}

impl From<NotVetted> for Error {
    /// Boxed: a refusal carries what is promotable instead, and every `Result<_, Error>` would
    /// otherwise be that large.
    fn from(refusal: NotVetted) -> Self {
        Error::NotVetted(Box::new(refusal))
    }
}

fn list_or_none(known: &[AppName]) -> String {
    if known.is_empty() {
        "none".to_owned()
    } else {
        known.iter().map(AppName::as_str).collect::<Vec<_>>().join(", ")
    }
}

fn summarize(failures: &[(AppName, DeployError)]) -> String {
    let parts: Vec<String> = failures.iter().map(|(app, error)| format!("{app}: {error}")).collect();
    format!("{} app(s) failed: {}", failures.len(), parts.join("; "))
}

/// Why a request to a function (a promotion; a pause or a resume) is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error(r#"expected a JSON object such as {{"app": "shop-api", "tag": "v1.4.2"}}, got {got}"#)]
    NotAnObject { got: String },
    /// A member of the wrong type, or one that is not known (serde's own words).
    #[error("{0}")]
    Shape(String),
    #[error("{0}")]
    Value(#[from] InvalidValue),
    #[error("give either `tag` or `digest`, not both")]
    TagAndDigest,
    #[error("give the `tag` (or `digest`) to promote")]
    NoImage,
    #[error("`{field}` must be at most {limit} characters of text (no control characters)")]
    Text { field: &'static str, limit: usize },
    #[error("a pause needs a `reason` (it is shown in status, the history and the alert)")]
    NoReason,
    #[error("a rejection needs a `reason` (it is shown to the requester, in the history and the alert)")]
    NoRejectReason,
    #[error("`deploy_latest` rolls out the push held in an entry environment (stage); the others (prod) change only by promotion")]
    DeployLatestInProd,
    /// Each function changes its own environment only (stage-deploy stage, promote prod), so the
    /// roles of the two stay apart.
    #[error("{environment} is paused and resumed through the {function} function, not this one")]
    OtherFunction { environment: Environment, function: &'static str },
    #[error("app {app} has no single environment promoted by hand: give `to` (one of {into})")]
    WhichEnvironment { app: AppName, into: String },
    #[error("app {app} has several environments this function changes: give `environment` (one of {own})")]
    WhichOperatedEnvironment { app: AppName, own: String },
    #[error("{environment} is an entry environment: pushes roll out to it, nothing is promoted into it (promote into one of: {into})")]
    EntryEnvironment { environment: Environment, into: String },
    #[error("{app} {environment} takes no approvals (its config has no `approval: true`)")]
    NoApprovals { app: AppName, environment: Environment },
    #[error("no promotion into {app} {environment} awaits approval{}", .last.as_ref().map(|last| format!(" (the last request, {last})")).unwrap_or_default())]
    NothingToApprove { app: AppName, environment: Environment, last: Option<String> },
    #[error("approval {asked} is no longer pending: {app} {environment} now awaits approval {pending}")]
    OtherApproval { app: AppName, environment: Environment, asked: String, pending: String },
    #[error("ECS's pause hook {hook_id} of {app} {environment} no longer awaits action (the deployment went on, was rolled back or timed out): approval {approval_id} ended, nothing changed")]
    StaleHook { app: AppName, environment: Environment, hook_id: String, approval_id: String },
    #[error("the approval of {app} {environment} {tag} expired at {}: request the promotion again", .at.format("%Y-%m-%d %H:%M UTC"))]
    ApprovalExpired { app: AppName, environment: Environment, tag: ImageTag, at: chrono::DateTime<chrono::Utc> },
    /// The request names an environment the app does not have.
    #[error(transparent)]
    NoEnvironment(#[from] crate::config::NoSuchEnvironment),
}

/// The longest free text a user may give (a promotion's `reason` and `requested_by`, a pause's
/// reason): it is stored in the state table and shown in notifications.
pub const TEXT_LIMIT: usize = 256;

/// Free text from a user, trimmed (`None` when empty): at most [`TEXT_LIMIT`] characters and no
/// control characters (a newline would start a line of its own in a notification's markdown).
pub fn user_text(field: &'static str, value: Option<String>) -> Result<Option<String>, InvalidRequest> {
    let Some(value) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else { return Ok(None) };
    if value.chars().count() > TEXT_LIMIT || value.chars().any(char::is_control) {
        return Err(InvalidRequest::Text { field, limit: TEXT_LIMIT });
    }
    Ok(Some(value))
}

/// Why an image may not be promoted, with what may be instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotVetted {
    /// `image`: the tag or digest asked for.
    #[error("{app} {image} was never vetted in {environment}. {promotable}")]
    Never { app: AppName, environment: Environment, image: String, promotable: Promotable },
    #[error("{app} {digest} has no tag on record; promote it by tag")]
    Untagged { app: AppName, digest: ImageDigest },
    #[error("{app} {tag} ({digest}) failed in {environment} at {}: {}. A digest that failed anywhere is never promoted (`force` overrides, on your responsibility). {promotable}", .failure.at.to_rfc3339(), .failure.reason)]
    Failed {
        app: AppName,
        tag: ImageTag,
        digest: ImageDigest,
        environment: Environment,
        failure: Failure,
        promotable: Promotable,
    },
}

/// What can be promoted instead, newest first (part of a refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotable(pub Vec<TagItem>);

impl fmt::Display for Promotable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("No tag is promotable yet: push one and let stage verify it.");
        }
        let listed: Vec<String> = self
            .0
            .iter()
            .map(|t| format!("{} ({}, vetted {})", t.tag, t.digest.short(), t.vetted_at.format("%Y-%m-%d %H:%M UTC")))
            .collect();
        write!(f, "Promotable tags, newest first: {}.", listed.join(", "))
    }
}

/// A Lambda `errorType` (the contract's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display, strum::EnumString, strum::IntoStaticStr)]
pub enum ErrorType {
    InvalidEvent,
    InvalidRequest,
    UnknownApp,
    NotVetted,
    Paused,
    Busy,
    ConfigError,
    AwsError,
    DeployFailed,
    NotAllowed,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// A refusal: the request was understood and said no to (the caller must change something);
    /// every other error is a failure to act (AWS, configuration, a busy service).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            ErrorType::NotVetted
                | ErrorType::Paused
                | ErrorType::InvalidRequest
                | ErrorType::UnknownApp
                | ErrorType::NotAllowed
        )
    }
}

impl Error {
    /// Why `name` is not among the valid apps of `set`: its config is invalid (that error), or
    /// there is no config (`UnknownApp`, listing the apps there are).
    pub fn no_app(configs: &crate::config::Configs, set: &crate::config::ConfigSet, name: &AppName) -> Error {
        let parameter = configs.parameter_of(name);
        if let Some(invalid) = set.invalid_app(&parameter) {
            return invalid.error.clone().into();
        }
        let known = set.apps.iter().map(|a| a.name.clone()).collect();
        Error::UnknownApp { app: name.clone(), parameter, known }
    }

    /// The Lambda `errorType`.
    pub fn error_type(&self) -> ErrorType {
        match self {
            Error::InvalidEvent(_) => ErrorType::InvalidEvent,
            Error::InvalidRequest(_) => ErrorType::InvalidRequest,
            Error::UnknownApp { .. } => ErrorType::UnknownApp,
            Error::NotVetted(_) => ErrorType::NotVetted,
            Error::Paused { .. } => ErrorType::Paused,
            Error::Ledger(LedgerError::Busy { .. }) | Error::Moved { .. } => ErrorType::Busy,
            Error::Ledger(_) | Error::Aws(_) => ErrorType::AwsError,
            // A set-up to fix (the repository policy), as a config error is: `ConfigError`.
            Error::Config(_) | Error::PullNotAllowed(_) => ErrorType::ConfigError,
            Error::Deploy(_) => ErrorType::DeployFailed,
            Error::NotAllowed(_) => ErrorType::NotAllowed,
            Error::Identity(proof) if proof.retryable() => ErrorType::AwsError,
            Error::Identity(_) => ErrorType::NotAllowed,
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(error: Error) -> Diagnostic {
        Diagnostic { error_type: error.error_type().as_str().to_owned(), error_message: error.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_bounded_and_single_line() {
        assert_eq!(user_text("reason", None), Ok(None));
        assert_eq!(user_text("reason", Some("  ".into())), Ok(None));
        assert_eq!(user_text("reason", Some(" load test ".into())), Ok(Some("load test".into())));
        let longest = "é".repeat(TEXT_LIMIT);
        assert_eq!(user_text("reason", Some(longest.clone())), Ok(Some(longest)));
        for bad in
            ["x".repeat(TEXT_LIMIT + 1), "x".repeat(1 << 20), "a\n*Requested by:* admin".into(), "a\u{0}b".into()]
        {
            let error = user_text("reason", Some(bad)).unwrap_err();
            assert_eq!(error, InvalidRequest::Text { field: "reason", limit: TEXT_LIMIT });
            assert_eq!(error.to_string(), "`reason` must be at most 256 characters of text (no control characters)");
        }
    }
}
