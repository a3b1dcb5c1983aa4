//! EventBridge events Conveyor receives, parsed into what the flows need.
//!
//! Lenient where the contract allows (extra fields, a missing `account`), strict where it must be:
//! a payload that is not an event, or a push that cannot be deployed as described, is an
//! [`InvalidEvent`]; anything that is simply not for Conveyor is a [`Skip`].

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::types::{ImageDigest, ImageTag};

pub const ECR_SOURCE: &str = "aws.ecr";
pub const ECR_IMAGE_ACTION: &str = "ECR Image Action";

/// A payload that is not a well-formed event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

/// Why an event is not acted on (logged, answered with success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

/// A successful ECR push of a tagged image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub event_id: Option<String>,
    pub time: DateTime<Utc>,
    pub account: Option<String>,
    pub region: Option<String>,
    pub repository: String,
    pub digest: ImageDigest,
    pub tag: ImageTag,
}

/// The `detail` of an "ECR Image Action" event; every field optional so that skips stay skips.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct EcrImageAction {
    action_type: Option<String>,
    result: Option<String>,
    repository_name: Option<String>,
    image_digest: Option<String>,
    image_tag: Option<String>,
}

/// Parses the envelope every EventBridge event has.
pub fn envelope(payload: Value) -> Result<EventBridgeEvent<Value>, InvalidEvent> {
    if !payload.is_object() {
        return Err(InvalidEvent(format!("expected an EventBridge event (a JSON object), got {payload}")));
    }
    let event: EventBridgeEvent<Value> =
        serde_json::from_value(payload).map_err(|e| InvalidEvent(format!("not an EventBridge event: {e}")))?;
    if event.detail.is_null() {
        return Err(InvalidEvent("not an EventBridge event: missing field `detail`".into()));
    }
    Ok(event)
}

/// Reads an ECR push out of an event, or says why it is not one Conveyor deploys.
pub fn push(payload: Value) -> Result<Result<Push, Skip>, InvalidEvent> {
    let event = envelope(payload)?;
    if event.source != ECR_SOURCE || event.detail_type != ECR_IMAGE_ACTION {
        return Ok(Err(Skip(format!("not an ECR image action ({} / {})", event.source, event.detail_type))));
    }
    let detail: EcrImageAction = serde_json::from_value(event.detail)
        .map_err(|e| InvalidEvent(format!("ECR Image Action with a malformed detail: {e}")))?;
    if detail.action_type.as_deref() != Some("PUSH") {
        return Ok(Err(Skip(format!("action-type {} is not PUSH", detail.action_type.as_deref().unwrap_or("(none)")))));
    }
    if detail.result.as_deref() != Some("SUCCESS") {
        return Ok(Err(Skip(format!("result {} is not SUCCESS", detail.result.as_deref().unwrap_or("(none)")))));
    }
    let Some(tag) = detail.image_tag.filter(|tag| !tag.is_empty()) else {
        return Ok(Err(Skip("push without a tag".into())));
    };
    let tag = ImageTag::parse(tag).map_err(|e| InvalidEvent(e.to_string()))?;
    let repository = detail
        .repository_name
        .filter(|name| !name.is_empty())
        .ok_or_else(|| InvalidEvent("ECR push event without `repository-name`".into()))?;
    let digest = detail
        .image_digest
        .ok_or_else(|| InvalidEvent("ECR push event without `image-digest`".into()))
        .and_then(|digest| ImageDigest::parse(digest).map_err(|e| InvalidEvent(e.to_string())))?;
    let time = event
        .time
        .ok_or_else(|| InvalidEvent("ECR push event without `time`: pushes are applied in event-time order".into()))?;
    Ok(Ok(Push {
        event_id: event.id,
        time,
        account: event.account.filter(|a| !a.is_empty()),
        region: event.region.filter(|r| !r.is_empty()),
        repository,
        digest,
        tag,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
    }

    fn shop_push() -> Value {
        let mut event = sample("ecr-image-action-push.json");
        event["detail"]["image-tag"] = json!("v1.0.0");
        event["detail"]["repository-name"] = json!("shop-api");
        event
    }

    #[test]
    fn sample_push_parses() {
        let push = push(shop_push()).unwrap().unwrap();
        assert_eq!(push.repository, "shop-api");
        assert_eq!(push.tag.as_str(), "v1.0.0");
        assert_eq!(push.account.as_deref(), Some("123456789012"));
        assert_eq!(push.region.as_deref(), Some("us-west-2"));
        assert_eq!(push.time.to_rfc3339(), "2019-11-16T01:54:34+00:00");
        assert!(push.digest.as_str().starts_with("sha256:7f5b"));
    }

    #[test]
    fn extra_fields_and_missing_account_are_fine() {
        let mut event = shop_push();
        event["detail"]["manifest-media-type"] = json!("application/vnd.oci.image.manifest.v1+json");
        event.as_object_mut().unwrap().remove("account");
        let push = push(event).unwrap().unwrap();
        assert_eq!(push.account, None);
    }

    #[track_caller]
    fn assert_skipped(event: Value, needle: &str) {
        match push(event) {
            Ok(Err(Skip(reason))) => assert!(reason.contains(needle), "{reason}"),
            other => panic!("expected a skip containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn what_is_not_a_deployable_push_is_skipped() {
        assert_skipped(sample("ecr-image-action-delete.json"), "DELETE");
        assert_skipped(sample("ecs-deployment-completed.json"), "not an ECR image action");
        assert_skipped(sample("scheduled-sweep.json"), "not an ECR image action");
        let mut failed = shop_push();
        failed["detail"]["result"] = json!("FAILURE");
        assert_skipped(failed, "FAILURE");
        let mut untagged = shop_push();
        untagged["detail"].as_object_mut().unwrap().remove("image-tag");
        assert_skipped(untagged, "without a tag");
        // A skipped event does not need the fields only a deploy needs.
        let mut delete = sample("ecr-image-action-delete.json");
        delete["detail"].as_object_mut().unwrap().remove("image-digest");
        assert_skipped(delete, "DELETE");
    }

    #[track_caller]
    fn assert_invalid(event: Value, needle: &str) {
        match push(event) {
            Err(InvalidEvent(message)) => assert!(message.contains(needle), "{message}"),
            other => panic!("expected InvalidEvent containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn malformed_payloads_are_invalid_events() {
        assert_invalid(json!("hello"), "JSON object");
        assert_invalid(json!(null), "JSON object");
        assert_invalid(json!({}), "missing field");
        assert_invalid(json!({"source": "aws.ecr", "detail-type": "ECR Image Action"}), "detail");
        assert_invalid(json!({"source": 5, "detail-type": "x", "detail": {}}), "not an EventBridge event");
        let mut no_repo = shop_push();
        no_repo["detail"].as_object_mut().unwrap().remove("repository-name");
        assert_invalid(no_repo, "repository-name");
        let mut no_digest = shop_push();
        no_digest["detail"].as_object_mut().unwrap().remove("image-digest");
        assert_invalid(no_digest, "image-digest");
        let mut bad_digest = shop_push();
        bad_digest["detail"]["image-digest"] = json!("latest");
        assert_invalid(bad_digest, "image digest");
        let mut bad_detail = shop_push();
        bad_detail["detail"] = json!(["x"]);
        assert_invalid(bad_detail, "malformed detail");
        let mut bad_time = shop_push();
        bad_time["time"] = json!("yesterday");
        assert_invalid(bad_time, "not an EventBridge event");
        let mut no_time = shop_push();
        no_time.as_object_mut().unwrap().remove("time");
        assert_invalid(no_time, "time");
    }
}
