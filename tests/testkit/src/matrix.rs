//! Helpers for fault matrices: a flow's AWS calls as call sites a fault can target (operation and
//! occurrence), the fault kinds a matrix runs, what a world's state table still holds (leases,
//! undelivered notifications), SNS notifications tallied by transition and by notification id,
//! ACTIVE task-definition revisions, and cells run with bounded concurrency.
//!
//! ```ignore
//! let mark = world.call_mark().await;
//! function.invoke(event.clone()).await;
//! let sites = CallSite::all(&world.calls_since(mark).await);
//! // On a fresh world: the same flow with call `k` failing, retries included, until cleared.
//! world.aws.fault(&sites[k].fault(&world.id, FaultMode::Throttle)).await;
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::local_aws::{CallRecord, Fault, FaultMode};
use crate::world::World;

/// One AWS call of a flow, named so that a fault finds it again in a rerun of the flow: the
/// `occurrence`-th (0-based) call of `operation` among the flow's calls carrying the world's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallSite {
    /// Position among all the flow's calls (0-based).
    pub index: usize,
    pub operation: String,
    pub occurrence: u32,
}

impl CallSite {
    /// The calls of a flow, in order, as call sites.
    pub fn all(calls: &[CallRecord]) -> Vec<CallSite> {
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                let occurrence = seen.entry(call.operation.as_str()).or_default();
                let site = CallSite { index, operation: call.operation.clone(), occurrence: *occurrence };
                *occurrence += 1;
                site
            })
            .collect()
    }

    /// A fault that fires on this call, on every retry of it and on every later call of its
    /// operation (`matching`: the world's id), until cleared: a fault that outlasts the SDK's
    /// retries.
    pub fn fault(&self, matching: &str, mode: FaultMode) -> Fault {
        Fault::on(self.operation.clone()).matching(matching).mode(mode).after(self.occurrence).persistent()
    }

    /// A fault that fires on this call only (a [`FaultMode::Kill`] needs no more).
    pub fn once(&self, matching: &str, mode: FaultMode) -> Fault {
        Fault::on(self.operation.clone()).matching(matching).mode(mode).after(self.occurrence).count(1)
    }

    /// `UpdateItem#1`: the second `UpdateItem` of the flow.
    pub fn label(&self) -> String {
        format!("{}#{}", self.operation, self.occurrence)
    }
}

/// How a matrix cell fails its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    Throttle,
    Http500,
    Http503,
    Reset,
    ApplyThenFail,
    /// The call is served late (while a second delivery of the same event runs).
    Latency,
    /// The function process is killed when the call arrives (the call is not applied).
    Crash,
}

impl FaultKind {
    /// The wire faults that fail a call (the SDK retries them, then gives up).
    pub const FAILING: [FaultKind; 5] =
        [FaultKind::Throttle, FaultKind::Http500, FaultKind::Http503, FaultKind::Reset, FaultKind::ApplyThenFail];

    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Throttle => "throttle",
            FaultKind::Http500 => "http500",
            FaultKind::Http503 => "http503",
            FaultKind::Reset => "reset",
            FaultKind::ApplyThenFail => "apply-then-fail",
            FaultKind::Latency => "latency",
            FaultKind::Crash => "crash",
        }
    }

    /// The wire fault: `latency` for [`FaultKind::Latency`], `pid` the process a
    /// [`FaultKind::Crash`] kills.
    pub fn mode(self, latency: Duration, pid: u32) -> FaultMode {
        match self {
            FaultKind::Throttle => FaultMode::Throttle,
            FaultKind::Http500 => FaultMode::Http500,
            FaultKind::Http503 => FaultMode::Http503,
            FaultKind::Reset => FaultMode::Reset,
            FaultKind::ApplyThenFail => FaultMode::ApplyThenFail,
            FaultKind::Latency => FaultMode::Latency(latency),
            FaultKind::Crash => FaultMode::Kill { pid },
        }
    }
}

/// A lease found on an item of the state table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSeen {
    /// `pk/sk` of the item.
    pub item: String,
    pub owner: String,
    pub expires_at: DateTime<Utc>,
}

impl LeaseSeen {
    /// Whether it still keeps others out.
    pub fn live(&self) -> bool {
        self.expires_at > Utc::now()
    }
}

/// A number attribute as serde_dynamo renders it into JSON.
fn number(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_f64().map(|f| f as i64)).or_else(|| value.as_str()?.parse().ok())
}

fn label(item: &Value) -> String {
    format!("{}/{}", item["pk"].as_str().unwrap_or("?"), item["sk"].as_str().unwrap_or("?"))
}

impl World {
    /// The sequence number of the latest AWS call carrying this world's id (0 before any): the
    /// calls of what runs next are those after it ([`World::calls_since`]).
    pub async fn call_mark(&self) -> u64 {
        self.aws.call_log(&self.id).await.last().map_or(0, |call| call.seq)
    }

