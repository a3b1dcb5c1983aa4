//! The runner: one sequence of operations applied to the real library on its own world and to the
//! model, then everything observable compared — ECS, the state table, the notifications, what
//! each call answered.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use conveyor::types::{AppName, Environment};
use conveyor::Conveyor;
use conveyor_testkit::known_bugs::{self, KnownBug};
use conveyor_testkit::local_aws::Settle;
use conveyor_testkit::world::{digest, AppFixture};
use conveyor_testkit::World;
use serde_json::{json, Value};

use super::generator::{Generator, Op};
use super::oracle::{ix, Dep, Event, EventName, ImageModel, Model, Outcome, Push};
use super::{APPS, PROD, REPOSITORY, STAGE, WEB_TAGS};
use crate::support::{conveyor, invocation};

/// A deployment event as ECS emitted it, with the model's reading of it (`E`: the model's event
/// type; each model has its own).
#[derive(Debug, Clone)]
pub struct Emitted<E> {
    pub event: E,
    pub json: Value,
}

/// One sequence: the real library (on its own world) and the model side by side.
pub struct Sequence {
    seed: u64,
    generator: Generator,
    world: World,
    conveyor: Conveyor,
    fixtures: Vec<AppFixture>,
    model: Model,
    base: DateTime<Utc>,
    kept: Vec<Emitted<Event>>,
    delivered: Vec<Emitted<Event>>,
    /// Model deployment id => ECS's.
    ids: HashMap<u32, String>,
    /// Revision ARNs whose image was checked.
    checked_revisions: BTreeSet<String>,
    ops: Vec<String>,
    verbose: bool,
}

/// How a sequence ended badly.
pub struct Disagreement {
    pub seed: u64,
    pub step: usize,
    pub ops: Vec<String>,
    pub message: String,
    /// The situations the model named in that step.
    pub situations: Vec<&'static str>,
    /// The listed bug that excuses it, if any.
    pub known: Option<&'static KnownBug>,
}

impl Sequence {
    pub async fn new(seed: u64, verbose: bool) -> Sequence {
        let world = World::new().await;
        let mut fixtures = Vec::new();
        for (n, app) in APPS.iter().enumerate() {
            let extra = if n == 1 { json!({ "tags": WEB_TAGS }) } else { json!({}) };
            fixtures.push(world.seed_app(app, REPOSITORY, false, extra).await);
        }
        let now = Utc::now() - chrono::Duration::hours(2);
        Sequence {
            seed,
            generator: Generator::new(seed),
            conveyor: conveyor(&world),
            world,
            fixtures,
            model: Model::new(),
            base: DateTime::from_timestamp(now.timestamp(), 0).unwrap(),
            kept: Vec::new(),
            delivered: Vec::new(),
            ids: HashMap::new(),
            checked_revisions: BTreeSet::new(),
            ops: Vec::new(),
            verbose,
        }
    }

    fn time(&self, seconds: i64) -> DateTime<Utc> {
        self.base + chrono::Duration::seconds(seconds)
    }

    fn push_json(&self, push: &Push) -> Value {
        self.world.push_event(REPOSITORY, &push.tag, &digest(push.digest), self.time(push.time))
    }

