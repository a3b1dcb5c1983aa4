//! `conveyor doctor`: whether each app's setup lets Conveyor do what it promises, one check at a
//! time, each with what to fix. The judging is pure ([`judge_service`]); [`target_checks`] reads
//! what it judges (with the narrow clients a target gives) and never changes anything.

use aws_sdk_ecs::types::{
    DeploymentControllerType, DeploymentLifecycleHookStage, DeploymentStrategy, LoadBalancer, TaskDefinition,
};
use serde::Serialize;

use crate::aws::ServiceSetup;
use crate::config::{AppConfig, EnvironmentConfig, Home, ServiceTarget};
use crate::fleet::Fleet;
use crate::pull::PullAccess;
use crate::taskdef;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// Works, but less well than it could (a failure seen late, a check that could not be made).
    Warn,
    /// Conveyor cannot do its job here until it is fixed.
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CheckName {
    /// The installation's names (state table, functions) are known.
    Names,
    StateTable,
    Function,
    /// The stack's EventBridge rules (with `--stack`).
    Rules,
    /// The app's config in SSM is valid.
    Config,
    /// The target's role can be assumed (a target in another account).
    Role,
    Service,
    Controller,
    Container,
    Image,
    CircuitBreaker,
    Pull,
    Alarms,
    /// Native strategies: Conveyor's hook is registered for the traffic-shift stages.
    Hook,
    /// Native strategies: the load balancer's `advancedConfiguration`.
    LoadBalancer,
    /// Another account or region: its target-account stack forwards ECS's events to Conveyor.
    Forwarding,
}

impl CheckName {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One check: where, what, how it came out, what was found and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `install`, `{app}`, or `{app} {env} {cluster}/{service}`.
    pub scope: String,
    pub check: CheckName,
    pub verdict: Verdict,
    pub detail: String,
    /// What to change (`None` on a pass).
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(scope: &str, check: CheckName, detail: impl Into<String>) -> Self {
        Check { scope: scope.to_owned(), check, verdict: Verdict::Pass, detail: detail.into(), fix: None }
    }

