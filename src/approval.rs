//! Approvals (contract, *Pipelines*, Approvals): a promotion into an environment with
//! `approval: true` changes nothing until a second person approves it.
//!
//! ```text
//!   promote ──► Pending ──approve (another verified identity)──► the promotion runs (promoted)
//!                  │ ├────reject─────────────────────────────────► Declined (rejected)
//!                  │ └────approval_timeout passed (sweep)────────► Declined (approval_expired)
//!                  └──a promotion of another image───────────────► Pending (the newer request)
//! ```
//!
//! The request is kept in the environment's state ([`EnvState::approval`]), so it is written
//! under the environment's lease, in one transaction with its history entry and notification,
//! like every other transition. Who requested, approved and rejected are identities AWS verified
//! ([`crate::identity`]); the approver must differ from the requester and match the
//! environment's `approvers`, if any. Approving runs the promotion the request pinned (the digest,
//! not the tag, which may have been pushed again since) through promote's own flow and checks: an
//! image that failed meanwhile is still refused.

use chrono::{DateTime, Utc};

use crate::config::{AppConfig, Approval};
use crate::error::{Error, InvalidRequest};
use crate::ledger::{Change, HistoryEntry};
use crate::notify::{Announcement, Notification};
use crate::record::{ApprovalRequest, ApprovalState, EnvState};
use crate::types::{AppName, Environment, ImageDigest, ImageTag, Requester};
use crate::vocabulary::{Outcome, Severity};

/// A decision on a pending approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject { reason: String },
}

/// A pending approval, approved: the promotion runs as it was requested (the request's digest,
/// under the tag it named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub id: String,
    /// The approver, as AWS verified them.
    pub by: String,
    pub tag: ImageTag,
}

/// The command that approves `request` (shown in the `approval_requested` notification).
pub fn approve_command(app: &AppName, env: Environment, request: &ApprovalRequest) -> String {
    format!("conveyor approve {app} --to {env} --id {}", request.id)
}

/// Records `request` as the promotion `env` waits on (replacing one pending for another image):
/// state, history entry and the `approval_requested` notification.
pub fn requested(
    app: &AppConfig,
    env: Environment,
    state: &EnvState,
    request: ApprovalRequest,
    replaces: Option<String>,
) -> Change<EnvState> {
    let mut change = Change::new(state.clone());
    let superseded = state.pending_approval().map(|old| format!("supersedes approval {} of {}", old.id, old.tag));
    let mut entry = HistoryEntry::new(&app.name, env, Outcome::ApprovalRequested, request.requested_at);
    entry.tag = Some(request.tag.clone());
    entry.digest = Some(request.digest.clone());
    entry.requested_by = Some(request.requested_by.clone());
    entry.on_behalf_of = request.on_behalf_of.clone();
    entry.approval_id = Some(request.id.clone());
    entry.reason =
        [request.reason.clone(), superseded.clone()].into_iter().flatten().reduce(|a, b| format!("{a}; {b}"));
    entry.forced = request.forced;
    change.history.push(entry.clone());
    let mut notification = Notification::of_service(app, env, Outcome::ApprovalRequested, Severity::Warning);
    notification.tag = Some(request.tag.clone());
    notification.digest = Some(request.digest.clone());
    notification.requested_by = Some(request.requested_by.clone());
    notification.on_behalf_of = request.on_behalf_of.clone();
    notification.reason = entry.reason;
    notification.forced = request.forced;
    notification.approval_id = Some(request.id.clone());
    notification.replaces = replaces;
    notification.command = Some(approve_command(&app.name, env, &request));
    change.announcements.push(Announcement::new(notification, app));
    change.state.approval = Some(ApprovalState::Pending(request));
    change
}

/// The approval `approved` carried out by `change`, which starts its rollout: the request ends
/// (`approved`, announced before the rollout's `promoted`).
pub fn carried_out(
    app: &AppConfig,
    env: Environment,
    change: &mut Change<EnvState>,
    approved: &Approved,
    digest: &ImageDigest,
    requester: &Requester,
) {
    change.state.approval = None;
    let mut notification = Notification::of_service(app, env, Outcome::Approved, Severity::Info);
    notification.tag = Some(approved.tag.clone());
    notification.digest = Some(digest.clone());
    notification.requested_by = requester.verified.clone();
    notification.approved_by = Some(approved.by.clone());
    notification.approval_id = Some(approved.id.clone());
    change.announcements.insert(0, Announcement::new(notification, app));
}

