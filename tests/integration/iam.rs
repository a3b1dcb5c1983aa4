//! IAM proven, not hoped (issue 20, finding 7). The local AWS enforces no IAM, so this test does
//! what AWS would: representative scenarios run through the real binaries and the built `conveyor`
//! CLI, each with its own credentials ([`conveyor_testkit::principals`]); the local AWS keeps every
//! call with its caller (a role assumed in the prod account included), and
//! `tests/localaws/iam_policy.py` evaluates `infra/template.yaml` and `infra/target-account.yaml`,
//! resolved for the scenario's resources, against each call — action, resource ARN, account,
//! region, conditions.
//!
//! Fails on any call a function's policy (or a role it assumes) would deny, on any call of the
//! CLI the templates deny anyone (a trust policy, a resource policy's Deny), and on any operation
//! the action table does not know. Prints, without failing, the statements no call needed (some
//! serve paths these scenarios do not take: say so or remove them) and the CLI's calls, writes
//! first: `docs/cli.md` states the operator's permissions as prose, so they are listed, not
//! evaluated. The CLI's `lambda:InvokeFunction` calls go to the local Lambda API, not the local
//! AWS, and are not listed.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use conveyor_testkit::accounts::{target_role, PROD_ACCOUNT};
use conveyor_testkit::iam::Verdict;
use conveyor_testkit::local_aws::{ACCOUNT, REGION};
use conveyor_testkit::principals::{GITHUB_PROMOTE, OPERATOR, PEOPLE};
use conveyor_testkit::scenario;
use conveyor_testkit::stack::LocalStack;
use conveyor_testkit::world::execution_role;
use conveyor_testkit::World;
use serde_json::{json, Value};

/// Denials the boundary means: principal, action, why. Listed in the summary each time; every
/// other denial fails.
const DENIED_BY_DESIGN: &[(&str, &str, &str)] = &[(
    OPERATOR,
    "sts:AssumeRole",
    "a target account's stage and prod roles trust only Conveyor's functions (issue 20, finding 5): people \
     read the services there through the read-only role (conveyor-{stack}-read) the target-account stack \
     creates for the identities in OperatorPrincipalArns",
)];

#[tokio::test]
async fn every_call_the_scenarios_make_is_allowed_by_the_templates() {
    // Each boxed: twelve scenarios' futures side by side overflow the test thread's stack.
    let runs = tokio::join!(
        Box::pin(run("the demo story (push, verify, promote here and in another account with the CLI, a stage rollback, status, history)", demo_story)),
        Box::pin(run("the CLI docs' story (promote, a prod rollback, pause, resume --deploy-latest, rollback, config put)", |world| async {
            crate::cli_docs::story(world).await;
        })),
        Box::pin(run("prod in another account (a refused promotion, a promotion, a rollback there)", crate::cross_account::prod_in_another_account)),
        Box::pin(run("a deregistered rollback target registered again", crate::holes_monitor::deregistered_rollback_target)),
        Box::pin(run("prod in another region of this account (promote, verify)", crate::cross_account::prod_in_another_region)),
        Box::pin(run("a rollout replaced outside Conveyor, found by the sweep", crate::holes_monitor::superseded_by_the_sweep)),
        Box::pin(run("dev → stage (auto) → prod: an auto promotion by deploy-monitor, a promotion by hand", crate::pipelines::auto_promotion)),
        Box::pin(run("stage gated on an alarm that fires during the soak: rolled back on its event", crate::alarms::fired_during_the_soak)),
        Box::pin(run("stage gated on an alarm that fired and recovered unseen: rolled back at the soak's end", crate::alarms::recovered_unseen)),
        Box::pin(run("a blue/green service: a good image passes the hook, a bad one fails it", crate::native::blue_green_story)),
        Box::pin(run("a blue/green deployment in flight stopped by a rollback, then by the sweep", crate::native::rolled_back_in_flight)),
        Box::pin(run("pause hooks as approvals: continued, rolled back, a stale one refused", crate::native::pause_hooks_as_approvals)),
        Box::pin(run("GitHub Actions with the promote role: the stage gate (wait), then promote --wait", github_actions)),
    );
    let mut report = Report::default();
    let all =
        [runs.0, runs.1, runs.2, runs.3, runs.4, runs.5, runs.6, runs.7, runs.8, runs.9, runs.10, runs.11, runs.12];
    for (name, id, verdict) in all {
        report.add(&name, &id, verdict);
    }
    println!("{}", report.summary());
    let problems = report.problems();
    assert!(problems.is_empty(), "{}\n\n{}", problems.join("\n"), report.summary());
}

