//! stage-deploy: an ECR push rolls out to the stage service of every app fed by that repository.

use serde::Serialize;
use serde_json::Value;
use tracing::{error, info, instrument};

use crate::config::AppConfig;
use crate::error::{DeployError, Error};
use crate::events::{self, Push, Skip};
use crate::notify::{Notification, Outcome, Severity};
use crate::releases::Arrival;
use crate::rollout::{self, Candidate, ImageSource, Started};
use crate::types::Environment;
use crate::Conveyor;

/// What one invocation did, app by app (the Lambda response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageReport {
    /// Set when the whole event was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub apps: Vec<AppReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppReport {
    pub app: String,
    /// `deploying`, `skipped` or `failed`.
    pub status: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
}

impl StageReport {
    fn skipped(reason: String) -> Self {
        StageReport { skipped: Some(reason), apps: Vec::new() }
    }
}

/// Handles one EventBridge event. Fails (so Lambda retries) if any matching app failed; the retry
/// skips the apps that already run the image.
pub async fn handle(conveyor: &Conveyor, payload: Value) -> Result<StageReport, Error> {
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
    Box::pin(deploy_push(conveyor, &push)).await
}

#[instrument(skip_all, fields(event_id = push.event_id.as_deref(), repository = %push.repository, tag = %push.tag, digest = %push.digest))]
async fn deploy_push(conveyor: &Conveyor, push: &Push) -> Result<StageReport, Error> {
    let config = conveyor.config.get(&conveyor.clients.ssm).await?;
    let fed: Vec<&AppConfig> = config.fed_by(&push.repository).collect();
    if fed.is_empty() {
        let reason = format!("no app is fed by repository {}", push.repository);
        info!(reason = %reason, "event skipped");
        return Ok(StageReport::skipped(reason));
    }

    let mut report = StageReport { skipped: None, apps: Vec::new() };
    let mut failures = Vec::new();
    for app in fed {
        let outcome = deploy_app(conveyor, app, push).await;
        match outcome {
            Ok(app_report) => report.apps.push(app_report),
            Err(error) => {
                error!(app = %app.name, environment = "stage", error = %error, retryable = error.retryable(), "stage deploy failed");
                report.apps.push(AppReport {
                    app: app.name.to_string(),
                    status: "failed",
                    detail: error.to_string(),
                    task_definition_arn: None,
                    deployment_id: None,
                });
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

async fn deploy_app(conveyor: &Conveyor, app: &AppConfig, push: &Push) -> Result<AppReport, DeployError> {
    if !app.tags.admits(&push.tag) {
        return Ok(skipped(app, push, format!("tag {} does not match the app's tag pattern", push.tag)));
    }
    let owner = push.event_id.clone().unwrap_or_else(|| format!("push {} {}", push.tag, push.time));
    conveyor.leased(&app.name, Environment::Stage, &owner, async || deploy_app_leased(conveyor, app, push).await).await
}

fn skipped(app: &AppConfig, push: &Push, detail: String) -> AppReport {
    info!(app = %app.name, environment = "stage", tag = %push.tag, digest = %push.digest, reason = %detail, "app skipped");
    AppReport { app: app.name.to_string(), status: "skipped", detail, task_definition_arn: None, deployment_id: None }
}

/// [`deploy_app`] under the service's lease: decide, roll out, record, notify.
async fn deploy_app_leased(conveyor: &Conveyor, app: &AppConfig, push: &Push) -> Result<AppReport, DeployError> {
    let env = Environment::Stage;
    let record = conveyor.releases.env_record(&app.name, env).await?;
    match record.as_ref().map(|r| r.arrival(push.time, &push.digest)) {
        Some(Arrival::Late) => {
            let detail = format!("push at {} is older than the newest one already deployed", push.time.to_rfc3339());
            return Ok(skipped(app, push, detail));
        }
        Some(Arrival::Repeated) => {
            return Ok(skipped(app, push, "this push was already deployed (repeated delivery)".into()));
        }
        Some(Arrival::Newer) | None => {}
    }

    let candidate = Candidate {
        tag: &push.tag,
        digest: &push.digest,
        source: ImageSource::Pushed {
            account: push.account.as_deref(),
            region: push.region.as_deref(),
            repository: &push.repository,
        },
        event_time: push.time,
    };
    let rollout = match rollout::start(conveyor, app, env, record, &candidate).await? {
        Started::AlreadyRunning { task_definition_arn } => {
            return Ok(skipped(app, push, format!("stage already runs {} ({task_definition_arn})", push.digest)));
        }
        Started::Rolling(rollout) | Started::Recovered(rollout) => rollout,
    };
    info!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest,
        task_definition_arn = %rollout.task_definition_arn, deployment_id = rollout.deployment_id.as_deref(), "rollout started");

    let notification = Notification::of_rollout(app, env, &rollout, Outcome::Deploying, Severity::Info);
    conveyor.notifier.send(&notification, app.slack_webhook_parameter.as_deref()).await;
    Ok(AppReport {
        app: app.name.to_string(),
        status: "deploying",
        detail: format!("{} => {}", rollout.previous_task_definition_arn, rollout.task_definition_arn),
        task_definition_arn: Some(rollout.task_definition_arn),
        deployment_id: rollout.deployment_id,
    })
}
