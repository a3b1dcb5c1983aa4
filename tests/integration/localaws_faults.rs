//! The local AWS's wire-level faults, call log, rate limits and ECS/DynamoDB realism, checked
//! through the real Rust SDK: what the library's retry and error handling will see.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use aws_sdk_ssm::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use conveyor_testkit::local_aws::{CallRecord, Fault, FaultMode, REGION};
use conveyor_testkit::World;
use serde_json::json;

/// A marker unique to this test that no other test's id contains (`t1x4` is inside `t1x40`,
/// `t1x4z` is not): faults and logs matched on it see this test's calls only.
fn mark(world: &World) -> String {
    format!("{}z", world.id)
}

/// Standard retries with `attempts` attempts, millisecond backoff (the tests stay fast), and a
/// retry token bucket of their own (failures here must not drain the other tests' bucket).
fn retries(world: &World, attempts: u32) -> (RetryConfig, RetryPartition) {
    let config = RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(50));
    (config, RetryPartition::new(format!("localaws-faults-{}", world.id)))
}

fn ssm(world: &World, attempts: u32) -> aws_sdk_ssm::Client {
    let (retry, partition) = retries(world, attempts);
    let config = aws_sdk_ssm::config::Builder::from(&world.config).retry_config(retry).retry_partition(partition);
    aws_sdk_ssm::Client::from_conf(config.build())
}

fn sns(world: &World, attempts: u32) -> aws_sdk_sns::Client {
    let (retry, partition) = retries(world, attempts);
    let config = aws_sdk_sns::config::Builder::from(&world.config).retry_config(retry).retry_partition(partition);
    aws_sdk_sns::Client::from_conf(config.build())
}

/// Error code, message and HTTP status of a failed call.
fn failure<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> (String, String, u16) {
    (
        error.code().unwrap_or_default().to_owned(),
        error.message().unwrap_or_default().to_owned(),
        error.raw_response().map(|r| r.status().as_u16()).unwrap_or_default(),
    )
}

/// Whether the call failed without any HTTP response, on an I/O error.
fn is_io_dispatch_failure<E, R>(error: &SdkError<E, R>) -> bool {
    matches!(error, SdkError::DispatchFailure(failure) if failure.is_io())
}

fn log_of(calls: &[CallRecord]) -> Vec<(&str, Option<&str>)> {
    calls.iter().map(|c| (c.operation.as_str(), c.fault.as_deref())).collect()
}

async fn put(client: &aws_sdk_ssm::Client, name: &str, value: &str) -> Result<(), SdkError<PutParameterError>> {
    client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map(drop)
}

#[tokio::test]
async fn throttling_in_json_is_retried_by_the_sdk_and_every_attempt_is_counted() {
    let world = World::new().await;
    let mark = mark(&world);
    let name = format!("/{mark}/throttled");

    // The SDK reads the awsJson error as throttling...
    world.aws.fault(&Fault::on("PutParameter").matching(&mark).mode(FaultMode::Throttle)).await;
    let error = put(&ssm(&world, 1), &name, "v").await.unwrap_err();
    assert_eq!(failure(&error), ("ThrottlingException".into(), "Rate exceeded".into(), 400));

    // ... and retries it although it is a 400.
    world.aws.fault(&Fault::on("PutParameter").matching(&mark).mode(FaultMode::Throttle).count(2)).await;
    put(&ssm(&world, 3), &name, "v").await.unwrap();
    // A 400 that is not throttling is not retried: so the retries above are the classifier's.
    let invalid = FaultMode::Error { status: 400, code: "ValidationException".into(), message: "no".into() };
    world.aws.fault(&Fault::on("PutParameter").matching(&mark).mode(invalid)).await;
    let error = put(&ssm(&world, 3), &name, "v").await.unwrap_err();
    assert_eq!(failure(&error), ("ValidationException".into(), "no".into(), 400));

    assert_eq!(
        log_of(&world.aws.call_log(&mark).await),
        [
            ("PutParameter", Some("throttle")),
            ("PutParameter", Some("throttle")),
            ("PutParameter", Some("throttle")),
            ("PutParameter", None),
            ("PutParameter", Some("error")),
        ]
    );
    assert_eq!(world.aws.calls(&mark).await.get("PutParameter"), Some(&5));
}

