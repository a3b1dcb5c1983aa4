//! Notification channels down, through the real binaries: SNS failing (HTTP 500 on every
//! `Publish` to the world's topic) for a whole run, and the Slack webhook hanging past Conveyor's
//! 5-s timeout. Deployments still happen — push, verification, promotion, rollback — nothing is
//! announced on the channel while it is down, and once it is back every notification is
//! delivered, by the next invocation on that service or by the sweep: exactly once each (SNS
//! counted by the Chatbot message's `id`, Slack by what the webhook answered), in order per
//! service.
//!
//! A failure a listed known bug excuses (`conveyor_testkit::known_bugs`, situations
//! `channels:*`) is printed and the test carries on the way that still works; every other check
//! holds as written.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use conveyor_testkit::functions::Functions;
use conveyor_testkit::known_bugs;
use conveyor_testkit::local_aws::{Fault, FaultMode, Settle};
use conveyor_testkit::world::{digest, AppFixture};
use conveyor_testkit::{LocalHttp, World};
use serde_json::{json, Value};

/// A push of `shop-api:{tag}` (image `n`), `minutes_ago`.
async fn push(world: &World, functions: &Functions, tag: &str, n: u32, minutes_ago: i64) {
    let event = world.push_event("shop-api", tag, &digest(n), Utc::now() - chrono::Duration::minutes(minutes_ago));
    let report = functions.stage.invoke(event).await.response();
    assert_eq!(report["apps"][0]["status"], "deploying", "{report}");
}

/// ECS ends the primary deployment of `env`; deploy-monitor handles the event (or the sweep, for
/// the end of a rollback, which no event of Conveyor's deployment announces).
async fn settle(world: &World, functions: &Functions, app: &AppFixture, env: &str, outcome: Settle) -> Value {
    let service = if env == "stage" { &app.stage } else { &app.prod };
    let events = world.aws.settle(&service.cluster, &service.service, outcome).await;
    functions.monitor.invoke(events[0].clone()).await.response()
}

fn action(report: &Value) -> &str {
    report["results"][0]["action"].as_str().unwrap_or_default()
}

async fn sweep(world: &World, functions: &Functions) -> Value {
    functions.monitor.invoke(world.schedule_event()).await.response()
}

/// The deployments of one run, none of which needs a notification channel: returns what must
/// have been announced, per environment, in order (`outcome tag`).
async fn deploy_everything(
    world: &World,
    functions: &Functions,
    app: &AppFixture,
) -> BTreeMap<&'static str, Vec<&'static str>> {
    push(world, functions, "v1.0.0", 1, 10).await;
    assert_eq!(action(&settle(world, functions, app, "stage", Settle::Complete).await), "verified");
    let promoted = functions.promote.invoke(json!({ "app": "shop-api", "tag": "v1.0.0" })).await.response();
    assert_eq!(promoted["status"], "deploying", "{promoted}");
    let failed = settle(world, functions, app, "prod", Settle::Fail { circuit_breaker_rollback: false }).await;
    assert_eq!(action(&failed), "rolled_back", "{failed}");
    push(world, functions, "v1.1.0", 2, 5).await; // still rolling out when the channel comes back

    // Everything happened.
    assert_eq!(world.running_image(&app.stage).await, format!("{}/shop-api@{}", world.registry(), digest(2)));
    let prod = world.service(&app.prod.cluster, &app.prod.service).await;
    assert_eq!(prod.task_definition(), Some(app.prod.initial_task_definition.as_str()), "prod rolled back");
    let stage = world.record("shop-api", "stage").await.unwrap();
    assert_eq!(stage["last_verified"]["tag"], "v1.0.0", "{stage}");
    assert!(world.image_record("shop-api", &digest(1)).await.unwrap()["failed_prod"].is_object());
    BTreeMap::from([
        ("stage", vec!["deploying v1.0.0", "verified v1.0.0", "deploying v1.1.0"]),
        ("prod", vec!["promoted v1.0.0", "rolled_back v1.0.0"]),
    ])
}

