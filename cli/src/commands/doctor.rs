//! `conveyor doctor [APP]`: checks a live installation and each app's setup (the library's
//! `ops::doctor` judges), one line per check with what to fix. Reads only.

use std::collections::BTreeMap;

use conveyor::aws::AwsError;
use conveyor::config::{AppConfig, Home, ServiceTarget};
use conveyor::fleet::Fleet;
use conveyor::ledger::ItemKey;
use conveyor::ops::doctor::{self, Check, CheckName, ForwardingRule, HookNames, Verdict};
use serde_json::json;

use super::{configs, find_app};
use crate::context::Context;
use crate::error::{CliError, AWS_OR_CONFIG, DONE};
use crate::output::{render, Report, Tone};

const INSTALL: &str = "install";

pub async fn run(ctx: &Context, app: Option<&str>) -> Result<Report, CliError> {
    let names = ctx.names().await?;
    let mut checks = install(ctx).await;
    checks.extend(rules(ctx).await);
    let set = configs(ctx).await?;
    let apps = match app {
        Some(name) => vec![find_app(&set, name, &names.prefix)?],
        None => {
            for invalid in &set.invalid {
                checks.push(Check::fail(
                    invalid.error.parameter.trim_start_matches(&names.apps_path()),
                    CheckName::Config,
                    invalid.error.to_string(),
                    "fix it: `conveyor config validate` says the same before you put it",
                ));
            }
            set.apps.iter().collect()
        }
    };
    let home = home(ctx).await;
    let fleet = ctx.fleet()?;
    let hook =
        HookNames { function_arn: names.hook_function_arn.clone(), invoke_role_arn: names.hook_role_arn.clone() };
    for app in &apps {
        checks.push(Check::pass(app.name.as_str(), CheckName::Config, format!("{} is valid", app.parameter)));
        for (env, _, target) in app.pipeline.targets() {
            checks.extend(doctor::target_checks(&fleet, &home, app, env, target, &hook).await);
        }
    }
    checks.extend(forwarding(ctx, &fleet, &home, &apps).await);
    let healthy = doctor::healthy(&checks);
    let count = |verdict| checks.iter().filter(|c| c.verdict == verdict).count();
    let (passed, warned, failed) = (count(Verdict::Pass), count(Verdict::Warn), count(Verdict::Fail));
    let text = format!("{}\n\n{passed} passed, {warned} warned, {failed} failed", table(ctx, &checks));
    Ok(Report {
        json: json!({ "healthy": healthy, "checks": checks }),
        text,
        // A failed check is a setup to fix, as a configuration error is.
        exit_code: if healthy { DONE } else { AWS_OR_CONFIG },
    })
}

/// The installation itself: its names, the state table, the functions.
async fn install(ctx: &Context) -> Vec<Check> {
    let names = match ctx.names().await {
        Ok(names) => names,
        Err(error) => return vec![Check::fail(INSTALL, CheckName::Names, error.message, "give --stack NAME")],
    };
    let mut checks = Vec::new();
    match names.table() {
        Ok(table) => checks.push(match ctx.ledger().await {
            Ok(ledger) => match ledger.item(&ItemKey::config("doctor")).await {
                Ok(_) => Check::pass(INSTALL, CheckName::StateTable, format!("{table} is readable")),
                Err(error) => Check::fail(
                    INSTALL,
                    CheckName::StateTable,
                    error.to_string(),
                    "deploy the stack, or name it with --stack",
                ),
            },
            Err(error) => Check::fail(INSTALL, CheckName::StateTable, error.message, "give a region"),
        }),
        Err(error) => checks.push(Check::fail(INSTALL, CheckName::Names, error.message, "give --stack NAME")),
    }
    let functions = [
        ("promote", names.promote_function()),
        ("stage-deploy", names.stage_deploy_function()),
        ("deploy-hook", names.hook_function_arn.as_deref().ok_or_else(|| CliError::config("not known"))),
    ];
    let lambda = match ctx.lambda() {
        Ok(lambda) => lambda,
        Err(error) => return vec![Check::fail(INSTALL, CheckName::Function, error.message, "give a region")],
    };
    for (role, function) in functions {
        let Ok(function) = function else {
            if role != "deploy-hook" {
                checks.push(Check::fail(
                    INSTALL,
                    CheckName::Names,
                    format!("no {role} function is known"),
                    "give --stack NAME",
                ));
            }
            continue;
        };
        checks.push(match lambda.get_function_configuration().function_name(function).send().await {
            Ok(found) => Check::pass(
                INSTALL,
                CheckName::Function,
                format!(
                    "{role}: {} ({})",
                    found.function_name().unwrap_or(function),
                    found.state().map_or("?", |s| s.as_str())
                ),
            ),
            Err(error) => Check::fail(
                INSTALL,
                CheckName::Function,
                format!("{role}: {}", AwsError::from_sdk("GetFunctionConfiguration", error)),
                "deploy the stack, or name the function (--stack, or the CONVEYOR_* variables)",
            ),
        });
    }
    checks
}

/// The rules that bring Conveyor its events, by their names in `infra/template.yaml`.
const RULES: [&str; 5] = ["EcrPushRule", "EcsDeploymentRule", "AlarmStateRule", "SweepRule", "SoakTimerRule"];

