//! App config validation: an accepted config satisfies every rule of the contract; an error
//! names the parameter and a key.

use conveyor::config::AppConfig;
use conveyor::web::Endpoints;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::arbitrary::*;
use crate::cases;

/// The contract's patterns (the validator's are private: these say what a valid config is).
const NAME_PATTERN: &str = "[A-Za-z0-9_-]{1,40}";
const REPOSITORY_PATTERN: &str = "([a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}/){0,2}[a-z0-9]{1,8}([._-][a-z0-9]{1,6}){0,2}";

#[derive(Debug, Clone)]
struct TargetCase {
    cluster: String,
    service: String,
    health_url: Option<String>,
    /// `health_allow_http` (given whenever the URL is plain http, sometimes with https too).
    allow_http: Option<bool>,
    region: Option<String>,
    /// The role's account (and, when `with_account`, also given as `account`).
    role_account: Option<String>,
    with_account: bool,
}

/// A public host name (never `localhost`, never all digits: the URL parser reads `123` as an
/// address).
const PUBLIC_HOST: &str = "[a-z][a-z0-9-]{0,8}(\\.[a-z][a-z0-9-]{0,8}){0,2}(\\.[a-z]{2,6})";

/// A valid `health_url` and its `health_allow_http`: https, or http with the key.
fn health() -> impl Strategy<Value = (String, Option<bool>)> {
    (any::<bool>(), PUBLIC_HOST, prop::option::of(1u16..), "(/[!-~]{0,20})?", prop::option::of(any::<bool>())).prop_map(
        |(https, host, port, path, allow)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let scheme = if https { "https" } else { "http" };
            let allow = if https { allow } else { Some(true) };
            (format!("{scheme}://{host}{port}{path}"), allow)
        },
    )
}

fn target() -> impl Strategy<Value = TargetCase> {
    (
        NAME_PATTERN,
        NAME_PATTERN,
        prop::option::of(health()),
        prop::option::of("[a-z]{2}-[a-z]{3,9}-[0-9]"),
        prop::option::of("[0-9]{12}"),
        any::<bool>(),
    )
        .prop_map(|(cluster, service, health, region, role_account, with_account)| TargetCase {
            cluster,
            service,
            allow_http: health.as_ref().and_then(|(_, allow)| *allow),
            health_url: health.map(|(url, _)| url),
            region,
            role_account,
            with_account,
        })
}

impl TargetCase {
    fn json(&self) -> Value {
        let mut value = json!({ "cluster": self.cluster, "service": self.service });
        if let Some(url) = &self.health_url {
            value["health_url"] = json!(url);
        }
        if let Some(allow) = self.allow_http {
            value["health_allow_http"] = json!(allow);
        }
        if let Some(region) = &self.region {
            value["region"] = json!(region);
        }
        if let Some(account) = &self.role_account {
            value["role_arn"] = json!(format!("arn:aws:iam::{account}:role/conveyor-target"));
            if self.with_account {
                value["account"] = json!(account);
            }
        }
        value
    }

    fn same_service(&self, other: &TargetCase) -> bool {
        (&self.cluster, &self.service, &self.region, &self.role_account)
            == (&other.cluster, &other.service, &other.region, &other.role_account)
    }
}

#[derive(Debug, Clone)]
struct ConfigCase {
    app: String,
    repository: String,
    container: String,
    tags: Option<String>,
    stage: TargetCase,
    prod: TargetCase,
    slack: Option<String>,
    timeout: Option<u64>,
}

impl ConfigCase {
    fn json(&self) -> Value {
        let mut value = json!({
            "repository": self.repository, "container": self.container,
            "environments": { "stage": self.stage.json(), "prod": self.prod.json() },
        });
        if let Some(tags) = &self.tags {
            value["tags"] = json!(tags);
        }
        if let Some(slack) = &self.slack {
            value["slack_webhook_parameter"] = json!(slack);
        }
        if let Some(timeout) = self.timeout {
            value["rollout_timeout_seconds"] = json!(timeout);
        }
        value
    }
}

fn valid_config() -> impl Strategy<Value = ConfigCase> {
    (
        "[a-z0-9][a-z0-9-]{0,62}",
        REPOSITORY_PATTERN,
        NAME_PATTERN,
        prop::option::of(prop_oneof![Just("^v[0-9]+$".to_owned()), Just(".*".to_owned()), "[a-z0-9]{1,8}"]),
        target(),
        target(),
        prop::option::of("/?[A-Za-z0-9_.\\-/]{1,60}"),
        prop::option::of(1u64..=86_400),
    )
        .prop_filter("stage and prod are two services", |(_, _, _, _, stage, prod, _, _)| !stage.same_service(prod))
        .prop_map(|(app, repository, container, tags, stage, prod, slack, timeout)| ConfigCase {
            app,
            repository,
            container,
            tags,
            stage,
            prod,
            slack,
            timeout,
        })
}

