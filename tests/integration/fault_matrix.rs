//! The fault matrix and crashes: every AWS call of every flow, failed the ways AWS fails (and the
//! function killed on it), through the real function binaries; then what Lambda and EventBridge
//! do next; then the invariants.
//!
//! **Flows** (each on a fresh [`World`], arranged through the library, then one invocation of a
//! real binary): `push` (stage-deploy, one app), `push-two-apps` (one repository feeding two
//! apps), `verify` (deploy-monitor, COMPLETED → verified), `verify-auto-promote` (COMPLETED in
//! stage → verified, and prod, which takes stage's images automatically, promoted), `rollback` (deploy-monitor, a prod
//! rollout FAILED → Conveyor rolls prod back to the last verified release), `circuit-breaker`
//! (stage FAILED with ECS's own rollback → no second rollback), `promote` (promote), `sweep`
//! (deploy-monitor's schedule: a rollout whose COMPLETED event was lost, with its `deploying`
//! notification still in the outbox), `sweep-outbox` (the schedule: a settled rollout whose
//! `verified` notification was left in the outbox) and `soak-alarm` (the soak timer: stage's soak is
//! over, but one of its alarms fired and recovered meanwhile, unseen → rolled back) and `alarm`
//! (deploy-monitor: stage's alarm enters ALARM during the soak → rolled back on its event),
//! `approval-request` (promote, into a prod with `approval`, with the operator's identity proof →
//! pending), `approve` (promote: a second person's approval → the rollout), `wave-step` and
//! `wave-rollback` (deploy-monitor: prod on two services, the first verified starts the second, or
//! the second failing rolls both back), `native-verify` (deploy-monitor: a blue/green stage
//! deployment ECS completed, judged by its service deployment and its revision's digest → verified)
//! `native-rollback` (deploy-monitor: one ECS rolled back when Conveyor's hook failed it on
//! test traffic → failed, no second rollback, ECS's reason in the alert) and `hook` (deploy-hook,
//! asked at `POST_TEST_TRAFFIC_SHIFT` about a blue/green deployment of Conveyor's rollout: it must
//! answer, never error, whatever fails under it; the sweep then verifies the rollout).
//! Each runs clean first; its AWS calls (those
//! carrying the world's id, of that invocation only) are its call sites, each named by operation
//! and occurrence ([`CallSite`]), so that `Fault::on(op).after(occurrence).persistent()` hits that
//! call, every retry of it and every later call of the operation.
//!
//! **A cell** (flow × call × fault) reruns the flow on a fresh world with the call failing
//! persistently — throttled, HTTP 500, HTTP 503, connection reset, or applied with its answer lost
//! (`apply-then-fail`), past the SDK's six attempts — then clears the faults, delivers the same
//! event again to the same (warm) function as EventBridge or Lambda would (a redelivery that fails
//! is retried twice more, as Lambda retries an event, each after the leases left behind expired),
//! then runs a sweep (`World::schedule_event` to deploy-monitor; again if a live lease kept it
//! out). `latency` cells serve the call 3 s late while a second delivery of the event runs in a
//! second sandbox (calls made under the flow's lease only, where the two deliveries meet).
//! **Crash cells** kill the function process when the call arrives (`FaultMode::Kill`: the call
//! is not applied), wait for the dead one's lease to expire, deliver the event to a new process
//! (Lambda's new sandbox), then sweep. Functions get a 3 s deadline (1 s for the process that is
//! killed; 60 s in latency cells, whose two deliveries must wait for each other as on Lambda), so
//! a lease left behind expires 11–13 s after its invocation started ([`Function::set_deadline`];
//! leases last until the deadline plus 10 s).
//!
//! **Invariants after every cell**: each service touched runs the expected image on an ACTIVE
//! revision; at most one new ACTIVE revision per real rollout; the environment's state agrees with
//! ECS (rollout, last verified, rollback target and who rolled back), an environment in flight is
//! `pending` for the sweep, and no lease is left; exactly one notification per real transition,
//! counted by outcome and by notification id (the Chatbot message's `id`): the same notification
//! received twice (re-sent) is accepted only after a lost `Publish` answer (apply-then-fail on
//! `Publish`) or a crash between a `Publish` and the release that marks it sent, never otherwise,
//! and two notifications (ids) for one transition never; nothing is left in an outbox; a failed
//! image stays unpromotable (promote refuses `NotVetted`).
//!
//! **Size**: `make test` runs the CI-sized matrix: every call of every flow under one failing
//! fault (the five rotate over the calls: 189 calls of the 18 flows), `latency` on the first call
//! under the lease of every third flow, a crash on every fourth call, and the 18 clean runs — the
//! longest test of `make test`, which sets CI's pace: a sample, sized to keep CI under 25 minutes.
//! `CONVEYOR_MATRIX=full` (what `make soak` sets) runs every call under every fault (945),
//! `latency` on every call under the lease and a crash on every call (189) — the longest part of
//! `make soak`. `CONVEYOR_MATRIX=clean` runs only the clean runs and prints each flow's calls;
//! `CONVEYOR_MATRIX_FLOW=soak-alarm` only that flow's cells. Six worlds run at a time, across both
//! tests. A cell failing in a situation a
//! listed known bug excuses (`conveyor_testkit::known_bugs`: `fault_matrix:{flow}/{call}/{fault}`)
//! is printed as a known failure with the diagnosis and does not fail the test; any other failing
//! cell does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use conveyor::vocabulary::{Action, PromoteStatus};
use conveyor_testkit::known_bugs::{self, KnownBug};
use conveyor_testkit::lambda_api::LambdaApi;
use conveyor_testkit::local_aws::{CallRecord, Fault, FaultMode, Settle};
use conveyor_testkit::matrix::{bounded_by, CallSite, FaultKind, Job, LeaseSeen, Tally, Transition};
use conveyor_testkit::runtime_api::{Invocation, DEFAULT_DEADLINE};
use conveyor_testkit::world::{digest, AppFixture, ServiceFixture};
use conveyor_testkit::{Function, World};
use serde_json::{json, Value};
use tokio::sync::{OnceCell, Semaphore};

use crate::support::{conveyor, invocation};

/// Worlds at work at once, across both tests of this module (most of a cell's time is spent
/// waiting: SDK backoff, leases expiring).
const WORLDS_AT_ONCE: usize = 6;
/// The deadline the functions of a cell get: a lease they leave behind expires 13 s after.
const DEADLINE: Duration = Duration::from_secs(3);
/// The deadline of a process that is killed: its lease expires 11 s after it started.
const DOOMED_DEADLINE: Duration = Duration::from_secs(1);
/// How late a `latency` cell's call is served.
const LATENCY: Duration = Duration::from_secs(3);
/// The longest an invocation may take to answer (six attempts of several calls, plus waits).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest a cell waits for a lease to expire.
const LEASE_CAP: Duration = Duration::from_secs(20);

/// The faults that fail a call without applying it.
const FAILS: &[&str] = &["throttle", "http500", "http503", "reset"];

static SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(WORLDS_AT_ONCE)));
static CLEAN: OnceCell<Vec<CleanRun>> = OnceCell::const_new();

// ------------------------------------------------------------------------------------------------
// Flows
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Flow {
    Push,
    PushTwoApps,
    Verify,
    Rollback,
    CircuitBreaker,
    Promote,
    Sweep,
    SweepOutbox,
    VerifyAutoPromote,
    SoakAlarm,
    Alarm,
    ApprovalRequest,
    Approve,
    WaveStep,
    WaveRollback,
    NativeVerify,
    NativeRollback,
    Hook,
}