/// Then, with the channel back: the rollouts end, and the notifications of the whole run are
/// expected (per environment, in order).
async fn finish_everything(
    world: &World,
    functions: &Functions,
    app: &AppFixture,
) -> BTreeMap<&'static str, Vec<&'static str>> {
    assert_eq!(action(&settle(world, functions, app, "stage", Settle::Complete).await), "verified");
    let events = world.aws.settle(&app.prod.cluster, &app.prod.service, Settle::Complete).await;
    assert!(!events.is_empty());
    let swept = sweep(world, functions).await;
    assert!(swept["results"].as_array().unwrap().iter().all(|r| r["action"] != "error"), "{swept}");
    BTreeMap::from([
        ("stage", vec!["deploying v1.0.0", "verified v1.0.0", "deploying v1.1.0", "verified v1.1.0"]),
        ("prod", vec!["promoted v1.0.0", "rolled_back v1.0.0"]),
    ])
}

/// The SNS notifications received, as (id, environment, `outcome tag`), in arrival order.
fn sns_facts(notes: &[Value]) -> Vec<(String, String, String)> {
    notes
        .iter()
        .map(|note| {
            let message = &note["Message"];
            let context = &message["metadata"]["additionalContext"];
            let id = message["id"].as_str().unwrap_or_else(|| panic!("no id: {note}")).to_owned();
            let environment = context["environment"].as_str().unwrap_or_default().to_owned();
            let what =
                format!("{} {}", context["outcome"].as_str().unwrap_or("?"), context["tag"].as_str().unwrap_or("?"));
            (id, environment, what)
        })
        .collect()
}

/// `(version, index)` of a notification id (`conveyor:{app}/{env}:{version}.{index}`): the order
/// the transitions were committed in.
fn sequence(id: &str) -> (u64, u64) {
    let (version, index) = id.rsplit_once(':').and_then(|(_, seq)| seq.split_once('.')).unwrap_or(("0", "0"));
    (version.parse().unwrap_or(0), index.parse().unwrap_or(0))
}

/// Every SNS notification exactly once (by id), in commit order per environment, and exactly the
/// expected ones (by outcome).
#[track_caller]
fn assert_sns_exactly_once(notes: &[Value], expected: &BTreeMap<&str, Vec<&str>>) {
    let facts = sns_facts(notes);
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _, _) in &facts {
        *ids.entry(id).or_default() += 1;
    }
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "published more than once: {repeated:?}\n{facts:#?}");
    for (env, outcomes) in expected {
        let of_env: Vec<&(String, String, String)> = facts.iter().filter(|(_, e, _)| e == env).collect();
        let got: Vec<&str> = of_env.iter().map(|(_, _, what)| what.as_str()).collect();
        assert_eq!(&got, outcomes, "{env}: the notifications, in arrival order\n{facts:#?}");
        let order: Vec<(u64, u64)> = of_env.iter().map(|(id, _, _)| sequence(id)).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{env}: not in commit order: {facts:#?}");
    }
    assert_eq!(facts.len(), expected.values().map(Vec::len).sum::<usize>(), "{facts:#?}");
}

/// Slack posts as (environment, `outcome tag`) from their headline (`shop-api stage: rolled back
/// v1.0.0`), in the order the webhook answered them.
fn slack_facts(posts: &[conveyor_testkit::http::Received]) -> Vec<(String, String)> {
    posts
        .iter()
        .map(|post| {
            let message: Value = serde_json::from_str(&post.body).unwrap();
            let headline = message["blocks"][0]["text"]["text"].as_str().unwrap().to_owned();
            let (subject, what) = headline.split_once(": ").unwrap();
            let environment = subject.rsplit(' ').next().unwrap().to_owned();
            let (outcome, tag) = what.rsplit_once(' ').unwrap();
            (environment, format!("{} {tag}", outcome.replace(' ', "_")))
        })
        .collect()
}

#[track_caller]
fn assert_slack_exactly_once(slack: &LocalHttp, expected: &BTreeMap<&str, Vec<&str>>) {
    let facts = slack_facts(&slack.answered());
    for (env, outcomes) in expected {
        let got: Vec<&str> = facts.iter().filter(|(e, _)| e == env).map(|(_, what)| what.as_str()).collect();
        assert_eq!(&got, outcomes, "{env}: Slack posts answered, in order\n{facts:#?}");
    }
    assert_eq!(facts.len(), expected.values().map(Vec::len).sum::<usize>(), "{facts:#?}");
}

