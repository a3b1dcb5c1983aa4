//! What people ask Conveyor's functions for besides their events and promotions: pausing and
//! resuming an app (contract, *Pausing an app*), so that only Conveyor's functions write the
//! state table (*Trust boundary*). Each function changes its own environments only — stage-deploy
//! the entry environments (stage), promote the ones images are promoted into (prod) — so neither
//! role needs the other's rights. The request is
//! parsed here, at the boundary, into a [`Request`]; the pause itself is [`crate::pause`]'s, and
//! `resume` with `deploy_latest` (stage-deploy) replays the push the pause held, as recorded,
//! through stage-deploy's own flow ([`crate::stage::replay`]).
//!
//! ```json
//! { "operation": "pause", "app": "shop-api", "environment": "stage", "reason": "INC-42", "by": "..." }
//! { "operation": "resume", "app": "shop-api", "environment": null, "deploy_latest": false, "by": "..." }
//! ```
//!
//! `environment`, absent or `null` for the function's own when the app has one of its kind
//! (stage-deploy: `stage`, promote: `prod`, in a v2 pipeline), must be one of the function's own; `by` is a name the caller gives, kept as `on_behalf_of`
//! (unverified): who paused is the identity AWS verified, if any.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, instrument, warn};

use crate::approval::Verdict;
use crate::config::{AppConfig, Configs, Source};
use crate::decide::{Decided, Decision};
use crate::error::{user_text, Error, InvalidRequest};
use crate::fleet::Fleet;
use crate::leased::Leases;
use crate::pause::PauseReport;
use crate::promote;
use crate::record::RecordedPush;
use crate::stage::StageReport;
use crate::types::{AppName, Environment, Requester};
use crate::Invocation;

/// What the promote function was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A promotion (the contract's v2 request, unchanged).
    Promote(promote::Request),
    Operate(Operation),
    /// An approval decided ([`crate::approval`]).
    Decide(Decision),
}

/// A pause or a resume of one app, in one environment or both (`environment` `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub app: AppName,
    pub environment: Option<Environment>,
    pub kind: Kind,
    /// The request's `by` (unverified).
    pub on_behalf_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Pause {
        reason: String,
    },
    /// `deploy_latest`: roll out the push held in stage while it was paused.
    Resume {
        deploy_latest: bool,
    },
}

/// Which operation ran (`"pause"`, `"resume"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationName {
    Pause,
    Resume,
}

/// The answer to an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub app: String,
    pub operation: OperationName,
    /// The identity AWS verified for the caller, when Lambda gives one (what the history records).
    pub by: Option<String>,
    /// The request's `by` (unverified).
    pub on_behalf_of: Option<String>,
    pub reason: Option<String>,
    pub environments: Vec<EnvOutcome>,
    /// `deploy_latest`: the held push rolled out again, and stage-deploy's report.
    pub deployed: Option<Deployed>,
    /// Whether the notifications went to the alert topic (else they were only logged).
    pub notified: bool,
}

/// Where one environment stands after the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvOutcome {
    pub environment: Environment,
    /// `false`: it already was so (nothing announced).
    pub changed: bool,
    pub paused: bool,
    /// On resume: the newest push held while paused and not rolled out since.
    pub held_push: Option<RecordedPush>,
}

impl From<PauseReport> for EnvOutcome {
    fn from(report: PauseReport) -> Self {
        EnvOutcome {
            environment: report.environment,
            changed: report.changed,
            paused: report.paused,
            held_push: report.held_push,
        }
    }
}

/// A held push rolled out by `resume` with `deploy_latest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub push: RecordedPush,
    pub report: StageReport,
}

/// An operation request, as sent.
#[derive(Debug, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case", deny_unknown_fields)]
enum RawOperation {
    Pause {
        app: String,
        #[serde(default)]
        environment: Option<Environment>,
        reason: Option<String>,
        by: Option<String>,
    },
    Resume {
        app: String,
        #[serde(default)]
        environment: Option<Environment>,
        #[serde(default)]
        deploy_latest: bool,
        by: Option<String>,
    },
    Approve {
        app: String,
        #[serde(default)]
        environment: Option<Environment>,
        approval_id: Option<String>,
    },
    Reject {
        app: String,
        #[serde(default)]
        environment: Option<Environment>,
        approval_id: Option<String>,
        reason: Option<String>,
    },
}

