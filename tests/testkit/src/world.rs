//! One test's own slice of the local AWS: a unique SSM prefix, clusters, an SNS topic with an
//! SQS queue subscribed, and helpers to seed apps and read what happened.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ecs::types::{ContainerDefinition, KeyValuePair, Tag, TaskDefinition, TaskDefinitionField};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::local_aws::{LocalAws, ACCOUNT, REGION};

/// The stage and prod services of one seeded app.
#[derive(Debug, Clone)]
pub struct AppFixture {
    pub app: String,
    pub repository: String,
    pub container: String,
    pub stage: ServiceFixture,
    pub prod: ServiceFixture,
}

#[derive(Debug, Clone)]
pub struct ServiceFixture {
    pub cluster: String,
    pub service: String,
    pub family: String,
    /// The task definition the service ran when it was created.
    pub initial_task_definition: String,
}

#[derive(Clone)]
pub struct World {
    pub aws: &'static LocalAws,
    pub id: String,
    pub prefix: String,
    pub config: aws_config::SdkConfig,
    pub ecs: aws_sdk_ecs::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub topic_arn: String,
    pub queue_url: String,
    /// This test's state table (created from the template's `StateTable`).
    pub table: String,
}

/// The execution role of the seeded apps' task definitions in `account`, as Fargate services have
/// one: every revision Conveyor registers passes it again (`iam:PassRole`, which the IAM test checks).
pub fn execution_role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/shop-task-execution")
}

/// A digest that looks like ECR's (64 pseudo-random hex digits), distinct per `n`.
pub fn digest(n: u32) -> String {
    // splitmix64: four well-mixed words from `n`.
    let mut state = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut hex = String::from("sha256:");
    for _ in 0..4 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        hex.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    hex
}

impl World {
    pub async fn new() -> World {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let aws = LocalAws::shared();
        // Ends with a letter no other part of an id has, so no id is a prefix of another (`t1x4`
        // of `t1x40`) and matching calls by id never counts another test's calls.
        let id = format!("t{}x{}z", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let config = aws.sdk_config().await;
        let ecs = aws_sdk_ecs::Client::new(&config);
        let ssm = aws_sdk_ssm::Client::new(&config);
        let sns = aws_sdk_sns::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let table = format!("conveyor-{id}");
        aws.install_table(&table, REGION).await;

        let topic_arn = sns.create_topic().name(format!("conveyor-{id}")).send().await.unwrap().topic_arn.unwrap();
        let queue_url = sqs.create_queue().queue_name(format!("alerts-{id}")).send().await.unwrap().queue_url.unwrap();
        let queue_arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:alerts-{id}");
        sns.subscribe().topic_arn(&topic_arn).protocol("sqs").endpoint(queue_arn).send().await.unwrap();

        World {
            aws,
            prefix: format!("/conveyor-{id}"),
            id,
            config,
            ecs,
            ssm,
            sns,
            sqs,
            dynamodb,
            topic_arn,
            queue_url,
            table,
        }
    }

    /// A resource name unique to this test.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.id)
    }

    /// The variables a function binary needs to run against this world: its credentials are
    /// scoped to this world ([`crate::principals`]: [`crate::Function`] puts its name in them);
    /// health URLs and Slack webhooks are local HTTP servers here (`CONVEYOR_ALLOW_LOCAL_ENDPOINTS`).
    pub fn function_env(&self) -> Vec<(String, String)> {
        let mut env = self.aws.env();
        for (name, value) in &mut env {
            if name == "AWS_ACCESS_KEY_ID" {
                *value = crate::principals::access_key("conveyor", &self.id);
            }
        }
        env.push(("CONVEYOR_SSM_PREFIX".into(), self.prefix.clone()));
        env.push(("CONVEYOR_TOPIC_ARN".into(), self.topic_arn.clone()));
        env.push(("CONVEYOR_TABLE".into(), self.table.clone()));
        env.push((conveyor::web::LOCAL_ENDPOINTS_VARIABLE.into(), "1".into()));
        env
    }

    /// The variables the `conveyor` CLI runs with against this world: the functions' names and
    /// the operator's own credentials.
    /// `payload` with an identity proof signed by `principal` of this world (their own access key,
    /// so their own identity in the local STS): what the `conveyor` CLI sends.
    pub fn proven(&self, payload: Value, principal: &str) -> Value {
        let key = crate::principals::access_key(principal, &self.id);
        let credentials = aws_credential_types::Credentials::new(key, "test", None, None, "testkit");
        let endpoint = conveyor::identity::sts_endpoint(REGION, |name| {
            (name == "AWS_ENDPOINT_URL").then(|| self.aws.endpoint.clone())
        });
        conveyor::identity::prove(payload, credentials, REGION, &endpoint).unwrap_or_else(|e| panic!("proof: {e}"))
    }

