//! A local Lambda Invoke API: `POST /2015-03-31/functions/{name}/invocations` hands the payload to
//! a running [`Function`] (a real function binary behind its Runtime API host) and answers as
//! Lambda does, so a client that invokes functions through the AWS SDK (the `conveyor` CLI, with
//! `AWS_ENDPOINT_URL_LAMBDA`) runs against the real binaries.
//!
//! | request | answer |
//! |---|---|
//! | `RequestResponse` (default) | `200`, the function's response as the body |
//! | the function failed | `200`, `X-Amz-Function-Error: Unhandled`, body `{"errorType", "errorMessage"}` |
//! | `X-Amz-Invocation-Type: Event` | `202`, empty body; the function runs afterwards |
//! | `X-Amz-Invocation-Type: DryRun` | `204` |
//! | unknown function | `404` `ResourceNotFoundException` |
//! | a payload that is not JSON | `400` `InvalidRequestContentException` |

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::local_aws::{ACCOUNT, REGION};
use crate::runtime_api::Invocation;
use crate::Function;

/// One invocation the endpoint received.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoked {
    /// The function name (from a name, a partial or a full ARN).
    pub function: String,
    /// `RequestResponse`, `Event` or `DryRun`.
    pub invocation_type: String,
    pub payload: Value,
}

#[derive(Default)]
struct State {
    functions: Mutex<HashMap<String, Arc<Function>>>,
    invoked: Mutex<Vec<Invoked>>,
}

pub struct LambdaApi {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl LambdaApi {
    pub async fn start() -> LambdaApi {
        let state = Arc::new(State::default());
        let served = state.clone();
        let addr = crate::http::serve(move |request| route(served.clone(), request)).await;
        LambdaApi { addr, state }
    }

    /// The endpoint, for `AWS_ENDPOINT_URL_LAMBDA`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `function` under `name`.
    pub fn add(&self, name: &str, function: Arc<Function>) {
        self.state.functions.lock().unwrap().insert(name.to_owned(), function);
    }

    /// Every invocation received so far, oldest first.
    pub fn invoked(&self) -> Vec<Invoked> {
        self.state.invoked.lock().unwrap().clone()
    }
}

fn reply(status: StatusCode, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (name.parse::<hyper::header::HeaderName>(), value.parse()) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// An error in the shape of the Lambda API's REST-JSON errors.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({ "Type": "User", "message": message }).to_string();
    reply(status, &[("content-type", "application/json"), ("x-amzn-ErrorType", code)], body)
}

/// `shop`, `shop:live`, `123456789012:function:shop`, `arn:aws:lambda:...:function:shop[:live]` => `shop`.
fn function_name(target: &str) -> String {
    let decoded = percent_decode(target);
    let name = match decoded.split_once(":function:") {
        Some((_, rest)) => rest.to_owned(),
        None => decoded,
    };
    name.split(':').next().unwrap_or_default().to_owned()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    // GetFunctionConfiguration (`conveyor doctor`): the function's name, ARN and state.
    let configured = path.strip_prefix("/2015-03-31/functions/").and_then(|rest| rest.strip_suffix("/configuration"));
    if let (Some(target), &Method::GET) = (configured, request.method()) {
        let name = function_name(target);
        if !state.functions.lock().unwrap().contains_key(&name) {
            let message = format!("Function not found: arn:aws:lambda:us-east-1:123456789012:function:{name}");
            return Ok(error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &message));
        }
        let body = json!({ "FunctionName": name, "FunctionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
                           "State": "Active", "Runtime": "provided.al2023", "Architectures": ["arm64"] });
        return Ok(reply(StatusCode::OK, &[("content-type", "application/json")], body.to_string()));
    }
    let target = path.strip_prefix("/2015-03-31/functions/").and_then(|rest| rest.strip_suffix("/invocations"));
    let (Some(target), true) = (target, request.method() == Method::POST) else {
        return Ok(error(StatusCode::NOT_FOUND, "UnknownOperationException", &format!("not served here: {path}")));
    };
    let name = function_name(target);
    let invocation_type = request
        .headers()
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse")
        .to_owned();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let payload: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(payload) => payload,
            Err(e) => {
                let message = format!("Could not parse request body into json: {e}");
                return Ok(error(StatusCode::BAD_REQUEST, "InvalidRequestContentException", &message));
            }
        }
    };
    let Some(function) = state.functions.lock().unwrap().get(&name).cloned() else {
        let message = format!("Function not found: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}");
        return Ok(error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &message));
    };
    state.invoked.lock().unwrap().push(Invoked {
        function: name,
        invocation_type: invocation_type.clone(),
        payload: payload.clone(),
    });
    let version = ("x-amz-executed-version", "$LATEST");
    match invocation_type.as_str() {
        "DryRun" => Ok(reply(StatusCode::NO_CONTENT, &[], Bytes::new())),
        "Event" => {
            tokio::spawn(async move {
                let _ = function.invoke(payload).await;
            });
            Ok(reply(StatusCode::ACCEPTED, &[], Bytes::new()))
        }
        "RequestResponse" => Ok(match function.invoke(payload).await {
            Invocation::Response(value) => {
                reply(StatusCode::OK, &[("content-type", "application/json"), version], value.to_string())
            }
            Invocation::Error { error_type, error_message } => {
                let body = json!({ "errorType": error_type, "errorMessage": error_message }).to_string();
                let headers = [("content-type", "application/json"), ("x-amz-function-error", "Unhandled"), version];
                reply(StatusCode::OK, &headers, body)
            }
        }),
        other => Ok(error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!("invalid X-Amz-Invocation-Type {other}"),
        )),
    }
}
