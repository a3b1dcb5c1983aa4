//! The whole local wiring, as in production: the SAM template's EventBridge rules in moto (moto
//! matches the patterns), their SQS queues routed to the real function binaries through the
//! Runtime API, ECS deployments advancing by themselves, and the alert topic and a Slack sink
//! watched. The demo and the end-to-end tests run on it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::http::LocalHttp;
use crate::local_aws::REGION;
use crate::runtime_api::Invocation;
use crate::world::World;
use crate::Function;

/// Something that happened, for the demo's timeline.
#[derive(Debug, Clone)]
pub struct Moment {
    pub at: DateTime<Utc>,
    pub kind: MomentKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MomentKind {
    /// A step of the scenario.
    Step,
    /// EventBridge delivered an event to a function, and what the function answered.
    Delivery,
    /// An SNS notification arrived in the alert queue.
    Notification,
    /// The Slack sink received a post.
    Slack,
    /// An operator ran a `conveyor` command; its output.
    Command,
    /// Something went wrong.
    Problem,
}

/// How a `conveyor` command ended.
#[derive(Debug, Clone)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// One event a rule routed to a function, and the function's answer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub rule: String,
    pub function: String,
    pub event: Value,
    pub answer: Invocation,
}

/// How the local ECS behaves.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Seconds after which an in-progress deployment completes (or fails).
    pub rollout_seconds: f64,
    /// Deployments running any of these digests fail.
    pub fail_digests: Vec<String>,
    pub circuit_breaker: bool,
    /// Native (blue/green, linear, canary) services: test traffic to a revision running any of
    /// these digests answers 503.
    pub unhealthy_on_test: Vec<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            rollout_seconds: 1.5,
            fail_digests: Vec::new(),
            circuit_breaker: false,
            unhealthy_on_test: Vec::new(),
        }
    }
}

pub struct LocalStack {
    pub world: World,
    pub bus: String,
    pub slack: Arc<LocalHttp>,
    pub promote: Arc<Function>,
    /// The Lambda Invoke API the `conveyor` CLI reaches (`AWS_ENDPOINT_URL_LAMBDA`).
    pub lambda: crate::lambda_api::LambdaApi,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    alerts: Arc<Mutex<Vec<Value>>>,
    moments: mpsc::UnboundedSender<Moment>,
    tasks: Vec<JoinHandle<()>>,
}

/// Rule => the function it triggers (as in `infra/template.yaml`).
const ROUTES: [(&str, &str); 3] =
    [("EcrPushRule", "stage-deploy"), ("EcsDeploymentRule", "deploy-monitor"), ("AlarmStateRule", "deploy-monitor")];

/// How often the local soak timer ticks (the template's `SoakTimerRule`: every minute).
const SOAK_TIMER_TICK: Duration = Duration::from_secs(1);

