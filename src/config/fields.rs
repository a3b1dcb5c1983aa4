//! Walking an app config's JSON key by key, recording every problem with its JSON path
//! (`environments.prod.targets[1].region`) and going on: `conveyor config validate` reports all of
//! a file's problems in one run.
//!
//! Why not `#[derive(Deserialize)]` with `deny_unknown_fields`: serde stops at the first error, and
//! the rules that matter most (patterns, ranges, one key or the other, references between
//! environments) are not type-shaped anyway. The document is still read by `serde_json`; this
//! walks its `Value`.

use std::cell::RefCell;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::{Map, Value};

/// One problem of a config: the offending key's JSON path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

/// The problems found so far in one app's config, in the order found.
#[derive(Debug, Default)]
pub(crate) struct Problems(RefCell<Vec<Problem>>);

impl Problems {
    pub(crate) fn add(&self, key: impl Into<String>, problem: impl Into<String>) {
        self.0.borrow_mut().push(Problem { key: key.into(), problem: problem.into() });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<Problem> {
        self.0.into_inner()
    }
}

/// The path of `key` inside the object at `path` (`""`: the document).
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// What a problem about the whole object at `path` is keyed by.
fn whole(path: &str) -> &str {
    if path.is_empty() {
        "(document)"
    } else {
        path
    }
}

/// A JSON object being checked. Every getter returns `None` both when the key is absent and when
/// its value is wrong (then a problem is recorded): a caller builds its result only when no
/// problem was recorded, so a placeholder never escapes.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
    problems: &'a Problems,
}

impl<'a> Fields<'a> {
    /// The object at `path`; `None` (and a problem) if the value is not an object.
    pub(crate) fn new(value: &'a Value, path: String, problems: &'a Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Fields { map, path, problems }),
            other => {
                problems.add(whole(&path), format!("must be a JSON object, got {}", kind(other)));
                None
            }
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn key(&self, key: &str) -> String {
        child(&self.path, key)
    }

    pub(crate) fn problem(&self, key: &str, problem: impl Into<String>) {
        self.problems.add(self.key(key), problem);
    }

    pub(crate) fn problems(&self) -> &'a Problems {
        self.problems
    }

    /// Records every key not in `allowed`.
    pub(crate) fn only(&self, allowed: &[&str]) {
        for unknown in self.map.keys().filter(|key| !allowed.contains(&key.as_str())) {
            self.problem(unknown, format!("unknown key (allowed: {})", allowed.join(", ")));
        }
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.map.iter()
    }

    pub(crate) fn required(&self, key: &str) -> Option<&'a Value> {
        let value = self.get(key);
        if value.is_none() {
            self.problem(key, "missing required key");
        }
        value
    }

    /// A nested object.
    pub(crate) fn object(&self, key: &str, required: bool) -> Option<Fields<'a>> {
        let value = if required { self.required(key)? } else { self.get(key)? };
        Fields::new(value, self.key(key), self.problems)
    }

    pub(crate) fn str(&self, key: &str) -> Option<&'a str> {
        match self.get(key)? {
            Value::String(text) => Some(text),
            other => {
                self.problem(key, format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    pub(crate) fn boolean(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(value) => Some(*value),
            other => {
                self.problem(key, format!("must be true or false, got {}", kind(other)));
                None
            }
        }
    }

    /// A string matching `pattern` (`what` names what it should be).
    pub(crate) fn string(&self, key: &str, required: bool, pattern: &Regex, what: &str) -> Option<String> {
        if required && !self.has(key) {
            self.problem(key, "missing required key");
            return None;
        }
        let text = self.str(key)?;
        if pattern.is_match(text) {
            Some(text.to_owned())
        } else {
            self.problem(key, format!("{text:?} is not {what}"));
            None
        }
    }

    /// A whole number from `min` to `max`.
    pub(crate) fn count(&self, key: &str, min: u32, max: u32) -> Option<u32> {
        let value = self.get(key)?;
        match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(key, format!("must be a whole number from {min} to {max}, got {value}"));
                None
            }
        }
    }

    /// A list of at most `max` items, each checked by `item` with its path (`key[i]`).
    pub(crate) fn list<T>(
        &self,
        key: &str,
        (min, max): (usize, usize),
        mut item: impl FnMut(&'a Value, String) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = match self.get(key)? {
            Value::Array(items) => items,
            other => {
                self.problem(key, format!("must be a list, got {}", kind(other)));
                return None;
            }
        };
        if !(min..=max).contains(&items.len()) {
            self.problem(key, format!("must list {min} to {max} items, got {}", items.len()));
            return None;
        }
        let checked: Vec<Option<T>> =
            items.iter().enumerate().map(|(i, value)| item(value, format!("{}[{i}]", self.key(key)))).collect();
        checked.into_iter().collect()
    }

    /// A duration (`"90s"`, `"30m"`, `"2h"`, `"7d"`) from `min` to `max`.
    pub(crate) fn duration(&self, key: &str, min: Duration, max: Duration) -> Option<Duration> {
        let text = self.str(key)?;
        match parse_duration(text) {
            Some(duration) if (min..=max).contains(&duration) => Some(duration),
            Some(_) => {
                self.problem(key, format!("{text:?} is out of range: from {} to {}", show(min), show(max)));
                None
            }
            None => {
                self.problem(key, format!("{text:?} is not a duration such as \"90s\", \"30m\", \"2h\" or \"7d\""));
                None
            }
        }
    }
}

/// `"90s"`, `"30m"`, `"2h"`, `"7d"`: a whole number and one unit.
pub fn parse_duration(text: &str) -> Option<Duration> {
    #[allow(clippy::unwrap_used)] // a literal pattern, covered by tests
    static DURATION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^([0-9]{1,7})(s|m|h|d)$").unwrap());
    let captures = DURATION.captures(text)?;
    let count: u64 = captures[1].parse().ok()?;
    let unit = match &captures[2] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 86_400,
    };
    Some(Duration::from_secs(count * unit))
}

/// A duration as the config writes it, in its largest whole unit.
pub fn show(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_one_unit_and_read_back_as_written() {
        for (text, seconds) in [("0s", 0), ("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604_800)] {
            assert_eq!(parse_duration(text), Some(Duration::from_secs(seconds)), "{text}");
            assert_eq!(show(Duration::from_secs(seconds)), text);
        }
        for bad in ["", "30", "m", "1h30m", "-5s", "1.5h", "2 h", "3w", "12345678s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_problem_is_recorded_with_its_path() {
        let value = serde_json::json!({ "a": 1, "b": { "c": [true, "x"] }, "d": "5q" });
        let problems = Problems::default();
        let fields = Fields::new(&value, String::new(), &problems).unwrap();
        fields.only(&["b", "d"]);
        assert_eq!(fields.str("b"), None);
        let nested = fields.object("b", true).unwrap();
        let items = nested.list("c", (1, 5), |item, path| match item {
            Value::String(s) => Some(s.clone()),
            _ => {
                problems.add(path, "not a string");
                None
            }
        });
        assert_eq!(items, None);
        assert_eq!(fields.duration("d", Duration::ZERO, Duration::from_secs(60)), None);
        assert_eq!(fields.required("e"), None);
        let keys: Vec<String> = problems.into_vec().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["a", "b", "b.c[0]", "d", "e"]);
    }
}
