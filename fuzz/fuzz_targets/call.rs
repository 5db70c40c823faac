//! The call state machine driven by a script of provider frames, Realtime events, clock steps
//! and socket events on a virtual clock; see `callbridge_fuzz::check_call` for the script
//! format and the invariants. Steps around open finding F2 unless `CALLBRIDGE_FUZZ_KNOWN=1`
//! (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if callbridge_fuzz::skip_known(callbridge_fuzz::known_finding_call(data)) {
        return;
    }
    callbridge_fuzz::check_call(data);
});