impl LocalStack {
    /// Starts everything for `world`; `moments` receives the timeline.
    pub async fn start(world: World, options: StackOptions, moments: mpsc::UnboundedSender<Moment>) -> LocalStack {
        let bus = world.name("bus");
        let stage_cluster = world.name("stage");
        let prod_cluster = world.name("prod");
        // The story's pipeline app (`World::seed_pipeline`): dev an entry, stage and prod promoted into.
        let pipeline = |env: &str| world.name(&format!("pipeline-{env}"));
        let parameters = json!({
            "StageClusterNames": format!("{stage_cluster},{}", pipeline("dev")),
            "ProdClusterNames": format!("{prod_cluster},{},{},{}", pipeline("stage"), pipeline("prod"), pipeline("prod-eu")),
            "TaskRoleArns": "arn:aws:iam::123456789012:role/task",
        });
        let rules: Vec<&str> = ROUTES.iter().map(|(rule, _)| *rule).collect();
        let queues = world.aws.install_rules(&bus, &rules, parameters, REGION, "123456789012").await;
        // ECS moves deployments forward in both accounts; the prod account's events land on this
        // bus, as its forwarding rule (infra/target-account.yaml) puts them on Conveyor's.
        let prod_b = world.name("prod-b");
        world
            .aws
            .autopilot_in(
                &[crate::local_aws::ACCOUNT, crate::accounts::PROD_ACCOUNT],
                &[stage_cluster, prod_cluster, prod_b],
                &bus,
                options.rollout_seconds,
                &options.fail_digests,
                options.circuit_breaker,
            )
            .await;
        // Where targets run outside Conveyor's account and region, the target-account stack's
        // forwarding rule (read by `conveyor doctor`).
        world
            .install_forwarding(Some(&crate::accounts::target_role(crate::accounts::PROD_ACCOUNT)), REGION, REGION)
            .await;
        world.install_forwarding(None, crate::accounts::OTHER_REGION, REGION).await;
        // The pipeline's clusters on their own autopilot: a test that replaces the one above (the
        // CLI docs' story) names exactly its three clusters.
        let pipeline_clusters = [pipeline("dev"), pipeline("stage"), pipeline("prod")];
        // The pipeline's prod also runs in another region of this account (its first target).
        let other_region = crate::accounts::OTHER_REGION;
        world.aws.autopilot_forwarded(other_region, &[pipeline("prod-eu")], &bus, options.rollout_seconds).await;
        world
            .aws
            .autopilot(
                &pipeline_clusters,
                &bus,
                options.rollout_seconds,
                &options.fail_digests,
                options.circuit_breaker,
            )
            .await;

        let env = crate::functions::with_health_timeout(world.function_env(), Duration::from_secs(3));
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (rule, function) in ROUTES {
            let route = Route {
                rule: rule.to_owned(),
                queue_url: queues[rule].clone(),
                function: Function::spawn(function, &env).await,
                sqs: world.sqs.clone(),
                deliveries: deliveries.clone(),
                moments: moments.clone(),
            };
            tasks.push(tokio::spawn(route.run()));
        }
        tasks.push(tokio::spawn(soak_timer(
            Function::spawn("deploy-monitor", &env).await,
            world.clone(),
            moments.clone(),
        )));
        let slack = Arc::new(LocalHttp::start(200).await);
        tasks.push(tokio::spawn(watch_slack(slack.clone(), moments.clone())));
        let alerts = Arc::new(Mutex::new(Vec::new()));
        tasks.push(tokio::spawn(watch_alerts(world.clone(), alerts.clone(), moments.clone())));
        let promote = Arc::new(Function::spawn("promote", &env).await);
        let lambda = crate::lambda_api::LambdaApi::start().await;
        lambda.add("promote", promote.clone());
        // ECS calls native services' lifecycle hook (`deploy-hook`) as Lambda runs it; their
        // deployments' events reach the bus like the others.
        lambda.add("deploy-hook", Arc::new(Function::spawn("deploy-hook", &env).await));
        world.aws.native(&[pipeline("prod")], &lambda.url(), &options.unhealthy_on_test, Some(&bus)).await;
        // The CLI pauses and resumes stage through stage-deploy (EventBridge's copies run above).
        lambda.add("stage-deploy", Arc::new(Function::spawn("stage-deploy", &env).await));
        LocalStack { world, bus, slack, promote, lambda, deliveries, alerts, moments, tasks }
    }

    /// Runs the `conveyor` CLI (the debug build) against this stack, as an operator would.
    pub async fn cli(&self, args: &[&str]) -> CliRun {
        self.cli_as(crate::principals::OPERATOR, args).await
    }

