//! EventBridge events Conveyor receives, parsed into what the flows need.
//!
//! Lenient where the contract allows (extra fields, a missing `account`), strict where it must be:
//! a payload that is not an event, or a push that cannot be deployed as described, is an
//! [`InvalidEvent`]; anything that is simply not for Conveyor is a [`Skip`].

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::types::{ImageDigest, ImageTag};

pub const ECR_SOURCE: &str = "aws.ecr";
pub const ECR_IMAGE_ACTION: &str = "ECR Image Action";
/// What a push's errors call it.
const ECR_IMAGE_ACTION_KIND: &str = "ECR push";
pub const ECS_SOURCE: &str = "aws.ecs";
pub const ECS_DEPLOYMENT_STATE_CHANGE: &str = "ECS Deployment State Change";
pub const ECS_HOOK_STATE_CHANGE: &str = "ECS Hook State Change";
pub const CLOUDWATCH_SOURCE: &str = "aws.cloudwatch";
pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";
pub const SCHEDULE_SOURCE: &str = "aws.events";
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// How far ahead of now a push's `time` may be: EventBridge stamps events with AWS's clock, so
/// a push from further in the future was not sent by ECR (a direct invoke) and, once recorded,
/// would make every real push before that time "late".
pub const MAX_CLOCK_AHEAD: TimeDelta = TimeDelta::minutes(5);
/// The longest event `id`, `account` or `region` kept, in characters (EventBridge's ids are
/// 36-character UUIDs, accounts 12 digits, regions about 20 characters): far more than AWS
/// sends, far less than a DynamoDB item can hold.
pub const MAX_ENVELOPE_MEMBER: usize = 128;

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
        event_id: bounded(ECR_IMAGE_ACTION_KIND, "id", event.id, MAX_ENVELOPE_MEMBER)?,
        time,
        account: bounded(
            ECR_IMAGE_ACTION_KIND,
            "account",
            event.account.filter(|a| !a.is_empty()),
            MAX_ENVELOPE_MEMBER,
        )?,
        region: bounded(ECR_IMAGE_ACTION_KIND, "region", event.region.filter(|r| !r.is_empty()), MAX_ENVELOPE_MEMBER)?,
        repository,
        digest,
        tag,
    }))
}

/// An envelope member of a `kind` of event, kept in the state table or matched against the apps'
/// targets: at most `limit` characters, so that no item can grow past DynamoDB's limits (the
/// value itself is not repeated in the error).
fn bounded(kind: &str, field: &str, value: Option<String>, limit: usize) -> Result<Option<String>, InvalidEvent> {
    match value {
        Some(value) if value.chars().count() > limit => Err(InvalidEvent(format!(
            "{kind} event whose `{field}` is {} characters long (at most {limit})",
            value.chars().count()
        ))),
        value => Ok(value),
    }
}

/// Refuses a push stamped more than [`MAX_CLOCK_AHEAD`] after `now`: no ECR push is, and one
/// recorded would make every real push until its time "late" (recorded, never rolled out).
pub fn not_ahead_of(push: &Push, now: DateTime<Utc>) -> Result<(), InvalidEvent> {
    if push.time > now + MAX_CLOCK_AHEAD {
        return Err(InvalidEvent(format!(
            "ECR push event from the future: its time {} is more than {} minutes after now ({}); \
             EventBridge never sends such a push",
            push.time.to_rfc3339(),
            MAX_CLOCK_AHEAD.num_minutes(),
            now.to_rfc3339()
        )));
    }
    Ok(())
}

/// What an "ECS Deployment State Change" event says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentEventName {
    InProgress,
    Completed,
    Failed,
}

/// An "ECS Deployment State Change" event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentEvent {
    pub event_id: Option<String>,
    pub time: Option<DateTime<Utc>>,
    pub service_arn: String,
    /// The service, from its ARN ([`DeploymentEvent::place`]).
    service: ServiceArn,
    pub name: DeploymentEventName,
    pub deployment_id: String,
    pub reason: Option<String>,
}

/// What deploy-monitor receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorEvent {
    Deployment(Box<DeploymentEvent>),
    /// The EventBridge schedule: reconcile every in-flight rollout.
    Sweep,
    /// The soak timer (a schedule every minute, its rule named `...-soak-timer`): end the soaks
    /// whose time is up.
    SoakTimer,
    /// A CloudWatch alarm entered ALARM: the environments gated on it fail their rollout.
    Alarm(AlarmEvent),
    /// A pause hook of a native deployment awaits action (`ECS Hook State Change`,
    /// `HOOK_AWAITING_ACTION`): an approval request. Only the service is taken from the event;
    /// the hook itself is read from ECS.
    HookAwaitingAction(HookEvent),
}

