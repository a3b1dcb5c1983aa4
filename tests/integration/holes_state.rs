//! The holes of Conveyor v1's state, closed by v2's state table: one scenario per hole, through
//! the real function binaries wherever the hole is about what a function does (the library only
//! arranges the scene, and races leases directly where the hole is the lease itself).
//!
//! v1 kept everything it knew in SSM: a release record per app and environment, a parameter per
//! image and per tag, and a lease parameter created and deleted around every invocation
//! (`{prefix}/releases/...`). Each test's doc comment says what v1 did wrong there, so a reader
//! sees the test would fail on it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::TaskDefinitionStatus;
use chrono::{DateTime, Utc};
use conveyor::ledger::{Change, ItemKey, Lease, LeasedState, Ledger, LedgerError};
use conveyor::vocabulary::{Action, PromoteStatus};
use conveyor_testkit::functions::{self, promote as promote_function, stage_deploy};
use conveyor_testkit::local_aws::{Fault, FaultMode, Settle};
use conveyor_testkit::world::{digest, AppFixture, ServiceFixture};
use conveyor_testkit::{Function, LocalHttp, World};
use serde_json::{json, Value};

use crate::support::{conveyor, invocation};

// ------------------------------------------------------------------------------------------------
// The scene: functions, pushes, settlements, notifications.
// ------------------------------------------------------------------------------------------------

/// deploy-monitor, with a dead health endpoint failing a verification in 5 s.
async fn deploy_monitor(world: &World) -> Function {
    functions::deploy_monitor(world, Duration::from_secs(5)).await
}

/// A push time `seconds` after `base`.
fn at(base: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    base + chrono::Duration::seconds(seconds)
}

/// An hour ago, to the second (EventBridge times have one-second resolution).
fn an_hour_ago() -> DateTime<Utc> {
    let now = Utc::now() - chrono::Duration::hours(1);
    DateTime::from_timestamp(now.timestamp(), 0).unwrap()
}

/// Setup through the library: `tag` (the image `digest(n)`) pushed to `app`'s repository at `time`.
async fn push(world: &World, app: &AppFixture, tag: &str, n: u32, time: DateTime<Utc>) -> conveyor::stage::StageReport {
    let event = world.push_event(&app.repository, tag, &digest(n), time);
    conveyor(world).stage(event, &invocation()).await.unwrap()
}

/// Completes or fails the service's primary deployment: the events ECS would send.
async fn settle(world: &World, service: &ServiceFixture, outcome: Settle) -> Vec<Value> {
    world.aws.settle(&service.cluster, &service.service, outcome).await
}

/// Setup through the library: the monitor handles `event`; returns its action.
async fn monitor_handles(world: &World, event: Value) -> &'static str {
    let report = conveyor(world).monitor(event, &invocation()).await.unwrap();
    report.results[0].action.as_str()
}

/// Setup through the library: `tag` pushed at `time`, rolled out to stage and verified there.
async fn vet(world: &World, app: &AppFixture, tag: &str, n: u32, time: DateTime<Utc>) {
    let report = push(world, app, tag, n, time).await;
    assert_eq!(report.apps[0].status, Action::Deploying, "{report:?}");
    let events = settle(world, &app.stage, Settle::Complete).await;
    assert_eq!(monitor_handles(world, events[0].clone()).await, "verified");
}

/// Setup through the library: a promotion that must start a prod rollout.
async fn promote_lib(world: &World, tag: &str) {
    let request = json!({ "app": "shop-api", "tag": tag });
    let answer = conveyor(world).promote(request, &invocation()).await.unwrap();
    assert_eq!(answer.status, PromoteStatus::Deploying, "{answer:?}");
}

/// An app (fed by the repository of its name) whose stage service is checked at `health_url`.
async fn seed_with_health(world: &World, app: &str, health_url: &str) -> AppFixture {
    let environments = json!({
        "stage": { "cluster": world.name("stage"), "service": app, "health_url": health_url },
        "prod": { "cluster": world.name("prod"), "service": app },
    });
    world.seed_app(app, app, false, json!({ "environments": environments })).await
}

/// The notifications with this outcome.
fn with_outcome<'a>(notes: &'a [Value], outcome: &str) -> Vec<&'a Value> {
    notes.iter().filter(|n| n["MessageAttributes"]["outcome"] == outcome).collect()
}

fn context(note: &Value) -> &Value {
    &note["Message"]["metadata"]["additionalContext"]
}

/// `app env outcome` of every notification, for failure messages.
fn summary(notes: &[Value]) -> Vec<String> {
    notes
        .iter()
        .map(|n| {
            let a = &n["MessageAttributes"];
            let field = |name: &str| a[name].as_str().unwrap_or("?").to_owned();
            format!("{} {} {}", field("app"), field("environment"), field("outcome"))
        })
        .collect()
}

/// How many more calls of `operation` `after` counted than `before`.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, operation: &str) -> u64 {
    after.get(operation).copied().unwrap_or(0) - before.get(operation).copied().unwrap_or(0)
}

