//! The generator: random operations around Conveyor, drawn from a seed and from what makes sense in
//! the model's state (only a deployment in progress settles, only a kept event is delivered late).

use conveyor::types::Environment;
use conveyor_testkit::rng::Rng;

use super::oracle::{ix, DepState, Model, Outcome, Push};
use super::{APPS, PROD, STAGE};

#[derive(Debug, Clone)]
pub enum Op {
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

/// Draws the operations of one sequence.
pub struct Generator {
    rng: Rng,
    /// Every push delivered for the first time, in order.
    pushes: Vec<Push>,
    /// The newest push time (seconds after the sequence's base).
    newest: i64,
    next_digest: u32,
    next_tag: u32,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator { rng: Rng::new(seed), pushes: Vec::new(), newest: 100, next_digest: 0, next_tag: 0 }
    }

    /// How many images the sequence has used (`digest(1..=n)`).
    pub fn digests(&self) -> u32 {
        self.next_digest
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

    /// The next operation, drawn from what makes sense in the model's state (`kept`: events kept
    /// for later; `delivered`: events delivered so far).
    pub fn next_op(&mut self, model: &Model, kept: usize, delivered: usize) -> Op {
        let op = self.draw(model, kept, delivered);
        if let Op::Push { push, .. } = &op {
            self.pushes.push(push.clone());
        }
        op
    }

    fn draw(&mut self, model: &Model, kept: usize, delivered: usize) -> Op {
        let settleable: Vec<(usize, Environment)> = (0..APPS.len())
            .flat_map(|app| [STAGE, PROD].map(|env| (app, env)))
            .filter(|&(app, env)| model.apps[app].envs[ix(env)].primary().state == DepState::InProgress)
            .collect();
        let weights = [
            20,                                         // new push
            if self.pushes.is_empty() { 0 } else { 4 }, // second tag, same second
            if self.pushes.is_empty() { 0 } else { 3 }, // another image, same second
            if self.pushes.is_empty() { 0 } else { 5 }, // late push
            if self.pushes.is_empty() { 0 } else { 5 }, // repeated delivery
            if settleable.is_empty() { 0 } else { 24 }, // ECS settles
            if kept == 0 { 0 } else { 6 },              // late event
            if delivered == 0 { 0 } else { 3 },         // repeated event
            4,                                          // sweep
            10,                                         // promote
            5,                                          // pause / resume
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
            6 => Op::DeliverLate { index: self.rng.below(kept) },
            7 => Op::DeliverAgain { index: self.rng.below(delivered) },
            8 => Op::Sweep,
            9 => {
                let app = self.rng.below(APPS.len());
                let vetted: Vec<String> = model.apps[app].tags.keys().cloned().collect();
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
                if model.apps[app].envs[ix(env)].paused {
                    Op::Resume { app, env, deploy_latest: env == STAGE && self.rng.chance(0.6) }
                } else {
                    Op::Pause { app, env }
                }
            }
        }
    }
}
