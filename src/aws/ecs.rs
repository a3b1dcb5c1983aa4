//! ECS: services, their deployments, task definitions.

use std::time::Duration;

use aws_sdk_ecs::types::{
    DeploymentCircuitBreaker, DeploymentControllerType, DeploymentLifecycleHook, DeploymentRolloutState,
    DeploymentStrategy, LoadBalancer, Tag, TaskDefinition, TaskDefinitionField,
};
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority, RetryReason,
};
use aws_smithy_types::retry::ErrorKind;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::raw::{RawCapture, RequestCheck};
use super::AwsError;
use crate::taskdef::{self, ImageSwap};

#[derive(Clone)]
pub struct Ecs {
    pub client: aws_sdk_ecs::Client,
}

/// The role of a deployment within its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentStatus {
    /// The deployment the service is moving to (or runs).
    Primary,
    /// An older deployment still running tasks.
    Active,
    Inactive,
}

/// What Conveyor needs to know about one ECS deployment of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    pub status: DeploymentStatus,
    /// Absent for non-rolling deployment controllers.
    pub rollout_state: Option<DeploymentRolloutState>,
    pub rollout_state_reason: Option<String>,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub failed_tasks: i32,
}

impl Deployment {
    pub fn is_primary(&self) -> bool {
        self.status == DeploymentStatus::Primary
    }

    pub fn failed(&self) -> bool {
        self.rollout_state == Some(DeploymentRolloutState::Failed)
    }

    pub fn completed(&self) -> bool {
        self.rollout_state == Some(DeploymentRolloutState::Completed)
    }
}

/// What Conveyor needs to know about an ECS service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub arn: String,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub deployments: Vec<Deployment>,
    /// `BLUE_GREEN`, `LINEAR` or `CANARY`: ECS runs the deployment and rolls it back itself
    /// (`None`: a rolling service).
    pub native_strategy: Option<DeploymentStrategy>,
    /// The ARN of the service's newest service deployment (`currentServiceDeployment`): what a
    /// native service is judged by.
    pub current_service_deployment: Option<String>,
}

/// How a service is set up to be deployed: what `conveyor doctor` judges.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSetup {
    pub task_definition: String,
    /// `None`: ECS's own controller (the default).
    pub controller: Option<DeploymentControllerType>,
    /// `None`: a rolling update (the default).
    pub strategy: Option<DeploymentStrategy>,
    pub circuit_breaker: Option<DeploymentCircuitBreaker>,
    pub hooks: Vec<DeploymentLifecycleHook>,
    pub load_balancers: Vec<LoadBalancer>,
}

