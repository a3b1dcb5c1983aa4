//! The correctness holes of Conveyor v1, one scenario each, through the real function binaries
//! (`stage-deploy`, `deploy-monitor`, `promote`) against the local AWS. The library is called
//! directly only to arrange what people do with the `conveyor` CLI (pause, resume) and to read the
//! app config. Each test's doc comment names the hole and what v1 did wrong.

use chrono::{DateTime, Duration, Utc};
use conveyor::taskdef::{registration, ImageSwap};
use conveyor::types::{AppName, Environment};
use conveyor_testkit::functions::{self, promote as promote_function, stage_deploy};
use conveyor_testkit::local_aws::{Fault, FaultMode, Settle};
use conveyor_testkit::world::{digest, AppFixture, ServiceFixture};
use conveyor_testkit::{Function, World};
use serde_json::{json, Value};

use crate::support::{assert_same_definition, conveyor, invocation};

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/// deploy-monitor, with a dead health endpoint failing a verification in 2 s.
async fn deploy_monitor(world: &World) -> Function {
    functions::deploy_monitor(world, std::time::Duration::from_secs(2)).await
}

fn minutes_ago(minutes: i64) -> DateTime<Utc> {
    Utc::now() - Duration::minutes(minutes)
}

/// Delivers a push of `shop-api` through stage-deploy; returns the report of the one app it feeds.
async fn push(world: &World, stage: &Function, tag: &str, n: u32, time: DateTime<Utc>) -> Value {
    let report = stage.invoke(world.push_event("shop-api", tag, &digest(n), time)).await.response();
    let apps = report["apps"].as_array().unwrap_or_else(|| panic!("{report}"));
    assert_eq!(apps.len(), 1, "{report}");
    apps[0].clone()
}

/// Delivers a push that must start a rollout; returns the report (with the new revision).
async fn push_deploying(world: &World, stage: &Function, tag: &str, n: u32, time: DateTime<Utc>) -> Value {
    let report = push(world, stage, tag, n, time).await;
    assert_eq!(report["status"], "deploying", "{report}");
    report
}

fn arn_of(report: &Value) -> String {
    report["task_definition_arn"].as_str().unwrap_or_else(|| panic!("no task_definition_arn: {report}")).to_owned()
}

/// Hands one event to deploy-monitor; returns its single result.
async fn monitor_event(monitor: &Function, event: Value) -> Value {
    let report = monitor.invoke(event).await.response();
    let results = report["results"].as_array().unwrap_or_else(|| panic!("{report}"));
    assert_eq!(results.len(), 1, "{report}");
    results[0].clone()
}

/// ECS completes the service's primary deployment and the monitor verifies it.
async fn verify(world: &World, monitor: &Function, service: &ServiceFixture) {
    let events = world.aws.settle(&service.cluster, &service.service, Settle::Complete).await;
    let result = monitor_event(monitor, events[0].clone()).await;
    assert_eq!(result["action"], "verified", "{result}");
}

async fn current_task_definition(world: &World, service: &ServiceFixture) -> String {
    world.service(&service.cluster, &service.service).await.task_definition().unwrap().to_owned()
}

/// `outcome/severity` of each notification, for assertion messages.
fn summary(notes: &[Value]) -> Vec<String> {
    notes
        .iter()
        .map(|n| {
            let attributes = &n["MessageAttributes"];
            format!(
                "{}:{}/{} ({})",
                attributes["app"].as_str().unwrap_or("?"),
                attributes["outcome"].as_str().unwrap_or("?"),
                attributes["severity"].as_str().unwrap_or("?"),
                n["Subject"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn with_outcome<'a>(notes: &'a [Value], outcome: &str) -> Vec<&'a Value> {
    notes.iter().filter(|n| n["MessageAttributes"]["outcome"] == outcome).collect()
}

/// The one notification with `outcome` among `notes`.
#[track_caller]
fn one<'a>(notes: &'a [Value], outcome: &str) -> &'a Value {
    let found = with_outcome(notes, outcome);
    assert_eq!(found.len(), 1, "exactly one `{outcome}` notification expected: {:#?}", summary(notes));
    found[0]
}

fn context(note: &Value) -> &Value {
    &note["Message"]["metadata"]["additionalContext"]
}

/// Everything a notification says in words (title, description, reason).
fn text_of(note: &Value) -> String {
    format!(
        "{} {} {}",
        note["Message"]["content"]["title"].as_str().unwrap_or_default(),
        note["Message"]["content"]["description"].as_str().unwrap_or_default(),
        context(note)["reason"].as_str().unwrap_or_default()
    )
}

/// The value of environment variable `name` of container `container`.
fn env_var(definition: &aws_sdk_ecs::types::TaskDefinition, container: &str, name: &str) -> Option<String> {
    definition
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some(container))?
        .environment()
        .iter()
        .find(|e| e.name() == Some(name))
        .and_then(|e| e.value().map(str::to_owned))
}

