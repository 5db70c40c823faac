//! Provider payload bytes through the `Transcoder` (G.711/L16 ⇄ PCM16, resampling, flush,
//! reset) and the re-framing ring, then raw samples through the `StreamResampler`; see
//! `callbridge_fuzz::check_transcode` and `check_resample`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callbridge_fuzz::check_transcode(data);
    callbridge_fuzz::check_resample(data);
});
