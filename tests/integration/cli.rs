//! The `conveyor` CLI, the built binary run as a process against the local AWS: the state table,
//! ECS and SSM in moto, and the real promote and stage-deploy binaries behind a local Lambda
//! Invoke API (`AWS_ENDPOINT_URL_LAMBDA`). Exit codes, `--json` shapes and the text people read
//! (insta snapshots, with times, digests, ARNs and ids redacted).

use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::Utc;
use conveyor::vocabulary::Action;
use conveyor_testkit::function::binary;
use conveyor_testkit::lambda_api::LambdaApi;
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::{digest, AppFixture, ServiceFixture};
use conveyor_testkit::{functions, Function, World};
use regex::Regex;
use serde_json::{json, Value};

use crate::support::{conveyor, invocation};

/// The identity moto's STS gives the operator's credentials: who promotes, pauses and resumes, as
/// the functions learn it from the CLI's identity proof.
const CALLER: &str = "arn:aws:sts::123456789012:user/moto";

/// A payload the CLI sent, its identity proof checked to be there and taken out.
#[track_caller]
fn without_proof(payload: &Value) -> Value {
    let mut payload = payload.clone();
    let proof = payload.as_object_mut().and_then(|p| p.remove("identity"));
    assert!(proof.is_some_and(|p| p["headers"]["x-conveyor-request"].is_string()), "no identity proof: {payload}");
    payload
}

/// A local AWS slice with the promote and stage-deploy functions behind a Lambda Invoke API.
struct Setup {
    world: World,
    lambda: LambdaApi,
    promote: Arc<Function>,
}

/// The promote and stage-deploy functions of `world` behind a local Lambda Invoke API (and the
/// promote function, to set scenes with).
pub async fn functions_behind_lambda(world: &World) -> (LambdaApi, Arc<Function>) {
    let lambda = LambdaApi::start().await;
    let promote = Arc::new(functions::promote(world).await);
    lambda.add("promote", promote.clone());
    lambda.add("stage-deploy", Arc::new(functions::stage_deploy(world).await));
    (lambda, promote)
}

/// The CLI's environment: the world's names, the local AWS, the local Lambda endpoint.
pub fn cli_env(world: &World, lambda: &LambdaApi) -> Vec<(String, String)> {
    let mut env = world.operator_env();
    env.push(("CONVEYOR_PROMOTE_FUNCTION".into(), "promote".into()));
    env.push(("CONVEYOR_STAGE_DEPLOY_FUNCTION".into(), "stage-deploy".into()));
    env.push(("AWS_ENDPOINT_URL_LAMBDA".into(), lambda.url()));
    env
}

impl Setup {
    async fn new() -> Setup {
        let world = World::new().await;
        let (lambda, promote) = functions_behind_lambda(&world).await;
        Setup { world, lambda, promote }
    }

    fn env(&self) -> Vec<(String, String)> {
        cli_env(&self.world, &self.lambda)
    }

    async fn run(&self, args: &[&str]) -> Ran {
        run(&self.env(), args).await
    }

    fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        command(&self.env(), args).spawn().unwrap()
    }

    /// Pushes `tag` (digest `n`, pushed `hours_ago`) to stage and lets the monitor verify it.
    async fn vet(&self, app: &AppFixture, tag: &str, n: u32, hours_ago: i64) {
        self.push(app, tag, n, hours_ago).await;
        settle(&self.world, &app.stage, Settle::Complete, Action::Verified).await;
    }

    async fn push(&self, app: &AppFixture, tag: &str, n: u32, hours_ago: i64) {
        let time = Utc::now() - chrono::Duration::hours(hours_ago);
        let event = self.world.push_event(&app.repository, tag, &digest(n), time);
        conveyor(&self.world).stage(event, &invocation()).await.unwrap();
    }

    /// Promotes through the promote binary directly (setting the scene, not testing the CLI).
    async fn promote(&self, payload: Value) -> Value {
        self.promote.invoke(payload).await.response()
    }
}

/// Settles the service's primary deployment and hands the event to the monitor.
async fn settle(world: &World, service: &ServiceFixture, outcome: Settle, expected: Action) {
    let events = world.aws.settle(&service.cluster, &service.service, outcome).await;
    let report = conveyor(world).monitor(events[0].clone(), &invocation()).await.unwrap();
    assert_eq!(report.results[0].action, expected, "{report:?}");
}

/// What a run of the CLI left.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub(crate) fn ok(self) -> Ran {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    #[track_caller]
    pub(crate) fn exits(self, code: i32) -> Ran {
        assert_eq!(self.code, code, "{self:?}");
        self
    }
}

fn command(env: &[(String, String)], args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary("conveyor"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the built `conveyor` with only `env` (and `PATH`).
pub async fn run(env: &[(String, String)], args: &[&str]) -> Ran {
    let output = command(env, args).output().await.unwrap();
    finished(output)
}

fn finished(output: std::process::Output) -> Ran {
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

static REDACTIONS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r#"arn:aws:[a-z0-9-]+:[a-z0-9-]*:[0-9]*:[^\s,;)\]`"]+"#, "[arn]"),
        (r"sha256:[0-9a-f]{12,64}", "sha256:[digest]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", "[time]"),
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "[time]"),
        (r"ecs-svc/\d+", "ecs-svc/[n]"),
        (r"\d{8}T\d{9}-[0-9a-f]{8}", "[rollout]"),
        (r"t\d+x\d+z", "[id]"),
        (r"\b\d{10}\b", "[epoch]"),
        (r"\b\d+(s|m\d{2}s|h\d{2}m|d\d{2}h)\b", "[dur]"),
    ]
    .into_iter()
    .map(|(pattern, with)| (Regex::new(pattern).unwrap(), with))
    .collect()
});

