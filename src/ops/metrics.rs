//! The four DORA metrics, from the release history (`conveyor metrics`).
//!
//! | metric | from the history |
//! |---|---|
//! | deployment frequency | prod verifications per day in the window |
//! | lead time for changes | first push of a digest (its image's `first_pushed_at`) → its first verification in prod |
//! | change failure rate | prod rollouts (promotions) started in the window that were rolled back or failed, over those promotions |
//! | time to restore service | a prod failure (rolled back or failed) in the window → service restored: its rollback completed (`restored`) or the next prod verification, whichever comes first |
//!
//! "prod" is the app's production: its last environment (`prod` in a v2 pipeline; `live` in a
//! dev → stage → live one: [`crate::config::Pipeline::production`]).
//!
//! Lead time and time to restore are given as median and 90th percentile (nearest rank). A digest
//! promoted again later (a rollback to it) is a deployment, not a new change: only its first prod
//! verification has a lead time. A failure neither restored nor followed by a verification yet is
//! `open`: an automatic rollback that put the last good release back restored service when its
//! deployment completed.
//!
//! Beside the four, the lead time **to each environment** of a pipeline (`lead_time_to`): first
//! push of a digest → its first verification there (after its soak: when it was vetted there).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ledger::{HistoryEntry, Ledger, LedgerError};
use crate::types::{AppName, Environment, ImageDigest};
use crate::vocabulary::Outcome;

/// The raw figures of one or more apps over one window; [`Samples::merge`] adds apps up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Samples {
    /// Prod verifications in the window.
    pub verified: usize,
    /// Prod rollouts started in the window.
    pub promotions: usize,
    /// Of those, the ones rolled back or failed.
    pub failed: usize,
    /// Prod failures in the window.
    pub failures: usize,
    /// Seconds from a prod failure in the window to the next prod verification.
    pub restore_times: Vec<i64>,
    /// Seconds from first push to first verification, per environment and change verified there
    /// in the window.
    pub lead_times_to: BTreeMap<Environment, Vec<i64>>,
    /// Seconds from first push to first verification in production (each app's own), per change
    /// verified there in the window.
    pub production_lead_times: Vec<i64>,
}

impl Samples {
    /// Seconds from first push to first verification in production, per change verified there in
    /// the window.
    pub fn lead_times(&self) -> &[i64] {
        &self.production_lead_times
    }

    pub fn merge(&mut self, other: Samples) {
        self.verified += other.verified;
        self.promotions += other.promotions;
        self.failed += other.failed;
        self.failures += other.failures;
        self.restore_times.extend(other.restore_times);
        self.production_lead_times.extend(other.production_lead_times);
        for (env, times) in other.lead_times_to {
            self.lead_times_to.entry(env).or_default().extend(times);
        }
    }
}

/// Identifies a rollout in the history (entries written before rollout ids stand alone).
fn rollout_key(entry: &HistoryEntry, index: usize) -> String {
    entry.rollout_id.clone().unwrap_or_else(|| format!("#{index}"))
}