    /// Runs `op` on both sides; compares what the calls answered.
    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Push { push, .. } | Op::Repeat { push } => self.deliver_push(push).await,
            Op::Settle { app, env, outcome, deliver } => {
                let fixture = &self.fixtures[*app];
                let service = if *env == STAGE { &fixture.stage } else { &fixture.prod };
                let settle = match outcome {
                    Outcome::Complete => Settle::Complete,
                    Outcome::Fail => Settle::Fail { circuit_breaker_rollback: false },
                    Outcome::FailWithCircuitBreaker => Settle::Fail { circuit_breaker_rollback: true },
                };
                let real = self.world.aws.settle(&service.cluster, &service.service, settle).await;
                let expected = self.model.settle(*app, *env, *outcome);
                if real.len() != expected.len() {
                    return Err(format!("ECS emitted {} events, the model {}: {real:?}", real.len(), expected.len()));
                }
                for (event, json) in expected.into_iter().zip(real) {
                    let name = json["detail"]["eventName"].as_str().unwrap_or_default();
                    let wanted = match event.name {
                        EventName::Completed => "SERVICE_DEPLOYMENT_COMPLETED",
                        EventName::Failed => "SERVICE_DEPLOYMENT_FAILED",
                        EventName::InProgress => "SERVICE_DEPLOYMENT_IN_PROGRESS",
                    };
                    if name != wanted {
                        return Err(format!("ECS emitted {name}, the model expected {wanted}"));
                    }
                    let emitted = Emitted { event, json };
                    if *deliver {
                        self.deliver_event(&emitted).await?;
                        self.delivered.push(emitted);
                    } else {
                        self.kept.push(emitted);
                    }
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
            Op::Sweep => {
                monitor(&self.conveyor, self.world.schedule_event(), "the sweep").await?;
                self.model.sweep();
                Ok(())
            }
            Op::Promote { app, tag, force } => {
                let request = json!({ "app": APPS[*app], "tag": tag, "force": force });
                let real = self.conveyor.promote(request, &invocation()).await;
                let expected = self.model.promote(*app, tag, *force);
                match (&real, &expected) {
                    (Ok(answer), Ok(status)) if answer.status.as_str() == *status => Ok(()),
                    (Err(error), Err(allowed)) if allowed.contains(&error.error_type().as_str()) => Ok(()),
                    _ => Err(format!(
                        "promote answered {:?}, the model expected {expected:?}",
                        real.map(|a| a.status).map_err(|e| format!("{}: {e}", e.error_type()))
                    )),
                }
            }
            Op::Pause { app, env } => {
                let config = self.conveyor.configs.get().await.unwrap();
                let app_config = config.app(&AppName::parse(APPS[*app]).unwrap()).unwrap();
                conveyor::pause::pause(
                    &self.conveyor.fleet,
                    self.conveyor.leases(),
                    app_config,
                    *env,
                    "model",
                    &conveyor::types::Requester::default(),
                    &invocation(),
                )
                .await
                .map_err(|e| format!("pause failed: {e}"))?;
                self.model.pause(*app, *env);
                Ok(())
            }
            Op::Resume { app, env, deploy_latest } => {
                let config = self.conveyor.configs.get().await.unwrap();
                let app_config = config.app(&AppName::parse(APPS[*app]).unwrap()).unwrap();
                let report = conveyor::pause::resume(
                    &self.conveyor.fleet,
                    self.conveyor.leases(),
                    app_config,
                    *env,
                    &conveyor::types::Requester::default(),
                    &invocation(),
                )
                .await
                .map_err(|e| format!("resume failed: {e}"))?;
                let expected = self.model.resume(*app, *env);
                let real = report.held_push.as_ref().map(|h| (h.tag.to_string(), h.digest.to_string()));
                let wanted = expected.as_ref().map(|h| (h.tag.clone(), digest(h.digest)));
                if real != wanted {
                    return Err(format!("resume reported the held push {real:?}, the model {wanted:?}"));
                }
                match expected {
                    Some(held) if *deploy_latest => self.deliver_push(&held).await,
                    _ => Ok(()),
                }
            }
        }
    }

    async fn deliver_push(&mut self, push: &Push) -> Result<(), String> {
        let report = self
            .conveyor
            .stage(self.push_json(push), &invocation())
            .await
            .map_err(|e| format!("stage-deploy failed: {e}"))?;
        let expected = self.model.push(push);
        let real: Vec<&str> = APPS
            .iter()
            .map(|app| report.apps.iter().find(|a| a.app == *app).map_or("(absent)", |a| a.status.as_str()))
            .collect();
        if real != expected {
            return Err(format!("stage-deploy reported {real:?}, the model expected {expected:?}: {report:?}"));
        }
        Ok(())
    }

    async fn deliver_event(&mut self, emitted: &Emitted<Event>) -> Result<(), String> {
        of_the_models_deployment(&self.ids, emitted.event.dep, &emitted.json)?;
        self.conveyor
            .monitor(emitted.json.clone(), &invocation())
            .await
            .map_err(|e| format!("deploy-monitor failed on {}: {e}", emitted.json["detail"]))?;
        self.model.on_event(emitted.event);
        Ok(())
    }

