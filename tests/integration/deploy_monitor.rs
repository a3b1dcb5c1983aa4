//! The real `deploy-monitor` binary, driven through the Lambda Runtime API against the local AWS
//! with the ECS deployment lifecycle extension.

use chrono::{Duration, Utc};
use conveyor::vocabulary::Action;
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::{digest, AppFixture};
use conveyor_testkit::{functions, Function, LocalHttp, World};
use serde_json::{json, Value};

use crate::support::{conveyor, invocation};

/// deploy-monitor, with a dead health endpoint failing a verification in 2 s.
async fn deploy_monitor(world: &World) -> Function {
    functions::deploy_monitor(world, std::time::Duration::from_secs(2)).await
}

/// Pushes `tag` to stage through the library; returns the new task definition ARN.
async fn push(world: &World, tag: &str, n: u32, minutes_ago: i64) -> String {
    let event = world.push_event("shop-api", tag, &digest(n), Utc::now() - Duration::minutes(minutes_ago));
    let report = conveyor(world).stage(event, &invocation()).await.unwrap();
    assert_eq!(report.apps[0].status, Action::Deploying, "{report:?}");
    report.apps[0].task_definition_arn.clone().unwrap()
}

async fn settle(world: &World, app: &AppFixture, outcome: Settle) -> Vec<Value> {
    world.aws.settle(&app.stage.cluster, &app.stage.service, outcome).await
}

/// shop-api, whose stage checks `health`'s `/health`.
async fn seed_with_health_url(world: &World, health: &LocalHttp) -> AppFixture {
    let environments = json!({
        "stage": { "cluster": world.name("stage"), "service": "shop-api", "health_url": health.url("/health") },
        "prod": { "cluster": world.name("prod"), "service": "shop-api" },
    });
    world.seed_app("shop-api", "shop-api", false, json!({ "environments": environments })).await
}

fn only(report: &Value) -> &Value {
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{report}");
    &results[0]
}

#[tokio::test]
async fn a_completed_healthy_rollout_is_vetted() {
    let world = World::new().await;
    let health = LocalHttp::start(200).await;
    let app = seed_with_health_url(&world, &health).await;
    let monitor = deploy_monitor(&world).await;
    let td = push(&world, "v1.0.0", 1, 1).await;
    let _ = world.notifications().await;

    let events = settle(&world, &app, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(only(&report)["action"], "verified", "{report}");
    assert_eq!(health.received().len(), 1);

    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "verified");
    assert_eq!(record["last_verified"]["task_definition_arn"], td.as_str());
    let image = world.image_record("shop-api", &digest(1)).await.unwrap();
    assert!(image["vetted_stage"].is_string(), "{image}");
    let tag = world.tag_record("shop-api", "v1.0.0").await.unwrap();
    assert_eq!(tag["digest"], digest(1).as_str());

    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["Subject"], "[conveyor] shop-api stage: verified v1.0.0");
    assert_eq!(notes[0]["MessageAttributes"]["severity"], "info");

    // The same event again changes nothing and says nothing.
    assert_eq!(only(&monitor.invoke(events[0].clone()).await.response())["action"], "skipped");
    assert!(world.notifications().await.is_empty());
}

#[tokio::test]
async fn a_completed_rollout_failing_its_health_check_is_rolled_back() {
    let world = World::new().await;
    let health = LocalHttp::start(503).await;
    let app = seed_with_health_url(&world, &health).await;
    let monitor = deploy_monitor(&world).await;
    push(&world, "v1.0.0", 1, 1).await;
    let _ = world.notifications().await;

    let events = settle(&world, &app, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(only(&report)["action"], "rolled_back", "{report}");
    assert!(health.received().len() >= 2, "the health check is retried");
    let service = world.service(&app.stage.cluster, &app.stage.service).await;
    assert_eq!(service.task_definition(), Some(app.stage.initial_task_definition.as_str()));
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["MessageAttributes"]["outcome"], "rolled_back");
    let reason = notes[0]["Message"]["metadata"]["additionalContext"]["reason"].as_str().unwrap();
    assert!(reason.contains("HTTP 503"), "{reason}");
    let image = world.image_record("shop-api", &digest(1)).await.unwrap();
    assert!(image["failed_stage"]["reason"].is_string(), "{image}");
}

