//! App configuration: one JSON `String` parameter per app at `{prefix}/apps/{app}`.
//!
//! Validation is strict (unknown keys are errors, so a typo never silently disables a feature)
//! and per app: one invalid app is reported and skipped, the others keep deploying. Every problem
//! of a config is reported at once, each with its JSON path.

mod fields;
mod pipeline;
mod target;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::Value;
use tokio::sync::Mutex;

pub use self::fields::{parse_duration, show as show_duration, Problem};
use self::fields::{Fields, Problems};
pub use self::pipeline::{
    Approval, ArnPattern, EnvironmentConfig, Pipeline, Promotion, Source, Waves, DEFAULT_APPROVAL_TIMEOUT,
};
use self::target::NAME;
pub use self::target::{Home, Place, Registry, ServiceTarget};
use crate::aws::{AwsError, Ssm};
use crate::types::{AppName, Environment, ImageTag};
use crate::web::Endpoints;

/// How long a loaded configuration serves warm invocations before it is read again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Default `keep_revisions`.
pub const DEFAULT_KEEP_REVISIONS: usize = 10;

/// Default `rollout_timeout_seconds`.
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(1800);

/// An invalid app configuration: which parameter, and every problem found in it (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid app config in parameter {parameter}, {}", describe(problems))]
pub struct ConfigError {
    pub parameter: String,
    /// In the order found; never empty.
    pub problems: Vec<Problem>,
}

fn describe(problems: &[Problem]) -> String {
    match problems {
        [one] => format!("key `{}`: {}", one.key, one.problem),
        several => format!(
            "{} problems: {}",
            several.len(),
            several.iter().map(|p| format!("`{}`: {}", p.key, p.problem)).collect::<Vec<_>>().join("; ")
        ),
    }
}

impl ConfigError {
    /// A config with one problem.
    pub fn one(parameter: &str, key: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            parameter: parameter.to_owned(),
            problems: vec![Problem { key: key.to_owned(), problem: problem.into() }],
        }
    }

    /// The key of the first problem.
    pub fn key(&self) -> &str {
        self.problems.first().map_or("(document)", |p| p.key.as_str())
    }

    /// The first problem.
    pub fn problem(&self) -> &str {
        self.problems.first().map_or("invalid", |p| p.problem.as_str())
    }
}

/// An environment the app's config does not name (a request's, or a record's left from an
/// older config).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("app {app} has no environment {environment} (it has: {known})")]
pub struct NoSuchEnvironment {
    pub app: AppName,
    pub environment: Environment,
    pub known: String,
}

/// Which pushed tags an app deploys.
#[derive(Debug, Clone)]
pub enum TagPolicy {
    /// Every tag except `latest` (the contract's default).
    AllButLatest,
    Matching(Regex),
}

impl TagPolicy {
    pub fn admits(&self, tag: &ImageTag) -> bool {
        match self {
            TagPolicy::AllButLatest => tag.as_str() != "latest",
            TagPolicy::Matching(pattern) => pattern.is_match(tag.as_str()),
        }
    }
}

/// A validated app configuration.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: AppName,
    /// The SSM parameter it was read from, for error messages.
    pub parameter: String,
    pub repository: String,
    pub container: String,
    pub tags: TagPolicy,
    /// The app's environments: where each gets its images, where it runs and its gates.
    pub pipeline: Pipeline,
    pub slack_webhook_parameter: Option<String>,
    pub rollout_timeout: Duration,
    /// The registry of `repository` when it is not Conveyor's own account and region.
    pub registry: Option<Registry>,
    /// How many of the revisions Conveyor registered the sweep keeps per environment (target),
    /// newest first; older ones no service runs are deregistered.
    pub keep_revisions: usize,
}

impl AppConfig {
    /// The registry the app's images come from: its `registry`, else Conveyor's own account and
    /// region (`None` only where Conveyor's account is unknown: outside Lambda, without a config).
    pub fn registry(&self, home: &Home) -> Option<Registry> {
        self.registry
            .clone()
            .or_else(|| Some(Registry { account: home.account.clone()?, region: home.region.clone()? }))
    }

    /// Where the app runs in `env`: its first target (its only one, unless it lists several).
    pub fn target(&self, env: Environment) -> Result<&ServiceTarget, NoSuchEnvironment> {
        self.target_at(env, 0)
    }

    /// Target `index` of `env` (0: its first).
    pub fn target_at(&self, env: Environment, index: usize) -> Result<&ServiceTarget, NoSuchEnvironment> {
        self.targets(env)?.get(index).ok_or_else(|| self.no_such(env))
    }