#[tokio::test]
async fn throttling_in_query_xml_is_retried_by_the_sdk() {
    let world = World::new().await;
    let mark = mark(&world);
    let topic = sns(&world, 1).create_topic().name(format!("faults-{mark}")).send().await.unwrap().topic_arn.unwrap();

    world.aws.fault(&Fault::on("Publish").matching(&mark).mode(FaultMode::Throttle)).await;
    let error = sns(&world, 1).publish().topic_arn(&topic).message("m").send().await.unwrap_err();
    assert_eq!(failure(&error), ("Throttling".into(), "Rate exceeded".into(), 400));

    world.aws.fault(&Fault::on("Publish").matching(&mark).mode(FaultMode::Throttle).count(2)).await;
    sns(&world, 3).publish().topic_arn(&topic).message("m").send().await.unwrap();

    world.aws.fault(&Fault::on("Publish").matching(&mark).mode(FaultMode::Http503)).await;
    let error = sns(&world, 1).publish().topic_arn(&topic).message("m").send().await.unwrap_err();
    assert_eq!(failure(&error).0, "ServiceUnavailable");
    assert_eq!(failure(&error).2, 503);

    let publishes: Vec<_> =
        world.aws.call_log(&mark).await.into_iter().filter(|c| c.operation == "Publish").map(|c| c.fault).collect();
    let throttle = Some("throttle".to_owned());
    assert_eq!(publishes, [throttle.clone(), throttle.clone(), throttle, None, Some("http503".into())]);
}

#[tokio::test]
async fn server_errors_have_their_codes_and_are_retried() {
    let world = World::new().await;
    let mark = mark(&world);
    let name = format!("/{mark}/p");
    put(&ssm(&world, 1), &name, "v").await.unwrap();

    for (mode, code, status) in
        [(FaultMode::Http500, "InternalFailure", 500), (FaultMode::Http503, "ServiceUnavailable", 503)]
    {
        world.aws.fault(&Fault::on("GetParameter").matching(&mark).mode(mode.clone())).await;
        let error = ssm(&world, 1).get_parameter().name(&name).send().await.unwrap_err();
        assert_eq!((failure(&error).0.as_str(), failure(&error).2), (code, status));

        world.aws.fault(&Fault::on("GetParameter").matching(&mark).mode(mode)).await;
        let value = ssm(&world, 3).get_parameter().name(&name).send().await.unwrap();
        assert_eq!(value.parameter.unwrap().value.as_deref(), Some("v"));
    }
    let faults: Vec<_> = world.aws.call_log(&mark).await.into_iter().skip(1).map(|c| c.fault).collect();
    let (e500, e503) = (Some("http500".to_owned()), Some("http503".to_owned()));
    assert_eq!(faults, [e500.clone(), e500, None, e503.clone(), e503, None]);
}

#[tokio::test]
async fn a_reset_connection_is_a_dispatch_failure_not_an_http_error() {
    let world = World::new().await;
    let mark = mark(&world);
    let name = format!("/{mark}/p");
    put(&ssm(&world, 1), &name, "v").await.unwrap();

    world.aws.fault(&Fault::on("GetParameter").matching(&mark).mode(FaultMode::Reset).persistent()).await;
    let error = ssm(&world, 1).get_parameter().name(&name).send().await.unwrap_err();
    assert!(is_io_dispatch_failure(&error), "{error:?}");
    assert!(error.raw_response().is_none());
    // The SDK retries I/O failures: every attempt is reset while the fault lasts.
    let error = ssm(&world, 3).get_parameter().name(&name).send().await.unwrap_err();
    assert!(is_io_dispatch_failure(&error), "{error:?}");
    world.aws.clear_faults(&mark).await;
    ssm(&world, 1).get_parameter().name(&name).send().await.unwrap();

    let faults: Vec<_> = world.aws.call_log(&mark).await.into_iter().skip(1).map(|c| c.fault).collect();
    let reset = Some("reset".to_owned());
    assert_eq!(faults, [reset.clone(), reset.clone(), reset.clone(), reset, None]);
}

#[tokio::test]
async fn latency_delays_the_call_then_serves_it() {
    let world = World::new().await;
    let mark = mark(&world);
    let name = format!("/{mark}/p");
    put(&ssm(&world, 1), &name, "slow").await.unwrap();

    let delay = Duration::from_millis(400);
    world.aws.fault(&Fault::on("GetParameter").matching(&mark).mode(FaultMode::Latency(delay))).await;
    let started = Instant::now();
    let value = ssm(&world, 1).get_parameter().name(&name).send().await.unwrap();
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(value.parameter.unwrap().value.as_deref(), Some("slow"));
    assert_eq!(world.aws.call_log(&mark).await.last().unwrap().fault.as_deref(), Some("latency"));
}

