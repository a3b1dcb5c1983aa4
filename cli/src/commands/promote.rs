//! `conveyor promote` and `conveyor rollback`: both invoke the promote function (so who may change
//! prod stays an IAM decision on that function) and can follow the prod rollout (`--wait`).

use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use conveyor::config::AppConfig;
use conveyor::fleet::Fleet;
use conveyor::ledger::Ledger;
use conveyor::notify::short_arn;
use conveyor::ops::follow;
use conveyor::ops::{history, status};
use conveyor::record::EnvState;
use conveyor::rollout::{Rollout, RolloutState};
use conveyor::types::{Environment, ImageDigest};
use conveyor::vocabulary::Outcome;
use conveyor::vocabulary::PromoteStatus;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};

use super::{app_name, configs, find_app};
use crate::args::{PromoteArgs, RollbackArgs, WaitArgs};
use crate::context::Context;
use crate::error::{CliError, AWS_OR_CONFIG, DONE, REFUSED, ROLLED_BACK, TIMED_OUT};
use crate::output::{self, or_dash, render, Report, Style, Tone};

/// How often `--wait` looks at the rollout.
pub const POLL: Duration = Duration::from_secs(1);

/// Invokes a function synchronously (RequestResponse); a function error (HTTP 200 with
/// `FunctionError`) becomes a [`CliError`] by its `errorType`.
pub async fn invoke(lambda: &aws_sdk_lambda::Client, function: &str, payload: &Value) -> Result<Value, CliError> {
    let output = lambda
        .invoke()
        .function_name(function)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(payload.to_string()))
        .send()
        .await
        .map_err(|e| CliError::aws(&format!("Lambda Invoke of {function}"), e))?;
    let body: Value =
        output.payload().and_then(|body| serde_json::from_slice(body.as_ref()).ok()).unwrap_or(Value::Null);
    if output.function_error().is_some() {
        let error_type = body["errorType"].as_str().unwrap_or("Unhandled");
        let message = body["errorMessage"].as_str().map_or_else(|| body.to_string(), str::to_owned);
        return Err(CliError::function(error_type, &message));
    }
    Ok(body)
}

/// A release: a tag and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// How `--wait` ended: the rollout settled (as the state table says), or the wait gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Waited {
    Verified,
    /// Prod already ran the digest: there was nothing to follow.
    AlreadyDeployed,
    RolledBack,
    Failed,
    Superseded,
    TimedOut,
    /// The promotion waited for an approval, and it was rejected.
    Rejected,
    /// The promotion waited for an approval nobody gave in time.
    ApprovalExpired,
}

impl Waited {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// How a settled rollout ended; `None` while it is still in progress.
    pub fn settled(state: &RolloutState) -> Option<Self> {
        match state {
            RolloutState::InProgress => None,
            RolloutState::Verified { .. } => Some(Waited::Verified),
            RolloutState::RolledBack { .. } => Some(Waited::RolledBack),
            RolloutState::Failed { .. } => Some(Waited::Failed),
            RolloutState::Superseded { .. } => Some(Waited::Superseded),
        }
    }
}

impl From<Waited> for Tone {
    fn from(waited: Waited) -> Self {
        match waited {
            Waited::Verified | Waited::AlreadyDeployed => Tone::Good,
            Waited::RolledBack | Waited::Failed | Waited::TimedOut | Waited::Rejected => Tone::Bad,
            Waited::Superseded | Waited::ApprovalExpired => Tone::Quiet,
        }
    }
}

/// How `--wait` ended, with why and after how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitOutcome {
    pub outcome: Waited,
    pub reason: Option<String>,
    pub seconds: u64,
    /// Rolled back: the revision prod went back to.
    pub rolled_back_to: Option<String>,
}

impl WaitOutcome {
    pub fn exit_code(&self) -> u8 {
        match self.outcome {
            Waited::Verified | Waited::AlreadyDeployed => DONE,
            Waited::TimedOut | Waited::ApprovalExpired => TIMED_OUT,
            Waited::RolledBack | Waited::Failed | Waited::Superseded => ROLLED_BACK,
            Waited::Rejected => REFUSED,
        }
    }
}

