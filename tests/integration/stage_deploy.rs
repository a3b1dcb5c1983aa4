//! stage-deploy through the library against the local AWS: failures, retries, bursts.

use chrono::{Duration, Utc};
use conveyor::vocabulary::Action;
use conveyor::Error;
use conveyor_testkit::local_aws::{Fault, FaultMode};
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use serde_json::json;

use crate::support::{conveyor, invocation};

#[tokio::test]
async fn one_failing_app_does_not_stop_the_others_and_the_retry_finishes_the_job() {
    let world = World::new().await;
    let good = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let broken = world.seed_app("shop-web", "shop-api", false, json!({ "container": "web" })).await;
    let conveyor = conveyor(&world);
    let push = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now());

    let error = conveyor.stage(push.clone(), &invocation()).await.unwrap_err();
    assert_eq!(error.error_type(), conveyor::error::ErrorType::DeployFailed);
    assert!(error.to_string().contains("no container `web`"), "{error}");
    assert!(error.to_string().contains(&format!("{}/apps/shop-web", world.prefix)), "{error}");
    assert!(world.running_image(&good.stage).await.ends_with(&digest(1)));
    assert_eq!(world.revisions(&broken.stage.family).await.len(), 1);

    // The broken app is announced once (people must fix its config), with what to fix.
    let notes = world.notifications().await;
    let outcomes: Vec<(&str, &str)> = notes
        .iter()
        .map(|n| (n["MessageAttributes"]["app"].as_str().unwrap(), n["MessageAttributes"]["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(
        outcomes.contains(&("shop-api", "deploying")) && outcomes.contains(&("shop-web", "failed")),
        "{outcomes:?}"
    );
    let failed = notes.iter().find(|n| n["MessageAttributes"]["app"] == "shop-web").unwrap();
    assert!(failed["Message"]["metadata"]["additionalContext"]["reason"]
        .as_str()
        .unwrap()
        .contains("no container `web`"));

    // Lambda retries the event: nothing is deployed or announced twice.
    conveyor.stage(push, &invocation()).await.unwrap();
    assert_eq!(world.revisions(&good.stage.family).await.len(), 2);
    assert!(world.notifications().await.is_empty());
}

#[tokio::test]
async fn an_invalid_app_config_never_blocks_valid_apps() {
    let world = World::new().await;
    let good = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    world.put_app("broken", &json!({ "repository": "shop-api", "container": "api", "colour": "red" })).await;
    world.put_parameter(&format!("{}/apps/not-json", world.prefix), "{").await;
    let conveyor = conveyor(&world);

    let report =
        conveyor.stage(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now()), &invocation()).await.unwrap();
    assert_eq!(report.apps.len(), 1);
    assert_eq!(report.apps[0].status, Action::Deploying);
    assert!(world.running_image(&good.stage).await.ends_with(&digest(1)));
}

#[tokio::test]
async fn a_refused_update_service_leaves_no_half_done_deployment() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let conveyor = conveyor(&world);
    let push = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now());

    world.aws.inject_fault("UpdateService", &world.id, "InvalidParameterException", 400, 1).await;
    let error = conveyor.stage(push.clone(), &invocation()).await.unwrap_err();
    assert!(
        matches!(&error, Error::Deploy(failures) if failures[0].1.to_string().contains("UpdateService")),
        "{error}"
    );
    // The revision registered for the failed attempt was deregistered; the service is unchanged.
    let service = world.service(&app.stage.cluster, &app.stage.service).await;
    assert_eq!(service.task_definition(), Some(app.stage.initial_task_definition.as_str()));
    assert_eq!(world.revisions(&app.stage.family).await, std::slice::from_ref(&app.stage.initial_task_definition));
    assert!(world.notifications().await.is_empty());
    let record = world.record("shop-api", "stage").await.unwrap();
    assert!(record.get("rollout").is_none(), "a failed rollout must not be recorded: {record}");
    assert_eq!(record["baseline"]["arn"], app.stage.initial_task_definition.as_str());

    // The retry deploys.
    let report = conveyor.stage(push, &invocation()).await.unwrap();
    assert_eq!(report.apps[0].status, Action::Deploying);
    assert!(world.running_image(&app.stage).await.ends_with(&digest(1)));
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let conveyor = conveyor(&world);

    world.aws.inject_fault("RegisterTaskDefinition", &world.id, "ThrottlingException", 400, 2).await;
    let report =
        conveyor.stage(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now()), &invocation()).await.unwrap();
    assert_eq!(report.apps[0].status, Action::Deploying);
    assert_eq!(world.revisions(&app.stage.family).await.len(), 2);
}