impl ServiceSetup {
    fn from_sdk(service: aws_sdk_ecs::types::Service) -> Self {
        let configuration = service.deployment_configuration;
        ServiceSetup {
            task_definition: service.task_definition.unwrap_or_default(),
            controller: service.deployment_controller.map(|c| c.r#type),
            strategy: configuration.as_ref().and_then(|c| c.strategy.clone()),
            circuit_breaker: configuration.as_ref().and_then(|c| c.deployment_circuit_breaker.clone()),
            hooks: configuration.and_then(|c| c.lifecycle_hooks).unwrap_or_default(),
            load_balancers: service.load_balancers.unwrap_or_default(),
        }
    }
}

impl ServiceState {
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.is_primary())
    }

    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    fn from_sdk(service: aws_sdk_ecs::types::Service) -> Self {
        let native_strategy = service
            .deployment_configuration
            .as_ref()
            .and_then(|configuration| configuration.strategy.clone())
            .filter(|strategy| *strategy != DeploymentStrategy::Rolling);
        ServiceState {
            native_strategy,
            current_service_deployment: service.current_service_deployment,
            arn: service.service_arn.unwrap_or_default(),
            task_definition: service.task_definition.unwrap_or_default(),
            desired: service.desired_count,
            running: service.running_count,
            deployments: service
                .deployments
                .unwrap_or_default()
                .into_iter()
                .map(|d| Deployment {
                    id: d.id.unwrap_or_default(),
                    status: match d.status.as_deref() {
                        Some("PRIMARY") => DeploymentStatus::Primary,
                        Some("ACTIVE") => DeploymentStatus::Active,
                        _ => DeploymentStatus::Inactive,
                    },
                    rollout_state: d.rollout_state,
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

/// A task definition as ECS returned it: the SDK's view, its tags, and the raw JSON (which keeps
/// members the SDK does not model).
#[derive(Debug, Clone)]
pub struct Described {
    pub definition: TaskDefinition,
    pub tags: Vec<Tag>,
    /// The `taskDefinition` object exactly as ECS sent it.
    pub raw: Option<Value>,
}

impl Described {
    pub fn arn(&self) -> &str {
        self.definition.task_definition_arn().unwrap_or_default()
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
    }

    fn from_parts(definition: Option<TaskDefinition>, tags: Option<Vec<Tag>>, raw: Option<Value>) -> Option<Self> {
        Some(Described {
            definition: definition?,
            tags: tags.unwrap_or_default(),
            raw: raw.and_then(|mut body| body.get_mut("taskDefinition").map(Value::take)),
        })
    }
}

/// Why a registration did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Unmodeled(#[from] Unmodeled),
}

/// The definition has members this build's SDK does not model: a copy would lose them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task definition {arn} has members this Conveyor build does not know ({}): registering a copy would silently drop them; upgrade Conveyor (its AWS SDK) before deploying this service", .members.join(", "))]
pub struct Unmodeled {
    pub arn: String,
    pub members: Vec<String>,
}

/// Lets the SDK retry a throttled call (it was refused, so nothing happened), but no other
/// failure: after a 5xx or a lost connection the call may have been applied, and blindly sending
/// `RegisterTaskDefinition` again would register a second revision.
/// Kept hand-written: the SDK's classifiers retry throttling together with 5xx and transient errors.
#[derive(Debug)]
struct ThrottlingOnly;

impl ClassifyRetry for ThrottlingOnly {
    fn classify_retry(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::InterceptorContext,
    ) -> RetryAction {
        RetryAction::NoActionIndicated
    }

    fn classify_retry_v2(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::InterceptorContext,
        previous: &RetryAction,
    ) -> RetryAction {
        match previous {
            RetryAction::RetryIndicated(RetryReason::RetryableError { kind: ErrorKind::ThrottlingError, .. }) => {
                RetryAction::NoActionIndicated
            }
            RetryAction::RetryIndicated(_) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "conveyor::ThrottlingOnly"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// A registration whose outcome was unknown, looked for and not found, is tried again: four
/// attempts in all, 300 ms apart doubling.
fn register_retries() -> ExponentialBuilder {
    ExponentialBuilder::new().with_min_delay(Duration::from_millis(300)).with_factor(2.0).with_max_times(3)
}

/// How an attempt of [`Ecs::register`] failed.
#[derive(Debug, thiserror::Error)]
enum Registration {
    /// Not applied (looked for, not found): worth another attempt.
    #[error(transparent)]
    NotApplied(AwsError),
    #[error(transparent)]
    Failed(RegisterError),
}

impl Registration {
    fn into_error(self) -> RegisterError {
        match self {
            Registration::NotApplied(error) => error.into(),
            Registration::Failed(error) => error,
        }
    }
}

impl Ecs {
    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        Ecs { client }
    }

    /// The service, which must exist and be `ACTIVE` (`ServiceNotFound` otherwise, not retryable).
    pub async fn service(&self, cluster: &str, service: &str) -> Result<ServiceState, AwsError> {
        self.described_service(cluster, service).await.map(ServiceState::from_sdk)
    }

    /// How the service is set up to be deployed (`conveyor doctor`).
    pub async fn setup(&self, cluster: &str, service: &str) -> Result<ServiceSetup, AwsError> {
        self.described_service(cluster, service).await.map(ServiceSetup::from_sdk)
    }

    async fn described_service(&self, cluster: &str, service: &str) -> Result<aws_sdk_ecs::types::Service, AwsError> {
        let output = self
            .client
            .describe_services()
            .cluster(cluster)
            .services(service)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeServices", e))?;
        output.services.unwrap_or_default().into_iter().find(|s| s.status() == Some("ACTIVE")).ok_or_else(|| {
            AwsError::new(
                "DescribeServices",
                "ServiceNotFound",
                format!("no ACTIVE service {service} in cluster {cluster}"),
            )
        })
    }

    /// The images a service revision runs, as ECS resolved them: `(container, digest)` for each
    /// container ECS reports a digest for (`ServiceRevisionNotFound` if ECS has no such revision).
    pub async fn revision_images(&self, revision_arn: &str) -> Result<Vec<(String, String)>, AwsError> {
        let revision = self.service_revision(revision_arn).await?.ok_or_else(|| {
            AwsError::new(
                "DescribeServiceRevisions",
                "ServiceRevisionNotFound",
                format!("ECS has no service revision {revision_arn}"),
            )
        })?;
        Ok(super::service_deployments::images_of(&revision))
    }

    /// A task definition (ARN, `family:revision` or family) with its tags and raw JSON.
    pub async fn task_definition(&self, arn: &str) -> Result<Described, AwsError> {
        let raw = RawCapture::default();
        let output = self
            .client
            .describe_task_definition()
            .task_definition(arn)
            .include(TaskDefinitionField::Tags)
            .customize()
            .interceptor(raw.clone())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeTaskDefinition", e))?;
        Described::from_parts(output.task_definition, output.tags, raw.take()).ok_or_else(|| {
            AwsError::new("DescribeTaskDefinition", "Empty", format!("no task definition returned for {arn}"))
        })
    }

    /// Registers `source` with `swap` applied, at most once.
    ///
    /// Refused before anything is sent when `source` has members the SDK does not model. A
    /// throttled call is retried by the SDK; after any other failure the call may have been
    /// applied, so the family's newest revisions are looked at first and one carrying `swap`'s
    /// tags, registered since this call began, is taken as this registration.
    pub async fn register(&self, source: &Described, swap: &ImageSwap<'_>) -> Result<Described, RegisterError> {
        let started = Utc::now() - chrono::Duration::seconds(5);
        (|| self.register_once(source, swap, started))
            .retry(register_retries())
            .sleep(tokio::time::sleep)
            .when(|failed| matches!(failed, Registration::NotApplied(_)))
            .notify(|failed, pause| {
                tracing::warn!(error = %failed, pause_ms = pause.as_millis() as u64,
                    "registration failed and was not applied: trying again");
            })
            .await
            .map_err(Registration::into_error)
    }

    /// One attempt of [`Ecs::register`].
    async fn register_once(
        &self,
        source: &Described,
        swap: &ImageSwap<'_>,
        started: DateTime<Utc>,
    ) -> Result<Described, Registration> {
        let request =
            taskdef::registration(self.client.register_task_definition(), &source.definition, &source.tags, swap);
        let request_tags = request.get_tags().clone();
        let Some(described) = source.raw.clone() else {
            // Without what ECS sent, nothing proves the copy complete: refuse rather than guess.
            return Err(Registration::Failed(
                Unmodeled {
                    arn: source.arn().to_owned(),
                    members: vec!["(its definition as ECS sent it could not be read)".into()],
                }
                .into(),
            ));
        };
        let check = RequestCheck::new(move |body: &Value| {
            let members = taskdef::unmodeled_members(&described, body);
            (!members.is_empty()).then(|| members.join(", "))
        });
        let raw = RawCapture::default();
        let sent = request
            .customize()
            .config_override(aws_sdk_ecs::config::Builder::default().retry_classifier(ThrottlingOnly))
            .interceptor(check.clone())
            .interceptor(raw.clone())
            .send()
            .await;
        let error = match sent {
            Ok(output) => {
                // The tags are the ones just sent (some endpoints leave them out of the answer).
                let tags = output.tags.filter(|tags| !tags.is_empty()).or_else(|| request_tags.clone());
                return Described::from_parts(output.task_definition, tags, raw.take()).ok_or_else(|| {
                    Registration::Failed(
                        AwsError::new("RegisterTaskDefinition", "Empty", "no task definition returned").into(),
                    )
                });
            }
            Err(_) if check.refusal().is_some() => {
                let members = check.refusal().unwrap_or_default().split(", ").map(str::to_owned).collect();
                return Err(Registration::Failed(Unmodeled { arn: source.arn().to_owned(), members }.into()));
            }
            Err(error) => AwsError::from_sdk("RegisterTaskDefinition", error),
        };
        if error.rejected {
            return Err(Registration::Failed(error.into()));
        }
        let family = source.definition.family().unwrap_or_default();
        match self.find_registered(family, swap, started).await {
            Ok(Some(found)) => {
                tracing::warn!(task_definition_arn = found.arn(), error = %error,
                    "registration answered with an error but was applied: using that revision");
                Ok(found)
            }
            Ok(None) => Err(Registration::NotApplied(error)),
            Err(error) => Err(Registration::Failed(error.into())),
        }
    }

    /// The newest revisions of `family` (at most three), looking for one registered since
    /// `since` that carries every one of `swap`'s tags.
    async fn find_registered(
        &self,
        family: &str,
        swap: &ImageSwap<'_>,
        since: DateTime<Utc>,
    ) -> Result<Option<Described>, AwsError> {
        let latest = match self.task_definition(family).await {
            Ok(latest) => latest,
            Err(error) if error.rejected => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut candidate = Some(latest);
        for _ in 0..3 {
            let Some(revision) = candidate.take() else { break };
            let registered_at = revision
                .definition
                .registered_at()
                .and_then(|at| DateTime::from_timestamp(at.secs(), at.subsec_nanos()));
            if registered_at.is_some_and(|at| at < since) {
                break;
            }
            if swap.tags.iter().all(|(key, value)| revision.tag(key) == Some(value.as_str())) {
                return Ok(Some(revision));
            }
            let number = revision.definition.revision();
            if number > 1 {
                candidate = self.task_definition(&format!("{family}:{}", number - 1)).await.ok();
            }
        }
        Ok(None)
    }

    /// The ACTIVE revisions of `family`, newest first: one page (ECS's largest, 100), which is
    /// as far back as a sweep looks.
    pub async fn active_revisions(&self, family: &str) -> Result<Vec<String>, AwsError> {
        let output = self
            .client
            .list_task_definitions()
            .family_prefix(family)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .sort(aws_sdk_ecs::types::SortOrder::Desc)
            .max_results(100)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ListTaskDefinitions", e))?;
        // The prefix also matches longer families (`shop-stage` of `shop-stage-2`).
        let ours = |arn: &String| crate::taskdef::family_revision(arn).is_some_and(|(f, _)| f == family);
        let mut arns: Vec<String> = output.task_definition_arns.unwrap_or_default().into_iter().filter(ours).collect();
        // Newest first by the revision number itself, whatever order the page came in.
        arns.sort_by_key(|arn| std::cmp::Reverse(crate::taskdef::family_revision(arn).map(|(_, revision)| revision)));
        Ok(arns)
    }

    /// Removes a revision that no service runs (it becomes INACTIVE).
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

    /// Points the service at `task_definition`; returns the service as ECS now reports it. Safe to
    /// repeat: ECS starts no second deployment for the task definition the service already has.
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

/// `true` when ECS refused `UpdateService` because the revision was deregistered.
pub fn is_inactive_revision(error: &AwsError) -> bool {
    error.rejected && error.message.to_ascii_lowercase().contains("inactive")
}
