//! Starting a rollout: put one image (by digest) on one environment's service through a new
//! task-definition revision. Shared by stage-deploy and promote, which commit the [`Plan`].
//!
//! Before anything changes, what the service runs is compared with what the state knows: a
//! revision Conveyor registered whose record was lost (an attempt that died after `UpdateService`)
//! is adopted, never registered twice; a revision nobody told Conveyor about is drift, announced
//! once, and the new revision builds on it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::aws::{Described, Ecs, ServiceState};
use crate::config::AppConfig;
use crate::error::DeployError;
use crate::fleet::Target;
use crate::image;
use crate::leased::Leased;
use crate::ledger::{Change, Failure, HistoryEntry, ImageUpdate};
use crate::notify::{Announcement, Notification};
use crate::record::{Drift, EnvState, Orphan};
use crate::rollout::{Origin, Revision, RolledBackBy, Rollout, RolloutState};
use crate::taskdef::{self, ImageSwap, TAG_APP, TAG_IMAGE_DIGEST, TAG_IMAGE_TAG};
use crate::types::{AppName, Environment, ImageDigest, ImageTag};
use crate::vocabulary::{Outcome, Severity};

/// Where the image URI comes from.
#[derive(Debug, Clone)]
pub enum ImageSource<'a> {
    /// A push: `{account}.dkr.ecr.{region}.amazonaws.com/{repository}@{digest}`, falling back to
    /// the registry of the container's current ECR image when the event lacks account or region.
    Pushed { account: Option<&'a str>, region: Option<&'a str>, repository: &'a str },
    /// Exactly this URI (promote deploys the very image stage verified).
    Exact(&'a str),
}

/// What to roll out.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub tag: &'a ImageTag,
    pub digest: &'a ImageDigest,
    pub source: ImageSource<'a>,
    /// The triggering event's time, for ordering.
    pub event_time: DateTime<Utc>,
    pub origin: Origin,
}

/// What the service runs, read before anything changes.
pub struct Observed {
    pub service: ServiceState,
    pub running: Arc<Described>,
    /// The running revision and the digest the app's container runs in it.
    pub revision: Revision,
    /// The app container's image (`None`: the revision has no container of that name).
    pub image: Option<String>,
}

impl Observed {
    /// The app container's image, or which containers there are instead.
    pub fn app_image(&self, app: &AppConfig) -> Result<&str, DeployError> {
        match &self.image {
            Some(image) => Ok(image),
            None => app_container_image(app, &self.running.definition, &self.service.task_definition),
        }
    }
}

/// How a start ended.
#[derive(Debug, Clone)]
pub enum Started {
    /// The service's container already runs this digest; nothing changed.
    AlreadyRunning { task_definition_arn: String },
    /// A new revision is registered and the service is rolling onto it.
    Rolling(Box<Rollout>),
}

/// A start, ready to be committed (with whatever the caller adds to it).
pub struct Plan {
    pub change: Change<EnvState>,
    pub started: Started,
    pub observed: Observed,
}

/// A new rollout id: time-ordered (its time first), unique (the random low bits of a UUIDv7 of
/// that time), in the shape logs, history and the CLI's examples show: `20260101T120000000-0badcafe`.
pub fn new_id(now: DateTime<Utc>) -> String {
    let (seconds, nanos) = (now.timestamp().max(0) as u64, now.timestamp_subsec_nanos());
    let uuid = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, nanos));
    format!("{}-{:08x}", now.format("%Y%m%dT%H%M%S%3f"), uuid.as_u128() as u32)
}

/// Reads the service and the revision it runs.
pub async fn observe(target: &Target<'_>, app: &AppConfig, env: Environment) -> Result<Observed, DeployError> {
    let service_target = app.target(env);
    let service = target.ecs.service(&service_target.cluster, &service_target.service).await?;
    let running = target.revision(&service.task_definition).await?;
    let image = taskdef::container_image(&running.definition, &app.container).map(str::to_owned);
    let revision = Revision {
        arn: service.task_definition.clone(),
        digest: image.as_deref().and_then(image::digest_of).and_then(|d| ImageDigest::parse(d).ok()),
    };
    Ok(Observed { service, running, revision, image })
}

