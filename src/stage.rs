//! stage-deploy: an ECR push rolls out to the stage service of every app fed by that repository.
//!
//! Under the stage lease of each app: a push older than one already seen is late, the very same
//! push again is a repeat; a push queued behind a newer one is coalesced (its tag recorded, no
//! revision registered); while stage is paused the push is recorded and held; a push of the digest
//! already rolling out or running only adds its tag. Everything else starts a rollout.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, info, instrument};

use crate::config::{AppConfig, Configs, InvalidApp};
use crate::error::{DeployError, Error};
use crate::events::{self, Push, Skip};
use crate::fleet::Fleet;
use crate::leased::{Leased, Leases};
use crate::ledger::{Change, HistoryEntry, ImageUpdate, ItemKey, Lease, Ledger, TagItem, Waiting};
use crate::record::{Arrival, EnvState, RecordedPush};
use crate::rollout::{Origin, RolloutState};
use crate::start::{self, Candidate, ImageSource, Started};
use crate::types::Environment;
use crate::vocabulary::{Action, Outcome};
use crate::Invocation;

/// A queued newer push older than this is not trusted to still be waiting.
const WAITING_FRESH: chrono::Duration = chrono::Duration::seconds(60);

/// What one invocation did, app by app (the Lambda response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageReport {
    /// Set when the whole event was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub apps: Vec<AppReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReport {
    pub app: String,
    /// [`Action::Deploying`], [`Action::Skipped`], [`Action::Paused`] or [`Action::Failed`].
    pub status: Action,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
}

impl StageReport {
    fn skipped(reason: String) -> Self {
        StageReport { skipped: Some(reason), apps: Vec::new() }
    }
}

impl AppReport {
    fn of(app: &AppConfig, status: Action, detail: impl Into<String>) -> Self {
        AppReport {
            app: app.name.to_string(),
            status,
            detail: detail.into(),
            task_definition_arn: None,
            deployment_id: None,
        }
    }
}

/// Handles one EventBridge event. Fails (so Lambda retries, and the function's error alarm
/// fires) if any matching app failed; the retry skips what already happened.
pub async fn handle(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    payload: Value,
    invocation: &Invocation,
) -> Result<StageReport, Error> {
    let push = match events::push(payload) {
        Ok(Ok(push)) => push,
        Ok(Err(Skip(reason))) => {
            info!(reason = %reason, "event skipped");
            return Ok(StageReport::skipped(reason));
        }
        Err(invalid) => {
            error!(error = %invalid, "invalid event");
            return Err(invalid.into());
        }
    };
    // Boxed, like every handler's work: the whole future nests deeply enough through the SDK to
    // hit the compiler's layout depth limit in the binary.
    Box::pin(deploy_push(configs, fleet, leases, &push, invocation)).await
}

#[instrument(skip_all, fields(event_id = push.event_id.as_deref(), repository = %push.repository, tag = %push.tag, digest = %push.digest))]
async fn deploy_push(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    push: &Push,
    invocation: &Invocation,
) -> Result<StageReport, Error> {
    let config = configs.get().await?;
    let concerned: Vec<&InvalidApp> =
        config.invalid.iter().filter(|i| i.repository.as_deref() == Some(push.repository.as_str())).collect();
    for invalid in concerned {
        crate::announce::config_error(configs, leases, invalid, invocation).await;
    }
    let fed: Vec<&AppConfig> = config.fed_by(&push.repository).collect();
    if fed.is_empty() {
        let reason = format!("no app is fed by repository {}", push.repository);
        info!(reason = %reason, "event skipped");
        return Ok(StageReport::skipped(reason));
    }

    let mut report = StageReport { skipped: None, apps: Vec::new() };
    let mut failures = Vec::new();
    for app in fed {
        match deploy_app(fleet, leases, app, push, invocation).await {
            Ok(app_report) => report.apps.push(app_report),
            Err(error) => {
                error!(app = %app.name, environment = "stage", tag = %push.tag, digest = %push.digest, error = %error,
                    retryable = error.retryable(), "stage deploy failed");
                report.apps.push(AppReport::of(app, Action::Failed, error.to_string()));
                failures.push((app.name.clone(), error));
            }
        }
    }
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(Error::Deploy(failures))
    }
}

async fn deploy_app(
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    push: &Push,
    invocation: &Invocation,
) -> Result<AppReport, DeployError> {
    if !app.tags.admits(&push.tag) {
        return Ok(skipped(app, push, format!("tag {} does not match the app's tag pattern", push.tag)));
    }
    let key = ItemKey::env(&app.name, Environment::Stage);
    let owner = format!("stage-deploy {}", push.event_id.as_deref().unwrap_or(push.tag.as_str()));
    // Queued when busy: a holder working on an older push of this service leaves the rollout to us.
    let waiting = Waiting { time: push.time, digest: push.digest.clone(), since: Utc::now() };
    let lease = Lease::new(key, owner, invocation).patient().queue(waiting);
    let target = fleet.target(app, Environment::Stage).await;
    leases
        .with_env(lease, app, Environment::Stage, target, async |here| {
            let result = deploy_leased(here, push).await;
            if let Err(error) = &result {
                if error.needs_people() {
                    refuse(here, push, error).await;
                }
            }
            result
        })
        .await
}

