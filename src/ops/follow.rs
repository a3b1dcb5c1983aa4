//! Following a prod rollout until it settles (`conveyor promote --wait`): where the rollout a
//! promotion started stands, read from prod's state in the state table; and where one image
//! stands in an environment (`conveyor wait`).

use chrono::{DateTime, Utc};

use crate::ledger::ImageFacts;
use crate::record::{ApprovalState, EnvState};
use crate::rollout::{Rollout, RolloutState};
use crate::types::{Environment, ImageDigest};
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

/// Where one image (by digest) stands in an environment (`conveyor wait`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageProgress {
    /// Nothing here mentions it yet: its push (or promotion) has not been handled.
    Unseen,
    /// A rollout of it is in progress.
    InProgress,
    /// Verified at `at`; `soaking_until` while the environment's soak still keeps it from
    /// counting as vetted.
    Verified { at: DateTime<Utc>, soaking_until: Option<DateTime<Utc>> },
    /// It ended without being verified: rolled back, failed, or replaced by a newer rollout
    /// before it settled.
    Ended(RolloutState),
}

/// Where `digest` stands in `env` at `now`, from the environment's `state` and the image's
/// `facts` (its verdict per environment). `followed`: a rollout of it was seen in progress earlier, so that its disappearance
/// means a newer rollout replaced it (superseded) rather than "not yet".
pub fn image_progress(
    env: Environment,
    state: Option<&EnvState>,
    facts: Option<&ImageFacts>,
    digest: &ImageDigest,
    followed: bool,
    now: DateTime<Utc>,
) -> ImageProgress {
    if let Some(state) = state {
        if let Some(rollout) = state.rollout.as_ref().filter(|r| &r.digest == digest) {
            return match &rollout.state {
                RolloutState::InProgress => ImageProgress::InProgress,
                RolloutState::Verified { at } => {
                    let soak = state.soak.as_ref().filter(|s| s.rollout_id == rollout.id && s.until > now);
                    ImageProgress::Verified { at: *at, soaking_until: soak.map(|s| s.until) }
                }
                ended => ImageProgress::Ended(ended.clone()),
            };
        }
        if let Some(verified) = state.last_verified.as_ref().filter(|v| &v.digest == digest) {
            return ImageProgress::Verified { at: verified.at, soaking_until: None };
        }
    }
    if let Some(facts) = facts {
        if let Some(at) = facts.vetted(env) {
            return ImageProgress::Verified { at, soaking_until: None };
        }
        if let Some(failure) = facts.failed(env) {
            return ImageProgress::Ended(RolloutState::Failed { at: failure.at, reason: failure.reason });
        }
    }
    match state.and_then(|s| s.rollout.as_ref()) {
        Some(newer) if followed => ImageProgress::Ended(RolloutState::Superseded {
            at: newer.started_at,
            reason: format!("replaced by the rollout of {} ({})", newer.tag, newer.digest.short()),
        }),
        _ => ImageProgress::Unseen,
    }
}

/// The digest `tag` names in `env`'s `state`: the rollout's or the last verified release's.
pub fn digest_of_tag(state: Option<&EnvState>, tag: &str) -> Option<ImageDigest> {
    let state = state?;
    let rollout = state.rollout.as_ref().filter(|r| r.tag.as_str() == tag || r.tags.iter().any(|t| t.as_str() == tag));
    rollout
        .map(|r| r.digest.clone())
        .or_else(|| state.last_verified.as_ref().filter(|v| v.tag.as_str() == tag).map(|v| v.digest.clone()))
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

    fn facts(n: u8, verdicts: serde_json::Value) -> ImageFacts {
        let mut item = serde_json::json!({ "digest": digest(n).to_string() });
        item.as_object_mut().unwrap().extend(verdicts.as_object().unwrap().clone());
        serde_json::from_value(item).unwrap()
    }

    #[test]
    fn an_image_is_followed_from_unseen_through_its_rollout_to_its_verdict() {
        let (env, at) = (Environment::PROD, DateTime::UNIX_EPOCH + chrono::Duration::seconds(60));
        let now = at + chrono::Duration::seconds(1);
        let progress =
            |s: &EnvState, f: Option<&ImageFacts>, followed| image_progress(env, Some(s), f, &digest(2), followed, now);
        assert_eq!(image_progress(env, None, None, &digest(2), false, now), ImageProgress::Unseen);
        assert_eq!(progress(&state(None), None, false), ImageProgress::Unseen);

        let mut s = state(Some(rollout("td:2", 2, RolloutState::InProgress)));
        assert_eq!(progress(&s, None, false), ImageProgress::InProgress);
        s.rollout = Some(rollout("td:2", 2, RolloutState::Verified { at }));
        s.soak = Some(crate::record::Soak { rollout_id: "r2".into(), until: at + chrono::Duration::hours(1) });
        let soaking = Some(at + chrono::Duration::hours(1));
        assert_eq!(progress(&s, None, false), ImageProgress::Verified { at, soaking_until: soaking });
        s.soak = Some(crate::record::Soak { rollout_id: "r2".into(), until: at });
        assert_eq!(progress(&s, None, false), ImageProgress::Verified { at, soaking_until: None });

        // Replaced before it settled: superseded only if it was seen rolling out.
        let s = state(Some(rollout("td:3", 3, RolloutState::InProgress)));
        assert_eq!(progress(&s, None, false), ImageProgress::Unseen);
        assert!(matches!(progress(&s, None, true), ImageProgress::Ended(RolloutState::Superseded { .. })));
        // The image's verdict outlives the environment's record of its rollout.
        let failed = facts(2, serde_json::json!({ "failed_prod": { "at": at, "reason": "tasks failed" } }));
        let got = progress(&s, Some(&failed), true);
        assert!(
            matches!(&got, ImageProgress::Ended(RolloutState::Failed { reason, .. }) if reason == "tasks failed"),
            "{got:?}"
        );
        let vetted = facts(2, serde_json::json!({ "vetted_prod": at, "failed_stage": { "at": at, "reason": "x" } }));
        assert_eq!(progress(&s, Some(&vetted), true), ImageProgress::Verified { at, soaking_until: None });
    }

    #[test]
    fn a_tag_names_the_digest_of_the_rollout_or_release_under_it() {
        let mut s = state(Some(rollout("td:3", 3, RolloutState::InProgress)));
        assert_eq!(digest_of_tag(Some(&s), "v3"), Some(digest(3)));
        assert_eq!(digest_of_tag(Some(&s), "v2"), None);
        s.last_verified = Some(Verified {
            rollout_id: "r2".into(),
            tag: ImageTag::parse("v2").unwrap(),
            digest: digest(2),
            image: "i".into(),
            task_definition_arn: "td:2".into(),
            at: DateTime::UNIX_EPOCH,
        });
        assert_eq!(digest_of_tag(Some(&s), "v2"), Some(digest(2)));
        assert_eq!(digest_of_tag(None, "v2"), None);
    }
}
