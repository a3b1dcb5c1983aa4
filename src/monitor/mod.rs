//! deploy-monitor: turns ECS deployment state changes (and a periodic sweep) into verified
//! releases, automatic rollbacks and alerts.
//!
//! Everything about one service happens under its lease: the state is read as the lease is taken,
//! so a concurrent or repeated delivery finds the rollout settled and changes nothing. A failure
//! to reach AWS that a retry may cure fails the invocation before anything is recorded (Lambda
//! retries it); a settled outcome is committed once, with its notification.

pub mod alarms;
pub mod decide;
mod pause_hook;

use std::collections::HashMap;

use chrono::Utc;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info, instrument, warn};

use crate::announce::ConfigNotice;
use crate::aws::{is_inactive_revision, AwsError, ServiceState};
use crate::config::{AppConfig, ConfigSet, Configs};
use crate::error::{DeployError, Error};
use crate::events::{self, AlarmEvent, DeploymentEvent, DeploymentEventName, MonitorEvent, Skip};
use crate::fleet::{Fleet, Target};
use crate::health::Prober;
use crate::leased::{Leased, Leases};
use crate::ledger::{Change, Failure, Held, HistoryEntry, ImageUpdate, Intent, Item, ItemKey, Lease, TagItem};
use crate::notify::{Announcement, Notification};
use crate::record::{EnvState, Soak, Verified};
use crate::rollout::{RollbackWatch, RolledBackBy, Rollout, RolloutState};
use crate::start::{self, history_of};
use crate::taskdef::ImageSwap;
use crate::types::{AppName, Environment, ImageTag};
use crate::vocabulary::{Action, Outcome, Severity};
use crate::wave;
use crate::Invocation;
use decide::{EventDecision, FailurePlan, Finding, NativeFinding, SweepAction, Verification, WatchAction};

/// Services the sweep works on at once.
const SWEEP_CONCURRENCY: usize = 8;

/// What one invocation did (the Lambda response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonitorReport {
    pub results: Vec<Handled>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Handled {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    pub action: Action,
    pub detail: String,
}

impl Handled {
    fn skipped(detail: impl Into<String>) -> Self {
        Handled { app: None, environment: None, action: Action::Skipped, detail: detail.into() }
    }

    fn of(app: &AppName, env: Environment, action: Action, detail: impl Into<String>) -> Self {
        Handled { app: Some(app.to_string()), environment: Some(env), action, detail: detail.into() }
    }
}

/// Handles one EventBridge event: a deployment state change or the sweep schedule.
pub async fn handle(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    prober: &Prober,
    payload: Value,
    invocation: &Invocation,
) -> Result<MonitorReport, Error> {
    match events::monitor(payload) {
        Ok(Ok(MonitorEvent::Deployment(event))) => {
            // Boxed, like every handler's work (see `stage::handle`).
            let handled = Box::pin(on_deployment(configs, fleet, leases, prober, &event, invocation)).await?;
            let onwards = match (&handled.action, &handled.app, handled.environment) {
                (Action::Verified, Some(app), Some(env)) => {
                    promote_onwards(configs, fleet, leases, app, env, invocation).await
                }
                _ => Vec::new(),
            };
            Ok(MonitorReport { results: std::iter::once(handled).chain(onwards).collect() })
        }
        Ok(Ok(MonitorEvent::Sweep)) => Box::pin(sweep(configs, fleet, leases, prober, invocation)).await,
        Ok(Ok(MonitorEvent::Alarm(event))) => {
            Box::pin(on_alarm(configs, fleet, leases, prober, &event, invocation)).await
        }
        Ok(Ok(MonitorEvent::HookAwaitingAction(event))) => {
            Box::pin(pause_hook::on_hook(configs, fleet, leases, &event, invocation)).await
        }
        Ok(Ok(MonitorEvent::SoakTimer)) => {
            // One Query when nothing soaks (every minute): the configs are read only for a soak due.
            let pending = leases.ledger.pending().await?;
            let now = Utc::now();
            let due = pending.iter().any(|item| {
                crate::ledger::state_from_item::<EnvState>(item).and_then(|s| s.soak).is_some_and(|s| s.until <= now)
            });
            if !due {
                return Ok(MonitorReport { results: Vec::new() });
            }
            let config = configs.get().await?;
            let results = Box::pin(end_soaks(configs, fleet, leases, &config, &pending, invocation)).await;
            Ok(MonitorReport { results })
        }
        Ok(Err(Skip(reason))) => {
            info!(reason = %reason, "event skipped");
            Ok(MonitorReport { results: vec![Handled::skipped(reason)] })
        }
        Err(invalid) => {
            error!(error = %invalid, "invalid event");
            Err(invalid.into())
        }
    }
}

#[instrument(skip_all, fields(event_id = event.event_id.as_deref(), service = %event.service_arn, deployment_id = %event.deployment_id))]
async fn on_deployment(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    prober: &Prober,
    event: &DeploymentEvent,
    invocation: &Invocation,
) -> Result<Handled, Error> {
    let config = configs.get().await?;
    let home = fleet.home(invocation);
    let Some((app, env, index)) = config.owner_of(&event.place(), &home) else {
        info!(reason = "unmanaged service", "event skipped");
        return Ok(Handled::skipped(format!("{} is not a service Conveyor manages", event.service_arn)));
    };
    if event.name == DeploymentEventName::InProgress {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "deployment in progress"));
    }
    let failed = |error: DeployError| Error::Deploy(vec![(app.name.clone(), error)]);
    // Settling: an intent left by an attempt that stopped half-way is this flow's to settle.
    let owner = format!("deploy-monitor {}", event.deployment_id);
    let lease = Lease::new(ItemKey::env(&app.name, env), owner, invocation).patient().settling();
    let handled = leases
        .with_target(lease, fleet, app, env, index, async |here| on_event_leased(prober, here, event, invocation).await)
        .await
        .map_err(failed)?;
    info!(app = %app.name, environment = %env, action = %handled.action, detail = %handled.detail, "event handled");
    Ok(handled)
}

async fn on_event_leased(
    prober: &Prober,
    here: &mut Leased<'_>,
    event: &DeploymentEvent,
    invocation: &Invocation,
) -> Result<Handled, DeployError> {
    let (app, env) = (here.app, here.env);
    let Some(state) = here.target_state() else {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "Conveyor has started no rollout on this service"));
    };
    match decide::on_event(state, event) {
        EventDecision::Skip(reason) => Ok(Handled::of(&app.name, env, Action::Skipped, reason)),
        EventDecision::Rollout(rollout, finding) => settle(prober, here, &rollout, finding, None, invocation).await,
        EventDecision::Rollback(watch, finding) => rollback_ended(here, &watch, finding).await,
        EventDecision::Foreign => changed_outside(here).await,
    }
}

/// An alarm entered ALARM: every environment gated on it whose rollout is still unvetted (in
/// progress, or soaking) and started before the alarm fired is rolled back now.
#[instrument(skip_all, fields(event_id = event.event_id.as_deref(), alarm = %event.alarm))]
async fn on_alarm(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    prober: &Prober,
    event: &AlarmEvent,
    invocation: &Invocation,
) -> Result<MonitorReport, Error> {
    let config = configs.get().await?;
    let home = fleet.home(invocation);
    let gated = config.gated_on(&event.alarm, event.account.as_deref(), event.region.as_deref(), &home);
    if gated.is_empty() {
        info!(reason = "no environment is gated on this alarm", "event skipped");
        return Ok(MonitorReport {
            results: vec![Handled::skipped(format!("no environment is gated on alarm {}", event.alarm))],
        });
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (app, env) in gated {
        let owner = format!("deploy-monitor alarm {}", event.alarm);
        let lease = Lease::new(ItemKey::env(&app.name, env), owner, invocation).patient().settling();
        let handled = leases
            .with_env(lease, fleet, app, env, async |here| on_alarm_leased(prober, here, event, invocation).await)
            .await;
        match handled {
            Ok(handled) => {
                info!(app = %app.name, environment = %env, action = %handled.action, detail = %handled.detail, "alarm handled");
                results.push(handled);
            }
            Err(error) => failures.push((app.name.clone(), error)),
        }
    }
    // A rollback not issued yet fails the invocation: Lambda retries it (what is done stays done).
    if !failures.is_empty() {
        return Err(Error::Deploy(failures));
    }
    Ok(MonitorReport { results })
}

async fn on_alarm_leased(
    prober: &Prober,
    here: &mut Leased<'_>,
    event: &AlarmEvent,
    invocation: &Invocation,
) -> Result<Handled, DeployError> {
    let (app, env) = (here.app, here.env);
    let state = here.state()?.clone();
    let Some(rollout) = state.rollout.clone().filter(|r| r.in_progress() || state.soaking(&r.id)) else {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "no unvetted rollout here: nothing to fail"));
    };
    if event.time < rollout.started_at {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "the alarm fired before the rollout started"));
    }
    let reason = format!(
        "alarm {} entered ALARM at {}",
        event.alarm,
        event.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    settle(prober, here, &rollout, Finding::Failed(reason), None, invocation).await
}

