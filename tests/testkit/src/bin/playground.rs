//! `make up`: the local stack left running — the local AWS, the functions behind the template's
//! EventBridge routing, ECS deployments that settle by themselves, and the demo's apps — so that
//! `conveyor` (and `aws`) commands work against it as in `docs/cli.md`. It writes the variables to
//! export into `.local/playground.env` (`$CONVEYOR_PLAYGROUND_DIR/playground.env` if set) and serves pushes on `POST /push?app=APP&tag=TAG` (what
//! `make push` sends). `make down` stops it (SIGTERM to its process group).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use conveyor_testkit::stack::{LocalStack, MomentKind};
use conveyor_testkit::{scenario, World};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() {
    let root = conveyor_testkit::repo_root();
    let (moments, mut timeline) = mpsc::unbounded_channel();
    // What happens goes to the log `make up` points at, one line per moment.
    tokio::spawn(async move {
        while let Some(moment) = timeline.recv().await {
            let moment: conveyor_testkit::stack::Moment = moment;
            println!("{} {:?} {}", moment.at.format("%H:%M:%S%.3f"), moment.kind, moment.text.replace('\n', "\n    "));
        }
    });
    let stack = Arc::new(LocalStack::start(World::new().await, scenario::options(), moments).await);
    scenario::seed(&stack).await;

    let served = stack.clone();
    let addr = conveyor_testkit::http::serve(move |request| push(served.clone(), request)).await;
    let mut env = stack.cli_env(conveyor_testkit::principals::OPERATOR);
    env.push(("CONVEYOR_PLAYGROUND".into(), format!("http://{addr}")));
    let exports: String = env.iter().map(|(name, value)| format!("export {name}={value}\n")).collect();
    // `CONVEYOR_PLAYGROUND_DIR`: elsewhere than `.local` (the test that runs the README's commands).
    let dir = std::env::var_os("CONVEYOR_PLAYGROUND_DIR").map_or_else(|| root.join(".local"), Into::into);
    std::fs::create_dir_all(&dir).expect("a .local directory");
    // Whole or not at all: `make up` (and the test) read it as soon as it exists.
    std::fs::write(dir.join("playground.env.partial"), exports).expect("the env file");
    std::fs::rename(dir.join("playground.env.partial"), dir.join("playground.env")).expect("the env file");
    stack.say(MomentKind::Step, format!("playground up: apps shop-api, billing, web; pushes on http://{addr}/push"));

    // Until `make down` stops its process group (the local AWS and the functions with it).
    std::future::pending::<()>().await;
}

/// `POST /push?app=APP&tag=TAG`: an ECR push of the app's repository under `TAG`, its digest
/// derived from the tag (the same tag, the same image), put onto the stack's event bus now.
async fn push(
    stack: Arc<LocalStack>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let query = request.uri().query().unwrap_or_default().to_owned();
    let param =
        |name: &str| query.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(str::to_owned));
    let answer = |status: StatusCode, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
        *response.status_mut() = status;
        Ok(response)
    };
    let (Some(app), Some(tag)) = (param("app"), param("tag")) else {
        return answer(StatusCode::BAD_REQUEST, "POST /push?app=APP&tag=TAG".into());
    };
    let repository = match app.as_str() {
        // The demo's `billing` pushes to its own repository name (`World::seed_app_across`).
        "billing" => stack.world.name("billing"),
        other => other.to_owned(),
    };
    let digest = digest_of(&format!("{app}:{tag}"));
    stack.push(&repository, &tag, &digest, Utc::now()).await;
    stack.say(MomentKind::Step, format!("pushed {repository}:{tag} ({digest})"));
    answer(StatusCode::OK, format!("pushed {repository}:{tag} {digest}"))
}

/// A digest that only `name` has (a local image has no content to hash).
fn digest_of(name: &str) -> String {
    use std::hash::{Hash, Hasher};
    let part = |salt: u8| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (salt, name).hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    };
    format!("sha256:{}{}{}{}", part(0), part(1), part(2), part(3))
}
