//! deploy-hook: Conveyor as the Lambda lifecycle hook of native ECS deployments (blue/green,
//! linear, canary). ECS calls it after test traffic moved to the new revision
//! (`POST_TEST_TRAFFIC_SHIFT`) and before each step of production traffic
//! (`PRE_PRODUCTION_TRAFFIC_SHIFT`); its answer decides whether production traffic moves at all.
//!
//! Why a function of its own rather than a mode of deploy-monitor: the role ECS assumes to call it
//! may invoke this function only, and this function can only answer (it reads the state, ECS and
//! CloudWatch, probes `test_health_url`, and records nothing but its own `FAILED` answers); its
//! timeout is sized for one probe; and a hook that errors makes ECS roll back, so it has its own
//! error policy: it never errors.
//!
//! Each call does at most one probe and answers at once: `IN_PROGRESS` (ECS calls again after
//! [`decide::CALL_BACK_SECONDS`], the probes counted so far in `hookDetails`), `SUCCEEDED` or
//! `FAILED`. The reads are made in order and stop at the first that settles the answer: the call
//! itself, the app config (cached), one `BatchGetItem` (the environment and this execution's
//! recorded failure), `DescribeServiceRevisions` (the digest ECS deploys), the alarms, the probe.

pub mod call;
pub mod decide;

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tracing::{info, warn};

use crate::config::{AppConfig, Configs};
use crate::events::parse_service_arn;
use crate::fleet::Fleet;
use crate::health::Prober;
use crate::ledger::{HookFailure, Ledger};
use crate::monitor::alarms;
use crate::types::Environment;
use crate::Invocation;
use call::{HookCall, Progress, PROGRESS_KEY};
use decide::Answer;

/// The longest one probe may take, its retries included.
pub const PROBE_BUDGET: Duration = Duration::from_secs(5);
/// Kept free before the invocation's deadline: the answer must reach ECS before Lambda stops us.
const RESERVE: Duration = Duration::from_secs(2);

/// What the hook returns to ECS.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookResponse {
    pub hook_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_back_delay: Option<u32>,
    /// `hookDetails` as received, with Conveyor's progress (and the answer's reason) under
    /// [`PROGRESS_KEY`]: ECS passes it back on the next call.
    pub hook_details: Map<String, Value>,
}

impl HookResponse {
    fn of(call: Option<&HookCall>, answer: &Answer) -> Self {
        let mut details = call.map(|c| c.details.clone()).unwrap_or_default();
        let progress = match answer {
            Answer::InProgress { progress, .. } => *progress,
            _ => call.map(|c| c.progress).unwrap_or_default(),
        };
        details.insert(
            PROGRESS_KEY.into(),
            json!({ "passed": progress.passed, "unchecked": progress.unchecked, "reason": answer.reason() }),
        );
        HookResponse {
            hook_status: answer.status(),
            call_back_delay: matches!(answer, Answer::InProgress { .. }).then_some(decide::CALL_BACK_SECONDS),
            hook_details: details,
        }
    }
}

/// Answers one invocation. Never an error: a hook that errors makes ECS roll back without a
/// reason, so anything unexpected is a `FAILED` answer that says why.
pub async fn handle(
    configs: &Configs,
    fleet: &Fleet,
    ledger: &Ledger,
    prober: &Prober,
    payload: Value,
    invocation: &Invocation,
) -> HookResponse {
    let call = match HookCall::parse(payload) {
        Ok(call) => call,
        Err(reason) => {
            warn!(status = "FAILED", %reason, "hook payload refused");
            return HookResponse::of(None, &Answer::Failed { reason });
        }
    };
    let (answer, owner) = Box::pin(answer(configs, fleet, ledger, prober, &call, invocation)).await;
    let (app, environment) = owner.map_or((String::new(), String::new()), |(a, e)| (a, e.to_string()));
    info!(
        app, environment, execution_id = %call.execution_id, stage = call.stage.as_str(),
        service_deployment_arn = %call.service_deployment_arn, status = answer.status(), reason = answer.reason(),
        "hook answered"
    );
    HookResponse::of(Some(&call), &answer)
}

