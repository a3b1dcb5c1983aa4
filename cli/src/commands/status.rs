//! `conveyor status [APP]`

use conveyor::config::AppConfig;
use conveyor::ops::status::{self, AppStatus, EnvStatus};
use conveyor::rollout::RolloutKind;
use serde_json::json;

use super::{configs, find_app};
use crate::context::Context;
use crate::error::{CliError, AWS_OR_CONFIG, DONE};
use crate::output::{self, or_dash, render, Report, Style, Tone};

pub async fn run(ctx: &Context, app: Option<&str>, promotable: usize) -> Result<Report, CliError> {
    let set = configs(ctx).await?;
    let (ledger, fleet) = (ctx.ledger().await?, ctx.fleet()?);
    let apps: Vec<&AppConfig> = match app {
        Some(name) => vec![find_app(&set, name, &ctx.names().await?.prefix)?],
        None => set.apps.iter().collect(),
    };
    let mut statuses = Vec::new();
    for app in apps {
        statuses.push(status::app_status(&ledger, &fleet, app, promotable).await?);
    }
    let invalid: Vec<serde_json::Value> = if app.is_some() {
        Vec::new()
    } else {
        set.invalid
            .iter()
            .map(|i| {
                json!({ "parameter": i.error.parameter, "key": i.error.key(), "problem": i.error.problem(),
                        "error": i.error.to_string() })
            })
            .collect()
    };
    let unreadable = statuses.iter().flat_map(|s| &s.environments).any(|e| e.error.is_some());
    let mut text = text(&ctx.style, &statuses);
    let notes = notes(&statuses, &invalid);
    if !notes.is_empty() {
        text.push_str("\n\n");
        text.push_str(&notes.join("\n"));
    }
    if statuses.is_empty() {
        text = format!("no app configured under {}/apps/", ctx.names().await?.prefix);
        if !notes.is_empty() {
            text.push_str(&format!("\n\n{}", notes.join("\n")));
        }
    }
    Ok(Report {
        json: json!({ "apps": statuses, "invalid": invalid }),
        text,
        exit_code: if unreadable { AWS_OR_CONFIG } else { DONE },
    })
}

fn rollout(env: &EnvStatus) -> (String, Tone) {
    if let Some(pending) = &env.awaiting_approval {
        let now = env.rollout.as_ref().map(|r| format!("{} {}; ", r.tag, r.state)).unwrap_or_default();
        return (format!("{now}{} awaiting approval", pending.tag), Tone::Attention);
    }
    let Some(rollout) = &env.rollout else { return ("-".into(), Tone::Plain) };
    let mut text = format!("{} {}", rollout.tag, rollout.state);
    // Several targets: where the environment's release stands on this one.
    if let Some(target) = env.target.as_ref().filter(|t| t.state != rollout.state.to_string()) {
        text = format!("{} {} (release: {})", rollout.tag, rollout.state, target.state);
    }
    let deployment = env.running.as_ref().and_then(|r| r.deployment.as_ref());
    if let (true, Some(deployment)) = (rollout.state == RolloutKind::InProgress, deployment) {
        text.push_str(&format!(" ({}/{} running)", deployment.running_count, deployment.desired_count));
    }
    if let Some(until) = env.soaking_until {
        let left = (until - chrono::Utc::now()).num_seconds().max(0);
        return (format!("{}, soaking ({} left)", text, crate::output::duration(left)), Tone::Busy);
    }
    (text, rollout.state.into())
}

/// The environment's name; with several targets, each row also says which target: its account
/// and region where they are not Conveyor's own, else its cluster.
fn environment(env: &EnvStatus) -> String {
    let Some(target) = &env.target else { return env.environment.to_string() };
    let place = target.target.split_once(" (").map_or(env.cluster.as_str(), |(_, place)| place.trim_end_matches(')'));
    format!("{} {place}", env.environment)
}

