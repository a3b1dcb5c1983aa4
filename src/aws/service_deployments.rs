//! ECS service deployments: what a native (`BLUE_GREEN`, `LINEAR`, `CANARY`) deployment in flight
//! is, stopping one with a rollback (blue still runs: ECS moves the traffic back at once), the
//! pause hook holding one, and why ECS rolled one back.

use aws_sdk_ecs::types::{
    DeploymentLifecycleHookAction, DeploymentLifecycleHookDetail, DeploymentLifecycleHookStatus,
    DeploymentLifecycleHookTargetType, ServiceDeployment, ServiceDeploymentStatus, ServiceRevision,
    StopServiceDeploymentStopType,
};
use chrono::{DateTime, Utc};

use super::{AwsError, Ecs};

/// A native service deployment ECS has not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub arn: String,
    /// The task definition it moves away from (blue), when ECS names exactly one source revision.
    pub source_task_definition: Option<String>,
}

/// One native service deployment as ECS reports it, with the task definitions and images of its
/// revisions: what deploy-monitor judges a native rollout by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeDeployment {
    pub arn: String,
    pub status: ServiceDeploymentStatus,
    /// Where it is (`None` once it ended, or when ECS does not say).
    pub lifecycle_stage: Option<String>,
    /// ECS's words: `rollback.reason`, else `statusReason`.
    pub reason: Option<String>,
    /// `alarms.triggeredAlarmNames`.
    pub triggered_alarms: Vec<String>,
    /// The task definition it deploys (green; `None`: ECS did not describe its target revision).
    pub target_task_definition: Option<String>,
    /// What green runs, as ECS resolved it: `(container, digest)`.
    pub images: Vec<(String, String)>,
    /// A `PAUSE` hook holds it, awaiting action (an approval pending: its own `expiresAt` and
    /// timeout action govern, not Conveyor's rollout timeout).
    pub paused: bool,
    /// When ECS last moved it (a new stage, a hook answered).
    pub updated_at: Option<DateTime<Utc>>,
}

impl NativeDeployment {
    /// `deployment` as ECS described it, with its target revision (`None`: not read).
    fn of(deployment: &ServiceDeployment, target: Option<&ServiceRevision>) -> Self {
        NativeDeployment {
            arn: deployment.service_deployment_arn().unwrap_or_default().to_owned(),
            status: deployment.status().cloned().unwrap_or(ServiceDeploymentStatus::Pending),
            lifecycle_stage: deployment.lifecycle_stage().map(|stage| stage.as_str().to_owned()),
            reason: deployment.rollback().and_then(|r| r.reason()).or(deployment.status_reason()).map(str::to_owned),
            triggered_alarms: deployment.alarms().map(|a| a.triggered_alarm_names().to_vec()).unwrap_or_default(),
            target_task_definition: target.and_then(|r| r.task_definition()).map(str::to_owned),
            images: target.map(images_of).unwrap_or_default(),
            paused: deployment.lifecycle_hook_details().iter().any(awaits_action),
            updated_at: deployment.updated_at().and_then(|at| DateTime::from_timestamp(at.secs(), at.subsec_nanos())),
        }
    }

    /// Why ECS rolled it back, in ECS's words, with the alarms it found in ALARM.
    pub fn rollback_summary(&self) -> String {
        let reason = self.reason.as_deref().unwrap_or("no reason given");
        let failed = if self.status == ServiceDeploymentStatus::RollbackFailed { " (its rollback failed)" } else { "" };
        match &self.triggered_alarms[..] {
            [] => format!("{ECS_ROLLED_BACK}{failed}: {reason}"),
            alarms => format!("{ECS_ROLLED_BACK}{failed}: {reason} (alarms in ALARM: {})", alarms.join(", ")),
        }
    }
}

/// How a reason given by ECS's own rollback begins ([`NativeDeployment::rollback_summary`]).
pub const ECS_ROLLED_BACK: &str = "ECS rolled the deployment back";

