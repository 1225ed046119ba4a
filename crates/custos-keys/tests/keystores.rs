//! One key-store contract, run against every backend: the sealed soft store,
//! and a real SoftHSM2 token through PKCS#11 (scripts/test creates it and sets
//! SOFTHSM2_CONF and CUSTOS_TEST_PKCS11). Signatures are checked with
//! aws-lc-rs against the SPKI each backend reports.

mod common;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use common::token_uri;
use custos_keys::pkcs11::{Pkcs11KeyStore, TokenConfig};
use custos_keys::soft::SoftKeyStore;
use custos_keys::{KeyAlgorithm, KeyError, KeyStore};

/// Verifies an X.509-encoded signature with the algorithm the key implies.
fn verifies(algorithm: KeyAlgorithm, spki_raw: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let alg: &dyn signature::VerificationAlgorithm = match algorithm {
        KeyAlgorithm::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
        KeyAlgorithm::EcdsaP384 => &signature::ECDSA_P384_SHA384_ASN1,
        KeyAlgorithm::Ed25519 => &signature::ED25519,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    UnparsedPublicKey::new(alg, spki_raw).verify(message, sig).is_ok()
}

/// The contract every backend meets.
fn contract(store: &dyn KeyStore, algorithms: &[KeyAlgorithm]) {
    for &algorithm in algorithms {
        let key = store.generate(algorithm, &format!("test-{algorithm}")).expect("generate");
        assert_eq!(key.reference.backend, store.backend());
        assert_eq!(key.signer.algorithm(), algorithm);
        let message = b"to be signed by custos";
        let sig = key.signer.sign(message).expect("sign");
        let raw = key.signer.public_key().raw();
        assert!(verifies(algorithm, raw, message, &sig), "{algorithm}: signature does not verify");
        assert!(!verifies(algorithm, raw, b"something else", &sig), "{algorithm}: verifies the wrong message");
        // The SPKI is well-formed DER that aws-lc-rs accepts for the same key.
        assert!(key.signer.public_key().spki_der().ends_with(raw) || algorithm.as_str().starts_with("rsa"));

        let loaded = store.load(&key.reference).expect("load");
        assert_eq!(loaded.public_key(), key.signer.public_key(), "{algorithm}: load finds the same key");
        let sig = loaded.sign(message).expect("sign after load");
        assert!(verifies(algorithm, raw, message, &sig));

        store.destroy(&key.reference).expect("destroy");
        // A soft key lives in its sealed reference, which the caller wipes; a token key lives in the token.
        if store.backend() != custos_keys::soft::BACKEND {
            assert!(store.load(&key.reference).is_err(), "{algorithm}: a destroyed key cannot be loaded");
        }
    }
}

/// The secret-key half of the contract: a MAC is a function of key and
/// message only, a secret key never signs, and a signing key never MACs.
fn secret_contract(store: &dyn KeyStore) {
    let secret = store.generate_secret("test-secret").expect("generate a secret");
    assert_eq!(secret.backend, store.backend());
    let a = store.mac(&secret, b"tenant-a").expect("mac");
    assert_eq!(a, store.mac(&secret, b"tenant-a").expect("mac again"), "a MAC is deterministic");
    assert_ne!(a, store.mac(&secret, b"tenant-b").expect("mac"), "different messages, different MACs");
    let other = store.generate_secret("test-secret-2").expect("second secret");
    assert_ne!(a, store.mac(&other, b"tenant-a").expect("mac"), "different keys, different MACs");
    assert!(store.load(&secret).is_err(), "a secret key cannot be loaded as a signer");
    let signing = store.generate(KeyAlgorithm::EcdsaP256, "test-not-secret").expect("generate");
    assert!(store.mac(&signing.reference, b"x").is_err(), "a signing key cannot compute MACs");
    for r in [&secret, &other, &signing.reference] {
        store.destroy(r).expect("destroy");
    }
    if store.backend() != custos_keys::soft::BACKEND {
        assert!(store.mac(&secret, b"tenant-a").is_err(), "a destroyed secret key is gone");
    }
}

/// The connection-key half of the contract: a connection key signs digests
/// with every scheme that fits it (checked by aws-lc-rs), is refused as a CA
/// signer, and a CA key is refused as a connection key.
fn connection_contract(store: &dyn KeyStore, algorithms: &[KeyAlgorithm]) {
    use custos_keys::connection::DigestScheme;
    let message = b"header.claims of a client assertion";
    let digest: [u8; 32] =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message).as_ref().try_into().expect("32");
    for &algorithm in algorithms {
        let made = store.generate_connection_key(algorithm, &format!("tenant/conn-{algorithm}")).expect("generate");
        let raw = made.key.public_key().raw().to_vec();
        let schemes: &[(DigestScheme, &dyn signature::VerificationAlgorithm)] = match algorithm {
            KeyAlgorithm::EcdsaP256 => &[(DigestScheme::EcdsaP256, &signature::ECDSA_P256_SHA256_ASN1)],
            _ => &[
                (DigestScheme::RsaPss, &signature::RSA_PSS_2048_8192_SHA256),
                (DigestScheme::RsaPkcs1, &signature::RSA_PKCS1_2048_8192_SHA256),
            ],
        };
        let loaded = store.load_connection_key(&made.reference).expect("load the connection key");
        assert_eq!(loaded.public_key(), made.key.public_key());
        for (scheme, verify) in schemes {
            for key in [&made.key, &loaded] {
                let sig = key.sign_digest(*scheme, &digest).expect("sign a digest");
                assert!(
                    UnparsedPublicKey::new(*verify, &raw).verify(message, &sig).is_ok(),
                    "{algorithm} {scheme:?}: the signature over the digest does not verify over the message"
                );
            }
        }
        let wrong = if algorithm == KeyAlgorithm::EcdsaP256 { DigestScheme::RsaPss } else { DigestScheme::EcdsaP256 };
        assert!(matches!(made.key.sign_digest(wrong, &digest), Err(KeyError::Purpose(_))));
        // A connection key never becomes a CA signer.
        let refused = store.load(&made.reference).err().expect("a connection key is not a CA key");
        assert!(matches!(refused, KeyError::Purpose(_)), "{refused:?}");
        store.destroy(&made.reference).expect("destroy");
    }
    // A CA key never signs a caller's digest.
    let ca = store.generate(KeyAlgorithm::EcdsaP256, "test-ca-key").expect("generate a CA key");
    let refused = store.load_connection_key(&ca.reference).expect_err("a CA key is not a connection key");
    assert!(matches!(refused, KeyError::Purpose(_)), "{refused:?}");
    store.destroy(&ca.reference).expect("destroy");
    // Only the algorithms relying parties take.
    assert!(matches!(store.generate_connection_key(KeyAlgorithm::Ed25519, "x"), Err(KeyError::Purpose(_))));
}

