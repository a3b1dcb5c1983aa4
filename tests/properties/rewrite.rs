//! The task-definition rewrite: it changes the one container's image (and Conveyor's tags) and
//! nothing else, and rewriting its own output with the same swap gives the same request — up to a
//! thousand containers and the maximal definition.

use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionInput;
#[allow(deprecated)] // InferenceAccelerator: no longer offered, still carried over
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, CpuArchitecture, EphemeralStorage, HostVolumeProperties, InferenceAccelerator,
    IpcMode, KeyValuePair, LogConfiguration, LogDriver, NetworkMode, OsFamily, PidMode, PortMapping,
    ProxyConfiguration, ProxyConfigurationType, RuntimePlatform, Secret, Tag, TaskDefinition,
    TaskDefinitionPlacementConstraint, TaskDefinitionPlacementConstraintType, TaskDefinitionStatus, Volume,
};
use conveyor::taskdef::{self, ImageSwap, TAG_APP, TAG_IMAGE_DIGEST, TAG_IMAGE_TAG};
use conveyor_testkit::taskdefs::{debug_fields, maximal_task_definition};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::arbitrary::*;
use crate::{cases, heavy};

fn offline_ecs() -> aws_sdk_ecs::Client {
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
        .region(aws_sdk_ecs::config::Region::new("us-east-1"))
        .build();
    aws_sdk_ecs::Client::from_conf(config)
}

fn container(name: String) -> impl Strategy<Value = ContainerDefinition> {
    (
        (prop::option::of(text()), any::<i32>(), prop::option::of(any::<i32>()), prop::option::of(any::<bool>())),
        prop::collection::vec((prop::option::of(text()), prop::option::of(text())), 0..3),
        prop::collection::vec((text(), text()), 0..2),
        prop::collection::vec(text(), 0..3),
        prop::collection::hash_map(text(), text(), 0..3),
        prop::option::of((text(), prop::collection::hash_map(text(), text(), 0..2))),
        prop::collection::vec((any::<i32>(), prop::option::of(text())), 0..2),
    )
        .prop_map(move |((image, cpu, memory, essential), environment, secrets, command, labels, logs, ports)| {
            let mut container = ContainerDefinition::builder()
                .name(&name)
                .set_image(image)
                .cpu(cpu)
                .set_memory(memory)
                .set_essential(essential)
                .set_command(Some(command).filter(|c| !c.is_empty()))
                .set_docker_labels(Some(labels).filter(|l| !l.is_empty()));
            for (name, value) in environment {
                container = container.environment(KeyValuePair::builder().set_name(name).set_value(value).build());
            }
            for (name, value_from) in secrets {
                container =
                    container.secrets(Secret::builder().name(name).value_from(value_from).build().expect("complete"));
            }
            if let Some((driver, options)) = logs {
                container = container.log_configuration(
                    LogConfiguration::builder()
                        .log_driver(LogDriver::from(driver.as_str()))
                        .set_options(Some(options))
                        .build()
                        .expect("complete"),
                );
            }
            for (port, name) in ports {
                container = container.port_mappings(PortMapping::builder().container_port(port).set_name(name).build());
            }
            container.build()
        })
}

/// A container with a name, an image and an environment (for definitions of a thousand).
fn light_container(name: String) -> impl Strategy<Value = ContainerDefinition> {
    (prop::option::of("[ -~]{0,40}"), prop::collection::vec(("[A-Z_]{1,8}", "[ -~]{0,12}"), 0..3)).prop_map(
        move |(image, environment)| {
            let mut container = ContainerDefinition::builder().name(&name).set_image(image).memory(128);
            for (name, value) in environment {
                container = container.environment(KeyValuePair::builder().name(name).value(value).build());
            }
            container.build()
        },
    )
}