/// What `promote` and `rollback` print with `--json`. Every key is always present.
#[derive(Debug, Clone, Serialize)]
pub struct PromoteOutput {
    pub app: String,
    pub environment: Environment,
    pub tag: String,
    pub digest: String,
    pub task_definition_arn: String,
    pub status: PromoteStatus,
    pub forced: bool,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    /// Dry run: what prod's container runs now.
    pub current: Option<DryRunSide>,
    /// Dry run: what it would run.
    pub new: Option<DryRunSide>,
    /// Rollback: what prod ran when the rollback was asked for.
    pub rollback_from: Option<Release>,
    /// `awaiting_approval`: the request to approve, and when it expires; after an approval, the
    /// one approved and by whom.
    pub approval_id: Option<String>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub approved_by: Option<String>,
    /// `--wait`: how the prod rollout ended.
    pub wait: Option<WaitOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DryRunSide {
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub image: Option<String>,
}

pub async fn promote(ctx: &Context, args: PromoteArgs) -> Result<Report, CliError> {
    let app = app_name(&args.app)?;
    ctx.names().await?.promote_function()?;
    let mut payload = json!({ "app": app, "dry_run": args.dry_run, "force": args.force });
    match (&args.tag, &args.digest) {
        (Some(tag), _) => payload["tag"] = json!(tag),
        (None, Some(digest)) => payload["digest"] = json!(digest),
        (None, None) => return Err(CliError::invalid("give the TAG (or --digest) to promote")),
    }
    if let Some(reason) = &args.reason {
        payload["reason"] = json!(reason);
    }
    if let Some(to) = args.to {
        payload["to"] = json!(to);
    }
    execute(ctx, &app.to_string(), payload, args.dry_run, &args.wait, None).await
}

pub async fn rollback(ctx: &Context, args: RollbackArgs) -> Result<Report, CliError> {
    ctx.names().await?.promote_function()?;
    let set = configs(ctx).await?;
    let app = find_app(&set, &args.app, &ctx.names().await?.prefix)?;
    let env = production(app)?;
    let prod = app.target(env).map_err(|e| CliError::new(AWS_OR_CONFIG, "ConfigError", e.to_string()))?;
    let running = status::running(&ctx.fleet()?, app, prod).await?;
    let from = Release { tag: running.tag.clone(), digest: running.digest.clone() };
    let mut payload = json!({ "app": app.name, "dry_run": args.dry_run });
    // `to` only where promote would not imply it (a v2 promote function refuses the key).
    let manual: Vec<_> = app
        .pipeline
        .environments
        .iter()
        .filter(|e| {
            matches!(e.source, conveyor::config::Source::From { promotion: conveyor::config::Promotion::Manual, .. })
        })
        .collect();
    if !matches!(manual[..], [one] if one.name == env) {
        payload["to"] = json!(env);
    }
    let target = match &args.to {
        Some(tag) => {
            payload["tag"] = json!(tag);
            tag.clone()
        }
        None => {
            let entries = history::all(&ctx.ledger().await?, &app.name).await?;
            let running_digest = running.digest.as_deref().and_then(|d| ImageDigest::parse(d).ok());
            let Some(previous) = history::previous_release(&entries, env, running_digest.as_ref()) else {
                return Err(CliError::new(
                    REFUSED,
                    "NothingToRollBackTo",
                    format!(
                        "{} {env} has no verified release before the one it runs ({} {}): name a promotable tag with --to TAG",
                        app.name,
                        or_dash(running.tag.as_deref()),
                        or_dash(running.digest.as_deref().map(output::short_digest))
                    ),
                ));
            };
            payload["digest"] = json!(previous.digest);
            previous.tag.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string)
        }
    };
    let reason = match &args.reason {
        Some(reason) => format!("rollback to {target}: {reason}"),
        None => format!("rollback from {} to {target}", or_dash(from.tag.as_deref())),
    };
    payload["reason"] = json!(reason);
    // A rollback goes through a pause (`rollback`, v3): sent only then, a v2 promote function
    // refusing the key.
    let state = ctx.ledger().await?.env::<EnvState>(&app.name, env).await?.map(|(state, _)| state);
    if state.is_some_and(|s| s.paused.is_some()) {
        payload["rollback"] = json!(true);
    }
    execute(ctx, app.name.as_str(), payload, args.dry_run, &args.wait, Some(from)).await
}

/// The environment `rollback` puts back (prod): the app's one environment no other takes images
/// from, promoted into.
fn production(app: &AppConfig) -> Result<Environment, CliError> {
    let last: Vec<Environment> = app
        .pipeline
        .environments
        .iter()
        .filter(|e| matches!(e.source, conveyor::config::Source::From { .. }) && app.pipeline.is_last(e.name))
        .map(|e| e.name)
        .collect();
    match last[..] {
        [one] => Ok(one),
        _ => Err(CliError::invalid(format!(
            "{} has no single last environment to roll back ({}): promote the tag to go back to with `conveyor promote --to`",
            app.name,
            last.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ))),
    }
}

