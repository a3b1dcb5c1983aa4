//! `conveyor pause` and `conveyor resume`: the library's own pause and resume, run with the
//! user's credentials (they write the state table and publish through the notification outbox).

use std::time::Duration;

use chrono::SecondsFormat;
use conveyor::leased::Leases;
use conveyor::pause::PauseReport;
use conveyor::record::RecordedPush;
use conveyor::stage::StageReport;
use conveyor::types::{Environment, Requester};
use conveyor::vocabulary::{Action, Outcome};
use conveyor::Invocation;
use serde::Serialize;
use serde_json::{json, Value};

use super::{configs, find_app};
use crate::args::{environments, Env};
use crate::context::Context;
use crate::error::{CliError, AWS_OR_CONFIG};
use crate::output::{self, Report, Style};

/// What `pause` and `resume` print with `--json`. Every key is always present.
#[derive(Debug, Clone, Serialize)]
pub struct PauseOutput {
    pub app: String,
    pub action: PauseAction,
    pub by: String,
    pub reason: Option<String>,
    pub environments: Vec<EnvOutcome>,
    /// `resume --deploy-latest`: the held push delivered again, and stage-deploy's answer.
    pub deployed: Option<Deployed>,
    /// No alert topic is known: the notification was only logged.
    pub notified: bool,
}

/// Which command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseAction {
    Pause,
    Resume,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvOutcome {
    pub environment: Environment,
    /// `false`: it already was so (nothing announced).
    pub changed: bool,
    pub paused: bool,
    pub held_push: Option<RecordedPush>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    pub event: Value,
    pub report: StageReport,
}

impl From<PauseReport> for EnvOutcome {
    fn from(report: PauseReport) -> Self {
        EnvOutcome {
            environment: report.environment,
            changed: report.changed,
            paused: report.paused,
            held_push: report.held_push,
        }
    }
}

/// The caller, as STS verified the credentials this process writes with.
fn verified(by: &str) -> Requester {
    Requester { verified: Some(by.to_owned()), on_behalf_of: None }
}

fn invocation() -> Invocation {
    Invocation::lasting(Duration::from_secs(60))
}

pub async fn pause(ctx: &Context, app: &str, env: Option<Env>, reason: &str) -> Result<Report, CliError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CliError::invalid("--reason must say why (it is shown in status, the history and the alert)"));
    }
    let set = configs(ctx).await?;
    let app = find_app(&set, app, &ctx.names().await?.prefix)?;
    let by = ctx.identity().await?;
    let (ledger, notifier, fleet) = (ctx.ledger().await?, ctx.notifier().await?, ctx.fleet()?);
    let leases = Leases { ledger: &ledger, notifier: &notifier };
    let mut outcomes = Vec::new();
    for env in environments(env) {
        let report = conveyor::pause::pause(&fleet, leases, app, env, reason, &verified(&by), &invocation()).await?;
        outcomes.push(EnvOutcome::from(report));
    }
    let output = PauseOutput {
        app: app.name.to_string(),
        action: PauseAction::Pause,
        by,
        reason: Some(reason.to_owned()),
        environments: outcomes,
        deployed: None,
        notified: ctx.names().await?.topic_arn.is_some(),
    };
    Ok(report(&ctx.style, output))
}

/// The "ECR Image Action" event of a held push, as EventBridge delivered it.
pub fn push_event(push: &RecordedPush) -> Value {
    let mut event = json!({
        "version": "0",
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "time": push.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "resources": [],
        "detail": {
            "result": "SUCCESS",
            "repository-name": push.repository,
            "image-digest": push.digest,
            "action-type": "PUSH",
            "image-tag": push.tag,
        }
    });
    for (key, value) in [("id", &push.event_id), ("account", &push.account), ("region", &push.region)] {
        if let Some(value) = value {
            event[key] = json!(value);
        }
    }
    event
}

