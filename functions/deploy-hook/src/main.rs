//! Lambda: the lifecycle hook ECS calls during blue/green, linear and canary deployments; it
//! answers SUCCEEDED, FAILED or IN_PROGRESS and never errors (an error would roll back unexplained).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let deployer = &conveyor::Conveyor::from_env().await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let invocation = conveyor::Invocation::from_context(&event.context);
        Ok::<_, Error>(deployer.hook(event.payload, &invocation).await)
    }))
    .await
}