async fn execute(
    ctx: &Context,
    app: &str,
    payload: Value,
    dry_run: bool,
    wait: &WaitArgs,
    rollback_from: Option<Release>,
) -> Result<Report, CliError> {
    let response = invoke_promote(ctx, &payload).await?;
    report(ctx, app, &payload, response, dry_run, wait, rollback_from).await
}

/// Invokes the promote function with `payload` and the caller's identity proof; its answer, as a
/// promotion's.
pub async fn invoke_promote(ctx: &Context, payload: &Value) -> Result<conveyor::promote::Response, CliError> {
    let function = ctx.names().await?.promote_function()?;
    let proven = crate::proof::proven(ctx, payload.clone()).await?;
    let answer = invoke(&ctx.lambda()?, function, &proven).await?;
    serde_json::from_value(answer.clone())
        .map_err(|e| CliError::new(AWS_OR_CONFIG, "AwsError", format!("{function} answered {answer}: {e}")))
}

/// What a promotion (or an approval) answered, followed to its end with `--wait`.
pub async fn report(
    ctx: &Context,
    app: &str,
    payload: &Value,
    mut response: conveyor::promote::Response,
    dry_run: bool,
    wait: &WaitArgs,
    rollback_from: Option<Release>,
) -> Result<Report, CliError> {
    let side = |tag: Option<&str>, digest: Option<&str>, image: Option<&str>| DryRunSide {
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
        image: image.map(str::to_owned),
    };
    let mut output = PromoteOutput {
        current: dry_run.then(|| {
            // A revision Conveyor did not register has no `conveyor:image-tag`: its image may say.
            let tag = response
                .current_tag
                .as_deref()
                .or_else(|| response.current_image.as_deref().and_then(conveyor::ops::status::tag_of_image));
            side(tag, response.current_digest.as_deref(), response.current_image.as_deref())
        }),
        new: dry_run.then(|| side(Some(&response.tag), Some(&response.digest), response.image.as_deref())),
        app: response.app.clone(),
        environment: response.environment,
        tag: response.tag.clone(),
        digest: response.digest.clone(),
        task_definition_arn: response.task_definition_arn.clone(),
        status: response.status,
        forced: response.forced,
        requested_by: response.requested_by.clone(),
        reason: payload["reason"].as_str().map(str::to_owned),
        rollback_from,
        approval_id: response.approval_id.clone(),
        expires_at: response.expires_at,
        approved_by: response.approved_by.clone(),
        wait: None,
    };
    let mut exit_code = DONE;
    if wait.wait && !dry_run {
        let set = configs(ctx).await?;
        let config = find_app(&set, app, &ctx.names().await?.prefix)?;
        let (ledger, fleet) = (ctx.ledger().await?, ctx.fleet()?);
        let started = Instant::now();
        let mut decided = None;
        if response.status == PromoteStatus::AwaitingApproval {
            match wait_for_decision(&ledger, config, &response, wait.timeout).await? {
                Ok(rollout) => {
                    output.approved_by = rollout.approved_by().map(str::to_owned);
                    response.task_definition_arn = rollout.task_definition_arn;
                    response.status = PromoteStatus::Deploying;
                }
                Err(ended) => decided = Some(ended),
            }
        }
        let outcome = match decided {
            Some(ended) => ended,
            None => {
                let left = wait.timeout.saturating_sub(started.elapsed());
                let mut outcome = follow_rollout(&ledger, &fleet, config, &response, left).await?;
                outcome.seconds = started.elapsed().as_secs();
                outcome
            }
        };
        exit_code = outcome.exit_code();
        output.wait = Some(outcome);
    }
    let text = text(&ctx.style, &output);
    let json = serde_json::to_value(&output).unwrap_or(Value::Null);
    Ok(Report { json, text, exit_code })
}

