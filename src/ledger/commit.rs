//! Commits: a transition in one `TransactWriteItems` — the item's new state (fenced by the lease
//! and the version read), the image and tag facts, the history entries and the notifications
//! (into the outbox) — and the read-back of a commit whose answer was lost.

use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use backon::{ExponentialBuilder, Retryable};

use super::expr::Expr;
use super::items::{HistoryEntry, ImageUpdate, TagItem};
use super::lease::{fence, new_token};
use super::PENDING;
use super::{aws, cancellation_reasons, invalid, outbox, Held, Item, ItemKey, LeasedState, Ledger, LedgerError};
use crate::aws::AwsError;
use crate::notify::{Announcement, OutboxEntry};
use crate::types::AppName;

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

/// The attempts of a transaction cancelled by a conflict with another one or by throttling:
/// four, 50 ms apart doubling.
fn retries() -> ExponentialBuilder {
    ExponentialBuilder::new().with_min_delay(Duration::from_millis(50)).with_factor(2.0).with_max_times(3)
}

/// What the per-item reasons of a cancelled commit mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancelled {
    /// The environment's own condition failed: the lease was lost, or this very commit was
    /// applied already (its answer lost, the SDK's retry then failing the condition).
    Fenced,
    /// An image the commit expected unchanged changed (a tag recorded meanwhile).
    ImageChanged,
    /// A conflict with another transaction, or throttling: worth another attempt.
    Transient,
    Other,
}

/// `reasons`: one per item, `"None"` where the item's condition held; `conditional_images`: the
/// positions of the image updates that carry a condition.
fn cancelled(reasons: &[String], conditional_images: &[usize]) -> Cancelled {
    let failed = |index: usize| reasons.get(index).is_some_and(|r| r == "ConditionalCheckFailed");
    if failed(0) {
        Cancelled::Fenced
    } else if conditional_images.iter().any(|&index| failed(index)) {
        Cancelled::ImageChanged
    } else if reasons.iter().any(|r| r == "TransactionConflict" || r == "ThrottlingError") {
        Cancelled::Transient
    } else {
        Cancelled::Other
    }
}

/// Why an attempt failed.
enum Failed {
    Transient(Vec<String>),
    Final(LedgerError),
}

impl Failed {
    fn into_error(self) -> LedgerError {
        match self {
            Failed::Final(error) => error,
            Failed::Transient(reasons) => canceled(&reasons),
        }
    }
}

/// A transaction cancelled for `reasons`: certainly not applied.
fn canceled(reasons: &[String]) -> LedgerError {
    LedgerError::Aws(AwsError {
        operation: "TransactWriteItems",
        code: "TransactionCanceled".into(),
        message: reasons.join(", "),
        retryable: true,
        rejected: true,
    })
}

impl<S: LeasedState> Held<S> {
    /// Commits a transition in one transaction: the new state (conditional on this lease and the
    /// version read), the image and tag facts, the history entries and the notifications (into
    /// the outbox, delivered by [`Held::release`]'s caller before it releases). What was
    /// announced is then in [`Held::committed`].
    ///
    /// A commit whose response was lost is recognised on the retry: the item carries the id of
    /// the last commit applied to it.
    pub async fn commit(&mut self, ledger: &Ledger, change: Change<S>) -> Result<(), LedgerError> {
        let version = self.version + 1;
        let commit_id = new_token();
        let outbox = outbox::append(&self.outbox, &self.key, version, &change.announcements);
        let in_flight = change.state.in_flight();
        let (items, conditional_images) = self.transaction(ledger, &change, version, &commit_id, &outbox, in_flight)?;
        (|| self.attempt(ledger, &items, &commit_id, &conditional_images))
            .retry(retries())
            .sleep(tokio::time::sleep)
            .when(|failed| matches!(failed, Failed::Transient(_)))
            .await
            .map_err(Failed::into_error)?;
        self.committed.extend(change.announcements.into_iter().map(|a| a.notification));
        self.version = version;
        self.outbox = outbox;
        self.in_flight = in_flight;
        self.intent = None;
        self.acting = false;
        if self.settle {
            self.unsettled.clear();
            self.settle = false;
        }
        self.state = Some(change.state);
        Ok(())
    }

