//! Leases: one invocation at a time works on an item (an app's environment), and only it writes.
//!
//! Taking a lease is one conditional write (the item has no lease, or an expired one, or this very
//! lease — a retry after a lost response recognises its own token), which also returns the item.
//! The lease expires with its holder's deadline plus a margin, so a crashed holder frees it; every
//! commit and the release are conditional on the token, so a holder that lost its lease (it
//! outlived its expiry) can write nothing.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::expr::{Arg, Expr};
use super::items::{HistoryEntry, ImageUpdate, Item, TagItem};
use super::{aws, ItemKey, LeasedState, Ledger, LedgerError, PENDING};
use crate::aws::AwsError;
use crate::notify::{Announcement, Delivery, OutboxEntry};
use crate::types::{AppName, ImageDigest};

impl LeasedState for serde_json::Value {
    /// A state read without its type (an item only flushed): in flight as an environment's would be.
    fn in_flight(&self) -> bool {
        self.pointer("/rollout/state/kind").and_then(serde_json::Value::as_str) == Some("in_progress")
            || self.get("rollback").is_some_and(|r| !r.is_null())
    }
}

/// The newest push queued behind a busy lease: a holder working on an older push for the same
/// service records its tag and leaves the rollout to it (coalescing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub time: DateTime<Utc>,
    pub digest: ImageDigest,
    /// When it started waiting: an old hint (its invocation gave up) is ignored.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseAttr {
    token: String,
    owner: String,
    /// Milliseconds since the epoch.
    expires_at: i64,
}

/// A held lease on an item, with the item as it was when the lease was taken.
#[must_use = "release the lease (it would only expire)"]
pub struct Held<S> {
    pub key: ItemKey,
    token: String,
    /// The version of `state` (0: the item had none).
    pub version: u64,
    pub state: Option<S>,
    /// Notifications committed but not yet delivered, oldest first.
    pub outbox: Vec<OutboxEntry>,
    pub waiting: Option<Waiting>,
    /// The lease was taken over from a holder that outlived it: that holder may have died half-way.
    pub took_over: bool,
    /// What the previous holder did in AWS but could not commit (its release kept it), and what
    /// this holder did so far: a commit clears it, a release without a commit keeps it.
    pub intent: Option<serde_json::Value>,
    in_flight: bool,
}

/// A transition, committed atomically: the item's new state, and everything that goes with it.
#[derive(Debug, Clone)]
pub struct Change<S> {
    pub state: S,
    pub announcements: Vec<Announcement>,
    pub history: Vec<HistoryEntry>,
    pub images: Vec<(AppName, ImageUpdate)>,
    pub tags: Vec<(AppName, TagItem)>,
    /// Drop the queued-push hint (it was this invocation's).
    pub clear_waiting: bool,
}

impl<S> Change<S> {
    pub fn new(state: S) -> Self {
        Change {
            state,
            announcements: Vec::new(),
            history: Vec::new(),
            images: Vec::new(),
            tags: Vec::new(),
            clear_waiting: false,
        }
    }
}

/// A token no other lease holder has.
pub fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
    format!("{:016x}{:08x}", hasher.finish(), std::process::id())
}

fn number(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// The state and version stored on an item.
pub(super) fn state_of<S: LeasedState>(key: &ItemKey, item: &Item) -> Result<Option<(S, u64)>, LedgerError> {
    let Some(state) = item.get("state") else { return Ok(None) };
    let state = serde_dynamo::from_attribute_value(state.clone())
        .map_err(|e| LedgerError::Corrupt { item: key.label(), problem: e.to_string() })?;
    Ok(Some((state, number(item, "version").unwrap_or(0) as u64)))
}

fn lease_of(item: &Item) -> Option<LeaseAttr> {
    serde_dynamo::from_attribute_value(item.get("lease")?.clone()).ok()
}

fn outbox_of(key: &ItemKey, item: &Item) -> Result<Vec<OutboxEntry>, LedgerError> {
    let Some(AttributeValue::M(entries)) = item.get("outbox") else { return Ok(Vec::new()) };
    let mut outbox = entries
        .values()
        .map(|entry| serde_dynamo::from_attribute_value::<_, OutboxEntry>(entry.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LedgerError::Corrupt { item: key.label(), problem: e.to_string() })?;
    outbox.sort_by_key(|entry| entry.seq);
    Ok(outbox)
}

fn outbox_value(entries: &[OutboxEntry]) -> AttributeValue {
    let map = entries
        .iter()
        .filter_map(|entry| Some((entry.id.clone(), serde_dynamo::to_attribute_value(entry).ok()?)))
        .collect();
    AttributeValue::M(map)
}

/// The per-item reasons of a cancelled transaction (`None` in the list: that item's condition
/// held); `None` for any other error.
fn cancellation_reasons(error: &SdkError<TransactWriteItemsError>) -> Option<Vec<String>> {
    match error.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
            Some(cancelled.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_owned()).collect())
        }
        _ => None,
    }
}

