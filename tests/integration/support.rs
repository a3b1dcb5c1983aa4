//! Shared helpers of the integration tests.

use conveyor::{Conveyor, Invocation};
use conveyor_testkit::World;

/// The library, wired to this world exactly as the binaries wire it to AWS.
pub fn conveyor(world: &World) -> Conveyor {
    Conveyor::new(&world.config, world.settings())
}

/// Runs `work` on a two-worker runtime whose threads have the stack a Lambda function's main thread
/// has (8 MiB), not a test thread's 2 MiB: the tests that drive several flows through the library
/// at once, unoptimised, need what the functions get.
pub fn on_lambda_sized_stacks<F>(work: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async { tokio::spawn(work).await.expect("the test's work panicked") })
}

/// An invocation with a minute to go, in the local AWS's account, as Lambda would give it.
pub fn invocation() -> Invocation {
    let mut invocation = Invocation::lasting(std::time::Duration::from_secs(60));
    invocation.account = Some(conveyor_testkit::local_aws::ACCOUNT.to_owned());
    invocation
}

/// A task definition without what must differ between two revisions (identity, the `api` image).
pub fn comparable(definition: &aws_sdk_ecs::types::TaskDefinition) -> aws_sdk_ecs::types::TaskDefinition {
    let mut definition = definition.clone();
    definition.task_definition_arn = None;
    definition.revision = 0;
    definition.registered_at = None;
    definition.registered_by = None;
    if let Some(containers) = definition.container_definitions.as_mut() {
        for container in containers.iter_mut().filter(|c| c.name() == Some("api")) {
            container.image = None;
        }
    }
    definition
}

/// Asserts two revisions are the same but for identity and the `api` image; on failure names
/// the first field that differs (SDK `Debug` redacts environments, so compare with `==`).
#[track_caller]
pub fn assert_same_definition(after: &aws_sdk_ecs::types::TaskDefinition, before: &aws_sdk_ecs::types::TaskDefinition) {
    let (after, before) = (comparable(after), comparable(before));
    for (a, b) in after.container_definitions().iter().zip(before.container_definitions()) {
        assert_eq!(
            a,
            b,
            "container {:?} changed (environment: {:?} vs {:?})",
            a.name(),
            a.environment(),
            b.environment()
        );
    }
    assert_eq!(after, before);
}

/// `(key, value)` pairs of ECS tags, for assertions.
pub fn tag_pairs(tags: &[aws_sdk_ecs::types::Tag]) -> Vec<(String, String)> {
    tags.iter().map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned())).collect()
}

/// The tags of a revision Conveyor registered, as pairs, without `conveyor:lease` (a token new
/// for every lease), which must be there.
pub fn registered_tag_pairs(tags: &[aws_sdk_ecs::types::Tag]) -> Vec<(String, String)> {
    let mut pairs = tag_pairs(tags);
    let before = pairs.len();
    pairs.retain(|(key, value)| !(key == "conveyor:lease" && value.len() == 32));
    assert_eq!(pairs.len() + 1, before, "one conveyor:lease tag holding a token: {tags:?}");
    pairs
}