/// A pause hook holding a native deployment in flight (`AWAITING_ACTION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaitingHook {
    pub service_deployment_arn: String,
    pub hook_id: String,
    /// When ECS takes the hook's timeout action.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Ecs {
    /// The service's native deployment still in flight (`PENDING` or `IN_PROGRESS`), with the task
    /// definition it started from. Three reads when there is one (list, describe, its source
    /// revision), one when there is none.
    pub async fn native_in_flight(&self, cluster: &str, service: &str) -> Result<Option<InFlight>, AwsError> {
        let Some(deployment) = self.deployment_in_flight(cluster, service).await? else { return Ok(None) };
        let sources: Vec<&str> = deployment.source_service_revisions().iter().filter_map(|r| r.arn()).collect();
        let source_task_definition = match sources[..] {
            [one] => self.revision_task_definition(one).await?,
            _ => None,
        };
        let arn = deployment.service_deployment_arn().unwrap_or_default().to_owned();
        Ok(Some(InFlight { arn, source_task_definition }))
    }

    /// The pause hook awaiting action on the service's native deployment in flight, if any. Two
    /// reads (one when nothing is in flight).
    pub async fn awaiting_pause(&self, cluster: &str, service: &str) -> Result<Option<AwaitingHook>, AwsError> {
        let Some(deployment) = self.deployment_in_flight(cluster, service).await? else { return Ok(None) };
        let arn = deployment.service_deployment_arn().unwrap_or_default();
        Ok(deployment.lifecycle_hook_details().iter().find(|hook| awaits_action(hook)).and_then(|hook| {
            Some(AwaitingHook {
                service_deployment_arn: arn.to_owned(),
                hook_id: hook.hook_id()?.to_owned(),
                expires_at: hook.expires_at().and_then(|at| DateTime::from_timestamp(at.secs(), at.subsec_nanos())),
            })
        }))
    }

    /// Answers the pause hook `hook_id` of deployment `arn`: go on, or roll back.
    pub async fn continue_paused(
        &self,
        arn: &str,
        hook_id: &str,
        action: DeploymentLifecycleHookAction,
    ) -> Result<(), AwsError> {
        self.client
            .continue_service_deployment()
            .service_deployment_arn(arn)
            .hook_id(hook_id)
            .action(action)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ContinueServiceDeployment", e))?;
        Ok(())
    }

    /// The service deployment `arn` with what its target revision runs: two reads (`None`: ECS
    /// has no such deployment).
    pub async fn native_deployment(&self, arn: &str) -> Result<Option<NativeDeployment>, AwsError> {
        let Some(deployment) = self.describe_deployment(arn).await? else { return Ok(None) };
        let target = match deployment.target_service_revision().and_then(|r| r.arn()) {
            Some(revision) => self.service_revision(revision).await?,
            None => None,
        };
        Ok(Some(NativeDeployment::of(&deployment, target.as_ref())))
    }

    /// The service's deployment in flight, described.
    async fn deployment_in_flight(&self, cluster: &str, service: &str) -> Result<Option<ServiceDeployment>, AwsError> {
        let listed = self
            .client
            .list_service_deployments()
            .cluster(cluster)
            .service(service)
            .status(ServiceDeploymentStatus::Pending)
            .status(ServiceDeploymentStatus::InProgress)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ListServiceDeployments", e))?;
        let Some(arn) = listed.service_deployments().iter().find_map(|d| d.service_deployment_arn()) else {
            return Ok(None);
        };
        self.describe_deployment(arn).await
    }

    async fn describe_deployment(&self, arn: &str) -> Result<Option<ServiceDeployment>, AwsError> {
        let described = self
            .client
            .describe_service_deployments()
            .service_deployment_arns(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeServiceDeployments", e))?;
        Ok(described
            .service_deployments
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.service_deployment_arn() == Some(arn)))
    }

    /// The task definition of a service revision (`None`: ECS has no such revision).
    async fn revision_task_definition(&self, revision_arn: &str) -> Result<Option<String>, AwsError> {
        Ok(self.service_revision(revision_arn).await?.and_then(|r| r.task_definition))
    }

    /// A service revision (`None`: ECS has no such revision).
    pub(super) async fn service_revision(&self, revision_arn: &str) -> Result<Option<ServiceRevision>, AwsError> {
        let output = self
            .client
            .describe_service_revisions()
            .service_revision_arns(revision_arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeServiceRevisions", e))?;
        Ok(output
            .service_revisions
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.service_revision_arn() == Some(revision_arn)))
    }

    /// Why ECS rolled back the service's newest rolled-back native deployment, in ECS's words, with
    /// the alarms it found in ALARM (`None`: none was rolled back). Two reads.
    pub async fn rollback_reason(&self, cluster: &str, service: &str) -> Result<Option<String>, AwsError> {
        let listed = self
            .client
            .list_service_deployments()
            .cluster(cluster)
            .service(service)
            .status(ServiceDeploymentStatus::RollbackSuccessful)
            .status(ServiceDeploymentStatus::RollbackFailed)
            .status(ServiceDeploymentStatus::RollbackInProgress)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ListServiceDeployments", e))?;
        let newest = listed
            .service_deployments()
            .iter()
            .filter(|d| d.service_deployment_arn().is_some())
            .max_by_key(|d| d.created_at().map(|at| (at.secs(), at.subsec_nanos())));
        let Some(arn) = newest.and_then(|d| d.service_deployment_arn()) else { return Ok(None) };
        let Some(deployment) = self.describe_deployment(arn).await? else { return Ok(None) };
        Ok(Some(NativeDeployment::of(&deployment, None).rollback_summary()))
    }

    /// Stops the native deployment `arn` and rolls it back to its source revision. A refusal
    /// because it is no longer in flight is success when the service is back on `source` (a
    /// stop applied whose answer was lost, retried by the SDK or by the caller).
    pub async fn roll_back_in_flight(
        &self,
        arn: &str,
        (cluster, service): (&str, &str),
        source: &str,
    ) -> Result<(), AwsError> {
        let stopped = self
            .client
            .stop_service_deployment()
            .service_deployment_arn(arn)
            .stop_type(StopServiceDeploymentStopType::Rollback)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("StopServiceDeployment", e));
        match stopped {
            Ok(_) => Ok(()),
            Err(error) if error.rejected => match self.service(cluster, service).await {
                Ok(now) if now.task_definition == source => Ok(()),
                _ => Err(error),
            },
            Err(error) => Err(error),
        }
    }
}

/// What a service revision runs, as ECS resolved it: `(container, digest)` for each container ECS
/// reports a digest for.
pub(super) fn images_of(revision: &ServiceRevision) -> Vec<(String, String)> {
    revision
        .container_images()
        .iter()
        .filter_map(|image| Some((image.container_name()?.to_owned(), image.image_digest()?.to_owned())))
        .collect()
}

/// A `PAUSE` hook awaiting `ContinueServiceDeployment`.
fn awaits_action(hook: &DeploymentLifecycleHookDetail) -> bool {
    hook.target_type() == Some(&DeploymentLifecycleHookTargetType::Pause)
        && hook.status() == Some(&DeploymentLifecycleHookStatus::AwaitingAction)
}
