//! stage-deploy: an ECR push rolls out to every entry environment (stage, in a v2 pipeline) of
//! every app fed by that repository.
//!
//! Under the lease of each app's entry environment: a push older than one already seen is late, the very same
//! push again is a repeat; a push queued behind a newer one is coalesced (its tag recorded, no
//! revision registered); while stage is paused the push is recorded and held; a push of the digest
//! already rolling out or running only adds its tag. Everything else starts a rollout.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, info, instrument, warn};

use crate::config::{AppConfig, Configs, InvalidApp};
use crate::error::{DeployError, Error};
use crate::events::{self, Push, Skip};
use crate::fleet::Fleet;
use crate::leased::{Leased, Leases};
use crate::ledger::{Change, HistoryEntry, ImageFacts, ImageUpdate, ItemKey, Lease, Ledger, TagItem, Waiting};
use crate::record::{Arrival, EnvState, RecordedPush};
use crate::rollout::{Origin, RolloutState};
use crate::start::{self, Candidate, Started};
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
    /// The entry environment (none when the push concerns no environment of the app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
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
            environment: None,
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
    let push = match events::push(payload).and_then(|parsed| match parsed {
        Ok(push) => events::not_ahead_of(&push, Utc::now()).map(|()| Ok(push)),
        skip => Ok(skip),
    }) {
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

/// Rolls out a push recorded earlier (the one a pause held) to `app` alone, as its event would:
/// `resume` with `deploy_latest` asks for it by app, and the push is the one the state table
/// recorded. Other apps fed by the repository are theirs to resume. A failure is reported in the
/// answer (the resume itself is done).
pub async fn replay(
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    push: &RecordedPush,
    invocation: &Invocation,
) -> StageReport {
    let push = Push::from(push);
    let reports = match Box::pin(deploy_app(fleet, leases, app, &push, invocation)).await {
        Ok(reports) => reports,
        Err(error) => {
            error!(app = %app.name, tag = %push.tag, digest = %push.digest, error = %error,
                "the held push could not be rolled out");
            vec![AppReport::of(app, Action::Failed, error.to_string())]
        }
    };
    StageReport { skipped: None, apps: reports }
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
            Ok(app_reports) => report.apps.extend(app_reports),
            Err(error) => {
                error!(app = %app.name, tag = %push.tag, digest = %push.digest, error = %error,
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

/// Rolls `push` out to each entry environment of `app`, in pipeline order; the first that fails
/// stops the others (the retry goes on from there: each step is idempotent).
async fn deploy_app(
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    push: &Push,
    invocation: &Invocation,
) -> Result<Vec<AppReport>, DeployError> {
    if !app.tags.admits(&push.tag) {
        return Ok(vec![skipped(app, push, format!("tag {} does not match the app's tag pattern", push.tag))]);
    }
    // The image is built from the app's own registry, never from the event: anyone allowed to
    // invoke stage-deploy (or to forward events to Conveyor's bus) writes the envelope.
    let registry = app
        .registry(&fleet.home(invocation))
        .ok_or_else(|| DeployError::NoRegistry { app: app.name.clone(), parameter: app.parameter.clone() })?;
    if !registry.admits(push.account.as_deref(), push.region.as_deref()) {
        let detail = format!(
            "pushed to account {} in {}, but the app's repository is in account {} in {}: not the app's registry",
            push.account.as_deref().unwrap_or("?"),
            push.region.as_deref().unwrap_or("?"),
            registry.account,
            registry.region
        );
        warn!(app = %app.name, tag = %push.tag, digest = %push.digest, reason = %detail, "foreign push skipped");
        return Ok(vec![AppReport::of(app, Action::Skipped, detail)]);
    }
    let image = registry.image(&app.repository, &push.digest);
    // Each entry environment on its own: one that fails does not keep the push from the others
    // (the retry finds what was done as a repeat).
    let (mut reports, mut failed) = (Vec::new(), None);
    for entry in app.pipeline.entries() {
        match deploy_env(fleet, leases, app, entry.name, push, &image, invocation).await {
            Ok(report) => reports.push(AppReport { environment: Some(entry.name), ..report }),
            Err(error) => {
                error!(app = %app.name, environment = %entry.name, tag = %push.tag, digest = %push.digest, error = %error,
                    "entry environment deploy failed");
                failed.get_or_insert(error);
            }
        }
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(reports),
    }
}

/// [`deploy_app`] in one entry environment.
async fn deploy_env(
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    env: Environment,
    push: &Push,
    image: &str,
    invocation: &Invocation,
) -> Result<AppReport, DeployError> {
    let key = ItemKey::env(&app.name, env);
    let owner = format!("stage-deploy {}", push.event_id.as_deref().unwrap_or(push.tag.as_str()));
    // Queued when busy: a holder working on an older push of this service leaves the rollout to us.
    let waiting = Waiting { time: push.time, digest: push.digest.clone(), since: Utc::now() };
    let lease = Lease::new(key, owner, invocation).patient().queue(waiting);
    leases
        .with_env(lease, fleet, app, env, async |here| {
            let result = deploy_leased(here, push, image).await;
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
    info!(app = %app.name, tag = %push.tag, digest = %push.digest, reason = %detail, "app skipped");
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
async fn deploy_leased(here: &mut Leased<'_>, push: &Push, image: &str) -> Result<AppReport, DeployError> {
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
            hold(app, env, &mut change, push, now);
            change.clear_waiting = ours;
            record_tag(here.ledger(), app, push, &mut change).await?;
            here.commit(change).await?;
            info!(app = %app.name, environment = %env, tag = %push.tag, digest = %push.digest, "push held: the environment is paused");
            Ok(AppReport::of(app, Action::Paused, format!("{env} is paused: the push is recorded, nothing rolled out")))
        }
        Decision::AddTag => {
            let mut change = Change::new(here.state()?.clone());
            add_tag(app, env, &mut change, push);
            // The environments the image moved on to (none in a two-environment pipeline).
            let onwards = sources(app, Some(env));
            if !onwards.is_empty() {
                if let Some(facts) = here.ledger().image(&app.name, &push.digest).await? {
                    tag_where_vetted(here.ledger(), app, &facts, onwards, push, &mut change).await?;
                }
            }
            change.clear_waiting = ours;
            here.commit(change).await?;
            Ok(skipped(app, push, format!("{env} is already on {}: tag {} recorded", push.digest, push.tag)))
        }
        Decision::Deploy => deploy(here, push, image, ours).await,
    }
}

/// What holding `push` (stage is paused) changes: it is seen, kept as the push a resume can roll
/// out, and its history says why nothing rolled out.
fn hold(app: &AppConfig, env: Environment, change: &mut Change<EnvState>, push: &Push, now: DateTime<Utc>) {
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
    let mut entry = HistoryEntry::new(&app.name, env, Outcome::Held, now);
    entry.tag = Some(push.tag.clone());
    entry.digest = Some(push.digest.clone());
    entry.reason = change.state.paused.as_ref().map(|p| format!("{env} is paused: {}", p.reason));
    change.history.push(entry);
}

/// What a push of the digest stage is rolling out or runs changes: its tag joins that rollout
/// (promotable at once if the rollout is verified) and the image's tags.
fn add_tag(app: &AppConfig, env: Environment, change: &mut Change<EnvState>, push: &Push) {
    change.state.saw_push(push.time, &push.digest, &push.tag);
    let soaking = change.state.soak.as_ref().map(|soak| soak.rollout_id.clone());
    let rollout = change.state.rollout.as_mut().filter(|r| r.digest == push.digest);
    if let Some(rollout) = rollout {
        rollout.add_tag(&push.tag);
        // Vetted (promotable) once verified — after its soak, if it soaks.
        let vetted = soaking.as_ref() != Some(&rollout.id);
        if let (RolloutState::Verified { at }, true) = (&rollout.state, vetted) {
            let at = *at;
            change.tags.push((app.name.clone(), tag_item(env, push, &rollout.image, at)));
        }
    }
    change.images.push((app.name.clone(), image_update(push)));
}

async fn deploy(here: &mut Leased<'_>, push: &Push, image: &str, ours: bool) -> Result<AppReport, DeployError> {
    let (app, env) = (here.app, here.env);
    let candidate =
        Candidate { tag: &push.tag, digest: &push.digest, image, event_time: push.time, origin: Origin::Push };
    let mut plan = start::start(here, &candidate).await?;
    starting(&mut plan.change.state, push);
    plan.change.clear_waiting = ours;
    let report = match &plan.started {
        Started::AlreadyRunning { task_definition_arn } => {
            record_tag(here.ledger(), app, push, &mut plan.change).await?;
            skipped(app, push, format!("{env} already runs {} ({task_definition_arn})", push.digest))
        }
        Started::Rolling(rollout) => {
            plan.change.images.push((app.name.clone(), image_update(push)));
            info!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest,
                task_definition_arn = %rollout.task_definition_arn, deployment_id = rollout.deployment_id.as_deref(),
                "rollout started");
            AppReport {
                app: app.name.to_string(),
                environment: Some(env),
                status: Action::Deploying,
                detail: format!("{} => {}", rollout.previous.arn, rollout.task_definition_arn),
                task_definition_arn: Some(rollout.task_definition_arn.clone()),
                deployment_id: rollout.deployment_id.clone(),
            }
        }
    };
    here.commit(plan.change).await?;
    if let Started::Rolling(rollout) = &plan.started {
        crate::wave::after_start(here).await;
        let metric = "PushToUpdateService";
        crate::metrics::latency(
            app.name.as_str(),
            env.as_str(),
            metric,
            crate::metrics::Unit::Milliseconds,
            push.time,
            rollout.started_at,
        );
    }
    Ok(report)
}

/// Notes `push` as seen by a start (rolling it out, or finding it running): a push held while
/// paused is no longer waiting for a resume once it, or a newer push, got this far.
fn starting(state: &mut EnvState, push: &Push) {
    state.saw_push(push.time, &push.digest, &push.tag);
    if state.held_push.as_ref().is_some_and(|h| h.time <= push.time) {
        state.held_push = None;
    }
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

fn tag_item(env: Environment, push: &Push, image: &str, vetted_at: DateTime<Utc>) -> TagItem {
    TagItem { environment: env, tag: push.tag.clone(), digest: push.digest.clone(), image: image.to_owned(), vetted_at }
}

/// Records the push's tag on its image now, and makes it promotable where that image was vetted
/// already ([`tag_where_vetted`]).
async fn record_tag(
    ledger: &Ledger,
    app: &AppConfig,
    push: &Push,
    change: &mut Change<EnvState>,
) -> Result<(), DeployError> {
    let facts = ledger.update_image(&app.name, &image_update(push)).await?;
    tag_where_vetted(ledger, app, &facts, sources(app, None), push, change).await
}

/// The environments of `app` others take images from (whose tag items make tags promotable),
/// but `except`.
fn sources(app: &AppConfig, except: Option<Environment>) -> Vec<Environment> {
    let names = app.pipeline.environments.iter().map(|e| e.name);
    names.filter(|e| Some(*e) != except && !app.pipeline.is_last(*e)).collect()
}

/// In each of `envs` that vetted the image (`facts`), the push's tag becomes promotable right away
/// (unless it points there to an image vetted later): a tag pushed later for an image a middle
/// environment already vetted moves on from there too.
async fn tag_where_vetted(
    ledger: &Ledger,
    app: &AppConfig,
    facts: &ImageFacts,
    envs: Vec<Environment>,
    push: &Push,
    change: &mut Change<EnvState>,
) -> Result<(), DeployError> {
    let Some(image) = facts.image.as_deref() else { return Ok(()) };
    for (vetted_in, vetted_at) in envs.into_iter().filter_map(|e| Some((e, facts.vetted(e)?))) {
        let current = ledger.tag(&app.name, vetted_in, &push.tag).await?;
        if current.is_none_or(|c| c.vetted_at <= vetted_at) {
            change.tags.push((app.name.clone(), tag_item(vetted_in, push, image, vetted_at)));
        }
    }
    Ok(())
}

/// A push that cannot be rolled out until people act (the app's container is missing, the task
/// definition has members this build cannot copy): recorded, and announced once per push.
async fn refuse(here: &mut Leased<'_>, push: &Push, error: &DeployError) {
    let (app, env) = (here.app, here.env);
    let Some(state) = here.held.state.clone() else { return };
    let mut change = Change::new(state);
    change.state.saw_push(push.time, &push.digest, &push.tag);
    let now = Utc::now();
    let mut entry = HistoryEntry::new(&app.name, env, Outcome::Failed, now);
    entry.tag = Some(push.tag.clone());
    entry.digest = Some(push.digest.clone());
    entry.reason = Some(format!("not rolled out: {error}"));
    change.history.push(entry);
    let mut notification = crate::notify::Notification::of_service(
        app,
        env,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{app, digest, tag};
    use crate::record::Pause;
    use crate::rollout::{Revision, Rollout};

    fn state() -> EnvState {
        crate::fixtures::stage_met("td:1", '0')
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    /// A push of `tag` of image `d`, `seconds` after the fixtures' epoch.
    fn push(seconds: i64, d: char, t: &str) -> Push {
        Push {
            event_id: Some(format!("event-{seconds}-{d}-{t}")),
            time: at(seconds),
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
            repository: "shop".into(),
            digest: digest(d),
            tag: tag(t),
        }
    }

    /// Stage, having seen `pushes`.
    fn having_seen(pushes: &[&Push]) -> EnvState {
        let mut state = state();
        for p in pushes {
            state.saw_push(p.time, &p.digest, &p.tag);
        }
        state
    }

    fn rollout_of(p: &Push, state: RolloutState) -> Rollout {
        Rollout {
            id: "r".into(),
            tag: p.tag.clone(),
            tags: vec![p.tag.clone()],
            digest: p.digest.clone(),
            image: format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop@{}", p.digest),
            task_definition_arn: "td:2".into(),
            previous: Revision { arn: "td:1".into(), digest: Some(digest('0')) },
            deployment_id: Some("ecs-svc/2".into()),
            event_time: p.time,
            started_at: p.time,
            origin: Origin::Push,
            state,
        }
    }

    fn paused() -> Pause {
        Pause { reason: "load test".into(), by: Some("alice".into()), on_behalf_of: None, at: at(0) }
    }

    fn held(p: &Push) -> RecordedPush {
        RecordedPush {
            event_id: p.event_id.clone(),
            time: p.time,
            repository: p.repository.clone(),
            account: p.account.clone(),
            region: p.region.clone(),
            tag: p.tag.clone(),
            digest: p.digest.clone(),
        }
    }

    /// Another invocation's push, queued for the lease since `since`.
    fn waiting(p: &Push, since: DateTime<Utc>) -> Waiting {
        Waiting { time: p.time, digest: p.digest.clone(), since }
    }

    fn settled() -> [RolloutState; 3] {
        [
            RolloutState::RolledBack {
                at: at(5),
                reason: "unhealthy".into(),
                to: "td:1".into(),
                by: crate::rollout::RolledBackBy::Conveyor,
            },
            RolloutState::Failed { at: at(5), reason: "nothing to go back to".into() },
            RolloutState::Superseded { at: at(5), reason: "replaced".into() },
        ]
    }

    const NOW: i64 = 100;

    #[test]
    fn the_first_push_to_a_service_is_deployed() {
        assert_eq!(decide(None, None, &push(10, '1', "v1"), at(NOW)), Decision::Deploy);
        assert_eq!(decide(Some(&state()), None, &push(10, '1', "v1"), at(NOW)), Decision::Deploy);
    }

    #[test]
    fn a_push_newer_than_any_seen_is_deployed() {
        let state = having_seen(&[&push(10, '1', "v1")]);
        assert_eq!(decide(Some(&state), None, &push(11, '2', "v2"), at(NOW)), Decision::Deploy);
        // Another image in the same second is newer too: it was never seen.
        assert_eq!(decide(Some(&state), None, &push(10, '2', "v2"), at(NOW)), Decision::Deploy);
    }

    #[test]
    fn a_late_push_is_recorded_and_never_rolls_stage_back() {
        let state = having_seen(&[&push(20, '2', "v2")]);
        let decision = decide(Some(&state), None, &push(10, '1', "v1"), at(NOW));
        assert!(
            matches!(&decision, Decision::Record(d) if d.contains("older than the newest one seen")),
            "{decision:?}"
        );
    }

    #[test]
    fn the_same_push_delivered_again_does_nothing() {
        let v1 = push(10, '1', "v1");
        let mut state = having_seen(&[&v1]);
        state.rollout = Some(rollout_of(&v1, RolloutState::InProgress));
        let decision = decide(Some(&state), None, &v1, at(NOW));
        assert!(matches!(&decision, Decision::Nothing(d) if d.contains("repeated delivery")), "{decision:?}");
    }

    #[test]
    fn another_tag_of_an_image_pushed_in_the_same_second_is_recorded() {
        let state = having_seen(&[&push(10, '1', "v1")]);
        let decision = decide(Some(&state), None, &push(10, '1', "0a1b2c3"), at(NOW));
        assert!(matches!(&decision, Decision::Record(d) if d.contains("tag 0a1b2c3 recorded")), "{decision:?}");
    }

    #[test]
    fn another_tag_of_the_image_rolling_out_or_verified_joins_that_rollout() {
        let v1 = push(10, '1', "v1");
        let sha = push(10, '1', "0a1b2c3");
        let mut state = having_seen(&[&v1]);
        for rolling in [RolloutState::InProgress, RolloutState::Verified { at: at(50) }] {
            state.rollout = Some(rollout_of(&v1, rolling));
            assert_eq!(decide(Some(&state), None, &sha, at(NOW)), Decision::AddTag);
        }
        // A rollout of the image that did not stay: the tag is recorded only.
        for gone in settled() {
            state.rollout = Some(rollout_of(&v1, gone));
            assert!(matches!(decide(Some(&state), None, &sha, at(NOW)), Decision::Record(_)));
        }
    }

    #[test]
    fn a_push_queued_behind_a_newer_one_is_coalesced() {
        let state = having_seen(&[&push(10, '1', "v1")]);
        let newer = waiting(&push(30, '3', "v3"), at(NOW - 5));
        let decision = decide(Some(&state), Some(&newer), &push(20, '2', "v2"), at(NOW));
        assert!(matches!(&decision, Decision::Record(d) if d.contains("coalesced")), "{decision:?}");
    }

    #[test]
    fn a_queued_push_waiting_for_a_minute_or_more_is_not_trusted() {
        let state = having_seen(&[&push(10, '1', "v1")]);
        let v2 = push(20, '2', "v2");
        let v3 = push(30, '3', "v3");
        assert!(matches!(decide(Some(&state), Some(&waiting(&v3, at(NOW - 59))), &v2, at(NOW)), Decision::Record(_)));
        assert_eq!(decide(Some(&state), Some(&waiting(&v3, at(NOW - 60))), &v2, at(NOW)), Decision::Deploy);
        assert_eq!(decide(Some(&state), Some(&waiting(&v3, at(NOW - 600))), &v2, at(NOW)), Decision::Deploy);
    }

    #[test]
    fn only_a_newer_push_of_another_image_coalesces() {
        let state = having_seen(&[&push(10, '1', "v1")]);
        let v2 = push(20, '2', "v2");
        let since = at(NOW - 5);
        // The push itself, queued (its own hint, found when it gets the lease).
        assert_eq!(decide(Some(&state), Some(&waiting(&v2, since)), &v2, at(NOW)), Decision::Deploy);
        // An older one.
        assert_eq!(decide(Some(&state), Some(&waiting(&push(15, '5', "v5"), since)), &v2, at(NOW)), Decision::Deploy);
        // A newer push of the same image (another tag a second later).
        assert_eq!(
            decide(Some(&state), Some(&waiting(&push(21, '2', "latest2"), since)), &v2, at(NOW)),
            Decision::Deploy
        );
    }

    #[test]
    fn a_push_while_stage_is_paused_is_held() {
        let mut state = having_seen(&[&push(10, '1', "v1")]);
        state.paused = Some(paused());
        assert_eq!(decide(Some(&state), None, &push(20, '2', "v2"), at(NOW)), Decision::Hold);
    }

    #[test]
    fn coalescing_comes_before_holding() {
        let mut state = having_seen(&[&push(10, '1', "v1")]);
        state.paused = Some(paused());
        let newer = waiting(&push(30, '3', "v3"), at(NOW - 5));
        assert!(matches!(decide(Some(&state), Some(&newer), &push(20, '2', "v2"), at(NOW)), Decision::Record(_)));
    }

    #[test]
    fn a_held_push_delivered_again_after_resume_is_deployed() {
        let v2 = push(20, '2', "v2");
        let mut state = having_seen(&[&push(10, '1', "v1"), &v2]);
        state.held_push = Some(held(&v2));
        assert_eq!(decide(Some(&state), None, &v2, at(NOW)), Decision::Deploy);
    }

    #[test]
    fn a_held_push_delivered_again_while_still_paused_is_a_repeat() {
        let v2 = push(20, '2', "v2");
        let mut state = having_seen(&[&v2]);
        state.held_push = Some(held(&v2));
        state.paused = Some(paused());
        assert!(matches!(decide(Some(&state), None, &v2, at(NOW)), Decision::Nothing(_)));
    }

    #[test]
    fn a_repeat_of_a_push_that_was_not_the_held_one_does_nothing_after_resume() {
        let (v2, v3) = (push(20, '2', "v2"), push(20, '3', "v3"));
        let mut state = having_seen(&[&v2, &v3]);
        state.held_push = Some(held(&v3));
        assert!(matches!(decide(Some(&state), None, &v2, at(NOW)), Decision::Nothing(_)));
    }

    #[test]
    fn a_newer_push_of_the_digest_already_rolling_out_or_verified_only_adds_its_tag() {
        let v1 = push(10, '1', "v1");
        let again = push(40, '1', "v1-again");
        let mut state = having_seen(&[&v1]);
        for rolling in [RolloutState::InProgress, RolloutState::Verified { at: at(50) }] {
            state.rollout = Some(rollout_of(&v1, rolling));
            assert_eq!(decide(Some(&state), None, &again, at(NOW)), Decision::AddTag);
        }
        // The digest's rollout failed, was rolled back or replaced: it is rolled out again.
        for gone in settled() {
            state.rollout = Some(rollout_of(&v1, gone));
            assert_eq!(decide(Some(&state), None, &again, at(NOW)), Decision::Deploy);
        }
    }

    #[test]
    fn holding_a_push_keeps_it_for_the_resume_and_says_why_in_history() {
        let v2 = push(20, '2', "v2");
        let mut change = Change::new(having_seen(&[&push(10, '1', "v1")]));
        change.state.paused = Some(paused());
        hold(&app(), Environment::STAGE, &mut change, &v2, at(NOW));
        assert_eq!(change.state.held_push, Some(held(&v2)));
        assert_eq!(change.state.arrival(v2.time, &v2.digest, &v2.tag), crate::record::Arrival::Repeated);
        let [entry] = &change.history[..] else { panic!("one history entry: {:?}", change.history) };
        assert_eq!(entry.event, Outcome::Held);
        assert_eq!((entry.tag.as_ref(), entry.digest.as_ref()), (Some(&v2.tag), Some(&v2.digest)));
        assert_eq!(entry.reason.as_deref(), Some("stage is paused: load test"));
        assert!(change.announcements.is_empty(), "a held push is not announced");
    }

    #[test]
    fn a_tag_added_to_a_verified_rollout_is_promotable_at_once() {
        let v1 = push(10, '1', "v1");
        let sha = push(10, '1', "0a1b2c3");
        let mut change = Change::new(having_seen(&[&v1]));
        change.state.rollout = Some(rollout_of(&v1, RolloutState::Verified { at: at(50) }));
        add_tag(&app(), Environment::STAGE, &mut change, &sha);
        let rollout = change.state.rollout.as_ref().unwrap();
        assert_eq!(rollout.tags, vec![tag("v1"), tag("0a1b2c3")]);
        let [(_, promotable)] = &change.tags[..] else { panic!("one tag item: {:?}", change.tags) };
        assert_eq!((&promotable.tag, &promotable.digest, promotable.vetted_at), (&sha.tag, &sha.digest, at(50)));
        assert_eq!(promotable.image, rollout.image);
        let [(_, image)] = &change.images[..] else { panic!("one image update") };
        assert_eq!(image.add_tags, vec![tag("0a1b2c3")]);
    }

    #[test]
    fn a_tag_added_to_a_rollout_in_progress_waits_for_its_verification() {
        let v1 = push(10, '1', "v1");
        let mut change = Change::new(having_seen(&[&v1]));
        change.state.rollout = Some(rollout_of(&v1, RolloutState::InProgress));
        add_tag(&app(), Environment::STAGE, &mut change, &push(10, '1', "0a1b2c3"));
        assert_eq!(change.state.rollout.as_ref().unwrap().tags, vec![tag("v1"), tag("0a1b2c3")]);
        assert!(change.tags.is_empty(), "not promotable before stage verifies it");
        assert_eq!(change.images.len(), 1);
    }

    #[test]
    fn a_start_releases_the_held_push_it_or_a_newer_one_replaces() {
        let (v2, v3) = (push(20, '2', "v2"), push(30, '3', "v3"));
        let mut state = having_seen(&[&v2]);
        state.held_push = Some(held(&v2));
        starting(&mut state, &v2);
        assert_eq!(state.held_push, None, "the held push itself, delivered again after resume");
        state.held_push = Some(held(&v2));
        starting(&mut state, &v3);
        assert_eq!(state.held_push, None, "a newer push went out instead");
        assert_eq!(state.arrival(v3.time, &v3.digest, &v3.tag), crate::record::Arrival::Repeated);
        state.held_push = Some(held(&v3));
        starting(&mut state, &v2);
        assert_eq!(state.held_push, Some(held(&v3)), "an older push leaves a newer held one waiting");
    }
}