fn skipped(app: &AppConfig, push: &Push, detail: String) -> AppReport {
    info!(app = %app.name, environment = "stage", tag = %push.tag, digest = %push.digest, reason = %detail, "app skipped");
    AppReport::of(app, Action::Skipped, detail)
}

/// What to do with a push, from the state alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record its tag only.
    Record(String),
    /// Nothing at all: this very push was handled.
    Nothing(String),
    /// Record it and hold it: stage is paused.
    Hold,
    /// Stage is rolling out or runs this digest already: add the tag to that rollout.
    AddTag,
    Deploy,
}

/// Decides what a push does to stage.
pub fn decide(state: Option<&EnvState>, waiting: Option<&Waiting>, push: &Push, now: DateTime<Utc>) -> Decision {
    let Some(state) = state else { return Decision::Deploy };
    let held = state.held_push.as_ref().is_some_and(|h| h.time == push.time && h.digest == push.digest);
    match state.arrival(push.time, &push.digest, &push.tag) {
        // The push a pause held, delivered again (by `conveyor resume --deploy-latest`, or
        // EventBridge) once the pause is over: it is the newest, and never rolled out.
        Arrival::Repeated if held && state.paused.is_none() => {}
        Arrival::Repeated => return Decision::Nothing("this push was already handled (repeated delivery)".into()),
        Arrival::Late => {
            return Decision::Record(format!(
                "push at {} is older than the newest one seen: tag recorded, nothing rolled out",
                push.time.to_rfc3339()
            ))
        }
        Arrival::AnotherTag => {
            let rolling = state.rollout.as_ref().filter(|r| r.digest == push.digest);
            if rolling.is_some_and(|r| matches!(r.state, RolloutState::InProgress | RolloutState::Verified { .. })) {
                return Decision::AddTag;
            }
            return Decision::Record(format!(
                "another tag of an image pushed in the same second: tag {} recorded",
                push.tag
            ));
        }
        Arrival::Newer => {}
    }
    if let Some(newer) =
        waiting.filter(|w| w.time > push.time && w.digest != push.digest && now - w.since < WAITING_FRESH)
    {
        return Decision::Record(format!(
            "a newer push ({}) is queued for this service: tag recorded, rollout left to it (coalesced)",
            newer.digest.short()
        ));
    }
    if state.paused.is_some() {
        return Decision::Hold;
    }
    let current = state.rollout.as_ref().filter(|r| r.digest == push.digest);
    if current.is_some_and(|r| matches!(r.state, RolloutState::InProgress | RolloutState::Verified { .. })) {
        return Decision::AddTag;
    }
    Decision::Deploy
}

/// [`deploy_app`] under the service's lease: decide, roll out, commit.
async fn deploy_leased(here: &mut Leased<'_>, push: &Push) -> Result<AppReport, DeployError> {
    let (app, env, now) = (here.app, here.env, Utc::now());
    let ours = here.held.waiting.as_ref().is_some_and(|w| w.time == push.time && w.digest == push.digest);
    match decide(here.held.state.as_ref(), here.held.waiting.as_ref(), push, now) {
        Decision::Nothing(detail) => Ok(skipped(app, push, detail)),
        Decision::Record(detail) => {
            let mut change = Change::new(here.state()?.clone());
            change.state.saw_push(push.time, &push.digest, &push.tag);
            change.clear_waiting = ours;
            record_tag(here.ledger(), app, push, &mut change).await?;
            here.commit(change).await?;
            Ok(skipped(app, push, detail))
        }
        Decision::Hold => {
            let mut change = Change::new(here.state()?.clone());
            change.state.saw_push(push.time, &push.digest, &push.tag);
            change.state.held_push = Some(RecordedPush {
                event_id: push.event_id.clone(),
                time: push.time,
                repository: push.repository.clone(),
                account: push.account.clone(),
                region: push.region.clone(),
                tag: push.tag.clone(),
                digest: push.digest.clone(),
            });
            change.clear_waiting = ours;
            let mut entry = HistoryEntry::new(&app.name, env, Outcome::Held, now);
            entry.tag = Some(push.tag.clone());
            entry.digest = Some(push.digest.clone());
            entry.reason = change.state.paused.as_ref().map(|p| format!("stage is paused: {}", p.reason));
            change.history.push(entry);
            record_tag(here.ledger(), app, push, &mut change).await?;
            here.commit(change).await?;
            info!(app = %app.name, environment = "stage", tag = %push.tag, digest = %push.digest, "push held: stage is paused");
            Ok(AppReport::of(app, Action::Paused, "stage is paused: the push is recorded, nothing rolled out"))
        }
        Decision::AddTag => {
            let mut change = Change::new(here.state()?.clone());
            change.state.saw_push(push.time, &push.digest, &push.tag);
            change.clear_waiting = ours;
            let rollout = change.state.rollout.as_mut().filter(|r| r.digest == push.digest);
            if let Some(rollout) = rollout {
                rollout.add_tag(&push.tag);
                if let RolloutState::Verified { at } = rollout.state {
                    change.tags.push((app.name.clone(), tag_item(push, &rollout.image, at)));
                }
            }
            change.images.push((app.name.clone(), image_update(push)));
            here.commit(change).await?;
            Ok(skipped(app, push, format!("stage is already on {}: tag {} recorded", push.digest, push.tag)))
        }
        Decision::Deploy => deploy(here, push, ours).await,
    }
}

