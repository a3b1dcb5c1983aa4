//! The identity proof the CLI sends with a promotion, an approval or a rejection
//! ([`conveyor::identity`]): an `sts:GetCallerIdentity` request signed with the operator's own
//! credentials, bound to the request by its signed `x-conveyor-request` header. The promote
//! function sends it to STS, which answers with the operator's ARN: that, not a name the CLI
//! writes, is who asked. Nothing is sent to STS from here.

use aws_credential_types::provider::ProvideCredentials;
use conveyor::identity::{prove, sts_endpoint};
use serde_json::Value;

use crate::context::Context;
use crate::error::CliError;

/// `payload` with its identity proof added.
pub async fn proven(ctx: &Context, payload: Value) -> Result<Value, CliError> {
    let sdk = ctx.sdk()?;
    let region = sdk.region().map(ToString::to_string).unwrap_or_default();
    let unsigned = |why: String| CliError::config(format!("cannot sign the identity proof: {why}"));
    let provider = sdk.credentials_provider().ok_or_else(|| unsigned("no AWS credentials".into()))?;
    let credentials = provider.provide_credentials().await.map_err(|e| unsigned(e.to_string()))?;
    let endpoint = sts_endpoint(&region, |name| std::env::var(name).ok());
    prove(payload, credentials, &region, &endpoint).map_err(unsigned)
}
