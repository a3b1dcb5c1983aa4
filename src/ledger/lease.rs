//! Leases: one invocation at a time works on an item (an app's environment), and only it writes.
//!
//! Taking a lease is one conditional write (the item has no lease, or an expired one, or this very
//! lease — a retry after a lost response recognises its own token), which also returns the item.
//! The lease expires with its holder's deadline plus a margin, so a crashed holder frees it; every
//! commit and the release are conditional on the token, so a holder that lost its lease (it
//! outlived its expiry) can write nothing.
//!
//! [`Ledger::acquire`] is the only way to take one, as a [`Lease`] says: whether to wait for a
//! busy one (the one wait policy, [`lease_wait`]), whether to take it on an item read just before
//! together with conditions on other items (promote), and what an intent left on the item by a
//! holder that stopped half-way means to this flow ([`super::intent`]): every flow is refused
//! `Busy` by it, except deploy-monitor's, which settles it ([`Lease::settling`]).

use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::expr::{Arg, Expr};
use super::intent::Intent;
use super::PENDING;
use super::{aws, cancellation_reasons, invalid, outbox, state_of, Item, ItemKey, LeasedState, Ledger, LedgerError};
use crate::notify::{Delivery, Notification, OutboxEntry};
use crate::types::ImageDigest;
use crate::Invocation;

/// The longest a flow waits for a lease another invocation holds before it answers `Busy`
/// (Lambda, or the caller, tries again later).
pub const LEASE_WAIT: Duration = Duration::from_secs(20);
/// What an invocation keeps of its time for the work under the lease, however long it waited for
/// it: a health check (up to 30 s), a rollback, the release.
pub const LEASE_RESERVE: Duration = Duration::from_secs(40);

/// The lease-wait policy, one for every flow: how long an invocation with `time_left` before its
/// deadline waits for a busy lease.
pub fn lease_wait(time_left: Duration) -> Duration {
    LEASE_WAIT.min(time_left.saturating_sub(LEASE_RESERVE))
}

/// The pauses between attempts on a busy lease: 100 ms doubling to 2 s, `wait` in all.
fn pauses(wait: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(2.0)
        .without_max_times()
        .with_total_delay(Some(wait))
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

/// The `lease` attribute.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stamp {
    token: String,
    owner: String,
    /// Milliseconds since the epoch.
    expires_at: i64,
}

/// Why an item is busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Another invocation holds the lease (or changed the item since it was read).
    Lease { owner: String, until: DateTime<Utc> },
    /// A holder acted in AWS and stopped before committing what it did: deploy-monitor settles it
    /// first.
    Intent(Intent),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Lease { owner, until } => {
                write!(f, "held by {owner} until {until}: another invocation is working on it")
            }
            Holder::Intent(intent) => write!(
                f,
                "being settled: {intent} was issued and not recorded (its invocation stopped half-way); deploy-monitor records it first"
            ),
        }
    }
}

/// What a flow does with an intent it finds on the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnIntent {
    /// Refuse `Busy` before doing anything.
    Refuse,
    /// Take the lease and the intent ([`Held::intent`]): the flow settles it.
    Settle,
}

/// How a flow takes an item's lease: see [`Ledger::acquire`].
#[derive(Debug, Clone)]
pub struct Lease<'a> {
    key: ItemKey,
    owner: String,
    /// Ours, the same on every attempt: an attempt whose answer was lost is recognised by the next.
    token: String,
    until: DateTime<Utc>,
    /// What the policy allows to wait for a busy lease, and whether this flow waits at all.
    wait: Duration,
    patient: bool,
    queue: Option<Waiting>,
    on_intent: OnIntent,
    on_read: Option<OnRead<'a>>,
}

/// A lease taken on the item as read just before (`None`: it did not exist), in one transaction
/// with conditions other items must meet.
#[derive(Debug, Clone, Copy)]
struct OnRead<'a> {
    read: Option<&'a Item>,
    checks: &'a [Check],
}

/// A condition another item must meet in the transaction that takes a lease: these attributes
/// exist on it, those do not (an image vetted in one environment and failed in none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub key: ItemKey,
    pub present: Vec<String>,
    pub absent: Vec<String>,
}

