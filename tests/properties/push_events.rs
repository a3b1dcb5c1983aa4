//! ECR push events: nothing panics, a valid push parses to what the event says, a mutated one
//! is refused or still says what it says.

use chrono::{DateTime, Utc};
use conveyor::events::{self, InvalidEvent, Skip};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use crate::arbitrary::*;
use crate::cases;
use crate::monitor_events::check_monitor_result;

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

/// What `push` returned must agree with the event (soundness, whatever the input).
pub fn check_push_result(
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
