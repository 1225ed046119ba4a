//! What custos-ca's tests and benchmarks share: a custos on a real SQLite
//! file with the sealed soft key store, built the way custos-node builds it
//! (custos-ca itself chooses no backend).
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, LazyLock};

use custos_ca::{Ca, InitOptions, Principal, RecordedKeyStore};
use custos_keys::soft::{SealParams, SoftKeyStore};
use custos_store::SqlStore;

/// The caller of every test operation: the local administrator.
pub static ME: LazyLock<Principal> = LazyLock::new(Principal::local);

fn me() -> Principal {
    ME.clone()
}

/// A new custos in `dir` (created): its CA and the store under it.
pub async fn init(dir: &Path, options: &InitOptions, passphrase: &[u8]) -> (Ca, Arc<SqlStore>) {
    std::fs::create_dir_all(dir).expect("data directory");
    let store = Arc::new(SqlStore::open_sqlite(&dir.join("custos.db")).await.expect("open the store"));
    let (keys, seal) = SoftKeyStore::create(passphrase).expect("key store");
    let recorded = RecordedKeyStore::Soft { seal: serde_json::to_string(&seal).expect("seal parameters") };
    let ca = Ca::init(store.clone(), Arc::new(keys), &recorded, options, &me()).await.expect("init");
    (ca, store)
}

/// The custos in `dir` opened again and unsealed with `passphrase`.
pub async fn reopen(dir: &Path, passphrase: &[u8]) -> Ca {
    let store = Arc::new(SqlStore::open_sqlite(&dir.join("custos.db")).await.expect("open the store"));
    let mut ca = Ca::open(store).await.expect("open");
    let RecordedKeyStore::Soft { seal } = ca.recorded_key_store().await.expect("recorded key store") else {
        panic!("not the soft store");
    };
    let params: SealParams = serde_json::from_str(&seal).expect("seal parameters");
    ca.attach_keys(Arc::new(SoftKeyStore::open(passphrase, &params).expect("unseal")));
    ca
}

/// Adds `tenant` with a client connection `connection` (P-256, no SANs).
pub async fn add_client_connection(ca: &Ca, tenant: &str, connection: &str) {
    let options = custos_ca::ConnectionOptions {
        profile: custos_pki::Profile::Client,
        allowed_sans: vec![],
        key_algorithm: custos_ca::KeyAlgorithm::EcdsaP256,
        validity_days: None,
    };
    ca.add_connection(&ME, tenant, connection, &options).await.expect("connection");
}

/// A request for a certificate whose key custos generates.
pub fn generated(tenant: &str, connection: &str) -> custos_ca::IssueRequest {
    custos_ca::IssueRequest {
        tenant: tenant.into(),
        connection: connection.into(),
        profile: None,
        sans: vec![],
        validity_secs: None,
        key: custos_ca::KeySource::Generate(None),
        request_key: None,
    }
}
