//! The model: a small, pure reading of the contract (`../shared/docs/contract.md`) for two apps
//! fed by one repository — what ECS does with each deployment, what Conveyor's record, image and
//! tag items hold, what is announced, what each call answers. The runner compares the library
//! with it after every step.

use std::collections::{BTreeMap, BTreeSet};

use conveyor::types::Environment;

use super::{APPS, PROD, STAGE};

/// A situation: Conveyor looks at a service running a revision it registered for an earlier
/// rollout that its record no longer names (ECS's circuit breaker went back to the last
/// deployment that completed, whose completion Conveyor never heard of).
pub const RUNS_AN_UNNAMED_REVISION: &str = "runs-an-unnamed-revision";

pub fn ix(env: Environment) -> usize {
    usize::from(env == Environment::PROD)
}

fn is_version(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix('v') else { return false };
    let parts: Vec<&str> = rest.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Whether app `app` deploys `tag` (its `tags` pattern).
pub fn admits(app: usize, tag: &str) -> bool {
    if app == 0 {
        tag != "latest"
    } else {
        is_version(tag)
    }
}

/// A push event: `tag` of image `digest(digest)` at `time` (seconds after the sequence's base).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub tag: String,
    pub digest: u32,
    pub time: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepState {
    InProgress,
    Completed,
    Failed,
}

impl DepState {
    pub fn ecs(self) -> &'static str {
        match self {
            DepState::InProgress => "IN_PROGRESS",
            DepState::Completed => "COMPLETED",
            DepState::Failed => "FAILED",
        }
    }
}

