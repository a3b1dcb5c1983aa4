//! The alarms gate (contract, *Pipelines (v3)*: `alarms`) through the real binaries: an alarm
//! that enters ALARM after the rollout started, before the image is vetted, fails the rollout —
//! at once on its state-change event, or at the soak's end from its history when that event never
//! came and it recovered meanwhile; one already in ALARM when the rollout started does not.

use chrono::{Duration, Utc};
use conveyor_testkit::functions::{self, promote, stage_deploy};
use conveyor_testkit::local_aws::{Fault, FaultMode, Settle};
use conveyor_testkit::world::{digest, ServiceFixture};
use conveyor_testkit::{Function, World};
use serde_json::{json, Value};

/// dev (soaking `soak`, gated on one alarm, quiet) → stage: the alarm's name and the services.
async fn gated(world: &World, soak: &str) -> (String, ServiceFixture, ServiceFixture) {
    let alarm = world.name("shop-api-5xx");
    world.aws.set_alarm(&alarm, "OK").await;
    let shape = [("dev", json!({ "soak": soak, "alarms": [alarm] })), ("stage", json!({ "from": "dev" }))];
    let [dev, stage]: [ServiceFixture; 2] = world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
    (alarm, dev, stage)
}

/// Pushes v1.0.0 and completes its rollout in dev: deploy-monitor's answer.
async fn push_and_complete(world: &World, monitor: &Function, dev: &ServiceFixture) -> Value {
    stage_deploy(world)
        .await
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5)))
        .await
        .response();
    let events = world.aws.settle(&dev.cluster, &dev.service, Settle::Complete).await;
    monitor.invoke(events[0].clone()).await.response()
}

async fn running(world: &World, service: &ServiceFixture) -> String {
    world.service(&service.cluster, &service.service).await.task_definition.unwrap()
}

fn subjects(notifications: &[Value]) -> Vec<&str> {
    notifications.iter().map(|n| n["Subject"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn an_alarm_firing_during_the_soak_rolls_the_rollout_back_at_once_and_fails_the_image() {
    fired_during_the_soak(World::new().await).await;
}

/// The IAM test runs it too.
pub(crate) async fn fired_during_the_soak(world: World) {
    let (alarm, dev, _) = gated(&world, "10m").await;
    let monitor = functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await;
    assert_eq!(push_and_complete(&world, &monitor, &dev).await["results"][0]["action"], "soaking");

    world.aws.set_alarm(&alarm, "ALARM").await;
    let report = monitor.invoke(world.alarm_event(&alarm, Utc::now())).await.response();
    assert_eq!(report["results"][0]["action"], "rolled_back", "{report}");
    assert!(report["results"][0]["detail"].as_str().unwrap().contains(&format!("alarm {alarm} entered ALARM")));
    assert_eq!(running(&world, &dev).await, dev.initial_task_definition, "back on known-good");
    let record = world.record("shop-api", "dev").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "rolled_back", "{record}");
    assert!(record["soak"].is_null() && record["last_verified"].is_null(), "{record}");
    let image = world.image_record("shop-api", &digest(1)).await.unwrap();
    assert!(image.get("failed_dev").is_some() && image.get("vetted_dev").is_none(), "{image:?}");

    // Delivered again (at least once): nothing more happens, nothing more is said.
    let again = monitor.invoke(world.alarm_event(&alarm, Utc::now())).await.response();
    assert_eq!(again["results"][0]["action"], "skipped", "{again}");
    let notifications = world.notifications().await;
    assert_eq!(
        subjects(&notifications),
        [
            "[conveyor] shop-api dev: deploying v1.0.0",
            "[conveyor] shop-api dev: soaking v1.0.0",
            "[conveyor] shop-api dev: rolled_back v1.0.0"
        ]
    );
    let (error_type, _) =
        promote(&world).await.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "stage" })).await.error();
    assert_eq!(error_type, "NotVetted");
}

#[tokio::test]
async fn an_alarm_that_fired_and_recovered_unseen_fails_the_rollout_at_the_soaks_end() {
    recovered_unseen(World::new().await).await;
}

