//! What `/api/v1` parses before custos-ca decides anything: JSON bodies,
//! cursors, durations, roles, reasons, incident scopes and bearer tokens.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    custos_server::api::parse_untrusted(data);
});
