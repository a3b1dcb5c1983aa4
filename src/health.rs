//! The `health_url` check: a completed rollout counts as verified only if it answers 2xx.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

/// How long the health check may keep trying (the contract's 30 s).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// Checks a completed rollout's `health_url` within the budget the invocation leaves.
pub struct Prober {
    web: crate::web::Web,
    budget: Duration,
}

impl Prober {
    /// At most `budget` per check (the contract's [`DEFAULT_BUDGET`] unless a test shortens it).
    pub fn new(web: crate::web::Web, budget: Duration) -> Self {
        Prober { web, budget }
    }

    /// [`check`] within the budget, and never past 15 s before the invocation's deadline.
    pub async fn probe(&self, url: &str, invocation: &crate::Invocation) -> Result<u16, Unhealthy> {
        self.probe_within(url, self.budget.min(invocation.remaining(Duration::from_secs(15)))).await
    }

    /// [`check`] within `budget` (a lifecycle hook's probe: a few seconds, retried within them).
    pub async fn probe_within(&self, url: &str, budget: Duration) -> Result<u16, Unhealthy> {
        let client = self.web.client().map_err(|unavailable| Unhealthy {
            url: url.to_owned(),
            attempts: 0,
            seconds: budget.as_secs(),
            last: Unanswered::Transport(unavailable.to_string()),
        })?;
        check(client, url, budget).await
    }
}

/// A health check (or a webhook post) that did not get a 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    /// The server answered with another status.
    #[error("HTTP {status}")]
    Status { status: u16 },
    /// The server answered with a redirect: never followed (it could lead anywhere, past the
    /// checks a configured URL passed), so the URL itself must answer 2xx.
    #[error("HTTP {status}, a redirect: not followed (the URL itself must answer 2xx)")]
    Redirect { status: u16 },
    /// No answer at all (the transport error in a few words, never the URL).
    #[error("{0}")]
    Transport(String),
}

impl Unanswered {
    /// A status other than 2xx.
    pub fn of_status(status: reqwest::StatusCode) -> Self {
        if status.is_redirection() {
            Unanswered::Redirect { status: status.as_u16() }
        } else {
            Unanswered::Status { status: status.as_u16() }
        }
    }
}

impl From<&reqwest::Error> for Unanswered {
    fn from(error: &reqwest::Error) -> Self {
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        let chain = std::error::Error::source(error).map(crate::aws::source_chain);
        Unanswered::Transport(match chain {
            Some(chain) => format!("{kind}: {chain}"),
            None => kind.to_owned(),
        })
    }
}

/// Why a `health_url` never answered 2xx within the budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health check {url} failed after {attempts} attempts in {seconds} s: {last}")]
pub struct Unhealthy {
    pub url: String,
    pub attempts: u32,
    pub seconds: u64,
    pub last: Unanswered,
}

/// GETs `url` until it answers 2xx or `budget` is spent (backoff 0.5 s doubling to 5 s, no pause
/// that would end past the budget, each attempt bounded by the time left). Returns the final
/// status, or why it never answered 2xx.
pub async fn check(client: &reqwest::Client, url: &str, budget: Duration) -> Result<u16, Unhealthy> {
    let deadline = Instant::now() + budget;
    let attempts = AtomicU32::new(0);
    let attempt = || async {
        attempts.fetch_add(1, Ordering::Relaxed);
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        match client.get(url).timeout(left.min(Duration::from_secs(5))).send().await {
            Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
            Ok(response) => Err(Unanswered::of_status(response.status())),
            Err(error) => Err(Unanswered::from(&error)),
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
        .map_err(|last| Unhealthy {
            url: url.to_owned(),
            attempts: attempts.load(Ordering::Relaxed),
            seconds: budget.as_secs(),
            last,
        })
}
