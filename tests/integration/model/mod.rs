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
//! - default (CI): 30 sequences of 25 steps, seeds 1..=30 (the pipeline model: 16 of 25);
//! - `CONVEYOR_MODEL=long` (what `make soak` sets): 500 sequences of 60 steps, seeds from a base
//!   taken from the clock (printed) unless `CONVEYOR_MODEL_SEED_BASE` is set;
//! - `CONVEYOR_MODEL_SEED=<n>`: only the sequence of seed `n` (replay a failure; its steps are
//!   printed as they run);
//! - `CONVEYOR_MODEL_STEPS=<k>`, `CONVEYOR_MODEL_SEQUENCES=<n>`: another length or count.
//!
//! With `CI=true` none of them runs less than the CI size (a replay is ignored, shorter or fewer
//! sequences are raised to CI's size: `conveyor_testkit::knobs`).
//!
//! A sequence that disagrees with the model stops there and prints its seed, its operations, the
//! situations the model named in that step and the disagreement; any disagreement fails the test
//! (unless a bug listed in `conveyor_testkit::known_bugs` excuses `model:{situation}`: printed,
//! not failed — the list is empty).
//!
//! The parts: [`oracle`] (the model), [`generator`] (the operations, from a seed), [`runner`]
//! (one sequence against the library and the model, and the comparison). [`pipeline`] is a second
//! model, of a v3 pipeline (three environments, auto promotion, a soak and an alarm, approvals,
//! two targets), run in the same modes.

mod generator;
mod oracle;
mod pipeline;
mod runner;

use std::time::Instant;

use chrono::Utc;
use conveyor::types::Environment;
use conveyor_testkit::knobs;
use conveyor_testkit::known_bugs;

use runner::{Disagreement, Sequence};

const REPOSITORY: &str = "shop";
/// The apps fed by [`REPOSITORY`]: `api` deploys every tag but `latest`, `web` version tags only.
const APPS: [&str; 2] = ["api", "web"];
const WEB_TAGS: &str = "^v[0-9]+\\.[0-9]+\\.[0-9]+$";
const STAGE: Environment = Environment::STAGE;
const PROD: Environment = Environment::PROD;

struct Mode {
    name: &'static str,
    seeds: Vec<u64>,
    steps: usize,
    parallel: usize,
    verbose: bool,
}

/// CI's size (sequences, steps): what runs when nothing is set, and the least a CI run may be
/// given.
type Size = (u64, u64);
const CI: Size = (30, 25);
/// The pipeline model's: each step costs more (three environments, four services to compare), and
/// CI's time is bounded; `make soak` runs it as long as the other.
const PIPELINE_CI: Size = (16, 25);

impl Mode {
    fn from_env((ci_sequences, ci_steps): Size) -> Mode {
        let long = knobs::var("CONVEYOR_MODEL").is_some_and(|v| v == "long");
        let (name, sequences, steps) = if long { ("long", 500, 60) } else { ("ci", ci_sequences, ci_steps) };
        let steps = knobs::size("CONVEYOR_MODEL_STEPS", steps, ci_steps) as usize;
        let sequences = knobs::size("CONVEYOR_MODEL_SEQUENCES", sequences, ci_sequences);
        if let Some(seed) = knobs::replay("CONVEYOR_MODEL_SEED") {
            return Mode { name: "replay", seeds: vec![seed], steps, parallel: 1, verbose: true };
        }
        let base = knobs::number("CONVEYOR_MODEL_SEED_BASE").unwrap_or_else(|| {
            if long {
                Utc::now().timestamp() as u64 * 1000
            } else {
                1
            }
        });
        Mode { name, seeds: (base..base + sequences).collect(), steps, parallel: 3, verbose: false }
    }
}

#[test]
fn the_library_does_what_the_model_of_the_contract_says_after_every_step() {
    crate::support::on_lambda_sized_stacks(run_all("model", CI, |seed, steps, verbose| {
        Box::pin(async move { Sequence::new(seed, verbose).await.run(steps).await })
    }));
}

/// The same for a pipeline of three environments, two targets, a soak, an alarm and approvals
/// ([`pipeline`]).
#[test]
fn a_pipeline_does_what_the_model_of_the_contract_says_after_every_step() {
    crate::support::on_lambda_sized_stacks(run_all("pipeline model", PIPELINE_CI, |seed, steps, verbose| {
        Box::pin(async move { pipeline::Sequence::new(seed, verbose).await.run(steps).await })
    }));
}

/// One sequence of `steps` steps from `seed` (`verbose`: its steps printed as they run): how many
/// steps agreed, or where it disagreed.
type OneSequence =
    fn(
        u64,
        usize,
        bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(u64, usize), Disagreement>> + Send>>;

/// Runs the mode's sequences, a few at once, `one(seed, steps, verbose)` each; fails on any
/// disagreement no known bug excuses.
async fn run_all(name: &'static str, ci: Size, one: OneSequence) {
    let mode = Mode::from_env(ci);
    let started = Instant::now();
    println!(
        "{name}: {} mode, {} sequences x {} steps, seeds {}..={}",
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
            running.spawn(one(seed, steps, verbose));
        }
        let Some(done) = running.join_next().await else { break };
        match done.expect("a sequence panicked") {
            Ok((seed, steps)) => {
                steps_run += steps;
                println!("{name}: seed {seed}: {steps} steps agree");
            }
            Err(disagreement) => {
                steps_run += disagreement.step + 1;
                let known = disagreement.known.map(|bug| format!(" (known bug {})", bug.name)).unwrap_or_default();
                println!("{name}: seed {}: disagrees at step {}{known}", disagreement.seed, disagreement.step);
                failures.push(disagreement);
            }
        }
    }
    failures.sort_by_key(|f| f.seed);
    let (known, unknown): (Vec<&Disagreement>, Vec<&Disagreement>) = failures.iter().partition(|f| f.known.is_some());
    println!(
        "{name}: {} sequences, {steps_run} steps in {:.1} s; {} stopped by a known bug, {} disagreements",
        mode.seeds.len(),
        started.elapsed().as_secs_f64(),
        known.len(),
        unknown.len()
    );
    let describe = |f: &Disagreement| {
        format!(
            "seed {} (replay: CONVEYOR_MODEL_SEED={} CONVEYOR_MODEL_STEPS={}), step {}{}:\n{}\n  -- operations --\n  {}",
            f.seed,
            f.seed,
            f.step + 1,
            f.step,
            if f.situations.is_empty() { String::new() } else { format!(" (situations: {})", f.situations.join(", ")) },
            f.message,
            f.ops.join("\n  ")
        )
    };
    for bug in known_bugs::KNOWN_BUGS {
        let hits: Vec<u64> =
            known.iter().filter(|f| f.known.is_some_and(|k| k.name == bug.name)).map(|f| f.seed).collect();
        if !hits.is_empty() {
            println!(
                "{name}: KNOWN BUG {}: {} sequence(s) stopped by it: seeds {hits:?}\n  {}",
                bug.name,
                hits.len(),
                bug.diagnosis
            );
        }
    }
    for f in &known {
        println!("{name}: known bug in {}", describe(f));
    }
    assert!(
        unknown.is_empty(),
        "the library and the {name} disagree:\n\n{}",
        unknown.iter().map(|f| describe(f)).collect::<Vec<_>>().join("\n\n")
    );
}