/// The figures of one app's `history` (any order; entries after `until` are not looked at) over
/// the window `since..=until`; `first_pushed` gives each digest's first push; DORA's figures are
/// those of `production` (the app's last environment: [`crate::config::Pipeline::production`]).
pub fn samples(
    history: &[HistoryEntry],
    first_pushed: &HashMap<ImageDigest, DateTime<Utc>>,
    production: Environment,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Samples {
    let is_prod = |entry: &HistoryEntry, event: Outcome| entry.environment == production && entry.event == event;
    let is_prod_failure = |entry: &HistoryEntry| {
        entry.environment == production && matches!(entry.event, Outcome::RolledBack | Outcome::Failed)
    };
    let mut entries: Vec<&HistoryEntry> = history.iter().filter(|e| e.at <= until).collect();
    entries.sort_by_key(|e| e.at);
    let in_window = |e: &HistoryEntry| e.at >= since;
    let verified = entries.iter().filter(|e| is_prod(e, Outcome::Verified) && in_window(e)).count();
    let mut samples = Samples { verified, ..Samples::default() };

    let mut seen: HashSet<(Environment, &ImageDigest)> = HashSet::new();
    for entry in entries.iter().filter(|e| e.event == Outcome::Verified) {
        let Some(digest) = entry.digest.as_ref() else { continue };
        let first = seen.insert((entry.environment, digest));
        if let (true, true, Some(pushed)) = (first, in_window(entry), first_pushed.get(digest)) {
            let lead_time = (entry.at - *pushed).num_seconds().max(0);
            samples.lead_times_to.entry(entry.environment).or_default().push(lead_time);
            if entry.environment == production {
                samples.production_lead_times.push(lead_time);
            }
        }
    }

    let failed_rollouts: HashSet<String> =
        entries.iter().enumerate().filter(|(_, e)| is_prod_failure(e)).map(|(i, e)| rollout_key(e, i)).collect();
    let mut promoted = HashSet::new();
    for (index, entry) in entries.iter().enumerate() {
        if is_prod(entry, Outcome::Promoted) && in_window(entry) && promoted.insert(rollout_key(entry, index)) {
            samples.promotions += 1;
            if failed_rollouts.contains(&rollout_key(entry, index)) {
                samples.failed += 1;
            }
        }
    }

    let mut counted = HashSet::new();
    for (index, entry) in entries.iter().enumerate() {
        if !is_prod_failure(entry) || !in_window(entry) || !counted.insert(rollout_key(entry, index)) {
            continue;
        }
        samples.failures += 1;
        let restored = entries[index..]
            .iter()
            .find(|e| (is_prod(e, Outcome::Verified) || is_prod(e, Outcome::Restored)) && e.at > entry.at);
        if let Some(restored) = restored {
            samples.restore_times.push((restored.at - entry.at).num_seconds());
        }
    }
    samples
}

/// The median and 90th percentile of some durations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub median_seconds: Option<i64>,
    pub p90_seconds: Option<i64>,
}

