//! `unmodeled_members`: what a copy through the SDK would drop, reported path by path.

use std::collections::BTreeSet;

use conveyor::taskdef;
use proptest::prelude::*;
use serde_json::Value;

use crate::arbitrary::*;
use crate::cases;

/// JSON with identifier keys (so that reported paths can be read back).
fn plain_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn plain_object() -> BoxedStrategy<Value> {
    prop::collection::btree_map("[a-zA-Z]{1,4}", plain_json(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

/// Paths (`a.b[2].c`) of every object in `value`, with the object's own path ("" for the root).
fn object_paths(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            out.push(path.clone());
            for (key, member) in members {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                // Members of computed top-level fields are never compared: do not inject there.
                if !(path.is_empty() && taskdef::COMPUTED.contains(&key.as_str())) {
                    object_paths(member, child, out);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                object_paths(item, format!("{path}[{index}]"), out);
            }
        }
        _ => {}
    }
}

/// The member at a path made of identifier keys and indexes.
fn at_path<'a>(value: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut node = value;
    if path.is_empty() {
        return Some(node);
    }
    for part in path.split('.') {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
        node = node.get_mut(key)?;
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            node = node.get_mut(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(node)
}

/// The paths (`a.b[2].c`, as `unmodeled_members` writes them) of every non-empty member of a
/// described definition, its computed top-level fields aside.
fn non_empty_members(described: &Value) -> BTreeSet<String> {
    fn walk(path: String, value: &Value, out: &mut BTreeSet<String>) {
        if !non_empty(value) {
            return;
        }
        match value {
            Value::Object(members) => {
                for (key, member) in members {
                    walk(format!("{path}.{key}"), member, out);
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    walk(format!("{path}[{index}]"), item, out);
                }
            }
            _ => {}
        }
        out.insert(path);
    }
    let mut out = BTreeSet::new();
    for (key, value) in described.as_object().into_iter().flatten() {
        if !taskdef::COMPUTED.contains(&key.as_str()) {
            walk(key.clone(), value, &mut out);
        }
    }
    out
}

fn non_empty(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// Arbitrary values on both sides: never a panic, and every path reported is a non-empty
    /// member of the described definition.
    #[test]
    fn unmodeled_members_never_panics(described in json_value(), request in json_value()) {
        let missing = taskdef::unmodeled_members(&described, &request);
        if !described.is_object() || !request.is_object() {
            prop_assert!(missing.is_empty());
        }
        let members = non_empty_members(&described);
        for path in &missing {
            prop_assert!(members.contains(path), "{path:?} is no non-empty member of {described}");
        }
    }

    /// A request that carries everything loses nothing.
    #[test]
    fn a_complete_request_loses_nothing(described in plain_object()) {
        prop_assert_eq!(taskdef::unmodeled_members(&described, &described), Vec::<String>::new());
    }

    /// Members the request lacks are reported, exactly those, wherever they are.
    #[test]
    fn members_missing_from_the_request_are_reported(
        request in plain_object(),
        injections in prop::collection::vec((any::<prop::sample::Index>(), "new_[a-z]{1,3}", plain_json().prop_filter("non-empty", non_empty)), 0..4),
    ) {
        let mut described = request.clone();
        let mut expected = BTreeSet::new();
        for (index, key, value) in injections {
            let mut paths = Vec::new();
            object_paths(&described, String::new(), &mut paths);
            let path = paths[index.index(paths.len())].clone();
            // Not inside what an earlier injection added (that is reported as a whole).
            if expected.iter().any(|p: &String| path == *p || path.starts_with(&format!("{p}.")) || path.starts_with(&format!("{p}["))) {
                continue;
            }
            let Some(Value::Object(members)) = at_path(&mut described, &path) else { continue };
            if members.contains_key(&key) {
                continue;
            }
            members.insert(key.clone(), value);
            expected.insert(if path.is_empty() { key } else { format!("{path}.{key}") });
        }
        let missing: BTreeSet<String> = taskdef::unmodeled_members(&described, &request).into_iter().collect();
        prop_assert_eq!(missing, expected);
    }
}