/// The result of a monitor report about `app`.
fn result_for<'a>(report: &'a Value, app: &str) -> &'a Value {
    let results = report["results"].as_array().unwrap();
    results.iter().find(|r| r["app"] == app).unwrap_or_else(|| panic!("no result for {app}: {report}"))
}

/// The strings of a string-set attribute (read as an array).
fn strings(value: &Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// A number attribute of an item, however serde_dynamo rendered it.
fn number(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_f64().map(|f| f as i64)).or_else(|| value.as_str()?.parse().ok())
}

/// Every SSM parameter under the world's prefix.
async fn parameter_names(world: &World) -> Vec<String> {
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = world
            .ssm
            .get_parameters_by_path()
            .path(&world.prefix)
            .recursive(true)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        names.extend(page.parameters().iter().filter_map(|p| p.name().map(str::to_owned)));
        token = page.next_token;
        if token.is_none() {
            names.sort();
            return names;
        }
    }
}

/// The size of an environment's item, as JSON.
async fn env_item_size(world: &World, app: &str, env: &str) -> usize {
    let item = world.item(&format!("APP#{app}"), &format!("ENV#{env}")).await.unwrap();
    item.to_string().len()
}

// ------------------------------------------------------------------------------------------------
// Hole 1
// ------------------------------------------------------------------------------------------------

/// Hole 1: state never grows in SSM, and every Conveyor item is bounded.
///
/// v1 wrote its state as SSM parameters: a release record per environment, one more parameter per
/// image and per tag, and a lease parameter created and deleted around every invocation. Every push
/// added parameters that never expired, so a busy app ran into SSM's parameter count and
/// `PutParameter` throughput limits. v2 writes nothing to SSM: one item per environment, whose size
/// does not grow with the number of pushes, and image, tag and history items that expire (TTL).
#[tokio::test]
async fn thirty_verified_pushes_write_nothing_to_ssm_and_leave_only_bounded_items() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let stage = stage_deploy(&world).await;
    let monitor = deploy_monitor(&world).await;
    let promote = promote_function(&world).await;
    let base = an_hour_ago();
    let before = world.aws.calls(&world.id).await;

    let mut size_after_five = 0;
    for n in 1..=30u32 {
        let event = world.push_event("shop-api", &format!("v1.0.{n}"), &digest(n), at(base, i64::from(n) * 10));
        let report = stage.invoke(event).await.response();
        assert_eq!(report["apps"][0]["status"], "deploying", "push {n}: {report}");
        let events = settle(&world, &app.stage, Settle::Complete).await;
        let handled = monitor.invoke(events[0].clone()).await.response();
        assert_eq!(handled["results"][0]["action"], "verified", "push {n}: {handled}");
        if n == 5 {
            size_after_five = env_item_size(&world, "shop-api", "stage").await;
        }
    }
    // Prod too, so that both environments have their item.
    let promoted = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.30" })).await.response();
    assert_eq!(promoted["status"], "deploying", "{promoted}");
    let events = settle(&world, &app.prod, Settle::Complete).await;
    assert_eq!(monitor.invoke(events[0].clone()).await.response()["results"][0]["action"], "verified");
    let after = world.aws.calls(&world.id).await;

    // SSM holds the app's config and nothing else; the functions wrote nothing there.
    assert_eq!(parameter_names(&world).await, [format!("{}/apps/shop-api", world.prefix)]);
    for write in ["PutParameter", "DeleteParameter"] {
        assert_eq!(delta(&before, &after, write), 0, "{write} by the functions: {after:?}");
    }

    // The table: one item per environment, images, tags and history that expire, no lease left.
    let items = world.items().await;
    let now = Utc::now().timestamp();
    let retention = chrono::Duration::days(conveyor::ledger::DEFAULT_RETENTION_DAYS + 1).num_seconds();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut environments = Vec::new();
    for item in &items {
        let sk = item["sk"].as_str().unwrap();
        assert_eq!(item["pk"], "APP#shop-api", "an item outside the app: {item}");
        assert!(item.get("lease").is_none(), "a lease was left behind: {item}");
        assert!(item.get("outbox").is_none(), "a notification was left undelivered: {item}");
        let kind = sk.split('#').next().unwrap().to_owned();
        *kinds.entry(kind.clone()).or_default() += 1;
        if kind == "ENV" {
            environments.push(sk.to_owned());
            continue;
        }
        assert!(["IMAGE", "TAG", "HIST"].contains(&kind.as_str()), "an unexpected item: {item}");
        let expires = item.get("expires_at").and_then(number).unwrap_or_else(|| panic!("no TTL on {item}"));
        assert!(expires > now && expires <= now + retention, "expires_at {expires} out of range on {item}");
    }
    environments.sort();
    assert_eq!(environments, ["ENV#prod", "ENV#stage"]);
    assert_eq!(kinds.get("IMAGE"), Some(&30), "{kinds:?}");
    assert_eq!(kinds.get("TAG"), Some(&30), "{kinds:?}");
    assert!(kinds.get("HIST").is_some_and(|n| *n >= 62), "{kinds:?}");

    // The environment's item does not grow with the pushes it has seen.
    let size_after_thirty = env_item_size(&world, "shop-api", "stage").await;
    assert!(
        size_after_thirty <= size_after_five + 64,
        "stage's item grew from {size_after_five} to {size_after_thirty} bytes over 25 pushes"
    );
}