pub async fn resume(ctx: &Context, app: &str, env: Option<Env>, deploy_latest: bool) -> Result<Report, CliError> {
    if deploy_latest && env == Some(Env::Prod) {
        return Err(CliError::invalid(
            "--deploy-latest rolls out the push held in stage; prod changes only by promotion",
        ));
    }
    let names = ctx.names().await?;
    let stage_deploy = if deploy_latest { Some(names.stage_deploy_function()?) } else { None };
    let set = configs(ctx).await?;
    let app = find_app(&set, app, &names.prefix)?;
    let by = ctx.identity().await?;
    let (ledger, notifier, fleet) = (ctx.ledger().await?, ctx.notifier().await?, ctx.fleet()?);
    let leases = Leases { ledger: &ledger, notifier: &notifier };
    let mut outcomes = Vec::new();
    for env in environments(env) {
        let report = conveyor::pause::resume(&fleet, leases, app, env, &verified(&by), &invocation()).await?;
        outcomes.push(EnvOutcome::from(report));
    }
    let held = outcomes.iter().find(|o| o.environment == Environment::Stage).and_then(|o| o.held_push.clone());
    let mut deployed = None;
    if let (Some(function), Some(push)) = (stage_deploy, held) {
        let event = push_event(&push);
        let answer = super::promote::invoke(&ctx.lambda()?, function, &event).await?;
        let report = serde_json::from_value(answer.clone())
            .map_err(|e| CliError::new(AWS_OR_CONFIG, "AwsError", format!("{function} answered {answer}: {e}")))?;
        deployed = Some(Deployed { event, report });
    }
    let output = PauseOutput {
        app: app.name.to_string(),
        action: PauseAction::Resume,
        by,
        reason: None,
        environments: outcomes,
        deployed,
        notified: names.topic_arn.is_some(),
    };
    Ok(report(&ctx.style, output))
}

fn report(style: &Style, output: PauseOutput) -> Report {
    let mut lines = Vec::new();
    for env in &output.environments {
        let at = format!("{} {}", output.app, env.environment);
        let state = if env.paused { Outcome::Paused } else { Outcome::Resumed };
        let painted = style.paint(state.as_str(), state);
        lines.push(match (env.changed, output.action) {
            (true, PauseAction::Pause) => {
                format!("{at}: {painted} by {}: {}", output::who(&output.by), output.reason.as_deref().unwrap_or(""))
            }
            (true, _) => format!("{at}: {painted} by {}", output::who(&output.by)),
            (false, _) => format!("{at}: already {}", if env.paused { "paused" } else { "running (not paused)" }),
        });
        if let (Some(push), PauseAction::Resume) = (&env.held_push, output.action) {
            let held = format!(
                "{} ({}) pushed {}",
                push.tag,
                output::short_digest(push.digest.as_str()),
                output::time(push.time)
            );
            if output.deployed.is_some() {
                lines.push(format!("{at}: held push {held} delivered to stage-deploy again"));
            } else {
                lines.push(format!(
                    "{at}: push {held} was held while paused; `conveyor resume {} --env stage --deploy-latest` rolls it out",
                    output.app
                ));
            }
        }
    }
    if let Some(deployed) = &output.deployed {
        for app in deployed.report.apps.iter().filter(|a| a.app == output.app) {
            // Rolling out, the revision says it all; otherwise stage-deploy's detail says why not.
            let detail = match (&app.task_definition_arn, app.status) {
                (Some(arn), Action::Deploying) => conveyor::notify::short_arn(arn),
                _ => &app.detail,
            };
            lines.push(format!("{} stage: {} {detail}", output.app, style.paint(app.status.as_str(), app.status)));
        }
        if let Some(skipped) = &deployed.report.skipped {
            lines.push(format!("stage-deploy skipped it: {skipped}"));
        }
    }
    if output.environments.iter().any(|e| e.changed) && !output.notified {
        lines.push(
            "note: no alert topic is known (CONVEYOR_TOPIC_ARN or --stack): the notification was only logged".into(),
        );
    }
    let json = serde_json::to_value(&output).unwrap_or(Value::Null);
    Report::done(json, lines.join("\n"))
}