    /// The AWS calls carrying this world's id made after `mark`, oldest first.
    pub async fn calls_since(&self, mark: u64) -> Vec<CallRecord> {
        self.aws.call_log(&self.id).await.into_iter().filter(|call| call.seq > mark).collect()
    }

    /// Every lease on an item of this world's state table, live or expired.
    pub async fn leases(&self) -> Vec<LeaseSeen> {
        self.items()
            .await
            .iter()
            .filter_map(|item| {
                let lease = item.get("lease")?;
                Some(LeaseSeen {
                    item: label(item),
                    owner: lease["owner"].as_str().unwrap_or("?").to_owned(),
                    expires_at: DateTime::from_timestamp_millis(number(&lease["expires_at"])?)?,
                })
            })
            .collect()
    }

    /// Waits until no lease of this world's state table keeps others out (at most `cap`);
    /// returns how long it waited.
    pub async fn wait_for_leases(&self, cap: Duration) -> Duration {
        let started = std::time::Instant::now();
        let last = self.leases().await.into_iter().filter(LeaseSeen::live).map(|l| l.expires_at).max();
        if let Some(until) = last {
            // The lease is expired once its holder's clock passed it; a little more for the check.
            let wait = (until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(250);
            tokio::time::sleep(wait.min(cap)).await;
        }
        started.elapsed()
    }

    /// The notification ids still waiting in an outbox, by item.
    pub async fn outboxes(&self) -> Vec<(String, Vec<String>)> {
        self.items()
            .await
            .iter()
            .filter_map(|item| {
                let outbox = item.get("outbox")?.as_object()?;
                (!outbox.is_empty()).then(|| (label(item), outbox.keys().cloned().collect()))
            })
            .collect()
    }

    /// The ACTIVE revisions of a task-definition family (each checked with
    /// `DescribeTaskDefinition`).
    pub async fn active_revisions(&self, family: &str) -> BTreeSet<String> {
        let mut active = BTreeSet::new();
        let mut token = None;
        loop {
            let page =
                self.ecs.list_task_definitions().family_prefix(family).set_next_token(token).send().await.unwrap();
            for arn in page.task_definition_arns() {
                let name = arn.rsplit_once('/').map_or(arn.as_str(), |(_, name)| name);
                if name.rsplit_once(':').map(|(f, _)| f) != Some(family) {
                    continue;
                }
                let (definition, _) = self.task_definition(arn).await;
                if definition.status() == Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active) {
                    active.insert(arn.clone());
                }
            }
            token = page.next_token;
            if token.is_none() {
                return active;
            }
        }
    }
}

/// A notification's transition: app, environment, outcome.
pub type Transition = (String, String, String);

/// SNS notifications by transition, with the notification id of each (the Chatbot message's
/// top-level `id`): two with the same id are one notification sent twice (re-sent), two with
/// different ids are two notifications (a duplicated transition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub by_transition: BTreeMap<Transition, Vec<String>>,
}

impl Tally {
    /// From [`World::notifications`].
    pub fn of(notifications: &[Value]) -> Tally {
        let mut tally = Tally::default();
        for note in notifications {
            let attribute = |name: &str| note["MessageAttributes"][name].as_str().unwrap_or("?").to_owned();
            let id = note["Message"]["id"].as_str().unwrap_or("?").to_owned();
            let key = (attribute("app"), attribute("environment"), attribute("outcome"));
            tally.by_transition.entry(key).or_default().push(id);
        }
        tally
    }

    /// How many were received for the transition.
    pub fn sent(&self, transition: &Transition) -> usize {
        self.by_transition.get(transition).map_or(0, Vec::len)
    }

    /// How many distinct notifications (ids) were received for the transition.
    pub fn distinct(&self, transition: &Transition) -> usize {
        self.by_transition.get(transition).map_or(0, |ids| ids.iter().collect::<BTreeSet<_>>().len())
    }
}

/// A job for [`bounded`].
pub type Job<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs `jobs`, at most `concurrency` at a time (a matrix's worlds share one local AWS and the
/// machine's cores); results in the order of the jobs, a job that panicked as `Err` with its
/// message.
pub async fn bounded<T: Send + 'static>(jobs: Vec<Job<T>>, concurrency: usize) -> Vec<Result<T, String>> {
    bounded_by(jobs, Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)))).await
}

/// [`bounded`] with the permits of `slots`, which several matrices (tests) may share.
pub async fn bounded_by<T: Send + 'static>(
    jobs: Vec<Job<T>>,
    slots: Arc<tokio::sync::Semaphore>,
) -> Vec<Result<T, String>> {
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let slots = slots.clone();
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await;
                job.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.map_err(|error| {
            match error.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()),
                Err(error) => error.to_string(),
            }
        }));
    }
    results
}
