//! An app's pipeline: its environments, where each gets its images from (`from`), how images move
//! in (promotion, approval), where each runs (targets, one after another or all at once) and what
//! an image must survive there before it is vetted (soak, alarms). Contract, *Pipelines (v3)*.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use super::fields::{Fields, Problems};
use super::target::{ServiceTarget, TARGET_KEYS};
use crate::types::Environment;
use crate::web::Endpoints;

/// At most this many environments per app.
pub const MAX_ENVIRONMENTS: usize = 8;
/// At most this many targets per environment.
pub const MAX_TARGETS: usize = 10;
/// At most this many alarms per environment.
pub const MAX_ALARMS: usize = 10;
/// The longest `soak`.
pub const MAX_SOAK: Duration = Duration::from_secs(24 * 3600);
/// `approval_timeout` when the config gives none.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// `approval_timeout`'s range: CodePipeline's manual approvals also expire after seven days.
pub const APPROVAL_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(7 * 86_400));

/// How an image vetted in `from` moves into an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    /// `promote` moves it in (the default).
    Manual,
    /// Promoted as soon as it is vetted in `from` (`requested_by: conveyor`).
    Auto,
}

/// Promotions into an environment wait for a second person.
#[derive(Debug, Clone)]
pub struct Approval {
    /// Who may approve (IAM ARN patterns); empty: any verified identity but the requester's.
    pub approvers: Vec<ArnPattern>,
    /// A pending approval expires after this long.
    pub timeout: Duration,
}

/// Where an environment's images come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Pushes roll out here.
    Entry,
    /// Images vetted in `environment` move here.
    From { environment: Environment, promotion: Promotion, approval: Option<Approval> },
}

/// How an environment's targets are rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waves {
    /// In list order, each verified before the next starts (the default).
    OneByOne,
    /// All at once (`parallel: true`).
    AllAtOnce,
}

/// One environment of an app's pipeline.
#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    pub name: Environment,
    pub source: Source,
    /// One or more, in rollout order.
    pub targets: Vec<ServiceTarget>,
    /// Whether the config listed them under `targets` (only for the paths errors name).
    pub listed: bool,
    pub waves: Waves,
    /// How long a verified image keeps running, alarms quiet, before it is vetted here.
    pub soak: Duration,
    /// CloudWatch alarm names, in each target's account and region.
    pub alarms: Vec<String>,
}

impl EnvironmentConfig {
    /// The JSON path of target `index` (`environments.prod.targets[1]`, or `environments.prod`).
    pub fn target_path(&self, index: usize) -> String {
        if self.listed {
            format!("environments.{}.targets[{index}]", self.name)
        } else {
            format!("environments.{}", self.name)
        }
    }
}

/// An app's environments, in pipeline order: entries first, then each after the one it takes its
/// images from (ties by name).
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub environments: Vec<EnvironmentConfig>,
}

impl Pipeline {
    pub fn environment(&self, name: Environment) -> Option<&EnvironmentConfig> {
        self.environments.iter().find(|env| env.name == name)
    }

    /// Where `env` gets its images from, if it is one of the app's environments.
    pub fn source(&self, env: Environment) -> Option<&Source> {
        self.environment(env).map(|e| &e.source)
    }

    /// The approval promotions into `env` wait for, if its config asks for one.
    pub fn approval(&self, env: Environment) -> Option<&Approval> {
        match self.source(env)? {
            Source::From { approval, .. } => approval.as_ref(),
            Source::Entry => None,
        }
    }

    /// The environments pushes roll out to.
    pub fn entries(&self) -> impl Iterator<Item = &EnvironmentConfig> {
        self.environments.iter().filter(|env| matches!(env.source, Source::Entry))
    }

    /// The environments that take their images from `env`.
    pub fn fed_from(&self, env: Environment) -> impl Iterator<Item = &EnvironmentConfig> {
        self.environments
            .iter()
            .filter(move |e| matches!(&e.source, Source::From { environment, .. } if *environment == env))
    }

    /// Whether no environment takes its images from `env` (prod, in a v2 pipeline): a rollback
    /// there is critical.
    pub fn is_last(&self, env: Environment) -> bool {
        self.fed_from(env).next().is_none()
    }

