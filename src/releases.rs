//! Release records: what Conveyor deployed where, and how it ended. They make every step
//! idempotent and ordered (a late or repeated event is recognised), tell the monitor what to roll
//! back to, and tell promote what stage vetted.
//!
//! Stored as JSON `String` parameters under `{prefix}/releases/` (layout in the README); SSM
//! parameter history is the audit trail.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{AwsError, Ssm};
use crate::types::{AppName, Environment, ImageDigest, ImageTag};

/// How a rollout Conveyor started ended (so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    InProgress,
    Verified,
    /// Failed, and the service is back on the rollback target (by Conveyor or ECS's circuit breaker).
    RolledBack,
    /// Failed, and the rollback was impossible or itself failed: people must act.
    Failed,
    /// Another deployment replaced it before it settled (nothing vetted, nothing rolled back).
    Superseded,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "in_progress",
            RolloutState::Verified => "verified",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Failed => "failed",
            RolloutState::Superseded => "superseded",
        }
    }
}

/// One rollout Conveyor started: an image onto a service, through a new task-definition revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub tag: ImageTag,
    pub digest: ImageDigest,
    /// The digest-pinned image URI written into the task definition.
    pub image: String,
    pub task_definition_arn: String,
    /// What the service ran before this rollout.
    pub previous_task_definition_arn: String,
    /// ECS deployment id (`ecs-svc/...`) created by the `UpdateService`.
    pub deployment_id: Option<String>,
    /// The triggering event's time (the push, or the promote request).
    pub event_time: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub state: RolloutState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<DateTime<Utc>>,
}

/// A release that passed verification in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub tag: ImageTag,
    pub digest: ImageDigest,
    pub image: String,
    pub task_definition_arn: String,
    pub verified_at: DateTime<Utc>,
}

/// Everything Conveyor knows about one app in one environment: `{prefix}/releases/{app}/{env}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvRecord {
    pub app: AppName,
    pub environment: Environment,
    pub cluster: String,
    pub service: String,
    /// The task definition the service ran before Conveyor's first rollout: the rollback target
    /// until something is verified.
    pub baseline_task_definition_arn: String,
    /// The newest event time applied here: anything older is late and skipped.
    pub newest_event_time: DateTime<Utc>,
    pub last_verified: Option<Verified>,
    /// The latest rollout Conveyor started here.
    pub current: Option<Rollout>,
}

/// Where a push stands relative to what an environment already got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Newer than anything applied (or nothing applied yet): deploy.
    Newer,
    /// The very push already applied (same time, same digest): a repeated delivery.
    Repeated,
    /// Older than what was applied: a late delivery that must not roll the service back.
    Late,
}

impl EnvRecord {
    /// A record for an environment Conveyor has not deployed to yet.
    pub fn first(app: &AppName, env: Environment, cluster: &str, service: &str, running: &str) -> Self {
        EnvRecord {
            app: app.clone(),
            environment: env,
            cluster: cluster.to_owned(),
            service: service.to_owned(),
            baseline_task_definition_arn: running.to_owned(),
            newest_event_time: DateTime::<Utc>::MIN_UTC,
            last_verified: None,
            current: None,
        }
    }

    pub fn arrival(&self, time: DateTime<Utc>, digest: &ImageDigest) -> Arrival {
        let same_push = self.current.as_ref().is_some_and(|c| &c.digest == digest && c.event_time == time);
        if time < self.newest_event_time {
            Arrival::Late
        } else if same_push {
            Arrival::Repeated
        } else {
            Arrival::Newer
        }
    }

    /// Records a rollout that has just been started.
    pub fn started(&mut self, rollout: Rollout) {
        self.newest_event_time = self.newest_event_time.max(rollout.event_time);
        self.current = Some(rollout);
    }

    /// The rollout in progress, if any.
    pub fn in_progress(&self) -> Option<&Rollout> {
        self.current.as_ref().filter(|c| c.state == RolloutState::InProgress)
    }

    /// Marks the current rollout verified: it becomes the rollback target.
    pub fn verified(&mut self, now: DateTime<Utc>) {
        if let Some(current) = self.current.as_mut() {
            current.state = RolloutState::Verified;
            current.settled_at = Some(now);
            self.last_verified = Some(Verified {
                tag: current.tag.clone(),
                digest: current.digest.clone(),
                image: current.image.clone(),
                task_definition_arn: current.task_definition_arn.clone(),
                verified_at: now,
            });
        }
    }