// ------------------------------------------------------------------------------------------------
// Hole 2
// ------------------------------------------------------------------------------------------------

/// Hole 2: settling is atomic.
///
/// v1 settled a failed rollout in separate SSM writes after rolling back: the image parameter
/// marked failed, then the release record saved, then the alert published. A failure part-way left
/// it half-settled: the image unmarked (still promotable) while the alert had gone out, or the
/// record unsaved so that the retried event rolled back and alerted a second time. v2 commits the
/// settled state, the image's failure, the history and the notification in one transaction: when
/// that fails the invocation fails having recorded nothing, and Lambda's redelivery settles it
/// once.
#[tokio::test]
async fn a_prod_rollback_whose_commit_fails_is_settled_whole_and_once_on_redelivery() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let base = an_hour_ago();
    vet(&world, &app, "v1.0.0", 1, base).await;
    vet(&world, &app, "v1.1.0", 2, at(base, 60)).await;
    promote_lib(&world, "v1.0.0").await;
    let events = settle(&world, &app.prod, Settle::Complete).await;
    assert_eq!(monitor_handles(&world, events[0].clone()).await, "verified");
    let good = world.service(&app.prod.cluster, &app.prod.service).await.task_definition().unwrap().to_owned();
    promote_lib(&world, "v1.1.0").await;
    let monitor = deploy_monitor(&world).await;
    let failed = settle(&world, &app.prod, Settle::Fail { circuit_breaker_rollback: false }).await;
    let _ = world.notifications().await;
    let before = world.aws.calls(&world.id).await;
    let log_start = world.aws.call_log(&world.id).await.last().map_or(0, |c| c.seq);

    // The commit fails past every retry of the SDK.
    let fault = Fault::on("TransactWriteItems").matching(world.table.clone()).mode(FaultMode::Http500).persistent();
    world.aws.fault(&fault).await;
    let (error_type, message) = monitor.invoke(failed[0].clone()).await.error();
    world.aws.clear_faults(&world.table).await;
    assert!(message.contains("TransactWriteItems"), "{error_type}: {message}");
    let commits: Vec<_> = world
        .aws
        .call_log(&world.id)
        .await
        .into_iter()
        .filter(|c| c.seq > log_start && c.operation == "TransactWriteItems")
        .collect();
    assert!(commits.len() >= 2 && commits.iter().all(|c| c.fault.as_deref() == Some("http500")), "{commits:?}");

    // Nothing of the settlement was recorded or announced.
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "in_progress", "{record}");
    let image = world.image_record("shop-api", &digest(2)).await.unwrap();
    assert!(image.get("failed_prod").is_none(), "{image}");
    let mut notes = world.notifications().await;
    assert!(with_outcome(&notes, "rolled_back").is_empty(), "{:?}", summary(&notes));

    // Lambda delivers the same event again.
    let report = monitor.invoke(failed[0].clone()).await.response();
    assert_eq!(report["results"][0]["action"], "rolled_back", "{report}");
    notes.extend(world.notifications().await);
    let after = world.aws.calls(&world.id).await;

    let image = world.image_record("shop-api", &digest(2)).await.unwrap();
    assert!(image["failed_prod"]["reason"].is_string(), "{image}");
    let rolled_back = with_outcome(&notes, "rolled_back");
    assert_eq!(rolled_back.len(), 1, "{:?}", summary(&notes));
    assert_eq!(rolled_back[0]["MessageAttributes"]["severity"], "critical");
    assert_eq!(context(rolled_back[0])["digest"], digest(2).as_str());

    // The service runs the rollback target, an ACTIVE revision, rolled back to once.
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(record["rollout"]["state"]["kind"], "rolled_back", "{record}");
    let target = record["rollout"]["state"]["to"].as_str().unwrap();
    assert_eq!(target, good);
    let service = world.service(&app.prod.cluster, &app.prod.service).await;
    assert_eq!(service.task_definition(), Some(target));
    let (definition, _) = world.task_definition(target).await;
    assert_eq!(definition.status(), Some(&TaskDefinitionStatus::Active));
    assert_eq!(delta(&before, &after, "UpdateService"), 1, "one rollback over both deliveries: {after:?}");
    assert!(world.item("APP#shop-api", "ENV#prod").await.unwrap().get("lease").is_none());

    // The digest that failed in prod is refused.
    let promote = promote_function(&world).await;
    let (error_type, message) = promote.invoke(json!({ "app": "shop-api", "tag": "v1.1.0" })).await.error();
    assert_eq!(error_type, "NotVetted", "{message}");
    assert!(message.contains("failed in prod"), "{message}");
}

