//! Intents: what a lease holder is about to do in AWS, written (fenced by its lease) before it
//! does it, and cleared by the commit that records the outcome.
//!
//! An intent still on an item when its lease is taken again means a holder acted in AWS and
//! stopped before committing (it crashed, timed out, or its commit failed past every retry): the
//! service is no longer what the record says. Only the flow that settles such an action may work
//! on the item until it is settled ([`super::OnIntent`]); every other flow is refused `Busy`.

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

/// An action in AWS recorded before it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intent {
    /// The service of the failed rollout `rollout_id` is being rolled back to `rollback_to`.
    Rollback { rollout_id: String, rollback_to: String },
}

/// An intent as stored: tagged, or in the shape written before intents had a `kind` (a
/// rollback's, the only one there was), which upgraded Conveyors must still honour.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Tagged(Intent),
    Untagged(Untagged),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Untagged {
    rollout_id: String,
    rollback_to: String,
}

impl Intent {
    pub fn rollback(rollout_id: impl Into<String>, rollback_to: impl Into<String>) -> Self {
        Intent::Rollback { rollout_id: rollout_id.into(), rollback_to: rollback_to.into() }
    }

    /// The revision a rollback of `rollout_id` was sent to, if this is that rollback.
    pub fn rollback_of(&self, rollout_id: &str) -> Option<&str> {
        match self {
            Intent::Rollback { rollout_id: of, rollback_to } => (of == rollout_id).then_some(rollback_to.as_str()),
        }
    }

    /// Reads an item's `intent` attribute, in either stored shape.
    pub(super) fn from_attribute(value: &AttributeValue) -> Result<Self, serde_dynamo::Error> {
        Ok(match serde_dynamo::from_attribute_value::<_, Stored>(value.clone())? {
            Stored::Tagged(intent) => intent,
            Stored::Untagged(Untagged { rollout_id, rollback_to }) => Intent::Rollback { rollout_id, rollback_to },
        })
    }
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Intent::Rollback { rollout_id, rollback_to } => {
                write!(f, "a rollback of rollout {rollout_id} (to {rollback_to})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attribute(value: serde_json::Value) -> AttributeValue {
        serde_dynamo::to_attribute_value(value).unwrap()
    }

    #[test]
    fn the_shape_written_before_intents_had_a_kind_still_reads_as_a_rollback() {
        let old = attribute(json!({ "rollout_id": "20260101T000000000-0badcafe", "rollback_to": "arn:td/api:1" }));
        let intent = Intent::from_attribute(&old).unwrap();
        assert_eq!(intent, Intent::rollback("20260101T000000000-0badcafe", "arn:td/api:1"));
        assert_eq!(intent.rollback_of("20260101T000000000-0badcafe"), Some("arn:td/api:1"));
        assert_eq!(intent.rollback_of("another rollout"), None);
    }

    #[test]
    fn an_intent_is_stored_tagged_and_read_back() {
        let intent = Intent::rollback("r1", "arn:td/api:3");
        let stored = serde_json::to_value(&intent).unwrap();
        assert_eq!(stored, json!({ "kind": "rollback", "rollout_id": "r1", "rollback_to": "arn:td/api:3" }));
        let value = serde_dynamo::to_attribute_value(&intent).unwrap();
        assert_eq!(Intent::from_attribute(&value).unwrap(), intent);
    }

    #[test]
    fn an_intent_of_an_unknown_kind_does_not_read() {
        let unknown = attribute(json!({ "kind": "scale", "rollout_id": "r1", "rollback_to": "arn:td/api:3" }));
        assert!(Intent::from_attribute(&unknown).is_err());
    }
}
