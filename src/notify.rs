//! Notifications: one SNS `Publish` per event worth telling people about, in the AWS Chatbot
//! custom-notification format so a Chatbot-subscribed topic shows it in Slack as is.

use std::fmt;

use serde::Serialize;
use serde_json::{json, Map, Value};

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::aws::{AwsError, Sns, Ssm};
use crate::config::AppConfig;
use crate::releases::Rollout;
use crate::slack;
use crate::types::{AppName, Environment, ImageDigest, ImageTag};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Deploying,
    Verified,
    RolledBack,
    Failed,
    Promoted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deploying => "deploying",
            Outcome::Verified => "verified",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
            Outcome::Promoted => "promoted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts of one notification; what does not apply stays `None` and is omitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub app: AppName,
    pub environment: Environment,
    pub outcome: Outcome,
    pub severity: Severity,
    pub tag: Option<ImageTag>,
    pub digest: Option<ImageDigest>,
    pub cluster: Option<String>,
    pub service: Option<String>,
    pub task_definition_arn: Option<String>,
    pub deployment_id: Option<String>,
    pub reason: Option<String>,
    pub rollback_task_definition_arn: Option<String>,
    /// What ECS says about the failure (stopped tasks, exit codes): shown to people, not in
    /// `additionalContext`.
    pub diagnostics: Vec<String>,
}

impl Notification {
    pub fn new(app: &AppName, environment: Environment, outcome: Outcome, severity: Severity) -> Self {
        Notification {
            app: app.clone(),
            environment,
            outcome,
            severity,
            tag: None,
            digest: None,
            cluster: None,
            service: None,
            task_definition_arn: None,
            deployment_id: None,
            reason: None,
            rollback_task_definition_arn: None,
            diagnostics: Vec::new(),
        }
    }

    /// The facts of a rollout of `app` in `env`.
    pub fn of_rollout(
        app: &AppConfig,
        env: Environment,
        rollout: &Rollout,
        outcome: Outcome,
        severity: Severity,
    ) -> Self {
        let target = app.target(env);
        let mut notification = Notification::new(&app.name, env, outcome, severity);
        notification.tag = Some(rollout.tag.clone());
        notification.digest = Some(rollout.digest.clone());
        notification.cluster = Some(target.cluster.clone());
        notification.service = Some(target.service.clone());
        notification.task_definition_arn = Some(rollout.task_definition_arn.clone());
        notification.deployment_id = rollout.deployment_id.clone();
        notification
    }

    /// `[conveyor] {app} {environment}: {outcome} {tag}`, at most 100 characters (SNS's limit).
    pub fn subject(&self) -> String {
        let what =
            self.tag.as_ref().map(ToString::to_string).or_else(|| self.digest.as_ref().map(|d| d.short().to_owned()));
        let subject =
            format!("[conveyor] {} {}: {} {}", self.app, self.environment, self.outcome, what.as_deref().unwrap_or(""))
                .trim_end()
                .to_owned();
        subject.chars().filter(|c| !c.is_control()).take(100).collect()
    }

    pub fn title(&self) -> String {
        let icon = match self.severity {
            Severity::Info => ":large_blue_circle:",
            Severity::Warning => ":warning:",
            Severity::Error => ":red_circle:",
            Severity::Critical => ":rotating_light:",
        };
        format!("{icon} {}", self.headline())
    }

    /// `shop-api prod: rolled back v1.4.2`
    pub fn headline(&self) -> String {
        let headline = match self.outcome {
            Outcome::Deploying => "deploying",
            Outcome::Verified => "verified",
            Outcome::RolledBack => "rolled back",
            Outcome::Failed => "FAILED",
            Outcome::Promoted => "promoted",
        };
        let what = self.tag.as_ref().map(|t| format!(" {t}")).unwrap_or_default();
        format!("{} {}: {headline}{what}", self.app, self.environment)
    }

