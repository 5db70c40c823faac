//! L16 in both byte orders, odd lengths and arbitrary splits; see `callbridge_fuzz::check_l16`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callbridge_fuzz::check_l16(data);
});
