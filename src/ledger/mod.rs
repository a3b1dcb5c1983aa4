//! The state table: everything Conveyor writes, in one DynamoDB table (`CONVEYOR_TABLE`).
//!
//! | item | `pk` | `sk` | holds |
//! |---|---|---|---|
//! | environment | `APP#{app}` | `ENV#{stage\|prod}` | `state` (see [`crate::record::EnvState`]), `version`, the `lease` while held, the `outbox` of notifications not yet sent, `waiting` (the newest push queued behind the lease), `intent` (an action taken in AWS and not committed yet, see [`Intent`]), `last_commit` |
//! | image | `APP#{app}` | `IMAGE#{digest}` | tags, first push, verdict per environment (`vetted_*`, `failed_*`) |
//! | tag | `APP#{app}` | `TAG#{tag}` (stage), `TAG#{env}#{tag}` | the digest the environment most recently vetted under that tag |
//! | history | `APP#{app}` | `HIST#{time}#{env}#{n}` | one entry per transition (what, when, why, who) |
//! | config notice | `CONFIG` | `{parameter}` | the last parameter version announced as invalid, and its outbox |
//! | hook failure | `APP#{app}` | `HOOK#{executionId}` | a lifecycle hook execution answered `FAILED`, and why (kept 7 days) |
//!
//! Every write to an environment is made by the holder of its lease, conditional on the lease's
//! token (fencing) and on the version read; a transition commits the environment, the image and
//! tag facts, its history entries and its notifications in one `TransactWriteItems`. Images,
//! tags and history entries expire (TTL `expires_at`) after the retention period without change.
//! Items with a rollout in flight or a notification not yet sent carry `pending`, which the sparse
//! `pending` index lists for the sweep.

mod commit;
/// Kept hand-written: the SDK has no expression builder, and generated placeholders keep every
/// attribute name clear of DynamoDB's reserved words.
mod expr;
mod intent;
mod items;
mod lease;
mod outbox;

pub use commit::Change;
pub use intent::Intent;
pub use items::{Failure, HistoryEntry, HookFailure, ImageFacts, ImageUpdate, Item, TagItem};
pub use lease::{lease_wait, Check, Held, Holder, Lease, Waiting, LEASE_RESERVE, LEASE_WAIT};

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, TransactWriteItem, Update};
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aws::AwsError;
use crate::types::{AppName, Environment, ImageDigest, ImageTag};
use expr::Expr;

/// How long images, tags and history entries are kept after their last change.
pub const DEFAULT_RETENTION_DAYS: i64 = 400;
/// How long a hook execution's `FAILED` answer is kept (an execution lasts hours at most).
const HOOK_FAILURE_DAYS: i64 = 7;
/// The value of `pending` on items the sweep must look at.
const PENDING: &str = "1";

/// Where an item lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemKey {
    pub pk: String,
    pub sk: String,
}

impl ItemKey {
    pub fn env(app: &AppName, env: Environment) -> Self {
        ItemKey { pk: format!("APP#{app}"), sk: format!("ENV#{env}") }
    }

    pub fn image(app: &AppName, digest: &ImageDigest) -> Self {
        ItemKey { pk: format!("APP#{app}"), sk: format!("IMAGE#{digest}") }
    }

    /// The digest `env` most recently vetted under `tag`: `TAG#{tag}` for stage (as v2 wrote
    /// it), `TAG#{env}#{tag}` for the others (a tag never holds `#`).
    pub fn tag(app: &AppName, env: Environment, tag: &ImageTag) -> Self {
        let sk = if env == Environment::STAGE { format!("TAG#{tag}") } else { format!("TAG#{env}#{tag}") };
        ItemKey { pk: format!("APP#{app}"), sk }
    }

    /// A lifecycle hook execution Conveyor answered `FAILED` (see [`HookFailure`]).
    pub fn hook(app: &AppName, execution_id: &str) -> Self {
        ItemKey { pk: format!("APP#{app}"), sk: format!("HOOK#{execution_id}") }
    }

    /// Announcements about one app-config parameter.
    pub fn config(parameter: &str) -> Self {
        ItemKey { pk: "CONFIG".into(), sk: parameter.to_owned() }
    }

    /// `shop-api/stage`, `config//conveyor/apps/x`: for logs, errors and notification ids.
    pub fn label(&self) -> String {
        match (self.pk.strip_prefix("APP#"), self.sk.strip_prefix("ENV#")) {
            (Some(app), Some(env)) => format!("{app}/{env}"),
            _ => format!("{}/{}", self.pk.to_lowercase(), self.sk),
        }
    }

