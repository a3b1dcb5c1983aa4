//! The release history as operators read it (`conveyor history`, `conveyor rollback`): rows with
//! every key present, and the release a rollback goes back to.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ledger::{HistoryEntry, Ledger, LedgerError};
use crate::types::{AppName, Environment, ImageDigest};
use crate::vocabulary::Outcome;

/// One line of `conveyor history`: every key is always there (`null` when it does not apply), so
/// scripts can rely on the shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub at: DateTime<Utc>,
    pub environment: Environment,
    pub event: Outcome,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub reason: Option<String>,
    /// From the start of the rollout this entry settles (or of the rollback it ends).
    pub duration_seconds: Option<i64>,
    /// Who asked (promotions, pauses): the identity AWS verified.
    pub requested_by: Option<String>,
    /// The name the request gave (unverified).
    pub on_behalf_of: Option<String>,
    /// Promoted despite an earlier failure of the image.
    pub forced: bool,
    pub rollout_id: Option<String>,
    pub task_definition_arn: Option<String>,
    pub rollback_task_definition_arn: Option<String>,
    pub deployment_id: Option<String>,
}

impl From<&HistoryEntry> for HistoryRow {
    fn from(entry: &HistoryEntry) -> Self {
        HistoryRow {
            at: entry.at,
            environment: entry.environment,
            event: entry.event,
            tag: entry.tag.as_ref().map(ToString::to_string),
            digest: entry.digest.as_ref().map(ToString::to_string),
            reason: entry.reason.clone(),
            duration_seconds: entry.duration_seconds(),
            requested_by: entry.requested_by.clone(),
            on_behalf_of: entry.on_behalf_of.clone(),
            forced: entry.forced,
            rollout_id: entry.rollout_id.clone(),
            task_definition_arn: entry.task_definition_arn.clone(),
            rollback_task_definition_arn: entry.rollback_task_definition_arn.clone(),
            deployment_id: entry.deployment_id.clone(),
        }
    }
}

/// The newest `limit` entries of an app's history (of one environment, if given), newest first.
pub async fn recent(
    ledger: &Ledger,
    app: &AppName,
    env: Option<Environment>,
    limit: usize,
) -> Result<Vec<HistoryEntry>, LedgerError> {
    let now = Utc::now() + chrono::Duration::minutes(1);
    match env {
        // The table's order is time, then environment: an environment's entries are found by
        // reading newest first until enough of them are there.
        None => ledger.history(app, DateTime::UNIX_EPOCH, now, true, Some(limit)).await,
        Some(env) => {
            let mut wanted = limit.saturating_mul(4).max(50);
            loop {
                let entries = ledger.history(app, DateTime::UNIX_EPOCH, now, true, Some(wanted)).await?;
                let complete = entries.len() < wanted;
                let of_env: Vec<HistoryEntry> =
                    entries.into_iter().filter(|e| e.environment == env).take(limit).collect();
                if of_env.len() == limit || complete {
                    return Ok(of_env);
                }
                wanted = wanted.saturating_mul(4);
            }
        }
    }
}

/// The whole retained history of an app up to now, oldest first.
pub async fn all(ledger: &Ledger, app: &AppName) -> Result<Vec<HistoryEntry>, LedgerError> {
    ledger.history(app, DateTime::UNIX_EPOCH, Utc::now() + chrono::Duration::minutes(1), false, None).await
}

/// What `conveyor rollback` goes back to: the newest release verified in `env` (prod) whose image
/// is not the one it runs now (`running`) — the verified release before the current one. With an
/// unverified rollout there, that is the last verified release; with nothing known running, the
/// last verified one.
pub fn previous_release<'a>(
    history: &'a [HistoryEntry],
    env: Environment,
    running: Option<&ImageDigest>,
) -> Option<&'a HistoryEntry> {
    history
        .iter()
        .filter(|e| e.environment == env && e.event == Outcome::Verified)
        .filter(|e| e.digest.is_some() && e.digest.as_ref() != running)
        .max_by_key(|e| e.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ImageTag;

    fn digest(n: u8) -> ImageDigest {
        ImageDigest::parse(format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    fn entry(minute: i64, env: Environment, event: Outcome, n: u8) -> HistoryEntry {
        let at = DateTime::from_timestamp(1_700_000_000 + minute * 60, 0).unwrap();
        let mut entry = HistoryEntry::new(&AppName::parse("shop").unwrap(), env, event, at);
        entry.tag = Some(ImageTag::parse(format!("v{n}")).unwrap());
        entry.digest = Some(digest(n));
        entry
    }

    #[test]
    fn rollback_goes_to_the_verified_prod_release_before_the_running_one() {
        const PROD: Environment = Environment::PROD;
        const STAGE: Environment = Environment::STAGE;
        use Outcome::{Promoted, RolledBack, Verified};
        let mut history = vec![
            entry(0, STAGE, Verified, 1),
            entry(1, PROD, Promoted, 1),
            entry(2, PROD, Verified, 1),
            entry(3, STAGE, Verified, 2),
            entry(4, PROD, Verified, 2),
            entry(5, STAGE, Verified, 3), // only in stage: never a rollback target
        ];
        let tag = |e: Option<&HistoryEntry>| e.and_then(|e| e.tag.as_ref()).map(ToString::to_string);
        assert_eq!(tag(previous_release(&history, PROD, Some(&digest(2)))), Some("v1".into()));
        // v3 rolling out (not verified): back to the last verified release, v2.
        assert_eq!(tag(previous_release(&history, PROD, Some(&digest(3)))), Some("v2".into()));
        assert_eq!(tag(previous_release(&history, PROD, None)), Some("v2".into()));
        // v3 failed in prod and prod is back on v2: still v1 before it.
        history.push(entry(6, PROD, RolledBack, 3));
        assert_eq!(tag(previous_release(&history, PROD, Some(&digest(2)))), Some("v1".into()));
        // v1 promoted again after v2: the release before it is v2.
        history.push(entry(7, PROD, Verified, 1));
        assert_eq!(tag(previous_release(&history, PROD, Some(&digest(1)))), Some("v2".into()));
        // Only one release ever verified, and it runs: nothing to go back to.
        assert_eq!(previous_release(&history[..3], PROD, Some(&digest(1))), None);
    }

    #[test]
    fn rows_have_every_key() {
        let mut e = entry(0, Environment::PROD, Outcome::Verified, 1);
        e.started_at = Some(e.at - chrono::Duration::seconds(95));
        let row = serde_json::to_value(HistoryRow::from(&e)).unwrap();
        assert_eq!(row["duration_seconds"], 95);
        assert_eq!(row["event"], "verified");
        let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 14, "{keys:?}");
        assert!(row["requested_by"].is_null() && row["on_behalf_of"].is_null() && row["forced"] == false);
    }
}
