//! `Config::from_source` on an environment built from `NAME=value` lines; see
//! `callbridge_fuzz::check_config`. Steps around open finding F1 unless
//! `CALLBRIDGE_FUZZ_KNOWN=1` (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if callbridge_fuzz::skip_known(callbridge_fuzz::known_finding_config(data)) {
        return;
    }
    callbridge_fuzz::check_config(data);
});
