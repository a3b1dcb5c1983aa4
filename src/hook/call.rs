//! What ECS sends a Lambda lifecycle hook, parsed at the boundary.
//!
//! ```json
//! { "executionId": "…", "lifecycleStage": "POST_TEST_TRAFFIC_SHIFT",
//!   "resourceArn": "arn:aws:ecs:…:service-deployment/{cluster}/{service}/{id}",
//!   "executionDetails": { "serviceArn": "…", "targetServiceRevisionArn": "…",
//!                         "testTrafficWeights": { "{revision arn}": 100 },
//!                         "productionTrafficWeights": { "{revision arn}": 0 } },
//!   "hookDetails": { … } }
//! ```
//!
//! Any invoker can send anything: a payload that is not this shape is refused with a reason (the
//! hook answers `FAILED` with it), never an error and never a panic.

use aws_sdk_ecs::types::DeploymentLifecycleHookStage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The key of `hookDetails` Conveyor keeps its progress under (the service's own keys are left
/// as they are).
pub const PROGRESS_KEY: &str = "conveyor";
/// The longest id or ARN accepted (AWS's are far shorter).
const MAX_FIELD: usize = 2048;

/// One invocation of the hook by ECS.
#[derive(Debug, Clone, PartialEq)]
pub struct HookCall {
    /// The hook execution: the same across the `IN_PROGRESS` re-invocations of one hook at one
    /// stage (assumed; see the test kit's `ASSUMPTIONS.md`).
    pub execution_id: String,
    pub stage: DeploymentLifecycleHookStage,
    /// The service deployment (`resourceArn`).
    pub service_deployment_arn: String,
    pub service_arn: String,
    /// The revision being deployed (green).
    pub target_revision_arn: String,
    /// Green's share of test and production traffic, where the payload lists it.
    pub green_weights: Weights,
    /// `hookDetails` as received: the service's own keys and Conveyor's progress.
    pub details: Map<String, Value>,
    /// Conveyor's progress from earlier `IN_PROGRESS` answers of this execution.
    pub progress: Progress,
}

/// Green's traffic weights in percent (`None`: not listed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weights {
    pub test: Option<u64>,
    pub production: Option<u64>,
}

impl Weights {
    /// A rollback's re-invocation: green listed with no traffic at all, test or production.
    pub fn drained(&self) -> bool {
        self.test == Some(0) && self.production == Some(0)
    }
}

/// What earlier invocations of one hook execution established, carried by ECS in `hookDetails`
/// between `IN_PROGRESS` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Probes of `test_health_url` that answered 2xx, in a row.
    #[serde(default)]
    pub passed: u32,
    /// Invocations that could not check (AWS unreachable, throttled): bounded, then `FAILED`.
    #[serde(default)]
    pub unchecked: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    execution_id: Option<String>,
    lifecycle_stage: Option<String>,
    resource_arn: Option<String>,
    execution_details: Option<WireDetails>,
    hook_details: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDetails {
    service_arn: Option<String>,
    target_service_revision_arn: Option<String>,
    test_traffic_weights: Option<Value>,
    production_traffic_weights: Option<Value>,
}

