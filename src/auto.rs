//! Auto promotion (contract, *Pipelines*: `promotion: "auto"`): an image vetted in an environment
//! moves at once into every environment that takes its images from it automatically — through
//! promote's own flow and checks (vetted in `from`, failed nowhere, the target not paused),
//! requested by `conveyor`.
//!
//! deploy-monitor does it right after a verification commits; the sweep does it again for every
//! such environment whose newest promotable image has not reached it (a monitor that stopped
//! between the two, a pause since lifted). Promotion being idempotent, it happens at least once
//! and takes effect once.

use tracing::{info, warn};

use crate::config::{AppConfig, Configs, EnvironmentConfig, Promotion, Source};
use crate::error::Error;
use crate::fleet::Fleet;
use crate::leased::Leases;
use crate::promote::{self, ImageRef, Request};
use crate::record::{ApprovalState, EnvState};
use crate::types::{AppName, Environment, Requester};
use crate::vocabulary::{Action, PromoteStatus};
use crate::Invocation;

/// What one auto promotion did (a line of deploy-monitor's report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub app: AppName,
    pub environment: Environment,
    /// [`Action::Deploying`] (or already deployed), [`Action::Paused`] (held), [`Action::Skipped`],
    /// [`Action::Error`] (the sweep tries again).
    pub action: Action,
    pub detail: String,
}

impl Outcome {
    fn of(app: &AppName, environment: Environment, action: Action, detail: String) -> Self {
        Outcome { app: app.clone(), environment, action, detail }
    }
}

/// Who an auto promotion is recorded as requested by.
pub const CONVEYOR: &str = "conveyor";

/// The environments that take images vetted in `from` automatically.
fn automatic(app: &AppConfig, from: Environment) -> impl Iterator<Item = &EnvironmentConfig> {
    app.pipeline.fed_from(from).filter(|env| matches!(env.source, Source::From { promotion: Promotion::Auto, .. }))
}

/// After `vetted_in` vetted an image: promotes the newest promotable image into each environment
/// that takes from it automatically.
pub async fn after_vetting(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    vetted_in: Environment,
    invocation: &Invocation,
) -> Vec<Outcome> {
    let mut handled = Vec::new();
    for into in automatic(app, vetted_in) {
        handled.extend(Box::pin(promote_newest(configs, fleet, leases, app, into.name, vetted_in, invocation)).await);
    }
    handled
}

/// The sweep's pass: every environment of every app that takes images automatically.
pub async fn reconcile(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    apps: &[AppConfig],
    invocation: &Invocation,
) -> Vec<Outcome> {
    let mut handled = Vec::new();
    for app in apps {
        for env in &app.pipeline.environments {
            if let Source::From { environment: from, promotion: Promotion::Auto, .. } = env.source {
                handled.extend(Box::pin(promote_newest(configs, fleet, leases, app, env.name, from, invocation)).await);
            }
        }
    }
    handled
}

/// Promotes into `into` the newest image `from` vetted that never failed, unless `into` already
/// had it, or a rollout started there since it was vetted (a person promoted something else).
async fn promote_newest(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    into: Environment,
    from: Environment,
    invocation: &Invocation,
) -> Option<Outcome> {
    let read = async {
        let newest = promote::promotable_tags(leases.ledger, &app.name, from, 1).await?.into_iter().next();
        let state = leases.ledger.env::<EnvState>(&app.name, into).await?.map(|(state, _)| state);
        Ok::<_, crate::ledger::LedgerError>((newest, state))
    };
    let (newest, state) = match read.await {
        Ok(read) => read,
        Err(error) => return Some(Outcome::of(&app.name, into, Action::Error, error.to_string())),
    };
    let candidate = newest?;
    let state = state.as_ref();
    let rollout = state.and_then(|s| s.rollout.as_ref());
    let known_good = state.and_then(|s| s.last_verified.as_ref()).map(|v| &v.digest);
    // An approval asked for (still pending, or declined): asking again would notify again.
    let asked = match state.and_then(|s| s.approval.as_ref()) {
        Some(ApprovalState::Pending(request)) => request.digest == candidate.digest,
        Some(ApprovalState::Declined { digest, .. }) => *digest == candidate.digest,
        None => false,
    };
    if rollout.is_some_and(|r| r.digest == candidate.digest || r.started_at >= candidate.vetted_at)
        || known_good == Some(&candidate.digest)
        || asked
    {
        return None;
    }
    let request = Request {
        app: app.name.clone(),
        image: ImageRef::Tag(candidate.tag.clone()),
        dry_run: false,
        force: false,
        reason: Some(format!("vetted in {from}")),
        on_behalf_of: None,
        to: Some(into),
        unless_moved_since: Some(candidate.vetted_at),
        approved: None,
        rollback: false,
    };
    let requester = Requester { verified: Some(CONVEYOR.to_owned()), on_behalf_of: None };
    let detail = |what: &str| format!("auto promotion of {} from {from}: {what}", candidate.tag);
    match promote::run_as(configs, fleet, leases, &request, requester, invocation).await {
        Ok(response) => {
            info!(app = %app.name, environment = %into, tag = %candidate.tag, digest = %candidate.digest,
                status = %response.status, "auto promotion");
            let action = match response.status {
                PromoteStatus::Deploying | PromoteStatus::RollingBack => Action::Deploying,
                PromoteStatus::AwaitingApproval => Action::Waiting,
                PromoteStatus::AlreadyDeployed | PromoteStatus::DryRun => Action::Skipped,
            };
            Some(Outcome::of(&app.name, into, action, detail(response.status.as_str())))
        }
        Err(Error::Moved { .. }) => None,
        Err(Error::Paused { .. }) => {
            info!(app = %app.name, environment = %into, tag = %candidate.tag, digest = %candidate.digest,
                "auto promotion held: the environment is paused");
            Some(Outcome::of(&app.name, into, Action::Paused, detail(&format!("held, {into} is paused"))))
        }
        Err(Error::NotVetted(refusal)) => {
            Some(Outcome::of(&app.name, into, Action::Skipped, detail(&refusal.to_string())))
        }
        Err(error) => {
            warn!(app = %app.name, environment = %into, tag = %candidate.tag, error = %error,
                "auto promotion failed: the sweep tries again");
            Some(Outcome::of(&app.name, into, Action::Error, detail(&error.to_string())))
        }
    }
}
