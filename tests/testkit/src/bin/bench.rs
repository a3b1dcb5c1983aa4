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
//! - **promote**: `promote` is invoked with a tag stage verified.
//!
//! Per flow: init (process start → first Runtime API poll: SDK config, clients), the first
//! invocation of a fresh process (cold caches: config, revisions, connections), warm invocations
//! on one process (p50/p90), peak RSS (`VmHWM`) of the function's processes, and the AWS calls of
//! one invocation as the local AWS counted them (first / warm). The state each invocation needs
//! (a rollout in flight, a verified tag...) is prepared in this process with the library, untimed,
//! as the other functions would have left it.

use std::collections::BTreeMap;
use std::path::PathBuf;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    FirstDeploy,
    Verification,
    Rollback,
    Promote,
}

impl Flow {
    const ALL: [Flow; 4] = [Flow::FirstDeploy, Flow::Verification, Flow::Rollback, Flow::Promote];

    fn name(self) -> &'static str {
        match self {
            Flow::FirstDeploy => "first deploy (push → new stage service)",
            Flow::Verification => "verification (COMPLETED → verified)",
            Flow::Rollback => "rollback (FAILED → rolled back)",
            Flow::Promote => "promote (vetted tag → prod)",
        }
    }

    fn function(self) -> &'static str {
        match self {
            Flow::FirstDeploy => "stage-deploy",
            Flow::Verification | Flow::Rollback => "deploy-monitor",
            Flow::Promote => "promote",
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
        conveyor::Invocation::lasting(Duration::from_secs(60))
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

/// One flow's measurements.
#[derive(Default)]
struct Measured {
    inits: Vec<Duration>,
    firsts: Vec<Duration>,
    first_calls: Vec<BTreeMap<String, u64>>,
    warm: Vec<Duration>,
    warm_calls: Vec<BTreeMap<String, u64>>,
    peak_rss_kib: u64,
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
    let binary = release_binary(flow.function());
    let mut measured = Measured::default();
    for _ in 0..COLD {
        let mut bench = Bench::new(flow.apps(1)).await;
        let function = Function::spawn_binary(flow.function(), &binary, &bench.world.function_env()).await;
        measured.inits.push(function.init_duration().await);
        let (first, calls) = run_once(&mut bench, &function, flow, 0).await;
        measured.firsts.push(first);
        measured.first_calls.push(calls);
        measured.peak_rss_kib = measured.peak_rss_kib.max(function.peak_rss_kib().unwrap_or(0));
    }
    let mut bench = Bench::new(flow.apps(WARM + 1)).await;
    let function = Function::spawn_binary(flow.function(), &binary, &bench.world.function_env()).await;
    measured.inits.push(function.init_duration().await);
    run_once(&mut bench, &function, flow, 0).await; // warm-up
    for run in 1..=WARM {
        let (latency, calls) = run_once(&mut bench, &function, flow, run).await;
        measured.warm.push(latency);
        measured.warm_calls.push(calls);
    }
    measured.peak_rss_kib = measured.peak_rss_kib.max(function.peak_rss_kib().unwrap_or(0));
    measured
}

fn release_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| conveyor_testkit::repo_root().join("target"), PathBuf::from);
    let path = target.join("release").join(name);
    assert!(path.exists(), "{} is missing: `make bench` builds it", path.display());
    path
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
            ms(percentile(&m.inits, 0.5)),
            ms(percentile(&m.firsts, 0.5)),
            ms(percentile(&m.warm, 0.5)),
            ms(percentile(&m.warm, 0.9)),
            mib(m.peak_rss_kib),
            total(typical(&m.first_calls)),
            total(typical(&m.warm_calls)),
        );
    }
    println!("\nAWS calls per invocation, by operation (the count most runs made):\n");
    for (flow, m) in &results {
        println!(
            "- {} — first: {}; warm: {}",
            flow.name(),
            breakdown(typical(&m.first_calls)),
            breakdown(typical(&m.warm_calls))
        );
    }
    println!("\nBinary sizes:");
    for function in ["stage-deploy", "deploy-monitor", "promote"] {
        let size = std::fs::metadata(release_binary(function)).map(|m| m.len()).unwrap_or(0);
        println!("- `{function}`: {:.1} MiB", size as f64 / 1_048_576.0);
    }
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
}
