//! An environment with several targets (contract, *Pipelines (v3)*: "An environment's release is
//! all or nothing"), through the real binaries: one after another in list order, each verified
//! before the next starts, or all at once with `parallel`; a target failing stops the release and
//! puts every target it moved back; one notification per transition of the environment.

use chrono::{Duration, Utc};
use conveyor_testkit::functions::{self, promote, stage_deploy};
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::{digest, ServiceFixture};
use conveyor_testkit::{Function, World};
use serde_json::{json, Value};

/// stage → prod, prod on three services (`a`, `b`, `c`, in that order).
async fn three_targets(world: &World, parallel: bool) -> (ServiceFixture, [ServiceFixture; 3]) {
    let mut services = world.seed_pipeline("shop-api", &[("stage", json!({})), ("prod", json!({}))]).await;
    let a = services.pop().unwrap();
    let stage = services.pop().unwrap();
    let image = format!("{}/shop-api:v0.9.0", world.registry());
    let mut more = Vec::new();
    for name in ["b", "c"] {
        let (family, cluster) = (world.name(&format!("shop-api-prod-{name}")), world.name(&format!("prod-{name}")));
        let task_definition = world.register(&family, &image, "prod", false).await;
        world.create_service(&cluster, "shop-api", &task_definition, 1).await;
        more.push(ServiceFixture {
            cluster,
            service: "shop-api".into(),
            family,
            initial_task_definition: task_definition,
        });
    }
    let [b, c]: [ServiceFixture; 2] = more.try_into().unwrap();
    let target = |s: &ServiceFixture| json!({ "cluster": s.cluster, "service": s.service });
    world
        .put_app(
            "shop-api",
            &json!({ "repository": "shop-api", "container": "api", "environments": {
                "stage": target(&stage),
                "prod": { "from": "stage", "parallel": parallel, "targets": [target(&a), target(&b), target(&c)] } } }),
        )
        .await;
    (stage, [a, b, c])
}

/// A world with [`three_targets`] and deploy-monitor running: v1.0.0 pushed, verified in stage
/// and promoted to prod.
async fn promoted(parallel: bool) -> (World, Function, [ServiceFixture; 3]) {
    let world = World::new().await;
    let (stage, prod) = three_targets(&world, parallel).await;
    let monitor = functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await;
    promote_v1(&world, &monitor, &stage).await;
    (world, monitor, prod)
}

/// Pushes v1.0.0, verifies it in stage and promotes it to prod.
async fn promote_v1(world: &World, monitor: &Function, stage: &ServiceFixture) {
    let (pushes, promote) = (stage_deploy(world).await, promote(world).await);
    pushes
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5)))
        .await
        .response();
    let events = world.aws.settle(&stage.cluster, &stage.service, Settle::Complete).await;
    monitor.invoke(events[0].clone()).await.response();
    let answer = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "prod" })).await.response();
    assert_eq!(answer["status"], "deploying", "{answer}");
}

/// Settles the service's rollout and hands ECS's event to deploy-monitor: its first result.
async fn settle(world: &World, monitor: &Function, service: &ServiceFixture, outcome: Settle) -> Value {
    let events = world.aws.settle(&service.cluster, &service.service, outcome).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    report["results"][0].clone()
}

async fn moved(world: &World, service: &ServiceFixture) -> bool {
    world.revisions(&service.family).await.len() > 1
}

/// The prod notifications' subjects and their targets' states.
async fn prod_notifications(world: &World) -> Vec<(String, Vec<String>)> {
    let notifications = world.notifications().await;
    notifications
        .iter()
        .filter(|n| n["Subject"].as_str().is_some_and(|s| s.contains(" prod: ")))
        .map(|n| {
            let context = &n["Message"]["metadata"]["additionalContext"];
            let targets = context["targets"].as_str().unwrap_or_default();
            let states = targets.split("; ").map(|t| t.rsplit(": ").next().unwrap().to_owned()).collect();
            (n["Subject"].as_str().unwrap().to_owned(), states)
        })
        .collect()
}

