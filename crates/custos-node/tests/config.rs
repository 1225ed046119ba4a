//! The one configuration: the example in docs/ loads (and states the
//! defaults), unknown keys are refused with the file and key named, later
//! sources override earlier ones and say so, secrets are redacted, and bad
//! values are refused before anything is opened.

use std::path::{Path, PathBuf};

use custos_node::config::{self, Backend, Config, Origin, Override};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/custos.toml")
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("custos.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn the_example_config_loads_and_states_the_defaults() {
    let loaded = config::load(Some(&example()), &[]).expect("the example loads");
    assert_eq!(loaded.config, Config::default(), "the example shows every default as it is");
    assert_eq!(loaded.origin("serve.listen"), Origin::File(example()));
    assert_eq!(loaded.origin("key_store.module"), Origin::Default, "commented out in the example");
}

#[test]
fn unknown_keys_are_refused_with_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "[serve]\nlisten = \"127.0.0.1:1\"\nlisten_on = \"x\"\n");
    let err = config::load(Some(&path), &[]).expect_err("unknown key");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("listen_on"), "{text}");
}

#[test]
fn a_bad_witness_is_refused_at_load_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (witnesses, said) in [
        (r#"[{ key = "not-a-key", url = "http://127.0.0.1:7380" }]"#, "not-a-key"),
        (
            // A log's verifier key (type 0x01): the Go note example key.
            r#"[{ key = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", url = "http://127.0.0.1:7380" }]"#,
            "not a witness's",
        ),
    ] {
        let path = write(dir.path(), &format!("[audit]\nwitnesses = {witnesses}\n"));
        let err = config::load(Some(&path), &[]).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("audit.witnesses") && text.contains(said), "{text}");
    }
}

#[test]
fn environment_and_flags_override_the_file_and_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "base_url = \"https://pki.example\"\n[serve]\nlisten = \"127.0.0.1:1000\"\n");
    let overrides = [
        Override { key: "serve.listen", value: "127.0.0.1:2000".into(), origin: Origin::Env("CUSTOS_LISTEN") },
        Override { key: "serve.listen", value: "127.0.0.1:3000".into(), origin: Origin::Flag("--listen") },
        Override {
            key: "database",
            value: "postgres://custos:s3cret@db.example/custos".into(),
            origin: Origin::Env("CUSTOS_DATABASE"),
        },
    ];
    let loaded = config::load(Some(&path), &overrides).expect("load");
    assert_eq!(loaded.config.serve.listen, "127.0.0.1:3000");
    assert_eq!(loaded.origin("serve.listen"), Origin::Flag("--listen"));
    assert_eq!(loaded.config.base_url, "https://pki.example");
    assert_eq!(loaded.origin("base_url"), Origin::File(path.clone()));
    assert_eq!(loaded.origin("ocsp.presign"), Origin::Default);
    let shown = loaded.entries();
    let database = shown.iter().find(|(k, _, _)| k == "database").expect("database shown");
    assert_eq!(database.1, "postgres://custos:***@db.example/custos", "the password is redacted");
    assert!(!format!("{shown:?}").contains("s3cret"));
    assert_eq!(shown.len(), 53, "every key is listed, set or not");
}

#[test]
fn a_pkcs11_uri_sets_the_whole_key_store_section() {
    let o = Override {
        key: "key_store",
        value: "pkcs11:token=ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:PIN".into(),
        origin: Origin::Env("CUSTOS_KEY_STORE"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data =
        Override { key: "data_dir", value: dir.path().display().to_string(), origin: Origin::Flag("--data-dir") };
    let loaded = config::load(None, &[data, o]).expect("load");
    let k = &loaded.config.key_store;
    assert_eq!(k.backend, Backend::Pkcs11);
    assert_eq!(k.module.as_deref(), Some(Path::new("/usr/lib/softhsm/libsofthsm2.so")));
    assert_eq!((k.token.as_deref(), k.pin_source.as_deref()), (Some("ca"), Some("env:PIN")));
    assert_eq!(loaded.origin("key_store.module"), Origin::Env("CUSTOS_KEY_STORE"));
}

#[test]
fn bad_values_are_refused_before_anything_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, says) in [
        ("[serve]\nlisten = \"localhost\"\n", "serve.listen"),
        ("[key_store]\nbackend = \"pkcs11\"\ntoken = \"t\"\n", "needs module"),
        ("[key_store]\nbackend = \"hsm\"\n", "unknown variant"),
        ("[init]\nca_algorithm = \"dsa\"\n", "init.ca_algorithm"),
        ("[ocsp]\npoll_interval_ms = 0\n", "ocsp.poll_interval_ms"),
        ("[serve]\ntls_listen = \"127.0.0.1:8443\"\n", "needs serve.tls_cert"),
        ("database = \"mysql://x\"\n", "not a postgres:// or sqlite: URL"),
    ] {
        let path = write(dir.path(), text);
        let err = config::load(Some(&path), &[]).expect_err(text).to_string();
        assert!(err.contains(says), "{text:?}: {err}");
    }
    let missing = dir.path().join("nope.toml");
    assert!(config::load(Some(&missing), &[]).is_err(), "a named file that does not exist is an error");
}
