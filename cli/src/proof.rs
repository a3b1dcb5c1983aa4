//! The identity proof the CLI sends with a promotion, an approval or a rejection
//! ([`conveyor::identity`]): an `sts:GetCallerIdentity` request signed with the operator's own
//! credentials, bound to the request by its signed `x-conveyor-request` header. The promote
//! function sends it to STS, which answers with the operator's ARN: that, not a name the CLI
//! writes, is who asked. Nothing is sent to STS from here.

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use conveyor::identity::{binding, sts_endpoint, BINDING_HEADER, PROOF_KEY, STS_BODY};
use serde_json::{json, Map, Value};

use crate::context::Context;
use crate::error::CliError;

const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// `payload` with its identity proof added.
pub async fn proven(ctx: &Context, mut payload: Value) -> Result<Value, CliError> {
    let sdk = ctx.sdk()?;
    let region = sdk.region().map(ToString::to_string).unwrap_or_default();
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| CliError::config("no AWS credentials to sign the identity proof with"))?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| CliError::config(format!("no AWS credentials to sign the identity proof with: {e}")))?;
    let endpoint = sts_endpoint(&region, |name| std::env::var(name).ok());
    let bound = binding(&payload);
    let headers = [("content-type", CONTENT_TYPE), (BINDING_HEADER, bound.as_str())];
    let identity = credentials.into();
    let settings = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("sts")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| CliError::config(format!("cannot sign the identity proof: {e}")))?
        .into();
    let signable =
        SignableRequest::new("POST", &endpoint, headers.iter().copied(), SignableBody::Bytes(STS_BODY.as_bytes()))
            .map_err(|e| CliError::config(format!("cannot sign the identity proof: {e}")))?;
    let (instructions, _) = sign(signable, &settings)
        .map_err(|e| CliError::config(format!("cannot sign the identity proof: {e}")))?
        .into_parts();
    let mut signed: Map<String, Value> =
        headers.iter().map(|(name, value)| ((*name).to_owned(), json!(value))).collect();
    for (name, value) in instructions.headers() {
        signed.insert(name.to_ascii_lowercase(), json!(value));
    }
    payload[PROOF_KEY] = json!({ "headers": signed });
    Ok(payload)
}