    /// The labels of `env`'s targets (`cluster/service (account, region)`), in rollout order.
    pub fn target_labels(&self, env: Environment) -> Vec<String> {
        self.targets(env).map(|targets| targets.iter().map(ServiceTarget::label).collect()).unwrap_or_default()
    }

    /// Every target of `env`, in rollout order.
    pub fn targets(&self, env: Environment) -> Result<&[ServiceTarget], NoSuchEnvironment> {
        self.pipeline.environment(env).map(|env| env.targets.as_slice()).ok_or_else(|| self.no_such(env))
    }

    /// The error for `env`, which is not one of the app's environments.
    pub fn no_such(&self, env: Environment) -> NoSuchEnvironment {
        NoSuchEnvironment {
            app: self.name.clone(),
            environment: env,
            known: self.pipeline.environments.iter().map(|e| e.name.to_string()).collect::<Vec<_>>().join(", "),
        }
    }

    /// Parses and validates one app's parameter, for functions that call only what `endpoints`
    /// admits (a `health_url` on this machine is valid only with [`Endpoints::Local`]).
    pub fn parse(parameter: &str, app: &str, json: &str, endpoints: Endpoints) -> Result<Self, ConfigError> {
        let problems = Problems::default();
        let name = AppName::parse(app).map_err(|e| problems.add("(parameter name)", e.to_string())).ok();
        let root: Value = serde_json::from_str(json)
            .map_err(|e| ConfigError::one(parameter, "(document)", format!("not valid JSON: {e}")))?;
        let parsed = Fields::new(&root, String::new(), &problems).and_then(|fields| {
            fields.only(&[
                "repository",
                "container",
                "tags",
                "environments",
                "slack_webhook_parameter",
                "rollout_timeout_seconds",
                "registry",
                "keep_revisions",
            ]);
            let repository = fields.string("repository", true, &REPOSITORY, "an ECR repository name");
            let container = fields.string("container", true, &NAME, "a container name");
            let tags = match fields.str("tags") {
                None => Some(TagPolicy::AllButLatest),
                Some(pattern) => match regex::RegexBuilder::new(pattern).size_limit(1 << 20).build() {
                    Ok(pattern) => Some(TagPolicy::Matching(pattern)),
                    Err(e) => {
                        fields.problem("tags", format!("not a valid regular expression: {e}"));
                        None
                    }
                },
            };
            let slack_webhook_parameter =
                fields.string("slack_webhook_parameter", false, &PARAMETER, "an SSM parameter name");
            let rollout_timeout = match fields.get("rollout_timeout_seconds") {
                None => DEFAULT_ROLLOUT_TIMEOUT,
                Some(value) => match value.as_u64() {
                    Some(seconds @ 1..=86_400) => Duration::from_secs(seconds),
                    _ => {
                        fields.problem(
                            "rollout_timeout_seconds",
                            format!("must be a whole number of seconds from 1 to 86400, got {value}"),
                        );
                        DEFAULT_ROLLOUT_TIMEOUT
                    }
                },
            };
            let keep_revisions = match fields.get("keep_revisions") {
                None => DEFAULT_KEEP_REVISIONS,
                Some(value) => match value.as_u64() {
                    Some(keep @ 1..=100) => keep as usize,
                    _ => {
                        fields.problem("keep_revisions", format!("must be a whole number from 1 to 100, got {value}"));
                        DEFAULT_KEEP_REVISIONS
                    }
                },
            };
            let registry =
                fields.get("registry").and_then(|value| Registry::parse(value, fields.key("registry"), &problems));
            let pipeline =
                fields.object("environments", true).and_then(|environments| Pipeline::parse(&environments, endpoints));
            Some(AppConfig {
                name: name?,
                parameter: parameter.to_owned(),
                repository: repository?,
                container: container?,
                tags: tags?,
                pipeline: pipeline?,
                slack_webhook_parameter,
                rollout_timeout,
                registry,
                keep_revisions,
            })
        });
        match parsed {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError { parameter: parameter.to_owned(), problems: problems.into_vec() }),
        }
    }
}

#[allow(clippy::unwrap_used)] // literal patterns, covered by tests
static REPOSITORY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$").unwrap());
#[allow(clippy::unwrap_used)]
static PARAMETER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^/?[A-Za-z0-9_.\-/]{1,1011}$").unwrap());

