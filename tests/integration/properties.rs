//! Property tests of what Conveyor reads from outside — EventBridge events, app configs, promote
//! requests — and of the task-definition rewrite: arbitrary JSON values, unicode, strings of
//! megabytes, nesting far deeper than serde_json's recursion limit, a thousand containers.
//! Nothing may panic; what parses must say what the input said; the rewrite changes the one
//! container's image (and Conveyor's tags) and nothing else, and rewriting its own output with the
//! same swap gives the same request.
//!
//! Pure and offline (no local AWS, no network: the rewrite is inspected with `as_input()` on a
//! client that never sends). Case counts are sized so the whole module runs in seconds in CI. For a
//! long run, `PROPTEST_CASES=N` gives every property N cases (the heavy ones — megabyte inputs,
//! thousand-container definitions — N/10, at least 1):
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --test integration properties -- --nocapture
//! ```
//!
//! A failure is shrunk to a minimal input and printed; proptest records its seed under
//! `tests/proptest-regressions/properties.txt` so that the next run tries it first.
//!
//! Library bugs a property exposes are listed in [`KNOWN_BUGS`] (printed whenever one is hit):
//! the property keeps asserting the correct behaviour for every other input.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionInput;
#[allow(deprecated)] // InferenceAccelerator: no longer offered, still carried over
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, CpuArchitecture, EphemeralStorage, HostVolumeProperties, InferenceAccelerator,
    IpcMode, KeyValuePair, LogConfiguration, LogDriver, NetworkMode, OsFamily, PidMode, PortMapping,
    ProxyConfiguration, ProxyConfigurationType, RuntimePlatform, Secret, Tag, TaskDefinition,
    TaskDefinitionPlacementConstraint, TaskDefinitionPlacementConstraintType, TaskDefinitionStatus, Volume,
};
use chrono::{DateTime, SecondsFormat, Utc};
use conveyor::config::{AppConfig, ConfigSet, RawApp};
use conveyor::events::{self, DeploymentEventName, InvalidEvent, MonitorEvent, Skip};
use conveyor::taskdef::{self, ImageSwap, TAG_APP, TAG_IMAGE_DIGEST, TAG_IMAGE_TAG};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// Case counts and the known-bug list
// ---------------------------------------------------------------------------------------------

/// `default` cases, or `PROPTEST_CASES`.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// For properties whose every case is large: `default`, or a tenth of `PROPTEST_CASES`.
fn heavy(default: u32) -> ProptestConfig {
    let cases =
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse::<u32>().ok()).map_or(default, |n| (n / 10).max(1));
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// Library bugs found by these properties and not fixed yet: (name, what is wrong). A property
/// that meets one of these inputs prints the entry and does not fail on it; every other input is
/// held to the correct behaviour. Empty: no open bug.
const KNOWN_BUGS: &[(&str, &str)] = &[];

/// Prints and reports whether `name` is a known bug (see [`KNOWN_BUGS`]).
#[allow(dead_code)] // used while KNOWN_BUGS has entries
fn known_bug(name: &str) -> bool {
    match KNOWN_BUGS.iter().find(|(bug, _)| *bug == name) {
        Some((bug, what)) => {
            eprintln!("KNOWN BUG {bug} (not failing this case): {what}");
            true
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary text and JSON
// ---------------------------------------------------------------------------------------------

/// Words the parsers look for, so that arbitrary input often gets past their first checks.
const WORDS: &[&str] = &[
    "aws.ecr",
    "ECR Image Action",
    "PUSH",
    "SUCCESS",
    "DELETE",
    "FAILURE",
    "aws.ecs",
    "ECS Deployment State Change",
    "aws.events",
    "Scheduled Event",
    "SERVICE_DEPLOYMENT_COMPLETED",
    "SERVICE_DEPLOYMENT_FAILED",
    "SERVICE_DEPLOYMENT_IN_PROGRESS",
    "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234",
    "v1.0.0",
    "latest",
    "shop-api",
    "arn:aws:ecs:us-east-1:123456789012:service/stage/shop-api",
    "arn:aws:ecs:us-east-1:123456789012:service/shop-api",
    "2024-01-01T00:00:00Z",
    "ecs-svc/1234567890",
    "http://stage.internal/health",
    "arn:aws:iam::210987654321:role/conveyor-target",
    "eu-west-1",
    "210987654321",
    "",
];

/// Keys the parsers read (events, config, promote), plus the empty key.
const KEYS: &[&str] = &[
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
    "action-type",
    "result",
    "repository-name",
    "image-digest",
    "image-tag",
    "eventName",
    "deploymentId",
    "reason",
    "repository",
    "container",
    "tags",
    "environments",
    "stage",
    "prod",
    "cluster",
    "service",
    "health_url",
    "role_arn",
    "slack_webhook_parameter",
    "rollout_timeout_seconds",
    "app",
    "tag",
    "digest",
    "dry_run",
    "force",
    "requested_by",
    "",
];

/// Text of every kind: arbitrary unicode (control characters included), printable ASCII, and
/// the words the parsers look for.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[ -~]{0,24}",
        1 => "\\PC{0,12}",
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
    ]
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![3 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => text()].boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        (0u64..100_000).prop_map(Value::from),
    ]
    .boxed()
}

/// Any JSON value (depth up to 6).
fn json_value() -> BoxedStrategy<Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String),];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// What a mutation does to one member of a JSON document.
#[derive(Debug, Clone)]
enum Edit {
    Set(Value),
    Remove,
}

fn edit() -> BoxedStrategy<Edit> {
    prop_oneof![3 => json_value().prop_map(Edit::Set), 1 => Just(Edit::Remove)].boxed()
}

/// Applies `edit` at `path` (object keys from the root; missing objects on the way are created).
fn apply(document: &mut Value, path: &[&str], edit: &Edit) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = document;
    for parent in parents {
        if !node.is_object() {
            *node = json!({});
        }
        node = node.as_object_mut().expect("an object").entry(parent.to_string()).or_insert_with(|| json!({}));
    }
    if let Value::Object(members) = node {
        match edit {
            Edit::Set(value) => {
                members.insert(last.to_string(), value.clone());
            }
            Edit::Remove => {
                members.remove(*last);
            }
        }
    }
}

fn rfc3339(seconds: i64) -> String {
    DateTime::from_timestamp(seconds, 0).expect("in range").to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A string member of `value` at `path`, if it is one.
fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |node, key| node.get(key))?.as_str()
}

// ---------------------------------------------------------------------------------------------
// Events: ECR pushes
// ---------------------------------------------------------------------------------------------

/// A valid ECR PUSH/SUCCESS event and the push it must parse to (tag, digest, repository,
/// account, region, seconds since the epoch, id).
#[derive(Debug, Clone)]
struct PushCase {
    event: Value,
    tag: String,
    digest: String,
    repository: String,
    account: Option<String>,
    region: Option<String>,
    time: i64,
    id: Option<String>,
}

fn image_tag() -> BoxedStrategy<String> {
    prop_oneof![4 => "[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}", 1 => "[A-Za-z0-9_][A-Za-z0-9_.-]{299}"].boxed()
}

fn image_digest() -> BoxedStrategy<String> {
    prop_oneof!["sha256:[0-9a-f]{64}", "sha512:[0-9a-f]{128}", "[a-z0-9]{1,8}:[a-zA-Z0-9=_-]{32,80}"].boxed()
}

