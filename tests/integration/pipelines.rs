//! Pipelines of any environments (contract, *Pipelines (v3)*) through the real binaries: pushes
//! roll out to every entry environment, `promote` moves the very digest an environment vetted into
//! the one that takes its images from it (`to`), and each function pauses its own environments.

use chrono::{Duration, Utc};
use conveyor_testkit::functions::{self, promote, stage_deploy};
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::{digest, ServiceFixture};
use conveyor_testkit::{Function, World};
use serde_json::{json, Value};

/// dev → stage → prod, each promoted by hand.
async fn three(world: &World) -> [ServiceFixture; 3] {
    let services = world
        .seed_pipeline(
            "shop-api",
            &[("dev", json!({})), ("stage", json!({ "from": "dev" })), ("prod", json!({ "from": "stage" }))],
        )
        .await;
    services.try_into().unwrap()
}

/// Completes the service's rollout and lets deploy-monitor verify it.
async fn verify(world: &World, monitor: &Function, service: &ServiceFixture) {
    let events = world.aws.settle(&service.cluster, &service.service, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(report["results"][0]["action"], "verified", "{report}");
}

fn revision_of(world: &World, service: &ServiceFixture, n: u32) -> String {
    let _ = world;
    format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{}:{n}", service.family)
}

#[tokio::test]
async fn a_push_reaches_the_entry_environment_and_the_vetted_digest_moves_on_by_promotion() {
    let world = World::new().await;
    let [dev, stage, prod] = three(&world).await;
    let (pushes, monitor, promote) = (
        stage_deploy(&world).await,
        functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await,
        promote(&world).await,
    );

    let push = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5));
    let report = pushes.invoke(push).await.response();
    assert_eq!(
        report["apps"],
        json!([{ "app": "shop-api", "environment": "dev", "status": "deploying",
        "detail": format!("{} => {}", dev.initial_task_definition, revision_of(&world, &dev, 2)),
        "task_definition_arn": revision_of(&world, &dev, 2), "deployment_id": report["apps"][0]["deployment_id"] }])
    );
    for untouched in [&stage, &prod] {
        assert_eq!(world.revisions(&untouched.family).await.len(), 1, "only the entry environment gets pushes");
    }

    // Not vetted in dev yet: nothing moves into stage.
    let (error_type, message) =
        promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "stage" })).await.error();
    assert_eq!(error_type, "NotVetted", "{message}");
    assert!(message.contains("never vetted in dev"), "{message}");
    verify(&world, &monitor, &dev).await;

    // Two environments are promoted into by hand: which one is for the caller to say.
    let (error_type, message) = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.error();
    assert_eq!(error_type, "InvalidRequest", "{message}");
    assert!(message.contains("no single environment promoted by hand: give `to` (one of stage, prod)"), "{message}");
    // prod takes its images from stage, which has not vetted it.
    let (error_type, message) =
        promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "prod" })).await.error();
    assert_eq!(error_type, "NotVetted", "{message}");
    assert!(message.contains("never vetted in stage"), "{message}");

    let answer = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "stage" })).await.response();
    assert_eq!(
        (answer["environment"].as_str(), answer["status"].as_str()),
        (Some("stage"), Some("deploying")),
        "{answer}"
    );
    assert_eq!(world.running_image(&stage).await, world.running_image(&dev).await, "the very digest dev vetted");
    verify(&world, &monitor, &stage).await;
    let answer = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "prod" })).await.response();
    assert_eq!(
        (answer["environment"].as_str(), answer["status"].as_str()),
        (Some("prod"), Some("deploying")),
        "{answer}"
    );
    verify(&world, &monitor, &prod).await;
    assert_eq!(world.running_image(&prod).await, format!("{}/shop-api@{}", world.registry(), digest(1)));

    let subjects: Vec<String> =
        world.notifications().await.iter().map(|n| n["Subject"].as_str().unwrap().to_owned()).collect();
    for expected in [
        "[conveyor] shop-api dev: deploying v1.0.0",
        "[conveyor] shop-api dev: verified v1.0.0",
        "[conveyor] shop-api stage: promoted v1.0.0",
        "[conveyor] shop-api prod: promoted v1.0.0",
        "[conveyor] shop-api prod: verified v1.0.0",
    ] {
        assert!(subjects.iter().any(|s| s == expected), "no {expected:?} in {subjects:#?}");
    }
}

