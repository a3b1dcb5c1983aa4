//! How many AWS calls each job makes, by operation, counted by the local AWS, on a warm instance
//! (the configuration and the revisions already read are cached). A regression guard for "the
//! fewest calls the job allows": a new call shows up here first.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use serde_json::json;

use crate::support::{conveyor, invocation};

/// Calls made by `action`, by operation (those whose request carries the world's id).
async fn calls_of<F: std::future::Future<Output = ()>>(world: &World, action: F) -> BTreeMap<String, u64> {
    let before = world.aws.calls(&world.id).await;
    action.await;
    let after = world.aws.calls(&world.id).await;
    after
        .into_iter()
        .map(|(op, n)| (op.clone(), n - before.get(&op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn expect(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(op, n)| (op.to_string(), *n)).collect()
}

fn total(calls: &BTreeMap<String, u64>) -> u64 {
    calls.values().sum()
}

#[tokio::test]
async fn each_job_makes_the_fewest_calls_it_needs() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let conveyor = conveyor(&world);
    let seeded = world.aws.calls(&world.id).await;
    let stage = |tag: &str, n: u32, minutes: i64| {
        world.push_event("shop-api", tag, &digest(n), Utc::now() - Duration::minutes(minutes))
    };
    let verify = async |service: &conveyor_testkit::world::ServiceFixture| {
        let completed = world.aws.settle(&service.cluster, &service.service, Settle::Complete).await;
        calls_of(&world, async { conveyor.monitor(completed[0].clone(), &invocation()).await.map(drop).unwrap() }).await
    };

    // First push to a service (cold: config, the running revision, the baseline committed).
    let first =
        calls_of(&world, async { conveyor.stage(stage("v1.0.0", 1, 30), &invocation()).await.map(drop).unwrap() })
            .await;
    println!("first push: {first:?}");
    let verified = verify(&app.stage).await;
    println!("verification: {verified:?}");

    // A push on a warm instance: everything it reads it had to read.
    let push = stage("v1.1.0", 2, 20);
    let pushed = calls_of(&world, async { conveyor.stage(push.clone(), &invocation()).await.map(drop).unwrap() }).await;
    assert_eq!(
        pushed,
        expect(&[
            ("DescribeServices", 1),
            ("Publish", 1),
            ("RegisterTaskDefinition", 1),
            ("TransactWriteItems", 1), // the rollout, its image facts, history and notification
            ("UpdateItem", 2),         // lease taken (returns the state), lease released (notification sent)
            ("UpdateService", 1),
        ]),
        "push"
    );
    assert!(total(&pushed) <= 7);
    // The same push again: the state says it is a repeated delivery.
    let repeated = calls_of(&world, async { conveyor.stage(push, &invocation()).await.map(drop).unwrap() }).await;
    assert_eq!(repeated, expect(&[("UpdateItem", 2)]), "repeated push");

    let verified = verify(&app.stage).await;
    assert_eq!(
        verified,
        expect(&[("DescribeServices", 1), ("Publish", 1), ("TransactWriteItems", 1), ("UpdateItem", 2)]),
        "verification"
    );
    assert!(total(&verified) <= 5);

    // Promote to prod (twice: the second on a warm instance).
    let promote = async |tag: &str| {
        calls_of(&world, async {
            conveyor.promote(json!({ "app": "shop-api", "tag": tag }), &invocation()).await.map(drop).unwrap()
        })
        .await
    };
    let first_promotion = promote("v1.0.0").await;
    println!("first promotion: {first_promotion:?}");
    verify(&app.prod).await;
    let promoted = promote("v1.1.0").await;
    assert_eq!(
        promoted,
        expect(&[
            ("BatchGetItem", 1), // the tag and prod's state
            ("DescribeServices", 1),
            ("Publish", 1),
            ("RegisterTaskDefinition", 1),
            ("TransactWriteItems", 2), // prod's lease taken with the image still promotable; the rollout
            ("UpdateItem", 1),         // lease released
            ("UpdateService", 1),
        ]),
        "promote"
    );
    assert!(total(&promoted) <= 8);

    // FAILED in prod: diagnose, roll back, record, alert.
    let failed =
        world.aws.settle(&app.prod.cluster, &app.prod.service, Settle::Fail { circuit_breaker_rollback: false }).await;
    let rolled_back =
        calls_of(&world, async { conveyor.monitor(failed[0].clone(), &invocation()).await.map(drop).unwrap() }).await;
    assert_eq!(
        rolled_back,
        expect(&[
            ("DescribeServices", 1),
            ("DescribeTasks", 1),
            ("ListTasks", 1),
            ("Publish", 1),
            ("TransactWriteItems", 1),
            ("UpdateItem", 3), // lease taken, the rollback's intent (before UpdateService), lease released
            ("UpdateService", 1),
        ]),
        "rollback"
    );
    assert!(total(&rolled_back) <= 9);

    // Nothing Conveyor did wrote to SSM.
    let all = world.aws.calls(&world.id).await;
    for write in ["PutParameter", "DeleteParameter"] {
        assert_eq!(all.get(write), seeded.get(write), "{write} by Conveyor: {all:?}");
    }
}

#[tokio::test]
async fn an_auto_promotion_costs_a_promotion_and_three_reads() {
    let world = World::new().await;
    let shape = [("dev", json!({})), ("stage", json!({ "from": "dev", "promotion": "auto" }))];
    let [dev, stage]: [conveyor_testkit::world::ServiceFixture; 2] =
        world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
    let conveyor = conveyor(&world);
    let push = |tag: &str, n: u32, minutes: i64| {
        world.push_event("shop-api", tag, &digest(n), Utc::now() - Duration::minutes(minutes))
    };
    let verify_dev = async || {
        let completed = world.aws.settle(&dev.cluster, &dev.service, Settle::Complete).await;
        calls_of(&world, async { conveyor.monitor(completed[0].clone(), &invocation()).await.map(drop).unwrap() }).await
    };
    // Warm the instance and both services' records.
    conveyor.stage(push("v1.0.0", 1, 30), &invocation()).await.unwrap();
    verify_dev().await;
    let completed = world.aws.settle(&stage.cluster, &stage.service, Settle::Complete).await;
    conveyor.monitor(completed[0].clone(), &invocation()).await.unwrap();

    conveyor.stage(push("v1.1.0", 2, 20), &invocation()).await.unwrap();
    let vetted_and_promoted = verify_dev().await;
    assert_eq!(
        vetted_and_promoted,
        expect(&[
            ("BatchGetItem", 2), // the newest tag's image (failed anywhere?); the tag and stage's state
            ("DescribeServices", 2),
            ("GetItem", 1), // stage's state: did it have the image already?
            ("Publish", 2),
            ("Query", 1), // the tags dev vetted
            ("RegisterTaskDefinition", 1),
            ("TransactWriteItems", 3), // dev's verification; stage's lease with the image promotable; the rollout
            ("UpdateItem", 3),         // dev's lease taken and released; stage's released
            ("UpdateService", 1),
        ]),
        "a verification and its auto promotion"
    );
    assert!(total(&vetted_and_promoted) <= 16);

    // The sweep, with nothing to move: three reads for the environment that takes images itself,
    // and one for the revision cleanup (every environment's state in one BatchGetItem).
    let tick = world.schedule_event();
    let swept = calls_of(&world, async { conveyor.monitor(tick, &invocation()).await.map(drop).unwrap() }).await;
    println!("sweep: {swept:?}");
    let reads: u64 = ["Query", "BatchGetItem", "GetItem"].iter().filter_map(|op| swept.get(*op)).sum();
    assert!(reads <= 5, "{swept:?}");
}

#[tokio::test]
async fn the_alarms_gate_costs_one_read_and_an_alarm_firing_costs_a_rollback() {
    let world = World::new().await;
    let alarm = world.name("shop-api-5xx");
    world.aws.set_alarm(&alarm, "OK").await;
    let shape = [("dev", json!({ "alarms": [alarm] })), ("stage", json!({ "from": "dev" }))];
    let [dev, _]: [conveyor_testkit::world::ServiceFixture; 2] =
        world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
    let conveyor = conveyor(&world);
    let push = |tag: &str, n: u32, minutes: i64| {
        world.push_event("shop-api", tag, &digest(n), Utc::now() - Duration::minutes(minutes))
    };
    let verify = async || {
        let completed = world.aws.settle(&dev.cluster, &dev.service, Settle::Complete).await;
        calls_of(&world, async { conveyor.monitor(completed[0].clone(), &invocation()).await.map(drop).unwrap() }).await
    };
    // Warm the instance and the service's record.
    conveyor.stage(push("v1.0.0", 1, 30), &invocation()).await.unwrap();
    verify().await;

    conveyor.stage(push("v1.1.0", 2, 20), &invocation()).await.unwrap();
    let verified = verify().await;
    assert_eq!(verified.get("DescribeAlarms"), Some(&1), "{verified:?}");
    assert!(!verified.contains_key("DescribeAlarmHistory"), "a quiet alarm's history is not read: {verified:?}");
    assert_eq!(total(&verified), 6, "a verification and the gate: {verified:?}");

    // The alarm fires while v1.2.0 rolls out: its event rolls it back, like a FAILED event would.
    conveyor.stage(push("v1.2.0", 3, 10), &invocation()).await.unwrap();
    world.aws.set_alarm(&alarm, "ALARM").await;
    let fired = world.alarm_event(&alarm, Utc::now());
    let rolled_back = calls_of(&world, async { conveyor.monitor(fired, &invocation()).await.map(drop).unwrap() }).await;
    println!("alarm: {rolled_back:?}");
    assert!(!rolled_back.keys().any(|op| op.contains("Alarm")), "the event is the verdict: {rolled_back:?}");
    assert!(total(&rolled_back) <= 9, "{rolled_back:?}");
}

#[tokio::test]
async fn an_approval_request_costs_one_read_and_one_write_and_its_approval_a_promotion() {
    let world = World::new().await;
    let shape = [("stage", json!({})), ("prod", json!({ "from": "stage", "approval": true }))];
    let [stage, _]: [conveyor_testkit::world::ServiceFixture; 2] =
        world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
    let conveyor = conveyor(&world);
    // Who asks, as the promote function's edge establishes it from an identity proof (one
    // `GetCallerIdentity`, sent to STS with the caller's signature, besides the calls counted here).
    let as_who = |arn: &str| conveyor::Invocation { identity: Some(arn.to_owned()), ..invocation() };
    let (ana, bob) = (as_who("arn:aws:iam::123456789012:user/ana"), as_who("arn:aws:iam::123456789012:user/bob"));
    for (tag, n) in [("v1.0.0", 1), ("v1.1.0", 2)] {
        let push = world.push_event("shop-api", tag, &digest(n), Utc::now() - Duration::minutes(10 - i64::from(n)));
        conveyor.stage(push, &invocation()).await.unwrap();
        let completed = world.aws.settle(&stage.cluster, &stage.service, Settle::Complete).await;
        conveyor.monitor(completed[0].clone(), &invocation()).await.unwrap();
    }
    let promote = async |tag: &str, who: &conveyor::Invocation| {
        let request = json!({ "app": "shop-api", "tag": tag, "to": "prod" });
        calls_of(&world, async { conveyor.promote_function(request, who).await.map(drop).unwrap() }).await
    };
    // The first request meets prod for the first time (its running revision is read and recorded).
    promote("v1.0.0", &ana).await;
    let requested = promote("v1.1.0", &ana).await;
    println!("approval requested: {requested:?}");
    assert_eq!(
        requested,
        expect(&[
            ("BatchGetItem", 1),       // the tag and prod's state
            ("Publish", 1),            // approval_requested
            ("TransactWriteItems", 2), // prod's lease taken with the image still promotable; the request
            ("UpdateItem", 1),         // lease released
        ]),
        "approval request: no ECS call"
    );
    let asked_again = promote("v1.1.0", &ana).await;
    assert_eq!(
        asked_again,
        expect(&[("BatchGetItem", 1), ("GetItem", 1)]),
        "the same request again changes nothing (its image read: has it failed since?)"
    );

    let approve = json!({ "operation": "approve", "app": "shop-api" });
    let approved = calls_of(&world, async { conveyor.promote_function(approve, &bob).await.map(drop).unwrap() }).await;
    println!("approval: {approved:?}");
    assert_eq!(approved.get("Publish"), Some(&2), "approved, promoted: {approved:?}");
    assert_eq!(approved.get("UpdateService"), Some(&1), "{approved:?}");
    assert!(
        total(&approved) <= 11,
        "a promotion, the pending request read once more and one more notification: {approved:?}"
    );
}

#[tokio::test]
async fn a_wave_step_costs_a_verification_and_a_start_and_the_last_step_a_verification() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    // prod on two services, one after the other.
    let (family, cluster) = (world.name("shop-api-prod-2"), world.name("prod-2"));
    let task_definition =
        world.register(&family, &format!("{}/shop-api:v0.9.0", world.registry()), "prod", false).await;
    world.create_service(&cluster, "shop-api", &task_definition, 1).await;
    let target = |cluster: &str| json!({ "cluster": cluster, "service": "shop-api" });
    let environments = json!({ "stage": target(&app.stage.cluster), "prod": { "targets": [target(&app.prod.cluster), target(&cluster)] } });
    world
        .put_app("shop-api", &json!({ "repository": "shop-api", "container": "api", "environments": environments }))
        .await;
    let conveyor = conveyor(&world);
    let push = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5));
    conveyor.stage(push, &invocation()).await.unwrap();
    let completed = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    conveyor.monitor(completed[0].clone(), &invocation()).await.unwrap();
    let promoted = calls_of(&world, async {
        conveyor.promote(json!({ "app": "shop-api", "tag": "v1.0.0" }), &invocation()).await.map(drop).unwrap()
    })
    .await;
    println!("promotion into two targets: {promoted:?}");

    let first = world.aws.settle(&app.prod.cluster, &app.prod.service, Settle::Complete).await;
    let step =
        calls_of(&world, async { conveyor.monitor(first[0].clone(), &invocation()).await.map(drop).unwrap() }).await;
    println!("first target verified, the second started: {step:?}");
    let second = world.aws.settle(&cluster, "shop-api", Settle::Complete).await;
    let last =
        calls_of(&world, async { conveyor.monitor(second[0].clone(), &invocation()).await.map(drop).unwrap() }).await;
    println!("second target verified, the release verified: {last:?}");
    assert_eq!(
        (promoted.get("RegisterTaskDefinition"), promoted.get("UpdateService")),
        (Some(&1), Some(&1)),
        "{promoted:?}"
    );
    assert_eq!((step.get("RegisterTaskDefinition"), step.get("UpdateService")), (Some(&1), Some(&1)), "{step:?}");
    assert!(!step.contains_key("Publish"), "a wave step announces nothing: {step:?}");
    assert_eq!(last.get("Publish"), Some(&1), "one notification for the release: {last:?}");
    // The step: a verification (5), the second target's first contact and start (DescribeServices,
    // DescribeTaskDefinition, RegisterTaskDefinition, UpdateService, two commits), one commit of
    // the wave's progress; the last: a verification and that commit.
    assert!(total(&step) <= 10, "{step:?}");
    assert!(total(&last) <= 6, "{last:?}");
}
