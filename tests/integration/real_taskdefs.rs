//! The task-definition rewrite over a corpus of real task definitions (`tests/fixtures/taskdefs/`,
//! see its README): each is registered as it is, a stage service runs it, a push goes through the
//! real `stage-deploy` binary, and the new revision is compared with the old one member by member
//! — as ECS returns them on the wire, so members the Rust SDK does not model count too.
//!
//! The only differences allowed: the swapped container's `image` (now
//! `{registry}/{repository}@{digest}`), what ECS computes for every revision (ARN, revision,
//! status, registration time and principal), and the three `conveyor:*` tags added to the
//! revision's tags. A member that is `null` and one that is absent mean the same in ECS's JSON
//! protocol, and are compared as the same. What moto needs added ([`TASK_MEMORY_FOR_MOTO`]) or
//! changes on registration ([`CHANGED_BY_MOTO`]) is listed here and in the corpus README; every
//! other member must come back from moto exactly as registered, so no comparison is vacuous.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::Utc;
use conveyor_testkit::world::digest;
use conveyor_testkit::{Function, World};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Definitions checked at once (each has its own world and function process).
const CONCURRENCY: usize = 4;

/// What ECS computes for each revision: these differ between any two revisions.
const IDENTITY: [&str; 7] =
    ["taskDefinitionArn", "revision", "registeredAt", "registeredBy", "status", "deregisteredAt", "deleteRequestedAt"];

/// Members the local ECS (moto) changes on registration, so that both revisions carry moto's
/// value and the rollout cannot be judged on them: `(definition, member path, why)`. Every other
/// member must come back from `DescribeTaskDefinition` exactly as registered, or the definition
/// fails (a member moto lost would make its comparison vacuous).
const CHANGED_BY_MOTO: [(&str, &str, &str); 1] = [(
    "docs-external-anywhere",
    ".networkMode",
    "moto sets `awsvpc` whenever requiresCompatibilities is anything but [EC2] (EXTERNAL included); ECS keeps `bridge`",
)];

/// The pushed image: its tag, and the name of the app each definition is deployed as.
const TAG: &str = "v1.0.0";
const APP: &str = "corpus";

/// One corpus entry: `NAME.json` and the container its `NAME.source.json` names.
struct Entry {
    name: String,
    definition: Value,
    container: String,
}

fn corpus() -> Vec<Entry> {
    let dir = conveyor_testkit::repo_root().join("tests/fixtures/taskdefs");
    let read = |path: &Path| -> Value {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") && !name.ends_with(".source.json"))
        .map(|name| name.trim_end_matches(".json").to_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let sidecar = read(&dir.join(format!("{name}.source.json")));
            let container = sidecar["container"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}.source.json names no `container`"))
                .to_owned();
            Entry { definition: read(&dir.join(format!("{name}.json"))), name, container }
        })
        .collect()
}

/// The definitions that get a task-level `memory` for moto (see [`task_memory_for_moto`]).
const TASK_MEMORY_FOR_MOTO: [&str; 2] = ["docs-appmesh-gateway", "docs-inference-neuron"];

/// moto refuses a definition with a container that has neither `memory` nor `memoryReservation`
/// (or, when `EC2` is required, no `memory`) unless the task has a `memory` (its
/// `_validate_container_defs`); ECS registers some of these. Such a definition gets a task-level
/// `memory` of 512 (where it has none), and nothing else. Returns whether it did.
fn task_memory_for_moto(definition: &mut Value) -> bool {
    let has_task_memory = definition["memory"].as_str().is_some_and(|m| !m.is_empty());
    let ec2 = definition["requiresCompatibilities"].as_array().is_some_and(|c| c.contains(&json!("EC2")));
    let lacking = definition["containerDefinitions"].as_array().into_iter().flatten().any(|container| {
        let memory = !container["memory"].is_null();
        let reservation = !container["memoryReservation"].is_null();
        !memory && (ec2 || !reservation)
    });
    let needed = lacking && !has_task_memory;
    if needed {
        definition["memory"] = json!("512");
    }
    needed
}

