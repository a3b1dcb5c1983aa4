//! Who is asking, as AWS verified it (contract, *Trust boundary* and *Approvals*): a request to the
//! promote function may carry an **identity proof** — an `sts:GetCallerIdentity` request signed
//! with the caller's own credentials, which the function sends to STS itself. STS checks the
//! signature and answers with the caller's ARN; that ARN, never a name written in the payload, is
//! who requested, approved or rejected. (HashiCorp Vault's and aws-iam-authenticator's IAM login
//! work the same way.)
//!
//! Why not the caller of a function URL: a function URL's event is JSON like any other payload,
//! and anyone allowed `lambda:InvokeFunction` on the function (every v2 promoter) could invoke it
//! directly with a URL event claiming to be someone else. A signature only STS can check cannot be
//! forged that way.
//!
//! The proof is bound to its request: the signed header [`BINDING_HEADER`] carries the SHA-256 of
//! the rest of the payload ([`binding`]), so a proof seen in transit approves nothing else. STS
//! refuses a signature more than 15 minutes old. The function chooses where the proof goes (its
//! own region's STS endpoint, [`sts_endpoint`]); the payload gives only headers.
//!
//! ```json
//! { "operation": "approve", "app": "shop-api", "environment": "prod",
//!   "identity": { "headers": { "authorization": "AWS4-HMAC-SHA256 Credential=...", "x-amz-date": "...",
//!                              "x-amz-security-token": "...", "x-conveyor-request": "9f2c...",
//!                              "content-type": "application/x-www-form-urlencoded; charset=utf-8" } } }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The payload key holding the proof.
pub const PROOF_KEY: &str = "identity";

/// The signed header that binds a proof to the request it came with.
pub const BINDING_HEADER: &str = "x-conveyor-request";

/// The body of the signed request (STS's query API).
pub const STS_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// Headers a proof may carry (everything else is dropped: the function builds the request).
const KEPT_HEADERS: &[&str] =
    &["authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "content-type", BINDING_HEADER];

/// An identity proof as the payload gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub headers: BTreeMap<String, String>,
}

/// Why a proof identifies nobody.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("`identity` must be {{\"headers\": {{...}}}}, a signed sts:GetCallerIdentity request: {0}")]
    Shape(String),
    #[error("the identity proof has no signed `{BINDING_HEADER}` header, or it is not this request's: sign it for this request (the conveyor CLI does)")]
    NotBound,
    #[error("STS refused the identity proof ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("STS could not be reached to check the identity proof: {0}")]
    Unreachable(String),
}

impl ProofError {
    /// Worth trying again later (STS unreachable or failing), rather than a proof to fix.
    pub fn retryable(&self) -> bool {
        match self {
            ProofError::Unreachable(_) => true,
            ProofError::Refused { status, code, .. } => *status >= 500 || *status == 429 || code.contains("Throttl"),
            ProofError::Shape(_) | ProofError::NotBound => false,
        }
    }
}

/// Takes the proof out of `payload` (which is left as the request it proves), checked to be this
/// request's. `None`: the payload carries none.
pub fn take_proof(payload: &mut Value) -> Result<Option<Proof>, ProofError> {
    let Some(raw) = payload.as_object_mut().and_then(|object| object.remove(PROOF_KEY)) else {
        return Ok(None);
    };
    let mut proof: Proof = serde_json::from_value(raw).map_err(|e| ProofError::Shape(e.to_string()))?;
    proof.headers = proof
        .headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .filter(|(name, _)| KEPT_HEADERS.contains(&name.as_str()))
        .collect();
    let signed = proof.headers.get("authorization").is_some_and(|auth| signed_headers(auth).contains(&BINDING_HEADER));
    if !signed || proof.headers.get(BINDING_HEADER) != Some(&binding(payload)) {
        return Err(ProofError::NotBound);
    }
    Ok(Some(proof))
}

/// The names in a SigV4 `Authorization` header's `SignedHeaders=`.
fn signed_headers(authorization: &str) -> Vec<&str> {
    authorization
        .split([',', ' '])
        .find_map(|part| part.trim().strip_prefix("SignedHeaders="))
        .map(|names| names.split(';').collect())
        .unwrap_or_default()
}

