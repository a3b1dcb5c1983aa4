//! Day-2 operations on the state table: status, history, DORA metrics (used by the `conveyor` CLI).
//!
//! Read-side only, on top of the library's own readers and rules, so that the CLI (or anything
//! else given clients for a table and ECS) shows what the functions decided without a second
//! copy of how they decide.

pub mod config;
pub mod doctor;
pub mod follow;
pub mod history;
pub mod metrics;
pub mod status;
