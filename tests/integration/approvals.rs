//! Approvals (contract, *Pipelines*, Approvals) through the real binaries: the `conveyor` CLI,
//! run as two people (two access keys, two identities in the local STS), invokes the real promote
//! function, which learns who asks from an identity proof STS checks — never from the payload.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use conveyor_testkit::lambda_api::LambdaApi;
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::principals::act_as;
use conveyor_testkit::world::{digest, ServiceFixture};
use conveyor_testkit::{functions, World};
use serde_json::{json, Value};

use crate::cli::{cli_env, functions_behind_lambda, run, Ran};
use crate::support::{conveyor, invocation};

/// moto's STS: the operator's key is moto's default user; another person's key is an IAM user of
/// their name (`tests/localaws/moto_launcher.py`).
const OPERATOR: &str = "arn:aws:sts::123456789012:user/moto";
const APPROVER: &str = "arn:aws:iam::123456789012:user/approver";

/// stage → prod, prod with `approval` (and `extra`), behind the local Lambda Invoke API.
struct Scene {
    world: World,
    lambda: LambdaApi,
    stage: ServiceFixture,
    prod: ServiceFixture,
}

impl Scene {
    async fn new(extra: Value) -> Scene {
        let world = World::new().await;
        let mut prod = json!({ "from": "stage", "approval": true });
        prod.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let [stage, prod]: [ServiceFixture; 2] =
            world.seed_pipeline("shop-api", &[("stage", json!({})), ("prod", prod)]).await.try_into().unwrap();
        let (lambda, _) = functions_behind_lambda(&world).await;
        Scene { world, lambda, stage, prod }
    }

    /// The CLI run by `who` (a principal of the test: `operator`, `approver`, ...).
    async fn cli(&self, who: &str, args: &[&str]) -> Ran {
        run(&act_as(&cli_env(&self.world, &self.lambda), who), args).await
    }

    /// Pushes `tag` (digest `n`) and lets stage verify it.
    async fn vet(&self, tag: &str, n: u32) {
        let event = self.world.push_event("shop-api", tag, &digest(n), Utc::now() - chrono::Duration::minutes(5));
        conveyor(&self.world).stage(event, &invocation()).await.unwrap();
        self.settle(&self.stage, Settle::Complete).await;
    }

    async fn settle(&self, service: &ServiceFixture, outcome: Settle) -> Value {
        let events = self.world.aws.settle(&service.cluster, &service.service, outcome).await;
        serde_json::to_value(conveyor(&self.world).monitor(events[0].clone(), &invocation()).await.unwrap()).unwrap()
    }

    async fn outcomes(&self) -> Vec<(String, Value)> {
        self.world
            .notifications()
            .await
            .into_iter()
            .map(|n| (n["MessageAttributes"]["outcome"].as_str().unwrap().to_owned(), n["Message"].clone()))
            .collect()
    }
}

fn json_of(ran: &Ran) -> Value {
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {ran:?}"))
}

