//! `cargo fuzz run promote_request` (nightly, libFuzzer); without cargo fuzz, a replay binary:
//! `cargo run --release --bin promote_request -- FILE_OR_DIR...` (or the input on standard input).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| conveyor_fuzz::promote_request(data));

#[cfg(not(fuzzing))]
fn main() {
    conveyor_fuzz::replay("promote_request", conveyor_fuzz::promote_request);
}