/// What Terraform (or a person in the console) does: registers a new revision of the family,
/// `from` plus one environment variable of `api`, same image, with its own tags (never Conveyor's),
/// and points the service at it (ECS starts a deployment). Returns the new revision.
async fn change_outside_conveyor(world: &World, service: &ServiceFixture, from: &str, var: (&str, &str)) -> String {
    let (mut definition, tags) = world.task_definition(from).await;
    for container in definition.container_definitions.iter_mut().flatten().filter(|c| c.name() == Some("api")) {
        container
            .environment
            .get_or_insert_with(Vec::new)
            .push(aws_sdk_ecs::types::KeyValuePair::builder().name(var.0).value(var.1).build());
    }
    let tags: Vec<_> = tags.into_iter().filter(|t| !t.key().unwrap_or_default().starts_with("conveyor:")).collect();
    let as_is = ImageSwap { container: "api", image: None, tags: Vec::new() };
    let registered =
        registration(world.ecs.register_task_definition(), &definition, &tags, &as_is).send().await.unwrap();
    let arn = registered.task_definition.unwrap().task_definition_arn.unwrap();
    world
        .ecs
        .update_service()
        .cluster(&service.cluster)
        .service(&service.service)
        .task_definition(&arn)
        .send()
        .await
        .unwrap();
    arn
}

fn is_failed_in_stage(image: &Option<Value>) -> bool {
    image.as_ref().is_some_and(|image| !image["failed_stage"].is_null())
}

// ------------------------------------------------------------------------------------------------
// 1. Same-second duplicate of an older push
// ------------------------------------------------------------------------------------------------

/// Hole: a same-second duplicate of an older push rolled stage back to the older image.
///
/// EventBridge times have one-second resolution, and it delivers at least once. v1 remembered the
/// time and digest of the last push only: A delivered again after B, in the same second as B but
/// with another digest than B, counted as a new push and rolled stage back from B to A.
#[tokio::test]
async fn a_same_second_duplicate_of_an_older_push_is_skipped() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);
    let second = minutes_ago(1);
    let a = world.push_event("shop-api", "v1.0.0", &digest(1), second);
    let b = world.push_event("shop-api", "v1.1.0", &digest(2), second);

    assert_eq!(stage.invoke(a.clone()).await.response()["apps"][0]["status"], "deploying");
    verify(&world, &monitor, &app.stage).await; // A is deployed
                                                // B, pushed in the same second, delivered after A: the later delivery wins.
    let b_report = stage.invoke(b).await.response();
    assert_eq!(b_report["apps"][0]["status"], "deploying", "{b_report}");
    let on_b = arn_of(&b_report["apps"][0]);
    let revisions = world.revisions(&app.stage.family).await;
    let _ = world.notifications().await;

    // A delivered again.
    let again = stage.invoke(a).await.response();

    assert_eq!(again["apps"][0]["status"], "skipped", "{again}");
    assert_eq!(current_task_definition(&world, &app.stage).await, on_b, "stage left B");
    assert!(world.running_image(&app.stage).await.ends_with(&digest(2)));
    assert_eq!(world.revisions(&app.stage.family).await, revisions, "a revision was registered");
    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(
        (record["rollout"]["tag"].as_str(), record["rollout"]["state"]["kind"].as_str()),
        (Some("v1.1.0"), Some("in_progress"))
    );
    let notes = world.notifications().await;
    assert!(notes.is_empty(), "{:#?}", summary(&notes));
}

// ------------------------------------------------------------------------------------------------
// 2. A throttled rollback
// ------------------------------------------------------------------------------------------------

/// A stage rollout that failed (its FAILED event in hand), the rollback's `UpdateService` failing
/// with `mode` until the faults are cleared.
async fn failed_with_rollback_blocked(world: &World, app: &AppFixture, mode: FaultMode) -> (String, Vec<Value>) {
    let stage = stage_deploy(world).await;
    let failing = arn_of(&push_deploying(world, &stage, "v1.0.0", 1, minutes_ago(1)).await);
    let events = world
        .aws
        .settle(&app.stage.cluster, &app.stage.service, Settle::Fail { circuit_breaker_rollback: false })
        .await;
    let _ = world.notifications().await;
    world.aws.fault(&Fault::on("UpdateService").matching(world.id.clone()).mode(mode).persistent()).await;
    (failing, events)
}

/// After a rollback that could not be issued: nothing settled, judged or announced.
async fn assert_nothing_settled(world: &World, app: &AppFixture, failing: &str) {
    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "in_progress", "{record}");
    assert!(!is_failed_in_stage(&world.image_record("shop-api", &digest(1)).await), "the image was judged");
    assert_eq!(current_task_definition(world, &app.stage).await, failing);
    let notes = world.notifications().await;
    assert!(notes.is_empty(), "{:#?}", summary(&notes));
}

/// Once the faults are gone, the FAILED event delivered again rolls back, announced once.
async fn assert_retry_rolls_back(world: &World, app: &AppFixture, monitor: &Function, event: Value) {
    world.aws.clear_faults(&world.id).await;
    let result = monitor_event(monitor, event).await;
    assert_eq!(result["action"], "rolled_back", "{result}");
    assert_eq!(current_task_definition(world, &app.stage).await, app.stage.initial_task_definition);
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    let rollback = context(one(&notes, "rolled_back"))["rollback_task_definition_arn"].clone();
    assert_eq!(rollback, app.stage.initial_task_definition.as_str());
}

/// Hole: a rollback that could not be issued was recorded as final.
///
/// v1 caught the error of the rollback's `UpdateService`, recorded the rollout as failed and
/// alerted: a redelivered FAILED event then found it settled, and the service stayed on the failed
/// revision. A rollback ECS could not take yet (here: ECS answers 503 throughout the SDK's retries)
/// must fail the invocation (Lambda retries it) with nothing recorded or announced; the retry rolls
/// back and announces once.
#[tokio::test]
async fn a_rollback_ecs_cannot_take_yet_is_retried_not_recorded_as_final() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let monitor = deploy_monitor(&world).await;
    let (failing, events) = failed_with_rollback_blocked(&world, &app, FaultMode::Http503).await;

    let (error_type, message) = monitor.invoke(events[0].clone()).await.error();

    assert!(message.contains("UpdateService"), "{error_type}: {message}");
    assert_nothing_settled(&world, &app, &failing).await;
    assert_retry_rolls_back(&world, &app, &monitor, events[0].clone()).await;
}