#[tokio::test]
async fn apply_then_fail_applies_the_request_and_loses_the_answer() {
    let world = World::new().await;
    let mark = mark(&world);
    let name = format!("/{mark}/applied");

    world.aws.fault(&Fault::on("PutParameter").matching(&mark).mode(FaultMode::ApplyThenFail)).await;
    let error = put(&ssm(&world, 1), &name, "there").await.unwrap_err();
    assert_eq!((failure(&error).0.as_str(), failure(&error).2), ("InternalFailure", 500));
    let value = ssm(&world, 1).get_parameter().name(&name).send().await.unwrap();
    assert_eq!(value.parameter.unwrap().value.as_deref(), Some("there"));
}

#[tokio::test]
async fn after_count_persistent_and_seeded_rate_select_the_calls_that_fail() {
    let world = World::new().await;
    let mark = mark(&world);
    let name = format!("/{mark}/p");
    put(&ssm(&world, 1), &name, "v").await.unwrap();
    let client = ssm(&world, 1);
    let outcomes = |n: usize| {
        let (client, name) = (client.clone(), name.clone());
        async move {
            let mut failed = Vec::new();
            for _ in 0..n {
                failed.push(client.get_parameter().name(&name).send().await.is_err());
            }
            failed
        }
    };
    let invalid = FaultMode::Error { status: 400, code: "ValidationException".into(), message: "injected".into() };
    let fault = Fault::on("GetParameter").matching(&mark).mode(invalid);

    // after 2, count 2: calls 3 and 4 fail.
    world.aws.fault(&fault.clone().after(2).count(2)).await;
    assert_eq!(outcomes(6).await, [false, false, true, true, false, false]);

    // persistent: until cleared.
    world.aws.fault(&fault.clone().persistent()).await;
    assert_eq!(outcomes(5).await, [true; 5]);
    world.aws.clear_faults(&mark).await;
    assert_eq!(outcomes(2).await, [false; 2]);

    // count 0 is persistent too.
    world.aws.fault(&fault.clone().count(0)).await;
    assert_eq!(outcomes(3).await, [true; 3]);
    world.aws.clear_faults(&mark).await;

    // rate: the same seed fails the same calls; a third of them or so.
    world.aws.fault(&fault.clone().rate(0.35, 42)).await;
    let first = outcomes(24).await;
    world.aws.clear_faults(&mark).await;
    world.aws.fault(&fault.clone().rate(0.35, 42)).await;
    let again = outcomes(24).await;
    world.aws.clear_faults(&mark).await;
    assert_eq!(first, again);
    let failed = first.iter().filter(|f| **f).count();
    assert!((2..=20).contains(&failed), "{failed} of 24 failed: {first:?}");
    // rate with a count: at most that many.
    world.aws.fault(&fault.rate(1.0, 7).count(2)).await;
    assert_eq!(outcomes(4).await, [true, true, false, false]);
}

#[tokio::test]
async fn kill_crashes_the_process_when_its_call_arrives() {
    let world = World::new().await;
    let mark = mark(&world);
    let name = format!("/{mark}/p");
    let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();

    // The second matching call kills it (the first passes).
    world
        .aws
        .fault(&Fault::on("GetParameter").matching(&mark).mode(FaultMode::Kill { pid: child.id() }).after(1))
        .await;
    let client = ssm(&world, 1);
    let first = client.get_parameter().name(&name).send().await.unwrap_err();
    assert!(first.as_service_error().is_some(), "the first call reaches moto (no such parameter): {first:?}");
    assert!(child.try_wait().unwrap().is_none(), "killed too early");
    let second = client.get_parameter().name(&name).send().await.unwrap_err();
    assert!(is_io_dispatch_failure(&second), "{second:?}");

    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sleep 60 is still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.signal(), Some(9));
    assert_eq!(log_of(&world.aws.call_log(&mark).await), [("GetParameter", None), ("GetParameter", Some("kill"))]);
}