#[tokio::test]
async fn a_promotion_waits_for_a_second_person_and_the_requester_cannot_approve_it() {
    let scene = Scene::new(json!({})).await;
    scene.vet("v1.0.0", 1).await;
    scene.world.notifications().await;

    let asked = scene.cli("operator", &["promote", "shop-api", "v1.0.0", "--to", "prod", "--json"]).await;
    assert_eq!(asked.code, 0, "{asked:?}");
    let asked = json_of(&asked);
    assert_eq!((asked["status"].as_str(), asked["requested_by"].as_str()), (Some("awaiting_approval"), Some(OPERATOR)));
    let id = asked["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(scene.world.revisions(&scene.prod.family).await.len(), 1, "nothing changes before the approval");
    let outcomes = scene.outcomes().await;
    assert_eq!(outcomes.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["approval_requested"]);
    let description = outcomes[0].1["content"]["description"].as_str().unwrap();
    assert!(description.contains(&format!("conveyor approve shop-api --to prod --id {id}")), "{description}");
    assert_eq!(outcomes[0].1["metadata"]["additionalContext"]["severity"], "warning");

    // The same request again (a retry) changes nothing and announces nothing.
    let again = json_of(&scene.cli("operator", &["promote", "shop-api", "v1.0.0", "--to", "prod", "--json"]).await);
    assert_eq!(again["approval_id"], id.as_str());

    let own = scene.cli("operator", &["approve", "shop-api", "--to", "prod"]).await;
    assert_eq!(own.code, 1, "{own:?}");
    assert!(own.stderr.contains("NotAllowed") && own.stderr.contains("cannot approve it"), "{own:?}");

    let approved = scene.cli("approver", &["approve", "shop-api", "--to", "prod", "--id", &id, "--json"]).await;
    assert_eq!(approved.code, 0, "{approved:?}");
    let approved = json_of(&approved);
    assert_eq!(
        (approved["status"].as_str(), approved["requested_by"].as_str(), approved["approved_by"].as_str()),
        (Some("deploying"), Some(OPERATOR), Some(APPROVER))
    );
    assert_eq!(scene.world.running_image(&scene.prod).await, scene.world.running_image(&scene.stage).await);
    let outcomes = scene.outcomes().await;
    assert_eq!(outcomes.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["approved", "promoted"]);
    let promoted = &outcomes[1].1["metadata"]["additionalContext"];
    assert_eq!((promoted["requested_by"].as_str(), promoted["approved_by"].as_str()), (Some(OPERATOR), Some(APPROVER)));

    let history = scene.world.history("shop-api").await;
    let events: Vec<(&str, Option<&str>)> = history
        .iter()
        .filter(|e| e["environment"] == "prod")
        .map(|e| (e["event"].as_str().unwrap(), e["approved_by"].as_str()))
        .collect();
    assert_eq!(events, [("approval_requested", None), ("promoted", Some(APPROVER))]);

    // Decided: there is nothing left to approve.
    let late = scene.cli("approver", &["approve", "shop-api", "--to", "prod"]).await;
    assert_eq!(late.code, 1, "{late:?}");
    assert!(late.stderr.contains("awaits approval"), "{late:?}");
}

#[tokio::test]
async fn without_a_proof_of_identity_nobody_requests_or_decides_an_approval() {
    let scene = Scene::new(json!({})).await;
    scene.vet("v1.0.0", 1).await;
    let promote = functions::promote(&scene.world).await;

    // A payload naming someone proves nothing: the request must carry a proof STS checks.
    let (error_type, message) = promote
        .invoke(json!({ "app": "shop-api", "tag": "v1.0.0", "to": "prod", "requested_by": APPROVER }))
        .await
        .error();
    assert_eq!(error_type, "NotAllowed", "{message}");
    assert!(message.contains("identity proof"), "{message}");
    let asked = json_of(&scene.cli("operator", &["promote", "shop-api", "v1.0.0", "--to", "prod", "--json"]).await);
    assert_eq!(asked["status"], "awaiting_approval");

    let (error_type, message) =
        promote.invoke(json!({ "operation": "approve", "app": "shop-api", "environment": "prod" })).await.error();
    assert_eq!(error_type, "NotAllowed", "{message}");
    // A proof made for another request (here: a promotion) approves nothing.
    let forged = json!({ "operation": "approve", "app": "shop-api", "environment": "prod",
        "identity": { "headers": {
            "authorization": "AWS4-HMAC-SHA256 Credential=approver@x/20261203/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date;x-conveyor-request, Signature=00",
            "x-amz-date": "20261203T000000Z",
            "x-conveyor-request": conveyor::identity::binding(&json!({ "app": "shop-api", "tag": "v1.0.0" })) } } });
    let (error_type, message) = promote.invoke(forged).await.error();
    assert_eq!(error_type, "NotAllowed", "{message}");
    assert!(message.contains("not this request's"), "{message}");
    assert_eq!(scene.world.revisions(&scene.prod.family).await.len(), 1);
    assert_eq!(scene.world.record("shop-api", "prod").await.unwrap()["approval"]["state"], "pending");
}

#[tokio::test]
async fn approvers_restrict_who_may_approve() {
    let scene = Scene::new(json!({ "approvers": ["arn:aws:iam::123456789012:user/release-*"] })).await;
    scene.vet("v1.0.0", 1).await;
    scene.cli("operator", &["promote", "shop-api", "v1.0.0", "--to", "prod"]).await;
    let refused = scene.cli("approver", &["approve", "shop-api"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("not among this environment's approvers"), "{refused:?}");
    let approved = scene.cli("release-manager", &["approve", "shop-api", "--json"]).await;
    assert_eq!(json_of(&approved)["approved_by"], "arn:aws:iam::123456789012:user/release-manager", "{approved:?}");
}

#[tokio::test]
async fn a_newer_promotion_supersedes_the_pending_one_and_a_rejection_ends_it() {
    let scene = Scene::new(json!({})).await;
    scene.vet("v1.0.0", 1).await;
    scene.vet("v1.1.0", 2).await;
    let first = json_of(&scene.cli("operator", &["promote", "shop-api", "v1.0.0", "--to", "prod", "--json"]).await);
    let second = json_of(&scene.cli("operator", &["promote", "shop-api", "v1.1.0", "--to", "prod", "--json"]).await);
    let (first, second) = (first["approval_id"].as_str().unwrap(), second["approval_id"].as_str().unwrap());
    assert_ne!(first, second);

    let stale = scene.cli("approver", &["approve", "shop-api", "--id", first]).await;
    assert_eq!(stale.code, 1, "{stale:?}");
    assert!(stale.stderr.contains(&format!("approval {first} is no longer pending")), "{stale:?}");

    let rejected = scene.cli("approver", &["reject", "shop-api", "--reason", "freeze until Monday", "--json"]).await;
    assert_eq!(rejected.code, 0, "{rejected:?}");
    let rejected = json_of(&rejected);
    assert_eq!((rejected["status"].as_str(), rejected["approval_id"].as_str()), (Some("rejected"), Some(second)));
    assert_eq!(rejected["rejected_by"], APPROVER);
    assert_eq!(scene.world.revisions(&scene.prod.family).await.len(), 1, "prod never changed");
    let outcomes: Vec<String> = scene.outcomes().await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "approval_requested").count(), 2, "{outcomes:?}");
    assert_eq!(outcomes.last().map(String::as_str), Some("rejected"), "{outcomes:?}");
    let gone = scene.cli("approver", &["approve", "shop-api"]).await;
    assert!(gone.stderr.contains("ended rejected") && gone.stderr.contains("freeze until Monday"), "{gone:?}");
}

