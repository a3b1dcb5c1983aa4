//! The trust boundary through the real binaries: what someone allowed to use Conveyor (invoke
//! stage-deploy, write a table item, register a task definition) cannot make prod run.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ecs::types::{ContainerDefinition, Tag};
use chrono::{Duration, Utc};
use conveyor_testkit::functions::{self, promote, stage_deploy};
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::{digest, AppFixture};
use conveyor_testkit::{Function, World};
use serde_json::{json, Value};

fn only(report: &Value) -> &Value {
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{report}");
    &results[0]
}

async fn deploy_monitor(world: &World) -> Function {
    functions::deploy_monitor(world, std::time::Duration::from_secs(2)).await
}

/// Pushes `tag` (image `n`) to stage through stage-deploy and lets deploy-monitor verify it.
async fn vet(world: &World, app: &AppFixture, stage: &Function, monitor: &Function, tag: &str, n: u32) {
    let push = world.push_event(&app.repository, tag, &digest(n), Utc::now() - Duration::minutes(30 - i64::from(n)));
    assert_eq!(stage.invoke(push).await.response()["apps"][0]["status"], "deploying");
    let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    assert_eq!(only(&monitor.invoke(events[0].clone()).await.response())["action"], "verified");
}

#[tokio::test]
async fn a_push_naming_another_account_or_region_is_skipped_and_logged() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let stage = stage_deploy(&world).await;

    // Anyone who may invoke stage-deploy (or forward events to Conveyor's bus) writes the
    // envelope: the image would be `999999999999.dkr.ecr...` — never built from it.
    for (key, value) in [("account", "999999999999"), ("region", "eu-west-1")] {
        let mut push = world.push_event("shop-api", "v6.6.6", &digest(6), Utc::now());
        push[key] = json!(value);
        let report = stage.invoke(push).await.response();
        assert_eq!(report["apps"][0]["status"], "skipped", "{report}");
        let detail = report["apps"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(value) && detail.contains("not the app's registry"), "{detail}");
    }
    assert_eq!(world.revisions(&app.stage.family).await.len(), 1, "a revision was registered");
    assert!(world.image_record("shop-api", &digest(6)).await.is_none());
    let skipped: Vec<Value> =
        stage.json_logs().into_iter().filter(|l| l["fields"]["message"] == "foreign push skipped").collect();
    assert_eq!(skipped.len(), 2, "each skip is logged");
    assert_eq!(skipped[0]["fields"]["app"], "shop-api");

    // Without an account in the event, the image still comes from the app's registry.
    let mut push = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now());
    push.as_object_mut().unwrap().remove("account");
    assert_eq!(stage.invoke(push).await.response()["apps"][0]["status"], "deploying");
    assert_eq!(world.running_image(&app.stage).await, format!("{}/shop-api@{}", world.registry(), digest(1)));
}

#[tokio::test]
async fn an_app_naming_its_registry_deploys_from_it_and_only_from_it() {
    let world = World::new().await;
    let registry = json!({ "account": "444455556666", "region": "us-east-2" });
    let app = world.seed_app("shop-api", "shop-api", false, json!({ "registry": registry })).await;
    let stage = stage_deploy(&world).await;

    let mut own = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now());
    own["account"] = json!("444455556666");
    own["region"] = json!("us-east-2");
    assert_eq!(stage.invoke(own).await.response()["apps"][0]["status"], "deploying");
    assert_eq!(
        world.running_image(&app.stage).await,
        format!("444455556666.dkr.ecr.us-east-2.amazonaws.com/shop-api@{}", digest(1))
    );
    // Conveyor's own account is not the app's registry.
    let conveyors = world.push_event("shop-api", "v2.0.0", &digest(2), Utc::now() + Duration::seconds(1));
    assert_eq!(stage.invoke(conveyors).await.response()["apps"][0]["status"], "skipped");
}

