//! SignalWire `<Stream>` frames through `ProviderCodec::decode` (the SignalWire dialect: UUIDs,
//! L16 formats, optional fields); see `callbridge_fuzz::check_provider`.
#![no_main]

use callbridge::core::telephony::Dialect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callbridge_fuzz::check_provider(Dialect::SignalWire, data);
});
