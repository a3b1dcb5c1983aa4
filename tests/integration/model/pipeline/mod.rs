//! The model test of a pipeline (contract, *Pipelines (v3)*): random sequences of what happens
//! around one app whose pipeline is dev → stage → prod, run against the real library on the local
//! AWS and against a pure model ([`oracle`]); after every step ECS, the state table, the
//! notifications and what each call answered must say what the model says.
//!
//! The pipeline: `dev` (the entry environment), `stage` (`from: dev`, auto promotion, a soak and
//! one alarm), `prod` (`from: stage`, approval, two targets: rolled out one after the other in
//! odd seeds' sequences, at once — `parallel` — in even seeds').
//!
//! The operations: pushes (new, delivered again, late); ECS completing or failing the primary
//! deployment of a service (a rollback's only completes), its event delivered at once, kept for
//! later or delivered again; the stage alarm entering ALARM and recovering, its event delivered or
//! lost; the soak's time running out (the soak timer); the sweep; promotions into prod; approvals
//! by the requester (refused) or a second person; rejections; a pending approval's time running
//! out (the sweep); pausing and resuming stage (auto promotions into it held) or prod. Time moves
//! by setting the record's `soak.until` or `expires_at` in the past, as the soak's hour or the
//! approval's day passing would.
//!
//! It runs in the modes of [`super`] (the same variables and seeds; its own CI size).

mod oracle;
mod runner;

use conveyor_testkit::rng::Rng;

use super::oracle::DepState;
use oracle::{label, Model, Person, Push, PROD, SERVICES, STAGE};
pub use runner::Sequence;

#[derive(Debug, Clone)]
pub enum Op {
    Push {
        push: Push,
        what: &'static str,
    },
    Settle {
        service: usize,
        complete: bool,
        deliver: bool,
    },
    DeliverLate {
        index: usize,
    },
    DeliverAgain {
        index: usize,
    },
    Alarm {
        delivered: bool,
    },
    SoakEnds,
    /// The soak timer ticks with no soak due.
    SoakTimer,
    Sweep,
    Promote {
        tag: String,
        force: bool,
    },
    Approve {
        who: Person,
    },
    Reject {
        who: Person,
    },
    ApprovalExpires,
    Pause {
        env: usize,
    },
    Resume {
        env: usize,
    },
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Push { push, what } => write!(f, "push ({what}) {} d{} t+{}", push.tag, push.digest, push.time),
            Op::Settle { service, complete, deliver } => write!(
                f,
                "ECS {} {}{}",
                if *complete { "completes" } else { "fails" },
                label(*service),
                if *deliver { "" } else { " (event kept for later)" }
            ),
            Op::DeliverLate { index } => write!(f, "deliver kept event #{index}"),
            Op::DeliverAgain { index } => write!(f, "deliver event #{index} again"),
            Op::Alarm { delivered } => {
                write!(f, "stage alarm fires and recovers{}", if *delivered { "" } else { " (event lost)" })
            }
            Op::SoakEnds => write!(f, "stage's soak ends"),
            Op::SoakTimer => write!(f, "the soak timer ticks"),
            Op::Sweep => write!(f, "sweep"),
            Op::Promote { tag, force } => {
                write!(f, "promote {tag} to prod{} (requester)", if *force { " --force" } else { "" })
            }
            Op::Approve { who } => write!(f, "approve ({who:?})"),
            Op::Reject { who } => write!(f, "reject ({who:?})"),
            Op::ApprovalExpires => write!(f, "the pending approval expires (then the sweep)"),
            Op::Pause { env } => write!(f, "pause {}", oracle::ENVS[*env]),
            Op::Resume { env } => write!(f, "resume {}", oracle::ENVS[*env]),
        }
    }
}