/// One app-config parameter as read from SSM.
#[derive(Debug, Clone, Copy)]
pub struct RawApp<'a> {
    pub parameter: &'a str,
    pub value: &'a str,
    pub version: i64,
    /// When the parameter was last written: of two apps claiming one service, the later is invalid.
    pub modified: Option<DateTime<Utc>>,
}

/// An app whose configuration is invalid, with what is needed to tell people once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidApp {
    pub error: ConfigError,
    /// The parameter version the error is about (announced once per version).
    pub version: i64,
    /// The `repository` it names, when that much can be read: pushes there concern it.
    pub repository: Option<String>,
}

/// Every app read from SSM: the valid ones, and what was wrong with the others.
#[derive(Debug, Default)]
pub struct ConfigSet {
    pub apps: Vec<AppConfig>,
    pub invalid: Vec<InvalidApp>,
}

impl ConfigSet {
    /// Builds the set from the parameters under `{prefix}/apps/`, for functions that call only what
    /// `endpoints` admits.
    pub fn from_parameters<'a>(
        apps_path: &str,
        parameters: impl IntoIterator<Item = RawApp<'a>>,
        endpoints: Endpoints,
    ) -> Self {
        let mut set = ConfigSet::default();
        let mut valid = Vec::new();
        for raw in parameters {
            let app = raw.parameter.strip_prefix(apps_path).unwrap_or(raw.parameter);
            match AppConfig::parse(raw.parameter, app, raw.value, endpoints) {
                Ok(config) => valid.push((raw, config)),
                Err(error) => {
                    set.invalid.push(InvalidApp { error, version: raw.version, repository: repository_of(raw.value) })
                }
            }
        }
        // Two apps naming one service: the one written first keeps it.
        valid.sort_by(|(a, _), (b, _)| (a.modified, a.parameter).cmp(&(b.modified, b.parameter)));
        for (raw, config) in valid {
            let claimed = config.pipeline.targets().find_map(|(env, index, target)| {
                set.apps.iter().find_map(|other: &AppConfig| {
                    other.pipeline.targets().find(|(_, _, theirs)| theirs.same_service(target)).map(
                        |(other_env, other_index, _)| {
                            (
                                env.target_path(index),
                                target.label(),
                                other.name.clone(),
                                other_env.target_path(other_index),
                            )
                        },
                    )
                })
            });
            match claimed {
                None => set.apps.push(config),
                Some((path, label, other, other_path)) => {
                    let other_path = other_path.strip_prefix("environments.").unwrap_or(&other_path);
                    let error = ConfigError::one(
                        raw.parameter,
                        &format!("{path}.service"),
                        format!(
                            "service {label} is already {other}'s {other_path} service (its parameter was written earlier); one service belongs to one app"
                        ),
                    );
                    set.invalid.push(InvalidApp { error, version: raw.version, repository: Some(config.repository) });
                }
            }
        }
        set.apps.sort_by(|a, b| a.name.cmp(&b.name));
        set
    }

    pub fn app(&self, name: &AppName) -> Option<&AppConfig> {
        self.apps.iter().find(|app| &app.name == name)
    }

    /// The error of an invalid app's parameter, if that app is invalid.
    pub fn invalid_app(&self, parameter: &str) -> Option<&InvalidApp> {
        self.invalid.iter().find(|invalid| invalid.error.parameter == parameter)
    }

    pub fn fed_by<'a>(&'a self, repository: &'a str) -> impl Iterator<Item = &'a AppConfig> + 'a {
        self.apps.iter().filter(move |app| app.repository == repository)
    }

    /// The app and environment that own the ECS service at `place`, if any.
    pub fn owner_of(&self, place: &Place<'_>, home: &Home) -> Option<(&AppConfig, Environment, usize)> {
        self.apps.iter().find_map(|app| {
            let found = app.pipeline.targets().find(|(_, _, target)| target.is_at(place, home));
            found.map(|(env, index, _)| (app, env.name, index))
        })
    }

    /// The apps' environments gated on `alarm` with a target where the alarm is (an alarm lives
    /// in one account and region).
    pub fn gated_on(
        &self,
        alarm: &str,
        account: Option<&str>,
        region: Option<&str>,
        home: &Home,
    ) -> Vec<(&AppConfig, Environment)> {
        self.apps
            .iter()
            .flat_map(|app| app.pipeline.environments.iter().map(move |env| (app, env)))
            .filter(|(_, env)| env.alarms.iter().any(|name| name == alarm))
            .filter(|(_, env)| env.targets.iter().any(|target| target.is_in(account, region, home)))
            .map(|(app, env)| (app, env.name))
            .collect()
    }
}