impl Lease<'static> {
    /// The lease of `invocation` on `key`: it expires `LEASE_MARGIN` after the invocation's
    /// deadline. Not waited for when busy ([`Lease::patient`]); refused by an intent left on the
    /// item ([`Lease::settling`]).
    pub fn new(key: ItemKey, owner: impl Into<String>, invocation: &Invocation) -> Self {
        let mut lease = Lease::until(key, owner, invocation.lease_until());
        lease.wait = lease_wait(invocation.remaining(Duration::ZERO));
        lease
    }

    /// A lease expiring at `until`, never waited for.
    pub fn until(key: ItemKey, owner: impl Into<String>, until: DateTime<Utc>) -> Self {
        Lease {
            key,
            owner: owner.into(),
            token: new_token(),
            until,
            wait: Duration::ZERO,
            patient: false,
            queue: None,
            on_intent: OnIntent::Refuse,
            on_read: None,
        }
    }
}

impl<'a> Lease<'a> {
    /// Waits for a busy lease as long as the policy allows ([`lease_wait`]).
    pub fn patient(mut self) -> Self {
        self.patient = true;
        self
    }

    /// When busy, records `waiting` on the item (unless a newer push is recorded) before waiting.
    pub fn queue(mut self, waiting: Waiting) -> Self {
        self.queue = Some(waiting);
        self
    }

    /// Takes the lease even with an intent on the item, which [`Held::intent`] then exposes: for
    /// the flows that settle it (deploy-monitor's), and for what only delivers the outbox.
    pub fn settling(mut self) -> Self {
        self.on_intent = OnIntent::Settle;
        self
    }

    /// Takes the lease on the item as `read` just before (`None`: it did not exist), in one
    /// transaction with `checks` (conditions other items must meet): `Busy` if the lease is held
    /// or the item changed since it was read, `Conflict` if a check fails.
    pub fn on_read<'b>(self, read: Option<&'b Item>, checks: &'b [Check]) -> Lease<'b>
    where
        'a: 'b,
    {
        Lease { on_read: Some(OnRead { read, checks }), ..self }
    }

    /// The pauses the policy allows between attempts on a busy lease (none unless patient): for a
    /// flow that reads again before each attempt (promote).
    pub fn pauses(&self) -> impl Iterator<Item = Duration> {
        pauses(if self.patient { self.wait } else { Duration::ZERO }).build()
    }
}

/// A held lease on an item, with the item as it was when the lease was taken.
#[must_use = "release the lease (it would only expire)"]
pub struct Held<S> {
    pub key: ItemKey,
    pub(super) token: String,
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
    pub(super) intent: Option<Intent>,
    pub(super) in_flight: bool,
    /// The transitions committed under this lease, for the flow's metrics.
    pub(super) committed: Vec<Notification>,
    /// Tokens of earlier holders that may have put a revision in place without committing it:
    /// the holder this lease was taken over from, and those earlier releases named. A revision
    /// is adopted as Conveyor's own only if it carries one of them (see [`Held::adoptable`]).
    pub(super) unsettled: Vec<String>,
    /// This holder may have put a revision in place that no commit recorded yet.
    pub(super) acting: bool,
    /// The next commit records that what [`Held::unsettled`] named was examined.
    pub(super) settle: bool,
}

/// A token no other lease holder has (a UUIDv7: unique, and ordered by when it was made).
pub(super) fn new_token() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The attribute naming the tokens of holders that may have put a revision in place without
/// committing it (a string set: released holders add to it, a settling commit removes it).
pub(super) const UNSETTLED: &str = "unsettled_leases";

/// `tokens` as a DynamoDB string set (no duplicates, which DynamoDB refuses); `None` when empty
/// (an empty set cannot be written).
pub(super) fn token_set(tokens: impl IntoIterator<Item = String>) -> Option<AttributeValue> {
    let tokens: std::collections::BTreeSet<String> = tokens.into_iter().collect();
    (!tokens.is_empty()).then(|| AttributeValue::Ss(tokens.into_iter().collect()))
}

fn unsettled_of(item: &Item) -> Vec<String> {
    match item.get(UNSETTLED) {
        Some(AttributeValue::Ss(tokens)) => tokens.clone(),
        _ => Vec::new(),
    }
}

fn stamp_of(item: &Item) -> Option<Stamp> {
    serde_dynamo::from_attribute_value(item.get("lease")?.clone()).ok()
}

