//! The environment variables that size a test run (`PROPTEST_CASES`, `CONVEYOR_MODEL_STEPS`,
//! `CONVEYOR_MATRIX`, ...), read in one place so that none can shrink a CI run: when `CI=true`
//! (GitHub Actions, GitLab and most CI services set it), a knob may make a run longer, never
//! shorter than the size CI runs by default.
//!
//! A value that does not parse is an error (a panic naming the variable), not silently the
//! default: a long run asked for and not given would pass for one.

/// Whether this run is CI's: `CI=true` (or `1`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The variable `name`, unless unset or empty.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A number the variable `name` sets (panics naming it when it is not one).
pub fn number(name: &str) -> Option<u64> {
    var(name).map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}={v}: not a whole number")))
}

/// A count a run's size is made of: the variable `name`, else `default`; in CI never below
/// `ci_size` (what CI runs when nothing is set).
pub fn size(name: &str, default: u64, ci_size: u64) -> u64 {
    floored(number(name), default, ci_size, ci())
}

/// [`size`] of an explicit value: `value` or `default`, floored at `ci_size` when `ci`.
pub fn floored(value: Option<u64>, default: u64, ci_size: u64, ci: bool) -> u64 {
    let size = value.unwrap_or(default);
    if ci && size < ci_size {
        eprintln!("CI=true: a run of {size} raised to CI's {ci_size}");
        return ci_size;
    }
    size
}

/// Whether a knob that shrinks the run (`CONVEYOR_MATRIX=clean`, a single replayed seed) is
/// honoured: its variable `name` is `value`, and this is not CI (where it is ignored, said once
/// per call).
pub fn shrinks(name: &str, value: &str) -> bool {
    let set = var(name).is_some_and(|v| v == value);
    if set && ci() {
        eprintln!("CI=true: {name}={value} ignored (it would run less than CI does)");
        return false;
    }
    set
}

/// A number that narrows the run to one case (a seed to replay): the variable `name`, ignored in
/// CI (said).
pub fn replay(name: &str) -> Option<u64> {
    let value = number(name)?;
    if ci() {
        eprintln!("CI=true: {name}={value} ignored (it would run less than CI does)");
        return None;
    }
    Some(value)
}