#[test]
fn soft_store_honours_the_contract() {
    let (store, _seal) = SoftKeyStore::create(b"passphrase").expect("create");
    contract(&store, &KeyAlgorithm::ALL);
    secret_contract(&store);
    connection_contract(&store, &[KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048, KeyAlgorithm::Rsa3072]);
}

#[test]
fn pkcs11_token_honours_the_contract() {
    let Some(uri) = token_uri() else { return };
    let _token = TOKEN.lock().unwrap_or_else(|e| e.into_inner());
    let store = Pkcs11KeyStore::open(TokenConfig::parse(&uri).expect("uri")).expect("open token");
    // RSA 3072/4096 generation on SoftHSM takes seconds each; 2048 exercises the same code.
    contract(&store, &[KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Rsa2048, KeyAlgorithm::Ed25519]);
    secret_contract(&store);
    connection_contract(&store, &[KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048]);
}

/// One test on the token at a time: SoftHSM2's file store, written by
/// pkcs11-tool in another process, can hide this process's keys from it
/// while it rescans (seen as a rare "no such key" in the contract test).
static TOKEN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lines pkcs11-tool printed for the object labelled `label`.
fn object_listing(listing: &str, label: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in listing.lines() {
        if !line.starts_with(' ') {
            if inside {
                break;
            }
            out.clear();
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if line.trim() == format!("label:      {label}") {
            inside = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(inside, "no object labelled {label} in:\n{listing}");
    out
}

#[test]
fn pkcs11_keys_are_sensitive_and_never_leave_the_token() {
    let Some(uri) = token_uri() else { return };
    let _token = TOKEN.lock().unwrap_or_else(|e| e.into_inner());
    let config = TokenConfig::parse(&uri).expect("uri");
    let store = Pkcs11KeyStore::open(config.clone()).expect("open token");
    let key = store.generate(KeyAlgorithm::EcdsaP256, "custody-check").expect("generate");
    let p = store.protection(&key.reference).expect("attributes");
    assert!(p.sensitive && !p.extractable && p.token && p.always_sensitive && p.never_extractable, "{p:?}");
    assert!(p.acceptable());

    // OpenSC's pkcs11-tool, not our code, agrees.
    let pin = match &config.pin_source {
        custos_keys::pkcs11::PinSource::File(path) => std::fs::read_to_string(path).expect("pin").trim().to_string(),
        custos_keys::pkcs11::PinSource::Env(name) => std::env::var(name).expect("pin"),
    };
    let out = std::process::Command::new("pkcs11-tool")
        .args(["--module", config.module_path.to_str().expect("path"), "--token-label", &config.token])
        .args(["--login", "--pin", &pin, "--list-objects", "--type", "privkey", "--label", "custody-check"])
        .output()
        .expect("pkcs11-tool");
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{all}");
    // pkcs11-tool lists every private key on the token: look at ours only.
    let listed = object_listing(&all, "custody-check");
    assert!(listed.contains("always sensitive") && listed.contains("never extractable"), "{listed}");
    assert!(!listed.contains(" extractable,") || listed.contains("never extractable"), "{listed}");
    // A signing key only: no decrypt, unwrap or derive (pkcs11-tool lists a key's usage).
    let usage = listed.lines().find(|l| l.trim_start().starts_with("Usage:")).expect("usage line");
    assert!(usage.contains("sign"), "{listed}");
    for not in ["decrypt", "unwrap", "derive"] {
        assert!(!usage.contains(not), "the key may {not}: {listed}");
    }
    store.destroy(&key.reference).expect("destroy");

    // A key made extractable by someone else (OpenSC here) is refused at load.
    let made = std::process::Command::new("pkcs11-tool")
        .args(["--module", config.module_path.to_str().expect("path"), "--token-label", &config.token])
        .args(["--login", "--pin", &pin, "--keypairgen", "--key-type", "EC:prime256v1"])
        .args(["--id", "c0ffee01", "--label", "exportable", "--extractable"])
        .output()
        .expect("pkcs11-tool keypairgen");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let exportable = custos_keys::KeyReference {
        backend: "pkcs11".into(),
        data: format!("pkcs11:token={};id=%C0%FF%EE%01;object=exportable;type=private", config.token).into_bytes(),
    };
    // SoftHSM notices objects another process wrote when it next rescans its
    // token directory, which can take a moment: wait for the key to be seen.
    let mut refused = store.load(&exportable).err().expect("an extractable key is refused");
    for _ in 0..40 {
        if !refused.to_string().contains("no such key") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        refused = store.load(&exportable).err().expect("an extractable key is refused");
    }
    assert!(matches!(refused, KeyError::Exportable { .. }), "{refused:?}");
    assert!(refused.to_string().contains("refuses"), "{refused}");
    store.destroy(&exportable).expect("clean up");

    // A key imported from outside (so once outside the token, maybe copied) is
    // refused, though it is sensitive and not extractable now: OpenSC writes it.
    let dir = tempfile::tempdir().expect("tempdir");
    let der = dir.path().join("k.der");
    let public = dir.path().join("p.der");
    let ok = |c: &mut std::process::Command| {
        let out = c.output().expect("run");
        assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-outform", "DER", "-out"])
        .arg(&der));
    ok(std::process::Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-pubout", "-outform", "DER", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&public));
    let tool = || {
        let mut c = std::process::Command::new("pkcs11-tool");
        c.args([
            "--module",
            config.module_path.to_str().expect("path"),
            "--token-label",
            &config.token,
            "--login",
            "--pin",
            &pin,
        ]);
        c
    };
    ok(tool().arg("--write-object").arg(&der).args([
        "--type",
        "privkey",
        "--id",
        "c0ffee02",
        "--label",
        "imported",
        "--sensitive",
    ]));
    ok(tool().arg("--write-object").arg(&public).args(["--type", "pubkey", "--id", "c0ffee02", "--label", "imported"]));
    let listed = object_listing(&ok(tool().args(["--list-objects", "--type", "privkey"])), "imported");
    assert!(listed.contains("sensitive") && !listed.contains("never extractable"), "{listed}");
    let imported = custos_keys::KeyReference {
        backend: "pkcs11".into(),
        data: format!("pkcs11:token={};id=%C0%FF%EE%02;object=imported;type=private", config.token).into_bytes(),
    };
    let mut refused = store.load(&imported).err().expect("an imported key is refused");
    for _ in 0..40 {
        if !refused.to_string().contains("no such key") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        refused = store.load(&imported).err().expect("an imported key is refused");
    }
    assert!(matches!(refused, KeyError::Exportable { .. }), "{refused:?}");
    let p = store.protection(&imported).expect("attributes");
    assert!(p.sensitive && !p.extractable && !(p.always_sensitive && p.never_extractable), "{p:?}");
    store.destroy(&imported).expect("clean up");

    // A bad PIN source is a clear error.
    let bad = TokenConfig { pin_source: custos_keys::pkcs11::PinSource::Env("CUSTOS_NO_SUCH_PIN".into()), ..config };
    assert!(matches!(Pkcs11KeyStore::open(bad), Err(KeyError::Config(_))));
}