#[tokio::test]
async fn a_rollout_whose_record_was_lost_is_recorded_on_retry() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let conveyor = conveyor(&world);
    let push = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now());

    // The rollout happens, then committing it fails (and keeps failing through the SDK's
    // retries); the first commit (the baseline, on first contact) goes through.
    let commit =
        Fault::on("TransactWriteItems").matching(world.table.clone()).mode(FaultMode::Http500).after(1).persistent();
    world.aws.fault(&commit).await;
    let error = conveyor.stage(push.clone(), &invocation()).await.unwrap_err();
    assert!(error.to_string().contains("TransactWriteItems"), "{error}");
    world.aws.clear_faults(&world.table).await;

    let report = conveyor.stage(push, &invocation()).await.unwrap();
    assert_eq!(report.apps[0].status, Action::Deploying, "{report:?}");
    assert_eq!(world.revisions(&app.stage.family).await.len(), 2, "no second revision for the same push");
    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["rollout"]["digest"], digest(1).as_str());
    assert_eq!(record["rollout"]["state"]["kind"], "in_progress");
    assert!(record["rollout"]["deployment_id"].is_string());
    assert_eq!(
        record["baseline"]["arn"],
        app.stage.initial_task_definition.as_str(),
        "the baseline is what ran before"
    );
    assert_eq!(world.notifications().await.len(), 1);
}

#[tokio::test]
async fn a_burst_of_out_of_order_pushes_ends_with_the_newest_image() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let conveyor = conveyor(&world);
    let start = Utc::now() - Duration::minutes(30);
    // Ten pushes, delivered in a scrambled order, some twice.
    let order = [3, 0, 7, 7, 1, 9, 4, 9, 2, 8, 5, 6, 0];
    for n in order {
        let event =
            world.push_event("shop-api", &format!("v1.0.{n}"), &digest(n), start + Duration::minutes(i64::from(n)));
        conveyor.stage(event, &invocation()).await.unwrap();
    }
    assert!(world.running_image(&app.stage).await.ends_with(&digest(9)));
    // Only pushes newer than everything before them were rolled out: 3, 7, 9.
    assert_eq!(world.revisions(&app.stage.family).await.len(), 1 + 3);
}

#[tokio::test]
async fn concurrent_invocations_never_roll_a_service_back() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let start = Utc::now() - Duration::minutes(30);
    for round in 0..4u32 {
        let (first, second) = (conveyor(&world), conveyor(&world));
        let older = world.push_event(
            "shop-api",
            &format!("v{round}.0.0"),
            &digest(10 * round + 1),
            start + Duration::minutes(i64::from(2 * round)),
        );
        let newer = world.push_event(
            "shop-api",
            &format!("v{round}.1.0"),
            &digest(10 * round + 2),
            start + Duration::minutes(i64::from(2 * round + 1)),
        );
        // The newer one may start first: Lambda runs them at once, in any order.
        let (one, two) = (invocation(), invocation());
        let (a, b) = tokio::join!(first.stage(newer, &one), second.stage(older, &two));
        a.unwrap();
        b.unwrap();
        assert!(world.running_image(&app.stage).await.ends_with(&digest(10 * round + 2)), "round {round}");
    }
}