#[tokio::test]
async fn targets_roll_out_one_after_another_each_verified_before_the_next() {
    let (world, monitor, [a, b, c]) = promoted(false).await;
    assert!(moved(&world, &a).await, "the first target starts");
    assert!(!moved(&world, &b).await && !moved(&world, &c).await, "the others wait for it");

    let handled = settle(&world, &monitor, &a, Settle::Complete).await;
    assert_eq!(handled["action"], "deploying", "{handled}");
    assert!(moved(&world, &b).await && !moved(&world, &c).await, "then the second, alone");
    let handled = settle(&world, &monitor, &b, Settle::Complete).await;
    assert_eq!(handled["action"], "deploying", "{handled}");
    let handled = settle(&world, &monitor, &c, Settle::Complete).await;
    assert_eq!(handled["action"], "verified", "verified once every target is: {handled}");
    let image = format!("{}/shop-api@{}", world.registry(), digest(1));
    for target in [&a, &b, &c] {
        assert_eq!(world.running_image(target).await, image);
    }
    // One notification per transition of the environment, naming every target.
    assert_eq!(
        prod_notifications(&world).await,
        [
            (
                "[conveyor] shop-api prod: promoted v1.0.0".to_owned(),
                vec!["deploying".into(), "waiting".into(), "waiting".into()]
            ),
            ("[conveyor] shop-api prod: verified v1.0.0".to_owned(), vec!["verified".into(); 3]),
        ]
    );
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(record["targets"].as_array().map(Vec::len), Some(2), "{record}");
    for (index, target) in [&b, &c].into_iter().enumerate() {
        let known_good = &record["targets"][index]["last_verified"]["task_definition_arn"];
        assert_eq!(
            known_good.as_str(),
            Some(world.service(&target.cluster, &target.service).await.task_definition().unwrap())
        );
    }
    let history = world.history("shop-api").await;
    let verified = history.iter().find(|h| h["environment"] == "prod" && h["event"] == "verified").unwrap();
    assert_eq!(verified["targets"].as_array().map(Vec::len), Some(3), "each target's revision: {verified}");
}

#[tokio::test]
async fn a_failing_target_stops_the_release_and_puts_back_every_target_it_moved() {
    let (world, monitor, [a, b, c]) = promoted(false).await;
    settle(&world, &monitor, &a, Settle::Complete).await;
    let handled = settle(&world, &monitor, &b, Settle::Fail { circuit_breaker_rollback: false }).await;
    assert_eq!(handled["action"], "rolled_back", "{handled}");

    // Target 1 back on what it ran, target 2 rolled back, target 3 never started.
    for target in [&a, &b] {
        assert_eq!(
            world.service(&target.cluster, &target.service).await.task_definition.unwrap(),
            target.initial_task_definition
        );
    }
    assert!(!moved(&world, &c).await, "the third target never started");
    let subjects = prod_notifications(&world).await;
    assert_eq!(
        subjects.last().unwrap(),
        &(
            "[conveyor] shop-api prod: rolled_back v1.0.0".to_owned(),
            vec!["rolled_back".into(), "rolled_back".into(), "waiting".into()]
        )
    );
    assert_eq!(subjects.iter().filter(|(s, _)| s.contains("rolled_back")).count(), 1, "one notification: {subjects:?}");
    let image = world.image_record("shop-api", &digest(1)).await.unwrap();
    assert!(image.get("failed_prod").is_some(), "the image failed in prod: {image}");

    // The rollbacks complete: the sweep sees both back.
    for target in [&a, &b] {
        world.aws.settle(&target.cluster, &target.service, Settle::Complete).await;
    }
    monitor.invoke(world.schedule_event()).await.response();
    let item = world.item("APP#shop-api", "ENV#prod").await.unwrap();
    assert!(item.get("pending").is_none(), "nothing left in flight: {item}");
}

#[tokio::test]
async fn parallel_targets_start_at_once_and_the_release_is_verified_with_the_last() {
    let (world, monitor, [a, b, c]) = promoted(true).await;
    for target in [&a, &b, &c] {
        assert!(moved(&world, target).await, "every target starts at once");
    }
    assert_eq!(settle(&world, &monitor, &c, Settle::Complete).await["action"], "waiting");
    assert_eq!(settle(&world, &monitor, &a, Settle::Complete).await["action"], "waiting");
    // A repeated event changes nothing.
    let events = world.aws.settle(&a.cluster, &a.service, Settle::Complete).await;
    if let Some(event) = events.first() {
        assert_eq!(monitor.invoke(event.clone()).await.response()["results"][0]["action"], "waiting");
    }
    assert_eq!(settle(&world, &monitor, &b, Settle::Complete).await["action"], "verified");
    assert_eq!(
        prod_notifications(&world).await.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["[conveyor] shop-api prod: promoted v1.0.0", "[conveyor] shop-api prod: verified v1.0.0"]
    );
}

#[tokio::test]
async fn a_target_the_release_cannot_start_on_fails_it_and_puts_back_the_targets_it_moved() {
    let (world, monitor, [a, b, _c]) = promoted(false).await;
    // The second target's service is deleted before its turn.
    world.ecs.delete_service().cluster(&b.cluster).service(&b.service).force(true).send().await.unwrap();
    let handled = settle(&world, &monitor, &a, Settle::Complete).await;
    assert_eq!(handled["action"], "rolled_back", "{handled}");
    assert!(handled["detail"].as_str().unwrap().contains("could not start on"), "{handled}");
    assert_eq!(world.service(&a.cluster, &a.service).await.task_definition.unwrap(), a.initial_task_definition);
    let subjects = prod_notifications(&world).await;
    assert_eq!(subjects.last().map(|(s, _)| s.as_str()), Some("[conveyor] shop-api prod: rolled_back v1.0.0"));
}