/// An `ECS Hook State Change` event: the service whose deployment a hook holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    pub event_id: Option<String>,
    pub service_arn: String,
    service: ServiceArn,
}

impl HookEvent {
    /// Where the service is.
    pub fn place(&self) -> crate::config::Place<'_> {
        self.service.place()
    }
}

/// A CloudWatch alarm that entered ALARM ("CloudWatch Alarm State Change").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmEvent {
    pub event_id: Option<String>,
    /// When it changed state (the event's time).
    pub time: DateTime<Utc>,
    /// Where the alarm is (the event's account and region).
    pub account: Option<String>,
    pub region: Option<String>,
    pub alarm: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlarmStateChange {
    alarm_name: Option<String>,
    state: Option<AlarmStateDetail>,
}

#[derive(Debug, Deserialize)]
struct AlarmStateDetail {
    value: Option<String>,
    /// When the alarm entered the state, to the millisecond (`2019-10-02T17:04:40.989+0000`).
    timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EcsDeploymentDetail {
    event_name: Option<String>,
    deployment_id: Option<String>,
    reason: Option<String>,
}

/// Reads a deployment state change or a schedule tick, or says why the event is not one.
pub fn monitor(payload: Value) -> Result<Result<MonitorEvent, Skip>, InvalidEvent> {
    let event = envelope(payload)?;
    if event.source == SCHEDULE_SOURCE && event.detail_type == SCHEDULED_EVENT {
        let soak_timer = event.resources.iter().flatten().any(|rule| rule.ends_with("-soak-timer"));
        return Ok(Ok(if soak_timer { MonitorEvent::SoakTimer } else { MonitorEvent::Sweep }));
    }
    if event.source == CLOUDWATCH_SOURCE && event.detail_type == ALARM_STATE_CHANGE {
        return alarm(event);
    }
    if event.source == ECS_SOURCE && event.detail_type == ECS_HOOK_STATE_CHANGE {
        return hook_state_change(event);
    }
    if event.source != ECS_SOURCE || event.detail_type != ECS_DEPLOYMENT_STATE_CHANGE {
        return Ok(Err(Skip(format!("not an ECS deployment state change ({} / {})", event.source, event.detail_type))));
    }
    let detail: EcsDeploymentDetail = serde_json::from_value(event.detail)
        .map_err(|e| InvalidEvent(format!("ECS Deployment State Change with a malformed detail: {e}")))?;
    let name = match detail.event_name.as_deref() {
        Some("SERVICE_DEPLOYMENT_IN_PROGRESS") => DeploymentEventName::InProgress,
        Some("SERVICE_DEPLOYMENT_COMPLETED") => DeploymentEventName::Completed,
        Some("SERVICE_DEPLOYMENT_FAILED") => DeploymentEventName::Failed,
        other => return Ok(Err(Skip(format!("deployment event {} needs no action", other.unwrap_or("(none)"))))),
    };
    let service_arn = event
        .resources
        .and_then(|resources| resources.into_iter().next())
        .ok_or_else(|| InvalidEvent("ECS deployment event without a service ARN in `resources`".into()))?;
    let service = parse_service_arn(&service_arn)
        .ok_or_else(|| InvalidEvent(format!("ECS deployment event with an invalid service ARN {service_arn:?}")))?;
    let deployment_id = detail
        .deployment_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| InvalidEvent("ECS deployment event without `deploymentId`".into()))?;
    Ok(Ok(MonitorEvent::Deployment(Box::new(DeploymentEvent {
        event_id: event.id,
        time: event.time,
        service,
        service_arn,
        name,
        deployment_id,
        reason: detail.reason,
    }))))
}

fn hook_state_change(event: EventBridgeEvent<Value>) -> Result<Result<MonitorEvent, Skip>, InvalidEvent> {
    let name = event.detail.get("eventName").and_then(Value::as_str).unwrap_or("(none)");
    if name != "HOOK_AWAITING_ACTION" {
        return Ok(Err(Skip(format!("hook event {name} needs no action"))));
    }
    // The service's ARN: in `resources` (as in deployment events), or the service deployment's
    // there or in the detail (`service-deployment/{cluster}/{service}/{id}`; the event's shape is
    // not documented: see tests/localaws/ASSUMPTIONS.md).
    let named = event.resources.into_iter().flatten().chain(
        ["serviceArn", "serviceDeploymentArn"]
            .iter()
            .filter_map(|key| event.detail.get(*key).and_then(Value::as_str).map(str::to_owned)),
    );
    let service_arn = named
        .filter_map(|arn| service_of(&arn))
        .next()
        .ok_or_else(|| InvalidEvent(format!("{ECS_HOOK_STATE_CHANGE} without a service ARN in `resources`")))?;
    let service = parse_service_arn(&service_arn)
        .ok_or_else(|| InvalidEvent(format!("{ECS_HOOK_STATE_CHANGE} with an invalid service ARN {service_arn:?}")))?;
    let event_id = bounded(ECS_HOOK_STATE_CHANGE, "id", event.id, MAX_ENVELOPE_MEMBER)?;
    Ok(Ok(MonitorEvent::HookAwaitingAction(HookEvent { event_id, service_arn, service })))
}