impl Flow {
    const ALL: [Flow; 18] = [
        Flow::Push,
        Flow::PushTwoApps,
        Flow::Verify,
        Flow::VerifyAutoPromote,
        Flow::Rollback,
        Flow::CircuitBreaker,
        Flow::Promote,
        Flow::Sweep,
        Flow::SweepOutbox,
        Flow::SoakAlarm,
        Flow::Alarm,
        Flow::ApprovalRequest,
        Flow::Approve,
        Flow::WaveStep,
        Flow::WaveRollback,
        Flow::NativeVerify,
        Flow::NativeRollback,
        Flow::Hook,
    ];

    fn name(self) -> &'static str {
        match self {
            Flow::Push => "push",
            Flow::PushTwoApps => "push-two-apps",
            Flow::Verify => "verify",
            Flow::Rollback => "rollback",
            Flow::CircuitBreaker => "circuit-breaker",
            Flow::Promote => "promote",
            Flow::Sweep => "sweep",
            Flow::SweepOutbox => "sweep-outbox",
            Flow::VerifyAutoPromote => "verify-auto-promote",
            Flow::SoakAlarm => "soak-alarm",
            Flow::Alarm => "alarm",
            Flow::ApprovalRequest => "approval-request",
            Flow::Approve => "approve",
            Flow::WaveStep => "wave-step",
            Flow::WaveRollback => "wave-rollback",
            Flow::NativeVerify => "native-verify",
            Flow::NativeRollback => "native-rollback",
            Flow::Hook => "hook",
        }
    }

    /// The binary the flow's event goes to.
    fn function(self) -> &'static str {
        match self {
            Flow::Push | Flow::PushTwoApps => "stage-deploy",
            Flow::Promote | Flow::ApprovalRequest | Flow::Approve => "promote",
            Flow::Hook => "deploy-hook",
            _ => "deploy-monitor",
        }
    }

    /// A fresh world with the scene set (through the library), and the flow's event.
    async fn arrange(self) -> Scene {
        let world = World::new().await;
        let base = an_hour_ago();
        let (event, expect) = match self {
            Flow::Push => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                let event = world.push_event("shop-api", "v1.0.0", &digest(1), base);
                let mut expect = Expect::default();
                expect.env(&world, &app, "stage", 1, "in_progress").new_revisions = 1;
                expect.notify(&app, "stage", "deploying");
                (event, expect)
            }
            Flow::PushTwoApps => {
                let api = world.seed_app("shop-api", "shop", false, json!({})).await;
                let web = world.seed_app("shop-web", "shop", false, json!({})).await;
                let event = world.push_event("shop", "v1.0.0", &digest(1), base);
                let mut expect = Expect::default();
                for app in [&api, &web] {
                    expect.env(&world, app, "stage", 1, "in_progress").new_revisions = 1;
                    expect.notify(app, "stage", "deploying");
                }
                (event, expect)
            }
            Flow::Verify => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                push(&world, &app, "v1.0.0", 1, base).await;
                let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
                (events[0].clone(), Expect::verified_in_stage(&world, &app))
            }
            Flow::NativeVerify => {
                // Stage is a blue/green service: ECS deployed v1.0.0 (Conveyor's hook passed it on
                // test traffic) and reports it COMPLETED; deploy-monitor judges it by its service
                // deployment and the revision's digest.
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                let _hook = blue_green_stage(&world, &app, &[]).await;
                let events = native_push(&world, &app, "v1.0.0", 1, base).await;
                (events[0].clone(), Expect::verified_in_stage(&world, &app))
            }
            Flow::Hook => {
                // ECS asks Conveyor's hook about stage's blue/green deployment of v1.0.0 on test
                // traffic (the deployment ran here already; Conveyor's rollout is still in
                // flight): the revision's digest and one probe. The sweep then verifies it.
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                let _hook = blue_green_stage(&world, &app, &[]).await;
                push(&world, &app, "v1.0.0", 1, base).await;
                let state = world.aws.native_settled(&app.stage.cluster, &app.stage.service).await;
                let deployment = &state["deployments"][0];
                let green = deployment["targetServiceRevision"]["arn"].as_str().unwrap_or_default();
                let payload = crate::native::hook_payload(deployment, green, "matrix-execution");
                (payload, Expect::verified_in_stage(&world, &app))
            }
            Flow::NativeRollback => {
                // v1.1.0 fails Conveyor's hook on stage's test traffic: ECS rolled it back before
                // production traffic moved, and reports it FAILED: the image failed, no second
                // rollback, ECS's reason in the alert.
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                let _hook = blue_green_stage(&world, &app, &[2]).await;
                let events = native_push(&world, &app, "v1.0.0", 1, base).await;
                assert_eq!(monitor(&world, events[0].clone()).await, "verified");
                let events = native_push(&world, &app, "v1.1.0", 2, at(base, 10)).await;
                let failed = events.iter().find(|e| e["detail"]["eventName"] == "SERVICE_DEPLOYMENT_FAILED");
                let mut expect = Expect::default();
                let stage = expect.env(&world, &app, "stage", 2, "rolled_back");
                stage.image = pinned(&world, &app.repository, 1);
                stage.last_verified = Some(digest(1));
                stage.by = Some("circuit_breaker");
                expect.notify(&app, "stage", "rolled_back");
                expect.unpromotable.push((app.app.clone(), "v1.1.0".into()));
                (failed.unwrap_or_else(|| panic!("no FAILED event: {events:?}")).clone(), expect)
            }
            Flow::VerifyAutoPromote => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                let environments = json!({
                    "stage": { "cluster": app.stage.cluster, "service": app.stage.service },
                    "prod": { "cluster": app.prod.cluster, "service": app.prod.service,
                              "from": "stage", "promotion": "auto" } });
                let config = json!({ "repository": "shop-api", "container": "api", "environments": environments });
                world.put_app("shop-api", &config).await;
                push(&world, &app, "v1.0.0", 1, base).await;
                let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
                let mut expect = Expect::default();
                expect.env(&world, &app, "stage", 1, "verified").last_verified = Some(digest(1));
                expect.env(&world, &app, "prod", 1, "in_progress").new_revisions = 1;
                expect.notify(&app, "stage", "verified");
                expect.notify(&app, "prod", "promoted");
                (events[0].clone(), expect)
            }
            Flow::SoakAlarm | Flow::Alarm => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                vet(&world, &app, "v1.0.0", 1, base).await;
                let alarm = world.name("shop-api-5xx");
                world.aws.set_alarm(&alarm, "OK").await;
                let soak = if self == Flow::Alarm { "1h" } else { "1s" };
                let environments = json!({
                    "stage": { "cluster": app.stage.cluster, "service": app.stage.service,
                               "soak": soak, "alarms": [alarm] },
                    "prod": { "cluster": app.prod.cluster, "service": app.prod.service } });
                let config = json!({ "repository": "shop-api", "container": "api", "environments": environments });
                world.put_app("shop-api", &config).await;
                push(&world, &app, "v1.1.0", 2, at(base, 10)).await;
                let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
                assert_eq!(monitor(&world, events[0].clone()).await, "soaking");
                world.aws.set_alarm(&alarm, "ALARM").await;
                let event = if self == Flow::Alarm {
                    world.alarm_event(&alarm, Utc::now())
                } else {
                    // It fires and recovers while the image soaks; its event is lost.
                    world.aws.set_alarm(&alarm, "OK").await;
                    tokio::time::sleep(Duration::from_millis(1100)).await;
                    world.soak_timer_event()
                };
                let mut expect = Expect::default();
                let stage = expect.env(&world, &app, "stage", 2, "rolled_back");
                stage.image = pinned(&world, &app.repository, 1);
                stage.last_verified = Some(digest(1));
                stage.by = Some("conveyor");
                expect.notify(&app, "stage", "rolled_back");
                expect.unpromotable.push((app.app.clone(), "v1.1.0".into()));
                (event, expect)
            }
            Flow::Rollback => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                vet(&world, &app, "v1.0.0", 1, base).await;
                promote(&world, "v1.0.0").await;
                let events = world.aws.settle(&app.prod.cluster, &app.prod.service, Settle::Complete).await;
                assert_eq!(monitor(&world, events[0].clone()).await, "verified");
                vet(&world, &app, "v1.1.0", 2, at(base, 10)).await;
                promote(&world, "v1.1.0").await;
                let failed = Settle::Fail { circuit_breaker_rollback: false };
                let events = world.aws.settle(&app.prod.cluster, &app.prod.service, failed).await;
                let mut expect = Expect::default();
                let prod = expect.env(&world, &app, "prod", 2, "rolled_back");
                prod.image = pinned(&world, &app.repository, 1);
                prod.last_verified = Some(digest(1));
                prod.by = Some("conveyor");
                expect.notify(&app, "prod", "rolled_back");
                expect.unpromotable.push((app.app.clone(), "v1.1.0".into()));
                (events[0].clone(), expect)
            }
            Flow::CircuitBreaker => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                vet(&world, &app, "v1.0.0", 1, base).await;
                push(&world, &app, "v1.1.0", 2, at(base, 10)).await;
                let failed = Settle::Fail { circuit_breaker_rollback: true };
                let events = world.aws.settle(&app.stage.cluster, &app.stage.service, failed).await;
                let mut expect = Expect::default();
                let stage = expect.env(&world, &app, "stage", 2, "rolled_back");
                stage.image = pinned(&world, &app.repository, 1);
                stage.last_verified = Some(digest(1));
                stage.by = Some("circuit_breaker");
                expect.notify(&app, "stage", "rolled_back");
                expect.unpromotable.push((app.app.clone(), "v1.1.0".into()));
                (events[0].clone(), expect)
            }
            Flow::Promote => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                vet(&world, &app, "v1.0.0", 1, base).await;
                let mut expect = Expect::default();
                expect.env(&world, &app, "prod", 1, "in_progress").new_revisions = 1;
                expect.notify(&app, "prod", "promoted");
                (json!({ "app": "shop-api", "tag": "v1.0.0" }), expect)
            }
            Flow::ApprovalRequest | Flow::Approve => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                with_approval(&world, "shop-api").await;
                vet(&world, &app, "v1.0.0", 1, base).await;
                let request = json!({ "app": "shop-api", "tag": "v1.0.0" });
                let families = vec![app.stage.family.clone(), app.prod.family.clone()];
                let mut expect = Expect { families, ..Expect::default() };
                if self == Flow::ApprovalRequest {
                    expect.approvals.push((app.app.clone(), "prod", "pending"));
                    expect.notify(&app, "prod", "approval_requested");
                    (world.proven(request, "operator"), expect)
                } else {
                    let ana = conveyor::Invocation {
                        identity: Some("arn:aws:iam::123456789012:user/ana".into()),
                        ..invocation()
                    };
                    let asked = conveyor(&world).promote_function(request, &ana).await.unwrap();
                    assert!(format!("{asked:?}").contains("AwaitingApproval"), "{asked:?}");
                    expect.env(&world, &app, "prod", 1, "in_progress").new_revisions = 1;
                    expect.notify(&app, "prod", "approved");
                    expect.notify(&app, "prod", "promoted");
                    let approve = json!({ "operation": "approve", "app": "shop-api", "environment": "prod" });
                    (world.proven(approve, "approver"), expect)
                }
            }
            Flow::WaveStep | Flow::WaveRollback => {
                // prod on two services, one after the other: the first verified starts the second.
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                let second = second_prod(&world, &app).await;
                vet(&world, &app, "v1.0.0", 1, base).await;
                promote(&world, "v1.0.0").await;
                let events = world.aws.settle(&app.prod.cluster, &app.prod.service, Settle::Complete).await;
                let mut expect = Expect::default();
                expect.families.push(second.family.clone());
                if self == Flow::WaveStep {
                    expect.env(&world, &app, "prod", 1, "in_progress");
                    expect.target(&world, &app, &second, 1, "in_progress").new_revisions = 1;
                    (events[0].clone(), expect)
                } else {
                    assert_eq!(monitor(&world, events[0].clone()).await, "deploying");
                    let failed = Settle::Fail { circuit_breaker_rollback: false };
                    let events = world.aws.settle(&second.cluster, &second.service, failed).await;
                    let seeded = format!("{}/{}:v0.9.0", world.registry(), app.repository);
                    expect.env(&world, &app, "prod", 1, "rolled_back");
                    expect.target(&world, &app, &second, 1, "rolled_back");
                    for expected in expect.envs.iter_mut().filter(|e| e.env == "prod") {
                        (expected.image, expected.by) = (seeded.clone(), Some("conveyor"));
                    }
                    expect.notify(&app, "prod", "rolled_back");
                    expect.unpromotable.push((app.app.clone(), "v1.0.0".into()));
                    (events[0].clone(), expect)
                }
            }
            Flow::Sweep => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                // The push's notification stays in the outbox (SNS down), its COMPLETED event is lost.
                world
                    .aws
                    .fault(&Fault::on("Publish").matching(world.id.clone()).mode(FaultMode::Http500).persistent())
                    .await;
                push(&world, &app, "v1.0.0", 1, base).await;
                world.aws.clear_faults(&world.id).await;
                world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
                let mut expect = Expect::default();
                expect.env(&world, &app, "stage", 1, "verified").last_verified = Some(digest(1));
                expect.notify(&app, "stage", "deploying");
                expect.notify(&app, "stage", "verified");
                (world.schedule_event(), expect)
            }
            Flow::SweepOutbox => {
                let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
                push(&world, &app, "v1.0.0", 1, base).await;
                let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
                // Verified, but its notification stays in the outbox (SNS down).
                world
                    .aws
                    .fault(&Fault::on("Publish").matching(world.id.clone()).mode(FaultMode::Http500).persistent())
                    .await;
                assert_eq!(monitor(&world, events[0].clone()).await, "verified");
                world.aws.clear_faults(&world.id).await;
                let mut expect = Expect::default();
                expect.env(&world, &app, "stage", 1, "verified").last_verified = Some(digest(1));
                expect.notify(&app, "stage", "verified");
                (world.schedule_event(), expect)
            }
        };
        // What the arrangement sent is not the flow's.
        world.notifications().await;
        let mut active_before = BTreeMap::new();
        for family in &expect.families {
            active_before.insert(family.clone(), world.active_revisions(family).await);
        }
        Scene { world, function: self.function(), event, expect, active_before }
    }
}

