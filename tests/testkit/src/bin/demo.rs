//! `make demo`: Conveyor's whole story on a laptop, against the local AWS, printed as a timeline.
//! Exits non-zero if any step does not behave as expected, so the demo is itself a test.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use conveyor_testkit::scenario;
use conveyor_testkit::stack::{LocalStack, Moment, MomentKind};
use conveyor_testkit::World;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> ExitCode {
    let colour = std::io::stdout().is_terminal();
    let paint =
        move |code: &str, text: &str| if colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() };
    println!(
        "{}",
        paint("1", "Conveyor demo: push → stage → verify → promote → prod (here and in another account); a bad push rolls back; a pipeline dev → stage (automatic, soaked, alarm-gated) → prod")
    );
    println!(
        "local AWS: moto server with the ECS deployment lifecycle and a second account; routing: the SAM template's EventBridge rules; operator: the conveyor CLI\n"
    );

    let started = Instant::now();
    let (moments, mut timeline) = mpsc::unbounded_channel::<Moment>();
    let printer = tokio::spawn(async move {
        while let Some(moment) = timeline.recv().await {
            let (code, label) = match moment.kind {
                MomentKind::Step => ("1;36", "step "),
                MomentKind::Delivery => ("32", "event"),
                MomentKind::Notification => ("33", "alert"),
                MomentKind::Slack => ("35", "slack"),
                MomentKind::Command => ("1;34", "cli  "),
                MomentKind::Problem => ("1;31", "FAIL "),
            };
            let when = format!("{} +{:>5.1}s", moment.at.format("%H:%M:%S%.3f"), started.elapsed().as_secs_f64());
            let mut lines = moment.text.lines();
            println!("{}  {}  {}", paint("2", &when), paint(code, label), lines.next().unwrap_or_default());
            for line in lines {
                println!("{:width$}{line}", "", width = when.len() + 9);
            }
        }
    });

    let world = World::new().await;
    let stack = LocalStack::start(world, scenario::options(), moments.clone()).await;
    scenario::seed(&stack).await;
    let result = scenario::story(&stack).await;
    if let Err(problem) = &result {
        stack.say(MomentKind::Problem, problem.clone());
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await; // the last alerts
    let status = stack.cli(&["status"]).await;
    drop(stack);
    drop(moments);
    let _ = printer.await;
    println!("\n{}\n{}", paint("1", "$ conveyor status"), status.stdout.trim_end());
    match result {
        Ok(()) => {
            println!("\n{} in {:.1} s", paint("1;32", "demo passed"), started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(problem) => {
            println!("\n{} {problem}", paint("1;31", "demo FAILED:"));
            ExitCode::FAILURE
        }
    }
}
