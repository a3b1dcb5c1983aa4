//! The command line, as clap parses it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use conveyor::types::Environment;

/// Operate Conveyor: what runs where, the release history, promote and roll back prod, pause
/// auto-deploys, wait for a verification, check app configs, DORA metrics.
///
/// Runs with your own AWS credentials and only reads Conveyor's state: promotions, rollbacks,
/// pauses and resumes are made by invoking Conveyor's functions (promote for prod, stage-deploy
/// for stage).
/// Names: --stack NAME (read from the stack's outputs), or CONVEYOR_TABLE,
/// CONVEYOR_PROMOTE_FUNCTION, CONVEYOR_STAGE_DEPLOY_FUNCTION, CONVEYOR_SSM_PREFIX.
///
/// Exit codes: 0 done (with --wait: verified), 1 refused or invalid input, 2 rolled back or failed,
/// 3 timed out waiting, 4 AWS or configuration error.
#[derive(Debug, Parser)]
#[command(name = "conveyor", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Print one JSON document on stdout (stable keys) instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Read the names from this CloudFormation stack's outputs (and its SsmPrefix parameter)
    #[arg(long, global = true, env = "CONVEYOR_STACK", value_name = "NAME")]
    pub stack: Option<String>,
    /// AWS profile (default: AWS_PROFILE, else the default profile)
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// AWS region (default: AWS_REGION, else the profile's)
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Colour the text output
    #[arg(long, global = true, value_enum, default_value_t = ColorMode::Auto, value_name = "WHEN")]
    pub color: ColorMode,
    /// Show the library's logs on stderr (-v: info, -vv: debug; RUST_LOG overrides)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    /// When stdout is a terminal and NO_COLOR is not set
    Auto,
    /// Even into a pipe
    Always,
    /// Plain text
    Never,
}