/// Settles a rollout in progress (or, failing, one still soaking): verify a completion, or roll
/// back a failure.
async fn settle(
    prober: &Prober,
    here: &mut Leased<'_>,
    rollout: &Rollout,
    finding: Finding,
    service: Option<ServiceState>,
    invocation: &Invocation,
) -> Result<Handled, DeployError> {
    let (app, env) = (here.app, here.env);
    let service = match service {
        Some(service) => service,
        None => match service_of(&here.target).await? {
            Ok(service) => service,
            Err(gone) => return service_gone(here, rollout, &gone).await,
        },
    };
    let reason = match finding {
        Finding::Failed(reason) => reason,
        Finding::Completed => match verification(here, rollout, &service).await? {
            None => {
                let what = format!("{} still in flight", rollout.tag);
                return Ok(Handled::of(&app.name, env, Action::Waiting, what));
            }
            Some(Verification::Replaced(reason)) => {
                info!(app = %app.name, environment = %env, reason = %reason, "completion of a replaced deployment");
                return changed_outside(here).await;
            }
            Some(Verification::Failed(reason)) => reason,
            Some(Verification::Healthy) => match health(prober, here, invocation).await {
                Ok(()) => {
                    let gate = alarm_gate(here, rollout).await?;
                    match gate.failure() {
                        None => return Box::pin(verified(here, rollout, &gate)).await,
                        Some(fired) => fired,
                    }
                }
                Err(unhealthy) => unhealthy.to_string(),
            },
        },
    };
    Box::pin(roll_back(here, rollout, &service, reason)).await
}

/// What ECS says of a rollout it reported completed: a native service's by its service
/// deployment ([`native_finding`]), a rolling one's (or a native one whose current deployment is
/// not the rollout's) by the `deployments` list. `None`: ECS is still at it.
async fn verification(
    here: &Leased<'_>,
    rollout: &Rollout,
    service: &ServiceState,
) -> Result<Option<Verification>, DeployError> {
    Ok(match native_finding(&here.target, &here.app.container, rollout, service).await? {
        Some((NativeFinding::InFlight { .. }, _)) => None,
        Some((NativeFinding::Completed, _)) => Some(Verification::Healthy),
        Some((NativeFinding::Failed(reason), _)) => Some(Verification::Failed(reason)),
        Some((NativeFinding::NotOurs, _)) | None => Some(decide::verify(rollout, service)),
    })
}

/// What the sweep does with a rollout in progress: as [`verification`], by the service
/// deployment for a native service, else by the `deployments` list (with the rollout timeout).
async fn sweep_action(
    here: &Target<'_>,
    app: &AppConfig,
    rollout: &Rollout,
    service: &ServiceState,
    now: chrono::DateTime<Utc>,
) -> Result<SweepAction, AwsError> {
    Ok(match native_finding(here, &app.container, rollout, service).await? {
        Some((NativeFinding::InFlight { what, timed }, moved_at)) => {
            decide::native_sweep(rollout, (&what, timed), moved_at, now, app.rollout_timeout)
        }
        Some((NativeFinding::Completed, _)) => SweepAction::Verify,
        Some((NativeFinding::Failed(reason), _)) => SweepAction::Fail(reason),
        Some((NativeFinding::NotOurs, _)) | None => decide::reconcile(rollout, service, now, app.rollout_timeout),
    })
}

/// A native service's current service deployment, judged for `rollout`, with when ECS last moved
/// it (two reads: the deployment, its target revision). `None`: a rolling service, or ECS names
/// no current deployment (then the `deployments` list judges, as for a rolling service).
async fn native_finding(
    target: &Target<'_>,
    container: &str,
    rollout: &Rollout,
    service: &ServiceState,
) -> Result<Option<(NativeFinding, Option<chrono::DateTime<Utc>>)>, AwsError> {
    let Some(strategy) = &service.native_strategy else { return Ok(None) };
    let Some(arn) = &service.current_service_deployment else {
        warn!(tag = %rollout.tag, digest = %rollout.digest, strategy = strategy.as_str(),
            "a native service without a current service deployment: judged by its deployments list");
        return Ok(None);
    };
    let Some(deployment) = target.ecs.native_deployment(arn).await? else {
        warn!(tag = %rollout.tag, digest = %rollout.digest, service_deployment_arn = %arn,
            "ECS does not describe the service's current deployment: judged by its deployments list");
        return Ok(None);
    };
    let finding = decide::judge_native(rollout, container, &deployment);
    info!(tag = %rollout.tag, digest = %rollout.digest, deployment_id = rollout.deployment_id.as_deref(),
        service_deployment_arn = %arn, status = deployment.status.as_str(),
        lifecycle_stage = deployment.lifecycle_stage.as_deref(), finding = ?finding, "native deployment judged");
    Ok(Some((finding, deployment.updated_at)))
}

/// The health check of the target `here` works on, if it has a `health_url`.
async fn health(prober: &Prober, here: &Leased<'_>, invocation: &Invocation) -> Result<(), crate::health::Unhealthy> {
    let (app, env) = (here.app, here.env);
    let Some(url) = here.target.service.health_url.as_ref() else { return Ok(()) };
    let checked = prober.probe(url, invocation).await;
    info!(app = %app.name, environment = %env, health_url = %url, healthy = checked.is_ok(), "health check");
    checked.map(drop)
}

/// The alarms gate of the environment for `rollout` (nothing is called without alarms).
async fn alarm_gate(here: &Leased<'_>, rollout: &Rollout) -> Result<alarms::Gate, DeployError> {
    let names = here.app.pipeline.environment(here.env).map(|e| e.alarms.as_slice()).unwrap_or_default();
    let gate = alarms::check(&here.target.alarms, names, rollout.started_at).await?;
    if !names.is_empty() {
        info!(app = %here.app.name, environment = %here.env, tag = %rollout.tag, digest = %rollout.digest,
            passed = gate.failure().is_none(), "alarms gate");
    }
    Ok(gate)
}

/// A rollout verified on the target `here` works on: the environment's release, or with several
/// targets the release's step on one of them. `gate`: the alarms gate it passed (its notes go
/// into the reason).
async fn verified(here: &mut Leased<'_>, rollout: &Rollout, gate: &alarms::Gate) -> Result<Handled, DeployError> {
    if wave::applies(here.app, here.env) {
        return target_verified(here, rollout).await;
    }
    release_verified(here, rollout, gate).await
}

/// The release verified on one of the environment's several targets: recorded, then the wave
/// moves on ([`advance`]). A rollout of a release no longer in progress ends superseded there.
async fn target_verified(here: &mut Leased<'_>, rollout: &Rollout) -> Result<Handled, DeployError> {
    let (app, env, index) = (here.app, here.env, here.index);
    let label = here.target.service.label();
    if here.env_state()?.in_progress().is_none_or(|release| release.id != rollout.id) {
        return retire(here, rollout).await;
    }
    if here.env_state()?.verified_on(&rollout.id, index) {
        // A repeated event: the step it led to may have been cut short (a crash before the next
        // target's start was recorded); this holder, which took the lease over, finishes it.
        let mut first = here.at(0).await?;
        return Box::pin(advance(&mut first)).await;
    }
    let mut change = Change::new(here.env_state()?.clone());
    change.state.record_verified(&rollout.id, index);
    let mut first = here.at(0).await?;
    first.commit(change).await?;
    info!(app = %app.name, environment = %env, target = %label, tag = %rollout.tag, digest = %rollout.digest,
        rollout_id = %rollout.id, "release verified on a target");
    // Boxed: the release's next step (a start, a verification, a rollback) is a large future.
    Box::pin(advance(&mut first)).await
}

