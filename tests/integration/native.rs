//! Native ECS deployments (contract, *Native ECS deployment strategies and lifecycle hooks*) through
//! the real binaries: stage-deploy starts a blue/green, linear or canary deployment with one
//! `UpdateService`; the local AWS steps it through ECS's stages and calls the deploy-hook binary
//! through a Lambda Invoke API; the hook's answers decide whether production traffic ever moves.

use std::sync::Arc;

use chrono::{Duration, Utc};
use conveyor_testkit::functions::{self, stage_deploy};
use conveyor_testkit::lambda_api::LambdaApi;
use conveyor_testkit::local_aws::{Fault, FaultMode, Settle};
use conveyor_testkit::world::{digest, ServiceFixture};
use conveyor_testkit::{Function, World};
use serde_json::{json, Value};

/// One app (`shop-api`) whose only environment, dev, runs a native service with Conveyor as its
/// hook; the hook is served behind a local Lambda Invoke API, as ECS calls it.
struct Native {
    world: World,
    service: ServiceFixture,
    lambda: LambdaApi,
    hook_name: String,
    pushes: Function,
    monitor: Function,
}

/// A service deployment and its blue and green revisions.
struct Rolled {
    deployment: Value,
    blue: String,
    green: String,
}

impl Native {
    /// `strategy` with Conveyor's hook at `hook_stage`; test traffic to a revision running one of
    /// `unhealthy` (digest numbers) answers 503.
    async fn new(strategy: &str, hook_stage: &str, unhealthy: &[u32]) -> Native {
        Native::in_world(World::new().await, strategy, hook_stage, unhealthy).await
    }

    async fn in_world(world: World, strategy: &str, hook_stage: &str, unhealthy: &[u32]) -> Native {
        // `dev`: an entry environment on a cluster the IAM test's template lists for stage-deploy.
        let cluster = world.name("pipeline-dev");
        let test_url = world.aws.traffic_url("test", &cluster, "shop-api");
        let config = json!({ "test_health_url": test_url, "test_probes": 2 });
        let [service]: [ServiceFixture; 1] =
            world.seed_pipeline("shop-api", &[("dev", config)]).await.try_into().unwrap();
        let (lambda, hook_name) = serve_hook(&world, &service, (strategy, hook_stage), unhealthy).await;
        let (pushes, monitor) =
            (stage_deploy(&world).await, functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await);
        Native { world, service, lambda, hook_name, pushes, monitor }
    }

    async fn push(&self, tag: &str, n: u32) {
        let push = self.world.push_event("shop-api", tag, &digest(n), Utc::now() - Duration::minutes(1));
        let report = self.pushes.invoke(push).await.response();
        assert_eq!(report["apps"][0]["status"], "deploying", "{report}");
    }

    /// The payloads the hook was invoked with so far (by the local AWS, as ECS invokes it).
    fn hook_calls(&self) -> Vec<Value> {
        self.lambda.invoked().into_iter().filter(|i| i.function == self.hook_name).map(|i| i.payload).collect()
    }

    async fn settled(&self) -> Value {
        self.world.aws.native_settled(&self.service.cluster, &self.service.service).await
    }

    /// v1.0.0 (digest 1) pushed and its blue/green deployment ended, deploy-monitor not told yet:
    /// Conveyor's rollout is still in flight.
    async fn rolled_out(&self) -> Rolled {
        self.push("v1.0.0", 1).await;
        let state = self.settled().await;
        let deployment = state["deployments"][0].clone();
        let revision = |pointer: &str| deployment.pointer(pointer).and_then(Value::as_str).unwrap().to_owned();
        let (blue, green) = (revision("/sourceServiceRevisions/0/arn"), revision("/targetServiceRevision/arn"));
        Rolled { deployment, blue, green }
    }

    /// Invokes the hook directly (as ECS, or anyone allowed to invoke it, could).
    async fn hook(&self, payload: Value) -> Value {
        let hook = Function::spawn("deploy-hook", &self.world.function_env()).await;
        hook.invoke(payload).await.response()
    }
}

/// Makes `service` a native service (`strategy`) whose hook at `hook_stage` is Conveyor's,
/// served as Lambda runs it by the returned API (for as long as it lives) under the returned
/// name; test traffic to a revision running one of `unhealthy` (digest numbers) answers 503.
pub async fn serve_hook(
    world: &World,
    service: &ServiceFixture,
    (strategy, hook_stage): (&str, &str),
    unhealthy: &[u32],
) -> (LambdaApi, String) {
    let lambda = LambdaApi::start().await;
    let hook_name = world.name("deploy-hook");
    lambda.add(&hook_name, Arc::new(Function::spawn("deploy-hook", &world.function_env()).await));
    let unhealthy: Vec<String> = unhealthy.iter().map(|n| digest(*n)).collect();
    world.aws.native(std::slice::from_ref(&service.cluster), &lambda.url(), &unhealthy, None).await;
    world.use_native_strategy(service, strategy, hook_stage, &hook_name).await;
    (lambda, hook_name)
}

