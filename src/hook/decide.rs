//! What the lifecycle hook answers, decided from what each step found (no I/O). The flow asks in
//! order and stops at the first step that settles the answer, so a call costs only the reads it
//! needs (contract, *Native ECS deployment strategies*).

use aws_sdk_ecs::types::DeploymentLifecycleHookStage;

use super::call::{HookCall, Progress};
use crate::health::Unhealthy;
use crate::rollout::Rollout;

/// How long ECS waits before calling again after `IN_PROGRESS` (between two probes).
pub const CALL_BACK_SECONDS: u32 = 10;
/// Invocations in a row that could not check (AWS unreachable or throttling) before the hook
/// gives up and fails the deployment rather than leaving it waiting.
pub const MAX_UNCHECKED: u32 = 5;

/// The hook's answer to one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The deployment goes on.
    Succeeded { reason: String },
    /// ECS shifts the traffic back to blue and rolls back.
    Failed { reason: String },
    /// Ask again after [`CALL_BACK_SECONDS`], with `progress` in `hookDetails`.
    InProgress { progress: Progress, reason: String },
}

impl Answer {
    fn succeeded(reason: impl Into<String>) -> Self {
        Answer::Succeeded { reason: reason.into() }
    }

    fn failed(reason: impl Into<String>) -> Self {
        Answer::Failed { reason: reason.into() }
    }

    /// `SUCCEEDED`, `FAILED` or `IN_PROGRESS`, as ECS reads it.
    pub fn status(&self) -> &'static str {
        match self {
            Answer::Succeeded { .. } => "SUCCEEDED",
            Answer::Failed { .. } => "FAILED",
            Answer::InProgress { .. } => "IN_PROGRESS",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Answer::Succeeded { reason } | Answer::Failed { reason } | Answer::InProgress { reason, .. } => reason,
        }
    }
}

/// The stages where Conveyor checks the new revision: after test traffic moved to it (blue/green),
/// and before each step of production traffic (linear, canary).
pub fn checks_at(stage: &DeploymentLifecycleHookStage) -> bool {
    matches!(
        stage,
        DeploymentLifecycleHookStage::PostTestTrafficShift | DeploymentLifecycleHookStage::PreProductionTrafficShift
    )
}

/// What the call alone settles: a rollback's re-invocation (green has no traffic left) and a
/// stage with nothing to check pass at once.
pub fn at_once(call: &HookCall) -> Option<Answer> {
    if call.green_weights.drained() {
        return Some(Answer::succeeded("a rollback's re-invocation (green has no traffic): nothing to check"));
    }
    if !checks_at(&call.stage) {
        return Some(Answer::succeeded(format!(
            "nothing to check at {}: Conveyor checks at POST_TEST_TRAFFIC_SHIFT and PRE_PRODUCTION_TRAFFIC_SHIFT",
            call.stage.as_str()
        )));
    }
    None
}

/// Whether this deployment is Conveyor's: a rollout of Conveyor's in flight on the service. One
/// that Conveyor did not start passes (the monitor records it as drift, as for rolling services).
pub fn ownership(rollout: Option<&Rollout>) -> Result<&Rollout, Answer> {
    rollout.ok_or_else(|| {
        Answer::succeeded("no rollout of Conveyor's is in flight on this service: a deployment Conveyor did not start")
    })
}

/// The digest check: the revision ECS deploys must run, in the app's container, exactly the digest
/// Conveyor is rolling out (`images`: what `DescribeServiceRevisions` reports, container and digest).
pub fn digest_check(rollout: &Rollout, container: &str, images: &[(String, String)]) -> Option<Answer> {
    rollout
        .digest_mismatch(container, images)
        .map(|mismatch| Answer::failed(format!("digest mismatch: the revision ECS is deploying {mismatch}")))
}

/// After one probe of `test_health_url`: `needed` 2xx in a row pass; a probe that never got a 2xx
/// within its retries fails.
pub fn after_probe(progress: Progress, needed: u32, probe: Result<u16, Unhealthy>) -> Answer {
    match probe {
        Ok(status) => {
            let passed = progress.passed.saturating_add(1);
            if passed >= needed {
                Answer::succeeded(format!(
                    "the digest checked, no alarm, test_health_url answered 2xx {passed} time(s) in a row"
                ))
            } else {
                Answer::InProgress {
                    progress: Progress { passed, unchecked: 0 },
                    reason: format!("test_health_url answered {status}: probe {passed} of {needed}"),
                }
            }
        }
        Err(unhealthy) => Answer::failed(format!("test_health_url failed on test traffic: {unhealthy}")),
    }
}

