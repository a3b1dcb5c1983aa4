//! Pausing an app in an environment (contract v2, *Pausing an app*): while stage is paused,
//! pushes are recorded but nothing is rolled out; while prod is paused, promote refuses. The
//! monitor keeps verifying and rolling back either way. Pausing and resuming each announce once.

use chrono::Utc;
use serde::Serialize;

use crate::config::AppConfig;
use crate::error::Error;
use crate::fleet::Fleet;
use crate::leased::{Leased, Leases};
use crate::ledger::{Change, HistoryEntry, ItemKey, Lease};
use crate::notify::{Announcement, Notification};
use crate::record::{EnvState, Pause, RecordedPush};
use crate::start;
use crate::types::Environment;
use crate::vocabulary::{Outcome, Severity};
use crate::Invocation;

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
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    env: Environment,
    reason: &str,
    by: &str,
    invocation: &Invocation,
) -> Result<PauseReport, Error> {
    change_pause(
        fleet,
        leases,
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
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    env: Environment,
    by: &str,
    invocation: &Invocation,
) -> Result<PauseReport, Error> {
    change_pause(fleet, leases, app, env, None, by, invocation).await
}

async fn change_pause(
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    env: Environment,
    pause: Option<Pause>,
    by: &str,
    invocation: &Invocation,
) -> Result<PauseReport, Error> {
    let lease = Lease::new(ItemKey::env(&app.name, env), format!("conveyor {by}"), invocation).patient();
    let target = fleet.target(app, env).await;
    leases.with_env(lease, app, env, target, async |here| change_leased(here, pause, by).await).await
}

async fn change_leased(here: &mut Leased<'_>, pause: Option<Pause>, by: &str) -> Result<PauseReport, Error> {
    let (app, env) = (here.app, here.env);
    let failed = |e: crate::DeployError| Error::Deploy(vec![(app.name.clone(), e)]);
    if here.held.state.is_none() {
        // First contact: record what runs as the baseline before anything else.
        let observed = start::observe(&here.target, app, env).await.map_err(failed)?;
        let target = app.target(env);
        let first = EnvState::first(&app.name, env, &target.cluster, &target.service, observed.revision);
        here.commit(Change::new(first)).await?;
    }
    let state = here.state()?.clone();
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
    here.commit(change).await?;
    Ok(report(true, here.state()?))
}
