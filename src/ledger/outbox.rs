//! The outbox: notifications a commit wrote with its transition, kept on the item until they are
//! delivered (by the lease holder before it releases, or by the sweep). An entry's id is the
//! notification's (`conveyor:{item}:{version}.{n}`), so a delivery repeated after a crash is
//! recognisable downstream.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, ItemKey, LedgerError};
use crate::notify::{Announcement, Delivery, OutboxEntry};

/// The outbox stored on an item, oldest first.
pub(super) fn read(key: &ItemKey, item: &Item) -> Result<Vec<OutboxEntry>, LedgerError> {
    let Some(AttributeValue::M(entries)) = item.get("outbox") else { return Ok(Vec::new()) };
    let mut outbox = entries
        .values()
        .map(|entry| serde_dynamo::from_attribute_value::<_, OutboxEntry>(entry.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LedgerError::Corrupt { item: key.label(), problem: e.to_string() })?;
    outbox.sort_by_key(|entry| entry.seq);
    Ok(outbox)
}

/// The outbox as stored: a map by entry id.
pub(super) fn value(entries: &[OutboxEntry]) -> AttributeValue {
    let map = entries
        .iter()
        .filter_map(|entry| Some((entry.id.clone(), serde_dynamo::to_attribute_value(entry).ok()?)))
        .collect();
    AttributeValue::M(map)
}

/// `outbox` with the announcements of the commit making `version` appended.
pub(super) fn append(
    outbox: &[OutboxEntry],
    key: &ItemKey,
    version: u64,
    announcements: &[Announcement],
) -> Vec<OutboxEntry> {
    let mut outbox = outbox.to_vec();
    for (n, announcement) in announcements.iter().enumerate() {
        outbox.push(OutboxEntry::new(
            format!("conveyor:{}:{version}.{n}", key.label()),
            version * 100 + n as u64,
            announcement.clone(),
        ));
    }
    outbox
}

/// What is left to send after `deliveries`: an entry delivered everywhere is dropped, one
/// delivered to some of its channels keeps the others, one not attempted stays as it was.
pub(super) fn remaining(outbox: &[OutboxEntry], deliveries: &[Delivery]) -> Vec<OutboxEntry> {
    outbox
        .iter()
        .filter_map(|entry| {
            let Some(delivery) = deliveries.iter().find(|d| d.id == entry.id) else { return Some(entry.clone()) };
            (!delivery.remaining.is_empty())
                .then(|| OutboxEntry { channels: delivery.remaining.clone(), ..entry.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Channel, Notification};
    use crate::vocabulary::{Outcome, Severity};

    fn announcement(slack: bool) -> Announcement {
        Announcement {
            notification: Notification::new("shop-api", None, Outcome::Paused, Severity::Warning),
            slack_webhook_parameter: slack.then(|| "/conveyor/slack".to_owned()),
        }
    }

    fn key() -> ItemKey {
        ItemKey { pk: "APP#shop-api".into(), sk: "ENV#prod".into() }
    }

    #[test]
    fn a_commit_appends_its_announcements_after_what_is_still_undelivered() {
        let first = append(&[], &key(), 3, &[announcement(false)]);
        let outbox = append(&first, &key(), 4, &[announcement(true), announcement(false)]);
        let ids: Vec<&str> = outbox.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["conveyor:shop-api/prod:3.0", "conveyor:shop-api/prod:4.0", "conveyor:shop-api/prod:4.1"]);
        assert!(outbox.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        assert_eq!(outbox[1].channels, [Channel::Sns, Channel::Slack]);
    }

    #[test]
    fn what_remains_after_deliveries_keeps_the_undelivered_channels_and_the_unattempted_entries() {
        let outbox = append(&[], &key(), 1, &[announcement(true), announcement(true), announcement(false)]);
        let deliveries = [
            Delivery { id: outbox[0].id.clone(), remaining: Vec::new() },
            Delivery { id: outbox[1].id.clone(), remaining: vec![Channel::Slack] },
        ];
        let left = remaining(&outbox, &deliveries);
        assert_eq!(left.len(), 2);
        assert_eq!((left[0].id.as_str(), left[0].channels.as_slice()), (outbox[1].id.as_str(), &[Channel::Slack][..]));
        assert_eq!(left[1], outbox[2]);
        assert!(remaining(
            &outbox,
            &outbox.iter().map(|e| Delivery { id: e.id.clone(), remaining: vec![] }).collect::<Vec<_>>()
        )
        .is_empty());
    }

    #[test]
    fn the_stored_outbox_reads_back_in_delivery_order() {
        let outbox = append(&[], &key(), 12, &[announcement(false), announcement(true)]);
        let item = Item::from([("outbox".to_owned(), value(&outbox))]);
        assert_eq!(read(&key(), &item).unwrap(), outbox);
        assert!(read(&key(), &Item::new()).unwrap().is_empty());
    }
}
