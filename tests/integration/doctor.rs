//! `conveyor doctor` against the local AWS: a healthy setup passes, and each broken setup fails
//! (or warns) with its fix named. Through the built `conveyor`, as an operator runs it.

use aws_sdk_ecs::types::{
    DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentController, DeploymentControllerType,
};
use conveyor_testkit::world::ServiceFixture;
use conveyor_testkit::World;
use serde_json::{json, Value};

use crate::cli::{cli_env, functions_behind_lambda, run};

/// Turns the deployment circuit breaker on, as a well set-up service has it.
async fn circuit_breaker(world: &World, service: &ServiceFixture) {
    let breaker = DeploymentCircuitBreaker::builder().enable(true).rollback(true).build();
    let configuration = DeploymentConfiguration::builder().deployment_circuit_breaker(breaker).build();
    let update = world.ecs.update_service().cluster(&service.cluster).service(&service.service);
    update.deployment_configuration(configuration).send().await.unwrap();
}

/// The checks of one doctor run that did not pass: `(scope, check, verdict, detail, fix)`.
fn problems(doc: &Value) -> Vec<(String, String, String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] != "pass")
        .map(|c| (text(&c["scope"]), text(&c["check"]), text(&c["verdict"]), text(&c["detail"]), text(&c["fix"])))
        .collect()
}

#[tokio::test]
async fn doctor_passes_a_healthy_setup_and_names_the_fix_for_each_broken_one() {
    let world = World::new().await;
    let (lambda, _) = functions_behind_lambda(&world).await;
    let env = cli_env(&world, &lambda);
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    for service in [&app.stage, &app.prod] {
        circuit_breaker(&world, service).await;
    }
    let config = |extra: Value| {
        let mut config = json!({ "repository": "shop-api", "container": "api", "environments": {
            "stage": { "cluster": app.stage.cluster, "service": "shop-api" },
            "prod": { "cluster": app.prod.cluster, "service": "shop-api" } } });
        json_patch(&mut config, extra);
        config
    };

    let healthy = run(&env, &["doctor", "--json"]).await.ok().json();
    assert_eq!(healthy["healthy"], true, "{healthy:#}");
    assert!(problems(&healthy).is_empty(), "{:#?}", problems(&healthy));
    let checks: Vec<&str> =
        healthy["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    for check in
        ["state_table", "function", "config", "service", "controller", "container", "image", "circuit_breaker", "pull"]
    {
        assert!(checks.contains(&check), "{check} is checked: {checks:?}");
    }
    let text = run(&env, &["doctor", "shop-api"]).await.ok();
    assert!(text.stdout.contains("passed, 0 warned, 0 failed"), "{}", text.stdout);

    // One broken setup after another, each named with what to fix.
    let legacy = world.name("legacy");
    world.ecs.create_cluster().cluster_name(&legacy).send().await.unwrap();
    let code_deploy = DeploymentController::builder().r#type(DeploymentControllerType::CodeDeploy).build().unwrap();
    let create = world.ecs.create_service().cluster(&legacy).service_name("shop-api");
    let create = create.task_definition(&app.prod.initial_task_definition).desired_count(1);
    create.deployment_controller(code_deploy).send().await.unwrap();
    let alarm = world.name("shop-api-5xx");
    let cases = [
        (json!({ "container": "web" }), "container", "fail", "has no container web (it has: api)"),
        (
            json!({ "environments": { "stage": { "service": "shop-apx" } } }),
            "service",
            "fail",
            "no ACTIVE service shop-apx",
        ),
        (
            json!({ "environments": { "prod": { "cluster": legacy } } }),
            "controller",
            "fail",
            "the CODE_DEPLOY deployment controller",
        ),
        (json!({ "environments": { "stage": { "alarms": [alarm] } } }), "alarms", "fail", "no alarm"),
    ];
    for (extra, check, verdict, detail) in cases {
        world.put_app("shop-api", &config(extra.clone())).await;
        let ran = run(&env, &["doctor", "shop-api", "--json"]).await.exits(if verdict == "fail" { 4 } else { 0 });
        let found = problems(&ran.json());
        assert!(
            found.iter().any(|(_, c, v, d, fix)| c == check && v == verdict && d.contains(detail) && !fix.is_empty()),
            "{extra}: {found:#?}"
        );
    }
    world.aws.set_alarm(&alarm, "OK").await;
    world.put_app("shop-api", &config(json!({ "environments": { "stage": { "alarms": [alarm] } } }))).await;
    run(&env, &["doctor", "shop-api"]).await.ok();

    // A service without the circuit breaker warns, naming the rollout timeout that covers it.
    world.seed_app("billing", "billing", false, json!({})).await;
    let ran = run(&env, &["doctor", "billing", "--json"]).await.ok();
    let found = problems(&ran.json());
    assert!(found.iter().all(|(_, c, v, _, _)| c == "circuit_breaker" && v == "warn"), "{found:#?}");
    assert!(
        found[0].3.contains("rollout timeout (30m)") && found[0].4.contains("deploymentCircuitBreaker"),
        "{found:#?}"
    );

    // An invalid config fails its own check; the other apps are still checked.
    world.put_app("cart", &json!({ "repository": "cart" })).await;
    let ran = run(&env, &["doctor", "--json"]).await.exits(4);
    let found = problems(&ran.json());
    assert!(found.iter().any(|(scope, c, v, _, _)| scope == "cart" && c == "config" && v == "fail"), "{found:#?}");
    assert!(ran.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["scope"] == "shop-api" && c["verdict"] == "pass"));

    // The installation: a function that is not there.
    let mut missing = env.clone();
    missing.retain(|(k, _)| k != "CONVEYOR_PROMOTE_FUNCTION");
    missing.push(("CONVEYOR_PROMOTE_FUNCTION".into(), "conveyor-promote-typo".into()));
    let ran = run(&missing, &["doctor", "shop-api", "--json"]).await.exits(4);
    let found = problems(&ran.json());
    assert!(
        found.iter().any(|(s, c, _, d, _)| s == "install" && c == "function" && d.contains("ResourceNotFound")),
        "{found:#?}"
    );
}