/// Ends the pending `request` without a rollout: rejected (`by` whom, why) or expired.
pub fn declined(
    app: &AppConfig,
    env: Environment,
    state: &EnvState,
    request: &ApprovalRequest,
    rejected: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> Change<EnvState> {
    match rejected {
        Some((by, reason)) => ended(app, env, state, request, Outcome::Rejected, Some(by), reason.to_owned(), now),
        None => {
            let reason = format!("nobody approved it by {}", request.expires_at.format("%Y-%m-%d %H:%M UTC"));
            ended(app, env, state, request, Outcome::ApprovalExpired, None, reason, now)
        }
    }
}

/// Ends the pending request of an ECS pause hook that no longer awaits action (the deployment
/// went on, was rolled back or timed out): nothing is decided, `approval_expired` with why.
pub fn lapsed(
    app: &AppConfig,
    env: Environment,
    state: &EnvState,
    request: &ApprovalRequest,
    why: String,
    now: DateTime<Utc>,
) -> Change<EnvState> {
    ended(app, env, state, request, Outcome::ApprovalExpired, None, why, now)
}

/// The pending request of an ECS pause hook, approved: ECS was told to go on (`approved`).
pub fn continued(
    app: &AppConfig,
    env: Environment,
    state: &EnvState,
    request: &ApprovalRequest,
    by: &str,
    now: DateTime<Utc>,
) -> Change<EnvState> {
    let mut change = Change::new(state.clone());
    let hook = request.pause.as_ref().map(|p| p.hook_id.as_str()).unwrap_or("-");
    let reason = format!("ECS's pause hook {hook} continues the deployment");
    let mut entry = HistoryEntry::new(&app.name, env, Outcome::Approved, now);
    entry.tag = Some(request.tag.clone());
    entry.digest = Some(request.digest.clone());
    entry.requested_by = Some(request.requested_by.clone());
    entry.approved_by = Some(by.to_owned());
    entry.approval_id = Some(request.id.clone());
    entry.reason = Some(reason.clone());
    change.history.push(entry);
    let mut notification = Notification::of_service(app, env, Outcome::Approved, Severity::Info);
    notification.tag = Some(request.tag.clone());
    notification.digest = Some(request.digest.clone());
    notification.requested_by = Some(request.requested_by.clone());
    notification.approved_by = Some(by.to_owned());
    notification.approval_id = Some(request.id.clone());
    notification.reason = Some(reason);
    change.announcements.push(Announcement::new(notification, app));
    change.state.approval = None;
    change
}

/// Ends the pending `request` without a rollout, as `outcome`.
#[allow(clippy::too_many_arguments)]
fn ended(
    app: &AppConfig,
    env: Environment,
    state: &EnvState,
    request: &ApprovalRequest,
    outcome: Outcome,
    by: Option<&str>,
    reason: String,
    now: DateTime<Utc>,
) -> Change<EnvState> {
    let by = by.map(str::to_owned);
    let mut change = Change::new(state.clone());
    let mut entry = HistoryEntry::new(&app.name, env, outcome, now);
    entry.tag = Some(request.tag.clone());
    entry.digest = Some(request.digest.clone());
    entry.requested_by = Some(request.requested_by.clone());
    entry.approved_by = by.clone();
    entry.approval_id = Some(request.id.clone());
    entry.reason = Some(reason.clone());
    change.history.push(entry);
    let mut notification = Notification::of_service(app, env, outcome, Severity::Warning);
    notification.tag = Some(request.tag.clone());
    notification.digest = Some(request.digest.clone());
    notification.requested_by = Some(request.requested_by.clone());
    notification.approved_by = by;
    notification.approval_id = Some(request.id.clone());
    notification.reason = Some(reason.clone());
    change.announcements.push(Announcement::new(notification, app));
    change.state.approval = Some(ApprovalState::Declined {
        id: request.id.clone(),
        digest: request.digest.clone(),
        outcome,
        reason: reason.clone(),
        at: now,
    });
    change
}

/// Whether `approver` may decide `request` under `approval`: an identity AWS verified, not the
/// requester's, and one of `approvers` when the config names them. A requester may reject (withdraw)
/// their own request.
pub fn may_decide(
    approval: &Approval,
    request: &ApprovalRequest,
    approver: Option<&str>,
    verdict: &Verdict,
) -> Result<String, Error> {
    let Some(approver) = approver else {
        return Err(Error::NotAllowed(
            "deciding an approval needs an identity AWS verified: send the request with an identity proof (`conveyor approve` and `reject` do)".into(),
        ));
    };
    let own = approver == request.requested_by;
    if own && matches!(verdict, Verdict::Reject { .. }) {
        return Ok(approver.to_owned());
    }
    if own {
        return Err(Error::NotAllowed(format!(
            "{approver} requested this promotion and cannot approve it: another person must (`{}`)",
            "conveyor approve"
        )));
    }
    if !approval.approvers.is_empty() && !approval.approvers.iter().any(|pattern| pattern.admits(approver)) {
        let allowed = approval.approvers.iter().map(|p| p.pattern.as_str()).collect::<Vec<_>>().join(", ");
        return Err(Error::NotAllowed(format!("{approver} is not among this environment's approvers ({allowed})")));
    }
    Ok(approver.to_owned())
}

/// The pending request `id` names (or the pending one), else why there is none.
pub fn pending<'s>(
    app: &AppConfig,
    env: Environment,
    state: Option<&'s EnvState>,
    id: Option<&str>,
) -> Result<&'s ApprovalRequest, Error> {
    let request = state.and_then(EnvState::pending_approval);
    match (request, id) {
        (Some(request), None) => Ok(request),
        (Some(request), Some(id)) if request.id == id => Ok(request),
        _ => Err(gone(app, env, state, id)),
    }
}