    /// Ends the current rollout without verification.
    pub fn settled(&mut self, state: RolloutState, reason: &str, now: DateTime<Utc>) {
        if let Some(current) = self.current.as_mut() {
            current.state = state;
            current.reason = Some(reason.to_owned());
            current.settled_at = Some(now);
        }
    }

    /// The task definition a failed rollout goes back to: the last verified one, else the
    /// baseline the service ran before Conveyor's first rollout.
    pub fn rollback_target(&self) -> &str {
        self.last_verified
            .as_ref()
            .map_or(self.baseline_task_definition_arn.as_str(), |v| v.task_definition_arn.as_str())
    }
}

/// Why an image failed in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// What happened to one image (by digest) of an app: `{prefix}/releases/{app}/images/{hex}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub digest: ImageDigest,
    pub image: String,
    /// Tags it was deployed under, oldest first.
    pub tags: Vec<ImageTag>,
    /// When it was last verified, per environment.
    #[serde(default)]
    pub vetted: std::collections::BTreeMap<Environment, DateTime<Utc>>,
    /// When and why it last failed, per environment.
    #[serde(default)]
    pub failed: std::collections::BTreeMap<Environment, Failure>,
}

impl ImageRecord {
    pub fn new(digest: &ImageDigest, image: &str) -> Self {
        ImageRecord {
            digest: digest.clone(),
            image: image.to_owned(),
            tags: Vec::new(),
            vetted: Default::default(),
            failed: Default::default(),
        }
    }

    pub fn add_tag(&mut self, tag: &ImageTag) {
        if !self.tags.contains(tag) {
            self.tags.push(tag.clone());
        }
    }

    /// The newest failure anywhere at or after `since`: such an image is never promotable.
    pub fn failed_since(&self, since: DateTime<Utc>) -> Option<(Environment, &Failure)> {
        self.failed.iter().filter(|(_, f)| f.at >= since).max_by_key(|(_, f)| f.at).map(|(env, f)| (*env, f))
    }
}

/// The digest stage most recently vetted for a tag: `{prefix}/releases/{app}/tags/{tag}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub tag: ImageTag,
    pub digest: ImageDigest,
    pub image: String,
    pub vetted_at: DateTime<Utc>,
}

/// Reads and writes release records in SSM.
#[derive(Clone)]
pub struct ReleaseStore {
    ssm: Ssm,
    prefix: String,
}

impl ReleaseStore {
    pub fn new(ssm: Ssm, prefix: impl Into<String>) -> Self {
        ReleaseStore { ssm, prefix: prefix.into() }
    }

    pub fn env_parameter(&self, app: &AppName, env: Environment) -> String {
        format!("{}/releases/{app}/{env}", self.prefix)
    }

    pub fn image_parameter(&self, app: &AppName, digest: &ImageDigest) -> String {
        format!("{}/releases/{app}/images/{}", self.prefix, digest.encoded())
    }

    pub fn tags_path(&self, app: &AppName) -> String {
        format!("{}/releases/{app}/tags/", self.prefix)
    }

    pub async fn env_record(&self, app: &AppName, env: Environment) -> Result<Option<EnvRecord>, ReleaseError> {
        self.read(&self.env_parameter(app, env)).await
    }

    /// Both environments' records of an app in one call.
    pub async fn env_records(&self, app: &AppName) -> Result<Vec<EnvRecord>, ReleaseError> {
        let path = format!("{}/releases/{app}/", self.prefix);
        let parameters = self.ssm.parameters_by_path(&path, false).await?;
        let records =
            parameters.into_iter().filter(|p| Environment::ALL.iter().any(|env| p.name == format!("{path}{env}")));
        records.map(|p| parse(&p.name, &p.value)).collect()
    }

    pub async fn save_env_record(&self, record: &EnvRecord) -> Result<(), ReleaseError> {
        let name = self.env_parameter(&record.app, record.environment);
        self.write(&name, record, &format!("Conveyor: {} in {}", record.app, record.environment)).await
    }

    pub async fn image_record(&self, app: &AppName, digest: &ImageDigest) -> Result<Option<ImageRecord>, ReleaseError> {
        self.read(&self.image_parameter(app, digest)).await
    }

    /// Read-modify-write of an image record (callers hold the environment's lease).
    pub async fn update_image(
        &self,
        app: &AppName,
        digest: &ImageDigest,
        image: &str,
        change: impl FnOnce(&mut ImageRecord),
    ) -> Result<ImageRecord, ReleaseError> {
        let mut record = self.image_record(app, digest).await?.unwrap_or_else(|| ImageRecord::new(digest, image));
        change(&mut record);
        self.write(&self.image_parameter(app, digest), &record, &format!("Conveyor: {app} image {}", digest.short()))
            .await?;
        Ok(record)
    }

