//! The top-level fields of a `{:#?}` rendering, to compare an SDK request with its source field
//! by field. Shared by the unit test of the task-definition rewrite and the property tests.

use std::collections::BTreeMap;

/// Top-level fields of a `{:#?}` rendering: name => rendered value.
pub fn debug_fields(pretty: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in pretty.lines().skip(1) {
        let top_level = line.strip_prefix("    ").filter(|rest| !rest.starts_with(' '));
        match top_level.and_then(|rest| rest.split_once(": ")) {
            Some((name, value)) if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                fields.extend(current.take());
                current = Some((name.to_owned(), value.to_owned()));
            }
            _ => {
                if let Some((_, value)) = current.as_mut() {
                    value.push('\n');
                    value.push_str(line);
                }
            }
        }
    }
    fields.extend(current);
    fields
}
