//! Pausing an app in an environment (contract v2, *Pausing an app*): while stage is paused,
//! pushes are recorded but nothing is rolled out; while prod is paused, promote refuses. The
//! monitor keeps verifying and rolling back either way. Pausing and resuming each announce once.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::AppConfig;
use crate::error::{user_text, Error};
use crate::fleet::Fleet;
use crate::leased::{Leased, Leases};
use crate::ledger::{Change, HistoryEntry, ItemKey, Lease};
use crate::notify::{Announcement, Notification};
use crate::record::{EnvState, Pause, RecordedPush};
use crate::start;
use crate::types::{Environment, Requester};
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

/// Pauses `app` in `env` (idempotent). The reason is free text ([`user_text`]: at most
/// [`crate::error::TEXT_LIMIT`] characters, no control characters), else `InvalidRequest`.
pub async fn pause(
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    env: Environment,
    reason: &str,
    by: &Requester,
    invocation: &Invocation,
) -> Result<PauseReport, Error> {
    let reason = user_text("reason", Some(reason.to_owned()))?.unwrap_or_default();
    let pause = Pause { reason, by: by.verified.clone(), on_behalf_of: by.on_behalf_of.clone(), at: Utc::now() };
    change_pause(fleet, leases, app, env, Some(pause), by, invocation).await
}

/// Resumes `app` in `env` (idempotent); says which held push a resume can roll out.
pub async fn resume(
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    env: Environment,
    by: &Requester,
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
    by: &Requester,
    invocation: &Invocation,
) -> Result<PauseReport, Error> {
    let lease = Lease::new(ItemKey::env(&app.name, env), format!("conveyor {by}"), invocation).patient();
    leases.with_env(lease, fleet, app, env, async |here| change_leased(here, pause, by).await).await
}

async fn change_leased(here: &mut Leased<'_>, pause: Option<Pause>, by: &Requester) -> Result<PauseReport, Error> {
    let (app, env) = (here.app, here.env);
    let failed = |e: crate::DeployError| Error::Deploy(vec![(app.name.clone(), e)]);
    let state = start::ensure_state(here).await.map_err(failed)?;
    let Some(change) = transition(app, env, state, pause, by, Utc::now()) else {
        return Ok(report(app, env, false, here.state()?));
    };
    here.commit(change).await?;
    Ok(report(app, env, true, here.state()?))
}

/// What pausing (`Some`) or resuming (`None`) changes: nothing when it is already so; else the
/// state, its history entry and its notification (announced once).
fn transition(
    app: &AppConfig,
    env: Environment,
    state: &EnvState,
    pause: Option<Pause>,
    by: &Requester,
    now: DateTime<Utc>,
) -> Option<Change<EnvState>> {
    let pausing = pause.is_some();
    if state.paused.is_some() == pausing {
        return None;
    }
    let (event, outcome, severity) = if pausing {
        (Outcome::Paused, Outcome::Paused, Severity::Warning)
    } else {
        (Outcome::Resumed, Outcome::Resumed, Severity::Info)
    };
    let reason = pause.as_ref().map(|p| p.reason.clone());
    let mut change = Change::new(state.clone());
    change.state.paused = pause;
    let mut entry = HistoryEntry::new(&app.name, env, event, now);
    entry.reason = reason.clone();
    entry.requested_by = by.verified.clone();
    entry.on_behalf_of = by.on_behalf_of.clone();
    change.history.push(entry);
    let mut notification = Notification::of_service(app, env, outcome, severity);
    notification.reason = reason.or_else(|| Some(format!("{env} deploys again")));
    notification.requested_by = by.verified.clone();
    notification.on_behalf_of = by.on_behalf_of.clone();
    change.announcements.push(Announcement::new(notification, app));
    Some(change)
}

