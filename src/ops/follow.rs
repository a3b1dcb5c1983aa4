//! Following a prod rollout until it settles (`conveyor promote --wait`): where the rollout a
//! promotion started stands, read from prod's state in the state table.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::record::EnvState;
use crate::rollout::RolloutState;
use crate::types::ImageDigest;

/// Where the rollout of `digest` onto revision `task_definition_arn` stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Progress {
    /// Prod's state says nothing about it (yet).
    Unknown,
    InProgress,
    Verified {
        at: DateTime<Utc>,
    },
    RolledBack {
        at: DateTime<Utc>,
        reason: String,
        to: String,
    },
    Failed {
        at: DateTime<Utc>,
        reason: String,
    },
    /// A newer rollout (or a change made outside Conveyor) replaced it before it settled.
    Superseded {
        reason: String,
    },
}

impl Progress {
    /// Settled: it will not change any more.
    pub fn settled(&self) -> bool {
        !matches!(self, Progress::Unknown | Progress::InProgress)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Progress::Unknown => "unknown",
            Progress::InProgress => "in_progress",
            Progress::Verified { .. } => "verified",
            Progress::RolledBack { .. } => "rolled_back",
            Progress::Failed { .. } => "failed",
            Progress::Superseded { .. } => "superseded",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Progress::RolledBack { reason, .. } | Progress::Failed { reason, .. } | Progress::Superseded { reason } => {
                Some(reason)
            }
            Progress::Unknown | Progress::InProgress | Progress::Verified { .. } => None,
        }
    }
}

/// Where the rollout onto `task_definition_arn` (running `digest`) stands in prod's `state`.
pub fn progress(state: Option<&EnvState>, task_definition_arn: &str, digest: &ImageDigest) -> Progress {
    let Some(state) = state else { return Progress::Unknown };
    let ours = state.rollout.as_ref().filter(|r| r.task_definition_arn == task_definition_arn && &r.digest == digest);
    if let Some(rollout) = ours {
        return match &rollout.state {
            RolloutState::InProgress => Progress::InProgress,
            RolloutState::Verified { at } => Progress::Verified { at: *at },
            RolloutState::RolledBack { at, reason, to, .. } => {
                Progress::RolledBack { at: *at, reason: reason.clone(), to: to.clone() }
            }
            RolloutState::Failed { at, reason } => Progress::Failed { at: *at, reason: reason.clone() },
            RolloutState::Superseded { reason, .. } => Progress::Superseded { reason: reason.clone() },
        };
    }
    if let Some(verified) = state.last_verified.as_ref().filter(|v| v.task_definition_arn == task_definition_arn) {
        return Progress::Verified { at: verified.at };
    }
    match &state.rollout {
        Some(newer) => Progress::Superseded {
            reason: format!("replaced by the rollout of {} ({})", newer.tag, newer.digest.short()),
        },
        None => Progress::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Verified;
    use crate::rollout::{Origin, Revision, RolledBackBy, Rollout};
    use crate::types::{AppName, Environment, ImageTag};

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
            origin: Origin::Promotion { requested_by: None, reason: None, forced: false },
            state,
        }
    }

    fn state(rollout: Option<Rollout>) -> EnvState {
        let mut state = EnvState::first(
            &AppName::parse("shop").unwrap(),
            Environment::Prod,
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
        assert_eq!(progress(None, "td:2", &digest(2)), Progress::Unknown);
        let s = state(Some(rollout("td:2", 2, RolloutState::InProgress)));
        assert_eq!(progress(Some(&s), "td:2", &digest(2)), Progress::InProgress);
        assert!(!Progress::InProgress.settled());
        let s = state(Some(rollout("td:2", 2, RolloutState::Verified { at })));
        assert_eq!(progress(Some(&s), "td:2", &digest(2)), Progress::Verified { at });
        let rolled_back = RolloutState::RolledBack {
            at,
            reason: "tasks failed".into(),
            to: "td:1".into(),
            by: RolledBackBy::Conveyor,
        };
        let s = state(Some(rollout("td:2", 2, rolled_back)));
        let got = progress(Some(&s), "td:2", &digest(2));
        assert_eq!((got.name(), got.reason(), got.settled()), ("rolled_back", Some("tasks failed"), true));
    }

    #[test]
    fn a_rollout_replaced_by_a_newer_one_is_superseded_unless_it_was_verified() {
        let at = DateTime::UNIX_EPOCH;
        let mut s = state(Some(rollout("td:3", 3, RolloutState::InProgress)));
        let got = progress(Some(&s), "td:2", &digest(2));
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
        assert_eq!(progress(Some(&s), "td:2", &digest(2)), Progress::Verified { at });
    }
}
