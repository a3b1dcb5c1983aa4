//! Everything Conveyor knows about one app in one environment, and the decisions that follow from
//! it alone (ordering of pushes, drift, what a failed rollout goes back to). Stored as the `state`
//! of that environment's item in the state table; kept by the state table (`ledger`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::AppConfig;
use crate::events::Push;
use crate::rollout::{Revision, RollbackWatch, Rollout, RolloutState, TargetStatus};
use crate::types::{AppName, Environment, ImageDigest, ImageTag, Requester};
use crate::vocabulary::Outcome;

/// The state of one app in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvState {
    pub app: AppName,
    pub environment: Environment,
    pub cluster: String,
    pub service: String,
    /// What the service ran before Conveyor's first rollout: the known-good revision until
    /// something is verified. Recorded on first contact, before anything is changed.
    pub baseline: Revision,
    /// The newest push seen here, by event time (applied, held by a pause, or superseded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_push: Option<PushMark>,
    /// The newest push recorded while paused and never rolled out (what a resume can deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_push: Option<RecordedPush>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified: Option<Verified>,
    /// The latest rollout Conveyor started here, with how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// A rollback deployment still being watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackWatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// The last revision seen that Conveyor did not put there (announced once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
    /// A revision registered by an attempt that failed before its rollout was recorded: the next
    /// attempt for the same image and base uses it instead of registering another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan: Option<Orphan>,
    /// The revision number of the newest rollout whose family the sweep last cleaned up
    /// (the sweep's revision cleanup): nothing is due again until a newer rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_through: Option<u32>,
    /// The verified rollout soaking here: its image counts as vetted once `until` has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
    /// Promotions into an environment with `approval`: the one waiting for a decision, or the
    /// image whose approval was last refused (the `approval` module decides them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalState>,
    /// An environment with several targets: the state of its second target onward, in config
    /// order, each on its own service (this state is the first target's). Only their per-service
    /// part is used (baseline, rollout, rollback, drift, orphan); pauses, soaks, approvals and
    /// pushes are the environment's and live here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<EnvState>,
    /// How far the release in progress (this state's rollout) has got across the targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<Wave>,
}

/// The targets (by index in the environment's config) the release `rollout_id` is verified on.
/// Every target's rollout stays in progress until the release settles as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    pub rollout_id: String,
    pub verified: Vec<usize>,
    /// The release failed on this target, for this reason: recorded before any target is put
    /// back, so that whoever comes next (a retry, the sweep) finishes putting them back and
    /// nothing verifies the release meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<(usize, String)>,
}

/// Where the approval of a promotion into this environment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for someone other than the requester to approve or reject it.
    Pending(ApprovalRequest),
    /// Rejected or expired ([`Outcome::Rejected`], [`Outcome::ApprovalExpired`]), and why: an auto
    /// promotion does not ask again for this image (a person may).
    Declined { id: String, digest: ImageDigest, outcome: Outcome, reason: String, at: DateTime<Utc> },
}

/// A promotion waiting for its approval: the image pinned by digest when it was requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub tag: ImageTag,
    pub digest: ImageDigest,
    /// The identity AWS verified for the requester (`conveyor` for an auto promotion).
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Requested with `force` (the image failed before).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Set when ECS asks, not a promotion: a pause hook of the native deployment of the rollout in
    /// flight awaits this decision (approve: `ContinueServiceDeployment(CONTINUE)`, reject:
    /// `ROLLBACK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseHook>,
}

/// A pause hook ECS holds a native deployment at (`AWAITING_ACTION`), as
/// `DescribeServiceDeployments` reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseHook {
    pub service_deployment_arn: String,
    pub hook_id: String,
    /// The rollout whose deployment it holds.
    pub rollout_id: String,
}

/// A verified rollout keeping its image running for the environment's `soak`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Soak {
    pub rollout_id: String,
    pub until: DateTime<Utc>,
}

/// The newest push time seen, and every push (image and tag) of that second (EventBridge times
/// have one-second resolution; ECR sends one push per tag of an image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushMark {
    pub time: DateTime<Utc>,
    pub pushes: Vec<SeenPush>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenPush {
    pub digest: ImageDigest,
    pub tag: ImageTag,
}

/// A push kept for later (paused stage): enough to deliver it again as the event it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPush {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub time: DateTime<Utc>,
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub tag: ImageTag,
    pub digest: ImageDigest,
}

/// A release that passed verification here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub rollout_id: String,
    pub tag: ImageTag,
    pub digest: ImageDigest,
    pub image: String,
    pub task_definition_arn: String,
    pub at: DateTime<Utc>,
}

/// An environment paused, why and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub reason: String,
    /// The identity AWS verified for whoever paused (none for an invocation Lambda names no
    /// caller of). Before v3, the name the CLI sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The name the request gave (unverified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    pub at: DateTime<Utc>,
}

