//! promote: deploy the very digest an environment vetted to the environment that takes its images
//! from it (`to`; prod from stage, in a v2 pipeline), and refuse anything else.
//!
//! A digest is promotable into `to` when `to`'s `from` vetted it and it never failed anywhere
//! (`force` overrides an earlier failure, never a missing vetting). The check is made again, in
//! the same transaction that takes `to`'s lease, so a failure recorded meanwhile still refuses.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, instrument, warn};

use crate::config::{AppConfig, Configs, Promotion, Source};
use crate::error::{user_text, DeployError, Error, InvalidRequest, NotVetted, Promotable};
use crate::fleet::{Fleet, Target};
use crate::leased::{Leased, Leases};
use crate::ledger::{Check, Failure, Holder, ImageFacts, Item, ItemKey, Lease, Ledger, LedgerError, TagItem};
use crate::pull::PullAccess;
use crate::record::{ApprovalRequest, EnvState};
use crate::rollout::Origin;
use crate::start::{self, Candidate, Started};
use crate::taskdef::TAG_IMAGE_TAG;
use crate::types::{AppName, Environment, ImageDigest, ImageTag, Requester};
use crate::vocabulary::PromoteStatus;
use crate::Invocation;

/// How many promotable tags a refusal lists.
const SUGGESTIONS: usize = 5;

/// The invoke payload, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    app: String,
    tag: Option<String>,
    digest: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
    reason: Option<String>,
    requested_by: Option<String>,
    to: Option<String>,
    /// (v3) A rollback (`conveyor rollback`): allowed while the environment is paused, to a
    /// release verified there before.
    #[serde(default)]
    rollback: bool,
}

/// A valid promote request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub app: AppName,
    pub image: ImageRef,
    pub dry_run: bool,
    pub force: bool,
    pub reason: Option<String>,
    /// The payload's `requested_by`: a name the caller gave, kept as `on_behalf_of` (unverified).
    pub on_behalf_of: Option<String>,
    /// The environment to promote into (`None`: the app's one environment promoted by hand).
    pub to: Option<Environment>,
    /// An auto promotion's guard (never from a payload): do nothing if the target's latest
    /// rollout is of this image or started at or after this time (a person promoted or rolled
    /// back since the image was vetted). Checked on the read the lease is taken on.
    pub unless_moved_since: Option<chrono::DateTime<Utc>>,
    /// The approval this promotion carries out (never from a payload: [`crate::approval::decide`]).
    pub approved: Option<crate::approval::Approved>,
    /// A rollback: pausing and rolling back go together in an incident, so it is allowed while the
    /// environment is paused when its image was verified there before (recorded as such).
    pub rollback: bool,
}

/// What to promote: a tag (resolved to the digest stage vetted for it) or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Tag(ImageTag),
    Digest(ImageDigest),
}

/// The answer (the contract's response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub app: String,
    pub environment: Environment,
    pub tag: String,
    pub digest: String,
    pub task_definition_arn: String,
    pub status: PromoteStatus,
    /// Promoted despite an earlier failure of the image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// The identity AWS verified for the caller, when Lambda gives one (what the history records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The request's `requested_by` (unverified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Dry run: what prod's container runs now, and what it would get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `awaiting_approval`: the request to approve; after an approval, the one approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// `awaiting_approval`: when the request expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<Utc>>,
}

