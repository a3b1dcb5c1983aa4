//! The monitor's decisions, as functions of data: what an event, a service's state or the clock
//! mean for the rollout Conveyor recorded. No I/O here.

use chrono::{DateTime, Utc};

use crate::aws::{Deployment, ServiceState};
use crate::events::{DeploymentEvent, DeploymentEventName};
use crate::releases::{EnvRecord, Rollout};

/// What to do with a deployment state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventDecision {
    Skip(String),
    /// Conveyor's rollout completed: verify it.
    Verify(Rollout),
    /// Conveyor's rollout failed: roll back.
    Fail(Rollout, String),
}

pub fn on_event(record: Option<&EnvRecord>, event: &DeploymentEvent) -> EventDecision {
    let Some(current) = record.and_then(|r| r.current.as_ref()) else {
        return EventDecision::Skip("Conveyor has started no rollout on this service".into());
    };
    if current.deployment_id.as_deref() != Some(event.deployment_id.as_str()) {
        return EventDecision::Skip(format!(
            "stale: {} is not Conveyor's current rollout ({})",
            event.deployment_id,
            current.deployment_id.as_deref().unwrap_or("unknown")
        ));
    }
    if record.and_then(EnvRecord::in_progress).is_none() {
        return EventDecision::Skip(format!("already handled: the rollout is {}", current.state.as_str()));
    }
    match event.name {
        DeploymentEventName::Completed => EventDecision::Verify(current.clone()),
        DeploymentEventName::Failed => EventDecision::Fail(
            current.clone(),
            event.reason.clone().unwrap_or_else(|| "ECS reported the deployment FAILED".into()),
        ),
        DeploymentEventName::InProgress => EventDecision::Skip("deployment in progress".into()),
    }
}

/// What the service's state says about a completed rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Primary, the expected revision, every desired task running (health still to check).
    Healthy,
    /// Another deployment is primary now: this completion is history, nothing is vetted.
    Stale(String),
    Failed(String),
}

pub fn verify(rollout: &Rollout, service: &ServiceState) -> Verification {
    let Some(primary) = service.primary() else {
        return Verification::Failed("the service has no primary deployment".into());
    };
    if rollout.deployment_id.as_deref() != Some(primary.id.as_str()) {
        return Verification::Stale(format!(
            "deployment {} is no longer primary ({} is)",
            rollout.deployment_id.as_deref().unwrap_or("unknown"),
            primary.id
        ));
    }
    if primary.task_definition != rollout.task_definition_arn {
        return Verification::Failed(format!(
            "the primary deployment runs {}, not {}",
            primary.task_definition, rollout.task_definition_arn
        ));
    }
    if primary.rollout_state.as_deref() == Some("FAILED") {
        let reason = primary.rollout_state_reason.as_deref().unwrap_or("no reason given");
        return Verification::Failed(format!("ECS marked the deployment FAILED: {reason}"));
    }
    if primary.running < primary.desired || service.running < service.desired {
        return Verification::Failed(format!(
            "{} of {} desired tasks running after the rollout completed",
            primary.running.min(service.running),
            service.desired
        ));
    }
    Verification::Healthy
}

/// How to get a failed rollout's service back to something good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailurePlan {
    /// ECS (its deployment circuit breaker) already moved the service to this revision.
    AlreadyRolledBack {
        to: String,
    },
    RollBack {
        to: String,
    },
    /// The last verified revision is the failed one itself.
    NothingToRollBackTo,
}

pub fn failure_plan(record: &EnvRecord, rollout: &Rollout, service: &ServiceState) -> FailurePlan {
    if let Some(primary) = service.primary() {
        let ours = rollout.deployment_id.as_deref() == Some(primary.id.as_str());
        if !ours && primary.task_definition != rollout.task_definition_arn {
            return FailurePlan::AlreadyRolledBack { to: primary.task_definition.clone() };
        }
    }
    let target = record.rollback_target();
    if target == rollout.task_definition_arn {
        return FailurePlan::NothingToRollBackTo;
    }
    FailurePlan::RollBack { to: target.to_owned() }
}

/// What the sweep does with a rollout still in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepAction {
    Wait,
    Verify,
    Fail(String),
    Superseded(String),
}

