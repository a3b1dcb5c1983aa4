//! Revision cleanup through the real binaries: stage-deploy registers a revision per push,
//! deploy-monitor's sweep deregisters the old ones Conveyor registered — exactly the promised
//! ones: never the newest `keep_revisions`, never one it did not register, never what the service
//! runs or would roll back to, at most five per sweep — and records each in the history.

use chrono::Utc;
use conveyor_testkit::functions::Functions;
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use serde_json::{json, Value};

async fn active_revisions(world: &World, family: &str) -> Vec<i32> {
    let listed = world.ecs.list_task_definitions().family_prefix(family).send().await.unwrap();
    let mut numbers: Vec<i32> = listed
        .task_definition_arns()
        .iter()
        .filter(|arn| arn.rsplit_once(':').is_some_and(|(rest, _)| rest.ends_with(&format!("/{family}"))))
        .filter_map(|arn| arn.rsplit_once(':')?.1.parse().ok())
        .collect();
    let mut active = Vec::new();
    numbers.sort_unstable();
    for number in numbers {
        let described =
            world.ecs.describe_task_definition().task_definition(format!("{family}:{number}")).send().await.unwrap();
        if described.task_definition().and_then(|t| t.status()).is_some_and(|s| s.as_str() == "ACTIVE") {
            active.push(number);
        }
    }
    active
}

fn deregistered(report: &Value) -> Vec<&str> {
    let results = report["results"].as_array().unwrap();
    results.iter().filter(|r| r["action"] == "deregistered").filter_map(|r| r["detail"].as_str()).collect()
}

#[tokio::test]
async fn the_sweep_keeps_exactly_the_promised_revisions() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({ "keep_revisions": 2 })).await;
    // An app whose stage and prod services share one family: left alone, however old.
    let shared = world.name("cart");
    let image = format!("{}/cart:v0.9.0", world.registry());
    let first = world.register(&shared, &image, "stage", false).await;
    let (stage, prod) = (world.name("stage"), world.name("prod"));
    world.create_service(&stage, "cart", &first, 1).await;
    world.create_service(&prod, "cart", &first, 1).await;
    let config = json!({ "repository": "cart", "container": "api", "keep_revisions": 1,
        "environments": { "stage": { "cluster": stage, "service": "cart" }, "prod": { "cluster": prod, "service": "cart" } } });
    world.put_app("cart", &config).await;
    let f = Functions::spawn(&world).await;
    let family = &app.stage.family;
    let started = Utc::now() - chrono::Duration::minutes(30);
    for n in 1..=9u32 {
        let push = world.push_event(
            "shop-api",
            &format!("v1.{n}.0"),
            &digest(n),
            started + chrono::Duration::minutes(n.into()),
        );
        assert_eq!(f.stage.invoke(push).await.response()["apps"][0]["status"], "deploying");
        let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
        assert_eq!(f.monitor.invoke(events[0].clone()).await.response()["results"][0]["action"], "verified");
        if n == 2 {
            // Someone else's revision of the family (revision 4): never Conveyor's to remove.
            world.register(family, "nginx:1.27", "stage", false).await;
        }
    }
    // 1: the seed (not Conveyor's); 2, 3: v1.1, v1.2; 4: someone else's; 5..=11: v1.3..v1.9.
    assert_eq!(active_revisions(&world, family).await, (1..=11).collect::<Vec<_>>());

    // Kept: the newest two of Conveyor's (11 runs and is the last verified, 10 the previous
    // one). Due: 2, 3, 5..=9, of which five go in the first sweep, oldest first.
    let first = f.monitor.invoke(world.schedule_event()).await.response();
    assert_eq!(deregistered(&first), ["5 old revision(s) deregistered"], "{first}");
    assert_eq!(active_revisions(&world, family).await, [1, 4, 8, 9, 10, 11]);
    let second = f.monitor.invoke(world.schedule_event()).await.response();
    assert_eq!(deregistered(&second), ["2 old revision(s) deregistered"], "{second}");
    assert_eq!(active_revisions(&world, family).await, [1, 4, 10, 11]);
    let third = f.monitor.invoke(world.schedule_event()).await.response();
    assert!(deregistered(&third).is_empty(), "nothing is due until the next rollout: {third}");

    // Each is in the history; prod (one rollout, nothing old) was never touched.
    let history = world.history("shop-api").await;
    let gone: Vec<&str> = history
        .iter()
        .filter(|e| e["event"] == "deregistered")
        .filter_map(|e| e["task_definition_arn"].as_str())
        .collect();
    assert_eq!(gone.len(), 7, "{history:#?}");
    assert!(gone.iter().all(|arn| !arn.ends_with(":4") && !arn.ends_with(":1")), "{gone:?}");
    assert_eq!(active_revisions(&world, &app.prod.family).await, [1]);

    // The next rollout makes the next revision due: the one that was the newest but one.
    let push = world.push_event("shop-api", "v2.0.0", &digest(20), Utc::now());
    assert_eq!(f.stage.invoke(push).await.response()["apps"][0]["status"], "deploying");
    let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    f.monitor.invoke(events[0].clone()).await.response();
    let fourth = f.monitor.invoke(world.schedule_event()).await.response();
    assert_eq!(deregistered(&fourth), ["1 old revision(s) deregistered"], "{fourth}");
    assert_eq!(active_revisions(&world, family).await, [1, 4, 11, 12]);

    // The app whose stage and prod services share one family: left alone, however old.
    for n in 1..=3u32 {
        let push = world.push_event(
            "cart",
            &format!("v{n}"),
            &digest(40 + n),
            Utc::now() - chrono::Duration::minutes(10 - i64::from(n)),
        );
        f.stage.invoke(push).await.response();
        let events = world.aws.settle(&stage, "cart", Settle::Complete).await;
        f.monitor.invoke(events[0].clone()).await.response();
    }
    let promoted = f.promote.invoke(json!({ "app": "cart", "tag": "v3" })).await.response();
    assert_eq!(promoted["status"], "deploying", "{promoted}");
    let events = world.aws.settle(&prod, "cart", Settle::Complete).await;
    f.monitor.invoke(events[0].clone()).await.response();
    let swept = f.monitor.invoke(world.schedule_event()).await.response();
    assert!(deregistered(&swept).is_empty(), "{swept}");
    assert_eq!(active_revisions(&world, &shared).await, [1, 2, 3, 4, 5]);
}
