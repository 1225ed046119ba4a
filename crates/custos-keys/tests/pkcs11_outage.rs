//! A token that goes away and comes back: signing fails with a clear error
//! while it is gone and resumes by itself, without reopening the key store.
//! Alone in its test binary because it takes the shared SoftHSM2 token away.

mod common;

use custos_keys::pkcs11::{Pkcs11KeyStore, TokenConfig};
use custos_keys::{KeyAlgorithm, KeyStore};

/// The token directory from the SoftHSM2 configuration.
fn token_dir() -> std::path::PathBuf {
    let conf = std::env::var("SOFTHSM2_CONF").expect("SOFTHSM2_CONF is set with CUSTOS_TEST_PKCS11");
    let text = std::fs::read_to_string(conf).expect("read softhsm2.conf");
    let line = text.lines().find(|l| l.trim_start().starts_with("directories.tokendir")).expect("tokendir line");
    line.split_once('=').expect("=").1.trim().into()
}

/// Moves the token files away; puts them back on drop, even if the test fails.
struct Removed(std::path::PathBuf);

impl Removed {
    fn new(dir: std::path::PathBuf) -> Removed {
        std::fs::rename(&dir, dir.with_extension("away")).expect("move token files away");
        Removed(dir)
    }
}

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::rename(self.0.with_extension("away"), &self.0);
    }
}

/// Finalizes the module behind the store's back, as a restarted HSM daemon or library would.
fn pull_the_library(config: &TokenConfig) {
    let ctx = cryptoki::context::Pkcs11::new(&config.module_path).expect("load module");
    ctx.finalize().expect("finalize");
}

#[test]
fn signing_resumes_after_the_token_goes_away_and_comes_back() {
    let Some(uri) = common::token_uri() else { return };
    let config = TokenConfig::parse(&uri).expect("uri");
    let store = Pkcs11KeyStore::open(config.clone()).expect("open");
    let key = store.generate(KeyAlgorithm::EcdsaP256, "outage").expect("generate");
    key.signer.sign(b"before").expect("sign before");

    // The library is re-initialized under us: the next signature reconnects and succeeds.
    pull_the_library(&config);
    key.signer.sign(b"after a library restart").expect("signing resumes after re-initialization");

    // The token's files are gone: a clear error, not a crash or a hang.
    {
        let _away = Removed::new(token_dir());
        pull_the_library(&config);
        let err = key.signer.sign(b"while gone").expect_err("no token, no signature");
        // The token's own error (KeyError::Token) travels in the signature error.
        assert_eq!(err.backend, custos_keys::pkcs11::BACKEND, "{err:?}");
        assert!(err.detail.starts_with("PKCS#11 token: cannot"), "{err:?}");
        let said = err.to_string();
        eprintln!("while the token is gone: {said}");
        assert!(said.contains("unavailable") && said.contains("resumes by itself"), "{said}");
        assert!(key.signer.sign(b"still gone").is_err());
    }
    // Back again: the same signer works, with no reopening.
    let sig = key.signer.sign(b"back").expect("signing resumes once the token is back");
    assert!(!sig.is_empty());
    store.destroy(&key.reference).expect("destroy");
}