/// Parses the promote function's payload: an operation when it names one (`operation`), else a
/// promotion ([`promote::parse_request`]).
pub fn parse(payload: Value) -> Result<Request, Error> {
    if payload.get("operation").is_none() {
        return promote::parse_request(payload).map(Request::Promote);
    }
    let raw: RawOperation = serde_json::from_value(payload).map_err(|e| InvalidRequest::Shape(e.to_string()))?;
    let (app, environment, kind, by) = match raw {
        RawOperation::Approve { app, environment, approval_id } => {
            return decision(app, environment, approval_id, Verdict::Approve);
        }
        RawOperation::Reject { app, environment, approval_id, reason } => {
            let reason = user_text("reason", reason)?.ok_or(InvalidRequest::NoRejectReason)?;
            return decision(app, environment, approval_id, Verdict::Reject { reason });
        }
        RawOperation::Pause { app, environment, reason, by } => {
            let reason = user_text("reason", reason)?.ok_or(InvalidRequest::NoReason)?;
            (app, environment, Kind::Pause { reason }, by)
        }
        // `deploy_latest` outside an entry environment is refused once the app's pipeline says
        // which environments those are (`operated`), not by the name `prod`.
        RawOperation::Resume { app, environment, deploy_latest, by } => {
            (app, environment, Kind::Resume { deploy_latest }, by)
        }
    };
    Ok(Request::Operate(Operation {
        app: AppName::parse(app).map_err(InvalidRequest::from)?,
        environment,
        kind,
        on_behalf_of: user_text("by", by)?,
    }))
}

fn decision(
    app: String,
    environment: Option<Environment>,
    approval_id: Option<String>,
    verdict: Verdict,
) -> Result<Request, Error> {
    let approval_id = user_text("approval_id", approval_id)?;
    Ok(Request::Decide(Decision {
        app: AppName::parse(app).map_err(InvalidRequest::from)?,
        environment,
        approval_id,
        verdict,
    }))
}

/// A function's answer: an event's, a promotion's or an operation's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Staged(StageReport),
    Promoted(promote::Response),
    Operated(Response),
    Rejected(crate::decide::Rejection),
}

/// Handles one invocation of the promote function: a promotion, an approval decided, or an
/// operation on prod. A request carrying an identity proof runs as the identity STS confirms
/// ([`crate::identity`]).
pub async fn promote_function(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    callers: &crate::aws::Callers,
    mut payload: Value,
    invocation: &Invocation,
) -> Result<Answer, Error> {
    let invocation = &Box::pin(identified(callers, &mut payload, invocation)).await?;
    match parse(payload).inspect_err(|e| warn!(error = %e, "request refused"))? {
        Request::Promote(request) => {
            promote::run(configs, fleet, leases, &request, invocation).await.map(Answer::Promoted)
        }
        Request::Operate(operation) => {
            operated(configs, fleet, leases, &operation, Serves::PromotedInto, invocation).await
        }
        Request::Decide(decision) => {
            let decided =
                Box::pin(crate::decide::decide(configs, fleet, leases, &decision, invocation)).await.inspect_err(
                    |e| warn!(app = %decision.app, error_type = %e.error_type(), error = %e, "decision refused"),
                )?;
            Ok(match decided {
                Decided::Approved(response) => Answer::Promoted(*response),
                Decided::Rejected(rejection) => Answer::Rejected(rejection),
            })
        }
    }
}

/// The invocation, as the identity the payload's proof establishes (the proof taken out of it).
async fn identified(
    callers: &crate::aws::Callers,
    payload: &mut Value,
    invocation: &Invocation,
) -> Result<Invocation, Error> {
    let proof = crate::identity::take_proof(payload).inspect_err(|e| warn!(error = %e, "identity proof refused"))?;
    let Some(proof) = proof else { return Ok(invocation.clone()) };
    let arn = callers.verify(&proof).await.inspect_err(|e| warn!(error = %e, "identity proof refused"))?;
    info!(caller = %arn, "caller identified by STS");
    Ok(Invocation { identity: Some(arn), ..invocation.clone() })
}

/// Which environments a function changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serves {
    /// stage-deploy: where pushes roll out.
    Entries,
    /// promote: where images are promoted into.
    PromotedInto,
}