/// The intent on an item; one that cannot be read is reported and ignored.
fn intent_of(key: &ItemKey, item: &Item) -> Option<Intent> {
    let value = item.get("intent").filter(|value| !value.is_null())?;
    Intent::from_attribute(value)
        .inspect_err(|error| tracing::warn!(item = %key.label(), error = %error, "unreadable intent ignored"))
        .ok()
}

/// The conditions of taking a lease: nobody holds it (or the holder outlived it, or it is this
/// very lease), and — for a flow that refuses intents — no intent is on the item.
fn take_condition(expr: &mut Expr, token: &str, now: DateTime<Utc>, on_intent: OnIntent) {
    expr.condition(
        "attribute_not_exists({}) OR {} < {} OR {} = {}",
        vec![
            Arg::Name("lease"),
            Arg::Name("lease.expires_at"),
            Arg::Value(AttributeValue::N(now.timestamp_millis().to_string())),
            Arg::Name("lease.token"),
            Arg::Value(AttributeValue::S(token.to_owned())),
        ],
    );
    if on_intent == OnIntent::Refuse {
        expr.condition("attribute_not_exists({})", vec![Arg::Name("intent")]);
    }
}

/// Why a lease could not be taken, from the item as it was (`None`: not known): a live lease of
/// another holder, else an intent left on the item.
fn holder_of(key: &ItemKey, item: Option<&Item>, token: &str, now: DateTime<Utc>) -> Holder {
    let live =
        item.and_then(stamp_of).filter(|stamp| stamp.token != token && stamp.expires_at >= now.timestamp_millis());
    if let Some(stamp) = live {
        let until = DateTime::from_timestamp_millis(stamp.expires_at).unwrap_or(now);
        return Holder::Lease { owner: stamp.owner, until };
    }
    match item.and_then(|item| intent_of(key, item)) {
        Some(intent) => Holder::Intent(intent),
        None => Holder::Lease { owner: "another invocation".into(), until: now },
    }
}

/// The fence of every write of a holder: its lease, and the version it read.
pub(super) fn fence(expr: &mut Expr, token: &str, version: u64) {
    expr.condition("{} = {}", vec![Arg::Name("lease.token"), Arg::Value(AttributeValue::S(token.to_owned()))]);
    if version == 0 {
        expr.condition("attribute_not_exists({})", vec![Arg::Name("version")]);
    } else {
        expr.condition("{} = {}", vec![Arg::Name("version"), Arg::Value(AttributeValue::N(version.to_string()))]);
    }
}

fn condition_failed<T>(result: &Result<T, SdkError<UpdateItemError>>) -> bool {
    matches!(result, Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception())
}

fn busy(key: &ItemKey, holder: Holder) -> LedgerError {
    LedgerError::Busy { item: key.label(), holder }
}

fn held_by_another(error: &LedgerError) -> bool {
    matches!(error, LedgerError::Busy { holder: Holder::Lease { .. }, .. })
}

impl Ledger {
    /// Takes `lease`: the one way to take a lease. When another invocation holds it, records the
    /// queued push (if any) and, if the lease is patient, tries again as the wait policy allows;
    /// `Busy` when it is still held, or at once when an intent a flow must not pass is on it.
    pub async fn acquire<S: LeasedState>(&self, lease: Lease<'_>) -> Result<Held<S>, LedgerError> {
        let first = self.take(&lease).await;
        if !first.as_ref().err().is_some_and(held_by_another) {
            return first;
        }
        if let Some(waiting) = &lease.queue {
            if let Err(error) = self.note_waiting(&lease.key, waiting).await {
                tracing::info!(item = %lease.key.label(), error = %error, "could not queue the push (no coalescing)");
            }
        }
        if !lease.patient {
            return first;
        }
        (|| self.take(&lease)).retry(pauses(lease.wait)).sleep(tokio::time::sleep).when(held_by_another).await
    }

    /// One attempt at taking `lease`.
    async fn take<S: LeasedState>(&self, lease: &Lease<'_>) -> Result<Held<S>, LedgerError> {
        let operation = if lease.on_read.is_some() { "TransactWriteItems" } else { "UpdateItem" };
        let stamp = Stamp {
            token: lease.token.clone(),
            owner: lease.owner.clone(),
            expires_at: lease.until.timestamp_millis(),
        };
        let mut expr = Expr::default();
        expr.set("lease", serde_dynamo::to_attribute_value(&stamp).map_err(|e| invalid(operation, e))?);
        let now = Utc::now();
        take_condition(&mut expr, &lease.token, now, lease.on_intent);
        let item = match lease.on_read {
            None => self.take_item(lease, &expr, now).await?,
            Some(on_read) => {
                self.take_read(lease, expr, on_read).await?;
                on_read.read.cloned().unwrap_or_default()
            }
        };
        Held::taken(lease, &item)
    }

