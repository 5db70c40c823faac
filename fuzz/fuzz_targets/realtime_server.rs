//! OpenAI Realtime server events through `RealtimeDecoder::decode`; see
//! `callbridge_fuzz::check_realtime`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callbridge_fuzz::check_realtime(data);
});