/// A target's rollout of a release no longer in progress (a newer one replaced it): it ends
/// superseded there, quietly (the release's own end was announced).
async fn retire(here: &mut Leased<'_>, rollout: &Rollout) -> Result<Handled, DeployError> {
    let (app, env, label) = (here.app, here.env, here.target.service.label());
    let mut change = Change::new(here.state()?.clone());
    let reason = "its release is no longer in progress".to_owned();
    if let Some(recorded) = change.state.rollout.as_mut().filter(|r| r.id == rollout.id) {
        if recorded.settle(RolloutState::Superseded { at: Utc::now(), reason }).is_ok() {
            here.commit(change).await?;
        }
    }
    Ok(Handled::of(&app.name, env, Action::Skipped, format!("{label}: a release no longer in progress")))
}

/// Moves the release in progress of an environment with several targets on (`here`: its first
/// target): starts the next targets, settles it verified once every target is, or ends it when a
/// target's rollout ended otherwise. Also the sweep's way to finish a step a crash cut short.
async fn advance(here: &mut Leased<'_>) -> Result<Handled, DeployError> {
    let (app, env, now) = (here.app, here.env, Utc::now());
    let Some(config) = app.pipeline.environment(env) else {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "no such environment"));
    };
    match wave::next(config, here.env_state()?) {
        wave::Next::Wait => {
            let statuses = here.env_state()?.target_statuses(app, env);
            let detail = statuses.iter().map(|t| format!("{}: {}", t.target, t.state)).collect::<Vec<_>>().join("; ");
            Ok(Handled::of(&app.name, env, Action::Waiting, detail))
        }
        wave::Next::Start(indexes) => match Box::pin(wave::start_targets(here, &indexes)).await {
            Ok(started) => {
                Ok(Handled::of(&app.name, env, Action::Deploying, format!("started on {}", started.join(", "))))
            }
            // A target the release cannot start on (its service gone, a definition refused): the
            // release fails there. Anything a retry may cure is left to the next attempt.
            Err((index, error)) if !error.retryable() && !matches!(error, DeployError::Ledger(_)) => {
                let label = app.target_at(env, index).map(|t| t.label()).unwrap_or_default();
                let reason = format!("the release could not start on {label}: {error}");
                Box::pin(roll_back_release(here, index, reason, None)).await
            }
            Err((_, error)) => Err(error),
        },
        wave::Next::RollBack { index, reason } => Box::pin(roll_back_release(here, index, reason, None)).await,
        wave::Next::Complete => {
            let Some(release) = here.env_state()?.in_progress().cloned() else {
                return Ok(Handled::of(&app.name, env, Action::Skipped, "settled meanwhile"));
            };
            let gate = alarm_gate(here, &release).await?;
            match gate.failure() {
                None => Box::pin(release_verified(here, &release, &gate)).await,
                Some(fired) => Box::pin(roll_back_release(here, 0, fired, None)).await,
            }
        }
        wave::Next::Broken { index, reason } => {
            let label = app.target_at(env, index).map(|t| t.label()).unwrap_or_default();
            let reason = format!("its rollout on {label} ended: {reason}");
            let mut change = Change::new(here.env_state()?.clone());
            start::supersede(app, env, &mut change, &reason, now);
            change.state.supersede_targets(now, &reason);
            here.commit(change).await?;
            Ok(Handled::of(&app.name, env, Action::Skipped, reason))
        }
    }
}

/// The environment's release verified (on its every target): vetted, or soaking first.
async fn release_verified(
    here: &mut Leased<'_>,
    rollout: &Rollout,
    gate: &alarms::Gate,
) -> Result<Handled, DeployError> {
    let (app, env, now) = (here.app, here.env, Utc::now());
    let mut rollout = rollout.clone();
    if rollout.settle(RolloutState::Verified { at: now }).is_err() {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "already settled"));
    }
    let soak = app.pipeline.environment(env).map_or(std::time::Duration::ZERO, |e| e.soak);
    if soak.is_zero() {
        let reason = gate.annotate("deployment completed, every task running, health check passed".to_owned());
        return vet(here, rollout, now, &reason).await;
    }
    // Verified: the image now keeps running for the soak before it counts as vetted here.
    let until = now + chrono::Duration::from_std(soak).unwrap_or(chrono::Duration::zero());
    let reason = gate.annotate(format!(
        "deployment completed, every task running, health check passed; soaking {} until {}",
        crate::config::show_duration(soak),
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    let mut change = Change::new(here.state()?.clone());
    change.state.rollout = Some(rollout.clone());
    change.state.settle_targets(&rollout.id, &rollout.state);
    change.state.soak = Some(Soak { rollout_id: rollout.id.clone(), until });
    let targets = change.state.target_statuses(app, env);
    let mut entry = history_of(&app.name, &rollout, env, now);
    entry.event = Outcome::Soaking;
    entry.reason = Some(reason.clone());
    entry.targets = targets.clone();
    change.history.push(entry);
    let mut notification = Notification::of_rollout(app, env, &rollout);
    (notification.outcome, notification.severity) = (Outcome::Soaking, Severity::Info);
    notification.reason = Some(reason.clone());
    notification.targets = targets;
    change.announcements.push(Announcement::new(notification, app));
    here.commit(change).await?;
    info!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest, until = %until, "rollout verified, soaking");
    Ok(Handled::of(&app.name, env, Action::Soaking, reason))
}

/// Ends a soak whose time is up: the image counts as vetted here. A soak whose rollout was
/// replaced meanwhile just ends (that image is not vetted here).
async fn end_soak(here: &mut Leased<'_>, now: chrono::DateTime<Utc>) -> Result<Handled, DeployError> {
    let (app, env) = (here.app, here.env);
    let state = here.state()?.clone();
    let Some(soak) = state.soak.clone() else {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "no soak"));
    };
    if soak.until > now {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "still soaking"));
    }
    // Only a rollback of this soak's own, left half-way, is the soak's end's to settle.
    if here.held.intent().is_some_and(|intent| intent.rollback_of(&soak.rollout_id).is_none()) {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "a change left half-way here is settled first"));
    }
    let soaked =
        state.rollout.clone().filter(|r| r.id == soak.rollout_id && matches!(r.state, RolloutState::Verified { .. }));
    let Some(rollout) = soaked else {
        let mut change = Change::new(state);
        change.state.soak = None;
        here.commit(change).await?;
        return Ok(Handled::of(&app.name, env, Action::Skipped, "the soaking rollout was replaced"));
    };
    // It must still be what runs: a change made outside Conveyor whose event never came ends it.
    // A rollback of it an earlier attempt issued (its intent left, the commit not made) was
    // decided already: it is finished, whatever the alarms say now.
    let observed = start::observe(&here.target, app).await?;
    if here.held.intent().and_then(|intent| intent.rollback_of(&rollout.id)).is_some() {
        let reason = alarm_gate(here, &rollout).await?.failure().unwrap_or_else(|| "its alarms gate failed".to_owned());
        return roll_back(here, &rollout, &observed.service, reason).await;
    }
    if observed.service.task_definition != rollout.task_definition_arn {
        return end_soak_unvetted(here, &rollout.task_definition_arn).await;
    }
    // The alarms again, from their history: one that fired and recovered meanwhile fails it too.
    let gate = alarm_gate(here, &rollout).await?;
    // Several targets: each must still run the release, and each one's alarms be quiet too.
    let mut fired_elsewhere = None;
    for index in 1..app.targets(env)?.len() {
        let mut there = here.at(index).await?;
        let ours = there.target_state().and_then(|s| s.rollout.clone()).filter(|r| r.id == rollout.id);
        let Some(ours) = ours else { continue };
        let Ok(service) = service_of(&there.target).await? else { continue };
        if service.task_definition != ours.task_definition_arn {
            return end_soak_unvetted(&mut there, &ours.task_definition_arn).await;
        }
        if fired_elsewhere.is_none() {
            fired_elsewhere = alarm_gate(&there, &ours).await?.failure();
        }
    }
    if let Some(fired) = gate.failure().or(fired_elsewhere) {
        return roll_back(here, &rollout, &observed.service, fired).await;
    }
    let soak = app.pipeline.environment(env).map_or(std::time::Duration::ZERO, |e| e.soak);
    let reason = gate.annotate(format!("soaked {} without a problem", crate::config::show_duration(soak)));
    vet(here, rollout, now, &reason).await
}

