//! Test kit for Conveyor: a real local AWS (moto server with a realistic ECS deployment
//! lifecycle), a Lambda Runtime API host that drives the real function binaries, and fixtures
//! that give every test its own resources so tests run in parallel; and what every test binary
//! shares: the function binaries spawned against a world ([`functions`]), the task-definition
//! fixtures ([`taskdefs`]), the known-bug registry ([`known_bugs`]) and the knobs that size a
//! run ([`knobs`]).
#![allow(clippy::unwrap_used)] // test code: a failed setup step should stop the test loudly

pub mod accounts;
pub mod function;
pub mod functions;
pub mod http;
pub mod iam;
pub mod knobs;
pub mod known_bugs;
pub mod lambda_api;
pub mod local_aws;
pub mod matrix;
pub mod principals;
pub mod queue;
pub mod rng;
pub mod runtime_api;
pub mod scenario;
pub mod stack;
pub mod taskdefs;
pub mod world;

pub use function::Function;
pub use http::LocalHttp;
pub use local_aws::LocalAws;
pub use runtime_api::{Invocation, RuntimeApi};
pub use world::World;

use std::path::PathBuf;

/// The repository root, found at run time (a checkout can move after it was built): the
/// `CONVEYOR_REPO` variable, else the nearest ancestor of this executable, or of the working
/// directory, that holds Conveyor's `infra/template.yaml` and `tests/localaws`.
pub fn repo_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(root) = std::env::var_os("CONVEYOR_REPO") {
            return PathBuf::from(root);
        }
        let is_root =
            |dir: &std::path::Path| dir.join("infra/template.yaml").is_file() && dir.join("tests/localaws").is_dir();
        let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
        starts
            .into_iter()
            .flatten()
            .find_map(|start| start.ancestors().find(|dir| is_root(dir)).map(std::path::Path::to_path_buf))
            .unwrap_or_else(|| {
                panic!(
                    "cannot find Conveyor's repository above this program or the working directory: set CONVEYOR_REPO"
                )
            })
    })
    .clone()
}
