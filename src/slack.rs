//! Slack incoming webhooks: the same facts as the SNS notification, as a Slack message.
//!
//! The webhook URL is a secret: it is read decrypted from SSM, kept in memory, and never put in a
//! log line, an error or a message. It must be Slack's ([`is_webhook`]): a parameter holding any
//! other URL is never posted to.

use serde_json::{json, Map, Value};

use crate::health::Unanswered;
use crate::web::Endpoints;

/// The hosts of Slack's incoming webhooks (commercial and GovSlack).
pub const WEBHOOK_HOSTS: [&str; 2] = ["hooks.slack.com", "hooks.slack-gov.com"];

/// Whether `url` is a Slack webhook Conveyor may post to: `https://hooks.slack.com/...` or
/// `https://hooks.slack-gov.com/...` (default port, no credentials). With [`Endpoints::Local`]
/// (tests and the local playground), any https URL, or http to this machine — never a
/// link-local, unspecified or metadata address.
pub fn is_webhook(url: &str, endpoints: Endpoints) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else { return false };
    let plain = url.username().is_empty() && url.password().is_none();
    match endpoints {
        Endpoints::Public => {
            plain
                && url.scheme() == "https"
                && url.port().is_none()
                && url.host_str().is_some_and(|host| WEBHOOK_HOSTS.contains(&host))
        }
        Endpoints::Local => {
            plain
                && url.host_str().is_some_and(|host| !host.is_empty())
                && crate::web::refused_host(&url, endpoints).is_none()
                && (url.scheme() == "https" || (url.scheme() == "http" && crate::web::is_loopback_host(&url)))
        }
    }
}

/// Text made safe for Slack's `mrkdwn` (and Chatbot's `client-markdown`, which Chatbot renders
/// as Slack markdown): `&`, `<` and `>` escaped as Slack documents, so text users wrote (a reason,
/// a name) can neither mention (`<!channel>`, `<@U123>`) nor disguise a link (`<https://x|Approve>`).
/// Every value a notification puts in markdown goes through here, once.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// What a Slack message shows: the notification's texts and facts. The title and description are
/// markdown already written (and escaped) by the notification itself; the headline is shown as
/// plain text; the facts are plain values, escaped here.
pub struct MessageView<'a> {
    /// Fallback text (notifications, screen readers): markdown.
    pub title: &'a str,
    /// Plain text (a `plain_text` header: Slack does not parse it).
    pub headline: &'a str,
    /// Markdown.
    pub description: &'a str,
    /// The facts (`tag`, `cluster`, ...), unescaped: only a few are shown.
    pub context: &'a Map<String, Value>,
}

/// The Slack message (Block Kit, with `text` as the fallback for notifications).
pub fn message(view: &MessageView<'_>) -> Value {
    let context: Vec<Value> = view
        .context
        .iter()
        // The description already has the reason and the task definitions.
        .filter(|(key, _)| matches!(key.as_str(), "tag" | "cluster" | "service" | "deployment_id"))
        .map(|(key, value)| json!({ "type": "mrkdwn", "text": format!("*{key}:* {}", escape(value.as_str().unwrap_or_default())) }))
        .take(10) // Slack allows at most 10 elements in a context block
        .collect();
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": truncate(view.headline, 150) } }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": truncate(view.description, 3000) } }),
    ];
    if !context.is_empty() {
        blocks.push(json!({ "type": "context", "elements": context }));
    }
    json!({ "text": view.title, "blocks": blocks })
}

fn truncate(text: &str, limit: usize) -> String {
    text.chars().take(limit).collect()
}

/// Why a post failed, without the URL: no answer, or another status (with the start of the body).
#[derive(Debug, Clone, thiserror::Error)]
#[error("Slack webhook post failed: {answer}{}", .body.as_deref().map(|b| format!(": {b}")).unwrap_or_default())]
pub struct SlackError {
    pub answer: Unanswered,
    pub body: Option<String>,
}

pub async fn post(client: &reqwest::Client, webhook_url: &str, message: &Value) -> Result<(), SlackError> {
    let response = client
        .post(webhook_url)
        .json(message)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| SlackError { answer: Unanswered::from(&e.without_url()), body: None })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let body: String = response.text().await.unwrap_or_default().chars().take(200).collect();
        Err(SlackError { answer: Unanswered::of_status(status), body: Some(body) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slack_hosts_are_webhooks() {
        for slack in [
            "https://hooks.slack.com/services/T000/B000/XXXX",
            "https://HOOKS.SLACK.COM/services/T000/B000/XXXX",
            "https://hooks.slack.com:443/triggers/T000/1/abc",
            "https://hooks.slack-gov.com/services/T000/B000/XXXX",
        ] {
            assert!(is_webhook(slack, Endpoints::Public), "{slack}");
        }
        for other in [
            "http://hooks.slack.com/services/T000/B000/XXXX",
            "https://hooks.slack.com.evil.example/services/x",
            "https://evil.example/hooks.slack.com/services/x",
            "https://hooks.slack.com:8443/services/x",
            "https://user@hooks.slack.com/services/x",
            "https://slack.com/services/x",
            "https://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:8080/services/x",
            "hooks.slack.com/services/x",
            "",
        ] {
            assert!(!is_webhook(other, Endpoints::Public), "{other}");
        }
        // The local switch: this machine's test servers, never the metadata service.
        assert!(is_webhook("http://127.0.0.1:8080/services/x", Endpoints::Local));
        assert!(is_webhook("https://hooks.slack.com/services/x", Endpoints::Local));
        assert!(!is_webhook("http://169.254.169.254/latest/meta-data/", Endpoints::Local));
        assert!(!is_webhook("http://example.com/hook", Endpoints::Local));
    }

    #[test]
    fn escape_follows_slack_escaping() {
        assert_eq!(
            escape("<!channel> <https://evil|Approve> & <@U123>"),
            "&lt;!channel&gt; &lt;https://evil|Approve&gt; &amp; &lt;@U123&gt;"
        );
        // `&` first: an escape written by a user stays visible as written.
        assert_eq!(escape("&lt;"), "&amp;lt;");
        for plain in ["", "load test", "ana@example.com", "*bold* `code` _it_ :emoji: é€"] {
            assert_eq!(escape(plain), plain);
        }
    }

    #[test]
    fn facts_shown_in_the_context_block_are_escaped() {
        let mut context = Map::new();
        context.insert("service".into(), json!("<!here>"));
        context.insert("reason".into(), json!("not shown"));
        let message = message(&MessageView { title: "t", headline: "h", description: "d", context: &context });
        let shown = message["blocks"][2]["elements"].to_string();
        assert!(shown.contains("&lt;!here&gt;") && !shown.contains("<!here>"), "{shown}");
    }
}