fn valid_push() -> impl Strategy<Value = PushCase> {
    (
        image_tag(),
        image_digest(),
        text().prop_filter("a repository name", |r| !r.is_empty()),
        prop::option::of(text()),
        prop::option::of(text()),
        -2_000_000_000i64..4_102_444_800,
        prop::option::of(text()),
        prop::collection::btree_map("[a-z-]{1,12}", json_value(), 0..3),
        prop::collection::btree_map("[a-z-]{1,12}", json_value(), 0..3),
    )
        .prop_map(|(tag, digest, repository, account, region, time, id, extra, extra_detail)| {
            let mut detail = json!({
                "result": "SUCCESS", "repository-name": repository, "image-digest": digest,
                "action-type": "PUSH", "image-tag": tag,
            });
            let mut event = json!({
                "version": "0", "detail-type": "ECR Image Action", "source": "aws.ecr",
                "time": rfc3339(time), "resources": [],
            });
            for (name, value) in extra_detail {
                detail.as_object_mut().expect("object").entry(name).or_insert(value);
            }
            for (name, value) in extra.into_iter().filter(|(name, _)| !KEYS.contains(&name.as_str())) {
                event.as_object_mut().expect("object").entry(name).or_insert(value);
            }
            event["detail"] = detail;
            for (name, value) in [("account", &account), ("region", &region), ("id", &id)] {
                if let Some(value) = value {
                    event[name] = json!(value);
                }
            }
            PushCase { event, tag, digest, repository, account, region, time, id }
        })
}

/// Paths of an ECR event a mutation may hit.
const PUSH_PATHS: &[&[&str]] = &[
    &["source"],
    &["detail-type"],
    &["detail"],
    &["time"],
    &["id"],
    &["account"],
    &["region"],
    &["resources"],
    &["version"],
    &["detail", "action-type"],
    &["detail", "result"],
    &["detail", "repository-name"],
    &["detail", "image-digest"],
    &["detail", "image-tag"],
];