/// The service an ECS ARN names: a service's own, or the service of a service deployment.
fn service_of(arn: &str) -> Option<String> {
    if arn.contains(":service/") {
        return Some(arn.to_owned());
    }
    let (head, path) = arn.split_once(":service-deployment/")?;
    let (service, _id) = path.rsplit_once('/')?;
    Some(format!("{head}:service/{service}"))
}

fn alarm(event: EventBridgeEvent<Value>) -> Result<Result<MonitorEvent, Skip>, InvalidEvent> {
    let detail: AlarmStateChange = serde_json::from_value(event.detail)
        .map_err(|e| InvalidEvent(format!("CloudWatch Alarm State Change with a malformed detail: {e}")))?;
    let alarm = detail
        .alarm_name
        .filter(|name| !name.is_empty() && name.chars().count() <= 255)
        .ok_or_else(|| InvalidEvent("CloudWatch Alarm State Change without a valid `alarmName`".into()))?;
    let (state, changed_at) = detail.state.map(|state| (state.value, state.timestamp)).unwrap_or_default();
    if state.as_deref() != Some(aws_sdk_cloudwatch::types::StateValue::Alarm.as_str()) {
        return Ok(Err(Skip(format!("alarm {alarm} is {}: nothing to do", state.as_deref().unwrap_or("(no state)")))));
    }
    // The state's own time, to the millisecond; else the event's, stamped to the second: the
    // last instant of that second (the alarm may have fired after a rollout started within it).
    let time = changed_at
        .and_then(|at| DateTime::parse_from_str(&at, "%Y-%m-%dT%H:%M:%S%.f%z").ok())
        .map(|at| at.with_timezone(&Utc))
        .or_else(|| event.time.map(|at| at + TimeDelta::milliseconds(999)))
        .unwrap_or_else(Utc::now);
    // The account and region pick the environments gated on the alarm: one too long to be AWS's
    // is refused, never read as "any".
    let member = |field, value: Option<String>| bounded(ALARM_STATE_CHANGE, field, value, MAX_ENVELOPE_MEMBER);
    Ok(Ok(MonitorEvent::Alarm(AlarmEvent {
        event_id: member("id", event.id)?,
        time,
        account: member("account", event.account.filter(|a| !a.is_empty()))?,
        region: member("region", event.region.filter(|r| !r.is_empty()))?,
        alarm,
    })))
}

impl DeploymentEvent {
    /// Where the service is.
    pub fn place(&self) -> crate::config::Place<'_> {
        self.service.place()
    }

    /// An event about the service of `service_arn` (a service ARN, long or short format).
    #[cfg(test)]
    pub(crate) fn of(service_arn: &str, name: DeploymentEventName, deployment_id: &str, reason: Option<&str>) -> Self {
        DeploymentEvent {
            event_id: None,
            time: None,
            service_arn: service_arn.to_owned(),
            service: parse_service_arn(service_arn).expect("a service ARN"),
            name,
            deployment_id: deployment_id.to_owned(),
            reason: reason.map(str::to_owned),
        }
    }
}

/// The parts of a service ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceArn {
    account: Option<String>,
    region: Option<String>,
    cluster: Option<String>,
    service: String,
}

impl ServiceArn {
    /// Where the service is.
    pub(crate) fn place(&self) -> crate::config::Place<'_> {
        crate::config::Place {
            account: self.account.as_deref(),
            region: self.region.as_deref(),
            cluster: self.cluster.as_deref(),
            service: &self.service,
        }
    }
}