/// Hole: a throttled rollback was recorded as final (as above, with ECS throttling the rollback's
/// `UpdateService` until it is cleared).
///
/// The invocation must fail while it still can: it is one `UpdateService` among the calls of an
/// invocation that Lambda stops after 60 s (stage-deploy, promote) or 90 s (deploy-monitor), and
/// the three functions share the same AWS clients. A throttled call must not use up the function's
/// time: Lambda would kill it mid-flight rather than let it fail and be retried.
#[tokio::test]
async fn a_throttled_rollback_fails_the_invocation_in_time_and_is_retried() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let monitor = deploy_monitor(&world).await;
    let (failing, events) = failed_with_rollback_blocked(&world, &app, FaultMode::Throttle).await;

    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(45), monitor.invoke(events[0].clone())).await;

    let answer = answer.unwrap_or_else(|_| {
        panic!(
            "the throttled rollback did not fail the invocation within {:?} (Lambda timeouts: 60 s / 90 s)",
            started.elapsed()
        )
    });
    let (error_type, message) = answer.error();
    assert!(message.contains("UpdateService") && message.contains("Throttl"), "{error_type}: {message}");
    assert_nothing_settled(&world, &app, &failing).await;
    assert_retry_rolls_back(&world, &app, &monitor, events[0].clone()).await;
}

// ------------------------------------------------------------------------------------------------
// 3. A service changed outside Conveyor mid-rollout
// ------------------------------------------------------------------------------------------------

/// A stage rollout in progress replaced by Terraform (a new revision with `FEATURE_X`); then ECS
/// ends Conveyor's replaced deployment with `outcome` and its event reaches the monitor.
async fn replaced_rollout_settles(outcome: Settle) {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);
    let report = push_deploying(&world, &stage, "v1.0.0", 1, minutes_ago(5)).await;
    let deployment = report["deployment_id"].as_str().unwrap().to_owned();
    let terraform = change_outside_conveyor(&world, &app.stage, &arn_of(&report), ("FEATURE_X", "on")).await;
    let _ = world.notifications().await;

    let events = world.settle_deployment(&app.stage.cluster, &app.stage.service, &deployment, outcome).await;
    monitor_event(&monitor, events[0].clone()).await;

    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "superseded", "{record}");
    assert_eq!(current_task_definition(&world, &app.stage).await, terraform, "Terraform's change was undone");
    assert!(!is_failed_in_stage(&world.image_record("shop-api", &digest(1)).await), "the image was blamed");
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 2, "{:#?}", summary(&notes));
    assert_eq!(one(&notes, "drift")["MessageAttributes"]["severity"], "info");
    assert_eq!(context(one(&notes, "superseded"))["tag"], "v1.0.0");

    // The sweep finds nothing left to do.
    monitor.invoke(world.schedule_event()).await.response();
    assert_eq!(current_task_definition(&world, &app.stage).await, terraform);
    let notes = world.notifications().await;
    assert!(notes.is_empty(), "{:#?}", summary(&notes));

    // The next push builds on Terraform's revision.
    let next = arn_of(&push_deploying(&world, &stage, "v1.1.0", 2, minutes_ago(1)).await);
    let (definition, _) = world.task_definition(&next).await;
    assert_eq!(env_var(&definition, "api", "FEATURE_X").as_deref(), Some("on"));
    assert!(world.running_image(&app.stage).await.ends_with(&digest(2)));
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    one(&notes, "deploying");
}

/// Hole: a service changed outside Conveyor mid-rollout was "rolled back" and its image blamed.
///
/// v1 took the FAILED event of its replaced deployment at face value: it rolled the service back
/// (undoing Terraform's change), marked the image failed (never promotable) and alerted
/// `rolled_back`. The rollout must end `superseded`, drift be announced once, the service keep
/// Terraform's revision, and the next push build on it.
#[tokio::test]
async fn a_rollout_replaced_outside_conveyor_is_superseded_when_its_failed_event_arrives() {
    replaced_rollout_settles(Settle::Fail { circuit_breaker_rollback: false }).await;
}

/// Hole: as above, when ECS reports Conveyor's replaced deployment COMPLETED. v1 found the service
/// not running the rollout's revision, failed the verification and rolled back Terraform's
/// change. Nothing Conveyor deployed runs: superseded, not failed (and not verified).
#[tokio::test]
async fn a_rollout_replaced_outside_conveyor_is_superseded_when_its_completed_event_arrives() {
    replaced_rollout_settles(Settle::Complete).await;
}

/// Hole: as above, when the replaced deployment's event never comes and the sweep finds it.
///
/// v1's sweep saw its deployment no longer primary and failed the rollout (rollback, image
/// blamed). It must be `superseded` with drift announced once, and the service left alone.
#[tokio::test]
async fn a_rollout_replaced_outside_conveyor_is_superseded_by_the_sweep() {
    superseded_by_the_sweep(World::new().await).await;
}