    /// Markdown body: every fact on its own line, so Slack and email both read well.
    pub fn description(&self) -> String {
        let mut lines = Vec::new();
        if let Some(reason) = &self.reason {
            lines.push(format!("*Reason:* {reason}"));
        }
        let facts: [(&str, Option<String>); 6] = [
            ("Image", self.digest.as_ref().map(|d| format!("`{}`", d))),
            ("Service", self.cluster.as_ref().zip(self.service.as_ref()).map(|(c, s)| format!("`{c}/{s}`"))),
            ("Task definition", self.task_definition_arn.as_ref().map(|t| format!("`{}`", short_arn(t)))),
            ("Rolled back to", self.rollback_task_definition_arn.as_ref().map(|t| format!("`{}`", short_arn(t)))),
            ("Deployment", self.deployment_id.as_ref().map(|d| format!("`{d}`"))),
            ("Severity", Some(self.severity.to_string())),
        ];
        lines.extend(facts.into_iter().filter_map(|(name, value)| value.map(|v| format!("*{name}:* {v}"))));
        lines.extend(self.diagnostics.iter().map(|d| format!("• {d}")));
        lines.join("\n")
    }

    /// `additionalContext`: every fact that applies, as strings.
    pub fn context(&self) -> Map<String, Value> {
        let facts = [
            ("app", Some(self.app.to_string())),
            ("environment", Some(self.environment.to_string())),
            ("outcome", Some(self.outcome.to_string())),
            ("severity", Some(self.severity.to_string())),
            ("tag", self.tag.as_ref().map(ToString::to_string)),
            ("digest", self.digest.as_ref().map(ToString::to_string)),
            ("cluster", self.cluster.clone()),
            ("service", self.service.clone()),
            ("task_definition_arn", self.task_definition_arn.clone()),
            ("deployment_id", self.deployment_id.clone()),
            ("reason", self.reason.clone()),
            ("rollback_task_definition_arn", self.rollback_task_definition_arn.clone()),
        ];
        facts.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_owned(), Value::String(v)))).collect()
    }

    /// The AWS Chatbot custom-notification document.
    pub fn chatbot_message(&self) -> Value {
        let thread = match &self.digest {
            Some(digest) => format!("{}/{}", self.app, digest),
            None => self.app.to_string(),
        };
        json!({
            "version": "1.0",
            "source": "custom",
            "content": { "textType": "client-markdown", "title": self.title(), "description": self.description() },
            "metadata": { "threadId": thread, "eventType": self.outcome.as_str(), "additionalContext": self.context() },
        })
    }
}

/// `arn:aws:ecs:...:task-definition/shop-api:7` => `shop-api:7`.
fn short_arn(arn: &str) -> &str {
    arn.rsplit_once('/').map_or(arn, |(_, name)| name)
}

/// Publishes notifications to the configured topic (or only logs them when there is none), and
/// posts them to the app's Slack webhook when it has one.
#[derive(Clone)]
pub struct Notifier {
    sns: Sns,
    ssm: Ssm,
    http: reqwest::Client,
    topic_arn: Option<String>,
    /// Webhook URLs by parameter name, read once per cold start (they are secrets: never logged).
    webhooks: Arc<Mutex<HashMap<String, String>>>,
}

impl Notifier {
    pub fn new(sns: Sns, ssm: Ssm, http: reqwest::Client, topic_arn: Option<String>) -> Self {
        if topic_arn.is_none() {
            tracing::warn!("CONVEYOR_TOPIC_ARN is not set: notifications are only logged");
        }
        Notifier { sns, ssm, http, topic_arn, webhooks: Arc::default() }
    }

