//! Notifications: one SNS `Publish` per transition worth telling people about, in the AWS Chatbot
//! custom-notification format so a Chatbot-subscribed topic shows it in Slack as is, and the same
//! facts to the app's Slack webhook when it has one.
//!
//! A notification is committed to its item's outbox in the same transaction as the transition it
//! announces, delivered after the commit, and dropped from the outbox once delivered on every
//! channel. What could not be delivered (SNS or Slack down) stays and is sent by the next
//! invocation working on that item, or by the sweep. Each carries a stable `id` (the Chatbot
//! format's own field), so in the rare case of a delivery whose confirmation was lost and which is
//! sent again, consumers can tell it is the same notification.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use crate::aws::{AwsError, Sns, Ssm};
use crate::config::AppConfig;
use crate::rollout::Rollout;
use crate::slack;
use crate::types::{Environment, ImageDigest, ImageTag};
use crate::vocabulary::{Outcome, Severity};

/// The facts of one notification; what does not apply stays `None` and is omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The app (for an invalid config whose parameter name is not an app name, that name).
    pub app: String,
    /// `None`: about the app as a whole (an invalid config), shown as `all`.
    pub environment: Option<Environment>,
    pub outcome: Outcome,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<ImageTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<ImageDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_task_definition_arn: Option<String>,
    /// Who asked (promotions, pauses): the identity AWS verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The name the request gave (unverified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Who approved the promotion (verified by AWS), or rejected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// What the environment runs now, which an approval request would replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// What to run next (an approval request: the command that approves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A promotion that overrode an earlier failure of the image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// What ECS says about the failure (stopped tasks, exit codes): shown to people, not in
    /// `additionalContext`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
    /// An environment with several targets: each target and where the release stands there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<crate::rollout::TargetStatus>,
}

