//! The real `stage-deploy` binary, driven through the Lambda Runtime API against the local AWS.

use chrono::{Duration, Utc};
use conveyor_testkit::functions::stage_deploy;
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use serde_json::{json, Value};

use crate::support::{assert_same_definition, registered_tag_pairs, tag_pairs};

#[tokio::test]
async fn push_rolls_out_to_every_stage_service_fed_by_the_repository() {
    let world = World::new().await;
    let api = world.seed_app("shop-api", "shop-api", true, json!({})).await;
    let worker = world.seed_app("shop-worker", "shop-api", false, json!({})).await;
    let other = world.seed_app("billing", "billing", false, json!({})).await;
    let function = stage_deploy(&world).await;

    let pushed = digest(1);
    let report = function.invoke(world.push_event("shop-api", "v1.0.0", &pushed, Utc::now())).await.response();

    let statuses: Vec<(&str, &str)> = report["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["app"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("shop-api", "deploying"), ("shop-worker", "deploying")]);

    let expected_image = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-api@{pushed}");
    for app in [&api, &worker] {
        let service = world.service(&app.stage.cluster, &app.stage.service).await;
        let new_arn = service.task_definition().unwrap();
        assert_eq!(new_arn, format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{}:2", app.stage.family));
        // The new revision is the old one with only the api image swapped and Conveyor's tags added.
        let (before, before_tags) = world.task_definition(&app.stage.initial_task_definition).await;
        let (after, after_tags) = world.task_definition(new_arn).await;
        assert_eq!(world.running_image(&app.stage).await, expected_image);
        assert_same_definition(&after, &before);
        let mut expected_tags = tag_pairs(&before_tags);
        expected_tags.extend([
            ("conveyor:app".to_owned(), app.app.clone()),
            ("conveyor:image-tag".to_owned(), "v1.0.0".to_owned()),
            ("conveyor:image-digest".to_owned(), pushed.clone()),
        ]);
        assert_eq!(registered_tag_pairs(&after_tags), expected_tags);
        // The rollout is a new PRIMARY deployment of that revision.
        let primary = &service.deployments()[0];
        assert_eq!((primary.status(), primary.task_definition()), (Some("PRIMARY"), Some(new_arn)));
        // Prod is never touched.
        let prod = world.service(&app.prod.cluster, &app.prod.service).await;
        assert_eq!(prod.task_definition(), Some(app.prod.initial_task_definition.as_str()));
        assert_eq!(world.revisions(&app.prod.family).await.len(), 1);
    }
    assert_eq!(world.revisions(&other.stage.family).await.len(), 1, "an app fed by another repository moved");

    let notifications = world.notifications().await;
    assert_eq!(notifications.len(), 2, "{notifications:#?}");
    let api_note = notifications.iter().find(|n| n["MessageAttributes"]["app"] == "shop-api").unwrap();
    assert_eq!(api_note["Subject"], "[conveyor] shop-api stage: deploying v1.0.0");
    assert_eq!(
        api_note["MessageAttributes"],
        json!({ "app": "shop-api", "environment": "stage", "outcome": "deploying", "severity": "info" })
    );
    let context = &api_note["Message"]["metadata"]["additionalContext"];
    assert_eq!(context["digest"], pushed.as_str());
    assert_eq!(context["tag"], "v1.0.0");
    assert_eq!(context["cluster"], api.stage.cluster.as_str());
    assert!(context["deployment_id"].as_str().unwrap().starts_with("ecs-svc/"));
    assert_eq!(api_note["Message"]["source"], "custom");

    // One JSON log line per decision, with the facts.
    let logs = function.json_logs();
    let started: Vec<&Value> = logs.iter().filter(|l| l["fields"]["message"] == "rollout started").collect();
    assert_eq!(started.len(), 2, "{logs:#?}");
    assert_eq!(started[0]["fields"]["digest"], pushed.as_str());
}

#[tokio::test]
async fn duplicate_and_late_deliveries_change_nothing() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let function = stage_deploy(&world).await;
    let now = Utc::now();
    let newer = world.push_event("shop-api", "v1.1.0", &digest(2), now);
    let older = world.push_event("shop-api", "v1.0.0", &digest(1), now - Duration::minutes(5));

    assert_eq!(function.invoke(newer.clone()).await.response()["apps"][0]["status"], "deploying");
    let revisions = world.revisions(&app.stage.family).await;
    assert_eq!(revisions.len(), 2);

    // The same event again (EventBridge delivers at least once): no new revision.
    let again = function.invoke(newer).await.response();
    assert_eq!(again["apps"][0]["status"], "skipped", "{again}");
    // An older push arriving late: no change, the service keeps the newest image.
    let late = function.invoke(older).await.response();
    assert_eq!(late["apps"][0]["status"], "skipped", "{late}");
    assert!(late["apps"][0]["detail"].as_str().unwrap().contains("older"), "{late}");

    assert_eq!(world.revisions(&app.stage.family).await, revisions);
    assert!(world.running_image(&app.stage).await.ends_with(&digest(2)));
    assert_eq!(world.notifications().await.len(), 1);
}

#[tokio::test]
async fn events_that_are_not_deployable_pushes_are_skipped_with_success() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({ "tags": "^v[0-9]+\\.[0-9]+\\.[0-9]+$" })).await;
    let function = stage_deploy(&world).await;
    let push = |tag: &str| world.push_event("shop-api", tag, &digest(3), Utc::now());

    let mut untagged = push("v1.0.0");
    untagged["detail"].as_object_mut().unwrap().remove("image-tag");
    let mut delete = push("v1.0.0");
    delete["detail"]["action-type"] = json!("DELETE");
    let mut failure = push("v1.0.0");
    failure["detail"]["result"] = json!("FAILURE");
    let unknown = world.push_event("no-such-repository", "v1.0.0", &digest(3), Utc::now());
    let sample_delete: Value =
        serde_json::from_str(include_str!("../fixtures/events/ecr-image-action-delete.json")).unwrap();
    let monitor_event: Value =
        serde_json::from_str(include_str!("../fixtures/events/ecs-deployment-completed.json")).unwrap();

    for (what, event) in [
        ("latest", push("latest")),
        ("non-matching tag", push("feature-x")),
        ("untagged", untagged),
        ("DELETE", delete),
        ("FAILURE", failure),
        ("unknown repository", unknown),
        ("sample DELETE", sample_delete),
        ("other detail-type", monitor_event),
    ] {
        let answer = function.invoke(event).await.response();
        let skipped = answer["skipped"].is_string()
            || answer["apps"].as_array().unwrap().iter().all(|a| a["status"] == "skipped");
        assert!(skipped, "{what}: {answer}");
    }
    assert_eq!(world.revisions(&app.stage.family).await.len(), 1);
    assert!(world.notifications().await.is_empty());
}