/// Runs `scenario` in a watched world; the world's id and the templates' verdict on its calls.
async fn run<F, Fut>(name: &str, scenario: F) -> (String, String, Verdict)
where
    F: FnOnce(World) -> Fut,
    Fut: Future<Output = ()>,
{
    let world = World::watched().await;
    scenario(world.clone()).await;
    (name.to_owned(), world.id.clone(), world.iam_verdict().await)
}

async fn demo_story(world: World) {
    let (moments, _timeline) = tokio::sync::mpsc::unbounded_channel();
    let stack = LocalStack::start(world, scenario::options(), moments).await;
    scenario::seed(&stack).await;
    scenario::story(&stack).await.unwrap_or_else(|problem| panic!("the demo story: {problem}"));
}

/// The workflows of examples/github-actions, with the promote role of infra/github-oidc.yaml: the
/// build job's stage gate (`conveyor wait`), then the promote job (`conveyor promote --wait`).
async fn github_actions(world: World) {
    let (moments, _timeline) = tokio::sync::mpsc::unbounded_channel();
    let stack = LocalStack::start(world, conveyor_testkit::stack::StackOptions::default(), moments).await;
    stack.world.seed_app("shop-api", "shop-api", false, json!({})).await;
    stack.push("shop-api", "v1.0.0", &conveyor_testkit::world::digest(1), chrono::Utc::now()).await;
    let gate = stack.cli_as(GITHUB_PROMOTE, &["wait", "shop-api", "v1.0.0", "--timeout", "60s"]).await;
    assert_eq!(gate.code, 0, "the stage gate: {gate:?}");
    let job = ["promote", "shop-api", "v1.0.0", "--reason", "GitHub Actions run 1", "--wait", "--timeout", "60s"];
    let promoted = stack.cli_as(GITHUB_PROMOTE, &job).await;
    assert_eq!(promoted.code, 0, "the promote job: {promoted:?}");
}

/// The verdicts of all scenarios, merged: a statement is needed if any scenario's call needed it.
#[derive(Default)]
struct Report {
    calls: u64,
    authorizations: u64,
    denied: Vec<String>,
    unmapped: Vec<String>,
    /// Denials by design (principal, action) => how many calls.
    known: BTreeMap<(String, String), u64>,
    /// The operator's calls: action and resource => (write, verdict, scenarios).
    operator: BTreeMap<(String, String), (bool, String, BTreeSet<String>)>,
    /// Statement id => (actions, actions some call needed).
    statements: BTreeMap<String, (Vec<String>, BTreeSet<String>)>,
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

impl Report {
    /// Adds a scenario's verdict; `id` is its world's id (left out of the operator's resources, so
    /// that one resource of several scenarios is listed once).
    fn add(&mut self, scenario: &str, id: &str, verdict: Verdict) {
        self.calls += verdict.calls;
        self.authorizations += verdict.authorizations;
        for denial in &verdict.denied {
            let (principal, action) = (text(&denial["principal"]), text(&denial["action"]));
            let known = DENIED_BY_DESIGN.iter().any(|(p, a, _)| principal == *p && *a == action);
            if PEOPLE.contains(&principal.as_str()) {
                self.note_operator(scenario, id, denial, if known { "DENIED, by design" } else { "DENIED" });
            }
            if known {
                *self.known.entry((principal, action)).or_default() += 1;
                continue;
            }
            self.denied.push(format!(
                "DENIED {principal} {action} on {} (account {}, {}; {}: {}) in {scenario}",
                text(&denial["resource"]),
                text(&denial["account"]),
                text(&denial["region"]),
                text(&denial["operation"]),
                text(&denial["why"]),
            ));
        }
        for call in &verdict.unknown {
            self.note_operator(scenario, id, call, "not evaluated");
        }
        for unmapped in &verdict.unmapped {
            self.unmapped.push(format!("UNMAPPED {} in {scenario}", text(&unmapped["error"])));
        }
        for statement in &verdict.statements {
            let entry = self.statements.entry(text(&statement["id"])).or_default();
            entry.0 = statement["actions"].as_array().into_iter().flatten().map(text).collect();
            entry.1.extend(statement["used_actions"].as_array().into_iter().flatten().map(text));
        }
    }