pub fn reconcile(
    rollout: &Rollout,
    service: &ServiceState,
    now: DateTime<Utc>,
    timeout: std::time::Duration,
) -> SweepAction {
    let ours: Option<&Deployment> = match rollout.deployment_id.as_deref() {
        Some(id) => service.deployments.iter().find(|d| d.id == id),
        None => service.deployments.iter().find(|d| d.task_definition == rollout.task_definition_arn),
    };
    let primary = service.primary();
    match ours {
        Some(d) if d.rollout_state.as_deref() == Some("FAILED") => SweepAction::Fail(format!(
            "ECS marked the deployment FAILED: {}",
            d.rollout_state_reason.as_deref().unwrap_or("no reason given")
        )),
        Some(d) if d.is_primary() && d.rollout_state.as_deref() == Some("COMPLETED") => SweepAction::Verify,
        Some(d) if d.is_primary() => {
            let age = now.signed_duration_since(rollout.started_at);
            if age.to_std().is_ok_and(|age| age >= timeout) {
                SweepAction::Fail(format!(
                    "not completed after {} s (rollout_timeout_seconds {}): {} of {} tasks running",
                    age.num_seconds(),
                    timeout.as_secs(),
                    d.running,
                    d.desired
                ))
            } else {
                SweepAction::Wait
            }
        }
        _ => match primary {
            Some(p) if ours.is_none() && p.task_definition == rollout.previous_task_definition_arn => {
                SweepAction::Fail(format!("ECS rolled the deployment back to {}", p.task_definition))
            }
            Some(p) => SweepAction::Superseded(format!("replaced by deployment {} ({})", p.id, p.task_definition)),
            None => SweepAction::Superseded("the service has no primary deployment".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::releases::RolloutState;
    use crate::types::{AppName, Environment, ImageDigest, ImageTag};

    const TD1: &str = "arn:aws:ecs:us-east-1:1:task-definition/shop:1";
    const TD2: &str = "arn:aws:ecs:us-east-1:1:task-definition/shop:2";
    const TD3: &str = "arn:aws:ecs:us-east-1:1:task-definition/shop:3";

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).unwrap()
    }

    fn rollout(td: &str, id: &str) -> Rollout {
        Rollout {
            tag: ImageTag::parse("v2").unwrap(),
            digest: ImageDigest::parse(format!("sha256:{}", "2".repeat(64))).unwrap(),
            image: "repo@sha256:2".into(),
            task_definition_arn: td.into(),
            previous_task_definition_arn: TD1.into(),
            deployment_id: Some(id.into()),
            event_time: at(0),
            started_at: at(0),
            state: RolloutState::InProgress,
            reason: None,
            settled_at: None,
        }
    }

    fn record_with(current: Rollout) -> EnvRecord {
        let mut record = EnvRecord::first(&AppName::parse("shop").unwrap(), Environment::Stage, "c", "s", TD1);
        record.started(current);
        record
    }

    fn deployment(id: &str, status: &str, state: &str, td: &str, running: i32) -> Deployment {
        Deployment {
            id: id.into(),
            status: status.into(),
            rollout_state: Some(state.into()),
            rollout_state_reason: None,
            task_definition: td.into(),
            desired: 2,
            running,
            failed_tasks: 0,
        }
    }

    fn service(deployments: Vec<Deployment>, running: i32) -> ServiceState {
        ServiceState {
            arn: "arn".into(),
            status: "ACTIVE".into(),
            task_definition: deployments[0].task_definition.clone(),
            desired: 2,
            running,
            deployments,
        }
    }

    fn event(name: DeploymentEventName, id: &str) -> DeploymentEvent {
        DeploymentEvent {
            event_id: None,
            time: None,
            service_arn: "arn:aws:ecs:us-east-1:1:service/c/s".into(),
            cluster: Some("c".into()),
            service: "s".into(),
            name,
            deployment_id: id.into(),
            reason: Some("ECS deployment circuit breaker: task failed to start.".into()),
        }
    }

    #[test]
    fn events_for_the_current_rollout_are_acted_on() {
        let record = record_with(rollout(TD2, "ecs-svc/2"));
        let current = record.current.clone().unwrap();
        assert_eq!(
            on_event(Some(&record), &event(DeploymentEventName::Completed, "ecs-svc/2")),
            EventDecision::Verify(current.clone())
        );
        assert_eq!(
            on_event(Some(&record), &event(DeploymentEventName::Failed, "ecs-svc/2")),
            EventDecision::Fail(current, "ECS deployment circuit breaker: task failed to start.".into())
        );
        assert!(matches!(
            on_event(Some(&record), &event(DeploymentEventName::InProgress, "ecs-svc/2")),
            EventDecision::Skip(_)
        ));
    }

    #[test]
    fn stale_repeated_and_foreign_events_are_skipped() {
        let mut record = record_with(rollout(TD2, "ecs-svc/2"));
        assert!(
            matches!(on_event(None, &event(DeploymentEventName::Failed, "ecs-svc/2")), EventDecision::Skip(r) if r.contains("no rollout"))
        );
        assert!(
            matches!(on_event(Some(&record), &event(DeploymentEventName::Completed, "ecs-svc/1")), EventDecision::Skip(r) if r.contains("stale"))
        );
        record.settled(RolloutState::RolledBack, "x", at(1));
        assert!(
            matches!(on_event(Some(&record), &event(DeploymentEventName::Failed, "ecs-svc/2")), EventDecision::Skip(r) if r.contains("already handled"))
        );
    }

    #[test]
    fn verification_needs_the_primary_running_the_expected_revision_fully() {
        let ours = rollout(TD2, "ecs-svc/2");
        assert_eq!(
            verify(&ours, &service(vec![deployment("ecs-svc/2", "PRIMARY", "COMPLETED", TD2, 2)], 2)),
            Verification::Healthy
        );
        assert!(matches!(
            verify(
                &ours,
                &service(
                    vec![
                        deployment("ecs-svc/3", "PRIMARY", "IN_PROGRESS", TD3, 0),
                        deployment("ecs-svc/2", "ACTIVE", "COMPLETED", TD2, 2)
                    ],
                    2
                )
            ),
            Verification::Stale(_)
        ));
        assert!(
            matches!(verify(&ours, &service(vec![deployment("ecs-svc/2", "PRIMARY", "COMPLETED", TD3, 2)], 2)), Verification::Failed(r) if r.contains("runs"))
        );
        assert!(
            matches!(verify(&ours, &service(vec![deployment("ecs-svc/2", "PRIMARY", "COMPLETED", TD2, 1)], 1)), Verification::Failed(r) if r.contains("1 of 2"))
        );
        assert!(matches!(
            verify(&ours, &service(vec![deployment("ecs-svc/2", "PRIMARY", "FAILED", TD2, 0)], 0)),
            Verification::Failed(_)
        ));
    }

    #[test]
    fn failures_roll_back_to_the_last_verified_revision() {
        let ours = rollout(TD3, "ecs-svc/3");
        let mut record = record_with(ours.clone());
        let failing = service(vec![deployment("ecs-svc/3", "PRIMARY", "FAILED", TD3, 0)], 0);
        // Nothing verified yet: back to what ran before Conveyor.
        assert_eq!(failure_plan(&record, &ours, &failing), FailurePlan::RollBack { to: TD1.into() });
        // Verified TD2 exists: back to it, not merely the previous revision number.
        record.last_verified = Some(crate::releases::Verified {
            tag: ImageTag::parse("v1").unwrap(),
            digest: ImageDigest::parse(format!("sha256:{}", "1".repeat(64))).unwrap(),
            image: "x".into(),
            task_definition_arn: TD2.into(),
            verified_at: at(0),
        });
        assert_eq!(failure_plan(&record, &ours, &failing), FailurePlan::RollBack { to: TD2.into() });
    }

    #[test]
    fn a_circuit_breaker_rollback_is_not_rolled_back_again() {
        let ours = rollout(TD2, "ecs-svc/2");
        let record = record_with(ours.clone());
        let rolled_back = service(
            vec![
                deployment("ecs-svc/9", "PRIMARY", "IN_PROGRESS", TD1, 0),
                deployment("ecs-svc/2", "ACTIVE", "FAILED", TD2, 0),
            ],
            2,
        );
        assert_eq!(failure_plan(&record, &ours, &rolled_back), FailurePlan::AlreadyRolledBack { to: TD1.into() });
    }

    #[test]
    fn nothing_to_roll_back_to_when_the_failed_revision_is_the_target() {
        let ours = rollout(TD1, "ecs-svc/2");
        let record = record_with(ours.clone());
        let failing = service(vec![deployment("ecs-svc/2", "PRIMARY", "FAILED", TD1, 0)], 0);
        assert_eq!(failure_plan(&record, &ours, &failing), FailurePlan::NothingToRollBackTo);
    }

    #[test]
    fn the_sweep_settles_what_no_event_reported() {
        let ours = rollout(TD2, "ecs-svc/2");
        let timeout = Duration::from_secs(1800);
        let completed = service(vec![deployment("ecs-svc/2", "PRIMARY", "COMPLETED", TD2, 2)], 2);
        assert_eq!(reconcile(&ours, &completed, at(5), timeout), SweepAction::Verify);
        let running = service(
            vec![
                deployment("ecs-svc/2", "PRIMARY", "IN_PROGRESS", TD2, 1),
                deployment("ecs-svc/1", "ACTIVE", "COMPLETED", TD1, 1),
            ],
            2,
        );
        assert_eq!(reconcile(&ours, &running, at(29), timeout), SweepAction::Wait);
        assert!(
            matches!(reconcile(&ours, &running, at(30), timeout), SweepAction::Fail(r) if r.contains("not completed after 1800 s"))
        );
        let failed = service(vec![deployment("ecs-svc/2", "PRIMARY", "FAILED", TD2, 0)], 0);
        assert!(matches!(reconcile(&ours, &failed, at(5), timeout), SweepAction::Fail(_)));
        let rolled_back = service(vec![deployment("ecs-svc/9", "PRIMARY", "COMPLETED", TD1, 2)], 2);
        assert!(
            matches!(reconcile(&ours, &rolled_back, at(5), timeout), SweepAction::Fail(r) if r.contains("rolled the deployment back"))
        );
        let replaced = service(
            vec![
                deployment("ecs-svc/7", "PRIMARY", "IN_PROGRESS", TD3, 0),
                deployment("ecs-svc/2", "ACTIVE", "COMPLETED", TD2, 2),
            ],
            2,
        );
        assert!(matches!(reconcile(&ours, &replaced, at(5), timeout), SweepAction::Superseded(_)));
    }
}
