//! `make bench`: the real flows through the RELEASE function binaries, against the local AWS.
//! Numbers, not assertions: timing belongs in benchmarks, never in tests (a flow that does not end
//! the way it should stops the benchmark, though: a number for the wrong work is no number).
//!
//! Flows, each exactly as in production (the event the function gets is the one EventBridge or the
//! invoker would send, on state the other functions left):
//!
//! - **first deploy**: `stage-deploy` gets an ECR push for a service Conveyor has never deployed
//!   (it reads the service, records its baseline, registers a revision, updates the service);
//! - **verification**: `deploy-monitor` gets `SERVICE_DEPLOYMENT_COMPLETED` for a stage rollout;
//! - **rollback**: `deploy-monitor` gets `SERVICE_DEPLOYMENT_FAILED` and rolls the service back;
//! - **promote**: `promote` is invoked with a tag stage verified;
//! - **hook**: `deploy-hook` is called by ECS at `POST_TEST_TRAFFIC_SHIFT` of a blue/green stage
//!   rollout (it reads the environment and the revision ECS deploys, checks the digest; the app has
//!   no `test_health_url`, so no probe is timed).
//!
//! Per flow: init (process start → first Runtime API poll: SDK config, clients), the first
//! invocation of a fresh process (cold caches: config, revisions, connections), warm invocations
//! on one process (p50/p90), peak RSS (`VmHWM`) of the function's processes, and the AWS calls of
//! one invocation as the local AWS counted them (first / warm). The state each invocation needs
//! (a rollout in flight, a verified tag...) is prepared in this process with the library, untimed,
//! as the other functions would have left it.
//!
//! Then the **cold push** against a yardstick: a fresh process from spawn to the answer of its
//! first invocation (queued before the spawn, as Lambda's first invocation of a new sandbox is),
//! for `stage-deploy` and for `tests/testkit/bench/push_boto3.py` — the same job written in Python
//! with boto3, run by a minimal Python runtime loop (`tests/testkit/bench/bootstrap`) against the
//! same Runtime API host and local AWS — on the same event and the same arranged state, the two
//! alternating. Both must make the very same AWS calls, or there is no number.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::{digest, AppFixture};
use conveyor_testkit::{Function, World};
use serde_json::{json, Value};

/// Fresh processes per flow (each on its own fresh world).
const COLD: usize = 5;
/// Timed invocations on one warm process per flow (after one untimed warm-up).
const WARM: usize = 20;
/// The goal for a cold push: Rust at least this many times faster than Python/boto3.
const COLD_PUSH_GOAL: f64 = 20.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    FirstDeploy,
    Verification,
    Rollback,
    Promote,
    Hook,
}

impl Flow {
    const ALL: [Flow; 5] = [Flow::FirstDeploy, Flow::Verification, Flow::Rollback, Flow::Promote, Flow::Hook];

    fn name(self) -> &'static str {
        match self {
            Flow::FirstDeploy => "first deploy (push → new stage service)",
            Flow::Verification => "verification (COMPLETED → verified)",
            Flow::Rollback => "rollback (FAILED → rolled back)",
            Flow::Promote => "promote (vetted tag → prod)",
            Flow::Hook => "hook (blue/green test traffic → SUCCEEDED)",
        }
    }

    fn function(self) -> &'static str {
        match self {
            Flow::FirstDeploy => "stage-deploy",
            Flow::Verification | Flow::Rollback => "deploy-monitor",
            Flow::Promote => "promote",
            Flow::Hook => "deploy-hook",
        }
    }

    /// How many apps a world for this flow needs: a first deploy needs a new service each time.
    fn apps(self, runs: usize) -> usize {
        if self == Flow::FirstDeploy {
            runs
        } else {
            1
        }
    }
}

/// A world with its apps, the library wired to it (to prepare state), and a clock for pushes.
struct Bench {
    world: World,
    apps: Vec<AppFixture>,
    conveyor: conveyor::Conveyor,
    pushes: i64,
    start: DateTime<Utc>,
}