/// What a pause or resume reports: whether `env` is paused now, and the newest push held while
/// paused that no rollout has started from since (what a resume can roll out).
fn report(app: &AppConfig, env: Environment, changed: bool, state: &EnvState) -> PauseReport {
    PauseReport {
        app: app.name.to_string(),
        environment: env,
        changed,
        paused: state.paused.is_some(),
        held_push: state
            .held_push
            .clone()
            .filter(|push| state.rollout.as_ref().is_none_or(|r| r.event_time < push.time)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{app, digest};
    use crate::rollout::{Origin, Revision, Rollout, RolloutState};
    use crate::types::ImageTag;

    fn state() -> EnvState {
        crate::fixtures::stage_met("td:1", '1')
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).unwrap()
    }

    fn load_test() -> Pause {
        Pause { reason: "load test".into(), by: Some("alice".into()), on_behalf_of: None, at: at(0) }
    }

    fn verified(name: &str) -> Requester {
        Requester { verified: Some(name.into()), on_behalf_of: None }
    }

    fn paused() -> EnvState {
        EnvState { paused: Some(load_test()), ..state() }
    }

    /// A push of image `d` held while paused, `minutes` after the fixtures' epoch.
    fn held(minutes: i64, d: char) -> RecordedPush {
        RecordedPush {
            event_id: None,
            time: at(minutes),
            repository: "shop".into(),
            account: None,
            region: None,
            tag: ImageTag::parse(format!("v{d}")).unwrap(),
            digest: digest(d),
        }
    }

    /// A rollout started by a push `minutes` after the fixtures' epoch.
    fn rollout_of_push_at(minutes: i64) -> Rollout {
        Rollout {
            id: "r".into(),
            tag: ImageTag::parse("v2").unwrap(),
            tags: vec![ImageTag::parse("v2").unwrap()],
            digest: digest('2'),
            image: "shop@sha256:2".into(),
            task_definition_arn: "td:2".into(),
            previous: Revision { arn: "td:1".into(), digest: Some(digest('1')) },
            deployment_id: None,
            event_time: at(minutes),
            started_at: at(minutes),
            origin: Origin::Push,
            state: RolloutState::InProgress,
        }
    }

    #[test]
    fn pausing_records_who_and_why_and_announces_a_warning() {
        let change =
            transition(&app(), Environment::STAGE, &state(), Some(load_test()), &verified("alice"), at(5)).unwrap();
        assert_eq!(change.state.paused, Some(load_test()));
        let [entry] = &change.history[..] else { panic!("one history entry: {:?}", change.history) };
        assert_eq!((entry.event, entry.at), (Outcome::Paused, at(5)));
        assert_eq!((entry.reason.as_deref(), entry.requested_by.as_deref()), (Some("load test"), Some("alice")));
        let [announcement] = &change.announcements[..] else { panic!("one announcement") };
        let n = &announcement.notification;
        assert_eq!((n.outcome, n.severity), (Outcome::Paused, Severity::Warning));
        assert_eq!((n.reason.as_deref(), n.requested_by.as_deref()), (Some("load test"), Some("alice")));
    }

    #[test]
    fn resuming_records_who_and_announces_that_deploys_start_again() {
        let change = transition(&app(), Environment::PROD, &paused(), None, &verified("bob"), at(5)).unwrap();
        assert_eq!(change.state.paused, None);
        let [entry] = &change.history[..] else { panic!("one history entry: {:?}", change.history) };
        assert_eq!(
            (entry.event, entry.reason.as_deref(), entry.requested_by.as_deref()),
            (Outcome::Resumed, None, Some("bob"))
        );
        let [announcement] = &change.announcements[..] else { panic!("one announcement") };
        let n = &announcement.notification;
        assert_eq!((n.outcome, n.severity), (Outcome::Resumed, Severity::Info));
        assert_eq!(n.reason.as_deref(), Some("prod deploys again"));
    }

    #[test]
    fn a_name_the_request_gave_is_kept_on_behalf_of_never_as_who_paused() {
        let forged = Requester { verified: None, on_behalf_of: Some("arn:aws:iam::1:user/admin".into()) };
        let change = transition(&app(), Environment::STAGE, &state(), Some(load_test()), &forged, at(5)).unwrap();
        let [entry] = &change.history[..] else { panic!("one history entry") };
        assert_eq!(
            (entry.requested_by.as_deref(), entry.on_behalf_of.as_deref()),
            (None, Some("arn:aws:iam::1:user/admin"))
        );
        let n = &change.announcements[0].notification;
        assert_eq!((n.requested_by.as_deref(), n.on_behalf_of.as_deref()), (None, Some("arn:aws:iam::1:user/admin")));
    }

    #[test]
    fn pausing_what_is_paused_or_resuming_what_runs_changes_nothing() {
        let another = Pause { reason: "another reason".into(), by: Some("bob".into()), on_behalf_of: None, at: at(3) };
        assert!(transition(&app(), Environment::STAGE, &paused(), Some(another), &verified("bob"), at(5)).is_none());
        assert!(transition(&app(), Environment::STAGE, &state(), None, &verified("bob"), at(5)).is_none());
    }

    #[test]
    fn the_report_offers_the_held_push_only_when_no_rollout_started_from_it_or_later() {
        let mut state = state();
        state.held_push = Some(held(10, '3'));
        assert_eq!(report(&app(), Environment::STAGE, true, &state).held_push, Some(held(10, '3')));
        state.rollout = Some(rollout_of_push_at(5));
        assert_eq!(report(&app(), Environment::STAGE, true, &state).held_push, Some(held(10, '3')), "an older rollout");
        for since in [10, 20] {
            state.rollout = Some(rollout_of_push_at(since));
            assert_eq!(
                report(&app(), Environment::STAGE, true, &state).held_push,
                None,
                "a rollout of a push at {since}"
            );
        }
    }

    #[test]
    fn the_report_says_whether_it_changed_and_where_it_stands() {
        let report = report(&app(), Environment::STAGE, false, &paused());
        assert_eq!(
            report,
            PauseReport {
                app: "shop".into(),
                environment: Environment::STAGE,
                changed: false,
                paused: true,
                held_push: None
            }
        );
    }
}
