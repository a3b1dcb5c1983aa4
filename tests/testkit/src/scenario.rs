//! The story Conveyor exists for, end to end on a [`LocalStack`]: push → stage → verify → promote
//! (with the `conveyor` CLI, following the rollout) → prod, also in another AWS account; a bad
//! push rolls back and alerts; promoting it is refused; a pipeline (dev → stage, promoted
//! automatically and soaked with an alarm → prod, by hand) moves one digest along, and stage's
//! alarm rolls a noisy image back; a blue/green promotion is stopped by Conveyor's lifecycle hook
//! before production traffic moves. `make demo` prints it; the end-to-end
//! tests assert it. Every step checks what it expects and fails with what it saw.

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use crate::accounts::PROD_ACCOUNT;
use crate::stack::{CliRun, LocalStack, MomentKind, StackOptions};
use crate::world::digest;

/// The digests the scenario pushes; `BAD` is the one whose tasks fail.
pub fn good() -> String {
    digest(100)
}
pub fn bad() -> String {
    digest(666)
}
pub fn billing() -> String {
    digest(200)
}
pub fn web() -> String {
    digest(300)
}
/// A web image whose tasks run, but whose error rate sets off stage's alarm while it soaks.
pub fn web_noisy() -> String {
    digest(301)
}

/// A checkout image whose tasks start and that dev verifies, but whose answers on prod's test
/// listener are errors.
pub fn checkout_bad() -> String {
    digest(400)
}

/// The alarm web's stage is gated on.
pub fn web_alarm(world: &crate::World) -> String {
    world.name("web-stage-5xx")
}

/// ECS for the story: rollouts take about a second; the bad image's tasks never start.
pub fn options() -> StackOptions {
    StackOptions {
        rollout_seconds: 1.0,
        fail_digests: vec![bad()],
        circuit_breaker: false,
        unhealthy_on_test: vec![checkout_bad()],
    }
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

/// Seeds the apps: shop-api (with a FireLens sidecar and a Slack webhook), with a stage and a prod
/// service here; billing (repository `billing-{id}`), whose prod runs in another AWS account
/// (Conveyor assumes the role `infra/target-account.yaml` creates there).
pub async fn seed(stack: &LocalStack) {
    let world = &stack.world;
    let webhook = format!("{}/secrets/slack-webhook", world.prefix);
    world.put_secure_parameter(&webhook, &stack.slack.url("/services/T0000/B0000/demo-secret")).await;
    world
        .seed_app(
            "shop-api",
            "shop-api",
            true,
            json!({ "slack_webhook_parameter": webhook, "tags": "^v[0-9]+\\.[0-9]+\\.[0-9]+$" }),
        )
        .await;
    world.seed_app_across("billing", "billing", PROD_ACCOUNT).await;
    let pipeline = [
        ("dev", json!({})),
        ("stage", json!({ "from": "dev", "promotion": "auto", "soak": "3s", "alarms": [web_alarm(world)] })),
        ("prod", json!({ "from": "stage", "approval": true })),
    ];
    world.aws.set_alarm(&web_alarm(world), "OK").await;
    let services = world.seed_pipeline("web", &pipeline).await;
    // prod runs in two regions: eu-west-1 first, then this one (a wave, each verified in turn).
    let eu = world.service_in_region("web", "web", crate::accounts::OTHER_REGION, "pipeline-prod-eu").await;
    let target = |s: &crate::world::ServiceFixture| json!({ "cluster": s.cluster, "service": s.service });
    let mut environments = serde_json::Map::new();
    for ((env, extra), service) in pipeline.iter().zip(&services) {
        let mut config = target(service);
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
        }
        environments.insert((*env).to_owned(), config);
    }
    let eu_target = json!({ "cluster": eu.cluster, "service": "web", "region": crate::accounts::OTHER_REGION });
    environments["prod"] = json!({ "from": "stage", "approval": true, "targets": [eu_target, target(&services[2])] });
    world.put_app("web", &json!({ "repository": "web", "container": "api", "environments": environments })).await;
    // checkout: dev (rolling) → prod, a blue/green service with Conveyor as its lifecycle hook.
    let test_listener = world.aws.traffic_url("test", &world.name("pipeline-prod"), "checkout");
    let checkout =
        [("dev", json!({})), ("prod", json!({ "from": "dev", "test_health_url": test_listener, "test_probes": 2 }))];
    let checkout = world.seed_pipeline("checkout", &checkout).await;
    world.use_native_strategy(&checkout[1], "BLUE_GREEN", "POST_TEST_TRAFFIC_SHIFT", "deploy-hook").await;
    stack.say(
        MomentKind::Step,
        format!(
            "seeded shop-api (api + log_router sidecar; stage and prod here), billing (stage here, prod in account {PROD_ACCOUNT}) and web (a pipeline: dev → stage, promoted automatically, soaked 3 s with an alarm → prod in two regions, eu-west-1 then here, by hand, approved by a second person) and checkout (dev → prod, a blue/green service whose lifecycle hook is Conveyor's, probing the test listener)"
        ),
    );
}