/// A soak whose service (of the target `here` works on) no longer runs `revision`, the release's
/// there: it ends, nothing vetted (a change made outside Conveyor whose event never came).
async fn end_soak_unvetted(here: &mut Leased<'_>, revision: &str) -> Result<Handled, DeployError> {
    let (app, env, label) = (here.app, here.env, here.target.service.label());
    let mut change = Change::new(here.env_state()?.clone());
    change.state.soak = None;
    here.at(0).await?.commit(change).await?;
    let detail = format!("{label} no longer runs {revision}: the soak ended, nothing vetted");
    Ok(Handled::of(&app.name, env, Action::Skipped, detail))
}

/// Records the image of a verified `rollout` as vetted here: last verified, its tags promotable
/// where another environment takes from this one, history, notification.
async fn vet(
    here: &mut Leased<'_>,
    mut rollout: Rollout,
    now: chrono::DateTime<Utc>,
    reason: &str,
) -> Result<Handled, DeployError> {
    let (app, env) = (here.app, here.env);
    // Stage makes every tag of the image promotable: commit only if the image has no tag this
    // rollout does not know (a push recorded one meanwhile), else learn them and commit again.
    for attempt in 0..3 {
        let mut change = Change::new(here.state()?.clone());
        change.state.soak = None;
        change.state.last_verified = Some(Verified {
            rollout_id: rollout.id.clone(),
            tag: rollout.tag.clone(),
            digest: rollout.digest.clone(),
            image: rollout.image.clone(),
            task_definition_arn: rollout.task_definition_arn.clone(),
            at: now,
        });
        change.state.rollout = Some(rollout.clone());
        change.state.settle_targets(&rollout.id, &rollout.state);
        if let Some(verified) = change.state.last_verified.clone() {
            change.state.vet_targets(&verified);
        }
        let targets = change.state.target_statuses(app, env);
        let mut image = ImageUpdate::of(&rollout.digest, &rollout.image);
        image.add_tags = rollout.tags.clone();
        image.vetted = Some((env, now));
        // Tags become promotable where another environment takes images from this one.
        if !app.pipeline.is_last(env) {
            image.expect_tags = Some(rollout.tags.len());
            for tag in &rollout.tags {
                let item = TagItem {
                    environment: env,
                    tag: tag.clone(),
                    digest: rollout.digest.clone(),
                    image: rollout.image.clone(),
                    vetted_at: now,
                };
                change.tags.push((app.name.clone(), item));
            }
        }
        change.images.push((app.name.clone(), image));
        let mut entry = history_of(&app.name, &rollout, env, now);
        entry.targets = targets.clone();
        change.history.push(entry);
        let mut notification = Notification::of_rollout(app, env, &rollout);
        notification.reason = Some(reason.to_owned());
        notification.targets = targets;
        change.announcements.push(Announcement::new(notification, app));
        match here.commit(change).await {
            Ok(()) => break,
            Err(crate::ledger::LedgerError::Conflict { .. }) if attempt < 2 => {
                let facts = here.ledger().image(&app.name, &rollout.digest).await?;
                for tag in facts.iter().flat_map(|f| &f.tags).filter_map(|t| ImageTag::parse(t.as_str()).ok()) {
                    rollout.add_tag(&tag);
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    info!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest,
        deployment_id = rollout.deployment_id.as_deref(), task_definition_arn = %rollout.task_definition_arn, "rollout verified");
    let unit = crate::metrics::Unit::Seconds;
    crate::metrics::latency(app.name.as_str(), env.as_str(), "RolloutToVerified", unit, rollout.started_at, now);
    Ok(Handled::of(&app.name, env, Action::Verified, format!("{} ({})", rollout.tag, rollout.digest)))
}

/// How a failed rollout settles on one target, and the rollback deployment to watch there.
struct Undone {
    settlement: RolloutState,
    /// The revision it went back to, the deployment doing it (when known) and who issued it.
    rollback: Option<(String, Option<String>, RolledBackBy)>,
}

impl Undone {
    /// The rollback deployment to watch until ECS completes it, if there is one.
    fn watch(&self, rollout: &Rollout, now: chrono::DateTime<Utc>) -> Option<RollbackWatch> {
        self.rollback.as_ref().map(|(to, deployment_id, by)| RollbackWatch {
            rollout_id: rollout.id.clone(),
            tag: rollout.tag.clone(),
            digest: rollout.digest.clone(),
            to: to.clone(),
            deployment_id: deployment_id.clone(),
            by: *by,
            started_at: now,
        })
    }
}

/// Puts the target `here` works on back after its `rollout` failed (or finds it back already).
/// `failed_here`: the failure is this target's own (else its release failed on another target,
/// and what put it back can only have been Conveyor: ECS's circuit breaker never undoes a
/// deployment that did not fail). `None`: a change made outside Conveyor replaced the rollout
/// (not the image's failure). A rollback not issued yet for a reason a retry may cure is an error
/// (the invocation is retried).
async fn undo(
    here: &mut Leased<'_>,
    rollout: &Rollout,
    service: &ServiceState,
    reason: &str,
    failed_here: bool,
    now: chrono::DateTime<Utc>,
) -> Result<Option<Undone>, DeployError> {
    let (app, env) = (here.app, here.env);
    let state = here.state()?.clone();
    let issued = here.held.intent().and_then(|intent| intent.rollback_of(&rollout.id)).map(str::to_owned);
    Ok(Some(match decide::failure_plan(&state, rollout, service, issued.as_deref()) {
        FailurePlan::ChangedOutside => return Ok(None),
        FailurePlan::AlreadyRolledBack { to, deployment_id, by_conveyor } => {
            let (by, how) = if by_conveyor || !failed_here {
                (RolledBackBy::Conveyor, "rolled back by Conveyor")
            } else if let Some(strategy) = &service.native_strategy {
                // ECS's own rollback of a native deployment (a hook, an alarm, a stop): `by` keeps
                // the name the state has always used for ECS's rollbacks.
                (RolledBackBy::CircuitBreaker, native_rollback(strategy))
            } else {
                (RolledBackBy::CircuitBreaker, "ECS circuit breaker already rolled back")
            };
            let settlement =
                RolloutState::RolledBack { at: now, reason: format!("{reason} ({how})"), to: to.clone(), by };
            Undone { settlement, rollback: Some((to, deployment_id, by)) }
        }
        FailurePlan::RollBack { to } => match issue_rollback(here, rollout, service, &to).await {
            Ok((to, deployment_id)) => Undone {
                settlement: RolloutState::RolledBack {
                    at: now,
                    reason: format!("{reason} (rolled back by Conveyor)"),
                    to: to.clone(),
                    by: RolledBackBy::Conveyor,
                },
                rollback: Some((to, deployment_id, RolledBackBy::Conveyor)),
            },
            Err(DeployError::Aws(error)) if error.retryable => {
                warn!(app = %app.name, environment = %env, error = %error, "rollback not issued yet: the invocation fails and is retried");
                return Err(error.into());
            }
            // Refused (not worth a retry), or a definition this build cannot copy: people must act.
            Err(error @ (DeployError::Aws(_) | DeployError::Unmodeled(_))) => Undone {
                settlement: RolloutState::Failed {
                    at: now,
                    reason: format!("{reason} (rollback to {to} failed: {error})"),
                },
                rollback: None,
            },
            Err(error) => return Err(error),
        },
        FailurePlan::NothingToRollBackTo => Undone {
            settlement: RolloutState::Failed {
                at: now,
                reason: format!("{reason} (nothing to roll back to: the failed revision is the last known-good one)"),
            },
            rollback: None,
        },
    }))
}

/// How a rollback ECS made of a native deployment is described.
fn native_rollback(strategy: &aws_sdk_ecs::types::DeploymentStrategy) -> &'static str {
    match strategy {
        aws_sdk_ecs::types::DeploymentStrategy::BlueGreen => "ECS already rolled back the blue/green deployment",
        aws_sdk_ecs::types::DeploymentStrategy::Linear => "ECS already rolled back the linear deployment",
        aws_sdk_ecs::types::DeploymentStrategy::Canary => "ECS already rolled back the canary deployment",
        _ => "ECS already rolled back the deployment",
    }
}

/// What ECS says about a failed deployment (stopped tasks) and, for a native one, why ECS rolled
/// it back (its service deployment's `rollback.reason` and alarms) and why Conveyor's lifecycle
/// hook failed it: best effort and bounded, the alert is worth more on time than complete.
/// `reason`: the failure's, which may already be ECS's (the service deployment read to judge it).
async fn diagnostics(here: &Leased<'_>, rollout: &Rollout, service: &ServiceState, reason: &str) -> Vec<String> {
    let Some(id) = &rollout.deployment_id else { return Vec::new() };
    let stopped = here.target.ecs.stopped_tasks(&here.target.service.cluster, id, 3);
    let mut lines = tokio::time::timeout(std::time::Duration::from_secs(5), stopped)
        .await
        .unwrap_or_else(|_| Ok(vec!["(stopped tasks: ECS did not answer in time)".into()]))
        .unwrap_or_else(|e| vec![format!("(stopped tasks unavailable: {e})")]);
    if service.native_strategy.is_some() {
        // ECS's reason, unless the failure's is it already (read when the rollout was judged).
        if !reason.contains(crate::aws::ECS_ROLLED_BACK) {
            let target = here.target.service;
            let why = here.target.ecs.rollback_reason(&target.cluster, &target.service);
            match tokio::time::timeout(std::time::Duration::from_secs(5), why).await {
                Ok(Ok(Some(why))) => lines.push(why),
                Ok(Ok(None)) => {}
                Ok(Err(error)) => lines.push(format!("(ECS's service deployment unavailable: {error})")),
                Err(_) => lines.push("(ECS's service deployment: ECS did not answer in time)".into()),
            }
        }
        match here.ledger().hook_failures(&here.app.name, here.env, rollout.started_at).await {
            Ok(failures) => lines.extend(
                failures
                    .iter()
                    .map(|f| format!("Conveyor's lifecycle hook answered FAILED at {}: {}", f.stage, f.reason)),
            ),
            Err(error) => lines.push(format!("(the lifecycle hook's answers unavailable: {error})")),
        }
    }
    lines
}

/// A rollout failed: the service goes back to its known-good revision, the image is failed here
/// (with several targets, the whole release: [`roll_back_release`]).
async fn roll_back(
    here: &mut Leased<'_>,
    rollout: &Rollout,
    service: &ServiceState,
    reason: String,
) -> Result<Handled, DeployError> {
    if wave::applies(here.app, here.env) {
        let current = here.env_state()?.rollout.as_ref().is_some_and(|release| release.id == rollout.id);
        if !current {
            return retire(here, rollout).await;
        }
        // A change made outside Conveyor on the failing target is drift there, not the image's
        // failure: the release ends superseded (`advance`), nothing is put back.
        let issued = here.held.intent().and_then(|intent| intent.rollback_of(&rollout.id)).map(str::to_owned);
        if decide::failure_plan(here.state()?, rollout, service, issued.as_deref()) == FailurePlan::ChangedOutside {
            return changed_outside(here).await;
        }
        return Box::pin(roll_back_release(here, here.index, reason, Some(service.clone()))).await;
    }
    let (app, env, now) = (here.app, here.env, Utc::now());
    let Some(undone) = undo(here, rollout, service, &reason, true, now).await? else {
        return changed_outside(here).await;
    };
    let diagnostics = diagnostics(here, rollout, service, &reason).await;
    let state = here.state()?.clone();
    let mut rollout = rollout.clone();
    if rollout.fail(undone.settlement.clone(), state.soaking(&rollout.id)).is_err() {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "already settled"));
    }
    let mut change = Change::new(state);
    change.state.soak = None;
    change.state.rollback = undone.watch(&rollout, now);
    change.state.rollout = Some(rollout.clone());
    commit_failure(here, change, &rollout, diagnostics).await
}

