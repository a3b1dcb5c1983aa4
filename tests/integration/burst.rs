//! A burst of ECR pushes through the real `stage-deploy` binary under ECS's real
//! `RegisterTaskDefinition` rate limit.
//!
//! 25 apps, each with its own repository and stage service, get 8 pushes each (tags `v1.0.0` ..
//! `v1.0.7`, pushed in that order with increasing event times): 200 events. The delivery order is
//! shuffled; 10 % of the events are delivered twice (the copy somewhere after the original) and
//! 10 % late (after every other event, so after the newest push of their service). They go into
//! one queue that 4 function processes serve, as Lambda serves an asynchronous event source with
//! reserved concurrency 4; a failed invocation is retried twice after a pause (Lambda's ~1 and
//! ~2 minutes, scaled down 60×), then counted as lost (Lambda would send it to the on-failure
//! destination; EventBridge's own retry policy only covers a failed `Invoke`, which Lambda's
//! internal queue never returns for asynchronous invocations, so it plays no part here).
//!
//! `RegisterTaskDefinition` is limited as ECS limits it: 1 call/s sustained, a burst of 20; calls
//! over it get ECS's throttling error.
//!
//! Asserted: every service ends on its newest push (the digest of its 8th push); no event is lost
//! (every push's tag is on its image item); no service ever ran an older image after a newer one
//! (ECS keeps every deployment of a service here, since nothing settles them: the sequence of
//! revisions each service ran is complete, and its event times only grow); at most one revision
//! per rollout (every successful `RegisterTaskDefinition` became exactly one deployment).
//!
//! Printed: the time taken, the registrations, the pushes coalesced, and the **floor**.
//! With perfect coalescing each service needs one registration (its newest push), so
//! `R = 25` registrations are unavoidable. The token bucket serves the first `B = 20` at once and
//! one per second after that, so the last of them cannot happen before `(R − B) / rate = 5 s`;
//! the rollout it belongs to then takes one rollout's latency `L` (measured on this machine before
//! the burst: a warm instance, no throttling). Besides, the 4 instances have to get through every
//! delivery: `R` rollouts of `L` and the other `N − R` deliveries of `r` each (`r`: a push only
//! recorded, measured the same way), 4 at a time. So
//!
//! ```text
//! floor = max( max(0, R − B) / rate + L ,  (R·L + (N − R)·r) / 4 )
//! ```
//!
//! This **oracle floor** knows the future: in a shuffled burst a service's newest push reaches an
//! instance anywhere in the sequence, and an older push handled before it has nothing to be
//! coalesced with. The **causal floor** is the one coalescing allows: per service, every push newer
//! than all of its pushes that reached an instance before it must be registered (Lambda's queue is
//! invisible to a function), `R'` of them, so `max(0, R' − B) / rate + L`. Both are printed with
//! the burst's ratio to each; the goal is 1.5× the causal floor. Times are reported, not asserted
//! (they measure the shared machine as much as Conveyor); `CONVEYOR_BURST_STRICT=1` (`make soak`)
//! makes the goal an assertion.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use conveyor_testkit::queue::{AsyncQueue, RetryPolicy};
use conveyor_testkit::rng::Rng;
use conveyor_testkit::world::{digest, AppFixture};
use conveyor_testkit::{Function, Invocation, World};
use serde_json::{json, Value};

const SERVICES: usize = 25;
const TAGS: usize = 8;
const INSTANCES: usize = 4;
const RATE: f64 = 1.0;
const BURST: u32 = 20;
const SEED: u64 = 0x00c0_ffee;

/// One push: app `app`'s `k`-th tag.
#[derive(Debug, Clone)]
struct Push {
    app: usize,
    k: usize,
    tag: String,
    digest: String,
    time: DateTime<Utc>,
}

fn app_name(app: usize) -> String {
    format!("svc-{app:02}")
}

/// An hour ago, to the second (EventBridge times have one-second resolution).
fn an_hour_ago() -> DateTime<Utc> {
    let now = Utc::now() - chrono::Duration::hours(1);
    DateTime::from_timestamp(now.timestamp(), 0).unwrap()
}

