//! Twilio media-stream frames through `ProviderCodec::decode`, plus the outbound encoder on the
//! same text (see `callbridge_fuzz::check_provider`).
#![no_main]

use callbridge::core::telephony::Dialect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callbridge_fuzz::check_provider(Dialect::Twilio, data);
    callbridge_fuzz::check_provider_encode(data);
});
