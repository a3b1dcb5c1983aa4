//! The `health_url` check: a completed rollout counts as verified only if it answers 2xx.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

/// How long the health check may keep trying (the contract's 30 s).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// GETs `url` until it answers 2xx or `budget` is spent (backoff 0.5 s doubling to 5 s, no pause
/// that would end past the budget, each attempt bounded by the time left). Returns the final
/// status, or why it never answered 2xx.
pub async fn check(client: &reqwest::Client, url: &str, budget: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + budget;
    let attempts = AtomicU32::new(0);
    let attempt = || async {
        attempts.fetch_add(1, Ordering::Relaxed);
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        match client.get(url).timeout(left.min(Duration::from_secs(5))).send().await {
            Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
            Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
            Err(error) => Err(describe(&error)),
        }
    };
    let pauses = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .without_max_times();
    attempt
        .retry(pauses)
        .sleep(tokio::time::sleep)
        .adjust(|_, pause| pause.filter(|pause| Instant::now() + *pause < deadline))
        .await
        .map_err(|last| {
            let attempts = attempts.load(Ordering::Relaxed);
            format!("health check {url} failed after {attempts} attempts in {} s: {last}", budget.as_secs())
        })
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
