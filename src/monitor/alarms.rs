//! The alarms gate (contract, *Pipelines*: `alarms`): an alarm of the environment that entered
//! ALARM after its rollout started, before the image is vetted, fails the rollout — even if it
//! recovered since. One already in ALARM when the rollout started does not.
//!
//! Judged at verification and again at the soak's end from CloudWatch itself (a missed or late
//! event changes nothing): the alarms' current states in one call, then the state history of only
//! those that changed since the rollout started and are not in ALARM now.

use aws_sdk_cloudwatch::types::StateValue;
use chrono::{DateTime, Utc};

use crate::aws::{AlarmReading, Alarms, AwsError};

/// What the alarms say of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// None entered ALARM since the rollout started; `already` were in ALARM before it did.
    Quiet { already: Vec<String> },
    /// `alarm` entered ALARM at `at`, after the rollout started (`recovered`: it is not in ALARM now).
    Fired { alarm: String, at: DateTime<Utc>, recovered: bool },
    /// Alarms the config names that CloudWatch does not have there: the gate cannot be judged,
    /// so it does not pass (a typo must not turn a gate off).
    Missing(Vec<String>),
    /// CloudWatch refused to answer (a permission missing, say): not judged, so not passed —
    /// said at once rather than retried for ever. A refusal that may pass (throttling, 5xx) is
    /// an error instead: the invocation is retried.
    Unreadable(AwsError),
}

impl Gate {
    /// Why the rollout fails, if it does.
    pub fn failure(&self) -> Option<String> {
        match self {
            Gate::Quiet { .. } => None,
            Gate::Fired { alarm, at, recovered } => Some(format!(
                "alarm {alarm} entered ALARM at {}{}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                if *recovered { " (it has recovered since)" } else { "" }
            )),
            Gate::Missing(names) => {
                Some(format!("alarm {} does not exist in the target's account and region", names.join(", ")))
            }
            Gate::Unreadable(error) => Some(format!("the alarms cannot be read: {error}")),
        }
    }

    /// `reason`, with what a passing gate adds to it: the alarms that were already in ALARM.
    pub fn annotate(&self, reason: String) -> String {
        match self {
            Gate::Quiet { already } if !already.is_empty() => {
                format!("{reason}; alarm {} was already in ALARM when the rollout started", already.join(", "))
            }
            _ => reason,
        }
    }
}

/// What the current states settle: the gate, or the alarms whose history must be read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Look {
    Settled(Gate),
    History { of: Vec<String>, already: Vec<String> },
}

/// Reads the gate of a rollout started at `since`: at most 1 + (alarms that changed since and
/// are not in ALARM now) calls; none without alarms.
pub async fn check(alarms: &Alarms, names: &[String], since: DateTime<Utc>) -> Result<Gate, AwsError> {
    if names.is_empty() {
        return Ok(Gate::Quiet { already: Vec::new() });
    }
    let judged = async {
        let readings = alarms.read(names).await?;
        match first_look(names, &readings, since) {
            Look::Settled(gate) => Ok::<_, AwsError>(gate),
            Look::History { of, already } => {
                for alarm in of {
                    if let Some(at) = alarms.entered_alarm_since(&alarm, since).await? {
                        return Ok(Gate::Fired { alarm, at, recovered: true });
                    }
                }
                Ok(Gate::Quiet { already })
            }
        }
    };
    match judged.await {
        Err(error) if !error.retryable => Ok(Gate::Unreadable(error)),
        judged => judged,
    }
}

fn first_look(names: &[String], readings: &[AlarmReading], since: DateTime<Utc>) -> Look {
    let (mut missing, mut history, mut already) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        let Some(reading) = readings.iter().find(|r| &r.name == name) else {
            missing.push(name.clone());
            continue;
        };
        let changed_since = reading.updated_at >= since;
        match (&reading.state, changed_since) {
            (StateValue::Alarm, true) => {
                return Look::Settled(Gate::Fired { alarm: name.clone(), at: reading.updated_at, recovered: false })
            }
            (StateValue::Alarm, false) => already.push(name.clone()),
            (_, true) => history.push(name.clone()),
            (_, false) => {}
        }
    }
    if !missing.is_empty() {
        return Look::Settled(Gate::Missing(missing));
    }
    if history.is_empty() {
        return Look::Settled(Gate::Quiet { already });
    }
    Look::History { of: history, already }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-12-03T10:{minute:02}:00Z")).unwrap().with_timezone(&Utc)
    }

    fn reading(name: &str, state: StateValue, minute: u32) -> AlarmReading {
        AlarmReading { name: name.into(), state, updated_at: at(minute) }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn an_alarm_in_alarm_since_the_start_fails_and_one_from_before_does_not() {
        let since = at(10);
        let fired = first_look(&names(&["5xx"]), &[reading("5xx", StateValue::Alarm, 12)], since);
        assert_eq!(fired, Look::Settled(Gate::Fired { alarm: "5xx".into(), at: at(12), recovered: false }));
        let before = first_look(&names(&["5xx"]), &[reading("5xx", StateValue::Alarm, 5)], since);
        let Look::Settled(gate) = before else { panic!("history read for an alarm that has not changed") };
        assert!(gate.failure().is_none());
        assert_eq!(
            gate.annotate("verified".into()),
            "verified; alarm 5xx was already in ALARM when the rollout started"
        );
    }

    #[test]
    fn only_alarms_that_changed_since_the_start_have_their_history_read() {
        let since = at(10);
        let readings = [
            reading("quiet", StateValue::Ok, 1),
            reading("flapped", StateValue::Ok, 15),
            reading("nodata", StateValue::InsufficientData, 11),
        ];
        let look = first_look(&names(&["quiet", "flapped", "nodata"]), &readings, since);
        assert_eq!(look, Look::History { of: names(&["flapped", "nodata"]), already: Vec::new() });
        let quiet = first_look(&names(&["quiet"]), &readings, since);
        assert_eq!(quiet, Look::Settled(Gate::Quiet { already: Vec::new() }));
    }

    #[test]
    fn an_unreadable_gate_does_not_pass() {
        let denied = AwsError::new("DescribeAlarms", "AccessDenied", "not authorized");
        let gate = Gate::Unreadable(denied);
        assert!(gate.failure().unwrap().starts_with("the alarms cannot be read: DescribeAlarms failed: AccessDenied"));
        assert_eq!(Gate::Quiet { already: Vec::new() }.annotate("verified".into()), "verified");
    }

    #[test]
    fn a_missing_alarm_does_not_pass_the_gate() {
        let look = first_look(&names(&["typo", "quiet"]), &[reading("quiet", StateValue::Ok, 1)], at(10));
        let Look::Settled(gate) = look else { panic!("{look:?}") };
        assert_eq!(gate.failure().unwrap(), "alarm typo does not exist in the target's account and region");
    }
}