/// Members of `a` and `b` that differ, as `path: a => b` (a `null` member is an absent one).
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a_members), Value::Object(b_members)) => {
            let keys: BTreeSet<&String> = a_members.keys().chain(b_members.keys()).collect();
            for key in keys {
                let (a_value, b_value) =
                    (a_members.get(key).unwrap_or(&Value::Null), b_members.get(key).unwrap_or(&Value::Null));
                differences(a_value, b_value, &format!("{path}.{key}"), out);
            }
        }
        (Value::Array(a_items), Value::Array(b_items)) if a_items.len() == b_items.len() => {
            for (index, (a_item, b_item)) in a_items.iter().zip(b_items).enumerate() {
                differences(a_item, b_item, &format!("{path}[{index}]"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} => {b}")),
    }
}

/// Members of the registration `input` that the registered revision (`described`) does not return
/// as they were sent, as `path: sent => returned` (what the local ECS changed on registration).
fn changed_on_register(input: &Value, described: &Value, path: &str, out: &mut Vec<String>) {
    match (input, described) {
        (Value::Null, _) => {}
        (Value::Object(sent), Value::Object(returned)) => {
            for (key, value) in sent {
                changed_on_register(value, returned.get(key).unwrap_or(&Value::Null), &format!("{path}.{key}"), out);
            }
        }
        (Value::Array(sent), Value::Array(returned)) if sent.len() == returned.len() => {
            for (index, (a, b)) in sent.iter().zip(returned).enumerate() {
                changed_on_register(a, b, &format!("{path}[{index}]"), out);
            }
        }
        _ if input == described => {}
        _ => out.push(format!("{path}: {input} => {described}")),
    }
}

/// `(key, value)` of a `tags` list, sorted.
fn tags(tags: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = tags
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["key"].as_str().unwrap_or_default().to_owned(), t["value"].as_str().unwrap_or_default().to_owned()))
        .collect();
    pairs.sort();
    pairs
}

/// What differs between the revision before (`DescribeTaskDefinition` with tags, raw) and after,
/// beyond what a rollout of `image` into `container` must change.
fn unexpected_changes(before: &Value, after: &Value, container: &str, image: &str, digest: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let (mut old, mut new) = (before["taskDefinition"].clone(), after["taskDefinition"].clone());
    for definition in [&mut old, &mut new] {
        if let Some(members) = definition.as_object_mut() {
            for key in IDENTITY {
                members.remove(key);
            }
        }
    }
    let swapped = |definition: &mut Value| -> Option<Value> {
        let containers = definition["containerDefinitions"].as_array_mut()?;
        let found = containers.iter_mut().find(|c| c["name"] == container)?;
        Some(std::mem::replace(&mut found["image"], json!("(the swapped image)")))
    };
    match swapped(&mut new) {
        Some(got) if got == image => {}
        Some(got) => problems.push(format!("containerDefinitions[{container}].image: {got}, expected {image:?}")),
        None => problems.push(format!("the new revision has no container {container:?}")),
    }
    if swapped(&mut old).is_none() {
        problems.push(format!("the old revision has no container {container:?}"));
    }
    differences(&old, &new, "taskDefinition", &mut problems);

    let mut expected = tags(&before["tags"]);
    expected.retain(|(key, _)| !key.starts_with("conveyor:"));
    expected.extend([
        ("conveyor:app".to_owned(), APP.to_owned()),
        ("conveyor:image-digest".to_owned(), digest.to_owned()),
        ("conveyor:image-tag".to_owned(), TAG.to_owned()),
    ]);
    expected.sort();
    let mut got = tags(&after["tags"]);
    got.retain(|(key, _)| key != "conveyor:lease"); // a token new for every lease
    if got != expected {
        problems.push(format!("tags: {got:?}, expected {expected:?}"));
    }
    problems
}

/// `DescribeTaskDefinition` with its tags, as ECS answers on the wire.
async fn describe(world: &World, arn: &str) -> Result<Value, String> {
    world.ecs_json("DescribeTaskDefinition", &json!({ "taskDefinition": arn, "include": ["TAGS"] })).await
}