pub fn parse_request(payload: Value) -> Result<Request, Error> {
    if !payload.is_object() {
        return Err(InvalidRequest::NotAnObject { got: payload.to_string() }.into());
    }
    let raw: RawRequest = serde_json::from_value(payload).map_err(|e| InvalidRequest::Shape(e.to_string()))?;
    let app = AppName::parse(raw.app).map_err(InvalidRequest::from)?;
    let image = match (raw.tag, raw.digest) {
        (Some(tag), None) => ImageRef::Tag(ImageTag::parse(tag).map_err(InvalidRequest::from)?),
        (None, Some(digest)) => ImageRef::Digest(ImageDigest::parse(digest).map_err(InvalidRequest::from)?),
        (Some(_), Some(_)) => return Err(InvalidRequest::TagAndDigest.into()),
        (None, None) => return Err(InvalidRequest::NoImage.into()),
    };
    Ok(Request {
        app,
        image,
        dry_run: raw.dry_run,
        force: raw.force,
        reason: user_text("reason", raw.reason)?,
        on_behalf_of: user_text("requested_by", raw.requested_by)?,
        to: raw.to.map(|to| Environment::parse(&to)).transpose().map_err(InvalidRequest::from)?,
        unless_moved_since: None,
        approved: None,
        rollback: raw.rollback,
    })
}

/// Handles one invocation.
pub async fn handle(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    payload: Value,
    invocation: &Invocation,
) -> Result<Response, Error> {
    let request = parse_request(payload).inspect_err(|e| warn!(error = %e, "promote refused"))?;
    run(configs, fleet, leases, &request, invocation).await
}

/// Carries out a valid request, for the invocation's caller.
pub async fn run(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    request: &Request,
    invocation: &Invocation,
) -> Result<Response, Error> {
    let requester = Requester::of(invocation, request.on_behalf_of.clone());
    run_as(configs, fleet, leases, request, requester, invocation).await
}

/// Carries out a valid request for `requester` (Conveyor itself, for an auto promotion).
pub async fn run_as(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    request: &Request,
    requester: Requester,
    invocation: &Invocation,
) -> Result<Response, Error> {
    // Boxed, like every handler's work (see `stage::handle`).
    Box::pin(promote(configs, fleet, leases, request, requester, invocation))
        .await
        .inspect_err(|e| warn!(app = %request.app, error_type = %e.error_type(), error = %e, "promote refused"))
}

/// What a request resolved to.
struct Resolved {
    tag: ImageTag,
    digest: ImageDigest,
    image: String,
    /// The image's earliest unforgiven failure (only looked up when it matters).
    failure: Option<(Environment, Failure)>,
}

