//! A relying party's sign-in export, as `custos audit match` reads it (JSON
//! lines or CSV): untrusted input from outside custos.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = custos_ca::signins::parse_signins(data);
});