impl Bench {
    async fn new(apps: usize) -> Bench {
        let world = World::new().await;
        let mut fixtures = Vec::new();
        for n in 0..apps {
            let name = format!("app{n:02}");
            fixtures.push(world.seed_app(&name, &format!("repo{n:02}"), true, json!({})).await);
        }
        let conveyor = conveyor::Conveyor::new(&world.config, world.settings());
        Bench { world, apps: fixtures, conveyor, pushes: 0, start: Utc::now() - chrono::Duration::hours(2) }
    }

    fn invocation() -> conveyor::Invocation {
        let mut invocation = conveyor::Invocation::lasting(Duration::from_secs(60));
        invocation.account = Some(conveyor_testkit::local_aws::ACCOUNT.to_owned());
        invocation
    }

    /// An ECR push of a new image of app `n`, later than every earlier one.
    fn push_event(&mut self, n: usize, tag: &str) -> Value {
        self.pushes += 1;
        let app = &self.apps[n];
        let time = self.start + chrono::Duration::seconds(self.pushes * 10);
        self.world.push_event(&app.repository, tag, &digest(10_000 + self.pushes as u32), time)
    }

    /// A stage rollout of a new tag of app 0, through the library (as stage-deploy would do it).
    async fn stage_rollout(&mut self, tag: &str) {
        let event = self.push_event(0, tag);
        let report = self.conveyor.stage(event, &Self::invocation()).await.expect("stage rollout");
        assert_eq!(report.apps[0].status, conveyor::vocabulary::Action::Deploying, "{report:?}");
    }

    /// ECS ends the primary deployment of app 0 in `env`; the monitor handles it if `handle`.
    async fn settle(&self, env: &str, outcome: Settle, handle: Option<&str>) -> Value {
        let service = if env == "stage" { &self.apps[0].stage } else { &self.apps[0].prod };
        let events = self.world.aws.settle(&service.cluster, &service.service, outcome).await;
        let event = events.first().cloned().expect("a deployment event");
        if let Some(expected) = handle {
            let report = self.conveyor.monitor(event.clone(), &Self::invocation()).await.expect("monitor");
            let report = serde_json::to_value(&report).expect("a report");
            assert_eq!(report["results"][0]["action"], expected, "{report}");
        }
        event
    }

    /// Prepares run `run` of `flow` (untimed) and returns the payload the function gets.
    async fn prepare(&mut self, flow: Flow, run: usize) -> Value {
        match flow {
            Flow::FirstDeploy => self.push_event(run, "v1.0.0"),
            Flow::Verification => {
                self.stage_rollout(&format!("v1.{run}.0")).await;
                self.settle("stage", Settle::Complete, None).await
            }
            Flow::Rollback => {
                self.stage_rollout(&format!("v2.{run}.0")).await;
                self.settle("stage", Settle::Fail { circuit_breaker_rollback: false }, None).await
            }
            Flow::Promote => {
                let tag = format!("v3.{run}.0");
                self.stage_rollout(&tag).await;
                self.settle("stage", Settle::Complete, Some("verified")).await;
                json!({ "app": self.apps[0].app, "tag": tag, "reason": "bench", "requested_by": "bench" })
            }
            Flow::Hook => {
                let stage = self.apps[0].stage.clone();
                let strategy = aws_sdk_ecs::types::DeploymentConfiguration::builder()
                    .strategy(aws_sdk_ecs::types::DeploymentStrategy::BlueGreen)
                    .build();
                let update = self.world.ecs.update_service().cluster(&stage.cluster).service(&stage.service);
                update.deployment_configuration(strategy).send().await.expect("a blue/green service");
                self.stage_rollout(&format!("v4.{run}.0")).await;
                let state = self.world.aws.native_state(&stage.cluster, &stage.service).await;
                let deployment = &state["deployments"][0];
                let green = deployment["targetServiceRevision"]["arn"].clone();
                let green_key = green.as_str().expect("a target revision").to_owned();
                json!({
                    "executionId": format!("bench-{run}-{}", self.pushes),
                    "lifecycleStage": "POST_TEST_TRAFFIC_SHIFT",
                    "resourceArn": deployment["serviceDeploymentArn"],
                    "executionDetails": {
                        "serviceArn": deployment["serviceArn"],
                        "targetServiceRevisionArn": green,
                        "testTrafficWeights": { green_key.clone(): 100 },
                        "productionTrafficWeights": { green_key: 0 }
                    }
                })
            }
        }
    }