/// The release of an environment with several targets failed on target `failing` (`service`:
/// what its service is, when known): the decision is committed first (a retry or the sweep then
/// finishes what a crash cut short, and nothing verifies the release meanwhile); then every target
/// the release moved goes back to its own known-good revision (the failing one last: its
/// rollback's intent is the one a retry finds), the image is failed, and one notification names
/// every target's state.
async fn roll_back_release(
    here: &mut Leased<'_>,
    failing: usize,
    reason: String,
    service: Option<ServiceState>,
) -> Result<Handled, DeployError> {
    let (app, env, now) = (here.app, here.env, Utc::now());
    let mut first = here.at(0).await?;
    let root = first.env_state()?.clone();
    let Some(release) = root.rollout.clone().filter(|r| r.in_progress() || root.soaking(&r.id)) else {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "already settled"));
    };
    let soaking = root.soaking(&release.id);
    if root.failed_on(&release.id).is_none() {
        let mut change = Change::new(root);
        change.state.wave_of(&release.id).failed = Some((failing, reason.clone()));
        first.commit(change).await?;
    }
    let failing_label = app.target_at(env, failing).map(|t| t.label()).unwrap_or_default();
    let (mut undone, mut diagnostics) = (Vec::new(), Vec::new());
    for index in (0..app.targets(env)?.len()).filter(|i| *i != failing).chain([failing]) {
        let mut there = first.at(index).await?;
        let moved = there.target_state().and_then(|s| s.rollout.clone());
        let Some(moved) = moved.filter(|r| r.id == release.id && (r.in_progress() || soaking)) else { continue };
        let service = match (index == failing, &service) {
            (true, Some(service)) => service.clone(),
            _ => match service_of(&there.target).await? {
                Ok(service) => service,
                Err(_gone) => continue,
            },
        };
        let why =
            if index == failing { reason.clone() } else { format!("the release failed on {failing_label}: {reason}") };
        if index == failing {
            diagnostics = self::diagnostics(&there, &moved, &service, &reason).await;
        }
        let settled =
            undo(&mut there, &moved, &service, &why, index == failing, now).await?.unwrap_or_else(|| Undone {
                settlement: RolloutState::Superseded {
                    at: now,
                    reason: "replaced by a change made outside Conveyor".into(),
                },
                rollback: None,
            });
        undone.push((index, moved, settled));
    }
    let mut change = Change::new(first.env_state()?.clone());
    change.state.soak = None;
    for (index, moved, settled) in &undone {
        let Some(target) = change.state.target_mut(*index) else { continue };
        if let Some(recorded) = target.rollout.as_mut() {
            let _ = recorded.fail(settled.settlement.clone(), soaking);
        }
        target.rollback = settled.watch(moved, now);
    }
    // The release as one: failed where a target could not be put back, else as the failing
    // target settled (or, if the release never reached it, as the others did).
    let failed = undone.iter().map(|(_, _, u)| &u.settlement).find(|s| matches!(s, RolloutState::Failed { .. }));
    let own = undone.iter().find(|(index, _, _)| *index == failing).map(|(_, _, u)| &u.settlement);
    let first_moved = undone.first().map(|(_, _, u)| &u.settlement);
    let outcome =
        failed.or(own).or(first_moved).cloned().unwrap_or(RolloutState::Failed { at: now, reason: reason.clone() });
    let Some(recorded) = change.state.rollout.as_mut() else {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "already settled"));
    };
    // The first target's own rollout, if the release never moved it (it ran the image already).
    let _ = recorded.fail(outcome.clone(), soaking);
    let mut release = recorded.clone();
    release.state = outcome;
    commit_failure(&mut first, change, &release, diagnostics).await
}

/// The service of `target`: `Err` when it no longer exists.
async fn service_of(target: &Target<'_>) -> Result<Result<ServiceState, AwsError>, DeployError> {
    let service = target.service;
    match target.ecs.service(&service.cluster, &service.service).await {
        Ok(service) => Ok(Ok(service)),
        Err(error) if error.code == "ServiceNotFound" => Ok(Err(error)),
        Err(error) => Err(error.into()),
    }
}

