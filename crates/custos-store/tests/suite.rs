//! The storage contract, written once and run against every backend
//! (SQLite here; PostgreSQL instantiates the same suite when it lands).

use custos_audit::merkle::{self, Frontier, NodeId};
use custos_store::prelude::*;
use custos_store::{
    AuditFilter, AuditRecord, CertificateFilter, CertificateRecord, CheckpointRecord, ConnectionRecord, Genesis,
    IssuerRecord, KeyRecord, Revocation, SqlStore, StatusFilter, Store, StoreError, TenantRecord,
};
use custos_types::{CertificateStatus, IssuerRole, IssuerStatus, KeyStatus, Profile, Reason};

fn audit(action: &str) -> AuditRecord {
    AuditRecord {
        time: 1,
        actor: "test".into(),
        action: action.into(),
        object: "x".into(),
        key: None,
        details: "{}".into(),
    }
}

fn genesis() -> Genesis {
    Genesis {
        meta: vec![("base_url".into(), "http://127.0.0.1:8080".into())],
        keys: vec![KeyRecord {
            id: "k1".into(),
            backend: "soft".into(),
            algorithm: "p256".into(),
            label: "issuing-1".into(),
            public_key: vec![1, 2, 3],
            reference: vec![4, 5, 6],
            status: KeyStatus::Active,
            created_at: 1,
        }],
        issuers: vec![IssuerRecord {
            id: "issuing-1".into(),
            name: "Issuing".into(),
            role: IssuerRole::Issuing,
            parent: None,
            key_id: "k1".into(),
            cert_der: vec![0x30, 0],
            fingerprint: "AA".into(),
            not_after: 2_000_000_000,
            status: IssuerStatus::Active,
            crl_number: 0,
            created_at: 1,
            revoked_at: None,
        }],
        audit: vec![audit("genesis")],
    }
}

fn cert(serial: &str, connection: &str, not_after: i64) -> CertificateRecord {
    CertificateRecord {
        serial: serial.into(),
        issuer: "issuing-1".into(),
        tenant: "acme".into(),
        connection: connection.into(),
        profile: Profile::Client,
        subject: "CN=x".into(),
        sans: vec!["a.example".into()],
        key_algorithm: "p256".into(),
        key_origin: "csr".into(),
        spki_sha256: "00".into(),
        not_before: 0,
        not_after,
        der: vec![0x30, 0x03, 1, 2, 3],
        status: CertificateStatus::Valid,
        revoked_at: None,
        revocation_reason: None,
        invalidity_date: None,
        replaced_by: None,
        crl_partition: 0,
        created_at: 10,
    }
}

fn connection(name: &str) -> ConnectionRecord {
    ConnectionRecord {
        tenant: "acme".into(),
        name: name.into(),
        profile: Profile::Client,
        allowed_sans: vec!["*.example".into()],
        key_algorithm: "p256".into(),
        validity_days: Some(30),
        created_at: 1,
    }
}

async fn audit_count(store: &dyn Store) -> usize {
    store.audit_entries(0, 1_000_000).await.expect("audit").len()
}