    /// Takes the lease by one `UpdateItem`, which returns the item as it was.
    async fn take_item(&self, lease: &Lease<'_>, expr: &Expr, now: DateTime<Utc>) -> Result<Item, LedgerError> {
        let result = self
            .update(&lease.key, expr)
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.attributes.unwrap_or_default()),
            Err(SdkError::ServiceError(error)) if error.err().is_conditional_check_failed_exception() => {
                let item = match error.err() {
                    UpdateItemError::ConditionalCheckFailedException(failed) => failed.item(),
                    _ => None,
                };
                Err(busy(&lease.key, holder_of(&lease.key, item, &lease.token, now)))
            }
            Err(error) => Err(aws("UpdateItem")(error)),
        }
    }

    /// Takes the lease on the item as read, in one transaction with the checks of `on_read`.
    async fn take_read(&self, lease: &Lease<'_>, mut expr: Expr, on_read: OnRead<'_>) -> Result<(), LedgerError> {
        let read = on_read.read;
        if lease.on_intent == OnIntent::Refuse {
            if let Some(intent) = read.and_then(|item| intent_of(&lease.key, item)) {
                return Err(busy(&lease.key, Holder::Intent(intent)));
            }
        }
        match read.and_then(|item| item.get("version")) {
            Some(version) => expr.condition("{} = {}", vec![Arg::Name("version"), Arg::Value(version.clone())]),
            None => expr.condition("attribute_not_exists({})", vec![Arg::Name("version")]),
        }
        let mut items = vec![self.transact_update(&lease.key, &expr)?];
        for check in on_read.checks {
            let names = check
                .present
                .iter()
                .map(|n| (n, "attribute_exists"))
                .chain(check.absent.iter().map(|n| (n, "attribute_not_exists")));
            let (mut conditions, mut placeholders) = (Vec::new(), std::collections::HashMap::new());
            for (i, (name, test)) in names.enumerate() {
                conditions.push(format!("{test}(#c{i})"));
                placeholders.insert(format!("#c{i}"), name.clone());
            }
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(check.key.attributes()))
                .condition_expression(conditions.join(" AND "))
                .set_expression_attribute_names(Some(placeholders))
                .build()
                .map_err(|e| invalid("TransactWriteItems", e))?;
            items.push(TransactWriteItem::builder().condition_check(check).build());
        }
        let error = match self.db.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let Some(reasons) = cancellation_reasons(&error) else { return Err(aws("TransactWriteItems")(error)) };
        if reasons.iter().skip(1).any(|r| r == "ConditionalCheckFailed") {
            return Err(LedgerError::Conflict { item: lease.key.label(), what: "a condition on another item".into() });
        }
        let reason = reasons.first().map_or("unknown", String::as_str);
        let stamp = read.and_then(stamp_of);
        Err(busy(
            &lease.key,
            Holder::Lease {
                owner: stamp.as_ref().map_or_else(|| format!("a concurrent change ({reason})"), |s| s.owner.clone()),
                until: stamp.and_then(|s| DateTime::from_timestamp_millis(s.expires_at)).unwrap_or_else(Utc::now),
            },
        ))
    }

    /// Records a push queued behind the lease, unless a newer one is already recorded.
    async fn note_waiting(&self, key: &ItemKey, waiting: &Waiting) -> Result<(), LedgerError> {
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
        match self.update(key, &expr).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(error)) if error.err().is_conditional_check_failed_exception() => Ok(()),
            Err(error) => Err(aws("UpdateItem")(error)),
        }
    }
}

