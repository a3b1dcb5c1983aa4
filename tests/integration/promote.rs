//! The real `promote` binary against the local AWS, and prod's rollouts through the monitor.

use chrono::{Duration, Utc};
use conveyor::vocabulary::Action;
use conveyor_testkit::functions::promote as promote_function;
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::{digest, AppFixture, ServiceFixture};
use conveyor_testkit::World;
use serde_json::{json, Value};

use crate::support::{conveyor, invocation, tag_pairs};

/// Pushes `tag` to stage and lets the monitor verify it.
async fn vet(world: &World, app: &AppFixture, tag: &str, n: u32) {
    let conveyor = conveyor(world);
    let event = world.push_event(&app.repository, tag, &digest(n), Utc::now() - Duration::minutes(60 - i64::from(n)));
    conveyor.stage(event, &invocation()).await.unwrap();
    settle_and_monitor(world, &app.stage, Settle::Complete, Action::Verified).await;
}

/// Settles the service's primary deployment and hands the events to the monitor.
async fn settle_and_monitor(world: &World, service: &ServiceFixture, outcome: Settle, expected: Action) {
    let conveyor = conveyor(world);
    let events = world.aws.settle(&service.cluster, &service.service, outcome).await;
    let report = conveyor.monitor(events[0].clone(), &invocation()).await.unwrap();
    assert_eq!(report.results[0].action, expected, "{report:?}");
}

async fn prod_state(world: &World, app: &AppFixture) -> (Option<String>, usize) {
    let service = world.service(&app.prod.cluster, &app.prod.service).await;
    (service.task_definition().map(str::to_owned), world.revisions(&app.prod.family).await.len())
}

#[tokio::test]
async fn a_vetted_tag_reaches_prod_byte_for_byte_with_prods_own_task_definition() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", true, json!({})).await;
    vet(&world, &app, "v1.0.0", 1).await;
    let promote = promote_function(&world).await;
    let _ = world.notifications().await;

    let answer = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    let expected_arn = format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{}:2", app.prod.family);
    assert_eq!(
        answer,
        json!({ "app": "shop-api", "environment": "prod", "tag": "v1.0.0", "digest": digest(1),
                "task_definition_arn": expected_arn, "status": "deploying" })
    );
    // The very image stage runs, in prod's own task definition.
    assert_eq!(world.running_image(&app.prod).await, world.running_image(&app.stage).await);
    let (before, before_tags) = world.task_definition(&app.prod.initial_task_definition).await;
    let (after, after_tags) = world.task_definition(&expected_arn).await;
    assert_eq!(after.family(), Some(app.prod.family.as_str()));
    assert_eq!((after.cpu(), after.memory()), (before.cpu(), before.memory()));
    assert_eq!(after.container_definitions()[0].environment(), before.container_definitions()[0].environment());
    assert_eq!(after.container_definitions()[1], before.container_definitions()[1], "the sidecar changed");
    assert!(tag_pairs(&after_tags).contains(&("env".to_owned(), "prod".to_owned())));
    assert_eq!(
        tag_pairs(&after_tags).len(),
        tag_pairs(&before_tags).len() + 4,
        "conveyor:app, image-tag, image-digest and lease"
    );
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["Subject"], "[conveyor] shop-api prod: promoted v1.0.0");

    // Again: nothing to do.
    let again = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    assert_eq!(again["status"], "already_deployed");
    assert_eq!(again["task_definition_arn"], expected_arn.as_str());
    assert_eq!(world.revisions(&app.prod.family).await.len(), 2);
    // By digest works the same.
    let by_digest = promote.invoke(json!({ "app": "shop-api", "digest": digest(1) })).await.response();
    assert_eq!((by_digest["status"].as_str(), by_digest["tag"].as_str()), (Some("already_deployed"), Some("v1.0.0")));
}

#[tokio::test]
async fn a_dry_run_reports_and_changes_nothing() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    vet(&world, &app, "v1.0.0", 1).await;
    let promote = promote_function(&world).await;
    let before = prod_state(&world, &app).await;

    let answer = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "dry_run": true })).await.response();
    assert_eq!(answer["status"], "dry_run");
    assert_eq!(answer["task_definition_arn"], app.prod.initial_task_definition.as_str());
    assert!(answer["current_image"].as_str().unwrap().ends_with("shop-api:v0.9.0"));
    assert!(answer["image"].as_str().unwrap().ends_with(&digest(1)));
    assert_eq!(prod_state(&world, &app).await, before);
    assert_eq!(world.record("shop-api", "prod").await, None, "a dry run writes nothing");
}

