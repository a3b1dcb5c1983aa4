//! Task-definition fixtures shared by the unit test of the rewrite (`src/taskdef.rs`), the
//! property tests and the round trip through the local AWS: a task definition that sets every
//! registrable field Conveyor must carry over — several containers (app, FireLens log router, Envoy
//! sidecar), secrets, an empty-string environment value, health checks, dependsOn, ulimits,
//! volumes, placement constraints, runtime platform, ephemeral storage, proxy configuration, ... —
//! and [`debug_fields`], to compare an SDK request with its source field by field.
#![allow(deprecated)] // inference accelerators: deprecated by AWS, still carried over

use std::collections::BTreeMap;

use aws_sdk_ecs::types::*;

pub const APP_CONTAINER: &str = "api";

pub fn maximal_task_definition(family: &str, account: &str, region: &str) -> (TaskDefinition, Vec<Tag>) {
    let registry = format!("{account}.dkr.ecr.{region}.amazonaws.com");
    let app = ContainerDefinition::builder()
        .name(APP_CONTAINER)
        .image(format!("{registry}/shop-api:v0.9.0"))
        .cpu(256)
        .memory(512)
        .memory_reservation(256)
        .essential(true)
        .port_mappings(
            PortMapping::builder()
                .container_port(8080)
                .host_port(8080)
                .protocol(TransportProtocol::Tcp)
                .name("http")
                .app_protocol(ApplicationProtocol::Http)
                .build(),
        )
        .entry_point("/bin/server")
        .command("--port=8080")
        .environment(KeyValuePair::builder().name("LOG_LEVEL").value("info").build())
        .environment(KeyValuePair::builder().name("FEATURE_FLAGS").value("").build())
        .environment_files(
            EnvironmentFile::builder()
                .value("arn:aws:s3:::shop-config/stage.env")
                .r#type(EnvironmentFileType::S3)
                .build()
                .unwrap(),
        )
        .secrets(
            Secret::builder()
                .name("DB_PASSWORD")
                .value_from(format!("arn:aws:ssm:{region}:{account}:parameter/shop/db-password"))
                .build()
                .unwrap(),
        )
        .secrets(
            Secret::builder()
                .name("API_KEY")
                .value_from(format!("arn:aws:secretsmanager:{region}:{account}:secret:shop/api-key"))
                .build()
                .unwrap(),
        )
        .mount_points(MountPoint::builder().source_volume("data").container_path("/data").read_only(false).build())
        .mount_points(
            MountPoint::builder().source_volume("shared-efs").container_path("/shared").read_only(true).build(),
        )
        .volumes_from(VolumeFrom::builder().source_container("log_router").read_only(true).build())
        .linux_parameters(
            LinuxParameters::builder()
                .init_process_enabled(true)
                .capabilities(KernelCapabilities::builder().add("SYS_PTRACE").drop("NET_RAW").build())
                .shared_memory_size(64)
                .tmpfs(Tmpfs::builder().container_path("/tmp").size(64).mount_options("rw").build().unwrap())
                .build(),
        )
        .depends_on(
            ContainerDependency::builder()
                .container_name("log_router")
                .condition(ContainerCondition::Start)
                .build()
                .unwrap(),
        )
        .depends_on(
            ContainerDependency::builder()
                .container_name("envoy")
                .condition(ContainerCondition::Healthy)
                .build()
                .unwrap(),
        )
        .start_timeout(60)
        .stop_timeout(30)
        .user("1000:1000")
        .working_directory("/srv")
        .readonly_root_filesystem(true)
        .docker_labels("team", "shop")
        .docker_labels("empty", "")
        .ulimits(Ulimit::builder().name(UlimitName::Nofile).soft_limit(65536).hard_limit(65536).build().unwrap())
        .log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awsfirelens)
                .options("Name", "datadog")
                .options("dd_service", "shop-api")
                .secret_options(
                    Secret::builder()
                        .name("apikey")
                        .value_from(format!("arn:aws:ssm:{region}:{account}:parameter/dd-api-key"))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command("curl -f http://localhost:8080/health || exit 1")
                .interval(30)
                .timeout(5)
                .retries(3)
                .start_period(10)
                .build()
                .unwrap(),
        )
        .system_controls(SystemControl::builder().namespace("net.core.somaxconn").value("1024").build())
        .resource_requirements(ResourceRequirement::builder().r#type(ResourceType::Gpu).value("1").build().unwrap())
        .restart_policy(
            ContainerRestartPolicy::builder()
                .enabled(true)
                .restart_attempt_period(120)
                .ignored_exit_codes(0)
                .build()
                .unwrap(),
        )
        .version_consistency(VersionConsistency::Enabled)
        .build();
    let log_router = ContainerDefinition::builder()
        .name("log_router")
        .image("public.ecr.aws/aws-observability/aws-for-fluent-bit:stable")
        .essential(true)
        .memory_reservation(50)
        .firelens_configuration(
            FirelensConfiguration::builder()
                .r#type(FirelensConfigurationType::Fluentbit)
                .options("enable-ecs-log-metadata", "true")
                .build()
                .unwrap(),
        )
        .log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", "/ecs/shop-api")
                .options("awslogs-region", region)
                .options("awslogs-stream-prefix", "firelens")
                .build()
                .unwrap(),
        )
        .build();
    let envoy = ContainerDefinition::builder()
        .name("envoy")
        .image(format!("840364872350.dkr.ecr.{region}.amazonaws.com/aws-appmesh-envoy:v1.29.4.0-prod"))
        .essential(true)
        .memory(256)
        .user("1337")
        .environment(KeyValuePair::builder().name("APPMESH_RESOURCE_ARN").value("mesh/shop/virtualNode/api").build())
        .health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command("curl -s http://localhost:9901/server_info | grep state | grep -q LIVE")
                .interval(5)
                .timeout(2)
                .retries(3)
                .build()
                .unwrap(),
        )
        .build();

    let definition = TaskDefinition::builder()
        .task_definition_arn(format!("arn:aws:ecs:{region}:{account}:task-definition/{family}:3"))
        .family(family)
        .revision(3)
        .status(TaskDefinitionStatus::Active)
        .task_role_arn(format!("arn:aws:iam::{account}:role/shop-api-task"))
        .execution_role_arn(format!("arn:aws:iam::{account}:role/shop-api-execution"))
        .network_mode(NetworkMode::Awsvpc)
        .container_definitions(app)
        .container_definitions(log_router)
        .container_definitions(envoy)
        .volumes(
            Volume::builder()
                .name("data")
                .host(HostVolumeProperties::builder().source_path("/ecs/data").build())
                .build(),
        )
        .volumes(
            Volume::builder()
                .name("shared-efs")
                .efs_volume_configuration(
                    EfsVolumeConfiguration::builder()
                        .file_system_id("fs-0123456789abcdef0")
                        .root_directory("/")
                        .transit_encryption(EfsTransitEncryption::Enabled)
                        .authorization_config(
                            EfsAuthorizationConfig::builder()
                                .access_point_id("fsap-0123456789abcdef0")
                                .iam(EfsAuthorizationConfigIam::Enabled)
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .volumes(
            Volume::builder()
                .name("scratch")
                .docker_volume_configuration(
                    DockerVolumeConfiguration::builder()
                        .scope(Scope::Task)
                        .driver("local")
                        .labels("purpose", "scratch")
                        .build(),
                )
                .build(),
        )
        .placement_constraints(
            TaskDefinitionPlacementConstraint::builder()
                .r#type(TaskDefinitionPlacementConstraintType::MemberOf)
                .expression("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]")
                .build(),
        )
        .requires_compatibilities(Compatibility::Ec2)
        .compatibilities(Compatibility::Ec2)
        .requires_attributes(
            Attribute::builder().name("com.amazonaws.ecs.capability.docker-remote-api.1.19").build().unwrap(),
        )
        .runtime_platform(
            RuntimePlatform::builder()
                .cpu_architecture(CpuArchitecture::Arm64)
                .operating_system_family(OsFamily::Linux)
                .build(),
        )
        .cpu("1024")
        .memory("2048")
        .pid_mode(PidMode::Task)
        .ipc_mode(IpcMode::Task)
        .proxy_configuration(
            ProxyConfiguration::builder()
                .r#type(ProxyConfigurationType::Appmesh)
                .container_name("envoy")
                .properties(KeyValuePair::builder().name("IgnoredUID").value("1337").build())
                .properties(KeyValuePair::builder().name("ProxyIngressPort").value("15000").build())
                .properties(KeyValuePair::builder().name("ProxyEgressPort").value("15001").build())
                .properties(KeyValuePair::builder().name("AppPorts").value("8080").build())
                .properties(
                    KeyValuePair::builder().name("EgressIgnoredIPs").value("169.254.170.2,169.254.169.254").build(),
                )
                .build()
                .unwrap(),
        )
        .inference_accelerators(
            InferenceAccelerator::builder().device_name("device1").device_type("eia2.medium").build().unwrap(),
        )
        .ephemeral_storage(EphemeralStorage::builder().size_in_gib(50).build())
        .enable_fault_injection(true)
        .registered_at(aws_sdk_ecs::primitives::DateTime::from_secs(1_700_000_000))
        .registered_by(format!("arn:aws:iam::{account}:root"))
        .build();
    let tags = vec![
        Tag::builder().key("team").value("shop").build(),
        Tag::builder().key("cost-center").value("").build(),
        Tag::builder().key("conveyor:image-tag").value("v0.9.0").build(),
    ];
    (definition, tags)
}

/// Top-level fields of a `{:#?}` rendering: name => rendered value.
pub fn debug_fields(pretty: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in pretty.lines().skip(1) {
        let top_level = line.strip_prefix("    ").filter(|rest| !rest.starts_with(' '));
        match top_level.and_then(|rest| rest.split_once(": ")) {
            Some((name, value)) if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                fields.extend(current.take());
                current = Some((name.to_owned(), value.to_owned()));
            }
            _ => {
                if let Some((_, value)) = current.as_mut() {
                    value.push('\n');
                    value.push_str(line);
                }
            }
        }
    }
    fields.extend(current);
    fields
}