#[tokio::test]
async fn a_failed_rollout_goes_back_to_the_last_verified_revision_and_says_why() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", true, json!({})).await;
    let monitor = deploy_monitor(&world).await;

    let verified = push(&world, "v1.0.0", 1, 10).await; // :2
    let completed = settle(&world, &app, Settle::Complete).await;
    assert_eq!(only(&monitor.invoke(completed[0].clone()).await.response())["action"], "verified");
    push(&world, "v1.1.0", 2, 8).await; // :3, superseded before it settles
    let failing = push(&world, "v1.2.0", 3, 6).await; // :4
    let _ = world.notifications().await;

    let events = settle(&world, &app, Settle::Fail { circuit_breaker_rollback: false }).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(only(&report)["action"], "rolled_back", "{report}");

    // Back to the last verified revision (:2), not the previous revision number (:3).
    let service = world.service(&app.stage.cluster, &app.stage.service).await;
    assert_eq!(service.task_definition(), Some(verified.as_str()));
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    let note = &notes[0];
    assert_eq!(note["Subject"], "[conveyor] shop-api stage: rolled_back v1.2.0");
    assert_eq!(note["MessageAttributes"]["severity"], "error");
    let context = &note["Message"]["metadata"]["additionalContext"];
    assert_eq!(context["task_definition_arn"], failing.as_str());
    assert_eq!(context["rollback_task_definition_arn"], verified.as_str());
    assert_eq!(context["digest"], digest(3).as_str());
    assert!(context["reason"].as_str().unwrap().contains("circuit breaker: task failed to start"), "{context}");
    let description = note["Message"]["content"]["description"].as_str().unwrap();
    assert!(description.contains("Essential container in task exited"), "{description}");
    assert!(description.contains("api exited 1 (CannotStartContainerError"), "{description}");
    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "rolled_back");
}

#[tokio::test]
async fn a_duplicate_failure_event_rolls_back_once_and_alerts_once() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let monitor = deploy_monitor(&world).await;
    push(&world, "v1.0.0", 1, 1).await;
    let _ = world.notifications().await;

    let events = settle(&world, &app, Settle::Fail { circuit_breaker_rollback: false }).await;
    let first = monitor.invoke(events[0].clone()).await.response();
    let second = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(only(&first)["action"], "rolled_back");
    assert_eq!(only(&second)["action"], "skipped", "{second}");
    let service = world.service(&app.stage.cluster, &app.stage.service).await;
    // The failed deployment, and exactly one rollback deployment on top.
    assert_eq!(service.deployments().len(), 3, "{:?}", service.deployments());
    assert_eq!(world.notifications().await.len(), 1);
}

#[tokio::test]
async fn a_circuit_breaker_rollback_under_way_gets_no_second_rollback() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let monitor = deploy_monitor(&world).await;
    push(&world, "v1.0.0", 1, 1).await;
    let _ = world.notifications().await;

    let events = settle(&world, &app, Settle::Fail { circuit_breaker_rollback: true }).await;
    assert_eq!(events.len(), 2, "FAILED, then the circuit breaker's rollback in progress");
    let before = world.service(&app.stage.cluster, &app.stage.service).await;
    for event in &events {
        monitor.invoke(event.clone()).await.response();
    }
    let after = world.service(&app.stage.cluster, &app.stage.service).await;
    assert_eq!(after.deployments().len(), before.deployments().len(), "Conveyor issued an UpdateService");
    assert_eq!(after.deployments()[0].id(), before.deployments()[0].id());
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["MessageAttributes"]["outcome"], "rolled_back");
    let reason = notes[0]["Message"]["metadata"]["additionalContext"]["reason"].as_str().unwrap();
    assert!(reason.contains("circuit breaker already rolled back"), "{reason}");
}

