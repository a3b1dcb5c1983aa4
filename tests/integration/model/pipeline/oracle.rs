//! The model of a pipeline: a small, pure reading of the contract's *Pipelines (v3)* section for
//! one app whose pipeline is dev → stage (auto promotion, soak, one alarm) → prod (manual
//! promotion, approval, two targets, one after the other or, in some sequences, at once) — what
//! ECS does with each deployment, what Conveyor's records and image items hold, what is
//! announced, what each call answers.

use std::collections::BTreeMap;

pub use super::super::oracle::{Dep, DepState, Push, RState, Watch};

pub const ENVS: [&str; 3] = ["dev", "stage", "prod"];
pub const DEV: usize = 0;
pub const STAGE: usize = 1;
pub const PROD: usize = 2;
/// The services: dev, stage, prod's first target, prod's second.
pub const SERVICES: usize = 4;

/// How many targets environment `env` has.
pub fn targets(env: usize) -> usize {
    if env == PROD {
        2
    } else {
        1
    }
}

/// The service of target `target` of `env`.
pub fn service(env: usize, target: usize) -> usize {
    env + target
}

/// The environment and target of service `service`.
pub fn place(service: usize) -> (usize, usize) {
    if service == SERVICES - 1 {
        (PROD, 1)
    } else {
        (service, 0)
    }
}

/// How a service is named in the test's messages: its environment, and which target.
pub fn label(service: usize) -> String {
    let (env, target) = place(service);
    if targets(env) > 1 {
        format!("{} target {}", ENVS[env], target + 1)
    } else {
        ENVS[env].to_owned()
    }
}

/// The people of the test: who requests promotions into prod, and a second person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Person {
    Requester,
    Approver,
}

/// One ECS service: the image of every revision of its family (`None`: the seeded one, by tag) and
/// its deployments, primary first.
#[derive(Debug, Clone)]
pub struct Service {
    pub revs: Vec<Option<u32>>,
    pub deps: Vec<Dep>,
}

impl Service {
    pub fn primary(&self) -> &Dep {
        &self.deps[0]
    }

    fn running(&self) -> Option<u32> {
        self.revs[self.primary().rev]
    }
}

/// An environment's release: one image rolled out to each of its targets (one after the other,
/// or at once).
#[derive(Debug, Clone)]
pub struct Release {
    pub id: u32,
    pub digest: u32,
    pub tag: String,
    pub state: RState,
    /// When it started (the model's clock).
    pub started: u64,
    /// The targets it is verified on so far.
    pub verified_on: Vec<usize>,
    /// The stage alarm entered ALARM since it started (whether or not its event was delivered).
    pub alarmed: bool,
}

/// One target's part of a release: its own revision and deployment.
#[derive(Debug, Clone)]
pub struct Step {
    pub release: u32,
    pub digest: u32,
    pub rev: usize,
    pub previous: usize,
    pub dep: u32,
    pub state: RState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// `forced`: asked with `force` for an image that had failed.
    Pending {
        digest: u32,
        tag: String,
        forced: bool,
    },
    Declined {
        digest: u32,
    },
}

#[derive(Debug, Clone, Default)]
pub struct EnvModel {
    /// Conveyor has a record of it.
    pub exists: bool,
    pub release: Option<Release>,
    /// Each target's latest rollout.
    pub steps: Vec<Option<Step>>,
    pub watches: Vec<Option<Watch>>,
    pub last_verified: Option<u32>,
    /// Each target's known-good revision once something was verified there.
    pub good: Vec<Option<usize>>,
    pub soaking: bool,
    pub approval: Option<Approval>,
    pub paused: bool,
}

impl EnvModel {
    fn new(env: usize) -> Self {
        let n = targets(env);
        EnvModel { steps: vec![None; n], watches: vec![None; n], good: vec![None; n], ..EnvModel::default() }
    }

    fn in_progress(&self) -> Option<&Release> {
        self.release.as_ref().filter(|r| r.state == RState::InProgress)
    }