impl Pause {
    pub fn requester(&self) -> Requester {
        Requester { verified: self.by.clone(), on_behalf_of: self.on_behalf_of.clone() }
    }
}

impl From<&RecordedPush> for Push {
    /// The push as it was recorded: its registry account and region as the event gave them.
    fn from(push: &RecordedPush) -> Self {
        Push {
            event_id: push.event_id.clone(),
            time: push.time,
            account: push.account.clone(),
            region: push.region.clone(),
            repository: push.repository.clone(),
            digest: push.digest.clone(),
            tag: push.tag.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub revision: String,
    pub seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub arn: String,
    pub digest: ImageDigest,
    /// The revision it was built from.
    pub base: String,
}

/// Where a push stands relative to what this environment has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Newer than anything seen (or nothing seen yet).
    Newer,
    /// Another tag of an image pushed in the same second (ECR's one push per tag).
    AnotherTag,
    /// This very push was seen (same second, image and tag): a repeated delivery.
    Repeated,
    /// Older than a push already seen: a late delivery must not roll the service back.
    Late,
}

impl EnvState {
    /// Whether the rollout `rollout_id` is verified and soaking here (not vetted yet).
    pub fn soaking(&self, rollout_id: &str) -> bool {
        self.soak.as_ref().is_some_and(|soak| soak.rollout_id == rollout_id)
    }

    /// A rollout or a rollback still waits for ECS, a soak for its end or a promotion for its
    /// approval: the sweep comes back to it.
    pub fn in_flight(&self) -> bool {
        self.in_progress().is_some()
            || self.rollback.is_some()
            || self.soak.is_some()
            || self.pending_approval().is_some()
            || self.targets.iter().any(EnvState::in_flight)
    }

    /// The state of target `index` (0: this one), once it was first contacted.
    pub fn target(&self, index: usize) -> Option<&EnvState> {
        match index {
            0 => Some(self),
            _ => self.targets.get(index - 1),
        }
    }

    /// [`EnvState::target`], to change.
    pub fn target_mut(&mut self, index: usize) -> Option<&mut EnvState> {
        match index {
            0 => Some(self),
            _ => self.targets.get_mut(index - 1),
        }
    }

    /// Records the release `rollout_id` as verified on target `index` (a new release starts a
    /// new wave).
    pub fn record_verified(&mut self, rollout_id: &str, index: usize) {
        let wave = self.wave_of(rollout_id);
        if !wave.verified.contains(&index) {
            wave.verified.push(index);
        }
    }

    /// The wave of the release `rollout_id` (a new release starts a new one).
    pub fn wave_of(&mut self, rollout_id: &str) -> &mut Wave {
        let fresh = || Wave { rollout_id: rollout_id.to_owned(), verified: Vec::new(), failed: None };
        let wave = self.wave.get_or_insert_with(fresh);
        if wave.rollout_id != rollout_id {
            *wave = fresh();
        }
        wave
    }

    /// Where the release `rollout_id` failed (target and reason), once that was decided.
    pub fn failed_on(&self, rollout_id: &str) -> Option<&(usize, String)> {
        self.wave.as_ref().filter(|w| w.rollout_id == rollout_id).and_then(|w| w.failed.as_ref())
    }

    /// Settles every other target's rollout of the release `rollout_id` still in progress into
    /// `to` (the release settles as one); this target's is the caller's.
    pub fn settle_targets(&mut self, rollout_id: &str, to: &RolloutState) {
        for target in &mut self.targets {
            if let Some(rollout) = target.rollout.as_mut().filter(|r| r.id == rollout_id) {
                let _ = rollout.settle(to.clone());
            }
        }
    }

    /// The release `verified` is vetted: on every other target it reached, the revision it
    /// runs there becomes that target's known-good one.
    pub fn vet_targets(&mut self, verified: &Verified) {
        for target in &mut self.targets {
            let vetted = |r: &&Rollout| r.id == verified.rollout_id && matches!(r.state, RolloutState::Verified { .. });
            let Some(rollout) = target.rollout.as_ref().filter(vetted) else { continue };
            target.last_verified =
                Some(Verified { task_definition_arn: rollout.task_definition_arn.clone(), ..verified.clone() });
        }
        self.wave = None;
    }

    /// A newer release supersedes the one before on every other target it was still in progress
    /// on (their deployments run on; nothing is judged there).
    pub fn supersede_targets(&mut self, now: DateTime<Utc>, reason: &str) {
        let to = RolloutState::Superseded { at: now, reason: reason.to_owned() };
        for target in &mut self.targets {
            if let Some(rollout) = target.rollout.as_mut().filter(|r| r.in_progress()) {
                let _ = rollout.settle(to.clone());
            }
        }
        self.wave = None;
    }