/// Commits a failed release: the image failed here, history, one notification.
async fn commit_failure(
    here: &mut Leased<'_>,
    mut change: Change<EnvState>,
    rollout: &Rollout,
    diagnostics: Vec<String>,
) -> Result<Handled, DeployError> {
    let (app, env, now) = (here.app, here.env, Utc::now());
    let failure_reason = rollout.state.reason().unwrap_or_default().to_owned();
    let targets = change.state.target_statuses(app, env);
    let mut image = ImageUpdate::of(&rollout.digest, &rollout.image);
    image.failed = Some((env, Failure { at: now, reason: failure_reason.clone() }));
    change.images.push((app.name.clone(), image));
    let mut entry = history_of(&app.name, rollout, env, now);
    entry.targets = targets.clone();
    change.history.push(entry);
    let mut notification = Notification::of_rollout(app, env, rollout);
    notification.diagnostics = diagnostics;
    notification.targets = targets;
    change.announcements.push(Announcement::new(notification, app));
    here.commit(change).await?;
    warn!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest,
        deployment_id = rollout.deployment_id.as_deref(), state = rollout.state.name(), reason = %failure_reason, "rollout failed");
    let action =
        if matches!(rollout.state, RolloutState::RolledBack { .. }) { Action::RolledBack } else { Action::Failed };
    Ok(Handled::of(&app.name, env, action, failure_reason))
}

/// Points the service back at `to`. A revision deregistered since is registered again from its
/// definition (ECS refuses to run an INACTIVE one). Returns the revision and the deployment.
/// Rolls the service back to `to`, the intent written first (fenced by the lease): a retry after
/// a crash or a lost `UpdateService` answer then knows the rollback it finds in place is
/// Conveyor's, not the circuit breaker's.
async fn issue_rollback(
    here: &mut Leased<'_>,
    rollout: &Rollout,
    service: &ServiceState,
    to: &str,
) -> Result<(String, Option<String>), DeployError> {
    let (app, env) = (here.app, here.env);
    let target = here.target.service;
    let ecs = &here.target.ecs.clone();
    let deployment_of = |service: &ServiceState, td: &str| {
        service.deployments.iter().find(|d| d.is_primary() && d.task_definition == td).map(|d| d.id.clone())
    };
    let intent = |to: &str| Intent::rollback(&rollout.id, to);
    here.record_intent(intent(to)).await?;
    // A native deployment still in flight from `to`: blue still runs, ECS moves the traffic back
    // at once (a new deployment would scale up `to` again and shift the traffic step by step).
    if service.native_strategy.is_some() {
        if let Some(in_flight) = ecs.native_in_flight(&target.cluster, &target.service).await? {
            if in_flight.source_task_definition.as_deref() == Some(to) {
                ecs.roll_back_in_flight(&in_flight.arn, (&target.cluster, &target.service), to).await?;
                info!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest,
                    service_deployment_arn = %in_flight.arn, to, "native deployment rolled back in flight");
                return Ok((to.to_owned(), None));
            }
        }
    }
    match ecs.update_service(&target.cluster, &target.service, to).await {
        Ok(updated) => Ok((to.to_owned(), deployment_of(&updated, to))),
        Err(error) if is_inactive_revision(&error) => {
            let source = here.target.revision(to).await?;
            let copy = ImageSwap { container: &app.container, image: None, tags: Vec::new() };
            let registered = ecs.register(&source, &copy).await?;
            let arn = here.target.keep(registered).arn().to_owned();
            info!(app = %app.name, environment = %env, deregistered = %to, task_definition_arn = %arn,
                "the rollback target was deregistered: registered it again");
            here.record_intent(intent(&arn)).await?;
            let updated = ecs.update_service(&target.cluster, &target.service, &arn).await?;
            let deployment = deployment_of(&updated, &arn);
            Ok((arn, deployment))
        }
        Err(error) => Err(error.into()),
    }
}

/// A rollback deployment ECS finished: the service is back (restored), or the rollback failed
/// too and people must act.
async fn rollback_ended(
    here: &mut Leased<'_>,
    watch: &RollbackWatch,
    finding: Finding,
) -> Result<Handled, DeployError> {
    let (app, env, now) = (here.app, here.env, Utc::now());
    let mut change = Change::new(here.state()?.clone());
    change.state.rollback = None;
    let (event, action, reason) = match finding {
        Finding::Completed => {
            (Outcome::Restored, Action::Restored, format!("back on {}", crate::notify::short_arn(&watch.to)))
        }
        Finding::Failed(reason) => {
            (Outcome::Failed, Action::Failed, format!("the rollback deployment failed too: {reason}"))
        }
    };
    let mut entry = HistoryEntry::new(&app.name, env, event, now);
    entry.tag = Some(watch.tag.clone());
    entry.digest = Some(watch.digest.clone());
    entry.rollout_id = Some(watch.rollout_id.clone());
    entry.rollback_task_definition_arn = Some(watch.to.clone());
    entry.deployment_id = watch.deployment_id.clone();
    entry.reason = Some(reason.clone());
    entry.started_at = Some(watch.started_at);
    change.history.push(entry);
    if event == Outcome::Failed {
        let mut notification = Notification::of_service(app, env, Outcome::Failed, Severity::Critical);
        (notification.cluster, notification.service) =
            (Some(here.target.service.cluster.clone()), Some(here.target.service.service.clone()));
        notification.tag = Some(watch.tag.clone());
        notification.digest = Some(watch.digest.clone());
        notification.rollback_task_definition_arn = Some(watch.to.clone());
        notification.deployment_id = watch.deployment_id.clone();
        notification.reason = Some(format!("{reason}: the service may be down, people must act"));
        change.announcements.push(Announcement::new(notification, app));
    }
    here.commit(change).await?;
    if event == Outcome::Failed {
        error!(app = %app.name, environment = %env, task_definition_arn = %watch.to, reason = %reason, "rollback failed");
    }
    Ok(Handled::of(&app.name, env, action, reason))
}

/// A deployment Conveyor did not start replaced the service's: drift, announced once; a rollout
/// in flight is superseded (its image is not to blame).
async fn changed_outside(here: &mut Leased<'_>) -> Result<Handled, DeployError> {
    let (app, env) = (here.app, here.env);
    let observed = start::observe(&here.target, app).await?;
    let mut change = Change::new(here.state()?.clone());
    let provenance = start::Provenance { tokens: here.held.adoptable(), image: None };
    start::note_what_runs(app, env, &mut change, &observed, &provenance, Utc::now());
    here.held.settle_unsettled();
    name_the_target(here, &mut change);
    if change.history.is_empty() {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "stale: the service runs a revision Conveyor knows"));
    }
    here.commit(change).await?;
    Ok(Handled::of(&app.name, env, Action::Drift, format!("the service runs {}", observed.service.task_definition)))
}

/// The service of a rollout in flight no longer exists: the rollout fails (announced once), but
/// its image is not to blame.
async fn service_gone(here: &mut Leased<'_>, rollout: &Rollout, error: &AwsError) -> Result<Handled, DeployError> {
    let (app, env, now) = (here.app, here.env, Utc::now());
    let mut rollout = rollout.clone();
    let reason = format!("the service no longer exists ({})", error.message);
    if rollout.settle(RolloutState::Failed { at: now, reason: reason.clone() }).is_err() {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "already settled"));
    }
    let mut change = Change::new(here.state()?.clone());
    change.state.rollout = Some(rollout.clone());
    change.state.rollback = None;
    change.history.push(history_of(&app.name, &rollout, env, now));
    change.announcements.push(Announcement::new(Notification::of_rollout(app, env, &rollout), app));
    name_the_target(here, &mut change);
    here.commit(change).await?;
    Ok(Handled::of(&app.name, env, Action::Failed, reason))
}

/// On an environment's other targets, what a change found there says is about that target: its
/// service named (not the first target's), and a rollout of the release settled there announced
/// by the release as it ends ([`advance`]), not on its own — one notification per transition of
/// the environment.
fn name_the_target(here: &Leased<'_>, change: &mut Change<EnvState>) {
    if here.index == 0 {
        return;
    }
    let target = here.target.service;
    // A rollout settled (superseded, or failed with its service gone); a failed rollback is not.
    let release_settled = |n: &Notification| {
        n.outcome == Outcome::Superseded || (n.outcome == Outcome::Failed && n.rollback_task_definition_arn.is_none())
    };
    change.announcements.retain(|a| !release_settled(&a.notification));
    for announcement in &mut change.announcements {
        announcement.notification.cluster = Some(target.cluster.clone());
        announcement.notification.service = Some(target.service.clone());
    }
}