#[tokio::test]
async fn an_approval_nobody_gives_expires_at_the_sweep() {
    let scene = Scene::new(json!({ "approval_timeout": "1h" })).await;
    scene.vet("v1.0.0", 1).await;
    scene.cli("operator", &["promote", "shop-api", "v1.0.0", "--to", "prod"]).await;
    let pending = scene.world.record("shop-api", "prod").await.unwrap();
    assert_eq!(pending["approval"]["state"], "pending");
    let monitor = functions::deploy_monitor(&scene.world, Duration::from_secs(2)).await;
    monitor.invoke(scene.world.schedule_event()).await.response();
    assert_eq!(scene.world.record("shop-api", "prod").await.unwrap()["approval"]["state"], "pending", "not yet");

    // An hour later (the clock moved by the harness: the request's expiry set in the past).
    let past = (Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    scene
        .world
        .dynamodb
        .update_item()
        .table_name(&scene.world.table)
        .key("pk", AttributeValue::S("APP#shop-api".into()))
        .key("sk", AttributeValue::S("ENV#prod".into()))
        .update_expression("SET #state.#approval.expires_at = :past")
        .expression_attribute_names("#state", "state")
        .expression_attribute_names("#approval", "approval")
        .expression_attribute_values(":past", AttributeValue::S(past))
        .send()
        .await
        .unwrap();
    scene.world.notifications().await;
    let report = monitor.invoke(scene.world.schedule_event()).await.response();
    assert!(report["results"].as_array().unwrap().iter().any(|r| r["detail"] == "approval expired"), "{report}");
    let outcomes: Vec<String> = scene.outcomes().await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(outcomes, ["approval_expired"]);
    monitor.invoke(scene.world.schedule_event()).await.response();
    assert!(scene.outcomes().await.is_empty(), "expired once");
    let late = scene.cli("approver", &["approve", "shop-api"]).await;
    assert!(late.stderr.contains("ended approval_expired"), "{late:?}");
}

#[tokio::test]
async fn promote_wait_follows_the_promotion_through_its_approval() {
    let scene = Scene::new(json!({})).await;
    scene.vet("v1.0.0", 1).await;
    let env = act_as(&cli_env(&scene.world, &scene.lambda), "operator");
    let waiting = tokio::spawn(async move {
        run(&env, &["promote", "shop-api", "v1.0.0", "--to", "prod", "--wait", "--timeout", "60s", "--json"]).await
    });
    // Approved once the request exists; then the rollout completes.
    for _ in 0..100 {
        if scene.world.record("shop-api", "prod").await.is_some_and(|r| r["approval"]["state"] == "pending") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let approved = scene.cli("approver", &["approve", "shop-api", "--to", "prod"]).await;
    assert_eq!(approved.code, 0, "{approved:?}");
    let report = scene.settle(&scene.prod, Settle::Complete).await;
    assert_eq!(report["results"][0]["action"], "verified", "{report}");
    let waited = waiting.await.unwrap();
    assert_eq!(waited.code, 0, "{waited:?}");
    let waited = json_of(&waited);
    assert_eq!(
        (waited["wait"]["outcome"].as_str(), waited["approved_by"].as_str()),
        (Some("verified"), Some(APPROVER))
    );
}

#[tokio::test]
async fn an_auto_promotion_into_an_environment_with_approval_waits_and_asks_once() {
    let world = World::new().await;
    let [dev, stage]: [ServiceFixture; 2] = world
        .seed_pipeline(
            "shop-api",
            &[("dev", json!({})), ("stage", json!({ "from": "dev", "promotion": "auto", "approval": true }))],
        )
        .await
        .try_into()
        .unwrap();
    let (lambda, _) = functions_behind_lambda(&world).await;
    let monitor = functions::deploy_monitor(&world, Duration::from_secs(2)).await;
    let event = world.push_event("shop-api", "v1.0.0", &digest(1), Utc::now() - chrono::Duration::minutes(5));
    conveyor(&world).stage(event, &invocation()).await.unwrap();
    let events = world.aws.settle(&dev.cluster, &dev.service, Settle::Complete).await;
    let report = monitor.invoke(events[0].clone()).await.response();
    assert!(
        report["results"].as_array().unwrap().iter().any(|r| r["environment"] == "stage" && r["action"] == "waiting"),
        "{report}"
    );
    monitor.invoke(world.schedule_event()).await.response();
    monitor.invoke(world.schedule_event()).await.response();
    let requested: Vec<Value> = world
        .notifications()
        .await
        .into_iter()
        .filter(|n| n["MessageAttributes"]["outcome"] == "approval_requested")
        .collect();
    assert_eq!(requested.len(), 1, "asked once, whatever the sweeps: {requested:#?}");
    assert_eq!(requested[0]["Message"]["metadata"]["additionalContext"]["requested_by"], "conveyor");
    assert_eq!(world.revisions(&stage.family).await.len(), 1);

    let approved = run(&act_as(&cli_env(&world, &lambda), "approver"), &["approve", "shop-api", "--json"]).await;
    assert_eq!(approved.code, 0, "{approved:?}");
    assert_eq!(world.running_image(&stage).await, world.running_image(&dev).await);
}
