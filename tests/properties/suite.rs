//! The rules of the test suite itself, checked where `make unit` runs them.

use conveyor_testkit::knobs::floored;
use conveyor_testkit::known_bugs::{self, KnownBug};

/// A known bug is listed for the time it takes to fix it, never merged.
#[test]
fn no_known_bug_is_listed() {
    let listed: Vec<&str> = known_bugs::KNOWN_BUGS.iter().map(|bug| bug.name).collect();
    assert!(listed.is_empty(), "known bugs listed in conveyor_testkit::known_bugs: {listed:?}: fix them");
}

/// What a bug excuses: exactly its situations, or every one under a `*` prefix.
#[test]
fn a_known_bug_excuses_its_situations_only() {
    let bug =
        KnownBug { name: "example", diagnosis: "", excuses: &["channels:sweep-outbox", "fault_matrix:rollback/*"] };
    assert!(bug.excuses("channels:sweep-outbox"));
    assert!(!bug.excuses("channels:sweep-outbox-again"));
    assert!(bug.excuses("fault_matrix:rollback/UpdateService#1/throttle"));
    assert!(!bug.excuses("fault_matrix:promote/UpdateService#1/throttle"));
    assert!(known_bugs::excusing("model:runs-an-unnamed-revision").is_none());
}

/// A knob may make a CI run longer, never shorter; outside CI it sets the size.
#[test]
fn knobs_never_shrink_a_ci_run() {
    assert_eq!(floored(None, 30, 30, true), 30);
    assert_eq!(floored(Some(3), 30, 30, true), 30);
    assert_eq!(floored(Some(300), 30, 30, true), 300);
    assert_eq!(floored(Some(3), 30, 30, false), 3);
    // A long mode's default stays; only what is below CI's size is raised.
    assert_eq!(floored(None, 500, 30, true), 500);
    assert_eq!(floored(Some(10), 500, 30, true), 30);
}