fn invalid(operation: &'static str, error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Aws(AwsError::new(operation, "InvalidRequest", error.to_string()))
}

impl Ledger {
    /// Takes the lease on `key` until `until`, or says who holds it.
    pub async fn try_acquire<S: LeasedState>(
        &self,
        key: &ItemKey,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Held<S>, LedgerError> {
        let token = new_token();
        let lease = LeaseAttr { token: token.clone(), owner: owner.to_owned(), expires_at: until.timestamp_millis() };
        let mut expr = Expr::default();
        expr.set("lease", serde_dynamo::to_attribute_value(&lease).map_err(|e| invalid("UpdateItem", e))?);
        let now = AttributeValue::N(Utc::now().timestamp_millis().to_string());
        expr.condition(
            "attribute_not_exists({}) OR {} < {} OR {} = {}",
            vec![
                Arg::Name("lease"),
                Arg::Name("lease.expires_at"),
                Arg::Value(now),
                Arg::Name("lease.token"),
                Arg::Value(AttributeValue::S(token.clone())),
            ],
        );
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.attributes()))
            .set_update_expression(expr.update_expression())
            .set_condition_expression(expr.condition_expression())
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let old = match result {
            Ok(output) => output.attributes.unwrap_or_default(),
            Err(SdkError::ServiceError(error)) if error.err().is_conditional_check_failed_exception() => {
                let holder = match error.err() {
                    UpdateItemError::ConditionalCheckFailedException(failed) => failed.item().and_then(lease_of),
                    _ => None,
                };
                let (owner, until) = holder.map_or(("another invocation".to_owned(), Utc::now()), |lease| {
                    (lease.owner, DateTime::from_timestamp_millis(lease.expires_at).unwrap_or_default())
                });
                return Err(LedgerError::Busy { item: key.label(), owner, until });
            }
            Err(error) => return Err(aws("UpdateItem")(error)),
        };
        let took_over = lease_of(&old).is_some_and(|previous| previous.token != token);
        if took_over {
            tracing::warn!(item = %key.label(), "took over an expired lease: its holder may have died half-way");
        }
        let (state, version) = match state_of::<S>(key, &old)? {
            Some((state, version)) => (Some(state), version),
            None => (None, 0),
        };
        let waiting = old.get("waiting").and_then(|w| serde_dynamo::from_attribute_value(w.clone()).ok());
        Ok(Held {
            in_flight: state.as_ref().is_some_and(LeasedState::in_flight),
            intent: old.get("intent").and_then(|i| serde_dynamo::from_attribute_value(i.clone()).ok()),
            outbox: outbox_of(key, &old)?,
            key: key.clone(),
            token,
            version,
            state,
            waiting,
            took_over,
        })
    }

    /// Takes the lease on an item read just before (`read`, `None` if it did not exist), in one
    /// transaction with `checks` (conditions other items must meet): fails with `Busy` if the
    /// lease is held or the item changed since it was read, with `Conflict` if a check fails.
    /// `token` is the caller's for this lease (the same on every attempt), so that an attempt
    /// whose answer was lost is recognised by the next.
    pub async fn try_acquire_if<S: LeasedState>(
        &self,
        key: &ItemKey,
        (owner, token): (&str, &str),
        until: DateTime<Utc>,
        read: Option<&Item>,
        checks: &[(ItemKey, &str)],
    ) -> Result<Held<S>, LedgerError> {
        let empty = Item::new();
        let read = read.unwrap_or(&empty);
        let token = token.to_owned();
        let lease = LeaseAttr { token: token.clone(), owner: owner.to_owned(), expires_at: until.timestamp_millis() };
        let mut expr = Expr::default();
        expr.set("lease", serde_dynamo::to_attribute_value(&lease).map_err(|e| invalid("TransactWriteItems", e))?);
        let now = AttributeValue::N(Utc::now().timestamp_millis().to_string());
        expr.condition(
            "attribute_not_exists({}) OR {} < {} OR {} = {}",
            vec![
                Arg::Name("lease"),
                Arg::Name("lease.expires_at"),
                Arg::Value(now),
                Arg::Name("lease.token"),
                Arg::Value(AttributeValue::S(token.clone())),
            ],
        );
        match read.get("version") {
            Some(version) => expr.condition("{} = {}", vec![Arg::Name("version"), Arg::Value(version.clone())]),
            None => expr.condition("attribute_not_exists({})", vec![Arg::Name("version")]),
        }
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key.attributes()))
            .set_update_expression(expr.update_expression())
            .set_condition_expression(expr.condition_expression())
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .build()
            .map_err(|e| invalid("TransactWriteItems", e))?;
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        for (check_key, condition) in checks {
            let check = aws_sdk_dynamodb::types::ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(check_key.attributes()))
                .condition_expression(*condition)
                .build()
                .map_err(|e| invalid("TransactWriteItems", e))?;
            items.push(TransactWriteItem::builder().condition_check(check).build());
        }
        let sent = self.db.transact_write_items().set_transact_items(Some(items)).send().await;
        let reasons: Vec<String> = match sent {
            Ok(_) => Vec::new(),
            Err(error) => match cancellation_reasons(&error) {
                Some(reasons) => reasons,
                None => return Err(aws("TransactWriteItems")(error)),
            },
        };
        if reasons.iter().skip(1).any(|r| r == "ConditionalCheckFailed") {
            return Err(LedgerError::Conflict { item: key.label(), what: "a condition on another item".into() });
        }
        if let Some(reason) = reasons.first().filter(|r| r.as_str() != "None") {
            let holder = lease_of(read);
            return Err(LedgerError::Busy {
                item: key.label(),
                owner: holder.as_ref().map_or_else(|| format!("a concurrent change ({reason})"), |l| l.owner.clone()),
                until: holder.and_then(|l| DateTime::from_timestamp_millis(l.expires_at)).unwrap_or_else(Utc::now),
            });
        }
        let (state, version) = match state_of::<S>(key, read)? {
            Some((state, version)) => (Some(state), version),
            None => (None, 0),
        };
        Ok(Held {
            in_flight: state.as_ref().is_some_and(LeasedState::in_flight),
            intent: read.get("intent").and_then(|i| serde_dynamo::from_attribute_value(i.clone()).ok()),
            outbox: outbox_of(key, read)?,
            waiting: read.get("waiting").and_then(|w| serde_dynamo::from_attribute_value(w.clone()).ok()),
            took_over: lease_of(read).is_some_and(|lease| lease.token != token),
            key: key.clone(),
            token,
            version,
            state,
        })
    }

    /// Takes the lease, waiting up to `wait` for the current holder to finish.
    pub async fn acquire<S: LeasedState>(
        &self,
        key: &ItemKey,
        owner: &str,
        until: DateTime<Utc>,
        wait: Duration,
    ) -> Result<Held<S>, LedgerError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.try_acquire(key, owner, until).await {
                Err(LedgerError::Busy { .. }) if tokio::time::Instant::now() + pause <= deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Records a push queued behind the lease, unless a newer one is already recorded.
    pub async fn note_waiting(&self, key: &ItemKey, waiting: &Waiting) -> Result<(), LedgerError> {
        let mut expr = Expr::default();
        expr.set("waiting", serde_dynamo::to_attribute_value(waiting).map_err(|e| invalid("UpdateItem", e))?);
        expr.condition(
            "attribute_not_exists({}) OR {} < {}",
            vec![
                Arg::Name("waiting"),
                Arg::Name("waiting.time"),
                Arg::Value(AttributeValue::S(waiting.time.to_rfc3339())),
            ],
        );
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.attributes()))
            .set_update_expression(expr.update_expression())
            .set_condition_expression(expr.condition_expression())
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(error)) if error.err().is_conditional_check_failed_exception() => Ok(()),
            Err(error) => Err(aws("UpdateItem")(error)),
        }
    }
}