impl Spread {
    pub fn of(values: &[i64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let median = match n {
            0 => None,
            n if n % 2 == 1 => Some(sorted[n / 2]),
            n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
        };
        Spread { count: n, median_seconds: median, p90_seconds: percentile(&sorted, 90) }
    }
}

/// The `p`th percentile of sorted values, nearest rank.
pub fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn rounded(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frequency {
    pub prod_verifications: usize,
    pub per_day: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureRate {
    pub promotions: usize,
    pub failed: usize,
    /// `failed / promotions` (0 to 1); `null` without promotions.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restore {
    pub failures: usize,
    /// Failures not followed by a prod verification yet.
    pub open: usize,
    #[serde(flatten)]
    pub spread: Spread,
}

/// The four DORA metrics over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dora {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub days: u32,
    pub deployment_frequency: Frequency,
    pub lead_time: Spread,
    pub change_failure_rate: FailureRate,
    pub time_to_restore: Restore,
    /// Lead time to each environment a change was verified in, by name.
    pub lead_time_to: BTreeMap<Environment, Spread>,
}

impl Dora {
    pub fn of(samples: &Samples, since: DateTime<Utc>, until: DateTime<Utc>, days: u32) -> Self {
        let restore = Spread::of(&samples.restore_times);
        Dora {
            since,
            until,
            days,
            deployment_frequency: Frequency {
                prod_verifications: samples.verified,
                per_day: rounded(samples.verified as f64 / f64::from(days.max(1))),
            },
            lead_time: Spread::of(samples.lead_times()),
            change_failure_rate: FailureRate {
                promotions: samples.promotions,
                failed: samples.failed,
                rate: (samples.promotions > 0).then(|| rounded(samples.failed as f64 / samples.promotions as f64)),
            },
            time_to_restore: Restore {
                failures: samples.failures,
                open: samples.failures.saturating_sub(restore.count),
                spread: restore,
            },
            lead_time_to: samples.lead_times_to.iter().map(|(env, times)| (*env, Spread::of(times))).collect(),
        }
    }
}

/// The window of the last `days` days up to `until`.
pub fn window(days: u32, until: DateTime<Utc>) -> DateTime<Utc> {
    until - chrono::Duration::days(i64::from(days))
}

/// One app's figures from the state table: its history and its images' first pushes.
pub async fn app_samples(
    ledger: &Ledger,
    app: &AppName,
    production: Environment,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Samples, LedgerError> {
    let history = super::history::all(ledger, app).await?;
    let images = ledger.images(app).await?;
    let first_pushed: HashMap<ImageDigest, DateTime<Utc>> =
        images.into_iter().filter_map(|image| Some((image.digest, image.first_pushed_at?))).collect();
    Ok(samples(&history, &first_pushed, production, since, until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ImageTag;
    const PROD: Environment = Environment::PROD;
    const STAGE: Environment = Environment::STAGE;
    use Outcome::{Failed, Promoted, Restored, RolledBack, Verified};

    const HOUR: i64 = 3600;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn digest(n: u8) -> ImageDigest {
        ImageDigest::parse(format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    fn entry(seconds: i64, env: Environment, event: Outcome, n: u8, rollout: &str) -> HistoryEntry {
        let mut entry = HistoryEntry::new(&AppName::parse("shop").unwrap(), env, event, at(seconds));
        entry.tag = Some(ImageTag::parse(format!("v{n}")).unwrap());
        entry.digest = Some(digest(n));
        entry.rollout_id = Some(rollout.to_owned());
        entry
    }

    #[test]
    fn the_figures_are_those_of_the_apps_production_whatever_its_name() {
        let live = Environment::parse("live").unwrap();
        let (history, pushed) = story();
        // The same story, its prod called `live` (a dev → stage → live pipeline).
        let renamed: Vec<HistoryEntry> = history
            .iter()
            .cloned()
            .map(|entry| HistoryEntry {
                environment: if entry.environment == PROD { live } else { entry.environment },
                ..entry
            })
            .collect();
        let as_prod = samples(&history, &pushed, PROD, at(0), at(10 * 24 * HOUR));
        let as_live = samples(&renamed, &pushed, live, at(0), at(10 * 24 * HOUR));
        assert_eq!(
            (as_live.verified, as_live.promotions, as_live.failed, as_live.failures, as_live.lead_times()),
            (as_prod.verified, as_prod.promotions, as_prod.failed, as_prod.failures, as_prod.lead_times())
        );
        assert_eq!(as_live.restore_times, as_prod.restore_times);
        assert_eq!(samples(&renamed, &pushed, PROD, at(0), at(10 * 24 * HOUR)).verified, 0, "no env named prod");
    }

    /// Ten days: v1..v5 pushed, four promotions, one rolled back (v3) and fixed by v4, a rollback
    /// promotion of v2 after v4, and v5 failing at the end without a verification since.
    fn story() -> (Vec<HistoryEntry>, HashMap<ImageDigest, DateTime<Utc>>) {
        let day = 24 * HOUR;
        let history = vec![
            entry(0, STAGE, Verified, 1, "s1"),
            entry(HOUR, PROD, Promoted, 1, "p1"),
            entry(HOUR + 60, PROD, Verified, 1, "p1"), // lead time 1h01m (pushed at 0)
            entry(day, STAGE, Verified, 2, "s2"),
            entry(day + 2 * HOUR, PROD, Promoted, 2, "p2"),
            entry(day + 2 * HOUR + 120, PROD, Verified, 2, "p2"), // 2h02m (pushed at day)
            entry(3 * day, PROD, Promoted, 3, "p3"),
            entry(3 * day + 300, PROD, RolledBack, 3, "p3"),
            entry(3 * day + 600, PROD, Restored, 3, "p3"), // its rollback restores service after 5 min
            entry(3 * day + 700, PROD, Failed, 3, "p3"),   // the same rollout: one failure
            entry(3 * day + 4 * HOUR + 300, PROD, Promoted, 4, "p4"),
            entry(3 * day + 4 * HOUR + 400, PROD, Verified, 4, "p4"),
            entry(5 * day, PROD, Promoted, 2, "p5"),
            entry(5 * day + 100, PROD, Verified, 2, "p5"), // v2 again: a deployment, not a change
            entry(9 * day, PROD, Promoted, 5, "p6"),
            entry(9 * day + 50, PROD, RolledBack, 5, "p6"), // open: nothing verified since
        ];
        let pushed = HashMap::from([
            (digest(1), at(0)),
            (digest(2), at(day)),
            (digest(3), at(3 * day - HOUR)),
            (digest(4), at(3 * day + HOUR)),
            (digest(5), at(9 * day - HOUR)),
        ]);
        (history, pushed)
    }

    #[test]
    fn dora_figures_of_a_known_history() {
        let (history, pushed) = story();
        let since = at(0);
        let until = at(10 * 24 * HOUR);
        let samples = samples(&history, &pushed, PROD, since, until);
        assert_eq!(samples.verified, 4);
        assert_eq!(samples.lead_times(), [HOUR + 60, 2 * HOUR + 120, 3 * HOUR + 400]);
        assert_eq!((samples.promotions, samples.failed), (6, 2));
        assert_eq!(samples.failures, 2);
        assert_eq!(samples.restore_times, vec![300]);

        let dora = Dora::of(&samples, since, until, 10);
        assert_eq!(dora.deployment_frequency, Frequency { prod_verifications: 4, per_day: 0.4 });
        assert_eq!(
            dora.lead_time,
            Spread { count: 3, median_seconds: Some(2 * HOUR + 120), p90_seconds: Some(3 * HOUR + 400) }
        );
        assert_eq!(dora.change_failure_rate, FailureRate { promotions: 6, failed: 2, rate: Some(0.333) });
        assert_eq!(dora.time_to_restore.failures, 2);
        assert_eq!(dora.time_to_restore.open, 1);
        assert_eq!(dora.time_to_restore.spread.median_seconds, Some(300));
        // To each environment: stage saw v1 at once and v2 a day later, each just pushed.
        assert_eq!(samples.lead_times_to[&STAGE], vec![0, 0]);
        let json = serde_json::to_value(&dora).unwrap();
        assert_eq!(json["lead_time_to"]["prod"], json["lead_time"]);
        assert_eq!(json["lead_time_to"]["stage"]["count"], 2);
        assert_eq!(json["time_to_restore"]["p90_seconds"], 300);
        assert_eq!(json["change_failure_rate"]["rate"], 0.333);
    }

    #[test]
    fn a_window_counts_only_what_happened_in_it_but_remembers_what_came_before() {
        let (history, pushed) = story();
        let day = 24 * HOUR;
        // Days 4 to 10: v2's second verification is not a new change; v5 failed, still open.
        let samples = samples(&history, &pushed, PROD, at(4 * day), at(10 * day));
        assert_eq!(samples.verified, 1);
        assert!(samples.lead_times().is_empty());
        assert_eq!((samples.promotions, samples.failed), (2, 1));
        assert_eq!((samples.failures, samples.restore_times.len()), (1, 0));
        // Up to day 3 + 400 s: p3 failed, not yet restored (its rollback completing after `until`
        // is unseen).
        let samples = super::samples(&history, &pushed, PROD, at(0), at(3 * day + 400));
        assert_eq!((samples.promotions, samples.failed, samples.failures), (3, 1, 1));
        assert!(samples.restore_times.is_empty());
        let dora = Dora::of(&samples, at(0), at(3 * day + 400), 4);
        assert_eq!(dora.time_to_restore.open, 1);
    }

    #[test]
    fn nothing_happened() {
        let dora = Dora::of(&Samples::default(), at(0), at(HOUR), 30);
        assert_eq!(dora.deployment_frequency.per_day, 0.0);
        assert_eq!(dora.lead_time, Spread { count: 0, median_seconds: None, p90_seconds: None });
        assert_eq!(dora.change_failure_rate.rate, None);
        assert_eq!(dora.time_to_restore.open, 0);
    }

    #[test]
    fn medians_and_nearest_rank_percentiles() {
        assert_eq!(Spread::of(&[5]).median_seconds, Some(5));
        assert_eq!(Spread::of(&[40, 10, 20, 30]).median_seconds, Some(25));
        let hundred: Vec<i64> = (1..=100).rev().collect();
        let spread = Spread::of(&hundred);
        assert_eq!((spread.median_seconds, spread.p90_seconds), (Some(50), Some(90)));
        assert_eq!(percentile(&[1, 2, 3], 90), Some(3));
        assert_eq!(percentile(&[7], 90), Some(7));
    }

    #[test]
    fn apps_add_up() {
        let (history, pushed) = story();
        let one = samples(&history, &pushed, PROD, at(0), at(10 * 24 * HOUR));
        let mut both = one.clone();
        both.merge(one.clone());
        assert_eq!(both.verified, 8);
        assert_eq!(both.lead_times().len(), 6);
        let dora = Dora::of(&both, at(0), at(10 * 24 * HOUR), 10);
        assert_eq!(dora.change_failure_rate.rate, Some(0.333));
    }
}
