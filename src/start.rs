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
use crate::taskdef::{self, ImageSwap, TAG_APP, TAG_IMAGE_DIGEST, TAG_IMAGE_TAG, TAG_LEASE};
use crate::types::{AppName, Environment, ImageDigest, ImageTag};
use crate::vocabulary::{Outcome, Severity};

/// What to roll out.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub tag: &'a ImageTag,
    pub digest: &'a ImageDigest,
    /// The digest-pinned image in the app's own registry (see [`AppConfig::registry`]).
    pub image: &'a str,
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
pub async fn observe(target: &Target<'_>, app: &AppConfig) -> Result<Observed, DeployError> {
    let service_target = target.service;
    let service = target.ecs.service(&service_target.cluster, &service_target.service).await?;
    let running = target.revision(&service.task_definition).await?;
    let image = taskdef::container_image(&running.definition, &app.container).map(str::to_owned);
    let revision = Revision {
        arn: service.task_definition.clone(),
        digest: image.as_deref().and_then(image::digest_of).and_then(|d| ImageDigest::parse(d).ok()),
    };
    Ok(Observed { service, running, revision, image })
}

/// The state of the held environment, recorded on first contact (the service's current revision
/// as its baseline) before anything else is changed there.
pub async fn ensure_state<'h>(here: &'h mut Leased<'_>) -> Result<&'h EnvState, DeployError> {
    if here.target_state().is_none() {
        let observed = observe(&here.target, here.app).await?;
        let target = here.target.service;
        let first = EnvState::first(&here.app.name, here.env, &target.cluster, &target.service, observed.revision);
        here.commit(Change::new(first)).await?;
    }
    Ok(here.state()?)
}

