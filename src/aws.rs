//! Thin adapters over the AWS SDK clients. They map SDK shapes into Conveyor's own types once,
//! here, and every SDK error into [`AwsError`], which keeps whether a retry can help.

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{Tag, TaskDefinition, TaskDefinitionField};
use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_ssm::types::ParameterType;

use crate::taskdef::{self, ImageSwap};

/// A failed AWS call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {code}: {message}")]
pub struct AwsError {
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    /// Throttling, a 5xx, a timeout or a network failure: trying again later may succeed.
    pub retryable: bool,
    /// The service answered with an error, so the request certainly changed nothing. (After a
    /// timeout or a broken connection the request may have taken effect.)
    pub rejected: bool,
}

impl AwsError {
    pub fn new(operation: &'static str, code: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError { operation, code: code.into(), message: message.into(), retryable: false, rejected: true }
    }

    fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (code, message, retryable) = match &error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                let code = inner.code().unwrap_or("Unknown").to_owned();
                let retryable = code.contains("Throttl")
                    || code.contains("TooManyRequests")
                    || code.contains("RequestLimitExceeded")
                    || matches!(
                        code.as_str(),
                        "ServerException" | "InternalServerError" | "InternalFailure" | "ServiceUnavailable"
                    );
                (code, inner.message().unwrap_or_default().to_owned(), retryable)
            }
            SdkError::TimeoutError(_) => ("Timeout".into(), format!("{error:?}"), true),
            SdkError::DispatchFailure(_) => ("DispatchFailure".into(), source_chain(&error), true),
            SdkError::ResponseError(_) => ("ResponseError".into(), source_chain(&error), true),
            _ => ("Unknown".into(), source_chain(&error), false),
        };
        let rejected = matches!(error, SdkError::ServiceError(_) | SdkError::ConstructionFailure(_));
        AwsError { operation, code, message, retryable, rejected }
    }
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Every AWS client Conveyor uses, built once per cold start from the standard SDK settings
/// (region, credentials, `AWS_ENDPOINT_URL`).
#[derive(Clone)]
pub struct Clients {
    pub ecs: Ecs,
    pub ssm: Ssm,
    pub sns: Sns,
}

impl Clients {
    pub async fn from_env() -> Self {
        let retry = aws_config::retry::RetryConfig::adaptive()
            .with_max_attempts(6)
            .with_initial_backoff(std::time::Duration::from_millis(200));
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).retry_config(retry).load().await;
        Clients::from_config(&config)
    }

    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        Clients {
            ecs: Ecs { client: aws_sdk_ecs::Client::new(config) },
            ssm: Ssm { client: aws_sdk_ssm::Client::new(config) },
            sns: Sns { client: aws_sdk_sns::Client::new(config) },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SSM
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Ssm {
    pub client: aws_sdk_ssm::Client,
}

/// A parameter's name, value and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub value: String,
    pub version: i64,
    pub secure: bool,
}

impl Parameter {
    fn from_sdk(parameter: aws_sdk_ssm::types::Parameter) -> Option<Self> {
        Some(Parameter {
            secure: parameter.r#type == Some(ParameterType::SecureString),
            name: parameter.name?,
            value: parameter.value.unwrap_or_default(),
            version: parameter.version,
        })
    }
}

