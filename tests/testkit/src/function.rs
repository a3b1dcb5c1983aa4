//! A real Conveyor function binary, running against a [`RuntimeApi`] and the local AWS.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::repo_root;
use crate::runtime_api::{Invocation, RuntimeApi};

/// A running function process and everything it logged.
pub struct Function {
    pub name: String,
    /// When the process was started, for init-time measurements.
    pub spawned_at: std::time::Instant,
    api: RuntimeApi,
    logs: Arc<Mutex<Vec<String>>>,
    process: Child,
}

/// The debug build of a function binary (`make test` builds them before the tests run).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the functions first (`cargo build --workspace --bins`, as `make test` does)",
        path.display()
    );
    path
}

impl Function {
    /// Starts the binary `name` with the Lambda environment plus `env`.
    pub async fn spawn(name: &str, env: &[(String, String)]) -> Function {
        Function::spawn_binary(name, &binary(name), env).await
    }

    /// Starts the binary at `path` (e.g. a release build) as function `name`, with its own
    /// credentials (the function's name in the access key id: [`crate::principals`]).
    pub async fn spawn_binary(name: &str, path: &std::path::Path, env: &[(String, String)]) -> Function {
        let env = crate::principals::act_as(env, name);
        let api = RuntimeApi::start().await;
        let mut command = Command::new(path);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned_at = std::time::Instant::now();
        let mut process = command.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            process.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            process.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        Function { name: name.to_owned(), spawned_at, api, logs, process }
    }

    /// How long the process took from start to its first poll for work (Lambda's init phase).
    pub async fn init_duration(&self) -> std::time::Duration {
        loop {
            if let Some(polled) = self.api.first_poll() {
                return polled - self.spawned_at;
            }
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
    }

    /// Peak resident memory of the process so far (Linux `VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Invokes the function and waits for its answer (panics, with the logs, if none comes).
    pub async fn invoke(&self, payload: Value) -> Invocation {
        match self.api.invoke(payload, Duration::from_secs(60)).await {
            Ok(answer) => answer,
            Err(error) => panic!("{}: {error}\nlogs:\n{}", self.name, self.logs().join("\n")),
        }
    }

    /// The process id (for [`crate::local_aws::FaultMode::Kill`]); `None` once it was reaped.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Gives each later invocation `budget` before its deadline instead of 60 s (see
    /// [`RuntimeApi::set_deadline`]): the leases it takes then expire `budget` + 10 s after it
    /// starts, so a lease it leaves behind (a failed release, a crash) is reclaimed within seconds.
    pub fn set_deadline(&self, budget: Duration) {
        self.api.set_deadline(budget);
    }

    /// Gives each later invocation the caller identity `id`, as Lambda does for a caller it
    /// verified (see [`RuntimeApi::set_identity`]); `None`: no identity, as a plain invoke.
    pub fn set_identity(&self, id: Option<&str>) {
        self.api.set_identity(id);
    }

    /// Invokes the function and waits at most `timeout` for its answer, or for the process to die
    /// (killed by a [`crate::local_aws::FaultMode::Kill`] fault, say): `Err` says which, with the
    /// logs' last lines. Unlike [`Function::invoke`], never panics.
    pub async fn try_invoke(&mut self, payload: Value, timeout: Duration) -> Result<Invocation, String> {
        let answer = tokio::select! {
            answer = self.api.invoke(payload, timeout) => answer,
            status = self.process.wait() => Err(match status {
                Ok(status) => format!("the process ended without answering ({status})"),
                Err(error) => format!("the process could not be waited for: {error}"),
            }),
        };
        answer.map_err(|error| {
            let logs = self.logs();
            let tail = logs[logs.len().saturating_sub(5)..].join("\n");
            format!("{}: {error}\nlast log lines:\n{tail}", self.name)
        })
    }

    /// Every line the process has written so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The JSON log lines.
    pub fn json_logs(&self) -> Vec<Value> {
        self.logs().iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }
}