/// `--env NAME`: one of an app's environments (`stage`, `prod`, `dev`, ...).
pub fn environment(name: &str) -> Result<Environment, String> {
    Environment::parse(name).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Per app and environment: what runs (tag, digest, revision), the current rollout, the last
    /// verified release, pauses; per app, the promotable tags, newest first
    Status {
        /// One app (default: every configured app)
        app: Option<String>,
        /// How many promotable tags to list per app
        #[arg(long, default_value_t = 5, value_name = "N")]
        promotable: usize,
    },
    /// The release history of an app, newest first: time, environment, event, tag, digest,
    /// reason, duration, who
    History {
        app: String,
        /// Only this environment
        #[arg(long, value_parser = environment, value_name = "ENV")]
        env: Option<Environment>,
        /// At most this many entries
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
    },
    /// Promote a vetted tag (or digest) to the next environment (stage-vetted to prod, or --to ENV),
    /// through the promote function
    Promote(PromoteArgs),
    /// Put prod back on the verified prod release before the current one (or on a given
    /// promotable tag), through the promote function
    Rollback(RollbackArgs),
    /// Pause an app: stage records pushes but rolls nothing out, prod refuses promotions (every
    /// environment unless --env), through stage-deploy (entry environments: stage) and promote
    /// (the others: prod)
    Pause {
        app: String,
        /// Only this environment (default: every one)
        #[arg(long, value_parser = environment, value_name = "ENV")]
        env: Option<Environment>,
        /// Why (shown in status, the history and the notification)
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Resume a paused app (every environment unless --env), through stage-deploy (entry
    /// environments: stage) and promote (the others: prod)
    Resume {
        app: String,
        /// Only this environment (default: every one)
        #[arg(long, value_parser = environment, value_name = "ENV")]
        env: Option<Environment>,
        /// Stage: roll out the newest push held while paused (stage-deploy replays it)
        #[arg(long)]
        deploy_latest: bool,
    },
    /// Approve the promotion ENV waits for (you must not be the one who requested it), through the
    /// promote function: it then rolls out
    Approve {
        app: String,
        /// The environment (default: the app's one environment with approvals)
        #[arg(long, value_parser = environment, value_name = "ENV")]
        to: Option<Environment>,
        /// The approval to decide, as the request named it (default: whichever is pending)
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Reject the promotion ENV waits for (its requester may withdraw it this way), through the
    /// promote function
    Reject {
        app: String,
        /// The environment (default: the app's one environment with approvals)
        #[arg(long, value_parser = environment, value_name = "ENV")]
        to: Option<Environment>,
        /// The approval to decide, as the request named it (default: whichever is pending)
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Why (shown to the requester, in the history and the notification)
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Wait until an image is verified in an environment (by default the one pushes roll out to:
    /// stage), so that a pipeline can gate on it after a push: exit 0 verified, 2 rolled back,
    /// failed or replaced by a newer rollout, 3 timed out
    Wait(WaitForArgs),
    /// Check the installation and each app's setup (services, controller, container, image,
    /// circuit breaker, pulls across accounts, alarms, native hooks): one line per check with
    /// what to fix; exit 0 unless a check fails (4)
    Doctor {
        /// One app (default: every configured app)
        app: Option<String>,
    },
    /// Print a shell completion script: `conveyor completions bash > /etc/bash_completion.d/conveyor`
    /// (zsh: into a directory of your $fpath as `_conveyor`; fish: ~/.config/fish/completions)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `conveyor man > /usr/local/share/man/man1/conveyor.1`
    Man,
    /// Check app configs with the functions' own validator, or write one to SSM
    #[command(subcommand)]
    Config(ConfigCommand),
    /// DORA metrics from the history: deployment frequency, lead time for changes, change
    /// failure rate, time to restore service
    Metrics {
        /// One app (default: every configured app, and all of them together)
        app: Option<String>,
        /// The window: the last N days
        #[arg(long, default_value_t = 30, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=400))]
        days: u32,
    },
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub app: String,
    /// The tag to promote (resolved to the digest stage verified under it)
    #[arg(required_unless_present = "digest", conflicts_with = "digest")]
    pub tag: Option<String>,
    /// Promote this digest (sha256:...) instead of a tag
    #[arg(long, value_name = "DIGEST")]
    pub digest: Option<String>,
    /// The environment to promote into (default: the app's one environment promoted by hand:
    /// prod)
    #[arg(long, value_parser = environment, value_name = "ENV")]
    pub to: Option<Environment>,
    /// Show what the new prod revision would change; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Promote a stage-verified digest despite an earlier failure (recorded as forced)
    #[arg(long)]
    pub force: bool,
    /// Why (recorded in the history and the notification)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub app: String,
    /// Go to this promotable tag instead of the previous verified prod release
    #[arg(long, value_name = "TAG")]
    pub to: Option<String>,
    /// Why (recorded in the history and the notification)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Show what the new prod revision would change; change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Follow the prod rollout until it is verified (exit 0) or rolled back or failed (exit 2);
    /// a promotion awaiting approval is followed through the decision (rejected: exit 1)
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (exit 3 after): 90s, 10m, 1h
    #[arg(long, default_value = "30m", value_parser = parse_timeout, value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WaitForArgs {
    pub app: String,
    /// The image's tag (as pushed, or as promoted); with a tag pushed again under another
    /// digest, use --digest
    #[arg(required_unless_present = "digest", conflicts_with = "digest")]
    pub tag: Option<String>,
    /// The image's digest (sha256:...) instead of a tag
    #[arg(long, value_name = "DIGEST")]
    pub digest: Option<String>,
    /// The environment (default: the app's one pushes roll out to: stage)
    #[arg(long, value_parser = environment, value_name = "ENV")]
    pub env: Option<Environment>,
    /// Wait out the environment's soak too: until the image is vetted (promotable onward)
    #[arg(long)]
    pub vetted: bool,
    /// How long to wait (exit 3 after): 90s, 10m, 1h
    #[arg(long, default_value = "30m", value_parser = parse_timeout, value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate local app config files (the app's name is the file's name, `shop-api.json`),
    /// against each other and the apps in SSM; without files, every app in SSM
    Validate {
        files: Vec<PathBuf>,
        /// Check the files alone, without reading SSM
        #[arg(long, requires = "files")]
        local: bool,
    },
    /// Write an app config file to {prefix}/apps/{app}, only if it is valid (the other apps in
    /// SSM considered)
    Put { file: PathBuf },
}

/// `90s`, `10m`, `1h`, or seconds.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 90s, 10m or 1h"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("{text:?} is not a duration such as 90s, 10m or 1h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeouts_read_like_people_write_them() {
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_timeout("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("45"), Ok(Duration::from_secs(45)));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("5d").is_err());
    }

    #[test]
    fn promote_takes_a_tag_or_a_digest() {
        assert!(Cli::try_parse_from(["conveyor", "promote", "shop-api", "v1"]).is_ok());
        assert!(Cli::try_parse_from(["conveyor", "promote", "shop-api", "--digest", "sha256:x"]).is_ok());
        assert!(Cli::try_parse_from(["conveyor", "promote", "shop-api"]).is_err());
        assert!(Cli::try_parse_from(["conveyor", "promote", "shop-api", "v1", "--digest", "sha256:x"]).is_err());
        assert!(Cli::try_parse_from(["conveyor", "pause", "shop-api"]).is_err(), "a pause needs a reason");
        assert!(Cli::try_parse_from(["conveyor", "metrics", "--days", "0"]).is_err());
    }
}
