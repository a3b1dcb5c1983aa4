//! ECS deployment state changes and the schedule: nothing panics, a valid event parses to what it
//! says, a mutated one is refused or still says what it says, a scheduled event is a sweep.

use conveyor::events::{self, DeploymentEventName, InvalidEvent, MonitorEvent, Skip};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use crate::arbitrary::*;
use crate::cases;

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

pub fn check_monitor_result(
    event: &Value,
    result: &Result<Result<MonitorEvent, Skip>, InvalidEvent>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(Ok(MonitorEvent::Sweep | MonitorEvent::SoakTimer)) => {
            prop_assert_eq!(str_at(event, &["source"]), Some("aws.events"));
            prop_assert_eq!(str_at(event, &["detail-type"]), Some("Scheduled Event"));
            let timer = event["resources"].as_array().is_some_and(|rules| {
                rules.iter().any(|rule| rule.as_str().is_some_and(|rule| rule.ends_with("-soak-timer")))
            });
            prop_assert_eq!(matches!(result, Ok(Ok(MonitorEvent::SoakTimer))), timer);
        }
        Ok(Ok(MonitorEvent::Alarm(alarm))) => {
            prop_assert_eq!(str_at(event, &["source"]), Some("aws.cloudwatch"));
            prop_assert_eq!(str_at(event, &["detail-type"]), Some("CloudWatch Alarm State Change"));
            prop_assert_eq!(str_at(event, &["detail", "state", "value"]), Some("ALARM"));
            prop_assert_eq!(Some(alarm.alarm.as_str()), str_at(event, &["detail", "alarmName"]));
        }
        Ok(Ok(MonitorEvent::HookAwaitingAction(hook))) => {
            prop_assert_eq!(str_at(event, &["source"]), Some("aws.ecs"));
            prop_assert_eq!(str_at(event, &["detail-type"]), Some("ECS Hook State Change"));
            prop_assert_eq!(str_at(event, &["detail", "eventName"]), Some("HOOK_AWAITING_ACTION"));
            prop_assert!(hook.service_arn.contains(":service/"), "not a service: {}", hook.service_arn);
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
            let place = deployment.place();
            prop_assert!(!place.service.is_empty() && !place.service.contains('/'));
            let arn_ends = deployment.service_arn.ends_with(&format!("/{}", place.service));
            prop_assert!(arn_ends, "service {:?} not at the end of {:?}", place.service, deployment.service_arn);
            if let Some(cluster) = place.cluster {
                let long_form = deployment.service_arn.ends_with(&format!(":service/{cluster}/{}", place.service));
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
        let place = deployment.place();
        prop_assert_eq!(place.service, case.service.as_str());
        prop_assert_eq!(place.cluster, case.cluster.as_deref());
        prop_assert_eq!(place.account, case.account.as_deref());
        prop_assert_eq!(place.region, case.region.as_deref());
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
