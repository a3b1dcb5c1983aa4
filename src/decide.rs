//! Deciding approvals (`conveyor approve` and `reject`, through the promote function) and ending
//! the ones nobody decided in time (deploy-monitor's sweep). The rules and transitions are
//! [`crate::approval`]'s; approving runs the request's promotion through promote's own flow.

use aws_sdk_ecs::types::DeploymentLifecycleHookAction;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use crate::approval::{continued, declined, gone, lapsed, may_decide, pending, Approved, Verdict};
use crate::config::{AppConfig, Approval, ConfigSet, Configs};
use crate::error::{Error, InvalidRequest};
use crate::fleet::Fleet;
use crate::leased::{Leased, Leases};
use crate::ledger::{Item, ItemKey, Lease};
use crate::promote::{self, ImageRef};
use crate::record::{ApprovalRequest, EnvState, PauseHook};
use crate::types::{AppName, Environment, Requester};
use crate::vocabulary::{Outcome, PromoteStatus};
use crate::Invocation;

/// `conveyor approve` or `reject`, as the promote function receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub app: AppName,
    /// `None`: the app's one environment with approvals.
    pub environment: Option<Environment>,
    /// The request decided; `None`: whichever is pending (the CLI sends the one it showed).
    pub approval_id: Option<String>,
    pub verdict: Verdict,
}

/// The answer to a rejection (an approval answers as the promotion it starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub app: String,
    pub environment: Environment,
    pub approval_id: String,
    pub tag: String,
    pub digest: String,
    pub status: Outcome,
    pub requested_by: String,
    pub rejected_by: String,
    pub reason: String,
}

impl Rejection {
    fn of(app: &AppConfig, env: Environment, request: ApprovalRequest, by: String, reason: &str) -> Rejection {
        Rejection {
            app: app.name.to_string(),
            environment: env,
            approval_id: request.id,
            tag: request.tag.to_string(),
            digest: request.digest.to_string(),
            status: Outcome::Rejected,
            requested_by: request.requested_by,
            rejected_by: by,
            reason: reason.to_owned(),
        }
    }
}

/// What a decision led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    Approved(Box<promote::Response>),
    Rejected(Rejection),
}

/// The environment a decision is about: the named one (its approvals, if its config has them:
/// an ECS pause hook is decided in any environment), else the app's one environment with
/// approvals.
fn environment(app: &AppConfig, asked: Option<Environment>) -> Result<(Environment, Option<&Approval>), Error> {
    if let Some(env) = asked {
        app.target(env)?;
        return Ok((env, app.pipeline.approval(env)));
    }
    let with: Vec<_> = app
        .pipeline
        .environments
        .iter()
        .filter_map(|e| app.pipeline.approval(e.name).map(|a| (e.name, Some(a))))
        .collect();
    match with[..] {
        [one] => Ok(one),
        _ => {
            let own = with.iter().map(|(e, _)| e.to_string()).collect::<Vec<_>>().join(", ");
            Err(InvalidRequest::WhichOperatedEnvironment { app: app.name.clone(), own }.into())
        }
    }
}

