//! promote: deploy the very digest stage vetted to prod, and refuse anything else.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, instrument, warn};

use crate::config::AppConfig;
use crate::error::{DeployError, Error};
use crate::notify::{Notification, Outcome, Severity};
use crate::releases::{ImageRecord, ReleaseError, ReleaseStore};
use crate::rollout::{self, Candidate, ImageSource, Started};
use crate::types::{AppName, Environment, ImageDigest, ImageTag};
use crate::Conveyor;

/// How many promotable tags a refusal lists.
const SUGGESTIONS: usize = 5;

/// The invoke payload, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    app: String,
    tag: Option<String>,
    digest: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// A valid promote request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub app: AppName,
    pub image: ImageRef,
    pub dry_run: bool,
}

/// What to promote: a tag (resolved to the digest stage vetted for it) or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Tag(ImageTag),
    Digest(ImageDigest),
}

/// The answer (the contract's response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    pub app: String,
    pub environment: Environment,
    pub tag: String,
    pub digest: String,
    pub task_definition_arn: String,
    /// `deploying`, `already_deployed` or `dry_run`.
    pub status: &'static str,
    /// Dry run: the image prod's container runs now, and the one it would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

pub fn parse_request(payload: Value) -> Result<Request, Error> {
    let invalid = |message: String| Error::InvalidRequest(message);
    if !payload.is_object() {
        return Err(invalid(format!(
            r#"expected a JSON object such as {{"app": "shop-api", "tag": "v1.4.2"}}, got {payload}"#
        )));
    }
    let raw: RawRequest = serde_json::from_value(payload).map_err(|e| invalid(format!("{e}")))?;
    let app = AppName::parse(raw.app).map_err(|e| invalid(e.to_string()))?;
    let image = match (raw.tag, raw.digest) {
        (Some(tag), None) => ImageRef::Tag(ImageTag::parse(tag).map_err(|e| invalid(e.to_string()))?),
        (None, Some(digest)) => ImageRef::Digest(ImageDigest::parse(digest).map_err(|e| invalid(e.to_string()))?),
        (Some(_), Some(_)) => return Err(invalid("give either `tag` or `digest`, not both".into())),
        (None, None) => return Err(invalid("give the `tag` (or `digest`) to promote".into())),
    };
    Ok(Request { app, image, dry_run: raw.dry_run })
}

/// Handles one invocation.
pub async fn handle(conveyor: &Conveyor, payload: Value) -> Result<Response, Error> {
    let request = parse_request(payload).inspect_err(|e| warn!(error = %e, "promote refused"))?;
    // Boxed, like every handler's work (see `stage::handle`).
    Box::pin(promote(conveyor, &request))
        .await
        .inspect_err(|e| warn!(app = %request.app, error_type = e.error_type(), error = %e, "promote refused"))
}

#[instrument(skip_all, fields(app = %request.app, dry_run = request.dry_run))]
async fn promote(conveyor: &Conveyor, request: &Request) -> Result<Response, Error> {
    let config = conveyor.config.get(&conveyor.clients.ssm).await?;
    let Some(app) = config.app(&request.app) else {
        let parameter = format!("{}/apps/{}", conveyor.prefix, request.app);
        if let Some(invalid) = config.invalid.iter().find(|e| e.parameter == parameter) {
            return Err(invalid.clone().into());
        }
        let known: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        return Err(Error::UnknownApp(format!(
            "no app {} (no parameter {parameter}); configured apps: {}",
            request.app,
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )));
    };
    let (tag, image) = resolve(&conveyor.releases, app, &request.image).await?;
    let digest = image.digest.clone();
    info!(tag = %tag, digest = %digest, "vetted image resolved");

    if request.dry_run {
        return dry_run(conveyor, app, &tag, &image).await.map_err(|e| deploy_error(app, e));
    }
    let started = conveyor
        .leased(&app.name, Environment::Prod, "promote", async || {
            let record = conveyor.releases.env_record(&app.name, Environment::Prod).await?;
            let candidate = Candidate {
                tag: &tag,
                digest: &digest,
                source: ImageSource::Exact(&image.image),
                event_time: Utc::now(),
            };
            rollout::start(conveyor, app, Environment::Prod, record, &candidate).await
        })
        .await;
    let response = |task_definition_arn: String, status| Response {
        app: app.name.to_string(),
        environment: Environment::Prod,
        tag: tag.to_string(),
        digest: digest.to_string(),
        task_definition_arn,
        status,
        current_image: None,
        image: None,
    };
    match started.map_err(|e| deploy_error(app, e))? {
        Started::AlreadyRunning { task_definition_arn } => {
            info!(tag = %tag, digest = %digest, task_definition_arn = %task_definition_arn, "prod already runs this digest");
            Ok(response(task_definition_arn, "already_deployed"))
        }
        Started::Rolling(rollout) | Started::Recovered(rollout) => {
            info!(environment = "prod", tag = %tag, digest = %digest, task_definition_arn = %rollout.task_definition_arn,
                deployment_id = rollout.deployment_id.as_deref(), "promotion started");
            let notification =
                Notification::of_rollout(app, Environment::Prod, &rollout, Outcome::Promoted, Severity::Info);
            conveyor.notifier.send(&notification, app.slack_webhook_parameter.as_deref()).await;
            Ok(response(rollout.task_definition_arn, "deploying"))
        }
    }
}