    pub fn operator_env(&self) -> Vec<(String, String)> {
        crate::principals::act_as(&self.function_env(), crate::principals::OPERATOR)
    }

    /// The Conveyor settings of this world (as the functions read them from `function_env`).
    pub fn settings(&self) -> conveyor::Settings {
        conveyor::Settings {
            prefix: self.prefix.clone(),
            topic_arn: Some(self.topic_arn.clone()),
            table: self.table.clone(),
            endpoints: conveyor::web::Endpoints::Local,
        }
    }

    pub fn registry(&self) -> String {
        format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com")
    }

    /// Registers a task definition with the app container `api`, optionally a sidecar, an
    /// environment (with an empty value), tags and the apps' execution role.
    pub async fn register(&self, family: &str, image: &str, env_name: &str, sidecar: bool) -> String {
        let mut request = self
            .ecs
            .register_task_definition()
            .family(family)
            .execution_role_arn(execution_role(ACCOUNT))
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("api")
                    .image(image)
                    .memory(256)
                    .environment(KeyValuePair::builder().name("ENVIRONMENT").value(env_name).build())
                    .environment(KeyValuePair::builder().name("EMPTY").value("").build())
                    .build(),
            )
            .tags(Tag::builder().key("team").value("shop").build())
            .tags(Tag::builder().key("env").value(env_name).build());
        if sidecar {
            request = request.container_definitions(
                ContainerDefinition::builder()
                    .name("log_router")
                    .image("public.ecr.aws/aws-observability/aws-for-fluent-bit:stable")
                    .memory(64)
                    .essential(true)
                    .build(),
            );
        }
        request.send().await.unwrap().task_definition.unwrap().task_definition_arn.unwrap()
    }

    pub async fn create_service(&self, cluster: &str, service: &str, task_definition: &str, desired: i32) {
        self.ecs.create_cluster().cluster_name(cluster).send().await.unwrap();
        self.ecs
            .create_service()
            .cluster(cluster)
            .service_name(service)
            .task_definition(task_definition)
            .desired_count(desired)
            .send()
            .await
            .unwrap();
    }

    /// Makes `service` a native one: ECS deploys it with `strategy` (`BLUE_GREEN`, `LINEAR` in
    /// steps of 50 %, `CANARY` of 10 %, no bake time) and calls the Lambda `hook_function` (its name:
    /// the test kit's Lambda Invoke API serves it) at `hook_stage`, with Conveyor's ECS hook role.
    pub async fn use_native_strategy(
        &self,
        service: &ServiceFixture,
        strategy: &str,
        hook_stage: &str,
        hook_function: &str,
    ) {
        self.use_native_strategy_baking(service, strategy, hook_stage, hook_function, 0).await;
    }

    /// [`World::use_native_strategy`] with a bake time of `bake_minutes` (scaled by the local AWS:
    /// a minute lasts 3 s), during which the deployment is still in flight with blue running.
    pub async fn use_native_strategy_baking(
        &self,
        service: &ServiceFixture,
        strategy: &str,
        hook_stage: &str,
        hook_function: &str,
        bake_minutes: i32,
    ) {
        self.use_native_strategy_with(service, strategy, hook_stage, hook_function, bake_minutes, None).await;
    }

    /// [`World::use_native_strategy`] with a `PAUSE` hook too, after Conveyor's at the same stage,
    /// that times out after `timeout_minutes` (scaled: a minute lasts 3 s) with `ROLLBACK`.
    pub async fn use_native_strategy_pausing(
        &self,
        service: &ServiceFixture,
        strategy: &str,
        hook_stage: &str,
        hook_function: &str,
        timeout_minutes: i32,
    ) {
        use aws_sdk_ecs::types::{
            DeploymentLifecycleHook, DeploymentLifecycleHookAction, DeploymentLifecycleHookStage,
            DeploymentLifecycleHookTargetType, DeploymentLifecycleHookTimeoutConfiguration,
        };
        let timeout = DeploymentLifecycleHookTimeoutConfiguration::builder()
            .timeout_in_minutes(timeout_minutes)
            .action(DeploymentLifecycleHookAction::Rollback)
            .build();
        let pause = DeploymentLifecycleHook::builder()
            .target_type(DeploymentLifecycleHookTargetType::Pause)
            .lifecycle_stages(DeploymentLifecycleHookStage::from(hook_stage))
            .timeout_configuration(timeout)
            .build();
        self.use_native_strategy_with(service, strategy, hook_stage, hook_function, 0, Some(pause)).await;
    }

    async fn use_native_strategy_with(
        &self,
        service: &ServiceFixture,
        strategy: &str,
        hook_stage: &str,
        hook_function: &str,
        bake_minutes: i32,
        pause: Option<aws_sdk_ecs::types::DeploymentLifecycleHook>,
    ) {
        use aws_sdk_ecs::types::{
            CanaryConfiguration, DeploymentConfiguration, DeploymentLifecycleHook, DeploymentLifecycleHookStage,
            DeploymentStrategy, LinearConfiguration,
        };
        let hook = DeploymentLifecycleHook::builder()
            .hook_target_arn(format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{hook_function}"))
            .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/conveyor-ecs-hook"))
            .lifecycle_stages(DeploymentLifecycleHookStage::from(hook_stage))
            .build();
        let configuration = DeploymentConfiguration::builder()
            .strategy(DeploymentStrategy::from(strategy))
            .bake_time_in_minutes(bake_minutes)
            .set_lifecycle_hooks(Some([hook].into_iter().chain(pause).collect()))
            .linear_configuration(LinearConfiguration::builder().step_percent(50.0).build())
            .canary_configuration(CanaryConfiguration::builder().canary_percent(10.0).build())
            .build();
        self.ecs
            .update_service()
            .cluster(&service.cluster)
            .service(&service.service)
            .deployment_configuration(configuration)
            .send()
            .await
            .unwrap();
    }

    /// Seeds an app: stage and prod services (each its own family, env and cluster) running
    /// `repository:v0.9.0` by tag, and its config parameter.
    pub async fn seed_app(&self, app: &str, repository: &str, sidecar: bool, extra: Value) -> AppFixture {
        let image = format!("{}/{repository}:v0.9.0", self.registry());
        let mut services = Vec::new();
        for env in ["stage", "prod"] {
            let family = self.name(&format!("{app}-{env}"));
            let cluster = self.name(env);
            let task_definition = self.register(&family, &image, env, sidecar).await;
            self.create_service(&cluster, app, &task_definition, if env == "prod" { 3 } else { 1 }).await;
            services.push(ServiceFixture {
                cluster,
                service: app.to_owned(),
                family,
                initial_task_definition: task_definition,
            });
        }
        let prod = services.pop().unwrap();
        let stage = services.pop().unwrap();
        let mut config = json!({
            "repository": repository,
            "container": "api",
            "environments": {
                "stage": { "cluster": stage.cluster, "service": stage.service },
                "prod": { "cluster": prod.cluster, "service": prod.service },
            },
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
        }
        self.put_app(app, &config).await;
        AppFixture { app: app.to_owned(), repository: repository.to_owned(), container: "api".into(), stage, prod }
    }

    /// An app whose pipeline has the environments of `shape` (each with its extra config keys:
    /// `from`, `promotion`, `soak`, ...): a service per environment, named after the app, on
    /// cluster `pipeline-{env}` (the IAM test's template parameters name them: `dev` among the
    /// entry (stage) clusters, `stage` and `prod` among the promoted-into (prod) ones); its
    /// repository is the app's name.
    pub async fn seed_pipeline(&self, app: &str, shape: &[(&str, Value)]) -> Vec<ServiceFixture> {
        let image = format!("{}/{app}:v0.9.0", self.registry());
        let mut services = Vec::new();
        let mut environments = serde_json::Map::new();
        for (env, extra) in shape {
            let (family, cluster) = (self.name(&format!("{app}-{env}")), self.name(&format!("pipeline-{env}")));
            let task_definition = self.register(&family, &image, env, false).await;
            self.create_service(&cluster, app, &task_definition, 1).await;
            let mut config = json!({ "cluster": cluster, "service": app });
            if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
                config.extend(extra.clone());
            }
            environments.insert((*env).to_owned(), config);
            services.push(ServiceFixture {
                cluster,
                service: app.into(),
                family,
                initial_task_definition: task_definition,
            });
        }
        self.put_app(app, &json!({ "repository": app, "container": "api", "environments": environments })).await;
        services
    }

    pub async fn put_app(&self, app: &str, config: &Value) {
        self.put_parameter(&format!("{}/apps/{app}", self.prefix), &config.to_string()).await;
    }

    pub async fn put_parameter(&self, name: &str, value: &str) {
        self.put(name, value, aws_sdk_ssm::types::ParameterType::String).await;
    }

    pub async fn put_secure_parameter(&self, name: &str, value: &str) {
        self.put(name, value, aws_sdk_ssm::types::ParameterType::SecureString).await;
    }

    async fn put(&self, name: &str, value: &str, kind: aws_sdk_ssm::types::ParameterType) {
        self.ssm.put_parameter().name(name).value(value).r#type(kind).overwrite(true).send().await.unwrap();
    }

    pub async fn parameter(&self, name: &str) -> Option<String> {
        self.ssm.get_parameter().name(name).send().await.ok().and_then(|o| o.parameter?.value)
    }

    /// An item of the state table, as JSON (DynamoDB types unwrapped).
    pub async fn item(&self, pk: &str, sk: &str) -> Option<Value> {
        let output = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        output.item.map(|item| serde_dynamo::from_item(item).unwrap())
    }

    /// What Conveyor knows about `app` in `env` (`stage` or `prod`): the item's `state`.
    pub async fn record(&self, app: &str, env: &str) -> Option<Value> {
        let item = self.item(&format!("APP#{app}"), &format!("ENV#{env}")).await?;
        item.get("state").cloned()
    }

    /// The image item of a digest.
    pub async fn image_record(&self, app: &str, digest: &str) -> Option<Value> {
        self.item(&format!("APP#{app}"), &format!("IMAGE#{digest}")).await
    }

    /// The tag item (the digest stage most recently verified under it).
    pub async fn tag_record(&self, app: &str, tag: &str) -> Option<Value> {
        self.item(&format!("APP#{app}"), &format!("TAG#{tag}")).await
    }

    /// The history of an app, oldest first.
    pub async fn history(&self, app: &str) -> Vec<Value> {
        let output = self
            .dynamodb
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :h)")
            .expression_attribute_values(":pk", AttributeValue::S(format!("APP#{app}")))
            .expression_attribute_values(":h", AttributeValue::S("HIST#".into()))
            .send()
            .await
            .unwrap();
        output.items.unwrap_or_default().into_iter().map(|item| serde_dynamo::from_item(item).unwrap()).collect()
    }

    /// Every item of this world's table (for invariants over the whole state).
    pub async fn items(&self) -> Vec<Value> {
        let output = self.dynamodb.scan().table_name(&self.table).send().await.unwrap();
        output.items.unwrap_or_default().into_iter().map(|item| serde_dynamo::from_item(item).unwrap()).collect()
    }

    /// A "Scheduled Event" tick for the sweep.
    pub fn schedule_event(&self) -> Value {
        json!({
            "version": "0", "id": format!("tick-{}", self.id), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": ACCOUNT, "time": Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "region": REGION, "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/conveyor-sweep")], "detail": {}
        })
    }

    /// A "CloudWatch Alarm State Change" into ALARM of `alarm`, in Conveyor's account and region.
    pub fn alarm_event(&self, alarm: &str, time: DateTime<Utc>) -> Value {
        json!({
            "version": "0", "id": format!("alarm-{}-{alarm}-{}", self.id, time.timestamp()),
            "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch", "account": ACCOUNT,
            "time": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "region": REGION,
            "resources": [format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm}")],
            "detail": { "alarmName": alarm, "previousState": { "value": "OK" },
                        "state": { "value": "ALARM", "timestamp": time.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string() } }
        })
    }

    /// A tick of the soak timer (its rule is named `{stack}-soak-timer`).
    pub fn soak_timer_event(&self) -> Value {
        let mut tick = self.schedule_event();
        tick["resources"] = json!([format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/conveyor-soak-timer")]);
        tick
    }

    /// An "ECR Image Action" PUSH/SUCCESS event, as EventBridge delivers it.
    pub fn push_event(&self, repository: &str, tag: &str, digest: &str, time: DateTime<Utc>) -> Value {
        json!({
            "version": "0",
            "id": format!("push-{}-{tag}-{}", self.id, time.timestamp()),
            "detail-type": "ECR Image Action",
            "source": "aws.ecr",
            "account": ACCOUNT,
            "time": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "region": REGION,
            "resources": [],
            "detail": {
                "result": "SUCCESS",
                "repository-name": repository,
                "image-digest": digest,
                "action-type": "PUSH",
                "image-tag": tag,
            }
        })
    }

    pub async fn service(&self, cluster: &str, service: &str) -> aws_sdk_ecs::types::Service {
        let output = self.ecs.describe_services().cluster(cluster).services(service).send().await.unwrap();
        output.services.unwrap_or_default().into_iter().next().unwrap()
    }

    pub async fn task_definition(&self, arn: &str) -> (TaskDefinition, Vec<Tag>) {
        let output = self
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .unwrap();
        (output.task_definition.unwrap(), output.tags.unwrap_or_default())
    }

    /// Every revision ARN of a family, oldest first.
    pub async fn revisions(&self, family: &str) -> Vec<String> {
        let output = self.ecs.list_task_definitions().family_prefix(family).send().await.unwrap();
        output.task_definition_arns.unwrap_or_default()
    }

    /// The image the `api` container of the service's current task definition runs.
    pub async fn running_image(&self, service: &ServiceFixture) -> String {
        self.image_of(&service.cluster, &service.service).await
    }

    /// The image the `api` container of a seeded app runs in `env` (`stage` or `prod`).
    pub async fn app_image(&self, app: &str, env: &str) -> String {
        self.image_of(&self.name(env), app).await
    }

    async fn image_of(&self, cluster: &str, service: &str) -> String {
        let current = self.service(cluster, service).await.task_definition.unwrap();
        self.revision_image(&current).await.expect("an api container with an image")
    }

    /// The image of the `api` container of revision `arn`, if it has one.
    pub async fn revision_image(&self, arn: &str) -> Option<String> {
        let (definition, _) = self.task_definition(arn).await;
        definition
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some("api"))
            .and_then(|c| c.image())
            .map(str::to_owned)
    }

    /// Drains the alert queue: the SNS notifications received so far (`Subject`, `Message` parsed
    /// as JSON, `MessageAttributes` as name => value).
    pub async fn notifications(&self) -> Vec<Value> {
        let mut received = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                return received;
            }
            for message in messages {
                let envelope: Value = serde_json::from_str(message.body().unwrap_or("{}")).unwrap();
                let attributes: serde_json::Map<String, Value> = envelope["MessageAttributes"]
                    .as_object()
                    .map(|a| a.iter().map(|(k, v)| (k.clone(), v["Value"].clone())).collect())
                    .unwrap_or_default();
                received.push(json!({
                    "Subject": envelope["Subject"],
                    "Message": serde_json::from_str::<Value>(envelope["Message"].as_str().unwrap_or("null")).unwrap_or(Value::Null),
                    "MessageAttributes": attributes,
                }));
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

/// Raw ECS calls and per-deployment control: what the SDK does not model, and what a test needs
/// to steer one deployment among several.
impl World {
    /// One ECS call (`RegisterTaskDefinition`, `DescribeTaskDefinition`, ...) sent as raw JSON
    /// over HTTP, as any client of the awsJson protocol sends it: the body goes out exactly as
    /// given and the answer comes back exactly as ECS sent it, including members the Rust SDK does
    /// not model (e.g. `trustedExecutionConfiguration`). The local AWS checks no signature. `Err`
    /// carries the HTTP status and ECS's error body.
    pub async fn ecs_json(&self, operation: &str, body: &Value) -> Result<Value, String> {
        let response = reqwest::Client::new()
            .post(&self.aws.endpoint)
            .header("X-Amz-Target", format!("AmazonEC2ContainerServiceV20141113.{operation}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            // Unsigned, but with the credential scope that routes it to ECS (no check of the signature).
            .header(
                "Authorization",
                format!("AWS4-HMAC-SHA256 Credential=test/20240101/{REGION}/ecs/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{operation}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{operation}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{operation}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{operation}: not JSON ({e}): {text}"))
    }

    /// Completes or fails one deployment of a service, named by id (PRIMARY or not: e.g. the
    /// deployment a change made outside Conveyor replaced); returns the events ECS would emit.
    pub async fn settle_deployment(
        &self,
        cluster: &str,
        service: &str,
        deployment_id: &str,
        outcome: crate::local_aws::Settle,
    ) -> Vec<Value> {
        let mut body = json!({ "cluster": cluster, "service": service, "region": REGION, "account": ACCOUNT,
                           "deploymentId": deployment_id });
        match outcome {
            crate::local_aws::Settle::Complete => body["outcome"] = json!("COMPLETED"),
            crate::local_aws::Settle::Fail { circuit_breaker_rollback } => {
                body["outcome"] = json!("FAILED");
                body["circuitBreakerRollback"] = json!(circuit_breaker_rollback);
            }
        }
        let response = reqwest::Client::new()
            .post(format!("{}/_conveyor/ecs/settle", self.aws.endpoint))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status.is_success(), "settle {body} => {status} {answer}");
        answer["events"].as_array().cloned().unwrap_or_default()
    }
}