#[tokio::test]
async fn a_tag_pushed_later_is_promotable_from_every_environment_that_vetted_its_image() {
    let world = World::new().await;
    let [dev, stage, prod] = three(&world).await;
    let (pushes, monitor, promote) = (
        stage_deploy(&world).await,
        functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await,
        promote(&world).await,
    );
    pushes
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5)))
        .await
        .response();
    verify(&world, &monitor, &dev).await;
    promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "stage" })).await.response();
    verify(&world, &monitor, &stage).await;
    // The same image pushed again under a release tag: dev runs it already.
    let report = pushes
        .invoke(world.push_event("shop-api", "release-1", &digest(1), Utc::now() - Duration::minutes(1)))
        .await
        .response();
    assert_eq!(report["apps"][0]["status"], "skipped", "{report}");
    let answer = promote.invoke(json!({ "app": "shop-api", "tag": "release-1", "to": "prod" })).await.response();
    assert_eq!((answer["status"].as_str(), answer["digest"].as_str()), (Some("deploying"), Some(digest(1).as_str())));
    verify(&world, &monitor, &prod).await;
}

#[tokio::test]
async fn a_promotion_into_an_entry_or_unknown_environment_is_refused_and_changes_nothing() {
    let world = World::new().await;
    let [dev, _, _] = three(&world).await;
    let promote = promote(&world).await;
    let (error_type, message) =
        promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "dev" })).await.error();
    assert_eq!(error_type, "InvalidRequest", "{message}");
    assert!(message.contains("dev is an entry environment") && message.contains("stage, prod"), "{message}");
    let (error_type, message) = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "qa" })).await.error();
    assert_eq!(error_type, "InvalidRequest", "{message}");
    assert!(message.contains("has no environment qa (it has: dev, stage, prod)"), "{message}");
    let (error_type, _) = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "Prod" })).await.error();
    assert_eq!(error_type, "InvalidRequest");
    assert_eq!(world.revisions(&dev.family).await.len(), 1);
}

#[tokio::test]
async fn a_cycle_or_a_pipeline_without_entry_is_refused_with_its_path_and_announced() {
    let world = World::new().await;
    let [_, stage, prod] = three(&world).await;
    let cyclic = json!({ "repository": "shop-api", "container": "api", "environments": {
        "stage": { "cluster": stage.cluster, "service": "shop-api", "from": "prod" },
        "prod": { "cluster": prod.cluster, "service": "shop-api", "from": "stage" } } });
    world.put_app("shop-api", &cyclic).await;
    let pushes = stage_deploy(&world).await;
    let report = pushes.invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now())).await.response();
    assert_eq!(report["skipped"], "no app is fed by repository shop-api", "{report}");
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    let text = notes[0]["Message"].to_string();
    for needle in ["environments.prod.from", "`from` goes round: prod ← stage ← prod", "no entry environment"] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    let (error_type, message) =
        promote(&world).await.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.error();
    assert_eq!(error_type, "ConfigError", "{message}");
    assert!(message.contains("environments.prod.from"), "{message}");
}