#[tokio::test]
async fn refusals_name_the_problem_and_leave_prod_unchanged() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    world.put_app("broken", &json!({ "repository": "x" })).await;
    vet(&world, &app, "v1.0.0", 1).await;
    vet(&world, &app, "v1.1.0", 2).await;
    // Pushed, never verified.
    let event = world.push_event("shop-api", "v1.2.0", &digest(3), Utc::now());
    conveyor(&world).stage(event, &invocation()).await.unwrap();
    // Pushed later and failed in stage: the refusal says it failed, when and why.
    let event = world.push_event("shop-api", "v1.3.0", &digest(4), Utc::now());
    conveyor(&world).stage(event, &invocation()).await.unwrap();
    let failed =
        world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Fail { circuit_breaker_rollback: false });
    conveyor(&world).monitor(failed.await[0].clone(), &invocation()).await.unwrap();
    let promote = promote_function(&world).await;
    let before = prod_state(&world, &app).await;

    let failed_in_stage = format!("shop-api v1.3.0 ({}) failed in stage at", digest(4));
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({ "app": "shop-api", "tag": "v1.2.0" }), "NotVetted", "never vetted"),
        (json!({ "app": "shop-api", "tag": "v1.3.0" }), "NotVetted", &failed_in_stage),
        (json!({ "app": "shop-api", "tag": "v9.9.9" }), "NotVetted", "Promotable tags, newest first: v1.1.0"),
        (json!({ "app": "shop-api", "digest": digest(3) }), "NotVetted", "never vetted"),
        (json!({ "app": "shop-web", "tag": "v1.0.0" }), "UnknownApp", "configured apps: shop-api"),
        (json!({ "app": "broken", "tag": "v1.0.0" }), "ConfigError", "/apps/broken"),
        (json!({ "app": "shop-api" }), "InvalidRequest", "tag"),
        (json!({ "app": "shop-api", "tag": "v1.0.0", "digest": digest(1) }), "InvalidRequest", "not both"),
        (json!({ "app": "shop-api", "digest": "sha256:nope" }), "InvalidRequest", "digest"),
        (json!({ "app": "Shop", "tag": "v1.0.0" }), "InvalidRequest", "app name"),
        (json!({ "app": "shop-api", "tag": "v1.0.0", "please": true }), "InvalidRequest", "unknown field"),
        (json!({ "app": "shop-api", "tag": "v1.2.0", "force": true }), "NotVetted", "never vetted"),
        (json!([]), "InvalidRequest", "JSON object"),
    ];
    for (payload, error_type, needle) in cases {
        let (got_type, message) = promote.invoke(payload.clone()).await.error();
        assert_eq!(got_type, error_type, "{payload}: {message}");
        assert!(message.contains(needle), "{payload}: {message}");
    }
    assert_eq!(prod_state(&world, &app).await, before);
}

#[tokio::test]
async fn prod_rollouts_flow_through_the_monitor_and_a_failed_digest_is_never_promoted_again() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    vet(&world, &app, "v1.0.0", 1).await;
    vet(&world, &app, "v1.1.0", 2).await;
    let promote = promote_function(&world).await;

    // v1.0.0 to prod, verified there: prod's last verified revision.
    let first = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    settle_and_monitor(&world, &app.prod, Settle::Complete, Action::Verified).await;
    let prod = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(prod["last_verified"]["task_definition_arn"], first["task_definition_arn"]);

    // v1.1.0 to prod fails there: prod goes back to v1.0.0's prod revision, with a critical alert.
    let _ = world.notifications().await;
    promote.invoke(json!({ "app": "shop-api", "tag": "v1.1.0" })).await.response();
    settle_and_monitor(&world, &app.prod, Settle::Fail { circuit_breaker_rollback: false }, Action::RolledBack).await;
    let service = world.service(&app.prod.cluster, &app.prod.service).await;
    assert_eq!(service.task_definition(), first["task_definition_arn"].as_str());
    let notes = world.notifications().await;
    let alert = notes.iter().find(|n| n["MessageAttributes"]["outcome"] == "rolled_back").unwrap();
    assert_eq!(alert["MessageAttributes"]["severity"], "critical");
    assert_eq!(alert["MessageAttributes"]["environment"], "prod");

    // v1.1.0 failed in prod after stage vetted it: never promotable again.
    let before = prod_state(&world, &app).await;
    let (error_type, message) = promote.invoke(json!({ "app": "shop-api", "tag": "v1.1.0" })).await.error();
    assert_eq!(error_type, "NotVetted");
    assert!(message.contains("failed in prod"), "{message}");
    assert!(message.contains("Promotable tags, newest first: v1.0.0"), "{message}");
    assert_eq!(prod_state(&world, &app).await, before);
}
