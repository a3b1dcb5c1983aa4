//! deploy-monitor: turns ECS deployment state changes (and a periodic sweep) into verified
//! releases, automatic rollbacks and alerts.
//!
//! Slow work (health checks, reading stopped tasks) happens before the service's lease is taken;
//! under the lease the record is read again, so a concurrent or repeated delivery changes nothing.

pub mod decide;

use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info, instrument, warn};

use crate::aws::ServiceState;
use crate::config::AppConfig;
use crate::error::{DeployError, Error};
use crate::events::{self, DeploymentEvent, MonitorEvent, Skip};
use crate::notify::{Notification, Outcome, Severity};
use crate::releases::{EnvRecord, Failure, Rollout, RolloutState, TagRecord};
use crate::types::Environment;
use crate::Conveyor;
use decide::{EventDecision, FailurePlan, SweepAction, Verification};

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
    /// `skipped`, `waiting`, `verified`, `rolled_back`, `failed` or `superseded`.
    pub action: &'static str,
    pub detail: String,
}

impl Handled {
    fn skipped(detail: impl Into<String>) -> Self {
        Handled { app: None, environment: None, action: "skipped", detail: detail.into() }
    }

    fn of(app: &AppConfig, env: Environment, action: &'static str, detail: impl Into<String>) -> Self {
        Handled { app: Some(app.name.to_string()), environment: Some(env), action, detail: detail.into() }
    }
}