/// Ends every soak among `pending` whose time is up (under the environment's lease), then starts
/// the auto promotions that image's vetting calls for.
async fn end_soaks(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    config: &ConfigSet,
    pending: &[Item],
    invocation: &Invocation,
) -> Vec<Handled> {
    let now = Utc::now();
    let mut results = Vec::new();
    for item in pending {
        let Some(key) = ItemKey::parse(item) else { continue };
        let Some((app, env)) = key.app_env().and_then(|(app, env)| Some((config.app(&app)?, env))) else { continue };
        let state: Option<EnvState> = crate::ledger::state_from_item(item);
        if state.and_then(|s| s.soak).is_none_or(|soak| soak.until > now) {
            continue;
        }
        // Settling: a soak's end may roll back, and settles a rollback an attempt left half-way.
        let lease = Lease::new(key, "deploy-monitor soak".to_owned(), invocation).patient().settling();
        let ended = leases.with_env(lease, fleet, app, env, async |here| end_soak(here, now).await).await;
        match ended {
            Ok(handled) => {
                let vetted = handled.action == Action::Verified;
                results.push(handled);
                if vetted {
                    results.extend(promote_onwards(configs, fleet, leases, app.name.as_str(), env, invocation).await);
                }
            }
            Err(error) => {
                error!(app = %app.name, environment = %env, error = %error, "soak could not end");
                results.push(Handled::of(&app.name, env, Action::Error, error.to_string()));
            }
        }
    }
    results
}

/// After `env` of `app` vetted an image: the auto promotions it starts ([`crate::auto`]). A
/// failure here does not fail the event (its verification is committed): the sweep tries again.
async fn promote_onwards(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &str,
    env: Environment,
    invocation: &Invocation,
) -> Vec<Handled> {
    let Ok(config) = configs.get().await else { return Vec::new() };
    let Some(app) = config.apps.iter().find(|a| a.name.as_str() == app) else { return Vec::new() };
    crate::auto::after_vetting(configs, fleet, leases, app, env, invocation)
        .await
        .into_iter()
        .map(Handled::from)
        .collect()
}

impl From<crate::auto::Outcome> for Handled {
    fn from(outcome: crate::auto::Outcome) -> Self {
        Handled::of(&outcome.app, outcome.environment, outcome.action, outcome.detail)
    }
}

/// Reconciles every rollout and rollback still in flight with what ECS reports (for events that
/// never came, and rollouts past `rollout_timeout_seconds`), delivers notifications left in an
/// outbox, and announces invalid app configs. Each item is handled on its own, several at once:
/// one broken app never holds up or fails the others.
#[instrument(skip_all)]
async fn sweep(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    prober: &Prober,
    invocation: &Invocation,
) -> Result<MonitorReport, Error> {
    let config = configs.get().await?;
    for invalid in &config.invalid {
        crate::announce::config_error(configs, leases, invalid, invocation).await;
    }
    let pending = leases.ledger.pending().await?;
    // Soaks the timer missed (it runs every minute; the sweep is the safety net).
    let ended = Box::pin(end_soaks(configs, fleet, leases, &config, &pending, invocation)).await;
    // Approvals past their `approval_timeout`.
    let mut expired = Vec::new();
    for (app, env, outcome) in crate::decide::expire_due(fleet, leases, &config, &pending, invocation).await {
        expired.push(match outcome {
            Ok(true) => Handled::of(&app, env, Action::Skipped, "approval expired"),
            Ok(false) => continue,
            Err(error) => {
                error!(app = %app, environment = %env, error = %error, "approval could not expire");
                Handled::of(&app, env, Action::Error, error.to_string())
            }
        });
    }
    let results: Vec<Vec<Handled>> = futures_util::stream::iter(pending)
        .map(|item| sweep_item(fleet, leases, prober, &config, item, invocation))
        .buffer_unordered(SWEEP_CONCURRENCY)
        .collect()
        .await;
    let mut results: Vec<Handled> = ended.into_iter().chain(expired).chain(results.into_iter().flatten()).collect();
    let onwards = crate::auto::reconcile(configs, fleet, leases, &config.apps, invocation).await;
    results.extend(onwards.into_iter().map(Handled::from));
    results.extend(Box::pin(clean_revisions(fleet, leases, &config, invocation)).await);
    let errors = results.iter().filter(|r| r.action == Action::Error).count();
    info!(handled = results.len(), errors, "sweep done");
    Ok(MonitorReport { results })
}

/// Deregisters old revisions ([`crate::cleanup`]): every environment target's state in one read,
/// then, only where a cleanup is due (a rollout since the last one, past `keep_revisions`), the
/// target's family under its lease, within one budget for the whole sweep.
async fn clean_revisions(
    fleet: &Fleet,
    leases: Leases<'_>,
    config: &ConfigSet,
    invocation: &Invocation,
) -> Vec<Handled> {
    let keys: Vec<ItemKey> = config
        .apps
        .iter()
        .flat_map(|app| app.pipeline.environments.iter().map(|env| ItemKey::env(&app.name, env.name)))
        .collect();
    let items = match leases.ledger.items(&keys).await {
        Ok(items) => items,
        Err(error) => {
            warn!(error = %error, "revision cleanup skipped: the states cannot be read");
            return Vec::new();
        }
    };
    let mut states: Vec<(&AppConfig, Environment, usize, &EnvState)> = Vec::new();
    let parsed: Vec<(&AppConfig, Environment, usize, EnvState)> = config
        .apps
        .iter()
        .flat_map(|app| app.pipeline.environments.iter().map(move |env| (app, env)))
        .filter_map(|(app, env)| {
            let item = items.get(&ItemKey::env(&app.name, env.name))?;
            Some((app, env.name, env.targets.len(), crate::ledger::state_from_item::<EnvState>(item)?))
        })
        .collect();
    for (app, env, targets, state) in &parsed {
        states.extend((0..*targets).filter_map(|index| Some((*app, *env, index, state.target(index)?))));
    }
    // A family several services share (stage and prod on one family) is left alone: another
    // environment's rollback target, or what its service runs, could be among its old revisions.
    let mut families: HashMap<&str, usize> = HashMap::new();
    for (_, _, _, state) in &states {
        if let Some((family, _)) = crate::taskdef::family_revision(&state.baseline.arn) {
            *families.entry(family).or_default() += 1;
        }
    }
    let shared =
        |state: &EnvState| crate::taskdef::family_revision(&state.baseline.arn).is_some_and(|(f, _)| families[f] > 1);
    let mut budget = crate::cleanup::PER_SWEEP;
    let mut results = Vec::new();
    for (app, env, index, state) in states {
        if budget == 0 || shared(state) || crate::cleanup::due(state, app.keep_revisions).is_none() {
            continue;
        }
        let lease = Lease::new(ItemKey::env(&app.name, env), "deploy-monitor cleanup", invocation);
        let cleaned = Box::pin(
            leases.with_target(lease, fleet, app, env, index, async |here| crate::cleanup::clean(here, budget).await),
        )
        .await;
        match cleaned {
            Ok(0) => {}
            Ok(count) => {
                budget = budget.saturating_sub(count);
                let detail = format!("{count} old revision(s) deregistered");
                results.push(Handled::of(&app.name, env, Action::Deregistered, detail));
            }
            Err(error) => warn!(app = %app.name, environment = %env, error = %error, "revision cleanup failed"),
        }
    }
    results
}

