//! Starting a rollout: put one image (by digest) on one environment's service through a new
//! task-definition revision, and record it. Shared by stage-deploy and promote.

use chrono::{DateTime, Utc};

use crate::aws::ServiceState;
use crate::config::AppConfig;
use crate::error::DeployError;
use crate::image;
use crate::releases::{EnvRecord, Rollout, RolloutState};
use crate::taskdef::{self, ImageSwap, TAG_APP, TAG_IMAGE_DIGEST, TAG_IMAGE_TAG};
use crate::types::{Environment, ImageDigest, ImageTag};
use crate::Conveyor;

/// Where the image URI comes from.
#[derive(Debug, Clone)]
pub enum ImageSource<'a> {
    /// A push: `{account}.dkr.ecr.{region}.amazonaws.com/{repository}@{digest}`, falling back to
    /// the registry of the container's current ECR image when the event lacks account or region.
    Pushed { account: Option<&'a str>, region: Option<&'a str>, repository: &'a str },
    /// Exactly this URI (promote deploys the very image stage verified).
    Exact(&'a str),
}

/// What to roll out.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub tag: &'a ImageTag,
    pub digest: &'a ImageDigest,
    pub source: ImageSource<'a>,
    /// The triggering event's time, for ordering.
    pub event_time: DateTime<Utc>,
}

/// How [`start`] ended.
#[derive(Debug, Clone)]
pub enum Started {
    /// The service's container already runs this digest; nothing changed.
    AlreadyRunning { task_definition_arn: String },
    /// A new revision was registered and the service updated; the record is saved.
    Rolling(Rollout),
    /// Like `Rolling`, but the rollout had happened in an earlier attempt whose record was lost
    /// (the attempt failed after `UpdateService`): the record was written now.
    Recovered(Rollout),
}

/// Rolls `candidate` out to `env` of `app` unless the service already runs it.
///
/// Calls: DescribeServices, DescribeTaskDefinition (with tags), RegisterTaskDefinition,
/// UpdateService, and one PutParameter for the record. If `UpdateService` is refused, the new
/// revision is deregistered again so that a retry starts from a clean slate.
pub async fn start(
    conveyor: &Conveyor,
    app: &AppConfig,
    env: Environment,
    record: Option<EnvRecord>,
    candidate: &Candidate<'_>,
) -> Result<Started, DeployError> {
    let ecs = &conveyor.clients.ecs;
    let target = app.target(env);
    let service = ecs.service(&target.cluster, &target.service).await?;
    let (definition, tags) = ecs.task_definition(&service.task_definition).await?;
    let current_image = app_container_image(app, &definition, &service.task_definition)?;
    let mut record = record.unwrap_or_else(|| {
        EnvRecord::first(&app.name, env, &target.cluster, &target.service, &service.task_definition)
    });

    if image::digest_of(current_image) == Some(candidate.digest.as_str()) {
        let ours =
            tags.iter().any(|t| t.key() == Some(TAG_IMAGE_DIGEST) && t.value() == Some(candidate.digest.as_str()));
        let unrecorded =
            record.current.as_ref().map(|c| c.task_definition_arn.as_str()) != Some(service.task_definition.as_str());
        if ours && unrecorded && candidate.event_time > record.newest_event_time {
            let previous = record
                .current
                .as_ref()
                .map_or(&record.baseline_task_definition_arn, |c| &c.task_definition_arn)
                .clone();
            let rollout = new_rollout(candidate, current_image, &service.task_definition, &previous, &service);
            record.started(rollout.clone());
            conveyor.releases.save_env_record(&record).await?;
            return Ok(Started::Recovered(rollout));
        }
        return Ok(Started::AlreadyRunning { task_definition_arn: service.task_definition });
    }

    let image = match candidate.source {
        ImageSource::Exact(uri) => uri.to_owned(),
        ImageSource::Pushed { account, region, repository } => {
            let registry = match (account, region) {
                (Some(account), Some(region)) => image::ecr_registry(account, region),
                _ => image::ecr_registry_of(current_image)
                    .ok_or_else(|| DeployError::NoRegistry {
                        container: app.container.clone(),
                        image: current_image.to_owned(),
                    })?
                    .to_owned(),
            };
            image::pinned(&registry, repository, candidate.digest)
        }
    };
    let swap = ImageSwap {
        container: &app.container,
        image: image.clone(),
        tags: vec![
            (TAG_APP, app.name.to_string()),
            (TAG_IMAGE_TAG, candidate.tag.to_string()),
            (TAG_IMAGE_DIGEST, candidate.digest.to_string()),
        ],
    };
    let registered = ecs.register(&definition, &tags, &swap).await?;
    let updated = match ecs.update_service(&target.cluster, &target.service, &registered).await {
        Ok(updated) => updated,
        Err(error) => {
            if error.rejected {
                if let Err(cleanup) = ecs.deregister(&registered).await {
                    tracing::warn!(task_definition_arn = %registered, error = %cleanup, "could not deregister the unused revision");
                }
            }
            return Err(error.into());
        }
    };
    let rollout = new_rollout(candidate, &image, &registered, &service.task_definition, &updated);
    record.started(rollout.clone());
    conveyor.releases.save_env_record(&record).await?;
    Ok(Started::Rolling(rollout))
}

/// The image the app's container runs in `definition`, or which containers there are instead.
pub fn app_container_image<'a>(
    app: &AppConfig,
    definition: &'a aws_sdk_ecs::types::TaskDefinition,
    arn: &str,
) -> Result<&'a str, DeployError> {
    taskdef::container_image(definition, &app.container).ok_or_else(|| DeployError::ContainerNotFound {
        container: app.container.clone(),
        task_definition: arn.to_owned(),
        found: taskdef::container_names(definition).join(", "),
        parameter: app.parameter.clone(),
    })
}

fn new_rollout(
    candidate: &Candidate<'_>,
    image: &str,
    task_definition_arn: &str,
    previous_task_definition_arn: &str,
    service: &ServiceState,
) -> Rollout {
    Rollout {
        tag: candidate.tag.clone(),
        digest: candidate.digest.clone(),
        image: image.to_owned(),
        task_definition_arn: task_definition_arn.to_owned(),
        previous_task_definition_arn: previous_task_definition_arn.to_owned(),
        deployment_id: service
            .deployments
            .iter()
            .find(|d| d.is_primary() && d.task_definition == task_definition_arn)
            .map(|d| d.id.clone()),
        event_time: candidate.event_time,
        started_at: Utc::now(),
        state: RolloutState::InProgress,
        reason: None,
        settled_at: None,
    }
}