/// The checks passed and there is nothing to probe: the environment has no `test_health_url`
/// (`conveyor doctor` warns of it).
pub fn without_probe() -> Answer {
    Answer::succeeded("the digest checked, no alarm; no test_health_url to probe (set one to check test traffic)")
}

/// The invocation's time is spent before the probe: ask again, nothing counted.
pub fn out_of_time(progress: Progress) -> Answer {
    Answer::InProgress { progress, reason: "the invocation's time is spent: probing on the next call".into() }
}

/// Something could not be read (`why`, an AWS error a retry may cure): ask again, up to
/// [`MAX_UNCHECKED`] times in a row, then fail rather than hold the deployment.
pub fn unchecked(progress: Progress, why: &str) -> Answer {
    let unchecked = progress.unchecked.saturating_add(1);
    if unchecked >= MAX_UNCHECKED {
        Answer::failed(format!("could not check the deployment {unchecked} times in a row: {why}"))
    } else {
        Answer::InProgress {
            progress: Progress { unchecked, ..progress },
            reason: format!("could not check yet: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::health::Unanswered;
    use serde_json::json;

    fn call(stage: &str, weights: serde_json::Value) -> HookCall {
        HookCall::parse(json!({
            "executionId": "x", "lifecycleStage": stage, "resourceArn": "arn:sd",
            "executionDetails": { "serviceArn": "arn:s", "targetServiceRevisionArn": "green",
                                  "testTrafficWeights": weights, "productionTrafficWeights": { "green": 0 } }
        }))
        .unwrap()
    }

    #[test]
    fn only_the_check_stages_do_work_and_a_rollback_passes_at_once() {
        assert_eq!(at_once(&call("POST_TEST_TRAFFIC_SHIFT", json!({ "green": 100 }))), None);
        assert_eq!(at_once(&call("PRE_PRODUCTION_TRAFFIC_SHIFT", json!({ "green": 100 }))), None);
        let rollback = at_once(&call("POST_TEST_TRAFFIC_SHIFT", json!({ "green": 0 }))).unwrap();
        assert_eq!(rollback.status(), "SUCCEEDED");
        assert!(rollback.reason().contains("rollback"));
        let elsewhere = at_once(&call("PRE_SCALE_UP", json!({}))).unwrap();
        assert_eq!((elsewhere.status(), elsewhere.reason().contains("PRE_SCALE_UP")), ("SUCCEEDED", true));
    }

    #[test]
    fn the_digest_must_be_the_one_conveyor_rolls_out() {
        let rollout = fixtures::rollout();
        let ours = vec![("web".to_owned(), rollout.digest.as_str().to_owned())];
        assert_eq!(digest_check(&rollout, "web", &ours), None);
        let other = vec![("web".to_owned(), format!("sha256:{}", "e".repeat(64)))];
        let mismatch = digest_check(&rollout, "web", &other).unwrap();
        assert_eq!(mismatch.status(), "FAILED");
        assert!(mismatch.reason().starts_with("digest mismatch"), "{}", mismatch.reason());
        assert_eq!(digest_check(&rollout, "api", &ours).unwrap().status(), "FAILED");
        assert_eq!(ownership(None).unwrap_err().status(), "SUCCEEDED");
    }

    #[test]
    fn probes_count_in_a_row_and_one_failed_probe_fails() {
        let mut progress = Progress::default();
        for n in 1..3 {
            match after_probe(progress, 3, Ok(200)) {
                Answer::InProgress { progress: next, .. } => {
                    assert_eq!(next.passed, n);
                    progress = next;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(after_probe(progress, 3, Ok(204)).status(), "SUCCEEDED");
        let down = Unhealthy { url: "u".into(), attempts: 3, seconds: 5, last: Unanswered::Status { status: 503 } };
        let failed = after_probe(progress, 3, Err(down));
        assert_eq!(failed.status(), "FAILED");
        assert!(failed.reason().contains("HTTP 503"), "{}", failed.reason());
        assert_eq!(after_probe(Progress::default(), 1, Ok(200)).status(), "SUCCEEDED");
    }

    #[test]
    fn what_cannot_be_checked_is_asked_again_a_bounded_number_of_times() {
        let mut progress = Progress { passed: 1, unchecked: 0 };
        for _ in 1..MAX_UNCHECKED {
            match unchecked(progress, "throttled") {
                Answer::InProgress { progress: next, .. } => progress = next,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(progress.passed, 1, "probes passed are kept");
        assert_eq!(unchecked(progress, "throttled").status(), "FAILED");
        assert_eq!(out_of_time(progress).status(), "IN_PROGRESS");
    }
}
