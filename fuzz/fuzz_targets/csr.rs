//! CSR parsing and verification (what `custos issue --csr` and bulk lines feed it).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = custos_pki::CertificateRequest::parse(data);
});
