//! Environments anywhere: several clusters in one installation, prod in another AWS account
//! (Conveyor assumes that account's role for every ECS call there), and prod in another region of
//! Conveyor's own account, through the real binaries.

use chrono::{Duration, Utc};
use conveyor_testkit::accounts::{target_role, OTHER_REGION, PROD_ACCOUNT};
use conveyor_testkit::functions::Functions;
use conveyor_testkit::local_aws::{Settle, ACCOUNT};
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use serde_json::{json, Value};

fn action(report: &Value) -> &str {
    report["results"][0]["action"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn one_installation_deploys_to_services_of_several_clusters() {
    let world = World::new().await;
    let web = world.seed_app("shop-web", "shop-web", false, json!({})).await;
    let batch_env = json!({
        "stage": { "cluster": world.name("stage-batch"), "service": "shop-batch" },
        "prod": { "cluster": world.name("prod-batch"), "service": "shop-batch" },
    });
    let image = format!("{}/shop-web:v0.9.0", world.registry());
    let batch_td = world.register(&world.name("shop-batch-stage"), &image, "stage", false).await;
    world.create_service(&world.name("stage-batch"), "shop-batch", &batch_td, 1).await;
    world
        .put_app("shop-batch", &json!({ "repository": "shop-web", "container": "api", "environments": batch_env }))
        .await;
    let f = Functions::spawn(&world).await;

    let push = world.push_event("shop-web", "v1.0.0", &digest(1), Utc::now());
    let report = f.stage.invoke(push).await.response();
    let statuses: Vec<&str> =
        report["apps"].as_array().unwrap().iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["deploying", "deploying"], "{report}");
    for (cluster, service) in
        [(web.stage.cluster.clone(), "shop-web".to_owned()), (world.name("stage-batch"), "shop-batch".into())]
    {
        let events = world.aws.settle(&cluster, &service, Settle::Complete).await;
        assert_eq!(action(&f.monitor.invoke(events[0].clone()).await.response()), "verified", "{cluster}");
    }
    assert!(world.app_image("shop-batch", "stage-batch").await.ends_with(&digest(1)));
}

#[tokio::test]
async fn prod_in_another_account_gets_the_vetted_image_and_its_failures_roll_back_there() {
    prod_in_another_account(World::new().await).await;
}

/// The scenario of [`prod_in_another_account_gets_the_vetted_image_and_its_failures_roll_back_there`]
/// in `world` (the IAM test runs it too).
pub(crate) async fn prod_in_another_account(world: World) {
    let app = world.seed_app_across("shop-api", "shop-api", PROD_ACCOUNT).await;
    let f = Functions::spawn(&world).await;
    let vet = async |tag: &str, n: u32, minutes: i64| {
        let push = world.push_event(&app.repository, tag, &digest(n), Utc::now() - Duration::minutes(minutes));
        assert_eq!(f.stage.invoke(push).await.response()["apps"][0]["status"], "deploying");
        let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
        assert_eq!(action(&f.monitor.invoke(events[0].clone()).await.response()), "verified");
    };
    vet("v1.0.0", 1, 30).await;

    // Prod's account may not pull the image yet: refused, saying what to add; nothing changed.
    let (error_type, message) = f.promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.error();
    assert_eq!(error_type, "ConfigError", "{message}");
    assert!(message.contains(PROD_ACCOUNT) && message.contains("ecr:BatchGetImage"), "{message}");
    // The repository policy is what to fix, not the app's config.
    assert!(message.starts_with(&format!("the repository policy of {}", app.repository)), "{message}");
    assert!(!message.contains("environments.prod.account"), "{message}");
    assert!(world.image_in(PROD_ACCOUNT, &app.prod).await.ends_with(&format!("{}:v0.9.0", app.repository)));

    // Allowed: promote registers prod's revision in account B and rolls B's service onto it.
    world.allow_pull(&app.repository, PROD_ACCOUNT).await;
    let _ = world.notifications().await;
    let answer = f.promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    assert_eq!(answer["status"], "deploying", "{answer}");
    let first = answer["task_definition_arn"].as_str().unwrap().to_owned();
    assert!(first.contains(&format!(":{PROD_ACCOUNT}:task-definition/")), "{first}");
    assert_eq!(world.image_in(PROD_ACCOUNT, &app.prod).await, world.running_image(&app.stage).await);
    let events = world.aws.settle_in(PROD_ACCOUNT, &app.prod.cluster, &app.prod.service, Settle::Complete).await;
    assert!(events[0]["resources"][0].as_str().unwrap().contains(PROD_ACCOUNT));
    assert_eq!(action(&f.monitor.invoke(events[0].clone()).await.response()), "verified");

    // A failure in account B rolls back there and alerts.
    vet("v1.1.0", 2, 20).await;
    assert_eq!(f.promote.invoke(json!({ "app": "shop-api", "tag": "v1.1.0" })).await.response()["status"], "deploying");
    let _ = world.notifications().await;
    let failed = world
        .aws
        .settle_in(PROD_ACCOUNT, &app.prod.cluster, &app.prod.service, Settle::Fail { circuit_breaker_rollback: false })
        .await;
    assert_eq!(action(&f.monitor.invoke(failed[0].clone()).await.response()), "rolled_back");
    let b = world.ecs_in(PROD_ACCOUNT).await;
    let service = b.describe_services().cluster(&app.prod.cluster).services("shop-api").send().await.unwrap();
    assert_eq!(service.services.unwrap()[0].task_definition(), Some(first.as_str()), "back on v1.0.0's prod revision");
    let notes = world.notifications().await;
    let alert = notes.iter().find(|n| n["MessageAttributes"]["outcome"] == "rolled_back").expect("a rolled_back alert");
    assert_eq!(alert["MessageAttributes"]["environment"], "prod");
    assert_eq!(alert["MessageAttributes"]["severity"], "critical");
    // What Conveyor recorded says where prod is.
    let prod = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(prod["rollout"]["state"]["kind"], "rolled_back");
    assert_eq!(target_role(PROD_ACCOUNT), "arn:aws:iam::210987654321:role/conveyor-conveyor-prod");
}

#[tokio::test]
async fn prod_in_another_region_gets_the_vetted_image_and_is_verified_there() {
    prod_in_another_region(World::new().await).await;
}

/// Prod in another region of Conveyor's own account (the config's `region`): promote and the
/// monitor work there (the IAM test runs it too: the region is no reason for a denial).
pub(crate) async fn prod_in_another_region(world: World) {
    let app = world.seed_app_in_region("shop-api", "shop-api", OTHER_REGION).await;
    let f = Functions::spawn(&world).await;
    let push = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(30));
    assert_eq!(f.stage.invoke(push).await.response()["apps"][0]["status"], "deploying");
    let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    assert_eq!(action(&f.monitor.invoke(events[0].clone()).await.response()), "verified");

    let answer = f.promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    assert_eq!(answer["status"], "deploying", "{answer}");
    let revision = answer["task_definition_arn"].as_str().unwrap();
    assert!(revision.contains(&format!(":{OTHER_REGION}:")), "{revision}");
    let events =
        world.aws.settle_at(ACCOUNT, OTHER_REGION, &app.prod.cluster, &app.prod.service, Settle::Complete).await;
    assert_eq!(events[0]["region"], OTHER_REGION);
    assert_eq!(action(&f.monitor.invoke(events[0].clone()).await.response()), "verified");
    assert_eq!(world.record("shop-api", "prod").await.unwrap()["rollout"]["state"]["kind"], "verified");
}