/// A world set for a flow, the event that starts it, and what must hold after it.
struct Scene {
    world: World,
    function: &'static str,
    event: Value,
    expect: Expect,
    /// ACTIVE revisions of each family touched, before the flow.
    active_before: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Default)]
struct Expect {
    envs: Vec<EnvExpect>,
    /// The task-definition families of both environments of every app of the scene: the flow may
    /// add revisions only where `envs` says.
    families: Vec<String>,
    /// Every transition the flow makes, each to be announced exactly once.
    notifications: Vec<Transition>,
    /// Failed images promote must refuse: (app, tag).
    unpromotable: Vec<(String, String)>,
    /// Where an approval must stand: (app, environment, `pending` or `declined`).
    approvals: Vec<(String, &'static str, &'static str)>,
}

/// What must hold for one app's environment.
struct EnvExpect {
    app: String,
    env: &'static str,
    service: ServiceFixture,
    /// The `api` container's image the service must run.
    image: String,
    /// The digest and state of the environment's latest rollout.
    digest: String,
    kind: &'static str,
    last_verified: Option<String>,
    /// Who rolled back (`conveyor`, `circuit_breaker`).
    by: Option<&'static str>,
    /// How many ACTIVE revisions the flow may add to the service's family.
    new_revisions: usize,
    /// Which of the environment's targets (0: its first).
    target: usize,
}

