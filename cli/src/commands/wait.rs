//! `conveyor wait APP TAG [--env ENV] [--vetted]`: blocks until an image is verified in an
//! environment, so that a pipeline can gate on stage after a push. Reads the state table only.

use std::time::Instant;

use chrono::Utc;
use conveyor::ops::follow::{digest_of_tag, image_progress, ImageProgress};
use conveyor::record::EnvState;
use conveyor::types::{AppName, Environment, ImageDigest, ImageTag};
use serde::Serialize;
use serde_json::json;

use super::promote::{WaitOutcome, Waited, POLL};
use super::{configs, find_app};
use crate::args::WaitForArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::output::{self, Report};

/// What `wait` prints with `--json`. Every key is always present.
#[derive(Debug, Clone, Serialize)]
struct WaitOutput {
    app: String,
    environment: Environment,
    tag: Option<String>,
    digest: Option<String>,
    wait: WaitOutcome,
}

pub async fn run(ctx: &Context, args: WaitForArgs) -> Result<Report, CliError> {
    let set = configs(ctx).await?;
    let app = find_app(&set, &args.app, &ctx.names().await?.prefix)?;
    let env = match args.env {
        Some(env) => app.targets(env).map(|_| env).map_err(|e| CliError::invalid(e.to_string()))?,
        // Where pushes roll out: what a pipeline waits on after pushing.
        None => app.pipeline.entries().next().map(|e| e.name).ok_or_else(|| {
            CliError::invalid(format!("{} has no environment pushes roll out to: name one with --env", app.name))
        })?,
    };
    let tag = args.tag.as_deref().map(ImageTag::parse).transpose().map_err(|e| CliError::invalid(e.to_string()))?;
    let mut digest =
        args.digest.as_deref().map(ImageDigest::parse).transpose().map_err(|e| CliError::invalid(e.to_string()))?;
    let ledger = ctx.ledger().await?;
    let image =
        tag.as_ref().map_or_else(|| digest.as_ref().map(ToString::to_string).unwrap_or_default(), ToString::to_string);
    eprintln!(
        "waiting until {} {image} is {} in {env} (at most {})",
        app.name,
        if args.vetted { "vetted" } else { "verified" },
        output::duration(args.timeout.as_secs() as i64)
    );

    let started = Instant::now();
    let (mut followed, mut said) = (false, String::new());
    let outcome = loop {
        let state = ledger.env::<EnvState>(&app.name, env).await?.map(|(state, _)| state);
        if digest.is_none() {
            digest = match (digest_of_tag(state.as_ref(), image.as_str()), &tag) {
                (Some(found), _) => Some(found),
                (None, Some(tag)) => ledger.tag(&app.name, env, tag).await?.map(|item| item.digest),
                (None, None) => None,
            };
        }
        let progress = match &digest {
            Some(digest) => {
                let facts = ledger.image(&app.name, digest).await?;
                image_progress(env, state.as_ref(), facts.as_ref(), digest, followed, Utc::now())
            }
            None => ImageProgress::Unseen,
        };
        let seconds = started.elapsed().as_secs();
        let settled =
            |outcome, reason: Option<String>, to| WaitOutcome { outcome, reason, seconds, rolled_back_to: to };
        let now = match &progress {
            ImageProgress::Verified { soaking_until: Some(until), .. } if args.vetted => {
                format!("verified, soaking until {}", output::time(*until))
            }
            ImageProgress::Verified { at, .. } => {
                break settled(Waited::Verified, Some(format!("verified at {}", output::time(*at))), None);
            }
            ImageProgress::Ended(state) => {
                let outcome = Waited::settled(state).unwrap_or(Waited::Failed);
                let to = match state {
                    conveyor::rollout::RolloutState::RolledBack { to, .. } => Some(to.clone()),
                    _ => None,
                };
                break settled(outcome, state.reason().map(str::to_owned), to);
            }
            ImageProgress::InProgress => {
                followed = true;
                "rolling out".to_owned()
            }
            ImageProgress::Unseen => "not rolled out yet".to_owned(),
        };
        if started.elapsed() >= args.timeout {
            let reason = format!("{now} after {}", output::duration(seconds as i64));
            break settled(Waited::TimedOut, Some(reason), None);
        }
        let message = format!("{} {env} {image}: {now}", app.name);
        if message != said {
            eprintln!("{message}");
            said = message;
        }
        tokio::time::sleep(POLL).await;
    };
    report(&app.name, env, tag, digest, outcome, &ctx.style)
}

fn report(
    app: &AppName,
    env: Environment,
    tag: Option<ImageTag>,
    digest: Option<ImageDigest>,
    wait: WaitOutcome,
    style: &output::Style,
) -> Result<Report, CliError> {
    let output = WaitOutput {
        app: app.to_string(),
        environment: env,
        tag: tag.map(|t| t.to_string()),
        digest: digest.map(|d| d.to_string()),
        wait,
    };
    let what = match (&output.tag, &output.digest) {
        (Some(tag), Some(digest)) => format!("{tag} ({})", output::short_digest(digest)),
        (Some(tag), None) => tag.clone(),
        (None, digest) => output::short_digest(digest.as_deref().unwrap_or("-")).to_owned(),
    };
    let text = format!(
        "{} after {}: {app} {env} {what}{}",
        style.paint(output.wait.outcome.as_str(), output.wait.outcome),
        output::duration(output.wait.seconds as i64),
        output.wait.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
    );
    let exit_code = output.wait.exit_code();
    let json = serde_json::to_value(&output).unwrap_or_else(|_| json!({}));
    Ok(Report { json, text, exit_code })
}
