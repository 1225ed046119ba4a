//! A witness's `add-checkpoint` request body (C2SP tlog-witness): untrusted
//! input from any client that can reach `custos witness serve`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = custos_audit::witness::AddCheckpoint::parse(data);
});