#[instrument(skip_all, fields(app = %request.app, dry_run = request.dry_run, force = request.force))]
async fn promote(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    request: &Request,
    requester: Requester,
    invocation: &Invocation,
) -> Result<Response, Error> {
    let ledger = leases.ledger;
    let config = configs.get().await?;
    let Some(app) = config.app(&request.app) else {
        return Err(Error::no_app(configs, &config, &request.app));
    };
    let (into, from) = destination(app, request.to)?;
    let prod = ItemKey::env(&app.name, into);
    let owner = format!("promote by {requester}");
    // One lease (one token) for every attempt: an attempt whose answer was lost is recognised.
    let lease = Lease::new(prod.clone(), owner, invocation).patient();
    let mut pauses = lease.pauses();
    let (answer, resolved) = loop {
        let wanted = match &request.image {
            ImageRef::Tag(tag) => ItemKey::tag(&app.name, from, tag),
            ImageRef::Digest(digest) => ItemKey::image(&app.name, digest),
        };
        let mut items = ledger.items(&[wanted.clone(), prod.clone()]).await?;
        let mut resolved = resolve(ledger, app, from, request, items.remove(&wanted)).await?;
        if let Some(approved) = &request.approved {
            // The tag the request named (it may have been pushed again since).
            resolved.tag = approved.tag.clone();
        }
        let prod_item = items.remove(&prod);
        let state: Option<EnvState> = prod_item.as_ref().and_then(crate::ledger::state_from_item);
        let mut request = std::borrow::Cow::Borrowed(request);
        if let Some(pause) = state.as_ref().and_then(|s| s.paused.as_ref()) {
            let verified_here = request.rollback
                && ledger.image(&app.name, &resolved.digest).await?.is_some_and(|facts| facts.vetted(into).is_some());
            if !verified_here {
                return Err(Error::Paused { app: app.name.clone(), environment: into, pause: Box::new(pause.clone()) });
            }
            // Recorded with the pause it went through, beside who asked and why.
            let paused =
                format!("rolled back while paused by {}: {}", pause.by.as_deref().unwrap_or("someone"), pause.reason);
            let reason = request.reason.as_ref().map_or(paused.clone(), |reason| format!("{reason} ({paused})"));
            request.to_mut().reason = Some(reason);
        }
        let request = request.as_ref();
        if let Some(since) = request.unless_moved_since {
            let latest = state.as_ref().and_then(|s| s.rollout.as_ref());
            if latest.is_some_and(|r| r.digest == resolved.digest || r.started_at >= since) {
                return Err(Error::Moved { app: app.name.clone(), environment: into });
            }
        }
        let resolved = Resolved { image: own_image(app, &fleet.home(invocation), &resolved)?, ..resolved };
        let resolved = Resolved { image: pull_source(fleet, app, into, &resolved, invocation).await?, ..resolved };
        if request.dry_run {
            let target = fleet.target(app, app.target(into)?).await;
            let answer = dry_run(&target, app, into, &resolved).await.map_err(|e| deploy_error(app, e))?;
            return Ok(Response { requested_by: requester.verified.clone(), ..answer });
        }
        // Vetted in `from`, and (unless forced) failed in none of the app's environments.
        let failed_anywhere =
            app.pipeline.environments.iter().map(|env| format!("failed_{}", env.name)).collect::<Vec<_>>();
        let checks = [Check {
            key: ItemKey::image(&app.name, &resolved.digest),
            present: vec![format!("vetted_{from}")],
            absent: if request.force { Vec::new() } else { failed_anywhere },
        }];
        // Into an environment with approvals, a promotion is a request for one, unless it carries
        // out an approval; what was approved must still be what is pending (a newer request
        // supersedes it). All of it checked on the read the lease is taken on.
        let approval = app.pipeline.approval(into).filter(|_| request.approved.is_none());
        if let Some(approved) = &request.approved {
            crate::approval::pending(app, into, state.as_ref(), Some(&approved.id))?;
        } else if approval.is_some() {
            if requester.verified.is_none() {
                return Err(unverified_requester(app, into));
            }
            // Asked again (a retry): the request stands as it is, unless its image failed since
            // it was asked for. Then it is refused like any failed image without `force` (the
            // pending request's own `force` is not this one's); asked again with `force`, a forced
            // request stands or replaces it.
            let pending = state.as_ref().and_then(EnvState::pending_approval);
            if let Some(pending) = pending.filter(|p| p.digest == resolved.digest) {
                let facts = ledger.image(&app.name, &resolved.digest).await?;
                let failed = facts.as_ref().and_then(ImageFacts::failure).is_some();
                if !failed || (pending.forced && request.force) {
                    let running = state.as_ref().map(|s| s.known_good().arn).unwrap_or_default();
                    return Ok(awaiting(app, into, pending, running, &requester));
                }
                if !request.force {
                    return Err(refusal(ledger, app, from, &resolved.tag, &resolved.digest, facts.as_ref()).await);
                }
            }
        }
        let lease = lease.clone().on_read(prod_item.as_ref(), &checks);
        let promoted = leases.with_env(lease, fleet, app, into, async |here| {
            info!(tag = %resolved.tag, digest = %resolved.digest, "vetted image resolved");
            match approval {
                Some(approval) => request_approval(here, request, &resolved, &requester, approval).await,
                None => promote_leased(here, request, &resolved, &requester)
                    .await
                    .map(|(arn, status, forced)| Done::Started(arn, status, forced)),
            }
        });
        match promoted.await {
            Ok(answer) => break (answer, resolved),
            Err(DeployError::Ledger(LedgerError::Conflict { .. })) => {
                // The image failed (or lost its verification) since it was read: refuse with why.
                let facts = ledger.image(&app.name, &resolved.digest).await?;
                return Err(refusal(ledger, app, from, &resolved.tag, &resolved.digest, facts.as_ref()).await);
            }
            // Held by another invocation, or changed since it was read: read it again.
            Err(DeployError::Ledger(busy @ LedgerError::Busy { holder: Holder::Lease { .. }, .. })) => {
                match pauses.next() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(busy.into()),
                }
            }
            Err(error) => return Err(deploy_error(app, error)),
        }
    };
    let (task_definition_arn, status, forced) = match answer {
        Done::Started(task_definition_arn, status, forced) => (task_definition_arn, status, forced),
        Done::Awaiting(pending, running) => return Ok(awaiting(app, into, &pending, running, &requester)),
    };
    Ok(Response {
        app: app.name.to_string(),
        environment: into,
        tag: resolved.tag.to_string(),
        digest: resolved.digest.to_string(),
        task_definition_arn,
        status,
        forced,
        requested_by: requester.verified,
        on_behalf_of: requester.on_behalf_of,
        current_image: None,
        current_digest: None,
        current_tag: None,
        image: None,
        approval_id: request.approved.as_ref().map(|a| a.id.clone()),
        approved_by: request.approved.as_ref().map(|a| a.by.clone()),
        expires_at: None,
    })
}