impl Expect {
    /// `app`'s `env` ends with a rollout of `digest(n)` in state `kind`, running it.
    fn env(
        &mut self,
        world: &World,
        app: &AppFixture,
        env: &'static str,
        n: u32,
        kind: &'static str,
    ) -> &mut EnvExpect {
        let service = if env == "stage" { app.stage.clone() } else { app.prod.clone() };
        for family in [&app.stage.family, &app.prod.family] {
            if !self.families.contains(family) {
                self.families.push(family.clone());
            }
        }
        self.envs.push(EnvExpect {
            app: app.app.clone(),
            env,
            service,
            image: pinned(world, &app.repository, n),
            digest: digest(n),
            kind,
            last_verified: None,
            by: None,
            new_revisions: 0,
            target: 0,
        });
        self.envs.last_mut().unwrap()
    }

    /// [`Expect::env`] for prod's second target, `service`.
    fn target(
        &mut self,
        world: &World,
        app: &AppFixture,
        service: &ServiceFixture,
        n: u32,
        kind: &'static str,
    ) -> &mut EnvExpect {
        let expected = self.env(world, app, "prod", n, kind);
        (expected.service, expected.target) = (service.clone(), 1);
        expected
    }

    /// `app`'s stage ends verified on `digest(1)`, announced once.
    fn verified_in_stage(world: &World, app: &AppFixture) -> Expect {
        let mut expect = Expect::default();
        expect.env(world, app, "stage", 1, "verified").last_verified = Some(digest(1));
        expect.notify(app, "stage", "verified");
        expect
    }

    fn notify(&mut self, app: &AppFixture, env: &str, outcome: &str) {
        self.notifications.push((app.app.clone(), env.to_owned(), outcome.to_owned()));
    }
}

/// An hour ago, to the second (EventBridge times have one-second resolution).
fn an_hour_ago() -> DateTime<Utc> {
    let now = Utc::now() - chrono::Duration::hours(1);
    DateTime::from_timestamp(now.timestamp(), 0).unwrap()
}

fn at(base: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    base + chrono::Duration::seconds(seconds)
}

/// The digest-pinned image stage-deploy writes for `digest(n)` pushed to `repository`.
fn pinned(world: &World, repository: &str, n: u32) -> String {
    format!("{}/{repository}@{}", world.registry(), digest(n))
}

/// Setup through the library: `tag` (`digest(n)`) pushed to the app's repository at `time`.
async fn push(world: &World, app: &AppFixture, tag: &str, n: u32, time: DateTime<Utc>) {
    let event = world.push_event(&app.repository, tag, &digest(n), time);
    let report = conveyor(world).stage(event, &invocation()).await.unwrap();
    assert_eq!(report.apps[0].status, Action::Deploying, "{report:?}");
}

/// Setup: `app`'s stage as a blue/green service whose hook is Conveyor's (served as Lambda runs
/// it, by the returned API, for as long as it lives), probing the test listener once, where a
/// revision running one of `unhealthy` (digest numbers) answers 503.
async fn blue_green_stage(world: &World, app: &AppFixture, unhealthy: &[u32]) -> LambdaApi {
    let (lambda, _) =
        crate::native::serve_hook(world, &app.stage, ("BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT"), unhealthy).await;
    let test_url = world.aws.traffic_url("test", &app.stage.cluster, &app.stage.service);
    let environments = json!({
        "stage": { "cluster": app.stage.cluster, "service": app.stage.service,
                   "test_health_url": test_url, "test_probes": 1 },
        "prod": { "cluster": app.prod.cluster, "service": app.prod.service } });
    let config = json!({ "repository": app.repository, "container": "api", "environments": environments });
    world.put_app(&app.app, &config).await;
    lambda
}

/// Setup through the library: `tag` pushed to a blue/green stage, and ECS's deployment of it
/// ended; the events of the service's deployments so far, the newest last.
async fn native_push(world: &World, app: &AppFixture, tag: &str, n: u32, time: DateTime<Utc>) -> Vec<Value> {
    push(world, app, tag, n, time).await;
    let state = world.aws.native_settled(&app.stage.cluster, &app.stage.service).await;
    let events = state["events"].as_array().cloned().unwrap_or_default();
    events.into_iter().filter(|e| e["detail"]["deploymentId"].is_string()).collect()
}

/// Setup: `app`'s prod runs on a second service too (`prod-2`), after the first (config rewritten).
async fn second_prod(world: &World, app: &AppFixture) -> ServiceFixture {
    let (family, cluster) = (world.name("shop-api-prod-2"), world.name("prod-2"));
    let image = format!("{}/{}:v0.9.0", world.registry(), app.repository);
    let task_definition = world.register(&family, &image, "prod", false).await;
    world.create_service(&cluster, &app.app, &task_definition, 1).await;
    let second = ServiceFixture { cluster, service: app.app.clone(), family, initial_task_definition: task_definition };
    let target = |s: &ServiceFixture| json!({ "cluster": s.cluster, "service": s.service });
    let environments =
        json!({ "stage": target(&app.stage), "prod": { "targets": [target(&app.prod), target(&second)] } });
    let config = json!({ "repository": app.repository, "container": "api", "environments": environments });
    world.put_app(&app.app, &config).await;
    second
}

/// Setup: `app`'s prod takes approvals (its config rewritten).
async fn with_approval(world: &World, app: &str) {
    let name = format!("{}/apps/{app}", world.prefix);
    let mut config: Value = serde_json::from_str(&world.parameter(&name).await.unwrap()).unwrap();
    config["environments"]["prod"]["from"] = json!("stage");
    config["environments"]["prod"]["approval"] = json!(true);
    world.put_app(app, &config).await;
}

/// Setup through the library: the monitor handles `event`; returns its action.
async fn monitor(world: &World, event: Value) -> &'static str {
    let report = conveyor(world).monitor(event, &invocation()).await.unwrap();
    report.results[0].action.as_str()
}

/// Setup through the library: pushed, rolled out to stage and verified there.
async fn vet(world: &World, app: &AppFixture, tag: &str, n: u32, time: DateTime<Utc>) {
    push(world, app, tag, n, time).await;
    let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    assert_eq!(monitor(world, events[0].clone()).await, "verified");
}

/// Setup through the library: a promotion that starts a prod rollout.
async fn promote(world: &World, tag: &str) {
    let request = json!({ "app": "shop-api", "tag": tag });
    let answer = conveyor(world).promote(request, &invocation()).await.unwrap();
    assert_eq!(answer.status, PromoteStatus::Deploying, "{answer:?}");
}

// ------------------------------------------------------------------------------------------------
// Cells
// ------------------------------------------------------------------------------------------------

/// The clean run of a flow: its calls, and whether its invariants held.
#[derive(Debug, Clone)]
struct CleanRun {
    flow: Flow,
    calls: Vec<CallRecord>,
    cell: Cell,
}

