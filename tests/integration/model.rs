//! Model-based test: random sequences of what happens around Conveyor, run against the real
//! library on the local AWS and against a small pure model of the contract
//! (`../shared/docs/contract.md`); after **every** step the state table, ECS and the notifications
//! must say what the model says.
//!
//! The operations: pushes (a new image, the same image under a second tag in the same second, a
//! tag pushed again with another image, a late push older than the newest seen, a repeated
//! delivery of an earlier push); ECS completing or failing the primary deployment of a service
//! (with or without the circuit breaker rolling it back), its events delivered at once, late (after
//! other steps, in any order) or twice; the sweep; promotions (of a promotable tag, of a tag never
//! vetted or whose image failed — refused —, forced); pausing and resuming stage and prod (a resume
//! of stage may deliver the held push again, as `conveyor resume --deploy-latest` does).
//!
//! Two apps share the repository: `api` deploys every tag, `web` only version tags (`vX.Y.Z`), so
//! one push means different things to each.
//!
//! What the model predicts and the test compares after each step:
//! - ECS: every deployment of the four services (primary or not, rollout state, revision), the
//!   image of every revision, and one registered revision per rollout;
//! - the state table: each environment's record (exists, paused, the rollout's digest, tag and
//!   state, the last verified digest, the rollback being watched), every image item (tags,
//!   verified and failed in which environment) and every tag item (the digest stage most recently
//!   verified under it);
//! - the notifications published in the step (app, environment, outcome), exactly once each;
//! - what each call answered: stage-deploy's status per app, promote's status or refusal, resume's
//!   held push.
//!
//! Modes (environment variables):
//! - default (CI): 30 sequences of 25 steps, seeds 1..=30;
//! - `CONVEYOR_MODEL=long` (what `make soak` sets): 500 sequences of 60 steps, seeds from a base
//!   taken from the clock (printed) unless `CONVEYOR_MODEL_SEED_BASE` is set;
//! - `CONVEYOR_MODEL_SEED=<n>`: only the sequence of seed `n` (replay a failure; its steps are
//!   printed as they run);
//! - `CONVEYOR_MODEL_STEPS=<k>`, `CONVEYOR_MODEL_SEQUENCES=<n>`: another length or count.
//!
//! A sequence that disagrees with the model stops there and prints its seed, its operations and
//! the disagreement. Disagreements that are known library bugs (the model keeps asserting the
//! contract) are listed in [`KNOWN_BUGS`]: a sequence stopped by one is printed under that name
//! instead of failing the test; any other disagreement fails it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use chrono::{DateTime, Utc};
use conveyor::types::{AppName, Environment};
use conveyor::vocabulary::Action;
use conveyor::Conveyor;
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::rng::Rng;
use conveyor_testkit::world::{digest, AppFixture};
use conveyor_testkit::World;
use serde_json::{json, Value};

use crate::support::{conveyor, invocation};

const REPOSITORY: &str = "shop";
/// The apps fed by [`REPOSITORY`]: `api` deploys every tag but `latest`, `web` version tags only.
const APPS: [&str; 2] = ["api", "web"];
const WEB_TAGS: &str = "^v[0-9]+\\.[0-9]+\\.[0-9]+$";
const STAGE: Environment = Environment::Stage;
const PROD: Environment = Environment::Prod;

/// A known library bug: the model keeps asserting the contract; a sequence that disagrees with it
/// in a step where the bug's precondition held (the model says when) stops there and is printed
/// under the bug's name instead of failing the test.
struct KnownBug {
    name: &'static str,
    what: &'static str,
}

/// Precondition: a service runs a revision Conveyor registered for an earlier rollout that its
/// record no longer names (ECS's circuit breaker went back to the last deployment that completed,
/// whose completion Conveyor never heard of), and Conveyor looks at the service.
const ADOPTS_AN_OLDER_REVISION: &str = "adopts-an-older-revision";

const KNOWN_BUGS: &[KnownBug] = &[KnownBug {
    name: ADOPTS_AN_OLDER_REVISION,
    what: "a revision Conveyor registered for an earlier, superseded rollout, found running (ECS's circuit \
           breaker rolled back to it), is adopted as a new rollout (`deploying`/`promoted` announced again, the \
           failed rollout `superseded`, its image not marked failed) instead of the failed rollout being \
           `rolled_back` by the circuit breaker. The FAILED event's path knows it (src/monitor/decide.rs \
           failure_plan: a deployment the circuit breaker failed); a push that comes first does not \
           (src/rollout/start.rs note_what_runs adopts any unnamed revision carrying Conveyor's tags)",
}];

// ------------------------------------------------------------------------------------------------
// The model
// ------------------------------------------------------------------------------------------------

fn ix(env: Environment) -> usize {
    match env {
        Environment::Stage => 0,
        Environment::Prod => 1,
    }
}