#[tokio::test]
async fn malformed_payloads_are_invalid_events_and_change_nothing() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let function = stage_deploy(&world).await;
    let good = world.push_event("shop-api", "v1.0.0", &digest(4), Utc::now());
    let without = |path: &[&str]| {
        let mut event = good.clone();
        let (last, parents) = path.split_last().unwrap();
        let mut node = &mut event;
        for key in parents {
            node = &mut node[*key];
        }
        node.as_object_mut().unwrap().remove(*last);
        event
    };

    for (what, payload) in [
        ("a string", json!("not an event")),
        ("an array", json!([1, 2])),
        ("empty object", json!({})),
        ("no source", without(&["source"])),
        ("no detail-type", without(&["detail-type"])),
        ("no detail", without(&["detail"])),
        ("no repository-name", without(&["detail", "repository-name"])),
        ("no image-digest", without(&["detail", "image-digest"])),
    ] {
        let (error_type, message) = function.invoke(payload).await.error();
        assert_eq!(error_type, "InvalidEvent", "{what}: {message}");
        assert!(!message.is_empty());
    }
    assert_eq!(world.revisions(&app.stage.family).await.len(), 1);
    // The process survived every one of them (no panic): it still deploys.
    assert_eq!(function.invoke(good).await.response()["apps"][0]["status"], "deploying");
}

#[tokio::test]
async fn a_push_from_the_future_is_refused_and_the_real_push_right_after_still_deploys() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let function = stage_deploy(&world).await;

    // A direct invoke stamped an hour ahead: recorded, it would make every real push of the
    // coming hour "late". It is refused, and nothing is recorded or announced.
    let forged = world.push_event("shop-api", "v9.9.9", &digest(9), Utc::now() + Duration::hours(1));
    let (error_type, message) = function.invoke(forged).await.error();
    assert_eq!(error_type, "InvalidEvent", "{message}");
    assert!(message.contains("from the future") && message.contains("5 minutes"), "{message}");
    assert_eq!(world.revisions(&app.stage.family).await.len(), 1);
    assert!(world.record("shop-api", "stage").await.is_none(), "the future push was recorded");
    assert!(world.image_record("shop-api", &digest(9)).await.is_none());
    assert!(world.notifications().await.is_empty());
    let logs = function.logs().join("\n");
    assert!(logs.contains("invalid event") && logs.contains("from the future"), "not logged:\n{logs}");

    // ECR's real push, right after: rolled out, not taken for a late one.
    let report = function.invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now())).await.response();
    assert_eq!(report["apps"][0]["status"], "deploying", "{report}");
    assert!(world.running_image(&app.stage).await.ends_with(&digest(1)));
}
