//! How results look: tables and lines for people (colour only on a terminal), one JSON document
//! for programs.

use chrono::{DateTime, Utc};
use comfy_table::{presets, Attribute, Cell, Color, ContentArrangement, Table};
use serde_json::Value;

use conveyor::rollout::RolloutKind;
use conveyor::vocabulary::{Action, Outcome, PromoteStatus};

use crate::args::ColorMode;

/// What a command produced: the JSON document, the text, and the exit code.
#[derive(Debug, Clone)]
pub struct Report {
    pub json: Value,
    pub text: String,
    pub exit_code: u8,
}

impl Report {
    pub fn done(json: Value, text: String) -> Self {
        Report { json, text, exit_code: crate::error::DONE }
    }
}

/// Whether (and how) text is decorated.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
    /// stdout is a terminal: tables fit its width.
    pub tty: bool,
}

impl Style {
    /// `tty`: stdout is a terminal.
    pub fn new(mode: ColorMode, json: bool, tty: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = !json
            && match mode {
                ColorMode::Always => true,
                ColorMode::Never => false,
                ColorMode::Auto => tty && !no_color,
            };
        Style { color, tty }
    }

    /// A borderless table with a header (bold when colouring).
    pub fn table(&self, header: &[&str]) -> Table {
        let mut table = Table::new();
        table.load_preset(presets::NOTHING);
        if self.tty {
            table.set_content_arrangement(ContentArrangement::Dynamic);
        }
        if self.color {
            table.enforce_styling();
        }
        table.set_header(header.iter().map(|h| self.cell(h, None).add_attribute(Attribute::Bold)).collect::<Vec<_>>());
        table
    }

    pub fn cell(&self, text: &str, color: Option<Color>) -> Cell {
        let cell = Cell::new(text);
        match (self.color, color) {
            (true, Some(color)) => cell.fg(color),
            (true, None) => cell,
            (false, _) => cell,
        }
    }

    /// A cell coloured by its tone.
    pub fn state(&self, text: &str, tone: impl Into<Tone>) -> Cell {
        self.cell(text, tone.into().color())
    }

    /// `text` in its tone's colour (ANSI), when colouring.
    pub fn paint(&self, text: &str, tone: impl Into<Tone>) -> String {
        let code = match tone.into().color() {
            Some(Color::Green) => "32",
            Some(Color::Red) => "31",
            Some(Color::Yellow) => "33",
            Some(Color::Magenta) => "35",
            Some(Color::DarkGrey) => "90",
            _ => return text.to_owned(),
        };
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// How a state reads at a glance; each of the library's state enums says which it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Done and fine (green).
    Good,
    /// Failed, people may have to act (red).
    Bad,
    /// Under way (yellow).
    Busy,
    /// Held or changed by hand (magenta).
    Attention,
    /// Over, nothing to see (grey).
    Quiet,
    Plain,
}

impl Tone {
    fn color(self) -> Option<Color> {
        match self {
            Tone::Good => Some(Color::Green),
            Tone::Bad => Some(Color::Red),
            Tone::Busy => Some(Color::Yellow),
            Tone::Attention => Some(Color::Magenta),
            Tone::Quiet => Some(Color::DarkGrey),
            Tone::Plain => None,
        }
    }

    /// Good when `ok`, else bad (a config's verdict).
    pub fn verdict(ok: bool) -> Self {
        if ok {
            Tone::Good
        } else {
            Tone::Bad
        }
    }
}

impl From<Outcome> for Tone {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Verified | Outcome::Restored | Outcome::Resumed | Outcome::Approved => Tone::Good,
            Outcome::RolledBack | Outcome::Failed | Outcome::ConfigError => Tone::Bad,
            Outcome::Deploying | Outcome::Promoted | Outcome::Held | Outcome::Soaking => Tone::Busy,
            Outcome::Paused | Outcome::Drift | Outcome::ApprovalRequested => Tone::Attention,
            Outcome::Superseded | Outcome::Rejected | Outcome::ApprovalExpired | Outcome::Deregistered => Tone::Quiet,
        }
    }
}