/// With `--stack`: the stack's EventBridge rules exist (created or updated, not failed or
/// deleted). Without a stack, the rules are not known here: no row.
async fn rules(ctx: &Context) -> Vec<Check> {
    let (Some(stack), Ok(sdk)) = (ctx.stack(), ctx.sdk()) else { return Vec::new() };
    let described = aws_sdk_cloudformation::Client::new(sdk).describe_stack_resources().stack_name(stack).send().await;
    let resources = match described {
        Ok(output) => output.stack_resources.unwrap_or_default(),
        Err(error) => {
            let error = AwsError::from_sdk("DescribeStackResources", error);
            let fix = "let this identity describe the stack (cloudformation:DescribeStackResources)";
            return vec![Check::fail(INSTALL, CheckName::Rules, error.to_string(), fix)];
        }
    };
    RULES
        .iter()
        .map(|rule| {
            let found = resources.iter().find(|r| r.logical_resource_id() == Some(*rule));
            let status = found.and_then(|r| r.resource_status()).map_or("", |s| s.as_str());
            match found {
                Some(resource) if status.ends_with("_COMPLETE") && !status.starts_with("DELETE") => {
                    let name = resource.physical_resource_id().unwrap_or(rule);
                    Check::pass(INSTALL, CheckName::Rules, format!("{rule}: {name} ({status})"))
                }
                Some(_) => Check::fail(
                    INSTALL,
                    CheckName::Rules,
                    format!("{rule} of stack {stack} is {status}"),
                    "deploy the stack again (sam deploy)",
                ),
                None => Check::fail(
                    INSTALL,
                    CheckName::Rules,
                    format!("stack {stack} has no {rule}"),
                    "update the stack with this version's infra/template.yaml (sam deploy)",
                ),
            }
        })
        .collect()
}

/// Every account and region the apps' targets run in other than Conveyor's own: there, the
/// target-account stack's rule must forward ECS's events to Conveyor's bus (one check each, read
/// with the first target's role there, as people read: its read-only role). The rule's name
/// takes the stack's: `--stack`, else the one the targets' roles are named after.
async fn forwarding(ctx: &Context, fleet: &Fleet, home: &Home, apps: &[&AppConfig]) -> Vec<Check> {
    let targets: Vec<&ServiceTarget> = apps.iter().flat_map(|app| app.pipeline.targets().map(|(_, _, t)| t)).collect();
    let mut places: BTreeMap<(String, String), Option<&str>> = BTreeMap::new();
    for target in &targets {
        let account = target.account.as_ref().or(home.account.as_ref());
        let region = target.region.as_ref().or(home.region.as_ref());
        let (Some(account), Some(region)) = (account, region) else { continue };
        if home.account.as_ref() == Some(account) && home.region.as_ref() == Some(region) {
            continue;
        }
        places.entry((account.clone(), region.clone())).or_insert(target.role_arn.as_deref());
    }
    let stack =
        ctx.stack().or_else(|| targets.iter().find_map(|t| t.role_arn.as_deref().and_then(doctor::stack_of_role)));
    let mut checks = Vec::new();
    for ((account, region), role) in places {
        let Some(stack) = stack else {
            checks.push(Check::warn(
                &format!("account {account} {region}"),
                CheckName::Forwarding,
                "the stack's name is unknown, and with it the forwarding rule's",
                "give --stack NAME",
            ));
            continue;
        };
        let role = role.map(|role| fleet.role_for(role));
        let events =
            aws_sdk_eventbridge::Client::new(&fleet.config_for(role.as_deref(), Some(&region), "doctor").await);
        let found = forwarding_rule(&events, &doctor::forwarding_rule_name(stack)).await;
        checks.push(doctor::judge_forwarding((&account, &region), stack, home, found));
    }
    checks
}

/// The rule `name`, its state and targets (`Ok(None)`: no such rule). Two reads.
async fn forwarding_rule(events: &aws_sdk_eventbridge::Client, name: &str) -> Result<Option<ForwardingRule>, String> {
    let described = match events.describe_rule().name(name).send().await {
        Ok(described) => described,
        Err(error) => {
            let error = AwsError::from_sdk("DescribeRule", error);
            return if error.code == "ResourceNotFoundException" { Ok(None) } else { Err(error.to_string()) };
        }
    };
    let listed = events
        .list_targets_by_rule()
        .rule(name)
        .send()
        .await
        .map_err(|error| AwsError::from_sdk("ListTargetsByRule", error).to_string())?;
    Ok(Some(ForwardingRule {
        state: described.state().map_or("unknown", |state| state.as_str()).to_owned(),
        targets: listed.targets().iter().map(|target| target.arn().to_owned()).collect(),
    }))
}

/// Conveyor's account and region, as the caller's identity says (a registry defaults to it).
async fn home(ctx: &Context) -> Home {
    let region = ctx.sdk().ok().and_then(|sdk| sdk.region().map(|r| r.as_ref().to_owned()));
    let account = match ctx.sdk() {
        Ok(sdk) => aws_sdk_sts::Client::new(sdk).get_caller_identity().send().await.ok().and_then(|id| id.account),
        Err(_) => None,
    };
    Home { account, region }
}

/// One row per check; below, what to fix, for every check that did not pass.
fn table(ctx: &Context, checks: &[Check]) -> String {
    let style = &ctx.style;
    let mut table = style.table(&["RESULT", "SCOPE", "CHECK", "DETAIL"]);
    for check in checks {
        let tone = match check.verdict {
            Verdict::Pass => Tone::Good,
            Verdict::Warn => Tone::Attention,
            Verdict::Fail => Tone::Bad,
        };
        table.add_row(vec![
            style.state(check.verdict.as_str(), tone),
            style.cell(&check.scope, None),
            style.cell(check.check.as_str(), None),
            style.cell(&check.detail, None),
        ]);
    }
    let mut text = render(&table);
    let fixes: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            Some(format!("- {} {} {}: {}", c.verdict.as_str(), c.scope, c.check.as_str(), c.fix.as_deref()?))
        })
        .collect();
    if !fixes.is_empty() {
        text.push_str("\n\nto fix:\n");
        text.push_str(&fixes.join("\n"));
    }
    text
}