/// One cell's verdict.
#[derive(Debug, Clone)]
struct Cell {
    flow: Flow,
    site: Option<CallSite>,
    /// How many calls the clean run made.
    of: usize,
    kind: Option<FaultKind>,
    problems: Vec<String>,
    /// What happened (answers, waits, re-sends): printed with failures.
    notes: Vec<String>,
    /// Calls the faults hit.
    faulted: usize,
    elapsed: Duration,
}

impl Cell {
    fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    fn key(&self) -> (String, String, String) {
        (
            self.flow.name().to_owned(),
            self.site.as_ref().map_or_else(|| "-".to_owned(), CallSite::label),
            self.kind.map_or("clean", FaultKind::label).to_owned(),
        )
    }

    /// The listed bug that excuses this cell's failure, if any.
    fn known(&self) -> Option<&'static KnownBug> {
        let (flow, site, kind) = self.key();
        known_bugs::excusing(&format!("fault_matrix:{flow}/{site}/{kind}"))
    }

    fn line(&self) -> String {
        let (flow, site, kind) = self.key();
        let index = self.site.as_ref().map_or_else(String::new, |s| format!("{}/{}", s.index + 1, self.of));
        let mark = if self.passed() { "✓" } else { "✗" };
        let mut line = format!(
            "{mark} {flow:<16} {site:<24} {index:>5}  {kind:<16} {:>5.1}s  faulted {:>2}",
            self.elapsed.as_secs_f64(),
            self.faulted
        );
        match (self.passed(), self.known()) {
            (false, Some(bug)) => {
                line.push_str(&format!("  known failure ({}): {}", bug.name, self.problems.join("; ")))
            }
            (false, None) => {
                line.push_str(&format!("\n      why: {}", self.problems.join("; ")));
                line.push_str(&format!("\n      saw: {}", self.notes.join(" | ")));
            }
            (true, Some(bug)) => {
                line.push_str(&format!("  (listed as a known failure ({}) but passed: timing, or fixed?)", bug.name))
            }
            (true, None) => {
                if let Some(resent) = self.notes.iter().find(|n| n.starts_with("re-sent")) {
                    line.push_str(&format!("  ({resent}: accepted)"));
                }
            }
        }
        line
    }
}

async fn spawn(name: &str, world: &World, deadline: Duration) -> Function {
    let function = Function::spawn(name, &world.function_env()).await;
    function.set_deadline(deadline);
    function
}

/// An invocation's answer in a few words.
fn brief(answer: &Result<Invocation, String>) -> String {
    let text = match answer {
        Ok(Invocation::Response(value)) => {
            let statuses: Vec<String> = ["/apps", "/results"]
                .iter()
                .filter_map(|p| value.pointer(p)?.as_array().cloned())
                .flatten()
                .map(|r| {
                    let what = r.get("status").or_else(|| r.get("action")).and_then(Value::as_str).unwrap_or("?");
                    format!("{} {what}", r["app"].as_str().unwrap_or("-"))
                })
                .collect();
            match value.get("status").and_then(Value::as_str) {
                Some(status) => format!("ok {status}"),
                None => format!("ok [{}]", statuses.join(", ")),
            }
        }
        Ok(Invocation::Error { error_type, error_message }) => format!("{error_type}: {error_message}"),
        Err(error) => error.lines().next().unwrap_or_default().to_owned(),
    };
    text.chars().take(220).collect()
}

/// Whether the flow's clean run made a `Publish` before call `index` that no release (`UpdateItem`)
/// followed before it: a crash there is between a notification's `Publish` and the release that
/// marks it sent.
fn between_publish_and_release(calls: &[CallRecord], index: usize) -> bool {
    let before = &calls[..index.min(calls.len())];
    match before.iter().rposition(|c| c.operation == "Publish") {
        Some(publish) => !before[publish + 1..].iter().any(|c| c.operation == "UpdateItem"),
        None => false,
    }
}