    /// The app's production: its one environment no other takes images from (prod, in a v2
    /// pipeline), where DORA's figures are counted; with several such ends, the one named `prod`.
    pub fn production(&self) -> Option<Environment> {
        let ends: Vec<Environment> = self.environments.iter().map(|e| e.name).filter(|e| self.is_last(*e)).collect();
        match ends[..] {
            [one] => Some(one),
            _ => ends.into_iter().find(|e| *e == Environment::PROD),
        }
    }

    /// Every target of every environment, with its environment and index.
    pub fn targets(&self) -> impl Iterator<Item = (&EnvironmentConfig, usize, &ServiceTarget)> {
        self.environments.iter().flat_map(|env| env.targets.iter().enumerate().map(move |(i, t)| (env, i, t)))
    }

    /// Checks an app's `environments` object (at `fields`' path).
    pub(crate) fn parse(fields: &Fields<'_>, endpoints: Endpoints) -> Option<Pipeline> {
        let problems = fields.problems();
        let count = fields.entries().count();
        if !(1..=MAX_ENVIRONMENTS).contains(&count) {
            problems.add(fields.path(), format!("must name 1 to {MAX_ENVIRONMENTS} environments, got {count}"));
        }
        let mut parsed: Vec<EnvironmentConfig> = Vec::new();
        for (name, value) in fields.entries() {
            let path = fields.key(name);
            let name = Environment::parse(name)
                .map_err(|e| problems.add(&path, format!("{name:?} is not an environment name: {}", e.rule)));
            if let (Some(env), Ok(name)) = (environment(value, path, endpoints, problems), name) {
                parsed.push(EnvironmentConfig { name, ..env });
            }
        }
        if parsed.len() != count {
            return None;
        }
        let v2_shape = count == 2
            && parsed.iter().all(|env| matches!(env.source, Source::Entry))
            && [Environment::STAGE, Environment::PROD].iter().all(|name| parsed.iter().any(|env| env.name == *name));
        if v2_shape {
            // Contract, *Compatibility*: the v2 shape is stage → prod, promoted by hand.
            for env in parsed.iter_mut().filter(|env| env.name == Environment::PROD) {
                env.source =
                    Source::From { environment: Environment::STAGE, promotion: Promotion::Manual, approval: None };
            }
        }
        let ordered = order(parsed, problems)?;
        distinct_targets(&ordered, problems);
        Some(Pipeline { environments: ordered })
    }
}

