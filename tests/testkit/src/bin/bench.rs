//! `make bench`: how fast the release binaries start and answer, and how much memory they use,
//! against the local AWS. Numbers, not assertions: timing belongs in benchmarks, never in tests.
//!
//! Measures, per function: the init phase (process start to first Runtime API poll: SDK config,
//! clients, HTTP pools), the first invocation (cold caches), warm invocations, and peak RSS.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use conveyor_testkit::world::digest;
use conveyor_testkit::{Function, World};
use serde_json::{json, Value};

const COLD_STARTS: usize = 20;
const WARM_PUSHES: u32 = 30;

fn release_binary(name: &str) -> PathBuf {
    let path = conveyor_testkit::repo_root().join("target/release").join(name);
    assert!(path.exists(), "{} is missing: `make bench` builds it", path.display());
    path
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let world = World::new().await;
    world.seed_app("shop-api", "shop-api", true, json!({})).await;
    let env = world.function_env();
    println!("release binaries, x86_64, against moto on loopback; {COLD_STARTS} cold starts each\n");
    println!("| function | binary | init p50 | init p90 | first invocation p50 | peak RSS |");
    println!("|---|---|---|---|---|---|");

    let skip_events: [(&str, Value); 3] = [
        (
            "stage-deploy",
            json!({ "source": "aws.ecr", "detail-type": "ECR Image Action", "detail": { "action-type": "DELETE" } }),
        ),
        ("deploy-monitor", world.schedule_event()),
        ("promote", json!({ "app": "shop-api" })),
    ];
    for (name, event) in skip_events {
        let path = release_binary(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (mut inits, mut firsts, mut rss) = (Vec::new(), Vec::new(), 0);
        for _ in 0..COLD_STARTS {
            let function = Function::spawn_binary(name, &path, &env).await;
            inits.push(function.init_duration().await);
            let started = Instant::now();
            function.invoke(event.clone()).await;
            firsts.push(started.elapsed());
            rss = rss.max(function.peak_rss_kib().unwrap_or(0));
        }
        println!(
            "| {name} | {:.1} MiB | {} | {} | {} | {:.1} MiB |",
            size as f64 / 1048576.0,
            ms(percentile(&mut inits, 0.5)),
            ms(percentile(&mut inits, 0.9)),
            ms(percentile(&mut firsts, 0.5)),
            rss as f64 / 1024.0
        );
    }

    // Warm: full rollouts of new pushes through one stage-deploy process (9 AWS calls each).
    let function = Function::spawn_binary("stage-deploy", &release_binary("stage-deploy"), &env).await;
    let start = Utc::now() - chrono::Duration::hours(1);
    let mut warm = Vec::new();
    for n in 0..WARM_PUSHES {
        let event = world.push_event(
            "shop-api",
            &format!("v1.0.{n}"),
            &digest(1000 + n),
            start + chrono::Duration::seconds(i64::from(n)),
        );
        let started = Instant::now();
        let answer = function.invoke(event).await.response();
        warm.push(started.elapsed());
        assert_eq!(answer["apps"][0]["status"], "deploying", "{answer}");
    }
    println!(
        "\nwarm stage-deploy rollout (9 AWS calls to moto, which dominates): p50 {}, p90 {}, peak RSS {:.1} MiB",
        ms(percentile(&mut warm, 0.5)),
        ms(percentile(&mut warm, 0.9)),
        function.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
}
