//! What runs where (`conveyor status`): per app and environment, what ECS runs (the service and
//! its revision's `conveyor:*` tags), Conveyor's current rollout, the last verified release and
//! whether the environment is paused; per app, the tags that can be promoted.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws::{AwsError, ServiceState};
use crate::config::{AppConfig, EnvironmentConfig, Promotion, ServiceTarget, Source};
use crate::fleet::Fleet;
use crate::ledger::{Ledger, LedgerError};
use crate::record::EnvState;
use crate::rollout::{Origin, Rollout, RolloutKind};
use crate::taskdef::{self, TAG_APP, TAG_IMAGE_DIGEST, TAG_IMAGE_TAG};
use crate::types::Environment;
use crate::vocabulary::EnvironmentState;
use crate::{image, notify, promote};

/// One app, both environments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppStatus {
    pub app: String,
    pub environments: Vec<EnvStatus>,
    /// Tags stage verified whose image never failed, most recently vetted first (at most the
    /// number asked for).
    pub promotable: Vec<PromotableTag>,
    /// Where those tags were vetted: the environment `promote` without `to` takes images from
    /// (stage, in a v2 pipeline).
    pub promotable_from: Option<Environment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromotableTag {
    pub tag: String,
    pub digest: String,
    pub vetted_at: DateTime<Utc>,
}

/// One environment of an app. Every key is always present (`null` when it does not apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvStatus {
    pub environment: Environment,
    /// Where the environment stands: `idle`, `deploying`, `soaking`, `vetted`,
    /// `awaiting_approval`, `rolled_back`, `failed` or `superseded`.
    pub state: EnvironmentState,
    pub cluster: String,
    pub service: String,
    /// What ECS runs; `null` when the service could not be read (see `error`).
    pub running: Option<Running>,
    /// The latest rollout Conveyor started here, with its state.
    pub rollout: Option<RolloutStatus>,
    pub last_verified: Option<VerifiedStatus>,
    pub paused: Option<PauseStatus>,
    /// The newest push recorded while stage was paused and not rolled out since.
    pub held_push: Option<HeldPush>,
    /// Why the service could not be read.
    pub error: Option<String>,
    /// While the verified rollout soaks: when its image counts as vetted (present only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soaking_until: Option<DateTime<Utc>>,
    /// What an image must get through here after its verification before it is vetted (present
    /// only when the environment has a soak or alarms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gates: Option<Gates>,
    /// A promotion waiting for its approval here (present only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting_approval: Option<ApprovalStatus>,
    /// An environment with several targets: one entry per target (the environment's own keys on
    /// its first), with this target and where the environment's release stands on it (present
    /// only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<crate::rollout::TargetStatus>,
}

/// A promotion waiting for a second person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalStatus {
    pub approval_id: String,
    pub tag: String,
    pub digest: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// An environment's gates: its `soak` and its `alarms`, and whether promotions into it wait for
/// an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gates {
    /// `0`: no soak.
    pub soak_seconds: u64,
    pub alarms: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
}

impl Gates {
    pub fn of(env: &EnvironmentConfig) -> Option<Self> {
        let approval = matches!(env.source, Source::From { approval: Some(_), .. });
        (!env.soak.is_zero() || !env.alarms.is_empty() || approval).then(|| Gates {
            soak_seconds: env.soak.as_secs(),
            alarms: env.alarms.clone(),
            approval,
        })
    }
}

