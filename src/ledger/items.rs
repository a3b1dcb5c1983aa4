//! The items besides the environment records: images, tags, history entries.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::expr::{Arg, Expr};
use crate::types::{AppName, Environment, ImageDigest, ImageTag};
use crate::vocabulary::Outcome;

/// Why an image failed in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// A lifecycle hook execution Conveyor answered `FAILED`: `HOOK#{executionId}`. Only failures
/// are kept and repeated: a repeated invocation of a failed execution fails again for the same
/// reason, while a passed one is checked again (nothing another invoker writes can pass an
/// execution ahead of ECS's own call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFailure {
    pub execution_id: String,
    pub service_deployment_arn: String,
    pub stage: String,
    pub environment: Environment,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// What happened to one image (by digest) of an app, across environments: `IMAGE#{digest}`.
///
/// Written only with updates that commute (add a tag, set one environment's verdict), so stage and
/// prod, each under its own lease, never lose each other's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFacts {
    pub digest: ImageDigest,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    /// Every tag the image was pushed under (that the app deploys).
    #[serde(default, with = "serde_dynamo::string_set")]
    pub tags: Vec<String>,
    /// The most recent tag pushed.
    #[serde(default)]
    pub last_tag: Option<ImageTag>,
    #[serde(default)]
    pub first_pushed_at: Option<DateTime<Utc>>,
    /// The item's other attributes, among them what happened in each environment:
    /// `vetted_{env}` (when the image was vetted there) and `failed_{env}` (a [`Failure`]). Kept
    /// as top-level attributes, which v2 wrote too, so that each is set by an update of its own
    /// that commutes with the others.
    #[serde(flatten, default, skip_serializing)]
    others: BTreeMap<String, serde_json::Value>,
}

impl ImageFacts {
    /// When the image was vetted in `env`.
    pub fn vetted(&self, env: Environment) -> Option<DateTime<Utc>> {
        self.others.get(&format!("vetted_{env}")).and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Why the image failed in `env`, if it did.
    pub fn failed(&self, env: Environment) -> Option<Failure> {
        self.others.get(&format!("failed_{env}")).and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// The newest failure anywhere: such an image is never promotable (without `force`).
    pub fn failure(&self) -> Option<(Environment, Failure)> {
        self.others
            .iter()
            .filter_map(|(key, value)| {
                let env = Environment::parse(key.strip_prefix("failed_")?).ok()?;
                Some((env, serde_json::from_value::<Failure>(value.clone()).ok()?))
            })
            .max_by_key(|(_, failure)| failure.at)
    }
}

/// A change to an image item, as one commutative update.
#[derive(Debug, Clone, Default)]
pub struct ImageUpdate {
    pub digest: Option<ImageDigest>,
    pub image: Option<String>,
    pub repository: Option<String>,
    pub add_tags: Vec<ImageTag>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub vetted: Option<(Environment, DateTime<Utc>)>,
    pub failed: Option<(Environment, Failure)>,
    /// Apply only if the image has exactly this many tags (the writer knows them all).
    pub expect_tags: Option<usize>,
}

impl ImageUpdate {
    pub fn of(digest: &ImageDigest, image: &str) -> Self {
        ImageUpdate { digest: Some(digest.clone()), image: Some(image.to_owned()), ..ImageUpdate::default() }
    }

    /// The update expression (and its names and values); `expires_at` keeps the item for the
    /// retention period after its last change.
    pub(super) fn expression(&self, expires_at: i64) -> Expr {
        let mut expr = Expr::default();
        if let Some(digest) = &self.digest {
            expr.set("digest", AttributeValue::S(digest.to_string()));
        }
        if let Some(image) = &self.image {
            expr.set_if_absent("image", AttributeValue::S(image.clone()));
        }
        if let Some(repository) = &self.repository {
            expr.set_if_absent("repository", AttributeValue::S(repository.clone()));
        }
        if let Some(at) = self.pushed_at {
            expr.set_if_absent("first_pushed_at", AttributeValue::S(at.to_rfc3339()));
        }
        if let Some(tag) = self.add_tags.last() {
            expr.set("last_tag", AttributeValue::S(tag.to_string()));
            expr.add("tags", AttributeValue::Ss(self.add_tags.iter().map(ToString::to_string).collect()));
        }
        if let Some((env, at)) = self.vetted {
            expr.set(&format!("vetted_{env}"), AttributeValue::S(at.to_rfc3339()));
        }
        if let Some((env, failure)) = &self.failed {
            let value = serde_dynamo::to_attribute_value(failure).unwrap_or(AttributeValue::Null(true));
            expr.set(&format!("failed_{env}"), value);
        }
        expr.set("expires_at", AttributeValue::N(expires_at.to_string()));
        expr.add("version", AttributeValue::N("1".into()));
        if let Some(count) = self.expect_tags {
            expr.condition("size({}) = {}", vec![Arg::Name("tags"), Arg::Value(AttributeValue::N(count.to_string()))]);
        }
        expr
    }
}

/// The digest stage most recently verified under a tag: `TAG#{tag}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagItem {
    /// The environment that vetted it (v2 items, written for stage only, have none).
    #[serde(default = "stage")]
    pub environment: Environment,
    pub tag: ImageTag,
    pub digest: ImageDigest,
    pub image: String,
    pub vetted_at: DateTime<Utc>,
}

fn stage() -> Environment {
    Environment::STAGE
}

/// One line of an app's release history: `HIST#{time}#{environment}#{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub app: AppName,
    pub environment: Environment,
    pub event: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<ImageTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<ImageDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_task_definition_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The identity AWS verified for whoever asked (a promotion, a pause, a resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The name the request gave (unverified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Who approved (a promotion) or rejected (an approval request): the identity AWS verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// When the rollout this entry settles started (durations, DORA lead times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// An environment with several targets: each target's revision and state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<crate::rollout::TargetStatus>,
}

impl HistoryEntry {
    pub fn new(app: &AppName, environment: Environment, event: Outcome, at: DateTime<Utc>) -> Self {
        HistoryEntry {
            at,
            app: app.clone(),
            environment,
            event,
            tag: None,
            digest: None,
            rollout_id: None,
            task_definition_arn: None,
            rollback_task_definition_arn: None,
            deployment_id: None,
            reason: None,
            requested_by: None,
            on_behalf_of: None,
            approved_by: None,
            approval_id: None,
            forced: false,
            started_at: None,
            targets: Vec::new(),
        }
    }

    /// Seconds from the rollout's start to this entry, when it settles one.
    pub fn duration_seconds(&self) -> Option<i64> {
        self.started_at.map(|started| (self.at - started).num_seconds())
    }

    /// Ordered by time; the environment's record version and the entry's place in its commit
    /// keep two entries of the same millisecond apart.
    pub(super) fn sort_key(&self, version: u64, seq: usize) -> String {
        format!("HIST#{}#{}#{version:06}.{seq}", self.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"), self.environment)
    }
}

/// An item's attributes, for the reads.
pub type Item = HashMap<String, AttributeValue>;