    /// Everything observable agrees with the model.
    async fn check(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        self.check_notifications(&mut problems).await;
        for env in [STAGE, PROD] {
            self.check_ecs(env, &mut problems).await;
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
        let name = |app: usize, env: Environment, outcome: &str| format!("{} {} {outcome}", APPS[app], env.as_str());
        let mut expected: Vec<String> = self.model.notes.drain(..).map(|(a, e, o)| name(a, e, o)).collect();
        let mut real: Vec<String> = self
            .world
            .notifications()
            .await
            .iter()
            .map(|n| {
                let a = &n["MessageAttributes"];
                format!(
                    "{} {} {}",
                    a["app"].as_str().unwrap_or("?"),
                    a["environment"].as_str().unwrap_or("?"),
                    a["outcome"].as_str().unwrap_or("?")
                )
            })
            .collect();
        expected.sort();
        real.sort();
        if real != expected {
            problems.push(format!("notifications: published {real:?}, the model expected {expected:?}"));
        }
    }

    /// Both apps' services in `env` (one cluster): every deployment, and every revision's image.
    async fn check_ecs(&mut self, env: Environment, problems: &mut Vec<String>) {
        let cluster = if env == STAGE { &self.fixtures[0].stage.cluster } else { &self.fixtures[0].prod.cluster };
        let described =
            self.world.ecs.describe_services().cluster(cluster).services(APPS[0]).services(APPS[1]).send().await;
        let services = described.unwrap().services.unwrap_or_default();
        for (app, name) in APPS.iter().enumerate() {
            let Some(service) = services.iter().find(|s| s.service_name() == Some(*name)) else {
                problems.push(format!("{name} {}: no such service", env.as_str()));
                continue;
            };
            self.check_service(app, env, service, problems).await;
        }
    }

    async fn check_service(
        &mut self,
        app: usize,
        env: Environment,
        service: &aws_sdk_ecs::types::Service,
        problems: &mut Vec<String>,
    ) {
        let model = &self.model.apps[app].envs[ix(env)];
        let at = format!("{} {}", APPS[app], env.as_str());
        let known = Known { ids: &mut self.ids, checked: &mut self.checked_revisions };
        compare_service(&self.world, &at, service, &model.deps, &model.revs, known, problems).await;
    }

    /// One registered revision per rollout (the seeded ones aside).
    async fn check_registrations(&mut self, problems: &mut Vec<String>) {
        let calls = self.world.aws.calls(&self.world.id).await;
        let registered = calls.get("RegisterTaskDefinition").copied().unwrap_or(0) as usize;
        let seeded = 2 * APPS.len();
        let wanted: usize = self.model.apps.iter().flat_map(|a| &a.envs).map(|e| e.revs.len() - 1).sum();
        if registered != seeded + wanted {
            problems.push(format!(
                "{} task-definition revisions registered, the model expects {wanted} (one per rollout)",
                registered - seeded
            ));
        }
    }

    async fn check_table(&mut self, problems: &mut Vec<String>) {
        let items = self.world.items().await;
        let digests: HashMap<String, u32> = (1..=self.generator.digests()).map(|n| (digest(n), n)).collect();
        for (app, name) in APPS.iter().enumerate() {
            let pk = format!("APP#{name}");
            let mine: Vec<&Value> = items.iter().filter(|i| i["pk"] == pk.as_str()).collect();
            let sk = |item: &Value| item["sk"].as_str().unwrap_or_default().to_owned();
            let model = &self.model.apps[app];
            for env in [STAGE, PROD] {
                let at = format!("{name} {}", env.as_str());
                let record = mine.iter().find(|i| sk(i) == format!("ENV#{}", env.as_str())).map(|i| &i["state"]);
                let m = &model.envs[ix(env)];
                let Some(state) = record.filter(|s| !s.is_null()) else {
                    if m.exists {
                        problems.push(format!("{at}: no record, the model has one"));
                    }
                    continue;
                };
                if !m.exists {
                    problems.push(format!("{at}: a record the model does not have: {state}"));
                    continue;
                }
                let paused = state["paused"].is_object();
                if paused != m.paused {
                    problems.push(format!("{at}: paused {paused}, the model {}", m.paused));
                }
                let rollout = state["rollout"].is_object().then(|| {
                    (
                        state["rollout"]["digest"].as_str().unwrap_or_default().to_owned(),
                        state["rollout"]["tag"].as_str().unwrap_or_default().to_owned(),
                        state["rollout"]["state"]["kind"].as_str().unwrap_or_default().to_owned(),
                    )
                });
                let wanted = m.rollout.as_ref().map(|r| (digest(r.digest), r.tag.clone(), r.state.kind().to_owned()));
                if rollout != wanted {
                    problems.push(format!("{at}: rollout (digest, tag, state) {rollout:?}, the model {wanted:?}"));
                }
                let verified = state["last_verified"]["digest"].as_str().map(str::to_owned);
                let wanted = m.last_verified.map(|(d, _)| digest(d));
                if verified != wanted {
                    problems.push(format!("{at}: last verified {verified:?}, the model {wanted:?}"));
                }
                let watching = state["rollback"].is_object().then(|| {
                    let to = state["rollback"]["to"].as_str().unwrap_or_default();
                    to.rsplit(':').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0)
                });
                let wanted = m.watch.as_ref().map(|w| w.to + 1);
                if watching != wanted {
                    problems.push(format!("{at}: watching a rollback to revision {watching:?}, the model {wanted:?}"));
                }
            }
            // Image items.
            let mut images: BTreeMap<u32, ImageModel> = BTreeMap::new();
            for item in mine.iter().filter(|i| sk(i).starts_with("IMAGE#")) {
                let Some(&n) = digests.get(&sk(item)["IMAGE#".len()..]) else {
                    problems.push(format!("{name}: an image item of an unknown digest: {item}"));
                    continue;
                };
                let tags =
                    item["tags"].as_array().map(|t| t.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect());
                let present = |key: &str| !item[key].is_null();
                images.insert(
                    n,
                    ImageModel {
                        tags: tags.unwrap_or_default(),
                        vetted_stage: present("vetted_stage").then_some(0),
                        vetted_prod: present("vetted_prod"),
                        failed_stage: present("failed_stage"),
                        failed_prod: present("failed_prod"),
                    },
                );
            }
            let summary = |images: &BTreeMap<u32, ImageModel>| -> Vec<String> {
                images
                    .iter()
                    .map(|(n, i)| {
                        format!(
                            "d{n} {:?}{}{}{}{}",
                            i.tags,
                            if i.vetted_stage.is_some() { " vetted:stage" } else { "" },
                            if i.vetted_prod { " vetted:prod" } else { "" },
                            if i.failed_stage { " failed:stage" } else { "" },
                            if i.failed_prod { " failed:prod" } else { "" }
                        )
                    })
                    .collect()
            };
            let (real, wanted) = (summary(&images), summary(&model.images));
            if real != wanted {
                problems.push(format!("{name}: images {real:?}, the model {wanted:?}"));
            }
            // Tag items.
            let tags: BTreeMap<String, String> = mine
                .iter()
                .filter(|i| sk(i).starts_with("TAG#"))
                .map(|i| (sk(i)["TAG#".len()..].to_owned(), i["digest"].as_str().unwrap_or_default().to_owned()))
                .collect();
            let wanted: BTreeMap<String, String> =
                model.tags.iter().map(|(t, (d, _))| (t.clone(), digest(*d))).collect();
            if tags != wanted {
                let short = |m: &BTreeMap<String, String>| -> Vec<String> {
                    m.iter().map(|(t, d)| format!("{t}=d{}", digests.get(d).copied().unwrap_or(0))).collect()
                };
                problems.push(format!("{name}: tags {:?}, the model {:?}", short(&tags), short(&wanted)));
            }
        }
    }

