//! custos with its CA, responder and log keys on a real SoftHSM2 token:
//! the same openssl and pkilint checks as the soft store, OpenSC's
//! pkcs11-tool on the key objects, OCSP through the token, the audit log.
//! scripts/test creates the token and exports SOFTHSM2_CONF and CUSTOS_TEST_PKCS11.

mod common;

use common::{Env, Server, ocsp, openssl_verify, pkilint, sh, tools_required};

fn token_uri() -> Option<String> {
    let uri = std::env::var("CUSTOS_TEST_PKCS11").ok();
    if uri.is_none() {
        assert!(!tools_required(), "CUSTOS_TEST_PKCS11 is not set: run through scripts/test");
        eprintln!("skipping: no PKCS#11 token (run scripts/test)");
    }
    uri
}

/// The token label in the URI scripts/test made.
fn token_label(uri: &str) -> String {
    custos_keys::pkcs11::TokenConfig::parse(uri).expect("token URI").token
}

/// The CKA_ID in a key URI, as hex for pkcs11-tool.
fn id_hex(uri: &str) -> String {
    let id = uri.split(';').find_map(|p| p.strip_prefix("id=")).expect("id in key URI").as_bytes();
    let mut bytes = Vec::new();
    let mut i = 0;
    while i < id.len() {
        if id[i] == b'%' {
            bytes.push(u8::from_str_radix(std::str::from_utf8(&id[i + 1..i + 3]).expect("utf8"), 16).expect("hex"));
            i += 3;
        } else {
            bytes.push(id[i]);
            i += 1;
        }
    }
    hex::encode(bytes)
}

#[test]
fn a_ca_on_a_token_issues_serves_ocsp_and_logs() {
    let Some(uri) = token_uri() else { return };
    let env = Env::new();
    // No passphrase is involved: the token's PIN comes from its pin-source.
    let out = env.command().env_remove("CUSTOS_PASSPHRASE").args(["init", "--key-store", &uri]).output().expect("init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.ok(&["tenant", "add", "acme-corp"]);
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);

    // Every key is on the token, addressed by a PKCS#11 URI.
    let keys = env.json(&["keys", "list"]);
    let keys = keys.as_array().expect("keys");
    assert_eq!(keys.len(), 3, "root, issuing and log keys: {keys:?}");
    for k in keys {
        assert_eq!(k["backend"], "pkcs11", "{k}");
        let prefix = format!("pkcs11:token={};id=", token_label(&uri));
        assert!(k["location"].as_str().expect("location").starts_with(&prefix), "{k}");
    }
    let root = keys.iter().find(|k| k["label"] == "root-1").expect("root key");

    // OpenSC's pkcs11-tool sees the root key as sensitive and never extractable.
    let config = custos_keys::pkcs11::TokenConfig::parse(&uri).expect("uri");
    let custos_keys::pkcs11::PinSource::File(pin_file) = &config.pin_source else { panic!("pin file expected") };
    let pin = std::fs::read_to_string(pin_file).expect("pin").trim().to_string();
    let listed = sh(
        "pkcs11-tool",
        &[
            "--module",
            config.module_path.to_str().expect("p"),
            "--token-label",
            &config.token,
            "--login",
            "--pin",
            &pin,
            "--list-objects",
            "--type",
            "privkey",
            "--id",
            &id_hex(root["location"].as_str().expect("location")),
        ],
    );
    assert!(listed.contains("sensitive") && listed.contains("never extractable"), "{listed}");
    assert!(listed.contains("label:      root-1"), "{listed}");

    // Issuance through the token passes the same outside checks as the soft store.
    let leaf = env.path("leaf");
    let out = env
        .command()
        .env_remove("CUSTOS_PASSPHRASE")
        .args(["issue", "acme-corp", "mail-sync", "--out"])
        .arg(&leaf)
        .output()
        .expect("issue");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (root_pem, issuing_pem) = env.split_chain(&leaf.join("chain.pem"));
    let cert = leaf.join("cert.pem");
    openssl_verify(&root_pem, &issuing_pem, &cert);
    pkilint("lint_pkix_cert", &[cert.to_str().expect("p")]);
    pkilint("lint_pkix_signer_signee_cert_chain", &[issuing_pem.to_str().expect("p"), cert.to_str().expect("p")]);
    pkilint("lint_pkix_signer_signee_cert_chain", &[root_pem.to_str().expect("p"), issuing_pem.to_str().expect("p")]);

    // OCSP answered by a responder whose key the server generated on the token.
    let server = Server::start(&env);
    let said = ocsp(&server.url("/ocsp"), &issuing_pem, &cert, &root_pem);
    assert!(said.contains("Response verify OK") && said.contains(": good"), "{said}");
    drop(server);
    let keys = env.json(&["keys", "list"]);
    let keys = keys.as_array().expect("keys");
    assert!(keys.iter().any(|k| k["label"] == "ocsp-issuing-1"), "the responder key: {keys:?}");
    assert!(keys.iter().all(|k| k["backend"] == "pkcs11"));
    let issuing = keys.iter().find(|k| k["label"] == "issuing-1").expect("issuing key");
    assert!(
        issuing["uses"].as_i64().expect("uses") >= 3,
        "generation, responder certificate, the certificate: {issuing}"
    );

    // The log's checkpoints are signed by the Ed25519 key on the token, and verify.
    let said = env.ok(&["audit", "verify"]);
    assert!(said.contains("audit log verified"), "{said}");
}

#[test]
fn bad_token_settings_are_clear_errors_that_create_nothing() {
    let Some(uri) = token_uri() else { return };
    let env = Env::new();
    let cases = [
        (uri.replace(&format!("token={}", token_label(&uri)), "token=no-such-token"), "no token labelled"),
        (uri.replace("libsofthsm2.so", "libnothere.so"), "cannot load PKCS#11 module"),
        (uri.replace("pin-source=", "pin-value=1234&pin-source="), "pin-value"),
        (uri.replace("pin-source=file:", "pin-source=file:/nonexistent"), "cannot read the token PIN"),
    ];
    for (bad, expected) in cases {
        let said = env.fails(&["init", "--key-store", &bad]);
        assert!(said.contains(expected), "{bad}: {said}");
        assert!(!env.data_dir().join("custos.db").exists(), "a failed init leaves no database");
    }
}