/// Waits for the approval a promotion waits on: the rollout it started once approved, or how it
/// ended without one (rejected, expired, superseded, or `timeout` passed). Progress goes to stderr.
async fn wait_for_decision(
    ledger: &Ledger,
    app: &AppConfig,
    response: &conveyor::promote::Response,
    timeout: Duration,
) -> Result<Result<Rollout, WaitOutcome>, CliError> {
    let digest = ImageDigest::parse(&response.digest).map_err(|e| CliError::config(e.to_string()))?;
    let id = response.approval_id.clone().unwrap_or_default();
    let started = Instant::now();
    eprintln!(
        "waiting for approval {id} of {} {} {} (another person: `conveyor approve {} --to {} --id {id}`)",
        app.name, response.environment, response.tag, app.name, response.environment
    );
    loop {
        let state = ledger.env::<EnvState>(&app.name, response.environment).await?.map(|(state, _)| state);
        let seconds = started.elapsed().as_secs();
        let ended = |outcome: Waited, reason: String| {
            Ok(Err(WaitOutcome { outcome, reason: Some(reason), seconds, rolled_back_to: None }))
        };
        match follow::decision(state.as_ref(), &id, &digest) {
            follow::Decision::Pending if started.elapsed() >= timeout => {
                return ended(
                    Waited::TimedOut,
                    format!("approval {id} still pending after {}", output::duration(seconds as i64)),
                );
            }
            follow::Decision::Pending => tokio::time::sleep(POLL).await,
            follow::Decision::Approved(rollout) => {
                eprintln!("approved by {}", rollout.approved_by().unwrap_or("-"));
                return Ok(Ok(*rollout));
            }
            follow::Decision::Declined { outcome: Outcome::Rejected, reason } => {
                return ended(Waited::Rejected, reason)
            }
            follow::Decision::Declined { reason, .. } => return ended(Waited::ApprovalExpired, reason),
            follow::Decision::Superseded { reason } => return ended(Waited::Superseded, reason),
        }
    }
}

/// Follows the prod rollout a promotion started (the state table and ECS) until it settles or
/// `timeout` passes; progress goes to stderr.
async fn follow_rollout(
    ledger: &Ledger,
    fleet: &Fleet,
    app: &AppConfig,
    response: &conveyor::promote::Response,
    timeout: Duration,
) -> Result<WaitOutcome, CliError> {
    let digest = ImageDigest::parse(&response.digest).map_err(|e| CliError::config(e.to_string()))?;
    let started = Instant::now();
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").unwrap_or(ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let plain = spinner.is_hidden();
    if plain {
        eprintln!(
            "following {} {} {} ({}) until it is verified or rolled back (at most {})",
            app.name,
            response.environment,
            response.tag,
            short_arn(&response.task_definition_arn),
            output::duration(timeout.as_secs() as i64)
        );
    }
    let mut said = String::new();
    let outcome = loop {
        let state = ledger.env::<EnvState>(&app.name, response.environment).await?.map(|(state, _)| state);
        let progress = follow::progress(state.as_ref(), &response.task_definition_arn, &digest);
        let seconds = started.elapsed().as_secs();
        let settled = |outcome: Waited, reason: Option<String>, to: Option<String>| WaitOutcome {
            outcome,
            reason,
            seconds,
            rolled_back_to: to,
        };
        match &progress {
            Some(state) => {
                if let Some(outcome) = Waited::settled(state) {
                    let to = match state {
                        RolloutState::RolledBack { to, .. } => Some(to.clone()),
                        _ => None,
                    };
                    break settled(outcome, state.reason().map(str::to_owned), to);
                }
            }
            None if response.status == PromoteStatus::AlreadyDeployed => {
                break settled(Waited::AlreadyDeployed, Some(format!("{} already ran it", response.environment)), None)
            }
            // Blue never stopped running: ECS moves the traffic back at once, nothing to follow.
            None if response.status == PromoteStatus::RollingBack => {
                break settled(Waited::AlreadyDeployed, Some("rolled back in flight".to_owned()), None)
            }
            None => {}
        }
        if started.elapsed() >= timeout {
            break settled(
                Waited::TimedOut,
                Some(format!("not settled after {}", output::duration(seconds as i64))),
                None,
            );
        }
        let target =
            app.target(response.environment).map_err(|e| CliError::new(AWS_OR_CONFIG, "ConfigError", e.to_string()))?;
        let ecs = match status::running(fleet, app, target).await {
            Ok(running) => match &running.deployment {
                Some(d) => format!(
                    "deployment {} {}/{} running{}",
                    d.id,
                    d.running_count,
                    d.desired_count,
                    d.rollout_state.as_deref().map(|s| format!(", {s}")).unwrap_or_default()
                ),
                None => format!("{} {}/{} running", running.revision, running.running_count, running.desired_count),
            },
            Err(error) => format!("ECS: {error}"),
        };
        let message = format!(
            "{} {} {} {}: {}; {ecs}",
            app.name,
            response.environment,
            response.tag,
            short_arn(&response.task_definition_arn),
            progress.as_ref().map_or("unknown", RolloutState::name)
        );
        if plain {
            if message != said {
                eprintln!("{message}");
                said = message;
            }
        } else {
            spinner.set_message(message);
        }
        tokio::time::sleep(POLL).await;
    };
    spinner.finish_and_clear();
    Ok(outcome)
}