    /// Runs `steps` operations, checking after each.
    pub async fn run(mut self, steps: usize) -> Result<(u64, usize), Disagreement> {
        for step in 0..steps {
            let op = self.generator.next_op(&self.model, self.kept.len(), self.delivered.len());
            self.model.situations.clear();
            self.ops.push(format!("{step:3}: {op}"));
            if self.verbose {
                println!("model seed {}: {}", self.seed, self.ops[self.ops.len() - 1]);
            }
            let result = match self.apply(&op).await {
                Ok(()) => self.check().await,
                Err(error) => {
                    // Say what else differs too.
                    let more = self.check().await.err().map(|m| format!("\n{m}")).unwrap_or_default();
                    Err(format!("{error}{more}"))
                }
            };
            if let Err(message) = result {
                let situations = std::mem::take(&mut self.model.situations);
                let known = situations.iter().find_map(|s| known_bugs::excusing(&format!("model:{s}")));
                return Err(Disagreement { seed: self.seed, step, ops: self.ops, message, situations, known });
            }
        }
        Ok((self.seed, steps))
    }
}

/// deploy-monitor on `payload` (`what` it is, for the message); none of its results an error.
pub async fn monitor(conveyor: &Conveyor, payload: Value, what: &str) -> Result<(), String> {
    let report = conveyor.monitor(payload, &invocation()).await.map_err(|e| format!("{what} failed: {e}"))?;
    match report.results.iter().find(|r| r.action == conveyor::vocabulary::Action::Error) {
        Some(error) => Err(format!("{what} reported an error: {error:?}")),
        None => Ok(()),
    }
}