/// The scenario of [`a_rollout_replaced_outside_conveyor_is_superseded_by_the_sweep`] in `world`
/// (the IAM test runs it too: the sweep's query, a revision changed outside Conveyor).
pub(crate) async fn superseded_by_the_sweep(world: World) {
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);
    let report = push_deploying(&world, &stage, "v1.0.0", 1, minutes_ago(5)).await;
    let terraform = change_outside_conveyor(&world, &app.stage, &arn_of(&report), ("FEATURE_X", "on")).await;
    let _ = world.notifications().await;

    monitor.invoke(world.schedule_event()).await.response();
    monitor.invoke(world.schedule_event()).await.response();

    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "superseded", "{record}");
    assert_eq!(current_task_definition(&world, &app.stage).await, terraform);
    assert!(!is_failed_in_stage(&world.image_record("shop-api", &digest(1)).await), "the image was blamed");
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 2, "{:#?}", summary(&notes));
    assert_eq!(one(&notes, "drift")["MessageAttributes"]["severity"], "info");
    one(&notes, "superseded");
    let next = arn_of(&push_deploying(&world, &stage, "v1.1.0", 2, minutes_ago(1)).await);
    let (definition, _) = world.task_definition(&next).await;
    assert_eq!(env_var(&definition, "api", "FEATURE_X").as_deref(), Some("on"));
}

// ------------------------------------------------------------------------------------------------
// 4. Rollback keeps configuration changed outside Conveyor
// ------------------------------------------------------------------------------------------------

/// Hole (the story): a rollback threw away configuration changed outside Conveyor.
///
/// v1.0.0 was verified on `:2`; Terraform then deployed `:3` = `:2` + `DATABASE_URL` (same image).
/// A failing push built `:4` on `:3`; v1 rolled back to the last verified revision `:2`, so the
/// service lost `DATABASE_URL` and broke for a reason nobody looked for. The rollback must go to
/// `:3` (it runs the verified image), and the drift be announced exactly once.
#[tokio::test]
async fn a_rollback_keeps_configuration_changed_outside_conveyor() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", true, json!({})).await;
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);
    let verified = arn_of(&push_deploying(&world, &stage, "v1.0.0", 1, minutes_ago(10)).await); // :2
    verify(&world, &monitor, &app.stage).await;
    let database = ("DATABASE_URL", "postgres://db.internal:5432/shop");
    let terraform = change_outside_conveyor(&world, &app.stage, &verified, database).await; // :3
    let completed = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    monitor_event(&monitor, completed[0].clone()).await; // Terraform's deployment completed
    let _ = world.notifications().await;

    let failing = arn_of(&push_deploying(&world, &stage, "v1.1.0", 2, minutes_ago(5)).await); // :4
    let (built, _) = world.task_definition(&failing).await;
    assert_eq!(env_var(&built, "api", database.0).as_deref(), Some(database.1), ":4 was not built on :3");
    let failed = world
        .aws
        .settle(&app.stage.cluster, &app.stage.service, Settle::Fail { circuit_breaker_rollback: false })
        .await;
    let result = monitor_event(&monitor, failed[0].clone()).await;

    assert_eq!(result["action"], "rolled_back", "{result}");
    assert_eq!(current_task_definition(&world, &app.stage).await, terraform, "not back on Terraform's revision");
    let (running, _) = world.task_definition(&terraform).await;
    assert_eq!(env_var(&running, "api", database.0).as_deref(), Some(database.1));
    assert!(world.running_image(&app.stage).await.ends_with(&digest(1)));
    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["rollout"]["state"]["to"], terraform.as_str(), "{record}");
    let notes = world.notifications().await;
    assert!(with_outcome(&notes, "drift").is_empty(), "drift announced again: {:#?}", summary(&notes));
    assert_eq!(context(one(&notes, "rolled_back"))["rollback_task_definition_arn"], terraform.as_str());
    let drift = world.history("shop-api").await.into_iter().filter(|h| h["event"] == "drift").count();
    assert_eq!(drift, 1, "drift recorded {drift} times");
}

/// The drift itself is announced once, whoever notices it first (here the monitor, from the
/// completion of Terraform's deployment; the push that follows must not announce it again).
#[tokio::test]
async fn drift_is_announced_once_whoever_notices_it() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);
    let verified = arn_of(&push_deploying(&world, &stage, "v1.0.0", 1, minutes_ago(10)).await);
    verify(&world, &monitor, &app.stage).await;
    let _ = world.notifications().await;
    change_outside_conveyor(&world, &app.stage, &verified, ("DATABASE_URL", "postgres://db")).await;
    let completed = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;

    monitor_event(&monitor, completed[0].clone()).await;
    monitor_event(&monitor, completed[0].clone()).await; // delivered twice
    monitor.invoke(world.schedule_event()).await.response();
    push_deploying(&world, &stage, "v1.1.0", 2, minutes_ago(5)).await;

    let notes = world.notifications().await;
    let drift = one(&notes, "drift");
    assert_eq!(drift["MessageAttributes"]["severity"], "info");
    assert_eq!(notes.len(), 2, "{:#?}", summary(&notes));
    one(&notes, "deploying");
}

// ------------------------------------------------------------------------------------------------
// 5. A late COMPLETED after autoscaling
// ------------------------------------------------------------------------------------------------