/// What a leased promotion did.
enum Done {
    /// Rolling out (or already running): the revision, the status, whether forced.
    Started(String, PromoteStatus, bool),
    /// Waiting for an approval; the revision the environment runs meanwhile.
    Awaiting(Box<ApprovalRequest>, String),
}

/// The answer to a promotion waiting for `pending`'s approval.
fn awaiting(
    app: &AppConfig,
    into: Environment,
    pending: &ApprovalRequest,
    running: String,
    requester: &Requester,
) -> Response {
    Response {
        app: app.name.to_string(),
        environment: into,
        tag: pending.tag.to_string(),
        digest: pending.digest.to_string(),
        task_definition_arn: running,
        status: PromoteStatus::AwaitingApproval,
        forced: pending.forced,
        requested_by: Some(pending.requested_by.clone()),
        on_behalf_of: requester.on_behalf_of.clone(),
        current_image: None,
        current_digest: None,
        current_tag: None,
        image: None,
        approval_id: Some(pending.id.clone()),
        approved_by: None,
        expires_at: Some(pending.expires_at),
    }
}

/// A promotion into an environment with approvals must say who asked: the approver must differ.
fn unverified_requester(app: &AppConfig, into: Environment) -> Error {
    Error::NotAllowed(format!(
        "promotions into {} {into} wait for an approval by another person, so who requests one must be known: send the request with an identity proof (`conveyor promote` does)",
        app.name
    ))
}

/// Records the promotion as waiting for its approval (nothing else changes), announced
/// `approval_requested`.
async fn request_approval(
    here: &mut Leased<'_>,
    request: &Request,
    resolved: &Resolved,
    requester: &Requester,
    approval: &crate::config::Approval,
) -> Result<Done, DeployError> {
    let state = start::ensure_state(here).await?.clone();
    let now = Utc::now();
    let pending = ApprovalRequest {
        id: start::new_id(now),
        tag: resolved.tag.clone(),
        digest: resolved.digest.clone(),
        requested_by: requester.verified.clone().unwrap_or_default(),
        on_behalf_of: requester.on_behalf_of.clone(),
        reason: request.reason.clone(),
        forced: request.force && resolved.failure.is_some(),
        requested_at: now,
        expires_at: now + chrono::Duration::from_std(approval.timeout).unwrap_or(chrono::Duration::days(1)),
        pause: None,
    };
    let replaces = state.last_verified.as_ref().map(|v| format!("{} ({})", v.tag, v.digest.short()));
    let running = state.known_good().arn;
    info!(environment = %here.env, tag = %pending.tag, digest = %pending.digest, approval_id = %pending.id,
        requested_by = %pending.requested_by, expires_at = %pending.expires_at, "promotion awaits approval");
    here.commit(crate::approval::requested(here.app, here.env, &state, pending.clone(), replaces)).await?;
    Ok(Done::Awaiting(Box::new(pending), running))
}

