//! Checks identity proofs ([`crate::identity`]) with STS: the signed `GetCallerIdentity` request
//! is sent, as signed, to the endpoint this function chooses; STS answers with the signer's ARN.
//! The call is made with the caller's signature, not the function's role (it needs no permission).

use std::sync::OnceLock;
use std::time::Duration;

use crate::identity::{arn_in_answer, Proof, ProofError, STS_BODY};

/// How long STS may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The STS endpoint proofs go to, and an HTTPS client built on first use (an invocation without a
/// proof never loads TLS roots for it).
#[derive(Debug, Clone)]
pub struct Callers {
    endpoint: String,
    client: std::sync::Arc<OnceLock<reqwest::Client>>,
}

impl Callers {
    /// Proofs go to `endpoint` ([`crate::identity::sts_endpoint`]).
    pub fn new(endpoint: String) -> Self {
        Callers { endpoint, client: std::sync::Arc::default() }
    }

    /// The ARN of whoever signed `proof`, as STS says; asked up to three times while STS throttles
    /// or fails (as the SDK retries its own calls).
    pub async fn verify(&self, proof: &Proof) -> Result<String, ProofError> {
        let mut pause = Duration::from_millis(100);
        for _ in 1..ATTEMPTS {
            match self.ask(proof).await {
                Err(error) if error.retryable() => {
                    tracing::warn!(error = %error, "STS did not answer the identity proof: asking again");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
                answer => return answer,
            }
        }
        self.ask(proof).await
    }

    async fn ask(&self, proof: &Proof) -> Result<String, ProofError> {
        let client = self.client.get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default()
        });
        let mut request = client.post(&self.endpoint).body(STS_BODY);
        for (name, value) in &proof.headers {
            request = request.header(name, value);
        }
        let answer = request.send().await.map_err(|e| ProofError::Unreachable(e.without_url().to_string()))?;
        let status = answer.status().as_u16();
        let body = answer.text().await.map_err(|e| ProofError::Unreachable(e.without_url().to_string()))?;
        match arn_in_answer(&body) {
            Some(arn) if status == 200 => Ok(arn),
            _ => Err(ProofError::Refused {
                status,
                code: element(&body, "Code").unwrap_or_default().to_owned(),
                message: element(&body, "Message").unwrap_or(&body).chars().take(300).collect(),
            }),
        }
    }
}

/// How many times a proof is sent while STS throttles or fails.
const ATTEMPTS: usize = 3;

/// The text of `<name>...</name>` in an STS answer.
fn element<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = body.split_once(&format!("<{name}>"))?;
    rest.split_once(&format!("</{name}>")).map(|(text, _)| text)
}
