//! The words Conveyor's functions, its ledger, its notifications and the CLI share: one enum per
//! thing that has a state or an outcome, its names derived (serde for the wire and the table,
//! strum for logs and text), so adding a state is one edit here and what the compiler then shows.
//!
//! A leaf: it uses nothing of the crate.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};

/// A transition of an app in an environment: what a notification announces and a history entry
/// records. The contract's notification outcomes, plus two that are only recorded
/// ([`Outcome::Restored`], [`Outcome::Held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Display, EnumString, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// A rollout started (an entry environment: a push).
    Deploying,
    Verified,
    RolledBack,
    Failed,
    /// A rollout started (a promotion).
    Promoted,
    Superseded,
    Paused,
    Resumed,
    Drift,
    ConfigError,
    /// A rollback deployment completed: the service is back on a known-good revision (history only).
    Restored,
    /// A push recorded but not rolled out because the environment is paused (history only).
    Held,
    /// Verified; the image keeps running for the environment's `soak` before it counts as vetted.
    Soaking,
    /// A promotion into an environment with `approval` waits for a second person.
    ApprovalRequested,
    /// A promotion was approved; announced with the `promoted` of the rollout it starts.
    Approved,
    Rejected,
    ApprovalExpired,
    /// The sweep deregistered an old revision Conveyor registered (history only).
    Deregistered,
}

impl Outcome {
    /// The wire name (`rolled_back`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// How a person reads it in a title.
    pub fn headline(self) -> &'static str {
        match self {
            Outcome::RolledBack => "rolled back",
            Outcome::Failed => "FAILED",
            Outcome::Drift => "changed outside Conveyor",
            Outcome::ConfigError => "invalid config",
            Outcome::ApprovalRequested => "approval requested for",
            Outcome::ApprovalExpired => "approval expired for",
            other => other.as_str(),
        }
    }
}

/// How urgent a notification is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Display, EnumString, IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What one invocation did for one app in one environment (stage-deploy's and deploy-monitor's
/// reports, the CLI's reading of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Display, EnumString, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Action {
    /// A rollout started.
    Deploying,
    /// Nothing to do (the report's detail says why).
    Skipped,
    /// Recorded and held: the environment is paused.
    Paused,
    /// Still waiting for ECS.
    Waiting,
    Verified,
    /// Verified; soaking before the image counts as vetted.
    Soaking,
    RolledBack,
    Failed,
    Superseded,
    Drift,
    Restored,
    /// Notifications left in an outbox were delivered.
    Delivered,
    /// Old revisions Conveyor registered were deregistered (the sweep's cleanup).
    Deregistered,
    /// The sweep could not handle this item (the others were handled).
    Error,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where an environment stands (`conveyor status`, `state`): the contract's environment states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Display, EnumString, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum EnvironmentState {
    /// Nothing rolled out by Conveyor yet.
    Idle,
    /// A rollout in progress (ECS deploying it, then Conveyor verifying it).
    Deploying,
    /// Verified, and keeping the image running for the environment's `soak`.
    Soaking,
    /// The latest rollout was verified (and soaked): its image is vetted here.
    Vetted,
    /// A promotion waits for its approval.
    AwaitingApproval,
    RolledBack,
    Failed,
    /// The latest rollout was replaced before it settled.
    Superseded,
}

/// What a promotion did (the promote function's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Display, EnumString, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PromoteStatus {
    /// The new revision is rolling out.
    Deploying,
    /// The environment already runs that digest: nothing changed.
    AlreadyDeployed,
    /// Nothing changed; the response shows what would.
    DryRun,
    /// Nothing changed yet: the promotion waits for an approval (`approval_id`).
    AwaitingApproval,
    /// The requested image is what the native deployment in flight moves away from: ECS stopped
    /// that deployment and is moving the traffic back to it (`task_definition_arn`).
    RollingBack,
}

impl PromoteStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn names_are_the_same_on_the_wire_in_text_and_back() {
        for outcome in [Outcome::RolledBack, Outcome::ConfigError, Outcome::Held] {
            let wire = serde_json::to_value(outcome).unwrap();
            assert_eq!(wire, outcome.as_str());
            assert_eq!(outcome.to_string(), outcome.as_str());
            assert_eq!(Outcome::from_str(outcome.as_str()).unwrap(), outcome);
        }
        assert_eq!(Outcome::RolledBack.as_str(), "rolled_back");
        assert_eq!(Severity::Critical.as_str(), "critical");
        assert_eq!(Action::RolledBack.as_str(), "rolled_back");
        assert_eq!(serde_json::to_value(PromoteStatus::AlreadyDeployed).unwrap(), "already_deployed");
        assert_eq!(PromoteStatus::from_str("dry_run").unwrap(), PromoteStatus::DryRun);
    }

    #[test]
    fn severities_order_by_urgency() {
        assert!(Severity::Info < Severity::Warning && Severity::Error < Severity::Critical);
    }
}
