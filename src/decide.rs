//! Deciding approvals (`conveyor approve` and `reject`, through the promote function) and ending
//! the ones nobody decided in time (deploy-monitor's sweep). The rules and transitions are
//! [`crate::approval`]'s; approving runs the request's promotion through promote's own flow.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use crate::approval::{declined, gone, may_decide, pending, Approved, Verdict};
use crate::config::{AppConfig, Approval, ConfigSet, Configs};
use crate::error::{Error, InvalidRequest};
use crate::fleet::Fleet;
use crate::leased::{Leased, Leases};
use crate::ledger::{Item, ItemKey, Lease};
use crate::promote::{self, ImageRef};
use crate::record::EnvState;
use crate::types::{AppName, Environment, Requester};
use crate::vocabulary::Outcome;
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

/// What a decision led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    Approved(Box<promote::Response>),
    Rejected(Rejection),
}

/// The environment a decision is about: the named one, else the app's one environment with
/// approvals.
fn environment(app: &AppConfig, asked: Option<Environment>) -> Result<(Environment, &Approval), Error> {
    if let Some(env) = asked {
        app.target(env)?;
        return app
            .pipeline
            .approval(env)
            .map(|approval| (env, approval))
            .ok_or_else(|| InvalidRequest::NoApprovals { app: app.name.clone(), environment: env }.into());
    }
    let with: Vec<_> =
        app.pipeline.environments.iter().filter_map(|e| app.pipeline.approval(e.name).map(|a| (e.name, a))).collect();
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
    let request = pending(app, env, state.as_ref(), decision.approval_id.as_deref())?.clone();
    let by = may_decide(approval, &request, invocation.identity.as_deref(), &decision.verdict)?;
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
            Ok(Decided::Rejected(Rejection {
                app: app.name.to_string(),
                environment: env,
                approval_id: request.id,
                tag: request.tag.to_string(),
                digest: request.digest.to_string(),
                status: Outcome::Rejected,
                requested_by: request.requested_by,
                rejected_by: by,
                reason: reason.clone(),
            }))
        }
    }
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
