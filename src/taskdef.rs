//! Task-definition rewriting: from what `DescribeTaskDefinition` returned to the
//! `RegisterTaskDefinition` request for the next revision. One container's image changes and
//! Conveyor's tags are added; every other registrable field is carried over untouched.

use aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder;
use aws_sdk_ecs::types::{Tag, TaskDefinition};

/// Tag keys Conveyor adds to the revisions it registers.
pub const TAG_APP: &str = "conveyor:app";
pub const TAG_IMAGE_TAG: &str = "conveyor:image-tag";
pub const TAG_IMAGE_DIGEST: &str = "conveyor:image-digest";
/// The token of the lease under which Conveyor registered the revision: what lets a later holder
/// tell its own lost rollout from a revision someone else tagged like Conveyor's.
pub const TAG_LEASE: &str = "conveyor:lease";

/// The one change Conveyor makes to a task definition.
#[derive(Debug, Clone)]
pub struct ImageSwap<'a> {
    /// The container whose image is replaced. It must exist (see [`container_image`]).
    pub container: &'a str,
    /// The digest-pinned image it gets (`None`: a copy that keeps the image, e.g. to bring back a
    /// deregistered revision).
    pub image: Option<String>,
    /// Tags to set on the new revision (replacing same-key tags).
    pub tags: Vec<(&'static str, String)>,
}

/// The image the named container runs, or `None` if the task definition has no such container.
pub fn container_image<'a>(definition: &'a TaskDefinition, container: &str) -> Option<&'a str> {
    definition
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some(container))
        .map(|c| c.image().unwrap_or_default())
}

/// `…:task-definition/{family}:{revision}` → (family, revision).
pub fn family_revision(arn: &str) -> Option<(&str, u32)> {
    let (family, revision) = arn.rsplit_once('/')?.1.rsplit_once(':')?;
    Some((family, revision.parse().ok()?))
}

/// Names of the task definition's containers, for error messages.
pub fn container_names(definition: &TaskDefinition) -> Vec<&str> {
    definition.container_definitions().iter().filter_map(|c| c.name()).collect()
}

/// Fields of a described task definition that ECS computes; they are not registrable.
pub const COMPUTED: [&str; 9] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "deleteRequestedAt",
];

/// Members of `described` (a raw `taskDefinition` as ECS returned it) that the serialized
/// registration `request` lacks: what a copy through the SDK would silently drop because the
/// SDK does not model them. Paths like `trustedExecutionConfiguration` or
/// `containerDefinitions[0].newSetting`; empty values (`[]`, `{}`, `null`, `""`) lose nothing.
pub fn unmodeled_members(described: &serde_json::Value, request: &serde_json::Value) -> Vec<String> {
    let mut missing = Vec::new();
    if let (Some(described), Some(request)) = (described.as_object(), request.as_object()) {
        for (key, value) in described.iter().filter(|(key, _)| !COMPUTED.contains(&key.as_str())) {
            find_missing(key.clone(), value, request.get(key), &mut missing);
        }
    }
    missing
}

fn find_missing(
    path: String,
    described: &serde_json::Value,
    request: Option<&serde_json::Value>,
    missing: &mut Vec<String>,
) {
    use serde_json::Value;
    let empty = match described {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(members) => members.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    };
    if empty {
        return;
    }
    let Some(request) = request else {
        missing.push(path);
        return;
    };
    match (described, request) {
        (Value::Object(described), Value::Object(request)) => {
            for (key, value) in described {
                find_missing(format!("{path}.{key}"), value, request.get(key), missing);
            }
        }
        (Value::Array(described), Value::Array(request)) => {
            for (index, value) in described.iter().enumerate() {
                find_missing(format!("{path}[{index}]"), value, request.get(index), missing);
            }
        }
        _ => {}
    }
}