/// Runs one cell: the flow on a fresh world, `site` failing with `kind` (none: the clean run).
async fn run_cell(
    flow: Flow,
    site: Option<CallSite>,
    kind: Option<FaultKind>,
    clean: Option<Arc<Vec<CallRecord>>>,
) -> (Cell, Vec<CallRecord>) {
    let started = Instant::now();
    // Boxed: arranging runs every flow's setup through the library, a large future.
    let scene = Box::pin(flow.arrange()).await;
    let world = &scene.world;
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let deadline = match kind {
        Some(FaultKind::Crash) => DOOMED_DEADLINE,
        Some(FaultKind::Latency) => DEFAULT_DEADLINE,
        _ => DEADLINE,
    };
    let mut function = spawn(scene.function, world, deadline).await;

    // The flow, with its call failing.
    let mark = world.call_mark().await;
    if let (Some(site), Some(kind)) = (&site, kind) {
        let fault = match kind {
            FaultKind::Crash => site.once(&world.id, kind.mode(LATENCY, function.pid().unwrap_or_default())),
            _ => site.fault(&world.id, kind.mode(LATENCY, 0)),
        };
        world.aws.fault(&fault).await;
    }
    let first = if kind == Some(FaultKind::Latency) {
        // A second delivery of the event, in a second sandbox, while the call is slow.
        let mut twin = spawn(scene.function, world, DEFAULT_DEADLINE).await;
        let second = async {
            let waiting = Instant::now();
            while waiting.elapsed() < Duration::from_secs(10) {
                let log = world.calls_since(mark).await;
                if log.iter().any(|c| c.fault.as_deref() == Some("latency")) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            twin.try_invoke(scene.event.clone(), ANSWER_TIMEOUT).await
        };
        let (first, second) = tokio::join!(function.try_invoke(scene.event.clone(), ANSWER_TIMEOUT), second);
        notes.push(format!("second delivery: {}", brief(&second)));
        first
    } else {
        function.try_invoke(scene.event.clone(), ANSWER_TIMEOUT).await
    };
    let calls = world.calls_since(mark).await;
    world.aws.clear_faults(&world.id).await;
    notes.push(format!("first: {}", brief(&first)));
    // ECS rolls back on a hook's error: whatever fails under it, the hook answers (`IN_PROGRESS`
    // while it cannot check). Only a process killed mid-call errors (Lambda reports it).
    let answered = matches!(&first, Ok(Invocation::Response(answer)) if answer["hookStatus"].is_string());
    if scene.function == "deploy-hook" && kind != Some(FaultKind::Crash) && !answered {
        problems.push(format!("the hook did not answer: {}", brief(&first)));
    }
    let faulted = calls.iter().filter(|c| c.fault.is_some()).count();
    if kind.is_some() && faulted == 0 {
        problems.push(format!(
            "the fault never fired: the rerun made no such call ({:?})",
            calls.iter().map(|c| c.operation.as_str()).collect::<Vec<_>>()
        ));
    }
    if kind == Some(FaultKind::Crash) {
        if first.is_ok() {
            problems.push("the process was not killed".into());
        }
        // Lambda gives the next delivery a new sandbox; by then the dead one's lease expired.
        let waited = world.wait_for_leases(LEASE_CAP).await;
        notes.push(format!("waited {:.1}s for the dead one's lease", waited.as_secs_f64()));
        function = spawn(scene.function, world, DEADLINE).await;
    }

    // The same event again (EventBridge's at-least-once delivery; Lambda's retries of a failed
    // invocation, which come after the leases it left expired).
    for attempt in 0..3 {
        if attempt > 0 {
            let waited = world.wait_for_leases(LEASE_CAP).await;
            notes.push(format!("waited {:.1}s for leases", waited.as_secs_f64()));
        }
        let again = function.try_invoke(scene.event.clone(), ANSWER_TIMEOUT).await;
        notes.push(format!("again: {}", brief(&again)));
        if matches!(again, Ok(Invocation::Response(_))) {
            break;
        }
    }

    // The sweep; again if a lease kept it out.
    let mut sweeper = spawn("deploy-monitor", world, DEADLINE).await;
    for _ in 0..3 {
        let swept = sweeper.try_invoke(world.schedule_event(), ANSWER_TIMEOUT).await;
        notes.push(format!("sweep: {}", brief(&swept)));
        let busy = matches!(&swept, Ok(Invocation::Response(v)) if v.to_string().contains("another invocation is working on it"));
        if !busy && !world.leases().await.iter().any(LeaseSeen::live) {
            break;
        }
        let waited = world.wait_for_leases(LEASE_CAP).await;
        notes.push(format!("waited {:.1}s for leases", waited.as_secs_f64()));
    }

    // A notification is re-sent (same id) only where no standard SNS topic can avoid it: its
    // `Publish` applied with the answer lost, or the function gone between the `Publish` and the
    // release that marks it sent — killed, or its release failing past every retry (a fault that
    // outlasts the invocation is the same window).
    let resend_allowed = match (kind, &site, &clean) {
        (Some(FaultKind::ApplyThenFail), Some(site), _) => site.operation == "Publish",
        (Some(FaultKind::Crash), Some(site), Some(clean)) => between_publish_and_release(clean, site.index),
        (Some(kind), Some(site), Some(clean)) if FAILS.contains(&kind.label()) => {
            site.operation == "UpdateItem" && between_publish_and_release(clean, site.index)
        }
        _ => false,
    };
    problems.extend(check(&scene, resend_allowed, &mut notes).await);
    let of = clean.as_ref().map_or(calls.len(), |c| c.len());
    let cell = Cell { flow, site, of, kind, problems, notes, faulted, elapsed: started.elapsed() };
    (cell, calls)
}

/// The invariants, after the flow, the redelivery and the sweep.
async fn check(scene: &Scene, resend_allowed: bool, notes: &mut Vec<String>) -> Vec<String> {
    let world = &scene.world;
    let mut problems = Vec::new();
    for expected in &scene.expect.envs {
        let place = match expected.target {
            0 => format!("{}/{}", expected.app, expected.env),
            index => format!("{}/{} target {}", expected.app, expected.env, index + 1),
        };
        // ECS: the right image, on an ACTIVE revision.
        let service = world.service(&expected.service.cluster, &expected.service.service).await;
        let running = service.task_definition().unwrap_or_default().to_owned();
        let (definition, _) = world.task_definition(&running).await;
        let image = definition
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some("api"))
            .and_then(|c| c.image())
            .unwrap_or_default();
        if image != expected.image {
            problems.push(format!("{place} runs {image}, not {}", expected.image));
        }
        if definition.status() != Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active) {
            problems.push(format!("{place} runs {}, which is {:?}", short(&running), definition.status()));
        }
        // The state agrees with ECS.
        let item = world.item(&format!("APP#{}", expected.app), &format!("ENV#{}", expected.env)).await;
        let state = item.as_ref().and_then(|item| item.get("state"));
        let state = match expected.target {
            0 => state,
            index => state.and_then(|state| state["targets"].get(index - 1)),
        };
        let Some(state) = state else {
            problems.push(format!("{place}: no state"));
            continue;
        };
        let in_flight = state["rollout"]["state"]["kind"] == "in_progress" || !state["rollback"].is_null();
        if in_flight && item.as_ref().is_some_and(|item| item.get("pending").is_none()) {
            problems.push(format!("{place}: in flight, but not `pending`: the sweep never looks at it"));
        }
        let rollout = &state["rollout"];
        let kind = rollout["state"]["kind"].as_str().unwrap_or("none");
        let digest = rollout["digest"].as_str().unwrap_or("none");
        if digest != expected.digest || kind != expected.kind {
            problems.push(format!(
                "{place}: state says rollout of {} {kind}, expected {} {}",
                short_digest(digest),
                short_digest(&expected.digest),
                expected.kind
            ));
        }
        if let Some(by) = expected.by {
            if rollout["state"]["by"] != by {
                problems.push(format!("{place}: rolled back by {}, expected {by}", rollout["state"]["by"]));
            }
        }
        let verified = state["last_verified"]["digest"].as_str();
        if verified != expected.last_verified.as_deref() {
            problems.push(format!(
                "{place}: last verified {}, expected {}",
                verified.map_or("none", short_digest),
                expected.last_verified.as_deref().map_or("none", short_digest)
            ));
        }
        let agrees = match kind {
            "in_progress" => rollout["task_definition_arn"] == running.as_str(),
            "verified" => {
                rollout["task_definition_arn"] == running.as_str()
                    && state["last_verified"]["task_definition_arn"] == running.as_str()
            }
            "rolled_back" => rollout["state"]["to"] == running.as_str(),
            _ => true,
        };
        if !agrees {
            problems.push(format!(
                "{place}: the state ({kind} {}, to {}) does not name what ECS runs ({})",
                rollout["task_definition_arn"].as_str().map_or_else(|| "-".to_owned(), short),
                rollout["state"]["to"].as_str().map_or_else(|| "-".to_owned(), short),
                short(&running)
            ));
        }
    }
    // One new revision per real rollout, none where nothing rolled out.
    for (family, before) in &scene.active_before {
        let allowed: usize =
            scene.expect.envs.iter().filter(|e| &e.service.family == family).map(|e| e.new_revisions).sum();
        let added: Vec<String> = world.active_revisions(family).await.difference(before).map(|a| short(a)).collect();
        if added.len() > allowed {
            problems.push(format!(
                "{} new ACTIVE revisions of {family} ({}), at most {allowed} expected",
                added.len(),
                added.join(", ")
            ));
        }
    }
    // Nothing locked, nothing left to send.
    for lease in world.leases().await {
        let how =
            if lease.live() { "live".to_owned() } else { format!("expired {}", lease.expires_at.format("%H:%M:%S")) };
        problems.push(format!("lease left on {} by {} ({how})", lease.item, lease.owner));
    }
    for (item, ids) in world.outboxes().await {
        problems.push(format!("never delivered from {item}: {}", ids.join(", ")));
    }
    // Exactly one notification per transition.
    let tally = Tally::of(&world.notifications().await);
    for transition in &scene.expect.notifications {
        let (sent, distinct) = (tally.sent(transition), tally.distinct(transition));
        let what = format!("{} {} {}", transition.0, transition.1, transition.2);
        if distinct != 1 {
            problems.push(format!("{what}: {distinct} notifications (ids), {sent} received: exactly 1 expected"));
        } else if sent > 1 {
            let resent = format!("re-sent: {what} received {sent}× (one id)");
            if resend_allowed {
                notes.push(resent);
            } else {
                problems.push(resent);
            }
        }
    }
    for (transition, ids) in &tally.by_transition {
        if !scene.expect.notifications.contains(transition) {
            problems.push(format!(
                "unexpected notification {} {} {} ×{}",
                transition.0,
                transition.1,
                transition.2,
                ids.len()
            ));
        }
    }
    for (app, env, expected) in &scene.expect.approvals {
        let state = world.record(app, env).await.unwrap_or_default();
        if state["approval"]["state"] != *expected {
            problems.push(format!("{app}/{env}: the approval is {}, not {expected}", state["approval"]["state"]));
        }
        let item = world.item(&format!("APP#{app}"), &format!("ENV#{env}")).await.unwrap_or_default();
        if *expected == "pending" && item.get("pending").is_none() {
            problems.push(format!("{app}/{env}: an approval pending, but not `pending`: it never expires"));
        }
    }
    // A failed image stays unpromotable.
    for (app, tag) in &scene.expect.unpromotable {
        let request = json!({ "app": app, "tag": tag });
        match conveyor(world).promote(request, &invocation()).await {
            Err(error) if error.error_type() == conveyor::error::ErrorType::NotVetted => {}
            Err(error) => problems.push(format!("promote {app} {tag}: {}, not NotVetted", error.error_type())),
            Ok(answer) => problems.push(format!("promote {app} {tag} was accepted: {}", answer.status)),
        }
    }
    problems
}