fn text(style: &Style, output: &PromoteOutput) -> String {
    let revision = short_arn(&output.task_definition_arn);
    let what = format!("{} {} ({})", output.app, output.tag, output::short_digest(&output.digest));
    let env = output.environment;
    let mut lines = Vec::new();
    if let Some(from) = &output.rollback_from {
        lines.push(format!(
            "rollback: {env} runs {} ({}), going back to {}",
            or_dash(from.tag.as_deref()),
            or_dash(from.digest.as_deref().map(output::short_digest)),
            output.tag
        ));
    }
    match output.status {
        PromoteStatus::DryRun | PromoteStatus::AlreadyDeployed if output.current.is_some() => {
            let mut table = style.table(&["", "TAG", "DIGEST", "IMAGE"]);
            for (label, side) in [(format!("{env} now"), &output.current), ("would run".to_owned(), &output.new)] {
                let side = side.as_ref();
                table.add_row(vec![
                    style.cell(&label, None),
                    style.cell(or_dash(side.and_then(|s| s.tag.as_deref())), None),
                    style.cell(or_dash(side.and_then(|s| s.digest.as_deref()).map(output::short_digest)), None),
                    style.cell(or_dash(side.and_then(|s| s.image.as_deref())), None),
                ]);
            }
            if output.status == PromoteStatus::AlreadyDeployed {
                lines.push(format!("dry run: {env} already runs {what}; promoting it would change nothing"));
            } else {
                lines.push(format!(
                    "dry run, nothing changed: promoting {what} to {env} would replace {revision} with a new \
                     revision of {} that differs in the app container's image only:",
                    revision.split(':').next().unwrap_or(revision)
                ));
            }
            lines.push(String::new());
            lines.push(render(&table));
        }
        PromoteStatus::AlreadyDeployed => lines.push(format!("{env} already runs {what} ({revision}): nothing to do")),
        PromoteStatus::RollingBack => lines.push(format!(
            "{}: {env}'s deployment in flight is stopped and ECS moves all traffic back to {what} ({revision}), \
             which never stopped running",
            style.paint(output.status.as_str(), output.status)
        )),
        PromoteStatus::AwaitingApproval => {
            let id = output.approval_id.as_deref().unwrap_or("-");
            lines.push(format!(
                "{what} → {env}: {} {id}; nothing changes until another person approves it",
                style.paint(output.status.as_str(), output.status)
            ));
            lines.push(format!(
                "approve: conveyor approve {} --to {env} --id {id}   (expires {})",
                output.app,
                output.expires_at.map_or_else(|| "-".to_owned(), |at| at.format("%Y-%m-%d %H:%M UTC").to_string())
            ));
        }
        status => lines.push(format!("{what} → {env}: {} {revision}", style.paint(status.as_str(), status))),
    }
    if output.forced {
        lines.push("forced: the image failed before; the history and the notification say so".into());
    }
    if output.current.is_none() {
        let by = output.requested_by.as_deref().map(output::who).unwrap_or("-");
        match &output.reason {
            Some(reason) => lines.push(format!("requested by {by}: {reason}")),
            None => lines.push(format!("requested by {by}")),
        }
    }
    if let Some(approver) = &output.approved_by {
        lines.push(format!("approved by {}", output::who(approver)));
    }
    if let Some(wait) = &output.wait {
        let after = output::duration(wait.seconds as i64);
        let painted = style.paint(wait.outcome.as_str(), wait.outcome);
        lines.push(match wait.outcome {
            Waited::Verified => format!("{painted} after {after}: {env} runs {what}"),
            Waited::AlreadyDeployed => format!("{painted}: {env} runs {what}"),
            Waited::RolledBack => format!(
                "{painted} after {after}: {}; {env} is back on {}",
                wait.reason.as_deref().unwrap_or(""),
                wait.rolled_back_to.as_deref().map(short_arn).unwrap_or("-")
            ),
            Waited::TimedOut => format!(
                "{painted} after {after}: the rollout goes on (`conveyor status {}` shows where it is)",
                output.app
            ),
            Waited::Failed | Waited::Superseded | Waited::Rejected | Waited::ApprovalExpired => {
                format!("{painted} after {after}: {}", wait.reason.as_deref().unwrap_or(""))
            }
        });
    }
    lines.join("\n")
}