/// Container names: unique, arbitrary text after a distinct prefix. Past 100 containers, light
/// ones (generating a thousand rich containers takes seconds per case in a debug build).
fn containers(count: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<ContainerDefinition>> {
    let light = *count.start() > 100;
    prop::collection::vec(if light { "[a-z0-9]{0,4}".boxed() } else { text() }, count).prop_flat_map(move |suffixes| {
        let names: Vec<String> = suffixes
            .into_iter()
            .enumerate()
            .map(|(i, suffix)| if i == 0 && suffix.is_empty() { "api".to_owned() } else { format!("{i}:{suffix}") })
            .collect();
        names
            .into_iter()
            .map(|name| if light { light_container(name).boxed() } else { container(name).boxed() })
            .collect::<Vec<_>>()
    })
}

/// Every registrable field (arbitrary values: the SDK checks none of them) and the computed ones.
#[allow(deprecated)] // inference accelerators: still carried over
fn task_definition(count: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = TaskDefinition> {
    let top = (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(prop_oneof![Just("awsvpc".to_owned()), Just("bridge".to_owned()), text()]),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(any::<bool>()),
    );
    let lists = (
        prop::collection::vec((text(), prop::option::of(text())), 0..3),
        prop::collection::vec(prop::option::of(text()), 0..2),
        prop::collection::vec(prop_oneof![Just("FARGATE".to_owned()), Just("EC2".to_owned()), text()], 0..3),
        prop::option::of((text(), prop::collection::vec((text(), text()), 0..2))),
        prop::collection::vec((text(), text()), 0..2),
        prop::option::of(any::<i32>()),
        prop::option::of((text(), text())),
        (any::<i32>(), prop::option::of(text()), prop::option::of(0i64..2_000_000_000)),
    );
    (containers(count), top, lists).prop_map(|(containers, top, lists)| {
        let (family, task_role, execution_role, network_mode, cpu, memory, pid, ipc, fault_injection) = top;
        let (volumes, constraints, compatibilities, proxy, accelerators, storage, platform, computed) = lists;
        let (revision, registered_by, registered_at) = computed;
        let mut definition = TaskDefinition::builder()
            .set_task_definition_arn(
                family.as_ref().map(|f| format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{f}:{revision}")),
            )
            .set_family(family)
            .revision(revision)
            .status(TaskDefinitionStatus::Active)
            .set_task_role_arn(task_role)
            .set_execution_role_arn(execution_role)
            .set_network_mode(network_mode.map(|m| NetworkMode::from(m.as_str())))
            .set_container_definitions(Some(containers))
            .set_cpu(cpu)
            .set_memory(memory)
            .set_pid_mode(pid.map(|p| PidMode::from(p.as_str())))
            .set_ipc_mode(ipc.map(|i| IpcMode::from(i.as_str())))
            .set_enable_fault_injection(fault_injection)
            .set_registered_by(registered_by)
            .set_registered_at(registered_at.map(aws_smithy_types::DateTime::from_secs))
            .compatibilities(Compatibility::Ec2);
        for (name, path) in volumes {
            definition = definition.volumes(
                Volume::builder()
                    .name(name)
                    .host(HostVolumeProperties::builder().set_source_path(path).build())
                    .build(),
            );
        }
        for expression in constraints {
            definition = definition.placement_constraints(
                TaskDefinitionPlacementConstraint::builder()
                    .r#type(TaskDefinitionPlacementConstraintType::MemberOf)
                    .set_expression(expression)
                    .build(),
            );
        }
        for compatibility in compatibilities {
            definition = definition.requires_compatibilities(Compatibility::from(compatibility.as_str()));
        }
        if let Some((container, properties)) = proxy {
            let mut proxy =
                ProxyConfiguration::builder().container_name(container).r#type(ProxyConfigurationType::Appmesh);
            for (name, value) in properties {
                proxy = proxy.properties(KeyValuePair::builder().name(name).value(value).build());
            }
            definition = definition.proxy_configuration(proxy.build().expect("complete"));
        }
        for (device, kind) in accelerators {
            definition = definition.inference_accelerators(
                InferenceAccelerator::builder().device_name(device).device_type(kind).build().expect("complete"),
            );
        }
        if let Some(size) = storage {
            definition = definition.ephemeral_storage(EphemeralStorage::builder().size_in_gib(size).build());
        }
        if let Some((cpu, os)) = platform {
            definition = definition.runtime_platform(
                RuntimePlatform::builder()
                    .cpu_architecture(CpuArchitecture::from(cpu.as_str()))
                    .operating_system_family(OsFamily::from(os.as_str()))
                    .build(),
            );
        }
        definition.build()
    })
}

fn tags() -> impl Strategy<Value = Vec<Tag>> {
    let key = prop_oneof![
        prop::sample::select(vec![TAG_APP, TAG_IMAGE_TAG, TAG_IMAGE_DIGEST, "team"]).prop_map(str::to_owned),
        text()
    ];
    prop::collection::vec((prop::option::of(key), prop::option::of(text())), 0..6)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| Tag::builder().set_key(k).set_value(v).build()).collect())
}

/// The swap: which container (one of the definition's, or a name it does not have), the image,
/// Conveyor's tags.
#[derive(Debug, Clone)]
struct SwapCase {
    container: Option<prop::sample::Index>,
    image: Option<String>,
    tags: Vec<(&'static str, String)>,
}

fn swap() -> impl Strategy<Value = SwapCase> {
    (
        prop::option::weighted(0.9, any::<prop::sample::Index>()),
        prop::option::weighted(
            0.9,
            prop_oneof![
                text(),
                image_digest().prop_map(|d| format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-api@{d}"))
            ],
        ),
        prop::sample::subsequence(vec![TAG_APP, TAG_IMAGE_TAG, TAG_IMAGE_DIGEST], 0..=3),
        prop::collection::vec(text(), 3),
    )
        .prop_map(|(container, image, keys, values)| SwapCase {
            container,
            image,
            tags: keys.into_iter().zip(values).collect(),
        })
}

fn container_name(definition: &TaskDefinition, case: &SwapCase) -> String {
    let names = taskdef::container_names(definition);
    match &case.container {
        Some(index) if !names.is_empty() => names[index.index(names.len())].to_owned(),
        _ => "no-such-container".to_owned(),
    }
}

fn rewrite(definition: &TaskDefinition, tags: &[Tag], swap: &ImageSwap<'_>) -> RegisterTaskDefinitionInput {
    taskdef::registration(offline_ecs().register_task_definition(), definition, tags, swap)
        .as_input()
        .clone()
        .build()
        .expect("a registration request")
}

/// What ECS computes: in a described definition, never in a registration.
const COMPUTED_FIELDS: [&str; 9] = [
    "compatibilities",
    "delete_requested_at",
    "deregistered_at",
    "registered_at",
    "registered_by",
    "requires_attributes",
    "revision",
    "status",
    "task_definition_arn",
];

#[allow(deprecated)] // inference accelerators: still carried over
fn check_rewrite(definition: &TaskDefinition, tags: &[Tag], case: &SwapCase) -> Result<(), TestCaseError> {
    let container = container_name(definition, case);
    let swap = ImageSwap { container: &container, image: case.image.clone(), tags: case.tags.clone() };
    let input = rewrite(definition, tags, &swap);

    // The one container's image, and nothing else of the containers.
    let expected: Option<Vec<ContainerDefinition>> = definition.container_definitions.clone().map(|containers| {
        containers
            .into_iter()
            .map(|mut c| {
                if c.name.as_deref() == Some(container.as_str()) {
                    if let Some(image) = &case.image {
                        c.image = Some(image.clone());
                    }
                }
                c
            })
            .collect()
    });
    prop_assert!(input.container_definitions == expected, "the containers changed beyond {container:?}'s image");

    // Every other field as it was.
    prop_assert_eq!(&input.family, &definition.family);
    prop_assert_eq!(&input.task_role_arn, &definition.task_role_arn);
    prop_assert_eq!(&input.execution_role_arn, &definition.execution_role_arn);
    prop_assert_eq!(&input.network_mode, &definition.network_mode);
    prop_assert_eq!(&input.volumes, &definition.volumes);
    prop_assert_eq!(&input.placement_constraints, &definition.placement_constraints);
    prop_assert_eq!(&input.requires_compatibilities, &definition.requires_compatibilities);
    prop_assert_eq!(&input.cpu, &definition.cpu);
    prop_assert_eq!(&input.memory, &definition.memory);
    prop_assert_eq!(&input.pid_mode, &definition.pid_mode);
    prop_assert_eq!(&input.ipc_mode, &definition.ipc_mode);
    prop_assert_eq!(&input.proxy_configuration, &definition.proxy_configuration);
    prop_assert_eq!(&input.inference_accelerators, &definition.inference_accelerators);
    prop_assert_eq!(&input.ephemeral_storage, &definition.ephemeral_storage);
    prop_assert_eq!(&input.runtime_platform, &definition.runtime_platform);
    prop_assert_eq!(&input.enable_fault_injection, &definition.enable_fault_injection);

    // The same, for every field the SDK has or will have: each field of the request renders as
    // the source's field of that name, and what the request lacks is what ECS computes.
    let request = debug_fields(&format!("{input:#?}"));
    let source = debug_fields(&format!("{definition:#?}"));
    for (name, value) in &request {
        if name != "container_definitions" && name != "tags" {
            prop_assert_eq!(Some(value), source.get(name), "field `{}` changed", name);
        }
    }
    let missing: Vec<&str> = source.keys().map(String::as_str).filter(|k| !request.contains_key(*k)).collect();
    prop_assert_eq!(missing, COMPUTED_FIELDS.to_vec(), "a registrable field is not carried over");

    // Tags: the source's, with Conveyor's set (replacing same-key ones, in the swap's order).
    let mut expected_tags: Vec<Tag> =
        tags.iter().filter(|t| !case.tags.iter().any(|(key, _)| t.key() == Some(key))).cloned().collect();
    expected_tags.extend(case.tags.iter().map(|(key, value)| Tag::builder().key(*key).value(value).build()));
    prop_assert_eq!(input.tags.clone(), Some(expected_tags).filter(|t| !t.is_empty()));

    // Idempotent: the registered revision, rewritten with the same swap, gives the same request.
    let (registered, registered_tags) = as_registered(&input, definition.revision + 1);
    prop_assert_eq!(rewrite(&registered, &registered_tags, &swap), input, "rewriting the rewrite changed it");
    Ok(())
}

/// The revision ECS registers for `input` (what the next rollout reads back).
#[allow(deprecated)]
fn as_registered(input: &RegisterTaskDefinitionInput, revision: i32) -> (TaskDefinition, Vec<Tag>) {
    let definition = TaskDefinition::builder()
        .set_task_definition_arn(
            input.family.as_ref().map(|f| format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{f}:{revision}")),
        )
        .revision(revision)
        .status(TaskDefinitionStatus::Active)
        .set_family(input.family.clone())
        .set_task_role_arn(input.task_role_arn.clone())
        .set_execution_role_arn(input.execution_role_arn.clone())
        .set_network_mode(input.network_mode.clone())
        .set_container_definitions(input.container_definitions.clone())
        .set_volumes(input.volumes.clone())
        .set_placement_constraints(input.placement_constraints.clone())
        .set_requires_compatibilities(input.requires_compatibilities.clone())
        .set_cpu(input.cpu.clone())
        .set_memory(input.memory.clone())
        .set_pid_mode(input.pid_mode.clone())
        .set_ipc_mode(input.ipc_mode.clone())
        .set_proxy_configuration(input.proxy_configuration.clone())
        .set_inference_accelerators(input.inference_accelerators.clone())
        .set_ephemeral_storage(input.ephemeral_storage.clone())
        .set_runtime_platform(input.runtime_platform.clone())
        .set_enable_fault_injection(input.enable_fault_injection)
        .set_registered_at(Some(aws_smithy_types::DateTime::from_secs(1_700_000_000)))
        .build();
    (definition, input.tags.clone().unwrap_or_default())
}

proptest! {
    #![proptest_config(cases(64))]

    /// Arbitrary definitions of 0 to 6 containers, every field set or not.
    #[test]
    fn the_rewrite_changes_one_image_and_is_idempotent(definition in task_definition(0..=6), tags in tags(), swap in swap()) {
        check_rewrite(&definition, &tags, &swap)?;
    }
}

proptest! {
    #![proptest_config(heavy(3))]

    /// A thousand containers.
    #[test]
    fn the_rewrite_of_a_thousand_containers_changes_one_image(definition in task_definition(1000..=1000), tags in tags(), swap in swap()) {
        check_rewrite(&definition, &tags, &swap)?;
    }
}

/// The maximal definition (every field the SDK models, realistic values) under arbitrary swaps.
#[test]
fn the_rewrite_of_the_maximal_definition_changes_one_image() {
    let (definition, tags) = maximal_task_definition("shop-api-stage", "123456789012", "us-east-1");
    let mut runner = proptest::test_runner::TestRunner::new(cases(64));
    runner.run(&swap(), |case| check_rewrite(&definition, &tags, &case)).unwrap();
}