/// Hole: a late COMPLETED after autoscaling changed the desired count was rolled back.
///
/// v1 verified by comparing task counts read when the event arrived: autoscaling had raised the
/// desired count since ECS completed the deployment, fewer tasks ran than desired, and v1 rolled a
/// good release back. ECS's COMPLETED already says every task of the deployment ran healthy.
#[tokio::test]
async fn a_late_completion_after_autoscaling_raised_the_desired_count_is_verified() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);
    let rolled = arn_of(&push_deploying(&world, &stage, "v1.0.0", 1, minutes_ago(1)).await);
    let completed = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    // Autoscaling: UpdateService with only a desired count (no new deployment).
    world
        .ecs
        .update_service()
        .cluster(&app.stage.cluster)
        .service(&app.stage.service)
        .desired_count(3)
        .send()
        .await
        .unwrap();
    let scaled = world.service(&app.stage.cluster, &app.stage.service).await;
    assert_eq!(scaled.desired_count(), 3);
    assert!(scaled.deployments()[0].running_count() < scaled.desired_count(), "the counts did not move");
    let _ = world.notifications().await;

    let result = monitor_event(&monitor, completed[0].clone()).await;

    assert_eq!(result["action"], "verified", "{result}");
    assert_eq!(current_task_definition(&world, &app.stage).await, rolled);
    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["last_verified"]["task_definition_arn"], rolled.as_str());
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    one(&notes, "verified");
}

// ------------------------------------------------------------------------------------------------
// 6. A rollback deployment that fails too
// ------------------------------------------------------------------------------------------------

/// Rolls back a failing first rollout; returns the rollback's deployment id.
async fn rolled_back(world: &World, app: &AppFixture, stage: &Function, monitor: &Function) -> String {
    push_deploying(world, stage, "v1.0.0", 1, minutes_ago(1)).await;
    let failed = world
        .aws
        .settle(&app.stage.cluster, &app.stage.service, Settle::Fail { circuit_breaker_rollback: false })
        .await;
    let result = monitor_event(monitor, failed[0].clone()).await;
    assert_eq!(result["action"], "rolled_back", "{result}");
    let record = world.record("shop-api", "stage").await.unwrap();
    let watched =
        record["rollback"]["deployment_id"].as_str().unwrap_or_else(|| panic!("no rollback watched: {record}"));
    let service = world.service(&app.stage.cluster, &app.stage.service).await;
    assert_eq!(service.deployments()[0].id(), Some(watched), "the primary deployment is not the watched rollback");
    watched.to_owned()
}

/// Hole: a rollback deployment that itself failed went unnoticed.
///
/// v1 considered its job done once it had issued the rollback: when the rollback deployment failed
/// too (the known-good revision no longer starts: a secret rotated, a dependency gone), the
/// service was down and nobody was told. Conveyor watches the rollback deployment; its failure is
/// announced once as `failed`, severity `critical`.
#[tokio::test]
async fn a_rollback_deployment_that_fails_too_is_announced_as_critical() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);
    rolled_back(&world, &app, &stage, &monitor).await;
    let _ = world.notifications().await;

    let failed = world
        .aws
        .settle(&app.stage.cluster, &app.stage.service, Settle::Fail { circuit_breaker_rollback: false })
        .await;
    monitor_event(&monitor, failed[0].clone()).await;
    monitor_event(&monitor, failed[0].clone()).await; // delivered twice
    monitor.invoke(world.schedule_event()).await.response();

    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    let alert = one(&notes, "failed");
    assert_eq!(alert["MessageAttributes"]["severity"], "critical");
    assert_eq!(context(alert)["rollback_task_definition_arn"], app.stage.initial_task_definition.as_str());
    assert_eq!(world.record("shop-api", "stage").await.unwrap()["rollback"], Value::Null, "still watched");
}

/// Hole: as above, when the rollback's FAILED event is lost (EventBridge is best effort; services
/// without the circuit breaker emit none): the sweep finds it.
#[tokio::test]
async fn a_rollback_deployment_that_fails_too_is_found_by_the_sweep() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);
    rolled_back(&world, &app, &stage, &monitor).await;
    let _ = world.notifications().await;
    world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Fail { circuit_breaker_rollback: false }).await;

    let swept = monitor.invoke(world.schedule_event()).await.response();
    monitor.invoke(world.schedule_event()).await.response();

    let actions: Vec<&Value> = swept["results"].as_array().unwrap().iter().map(|r| &r["action"]).collect();
    assert_eq!(actions, [&json!("failed")], "{swept}");
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    assert_eq!(one(&notes, "failed")["MessageAttributes"]["severity"], "critical");
}

// ------------------------------------------------------------------------------------------------
// 7. A deregistered rollback target
// ------------------------------------------------------------------------------------------------

/// Hole: a deregistered rollback target made the rollback fail.
///
/// ECS refuses `UpdateService` to an INACTIVE revision. v1 sent it anyway when the last verified
/// revision had been deregistered (a cleanup job, a person), got the refusal, and left the service
/// on the failed revision. Conveyor registers a copy of the target (same image, same containers)
/// and rolls back to that.
#[tokio::test]
async fn a_deregistered_rollback_target_is_registered_again() {
    deregistered_rollback_target(World::new().await).await;
}