/// Approves or rejects the pending promotion `decision` names, for the invocation's caller.
#[instrument(skip_all, fields(app = %decision.app))]
pub async fn decide(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    decision: &Decision,
    invocation: &Invocation,
) -> Result<Decided, Error> {
    let config = configs.get().await?;
    let Some(app) = config.app(&decision.app) else {
        return Err(Error::no_app(configs, &config, &decision.app));
    };
    let (env, approval) = environment(app, decision.environment)?;
    let state = leases.ledger.env::<EnvState>(&app.name, env).await?.map(|(state, _)| state);
    let pause_pending = state.as_ref().and_then(EnvState::pending_approval).is_some_and(|r| r.pause.is_some());
    let approval = match approval {
        Some(approval) => approval.clone(),
        // An environment without approvals of its own: only a pause hook is decided there, by
        // any verified identity but the requester's.
        None if pause_pending => Approval { approvers: Vec::new(), timeout: std::time::Duration::from_secs(86_400) },
        None => return Err(InvalidRequest::NoApprovals { app: app.name.clone(), environment: env }.into()),
    };
    let request = pending(app, env, state.as_ref(), decision.approval_id.as_deref())?.clone();
    let by = may_decide(&approval, &request, invocation.identity.as_deref(), &decision.verdict)?;
    if request.expires_at <= Utc::now() {
        expire(fleet, leases, app, env, invocation).await?;
        return Err(InvalidRequest::ApprovalExpired {
            app: app.name.clone(),
            environment: env,
            tag: request.tag.clone(),
            at: request.expires_at,
        }
        .into());
    }
    if let Some(hook) = request.pause.clone() {
        return decide_pause(fleet, leases, (app, env), request, &hook, by, &decision.verdict, invocation).await;
    }
    match &decision.verdict {
        Verdict::Approve => {
            info!(environment = %env, tag = %request.tag, digest = %request.digest, approval_id = %request.id,
                requested_by = %request.requested_by, approved_by = %by, "promotion approved");
            let promotion = promote::Request {
                app: app.name.clone(),
                image: ImageRef::Digest(request.digest.clone()),
                dry_run: false,
                force: request.forced,
                reason: request.reason.clone(),
                on_behalf_of: request.on_behalf_of.clone(),
                to: Some(env),
                unless_moved_since: None,
                approved: Some(Approved { id: request.id.clone(), by, tag: request.tag.clone() }),
                rollback: false,
            };
            let requester =
                Requester { verified: Some(request.requested_by.clone()), on_behalf_of: request.on_behalf_of };
            let response = promote::run_as(configs, fleet, leases, &promotion, requester, invocation).await?;
            Ok(Decided::Approved(Box::new(response)))
        }
        Verdict::Reject { reason } => {
            let lease = Lease::new(ItemKey::env(&app.name, env), format!("reject by {by}"), invocation).patient();
            let id = request.id.clone();
            leases
                .with_env(lease, fleet, app, env, async |here| {
                    let state = here.state()?.clone();
                    let Some(request) = state.pending_approval().filter(|r| r.id == id) else {
                        return Err(gone(app, env, Some(&state), Some(&id)));
                    };
                    here.commit(declined(app, env, &state, request, Some((&by, reason)), Utc::now())).await?;
                    Ok(())
                })
                .await?;
            warn!(environment = %env, tag = %request.tag, digest = %request.digest, approval_id = %request.id,
                rejected_by = %by, reason = %reason, "promotion rejected");
            Ok(Decided::Rejected(Rejection::of(app, env, request, by, reason)))
        }
    }
}