impl<S: LeasedState> Held<S> {
    /// Commits a transition in one transaction: the new state (conditional on this lease and the
    /// version read), the image and tag facts, the history entries and the notifications (into
    /// the outbox, delivered by [`Held::release`]'s caller before it releases).
    ///
    /// A commit whose response was lost is recognised on the retry: the item carries the id of
    /// the last commit applied to it.
    pub async fn commit(&mut self, ledger: &Ledger, change: Change<S>) -> Result<(), LedgerError> {
        let version = self.version + 1;
        let commit_id = format!("{}:{version}", self.token);
        let mut outbox = self.outbox.clone();
        for (n, announcement) in change.announcements.iter().enumerate() {
            outbox.push(OutboxEntry::new(
                format!("conveyor:{}:{version}.{n}", self.key.label()),
                version * 100 + n as u64,
                announcement.clone(),
            ));
        }
        let in_flight = change.state.in_flight();
        let mut items = vec![self.state_update(ledger, &change, version, &commit_id, &outbox, in_flight)?];
        for (n, entry) in change.history.iter().enumerate() {
            let mut item: Item = serde_dynamo::to_item(entry).map_err(|e| invalid("TransactWriteItems", e))?;
            item.insert("pk".into(), AttributeValue::S(format!("APP#{}", entry.app)));
            item.insert("sk".into(), AttributeValue::S(entry.sort_key(version, n)));
            item.insert("expires_at".into(), AttributeValue::N(ledger.expires_at().to_string()));
            let put = Put::builder().table_name(&ledger.table).set_item(Some(item)).build();
            items.push(TransactWriteItem::builder().put(put.map_err(|e| invalid("TransactWriteItems", e))?).build());
        }
        let mut conditional_images = Vec::new();
        for (app, update) in &change.images {
            let Some(digest) = &update.digest else { continue };
            let expr = update.expression(ledger.expires_at());
            if update.expect_tags.is_some() {
                conditional_images.push(items.len());
            }
            let update = Update::builder()
                .table_name(&ledger.table)
                .set_key(Some(ItemKey::image(app, digest).attributes()))
                .set_update_expression(expr.update_expression())
                .set_condition_expression(expr.condition_expression())
                .set_expression_attribute_names(expr.names())
                .set_expression_attribute_values(expr.values())
                .build()
                .map_err(|e| invalid("TransactWriteItems", e))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        for (app, tag) in &change.tags {
            let put = Put::builder()
                .table_name(&ledger.table)
                .set_item(Some(ledger.tag_item(app, tag)))
                .build()
                .map_err(|e| invalid("TransactWriteItems", e))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }

        let mut pause = Duration::from_millis(50);
        for attempt in 1..=4 {
            let sent = ledger
                .db
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(&commit_id)
                .send()
                .await;
            let reasons: Vec<String> = match sent {
                Ok(_) => break,
                Err(error) => match cancellation_reasons(&error) {
                    Some(reasons) => reasons,
                    None => {
                        // A timeout, a broken connection, a 5xx: applied or not, the answer does
                        // not say. Taking it for "not applied" would fail a transition that
                        // happened (and the release would then write this holder's outdated
                        // outbox over it).
                        let error = aws("TransactWriteItems")(error);
                        if self.applied(ledger, &commit_id).await {
                            break;
                        }
                        return Err(error);
                    }
                },
            };
            if reasons.first().map(String::as_str) == Some("ConditionalCheckFailed") {
                // Our own commit, applied, whose answer was lost (the SDK's retry then failed the
                // condition)? Otherwise the lease was lost.
                if self.applied(ledger, &commit_id).await {
                    break;
                }
                return Err(LedgerError::LeaseLost { item: self.key.label() });
            }
            let failed = |index: &usize| reasons.get(*index).map(String::as_str) == Some("ConditionalCheckFailed");
            if conditional_images.iter().any(failed) {
                return Err(LedgerError::Conflict { item: self.key.label(), what: "the image's tags".into() });
            }
            if attempt == 4 || !reasons.iter().any(|r| r == "TransactionConflict" || r == "ThrottlingError") {
                return Err(LedgerError::Aws(AwsError {
                    operation: "TransactWriteItems",
                    code: "TransactionCanceled".into(),
                    message: reasons.join(", "),
                    retryable: true,
                    rejected: true,
                }));
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        for announcement in &change.announcements {
            crate::metrics::transition(&announcement.notification);
        }
        self.version = version;
        self.outbox = outbox;
        self.in_flight = in_flight;
        self.intent = None;
        self.state = Some(change.state);
        Ok(())
    }

    /// Whether the item carries `commit_id` as its last commit: a commit whose answer was lost
    /// was applied. A read that fails says "not known to be applied" (the release is fenced by
    /// the version, so it cannot overwrite a commit applied unbeknownst).
    async fn applied(&self, ledger: &Ledger, commit_id: &str) -> bool {
        match ledger.item(&self.key).await {
            Ok(item) => {
                item.and_then(|item| item.get("last_commit").cloned()) == Some(AttributeValue::S(commit_id.into()))
            }
            Err(error) => {
                tracing::warn!(item = %self.key.label(), error = %error, "could not read back a commit whose answer was lost");
                false
            }
        }
    }

    fn state_update(
        &self,
        ledger: &Ledger,
        change: &Change<S>,
        version: u64,
        commit_id: &str,
        outbox: &[OutboxEntry],
        in_flight: bool,
    ) -> Result<TransactWriteItem, LedgerError> {
        let mut expr = Expr::default();
        expr.set(
            "state",
            serde_dynamo::to_attribute_value(&change.state).map_err(|e| invalid("TransactWriteItems", e))?,
        );
        expr.set("version", AttributeValue::N(version.to_string()));
        expr.set("last_commit", AttributeValue::S(commit_id.to_owned()));
        if outbox.is_empty() {
            expr.remove("outbox");
        } else {
            expr.set("outbox", outbox_value(outbox));
        }
        if in_flight || !outbox.is_empty() {
            expr.set("pending", AttributeValue::S(PENDING.into()));
        } else {
            expr.remove("pending");
        }
        if change.clear_waiting {
            expr.remove("waiting");
        }
        expr.remove("intent");
        self.fence(&mut expr);
        let update = Update::builder()
            .table_name(&ledger.table)
            .set_key(Some(self.key.attributes()))
            .set_update_expression(expr.update_expression())
            .set_condition_expression(expr.condition_expression())
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .build()
            .map_err(|e| invalid("TransactWriteItems", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// This lease, and the version it read.
    fn fence(&self, expr: &mut Expr) {
        expr.condition("{} = {}", vec![Arg::Name("lease.token"), Arg::Value(AttributeValue::S(self.token.clone()))]);
        if self.version == 0 {
            expr.condition("attribute_not_exists({})", vec![Arg::Name("version")]);
        } else {
            expr.condition(
                "{} = {}",
                vec![Arg::Name("version"), Arg::Value(AttributeValue::N(self.version.to_string()))],
            );
        }
    }

    /// Releases the lease, dropping from the outbox what was delivered. Best effort: a lease that
    /// cannot be released expires.
    ///
    /// The release bumps the version (an item read before it is out of date: a lease taken on
    /// such a read, as promote's is, would deliver an outbox already delivered), and is fenced by
    /// it: should a commit have been applied unbeknownst to this holder (its answer lost and the
    /// read-back failed), the release only frees the lease and leaves the item as that commit
    /// wrote it, its notifications in the outbox.
    pub async fn release(self, ledger: &Ledger, deliveries: &[Delivery]) {
        let remaining: Vec<OutboxEntry> = self
            .outbox
            .iter()
            .filter_map(|entry| {
                let Some(delivery) = deliveries.iter().find(|d| d.id == entry.id) else { return Some(entry.clone()) };
                (!delivery.remaining.is_empty())
                    .then(|| OutboxEntry { channels: delivery.remaining.clone(), ..entry.clone() })
            })
            .collect();
        let mut expr = Expr::default();
        expr.remove("lease");
        if let Some(intent) = self.intent.as_ref().and_then(|i| serde_dynamo::to_attribute_value(i).ok()) {
            expr.set("intent", intent);
        }
        if remaining.is_empty() {
            expr.remove("outbox");
        } else {
            expr.set("outbox", outbox_value(&remaining));
        }
        if self.in_flight || !remaining.is_empty() {
            expr.set("pending", AttributeValue::S(PENDING.into()));
        } else {
            expr.remove("pending");
        }
        if self.version > 0 {
            expr.set("version", AttributeValue::N((self.version + 1).to_string()));
        }
        self.fence(&mut expr);
        let condition_failed = |result: &Result<(), SdkError<UpdateItemError>>| matches!(result, Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception());
        let mut released = self.update(ledger, &expr).await;
        if condition_failed(&released) {
            // The version moved (or the lease is gone): free the lease only, if it is still ours.
            let mut expr = Expr::default();
            expr.remove("lease");
            expr.condition(
                "{} = {}",
                vec![Arg::Name("lease.token"), Arg::Value(AttributeValue::S(self.token.clone()))],
            );
            released = self.update(ledger, &expr).await;
            if released.is_ok() {
                tracing::warn!(item = %self.key.label(),
                    "the item changed under the lease (a commit whose answer was lost): only the lease released");
            }
        }
        match released {
            Ok(()) => {}
            Err(_) if condition_failed(&released) => {
                tracing::warn!(item = %self.key.label(), "lease already gone at release (expired and taken over)");
            }
            Err(error) => {
                tracing::warn!(item = %self.key.label(), error = %aws("UpdateItem")(error), "could not release the lease; it will expire");
            }
        }
    }

    /// Writes the intent of an action this holder is about to take in AWS, before taking it: a
    /// retry after a crash or a lost answer then knows the action it finds done was its own.
    pub async fn record_intent(&mut self, ledger: &Ledger, intent: serde_json::Value) -> Result<(), LedgerError> {
        let mut expr = Expr::default();
        expr.set("intent", serde_dynamo::to_attribute_value(&intent).map_err(|e| invalid("UpdateItem", e))?);
        self.fence(&mut expr);
        match self.update(ledger, &expr).await {
            Ok(()) => {}
            // The write leaves the fence as it was: a retry of an applied attempt passes it too,
            // so only a lost lease fails it.
            Err(SdkError::ServiceError(error)) if error.err().is_conditional_check_failed_exception() => {
                return Err(LedgerError::LeaseLost { item: self.key.label() });
            }
            Err(error) => return Err(aws("UpdateItem")(error)),
        }
        self.intent = Some(intent);
        Ok(())
    }

    async fn update(&self, ledger: &Ledger, expr: &Expr) -> Result<(), SdkError<UpdateItemError>> {
        ledger
            .db
            .update_item()
            .table_name(&ledger.table)
            .set_key(Some(self.key.attributes()))
            .set_update_expression(expr.update_expression())
            .set_condition_expression(expr.condition_expression())
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .send()
            .await
            .map(|_| ())
    }

    /// The item's state, or `LedgerError::Corrupt` when there is none.
    pub fn require_state(&self) -> Result<&S, LedgerError> {
        self.state.as_ref().ok_or_else(|| LedgerError::Corrupt { item: self.key.label(), problem: "no state".into() })
    }
}

impl<S> Held<S> {
    /// The lease's token (logged, never secret).
    pub fn token(&self) -> &str {
        &self.token
    }
}
