//! Checking app configs before they reach SSM (`conveyor config validate`, `conveyor config put`)
//! with the functions' own validator ([`ConfigSet::from_parameters`]): each app on its own, and
//! against the other apps (two apps never claim one service).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws::Parameter;
use crate::config::{ConfigSet, Problem, RawApp};
use crate::web::Endpoints;

/// An app config to check: the app's name and its JSON (from a file, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub app: String,
    pub json: String,
}

/// What the validator says of one app's config. Every key is always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub app: String,
    /// The parameter it is (or would be) stored in.
    pub parameter: String,
    pub valid: bool,
    /// The offending key (`environments.prod.cluster`, `(document)`, ...), when invalid.
    pub key: Option<String>,
    pub problem: Option<String>,
    /// The whole error, naming the parameter and the key.
    pub error: Option<String>,
    /// Every problem of the config, each with its key (the first is `key` and `problem`); empty
    /// when valid.
    pub problems: Vec<Problem>,
}

fn verdicts<'a>(set: &ConfigSet, apps_path: &str, parameters: impl Iterator<Item = &'a str>) -> Vec<Verdict> {
    parameters
        .map(|parameter| {
            let app = parameter.strip_prefix(apps_path).unwrap_or(parameter).to_owned();
            match set.invalid_app(parameter) {
                Some(invalid) => Verdict {
                    app,
                    parameter: parameter.to_owned(),
                    valid: false,
                    key: Some(invalid.error.key().to_owned()),
                    problem: Some(invalid.error.problem().to_owned()),
                    error: Some(invalid.error.to_string()),
                    problems: invalid.error.problems.clone(),
                },
                None => Verdict {
                    app,
                    parameter: parameter.to_owned(),
                    valid: true,
                    key: None,
                    problem: None,
                    error: None,
                    problems: Vec::new(),
                },
            }
        })
        .collect()
}

/// Checks `candidates` as if they were written to `{apps_path}{app}` at `now`, alongside the
/// apps already there (`existing`, whose parameters the candidates replace): a candidate that
/// claims a service another app already has is invalid, as the functions would find it (functions
/// that call only what `endpoints` admits).
pub fn check(
    apps_path: &str,
    existing: &[Parameter],
    candidates: &[Candidate],
    now: DateTime<Utc>,
    endpoints: Endpoints,
) -> Vec<Verdict> {
    let names: Vec<String> = candidates.iter().map(|c| format!("{apps_path}{}", c.app)).collect();
    let kept = existing.iter().filter(|p| !names.contains(&p.name)).map(|p| RawApp {
        parameter: &p.name,
        value: &p.value,
        version: p.version,
        modified: p.modified,
    });
    let new = candidates.iter().zip(&names).map(|(c, name)| RawApp {
        parameter: name,
        value: &c.json,
        version: 0,
        modified: Some(now),
    });
    let set = ConfigSet::from_parameters(apps_path, kept.chain(new), endpoints);
    verdicts(&set, apps_path, names.iter().map(String::as_str))
}

/// Checks every app stored under `apps_path`, as the functions read them.
pub fn check_stored(apps_path: &str, existing: &[Parameter], endpoints: Endpoints) -> Vec<Verdict> {
    let set = ConfigSet::from_parameters(
        apps_path,
        existing.iter().map(|p| RawApp {
            parameter: &p.name,
            value: &p.value,
            version: p.version,
            modified: p.modified,
        }),
        endpoints,
    );
    let mut names: Vec<&str> = existing.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    verdicts(&set, apps_path, names.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(cluster: &str, service: &str) -> String {
        json!({ "repository": "shop", "container": "api", "environments": {
            "stage": { "cluster": format!("{cluster}-stage"), "service": service },
            "prod": { "cluster": format!("{cluster}-prod"), "service": service } } })
        .to_string()
    }

    fn stored(name: &str, json: String, minute: i64) -> Parameter {
        Parameter {
            name: format!("/c/apps/{name}"),
            value: json,
            version: 3,
            modified: DateTime::from_timestamp(1_700_000_000 + minute * 60, 0),
        }
    }

    #[test]
    fn a_new_config_claiming_another_apps_service_is_invalid() {
        let existing = [stored("shop-api", config("main", "shop-api"), 0), stored("broken", "{}".into(), 1)];
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let candidates = [
            Candidate { app: "shop-web".into(), json: config("main", "shop-api") },
            Candidate { app: "billing".into(), json: config("main", "billing") },
            Candidate { app: "cart".into(), json: json!({ "repository": "cart", "contianer": "api" }).to_string() },
            Candidate { app: "Bad_Name".into(), json: config("main", "bad") },
        ];
        let verdicts = check("/c/apps/", &existing, &candidates, now, Endpoints::Public);
        let summary: Vec<(&str, bool, Option<&str>)> =
            verdicts.iter().map(|v| (v.app.as_str(), v.valid, v.key.as_deref())).collect();
        assert_eq!(
            summary,
            [
                ("shop-web", false, Some("environments.stage.service")),
                ("billing", true, None),
                ("cart", false, Some("contianer")),
                ("Bad_Name", false, Some("(parameter name)")),
            ]
        );
        assert!(verdicts[0].problem.as_deref().unwrap().contains("shop-api's stage service"), "{verdicts:?}");
        assert!(verdicts[0].error.as_deref().unwrap().contains("/c/apps/shop-web"));
        // The same app written again replaces its stored config (it does not clash with itself).
        let again = check(
            "/c/apps/",
            &existing,
            &[Candidate { app: "shop-api".into(), json: config("main", "shop-api") }],
            now,
            Endpoints::Public,
        );
        assert!(again[0].valid, "{again:?}");
    }

    #[test]
    fn stored_configs_are_checked_as_the_functions_read_them() {
        let existing = [
            stored("shop-api", config("main", "shop-api"), 5),
            stored("aa-first", config("main", "shop-api"), 0), // written first: it keeps the service
            stored("broken", "{".into(), 1),
        ];
        let verdicts = check_stored("/c/apps/", &existing, Endpoints::Public);
        let summary: Vec<(&str, bool)> = verdicts.iter().map(|v| (v.app.as_str(), v.valid)).collect();
        assert_eq!(summary, [("aa-first", true), ("broken", false), ("shop-api", false)]);
    }
}