/// Decides an ECS pause hook's approval: `ContinueServiceDeployment` with `CONTINUE` (approve) or
/// `ROLLBACK` (reject), then the request ends, in one transaction. A hook ECS no longer holds
/// (the deployment went on, was rolled back, timed out, or another hook holds it now) is refused
/// as [`InvalidRequest::StaleHook`], and its request ends.
#[allow(clippy::too_many_arguments)]
async fn decide_pause(
    fleet: &Fleet,
    leases: Leases<'_>,
    (app, env): (&AppConfig, Environment),
    request: ApprovalRequest,
    hook: &PauseHook,
    by: String,
    verdict: &Verdict,
    invocation: &Invocation,
) -> Result<Decided, Error> {
    let (action, what) = match verdict {
        Verdict::Approve => (DeploymentLifecycleHookAction::Continue, "continued"),
        Verdict::Reject { .. } => (DeploymentLifecycleHookAction::Rollback, "rolled back"),
    };
    let lease = Lease::new(ItemKey::env(&app.name, env), format!("pause hook decided by {by}"), invocation).patient();
    let aws = |error: crate::aws::AwsError| Error::Deploy(vec![(app.name.clone(), error.into())]);
    let task_definition_arn = leases
        .with_env(lease, fleet, app, env, async |here: &mut Leased<'_>| {
            let state = here.state()?.clone();
            let Some(request) = state.pending_approval().filter(|r| r.id == request.id).cloned() else {
                return Err(gone(app, env, Some(&state), Some(&request.id)));
            };
            let (ecs, target) = (&here.target.ecs, here.target.service);
            let held = ecs.awaiting_pause(&target.cluster, &target.service).await.map_err(aws)?;
            let holds = held
                .is_some_and(|h| h.hook_id == hook.hook_id && h.service_deployment_arn == hook.service_deployment_arn);
            let answered = if holds {
                match ecs.continue_paused(&hook.service_deployment_arn, &hook.hook_id, action.clone()).await {
                    Ok(()) => true,
                    Err(error) if error.rejected => false,
                    Err(error) => return Err(aws(error)),
                }
            } else {
                false
            };
            let now = Utc::now();
            if !answered {
                let why = format!("ECS's pause hook {} no longer awaits action", hook.hook_id);
                here.commit(lapsed(app, env, &state, &request, why, now)).await?;
                let (app, environment) = (app.name.clone(), env);
                let (hook_id, approval_id) = (hook.hook_id.clone(), request.id.clone());
                return Err(InvalidRequest::StaleHook { app, environment, hook_id, approval_id }.into());
            }
            info!(environment = %env, tag = %request.tag, digest = %request.digest, approval_id = %request.id,
                hook_id = %hook.hook_id, service_deployment_arn = %hook.service_deployment_arn, decided_by = %by,
                "pause hook {what}");
            let change = match verdict {
                Verdict::Approve => continued(app, env, &state, &request, &by, now),
                Verdict::Reject { reason } => declined(app, env, &state, &request, Some((&by, reason)), now),
            };
            here.commit(change).await?;
            Ok(state.rollout.as_ref().map(|r| r.task_definition_arn.clone()).unwrap_or_default())
        })
        .await?;
    Ok(match verdict {
        Verdict::Approve => Decided::Approved(Box::new(promote::Response {
            app: app.name.to_string(),
            environment: env,
            tag: request.tag.to_string(),
            digest: request.digest.to_string(),
            task_definition_arn,
            status: PromoteStatus::Deploying,
            forced: false,
            requested_by: Some(request.requested_by),
            on_behalf_of: request.on_behalf_of,
            current_image: None,
            current_digest: None,
            current_tag: None,
            image: None,
            approval_id: Some(request.id),
            approved_by: Some(by),
            expires_at: None,
        })),
        Verdict::Reject { reason } => Decided::Rejected(Rejection::of(app, env, request, by, reason)),
    })
}

/// Ends the pending approval of `env` if it has expired (under the environment's lease).
async fn expire(
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    env: Environment,
    invocation: &Invocation,
) -> Result<bool, Error> {
    let lease = Lease::new(ItemKey::env(&app.name, env), "approval expiry", invocation).patient();
    leases.with_env(lease, fleet, app, env, async |here: &mut Leased<'_>| expire_leased(here).await).await
}

async fn expire_leased(here: &mut Leased<'_>) -> Result<bool, Error> {
    let now = Utc::now();
    let state = here.state()?.clone();
    let Some(request) = state.pending_approval().filter(|r| r.expires_at <= now) else { return Ok(false) };
    info!(app = %here.app.name, environment = %here.env, tag = %request.tag, digest = %request.digest,
        approval_id = %request.id, "approval expired");
    here.commit(declined(here.app, here.env, &state, request, None, now)).await?;
    Ok(true)
}

/// The sweep's pass: every pending approval past its `approval_timeout` ends as expired. Returns
/// the environments expired, and those that could not be handled (tried again next sweep).
pub async fn expire_due(
    fleet: &Fleet,
    leases: Leases<'_>,
    config: &ConfigSet,
    pending_items: &[Item],
    invocation: &Invocation,
) -> Vec<(AppName, Environment, Result<bool, Error>)> {
    let now = Utc::now();
    let mut handled = Vec::new();
    for item in pending_items {
        let Some(key) = ItemKey::parse(item) else { continue };
        let Some((app, env)) = key.app_env().and_then(|(app, env)| Some((config.app(&app)?, env))) else { continue };
        let state: Option<EnvState> = crate::ledger::state_from_item(item);
        if state.as_ref().and_then(EnvState::pending_approval).is_none_or(|r| r.expires_at > now) {
            continue;
        }
        handled.push((app.name.clone(), env, expire(fleet, leases, app, env, invocation).await));
    }
    handled
}
