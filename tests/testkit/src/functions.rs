//! The function binaries of a [`World`], spawned as Lambda runs them: one place for what every
//! test that drives the real binaries starts with (the world's variables, deploy-monitor's health
//! check timeout).

use std::time::Duration;

use crate::{Function, World};

/// stage-deploy against `world`.
pub async fn stage_deploy(world: &World) -> Function {
    Function::spawn("stage-deploy", &world.function_env()).await
}

/// deploy-monitor against `world`, giving a health URL at most `health_timeout` to answer
/// (`CONVEYOR_HEALTH_TIMEOUT_SECONDS`: a dead endpoint fails a verification that fast).
pub async fn deploy_monitor(world: &World, health_timeout: Duration) -> Function {
    Function::spawn("deploy-monitor", &with_health_timeout(world.function_env(), health_timeout)).await
}

/// promote against `world`.
pub async fn promote(world: &World) -> Function {
    Function::spawn("promote", &world.function_env()).await
}

/// `env` with deploy-monitor's health check timeout set.
pub fn with_health_timeout(mut env: Vec<(String, String)>, timeout: Duration) -> Vec<(String, String)> {
    env.push(("CONVEYOR_HEALTH_TIMEOUT_SECONDS".into(), timeout.as_secs().to_string()));
    env
}

/// The three functions, as Lambda runs them, against one world (deploy-monitor with its default
/// health check timeout).
pub struct Functions {
    pub stage: Function,
    pub monitor: Function,
    pub promote: Function,
}

impl Functions {
    pub async fn spawn(world: &World) -> Functions {
        let env = world.function_env();
        Functions {
            stage: Function::spawn("stage-deploy", &env).await,
            monitor: Function::spawn("deploy-monitor", &env).await,
            promote: Function::spawn("promote", &env).await,
        }
    }
}
