//! `conveyor history APP [--env ENV] [--limit N]`

use conveyor::ops::history::{self, HistoryRow};
use conveyor::types::Environment;
use serde_json::json;

use super::{app_name, configs, find_app};
use crate::context::Context;
use crate::error::CliError;
use crate::output::{self, or_dash, render, Report, Style};

pub async fn run(ctx: &Context, app: &str, env: Option<Environment>, limit: usize) -> Result<Report, CliError> {
    let app = app_name(app)?;
    if limit == 0 {
        return Err(CliError::invalid("--limit must be 1 or more"));
    }
    let entries = history::recent(&ctx.ledger().await?, &app, env, limit).await?;
    if entries.is_empty() {
        // An app no longer configured keeps its history; one with neither is unknown.
        let set = configs(ctx).await?;
        find_app(&set, app.as_str(), &ctx.names().await?.prefix)?;
    }
    let rows: Vec<HistoryRow> = entries.iter().map(HistoryRow::from).collect();
    let text = if rows.is_empty() {
        format!("no history for {app}{}", env.map(|e| format!(" in {e}")).unwrap_or_default())
    } else {
        table(&ctx.style, &rows)
    };
    Ok(Report::done(json!({ "app": app, "environment": env, "entries": rows }), text))
}

pub fn table(style: &Style, rows: &[HistoryRow]) -> String {
    let mut table = style.table(&["TIME", "ENV", "EVENT", "TAG", "DIGEST", "DURATION", "BY", "REASON"]);
    for row in rows {
        let event = if row.forced { format!("{} (forced)", row.event) } else { row.event.to_string() };
        table.add_row(vec![
            style.cell(&output::time(row.at), None),
            style.cell(row.environment.as_str(), None),
            style.state(&event, row.event),
            style.cell(or_dash(row.tag.as_deref()), None),
            style.cell(or_dash(row.digest.as_deref().map(output::short_digest)), None),
            style.cell(&row.duration_seconds.map(output::duration).unwrap_or_else(|| "-".into()), None),
            style.cell(&output::requester(row.requested_by.as_deref(), row.on_behalf_of.as_deref()), None),
            style.cell(row.reason.as_deref().unwrap_or(""), None),
        ]);
    }
    render(&table)
}