    /// Checks the function did the flow's work, and leaves the services ready for the next run.
    async fn finish(&self, flow: Flow, answer: &Value) {
        match flow {
            Flow::FirstDeploy => assert_eq!(answer["apps"][0]["status"], "deploying", "{answer}"),
            Flow::Verification => assert_eq!(answer["results"][0]["action"], "verified", "{answer}"),
            Flow::Rollback => {
                assert_eq!(answer["results"][0]["action"], "rolled_back", "{answer}");
                // ECS completes the rollback deployment; the monitor sees the service restored.
                self.settle("stage", Settle::Complete, Some("restored")).await;
            }
            Flow::Promote => {
                assert_eq!(answer["status"], "deploying", "{answer}");
                self.settle("prod", Settle::Complete, Some("verified")).await;
            }
            // The local AWS's blue/green deployment goes on by itself; the next rollout supersedes it.
            Flow::Hook => assert_eq!(answer["hookStatus"], "SUCCEEDED", "{answer}"),
        }
    }

    async fn calls(&self) -> BTreeMap<String, u64> {
        self.world.aws.calls(&self.world.id).await
    }
}

/// The AWS calls between two counts, by operation.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect()
}

fn total(calls: &BTreeMap<String, u64>) -> u64 {
    calls.values().sum()
}

/// A function program, run as Lambda runs it: a release binary, or the Python yardstick.
struct Program {
    /// The function's name (what the tables show).
    name: &'static str,
    /// What it is written in and runs on.
    runtime: String,
    path: PathBuf,
    /// Variables besides the world's.
    env: Vec<(String, String)>,
}

impl Program {
    fn release(function: &'static str) -> Program {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| conveyor_testkit::repo_root().join("target"), PathBuf::from);
        let path = target.join("release").join(function);
        assert!(path.exists(), "{} is missing: `make bench` builds it", path.display());
        Program { name: function, runtime: "Rust, release binary".into(), path, env: Vec::new() }
    }

