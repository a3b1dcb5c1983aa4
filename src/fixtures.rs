//! What the library's unit tests share: one app, its digests and tags, stage met for the first
//! time, its revisions, and the ECS deployments of its service.

use aws_sdk_ecs::types::DeploymentRolloutState;

use crate::aws::{Deployment, DeploymentStatus, ServiceState};
use crate::config::AppConfig;
use crate::record::EnvState;
use crate::rollout::Revision;
use crate::types::{AppName, Environment, ImageDigest, ImageTag};

/// `sha256:` and 64 times `n`.
pub fn digest(n: char) -> ImageDigest {
    ImageDigest::parse(format!("sha256:{}", n.to_string().repeat(64))).expect("a digest")
}

pub fn tag(text: &str) -> ImageTag {
    ImageTag::parse(text).expect("a tag")
}

/// `shop`: repository `shop`, container `api`, services `stage/shop` and `prod/shop`.
pub fn app() -> AppConfig {
    let json = r#"{"repository": "shop", "container": "api",
        "environments": {"stage": {"cluster": "stage", "service": "shop"},
                         "prod": {"cluster": "prod", "service": "shop"}}}"#;
    AppConfig::parse("/conveyor/apps/shop", "shop", json, crate::web::Endpoints::Public).expect("the app config")
}

/// Stage of `shop` met for the first time, running `arn` with image `running`.
pub fn stage_met(arn: &str, running: char) -> EnvState {
    let app = AppName::parse("shop").expect("an app name");
    EnvState::first(
        &app,
        Environment::STAGE,
        "stage",
        "shop",
        Revision { arn: arn.into(), digest: Some(digest(running)) },
    )
}

/// Revisions of `shop`: Conveyor's, in order, and one registered outside it.
pub const TD1: &str = "arn:aws:ecs:us-east-1:1:task-definition/shop:1";
pub const TD2: &str = "arn:aws:ecs:us-east-1:1:task-definition/shop:2";
pub const TD3: &str = "arn:aws:ecs:us-east-1:1:task-definition/shop:3";
pub const TERRAFORM: &str = "arn:aws:ecs:us-east-1:1:task-definition/shop:9";

/// A deployment of `td` wanting 2 tasks, `running` of them running.
pub fn deployment(
    id: &str,
    status: DeploymentStatus,
    state: DeploymentRolloutState,
    td: &str,
    running: i32,
) -> Deployment {
    Deployment {
        id: id.into(),
        status,
        rollout_state: Some(state),
        rollout_state_reason: None,
        task_definition: td.into(),
        desired: 2,
        running,
        failed_tasks: 0,
    }
}

/// Stage's `shop` service with `deployments` (the first one's revision is the service's), 2 tasks
/// wanted, `running` running.
pub fn service(deployments: Vec<Deployment>, running: i32) -> ServiceState {
    ServiceState {
        arn: "arn:aws:ecs:us-east-1:1:service/stage/shop".into(),
        task_definition: deployments[0].task_definition.clone(),
        desired: 2,
        running,
        deployments,
        native_strategy: None,
        current_service_deployment: None,
    }
}

/// A rollout of `v1` (digest `1…`) onto [`TD2`], in progress, from a push.
pub fn rollout() -> crate::rollout::Rollout {
    crate::rollout::Rollout {
        id: "r1".into(),
        tag: tag("v1"),
        tags: vec![tag("v1")],
        digest: digest('1'),
        image: format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop@{}", digest('1')),
        task_definition_arn: TD2.into(),
        previous: Revision { arn: TD1.into(), digest: Some(digest('0')) },
        deployment_id: None,
        event_time: chrono::DateTime::UNIX_EPOCH,
        started_at: chrono::DateTime::UNIX_EPOCH,
        origin: crate::rollout::Origin::Push,
        state: crate::rollout::RolloutState::InProgress,
    }
}