    fn note_operator(&mut self, scenario: &str, id: &str, call: &Value, verdict: &str) {
        let key = (text(&call["action"]), text(&call["resource"]).replace(&format!("-{id}"), ""));
        let entry = self.operator.entry(key).or_insert((call["write"] == true, verdict.to_owned(), BTreeSet::new()));
        entry.2.insert(scenario.to_owned());
    }

    fn problems(&self) -> Vec<String> {
        self.denied.iter().chain(&self.unmapped).cloned().collect()
    }

    fn summary(&self) -> String {
        let mut lines = vec![format!(
            "IAM: {} calls of the functions and the CLI, {} authorisations evaluated, {} denied, {} unmapped",
            self.calls,
            self.authorizations,
            self.denied.len(),
            self.unmapped.len()
        )];
        for ((principal, action), calls) in &self.known {
            let why = DENIED_BY_DESIGN.iter().find(|(p, a, _)| p == principal && a == action).map_or("", |k| k.2);
            lines.push(format!("Denied by design, {calls} call(s): {principal} {action}: {why}"));
        }
        lines.push("Statements no call needed:".into());
        for (id, (actions, used)) in &self.statements {
            if used.is_empty() {
                lines.push(format!("  {id}: {}", actions.join(", ")));
            }
        }
        lines.push("Actions of needed statements no call needed:".into());
        for (id, (actions, used)) in &self.statements {
            let unused: Vec<&str> = actions.iter().filter(|a| !used.contains(*a)).map(String::as_str).collect();
            if !used.is_empty() && !unused.is_empty() {
                lines.push(format!("  {id}: {}", unused.join(", ")));
            }
        }
        lines.push(
            "The CLI's calls (operator; docs/cli.md's permissions are prose, not evaluated), writes first:".into(),
        );
        let mut operator: Vec<_> = self.operator.iter().collect();
        operator.sort_by_key(|(key, (write, _, _))| (!*write, (*key).clone()));
        for ((action, resource), (write, verdict, _)) in operator {
            let kind = if *write { "WRITE" } else { "read " };
            lines.push(format!("  {kind} {action} on {resource} ({verdict})"));
        }
        lines.join("\n")
    }
}

/// What no scenario can show, because the binaries never try: each function kept to its side,
/// roles passed only as the templates say, the target role trusting only the functions.
#[tokio::test]
async fn the_templates_refuse_what_no_function_needs() {
    let world = World::new().await;
    let service = |cluster: &str| format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/{}/shop-api", world.name(cluster));
    let ecs_tasks = json!({ "iam:PassedToService": "ecs-tasks.amazonaws.com" });
    let role = execution_role(ACCOUNT);
    let cases = [
        ("stage-deploy", "ecs:UpdateService", service("prod"), json!({}), "denied"),
        ("promote", "ecs:UpdateService", service("stage"), json!({}), "denied"),
        ("deploy-monitor", "ecs:UpdateService", service("prod"), json!({}), "allowed"),
        ("stage-deploy", "iam:PassRole", format!("arn:aws:iam::{ACCOUNT}:role/admin"), ecs_tasks.clone(), "denied"),
        (
            "deploy-monitor",
            "iam:PassRole",
            role.clone(),
            json!({ "iam:PassedToService": "lambda.amazonaws.com" }),
            "denied",
        ),
        ("deploy-monitor", "iam:PassRole", role, ecs_tasks, "allowed"),
        (OPERATOR, "sts:AssumeRole", target_role(PROD_ACCOUNT), json!({}), "denied"),
        // The read role trusts the operators named (the operator's own policy is not modelled:
        // the trust admitting them leaves the verdict to it).
        (OPERATOR, "sts:AssumeRole", conveyor::fleet::read_role(&target_role(PROD_ACCOUNT)), json!({}), "unknown"),
        ("promote", "sts:AssumeRole", target_role(PROD_ACCOUNT), json!({}), "allowed"),
    ];
    let mut wrong = Vec::new();
    for (principal, action, resource, context, expected) in cases {
        let verdict = world.iam_decide(principal, action, &resource, context).await;
        if verdict != expected {
            wrong.push(format!("{principal} {action} on {resource}: {verdict}, not {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
