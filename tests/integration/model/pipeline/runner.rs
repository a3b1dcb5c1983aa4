//! One sequence of a pipeline's operations, applied to the real library on its own world and to
//! the model, then everything observable compared: ECS, the state table, the notifications, what
//! each call answered.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use conveyor::operate::Answer;
use conveyor::types::{AppName, Environment, Requester};
use conveyor::{Conveyor, Invocation};
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::digest;
use conveyor_testkit::World;
use serde_json::{json, Value};

use super::oracle::{self, label, service, targets, Approval, Event, ImageModel, Model, Person, Push, ENVS, SERVICES};
use super::{Generator, Op};
use crate::model::runner::{compare_service, monitor, of_the_models_deployment, Disagreement, Emitted, Known};
use crate::support::{conveyor, invocation};

const APP: &str = "shop";
const REQUESTER: &str = "arn:aws:iam::123456789012:user/ana";
const APPROVER: &str = "arn:aws:iam::123456789012:user/bob";

/// A service of the pipeline, in ECS (all on one cluster: one `DescribeServices` sees them).
struct Place {
    service: String,
}

pub struct Sequence {
    seed: u64,
    generator: Generator,
    world: World,
    conveyor: Conveyor,
    cluster: String,
    places: Vec<Place>,
    alarm: String,
    model: Model,
    base: DateTime<Utc>,
    kept: Vec<Emitted<Event>>,
    delivered: Vec<Emitted<Event>>,
    /// Model deployment id => ECS's.
    ids: HashMap<u32, String>,
    checked_revisions: BTreeSet<String>,
    ops: Vec<String>,
    verbose: bool,
}

impl Sequence {
    pub async fn new(seed: u64, verbose: bool) -> Sequence {
        let world = World::new().await;
        let image = format!("{}/{APP}:v0.9.0", world.registry());
        let cluster = world.name("pipeline");
        let mut places = Vec::new();
        for label in ["dev", "stage", "prod-a", "prod-b"] {
            let (family, service) = (world.name(&format!("{APP}-{label}")), format!("{APP}-{label}"));
            let task_definition = world.register(&family, &image, label, false).await;
            world.create_service(&cluster, &service, &task_definition, 1).await;
            places.push(Place { service });
        }
        let alarm = world.name("shop-stage-5xx");
        world.aws.set_alarm(&alarm, "OK").await;
        let target = |n: usize| json!({ "cluster": cluster, "service": places[n].service });
        let mut stage = json!({ "from": "dev", "promotion": "auto", "soak": "1h", "alarms": [alarm] });
        stage.as_object_mut().unwrap().extend(target(1).as_object().unwrap().clone());
        let parallel = seed % 2 == 0;
        let config = json!({
            "repository": APP, "container": "api",
            "environments": {
                "dev": target(0),
                "stage": stage,
                "prod": { "from": "stage", "approval": true, "targets": [target(2), target(3)], "parallel": parallel },
            },
        });
        world.put_app(APP, &config).await;
        let now = Utc::now() - chrono::Duration::hours(2);
        Sequence {
            seed,
            generator: Generator::new(seed),
            conveyor: conveyor(&world),
            world,
            cluster,
            places,
            alarm,
            model: Model::new(parallel),
            base: DateTime::from_timestamp(now.timestamp(), 0).unwrap(),
            kept: Vec::new(),
            delivered: Vec::new(),
            ids: HashMap::new(),
            checked_revisions: BTreeSet::new(),
            ops: Vec::new(),
            verbose,
        }
    }

    fn as_who(who: Person) -> Invocation {
        let arn = if who == Person::Requester { REQUESTER } else { APPROVER };
        Invocation { identity: Some(arn.to_owned()), ..invocation() }
    }