/// Handles one EventBridge event: a deployment state change or the sweep schedule.
pub async fn handle(conveyor: &Conveyor, payload: Value) -> Result<MonitorReport, Error> {
    match events::monitor(payload) {
        Ok(Ok(MonitorEvent::Deployment(event))) => {
            // Boxed, like every handler's work (see `stage::handle`).
            let handled = Box::pin(on_deployment(conveyor, &event)).await?;
            Ok(MonitorReport { results: vec![handled] })
        }
        Ok(Ok(MonitorEvent::Sweep)) => Box::pin(sweep(conveyor)).await,
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
async fn on_deployment(conveyor: &Conveyor, event: &DeploymentEvent) -> Result<Handled, Error> {
    let config = conveyor.config.get(&conveyor.clients.ssm).await?;
    let owner = config.owner_of(event.cluster.as_deref(), &event.service);
    let Some((app, env)) = owner else {
        info!(reason = "unmanaged service", "event skipped");
        return Ok(Handled::skipped(format!("{} is not a service Conveyor manages", event.service_arn)));
    };
    let failed = |error: DeployError| Error::Deploy(vec![(app.name.clone(), error)]);
    let record = conveyor.releases.env_record(&app.name, env).await.map_err(|e| failed(e.into()))?;
    let (rollout, finding) = match decide::on_event(record.as_ref(), event) {
        EventDecision::Skip(reason) => {
            info!(app = %app.name, environment = %env, reason = %reason, "event skipped");
            return Ok(Handled::of(app, env, "skipped", reason));
        }
        EventDecision::Verify(rollout) => (rollout, Finding::Completed),
        EventDecision::Fail(rollout, reason) => (rollout, Finding::Failed(reason)),
    };
    settle(conveyor, app, env, &rollout, finding, None).await.map_err(failed)
}

/// Reconciles every rollout still in progress with what ECS reports, for completions and
/// failures whose event never came, and rollouts past `rollout_timeout_seconds`.
#[instrument(skip_all)]
async fn sweep(conveyor: &Conveyor) -> Result<MonitorReport, Error> {
    let config = conveyor.config.get(&conveyor.clients.ssm).await?;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for app in &config.apps {
        let records = match conveyor.releases.env_records(&app.name).await {
            Ok(records) => records,
            Err(error) => {
                failures.push((app.name.clone(), error.into()));
                continue;
            }
        };
        for (env, rollout) in records.iter().filter_map(|r| Some((r.environment, r.in_progress()?))) {
            match sweep_rollout(conveyor, app, env, rollout).await {
                Ok(handled) => results.push(handled),
                Err(error) => {
                    error!(app = %app.name, environment = %env, error = %error, "sweep failed");
                    failures.push((app.name.clone(), error));
                }
            }
        }
    }
    info!(in_flight = results.len() + failures.len(), failed = failures.len(), "sweep done");
    if failures.is_empty() {
        Ok(MonitorReport { results })
    } else {
        Err(Error::Deploy(failures))
    }
}

async fn sweep_rollout(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    rollout: &Rollout,
) -> Result<Handled, DeployError> {
    let target = app.target(env);
    let service = conveyor.clients.ecs.service(&target.cluster, &target.service).await?;
    match decide::reconcile(rollout, &service, Utc::now(), app.rollout_timeout) {
        SweepAction::Wait => Ok(Handled::of(app, env, "waiting", format!("{} still in progress", rollout.tag))),
        SweepAction::Verify => settle(conveyor, app, env, rollout, Finding::Completed, Some(service)).await,
        SweepAction::Fail(reason) => settle(conveyor, app, env, rollout, Finding::Failed(reason), Some(service)).await,
        SweepAction::Superseded(reason) => {
            let recorded = under_lease(conveyor, app, env, rollout, async |mut record| {
                record.settled(RolloutState::Superseded, &reason, Utc::now());
                conveyor.releases.save_env_record(&record).await.map_err(DeployError::from)
            })
            .await?;
            if recorded.is_some() {
                info!(app = %app.name, environment = %env, tag = %rollout.tag, reason = %reason, "rollout superseded");
            }
            Ok(Handled::of(app, env, "superseded", reason))
        }
    }
}

/// What the monitor found out about a rollout.
enum Finding {
    Completed,
    Failed(String),
}

/// Settles a rollout: verify a completion, or roll back a failure; record it and alert.
async fn settle(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    rollout: &Rollout,
    finding: Finding,
    service: Option<ServiceState>,
) -> Result<Handled, DeployError> {
    let target = app.target(env);
    let ecs = &conveyor.clients.ecs;
    let failure = match finding {
        Finding::Failed(reason) => reason,
        Finding::Completed => {
            let service = match service {
                Some(service) => service,
                None => ecs.service(&target.cluster, &target.service).await?,
            };
            match verify(conveyor, app, env, rollout, &service).await {
                Ok(()) => return record_verified(conveyor, app, env, rollout).await,
                Err(Some(reason)) => reason,
                Err(None) => {
                    let reason = "completion of a deployment that is no longer primary: nothing vetted".to_owned();
                    info!(app = %app.name, environment = %env, tag = %rollout.tag, reason = %reason, "event skipped");
                    return Ok(Handled::of(app, env, "skipped", reason));
                }
            }
        }
    };
    roll_back(conveyor, app, env, rollout, failure).await
}

/// `Ok` when verified, `Err(Some(reason))` when not, `Err(None)` when the completion is stale.
async fn verify(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    rollout: &Rollout,
    service: &ServiceState,
) -> Result<(), Option<String>> {
    match decide::verify(rollout, service) {
        Verification::Stale(reason) => {
            info!(app = %app.name, environment = %env, reason = %reason, "stale completion");
            Err(None)
        }
        Verification::Failed(reason) => Err(Some(reason)),
        Verification::Healthy => match &app.target(env).health_url {
            None => Ok(()),
            Some(url) => {
                let checked = crate::health::check(&conveyor.http, url, conveyor.health_budget).await;
                info!(app = %app.name, environment = %env, health_url = %url, healthy = checked.is_ok(), "health check");
                checked.map(drop).map_err(Some)
            }
        },
    }
}

async fn record_verified(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    rollout: &Rollout,
) -> Result<Handled, DeployError> {
    let now = Utc::now();
    let releases = &conveyor.releases;
    let recorded = under_lease(conveyor, app, env, rollout, async |mut record| {
        record.verified(now);
        releases.save_env_record(&record).await?;
        releases
            .update_image(&app.name, &rollout.digest, &rollout.image, |image| {
                image.add_tag(&rollout.tag);
                image.vetted.insert(env, now);
            })
            .await?;
        if env == Environment::Stage {
            let tag = TagRecord {
                tag: rollout.tag.clone(),
                digest: rollout.digest.clone(),
                image: rollout.image.clone(),
                vetted_at: now,
            };
            releases.save_tag_record(&app.name, &tag).await?;
        }
        Ok(())
    })
    .await?;
    if recorded.is_none() {
        return Ok(Handled::of(app, env, "skipped", "already handled by another invocation"));
    }
    info!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest,
        deployment_id = rollout.deployment_id.as_deref(), task_definition_arn = %rollout.task_definition_arn, "rollout verified");
    let mut notification = Notification::of_rollout(app, env, rollout, Outcome::Verified, Severity::Info);
    notification.reason = Some("deployment completed, every task running, health check passed".into());
    conveyor.notifier.send(&notification, app.slack_webhook_parameter.as_deref()).await;
    Ok(Handled::of(app, env, "verified", format!("{} ({})", rollout.tag, rollout.digest)))
}

/// How a failed rollout ended.
struct Settled {
    state: RolloutState,
    severity: Severity,
    rollback_to: Option<String>,
    reason: String,
}

async fn roll_back(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    rollout: &Rollout,
    reason: String,
) -> Result<Handled, DeployError> {
    let target = app.target(env);
    let ecs = &conveyor.clients.ecs;
    let releases = &conveyor.releases;
    // Best effort and bounded: the alert is worth more on time than complete.
    let diagnostics = match &rollout.deployment_id {
        Some(id) => tokio::time::timeout(std::time::Duration::from_secs(5), ecs.stopped_tasks(&target.cluster, id, 3))
            .await
            .unwrap_or_else(|_| Ok(vec!["(stopped tasks: ECS did not answer in time)".into()]))
            .unwrap_or_else(|e| vec![format!("(stopped tasks unavailable: {e})")]),
        None => Vec::new(),
    };

    let settled = under_lease(conveyor, app, env, rollout, async |mut record| {
        let service = ecs.service(&target.cluster, &target.service).await?;
        let (state, severity, rollback_to, detail) = match decide::failure_plan(&record, rollout, &service) {
            FailurePlan::AlreadyRolledBack { to } => (
                RolloutState::RolledBack,
                rolled_back_severity(env),
                Some(to),
                "ECS circuit breaker already rolled back".into(),
            ),
            FailurePlan::RollBack { to } => match ecs.update_service(&target.cluster, &target.service, &to).await {
                Ok(_) => {
                    (RolloutState::RolledBack, rolled_back_severity(env), Some(to), "rolled back by Conveyor".into())
                }
                Err(error) => {
                    (RolloutState::Failed, Severity::Critical, None, format!("rollback to {to} failed: {error}"))
                }
            },
            FailurePlan::NothingToRollBackTo => (
                RolloutState::Failed,
                Severity::Critical,
                None,
                "nothing to roll back to: the failed revision is the last verified one".to_owned(),
            ),
        };
        let reason = format!("{reason} ({detail})");
        let now = Utc::now();
        record.settled(state, &reason, now);
        releases.save_env_record(&record).await?;
        releases
            .update_image(&app.name, &rollout.digest, &rollout.image, |image| {
                image.add_tag(&rollout.tag);
                image.failed.insert(env, Failure { at: now, reason: reason.clone() });
            })
            .await?;
        Ok(Settled { state, severity, rollback_to, reason })
    })
    .await?;
    let Some(settled) = settled else {
        return Ok(Handled::of(app, env, "skipped", "already handled by another invocation"));
    };

    let outcome = if settled.state == RolloutState::RolledBack { Outcome::RolledBack } else { Outcome::Failed };
    warn!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest,
        deployment_id = rollout.deployment_id.as_deref(), rollback_task_definition_arn = settled.rollback_to.as_deref(),
        outcome = %outcome, reason = %settled.reason, "rollout failed");
    let mut notification = Notification::of_rollout(app, env, rollout, outcome, settled.severity);
    notification.reason = Some(settled.reason.clone());
    notification.rollback_task_definition_arn = settled.rollback_to;
    notification.diagnostics = diagnostics;
    conveyor.notifier.send(&notification, app.slack_webhook_parameter.as_deref()).await;
    Ok(Handled::of(app, env, settled.state.as_str(), settled.reason))
}

fn rolled_back_severity(env: Environment) -> Severity {
    match env {
        Environment::Stage => Severity::Error,
        Environment::Prod => Severity::Critical,
    }
}

/// Runs `act` on the environment's record under its lease, if `rollout` is still the one in
/// progress there; `None` when another invocation settled it first.
async fn under_lease<T>(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    rollout: &Rollout,
    act: impl AsyncFnOnce(EnvRecord) -> Result<T, DeployError>,
) -> Result<Option<T>, DeployError> {
    conveyor
        .leased(&app.name, env, "deploy-monitor", async || match conveyor.releases.env_record(&app.name, env).await? {
            Some(record) if record.in_progress() == Some(rollout) => act(record).await.map(Some),
            _ => Ok(None),
        })
        .await
}
