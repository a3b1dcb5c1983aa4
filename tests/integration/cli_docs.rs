//! The examples of `docs/cli.md` are what the CLI prints. The docs' story — pushes, promotions,
//! a prod rollout that fails and is rolled back, a pause holding a push, a rollback, config files
//! valid and not — runs on the local stack (the template's routing, ECS deployments settling by
//! themselves, the real binaries, the built `conveyor`), and every `console` example of the doc
//! (a block starting `$ conveyor ...` with output) is compared with what that command printed
//! in the run (its nth showing with the nth run of the same command):
//!
//! - times, ECS deployment and rollout ids, durations and running counts may differ (they do from
//!   run to run), and table columns may be spaced otherwise; everything else must be as printed;
//! - a doc line with `...` stands for one or more printed lines (an abridged example);
//! - `$ echo $?` at the end of an example shows the exit code; an example without it exited 0.
//!
//! A doc that drifts fails with what differs. When the CLI is right,
//! `CONVEYOR_BLESS=1 cargo test --locked --test integration cli_docs` (after `make build`)
//! rewrites every example from this run (an abridged one keeps its `...` lines where it still
//! matches) — review the diff. The run's whole transcript
//! is written to `target/cli-docs.md` (`docs/day2-operations.md` takes its examples from it).

use std::sync::LazyLock;
use std::time::Duration;

use chrono::Utc;
use conveyor_testkit::knobs;
use conveyor_testkit::stack::{LocalStack, StackOptions};
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use regex::Regex;
use serde_json::json;

use crate::cli::{cli_env, functions_behind_lambda, run, Ran};

/// The doc checked, from the repository root.
const DOC: &str = "docs/cli.md";

#[tokio::test]
async fn the_examples_of_the_cli_docs_are_what_the_cli_prints() {
    let transcript = story(World::new().await).await;
    let root = conveyor_testkit::repo_root();
    std::fs::write(root.join("target/cli-docs.md"), &transcript).unwrap();
    let printed = printed(&transcript);
    let path = root.join(DOC);
    let doc = std::fs::read_to_string(&path).unwrap();
    let (problems, blessed) = check(&doc, &printed);
    if knobs::var("CONVEYOR_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, blessed).unwrap();
        println!("{DOC}: the examples rewritten from this run ({} differed); review the diff", problems.len());
        return;
    }
    assert!(
        problems.is_empty(),
        "{DOC} differs from what the CLI prints, in {} example(s):\n\n{}\n\nIf the CLI is right: \
         CONVEYOR_BLESS=1 cargo test --locked --test integration cli_docs (after `make build`) rewrites the \
         examples from this run (the whole run: target/cli-docs.md); review the diff.",
        problems.len(),
        problems.join("\n\n")
    );
}

