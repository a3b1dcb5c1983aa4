//! Rolling a native deployment back in flight (contract, *Rolling back in flight*).
//!
//! A promotion of the image an environment ran before its rollout in progress (what `conveyor
//! rollback` sends), while ECS's blue/green, linear or canary deployment of that rollout is still
//! in flight, stops the deployment with `StopServiceDeployment(ROLLBACK)` instead of registering a
//! revision and starting another deployment: blue still runs, so ECS moves the traffic back at
//! once. The rollout ends superseded (an operator's decision, not the image's failure), recorded
//! with who asked and why.
//!
//! It acts, then records, as every start does: a holder that dies in between leaves the rollout in
//! flight while ECS rolls it back, and the `FAILED` event ECS then sends settles it as ECS's own
//! rollback (the image failed there); a retry finds the service on blue already.

use chrono::Utc;
use tracing::info;

use crate::aws::InFlight;
use crate::error::DeployError;
use crate::leased::Leased;
use crate::ledger::Change;
use crate::record::EnvState;
use crate::rollout::Rollout;
use crate::start::{self, Candidate};

/// Stops the native deployment in flight when `candidate` is what it moves away from, and returns
/// the change to commit (the rollout superseded) with the revision the environment goes back to;
/// `None` when this is not such a rollback (or the deployment is no longer in flight): start as
/// usual.
pub async fn roll_back(
    here: &mut Leased<'_>,
    candidate: &Candidate<'_>,
    requested_by: Option<&str>,
) -> Result<Option<(Change<EnvState>, String)>, DeployError> {
    let (app, env) = (here.app, here.env);
    if crate::wave::applies(app, env) {
        return Ok(None);
    }
    let Some(rollout) = here.target_state().and_then(|s| s.rollout.clone()).filter(|r| reverts(r, candidate)) else {
        return Ok(None);
    };
    let (ecs, target) = (&here.target.ecs, here.target.service);
    let service = ecs.service(&target.cluster, &target.service).await?;
    if service.native_strategy.is_none() || service.task_definition != rollout.task_definition_arn {
        return Ok(None);
    }
    let Some(InFlight { arn, source_task_definition }) = ecs.native_in_flight(&target.cluster, &target.service).await?
    else {
        return Ok(None);
    };
    if source_task_definition.as_deref() != Some(rollout.previous.arn.as_str()) {
        return Ok(None);
    }
    ecs.roll_back_in_flight(&arn, (&target.cluster, &target.service), &rollout.previous.arn).await?;
    here.held.acting();
    let now = Utc::now();
    let who = requested_by.unwrap_or("an unidentified caller");
    let reason = format!(
        "rolled back in flight to {} ({}) by {who}: ECS moved the traffic back to {}",
        candidate.tag,
        candidate.digest.short(),
        crate::notify::short_arn(&rollout.previous.arn)
    );
    info!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest,
        deployment_id = rollout.deployment_id.as_deref(), service_deployment_arn = %arn,
        to = %rollout.previous.arn, requested_by = who, "native deployment rolled back in flight");
    let mut change = Change::new(here.state()?.clone());
    start::supersede(app, env, &mut change, &reason, now);
    Ok(Some((change, rollout.previous.arn)))
}

/// Whether `candidate` is the image `rollout`, still in progress, moves away from.
fn reverts(rollout: &Rollout, candidate: &Candidate<'_>) -> bool {
    rollout.in_progress() && rollout.previous.digest.as_ref() == Some(candidate.digest)
}
