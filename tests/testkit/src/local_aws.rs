//! The local AWS: moto server started once per test process from the project's own venv.
//!
//! Besides moto's AWS APIs, the launcher (`tests/localaws/moto_launcher.py`) serves a control API
//! under `/_conveyor/` that this type wraps: ECS deployment lifecycle, EventBridge routing from the
//! SAM template, the state table from the SAM template, a log of every AWS call, and wire-level
//! faults ([`Fault`]) and rate limits that look to the SDK exactly like AWS's own failures.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::repo_root;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// How many moto servers a test process spreads its worlds over (`CONVEYOR_LOCAL_AWS_SERVERS`,
/// default 2: one per core of the machine the suite is sized for).
pub fn servers() -> usize {
    std::env::var("CONVEYOR_LOCAL_AWS_SERVERS").ok().and_then(|n| n.parse().ok()).filter(|n| *n > 0).unwrap_or(2)
}

/// A running moto server with Conveyor's ECS lifecycle extension and control API.
pub struct LocalAws {
    pub endpoint: String,
    http: reqwest::Client,
    _process: Child,
}

impl LocalAws {
    /// One of the moto servers the tests of this process share, in turn: each is one Python
    /// process, and under the whole suite's load it is the bottleneck (one core, the GIL), so
    /// the worlds are spread over [`servers`] of them. A world lives on one server. Each starts on
    /// first use; fails loudly (never skips) if it cannot start.
    pub fn shared() -> &'static LocalAws {
        static SERVERS: OnceLock<Vec<OnceLock<LocalAws>>> = OnceLock::new();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let servers = SERVERS.get_or_init(|| (0..servers()).map(|_| OnceLock::new()).collect());
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % servers.len();
        servers[n].get_or_init(|| {
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
        self.settle_in(ACCOUNT, cluster, service, outcome).await
    }

    /// [`LocalAws::settle`] for a service of another account.
    pub async fn settle_in(&self, account: &str, cluster: &str, service: &str, outcome: Settle) -> Vec<Value> {
        self.settle_at(account, REGION, cluster, service, outcome).await
    }

    /// [`LocalAws::settle`] for a service of any account and region.
    pub async fn settle_at(
        &self,
        account: &str,
        region: &str,
        cluster: &str,
        service: &str,
        outcome: Settle,
    ) -> Vec<Value> {
        let mut body = json!({ "cluster": cluster, "service": service, "region": region, "account": account });
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

    /// The event pattern of the SAM template's rule `rule`, resolved for `parameters` and `account`.
    pub async fn rule_pattern(&self, rule: &str, parameters: Value, account: &str) -> Value {
        let body = json!({
            "rule": rule, "parameters": parameters, "region": REGION, "account": account,
            "template": crate::repo_root().join("infra/template.yaml"),
        });
        self.control("eventbridge/pattern", body).await
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
        self.autopilot_in(&[ACCOUNT], clusters, bus, delay_seconds, fail_digests, circuit_breaker).await;
    }

    /// [`LocalAws::autopilot`] over the clusters of several accounts (their events all land on
    /// `bus`, as target accounts forward theirs to Conveyor's).
    pub async fn autopilot_in(
        &self,
        accounts: &[&str],
        clusters: &[String],
        bus: &str,
        delay_seconds: f64,
        fail_digests: &[String],
        circuit_breaker: bool,
    ) {
        let body = json!({
            "accounts": accounts, "clusters": clusters, "bus": bus, "region": REGION, "delay_seconds": delay_seconds,
            "fail_digests": fail_digests, "circuit_breaker": circuit_breaker,
        });
        self.control("ecs/autopilot", body).await;
    }

    /// [`LocalAws::autopilot`] over clusters of this account in another `region`, whose events
    /// land on `bus` in Conveyor's region (as that region's forwarding rule,
    /// `infra/target-account.yaml`, puts them there).
    pub async fn autopilot_forwarded(&self, region: &str, clusters: &[String], bus: &str, delay_seconds: f64) {
        let body = json!({
            "accounts": [ACCOUNT], "clusters": clusters, "bus": bus, "region": region, "bus_region": REGION,
            "delay_seconds": delay_seconds,
        });
        self.control("ecs/autopilot", body).await;
    }

    /// Native deployments (`tests/localaws/ecs_native.py`) for the services of `clusters` in
    /// Conveyor's account: their lifecycle hooks are called through the Lambda Invoke API at
    /// `lambda_url`, each stage lasts 0.1 s and an ECS delay (`callBackDelay`, bake time) of N
    /// seconds lasts N × 0.05 s; test traffic reaching a revision that runs one of
    /// `unhealthy_digests` answers 503. With `bus`, the deployment events go there (as ECS's reach
    /// Conveyor's rules); without, a test reads them ([`LocalAws::native_state`]).
    pub async fn native(&self, clusters: &[String], lambda_url: &str, unhealthy_digests: &[String], bus: Option<&str>) {
        let body = json!({
            "clusters": clusters, "lambda_url": lambda_url, "stage_seconds": 0.1, "time_scale": 0.05,
            "unhealthy_digests": unhealthy_digests, "bus": bus, "bus_region": REGION,
        });
        self.control("ecs/native", body).await;
    }

    /// The native service deployments of a service (newest first) and the events they emitted.
    pub async fn native_state(&self, cluster: &str, service: &str) -> Value {
        self.control("ecs/native/state", json!({ "cluster": cluster, "service": service })).await
    }

    /// Waits (up to 60 s) until the service's newest native deployment has ended; returns
    /// [`LocalAws::native_state`].
    pub async fn native_settled(&self, cluster: &str, service: &str) -> Value {
        let started = Instant::now();
        loop {
            let state = self.native_state(cluster, service).await;
            let status = state["deployments"][0]["status"].as_str().unwrap_or_default().to_owned();
            if ["SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"].contains(&status.as_str()) {
                return state;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no end to the native deployment: {state}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The URL of the service's test (or production) listener: answered by the revision the
    /// deployment's weights send a request to.
    pub fn traffic_url(&self, kind: &str, cluster: &str, service: &str) -> String {
        format!("{}/_conveyor/traffic/{kind}/{cluster}/{service}", self.endpoint)
    }

    /// Creates the CloudWatch alarm `name` in Conveyor's account and region if needed, and puts it
    /// in `state` (`OK`, `ALARM`, `INSUFFICIENT_DATA`), its history kept as CloudWatch keeps it.
    pub async fn set_alarm(&self, name: &str, state: &str) {
        self.control("cloudwatch/alarm", json!({ "account": ACCOUNT, "region": REGION, "name": name, "state": state }))
            .await;
    }

    /// How many AWS calls, by operation, carried `matching` in their request (a test's unique id
    /// is in every call that concerns its resources).
    pub async fn calls(&self, matching: &str) -> std::collections::BTreeMap<String, u64> {
        let counts = self.control("calls", json!({ "match": matching })).await;
        counts.as_object().unwrap().iter().map(|(op, n)| (op.clone(), n.as_u64().unwrap())).collect()
    }

    /// From now on, keeps every call made with credentials of `scope` (`{principal}@{scope}`, or
    /// a role assumed with them) with its caller, request and region, for the IAM test.
    pub async fn iam_watch(&self, scope: &str) {
        self.control("iam/watch", json!({ "scope": scope })).await;
    }

    /// Evaluates the templates' policies against the calls kept for `spec["scope"]`
    /// (`tests/localaws/iam_policy.py`): every call's verdict, and what each statement was needed for.
    pub async fn iam_evaluate(&self, spec: &Value) -> Value {
        self.control("iam/evaluate", spec.clone()).await
    }

    /// What the templates of `spec` decide for one call no scenario makes: `question` is
    /// `{principal, role_arn?, action, resource, region?, context?}`; the answer `{verdict, why}`.
    pub async fn iam_decide(&self, spec: &Value, question: Value) -> Value {
        self.control("iam/decide", json!({ "spec": spec, "question": question })).await
    }

    /// Removes every fault injected for requests containing `matching` (the `matching` they were
    /// injected with), persistent ones included.
    pub async fn clear_faults(&self, matching: &str) {
        self.control("faults/clear", json!({ "match": matching })).await;
    }

    /// Makes the next `count` calls of an AWS operation (e.g. `UpdateService`) whose request
    /// contains `matching` (a test's unique id keeps tests apart) fail with `code` and `status`,
    /// in the wire format of the operation's protocol. Shorthand for [`Fault`] with
    /// [`FaultMode::Error`].
    pub async fn inject_fault(&self, operation: &str, matching: &str, code: &str, status: u16, count: u32) {
        let mode = FaultMode::Error { status, code: code.to_owned(), message: "injected fault".to_owned() };
        self.fault(&Fault::on(operation).matching(matching).mode(mode).count(count)).await;
    }

    /// Injects a wire-level fault: from then on, the calls it selects fail the way AWS (or the
    /// network) fails, so the real SDK's retry and error classification run. Returns the fault's
    /// id. Scope it with [`Fault::matching`] (the test's unique id); [`LocalAws::clear_faults`]
    /// removes it.
    pub async fn fault(&self, fault: &Fault) -> u64 {
        let answer = self.control("faults", fault.to_json()).await;
        answer["id"].as_u64().unwrap_or_default()
    }

    /// The AWS calls whose request contained `matching`, oldest first, with the fault that fired
    /// on each (if any): a test can check "call 1..k" of a flow, retries included, not only totals.
    pub async fn call_log(&self, matching: &str) -> Vec<CallRecord> {
        let answer = self.control("calls/log", json!({ "match": matching })).await;
        answer["calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|call| CallRecord {
                        seq: call["seq"].as_u64().unwrap_or_default(),
                        operation: call["operation"].as_str().unwrap_or_default().to_owned(),
                        fault: call["fault"].as_str().map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Limits the calls of `operation` whose request contains `matching` the way AWS limits API
    /// calls: a token bucket of `burst` calls refilled at `rate` per second; a call over the limit
    /// gets the protocol's throttling error (logged as fault `ratelimit`). Real ECS allows
    /// `RegisterTaskDefinition` 1/s sustained with a burst of 20. Replaces an earlier limit of the
    /// same operation and `matching`.
    pub async fn rate_limit(&self, operation: &str, matching: &str, rate: f64, burst: u32) {
        let body = json!({ "operation": operation, "match": matching, "rate": rate, "burst": burst });
        self.control("ratelimit", body).await;
    }

    /// Removes the rate limits set with `matching`.
    pub async fn clear_rate_limits(&self, matching: &str) {
        self.control("ratelimit/clear", json!({ "match": matching })).await;
    }

    /// Creates DynamoDB table `table_name` in `region` from the `StateTable` resource of the
    /// repository's `infra/template.yaml` (keys, GSIs, billing, encryption, then TTL and
    /// point-in-time recovery), so tests run against the table production gets, not a copy of
    /// its definition. Idempotent.
    pub async fn install_table(&self, table_name: &str, region: &str) -> InstalledTable {
        let body = json!({
            "template": crate::repo_root().join("infra/template.yaml"),
            "resource": "StateTable", "table": table_name, "region": region,
        });
        let answer = self.control("dynamodb/install", body).await;
        InstalledTable {
            table: table_name.to_owned(),
            created: answer["created"].as_bool().unwrap_or_default(),
            applied: answer["applied"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            skipped: answer["skipped"]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
                .unwrap_or_default(),
        }
    }
}

/// How an injected [`Fault`] fails a call. Every HTTP error is in the wire format of the call's
/// protocol (awsJson: `__type` and `x-amzn-ErrorType`; awsQuery, e.g. SNS: `<ErrorResponse>`
/// XML), so the SDK parses and classifies it as it would AWS's.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultMode {
    /// HTTP 400 `ThrottlingException` (awsJson) or `Throttling` (awsQuery), "Rate exceeded":
    /// the SDK's standard retry treats both as throttling and retries.
    Throttle,
    /// HTTP 500 `InternalFailure`.
    Http500,
    /// HTTP 503 `ServiceUnavailable`.
    Http503,
    /// Any error: `status`, `code` and `message` as given.
    Error { status: u16, code: String, message: String },
    /// No HTTP response at all: the TCP connection is reset (the SDK sees a dispatch failure, an
    /// I/O error, not a service error). The request is not applied.
    Reset,
    /// The call waits this long, then is served normally.
    Latency(Duration),
    /// The request is applied by moto, then its response is lost and replaced by a 500
    /// `InternalFailure`: the caller cannot tell whether it happened (the case idempotent retries
    /// and read-back must handle).
    ApplyThenFail,
    /// SIGKILL process `pid`, then reset the connection (the request is not applied): a function
    /// binary crashing exactly when its k-th AWS call arrives.
    Kill { pid: u32 },
}

/// A wire-level fault for [`LocalAws::fault`]: which calls (operation, text in the request) and
/// when (after N calls, N times, until cleared, or at random with a seed).
///
/// ```ignore
/// let fault = Fault::on("UpdateService").matching(&world.id).mode(FaultMode::ApplyThenFail).after(2).count(1);
/// world.aws.fault(&fault).await;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    operation: String,
    matching: String,
    mode: FaultMode,
    after: u32,
    count: Option<u32>,
    persistent: bool,
    rate: Option<(f64, u64)>,
}

impl Fault {
    /// A fault on `operation`: the last part of `X-Amz-Target` (`UpdateService`, `PutParameter`)
    /// or the awsQuery `Action` (`Publish`); `*` is every operation. Fires once, on the next
    /// matching call, as [`FaultMode::Throttle`] unless told otherwise.
    pub fn on(operation: impl Into<String>) -> Fault {
        Fault {
            operation: operation.into(),
            matching: String::new(),
            mode: FaultMode::Throttle,
            after: 0,
            count: None,
            persistent: false,
            rate: None,
        }
    }

    /// Only calls whose request body contains `text` (a test's unique id keeps parallel tests
    /// apart; without it the fault hits every test's calls).
    pub fn matching(mut self, text: impl Into<String>) -> Fault {
        self.matching = text.into();
        self
    }

    pub fn mode(mut self, mode: FaultMode) -> Fault {
        self.mode = mode;
        self
    }

    /// Lets the first `n` matching calls through (the fault fires from call `n + 1` on).
    pub fn after(mut self, n: u32) -> Fault {
        self.after = n;
        self
    }

    /// Fires `n` times, then is gone (default 1; 0 = until cleared).
    pub fn count(mut self, n: u32) -> Fault {
        self.count = Some(n);
        self
    }

    /// Fires on every matching call until [`LocalAws::clear_faults`].
    pub fn persistent(mut self) -> Fault {
        self.persistent = true;
        self
    }

    /// Fires on each matching call with `probability` (0..=1), drawn from a generator seeded with
    /// `seed` so that a failing run can be replayed. Until cleared, unless [`Fault::count`] caps
    /// how often it fires.
    pub fn rate(mut self, probability: f64, seed: u64) -> Fault {
        self.rate = Some((probability, seed));
        self
    }

    fn to_json(&self) -> Value {
        let mut body = json!({
            "operation": self.operation, "match": self.matching, "after": self.after,
            "persistent": self.persistent,
        });
        if let Some(count) = self.count {
            body["count"] = json!(count);
        }
        if let Some((rate, seed)) = self.rate {
            body["rate"] = json!(rate);
            body["seed"] = json!(seed);
        }
        let mode = match &self.mode {
            FaultMode::Throttle => "throttle",
            FaultMode::Http500 => "http500",
            FaultMode::Http503 => "http503",
            FaultMode::Error { status, code, message } => {
                body["status"] = json!(status);
                body["code"] = json!(code);
                body["message"] = json!(message);
                "error"
            }
            FaultMode::Reset => "reset",
            FaultMode::Latency(delay) => {
                body["latency_ms"] = json!(delay.as_millis());
                "latency"
            }
            FaultMode::ApplyThenFail => "apply_then_fail",
            FaultMode::Kill { pid } => {
                body["pid"] = json!(pid);
                "kill"
            }
        };
        body["mode"] = json!(mode);
        body
    }
}

/// One AWS call as the local AWS saw it ([`LocalAws::call_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Increases with every call the local AWS receives (across tests: gaps are other tests').
    pub seq: u64,
    /// The operation (`RegisterTaskDefinition`), or the path for REST calls.
    pub operation: String,
    /// The mode of the fault that fired on this call (`throttle`, `reset`, ..., `ratelimit` for a
    /// rate limit), if any.
    pub fault: Option<String>,
}

/// What [`LocalAws::install_table`] did.
#[derive(Debug, Clone)]
pub struct InstalledTable {
    pub table: String,
    /// False when the table existed already.
    pub created: bool,
    /// The template properties applied (`KeySchema`, ..., `TimeToLiveSpecification`).
    pub applied: Vec<String>,
    /// Properties moto refused, with its error.
    pub skipped: std::collections::BTreeMap<String, String>,
}

/// How [`LocalAws::settle`] ends a deployment.
#[derive(Debug, Clone, Copy)]
pub enum Settle {
    Complete,
    Fail { circuit_breaker_rollback: bool },
}
