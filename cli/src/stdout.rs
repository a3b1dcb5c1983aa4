//! stdout carries the command's result and nothing else (one JSON document with `--json`).
//!
//! The library is built for Lambda, where stdout is the log stream: it writes CloudWatch Embedded
//! Metric Format lines there when a transition commits (a pause, a resume). In the CLI those lines
//! would reach no metric and would break `--json`, so the process's stdout (fd 1, what `println!`
//! writes to) is pointed elsewhere — at stderr with `-v`, else nowhere — and the result is written
//! to a copy of the original stdout.

use std::io::Write;

/// Where the command's result goes; from now on `println!` anywhere in the process does not.
#[cfg(unix)]
pub fn take(verbose: bool) -> Box<dyn Write> {
    use std::os::fd::{AsFd, OwnedFd};
    let Ok(result) = rustix::io::dup(std::io::stdout().as_fd()) else { return Box::new(std::io::stdout()) };
    let sink: std::io::Result<OwnedFd> = if verbose {
        rustix::io::dup(std::io::stderr().as_fd()).map_err(Into::into)
    } else {
        std::fs::File::options().write(true).open("/dev/null").map(OwnedFd::from)
    };
    match sink.map(|sink| rustix::stdio::dup2_stdout(&sink)) {
        Ok(Ok(())) => Box::new(std::fs::File::from(result)),
        _ => Box::new(std::io::stdout()),
    }
}

#[cfg(not(unix))]
pub fn take(_verbose: bool) -> Box<dyn Write> {
    Box::new(std::io::stdout())
}