impl Serves {
    fn function(self) -> &'static str {
        match self {
            Serves::Entries => "stage-deploy",
            Serves::PromotedInto => "promote",
        }
    }

    fn of(app: &AppConfig, env: Environment) -> Option<Serves> {
        match app.pipeline.source(env)? {
            Source::Entry => Some(Serves::Entries),
            Source::From { .. } => Some(Serves::PromotedInto),
        }
    }
}

/// Handles one invocation of stage-deploy: an EventBridge event (every payload without
/// `operation`, [`crate::stage::handle`]), or an operation on stage.
pub async fn stage_function(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    callers: &crate::aws::Callers,
    mut payload: Value,
    invocation: &Invocation,
) -> Result<Answer, Error> {
    if payload.get("operation").is_none() {
        return crate::stage::handle(configs, fleet, leases, payload, invocation).await.map(Answer::Staged);
    }
    let invocation = &Box::pin(identified(callers, &mut payload, invocation)).await?;
    match parse(payload).inspect_err(|e| warn!(error = %e, "request refused"))? {
        Request::Operate(operation) => operated(configs, fleet, leases, &operation, Serves::Entries, invocation).await,
        // `parse` reads a payload naming an operation as one, or refuses it.
        Request::Promote(_) | Request::Decide(_) => {
            Err(InvalidRequest::Shape("stage-deploy does not promote: the promote function does".into()).into())
        }
    }
}

/// Runs `operation` in one of the environments the calling function `serves`.
async fn operated(
    configs: &Configs,
    fleet: &Fleet,
    leases: Leases<'_>,
    operation: &Operation,
    serves: Serves,
    invocation: &Invocation,
) -> Result<Answer, Error> {
    let result = async {
        let config = configs.get().await?;
        let Some(app) = config.app(&operation.app) else {
            return Err(Error::no_app(configs, &config, &operation.app));
        };
        let env = match operation.environment {
            Some(env) => match Serves::of(app, env) {
                None => return Err(app.no_such(env).into()),
                Some(other) if other != serves => {
                    return Err(InvalidRequest::OtherFunction { environment: env, function: other.function() }.into())
                }
                Some(_) => env,
            },
            None => {
                let own: Vec<Environment> = app
                    .pipeline
                    .environments
                    .iter()
                    .map(|e| e.name)
                    .filter(|e| Serves::of(app, *e) == Some(serves))
                    .collect();
                match own[..] {
                    [one] => one,
                    _ => {
                        let own = own.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                        return Err(InvalidRequest::WhichOperatedEnvironment { app: app.name.clone(), own }.into());
                    }
                }
            }
        };
        if serves == Serves::PromotedInto && matches!(operation.kind, Kind::Resume { deploy_latest: true }) {
            return Err(InvalidRequest::DeployLatestInProd.into());
        }
        Box::pin(operate(fleet, leases, app, operation, env, invocation)).await
    };
    result
        .await
        .inspect_err(|e| warn!(app = %operation.app, error_type = %e.error_type(), error = %e, "operation refused"))
        .map(Answer::Operated)
}