/// The answer, and whose deployment it is (app and environment) when known.
async fn answer(
    configs: &Configs,
    fleet: &Fleet,
    ledger: &Ledger,
    prober: &Prober,
    call: &HookCall,
    invocation: &Invocation,
) -> (Answer, Option<(String, Environment)>) {
    if let Some(answer) = decide::at_once(call) {
        return (answer, None);
    }
    let Some(service) = parse_service_arn(&call.service_arn) else {
        let reason = format!("executionDetails.serviceArn {:?} is not an ECS service ARN", call.service_arn);
        return (Answer::Failed { reason }, None);
    };
    let config = match configs.get().await {
        Ok(config) => config,
        Err(error) => return (decide::unchecked(call.progress, &error.to_string()), None),
    };
    let Some((app, env, index)) = config.owner_of(&service.place(), &fleet.home(invocation)) else {
        let reason = format!("{} is not a service of any app: a deployment Conveyor did not start", call.service_arn);
        return (Answer::Succeeded { reason }, None);
    };
    let asked = Asked { app, env, index, call };
    let answer = Box::pin(judge(fleet, ledger, prober, &asked, invocation)).await;
    (answer, Some((app.name.to_string(), env)))
}

/// Whose deployment a call asks about: the app, the environment and which of its targets.
#[derive(Clone, Copy)]
struct Asked<'a> {
    app: &'a AppConfig,
    env: Environment,
    index: usize,
    call: &'a HookCall,
}

/// The answer for an app's deployment: a failure already recorded for this execution stands;
/// else the checks decide, and a new failure is recorded (the first one recorded stands, should
/// another call of the same execution race this one).
async fn judge(fleet: &Fleet, ledger: &Ledger, prober: &Prober, asked: &Asked<'_>, invocation: &Invocation) -> Answer {
    let Asked { app, env, index, call } = *asked;
    let (state, failed) = match ledger.hook_facts(&app.name, env, &call.execution_id).await {
        Ok(facts) => facts,
        Err(error) => return decide::unchecked(call.progress, &error.to_string()),
    };
    if let Some(failed) = failed {
        return Answer::Failed { reason: failed.reason };
    }
    let rollout = state.as_ref().and_then(|s| s.target(index)?.in_progress());
    let reason = match check(fleet, prober, asked, rollout, invocation).await {
        Answer::Failed { reason } => reason,
        passed => return passed,
    };
    let failure = HookFailure {
        execution_id: call.execution_id.clone(),
        service_deployment_arn: call.service_deployment_arn.clone(),
        stage: call.stage.as_str().to_owned(),
        environment: env,
        at: chrono::Utc::now(),
        reason,
    };
    // If the failure cannot be recorded, the answer is still FAILED.
    match ledger.record_hook_failure(&app.name, &failure).await {
        Ok(standing) => Answer::Failed { reason: standing.reason },
        Err(error) => {
            warn!(app = %app.name, environment = %env, execution_id = %call.execution_id, %error, "hook failure not recorded");
            Answer::Failed { reason: failure.reason }
        }
    }
}

/// The checks of an app's deployment, in order (`rollout`: Conveyor's in flight on the target).
async fn check(
    fleet: &Fleet,
    prober: &Prober,
    asked: &Asked<'_>,
    rollout: Option<&crate::rollout::Rollout>,
    invocation: &Invocation,
) -> Answer {
    let Asked { app, env, index, call } = *asked;
    let progress = call.progress;
    let rollout = match decide::ownership(rollout) {
        Ok(rollout) => rollout,
        Err(answer) => return answer,
    };
    let Ok(target) = app.target_at(env, index) else {
        return Answer::Failed { reason: format!("{env} has no target {index}: the app config changed") };
    };
    let here = fleet.target(app, target).await;
    match here.ecs.revision_images(&call.target_revision_arn).await {
        Ok(images) => {
            if let Some(mismatch) = decide::digest_check(rollout, &app.container, &images) {
                return mismatch;
            }
        }
        Err(error) if error.retryable => return decide::unchecked(progress, &error.to_string()),
        Err(error) => return Answer::Failed { reason: format!("the revision ECS deploys cannot be read: {error}") },
    }
    let names = app.pipeline.environment(env).map(|e| e.alarms.as_slice()).unwrap_or_default();
    match alarms::check(&here.alarms, names, rollout.started_at).await {
        Ok(gate) => {
            if let Some(reason) = gate.failure() {
                return Answer::Failed { reason };
            }
        }
        Err(error) => return decide::unchecked(progress, &error.to_string()),
    }
    let Some(url) = &target.test_health_url else { return decide::without_probe() };
    let budget = PROBE_BUDGET.min(invocation.remaining(RESERVE));
    if budget < Duration::from_secs(1) {
        return decide::out_of_time(progress);
    }
    decide::after_probe(
        Progress { unchecked: 0, ..progress },
        target.test_probes,
        prober.probe_within(url, budget).await,
    )
}
