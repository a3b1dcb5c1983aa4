//! Property tests of what Conveyor reads from outside — EventBridge events, app configs, promote
//! requests — and of the task-definition rewrite: arbitrary JSON values, unicode, strings of
//! megabytes, nesting far deeper than serde_json's recursion limit, a thousand containers.
//! Nothing may panic; what parses must say what the input said; the rewrite changes the one
//! container's image (and Conveyor's tags) and nothing else, and rewriting its own output with the
//! same swap gives the same request.
//!
//! Pure and offline (no local AWS, no network: the rewrite is inspected with `as_input()` on a
//! client that never sends), so a test binary of its own that `make unit` runs. Case counts are
//! sized so the whole binary runs in seconds. For a long run, `PROPTEST_CASES=N` gives every
//! property N cases (the heavy ones — megabyte inputs, thousand-container definitions — N/10, at
//! least 1); with `CI=true`, never fewer than the defaults (`conveyor_testkit::knobs`):
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --test properties -- --nocapture
//! ```
//!
//! A failure is shrunk to a minimal input and printed; proptest records its seed in a
//! `proptest-regressions` file so that the next run tries it first.
//!
//! One module per subject; [`arbitrary`] holds what they draw from, [`suite`] the rules of the
//! test suite itself (no known bug listed, knobs floored in CI).
#![allow(clippy::unwrap_used)]

mod arbitrary;
mod config;
mod config_sets;
mod huge_inputs;
mod monitor_events;
mod promote_requests;
mod push_events;
mod rewrite;
mod suite;
mod unmodeled;

use conveyor_testkit::knobs;
use proptest::test_runner::Config as ProptestConfig;

/// `default` cases, or `PROPTEST_CASES` (in CI, never fewer than `default`).
pub fn cases(default: u32) -> ProptestConfig {
    let cases = knobs::size("PROPTEST_CASES", default.into(), default.into());
    ProptestConfig { cases: u32::try_from(cases).unwrap_or(u32::MAX), ..ProptestConfig::default() }
}

/// For properties whose every case is large: `default`, or a tenth of `PROPTEST_CASES` (at least
/// one; in CI, never fewer than `default`).
pub fn heavy(default: u32) -> ProptestConfig {
    let asked = knobs::number("PROPTEST_CASES").map(|n| (n / 10).max(1));
    let cases = knobs::floored(asked, default.into(), default.into(), knobs::ci());
    ProptestConfig { cases: u32::try_from(cases).unwrap_or(u32::MAX), ..ProptestConfig::default() }
}