impl<S: LeasedState> Held<S> {
    /// The lease `lease` took, on the item as it was.
    fn taken(lease: &Lease<'_>, item: &Item) -> Result<Self, LedgerError> {
        let key = &lease.key;
        let previous = stamp_of(item).map(|stamp| stamp.token).filter(|token| *token != lease.token);
        let took_over = previous.is_some();
        if took_over {
            tracing::warn!(item = %key.label(), "took over an expired lease: its holder may have died half-way");
        }
        let (state, version) = match state_of::<S>(key, item)? {
            Some((state, version)) => (Some(state), version),
            None => (None, 0),
        };
        Ok(Held {
            in_flight: state.as_ref().is_some_and(LeasedState::in_flight),
            intent: intent_of(key, item),
            outbox: outbox::read(key, item)?,
            waiting: item.get("waiting").and_then(|w| serde_dynamo::from_attribute_value(w.clone()).ok()),
            key: key.clone(),
            token: lease.token.clone(),
            version,
            state,
            took_over,
            committed: Vec::new(),
            unsettled: unsettled_of(item).into_iter().chain(previous).collect(),
            acting: false,
            settle: false,
        })
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
        let remaining = outbox::remaining(&self.outbox, deliveries);
        let mut expr = Expr::default();
        expr.remove("lease");
        if let Some(intent) = self.intent.as_ref().and_then(|i| serde_dynamo::to_attribute_value(i).ok()) {
            expr.set("intent", intent);
        }
        // Kept for the next holder: this holder's token if it acted without committing, and what
        // it took over unless a commit of its own settled it.
        let own = self.acting.then(|| self.token.clone());
        if let Some(tokens) = token_set(self.unsettled.iter().cloned().chain(own)) {
            expr.add(UNSETTLED, tokens);
        }
        if remaining.is_empty() {
            expr.remove("outbox");
        } else {
            expr.set("outbox", outbox::value(&remaining));
        }
        if self.in_flight || !remaining.is_empty() {
            expr.set("pending", AttributeValue::S(PENDING.into()));
        } else {
            expr.remove("pending");
        }
        if self.version > 0 {
            expr.set("version", AttributeValue::N((self.version + 1).to_string()));
        }
        fence(&mut expr, &self.token, self.version);
        let mut released = ledger.update(&self.key, &expr).send().await;
        if condition_failed(&released) {
            // The version moved (or the lease is gone): free the lease only, if it is still ours.
            let mut expr = Expr::default();
            expr.remove("lease");
            expr.condition(
                "{} = {}",
                vec![Arg::Name("lease.token"), Arg::Value(AttributeValue::S(self.token.clone()))],
            );
            released = ledger.update(&self.key, &expr).send().await;
            if released.is_ok() {
                tracing::warn!(item = %self.key.label(),
                    "the item changed under the lease (a commit whose answer was lost): only the lease released");
            }
        }
        match released {
            Ok(_) => {}
            Err(_) if condition_failed(&released) => {
                tracing::warn!(item = %self.key.label(), "lease already gone at release (expired and taken over)");
            }
            Err(error) => {
                tracing::warn!(item = %self.key.label(), error = %aws("UpdateItem")(error), "could not release the lease; it will expire");
            }
        }
    }