async fn promote_leased(
    here: &mut Leased<'_>,
    request: &Request,
    resolved: &Resolved,
    requester: &Requester,
) -> Result<(String, PromoteStatus, bool), DeployError> {
    let forced = request.force && resolved.failure.is_some();
    let candidate = Candidate {
        tag: &resolved.tag,
        digest: &resolved.digest,
        image: &resolved.image,
        event_time: Utc::now(),
        origin: Origin::Promotion {
            requested_by: requester.verified.clone(),
            on_behalf_of: requester.on_behalf_of.clone(),
            reason: request.reason.clone(),
            forced,
            approved_by: request.approved.as_ref().map(|a| a.by.clone()),
        },
    };
    if let Some((mut change, blue)) =
        crate::inflight::roll_back(here, &candidate, requester.verified.as_deref()).await?
    {
        if let Some(approved) = &request.approved {
            crate::approval::carried_out(here.app, here.env, &mut change, approved, &resolved.digest, requester);
        }
        here.commit(change).await?;
        return Ok((blue, PromoteStatus::RollingBack, false));
    }
    let mut plan = start::start(here, &candidate).await?;
    if let Some(approved) = &request.approved {
        // The approval ends in the transaction that starts its rollout.
        crate::approval::carried_out(here.app, here.env, &mut plan.change, approved, &resolved.digest, requester);
    }
    let answer = match &plan.started {
        Started::AlreadyRunning { task_definition_arn } => {
            info!(environment = %here.env, tag = %resolved.tag, digest = %resolved.digest, task_definition_arn = %task_definition_arn, "the environment already runs this digest");
            (task_definition_arn.clone(), PromoteStatus::AlreadyDeployed, false)
        }
        Started::Rolling(rollout) => {
            info!(environment = %here.env, tag = %rollout.tag, digest = %rollout.digest, task_definition_arn = %rollout.task_definition_arn,
                deployment_id = rollout.deployment_id.as_deref(), forced, "promotion started");
            (rollout.task_definition_arn.clone(), PromoteStatus::Deploying, forced)
        }
    };
    if !plan.change.history.is_empty() || matches!(plan.started, Started::Rolling(_)) || request.approved.is_some() {
        here.commit(plan.change).await?;
    }
    if matches!(plan.started, Started::Rolling(_)) {
        crate::wave::after_start(here).await;
    }
    Ok(answer)
}

/// The image stage verified, rebuilt from the app's registry and repository and the vetted
/// digest: the image string stored beside a tag is never what prod gets, so an item written by
/// anyone but Conveyor cannot choose prod's image (a forged item pointing at another digest is
/// refused by the vetting check on that digest's own item).
fn own_image(app: &AppConfig, home: &crate::config::Home, resolved: &Resolved) -> Result<String, Error> {
    let registry = app.registry(home).ok_or_else(|| {
        deploy_error(app, DeployError::NoRegistry { app: app.name.clone(), parameter: app.parameter.clone() })
    })?;
    let image = registry.image(&app.repository, &resolved.digest);
    if resolved.image != image {
        warn!(tag = %resolved.tag, digest = %resolved.digest, stored = %resolved.image, image = %image,
            "the image recorded for this tag is not the app's own: ignored, the app's registry image is promoted");
    }
    Ok(image)
}

