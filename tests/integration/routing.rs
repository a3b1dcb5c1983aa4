//! The SAM template's event patterns, installed as rules in the local EventBridge (moto does the
//! matching): the sample events reach the right function, and nothing else does.

use std::collections::HashMap;
use std::time::Duration;

use conveyor_testkit::World;
use serde_json::{json, Value};

/// moto's account: the `account` of every event put locally.
const MOTO_ACCOUNT: &str = "123456789012";

fn sample(name: &str) -> Value {
    let path = conveyor_testkit::repo_root().join(format!("tests/fixtures/events/{name}"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Which rules' queues received each event put on `bus`, keyed by a label.
async fn route(
    world: &World,
    bus: &str,
    queues: &HashMap<String, String>,
    events: Vec<(&str, Value)>,
) -> HashMap<String, Vec<String>> {
    let mut matched: HashMap<String, Vec<String>> = HashMap::new();
    for (label, mut event) in events {
        event["detail"]["label"] = json!(label);
        world.aws.put_events(bus, "us-west-2", &[event]).await;
        matched.insert(label.to_owned(), Vec::new());
    }
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&world.config).region(aws_sdk_sqs::config::Region::new("us-west-2")).build(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (rule, queue) in queues {
        let received = sqs.receive_message().queue_url(queue).max_number_of_messages(10).send().await.unwrap();
        for message in received.messages() {
            let event: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            matched.get_mut(event["detail"]["label"].as_str().unwrap()).unwrap().push(rule.clone());
        }
    }
    matched
}

#[tokio::test]
async fn sample_events_match_the_right_rule_and_nothing_else_matches() {
    let world = World::new().await;
    let parameters = json!({ "StageClusterNames": "default", "ProdClusterNames": "prod", "TaskRoleArns": "arn:aws:iam::111122223333:role/task" });
    let queues = world
        .aws
        .install_rules(
            &world.name("samples"),
            &["EcrPushRule", "EcsDeploymentRule", "AlarmStateRule"],
            parameters,
            "us-west-2",
            MOTO_ACCOUNT,
        )
        .await;

    let mut recovered = sample("cloudwatch-alarm-state-change.json");
    recovered["detail"]["state"]["value"] = json!("OK");
    let mut failure = sample("ecr-image-action-push.json");
    failure["detail"]["result"] = json!("FAILURE");
    // A pause hook awaiting action (no AWS sample ships one: built from a deployment event, as
    // ASSUMPTIONS N16 describes it), and the same hook once answered.
    let mut pause = sample("ecs-deployment-completed.json");
    pause["detail-type"] = json!("ECS Hook State Change");
    pause["detail"] = json!({ "eventName": "HOOK_AWAITING_ACTION", "hookId": "h1", "lifecycleStage": "PRE_PRODUCTION_TRAFFIC_SHIFT" });
    let mut pause_answered = pause.clone();
    pause_answered["detail"]["eventName"] = json!("HOOK_SUCCEEDED");
    let mut other_service = sample("ecs-deployment-completed.json");
    other_service["resources"] = json!(["arn:aws:ecs:us-west-2:111122223333:service/other-cluster/servicetest"]);

    let matched = route(
        &world,
        &world.name("samples"),
        &queues,
        vec![
            ("push", sample("ecr-image-action-push.json")),
            ("completed", sample("ecs-deployment-completed.json")),
            ("failed", sample("ecs-deployment-failed.json")),
            ("in-progress", sample("ecs-deployment-in-progress.json")),
            ("circuit-breaker", sample("ecs-deployment-circuit-breaker-rollback.json")),
            ("delete", sample("ecr-image-action-delete.json")),
            ("push-failure", failure),
            ("other-service", other_service),
            ("schedule", sample("scheduled-sweep.json")),
            ("alarm", sample("cloudwatch-alarm-state-change.json")),
            ("alarm-recovered", recovered),
            ("pause", pause),
            ("pause-answered", pause_answered),
        ],
    )
    .await;

    let expect = |label: &str, rules: &[&str]| assert_eq!(matched[label], rules, "{label}: {matched:?}");
    expect("push", &["EcrPushRule"]);
    // Completions and failures of every service of the account reach the monitor (the apps'
    // config decides which are Conveyor's); IN_PROGRESS events need no action and never do.
    for label in ["completed", "failed", "other-service", "pause"] {
        expect(label, &["EcsDeploymentRule"]);
    }
    // Any alarm of the account entering ALARM (the apps' `alarms` decide which matter); never a recovery.
    expect("alarm", &["AlarmStateRule"]);
    for label in
        ["in-progress", "circuit-breaker", "delete", "push-failure", "schedule", "alarm-recovered", "pause-answered"]
    {
        expect(label, &[]);
    }
}

#[tokio::test]
async fn the_deployment_rule_takes_events_of_this_account_and_the_target_accounts_only() {
    let world = World::new().await;
    let base = json!({ "StageClusterNames": "stage", "ProdClusterNames": "prod", "TaskRoleArns": "r" });
    let alone = world.aws.rule_pattern("EcsDeploymentRule", base.clone(), "111122223333").await;
    assert_eq!(alone["account"], json!(["111122223333"]));
    let mut with_targets = base;
    with_targets["TargetAccountIds"] = json!("210987654321,310987654321");
    let pattern = world.aws.rule_pattern("EcsDeploymentRule", with_targets, "111122223333").await;
    assert_eq!(pattern["account"], json!(["111122223333", "210987654321", "310987654321"]));
    assert_eq!(
        pattern["detail"]["eventName"],
        json!(["SERVICE_DEPLOYMENT_COMPLETED", "SERVICE_DEPLOYMENT_FAILED", "HOOK_AWAITING_ACTION"])
    );
}

#[tokio::test]
async fn a_repository_list_limits_the_push_rule() {
    let world = World::new().await;
    let parameters = json!({ "StageClusterNames": "default", "ProdClusterNames": "prod", "TaskRoleArns": "r", "RepositoryNames": "shop-api,billing" });
    let queues =
        world.aws.install_rules(&world.name("samples"), &["EcrPushRule"], parameters, "us-west-2", MOTO_ACCOUNT).await;
    let push = |repository: &str| {
        let mut event = sample("ecr-image-action-push.json");
        event["detail"]["repository-name"] = json!(repository);
        event
    };
    let matched = route(
        &world,
        &world.name("samples"),
        &queues,
        vec![("listed", push("billing")), ("unlisted", push("my-repository-name"))],
    )
    .await;
    assert_eq!(matched["listed"], ["EcrPushRule"]);
    assert!(matched["unlisted"].is_empty());
}

/// An administrator of a target account who pushes to their own repository and forwards the event
/// gets nothing deployed: the push rule takes only Conveyor's account and the registry accounts it
/// lists. Every event put locally comes from moto's account: here it plays the foreign account
/// (Conveyor being installed in 111122223333), then a registry account Conveyor lists.
#[tokio::test]
async fn a_push_from_another_account_reaches_stage_deploy_only_from_a_listed_registry_account() {
    let world = World::new().await;
    let conveyor = "111122223333";
    let target = json!({ "StageClusterNames": "default", "ProdClusterNames": "prod", "TaskRoleArns": "r",
                         "TargetAccountIds": MOTO_ACCOUNT });
    let mut registry = target.clone();
    registry["RegistryAccountIds"] = json!(MOTO_ACCOUNT);

    for (bus, parameters, expected) in [("target", target, &[][..]), ("registry", registry, &["EcrPushRule"][..])] {
        let bus = world.name(bus);
        let queues = world.aws.install_rules(&bus, &["EcrPushRule"], parameters, "us-west-2", conveyor).await;
        let matched = route(&world, &bus, &queues, vec![("push", sample("ecr-image-action-push.json"))]).await;
        assert_eq!(matched["push"], expected, "a push from {MOTO_ACCOUNT} as a {bus} account");
    }
}