/// The scenario of [`a_deregistered_rollback_target_is_registered_again`] in `world` (the IAM test
/// runs it too).
pub(crate) async fn deregistered_rollback_target(world: World) {
    let app = world.seed_app("shop-api", "shop-api", true, json!({})).await;
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);
    let good = arn_of(&push_deploying(&world, &stage, "v1.0.0", 1, minutes_ago(10)).await);
    verify(&world, &monitor, &app.stage).await;
    let failing = arn_of(&push_deploying(&world, &stage, "v1.1.0", 2, minutes_ago(5)).await);
    world.ecs.deregister_task_definition().task_definition(&good).send().await.unwrap();
    let _ = world.notifications().await;

    let failed = world
        .aws
        .settle(&app.stage.cluster, &app.stage.service, Settle::Fail { circuit_breaker_rollback: false })
        .await;
    let result = monitor_event(&monitor, failed[0].clone()).await;

    assert_eq!(result["action"], "rolled_back", "{result}");
    let running = current_task_definition(&world, &app.stage).await;
    assert!(running != good && running != failing, "the service runs {running}");
    let (copy, _) = world.task_definition(&running).await;
    let (original, _) = world.task_definition(&good).await;
    assert_eq!(copy.status(), Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active));
    assert_eq!(copy.family(), original.family());
    let image = |d: &aws_sdk_ecs::types::TaskDefinition| d.container_definitions()[0].image().map(str::to_owned);
    assert_eq!(image(&copy), image(&original), "not the same image");
    let (mut copy, mut original) = (copy, original);
    for definition in [&mut copy, &mut original] {
        definition.status = None;
        definition.deregistered_at = None;
    }
    assert_same_definition(&copy, &original);
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    assert_eq!(context(one(&notes, "rolled_back"))["rollback_task_definition_arn"], running.as_str());

    // The copy is Conveyor's own: its deployment completing is no drift.
    let completed = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    monitor_event(&monitor, completed[0].clone()).await;
    let notes = world.notifications().await;
    assert!(notes.is_empty(), "{:#?}", summary(&notes));
}

// ------------------------------------------------------------------------------------------------
// 8. Two apps claiming one service
// ------------------------------------------------------------------------------------------------

/// Hole: two apps could claim one service.
///
/// v1 deployed every app fed by the repository: two configs naming the same stage service made
/// one push register two revisions and the apps overwrite each other's rollouts and records. The
/// app whose parameter was written later is invalid (announced once per parameter version); the
/// earlier one keeps deploying.
#[tokio::test]
async fn of_two_apps_claiming_one_service_the_later_written_is_invalid_and_announced_once_per_version() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    // Written later (LastModifiedDate), though its name sorts first.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut copy = json!({
        "repository": "shop-api",
        "container": "api",
        "environments": {
            "stage": { "cluster": app.stage.cluster, "service": app.stage.service },
            "prod": { "cluster": world.name("prod-copy"), "service": "api-copy" },
        },
    });
    world.put_app("api-copy", &copy).await;
    let parameter = format!("{}/apps/api-copy", world.prefix);

    let report = stage_deploy(&world)
        .await
        .invoke(world.push_event("shop-api", "v1.0.0", &digest(1), minutes_ago(3)))
        .await
        .response();

    let statuses: Vec<(&str, &str)> = report["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["app"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("shop-api", "deploying")], "{report}");
    assert_eq!(world.revisions(&app.stage.family).await.len(), 2, "one push, one revision");
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 2, "{:#?}", summary(&notes));
    assert_eq!(one(&notes, "deploying")["MessageAttributes"]["app"], "shop-api");
    let alert = one(&notes, "config_error");
    assert_eq!(alert["MessageAttributes"]["severity"], "error");
    let text = text_of(alert);
    assert!(
        text.contains(&parameter) && text.contains("environments.stage.service") && text.contains("shop-api"),
        "{text}"
    );

    // Another push (a cold instance: nothing remembered in memory): nothing new to announce.
    stage_deploy(&world)
        .await
        .invoke(world.push_event("shop-api", "v1.1.0", &digest(2), minutes_ago(2)))
        .await
        .response();
    let notes = world.notifications().await;
    assert!(with_outcome(&notes, "config_error").is_empty(), "{:#?}", summary(&notes));

    // A new version of the parameter, still claiming the service: announced again, once.
    copy["tags"] = json!("^v[0-9.]+$");
    world.put_app("api-copy", &copy).await;
    let stage = stage_deploy(&world).await;
    stage.invoke(world.push_event("shop-api", "v1.2.0", &digest(3), minutes_ago(1))).await.response();
    stage.invoke(world.push_event("shop-api", "v1.3.0", &digest(4), minutes_ago(0))).await.response();
    let notes = world.notifications().await;
    assert!(text_of(one(&notes, "config_error")).contains(&parameter));
    assert_eq!(world.revisions(&app.stage.family).await.len(), 5, "only shop-api deploys");
}

// ------------------------------------------------------------------------------------------------
// 9. A typo in an app's config
// ------------------------------------------------------------------------------------------------

/// Hole: a typo in an app's config silently stopped its deployments.
///
/// v1 logged an invalid config and skipped the app: the push succeeded with nothing deployed and
/// nothing said, and people found out days later. The contract: an invalid config is announced
/// (`config_error`, severity `error`, naming the parameter and the key) once per parameter version;
/// whatever the invocation's result, a push to its repository is never a silent success.
#[tokio::test]
async fn a_typo_in_an_apps_config_is_announced_once() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let typo = json!({
        "repository": "shop-api",
        "contianer": "api",
        "environments": {
            "stage": { "cluster": app.stage.cluster, "service": app.stage.service },
            "prod": { "cluster": app.prod.cluster, "service": app.prod.service },
        },
    });
    world.put_app("shop-api", &typo).await;
    let parameter = format!("{}/apps/shop-api", world.prefix);
    let (stage, monitor) = (stage_deploy(&world).await, deploy_monitor(&world).await);

    // The invocation may succeed (nothing of a valid app failed) or fail: either way, people know.
    let _answer = stage.invoke(world.push_event("shop-api", "v1.0.0", &digest(1), minutes_ago(2))).await;

    assert_eq!(world.revisions(&app.stage.family).await.len(), 1, "an invalid app was deployed");
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    let alert = one(&notes, "config_error");
    assert_eq!(alert["MessageAttributes"]["severity"], "error");
    let text = text_of(alert);
    assert!(text.contains(&parameter) && text.contains("contianer"), "{text}");

    // The next push and the sweep know it was said.
    let _answer = stage.invoke(world.push_event("shop-api", "v1.0.1", &digest(2), minutes_ago(1))).await;
    let _answer =
        stage_deploy(&world).await.invoke(world.push_event("shop-api", "v1.0.2", &digest(3), minutes_ago(0))).await;
    monitor.invoke(world.schedule_event()).await.response();
    let notes = world.notifications().await;
    assert!(notes.is_empty(), "{:#?}", summary(&notes));
}