/// Every key path of a config, and some that are not (unknown keys at every level).
const CONFIG_PATHS: &[&[&str]] = &[
    &["repository"],
    &["container"],
    &["tags"],
    &["environments"],
    &["slack_webhook_parameter"],
    &["rollout_timeout_seconds"],
    &["environments", "stage"],
    &["environments", "prod"],
    &["environments", "qa"],
    &["environments", "stage", "cluster"],
    &["environments", "stage", "service"],
    &["environments", "stage", "health_url"],
    &["environments", "stage", "health_allow_http"],
    &["environments", "stage", "account"],
    &["environments", "stage", "region"],
    &["environments", "stage", "role_arn"],
    &["environments", "prod", "cluster"],
    &["environments", "prod", "service"],
    &["environments", "prod", "role_arn"],
    &["environments", "prod", "port"],
    &["colour"],
];

/// An accepted config satisfies every rule of the contract (soundness); an error names the
/// parameter and a key.
fn check_config_result(result: &Result<AppConfig, conveyor::config::ConfigError>) -> Result<(), TestCaseError> {
    match result {
        Ok(app) => {
            let name = r"[A-Za-z0-9_-]{1,255}";
            prop_assert!(matches(r"[a-z0-9][a-z0-9-]{0,62}", app.name.as_str()), "app {}", app.name);
            let repository = r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*";
            prop_assert!(matches(repository, &app.repository), "repository {:?}", app.repository);
            prop_assert!(matches(name, &app.container), "container {:?}", app.container);
            for (_, _, target) in app.pipeline.targets() {
                prop_assert!(matches(name, &target.cluster), "cluster {:?}", target.cluster);
                prop_assert!(matches(name, &target.service), "service {:?}", target.service);
                if let Some(url) = &target.health_url {
                    prop_assert!(
                        url.starts_with("https://") || (url.starts_with("http://") && target.health_allow_http),
                        "{url} without health_allow_http"
                    );
                    let parsed = reqwest::Url::parse(url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
                    let refused = conveyor::web::refused_host(&parsed, Endpoints::Public);
                    prop_assert!(refused.is_none(), "{url} points to {:?}", refused);
                }
                if let Some(account) = &target.account {
                    prop_assert!(matches("[0-9]{12}", account), "account {:?}", account);
                    let role_there =
                        target.role_arn.as_deref().is_some_and(|arn| arn.contains(&format!("::{account}:role/")));
                    prop_assert!(role_there, "role {:?} not in account {}", target.role_arn, account);
                }
            }
            let targets: Vec<_> = app.pipeline.targets().map(|(_, _, t)| t).collect();
            for (i, target) in targets.iter().enumerate() {
                prop_assert!(!targets[..i].iter().any(|other| other.same_service(target)), "a service named twice");
            }
            prop_assert!((1..=86_400).contains(&app.rollout_timeout.as_secs()));
            prop_assert_eq!(&app.parameter, PARAMETER);
        }
        Err(error) => {
            prop_assert_eq!(&error.parameter, PARAMETER);
            prop_assert!(!error.problems.is_empty());
            // Only an unknown key that is the empty string is named as such.
            for problem in &error.problems {
                prop_assert!(!problem.key.is_empty() || problem.problem.contains("unknown key"), "{}", error);
            }
            let message = error.to_string();
            prop_assert!(message.contains(PARAMETER), "{}", message);
        }
    }
    Ok(())
}

/// The local switch only widens: what a real installation accepts, a local one accepts as is.
fn local_admits_what_public_admits(
    public: &Result<AppConfig, conveyor::config::ConfigError>,
    local: &Result<AppConfig, conveyor::config::ConfigError>,
) -> Result<(), TestCaseError> {
    if let (Ok(public), local) = (public, local) {
        let local = local.as_ref().map_err(|e| TestCaseError::fail(format!("refused only locally: {e}")))?;
        let targets = |app: &AppConfig| app.pipeline.targets().map(|(_, _, t)| t.clone()).collect::<Vec<_>>();
        prop_assert_eq!(targets(public), targets(local));
    }
    Ok(())
}

/// Hosts a health URL may never name (the loopback ones only with the local switch), in the
/// spellings the URL parser reads as the same address.
const REFUSED_HOSTS: &[(&str, bool)] = &[
    ("127.0.0.1", true),
    ("127.1", true),
    ("2130706433", true),
    ("0x7f000001", true),
    ("[::1]", true),
    ("[::ffff:127.0.0.1]", true),
    ("localhost", true),
    ("LocalHost.", true),
    ("shop.localhost", true),
    ("169.254.169.254", false),
    ("0xa9fea9fe", false),
    ("[::ffff:169.254.169.254]", false),
    ("169.254.170.2", false),
    ("[fd00:ec2::254]", false),
    ("169.254.0.1", false),
    ("[fe80::1]", false),
    ("0.0.0.0", false),
    ("0", false),
    ("[::]", false),
];

proptest! {
    #![proptest_config(cases(128))]

    /// A `health_url` on a loopback, link-local, unspecified or metadata address is refused,
    /// whatever its scheme, port, path or `health_allow_http`; the local switch admits loopback
    /// ones only (over http too, without the key).
    #[test]
    fn a_health_url_on_a_refused_address_is_refused((host, loopback) in prop::sample::select(REFUSED_HOSTS),
                                                    https in any::<bool>(),
                                                    port in prop::option::of(1u16..),
                                                    path in "(/[a-z0-9._-]{0,12})?",
                                                    allow in prop::option::of(any::<bool>()),
                                                    env in prop::sample::select(vec!["stage", "prod"])) {
        let scheme = if https { "https" } else { "http" };
        let url = format!("{scheme}://{host}{}{path}", port.map(|p| format!(":{p}")).unwrap_or_default());
        let mut document = example_config();
        document["environments"][env]["health_url"] = json!(url);
        if let Some(allow) = allow {
            document["environments"][env]["health_allow_http"] = json!(allow);
        }
        let error = AppConfig::parse(PARAMETER, "shop-api", &document.to_string(), Endpoints::Public)
            .map(|_| ()).expect_err("a refused address");
        prop_assert_eq!(error.key(), format!("environments.{env}.health_url"));
        prop_assert!(error.problem().contains("address"), "{}", error);
        let local = AppConfig::parse(PARAMETER, "shop-api", &document.to_string(), Endpoints::Local);
        prop_assert_eq!(local.is_ok(), loopback, "{} locally: {:?}", url, local.map(|_| ()));
    }

    /// Plain http needs `health_allow_http: true`, locally too (but for this machine); the error
    /// names the key and how to allow it.
    #[test]
    fn plain_http_needs_its_key(host in PUBLIC_HOST, allow in prop::option::of(Just(false)),
                                endpoints in prop::sample::select(vec![Endpoints::Public, Endpoints::Local])) {
        let mut document = example_config();
        document["environments"]["prod"]["health_url"] = json!(format!("http://{host}/health"));
        if let Some(allow) = allow {
            document["environments"]["prod"]["health_allow_http"] = json!(allow);
        }
        let error = AppConfig::parse(PARAMETER, "shop-api", &document.to_string(), endpoints)
            .map(|_| ()).expect_err("plain http");
        prop_assert_eq!(error.key(), "environments.prod.health_url");
        prop_assert!(error.problem().contains("environments.prod.health_allow_http"), "{}", error);
        document["environments"]["prod"]["health_allow_http"] = json!(true);
        let app = AppConfig::parse(PARAMETER, "shop-api", &document.to_string(), endpoints)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(app.target(conveyor::types::Environment::PROD).unwrap().health_allow_http);
    }

    /// Any text as the parameter's value, any text as the app's name.
    #[test]
    fn config_parse_never_panics_on_any_text(app in prop_oneof![text(), Just("shop-api".to_owned())],
                                             value in prop_oneof![any::<String>(), json_value().prop_map(|v| v.to_string())]) {
        let result = AppConfig::parse(PARAMETER, &app, &value, Endpoints::Public);
        if let Ok(config) = &result {
            prop_assert_eq!(config.name.as_str(), app.as_str());
        }
        check_config_result(&result)?;
        local_admits_what_public_admits(&result, &AppConfig::parse(PARAMETER, &app, &value, Endpoints::Local))?;
    }

    /// A config built from the contract's rules is accepted and read as written.
    #[test]
    fn a_valid_config_is_accepted_as_written(case in valid_config()) {
        let parameter = format!("/conveyor/apps/{}", case.app);
        let app = AppConfig::parse(&parameter, &case.app, &case.json().to_string(), Endpoints::Public)
            .map_err(|e| TestCaseError::fail(format!("{e} for {}", case.json())))?;
        prop_assert_eq!(app.name.as_str(), case.app.as_str());
        prop_assert_eq!(&app.repository, &case.repository);
        prop_assert_eq!(&app.container, &case.container);
        prop_assert_eq!(&app.slack_webhook_parameter, &case.slack);
        prop_assert_eq!(app.rollout_timeout.as_secs(), case.timeout.unwrap_or(1800));
        for (target, expected) in [
            (app.target(conveyor::types::Environment::STAGE).unwrap(), &case.stage),
            (app.target(conveyor::types::Environment::PROD).unwrap(), &case.prod),
        ] {
            prop_assert_eq!(&target.cluster, &expected.cluster);
            prop_assert_eq!(&target.service, &expected.service);
            prop_assert_eq!(&target.health_url, &expected.health_url);
            prop_assert_eq!(target.health_allow_http, expected.allow_http.unwrap_or(false));
            prop_assert_eq!(&target.region, &expected.region);
            prop_assert_eq!(&target.account, &expected.role_account);
        }
    }

    /// A valid config with one to three members replaced by anything, removed, or added.
    #[test]
    fn config_validation_is_sound_on_mutated_configs(case in valid_config(), edits in mutations(CONFIG_PATHS)) {
        let mut document = case.json();
        for (path, edit) in &edits {
            apply(&mut document, path, edit);
        }
        let result = AppConfig::parse(PARAMETER, "shop-api", &document.to_string(), Endpoints::Public);
        check_config_result(&result)?;
        local_admits_what_public_admits(&result, &AppConfig::parse(PARAMETER, "shop-api", &document.to_string(), Endpoints::Local))?;
        // An unknown key anywhere makes it invalid.
        for unknown in ["/environments/qa", "/environments/prod/port", "/colour"] {
            if document.pointer(unknown).is_some() && result.is_ok() {
                return Err(TestCaseError::fail(format!("unknown key {unknown} accepted: {document}")));
            }
        }
    }

    /// Any member name that is not a config key is refused, and the error names it.
    #[test]
    fn an_unknown_key_is_named(name in text().prop_filter("not a key", |k| !KEYS.contains(&k.as_str())),
                               value in json_value(),
                               level in 0usize..3) {
        let mut document = example_config();
        let path: Vec<&str> = match level {
            0 => vec![&name],
            1 => vec!["environments", &name],
            _ => vec!["environments", "prod", &name],
        };
        apply(&mut document, &path, &Edit::Set(value));
        let error = AppConfig::parse(PARAMETER, "shop-api", &document.to_string(), Endpoints::Public).expect_err("an unknown key");
        let key = path.join(".");
        if level == 1 {
            // Under `environments`, any name is an environment: refused as a name, a shape, or
            // an environment this release does not run.
            prop_assert!(error.problems.iter().any(|p| p.key.starts_with(&key)), "{}", error);
        } else {
            prop_assert!(error.problems.iter().any(|p| p.key == key && p.problem.contains("unknown key")), "{}", error);
        }
    }

    /// Any `tags` text: a regular expression or an error on `tags`, never a panic (nor a
    /// runaway compile: the size limit holds).
    #[test]
    fn any_tag_pattern_is_compiled_or_refused(pattern in prop_oneof![any::<String>(), "[(){}\\[\\]*+?|^$.\\\\a-z0-9,]{0,40}"]) {
        let mut document = example_config();
        document["tags"] = json!(pattern);
        match AppConfig::parse(PARAMETER, "shop-api", &document.to_string(), Endpoints::Public) {
            Ok(_) => prop_assert!(regex::Regex::new(&pattern).is_ok() || pattern.len() > 1000),
            Err(error) => prop_assert_eq!(error.key(), "tags"),
        }
    }

    /// `rollout_timeout_seconds`: whole seconds from 1 to 86400, anything else refused.
    #[test]
    fn rollout_timeouts_are_whole_seconds_in_range(value in prop_oneof![number(), json_value()]) {
        let mut document = example_config();
        document["rollout_timeout_seconds"] = value.clone();
        let result = AppConfig::parse(PARAMETER, "shop-api", &document.to_string(), Endpoints::Public);
        match value.as_u64() {
            _ if value.is_null() => prop_assert_eq!(result.map(|a| a.rollout_timeout.as_secs()).ok(), Some(1800)),
            Some(seconds @ 1..=86_400) => prop_assert_eq!(result.map(|a| a.rollout_timeout.as_secs()).ok(), Some(seconds)),
            _ => {
                let key = result.map_err(|e| e.key().to_owned()).err();
                prop_assert_eq!(key.as_deref(), Some("rollout_timeout_seconds"));
            }
        }
    }
}
