//! The `health_url` check: a completed rollout counts as verified only if it answers 2xx.

use std::time::Duration;

use tokio::time::Instant;

/// How long the health check may keep trying (the contract's 30 s).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// GETs `url` until it answers 2xx or `budget` is spent (backoff 0.5 s doubling to 5 s, each
/// attempt bounded by the time left). Returns the final status, or why it never answered 2xx.
pub async fn check(client: &reqwest::Client, url: &str, budget: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + budget;
    let mut pause = Duration::from_millis(500);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        let last = match client.get(url).timeout(left.min(Duration::from_secs(5))).send().await {
            Ok(response) if response.status().is_success() => return Ok(response.status().as_u16()),
            Ok(response) => format!("HTTP {}", response.status().as_u16()),
            Err(error) => describe(&error),
        };
        if Instant::now() + pause >= deadline {
            return Err(format!(
                "health check {url} failed after {attempts} attempts in {} s: {last}",
                budget.as_secs()
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// A transport error in a few words (never the URL: callers add it only where it is not secret).
pub fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