/// Draws the operations of one sequence, from a seed and what makes sense in the model's state.
pub struct Generator {
    rng: Rng,
    pushes: Vec<Push>,
    newest: i64,
    next_digest: u32,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator { rng: Rng::new(seed), pushes: Vec::new(), newest: 100, next_digest: 0 }
    }

    /// How many images the sequence has used (`digest(1..=n)`).
    pub fn digests(&self) -> u32 {
        self.next_digest
    }

    fn new_digest(&mut self) -> u32 {
        self.next_digest += 1;
        self.next_digest
    }

    pub fn next_op(&mut self, model: &Model, kept: usize, delivered: usize) -> Op {
        let settleable: Vec<usize> =
            (0..SERVICES).filter(|&s| model.services[s].primary().state == DepState::InProgress).collect();
        let stage = &model.envs[STAGE];
        let pending = matches!(model.envs[PROD].approval, Some(oracle::Approval::Pending { .. }));
        let weights = [
            8,                                               // new push
            if self.pushes.is_empty() { 0 } else { 2 },      // push delivered again
            if self.pushes.is_empty() { 0 } else { 2 },      // late push
            if settleable.is_empty() { 0 } else { 30 },      // ECS settles
            if kept == 0 { 0 } else { 5 },                   // late event
            if delivered == 0 { 0 } else { 3 },              // repeated event
            if stage.release.is_some() { 4 } else { 0 },     // the stage alarm
            if stage.soaking { 12 } else { 0 },              // the soak ends
            3,                                               // sweep
            if model.stage_tags.is_empty() { 1 } else { 8 }, // promote to prod
            if pending { 10 } else { 1 },                    // approve
            if pending { 2 } else { 0 },                     // reject
            if pending { 2 } else { 0 },                     // approval expires
            3,                                               // pause or resume
            2,                                               // the soak timer, nothing due
        ];
        match self.rng.weighted(&weights) {
            0 => {
                let digest = self.new_digest();
                self.newest += 1 + self.rng.below(3) as i64;
                let push = Push { tag: format!("v1.{digest}.0"), digest, time: self.newest };
                self.pushes.push(push.clone());
                Op::Push { push, what: "new" }
            }
            1 => Op::Push { push: self.rng.pick(&self.pushes).clone(), what: "again" },
            2 => {
                let digest = self.new_digest();
                let time = self.newest - 1 - self.rng.below(5) as i64;
                Op::Push { push: Push { tag: format!("v1.{digest}.0"), digest, time }, what: "late" }
            }
            3 => {
                let service = *self.rng.pick(&settleable);
                let complete = !model.rolling_out(service) || self.rng.chance(0.75);
                Op::Settle { service, complete, deliver: self.rng.chance(0.85) }
            }
            4 => Op::DeliverLate { index: self.rng.below(kept) },
            5 => Op::DeliverAgain { index: self.rng.below(delivered) },
            6 => Op::Alarm { delivered: self.rng.chance(0.6) },
            7 => Op::SoakEnds,
            8 => Op::Sweep,
            9 => {
                let vetted: Vec<String> = model.stage_tags.keys().cloned().collect();
                let tag = if !vetted.is_empty() && self.rng.chance(0.8) {
                    self.rng.pick(&vetted).clone()
                } else if !self.pushes.is_empty() {
                    self.rng.pick(&self.pushes).tag.clone()
                } else {
                    "v9.9.9".to_owned()
                };
                Op::Promote { tag, force: self.rng.chance(0.15) }
            }
            10 => Op::Approve { who: if self.rng.chance(0.2) { Person::Requester } else { Person::Approver } },
            11 => Op::Reject { who: if self.rng.chance(0.3) { Person::Requester } else { Person::Approver } },
            12 => Op::ApprovalExpires,
            14 => Op::SoakTimer,
            _ => {
                let env = if self.rng.chance(0.5) { STAGE } else { PROD };
                if model.envs[env].paused {
                    Op::Resume { env }
                } else {
                    Op::Pause { env }
                }
            }
        }
    }
}