// ------------------------------------------------------------------------------------------------
// Hole 3
// ------------------------------------------------------------------------------------------------

/// Hole 3: an image pushed under two tags.
///
/// ECR sends one PUSH event per tag. v1 recognised a repeated delivery by event time and digest
/// alone, so the second tag's event (same digest, same second) passed for a duplicate of the
/// first and was dropped: its tag was never recorded, and promoting it was refused as never
/// vetted. v2 rolls the image out once and records every tag, so any of them can be promoted,
/// including a tag pushed after stage verified the image.
#[tokio::test]
async fn an_image_pushed_under_two_tags_rolls_out_once_and_every_tag_is_promotable() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let stage = stage_deploy(&world).await;
    let monitor = deploy_monitor(&world).await;
    let promote = promote_function(&world).await;
    let image = digest(7);
    let pushed_at = an_hour_ago();

    let first = stage.invoke(world.push_event("shop-api", "0a1b2c3", &image, pushed_at)).await.response();
    let second = stage.invoke(world.push_event("shop-api", "v1.0.0", &image, pushed_at)).await.response();
    assert_eq!(first["apps"][0]["status"], "deploying", "{first}");
    assert_eq!(second["apps"][0]["status"], "skipped", "{second}");

    // One rollout, both tags on record.
    assert_eq!(world.revisions(&app.stage.family).await.len(), 2);
    let notes = world.notifications().await;
    assert_eq!(with_outcome(&notes, "deploying").len(), 1, "{:?}", summary(&notes));
    let facts = world.image_record("shop-api", &image).await.unwrap();
    let mut tags = strings(&facts["tags"]);
    tags.sort();
    assert_eq!(tags, ["0a1b2c3", "v1.0.0"], "the second tag was not recorded: {facts}");

    let events = settle(&world, &app.stage, Settle::Complete).await;
    assert_eq!(monitor.invoke(events[0].clone()).await.response()["results"][0]["action"], "verified");
    for tag in ["0a1b2c3", "v1.0.0"] {
        let item = world.tag_record("shop-api", tag).await.unwrap_or_else(|| panic!("{tag} is not promotable"));
        assert_eq!(item["digest"], image.as_str());
    }

    let by_version = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    assert_eq!(
        (by_version["status"].as_str(), by_version["digest"].as_str()),
        (Some("deploying"), Some(image.as_str()))
    );
    let by_commit = promote.invoke(json!({ "app": "shop-api", "tag": "0a1b2c3" })).await.response();
    assert_eq!(
        (by_commit["status"].as_str(), by_commit["digest"].as_str()),
        (Some("already_deployed"), Some(image.as_str()))
    );

    // A third tag pushed after the verification is promotable at once.
    let third = stage.invoke(world.push_event("shop-api", "v1.0", &image, at(pushed_at, 300))).await.response();
    assert_eq!(third["apps"][0]["status"], "skipped", "{third}");
    assert_eq!(world.revisions(&app.stage.family).await.len(), 2, "a second rollout of the same image");
    let item = world.tag_record("shop-api", "v1.0").await.expect("v1.0 is not promotable");
    assert_eq!(item["digest"], image.as_str());
    let by_minor = promote.invoke(json!({ "app": "shop-api", "tag": "v1.0" })).await.response();
    assert_eq!(
        (by_minor["status"].as_str(), by_minor["digest"].as_str()),
        (Some("already_deployed"), Some(image.as_str()))
    );
    assert_eq!(world.revisions(&app.prod.family).await.len(), 2);
}

// ------------------------------------------------------------------------------------------------
// Hole 4
// ------------------------------------------------------------------------------------------------