impl Notification {
    pub fn new(app: &str, environment: Option<Environment>, outcome: Outcome, severity: Severity) -> Self {
        Notification {
            app: app.to_owned(),
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
            requested_by: None,
            on_behalf_of: None,
            approved_by: None,
            approval_id: None,
            replaces: None,
            command: None,
            forced: false,
            diagnostics: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// About `app`'s service in `env`.
    pub fn of_service(app: &AppConfig, env: Environment, outcome: Outcome, severity: Severity) -> Self {
        let mut notification = Notification::new(app.name.as_str(), Some(env), outcome, severity);
        if let Ok(target) = app.target(env) {
            notification.cluster = Some(target.cluster.clone());
            notification.service = Some(target.service.clone());
        }
        notification
    }

    /// The facts of a rollout, with the outcome its state calls for.
    pub fn of_rollout(app: &AppConfig, env: Environment, rollout: &Rollout) -> Self {
        let (outcome, severity) = rollout.outcome(app.pipeline.is_last(env));
        let mut notification = Notification::of_service(app, env, outcome, severity);
        notification.tag = Some(rollout.tag.clone());
        notification.digest = Some(rollout.digest.clone());
        notification.task_definition_arn = Some(rollout.task_definition_arn.clone());
        notification.deployment_id = rollout.deployment_id.clone();
        notification.reason = rollout.state.reason().map(str::to_owned);
        notification.requested_by = rollout.requested_by().map(str::to_owned);
        notification.on_behalf_of = rollout.on_behalf_of().map(str::to_owned);
        if let crate::rollout::Origin::Promotion { reason, forced, approved_by, .. } = &rollout.origin {
            notification.forced = *forced;
            notification.approved_by = approved_by.clone();
            if rollout.in_progress() {
                notification.reason = reason.clone();
            }
        }
        if let crate::rollout::RolloutState::RolledBack { to, .. } = &rollout.state {
            notification.rollback_task_definition_arn = Some(to.clone());
        }
        notification
    }

    fn environment_name(&self) -> String {
        self.environment.map_or_else(|| "all".to_owned(), |env| env.to_string())
    }

    /// `[conveyor] {app} {environment}: {outcome} {tag}`, at most 100 characters (SNS's limit).
    pub fn subject(&self) -> String {
        let what =
            self.tag.as_ref().map(ToString::to_string).or_else(|| self.digest.as_ref().map(|d| d.short().to_owned()));
        let subject = format!(
            "[conveyor] {} {}: {} {}",
            self.app,
            self.environment_name(),
            self.outcome,
            what.as_deref().unwrap_or("")
        )
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
        format!("{icon} {}", slack::escape(&self.headline()))
    }

    /// `shop-api prod: rolled back v1.4.2`
    pub fn headline(&self) -> String {
        let what = self.tag.as_ref().map(|t| format!(" {t}")).unwrap_or_default();
        let forced = if self.forced { " (forced)" } else { "" };
        format!("{} {}: {}{what}{forced}", self.app, self.environment_name(), self.outcome.headline())
    }

    /// Markdown body: every fact on its own line, so Slack and email both read well. Every value
    /// is escaped ([`slack::escape`]): reasons and names are written by users, diagnostics by the
    /// app's containers.
    pub fn description(&self) -> String {
        use slack::escape;
        let mut lines = Vec::new();
        if let Some(reason) = &self.reason {
            lines.push(format!("*Reason:* {}", escape(reason)));
        }
        let facts: [(&str, Option<String>); 13] = [
            ("Image", self.digest.as_ref().map(|d| format!("`{}`", escape(d.as_str())))),
            (
                "Service",
                self.cluster.as_ref().zip(self.service.as_ref()).map(|(c, s)| format!("`{}/{}`", escape(c), escape(s))),
            ),
            ("Task definition", self.task_definition_arn.as_ref().map(|t| format!("`{}`", escape(short_arn(t))))),
            (
                "Rolled back to",
                self.rollback_task_definition_arn.as_ref().map(|t| format!("`{}`", escape(short_arn(t)))),
            ),
            ("Deployment", self.deployment_id.as_ref().map(|d| format!("`{}`", escape(d)))),
            ("Requested by", self.requested_by.as_deref().map(escape)),
            ("On behalf of", self.on_behalf_of.as_deref().map(|name| format!("{} (unverified)", escape(name)))),
            (
                if self.outcome == Outcome::Rejected { "Rejected by" } else { "Approved by" },
                self.approved_by.as_deref().map(escape),
            ),
            ("Replaces", self.replaces.as_deref().map(escape)),
            ("Approval", self.approval_id.as_ref().map(|id| format!("`{}`", escape(id)))),
            ("To approve", self.command.as_ref().map(|command| format!("`{}`", escape(command)))),
            ("Forced", self.forced.then(|| "yes: the image failed before".to_owned())),
            ("Severity", Some(self.severity.to_string())),
        ];
        lines.extend(facts.into_iter().filter_map(|(name, value)| value.map(|v| format!("*{name}:* {v}"))));
        if !self.targets.is_empty() {
            lines.push("*Targets:*".to_owned());
            lines.extend(self.targets.iter().map(|t| format!("• `{}`: {}", escape(&t.target), escape(&t.state))));
        }
        lines.extend(self.diagnostics.iter().map(|d| format!("• {}", escape(d))));
        lines.join("\n")
    }

    /// `additionalContext`: every fact that applies, as strings, as they are (not escaped):
    /// Chatbot does not render this metadata as markdown — it is data for filters and custom
    /// actions' variables, which must get the values themselves.
    pub fn context(&self) -> Map<String, Value> {
        let facts = [
            ("app", Some(self.app.clone())),
            ("environment", Some(self.environment_name().to_owned())),
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
            ("requested_by", self.requested_by.clone()),
            ("on_behalf_of", self.on_behalf_of.clone()),
            ("approved_by", self.approved_by.clone()),
            ("approval_id", self.approval_id.clone()),
            ("replaces", self.replaces.clone()),
            ("forced", self.forced.then(|| "true".to_owned())),
            (
                "targets",
                (!self.targets.is_empty()).then(|| {
                    self.targets.iter().map(|t| format!("{}: {}", t.target, t.state)).collect::<Vec<_>>().join("; ")
                }),
            ),
        ];
        facts.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_owned(), Value::String(v)))).collect()
    }

    /// The AWS Chatbot custom-notification document; `id` identifies this notification.
    /// The same facts as a Slack message.
    pub fn slack_message(&self) -> Value {
        let (title, headline, description, context) =
            (self.title(), self.headline(), self.description(), self.context());
        slack::message(&slack::MessageView {
            title: &title,
            headline: &headline,
            description: &description,
            context: &context,
        })
    }

    pub fn chatbot_message(&self, id: &str) -> Value {
        let thread = match &self.digest {
            Some(digest) => format!("{}/{}", self.app, digest),
            None => self.app.clone(),
        };
        json!({
            "version": "1.0",
            "source": "custom",
            "id": id,
            "content": { "textType": "client-markdown", "title": self.title(), "description": self.description() },
            "metadata": { "threadId": thread, "eventType": self.outcome.as_str(), "additionalContext": self.context() },
        })
    }
}

/// `arn:aws:ecs:...:task-definition/shop-api:7` => `shop-api:7`.
pub fn short_arn(arn: &str) -> &str {
    arn.rsplit_once('/').map_or(arn, |(_, name)| name)
}