/// The tag and image record of what to promote, if stage vetted it and it has not failed since.
async fn resolve(
    releases: &ReleaseStore,
    app: &AppConfig,
    wanted: &ImageRef,
) -> Result<(ImageTag, ImageRecord), Error> {
    let aws = |e: ReleaseError| deploy_error(app, e.into());
    let (tag, digest) = match wanted {
        ImageRef::Tag(tag) => match releases.tag_record(&app.name, tag).await.map_err(aws)? {
            Some(record) => (Some(tag.clone()), record.digest),
            None => {
                let hint = promotable(releases, app).await?;
                return Err(Error::NotVetted(format!("{} {tag} was never vetted in stage. {hint}", app.name)));
            }
        },
        ImageRef::Digest(digest) => (None, digest.clone()),
    };
    let image = releases.image_record(&app.name, &digest).await.map_err(aws)?;
    let Some((image, vetted_at)) = image.and_then(|i| i.vetted.get(&Environment::Stage).copied().map(|at| (i, at)))
    else {
        let hint = promotable(releases, app).await?;
        return Err(Error::NotVetted(format!("{} {digest} was never vetted in stage. {hint}", app.name)));
    };
    if let Some((env, failure)) = image.failed_since(vetted_at) {
        let hint = promotable(releases, app).await?;
        return Err(Error::NotVetted(format!(
            "{} {} ({digest}) failed in {env} at {} after stage vetted it: {}. It can never be promoted. {hint}",
            app.name,
            tag.as_ref().or(image.tags.last()).map_or("image".to_owned(), ToString::to_string),
            failure.at.to_rfc3339(),
            failure.reason
        )));
    }
    let tag = tag
        .or_else(|| image.tags.last().cloned())
        .ok_or_else(|| Error::NotVetted(format!("{} {digest} has no tag on record; promote it by tag", app.name)))?;
    Ok((tag, image))
}

/// "Promotable tags, newest first: v1.4.1 (sha256:...), ..." — what to do instead.
async fn promotable(releases: &ReleaseStore, app: &AppConfig) -> Result<String, Error> {
    let tags = releases.vetted_tags(&app.name).await.map_err(|e| deploy_error(app, e.into()))?;
    let mut listed = Vec::new();
    for tag in tags {
        if listed.len() == SUGGESTIONS {
            break;
        }
        let image = releases.image_record(&app.name, &tag.digest).await.map_err(|e| deploy_error(app, e.into()))?;
        if image.is_some_and(|i| i.failed_since(tag.vetted_at).is_none()) {
            listed.push(format!(
                "{} ({}, vetted {})",
                tag.tag,
                tag.digest.short(),
                tag.vetted_at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
    }
    Ok(if listed.is_empty() {
        "No tag is promotable yet: push one and let stage verify it.".to_owned()
    } else {
        format!("Promotable tags, newest first: {}.", listed.join(", "))
    })
}

async fn dry_run(
    conveyor: &Conveyor,
    app: &AppConfig,
    tag: &ImageTag,
    image: &ImageRecord,
) -> Result<Response, DeployError> {
    let target = app.target(Environment::Prod);
    let ecs = &conveyor.clients.ecs;
    let service = ecs.service(&target.cluster, &target.service).await?;
    let (definition, _) = ecs.task_definition(&service.task_definition).await?;
    let current = rollout::app_container_image(app, &definition, &service.task_definition)?;
    let already = crate::image::digest_of(current) == Some(image.digest.as_str());
    info!(environment = "prod", tag = %tag, digest = %image.digest, current_image = %current, already_deployed = already, "dry run");
    Ok(Response {
        app: app.name.to_string(),
        environment: Environment::Prod,
        tag: tag.to_string(),
        digest: image.digest.to_string(),
        task_definition_arn: service.task_definition.clone(),
        status: if already { "already_deployed" } else { "dry_run" },
        current_image: Some(current.to_owned()),
        image: Some(image.image.clone()),
    })
}

/// A deployment error in promote's vocabulary: configuration problems are `ConfigError`,
/// everything else (AWS, a busy lease, unreadable records) `AwsError`.
fn deploy_error(app: &AppConfig, error: DeployError) -> Error {
    match error {
        DeployError::ContainerNotFound { .. } | DeployError::NoRegistry { .. } => {
            Error::Config(crate::config::ConfigError {
                parameter: app.parameter.clone(),
                key: "container".into(),
                problem: error.to_string(),
            })
        }
        DeployError::Aws(aws) => Error::Aws(aws),
        other => Error::Aws(crate::aws::AwsError::new("Promote", "Unavailable", other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn refused(payload: Value, needle: &str) {
        match parse_request(payload) {
            Err(Error::InvalidRequest(message)) => assert!(message.contains(needle), "{message}"),
            other => panic!("expected InvalidRequest containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn requests_parse() {
        let request = parse_request(json!({"app": "shop-api", "tag": "v1.4.2"})).unwrap();
        assert_eq!(request.image, ImageRef::Tag(ImageTag::parse("v1.4.2").unwrap()));
        assert!(!request.dry_run);
        let digest = format!("sha256:{}", "a".repeat(64));
        let request = parse_request(json!({"app": "shop-api", "digest": digest, "dry_run": true})).unwrap();
        assert_eq!(request.image, ImageRef::Digest(ImageDigest::parse(digest).unwrap()));
        assert!(request.dry_run);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        refused(json!("shop-api"), "JSON object");
        refused(json!({"app": "shop-api", "tag": "v1", "force": true}), "unknown field `force`");
        refused(json!({"app": "shop-api", "tag": "v1", "digest": "sha256:x"}), "not both");
        refused(json!({"app": "shop-api"}), "give the `tag`");
        refused(json!({"app": "shop-api", "digest": "v1.4.2"}), "image digest");
        refused(json!({"app": "Shop API", "tag": "v1"}), "app name");
        refused(json!({"tag": "v1"}), "missing field `app`");
        refused(json!({"app": "shop-api", "tag": "v1", "dry_run": "yes"}), "invalid type");
    }
}