    fn attributes(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".into(), AttributeValue::S(self.pk.clone())),
            ("sk".into(), AttributeValue::S(self.sk.clone())),
        ])
    }

    /// The key of an item as read.
    pub fn parse(item: &Item) -> Option<Self> {
        Some(ItemKey { pk: item.get("pk")?.as_s().ok()?.clone(), sk: item.get("sk")?.as_s().ok()?.clone() })
    }

    /// The app and environment of an environment item's key.
    pub fn app_env(&self) -> Option<(AppName, Environment)> {
        let app = AppName::parse(self.pk.strip_prefix("APP#")?).ok()?;
        let env = Environment::parse(self.sk.strip_prefix("ENV#")?).ok()?;
        Some((app, env))
    }
}

/// What a leased item keeps besides its own fields.
pub trait LeasedState: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// Whether something about this item still waits for ECS (the sweep comes back to it).
    fn in_flight(&self) -> bool;
}

impl LeasedState for crate::record::EnvState {
    fn in_flight(&self) -> bool {
        crate::record::EnvState::in_flight(self)
    }
}

/// Reading or writing the state table failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("{item} is {holder}; retry later")]
    Busy { item: String, holder: Holder },
    #[error("the lease on {item} expired and was taken over by another invocation: nothing was written")]
    LeaseLost { item: String },
    #[error("{item} changed while this invocation worked ({what}): nothing was written")]
    Conflict { item: String, what: String },
    #[error("state item {item} is unreadable ({problem}); fix or delete it")]
    Corrupt { item: String, problem: String },
}

impl LedgerError {
    /// Whether a later attempt may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            LedgerError::Aws(error) => error.retryable,
            LedgerError::Busy { .. } | LedgerError::LeaseLost { .. } | LedgerError::Conflict { .. } => true,
            LedgerError::Corrupt { .. } => false,
        }
    }
}

/// The state table and how long it keeps facts.
#[derive(Clone)]
pub struct Ledger {
    pub db: aws_sdk_dynamodb::Client,
    pub table: String,
    pub retention: chrono::Duration,
}

fn aws<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> LedgerError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + crate::aws::HttpStatus,
{
    move |error| LedgerError::Aws(AwsError::from_sdk(operation, error))
}

fn invalid(operation: &'static str, error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Aws(AwsError::new(operation, "InvalidRequest", error.to_string()))
}

/// The per-item reasons of a cancelled transaction (`"None"`: that item's condition held);
/// `None` for any other error.
fn cancellation_reasons(error: &SdkError<TransactWriteItemsError>) -> Option<Vec<String>> {
    match error.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
            Some(cancelled.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_owned()).collect())
        }
        _ => None,
    }
}

fn parse<T: DeserializeOwned>(key: &str, item: Item) -> Result<T, LedgerError> {
    serde_dynamo::from_item(item).map_err(|e| LedgerError::Corrupt { item: key.to_owned(), problem: e.to_string() })
}

/// The state and version stored on an item.
fn state_of<S: DeserializeOwned>(key: &ItemKey, item: &Item) -> Result<Option<(S, u64)>, LedgerError> {
    let Some(state) = item.get("state") else { return Ok(None) };
    let state = serde_dynamo::from_attribute_value(state.clone())
        .map_err(|e| LedgerError::Corrupt { item: key.label(), problem: e.to_string() })?;
    let version = item.get("version").and_then(|v| v.as_n().ok()?.parse().ok()).unwrap_or(0);
    Ok(Some((state, version)))
}

impl Ledger {
    pub fn new(db: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Ledger { db, table: table.into(), retention: chrono::Duration::days(DEFAULT_RETENTION_DAYS) }
    }

    /// The table `table`, reached with `config`'s settings.
    pub fn from_config(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Ledger::new(aws_sdk_dynamodb::Client::new(config), table)
    }

    /// When an item written now expires.
    fn expires_at(&self) -> i64 {
        (Utc::now() + self.retention).timestamp()
    }

