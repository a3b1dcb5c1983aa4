//! How many AWS calls each job makes, by operation, counted by the local AWS. A regression guard
//! for "the fewest calls the job allows": a new call shows up here first.

use std::collections::BTreeMap;

use chrono::Utc;
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use serde_json::json;

use crate::support::{conveyor, invocation};

/// Calls made by `action`, by operation (what the world's id appears in).
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

#[tokio::test]
async fn each_job_makes_the_fewest_calls_it_needs() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let conveyor = conveyor(&world);

    // A push (cold: the configuration is read once, then cached).
    let push = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now());
    let stage = calls_of(&world, async {
        conveyor::stage::handle(&conveyor, push.clone(), &invocation()).await.map(drop).unwrap()
    })
    .await;
    assert_eq!(
        stage,
        expect(&[
            ("DeleteParameter", 1), // lease released
            ("DescribeServices", 1),
            ("DescribeTaskDefinition", 1), // with tags
            ("GetParameter", 1),           // release record
            ("GetParametersByPath", 1),    // app configuration (cold start)
            ("Publish", 1),
            ("PutParameter", 2), // lease taken, release record written
            ("RegisterTaskDefinition", 1),
            ("UpdateService", 1),
        ])
    );
    // The same push again (warm): the record says it is a repeated delivery.
    let repeated =
        calls_of(&world, async { conveyor::stage::handle(&conveyor, push, &invocation()).await.map(drop).unwrap() })
            .await;
    assert_eq!(repeated, expect(&[("DeleteParameter", 1), ("GetParameter", 1), ("PutParameter", 1)]));

    // COMPLETED, verified (no health_url): the image and its tag are recorded as vetted.
    let completed = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    let verified = calls_of(&world, async {
        conveyor::monitor::handle(&conveyor, completed[0].clone(), &invocation()).await.map(drop).unwrap()
    })
    .await;
    assert_eq!(
        verified,
        expect(&[
            ("DeleteParameter", 1),
            ("DescribeServices", 1),
            ("GetParameter", 3), // record, record under the lease, image record
            ("Publish", 1),
            ("PutParameter", 4), // lease, record, image record, tag record
        ])
    );

    // Promote to prod.
    let promoted = calls_of(&world, async {
        conveyor::promote::handle(&conveyor, json!({ "app": "shop-api", "tag": "v1.0.0" }), &invocation())
            .await
            .map(drop)
            .unwrap()
    })
    .await;
    assert_eq!(
        promoted,
        expect(&[
            ("DeleteParameter", 1),
            ("DescribeServices", 1),
            ("DescribeTaskDefinition", 1),
            ("GetParameter", 3), // tag record, image record, prod record
            ("Publish", 1),
            ("PutParameter", 2),
            ("RegisterTaskDefinition", 1),
            ("UpdateService", 1),
        ])
    );

    // FAILED in prod: diagnose, roll back, record, alert.
    let failed =
        world.aws.settle(&app.prod.cluster, &app.prod.service, Settle::Fail { circuit_breaker_rollback: false }).await;
    let rolled_back = calls_of(&world, async {
        conveyor::monitor::handle(&conveyor, failed[0].clone(), &invocation()).await.map(drop).unwrap()
    })
    .await;
    assert_eq!(
        rolled_back,
        expect(&[
            ("DeleteParameter", 1),
            ("DescribeServices", 1),
            ("DescribeTasks", 1),
            ("GetParameter", 3), // record, record under the lease, image record
            ("ListTasks", 1),
            ("Publish", 1),
            ("PutParameter", 3), // lease, record, image record
            ("UpdateService", 1),
        ])
    );
}