#[tokio::test]
async fn a_stale_completion_of_a_replaced_deployment_vets_nothing() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let monitor = deploy_monitor(&world).await;
    push(&world, "v1.0.0", 1, 5).await;
    let first = world.service(&app.stage.cluster, &app.stage.service).await.deployments()[0].id().unwrap().to_owned();
    push(&world, "v1.1.0", 2, 4).await;

    // ECS completes the first (now ACTIVE) deployment late.
    let mut event = settle(&world, &app, Settle::Complete).await.remove(0);
    event["detail"]["deploymentId"] = json!(first);
    let report = monitor.invoke(event).await.response();
    assert_eq!(only(&report)["action"], "skipped", "{report}");
    assert!(only(&report)["detail"].as_str().unwrap().contains("stale"), "{report}");
    assert_eq!(world.tag_record("shop-api", "v1.0.0").await, None);
    assert_eq!(world.record("shop-api", "stage").await.unwrap()["rollout"]["state"]["kind"], "in_progress");
}

#[tokio::test]
async fn events_of_unmanaged_services_are_skipped() {
    let world = World::new().await;
    world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let monitor = deploy_monitor(&world).await;
    for file in ["ecs-deployment-completed.json", "ecs-deployment-failed.json"] {
        let event: Value = serde_json::from_str(
            &std::fs::read_to_string(conveyor_testkit::repo_root().join(format!("tests/fixtures/events/{file}")))
                .unwrap(),
        )
        .unwrap();
        let report = monitor.invoke(event).await.response();
        assert!(only(&report)["detail"].as_str().unwrap().contains("not a service Conveyor manages"), "{report}");
    }
    let (error_type, _) = monitor.invoke(json!({ "source": "aws.ecs" })).await.error();
    assert_eq!(error_type, "InvalidEvent");
}

#[tokio::test]
async fn the_sweep_settles_rollouts_whose_events_never_came() {
    let world = World::new().await;
    let done = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let stuck = world.seed_app("shop-web", "shop-web", false, json!({ "rollout_timeout_seconds": 1 })).await;
    let monitor = deploy_monitor(&world).await;
    push(&world, "v1.0.0", 1, 1).await;
    let event = world.push_event("shop-web", "v2.0.0", &digest(2), Utc::now());
    conveyor(&world).stage(event, &invocation()).await.unwrap();
    settle(&world, &done, Settle::Complete).await; // its event is lost
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // shop-web times out
    let _ = world.notifications().await;

    let report = monitor.invoke(world.schedule_event()).await.response();
    let mut actions: Vec<(String, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["app"].as_str().unwrap().to_owned(), r["action"].as_str().unwrap().to_owned()))
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [("shop-api".to_owned(), "verified".to_owned()), ("shop-web".to_owned(), "rolled_back".to_owned())]
    );
    let web = world.service(&stuck.stage.cluster, &stuck.stage.service).await;
    assert_eq!(web.task_definition(), Some(stuck.stage.initial_task_definition.as_str()));
    let notes = world.notifications().await;
    let web_note = notes.iter().find(|n| n["MessageAttributes"]["app"] == "shop-web").unwrap();
    assert!(web_note["Message"]["metadata"]["additionalContext"]["reason"]
        .as_str()
        .unwrap()
        .contains("not completed after"));
    // The rollback deployment is watched until ECS completes it; then nothing is in flight.
    let second = monitor.invoke(world.schedule_event()).await.response();
    assert_eq!(only(&second)["action"], "waiting", "{second}");
    settle(&world, &stuck, Settle::Complete).await;
    let third = monitor.invoke(world.schedule_event()).await.response();
    assert_eq!(only(&third)["action"], "restored", "{third}");
    assert!(monitor.invoke(world.schedule_event()).await.response()["results"].as_array().unwrap().is_empty());
    assert!(world.notifications().await.is_empty(), "a restored service is no news");
}