/// Runs the docs' story on a local stack for `world`; the transcript: each command
/// (`$ conveyor ...`), what it printed (`[stderr]` first, then stdout) and `[exit N]`, with the
/// world's names shortened and tables realigned. The IAM test runs it too.
pub(crate) async fn story(world: World) -> String {
    let (moments, _timeline) = tokio::sync::mpsc::unbounded_channel();
    let stack = LocalStack::start(world, StackOptions::default(), moments).await;
    let world = &stack.world;
    let (stage, prod) = (world.name("stage"), world.name("prod"));
    let bad = digest(150);
    // ECS: stage runs every image; prod's tasks fail to start with the v1.5.0 image. The stack's
    // own autopilot (its three clusters) is paused: these two replace it.
    let stacks_clusters = [stage.clone(), prod.clone(), world.name("prod-b")];
    world.aws.autopilot(&stacks_clusters, &stack.bus, 1e9, &[], false).await;
    world.aws.autopilot(std::slice::from_ref(&stage), &stack.bus, 1.0, &[], false).await;
    world.aws.autopilot(std::slice::from_ref(&prod), &stack.bus, 1.5, std::slice::from_ref(&bad), false).await;
    let (lambda, _) = functions_behind_lambda(world).await;
    world.seed_app("shop-api", "shop-api", true, json!({ "tags": "^v[0-9]+\\.[0-9]+\\.[0-9]+$" })).await;
    world.seed_app("billing", "billing", false, json!({})).await;
    let env = cli_env(world, &lambda);

    let mut doc = String::new();
    let show = |doc: &mut String, args: &[&str], ran: &Ran| {
        let quoted: Vec<String> =
            args.iter().map(|a| if a.contains(' ') { format!("{a:?}") } else { (*a).to_owned() }).collect();
        doc.push_str(&format!("$ conveyor {}\n", quoted.join(" ")));
        if !ran.stderr.is_empty() {
            doc.push_str(&format!("[stderr]\n{}", ran.stderr));
        }
        doc.push_str(&ran.stdout);
        doc.push_str(&format!("[exit {}]\n\n", ran.code));
    };
    let cli = |args: Vec<&'static str>| {
        let env = env.clone();
        async move { (args.clone(), run(&env, &args).await) }
    };
    let ago = |hours: i64| Utc::now() - chrono::Duration::hours(hours);
    let verified = |app: &'static str, tag: &'static str| stack.wait_for_state(app, "stage", tag, "verified");

    stack.push("shop-api", "v1.4.0", &digest(140), ago(50)).await;
    stack.push("billing", "v2.3.0", &digest(230), ago(30)).await;
    verified("shop-api", "v1.4.0").await.unwrap();
    verified("billing", "v2.3.0").await.unwrap();
    for (args, ran) in [
        cli(vec!["promote", "shop-api", "v1.4.0", "--reason", "spring release", "--wait"]).await,
        cli(vec!["promote", "billing", "v2.3.0", "--wait"]).await,
    ] {
        show(&mut doc, &args, &ran);
    }
    stack.push("shop-api", "v1.4.1", &digest(141), ago(20)).await;
    verified("shop-api", "v1.4.1").await.unwrap();
    let (args, ran) = cli(vec!["wait", "shop-api", "v1.4.1"]).await;
    show(&mut doc, &args, &ran);
    let (args, ran) = cli(vec!["promote", "shop-api", "v1.4.1", "--dry-run"]).await;
    show(&mut doc, &args, &ran);
    let (args, ran) = cli(vec!["promote", "shop-api", "v1.4.1", "--wait"]).await;
    show(&mut doc, &args, &ran);
    stack.push("shop-api", "v1.5.0", &bad, ago(6)).await;
    verified("shop-api", "v1.5.0").await.unwrap();
    let (args, ran) = cli(vec!["promote", "shop-api", "v1.5.0", "--reason", "new checkout", "--wait"]).await;
    show(&mut doc, &args, &ran);
    let (args, ran) = cli(vec!["promote", "shop-api", "v1.5.0"]).await;
    show(&mut doc, &args, &ran);
    // The rollback deployment completes (`restored`) before the next push: one order for the
    // history to show.
    stack
        .wait_for("the rollback restored", Duration::from_secs(20), || async {
            let record = world.record("shop-api", "prod").await?;
            record["rollback"].is_null().then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:#?}", stack.deliveries().last()));
    stack.push("shop-api", "v1.5.1", &digest(151), ago(3)).await;
    verified("shop-api", "v1.5.1").await.unwrap();
    let (args, ran) = cli(vec!["promote", "shop-api", "v1.5.1", "--reason", "checkout fix", "--wait", "--json"]).await;
    show(&mut doc, &args, &ran);

    let (args, ran) =
        cli(vec!["pause", "shop-api", "--env", "stage", "--reason", "INC-42 payment provider outage"]).await;
    show(&mut doc, &args, &ran);
    stack.push("shop-api", "v1.6.0", &digest(160), ago(1)).await;
    stack
        .wait_for("the held push", Duration::from_secs(20), || async {
            let record = world.record("shop-api", "stage").await?;
            (record["held_push"]["tag"] == "v1.6.0").then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:#?}", stack.deliveries().last()));
    for args in [vec!["status"], vec!["status", "shop-api", "--json"], vec!["promote", "shop-api", "v1.6.0"]] {
        let (args, ran) = cli(args).await;
        show(&mut doc, &args, &ran);
    }
    let (args, ran) = cli(vec!["resume", "shop-api", "--env", "stage", "--deploy-latest"]).await;
    show(&mut doc, &args, &ran);
    verified("shop-api", "v1.6.0").await.unwrap();
    for args in [
        vec!["rollback", "shop-api", "--dry-run"],
        vec!["rollback", "shop-api", "--reason", "INC-43 slow checkout", "--wait"],
        vec!["status"],
        vec!["status", "shop-api"],
        vec!["history", "shop-api"],
        vec!["history", "shop-api", "--env", "prod", "--limit", "6"],
        vec!["history", "shop-api", "--env", "prod", "--limit", "3", "--json"],
        vec!["metrics"],
        vec!["metrics", "shop-api", "--json"],
        vec!["doctor", "shop-api"],
    ] {
        let (args, ran) = cli(args).await;
        show(&mut doc, &args, &ran);
    }
    let dir = std::env::temp_dir().join(format!("conveyor-docs-{}", world.id));
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({ "repository": "cart", "container": "api", "tags": "^v[0-9]+\\.[0-9]+\\.[0-9]+$",
        "environments": { "stage": { "cluster": stage, "service": "cart" }, "prod": { "cluster": prod, "service": "cart" } } });
    std::fs::write(dir.join("cart.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    // Claims shop-api's prod service; and one with a typo.
    let mut thief = config.clone();
    thief["environments"]["stage"]["service"] = json!("cart-web");
    thief["environments"]["prod"]["service"] = json!("shop-api");
    std::fs::write(dir.join("cart-web.json"), serde_json::to_string_pretty(&thief).unwrap()).unwrap();
    let mut typo = config.clone();
    typo["environments"]["stage"]["service"] = json!("cart-worker");
    typo["environments"]["prod"]["service"] = json!("cart-worker");
    typo["contianer"] = typo.as_object_mut().unwrap().remove("container").unwrap();
    std::fs::write(dir.join("cart-worker.json"), serde_json::to_string_pretty(&typo).unwrap()).unwrap();
    let file = |name: &str| dir.join(name).display().to_string();
    let (cart, cart_web, cart_worker) = (file("cart.json"), file("cart-web.json"), file("cart-worker.json"));
    for args in [
        vec!["config", "validate", cart.as_str(), cart_web.as_str(), cart_worker.as_str()],
        vec!["config", "put", cart.as_str()],
        vec!["config", "put", cart_web.as_str()],
        vec!["config", "validate"],
    ] {
        let ran = run(&env, &args).await;
        show(&mut doc, &args, &ran);
    }
    let doc = doc.replace(&dir.display().to_string(), "apps");
    realign(&doc.replace(&format!("-{}", world.id), ""))
}

/// What one command printed in the run.
#[derive(Debug)]
struct Printed {
    /// As the doc writes it, after `$ conveyor `.
    command: String,
    /// stderr's lines, then stdout's.
    lines: Vec<String>,
    code: i32,
}

/// The commands of a transcript.
fn printed(transcript: &str) -> Vec<Printed> {
    static EXIT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[exit (-?\d+)\]\s*$").unwrap());
    transcript
        .split("$ conveyor ")
        .skip(1)
        .map(|chunk| {
            let (command, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
            let exit = EXIT.captures(body).unwrap_or_else(|| panic!("no [exit N] after `{command}`"));
            let output = &body[..exit.get(0).map_or(body.len(), |m| m.start())];
            let output = output.strip_prefix("[stderr]\n").unwrap_or(output);
            let mut lines: Vec<String> = output.lines().map(str::to_owned).collect();
            while lines.last().is_some_and(|l| l.trim().is_empty()) {
                lines.pop();
            }
            Printed { command: command.to_owned(), lines, code: exit[1].parse().unwrap() }
        })
        .collect()
}

/// An example of the doc: the lines of its block (after the opening fence) and what it shows.
struct Example<'a> {
    /// Index in the doc's lines of the command line.
    at: usize,
    /// Index of the closing fence.
    end: usize,
    command: &'a str,
    output: &'a [&'a str],
    /// The exit code `$ echo $?` shows.
    code: Option<i32>,
}

/// The doc's examples: `console` blocks starting with `$ conveyor ...` and showing output.
fn examples<'a>(lines: &'a [&'a str]) -> Vec<Example<'a>> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        if lines[at] != "```console" {
            at += 1;
            continue;
        }
        let Some(length) = lines[at + 1..].iter().position(|l| *l == "```") else { break };
        let (start, end) = (at + 1, at + 1 + length);
        let block = &lines[start..end];
        if let (Some(command), true) = (block.first().and_then(|l| l.strip_prefix("$ conveyor ")), block.len() > 1) {
            let echoed = block.len() >= 3 && block[block.len() - 2] == "$ echo $?";
            let code = echoed.then(|| block[block.len() - 1].trim().parse().ok()).flatten();
            let output = if code.is_some() { &block[1..block.len() - 2] } else { &block[1..] };
            found.push(Example { at: start, end, command, output, code });
        }
        at = end + 1;
    }
    found
}

/// What differs between the doc's examples and what was printed; and the doc with every example
/// rewritten from `printed` (an abridged one keeps its `...` lines where it still matches).
fn check(doc: &str, printed: &[Printed]) -> (Vec<String>, String) {
    let lines: Vec<&str> = doc.lines().collect();
    let mut problems = Vec::new();
    let mut rewritten: Vec<(usize, usize, Vec<String>)> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for example in examples(&lines) {
        let nth = seen.iter().filter(|c| **c == example.command).count();
        seen.push(example.command);
        let where_ = format!("`conveyor {}` ({DOC}:{})", example.command, example.at + 1);
        let Some(ran) = printed.iter().filter(|p| p.command == example.command).nth(nth) else {
            problems.push(format!("{where_}: the story runs it only {nth} time(s)"));
            continue;
        };
        let mut differences = Vec::new();
        if example.code.unwrap_or(0) != ran.code {
            differences.push(format!("exit {} shown, {} returned", example.code.unwrap_or(0), ran.code));
        }
        let shown = normalized(example.output.iter().copied());
        let actual = normalized(ran.lines.iter().map(String::as_str));
        let alignment = align(&shown, &actual);
        if alignment.is_none() {
            let text =
                |lines: &[(String, usize)]| lines.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join("\n    ");
            differences.push(format!(
                "the doc shows (normalized):\n    {}\n  the CLI printed:\n    {}",
                text(&shown),
                text(&actual)
            ));
        }
        if !differences.is_empty() {
            problems.push(format!("{where_}: {}", differences.join("\n  ")));
        }
        let mut block = vec![format!("$ conveyor {}", example.command)];
        match alignment {
            // Each shown line becomes the printed lines it stands for; `...` lines stay.
            Some(alignment) => {
                for ((line, source), matched) in shown.iter().zip(alignment) {
                    match matched {
                        None => block.push(example.output[*source].to_owned()),
                        Some(j) => {
                            let end = actual.get(j + 1).map_or(ran.lines.len(), |(_, next)| *next);
                            debug_assert!(!line.contains("..."));
                            block.extend(ran.lines[actual[j].1..end].iter().cloned());
                        }
                    }
                }
            }
            None => block.extend(ran.lines.iter().cloned()),
        }
        if ran.code != 0 || example.code.is_some() {
            block.extend(["$ echo $?".to_owned(), ran.code.to_string()]);
        }
        rewritten.push((example.at, example.end, block));
    }
    let mut blessed: Vec<String> = Vec::new();
    let mut next = 0;
    for (start, end, block) in rewritten {
        blessed.extend(lines[next..start].iter().map(|l| (*l).to_owned()));
        blessed.extend(block);
        next = end;
    }
    blessed.extend(lines[next..].iter().map(|l| (*l).to_owned()));
    (problems, blessed.join("\n") + "\n")
}

/// Lines with what changes from run to run redacted (times, ids, durations, running counts, ECS
/// rollout states) and
/// runs of spaces inside a line (table columns) shortened, each with the index of its source
/// line; a line repeated right after itself once (a progress line printed again as a count
/// moved).
fn normalized<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    static REDACTIONS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", "[time]"),
            (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "[time]"),
            (r"ecs-svc/\d+", "ecs-svc/[n]"),
            (r"\d{8}T\d{9}-[0-9a-f]{8}", "[rollout]"),
            (r"\b\d+(s|m\d{2}s|h\d{2}m|d\d{2}h)\b", "[dur]"),
            (r#""(\w*seconds)": \d+"#, r#""$1": [n]"#),
            (r"\d+/\d+ running", "[n]/[n] running"),
            // ECS may mark a rollout FAILED before Conveyor has acted on it: how often the watch
            // prints a progress line before the rollback depends on timing.
            (r"running, (IN_PROGRESS|FAILED|COMPLETED)$", "running, [rollout state]"),
            (r"(\S) {2,}", "$1  "),
        ]
        .into_iter()
        .map(|(pattern, with)| (Regex::new(pattern).unwrap(), with))
        .collect()
    });
    let mut out: Vec<(String, usize)> = Vec::new();
    for (source, line) in lines.enumerate() {
        let mut line = line.trim_end().to_owned();
        for (pattern, with) in REDACTIONS.iter() {
            line = pattern.replace_all(&line, *with).into_owned();
        }
        if out.last().is_none_or(|(last, _)| *last != line) {
            out.push((line, source));
        }
    }
    out
}