fn short(arn: &str) -> String {
    arn.rsplit_once('/').map_or(arn, |(_, name)| name).to_owned()
}

fn short_digest(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

// ------------------------------------------------------------------------------------------------
// The matrix
// ------------------------------------------------------------------------------------------------

fn full() -> bool {
    std::env::var("CONVEYOR_MATRIX").is_ok_and(|v| v == "full")
}

/// The flows to run: every one, or with `CONVEYOR_MATRIX_FLOW=NAME` only that one (ignored in CI).
fn flows() -> Vec<Flow> {
    match std::env::var("CONVEYOR_MATRIX_FLOW") {
        Ok(name) if conveyor_testkit::knobs::shrinks("CONVEYOR_MATRIX_FLOW", &name) => {
            Flow::ALL.into_iter().filter(|flow| flow.name() == name).collect()
        }
        _ => Flow::ALL.to_vec(),
    }
}

/// `CONVEYOR_MATRIX=clean`: only the clean runs (to see each flow's calls); ignored in CI.
fn only_clean() -> bool {
    conveyor_testkit::knobs::shrinks("CONVEYOR_MATRIX", "clean")
}

/// The clean run of every flow (shared by both tests).
async fn clean_runs() -> &'static [CleanRun] {
    CLEAN
        .get_or_init(|| async {
            let flows = flows();
            let jobs: Vec<Job<(Cell, Vec<CallRecord>)>> =
                flows.iter().map(|&flow| Box::pin(run_cell(flow, None, None, None)) as Job<_>).collect();
            let runs = bounded_by(jobs, SLOTS.clone()).await;
            flows
                .iter()
                .zip(runs)
                .map(|(&flow, run)| {
                    let (cell, calls) = run.unwrap_or_else(|panic| panic!("clean run of {}: {panic}", flow.name()));
                    CleanRun { flow, calls, cell }
                })
                .collect()
        })
        .await
}

/// Whether a call is made under the flow's lease (from the first write to the state table on):
/// where a second delivery meets the first.
fn under_lease(calls: &[CallRecord], index: usize) -> bool {
    calls
        .iter()
        .position(|c| c.operation == "UpdateItem" || c.operation == "TransactWriteItems")
        .is_some_and(|first| index >= first)
}

/// The cells of one flow: `(site, kind)`.
fn cells_of(flow_index: usize, calls: &[CallRecord], crashes: bool) -> Vec<(CallSite, FaultKind)> {
    let sites = CallSite::all(calls);
    let mut cells = Vec::new();
    let full = full();
    let mut latency_picked = false;
    for site in sites {
        let k = site.index;
        if crashes {
            if full || (k + flow_index) % 4 == 0 {
                cells.push((site.clone(), FaultKind::Crash));
            }
            continue;
        }
        for (m, kind) in FaultKind::FAILING.iter().enumerate() {
            if full || (k + flow_index) % FaultKind::FAILING.len() == m {
                cells.push((site.clone(), *kind));
            }
        }
        if under_lease(calls, k) && (full || (!latency_picked && flow_index % 3 == 0)) {
            latency_picked = true;
            cells.push((site.clone(), FaultKind::Latency));
        }
    }
    cells
}

/// Runs the fault or the crash cells of every flow, prints them and fails on unknown failures.
async fn run_matrix(crashes: bool) {
    let started = Instant::now();
    let clean = clean_runs().await;
    let what = if crashes { "crash" } else { "fault" };
    let mut lines = vec![format!(
        "{what} matrix ({}): flows {}, calls {}",
        if full() { "full, CONVEYOR_MATRIX=full" } else { "CI-sized; CONVEYOR_MATRIX=full for all" },
        clean.len(),
        clean.iter().map(|c| c.calls.len()).sum::<usize>()
    )];
    for run in clean {
        let ops: Vec<String> = CallSite::all(&run.calls).iter().map(CallSite::label).collect();
        lines.push(format!("  {:<16} {} calls: {}", run.flow.name(), run.calls.len(), ops.join(" → ")));
    }
    let mut cells: Vec<Cell> = clean.iter().map(|run| run.cell.clone()).collect();
    let mut jobs: Vec<Job<(Cell, Vec<CallRecord>)>> = Vec::new();
    let mut plan = Vec::new();
    for (flow_index, run) in clean.iter().enumerate() {
        let calls = Arc::new(run.calls.clone());
        let sites = if only_clean() { Vec::new() } else { cells_of(flow_index, &run.calls, crashes) };
        for (site, kind) in sites {
            plan.push((run.flow, site.clone(), kind, calls.len()));
            jobs.push(Box::pin(run_cell(run.flow, Some(site), Some(kind), Some(calls.clone()))));
        }
    }
    let planned = jobs.len();
    for ((flow, site, kind, of), result) in plan.into_iter().zip(bounded_by(jobs, SLOTS.clone()).await) {
        match result {
            Ok((cell, _)) => cells.push(cell),
            Err(panic) => cells.push(Cell {
                flow,
                site: Some(site),
                of,
                kind: Some(kind),
                problems: vec![format!("the cell panicked: {panic}")],
                notes: Vec::new(),
                faulted: 0,
                elapsed: Duration::ZERO,
            }),
        }
    }
    let failed: Vec<&Cell> = cells.iter().filter(|c| !c.passed() && c.known().is_none()).collect();
    let known = cells.iter().filter(|c| !c.passed() && c.known().is_some()).count();
    let passed = cells.iter().filter(|c| c.passed()).count();
    let resent = cells.iter().filter(|c| c.notes.iter().any(|n| n.starts_with("re-sent"))).count();
    lines.extend(cells.iter().map(Cell::line));
    let mut by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for cell in &cells {
        let entry = by_kind.entry(cell.kind.map_or("clean", FaultKind::label)).or_default();
        entry.0 += 1;
        entry.1 += usize::from(cell.passed());
    }
    lines.push(format!(
        "{what} matrix: {} cells ({planned} faulted + {} clean), {passed} passed, {known} known failures, {} failed; {resent} with an accepted re-send; by fault: {}; {:.0}s",
        cells.len(),
        clean.len(),
        failed.len(),
        by_kind.iter().map(|(k, (n, p))| format!("{k} {p}/{n}")).collect::<Vec<_>>().join(", "),
        started.elapsed().as_secs_f64()
    ));
    for bug in known_bugs::KNOWN_BUGS {
        let hit = cells.iter().filter(|c| !c.passed() && c.known().is_some_and(|b| b.name == bug.name)).count();
        if hit > 0 {
            lines.push(format!("known failure {} ({hit} cells): {}", bug.name, bug.diagnosis));
        }
    }
    println!("{}", lines.join("\n"));
    assert!(
        failed.is_empty(),
        "{} {what} cell(s) failed:\n{}",
        failed.len(),
        failed.iter().map(|c| c.line()).collect::<Vec<_>>().join("\n")
    );
}

