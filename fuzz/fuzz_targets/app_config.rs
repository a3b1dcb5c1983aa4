//! `cargo fuzz run app_config` (nightly, libFuzzer); without cargo fuzz, a replay binary:
//! `cargo run --release --bin app_config -- FILE_OR_DIR...` (or the input on standard input).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| conveyor_fuzz::app_config(data));

#[cfg(not(fuzzing))]
fn main() {
    conveyor_fuzz::replay("app_config", conveyor_fuzz::app_config);
}
