//! Pausing an app in an environment (contract v2, *Pausing an app*): while stage is paused,
//! pushes are recorded but nothing is rolled out; while prod is paused, promote refuses. The
//! monitor keeps verifying and rolling back either way. Pausing and resuming each announce once.

use chrono::Utc;
use serde::Serialize;

use crate::config::AppConfig;
use crate::error::Error;
use crate::ledger::{Change, Held, HistoryEntry, ItemKey, Lease};
use crate::notify::{Announcement, Notification};
use crate::record::{EnvState, Pause, RecordedPush};
use crate::start;
use crate::types::Environment;
use crate::vocabulary::{Outcome, Severity};
use crate::{Conveyor, Invocation};

/// What a pause or resume did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseReport {
    pub app: String,
    pub environment: Environment,
    /// `false`: it was already so (nothing announced).
    pub changed: bool,
    pub paused: bool,
    /// On resume: the newest push held while paused and not rolled out since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_push: Option<RecordedPush>,
}

/// Pauses `app` in `env` (idempotent).
pub async fn pause(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    reason: &str,
    by: &str,
    invocation: &Invocation,
) -> Result<PauseReport, Error> {
    change_pause(
        conveyor,
        app,
        env,
        Some(Pause { reason: reason.to_owned(), by: by.to_owned(), at: Utc::now() }),
        by,
        invocation,
    )
    .await
}

/// Resumes `app` in `env` (idempotent); says which held push a resume can roll out.
pub async fn resume(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    by: &str,
    invocation: &Invocation,
) -> Result<PauseReport, Error> {
    change_pause(conveyor, app, env, None, by, invocation).await
}

async fn change_pause(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    pause: Option<Pause>,
    by: &str,
    invocation: &Invocation,
) -> Result<PauseReport, Error> {
    let lease = Lease::new(ItemKey::env(&app.name, env), format!("conveyor {by}"), invocation).patient();
    conveyor.with_lease(lease, async |held| change_leased(conveyor, app, env, held, pause, by).await).await
}

async fn change_leased(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    held: &mut Held<EnvState>,
    pause: Option<Pause>,
    by: &str,
) -> Result<PauseReport, Error> {
    let failed = |e: crate::DeployError| Error::Deploy(vec![(app.name.clone(), e)]);
    if held.state.is_none() {
        // First contact: record what runs as the baseline before anything else.
        let observed = start::observe(conveyor, app, env).await.map_err(failed)?;
        let target = app.target(env);
        let first = EnvState::first(&app.name, env, &target.cluster, &target.service, observed.revision);
        held.commit(&conveyor.ledger, Change::new(first)).await?;
    }
    let state = held.require_state()?.clone();
    let pausing = pause.is_some();
    let report = |changed: bool, state: &EnvState| PauseReport {
        app: app.name.to_string(),
        environment: env,
        changed,
        paused: state.paused.is_some(),
        held_push: state
            .held_push
            .clone()
            .filter(|push| state.rollout.as_ref().is_none_or(|r| r.event_time < push.time)),
    };
    if state.paused.is_some() == pausing {
        return Ok(report(false, &state));
    }
    let now = Utc::now();
    let (event, outcome, severity) = if pausing {
        (Outcome::Paused, Outcome::Paused, Severity::Warning)
    } else {
        (Outcome::Resumed, Outcome::Resumed, Severity::Info)
    };
    let reason = pause.as_ref().map(|p| p.reason.clone());
    let mut change = Change::new(state);
    change.state.paused = pause;
    let mut entry = HistoryEntry::new(&app.name, env, event, now);
    entry.reason = reason.clone();
    entry.requested_by = Some(by.to_owned());
    change.history.push(entry);
    let mut notification = Notification::of_service(app, env, outcome, severity);
    notification.reason = reason.or_else(|| Some(format!("{env} deploys again")));
    notification.requested_by = Some(by.to_owned());
    change.announcements.push(Announcement::new(notification, app));
    held.commit(&conveyor.ledger, change).await?;
    Ok(report(true, held.require_state()?))
}
