//! Huge and deep inputs (events, config, promote): megabyte strings in every member, nesting far
//! past serde_json's recursion limit — an error, never a panic or a stack overflow.

use conveyor::config::{AppConfig, ConfigSet, RawApp};
use conveyor::events;
use conveyor::web::Endpoints;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::arbitrary::*;
use crate::monitor_events::check_monitor_result;
use crate::push_events::check_push_result;
use crate::{cases, heavy};

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
            match AppConfig::parse(PARAMETER, "shop-api", text, Endpoints::Public) {
                Ok(_) => {}
                Err(error) => {
                    prop_assert_eq!(&error.parameter, PARAMETER);
                    prop_assert!(!error.key().is_empty());
                }
            }
            let set = ConfigSet::from_parameters(
                "/conveyor/apps/",
                [RawApp { parameter: PARAMETER, value: text, version: 1, modified: None }],
                Endpoints::Public,
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