/// What ECS sends Conveyor's hook at `POST_TEST_TRAFFIC_SHIFT` of service deployment
/// `deployment` (as the local AWS reports it), green being `revision` with all test traffic.
pub fn hook_payload(deployment: &Value, revision: &str, execution_id: &str) -> Value {
    json!({
        "executionId": execution_id,
        "lifecycleStage": "POST_TEST_TRAFFIC_SHIFT",
        "resourceArn": deployment["serviceDeploymentArn"],
        "executionDetails": {
            "serviceArn": deployment["serviceArn"],
            "targetServiceRevisionArn": revision,
            "testTrafficWeights": { revision: 100 },
            "productionTrafficWeights": { revision: 0 }
        }
    })
}

/// A good image through blue/green, then a bad one the hook refuses (the IAM test runs it too).
pub async fn blue_green_story(world: World) {
    let native = Native::in_world(world, "BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &[2]).await;
    for (tag, n, status) in [("v1.0.0", 1, "SUCCESSFUL"), ("v2.0.0", 2, "ROLLBACK_SUCCESSFUL")] {
        native.push(tag, n).await;
        let state = native.settled().await;
        assert_eq!(state["deployments"][0]["status"], status, "{state}");
        for event in state["events"].as_array().unwrap() {
            native.monitor.invoke(event.clone()).await.response();
        }
    }
}

#[tokio::test]
async fn blue_green_with_a_good_image_probes_test_traffic_then_moves_production_and_is_verified() {
    let native = Native::new("BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &[]).await;
    native.push("v1.0.0", 1).await;
    let state = native.settled().await;
    let deployment = &state["deployments"][0];
    assert_eq!(deployment["status"], "SUCCESSFUL", "{state}");

    // Two probes in a row (test_probes: 2): one IN_PROGRESS answer, its progress passed back.
    let calls = native.hook_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c["lifecycleStage"] == "POST_TEST_TRAFFIC_SHIFT"));
    assert_eq!(calls[0]["executionId"], calls[1]["executionId"], "one execution across IN_PROGRESS");
    assert_eq!(calls[1]["hookDetails"]["conveyor"]["passed"], 1, "{calls:?}");

    let events = state["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{state}");
    // Judged by the service deployment ECS names current (`SUCCESSFUL`) and its revision's digest.
    let (made, report) = calls_of(&native, &native.monitor, events[0].clone()).await;
    assert_eq!(report["results"][0]["action"], "verified", "{report}");
    for read in ["DescribeServices", "DescribeServiceDeployments", "DescribeServiceRevisions"] {
        assert_eq!(made.get(read), Some(&1), "{read}: {made:?}");
    }
}

#[tokio::test]
async fn blue_green_with_a_bad_image_fails_on_test_traffic_and_production_never_moves() {
    let native = Native::new("BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &[2]).await;
    native.push("v2.0.0", 2).await;
    let state = native.settled().await;
    let deployment = &state["deployments"][0];
    assert_eq!(deployment["status"], "ROLLBACK_SUCCESSFUL", "{state}");
    let arn = deployment["serviceDeploymentArn"].as_str().unwrap();
    assert_eq!(state["traffic"][arn]["production_peak"], 0, "production traffic reached the bad image: {state}");
    let reason = deployment["rollback"]["reason"].as_str().unwrap();
    assert!(reason.contains("lifecycle hook") && reason.contains("FAILED"), "{reason}");

    // The hook's reason is kept with its execution; ECS's rollback leaves the image failed,
    // announced once, with no second rollback by Conveyor.
    let execution = native.hook_calls()[0]["executionId"].as_str().unwrap().to_owned();
    let failure = native.world.item("APP#shop-api", &format!("HOOK#{execution}")).await.unwrap();
    // Its probes got 503 (or, on a machine loaded enough, no answer in time: a failure too).
    let reason = failure["reason"].as_str().unwrap();
    assert!(reason.starts_with("test_health_url failed on test traffic"), "{failure}");
    assert!(reason.contains("HTTP 503") || reason.contains("timed out"), "{failure}");
    let before = native.world.service(&native.service.cluster, &native.service.service).await.deployments().len();
    for event in state["events"].as_array().unwrap() {
        native.monitor.invoke(event.clone()).await.response();
    }
    let after = native.world.service(&native.service.cluster, &native.service.service).await.deployments().len();
    assert_eq!(after, before, "Conveyor rolled back a second time");
    let notes = native.world.notifications().await;
    let outcomes: Vec<&Value> = notes.iter().map(|n| &n["MessageAttributes"]["outcome"]).collect();
    assert_eq!(outcomes, [&json!("deploying"), &json!("rolled_back")], "{notes:?}");
    let alert = notes[1]["Message"]["content"]["description"].as_str().unwrap();
    assert!(alert.contains("ECS already rolled back the blue/green deployment"), "{alert}");
    assert!(alert.contains("Conveyor's lifecycle hook answered FAILED at POST_TEST_TRAFFIC_SHIFT"), "{alert}");
    assert!(alert.contains("HTTP 503"), "{alert}");
    assert!(
        alert.contains("ECS rolled the deployment back: Service deployment rolled back: lifecycle hook"),
        "{alert}"
    );
    let record = native.world.record("shop-api", "dev").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "rolled_back", "{record}");
}

