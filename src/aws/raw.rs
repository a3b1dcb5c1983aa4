//! What the SDK hides: the raw JSON of a response, and a last look at a request's serialized body
//! before it is sent. The SDK drops members its model does not know (a newer ECS feature), so
//! Conveyor reads the wire to make sure a rewrite never strips one silently.
//! Kept hand-written: the SDK offers no raw body of a modeled response, only these interceptor hooks.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::Value;

/// Keeps the JSON body of the last response of the operation it is attached to.
#[derive(Debug, Clone, Default)]
pub struct RawCapture {
    body: Arc<Mutex<Option<Value>>>,
}

impl RawCapture {
    /// The captured response body, if it was JSON.
    pub fn take(&self) -> Option<Value> {
        self.body.lock().ok()?.take()
    }
}

impl Intercept for RawCapture {
    fn name(&self) -> &'static str {
        "conveyor::RawCapture"
    }

    /// After deserialization: only then has the orchestrator read the body into memory.
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let parsed = context.response().body().bytes().and_then(|bytes| serde_json::from_slice(bytes).ok());
        if let Ok(mut body) = self.body.lock() {
            *body = parsed;
        }
        Ok(())
    }
}

/// Checks a request's serialized JSON body before anything is sent: when `check` finds a
/// problem, the call is stopped (no network traffic) and the problem kept for the caller.
#[derive(Clone)]
pub struct RequestCheck<F> {
    check: Arc<F>,
    refusal: Arc<Mutex<Option<String>>>,
}

impl<F> std::fmt::Debug for RequestCheck<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCheck").finish_non_exhaustive()
    }
}

impl<F> RequestCheck<F>
where
    F: Fn(&Value) -> Option<String> + Send + Sync + 'static,
{
    pub fn new(check: F) -> Self {
        RequestCheck { check: Arc::new(check), refusal: Arc::default() }
    }

    /// Why the request was stopped, if it was.
    pub fn refusal(&self) -> Option<String> {
        self.refusal.lock().ok()?.clone()
    }
}

impl<F> Intercept for RequestCheck<F>
where
    F: Fn(&Value) -> Option<String> + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "conveyor::RequestCheck"
    }

    fn read_after_serialization(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body: Option<Value> = context.request().body().bytes().and_then(|bytes| serde_json::from_slice(bytes).ok());
        let Some(problem) = body.as_ref().and_then(|body| (self.check)(body)) else {
            return Ok(());
        };
        if let Ok(mut refusal) = self.refusal.lock() {
            *refusal = Some(problem.clone());
        }
        Err(problem.into())
    }
}
