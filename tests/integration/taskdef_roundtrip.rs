//! The task-definition rewrite through a real RegisterTaskDefinition/DescribeTaskDefinition.

use chrono::Utc;
use conveyor::taskdef::{registration, ImageSwap};
use conveyor_testkit::taskdefs::{maximal_task_definition, APP_CONTAINER};
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use serde_json::json;

use crate::support::{assert_same_definition, conveyor, invocation, registered_tag_pairs, tag_pairs};

#[tokio::test]
async fn a_maximal_task_definition_survives_a_rollout() {
    let world = World::new().await;
    let family = world.name("maximal");
    let cluster = world.name("stage");
    let (definition, tags) = maximal_task_definition(&family, "123456789012", "us-east-1");
    let image = definition.container_definitions()[0].image().unwrap().to_owned();
    let as_is = ImageSwap { container: APP_CONTAINER, image: Some(image), tags: Vec::new() };
    let registered =
        registration(world.ecs.register_task_definition(), &definition, &tags, &as_is).send().await.unwrap();
    let initial = registered.task_definition.unwrap().task_definition_arn.unwrap();
    world.create_service(&cluster, "shop-api", &initial, 2).await;
    world
        .put_app(
            "shop-api",
            &json!({
                "repository": "shop-api", "container": "api",
                "environments": { "stage": { "cluster": cluster, "service": "shop-api" },
                                  "prod": { "cluster": world.name("prod"), "service": "shop-api" } }
            }),
        )
        .await;

    let report = conveyor(&world)
        .stage(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now()), &invocation())
        .await
        .unwrap();
    let new_arn = report.apps[0].task_definition_arn.clone().unwrap();

    let (before, before_tags) = world.task_definition(&initial).await;
    let (after, after_tags) = world.task_definition(&new_arn).await;
    assert_same_definition(&after, &before);
    assert_eq!(
        after.container_definitions()[0].image(),
        Some(format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-api@{}", digest(1)).as_str())
    );
    // Secrets, the empty env value, sidecars and volumes are there (not merely equal-because-absent).
    let api = &after.container_definitions()[0];
    assert_eq!(api.secrets().len(), 2);
    assert!(api.environment().iter().any(|e| e.name() == Some("FEATURE_FLAGS") && e.value() == Some("")));
    assert_eq!(after.container_definitions().len(), 3);
    assert_eq!(after.volumes().len(), 3);
    assert!(
        after.proxy_configuration().is_some()
            && after.runtime_platform().is_some()
            && after.ephemeral_storage().is_some()
    );
    let mut expected = tag_pairs(&before_tags);
    expected.retain(|(k, _)| k != "conveyor:image-tag");
    expected.extend([
        ("conveyor:app".to_owned(), "shop-api".to_owned()),
        ("conveyor:image-tag".to_owned(), "v1.0.0".to_owned()),
        ("conveyor:image-digest".to_owned(), digest(1)),
    ]);
    assert_eq!(registered_tag_pairs(&after_tags), expected);
}