/// Rolls `candidate` out to `env` of `app` unless the service already runs it. The state must be
/// held; on first contact the state (with the service's current revision as baseline) is
/// committed before anything changes.
pub async fn start(here: &mut Leased<'_>, candidate: &Candidate<'_>) -> Result<Plan, DeployError> {
    let (app, env) = (here.app, here.env);
    let observed = observe(&here.target, app, env).await?;
    if here.held.state.is_none() {
        let target = app.target(env);
        let first = EnvState::first(&app.name, env, &target.cluster, &target.service, observed.revision.clone());
        here.commit(Change::new(first)).await?;
    }
    observed.app_image(app)?;
    let now = Utc::now();
    let mut change = Change::new(here.state()?.clone());
    let adopted = note_what_runs(app, env, &mut change, &observed, now);

    if observed.revision.digest.as_ref() == Some(candidate.digest) {
        // Running already: this very rollout, when its record was lost and it was just adopted.
        let started = match adopted.filter(|r| &r.digest == candidate.digest) {
            Some(rollout) => Started::Rolling(Box::new(rollout)),
            None => Started::AlreadyRunning { task_definition_arn: observed.service.task_definition.clone() },
        };
        return Ok(Plan { change, started, observed });
    }
    let rollout = match roll_out(&here.target, app, env, &change.state, &observed, candidate, here.held.took_over).await
    {
        Ok(rollout) => rollout,
        Err(RollOutError::Unclear { orphan, error }) => {
            // The revision exists and the service may or may not run it: remember it so the
            // retry uses it (or cleans it up) instead of registering another.
            change.state.orphan = Some(orphan);
            if let Err(commit) = here.commit(change).await {
                warn!(app = %app.name, environment = %env, error = %commit, "could not record the unused revision");
            }
            return Err(error);
        }
        Err(RollOutError::Failed(error)) => return Err(error),
    };
    change.state.orphan = None;
    let replaced_by = format!("replaced by {} ({})", rollout.tag, rollout.digest.short());
    settle_in_flight(app, env, &mut change, &observed.service, &replaced_by, now);
    change.state.rollback = None;
    begin(app, env, &mut change, rollout.clone());
    Ok(Plan { change, started: Started::Rolling(Box::new(rollout)), observed })
}

/// Records a rollout as started: state, history, notification.
pub fn begin(app: &AppConfig, env: Environment, change: &mut Change<EnvState>, rollout: Rollout) {
    let mut entry = history_of(&app.name, &rollout, env, rollout.started_at);
    entry.event = if env == Environment::Prod { Outcome::Promoted } else { Outcome::Deploying };
    if let Origin::Promotion { reason, .. } = &rollout.origin {
        entry.reason = reason.clone();
    }
    change.history.push(entry);
    change.announcements.push(Announcement::new(Notification::of_rollout(app, env, &rollout), app));
    change.state.rollout = Some(rollout);
}

/// A history entry about `app`'s `rollout` (in its current state) at `at`.
pub fn history_of(app: &AppName, rollout: &Rollout, env: Environment, at: DateTime<Utc>) -> HistoryEntry {
    let event = match &rollout.state {
        RolloutState::InProgress => Outcome::Deploying,
        RolloutState::Verified { .. } => Outcome::Verified,
        RolloutState::RolledBack { .. } => Outcome::RolledBack,
        RolloutState::Failed { .. } => Outcome::Failed,
        RolloutState::Superseded { .. } => Outcome::Superseded,
    };
    let mut entry = HistoryEntry::new(app, env, event, at);
    entry.tag = Some(rollout.tag.clone());
    entry.digest = Some(rollout.digest.clone());
    entry.rollout_id = Some(rollout.id.clone());
    entry.task_definition_arn = Some(rollout.task_definition_arn.clone());
    entry.deployment_id = rollout.deployment_id.clone();
    entry.reason = rollout.state.reason().map(str::to_owned);
    entry.requested_by = rollout.requested_by().map(str::to_owned);
    entry.forced = matches!(rollout.origin, Origin::Promotion { forced: true, .. });
    if let RolloutState::RolledBack { to, .. } = &rollout.state {
        entry.rollback_task_definition_arn = Some(to.clone());
    }
    if !rollout.in_progress() {
        entry.started_at = Some(rollout.started_at);
    }
    entry
}