/// Hole 4: a digest that failed in prod stays unpromotable.
///
/// v1 judged a promotion by the tag's record: a digest that failed in prod and was pushed again
/// under a new tag, then verified by stage again, looked vetted and never failed under that tag,
/// and went to prod again. v2 keeps the verdicts on the image (by digest): a later stage
/// verification does not clear a failure; only `force` overrides it, and the response, the
/// `promoted` notification and the history say it was forced, by whom and why.
#[tokio::test]
async fn a_digest_that_failed_in_prod_stays_refused_under_a_new_tag_unless_forced() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let base = an_hour_ago();
    let failing = digest(11);

    // D vetted in stage as v1.1.0, promoted, failed in prod.
    vet(&world, &app, "v1.1.0", 11, base).await;
    promote_lib(&world, "v1.1.0").await;
    let failed = settle(&world, &app.prod, Settle::Fail { circuit_breaker_rollback: false }).await;
    assert_eq!(monitor_handles(&world, failed[0].clone()).await, "rolled_back");
    let prod_before = world.service(&app.prod.cluster, &app.prod.service).await.task_definition().unwrap().to_owned();

    // Stage moves on, then D is pushed again as v1.1.1 and stage verifies it again.
    vet(&world, &app, "v1.2.0", 12, at(base, 60)).await;
    let first_vetted = world.image_record("shop-api", &failing).await.unwrap()["vetted_stage"].clone();
    vet(&world, &app, "v1.1.1", 11, at(base, 120)).await;
    let facts = world.image_record("shop-api", &failing).await.unwrap();
    assert_ne!(facts["vetted_stage"], first_vetted, "stage did not verify it again: {facts}");
    assert!(facts["failed_prod"]["reason"].is_string(), "{facts}");
    assert_eq!(world.tag_record("shop-api", "v1.1.1").await.unwrap()["digest"], failing.as_str());

    let promote = promote_function(&world).await;
    let _ = world.notifications().await;
    let (error_type, message) = promote.invoke(json!({ "app": "shop-api", "tag": "v1.1.1" })).await.error();
    assert_eq!(error_type, "NotVetted", "{message}");
    assert!(message.contains("failed in prod"), "{message}");
    let prod = world.service(&app.prod.cluster, &app.prod.service).await;
    assert_eq!(prod.task_definition(), Some(prod_before.as_str()), "a refused promotion changed prod");

    // Forced: deployed, and said so everywhere.
    let request = json!({ "app": "shop-api", "tag": "v1.1.1", "force": true,
                          "reason": "hotfix for INC-7, the failure was the database", "requested_by": "ana@example.com" });
    let answer = promote.invoke(request).await.response();
    assert_eq!(answer["status"], "deploying", "{answer}");
    assert_eq!(answer["forced"], true, "{answer}");
    assert_eq!(answer["digest"], failing.as_str());
    // A name in the request is who it was on behalf of, never who asked (no identity was verified).
    assert_eq!(
        (answer.get("requested_by"), answer["on_behalf_of"].as_str()),
        (None, Some("ana@example.com")),
        "{answer}"
    );
    let prod = world.service(&app.prod.cluster, &app.prod.service).await;
    assert_eq!(prod.task_definition(), answer["task_definition_arn"].as_str());
    assert!(world.running_image(&app.prod).await.ends_with(&failing));

    let notes = world.notifications().await;
    let promoted = with_outcome(&notes, "promoted");
    assert_eq!(promoted.len(), 1, "{:?}", summary(&notes));
    let note = promoted[0];
    assert_eq!(context(note)["forced"], "true", "{note}");
    assert_eq!(context(note)["on_behalf_of"], "ana@example.com", "{note}");
    assert!(context(note).get("requested_by").is_none(), "{note}");
    let description = note["Message"]["content"]["description"].as_str().unwrap();
    assert!(description.contains("Forced"), "{description}");
    assert!(description.contains("ana@example.com"), "{description}");

    let history = world.history("shop-api").await;
    let entry = history
        .iter()
        .rev()
        .find(|e| e["event"] == "promoted" && e["tag"] == "v1.1.1")
        .unwrap_or_else(|| panic!("no history entry for the forced promotion: {history:#?}"));
    assert_eq!(entry["forced"], true, "{entry}");
    assert_eq!((entry.get("requested_by"), entry["on_behalf_of"].as_str()), (None, Some("ana@example.com")), "{entry}");
    assert_eq!(entry["reason"], "hotfix for INC-7, the failure was the database", "{entry}");
}

// ------------------------------------------------------------------------------------------------
// Hole 5
// ------------------------------------------------------------------------------------------------