/// Runs a `conveyor` command as an operator would, shows it on the timeline, and checks its exit
/// code.
async fn operator(stack: &LocalStack, args: &[&str], expected: i32) -> Result<CliRun, String> {
    person(stack, crate::principals::OPERATOR, args, expected).await
}

/// Runs a `conveyor` command as `who` (the operator, or a second person).
async fn person(stack: &LocalStack, who: &str, args: &[&str], expected: i32) -> Result<CliRun, String> {
    let ran = stack.cli_as(who, args).await;
    let prompt = if who == crate::principals::OPERATOR { String::new() } else { format!("({who}) ") };
    let mut text = format!("{prompt}$ conveyor {}", args.join(" "));
    for line in ran.stderr.lines().chain(ran.stdout.lines()) {
        text.push_str("\n  ");
        text.push_str(line);
    }
    stack.say(MomentKind::Command, text);
    check(ran.code == expected, || {
        format!("`conveyor {}` exited {}, not {expected}: {}{}", args.join(" "), ran.code, ran.stdout, ran.stderr)
    })?;
    Ok(ran)
}

pub async fn story(stack: &LocalStack) -> Result<(), String> {
    let world = &stack.world;
    let now = Utc::now();

    stack.say(MomentKind::Step, "push shop-api:v1.0.0 and billing:v2.3.0 to ECR");
    stack.push("shop-api", "v1.0.0", &good(), now - chrono::Duration::seconds(60)).await;
    stack.push(&world.name("billing"), "v2.3.0", &billing(), now - chrono::Duration::seconds(60)).await;
    stack.wait_for_state("shop-api", "stage", "v1.0.0", "verified").await?;
    stack.wait_for_state("billing", "stage", "v2.3.0", "verified").await?;
    let stage_image = world.app_image("shop-api", "stage").await;
    check(stage_image.ends_with(&good()), || format!("stage runs {stage_image}, not the pushed digest"))?;
    operator(stack, &["status"], 0).await?;

    stack.say(MomentKind::Step, "promote shop-api v1.0.0 to prod, and follow it");
    operator(stack, &["promote", "shop-api", "v1.0.0", "--reason", "release 1.0", "--wait"], 0).await?;
    let prod_image = world.app_image("shop-api", "prod").await;
    check(prod_image == stage_image, || format!("prod runs {prod_image}, stage vetted {stage_image}"))?;

    stack.say(MomentKind::Step, format!("promote billing v2.3.0 to its prod, in account {PROD_ACCOUNT}"));
    let refused = operator(stack, &["promote", "billing", "v2.3.0"], 4).await?;
    check(refused.stderr.contains("ecr:BatchGetImage") || refused.stdout.contains("ecr:BatchGetImage"), || {
        format!("the refusal does not say what to add: {}{}", refused.stdout, refused.stderr)
    })?;
    stack.say(MomentKind::Step, format!("let account {PROD_ACCOUNT} pull billing (the statement promote asked for)"));
    world.allow_pull(&world.name("billing"), PROD_ACCOUNT).await;
    operator(stack, &["promote", "billing", "v2.3.0", "--wait"], 0).await?;
    let billing_prod = world.image_in(PROD_ACCOUNT, &billing_prod(stack)).await;
    check(billing_prod.ends_with(&billing()), || format!("billing prod (account {PROD_ACCOUNT}) runs {billing_prod}"))?;

    stack.say(MomentKind::Step, "push shop-api:v1.1.0, whose tasks fail to start");
    stack.push("shop-api", "v1.1.0", &bad(), now - chrono::Duration::seconds(30)).await;
    let record = stack.wait_for_state("shop-api", "stage", "v1.1.0", "rolled_back").await?;
    let back_to = world.app_image("shop-api", "stage").await;
    check(back_to.ends_with(&good()), || format!("stage runs {back_to} after the rollback, not v1.0.0"))?;
    check(record["rollout"]["state"]["reason"].as_str().is_some_and(|r| r.contains("circuit breaker")), || {
        format!("rollback reason: {record}")
    })?;
    let slack = stack
        .wait_for("the Slack alert", Duration::from_secs(10), || async {
            stack.slack.received().into_iter().find(|post| post.body.contains("rolled back v1.1.0"))
        })
        .await?;
    let message: Value = serde_json::from_str(&slack.body).map_err(|e| e.to_string())?;
    let text = slack_text(&message);
    check(text.contains("CannotStartContainerError"), || {
        format!("the Slack alert does not say why the tasks stopped:\n{text}")
    })?;

    stack.say(MomentKind::Step, "try to promote shop-api v1.1.0");
    let refused = operator(stack, &["promote", "shop-api", "v1.1.0"], 1).await?;
    check(format!("{}{}", refused.stdout, refused.stderr).contains("NotVetted"), || {
        format!("promoting v1.1.0 was not refused with NotVetted: {}{}", refused.stdout, refused.stderr)
    })?;
    let prod_after = world.app_image("shop-api", "prod").await;
    check(prod_after == prod_image, || format!("prod changed to {prod_after}"))?;
    operator(stack, &["history", "shop-api"], 0).await?;

    let expected = ["stage deploying", "stage verified", "prod promoted", "prod verified", "stage rolled_back"];
    let outcomes = || {
        let alerts = stack.alerts();
        alerts
            .iter()
            .filter(|a| a["MessageAttributes"]["app"] == "shop-api")
            .map(|a| {
                let attributes = &a["MessageAttributes"];
                format!(
                    "{} {}",
                    attributes["environment"].as_str().unwrap_or("?"),
                    attributes["outcome"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
    };
    let all_there = stack
        .wait_for("every notification", Duration::from_secs(10), || async {
            let seen = outcomes();
            expected.iter().all(|e| seen.iter().any(|o| o == e)).then_some(())
        })
        .await;
    check(all_there.is_ok(), || format!("expected notifications {expected:?}, got {:?}", outcomes()))?;
    pipeline(stack).await
}

/// web's pipeline: a push reaches dev only; vetted there, stage gets it automatically and soaks it,
/// its alarm quiet; prod, the one environment promoted by hand, by `conveyor promote`. Then an
/// image that sets stage's alarm off while it soaks is rolled back there and never reaches prod.
async fn pipeline(stack: &LocalStack) -> Result<(), String> {
    let world = &stack.world;
    let alarm = web_alarm(world);
    stack.say(
        MomentKind::Step,
        "push web:v3.0.0: dev deploys it; once dev verifies it, stage gets it automatically and soaks it (3 s, alarm quiet)",
    );
    stack.push("web", "v3.0.0", &web(), Utc::now() - chrono::Duration::seconds(20)).await;
    stack.wait_for_state("web", "dev", "v3.0.0", "verified").await?;
    let stage = stack.wait_for_vetted("web", "stage", "v3.0.0").await?;
    check(stage["rollout"]["origin"]["requested_by"] == "conveyor", || format!("stage's rollout: {stage}"))?;
    let status = operator(stack, &["status", "web"], 0).await?;
    let gates = format!("web stage: vetted after verification, a 3s soak and alarms {alarm} quiet");
    check(status.stdout.contains(&gates), || format!("status does not show stage's gates: {}", status.stdout))?;
    stack.say(
        MomentKind::Step,
        "promote web v3.0.0 to prod (by hand, and prod wants an approval: nothing changes until a second person gives it)",
    );
    let asked = operator(stack, &["promote", "web", "v3.0.0", "--json"], 0).await?;
    let asked: Value = serde_json::from_str(&asked.stdout).map_err(|e| format!("promote --json: {e}"))?;
    check(asked["status"] == "awaiting_approval", || format!("the promotion did not wait: {asked}"))?;
    let id = asked["approval_id"].as_str().unwrap_or_default().to_owned();
    let own = operator(stack, &["approve", "web", "--to", "prod"], 1).await?;
    check(own.stderr.contains("cannot approve it"), || format!("the requester approved: {}", own.stderr))?;
    stack.say(
        MomentKind::Step,
        "a release manager (another identity, as STS verifies it) approves it, and follows it: prod rolls out in eu-west-1, then (verified there) here",
    );
    person(stack, "release-manager", &["approve", "web", "--to", "prod", "--id", &id, "--wait"], 0).await?;
    let on = |env: &str| crate::world::ServiceFixture {
        cluster: world.name(&format!("pipeline-{env}")),
        service: "web".into(),
        family: String::new(),
        initial_task_definition: String::new(),
    };
    let (dev, prod) = (world.running_image(&on("dev")).await, world.running_image(&on("prod")).await);
    check(dev == prod && prod.ends_with(&web()), || format!("prod runs {prod}, dev vetted {dev}"))?;
    let eu = world.image_in_region(crate::accounts::OTHER_REGION, &on("prod-eu")).await;
    check(eu == prod, || format!("prod in {} runs {eu}, not {prod}", crate::accounts::OTHER_REGION))?;
    // The wave: this region's rollout started after eu-west-1's (once it was verified).
    let record = world.record("web", "prod").await.unwrap_or_default();
    let (eu_started, here_started) = (&record["rollout"]["started_at"], &record["targets"][0]["rollout"]["started_at"]);
    check(eu_started.as_str() < here_started.as_str(), || format!("not eu-west-1 first, then here: {record}"))?;

    stack.say(MomentKind::Step, "push web:v3.1.0: its tasks run, dev verifies it, stage gets it and soaks it");
    stack.push("web", "v3.1.0", &web_noisy(), Utc::now() - chrono::Duration::seconds(10)).await;
    stack
        .wait_for("web stage to soak v3.1.0", Duration::from_secs(30), || async {
            let record = world.record("web", "stage").await?;
            (record["rollout"]["tag"] == "v3.1.0" && record["soak"].is_object()).then_some(())
        })
        .await?;
    stack.say(MomentKind::Step, format!("stage's error rate climbs: the alarm {alarm} enters ALARM"));
    world.aws.set_alarm(&alarm, "ALARM").await;
    stack.put(world.alarm_event(&alarm, Utc::now())).await;
    let record = stack.wait_for_state("web", "stage", "v3.1.0", "rolled_back").await?;
    check(record["rollout"]["state"]["reason"].as_str().is_some_and(|r| r.contains(&alarm)), || {
        format!("rollback reason: {record}")
    })?;
    let back_on = world.running_image(&on("stage")).await;
    check(back_on.ends_with(&web()), || format!("stage runs {back_on} after the rollback, not v3.0.0"))?;
    operator(stack, &["status", "web"], 0).await?;
    stack.say(MomentKind::Step, "try to promote web v3.1.0 to prod");
    let refused = operator(stack, &["promote", "web", "v3.1.0"], 1).await?;
    check(format!("{}{}", refused.stdout, refused.stderr).contains("NotVetted"), || {
        format!("promoting v3.1.0 was not refused with NotVetted: {}{}", refused.stdout, refused.stderr)
    })?;
    let prod_after = world.running_image(&on("prod")).await;
    check(prod_after == prod, || format!("prod changed to {prod_after}"))?;
    blue_green(stack).await
}

/// checkout's prod is a blue/green service whose lifecycle hook is Conveyor's: an image dev
/// verified answers errors on prod's test listener, so the hook fails it before any production
/// traffic moves, and ECS shifts back to blue.
async fn blue_green(stack: &LocalStack) -> Result<(), String> {
    let world = &stack.world;
    stack.say(MomentKind::Step, "push checkout:v1.0.0: dev (a rolling service) verifies it");
    stack.push("checkout", "v1.0.0", &checkout_bad(), Utc::now() - chrono::Duration::seconds(5)).await;
    stack.wait_for_state("checkout", "dev", "v1.0.0", "verified").await?;
    stack.say(
        MomentKind::Step,
        "promote checkout v1.0.0 to prod, a blue/green service: ECS moves test traffic to green and asks Conveyor's hook, whose probes of the test listener get 503",
    );
    operator(stack, &["promote", "checkout", "v1.0.0", "--to", "prod", "--wait"], 2).await?;
    let cluster = world.name("pipeline-prod");
    let state = world.aws.native_state(&cluster, "checkout").await;
    let deployment = &state["deployments"][0];
    check(deployment["status"] == "ROLLBACK_SUCCESSFUL", || format!("the blue/green deployment: {state}"))?;
    let arn = deployment["serviceDeploymentArn"].as_str().unwrap_or_default();
    check(state["traffic"][arn]["production_peak"] == 0, || format!("production traffic reached green: {state}"))?;
    let hook_said = stack
        .lambda
        .invoked()
        .into_iter()
        .filter(|i| i.function == "deploy-hook")
        .filter_map(|i| i.payload["executionId"].as_str().map(str::to_owned))
        .next();
    let failure = match hook_said {
        Some(execution) => world.item("APP#checkout", &format!("HOOK#{execution}")).await,
        None => None,
    };
    let reason = failure.as_ref().and_then(|f| f["reason"].as_str()).unwrap_or_default().to_owned();
    check(reason.contains("HTTP 503"), || format!("the hook's recorded failure: {failure:?}"))?;
    stack.say(
        MomentKind::Step,
        format!(
            "the hook answered FAILED ({reason}); ECS rolled back with no production traffic on green: {}",
            deployment["rollback"]["reason"].as_str().unwrap_or("?")
        ),
    );
    let prod = world
        .running_image(&crate::world::ServiceFixture {
            cluster,
            service: "checkout".into(),
            family: String::new(),
            initial_task_definition: String::new(),
        })
        .await;
    check(prod.ends_with(":v0.9.0"), || format!("checkout prod runs {prod}, not blue (v0.9.0)"))?;
    operator(stack, &["status", "checkout"], 0).await?;
    // The whole installation as `conveyor doctor` sees it: no check fails (the services run
    // without the circuit breaker: warnings), the blue/green service has Conveyor's hook.
    let doctor = stack.cli(&["doctor"]).await;
    let fixes: Vec<&str> = doctor.stdout.lines().filter(|l| l.starts_with("- ")).collect();
    let summary = doctor.stdout.lines().last().unwrap_or_default();
    stack.say(
        MomentKind::Command,
        format!(
            "$ conveyor doctor\n  ... one line per check, then what to fix:\n  {}\n  {summary}",
            fixes.first().unwrap_or(&"-")
        ),
    );
    check(doctor.code == 0 && doctor.stdout.contains(" hook "), || {
        format!("conveyor doctor: {}{}", doctor.stdout, doctor.stderr)
    })?;
    Ok(())
}

/// billing's prod service (in the other account).
fn billing_prod(stack: &LocalStack) -> crate::world::ServiceFixture {
    crate::world::ServiceFixture {
        cluster: stack.world.name("prod-b"),
        service: "billing".into(),
        family: stack.world.name("billing-prod-b"),
        initial_task_definition: String::new(),
    }
}

/// What Slack shows for a Block Kit message: the header, then the section text.
pub fn slack_text(message: &Value) -> String {
    let blocks = message["blocks"].as_array().cloned().unwrap_or_default();
    let mut lines = vec!["Slack:".to_owned()];
    for block in blocks {
        let text = block["text"]["text"].as_str().map(str::to_owned).or_else(|| {
            block["elements"]
                .as_array()
                .map(|e| e.iter().filter_map(|x| x["text"].as_str()).collect::<Vec<_>>().join("  ·  "))
        });
        if let Some(text) = text {
            lines.extend(text.lines().map(|l| format!("  │ {}", l.replace('*', ""))));
        }
    }
    lines.join("\n")
}