    /// Sends one notification. Failures are logged, never returned: a deployment that happened
    /// is never undone, or retried, because its notification could not be delivered.
    pub async fn send(&self, notification: &Notification, slack_webhook_parameter: Option<&str>) {
        tracing::info!(
            app = %notification.app,
            environment = %notification.environment,
            outcome = %notification.outcome,
            severity = %notification.severity,
            tag = notification.tag.as_ref().map(tracing::field::display),
            digest = notification.digest.as_ref().map(tracing::field::display),
            deployment_id = notification.deployment_id.as_deref(),
            reason = notification.reason.as_deref(),
            "notification"
        );
        if let Err(error) = self.publish(notification).await {
            tracing::error!(app = %notification.app, environment = %notification.environment, error = %error, "SNS publish failed");
        }
        if let Some(parameter) = slack_webhook_parameter {
            if let Err(error) = self.post_to_slack(notification, parameter).await {
                tracing::warn!(app = %notification.app, environment = %notification.environment,
                    webhook_parameter = parameter, error = %error, "Slack post failed");
            }
        }
    }

    async fn publish(&self, notification: &Notification) -> Result<(), AwsError> {
        let Some(topic) = &self.topic_arn else { return Ok(()) };
        let attributes = [
            ("app", notification.app.as_str()),
            ("environment", notification.environment.as_str()),
            ("outcome", notification.outcome.as_str()),
            ("severity", notification.severity.as_str()),
        ];
        self.sns
            .publish(topic, &notification.subject(), &notification.chatbot_message().to_string(), &attributes)
            .await
            .map(drop)
    }

    async fn post_to_slack(&self, notification: &Notification, parameter: &str) -> Result<(), String> {
        let cached = self.webhooks.lock().await.get(parameter).cloned();
        let url = match cached {
            Some(url) => url,
            None => {
                let secret = self.ssm.get(parameter, true).await.map_err(|e| e.to_string())?;
                let url = secret.map(|p| p.value).ok_or_else(|| format!("parameter {parameter} does not exist"))?;
                self.webhooks.lock().await.insert(parameter.to_owned(), url.clone());
                url
            }
        };
        slack::post(&self.http, &url, &slack::message(notification)).await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploying() -> Notification {
        let mut n = Notification::new(
            &AppName::parse("shop-api").unwrap(),
            Environment::Stage,
            Outcome::Deploying,
            Severity::Info,
        );
        n.tag = Some(ImageTag::parse("v1.0.0").unwrap());
        n.digest = Some(ImageDigest::parse(format!("sha256:{}", "a".repeat(64))).unwrap());
        n.cluster = Some("stage-cluster".into());
        n.service = Some("shop-api".into());
        n.task_definition_arn = Some("arn:aws:ecs:us-east-1:123456789012:task-definition/shop-api:8".into());
        n.deployment_id = Some("ecs-svc/42".into());
        n
    }

    #[test]
    fn subject_follows_the_contract() {
        assert_eq!(deploying().subject(), "[conveyor] shop-api stage: deploying v1.0.0");
        let mut long = deploying();
        long.tag = Some(ImageTag::parse("x".repeat(200)).unwrap());
        assert_eq!(long.subject().chars().count(), 100);
    }

    #[test]
    fn message_is_a_chatbot_custom_notification() {
        let message = deploying().chatbot_message();
        assert_eq!(message["version"], "1.0");
        assert_eq!(message["source"], "custom");
        assert_eq!(message["content"]["textType"], "client-markdown");
        assert_eq!(message["metadata"]["eventType"], "deploying");
        assert_eq!(message["metadata"]["threadId"], format!("shop-api/sha256:{}", "a".repeat(64)));
        let context = &message["metadata"]["additionalContext"];
        assert_eq!(context["app"], "shop-api");
        assert_eq!(context["environment"], "stage");
        assert_eq!(context["severity"], "info");
        assert_eq!(context["deployment_id"], "ecs-svc/42");
        // Facts that do not apply are omitted, not null.
        assert!(context.get("reason").is_none());
        assert!(context.get("rollback_task_definition_arn").is_none());
        assert!(message["content"]["description"].as_str().unwrap().contains("shop-api:8"));
    }
}