/// One environment's keys (its `name` is the caller's to set).
fn environment(value: &Value, path: String, endpoints: Endpoints, problems: &Problems) -> Option<EnvironmentConfig> {
    let fields = Fields::new(value, path, problems)?;
    let gates =
        ["targets", "parallel", "from", "promotion", "approval", "approvers", "approval_timeout", "soak", "alarms"];
    fields.only(&[&TARGET_KEYS[..], &gates[..]].concat());

    let listed = fields.has("targets");
    let targets = if listed {
        if let Some(given) = TARGET_KEYS.iter().find(|key| fields.has(key)) {
            fields.problem(given, "give the target keys or `targets`, not both");
        }
        fields.list("targets", (1, MAX_TARGETS), |item, path| {
            let target = Fields::new(item, path, problems)?;
            target.only(&TARGET_KEYS);
            ServiceTarget::parse(&target, endpoints)
        })
    } else {
        ServiceTarget::parse(&fields, endpoints).map(|target| vec![target])
    };
    let waves = match fields.boolean("parallel") {
        Some(_) if !listed => {
            fields.problem("parallel", "only with `targets`");
            Waves::OneByOne
        }
        Some(true) => Waves::AllAtOnce,
        _ => Waves::OneByOne,
    };

    let from = fields.str("from").and_then(|name| match Environment::parse(name) {
        Ok(env) => Some(env),
        Err(e) => {
            fields.problem("from", format!("{name:?} is not an environment name: {}", e.rule));
            None
        }
    });
    let only_with_from = |key: &str| {
        if from.is_none() && fields.has(key) {
            fields.problem(key, "only with `from` (an entry environment gets every push)");
        }
    };
    for key in ["promotion", "approval"] {
        only_with_from(key);
    }
    let promotion = match fields.str("promotion") {
        None | Some("manual") => Promotion::Manual,
        Some("auto") => Promotion::Auto,
        Some(other) => {
            fields.problem("promotion", format!("{other:?} is not \"manual\" or \"auto\""));
            Promotion::Manual
        }
    };
    let approved = fields.boolean("approval").unwrap_or(false);
    for key in ["approvers", "approval_timeout"] {
        if !approved && fields.has(key) {
            fields.problem(key, "only with `approval: true`");
        }
    }
    let approvers = fields
        .list("approvers", (1, 20), |item, path| match item.as_str().map(ArnPattern::parse) {
            Some(Ok(pattern)) => Some(pattern),
            Some(Err(problem)) => {
                problems.add(path, problem);
                None
            }
            None => {
                problems.add(path, "must be a string: an IAM ARN, `*` standing for any characters");
                None
            }
        })
        .unwrap_or_default();
    let (min, max) = APPROVAL_TIMEOUT_RANGE;
    let timeout = fields.duration("approval_timeout", min, max).unwrap_or(DEFAULT_APPROVAL_TIMEOUT);
    let approval = approved.then_some(Approval { approvers, timeout });
    let source = match from {
        None => Source::Entry,
        Some(environment) => Source::From { environment, promotion, approval },
    };

    let soak = fields.duration("soak", Duration::ZERO, MAX_SOAK).unwrap_or(Duration::ZERO);
    let alarms = fields
        .list("alarms", (0, MAX_ALARMS), |item, path| match item.as_str() {
            Some(alarm) if ALARM_NAME.is_match(alarm) => Some(alarm.to_owned()),
            _ => {
                problems.add(path, format!("{item} is not a CloudWatch alarm name (1 to 255 characters)"));
                None
            }
        })
        .unwrap_or_default();

    Some(EnvironmentConfig { name: Environment::STAGE, source, targets: targets?, listed, waves, soak, alarms })
}

/// The environments in pipeline order, after checking that every `from` names another
/// environment, that following `from` never comes back (no cycles), and that some environment
/// is an entry. `None` when it cannot be ordered.
fn order(environments: Vec<EnvironmentConfig>, problems: &Problems) -> Option<Vec<EnvironmentConfig>> {
    let from: BTreeMap<Environment, Environment> = environments
        .iter()
        .filter_map(|env| match &env.source {
            Source::From { environment, .. } => Some((env.name, *environment)),
            Source::Entry => None,
        })
        .collect();
    let names: BTreeSet<Environment> = environments.iter().map(|env| env.name).collect();
    let mut orderable = true;
    for (name, source) in &from {
        if name == source {
            problems.add(format!("environments.{name}.from"), "names the environment itself");
            orderable = false;
        } else if !names.contains(source) {
            let known: Vec<&str> = names.iter().filter(|n| *n != name).map(Environment::as_str).collect();
            problems.add(
                format!("environments.{name}.from"),
                format!("{source:?} is not an environment of this app (it has: {})", known.join(", ")),
            );
            orderable = false;
        }
    }
    if !orderable {
        return None;
    }
    // Each environment has one `from` at most: a cycle is a walk that comes back to where it was.
    let mut in_cycle: BTreeSet<Environment> = BTreeSet::new();
    for start in from.keys() {
        let mut walk = vec![*start];
        while let Some(&next) = walk.last().and_then(|at| from.get(at)) {
            if let Some(at) = walk.iter().position(|seen| *seen == next) {
                let cycle = &walk[at..];
                if cycle.iter().all(|name| !in_cycle.contains(name)) {
                    // Shown from its first name, following `from`.
                    let first = cycle.iter().position(|n| Some(n) == cycle.iter().min()).unwrap_or(0);
                    let mut shown: Vec<&str> =
                        cycle[first..].iter().chain(&cycle[..first]).map(Environment::as_str).collect();
                    shown.push(shown[0]);
                    problems.add(
                        format!("environments.{}.from", shown[0]),
                        format!("`from` goes round: {} (no image would ever enter)", shown.join(" ← ")),
                    );
                    in_cycle.extend(cycle.iter().copied());
                }
                orderable = false;
                break;
            }
            walk.push(next);
        }
    }
    if from.len() == environments.len() {
        problems.add("environments", "no entry environment (one without `from`): no push would reach the app");
        return None;
    }
    if !orderable {
        return None;
    }
    let depth = |name: Environment| {
        let mut depth = 0;
        let mut at = name;
        while let Some(next) = from.get(&at) {
            depth += 1;
            at = *next;
        }
        depth
    };
    let mut ordered = environments;
    ordered.sort_by_key(|env| (depth(env.name), env.name));
    Some(ordered)
}