async fn sweep_item(
    fleet: &Fleet,
    leases: Leases<'_>,
    prober: &Prober,
    config: &ConfigSet,
    item: Item,
    invocation: &Invocation,
) -> Vec<Handled> {
    let Some(key) = ItemKey::parse(&item) else { return Vec::new() };
    let target = key
        .app_env()
        .and_then(|(app, env)| config.app(&app).filter(|app| app.target(env).is_ok()).map(|app| (app, env)));
    let state: Option<EnvState> = crate::ledger::state_from_item(&item);
    let Some(((app, env), state)) = target.zip(state) else {
        // An announcement, or an app or environment no longer configured: only its outbox is
        // left to deliver.
        return deliver(leases, &key, invocation).await.into_iter().collect();
    };
    match reconcile_item(fleet, leases, prober, app, env, &state, invocation).await {
        // Still waiting for ECS (no lease was taken): notifications left undelivered go out anyway.
        Ok(Some(handled)) if handled.action == Action::Waiting && item.contains_key("outbox") => {
            std::iter::once(handled).chain(deliver(leases, &key, invocation).await).collect()
        }
        Ok(Some(handled)) => vec![handled],
        Ok(None) => deliver(leases, &key, invocation).await.into_iter().collect(),
        Err(error) => {
            error!(app = %app.name, environment = %env, error = %error, "sweep could not reconcile");
            vec![Handled::of(&app.name, env, Action::Error, error.to_string())]
        }
    }
}

/// Delivers an item's outbox if nobody holds it (read with its own type: an environment's state,
/// or a config notice).
async fn deliver(leases: Leases<'_>, key: &ItemKey, invocation: &Invocation) -> Option<Handled> {
    let lease = Lease::new(key.clone(), "deploy-monitor sweep", invocation).settling();
    let count: Result<usize, crate::ledger::LedgerError> = match key.app_env() {
        Some(_) => leases.with(lease, async |held: &mut Held<EnvState>| Ok(held.outbox.len())).await,
        None => leases.with(lease, async |held: &mut Held<ConfigNotice>| Ok(held.outbox.len())).await,
    };
    let count = count.ok()?;
    (count > 0).then(|| Handled {
        app: None,
        environment: None,
        action: Action::Delivered,
        detail: format!("{count} notification(s) of {}", key.label()),
    })
}

/// What the sweep does for one environment; `None` when nothing is in flight. Decided first
/// from what the index and ECS say; the lease is taken only when there is something to settle.
async fn reconcile_item(
    fleet: &Fleet,
    leases: Leases<'_>,
    prober: &Prober,
    app: &AppConfig,
    env: Environment,
    state: &EnvState,
    invocation: &Invocation,
) -> Result<Option<Handled>, DeployError> {
    let now = Utc::now();
    let busy = |s: &EnvState| s.in_progress().is_some() || s.rollback.is_some();
    if wave::applies(app, env) && (busy(state) || state.targets.iter().any(busy)) {
        // Several targets: whatever is in flight is looked at under the lease, target by target.
        let lease = Lease::new(ItemKey::env(&app.name, env), "deploy-monitor sweep", invocation).settling();
        // Boxed, like the one below: the sweep runs several at once, each a large future.
        let settled = Box::pin(
            leases.with_env(lease, fleet, app, env, async |here| reconcile_wave(prober, here, now, invocation).await),
        );
        return match settled.await {
            Err(DeployError::Ledger(crate::ledger::LedgerError::Busy { .. })) => {
                Ok(Some(Handled::of(&app.name, env, Action::Waiting, "another invocation is working on it")))
            }
            other => other.map(Some),
        };
    }
    let target = app.target(env)?;
    let (rollout, watch) = (state.in_progress(), state.rollback.as_ref());
    if rollout.is_none() && watch.is_none() {
        return Ok(None);
    }
    let reached = fleet.target(app, target).await;
    let service = service_of(&reached).await?;
    if let Ok(service) = &service {
        let waiting = match (rollout, watch) {
            (Some(rollout), _) => {
                matches!(sweep_action(&reached, app, rollout, service, now).await, Ok(SweepAction::Wait))
                    .then(|| format!("{} still in progress", rollout.tag))
            }
            (None, Some(watch)) => (decide::reconcile_watch(watch, service, now, app.rollout_timeout)
                == WatchAction::Wait)
                .then(|| format!("rollback to {} in progress", crate::notify::short_arn(&watch.to))),
            (None, None) => None,
        };
        if let Some(what) = waiting {
            return Ok(Some(Handled::of(&app.name, env, Action::Waiting, what)));
        }
    }
    let lease = Lease::new(ItemKey::env(&app.name, env), "deploy-monitor sweep", invocation).settling();
    let settled =
        Box::pin(leases.with_env(lease, fleet, app, env, async |here| {
            reconcile_leased(prober, here, service, now, invocation).await
        }));
    match settled.await {
        Err(DeployError::Ledger(crate::ledger::LedgerError::Busy { .. })) => {
            Ok(Some(Handled::of(&app.name, env, Action::Waiting, "another invocation is working on it")))
        }
        other => other.map(Some),
    }
}

/// The sweep's look at an environment with several targets (`here`: its first): each target's
/// rollout still in progress and not verified yet, and each rollback being watched, settled as
/// ECS says; then the release in progress moves on ([`advance`]) if a step was cut short. Says
/// what it did last.
async fn reconcile_wave(
    prober: &Prober,
    here: &mut Leased<'_>,
    now: chrono::DateTime<Utc>,
    invocation: &Invocation,
) -> Result<Handled, DeployError> {
    let env = here.env_state()?.clone();
    let count = here.app.targets(here.env)?.len();
    let unsettled = |index: usize| {
        let Some(state) = env.target(index) else { return false };
        let pending = state.in_progress().is_some_and(|r| !env.verified_on(&r.id, index));
        pending || state.rollback.is_some()
    };
    let mut settled = None;
    for index in (0..count).filter(|i| unsettled(*i)) {
        let mut there = here.at(index).await?;
        let service = service_of(&there.target).await?;
        let handled = Box::pin(reconcile_leased(prober, &mut there, service, now, invocation)).await?;
        if handled.action != Action::Waiting {
            settled = Some(handled);
        }
    }
    let advanced = match here.env_state()?.in_progress() {
        Some(_) => Some(Box::pin(advance(here)).await?),
        None => None,
    };
    let (app, env) = (here.app, here.env);
    Ok(match (settled, advanced) {
        (_, Some(advanced)) if advanced.action != Action::Waiting => advanced,
        (Some(settled), _) => settled,
        (None, advanced) => {
            advanced.unwrap_or_else(|| Handled::of(&app.name, env, Action::Skipped, "settled meanwhile"))
        }
    })
}

async fn reconcile_leased(
    prober: &Prober,
    here: &mut Leased<'_>,
    service: Result<ServiceState, AwsError>,
    now: chrono::DateTime<Utc>,
    invocation: &Invocation,
) -> Result<Handled, DeployError> {
    // Read again under the lease: another invocation may have settled it meanwhile.
    let (app, env) = (here.app, here.env);
    let Some(state) = here.target_state().cloned() else {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "no state"));
    };
    if let Some(rollout) = state.in_progress() {
        let service = match service {
            Ok(service) => service,
            Err(error) => return service_gone(here, rollout, &error).await,
        };
        return match sweep_action(&here.target, app, rollout, &service, now).await? {
            SweepAction::Wait => {
                Ok(Handled::of(&app.name, env, Action::Waiting, format!("{} still in progress", rollout.tag)))
            }
            SweepAction::Verify => {
                Box::pin(settle(prober, here, rollout, Finding::Completed, Some(service), invocation)).await
            }
            SweepAction::Fail(reason) => {
                Box::pin(settle(prober, here, rollout, Finding::Failed(reason), Some(service), invocation)).await
            }
            SweepAction::Replaced => changed_outside(here).await,
        };
    }
    let Some(watch) = state.rollback.as_ref() else {
        return Ok(Handled::of(&app.name, env, Action::Skipped, "settled meanwhile"));
    };
    let Ok(service) = service else {
        let mut change = Change::new(state.clone());
        change.state.rollback = None;
        here.commit(change).await?;
        return Ok(Handled::of(&app.name, env, Action::Skipped, "the service no longer exists"));
    };
    match decide::reconcile_watch(watch, &service, now, app.rollout_timeout) {
        WatchAction::Wait => {
            Ok(Handled::of(&app.name, env, Action::Waiting, format!("rollback to {} in progress", watch.to)))
        }
        WatchAction::Restored => rollback_ended(here, watch, Finding::Completed).await,
        WatchAction::Failed(reason) => rollback_ended(here, watch, Finding::Failed(reason)).await,
        WatchAction::Gone => {
            let mut change = Change::new(state.clone());
            change.state.rollback = None;
            here.commit(change).await?;
            Ok(Handled::of(&app.name, env, Action::Skipped, "the rollback deployment was replaced"))
        }
    }
}