/// Every call of every flow failed persistently (throttled, 500, 503, reset, applied with the
/// answer lost), and slowed while a second delivery runs: after the redelivery and a sweep, the
/// invariants hold.
#[test]
fn every_call_of_every_flow_survives_every_fault() {
    crate::support::on_lambda_sized_stacks(run_matrix(false));
}

/// The function killed when each call of each flow arrives: a new process given the same event
/// after the dead one's lease expired, then a sweep, leave the invariants holding.
#[test]
fn every_call_of_every_flow_survives_a_crash() {
    crate::support::on_lambda_sized_stacks(run_matrix(true));
}

// ------------------------------------------------------------------------------------------------
// A holder that stopped between UpdateService and its commit
// ------------------------------------------------------------------------------------------------

/// How the prod rollback's holder stops after its `UpdateService`, before its commit.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Its commit (`TransactWriteItems`) throttled past every retry: the invocation fails, and its
    /// release keeps the rollback's intent.
    Throttled,
    /// The process killed when its commit arrives: its lease is left to expire.
    Killed,
}

/// Who takes prod's lease next, once the stopped holder's lease expired.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// `promote` of the very image that failed.
    PromoteFailed,
    /// `promote` of another vetted image (the one prod went back to).
    PromoteOther,
    /// `conveyor pause` of prod (the library, as the CLI runs it).
    Pause,
    /// deploy-monitor's schedule.
    Sweep,
    /// Lambda's retry of the `FAILED` event.
    MonitorRetry,
}

impl Next {
    const ALL: [Next; 5] = [Next::PromoteFailed, Next::PromoteOther, Next::Pause, Next::Sweep, Next::MonitorRetry];
}

/// One cell: the `rollback` flow's holder stopped by `stop`, then `next`, then Lambda's retry of
/// the event and a sweep. Returns its line, and its problems.
async fn after_a_stopped_rollback(stop: Stop, next: Next) -> (String, Vec<String>) {
    let scene = Flow::Rollback.arrange().await;
    let world = &scene.world;
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let failed_image = pinned(world, "shop-api", 2);
    let prod = &scene.expect.envs[0].service;

    // The rollback: `UpdateService` done, intent recorded, its commit never applied.
    let deadline = if matches!(stop, Stop::Killed) { DOOMED_DEADLINE } else { DEADLINE };
    let mut function = spawn("deploy-monitor", world, deadline).await;
    let fault = Fault::on("TransactWriteItems").matching(world.id.clone());
    let fault = match stop {
        Stop::Throttled => fault.mode(FaultMode::Throttle).persistent(),
        Stop::Killed => fault.mode(FaultMode::Kill { pid: function.pid().unwrap_or_default() }).count(1),
    };
    world.aws.fault(&fault).await;
    let first = function.try_invoke(scene.event.clone(), ANSWER_TIMEOUT).await;
    world.aws.clear_faults(&world.id).await;
    notes.push(format!("first: {}", brief(&first)));
    let item = world.item("APP#shop-api", "ENV#prod").await.unwrap_or_default();
    if item.get("intent").is_none() || world.running_image(prod).await == failed_image {
        problems.push(format!("the scene is not set: no rollback issued and left uncommitted ({item})"));
    }
    let waited = world.wait_for_leases(LEASE_CAP).await;
    notes.push(format!("waited {:.1}s for the stopped holder's lease", waited.as_secs_f64()));

    // Whoever comes next.
    let promote_of = |tag: &str| json!({ "app": "shop-api", "tag": tag });
    let answer = match next {
        Next::PromoteFailed | Next::PromoteOther => {
            let tag = if matches!(next, Next::PromoteFailed) { "v1.1.0" } else { "v1.0.0" };
            let mut promote = spawn("promote", world, DEADLINE).await;
            let answer = promote.try_invoke(promote_of(tag), ANSWER_TIMEOUT).await;
            let busy = matches!(&answer, Ok(Invocation::Error { error_type, .. }) if error_type == "Busy");
            if !busy {
                problems.push(format!("promote {tag} while the rollback is unsettled: {}, not Busy", brief(&answer)));
            }
            brief(&answer)
        }
        Next::Pause => {
            let conveyor = conveyor(world);
            let config = conveyor.configs.get().await.unwrap();
            let app = config.app(&conveyor::types::AppName::parse("shop-api").unwrap()).unwrap();
            let prod = conveyor::types::Environment::PROD;
            let paused = conveyor::pause::pause(
                &conveyor.fleet,
                conveyor.leases(),
                app,
                prod,
                "incident",
                &conveyor::types::Requester::default(),
                &invocation(),
            )
            .await;
            if !matches!(&paused, Err(error) if error.error_type() == conveyor::error::ErrorType::Busy) {
                problems.push(format!("pause of prod while the rollback is unsettled: {paused:?}, not Busy"));
            }
            format!("{:?}", paused.map_err(|e| e.to_string()))
        }
        Next::Sweep | Next::MonitorRetry => {
            let event = if matches!(next, Next::Sweep) { world.schedule_event() } else { scene.event.clone() };
            let mut monitor = spawn("deploy-monitor", world, DEADLINE).await;
            brief(&monitor.try_invoke(event, ANSWER_TIMEOUT).await)
        }
    };
    notes.push(format!("next: {answer}"));
    if world.running_image(prod).await == failed_image {
        problems.push("the failed image is back on prod".into());
    }

    // Lambda's retry of the failed invocation, then the sweep: the rollback is settled as Conveyor's.
    function = spawn("deploy-monitor", world, DEADLINE).await;
    notes.push(format!("retry: {}", brief(&function.try_invoke(scene.event.clone(), ANSWER_TIMEOUT).await)));
    let swept = function.try_invoke(world.schedule_event(), ANSWER_TIMEOUT).await;
    notes.push(format!("sweep: {}", brief(&swept)));
    problems.extend(check(&scene, false, &mut notes).await);
    let mark = if problems.is_empty() { "✓" } else { "✗" };
    let mut line = format!("{mark} rollback stopped before its commit ({stop:?}), then {next:?}");
    if !problems.is_empty() {
        line.push_str(&format!("\n      why: {}\n      saw: {}", problems.join("; "), notes.join(" | ")));
    }
    (line, problems)
}

/// The `rollback` flow's holder stopped between its `UpdateService` and its commit (the commit
/// throttled past every retry, or the process killed on it): once its lease expired, whoever takes
/// prod's lease next (a promotion of the image that failed or of another one, a pause, the sweep,
/// deploy-monitor's retry) never brings the failed image back to prod, and once Lambda's retry
/// and a sweep ran, the `rollback` flow's invariants hold (rolled back by Conveyor, the image
/// failed and unpromotable, one notification, nothing locked or left to send).
#[test]
fn whoever_comes_after_a_rollback_stopped_before_its_commit_never_brings_the_failed_image_back() {
    crate::support::on_lambda_sized_stacks(rollback_stopped_before_its_commit());
}

async fn rollback_stopped_before_its_commit() {
    let mut jobs: Vec<Job<(String, Vec<String>)>> = Vec::new();
    for stop in [Stop::Throttled, Stop::Killed] {
        for next in Next::ALL {
            jobs.push(Box::pin(after_a_stopped_rollback(stop, next)));
        }
    }
    let results = bounded_by(jobs, SLOTS.clone()).await;
    let lines: Vec<String> =
        results.iter().map(|r| r.as_ref().map_or_else(|p| format!("✗ panicked: {p}"), |(l, _)| l.clone())).collect();
    println!("{}", lines.join("\n"));
    let failed = results.iter().filter(|r| r.as_ref().map_or(true, |(_, problems)| !problems.is_empty())).count();
    assert_eq!(failed, 0, "{failed} cell(s) failed:\n{}", lines.join("\n"));
}
