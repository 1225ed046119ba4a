//! OCSP request parsing (what `POST /ocsp` and `GET /ocsp/...` feed it).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = custos_pki::ocsp::OcspRequest::parse(data);
});