/// The `repository` an (invalid) app config names, if it can be read at all.
fn repository_of(json: &str) -> Option<String> {
    serde_json::from_str::<Value>(json).ok()?.get("repository")?.as_str().map(str::to_owned)
}

/// The apps' configs, read from SSM Parameter Store and kept for [`CACHE_TTL`]; and which invalid
/// config versions this process has already announced (saves a write per push).
pub struct Configs {
    ssm: Ssm,
    prefix: String,
    endpoints: Endpoints,
    cached: Mutex<Option<(Instant, Arc<ConfigSet>)>>,
    mentioned: std::sync::Mutex<std::collections::HashSet<(String, i64)>>,
}

impl Configs {
    /// The configs under `{prefix}/apps/`, for functions that call only what `endpoints` admits.
    pub fn new(ssm: Ssm, prefix: &str, endpoints: Endpoints) -> Self {
        Configs {
            ssm,
            prefix: prefix.trim_end_matches('/').to_owned(),
            endpoints,
            cached: Mutex::new(None),
            mentioned: std::sync::Mutex::default(),
        }
    }

    /// The parameter that configures `app`.
    pub fn parameter_of(&self, app: &AppName) -> String {
        format!("{}/apps/{app}", self.prefix)
    }

    pub async fn get(&self) -> Result<Arc<ConfigSet>, AwsError> {
        let mut cached = self.cached.lock().await;
        if let Some((loaded, set)) = cached.as_ref() {
            if loaded.elapsed() < CACHE_TTL {
                return Ok(set.clone());
            }
        }
        let apps_path = format!("{}/apps/", self.prefix);
        let parameters = self.ssm.parameters_by_path(&apps_path, false).await?;
        let set = Arc::new(ConfigSet::from_parameters(
            &apps_path,
            parameters.iter().map(|p| RawApp {
                parameter: &p.name,
                value: &p.value,
                version: p.version,
                modified: p.modified,
            }),
            self.endpoints,
        ));
        for invalid in &set.invalid {
            let error = &invalid.error;
            tracing::error!(parameter = %error.parameter, key = %error.key(), problem = %error.problem(),
                problems = error.problems.len(), error = %error, version = invalid.version, "invalid app config skipped");
        }
        *cached = Some((Instant::now(), set.clone()));
        Ok(set)
    }

    /// `true` the first time this process meets an invalid config's version.
    pub fn first_mention(&self, parameter: &str, version: i64) -> bool {
        self.mentioned.lock().map(|mut seen| seen.insert((parameter.to_owned(), version))).unwrap_or(true)
    }