/// The image prod pulls: the very image stage ran when prod's account may pull it (same account,
/// or the repository policy allows it), else its replica in prod's own registry (ECR
/// replication); refused, saying what to add, when prod could not pull it at all. When the
/// policy cannot be read (another account's registry), ECS is left to tell.
async fn pull_source(
    fleet: &Fleet,
    app: &AppConfig,
    into: Environment,
    resolved: &Resolved,
    invocation: &Invocation,
) -> Result<String, Error> {
    let prod = app.target(into)?;
    let home = fleet.home(invocation);
    let (Some(prod_account), Some(pushed)) = (prod.account.as_deref(), crate::image::ecr_parts(&resolved.image)) else {
        return Ok(resolved.image.clone());
    };
    let prod_region = prod.region.clone().or(home.region).unwrap_or_else(|| pushed.region.to_owned());
    match crate::pull::access(fleet, &pushed, into, prod_account, &prod_region).await {
        PullAccess::SameAccount | PullAccess::Policy | PullAccess::Unknown { .. } => Ok(resolved.image.clone()),
        PullAccess::Replica { registry } => Ok(crate::image::pinned(&registry, pushed.repository, &resolved.digest)),
        PullAccess::Denied(refusal) => Err(Error::PullNotAllowed(refusal)),
    }
}

/// The environment a request promotes into, and the one that environment takes its images from:
/// `to`, else the app's one environment promoted by hand.
fn destination(app: &AppConfig, to: Option<Environment>) -> Result<(Environment, Environment), Error> {
    let promoted_into = |env: &&crate::config::EnvironmentConfig| matches!(env.source, Source::From { .. });
    let named = |envs: Vec<&crate::config::EnvironmentConfig>| {
        envs.iter().map(|e| e.name.to_string()).collect::<Vec<_>>().join(", ")
    };
    let into = match to {
        Some(to) => app.target(to).map(|_| to)?,
        None => {
            let manual: Vec<_> = app
                .pipeline
                .environments
                .iter()
                .filter(|e| matches!(e.source, Source::From { promotion: Promotion::Manual, .. }))
                .collect();
            match manual[..] {
                [one] => one.name,
                _ => {
                    let into: Vec<_> = app.pipeline.environments.iter().filter(promoted_into).collect();
                    return Err(InvalidRequest::WhichEnvironment { app: app.name.clone(), into: named(into) }.into());
                }
            }
        }
    };
    match app.pipeline.source(into) {
        Some(Source::From { environment, .. }) => Ok((into, *environment)),
        _ => {
            let into_ones: Vec<_> = app.pipeline.environments.iter().filter(promoted_into).collect();
            Err(InvalidRequest::EntryEnvironment { environment: into, into: named(into_ones) }.into())
        }
    }
}

/// The tag, digest and image of what to promote, if `from` vetted it (and, unless forced, it
/// never failed).
async fn resolve(
    ledger: &Ledger,
    app: &AppConfig,
    from: Environment,
    request: &Request,
    item: Option<Item>,
) -> Result<Resolved, Error> {
    let (tag, digest, image, facts) = match &request.image {
        ImageRef::Tag(tag) => {
            let Some(item) = item.and_then(|item| serde_dynamo::from_item::<_, TagItem>(item).ok()) else {
                return Err(unvetted_tag(ledger, app, from, tag).await);
            };
            // Whether it failed is checked as prod's lease is taken; with `force`, it matters now.
            let facts = if request.force { ledger.image(&app.name, &item.digest).await? } else { None };
            (tag.clone(), item.digest, item.image, facts)
        }
        ImageRef::Digest(digest) => {
            let facts = item.and_then(|item| serde_dynamo::from_item::<_, ImageFacts>(item).ok());
            let Some(facts) = facts.filter(|f| f.vetted(from).is_some()) else {
                let promotable = promotable(ledger, app, from).await?;
                return Err(NotVetted::Never {
                    app: app.name.clone(),
                    environment: from,
                    image: digest.to_string(),
                    promotable,
                }
                .into());
            };
            let tag = facts
                .last_tag
                .clone()
                .ok_or_else(|| NotVetted::Untagged { app: app.name.clone(), digest: digest.clone() })?;
            (tag, digest.clone(), facts.image.clone().unwrap_or_default(), Some(facts))
        }
    };
    let failure = facts.as_ref().and_then(ImageFacts::failure);
    if failure.is_some() && !request.force {
        return Err(refusal(ledger, app, from, &tag, &digest, facts.as_ref()).await);
    }
    Ok(Resolved { tag, digest, image, failure })
}