/// No two targets of the app name one service: the later one is the problem.
fn distinct_targets(environments: &[EnvironmentConfig], problems: &Problems) {
    let all: Vec<(&EnvironmentConfig, usize, &ServiceTarget)> = environments
        .iter()
        .flat_map(|env| env.targets.iter().enumerate().map(move |(i, target)| (env, i, target)))
        .collect();
    for (later, (env, index, target)) in all.iter().enumerate() {
        if let Some((other_env, other_index, _)) = all[..later].iter().find(|(_, _, other)| other.same_service(target))
        {
            problems.add(
                format!("{}.service", env.target_path(*index)),
                format!(
                    "service {} is already {}: a service belongs to one target of one environment",
                    target.label(),
                    other_env.target_path(*other_index)
                ),
            );
        }
    }
}

/// An IAM ARN with `*` standing for any characters (`arn:aws:sts::123456789012:assumed-role/Release*/*`).
#[derive(Debug, Clone)]
pub struct ArnPattern {
    pub pattern: String,
    matcher: Regex,
}

impl ArnPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if !ARN_PATTERN.is_match(pattern) {
            return Err(format!(
                "{pattern:?} is not an IAM ARN pattern (arn:aws:iam::123456789012:role/name, `*` for any characters)"
            ));
        }
        let body = pattern.split('*').map(regex::escape).collect::<Vec<_>>().join(".*");
        let matcher = Regex::new(&format!("^{body}$")).map_err(|e| format!("{pattern:?}: {e}"))?;
        Ok(ArnPattern { pattern: pattern.to_owned(), matcher })
    }

    pub fn admits(&self, arn: &str) -> bool {
        self.matcher.is_match(arn)
    }
}