/// Pauses or resumes `env`; `deploy_latest` then replays the push stage held, if one is still
/// waiting.
#[instrument(skip_all, fields(app = %operation.app, environment = %env))]
async fn operate(
    fleet: &Fleet,
    leases: Leases<'_>,
    app: &AppConfig,
    operation: &Operation,
    env: Environment,
    invocation: &Invocation,
) -> Result<Response, Error> {
    let by = Requester::of(invocation, operation.on_behalf_of.clone());
    let report = match &operation.kind {
        Kind::Pause { reason } => crate::pause::pause(fleet, leases, app, env, reason, &by, invocation).await?,
        Kind::Resume { .. } => crate::pause::resume(fleet, leases, app, env, &by, invocation).await?,
    };
    info!(changed = report.changed, paused = report.paused, requester = %by, "pause changed");
    let outcome = EnvOutcome::from(report);
    let mut deployed = None;
    if let (Kind::Resume { deploy_latest: true }, Some(push)) = (&operation.kind, outcome.held_push.clone()) {
        info!(tag = %push.tag, digest = %push.digest, "held push rolled out again");
        let report = crate::stage::replay(fleet, leases, app, &push, invocation).await;
        deployed = Some(Deployed { push, report });
    }
    let (name, reason) = match &operation.kind {
        Kind::Pause { reason } => (OperationName::Pause, Some(reason.clone())),
        Kind::Resume { .. } => (OperationName::Resume, None),
    };
    Ok(Response {
        app: app.name.to_string(),
        operation: name,
        by: by.verified,
        on_behalf_of: by.on_behalf_of,
        reason,
        environments: vec![outcome],
        deployed,
        notified: leases.notifier.has_topic(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn refused(payload: Value, needle: &str) {
        match parse(payload) {
            Err(Error::InvalidRequest(invalid)) => assert!(invalid.to_string().contains(needle), "{invalid}"),
            other => panic!("expected InvalidRequest containing {needle:?}, got {other:?}"),
        }
    }

    #[track_caller]
    fn operation(payload: Value) -> Operation {
        match parse(payload) {
            Ok(Request::Operate(operation)) => operation,
            other => panic!("expected an operation, got {other:?}"),
        }
    }

    #[test]
    fn a_payload_without_operation_is_a_promotion_as_in_v2() {
        let Ok(Request::Promote(request)) = parse(json!({"app": "shop-api", "tag": "v1.4.2", "requested_by": "ana"}))
        else {
            panic!("a promotion")
        };
        assert_eq!(request.on_behalf_of.as_deref(), Some("ana"));
        refused(json!({"app": "shop-api", "tag": "v1", "by": "ana"}), "unknown field `by`");
        refused(json!(["pause"]), "JSON object");
    }

    #[test]
    fn pauses_parse_with_one_environment_or_both() {
        let pause = operation(json!({"operation": "pause", "app": "shop-api", "environment": "stage",
            "reason": " INC-42 outage ", "by": "arn:aws:sts::1:user/ana"}));
        assert_eq!(
            pause,
            Operation {
                app: AppName::parse("shop-api").unwrap(),
                environment: Some(Environment::STAGE),
                kind: Kind::Pause { reason: "INC-42 outage".into() },
                on_behalf_of: Some("arn:aws:sts::1:user/ana".into()),
            }
        );
        for both in [
            json!({"operation": "pause", "app": "shop-api", "environment": null, "reason": "x"}),
            json!({"operation": "pause", "app": "shop-api", "reason": "x"}),
        ] {
            let pause = operation(both);
            assert_eq!((pause.environment, pause.on_behalf_of), (None, None));
        }
    }

    #[test]
    fn resumes_parse_and_deploy_latest_defaults_to_false() {
        let resume = operation(json!({"operation": "resume", "app": "shop-api", "environment": "prod"}));
        assert_eq!((resume.environment, resume.kind), (Some(Environment::PROD), Kind::Resume { deploy_latest: false }));
        let resume = operation(json!({"operation": "resume", "app": "shop-api", "deploy_latest": true}));
        assert_eq!((resume.environment, resume.kind), (None, Kind::Resume { deploy_latest: true }));
    }

    #[test]
    fn bad_operations_say_what_is_wrong() {
        refused(json!({"operation": "deploy", "app": "shop-api"}), "unknown variant `deploy`");
        refused(json!({"operation": "pause", "app": "shop-api", "reason": "x", "tag": "v1"}), "unknown field `tag`");
        refused(
            json!({"operation": "pause", "app": "shop-api", "reason": "x", "deploy_latest": true}),
            "unknown field",
        );
        refused(json!({"operation": "resume", "app": "shop-api", "reason": "x"}), "unknown field `reason`");
        refused(json!({"operation": "pause", "app": "shop-api"}), "needs a `reason`");
        refused(json!({"operation": "pause", "app": "shop-api", "reason": "  "}), "needs a `reason`");
        refused(json!({"operation": "pause", "app": "shop-api", "reason": "x".repeat(257)}), "at most 256");
        refused(json!({"operation": "pause", "app": "shop-api", "reason": "x", "by": "a\nb"}), "`by`");
        refused(json!({"operation": "pause", "app": "shop-api", "reason": "x", "environment": "Staging"}), "Staging");
        refused(json!({"operation": "resume", "app": "Shop API"}), "app name");
        refused(json!({"operation": "resume"}), "missing field `app`");
        // Whether prod takes `deploy_latest` is the pipeline's to say (an entry environment may
        // be named prod): parsed here, refused by the function that does not serve it.
        let resume =
            operation(json!({"operation": "resume", "app": "shop-api", "environment": "prod", "deploy_latest": true}));
        assert_eq!(resume.kind, Kind::Resume { deploy_latest: true });
        refused(json!({"operation": 1, "app": "shop-api"}), "invalid type");
    }
}