    /// Runs `op` on both sides; compares what the calls answered.
    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Push { push, .. } => self.deliver_push(push).await,
            Op::Settle { service, complete, deliver } => {
                let settle =
                    if *complete { Settle::Complete } else { Settle::Fail { circuit_breaker_rollback: false } };
                let real = self.world.aws.settle(&self.cluster, &self.places[*service].service, settle).await;
                let event = self.model.settle(*service, *complete);
                let [json] = <[Value; 1]>::try_from(real)
                    .map_err(|real| format!("ECS emitted {real:?}, the model one event"))?;
                let wanted = if *complete { "SERVICE_DEPLOYMENT_COMPLETED" } else { "SERVICE_DEPLOYMENT_FAILED" };
                if json["detail"]["eventName"] != wanted {
                    return Err(format!("ECS emitted {}, the model expected {wanted}", json["detail"]["eventName"]));
                }
                let emitted = Emitted { event, json };
                if *deliver {
                    self.deliver_event(&emitted).await?;
                    self.delivered.push(emitted);
                } else {
                    self.kept.push(emitted);
                }
                Ok(())
            }
            Op::DeliverLate { index } => {
                let emitted = self.kept.remove(*index);
                self.deliver_event(&emitted).await?;
                self.delivered.push(emitted);
                Ok(())
            }
            Op::DeliverAgain { index } => {
                let emitted = self.delivered[*index].clone();
                self.deliver_event(&emitted).await
            }
            Op::Alarm { delivered } => {
                let at = Utc::now();
                self.world.aws.set_alarm(&self.alarm, "ALARM").await;
                self.world.aws.set_alarm(&self.alarm, "OK").await;
                if *delivered {
                    monitor(&self.conveyor, self.world.alarm_event(&self.alarm, at), "the alarm's event").await?;
                }
                self.model.alarm(*delivered);
                Ok(())
            }
            Op::SoakEnds => {
                self.in_the_past("stage", &["soak", "until"]).await;
                monitor(&self.conveyor, self.world.soak_timer_event(), "the soak timer").await?;
                self.model.soak_ends();
                Ok(())
            }
            Op::SoakTimer => monitor(&self.conveyor, self.world.soak_timer_event(), "the soak timer").await,
            Op::Sweep => {
                monitor(&self.conveyor, self.world.schedule_event(), "the sweep").await?;
                self.model.sweep(false);
                Ok(())
            }
            Op::ApprovalExpires => {
                self.in_the_past("prod", &["approval", "expires_at"]).await;
                monitor(&self.conveyor, self.world.schedule_event(), "the sweep").await?;
                self.model.sweep(true);
                Ok(())
            }
            Op::Promote { tag, force } => {
                let request = json!({ "app": APP, "tag": tag, "to": "prod", "force": force });
                let real = self.conveyor.promote_function(request, &Self::as_who(Person::Requester)).await;
                Self::compare("promote", real, self.model.promote(tag, *force))
            }
            Op::Approve { who } => {
                let request = json!({ "operation": "approve", "app": APP, "environment": "prod" });
                let real = self.conveyor.promote_function(request, &Self::as_who(*who)).await;
                Self::compare("approve", real, self.model.approve(*who))
            }
            Op::Pause { env } | Op::Resume { env } => {
                let config = self.conveyor.configs.get().await.map_err(|e| format!("the config: {e}"))?;
                let app = config.app(&AppName::parse(APP).unwrap()).expect("the app");
                let environment = Environment::parse(ENVS[*env]).unwrap();
                let (fleet, leases, who) = (&self.conveyor.fleet, self.conveyor.leases(), Requester::default());
                if matches!(op, Op::Pause { .. }) {
                    conveyor::pause::pause(fleet, leases, app, environment, "model", &who, &invocation()).await
                } else {
                    conveyor::pause::resume(fleet, leases, app, environment, &who, &invocation()).await
                }
                .map_err(|e| format!("{op} failed: {e}"))?;
                if matches!(op, Op::Pause { .. }) {
                    self.model.pause(*env);
                } else {
                    self.model.resume(*env);
                }
                Ok(())
            }
            Op::Reject { who } => {
                let request = json!({ "operation": "reject", "app": APP, "environment": "prod", "reason": "model" });
                let real = self.conveyor.promote_function(request, &Self::as_who(*who)).await;
                Self::compare("reject", real, self.model.reject())
            }
        }
    }

    /// What a call of the promote function answered, against the model's answer.
    fn compare(what: &str, real: Result<Answer, conveyor::Error>, expected: oracle::Answer) -> Result<(), String> {
        let real = match &real {
            Ok(Answer::Promoted(response)) => Ok(response.status.as_str().to_owned()),
            Ok(Answer::Rejected(rejection)) => Ok(rejection.status.as_str().to_owned()),
            Ok(other) => Ok(format!("{other:?}")),
            Err(error) => Err(format!("{}: {error}", error.error_type())),
        };
        let agrees = match (&real, expected) {
            (Ok(status), Ok(wanted)) => status == wanted,
            (Err(error), Err(wanted)) => error.starts_with(&format!("{wanted}:")),
            _ => false,
        };
        if agrees {
            Ok(())
        } else {
            Err(format!("{what} answered {real:?}, the model expected {expected:?}"))
        }
    }

    /// Sets `path` of `env`'s state in the past, as time passing would.
    async fn in_the_past(&self, env: &str, path: &[&str]) {
        let names: Vec<String> = path.iter().enumerate().map(|(n, _)| format!("#p{n}")).collect();
        let mut update = self
            .world
            .dynamodb
            .update_item()
            .table_name(&self.world.table)
            .key("pk", AttributeValue::S(format!("APP#{APP}")))
            .key("sk", AttributeValue::S(format!("ENV#{env}")))
            .update_expression(format!("SET #state.{} = :past", names.join(".")))
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(
                ":past",
                AttributeValue::S((Utc::now() - chrono::Duration::seconds(1)).to_rfc3339()),
            );
        for (name, field) in names.iter().zip(path) {
            update = update.expression_attribute_names(name, *field);
        }
        update.send().await.unwrap_or_else(|e| panic!("{env} {path:?} set in the past: {e:?}"));
    }

    async fn deliver_push(&mut self, push: &Push) -> Result<(), String> {
        let time = self.base + chrono::Duration::seconds(push.time);
        let event = self.world.push_event(APP, &push.tag, &digest(push.digest), time);
        let report =
            self.conveyor.stage(event, &invocation()).await.map_err(|e| format!("stage-deploy failed: {e}"))?;
        let real = report.apps.iter().find(|a| a.app == APP).map_or("(absent)", |a| a.status.as_str());
        let expected = self.model.push(push);
        if real != expected {
            return Err(format!("stage-deploy reported {real}, the model expected {expected}: {report:?}"));
        }
        Ok(())
    }

    async fn deliver_event(&mut self, emitted: &Emitted<Event>) -> Result<(), String> {
        of_the_models_deployment(&self.ids, emitted.event.dep, &emitted.json)?;
        monitor(&self.conveyor, emitted.json.clone(), &format!("deploy-monitor on {}", emitted.json["detail"])).await?;
        self.model.on_event(emitted.event);
        Ok(())
    }

    async fn check(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        self.check_notifications(&mut problems).await;
        let mut described = self.world.ecs.describe_services().cluster(&self.cluster);
        for place in &self.places {
            described = described.services(&place.service);
        }
        let described = described.send().await.map_err(|e| format!("DescribeServices: {e:?}"))?;
        for service in 0..SERVICES {
            let name = self.places[service].service.as_str();
            match described.services().iter().find(|s| s.service_name() == Some(name)) {
                Some(found) => {
                    let (at, model) = (label(service), &self.model.services[service]);
                    let known = Known { ids: &mut self.ids, checked: &mut self.checked_revisions };
                    compare_service(&self.world, &at, found, &model.deps, &model.revs, known, &mut problems).await;
                }
                None => problems.push(format!("{}: no such service", label(service))),
            }
        }
        self.check_registrations(&mut problems).await;
        self.check_table(&mut problems).await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    async fn check_notifications(&mut self, problems: &mut Vec<String>) {
        let mut expected: Vec<String> =
            self.model.notes.drain(..).map(|(env, outcome)| format!("{} {outcome}", ENVS[env])).collect();
        let mut real: Vec<String> = self
            .world
            .notifications()
            .await
            .iter()
            .map(|n| {
                let a = &n["MessageAttributes"];
                format!("{} {}", a["environment"].as_str().unwrap_or("?"), a["outcome"].as_str().unwrap_or("?"))
            })
            .collect();
        expected.sort();
        real.sort();
        if real != expected {
            problems.push(format!("notifications: published {real:?}, the model expected {expected:?}"));
        }
    }

    /// One registered revision per rollout (the seeded ones aside; each service's own are
    /// compared with its deployments).
    async fn check_registrations(&mut self, problems: &mut Vec<String>) {
        let calls = self.world.aws.calls(&self.world.id).await;
        let registered = calls.get("RegisterTaskDefinition").copied().unwrap_or(0) as usize - SERVICES;
        let wanted: usize = self.model.services.iter().map(|s| s.revs.len() - 1).sum();
        if registered != wanted {
            problems.push(format!("{registered} revisions registered, the model expects {wanted} (one per rollout)"));
        }
    }

    async fn check_table(&mut self, problems: &mut Vec<String>) {
        let items = self.world.items().await;
        let mine: Vec<&Value> = items.iter().filter(|i| i["pk"] == format!("APP#{APP}").as_str()).collect();
        let sk = |item: &Value| item["sk"].as_str().unwrap_or_default().to_owned();
        let revision =
            |arn: &Value| arn.as_str().and_then(|a| a.rsplit(':').next()).and_then(|n| n.parse::<usize>().ok());
        for (env, name) in ENVS.iter().enumerate() {
            let m = &self.model.envs[env];
            let record = mine.iter().find(|i| sk(i) == format!("ENV#{name}")).map(|i| &i["state"]);
            let Some(state) = record.filter(|s| !s.is_null()) else {
                if m.exists {
                    problems.push(format!("{name}: no record, the model has one"));
                }
                continue;
            };
            if !m.exists {
                problems.push(format!("{name}: a record the model does not have: {state}"));
                continue;
            }
            for target in 0..targets(env) {
                let at = label(service(env, target));
                let part = if target == 0 { state } else { &state["targets"][target - 1] };
                let rollout = part["rollout"].is_object().then(|| {
                    (
                        part["rollout"]["digest"].as_str().unwrap_or_default().to_owned(),
                        part["rollout"]["state"]["kind"].as_str().unwrap_or_default().to_owned(),
                    )
                });
                let wanted = m.steps[target].as_ref().map(|s| (digest(s.digest), s.state.kind().to_owned()));
                if rollout != wanted {
                    problems.push(format!("{at}: rollout (digest, state) {rollout:?}, the model {wanted:?}"));
                }
                let watching = part["rollback"].is_object().then(|| revision(&part["rollback"]["to"]).unwrap_or(0));
                let wanted = m.watches[target].as_ref().map(|w| w.to + 1);
                if watching != wanted {
                    problems.push(format!("{at}: watching a rollback to revision {watching:?}, the model {wanted:?}"));
                }
            }
            let verified = state["last_verified"]["digest"].as_str().map(str::to_owned);
            let wanted = m.last_verified.map(digest);
            if verified != wanted {
                problems.push(format!("{name}: last verified {verified:?}, the model {wanted:?}"));
            }
            let paused = state["paused"].is_object();
            if paused != m.paused {
                problems.push(format!("{name}: paused {paused}, the model {}", m.paused));
            }
            let soaking = state["soak"].is_object();
            if soaking != m.soaking {
                problems.push(format!("{name}: soaking {soaking}, the model {}", m.soaking));
            }
            let approval = state["approval"].is_object().then(|| {
                (
                    state["approval"]["state"].as_str().unwrap_or_default().to_owned(),
                    state["approval"]["digest"].as_str().unwrap_or_default().to_owned(),
                )
            });
            let wanted = m.approval.as_ref().map(|a| match a {
                Approval::Pending { digest: d, .. } => ("pending".to_owned(), digest(*d)),
                Approval::Declined { digest: d } => ("declined".to_owned(), digest(*d)),
            });
            if approval != wanted {
                problems.push(format!("{name}: approval (state, digest) {approval:?}, the model {wanted:?}"));
            }
        }
        // Image items: vetted and failed in which environment.
        let digests: HashMap<String, u32> = (1..=self.generator.digests()).map(|n| (digest(n), n)).collect();
        let mut images: BTreeMap<u32, ImageModel> = BTreeMap::new();
        for item in mine.iter().filter(|i| sk(i).starts_with("IMAGE#")) {
            let Some(&n) = digests.get(&sk(item)["IMAGE#".len()..]) else {
                problems.push(format!("an image item of an unknown digest: {item}"));
                continue;
            };
            let facts = |prefix: &str| ENVS.map(|env| !item[format!("{prefix}_{env}")].is_null());
            images.insert(n, ImageModel { vetted: facts("vetted"), failed: facts("failed") });
        }
        let summary = |images: &BTreeMap<u32, ImageModel>| -> Vec<String> {
            images
                .iter()
                .filter(|(_, i)| **i != ImageModel::default())
                .map(|(n, i)| {
                    let facts = |what: &str, of: &[bool; 3]| {
                        ENVS.iter()
                            .zip(of)
                            .filter(|(_, f)| **f)
                            .map(|(e, _)| format!(" {what}:{e}"))
                            .collect::<String>()
                    };
                    format!("d{n}{}{}", facts("vetted", &i.vetted), facts("failed", &i.failed))
                })
                .collect()
        };
        let (real, wanted) = (summary(&images), summary(&self.model.images));
        if real != wanted {
            problems.push(format!("images {real:?}, the model {wanted:?}"));
        }
    }

    /// Runs `steps` operations, checking after each.
    pub async fn run(mut self, steps: usize) -> Result<(u64, usize), Disagreement> {
        for step in 0..steps {
            let op = self.generator.next_op(&self.model, self.kept.len(), self.delivered.len());
            self.ops.push(format!("{step:3}: {op}"));
            if self.verbose {
                println!("pipeline model seed {}: {}", self.seed, self.ops[self.ops.len() - 1]);
            }
            let result = match self.apply(&op).await {
                Ok(()) => self.check().await,
                Err(error) => {
                    let more = self.check().await.err().map(|m| format!("\n{m}")).unwrap_or_default();
                    Err(format!("{error}{more}"))
                }
            };
            if let Err(message) = result {
                return Err(Disagreement {
                    seed: self.seed,
                    step,
                    ops: self.ops,
                    message,
                    situations: Vec::new(),
                    known: None,
                });
            }
        }
        Ok((self.seed, steps))
    }
}