/// Writes a `TAG#` item as someone with write access to the table would (what the template's
/// resource policy now denies to everyone but Conveyor's functions).
async fn forge_tag_item(world: &World, tag: &str, digest: &str, image: &str) {
    world
        .dynamodb
        .put_item()
        .table_name(&world.table)
        .item("pk", AttributeValue::S("APP#shop-api".into()))
        .item("sk", AttributeValue::S(format!("TAG#{tag}")))
        .item("tag", AttributeValue::S(tag.into()))
        .item("digest", AttributeValue::S(digest.into()))
        .item("image", AttributeValue::S(image.into()))
        .item("vetted_at", AttributeValue::S(Utc::now().to_rfc3339()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_forged_tag_item_never_chooses_prods_image() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor, promote) = (stage_deploy(&world).await, deploy_monitor(&world).await, promote(&world).await);
    vet(&world, &app, &stage, &monitor, "v1.0.0", 1).await;

    // The vetted digest, beside an image from another registry: the image is rebuilt from the
    // app's registry and the digest, never taken from the item.
    forge_tag_item(&world, "v1.0.0", &digest(1), &format!("evil.io/x@{}", digest(1))).await;
    let answer = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    assert_eq!(answer["status"], "deploying", "{answer}");
    assert_eq!(world.running_image(&app.prod).await, format!("{}/shop-api@{}", world.registry(), digest(1)));
    assert_eq!(world.running_image(&app.prod).await, world.running_image(&app.stage).await);
    let logs = promote.logs().join("\n");
    assert!(logs.contains("is not the app's own: ignored"), "the forgery is not logged:\n{logs}");

    // A digest stage never verified, under a forged tag: refused by the check on its own item.
    forge_tag_item(&world, "v6.6.6", &digest(6), &format!("evil.io/x@{}", digest(6))).await;
    let prod_before = world.service(&app.prod.cluster, &app.prod.service).await.task_definition;
    let (error_type, message) = promote.invoke(json!({ "app": "shop-api", "tag": "v6.6.6" })).await.error();
    assert_eq!(error_type, "NotVetted", "{message}");
    assert_eq!(world.service(&app.prod.cluster, &app.prod.service).await.task_definition, prod_before);
}

#[tokio::test]
async fn a_revision_tagged_like_conveyors_is_drift_and_never_vetted() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor, promote) = (stage_deploy(&world).await, deploy_monitor(&world).await, promote(&world).await);
    vet(&world, &app, &stage, &monitor, "v1.0.0", 1).await;

    // Someone who may register task definitions and update the stage service puts an image of
    // their choice there, tagged as Conveyor tags its own revisions (a guessed lease included).
    let evil = format!("{}/shop-api@{}", world.registry(), digest(6));
    let tags = [
        ("conveyor:app", "shop-api".to_owned()),
        ("conveyor:image-tag", "v6.6.6".to_owned()),
        ("conveyor:image-digest", digest(6)),
        ("conveyor:lease", "0".repeat(32)),
    ];
    let forged = world
        .ecs
        .register_task_definition()
        .family(&app.stage.family)
        .container_definitions(ContainerDefinition::builder().name("api").image(&evil).memory(256).build())
        .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(*k).value(v).build()).collect()))
        .send()
        .await
        .unwrap()
        .task_definition
        .unwrap()
        .task_definition_arn
        .unwrap();
    world
        .ecs
        .update_service()
        .cluster(&app.stage.cluster)
        .service(&app.stage.service)
        .task_definition(&forged)
        .send()
        .await
        .unwrap();
    let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    for event in events {
        let _ = monitor.invoke(event).await;
    }
    let _ = monitor.invoke(world.schedule_event()).await;

    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["drift"]["revision"], forged.as_str(), "{record}");
    assert_eq!(record["rollout"]["digest"], digest(1).as_str(), "the forged revision was adopted: {record}");
    let image = world.image_record("shop-api", &digest(6)).await;
    assert!(image.as_ref().is_none_or(|i| i["vetted_stage"].is_null()), "{image:?}");
    let (error_type, message) = promote.invoke(json!({ "app": "shop-api", "tag": "v6.6.6" })).await.error();
    assert_eq!(error_type, "NotVetted", "{message}");
}
