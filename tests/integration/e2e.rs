//! End to end on the local stack: the template's EventBridge rules in moto route pushes and ECS
//! deployment events to the real binaries; ECS advances deployments by itself.

use std::time::Duration;

use chrono::Utc;
use conveyor_testkit::runtime_api::Invocation;
use conveyor_testkit::scenario;
use conveyor_testkit::stack::{LocalStack, Moment, StackOptions};
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use serde_json::json;
use tokio::sync::mpsc;

/// A stack whose timeline is kept, to show what happened when an assertion fails.
async fn stack(options: StackOptions) -> (LocalStack, mpsc::UnboundedReceiver<Moment>) {
    let (moments, timeline) = mpsc::unbounded_channel();
    (LocalStack::start(World::new().await, options, moments).await, timeline)
}

fn replay(timeline: &mut mpsc::UnboundedReceiver<Moment>) -> String {
    let mut lines = Vec::new();
    while let Ok(moment) = timeline.try_recv() {
        lines.push(format!("{} {:?} {}", moment.at.format("%H:%M:%S%.3f"), moment.kind, moment.text));
    }
    lines.join("\n")
}

#[tokio::test]
async fn the_whole_story_runs_through_the_templates_routing() {
    let (stack, mut timeline) = stack(scenario::options()).await;
    scenario::seed(&stack).await;
    if let Err(problem) = scenario::story(&stack).await {
        panic!("{problem}\ntimeline:\n{}", replay(&mut timeline));
    }
}

#[tokio::test]
async fn two_quick_pushes_end_with_the_newest_image_and_no_stacked_rollouts() {
    let (stack, mut timeline) = stack(StackOptions { rollout_seconds: 2.0, ..StackOptions::default() }).await;
    let world = &stack.world;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let now = Utc::now();
    stack.push("shop-api", "v1.1.0", &digest(11), now - chrono::Duration::seconds(1)).await;
    stack.push("shop-api", "v1.2.0", &digest(12), now).await;

    let verified = stack.wait_for_state("shop-api", "stage", "v1.2.0", "verified").await;
    let story = replay(&mut timeline);
    verified.unwrap_or_else(|e| panic!("{e}\n{story}"));
    assert!(world.running_image(&app.stage).await.ends_with(&digest(12)));
    // v1.1.0 was superseded before it settled: never vetted, never rolled back to.
    assert_eq!(world.tag_record("shop-api", "v1.1.0").await, None, "{story}");
    let service = world.service(&app.stage.cluster, &app.stage.service).await;
    assert_eq!(service.deployments().len(), 1, "one deployment left, the newest: {:?}", service.deployments());
    assert_eq!(world.revisions(&app.stage.family).await.len(), 3);
    // Nothing rolls back later either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(world.running_image(&app.stage).await.ends_with(&digest(12)));
}

#[tokio::test]
async fn ecs_events_for_unmanaged_services_are_ignored() {
    let (stack, _timeline) = stack(StackOptions::default()).await;
    let world = &stack.world;
    world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let event = |cluster: &str, service: &str| {
        json!({
            "version": "0", "id": "e2e", "detail-type": "ECS Deployment State Change", "source": "aws.ecs",
            "account": "123456789012", "time": Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(), "region": "us-east-1",
            "resources": [format!("arn:aws:ecs:us-east-1:123456789012:service/{cluster}/{service}")],
            "detail": { "eventType": "ERROR", "eventName": "SERVICE_DEPLOYMENT_FAILED", "deploymentId": "ecs-svc/1",
                        "updatedAt": "2026-11-21T12:00:00Z", "reason": "ECS deployment circuit breaker: task failed to start." }
        })
    };
    // Completions and failures of every service of the account reach the monitor (the template's
    // rule does not list clusters); the monitor skips those no app owns, reading nothing but its
    // cached config, and says nothing.
    stack.put(event(&world.name("stage"), "someone-elses-service")).await;
    stack.put(event("other-cluster", "shop-api")).await;

    let deliveries = stack
        .wait_for("the monitor's answers", Duration::from_secs(10), || async {
            let deliveries = stack.deliveries();
            (deliveries.len() >= 2).then_some(deliveries)
        })
        .await
        .unwrap();
    for delivery in &deliveries {
        let Invocation::Response(answer) = &delivery.answer else { panic!("{:?}", delivery.answer) };
        assert!(
            answer["results"][0]["detail"].as_str().unwrap().contains("not a service Conveyor manages"),
            "{answer}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stack.alerts().is_empty());
}