async fn deploy(here: &mut Leased<'_>, push: &Push, ours: bool) -> Result<AppReport, DeployError> {
    let app = here.app;
    let candidate = Candidate {
        tag: &push.tag,
        digest: &push.digest,
        source: ImageSource::Pushed {
            account: push.account.as_deref(),
            region: push.region.as_deref(),
            repository: &push.repository,
        },
        event_time: push.time,
        origin: Origin::Push,
    };
    let mut plan = start::start(here, &candidate).await?;
    plan.change.state.saw_push(push.time, &push.digest, &push.tag);
    plan.change.clear_waiting = ours;
    if plan.change.state.held_push.as_ref().is_some_and(|h| h.time <= push.time) {
        plan.change.state.held_push = None;
    }
    let report = match &plan.started {
        Started::AlreadyRunning { task_definition_arn } => {
            record_tag(here.ledger(), app, push, &mut plan.change).await?;
            skipped(app, push, format!("stage already runs {} ({task_definition_arn})", push.digest))
        }
        Started::Rolling(rollout) => {
            plan.change.images.push((app.name.clone(), image_update(push)));
            info!(app = %app.name, environment = "stage", tag = %rollout.tag, digest = %rollout.digest,
                task_definition_arn = %rollout.task_definition_arn, deployment_id = rollout.deployment_id.as_deref(),
                "rollout started");
            AppReport {
                app: app.name.to_string(),
                status: Action::Deploying,
                detail: format!("{} => {}", rollout.previous.arn, rollout.task_definition_arn),
                task_definition_arn: Some(rollout.task_definition_arn.clone()),
                deployment_id: rollout.deployment_id.clone(),
            }
        }
    };
    here.commit(plan.change).await?;
    if let Started::Rolling(rollout) = &plan.started {
        let metric = "PushToUpdateService";
        crate::metrics::latency(
            app.name.as_str(),
            "stage",
            metric,
            crate::metrics::Unit::Milliseconds,
            push.time,
            rollout.started_at,
        );
    }
    Ok(report)
}

/// The image facts a push adds: its tag, and when it was first pushed.
fn image_update(push: &Push) -> ImageUpdate {
    ImageUpdate {
        digest: Some(push.digest.clone()),
        repository: Some(push.repository.clone()),
        add_tags: vec![push.tag.clone()],
        pushed_at: Some(push.time),
        ..ImageUpdate::default()
    }
}

fn tag_item(push: &Push, image: &str, vetted_at: DateTime<Utc>) -> TagItem {
    TagItem { tag: push.tag.clone(), digest: push.digest.clone(), image: image.to_owned(), vetted_at }
}

/// Records the push's tag on its image now; if stage verified that image already, the tag
/// becomes promotable right away (unless it points to an image verified later).
async fn record_tag(
    ledger: &Ledger,
    app: &AppConfig,
    push: &Push,
    change: &mut Change<EnvState>,
) -> Result<(), DeployError> {
    let facts = ledger.update_image(&app.name, &image_update(push)).await?;
    if let (Some(vetted_at), Some(image)) = (facts.vetted_stage, facts.image.as_deref()) {
        let tag = tag_item(push, image, vetted_at);
        let current = ledger.tag(&app.name, &push.tag).await?;
        if current.is_none_or(|c| c.vetted_at <= vetted_at) {
            change.tags.push((app.name.clone(), tag));
        }
    }
    Ok(())
}

/// A push that cannot be rolled out until people act (the app's container is missing, the task
/// definition has members this build cannot copy): recorded, and announced once per push.
async fn refuse(here: &mut Leased<'_>, push: &Push, error: &DeployError) {
    let app = here.app;
    let Some(state) = here.held.state.clone() else { return };
    let mut change = Change::new(state);
    change.state.saw_push(push.time, &push.digest, &push.tag);
    let now = Utc::now();
    let mut entry = HistoryEntry::new(&app.name, Environment::Stage, Outcome::Failed, now);
    entry.tag = Some(push.tag.clone());
    entry.digest = Some(push.digest.clone());
    entry.reason = Some(format!("not rolled out: {error}"));
    change.history.push(entry);
    let mut notification = crate::notify::Notification::of_service(
        app,
        Environment::Stage,
        crate::vocabulary::Outcome::Failed,
        crate::vocabulary::Severity::Error,
    );
    notification.tag = Some(push.tag.clone());
    notification.digest = Some(push.digest.clone());
    notification.reason = Some(format!("not rolled out: {error}"));
    change.announcements.push(crate::notify::Announcement::new(notification, app));
    if let Err(commit) = here.commit(change).await {
        error!(app = %app.name, error = %commit, "could not record the refusal");
    }
}