/// An ECS deployment: `id` is the model's (mapped to ECS's as they appear), `rev` the index of the
/// revision in [`EnvModel::revs`].
#[derive(Debug, Clone)]
pub struct Dep {
    pub id: u32,
    pub rev: usize,
    pub state: DepState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RState {
    InProgress,
    Verified,
    RolledBack,
    Failed,
    Superseded,
}

impl RState {
    pub fn kind(self) -> &'static str {
        match self {
            RState::InProgress => "in_progress",
            RState::Verified => "verified",
            RState::RolledBack => "rolled_back",
            RState::Failed => "failed",
            RState::Superseded => "superseded",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rollout {
    pub digest: u32,
    pub tag: String,
    pub tags: BTreeSet<String>,
    pub rev: usize,
    pub previous: usize,
    pub dep: u32,
    pub state: RState,
    pub event_time: i64,
    pub verified_at: u64,
    pub rolled_back_to: Option<usize>,
}

/// A rollback deployment being watched.
#[derive(Debug, Clone)]
pub struct Watch {
    pub dep: u32,
    pub to: usize,
}

/// One app in one environment: its ECS service and what Conveyor knows of it.
#[derive(Debug, Clone)]
pub struct EnvModel {
    /// Conveyor has a record of it.
    pub exists: bool,
    /// The image of every revision of the family (`None`: the seeded one, by tag).
    pub revs: Vec<Option<u32>>,
    /// ECS's deployments, primary first.
    pub deps: Vec<Dep>,
    /// The newest push time seen, with the (digest, tag) of that second.
    pub mark: Option<(i64, Vec<(u32, String)>)>,
    pub held: Option<Push>,
    pub paused: bool,
    pub rollout: Option<Rollout>,
    /// (digest, revision).
    pub last_verified: Option<(u32, usize)>,
    pub watch: Option<Watch>,
}

impl EnvModel {
    fn new(first_dep: u32) -> Self {
        EnvModel {
            exists: false,
            revs: vec![None],
            deps: vec![Dep { id: first_dep, rev: 0, state: DepState::Completed }],
            mark: None,
            held: None,
            paused: false,
            rollout: None,
            last_verified: None,
            watch: None,
        }
    }

    pub fn primary(&self) -> &Dep {
        &self.deps[0]
    }

    fn running(&self) -> Option<u32> {
        self.revs[self.primary().rev]
    }

    pub fn in_progress(&self) -> Option<&Rollout> {
        self.rollout.as_ref().filter(|r| r.state == RState::InProgress)
    }

    /// The rollout in progress failed and ECS's circuit breaker went back to an earlier revision
    /// (the failed deployment is still listed).
    pub fn failed_by_circuit_breaker(&self) -> bool {
        let Some(rollout) = self.in_progress() else { return false };
        let failed = self.deps.iter().any(|d| d.id == rollout.dep && d.state == DepState::Failed);
        failed && self.primary().id != rollout.dep && self.primary().rev < rollout.rev
    }

    /// The revisions Conveyor's record names (what the library takes as its own doing).
    pub fn names(&self, rev: usize) -> bool {
        let rollout = self.rollout.iter().flat_map(|r| [Some(r.rev), Some(r.previous), r.rolled_back_to]);
        let others = [Some(0), self.last_verified.map(|(_, rev)| rev), self.watch.as_ref().map(|w| w.to)];
        rollout.chain(others).flatten().any(|known| known == rev)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImageModel {
    pub tags: BTreeSet<String>,
    pub vetted_stage: Option<u64>,
    pub vetted_prod: bool,
    pub failed_stage: bool,
    pub failed_prod: bool,
}

#[derive(Debug, Clone)]
pub struct AppModel {
    pub envs: [EnvModel; 2],
    pub images: BTreeMap<u32, ImageModel>,
    /// Tag => (digest, when stage verified it).
    pub tags: BTreeMap<String, (u32, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventName {
    Completed,
    Failed,
    InProgress,
}

/// A deployment state change ECS emitted.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub app: usize,
    pub env: Environment,
    pub name: EventName,
    pub dep: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Fail,
    FailWithCircuitBreaker,
}

/// Where a push stands relative to the newest one seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    Newer,
    AnotherTag,
    Repeated,
    Late,
}

/// (app, environment, outcome) of one notification.
type Note = (usize, Environment, &'static str);

pub struct Model {
    pub apps: Vec<AppModel>,
    pub clock: u64,
    pub next_dep: u32,
    pub notes: Vec<Note>,
    /// The situations worth naming that arose in this step (see [`RUNS_AN_UNNAMED_REVISION`]):
    /// printed with a disagreement, and what a listed known bug would excuse.
    pub situations: Vec<&'static str>,
}

impl Model {
    pub fn new() -> Self {
        let mut next_dep = 0;
        let mut dep = || {
            next_dep += 1;
            next_dep
        };
        let apps = (0..APPS.len())
            .map(|_| AppModel {
                envs: [EnvModel::new(dep()), EnvModel::new(dep())],
                images: BTreeMap::new(),
                tags: BTreeMap::new(),
            })
            .collect();
        Model { apps, clock: 0, next_dep, notes: Vec::new(), situations: Vec::new() }
    }

    fn env(&mut self, app: usize, env: Environment) -> &mut EnvModel {
        &mut self.apps[app].envs[ix(env)]
    }

    fn note(&mut self, app: usize, env: Environment, outcome: &'static str) {
        self.notes.push((app, env, outcome));
    }

    /// Conveyor looks at the service (and compares what runs with its record).
    fn looks_at(&mut self, app: usize, env: Environment) {
        let e = self.env(app, env);
        if e.exists && !e.names(e.primary().rev) {
            self.situations.push(RUNS_AN_UNNAMED_REVISION);
        }
    }

    /// ECS `UpdateService`: a new primary deployment unless the service runs `rev` already.
    fn update_service(&mut self, app: usize, env: Environment, rev: usize) -> u32 {
        if self.env(app, env).primary().rev == rev {
            return self.env(app, env).primary().id;
        }
        self.next_dep += 1;
        let id = self.next_dep;
        self.env(app, env).deps.insert(0, Dep { id, rev, state: DepState::InProgress });
        id
    }

    /// ECS settling the primary deployment; the events it emits.
    pub fn settle(&mut self, app: usize, env: Environment, outcome: Outcome) -> Vec<Event> {
        let event = |name, dep| Event { app, env, name, dep };
        let primary = self.env(app, env).primary().id;
        match outcome {
            Outcome::Complete => {
                let e = self.env(app, env);
                e.deps[0].state = DepState::Completed;
                e.deps.truncate(1);
                vec![event(EventName::Completed, primary)]
            }
            Outcome::Fail => {
                self.env(app, env).deps[0].state = DepState::Failed;
                vec![event(EventName::Failed, primary)]
            }
            Outcome::FailWithCircuitBreaker => {
                self.env(app, env).deps[0].state = DepState::Failed;
                let mut events = vec![event(EventName::Failed, primary)];
                let stable = self.env(app, env).deps.iter().find(|d| d.state == DepState::Completed).map(|d| d.rev);
                if let Some(rev) = stable {
                    self.next_dep += 1;
                    let id = self.next_dep;
                    self.env(app, env).deps.insert(0, Dep { id, rev, state: DepState::InProgress });
                    events.push(event(EventName::InProgress, id));
                }
                events
            }
        }
    }

    fn record_tag(&mut self, app: usize, push: &Push) {
        let model = &mut self.apps[app];
        let image = model.images.entry(push.digest).or_default();
        image.tags.insert(push.tag.clone());
        if let Some(vetted) = image.vetted_stage {
            if model.tags.get(&push.tag).is_none_or(|(_, at)| *at <= vetted) {
                model.tags.insert(push.tag.clone(), (push.digest, vetted));
            }
        }
    }

    /// Another tag of the image stage is rolling out or verified.
    fn add_tag(&mut self, app: usize, push: &Push) {
        let model = &mut self.apps[app];
        model.images.entry(push.digest).or_default().tags.insert(push.tag.clone());
        let Some(rollout) = model.envs[0].rollout.as_mut() else { return };
        rollout.tags.insert(push.tag.clone());
        if rollout.state == RState::Verified {
            model.tags.insert(push.tag.clone(), (push.digest, rollout.verified_at));
        }
    }

    fn arrival(env: &EnvModel, push: &Push) -> Arrival {
        let Some((time, seen)) = &env.mark else { return Arrival::Newer };
        if push.time < *time {
            return Arrival::Late;
        }
        if push.time > *time {
            return Arrival::Newer;
        }
        if seen.iter().any(|(d, t)| *d == push.digest && *t == push.tag) {
            Arrival::Repeated
        } else if seen.iter().any(|(d, _)| *d == push.digest) {
            Arrival::AnotherTag
        } else {
            Arrival::Newer
        }
    }

    fn saw_push(env: &mut EnvModel, push: &Push) {
        match &mut env.mark {
            Some((time, seen)) if *time == push.time => {
                if !seen.contains(&(push.digest, push.tag.clone())) {
                    seen.push((push.digest, push.tag.clone()));
                }
            }
            Some((time, _)) if *time > push.time => {}
            _ => env.mark = Some((push.time, vec![(push.digest, push.tag.clone())])),
        }
    }

    /// stage-deploy: the status reported for each app.
    pub fn push(&mut self, push: &Push) -> Vec<&'static str> {
        (0..APPS.len()).map(|app| if admits(app, &push.tag) { self.push_app(app, push) } else { "skipped" }).collect()
    }

    fn push_app(&mut self, app: usize, push: &Push) -> &'static str {
        let env = self.env(app, STAGE);
        let held = env.held.as_ref().is_some_and(|h| h.time == push.time && h.digest == push.digest);
        let rolling_this = env
            .rollout
            .as_ref()
            .is_some_and(|r| r.digest == push.digest && matches!(r.state, RState::InProgress | RState::Verified));
        let (arrival, paused) = (Self::arrival(env, push), env.paused);
        match arrival {
            Arrival::Repeated if held && !paused => {}
            Arrival::Repeated => return "skipped",
            Arrival::Late => {
                self.record_tag(app, push);
                return "skipped";
            }
            Arrival::AnotherTag => {
                Self::saw_push(self.env(app, STAGE), push);
                if rolling_this {
                    self.add_tag(app, push);
                } else {
                    self.record_tag(app, push);
                }
                return "skipped";
            }
            Arrival::Newer => {}
        }
        Self::saw_push(self.env(app, STAGE), push);
        if paused {
            self.env(app, STAGE).held = Some(push.clone());
            self.record_tag(app, push);
            return "paused";
        }
        if rolling_this {
            self.add_tag(app, push);
            return "skipped";
        }
        let env = self.env(app, STAGE);
        if env.held.as_ref().is_some_and(|h| h.time <= push.time) {
            env.held = None;
        }
        if self.start(app, STAGE, push.digest, &push.tag, push.time) {
            self.apps[app].images.entry(push.digest).or_default().tags.insert(push.tag.clone());
            "deploying"
        } else {
            self.record_tag(app, push);
            "skipped"
        }
    }

    /// Starts a rollout of `digest` unless the service runs it already (`false`).
    fn start(&mut self, app: usize, env: Environment, digest: u32, tag: &str, event_time: i64) -> bool {
        self.looks_at(app, env);
        self.env(app, env).exists = true;
        if self.env(app, env).running() == Some(digest) {
            return false;
        }
        if self.env(app, env).failed_by_circuit_breaker() {
            // Its FAILED event not delivered yet: rolled back by the breaker all the same.
            self.failed(app, env);
        } else if let Some(rollout) = self.env(app, env).rollout.as_mut().filter(|r| r.state == RState::InProgress) {
            rollout.state = RState::Superseded;
            self.note(app, env, "superseded");
        }
        let e = self.env(app, env);
        e.watch = None;
        let previous = e.primary().rev;
        e.revs.push(Some(digest));
        let rev = e.revs.len() - 1;
        let dep = self.update_service(app, env, rev);
        self.env(app, env).rollout = Some(Rollout {
            digest,
            tag: tag.to_owned(),
            tags: BTreeSet::from([tag.to_owned()]),
            rev,
            previous,
            dep,
            state: RState::InProgress,
            event_time,
            verified_at: 0,
            rolled_back_to: None,
        });
        self.note(app, env, if env == STAGE { "deploying" } else { "promoted" });
        true
    }

    /// deploy-monitor, one event.
    pub fn on_event(&mut self, event: Event) {
        let (app, env) = (event.app, event.env);
        let e = self.env(app, env);
        if event.name == EventName::InProgress || !e.exists {
            return;
        }
        let rollout = e.rollout.as_ref().filter(|r| r.dep == event.dep).map(|r| r.state);
        if let Some(state) = rollout {
            if state != RState::InProgress {
                return; // already handled
            }
            match event.name {
                EventName::Completed => self.completed(app, env),
                _ => self.failed(app, env),
            }
        } else if e.watch.as_ref().is_some_and(|w| w.dep == event.dep) {
            e.watch = None;
            if event.name == EventName::Failed {
                self.note(app, env, "failed");
            }
        } else {
            // A stale event: nothing changes (the library compares what runs with its record).
            self.looks_at(app, env);
        }
    }

    /// A completion of the rollout in progress: verified if its deployment is still primary.
    fn completed(&mut self, app: usize, env: Environment) {
        let e = self.env(app, env);
        let Some(rollout) = e.in_progress() else { return };
        let primary = e.primary();
        if primary.id != rollout.dep {
            return self.looks_at(app, env);
        }
        if primary.state == DepState::Failed {
            return self.failed(app, env);
        }
        self.clock += 1;
        let clock = self.clock;
        let model = &mut self.apps[app];
        let e = &mut model.envs[ix(env)];
        let Some(rollout) = e.rollout.as_mut() else { return };
        rollout.state = RState::Verified;
        rollout.verified_at = clock;
        e.last_verified = Some((rollout.digest, rollout.rev));
        let image = model.images.entry(rollout.digest).or_default();
        image.tags.extend(rollout.tags.iter().cloned());
        if env == STAGE {
            image.vetted_stage = Some(clock);
            for tag in &image.tags {
                model.tags.insert(tag.clone(), (rollout.digest, clock));
            }
        } else {
            image.vetted_prod = true;
        }
        self.note(app, env, "verified");
    }

    /// A failure of the rollout in progress: back to the last known-good revision, unless ECS's
    /// circuit breaker is already there (then no second rollback).
    fn failed(&mut self, app: usize, env: Environment) {
        let e = self.env(app, env);
        let Some(rollout) = e.in_progress().cloned() else { return };
        let primary = e.primary().clone();
        let (state, watch) = if primary.id != rollout.dep && primary.rev != rollout.rev {
            self.looks_at(app, env);
            (RState::RolledBack, Some(Watch { dep: primary.id, to: primary.rev }))
        } else {
            let (good_digest, good_rev) = e.last_verified.map_or((None, 0), |(d, rev)| (Some(d), rev));
            let previous_is_good = good_digest.is_some() && e.revs[rollout.previous] == good_digest;
            let target = if previous_is_good { rollout.previous } else { good_rev };
            if target == rollout.rev {
                (RState::Failed, None)
            } else {
                let dep = self.update_service(app, env, target);
                (RState::RolledBack, Some(Watch { dep, to: target }))
            }
        };
        let model = &mut self.apps[app];
        let e = &mut model.envs[ix(env)];
        if let Some(r) = e.rollout.as_mut() {
            r.state = state;
            r.rolled_back_to = watch.as_ref().map(|w| w.to);
        }
        e.watch = watch;
        let image = model.images.entry(rollout.digest).or_default();
        if env == STAGE {
            image.failed_stage = true;
        } else {
            image.failed_prod = true;
        }
        self.note(app, env, if state == RState::RolledBack { "rolled_back" } else { "failed" });
    }

    /// The scheduled sweep: every rollout and rollback in flight reconciled with ECS.
    pub fn sweep(&mut self) {
        for app in 0..APPS.len() {
            for env in [STAGE, PROD] {
                let e = self.env(app, env);
                if !e.exists {
                    continue;
                }
                let primary = e.primary().clone();
                if let Some(rollout) = e.in_progress().cloned() {
                    let ours = e.deps.iter().find(|d| d.id == rollout.dep).cloned();
                    match ours {
                        Some(d) if d.state == DepState::Failed => self.failed(app, env),
                        Some(d) if d.id == primary.id && d.state == DepState::Completed => self.completed(app, env),
                        Some(d) if d.id == primary.id => {}
                        _ if primary.rev == rollout.previous => self.failed(app, env),
                        _ => self.looks_at(app, env),
                    }
                } else if let Some(watch) = e.watch.clone() {
                    match e.deps.iter().find(|d| d.id == watch.dep).cloned() {
                        Some(d) if d.state == DepState::Failed => {
                            e.watch = None;
                            self.note(app, env, "failed");
                        }
                        Some(d) if d.id == primary.id && d.state == DepState::InProgress => {}
                        _ => e.watch = None,
                    }
                }
            }
        }
    }

    /// promote: the status, or the refusals the contract allows.
    pub fn promote(&mut self, app: usize, tag: &str, force: bool) -> Result<&'static str, Vec<&'static str>> {
        let paused = self.env(app, PROD).paused;
        let refuse = |why: &'static str| if paused { vec![why, "Paused"] } else { vec![why] };
        let Some(&(digest, _)) = self.apps[app].tags.get(tag) else { return Err(refuse("NotVetted")) };
        let image = &self.apps[app].images[&digest];
        if (image.failed_stage || image.failed_prod) && !force {
            return Err(refuse("NotVetted"));
        }
        if paused {
            return Err(vec!["Paused"]);
        }
        let deploying = self.start(app, PROD, digest, tag, i64::MAX);
        Ok(if deploying { "deploying" } else { "already_deployed" })
    }

    pub fn pause(&mut self, app: usize, env: Environment) {
        let e = self.env(app, env);
        e.exists = true;
        if !e.paused {
            e.paused = true;
            self.note(app, env, "paused");
        }
    }

    /// Resume; the held push it reports (newer than the rollout, if any).
    pub fn resume(&mut self, app: usize, env: Environment) -> Option<Push> {
        let e = self.env(app, env);
        e.exists = true;
        let was_paused = std::mem::replace(&mut e.paused, false);
        let held = e.held.clone().filter(|h| e.rollout.as_ref().is_none_or(|r| r.event_time < h.time));
        if was_paused {
            self.note(app, env, "resumed");
        }
        held
    }
}
