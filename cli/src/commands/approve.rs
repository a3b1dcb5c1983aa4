//! `conveyor approve` and `conveyor reject`: decide the promotion an environment with
//! `approval: true` waits for, through the promote function, as the identity AWS verifies for
//! the operator (the request carries an identity proof: [`crate::proof`]). Approving starts the
//! rollout (and `--wait` follows it); rejecting ends the request.

use conveyor::decide::Rejection;
use conveyor::types::Environment;
use serde_json::{json, Value};

use super::app_name;
use super::promote::{invoke, invoke_promote, report};
use crate::args::WaitArgs;
use crate::context::Context;
use crate::error::{CliError, AWS_OR_CONFIG, DONE};
use crate::output::{self, Report};

/// The request both commands send.
fn decision(operation: &str, app: &str, to: Option<Environment>, id: Option<&str>) -> Result<Value, CliError> {
    let mut payload = json!({ "operation": operation, "app": app_name(app)? });
    if let Some(to) = to {
        payload["environment"] = json!(to);
    }
    if let Some(id) = id {
        payload["approval_id"] = json!(id);
    }
    Ok(payload)
}

pub async fn approve(
    ctx: &Context,
    app: &str,
    to: Option<Environment>,
    id: Option<&str>,
    wait: &WaitArgs,
) -> Result<Report, CliError> {
    let payload = decision("approve", app, to, id)?;
    let response = invoke_promote(ctx, &payload).await?;
    report(ctx, app, &payload, response, false, wait, None).await
}

pub async fn reject(
    ctx: &Context,
    app: &str,
    to: Option<Environment>,
    id: Option<&str>,
    reason: &str,
) -> Result<Report, CliError> {
    let mut payload = decision("reject", app, to, id)?;
    payload["reason"] = json!(reason);
    let function = ctx.names().await?.promote_function()?;
    let proven = crate::proof::proven(ctx, payload).await?;
    let answer = invoke(&ctx.lambda()?, function, &proven).await?;
    let rejection: Rejection = serde_json::from_value(answer.clone())
        .map_err(|e| CliError::new(AWS_OR_CONFIG, "AwsError", format!("{function} answered {answer}: {e}")))?;
    let text = format!(
        "{} {} {} ({}): rejected approval {}\nrequested by {}, rejected by {}: {}",
        rejection.app,
        rejection.environment,
        rejection.tag,
        output::short_digest(&rejection.digest),
        rejection.approval_id,
        output::who(&rejection.requested_by),
        output::who(&rejection.rejected_by),
        rejection.reason
    );
    Ok(Report { json: answer, text, exit_code: DONE })
}
