//! What the key-store tests share: the SoftHSM2 token scripts/test creates.

/// The token URI scripts/test exported, or None (then PKCS#11 tests are skipped unless tools are required).
pub fn token_uri() -> Option<String> {
    match std::env::var("CUSTOS_TEST_PKCS11") {
        Ok(uri) => Some(uri),
        Err(_) => {
            let required = std::env::var("CUSTOS_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
                || std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!required, "CUSTOS_TEST_PKCS11 is not set: run through scripts/test");
            eprintln!("skipping PKCS#11: CUSTOS_TEST_PKCS11 not set");
            None
        }
    }
}