    /// An `UpdateItem` of `key` by `expr` (its update, condition, names and values): the one place
    /// an expression becomes a request.
    fn update(&self, key: &ItemKey, expr: &Expr) -> UpdateItemFluentBuilder {
        self.db
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.attributes()))
            .set_update_expression(expr.update_expression())
            .set_condition_expression(expr.condition_expression())
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
    }

    /// The same update, as an item of a transaction.
    fn transact_update(&self, key: &ItemKey, expr: &Expr) -> Result<TransactWriteItem, LedgerError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key.attributes()))
            .set_update_expression(expr.update_expression())
            .set_condition_expression(expr.condition_expression())
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .build()
            .map_err(|e| invalid("TransactWriteItems", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// One item's attributes (strongly consistent).
    pub async fn item(&self, key: &ItemKey) -> Result<Option<Item>, LedgerError> {
        let output = self
            .db
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key.attributes()))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws("GetItem"))?;
        Ok(output.item)
    }

    /// The state of an environment (and its version), read without the lease.
    pub async fn env<S: LeasedState>(&self, app: &AppName, env: Environment) -> Result<Option<(S, u64)>, LedgerError> {
        let key = ItemKey::env(app, env);
        match self.item(&key).await? {
            Some(item) => state_of(&key, &item),
            None => Ok(None),
        }
    }

    pub async fn image(&self, app: &AppName, digest: &ImageDigest) -> Result<Option<ImageFacts>, LedgerError> {
        let key = ItemKey::image(app, digest);
        self.item(&key).await?.map(|item| parse(&key.label(), item)).transpose()
    }

    pub async fn tag(&self, app: &AppName, env: Environment, tag: &ImageTag) -> Result<Option<TagItem>, LedgerError> {
        let key = ItemKey::tag(app, env, tag);
        self.item(&key).await?.map(|item| parse(&key.label(), item)).transpose()
    }

    /// Several items in one call (strongly consistent), by key; the keys DynamoDB leaves
    /// unprocessed are asked again after a pause (50 ms, doubling to 1 s), as AWS advises.
    pub async fn items(&self, keys: &[ItemKey]) -> Result<HashMap<ItemKey, Item>, LedgerError> {
        let mut found = HashMap::new();
        let mut wanted: Vec<HashMap<String, AttributeValue>> = keys.iter().map(ItemKey::attributes).collect();
        let mut pauses = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(1))
            .without_max_times()
            .build();
        while !wanted.is_empty() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut wanted)))
                .consistent_read(true)
                .build()
                .map_err(|e| AwsError::new("BatchGetItem", "InvalidRequest", e.to_string()))?;
            let output = self
                .db
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(aws("BatchGetItem"))?;
            for item in output.responses.unwrap_or_default().remove(&self.table).unwrap_or_default() {
                if let Some(key) = ItemKey::parse(&item) {
                    found.insert(key, item);
                }
            }
            if let Some(mut rest) = output.unprocessed_keys.filter(|rest| !rest.is_empty()) {
                wanted = rest.remove(&self.table).map(|k| k.keys).unwrap_or_default();
                tokio::time::sleep(pauses.next().unwrap_or(Duration::from_secs(1))).await;
            }
        }
        Ok(found)
    }

    /// Items of an app whose sort key is between `from` and `to`, in key order (every page, or
    /// the first `limit` items).
    async fn query(
        &self,
        app: &AppName,
        from: &str,
        to: &str,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, LedgerError> {
        let mut pages = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", AttributeValue::S(format!("APP#{app}")))
            .expression_attribute_values(":from", AttributeValue::S(from.to_owned()))
            .expression_attribute_values(":to", AttributeValue::S(to.to_owned()))
            .scan_index_forward(!newest_first)
            .into_paginator()
            .items()
            .send();
        let mut items = Vec::new();
        while limit.is_none_or(|limit| items.len() < limit) {
            match pages.next().await {
                Some(item) => items.push(item.map_err(aws("Query"))?),
                None => break,
            }
        }
        Ok(items)
    }

    /// Every tag stage has verified for an app.
    pub async fn tags(&self, app: &AppName, env: Environment) -> Result<Vec<TagItem>, LedgerError> {
        let from = if env == Environment::STAGE { "TAG#".to_owned() } else { format!("TAG#{env}#") };
        let items = self.query(app, &from, &format!("{from}\u{10FFFF}"), false, None).await?;
        let tags: Vec<TagItem> = items.into_iter().map(|item| parse(app.as_str(), item)).collect::<Result<_, _>>()?;
        Ok(tags.into_iter().filter(|t| t.environment == env).collect())
    }

    /// Every image item of an app.
    pub async fn images(&self, app: &AppName) -> Result<Vec<ImageFacts>, LedgerError> {
        let items = self.query(app, "IMAGE#", "IMAGE#\u{10FFFF}", false, None).await?;
        items.into_iter().map(|item| parse(app.as_str(), item)).collect()
    }

    /// An app's history between two times, oldest first (or newest first, at most `limit`).
    pub async fn history(
        &self,
        app: &AppName,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<HistoryEntry>, LedgerError> {
        let bound = |at: DateTime<Utc>| format!("HIST#{}", at.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
        let to = format!("{}\u{10FFFF}", bound(until));
        let items = self.query(app, &bound(since), &to, newest_first, limit).await?;
        items.into_iter().map(|item| parse(app.as_str(), item)).collect()
    }

    /// The lifecycle hook's `FAILED` answers for `env` of `app` since `since`, oldest first (what a
    /// native deployment's rollback alert shows besides ECS's own reason).
    pub async fn hook_failures(
        &self,
        app: &AppName,
        env: Environment,
        since: DateTime<Utc>,
    ) -> Result<Vec<HookFailure>, LedgerError> {
        let items = self.query(app, "HOOK#", "HOOK#\u{10FFFF}", false, None).await?;
        let failures: Result<Vec<HookFailure>, _> = items.into_iter().map(|item| parse(app.as_str(), item)).collect();
        let mut failures: Vec<HookFailure> =
            failures?.into_iter().filter(|f| f.environment == env && f.at >= since).collect();
        failures.sort_by_key(|f| f.at);
        Ok(failures)
    }

    /// Every item the sweep must look at (the sparse `pending` index; eventually consistent).
    pub async fn pending(&self) -> Result<Vec<Item>, LedgerError> {
        self.db
            .query()
            .table_name(&self.table)
            .index_name("pending")
            .key_condition_expression("pending = :p")
            .expression_attribute_values(":p", AttributeValue::S(PENDING.into()))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(aws("Query"))
    }

    /// Applies an image update on its own (a tag recorded for an image, outside a transition);
    /// returns the image as it is now.
    pub async fn update_image(&self, app: &AppName, update: &ImageUpdate) -> Result<ImageFacts, LedgerError> {
        let Some(digest) = &update.digest else {
            return Err(LedgerError::Corrupt {
                item: app.to_string(),
                problem: "image update without a digest".into(),
            });
        };
        let key = ItemKey::image(app, digest);
        let output = self
            .update(&key, &update.expression(self.expires_at()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(aws("UpdateItem"))?;
        parse(&key.label(), output.attributes.unwrap_or_default())
    }

    /// What the lifecycle hook needs in one read: the environment's state and whether the hook
    /// execution `execution_id` was already answered `FAILED`.
    pub async fn hook_facts(
        &self,
        app: &AppName,
        env: Environment,
        execution_id: &str,
    ) -> Result<(Option<crate::record::EnvState>, Option<HookFailure>), LedgerError> {
        let (env_key, hook_key) = (ItemKey::env(app, env), ItemKey::hook(app, execution_id));
        let mut found = self.items(&[env_key.clone(), hook_key.clone()]).await?;
        let state = match found.remove(&env_key) {
            Some(item) => state_of(&env_key, &item)?.map(|(state, _)| state),
            None => None,
        };
        let failure = found.remove(&hook_key).map(|item| parse(&hook_key.label(), item)).transpose()?;
        Ok((state, failure))
    }

    /// Records a hook execution's `FAILED` answer, unless one is recorded already: returns the
    /// one that stands (the first), so an execution never fails for two different reasons and
    /// never turns `SUCCEEDED` after it failed.
    pub async fn record_hook_failure(&self, app: &AppName, failure: &HookFailure) -> Result<HookFailure, LedgerError> {
        let key = ItemKey::hook(app, &failure.execution_id);
        let mut item: Item = serde_dynamo::to_item(failure).map_err(|e| invalid("PutItem", e))?;
        item.extend(key.attributes());
        let kept = Utc::now() + chrono::TimeDelta::days(HOOK_FAILURE_DAYS);
        item.insert("expires_at".into(), AttributeValue::N(kept.timestamp().to_string()));
        let put = self
            .db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match put {
            Ok(_) => Ok(failure.clone()),
            Err(error) => match error.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                    standing,
                )) => match standing.item() {
                    Some(item) => parse(&key.label(), item.clone()),
                    None => Ok(failure.clone()),
                },
                _ => Err(aws("PutItem")(error)),
            },
        }
    }

    /// Writes a tag item (stage verified `tag.digest` under it).
    pub async fn put_tag(&self, app: &AppName, tag: &TagItem) -> Result<(), LedgerError> {
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.tag_item(app, tag)))
            .send()
            .await
            .map_err(aws("PutItem"))?;
        Ok(())
    }

    fn tag_item(&self, app: &AppName, tag: &TagItem) -> Item {
        let mut item: Item = serde_dynamo::to_item(tag).unwrap_or_default();
        item.extend(ItemKey::tag(app, tag.environment, &tag.tag).attributes());
        item.insert("expires_at".into(), AttributeValue::N(self.expires_at().to_string()));
        item
    }
}

/// The state stored on an item, if the item has any.
pub fn state_from_item<S: DeserializeOwned>(item: &Item) -> Option<S> {
    serde_dynamo::from_attribute_value(item.get("state")?.clone()).ok()
}
