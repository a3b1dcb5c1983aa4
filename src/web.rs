//! The HTTPS client for health checks and Slack, built on first use: its TLS roots are loaded
//! only by an invocation that calls out, never at a cold start.

use std::sync::{Arc, OnceLock};

/// One connection pool, shared by whoever holds a clone.
#[derive(Clone, Default)]
pub struct Web(Arc<OnceLock<reqwest::Client>>);

impl Web {
    pub fn client(&self) -> &reqwest::Client {
        self.0.get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("conveyor/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        })
    }
}
