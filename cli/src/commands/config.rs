//! `conveyor config validate [FILE...]` and `conveyor config put FILE`: the functions' own
//! validator, each app on its own and against the other apps in SSM.

use std::path::{Path, PathBuf};

use chrono::Utc;
use conveyor::aws::Parameter;
use conveyor::ops::config::{self, Candidate, Verdict};
use serde::Serialize;
use serde_json::Value;

use crate::context::{Context, Names};
use crate::error::{CliError, DONE, REFUSED};
use crate::output::{render, Report, Style, Tone};

/// One checked config, and where it came from. Every key is always present.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// The file it was read from (`null`: read from SSM).
    pub file: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// An app config file: the app's name is the file's name without its extension.
fn candidate(file: &Path) -> Result<Candidate, CliError> {
    let json =
        std::fs::read_to_string(file).map_err(|e| CliError::invalid(format!("cannot read {}: {e}", file.display())))?;
    let app = file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .ok_or_else(|| CliError::invalid(format!("{} has no file name to take the app's name from", file.display())))?;
    Ok(Candidate { app: app.to_owned(), json })
}

async fn stored(ctx: &Context, names: &Names) -> Result<Vec<Parameter>, CliError> {
    Ok(ctx.ssm()?.parameters_by_path(&names.apps_path(), false).await?)
}

pub async fn validate(ctx: &Context, files: &[PathBuf], local: bool) -> Result<Report, CliError> {
    let checked: Vec<Checked> = if files.is_empty() {
        let names = ctx.names().await?;
        let existing = stored(ctx, names).await?;
        config::check_stored(&names.apps_path(), &existing, ctx.endpoints()?)
            .into_iter()
            .map(|verdict| Checked { file: None, verdict })
            .collect()
    } else {
        let candidates = files.iter().map(|f| candidate(f)).collect::<Result<Vec<_>, _>>()?;
        let (apps_path, existing) = if local {
            (Names::from_env().apps_path(), Vec::new())
        } else {
            let names = ctx.names().await?;
            (names.apps_path(), stored(ctx, names).await?)
        };
        config::check(&apps_path, &existing, &candidates, Utc::now(), ctx.endpoints()?)
            .into_iter()
            .zip(files)
            .map(|(verdict, file)| Checked { file: Some(file.display().to_string()), verdict })
            .collect()
    };
    let invalid = checked.iter().filter(|c| !c.verdict.valid).count();
    let mut text = if checked.is_empty() { "no app config found".to_owned() } else { table(&ctx.style, &checked) };
    text.push_str(&format!("\n\n{} valid, {invalid} invalid", checked.len() - invalid));
    Ok(Report {
        json: serde_json::json!({ "valid": invalid == 0, "apps": checked }),
        text,
        exit_code: if invalid == 0 { DONE } else { REFUSED },
    })
}

/// What `config put` did. Every key is always present.
#[derive(Debug, Clone, Serialize)]
pub struct Put {
    pub file: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub written: bool,
    /// The parameter's version after the write.
    pub version: Option<i64>,
}

pub async fn put(ctx: &Context, file: &Path) -> Result<Report, CliError> {
    let candidate = candidate(file)?;
    let names = ctx.names().await?;
    let existing = stored(ctx, names).await?;
    let verdict =
        config::check(&names.apps_path(), &existing, std::slice::from_ref(&candidate), Utc::now(), ctx.endpoints()?)
            .into_iter()
            .next()
            .ok_or_else(|| CliError::invalid("nothing to check"))?;
    let mut put = Put { file: file.display().to_string(), verdict, written: false, version: None };
    if !put.verdict.valid {
        let text = format!("not written: {}", put.verdict.error.as_deref().unwrap_or("invalid"));
        return Ok(Report { json: serde_json::to_value(&put).unwrap_or(Value::Null), text, exit_code: REFUSED });
    }
    let description = "Conveyor app config (written by `conveyor config put`)";
    let version = ctx.ssm()?.put(&put.verdict.parameter, &candidate.json, description).await?;
    put.written = true;
    put.version = Some(version);
    let text = format!("{} is valid: wrote {} (version {version})", put.file, put.verdict.parameter);
    Ok(Report::done(serde_json::to_value(&put).unwrap_or(Value::Null), text))
}

/// One row per valid config, one per problem of an invalid one (as a linter lists them).
fn table(style: &Style, checked: &[Checked]) -> String {
    let mut table = style.table(&["APP", "SOURCE", "RESULT", "PROBLEM"]);
    for c in checked {
        let result = if c.verdict.valid { "valid" } else { "invalid" };
        let problems: Vec<String> = c.verdict.problems.iter().map(|p| format!("`{}`: {}", p.key, p.problem)).collect();
        for problem in problems.iter().map(String::as_str).chain(problems.is_empty().then_some("")) {
            table.add_row(vec![
                style.cell(&c.verdict.app, None),
                style.cell(c.file.as_deref().unwrap_or(&c.verdict.parameter), None),
                style.state(result, Tone::verdict(c.verdict.valid)),
                style.cell(problem, None),
            ]);
        }
    }
    render(&table)
}