impl Ssm {
    /// All parameters directly under `path` (every page).
    pub async fn parameters_by_path(&self, path: &str, decrypt: bool) -> Result<Vec<Parameter>, AwsError> {
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(path)
            .recursive(false)
            .with_decryption(decrypt)
            .into_paginator()
            .send();
        let mut parameters = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("GetParametersByPath", e))?;
            parameters.extend(page.parameters.unwrap_or_default().into_iter().filter_map(Parameter::from_sdk));
        }
        Ok(parameters)
    }

    /// One parameter, or `None` if it does not exist.
    pub async fn get(&self, name: &str, decrypt: bool) -> Result<Option<Parameter>, AwsError> {
        match self.client.get_parameter().name(name).with_decryption(decrypt).send().await {
            Ok(output) => Ok(output.parameter.and_then(Parameter::from_sdk)),
            Err(SdkError::ServiceError(e)) if e.err().is_parameter_not_found() => Ok(None),
            Err(e) => Err(AwsError::from_sdk("GetParameter", e)),
        }
    }

    /// Creates a `String` parameter; `false` if it already exists (SSM's only atomic check).
    pub async fn create(&self, name: &str, value: &str, description: &str) -> Result<bool, AwsError> {
        let result = self
            .client
            .put_parameter()
            .name(name)
            .value(value)
            .description(description)
            .r#type(ParameterType::String)
            .overwrite(false)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_parameter_already_exists() => Ok(false),
            Err(e) => Err(AwsError::from_sdk("PutParameter", e)),
        }
    }

    /// Deletes a parameter; a parameter that is already gone is fine.
    pub async fn delete(&self, name: &str) -> Result<(), AwsError> {
        match self.client.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_parameter_not_found() => Ok(()),
            Err(e) => Err(AwsError::from_sdk("DeleteParameter", e)),
        }
    }

    /// Writes a `String` parameter (overwriting), returning its new version.
    pub async fn put(&self, name: &str, value: &str, description: &str) -> Result<i64, AwsError> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .description(description)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map(|output| output.version)
            .map_err(|e| AwsError::from_sdk("PutParameter", e))
    }
}

// ---------------------------------------------------------------------------------------------
// ECS
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Ecs {
    pub client: aws_sdk_ecs::Client,
}