/// Registers `entry` as it is, runs a stage service on it, pushes through `stage-deploy` and
/// compares the two revisions. `Err` says what went wrong.
async fn roll_out(entry: Entry) -> Result<(), String> {
    let world = World::new().await;
    let mut definition = entry.definition.clone();
    // Families are global in the shared local AWS: each world its own.
    definition["family"] = json!(world.name(&entry.name));
    task_memory_for_moto(&mut definition);
    let registered =
        world.ecs_json("RegisterTaskDefinition", &definition).await.map_err(|e| format!("registering it: {e}"))?;
    let initial =
        registered["taskDefinition"]["taskDefinitionArn"].as_str().ok_or(format!("registered: {registered}"))?;
    let cluster = world.name("stage");
    world.create_service(&cluster, APP, initial, 1).await;
    let environments = json!({
        "stage": { "cluster": cluster, "service": APP },
        "prod": { "cluster": world.name("prod"), "service": APP },
    });
    world
        .put_app(APP, &json!({ "repository": entry.name, "container": entry.container, "environments": environments }))
        .await;
    let pushed = digest(1);

    let stage = Function::spawn("stage-deploy", &world.function_env()).await;
    let report = match stage.invoke(world.push_event(&entry.name, TAG, &pushed, Utc::now())).await {
        conveyor_testkit::Invocation::Response(report) => report,
        conveyor_testkit::Invocation::Error { error_type, error_message } => {
            return Err(format!("stage-deploy failed: {error_type}: {error_message}"))
        }
    };

    let app = &report["apps"][0];
    if app["status"] != "deploying" {
        return Err(format!("not rolled out: {report}"));
    }
    let rolled = app["task_definition_arn"].as_str().ok_or(format!("no revision: {report}"))?;
    let running = world.service(&cluster, APP).await.task_definition().unwrap_or_default().to_owned();
    if running != rolled {
        return Err(format!("the service runs {running}, not the new revision {rolled}"));
    }
    let before = describe(&world, initial).await?;
    let after = describe(&world, rolled).await?;
    // The comparison below judges a member only if the local ECS kept it as sent.
    let mut sent = definition.clone();
    let sent_tags = sent.as_object_mut().and_then(|members| members.remove("tags")).unwrap_or(json!([]));
    let mut changed = Vec::new();
    changed_on_register(&sent, &before["taskDefinition"], "", &mut changed);
    changed.retain(|path| {
        !CHANGED_BY_MOTO.iter().any(|(name, member, _)| *name == entry.name && path.starts_with(member))
    });
    if tags(&sent_tags) != tags(&before["tags"]) {
        changed.push(format!("tags: {sent_tags} => {}", before["tags"]));
    }
    if !changed.is_empty() {
        return Err(format!("the local ECS did not keep it as registered: {}", changed.join("; ")));
    }
    let image = format!("{}/{}@{pushed}", world.registry(), entry.name);
    let problems = unexpected_changes(&before, &after, &entry.container, &image, &pushed);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

/// The check itself: a change deep inside a sidecar, a lost member, the wrong image or a missing
/// tag are all seen (so a corpus that passes passed a real comparison).
#[test]
fn the_comparison_sees_every_kind_of_change() {
    let digest = digest(1);
    let image = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/corpus@{digest}");
    let before = json!({
        "taskDefinition": {
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/f:1", "revision": 1,
            "family": "f", "memory": null,
            "containerDefinitions": [
                { "name": "app", "image": "app:1", "environment": [{ "name": "A", "value": "" }] },
                { "name": "envoy", "image": "envoy:1", "healthCheck": { "command": ["CMD", "true"], "retries": 3 } },
            ],
            "volumes": [{ "name": "v", "host": {} }],
        },
        "tags": [{ "key": "team", "value": "shop" }],
    });
    let mut after = before.clone();
    after["taskDefinition"]["taskDefinitionArn"] = json!("arn:aws:ecs:us-east-1:123456789012:task-definition/f:2");
    after["taskDefinition"]["revision"] = json!(2);
    after["taskDefinition"].as_object_mut().unwrap().remove("memory"); // null and absent are the same
    after["taskDefinition"]["containerDefinitions"][0]["image"] = json!(image);
    after["tags"] = json!([
        { "key": "team", "value": "shop" }, { "key": "conveyor:app", "value": APP },
        { "key": "conveyor:image-tag", "value": TAG }, { "key": "conveyor:image-digest", "value": digest },
    ]);
    assert_eq!(unexpected_changes(&before, &after, "app", &image, &digest), Vec::<String>::new());

    let mut sidecar = after.clone();
    sidecar["taskDefinition"]["containerDefinitions"][1]["healthCheck"]["retries"] = json!(4);
    let mut lost = after.clone();
    lost["taskDefinition"]["volumes"][0].as_object_mut().unwrap().remove("host");
    let mut emptied = after.clone();
    emptied["taskDefinition"]["containerDefinitions"][0]["environment"][0]["value"] = Value::Null;
    let mut wrong_image = after.clone();
    wrong_image["taskDefinition"]["containerDefinitions"][0]["image"] = json!("app:2");
    let mut untagged = after.clone();
    untagged["tags"].as_array_mut().unwrap().remove(0);
    for (what, changed) in [
        ("sidecar", sidecar),
        ("lost", lost),
        ("emptied", emptied),
        ("wrong image", wrong_image),
        ("untagged", untagged),
    ] {
        assert_eq!(unexpected_changes(&before, &changed, "app", &image, &digest).len(), 1, "{what}");
    }
}

#[tokio::test]
async fn every_real_task_definition_keeps_everything_but_the_swapped_image() {
    let entries = corpus();
    assert!(entries.len() >= 40, "the corpus is incomplete: {} definitions", entries.len());
    let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    let adjusted: Vec<&str> =
        entries.iter().filter(|e| task_memory_for_moto(&mut e.definition.clone())).map(|e| e.name.as_str()).collect();
    assert_eq!(
        adjusted, TASK_MEMORY_FOR_MOTO,
        "the definitions given a task memory for moto (update the list and the README)"
    );

    let results: Vec<(String, Result<(), String>)> = futures_util::stream::iter(entries)
        .map(|entry| {
            let name = entry.name.clone();
            let checked = tokio::spawn(roll_out(entry));
            async move { (name, checked.await.unwrap_or_else(|panicked| Err(format!("panicked: {panicked}")))) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let mut failures: Vec<String> = results
        .iter()
        .filter_map(|(name, result)| result.as_ref().err().map(|e| format!("{name}:\n    {e}")))
        .collect();
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {} task definitions did not survive a rollout unchanged:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}