/// Rolls `candidate` out to `env` of `app` unless the service already runs it. The state must be
/// held; on first contact the state (with the service's current revision as baseline) is
/// committed before anything changes.
pub async fn start(here: &mut Leased<'_>, candidate: &Candidate<'_>) -> Result<Plan, DeployError> {
    let (app, env) = (here.app, here.env);
    let observed = observe(&here.target, app).await?;
    if here.target_state().is_none() {
        let target = here.target.service;
        let first = EnvState::first(&app.name, env, &target.cluster, &target.service, observed.revision.clone());
        here.commit(Change::new(first)).await?;
    }
    observed.app_image(app)?;
    let now = Utc::now();
    let mut change = Change::new(here.state()?.clone());
    let provenance = Provenance { tokens: here.held.adoptable(), image: Some(candidate.image) };
    let adopted = note_what_runs(app, env, &mut change, &observed, &provenance, now);
    here.held.settle_unsettled();

    if let Some(started) = already_running(&observed, candidate.digest, adopted) {
        return Ok(Plan { change, started, observed });
    }
    let token = here.held.token().to_owned();
    let holder = Holder { token: &token, took_over: here.held.took_over };
    let rollout = match roll_out(&here.target, app, env, &change.state, &observed, candidate, holder).await {
        Ok(rollout) => rollout,
        Err(RollOutError::Unclear { orphan, error }) => {
            here.held.acting();
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
    // The service runs a revision tagged with this lease's token until a commit records it: if
    // that commit never happens, the release keeps the token for the next holder to adopt by.
    // (A holder that dies here leaves its token on the lease it held, which is taken over.)
    here.held.acting();
    change.state.orphan = None;
    let replaced_by = format!("replaced by {} ({})", rollout.tag, rollout.digest.short());
    settle_in_flight(app, env, &mut change, &observed.service, &replaced_by, now);
    change.state.rollback = None;
    begin(app, env, &mut change, rollout.clone());
    Ok(Plan { change, started: Started::Rolling(Box::new(rollout)), observed })
}

/// How a start ends without rolling anything out, when the service runs `digest` already: this
/// very rollout, when its record was lost and it was just `adopted`, else nothing to do. `None`:
/// the service runs something else, roll out.
fn already_running(observed: &Observed, digest: &ImageDigest, adopted: Option<Rollout>) -> Option<Started> {
    if observed.revision.digest.as_ref() != Some(digest) {
        return None;
    }
    Some(match adopted.filter(|r| &r.digest == digest) {
        Some(rollout) => Started::Rolling(Box::new(rollout)),
        None => Started::AlreadyRunning { task_definition_arn: observed.service.task_definition.clone() },
    })
}

/// Records a rollout as started: state, history, notification.
pub fn begin(app: &AppConfig, env: Environment, change: &mut Change<EnvState>, rollout: Rollout) {
    let mut entry = history_of(&app.name, &rollout, env, rollout.started_at);
    entry.event = Outcome::Deploying;
    if let Origin::Promotion { reason, .. } = &rollout.origin {
        entry.event = Outcome::Promoted;
        entry.reason = reason.clone();
    }
    // A newer release supersedes the one before on the environment's other targets.
    let replaced_by = format!("replaced by {} ({})", rollout.tag, rollout.digest.short());
    change.state.supersede_targets(rollout.started_at, &replaced_by);
    change.state.rollout = Some(rollout.clone());
    let mut notification = Notification::of_rollout(app, env, &rollout);
    notification.targets = change.state.target_statuses(app, env);
    entry.targets = notification.targets.clone();
    change.history.push(entry);
    change.announcements.push(Announcement::new(notification, app));
    // A newer rollout ends a soak: the soaking image is not vetted here.
    change.state.soak = None;
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
    entry.on_behalf_of = rollout.on_behalf_of().map(str::to_owned);
    entry.approved_by = rollout.approved_by().map(str::to_owned);
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
        // The environment's other targets: their rollouts of it are superseded with it.
        change.state.supersede_targets(now, reason);
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

/// What makes a revision found running Conveyor's own lost rollout rather than someone else's
/// revision tagged like one (anyone who may register task definitions can set `conveyor:*` tags).
pub struct Provenance<'a> {
    /// Tokens of the holders that registered revisions under this environment's lease and
    /// stopped before committing them ([`crate::ledger::Held::adoptable`]).
    pub tokens: &'a [String],
    /// The image being rolled out now, when there is one: an earlier attempt pulled from the same
    /// registry (account and region).
    pub image: Option<&'a str>,
}

impl Provenance<'_> {
    /// Whether Conveyor put `observed`'s revision in place for `digest`: registered under a lease
    /// it recorded (its token, or the orphan the state names), running an ECR image of the app's
    /// repository pinned to that digest.
    fn vouches_for(&self, app: &AppConfig, state: &EnvState, observed: &Observed, digest: &ImageDigest) -> bool {
        let arn = &observed.service.task_definition;
        let registered = state.orphan.as_ref().is_some_and(|orphan| &orphan.arn == arn)
            || observed.running.tag(TAG_LEASE).is_some_and(|token| self.tokens.iter().any(|t| t == token));
        fn registry(image: &str) -> Option<(&str, &str)> {
            image::ecr_parts(image).map(|parts| (parts.account, parts.region))
        }
        let own_image = observed.image.as_deref().is_some_and(|running| {
            image::digest_of(running) == Some(digest.as_str())
                && image::ecr_parts(running).is_some_and(|parts| parts.repository == app.repository)
                && self.image.is_none_or(|now| registry(now) == registry(running))
        });
        registered && own_image
    }
}

/// Compares what runs with what the state knows: adopts a rollout whose record was lost (and
/// returns it), notes and announces drift (superseding a rollout in flight).
pub fn note_what_runs(
    app: &AppConfig,
    env: Environment,
    change: &mut Change<EnvState>,
    observed: &Observed,
    provenance: &Provenance<'_>,
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
    let vouched = digest.as_ref().is_some_and(|digest| provenance.vouches_for(app, &change.state, observed, digest));
    if ours && !vouched {
        warn!(app = %app.name, environment = %env, task_definition_arn = %running,
            "a revision tagged as Conveyor's that Conveyor did not register under its lease: not adopted, drift");
    }
    if let (true, Some(tag), Some(digest)) = (ours && vouched, tag, digest) {
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
            origin: if matches!(app.pipeline.source(env), Some(crate::config::Source::From { .. })) {
                Origin::Promotion {
                    requested_by: None,
                    on_behalf_of: None,
                    reason: None,
                    forced: false,
                    approved_by: None,
                }
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
    // The soaking image no longer runs: it is not vetted here.
    change.state.soak = None;
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
        change.state.cluster,
        change.state.service,
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

/// The lease a rollout happens under: its token, tagged on the revision so that a later holder
/// can adopt it ([`Provenance`]), and whether it was taken over from a holder that died.
struct Holder<'a> {
    token: &'a str,
    took_over: bool,
}

/// Registers the candidate on top of what runs and points the service at it.
async fn roll_out(
    target: &Target<'_>,
    app: &AppConfig,
    env: Environment,
    state: &EnvState,
    observed: &Observed,
    candidate: &Candidate<'_>,
    holder: Holder<'_>,
) -> Result<Rollout, RollOutError> {
    let ecs = &target.ecs;
    observed.app_image(app)?;
    let image = candidate.image.to_owned();
    let swap = ImageSwap {
        container: &app.container,
        image: Some(image.clone()),
        tags: vec![
            (TAG_APP, app.name.to_string()),
            (TAG_IMAGE_TAG, candidate.tag.to_string()),
            (TAG_IMAGE_DIGEST, candidate.digest.to_string()),
            (TAG_LEASE, holder.token.to_owned()),
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
    if holder.took_over && reusable.is_none() {
        clean_up_left_behind(ecs, app, &registered, &observed.service).await;
    }
    let service = target.service;
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

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use aws_sdk_ecs::types::{ContainerDefinition, DeploymentRolloutState, Tag, TaskDefinition};

    use super::*;
    use crate::aws::DeploymentStatus;
    use crate::fixtures::{app, deployment, digest, service, tag, TD1, TD2, TD3, TERRAFORM};

    fn state() -> EnvState {
        crate::fixtures::stage_met(TD1, '1')
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).unwrap()
    }

    fn image(d: char) -> String {
        format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop@{}", digest(d))
    }

    /// A rollout of image `d` (tag `v{d}`) onto `td`, from `TD1`, as deployment `ecs-svc/{d}`.
    fn rollout(td: &str, d: char, state: RolloutState) -> Rollout {
        Rollout {
            id: format!("r{d}"),
            tag: tag(&format!("v{d}")),
            tags: vec![tag(&format!("v{d}"))],
            digest: digest(d),
            image: image(d),
            task_definition_arn: td.into(),
            previous: Revision { arn: TD1.into(), digest: Some(digest('1')) },
            deployment_id: Some(format!("ecs-svc/{d}")),
            event_time: at(0),
            started_at: at(0),
            origin: Origin::Push,
            state,
        }
    }

    /// The service runs `td` (its primary deployment `ecs-svc/running`), whose app container runs
    /// image `d`, the revision carrying `tags`.
    fn observed(td: &str, d: char, tags: &[(&str, &str)]) -> Observed {
        let container = ContainerDefinition::builder().name("api").image(image(d)).build();
        let definition =
            TaskDefinition::builder().task_definition_arn(td).family("shop").container_definitions(container);
        let tags = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect();
        Observed {
            service: service(
                vec![deployment(
                    "ecs-svc/running",
                    DeploymentStatus::Primary,
                    DeploymentRolloutState::InProgress,
                    td,
                    2,
                )],
                2,
            ),
            running: Arc::new(Described { definition: definition.build(), tags, raw: None }),
            revision: Revision { arn: td.into(), digest: Some(digest(d)) },
            image: Some(image(d)),
        }
    }

    /// The token of a holder that registered a revision and died before committing it.
    const DEAD: &str = "0190c0ffee";

    fn dead_holder() -> Provenance<'static> {
        static TOKENS: LazyLock<Vec<String>> = LazyLock::new(|| vec![DEAD.to_owned()]);
        static IMAGE: LazyLock<String> = LazyLock::new(|| image('9'));
        Provenance { tokens: &TOKENS, image: Some(IMAGE.as_str()) }
    }

    /// The tags Conveyor puts on the revision it registers for image `d` (tag `v{d}`), under the
    /// lease of the holder that died.
    fn conveyors(d: char) -> Vec<(&'static str, String)> {
        vec![
            (TAG_APP, "shop".into()),
            (TAG_IMAGE_TAG, format!("v{d}")),
            (TAG_IMAGE_DIGEST, digest(d).to_string()),
            (TAG_LEASE, DEAD.into()),
        ]
    }

    fn observed_ours(td: &str, d: char) -> Observed {
        let tags = conveyors(d);
        observed(td, d, &tags.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
    }

    fn events(change: &Change<EnvState>) -> Vec<Outcome> {
        change.history.iter().map(|h| h.event).collect()
    }

    fn announced(change: &Change<EnvState>) -> Vec<Outcome> {
        change.announcements.iter().map(|a| a.notification.outcome).collect()
    }

    #[test]
    fn a_revision_the_state_knows_is_neither_adopted_nor_drift() {
        let mut state = state();
        state.rollout = Some(rollout(TD2, '2', RolloutState::Verified { at: at(1) }));
        for running in [observed(TD1, '1', &[]), observed_ours(TD2, '2')] {
            let mut change = Change::new(state.clone());
            assert_eq!(note_what_runs(&app(), Environment::STAGE, &mut change, &running, &dead_holder(), at(5)), None);
            assert_eq!(change.state, state);
            assert!(change.history.is_empty() && change.announcements.is_empty());
        }
    }

    #[test]
    fn a_rollout_whose_record_was_lost_is_adopted_not_started_again() {
        let mut change = Change::new(state());
        let adopted =
            note_what_runs(&app(), Environment::STAGE, &mut change, &observed_ours(TD2, '2'), &dead_holder(), at(5))
                .expect("adopted");
        assert_eq!(
            (&adopted.tag, &adopted.digest, adopted.task_definition_arn.as_str()),
            (&tag("v2"), &digest('2'), TD2)
        );
        assert_eq!(adopted.image, image('2'));
        assert_eq!(
            adopted.previous,
            Revision { arn: TD1.into(), digest: Some(digest('1')) },
            "the known-good revision"
        );
        assert_eq!(adopted.deployment_id.as_deref(), Some("ecs-svc/running"), "the primary deployment running it");
        assert_eq!((adopted.origin.clone(), adopted.state.clone()), (Origin::Push, RolloutState::InProgress));
        assert_eq!(change.state.rollout.as_ref(), Some(&adopted));
        assert_eq!(change.state.drift, None);
        assert_eq!(events(&change), [Outcome::Deploying]);
        assert_eq!(change.history[0].reason.as_deref(), Some("adopted: the rollout happened but its record was lost"));
        assert_eq!(announced(&change), [Outcome::Deploying]);
    }

    #[test]
    fn adopting_a_lost_rollout_supersedes_the_one_in_flight_and_follows_it() {
        let mut state = state();
        state.rollout = Some(rollout(TD2, '2', RolloutState::InProgress));
        let mut change = Change::new(state);
        let adopted =
            note_what_runs(&app(), Environment::STAGE, &mut change, &observed_ours(TD3, '3'), &dead_holder(), at(5))
                .expect("adopted");
        assert_eq!(adopted.previous, Revision { arn: TD2.into(), digest: Some(digest('2')) });
        assert_eq!(events(&change), [Outcome::Superseded, Outcome::Deploying]);
        assert_eq!(change.history[0].reason.as_deref(), Some("replaced by an earlier attempt's rollout"));
        assert_eq!(announced(&change), [Outcome::Superseded, Outcome::Deploying]);
    }

    #[test]
    fn a_lost_rollout_adopted_in_prod_is_a_promotion() {
        let mut change = Change::new(state());
        let adopted =
            note_what_runs(&app(), Environment::PROD, &mut change, &observed_ours(TD2, '2'), &dead_holder(), at(5))
                .expect("adopted");
        assert_eq!(
            adopted.origin,
            Origin::Promotion {
                requested_by: None,
                on_behalf_of: None,
                reason: None,
                forced: false,
                approved_by: None
            }
        );
        assert_eq!(announced(&change), [Outcome::Promoted]);
    }

    #[test]
    fn an_earlier_revision_of_conveyors_that_ecs_went_back_to_is_neither_lost_nor_drift() {
        // The rollout onto :3 failed and the circuit breaker went back to :2, an earlier rollout's
        // revision the state no longer names.
        let mut state = state();
        state.rollout = Some(rollout(TD3, '3', RolloutState::InProgress));
        let mut change = Change::new(state.clone());
        assert_eq!(
            note_what_runs(&app(), Environment::STAGE, &mut change, &observed_ours(TD2, '2'), &dead_holder(), at(5)),
            None
        );
        assert_eq!(change.state, state);
        assert!(change.history.is_empty() && change.announcements.is_empty());
    }

    #[test]
    fn a_revision_nobody_told_conveyor_about_is_drift_announced_once() {
        let mut state = state();
        state.rollout = Some(rollout(TD2, '2', RolloutState::InProgress));
        let mut change = Change::new(state);
        assert_eq!(
            note_what_runs(
                &app(),
                Environment::STAGE,
                &mut change,
                &observed(TERRAFORM, '2', &[]),
                &dead_holder(),
                at(5)
            ),
            None
        );
        assert_eq!(change.state.drift, Some(Drift { revision: TERRAFORM.into(), seen_at: at(5) }));
        assert_eq!(change.state.rollback, None);
        assert_eq!(events(&change), [Outcome::Drift, Outcome::Superseded]);
        assert_eq!(change.history[0].task_definition_arn.as_deref(), Some(TERRAFORM));
        assert_eq!(change.history[0].digest, Some(digest('2')));
        assert_eq!(announced(&change), [Outcome::Drift, Outcome::Superseded]);
        assert_eq!(change.announcements[0].notification.severity, Severity::Info);
        let rollout = change.state.rollout.as_ref().unwrap();
        assert!(
            matches!(&rollout.state, RolloutState::Superseded { reason, .. } if reason.contains("changed outside Conveyor"))
        );

        // Seen again: known now, nothing more to say.
        let mut again = Change::new(change.state.clone());
        assert_eq!(
            note_what_runs(
                &app(),
                Environment::STAGE,
                &mut again,
                &observed(TERRAFORM, '2', &[]),
                &dead_holder(),
                at(6)
            ),
            None
        );
        assert!(again.history.is_empty() && again.announcements.is_empty());
    }

    #[test]
    fn a_revision_tagged_like_conveyors_but_not_registered_under_its_lease_is_drift() {
        let d2 = digest('2').to_string();
        let forged =
            [(TAG_APP, "shop"), (TAG_IMAGE_TAG, "v2"), (TAG_IMAGE_DIGEST, d2.as_str()), (TAG_LEASE, "guessed")];
        let untokened = [(TAG_APP, "shop"), (TAG_IMAGE_TAG, "v2"), (TAG_IMAGE_DIGEST, d2.as_str())];
        for tags in [&forged[..], &untokened[..]] {
            let mut change = Change::new(state());
            let running = observed(TD2, '2', tags);
            assert_eq!(note_what_runs(&app(), Environment::STAGE, &mut change, &running, &dead_holder(), at(5)), None);
            assert!(change.state.drift.is_some(), "{tags:?}");
        }
    }

    #[test]
    fn a_revision_of_a_recorded_lease_running_another_image_is_drift() {
        let mut running = observed_ours(TD2, '2');
        running.image = Some(format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/evil@{}", digest('2')));
        let mut change = Change::new(state());
        assert_eq!(note_what_runs(&app(), Environment::STAGE, &mut change, &running, &dead_holder(), at(5)), None);
        let mut running = observed_ours(TD2, '2');
        running.image = Some(format!("999999999999.dkr.ecr.us-east-1.amazonaws.com/shop@{}", digest('2')));
        assert_eq!(note_what_runs(&app(), Environment::STAGE, &mut change, &running, &dead_holder(), at(5)), None);
        let mut running = observed_ours(TD2, '2');
        running.image = Some(image('3'));
        assert_eq!(note_what_runs(&app(), Environment::STAGE, &mut change, &running, &dead_holder(), at(5)), None);
        assert!(change.state.drift.is_some());
    }

    #[test]
    fn the_orphan_the_state_recorded_is_adopted_whoever_registered_it() {
        let mut state = state();
        state.orphan = Some(Orphan { arn: TD2.into(), digest: digest('2'), base: TD1.into() });
        let mut change = Change::new(state);
        let nobody = Provenance { tokens: &[], image: None };
        assert!(
            note_what_runs(&app(), Environment::STAGE, &mut change, &observed_ours(TD2, '2'), &nobody, at(5)).is_some()
        );
    }

    #[test]
    fn a_revision_tagged_for_another_app_or_without_its_image_tags_is_drift() {
        let d2 = digest('2').to_string();
        let another_app = [(TAG_APP, "cart"), (TAG_IMAGE_TAG, "v2"), (TAG_IMAGE_DIGEST, d2.as_str())];
        let no_digest = [(TAG_APP, "shop"), (TAG_IMAGE_TAG, "v2")];
        for tags in [&another_app[..], &no_digest[..]] {
            let mut change = Change::new(state());
            assert_eq!(
                note_what_runs(
                    &app(),
                    Environment::STAGE,
                    &mut change,
                    &observed(TD2, '2', tags),
                    &dead_holder(),
                    at(5)
                ),
                None
            );
            assert!(change.state.drift.is_some(), "{tags:?}");
            assert_eq!(events(&change), [Outcome::Drift]);
        }
    }

    #[test]
    fn a_rollout_the_circuit_breaker_failed_and_went_back_from_is_rolled_back_not_superseded() {
        let mut state = state();
        state.rollout = Some(rollout(TD3, '3', RolloutState::InProgress));
        let mut failed = deployment("ecs-svc/3", DeploymentStatus::Active, DeploymentRolloutState::Failed, TD3, 2);
        failed.rollout_state_reason = Some("ECS deployment circuit breaker: tasks failed to start.".into());
        let back = deployment("ecs-svc/9", DeploymentStatus::Primary, DeploymentRolloutState::InProgress, TD2, 2);
        let mut change = Change::new(state);
        settle_in_flight(
            &app(),
            Environment::STAGE,
            &mut change,
            &service(vec![back, failed], 2),
            "replaced by v4",
            at(5),
        );
        let rollout = change.state.rollout.as_ref().unwrap();
        let RolloutState::RolledBack { at: when, reason, to, by } = &rollout.state else {
            panic!("rolled back: {:?}", rollout.state)
        };
        assert_eq!((*when, to.as_str(), *by), (at(5), TD2, RolledBackBy::CircuitBreaker));
        assert_eq!(
            reason,
            "ECS deployment circuit breaker: tasks failed to start. (ECS circuit breaker already rolled back)"
        );
        let [(_, image)] = &change.images[..] else { panic!("the image's failure: {:?}", change.images) };
        assert_eq!(
            image.failed.as_ref().map(|(env, failure)| (*env, failure.reason.as_str())),
            Some((Environment::STAGE, reason.as_str()))
        );
        assert_eq!(events(&change), [Outcome::RolledBack]);
        assert_eq!(change.history[0].rollback_task_definition_arn.as_deref(), Some(TD2));
        assert_eq!(announced(&change), [Outcome::RolledBack]);
    }

    #[test]
    fn a_rollout_in_flight_that_ecs_did_not_fail_is_superseded() {
        let mut state = state();
        state.rollout = Some(rollout(TD3, '3', RolloutState::InProgress));
        let rolling = deployment("ecs-svc/3", DeploymentStatus::Primary, DeploymentRolloutState::InProgress, TD3, 2);
        let mut change = Change::new(state);
        settle_in_flight(&app(), Environment::STAGE, &mut change, &service(vec![rolling], 2), "replaced by v4", at(5));
        assert_eq!(
            change.state.rollout.as_ref().unwrap().state,
            RolloutState::Superseded { at: at(5), reason: "replaced by v4".into() }
        );
        assert!(change.images.is_empty());
        assert_eq!(events(&change), [Outcome::Superseded]);
        assert_eq!(announced(&change), [Outcome::Superseded]);
    }

    #[test]
    fn a_settled_rollout_is_not_settled_again() {
        let mut state = state();
        state.rollout = Some(rollout(TD3, '3', RolloutState::Verified { at: at(1) }));
        let running = deployment("ecs-svc/3", DeploymentStatus::Primary, DeploymentRolloutState::Completed, TD3, 2);
        let mut change = Change::new(state.clone());
        settle_in_flight(&app(), Environment::STAGE, &mut change, &service(vec![running], 2), "replaced by v4", at(5));
        supersede(&app(), Environment::STAGE, &mut change, "replaced by v4", at(5));
        assert_eq!(change.state, state);
        assert!(change.history.is_empty() && change.announcements.is_empty());
    }

    #[test]
    fn a_rollout_begins_as_deploying_in_stage_and_promoted_with_its_reason_in_prod() {
        let mut change = Change::new(state());
        begin(&app(), Environment::STAGE, &mut change, rollout(TD2, '2', RolloutState::InProgress));
        assert_eq!(events(&change), [Outcome::Deploying]);
        assert_eq!(announced(&change), [Outcome::Deploying]);
        assert_eq!(change.state.rollout.as_ref().map(|r| r.task_definition_arn.as_str()), Some(TD2));

        let mut promotion = rollout(TD2, '2', RolloutState::InProgress);
        promotion.origin = Origin::Promotion {
            requested_by: Some("alice".into()),
            on_behalf_of: None,
            reason: Some("hotfix".into()),
            forced: true,
            approved_by: None,
        };
        let mut change = Change::new(state());
        begin(&app(), Environment::PROD, &mut change, promotion);
        assert_eq!(events(&change), [Outcome::Promoted]);
        let entry = &change.history[0];
        assert_eq!(
            (entry.reason.as_deref(), entry.requested_by.as_deref(), entry.forced),
            (Some("hotfix"), Some("alice"), true)
        );
        assert_eq!(announced(&change), [Outcome::Promoted]);
    }

    #[test]
    fn a_service_running_another_image_is_rolled_out() {
        let running = observed(TD2, '2', &[]);
        assert!(already_running(&running, &digest('3'), None).is_none());
        let adopted = rollout(TD2, '2', RolloutState::InProgress);
        assert!(already_running(&running, &digest('3'), Some(adopted)).is_none());
        let mut unpinned = observed(TD2, '2', &[]);
        unpinned.revision.digest = None;
        assert!(already_running(&unpinned, &digest('2'), None).is_none(), "an image by tag is not known to be it");
    }

    #[test]
    fn a_service_running_the_candidate_already_changes_nothing() {
        let started = already_running(&observed(TD2, '2', &[]), &digest('2'), None);
        assert!(matches!(started, Some(Started::AlreadyRunning { task_definition_arn }) if task_definition_arn == TD2));
    }

    #[test]
    fn the_candidates_lost_rollout_just_adopted_is_the_start() {
        let adopted = rollout(TD2, '2', RolloutState::InProgress);
        let started = already_running(&observed_ours(TD2, '2'), &digest('2'), Some(adopted.clone()));
        assert!(matches!(started, Some(Started::Rolling(rollout)) if *rollout == adopted));
    }
}
