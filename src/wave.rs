//! An environment with several targets: one release, rolled out target by target in list order
//! (each verified before the next starts) or on all of them at once (`parallel`). It is verified
//! when every target is; when one fails, no further target starts and every target it moved goes
//! back to its known-good revision (contract, *Pipelines (v3)*: all or nothing).
//!
//! The release is the environment's rollout (its first target's, [`EnvState::rollout`]); each
//! other target's rollout carries the same id. Every target's rollout stays in progress until
//! the release settles as one; [`Wave`] records which targets it is verified on meanwhile. All of
//! it lives in the environment's one item: one lease, one transaction per transition.

use tracing::{info, warn};

use crate::config::{AppConfig, EnvironmentConfig, Waves};
use crate::error::DeployError;
use crate::leased::Leased;
use crate::ledger::Change;
use crate::record::EnvState;
use crate::start::{self, Candidate, Started};
use crate::types::Environment;
use crate::vocabulary::Outcome;

/// What the release in progress calls for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing now: no release with several targets is in progress, or it waits for ECS.
    Wait,
    /// Start the release on these targets.
    Start(Vec<usize>),
    /// Verified on every target: the environment's release is verified.
    Complete,
    /// The release's rollout on a target ended without being verified (a change made outside
    /// Conveyor replaced it, or its service is gone): the release cannot complete.
    Broken { index: usize, reason: String },
    /// The release failed on a target: every target it moved goes back (what a retry or the
    /// sweep finishes when the rollback was cut short).
    RollBack { index: usize, reason: String },
}

/// Whether `env` of `app` has several targets (and so runs its releases as waves).
pub fn applies(app: &AppConfig, env: Environment) -> bool {
    app.targets(env).is_ok_and(|targets| targets.len() > 1)
}

/// Decides what the release in progress in `state` (an environment's) needs next.
pub fn next(config: &EnvironmentConfig, state: &EnvState) -> Next {
    let Some(release) = state.in_progress().filter(|_| config.targets.len() > 1) else { return Next::Wait };
    if let Some((index, reason)) = state.failed_on(&release.id) {
        return Next::RollBack { index: *index, reason: reason.clone() };
    }
    let mut start = Vec::new();
    for index in 0..config.targets.len() {
        if state.verified_on(&release.id, index) {
            continue;
        }
        match state.target(index).and_then(|t| t.rollout.as_ref()).filter(|r| r.id == release.id) {
            Some(rollout) if rollout.in_progress() => {
                if config.waves == Waves::OneByOne {
                    return Next::Wait;
                }
            }
            Some(rollout) => {
                let reason = rollout.state.reason().unwrap_or(rollout.state.name()).to_owned();
                return Next::Broken { index, reason };
            }
            None => {
                start.push(index);
                if config.waves == Waves::OneByOne {
                    break;
                }
            }
        }
    }
    match (start.is_empty(), (0..config.targets.len()).all(|i| state.verified_on(&release.id, i))) {
        // A pause holds the release where it is: nothing more is rolled out until the resume,
        // and the first sweep after it (or the held step's event delivered again) moves it on.
        (false, _) if state.paused.is_some() => Next::Wait,
        (false, _) => Next::Start(start),
        (true, true) => Next::Complete,
        (true, false) => Next::Wait,
    }
}

/// After a release started (on the first target): with `parallel`, starts it on every other
/// target. The release is committed already: a failure here is logged, and the sweep starts
/// what is left.
pub async fn after_start(here: &mut Leased<'_>) {
    let Some(config) = here.app.pipeline.environment(here.env) else { return };
    let Ok(Next::Start(indexes)) = here.env_state().map(|state| next(config, state)) else { return };
    if let Err((_, error)) = Box::pin(start_targets(here, &indexes)).await {
        warn!(app = %here.app.name, environment = %here.env, error = %error,
            "the release could not start on every target yet: the sweep starts the rest");
    }
}

/// Starts the release in progress (`here`: the environment's first target) on the targets at
/// `indexes`, each committed as it starts (under the same lease). A target that already runs
/// the image counts as verified there. Their starts announce nothing: the release's start did.
/// An error says on which target it happened.
pub async fn start_targets(here: &mut Leased<'_>, indexes: &[usize]) -> Result<Vec<String>, (usize, DeployError)> {
    let state = here.env_state().map_err(|e| (0, e.into()))?;
    let Some(release) = state.in_progress().cloned() else { return Ok(Vec::new()) };
    let candidate = Candidate {
        tag: &release.tag,
        digest: &release.digest,
        image: &release.image,
        event_time: release.event_time,
        origin: release.origin.clone(),
    };
    let (app, env) = (here.app, here.env);
    let mut started = Vec::new();
    for &index in indexes {
        start_target(here, &candidate, &release.id, index).await.map_err(|error| (index, error))?;
        started.push(app.target_at(env, index).map(|t| t.label()).unwrap_or_default());
    }
    Ok(started)
}

/// Starts the release `rollout_id` on target `index`.
async fn start_target(
    here: &mut Leased<'_>,
    candidate: &Candidate<'_>,
    rollout_id: &str,
    index: usize,
) -> Result<(), DeployError> {
    let (app, env) = (here.app, here.env);
    let mut there = here.at(index).await?;
    let label = there.target.service.label();
    let mut plan = start::start(&mut there, candidate).await?;
    let running = match &plan.started {
        Started::Rolling(rollout) => {
            // Its start is the release's, announced already: only what `start` found there
            // (drift, a rollout of its own settled) is this target's to record.
            plan.change.history.retain(|entry| entry.rollout_id.as_deref() != Some(rollout.id.as_str()));
            plan.change
                .announcements
                .retain(|a| !matches!(a.notification.outcome, Outcome::Deploying | Outcome::Promoted));
            if let Some(recorded) = plan.change.state.rollout.as_mut() {
                recorded.id = rollout_id.to_owned();
            }
            info!(app = %app.name, environment = %env, target = %label, tag = %rollout.tag,
                digest = %rollout.digest, task_definition_arn = %rollout.task_definition_arn,
                deployment_id = rollout.deployment_id.as_deref(), rollout_id, "release started on a target");
            false
        }
        Started::AlreadyRunning { task_definition_arn } => {
            info!(app = %app.name, environment = %env, target = %label, task_definition_arn = %task_definition_arn,
                rollout_id, "the target already runs the release's image: verified there");
            true
        }
    };
    there.commit(plan.change).await?;
    if running {
        let mut change = Change::new(here.env_state()?.clone());
        change.state.record_verified(rollout_id, index);
        here.commit(change).await?;
    }
    Ok(())
}