/// Settles the rollout in progress (if any) as superseded, with its history and notification.
pub fn supersede(app: &AppConfig, env: Environment, change: &mut Change<EnvState>, reason: &str, now: DateTime<Utc>) {
    let Some(rollout) = change.state.rollout.as_mut().filter(|r| r.in_progress()) else { return };
    if rollout.settle(RolloutState::Superseded { at: now, reason: reason.to_owned() }).is_ok() {
        let rollout = rollout.clone();
        info!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest, reason, "rollout superseded");
        change.history.push(history_of(&app.name, &rollout, env, now));
        change.announcements.push(Announcement::new(Notification::of_rollout(app, env, &rollout), app));
    }
}

/// Settles the rollout in progress (if any) that a new rollout replaces: `rolled_back` when ECS's
/// circuit breaker failed it and went back (its FAILED event not handled yet — the image failed
/// all the same, whichever comes first), else superseded.
fn settle_in_flight(
    app: &AppConfig,
    env: Environment,
    change: &mut Change<EnvState>,
    service: &ServiceState,
    reason: &str,
    now: DateTime<Utc>,
) {
    let in_flight = change.state.rollout.as_mut().filter(|r| r.in_progress());
    let Some((rollout, back)) = in_flight.and_then(|r| r.circuit_breaker_went_back(service, false).map(|b| (r, b)))
    else {
        return supersede(app, env, change, reason, now);
    };
    let failed = rollout.deployment_id.as_deref().and_then(|id| service.deployment(id));
    let why = failed.and_then(|d| d.rollout_state_reason.as_deref()).unwrap_or("ECS reported the deployment FAILED");
    let settlement = RolloutState::RolledBack {
        at: now,
        reason: format!("{why} (ECS circuit breaker already rolled back)"),
        to: back.task_definition.clone(),
        by: RolledBackBy::CircuitBreaker,
    };
    if rollout.settle(settlement).is_err() {
        return;
    }
    let rollout = rollout.clone();
    let failure = rollout.state.reason().unwrap_or_default().to_owned();
    warn!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest,
        deployment_id = rollout.deployment_id.as_deref(), reason = %failure, "rollout failed: rolled back by the circuit breaker");
    let mut image = ImageUpdate::of(&rollout.digest, &rollout.image);
    image.failed = Some((env, Failure { at: now, reason: failure }));
    change.images.push((app.name.clone(), image));
    change.history.push(history_of(&app.name, &rollout, env, now));
    change.announcements.push(Announcement::new(Notification::of_rollout(app, env, &rollout), app));
}

