//! An ACME request body (RFC 8555 JWS) and what custos reads out of it: the
//! protected header, the JWK, an External Account Binding, each payload
//! type, ARI certificate ids and timestamps. Untrusted input from any client
//! that reaches `/acme/`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(jws) = custos_acme::Jws::parse(data) {
        if let custos_acme::KeyRef::Jwk(key) = &jws.protected.key {
            let _ = jws.verify(key);
            let _ = key.thumbprint();
        }
        let _ = jws.payload_as::<custos_acme::AccountRequest>("newAccount").map(|r| {
            r.external_account_binding.as_ref().map(custos_acme::Eab::parse)
        });
        let _ = jws.payload_as::<custos_acme::OrderRequest>("newOrder");
        let _ = jws.payload_as::<custos_acme::FinalizeRequest>("finalize");
        let _ = jws.payload_as::<custos_acme::RevokeRequest>("revokeCert");
        let _ = jws.payload_as::<custos_acme::KeyChangeRequest>("keyChange");
        let _ = custos_acme::Jws::parse(&jws.payload);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = custos_acme::CertId::parse(text);
        let _ = custos_acme::parse_rfc3339(text, "fuzz");
    }
});