    pub async fn tag_record(&self, app: &AppName, tag: &ImageTag) -> Result<Option<TagRecord>, ReleaseError> {
        self.read(&format!("{}{tag}", self.tags_path(app))).await
    }

    pub async fn save_tag_record(&self, app: &AppName, record: &TagRecord) -> Result<(), ReleaseError> {
        let name = format!("{}{}", self.tags_path(app), record.tag);
        self.write(&name, record, &format!("Conveyor: {app} tag {} vetted in stage", record.tag)).await
    }

    /// Every tag stage has vetted for an app, most recently vetted first.
    pub async fn vetted_tags(&self, app: &AppName) -> Result<Vec<TagRecord>, ReleaseError> {
        let parameters = self.ssm.parameters_by_path(&self.tags_path(app), false).await?;
        let mut tags =
            parameters.iter().map(|p| parse::<TagRecord>(&p.name, &p.value)).collect::<Result<Vec<_>, _>>()?;
        tags.sort_by_key(|t| std::cmp::Reverse(t.vetted_at));
        Ok(tags)
    }

    async fn read<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ReleaseError> {
        match self.ssm.get(name, false).await? {
            None => Ok(None),
            Some(parameter) => parse(name, &parameter.value).map(Some),
        }
    }

    async fn write<T: Serialize>(&self, name: &str, value: &T, description: &str) -> Result<(), ReleaseError> {
        let json = serde_json::to_string(value)
            .map_err(|e| ReleaseError::Corrupt { parameter: name.to_owned(), problem: e.to_string() })?;
        self.ssm.put(name, &json, description).await?;
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(name: &str, json: &str) -> Result<T, ReleaseError> {
    serde_json::from_str(json).map_err(|e| ReleaseError::Corrupt { parameter: name.to_owned(), problem: e.to_string() })
}

/// Reading or writing a release record failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("release record {parameter} is unreadable ({problem}); fix or delete it")]
    Corrupt { parameter: String, problem: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn digest(n: u8) -> ImageDigest {
        ImageDigest::parse(format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    fn rollout(time: DateTime<Utc>, d: u8) -> Rollout {
        Rollout {
            tag: ImageTag::parse("v1").unwrap(),
            digest: digest(d),
            image: "repo@x".into(),
            task_definition_arn: "td:2".into(),
            previous_task_definition_arn: "td:1".into(),
            deployment_id: Some("ecs-svc/1".into()),
            event_time: time,
            started_at: time,
            state: RolloutState::InProgress,
            reason: None,
            settled_at: None,
        }
    }

    fn record() -> EnvRecord {
        EnvRecord::first(&AppName::parse("shop-api").unwrap(), Environment::Stage, "c", "s", "td:1")
    }

    #[test]
    fn first_push_is_newer() {
        assert_eq!(record().arrival(at(0), &digest(1)), Arrival::Newer);
    }

    #[test]
    fn pushes_are_ordered_by_event_time() {
        let mut record = record();
        record.started(rollout(at(10), 1));
        assert_eq!(record.arrival(at(10), &digest(1)), Arrival::Repeated);
        assert_eq!(record.arrival(at(5), &digest(2)), Arrival::Late);
        assert_eq!(record.arrival(at(5), &digest(1)), Arrival::Late);
        assert_eq!(record.arrival(at(11), &digest(2)), Arrival::Newer);
        // Same second, other image: EventBridge times have second resolution, the later delivery wins.
        assert_eq!(record.arrival(at(10), &digest(2)), Arrival::Newer);
    }

    #[test]
    fn newest_time_never_goes_back() {
        let mut record = record();
        record.started(rollout(at(10), 1));
        record.started(rollout(at(3), 2));
        assert_eq!(record.newest_event_time, at(10));
    }

    #[test]
    fn rollback_goes_to_last_verified_else_baseline() {
        let mut record = record();
        assert_eq!(record.rollback_target(), "td:1");
        record.last_verified = Some(Verified {
            tag: ImageTag::parse("v1").unwrap(),
            digest: digest(1),
            image: "repo@x".into(),
            task_definition_arn: "td:7".into(),
            verified_at: at(0),
        });
        assert_eq!(record.rollback_target(), "td:7");
    }

    #[test]
    fn records_round_trip_as_json() {
        let mut record = record();
        record.started(rollout(at(10), 1));
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.len() < 2048, "records must stay well inside SSM's 4 KB standard tier: {}", json.len());
        assert_eq!(serde_json::from_str::<EnvRecord>(&json).unwrap(), record);
    }
}