/// Compares what runs with what the state knows: adopts a rollout whose record was lost (and
/// returns it), notes and announces drift (superseding a rollout in flight).
pub fn note_what_runs(
    app: &AppConfig,
    env: Environment,
    change: &mut Change<EnvState>,
    observed: &Observed,
    now: DateTime<Utc>,
) -> Option<Rollout> {
    let running = &observed.service.task_definition;
    if change.state.knows_revision(running) {
        return None;
    }
    let ours = observed.running.tag(TAG_APP) == Some(app.name.as_str());
    if ours && change.state.rollout.as_ref().is_some_and(|r| r.comes_after(running)) {
        // Conveyor's own earlier revision, which ECS went back to (its circuit breaker, to the
        // last deployment that completed): neither a lost record (that one is newer) nor drift.
        return None;
    }
    let tag = observed.running.tag(TAG_IMAGE_TAG).and_then(|t| ImageTag::parse(t).ok());
    let digest = observed.running.tag(TAG_IMAGE_DIGEST).and_then(|d| ImageDigest::parse(d).ok());
    if let (true, Some(tag), Some(digest)) = (ours, tag, digest) {
        // A rollout of Conveyor's whose commit never happened (its invocation died or failed
        // after UpdateService): adopt it, so it is verified or rolled back like any other.
        let previous = change.state.rollout.as_ref().map_or_else(
            || change.state.known_good(),
            |r| Revision { arn: r.task_definition_arn.clone(), digest: Some(r.digest.clone()) },
        );
        let deployment_id = observed.service.primary().filter(|d| &d.task_definition == running).map(|d| d.id.clone());
        warn!(app = %app.name, environment = %env, task_definition_arn = %running, tag = %tag, digest = %digest,
            "adopting a rollout whose record was lost");
        supersede(app, env, change, "replaced by an earlier attempt's rollout", now);
        let rollout = Rollout {
            id: new_id(now),
            tags: vec![tag.clone()],
            tag,
            digest,
            image: observed.image.clone().unwrap_or_default(),
            task_definition_arn: running.clone(),
            previous,
            deployment_id,
            event_time: now,
            started_at: now,
            origin: if env == Environment::Prod {
                Origin::Promotion { requested_by: None, reason: None, forced: false }
            } else {
                Origin::Push
            },
            state: RolloutState::InProgress,
        };
        let mut entry = history_of(&app.name, &rollout, env, now);
        entry.reason = Some("adopted: the rollout happened but its record was lost".into());
        change.history.push(entry);
        change.announcements.push(Announcement::new(Notification::of_rollout(app, env, &rollout), app));
        change.state.rollout = Some(rollout.clone());
        return Some(rollout);
    }
    info!(app = %app.name, environment = %env, task_definition_arn = %running, "drift: the service runs a revision Conveyor did not put there");
    change.state.drift = Some(Drift { revision: running.clone(), seen_at: now });
    change.state.rollback = None;
    let mut entry = HistoryEntry::new(&app.name, env, Outcome::Drift, now);
    entry.task_definition_arn = Some(running.clone());
    entry.digest = observed.revision.digest.clone();
    entry.reason = Some(format!("the service was changed outside Conveyor to {}", crate::notify::short_arn(running)));
    change.history.push(entry);
    let mut notification = Notification::of_service(app, env, Outcome::Drift, Severity::Info);
    notification.task_definition_arn = Some(running.clone());
    notification.digest = observed.revision.digest.clone();
    notification.reason = Some(format!(
        "{}/{} runs {}, which Conveyor did not deploy (Terraform, the console, a person?); the next rollout builds on it",
        app.target(env).cluster,
        app.target(env).service,
        crate::notify::short_arn(running)
    ));
    change.announcements.push(Announcement::new(notification, app));
    supersede(
        app,
        env,
        change,
        &format!("the service was changed outside Conveyor to {}", crate::notify::short_arn(running)),
        now,
    );
    None
}

/// Why [`roll_out`] failed.
enum RollOutError {
    /// Nothing was left behind (or it was cleaned up).
    Failed(DeployError),
    /// A revision was registered and `UpdateService` failed without saying whether it was applied.
    Unclear { orphan: Orphan, error: DeployError },
}

impl<E: Into<DeployError>> From<E> for RollOutError {
    fn from(error: E) -> Self {
        RollOutError::Failed(error.into())
    }
}

