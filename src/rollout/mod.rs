//! A rollout: one image (by digest) put on one environment's service through a new task-definition
//! revision, and how it ended.
//!
//! ```text
//!                      ┌──────────────► Verified      completed, every task running, health check passed
//!                      │
//!   start ──► InProgress ──────────────► RolledBack    failed; the service is back on a known-good
//!                      │                               revision (by Conveyor, or ECS's circuit breaker)
//!                      ├──────────────► Failed        failed, and there was nothing to go back to or the
//!                      │                               rollback could not be issued: people must act
//!                      └──────────────► Superseded    a newer rollout, or a change made outside Conveyor,
//!                                                      replaced it before it settled: nothing judged
//! ```
//!
//! Settling is decided once: only an in-progress rollout can be settled, and a settled one never
//! changes again (a repeated or late event finds it settled and changes nothing). A rollback
//! deployment is watched on its own ([`RollbackWatch`]): if it fails as well, that is announced
//! as `failed` without reopening the rollout.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{Deployment, ServiceState};
use crate::types::{ImageDigest, ImageTag};
use crate::vocabulary::{Outcome, Severity};

/// A task-definition revision and the digest the app's container ran in it (when pinned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<ImageDigest>,
}

/// What started a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// An ECR push (stage).
    Push,
    /// A promotion (prod): who asked (the identity AWS verified, and the name the request gave),
    /// why, and whether it overrode an earlier failure.
    Promotion {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested_by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_behalf_of: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default)]
        forced: bool,
        /// Who approved it (the identity AWS verified), into an environment with `approval`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approved_by: Option<String>,
    },
}

/// Who put the service back after a failed rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolledBackBy {
    Conveyor,
    /// ECS's deployment circuit breaker had already rolled the service back.
    CircuitBreaker,
}

/// Where a rollout stands. Every settled state says when, and why where there is a why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::EnumDiscriminants)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[strum_discriminants(
    name(RolloutKind),
    doc = "A rollout state without its data (`conveyor status` shows it).",
    derive(Serialize, Deserialize, strum::IntoStaticStr, strum::Display, Hash),
    serde(rename_all = "snake_case"),
    strum(serialize_all = "snake_case")
)]
pub enum RolloutState {
    InProgress,
    Verified { at: DateTime<Utc> },
    RolledBack { at: DateTime<Utc>, reason: String, to: String, by: RolledBackBy },
    Failed { at: DateTime<Utc>, reason: String },
    Superseded { at: DateTime<Utc>, reason: String },
}

impl RolloutState {
    /// The state's name (`rolled_back`), as serialised.
    pub fn name(&self) -> &'static str {
        self.into()
    }

    pub fn settled_at(&self) -> Option<DateTime<Utc>> {
        match self {
            RolloutState::InProgress => None,
            RolloutState::Verified { at }
            | RolloutState::RolledBack { at, .. }
            | RolloutState::Failed { at, .. }
            | RolloutState::Superseded { at, .. } => Some(*at),
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            RolloutState::RolledBack { reason, .. }
            | RolloutState::Failed { reason, .. }
            | RolloutState::Superseded { reason, .. } => Some(reason),
            RolloutState::InProgress | RolloutState::Verified { .. } => None,
        }
    }
}

/// Settling a rollout that is already settled: the caller is handling a repeated or late event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rollout {id} is already {state}")]
pub struct AlreadySettled {
    pub id: String,
    pub state: &'static str,
}

/// One rollout Conveyor started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Unique: history entries and notifications refer to it.
    pub id: String,
    /// The tag whose push (or promotion) started it.
    pub tag: ImageTag,
    /// Every tag this digest is known under here (ECR sends one push per tag).
    pub tags: Vec<ImageTag>,
    pub digest: ImageDigest,
    /// The digest-pinned image URI written into the task definition.
    pub image: String,
    pub task_definition_arn: String,
    /// What the service ran before.
    pub previous: Revision,
    /// The ECS deployment (`ecs-svc/...`) the `UpdateService` created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// The triggering event's time (the push, or the promote request).
    pub event_time: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub origin: Origin,
    pub state: RolloutState,
}

impl Rollout {
    pub fn in_progress(&self) -> bool {
        self.state == RolloutState::InProgress
    }