    /// Forgets a mention whose announcement did not happen (the next one tries again).
    pub fn forget_mention(&self, parameter: &str, version: i64) {
        if let Ok(mut seen) = self.mentioned.lock() {
            seen.remove(&(parameter.to_owned(), version));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ImageDigest;

    const EXAMPLE: &str = r#"{
      "repository": "shop-api",
      "container": "api",
      "tags": "^(v[0-9]+\\.[0-9]+\\.[0-9]+|[0-9a-f]{7,40})$",
      "environments": {
        "stage": { "cluster": "stage-cluster", "service": "shop-api",
                   "health_url": "https://stage.internal/health" },
        "prod":  { "cluster": "prod-cluster",  "service": "shop-api" }
      },
      "slack_webhook_parameter": "/conveyor/secrets/slack-webhook"
    }"#;

    fn parse(json: &str) -> Result<AppConfig, ConfigError> {
        AppConfig::parse("/conveyor/apps/shop-api", "shop-api", json, Endpoints::Public)
    }

    fn edit(f: impl FnOnce(&mut Value)) -> String {
        let mut value: Value = serde_json::from_str(EXAMPLE).unwrap();
        f(&mut value);
        value.to_string()
    }

    fn tag(t: &str) -> ImageTag {
        ImageTag::parse(t).unwrap()
    }

    #[test]
    fn images_come_from_the_apps_registry_or_conveyors_own() {
        let home = Home { account: Some("111122223333".into()), region: Some("eu-west-1".into()) };
        let own = parse(EXAMPLE).unwrap().registry(&home).unwrap();
        assert_eq!(own, Registry { account: "111122223333".into(), region: "eu-west-1".into() });
        let named =
            parse(&edit(|v| v["registry"] = serde_json::json!({"account": "444455556666", "region": "us-east-2"})))
                .unwrap()
                .registry(&home)
                .unwrap();
        let digest = ImageDigest::parse(format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(
            named.image("shop-api", &digest),
            format!("444455556666.dkr.ecr.us-east-2.amazonaws.com/shop-api@{digest}")
        );
        assert!(named.admits(Some("444455556666"), Some("us-east-2")));
        assert!(named.admits(None, None), "what the event leaves out does not rule it out");
        assert!(!named.admits(Some("111122223333"), Some("us-east-2")), "another account");
        assert!(!named.admits(Some("444455556666"), Some("eu-west-1")), "another region");
        assert_eq!(parse(EXAMPLE).unwrap().registry(&Home::default()), None, "outside Lambda, with no registry named");
        for (registry, key) in [
            (serde_json::json!({"account": "4444", "region": "us-east-2"}), "registry.account"),
            (serde_json::json!({"account": "444455556666"}), "registry.region"),
            (serde_json::json!({"account": "444455556666", "region": "us-east-2", "host": "evil.io"}), "registry.host"),
        ] {
            let error = parse(&edit(|v| v["registry"] = registry.clone())).unwrap_err();
            assert_eq!(error.key(), key, "{registry}");
        }
    }

    #[test]
    fn contract_example_parses() {
        let app = parse(EXAMPLE).unwrap();
        assert_eq!(app.name.as_str(), "shop-api");
        assert_eq!(app.repository, "shop-api");
        assert_eq!(
            app.target(Environment::STAGE).unwrap().health_url.as_deref(),
            Some("https://stage.internal/health")
        );
        assert_eq!(app.target(Environment::PROD).unwrap().health_url, None);
        assert_eq!(app.rollout_timeout, DEFAULT_ROLLOUT_TIMEOUT);
        assert_eq!(app.keep_revisions, DEFAULT_KEEP_REVISIONS);
        assert!(app.tags.admits(&tag("v1.2.3")));
        assert!(app.tags.admits(&tag("0a1b2c3")));
        assert!(!app.tags.admits(&tag("latest")));
        assert!(!app.tags.admits(&tag("feature-x")));
    }

    #[test]
    fn default_tag_policy_admits_all_but_latest() {
        let app = parse(&edit(|v| {
            v.as_object_mut().unwrap().remove("tags");
        }))
        .unwrap();
        assert!(app.tags.admits(&tag("feature-x")));
        assert!(!app.tags.admits(&tag("latest")));
    }

    /// The config is invalid, and one of its problems is at `key` and says `needle`.
    #[track_caller]
    fn assert_rejected(json: &str, key: &str, needle: &str) {
        let error = parse(json).unwrap_err();
        assert_eq!(error.parameter, "/conveyor/apps/shop-api");
        assert!(error.problems.iter().any(|p| p.key == key && p.problem.contains(needle)), "{key}: {needle}: {error}");
        assert!(error.to_string().contains("/conveyor/apps/shop-api"));
    }

    #[test]
    fn errors_name_the_parameter_and_the_key() {
        assert_rejected(&edit(|v| v["colour"] = "red".into()), "colour", "unknown key");
        assert_rejected(
            &edit(|v| v["environments"]["stage"]["port"] = 80.into()),
            "environments.stage.port",
            "unknown key",
        );
        assert_rejected(
            &edit(|v| v["environments"]["QA"] = v["environments"]["stage"].clone()),
            "environments.QA",
            "not an environment name",
        );
        assert_rejected(&edit(|v| v["tags"] = "(unclosed".into()), "tags", "regular expression");
        assert_rejected(&edit(|v| v["tags"] = 5.into()), "tags", "must be a string");
        assert_rejected(
            &edit(|v| {
                v.as_object_mut().unwrap().remove("repository");
            }),
            "repository",
            "missing",
        );
        assert_rejected(
            &edit(|v| {
                v.as_object_mut().unwrap().remove("environments");
            }),
            "environments",
            "missing",
        );
        assert_rejected(
            &edit(|v| {
                v["environments"]["stage"]["from"] = "prod".into();
                v["environments"]["prod"]["from"] = "stage".into();
            }),
            "environments",
            "no entry environment",
        );
        assert_rejected(
            &edit(|v| {
                v["environments"]["prod"].as_object_mut().unwrap().remove("cluster");
            }),
            "environments.prod.cluster",
            "missing",
        );
        assert_rejected(
            &edit(|v| v["environments"]["prod"]["service"] = "arn:aws:ecs:x".into()),
            "environments.prod.service",
            "not an ARN",
        );
        assert_rejected(
            &edit(|v| v["environments"]["stage"]["health_url"] = "stage.internal".into()),
            "environments.stage.health_url",
            "URL",
        );
        assert_rejected(&edit(|v| v["repository"] = "Shop API".into()), "repository", "ECR repository");
        assert_rejected(&edit(|v| v["rollout_timeout_seconds"] = 0.into()), "rollout_timeout_seconds", "whole number");
        assert_rejected(&edit(|v| v["keep_revisions"] = 0.into()), "keep_revisions", "from 1 to 100");
        assert_rejected(
            &edit(|v| v["environments"]["prod"] = v["environments"]["stage"].clone()),
            "environments.prod.service",
            "is already environments.stage",
        );
        assert_rejected("[1]", "(document)", "JSON object");
        assert_rejected("{", "(document)", "not valid JSON");
    }

    fn health(url: &str, allow_http: Option<bool>, endpoints: Endpoints) -> Result<AppConfig, ConfigError> {
        let json = edit(|v| {
            v["environments"]["stage"]["health_url"] = url.into();
            if let Some(allow) = allow_http {
                v["environments"]["stage"]["health_allow_http"] = allow.into();
            }
        });
        AppConfig::parse("/conveyor/apps/shop-api", "shop-api", &json, endpoints)
    }

    #[test]
    fn a_health_url_is_https_unless_http_is_allowed_by_its_key() {
        assert!(health("https://shop.example.com/health", None, Endpoints::Public).is_ok());
        assert!(health("https://10.0.3.7:8443/health", None, Endpoints::Public).is_ok(), "private addresses are fine");
        let error = health("http://shop.example.com/health", None, Endpoints::Public).unwrap_err();
        assert_eq!(error.key(), "environments.stage.health_url");
        assert!(error.problem().contains("https://"), "{error}");
        assert!(error.problem().contains("environments.stage.health_allow_http"), "says how to allow it: {error}");
        assert!(health("http://shop.example.com/health", Some(false), Endpoints::Public).is_err());
        let allowed = health("http://shop.example.com/health", Some(true), Endpoints::Public).unwrap();
        assert_eq!(
            allowed.target(Environment::STAGE).unwrap().health_url.as_deref(),
            Some("http://shop.example.com/health")
        );
        assert!(
            health("http://shop.example.com/health", None, Endpoints::Local).is_err(),
            "the local switch is for this machine only"
        );
        for other in ["ftp://shop.example.com/health", "file:///etc/passwd"] {
            let error = health(other, Some(true), Endpoints::Public).unwrap_err();
            assert_eq!(error.key(), "environments.stage.health_url", "{other}");
        }
        let error = parse(&edit(|v| v["environments"]["prod"]["health_allow_http"] = "yes".into())).unwrap_err();
        assert_eq!(error.key(), "environments.prod.health_allow_http");
        assert!(error.problem().contains("true or false"), "{error}");
    }

    #[test]
    fn a_health_url_never_points_to_loopback_link_local_or_metadata_addresses() {
        for url in [
            "https://127.0.0.1/health",
            "https://2130706433/health",
            "https://[::1]/health",
            "https://localhost:8443/health",
            "https://api.localhost/health",
            "https://169.254.169.254/latest/meta-data/",
            "https://169.254.170.2/v2/credentials",
            "https://[fd00:ec2::254]/",
            "https://169.254.10.10/",
            "https://[fe80::1]/",
            "https://0.0.0.0/",
        ] {
            for allow_http in [None, Some(true)] {
                let error = health(url, allow_http, Endpoints::Public).unwrap_err();
                assert_eq!(error.key(), "environments.stage.health_url", "{url}");
                assert!(error.problem().contains("address"), "{error}");
            }
        }
        // The local switch admits this machine (over http too, without the key), nothing else.
        for url in ["http://127.0.0.1:8080/health", "https://[::1]/health", "http://localhost/health"] {
            assert!(health(url, None, Endpoints::Local).is_ok(), "{url}");
        }
        for url in ["http://169.254.169.254/", "https://169.254.170.2/", "http://[fe80::1]/"] {
            assert!(health(url, Some(true), Endpoints::Local).is_err(), "{url}");
        }
    }

    #[test]
    fn bad_app_name_is_reported() {
        let error = AppConfig::parse("/conveyor/apps/Shop", "Shop", EXAMPLE, Endpoints::Public).unwrap_err();
        assert_eq!(error.key(), "(parameter name)");
    }

    fn raw<'a>(parameter: &'a str, value: &'a str, minute: i64) -> RawApp<'a> {
        RawApp { parameter, value, version: 1, modified: DateTime::from_timestamp(1_700_000_000 + minute * 60, 0) }
    }

    fn web() -> String {
        edit(|v| {
            v["environments"]["stage"]["service"] = "shop-web".into();
            v["environments"]["prod"]["service"] = "shop-web".into();
        })
    }

    #[test]
    fn one_invalid_app_does_not_hide_the_others() {
        let web = web();
        let set = ConfigSet::from_parameters(
            "/c/apps/",
            [raw("/c/apps/shop-api", EXAMPLE, 0), raw("/c/apps/broken", "{}", 1), raw("/c/apps/shop-web", &web, 2)],
            Endpoints::Public,
        );
        assert_eq!(set.apps.len(), 2);
        assert_eq!(set.invalid.len(), 1);
        assert_eq!(set.invalid[0].error.parameter, "/c/apps/broken");
        assert_eq!(set.fed_by("shop-api").count(), 2);
        assert_eq!(set.fed_by("other").count(), 0);
        let at = |cluster: Option<&'static str>, service: &'static str| Place {
            account: None,
            region: None,
            cluster,
            service,
        };
        let home = Home::default();
        let (app, env, _) = set.owner_of(&at(Some("prod-cluster"), "shop-api"), &home).unwrap();
        assert_eq!((app.name.as_str(), env), ("shop-api", Environment::PROD));
        assert!(set.owner_of(&at(Some("prod-cluster"), "nope"), &home).is_none());
        assert_eq!(set.owner_of(&at(None, "shop-api"), &home).map(|(_, env, _)| env), Some(Environment::STAGE));
        assert!(set.owner_of(&at(Some("other-cluster"), "shop-api"), &home).is_none());
    }

    #[test]
    fn of_two_apps_claiming_one_service_the_later_written_is_invalid() {
        let set = ConfigSet::from_parameters(
            "/c/apps/",
            [raw("/c/apps/zz-first", EXAMPLE, 0), raw("/c/apps/aa-second", EXAMPLE, 5)],
            Endpoints::Public,
        );
        assert_eq!(set.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["zz-first"]);
        let error = &set.invalid[0].error;
        assert_eq!(error.parameter, "/c/apps/aa-second");
        assert_eq!(error.key(), "environments.stage.service");
        assert!(error.problem().contains("zz-first"), "{error}");
        assert_eq!(set.invalid[0].repository.as_deref(), Some("shop-api"));
    }

    #[test]
    fn environments_in_other_accounts_and_regions() {
        let prod = serde_json::json!({ "cluster": "prod", "service": "shop-api", "region": "eu-west-1",
            "role_arn": "arn:aws:iam::210987654321:role/conveyor-target" });
        let app = parse(&edit(|v| v["environments"]["prod"] = prod.clone())).unwrap();
        assert_eq!(
            app.target(Environment::PROD).unwrap().account.as_deref(),
            Some("210987654321"),
            "the role's account"
        );
        assert_eq!(app.target(Environment::PROD).unwrap().region.as_deref(), Some("eu-west-1"));
        let home = Home { account: Some("123456789012".into()), region: Some("us-east-1".into()) };
        let place = |account, region| Place {
            account: Some(account),
            region: Some(region),
            cluster: Some("prod"),
            service: "shop-api",
        };
        assert!(app.target(Environment::PROD).unwrap().is_at(&place("210987654321", "eu-west-1"), &home));
        assert!(
            !app.target(Environment::PROD).unwrap().is_at(&place("123456789012", "eu-west-1"), &home),
            "same names in Conveyor's own account"
        );
        assert!(!app.target(Environment::PROD).unwrap().is_at(&place("210987654321", "us-east-1"), &home));
        let stage_place = Place {
            account: Some("123456789012"),
            region: Some("us-east-1"),
            cluster: Some("stage-cluster"),
            service: "shop-api",
        };
        assert!(app.target(Environment::STAGE).unwrap().is_at(&stage_place, &home));
        assert!(!app
            .target(Environment::STAGE)
            .unwrap()
            .is_at(&Place { account: Some("999999999999"), ..stage_place }, &home));

        let mismatch = edit(|v| {
            v["environments"]["prod"] = prod.clone();
            v["environments"]["prod"]["account"] = "111111111111".into();
        });
        assert_rejected(&mismatch, "environments.prod.role_arn", "not in `account` 111111111111");
        assert_rejected(
            &edit(|v| v["environments"]["prod"]["account"] = "210987654321".into()),
            "environments.prod.role_arn",
            "missing",
        );
        assert_rejected(
            &edit(|v| v["environments"]["prod"]["account"] = "12345".into()),
            "environments.prod.account",
            "12-digit",
        );
        assert_rejected(
            &edit(|v| v["environments"]["prod"]["region"] = "Europe".into()),
            "environments.prod.region",
            "region",
        );
        assert_rejected(
            &edit(|v| v["environments"]["prod"]["role_arn"] = "arn:aws:iam::210987654321:user/bob".into()),
            "environments.prod.role_arn",
            "role ARN",
        );
        // The same names in another account are another service.
        let elsewhere = edit(|v| {
            v["environments"]["prod"] = v["environments"]["stage"].clone();
            v["environments"]["prod"]["role_arn"] = "arn:aws:iam::210987654321:role/conveyor-target".into();
        });
        assert!(parse(&elsewhere).is_ok());
    }

    #[test]
    fn every_problem_of_a_config_is_reported_at_once() {
        let error = parse(&edit(|v| {
            v["contianer"] = v.as_object_mut().unwrap().remove("container").unwrap();
            v["tags"] = "(unclosed".into();
            v["environments"]["prod"]["region"] = "Europe".into();
        }))
        .unwrap_err();
        let keys: Vec<&str> = error.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["contianer", "container", "tags", "environments.prod.region"]);
        assert_eq!(error.key(), "contianer");
        assert!(error.to_string().contains("4 problems: `contianer`: unknown key"), "{error}");
        let one = parse(&edit(|v| v["colour"] = "red".into())).unwrap_err();
        assert!(one.to_string().ends_with("key `colour`: unknown key (allowed: repository, container, tags, environments, slack_webhook_parameter, rollout_timeout_seconds, registry, keep_revisions)"), "{one}");
    }

    #[test]
    fn a_pipeline_of_any_environments_runs_and_what_this_release_does_not_is_refused_at_its_key() {
        let three = edit(|v| {
            v["environments"]["dev"] = serde_json::json!({ "cluster": "dev", "service": "shop-api" });
            v["environments"]["stage"]["from"] = "dev".into();
            v["environments"]["prod"]["from"] = "stage".into();
        });
        let app = parse(&three).unwrap();
        let names: Vec<String> = app.pipeline.environments.iter().map(|e| e.name.to_string()).collect();
        assert_eq!(names, ["dev", "stage", "prod"]);
        let dev = Environment::parse("dev").unwrap();
        assert_eq!(app.target(dev).unwrap().cluster, "dev");
        assert!(app
            .target(Environment::parse("qa").unwrap())
            .unwrap_err()
            .to_string()
            .contains("it has: dev, stage, prod"));
        let approval = edit(|v| {
            v["environments"]["prod"]["from"] = "stage".into();
            v["environments"]["prod"]["approval"] = true.into();
        });
        let approval = parse(&approval).unwrap();
        assert!(approval.pipeline.approval(Environment::PROD).is_some());
        let alarms = edit(|v| v["environments"]["prod"]["alarms"] = serde_json::json!(["shop-api-5xx"]));
        assert_eq!(parse(&alarms).unwrap().pipeline.environment(Environment::PROD).unwrap().alarms, ["shop-api-5xx"]);
        let two_regions = edit(|v| {
            v["environments"]["prod"] = serde_json::json!({ "targets": [
                { "cluster": "prod", "service": "shop-api", "region": "eu-west-1" },
                { "cluster": "prod", "service": "shop-api", "region": "us-east-1" } ] });
        });
        let two_regions = parse(&two_regions).unwrap();
        let regions: Vec<_> =
            two_regions.targets(Environment::PROD).unwrap().iter().map(|t| t.region.as_deref().unwrap()).collect();
        assert_eq!(regions, ["eu-west-1", "us-east-1"]);
        // v2, written the v3 way.
        let explicit = edit(|v| {
            v["environments"]["prod"] = serde_json::json!({ "from": "stage", "promotion": "manual",
                "targets": [{ "cluster": "prod-cluster", "service": "shop-api" }] });
        });
        assert_eq!(parse(&explicit).unwrap().target(Environment::PROD).unwrap().cluster, "prod-cluster");
    }

    #[test]
    fn an_invalid_config_keeps_its_repository_for_the_announcement() {
        let typo = edit(|v| v["contianer"] = "api".into());
        let set = ConfigSet::from_parameters("/c/apps/", [raw("/c/apps/cart", &typo, 0)], Endpoints::Public);
        assert_eq!(set.invalid[0].error.key(), "contianer");
        assert_eq!(set.invalid[0].repository.as_deref(), Some("shop-api"));
    }
}