    /// Where this environment's release (its rollout) stands on each of `env`'s targets, in
    /// config order (empty with one target).
    pub fn target_statuses(&self, app: &AppConfig, env: Environment) -> Vec<TargetStatus> {
        let labels = app.target_labels(env);
        let Some(release) = self.rollout.as_ref().filter(|_| labels.len() > 1) else { return Vec::new() };
        let rolled_back_to = |r: &Rollout| match &r.state {
            RolloutState::RolledBack { to, .. } => Some(to.clone()),
            _ => None,
        };
        labels
            .into_iter()
            .enumerate()
            .map(|(index, label)| {
                let ours = self.target(index).and_then(|t| t.rollout.as_ref()).filter(|r| r.id == release.id);
                let state = match ours {
                    _ if release.in_progress() && self.verified_on(&release.id, index) => "verified",
                    None => "waiting",
                    Some(rollout) if rollout.in_progress() => "deploying",
                    Some(rollout) => rollout.state.name(),
                };
                TargetStatus {
                    target: label,
                    state: state.to_owned(),
                    task_definition_arn: ours.map(|r| r.task_definition_arn.clone()),
                    rolled_back_to: ours.and_then(rolled_back_to),
                }
            })
            .collect()
    }

    /// Whether the release `rollout_id` is verified on target `index`.
    pub fn verified_on(&self, rollout_id: &str, index: usize) -> bool {
        self.wave.as_ref().is_some_and(|w| w.rollout_id == rollout_id && w.verified.contains(&index))
    }

    /// The promotion waiting for its approval here.
    pub fn pending_approval(&self) -> Option<&ApprovalRequest> {
        match &self.approval {
            Some(ApprovalState::Pending(request)) => Some(request),
            _ => None,
        }
    }

    /// The state of an environment Conveyor meets for the first time, running `running`.
    pub fn first(app: &AppName, env: Environment, cluster: &str, service: &str, running: Revision) -> Self {
        EnvState {
            app: app.clone(),
            environment: env,
            cluster: cluster.to_owned(),
            service: service.to_owned(),
            baseline: running,
            newest_push: None,
            held_push: None,
            last_verified: None,
            rollout: None,
            rollback: None,
            paused: None,
            drift: None,
            orphan: None,
            cleaned_through: None,
            soak: None,
            approval: None,
            targets: Vec::new(),
            wave: None,
        }
    }

    pub fn arrival(&self, time: DateTime<Utc>, digest: &ImageDigest, tag: &ImageTag) -> Arrival {
        let Some(mark) = &self.newest_push else { return Arrival::Newer };
        if time < mark.time {
            return Arrival::Late;
        }
        if time > mark.time {
            return Arrival::Newer;
        }
        let same_image = mark.pushes.iter().filter(|seen| &seen.digest == digest);
        match same_image.map(|seen| &seen.tag == tag).reduce(|a, b| a || b) {
            Some(true) => Arrival::Repeated,
            Some(false) => Arrival::AnotherTag,
            None => Arrival::Newer,
        }
    }

    /// Notes a push as seen (never moves the mark backwards).
    pub fn saw_push(&mut self, time: DateTime<Utc>, digest: &ImageDigest, tag: &ImageTag) {
        let seen = SeenPush { digest: digest.clone(), tag: tag.clone() };
        match &mut self.newest_push {
            Some(mark) if mark.time == time => {
                if !mark.pushes.contains(&seen) {
                    mark.pushes.push(seen);
                }
            }
            Some(mark) if mark.time > time => {}
            _ => self.newest_push = Some(PushMark { time, pushes: vec![seen] }),
        }
    }

    /// The rollout still in progress, if any.
    pub fn in_progress(&self) -> Option<&Rollout> {
        self.rollout.as_ref().filter(|r| r.in_progress())
    }

    /// The last revision known good: the last verified one, else the baseline.
    pub fn known_good(&self) -> Revision {
        match &self.last_verified {
            Some(v) => Revision { arn: v.task_definition_arn.clone(), digest: Some(v.digest.clone()) },
            None => self.baseline.clone(),
        }
    }

    /// Revisions the service may legitimately run: the ones Conveyor put there or went back to.
    pub fn knows_revision(&self, arn: &str) -> bool {
        let rollout = self.rollout.iter().flat_map(|r| {
            let rolled_back_to = match &r.state {
                RolloutState::RolledBack { to, .. } => Some(to.as_str()),
                _ => None,
            };
            [Some(r.task_definition_arn.as_str()), Some(r.previous.arn.as_str()), rolled_back_to]
        });
        let others = [
            Some(self.baseline.arn.as_str()),
            self.last_verified.as_ref().map(|v| v.task_definition_arn.as_str()),
            self.rollback.as_ref().map(|w| w.to.as_str()),
            self.drift.as_ref().map(|d| d.revision.as_str()),
        ];
        rollout.chain(others).flatten().any(|known| known == arn)
    }