/// `arn:aws:ecs:{region}:{account}:service/{cluster}/{service}` (or the old `service/{service}`).
pub(crate) fn parse_service_arn(arn: &str) -> Option<ServiceArn> {
    let mut fields = arn.strip_prefix("arn:")?.splitn(5, ':');
    let (_partition, _ecs) = (fields.next()?, fields.next()?);
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let (region, account, resource) = (non_empty(fields.next()?), non_empty(fields.next()?), fields.next()?);
    let mut parts = resource.strip_prefix("service/")?.split('/');
    let (cluster, service) = match (parts.next(), parts.next(), parts.next()) {
        (Some(cluster), Some(service), None) if !cluster.is_empty() && !service.is_empty() => {
            (Some(cluster.to_owned()), service.to_owned())
        }
        (Some(service), None, None) if !service.is_empty() => (None, service.to_owned()),
        _ => return None,
    };
    Some(ServiceArn { account, region, cluster, service })
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

    #[test]
    fn envelope_members_kept_are_bounded() {
        let limit = MAX_ENVELOPE_MEMBER;
        for field in ["id", "account", "region"] {
            let mut at_limit = shop_push();
            at_limit[field] = json!("é".repeat(limit));
            assert!(push(at_limit).unwrap().is_ok(), "{field} of {limit} characters refused");
            let mut over = shop_push();
            over[field] = json!("1".repeat(limit + 1));
            assert_invalid(over, &format!("`{field}` is {} characters long (at most {limit})", limit + 1));
            let mut huge = shop_push();
            huge[field] = json!("x".repeat(1 << 20));
            match push(huge) {
                Err(InvalidEvent(message)) => {
                    assert!(message.len() < 200, "the value is not echoed: {}", message.len())
                }
                other => panic!("a megabyte {field} accepted: {other:?}"),
            }
        }
        let mut huge_digest = shop_push();
        huge_digest["detail"]["image-digest"] = json!(format!("sha256:{}", "a".repeat(1 << 20)));
        assert_invalid(huge_digest, "image digest");
    }

    #[test]
    fn a_push_from_the_future_is_refused() {
        let push = push(shop_push()).unwrap().unwrap();
        let pushed = push.time;
        // Up to 5 minutes ahead of our clock: clock skew, accepted.
        for now in [pushed, pushed + TimeDelta::hours(1), pushed - MAX_CLOCK_AHEAD] {
            assert_eq!(not_ahead_of(&push, now), Ok(()), "now = {now}");
        }
        for now in [pushed - MAX_CLOCK_AHEAD - TimeDelta::seconds(1), pushed - TimeDelta::hours(1)] {
            let InvalidEvent(message) = not_ahead_of(&push, now).unwrap_err();
            assert!(message.contains("from the future") && message.contains("5 minutes"), "{message}");
        }
    }

    #[test]
    fn ecs_deployment_events_parse() {
        let MonitorEvent::Deployment(event) = monitor(sample("ecs-deployment-failed.json")).unwrap().unwrap() else {
            panic!("not a deployment event")
        };
        assert_eq!(event.name, DeploymentEventName::Failed);
        assert_eq!(event.place().cluster, Some("default"));
        assert_eq!(event.place().service, "servicetest");
        assert_eq!(event.deployment_id, "ecs-svc/123");
        assert_eq!(event.reason.as_deref(), Some("ECS deployment circuit breaker: task failed to start."));
        for (file, name) in [
            ("ecs-deployment-completed.json", DeploymentEventName::Completed),
            ("ecs-deployment-in-progress.json", DeploymentEventName::InProgress),
            ("ecs-deployment-circuit-breaker-rollback.json", DeploymentEventName::InProgress),
        ] {
            let Ok(Ok(MonitorEvent::Deployment(event))) = monitor(sample(file)) else { panic!("{file}") };
            assert_eq!(event.name, name, "{file}");
        }
        assert_eq!(monitor(sample("scheduled-sweep.json")).unwrap(), Ok(MonitorEvent::Sweep));
        assert!(matches!(monitor(sample("ecr-image-action-push.json")), Ok(Err(Skip(_)))));
    }

    #[test]
    fn service_arns_in_both_formats() {
        let arn = |cluster: Option<&str>, service: &str| ServiceArn {
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
            cluster: cluster.map(str::to_owned),
            service: service.into(),
        };
        assert_eq!(
            parse_service_arn("arn:aws:ecs:us-east-1:123456789012:service/prod/shop-api"),
            Some(arn(Some("prod"), "shop-api"))
        );
        assert_eq!(
            parse_service_arn("arn:aws:ecs:us-east-1:123456789012:service/shop-api"),
            Some(arn(None, "shop-api"))
        );
        for bad in [
            "",
            "shop-api",
            "arn:aws:ecs:us-east-1:1:task/x",
            "arn:aws:ecs:us-east-1:1:service/",
            "arn:aws:ecs:us-east-1:1:service/a/b/c",
        ] {
            assert_eq!(parse_service_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_deployment_events_are_invalid() {
        let mut no_resources = sample("ecs-deployment-completed.json");
        no_resources["resources"] = json!([]);
        assert!(monitor(no_resources).unwrap_err().0.contains("service ARN"));
        let mut no_id = sample("ecs-deployment-completed.json");
        no_id["detail"].as_object_mut().unwrap().remove("deploymentId");
        assert!(monitor(no_id).unwrap_err().0.contains("deploymentId"));
        let mut other = sample("ecs-deployment-completed.json");
        other["detail"]["eventName"] = json!("SERVICE_TASK_PLACEMENT_FAILURE");
        assert!(matches!(monitor(other), Ok(Err(Skip(_)))));
    }

    fn alarm_change(state: &str) -> Value {
        json!({
            "version": "0", "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
            "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
            "account": "123456789012", "time": "2026-12-03T10:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:shop-api-5xx"],
            "detail": { "alarmName": "shop-api-5xx",
                        "previousState": { "value": "OK", "timestamp": "2026-12-03T09:00:00.000+0000" },
                        "state": { "value": state, "timestamp": "2026-12-03T10:00:00.250+0000" } }
        })
    }

    #[test]
    fn an_alarm_entering_alarm_is_read_and_other_states_skipped() {
        let Ok(Ok(MonitorEvent::Alarm(event))) = monitor(alarm_change("ALARM")) else { panic!("not an alarm event") };
        assert_eq!(event.alarm, "shop-api-5xx");
        assert_eq!((event.account.as_deref(), event.region.as_deref()), (Some("123456789012"), Some("us-east-1")));
        assert_eq!(event.time.to_rfc3339(), "2026-12-03T10:00:00.250+00:00", "the state's own time");
        let mut coarse = alarm_change("ALARM");
        coarse["detail"]["state"]["timestamp"] = json!("soon");
        let Ok(Ok(MonitorEvent::Alarm(event))) = monitor(coarse) else { panic!("not an alarm event") };
        assert_eq!(event.time.to_rfc3339(), "2026-12-03T10:00:00.999+00:00", "the end of the event's second");
        let Ok(Err(Skip(reason))) = monitor(alarm_change("OK")) else { panic!("OK acted on") };
        assert!(reason.contains("shop-api-5xx is OK"), "{reason}");
        let mut long_account = alarm_change("ALARM");
        long_account["account"] = json!("1".repeat(MAX_ENVELOPE_MEMBER + 1));
        assert!(matches!(monitor(long_account), Err(InvalidEvent(m)) if m.contains("`account` is 129 characters")));
        let mut nameless = alarm_change("ALARM");
        nameless["detail"]["alarmName"] = json!("");
        assert!(matches!(monitor(nameless), Err(InvalidEvent(m)) if m.contains("alarmName")));
    }
    #[test]
    fn a_pause_hook_awaiting_action_names_its_service_and_other_hook_events_are_skipped() {
        let event = |resources: Value, detail: Value| {
            json!({ "version": "0", "id": "e1", "source": "aws.ecs", "detail-type": "ECS Hook State Change",
                    "account": "123456789012", "region": "us-east-1", "time": "2026-12-04T10:00:00Z",
                    "resources": resources, "detail": detail })
        };
        let service = "arn:aws:ecs:us-east-1:123456789012:service/prod/shop-api";
        let awaiting = json!({ "eventName": "HOOK_AWAITING_ACTION" });
        let Ok(Ok(MonitorEvent::HookAwaitingAction(hook))) = monitor(event(json!([service]), awaiting.clone())) else {
            panic!("not a hook event")
        };
        assert_eq!(hook.service_arn, service);
        // Only the service deployment named: its service.
        let deployment = json!({ "eventName": "HOOK_AWAITING_ACTION",
            "serviceDeploymentArn": "arn:aws:ecs:us-east-1:123456789012:service-deployment/prod/shop-api/abc" });
        let Ok(Ok(MonitorEvent::HookAwaitingAction(hook))) = monitor(event(json!([]), deployment)) else {
            panic!("not a hook event")
        };
        assert_eq!(hook.service_arn, service);
        assert!(matches!(monitor(event(json!([service]), json!({ "eventName": "HOOK_SUCCEEDED" }))), Ok(Err(_))));
        let invalid = monitor(event(json!(["arn:aws:ecs:us-east-1:1:cluster/prod"]), awaiting)).unwrap_err();
        assert!(invalid.0.contains("without a service ARN"), "{invalid}");
    }
}