    async fn attempt(
        &self,
        ledger: &Ledger,
        items: &[TransactWriteItem],
        commit_id: &str,
        conditional_images: &[usize],
    ) -> Result<(), Failed> {
        let sent = ledger
            .db
            .transact_write_items()
            .set_transact_items(Some(items.to_vec()))
            .client_request_token(commit_id)
            .send()
            .await;
        let error = match sent {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let Some(reasons) = cancellation_reasons(&error) else {
            // A timeout, a broken connection, a 5xx: applied or not, the answer does not say.
            // Taking it for "not applied" would fail a transition that happened (and the release
            // would then write this holder's outdated outbox over it).
            let error = aws("TransactWriteItems")(error);
            return if self.applied(ledger, commit_id).await { Ok(()) } else { Err(Failed::Final(error)) };
        };
        match cancelled(&reasons, conditional_images) {
            Cancelled::Fenced if self.applied(ledger, commit_id).await => Ok(()),
            Cancelled::Fenced => Err(Failed::Final(LedgerError::LeaseLost { item: self.key.label() })),
            Cancelled::ImageChanged => {
                Err(Failed::Final(LedgerError::Conflict { item: self.key.label(), what: "the image's tags".into() }))
            }
            Cancelled::Transient => Err(Failed::Transient(reasons)),
            Cancelled::Other => Err(Failed::Final(canceled(&reasons))),
        }
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

    /// The transaction's items, and the positions of the image updates that carry a condition.
    fn transaction(
        &self,
        ledger: &Ledger,
        change: &Change<S>,
        version: u64,
        commit_id: &str,
        outbox: &[OutboxEntry],
        in_flight: bool,
    ) -> Result<(Vec<TransactWriteItem>, Vec<usize>), LedgerError> {
        let mut expr = Expr::default();
        let state = serde_dynamo::to_attribute_value(&change.state).map_err(|e| invalid("TransactWriteItems", e))?;
        expr.set("state", state);
        expr.set("version", AttributeValue::N(version.to_string()));
        expr.set("last_commit", AttributeValue::S(commit_id.to_owned()));
        if outbox.is_empty() {
            expr.remove("outbox");
        } else {
            expr.set("outbox", outbox::value(outbox));
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
        if self.settle {
            expr.remove(super::lease::UNSETTLED);
        } else if let Some(tokens) = super::lease::token_set(self.unsettled.iter().cloned()) {
            // Kept on the item now, not only at release: a holder that dies after this commit
            // must not take the tokens it took over with it.
            expr.add(super::lease::UNSETTLED, tokens);
        }
        fence(&mut expr, &self.token, self.version);
        let mut items = vec![ledger.transact_update(&self.key, &expr)?];
        let put = |item: Item| -> Result<TransactWriteItem, LedgerError> {
            let put = Put::builder().table_name(&ledger.table).set_item(Some(item)).build();
            Ok(TransactWriteItem::builder().put(put.map_err(|e| invalid("TransactWriteItems", e))?).build())
        };
        for (n, entry) in change.history.iter().enumerate() {
            let mut item: Item = serde_dynamo::to_item(entry).map_err(|e| invalid("TransactWriteItems", e))?;
            item.insert("pk".into(), AttributeValue::S(format!("APP#{}", entry.app)));
            item.insert("sk".into(), AttributeValue::S(entry.sort_key(version, n)));
            item.insert("expires_at".into(), AttributeValue::N(ledger.expires_at().to_string()));
            items.push(put(item)?);
        }
        let mut conditional_images = Vec::new();
        for (app, update) in &change.images {
            let Some(digest) = &update.digest else { continue };
            if update.expect_tags.is_some() {
                conditional_images.push(items.len());
            }
            items.push(ledger.transact_update(&ItemKey::image(app, digest), &update.expression(ledger.expires_at()))?);
        }
        for (app, tag) in &change.tags {
            items.push(put(ledger.tag_item(app, tag))?);
        }
        Ok((items, conditional_images))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::transact_write_items::{TransactWriteItemsError, TransactWriteItemsOutput};
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::{mock, Rule};
    use serde_json::json;

    use super::super::lease::tests::{item, key, ledger, Flight};
    use super::super::Intent;
    use super::*;
    use crate::notify::Notification;
    use crate::vocabulary::{Outcome, Severity};

    /// A lease held on version 1 of an item in flight, with a rollback's intent recorded.
    fn held() -> Held<Flight> {
        Held {
            key: key(),
            token: "t1".into(),
            version: 1,
            state: Some(Flight { in_flight: true }),
            outbox: Vec::new(),
            waiting: None,
            took_over: false,
            intent: Some(Intent::rollback("r1", "arn:td/api:1")),
            in_flight: true,
            committed: Vec::new(),
            unsettled: Vec::new(),
            acting: false,
            settle: false,
        }
    }

    fn settled() -> Change<Flight> {
        let mut change = Change::new(Flight { in_flight: false });
        let notification = Notification::new("shop-api", None, Outcome::Paused, Severity::Warning);
        change.announcements.push(Announcement { notification, slack_webhook_parameter: None });
        change
    }

    fn cancelled_for(codes: &'static [&'static str]) -> impl Fn() -> TransactWriteItemsError + Send + Sync {
        move || {
            let reasons = codes.iter().map(|code| CancellationReason::builder().code(*code).build()).collect();
            let cancelled = TransactionCanceledException::builder().set_cancellation_reasons(Some(reasons)).build();
            TransactWriteItemsError::TransactionCanceledException(cancelled)
        }
    }

    /// The commit's transaction, answered by `then`, its id kept in `seen`.
    fn transaction(
        seen: &Arc<Mutex<String>>,
        then: impl Fn() -> TransactWriteItemsError + Send + Sync + 'static,
    ) -> Rule {
        let seen = seen.clone();
        mock!(Client::transact_write_items)
            .match_requests(move |request| {
                *seen.lock().unwrap() = request.client_request_token().unwrap_or_default().to_owned();
                true
            })
            .then_error(then)
    }

    /// The read-back, finding `last_commit` (`None`: the id the transaction carried).
    fn read_back(seen: &Arc<Mutex<String>>, last_commit: Option<&'static str>) -> Rule {
        let seen = seen.clone();
        mock!(Client::get_item).then_output(move || {
            let last = last_commit.map_or_else(|| seen.lock().unwrap().clone(), str::to_owned);
            GetItemOutput::builder().set_item(Some(item(json!({ "last_commit": last })))).build()
        })
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_is_read_back_and_kept() {
        let seen = Arc::new(Mutex::new(String::new()));
        let lost = mock!(Client::transact_write_items)
            .match_requests({
                let seen = seen.clone();
                move |request| {
                    *seen.lock().unwrap() = request.client_request_token().unwrap_or_default().to_owned();
                    true
                }
            })
            .sequence()
            .http_status(500, None)
            .build();
        let applied = read_back(&seen, None);
        let ledger = ledger(&[&lost, &applied]);
        let mut held = held();
        held.commit(&ledger, settled()).await.unwrap();
        assert_eq!((held.version, held.intent(), held.in_flight), (2, None, false));
        assert_eq!(held.outbox.len(), 1);
        assert_eq!(held.committed().len(), 1, "the transition is the flow's to announce in its metrics");
        assert!(seen.lock().unwrap().len() <= 36, "a client request token has at most 36 characters");
    }

    #[tokio::test]
    async fn a_commit_failing_its_fence_that_another_holder_wrote_is_a_lost_lease() {
        let seen = Arc::new(Mutex::new(String::new()));
        let fenced = transaction(&seen, cancelled_for(&["ConditionalCheckFailed", "None"]));
        let theirs = read_back(&seen, Some("someone else's"));
        let ledger = ledger(&[&fenced, &theirs]);
        let mut held = held();
        let error = held.commit(&ledger, settled()).await.err().unwrap();
        assert!(matches!(error, LedgerError::LeaseLost { .. }), "{error:?}");
        assert_eq!((held.version, held.committed().len()), (1, 0));
        assert!(held.intent().is_some(), "the release keeps the intent of what was not committed");
    }

    #[tokio::test]
    async fn a_commit_failing_its_fence_that_it_wrote_itself_is_applied() {
        let seen = Arc::new(Mutex::new(String::new()));
        let fenced = transaction(&seen, cancelled_for(&["ConditionalCheckFailed", "None"]));
        let ours = read_back(&seen, None);
        let ledger = ledger(&[&fenced, &ours]);
        let mut held = held();
        held.commit(&ledger, settled()).await.unwrap();
        assert_eq!(held.version, 2);
    }

    #[tokio::test]
    async fn a_commit_conflicting_with_other_transactions_is_tried_four_times() {
        let conflicted = mock!(Client::transact_write_items)
            .sequence()
            .error(cancelled_for(&["None", "TransactionConflict"]))
            .times(2)
            .output(|| TransactWriteItemsOutput::builder().build())
            .build();
        let mut held = held();
        held.commit(&ledger(&[&conflicted]), settled()).await.unwrap();
        assert_eq!(conflicted.num_calls(), 3);

        let conflicting = mock!(Client::transact_write_items)
            .sequence()
            .error(cancelled_for(&["ThrottlingError", "None"]))
            .times(5)
            .build();
        let mut held = super::tests::held();
        let error = held.commit(&ledger(&[&conflicting]), settled()).await.err().unwrap();
        assert_eq!(conflicting.num_calls(), 4);
        assert!(
            matches!(&error, LedgerError::Aws(aws) if aws.code == "TransactionCanceled" && aws.retryable && aws.rejected),
            "{error:?}"
        );
    }

    fn reasons(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn a_failed_condition_on_the_environment_is_a_lost_lease_or_a_lost_answer() {
        assert_eq!(cancelled(&reasons(&["ConditionalCheckFailed", "None"]), &[]), Cancelled::Fenced);
        // Whatever else failed with it.
        assert_eq!(cancelled(&reasons(&["ConditionalCheckFailed", "ConditionalCheckFailed"]), &[1]), Cancelled::Fenced);
    }

    #[test]
    fn a_failed_condition_on_an_image_is_a_conflict_only_where_the_commit_set_one() {
        assert_eq!(cancelled(&reasons(&["None", "None", "ConditionalCheckFailed"]), &[2]), Cancelled::ImageChanged);
        assert_eq!(cancelled(&reasons(&["None", "ConditionalCheckFailed"]), &[2]), Cancelled::Other);
    }

    #[test]
    fn conflicts_with_other_transactions_and_throttling_are_tried_again_nothing_else_is() {
        assert_eq!(cancelled(&reasons(&["None", "TransactionConflict"]), &[]), Cancelled::Transient);
        assert_eq!(cancelled(&reasons(&["ThrottlingError", "None"]), &[]), Cancelled::Transient);
        assert_eq!(cancelled(&reasons(&["ValidationError", "None"]), &[]), Cancelled::Other);
        assert_eq!(cancelled(&[], &[]), Cancelled::Other);
    }
}