/// What Conveyor needs to know about one ECS deployment of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    /// `PRIMARY`, `ACTIVE` or `INACTIVE`.
    pub status: String,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED` (absent for non-rolling deployment controllers).
    pub rollout_state: Option<String>,
    pub rollout_state_reason: Option<String>,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub failed_tasks: i32,
}

impl Deployment {
    pub fn is_primary(&self) -> bool {
        self.status == "PRIMARY"
    }
}

/// What Conveyor needs to know about an ECS service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub arn: String,
    pub status: String,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub deployments: Vec<Deployment>,
}

impl ServiceState {
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.is_primary())
    }

    fn from_sdk(service: aws_sdk_ecs::types::Service) -> Self {
        ServiceState {
            arn: service.service_arn.unwrap_or_default(),
            status: service.status.unwrap_or_default(),
            task_definition: service.task_definition.unwrap_or_default(),
            desired: service.desired_count,
            running: service.running_count,
            deployments: service
                .deployments
                .unwrap_or_default()
                .into_iter()
                .map(|d| Deployment {
                    id: d.id.unwrap_or_default(),
                    status: d.status.unwrap_or_default(),
                    rollout_state: d.rollout_state.map(|s| s.as_str().to_owned()),
                    rollout_state_reason: d.rollout_state_reason,
                    task_definition: d.task_definition.unwrap_or_default(),
                    desired: d.desired_count,
                    running: d.running_count,
                    failed_tasks: d.failed_tasks,
                })
                .collect(),
        }
    }
}

impl Ecs {
    /// The service, which must exist and be `ACTIVE`.
    pub async fn service(&self, cluster: &str, service: &str) -> Result<ServiceState, AwsError> {
        let output = self
            .client
            .describe_services()
            .cluster(cluster)
            .services(service)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeServices", e))?;
        output
            .services
            .unwrap_or_default()
            .into_iter()
            .map(ServiceState::from_sdk)
            .find(|s| s.status == "ACTIVE")
            .ok_or_else(|| {
                AwsError::new(
                    "DescribeServices",
                    "ServiceNotFound",
                    format!("no ACTIVE service {service} in cluster {cluster}"),
                )
            })
    }

    /// A task definition and its tags.
    pub async fn task_definition(&self, arn: &str) -> Result<(TaskDefinition, Vec<Tag>), AwsError> {
        let output = self
            .client
            .describe_task_definition()
            .task_definition(arn)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeTaskDefinition", e))?;
        let definition = output.task_definition.ok_or_else(|| {
            AwsError::new("DescribeTaskDefinition", "Empty", format!("no task definition returned for {arn}"))
        })?;
        Ok((definition, output.tags.unwrap_or_default()))
    }

    /// Registers `definition` with `swap` applied; returns the new revision's ARN.
    pub async fn register(
        &self,
        definition: &TaskDefinition,
        tags: &[Tag],
        swap: &ImageSwap<'_>,
    ) -> Result<String, AwsError> {
        let request = taskdef::registration(self.client.register_task_definition(), definition, tags, swap);
        let output = request.send().await.map_err(|e| AwsError::from_sdk("RegisterTaskDefinition", e))?;
        output
            .task_definition
            .and_then(|d| d.task_definition_arn)
            .ok_or_else(|| AwsError::new("RegisterTaskDefinition", "Empty", "no task definition ARN returned"))
    }

    /// Best-effort clean-up of a revision that never reached a service.
    pub async fn deregister(&self, arn: &str) -> Result<(), AwsError> {
        self.client
            .deregister_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map(drop)
            .map_err(|e| AwsError::from_sdk("DeregisterTaskDefinition", e))
    }

    /// What the stopped tasks of a deployment say about why they stopped (ECS keeps stopped tasks
    /// for about an hour): one line per task, at most `limit`.
    pub async fn stopped_tasks(
        &self,
        cluster: &str,
        deployment_id: &str,
        limit: usize,
    ) -> Result<Vec<String>, AwsError> {
        let listed = self
            .client
            .list_tasks()
            .cluster(cluster)
            .started_by(deployment_id)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
            .max_results(limit as i32)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ListTasks", e))?;
        let arns: Vec<String> = listed.task_arns.unwrap_or_default().into_iter().take(limit).collect();
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let described = self
            .client
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(arns))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeTasks", e))?;
        Ok(described.tasks.unwrap_or_default().iter().map(describe_stopped_task).collect())
    }

    /// Points the service at `task_definition`; returns the service as ECS now reports it.
    pub async fn update_service(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
    ) -> Result<ServiceState, AwsError> {
        let output = self
            .client
            .update_service()
            .cluster(cluster)
            .service(service)
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("UpdateService", e))?;
        output
            .service
            .map(ServiceState::from_sdk)
            .ok_or_else(|| AwsError::new("UpdateService", "Empty", "no service returned"))
    }
}

/// `task 1f2e3d4c: Essential container in task exited; api exited 1 (CannotStartContainerError: ...)`
fn describe_stopped_task(task: &aws_sdk_ecs::types::Task) -> String {
    let id = task.task_arn().and_then(|arn| arn.rsplit('/').next()).unwrap_or("?");
    let short: String = id.chars().take(8).collect();
    let mut line = format!("task {short}: {}", task.stopped_reason().unwrap_or("stopped"));
    for container in task.containers() {
        let name = container.name().unwrap_or("?");
        match (container.exit_code(), container.reason()) {
            (Some(code), Some(reason)) => line.push_str(&format!("; {name} exited {code} ({reason})")),
            (Some(code), None) if code != 0 => line.push_str(&format!("; {name} exited {code}")),
            (None, Some(reason)) => line.push_str(&format!("; {name}: {reason}")),
            _ => {}
        }
    }
    line
}

// ---------------------------------------------------------------------------------------------
// SNS
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Sns {
    pub client: aws_sdk_sns::Client,
}

impl Sns {
    pub async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        attributes: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        let mut request = self.client.publish().topic_arn(topic_arn).subject(subject).message(message);
        for (name, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*value)
                .build()
                .map_err(|e| AwsError::new("Publish", "InvalidAttribute", e.to_string()))?;
            request = request.message_attributes(*name, value);
        }
        let output = request.send().await.map_err(|e| AwsError::from_sdk("Publish", e))?;
        Ok(output.message_id.unwrap_or_default())
    }
}
