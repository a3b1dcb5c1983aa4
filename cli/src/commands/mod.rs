//! One module per command; each returns a [`Report`] (or why it could not do its job).

pub mod approve;
pub mod config;
pub mod doctor;
pub mod history;
pub mod metrics;
pub mod pause;
pub mod promote;
pub mod status;
pub mod wait;

use std::sync::Arc;

use conveyor::config::{AppConfig, ConfigSet};
use conveyor::types::AppName;

use crate::args::{Command, ConfigCommand};
use crate::context::Context;
use crate::error::CliError;
use crate::output::Report;

pub async fn run(ctx: &Context, command: Command) -> Result<Report, CliError> {
    match command {
        Command::Status { app, promotable } => status::run(ctx, app.as_deref(), promotable).await,
        Command::History { app, env, limit } => history::run(ctx, &app, env, limit).await,
        Command::Promote(args) => promote::promote(ctx, args).await,
        Command::Rollback(args) => promote::rollback(ctx, args).await,
        Command::Pause { app, env, reason } => pause::pause(ctx, &app, env, &reason).await,
        Command::Resume { app, env, deploy_latest } => pause::resume(ctx, &app, env, deploy_latest).await,
        Command::Config(ConfigCommand::Validate { files, local }) => config::validate(ctx, &files, local).await,
        Command::Config(ConfigCommand::Put { file }) => config::put(ctx, &file).await,
        Command::Metrics { app, days } => metrics::run(ctx, app.as_deref(), days).await,
        Command::Approve { app, to, id, wait } => approve::approve(ctx, &app, to, id.as_deref(), &wait).await,
        Command::Wait(args) => wait::run(ctx, args).await,
        Command::Doctor { app } => doctor::run(ctx, app.as_deref()).await,
        // Handled in `main`, before any AWS set-up.
        Command::Completions { .. } | Command::Man => Ok(Report::done(serde_json::Value::Null, String::new())),
        Command::Reject { app, to, id, reason } => approve::reject(ctx, &app, to, id.as_deref(), &reason).await,
    }
}

/// An app name given on the command line.
pub fn app_name(text: &str) -> Result<AppName, CliError> {
    AppName::parse(text).map_err(|e| CliError::invalid(e.to_string()))
}

/// Every app config in SSM, read as the functions read it.
pub async fn configs(ctx: &Context) -> Result<Arc<ConfigSet>, CliError> {
    Ok(ctx.configs().await?.get().await?)
}

/// A configured app: unknown is a refusal (`1`), an invalid config a configuration error (`4`).
pub fn find_app<'a>(set: &'a ConfigSet, name: &str, prefix: &str) -> Result<&'a AppConfig, CliError> {
    let app = app_name(name)?;
    if let Some(config) = set.app(&app) {
        return Ok(config);
    }
    let parameter = format!("{prefix}/apps/{app}");
    if let Some(invalid) = set.invalid_app(&parameter) {
        return Err(CliError::config(invalid.error.to_string()));
    }
    let known: Vec<&str> = set.apps.iter().map(|a| a.name.as_str()).collect();
    Err(CliError::new(
        crate::error::REFUSED,
        "UnknownApp",
        format!(
            "no app {app} (no parameter {parameter}); configured apps: {}",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        ),
    ))
}