    /// What a failed rollout goes back to (contract v2): the revision it replaced when that one
    /// runs the known-good image (so configuration changed outside Conveyor is kept); otherwise
    /// the known-good revision itself. `None` when that is the failed revision.
    pub fn rollback_target(&self, failed: &Rollout) -> Option<String> {
        let good = self.known_good();
        let previous_is_good = good.digest.is_some() && failed.previous.digest == good.digest;
        let target = if previous_is_good { failed.previous.arn.clone() } else { good.arn };
        (target != failed.task_definition_arn).then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Origin;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn digest(n: u8) -> ImageDigest {
        ImageDigest::parse(format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    fn state() -> EnvState {
        EnvState::first(
            &AppName::parse("shop").unwrap(),
            Environment::STAGE,
            "c",
            "s",
            Revision { arn: "td:1".into(), digest: Some(digest(1)) },
        )
    }

    fn rollout(td: &str, previous: Revision, d: u8) -> Rollout {
        Rollout {
            id: "r".into(),
            tag: ImageTag::parse("v").unwrap(),
            tags: vec![],
            digest: digest(d),
            image: "i".into(),
            task_definition_arn: td.into(),
            previous,
            deployment_id: None,
            event_time: at(0),
            started_at: at(0),
            origin: Origin::Push,
            state: RolloutState::InProgress,
        }
    }

    fn verified(td: &str, d: u8) -> Verified {
        Verified {
            rollout_id: "v".into(),
            tag: ImageTag::parse("v1").unwrap(),
            digest: digest(d),
            image: "i".into(),
            task_definition_arn: td.into(),
            at: at(0),
        }
    }

    fn tag(t: &str) -> ImageTag {
        ImageTag::parse(t).unwrap()
    }

    #[test]
    fn pushes_are_ordered_by_event_time_and_same_second_repeats_are_recognised() {
        let mut s = state();
        let v1 = tag("v1");
        assert_eq!(s.arrival(at(10), &digest(1), &v1), Arrival::Newer);
        s.saw_push(at(10), &digest(1), &v1);
        s.saw_push(at(10), &digest(2), &tag("v2")); // another image in the same second
        assert_eq!(s.arrival(at(10), &digest(1), &v1), Arrival::Repeated, "a same-second duplicate of the older push");
        assert_eq!(s.arrival(at(10), &digest(2), &tag("v2")), Arrival::Repeated);
        assert_eq!(
            s.arrival(at(10), &digest(1), &tag("0a1b2c3")),
            Arrival::AnotherTag,
            "ECR's second push of an image"
        );
        assert_eq!(s.arrival(at(10), &digest(3), &v1), Arrival::Newer);
        assert_eq!(s.arrival(at(9), &digest(4), &v1), Arrival::Late);
        s.saw_push(at(5), &digest(5), &v1);
        assert_eq!(s.newest_push.as_ref().unwrap().time, at(10), "never moves back");
    }

    #[test]
    fn a_failed_rollout_goes_back_to_the_revision_it_replaced_when_that_runs_the_good_image() {
        // v1 verified on :2; Terraform deployed :3 (same image, a new setting); :4 failed.
        let mut s = state();
        s.last_verified = Some(verified("td:2", 2));
        let failed = rollout("td:4", Revision { arn: "td:3".into(), digest: Some(digest(2)) }, 4);
        assert_eq!(s.rollback_target(&failed).as_deref(), Some("td:3"));
        // The replaced revision runs another image (an unverified one): back to the verified revision.
        let failed = rollout("td:5", Revision { arn: "td:4".into(), digest: Some(digest(4)) }, 5);
        assert_eq!(s.rollback_target(&failed).as_deref(), Some("td:2"));
        // Nothing verified yet: the baseline, or the revision replaced if it runs the baseline's image.
        let s = state();
        let failed = rollout("td:2", Revision { arn: "td:1".into(), digest: Some(digest(1)) }, 2);
        assert_eq!(s.rollback_target(&failed).as_deref(), Some("td:1"));
        // The failed revision is the known-good one itself: nothing to go back to.
        let mut s = state();
        s.last_verified = Some(verified("td:2", 2));
        let failed = rollout("td:2", Revision { arn: "td:2".into(), digest: Some(digest(2)) }, 2);
        assert_eq!(s.rollback_target(&failed), None);
    }

    #[test]
    fn revisions_conveyor_did_not_put_there_are_drift() {
        let mut s = state();
        s.last_verified = Some(verified("td:2", 2));
        s.rollout = Some(rollout("td:4", Revision { arn: "td:2".into(), digest: None }, 4));
        for known in ["td:1", "td:2", "td:4"] {
            assert!(s.knows_revision(known), "{known}");
        }
        assert!(!s.knows_revision("td:3"));
    }
}
