//! A DNS answer to a dns-01 TXT query: untrusted input from the resolver
//! (or anyone spoofing it over UDP).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let id = data.first().map_or(0, |b| u16::from(*b) << 8 | u16::from(*data.get(1).unwrap_or(&0)));
    let _ = custos_acme::dns::txt_answers(id, "_acme-challenge.www.acme.example", data);
});