/// An event ECS emitted is for the deployment the model says (`dep`, once ECS's id of it is
/// known).
pub fn of_the_models_deployment(ids: &HashMap<u32, String>, dep: u32, json: &Value) -> Result<(), String> {
    let real_id = json["detail"]["deploymentId"].as_str().unwrap_or_default();
    match ids.get(&dep) {
        Some(known) if known != real_id => Err(format!("event for {real_id}, the model's deployment is {known}")),
        _ => Ok(()),
    }
}

/// What a sequence learnt of ECS so far: the model's deployment ids mapped to ECS's, and the
/// revisions whose image was checked.
pub struct Known<'a> {
    pub ids: &'a mut HashMap<u32, String>,
    pub checked: &'a mut BTreeSet<String>,
}

/// One service in ECS against the model: its deployments (`deps`, primary first: primary or not,
/// rollout state, revision) and the `api` image of every revision (`revs`: the model's digest of
/// each, `None` for the seeded one, by tag).
pub async fn compare_service(
    world: &World,
    at: &str,
    service: &aws_sdk_ecs::types::Service,
    deps: &[Dep],
    revs: &[Option<u32>],
    known: Known<'_>,
    problems: &mut Vec<String>,
) {
    let revision = |arn: &str| arn.rsplit(':').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let real: Vec<(String, bool, String, usize, String)> = service
        .deployments()
        .iter()
        .map(|d| {
            let arn = d.task_definition().unwrap_or_default();
            (
                d.id().unwrap_or_default().to_owned(),
                d.status() == Some("PRIMARY"),
                d.rollout_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                revision(arn),
                arn.to_owned(),
            )
        })
        .collect();
    let shape: Vec<(bool, String, usize)> = real.iter().map(|(_, p, s, n, _)| (*p, s.clone(), *n)).collect();
    let wanted: Vec<(bool, String, usize)> =
        deps.iter().enumerate().map(|(i, d)| (i == 0, d.state.ecs().to_owned(), d.rev + 1)).collect();
    if shape != wanted {
        problems.push(format!("{at}: ECS deployments (primary, state, revision) {shape:?}, the model {wanted:?}"));
        return;
    }
    for ((real_id, ..), dep) in real.iter().zip(deps) {
        match known.ids.get(&dep.id) {
            Some(id) if id != real_id => {
                problems.push(format!("{at}: deployment {} is {id} in ECS, now {real_id}", dep.id))
            }
            Some(_) => {}
            None => {
                known.ids.insert(dep.id, real_id.clone());
            }
        }
    }
    for (.., number, arn) in real {
        if known.checked.contains(&arn) {
            continue;
        }
        let image = world.revision_image(&arn).await.unwrap_or_default();
        let wanted = revs[number - 1];
        let ok = match wanted {
            Some(n) => image.ends_with(&format!("@{}", digest(n))),
            None => image.ends_with(":v0.9.0"),
        };
        if ok {
            known.checked.insert(arn);
        } else {
            problems.push(format!("{at}: {arn} runs {image}, the model expects {:?}", wanted.map(|n| format!("d{n}"))));
        }
    }
}