fn text(style: &Style, statuses: &[AppStatus]) -> String {
    let mut table = style.table(&["APP", "ENV", "RUNNING", "DIGEST", "REVISION", "ROLLOUT", "LAST VERIFIED", "PAUSED"]);
    for app in statuses {
        for env in &app.environments {
            let running = env.running.as_ref();
            let (rollout, state) = rollout(env);
            let verified =
                env.last_verified.as_ref().map(|v| format!("{} {}", v.tag, output::time(v.at))).unwrap_or("-".into());
            let (paused, paused_tone) =
                if env.paused.is_some() { ("paused", Tone::Attention) } else { ("no", Tone::Plain) };
            table.add_row(vec![
                style.cell(&app.app, None),
                style.cell(&environment(env), None),
                style.cell(
                    if env.error.is_some() { "?" } else { or_dash(running.and_then(|r| r.tag.as_deref())) },
                    None,
                ),
                style.cell(or_dash(running.and_then(|r| r.digest.as_deref()).map(output::short_digest)), None),
                style.cell(or_dash(running.map(|r| r.revision.as_str())), None),
                style.state(&rollout, state),
                style.cell(&verified, None),
                style.state(paused, paused_tone),
            ]);
        }
    }
    let mut text = render(&table);
    // Where the tags were vetted, when every app says the same (stage, in v2 pipelines).
    let mut sources = statuses.iter().map(|app| app.promotable_from);
    let vetted = match sources.next().flatten() {
        Some(from) if sources.all(|other| other == Some(from)) => {
            format!("VETTED IN {}", from.to_string().to_uppercase())
        }
        _ => "VETTED".to_owned(),
    };
    let mut promotable = style.table(&["APP", "PROMOTABLE", "DIGEST", &vetted]);
    let mut any = false;
    for app in statuses {
        if app.promotable.is_empty() {
            promotable.add_row(vec![style.cell(&app.app, None), style.cell("(none)", None)]);
        }
        for tag in &app.promotable {
            any = true;
            promotable.add_row(vec![
                style.cell(&app.app, None),
                style.cell(&tag.tag, None),
                style.cell(output::short_digest(&tag.digest), None),
                style.cell(&output::time(tag.vetted_at), None),
            ]);
        }
    }
    if any || !statuses.is_empty() {
        text.push_str("\n\n");
        text.push_str(&render(&promotable));
    }
    text
}

/// What the table cannot say: pauses, why a rollout went wrong, held pushes, problems.
fn notes(statuses: &[AppStatus], invalid: &[serde_json::Value]) -> Vec<String> {
    let mut notes = Vec::new();
    for app in statuses {
        for env in &app.environments {
            let at = format!("{} {}", app.app, env.environment);
            if let Some(pause) = &env.paused {
                notes.push(format!(
                    "{at}: paused since {} by {}: {}",
                    output::time(pause.at),
                    output::requester(pause.by.as_deref(), pause.on_behalf_of.as_deref()),
                    pause.reason
                ));
            }
            if let Some(rollout) =
                env.rollout.as_ref().filter(|r| matches!(r.state, RolloutKind::RolledBack | RolloutKind::Failed))
            {
                notes.push(format!(
                    "{at}: {} {}: {}",
                    rollout.tag,
                    rollout.state,
                    rollout.reason.as_deref().unwrap_or("")
                ));
            }
            if let Some(held) = &env.held_push {
                notes.push(format!(
                    "{at}: push {} ({}) held while paused; `conveyor resume {} --env {} --deploy-latest` rolls it out",
                    held.tag,
                    output::short_digest(&held.digest),
                    app.app,
                    env.environment
                ));
            }
            if let Some(error) = &env.error {
                notes.push(format!("{at}: cannot read the service: {error}"));
            }
            if let Some(pending) = &env.awaiting_approval {
                notes.push(format!(
                    "{at}: {} ({}) awaits approval {}, requested by {} (expires {}): `conveyor approve {} --to {} --id {}`",
                    pending.tag,
                    output::short_digest(&pending.digest),
                    pending.approval_id,
                    output::who(&pending.requested_by),
                    output::time(pending.expires_at),
                    app.app,
                    env.environment,
                    pending.approval_id
                ));
            }
            if let Some(gates) = &env.gates {
                let soak = (gates.soak_seconds > 0).then(|| {
                    let soak = std::time::Duration::from_secs(gates.soak_seconds);
                    format!("a {} soak", conveyor::config::show_duration(soak))
                });
                let alarms = (!gates.alarms.is_empty()).then(|| format!("alarms {} quiet", gates.alarms.join(", ")));
                let after: Vec<String> = soak.into_iter().chain(alarms).collect();
                if !after.is_empty() {
                    notes.push(format!("{at}: vetted after verification, {}", after.join(" and ")));
                }
                if gates.approval {
                    notes.push(format!("{at}: promotions wait for an approval by a second person"));
                }
            }
        }
    }
    for invalid in invalid {
        notes.push(format!("invalid config: {}", invalid["error"].as_str().unwrap_or_default()));
    }
    notes
}
