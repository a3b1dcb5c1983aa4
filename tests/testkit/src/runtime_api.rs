//! A Lambda Runtime API host: serves `/2018-06-01/runtime/invocation/next` to a real function
//! binary and collects what it answers, as Lambda does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Mutex};

/// How an invocation ended: the function's response, or its error (`errorType`, `errorMessage`).
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    Response(Value),
    Error { error_type: String, error_message: String },
}

impl Invocation {
    #[track_caller]
    pub fn response(self) -> Value {
        match self {
            Invocation::Response(value) => value,
            Invocation::Error { error_type, error_message } => panic!("function failed: {error_type}: {error_message}"),
        }
    }

    #[track_caller]
    pub fn error(self) -> (String, String) {
        match self {
            Invocation::Error { error_type, error_message } => (error_type, error_message),
            Invocation::Response(value) => panic!("function succeeded, an error was expected: {value}"),
        }
    }
}

struct Pending {
    id: String,
    payload: Value,
}

struct State {
    /// When the function first asked for work: the end of its init phase.
    first_poll: std::sync::Mutex<Option<std::time::Instant>>,
    next: Mutex<mpsc::UnboundedReceiver<Pending>>,
    answers: Mutex<HashMap<String, oneshot::Sender<Invocation>>>,
    init_error: Mutex<Option<String>>,
    /// Milliseconds from the start of an invocation to its deadline (see [`RuntimeApi::set_deadline`]).
    budget_ms: AtomicU64,
    /// The caller identity Lambda verified, if any (see [`RuntimeApi::set_identity`]).
    identity: std::sync::Mutex<Option<String>>,
}

/// The time Lambda gives an invocation by default here: the functions' 60 s timeout.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// One Runtime API endpoint, serving one function (one process at a time, like a Lambda sandbox).
pub struct RuntimeApi {
    pub addr: SocketAddr,
    queue: mpsc::UnboundedSender<Pending>,
    state: Arc<State>,
    ids: AtomicU64,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let (queue, next) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            first_poll: std::sync::Mutex::default(),
            next: Mutex::new(next),
            answers: Mutex::default(),
            init_error: Mutex::default(),
            budget_ms: AtomicU64::new(DEFAULT_DEADLINE.as_millis() as u64),
            identity: std::sync::Mutex::default(),
        });
        let served = state.clone();
        let addr = crate::http::serve(move |request| route(served.clone(), request)).await;
        RuntimeApi { addr, queue, state, ids: AtomicU64::new(1) }
    }

    /// Invokes the function with `payload` and waits (at most `timeout`) for its answer.
    pub async fn invoke(&self, payload: Value, timeout: Duration) -> Result<Invocation, String> {
        let id = format!("req-{:08}", self.ids.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.state.answers.lock().await.insert(id.clone(), tx);
        self.queue.send(Pending { id: id.clone(), payload }).map_err(|_| "runtime API stopped".to_owned())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => {
                let init = self.state.init_error.lock().await.clone();
                Err(format!("no answer to {id} within {timeout:?}; init error: {init:?}"))
            }
        }
    }

    /// Gives each invocation handed out from now on `budget` before its deadline (the
    /// `Lambda-Runtime-Deadline-Ms` header), instead of [`DEFAULT_DEADLINE`] — as a function
    /// configured with a shorter timeout gets. Conveyor's leases expire at the holder's deadline
    /// plus `conveyor::LEASE_MARGIN` (10 s): with the default, a lease left by an invocation that
    /// failed to release it or was killed is reclaimable only 70 s after it started; with a budget
    /// of a few seconds, within seconds, so fault and crash tests can wait for it. Only the header
    /// changes: nothing stops an invocation at its deadline (Lambda would).
    pub fn set_deadline(&self, budget: Duration) {
        self.state.budget_ms.store(budget.as_millis() as u64, Ordering::Relaxed);
    }

    /// Hands each invocation from now on the caller identity `id` (`None`: none), in the
    /// `Lambda-Runtime-Cognito-Identity` header, as Lambda does for a caller it verified through
    /// Cognito; the function sees it as the context's `identity`.
    pub fn set_identity(&self, id: Option<&str>) {
        *self.state.identity.lock().unwrap() = id.map(str::to_owned);
    }

    /// When the function first polled for an invocation, if it has.
    pub fn first_poll(&self) -> Option<std::time::Instant> {
        *self.state.first_poll.lock().unwrap()
    }

    pub async fn init_error(&self) -> Option<String> {
        self.state.init_error.lock().await.clone()
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

async fn route(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let accepted = || reply(StatusCode::ACCEPTED, Bytes::from_static(b"{\"status\":\"OK\"}"));

    if method == Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        state.first_poll.lock().unwrap().get_or_insert_with(std::time::Instant::now);
        let Some(pending) = state.next.lock().await.recv().await else {
            return Ok(reply(StatusCode::GONE, Bytes::new()));
        };
        let budget = state.budget_ms.load(Ordering::Relaxed) as i64;
        let deadline = chrono::Utc::now().timestamp_millis() + budget;
        let mut response = reply(StatusCode::OK, Bytes::from(pending.payload.to_string()));
        let headers = response.headers_mut();
        headers.insert("lambda-runtime-aws-request-id", pending.id.parse().unwrap());
        headers.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().unwrap());
        headers.insert(
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:conveyor-local".parse().unwrap(),
        );
        headers.insert("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000".parse().unwrap());
        let identity = state.identity.lock().unwrap().clone();
        if let Some(id) = identity {
            let header = json!({ "cognitoIdentityId": id, "cognitoIdentityPoolId": "us-east-1:conveyor-local" });
            headers.insert("lambda-runtime-cognito-identity", header.to_string().parse().unwrap());
        }
        return Ok(response);
    }
    if method == Method::POST && path == "/2018-06-01/runtime/init/error" {
        *state.init_error.lock().await = Some(String::from_utf8_lossy(&body).into_owned());
        return Ok(accepted());
    }
    let invocation = path.strip_prefix("/2018-06-01/runtime/invocation/").and_then(|rest| rest.split_once('/'));
    if let (true, Some((id, kind))) = (method == Method::POST, invocation) {
        let answer = match kind {
            "response" => Invocation::Response(serde_json::from_slice(&body).unwrap_or(Value::Null)),
            "error" => {
                let error: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
                Invocation::Error {
                    error_type: error["errorType"].as_str().unwrap_or_default().to_owned(),
                    error_message: error["errorMessage"].as_str().unwrap_or_default().to_owned(),
                }
            }
            _ => return Ok(reply(StatusCode::NOT_FOUND, Bytes::new())),
        };
        if let Some(waiter) = state.answers.lock().await.remove(id) {
            let _ = waiter.send(answer);
        }
        return Ok(accepted());
    }
    Ok(reply(StatusCode::NOT_FOUND, Bytes::from(format!("unknown runtime API path {method} {path}"))))
}