/// `NotVetted`, saying why and what can be promoted instead.
async fn refusal(
    ledger: &Ledger,
    app: &AppConfig,
    from: Environment,
    tag: &ImageTag,
    digest: &ImageDigest,
    facts: Option<&ImageFacts>,
) -> Error {
    let promotable = match promotable(ledger, app, from).await {
        Ok(promotable) => promotable,
        Err(error) => return error,
    };
    let refusal = match facts.and_then(|f| f.failure()) {
        Some((environment, failure)) => NotVetted::Failed {
            app: app.name.clone(),
            tag: tag.clone(),
            digest: digest.clone(),
            environment,
            failure,
            promotable,
        },
        None => NotVetted::Never {
            app: app.name.clone(),
            environment: from,
            image: format!("{tag} ({digest})"),
            promotable,
        },
    };
    refusal.into()
}

/// Why a tag `from` never vetted is refused: the failure of the image it last rolled out there,
/// when it failed (when, why), else never vetted. One `Query` of the recent history and one read
/// of that image, on this refusal's path only.
async fn unvetted_tag(ledger: &Ledger, app: &AppConfig, from: Environment, tag: &ImageTag) -> Error {
    let promotable = match promotable(ledger, app, from).await {
        Ok(promotable) => promotable,
        Err(error) => return error,
    };
    let now = Utc::now() + chrono::Duration::minutes(1);
    let recent = ledger.history(&app.name, DateTime::UNIX_EPOCH, now, true, Some(RECENT_HISTORY)).await;
    let digest = recent.ok().and_then(|entries| {
        entries.into_iter().find(|e| e.environment == from && e.tag.as_ref() == Some(tag)).and_then(|e| e.digest)
    });
    let failed = match &digest {
        Some(digest) => ledger.image(&app.name, digest).await.ok().flatten().and_then(|f| f.failure()),
        None => None,
    };
    match (digest, failed) {
        (Some(digest), Some((environment, failure))) => {
            NotVetted::Failed { app: app.name.clone(), tag: tag.clone(), digest, environment, failure, promotable }
        }
        _ => NotVetted::Never { app: app.name.clone(), environment: from, image: tag.to_string(), promotable },
    }
    .into()
}

/// How many of an app's newest history entries a refusal reads to find what a tag was.
const RECENT_HISTORY: usize = 200;

/// What can be promoted instead ("Promotable tags, newest first: v1.4.1 (sha256:...), ...").
async fn promotable(ledger: &Ledger, app: &AppConfig, from: Environment) -> Result<Promotable, Error> {
    let listed =
        promotable_tags(ledger, &app.name, from, SUGGESTIONS).await.map_err(|e| deploy_error(app, e.into()))?;
    Ok(Promotable(listed))
}

/// The tags `from` vetted whose image never failed, most recently vetted first.
pub async fn promotable_tags(
    ledger: &Ledger,
    app: &AppName,
    from: Environment,
    limit: usize,
) -> Result<Vec<TagItem>, LedgerError> {
    let mut tags = ledger.tags(app, from).await?;
    tags.sort_by_key(|t| std::cmp::Reverse(t.vetted_at));
    let mut digests: Vec<ImageDigest> = tags.iter().map(|t| t.digest.clone()).collect();
    digests.dedup();
    let keys: Vec<ItemKey> = digests.iter().take(100).map(|d| ItemKey::image(app, d)).collect();
    let images = ledger.items(&keys).await?;
    // Vetted in `from` (a tag item may be written while its image still soaks) and failed nowhere.
    let promotable = |digest: &ImageDigest| {
        images
            .get(&ItemKey::image(app, digest))
            .and_then(|item| serde_dynamo::from_item::<_, ImageFacts>(item.clone()).ok())
            .is_some_and(|facts| facts.vetted(from).is_some() && facts.failure().is_none())
    };
    Ok(tags.into_iter().filter(|t| promotable(&t.digest)).take(limit).collect())
}