    /// Whether a revision ECS deploys (`images`: `(container, digest)` as `DescribeServiceRevisions`
    /// reports them) runs something else than this rollout's digest in `container`: how it differs,
    /// in words that follow "the revision ECS deploys".
    pub fn digest_mismatch(&self, container: &str, images: &[(String, String)]) -> Option<String> {
        match images.iter().find(|(name, _)| name == container).map(|(_, digest)| digest.as_str()) {
            Some(digest) if digest == self.digest.as_str() => None,
            Some(digest) => Some(format!(
                "runs {digest} in container {container}, Conveyor is rolling out {} ({})",
                self.digest, self.tag
            )),
            None => Some(format!(
                "reports no image digest for container {container}; Conveyor is rolling out {} ({})",
                self.digest, self.tag
            )),
        }
    }

    /// Settles an in-progress rollout into `to`; a settled one stays as it is (and settling into
    /// [`RolloutState::InProgress`] changes nothing).
    pub fn settle(&mut self, to: RolloutState) -> Result<(), AlreadySettled> {
        if !self.in_progress() {
            return Err(AlreadySettled { id: self.id.clone(), state: self.state.name() });
        }
        if to.settled_at().is_some() {
            self.state = to;
        }
        Ok(())
    }

    /// Settles a failure of a rollout in progress, or of a verified one still `soaking` (until its
    /// soak ends an alarm can still fail it).
    pub fn fail(&mut self, to: RolloutState, soaking: bool) -> Result<(), AlreadySettled> {
        if soaking && matches!(self.state, RolloutState::Verified { .. }) && to.reason().is_some() {
            self.state = to;
            return Ok(());
        }
        self.settle(to)
    }

    /// How long it ran until it settled.
    pub fn duration(&self) -> Option<chrono::Duration> {
        self.state.settled_at().map(|at| at - self.started_at)
    }

    /// The notification its current state calls for: the start (`deploying` for a push,
    /// `promoted` for a promotion), then one per settlement. A rollback is critical in an
    /// environment no other takes images from (`last`: prod, in a v2 pipeline), an error before.
    pub fn outcome(&self, last: bool) -> (Outcome, Severity) {
        match (&self.state, &self.origin) {
            (RolloutState::InProgress, Origin::Push) => (Outcome::Deploying, Severity::Info),
            (RolloutState::InProgress, Origin::Promotion { .. }) => (Outcome::Promoted, Severity::Info),
            (RolloutState::Verified { .. }, _) => (Outcome::Verified, Severity::Info),
            (RolloutState::RolledBack { .. }, _) if last => (Outcome::RolledBack, Severity::Critical),
            (RolloutState::RolledBack { .. }, _) => (Outcome::RolledBack, Severity::Error),
            (RolloutState::Failed { .. }, _) => (Outcome::Failed, Severity::Critical),
            (RolloutState::Superseded { .. }, _) => (Outcome::Superseded, Severity::Info),
        }
    }

    /// Adds a tag this digest was (also) pushed under.
    pub fn add_tag(&mut self, tag: &ImageTag) -> bool {
        if self.tags.contains(tag) {
            return false;
        }
        self.tags.push(tag.clone());
        true
    }

    /// The deployer of a promotion, for notifications and history.
    pub fn requested_by(&self) -> Option<&str> {
        match &self.origin {
            Origin::Promotion { requested_by, .. } => requested_by.as_deref(),
            Origin::Push => None,
        }
    }

    /// Who approved a promotion (verified).
    pub fn approved_by(&self) -> Option<&str> {
        match &self.origin {
            Origin::Promotion { approved_by, .. } => approved_by.as_deref(),
            Origin::Push => None,
        }
    }

    /// The name a promotion's request gave (unverified), for notifications and history.
    pub fn on_behalf_of(&self) -> Option<&str> {
        match &self.origin {
            Origin::Promotion { on_behalf_of, .. } => on_behalf_of.as_deref(),
            Origin::Push => None,
        }
    }

    /// Whether `arn` is an earlier revision of this rollout's task-definition family: one ECS may
    /// go back to, never one registered for a later rollout (or by Terraform) since.
    pub fn comes_after(&self, arn: &str) -> bool {
        match (crate::taskdef::family_revision(arn), crate::taskdef::family_revision(&self.task_definition_arn)) {
            (Some((family, earlier)), Some((ours_family, ours))) => family == ours_family && earlier < ours,
            _ => false,
        }
    }