#[allow(clippy::unwrap_used)] // literal patterns, covered by tests
static ALARM_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[^\x00-\x1f\x7f]{1,255}$").unwrap());
#[allow(clippy::unwrap_used)]
static ARN_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^arn:(aws[a-z-]*|\*):(iam|sts|\*)::([0-9]{12}|\*):[A-Za-z0-9+=,.@_/*-]{1,512}$").unwrap()
});

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The pipeline of an `environments` object, or every problem's key and text.
    fn pipeline(environments: Value) -> Result<Pipeline, Vec<(String, String)>> {
        let problems = Problems::default();
        let parsed = Fields::new(&environments, "environments".into(), &problems)
            .and_then(|fields| Pipeline::parse(&fields, Endpoints::Public));
        match parsed {
            Some(pipeline) if problems.is_empty() => Ok(pipeline),
            _ => Err(problems.into_vec().into_iter().map(|p| (p.key, p.problem)).collect()),
        }
    }

    #[test]
    fn production_is_the_one_environment_no_other_takes_from() {
        let env = |name: &str| Environment::parse(name).unwrap();
        let three = pipeline(json!({ "dev": { "cluster": "d", "service": "s" },
            "stage": { "from": "dev", "cluster": "s", "service": "s" },
            "live": { "from": "stage", "cluster": "l", "service": "s" } }))
        .unwrap();
        assert_eq!(three.production(), Some(env("live")));
        let forked = pipeline(json!({ "stage": { "cluster": "s", "service": "s" },
            "prod": { "from": "stage", "cluster": "p", "service": "s" },
            "demo": { "from": "stage", "cluster": "x", "service": "s" } }))
        .unwrap();
        assert_eq!(forked.production(), Some(Environment::PROD), "several ends: the one named prod");
        let unnamed = pipeline(json!({ "stage": { "cluster": "s", "service": "s" },
            "eu": { "from": "stage", "cluster": "p", "service": "s" },
            "us": { "from": "stage", "cluster": "x", "service": "s" } }))
        .unwrap();
        assert_eq!(unnamed.production(), None);
    }

    fn target(cluster: &str) -> Value {
        json!({ "cluster": cluster, "service": "shop-api" })
    }

    fn names(pipeline: &Pipeline) -> Vec<&str> {
        pipeline.environments.iter().map(|env| env.name.as_str()).collect()
    }

    #[track_caller]
    fn refused(environments: Value, key: &str, needle: &str) {
        let problems = pipeline(environments).unwrap_err();
        assert!(problems.iter().any(|(k, p)| k == key && p.contains(needle)), "{key}: {needle}: {problems:#?}");
    }

    #[test]
    fn the_v2_shape_is_stage_then_prod_promoted_by_hand() {
        let pipeline = pipeline(json!({ "prod": target("prod"), "stage": target("stage") })).unwrap();
        assert_eq!(names(&pipeline), ["stage", "prod"]);
        assert!(matches!(pipeline.environments[0].source, Source::Entry));
        assert!(matches!(
            &pipeline.environments[1].source,
            Source::From { environment, promotion: Promotion::Manual, approval: None } if *environment == Environment::STAGE
        ));
    }

    #[test]
    fn the_contracts_three_environment_two_region_example_parses() {
        let role = "arn:aws:iam::222222222222:role/conveyor-conveyor-target";
        let pipeline = pipeline(json!({
            "dev":   { "cluster": "dev", "service": "shop-api" },
            "stage": { "from": "dev", "promotion": "auto", "cluster": "stage", "service": "shop-api",
                       "health_url": "https://shop-api.stage.example.com/health",
                       "soak": "30m", "alarms": ["shop-api-stage-5xx"] },
            "prod":  { "from": "stage", "approval": true, "alarms": ["shop-api-prod-5xx"],
                       "approvers": ["arn:aws:sts::222222222222:assumed-role/Release*/*"],
                       "targets": [
                         { "cluster": "prod", "service": "shop-api", "region": "eu-west-1", "role_arn": role },
                         { "cluster": "prod", "service": "shop-api", "region": "us-east-1", "role_arn": role } ] }
        }))
        .unwrap();
        assert_eq!(names(&pipeline), ["dev", "stage", "prod"]);
        let stage = pipeline.environment(Environment::parse("stage").unwrap()).unwrap();
        assert!(matches!(stage.source, Source::From { promotion: Promotion::Auto, approval: None, .. }));
        assert_eq!(
            (stage.soak, stage.alarms.as_slice()),
            (Duration::from_secs(1800), &["shop-api-stage-5xx".to_owned()][..])
        );
        let prod = pipeline.environment(Environment::parse("prod").unwrap()).unwrap();
        let Source::From { approval: Some(approval), promotion: Promotion::Manual, .. } = &prod.source else {
            panic!("{:?}", prod.source)
        };
        assert_eq!(approval.timeout, DEFAULT_APPROVAL_TIMEOUT);
        assert!(approval.approvers[0].admits("arn:aws:sts::222222222222:assumed-role/ReleaseManagers/alice"));
        assert!(!approval.approvers[0].admits("arn:aws:sts::222222222222:assumed-role/Developers/bob"));
        assert_eq!(prod.waves, Waves::OneByOne);
        let regions: Vec<_> = prod.targets.iter().map(|t| t.region.as_deref().unwrap()).collect();
        assert_eq!(regions, ["eu-west-1", "us-east-1"]);
        assert_eq!(prod.targets[1].account.as_deref(), Some("222222222222"));
        assert_eq!(prod.target_path(1), "environments.prod.targets[1]");
        assert_eq!(pipeline.targets().count(), 4);
    }

    #[test]
    fn a_cycle_or_no_entry_is_refused_at_the_from_that_closes_it() {
        refused(
            json!({ "a": { "from": "b", "cluster": "a", "service": "s" }, "b": { "from": "a", "cluster": "b", "service": "s" } }),
            "environments.a.from",
            "a ← b ← a",
        );
        refused(
            json!({ "a": { "from": "b", "cluster": "a", "service": "s" }, "b": { "from": "a", "cluster": "b", "service": "s" } }),
            "environments",
            "no entry environment",
        );
        // A cycle beside an entry: still refused, once.
        let problems = pipeline(json!({ "dev": target("dev"),
            "x": { "from": "y", "cluster": "x", "service": "s" }, "y": { "from": "x", "cluster": "y", "service": "s" } }))
        .unwrap_err();
        assert_eq!(problems.iter().filter(|(_, p)| p.contains("goes round")).count(), 1, "{problems:?}");
        refused(json!({ "a": { "from": "a", "cluster": "a", "service": "s" } }), "environments.a.from", "itself");
        refused(
            json!({ "dev": target("dev"), "prod": { "from": "stage", "cluster": "p", "service": "s" } }),
            "environments.prod.from",
            "\"stage\" is not an environment of this app (it has: dev)",
        );
    }

    #[test]
    fn every_rule_is_checked_at_its_json_path() {
        refused(json!({}), "environments", "1 to 8");
        let nine: serde_json::Map<String, Value> =
            (0..9).map(|i| (format!("e{i}"), target(&format!("c{i}")))).collect();
        refused(Value::Object(nine), "environments", "got 9");
        refused(json!({ "Prod": target("p") }), "environments.Prod", "not an environment name");
        refused(json!({ "dev": { "targets": [target("a")], "cluster": "a" } }), "environments.dev.cluster", "not both");
        refused(json!({ "dev": { "targets": [] } }), "environments.dev.targets", "1 to 10");
        refused(
            json!({ "dev": { "targets": [target("a"), { "cluster": "b", "service": "s", "region": "Mars" }] } }),
            "environments.dev.targets[1].region",
            "AWS region",
        );
        refused(
            json!({ "dev": { "targets": [{ "cluster": "a", "service": "s", "soak": "1m" }] } }),
            "environments.dev.targets[0].soak",
            "unknown key",
        );
        refused(
            json!({ "dev": { "cluster": "a", "service": "s", "parallel": true } }),
            "environments.dev.parallel",
            "only with `targets`",
        );
        for key in ["promotion", "approval"] {
            let mut dev = target("a");
            dev[key] = if key == "approval" { json!(true) } else { json!("auto") };
            refused(json!({ "dev": dev }), &format!("environments.dev.{key}"), "only with `from`");
        }
        let with = |extra: Value| {
            let mut prod = json!({ "from": "dev", "cluster": "p", "service": "s" });
            prod.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            json!({ "dev": target("d"), "prod": prod })
        };
        refused(with(json!({ "promotion": "nightly" })), "environments.prod.promotion", "\"manual\" or \"auto\"");
        refused(
            with(json!({ "approvers": ["arn:aws:iam::123456789012:role/x"] })),
            "environments.prod.approvers",
            "only with `approval: true`",
        );
        refused(
            with(json!({ "approval": true, "approvers": ["bob"] })),
            "environments.prod.approvers[0]",
            "IAM ARN pattern",
        );
        refused(
            with(json!({ "approval": true, "approval_timeout": "30d" })),
            "environments.prod.approval_timeout",
            "out of range",
        );
        refused(with(json!({ "soak": "25h" })), "environments.prod.soak", "out of range: from 0s to 1d");
        refused(with(json!({ "soak": "soon" })), "environments.prod.soak", "not a duration");
        let eleven: Vec<String> = (0..11).map(|i| format!("alarm-{i}")).collect();
        refused(with(json!({ "alarms": eleven })), "environments.prod.alarms", "0 to 10");
        refused(with(json!({ "alarms": [""] })), "environments.prod.alarms[0]", "alarm name");
        refused(
            json!({ "dev": target("x"), "prod": { "from": "dev", "targets": [target("y"), target("x")] } }),
            "environments.prod.targets[1].service",
            "already environments.dev",
        );
        let parallel = pipeline(with(json!({}))).unwrap();
        assert_eq!(parallel.environment(Environment::parse("prod").unwrap()).unwrap().waves, Waves::OneByOne);
    }

    #[test]
    fn every_problem_of_a_pipeline_is_reported_at_once() {
        let problems = pipeline(json!({
            "dev": { "cluster": "d", "service": "s", "soak": "forever" },
            "prod": { "from": "dev", "promotion": "later", "targets": [{ "cluster": "p" }], "alarms": [7] }
        }))
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "environments.dev.soak",
                "environments.prod.targets[0].service",
                "environments.prod.promotion",
                "environments.prod.alarms[0]"
            ]
        );
    }
}