#[tokio::test]
async fn each_function_pauses_its_own_environments_and_names_the_other_for_the_rest() {
    let world = World::new().await;
    let [dev, _, _] = three(&world).await;
    let (pushes, promote) = (stage_deploy(&world).await, promote(&world).await);
    let pause = |env: &str| json!({ "operation": "pause", "app": "shop-api", "environment": env, "reason": "INC-7" });

    let answer = pushes.invoke(pause("dev")).await.response();
    assert_eq!(answer["environments"][0]["environment"], "dev", "{answer}");
    let answer = promote.invoke(pause("stage")).await.response();
    assert_eq!(answer["environments"][0]["environment"], "stage", "{answer}");
    let (error_type, message) = pushes.invoke(pause("prod")).await.error();
    assert_eq!(error_type, "InvalidRequest");
    assert!(message.contains("prod is paused and resumed through the promote function"), "{message}");
    // Without an environment: the function's own one, when the app has only one of its kind.
    let answer = pushes.invoke(json!({ "operation": "resume", "app": "shop-api" })).await.response();
    assert_eq!(answer["environments"][0]["environment"], "dev", "{answer}");
    let (error_type, message) = promote.invoke(json!({ "operation": "resume", "app": "shop-api" })).await.error();
    assert_eq!(error_type, "InvalidRequest");
    assert!(message.contains("stage, prod"), "{message}");
    // `deploy_latest` is for the environments pushes roll out to, whatever their names.
    let latest =
        |env: &str| json!({ "operation": "resume", "app": "shop-api", "environment": env, "deploy_latest": true });
    let (error_type, message) = promote.invoke(latest("stage")).await.error();
    assert_eq!(error_type, "InvalidRequest");
    assert!(message.contains("`deploy_latest` rolls out the push held in an entry environment"), "{message}");
    let answer = pushes.invoke(latest("dev")).await.response();
    assert_eq!(answer["environments"][0]["environment"], "dev", "{answer}");

    // A paused promoted-into environment refuses promotions; the entry environment still deploys.
    let report = pushes.invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now())).await.response();
    assert_eq!(report["apps"][0]["status"], "deploying", "{report}");
    assert_eq!(world.revisions(&dev.family).await.len(), 2);
}

/// dev → stage (auto) → prod (by hand).
async fn auto_stage(world: &World) -> [ServiceFixture; 3] {
    let shape = [
        ("dev", json!({})),
        ("stage", json!({ "from": "dev", "promotion": "auto" })),
        ("prod", json!({ "from": "stage" })),
    ];
    world.seed_pipeline("shop-api", &shape).await.try_into().unwrap()
}

#[tokio::test]
async fn an_image_vetted_in_dev_is_promoted_into_stage_at_once_as_conveyors() {
    auto_promotion(World::new().await).await;
}

/// dev → stage (auto) → prod: a push, dev's verification and stage's auto promotion, stage's
/// verification, prod's promotion by hand. The IAM test runs it too.
pub(crate) async fn auto_promotion(world: World) {
    let [dev, stage, prod] = auto_stage(&world).await;
    let (pushes, monitor, promote) = (
        stage_deploy(&world).await,
        functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await,
        promote(&world).await,
    );
    pushes
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5)))
        .await
        .response();
    let events = world.aws.settle(&dev.cluster, &dev.service, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(
        report["results"],
        json!([
            { "app": "shop-api", "environment": "dev", "action": "verified", "detail": report["results"][0]["detail"] },
            { "app": "shop-api", "environment": "stage", "action": "deploying",
              "detail": "auto promotion of v1.0.0 from dev: deploying" }
        ]),
        "{report}"
    );
    assert_eq!(world.running_image(&stage).await, world.running_image(&dev).await);
    let history = world.history("shop-api").await;
    let promoted = history.iter().find(|e| e["environment"] == "stage" && e["event"] == "promoted");
    let promoted = promoted.unwrap_or_else(|| panic!("not in the history: {history:#?}"));
    assert_eq!(
        (promoted["requested_by"].as_str(), promoted["reason"].as_str()),
        (Some("conveyor"), Some("vetted in dev"))
    );

    // The same event again, and the sweep: it is there already, nothing more.
    let again = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(again["results"].as_array().unwrap().len(), 1, "{again}");
    let swept = monitor.invoke(world.schedule_event()).await.response();
    assert!(!swept.to_string().contains("auto promotion"), "{swept}");
    assert_eq!(world.revisions(&stage.family).await.len(), 2);

    // prod is the one environment promoted by hand: `to` is implied.
    verify(&world, &monitor, &stage).await;
    let answer = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    assert_eq!(
        (answer["environment"].as_str(), answer["status"].as_str()),
        (Some("prod"), Some("deploying")),
        "{answer}"
    );
    assert_eq!(world.running_image(&prod).await, world.running_image(&dev).await);
}

