//! CloudWatch: the alarms an environment's rollout must keep quiet (its `alarms` gate).

use std::sync::{Arc, OnceLock};

use aws_sdk_cloudwatch::types::{AlarmType, HistoryItemType, ScanBy, StateValue};
use chrono::{DateTime, Utc};

use super::AwsError;

/// An alarm as CloudWatch reports it now.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmReading {
    pub name: String,
    pub state: StateValue,
    /// When its state last changed: every transition since is later than this.
    pub updated_at: DateTime<Utc>,
}

/// CloudWatch's client, built on first use: only deploy-monitor reads alarms, and only for
/// environments that have some, so no other cold start pays for it.
#[derive(Clone)]
pub struct Alarms {
    config: aws_config::SdkConfig,
    client: Arc<OnceLock<aws_sdk_cloudwatch::Client>>,
}

impl Alarms {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Alarms { config: config.clone(), client: Arc::default() }
    }

    fn client(&self) -> &aws_sdk_cloudwatch::Client {
        self.client.get_or_init(|| aws_sdk_cloudwatch::Client::new(&self.config))
    }

    /// The current state of each of `names` that exists (metric and composite alarms alike), in
    /// one `DescribeAlarms` call (an environment has at most 10). CloudWatch returns composite
    /// alarms only to a caller whose permission is scoped to `*` (the templates' is).
    pub async fn read(&self, names: &[String]) -> Result<Vec<AlarmReading>, AwsError> {
        let output = self
            .client()
            .describe_alarms()
            .set_alarm_names(Some(names.to_vec()))
            .alarm_types(AlarmType::MetricAlarm)
            .alarm_types(AlarmType::CompositeAlarm)
            .max_records(100)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeAlarms", e))?;
        // When the state value last changed; where CloudWatch leaves that out, its older field,
        // which a new reason also moves: never earlier, so no transition is missed (at worst an
        // alarm already in ALARM counts as fired).
        let metric = output.metric_alarms().iter().map(|a| {
            (a.alarm_name(), a.state_value(), a.state_transitioned_timestamp().or(a.state_updated_timestamp()))
        });
        let composite = output.composite_alarms().iter().map(|a| {
            (a.alarm_name(), a.state_value(), a.state_transitioned_timestamp().or(a.state_updated_timestamp()))
        });
        Ok(metric
            .chain(composite)
            .filter_map(|(name, state, at)| {
                Some(AlarmReading {
                    name: name?.to_owned(),
                    state: state?.clone(),
                    updated_at: DateTime::from_timestamp(at?.secs(), at?.subsec_nanos())?,
                })
            })
            .collect())
    }

    /// When `name` last entered ALARM since `since`, read from its state history (newest first,
    /// page by page until one is found): an alarm that fired and recovered still counts.
    pub async fn entered_alarm_since(
        &self,
        name: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, AwsError> {
        let start = aws_sdk_cloudwatch::primitives::DateTime::from_millis(since.timestamp_millis());
        let mut next_token = None;
        loop {
            let output = self
                .client()
                .describe_alarm_history()
                .alarm_name(name)
                // Without them, only a metric alarm's history is returned.
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .history_item_type(HistoryItemType::StateUpdate)
                .start_date(start)
                .scan_by(ScanBy::TimestampDescending)
                .max_records(100)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DescribeAlarmHistory", e))?;
            let entered = output.alarm_history_items().iter().find_map(|item| {
                let at = item.timestamp()?;
                entered_alarm(item.history_data()?).then(|| DateTime::from_timestamp(at.secs(), at.subsec_nanos()))?
            });
            if entered.is_some() {
                return Ok(entered);
            }
            match output.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => return Ok(None),
            }
        }
    }
}

/// Whether a `StateUpdate` history item's data (JSON with `oldState` and `newState`) records a
/// transition into ALARM.
fn entered_alarm(history_data: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(history_data)
        .ok()
        .and_then(|data| data.pointer("/newState/stateValue")?.as_str().map(|s| s == StateValue::Alarm.as_str()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::entered_alarm;

    #[test]
    fn a_transition_into_alarm_is_read_from_the_history_data() {
        let into = r#"{"version":"1.0","oldState":{"stateValue":"OK"},"newState":{"stateValue":"ALARM"}}"#;
        let out = r#"{"version":"1.0","oldState":{"stateValue":"ALARM"},"newState":{"stateValue":"OK"}}"#;
        assert!(entered_alarm(into));
        assert!(!entered_alarm(out));
        assert!(!entered_alarm("not json"));
    }
}
