//! Lambda's asynchronous invocation, as EventBridge uses it: events wait in the function's own
//! queue, a fixed number of instances (reserved concurrency) pull from it, and an invocation that
//! fails is retried twice after a pause, then dropped (sent to the on-failure destination).
//!
//! Each instance is a real function process ([`Function`]); every attempt is recorded with when it
//! ran, on which instance and how it ended, so a test can reconstruct what happened.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::function::Function;
use crate::runtime_api::Invocation;

/// How Lambda retries a failed asynchronous invocation.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The pause before each retry: Lambda waits about one minute, then two (`len()` retries).
    pub pauses: Vec<Duration>,
}

impl RetryPolicy {
    /// Lambda's policy (two retries, after ~1 min and ~2 min), time divided by `scale`.
    pub fn lambda_scaled(scale: u32) -> RetryPolicy {
        RetryPolicy { pauses: vec![Duration::from_secs(60) / scale, Duration::from_secs(120) / scale] }
    }
}

/// One attempt at one event.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The event's index in the deliveries given to [`AsyncQueue::run`].
    pub delivery: usize,
    /// 0 for the first attempt, then 1, 2 for Lambda's retries.
    pub attempt: usize,
    /// The instance (function process) that ran it.
    pub instance: usize,
    /// Since the run started.
    pub started: Duration,
    pub ended: Duration,
    pub outcome: Invocation,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Run {
    pub attempts: Vec<Attempt>,
    /// Deliveries whose every attempt failed (Lambda would drop them).
    pub lost: Vec<usize>,
    pub elapsed: Duration,
}

impl Run {
    /// The successful attempt of each delivery (`None` for the lost ones).
    pub fn answers(&self) -> Vec<Option<&Attempt>> {
        let count = self.attempts.iter().map(|a| a.delivery + 1).max().unwrap_or(0);
        let mut answers = vec![None; count];
        for attempt in &self.attempts {
            if matches!(attempt.outcome, Invocation::Response(_)) {
                answers[attempt.delivery] = Some(attempt);
            }
        }
        answers
    }

    /// How many attempts failed and were retried (or dropped).
    pub fn failed_attempts(&self) -> usize {
        self.attempts.iter().filter(|a| matches!(a.outcome, Invocation::Error { .. })).count()
    }
}

struct Queued {
    delivery: usize,
    attempt: usize,
    ready_at: Instant,
}

struct Shared {
    queue: VecDeque<Queued>,
    /// Queued plus in flight: the run ends when it reaches 0.
    outstanding: usize,
    attempts: Vec<Attempt>,
    lost: Vec<usize>,
}

/// A function's asynchronous event queue served by a fixed set of instances.
pub struct AsyncQueue<'a> {
    instances: &'a [Function],
    policy: RetryPolicy,
}

impl<'a> AsyncQueue<'a> {
    /// `instances.len()` is the reserved concurrency.
    pub fn new(instances: &'a [Function], policy: RetryPolicy) -> Self {
        AsyncQueue { instances, policy }
    }

    /// Delivers `events` in this order (each instance takes the next ready event as soon as it is
    /// free) and waits until every event succeeded or was dropped.
    pub async fn run(&self, events: &[Value]) -> Run {
        let start = Instant::now();
        let shared = Mutex::new(Shared {
            queue: (0..events.len()).map(|delivery| Queued { delivery, attempt: 0, ready_at: start }).collect(),
            outstanding: events.len(),
            attempts: Vec::new(),
            lost: Vec::new(),
        });
        let workers = self.instances.iter().enumerate().map(|(instance, function)| {
            let shared = &shared;
            async move {
                loop {
                    let next = {
                        let mut shared = shared.lock().unwrap();
                        if shared.outstanding == 0 {
                            return;
                        }
                        let now = Instant::now();
                        let ready = shared.queue.iter().position(|q| q.ready_at <= now);
                        ready.and_then(|i| shared.queue.remove(i))
                    };
                    let Some(job) = next else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let started = start.elapsed();
                    let outcome = function.invoke(events[job.delivery].clone()).await;
                    let ended = start.elapsed();
                    let failed = matches!(outcome, Invocation::Error { .. });
                    let mut shared = shared.lock().unwrap();
                    shared.attempts.push(Attempt {
                        delivery: job.delivery,
                        attempt: job.attempt,
                        instance,
                        started,
                        ended,
                        outcome,
                    });
                    match self.policy.pauses.get(job.attempt).filter(|_| failed) {
                        Some(pause) => shared.queue.push_back(Queued {
                            delivery: job.delivery,
                            attempt: job.attempt + 1,
                            ready_at: Instant::now() + *pause,
                        }),
                        None => {
                            if failed {
                                shared.lost.push(job.delivery);
                            }
                            shared.outstanding -= 1;
                        }
                    }
                }
            }
        });
        futures_join_all(workers).await;
        let shared = shared.into_inner().unwrap();
        Run { attempts: shared.attempts, lost: shared.lost, elapsed: start.elapsed() }
    }
}

/// Runs the futures concurrently on this task until all are done.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut done = vec![false; set.len()];
    std::future::poll_fn(|cx| {
        for (future, done) in set.iter_mut().zip(done.iter_mut()) {
            if !*done && future.as_mut().poll(cx).is_ready() {
                *done = true;
            }
        }
        if done.iter().all(|d| *d) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