// ------------------------------------------------------------------------------------------------
// 10. Two promotes in quick succession
// ------------------------------------------------------------------------------------------------

/// Hole: the first of two quick promotions vanished.
///
/// v1 overwrote prod's release record with the second promotion: the first one's rollout never
/// ended (no history line, no notification), its late events were "unknown", and the DORA numbers
/// lost a deployment. It must end `superseded`, in the history and announced once, and the second
/// proceed to verification.
#[tokio::test]
async fn of_two_quick_promotions_the_first_is_superseded_and_the_second_proceeds() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor, promote) =
        (stage_deploy(&world).await, deploy_monitor(&world).await, promote_function(&world).await);
    push_deploying(&world, &stage, "v1.0.0", 1, minutes_ago(10)).await;
    verify(&world, &monitor, &app.stage).await;
    push_deploying(&world, &stage, "v2.0.0", 2, minutes_ago(5)).await;
    verify(&world, &monitor, &app.stage).await;
    let _ = world.notifications().await;

    let first = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    let second = promote.invoke(json!({ "app": "shop-api", "tag": "v2.0.0" })).await.response();

    assert_eq!((first["status"].as_str(), second["status"].as_str()), (Some("deploying"), Some("deploying")));
    let prod = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(prod["rollout"]["tag"], "v2.0.0");
    assert_eq!(prod["rollout"]["state"]["kind"], "in_progress");
    let superseded: Vec<Value> = world
        .history("shop-api")
        .await
        .into_iter()
        .filter(|h| h["environment"] == "prod" && h["event"] == "superseded")
        .collect();
    assert_eq!(superseded.len(), 1, "{superseded:#?}");
    assert_eq!(superseded[0]["tag"], "v1.0.0");
    let notes = world.notifications().await;
    assert_eq!(with_outcome(&notes, "promoted").len(), 2, "{:#?}", summary(&notes));
    let note = one(&notes, "superseded");
    assert_eq!(
        (note["MessageAttributes"]["environment"].as_str(), context(note)["tag"].as_str()),
        (Some("prod"), Some("v1.0.0"))
    );
    let image = world.image_record("shop-api", &digest(1)).await.unwrap();
    assert!(image["failed_prod"].is_null(), "v1.0.0 was blamed: {image}");

    // v2 proceeds.
    verify(&world, &monitor, &app.prod).await;
    assert_eq!(current_task_definition(&world, &app.prod).await, second["task_definition_arn"].as_str().unwrap());
}

// ------------------------------------------------------------------------------------------------
// 11. Task-definition members the SDK does not model
// ------------------------------------------------------------------------------------------------

/// Hole: task-definition members the SDK did not model were silently stripped.
///
/// v1 copied the running revision through the SDK's types: a member newer than its SDK (here
/// `trustedExecutionConfiguration`) was not in the copy, so every push quietly removed it from
/// the service. Conveyor refuses such a push: no revision, the service unchanged, one `failed`
/// notification naming the member (and the same push redelivered says nothing new).
#[tokio::test]
async fn a_push_onto_a_revision_with_unmodeled_members_is_refused_not_stripped() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let trusted = json!({ "isolationMode": "CONFIDENTIAL_SANDBOX", "attestationPolicy": "eyJ2ZXJzaW9uIjoiMSJ9" });
    let raw = json!({
        "family": app.stage.family,
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{
            "name": "api", "image": format!("{}/shop-api:v0.9.0", world.registry()), "memory": 256, "essential": true,
        }],
        "trustedExecutionConfiguration": trusted,
        "tags": [{ "key": "team", "value": "shop" }],
    });
    let registered = world.ecs_json("RegisterTaskDefinition", &raw).await.unwrap();
    let running = registered["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_owned();
    let described = world.ecs_json("DescribeTaskDefinition", &json!({ "taskDefinition": running })).await.unwrap();
    assert_eq!(described["taskDefinition"]["trustedExecutionConfiguration"], trusted, "the local ECS lost the member");
    world
        .ecs
        .update_service()
        .cluster(&app.stage.cluster)
        .service(&app.stage.service)
        .task_definition(&running)
        .send()
        .await
        .unwrap();
    world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    let revisions = world.revisions(&app.stage.family).await;
    let stage = stage_deploy(&world).await;
    let event = world.push_event("shop-api", "v1.0.0", &digest(1), minutes_ago(1));

    let _answer = stage.invoke(event.clone()).await;

    let now_running = current_task_definition(&world, &app.stage).await;
    if now_running != running {
        let new = world.ecs_json("DescribeTaskDefinition", &json!({ "taskDefinition": now_running })).await.unwrap();
        panic!(
            "the push rolled out {now_running}, whose trustedExecutionConfiguration is {} (was {trusted})",
            new["taskDefinition"]["trustedExecutionConfiguration"]
        );
    }
    assert_eq!(world.revisions(&app.stage.family).await, revisions, "a revision was registered");
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    let text = text_of(one(&notes, "failed"));
    assert!(text.contains("trustedExecutionConfiguration"), "{text}");

    // Lambda retries a failed invocation: nothing new.
    let _again = stage.invoke(event).await;
    assert_eq!(world.revisions(&app.stage.family).await, revisions);
    let notes = world.notifications().await;
    assert!(notes.is_empty(), "{:#?}", summary(&notes));
}