/// A notification to commit with a transition, and where else it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub notification: Notification,
    pub slack_webhook_parameter: Option<String>,
}

impl Announcement {
    pub fn new(notification: Notification, app: &AppConfig) -> Self {
        Announcement { notification, slack_webhook_parameter: app.slack_webhook_parameter.clone() }
    }
}

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sns,
    Slack,
}

/// A committed notification, and the channels it has yet to reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: String,
    /// Delivery order.
    pub seq: u64,
    pub notification: Notification,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_webhook_parameter: Option<String>,
    pub channels: Vec<Channel>,
}

impl OutboxEntry {
    pub fn new(id: String, seq: u64, announcement: Announcement) -> Self {
        let mut channels = vec![Channel::Sns];
        if announcement.slack_webhook_parameter.is_some() {
            channels.push(Channel::Slack);
        }
        OutboxEntry {
            id,
            seq,
            notification: announcement.notification,
            slack_webhook_parameter: announcement.slack_webhook_parameter,
            channels,
        }
    }
}

/// What delivering an outbox entry left undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub remaining: Vec<Channel>,
}

/// Delivers notifications to the topic (or only logs them when there is none) and to Slack.
#[derive(Clone)]
pub struct Notifier {
    sns: Sns,
    ssm: Ssm,
    web: crate::web::Web,
    topic_arn: Option<String>,
    /// Webhook URLs by parameter name, read once per cold start (they are secrets: never logged).
    webhooks: Arc<Mutex<HashMap<String, String>>>,
}

impl Notifier {
    pub fn new(sns: Sns, ssm: Ssm, web: crate::web::Web, topic_arn: Option<String>) -> Self {
        if topic_arn.is_none() {
            tracing::warn!("CONVEYOR_TOPIC_ARN is not set: notifications are only logged");
        }
        Notifier { sns, ssm, web, topic_arn, webhooks: Arc::default() }
    }

    /// Whether notifications go to a topic (else they are only logged).
    pub fn has_topic(&self) -> bool {
        self.topic_arn.is_some()
    }

    /// Delivers entries in order. A channel that fails is not tried again for later entries in
    /// this call (they stay in the outbox): an outage costs one failed attempt, not one each.
    pub async fn deliver(&self, entries: &[OutboxEntry]) -> Vec<Delivery> {
        let (mut sns_down, mut slack_down) = (false, false);
        let mut deliveries = Vec::new();
        for entry in entries {
            let n = &entry.notification;
            tracing::info!(
                app = %n.app,
                environment = n.environment_name(),
                outcome = %n.outcome,
                severity = %n.severity,
                tag = n.tag.as_ref().map(tracing::field::display),
                digest = n.digest.as_ref().map(tracing::field::display),
                deployment_id = n.deployment_id.as_deref(),
                reason = n.reason.as_deref(),
                notification_id = %entry.id,
                "notification"
            );
            let mut remaining = Vec::new();
            for channel in &entry.channels {
                let sent = match channel {
                    Channel::Sns if !sns_down => self.publish(entry).await.map_err(Undelivered::from),
                    Channel::Slack if !slack_down => match &entry.slack_webhook_parameter {
                        Some(parameter) => self.post_to_slack(n, parameter).await,
                        None => Ok(()),
                    },
                    _ => Err(Undelivered::ChannelDown),
                };
                if let Err(error @ Undelivered::NotSlack(_)) = &sent {
                    // Not a delivery that failed: one that must never happen. Nothing to retry.
                    tracing::error!(app = %n.app, outcome = %n.outcome, channel = ?channel, notification_id = %entry.id,
                        error = %error, "notification not posted to Slack: the webhook parameter does not hold a Slack URL");
                } else if let Err(error) = sent {
                    tracing::error!(app = %n.app, outcome = %n.outcome, channel = ?channel, notification_id = %entry.id,
                        error = %error, "notification not delivered: it stays in the outbox and is sent later");
                    match channel {
                        Channel::Sns => sns_down = true,
                        Channel::Slack => slack_down = true,
                    }
                    remaining.push(*channel);
                }
            }
            deliveries.push(Delivery { id: entry.id.clone(), remaining });
        }
        deliveries
    }

    async fn publish(&self, entry: &OutboxEntry) -> Result<(), AwsError> {
        let Some(topic) = &self.topic_arn else { return Ok(()) };
        let n = &entry.notification;
        let attributes = [
            ("app", n.app.as_str()),
            ("environment", &n.environment_name()),
            ("outcome", n.outcome.as_str()),
            ("severity", n.severity.as_str()),
        ];
        self.sns.publish(topic, &n.subject(), &n.chatbot_message(&entry.id).to_string(), &attributes).await.map(drop)
    }