/// Text with what changes from run to run redacted, and table columns re-spaced (widths follow
/// the redacted values).
fn stable(text: &str) -> String {
    let mut text = text.to_owned();
    for (pattern, with) in REDACTIONS.iter() {
        text = pattern.replace_all(&text, *with).into_owned();
    }
    static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"  +").unwrap());
    text.lines().map(|line| SPACES.replace_all(line.trim_end(), "  ").into_owned()).collect::<Vec<_>>().join("\n")
}

/// A JSON document with times, digests, ARNs, ids and durations redacted.
fn stable_json(value: &Value) -> String {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if key.ends_with("seconds") && value.is_number() {
                        *value = json!("[seconds]");
                    } else {
                        walk(value);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = value.clone();
    walk(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap();
    for (pattern, with) in REDACTIONS.iter().filter(|(_, with)| *with != "[dur]") {
        text = pattern.replace_all(&text, *with).into_owned();
    }
    text
}

/// shop-api: v1.0.0 verified in stage and prod; v1.1.0 verified in stage, rolled back in prod;
/// v1.2.0 rolling out in stage. Promotions by ana, with reasons.
async fn story(setup: &Setup) -> AppFixture {
    let app = setup.world.seed_app("shop-api", "shop-api", false, json!({})).await;
    setup.vet(&app, "v1.0.0", 1, 5).await;
    let ana = "arn:aws:sts::123456789012:assumed-role/dev/ana";
    setup.promote(json!({ "app": "shop-api", "tag": "v1.0.0", "requested_by": ana, "reason": "first release" })).await;
    settle(&setup.world, &app.prod, Settle::Complete, Action::Verified).await;
    setup.vet(&app, "v1.1.0", 2, 3).await;
    setup.promote(json!({ "app": "shop-api", "tag": "v1.1.0", "requested_by": ana, "reason": "checkout v2" })).await;
    settle(&setup.world, &app.prod, Settle::Fail { circuit_breaker_rollback: false }, Action::RolledBack).await;
    setup.push(&app, "v1.2.0", 3, 1).await;
    app
}

#[tokio::test]
async fn status_and_history_show_what_runs_where_and_what_happened() {
    let setup = Setup::new().await;
    story(&setup).await;
    setup.world.put_app("broken", &json!({ "repository": "shop-api" })).await;

    let status = setup.run(&["status"]).await.ok();
    insta::assert_snapshot!("status", stable(&status.stdout));
    assert!(!status.stderr.contains("ERROR"), "the library's log lines without -v: {}", status.stderr);
    let status = setup.run(&["status", "shop-api", "--json"]).await.ok();
    let doc = status.json();
    let prod = &doc["apps"][0]["environments"][1];
    assert_eq!(prod["running"]["tag"], "v1.0.0", "prod went back to v1.0.0: {doc}");
    assert_eq!(prod["running"]["digest"], digest(1));
    assert_eq!(prod["rollout"]["state"], "rolled_back");
    assert_eq!(doc["apps"][0]["environments"][0]["rollout"]["state"], "in_progress");
    let promotable: Vec<&str> =
        doc["apps"][0]["promotable"].as_array().unwrap().iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(promotable, ["v1.0.0"], "v1.1.0 failed in prod, v1.2.0 is not verified");
    insta::assert_snapshot!("status_json", stable_json(&doc));

    let history = setup.run(&["history", "shop-api"]).await.ok();
    insta::assert_snapshot!("history", stable(&history.stdout));
    let history = setup.run(&["history", "shop-api", "--env", "prod", "--limit", "2", "--json"]).await.ok();
    let doc = history.json();
    let events: Vec<&str> = doc["entries"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["rolled_back", "promoted"], "{doc}");
    assert_eq!(doc["entries"][1]["requested_by"], Value::Null, "a name in the request is not an identity");
    assert_eq!(doc["entries"][1]["on_behalf_of"], "arn:aws:sts::123456789012:assumed-role/dev/ana");
    assert_eq!(doc["entries"][1]["reason"], "checkout v2");
    insta::assert_snapshot!("history_json", stable_json(&doc));

    let unknown = setup.run(&["status", "shop-web", "--json"]).await.exits(1);
    assert_eq!(unknown.json()["error"]["type"], "UnknownApp");
    let invalid = setup.run(&["status", "broken"]).await.exits(4);
    assert!(invalid.stderr.contains("`container`: missing required key"), "{invalid:?}");
    setup.run(&["history", "Shop API"]).await.exits(1);
    // An app neither configured nor with a history is unknown, as for status; a limit of 0 is no
    // limit anyone means.
    for args in [&["history", "shop-web", "--json"][..], &["metrics", "shop-web", "--json"]] {
        let unknown = setup.run(args).await.exits(1);
        assert_eq!(unknown.json()["error"]["type"], "UnknownApp", "{args:?}: {unknown:?}");
    }
    let zero = setup.run(&["history", "shop-api", "--limit", "0", "--json"]).await.exits(1);
    assert_eq!(zero.json()["error"]["type"], "InvalidInput", "{zero:?}");
}

#[tokio::test]
async fn promote_goes_through_the_lambda_invoke_api_as_the_caller() {
    let setup = Setup::new().await;
    let app = setup.world.seed_app("shop-api", "shop-api", false, json!({})).await;
    setup.vet(&app, "v1.0.0", 1, 2).await;
    setup.push(&app, "v1.1.0", 2, 1).await; // never verified
    let revisions = setup.world.revisions(&app.prod.family).await.len();

    let dry = setup.run(&["promote", "shop-api", "v1.0.0", "--dry-run"]).await.ok();
    insta::assert_snapshot!("promote_dry_run", stable(&dry.stdout));
    let dry = setup.run(&["promote", "shop-api", "v1.0.0", "--dry-run", "--json"]).await.ok();
    insta::assert_snapshot!("promote_dry_run_json", stable_json(&dry.json()));
    assert_eq!(setup.world.revisions(&app.prod.family).await.len(), revisions, "a dry run changes nothing");

    let promoted = setup.run(&["promote", "shop-api", "v1.0.0", "--reason", "release 1.0", "--json"]).await.ok();
    let doc = promoted.json();
    assert_eq!((doc["status"].as_str(), doc["digest"].as_str()), (Some("deploying"), Some(digest(1).as_str())));
    assert_eq!(doc["requested_by"], CALLER);
    insta::assert_snapshot!("promote_json", stable_json(&doc));
    assert!(setup.world.running_image(&app.prod).await.ends_with(&digest(1)));
    // It went through the Lambda Invoke API, as the caller, with the reason.
    let invoked = setup.lambda.invoked();
    let last = invoked.last().unwrap();
    assert_eq!((last.function.as_str(), last.invocation_type.as_str()), ("promote", "RequestResponse"));
    assert_eq!(
        without_proof(&last.payload),
        json!({ "app": "shop-api", "tag": "v1.0.0", "dry_run": false, "force": false, "reason": "release 1.0" })
    );
    let again = setup.run(&["promote", "shop-api", "--digest", &digest(1)]).await.ok();
    assert!(again.stdout.contains("prod already runs shop-api v1.0.0"), "{again:?}");

    // Refusals are the function's errors, by errorType.
    let refused = setup.run(&["promote", "shop-api", "v1.1.0", "--json"]).await.exits(1);
    assert_eq!(refused.json()["error"]["type"], "NotVetted");
    insta::assert_snapshot!("promote_refused_json", stable_json(&refused.json()));
    let refused = setup.run(&["promote", "shop-api", "v1.1.0"]).await.exits(1);
    assert!(refused.stderr.starts_with("conveyor: NotVetted: shop-api v1.1.0"), "{refused:?}");
    let unknown = setup.run(&["promote", "shop-web", "v1.0.0", "--json"]).await.exits(1);
    assert_eq!(unknown.json()["error"]["type"], "UnknownApp");
    let invalid = setup.run(&["promote", "shop-api", "--digest", "sha256:nope", "--json"]).await.exits(1);
    assert_eq!(invalid.json()["error"]["type"], "InvalidRequest");
    // No such function: an AWS error.
    let mut env = setup.env();
    env.push(("CONVEYOR_PROMOTE_FUNCTION".into(), "nope".into()));
    let missing = run(&env, &["promote", "shop-api", "v1.0.0"]).await.exits(4);
    assert!(missing.stderr.contains("ResourceNotFoundException"), "{missing:?}");
    let env: Vec<_> = setup.env().into_iter().filter(|(k, _)| k != "CONVEYOR_PROMOTE_FUNCTION").collect();
    let unnamed = run(&env, &["promote", "shop-api", "v1.0.0", "--json"]).await.exits(4);
    assert!(unnamed.json()["error"]["message"].as_str().unwrap().contains("CONVEYOR_PROMOTE_FUNCTION"));
}

/// Starts `conveyor ... --wait` and waits until prod has the rollout it started.
async fn waiting(setup: &Setup, args: &[&str], tag: &str) -> tokio::process::Child {
    let child = setup.spawn(args);
    for _ in 0..200 {
        let record = setup.world.record("shop-api", "prod").await;
        let rollout = record.as_ref().map(|r| &r["rollout"]);
        if rollout.is_some_and(|r| r["tag"] == tag && r["state"]["kind"] == "in_progress") {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("conveyor {args:?} started no rollout of {tag}: {:?}", finished(child.wait_with_output().await.unwrap()));
}

#[tokio::test]
async fn promote_wait_ends_verified_rolled_back_or_timed_out() {
    let setup = Setup::new().await;
    let app = setup.world.seed_app("shop-api", "shop-api", false, json!({})).await;
    setup.vet(&app, "v1.0.0", 1, 3).await;
    setup.vet(&app, "v1.1.0", 2, 2).await;
    setup.vet(&app, "v1.2.0", 3, 1).await;

    let child = waiting(&setup, &["promote", "shop-api", "v1.0.0", "--wait"], "v1.0.0").await;
    settle(&setup.world, &app.prod, Settle::Complete, Action::Verified).await;
    let verified = finished(child.wait_with_output().await.unwrap()).ok();
    assert!(verified.stdout.lines().last().unwrap().starts_with("verified after"), "{verified:?}");
    assert!(verified.stderr.contains("shop-api prod v1.0.0"), "progress on stderr: {verified:?}");
    insta::assert_snapshot!("promote_wait_verified", stable(&verified.stdout));

    let child = waiting(&setup, &["promote", "shop-api", "v1.1.0", "--wait", "--json"], "v1.1.0").await;
    settle(&setup.world, &app.prod, Settle::Fail { circuit_breaker_rollback: false }, Action::RolledBack).await;
    let rolled_back = finished(child.wait_with_output().await.unwrap()).exits(2);
    let doc = rolled_back.json();
    assert_eq!(doc["wait"]["outcome"], "rolled_back");
    assert!(doc["wait"]["reason"].as_str().unwrap().contains("failed"), "{doc}");
    insta::assert_snapshot!("promote_wait_rolled_back_json", stable_json(&doc));

    let timed_out = setup.run(&["promote", "shop-api", "v1.2.0", "--wait", "--timeout", "2s"]).await.exits(3);
    assert!(timed_out.stdout.contains("timed_out after"), "{timed_out:?}");
}

/// A pipeline pushes, then gates on stage: `conveyor wait` started before the push reaches
/// Conveyor follows it to its verdict.
#[tokio::test]
async fn wait_gates_a_pipeline_on_the_stage_verification_of_a_push() {
    let setup = Setup::new().await;
    let app = setup.world.seed_app("shop-api", "shop-api", false, json!({})).await;

    let child = setup.spawn(&["wait", "shop-api", "v1.0.0", "--json"]);
    setup.push(&app, "v1.0.0", 1, 2).await;
    settle(&setup.world, &app.stage, Settle::Complete, Action::Verified).await;
    let doc = finished(child.wait_with_output().await.unwrap()).ok().json();
    assert_eq!((doc["environment"].as_str(), doc["wait"]["outcome"].as_str()), (Some("stage"), Some("verified")));
    assert_eq!(doc["digest"], digest(1));
    // Verified already: the answer is immediate, by digest too, and in any environment named.
    let again = setup.run(&["wait", "shop-api", "--digest", &digest(1), "--env", "stage"]).await.ok();
    assert!(again.stdout.starts_with("verified after 0s: shop-api stage"), "{again:?}");

    let child = setup.spawn(&["wait", "shop-api", "v1.1.0"]);
    setup.push(&app, "v1.1.0", 2, 1).await;
    settle(&setup.world, &app.stage, Settle::Fail { circuit_breaker_rollback: false }, Action::RolledBack).await;
    let rolled_back = finished(child.wait_with_output().await.unwrap()).exits(2);
    assert!(rolled_back.stdout.starts_with("rolled_back after"), "{rolled_back:?}");
    assert!(rolled_back.stderr.contains("shop-api stage v1.1.0"), "progress on stderr: {rolled_back:?}");

    let never = setup.run(&["wait", "shop-api", "v9.9.9", "--timeout", "2s", "--json"]).await.exits(3);
    assert_eq!(never.json()["wait"]["outcome"], "timed_out");
    assert!(never.json()["wait"]["reason"].as_str().unwrap().starts_with("not rolled out yet"), "{never:?}");
    let nowhere = setup.run(&["wait", "shop-api", "v1.0.0", "--env", "qa", "--json"]).await.exits(1);
    assert!(nowhere.json()["error"]["message"].as_str().unwrap().contains("has no environment qa"), "{nowhere:?}");
    setup.run(&["wait", "shop-web", "v1.0.0"]).await.exits(1);
}

#[tokio::test]
async fn rollback_goes_back_to_the_verified_prod_release_before_the_current_one() {
    let setup = Setup::new().await;
    let app = setup.world.seed_app("shop-api", "shop-api", false, json!({})).await;
    setup.vet(&app, "v1.0.0", 1, 3).await;
    setup.vet(&app, "v1.1.0", 2, 2).await;
    setup.promote(json!({ "app": "shop-api", "tag": "v1.0.0" })).await;
    settle(&setup.world, &app.prod, Settle::Complete, Action::Verified).await;

    // One release in prod: nothing before it.
    let nothing = setup.run(&["rollback", "shop-api", "--json"]).await.exits(1);
    assert_eq!(nothing.json()["error"]["type"], "NothingToRollBackTo");

    setup.promote(json!({ "app": "shop-api", "tag": "v1.1.0" })).await;
    settle(&setup.world, &app.prod, Settle::Complete, Action::Verified).await;
    let dry = setup.run(&["rollback", "shop-api", "--dry-run"]).await.ok();
    insta::assert_snapshot!("rollback_dry_run", stable(&dry.stdout));
    let child =
        waiting(&setup, &["rollback", "shop-api", "--reason", "INC-7 checkout errors", "--wait"], "v1.0.0").await;
    settle(&setup.world, &app.prod, Settle::Complete, Action::Verified).await;
    let back = finished(child.wait_with_output().await.unwrap()).ok();
    insta::assert_snapshot!("rollback_wait", stable(&back.stdout));
    assert!(setup.world.running_image(&app.prod).await.ends_with(&digest(1)));
    let payload = setup.lambda.invoked().last().unwrap().payload.clone();
    assert_eq!(
        without_proof(&payload),
        json!({ "app": "shop-api", "digest": digest(1), "dry_run": false,
                "reason": "rollback to v1.0.0: INC-7 checkout errors" })
    );
    // Back again, to a named tag.
    let to = setup.run(&["rollback", "shop-api", "--to", "v1.1.0", "--json"]).await.ok();
    let doc = to.json();
    assert_eq!((doc["tag"].as_str(), doc["status"].as_str()), (Some("v1.1.0"), Some("deploying")));
    assert_eq!(doc["rollback_from"], json!({ "tag": "v1.0.0", "digest": digest(1) }));
    assert_eq!(doc["reason"], "rollback from v1.0.0 to v1.1.0");

    // Pausing and rolling back go together in an incident: prod paused refuses promotions, not a
    // rollback to a release it verified before (recorded with the pause it went through).
    settle(&setup.world, &app.prod, Settle::Complete, Action::Verified).await;
    setup.run(&["pause", "shop-api", "--env", "prod", "--reason", "INC-8"]).await.ok();
    let refused = setup.run(&["promote", "shop-api", "v1.0.0", "--json"]).await.exits(1);
    assert_eq!(refused.json()["error"]["type"], "Paused", "{refused:?}");
    let back = setup.run(&["rollback", "shop-api", "--reason", "INC-8", "--json"]).await.ok().json();
    assert_eq!((back["tag"].as_str(), back["status"].as_str()), (Some("v1.0.0"), Some("deploying")), "{back}");
    let history = setup.run(&["history", "shop-api", "--env", "prod", "--limit", "1", "--json"]).await.ok().json();
    let reason = history["entries"][0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("INC-8 (rolled back while paused by ") && reason.ends_with(": INC-8)"), "{history}");
}

#[tokio::test]
async fn pause_holds_pushes_and_refuses_promotions_until_resume_deploys_the_held_push() {
    let setup = Setup::new().await;
    let world = &setup.world;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    setup.vet(&app, "v1.0.0", 1, 3).await;
    let _ = world.notifications().await;

    let paused = setup.run(&["pause", "shop-api", "--reason", "INC-42 payment outage"]).await.ok();
    insta::assert_snapshot!("pause", stable(&paused.stdout));
    let again = setup.run(&["pause", "shop-api", "--env", "prod", "--reason", "again", "--json"]).await.ok();
    insta::assert_snapshot!("pause_again_json", stable_json(&again.json()));

    // While paused: stage holds the push, prod refuses promotions.
    setup.push(&app, "v1.1.0", 2, 1).await;
    assert!(world.running_image(&app.stage).await.ends_with(&digest(1)), "nothing rolled out while paused");
    let status = setup.run(&["status", "shop-api"]).await.ok();
    insta::assert_snapshot!("status_paused", stable(&status.stdout));
    let refused = setup.run(&["promote", "shop-api", "v1.0.0", "--json"]).await.exits(1);
    assert_eq!(refused.json()["error"]["type"], "Paused");

    let resumed = setup.run(&["resume", "shop-api", "--env", "stage", "--deploy-latest", "--json"]).await.ok();
    let doc = resumed.json();
    assert_eq!(doc["environments"][0]["held_push"]["tag"], "v1.1.0");
    assert_eq!(doc["deployed"]["report"]["apps"][0]["status"], "deploying", "{doc}");
    insta::assert_snapshot!("resume_deploy_latest_json", stable_json(&doc));
    // stage-deploy replayed the push the table held (the request names the app, nothing else):
    // the push's own event, same id and time.
    let invoked = setup.lambda.invoked();
    assert_eq!(invoked.last().unwrap().function, "stage-deploy", "{invoked:?}");
    assert_eq!(
        without_proof(&invoked.last().unwrap().payload),
        json!({ "operation": "resume", "app": "shop-api", "environment": "stage", "deploy_latest": true })
    );
    let original = world.push_event("shop-api", "v1.1.0", &digest(2), Utc::now());
    let replayed = &doc["deployed"]["event"];
    assert_eq!((&replayed["detail"], &replayed["account"]), (&original["detail"], &original["account"]));
    assert!(replayed["id"].as_str().unwrap().starts_with(&format!("push-{}-v1.1.0-", world.id)));
    assert!(world.running_image(&app.stage).await.ends_with(&digest(2)));
    let resumed = setup.run(&["resume", "shop-api"]).await.ok();
    insta::assert_snapshot!("resume", stable(&resumed.stdout));
    setup.run(&["resume", "shop-api", "--env", "prod", "--deploy-latest"]).await.exits(1);

    let outcomes: Vec<String> = world
        .notifications()
        .await
        .iter()
        .map(|n| format!("{} {}", n["MessageAttributes"]["environment"], n["MessageAttributes"]["outcome"]))
        .collect();
    for expected in [r#""stage" "paused""#, r#""prod" "paused""#, r#""stage" "resumed""#, r#""prod" "resumed""#] {
        assert_eq!(outcomes.iter().filter(|o| *o == expected).count(), 1, "{expected} in {outcomes:?}");
    }
    let history = setup.run(&["history", "shop-api", "--json"]).await.ok().json();
    let pause = history["entries"].as_array().unwrap().iter().find(|e| e["event"] == "paused").unwrap();
    // Who paused is the identity STS confirmed from the CLI's proof.
    assert_eq!(
        (pause["requested_by"].as_str(), pause["on_behalf_of"].as_str(), pause["reason"].as_str()),
        (Some(CALLER), None, Some("INC-42 payment outage"))
    );
}

/// The CLI's environment with its own access key id: the local AWS logs which key signed each
/// call (`credential=KEY`), so the operator's calls are told apart from the functions'.
fn as_operator(setup: &Setup, key: &str) -> Vec<(String, String)> {
    let mut env: Vec<_> = setup.env().into_iter().filter(|(k, _)| k != "AWS_ACCESS_KEY_ID").collect();
    env.push(("AWS_ACCESS_KEY_ID".into(), key.to_owned()));
    env
}

#[tokio::test]
async fn pause_and_resume_write_the_state_table_only_through_the_functions() {
    let setup = Setup::new().await;
    let world = &setup.world;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    setup.vet(&app, "v1.0.0", 1, 3).await;
    let key = format!("OPERATOR{}", world.id.to_uppercase());
    let operator = as_operator(&setup, &key);

    run(&operator, &["pause", "shop-api", "--reason", "INC-9 load test"]).await.ok();
    setup.push(&app, "v1.1.0", 2, 1).await;
    let paused = run(&operator, &["status", "shop-api", "--json"]).await.ok().json();
    assert_eq!(paused["apps"][0]["environments"][0]["held_push"]["tag"], "v1.1.0", "{paused}");
    let resumed = run(&operator, &["resume", "shop-api", "--deploy-latest", "--json"]).await.ok().json();
    assert_eq!(resumed["deployed"]["report"]["apps"][0]["status"], "deploying", "{resumed}");
    assert!(world.running_image(&app.stage).await.ends_with(&digest(2)));

    // With the operator's credentials: who am I, and reads. Every write was the function's.
    let calls = world.aws.calls(&format!("credential={key}")).await;
    let writes = ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem", "Publish"];
    assert!(calls.keys().all(|op| !writes.contains(&op.as_str())), "the operator wrote: {calls:?}");
    assert!(calls.contains_key("GetCallerIdentity"), "the operator's calls are logged: {calls:?}");
    for function in ["stage-deploy", "promote"] {
        let calls = world
            .aws
            .calls(&format!("credential={}", conveyor_testkit::principals::access_key(function, &world.id)))
            .await;
        assert!(calls.keys().any(|op| writes.contains(&op.as_str())), "{function} wrote: {calls:?}");
    }
    // Each environment through its own function: stage-deploy for stage, promote for prod.
    let invoked = setup.lambda.invoked();
    let operations: Vec<(&str, &str, &str)> = invoked
        .iter()
        .filter_map(|i| {
            Some((i.function.as_str(), i.payload["operation"].as_str()?, i.payload["environment"].as_str()?))
        })
        .collect();
    assert_eq!(
        operations,
        [
            ("stage-deploy", "pause", "stage"),
            ("promote", "pause", "prod"),
            ("stage-deploy", "resume", "stage"),
            ("promote", "resume", "prod")
        ]
    );
}

#[tokio::test]
async fn a_name_in_a_request_is_kept_on_behalf_of_never_as_the_verified_identity() {
    let setup = Setup::new().await;
    let world = &setup.world;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    setup.vet(&app, "v1.0.0", 1, 3).await;
    let _ = world.notifications().await;
    let admin = "arn:aws:iam::123456789012:user/admin";

    // A pause whose request claims to be by the admin.
    let paused = setup
        .promote(json!({ "operation": "pause", "app": "shop-api", "environment": "prod", "reason": "freeze",
                         "by": admin }))
        .await;
    assert_eq!((&paused["by"], paused["on_behalf_of"].as_str()), (&Value::Null, Some(admin)), "{paused}");
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!((record["paused"].get("by"), record["paused"]["on_behalf_of"].as_str()), (None, Some(admin)));
    let notes = world.notifications().await;
    let [note] = &notes[..] else { panic!("one notification: {notes:#?}") };
    let context = &note["Message"]["metadata"]["additionalContext"];
    assert_eq!((context.get("requested_by"), context["on_behalf_of"].as_str()), (None, Some(admin)), "{context}");
    let description = note["Message"]["content"]["description"].as_str().unwrap();
    assert!(description.contains("*On behalf of:* arn:aws:iam::123456789012:user/admin (unverified)"), "{description}");
    assert!(!description.contains("Requested by"), "{description}");
    let status = setup.run(&["status", "shop-api"]).await.ok();
    assert!(status.stdout.contains("paused since"), "{status:?}");
    assert!(status.stdout.contains("by user/admin (unverified): freeze"), "{status:?}");

    // A promotion whose request claims the same.
    setup.promote(json!({ "operation": "resume", "app": "shop-api", "environment": "prod", "by": admin })).await;
    let promoted = setup.promote(json!({ "app": "shop-api", "tag": "v1.0.0", "requested_by": admin })).await;
    assert_eq!((promoted.get("requested_by"), promoted["on_behalf_of"].as_str()), (None, Some(admin)), "{promoted}");
    let history = setup.run(&["history", "shop-api", "--json"]).await.ok().json();
    for event in ["paused", "resumed", "promoted"] {
        let entry = history["entries"].as_array().unwrap().iter().find(|e| e["event"] == event).unwrap();
        assert_eq!((&entry["requested_by"], entry["on_behalf_of"].as_str()), (&Value::Null, Some(admin)), "{entry}");
    }
    let text = setup.run(&["history", "shop-api", "--env", "prod"]).await.ok();
    assert!(text.stdout.contains("user/admin (unverified)"), "{text:?}");

    // When Lambda gives the invocation a verified identity, that is who asked; the name stays
    // what it was on behalf of.
    let verified = "us-east-1:0f6c1e2a-ana";
    setup.promote.set_identity(Some(verified));
    let paused = setup
        .promote(json!({ "operation": "pause", "app": "shop-api", "environment": "prod", "reason": "freeze",
                         "by": admin }))
        .await;
    assert_eq!((paused["by"].as_str(), paused["on_behalf_of"].as_str()), (Some(verified), Some(admin)), "{paused}");
    let record = world.record("shop-api", "prod").await.unwrap();
    assert_eq!(
        (record["paused"]["by"].as_str(), record["paused"]["on_behalf_of"].as_str()),
        (Some(verified), Some(admin))
    );
    let history = setup.run(&["history", "shop-api", "--env", "prod", "--json"]).await.ok().json();
    let entry = &history["entries"][0];
    assert_eq!((entry["event"].as_str(), entry["requested_by"].as_str()), (Some("paused"), Some(verified)), "{entry}");
    assert_eq!(entry["on_behalf_of"], admin);
    let status = setup.run(&["status", "shop-api"]).await.ok();
    assert!(status.stdout.contains(&format!("by {verified} on behalf of user/admin: freeze")), "{status:?}");
}

#[tokio::test]
async fn config_validate_and_put_use_the_functions_validator() {
    let setup = Setup::new().await;
    let world = &setup.world;
    world.seed_app("shop-api", "shop-api", false, json!({})).await;
    let dir = std::env::temp_dir().join(format!("conveyor-cli-{}", world.id));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, config: Value| {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        path.display().to_string()
    };
    let service = |cluster: &str, service: &str| json!({ "cluster": cluster, "service": service });
    let billing = file(
        "billing.json",
        json!({ "repository": "billing", "container": "api",
                "environments": { "stage": service("stage-c", "billing"), "prod": service("prod-c", "billing") } }),
    );
    let typo = file("cart.json", json!({ "repository": "cart", "contianer": "api" }));
    // Claims shop-api's stage service.
    let thief = file(
        "shop-web.json",
        json!({ "repository": "shop-web", "container": "web",
                "environments": { "stage": service(&world.name("stage"), "shop-api"), "prod": service("prod-c", "shop-web") } }),
    );

    let checked = setup.run(&["config", "validate", &billing, &typo, &thief]).await.exits(1);
    insta::assert_snapshot!("config_validate", stable(&checked.stdout.replace(&dir.display().to_string(), "[dir]")));
    let doc = setup.run(&["config", "validate", &billing, &typo, &thief, "--json"]).await.exits(1).json();
    let valid: Vec<bool> = doc["apps"].as_array().unwrap().iter().map(|a| a["valid"].as_bool().unwrap()).collect();
    assert_eq!(valid, [true, false, false]);
    assert_eq!(doc["apps"][2]["key"], "environments.stage.service");
    // Alone, the thief is valid: only SSM knows whose service it is.
    setup.run(&["config", "validate", "--local", &thief, &billing]).await.ok();
    setup.run(&["config", "validate"]).await.ok();

    let refused = setup.run(&["config", "put", &thief, "--json"]).await.exits(1).json();
    assert_eq!((refused["written"].as_bool(), refused["valid"].as_bool()), (Some(false), Some(false)));
    assert_eq!(world.parameter(&format!("{}/apps/shop-web", world.prefix)).await, None);
    let put = setup.run(&["config", "put", &billing]).await.ok();
    assert!(put.stdout.contains(&format!("wrote {}/apps/billing (version 1)", world.prefix)), "{put:?}");
    let stored: Value =
        serde_json::from_str(&world.parameter(&format!("{}/apps/billing", world.prefix)).await.unwrap()).unwrap();
    assert_eq!(stored["repository"], "billing");
    let all = setup.run(&["config", "validate", "--json"]).await.ok().json();
    let apps: Vec<&str> = all["apps"].as_array().unwrap().iter().map(|a| a["app"].as_str().unwrap()).collect();
    assert_eq!(apps, ["billing", "shop-api"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn metrics_are_the_dora_figures_of_the_history() {
    let setup = Setup::new().await;
    // Both apps exist before the promote function first reads the config (it keeps it 30 s).
    let billing = setup.world.seed_app("billing", "billing", false, json!({})).await;
    story(&setup).await;
    setup.vet(&billing, "v2.0.0", 20, 26).await;
    setup.promote(json!({ "app": "billing", "tag": "v2.0.0" })).await;
    settle(&setup.world, &billing.prod, Settle::Complete, Action::Verified).await;

    let metrics = setup.run(&["metrics", "--json"]).await.ok().json();
    let shop = &metrics["apps"][1]["metrics"];
    assert_eq!(metrics["apps"][1]["app"], "shop-api");
    assert_eq!(shop["deployment_frequency"]["prod_verifications"], 1);
    assert_eq!(shop["change_failure_rate"], json!({ "promotions": 2, "failed": 1, "rate": 0.5 }));
    assert_eq!(
        (shop["time_to_restore"]["failures"].as_u64(), shop["time_to_restore"]["open"].as_u64()),
        (Some(1), Some(1))
    );
    let lead = shop["lead_time"]["median_seconds"].as_i64().unwrap();
    assert!((5 * 3600..5 * 3600 + 120).contains(&lead), "v1.0.0 was pushed 5 h before prod verified it: {lead}");
    let all = &metrics["all"];
    assert_eq!(all["deployment_frequency"], json!({ "prod_verifications": 2, "per_day": 0.067 }));
    assert_eq!(all["lead_time"]["count"], 2);
    insta::assert_snapshot!("metrics_json", stable_json(&metrics));
    let text = setup.run(&["metrics", "shop-api", "--days", "7"]).await.ok();
    insta::assert_snapshot!("metrics", stable(&text.stdout));
}

#[tokio::test]
async fn names_are_read_from_the_stacks_outputs() {
    let setup = Setup::new().await;
    let world = &setup.world;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    setup.vet(&app, "v1.0.0", 1, 1).await;
    let stack = world.name("conveyor");
    let template = json!({
        "Parameters": { "SsmPrefix": { "Type": "String", "Default": "/conveyor" } },
        "Resources": {
            "Handle": { "Type": "AWS::CloudFormation::WaitConditionHandle" },
            "EcrPushRule": { "Type": "AWS::Events::Rule", "Properties": {
                "Name": format!("{}-push", world.name("conveyor")),
                "EventPattern": { "source": ["aws.ecr"] }, "State": "ENABLED" } },
        },
        "Outputs": {
            "StateTableName": { "Value": world.table },
            "PromoteFunctionName": { "Value": "promote" },
            "StageDeployFunctionName": { "Value": "stage-deploy" },
            "AlertTopicArn": { "Value": world.topic_arn },
        }
    });
    let cloudformation = aws_sdk_cloudformation::Client::new(&world.config);
    cloudformation
        .create_stack()
        .stack_name(&stack)
        .template_body(template.to_string())
        .parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key("SsmPrefix")
                .parameter_value(&world.prefix)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Only the AWS settings and the Lambda endpoint: every name comes from the stack.
    let env: Vec<(String, String)> = setup.env().into_iter().filter(|(k, _)| !k.starts_with("CONVEYOR_")).collect();
    let status = run(&env, &["--stack", &stack, "status", "--json"]).await.ok().json();
    assert_eq!(status["apps"][0]["promotable"][0]["tag"], "v1.0.0");
    let promoted = run(&env, &["--stack", &stack, "promote", "shop-api", "v1.0.0", "--json"]).await.ok().json();
    assert_eq!(promoted["status"], "deploying");
    let mut via_env = env.clone();
    via_env.push(("CONVEYOR_STACK".into(), stack.clone()));
    run(&via_env, &["history", "shop-api"]).await.ok();
    // doctor checks the stack's rules: this one has the push rule only.
    let doctor = run(&env, &["--stack", &stack, "doctor", "shop-api", "--json"]).await.exits(4).json();
    let rules: Vec<&Value> = doctor["checks"].as_array().unwrap().iter().filter(|c| c["check"] == "rules").collect();
    assert_eq!(rules.len(), 5, "{doctor:#}");
    assert_eq!(rules[0]["verdict"], "pass", "{rules:#?}");
    assert!(rules[0]["detail"].as_str().unwrap().starts_with("EcrPushRule: "), "{rules:#?}");
    let fails = |c: &&&Value| c["verdict"] == "fail" && c["fix"].as_str().unwrap().contains("sam deploy");
    assert!(rules[1..].iter().all(|c| fails(&c)), "{rules:#?}");
    assert!(rules[1]["detail"].as_str().unwrap().ends_with("has no EcsDeploymentRule"), "{rules:#?}");
    let missing = run(&env, &["--stack", "no-such-stack", "status"]).await.exits(4);
    assert!(missing.stderr.contains("no stack no-such-stack in this account and region"), "{missing:?}");
    assert!(!missing.stderr.contains('{'), "a debug struct, not a message: {missing:?}");
}

#[tokio::test]
async fn usage_errors_and_missing_names_have_their_exit_codes() {
    let world = World::new().await;
    let env = world.aws.env();
    let help = run(&env, &["--help"]).await.ok();
    insta::assert_snapshot!("help", help.stdout);
    run(&env, &["--version"]).await.ok();
    let bogus = run(&env, &["bogus"]).await.exits(1);
    assert!(bogus.stderr.contains("unrecognized subcommand"), "{bogus:?}");
    let bogus = run(&env, &["promote", "shop-api", "--json"]).await.exits(1);
    assert_eq!(bogus.json()["error"]["type"], "InvalidInput");
    let no_table = run(&env, &["history", "shop-api", "--json"]).await.exits(4);
    assert_eq!(no_table.json()["error"]["type"], "ConfigError");
    assert!(no_table.json()["error"]["message"].as_str().unwrap().contains("CONVEYOR_TABLE"));
    let no_region: Vec<_> = env.iter().filter(|(k, _)| !k.contains("REGION")).cloned().collect();
    let no_region = run(&no_region, &["status"]).await.exits(4);
    assert!(no_region.stderr.contains("no AWS region"), "{no_region:?}");
    // A table that does not exist: an AWS error.
    let mut env = world.operator_env();
    env.push(("CONVEYOR_TABLE".into(), "no-such-table".into()));
    let missing = run(&env, &["history", "shop-api"]).await.exits(4);
    assert!(missing.stderr.contains("ResourceNotFoundException"), "{missing:?}");
}

#[tokio::test]
async fn a_pause_reason_is_bounded_and_escaped_in_the_notification() {
    let setup = Setup::new().await;
    let world = &setup.world;
    let app = world.seed_app("shop-api", "shop-api", false, json!({})).await;
    setup.vet(&app, "v1.0.0", 1, 3).await;
    let _ = world.notifications().await;

    let long = "x".repeat(257);
    let refused = setup.run(&["pause", "shop-api", "--env", "stage", "--reason", &long, "--json"]).await.exits(1);
    assert_eq!(refused.json()["error"]["type"], "InvalidRequest", "{refused:?}");
    assert!(world.record("shop-api", "stage").await.unwrap()["paused"].is_null(), "paused anyway");
    assert!(world.notifications().await.is_empty());

    let reason = "<!channel> <https://x.example|y> & more";
    setup.run(&["pause", "shop-api", "--env", "stage", "--reason", reason]).await.ok();
    let notes = world.notifications().await;
    let [note] = &notes[..] else { panic!("one notification: {notes:#?}") };
    let description = note["Message"]["content"]["description"].as_str().unwrap();
    assert!(description.contains("*Reason:* &lt;!channel&gt; &lt;https://x.example|y&gt; &amp; more"), "{description}");
    assert_eq!(note["Message"]["metadata"]["additionalContext"]["reason"], reason);
}

/// Completions and the man page come from the command line's own definition, with no AWS at all.
#[tokio::test]
async fn completions_and_the_man_page_are_generated_without_aws() {
    let bash = run(&[], &["completions", "bash"]).await.ok();
    assert!(bash.stdout.contains("complete -F _conveyor") && bash.stdout.contains("promote"), "{bash:?}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(!run(&[], &["completions", shell]).await.ok().stdout.is_empty(), "{shell}");
    }
    let man = run(&[], &["man"]).await.ok();
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH conveyor"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    assert!(man.stdout.contains("wait"), "every command is in the man page");
    run(&[], &["completions", "tcsh"]).await.exits(1);
}