/// Notifications still waiting in the state table, by item.
async fn outboxes(world: &World) -> BTreeMap<String, usize> {
    world
        .items()
        .await
        .into_iter()
        .filter_map(|item| {
            let count = item.get("outbox")?.as_object()?.len();
            Some((format!("{} {}", item["pk"].as_str()?, item["sk"].as_str()?), count))
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

#[tokio::test]
async fn sns_down_for_a_whole_run_then_every_notification_once_in_order() {
    let world = World::new().await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let functions = Functions::spawn(&world).await;
    world.aws.fault(&Fault::on("Publish").matching(&world.topic_arn).mode(FaultMode::Http500).persistent()).await;

    let run = deploy_everything(&world, &functions, &app).await;
    assert!(world.notifications().await.is_empty(), "announced while SNS was down");
    let waiting = outboxes(&world).await;
    assert_eq!(waiting.values().sum::<usize>(), run.values().map(Vec::len).sum::<usize>(), "{waiting:?}");
    // An outage costs each invocation one failed Publish (and the SDK's one retry), not one per
    // notification waiting.
    let publishes = world.aws.call_log(&world.topic_arn).await.into_iter().filter(|c| c.operation == "Publish").count();
    assert!(publishes <= 2 * 5, "{publishes} Publish calls for 5 invocations");

    // SNS is back: the sweep delivers what waits, rollouts in flight or not.
    world.aws.clear_faults(&world.topic_arn).await;
    let swept = sweep(&world, &functions).await;
    let mut notes = world.notifications().await;
    let delivered = sns_facts(&notes);
    known_bugs::expect(
        delivered.len() == run.values().map(Vec::len).sum::<usize>(),
        "channels:sweep-skips-outbox-of-in-flight-item",
        format!("the sweep delivered {} of 5 waiting notifications: {delivered:?}\nsweep: {swept}", delivered.len()),
    );

    // The rollouts end (the stage one by its event, prod's rollback seen by the sweep); whatever
    // still waited goes out with them, and nothing twice.
    let expected = finish_everything(&world, &functions, &app).await;
    notes.extend(world.notifications().await);
    assert_sns_exactly_once(&notes, &expected);
    assert!(outboxes(&world).await.is_empty(), "{:?}", outboxes(&world).await);
    // Nothing more to send.
    sweep(&world, &functions).await;
    assert!(world.notifications().await.is_empty());
}

#[tokio::test]
async fn slack_hanging_for_a_whole_run_then_every_post_once_in_order() {
    let world = World::new().await;
    let slack = LocalHttp::start(200).await;
    slack.set_delay(Duration::from_secs(3600)); // far past the 5-s timeout: a hung webhook
    let parameter = format!("{}/secrets/slack-webhook", world.prefix);
    world.put_secure_parameter(&parameter, &slack.url("/services/T0/B0/hook")).await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({ "slack_webhook_parameter": parameter })).await;
    let functions = Functions::spawn(&world).await;

    let run = deploy_everything(&world, &functions, &app).await;
    assert!(slack.answered().is_empty(), "announced on Slack while it hung");
    // One hung post per invocation (5), not one per notification waiting.
    assert!(slack.received().len() <= 5, "{} posts tried in 5 invocations", slack.received().len());
    // SNS was up all along: everything is there already.
    let mut sns = world.notifications().await;
    assert_sns_exactly_once(&sns, &run);

    // The webhook answers again: the sweep posts what waits, rollouts in flight or not.
    slack.set_delay(Duration::ZERO);
    let swept = sweep(&world, &functions).await;
    let posted = slack_facts(&slack.answered());
    known_bugs::expect(
        posted.len() == run.values().map(Vec::len).sum::<usize>(),
        "channels:sweep-skips-outbox-of-in-flight-item",
        format!("the sweep posted {} of 5 waiting Slack messages: {posted:?}\nsweep: {swept}", posted.len()),
    );

    let expected = finish_everything(&world, &functions, &app).await;
    assert_slack_exactly_once(&slack, &expected);
    // Slack's retries never published to SNS again.
    sns.extend(world.notifications().await);
    assert_sns_exactly_once(&sns, &expected);
    assert!(outboxes(&world).await.is_empty(), "{:?}", outboxes(&world).await);
    let logs = [functions.stage.logs(), functions.monitor.logs(), functions.promote.logs()].concat().join("\n");
    assert!(!logs.contains("/services/T0/B0/hook"), "the webhook URL leaked into the logs");
}

#[tokio::test]
async fn text_users_write_is_escaped_in_the_chatbot_markdown_and_the_slack_post() {
    let world = World::new().await;
    let slack = LocalHttp::start(200).await;
    let parameter = format!("{}/secrets/slack-webhook", world.prefix);
    world.put_secure_parameter(&parameter, &slack.url("/services/T0/B0/hook")).await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({ "slack_webhook_parameter": parameter })).await;
    let functions = Functions::spawn(&world).await;
    push(&world, &functions, "v1.0.0", 1, 10).await;
    assert_eq!(action(&settle(&world, &functions, &app, "stage", Settle::Complete).await), "verified");
    let _ = world.notifications().await;
    let posted_before = slack.answered().len();

    // A mention of the whole channel and a link disguised as a button, in the reason and the name.
    let reason = "<!channel> urgent: <https://evil.example/approve|Approve> & ship";
    let request = json!({ "app": "shop-api", "tag": "v1.0.0", "reason": reason, "requested_by": "<@U0ADMIN>" });
    let promoted = functions.promote.invoke(request).await.response();
    assert_eq!(promoted["status"], "deploying", "{promoted}");

    let escaped = "&lt;!channel&gt; urgent: &lt;https://evil.example/approve|Approve&gt; &amp; ship";
    let notes = world.notifications().await;
    let note = notes
        .iter()
        .find(|n| n["Message"]["metadata"]["additionalContext"]["outcome"] == "promoted")
        .unwrap_or_else(|| panic!("no promoted notification: {notes:#?}"));
    let content = &note["Message"]["content"];
    let description = content["description"].as_str().unwrap();
    assert!(description.contains(&format!("*Reason:* {escaped}")), "{description}");
    assert!(description.contains("*On behalf of:* &lt;@U0ADMIN&gt; (unverified)"), "{description}");
    for markdown in [content["title"].as_str().unwrap(), description] {
        assert!(!markdown.contains('<') && !markdown.contains('>'), "unescaped: {markdown}");
    }
    // The metadata is not rendered: it keeps the values as written (for filters, custom actions).
    let context = &note["Message"]["metadata"]["additionalContext"];
    assert_eq!((context["reason"].as_str(), context["on_behalf_of"].as_str()), (Some(reason), Some("<@U0ADMIN>")));

    let posts = slack.answered();
    let [post] = &posts[posted_before..] else { panic!("one Slack post for the promotion: {posts:#?}") };
    let message: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(message["blocks"][1]["text"]["text"], description, "the same markdown as Chatbot's");
    for text in [&post.body, message["text"].as_str().unwrap()] {
        assert!(!text.contains("<!channel>") && !text.contains("<https://") && !text.contains("<@U0ADMIN>"), "{text}");
    }
}

#[tokio::test]
async fn a_webhook_parameter_that_is_not_slack_is_never_posted_to_and_sns_still_gets_everything() {
    let world = World::new().await;
    let elsewhere = LocalHttp::start(200).await;
    let parameter = format!("{}/secrets/slack-webhook", world.prefix);
    let secret = elsewhere.url("/services/T0/B0/not-slack-secret");
    world.put_secure_parameter(&parameter, &secret).await;
    let app = world.seed_app("shop-api", "shop-api", false, json!({ "slack_webhook_parameter": parameter })).await;
    // A real installation: no local switch, so only Slack's hosts are webhooks.
    let env: Vec<(String, String)> =
        world.function_env().into_iter().filter(|(name, _)| name != conveyor::web::LOCAL_ENDPOINTS_VARIABLE).collect();
    let monitor = conveyor_testkit::Function::spawn("deploy-monitor", &env).await;
    let settings = conveyor::Settings { endpoints: conveyor::web::Endpoints::Public, ..world.settings() };
    let stage = conveyor::Conveyor::new(&world.config, settings);

    let event = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - chrono::Duration::minutes(1));
    stage.stage(event, &crate::support::invocation()).await.unwrap();
    let events = world.aws.settle(&app.stage.cluster, &app.stage.service, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert_eq!(report["results"][0]["action"], "verified", "{report}");

    assert!(elsewhere.received().is_empty(), "posted to a webhook that is not Slack's");
    let outcomes: Vec<Value> =
        world.notifications().await.iter().map(|n| n["MessageAttributes"]["outcome"].clone()).collect();
    assert_eq!(outcomes, [json!("deploying"), json!("verified")], "SNS gets every notification");
    assert!(outboxes(&world).await.is_empty(), "a refused webhook is not retried: {:?}", outboxes(&world).await);
    let logs = monitor.logs().join("\n");
    assert!(logs.contains("does not hold a Slack webhook URL") && logs.contains(&parameter), "{logs}");
    assert!(!logs.contains("not-slack-secret"), "the webhook URL leaked into the logs");
}