    /// Target `target`'s step of the release in progress, unless verified there already.
    fn unsettled(&self, target: usize) -> Option<&Step> {
        let release = self.in_progress()?;
        let step = self.steps[target].as_ref()?;
        (step.release == release.id && step.state == RState::InProgress && !release.verified_on.contains(&target))
            .then_some(step)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageModel {
    pub vetted: [bool; 3],
    pub failed: [bool; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventName {
    Completed,
    Failed,
}

/// A deployment state change ECS emitted.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub service: usize,
    pub name: EventName,
    pub dep: u32,
}

/// What a promotion, an approval or a rejection answered: a status, or a refusal's error type.
pub type Answer = Result<&'static str, &'static str>;

/// (environment, outcome) of one notification.
type Note = (usize, &'static str);

pub struct Model {
    pub services: Vec<Service>,
    pub envs: Vec<EnvModel>,
    pub images: BTreeMap<u32, ImageModel>,
    /// Tags vetted in dev: (tag, digest, when).
    pub dev_tags: Vec<(String, u32, u64)>,
    /// Tags vetted in stage (what prod may get): tag => digest.
    pub stage_tags: BTreeMap<String, u32>,
    /// The newest push time seen, with the (digest, tag) pushes of that second.
    pub mark: Option<(i64, Vec<(u32, String)>)>,
    pub clock: u64,
    /// prod's targets roll out at once (`parallel`), else one after the other.
    pub parallel: bool,
    /// The sweep is reconciling: its auto promotions come after every environment is.
    sweeping: bool,
    next_dep: u32,
    next_release: u32,
    pub notes: Vec<Note>,
}

impl Model {
    pub fn new(parallel: bool) -> Self {
        let services = (0..SERVICES as u32)
            .map(|n| Service { revs: vec![None], deps: vec![Dep { id: n + 1, rev: 0, state: DepState::Completed }] })
            .collect();
        Model {
            services,
            envs: (0..ENVS.len()).map(EnvModel::new).collect(),
            images: BTreeMap::new(),
            dev_tags: Vec::new(),
            stage_tags: BTreeMap::new(),
            mark: None,
            clock: 0,
            parallel,
            sweeping: false,
            next_dep: SERVICES as u32,
            next_release: 0,
            notes: Vec::new(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn note(&mut self, env: usize, outcome: &'static str) {
        self.notes.push((env, outcome));
    }

    fn svc(&mut self, env: usize, target: usize) -> &mut Service {
        &mut self.services[service(env, target)]
    }

    fn image(&mut self, digest: u32) -> &mut ImageModel {
        self.images.entry(digest).or_default()
    }

    fn failed_anywhere(&self, digest: u32) -> bool {
        self.images.get(&digest).is_some_and(|i| i.failed.iter().any(|f| *f))
    }

    /// ECS `UpdateService`: a new primary deployment unless the service runs `rev` already.
    fn update_service(&mut self, service: usize, rev: usize) -> u32 {
        if self.services[service].primary().rev == rev {
            return self.services[service].primary().id;
        }
        self.next_dep += 1;
        let id = self.next_dep;
        self.services[service].deps.insert(0, Dep { id, rev, state: DepState::InProgress });
        id
    }

    /// ECS settling the primary deployment of `service`: the event it emits.
    pub fn settle(&mut self, service: usize, complete: bool) -> Event {
        let svc = &mut self.services[service];
        let dep = svc.deps[0].id;
        if complete {
            svc.deps[0].state = DepState::Completed;
            svc.deps.truncate(1);
            Event { service, name: EventName::Completed, dep }
        } else {
            svc.deps[0].state = DepState::Failed;
            Event { service, name: EventName::Failed, dep }
        }
    }

    /// Whether the primary deployment of `service` is one of a rollout (it may fail; a rollback's
    /// only completes, in this model).
    pub fn rolling_out(&self, service: usize) -> bool {
        let (env, target) = place(service);
        let primary = self.services[service].primary();
        primary.state == DepState::InProgress
            && self.envs[env].steps[target].as_ref().is_some_and(|s| s.dep == primary.id)
    }

    /// stage-deploy: the status reported.
    pub fn push(&mut self, push: &Push) -> &'static str {
        if let Some((time, seen)) = &mut self.mark {
            if push.time < *time {
                return "skipped";
            }
            if push.time == *time {
                if seen.iter().any(|(d, t)| *d == push.digest && *t == push.tag) {
                    return "skipped";
                }
                seen.push((push.digest, push.tag.clone()));
            }
        }
        if self.mark.as_ref().is_none_or(|(time, _)| push.time > *time) {
            self.mark = Some((push.time, vec![(push.digest, push.tag.clone())]));
        }
        if self.start(DEV, push.digest, &push.tag) {
            "deploying"
        } else {
            "skipped"
        }
    }

    /// Starts a release of `digest` in `env` on its first target, unless that target runs it
    /// already (`false`).
    fn start(&mut self, env: usize, digest: u32, tag: &str) -> bool {
        self.envs[env].exists = true;
        if self.svc(env, 0).running() == Some(digest) {
            return false;
        }
        let started = self.tick();
        let e = &mut self.envs[env];
        let mut superseded = false;
        if let Some(release) = e.release.as_mut().filter(|r| r.state == RState::InProgress) {
            release.state = RState::Superseded;
            superseded = true;
            let id = release.id;
            for step in e.steps.iter_mut().flatten().filter(|s| s.release == id && s.state == RState::InProgress) {
                step.state = RState::Superseded;
            }
        }
        e.soaking = false;
        self.next_release += 1;
        let release = Release {
            id: self.next_release,
            digest,
            tag: tag.to_owned(),
            state: RState::InProgress,
            started,
            verified_on: Vec::new(),
            alarmed: false,
        };
        self.envs[env].release = Some(release);
        if superseded {
            self.note(env, "superseded");
        }
        let at_once = if self.parallel { targets(env) } else { 1 };
        for target in 0..at_once {
            self.start_target(env, target);
        }
        self.note(env, if env == DEV { "deploying" } else { "promoted" });
        true
    }

    /// The release in progress in `env` starts on `target`: a new revision, one `UpdateService`.
    fn start_target(&mut self, env: usize, target: usize) {
        let (id, digest) = self.envs[env].release.as_ref().map(|r| (r.id, r.digest)).expect("a release");
        let svc = self.svc(env, target);
        let previous = svc.primary().rev;
        svc.revs.push(Some(digest));
        let rev = svc.revs.len() - 1;
        let dep = self.update_service(service(env, target), rev);
        let e = &mut self.envs[env];
        e.watches[target] = None;
        e.steps[target] = Some(Step { release: id, digest, rev, previous, dep, state: RState::InProgress });
    }

    /// deploy-monitor, one deployment event.
    pub fn on_event(&mut self, event: Event) {
        let (env, target) = place(event.service);
        let e = &mut self.envs[env];
        if !e.exists {
            return;
        }
        let verified_here = e.in_progress().is_some_and(|r| r.verified_on.contains(&target));
        if e.unsettled(target).is_some_and(|s| s.dep == event.dep) {
            match event.name {
                EventName::Completed => self.completed(env, target),
                EventName::Failed => self.failed(env),
            }
        } else if verified_here && e.steps[target].as_ref().is_some_and(|s| s.dep == event.dep) {
            // Delivered again: the release's next step, if it is still to take.
            self.advance(env);
        } else if e.watches[target].as_ref().is_some_and(|w| w.dep == event.dep) {
            e.watches[target] = None;
        }
    }

    /// The rollout on `target` completed: verified if its deployment is still primary; the
    /// release moves on to the next target, or is verified.
    fn completed(&mut self, env: usize, target: usize) {
        let Some(step) = self.envs[env].unsettled(target).cloned() else { return };
        let primary = self.svc(env, target).primary().clone();
        if primary.id != step.dep {
            return;
        }
        if primary.state == DepState::Failed || self.envs[env].release.as_ref().is_some_and(|r| r.alarmed) {
            return self.failed(env);
        }
        let release = self.envs[env].release.as_mut().expect("a release");
        release.verified_on.push(target);
        if release.verified_on.len() < targets(env) {
            return self.advance(env);
        }
        if env == STAGE {
            let e = &mut self.envs[env];
            Self::settle_steps(e, RState::Verified);
            e.soaking = true;
            return self.note(env, "soaking");
        }
        self.vet(env);
    }

    /// One after the other: the release in progress starts on its next target, unless the
    /// environment is paused (held until a sweep, or a repeated event, after the resume).
    fn advance(&mut self, env: usize) {
        let e = &self.envs[env];
        let Some(release) = e.in_progress() else { return };
        if self.parallel || e.paused {
            return;
        }
        let next = (0..targets(env)).find(|t| !release.verified_on.contains(t));
        if let Some(next) = next.filter(|&t| e.steps[t].as_ref().is_none_or(|s| s.release != release.id)) {
            self.start_target(env, next);
        }
    }

    /// Every target's step of the environment's release settles as `state`.
    fn settle_steps(e: &mut EnvModel, state: RState) {
        let Some(release) = e.release.as_mut() else { return };
        release.state = state;
        let id = release.id;
        for step in e.steps.iter_mut().flatten().filter(|s| s.release == id) {
            step.state = state;
        }
    }

    /// The release's image counts as vetted in `env`; an auto promotion may follow.
    fn vet(&mut self, env: usize) {
        let now = self.tick();
        let e = &mut self.envs[env];
        Self::settle_steps(e, RState::Verified);
        e.soaking = false;
        let (digest, tag) = e.release.as_ref().map(|r| (r.digest, r.tag.clone())).expect("a release");
        e.last_verified = Some(digest);
        for target in 0..targets(env) {
            e.good[target] = e.steps[target].as_ref().map(|s| s.rev);
        }
        self.image(digest).vetted[env] = true;
        match env {
            DEV => self.dev_tags.push((tag, digest, now)),
            STAGE => {
                self.stage_tags.insert(tag, digest);
            }
            _ => {}
        }
        self.note(env, "verified");
        if env == DEV && !self.sweeping {
            self.auto_promote();
        }
    }

    /// The release failed: every target it moved goes back to its known-good revision (the last
    /// verified there, else what the service ran before Conveyor); the image failed here.
    fn failed(&mut self, env: usize) {
        let Some(release) = self.envs[env].in_progress().cloned().or_else(|| {
            self.envs[env].release.clone().filter(|r| r.state == RState::Verified && self.envs[env].soaking)
        }) else {
            return;
        };
        let mut rolled_back = false;
        for target in 0..targets(env) {
            let Some(step) = self.envs[env].steps[target].clone().filter(|s| s.release == release.id) else { continue };
            let good = self.envs[env].good[target];
            let svc = &self.services[service(env, target)];
            let good_digest = good.and_then(|rev| svc.revs[rev]);
            let previous_is_good = good_digest.is_some() && svc.revs[step.previous] == good_digest;
            let to = if previous_is_good { step.previous } else { good.unwrap_or(0) };
            let (state, watch) = if to == step.rev {
                (RState::Failed, None)
            } else {
                rolled_back = true;
                let dep = self.update_service(service(env, target), to);
                (RState::RolledBack, Some(Watch { dep, to }))
            };
            let e = &mut self.envs[env];
            e.watches[target] = watch;
            if let Some(step) = e.steps[target].as_mut() {
                step.state = state;
            }
        }
        let e = &mut self.envs[env];
        if let Some(r) = e.release.as_mut() {
            r.state = if rolled_back { RState::RolledBack } else { RState::Failed };
        }
        e.soaking = false;
        self.image(release.digest).failed[env] = true;
        self.note(env, if rolled_back { "rolled_back" } else { "failed" });
    }

    /// The stage alarm enters ALARM (and recovers at once); `delivered`: its state-change event
    /// reaches deploy-monitor (else only CloudWatch's history knows).
    pub fn alarm(&mut self, delivered: bool) {
        let e = &mut self.envs[STAGE];
        let unvetted =
            e.release.as_mut().filter(|r| r.state == RState::InProgress || (r.state == RState::Verified && e.soaking));
        let Some(release) = unvetted else { return };
        release.alarmed = true;
        if delivered {
            self.failed(STAGE);
        }
    }

    /// Stage's soak is over (the soak timer): vetted, unless the alarm fired meanwhile.
    pub fn soak_ends(&mut self) {
        if !self.envs[STAGE].soaking {
            return;
        }
        if self.envs[STAGE].release.as_ref().is_some_and(|r| r.alarmed) {
            return self.failed(STAGE);
        }
        self.vet(STAGE);
    }

    /// Auto promotion into stage: the newest image dev vetted that failed nowhere, unless stage
    /// had it, or started a rollout since it was vetted.
    fn auto_promote(&mut self) {
        let mut vetted = self.dev_tags.clone();
        vetted.sort_by_key(|(_, _, at)| std::cmp::Reverse(*at));
        let Some((tag, digest, at)) = vetted.into_iter().find(|(_, d, _)| !self.failed_anywhere(*d)) else { return };
        let stage = &self.envs[STAGE];
        // Into a paused environment: held (the sweep promotes it once resumed).
        if stage.paused {
            return;
        }
        if stage.release.as_ref().is_some_and(|r| r.digest == digest || r.started >= at)
            || stage.last_verified == Some(digest)
        {
            return;
        }
        self.start(STAGE, digest, &tag);
    }

    /// The scheduled sweep: every rollout and rollback in flight reconciled with ECS, approvals
    /// past their time expired (`expired`), auto promotions missed made.
    pub fn sweep(&mut self, expired: bool) {
        if expired {
            if let Some(Approval::Pending { digest, .. }) = self.envs[PROD].approval.clone() {
                self.envs[PROD].approval = Some(Approval::Declined { digest });
                self.note(PROD, "approval_expired");
            }
        }
        self.sweeping = true;
        for env in 0..ENVS.len() {
            for target in 0..targets(env) {
                let e = &self.envs[env];
                let primary = self.services[service(env, target)].primary().clone();
                if let Some(step) = e.unsettled(target).cloned() {
                    let ours = self.services[service(env, target)].deps.iter().find(|d| d.id == step.dep).cloned();
                    match ours {
                        Some(d) if d.state == DepState::Failed => self.failed(env),
                        Some(d) if d.id == primary.id && d.state == DepState::Completed => self.completed(env, target),
                        Some(d) if d.id == primary.id => {}
                        _ if primary.rev == step.previous => self.failed(env),
                        _ => {}
                    }
                } else if let Some(watch) = e.watches[target].clone() {
                    if !(watch.dep == primary.id && primary.state == DepState::InProgress) {
                        self.envs[env].watches[target] = None;
                    }
                }
            }
            if targets(env) > 1 {
                self.advance(env);
            }
        }
        self.sweeping = false;
        self.auto_promote();
    }

    /// A promotion into prod requested by [`Person::Requester`] (`force`: even of an image that
    /// failed): it waits for an approval. Asked again, the request stands — unless its image
    /// failed since (refused without `force`, a forced request replaces it with).
    pub fn promote(&mut self, tag: &str, force: bool) -> Answer {
        let Some(&digest) = self.stage_tags.get(tag) else { return Err("NotVetted") };
        if self.envs[PROD].paused {
            return Err("Paused");
        }
        let failed = self.failed_anywhere(digest);
        let prod = &mut self.envs[PROD];
        match &prod.approval {
            Some(Approval::Pending { digest: pending, forced, .. }) if *pending == digest => {
                if !failed || (*forced && force) {
                    return Ok("awaiting_approval");
                }
                if !force {
                    return Err("NotVetted");
                }
            }
            _ if failed && !force => return Err("NotVetted"),
            _ => {}
        }
        prod.exists = true;
        prod.approval = Some(Approval::Pending { digest, tag: tag.to_owned(), forced: failed && force });
        self.note(PROD, "approval_requested");
        Ok("awaiting_approval")
    }

    /// `conveyor approve` by `who`.
    pub fn approve(&mut self, who: Person) -> Answer {
        let Some(Approval::Pending { digest, tag, forced }) = self.envs[PROD].approval.clone() else {
            return Err("InvalidRequest");
        };
        if who == Person::Requester {
            return Err("NotAllowed");
        }
        if self.failed_anywhere(digest) && !forced {
            return Err("NotVetted");
        }
        if self.envs[PROD].paused {
            return Err("Paused");
        }
        self.envs[PROD].approval = None;
        self.note(PROD, "approved");
        Ok(if self.start(PROD, digest, &tag) { "deploying" } else { "already_deployed" })
    }

    /// `conveyor reject` (by the requester, withdrawing it, or by another person: the same).
    pub fn reject(&mut self) -> Answer {
        let Some(Approval::Pending { digest, .. }) = self.envs[PROD].approval.clone() else {
            return Err("InvalidRequest");
        };
        self.envs[PROD].approval = Some(Approval::Declined { digest });
        self.note(PROD, "rejected");
        Ok("rejected")
    }

    /// `conveyor pause` of `env` (idempotent: announced once).
    pub fn pause(&mut self, env: usize) {
        let e = &mut self.envs[env];
        e.exists = true;
        if !std::mem::replace(&mut e.paused, true) {
            self.note(env, "paused");
        }
    }

    /// `conveyor resume` of `env` (idempotent: announced once).
    pub fn resume(&mut self, env: usize) {
        let e = &mut self.envs[env];
        e.exists = true;
        if std::mem::replace(&mut e.paused, false) {
            self.note(env, "resumed");
        }
    }
}