/// The delivery order: shuffled; `late` pushes (never a service's newest) after all others;
/// `twice` pushes delivered once more, somewhere after their first delivery.
fn deliveries(rng: &mut Rng, pushes: &[Push]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut candidates: Vec<usize> = (0..pushes.len()).filter(|&i| pushes[i].k < TAGS - 1).collect();
    rng.shuffle(&mut candidates);
    let mut late: Vec<usize> = candidates[..pushes.len() / 10].to_vec();
    let mut order: Vec<usize> = (0..pushes.len()).filter(|i| !late.contains(i)).collect();
    rng.shuffle(&mut order);
    rng.shuffle(&mut late);
    order.extend(&late);
    let mut all: Vec<usize> = (0..pushes.len()).collect();
    rng.shuffle(&mut all);
    let twice: Vec<usize> = all[..pushes.len() / 10].to_vec();
    for &push in &twice {
        let first = order.iter().position(|&p| p == push).unwrap();
        let at = first + 1 + rng.below(order.len() - first);
        order.insert(at, push);
    }
    late.sort_unstable();
    (order, late, twice)
}

/// The digest a task-definition revision runs (Conveyor's tag), `None` for the seeded one.
async fn digest_of(world: &World, arn: &str) -> Option<String> {
    let (_, tags) = world.task_definition(arn).await;
    tags.iter().find(|t| t.key() == Some("conveyor:image-digest")).and_then(|t| t.value()).map(str::to_owned)
}

/// Median of some durations.
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// How long one invocation of `function` with `event` takes (and its answer).
async fn timed(function: &Function, event: Value) -> (Duration, Value) {
    let started = Instant::now();
    let answer = function.invoke(event).await.response();
    (started.elapsed(), answer)
}

/// Measures on a warm instance, without throttling: one rollout (`L`) and one push only recorded
/// (`r`), medians of three each.
async fn calibrate(world: &World, function: &Function) -> (Duration, Duration) {
    world.seed_app("calib", "calib", false, json!({})).await;
    let base = an_hour_ago();
    let mut rollouts = Vec::new();
    for n in 0..3u32 {
        let time = base + chrono::Duration::seconds(i64::from(10 + n));
        let event = world.push_event("calib", &format!("v0.0.{n}"), &digest(9000 + n), time);
        let (took, answer) = timed(function, event).await;
        assert_eq!(answer["apps"][0]["status"], "deploying", "{answer}");
        rollouts.push(took);
    }
    let mut recorded = Vec::new();
    for n in 0..3u32 {
        let time = base + chrono::Duration::seconds(i64::from(n));
        let event = world.push_event("calib", &format!("v0.1.{n}"), &digest(9100 + n), time);
        let (took, answer) = timed(function, event).await;
        assert_eq!(answer["apps"][0]["status"], "skipped", "{answer}");
        recorded.push(took);
    }
    (median(rollouts), median(recorded))
}

