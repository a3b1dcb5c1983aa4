//! Lambda: invoked by a person or a pipeline: promote a stage-vetted image to prod, or pause and
//! resume prod (so that only Conveyor's functions write the state table).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let deployer = &conveyor::Conveyor::from_env().await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let invocation = conveyor::Invocation::from_context(&event.context);
        deployer.promote_function(event.payload, &invocation).await
    }))
    .await
}