#[tokio::test]
async fn an_auto_promotion_into_a_paused_environment_is_held_until_the_sweep_after_resume() {
    let world = World::new().await;
    let [dev, stage, _] = auto_stage(&world).await;
    let (pushes, monitor, promote) = (
        stage_deploy(&world).await,
        functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await,
        promote(&world).await,
    );
    let pause = json!({ "operation": "pause", "app": "shop-api", "environment": "stage", "reason": "load test" });
    promote.invoke(pause).await.response();
    pushes
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5)))
        .await
        .response();
    let events = world.aws.settle(&dev.cluster, &dev.service, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(report["results"][1]["action"], "paused", "{report}");
    assert_eq!(report["results"][1]["detail"], "auto promotion of v1.0.0 from dev: held, stage is paused");
    assert_eq!(world.revisions(&stage.family).await.len(), 1, "a paused environment changed");

    let resume = json!({ "operation": "resume", "app": "shop-api", "environment": "stage" });
    promote.invoke(resume).await.response();
    let swept = monitor.invoke(world.schedule_event()).await.response();
    let moved: Vec<&Value> =
        swept["results"].as_array().unwrap().iter().filter(|r| r["environment"] == "stage").collect();
    assert_eq!(
        moved,
        [&json!({ "app": "shop-api", "environment": "stage", "action": "deploying",
        "detail": "auto promotion of v1.0.0 from dev: deploying" })],
        "{swept}"
    );
    assert_eq!(world.running_image(&stage).await, world.running_image(&dev).await);
}

/// stage (soak `5s`) → prod (auto): verified, soaking, vetted by the timer, promoted onwards. The
/// soak is long enough for the early tick to come before its end on a loaded machine, and the test
/// sleeps until the recorded end rather than for a fixed time.
#[tokio::test]
async fn a_verified_image_soaks_before_it_is_vetted_and_the_timer_vets_it_within_a_tick() {
    let world = World::new().await;
    let shape = [("stage", json!({ "soak": "5s" })), ("prod", json!({ "from": "stage", "promotion": "auto" }))];
    let [stage, prod]: [ServiceFixture; 2] = world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
    let (pushes, monitor, promote) = (
        stage_deploy(&world).await,
        functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await,
        promote(&world).await,
    );
    pushes
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5)))
        .await
        .response();
    let events = world.aws.settle(&stage.cluster, &stage.service, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(report["results"].as_array().unwrap().len(), 1, "nothing moves on while soaking: {report}");
    assert_eq!(report["results"][0]["action"], "soaking", "{report}");
    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "verified");
    let until: chrono::DateTime<Utc> = record["soak"]["until"].as_str().expect("a soak end").parse().unwrap();
    assert!(record["last_verified"].is_null(), "not known good before the soak ends: {record}");
    let (error_type, message) =
        promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "prod" })).await.error();
    assert_eq!((error_type.as_str(), message.contains("never vetted in stage")), ("NotVetted", true), "{message}");

    // A tick before the end changes nothing; one after it vets, and prod gets it at once.
    let early = monitor.invoke(world.soak_timer_event()).await.response();
    assert_eq!(early["results"], json!([]), "{early}");
    let left = (until - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(200)).await;
    let tick = monitor.invoke(world.soak_timer_event()).await.response();
    let actions: Vec<(&str, &str)> = tick["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["environment"].as_str().unwrap(), r["action"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("stage", "verified"), ("prod", "deploying")], "{tick}");
    assert_eq!(world.running_image(&prod).await, world.running_image(&stage).await);
    let record = world.record("shop-api", "stage").await.unwrap();
    assert!(record["soak"].is_null() && !record["last_verified"].is_null(), "{record}");
    let again = monitor.invoke(world.soak_timer_event()).await.response();
    assert_eq!(again["results"], json!([]), "a soak ends once: {again}");
    let outcomes: Vec<String> = world
        .notifications()
        .await
        .iter()
        .filter(|n| n["Subject"].as_str().unwrap().contains(" stage:"))
        .map(|n| n["Subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        [
            "[conveyor] shop-api stage: deploying v1.0.0",
            "[conveyor] shop-api stage: soaking v1.0.0",
            "[conveyor] shop-api stage: verified v1.0.0"
        ]
    );
}