    async fn post_to_slack(&self, notification: &Notification, parameter: &str) -> Result<(), Undelivered> {
        let cached = self.webhooks.lock().await.get(parameter).cloned();
        let url = match cached {
            Some(url) => url,
            None => {
                let secret = self.ssm.get(parameter, true).await?;
                let url = secret.map(|p| p.value).ok_or_else(|| Undelivered::NoWebhook(parameter.to_owned()))?;
                self.webhooks.lock().await.insert(parameter.to_owned(), url.clone());
                url
            }
        };
        if !slack::is_webhook(&url, self.web.endpoints()) {
            return Err(Undelivered::NotSlack(parameter.to_owned()));
        }
        let client = self.web.client().map_err(|unavailable| slack::SlackError {
            answer: crate::health::Unanswered::Transport(unavailable.to_string()),
            body: None,
        })?;
        Ok(slack::post(client, &url, &notification.slack_message()).await?)
    }
}

/// Why a notification did not reach a channel (it stays in the outbox).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Undelivered {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Slack(#[from] slack::SlackError),
    /// The app's `slack_webhook_parameter` names no parameter.
    #[error("parameter {0} does not exist")]
    NoWebhook(String),
    /// The app's `slack_webhook_parameter` holds a URL that is not Slack's ([`slack::is_webhook`]):
    /// never posted to, and not kept for later. The URL is a secret: only the parameter is named.
    #[error("parameter {0} does not hold a Slack webhook URL (https://hooks.slack.com/... or https://hooks.slack-gov.com/...): not posted to; the URL is not shown, it is a secret")]
    NotSlack(String),
    /// The channel failed earlier in this delivery: not tried again now.
    #[error("channel down earlier in this delivery")]
    ChannelDown,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploying() -> Notification {
        let mut n = Notification::new("shop-api", Some(Environment::STAGE), Outcome::Deploying, Severity::Info);
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
        let config = Notification::new("shop-api", None, Outcome::ConfigError, Severity::Error);
        assert_eq!(config.subject(), "[conveyor] shop-api all: config_error");
    }

    #[test]
    fn message_is_a_chatbot_custom_notification() {
        let message = deploying().chatbot_message("conveyor:shop-api/stage:3.0");
        assert_eq!(message["version"], "1.0");
        assert_eq!(message["source"], "custom");
        assert_eq!(message["id"], "conveyor:shop-api/stage:3.0");
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
        assert!(context.get("forced").is_none());
        assert!(message["content"]["description"].as_str().unwrap().contains("shop-api:8"));
    }

    #[test]
    fn text_from_users_is_escaped_in_every_markdown_field_and_kept_as_is_in_the_context() {
        let mut n = deploying();
        n.reason = Some("<!channel> see <https://evil.example|Approve> & sign".into());
        n.requested_by = Some("<@U123>".into());
        n.cluster = Some("c<&>".into());
        n.diagnostics = vec!["exit <!here>".into()];
        let message = n.chatbot_message("id");
        let description = message["content"]["description"].as_str().unwrap();
        assert!(
            description.contains("*Reason:* &lt;!channel&gt; see &lt;https://evil.example|Approve&gt; &amp; sign"),
            "{description}"
        );
        assert!(description.contains("*Requested by:* &lt;@U123&gt;"), "{description}");
        assert!(description.contains("`c&lt;&amp;&gt;/shop-api`"), "{description}");
        assert!(description.contains("• exit &lt;!here&gt;"), "{description}");
        let slack = n.slack_message();
        for markdown in [message["content"]["title"].to_string(), description.to_owned(), slack.to_string()] {
            assert!(!markdown.contains('<') && !markdown.contains('>'), "unescaped markdown: {markdown}");
        }
        assert_eq!(slack["blocks"][1]["text"]["text"], description, "the same description on both channels");
        // The metadata is data, not markdown: as written.
        let context = &message["metadata"]["additionalContext"];
        assert_eq!(context["reason"], "<!channel> see <https://evil.example|Approve> & sign");
        assert_eq!(context["requested_by"], "<@U123>");
    }

    #[test]
    fn notifications_survive_the_outbox() {
        let entry = OutboxEntry::new(
            "id".into(),
            7,
            Announcement { notification: deploying(), slack_webhook_parameter: Some("/conveyor/secrets/x".into()) },
        );
        assert_eq!(entry.channels, [Channel::Sns, Channel::Slack]);
        let stored = serde_dynamo::to_attribute_value::<_, aws_sdk_dynamodb::types::AttributeValue>(&entry).unwrap();
        assert_eq!(serde_dynamo::from_attribute_value::<_, OutboxEntry>(stored).unwrap(), entry);
    }
}
