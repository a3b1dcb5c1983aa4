//! `conveyor metrics [APP] [--days N]`

use chrono::Utc;
use conveyor::ops::metrics::{self, Dora, Samples, Spread};
use conveyor::types::AppName;
use serde_json::json;

use super::{app_name, configs, find_app};
use crate::context::Context;
use crate::error::CliError;
use crate::output::{self, render, Report, Style};

pub async fn run(ctx: &Context, app: Option<&str>, days: u32) -> Result<Report, CliError> {
    let ledger = ctx.ledger().await?;
    let set = configs(ctx).await?;
    // Each app's figures are its production's (its last environment); an app no longer configured
    // keeps its history, counted as prod's.
    let production = |name: &AppName| {
        set.app(name).and_then(|app| app.pipeline.production()).unwrap_or(conveyor::types::Environment::PROD)
    };
    let apps: Vec<(AppName, conveyor::types::Environment)> = match app {
        Some(name) => {
            let name = app_name(name)?;
            // An app no longer configured keeps its history; one with neither is unknown.
            if set.app(&name).is_none() && conveyor::ops::history::recent(&ledger, &name, None, 1).await?.is_empty() {
                find_app(&set, name.as_str(), &ctx.names().await?.prefix)?;
            }
            vec![(name.clone(), production(&name))]
        }
        None => set.apps.iter().map(|a| (a.name.clone(), production(&a.name))).collect(),
    };
    let until = Utc::now();
    let since = metrics::window(days, until);
    let mut all = Samples::default();
    let mut per_app = Vec::new();
    for (app, production) in &apps {
        let samples = metrics::app_samples(&ledger, app, *production, since, until).await?;
        per_app.push((app.to_string(), Dora::of(&samples, since, until, days)));
        all.merge(samples);
    }
    let all = Dora::of(&all, since, until, days);
    let json = json!({
        "days": days, "since": since, "until": until,
        "apps": per_app.iter().map(|(app, dora)| json!({ "app": app, "metrics": dora })).collect::<Vec<_>>(),
        "all": all,
    });
    let text = text(&ctx.style, &per_app, &all, days);
    Ok(Report::done(json, text))
}

fn spread(spread: &Spread) -> String {
    match (spread.median_seconds, spread.p90_seconds) {
        (Some(median), Some(p90)) => format!("{} / {}", output::duration(median), output::duration(p90)),
        _ => "-".into(),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn column(dora: &Dora) -> Vec<String> {
    let frequency = &dora.deployment_frequency;
    let failures = &dora.change_failure_rate;
    let restore = &dora.time_to_restore;
    vec![
        format!("{:.2}/day ({} verified)", frequency.per_day, frequency.prod_verifications),
        format!("{} ({})", spread(&dora.lead_time), plural(dora.lead_time.count, "change")),
        match failures.rate {
            Some(rate) => format!("{:.0}% ({} of {})", rate * 100.0, failures.failed, failures.promotions),
            None => "- (no promotion)".into(),
        },
        format!("{} ({} restored, {} open)", spread(&restore.spread), restore.spread.count, restore.open),
        lead_time_to(dora),
    ]
}

/// The median lead time to each environment, in the order changes reach them (the shortest first).
fn lead_time_to(dora: &Dora) -> String {
    let mut reached: Vec<(i64, &str)> =
        dora.lead_time_to.iter().filter_map(|(env, spread)| Some((spread.median_seconds?, env.as_str()))).collect();
    reached.sort();
    if reached.is_empty() {
        return "-".into();
    }
    reached.iter().map(|(median, env)| format!("{env} {}", output::duration(*median))).collect::<Vec<_>>().join(", ")
}

fn text(style: &Style, per_app: &[(String, Dora)], all: &Dora, days: u32) -> String {
    let mut header = vec!["METRIC".to_owned()];
    let mut columns = Vec::new();
    for (app, dora) in per_app {
        header.push(app.clone());
        columns.push(column(dora));
    }
    if per_app.len() != 1 {
        header.push("all apps".into());
        columns.push(column(all));
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = style.table(&header);
    let names = [
        "deployment frequency (prod verifications)",
        "lead time for changes (median / p90)",
        "change failure rate (prod rollouts)",
        "time to restore service (median / p90)",
        "lead time to each environment (median)",
    ];
    for (row, name) in names.iter().enumerate() {
        let mut cells = vec![style.cell(name, None)];
        cells.extend(columns.iter().map(|c| style.cell(&c[row], None)));
        table.add_row(cells);
    }
    format!(
        "DORA metrics, last {days} days ({} to {})\n\n{}",
        output::time(all.since),
        output::time(all.until),
        render(&table)
    )
}