async fn dry_run(
    target: &Target<'_>,
    app: &AppConfig,
    into: Environment,
    resolved: &Resolved,
) -> Result<Response, DeployError> {
    let observed = start::observe(target, app).await?;
    let current = observed.app_image(app)?.to_owned();
    let already = observed.revision.digest.as_ref() == Some(&resolved.digest);
    info!(environment = %into, tag = %resolved.tag, digest = %resolved.digest, current_image = %current, already_deployed = already, "dry run");
    Ok(Response {
        app: app.name.to_string(),
        environment: into,
        tag: resolved.tag.to_string(),
        digest: resolved.digest.to_string(),
        task_definition_arn: observed.service.task_definition.clone(),
        status: if already { PromoteStatus::AlreadyDeployed } else { PromoteStatus::DryRun },
        forced: resolved.failure.is_some(),
        requested_by: None,
        on_behalf_of: None,
        current_digest: observed.revision.digest.as_ref().map(ToString::to_string),
        current_tag: observed.running.tag(TAG_IMAGE_TAG).map(str::to_owned),
        current_image: Some(current),
        image: Some(resolved.image.clone()),
        approval_id: None,
        approved_by: None,
        expires_at: None,
    })
}

/// A deployment error in promote's vocabulary: problems people must fix in the app's config or
/// task definition are `ConfigError`, a busy service `Busy`, everything else `AwsError`.
fn deploy_error(app: &AppConfig, error: DeployError) -> Error {
    match error {
        DeployError::ContainerNotFound { .. }
        | DeployError::NoRegistry { .. }
        | DeployError::Unmodeled(_)
        | DeployError::NoEnvironment(_) => {
            Error::Config(crate::config::ConfigError::one(&app.parameter, "container", error.to_string()))
        }
        DeployError::Aws(aws) => Error::Aws(aws),
        DeployError::Ledger(ledger) => ledger.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn refused(payload: Value, needle: &str) {
        match parse_request(payload) {
            Err(Error::InvalidRequest(invalid)) => assert!(invalid.to_string().contains(needle), "{invalid}"),
            other => panic!("expected InvalidRequest containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn requests_parse() {
        let request = parse_request(json!({"app": "shop-api", "tag": "v1.4.2"})).unwrap();
        assert_eq!(request.image, ImageRef::Tag(ImageTag::parse("v1.4.2").unwrap()));
        assert!(!request.dry_run && !request.force);
        let digest = format!("sha256:{}", "a".repeat(64));
        let request = parse_request(json!({"app": "shop-api", "digest": digest, "dry_run": true, "force": true,
            "reason": "  hotfix for INC-42 ", "requested_by": "arn:aws:sts::1:assumed-role/dev/ana"}))
        .unwrap();
        assert_eq!(request.image, ImageRef::Digest(ImageDigest::parse(digest).unwrap()));
        assert!(request.dry_run && request.force);
        assert_eq!(request.reason.as_deref(), Some("hotfix for INC-42"));
        assert_eq!(request.on_behalf_of.as_deref(), Some("arn:aws:sts::1:assumed-role/dev/ana"));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        refused(json!("shop-api"), "JSON object");
        refused(json!({"app": "shop-api", "tag": "v1", "please": true}), "unknown field `please`");
        refused(json!({"app": "shop-api", "tag": "v1", "digest": "sha256:x"}), "not both");
        refused(json!({"app": "shop-api"}), "give the `tag`");
        refused(json!({"app": "shop-api", "digest": "v1.4.2"}), "image digest");
        refused(json!({"app": "Shop API", "tag": "v1"}), "app name");
        refused(json!({"tag": "v1"}), "missing field `app`");
        refused(json!({"app": "shop-api", "tag": "v1", "dry_run": "yes"}), "invalid type");
        refused(json!({"app": "shop-api", "tag": "v1", "reason": "x".repeat(257)}), "at most 256");
        refused(json!({"app": "shop-api", "tag": "v1", "requested_by": "a\nb"}), "control characters");
    }
}