/// The whole contract against one store.
async fn contract(store: &dyn Store) {
    // Genesis is atomic and happens once.
    store.initialize(genesis()).await.expect("genesis");
    assert!(matches!(store.initialize(genesis()).await, Err(StoreError::AlreadyInitialized)));
    assert_eq!(store.issuers().await.expect("issuers").len(), 1);
    assert_eq!(audit_count(store).await, 1);
    assert_eq!(store.meta("base_url").await.expect("meta").as_deref(), Some("http://127.0.0.1:8080"));

    // Tenants and connections, each with its audit entry; duplicates and
    // dangling references are refused and leave no audit entry behind.
    store.add_tenant(&TenantRecord { name: "acme".into(), created_at: 1 }, &audit("tenant.add")).await.expect("tenant");
    assert!(matches!(
        store.add_tenant(&TenantRecord { name: "acme".into(), created_at: 2 }, &audit("tenant.add")).await,
        Err(StoreError::Duplicate { .. })
    ));
    store.add_connection(&connection("mail"), &audit("connection.add")).await.expect("connection");
    store.add_connection(&connection("web"), &audit("connection.add")).await.expect("connection");
    let mut orphan = connection("x");
    orphan.tenant = "nobody".into();
    assert!(matches!(store.add_connection(&orphan, &audit("connection.add")).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.add_connection(&connection("mail"), &audit("c")).await, Err(StoreError::Duplicate { .. })));
    assert_eq!(audit_count(store).await, 4, "only successful changes are audited");
    let c = store.connection("acme", "mail").await.expect("read").expect("exists");
    assert_eq!(c, connection("mail"));
    assert_eq!(store.connections(Some("acme")).await.expect("list").len(), 2);

    // A batch of certificates commits whole, with its audit entries...
    let batch: Vec<CertificateRecord> = (0..250).map(|i| cert(&format!("{i:04x}"), "mail", 1_000 + i)).collect();
    let audits: Vec<AuditRecord> = (0..250).map(|_| audit("certificate.issue")).collect();
    store.insert_certificates(&batch, &audits).await.expect("batch");
    assert_eq!(audit_count(store).await, 254);
    assert_eq!(store.certificate("0007").await.expect("read").expect("exists"), batch[7]);
    // ...or not at all: a duplicate serial at the end of the next batch rolls back all of it.
    let mut bad: Vec<CertificateRecord> = (0..150).map(|i| cert(&format!("b{i:04x}"), "web", 5_000)).collect();
    bad.push(cert("0001", "web", 5_000));
    assert!(matches!(store.insert_certificates(&bad, &audits[..151]).await, Err(StoreError::Duplicate { .. })));
    assert!(store.certificate("b0000").await.expect("read").is_none(), "no partial batch");
    assert_eq!(audit_count(store).await, 254, "no audit entries from the failed batch");
    let mut dangling = cert("ffff", "nope", 5_000);
    dangling.connection = "nope".into();
    assert!(matches!(store.insert_certificates(&[dangling], &[audit("x")]).await, Err(StoreError::NotFound { .. })));

    // Filters.
    store.insert_certificates(&[cert("aaaa", "web", 9_000)], &[audit("certificate.issue")]).await.expect("one");
    let all = |f: CertificateFilter| async move { store.certificates(&f).await.expect("list") };
    assert_eq!(all(CertificateFilter::default()).await.len(), 251);
    assert_eq!(all(CertificateFilter { connection: Some("web".into()), ..Default::default() }).await.len(), 1);
    assert_eq!(all(CertificateFilter { expiring_before: Some(1_010), ..Default::default() }).await.len(), 10);
    let expired = CertificateFilter { status: Some(StatusFilter::Expired), now: 1_100, ..Default::default() };
    assert_eq!(all(expired).await.len(), 100);
    let valid = CertificateFilter { status: Some(StatusFilter::Valid), now: 1_100, ..Default::default() };
    assert_eq!(all(valid).await.len(), 151);
    assert_eq!(all(CertificateFilter { limit: Some(5), ..Default::default() }).await.len(), 5);
    assert_eq!(all(CertificateFilter { tenant: Some("nobody".into()), ..Default::default() }).await.len(), 0);

    // Revocation: atomic over its serials, fed to every process, audited.
    let audits_before = audit_count(store).await;
    assert_eq!(store.last_revocation().await.expect("feed"), 0);
    let revocation = Revocation { revoked_at: 2_000, reason: Reason::KeyCompromise, invalidity_date: Some(1_500) };
    store.revoke(&["0001".into(), "0002".into()], &revocation, &[audit("r"), audit("r")]).await.expect("revoke");
    // A batch with an unknown serial, or an already revoked one, changes nothing.
    assert!(matches!(
        store.revoke(&["0003".into(), "nope".into()], &revocation, &[audit("r")]).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.revoke(&["0004".into(), "0001".into()], &revocation, &[audit("r")]).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.certificate("0003").await.expect("r").expect("e").status, CertificateStatus::Valid);
    assert_eq!(store.certificate("0004").await.expect("r").expect("e").status, CertificateStatus::Valid);
    assert_eq!(audit_count(store).await, audits_before + 2);
    let revoked = store.revoked("issuing-1", 0).await.expect("revoked");
    assert_eq!(revoked.len(), 2);
    assert_eq!(revoked[0].reason, Some(Reason::KeyCompromise));
    assert_eq!((revoked[0].revoked_at, revoked[0].invalidity_date), (2_000, Some(1_500)));
    let feed = store.revocations_since(0, 100).await.expect("feed");
    assert_eq!(feed.iter().map(|e| e.serial.as_str()).collect::<Vec<_>>(), ["0001", "0002"]);
    assert!(store.revocations_since(feed[1].seq, 100).await.expect("feed").is_empty());
    assert_eq!(store.last_revocation().await.expect("feed"), feed[1].seq);
    let many: Vec<String> = (0..10).map(|i| format!("{i:04x}")).filter(|s| s != "0001" && s != "0002").collect();
    store.revoke(&many, &revocation, &[]).await.expect("revoke many");
    assert_eq!(store.revoked("issuing-1", 0).await.expect("revoked").len(), 10);
    assert_eq!(store.revoked("issuing-1", 1).await.expect("revoked").len(), 0, "partitions are apart");
    assert_eq!(store.reserve_issuance("issuing-1", 5).await.expect("reserve"), 0);
    assert_eq!(store.reserve_issuance("issuing-1", 3).await.expect("reserve"), 5);
    assert_eq!(store.issued("issuing-1").await.expect("issued"), 8);
    // CRL numbers only go up.
    let a = store.next_crl_number("issuing-1", &audit("crl.sign")).await.expect("n");
    let b = store.next_crl_number("issuing-1", &audit("crl.sign")).await.expect("n");
    assert!(b > a);
    assert!(matches!(store.next_crl_number("nope", &audit("x")).await, Err(StoreError::NotFound { .. })));
    audit_contract(store).await;
}

/// Recomputes the tree from the entries' content and checks every stored leaf hash.
async fn recompute(store: &dyn Store) -> Frontier {
    let mut frontier = Frontier::default();
    for (i, e) in store.audit_entries(0, u64::MAX).await.expect("entries").iter().enumerate() {
        assert_eq!(e.index, i as u64, "indexes are gap-free");
        let leaf = merkle::leaf_hash(&e.fields().encode().expect("encode"));
        assert_eq!(e.leaf_hash, leaf.to_vec(), "leaf hash of entry {i}");
        frontier.push(leaf);
    }
    frontier
}

/// The stored tree's root, from stored nodes only.
async fn stored_root(store: &dyn Store, size: u64) -> merkle::Hash {
    let ids = merkle::needed_nodes(|read| merkle::tree_hash(size, read));
    let nodes = store.audit_nodes(&ids).await.expect("nodes");
    merkle::tree_hash(size, &mut |id| nodes[&id])
}

/// The Merkle audit log: append, nodes, proofs, tiles, checkpoints, search, usage.
async fn audit_contract(store: &dyn Store) {
    let before = store.audit_size().await.expect("size");
    assert_eq!(recompute(store).await.size(), before);
    let keyed = |i: usize| AuditRecord {
        key: Some(if i.is_multiple_of(3) { "k1" } else { "k2" }.into()),
        time: 86_400 * (1 + i as i64 % 2),
        details: format!(r#"{{"n":{i}}}"#),
        ..audit(if i.is_multiple_of(2) { "crl.sign" } else { "certificate.issue" })
    };
    let batch: Vec<AuditRecord> = (0..600).map(keyed).collect();
    assert_eq!(store.append_audit(&batch).await.expect("append"), before);
    let size = before + 600;
    assert_eq!(store.audit_size().await.expect("size"), size);
    let frontier = recompute(store).await;
    assert_eq!(stored_root(store, size).await, frontier.root(), "stored nodes give the recomputed root");

    // Proofs from stored nodes check out against the root.
    let entries = store.audit_entries(0, u64::MAX).await.expect("entries");
    for index in [0, 1, before, size / 2, size - 1] {
        let ids = merkle::needed_nodes(|read| merkle::inclusion_proof(index, size, read));
        let nodes = store.audit_nodes(&ids).await.expect("nodes");
        let proof = merkle::inclusion_proof(index, size, &mut |id| nodes[&id]).expect("proof");
        let leaf: merkle::Hash = entries[index as usize].leaf_hash.clone().try_into().expect("32");
        merkle::verify_inclusion(&leaf, index, size, &proof, &frontier.root()).expect("proof verifies");
    }
    // Tiles: level 0 is the leaf hashes, level 8 the roots of 256-leaf subtrees.
    let tile = store.audit_level(0, 256, 256).await.expect("tile");
    assert_eq!(tile[0].to_vec(), entries[256].leaf_hash);
    let level8 = store.audit_level(8, 0, 2).await.expect("level 8");
    let n = store.audit_nodes(&[NodeId { level: 8, index: 1 }]).await.expect("node");
    assert_eq!(level8[1], n[&NodeId { level: 8, index: 1 }]);
    assert!(matches!(store.audit_level(0, size - 1, 2).await, Err(StoreError::NotFound { .. })));
    assert!(store.audit_nodes(&[NodeId { level: 0, index: size }]).await.is_err(), "no node beyond the tree");

    // Any text reads back exactly: spaces, digits, newlines, multi-byte characters, no key.
    let odd = AuditRecord {
        actor: "cli:a b 12 3\nnext ✓".into(),
        object: "".into(),
        key: None,
        details: r#"{"x":"é \" 1 2 ","y":[1,2]}"#.into(),
        ..audit("odd 1 2")
    };
    let at = store.append_audit(std::slice::from_ref(&odd)).await.expect("append odd");
    assert_eq!(store.audit_entries(at, 1).await.expect("read")[0].record, odd);
    let size = size + 1;
    assert_eq!(recompute(store).await.size(), size);

    // Bad details change nothing.
    let bad = AuditRecord { details: "{oops".into(), ..audit("x") };
    assert!(matches!(store.append_audit(&[audit("ok"), bad]).await, Err(StoreError::Invalid(_))));
    assert_eq!(store.audit_size().await.expect("size"), size, "a refused batch writes nothing");

    // Checkpoints: stored once per size, newest first.
    assert_eq!(store.latest_checkpoint().await.expect("none"), None);
    for (s, note) in [(size - 1, "a"), (size, "b"), (size, "c")] {
        let cp = CheckpointRecord { size: s, time: 5, root: vec![1; 32], note: note.into() };
        store.add_checkpoint(&cp).await.expect("checkpoint");
    }
    let cps = store.checkpoints().await.expect("checkpoints");
    assert_eq!(cps.iter().map(|c| (c.size, c.note.as_str())).collect::<Vec<_>>(), [(size - 1, "a"), (size, "b")]);
    assert_eq!(store.latest_checkpoint().await.expect("latest").map(|c| c.size), Some(size));

    // Search and usage.
    let filter = |action: Option<&str>, key: Option<&str>, from: Option<u64>, limit| AuditFilter {
        action: action.map(Into::into),
        key: key.map(Into::into),
        from,
        limit,
    };
    let newest = store.audit_search(&filter(None, None, None, 3)).await.expect("tail");
    assert_eq!(newest.iter().map(|e| e.index).collect::<Vec<_>>(), [size - 3, size - 2, size - 1]);
    let signs = store.audit_search(&filter(Some("sign"), Some("k1"), Some(before), 10_000)).await.expect("search");
    assert_eq!(signs.len(), 200, "every third of 600 used k1, and all are signatures");
    let crl = store.audit_search(&filter(Some("crl"), None, Some(before), 10_000)).await.expect("search");
    assert_eq!(crl.len(), 300);
    let issue = store.audit_search(&filter(Some("issue"), Some("k2"), Some(before), 5)).await.expect("search");
    assert!(issue.iter().all(|e| e.record.action == "certificate.issue" && e.record.key.as_deref() == Some("k2")));
    assert_eq!(issue.len(), 5);
    let usage = store.key_usage("k1").await.expect("usage");
    assert_eq!(usage.iter().map(|u| u.count).sum::<i64>(), 200);
    assert!(usage.iter().all(|u| u.day == 1 || u.day == 2), "{usage:?}");
}

/// A fresh, empty PostgreSQL database on the throwaway cluster scripts/test
/// starts (`CUSTOS_TEST_POSTGRES`), or `None` to skip where it is not required.
async fn fresh_postgres() -> Option<String> {
    let Ok(base) = std::env::var("CUSTOS_TEST_POSTGRES") else {
        let required = std::env::var("CUSTOS_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
            || std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!required, "CUSTOS_TEST_POSTGRES is not set: run through scripts/test");
        eprintln!("skipping PostgreSQL: CUSTOS_TEST_POSTGRES not set");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("suite_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.expect("connect to the cluster");
    sqlx::Executor::execute(&mut admin, sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create db");
    let (prefix, _) = base.rsplit_once('/').expect("database in URL");
    Some(format!("{prefix}/{name}"))
}

static NEXT_DB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Where each backend keeps a store for one test.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    async fn sqlite() -> Option<Backend> {
        Some(Backend::Sqlite(tempfile::tempdir().expect("tempdir")))
    }

    async fn postgres() -> Option<Backend> {
        fresh_postgres().await.map(Backend::Postgres)
    }

    async fn open(&self) -> SqlStore {
        match self {
            Backend::Sqlite(dir) => SqlStore::open_sqlite(&dir.path().join("custos.db")).await.expect("open sqlite"),
            Backend::Postgres(url) => SqlStore::open_postgres(url).await.expect("open postgres"),
        }
    }
}

/// The contract, then a reopen that finds everything and migrates idempotently.
async fn honours_the_contract(backend: Backend) {
    let store = backend.open().await;
    contract(&store).await;
    store.close().await;
    let again = backend.open().await;
    assert_eq!(again.certificates(&CertificateFilter::default()).await.expect("list").len(), 251);
}

/// Two handles on one database (two processes, or two nodes) writing at once lose nothing and grow one tree.
async fn serialises_concurrent_writers(backend: Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    a.initialize(genesis()).await.expect("genesis");
    a.add_tenant(&TenantRecord { name: "acme".into(), created_at: 1 }, &audit("t")).await.expect("tenant");
    a.add_connection(&connection("mail"), &audit("c")).await.expect("conn");
    let write = |s: SqlStore, prefix: &'static str| {
        tokio::spawn(async move {
            for i in 0..20 {
                let batch: Vec<CertificateRecord> =
                    (0..50).map(|j| cert(&format!("{prefix}{i:02}{j:02}"), "mail", 1)).collect();
                let audits: Vec<AuditRecord> = (0..50).map(|_| audit("i")).collect();
                s.insert_certificates(&batch, &audits).await.expect("insert");
            }
        })
    };
    let (x, y) = (write(a.clone(), "a"), write(b.clone(), "b"));
    x.await.expect("a");
    y.await.expect("b");
    assert_eq!(a.certificates(&CertificateFilter::default()).await.expect("list").len(), 2_000);
    assert_eq!(audit_count(&a).await, 1 + 2 + 2_000);
    let size = a.audit_size().await.expect("size");
    assert_eq!(stored_root(&b, size).await, recompute(&b).await.root());
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_honours_the_store_contract() {
    honours_the_contract(Backend::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_honours_the_store_contract() {
    let Some(backend) = Backend::postgres().await else { return };
    honours_the_contract(backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_serialises_concurrent_writers_without_losing_any() {
    serialises_concurrent_writers(Backend::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_serialises_concurrent_writers_without_losing_any() {
    let Some(backend) = Backend::postgres().await else { return };
    serialises_concurrent_writers(backend).await;
}