/// Whether `printed` is what `shown` shows, a `...` line of `shown` standing for one or more
/// printed lines: for each shown line, the printed line it is (`None`: a `...` line).
fn align(shown: &[(String, usize)], printed: &[(String, usize)]) -> Option<Vec<Option<usize>>> {
    let (n, m) = (shown.len(), printed.len());
    let elided = |i: usize| shown[i].0.contains("...");
    // reach[i][j]: the first i shown lines stand for the first j printed lines.
    let mut reach = vec![vec![false; m + 1]; n + 1];
    reach[0][0] = true;
    for i in 1..=n {
        for j in 1..=m {
            reach[i][j] = if elided(i - 1) {
                reach[i - 1][j - 1] || reach[i][j - 1]
            } else {
                reach[i - 1][j - 1] && shown[i - 1].0 == printed[j - 1].0
            };
        }
    }
    if !reach[n][m] {
        return None;
    }
    let (mut alignment, mut j) = (vec![None; n], m);
    for i in (1..=n).rev() {
        if elided(i - 1) {
            // Back to where this `...` began.
            while !reach[i - 1][j - 1] {
                j -= 1;
            }
        } else {
            alignment[i - 1] = Some(j - 1);
        }
        j -= 1;
    }
    Some(alignment)
}

#[test]
fn an_elided_example_matches_what_it_abridges_and_nothing_else() {
    let lines = |text: &str| normalized(text.lines());
    let printed = lines("{\n  \"a\": 1,\n  \"b\": [\n    2\n  ]\n}");
    let matched = |shown: &str| align(&lines(shown), &printed);
    assert_eq!(matched("{\n  \"a\": 1,\n  \"b\": [\n    2\n  ]\n}"), Some((0..6).map(Some).collect()));
    assert_eq!(matched("{\n  \"a\": 1,\n  \"b\": [ ... ]\n}"), Some(vec![Some(0), Some(1), None, Some(5)]));
    assert_eq!(matched("{\n  ...\n}"), Some(vec![Some(0), None, Some(5)]));
    assert_eq!(matched("{\n  \"a\": 2,\n  ...\n}"), None);
    // Each `...` stands for one line at least (repeated ones are one).
    assert_eq!(matched("{\n  \"a\": 1,\n  ... b\n  ... c\n  ... d\n  ... e\n}"), None);
    assert!(matched("{\n  \"a\": 1,\n  ...\n  ...\n}").is_some());
    let at = |time: &str| lines(&format!("verified at {time} after 2s, ecs-svc/123 0/3 running"));
    assert_eq!(at("2026-11-22T05:32:45Z")[0].0, at("2027-01-01T00:00:00.123+00:00")[0].0);
    let progress = |state: &str| format!("a prod v1 a-prod:4: in_progress; deployment ecs-svc/1 0/3 running, {state}");
    assert_eq!(lines(&[progress("IN_PROGRESS"), progress("FAILED")].join("\n")).len(), 1);
}