    pub fn warn(scope: &str, check: CheckName, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check { scope: scope.to_owned(), check, verdict: Verdict::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }

    pub fn fail(scope: &str, check: CheckName, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check { scope: scope.to_owned(), check, verdict: Verdict::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// What the installation provides to native deployments, when it is known (the stack's outputs).
#[derive(Debug, Clone, Default)]
pub struct HookNames {
    pub function_arn: Option<String>,
    pub invoke_role_arn: Option<String>,
}

/// The target-account stack's rule forwarding ECS's deployment and hook events to Conveyor's bus
/// (`conveyor-{stack}-deployments`), as EventBridge describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingRule {
    /// `ENABLED`, `DISABLED`…
    pub state: String,
    /// Its targets' ARNs.
    pub targets: Vec<String>,
}

/// The name of that rule (`infra/target-account.yaml`).
pub fn forwarding_rule_name(stack: &str) -> String {
    format!("conveyor-{stack}-deployments")
}

/// The stack whose roles a target's role is (`conveyor-{stack}-stage` or `-prod`, the names
/// `infra/target-account.yaml` gives them).
pub fn stack_of_role(role_arn: &str) -> Option<&str> {
    // A role's path comes before its name: `role/{path/}conveyor-{stack}-prod`.
    let name = role_arn.rsplit_once(":role/")?.1.rsplit('/').next()?;
    let stem = name.strip_suffix("-stage").or_else(|| name.strip_suffix("-prod"))?;
    stem.strip_prefix("conveyor-").filter(|stack| !stack.is_empty())
}

/// Judges what the target account's region says of its forwarding rule (`Ok(None)`: no such
/// rule; `Err`: it could not be read) against Conveyor's bus (`home`). Without its events,
/// rollouts there settle only by the sweep, minutes late, and pause hooks are never asked.
pub fn judge_forwarding(
    (account, region): (&str, &str),
    stack: &str,
    home: &Home,
    found: Result<Option<ForwardingRule>, String>,
) -> Check {
    let scope = format!("account {account} {region}");
    let rule = forwarding_rule_name(stack);
    let (Some(home_account), Some(home_region)) = (home.account.as_deref(), home.region.as_deref()) else {
        return Check::warn(
            &scope,
            CheckName::Forwarding,
            "Conveyor's account is unknown",
            "run with credentials of Conveyor's account",
        );
    };
    let bus = format!(":events:{home_region}:{home_account}:event-bus/default");
    let deploy = format!(
        "deploy infra/target-account.yaml in account {account}, region {region}, with ConveyorStackName={stack}, ConveyorAccountId={home_account} and ConveyorRegion={home_region}"
    );
    match found {
        // `ENABLED`, or `ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS`: it forwards.
        Ok(Some(found)) if !found.state.starts_with("ENABLED") => Check::fail(
            &scope,
            CheckName::Forwarding,
            format!("rule {rule} is {}: ECS's events stay in {region}", found.state),
            format!("enable it: aws events enable-rule --name {rule} --region {region}"),
        ),
        Ok(Some(found)) => match found.targets.iter().find(|target| target.ends_with(&bus)) {
            Some(_) => Check::pass(&scope, CheckName::Forwarding, format!("rule {rule} forwards ECS's events to Conveyor's bus in {home_region}")),
            None => Check::fail(
                &scope,
                CheckName::Forwarding,
                format!(
                    "rule {rule} forwards to {}, not to Conveyor's bus in account {home_account}, {home_region}: rollouts there settle only by the sweep",
                    if found.targets.is_empty() { "nothing".to_owned() } else { found.targets.join(", ") }
                ),
                deploy,
            ),
        },
        Ok(None) => Check::fail(
            &scope,
            CheckName::Forwarding,
            format!("no rule {rule}: ECS's events there never reach Conveyor (rollouts settle only by the sweep)"),
            deploy,
        ),
        Err(error) => Check::warn(
            &scope,
            CheckName::Forwarding,
            format!("rule {rule} could not be read: {error}"),
            "update the target-account stack (its read role may read the rule), or check the rule in that account",
        ),
    }
}

/// The scope of one target's checks.
pub fn scope_of(app: &AppConfig, env: &EnvironmentConfig, target: &ServiceTarget) -> String {
    format!("{} {} {}", app.name, env.name, target.label())
}

/// Every check of one target: read with the target's clients (its role, for another account),
/// then judged. A service that cannot be read ends the target's checks there.
pub async fn target_checks(
    fleet: &Fleet,
    home: &Home,
    app: &AppConfig,
    env: &EnvironmentConfig,
    target: &ServiceTarget,
    hook: &HookNames,
) -> Vec<Check> {
    let scope = scope_of(app, env, target);
    let role = target.role_arn.as_deref().map(|arn| fleet.role_for(arn));
    let reach = fleet.target(app, target).await;
    let mut checks = Vec::new();
    let setup = match reach.ecs.setup(&target.cluster, &target.service).await {
        Ok(setup) => setup,
        Err(error) if error.code == "ServiceNotFound" || error.code == "ClusterNotFoundException" => {
            if let Some(role) = &role {
                checks.push(Check::pass(&scope, CheckName::Role, format!("assumed {role}")));
            }
            let fix = format!(
                "create the service, or name the right one in `{}` of {}",
                env.target_path(target_index(env, target)),
                app.parameter
            );
            checks.push(Check::fail(&scope, CheckName::Service, error.message, fix));
            return checks;
        }
        Err(error) => {
            match &role {
                Some(role) if answered(&error) => {
                    checks.push(Check::pass(&scope, CheckName::Role, format!("assumed {role}")));
                    checks.push(Check::fail(&scope, CheckName::Service, error.to_string(), "see the error"));
                }
                // People read through the read-only role, which exists once the target-account
                // stack names them (the deploying roles trust only Conveyor's functions).
                Some(role) => checks.push(Check::warn(
                    &scope,
                    CheckName::Role,
                    format!("{role} could not be assumed with these credentials: {}", error.message),
                    format!(
                        "name your role in OperatorPrincipalArns of the target-account stack (infra/target-account.yaml) in account {}: it creates this read-only role",
                        target.account.as_deref().unwrap_or("?")
                    ),
                )),
                None => checks.push(Check::fail(&scope, CheckName::Service, error.to_string(), "see the error")),
            }
            return checks;
        }
    };
    if let Some(role) = &role {
        checks.push(Check::pass(&scope, CheckName::Role, format!("assumed {role}")));
    }
    match reach.revision(&setup.task_definition).await {
        Ok(described) => checks.extend(judge_service(&scope, app, &setup, &described.definition, hook)),
        Err(error) => checks.push(Check::fail(&scope, CheckName::Container, error.to_string(), "see the error")),
    }
    checks.push(pull_check(&scope, fleet, home, app, env, target).await);
    if !env.alarms.is_empty() {
        checks.push(match reach.alarms.read(&env.alarms).await {
            Ok(readings) => {
                let missing: Vec<&str> = env
                    .alarms
                    .iter()
                    .filter(|name| !readings.iter().any(|r| &&r.name == name))
                    .map(String::as_str)
                    .collect();
                if missing.is_empty() {
                    Check::pass(&scope, CheckName::Alarms, format!("{} exist", env.alarms.join(", ")))
                } else {
                    Check::fail(
                        &scope,
                        CheckName::Alarms,
                        format!("no alarm {} in the target's account and region", missing.join(", ")),
                        format!("create it, or fix `environments.{}.alarms` in {}", env.name, app.parameter),
                    )
                }
            }
            Err(error) => Check::fail(
                &scope,
                CheckName::Alarms,
                error.to_string(),
                "let Conveyor read the alarms (cloudwatch:DescribeAlarms)",
            ),
        });
    }
    checks
}

/// Whether the service itself answered (with an error), which the role's credentials must then
/// have reached: not a failure to get credentials or to connect.
fn answered(error: &crate::aws::AwsError) -> bool {
    !matches!(error.code.as_str(), "DispatchFailure" | "ConstructionFailure" | "ResponseError" | "Timeout")
}

fn target_index(env: &EnvironmentConfig, target: &ServiceTarget) -> usize {
    env.targets.iter().position(|t| t.same_service(target)).unwrap_or(0)
}

/// Whether the target's account can pull the app's images from its registry.
async fn pull_check(
    scope: &str,
    fleet: &Fleet,
    home: &Home,
    app: &AppConfig,
    env: &EnvironmentConfig,
    target: &ServiceTarget,
) -> Check {
    let Some(registry) = app.registry(home) else {
        return Check::warn(
            scope,
            CheckName::Pull,
            "Conveyor's account is unknown",
            "run with credentials of Conveyor's account",
        );
    };
    let account = target.account.clone().or_else(|| home.account.clone()).unwrap_or_else(|| registry.account.clone());
    let region = target.region.clone().or_else(|| home.region.clone()).unwrap_or_else(|| registry.region.clone());
    let pushed =
        crate::image::EcrImage { account: &registry.account, region: &registry.region, repository: &app.repository };
    match crate::pull::access(fleet, &pushed, env.name, &account, &region).await {
        PullAccess::SameAccount => {
            Check::pass(scope, CheckName::Pull, format!("{} is in the target's account", app.repository))
        }
        PullAccess::Policy => Check::pass(
            scope,
            CheckName::Pull,
            format!("the repository policy of {} lets {account} pull", app.repository),
        ),
        PullAccess::Replica { registry } => {
            Check::pass(scope, CheckName::Pull, format!("ECR replicates {} to {registry}", app.repository))
        }
        PullAccess::Unknown { why } => Check::warn(
            scope,
            CheckName::Pull,
            format!("the repository policy of {} cannot be read: {why}", app.repository),
            "let this identity read it (ecr:GetRepositoryPolicy), or check it in the registry's account",
        ),
        PullAccess::Denied(refusal) => Check::fail(
            scope,
            CheckName::Pull,
            format!(
                "account {account} cannot pull {} from account {}'s registry ({})",
                refusal.repository, refusal.registry_account, refusal.registry_region
            ),
            format!(
                "add to the repository policy of {}: {}, or replicate the repository to {account} in {region}",
                refusal.repository, refusal.statement
            ),
        ),
    }
}

/// Judges a service's setup and the task definition it runs, for `app`.
pub fn judge_service(
    scope: &str,
    app: &AppConfig,
    setup: &ServiceSetup,
    definition: &TaskDefinition,
    hook: &HookNames,
) -> Vec<Check> {
    let revision = crate::notify::short_arn(&setup.task_definition).to_owned();
    let mut checks = vec![Check::pass(scope, CheckName::Service, format!("ACTIVE, on {revision}"))];
    checks.push(match &setup.controller {
        None | Some(DeploymentControllerType::Ecs) => Check::pass(scope, CheckName::Controller, "ECS"),
        Some(other) => Check::fail(
            scope,
            CheckName::Controller,
            format!("the {} deployment controller: ECS refuses Conveyor's UpdateService for it", other.as_str()),
            "recreate the service with deploymentController ECS (blue/green: ECS's own BLUE_GREEN strategy, with Conveyor as its lifecycle hook)",
        ),
    });
    let image = match taskdef::container_image(definition, &app.container) {
        Some(image) => {
            checks.push(Check::pass(
                scope,
                CheckName::Container,
                format!("{revision} has container {}", app.container),
            ));
            image
        }
        None => {
            checks.push(Check::fail(
                scope,
                CheckName::Container,
                format!(
                    "{revision} has no container {} (it has: {})",
                    app.container,
                    taskdef::container_names(definition).join(", ")
                ),
                format!("set `container` in {} to the container that runs the app", app.parameter),
            ));
            ""
        }
    };
    if !image.is_empty() {
        checks.push(match crate::image::ecr_parts(image) {
            Some(parts) if parts.repository == app.repository => {
                Check::pass(scope, CheckName::Image, format!("{} from ECR", app.repository))
            }
            Some(parts) => Check::warn(
                scope,
                CheckName::Image,
                format!("the container runs {}, the app deploys {}", parts.repository, app.repository),
                format!("check `repository` in {}: the next rollout replaces the image by one of it", app.parameter),
            ),
            None => Check::warn(
                scope,
                CheckName::Image,
                format!("the container runs {image}, not an ECR image"),
                format!("the first rollout replaces it by {} from ECR: push there", app.repository),
            ),
        });
    }
    let timeout = crate::config::show_duration(app.rollout_timeout);
    checks.push(match &setup.circuit_breaker {
        Some(breaker) if breaker.enable => {
            Check::pass(scope, CheckName::CircuitBreaker, if breaker.rollback { "on, with rollback" } else { "on" })
        }
        _ => Check::warn(
            scope,
            CheckName::CircuitBreaker,
            format!("off: a rollout whose tasks never start fails only when the rollout timeout ({timeout}) passes"),
            "turn it on: deploymentConfiguration.deploymentCircuitBreaker {\"enable\": true, \"rollback\": true}",
        ),
    });
    if matches!(
        setup.strategy,
        Some(DeploymentStrategy::BlueGreen | DeploymentStrategy::Linear | DeploymentStrategy::Canary)
    ) {
        checks.push(hook_check(scope, setup, hook));
        checks.extend(setup.load_balancers.iter().filter_map(|lb| load_balancer_check(scope, lb)));
    }
    checks
}

/// Conveyor's hook on the traffic-shift stages: what keeps a bad image from production traffic.
fn hook_check(scope: &str, setup: &ServiceSetup, hook: &HookNames) -> Check {
    let strategy = setup.strategy.as_ref().map_or("", |s| s.as_str());
    let shifts =
        [DeploymentLifecycleHookStage::PostTestTrafficShift, DeploymentLifecycleHookStage::PreProductionTrafficShift];
    let ours = |target: Option<&str>| match (&hook.function_arn, target) {
        (Some(function), Some(target)) => target == function || target.starts_with(&format!("{function}:")),
        (None, Some(_)) => true,
        (_, None) => false,
    };
    let registered = setup
        .hooks
        .iter()
        .find(|h| ours(h.hook_target_arn.as_deref()) && h.lifecycle_stages().iter().any(|s| shifts.contains(s)));
    let wanted = format!(
        "lifecycleHooks [{{\"hookTargetArn\": \"{}\", \"roleArn\": \"{}\", \"lifecycleStages\": [\"POST_TEST_TRAFFIC_SHIFT\", \"PRE_PRODUCTION_TRAFFIC_SHIFT\"]}}] (the stack's outputs DeployHookFunctionArn and EcsHookInvokeRoleArn)",
        hook.function_arn.as_deref().unwrap_or("DeployHookFunctionArn"),
        hook.invoke_role_arn.as_deref().unwrap_or("EcsHookInvokeRoleArn")
    );
    let Some(registered) = registered else {
        return Check::warn(
            scope,
            CheckName::Hook,
            format!("{strategy}: Conveyor's hook is not registered, so it judges the image only after production traffic has moved"),
            format!("add to the service's deploymentConfiguration: {wanted}"),
        );
    };
    let stages: Vec<&str> = registered.lifecycle_stages().iter().map(|s| s.as_str()).collect();
    match (&hook.invoke_role_arn, registered.role_arn.as_deref()) {
        (Some(expected), Some(role)) if expected != role => Check::warn(
            scope,
            CheckName::Hook,
            format!("the hook is invoked with {role}, not the stack's role {expected}"),
            "use the stack's EcsHookInvokeRoleArn: it trusts ECS and may invoke only the hook",
        ),
        _ if hook.function_arn.is_none() => Check::warn(
            scope,
            CheckName::Hook,
            format!("a hook is registered for {} (which function is not known here)", stages.join(", ")),
            "give --stack so that the hook's ARN is known",
        ),
        _ => Check::pass(scope, CheckName::Hook, format!("{strategy}, Conveyor's hook at {}", stages.join(", "))),
    }
}

/// A load balancer's `advancedConfiguration` as native strategies need it: listener *rule* ARNs,
/// distinct production and test rules, an alternate target group other than the primary one.
fn load_balancer_check(scope: &str, lb: &LoadBalancer) -> Option<Check> {
    let target_group = lb.target_group_arn.as_deref()?;
    let fix = "advancedConfiguration takes listener rule ARNs (…:listener-rule/…), a test rule other than the production rule, and an alternate target group other than targetGroupArn";
    let Some(advanced) = &lb.advanced_configuration else {
        return Some(Check::fail(
            scope,
            CheckName::LoadBalancer,
            format!("{} has no advancedConfiguration", short(target_group)),
            fix,
        ));
    };
    let mut problems = Vec::new();
    for (what, rule) in [
        ("productionListenerRule", advanced.production_listener_rule.as_deref()),
        ("testListenerRule", advanced.test_listener_rule.as_deref()),
    ] {
        match rule {
            Some(rule) if !rule.contains(":listener-rule/") => {
                problems.push(format!("{what} is not a listener rule ARN ({rule})"));
            }
            None if what == "productionListenerRule" => problems.push(format!("{what} is missing")),
            _ => {}
        }
    }
    if advanced.test_listener_rule.is_some() && advanced.test_listener_rule == advanced.production_listener_rule {
        problems.push("the test and production listener rules are the same".to_owned());
    }
    match advanced.alternate_target_group_arn.as_deref() {
        None => problems.push("alternateTargetGroupArn is missing".to_owned()),
        Some(alternate) if alternate == target_group => {
            problems.push("alternateTargetGroupArn is the primary target group".to_owned())
        }
        Some(_) => {}
    }
    Some(if problems.is_empty() {
        Check::pass(
            scope,
            CheckName::LoadBalancer,
            format!("{}: listener rules and alternate target group", short(target_group)),
        )
    } else {
        Check::fail(scope, CheckName::LoadBalancer, problems.join("; "), fix)
    })
}

fn short(arn: &str) -> &str {
    arn.rsplit_once(':').map_or(arn, |(_, last)| last)
}

/// Whether every check passed or only warned.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.verdict != Verdict::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{
        AdvancedConfiguration, ContainerDefinition, DeploymentCircuitBreaker, DeploymentLifecycleHook,
    };

    const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop@sha256:aa";
    const HOOK: &str = "arn:aws:lambda:us-east-1:123456789012:function:conveyor-hook";

    fn definition(container: &str, image: &str) -> TaskDefinition {
        TaskDefinition::builder()
            .task_definition_arn("arn:aws:ecs:us-east-1:123456789012:task-definition/shop:7")
            .container_definitions(ContainerDefinition::builder().name(container).image(image).build())
            .build()
    }

    fn setup() -> ServiceSetup {
        ServiceSetup {
            task_definition: "arn:aws:ecs:us-east-1:123456789012:task-definition/shop:7".into(),
            controller: None,
            strategy: None,
            circuit_breaker: Some(DeploymentCircuitBreaker::builder().enable(true).rollback(true).build()),
            hooks: vec![],
            load_balancers: vec![],
        }
    }

    fn verdicts(checks: &[Check]) -> Vec<(&'static str, &'static str)> {
        checks.iter().map(|c| (c.check.as_str(), c.verdict.as_str())).collect()
    }

    fn judged(setup: &ServiceSetup, definition: &TaskDefinition, hook: &HookNames) -> Vec<Check> {
        judge_service("shop stage stage/shop", &crate::fixtures::app(), setup, definition, hook)
    }

    #[test]
    fn a_rolling_service_set_up_as_conveyor_needs_passes() {
        let checks = judged(&setup(), &definition("api", IMAGE), &HookNames::default());
        assert_eq!(
            verdicts(&checks),
            [
                ("service", "pass"),
                ("controller", "pass"),
                ("container", "pass"),
                ("image", "pass"),
                ("circuit_breaker", "pass")
            ]
        );
        assert!(healthy(&checks));
    }

    #[test]
    fn a_target_accounts_rule_must_forward_to_conveyors_bus() {
        assert_eq!(stack_of_role("arn:aws:iam::2:role/conveyor-my-stack-prod"), Some("my-stack"));
        assert_eq!(stack_of_role("arn:aws:iam::2:role/platform/conveyor-conveyor-stage"), Some("conveyor"));
        assert_eq!(stack_of_role("arn:aws:iam::2:role/deployers"), None);
        let home = Home { account: Some("1".into()), region: Some("us-east-1".into()) };
        let place = ("2", "eu-west-1");
        let rule =
            |state: &str, target: &str| Ok(Some(ForwardingRule { state: state.into(), targets: vec![target.into()] }));
        let judge = |found| judge_forwarding(place, "conveyor", &home, found);
        let ours = "arn:aws:events:us-east-1:1:event-bus/default";
        assert_eq!(judge(rule("ENABLED", ours)).verdict, Verdict::Pass);
        // Deployed without ConveyorRegion: the events go to the bus of the stack's own region.
        let elsewhere = judge(rule("ENABLED", "arn:aws:events:eu-west-1:1:event-bus/default"));
        assert_eq!(elsewhere.verdict, Verdict::Fail);
        assert!(elsewhere.fix.as_deref().unwrap().contains("ConveyorRegion=us-east-1"), "{elsewhere:?}");
        assert_eq!(judge(rule("DISABLED", ours)).verdict, Verdict::Fail);
        assert_eq!(judge(rule("ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS", ours)).verdict, Verdict::Pass);
        let missing = judge(Ok(None));
        assert_eq!((missing.verdict, missing.scope.as_str()), (Verdict::Fail, "account 2 eu-west-1"));
        assert!(missing.fix.as_deref().unwrap().starts_with("deploy infra/target-account.yaml in account 2"));
        assert_eq!(judge(Err("AccessDenied".into())).verdict, Verdict::Warn);
    }

    #[test]
    fn each_broken_setup_is_named_with_its_fix() {
        let code_deploy = ServiceSetup { controller: Some(DeploymentControllerType::CodeDeploy), ..setup() };
        let checks = judged(&code_deploy, &definition("api", IMAGE), &HookNames::default());
        assert_eq!(checks[1].verdict, Verdict::Fail);
        assert!(
            checks[1].detail.contains("CODE_DEPLOY")
                && checks[1].fix.as_ref().unwrap().contains("deploymentController ECS")
        );
        assert!(!healthy(&checks));

        let checks = judged(&setup(), &definition("web", IMAGE), &HookNames::default());
        let container = checks.iter().find(|c| c.check == CheckName::Container).unwrap();
        assert_eq!(
            (container.verdict, container.detail.as_str()),
            (Verdict::Fail, "shop:7 has no container api (it has: web)")
        );
        assert!(container.fix.as_ref().unwrap().contains("/conveyor/apps/shop"));

        let checks = judged(&setup(), &definition("api", "nginx:1.27"), &HookNames::default());
        let image = checks.iter().find(|c| c.check == CheckName::Image).unwrap();
        assert_eq!(image.verdict, Verdict::Warn);
        let other = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cart:v1";
        let checks = judged(&setup(), &definition("api", other), &HookNames::default());
        assert!(checks.iter().any(|c| c.check == CheckName::Image && c.detail.contains("runs cart")));

        let no_breaker = ServiceSetup { circuit_breaker: None, ..setup() };
        let checks = judged(&no_breaker, &definition("api", IMAGE), &HookNames::default());
        let breaker = checks.iter().find(|c| c.check == CheckName::CircuitBreaker).unwrap();
        assert_eq!(breaker.verdict, Verdict::Warn);
        assert!(breaker.detail.contains("rollout timeout (30m)"), "{}", breaker.detail);
        assert!(healthy(&checks), "a warning is no failure");
    }

    #[test]
    fn a_native_service_needs_conveyors_hook_and_a_valid_advanced_configuration() {
        let names =
            HookNames { function_arn: Some(HOOK.into()), invoke_role_arn: Some("arn:aws:iam::1:role/invoke".into()) };
        let rule = |n: u8| format!("arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/app/shop/1/2/{n}");
        let lb = |production: String, test: String, alternate: &str| {
            LoadBalancer::builder()
                .target_group_arn("arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/blue/1")
                .advanced_configuration(
                    AdvancedConfiguration::builder()
                        .production_listener_rule(production)
                        .test_listener_rule(test)
                        .alternate_target_group_arn(alternate)
                        .role_arn("arn:aws:iam::1:role/ecs-elb")
                        .build(),
                )
                .build()
        };
        let hook = DeploymentLifecycleHook::builder()
            .hook_target_arn(HOOK)
            .role_arn("arn:aws:iam::1:role/invoke")
            .lifecycle_stages(DeploymentLifecycleHookStage::PostTestTrafficShift)
            .lifecycle_stages(DeploymentLifecycleHookStage::PreProductionTrafficShift)
            .build();
        let green = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/green/2";
        let native = ServiceSetup {
            strategy: Some(DeploymentStrategy::BlueGreen),
            hooks: vec![hook.clone()],
            load_balancers: vec![lb(rule(1), rule(2), green)],
            ..setup()
        };
        let checks = judged(&native, &definition("api", IMAGE), &names);
        assert_eq!(&verdicts(&checks)[5..], [("hook", "pass"), ("load_balancer", "pass")]);

        let unhooked = ServiceSetup { hooks: vec![], ..native.clone() };
        let checks = judged(&unhooked, &definition("api", IMAGE), &names);
        let check = checks.iter().find(|c| c.check == CheckName::Hook).unwrap();
        assert_eq!(check.verdict, Verdict::Warn);
        assert!(check.fix.as_ref().unwrap().contains(HOOK), "{check:?}");

        let listener = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/shop/1/2".to_owned();
        for (broken, why) in [
            (lb(listener.clone(), rule(2), green), "productionListenerRule is not a listener rule ARN"),
            (lb(rule(1), rule(1), green), "the test and production listener rules are the same"),
            (
                lb(rule(1), rule(2), "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/blue/1"),
                "alternateTargetGroupArn is the primary",
            ),
        ] {
            let checks = judged(
                &ServiceSetup { load_balancers: vec![broken], ..native.clone() },
                &definition("api", IMAGE),
                &names,
            );
            let check = checks.iter().find(|c| c.check == CheckName::LoadBalancer).unwrap();
            assert_eq!(check.verdict, Verdict::Fail);
            assert!(check.detail.contains(why), "{check:?}");
        }
    }
}
