//! Lambda: an ECR push rolls out to the stage ECS service of every app fed by that repository;
//! an operator's request pauses or resumes stage.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let deployer = &conveyor::Conveyor::from_env().await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let invocation = conveyor::Invocation::from_context(&event.context);
        deployer.stage_function(event.payload, &invocation).await
    }))
    .await
}