/// Table lines (` APP  ENV ...`: one leading blank) with their columns padded again, after names
/// got shorter.
fn realign(text: &str) -> String {
    let columns = Regex::new(r"\S(?: ?\S)*").unwrap();
    let mut out: Vec<String> = Vec::new();
    let mut block: Vec<Vec<String>> = Vec::new();
    let flush = |block: &mut Vec<Vec<String>>, out: &mut Vec<String>| {
        let widths: Vec<usize> = (0..block.iter().map(Vec::len).max().unwrap_or(0))
            .map(|i| block.iter().filter_map(|row| row.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
            .collect();
        for row in block.drain(..) {
            let cells: Vec<String> =
                row.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = widths[i])).collect();
            out.push(format!(" {}", cells.join("  ")).trim_end().to_owned());
        }
    };
    for line in text.lines() {
        let table_line = line.starts_with(' ') && !line.starts_with("  ") || line.starts_with("  TAG");
        if table_line {
            let mut cells: Vec<String> = columns.find_iter(line).map(|m| m.as_str().to_owned()).collect();
            if line.starts_with("  TAG") {
                cells.insert(0, String::new());
            }
            block.push(cells);
        } else {
            flush(&mut block, &mut out);
            out.push(line.to_owned());
        }
    }
    flush(&mut block, &mut out);
    out.join("\n") + "\n"
}