/// What the ECS service runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Running {
    pub task_definition_arn: String,
    /// `family:revision`.
    pub revision: String,
    /// The image tag (the revision's `conveyor:image-tag`, else the tag of the image reference).
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// The app container's image.
    pub image: Option<String>,
    /// The revision carries Conveyor's `conveyor:app` tag (Conveyor registered it).
    pub by_conveyor: bool,
    pub desired_count: i32,
    pub running_count: i32,
    /// The service's primary deployment.
    pub deployment: Option<DeploymentStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentStatus {
    pub id: String,
    /// ECS's `rolloutState` (`IN_PROGRESS`, `COMPLETED`, `FAILED`), when it has one.
    pub rollout_state: Option<String>,
    pub rollout_state_reason: Option<String>,
    pub desired_count: i32,
    pub running_count: i32,
    pub failed_tasks: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutStatus {
    pub id: String,
    pub tag: String,
    pub digest: String,
    /// `in_progress`, `verified`, `rolled_back`, `failed` or `superseded`.
    pub state: RolloutKind,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i64>,
    pub task_definition_arn: String,
    /// A promotion: the identity AWS verified for whoever asked.
    pub requested_by: Option<String>,
    /// A promotion: the name its request gave (unverified).
    pub on_behalf_of: Option<String>,
    pub forced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedStatus {
    pub tag: String,
    pub digest: String,
    pub at: DateTime<Utc>,
    pub task_definition_arn: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseStatus {
    pub reason: String,
    /// The identity AWS verified for whoever paused.
    pub by: Option<String>,
    /// The name the request gave (unverified).
    pub on_behalf_of: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldPush {
    pub tag: String,
    pub digest: String,
    pub time: DateTime<Utc>,
}

impl From<&Rollout> for RolloutStatus {
    fn from(rollout: &Rollout) -> Self {
        RolloutStatus {
            id: rollout.id.clone(),
            tag: rollout.tag.to_string(),
            digest: rollout.digest.to_string(),
            state: RolloutKind::from(&rollout.state),
            reason: rollout.state.reason().map(str::to_owned),
            started_at: rollout.started_at,
            settled_at: rollout.state.settled_at(),
            duration_seconds: rollout.duration().map(|d| d.num_seconds()),
            task_definition_arn: rollout.task_definition_arn.clone(),
            requested_by: rollout.requested_by().map(str::to_owned),
            on_behalf_of: rollout.on_behalf_of().map(str::to_owned),
            forced: matches!(rollout.origin, Origin::Promotion { forced: true, .. }),
        }
    }
}

/// The status of one environment from what Conveyor knows (`state`) and what ECS runs.
pub fn env_status(
    env: Environment,
    target: &ServiceTarget,
    state: Option<&EnvState>,
    running: Result<Running, AwsError>,
) -> EnvStatus {
    let (running, error) = match running {
        Ok(running) => (Some(running), None),
        Err(error) => (None, Some(error.to_string())),
    };
    EnvStatus {
        environment: env,
        state: state.map_or(EnvironmentState::Idle, environment_state),
        cluster: target.cluster.clone(),
        service: target.service.clone(),
        running,
        rollout: state.and_then(|s| s.rollout.as_ref()).map(RolloutStatus::from),
        last_verified: state.and_then(|s| s.last_verified.as_ref()).map(|v| VerifiedStatus {
            tag: v.tag.to_string(),
            digest: v.digest.to_string(),
            at: v.at,
            task_definition_arn: v.task_definition_arn.clone(),
        }),
        paused: state.and_then(|s| s.paused.as_ref()).map(|p| PauseStatus {
            reason: p.reason.clone(),
            by: p.by.clone(),
            on_behalf_of: p.on_behalf_of.clone(),
            at: p.at,
        }),
        held_push: state.and_then(|s| s.held_push.as_ref()).map(|h| HeldPush {
            tag: h.tag.to_string(),
            digest: h.digest.to_string(),
            time: h.time,
        }),
        error,
        soaking_until: state.and_then(|s| s.soak.as_ref()).map(|soak| soak.until),
        gates: None,
        target: None,
        awaiting_approval: state.and_then(EnvState::pending_approval).map(|request| ApprovalStatus {
            approval_id: request.id.clone(),
            tag: request.tag.to_string(),
            digest: request.digest.to_string(),
            requested_by: request.requested_by.clone(),
            requested_at: request.requested_at,
            expires_at: request.expires_at,
        }),
    }
}

/// Where an environment stands, from what Conveyor knows: a pending approval first, then its
/// latest rollout (a verified one soaking until its soak ends).
pub fn environment_state(state: &EnvState) -> EnvironmentState {
    if state.pending_approval().is_some() {
        return EnvironmentState::AwaitingApproval;
    }
    match state.rollout.as_ref().map(|r| RolloutKind::from(&r.state)) {
        None => EnvironmentState::Idle,
        Some(RolloutKind::InProgress) => EnvironmentState::Deploying,
        Some(RolloutKind::Verified) if state.soak.is_some() => EnvironmentState::Soaking,
        Some(RolloutKind::Verified) => EnvironmentState::Vetted,
        Some(RolloutKind::RolledBack) => EnvironmentState::RolledBack,
        Some(RolloutKind::Failed) => EnvironmentState::Failed,
        Some(RolloutKind::Superseded) => EnvironmentState::Superseded,
    }
}

/// The tag of an image reference given by tag (`registry/repo:tag`), if it is one.
pub fn tag_of_image(image: &str) -> Option<&str> {
    if image.contains('@') {
        return None;
    }
    let (_, last) = image.rsplit_once('/').unwrap_or(("", image));
    last.rsplit_once(':').map(|(_, tag)| tag)
}

/// What a service runs: its revision, the app container's image, tag and digest.
pub async fn running(fleet: &Fleet, app: &AppConfig, service_target: &ServiceTarget) -> Result<Running, AwsError> {
    let target = fleet.target(app, service_target).await;
    let service: ServiceState = target.ecs.service(&service_target.cluster, &service_target.service).await?;
    let revision = target.revision(&service.task_definition).await?;
    let image = taskdef::container_image(&revision.definition, &app.container).map(str::to_owned);
    let digest = image.as_deref().and_then(image::digest_of).or_else(|| revision.tag(TAG_IMAGE_DIGEST));
    let tag = revision.tag(TAG_IMAGE_TAG).or_else(|| image.as_deref().and_then(tag_of_image));
    let deployment = service.primary().map(|d| DeploymentStatus {
        id: d.id.clone(),
        rollout_state: d.rollout_state.as_ref().map(|s| s.as_str().to_owned()),
        rollout_state_reason: d.rollout_state_reason.clone(),
        desired_count: d.desired,
        running_count: d.running,
        failed_tasks: d.failed_tasks,
    });
    Ok(Running {
        revision: notify::short_arn(&service.task_definition).to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
        by_conveyor: revision.tag(TAG_APP).is_some(),
        task_definition_arn: service.task_definition.clone(),
        desired_count: service.desired,
        running_count: service.running,
        deployment,
        image,
    })
}

/// The status of an app: every environment in pipeline order (state table and ECS) and its
/// promotable tags. An
/// ECS service that cannot be read is reported in its environment's `error`; a state table
/// that cannot be read fails the whole status.
pub async fn app_status(
    ledger: &Ledger,
    fleet: &Fleet,
    app: &AppConfig,
    promotable: usize,
) -> Result<AppStatus, LedgerError> {
    let environments = app.pipeline.targets().map(|(env, index, target)| async move {
        let (state, running) = tokio::join!(ledger.env::<EnvState>(&app.name, env.name), running(fleet, app, target));
        let state = state?.map(|(state, _)| state);
        let status = env_status(env.name, target, state.as_ref().and_then(|s| s.target(index)), running);
        if env.targets.len() < 2 {
            return Ok::<_, LedgerError>(EnvStatus { gates: Gates::of(env), ..status });
        }
        // Several targets: the environment's state and gates once, each target's own rollout.
        let statuses = state.as_ref().map(|s| s.target_statuses(app, env.name)).unwrap_or_default();
        let whole = state.as_ref().map_or(EnvironmentState::Idle, environment_state);
        let target = statuses.into_iter().nth(index);
        Ok(match index {
            0 => EnvStatus { gates: Gates::of(env), state: whole, target, ..status },
            _ => EnvStatus {
                state: whole,
                target,
                paused: None,
                held_push: None,
                soaking_until: None,
                awaiting_approval: None,
                ..status
            },
        })
    });
    // What may move on: the tags vetted where the environment `promote` goes to without `to`
    // takes from (prod's stage), else the first promoted-into environment's.
    let sources = |manual_only: bool| {
        app.pipeline.environments.iter().filter_map(move |env| match env.source {
            Source::From { environment, promotion, .. } if !manual_only || promotion == Promotion::Manual => {
                Some(environment)
            }
            _ => None,
        })
    };
    let manual: Vec<Environment> = sources(true).collect();
    let from = if let [one] = manual[..] { Some(one) } else { sources(false).next() };
    let tags = async {
        match from {
            Some(from) => promote::promotable_tags(ledger, &app.name, from, promotable).await,
            None => Ok(Vec::new()),
        }
    };
    let (environments, tags) = tokio::join!(futures_util::future::join_all(environments), tags);
    Ok(AppStatus {
        promotable_from: from,
        app: app.name.to_string(),
        environments: environments.into_iter().collect::<Result<_, _>>()?,
        promotable: tags?
            .into_iter()
            .map(|t| PromotableTag { tag: t.tag.to_string(), digest: t.digest.to_string(), vetted_at: t.vetted_at })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_from_tagged_image_references_only() {
        assert_eq!(tag_of_image("123.dkr.ecr.us-east-1.amazonaws.com/shop-api:v0.9.0"), Some("v0.9.0"));
        assert_eq!(tag_of_image("localhost:5000/shop-api:v1"), Some("v1"));
        assert_eq!(tag_of_image("localhost:5000/shop-api"), None);
        assert_eq!(tag_of_image("nginx"), None);
        assert_eq!(tag_of_image("repo/shop@sha256:abc"), None);
    }
}
