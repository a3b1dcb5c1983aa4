//! The local AWS: moto server started once per test process from the project's own venv.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::repo_root;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// A running moto server with Conveyor's ECS lifecycle extension and control API.
pub struct LocalAws {
    pub endpoint: String,
    http: reqwest::Client,
    _process: Child,
}

impl LocalAws {
    /// The moto server shared by every test of this process, started on first use. Fails
    /// loudly (never skips) if it cannot start.
    pub fn shared() -> &'static LocalAws {
        static SHARED: OnceLock<LocalAws> = OnceLock::new();
        SHARED.get_or_init(|| {
            LocalAws::start().unwrap_or_else(|e| panic!("local AWS (moto server) could not start: {e}"))
        })
    }

    /// Installs moto into `.venv` if needed and starts it on a free loopback port.
    pub fn start() -> Result<LocalAws, String> {
        let root = repo_root();
        let setup = Command::new("bash")
            .arg(root.join("tests/localaws/setup.sh"))
            .status()
            .map_err(|e| format!("cannot run tests/localaws/setup.sh: {e}"))?;
        if !setup.success() {
            return Err(format!("tests/localaws/setup.sh failed ({setup})"));
        }
        let mut process = Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/localaws/moto_launcher.py"))
            .args(["--port", "0", "--parent-pid", &std::process::id().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the moto launcher: {e}"))?;
        let stdout = process.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("READY ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(90))
            .map_err(|_| "moto launcher did not report READY within 90 s".to_owned())?;
        Ok(LocalAws { endpoint, http: reqwest::Client::new(), _process: process })
    }

    /// SDK settings for the local AWS: the same code paths as on AWS, another endpoint.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_ecs::config::Credentials::new("test", "test", None, None, "localaws"))
            .load()
            .await
    }

    /// Environment variables that point a function binary at the local AWS.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let started = Instant::now();
        let response = self.http.post(format!("{}/_conveyor/{path}", self.endpoint)).json(&body).send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "control {path} {body} => {status} {value} after {:?}", started.elapsed());
        value
    }

    /// Completes (or fails) the service's PRIMARY deployment, or the one named; returns the
    /// "ECS Deployment State Change" events ECS would emit.
    pub async fn settle(&self, cluster: &str, service: &str, outcome: Settle) -> Vec<Value> {
        let mut body = json!({ "cluster": cluster, "service": service, "region": REGION });
        match outcome {
            Settle::Complete => body["outcome"] = json!("COMPLETED"),
            Settle::Fail { circuit_breaker_rollback } => {
                body["outcome"] = json!("FAILED");
                body["circuitBreakerRollback"] = json!(circuit_breaker_rollback);
            }
        }
        let events = self.control("ecs/settle", body).await;
        events["events"].as_array().cloned().unwrap_or_default()
    }

    /// Creates the SAM template's EventBridge rules `rules` on event bus `bus` (in `region`, resolved
    /// for `account`), each delivering to its own SQS queue; returns rule => queue URL.
    pub async fn install_rules(
        &self,
        bus: &str,
        rules: &[&str],
        parameters: Value,
        region: &str,
        account: &str,
    ) -> std::collections::HashMap<String, String> {
        let body = json!({
            "bus": bus, "rules": rules, "parameters": parameters, "region": region, "account": account,
            "template": crate::repo_root().join("infra/template.yaml"),
        });
        let installed = self.control("eventbridge/install", body).await;
        installed
            .as_object()
            .unwrap()
            .iter()
            .map(|(rule, spec)| (rule.clone(), spec["queue_url"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// `PutEvents` of events (in the shape EventBridge delivers them) onto `bus`.
    pub async fn put_events(&self, bus: &str, region: &str, events: &[Value]) {
        let answer = self.control("eventbridge/put", json!({ "bus": bus, "region": region, "events": events })).await;
        assert_eq!(answer["failed"], 0, "PutEvents failed: {answer}");
    }

    /// Lets ECS advance the deployments of `clusters` by itself: after `delay_seconds` a
    /// deployment completes, or fails if its task definition runs one of `fail_digests`; the
    /// events ECS would emit are put onto `bus`.
    pub async fn autopilot(
        &self,
        clusters: &[String],
        bus: &str,
        delay_seconds: f64,
        fail_digests: &[String],
        circuit_breaker: bool,
    ) {
        let body = json!({
            "clusters": clusters, "bus": bus, "region": REGION, "delay_seconds": delay_seconds,
            "fail_digests": fail_digests, "circuit_breaker": circuit_breaker,
        });
        self.control("ecs/autopilot", body).await;
    }

    /// How many AWS calls, by operation, carried `matching` in their request (a test's unique id
    /// is in every call that concerns its resources).
    pub async fn calls(&self, matching: &str) -> std::collections::BTreeMap<String, u64> {
        let counts = self.control("calls", json!({ "match": matching })).await;
        counts.as_object().unwrap().iter().map(|(op, n)| (op.clone(), n.as_u64().unwrap())).collect()
    }

    /// Removes the injected faults for requests containing `matching` that have not fired yet.
    pub async fn clear_faults(&self, matching: &str) {
        self.control("faults/clear", json!({ "match": matching })).await;
    }

    /// Makes the next `count` calls of an AWS operation (e.g. `UpdateService`) whose request
    /// contains `matching` (a test's unique id keeps tests apart) fail with `code`.
    pub async fn inject_fault(&self, operation: &str, matching: &str, code: &str, status: u16, count: u32) {
        let fault =
            json!({ "operation": operation, "match": matching, "code": code, "status": status, "count": count });
        self.control("faults", fault).await;
    }
}

/// How [`LocalAws::settle`] ends a deployment.
#[derive(Debug, Clone, Copy)]
pub enum Settle {
    Complete,
    Fail { circuit_breaker_rollback: bool },
}