// ------------------------------------------------------------------------------------------------
// 12. Pause
// ------------------------------------------------------------------------------------------------

/// Hole: v1 had no way to stop deployments without breaking Conveyor (people deleted the app's
/// parameter or disabled the rule, which also stopped rollbacks and lost the pushes made meanwhile).
///
/// While stage is paused, pushes are recorded (tags, the held push) and nothing is rolled out;
/// while prod is paused, promote refuses with `Paused`; the monitor keeps rolling back a failing
/// rollout; pausing and resuming announce once each; the held push, delivered again after the
/// resume, rolls out.
#[tokio::test]
async fn a_pause_holds_pushes_and_promotions_but_never_a_rollback() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let (stage, monitor, promote) =
        (stage_deploy(&world).await, deploy_monitor(&world).await, promote_function(&world).await);
    let good = arn_of(&push_deploying(&world, &stage, "v1.0.0", 1, minutes_ago(10)).await);
    verify(&world, &monitor, &app.stage).await;
    push_deploying(&world, &stage, "v1.1.0", 2, minutes_ago(8)).await; // in flight when paused
    let _ = world.notifications().await;
    let c = conveyor(&world);
    let config = c.configs.get().await.unwrap();
    let app_config = config.app(&AppName::parse("shop-api").unwrap()).unwrap();

    // Pause stage: announced once.
    conveyor::pause::pause(
        &c.fleet,
        c.leases(),
        app_config,
        Environment::STAGE,
        "release freeze",
        &conveyor::types::Requester::default(),
        &invocation(),
    )
    .await
    .unwrap();
    conveyor::pause::pause(
        &c.fleet,
        c.leases(),
        app_config,
        Environment::STAGE,
        "release freeze",
        &conveyor::types::Requester::default(),
        &invocation(),
    )
    .await
    .unwrap();
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    assert_eq!(one(&notes, "paused")["MessageAttributes"]["severity"], "warning");

    // The monitor still rolls back the failing rollout.
    let failed = world
        .aws
        .settle(&app.stage.cluster, &app.stage.service, Settle::Fail { circuit_breaker_rollback: false })
        .await;
    assert_eq!(monitor_event(&monitor, failed[0].clone()).await["action"], "rolled_back");
    assert_eq!(current_task_definition(&world, &app.stage).await, good);
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    one(&notes, "rolled_back");

    // A push while paused: recorded, held, nothing rolled out, nothing announced.
    let revisions = world.revisions(&app.stage.family).await;
    let held_event = world.push_event("shop-api", "v1.2.0", &digest(3), minutes_ago(5));
    let held = stage.invoke(held_event.clone()).await.response();
    assert_eq!(held["apps"][0]["status"], "paused", "{held}");
    assert_eq!(world.revisions(&app.stage.family).await, revisions);
    assert_eq!(current_task_definition(&world, &app.stage).await, good);
    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(
        (record["held_push"]["tag"].as_str(), record["held_push"]["digest"].as_str()),
        (Some("v1.2.0"), Some(digest(3).as_str())),
        "{record}"
    );
    let image = world.image_record("shop-api", &digest(3)).await.unwrap_or_else(|| panic!("the push was not recorded"));
    assert!(image.to_string().contains("v1.2.0"), "tag not recorded: {image}");
    let notes = world.notifications().await;
    assert!(notes.is_empty(), "{:#?}", summary(&notes));

    // Prod paused: promote refuses, prod unchanged.
    conveyor::pause::pause(
        &c.fleet,
        c.leases(),
        app_config,
        Environment::PROD,
        "incident INC-7",
        &conveyor::types::Requester::default(),
        &invocation(),
    )
    .await
    .unwrap();
    let (error_type, message) = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.error();
    assert_eq!(error_type, "Paused", "{message}");
    assert!(message.contains("incident INC-7"), "{message}");
    assert_eq!(current_task_definition(&world, &app.prod).await, app.prod.initial_task_definition);
    assert_eq!(world.revisions(&app.prod.family).await.len(), 1);
    one(&world.notifications().await, "paused");

    // Resume stage: announced once; the held push, delivered again, rolls out.
    let resumed = conveyor::pause::resume(
        &c.fleet,
        c.leases(),
        app_config,
        Environment::STAGE,
        &conveyor::types::Requester::default(),
        &invocation(),
    )
    .await
    .unwrap();
    conveyor::pause::resume(
        &c.fleet,
        c.leases(),
        app_config,
        Environment::STAGE,
        &conveyor::types::Requester::default(),
        &invocation(),
    )
    .await
    .unwrap();
    assert_eq!(resumed.held_push.as_ref().map(|p| p.tag.to_string()).as_deref(), Some("v1.2.0"));
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "{:#?}", summary(&notes));
    assert_eq!(one(&notes, "resumed")["MessageAttributes"]["severity"], "info");
    let rolled = stage.invoke(held_event).await.response();
    assert_eq!(rolled["apps"][0]["status"], "deploying", "{rolled}");
    assert!(world.running_image(&app.stage).await.ends_with(&digest(3)));
    one(&world.notifications().await, "deploying");
}