#[tokio::test]
async fn slack_gets_the_alert_and_the_webhook_url_never_appears_in_logs() {
    let world = World::new().await;
    let slack = LocalHttp::start(200).await;
    let secret_path = "/services/T0SECRET/B0SECRET/xoxb-very-secret-token";
    let webhook_parameter = format!("{}/secrets/slack-webhook", world.prefix);
    world.put_secure_parameter(&webhook_parameter, &slack.url(secret_path)).await;
    let app =
        world.seed_app("shop-api", "shop-api", false, json!({ "slack_webhook_parameter": webhook_parameter })).await;
    let monitor = deploy_monitor(&world).await;
    push(&world, "v1.0.0", 1, 1).await;
    let events = settle(&world, &app, Settle::Fail { circuit_breaker_rollback: false }).await;

    monitor.invoke(events[0].clone()).await.response();
    let posts = slack.received();
    let alert = posts.iter().find(|p| p.body.contains("rolled back")).unwrap_or_else(|| panic!("{posts:?}"));
    assert_eq!(alert.path, secret_path);
    let message: Value = serde_json::from_str(&alert.body).unwrap();
    assert!(message["blocks"].as_array().unwrap().len() >= 2);
    assert!(message["text"].as_str().unwrap().contains("shop-api stage: rolled back v1.0.0"));

    // A failing webhook is logged (without its URL) and changes nothing else.
    slack.set_status(500);
    push(&world, "v1.1.0", 2, 0).await;
    let events = settle(&world, &app, Settle::Complete).await;
    assert_eq!(only(&monitor.invoke(events[0].clone()).await.response())["action"], "verified");

    let logs = monitor.logs().join("\n");
    assert!(logs.contains("notification not delivered") && logs.contains("\"channel\":\"Slack\""), "{logs}");
    for secret in ["T0SECRET", "very-secret-token", &slack.url(secret_path)] {
        assert!(!logs.contains(secret), "the webhook URL leaked into the logs");
    }
    for note in world.notifications().await {
        assert!(!note.to_string().contains("very-secret-token"));
    }
}

#[tokio::test]
async fn a_health_check_answered_by_a_redirect_is_not_followed_and_fails() {
    let world = World::new().await;
    let elsewhere = LocalHttp::start(200).await;
    let health = LocalHttp::start(200).await;
    health.redirect_to(302, &elsewhere.url("/health"));
    let app = seed_with_health_url(&world, &health).await;
    let monitor = deploy_monitor(&world).await;
    push(&world, "v1.0.0", 1, 1).await;
    let _ = world.notifications().await;

    let events = settle(&world, &app, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(only(&report)["action"], "rolled_back", "{report}");
    assert!(!health.received().is_empty());
    assert!(elsewhere.received().is_empty(), "the redirect was followed");
    let notes = world.notifications().await;
    let reason = notes[0]["Message"]["metadata"]["additionalContext"]["reason"].as_str().unwrap();
    assert!(reason.contains("HTTP 302") && reason.contains("redirect"), "{reason}");
    let image = world.image_record("shop-api", &digest(1)).await.unwrap();
    assert!(image.get("vetted_stage").is_none(), "{image}");
}

#[tokio::test]
async fn a_health_url_on_the_metadata_address_is_an_invalid_config_even_with_local_endpoints() {
    let world = World::new().await;
    let environments = json!({
        "stage": { "cluster": world.name("stage"), "service": "shop-api",
                   "health_url": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                   "health_allow_http": true },
        "prod": { "cluster": world.name("prod"), "service": "shop-api" },
    });
    let app = world.seed_app("shop-api", "shop-api", false, json!({ "environments": environments })).await;
    let monitor = deploy_monitor(&world).await;

    monitor.invoke(world.schedule_event()).await.response();
    let notes = world.notifications().await;
    let note = notes
        .iter()
        .find(|n| n["MessageAttributes"]["outcome"] == "config_error")
        .unwrap_or_else(|| panic!("no config_error: {notes:#?}"));
    let reason = note["Message"]["metadata"]["additionalContext"]["reason"].as_str().unwrap();
    assert!(reason.contains("environments.stage.health_url") && reason.contains("metadata address"), "{reason}");

    // Its pushes deploy nothing.
    let event = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now());
    let _ = conveyor(&world).stage(event, &invocation()).await;
    assert_eq!(world.revisions(&app.stage.family).await, std::slice::from_ref(&app.stage.initial_task_definition));
}