    /// `push_boto3.py` under its runtime loop, on the Python and boto3 of `.venv` (the local
    /// AWS's): `bootstrap` finds that Python first on `PATH`. No bytecode is written: on Lambda the
    /// function's own module is compiled at every cold start (its code is read-only), the
    /// libraries' bytecode ships with them (pip compiled `.venv`'s).
    fn python() -> Program {
        let root = conveyor_testkit::repo_root();
        let venv = root.join(".venv/bin");
        let version = Command::new(venv.join("python"))
            .args(["-c", "import sys, boto3; print(f'Python {sys.version.split()[0]}, boto3 {boto3.__version__}')"])
            .output()
            .expect("the Python of .venv (`make setup` installs it)");
        assert!(version.status.success(), "boto3 is missing from .venv: {}", String::from_utf8_lossy(&version.stderr));
        let path = std::env::join_paths(
            std::iter::once(venv).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .expect("a PATH");
        Program {
            name: "push_boto3.py",
            runtime: format!("{}, minimal runtime loop", String::from_utf8_lossy(&version.stdout).trim()),
            path: root.join("tests/testkit/bench/bootstrap"),
            env: vec![
                ("PATH".into(), path.to_string_lossy().into_owned()),
                ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
                ("_HANDLER".into(), "push_boto3.handler".into()),
            ],
        }
    }

    async fn spawn(&self, world: &World) -> Function {
        let mut env = world.function_env();
        env.extend(self.env.iter().cloned());
        Function::spawn_binary(self.name, &self.path, &env).await
    }
}

/// What fresh processes measured: each one's init, first invocation and cold push (spawn →
/// answer), its AWS calls; the peak RSS of all.
#[derive(Default)]
struct Cold {
    inits: Vec<Duration>,
    firsts: Vec<Duration>,
    pushes: Vec<Duration>,
    calls: Vec<BTreeMap<String, u64>>,
    peak_rss_kib: u64,
}

impl Cold {
    /// A fresh process of `program` on a fresh world, invoked with run 0 of `flow`: the invocation
    /// is queued before the spawn, as Lambda's first invocation of a new sandbox waits for it.
    async fn run(&mut self, flow: Flow, program: &Program) {
        let mut bench = Bench::new(flow.apps(1)).await;
        let payload = bench.prepare(flow, 0).await;
        let before = bench.calls().await;
        let function = program.spawn(&bench.world).await;
        let answer = function.invoke(payload).await;
        let push = function.spawned_at.elapsed();
        let init = function.init_duration().await;
        let after = bench.calls().await;
        self.peak_rss_kib = self.peak_rss_kib.max(function.peak_rss_kib().unwrap_or(0));
        bench.finish(flow, &answer.response()).await;
        self.inits.push(init);
        self.firsts.push(push - init);
        self.pushes.push(push);
        self.calls.push(delta(&before, &after));
    }
}

/// One flow's measurements.
#[derive(Default)]
struct Measured {
    cold: Cold,
    warm: Vec<Duration>,
    warm_calls: Vec<BTreeMap<String, u64>>,
}

/// Invokes `function` with run `run` of `flow` on `bench`; returns the latency and the calls.
async fn run_once(bench: &mut Bench, function: &Function, flow: Flow, run: usize) -> (Duration, BTreeMap<String, u64>) {
    let payload = bench.prepare(flow, run).await;
    let before = bench.calls().await;
    let started = Instant::now();
    let answer = function.invoke(payload).await;
    let elapsed = started.elapsed();
    let after = bench.calls().await;
    let answer = answer.response();
    bench.finish(flow, &answer).await;
    (elapsed, delta(&before, &after))
}

async fn measure(flow: Flow) -> Measured {
    let program = Program::release(flow.function());
    let mut measured = Measured::default();
    for _ in 0..COLD {
        measured.cold.run(flow, &program).await;
    }
    let mut bench = Bench::new(flow.apps(WARM + 1)).await;
    let function = program.spawn(&bench.world).await;
    measured.cold.inits.push(function.init_duration().await);
    run_once(&mut bench, &function, flow, 0).await; // warm-up
    for run in 1..=WARM {
        let (latency, calls) = run_once(&mut bench, &function, flow, run).await;
        measured.warm.push(latency);
        measured.warm_calls.push(calls);
    }
    measured.cold.peak_rss_kib = measured.cold.peak_rss_kib.max(function.peak_rss_kib().unwrap_or(0));
    measured
}

/// Cold pushes (a first deploy) of `stage-deploy` and of the Python yardstick: `COLD` fresh
/// processes each, alternating so that load drifting on a shared machine hits both alike, after
/// one untimed run of each (the page cache holds both programs, as it would a warm Lambda host's).
/// Both must have made the same AWS calls.
async fn compare() -> [(Program, Cold); 2] {
    let mut programs = [Program::release("stage-deploy"), Program::python()].map(|p| (p, Cold::default()));
    for (program, _) in &programs {
        Cold::default().run(Flow::FirstDeploy, program).await;
    }
    for _ in 0..COLD {
        for (program, cold) in &mut programs {
            cold.run(Flow::FirstDeploy, program).await;
        }
    }
    let [(rust, rust_cold), (python, python_cold)] = &programs;
    let (rust_calls, python_calls) = (typical(&rust_cold.calls), typical(&python_cold.calls));
    assert_eq!(
        rust_calls,
        python_calls,
        "{} and {} must make the same AWS calls: {} vs {}",
        rust.name,
        python.name,
        breakdown(rust_calls),
        breakdown(python_calls)
    );
    programs
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `6 (DescribeServices 1, Publish 1, ...)`: a total and its operations.
fn breakdown(calls: &BTreeMap<String, u64>) -> String {
    let ops: Vec<String> = calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
    format!("{} ({})", total(calls), ops.join(", "))
}

/// The call count most runs made (warm runs differ when the config cache expires in one).
fn typical(calls: &[BTreeMap<String, u64>]) -> &BTreeMap<String, u64> {
    let mut counts: BTreeMap<&BTreeMap<String, u64>, usize> = BTreeMap::new();
    for c in calls {
        *counts.entry(c).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(c, _)| c).expect("runs")
}

fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{}, {cores} cores", model.unwrap_or("unknown CPU"))
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let mut results = Vec::new();
    for flow in Flow::ALL {
        eprintln!("bench: {} ({COLD} cold processes, {WARM} warm runs)...", flow.name());
        results.push((flow, measure(flow).await));
    }
    eprintln!("bench: cold push, Rust vs Python/boto3 ({COLD} cold processes each)...");
    let compared = compare().await;

    println!(
        "Release binaries (x86_64, `[profile.release]`), {} against moto server on loopback; {COLD} fresh processes and \
         {WARM} warm invocations of one process per flow; {}. Latencies include the local AWS's answers, which dominate.\n",
        Utc::now().format("%Y-%m-%d"),
        cpu()
    );
    println!("| flow | function | init p50 | first invocation p50 | warm p50 | warm p90 | peak RSS | AWS calls (first / warm) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (flow, m) in &results {
        println!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} / {} |",
            flow.name(),
            flow.function(),
            ms(percentile(&m.cold.inits, 0.5)),
            ms(percentile(&m.cold.firsts, 0.5)),
            ms(percentile(&m.warm, 0.5)),
            ms(percentile(&m.warm, 0.9)),
            mib(m.cold.peak_rss_kib),
            total(typical(&m.cold.calls)),
            total(typical(&m.warm_calls)),
        );
    }
    println!("\nAWS calls per invocation, by operation (the count most runs made):\n");
    for (flow, m) in &results {
        println!(
            "- {} — first: {}; warm: {}",
            flow.name(),
            breakdown(typical(&m.cold.calls)),
            breakdown(typical(&m.warm_calls))
        );
    }

    println!(
        "\nCold push against Python/boto3: a fresh process from spawn to the answer of its first invocation (a first \
         deploy of one app), `stage-deploy` and the same job in Python (`tests/testkit/bench/push_boto3.py`), on the same \
         event, the same arranged state and the same Runtime API host, making the same AWS calls; {COLD} fresh processes \
         each, alternating, after one untimed run of each. Python's init is the interpreter's start, `import boto3` and \
         four clients; its runtime is a minimal loop (`tests/testkit/bench/bootstrap`).\n"
    );
    println!("| function | runtime | init p50 | first invocation p50 | cold push p50 | peak RSS | AWS calls |");
    println!("|---|---|---|---|---|---|---|");
    for (program, cold) in &compared {
        println!(
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            program.name,
            program.runtime,
            ms(percentile(&cold.inits, 0.5)),
            ms(percentile(&cold.firsts, 0.5)),
            ms(percentile(&cold.pushes, 0.5)),
            mib(cold.peak_rss_kib),
            breakdown(typical(&cold.calls)),
        );
    }
    let [(rust, rust_cold), (python, python_cold)] = &compared;
    let p50_ratio = |of: fn(&Cold) -> &[Duration]| {
        let (rust, python) = (percentile(of(rust_cold), 0.5), percentile(of(python_cold), 0.5));
        (rust, python, python.as_secs_f64() / rust.as_secs_f64())
    };
    let (rust_push, python_push, ratio) = p50_ratio(|cold| &cold.pushes);
    let (.., init_ratio) = p50_ratio(|cold| &cold.inits);
    println!(
        "\nCold push p50: `{}` {}, `{}` {}: **{ratio:.1}× faster** in Rust (goal: ≥ {COLD_PUSH_GOAL}×, {}); init p50 \
         alone: {init_ratio:.1}× faster.",
        rust.name,
        ms(rust_push),
        python.name,
        ms(python_push),
        if ratio >= COLD_PUSH_GOAL { "met" } else { "not met" }
    );

    println!("\nBinary sizes:");
    for function in ["stage-deploy", "deploy-monitor", "promote", "deploy-hook"] {
        let size = std::fs::metadata(Program::release(function).path).map(|m| m.len()).unwrap_or(0);
        println!("- `{function}`: {:.1} MiB", size as f64 / 1_048_576.0);
    }
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
}