impl From<RolloutKind> for Tone {
    fn from(kind: RolloutKind) -> Self {
        match kind {
            RolloutKind::Verified => Tone::Good,
            RolloutKind::RolledBack | RolloutKind::Failed => Tone::Bad,
            RolloutKind::InProgress => Tone::Busy,
            RolloutKind::Superseded => Tone::Quiet,
        }
    }
}

impl From<PromoteStatus> for Tone {
    fn from(status: PromoteStatus) -> Self {
        match status {
            PromoteStatus::AlreadyDeployed => Tone::Good,
            PromoteStatus::Deploying | PromoteStatus::DryRun | PromoteStatus::RollingBack => Tone::Busy,
            PromoteStatus::AwaitingApproval => Tone::Attention,
        }
    }
}

impl From<Action> for Tone {
    fn from(action: Action) -> Self {
        match action {
            Action::Verified | Action::Restored | Action::Delivered | Action::Deregistered => Tone::Good,
            Action::RolledBack | Action::Failed | Action::Error => Tone::Bad,
            Action::Deploying | Action::Waiting | Action::Soaking => Tone::Busy,
            Action::Paused | Action::Drift => Tone::Attention,
            Action::Superseded => Tone::Quiet,
            Action::Skipped => Tone::Plain,
        }
    }
}

/// A table as text, without trailing blanks.
pub fn render(table: &Table) -> String {
    table.lines().map(|line| line.trim_end().to_owned()).collect::<Vec<_>>().join("\n")
}

/// `2026-05-01T12:00:03Z`.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `45s`, `3m05s`, `2h05m`, `3d04h`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `sha256:0123456789ab` (the first 12 hex digits, as `docker images` shows them).
pub fn short_digest(digest: &str) -> &str {
    let end = digest.find(':').map_or(digest.len(), |i| i + 13).min(digest.len());
    &digest[..end]
}

/// An identity ARN without the partition and account: `assumed-role/dev/ana`, `user/ana`.
pub fn who(arn: &str) -> &str {
    if arn.starts_with("arn:") {
        arn.splitn(6, ':').nth(5).unwrap_or(arn)
    } else {
        arn
    }
}

/// Who asked, for people: the verified identity ([`who`]), else the name the request gave, marked
/// as unverified (`user/moto (unverified)`); `-` when neither is known.
pub fn requester(verified: Option<&str>, on_behalf_of: Option<&str>) -> String {
    match (verified, on_behalf_of) {
        (Some(verified), Some(name)) if name != verified => format!("{} on behalf of {}", who(verified), who(name)),
        (Some(verified), _) => who(verified).to_owned(),
        (None, Some(name)) => format!("{} (unverified)", who(name)),
        (None, None) => "-".to_owned(),
    }
}

pub fn or_dash(text: Option<&str>) -> &str {
    text.filter(|t| !t.is_empty()).unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_well_in_a_table() {
        assert_eq!(duration(7), "7s");
        assert_eq!(duration(185), "3m05s");
        assert_eq!(duration(2 * 3600 + 5 * 60 + 9), "2h05m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600), "3d04h");
        assert_eq!(duration(-3), "0s");
        assert_eq!(short_digest(&format!("sha256:{}", "ab".repeat(32))), "sha256:abababababab");
        assert_eq!(short_digest("sha256:abc"), "sha256:abc");
        assert_eq!(who("arn:aws:sts::123456789012:assumed-role/dev/ana"), "assumed-role/dev/ana");
        assert_eq!(who("ana"), "ana");
        assert_eq!(requester(Some("arn:aws:sts::1:assumed-role/dev/ana"), None), "assumed-role/dev/ana");
        assert_eq!(requester(None, Some("arn:aws:sts::1:user/moto")), "user/moto (unverified)");
        assert_eq!(requester(Some("ana"), Some("bob")), "ana on behalf of bob");
        assert_eq!(requester(None, None), "-");
    }

    #[test]
    fn no_colour_unless_asked_for_or_on_a_terminal() {
        let style = Style { color: false, tty: false };
        assert_eq!(style.paint("verified", Outcome::Verified), "verified");
        let table = style.table(&["A", "B"]);
        assert_eq!(render(&table), " A  B");
        let style = Style { color: true, tty: false };
        assert_eq!(style.paint("failed", Outcome::Failed), "\x1b[31mfailed\x1b[0m");
    }
}