fn mutations(paths: &'static [&'static [&'static str]]) -> BoxedStrategy<Vec<(&'static [&'static str], Edit)>> {
    prop::collection::vec((prop::sample::select(paths), edit()), 1..4).boxed()
}

/// What `push` returned must agree with the event (soundness, whatever the input).
fn check_push_result(
    event: &Value,
    result: &Result<Result<events::Push, Skip>, InvalidEvent>,
) -> Result<(), TestCaseError> {
    let detail = |name: &str| str_at(event, &["detail", name]);
    let is_push_success = str_at(event, &["source"]) == Some("aws.ecr")
        && str_at(event, &["detail-type"]) == Some("ECR Image Action")
        && detail("action-type") == Some("PUSH")
        && detail("result") == Some("SUCCESS");
    match result {
        Ok(Ok(push)) => {
            prop_assert!(is_push_success, "a push from an event that is not a PUSH/SUCCESS: {event}");
            prop_assert_eq!(Some(push.tag.as_str()), detail("image-tag"));
            prop_assert_eq!(Some(push.digest.as_str()), detail("image-digest"));
            prop_assert_eq!(Some(push.repository.as_str()), detail("repository-name"));
            prop_assert_eq!(push.event_id.as_deref(), str_at(event, &["id"]));
            let time = str_at(event, &["time"]).and_then(|t| t.parse::<DateTime<Utc>>().ok());
            prop_assert_eq!(Some(push.time), time);
        }
        Ok(Err(Skip(reason))) => {
            // A PUSH/SUCCESS with a tag is deployed or refused as invalid, never skipped.
            let tagged = detail("image-tag").is_some_and(|t| !t.is_empty());
            prop_assert!(!(is_push_success && tagged), "a tagged PUSH/SUCCESS skipped ({reason}): {event}");
            prop_assert!(!reason.is_empty());
        }
        Err(InvalidEvent(message)) => prop_assert!(!message.is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(128))]

    /// Any JSON value at all.
    #[test]
    fn push_never_panics_on_any_json(value in json_value()) {
        let result = events::push(value.clone());
        check_push_result(&value, &result)?;
    }

    /// Any JSON object with the envelope's keys (so the detail is reached).
    #[test]
    fn push_never_panics_on_any_event_shape(members in prop::collection::btree_map(key(), json_value(), 0..10),
                                            detail in json_value()) {
        let mut event: Map<String, Value> = members.into_iter().collect();
        event.insert("detail".into(), detail);
        event.entry("source").or_insert(json!("aws.ecr"));
        event.entry("detail-type").or_insert(json!("ECR Image Action"));
        let event = Value::Object(event);
        check_push_result(&event, &events::push(event.clone()))?;
    }

    /// A valid push says exactly what its event said, unicode repository names and extra
    /// fields included.
    #[test]
    fn a_valid_push_parses_to_what_the_event_says(case in valid_push()) {
        let push = match events::push(case.event.clone()) {
            Ok(Ok(push)) => push,
            other => return Err(TestCaseError::fail(format!("{other:?} for {}", case.event))),
        };
        prop_assert_eq!(push.tag.as_str(), case.tag.as_str());
        prop_assert_eq!(push.digest.as_str(), case.digest.as_str());
        prop_assert_eq!(&push.repository, &case.repository);
        prop_assert_eq!(push.account, case.account.filter(|a| !a.is_empty()));
        prop_assert_eq!(push.region, case.region.filter(|r| !r.is_empty()));
        prop_assert_eq!(push.time.timestamp(), case.time);
        prop_assert_eq!(push.event_id, case.id);
    }

    /// A valid push with one to three members replaced by anything, or removed.
    #[test]
    fn push_is_sound_on_mutated_pushes(case in valid_push(), edits in mutations(PUSH_PATHS)) {
        let mut event = case.event;
        for (path, edit) in &edits {
            apply(&mut event, path, edit);
        }
        let result = events::push(event.clone());
        check_push_result(&event, &result)?;
        // The contract: a tagged PUSH/SUCCESS without `repository-name` or `image-digest` is invalid.
        let detail = &event["detail"];
        let tagged_push = detail["action-type"] == "PUSH" && detail["result"] == "SUCCESS"
            && event["source"] == "aws.ecr" && event["detail-type"] == "ECR Image Action"
            && detail["image-tag"].as_str().is_some_and(|t| !t.is_empty());
        let unnamed = detail.get("repository-name").is_none_or(Value::is_null)
            || detail.get("image-digest").is_none_or(Value::is_null);
        if tagged_push && unnamed {
            prop_assert!(result.is_err(), "{result:?} for {event}");
        }
    }

    /// Any text at all, as the Lambda runtime would receive it: what is not JSON never gets to
    /// the parser; what is must not make it panic.
    #[test]
    fn push_and_monitor_never_panic_on_any_text(text in prop_oneof![any::<String>(), json_value().prop_map(|v| v.to_string())]) {
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            check_push_result(&value, &events::push(value.clone()))?;
            check_monitor_result(&value, &events::monitor(value.clone()))?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events: ECS deployment state changes and the schedule
// ---------------------------------------------------------------------------------------------

/// A valid deployment event and what it must parse to.
#[derive(Debug, Clone)]
struct DeploymentCase {
    event: Value,
    name: DeploymentEventName,
    arn: String,
    account: Option<String>,
    region: Option<String>,
    cluster: Option<String>,
    service: String,
    deployment_id: String,
    reason: Option<String>,
}

/// A name part of an ARN: anything without `:` (a field separator) or `/` (a path separator).
fn arn_part() -> BoxedStrategy<String> {
    prop_oneof![text(), "[a-z0-9-]{0,16}"].prop_map(|s| s.replace([':', '/'], "")).boxed()
}

fn valid_deployment() -> impl Strategy<Value = DeploymentCase> {
    (
        prop::sample::select(vec![
            ("SERVICE_DEPLOYMENT_COMPLETED", DeploymentEventName::Completed),
            ("SERVICE_DEPLOYMENT_FAILED", DeploymentEventName::Failed),
            ("SERVICE_DEPLOYMENT_IN_PROGRESS", DeploymentEventName::InProgress),
        ]),
        (arn_part(), arn_part(), arn_part()),
        prop::option::of(arn_part().prop_filter("a cluster", |c| !c.is_empty())),
        // A service name may hold `:` (the ARN's resource is everything after the fifth field).
        text().prop_map(|s| s.replace('/', "")).prop_filter("a service", |s| !s.is_empty()),
        text().prop_filter("an id", |s| !s.is_empty()),
        prop::option::of(text()),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(
            |((event_name, name), (partition, region, account), cluster, service, deployment_id, reason, more)| {
                let resource = match &cluster {
                    Some(cluster) => format!("service/{cluster}/{service}"),
                    None => format!("service/{service}"),
                };
                let arn = format!("arn:{partition}:ecs:{region}:{account}:{resource}");
                let mut resources = vec![arn.clone()];
                resources.extend(more);
                let mut detail = json!({ "eventType": "INFO", "eventName": event_name, "deploymentId": deployment_id });
                if let Some(reason) = &reason {
                    detail["reason"] = json!(reason);
                }
                let event = json!({
                    "version": "0", "id": "e", "detail-type": "ECS Deployment State Change", "source": "aws.ecs",
                    "time": "2024-05-23T12:31:14Z", "resources": resources, "detail": detail,
                });
                let non_empty = |s: String| (!s.is_empty()).then_some(s);
                DeploymentCase {
                    event,
                    name,
                    arn,
                    account: non_empty(account),
                    region: non_empty(region),
                    cluster,
                    service,
                    deployment_id,
                    reason,
                }
            },
        )
}

const MONITOR_PATHS: &[&[&str]] = &[
    &["source"],
    &["detail-type"],
    &["detail"],
    &["time"],
    &["id"],
    &["resources"],
    &["detail", "eventName"],
    &["detail", "deploymentId"],
    &["detail", "reason"],
];

fn check_monitor_result(
    event: &Value,
    result: &Result<Result<MonitorEvent, Skip>, InvalidEvent>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(Ok(MonitorEvent::Sweep)) => {
            prop_assert_eq!(str_at(event, &["source"]), Some("aws.events"));
            prop_assert_eq!(str_at(event, &["detail-type"]), Some("Scheduled Event"));
        }
        Ok(Ok(MonitorEvent::Deployment(deployment))) => {
            prop_assert_eq!(str_at(event, &["source"]), Some("aws.ecs"));
            prop_assert_eq!(str_at(event, &["detail-type"]), Some("ECS Deployment State Change"));
            let expected = match str_at(event, &["detail", "eventName"]) {
                Some("SERVICE_DEPLOYMENT_COMPLETED") => DeploymentEventName::Completed,
                Some("SERVICE_DEPLOYMENT_FAILED") => DeploymentEventName::Failed,
                Some("SERVICE_DEPLOYMENT_IN_PROGRESS") => DeploymentEventName::InProgress,
                other => return Err(TestCaseError::fail(format!("a deployment from eventName {other:?}"))),
            };
            prop_assert_eq!(&deployment.name, &expected);
            prop_assert_eq!(Some(deployment.service_arn.as_str()), event["resources"][0].as_str());
            prop_assert_eq!(Some(deployment.deployment_id.as_str()), str_at(event, &["detail", "deploymentId"]));
            prop_assert!(!deployment.deployment_id.is_empty());
            prop_assert!(!deployment.service.is_empty() && !deployment.service.contains('/'));
            let arn_ends = deployment.service_arn.ends_with(&format!("/{}", deployment.service));
            prop_assert!(arn_ends, "service {:?} not at the end of {:?}", deployment.service, deployment.service_arn);
            if let Some(cluster) = &deployment.cluster {
                let long_form = deployment.service_arn.ends_with(&format!(":service/{cluster}/{}", deployment.service));
                prop_assert!(long_form, "cluster {:?} not in {:?}", cluster, deployment.service_arn);
            }
        }
        Ok(Err(Skip(reason))) => prop_assert!(!reason.is_empty()),
        Err(InvalidEvent(message)) => prop_assert!(!message.is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn monitor_never_panics_on_any_json(value in json_value()) {
        check_monitor_result(&value, &events::monitor(value.clone()))?;
    }

    #[test]
    fn monitor_never_panics_on_any_event_shape(members in prop::collection::btree_map(key(), json_value(), 0..10),
                                               detail in json_value(),
                                               source in prop::sample::select(vec![("aws.ecs", "ECS Deployment State Change"), ("aws.events", "Scheduled Event")])) {
        let mut event: Map<String, Value> = members.into_iter().collect();
        event.insert("detail".into(), detail);
        event.entry("source").or_insert(json!(source.0));
        event.entry("detail-type").or_insert(json!(source.1));
        let event = Value::Object(event);
        check_monitor_result(&event, &events::monitor(event.clone()))?;
    }

    /// Service ARNs in both formats, any partition, region, account, cluster and service name.
    #[test]
    fn a_valid_deployment_event_parses_to_what_it_says(case in valid_deployment()) {
        let deployment = match events::monitor(case.event.clone()) {
            Ok(Ok(MonitorEvent::Deployment(deployment))) => deployment,
            other => return Err(TestCaseError::fail(format!("{other:?} for {}", case.event))),
        };
        prop_assert_eq!(&deployment.name, &case.name);
        prop_assert_eq!(&deployment.service_arn, &case.arn);
        prop_assert_eq!(&deployment.service, &case.service);
        prop_assert_eq!(&deployment.cluster, &case.cluster);
        prop_assert_eq!(&deployment.account, &case.account);
        prop_assert_eq!(&deployment.region, &case.region);
        prop_assert_eq!(&deployment.deployment_id, &case.deployment_id);
        prop_assert_eq!(&deployment.reason, &case.reason);
    }

    #[test]
    fn monitor_is_sound_on_mutated_deployment_events(case in valid_deployment(), edits in mutations(MONITOR_PATHS)) {
        let mut event = case.event;
        for (path, edit) in &edits {
            apply(&mut event, path, edit);
        }
        check_monitor_result(&event, &events::monitor(event.clone()))?;
    }

    /// The schedule's tick is a sweep whatever else it carries.
    #[test]
    fn a_scheduled_event_is_a_sweep(detail in json_value().prop_filter("non-null", |d| !d.is_null()),
                                    extra in prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..3)) {
        let mut event = json!({ "source": "aws.events", "detail-type": "Scheduled Event", "detail": detail });
        for (name, value) in extra {
            event.as_object_mut().expect("object").entry(name).or_insert(value);
        }
        // Extra members with a known name but the wrong type make it not an event at all.
        let result = events::monitor(event.clone());
        let typed = ["version", "id", "account", "time", "region", "resources"]
            .iter()
            .all(|k| event.get(*k).is_none());
        if typed {
            prop_assert_eq!(result, Ok(Ok(MonitorEvent::Sweep)));
        } else {
            check_monitor_result(&event, &result)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Huge and deep inputs (events, config, promote)
// ---------------------------------------------------------------------------------------------

/// A string of `bytes` bytes (about) made of `unit` repeated.
fn huge(unit: &str, bytes: usize) -> String {
    let unit = if unit.is_empty() { "x" } else { unit };
    unit.repeat(bytes / unit.len() + 1)
}

/// `depth` levels of arrays or objects around `core`, as text.
fn nested(depth: usize, objects: bool, core: &str) -> String {
    if objects {
        format!("{}{core}{}", r#"{"detail":"#.repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{core}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

const PARAMETER: &str = "/conveyor/apps/shop-api";

fn example_config() -> Value {
    json!({
        "repository": "shop-api",
        "container": "api",
        "tags": "^(v[0-9]+\\.[0-9]+\\.[0-9]+|[0-9a-f]{7,40})$",
        "environments": {
            "stage": { "cluster": "stage-cluster", "service": "shop-api", "health_url": "http://stage.internal/health" },
            "prod": { "cluster": "prod-cluster", "service": "shop-api" },
        },
        "slack_webhook_parameter": "/conveyor/secrets/slack-webhook",
    })
}

/// Every member of every input a megabyte-sized string may replace.
const HUGE_TARGETS: &[(&str, &[&str])] = &[
    ("push", &["detail", "image-tag"]),
    ("push", &["detail", "repository-name"]),
    ("push", &["detail", "image-digest"]),
    ("push", &["detail-type"]),
    ("push", &["source"]),
    ("push", &["time"]),
    ("push", &["id"]),
    ("monitor", &["resources"]),
    ("monitor", &["detail", "deploymentId"]),
    ("monitor", &["detail", "reason"]),
    ("monitor", &["detail", "eventName"]),
    ("config", &["repository"]),
    ("config", &["container"]),
    ("config", &["tags"]),
    ("config", &["environments", "stage", "cluster"]),
    ("config", &["environments", "prod", "health_url"]),
    ("config", &["environments", "prod", "role_arn"]),
    ("config", &["slack_webhook_parameter"]),
    ("config", &["a-huge-unknown-key"]),
    ("promote", &["app"]),
    ("promote", &["tag"]),
    ("promote", &["digest"]),
    ("promote", &["reason"]),
    ("promote", &["requested_by"]),
];

fn sample_push() -> Value {
    json!({
        "version": "0", "id": "13cde686", "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": "123456789012", "time": "2019-11-16T01:54:34Z", "region": "us-west-2", "resources": [],
        "detail": { "result": "SUCCESS", "repository-name": "shop-api", "action-type": "PUSH", "image-tag": "v1.0.0",
                    "image-digest": "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234" },
    })
}

fn sample_deployment() -> Value {
    json!({
        "version": "0", "id": "ddca6449", "detail-type": "ECS Deployment State Change", "source": "aws.ecs",
        "account": "111122223333", "time": "2020-05-23T12:31:14Z", "region": "us-west-2",
        "resources": ["arn:aws:ecs:us-west-2:111122223333:service/default/servicetest"],
        "detail": { "eventType": "INFO", "eventName": "SERVICE_DEPLOYMENT_FAILED", "deploymentId": "ecs-svc/123",
                    "reason": "ECS deployment circuit breaker: task failed to start." },
    })
}

/// Runs the parser `kind` names on `document` given as text (as the runtime and SSM give it).
fn parse_text(kind: &str, text: &str) -> Result<(), TestCaseError> {
    match kind {
        "config" => {
            match AppConfig::parse(PARAMETER, "shop-api", text) {
                Ok(_) => {}
                Err(error) => {
                    prop_assert_eq!(&error.parameter, PARAMETER);
                    prop_assert!(!error.key.is_empty());
                }
            }
            let set = ConfigSet::from_parameters(
                "/conveyor/apps/",
                [RawApp { parameter: PARAMETER, value: text, version: 1, modified: None }],
            );
            prop_assert_eq!(set.apps.len() + set.invalid.len(), 1);
        }
        _ => {
            let Ok(value) = serde_json::from_str::<Value>(text) else { return Ok(()) };
            match kind {
                "push" => check_push_result(&value, &events::push(value.clone()))?,
                "monitor" => check_monitor_result(&value, &events::monitor(value.clone()))?,
                _ => {
                    let _ = conveyor::promote::parse_request(value);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(heavy(4))]

    /// One member replaced by a string of 1 to 2 MiB (ASCII, multi-byte unicode, escapes).
    #[test]
    fn megabyte_strings_never_panic(target in prop::sample::select(HUGE_TARGETS),
                                    unit in prop_oneof![Just("a".to_owned()), Just("é€𝄞".to_owned()), Just("\\\"\n\u{0}".to_owned()), "\\PC{1,4}"],
                                    mib in 1usize..=2,
                                    as_array in any::<bool>()) {
        let (kind, path) = target;
        let big = huge(&unit, mib << 20);
        let mut document = match kind {
            "push" => sample_push(),
            "monitor" => sample_deployment(),
            "config" => example_config(),
            _ => json!({ "app": "shop-api", "tag": "v1.4.2" }),
        };
        let value = if as_array { json!([big]) } else { json!(big) };
        apply(&mut document, path, &Edit::Set(value));
        parse_text(kind, &document.to_string())?;
        // The same in memory (the library's callers that do not go through text).
        match kind {
            "push" => check_push_result(&document, &events::push(document.clone()))?,
            "monitor" => check_monitor_result(&document, &events::monitor(document.clone()))?,
            "promote" => { let _ = conveyor::promote::parse_request(document); }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// Arrays or objects nested 100 to 20,000 deep, in place of the whole document or one member:
    /// past serde_json's recursion limit (128) the text is refused with an error, below it the
    /// parsers see it; nothing panics.
    #[test]
    fn deep_nesting_never_panics(kind in prop::sample::select(vec!["push", "monitor", "config", "promote"]),
                                 depth in prop_oneof![100usize..128, 128usize..20_000],
                                 objects in any::<bool>(),
                                 whole in any::<bool>()) {
        let deep = nested(depth, objects, "1");
        let text = if whole {
            deep
        } else {
            let mut document = match kind {
                "push" => sample_push(),
                "monitor" => sample_deployment(),
                "config" => example_config(),
                _ => json!({ "app": "shop-api", "tag": "v1.4.2" }),
            };
            let member = match kind { "config" => "environments", "promote" => "reason", _ => "detail" };
            document[member] = json!("@DEEP@");
            document.to_string().replace("\"@DEEP@\"", &deep)
        };
        if depth >= 128 {
            prop_assert!(serde_json::from_str::<Value>(&text).is_err(), "serde_json's recursion limit");
        }
        parse_text(kind, &text)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Config validation
// ---------------------------------------------------------------------------------------------

/// The contract's patterns (the validator's are private: these say what a valid config is).
const NAME_PATTERN: &str = "[A-Za-z0-9_-]{1,40}";
const REPOSITORY_PATTERN: &str = "([a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}/){0,2}[a-z0-9]{1,8}([._-][a-z0-9]{1,6}){0,2}";

#[derive(Debug, Clone)]
struct TargetCase {
    cluster: String,
    service: String,
    health_url: Option<String>,
    region: Option<String>,
    /// The role's account (and, when `with_account`, also given as `account`).
    role_account: Option<String>,
    with_account: bool,
}

fn target() -> impl Strategy<Value = TargetCase> {
    (
        NAME_PATTERN,
        NAME_PATTERN,
        prop::option::of("https?://[a-z0-9.-]{1,20}(:[0-9]{2,5})?(/[!-~]{0,20})?"),
        prop::option::of("[a-z]{2}-[a-z]{3,9}-[0-9]"),
        prop::option::of("[0-9]{12}"),
        any::<bool>(),
    )
        .prop_map(|(cluster, service, health_url, region, role_account, with_account)| TargetCase {
            cluster,
            service,
            health_url,
            region,
            role_account,
            with_account,
        })
}

impl TargetCase {
    fn json(&self) -> Value {
        let mut value = json!({ "cluster": self.cluster, "service": self.service });
        if let Some(url) = &self.health_url {
            value["health_url"] = json!(url);
        }
        if let Some(region) = &self.region {
            value["region"] = json!(region);
        }
        if let Some(account) = &self.role_account {
            value["role_arn"] = json!(format!("arn:aws:iam::{account}:role/conveyor-target"));
            if self.with_account {
                value["account"] = json!(account);
            }
        }
        value
    }

    fn same_service(&self, other: &TargetCase) -> bool {
        (&self.cluster, &self.service, &self.region, &self.role_account)
            == (&other.cluster, &other.service, &other.region, &other.role_account)
    }
}

#[derive(Debug, Clone)]
struct ConfigCase {
    app: String,
    repository: String,
    container: String,
    tags: Option<String>,
    stage: TargetCase,
    prod: TargetCase,
    slack: Option<String>,
    timeout: Option<u64>,
}

impl ConfigCase {
    fn json(&self) -> Value {
        let mut value = json!({
            "repository": self.repository, "container": self.container,
            "environments": { "stage": self.stage.json(), "prod": self.prod.json() },
        });
        if let Some(tags) = &self.tags {
            value["tags"] = json!(tags);
        }
        if let Some(slack) = &self.slack {
            value["slack_webhook_parameter"] = json!(slack);
        }
        if let Some(timeout) = self.timeout {
            value["rollout_timeout_seconds"] = json!(timeout);
        }
        value
    }
}

fn valid_config() -> impl Strategy<Value = ConfigCase> {
    (
        "[a-z0-9][a-z0-9-]{0,62}",
        REPOSITORY_PATTERN,
        NAME_PATTERN,
        prop::option::of(prop_oneof![Just("^v[0-9]+$".to_owned()), Just(".*".to_owned()), "[a-z0-9]{1,8}"]),
        target(),
        target(),
        prop::option::of("/?[A-Za-z0-9_.\\-/]{1,60}"),
        prop::option::of(1u64..=86_400),
    )
        .prop_filter("stage and prod are two services", |(_, _, _, _, stage, prod, _, _)| !stage.same_service(prod))
        .prop_map(|(app, repository, container, tags, stage, prod, slack, timeout)| ConfigCase {
            app,
            repository,
            container,
            tags,
            stage,
            prod,
            slack,
            timeout,
        })
}

/// Every key path of a config, and some that are not (unknown keys at every level).
const CONFIG_PATHS: &[&[&str]] = &[
    &["repository"],
    &["container"],
    &["tags"],
    &["environments"],
    &["slack_webhook_parameter"],
    &["rollout_timeout_seconds"],
    &["environments", "stage"],
    &["environments", "prod"],
    &["environments", "qa"],
    &["environments", "stage", "cluster"],
    &["environments", "stage", "service"],
    &["environments", "stage", "health_url"],
    &["environments", "stage", "account"],
    &["environments", "stage", "region"],
    &["environments", "stage", "role_arn"],
    &["environments", "prod", "cluster"],
    &["environments", "prod", "service"],
    &["environments", "prod", "role_arn"],
    &["environments", "prod", "port"],
    &["colour"],
];

fn matches(pattern: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).expect("a valid pattern").is_match(text)
}

/// An accepted config satisfies every rule of the contract (soundness); an error names the
/// parameter and a key.
fn check_config_result(result: &Result<AppConfig, conveyor::config::ConfigError>) -> Result<(), TestCaseError> {
    match result {
        Ok(app) => {
            let name = r"[A-Za-z0-9_-]{1,255}";
            prop_assert!(matches(r"[a-z0-9][a-z0-9-]{0,62}", app.name.as_str()), "app {}", app.name);
            let repository = r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*";
            prop_assert!(matches(repository, &app.repository), "repository {:?}", app.repository);
            prop_assert!(matches(name, &app.container), "container {:?}", app.container);
            for target in [&app.stage, &app.prod] {
                prop_assert!(matches(name, &target.cluster), "cluster {:?}", target.cluster);
                prop_assert!(matches(name, &target.service), "service {:?}", target.service);
                if let Some(url) = &target.health_url {
                    prop_assert!(url.starts_with("http://") || url.starts_with("https://"), "{url}");
                }
                if let Some(account) = &target.account {
                    prop_assert!(matches("[0-9]{12}", account), "account {:?}", account);
                    let role_there =
                        target.role_arn.as_deref().is_some_and(|arn| arn.contains(&format!("::{account}:role/")));
                    prop_assert!(role_there, "role {:?} not in account {}", target.role_arn, account);
                }
            }
            prop_assert!(!app.stage.same_service(&app.prod));
            prop_assert!((1..=86_400).contains(&app.rollout_timeout.as_secs()));
            prop_assert_eq!(&app.parameter, PARAMETER);
        }
        Err(error) => {
            prop_assert_eq!(&error.parameter, PARAMETER);
            // Only an unknown key that is the empty string is named as such.
            prop_assert!(!error.key.is_empty() || error.problem.contains("unknown key"), "{}", error);
            let message = error.to_string();
            prop_assert!(message.contains(PARAMETER), "{}", message);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(128))]

    /// Any text as the parameter's value, any text as the app's name.
    #[test]
    fn config_parse_never_panics_on_any_text(app in prop_oneof![text(), Just("shop-api".to_owned())],
                                             value in prop_oneof![any::<String>(), json_value().prop_map(|v| v.to_string())]) {
        let result = AppConfig::parse(PARAMETER, &app, &value);
        if let Ok(config) = &result {
            prop_assert_eq!(config.name.as_str(), app.as_str());
        }
        check_config_result(&result)?;
    }

    /// A config built from the contract's rules is accepted and read as written.
    #[test]
    fn a_valid_config_is_accepted_as_written(case in valid_config()) {
        let parameter = format!("/conveyor/apps/{}", case.app);
        let app = AppConfig::parse(&parameter, &case.app, &case.json().to_string())
            .map_err(|e| TestCaseError::fail(format!("{e} for {}", case.json())))?;
        prop_assert_eq!(app.name.as_str(), case.app.as_str());
        prop_assert_eq!(&app.repository, &case.repository);
        prop_assert_eq!(&app.container, &case.container);
        prop_assert_eq!(&app.slack_webhook_parameter, &case.slack);
        prop_assert_eq!(app.rollout_timeout.as_secs(), case.timeout.unwrap_or(1800));
        for (target, expected) in [(&app.stage, &case.stage), (&app.prod, &case.prod)] {
            prop_assert_eq!(&target.cluster, &expected.cluster);
            prop_assert_eq!(&target.service, &expected.service);
            prop_assert_eq!(&target.health_url, &expected.health_url);
            prop_assert_eq!(&target.region, &expected.region);
            prop_assert_eq!(&target.account, &expected.role_account);
        }
    }

    /// A valid config with one to three members replaced by anything, removed, or added.
    #[test]
    fn config_validation_is_sound_on_mutated_configs(case in valid_config(), edits in mutations(CONFIG_PATHS)) {
        let mut document = case.json();
        for (path, edit) in &edits {
            apply(&mut document, path, edit);
        }
        let result = AppConfig::parse(PARAMETER, "shop-api", &document.to_string());
        check_config_result(&result)?;
        // An unknown key anywhere makes it invalid.
        for unknown in ["/environments/qa", "/environments/prod/port", "/colour"] {
            if document.pointer(unknown).is_some() && result.is_ok() {
                return Err(TestCaseError::fail(format!("unknown key {unknown} accepted: {document}")));
            }
        }
    }

    /// Any member name that is not a config key is refused, and the error names it.
    #[test]
    fn an_unknown_key_is_named(name in text().prop_filter("not a key", |k| !KEYS.contains(&k.as_str())),
                               value in json_value(),
                               level in 0usize..3) {
        let mut document = example_config();
        let path: Vec<&str> = match level {
            0 => vec![&name],
            1 => vec!["environments", &name],
            _ => vec!["environments", "prod", &name],
        };
        apply(&mut document, &path, &Edit::Set(value));
        let error = AppConfig::parse(PARAMETER, "shop-api", &document.to_string()).expect_err("an unknown key");
        prop_assert_eq!(error.key, path.join("."));
        prop_assert!(error.problem.contains("unknown key"));
    }

    /// Any `tags` text: a regular expression or an error on `tags`, never a panic (nor a
    /// runaway compile: the size limit holds).
    #[test]
    fn any_tag_pattern_is_compiled_or_refused(pattern in prop_oneof![any::<String>(), "[(){}\\[\\]*+?|^$.\\\\a-z0-9,]{0,40}"]) {
        let mut document = example_config();
        document["tags"] = json!(pattern);
        match AppConfig::parse(PARAMETER, "shop-api", &document.to_string()) {
            Ok(_) => prop_assert!(regex::Regex::new(&pattern).is_ok() || pattern.len() > 1000),
            Err(error) => prop_assert_eq!(error.key, "tags"),
        }
    }

    /// `rollout_timeout_seconds`: whole seconds from 1 to 86400, anything else refused.
    #[test]
    fn rollout_timeouts_are_whole_seconds_in_range(value in prop_oneof![number(), json_value()]) {
        let mut document = example_config();
        document["rollout_timeout_seconds"] = value.clone();
        let result = AppConfig::parse(PARAMETER, "shop-api", &document.to_string());
        match value.as_u64() {
            _ if value.is_null() => prop_assert_eq!(result.map(|a| a.rollout_timeout.as_secs()).ok(), Some(1800)),
            Some(seconds @ 1..=86_400) => prop_assert_eq!(result.map(|a| a.rollout_timeout.as_secs()).ok(), Some(seconds)),
            _ => {
                let key = result.map_err(|e| e.key).err();
                prop_assert_eq!(key.as_deref(), Some("rollout_timeout_seconds"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config sets: many apps, some invalid, some claiming the same services
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ParameterCase {
    name: String,
    value: String,
    version: i64,
    minute: Option<i64>,
}

/// Up to eight parameters: valid apps on few services (so claims collide), invalid ones, junk.
fn parameters() -> impl Strategy<Value = Vec<ParameterCase>> {
    let app = (
        prop::sample::select(vec!["stage-a", "stage-b", "prod-a"]),
        prop::sample::select(vec!["api", "web"]),
        prop::sample::select(vec!["prod-a", "prod-b", "stage-a"]),
        prop::sample::select(vec!["api", "web", "worker"]),
        prop::option::of(prop::sample::select(vec!["eu-west-1", "us-east-1"])),
    )
        .prop_map(|(stage_cluster, stage_service, prod_cluster, prod_service, region)| {
            let mut config = example_config();
            config["environments"]["stage"] = json!({ "cluster": stage_cluster, "service": stage_service });
            config["environments"]["prod"] = json!({ "cluster": prod_cluster, "service": prod_service });
            if let Some(region) = region {
                config["environments"]["prod"]["region"] = json!(region);
            }
            config.to_string()
        });
    let value = prop_oneof![6 => app, 1 => any::<String>(), 1 => json_value().prop_map(|v| v.to_string())];
    let name = prop_oneof![6 => "[a-z][a-z0-9-]{0,6}", 1 => text()];
    prop::collection::btree_map(name, (value, any::<i64>(), prop::option::of(0i64..20)), 0..8).prop_map(|apps| {
        apps.into_iter()
            .map(|(name, (value, version, minute))| ParameterCase {
                name: format!("/c/apps/{name}"),
                value,
                version,
                minute,
            })
            .collect()
    })
}

fn config_set(cases: &[ParameterCase]) -> ConfigSet {
    ConfigSet::from_parameters(
        "/c/apps/",
        cases.iter().map(|p| RawApp {
            parameter: &p.name,
            value: &p.value,
            version: p.version,
            modified: p.minute.and_then(|m| DateTime::from_timestamp(1_700_000_000 + m * 60, 0)),
        }),
    )
}

/// Which parameters were valid, which invalid (and why, by key).
fn partition(set: &ConfigSet) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let valid = set.apps.iter().map(|a| a.parameter.clone()).collect();
    let invalid = set.invalid.iter().map(|i| (i.error.parameter.clone(), i.error.key.clone())).collect();
    (valid, invalid)
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn every_parameter_is_either_an_app_or_an_error(cases in parameters()) {
        let set = config_set(&cases);
        let (valid, invalid) = partition(&set);
        prop_assert_eq!(valid.len() + invalid.len(), cases.len(), "each parameter exactly once");
        prop_assert_eq!(set.apps.len(), valid.len());
        prop_assert_eq!(set.invalid.len(), invalid.len());
        for case in &cases {
            prop_assert!(valid.contains(&case.name) != invalid.contains_key(&case.name), "{}", case.name);
        }
        // No service belongs to two apps (nor to both environments of one).
        let mut claimed = Vec::new();
        for app in &set.apps {
            for target in [&app.stage, &app.prod] {
                prop_assert!(!claimed.iter().any(|other: &&conveyor::config::ServiceTarget| other.same_service(target)),
                    "{} claimed twice", target.label());
                claimed.push(target);
            }
        }
        // Sorted by name; every invalid app keeps its version.
        prop_assert!(set.apps.windows(2).all(|w| w[0].name < w[1].name));
        for invalid in &set.invalid {
            let case = cases.iter().find(|c| c.name == invalid.error.parameter).expect("an input");
            prop_assert_eq!(invalid.version, case.version);
        }
    }

    /// The order SSM lists parameters in changes nothing (the earlier written keeps a service).
    #[test]
    fn the_order_of_parameters_does_not_matter(cases in parameters(), seed in any::<u64>()) {
        let mut shuffled = cases.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(partition(&config_set(&cases)), partition(&config_set(&shuffled)));
    }
}

// ---------------------------------------------------------------------------------------------
// Promote requests
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn promote_requests_never_panic_and_valid_ones_parse(
        members in prop::collection::btree_map(key(), json_value(), 0..6),
        app in prop_oneof![text(), "[a-z0-9][a-z0-9-]{0,62}"],
        image in prop_oneof![image_tag().prop_map(|t| ("tag", t)), image_digest().prop_map(|d| ("digest", d))],
        reason in prop::option::of("[ -~]{0,256}"),
    ) {
        let mut request = json!({ "app": app });
        request[image.0] = json!(image.1);
        if let Some(reason) = &reason {
            request["reason"] = json!(reason);
        }
        let valid_app = matches(r"[a-z0-9][a-z0-9-]{0,62}", &app);
        match conveyor::promote::parse_request(request.clone()) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.app.as_str(), app.as_str());
                prop_assert_eq!(parsed.reason, reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()));
            }
            Err(error) => prop_assert!(!valid_app, "{error} for {request}"),
        }
        // The same with arbitrary members mixed in: an error or a request, never a panic.
        for (name, value) in members {
            request[name] = value;
        }
        let _ = conveyor::promote::parse_request(request);
    }
}

// ---------------------------------------------------------------------------------------------
// The task-definition rewrite
// ---------------------------------------------------------------------------------------------

fn offline_ecs() -> aws_sdk_ecs::Client {
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
        .region(aws_sdk_ecs::config::Region::new("us-east-1"))
        .build();
    aws_sdk_ecs::Client::from_conf(config)
}

fn container(name: String) -> impl Strategy<Value = ContainerDefinition> {
    (
        (prop::option::of(text()), any::<i32>(), prop::option::of(any::<i32>()), prop::option::of(any::<bool>())),
        prop::collection::vec((prop::option::of(text()), prop::option::of(text())), 0..3),
        prop::collection::vec((text(), text()), 0..2),
        prop::collection::vec(text(), 0..3),
        prop::collection::hash_map(text(), text(), 0..3),
        prop::option::of((text(), prop::collection::hash_map(text(), text(), 0..2))),
        prop::collection::vec((any::<i32>(), prop::option::of(text())), 0..2),
    )
        .prop_map(move |((image, cpu, memory, essential), environment, secrets, command, labels, logs, ports)| {
            let mut container = ContainerDefinition::builder()
                .name(&name)
                .set_image(image)
                .cpu(cpu)
                .set_memory(memory)
                .set_essential(essential)
                .set_command(Some(command).filter(|c| !c.is_empty()))
                .set_docker_labels(Some(labels).filter(|l| !l.is_empty()));
            for (name, value) in environment {
                container = container.environment(KeyValuePair::builder().set_name(name).set_value(value).build());
            }
            for (name, value_from) in secrets {
                container =
                    container.secrets(Secret::builder().name(name).value_from(value_from).build().expect("complete"));
            }
            if let Some((driver, options)) = logs {
                container = container.log_configuration(
                    LogConfiguration::builder()
                        .log_driver(LogDriver::from(driver.as_str()))
                        .set_options(Some(options))
                        .build()
                        .expect("complete"),
                );
            }
            for (port, name) in ports {
                container = container.port_mappings(PortMapping::builder().container_port(port).set_name(name).build());
            }
            container.build()
        })
}

/// A container with a name, an image and an environment (for definitions of a thousand).
fn light_container(name: String) -> impl Strategy<Value = ContainerDefinition> {
    (prop::option::of("[ -~]{0,40}"), prop::collection::vec(("[A-Z_]{1,8}", "[ -~]{0,12}"), 0..3)).prop_map(
        move |(image, environment)| {
            let mut container = ContainerDefinition::builder().name(&name).set_image(image).memory(128);
            for (name, value) in environment {
                container = container.environment(KeyValuePair::builder().name(name).value(value).build());
            }
            container.build()
        },
    )
}

/// Container names: unique, arbitrary text after a distinct prefix. Past 100 containers, light
/// ones (generating a thousand rich containers takes seconds per case in a debug build).
fn containers(count: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<ContainerDefinition>> {
    let light = *count.start() > 100;
    prop::collection::vec(if light { "[a-z0-9]{0,4}".boxed() } else { text() }, count).prop_flat_map(move |suffixes| {
        let names: Vec<String> = suffixes
            .into_iter()
            .enumerate()
            .map(|(i, suffix)| if i == 0 && suffix.is_empty() { "api".to_owned() } else { format!("{i}:{suffix}") })
            .collect();
        names
            .into_iter()
            .map(|name| if light { light_container(name).boxed() } else { container(name).boxed() })
            .collect::<Vec<_>>()
    })
}

/// Every registrable field (arbitrary values: the SDK checks none of them) and the computed ones.
#[allow(deprecated)] // inference accelerators: still carried over
fn task_definition(count: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = TaskDefinition> {
    let top = (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(prop_oneof![Just("awsvpc".to_owned()), Just("bridge".to_owned()), text()]),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(any::<bool>()),
    );
    let lists = (
        prop::collection::vec((text(), prop::option::of(text())), 0..3),
        prop::collection::vec(prop::option::of(text()), 0..2),
        prop::collection::vec(prop_oneof![Just("FARGATE".to_owned()), Just("EC2".to_owned()), text()], 0..3),
        prop::option::of((text(), prop::collection::vec((text(), text()), 0..2))),
        prop::collection::vec((text(), text()), 0..2),
        prop::option::of(any::<i32>()),
        prop::option::of((text(), text())),
        (any::<i32>(), prop::option::of(text()), prop::option::of(0i64..2_000_000_000)),
    );
    (containers(count), top, lists).prop_map(|(containers, top, lists)| {
        let (family, task_role, execution_role, network_mode, cpu, memory, pid, ipc, fault_injection) = top;
        let (volumes, constraints, compatibilities, proxy, accelerators, storage, platform, computed) = lists;
        let (revision, registered_by, registered_at) = computed;
        let mut definition = TaskDefinition::builder()
            .set_task_definition_arn(
                family.as_ref().map(|f| format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{f}:{revision}")),
            )
            .set_family(family)
            .revision(revision)
            .status(TaskDefinitionStatus::Active)
            .set_task_role_arn(task_role)
            .set_execution_role_arn(execution_role)
            .set_network_mode(network_mode.map(|m| NetworkMode::from(m.as_str())))
            .set_container_definitions(Some(containers))
            .set_cpu(cpu)
            .set_memory(memory)
            .set_pid_mode(pid.map(|p| PidMode::from(p.as_str())))
            .set_ipc_mode(ipc.map(|i| IpcMode::from(i.as_str())))
            .set_enable_fault_injection(fault_injection)
            .set_registered_by(registered_by)
            .set_registered_at(registered_at.map(aws_smithy_types::DateTime::from_secs))
            .compatibilities(Compatibility::Ec2);
        for (name, path) in volumes {
            definition = definition.volumes(
                Volume::builder()
                    .name(name)
                    .host(HostVolumeProperties::builder().set_source_path(path).build())
                    .build(),
            );
        }
        for expression in constraints {
            definition = definition.placement_constraints(
                TaskDefinitionPlacementConstraint::builder()
                    .r#type(TaskDefinitionPlacementConstraintType::MemberOf)
                    .set_expression(expression)
                    .build(),
            );
        }
        for compatibility in compatibilities {
            definition = definition.requires_compatibilities(Compatibility::from(compatibility.as_str()));
        }
        if let Some((container, properties)) = proxy {
            let mut proxy =
                ProxyConfiguration::builder().container_name(container).r#type(ProxyConfigurationType::Appmesh);
            for (name, value) in properties {
                proxy = proxy.properties(KeyValuePair::builder().name(name).value(value).build());
            }
            definition = definition.proxy_configuration(proxy.build().expect("complete"));
        }
        for (device, kind) in accelerators {
            definition = definition.inference_accelerators(
                InferenceAccelerator::builder().device_name(device).device_type(kind).build().expect("complete"),
            );
        }
        if let Some(size) = storage {
            definition = definition.ephemeral_storage(EphemeralStorage::builder().size_in_gib(size).build());
        }
        if let Some((cpu, os)) = platform {
            definition = definition.runtime_platform(
                RuntimePlatform::builder()
                    .cpu_architecture(CpuArchitecture::from(cpu.as_str()))
                    .operating_system_family(OsFamily::from(os.as_str()))
                    .build(),
            );
        }
        definition.build()
    })
}

fn tags() -> impl Strategy<Value = Vec<Tag>> {
    let key = prop_oneof![
        prop::sample::select(vec![TAG_APP, TAG_IMAGE_TAG, TAG_IMAGE_DIGEST, "team"]).prop_map(str::to_owned),
        text()
    ];
    prop::collection::vec((prop::option::of(key), prop::option::of(text())), 0..6)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| Tag::builder().set_key(k).set_value(v).build()).collect())
}

/// The swap: which container (one of the definition's, or a name it does not have), the image,
/// Conveyor's tags.
#[derive(Debug, Clone)]
struct SwapCase {
    container: Option<prop::sample::Index>,
    image: Option<String>,
    tags: Vec<(&'static str, String)>,
}

fn swap() -> impl Strategy<Value = SwapCase> {
    (
        prop::option::weighted(0.9, any::<prop::sample::Index>()),
        prop::option::weighted(
            0.9,
            prop_oneof![
                text(),
                image_digest().prop_map(|d| format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-api@{d}"))
            ],
        ),
        prop::sample::subsequence(vec![TAG_APP, TAG_IMAGE_TAG, TAG_IMAGE_DIGEST], 0..=3),
        prop::collection::vec(text(), 3),
    )
        .prop_map(|(container, image, keys, values)| SwapCase {
            container,
            image,
            tags: keys.into_iter().zip(values).collect(),
        })
}

fn container_name(definition: &TaskDefinition, case: &SwapCase) -> String {
    let names = taskdef::container_names(definition);
    match &case.container {
        Some(index) if !names.is_empty() => names[index.index(names.len())].to_owned(),
        _ => "no-such-container".to_owned(),
    }
}

fn rewrite(definition: &TaskDefinition, tags: &[Tag], swap: &ImageSwap<'_>) -> RegisterTaskDefinitionInput {
    taskdef::registration(offline_ecs().register_task_definition(), definition, tags, swap)
        .as_input()
        .clone()
        .build()
        .expect("a registration request")
}

#[path = "../support/debug_fields.rs"]
mod debug_fields;
use debug_fields::debug_fields;

/// What ECS computes: in a described definition, never in a registration.
const COMPUTED_FIELDS: [&str; 9] = [
    "compatibilities",
    "delete_requested_at",
    "deregistered_at",
    "registered_at",
    "registered_by",
    "requires_attributes",
    "revision",
    "status",
    "task_definition_arn",
];

#[allow(deprecated)] // inference accelerators: still carried over
fn check_rewrite(definition: &TaskDefinition, tags: &[Tag], case: &SwapCase) -> Result<(), TestCaseError> {
    let container = container_name(definition, case);
    let swap = ImageSwap { container: &container, image: case.image.clone(), tags: case.tags.clone() };
    let input = rewrite(definition, tags, &swap);

    // The one container's image, and nothing else of the containers.
    let expected: Option<Vec<ContainerDefinition>> = definition.container_definitions.clone().map(|containers| {
        containers
            .into_iter()
            .map(|mut c| {
                if c.name.as_deref() == Some(container.as_str()) {
                    if let Some(image) = &case.image {
                        c.image = Some(image.clone());
                    }
                }
                c
            })
            .collect()
    });
    prop_assert!(input.container_definitions == expected, "the containers changed beyond {container:?}'s image");

    // Every other field as it was.
    prop_assert_eq!(&input.family, &definition.family);
    prop_assert_eq!(&input.task_role_arn, &definition.task_role_arn);
    prop_assert_eq!(&input.execution_role_arn, &definition.execution_role_arn);
    prop_assert_eq!(&input.network_mode, &definition.network_mode);
    prop_assert_eq!(&input.volumes, &definition.volumes);
    prop_assert_eq!(&input.placement_constraints, &definition.placement_constraints);
    prop_assert_eq!(&input.requires_compatibilities, &definition.requires_compatibilities);
    prop_assert_eq!(&input.cpu, &definition.cpu);
    prop_assert_eq!(&input.memory, &definition.memory);
    prop_assert_eq!(&input.pid_mode, &definition.pid_mode);
    prop_assert_eq!(&input.ipc_mode, &definition.ipc_mode);
    prop_assert_eq!(&input.proxy_configuration, &definition.proxy_configuration);
    prop_assert_eq!(&input.inference_accelerators, &definition.inference_accelerators);
    prop_assert_eq!(&input.ephemeral_storage, &definition.ephemeral_storage);
    prop_assert_eq!(&input.runtime_platform, &definition.runtime_platform);
    prop_assert_eq!(&input.enable_fault_injection, &definition.enable_fault_injection);

    // The same, for every field the SDK has or will have: each field of the request renders as
    // the source's field of that name, and what the request lacks is what ECS computes.
    let request = debug_fields(&format!("{input:#?}"));
    let source = debug_fields(&format!("{definition:#?}"));
    for (name, value) in &request {
        if name != "container_definitions" && name != "tags" {
            prop_assert_eq!(Some(value), source.get(name), "field `{}` changed", name);
        }
    }
    let missing: Vec<&str> = source.keys().map(String::as_str).filter(|k| !request.contains_key(*k)).collect();
    prop_assert_eq!(missing, COMPUTED_FIELDS.to_vec(), "a registrable field is not carried over");

    // Tags: the source's, with Conveyor's set (replacing same-key ones, in the swap's order).
    let mut expected_tags: Vec<Tag> =
        tags.iter().filter(|t| !case.tags.iter().any(|(key, _)| t.key() == Some(key))).cloned().collect();
    expected_tags.extend(case.tags.iter().map(|(key, value)| Tag::builder().key(*key).value(value).build()));
    prop_assert_eq!(input.tags.clone(), Some(expected_tags).filter(|t| !t.is_empty()));

    // Idempotent: the registered revision, rewritten with the same swap, gives the same request.
    let (registered, registered_tags) = as_registered(&input, definition.revision + 1);
    prop_assert_eq!(rewrite(&registered, &registered_tags, &swap), input, "rewriting the rewrite changed it");
    Ok(())
}

/// The revision ECS registers for `input` (what the next rollout reads back).
#[allow(deprecated)]
fn as_registered(input: &RegisterTaskDefinitionInput, revision: i32) -> (TaskDefinition, Vec<Tag>) {
    let definition = TaskDefinition::builder()
        .set_task_definition_arn(
            input.family.as_ref().map(|f| format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{f}:{revision}")),
        )
        .revision(revision)
        .status(TaskDefinitionStatus::Active)
        .set_family(input.family.clone())
        .set_task_role_arn(input.task_role_arn.clone())
        .set_execution_role_arn(input.execution_role_arn.clone())
        .set_network_mode(input.network_mode.clone())
        .set_container_definitions(input.container_definitions.clone())
        .set_volumes(input.volumes.clone())
        .set_placement_constraints(input.placement_constraints.clone())
        .set_requires_compatibilities(input.requires_compatibilities.clone())
        .set_cpu(input.cpu.clone())
        .set_memory(input.memory.clone())
        .set_pid_mode(input.pid_mode.clone())
        .set_ipc_mode(input.ipc_mode.clone())
        .set_proxy_configuration(input.proxy_configuration.clone())
        .set_inference_accelerators(input.inference_accelerators.clone())
        .set_ephemeral_storage(input.ephemeral_storage.clone())
        .set_runtime_platform(input.runtime_platform.clone())
        .set_enable_fault_injection(input.enable_fault_injection)
        .set_registered_at(Some(aws_smithy_types::DateTime::from_secs(1_700_000_000)))
        .build();
    (definition, input.tags.clone().unwrap_or_default())
}

proptest! {
    #![proptest_config(cases(64))]

    /// Arbitrary definitions of 0 to 6 containers, every field set or not.
    #[test]
    fn the_rewrite_changes_one_image_and_is_idempotent(definition in task_definition(0..=6), tags in tags(), swap in swap()) {
        check_rewrite(&definition, &tags, &swap)?;
    }
}

proptest! {
    #![proptest_config(heavy(3))]

    /// A thousand containers.
    #[test]
    fn the_rewrite_of_a_thousand_containers_changes_one_image(definition in task_definition(1000..=1000), tags in tags(), swap in swap()) {
        check_rewrite(&definition, &tags, &swap)?;
    }
}

/// The maximal definition (every field the SDK models, realistic values) under arbitrary swaps.
#[test]
fn the_rewrite_of_the_maximal_definition_changes_one_image() {
    let (definition, tags) = maximal::maximal_task_definition("shop-api-stage", "123456789012", "us-east-1");
    let mut runner = proptest::test_runner::TestRunner::new(cases(64));
    runner.run(&swap(), |case| check_rewrite(&definition, &tags, &case)).unwrap();
}

// The shared fixture (also loaded by `taskdef_roundtrip`, privately).
#[allow(clippy::duplicate_mod)]
#[path = "../support/maximal_taskdef.rs"]
mod maximal;

// ---------------------------------------------------------------------------------------------
// unmodeled_members: what a copy through the SDK would drop
// ---------------------------------------------------------------------------------------------

/// JSON with identifier keys (so that reported paths can be read back).
fn plain_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn plain_object() -> BoxedStrategy<Value> {
    prop::collection::btree_map("[a-zA-Z]{1,4}", plain_json(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

/// Paths (`a.b[2].c`) of every object in `value`, with the object's own path ("" for the root).
fn object_paths(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            out.push(path.clone());
            for (key, member) in members {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                // Members of computed top-level fields are never compared: do not inject there.
                if !(path.is_empty() && taskdef::COMPUTED.contains(&key.as_str())) {
                    object_paths(member, child, out);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                object_paths(item, format!("{path}[{index}]"), out);
            }
        }
        _ => {}
    }
}

/// The member at a path made of identifier keys and indexes.
fn at_path<'a>(value: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut node = value;
    if path.is_empty() {
        return Some(node);
    }
    for part in path.split('.') {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
        node = node.get_mut(key)?;
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            node = node.get_mut(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(node)
}

fn non_empty(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// Arbitrary values on both sides: never a panic, and every path reported is a non-empty
    /// member of the described definition.
    #[test]
    fn unmodeled_members_never_panics(described in json_value(), request in json_value()) {
        let missing = taskdef::unmodeled_members(&described, &request);
        if !described.is_object() || !request.is_object() {
            prop_assert!(missing.is_empty());
        }
    }

    /// A request that carries everything loses nothing.
    #[test]
    fn a_complete_request_loses_nothing(described in plain_object()) {
        prop_assert_eq!(taskdef::unmodeled_members(&described, &described), Vec::<String>::new());
    }

    /// Members the request lacks are reported, exactly those, wherever they are.
    #[test]
    fn members_missing_from_the_request_are_reported(
        request in plain_object(),
        injections in prop::collection::vec((any::<prop::sample::Index>(), "new_[a-z]{1,3}", plain_json().prop_filter("non-empty", non_empty)), 0..4),
    ) {
        let mut described = request.clone();
        let mut expected = BTreeSet::new();
        for (index, key, value) in injections {
            let mut paths = Vec::new();
            object_paths(&described, String::new(), &mut paths);
            let path = paths[index.index(paths.len())].clone();
            // Not inside what an earlier injection added (that is reported as a whole).
            if expected.iter().any(|p: &String| path == *p || path.starts_with(&format!("{p}.")) || path.starts_with(&format!("{p}["))) {
                continue;
            }
            let Some(Value::Object(members)) = at_path(&mut described, &path) else { continue };
            if members.contains_key(&key) {
                continue;
            }
            members.insert(key.clone(), value);
            expected.insert(if path.is_empty() { key } else { format!("{path}.{key}") });
        }
        let missing: BTreeSet<String> = taskdef::unmodeled_members(&described, &request).into_iter().collect();
        prop_assert_eq!(missing, expected);
    }
}
