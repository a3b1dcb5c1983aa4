//! What the library's unit tests share: one app, its digests and tags, stage met for the first time.

use crate::config::AppConfig;
use crate::record::EnvState;
use crate::rollout::Revision;
use crate::types::{AppName, Environment, ImageDigest, ImageTag};

/// `sha256:` and 64 times `n`.
pub fn digest(n: char) -> ImageDigest {
    ImageDigest::parse(format!("sha256:{}", n.to_string().repeat(64))).expect("a digest")
}

pub fn tag(text: &str) -> ImageTag {
    ImageTag::parse(text).expect("a tag")
}

/// `shop`: repository `shop`, container `api`, services `stage/shop` and `prod/shop`.
pub fn app() -> AppConfig {
    let json = r#"{"repository": "shop", "container": "api",
        "environments": {"stage": {"cluster": "stage", "service": "shop"},
                         "prod": {"cluster": "prod", "service": "shop"}}}"#;
    AppConfig::parse("/conveyor/apps/shop", "shop", json, crate::web::Endpoints::Public).expect("the app config")
}

/// Stage of `shop` met for the first time, running `arn` with image `running`.
pub fn stage_met(arn: &str, running: char) -> EnvState {
    let app = AppName::parse("shop").expect("an app name");
    EnvState::first(
        &app,
        Environment::Stage,
        "stage",
        "shop",
        Revision { arn: arn.into(), digest: Some(digest(running)) },
    )
}
