//! Pause hooks are approvals (contract, *Native ECS deployment strategies*): a `PAUSE` lifecycle
//! hook holding the native deployment of Conveyor's rollout in flight (`ECS Hook State Change`,
//! `HOOK_AWAITING_ACTION`) becomes the environment's pending approval, under the same model as a
//! promotion's: a second person, an identity AWS verified, `approvers` when the environment names
//! them. `conveyor approve` answers the hook `CONTINUE`, `reject` `ROLLBACK` ([`crate::decide`]).
//!
//! The event only says which service: the hook (its id, its deployment, when it times out) is
//! read from ECS, so a forged or stale event can request nothing ECS is not holding.

use chrono::Utc;
use tracing::{info, instrument};

use super::{Handled, MonitorReport};
use crate::config::Configs;
use crate::error::{DeployError, Error};
use crate::events::HookEvent;
use crate::fleet::Fleet;
use crate::leased::{Leased, Leases};
use crate::ledger::{ItemKey, Lease};
use crate::record::{ApprovalRequest, ApprovalState, PauseHook};
use crate::vocabulary::Action;
use crate::Invocation;

/// How long a request lasts when ECS gives the hook no expiry (ECS's default hook timeout).
const DEFAULT_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::hours(24);

#[instrument(skip_all, fields(event_id = event.event_id.as_deref(), service = %event.service_arn))]
pub async fn on_hook(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    event: &HookEvent,
    invocation: &Invocation,
) -> Result<MonitorReport, Error> {
    let config = configs.get().await?;
    let home = fleet.home(invocation);
    let Some((app, env, index)) = config.owner_of(&event.place(), &home) else {
        info!(reason = "unmanaged service", "event skipped");
        return Ok(MonitorReport {
            results: vec![Handled::skipped(format!("{} is not a service Conveyor manages", event.service_arn))],
        });
    };
    let owner = format!("deploy-monitor pause hook {}", event.service_arn);
    let lease = Lease::new(ItemKey::env(&app.name, env), owner, invocation).patient();
    let handled = leases
        .with_target(lease, fleet, app, env, index, async |here| request(here).await)
        .await
        .map_err(|error| Error::Deploy(vec![(app.name.clone(), error)]))?;
    info!(app = %app.name, environment = %env, action = %handled.action, detail = %handled.detail, "pause hook handled");
    Ok(MonitorReport { results: vec![handled] })
}

/// Records the pause hook ECS holds the rollout in flight at as the environment's pending
/// approval (once per hook).
async fn request(here: &mut Leased<'_>) -> Result<Handled, DeployError> {
    let (app, env) = (here.app, here.env);
    let skip = |why: &str| Ok(Handled::of(&app.name, env, Action::Skipped, why));
    if crate::wave::applies(app, env) {
        return skip("pause hooks are approvals in environments of one target (ECS's hook is left as it is)");
    }
    let Some(state) = here.target_state().cloned() else {
        return skip("Conveyor has started no rollout on this service");
    };
    let Some(rollout) = state.rollout.clone().filter(|r| r.in_progress()) else {
        return skip("no rollout of Conveyor's in flight: the pause hook is left to whoever answers it");
    };
    let (ecs, target) = (&here.target.ecs, here.target.service);
    let service = ecs.service(&target.cluster, &target.service).await?;
    if service.task_definition != rollout.task_definition_arn {
        return skip("the deployment held is not Conveyor's rollout in flight");
    }
    let Some(hook) = ecs.awaiting_pause(&target.cluster, &target.service).await? else {
        return skip("no pause hook awaits action");
    };
    if let Some(ApprovalState::Pending(pending)) = &state.approval {
        if pending.pause.as_ref().is_some_and(|p| p.hook_id == hook.hook_id) {
            return skip("this pause hook's approval is already requested");
        }
    }
    let now = Utc::now();
    let request = ApprovalRequest {
        id: crate::start::new_id(now),
        tag: rollout.tag.clone(),
        digest: rollout.digest.clone(),
        requested_by: rollout.requested_by().unwrap_or(crate::auto::CONVEYOR).to_owned(),
        on_behalf_of: rollout.on_behalf_of().map(str::to_owned),
        reason: Some(format!("ECS holds the deployment at a pause hook ({})", hook.hook_id)),
        forced: false,
        requested_at: now,
        expires_at: hook.expires_at.unwrap_or(now + DEFAULT_TIMEOUT),
        pause: Some(PauseHook {
            service_deployment_arn: hook.service_deployment_arn.clone(),
            hook_id: hook.hook_id.clone(),
            rollout_id: rollout.id.clone(),
        }),
    };
    info!(app = %app.name, environment = %env, tag = %rollout.tag, digest = %rollout.digest, approval_id = %request.id,
        hook_id = %hook.hook_id, service_deployment_arn = %hook.service_deployment_arn, expires_at = %request.expires_at,
        "pause hook awaits approval");
    let id = request.id.clone();
    here.commit(crate::approval::requested(app, env, &state, request, None)).await?;
    Ok(Handled::of(&app.name, env, Action::Waiting, format!("approval {id} requested for pause hook {}", hook.hook_id)))
}