/// Hole 5: a lost UpdateService response is not a rejection.
///
/// v1 took any error answer to `UpdateService` (a 500 included) for a refusal: it deregistered the
/// new revision and failed, although ECS had applied the call and the service ran that very
/// revision, now INACTIVE (a later scale-out or rollback to it fails). Lambda's retry then found
/// stage on the image and skipped it, so the rollout was never recorded nor verified. v2 keeps the
/// revision and, on the retry, records the rollout ECS did start: one revision, one `deploying`.
#[tokio::test]
async fn a_lost_update_service_answer_keeps_the_revision_and_the_retry_records_the_rollout() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let stage = stage_deploy(&world).await;
    let event = world.push_event("shop-api", "v1.0.0", &digest(21), an_hour_ago());
    let before = world.aws.calls(&world.id).await;

    // Applied, the answer lost, on every attempt the SDK makes.
    let lost = Fault::on("UpdateService").matching(world.id.clone()).mode(FaultMode::ApplyThenFail).count(6);
    world.aws.fault(&lost).await;
    let (error_type, message) = stage.invoke(event.clone()).await.error();
    world.aws.clear_faults(&world.id).await;
    assert!(message.contains("UpdateService"), "{error_type}: {message}");

    let revisions = world.revisions(&app.stage.family).await;
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    let ours = revisions.last().unwrap().clone();
    let (definition, _) = world.task_definition(&ours).await;
    assert_eq!(
        definition.status(),
        Some(&TaskDefinitionStatus::Active),
        "the revision the service runs was deregistered"
    );
    let service = world.service(&app.stage.cluster, &app.stage.service).await;
    assert_eq!(service.task_definition(), Some(ours.as_str()));

    // Lambda retries the same event.
    let report = stage.invoke(event).await.response();
    assert_eq!(report["apps"][0]["status"], "deploying", "{report}");
    assert_eq!(report["apps"][0]["task_definition_arn"], ours.as_str(), "{report}");
    assert_eq!(world.revisions(&app.stage.family).await, revisions, "a second revision was registered");
    let after = world.aws.calls(&world.id).await;
    assert_eq!(delta(&before, &after, "RegisterTaskDefinition"), 1, "{after:?}");
    let record = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(record["rollout"]["task_definition_arn"], ours.as_str(), "{record}");
    assert_eq!(record["rollout"]["state"]["kind"], "in_progress", "{record}");
    let notes = world.notifications().await;
    assert_eq!(with_outcome(&notes, "deploying").len(), 1, "{:?}", summary(&notes));
    assert_eq!(notes.len(), 1, "{:?}", summary(&notes));

    // A single lost answer is absorbed by the SDK's retry: one revision, one notification.
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let stage = stage_deploy(&world).await;
    let once = Fault::on("UpdateService").matching(world.id.clone()).mode(FaultMode::ApplyThenFail).count(1);
    world.aws.fault(&once).await;
    let report = stage.invoke(world.push_event("shop-api", "v1.0.0", &digest(22), an_hour_ago())).await.response();
    assert_eq!(report["apps"][0]["status"], "deploying", "{report}");
    let faulted: Vec<_> =
        world.aws.call_log(&world.id).await.into_iter().filter(|c| c.operation == "UpdateService").collect();
    assert_eq!(faulted.iter().map(|c| c.fault.as_deref()).collect::<Vec<_>>(), [Some("apply_then_fail"), None]);
    let revisions = world.revisions(&app.stage.family).await;
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    assert_eq!(report["apps"][0]["task_definition_arn"], revisions[1].as_str());
    let notes = world.notifications().await;
    assert_eq!(summary(&notes), ["shop-api stage deploying"]);
}

// ------------------------------------------------------------------------------------------------
// Hole 6
// ------------------------------------------------------------------------------------------------

/// Hole 6: leases are fenced.
///
/// v1's lease was an SSM parameter created if absent: (a) an expired one was taken over by
/// deleting and re-creating it, so two invocations racing for it could both delete and both
/// create, and both believe they held it; (b) a create applied whose answer was lost came back on
/// the SDK's retry as "already exists", so the invocation waited on its own lease and gave up (or
/// waited for it to expire); (c) a holder that outlived its lease kept writing unconditionally,
/// and its release deleted whichever lease was there, its successor's. v2's lease is one
/// conditional write carrying a token: exactly one invocation takes an expired lease, a retried
/// write recognises its own token, and every commit and release is conditional on the token.
/// A state the lease test writes.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Written {
    written_by: String,
}

impl LeasedState for Written {
    fn in_flight(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn leases_are_taken_by_one_recognised_by_their_holder_and_useless_once_lost() {
    let world = World::new().await;
    let ledger = Ledger::new(world.dynamodb.clone(), world.table.clone());
    let soon = || Utc::now() + chrono::Duration::seconds(60);
    let lease = |key: &ItemKey, owner: &str, until| Lease::until(key.clone(), owner, until);

    // (a) An expired lease (its holder crashed), taken over by 8 invocations at once: one gets it.
    // (DynamoDB applies conditional writes to an item one at a time. moto checks a condition and
    // applies the update without a lock, so on a loaded machine it very rarely lets two racers
    // through, about once in fifty runs: a failure here naming two winners is worth a rerun
    // before it is taken for a fencing bug.)
    let key = ItemKey { pk: "APP#race".into(), sk: "ENV#stage".into() };
    let crashed = ledger.acquire::<Written>(lease(&key, "crashed", Utc::now() - chrono::Duration::seconds(1))).await;
    let _crashed = crashed.unwrap(); // never released: it expired
    let racers = (0..8).map(|n| {
        let (ledger, lease) = (ledger.clone(), lease(&key, &format!("invocation {n}"), soon()));
        async move { ledger.acquire::<Written>(lease).await }
    });
    let results = futures_util::future::join_all(racers).await;
    let outcomes: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(held) => format!("took it (token {})", held.token()),
            Err(error) => error.to_string(),
        })
        .collect();
    let busy = results.iter().filter(|r| matches!(r, Err(LedgerError::Busy { .. }))).count();
    let mut winners: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    assert_eq!(
        (winners.len(), busy),
        (1, 7),
        "exactly one takes the expired lease, the others find it busy: {outcomes:#?}"
    );
    let winner = winners.pop().unwrap();
    assert!(winner.took_over);
    let item = world.item(&key.pk, &key.sk).await.unwrap();
    assert_eq!(item["lease"]["token"], winner.token(), "{item}");
    winner.release(&ledger, &[]).await;