/// Registers the candidate on top of what runs and points the service at it.
async fn roll_out(
    target: &Target<'_>,
    app: &AppConfig,
    env: Environment,
    state: &EnvState,
    observed: &Observed,
    candidate: &Candidate<'_>,
    took_over: bool,
) -> Result<Rollout, RollOutError> {
    let ecs = &target.ecs;
    let current_image = observed.app_image(app)?;
    let image = match candidate.source {
        ImageSource::Exact(uri) => uri.to_owned(),
        ImageSource::Pushed { account, region, repository } => {
            let registry = match (account, region) {
                (Some(account), Some(region)) => image::ecr_registry(account, region),
                _ => image::ecr_registry_of(current_image)
                    .ok_or_else(|| DeployError::NoRegistry {
                        container: app.container.clone(),
                        image: current_image.to_owned(),
                    })?
                    .to_owned(),
            };
            image::pinned(&registry, repository, candidate.digest)
        }
    };
    let swap = ImageSwap {
        container: &app.container,
        image: Some(image.clone()),
        tags: vec![
            (TAG_APP, app.name.to_string()),
            (TAG_IMAGE_TAG, candidate.tag.to_string()),
            (TAG_IMAGE_DIGEST, candidate.digest.to_string()),
        ],
    };
    let base = observed.service.task_definition.clone();
    let reusable = state.orphan.as_ref().filter(|o| &o.digest == candidate.digest && o.base == base);
    let registered = match reusable {
        Some(orphan) => {
            info!(app = %app.name, environment = %env, task_definition_arn = %orphan.arn, "using the revision an earlier attempt registered");
            target.revision(&orphan.arn).await?
        }
        None => {
            if let Some(stale) = &state.orphan {
                clean_up(ecs, &stale.arn, &observed.service).await;
            }
            target.keep(ecs.register(&observed.running, &swap).await?)
        }
    };
    let arn = registered.arn().to_owned();
    if took_over && reusable.is_none() {
        clean_up_left_behind(ecs, app, &registered, &observed.service).await;
    }
    let service = app.target(env);
    let updated = match ecs.update_service(&service.cluster, &service.service, &arn).await {
        Ok(updated) => updated,
        Err(error) if error.rejected => {
            // ECS refused: the revision was never used. Remove it so a retry starts clean.
            clean_up(ecs, &arn, &observed.service).await;
            return Err(RollOutError::Failed(error.into()));
        }
        Err(error) => {
            let orphan = Orphan { arn, digest: candidate.digest.clone(), base };
            return Err(RollOutError::Unclear { orphan, error: error.into() });
        }
    };
    let now = Utc::now();
    Ok(Rollout {
        id: new_id(now),
        tag: candidate.tag.clone(),
        tags: vec![candidate.tag.clone()],
        digest: candidate.digest.clone(),
        image,
        task_definition_arn: arn.clone(),
        previous: observed.revision.clone(),
        deployment_id: updated
            .deployments
            .iter()
            .find(|d| d.is_primary() && d.task_definition == arn)
            .map(|d| d.id.clone()),
        event_time: candidate.event_time,
        started_at: now,
        origin: candidate.origin.clone(),
        state: RolloutState::InProgress,
    })
}

/// Deregisters a revision no deployment of the service uses (best effort).
async fn clean_up(ecs: &Ecs, arn: &str, service: &ServiceState) {
    if service.deployments.iter().any(|d| d.task_definition == arn) {
        return;
    }
    match ecs.deregister(arn).await {
        Ok(()) => info!(task_definition_arn = %arn, "deregistered a revision no service uses"),
        Err(error) => warn!(task_definition_arn = %arn, error = %error, "could not deregister an unused revision"),
    }
}

/// After taking over the lease of an invocation that died: the revision just before ours, if it
/// is a revision of this app that nothing runs, was registered by the dead invocation and never
/// used. Deregister it, so one rollout leaves one revision.
async fn clean_up_left_behind(ecs: &Ecs, app: &AppConfig, ours: &Described, service: &ServiceState) {
    let family = ours.definition.family().unwrap_or_default();
    let number = ours.definition.revision();
    if number <= 1 {
        return;
    }
    let Ok(before) = ecs.task_definition(&format!("{family}:{}", number - 1)).await else { return };
    let unused = before.tag(TAG_APP) == Some(app.name.as_str())
        && before.definition.status() == Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active);
    if unused {
        clean_up(ecs, before.arn(), service).await;
    }
}

/// The image the app's container runs in `definition`, or which containers there are instead.
pub fn app_container_image<'a>(
    app: &AppConfig,
    definition: &'a aws_sdk_ecs::types::TaskDefinition,
    arn: &str,
) -> Result<&'a str, DeployError> {
    taskdef::container_image(definition, &app.container).ok_or_else(|| DeployError::ContainerNotFound {
        container: app.container.clone(),
        task_definition: arn.to_owned(),
        found: taskdef::container_names(definition).join(", "),
        parameter: app.parameter.clone(),
    })
}