#[tokio::test]
async fn linear_fails_at_its_second_step_and_traffic_goes_back_to_blue() {
    let native = Native::new("LINEAR", "PRE_PRODUCTION_TRAFFIC_SHIFT", &[]).await;
    native.push("v3.0.0", 3).await;
    // The first step (50 %) passes; then the new image turns bad before the second.
    let started = std::time::Instant::now();
    loop {
        let state = native.world.aws.native_state(&native.service.cluster, &native.service.service).await;
        let arn = state["deployments"][0]["serviceDeploymentArn"].as_str().unwrap_or_default().to_owned();
        if state["traffic"][&arn]["production_peak"] == 50 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "no first step: {state}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    native
        .world
        .aws
        .native(std::slice::from_ref(&native.service.cluster), &native.lambda.url(), &[digest(3)], None)
        .await;
    let state = native.settled().await;
    let deployment = &state["deployments"][0];
    assert_eq!(deployment["status"], "ROLLBACK_SUCCESSFUL", "{state}");
    let arn = deployment["serviceDeploymentArn"].as_str().unwrap();
    assert_eq!(state["traffic"][arn]["production_peak"], 50, "{state}");
    let calls = native.hook_calls();
    assert!(calls.iter().all(|c| c["lifecycleStage"] == "PRE_PRODUCTION_TRAFFIC_SHIFT"), "{calls:?}");
    let executions: std::collections::BTreeSet<&str> =
        calls.iter().map(|c| c["executionId"].as_str().unwrap()).collect();
    assert_eq!(executions.len(), 2, "one execution per production step");
}

#[tokio::test]
async fn canary_with_a_good_image_is_checked_before_each_production_step() {
    let native = Native::new("CANARY", "PRE_PRODUCTION_TRAFFIC_SHIFT", &[]).await;
    native.push("v4.0.0", 4).await;
    let state = native.settled().await;
    assert_eq!(state["deployments"][0]["status"], "SUCCESSFUL", "{state}");
    let calls = native.hook_calls();
    let steps: Vec<(u64, u64)> = calls
        .iter()
        .map(|c| {
            let target = c["executionDetails"]["targetServiceRevisionArn"].as_str().unwrap();
            let weight = c["executionDetails"]["productionTrafficWeights"][target].as_u64().unwrap();
            (weight, c["hookDetails"]["conveyor"]["passed"].as_u64().unwrap_or(0))
        })
        .collect();
    // Before the canary step (0 %), then before the rest (10 %): two probes each.
    assert_eq!(steps, [(0, 0), (0, 1), (10, 0), (10, 1)], "{calls:?}");
}

#[tokio::test]
async fn a_digest_mismatch_fails_and_an_execution_answered_failed_stays_failed() {
    let native = Native::new("BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &[]).await;
    let Rolled { deployment, blue, green } = native.rolled_out().await;
    let (deployment, blue, green) = (&deployment, blue.as_str(), green.as_str());

    let answer = native.hook(hook_payload(deployment, blue, "e-mismatch")).await;
    assert_eq!(answer["hookStatus"], "FAILED", "{answer}");
    let reason = answer["hookDetails"]["conveyor"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("digest mismatch"), "{reason}");

    // The same execution again, now naming the right revision: still FAILED, for the same reason.
    let again = native.hook(hook_payload(deployment, green, "e-mismatch")).await;
    assert_eq!(again["hookStatus"], "FAILED", "{again}");
    assert_eq!(again["hookDetails"]["conveyor"]["reason"], reason);
    // Another execution on the right revision passes its first probe.
    let fresh = native.hook(hook_payload(deployment, green, "e-fresh")).await;
    assert_eq!(fresh["hookStatus"], "IN_PROGRESS", "{fresh}");
    assert_eq!(fresh["callBackDelay"], 10);
}

#[tokio::test]
async fn foreign_deployments_rollbacks_and_malformed_payloads_are_answered_never_errors() {
    let native = Native::new("BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &[]).await;
    let deployment = json!({
        "serviceDeploymentArn": "arn:aws:ecs:us-east-1:123456789012:service-deployment/other/web/x",
        "serviceArn": "arn:aws:ecs:us-east-1:123456789012:service/other/web"
    });
    let foreign = native.hook(hook_payload(&deployment, "arn:rev", "e1")).await;
    assert_eq!(foreign["hookStatus"], "SUCCEEDED", "{foreign}");

    let ours = json!({
        "serviceDeploymentArn": "arn:aws:ecs:us-east-1:123456789012:service-deployment/x/shop-api/y",
        "serviceArn": format!("arn:aws:ecs:us-east-1:123456789012:service/{}/shop-api", native.service.cluster)
    });
    let idle = native.hook(hook_payload(&ours, "arn:rev", "e2")).await;
    assert_eq!(idle["hookStatus"], "SUCCEEDED", "no rollout of Conveyor's in flight: {idle}");
    let mut rollback = hook_payload(&ours, "arn:rev", "e3");
    rollback["executionDetails"]["testTrafficWeights"] = json!({ "arn:rev": 0 });
    let rolled = native.hook(rollback).await;
    assert_eq!(rolled["hookStatus"], "SUCCEEDED", "{rolled}");
    assert!(rolled["hookDetails"]["conveyor"]["reason"].as_str().unwrap().contains("rollback"));

    for malformed in [json!(null), json!("text"), json!({ "executionId": 7 }), json!({ "executionDetails": [] })] {
        let answer = native.hook(malformed.clone()).await;
        assert_eq!(answer["hookStatus"], "FAILED", "{malformed}: {answer}");
        assert!(!answer["hookDetails"]["conveyor"]["reason"].as_str().unwrap().is_empty());
    }
}

/// The calls `function` makes handling `payload` (by operation), and its answer.
async fn calls_of(
    native: &Native,
    function: &Function,
    payload: Value,
) -> (std::collections::BTreeMap<String, u64>, Value) {
    let before = native.world.aws.calls(&native.world.id).await;
    let answer = function.invoke(payload).await.response();
    let after = native.world.aws.calls(&native.world.id).await;
    let made = after.into_iter().map(|(op, n)| (op.clone(), n - before.get(&op).copied().unwrap_or(0)));
    (made.filter(|(_, n)| *n > 0).collect(), answer)
}

#[tokio::test]
async fn a_hook_call_costs_one_read_of_the_state_and_one_of_the_revision() {
    let native = Native::new("BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &[]).await;
    let Rolled { deployment, blue, green } = native.rolled_out().await;
    let (deployment, blue, green) = (&deployment, blue.as_str(), green.as_str());
    let hook = Function::spawn("deploy-hook", &native.world.function_env()).await;
    hook.invoke(hook_payload(deployment, green, "warm-up")).await.response();

    let expect = |pairs: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
        pairs.iter().map(|(op, n)| ((*op).to_owned(), *n)).collect()
    };
    let (made, answer) = calls_of(&native, &hook, hook_payload(deployment, green, "e-probe")).await;
    assert_eq!(answer["hookStatus"], "IN_PROGRESS", "{answer}");
    assert_eq!(made, expect(&[("BatchGetItem", 1), ("DescribeServiceRevisions", 1)]), "a probing call");
    let (made, answer) = calls_of(&native, &hook, hook_payload(deployment, blue, "e-wrong")).await;
    assert_eq!(answer["hookStatus"], "FAILED", "{answer}");
    assert_eq!(made, expect(&[("BatchGetItem", 1), ("DescribeServiceRevisions", 1), ("PutItem", 1)]), "a failing call");
    let (made, answer) = calls_of(&native, &hook, hook_payload(deployment, green, "e-wrong")).await;
    assert_eq!(answer["hookStatus"], "FAILED", "{answer}");
    assert_eq!(made, expect(&[("BatchGetItem", 1)]), "a failed execution asked again");
    let mut rollback = hook_payload(deployment, green, "e-rollback");
    rollback["executionDetails"]["testTrafficWeights"] = json!({ green: 0 });
    let (made, answer) = calls_of(&native, &hook, rollback).await;
    assert_eq!(answer["hookStatus"], "SUCCEEDED", "{answer}");
    assert_eq!(made, expect(&[]), "a rollback's re-invocation");
}

/// The hook's calls failing every way AWS fails (and the process killed mid-call): it answers
/// `IN_PROGRESS` while it cannot check and still fails what it must, never an error, except when
/// Lambda itself stops it (ECS then rolls back: production never moved).
#[tokio::test]
async fn the_hooks_calls_failing_leave_it_answering_and_a_failure_recorded_once() {
    use conveyor_testkit::local_aws::{Fault, FaultMode};
    let native = Native::new("BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &[]).await;
    let Rolled { deployment, blue, green } = native.rolled_out().await;
    let (deployment, blue, green) = (&deployment, blue.as_str(), green.as_str());
    let hook = Function::spawn("deploy-hook", &native.world.function_env()).await;
    let aws = native.world.aws;
    let modes = [FaultMode::Throttle, FaultMode::Http500, FaultMode::Http503, FaultMode::Reset];
    for (operation, mode) in
        ["BatchGetItem", "DescribeServiceRevisions"].iter().flat_map(|op| modes.clone().map(|m| (*op, m)))
    {
        let fault = Fault::on(operation).matching(&native.world.id).mode(mode.clone()).persistent();
        aws.fault(&fault).await;
        let answer = hook.invoke(hook_payload(deployment, green, &format!("e-{operation}-{mode:?}"))).await.response();
        aws.clear_faults(&native.world.id).await;
        assert_eq!(answer["hookStatus"], "IN_PROGRESS", "{operation} {mode:?}: {answer}");
        assert_eq!(answer["hookDetails"]["conveyor"]["unchecked"], 1, "{answer}");
    }
    // The failure's record lost on the way back (applied, then a 500): the answer is FAILED, and
    // asked again, the execution fails for the same reason.
    let lost = Fault::on("PutItem").matching(&native.world.id).mode(FaultMode::ApplyThenFail).count(1);
    aws.fault(&lost).await;
    let failed = hook.invoke(hook_payload(deployment, blue, "e-lost")).await.response();
    assert_eq!(failed["hookStatus"], "FAILED", "{failed}");
    let again = hook.invoke(hook_payload(deployment, green, "e-lost")).await.response();
    assert_eq!(again["hookDetails"]["conveyor"]["reason"], failed["hookDetails"]["conveyor"]["reason"]);
    // Killed in the middle of a call: Lambda reports the error to ECS, which rolls back.
    let mut doomed = Function::spawn("deploy-hook", &native.world.function_env()).await;
    let kill = Fault::on("DescribeServiceRevisions")
        .matching(&native.world.id)
        .mode(FaultMode::Kill { pid: doomed.pid().unwrap() });
    aws.fault(&kill.count(1)).await;
    let outcome =
        doomed.try_invoke(hook_payload(deployment, green, "e-killed"), std::time::Duration::from_secs(10)).await;
    assert!(outcome.is_err(), "a killed hook answered: {outcome:?}");
    aws.clear_faults(&native.world.id).await;
}

/// dev (a rolling service) → prod (blue/green, Conveyor's hook, 3 s of bake time scaled from one
/// minute): what runs where, and how to move an image through.
struct Promoted {
    world: World,
    dev: ServiceFixture,
    prod: ServiceFixture,
    _lambda: LambdaApi,
    pushes: Function,
    monitor: Function,
    promote: Function,
}

impl Promoted {
    async fn in_world(world: World) -> Promoted {
        let test_url = world.aws.traffic_url("test", &world.name("pipeline-prod"), "shop-api");
        let shape = [("dev", json!({})), ("prod", json!({ "from": "dev" }))];
        let [dev, prod]: [ServiceFixture; 2] = world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
        // A rollout that has not completed after a second is late: only a sweep acts on it.
        let environments = json!({
            "dev": { "cluster": dev.cluster, "service": "shop-api" },
            "prod": { "cluster": prod.cluster, "service": "shop-api", "from": "dev",
                      "test_health_url": test_url, "test_probes": 1 }
        });
        let config = json!({ "repository": "shop-api", "container": "api", "rollout_timeout_seconds": 1,
                             "environments": environments });
        world.put_app("shop-api", &config).await;
        let lambda = LambdaApi::start().await;
        let hook_name = world.name("deploy-hook");
        lambda.add(&hook_name, Arc::new(Function::spawn("deploy-hook", &world.function_env()).await));
        world.aws.native(std::slice::from_ref(&prod.cluster), &lambda.url(), &[], None).await;
        world.use_native_strategy_baking(&prod, "BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &hook_name, 1).await;
        let (pushes, promote) = (stage_deploy(&world).await, functions::promote(&world).await);
        let monitor = functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await;
        Promoted { world, dev, prod, _lambda: lambda, pushes, monitor, promote }
    }

    /// `tag` (digest `n`) pushed and verified in dev.
    async fn verified_in_dev(&self, tag: &str, n: u32) {
        let push = self.world.push_event("shop-api", tag, &digest(n), Utc::now() - Duration::minutes(1));
        assert_eq!(self.pushes.invoke(push).await.response()["apps"][0]["status"], "deploying");
        let events = self.world.aws.settle(&self.dev.cluster, &self.dev.service, Settle::Complete).await;
        let report = self.monitor.invoke(events[0].clone()).await.response();
        assert_eq!(report["results"][0]["action"], "verified", "{report}");
    }

    async fn promote(&self, request: Value) -> Value {
        self.promote.invoke(request).await.response()
    }

    /// Waits until prod's newest native deployment bakes (production traffic all on green, blue
    /// still running).
    async fn baking(&self) -> String {
        let started = std::time::Instant::now();
        loop {
            let state = self.world.aws.native_state(&self.prod.cluster, &self.prod.service).await;
            let deployment = &state["deployments"][0];
            if deployment["lifecycleStage"] == "BAKE_TIME" && deployment["status"] == "IN_PROGRESS" {
                return deployment["serviceDeploymentArn"].as_str().unwrap().to_owned();
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "never baking: {state}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Hands the events prod's native deployments emitted to deploy-monitor, once each.
    async fn tell_the_monitor(&self, told: &mut usize) {
        let state = self.world.aws.native_state(&self.prod.cluster, &self.prod.service).await;
        for event in state["events"].as_array().unwrap().iter().skip(*told) {
            self.monitor.invoke(event.clone()).await.response();
            *told += 1;
        }
    }
}

#[tokio::test]
async fn a_deployment_in_flight_is_rolled_back_by_stopping_it_from_a_rollback_or_the_sweep() {
    rolled_back_in_flight(World::new().await).await;
}

/// v1.0.0 verified in prod (blue/green); v2.0.0 stopped while it bakes, by a rollback, then by the
/// sweep's failure path (the IAM test runs it too).
pub async fn rolled_back_in_flight(world: World) {
    let promoted = Promoted::in_world(world).await;
    let world = &promoted.world;
    let mut told = 0;
    promoted.verified_in_dev("v1.0.0", 1).await;
    let first = promoted.promote(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "prod" })).await;
    assert_eq!(first["status"], "deploying", "{first}");
    let v1 = first["task_definition_arn"].as_str().unwrap().to_owned();
    assert_eq!(
        world.aws.native_settled(&promoted.prod.cluster, "shop-api").await["deployments"][0]["status"],
        "SUCCESSFUL"
    );
    promoted.tell_the_monitor(&mut told).await;
    assert_eq!(world.record("shop-api", "prod").await.unwrap()["rollout"]["state"]["kind"], "verified");

    // v2.0.0 bakes in prod; a promotion of v1.0.0 (what `conveyor rollback` sends) stops it.
    promoted.verified_in_dev("v2.0.0", 2).await;
    let second = promoted.promote(json!({ "app": "shop-api", "tag": "v2.0.0", "to": "prod" })).await;
    assert_eq!(second["status"], "deploying", "{second}");
    let baking = promoted.baking().await;
    let rollback = json!({ "app": "shop-api", "digest": digest(1), "to": "prod", "reason": "rollback from v2.0.0" });
    let answer = promoted.promote(rollback).await;
    assert_eq!(answer["status"], "rolling_back", "{answer}");
    assert_eq!(answer["task_definition_arn"], v1.as_str(), "{answer}");
    let state = world.aws.native_state(&promoted.prod.cluster, "shop-api").await;
    let stopped = &state["deployments"][0];
    assert_eq!(
        (stopped["serviceDeploymentArn"].as_str(), stopped["status"].as_str()),
        (Some(baking.as_str()), Some("ROLLBACK_SUCCESSFUL")),
        "{state}"
    );
    assert!(stopped["rollback"]["reason"].as_str().unwrap().contains("stop request"), "{state}");
    assert_eq!(world.service(&promoted.prod.cluster, "shop-api").await.task_definition(), Some(v1.as_str()));
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "superseded", "{record}");
    assert!(record["rollout"]["state"]["reason"].as_str().unwrap().contains("rolled back in flight"), "{record}");
    // ECS's events of the stopped deployment change nothing more; v2.0.0 is not failed.
    promoted.tell_the_monitor(&mut told).await;
    assert_eq!(world.record("shop-api", "prod").await.unwrap()["rollout"]["state"]["kind"], "superseded");

    // Promoted again, v2.0.0 is late in its bake: the sweep's failure path stops it the same way.
    let again = promoted.promote(json!({ "app": "shop-api", "tag": "v2.0.0", "to": "prod" })).await;
    assert_eq!(again["status"], "deploying", "{again}");
    let baking = promoted.baking().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = world.service(&promoted.prod.cluster, "shop-api").await.deployments().len();
    promoted.monitor.invoke(world.schedule_event()).await.response();
    let state = world.aws.native_state(&promoted.prod.cluster, "shop-api").await;
    let stopped = &state["deployments"][0];
    assert_eq!(
        (stopped["serviceDeploymentArn"].as_str(), stopped["status"].as_str()),
        (Some(baking.as_str()), Some("ROLLBACK_SUCCESSFUL")),
        "{state}"
    );
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "rolled_back", "{record}");
    assert_eq!(record["rollout"]["state"]["by"], "conveyor", "{record}");
    assert_eq!(world.service(&promoted.prod.cluster, "shop-api").await.task_definition(), Some(v1.as_str()));
    let after = world.service(&promoted.prod.cluster, "shop-api").await.deployments().len();
    assert!(
        after <= before + 1,
        "Conveyor started a deployment of its own instead of stopping ECS's: {before} → {after}"
    );
    // Once ECS's rollback deployment completes, the sweep finds prod restored (the watch of a
    // stopped deployment has no deployment id to match an event by).
    promoted.tell_the_monitor(&mut told).await;
    world.aws.settle(&promoted.prod.cluster, "shop-api", Settle::Complete).await;
    let report = promoted.monitor.invoke(world.schedule_event()).await.response();
    let prod = report["results"].as_array().unwrap().iter().find(|r| r["environment"] == "prod").cloned();
    assert_eq!(prod.unwrap_or_default()["action"], "restored", "{report}");
}

#[tokio::test]
async fn a_stop_whose_answer_was_lost_or_whose_caller_died_is_still_a_rollback_in_flight() {
    let promoted = Promoted::in_world(World::new().await).await;
    let (world, prod) = (&promoted.world, &promoted.prod);
    let hook = world.name("deploy-hook");
    world.use_native_strategy_baking(prod, "BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &hook, 0).await;
    let mut told = 0;
    promoted.verified_in_dev("v1.0.0", 1).await;
    promoted.promote(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "prod" })).await;
    world.aws.native_settled(&prod.cluster, "shop-api").await;
    promoted.tell_the_monitor(&mut told).await;
    // From now on a deployment bakes 30 s: long enough to outlive a dead caller's lease.
    world.use_native_strategy_baking(prod, "BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &hook, 10).await;
    promoted.verified_in_dev("v2.0.0", 2).await;
    let rollback = json!({ "app": "shop-api", "digest": digest(1), "to": "prod", "reason": "rollback" });

    // The caller dies as its stop arrives (not applied): a new sandbox, once the lease expired,
    // stops it.
    promoted.promote(json!({ "app": "shop-api", "tag": "v2.0.0", "to": "prod" })).await;
    promoted.baking().await;
    let mut doomed = functions::promote(world).await;
    doomed.set_deadline(std::time::Duration::from_secs(1));
    let kill =
        Fault::on("StopServiceDeployment").matching(&prod.cluster).mode(FaultMode::Kill { pid: doomed.pid().unwrap() });
    world.aws.fault(&kill.count(1)).await;
    let died = doomed.try_invoke(rollback.clone(), std::time::Duration::from_secs(10)).await;
    assert!(died.is_err(), "a killed promote answered: {died:?}");
    let started = std::time::Instant::now();
    let answer = loop {
        let answer = promoted.promote.invoke(rollback.clone()).await;
        if let conveyor_testkit::runtime_api::Invocation::Response(answer) = answer {
            break answer;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "never retried: {answer:?}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    assert_eq!(answer["status"], "rolling_back", "{answer}");
    let state = world.aws.native_state(&prod.cluster, "shop-api").await;
    assert_eq!(state["deployments"][0]["status"], "ROLLBACK_SUCCESSFUL", "{state}");
    promoted.tell_the_monitor(&mut told).await;

    // The stop is applied and its answer lost: the SDK's retry is refused (no longer in flight),
    // and the service on blue says the stop happened.
    promoted.promote(json!({ "app": "shop-api", "tag": "v2.0.0", "to": "prod" })).await;
    promoted.baking().await;
    let lost = Fault::on("StopServiceDeployment").matching(&prod.cluster).mode(FaultMode::ApplyThenFail);
    world.aws.fault(&lost.count(1)).await;
    let answer = promoted.promote(rollback).await;
    assert_eq!(answer["status"], "rolling_back", "{answer}");
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "superseded", "{record}");
    world.aws.clear_faults(&prod.cluster).await;
}

/// dev (rolling) → prod (blue/green: Conveyor's hook, then a `PAUSE` hook, at
/// `POST_TEST_TRAFFIC_SHIFT`), promote and the hook behind the local Lambda Invoke API, the CLI run
/// as two people.
struct Paused {
    world: World,
    dev: ServiceFixture,
    prod: ServiceFixture,
    cli: Vec<(String, String)>,
    _lambda: LambdaApi,
    monitor: Function,
    told: std::sync::Mutex<usize>,
}

impl Paused {
    async fn in_world(world: World) -> Paused {
        let shape = [("dev", json!({})), ("prod", json!({ "from": "dev" }))];
        let [dev, prod]: [ServiceFixture; 2] = world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
        let (lambda, _) = crate::cli::functions_behind_lambda(&world).await;
        let hook_name = world.name("deploy-hook");
        lambda.add(&hook_name, Arc::new(Function::spawn("deploy-hook", &world.function_env()).await));
        world.aws.native(std::slice::from_ref(&prod.cluster), &lambda.url(), &[], None).await;
        world.use_native_strategy_pausing(&prod, "BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", &hook_name, 60).await;
        let cli = crate::cli::cli_env(&world, &lambda);
        let monitor = functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await;
        Paused { world, dev, prod, cli, _lambda: lambda, monitor, told: std::sync::Mutex::new(0) }
    }

    async fn cli(&self, who: &str, args: &[&str]) -> crate::cli::Ran {
        crate::cli::run(&conveyor_testkit::principals::act_as(&self.cli, who), args).await
    }

    /// `tag` (digest `n`) verified in dev, promoted to prod by the operator, and held by the
    /// pause hook: the approval it became.
    async fn held(&self, tag: &str, n: u32) -> Value {
        let push = self.world.push_event("shop-api", tag, &digest(n), Utc::now() - Duration::minutes(1));
        crate::support::conveyor(&self.world).stage(push, &crate::support::invocation()).await.unwrap();
        let events = self.world.aws.settle(&self.dev.cluster, &self.dev.service, Settle::Complete).await;
        self.monitor.invoke(events[0].clone()).await.response();
        let promoted = self.cli("operator", &["promote", "shop-api", tag, "--to", "prod"]).await;
        assert_eq!(promoted.code, 0, "{promoted:?}");
        let started = std::time::Instant::now();
        loop {
            let state = self.world.aws.native_state(&self.prod.cluster, "shop-api").await;
            if state["deployments"][0]["lifecycleHookDetails"][0]["status"] == "AWAITING_ACTION" {
                break;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "never paused: {state}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let reports = self.tell_the_monitor().await;
        let requested = reports.iter().find(|r| r["results"][0]["action"] == "waiting").cloned();
        assert!(requested.is_some(), "the pause hook became no approval: {reports:?}");
        let record = self.world.record("shop-api", "prod").await.unwrap();
        assert_eq!(record["approval"]["state"], "pending", "{record}");
        record["approval"].clone()
    }

    /// Hands the events of prod's native deployments not handed yet to deploy-monitor.
    async fn tell_the_monitor(&self) -> Vec<Value> {
        let state = self.world.aws.native_state(&self.prod.cluster, "shop-api").await;
        let events: Vec<Value> = state["events"].as_array().unwrap().clone();
        let from = std::mem::replace(&mut *self.told.lock().unwrap(), events.len());
        let mut reports = Vec::new();
        for event in events.into_iter().skip(from) {
            reports.push(self.monitor.invoke(event).await.response());
        }
        reports
    }
}

#[tokio::test]
async fn a_pause_hook_is_an_approval_continued_or_rolled_back_by_a_second_person_and_a_stale_one_is_refused() {
    pause_hooks_as_approvals(World::new().await).await;
}

/// A pause hook approved, one rejected, and a stale one refused (the IAM test runs it too).
pub async fn pause_hooks_as_approvals(world: World) {
    let paused = Paused::in_world(world).await;
    let world = &paused.world;

    // Approved: the requester may not, another person may; ECS goes on and the rollout is verified.
    let approval = paused.held("v1.0.0", 1).await;
    let id = approval["id"].as_str().unwrap().to_owned();
    assert!(approval["pause"]["hook_id"].as_str().unwrap().starts_with("ecs-pause-"), "{approval}");
    let own = paused.cli("operator", &["approve", "shop-api", "--to", "prod"]).await;
    assert_ne!(own.code, 0, "the requester approved their own rollout: {own:?}");
    assert!(own.stderr.contains("cannot approve it"), "{own:?}");
    let approved = paused.cli("approver", &["approve", "shop-api", "--to", "prod", "--id", &id]).await;
    assert_eq!(approved.code, 0, "{approved:?}");
    let state = world.aws.native_settled(&paused.prod.cluster, "shop-api").await;
    assert_eq!(state["deployments"][0]["status"], "SUCCESSFUL", "{state}");
    paused.tell_the_monitor().await;
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "verified", "{record}");
    assert!(record.get("approval").is_none_or(Value::is_null), "{record}");

    // Rejected: ECS rolls back, production never moved.
    paused.held("v2.0.0", 2).await;
    let rejected = paused.cli("approver", &["reject", "shop-api", "--to", "prod", "--reason", "not today"]).await;
    assert_eq!(rejected.code, 0, "{rejected:?}");
    let state = world.aws.native_settled(&paused.prod.cluster, "shop-api").await;
    let deployment = &state["deployments"][0];
    assert_eq!(deployment["status"], "ROLLBACK_SUCCESSFUL", "{state}");
    let arn = deployment["serviceDeploymentArn"].as_str().unwrap();
    assert_eq!(state["traffic"][arn]["production_peak"], 0, "{state}");
    paused.tell_the_monitor().await;
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "rolled_back", "{record}");
    assert_eq!(record["approval"]["outcome"], "rejected", "{record}");

    // Stale: someone else answered the hook first; approving it is refused, clearly, and ends it.
    let approval = paused.held("v3.0.0", 3).await;
    let hook = approval["pause"].clone();
    world
        .ecs
        .continue_service_deployment()
        .service_deployment_arn(hook["service_deployment_arn"].as_str().unwrap())
        .hook_id(hook["hook_id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let stale = paused.cli("approver", &["approve", "shop-api", "--to", "prod"]).await;
    assert_ne!(stale.code, 0, "{stale:?}");
    assert!(stale.stderr.contains("no longer awaits action"), "{stale:?}");
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(record["approval"]["outcome"], "approval_expired", "{record}");
}
