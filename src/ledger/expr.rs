//! A small builder for DynamoDB update and condition expressions, with placeholder names and
//! values generated so that no attribute name ever collides with a reserved word.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

#[derive(Debug, Clone, Default)]
pub(crate) struct Expr {
    sets: Vec<String>,
    adds: Vec<String>,
    removes: Vec<String>,
    conditions: Vec<String>,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// `#n3` for an attribute name (a dotted path becomes `#n3.#n4`).
    pub fn name(&mut self, path: &str) -> String {
        path.split('.')
            .map(|part| {
                let placeholder = format!("#n{}", self.names.len());
                let existing = self.names.iter().find(|(_, name)| name.as_str() == part).map(|(p, _)| p.clone());
                existing.unwrap_or_else(|| {
                    self.names.insert(placeholder.clone(), part.to_owned());
                    placeholder
                })
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// `:v3` for a value.
    pub fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    pub fn set(&mut self, path: &str, value: AttributeValue) {
        let (name, value) = (self.name(path), self.value(value));
        self.sets.push(format!("{name} = {value}"));
    }

    pub fn set_if_absent(&mut self, path: &str, value: AttributeValue) {
        let (name, value) = (self.name(path), self.value(value));
        self.sets.push(format!("{name} = if_not_exists({name}, {value})"));
    }

    pub fn add(&mut self, path: &str, value: AttributeValue) {
        let (name, value) = (self.name(path), self.value(value));
        self.adds.push(format!("{name} {value}"));
    }

    pub fn remove(&mut self, path: &str) {
        let name = self.name(path);
        self.removes.push(name);
    }

    /// Adds a condition (all conditions must hold); `{}` placeholders in `template` are replaced,
    /// in order, by `args`: a path (`"lease.token"`, given as `Arg::Name`) or a value.
    pub fn condition(&mut self, template: &str, args: Vec<Arg>) {
        let mut text = String::new();
        let mut parts = template.split("{}");
        text.push_str(parts.next().unwrap_or_default());
        for (part, arg) in parts.zip(args) {
            let placeholder = match arg {
                Arg::Name(path) => self.name(path),
                Arg::Value(value) => self.value(value),
            };
            text.push_str(&placeholder);
            text.push_str(part);
        }
        self.conditions.push(format!("({text})"));
    }

    pub fn update_expression(&self) -> Option<String> {
        let mut clauses = Vec::new();
        if !self.sets.is_empty() {
            clauses.push(format!("SET {}", self.sets.join(", ")));
        }
        if !self.adds.is_empty() {
            clauses.push(format!("ADD {}", self.adds.join(", ")));
        }
        if !self.removes.is_empty() {
            clauses.push(format!("REMOVE {}", self.removes.join(", ")));
        }
        (!clauses.is_empty()).then(|| clauses.join(" "))
    }

    pub fn condition_expression(&self) -> Option<String> {
        (!self.conditions.is_empty()).then(|| self.conditions.join(" AND "))
    }

    /// Names and values, or `None` when empty (DynamoDB refuses empty maps).
    pub fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    pub fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// An argument of [`Expr::condition`].
pub(crate) enum Arg<'a> {
    Name(&'a str),
    Value(AttributeValue),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_expressions_with_placeholders() {
        let mut expr = Expr::default();
        expr.set("state", AttributeValue::S("x".into()));
        expr.add("version", AttributeValue::N("1".into()));
        expr.remove("lease");
        expr.condition("{} = {}", vec![Arg::Name("lease.token"), Arg::Value(AttributeValue::S("t".into()))]);
        assert_eq!(expr.update_expression().unwrap(), "SET #n0 = :v0 ADD #n1 :v1 REMOVE #n2");
        assert_eq!(expr.condition_expression().unwrap(), "(#n2.#n3 = :v2)");
        assert_eq!(expr.names["#n3"], "token");
    }
}