#[tokio::test]
async fn a_newer_rollout_during_the_soak_supersedes_it_and_the_soaked_image_is_never_vetted() {
    let world = World::new().await;
    let shape = [("stage", json!({ "soak": "2s" })), ("prod", json!({ "from": "stage" }))];
    let [stage, _]: [ServiceFixture; 2] = world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
    let (pushes, monitor) =
        (stage_deploy(&world).await, functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await);
    pushes
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5)))
        .await
        .response();
    let events = world.aws.settle(&stage.cluster, &stage.service, Settle::Complete).await;
    assert_eq!(monitor.invoke(events[0].clone()).await.response()["results"][0]["action"], "soaking");
    let report = pushes
        .invoke(world.push_event("shop-api", "v1.1.0", &digest(2), Utc::now() - Duration::minutes(4)))
        .await
        .response();
    assert_eq!(report["apps"][0]["status"], "deploying", "{report}");
    assert!(world.record("shop-api", "stage").await.unwrap()["soak"].is_null(), "the newer rollout ends the soak");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    monitor.invoke(world.soak_timer_event()).await.response();
    let image = world.image_record("shop-api", &digest(1)).await.unwrap();
    assert!(image.get("vetted_stage").is_none(), "{image:?}");
}

#[tokio::test]
async fn environment_names_with_dashes_work_through_every_expression() {
    let world = World::new().await;
    let shape = [("qa-1", json!({})), ("prod-eu", json!({ "from": "qa-1" }))];
    let [qa, prod]: [ServiceFixture; 2] = world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
    let (pushes, monitor, promote) = (
        stage_deploy(&world).await,
        functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await,
        promote(&world).await,
    );
    pushes
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - Duration::minutes(5)))
        .await
        .response();
    verify(&world, &monitor, &qa).await;
    let answer = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    assert_eq!(
        (answer["environment"].as_str(), answer["status"].as_str()),
        (Some("prod-eu"), Some("deploying")),
        "{answer}"
    );
    verify(&world, &monitor, &prod).await;
    let image = world.image_record("shop-api", &digest(1)).await.unwrap();
    assert!(image["vetted_qa-1"].is_string() && image["vetted_prod-eu"].is_string(), "{image}");
}

#[tokio::test]
async fn a_person_going_back_in_an_automatic_environment_is_not_undone_by_the_sweep() {
    let world = World::new().await;
    let shape = [("stage", json!({})), ("prod", json!({ "from": "stage", "promotion": "auto" }))];
    let [stage, prod]: [ServiceFixture; 2] = world.seed_pipeline("shop-api", &shape).await.try_into().unwrap();
    let (pushes, monitor, promote) = (
        stage_deploy(&world).await,
        functions::deploy_monitor(&world, std::time::Duration::from_secs(2)).await,
        promote(&world).await,
    );
    for (tag, n, minutes) in [("v1.0.0", 1, 10), ("v2.0.0", 2, 5)] {
        pushes
            .invoke(world.push_event("shop-api", tag, &digest(n), Utc::now() - Duration::minutes(minutes)))
            .await
            .response();
        let events = world.aws.settle(&stage.cluster, &stage.service, Settle::Complete).await;
        let report = monitor.invoke(events[0].clone()).await.response();
        assert_eq!(report["results"][1]["action"], "deploying", "{report}");
        verify(&world, &monitor, &prod).await;
    }
    // prod goes back to v1.0.0 by hand: the newest vetted image (v2.0.0) stays out.
    let answer =
        promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "prod", "reason": "INC-9" })).await.response();
    assert_eq!(answer["status"], "deploying", "{answer}");
    let swept = monitor.invoke(world.schedule_event()).await.response();
    assert!(!swept.to_string().contains("auto promotion"), "{swept}");
    assert!(world.running_image(&prod).await.ends_with(&digest(1)));
}