fn is_version(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix('v') else { return false };
    let parts: Vec<&str> = rest.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Whether app `app` deploys `tag` (its `tags` pattern).
fn admits(app: usize, tag: &str) -> bool {
    if app == 0 {
        tag != "latest"
    } else {
        is_version(tag)
    }
}

/// A push event: `tag` of image `digest(digest)` at `time` (seconds after the sequence's base).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Push {
    tag: String,
    digest: u32,
    time: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DepState {
    InProgress,
    Completed,
    Failed,
}

impl DepState {
    fn ecs(self) -> &'static str {
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
struct Dep {
    id: u32,
    rev: usize,
    state: DepState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RState {
    InProgress,
    Verified,
    RolledBack,
    Failed,
    Superseded,
}

impl RState {
    fn kind(self) -> &'static str {
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
struct Rollout {
    digest: u32,
    tag: String,
    tags: BTreeSet<String>,
    rev: usize,
    previous: usize,
    dep: u32,
    state: RState,
    event_time: i64,
    verified_at: u64,
    rolled_back_to: Option<usize>,
}

/// A rollback deployment being watched.
#[derive(Debug, Clone)]
struct Watch {
    dep: u32,
    to: usize,
}

/// One app in one environment: its ECS service and what Conveyor knows of it.
#[derive(Debug, Clone)]
struct EnvModel {
    /// Conveyor has a record of it.
    exists: bool,
    /// The image of every revision of the family (`None`: the seeded one, by tag).
    revs: Vec<Option<u32>>,
    /// ECS's deployments, primary first.
    deps: Vec<Dep>,
    /// The newest push time seen, with the (digest, tag) of that second.
    mark: Option<(i64, Vec<(u32, String)>)>,
    held: Option<Push>,
    paused: bool,
    rollout: Option<Rollout>,
    /// (digest, revision).
    last_verified: Option<(u32, usize)>,
    watch: Option<Watch>,
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

    fn primary(&self) -> &Dep {
        &self.deps[0]
    }

    fn running(&self) -> Option<u32> {
        self.revs[self.primary().rev]
    }

    fn in_progress(&self) -> Option<&Rollout> {
        self.rollout.as_ref().filter(|r| r.state == RState::InProgress)
    }

    /// The revisions Conveyor's record names (what the library takes as its own doing).
    fn names(&self, rev: usize) -> bool {
        let rollout = self.rollout.iter().flat_map(|r| [Some(r.rev), Some(r.previous), r.rolled_back_to]);
        let others = [Some(0), self.last_verified.map(|(_, rev)| rev), self.watch.as_ref().map(|w| w.to)];
        rollout.chain(others).flatten().any(|known| known == rev)
    }
}

#[derive(Debug, Clone, Default)]
struct ImageModel {
    tags: BTreeSet<String>,
    vetted_stage: Option<u64>,
    vetted_prod: bool,
    failed_stage: bool,
    failed_prod: bool,
}

#[derive(Debug, Clone)]
struct AppModel {
    envs: [EnvModel; 2],
    images: BTreeMap<u32, ImageModel>,
    /// Tag => (digest, when stage verified it).
    tags: BTreeMap<String, (u32, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventName {
    Completed,
    Failed,
    InProgress,
}

/// A deployment state change ECS emitted.
#[derive(Debug, Clone, Copy)]
struct Event {
    app: usize,
    env: Environment,
    name: EventName,
    dep: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
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

struct Model {
    apps: Vec<AppModel>,
    clock: u64,
    next_dep: u32,
    notes: Vec<Note>,
    /// The known bugs whose precondition held in this step.
    hazards: Vec<&'static str>,
}

impl Model {
    fn new() -> Self {
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
        Model { apps, clock: 0, next_dep, notes: Vec::new(), hazards: Vec::new() }
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
            self.hazards.push(ADOPTS_AN_OLDER_REVISION);
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
    fn settle(&mut self, app: usize, env: Environment, outcome: Outcome) -> Vec<Event> {
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
    fn push(&mut self, push: &Push) -> Vec<&'static str> {
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
        if let Some(rollout) = self.env(app, env).rollout.as_mut().filter(|r| r.state == RState::InProgress) {
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
    fn on_event(&mut self, event: Event) {
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
    fn sweep(&mut self) {
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
    fn promote(&mut self, app: usize, tag: &str, force: bool) -> Result<&'static str, Vec<&'static str>> {
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

    fn pause(&mut self, app: usize, env: Environment) {
        let e = self.env(app, env);
        e.exists = true;
        if !e.paused {
            e.paused = true;
            self.note(app, env, "paused");
        }
    }

    /// Resume; the held push it reports (newer than the rollout, if any).
    fn resume(&mut self, app: usize, env: Environment) -> Option<Push> {
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

// ------------------------------------------------------------------------------------------------
// Operations
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// A push delivered for the first time (`what`: new, same-second tag, retag, late, ...).
    Push {
        push: Push,
        what: &'static str,
    },
    /// An earlier push delivered again.
    Repeat {
        push: Push,
    },
    /// ECS settles the primary deployment; its events delivered now or kept for later.
    Settle {
        app: usize,
        env: Environment,
        outcome: Outcome,
        deliver: bool,
    },
    /// A kept event delivered (late).
    DeliverLate {
        index: usize,
    },
    /// A delivered event delivered again.
    DeliverAgain {
        index: usize,
    },
    Sweep,
    Promote {
        app: usize,
        tag: String,
        force: bool,
    },
    Pause {
        app: usize,
        env: Environment,
    },
    Resume {
        app: usize,
        env: Environment,
        deploy_latest: bool,
    },
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = |push: &Push| format!("{} d{} t+{}", push.tag, push.digest, push.time);
        match self {
            Op::Push { push, what } => write!(f, "push ({what}) {}", p(push)),
            Op::Repeat { push } => write!(f, "push again {}", p(push)),
            Op::Settle { app, env, outcome, deliver } => write!(
                f,
                "ECS {outcome:?} {} {}{}",
                APPS[*app],
                env.as_str(),
                if *deliver { "" } else { " (events kept for later)" }
            ),
            Op::DeliverLate { index } => write!(f, "deliver kept event #{index}"),
            Op::DeliverAgain { index } => write!(f, "deliver event #{index} again"),
            Op::Sweep => write!(f, "sweep"),
            Op::Promote { app, tag, force } => {
                write!(f, "promote {} {tag}{}", APPS[*app], if *force { " --force" } else { "" })
            }
            Op::Pause { app, env } => write!(f, "pause {} {}", APPS[*app], env.as_str()),
            Op::Resume { app, env, deploy_latest } => write!(
                f,
                "resume {} {}{}",
                APPS[*app],
                env.as_str(),
                if *deploy_latest { " --deploy-latest" } else { "" }
            ),
        }
    }
}

/// A deployment event as ECS emitted it, with the model's reading of it.
#[derive(Debug, Clone)]
struct Emitted {
    event: Event,
    json: Value,
}

// ------------------------------------------------------------------------------------------------
// One sequence: the real library and the model side by side
// ------------------------------------------------------------------------------------------------

struct Sequence {
    seed: u64,
    rng: Rng,
    world: World,
    conveyor: Conveyor,
    fixtures: Vec<AppFixture>,
    model: Model,
    base: DateTime<Utc>,
    pushes: Vec<Push>,
    newest: i64,
    next_digest: u32,
    next_tag: u32,
    kept: Vec<Emitted>,
    delivered: Vec<Emitted>,
    /// Model deployment id => ECS's.
    ids: HashMap<u32, String>,
    /// Revision ARNs whose image was checked.
    checked_revisions: BTreeSet<String>,
    ops: Vec<String>,
    verbose: bool,
}

/// How a sequence ended badly.
struct Disagreement {
    seed: u64,
    step: usize,
    ops: Vec<String>,
    message: String,
    /// The known bug whose precondition held in that step.
    known: Option<&'static str>,
}

impl Sequence {
    async fn new(seed: u64, verbose: bool) -> Sequence {
        let world = World::new().await;
        let mut fixtures = Vec::new();
        for (n, app) in APPS.iter().enumerate() {
            let extra = if n == 1 { json!({ "tags": WEB_TAGS }) } else { json!({}) };
            fixtures.push(world.seed_app(app, REPOSITORY, false, extra).await);
        }
        let now = Utc::now() - chrono::Duration::hours(2);
        Sequence {
            seed,
            rng: Rng::new(seed),
            conveyor: conveyor(&world),
            world,
            fixtures,
            model: Model::new(),
            base: DateTime::from_timestamp(now.timestamp(), 0).unwrap(),
            pushes: Vec::new(),
            newest: 100,
            next_digest: 0,
            next_tag: 0,
            kept: Vec::new(),
            delivered: Vec::new(),
            ids: HashMap::new(),
            checked_revisions: BTreeSet::new(),
            ops: Vec::new(),
            verbose,
        }
    }

    fn new_digest(&mut self) -> u32 {
        self.next_digest += 1;
        self.next_digest
    }

    /// A tag never pushed: a version (both apps) or a commit id (only `api`).
    fn new_tag(&mut self) -> String {
        self.next_tag += 1;
        if self.rng.chance(0.7) {
            format!("v1.{}.0", self.next_tag)
        } else {
            format!("{:07x}", 0x0c0f_fee0 + self.next_tag)
        }
    }

    /// The next operation, drawn from what makes sense in the model's state.
    fn next_op(&mut self) -> Op {
        let settleable: Vec<(usize, Environment)> = (0..APPS.len())
            .flat_map(|app| [STAGE, PROD].map(|env| (app, env)))
            .filter(|&(app, env)| self.model.apps[app].envs[ix(env)].primary().state == DepState::InProgress)
            .collect();
        let weights = [
            20,                                            // new push
            if self.pushes.is_empty() { 0 } else { 4 },    // second tag, same second
            if self.pushes.is_empty() { 0 } else { 3 },    // another image, same second
            if self.pushes.is_empty() { 0 } else { 5 },    // late push
            if self.pushes.is_empty() { 0 } else { 5 },    // repeated delivery
            if settleable.is_empty() { 0 } else { 24 },    // ECS settles
            if self.kept.is_empty() { 0 } else { 6 },      // late event
            if self.delivered.is_empty() { 0 } else { 3 }, // repeated event
            4,                                             // sweep
            10,                                            // promote
            5,                                             // pause / resume
        ];
        match self.rng.weighted(&weights) {
            0 => {
                let digest = self.new_digest();
                let tag = if self.pushes.is_empty() || self.rng.chance(0.8) {
                    self.new_tag()
                } else {
                    self.rng.pick(&self.pushes).tag.clone()
                };
                self.newest += 1 + self.rng.below(3) as i64;
                let what = if self.pushes.iter().any(|p| p.tag == tag) { "tag pushed again" } else { "new" };
                Op::Push { push: Push { tag, digest, time: self.newest }, what }
            }
            1 => {
                let last = self.pushes.iter().rfind(|p| p.time == self.newest).cloned();
                let last = last.unwrap_or_else(|| self.pushes[self.pushes.len() - 1].clone());
                let tag = self.new_tag();
                Op::Push { push: Push { tag, digest: last.digest, time: last.time }, what: "second tag, same second" }
            }
            2 => {
                let digest = self.new_digest();
                let tag = self.new_tag();
                Op::Push { push: Push { tag, digest, time: self.newest }, what: "another image, same second" }
            }
            3 => {
                let digest = if self.rng.chance(0.5) { self.new_digest() } else { self.rng.pick(&self.pushes).digest };
                let tag = self.new_tag();
                let time = self.newest - 1 - self.rng.below(6) as i64;
                Op::Push { push: Push { tag, digest, time }, what: "late" }
            }
            4 => Op::Repeat { push: self.rng.pick(&self.pushes).clone() },
            5 => {
                let (app, env) = *self.rng.pick(&settleable);
                let outcome = *self.rng.pick(&[
                    Outcome::Complete,
                    Outcome::Complete,
                    Outcome::Complete,
                    Outcome::Fail,
                    Outcome::FailWithCircuitBreaker,
                    Outcome::FailWithCircuitBreaker,
                ]);
                Op::Settle { app, env, outcome, deliver: self.rng.chance(0.8) }
            }
            6 => Op::DeliverLate { index: self.rng.below(self.kept.len()) },
            7 => Op::DeliverAgain { index: self.rng.below(self.delivered.len()) },
            8 => Op::Sweep,
            9 => {
                let app = self.rng.below(APPS.len());
                let vetted: Vec<String> = self.model.apps[app].tags.keys().cloned().collect();
                let tag = if !vetted.is_empty() && self.rng.chance(0.7) {
                    self.rng.pick(&vetted).clone()
                } else if !self.pushes.is_empty() && self.rng.chance(0.7) {
                    self.rng.pick(&self.pushes).tag.clone()
                } else {
                    "v9.9.9".to_owned()
                };
                Op::Promote { app, tag, force: self.rng.chance(0.15) }
            }
            _ => {
                let app = self.rng.below(APPS.len());
                let env = if self.rng.chance(0.6) { STAGE } else { PROD };
                if self.model.apps[app].envs[ix(env)].paused {
                    Op::Resume { app, env, deploy_latest: env == STAGE && self.rng.chance(0.6) }
                } else {
                    Op::Pause { app, env }
                }
            }
        }
    }

    fn time(&self, seconds: i64) -> DateTime<Utc> {
        self.base + chrono::Duration::seconds(seconds)
    }

    fn push_json(&self, push: &Push) -> Value {
        self.world.push_event(REPOSITORY, &push.tag, &digest(push.digest), self.time(push.time))
    }

    /// Runs `op` on both sides; compares what the calls answered.
    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Push { push, .. } | Op::Repeat { push } => {
                if matches!(op, Op::Push { .. }) {
                    self.pushes.push(push.clone());
                }
                self.deliver_push(push).await
            }
            Op::Settle { app, env, outcome, deliver } => {
                let fixture = &self.fixtures[*app];
                let service = if *env == STAGE { &fixture.stage } else { &fixture.prod };
                let settle = match outcome {
                    Outcome::Complete => Settle::Complete,
                    Outcome::Fail => Settle::Fail { circuit_breaker_rollback: false },
                    Outcome::FailWithCircuitBreaker => Settle::Fail { circuit_breaker_rollback: true },
                };
                let real = self.world.aws.settle(&service.cluster, &service.service, settle).await;
                let expected = self.model.settle(*app, *env, *outcome);
                if real.len() != expected.len() {
                    return Err(format!("ECS emitted {} events, the model {}: {real:?}", real.len(), expected.len()));
                }
                for (event, json) in expected.into_iter().zip(real) {
                    let name = json["detail"]["eventName"].as_str().unwrap_or_default();
                    let wanted = match event.name {
                        EventName::Completed => "SERVICE_DEPLOYMENT_COMPLETED",
                        EventName::Failed => "SERVICE_DEPLOYMENT_FAILED",
                        EventName::InProgress => "SERVICE_DEPLOYMENT_IN_PROGRESS",
                    };
                    if name != wanted {
                        return Err(format!("ECS emitted {name}, the model expected {wanted}"));
                    }
                    let emitted = Emitted { event, json };
                    if *deliver {
                        self.deliver_event(&emitted).await?;
                        self.delivered.push(emitted);
                    } else {
                        self.kept.push(emitted);
                    }
                }
                Ok(())
            }
            Op::DeliverLate { index } => {
                let emitted = self.kept.remove(*index);
                self.deliver_event(&emitted).await?;
                self.delivered.push(emitted);
                Ok(())
            }
            Op::DeliverAgain { index } => {
                let emitted = self.delivered[*index].clone();
                self.deliver_event(&emitted).await
            }
            Op::Sweep => {
                let report = conveyor::monitor::handle(&self.conveyor, self.world.schedule_event(), &invocation())
                    .await
                    .map_err(|e| format!("the sweep failed: {e}"))?;
                if let Some(error) = report.results.iter().find(|r| r.action == Action::Error) {
                    return Err(format!("the sweep reported an error: {error:?}"));
                }
                self.model.sweep();
                Ok(())
            }
            Op::Promote { app, tag, force } => {
                let request = json!({ "app": APPS[*app], "tag": tag, "force": force });
                let real = conveyor::promote::handle(&self.conveyor, request, &invocation()).await;
                let expected = self.model.promote(*app, tag, *force);
                match (&real, &expected) {
                    (Ok(answer), Ok(status)) if answer.status.as_str() == *status => Ok(()),
                    (Err(error), Err(allowed)) if allowed.contains(&error.error_type().as_str()) => Ok(()),
                    _ => Err(format!(
                        "promote answered {:?}, the model expected {expected:?}",
                        real.map(|a| a.status).map_err(|e| format!("{}: {e}", e.error_type()))
                    )),
                }
            }
            Op::Pause { app, env } => {
                let config = self.conveyor.config.get(&self.conveyor.clients.ssm).await.unwrap();
                let app_config = config.app(&AppName::parse(APPS[*app]).unwrap()).unwrap();
                conveyor::pause::pause(&self.conveyor, app_config, *env, "model", "model-test", &invocation())
                    .await
                    .map_err(|e| format!("pause failed: {e}"))?;
                self.model.pause(*app, *env);
                Ok(())
            }
            Op::Resume { app, env, deploy_latest } => {
                let config = self.conveyor.config.get(&self.conveyor.clients.ssm).await.unwrap();
                let app_config = config.app(&AppName::parse(APPS[*app]).unwrap()).unwrap();
                let report = conveyor::pause::resume(&self.conveyor, app_config, *env, "model-test", &invocation())
                    .await
                    .map_err(|e| format!("resume failed: {e}"))?;
                let expected = self.model.resume(*app, *env);
                let real = report.held_push.as_ref().map(|h| (h.tag.to_string(), h.digest.to_string()));
                let wanted = expected.as_ref().map(|h| (h.tag.clone(), digest(h.digest)));
                if real != wanted {
                    return Err(format!("resume reported the held push {real:?}, the model {wanted:?}"));
                }
                match expected {
                    Some(held) if *deploy_latest => self.deliver_push(&held).await,
                    _ => Ok(()),
                }
            }
        }
    }

    async fn deliver_push(&mut self, push: &Push) -> Result<(), String> {
        let report = conveyor::stage::handle(&self.conveyor, self.push_json(push), &invocation())
            .await
            .map_err(|e| format!("stage-deploy failed: {e}"))?;
        let expected = self.model.push(push);
        let real: Vec<&str> = APPS
            .iter()
            .map(|app| report.apps.iter().find(|a| a.app == *app).map_or("(absent)", |a| a.status.as_str()))
            .collect();
        if real != expected {
            return Err(format!("stage-deploy reported {real:?}, the model expected {expected:?}: {report:?}"));
        }
        Ok(())
    }

    async fn deliver_event(&mut self, emitted: &Emitted) -> Result<(), String> {
        let real_id = emitted.json["detail"]["deploymentId"].as_str().unwrap_or_default();
        if let Some(known) = self.ids.get(&emitted.event.dep) {
            if known != real_id {
                return Err(format!("event for {real_id}, the model's deployment is {known}"));
            }
        }
        conveyor::monitor::handle(&self.conveyor, emitted.json.clone(), &invocation())
            .await
            .map_err(|e| format!("deploy-monitor failed on {}: {e}", emitted.json["detail"]))?;
        self.model.on_event(emitted.event);
        Ok(())
    }

    /// Everything observable agrees with the model.
    async fn check(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        self.check_notifications(&mut problems).await;
        for env in [STAGE, PROD] {
            self.check_ecs(env, &mut problems).await;
        }
        self.check_registrations(&mut problems).await;
        self.check_table(&mut problems).await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    async fn check_notifications(&mut self, problems: &mut Vec<String>) {
        let name = |app: usize, env: Environment, outcome: &str| format!("{} {} {outcome}", APPS[app], env.as_str());
        let mut expected: Vec<String> = self.model.notes.drain(..).map(|(a, e, o)| name(a, e, o)).collect();
        let mut real: Vec<String> = self
            .world
            .notifications()
            .await
            .iter()
            .map(|n| {
                let a = &n["MessageAttributes"];
                format!(
                    "{} {} {}",
                    a["app"].as_str().unwrap_or("?"),
                    a["environment"].as_str().unwrap_or("?"),
                    a["outcome"].as_str().unwrap_or("?")
                )
            })
            .collect();
        expected.sort();
        real.sort();
        if real != expected {
            problems.push(format!("notifications: published {real:?}, the model expected {expected:?}"));
        }
    }

    /// Both apps' services in `env` (one cluster): every deployment, and every revision's image.
    async fn check_ecs(&mut self, env: Environment, problems: &mut Vec<String>) {
        let cluster = if env == STAGE { &self.fixtures[0].stage.cluster } else { &self.fixtures[0].prod.cluster };
        let described =
            self.world.ecs.describe_services().cluster(cluster).services(APPS[0]).services(APPS[1]).send().await;
        let services = described.unwrap().services.unwrap_or_default();
        for (app, name) in APPS.iter().enumerate() {
            let Some(service) = services.iter().find(|s| s.service_name() == Some(*name)) else {
                problems.push(format!("{name} {}: no such service", env.as_str()));
                continue;
            };
            self.check_service(app, env, service, problems).await;
        }
    }

    async fn check_service(
        &mut self,
        app: usize,
        env: Environment,
        service: &aws_sdk_ecs::types::Service,
        problems: &mut Vec<String>,
    ) {
        let model = &self.model.apps[app].envs[ix(env)];
        let at = format!("{} {}", APPS[app], env.as_str());
        let revision = |arn: &str| arn.rsplit(':').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        let real: Vec<(String, bool, String, usize, String)> = service
            .deployments()
            .iter()
            .map(|d| {
                let arn = d.task_definition().unwrap_or_default();
                (
                    d.id().unwrap_or_default().to_owned(),
                    d.status() == Some("PRIMARY"),
                    d.rollout_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                    revision(arn),
                    arn.to_owned(),
                )
            })
            .collect();
        let shape: Vec<(bool, String, usize)> = real.iter().map(|(_, p, s, n, _)| (*p, s.clone(), *n)).collect();
        let wanted: Vec<(bool, String, usize)> =
            model.deps.iter().enumerate().map(|(i, d)| (i == 0, d.state.ecs().to_owned(), d.rev + 1)).collect();
        if shape != wanted {
            problems.push(format!("{at}: ECS deployments (primary, state, revision) {shape:?}, the model {wanted:?}"));
            return;
        }
        for ((real_id, ..), dep) in real.iter().zip(&model.deps) {
            match self.ids.get(&dep.id) {
                Some(known) if known != real_id => {
                    problems.push(format!("{at}: deployment {} is {known} in ECS, now {real_id}", dep.id))
                }
                Some(_) => {}
                None => {
                    self.ids.insert(dep.id, real_id.clone());
                }
            }
        }
        for (.., number, arn) in real {
            if self.checked_revisions.contains(&arn) {
                continue;
            }
            let (definition, _) = self.world.task_definition(&arn).await;
            let image = definition
                .container_definitions()
                .iter()
                .find(|c| c.name() == Some("api"))
                .and_then(|c| c.image())
                .unwrap_or_default()
                .to_owned();
            let wanted = model.revs[number - 1];
            let ok = match wanted {
                Some(n) => image.ends_with(&format!("@{}", digest(n))),
                None => image.ends_with(":v0.9.0"),
            };
            if ok {
                self.checked_revisions.insert(arn);
            } else {
                problems
                    .push(format!("{at}: {arn} runs {image}, the model expects {:?}", wanted.map(|n| format!("d{n}"))));
            }
        }
    }

    /// One registered revision per rollout (the seeded ones aside).
    async fn check_registrations(&mut self, problems: &mut Vec<String>) {
        let calls = self.world.aws.calls(&self.world.id).await;
        let registered = calls.get("RegisterTaskDefinition").copied().unwrap_or(0) as usize;
        let seeded = 2 * APPS.len();
        let wanted: usize = self.model.apps.iter().flat_map(|a| &a.envs).map(|e| e.revs.len() - 1).sum();
        if registered != seeded + wanted {
            problems.push(format!(
                "{} task-definition revisions registered, the model expects {wanted} (one per rollout)",
                registered - seeded
            ));
        }
    }

    async fn check_table(&mut self, problems: &mut Vec<String>) {
        let items = self.world.items().await;
        let digests: HashMap<String, u32> = (1..=self.next_digest).map(|n| (digest(n), n)).collect();
        for (app, name) in APPS.iter().enumerate() {
            let pk = format!("APP#{name}");
            let mine: Vec<&Value> = items.iter().filter(|i| i["pk"] == pk.as_str()).collect();
            let sk = |item: &Value| item["sk"].as_str().unwrap_or_default().to_owned();
            let model = &self.model.apps[app];
            for env in [STAGE, PROD] {
                let at = format!("{name} {}", env.as_str());
                let record = mine.iter().find(|i| sk(i) == format!("ENV#{}", env.as_str())).map(|i| &i["state"]);
                let m = &model.envs[ix(env)];
                let Some(state) = record.filter(|s| !s.is_null()) else {
                    if m.exists {
                        problems.push(format!("{at}: no record, the model has one"));
                    }
                    continue;
                };
                if !m.exists {
                    problems.push(format!("{at}: a record the model does not have: {state}"));
                    continue;
                }
                let paused = state["paused"].is_object();
                if paused != m.paused {
                    problems.push(format!("{at}: paused {paused}, the model {}", m.paused));
                }
                let rollout = state["rollout"].is_object().then(|| {
                    (
                        state["rollout"]["digest"].as_str().unwrap_or_default().to_owned(),
                        state["rollout"]["tag"].as_str().unwrap_or_default().to_owned(),
                        state["rollout"]["state"]["kind"].as_str().unwrap_or_default().to_owned(),
                    )
                });
                let wanted = m.rollout.as_ref().map(|r| (digest(r.digest), r.tag.clone(), r.state.kind().to_owned()));
                if rollout != wanted {
                    problems.push(format!("{at}: rollout (digest, tag, state) {rollout:?}, the model {wanted:?}"));
                }
                let verified = state["last_verified"]["digest"].as_str().map(str::to_owned);
                let wanted = m.last_verified.map(|(d, _)| digest(d));
                if verified != wanted {
                    problems.push(format!("{at}: last verified {verified:?}, the model {wanted:?}"));
                }
                let watching = state["rollback"].is_object().then(|| {
                    let to = state["rollback"]["to"].as_str().unwrap_or_default();
                    to.rsplit(':').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0)
                });
                let wanted = m.watch.as_ref().map(|w| w.to + 1);
                if watching != wanted {
                    problems.push(format!("{at}: watching a rollback to revision {watching:?}, the model {wanted:?}"));
                }
            }
            // Image items.
            let mut images: BTreeMap<u32, ImageModel> = BTreeMap::new();
            for item in mine.iter().filter(|i| sk(i).starts_with("IMAGE#")) {
                let Some(&n) = digests.get(&sk(item)["IMAGE#".len()..]) else {
                    problems.push(format!("{name}: an image item of an unknown digest: {item}"));
                    continue;
                };
                let tags =
                    item["tags"].as_array().map(|t| t.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect());
                let present = |key: &str| !item[key].is_null();
                images.insert(
                    n,
                    ImageModel {
                        tags: tags.unwrap_or_default(),
                        vetted_stage: present("vetted_stage").then_some(0),
                        vetted_prod: present("vetted_prod"),
                        failed_stage: present("failed_stage"),
                        failed_prod: present("failed_prod"),
                    },
                );
            }
            let summary = |images: &BTreeMap<u32, ImageModel>| -> Vec<String> {
                images
                    .iter()
                    .map(|(n, i)| {
                        format!(
                            "d{n} {:?}{}{}{}{}",
                            i.tags,
                            if i.vetted_stage.is_some() { " vetted:stage" } else { "" },
                            if i.vetted_prod { " vetted:prod" } else { "" },
                            if i.failed_stage { " failed:stage" } else { "" },
                            if i.failed_prod { " failed:prod" } else { "" }
                        )
                    })
                    .collect()
            };
            let (real, wanted) = (summary(&images), summary(&model.images));
            if real != wanted {
                problems.push(format!("{name}: images {real:?}, the model {wanted:?}"));
            }
            // Tag items.
            let tags: BTreeMap<String, String> = mine
                .iter()
                .filter(|i| sk(i).starts_with("TAG#"))
                .map(|i| (sk(i)["TAG#".len()..].to_owned(), i["digest"].as_str().unwrap_or_default().to_owned()))
                .collect();
            let wanted: BTreeMap<String, String> =
                model.tags.iter().map(|(t, (d, _))| (t.clone(), digest(*d))).collect();
            if tags != wanted {
                let short = |m: &BTreeMap<String, String>| -> Vec<String> {
                    m.iter().map(|(t, d)| format!("{t}=d{}", digests.get(d).copied().unwrap_or(0))).collect()
                };
                problems.push(format!("{name}: tags {:?}, the model {:?}", short(&tags), short(&wanted)));
            }
        }
    }

    /// Runs `steps` operations, checking after each.
    async fn run(mut self, steps: usize) -> Result<(u64, usize), Disagreement> {
        for step in 0..steps {
            let op = self.next_op();
            self.model.hazards.clear();
            self.ops.push(format!("{step:3}: {op}"));
            if self.verbose {
                println!("model seed {}: {}", self.seed, self.ops[self.ops.len() - 1]);
            }
            let result = match self.apply(&op).await {
                Ok(()) => self.check().await,
                Err(error) => {
                    // Say what else differs too.
                    let more = self.check().await.err().map(|m| format!("\n{m}")).unwrap_or_default();
                    Err(format!("{error}{more}"))
                }
            };
            if let Err(message) = result {
                let known = self.model.hazards.first().copied();
                return Err(Disagreement { seed: self.seed, step, ops: self.ops, message, known });
            }
        }
        Ok((self.seed, steps))
    }
}

// ------------------------------------------------------------------------------------------------
// The test
// ------------------------------------------------------------------------------------------------

struct Mode {
    name: &'static str,
    seeds: Vec<u64>,
    steps: usize,
    parallel: usize,
    verbose: bool,
}

impl Mode {
    fn from_env() -> Mode {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number =
            |name: &str| var(name).map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}={v}: not a number")));
        let long = var("CONVEYOR_MODEL").is_some_and(|v| v == "long");
        let (name, sequences, steps) = if long { ("long", 500, 60) } else { ("ci", 30, 25) };
        let steps = number("CONVEYOR_MODEL_STEPS").map_or(steps, |s| s as usize);
        let sequences = number("CONVEYOR_MODEL_SEQUENCES").unwrap_or(sequences);
        if let Some(seed) = number("CONVEYOR_MODEL_SEED") {
            return Mode { name: "replay", seeds: vec![seed], steps, parallel: 1, verbose: true };
        }
        let base = number("CONVEYOR_MODEL_SEED_BASE").unwrap_or_else(|| {
            if long {
                Utc::now().timestamp() as u64 * 1000
            } else {
                1
            }
        });
        Mode { name, seeds: (base..base + sequences).collect(), steps, parallel: 3, verbose: false }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_does_what_the_model_of_the_contract_says_after_every_step() {
    let mode = Mode::from_env();
    let started = Instant::now();
    println!(
        "model: {} mode, {} sequences x {} steps, seeds {}..={}",
        mode.name,
        mode.seeds.len(),
        mode.steps,
        mode.seeds[0],
        mode.seeds[mode.seeds.len() - 1]
    );
    let mut pending = mode.seeds.clone().into_iter();
    let mut running = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    let mut steps_run = 0;
    loop {
        while running.len() < mode.parallel {
            let Some(seed) = pending.next() else { break };
            let (steps, verbose) = (mode.steps, mode.verbose);
            running.spawn(async move { Sequence::new(seed, verbose).await.run(steps).await });
        }
        let Some(done) = running.join_next().await else { break };
        match done.expect("a sequence panicked") {
            Ok((seed, steps)) => {
                steps_run += steps;
                println!("model: seed {seed}: {steps} steps agree");
            }
            Err(disagreement) => {
                steps_run += disagreement.step + 1;
                let known = disagreement.known.map(|bug| format!(" (known bug {bug})")).unwrap_or_default();
                println!("model: seed {}: disagrees at step {}{known}", disagreement.seed, disagreement.step);
                failures.push(disagreement);
            }
        }
    }
    failures.sort_by_key(|f| f.seed);
    let (known, unknown): (Vec<&Disagreement>, Vec<&Disagreement>) = failures.iter().partition(|f| f.known.is_some());
    println!(
        "model: {} sequences, {steps_run} steps in {:.1} s; {} stopped by a known bug, {} disagreements",
        mode.seeds.len(),
        started.elapsed().as_secs_f64(),
        known.len(),
        unknown.len()
    );
    let describe = |f: &Disagreement| {
        format!(
            "seed {} (replay: CONVEYOR_MODEL_SEED={} CONVEYOR_MODEL_STEPS={}), step {}:\n{}\n  -- operations --\n  {}",
            f.seed,
            f.seed,
            f.step + 1,
            f.step,
            f.message,
            f.ops.join("\n  ")
        )
    };
    for bug in KNOWN_BUGS {
        let hits: Vec<u64> = known.iter().filter(|f| f.known == Some(bug.name)).map(|f| f.seed).collect();
        println!(
            "model: KNOWN BUG {}: {} sequence(s) stopped by it: seeds {hits:?}\n  {}",
            bug.name,
            hits.len(),
            bug.what
        );
    }
    for f in &known {
        println!("model: known bug in {}", describe(f));
    }
    assert!(
        unknown.is_empty(),
        "the library and the model disagree:\n\n{}",
        unknown.iter().map(|f| describe(f)).collect::<Vec<_>>().join("\n\n")
    );
}