#[tokio::test]
async fn the_call_log_lists_a_flow_in_order() {
    let world = World::new().await;
    let mark = mark(&world);
    let name = format!("/{mark}/p");
    let client = ssm(&world, 3);
    world.aws.fault(&Fault::on("GetParameter").matching(&mark).mode(FaultMode::Http500)).await;
    put(&client, &name, "v").await.unwrap();
    client.get_parameter().name(&name).send().await.unwrap();
    client.delete_parameter().name(&name).send().await.unwrap();
    client.get_parameter().name(&name).send().await.unwrap_err();

    let log = world.aws.call_log(&mark).await;
    assert_eq!(
        log_of(&log),
        [
            ("PutParameter", None),
            ("GetParameter", Some("http500")),
            ("GetParameter", None),
            ("DeleteParameter", None),
            ("GetParameter", None),
        ]
    );
    assert!(log.windows(2).all(|pair| pair[0].seq < pair[1].seq), "{log:?}");
    // The counts agree with the log, faulted calls included.
    let counts = world.aws.calls(&mark).await;
    assert_eq!((counts["PutParameter"], counts["GetParameter"], counts["DeleteParameter"]), (1, 3, 1));
}

#[tokio::test]
async fn a_rate_limit_allows_a_burst_then_throttles_until_refilled() {
    let world = World::new().await;
    let mark = mark(&world);
    let name = format!("/{mark}/p");
    put(&ssm(&world, 1), &name, "v").await.unwrap();
    let client = ssm(&world, 1);

    // A burst of 3, then one call per 5 s: the 4th and 5th calls come too soon.
    world.aws.rate_limit("GetParameter", &mark, 0.2, 3).await;
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(client.get_parameter().name(&name).send().await.map_err(|e| failure(&e).0).err());
    }
    let throttled = Some("ThrottlingException".to_owned());
    assert_eq!(outcomes, [None, None, None, throttled.clone(), throttled]);
    let faults: Vec<_> = world.aws.call_log(&mark).await.into_iter().skip(1).map(|c| c.fault).collect();
    assert_eq!(faults[3..], [Some("ratelimit".to_owned()), Some("ratelimit".to_owned())]);

    // Refilled at its rate: 4 per second, so after 300 ms there is a token again.
    world.aws.rate_limit("GetParameter", &mark, 4.0, 1).await;
    client.get_parameter().name(&name).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.get_parameter().name(&name).send().await.unwrap();

    world.aws.clear_rate_limits(&mark).await;
    for _ in 0..3 {
        client.get_parameter().name(&name).send().await.unwrap();
    }
}

#[tokio::test]
async fn update_service_to_an_inactive_revision_is_refused_like_ecs() {
    let world = World::new().await;
    let family = world.name("inactive");
    let image = format!("{}/shop:v1", world.registry());
    let first = world.register(&family, &image, "stage", false).await;
    let second = world.register(&family, &image, "stage", false).await;
    let cluster = world.name("inactive-cluster");
    world.create_service(&cluster, "api", &first, 1).await;
    world.ecs.deregister_task_definition().task_definition(&second).send().await.unwrap();

    let error = world.ecs.update_service().cluster(&cluster).service("api").task_definition(&second).send().await;
    let error = error.unwrap_err();
    assert_eq!(failure(&error), ("ClientException".into(), "TaskDefinition is inactive".into(), 400));
    let service = world.service(&cluster, "api").await;
    assert_eq!(service.task_definition.as_deref(), Some(first.as_str()));
    assert_eq!(service.deployments().len(), 1);

    // A bare family is its latest ACTIVE revision, as in ECS.
    let updated = world.ecs.update_service().cluster(&cluster).service("api").task_definition(&family).send().await;
    assert_eq!(updated.unwrap().service.unwrap().task_definition.as_deref(), Some(first.as_str()));
}