#[tokio::test]
async fn a_burst_of_200_shuffled_pushes_ends_on_the_newest_images_within_the_rate_limit() {
    let world = World::new().await;
    let mut apps: Vec<AppFixture> = Vec::new();
    for app in 0..SERVICES {
        apps.push(world.seed_app(&app_name(app), &app_name(app), false, json!({})).await);
    }
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(Function::spawn("stage-deploy", &world.function_env()).await);
    }
    let (rollout_latency, record_latency) = calibrate(&world, &instances[0]).await;
    // Warm every instance (config loaded) as a busy function's instances are.
    for function in &instances {
        let unknown = world.push_event("no-such-repository", "v0", &digest(1), Utc::now());
        function.invoke(unknown).await.response();
    }

    let base = an_hour_ago() + chrono::Duration::seconds(100);
    let pushes: Vec<Push> = (0..SERVICES)
        .flat_map(|app| (0..TAGS).map(move |k| (app, k)))
        .map(|(app, k)| Push {
            app,
            k,
            tag: format!("v1.0.{k}"),
            digest: digest((app * 100 + k + 1) as u32),
            time: base + chrono::Duration::seconds((k * 60 + app) as i64),
        })
        .collect();
    let mut rng = Rng::new(SEED);
    let (order, late, twice) = deliveries(&mut rng, &pushes);
    let events: Vec<Value> = order
        .iter()
        .map(|&p| world.push_event(&app_name(pushes[p].app), &pushes[p].tag, &pushes[p].digest, pushes[p].time))
        .collect();

    world.aws.rate_limit("RegisterTaskDefinition", &world.id, RATE, BURST).await;
    let mark = world.aws.call_log(&world.id).await.last().map_or(0, |c| c.seq);
    let queue = AsyncQueue::new(&instances, RetryPolicy::lambda_scaled(60));
    let run = queue.run(&events).await;
    world.aws.clear_rate_limits(&world.id).await;
    let calls: Vec<_> = world.aws.call_log(&world.id).await.into_iter().filter(|c| c.seq > mark).collect();

    // ---- What each delivery did -------------------------------------------------------------
    let answers = run.answers();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    // (app, k) of every push whose delivery started a rollout, with when it started.
    let mut registered_for: Vec<(usize, usize, Duration)> = Vec::new();
    for (delivery, answer) in answers.iter().enumerate() {
        let Some(attempt) = answer else { continue };
        let Invocation::Response(report) = &attempt.outcome else { continue };
        let app = &report["apps"][0];
        let detail = app["detail"].as_str().unwrap_or_default();
        let kind = match app["status"].as_str().unwrap_or_default() {
            "deploying" => {
                let push = &pushes[order[delivery]];
                registered_for.push((push.app, push.k, attempt.started));
                "rolled out"
            }
            _ if detail.contains("coalesced") => "coalesced (a newer push was queued)",
            _ if detail.contains("older than the newest") => "recorded late (older than the newest seen)",
            _ if detail.contains("repeated delivery") => "repeated delivery (nothing to do)",
            _ if detail.contains("already") => "already running or rolling out that digest",
            _ => "other",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let registrations = calls.iter().filter(|c| c.operation == "RegisterTaskDefinition" && c.fault.is_none()).count();
    let throttled = calls.iter().filter(|c| c.operation == "RegisterTaskDefinition" && c.fault.is_some()).count();

    let unavoidable = SERVICES;
    let n = events.len();
    let rate_floor = (unavoidable as f64 - f64::from(BURST)).max(0.0) / RATE + rollout_latency.as_secs_f64();
    let work_floor = (unavoidable as f64 * rollout_latency.as_secs_f64()
        + (n - unavoidable) as f64 * record_latency.as_secs_f64())
        / INSTANCES as f64;
    let floor = rate_floor.max(work_floor);
    let ratio = run.elapsed.as_secs_f64() / floor;
    // Registrations a newer push of the same service made pointless: it was already in the queue
    // (all of them are, in a burst) — and whether it had already reached an instance that found the
    // lease busy (the only case the `waiting` hint can see).
    let pointless = registered_for.iter().filter(|(_, k, _)| *k < TAGS - 1).count();
    let mut newest_in_flight = 0;
    for (app, k, started) in &registered_for {
        let newer_started_before = run.attempts.iter().any(|a| {
            let push = &pushes[order[a.delivery]];
            push.app == *app && push.k > *k && a.started <= *started
        });
        if *k < TAGS - 1 && newer_started_before {
            newest_in_flight += 1;
        }
    }
    // The fewest registrations any coalescing can reach that only knows the pushes already
    // delivered to an instance (Lambda's queue is invisible to a function): per service, the pushes
    // newer than every push of that service that reached an instance before them.
    let mut reached: Vec<(Duration, usize, usize)> =
        run.attempts.iter().map(|a| (a.started, pushes[order[a.delivery]].app, pushes[order[a.delivery]].k)).collect();
    reached.sort();
    let mut newest_reached: HashMap<usize, usize> = HashMap::new();
    let mut records = 0;
    for (_, app, k) in reached {
        if newest_reached.get(&app).is_none_or(|newest| k > *newest) {
            records += 1;
            newest_reached.insert(app, k);
        }
    }
    let records_floor = (records as f64 - f64::from(BURST)).max(0.0) / RATE + rollout_latency.as_secs_f64();
    println!("burst: {n} deliveries ({} pushes, {} twice, {} late) of {SERVICES} services through {INSTANCES} stage-deploy instances, RegisterTaskDefinition limited to {RATE}/s burst {BURST}", pushes.len(), twice.len(), late.len());
    println!("burst: took {:.1} s; oracle floor {floor:.1} s (rate {rate_floor:.1} s = ({unavoidable} - {BURST}) / {RATE} + L {:.2} s; work {work_floor:.1} s = ({unavoidable} x L + {} x r {:.2} s) / {INSTANCES}); ratio {ratio:.2} to this oracle floor",
        run.elapsed.as_secs_f64(), rollout_latency.as_secs_f64(), n - unavoidable, record_latency.as_secs_f64());
    println!("burst: {registrations} registrations ({unavoidable} unavoidable), {throttled} throttled calls, {} failed invocations retried, {} lost", run.failed_attempts(), run.lost.len());
    for (kind, count) in &kinds {
        println!("burst:   {count:4} {kind}");
    }
    let causal_ratio = run.elapsed.as_secs_f64() / records_floor;
    println!("burst: causal floor {records_floor:.1} s: without looking beyond the pushes that reached an instance, at least {records} registrations (pushes newer than all of their service's pushes that reached an instance before them); ratio {causal_ratio:.2} (goal <= 1.5); the oracle floor is {:.2}x below it", records_floor / floor);
    println!("burst: {pointless} registrations were for a push whose service had a newer push already queued; for {newest_in_flight} of them a newer push had already reached an instance");
    let rollouts_per_service: Vec<usize> =
        (0..SERVICES).map(|app| registered_for.iter().filter(|(a, _, _)| *a == app).count()).collect();
    println!("burst: rollouts per service: {rollouts_per_service:?}");

    // ---- No event lost ----------------------------------------------------------------------
    assert!(
        run.lost.is_empty(),
        "events lost after Lambda's retries: {:?}",
        run.lost.iter().map(|&d| &pushes[order[d]]).collect::<Vec<_>>()
    );
    for push in &pushes {
        let image = world.image_record(&app_name(push.app), &push.digest).await;
        let tags: Vec<&str> = image
            .as_ref()
            .and_then(|i| i["tags"].as_array())
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(tags.contains(&push.tag.as_str()), "{push:?}: tag not recorded on its image: {image:?}");
    }

    // ---- Every service on its newest image; never back to an older one; one revision per rollout
    let time_of: HashMap<&str, DateTime<Utc>> = pushes.iter().map(|p| (p.digest.as_str(), p.time)).collect();
    let mut rollouts = 0;
    for (app, fixture) in apps.iter().enumerate() {
        let newest = &pushes[app * TAGS + TAGS - 1];
        let image = world.running_image(&fixture.stage).await;
        assert!(image.ends_with(&newest.digest), "{}: runs {image}, not its newest push {}", fixture.app, newest.tag);
        let service = world.service(&fixture.stage.cluster, &fixture.stage.service).await;
        let mut ran = Vec::new();
        for deployment in service.deployments().iter().rev() {
            let arn = deployment.task_definition().unwrap();
            ran.push((arn.to_owned(), digest_of(&world, arn).await));
        }
        assert_eq!(
            ran[0].0, fixture.stage.initial_task_definition,
            "{}: the oldest deployment is the seeded one",
            fixture.app
        );
        let times: Vec<DateTime<Utc>> = ran[1..].iter().map(|(_, d)| time_of[d.as_deref().unwrap()]).collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "{}: ran an older image after a newer one: {ran:?}",
            fixture.app
        );
        let revisions = world.revisions(&fixture.stage.family).await;
        let distinct: std::collections::BTreeSet<&String> = ran.iter().map(|(arn, _)| arn).collect();
        assert_eq!(distinct.len(), ran.len(), "{}: a revision deployed twice: {ran:?}", fixture.app);
        assert_eq!(revisions.len(), ran.len(), "{}: revisions {revisions:?} vs deployments {ran:?}", fixture.app);
        rollouts += ran.len() - 1;
    }
    assert_eq!(registrations, rollouts, "every registration became exactly one rollout");
    if std::env::var("CONVEYOR_BURST_STRICT").is_ok_and(|v| v == "1") {
        assert!(
            causal_ratio <= 1.5,
            "burst took {:.1} s, {causal_ratio:.2}x its causal floor of {records_floor:.1} s",
            run.elapsed.as_secs_f64()
        );
    }
}