    /// Runs the `conveyor` CLI as `principal` (another person: their own access key, so their own
    /// identity in the local STS).
    pub async fn cli_as(&self, principal: &str, args: &[&str]) -> CliRun {
        let env = self.cli_env(principal);
        let output = tokio::process::Command::new(crate::function::binary("conveyor"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .envs(env)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run conveyor: {e}"));
        CliRun {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The variables the `conveyor` CLI runs with against this stack, as `principal`.
    pub fn cli_env(&self, principal: &str) -> Vec<(String, String)> {
        let mut env = crate::principals::act_as(&self.world.function_env(), principal);
        env.push(("CONVEYOR_PROMOTE_FUNCTION".into(), "promote".into()));
        env.push(("CONVEYOR_STAGE_DEPLOY_FUNCTION".into(), "stage-deploy".into()));
        env.push(("AWS_ENDPOINT_URL_LAMBDA".into(), self.lambda.url()));
        // What the stack's outputs DeployHookFunctionArn and EcsHookInvokeRoleArn say on AWS.
        let (region, account) = (crate::local_aws::REGION, crate::local_aws::ACCOUNT);
        env.push((
            "CONVEYOR_HOOK_FUNCTION_ARN".into(),
            format!("arn:aws:lambda:{region}:{account}:function:deploy-hook"),
        ));
        env.push(("CONVEYOR_HOOK_ROLE_ARN".into(), format!("arn:aws:iam::{account}:role/conveyor-ecs-hook")));
        env
    }

    /// Adds a line to the timeline.
    pub fn say(&self, kind: MomentKind, text: impl Into<String>) {
        let _ = self.moments.send(Moment { at: Utc::now(), kind, text: text.into() });
    }

    /// An ECR push of `repository:tag` (`digest`) at `time`, put onto the event bus.
    pub async fn push(&self, repository: &str, tag: &str, digest: &str, time: DateTime<Utc>) {
        let event = self.world.push_event(repository, tag, digest, time);
        self.world.aws.put_events(&self.bus, REGION, &[event]).await;
    }

    /// Puts any event onto the bus (EventBridge decides, with the template's patterns, who gets it).
    pub async fn put(&self, event: Value) {
        self.world.aws.put_events(&self.bus, REGION, &[event]).await;
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// Every SNS notification received so far (as [`World::notifications`] parses them).
    pub fn alerts(&self) -> Vec<Value> {
        self.alerts.lock().unwrap().clone()
    }

    /// Waits until `check` returns `Some`, polling; `Err` names what did not happen in time.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return Ok(value);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("timed out after {timeout:?} waiting for {what}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the release record of `app` in `env` has its current rollout in `state`
    /// (for `tag`); returns the record.
    /// Waits until `tag` is the last release vetted in `env` (verified, and its soak over).
    pub async fn wait_for_vetted(&self, app: &str, env: &str, tag: &str) -> Result<Value, String> {
        let what = format!("{app} {env} {tag} to be vetted");
        self.wait_for(&what, Duration::from_secs(30), || async {
            let record = self.world.record(app, env).await?;
            (record["last_verified"]["tag"] == tag).then_some(record)
        })
        .await
    }

    pub async fn wait_for_state(&self, app: &str, env: &str, tag: &str, state: &str) -> Result<Value, String> {
        let what = format!("{app} {env} {tag} to be {state}");
        self.wait_for(&what, Duration::from_secs(30), || async {
            let record = self.world.record(app, env).await?;
            let rollout = &record["rollout"];
            (rollout["tag"] == tag && rollout["state"]["kind"] == state).then_some(record)
        })
        .await
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One rule's queue, delivered to its function one event at a time (as Lambda would with a
/// reserved concurrency of 1); a failed invocation is retried twice, as Lambda retries async
/// invocations.
struct Route {
    rule: String,
    queue_url: String,
    function: Function,
    sqs: aws_sdk_sqs::Client,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    moments: mpsc::UnboundedSender<Moment>,
}

impl Route {
    async fn run(self) {
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await;
            let Ok(received) = received else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            for message in received.messages() {
                let event: Value = serde_json::from_str(message.body().unwrap_or("null")).unwrap_or(Value::Null);
                let mut answer = self.function.invoke(event.clone()).await;
                for _ in 0..2 {
                    if matches!(answer, Invocation::Response(_)) {
                        break;
                    }
                    answer = self.function.invoke(event.clone()).await;
                }
                let _ = self.moments.send(Moment {
                    at: Utc::now(),
                    kind: MomentKind::Delivery,
                    text: describe(&self.rule, &self.function.name, &event, &answer),
                });
                self.deliveries.lock().unwrap().push(Delivery {
                    rule: self.rule.clone(),
                    function: self.function.name.clone(),
                    event,
                    answer,
                });
                if let Some(handle) = message.receipt_handle() {
                    let _ = self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await;
                }
            }
        }
    }
}

/// The template's `SoakTimerRule`, faster: deploy-monitor ends the soaks whose time is up. A tick
/// that ended none is not shown.
async fn soak_timer(function: Function, world: World, moments: mpsc::UnboundedSender<Moment>) {
    loop {
        tokio::time::sleep(SOAK_TIMER_TICK).await;
        let event = world.soak_timer_event();
        let answer = function.invoke(event.clone()).await;
        let idle = matches!(&answer, Invocation::Response(r) if r["results"].as_array().is_some_and(Vec::is_empty));
        if !idle {
            let text = describe("SoakTimerRule", &function.name, &event, &answer);
            let _ = moments.send(Moment { at: Utc::now(), kind: MomentKind::Delivery, text });
        }
    }
}

/// `EcrPushRule → stage-deploy: ECR push shop-api:v1.0.0 ⇒ shop-api deploying`
fn describe(rule: &str, function: &str, event: &Value, answer: &Invocation) -> String {
    let detail = &event["detail"];
    let what = match event["detail-type"].as_str() {
        Some("ECR Image Action") => format!(
            "ECR push {}:{}",
            detail["repository-name"].as_str().unwrap_or("?"),
            detail["image-tag"].as_str().unwrap_or("?")
        ),
        Some("ECS Deployment State Change") => format!(
            "ECS {} {} ({})",
            detail["eventName"].as_str().unwrap_or("?").trim_start_matches("SERVICE_"),
            detail["deploymentId"].as_str().unwrap_or("?"),
            event["resources"][0].as_str().unwrap_or("?").rsplit('/').next().unwrap_or("?")
        ),
        Some("CloudWatch Alarm State Change") => format!(
            "CloudWatch alarm {} → {}",
            detail["alarmName"].as_str().unwrap_or("?"),
            detail["state"]["value"].as_str().unwrap_or("?")
        ),
        Some("Scheduled Event") if rule == "SoakTimerRule" => "soak timer tick".to_owned(),
        other => other.unwrap_or("event").to_owned(),
    };
    let result = match answer {
        Invocation::Response(response) => summarize(response),
        Invocation::Error { error_type, error_message } => format!("ERROR {error_type}: {error_message}"),
    };
    format!("{rule} → {function}: {what} ⇒ {result}")
}

fn summarize(response: &Value) -> String {
    if let Some(skipped) = response["skipped"].as_str() {
        return format!("skipped ({skipped})");
    }
    let items = response["apps"].as_array().or(response["results"].as_array());
    let parts: Vec<String> = items
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    let app = item["app"].as_str().unwrap_or("-");
                    let status = item["status"].as_str().or(item["action"].as_str()).unwrap_or("?");
                    let env = item["environment"].as_str().map(|e| format!(" {e}")).unwrap_or_default();
                    format!("{app}{env} {status}")
                })
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        "nothing to do".into()
    } else {
        parts.join(", ")
    }
}

/// Collects every SNS notification as it arrives in the world's alert queue.
async fn watch_alerts(world: World, alerts: Arc<Mutex<Vec<Value>>>, moments: mpsc::UnboundedSender<Moment>) {
    loop {
        for note in world.notifications().await {
            let severity = note["MessageAttributes"]["severity"].as_str().unwrap_or("?");
            let text = format!("SNS [{severity}] {}", note["Subject"].as_str().unwrap_or("?"));
            let _ = moments.send(Moment { at: Utc::now(), kind: MomentKind::Notification, text });
            alerts.lock().unwrap().push(note);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Shows every Slack post as it arrives: its headline, and in full when it is an alert.
async fn watch_slack(slack: Arc<LocalHttp>, moments: mpsc::UnboundedSender<Moment>) {
    let mut seen = 0;
    loop {
        let received = slack.received();
        for post in &received[seen.min(received.len())..] {
            let message: Value = serde_json::from_str(&post.body).unwrap_or(Value::Null);
            let headline = message["blocks"][0]["text"]["text"].as_str().unwrap_or("?");
            let alert = headline.contains("rolled back") || headline.contains("FAILED");
            let text = if alert { crate::scenario::slack_text(&message) } else { format!("Slack: {headline}") };
            let _ = moments.send(Moment { at: Utc::now(), kind: MomentKind::Slack, text });
        }
        seen = received.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
