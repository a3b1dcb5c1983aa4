//! `conveyor pause` and `conveyor resume`: both invoke the function of each environment —
//! stage-deploy for the entry environments (stage), promote for the others (prod), as the app's
//! pipeline says — so only Conveyor's functions write the state table,
//! each function changes its own environment only, and who may pause stays an IAM decision on
//! those functions; `resume --deploy-latest` asks stage-deploy to roll out the push stage held,
//! which it reads from the table.

use chrono::SecondsFormat;
use conveyor::operate::{self, EnvOutcome};
use conveyor::record::RecordedPush;
use conveyor::stage::StageReport;
use conveyor::types::Environment;
use conveyor::vocabulary::{Action, Outcome};
use serde::Serialize;
use serde_json::{json, Value};

use conveyor::config::Source;

use super::{app_name, configs, find_app};
use crate::context::Context;
use crate::error::{CliError, AWS_OR_CONFIG};
use crate::output::{self, Report, Style};

/// What `pause` and `resume` print with `--json`. Every key is always present.
#[derive(Debug, Clone, Serialize)]
pub struct PauseOutput {
    pub app: String,
    pub action: PauseAction,
    /// The caller's AWS identity, as STS confirmed it from the CLI's identity proof.
    pub by: String,
    pub reason: Option<String>,
    pub environments: Vec<EnvOutcome>,
    /// `resume --deploy-latest`: the held push rolled out again (as its event), and stage-deploy's
    /// answer.
    pub deployed: Option<Deployed>,
    /// `false`: a function has no alert topic, the notification was only logged.
    pub notified: bool,
}

/// Which command ran.
pub type PauseAction = operate::OperationName;

#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    pub event: Value,
    pub report: StageReport,
}

pub async fn pause(ctx: &Context, app: &str, env: Option<Environment>, reason: &str) -> Result<Report, CliError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CliError::invalid("--reason must say why (it is shown in status, the history and the alert)"));
    }
    let payload = json!({ "operation": "pause", "app": app_name(app)?, "reason": reason });
    operate(ctx, env, payload).await
}

pub async fn resume(
    ctx: &Context,
    app: &str,
    env: Option<Environment>,
    deploy_latest: bool,
) -> Result<Report, CliError> {
    let payload = json!({ "operation": "resume", "app": app_name(app)?, "deploy_latest": deploy_latest });
    operate(ctx, env, payload).await
}

/// Invokes the function of each environment (`--env`, else every one in pipeline order) with the
/// operation, as the caller (`by`), and puts the answers together.
async fn operate(ctx: &Context, env: Option<Environment>, payload: Value) -> Result<Report, CliError> {
    let names = ctx.names().await?;
    let set = configs(ctx).await?;
    let app = find_app(&set, payload["app"].as_str().unwrap_or_default(), &names.prefix)?;
    let environments: Vec<(Environment, bool)> = match env {
        Some(env) => {
            let entry = match app.pipeline.source(env) {
                Some(source) => matches!(source, Source::Entry),
                None => return Err(CliError::invalid(app.no_such(env).to_string())),
            };
            if !entry && payload["deploy_latest"] == json!(true) {
                return Err(CliError::invalid(format!(
                    "--deploy-latest rolls out the push held in an entry environment; {env} changes only by promotion"
                )));
            }
            vec![(env, entry)]
        }
        None => app.pipeline.environments.iter().map(|e| (e.name, matches!(e.source, Source::Entry))).collect(),
    };
    let lambda = ctx.lambda()?;
    let mut output: Option<PauseOutput> = None;
    for (env, entry) in environments {
        let function = if entry { names.stage_deploy_function()? } else { names.promote_function()? };
        let mut payload = payload.clone();
        payload["environment"] = json!(env);
        if !entry {
            payload.as_object_mut().map(|p| p.remove("deploy_latest"));
        }
        // Who pauses is the identity STS confirms from the proof (crate::proof), never a name.
        let payload = crate::proof::proven(ctx, payload).await?;
        let answer = super::promote::invoke(&lambda, function, &payload).await?;
        let response: operate::Response = serde_json::from_value(answer.clone())
            .map_err(|e| CliError::new(AWS_OR_CONFIG, "AwsError", format!("{function} answered {answer}: {e}")))?;
        let deployed = response.deployed.map(|d| Deployed { event: push_event(&d.push), report: d.report });
        match &mut output {
            None => {
                output = Some(PauseOutput {
                    app: response.app,
                    action: response.operation,
                    by: response.by.clone().or(response.on_behalf_of.clone()).unwrap_or_default(),
                    reason: response.reason,
                    environments: response.environments,
                    deployed,
                    notified: response.notified,
                })
            }
            Some(output) => {
                output.environments.extend(response.environments);
                output.deployed = output.deployed.take().or(deployed);
                output.notified &= response.notified;
            }
        }
    }
    let output = output.ok_or_else(|| CliError::invalid("no environment to pause or resume"))?;
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
            "note: a function has no alert topic (its CONVEYOR_TOPIC_ARN): the notification was only logged".into(),
        );
    }
    let json = serde_json::to_value(&output).unwrap_or(Value::Null);
    Report::done(json, lines.join("\n"))
}
