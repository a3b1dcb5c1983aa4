//! What each fuzz target does with one input, shared by the libFuzzer targets (`cargo fuzz`) and
//! the replay binaries (plain `cargo run`). Each feeds the bytes to a parser the way Conveyor
//! receives them — an invoke payload is JSON parsed by the Lambda runtime with serde_json (so
//! nesting past its recursion limit never reaches the parser), an app config is the text of an SSM
//! parameter — and checks what came out against the input: a panic or a failed check is a crash.

use std::io::Read;
use std::path::Path;

use conveyor::config::{AppConfig, ConfigSet, RawApp};
use conveyor::events::{self, MonitorEvent};
use conveyor::web::Endpoints;
use serde_json::Value;

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |node, key| node.get(key))?.as_str()
}

/// `stage-deploy`'s event parser.
pub fn push_event(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Value>(data) else { return };
    let detail = |name: &str| str_at(&event, &["detail", name]);
    let push_success = str_at(&event, &["source"]) == Some("aws.ecr")
        && str_at(&event, &["detail-type"]) == Some("ECR Image Action")
        && detail("action-type") == Some("PUSH")
        && detail("result") == Some("SUCCESS");
    match events::push(event.clone()) {
        Ok(Ok(push)) => {
            assert!(push_success, "a push from an event that is no PUSH/SUCCESS");
            assert_eq!(Some(push.tag.as_str()), detail("image-tag"));
            assert_eq!(Some(push.digest.as_str()), detail("image-digest"));
            assert_eq!(Some(push.repository.as_str()), detail("repository-name"));
            assert!(!push.repository.is_empty());
        }
        Ok(Err(skip)) => {
            let tagged = detail("image-tag").is_some_and(|t| !t.is_empty());
            assert!(!(push_success && tagged), "a tagged PUSH/SUCCESS skipped: {}", skip.0);
        }
        Err(invalid) => assert!(!invalid.0.is_empty()),
    }
}

/// `deploy-monitor`'s event parser.
pub fn monitor_event(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Value>(data) else { return };
    match events::monitor(event.clone()) {
        Ok(Ok(MonitorEvent::Sweep)) => {
            assert_eq!(str_at(&event, &["source"]), Some("aws.events"));
            assert_eq!(str_at(&event, &["detail-type"]), Some("Scheduled Event"));
        }
        Ok(Ok(MonitorEvent::Deployment(deployment))) => {
            assert_eq!(str_at(&event, &["source"]), Some("aws.ecs"));
            assert_eq!(str_at(&event, &["detail-type"]), Some("ECS Deployment State Change"));
            assert_eq!(Some(deployment.service_arn.as_str()), event["resources"][0].as_str());
            assert_eq!(Some(deployment.deployment_id.as_str()), str_at(&event, &["detail", "deploymentId"]));
            assert!(!deployment.deployment_id.is_empty());
            assert!(!deployment.service.is_empty() && !deployment.service.contains('/'));
            assert!(deployment.service_arn.ends_with(&format!("/{}", deployment.service)));
            let _ = deployment.place();
        }
        Ok(Err(skip)) => assert!(!skip.0.is_empty()),
        Err(invalid) => assert!(!invalid.0.is_empty()),
    }
}

/// The app-config validator, alone and as two apps with the same config (the one written later
/// must be refused: it claims the other's services).
pub fn app_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parameter = "/conveyor/apps/shop-api";
    match AppConfig::parse(parameter, "shop-api", text, Endpoints::Public) {
        Ok(app) => {
            assert!(!app.stage.same_service(&app.prod), "stage and prod are one service");
            assert!(!app.repository.is_empty() && !app.container.is_empty());
            assert!((1..=86_400).contains(&app.rollout_timeout.as_secs()));
        }
        Err(error) => {
            assert_eq!(error.parameter, parameter);
            assert!(error.to_string().contains(parameter));
        }
    }
    let at = |minute: i64| chrono::DateTime::from_timestamp(1_700_000_000 + minute * 60, 0);
    let set = ConfigSet::from_parameters(
        "/conveyor/apps/",
        [
            RawApp { parameter: "/conveyor/apps/first", value: text, version: 1, modified: at(0) },
            RawApp { parameter: "/conveyor/apps/second", value: text, version: 1, modified: at(1) },
        ],
        Endpoints::Public,
    );
    assert_eq!(set.apps.len() + set.invalid.len(), 2);
    assert!(set.apps.iter().all(|app| app.name.as_str() != "second"), "the later app claims the same services");
}

/// `promote`'s request parser.
pub fn promote_request(data: &[u8]) {
    let Ok(payload) = serde_json::from_slice::<Value>(data) else { return };
    if let Ok(request) = conveyor::promote::parse_request(payload) {
        for text in [&request.reason, &request.on_behalf_of].into_iter().flatten() {
            assert!(text.chars().count() <= 256 && !text.chars().any(char::is_control));
            assert!(!text.is_empty() && text.trim() == text);
        }
    }
}

/// The replay binaries' `main`: runs `target` on every file named (directories: every file in
/// them), or on standard input when none is; a crash aborts with the file's name.
pub fn replay(name: &str, target: fn(&[u8])) {
    let paths: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mut count = 0usize;
    if paths.is_empty() {
        let mut input = Vec::new();
        std::io::stdin().read_to_end(&mut input).expect("standard input");
        target(&input);
        count += 1;
    }
    for path in &paths {
        let path = Path::new(path);
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        for file in files {
            let input = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            eprintln!("{name}: {}", file.display());
            target(&input);
            count += 1;
        }
    }
    println!("{name}: {count} input(s), no crash");
}
