//! Revision cleanup, run by the sweep: every rollout registers a task-definition revision, and a
//! family that only grows buries the few that matter (ECS keeps ACTIVE revisions forever). The
//! sweep deregisters, per environment target, the revisions Conveyor registered (tagged
//! `conveyor:app` with the app's name) that are not among the newest `keep_revisions` of them,
//! that no deployment of the service runs, and that are not the environment's rollback target
//! (its last verified release, its baseline, the rollout's previous revision) — never a revision
//! Conveyor did not register, at most [`PER_SWEEP`] per sweep (ECS's rate limits), each recorded
//! in the history (`deregistered`) and counted in the `RevisionsDeregistered` metric. A family
//! several of the apps' services share is left alone (another environment's rollback target could
//! be among its old revisions). A rollback target deregistered since is registered again when
//! needed, as before.

use std::collections::BTreeSet;

use chrono::Utc;
use tracing::{info, warn};

use crate::config::AppConfig;
use crate::error::DeployError;
use crate::leased::Leased;
use crate::ledger::{Change, HistoryEntry};
use crate::record::EnvState;
use crate::taskdef::TAG_APP;
use crate::types::Environment;
use crate::vocabulary::Outcome;

/// The most revisions one sweep deregisters, across every environment.
pub const PER_SWEEP: usize = 5;

/// One revision of the family, newest first, as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub arn: String,
    /// Tagged `conveyor:app` with this app's name.
    pub registered_by_conveyor: bool,
}

/// The revisions to deregister: past the newest `keep` Conveyor registered, Conveyor's, not
/// `protected`; at most `budget`, oldest first (the ones least likely to be wanted again).
pub fn choose(listed: &[Listed], keep: usize, protected: &BTreeSet<&str>, budget: usize) -> Vec<String> {
    let mut kept = 0;
    let mut chosen: Vec<String> = Vec::new();
    for revision in listed {
        if !revision.registered_by_conveyor {
            continue;
        }
        if kept < keep {
            kept += 1;
            continue;
        }
        if !protected.contains(revision.arn.as_str()) {
            chosen.push(revision.arn.clone());
        }
    }
    chosen.reverse();
    chosen.truncate(budget);
    chosen
}

/// The revision number of the newest rollout, when a cleanup may be due for it: above `keep`
/// (revision numbers count every registration of the family, so below it there cannot be more
/// than `keep`), and newer than the last cleanup's. Spares the sweep the lease and the list call
/// everywhere else: a family is looked at once per rollout.
pub fn due(state: &EnvState, keep: usize) -> Option<u32> {
    let (_, newest) = crate::taskdef::family_revision(&state.rollout.as_ref()?.task_definition_arn)?;
    (newest as usize > keep && state.cleaned_through.is_none_or(|done| done < newest)).then_some(newest)
}

/// The revisions the environment needs: what it would roll back to, and what it rolls out.
fn protected(state: &EnvState) -> BTreeSet<&str> {
    let mut arns: BTreeSet<&str> = BTreeSet::from([state.baseline.arn.as_str()]);
    if let Some(verified) = &state.last_verified {
        arns.insert(&verified.task_definition_arn);
    }
    if let Some(rollout) = &state.rollout {
        arns.insert(&rollout.task_definition_arn);
        arns.insert(&rollout.previous.arn);
    }
    if let Some(watch) = &state.rollback {
        arns.insert(&watch.to);
    }
    arns
}

/// Cleans one target's family under its lease; returns how many revisions it deregistered.
/// Works only where nothing is in flight (a rollout or a rollback may need any revision).
pub async fn clean(here: &mut Leased<'_>, budget: usize) -> Result<usize, DeployError> {
    let (app, env) = (here.app, here.env);
    let Some(state) = here.target_state().cloned() else { return Ok(0) };
    let Some(newest) = due(&state, app.keep_revisions) else { return Ok(0) };
    if budget == 0 || state.in_progress().is_some() || state.rollback.is_some() {
        return Ok(0);
    }
    let Some((family, _)) = crate::taskdef::family_revision(&state.baseline.arn) else { return Ok(0) };
    let family = family.to_owned();
    let arns = here.target.ecs.active_revisions(&family).await?;
    let mut listed = Vec::with_capacity(arns.len());
    for arn in arns {
        let described = here.target.revision(&arn).await?;
        let registered_by_conveyor = described.tag(TAG_APP) == Some(app.name.as_str());
        listed.push(Listed { arn, registered_by_conveyor });
    }
    let mut protected = protected(&state);
    let mut candidates = choose(&listed, app.keep_revisions, &protected, usize::MAX);
    if !candidates.is_empty() {
        // What the service's deployments run is never deregistered, whoever put it there.
        let service = here.target.ecs.service(&here.target.service.cluster, &here.target.service.service).await?;
        protected.extend(service.deployments.iter().map(|d| d.task_definition.as_str()));
        protected.insert(service.task_definition.as_str());
        candidates = choose(&listed, app.keep_revisions, &protected, usize::MAX);
    }
    let due_now = candidates.len();
    let mut gone = Vec::new();
    for arn in candidates.into_iter().take(budget) {
        match here.target.ecs.deregister(&arn).await {
            Ok(()) => gone.push(arn),
            Err(error) => {
                warn!(app = %app.name, environment = %env, task_definition = %arn, error = %error, "revision not deregistered");
                break;
            }
        }
    }
    let mut change = Change::new(state.clone());
    // Done with this rollout's family once nothing is left for a later sweep.
    if gone.len() == due_now {
        change.state.cleaned_through = Some(newest);
    }
    change.history.extend(gone.iter().map(|arn| entry(app, env, arn)));
    here.commit(change).await?;
    if !gone.is_empty() {
        crate::metrics::revisions_deregistered(app, env, gone.len());
        info!(app = %app.name, environment = %env, deregistered = gone.len(), keep = app.keep_revisions,
            revisions = %gone.join(", "), "old revisions deregistered");
    }
    Ok(gone.len())
}

fn entry(app: &AppConfig, env: Environment, arn: &str) -> HistoryEntry {
    let mut entry = HistoryEntry::new(&app.name, env, Outcome::Deregistered, Utc::now());
    entry.task_definition_arn = Some(arn.to_owned());
    entry.reason =
        Some(format!("older than the newest {} Conveyor registered, and nothing runs it", app.keep_revisions));
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(revisions: &[(u32, bool)]) -> Vec<Listed> {
        revisions.iter().map(|(n, ours)| Listed { arn: format!("shop:{n}"), registered_by_conveyor: *ours }).collect()
    }

    #[test]
    fn the_newest_of_conveyors_revisions_are_kept_and_never_another_ones() {
        // 14..1, newest first; 12 and 5 registered by someone else.
        let revisions: Vec<(u32, bool)> = (1..=14).rev().map(|n| (n, n != 12 && n != 5)).collect();
        let listed = listed(&revisions);
        let none = BTreeSet::new();
        // Keeping 8 of Conveyor's: 14, 13, 11..=6 (12 is not Conveyor's); 4..=1 go, oldest first.
        assert_eq!(choose(&listed, 8, &none, 5), ["shop:1", "shop:2", "shop:3", "shop:4"]);
        assert_eq!(choose(&listed, 8, &none, 2), ["shop:1", "shop:2"], "at most the budget");
        let protected = BTreeSet::from(["shop:2"]);
        assert_eq!(choose(&listed, 8, &protected, 5), ["shop:1", "shop:3", "shop:4"], "never a protected one");
        assert!(choose(&listed, 12, &none, 5).is_empty());
    }
}
