//! What `/api/v1` and the console parse before custos-ca decides anything:
//! JSON bodies, cursors, durations, roles, reasons, incident scopes, bearer
//! tokens, cookies, query strings and form bodies.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    custos_server::api::parse_untrusted(data);
    custos_server::console::parse_untrusted(data);
});
