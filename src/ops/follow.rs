//! Following a prod rollout until it settles (`conveyor promote --wait`): where the rollout a
//! promotion started stands, read from prod's state in the state table.

use crate::record::{ApprovalState, EnvState};
use crate::rollout::{Rollout, RolloutState};
use crate::types::ImageDigest;
use crate::vocabulary::Outcome;

/// Where the approval `id` a promotion waits for stands (`conveyor promote --wait`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Still pending.
    Pending,
    /// Approved: the rollout it started.
    Approved(Box<Rollout>),
    /// Rejected or expired ([`Outcome::Rejected`], [`Outcome::ApprovalExpired`]), and why.
    Declined { outcome: Outcome, reason: String },
    /// A newer promotion replaced the request.
    Superseded { reason: String },
}

/// Where approval `id` (of `digest`) stands in the environment's `state`.
pub fn decision(state: Option<&EnvState>, id: &str, digest: &ImageDigest) -> Decision {
    let Some(state) = state else { return Decision::Pending };
    match &state.approval {
        Some(ApprovalState::Pending(request)) if request.id == id => return Decision::Pending,
        Some(ApprovalState::Pending(newer)) => {
            let reason = format!("approval {id} was superseded by approval {} of {}", newer.id, newer.tag);
            return Decision::Superseded { reason };
        }
        Some(ApprovalState::Declined { id: declined, outcome, reason, .. }) if declined == id => {
            return Decision::Declined { outcome: *outcome, reason: reason.clone() };
        }
        _ => {}
    }
    match state.rollout.as_ref() {
        Some(rollout) if rollout.approved_by().is_some() && &rollout.digest == digest => {
            Decision::Approved(Box::new(rollout.clone()))
        }
        Some(newer) => Decision::Superseded {
            reason: format!("replaced by the rollout of {} ({})", newer.tag, newer.digest.short()),
        },
        None => Decision::Superseded { reason: format!("approval {id} is no longer pending") },
    }
}

/// Where the rollout onto `task_definition_arn` (running `digest`) stands in the environment's
/// `state`: `None` while the state says nothing about it (yet). A rollout a newer one replaced
/// before it settled is superseded; one verified earlier stays verified.
pub fn progress(state: Option<&EnvState>, task_definition_arn: &str, digest: &ImageDigest) -> Option<RolloutState> {
    let state = state?;
    let ours = state.rollout.as_ref().filter(|r| r.task_definition_arn == task_definition_arn && &r.digest == digest);
    if let Some(rollout) = ours {
        return Some(rollout.state.clone());
    }
    if let Some(verified) = state.last_verified.as_ref().filter(|v| v.task_definition_arn == task_definition_arn) {
        return Some(RolloutState::Verified { at: verified.at });
    }
    state.rollout.as_ref().map(|newer| RolloutState::Superseded {
        at: newer.started_at,
        reason: format!("replaced by the rollout of {} ({})", newer.tag, newer.digest.short()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Verified;
    use crate::rollout::{Origin, Revision, RolledBackBy, Rollout};
    use crate::types::{AppName, Environment, ImageTag};
    use chrono::DateTime;

    fn digest(n: u8) -> ImageDigest {
        ImageDigest::parse(format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    fn rollout(td: &str, n: u8, state: RolloutState) -> Rollout {
        Rollout {
            id: format!("r{n}"),
            tag: ImageTag::parse(format!("v{n}")).unwrap(),
            tags: vec![],
            digest: digest(n),
            image: "i".into(),
            task_definition_arn: td.into(),
            previous: Revision { arn: "td:1".into(), digest: None },
            deployment_id: None,
            event_time: DateTime::UNIX_EPOCH,
            started_at: DateTime::UNIX_EPOCH,
            origin: Origin::Promotion {
                requested_by: None,
                on_behalf_of: None,
                reason: None,
                forced: false,
                approved_by: None,
            },
            state,
        }
    }

    fn state(rollout: Option<Rollout>) -> EnvState {
        let mut state = EnvState::first(
            &AppName::parse("shop").unwrap(),
            Environment::PROD,
            "c",
            "s",
            Revision { arn: "td:1".into(), digest: None },
        );
        state.rollout = rollout;
        state
    }

    #[test]
    fn the_promotions_rollout_is_followed_until_it_settles() {
        let at = DateTime::UNIX_EPOCH + chrono::Duration::seconds(60);
        assert_eq!(progress(None, "td:2", &digest(2)), None);
        let s = state(Some(rollout("td:2", 2, RolloutState::InProgress)));
        assert_eq!(progress(Some(&s), "td:2", &digest(2)), Some(RolloutState::InProgress));
        let s = state(Some(rollout("td:2", 2, RolloutState::Verified { at })));
        assert_eq!(progress(Some(&s), "td:2", &digest(2)), Some(RolloutState::Verified { at }));
        let rolled_back = RolloutState::RolledBack {
            at,
            reason: "tasks failed".into(),
            to: "td:1".into(),
            by: RolledBackBy::Conveyor,
        };
        let s = state(Some(rollout("td:2", 2, rolled_back)));
        let got = progress(Some(&s), "td:2", &digest(2)).unwrap();
        assert_eq!((got.name(), got.reason(), got.settled_at()), ("rolled_back", Some("tasks failed"), Some(at)));
    }

    #[test]
    fn a_rollout_replaced_by_a_newer_one_is_superseded_unless_it_was_verified() {
        let at = DateTime::UNIX_EPOCH;
        let mut s = state(Some(rollout("td:3", 3, RolloutState::InProgress)));
        let got = progress(Some(&s), "td:2", &digest(2)).unwrap();
        assert_eq!(got.name(), "superseded");
        assert!(got.reason().unwrap().contains("v3"));
        s.last_verified = Some(Verified {
            rollout_id: "r2".into(),
            tag: ImageTag::parse("v2").unwrap(),
            digest: digest(2),
            image: "i".into(),
            task_definition_arn: "td:2".into(),
            at,
        });
        assert_eq!(progress(Some(&s), "td:2", &digest(2)), Some(RolloutState::Verified { at }));
    }
}