#[tokio::test]
async fn task_definition_members_moto_does_not_model_come_back_as_registered() {
    let world = World::new().await;
    let family = world.name("future");
    let trusted = json!({ "isolationMode": "CONFIDENTIAL_SANDBOX", "attestationPolicy": "eyJ2ZXJzaW9uIjoiMSJ9" });
    let request = json!({
        "family": family,
        "containerDefinitions": [{
            "name": "app", "image": "app:1", "memory": 256, "futureContainerMember": { "on": true },
        }],
        "trustedExecutionConfiguration": trusted,
        "enableFaultInjection": true,
        "tags": [{ "key": "team", "value": "shop" }],
    });
    let registered = world.ecs_json("RegisterTaskDefinition", &request).await.unwrap();
    let definition = &registered["taskDefinition"];
    assert_eq!(definition["trustedExecutionConfiguration"], trusted);
    assert_eq!(definition["enableFaultInjection"], true);
    assert_eq!(definition["containerDefinitions"][0]["futureContainerMember"], json!({ "on": true }));
    assert!(definition.get("tags").is_none(), "tags are not a member of the task definition");

    let arn = definition["taskDefinitionArn"].as_str().unwrap();
    let described =
        world.ecs_json("DescribeTaskDefinition", &json!({ "taskDefinition": arn, "include": ["TAGS"] })).await.unwrap();
    assert_eq!(described["taskDefinition"]["trustedExecutionConfiguration"], trusted);
    assert_eq!(described["taskDefinition"]["enableFaultInjection"], true);
    assert_eq!(described["taskDefinition"]["containerDefinitions"][0]["futureContainerMember"], json!({ "on": true }));
    assert_eq!(described["tags"], json!([{ "key": "team", "value": "shop" }]));

    // The SDK, which models neither, still reads the rest.
    let (sdk, _) = world.task_definition(arn).await;
    assert_eq!(sdk.container_definitions()[0].image(), Some("app:1"));
    // A revision registered without them does not inherit them.
    let plain = world.register(&family, "app:2", "stage", false).await;
    let described = world.ecs_json("DescribeTaskDefinition", &json!({ "taskDefinition": plain })).await.unwrap();
    assert!(described["taskDefinition"].get("trustedExecutionConfiguration").is_none());
}

#[tokio::test]
async fn the_state_table_is_installed_from_the_template() {
    use aws_sdk_dynamodb::types::{BillingMode, KeyType, SseStatus, TimeToLiveStatus};

    let world = World::new().await;
    let table = world.name("state");
    let installed = world.aws.install_table(&table, REGION).await;
    assert!(installed.created && installed.skipped.is_empty(), "{installed:?}");
    assert!(!world.aws.install_table(&table, REGION).await.created, "installing twice keeps the table");

    let dynamodb = aws_sdk_dynamodb::Client::new(&world.config);
    let description = dynamodb.describe_table().table_name(&table).send().await.unwrap().table.unwrap();
    let keys: Vec<_> = description.key_schema().iter().map(|k| (k.attribute_name(), k.key_type().clone())).collect();
    assert_eq!(keys, [("pk", KeyType::Hash), ("sk", KeyType::Range)]);
    let billing = description.billing_mode_summary().and_then(|b| b.billing_mode()).cloned();
    assert_eq!(billing, Some(BillingMode::PayPerRequest));
    let index = &description.global_secondary_indexes()[0];
    assert_eq!(index.index_name(), Some("pending"));
    let index_keys: Vec<_> = index.key_schema().iter().map(|k| k.attribute_name()).collect();
    assert_eq!(index_keys, ["pending", "sk"]);
    assert_eq!(description.sse_description().and_then(|s| s.status()), Some(&SseStatus::Enabled));
    assert_eq!(description.deletion_protection_enabled(), Some(true));

    let ttl = dynamodb.describe_time_to_live().table_name(&table).send().await.unwrap();
    let ttl = ttl.time_to_live_description.unwrap();
    assert_eq!(
        (ttl.attribute_name(), ttl.time_to_live_status()),
        (Some("expires_at"), Some(&TimeToLiveStatus::Enabled))
    );
    let backups = dynamodb.describe_continuous_backups().table_name(&table).send().await.unwrap();
    let pitr = backups.continuous_backups_description.unwrap().point_in_time_recovery_description.unwrap();
    assert_eq!(pitr.point_in_time_recovery_status().map(|s| s.as_str()), Some("ENABLED"));
}

#[tokio::test]
async fn inject_fault_keeps_working_in_the_protocols_format() {
    let world = World::new().await;
    let mark = mark(&world);
    world.aws.inject_fault("GetParameter", &mark, "InvalidKeyId", 400, 1).await;
    let error = ssm(&world, 3).get_parameter().name(format!("/{mark}/p")).send().await.unwrap_err();
    assert_eq!(failure(&error), ("InvalidKeyId".into(), "injected fault".into(), 400));
    assert!(matches!(
        error.into_service_error(),
        aws_sdk_ssm::operation::get_parameter::GetParameterError::InvalidKeyId(_)
    ));
}