    /// The deployment ECS's circuit breaker went back to after failing this rollout's, if it did:
    /// the service's primary runs an earlier revision of the rollout's family (the breaker goes
    /// back to the last deployment that completed; Conveyor, Terraform and people register newer
    /// revisions), and the rollout's deployment is listed as failed by the breaker — or, when
    /// the failure is known otherwise (`failure_seen`: a FAILED event in hand), no longer listed
    /// (the breaker's rollback completed first). The revision may be one the record no longer
    /// names: an earlier rollout's, superseded before its COMPLETED event arrived.
    pub fn circuit_breaker_went_back<'s>(
        &self,
        service: &'s ServiceState,
        failure_seen: bool,
    ) -> Option<&'s Deployment> {
        let primary = service.primary()?;
        let went_back = self.comes_after(&primary.task_definition);
        let failed_by_breaker = |d: &Deployment| {
            d.failed()
                && d.rollout_state_reason.as_deref().is_some_and(|r| r.starts_with("ECS deployment circuit breaker"))
        };
        let ours = self.deployment_id.as_deref().and_then(|id| service.deployment(id));
        let failed = match ours {
            Some(deployment) => failed_by_breaker(deployment),
            None => failure_seen && self.deployment_id.is_some(),
        };
        (went_back && failed).then_some(primary)
    }
}

/// Where a release of an environment with several targets stands on one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// `cluster/service`, with the account and region when not Conveyor's own.
    pub target: String,
    /// `deploying`, `verified`, `rolled_back`, `failed`, `superseded`, or `waiting` (not started yet).
    pub state: String,
    /// The revision the release registered there, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    /// The revision it went back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
}

/// A rollback deployment (Conveyor's, or the circuit breaker's), watched until ECS completes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackWatch {
    /// The failed rollout it undoes.
    pub rollout_id: String,
    pub tag: ImageTag,
    pub digest: ImageDigest,
    /// The revision it goes back to.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    pub by: RolledBackBy,
    pub started_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> Rollout {
        Rollout {
            id: "r1".into(),
            tag: ImageTag::parse("v1").unwrap(),
            tags: vec![ImageTag::parse("v1").unwrap()],
            digest: ImageDigest::parse(format!("sha256:{}", "1".repeat(64))).unwrap(),
            image: "repo@sha256:1".into(),
            task_definition_arn: "td:2".into(),
            previous: Revision { arn: "td:1".into(), digest: None },
            deployment_id: Some("ecs-svc/2".into()),
            event_time: DateTime::UNIX_EPOCH,
            started_at: DateTime::UNIX_EPOCH,
            origin: Origin::Push,
            state: RolloutState::InProgress,
        }
    }

    #[test]
    fn a_rollout_settles_once() {
        let mut r = rollout();
        let at = DateTime::UNIX_EPOCH + chrono::Duration::seconds(90);
        r.settle(RolloutState::Verified { at }).unwrap();
        assert_eq!(r.state, RolloutState::Verified { at });
        assert_eq!(r.duration(), Some(chrono::Duration::seconds(90)));
        let again = r.settle(RolloutState::Failed { at, reason: "late FAILED".into() });
        assert_eq!(again, Err(AlreadySettled { id: "r1".into(), state: "verified" }));
        assert_eq!(r.state, RolloutState::Verified { at }, "a settled rollout never changes");
    }

    #[test]
    fn each_state_has_its_notification() {
        let mut r = rollout();
        assert_eq!(r.outcome(false), (Outcome::Deploying, Severity::Info));
        let promotion = Origin::Promotion {
            requested_by: None,
            on_behalf_of: None,
            reason: None,
            forced: false,
            approved_by: None,
        };
        assert_eq!(Rollout { origin: promotion, ..r.clone() }.outcome(true), (Outcome::Promoted, Severity::Info));
        r.settle(RolloutState::RolledBack {
            at: DateTime::UNIX_EPOCH,
            reason: "x".into(),
            to: "td:1".into(),
            by: RolledBackBy::Conveyor,
        })
        .unwrap();
        assert_eq!(r.outcome(false), (Outcome::RolledBack, Severity::Error));
        assert_eq!(r.outcome(true), (Outcome::RolledBack, Severity::Critical));
    }

    #[test]
    fn states_serialize_with_their_kind() {
        let state = RolloutState::Superseded { at: DateTime::UNIX_EPOCH, reason: "newer push".into() };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["kind"], "superseded");
        assert_eq!(serde_json::from_value::<RolloutState>(json).unwrap(), state);
    }
}
