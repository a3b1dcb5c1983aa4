//! `cargo fuzz run push_event` (nightly, libFuzzer); without cargo fuzz, a replay binary:
//! `cargo run --release --bin push_event -- FILE_OR_DIR...` (or the input on standard input).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| conveyor_fuzz::push_event(data));

#[cfg(not(fuzzing))]
fn main() {
    conveyor_fuzz::replay("push_event", conveyor_fuzz::push_event);
}
