//! G.711 μ-law and A-law: decode/encode round-trip properties on arbitrary codes and samples;
//! see `callbridge_fuzz::check_g711`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callbridge_fuzz::check_g711(data);
});