/// Merges `patch` into `target`, objects key by key (RFC 7386 without deletions).
fn json_patch(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                json_patch(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// A prod in another account that may not pull the image fails the pull check with the
/// statement to add; allowed, it passes. There, the target-account stack's rule must forward
/// ECS's events to Conveyor's bus: missing, or sending them to another region's bus (deployed
/// without `ConveyorRegion`), it fails with the stack to deploy.
#[tokio::test]
async fn doctor_names_the_repository_policy_a_cross_account_pull_needs() {
    use conveyor_testkit::accounts::{target_role, PROD_ACCOUNT};
    let world = World::new().await;
    let (lambda, _) = functions_behind_lambda(&world).await;
    let env = cli_env(&world, &lambda);
    let account = PROD_ACCOUNT;
    let app = world.seed_app_across("shop-api", "shop-api", account).await;
    let role = target_role(account);
    world.install_forwarding(Some(&role), "us-east-1", "us-east-1").await;
    let ran = run(&env, &["doctor", "shop-api", "--json"]).await.exits(4);
    let found = problems(&ran.json());
    let pull = found.iter().find(|(_, c, _, _, _)| c == "pull").unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(pull.2, "fail");
    assert!(pull.3.contains(&format!("account {account} cannot pull {}", app.repository)), "{pull:?}");
    assert!(pull.4.contains("ecr:BatchGetImage") && pull.4.contains("repository policy"), "{pull:?}");
    assert!(
        found.iter().any(|(_, c, v, _, _)| c == "role" && v == "pass")
            || found.iter().all(|(_, c, _, _, _)| c != "role")
    );
    world.allow_pull(&app.repository, account).await;
    let ran = run(&env, &["doctor", "shop-api", "--json"]).await;
    let found = problems(&ran.json());
    assert!(found.iter().all(|(_, c, _, _, _)| c != "pull" && c != "forwarding"), "{found:#?}");
    let forwarding = |doc: &Value| -> Vec<(String, String, String, String, String)> {
        problems(doc).into_iter().filter(|(_, c, _, _, _)| c == "forwarding").collect()
    };
    assert!(
        ran.json()["checks"].as_array().unwrap().iter().any(|c| c["check"] == "forwarding"
            && c["scope"] == format!("account {account} us-east-1")
            && c["verdict"] == "pass"),
        "{:#}",
        ran.json()
    );

    // Prod in a region of that account where the stack was not deployed (no other test uses it).
    let region = "ap-northeast-1";
    let target = |s: &ServiceFixture| json!({ "cluster": s.cluster, "service": "shop-api" });
    let mut prod = target(&app.prod);
    (prod["role_arn"], prod["region"]) = (json!(role), json!(region));
    let environments = json!({ "stage": target(&app.stage), "prod": prod });
    world
        .put_app("shop-api", &json!({ "repository": app.repository, "container": "api", "environments": environments }))
        .await;
    let found = forwarding(&run(&env, &["doctor", "shop-api", "--json"]).await.exits(4).json());
    assert_eq!(found.len(), 1, "{found:#?}");
    let (scope, _, verdict, detail, fix) = &found[0];
    assert_eq!((scope.as_str(), verdict.as_str()), (format!("account {account} {region}").as_str(), "fail"));
    assert!(detail.starts_with("no rule conveyor-conveyor-deployments"), "{detail}");
    assert!(fix.contains(&format!("infra/target-account.yaml in account {account}, region {region}")), "{fix}");
    // Deployed there without ConveyorRegion: its events go to that region's bus, not Conveyor's.
    world.install_forwarding(Some(&role), region, region).await;
    let found = forwarding(&run(&env, &["doctor", "shop-api", "--json"]).await.exits(4).json());
    assert!(found[0].3.contains("event-bus/default, not to Conveyor's bus"), "{found:#?}");
    assert!(found[0].4.contains("ConveyorRegion=us-east-1"), "{found:#?}");
}
