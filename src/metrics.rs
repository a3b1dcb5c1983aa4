//! CloudWatch metrics in the Embedded Metric Format: one JSON line on stdout per fact, which
//! Lambda's log pipeline turns into metrics (namespace `Conveyor`, dimensions app and
//! environment) — no metrics API call in the hot path.
//!
//! | metric | unit | when |
//! |---|---|---|
//! | `Deploying`, `Verified`, `RolledBack`, `Failed`, `Promoted`, `Superseded`, `Paused`, `Resumed`, `Drift`, `ConfigError` | Count | a transition with that outcome is committed |
//! | `PushToUpdateService` | Milliseconds | ECR push (event time) → the stage service updated |
//! | `RolloutToVerified` | Seconds | rollout started → verified |
//! | `FailureToRollback` | Milliseconds | FAILED event (or failed verification) → rollback issued |

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::notify::Notification;
use crate::vocabulary::Outcome;

pub const NAMESPACE: &str = "Conveyor";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// The metric counting an outcome: its name in CloudWatch's PascalCase (`rolled_back` →
/// `RolledBack`).
pub fn outcome_metric(outcome: Outcome) -> String {
    outcome
        .as_str()
        .split('_')
        .flat_map(|word| {
            let mut chars = word.chars();
            chars.next().map(|first| first.to_ascii_uppercase()).into_iter().chain(chars)
        })
        .collect()
}

/// One EMF document: `values` are (metric, unit, value); `properties` ride along (searchable in
/// Logs Insights, not dimensions).
pub fn document(
    app: &str,
    environment: &str,
    values: &[(&str, Unit, f64)],
    properties: &[(&str, &str)],
    at: DateTime<Utc>,
) -> Value {
    let definitions: Vec<Value> =
        values.iter().map(|(name, unit, _)| json!({ "Name": name, "Unit": unit.as_str() })).collect();
    let mut document = Map::new();
    document.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{ "Namespace": NAMESPACE, "Dimensions": [["app", "environment"]], "Metrics": definitions }],
        }),
    );
    document.insert("app".into(), json!(app));
    document.insert("environment".into(), json!(environment));
    for (name, _, value) in values {
        document.insert((*name).to_owned(), json!(value));
    }
    for (key, value) in properties {
        document.entry((*key).to_owned()).or_insert_with(|| json!(value));
    }
    Value::Object(document)
}

/// Writes a document where Lambda's log pipeline picks it up: stdout, inside Lambda only (the
/// CLI commits transitions too, and its stdout is its answer).
fn write(document: &Value) {
    static IN_LAMBDA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *IN_LAMBDA.get_or_init(|| std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()) {
        println!("{document}");
    }
}

/// Counts a committed transition.
pub fn transition(notification: &Notification) {
    let environment = notification.environment.map_or_else(|| "all".to_owned(), |e| e.to_string());
    let mut properties = vec![("outcome", notification.outcome.as_str())];
    let (tag, digest) =
        (notification.tag.as_ref().map(ToString::to_string), notification.digest.as_ref().map(ToString::to_string));
    if let Some(tag) = &tag {
        properties.push(("tag", tag));
    }
    if let Some(digest) = &digest {
        properties.push(("digest", digest));
    }
    let metric = outcome_metric(notification.outcome);
    write(&document(&notification.app, &environment, &[(&metric, Unit::Count, 1.0)], &properties, Utc::now()));
}

/// Revisions the sweep deregistered in one environment (`RevisionsDeregistered`).
pub fn revisions_deregistered(app: &crate::config::AppConfig, env: crate::types::Environment, count: usize) {
    let metrics = [("RevisionsDeregistered", Unit::Count, count as f64)];
    write(&document(app.name.as_str(), env.as_str(), &metrics, &[], Utc::now()));
}

/// A duration between two moments of a deployment.
pub fn latency(app: &str, environment: &str, metric: &str, unit: Unit, from: DateTime<Utc>, to: DateTime<Utc>) {
    let millis = (to - from).num_milliseconds().max(0) as f64;
    let value = if unit == Unit::Seconds { millis / 1000.0 } else { millis };
    write(&document(app, environment, &[(metric, unit, value)], &[], to));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Environment;
    use crate::vocabulary::Severity;

    /// Checks a document against the EMF specification: the `_aws` block, metric definitions,
    /// and every dimension and metric present as a top-level member of the right type.
    fn assert_valid_emf(document: &Value) {
        let aws = &document["_aws"];
        assert!(aws["Timestamp"].is_i64(), "Timestamp: {document}");
        let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
        assert!(!directives.is_empty());
        for directive in directives {
            assert!(directive["Namespace"].as_str().is_some_and(|n| !n.is_empty() && n.len() <= 256));
            let dimension_sets = directive["Dimensions"].as_array().expect("Dimensions");
            for set in dimension_sets {
                let set = set.as_array().expect("a dimension set");
                assert!(set.len() <= 30);
                for dimension in set {
                    let name = dimension.as_str().expect("a dimension name");
                    assert!(document[name].is_string(), "dimension {name} must be a string member: {document}");
                }
            }
            let metrics = directive["Metrics"].as_array().expect("Metrics");
            assert!(!metrics.is_empty() && metrics.len() <= 100);
            for metric in metrics {
                let name = metric["Name"].as_str().expect("Name");
                let unit = metric["Unit"].as_str().unwrap_or("None");
                assert!(["Count", "Milliseconds", "Seconds", "None"].contains(&unit), "{unit}");
                assert!(document[name].is_number(), "metric {name} must be a number member: {document}");
            }
        }
    }

    #[test]
    fn every_outcome_makes_a_valid_emf_document() {
        let outcomes = [
            Outcome::Deploying,
            Outcome::Verified,
            Outcome::RolledBack,
            Outcome::Failed,
            Outcome::Promoted,
            Outcome::Superseded,
            Outcome::Paused,
            Outcome::Resumed,
            Outcome::Drift,
            Outcome::ConfigError,
        ];
        for outcome in outcomes {
            let env = (outcome != Outcome::ConfigError).then_some(Environment::PROD);
            let notification = Notification::new("shop-api", env, outcome, Severity::Info);
            let document = document(
                &notification.app,
                &env.map_or_else(|| "all".to_owned(), |e| e.to_string()),
                &[(&outcome_metric(outcome), Unit::Count, 1.0)],
                &[("outcome", outcome.as_str())],
                Utc::now(),
            );
            assert_valid_emf(&document);
            assert_eq!(document["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Conveyor");
            assert_eq!(document["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["app", "environment"]]));
            assert_eq!(document[outcome_metric(outcome).as_str()], 1.0);
        }
    }

    #[test]
    fn latencies_are_valid_emf_in_their_unit() {
        let from = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let to = from + chrono::Duration::milliseconds(2_500);
        let millis = document("shop-api", "stage", &[("PushToUpdateService", Unit::Milliseconds, 2500.0)], &[], to);
        assert_valid_emf(&millis);
        assert_eq!(millis["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"], "Milliseconds");
        assert_eq!(millis["_aws"]["Timestamp"], to.timestamp_millis());
        let seconds = document("shop-api", "prod", &[("RolloutToVerified", Unit::Seconds, 2.5)], &[], to);
        assert_valid_emf(&seconds);
    }
}
