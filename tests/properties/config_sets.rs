//! Config sets: many apps, some invalid, some claiming the same services — every parameter is an
//! app or an error, whatever the order.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use conveyor::config::{ConfigSet, RawApp};
use conveyor::web::Endpoints;
use proptest::prelude::*;
use serde_json::json;

use crate::arbitrary::*;
use crate::cases;

#[derive(Debug, Clone)]
struct ParameterCase {
    name: String,
    value: String,
    version: i64,
    minute: Option<i64>,
}

/// Up to eight parameters: valid apps on few services (so claims collide), invalid ones, junk.
fn parameters() -> impl Strategy<Value = Vec<ParameterCase>> {
    let app = (
        prop::sample::select(vec!["stage-a", "stage-b", "prod-a"]),
        prop::sample::select(vec!["api", "web"]),
        prop::sample::select(vec!["prod-a", "prod-b", "stage-a"]),
        prop::sample::select(vec!["api", "web", "worker"]),
        prop::option::of(prop::sample::select(vec!["eu-west-1", "us-east-1"])),
    )
        .prop_map(|(stage_cluster, stage_service, prod_cluster, prod_service, region)| {
            let mut config = example_config();
            config["environments"]["stage"] = json!({ "cluster": stage_cluster, "service": stage_service });
            config["environments"]["prod"] = json!({ "cluster": prod_cluster, "service": prod_service });
            if let Some(region) = region {
                config["environments"]["prod"]["region"] = json!(region);
            }
            config.to_string()
        });
    let value = prop_oneof![6 => app, 1 => any::<String>(), 1 => json_value().prop_map(|v| v.to_string())];
    let name = prop_oneof![6 => "[a-z][a-z0-9-]{0,6}", 1 => text()];
    prop::collection::btree_map(name, (value, any::<i64>(), prop::option::of(0i64..20)), 0..8).prop_map(|apps| {
        apps.into_iter()
            .map(|(name, (value, version, minute))| ParameterCase {
                name: format!("/c/apps/{name}"),
                value,
                version,
                minute,
            })
            .collect()
    })
}

fn config_set(cases: &[ParameterCase]) -> ConfigSet {
    ConfigSet::from_parameters(
        "/c/apps/",
        cases.iter().map(|p| RawApp {
            parameter: &p.name,
            value: &p.value,
            version: p.version,
            modified: p.minute.and_then(|m| DateTime::from_timestamp(1_700_000_000 + m * 60, 0)),
        }),
        Endpoints::Public,
    )
}

/// Which parameters were valid, which invalid (and why, by key).
fn partition(set: &ConfigSet) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let valid = set.apps.iter().map(|a| a.parameter.clone()).collect();
    let invalid = set.invalid.iter().map(|i| (i.error.parameter.clone(), i.error.key().to_owned())).collect();
    (valid, invalid)
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn every_parameter_is_either_an_app_or_an_error(cases in parameters()) {
        let set = config_set(&cases);
        let (valid, invalid) = partition(&set);
        prop_assert_eq!(valid.len() + invalid.len(), cases.len(), "each parameter exactly once");
        prop_assert_eq!(set.apps.len(), valid.len());
        prop_assert_eq!(set.invalid.len(), invalid.len());
        for case in &cases {
            prop_assert!(valid.contains(&case.name) != invalid.contains_key(&case.name), "{}", case.name);
        }
        // No service belongs to two apps (nor to both environments of one).
        let mut claimed = Vec::new();
        for app in &set.apps {
            for (_, _, target) in app.pipeline.targets() {
                prop_assert!(!claimed.iter().any(|other: &&conveyor::config::ServiceTarget| other.same_service(target)),
                    "{} claimed twice", target.label());
                claimed.push(target);
            }
        }
        // Sorted by name; every invalid app keeps its version.
        prop_assert!(set.apps.windows(2).all(|w| w[0].name < w[1].name));
        for invalid in &set.invalid {
            let case = cases.iter().find(|c| c.name == invalid.error.parameter).expect("an input");
            prop_assert_eq!(invalid.version, case.version);
        }
    }

    /// The order SSM lists parameters in changes nothing (the earlier written keeps a service).
    #[test]
    fn the_order_of_parameters_does_not_matter(cases in parameters(), seed in any::<u64>()) {
        let mut shuffled = cases.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(partition(&config_set(&cases)), partition(&config_set(&shuffled)));
    }
}
