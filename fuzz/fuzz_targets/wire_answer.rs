//! Fuzzing what a sink's connection thread makes of a backend's answer
//! (`src/sink/wire.rs`): the bytes a broken, hostile or half-dead backend
//! might send, handed over in pieces of every size.
//!
//! Run: RUSTC_BOOTSTRAP=1 cargo fuzz run wire_answer -- -max_total_time=300
//!
//! Checks: never a panic and never a hang (the input is finite and the
//! reader must stop at its end); an answer keeps at most the body limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, answer)) = data.split_first() else {
        return;
    };
    // The first byte picks the piece size and the body limit.
    let piece = usize::from(first % 64) + 1;
    let body_max = usize::from(first / 64) * 40;
    if let Ok((status, body, _keep_alive)) = sluice::sink::parse_answer(answer, piece, body_max) {
        assert!(body.len() <= body_max);
        assert!(status < 1000);
    }
});
