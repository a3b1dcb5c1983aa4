//! The playground (`make up`) as the README uses it: the playground binary started in its own
//! process group, as `make up` starts it, then the README's commands with the variables it wrote —
//! `conveyor status`, a push (the request `make push` sends), `conveyor wait` — and stopped as
//! `make down` stops it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cli::run;

/// The playground's process group, stopped (SIGTERM, as `make down`) when dropped.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", "--", &format!("-{}", self.0)]).status();
    }
}

#[tokio::test]
async fn make_ups_stack_answers_the_readmes_commands() {
    let root = conveyor_testkit::repo_root();
    let dir = root.join("target/playground-test");
    let _ = std::fs::remove_dir_all(&dir);
    let started = tokio::process::Command::new(root.join("target/debug/playground"))
        .env("CONVEYOR_PLAYGROUND_DIR", &dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("target/debug/playground (cargo build --workspace --bins)");
    let _group = Group(started.id().expect("its pid"));

    let file = dir.join("playground.env");
    let begun = Instant::now();
    while !file.exists() {
        assert!(begun.elapsed() < Duration::from_secs(120), "no {} after 120 s", file.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exports = std::fs::read_to_string(&file).unwrap();
    let env: Vec<(String, String)> = exports
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();

    let status = run(&env, &["status"]).await.ok();
    for app in ["shop-api", "billing", "web"] {
        assert!(status.stdout.contains(app), "{app}: {}", status.stdout);
    }
    let playground = &env.iter().find(|(name, _)| name == "CONVEYOR_PLAYGROUND").expect("its address").1;
    let pushed =
        reqwest::Client::new().post(format!("{playground}/push?app=shop-api&tag=v1.2.3")).send().await.unwrap();
    assert!(pushed.status().is_success(), "{pushed:?}");
    let waited = run(&env, &["wait", "shop-api", "v1.2.3", "--timeout", "60s"]).await.ok();
    assert!(waited.stdout.contains("v1.2.3"), "{}", waited.stdout);
}