impl HookCall {
    /// The call, or why the payload is not one.
    pub fn parse(payload: Value) -> Result<HookCall, String> {
        let wire: Wire = serde_json::from_value(payload)
            .map_err(|e| format!("the payload is not an ECS lifecycle hook invocation: {e}"))?;
        let field = |name: &str, value: Option<String>| match value {
            Some(value) if !value.is_empty() && value.len() <= MAX_FIELD => Ok(value),
            Some(value) if !value.is_empty() => Err(format!("`{name}` is over {MAX_FIELD} characters")),
            _ => Err(format!("`{name}` is missing: not an ECS lifecycle hook invocation")),
        };
        let details = wire.execution_details.ok_or("`executionDetails` is missing")?;
        let target_revision_arn =
            field("executionDetails.targetServiceRevisionArn", details.target_service_revision_arn)?;
        let green = |name: &str, weights: Option<Value>| -> Result<Option<u64>, String> {
            match weights {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(map)) => match map.get(&target_revision_arn) {
                    None => Ok(None),
                    Some(weight) => weight
                        .as_u64()
                        .filter(|w| *w <= 100)
                        .map(Some)
                        .ok_or_else(|| format!("`executionDetails.{name}` gives green {weight}, not a percentage")),
                },
                Some(other) => Err(format!("`executionDetails.{name}` must be an object, got {other}")),
            }
        };
        let green_weights = Weights {
            test: green("testTrafficWeights", details.test_traffic_weights)?,
            production: green("productionTrafficWeights", details.production_traffic_weights)?,
        };
        let details_map = match wire.hook_details {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(other) => return Err(format!("`hookDetails` must be an object, got {other}")),
        };
        let progress = match details_map.get(PROGRESS_KEY) {
            None => Progress::default(),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| format!("`hookDetails.{PROGRESS_KEY}` is not Conveyor's progress: {e}"))?,
        };
        Ok(HookCall {
            execution_id: field("executionId", wire.execution_id)?,
            stage: DeploymentLifecycleHookStage::from(field("lifecycleStage", wire.lifecycle_stage)?.as_str()),
            service_deployment_arn: field("resourceArn", wire.resource_arn)?,
            service_arn: field("executionDetails.serviceArn", details.service_arn)?,
            target_revision_arn,
            green_weights,
            details: details_map,
            progress,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GREEN: &str = "arn:aws:ecs:us-east-1:123456789012:service-revision/stage/shop-api/222";
    const BLUE: &str = "arn:aws:ecs:us-east-1:123456789012:service-revision/stage/shop-api/111";

    fn payload() -> Value {
        json!({
            "executionId": "e8d5a28f-eb01-4f3c-9454-a30ba6dc54bc",
            "lifecycleStage": "POST_TEST_TRAFFIC_SHIFT",
            "resourceArn": "arn:aws:ecs:us-east-1:123456789012:service-deployment/stage/shop-api/EZe5RNVLH6",
            "executionDetails": {
                "serviceArn": "arn:aws:ecs:us-east-1:123456789012:service/stage/shop-api",
                "targetServiceRevisionArn": GREEN,
                "testTrafficWeights": { GREEN: 100, BLUE: 0 },
                "productionTrafficWeights": { GREEN: 0, BLUE: 100 }
            },
            "hookDetails": { "team": "payments", "conveyor": { "passed": 2 } }
        })
    }

    #[test]
    fn the_documented_payload_parses_with_green_weights_and_progress() {
        let call = HookCall::parse(payload()).unwrap();
        assert_eq!(call.stage, DeploymentLifecycleHookStage::PostTestTrafficShift);
        assert_eq!(call.green_weights, Weights { test: Some(100), production: Some(0) });
        assert!(!call.green_weights.drained());
        assert_eq!(call.progress, Progress { passed: 2, unchecked: 0 });
        assert_eq!(call.details["team"], "payments");
    }

    #[test]
    fn a_stage_newer_than_the_sdk_is_kept_by_name() {
        let mut value = payload();
        value["lifecycleStage"] = json!("PRE_PRODUCTION_TRAFFIC_SHIFT");
        assert_eq!(HookCall::parse(value).unwrap().stage, DeploymentLifecycleHookStage::PreProductionTrafficShift);
        value = payload();
        value["lifecycleStage"] = json!("SOME_FUTURE_STAGE");
        assert_eq!(HookCall::parse(value).unwrap().stage.as_str(), "SOME_FUTURE_STAGE");
    }

    #[test]
    fn green_without_traffic_is_a_rollback_and_missing_weights_are_unknown() {
        let mut value = payload();
        value["executionDetails"]["testTrafficWeights"] = json!({ GREEN: 0, BLUE: 100 });
        assert!(HookCall::parse(value.clone()).unwrap().green_weights.drained());
        value["executionDetails"]["testTrafficWeights"] = json!({});
        assert_eq!(HookCall::parse(value).unwrap().green_weights, Weights { test: None, production: Some(0) });
    }

    #[test]
    fn malformed_payloads_are_refused_with_a_reason() {
        let cases: Vec<(Value, &str)> = vec![
            (json!(null), "not an ECS lifecycle hook"),
            (json!([1, 2]), "not an ECS lifecycle hook"),
            (json!({}), "executionDetails"),
            (json!({ "executionDetails": {} }), "targetServiceRevisionArn"),
            (
                {
                    let mut v = payload();
                    v["executionId"] = json!("");
                    v
                },
                "executionId",
            ),
            (
                {
                    let mut v = payload();
                    v["executionDetails"]["testTrafficWeights"] = json!({ GREEN: 250 });
                    v
                },
                "not a percentage",
            ),
            (
                {
                    let mut v = payload();
                    v["hookDetails"] = json!("text");
                    v
                },
                "hookDetails",
            ),
            (
                {
                    let mut v = payload();
                    v["hookDetails"]["conveyor"] = json!({ "passed": -1 });
                    v
                },
                "progress",
            ),
            (
                {
                    let mut v = payload();
                    v["resourceArn"] = json!("x".repeat(5000));
                    v
                },
                "over 2048",
            ),
        ];
        for (value, expected) in cases {
            let refused = HookCall::parse(value.clone()).unwrap_err();
            assert!(refused.contains(expected), "{value}: {refused}");
        }
    }
}
