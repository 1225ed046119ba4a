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
    assert_eq!(keys.len(), 4, "root, issuing, log and operators' CA keys: {keys:?}");
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
    let said = env.ok(&["audit", "verify", "--state"]);
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

/// Builds a shared library that, when loaded, creates the file named by
/// CUSTOS_EVIL_MARKER; checks with Python's ctypes that loading it does.
fn marker_library(env: &Env) -> std::path::PathBuf {
    let src = env.path("evil.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stdlib.h>\n\
         __attribute__((constructor)) static void loaded(void) {\n\
           const char *p = getenv(\"CUSTOS_EVIL_MARKER\");\n\
           if (p) { FILE *f = fopen(p, \"w\"); if (f) { fputs(\"loaded\\n\", f); fclose(f); } }\n\
         }\n",
    )
    .expect("write evil.c");
    let lib = env.path("libevil.so");
    sh("gcc", &["-shared", "-fPIC", "-o", lib.to_str().expect("p"), src.to_str().expect("p")]);
    let probe = env.path("probe-marker");
    let out = std::process::Command::new("python3")
        .args(["-c", "import ctypes,sys; ctypes.CDLL(sys.argv[1])", lib.to_str().expect("p")])
        .env("CUSTOS_EVIL_MARKER", &probe)
        .output()
        .expect("python3");
    assert!(out.status.success() && probe.exists(), "the marker library leaves its marker when loaded");
    lib
}

#[test]
fn a_module_path_written_into_the_database_is_never_loaded() {
    let Some(uri) = token_uri() else { return };
    let env = Env::new();
    let out = env.command().env_remove("CUSTOS_PASSPHRASE").args(["init", "--key-store", &uri]).output().expect("init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        env.data_dir().join("custos.toml").exists(),
        "init keeps the key store's configuration beside the database"
    );

    // Someone who can write the database names a library of their choosing.
    let lib = marker_library(&env);
    let mut evil = custos_keys::pkcs11::TokenConfig::parse(&uri).expect("uri");
    evil.module_path = lib.clone();
    let db = env.data_dir().join("custos.db");
    sh(
        "python3",
        &[
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE meta SET value=? WHERE key='key_store'\", (sys.argv[2],)); c.commit()",
            db.to_str().expect("p"),
            &evil.uri(),
        ],
    );

    // An unsealing command refuses, names both modules, and never loads the library:
    // with the configured token (custos.toml from init) ...
    let marker = env.path("marker");
    let run = |env_key_store: Option<&str>| {
        let mut c = env.command();
        c.env_remove("CUSTOS_PASSPHRASE").env("CUSTOS_EVIL_MARKER", &marker).args(["crl"]);
        match env_key_store {
            Some(k) => c.env("CUSTOS_KEY_STORE", k),
            None => c.env_remove("CUSTOS_KEY_STORE"),
        };
        c.output().expect("custos crl")
    };
    let out = run(None);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(lib.to_str().expect("p")), "names the recorded module: {said}");
    assert!(said.contains("libsofthsm2.so"), "names the configured module: {said}");
    assert!(said.contains("the module was not loaded"), "{said}");
    assert!(!marker.exists(), "the library named by the database was loaded");

    // ... and with no key store configured at all: refused, nothing loaded.
    std::fs::remove_file(env.data_dir().join("custos.toml")).expect("remove custos.toml");
    let out = run(None);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("nothing named in the database is loaded"), "{said}");
    assert!(!marker.exists(), "the library named by the database was loaded");

    // The operator's configuration (here CUSTOS_KEY_STORE) still opens the real token.
    let out = run(Some(&uri));
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "the database still names another module: {said}");
    assert!(!marker.exists());
}