    // (c) A holder whose lease expired and was taken over can neither commit nor release.
    let key = ItemKey { pk: "APP#fenced".into(), sk: "ENV#prod".into() };
    let mut late =
        ledger.acquire::<Written>(lease(&key, "late", Utc::now() + chrono::Duration::milliseconds(300))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut successor = ledger.acquire::<Written>(lease(&key, "successor", soon())).await.unwrap();
    assert!(successor.took_over);
    let lost = late.commit(&ledger, Change::new(Written { written_by: "late".into() })).await;
    assert!(matches!(lost, Err(LedgerError::LeaseLost { .. })), "{:?}", lost.err());
    late.release(&ledger, &[]).await;
    let item = world.item(&key.pk, &key.sk).await.unwrap();
    assert_eq!(item["lease"]["token"], successor.token(), "the late holder released its successor's lease: {item}");
    assert!(item.get("state").is_none(), "the late holder wrote: {item}");
    successor.commit(&ledger, Change::new(Written { written_by: "successor".into() })).await.unwrap();
    successor.release(&ledger, &[]).await;
    let item = world.item(&key.pk, &key.sk).await.unwrap();
    assert_eq!(item["state"], json!({ "written_by": "successor" }));
    assert!(item.get("lease").is_none(), "{item}");

    // (b) The lease-taking write of a push applied, its answer lost: the SDK's retry recognises
    // the lease as its own and the push deploys at once.
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let stage = stage_deploy(&world).await;
    let base = an_hour_ago();
    let first = stage.invoke(world.push_event("shop-api", "v1.0.0", &digest(31), base)).await.response();
    assert_eq!(first["apps"][0]["status"], "deploying", "{first}");
    let log_start = world.aws.call_log(&world.id).await.last().map_or(0, |c| c.seq);
    let lost = Fault::on("UpdateItem").matching(world.id.clone()).mode(FaultMode::ApplyThenFail).count(1);
    world.aws.fault(&lost).await;
    let started = Instant::now();
    let report = stage.invoke(world.push_event("shop-api", "v1.1.0", &digest(32), at(base, 60))).await.response();
    let took = started.elapsed();
    world.aws.clear_faults(&world.id).await;
    assert_eq!(report["apps"][0]["status"], "deploying", "{report}");
    assert!(world.running_image(&app.stage).await.ends_with(&digest(32)));

    let calls: Vec<_> = world.aws.call_log(&world.id).await.into_iter().filter(|c| c.seq > log_start).collect();
    let register = calls.iter().position(|c| c.operation == "RegisterTaskDefinition").expect("nothing registered");
    let lease_writes: Vec<_> =
        calls[..register].iter().filter(|c| c.operation == "UpdateItem").map(|c| c.fault.as_deref()).collect();
    assert_eq!(lease_writes, [Some("apply_then_fail"), None], "the lease was waited for: {calls:?} ({took:?})");
    assert_eq!(calls.iter().filter(|c| c.operation == "UpdateItem").count(), 3, "{calls:?}");
    let item = world.item("APP#shop-api", "ENV#stage").await.unwrap();
    assert!(item.get("lease").is_none() && item.get("waiting").is_none(), "{item}");
}

// ------------------------------------------------------------------------------------------------
// Hole 7
// ------------------------------------------------------------------------------------------------

/// Hole 7: one image item, two environments, no lost update.
///
/// v1 kept an image's facts in one SSM parameter that stage and prod each read, changed and wrote
/// back, each under its own environment's lease: when stage verified a digest while prod failed
/// it, the later write erased the earlier one, so prod's failure could vanish (the digest became
/// promotable again) or stage's verification and new tag could. v2 changes the image item only
/// with updates that commute (add a tag, set one environment's verdict).
#[tokio::test]
async fn stage_verifying_and_prod_failing_one_image_at_once_both_stick() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let base = an_hour_ago();
    let image = digest(41);

    // D vetted in stage, promoted to prod (in flight); stage moves on, then D is pushed again.
    vet(&world, &app, "v2.0.0", 41, base).await;
    promote_lib(&world, "v2.0.0").await;
    vet(&world, &app, "v2.1.0", 42, at(base, 60)).await;
    let first_vetted = world.image_record("shop-api", &image).await.unwrap()["vetted_stage"].clone();
    let report = push(&world, &app, "v2.0.1", 41, at(base, 120)).await;
    assert_eq!(report.apps[0].status, Action::Deploying, "{report:?}");

    let completed = settle(&world, &app.stage, Settle::Complete).await;
    let failed = settle(&world, &app.prod, Settle::Fail { circuit_breaker_rollback: false }).await;
    let (stage_monitor, prod_monitor) = tokio::join!(deploy_monitor(&world), deploy_monitor(&world));
    let (in_stage, in_prod) =
        tokio::join!(stage_monitor.invoke(completed[0].clone()), prod_monitor.invoke(failed[0].clone()));
    let (in_stage, in_prod) = (in_stage.response(), in_prod.response());
    assert_eq!(in_stage["results"][0]["action"], "verified", "{in_stage}");
    assert_eq!(in_prod["results"][0]["action"], "rolled_back", "{in_prod}");

