//! Test kit for Conveyor: a real local AWS (moto server with a realistic ECS deployment
//! lifecycle), a Lambda Runtime API host that drives the real function binaries, and fixtures
//! that give every test its own resources so tests run in parallel.
#![allow(clippy::unwrap_used)] // test code: a failed setup step should stop the test loudly

pub mod accounts;
pub mod function;
pub mod http;
pub mod lambda_api;
pub mod local_aws;
pub mod runtime_api;
pub mod scenario;
pub mod stack;
pub mod world;

pub use function::Function;
pub use http::LocalHttp;
pub use local_aws::LocalAws;
pub use runtime_api::{Invocation, RuntimeApi};
pub use world::World;

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}
