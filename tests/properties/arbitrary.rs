//! What the properties draw from: arbitrary text (unicode, control characters, the words the
//! parsers look for), JSON values, mutations of a document, and the shapes several subjects share.

use chrono::{DateTime, SecondsFormat};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Words the parsers look for, so that arbitrary input often gets past their first checks.
pub const WORDS: &[&str] = &[
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
    "https://stage.internal/health",
    "http://127.0.0.1:8080/health",
    "https://169.254.169.254/latest/meta-data/",
    "arn:aws:iam::210987654321:role/conveyor-target",
    "eu-west-1",
    "210987654321",
    "",
];

/// Keys the parsers read (events, config, promote), plus the empty key.
pub const KEYS: &[&str] = &[
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
    "health_allow_http",
    "role_arn",
    "slack_webhook_parameter",
    "rollout_timeout_seconds",
    "registry",
    "targets",
    "parallel",
    "from",
    "promotion",
    "approval",
    "approvers",
    "approval_timeout",
    "soak",
    "alarms",
    "app",
    "tag",
    "digest",
    "dry_run",
    "force",
    "requested_by",
    "operation",
    "pause",
    "resume",
    "environment",
    "deploy_latest",
    "by",
    "",
];

/// Text of every kind: arbitrary unicode (control characters included), printable ASCII, and
/// the words the parsers look for.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[ -~]{0,24}",
        1 => "\\PC{0,12}",
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
    ]
    .boxed()
}

pub fn key() -> BoxedStrategy<String> {
    prop_oneof![3 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => text()].boxed()
}

pub fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        (0u64..100_000).prop_map(Value::from),
    ]
    .boxed()
}

/// Any JSON value (depth up to 6).
pub fn json_value() -> BoxedStrategy<Value> {
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
pub enum Edit {
    Set(Value),
    Remove,
}

pub fn edit() -> BoxedStrategy<Edit> {
    prop_oneof![3 => json_value().prop_map(Edit::Set), 1 => Just(Edit::Remove)].boxed()
}

/// Applies `edit` at `path` (object keys from the root; missing objects on the way are created).
pub fn apply(document: &mut Value, path: &[&str], edit: &Edit) {
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

pub fn rfc3339(seconds: i64) -> String {
    DateTime::from_timestamp(seconds, 0).expect("in range").to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A string member of `value` at `path`, if it is one.
pub fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |node, key| node.get(key))?.as_str()
}

pub fn image_tag() -> BoxedStrategy<String> {
    prop_oneof![4 => "[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}", 1 => "[A-Za-z0-9_][A-Za-z0-9_.-]{299}"].boxed()
}

pub fn image_digest() -> BoxedStrategy<String> {
    prop_oneof!["sha256:[0-9a-f]{64}", "sha512:[0-9a-f]{128}", "[a-z0-9]{1,8}:[a-zA-Z0-9=_-]{32,80}"].boxed()
}

pub fn mutations(paths: &'static [&'static [&'static str]]) -> BoxedStrategy<Vec<(&'static [&'static str], Edit)>> {
    prop::collection::vec((prop::sample::select(paths), edit()), 1..4).boxed()
}

pub fn matches(pattern: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).expect("a valid pattern").is_match(text)
}

/// The parameter of the sample app config.
pub const PARAMETER: &str = "/conveyor/apps/shop-api";

pub fn example_config() -> Value {
    json!({
        "repository": "shop-api",
        "container": "api",
        "tags": "^(v[0-9]+\\.[0-9]+\\.[0-9]+|[0-9a-f]{7,40})$",
        "environments": {
            "stage": { "cluster": "stage-cluster", "service": "shop-api", "health_url": "https://stage.internal/health" },
            "prod": { "cluster": "prod-cluster", "service": "shop-api" },
        },
        "slack_webhook_parameter": "/conveyor/secrets/slack-webhook",
    })
}