    /// Writes the intent of an action this holder is about to take in AWS, before taking it: a
    /// retry after a crash or a lost answer then knows the action it finds done was its own, and
    /// every other flow waits until it is settled.
    pub async fn record_intent(&mut self, ledger: &Ledger, intent: Intent) -> Result<(), LedgerError> {
        let mut expr = Expr::default();
        expr.set("intent", serde_dynamo::to_attribute_value(&intent).map_err(|e| invalid("UpdateItem", e))?);
        fence(&mut expr, &self.token, self.version);
        match ledger.update(&self.key, &expr).send().await {
            Ok(_) => {}
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

    /// Marks that this holder is about to put a revision tagged with its token in place: until a
    /// commit records it, the release keeps the token for the next holder to adopt it by.
    pub fn acting(&mut self) {
        self.acting = true;
    }

    /// The tokens a revision found in place may carry to be adopted as Conveyor's own: holders
    /// that registered it under this item's lease and stopped before their commit.
    pub fn adoptable(&self) -> &[String] {
        &self.unsettled
    }

    /// What [`Held::adoptable`] named was examined: the next commit forgets it.
    pub fn settle_unsettled(&mut self) {
        self.settle = true;
    }

    /// What a holder did in AWS and has not committed yet: left by a previous holder that stopped
    /// half-way (only a [`Lease::settling`] lease is taken with one), or recorded by this one.
    pub fn intent(&self) -> Option<&Intent> {
        self.intent.as_ref()
    }

    /// The transitions committed under this lease so far (each once), for the flow's metrics.
    pub fn committed(&self) -> &[Notification] {
        &self.committed
    }
}

#[cfg(test)]
pub(super) mod tests {
    use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
    use serde_json::json;

    use super::*;

    /// A state for the tests: in flight or not.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Flight {
        pub in_flight: bool,
    }

    impl LeasedState for Flight {
        fn in_flight(&self) -> bool {
            self.in_flight
        }
    }

    /// A ledger over DynamoDB answering with `rules`, in order, without the SDK's retries.
    pub fn ledger(rules: &[&Rule]) -> Ledger {
        let client: Client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, rules, |config| config
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()));
        Ledger::new(client, "conveyor")
    }

    pub fn key() -> ItemKey {
        ItemKey { pk: "APP#shop-api".into(), sk: "ENV#prod".into() }
    }

    /// An item as DynamoDB returns it, from its JSON.
    pub fn item(value: serde_json::Value) -> Item {
        serde_dynamo::to_item(value).unwrap()
    }

    fn stamp(token: &str, owner: &str, expires_at: DateTime<Utc>) -> serde_json::Value {
        json!({ "token": token, "owner": owner, "expires_at": expires_at.timestamp_millis() })
    }

    fn busy_with(old: Item) -> Rule {
        mock!(Client::update_item).then_error(move || {
            let failed = ConditionalCheckFailedException::builder().set_item(Some(old.clone())).build();
            UpdateItemError::ConditionalCheckFailedException(failed)
        })
    }

    fn taken_from(old: Item) -> Rule {
        mock!(Client::update_item)
            .then_output(move || UpdateItemOutput::builder().set_attributes(Some(old.clone())).build())
    }

    fn an_hour() -> chrono::Duration {
        chrono::Duration::hours(1)
    }

    #[test]
    fn a_flow_waits_at_most_twenty_seconds_and_never_into_the_time_its_work_needs() {
        assert_eq!(lease_wait(Duration::from_secs(90)), Duration::from_secs(20));
        assert_eq!(lease_wait(Duration::from_secs(50)), Duration::from_secs(10));
        assert_eq!(lease_wait(Duration::from_secs(3)), Duration::ZERO);
        let waits: Vec<Duration> = pauses(Duration::from_secs(20)).build().collect();
        assert_eq!(waits[..6].iter().map(Duration::as_millis).collect::<Vec<_>>(), [100, 200, 400, 800, 1600, 2000]);
        assert!(waits.iter().sum::<Duration>() <= Duration::from_secs(20));
        assert_eq!(pauses(Duration::ZERO).build().count(), 0);
    }

    #[test]
    fn only_a_flow_that_settles_intents_takes_a_lease_over_one() {
        let now = Utc::now();
        let mut refusing = Expr::default();
        take_condition(&mut refusing, "t1", now, OnIntent::Refuse);
        let condition = refusing.condition_expression().unwrap();
        assert_eq!(
            condition,
            "(attribute_not_exists(#n0) OR #n0.#n1 < :v0 OR #n0.#n2 = :v1) AND (attribute_not_exists(#n3))"
        );
        assert_eq!(refusing.names["#n3"], "intent");
        let mut settling = Expr::default();
        take_condition(&mut settling, "t1", now, OnIntent::Settle);
        assert!(!settling.names.values().any(|name| name == "intent"));
    }

    #[test]
    fn every_write_of_a_holder_is_fenced_by_its_token_and_the_version_it_read() {
        let mut first = Expr::default();
        fence(&mut first, "t1", 0);
        assert_eq!(first.condition_expression().unwrap(), "(#n0.#n1 = :v0) AND (attribute_not_exists(#n2))");
        let mut later = Expr::default();
        fence(&mut later, "t1", 7);
        assert_eq!(later.condition_expression().unwrap(), "(#n0.#n1 = :v0) AND (#n2 = :v1)");
        assert_eq!(later.values[":v1"], AttributeValue::N("7".into()));
    }

    #[test]
    fn a_refused_lease_names_the_live_holder_first_then_an_intent() {
        let now = Utc::now();
        let intent = json!({ "rollout_id": "r1", "rollback_to": "arn:td/api:1" });
        let live = item(json!({ "lease": stamp("theirs", "deploy-monitor d1", now + an_hour()), "intent": intent }));
        assert!(
            matches!(holder_of(&key(), Some(&live), "ours", now), Holder::Lease { owner, .. } if owner == "deploy-monitor d1")
        );
        let expired = item(json!({ "lease": stamp("theirs", "deploy-monitor d1", now - an_hour()), "intent": intent }));
        assert_eq!(
            holder_of(&key(), Some(&expired), "ours", now),
            Holder::Intent(Intent::rollback("r1", "arn:td/api:1"))
        );
        assert!(
            matches!(holder_of(&key(), None, "ours", now), Holder::Lease { owner, .. } if owner == "another invocation")
        );
    }

    #[tokio::test]
    async fn an_intent_left_by_a_holder_that_stopped_half_way_refuses_every_other_flow_at_once() {
        let left = item(json!({
            "lease": stamp("dead", "deploy-monitor d1", Utc::now() - an_hour()),
            "intent": { "rollout_id": "r1", "rollback_to": "arn:td/api:1" },
            "state": { "in_flight": true },
            "version": 4,
        }));
        let refused = busy_with(left);
        let ledger = ledger(&[&refused]);
        let lease = Lease::until(key(), "promote by ci", Utc::now() + an_hour()).patient();
        let error = ledger.acquire::<Flight>(Lease { wait: LEASE_WAIT, ..lease }).await.err().unwrap();
        assert!(
            matches!(&error, LedgerError::Busy { holder: Holder::Intent(intent), .. } if intent.rollback_of("r1") == Some("arn:td/api:1")),
            "{error:?}"
        );
        assert!(error.to_string().contains("a rollback of rollout r1"), "{error}");
        assert_eq!(refused.num_calls(), 1, "an intent is not waited for");
    }

    #[tokio::test]
    async fn deploy_monitor_takes_the_lease_with_the_intent_to_settle() {
        let left = item(json!({
            "lease": stamp("dead", "deploy-monitor d1", Utc::now() - an_hour()),
            "intent": { "rollout_id": "r1", "rollback_to": "arn:td/api:1" },
            "state": { "in_flight": true },
            "version": 4,
        }));
        let taken = taken_from(left);
        let ledger = ledger(&[&taken]);
        let lease = Lease::until(key(), "deploy-monitor d2", Utc::now() + an_hour()).settling();
        let held = ledger.acquire::<Flight>(lease).await.unwrap();
        assert_eq!(held.intent().and_then(|i| i.rollback_of("r1")), Some("arn:td/api:1"));
        assert!(held.took_over);
        assert_eq!((held.version, held.state.clone()), (4, Some(Flight { in_flight: true })));
    }

    #[tokio::test]
    async fn a_patient_flow_queues_its_push_and_waits_for_the_holder() {
        let live = item(json!({ "lease": stamp("theirs", "stage-deploy e1", Utc::now() + an_hour()) }));
        let busy = busy_with(live);
        let queued = mock!(Client::update_item)
            .match_requests(|request| {
                request.update_expression().is_some_and(|e| e.starts_with("SET #n0 = :v0"))
                    && request.expression_attribute_names().is_some_and(|n| n.values().any(|v| v == "waiting"))
            })
            .then_output(|| UpdateItemOutput::builder().build());
        let taken = taken_from(Item::new());
        let ledger = ledger(&[&busy, &queued, &taken]);
        let waiting = Waiting {
            time: Utc::now(),
            digest: ImageDigest::parse(format!("sha256:{}", "a".repeat(64))).unwrap(),
            since: Utc::now(),
        };
        let lease = Lease::until(key(), "stage-deploy e2", Utc::now() + an_hour()).patient().queue(waiting);
        let held = ledger.acquire::<Flight>(Lease { wait: Duration::from_secs(1), ..lease }).await.unwrap();
        assert_eq!((busy.num_calls(), queued.num_calls(), taken.num_calls()), (1, 1, 1));
        assert!(held.state.is_none() && !held.took_over);
    }

    #[tokio::test]
    async fn an_impatient_flow_is_told_who_holds_the_lease() {
        let until = Utc::now() + an_hour();
        let busy = busy_with(item(json!({ "lease": stamp("theirs", "conveyor alice", until) })));
        let ledger = ledger(&[&busy]);
        let error = ledger.acquire::<Flight>(Lease::until(key(), "conveyor bob", until)).await.err().unwrap();
        assert!(
            matches!(&error, LedgerError::Busy { holder: Holder::Lease { owner, .. }, .. } if owner == "conveyor alice"),
            "{error:?}"
        );
        assert!(error.to_string().contains("held by conveyor alice"), "{error}");
    }
}