/// Fills `request` with everything registrable from `definition`, with `swap` applied.
///
/// Fields ECS computes (ARN, revision, status, compatibilities, requiresAttributes, registeredAt/By)
/// are not registrable and are left out; ECS derives them again for the new revision.
#[allow(deprecated)] // inferenceAccelerators: no longer offered, but a revision must keep what it had
pub fn registration(
    request: RegisterTaskDefinitionFluentBuilder,
    definition: &TaskDefinition,
    tags: &[Tag],
    swap: &ImageSwap<'_>,
) -> RegisterTaskDefinitionFluentBuilder {
    let containers = definition.container_definitions.clone().map(|containers| {
        containers
            .into_iter()
            .map(|mut container| {
                if let (Some(image), true) = (&swap.image, container.name.as_deref() == Some(swap.container)) {
                    container.image = Some(image.clone());
                }
                container
            })
            .collect()
    });
    let mut new_tags: Vec<Tag> =
        tags.iter().filter(|tag| !swap.tags.iter().any(|(key, _)| tag.key() == Some(key))).cloned().collect();
    new_tags.extend(swap.tags.iter().map(|(key, value)| Tag::builder().key(*key).value(value).build()));

    request
        .set_family(definition.family.clone())
        .set_task_role_arn(definition.task_role_arn.clone())
        .set_execution_role_arn(definition.execution_role_arn.clone())
        .set_network_mode(definition.network_mode.clone())
        .set_container_definitions(containers)
        .set_volumes(definition.volumes.clone())
        .set_placement_constraints(definition.placement_constraints.clone())
        .set_requires_compatibilities(definition.requires_compatibilities.clone())
        .set_cpu(definition.cpu.clone())
        .set_memory(definition.memory.clone())
        .set_tags(Some(new_tags).filter(|tags| !tags.is_empty()))
        .set_pid_mode(definition.pid_mode.clone())
        .set_ipc_mode(definition.ipc_mode.clone())
        .set_proxy_configuration(definition.proxy_configuration.clone())
        .set_inference_accelerators(definition.inference_accelerators.clone()) // deprecated by AWS, still carried over
        .set_ephemeral_storage(definition.ephemeral_storage.clone())
        .set_runtime_platform(definition.runtime_platform.clone())
        .set_enable_fault_injection(definition.enable_fault_injection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_testkit::taskdefs::{debug_fields, maximal_task_definition, APP_CONTAINER};

    fn offline_client() -> aws_sdk_ecs::Client {
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .build();
        aws_sdk_ecs::Client::from_conf(config)
    }

    fn swap(image: &str) -> ImageSwap<'static> {
        ImageSwap {
            container: APP_CONTAINER,
            image: Some(image.to_owned()),
            tags: vec![
                (TAG_APP, "shop-api".to_owned()),
                (TAG_IMAGE_TAG, "v1.0.0".to_owned()),
                (TAG_IMAGE_DIGEST, "sha256:feed".to_owned()),
            ],
        }
    }

    const PINNED: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-api@sha256:feed";

    #[test]
    fn rewrite_keeps_every_registrable_field() {
        let (definition, tags) = maximal_task_definition("shop-api-stage", "123456789012", "us-east-1");
        let request = registration(offline_client().register_task_definition(), &definition, &tags, &swap(PINNED));

        let source = debug_fields(&format!("{definition:#?}"));
        let registered = debug_fields(&format!("{:#?}", request.as_input()));
        assert!(registered.len() >= 18, "parsed too few fields: {registered:?}");

        // Every field the request can carry is set, and equal to the source, but the two we change.
        for (name, value) in &registered {
            assert_ne!(value, "None", "registrable field `{name}` was dropped");
            if name != "container_definitions" && name != "tags" {
                assert_eq!(Some(value), source.get(name), "field `{name}` changed");
            }
        }
        // What the source has and the request cannot carry is exactly what ECS computes itself.
        // A new SDK field shows up here first: decide whether it is registrable.
        let computed: Vec<&str> = source.keys().map(String::as_str).filter(|k| !registered.contains_key(*k)).collect();
        assert_eq!(
            computed,
            [
                "compatibilities",
                "delete_requested_at",
                "deregistered_at",
                "registered_at",
                "registered_by",
                "requires_attributes",
                "revision",
                "status",
                "task_definition_arn"
            ]
        );
    }

    #[test]
    fn only_the_named_container_gets_the_new_image() {
        let (definition, tags) = maximal_task_definition("shop-api-stage", "123456789012", "us-east-1");
        let request = registration(offline_client().register_task_definition(), &definition, &tags, &swap(PINNED));

        let mut expected = definition.container_definitions().to_vec();
        expected[0].image = Some(PINNED.to_owned());
        assert_eq!(request.get_container_definitions().as_deref(), Some(expected.as_slice()));
        assert_eq!(container_image(&definition, "log_router"), expected[1].image.as_deref());
        assert_eq!(container_names(&definition), ["api", "log_router", "envoy"]);
        assert_eq!(container_image(&definition, "missing"), None);
    }

    #[test]
    fn conveyor_tags_are_added_and_replace_their_old_values() {
        let (definition, tags) = maximal_task_definition("shop-api-stage", "123456789012", "us-east-1");
        let request = registration(offline_client().register_task_definition(), &definition, &tags, &swap(PINNED));
        let tags: Vec<(&str, &str)> = request
            .get_tags()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
            .collect();
        assert_eq!(
            tags,
            [
                ("team", "shop"),
                ("cost-center", ""),
                ("conveyor:app", "shop-api"),
                ("conveyor:image-tag", "v1.0.0"),
                ("conveyor:image-digest", "sha256:feed"),
            ]
        );
    }

    #[test]
    fn a_minimal_definition_stays_minimal() {
        let definition = TaskDefinition::builder()
            .family("tiny")
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder().name("api").image("nginx").memory(128).build(),
            )
            .build();
        let request = registration(offline_client().register_task_definition(), &definition, &[], &swap(PINNED));
        let input = request.as_input();
        assert_eq!(input.get_family().as_deref(), Some("tiny"));
        assert_eq!(input.get_volumes(), &None);
        assert_eq!(input.get_cpu(), &None);
        assert_eq!(input.get_tags().as_ref().map(Vec::len), Some(3));
    }
}