    let facts = world.image_record("shop-api", &image).await.unwrap();
    assert!(facts["failed_prod"]["reason"].is_string(), "prod's failure was lost: {facts}");
    let time = |value: &Value| value.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let vetted = time(&facts["vetted_stage"]).unwrap_or_else(|| panic!("stage's verification was lost: {facts}"));
    assert!(vetted > time(&first_vetted).unwrap(), "stage's new verification was lost: {facts}");
    let mut tags = strings(&facts["tags"]);
    tags.sort();
    assert_eq!(tags, ["v2.0.0", "v2.0.1"], "{facts}");

    // And the digest is refused, whatever tag it is asked for under.
    let promote = promote_function(&world).await;
    for tag in ["v2.0.0", "v2.0.1"] {
        let (error_type, message) = promote.invoke(json!({ "app": "shop-api", "tag": tag })).await.error();
        assert_eq!(error_type, "NotVetted", "{tag}: {message}");
    }
}

// ------------------------------------------------------------------------------------------------
// Hole 8
// ------------------------------------------------------------------------------------------------

/// Hole 8: the sweep isolates apps and checks health concurrently.
///
/// v1's sweep went through the in-flight rollouts one after the other and stopped at the first
/// error: a service deleted under a rollout (`DescribeServices` finds it no more) failed the whole
/// sweep, so the healthy apps behind it were never verified and every later sweep failed (and
/// alerted) again; and its health checks ran in sequence, so a few slow endpoints used up the
/// invocation's time. v2 handles each item on its own, several at once: the gone service's
/// rollout is settled `failed` once (its image is not to blame), the others are verified, and their
/// health checks overlap.
#[tokio::test]
async fn one_sweep_verifies_healthy_apps_concurrently_and_fails_a_deleted_service_once() {
    let world = World::new().await;
    let health = LocalHttp::start(200).await;
    health.set_delay(Duration::from_secs(1));
    let api = seed_with_health(&world, "shop-api", &health.url("/api/health")).await;
    let web = seed_with_health(&world, "shop-web", &health.url("/web/health")).await;
    let db = world.seed_app("shop-db", "shop-db", false, json!({})).await;
    let base = an_hour_ago();
    for (app, n) in [(&api, 51), (&web, 52), (&db, 53)] {
        let report = push(&world, app, "v1.0.0", n, at(base, i64::from(n))).await;
        assert_eq!(report.apps[0].status, Action::Deploying, "{report:?}");
    }
    // The completions happen, their events are lost; shop-db's service is deleted.
    settle(&world, &api.stage, Settle::Complete).await;
    settle(&world, &web.stage, Settle::Complete).await;
    world.ecs.delete_service().cluster(&db.stage.cluster).service(&db.stage.service).force(true).send().await.unwrap();
    let monitor = deploy_monitor(&world).await;
    let _ = world.notifications().await;

    let report = monitor.invoke(world.schedule_event()).await.response();
    assert_eq!(result_for(&report, "shop-api")["action"], "verified", "{report}");
    assert_eq!(result_for(&report, "shop-web")["action"], "verified", "{report}");
    assert_eq!(result_for(&report, "shop-db")["action"], "failed", "{report}");
    assert!(health.max_in_flight() >= 2, "the health checks ran one after the other: {:?}", health.received());

    let notes = world.notifications().await;
    assert_eq!(notes.len(), 3, "{:?}", summary(&notes));
    let verified = with_outcome(&notes, "verified");
    let mut verified_apps: Vec<&str> = verified.iter().filter_map(|n| n["MessageAttributes"]["app"].as_str()).collect();
    verified_apps.sort_unstable();
    assert_eq!(verified_apps, ["shop-api", "shop-web"]);
    let failed = with_outcome(&notes, "failed");
    assert_eq!(failed.len(), 1, "{:?}", summary(&notes));
    assert_eq!(failed[0]["MessageAttributes"]["app"], "shop-db");
    assert_eq!(failed[0]["MessageAttributes"]["severity"], "critical");
    let reason = context(failed[0])["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no longer exists"), "{reason}");
    let facts = world.image_record("shop-db", &digest(53)).await.unwrap();
    assert!(facts.get("failed_stage").is_none(), "the image was blamed for its service's deletion: {facts}");
    assert_eq!(world.record("shop-db", "stage").await.unwrap()["rollout"]["state"]["kind"], "failed");

    // The next sweep has nothing new to say.
    let again = monitor.invoke(world.schedule_event()).await.response();
    let notes = world.notifications().await;
    assert!(notes.is_empty(), "{:?} after {again}", summary(&notes));
}