/// What a proof for `payload` (without its `identity`) signs into [`BINDING_HEADER`]: the hex
/// SHA-256 of the payload's canonical JSON (object keys sorted, no spaces), so the CLI and the
/// function agree whatever order the keys travel in.
pub fn binding(payload: &Value) -> String {
    let digest = Sha256::digest(canonical(payload).as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn canonical(value: &Value) -> String {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            let members: Vec<String> = keys
                .into_iter()
                .map(|key| format!("{}:{}", Value::String(key.clone()), canonical(&object[key])))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// The STS endpoint a proof is sent to, and that the CLI signs for: `AWS_ENDPOINT_URL_STS`, else
/// `AWS_ENDPOINT_URL` (the SDK's own variables: the local AWS), else the region's endpoint.
pub fn sts_endpoint(region: &str, variable: impl Fn(&str) -> Option<String>) -> String {
    let configured =
        variable("AWS_ENDPOINT_URL_STS").or_else(|| variable("AWS_ENDPOINT_URL")).filter(|u| !u.is_empty());
    let endpoint = configured.unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
    format!("{}/", endpoint.trim_end_matches('/'))
}

/// `payload` with the identity proof of whoever holds `credentials` added: a SigV4 signature of
/// `GetCallerIdentity` for `region`, sent to [`sts_endpoint`], binding the payload ([`binding`]).
/// Nothing is sent here (the `conveyor` CLI uses it; so do the tests).
pub fn prove(
    mut payload: Value,
    credentials: aws_credential_types::Credentials,
    region: &str,
    endpoint: &str,
) -> Result<Value, String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let bound = binding(&payload);
    let headers = [("content-type", CONTENT_TYPE), (BINDING_HEADER, bound.as_str())];
    let identity = credentials.into();
    let settings = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable =
        SignableRequest::new("POST", endpoint, headers.iter().copied(), SignableBody::Bytes(STS_BODY.as_bytes()))
            .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &settings).map_err(|e| e.to_string())?.into_parts();
    let mut signed: serde_json::Map<String, Value> =
        headers.iter().map(|(name, value)| ((*name).to_owned(), Value::from(*value))).collect();
    for (name, value) in instructions.headers() {
        signed.insert(name.to_ascii_lowercase(), Value::from(value));
    }
    payload[PROOF_KEY] = serde_json::json!({ "headers": signed });
    Ok(payload)
}

/// The content type of the signed request (STS's query API).
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// The caller's ARN from STS's `GetCallerIdentity` answer (XML: `<Arn>...</Arn>`).
pub fn arn_in_answer(body: &str) -> Option<String> {
    let start = body.find("<Arn>")? + "<Arn>".len();
    let end = start + body[start..].find("</Arn>")?;
    let arn = body[start..end].trim();
    arn.starts_with("arn:").then(|| arn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proof_for(payload: &Value, signed: &str) -> Value {
        json!({ "headers": {
            "Authorization": format!("AWS4-HMAC-SHA256 Credential=AKID/20261203/eu-west-1/sts/aws4_request, SignedHeaders={signed}, Signature=ab"),
            "X-Amz-Date": "20261203T120000Z",
            "x-conveyor-request": binding(payload),
            "host": "evil.example.com",
        }})
    }

    #[test]
    fn a_proof_is_taken_out_of_the_payload_and_bound_to_the_rest() {
        let request = json!({"operation": "approve", "app": "shop-api", "environment": "prod"});
        let mut payload = request.clone();
        payload["identity"] = proof_for(&request, "content-type;host;x-amz-date;x-conveyor-request");
        let proof = take_proof(&mut payload).unwrap().unwrap();
        assert_eq!(payload, request);
        assert_eq!(proof.headers.keys().collect::<Vec<_>>(), ["authorization", "x-amz-date", "x-conveyor-request"]);
    }

    #[test]
    fn a_proof_of_another_request_or_unsigned_binding_is_refused() {
        let approve = json!({"operation": "approve", "app": "shop-api", "environment": "prod"});
        let reject = json!({"operation": "reject", "app": "shop-api", "environment": "prod", "reason": "x"});
        let mut replayed = reject.clone();
        replayed["identity"] = proof_for(&approve, "host;x-amz-date;x-conveyor-request");
        assert_eq!(take_proof(&mut replayed), Err(ProofError::NotBound));
        let mut unsigned = approve.clone();
        unsigned["identity"] = proof_for(&approve, "host;x-amz-date");
        assert_eq!(take_proof(&mut unsigned), Err(ProofError::NotBound));
        let mut shapeless = approve.clone();
        shapeless["identity"] = json!("arn:aws:iam::1:user/ana");
        assert!(matches!(take_proof(&mut shapeless), Err(ProofError::Shape(_))));
        let mut none = approve.clone();
        assert_eq!(take_proof(&mut none), Ok(None));
    }

    #[test]
    fn the_binding_ignores_key_order() {
        let a = json!({"app": "x", "to": "prod", "nested": {"b": 1, "a": [1, {"y": 2, "x": 1}]}});
        let b: Value =
            serde_json::from_str(r#"{"nested": {"a": [1, {"x": 1, "y": 2}], "b": 1}, "to": "prod", "app": "x"}"#)
                .unwrap();
        assert_eq!(binding(&a), binding(&b));
        assert_ne!(binding(&a), binding(&json!({"app": "x", "to": "stage"})));
    }

    #[test]
    fn the_endpoint_is_the_regions_unless_the_sdk_variables_say_otherwise() {
        assert_eq!(sts_endpoint("eu-west-1", |_| None), "https://sts.eu-west-1.amazonaws.com/");
        let local = |name: &str| (name == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:5000".to_owned());
        assert_eq!(sts_endpoint("eu-west-1", local), "http://127.0.0.1:5000/");
    }

    #[test]
    fn a_proof_signs_its_binding_and_is_taken_back_as_made() {
        let request = json!({"operation": "reject", "app": "shop-api", "reason": "freeze"});
        let credentials = aws_credential_types::Credentials::new("AKID", "secret", Some("token".into()), None, "test");
        let mut payload =
            prove(request.clone(), credentials, "eu-west-1", "https://sts.eu-west-1.amazonaws.com/").unwrap();
        let headers = payload["identity"]["headers"].clone();
        let authorization = headers["authorization"].as_str().unwrap();
        assert!(authorization.contains("/eu-west-1/sts/aws4_request"), "{authorization}");
        assert!(signed_headers(authorization).contains(&BINDING_HEADER), "{authorization}");
        assert_eq!(headers["x-amz-security-token"], "token");
        let proof = take_proof(&mut payload).unwrap().unwrap();
        assert_eq!(payload, request);
        assert_eq!(proof.headers[BINDING_HEADER], binding(&request));
    }

    #[test]
    fn the_arn_is_read_from_stss_answer() {
        let body = "<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:sts::1:assumed-role/Release/bob</Arn>\
                    <UserId>AROA:bob</UserId><Account>1</Account></GetCallerIdentityResult></GetCallerIdentityResponse>";
        assert_eq!(arn_in_answer(body).as_deref(), Some("arn:aws:sts::1:assumed-role/Release/bob"));
        assert_eq!(arn_in_answer("<Arn>not-an-arn</Arn>"), None);
        assert_eq!(arn_in_answer("<Error/>"), None);
    }
}