/// Why approval `id` (or any) cannot be decided: another one is pending, or none is.
pub fn gone(app: &AppConfig, env: Environment, state: Option<&EnvState>, id: Option<&str>) -> Error {
    if let (Some(other), Some(asked)) = (state.and_then(EnvState::pending_approval), id) {
        let (app, asked, pending) = (app.name.clone(), asked.to_owned(), other.id.clone());
        return InvalidRequest::OtherApproval { app, environment: env, asked, pending }.into();
    }
    let last = state.and_then(|state| match &state.approval {
        Some(ApprovalState::Declined { id, outcome, reason, at, .. }) => {
            Some(format!("{id}, ended {outcome} at {}: {reason}", at.format("%Y-%m-%d %H:%M UTC")))
        }
        _ => state
            .rollout
            .as_ref()
            .and_then(|r| r.approved_by().map(|by| format!("for {}, was approved by {by}", r.tag))),
    });
    InvalidRequest::NothingToApprove { app: app.name.clone(), environment: env, last }.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ArnPattern;
    use crate::fixtures::{app, digest};

    fn request(by: &str) -> ApprovalRequest {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        ApprovalRequest {
            id: "a1".into(),
            tag: ImageTag::parse("v2").unwrap(),
            digest: digest('2'),
            requested_by: by.into(),
            on_behalf_of: None,
            reason: Some("release 2".into()),
            forced: false,
            requested_at: at,
            expires_at: at + chrono::Duration::hours(24),
            pause: None,
        }
    }

    fn approval(patterns: &[&str]) -> Approval {
        Approval {
            approvers: patterns.iter().map(|p| ArnPattern::parse(p).unwrap()).collect(),
            timeout: std::time::Duration::from_secs(86_400),
        }
    }

    const ANA: &str = "arn:aws:sts::111111111111:assumed-role/Developers/ana";
    const BOB: &str = "arn:aws:sts::111111111111:assumed-role/ReleaseManagers/bob";

    #[test]
    fn the_requester_cannot_approve_but_may_withdraw() {
        let refused = may_decide(&approval(&[]), &request(ANA), Some(ANA), &Verdict::Approve).unwrap_err();
        assert!(matches!(&refused, Error::NotAllowed(why) if why.contains("cannot approve")), "{refused}");
        let withdraw = Verdict::Reject { reason: "wrong tag".into() };
        assert_eq!(may_decide(&approval(&[]), &request(ANA), Some(ANA), &withdraw).unwrap(), ANA);
        assert_eq!(may_decide(&approval(&[]), &request(ANA), Some(BOB), &Verdict::Approve).unwrap(), BOB);
    }

    #[test]
    fn approvers_restrict_who_decides_and_an_unverified_caller_decides_nothing() {
        let managers = approval(&["arn:aws:sts::111111111111:assumed-role/ReleaseManagers/*"]);
        assert!(may_decide(&managers, &request(ANA), Some(BOB), &Verdict::Approve).is_ok());
        let dev = "arn:aws:sts::111111111111:assumed-role/Developers/carol";
        let refused = may_decide(&managers, &request(ANA), Some(dev), &Verdict::Approve).unwrap_err();
        assert!(refused.to_string().contains("not among this environment's approvers"), "{refused}");
        let refused = may_decide(&managers, &request(ANA), None, &Verdict::Approve).unwrap_err();
        assert_eq!(refused.error_type(), crate::error::ErrorType::NotAllowed);
        // Auto promotions are requested by Conveyor: any approver is another person.
        assert!(may_decide(&approval(&[]), &request(crate::auto::CONVEYOR), Some(ANA), &Verdict::Approve).is_ok());
    }

    #[test]
    fn a_request_is_one_transition_and_a_newer_one_supersedes_it() {
        let app = app();
        let state = crate::fixtures::stage_met("td:1", '1');
        let first = requested(&app, Environment::PROD, &state, request(ANA), Some("v1".into()));
        assert_eq!(first.history.len(), 1);
        assert_eq!(first.announcements.len(), 1);
        let note = &first.announcements[0].notification;
        assert_eq!((note.outcome, note.severity), (Outcome::ApprovalRequested, Severity::Warning));
        assert_eq!(note.command.as_deref(), Some("conveyor approve shop --to prod --id a1"));
        assert_eq!(first.state.pending_approval().map(|r| r.id.as_str()), Some("a1"));

        let newer = ApprovalRequest { id: "a2".into(), tag: ImageTag::parse("v3").unwrap(), ..request(ANA) };
        let second = requested(&app, Environment::PROD, &first.state, newer, None);
        assert_eq!(second.state.pending_approval().map(|r| r.id.as_str()), Some("a2"));
        assert!(second.history[0].reason.as_deref().unwrap().contains("supersedes approval a1 of v2"));
    }

    #[test]
    fn a_declined_request_is_remembered_by_digest() {
        let app = app();
        let state =
            requested(&app, Environment::PROD, &crate::fixtures::stage_met("td:1", '1'), request(ANA), None).state;
        let now = DateTime::from_timestamp(1_700_100_000, 0).unwrap();
        let rejected = declined(&app, Environment::PROD, &state, &request(ANA), Some((BOB, "not today")), now);
        assert_eq!(rejected.announcements[0].notification.outcome, Outcome::Rejected);
        assert_eq!(rejected.history[0].approved_by.as_deref(), Some(BOB));
        assert!(
            matches!(&rejected.state.approval, Some(ApprovalState::Declined { digest: d, .. }) if *d == digest('2'))
        );
        assert!(!rejected.state.in_flight());
        let expired = declined(&app, Environment::PROD, &state, &request(ANA), None, now);
        assert_eq!(expired.announcements[0].notification.outcome, Outcome::ApprovalExpired);
        assert!(expired.history[0].reason.as_deref().unwrap().starts_with("nobody approved it by"));
    }

    #[test]
    fn deciding_names_what_is_pending() {
        let app = app();
        let state =
            requested(&app, Environment::PROD, &crate::fixtures::stage_met("td:1", '1'), request(ANA), None).state;
        assert_eq!(pending(&app, Environment::PROD, Some(&state), None).unwrap().id, "a1");
        assert_eq!(pending(&app, Environment::PROD, Some(&state), Some("a1")).unwrap().id, "a1");
        let other = pending(&app, Environment::PROD, Some(&state), Some("a0")).unwrap_err();
        assert!(other.to_string().contains("approval a0 is no longer pending"), "{other}");
        let none = pending(&app, Environment::PROD, None, None).unwrap_err();
        assert!(none.to_string().contains("no promotion into shop prod awaits approval"), "{none}");
    }
}