/// The IAM test runs it too.
pub(crate) async fn recovered_unseen(world: World) {
    let (alarm, dev, _) = gated(&world, "2s").await;
    let monitor = functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await;
    assert_eq!(push_and_complete(&world, &monitor, &dev).await["results"][0]["action"], "soaking");
    // Its event is lost: only CloudWatch's history knows.
    world.aws.set_alarm(&alarm, "ALARM").await;
    world.aws.set_alarm(&alarm, "OK").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let tick = monitor.invoke(world.soak_timer_event()).await.response();
    assert_eq!(tick["results"][0]["action"], "rolled_back", "{tick}");
    let detail = tick["results"][0]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("alarm {alarm} entered ALARM")) && detail.contains("recovered since"), "{detail}");
    assert_eq!(running(&world, &dev).await, dev.initial_task_definition);
    let calls = world.aws.calls(&alarm).await;
    assert_eq!((calls.get("DescribeAlarms"), calls.get("DescribeAlarmHistory")), (Some(&2), Some(&1)), "{calls:?}");
}

#[tokio::test]
async fn an_alarm_already_in_alarm_when_the_rollout_started_does_not_fail_it_and_the_notification_says_so() {
    let world = World::new().await;
    let (alarm, dev, _) = gated(&world, "0s").await;
    world.aws.set_alarm(&alarm, "ALARM").await;
    let monitor = functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await;
    let report = push_and_complete(&world, &monitor, &dev).await;
    assert_eq!(report["results"][0]["action"], "verified", "{report}");
    let notifications = world.notifications().await;
    let verified = notifications.iter().find(|n| n["Subject"].as_str().unwrap().contains("verified")).unwrap();
    assert!(
        verified["Message"]["metadata"]["additionalContext"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("alarm {alarm} was already in ALARM")),
        "{verified}"
    );
    // An alarm that fires once the image is vetted fails nothing: it is another problem's.
    let late = monitor.invoke(world.alarm_event(&alarm, Utc::now())).await.response();
    assert_eq!(late["results"][0]["action"], "skipped", "{late}");
}

#[tokio::test]
async fn an_alarm_firing_before_verification_fails_it() {
    let world = World::new().await;
    let (alarm, dev, _) = gated(&world, "0s").await;
    let monitor = functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await;
    stage_deploy(&world)
        .await
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5)))
        .await
        .response();
    world.aws.set_alarm(&alarm, "ALARM").await;
    let events = world.aws.settle(&dev.cluster, &dev.service, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(report["results"][0]["action"], "rolled_back", "{report}");

    assert_eq!(running(&world, &dev).await, dev.initial_task_definition);
}

#[tokio::test]
async fn an_alarm_the_target_does_not_have_is_a_gate_that_does_not_pass() {
    let world = World::new().await;
    let typo = world.name("shop-api-5xxx");
    let shape = [("dev", json!({ "alarms": [typo] })), ("stage", json!({ "from": "dev" }))];
    let [dev, _]: [ServiceFixture; 2] = world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
    let monitor = functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await;
    let report = push_and_complete(&world, &monitor, &dev).await;
    assert_eq!(report["results"][0]["action"], "rolled_back", "{report}");
    let detail = report["results"][0]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("alarm {typo} does not exist")), "{detail}");
}

#[tokio::test]
async fn alarms_conveyor_may_not_read_fail_the_gate_at_once_and_say_why() {
    let world = World::new().await;
    let (alarm, dev, _) = gated(&world, "0s").await;
    // A target account whose stack predates the alarms gate: its role may not read the alarms.
    let denied = FaultMode::Error {
        status: 400,
        code: "AccessDenied".into(),
        message: "User is not authorized to perform: cloudwatch:DescribeAlarms".into(),
    };
    world.aws.fault(&Fault::on("DescribeAlarms").matching(alarm.clone()).mode(denied).persistent()).await;
    let monitor = functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await;
    let report = push_and_complete(&world, &monitor, &dev).await;
    assert_eq!(report["results"][0]["action"], "rolled_back", "not retried for ever: {report}");
    let detail = report["results"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("the alarms cannot be read") && detail.contains("AccessDenied"), "{detail}");
}
