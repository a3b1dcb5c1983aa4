//! `conveyor`: the operator's command line for Conveyor (see `docs/cli.md`).

mod args;
mod commands;
mod context;
mod error;
mod output;
mod proof;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use args::Cli;
use context::Context;
use error::CliError;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage(&error),
    };
    // Generated from the command line's own definition: no AWS, no runtime.
    match &cli.command {
        args::Command::Completions { shell } => return generated(|out| completions(*shell, out)),
        args::Command::Man => return generated(|out| clap_mangen::Man::new(Cli::command()).render(out)),
        _ => {}
    }
    init_logs(cli.global.verbose);
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("conveyor: cannot start: {error}");
            return ExitCode::from(error::AWS_OR_CONFIG);
        }
    };
    let json = cli.global.json;
    let outcome = runtime.block_on(async {
        let ctx = Context::new(&cli.global, tty).await;
        commands::run(&ctx, cli.command).await
    });
    let code = match outcome {
        Ok(report) => {
            print(&mut out, json, &report.json, &report.text);
            report.exit_code
        }
        Err(error) => {
            if json {
                print(&mut out, true, &error.json(), "");
            } else {
                eprintln!("conveyor: {error}");
            }
            error.exit_code
        }
    };
    ExitCode::from(code)
}

fn print(out: &mut dyn Write, json: bool, document: &serde_json::Value, text: &str) {
    let mut written = if json { serde_json::to_string_pretty(document).unwrap_or_default() } else { text.to_owned() };
    written.push('\n');
    let _ = out.write_all(written.as_bytes()).and_then(|()| out.flush());
}

fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    clap_complete::generate(shell, &mut Cli::command(), "conveyor", out);
    Ok(())
}

/// Writes what `write` generates to stdout: done (`0`), or `4` when stdout refuses it.
fn generated(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::from(error::DONE),
        Err(error) => {
            eprintln!("conveyor: cannot write: {error}");
            ExitCode::from(error::AWS_OR_CONFIG)
        }
    }
}

/// Help and version are done (`0`); any other usage error is invalid input (`1`).
fn usage(error: &clap::Error) -> ExitCode {
    if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = error.print();
        return ExitCode::from(error::DONE);
    }
    if std::env::args().any(|arg| arg == "--json") {
        let message = error.kind().as_str().map_or_else(|| error.to_string(), str::to_owned);
        let failure = CliError::invalid(format!("{message}: {}", error.render().to_string().trim()));
        print(&mut std::io::stdout(), true, &failure.json(), "");
    } else {
        let _ = error.print();
    }
    ExitCode::from(error::REFUSED)
}

/// The library's logs on stderr with `-v` (or `RUST_LOG`): without, what went wrong is the
/// command's own message (an invalid app config is reported once, by the command that meets it,
/// not also as the library's raw log lines).
fn init_logs(verbose: u8) {
    let level = match verbose {
        0 => "off",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
